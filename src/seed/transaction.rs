//! The seed's one transaction and its failures: [`write_transaction`] runs the load and says how
//! a failed run's transaction ended, as read back from the connection (never assumed);
//! [`DbFailure`] is a statement's failure classified where it happens (a unique violation by its
//! kind, PostgreSQL's column from its error fields); savepoints; running a seed `.sql` file; and
//! [`not_committed`], the one line a failed run ends with.

use anyhow::Context as _;
use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::prelude::*;

use super::loader::loader;
use crate::db::{self, quote_ident, AnyConnection};

/// How a failed run's transaction ended, as verified on the connection after the failure.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The transaction was still open and dbctl's ROLLBACK succeeded.
    RolledBack,
    /// The database had already ended the transaction when dbctl's own statement failed (SQLite
    /// does on disk-full, I/O, out-of-memory errors, interrupts and `RAISE(ROLLBACK)`). dbctl never
    /// sent COMMIT and was inside its transaction before that statement, so nothing is committed.
    EndedByDatabase,
    /// What happened is not known for certain; the text says what is known.
    Uncertain(String),
}

/// A run that did not commit: the first error, and how the transaction ended.
#[derive(Debug)]
pub(crate) struct TxFailure {
    pub(crate) error: anyhow::Error,
    pub(crate) ending: Ending,
}

/// An error raised by or after a user's `.sql` file: a transaction that is gone after it may have
/// been ended by a COMMIT in the file, so nothing can be promised about what it left.
///
/// `ended` says dbctl's transaction was found ended (or replaced) after the file ran.
#[derive(Debug)]
pub(crate) struct UserSql {
    pub(crate) message: String,
    pub(crate) ended: bool,
}

impl std::fmt::Display for UserSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserSql {}

/// Runs `f` in the seed's one transaction, committed when `f` succeeds and rolled back otherwise.
///
/// The backend begins it (`Loader::begin`: SQLite's `BEGIN IMMEDIATE` waits for another writer
/// up to the busy timeout; PostgreSQL takes row locks as it goes, with a plain BEGIN).
///
/// After a failure nothing is sent before [`db::transaction_is_open`] says the transaction is
/// still there; only then is it rolled back, and only a successful rollback counts as one.
pub(crate) fn write_transaction<T>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> anyhow::Result<T>,
) -> Result<T, TxFailure> {
    // The begin goes to the backend's own transaction manager, the one the derived
    // `AnyConnection` manager delegates commit and rollback to, so diesel's depth stays right.
    let begun = loader(conn).begin();
    if let Err(error) = begun {
        return Err(TxFailure {
            error,
            ending: Ending::Uncertain("the transaction did not start: nothing was changed".into()),
        });
    }
    type Manager = <AnyConnection as Connection>::TransactionManager;
    let work = |conn: &mut AnyConnection| {
        db::pooled_transaction_setup(conn).context("setting the transaction's timeout")?;
        f(conn)
    };
    let error = match work(conn) {
        Ok(value) => match Manager::commit_transaction(conn) {
            Ok(()) => return Ok(value),
            Err(e) => {
                // A COMMIT the database answered with an error did not commit; diesel has
                // already rolled back what was left. A connection lost during COMMIT is unknown.
                let ending = match db::transaction_is_open(conn) {
                    Ok(true) => rollback(conn),
                    Ok(false) if matches!(e, diesel::result::Error::DatabaseError(..)) => {
                        Ending::RolledBack
                    }
                    _ => Ending::Uncertain(
                        "the connection failed during COMMIT: whether it committed is unknown; check the database".into(),
                    ),
                };
                return Err(TxFailure {
                    error: anyhow::anyhow!("{}", database_message(&e)).context("committing"),
                    ending,
                });
            }
        },
        Err(error) => error,
    };
    let user_sql = error.chain().find_map(|c| c.downcast_ref::<UserSql>());
    let from_sql_file = user_sql.is_some();
    let replaced = user_sql.is_some_and(|u| u.ended);
    let ending = match db::transaction_is_open(conn) {
        // The open transaction is one the file began: rolled back, but dbctl's own was ended
        // by the file, and what ran before that is committed.
        Ok(true) if replaced => match rollback(conn) {
            Ending::RolledBack => Ending::Uncertain(
                "the file ended dbctl's transaction and began another (rolled back now): what ran \
                 before its COMMIT is committed; check the database"
                    .into(),
            ),
            other => other,
        },
        Ok(true) => rollback(conn),
        Ok(false) if replaced => Ending::Uncertain(
            "the file ended dbctl's transaction: what ran before its COMMIT is committed; check \
             the database"
                .into(),
        ),
        Ok(false) if from_sql_file => Ending::Uncertain(
            "the transaction had ended by then: the database rolled it back itself, or a COMMIT, \
             ROLLBACK or END in that .sql file ended it, and what ran before such a statement may \
             be committed; check the database"
                .into(),
        ),
        Ok(false) => Ending::EndedByDatabase,
        // diesel's manager is broken when libpq reports the connection gone.
        Err(_) => Ending::Uncertain(
            "the connection failed, so the transaction's state cannot be read back; dbctl never \
             sent COMMIT, so the database discards the transaction"
                .into(),
        ),
    };
    Err(TxFailure { error, ending })
}

fn rollback(conn: &mut AnyConnection) -> Ending {
    type Manager = <AnyConnection as Connection>::TransactionManager;
    match Manager::rollback_transaction(conn) {
        Ok(()) => Ending::RolledBack,
        Err(e) => Ending::Uncertain(format!(
            "ROLLBACK failed ({}); dbctl never sent COMMIT, so the database discards the transaction",
            database_message(&e)
        )),
    }
}

/// A failure the database reported for one statement, with what seeding needs to know about it.
#[derive(Debug, Clone)]
pub(crate) struct DbFailure {
    /// The database's message, with PostgreSQL's detail.
    pub(crate) message: String,
    /// A unique or primary-key violation (SQLSTATE 23505, SQLITE_CONSTRAINT_UNIQUE/PRIMARYKEY).
    pub(crate) unique: bool,
    /// The column the server's error fields name (PostgreSQL's `column_name`), if any.
    pub(crate) column: Option<String>,
}

impl DbFailure {
    pub(crate) fn of(err: &diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        let (unique, column) = match err {
            Error::DatabaseError(kind, info) => (
                matches!(kind, DatabaseErrorKind::UniqueViolation),
                info.column_name().map(str::to_string),
            ),
            _ => (false, None),
        };
        DbFailure {
            message: database_message(err),
            unique,
            column,
        }
    }
}

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbFailure {}

/// What to do with a savepoint.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Savepoint {
    Set,
    Release,
    RollbackTo,
}

/// Sets, releases or rolls back to a savepoint (the name is dbctl's own, never a user's), on
/// either backend's connection.
pub(crate) fn savepoint(
    conn: &mut impl SimpleConnection,
    action: Savepoint,
    name: &str,
) -> anyhow::Result<()> {
    let verb = match action {
        Savepoint::Set => "SAVEPOINT",
        Savepoint::Release => "RELEASE SAVEPOINT",
        Savepoint::RollbackTo => "ROLLBACK TO SAVEPOINT",
    };
    conn.batch_execute(&format!("{verb} {}", quote_ident(name)))
        .with_context(|| format!("{verb} {name}"))
}

/// A failure reported by the database, with the 1-based line it points at when known.
#[derive(Debug)]
pub(crate) struct SqlFailure {
    pub(crate) message: String,
    pub(crate) line: Option<usize>,
}

/// Runs a seed `.sql` file's text as written. PostgreSQL reports where in the text the failing
/// statement is; that position becomes a line number.
pub(crate) fn run_sql(conn: &mut AnyConnection, sql: &str) -> Result<(), SqlFailure> {
    conn.batch_execute(sql).map_err(|e| {
        let line = match &e {
            diesel::result::Error::DatabaseError(_, info) => {
                info.statement_position().and_then(|pos| {
                    let chars = usize::try_from(pos).ok()?.saturating_sub(1);
                    Some(sql.chars().take(chars).filter(|&c| c == '\n').count() + 1)
                })
            }
            _ => None,
        };
        SqlFailure {
            message: database_message(&e),
            line,
        }
    })
}

/// The database's message, with PostgreSQL's detail (`Key (id)=(1) already exists.`) when given.
pub(crate) fn database_message(err: &diesel::result::Error) -> String {
    match err {
        diesel::result::Error::DatabaseError(_, info) => {
            let mut text = info.message().trim().to_string();
            if let Some(detail) = info.details().filter(|d| !d.trim().is_empty()) {
                text.push_str(": ");
                text.push_str(detail.trim());
            }
            text
        }
        other => other.to_string(),
    }
}

/// The failure as one line that says how the transaction ended, as verified after the failure,
/// keeping its exit code. A unique violation without `--truncate` says how to reload.
pub(crate) fn not_committed(
    err: anyhow::Error,
    ending: Ending,
    database: &str,
    truncate: bool,
) -> anyhow::Error {
    let exit = crate::error::exit_of(&err);
    let unique = err
        .chain()
        .any(|c| c.downcast_ref::<DbFailure>().is_some_and(|f| f.unique));
    let hint = if unique && !truncate {
        " (if these rows were seeded before, `dbctl seed --truncate` empties the tables first and reloads them)"
    } else {
        ""
    };
    let ending = match ending {
        Ending::RolledBack => "rolled back: the database is unchanged".to_string(),
        Ending::EndedByDatabase => format!(
            "{database} rolled back the whole transaction itself when this statement failed, and dbctl sent nothing after it: the database is unchanged"
        ),
        Ending::Uncertain(what) => format!("not committed by dbctl; {what}"),
    };
    let err = anyhow::anyhow!("{err:#}{hint} ({ending})");
    match exit {
        crate::error::Exit::Failed => err,
        other => crate::error::tag(err, other),
    }
}
