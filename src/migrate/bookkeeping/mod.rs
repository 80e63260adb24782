//! The migration engine's bookkeeping and run lock: what is applied, recorded where both tools
//! read it, and the lock that makes concurrent runs safe.
//!
//! Bookkeeping is diesel's `__diesel_schema_migrations` (so dbctl and diesel_cli can take turns on
//! one database) plus dbctl's companion `__dbctl_migrations`: name, checksum of up.sql, duration,
//! time and sequence number of application. Both rows are written in the migration's own
//! transaction. On PostgreSQL every bookkeeping query names the schema the tables live in, found
//! once at the start, so a migration that changes `search_path` cannot send them elsewhere.
//!
//! What differs between backends is the [`Bookkeeping`] trait, implemented once per backend in
//! its own file ([`pg`], [`sqlite`]) and chosen once, by [`for_connection`]; [`Book`] (where the
//! tables are, and what this run recorded) and the rest of the engine only call the trait. A new
//! backend is a new file here and one arm in [`for_connection`].

mod pg;
mod sqlite;

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text};

use super::lock::RunLock;
use crate::db::{quote_ident, AnyConnection, Backend};

pub(crate) const DIESEL_TABLE: &str = "__diesel_schema_migrations";
pub(crate) const DBCTL_TABLE: &str = "__dbctl_migrations";

/// What differs between backends in keeping the books and locking a run. Each method is one
/// backend's SQL; callers never ask which backend they have.
pub(crate) trait Bookkeeping: Sync {
    /// Which backend this is (for its SQL dialect).
    fn backend(&self) -> Backend;

    /// Finds the bookkeeping tables (see [`Book::locate`]).
    fn locate(&self, conn: &mut AnyConnection) -> anyhow::Result<Located>;

    /// The expression reading diesel's `run_on` of row `d` as text.
    fn run_on_column(&self) -> &'static str;

    /// The expression reading the rowid of diesel's row `d` (NULL where there is none).
    fn rowid_column(&self) -> &'static str;

    /// What follows `CREATE TABLE __dbctl_migrations (...)`.
    fn dbctl_table_options(&self) -> &'static str;

    /// Whether `row`'s companion row describes an earlier application (see [`AppliedRow::settle`]).
    fn companion_is_stale(
        &self,
        row: &AppliedRow,
        run_on: Option<chrono::NaiveDateTime>,
        applied_at: Option<chrono::NaiveDateTime>,
    ) -> bool;

    /// Records an applied migration in both tables, inside the caller's transaction.
    fn record_applied(
        &self,
        conn: &mut AnyConnection,
        book: &Book,
        row: &Applied<'_>,
    ) -> anyhow::Result<()>;

    /// The statements recording an applied (`Some`) or reverted (`None`) migration as text to
    /// send in the same query as the migration itself, when this backend runs a transactional
    /// migration as one query; `None` when it runs it statement by statement.
    fn record_in_query(
        &self,
        book: &Book,
        version: &str,
        applied: Option<&Applied<'_>>,
    ) -> Option<String>;

    /// Settings for the duration of a migration run (see [`Book::begin_session`]).
    fn begin_session(&self, conn: &mut AnyConnection, pooled: bool) -> anyhow::Result<Session>;

    /// Undoes [`Bookkeeping::begin_session`].
    fn end_session(&self, conn: &mut AnyConnection, session: &Session) -> anyhow::Result<()>;

    /// The run lock for this database (`db_file`: the SQLite file, if it is one).
    fn run_lock(&self, db_file: Option<&Path>) -> anyhow::Result<Box<dyn RunLock>>;

    /// A run holding the run lock: waits while a run through a transaction-pooling proxy holds
    /// its lease (see `migrate::lease`); says whether it waited. Backends without pooled runs
    /// return at once.
    fn wait_for_pooled_runs(
        &self,
        conn: &mut AnyConnection,
        prefix: &str,
        timeout: Duration,
        on_wait: &mut dyn FnMut(&str),
    ) -> anyhow::Result<bool>;

    /// What became of a transaction the database closed when a statement failed, when this
    /// backend does that itself (SQLite on an interrupt, a full disk...); `None` when it never
    /// does, so a closed transaction means a statement of the migration ended it.
    fn closes_failed_transactions(&self) -> Option<&'static str>;
}

/// The backend's bookkeeping for `conn`: the one place that looks at which connection it is.
pub(crate) fn for_connection(conn: &AnyConnection) -> &'static dyn Bookkeeping {
    match crate::db::backend::of(conn) {
        Backend::Postgres => &pg::Pg,
        Backend::Sqlite => &sqlite::Sqlite,
    }
}

/// Where the tables were found.
pub(crate) struct Located {
    /// `"schema".` on PostgreSQL, `main.` on SQLite.
    pub(crate) prefix: String,
    pub(crate) diesel_exists: bool,
    pub(crate) dbctl_exists: bool,
}

/// What an applied migration's rows say.
pub(crate) struct Applied<'a> {
    pub(crate) version: &'a str,
    pub(crate) name: &'a str,
    pub(crate) checksum: &'a str,
    pub(crate) duration: Duration,
    /// Its sequence number (the run holds the lock, so it is known without asking).
    pub(crate) seq: i64,
}

impl Applied<'_> {
    /// The duration in milliseconds as the companion row keeps it, to the microsecond.
    pub(crate) fn duration_ms(&self) -> f64 {
        (self.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
    }
}

/// What [`Bookkeeping::begin_session`] changed, for [`Bookkeeping::end_session`] to undo.
pub(crate) struct Session {
    /// A session setting was changed that must be set back.
    pub(crate) restore: bool,
}

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
pub(crate) const APPLIED_AT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

fn parse_run_on(text: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()
}

fn parse_applied_at(text: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S%.fZ").ok()
}

impl AppliedRow {
    /// Drops a stale companion row and gives `applied_at` its one format.
    ///
    /// dbctl writes its companion row in the same transaction as diesel's row, with `applied_at`
    /// the same instant as `run_on`. A companion row that describes an *earlier* application is
    /// left behind when diesel_cli reverts the migration (it deletes only its own row) and
    /// applies it again, maybe after up.sql was edited: its checksum says nothing about what
    /// diesel_cli ran. It is recognised by diesel's row being newer, as each backend tells
    /// ([`Bookkeeping::companion_is_stale`]).
    fn settle(&mut self, sql: &dyn Bookkeeping) {
        let run_on = self.run_on.as_deref().and_then(parse_run_on);
        let applied_at = self.applied_at.as_deref().and_then(parse_applied_at);
        if (self.applied_at.is_some() || self.checksum.is_some())
            && sql.companion_is_stale(self, run_on, applied_at)
        {
            self.checksum = None;
            self.duration_ms = None;
            self.seq = None;
            self.applied_at = None;
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

/// Where the bookkeeping tables are, whether they exist yet, and what this run recorded.
pub(crate) struct Book {
    sql: &'static dyn Bookkeeping,
    /// `"schema".` on PostgreSQL, `main.` on SQLite.
    prefix: String,
    diesel_exists: bool,
    dbctl_exists: bool,
    /// The highest `seq` recorded (set by [`Book::read`]).
    last_seq: Cell<i64>,
    /// Transaction-pooling mode: the lease's table and owner; each transactional migration checks
    /// in its own transaction that it is still to be done and the lease still this run's
    /// ([`Book::still_to_do`]).
    lease: Option<(String, String)>,
}

impl Book {
    /// Finds the tables: on PostgreSQL the schema holding diesel's table if it is visible, else
    /// the current schema (where diesel_cli would create it).
    pub(crate) fn locate(conn: &mut AnyConnection) -> anyhow::Result<Book> {
        let sql = for_connection(conn);
        let found = sql.locate(conn)?;
        Ok(Book {
            sql,
            prefix: found.prefix,
            diesel_exists: found.diesel_exists,
            dbctl_exists: found.dbctl_exists,
            last_seq: Cell::new(0),
            lease: None,
        })
    }

    /// The backend's SQL.
    pub(crate) fn sql(&self) -> &'static dyn Bookkeeping {
        self.sql
    }

    /// `"schema".` on PostgreSQL, `main.` on SQLite.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether diesel's table existed when the tables were located (or was created since).
    pub(crate) fn diesel_exists(&self) -> bool {
        self.diesel_exists
    }

    /// Pooled mode: the lease row (table and owner) the run holds.
    pub(crate) fn set_lease(&mut self, table: &str, owner: &str) {
        self.lease = Some((table.to_string(), owner.to_string()));
    }

    pub(crate) fn pooled(&self) -> bool {
        self.lease.is_some()
    }

    /// Pooled mode, at the start of a migration's transaction: waits for the transaction-level
    /// lock any other run's migration transaction holds, applies the per-transaction settings,
    /// then says whether `version` is still to be applied (`up`) or reverted, and fails when the
    /// lease is no longer this run's (see `migrate::lease`).
    pub(crate) fn still_to_do(
        &self,
        conn: &mut AnyConnection,
        version: &str,
        up: bool,
    ) -> anyhow::Result<bool> {
        let Some((lock_table, owner)) = &self.lease else {
            return Ok(true);
        };
        super::lease::still_to_do(
            conn,
            &self.table(DIESEL_TABLE),
            lock_table,
            owner,
            version,
            up,
        )
    }

    /// A table of the books, schema-qualified.
    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}{}", self.prefix, quote_ident(name))
    }

    /// Creates whichever table is missing; says whether diesel's had to be created.
    pub(crate) fn ensure(&mut self, conn: &mut AnyConnection) -> anyhow::Result<bool> {
        use diesel::connection::SimpleConnection as _;
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
                self.sql.dbctl_table_options()
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
        let run_on = self.sql.run_on_column();
        let rowid = self.sql.rowid_column();
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
            row.settle(self.sql);
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

    /// What the next applied migration's rows say.
    fn next<'a>(
        &self,
        version: &'a str,
        name: &'a str,
        checksum: &'a str,
        duration: Duration,
    ) -> Applied<'a> {
        Applied {
            version,
            name,
            checksum,
            duration,
            seq: self.last_seq.get() + 1,
        }
    }

    /// Records an applied migration in both tables (call it inside the migration's transaction).
    pub(crate) fn record_applied(
        &self,
        conn: &mut AnyConnection,
        version: &str,
        name: &str,
        checksum: &str,
        duration: Duration,
    ) -> anyhow::Result<()> {
        let row = self.next(version, name, checksum, duration);
        self.sql.record_applied(conn, self, &row)?;
        self.last_seq.set(row.seq);
        Ok(())
    }

    /// The statements recording an applied migration, as text for the migration's own query,
    /// where the backend runs a migration as one query (see [`Bookkeeping::record_in_query`]).
    /// Call [`Book::applied_recorded`] once the transaction committed.
    pub(crate) fn record_applied_in_query(
        &self,
        version: &str,
        name: &str,
        checksum: &str,
    ) -> Option<String> {
        let row = self.next(version, name, checksum, Duration::ZERO);
        self.sql.record_in_query(self, version, Some(&row))
    }

    /// After [`Book::record_applied_in_query`]'s rows were committed.
    pub(crate) fn applied_recorded(&self) {
        self.last_seq.set(self.last_seq.get() + 1);
    }

    /// [`Book::record_reverted`] as text for the migration's own query.
    pub(crate) fn record_reverted_in_query(&self, version: &str) -> Option<String> {
        self.sql.record_in_query(self, version, None)
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

    /// Session settings for a migration run: see each backend's `begin_session`. In
    /// transaction-pooling mode no session setting is made (it would stay on the pool's server
    /// connection); each migration's transaction sets what it needs with `SET LOCAL`.
    pub(crate) fn begin_session(&self, conn: &mut AnyConnection) -> anyhow::Result<Session> {
        self.sql.begin_session(conn, self.pooled())
    }

    /// Undoes [`Book::begin_session`].
    pub(crate) fn end_session(
        &self,
        conn: &mut AnyConnection,
        session: &Session,
    ) -> anyhow::Result<()> {
        self.sql.end_session(conn, session)
    }
}

/// What makes a second write of dbctl's row an update (a companion row left stale by diesel_cli).
const UPSERT: &str = "ON CONFLICT (version) DO UPDATE SET name = excluded.name, \
    checksum = excluded.checksum, duration_ms = excluded.duration_ms, \
    applied_at = excluded.applied_at, seq = excluded.seq";
