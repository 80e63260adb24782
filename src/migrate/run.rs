//! Running one migration, up or down, and saying exactly where it failed.
//!
//! A transactional migration runs its statements and both bookkeeping writes in one transaction:
//! on failure it is rolled back whole. A migration with `run_in_transaction = false` runs statement
//! by statement (so `CREATE INDEX CONCURRENTLY` works even next to other statements on PostgreSQL);
//! only when every statement succeeded is it recorded, and a failure says which statements had
//! already run and stay in the database.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use diesel::Connection as _;

use crate::db::migrations::Bookkeeping;
use crate::db::AnyConnection;

use super::source::{self, Migration};
use super::split::{self, Statement};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Direction {
    Up,
    Down,
}

/// Applies `m` and records it; returns how long its SQL took, or `None` when another run did it
/// first (found inside the migration's own transaction, in pooled mode).
pub(crate) fn apply(
    conn: &mut AnyConnection,
    book: &Bookkeeping,
    m: &Migration,
) -> anyhow::Result<Option<Duration>> {
    guarded(conn, book, m, Direction::Up)
}

/// Reverts `m` and forgets it. The caller has checked that it has a down.sql.
pub(crate) fn revert(
    conn: &mut AnyConnection,
    book: &Bookkeeping,
    m: &Migration,
) -> anyhow::Result<Option<Duration>> {
    guarded(conn, book, m, Direction::Down)
}

/// In transaction-pooling mode a transactional migration opens its transaction first, takes the
/// transaction-level advisory lock and checks there that it is still to be done: exactly once,
/// whatever server connection the pooler hands out, even if the run's lease was taken over.
fn guarded(
    conn: &mut AnyConnection,
    book: &Bookkeeping,
    m: &Migration,
    direction: Direction,
) -> anyhow::Result<Option<Duration>> {
    if !(book.pooled() && m.run_in_transaction) {
        return run(conn, book, m, direction, false).map(Some);
    }
    conn.batch_execute("BEGIN")
        .map_err(|e| anyhow::Error::new(e).context("BEGIN"))?;
    match book.still_to_do(conn, &m.version, direction == Direction::Up) {
        Ok(true) => run(conn, book, m, direction, true).map(Some),
        Ok(false) => {
            conn.batch_execute("ROLLBACK")
                .map_err(|e| anyhow::Error::new(e).context("ROLLBACK"))?;
            Ok(None)
        }
        Err(e) => {
            let _ = conn.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

fn run(
    conn: &mut AnyConnection,
    book: &Bookkeeping,
    m: &Migration,
    direction: Direction,
    begun: bool,
) -> anyhow::Result<Duration> {
    let (sql, path) = match direction {
        Direction::Up => (m.up.as_str(), m.up_path()),
        Direction::Down => (m.down.as_deref().unwrap_or_default(), m.down_path()),
    };
    let dialect = split::Dialect::of(conn);
    let statements = split::split(sql, dialect);
    let record = |conn: &mut AnyConnection, took: Duration| match direction {
        Direction::Up => book.record_applied(
            conn,
            &m.version,
            &m.name,
            &m.checksum,
            crate::output::ms_f64(took),
        ),
        Direction::Down => book.record_reverted(conn, &m.version),
    };
    if m.run_in_transaction {
        // The transaction is opened by hand so that BEGIN travels with the first statement (one
        // round trip less per migration on PostgreSQL).
        let started = Instant::now();
        let result = (|| -> Result<Duration, TxFailure> {
            if statements.is_empty() && !begun {
                conn.batch_execute("BEGIN")
                    .map_err(|e| TxFailure::Finish(anyhow::Error::new(e).context("BEGIN")))?;
            }
            for (i, stmt) in statements.iter().enumerate() {
                let sql = if i == 0 && !begun {
                    Cow::Owned(format!("BEGIN;\n{}", stmt.sql))
                } else {
                    Cow::Borrowed(stmt.sql)
                };
                conn.batch_execute(&sql)
                    .map_err(|err| TxFailure::Statement { index: i, err })?;
            }
            let took = started.elapsed();
            // The safety net for what the splitter cannot see: record only inside the
            // transaction the statements ran in.
            match crate::db::transaction_is_open(conn) {
                Ok(true) => {}
                Ok(false) => return Err(TxFailure::Ended),
                Err(e) => {
                    return Err(TxFailure::Finish(
                        anyhow::Error::new(e).context("checking that the transaction is open"),
                    ))
                }
            }
            record(conn, took).map_err(TxFailure::Finish)?;
            conn.batch_execute("COMMIT").map_err(|e| {
                TxFailure::Finish(anyhow::Error::new(e).context("committing the migration"))
            })?;
            Ok(took)
        })();
        match result {
            Ok(took) => Ok(took),
            Err(failed) => {
                let fate = match failed {
                    // Nothing is open any more: touching the connection would only run outside
                    // any transaction.
                    TxFailure::Ended => Fate::Closed,
                    _ => settle(conn),
                };
                let postgres = matches!(conn, AnyConnection::Postgresql(_));
                Err(match failed {
                    TxFailure::Statement { index, err } => {
                        let what = fate.after_statement(postgres, &err);
                        failure(
                            m,
                            &path,
                            &statements[index],
                            index,
                            statements.len(),
                            &err,
                            Some(&what),
                            direction,
                        )
                    }
                    TxFailure::Ended => anyhow::anyhow!(
                        "{} migration {}: its statements ran, but the transaction dbctl opened for \
                         it was no longer open afterwards (a statement ended it: a COMMIT or \
                         ROLLBACK the statement splitter did not see, or a procedure that \
                         commits), so dbctl cannot undo what ran (what ran after that point ran \
                         outside any transaction) and the migration was NOT recorded: look at the \
                         database by hand before running it again. A \
                         migration that manages its own transactions needs \
                         `run_in_transaction = false` in its metadata.toml [{}]",
                        verb(direction),
                        m.label(),
                        path.display()
                    ),
                    TxFailure::Finish(err) => {
                        let what = fate.after_finish();
                        err.context(format!(
                            "{} migration {} failed while recording or committing it; {what} [{}]",
                            verb(direction),
                            m.label(),
                            path.display()
                        ))
                    }
                })
            }
        }
    } else {
        let started = Instant::now();
        for (i, stmt) in statements.iter().enumerate() {
            conn.batch_execute(stmt.sql)
                .map_err(|e| failure(m, &path, stmt, i, statements.len(), &e, None, direction))?;
        }
        let took = started.elapsed();
        conn.transaction(|conn| record(conn, took)).map_err(|e| {
            e.context(format!(
                "migration {} ran, but recording it failed: it is not marked as {}",
                m.label(),
                if direction == Direction::Up {
                    "applied"
                } else {
                    "reverted"
                }
            ))
        })?;
        Ok(took)
    }
}

/// How a transactional migration failed.
enum TxFailure {
    /// A statement failed.
    Statement {
        index: usize,
        err: diesel::result::Error,
    },
    /// Every statement ran, but the transaction was no longer open afterwards.
    Ended,
    /// Checking, recording or committing failed.
    Finish(anyhow::Error),
}

/// What became of the migration's transaction after a failure, as verified on the connection.
enum Fate {
    /// It was open and dbctl's ROLLBACK succeeded.
    RolledBack,
    /// It was no longer open when dbctl looked.
    Closed,
    /// The connection is gone.
    Lost,
    /// dbctl could not find out, or its ROLLBACK failed.
    Unknown(String),
}

fn is_lost(err: &diesel::result::Error) -> bool {
    matches!(
        err,
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection
                | diesel::result::DatabaseErrorKind::UnableToSendCommand,
            _
        )
    )
}

/// Looks at the transaction before anything else is done on the connection, and rolls it back
/// only if it is still open.
fn settle(conn: &mut AnyConnection) -> Fate {
    match crate::db::transaction_is_open(conn) {
        Ok(true) => match conn.batch_execute("ROLLBACK") {
            Ok(()) => Fate::RolledBack,
            Err(e) if is_lost(&e) => Fate::Lost,
            Err(e) => Fate::Unknown(format!("its ROLLBACK failed: {e}")),
        },
        Ok(false) => Fate::Closed,
        Err(e) if is_lost(&e) => Fate::Lost,
        Err(e) => Fate::Unknown(format!(
            "dbctl could not tell whether its transaction is still open: {e}"
        )),
    }
}

const LOOK: &str = "look at the database by hand before running it again";

impl Fate {
    /// What happened, after a statement of the migration failed.
    fn after_statement(&self, postgres: bool, err: &diesel::result::Error) -> String {
        match self {
            Fate::RolledBack => {
                "it was rolled back, the migrations before it stay applied".to_string()
            }
            Fate::Lost => "the connection to the database was lost: the server discards the \
                 open transaction, so nothing of this migration was committed and it was not \
                 recorded; the migrations before it stay applied"
                .to_string(),
            Fate::Closed if !postgres && !is_lost(err) => "SQLite rolled back the transaction \
                 itself when this statement failed (it does so for an interrupt, a trigger's \
                 RAISE(ROLLBACK), a full disk, an I/O error, running out of memory): nothing of \
                 this migration was committed and it was not recorded; the migrations before it \
                 stay applied"
                .to_string(),
            Fate::Closed => format!(
                "dbctl's transaction was already closed when this statement failed (an earlier \
                 statement ended it), so the statements before it may have been committed; the \
                 migration was NOT recorded: {LOOK}"
            ),
            Fate::Unknown(why) => format!(
                "{why}; whether the migration's statements were rolled back is unknown; it was \
                 not recorded: {LOOK}"
            ),
        }
    }

    /// What happened, after the statements ran but recording or committing failed.
    fn after_finish(&self) -> String {
        match self {
            Fate::RolledBack => {
                "it was rolled back, the migrations before it stay applied".to_string()
            }
            Fate::Lost => "the connection to the database was lost: the server discards a \
                 transaction that was not committed, but a COMMIT already sent may have \
                 succeeded"
                .to_string(),
            Fate::Closed => "the database ended the transaction itself (a COMMIT that fails, \
                 and SQLite on a full disk or an I/O error, roll it back): the migration is not \
                 applied"
                .to_string(),
            Fate::Unknown(why) => {
                format!("{why}; whether the migration was committed is unknown: {LOOK}")
            }
        }
    }
}

fn verb(direction: Direction) -> &'static str {
    match direction {
        Direction::Up => "applying",
        Direction::Down => "reverting",
    }
}

/// The error for a failed statement: migration, file and line, the statement, what happened to
/// the database (`fate`, verified, for a transactional migration; `None` for one without a
/// transaction), and the database's own message as the cause.
#[allow(clippy::too_many_arguments)]
fn failure(
    m: &Migration,
    path: &Path,
    stmt: &Statement<'_>,
    index: usize,
    total: usize,
    err: &diesel::result::Error,
    fate: Option<&str>,
    direction: Direction,
) -> anyhow::Error {
    let db_message = err.to_string();
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut msg = format!(
        "{} migration {} failed at {file} line {} (statement {} of {total}: `{}`)",
        verb(direction),
        m.label(),
        stmt.line,
        index + 1,
        stmt.summary()
    );
    if fate.is_none() && is_lost(err) {
        // The server ends the session and discards its open transaction: say so, since the
        // database's own words ("unexpected eof", "server closed the connection") do not.
        msg.push_str("; the connection to the database was lost");
    }
    if db_message == "database is locked" {
        // SQLite's busy error: name the cause and the knob, not just the symptom.
        msg.push_str(
            "; another connection kept the database locked for longer than the busy timeout \
             (DB_STATEMENT_TIMEOUT, default 5 s)",
        );
    }
    if let Some(fate) = fate {
        msg.push_str("; ");
        msg.push_str(fate);
    } else if index == 0 {
        msg.push_str(
            "; the migration runs without a transaction (run_in_transaction = false), no \
             statement had run before, and it was not recorded",
        );
    } else {
        msg.push_str(&format!(
            "; the migration runs without a transaction (run_in_transaction = false): statements \
             1 to {index} ran and were NOT rolled back, and the migration was not recorded: look \
             at the database by hand before running it again"
        ));
    }
    msg.push_str(&format!(" [{}]", path.display()));
    anyhow::anyhow!("{db_message}").context(msg)
}

/// The SQL a dry run shows for one step.
pub(crate) fn sql_of(m: &Migration, direction: Direction) -> String {
    match direction {
        Direction::Up => m.up.clone(),
        Direction::Down => m.down.clone().unwrap_or_default(),
    }
}

/// Re-exported for the commands' messages.
pub(crate) fn label(version: &str, name: &str) -> String {
    source::label(version, name)
}

#[cfg(test)]
mod tests {
    //! The run-time safety net, below the refusal that normally stops transaction control first
    //! (`migrate::decide`): `apply` is called directly here.

    use super::*;
    use diesel::sql_types::BigInt;
    use diesel::RunQueryDsl as _;

    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn count(conn: &mut AnyConnection, sql: &str) -> i64 {
        diesel::sql_query(sql).get_result::<N>(conn).unwrap().n
    }

    fn migration(up: &str) -> Migration {
        Migration {
            version: "20240101000000".to_string(),
            name: "sneaky".to_string(),
            folder: std::path::PathBuf::from("migrations/2024-01-01-000000_sneaky"),
            up: up.to_string(),
            unwritten: None,
            down: None,
            run_in_transaction: true,
            checksum: source::checksum(up),
        }
    }

    #[test]
    fn a_transaction_ended_by_the_migration_is_never_recorded() {
        crate::db::install_sqlite_probe();
        let mut conn = AnyConnection::Sqlite(
            diesel::SqliteConnection::establish(":memory:").expect("in-memory SQLite"),
        );
        let mut book = Bookkeeping::locate(&mut conn).unwrap();
        book.ensure(&mut conn).unwrap();
        book.read(&mut conn).unwrap();
        let m = migration("CREATE TABLE a (id INTEGER);\nCOMMIT;\nCREATE TABLE b (id INTEGER);\n");
        let err = apply(&mut conn, &book, &m).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("was no longer open afterwards"), "{msg}");
        assert!(msg.contains("NOT recorded"), "{msg}");
        assert!(!msg.contains("rolled back"), "{msg}");
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM __diesel_schema_migrations"
            ),
            0
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM __dbctl_migrations"),
            0
        );
        // What ran stays, as the message says.
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM sqlite_master WHERE name IN ('a', 'b')"
            ),
            2
        );
        assert!(!crate::db::transaction_is_open(&mut conn).unwrap());
    }
}
