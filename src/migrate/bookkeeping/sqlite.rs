//! SQLite's bookkeeping and run lock: the tables in `main`, each row written by a statement
//! prepared once per connection, and an exclusive `flock` on the database file.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Double, Text};
use diesel::sqlite::Sqlite as SqliteBackend;

use super::{
    Applied, AppliedRow, Book, Bookkeeping, Located, Session, APPLIED_AT_FORMAT, DBCTL_TABLE,
    DIESEL_TABLE, UPSERT,
};
use crate::db::{AnyConnection, Backend, TableName};
use crate::migrate::lock::RunLock;

/// SQLite.
pub(super) struct Sqlite;

impl Bookkeeping for Sqlite {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn locate(&self, conn: &mut AnyConnection) -> anyhow::Result<Located> {
        let mut exists =
            |name: &str| crate::db::backend::table_exists(conn, &TableName::bare(name));
        Ok(Located {
            prefix: "main.".to_string(),
            diesel_exists: exists(DIESEL_TABLE)?,
            dbctl_exists: exists(DBCTL_TABLE)?,
        })
    }

    /// The stored text, UTC already (whole seconds from diesel_cli).
    fn run_on_column(&self) -> &'static str {
        "CAST(d.run_on AS TEXT)"
    }

    fn rowid_column(&self) -> &'static str {
        "d.rowid"
    }

    /// One b-tree instead of a table plus its primary-key index: one page less to journal and
    /// sync per migration.
    fn dbctl_table_options(&self) -> &'static str {
        " WITHOUT ROWID"
    }

    /// diesel_cli writes `run_on` in whole seconds and dbctl never does.
    fn companion_is_stale(
        &self,
        row: &AppliedRow,
        _run_on: Option<chrono::NaiveDateTime>,
        _applied_at: Option<chrono::NaiveDateTime>,
    ) -> bool {
        row.run_on.as_deref().is_some_and(|r| !r.contains('.'))
    }

    fn record_applied(
        &self,
        conn: &mut AnyConnection,
        _book: &Book,
        row: &Applied<'_>,
    ) -> anyhow::Result<()> {
        let AnyConnection::Sqlite(sqlite) = conn else {
            anyhow::bail!("SQLite bookkeeping on another database");
        };
        // One instant for both rows, so that a later run can tell whether the companion row
        // still describes diesel's row (see AppliedRow::settle). SQLite's CURRENT_TIMESTAMP has
        // whole seconds; milliseconds keep `run_on` usable as the order of application
        // (diesel_cli never reads it) and tell dbctl's rows from diesel_cli's.
        let now = chrono::Utc::now();
        let run_on = now.format("%Y-%m-%d %H:%M:%S%.3f").to_string();
        let applied_at = now.format(APPLIED_AT_FORMAT).to_string();
        let version = row.version;
        RecordDiesel {
            version,
            run_on: &run_on,
        }
        .execute(sqlite)
        .with_context(|| format!("recording {version} in {DIESEL_TABLE}"))?;
        RecordDbctl {
            version,
            name: row.name,
            checksum: row.checksum,
            duration_ms: row.duration_ms(),
            applied_at: &applied_at,
            seq: row.seq,
        }
        .execute(sqlite)
        .with_context(|| format!("recording {version} in {DBCTL_TABLE}"))?;
        Ok(())
    }

    /// SQLite has no round trips to save: a migration runs statement by statement, which names
    /// the failing one.
    fn record_in_query(
        &self,
        _book: &Book,
        _version: &str,
        _applied: Option<&Applied<'_>>,
    ) -> Option<String> {
        None
    }

    /// Migrations run with foreign keys off, as diesel_cli does (SQLite's own table-rebuild
    /// recipe needs it, and `PRAGMA foreign_keys` is a no-op inside the migration's transaction).
    ///
    /// In the default rollback-journal mode (`delete`) this connection also switches to
    /// `truncate` for the run: every migration's commit then empties the journal file instead of
    /// creating and deleting it, which spares a directory update per migration (measured: the
    /// larger part of a small migration's commit on this machine's file system) with the same
    /// durability (the truncation is synced as the deletion was). `end_session` switches back,
    /// which removes the journal file. Only this connection changes, and only from `delete`: a
    /// database in WAL mode, or a connection a migration switched itself, is left as it is.
    fn begin_session(&self, conn: &mut AnyConnection, _pooled: bool) -> anyhow::Result<Session> {
        conn.batch_execute("PRAGMA foreign_keys = OFF")
            .context("turning foreign keys off for the migration run")?;
        let mut restore = false;
        if journal_mode(conn)? == "delete" {
            conn.batch_execute("PRAGMA journal_mode = TRUNCATE")
                .context("setting the journal mode for the migration run")?;
            restore = journal_mode(conn)? == "truncate";
        }
        Ok(Session { restore })
    }

    fn end_session(&self, conn: &mut AnyConnection, session: &Session) -> anyhow::Result<()> {
        conn.batch_execute("PRAGMA foreign_keys = ON")
            .context("turning foreign keys back on")?;
        // A migration that switched the mode itself (to WAL, say) keeps its choice.
        if session.restore && journal_mode(conn)? == "truncate" {
            conn.batch_execute("PRAGMA journal_mode = DELETE")
                .context("setting the journal mode back to delete")?;
        }
        Ok(())
    }

    /// An in-memory database has no file to lock, and no other process can reach it.
    fn run_lock(&self, db_file: Option<&Path>) -> anyhow::Result<Box<dyn RunLock>> {
        let file = match db_file {
            Some(path) => Some(
                File::open(path)
                    .with_context(|| format!("opening `{}` to lock it", path.display()))?,
            ),
            None => None,
        };
        Ok(Box::new(FileLock { file }))
    }

    fn wait_for_pooled_runs(
        &self,
        _conn: &mut AnyConnection,
        _prefix: &str,
        _timeout: Duration,
        _on_wait: &mut dyn FnMut(&str),
    ) -> anyhow::Result<bool> {
        Ok(false)
    }

    fn closes_failed_transactions(&self) -> Option<&'static str> {
        Some(
            "SQLite rolled back the transaction itself when this statement failed (it does so for \
             an interrupt, a trigger's RAISE(ROLLBACK), a full disk, an I/O error, running out of \
             memory): nothing of this migration was committed and it was not recorded; the \
             migrations before it stay applied",
        )
    }
}

fn journal_mode(conn: &mut AnyConnection) -> anyhow::Result<String> {
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

/// The `flock` on the database file; the open file carries it and is only ever dropped.
struct FileLock {
    file: Option<File>,
}

impl RunLock for FileLock {
    fn try_take(&mut self, _conn: &mut AnyConnection) -> anyhow::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(true);
        };
        match file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(anyhow::Error::new(e).context("locking the database file"))
            }
        }
    }

    fn holder(&self, _conn: &mut AnyConnection) -> Option<String> {
        None
    }

    fn release(&self, _conn: &mut AnyConnection) -> anyhow::Result<()> {
        Ok(())
    }
}

/// SQLite: diesel's row, prepared once per connection (its text is fixed: SQLite's bookkeeping is
/// always in `main`), so a migration costs a bind and a step rather than a parse.
struct RecordDiesel<'a> {
    version: &'a str,
    run_on: &'a str,
}

impl QueryId for RecordDiesel<'_> {
    type QueryId = RecordDiesel<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<SqliteBackend> for RecordDiesel<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, SqliteBackend>) -> QueryResult<()> {
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

impl<Conn> RunQueryDsl<Conn> for RecordDiesel<'_> {}

/// SQLite: dbctl's companion row, prepared once per connection like [`RecordDiesel`].
struct RecordDbctl<'a> {
    version: &'a str,
    name: &'a str,
    checksum: &'a str,
    duration_ms: f64,
    applied_at: &'a str,
    seq: i64,
}

impl QueryId for RecordDbctl<'_> {
    type QueryId = RecordDbctl<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<SqliteBackend> for RecordDbctl<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, SqliteBackend>) -> QueryResult<()> {
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

impl<Conn> RunQueryDsl<Conn> for RecordDbctl<'_> {}
