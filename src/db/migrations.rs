//! The migration engine's backend-specific SQL: bookkeeping tables and the run lock.
//!
//! Bookkeeping is diesel's `__diesel_schema_migrations` (so dbctl and diesel_cli can take turns on
//! one database) plus dbctl's companion `__dbctl_migrations`: name, checksum of up.sql, duration,
//! time and sequence number of application. Both rows are written in the migration's own
//! transaction. On PostgreSQL every bookkeeping query names the schema the tables live in, found
//! once at the start, so a migration that changes `search_path` cannot send them elsewhere.
//!
//! The run lock makes concurrent runs safe: on PostgreSQL a session advisory lock, taken by polling
//! `pg_try_advisory_lock` (a session blocked in `pg_advisory_lock` would hold a snapshot that a
//! `CREATE INDEX CONCURRENTLY` run by the lock holder waits for: a deadlock); on SQLite an
//! exclusive `flock` on the database file, held for the whole run.

use std::cell::Cell;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
use diesel::sqlite::Sqlite;

use super::{quote_ident, AnyConnection};

pub(crate) const DIESEL_TABLE: &str = "__diesel_schema_migrations";
pub(crate) const DBCTL_TABLE: &str = "__dbctl_migrations";

/// The advisory lock key dbctl's migration runs share ("dbctlmig" in ASCII). Advisory locks are
/// per database, so runs against different databases do not wait for each other.
pub(crate) const PG_LOCK_KEY: i64 = 0x6462_6374_6c6d_6967;

/// One row of `__diesel_schema_migrations`, with dbctl's companion row when there is one.
#[derive(QueryableByName, Debug, Clone)]
pub(crate) struct AppliedRow {
    #[diesel(sql_type = Text)]
    pub(crate) version: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) run_on: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) checksum: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    pub(crate) duration_ms: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) applied_at: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) seq: Option<i64>,
    /// SQLite: the rowid of diesel's row. New rows get a rowid above every row present, so it
    /// orders rows both tools wrote within one second (diesel_cli's `run_on` has whole seconds).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) rowid: Option<i64>,
}

/// How `applied_at` is shown, whichever tool applied the migration: RFC 3339, UTC, milliseconds.
const APPLIED_AT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

fn parse_run_on(text: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()
}

fn parse_applied_at(text: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S%.fZ").ok()
}

/// Whole milliseconds since the epoch: the precision both tools' times share.
fn millis(t: chrono::NaiveDateTime) -> i64 {
    t.and_utc().timestamp_millis()
}

impl AppliedRow {
    /// Drops a stale companion row and gives `applied_at` its one format.
    ///
    /// dbctl writes its companion row in the same transaction as diesel's row, with `applied_at`
    /// the same instant as `run_on`. A companion row that describes an *earlier* application is
    /// left behind when diesel_cli reverts the migration (it deletes only its own row) and
    /// applies it again, maybe after up.sql was edited: its checksum says nothing about what
    /// diesel_cli ran. It is recognised by diesel's row being newer: on SQLite diesel_cli writes
    /// `run_on` in whole seconds and dbctl never does; on PostgreSQL diesel_cli's `run_on` is
    /// later than the companion's `applied_at`.
    fn settle(&mut self, postgres: bool) {
        let run_on = self.run_on.as_deref().and_then(parse_run_on);
        let applied_at = self.applied_at.as_deref().and_then(parse_applied_at);
        if self.applied_at.is_some() || self.checksum.is_some() {
            let stale = if postgres {
                match (run_on, applied_at) {
                    (Some(r), Some(a)) => millis(r) > millis(a),
                    _ => false,
                }
            } else {
                self.run_on.as_deref().is_some_and(|r| !r.contains('.'))
            };
            if stale {
                self.checksum = None;
                self.duration_ms = None;
                self.seq = None;
                self.applied_at = None;
            }
        }
        let shown = match (self.applied_at.as_deref(), run_on) {
            (Some(_), _) => applied_at,
            (None, r) => r,
        };
        if let Some(t) = shown {
            self.applied_at = Some(t.format(APPLIED_AT_FORMAT).to_string());
        } else if self.applied_at.is_none() {
            self.applied_at = self.run_on.clone();
        }
    }
}

/// Where the bookkeeping tables are, and whether they exist yet.
#[derive(Debug, Clone)]
pub(crate) struct Bookkeeping {
    /// `"schema".` on PostgreSQL, `main.` on SQLite.
    prefix: String,
    postgres: bool,
    pub(crate) diesel_exists: bool,
    pub(crate) dbctl_exists: bool,
    /// The highest `seq` recorded (set by [`Bookkeeping::read`]).
    last_seq: Cell<i64>,
    /// Transaction-pooling mode: the lease's table and owner; each transactional migration checks
    /// in its own transaction that it is still to be done and the lease still this run's
    /// ([`Bookkeeping::still_to_do`]).
    lease: Option<(String, String)>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl Bookkeeping {
    /// Finds the tables: on PostgreSQL the schema holding diesel's table if it is visible, else
    /// the current schema (where diesel_cli would create it).
    pub(crate) fn locate(conn: &mut AnyConnection) -> anyhow::Result<Bookkeeping> {
        if let AnyConnection::Postgresql(_) = conn {
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
            return Ok(Bookkeeping {
                prefix: format!("{}.", quote_ident(&schema)),
                postgres: true,
                diesel_exists: found.diesel,
                dbctl_exists: found.dbctl,
                last_seq: Cell::new(0),
                lease: None,
            });
        }
        let mut book = Bookkeeping {
            prefix: "main.".to_string(),
            postgres: false,
            diesel_exists: false,
            dbctl_exists: false,
            last_seq: Cell::new(0),
            lease: None,
        };
        book.diesel_exists = book.table_exists(conn, DIESEL_TABLE)?;
        book.dbctl_exists = book.table_exists(conn, DBCTL_TABLE)?;
        Ok(book)
    }

    /// `"schema".` on PostgreSQL, `main.` on SQLite.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Pooled mode: the lease row (table and owner) the run holds.
    pub(crate) fn set_lease(&mut self, table: &str, owner: &str) {
        self.lease = Some((table.to_string(), owner.to_string()));
    }

    pub(crate) fn pooled(&self) -> bool {
        self.lease.is_some()
    }

    /// Pooled mode, at the start of a migration's transaction: waits for the transaction-level
    /// advisory lock (held by any other run's migration transaction until it ends), applies the
    /// per-transaction settings, then says whether `version` is still to be applied (`up`) or
    /// reverted, and fails when the lease is no longer this run's. The lock goes with the
    /// transaction, on whatever server connection it ran.
    pub(crate) fn still_to_do(
        &self,
        conn: &mut AnyConnection,
        version: &str,
        up: bool,
    ) -> anyhow::Result<bool> {
        let Some((lock_table, owner)) = &self.lease else {
            return Ok(true);
        };
        conn.batch_execute(&format!(
            "SELECT pg_catalog.pg_advisory_xact_lock({})",
            super::lease::XACT_KEY
        ))
        .context("taking the migration's transaction lock (pg_advisory_xact_lock)")?;
        super::pooled_transaction_setup(conn).context("setting the transaction's timeout")?;
        #[derive(QueryableByName)]
        struct Found {
            #[diesel(sql_type = BigInt)]
            n: i64,
            #[diesel(sql_type = Bool)]
            ours: bool,
        }
        let found: Found = diesel::sql_query(format!(
            "SELECT (SELECT count(*) FROM {} WHERE version = $1)::bigint AS n, \
             EXISTS (SELECT 1 FROM {lock_table} WHERE owner = $2) AS ours",
            self.table(DIESEL_TABLE)
        ))
        .bind::<Text, _>(version)
        .bind::<Text, _>(owner)
        .get_result(conn)
        .with_context(|| format!("checking whether {version} is applied"))?;
        if !found.ours {
            return Err(super::lease::taken_over(version));
        }
        Ok((found.n == 0) == up)
    }

    fn table(&self, name: &str) -> String {
        format!("{}{}", self.prefix, quote_ident(name))
    }

    fn table_exists(&self, conn: &mut AnyConnection, name: &str) -> anyhow::Result<bool> {
        let found: Count = if self.postgres {
            let schema = self
                .prefix
                .trim_end_matches('.')
                .trim_matches('"')
                .replace("\"\"", "\"");
            diesel::sql_query(
                "SELECT count(*)::bigint AS n FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relname = $1 AND n.nspname = $2 AND c.relkind IN ('r', 'p')",
            )
            .bind::<Text, _>(name)
            .bind::<Text, _>(schema)
            .get_result(conn)
        } else {
            diesel::sql_query(
                "SELECT count(*) AS n FROM main.sqlite_master WHERE type = 'table' AND name = $1",
            )
            .bind::<Text, _>(name)
            .get_result(conn)
        }
        .with_context(|| format!("looking for table {name}"))?;
        Ok(found.n > 0)
    }

    /// Creates whichever table is missing; says whether diesel's had to be created.
    pub(crate) fn ensure(&mut self, conn: &mut AnyConnection) -> anyhow::Result<bool> {
        let created = !self.diesel_exists;
        if !self.diesel_exists {
            // diesel_cli's own DDL, byte for byte, so that a schema dump (SQLite keeps the text)
            // does not differ by who created the table. The lock makes IF NOT EXISTS needless.
            conn.batch_execute(&format!(
                "CREATE TABLE {}{DIESEL_TABLE} (\n       version VARCHAR(50) PRIMARY KEY NOT NULL,\n       \
                 run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP\n)",
                self.prefix
            ))
            .with_context(|| format!("creating the bookkeeping table {DIESEL_TABLE}"))?;
            self.diesel_exists = true;
        }
        if !self.dbctl_exists {
            conn.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    version VARCHAR(50) PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL,
                    checksum VARCHAR(64) NOT NULL,
                    duration_ms DOUBLE PRECISION NOT NULL,
                    applied_at VARCHAR(40) NOT NULL,
                    seq BIGINT NOT NULL
                ){}",
                self.table(DBCTL_TABLE),
                // On SQLite one b-tree instead of a table plus its primary-key index: one page
                // less to journal and sync per migration.
                if self.postgres { "" } else { " WITHOUT ROWID" }
            ))
            .with_context(|| format!("creating the bookkeeping table {DBCTL_TABLE}"))?;
            self.dbctl_exists = true;
        }
        Ok(created)
    }

    /// Every applied migration, with what dbctl recorded about it when it was dbctl that ran it.
    pub(crate) fn read(&self, conn: &mut AnyConnection) -> anyhow::Result<Vec<AppliedRow>> {
        if !self.diesel_exists {
            return Ok(Vec::new());
        }
        // PostgreSQL: `run_on` is a TIMESTAMP written from CURRENT_TIMESTAMP in the writer's
        // session time zone, which is UTC for both tools (diesel forces it; dbctl migrates in
        // UTC, see `begin_session`), whatever the reading session's zone: shown as it is, with
        // microseconds. SQLite: the stored text, UTC already (whole seconds from diesel_cli).
        let run_on = if self.postgres {
            "to_char(d.run_on, 'YYYY-MM-DD HH24:MI:SS.US')"
        } else {
            "CAST(d.run_on AS TEXT)"
        };
        let rowid = if self.postgres {
            "CAST(NULL AS BIGINT)"
        } else {
            "d.rowid"
        };
        let sql = if self.dbctl_exists {
            format!(
                "SELECT d.version AS version, {run_on} AS run_on, m.name AS name, \
                 m.checksum AS checksum, m.duration_ms AS duration_ms, \
                 m.applied_at AS applied_at, m.seq AS seq, {rowid} AS rowid \
                 FROM {} d LEFT JOIN {} m ON m.version = d.version",
                self.table(DIESEL_TABLE),
                self.table(DBCTL_TABLE)
            )
        } else {
            format!(
                "SELECT d.version AS version, {run_on} AS run_on, NULL AS name, \
                 NULL AS checksum, NULL AS duration_ms, NULL AS applied_at, NULL AS seq, \
                 {rowid} AS rowid FROM {} d",
                self.table(DIESEL_TABLE)
            )
        };
        let mut rows: Vec<AppliedRow> = diesel::sql_query(sql)
            .load(conn)
            .context("reading the applied migrations")?;
        for row in &mut rows {
            row.settle(self.postgres);
        }
        if self.dbctl_exists {
            #[derive(QueryableByName)]
            struct Max {
                #[diesel(sql_type = BigInt)]
                n: i64,
            }
            let max: Max = diesel::sql_query(format!(
                "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS n FROM {}",
                self.table(DBCTL_TABLE)
            ))
            .get_result(conn)
            .context("reading the last sequence number")?;
            self.last_seq.set(max.n);
        }
        Ok(rows)
    }

    /// Records an applied migration in both tables (call it inside the migration's transaction).
    pub(crate) fn record_applied(
        &self,
        conn: &mut AnyConnection,
        version: &str,
        name: &str,
        checksum: &str,
        duration_ms: f64,
    ) -> anyhow::Result<()> {
        // The run holds the lock, so the next sequence number is known without asking.
        let seq = self.last_seq.get() + 1;
        match conn {
            AnyConnection::Postgresql(pg) => PgRecordApplied {
                prefix: &self.prefix,
                version,
                name,
                checksum,
                duration_ms,
                seq,
            }
            .execute(pg)
            .with_context(|| format!("recording {version} as applied"))?,
            AnyConnection::Sqlite(sqlite) => {
                // One instant for both rows, so that a later run can tell whether the companion
                // row still describes diesel's row (see AppliedRow::settle). SQLite's
                // CURRENT_TIMESTAMP has whole seconds; milliseconds keep `run_on` usable as the
                // order of application (diesel_cli never reads it) and tell dbctl's rows from
                // diesel_cli's.
                let now = chrono::Utc::now();
                let run_on = now.format("%Y-%m-%d %H:%M:%S%.3f").to_string();
                let applied_at = now.format(APPLIED_AT_FORMAT).to_string();
                SqliteRecordDiesel {
                    version,
                    run_on: &run_on,
                }
                .execute(sqlite)
                .with_context(|| format!("recording {version} in {DIESEL_TABLE}"))?;
                SqliteRecordDbctl {
                    version,
                    name,
                    checksum,
                    duration_ms,
                    applied_at: &applied_at,
                    seq,
                }
                .execute(sqlite)
                .with_context(|| format!("recording {version} in {DBCTL_TABLE}"))?
            }
        };
        self.last_seq.set(seq);
        Ok(())
    }

    /// PostgreSQL: the statements that record an applied migration, as text to send in the same
    /// simple query as the migration itself (one round trip for the whole migration). Nothing is
    /// bound, so every value is written so that no setting the migration may have changed can
    /// alter it: the version and checksum are digits and hex, the name travels hex-encoded, the
    /// functions are schema-qualified, and the tables carry their schema. The companion row's
    /// `duration_ms` is the server's time from the query's arrival to this statement.
    /// Call [`Bookkeeping::applied_recorded`] once the transaction committed.
    pub(crate) fn pg_record_applied_sql(
        &self,
        version: &str,
        name: &str,
        checksum: &str,
    ) -> String {
        let seq = self.last_seq.get() + 1;
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!(
            "WITH d AS (INSERT INTO {diesel} (version) VALUES ({version}) RETURNING version) \
             INSERT INTO {dbctl} (version, name, checksum, duration_ms, applied_at, seq) \
             SELECT d.version, pg_catalog.convert_from(pg_catalog.decode('{hex}', 'hex'), 'UTF8'), \
             {checksum}, \
             pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp()) * 1000, \
             pg_catalog.to_char(CURRENT_TIMESTAMP AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             {seq} FROM d {UPSERT}",
            diesel = self.table(DIESEL_TABLE),
            dbctl = self.table(DBCTL_TABLE),
            version = pg_literal(version),
            checksum = pg_literal(checksum),
        )
    }

    /// After [`Bookkeeping::pg_record_applied_sql`]'s rows were committed.
    pub(crate) fn applied_recorded(&self) {
        self.last_seq.set(self.last_seq.get() + 1);
    }

    /// PostgreSQL: [`Bookkeeping::record_reverted`] as text for the migration's own query.
    pub(crate) fn pg_record_reverted_sql(&self, version: &str) -> String {
        format!(
            "DELETE FROM {} WHERE version = {v};\nDELETE FROM {} WHERE version = {v}",
            self.table(DIESEL_TABLE),
            self.table(DBCTL_TABLE),
            v = pg_literal(version)
        )
    }

    /// Forgets a reverted migration in both tables.
    pub(crate) fn record_reverted(
        &self,
        conn: &mut AnyConnection,
        version: &str,
    ) -> anyhow::Result<()> {
        for table in [DIESEL_TABLE, DBCTL_TABLE] {
            diesel::sql_query(format!(
                "DELETE FROM {} WHERE version = $1",
                self.table(table)
            ))
            .bind::<Text, _>(version)
            .execute(conn)
            .with_context(|| format!("removing {version} from {table}"))?;
        }
        Ok(())
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

const UPSERT: &str = "ON CONFLICT (version) DO UPDATE SET name = excluded.name, \
    checksum = excluded.checksum, duration_ms = excluded.duration_ms, \
    applied_at = excluded.applied_at, seq = excluded.seq";

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

impl QueryFragment<Pg> for PgRecordApplied<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
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

/// SQLite: diesel's row, prepared once per connection (its text is fixed: SQLite's bookkeeping is
/// always in `main`), so a migration costs a bind and a step rather than a parse.
struct SqliteRecordDiesel<'a> {
    version: &'a str,
    run_on: &'a str,
}

impl QueryId for SqliteRecordDiesel<'_> {
    type QueryId = SqliteRecordDiesel<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for SqliteRecordDiesel<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("INSERT INTO main.");
        out.push_sql(DIESEL_TABLE);
        out.push_sql(" (version, run_on) VALUES (");
        out.push_bind_param::<Text, _>(self.version)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.run_on)?;
        out.push_sql(")");
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for SqliteRecordDiesel<'_> {}

/// SQLite: dbctl's companion row, prepared once per connection like [`SqliteRecordDiesel`].
struct SqliteRecordDbctl<'a> {
    version: &'a str,
    name: &'a str,
    checksum: &'a str,
    duration_ms: f64,
    applied_at: &'a str,
    seq: i64,
}

impl QueryId for SqliteRecordDbctl<'_> {
    type QueryId = SqliteRecordDbctl<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for SqliteRecordDbctl<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("INSERT INTO main.");
        out.push_sql(DBCTL_TABLE);
        out.push_sql(" (version, name, checksum, duration_ms, applied_at, seq) VALUES (");
        out.push_bind_param::<Text, _>(self.version)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.name)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.checksum)?;
        out.push_sql(", ");
        out.push_bind_param::<Double, _>(&self.duration_ms)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.applied_at)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.seq)?;
        out.push_sql(") ");
        out.push_sql(UPSERT);
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for SqliteRecordDbctl<'_> {}

/// The lock a migration run holds; release it with [`RunLock::release`] (dropping it releases the
/// SQLite lock; PostgreSQL's goes with the session).
pub(crate) enum RunLock {
    Postgres,
    /// The open file carries the `flock`; it is only ever dropped.
    SqliteFile {
        _file: File,
    },
    None,
}

/// What happened while taking the lock.
pub(crate) struct LockWait {
    pub(crate) lock: RunLock,
    pub(crate) waited: Duration,
}

/// Takes the run lock, polling until `timeout`; `on_wait` is called once when the lock is busy.
pub(crate) fn acquire_run_lock(
    conn: &mut AnyConnection,
    sqlite_file: Option<&Path>,
    timeout: Duration,
    mut on_wait: impl FnMut(Option<&str>),
) -> anyhow::Result<LockWait> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    let mut told = false;
    let file = match (&*conn, sqlite_file) {
        (AnyConnection::Sqlite(_), Some(path)) => Some(
            File::open(path).with_context(|| format!("opening `{}` to lock it", path.display()))?,
        ),
        _ => None,
    };
    loop {
        let taken = match (&mut *conn, &file) {
            (AnyConnection::Postgresql(_), _) => {
                #[derive(QueryableByName)]
                struct Taken {
                    #[diesel(sql_type = Bool)]
                    ok: bool,
                }
                let row: Taken = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS ok")
                    .bind::<BigInt, _>(PG_LOCK_KEY)
                    .get_result(conn)
                    .context("taking the migration lock (pg_try_advisory_lock)")?;
                row.ok
            }
            (AnyConnection::Sqlite(_), Some(f)) => match f.try_lock() {
                Ok(()) => true,
                Err(std::fs::TryLockError::WouldBlock) => false,
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(anyhow::Error::new(e).context("locking the database file"))
                }
            },
            (AnyConnection::Sqlite(_), None) => {
                return Ok(LockWait {
                    lock: RunLock::None,
                    waited: Duration::ZERO,
                })
            }
        };
        if taken {
            let lock = match file {
                Some(f) => RunLock::SqliteFile { _file: f },
                None => RunLock::Postgres,
            };
            return Ok(LockWait {
                lock,
                waited: started.elapsed(),
            });
        }
        crate::interrupt::check()
            .context("stopped while waiting for the migration lock: nothing was changed")?;
        if started.elapsed() >= timeout {
            let holder = pg_lock_holder(conn).map_or(String::new(), |h| format!(" ({h})"));
            anyhow::bail!(
                "another migration run holds the lock on this database{holder}; gave up after \
                 {:.0}s (raise --lock-timeout to wait longer)",
                timeout.as_secs_f64()
            );
        }
        if !told {
            on_wait(pg_lock_holder(conn).as_deref());
            told = true;
        }
        std::thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Who holds the PostgreSQL run lock: pid, application, since when, what it runs. `None` on
/// SQLite, or when it cannot be told (the holder just left, or the role may not see it).
fn pg_lock_holder(conn: &mut AnyConnection) -> Option<String> {
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
    if !matches!(conn, AnyConnection::Postgresql(_)) {
        return None;
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

impl RunLock {
    /// Gives the lock back. On SQLite the file lock must outlive every connection to the file
    /// (closing any descriptor of it drops the process's POSIX locks), so the caller drops the
    /// connections first and the returned file last.
    pub(crate) fn release(&self, conn: &mut AnyConnection) -> anyhow::Result<()> {
        if let (RunLock::Postgres, AnyConnection::Postgresql(_)) = (self, &mut *conn) {
            diesel::sql_query("SELECT pg_advisory_unlock($1)")
                .bind::<BigInt, _>(PG_LOCK_KEY)
                .execute(conn)
                .context("releasing the migration lock")?;
        }
        Ok(())
    }
}

/// Statement-level session settings for a migration run: SQLite runs migrations with foreign keys
/// off, as diesel_cli does (SQLite's own table-rebuild recipe needs it, and `PRAGMA foreign_keys`
/// is a no-op inside the migration's transaction).
///
/// PostgreSQL runs migrations in UTC, as diesel_cli's sessions do, so that a time literal in a
/// migration (a default, a row) means the same instant whoever applies it; dbctl's other work
/// uses the time zone the server and URL configure.
///
/// SQLite in the default rollback-journal mode (`delete`) also switches this connection to
/// `truncate` for the run: every migration's commit then empties the journal file instead of
/// creating and deleting it, which spares a directory update per migration (measured: the larger
/// part of a small migration's commit on this machine's file system) with the same durability (the
/// truncation is synced as the deletion was). [`end_session`] switches back, which removes the
/// journal file. Only this connection changes, and only from `delete`: a database in WAL mode, or a
/// connection a migration switched itself, is left as it is.
pub(crate) fn begin_session(conn: &mut AnyConnection) -> anyhow::Result<Session> {
    let mut session = Session {
        restore_delete_journal: false,
    };
    match conn {
        AnyConnection::Postgresql(_) => conn
            .batch_execute("SET TIME ZONE 'UTC'")
            .context("setting up the session for the migration run")?,
        AnyConnection::Sqlite(_) => {
            conn.batch_execute("PRAGMA foreign_keys = OFF")
                .context("turning foreign keys off for the migration run")?;
            if sqlite_journal_mode(conn)? == "delete" {
                conn.batch_execute("PRAGMA journal_mode = TRUNCATE")
                    .context("setting the journal mode for the migration run")?;
                session.restore_delete_journal = sqlite_journal_mode(conn)? == "truncate";
            }
        }
    }
    Ok(session)
}

/// What [`begin_session`] changed.
pub(crate) struct Session {
    restore_delete_journal: bool,
}

fn sqlite_journal_mode(conn: &mut AnyConnection) -> anyhow::Result<String> {
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    let mode: Mode = diesel::sql_query("PRAGMA journal_mode")
        .get_result(conn)
        .context("reading the journal mode")?;
    Ok(mode.journal_mode.to_ascii_lowercase())
}

/// Undoes [`begin_session`].
pub(crate) fn end_session(conn: &mut AnyConnection, session: &Session) -> anyhow::Result<()> {
    match conn {
        AnyConnection::Postgresql(_) => conn
            .batch_execute("RESET TimeZone")
            .context("restoring the session after the migration run")?,
        AnyConnection::Sqlite(_) => {
            conn.batch_execute("PRAGMA foreign_keys = ON")
                .context("turning foreign keys back on")?;
            // A migration that switched the mode itself (to WAL, say) keeps its choice.
            if session.restore_delete_journal && sqlite_journal_mode(conn)? == "truncate" {
                conn.batch_execute("PRAGMA journal_mode = DELETE")
                    .context("setting the journal mode back to delete")?;
            }
        }
    }
    Ok(())
}
