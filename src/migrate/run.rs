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

use anyhow::Context as _;
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

/// Applies `m` and records it; returns how long its SQL took.
pub(crate) fn apply(
    conn: &mut AnyConnection,
    book: &Bookkeeping,
    m: &Migration,
) -> anyhow::Result<Duration> {
    run(conn, book, m, Direction::Up)
}

/// Reverts `m` and forgets it. The caller has checked that it has a down.sql.
pub(crate) fn revert(
    conn: &mut AnyConnection,
    book: &Bookkeeping,
    m: &Migration,
) -> anyhow::Result<Duration> {
    run(conn, book, m, Direction::Down)
}

fn run(
    conn: &mut AnyConnection,
    book: &Bookkeeping,
    m: &Migration,
    direction: Direction,
) -> anyhow::Result<Duration> {
    let (sql, path) = match direction {
        Direction::Up => (m.up.as_str(), m.up_path()),
        Direction::Down => (m.down.as_deref().unwrap_or_default(), m.down_path()),
    };
    let dialect = match conn {
        AnyConnection::Postgresql(_) => split::Dialect::Postgres,
        AnyConnection::Sqlite(_) => split::Dialect::Sqlite,
    };
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
        // round trip less per migration on PostgreSQL); every failure below ends in ROLLBACK.
        let started = Instant::now();
        let result = (|| -> anyhow::Result<Duration> {
            if statements.is_empty() {
                conn.batch_execute("BEGIN")?;
            }
            for (i, stmt) in statements.iter().enumerate() {
                let sql = if i == 0 {
                    Cow::Owned(format!("BEGIN;\n{}", stmt.sql))
                } else {
                    Cow::Borrowed(stmt.sql)
                };
                conn.batch_execute(&sql).map_err(|e| {
                    failure(m, &path, stmt, i, statements.len(), &e, true, direction)
                })?;
            }
            let took = started.elapsed();
            record(conn, took)?;
            conn.batch_execute("COMMIT")
                .context("committing the migration")?;
            Ok(took)
        })();
        if result.is_err() {
            // Also after a failed COMMIT: SQLite may keep the transaction open (PostgreSQL has
            // already ended it and only warns).
            let _ = conn.batch_execute("ROLLBACK");
        }
        result
    } else {
        let started = Instant::now();
        for (i, stmt) in statements.iter().enumerate() {
            conn.batch_execute(stmt.sql)
                .map_err(|e| failure(m, &path, stmt, i, statements.len(), &e, false, direction))?;
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

/// The error for a failed statement: migration, file and line, the statement, what happened to
/// the database, and the database's own message as the cause.
#[allow(clippy::too_many_arguments)]
fn failure(
    m: &Migration,
    path: &Path,
    stmt: &Statement<'_>,
    index: usize,
    total: usize,
    err: &diesel::result::Error,
    transactional: bool,
    direction: Direction,
) -> anyhow::Error {
    let db_message = err.to_string();
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let verb = match direction {
        Direction::Up => "applying",
        Direction::Down => "reverting",
    };
    let mut msg = format!(
        "{verb} migration {} failed at {file} line {} (statement {} of {total}: `{}`)",
        m.label(),
        stmt.line,
        index + 1,
        stmt.summary()
    );
    if matches!(
        err,
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            _
        )
    ) {
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
    if transactional {
        msg.push_str("; it was rolled back, the migrations before it stay applied");
        if db_message.contains("cannot run inside a transaction block") {
            msg.push_str(
                "; this statement must run outside a transaction: add `run_in_transaction = false` \
                 to the migration's metadata.toml",
            );
        }
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
