//! PostgreSQL's bookkeeping and run lock: the tables in the schema diesel's table is found in
//! (or the current one), both rows written by one prepared statement, or as text inside the
//! migration's own query (one round trip per migration), and a session advisory lock.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::pg::Pg as PgBackend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};

use super::{
    Applied, AppliedRow, Book, Bookkeeping, Located, Session, DBCTL_TABLE, DIESEL_TABLE, UPSERT,
};
use crate::db::{quote_ident, AnyConnection, Backend};
use crate::migrate::lease::{PG_LOCK_KEY, SET_LOCAL_UTC};
use crate::migrate::lock::RunLock;

/// PostgreSQL.
pub(super) struct Pg;

impl Bookkeeping for Pg {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn locate(&self, conn: &mut AnyConnection) -> anyhow::Result<Located> {
        // One round trip: the schema, and whether each table is there.
        #[derive(QueryableByName)]
        struct Found {
            #[diesel(sql_type = Nullable<Text>)]
            name: Option<String>,
            #[diesel(sql_type = Bool)]
            diesel: bool,
            #[diesel(sql_type = Bool)]
            dbctl: bool,
        }
        let exists = |bind: &str| {
            format!(
                "EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relname = {bind} AND n.nspname = s.name AND c.relkind IN ('r', 'p'))"
            )
        };
        let found: Found = diesel::sql_query(format!(
            "SELECT s.name AS name, {} AS diesel, {} AS dbctl FROM (SELECT COALESCE(\
             (SELECT n.nspname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND c.relkind IN ('r', 'p') \
             AND pg_catalog.pg_table_is_visible(c.oid)), current_schema()::text) AS name) s",
            exists("$2"),
            exists("$3")
        ))
        .bind::<Text, _>(DIESEL_TABLE)
        .bind::<Text, _>(DIESEL_TABLE)
        .bind::<Text, _>(DBCTL_TABLE)
        .get_result(conn)
        .context("finding the schema of the migration bookkeeping table")?;
        let schema = found.name.ok_or_else(|| {
            anyhow::anyhow!(
                "no current schema: search_path names no existing schema, so there is \
                 nowhere to keep {DIESEL_TABLE}"
            )
        })?;
        Ok(Located {
            prefix: format!("{}.", quote_ident(&schema)),
            diesel_exists: found.diesel,
            dbctl_exists: found.dbctl,
        })
    }

    /// `run_on` is a TIMESTAMP written from CURRENT_TIMESTAMP in the writer's session time zone,
    /// which is UTC for both tools (diesel forces it; dbctl migrates in UTC, see
    /// `begin_session`), whatever the reading session's zone: shown as it is, with microseconds.
    fn run_on_column(&self) -> &'static str {
        "to_char(d.run_on, 'YYYY-MM-DD HH24:MI:SS.US')"
    }

    fn rowid_column(&self) -> &'static str {
        "CAST(NULL AS BIGINT)"
    }

    fn dbctl_table_options(&self) -> &'static str {
        ""
    }

    /// diesel_cli's `run_on` is later than the companion's `applied_at`.
    fn companion_is_stale(
        &self,
        _row: &AppliedRow,
        run_on: Option<chrono::NaiveDateTime>,
        applied_at: Option<chrono::NaiveDateTime>,
    ) -> bool {
        // Whole milliseconds since the epoch: the precision both tools' times share.
        let millis = |t: chrono::NaiveDateTime| t.and_utc().timestamp_millis();
        match (run_on, applied_at) {
            (Some(r), Some(a)) => millis(r) > millis(a),
            _ => false,
        }
    }

    /// In transaction-pooling mode the session is not in UTC (see `begin_session`): diesel's
    /// `run_on` default needs it, so this transaction sets it first.
    fn record_applied(
        &self,
        conn: &mut AnyConnection,
        book: &Book,
        row: &Applied<'_>,
    ) -> anyhow::Result<()> {
        if book.pooled() {
            conn.batch_execute(SET_LOCAL_UTC)
                .context("setting the transaction's time zone")?;
        }
        let AnyConnection::Postgresql(pg) = conn else {
            anyhow::bail!("PostgreSQL bookkeeping on another database");
        };
        PgRecordApplied {
            prefix: book.prefix(),
            version: row.version,
            name: row.name,
            checksum: row.checksum,
            duration_ms: row.duration_ms(),
            seq: row.seq,
        }
        .execute(pg)
        .with_context(|| format!("recording {} as applied", row.version))?;
        Ok(())
    }

    /// Nothing is bound, so every value is written so that no setting the migration may have
    /// changed can alter it: the version and checksum are digits and hex, the name travels
    /// hex-encoded, the functions are schema-qualified, and the tables carry their schema. The
    /// companion row's `duration_ms` is the server's time from the query's arrival to this
    /// statement.
    fn record_in_query(
        &self,
        book: &Book,
        version: &str,
        applied: Option<&Applied<'_>>,
    ) -> Option<String> {
        let diesel = book.table(DIESEL_TABLE);
        let dbctl = book.table(DBCTL_TABLE);
        let Some(row) = applied else {
            return Some(format!(
                "DELETE FROM {diesel} WHERE version = {v};\nDELETE FROM {dbctl} WHERE version = {v}",
                v = pg_literal(version)
            ));
        };
        let hex: String = row.name.bytes().map(|b| format!("{b:02x}")).collect();
        Some(format!(
            "WITH d AS (INSERT INTO {diesel} (version) VALUES ({version}) RETURNING version) \
             INSERT INTO {dbctl} (version, name, checksum, duration_ms, applied_at, seq) \
             SELECT d.version, pg_catalog.convert_from(pg_catalog.decode('{hex}', 'hex'), 'UTF8'), \
             {checksum}, \
             pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp()) * 1000, \
             pg_catalog.to_char(CURRENT_TIMESTAMP AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             {seq} FROM d {UPSERT}",
            version = pg_literal(row.version),
            checksum = pg_literal(row.checksum),
            seq = row.seq,
        ))
    }

    /// Migrations run in UTC, as diesel_cli's sessions do, so that a time literal in a migration
    /// (a default, a row) means the same instant whoever applies it; dbctl's other work uses the
    /// time zone the server and URL configure. In transaction-pooling mode a session setting
    /// would stay behind on the pool's server connection for its next client: each migration's
    /// transaction sets `SET LOCAL TIME ZONE` instead (`lease::still_to_do`,
    /// [`Pg::record_applied`]).
    fn begin_session(&self, conn: &mut AnyConnection, pooled: bool) -> anyhow::Result<Session> {
        if !pooled {
            conn.batch_execute("SET TIME ZONE 'UTC'")
                .context("setting up the session for the migration run")?;
        }
        Ok(Session { restore: !pooled })
    }

    fn end_session(&self, conn: &mut AnyConnection, session: &Session) -> anyhow::Result<()> {
        if session.restore {
            conn.batch_execute("RESET TimeZone")
                .context("restoring the session after the migration run")?;
        }
        Ok(())
    }

    fn run_lock(&self, _db_file: Option<&Path>) -> anyhow::Result<Box<dyn RunLock>> {
        Ok(Box::new(SessionLock))
    }

    fn wait_for_pooled_runs(
        &self,
        conn: &mut AnyConnection,
        prefix: &str,
        timeout: Duration,
        on_wait: &mut dyn FnMut(&str),
    ) -> anyhow::Result<bool> {
        crate::migrate::lease::wait_for_live_lease(conn, prefix, timeout, on_wait)
    }

    fn closes_failed_transactions(&self) -> Option<&'static str> {
        None
    }
}

/// A string literal for SQL sent without binds: only for text of digits and ASCII letters (a
/// version, a hex checksum), where no setting (`standard_conforming_strings`, the client
/// encoding) can change its meaning; anything else is hex-encoded by the caller.
fn pg_literal(text: &str) -> String {
    debug_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()));
    let safe: String = text.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("'{safe}'")
}

/// PostgreSQL: both bookkeeping rows in one statement that diesel prepares once per connection
/// and then only binds (one round trip per migration; `sql_query` would prepare it every time).
/// Its text depends only on the schema, which is fixed for a connection's run, so a per-type
/// cache entry is correct.
struct PgRecordApplied<'a> {
    prefix: &'a str,
    version: &'a str,
    name: &'a str,
    checksum: &'a str,
    duration_ms: f64,
    seq: i64,
}

impl QueryId for PgRecordApplied<'_> {
    type QueryId = PgRecordApplied<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<PgBackend> for PgRecordApplied<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, PgBackend>) -> QueryResult<()> {
        out.push_sql(&format!(
            "WITH d AS (INSERT INTO {}{DIESEL_TABLE} (version) VALUES (",
            self.prefix
        ));
        out.push_bind_param::<Text, _>(self.version)?;
        out.push_sql(&format!(
            ") RETURNING version) INSERT INTO {}{DBCTL_TABLE} \
             (version, name, checksum, duration_ms, applied_at, seq) SELECT d.version, ",
            self.prefix
        ));
        out.push_bind_param::<Text, _>(self.name)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.checksum)?;
        out.push_sql(", ");
        out.push_bind_param::<Double, _>(&self.duration_ms)?;
        // The instant diesel's row gets as `run_on` (CURRENT_TIMESTAMP is the transaction's
        // start), in UTC: the two rows name one application.
        out.push_sql(
            ", to_char(CURRENT_TIMESTAMP AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ",
        );
        out.push_bind_param::<BigInt, _>(&self.seq)?;
        out.push_sql(" FROM d ");
        out.push_sql(UPSERT);
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for PgRecordApplied<'_> {}

/// The session advisory lock on [`PG_LOCK_KEY`].
struct SessionLock;

impl RunLock for SessionLock {
    fn try_take(&mut self, conn: &mut AnyConnection) -> anyhow::Result<bool> {
        #[derive(QueryableByName)]
        struct Taken {
            #[diesel(sql_type = Bool)]
            ok: bool,
        }
        let row: Taken = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS ok")
            .bind::<BigInt, _>(PG_LOCK_KEY)
            .get_result(conn)
            .context("taking the migration lock (pg_try_advisory_lock)")?;
        Ok(row.ok)
    }

    fn holder(&self, conn: &mut AnyConnection) -> Option<String> {
        lock_holder(conn)
    }

    fn release(&self, conn: &mut AnyConnection) -> anyhow::Result<()> {
        diesel::sql_query("SELECT pg_advisory_unlock($1)")
            .bind::<BigInt, _>(PG_LOCK_KEY)
            .execute(conn)
            .context("releasing the migration lock")?;
        Ok(())
    }
}

/// Who holds the PostgreSQL run lock: pid, application, since when, what it runs. `None` when it cannot be told (the holder just left, or the role may not see it).
fn lock_holder(conn: &mut AnyConnection) -> Option<String> {
    #[derive(QueryableByName)]
    struct Holder {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
        #[diesel(sql_type = Nullable<Text>)]
        application: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        client: Option<String>,
        #[diesel(sql_type = Nullable<Double>)]
        connected_s: Option<f64>,
        #[diesel(sql_type = Nullable<Text>)]
        state: Option<String>,
        #[diesel(sql_type = Nullable<Double>)]
        state_s: Option<f64>,
        #[diesel(sql_type = Nullable<Text>)]
        query: Option<String>,
    }
    // A bigint advisory key is kept as two 32-bit halves: classid (high) and objid (low).
    let holder: Holder = diesel::sql_query(
        "SELECT a.pid, a.application_name::text AS application, \
                COALESCE(host(a.client_addr), 'local socket') AS client, \
                extract(epoch FROM now() - a.backend_start)::float8 AS connected_s, \
                a.state::text AS state, \
                extract(epoch FROM now() - a.state_change)::float8 AS state_s, \
                a.query::text AS query \
         FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
           AND l.classid::bigint = ($1 >> 32) AND l.objid::bigint = ($1 & 4294967295) \
         LIMIT 1",
    )
    .bind::<BigInt, _>(PG_LOCK_KEY)
    .get_result(conn)
    .ok()?;
    let app = match holder.application.as_deref() {
        None | Some("") => "no application_name".to_string(),
        Some(a) => a.to_string(),
    };
    let secs = |s: Option<f64>| s.map_or("?".to_string(), |s| format!("{s:.0}s"));
    let query: String = holder
        .query
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut query_short: String = query.chars().take(80).collect();
    if query_short.len() < query.len() {
        query_short.push_str("...");
    }
    Some(format!(
        "held by pid {} ({app}, from {}, connected {} ago), {} for {}: `{query_short}`",
        holder.pid,
        holder.client.unwrap_or_default(),
        secs(holder.connected_s),
        holder.state.unwrap_or_else(|| "state unknown".to_string()),
        secs(holder.state_s),
    ))
}
