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

use crate::db::AnyConnection;

use super::bookkeeping::Book;
use super::source::Migration;
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
    book: &Book,
    m: &Migration,
) -> anyhow::Result<Option<Duration>> {
    guarded(conn, book, m, Direction::Up)
}

/// Reverts `m` and forgets it. The caller has checked that it has a down.sql.
pub(crate) fn revert(
    conn: &mut AnyConnection,
    book: &Book,
    m: &Migration,
) -> anyhow::Result<Option<Duration>> {
    guarded(conn, book, m, Direction::Down)
}

/// In transaction-pooling mode a transactional migration opens its transaction first, takes the
/// transaction-level advisory lock and checks there that it is still to be done: exactly once,
/// whatever server connection the pooler hands out, even if the run's lease was taken over.
fn guarded(
    conn: &mut AnyConnection,
    book: &Book,
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

/// `begun`: the transaction is already open (pooled mode, see [`guarded`]); PostgreSQL only.
fn run(
    conn: &mut AnyConnection,
    book: &Book,
    m: &Migration,
    direction: Direction,
    begun: bool,
) -> anyhow::Result<Duration> {
    let (sql, path) = match direction {
        Direction::Up => (m.up.as_str(), m.up_path()),
        Direction::Down => (m.down.as_deref().unwrap_or_default(), m.down_path()),
    };
    let file = File {
        m,
        path: &path,
        sql,
        direction,
        begun,
        dialect: crate::db::backend::dialect(book.sql().backend()),
    };
    if !m.run_in_transaction {
        return run_without_transaction(conn, book, &file);
    }
    // The backend says whether it takes the whole migration and its bookkeeping as one query.
    let record = match direction {
        Direction::Up => book.record_applied_in_query(&m.version, &m.name, &m.checksum),
        Direction::Down => book.record_reverted_in_query(&m.version),
    };
    match record {
        Some(record) => run_as_one_query(conn, book, &file, &record),
        None => run_statement_by_statement(conn, book, &file),
    }
}

/// The migration being run, and which of its files.
struct File<'a> {
    m: &'a Migration,
    path: &'a Path,
    sql: &'a str,
    direction: Direction,
    /// The transaction was opened before the file's query (pooled mode).
    begun: bool,
    /// The SQL dialect the file is written in.
    dialect: split::Dialect,
}

impl File<'_> {
    fn record(&self, conn: &mut AnyConnection, book: &Book, took: Duration) -> anyhow::Result<()> {
        match self.direction {
            Direction::Up => {
                book.record_applied(conn, &self.m.version, &self.m.name, &self.m.checksum, took)
            }
            Direction::Down => book.record_reverted(conn, &self.m.version),
        }
    }

    /// What opens the migration's query on PostgreSQL: its BEGIN, unless that was sent already.
    fn pg_head(&self) -> &'static str {
        if self.begun {
            ""
        } else {
            PG_HEAD
        }
    }

    fn statements(&self) -> Vec<Statement<'_>> {
        split::split(self.sql, self.dialect)
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// What opens the migration's query on PostgreSQL.
const PG_HEAD: &str = "BEGIN;\n";

/// A backend that takes the bookkeeping in the migration's query (PostgreSQL, see
/// `Bookkeeping::record_in_query`): the whole migration in one simple query, so one round trip: `BEGIN`, the file as
/// written, then the checks and the bookkeeping, then `COMMIT`. The checks cost no round trip:
/// `SET CONSTRAINTS ALL IMMEDIATE` makes deferred constraints fail here, inside the still-open
/// transaction, rather than in `COMMIT`; `SAVEPOINT` fails unless dbctl's transaction block is
/// still open (a statement that ended it leaves the rest of the query in an implicit transaction,
/// where PostgreSQL refuses savepoints), so a migration whose transaction was ended is never
/// recorded. Where a statement failed is worked out only after a failure (see [`locate`]).
fn run_as_one_query(
    conn: &mut AnyConnection,
    book: &Book,
    file: &File<'_>,
    record: &str,
) -> anyhow::Result<Duration> {
    let tail = pg_tail(record);
    // A file that ends inside a quote, a comment or a body would swallow what follows it: it
    // goes in a query of its own (PostgreSQL then reports it), the rest in a second one.
    let whole = split::is_closed(file.sql, file.dialect);
    let query = if whole {
        format!("{}{}{tail}", file.pg_head(), file.sql)
    } else {
        format!("{}{}", file.pg_head(), file.sql)
    };
    let started = Instant::now();
    let mut result = conn.batch_execute(&query);
    if result.is_ok() && !whole {
        result = conn.batch_execute(&tail);
    }
    match result {
        Ok(()) => {
            if file.direction == Direction::Up {
                book.applied_recorded();
            }
            Ok(started.elapsed())
        }
        Err(err) => {
            let took = started.elapsed();
            let fate = settle(conn);
            Err(one_query_failure(
                conn, book, file, &query, record, &err, &fate, took,
            ))
        }
    }
}

/// What follows the file in its query (see [`run_as_one_query`]). Starts on a new line after a
/// `;`, so a file whose last line is a `--` comment or whose last statement has no `;` is whole.
fn pg_tail(record: &str) -> String {
    format!(
        "\n;\nSET CONSTRAINTS ALL IMMEDIATE;\nSAVEPOINT dbctl_check;\nRELEASE SAVEPOINT dbctl_check;\n{record};\nCOMMIT"
    )
}

/// The error for a migration whose one query failed: where (from the error position, or, when
/// the server gave none, by running the statements again one by one in a transaction that is
/// rolled back), what became of the transaction, and the server's message with DETAIL and HINT.
#[allow(clippy::too_many_arguments)]
fn one_query_failure(
    conn: &mut AnyConnection,
    book: &Book,
    file: &File<'_>,
    query: &str,
    record: &str,
    err: &diesel::result::Error,
    fate: &Fate,
    took: Duration,
) -> anyhow::Error {
    let statements = file.statements();
    let mut unparsed = false;
    if let Fate::Closed = fate {
        let serialization = matches!(
            err,
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::SerializationFailure,
                _
            )
        );
        // A query PostgreSQL cannot parse runs not even its BEGIN, and leaves no transaction
        // either: told apart from a transaction a statement ended by parsing it again.
        unparsed = position(err).is_some() && parses(conn, query) == Some(false);
        if !serialization && !unparsed {
            return ended(file, Some(err));
        }
    }
    let head = file.pg_head().chars().count();
    let mut place = match position(err).map(|p| p.checked_sub(head)) {
        Some(Some(chars)) => from_position(file.sql, &statements, chars),
        Some(None) => Place::Unknown,
        None => Place::Unknown,
    };
    let mut replayed = None;
    if let Place::Unknown = place {
        if statements.len() == 1 && matches!(fate, Fate::RolledBack) {
            place = Place::Statement {
                index: 0,
                line: statements[0].line,
                column: None,
            };
        } else if statements.len() > 1
            && matches!(fate, Fate::RolledBack)
            // After Ctrl-C or SIGTERM the run stops at once: no replay.
            && crate::interrupt::check().is_ok()
        {
            replayed = Some(replay(conn, &statements, record, took, err));
            place = match &replayed {
                Some(Replay::Failed { index, error }) => {
                    let stmt = &statements[*index];
                    match position(error) {
                        Some(chars) => {
                            let offset = stmt.sql.as_ptr() as usize - file.sql.as_ptr() as usize;
                            let start_chars = file.sql[..offset].chars().count();
                            from_position(file.sql, &statements, start_chars + chars)
                        }
                        None => Place::Statement {
                            index: *index,
                            line: stmt.line,
                            column: None,
                        },
                    }
                }
                Some(Replay::Tail) => Place::Tail,
                _ => Place::Unknown,
            };
        }
    }
    let what = if unparsed {
        "PostgreSQL could not parse it, so none of its statements ran; the migrations before it \
         stay applied"
            .to_string()
    } else {
        fate.after_statement(book, err)
    };
    let mut msg = located(file, &statements, &place);
    match replayed {
        Some(Replay::NotReproduced) => msg.push_str(
            " (PostgreSQL gave no position, and the statements all succeeded when dbctl ran them \
             again one by one in a transaction it rolled back)",
        ),
        Some(Replay::Different) => msg.push_str(
            " (PostgreSQL gave no position, and running the statements again one by one, in a \
             transaction dbctl rolled back, failed differently)",
        ),
        _ => {}
    }
    msg.push_str("; ");
    msg.push_str(&what);
    msg.push_str(&format!(" [{}]", file.path.display()));
    anyhow::anyhow!("{}", database_message(err)).context(msg)
}

/// Whether PostgreSQL can parse `query` (without running any of it): a statement that always
/// fails when it runs is put in front, so the error says which happened. `None`: no answer.
fn parses(conn: &mut AnyConnection, query: &str) -> Option<bool> {
    const PROBE: &str = "SELECT dbctl_parse_check;\n";
    match conn.batch_execute(&format!("{PROBE}{query}")) {
        Ok(()) => None,
        Err(e) if is_lost(&e) => None,
        // Position 7 (0-based) is the probe's column name: the query parsed, the probe failed.
        Err(e) => Some(position(&e) == Some(PROBE.find("dbctl").unwrap_or_default())),
    }
}

/// The error position PostgreSQL reported (0-based, in characters of the query).
fn position(err: &diesel::result::Error) -> Option<usize> {
    match err {
        diesel::result::Error::DatabaseError(_, info) => info
            .statement_position()
            .and_then(|p| usize::try_from(p).ok())
            .and_then(|p| p.checked_sub(1)),
        _ => None,
    }
}

/// Where in the file a failure is.
enum Place {
    /// In statement `index` (0-based), at `line` (and `column` when the server said).
    Statement {
        index: usize,
        line: usize,
        column: Option<usize>,
    },
    /// After the file: checking deferred constraints or writing the bookkeeping rows.
    Tail,
    Unknown,
}

/// The place of character `chars` (0-based) of `sql`; past the end is the end of the file (a
/// statement cut short is reported where the file ends) .
fn from_position(sql: &str, statements: &[Statement<'_>], chars: usize) -> Place {
    let total = sql.chars().count();
    // The tail starts with "\n;\n": PostgreSQL points there when the file's last statement is
    // incomplete ("syntax error at or near ;").
    if chars > total + 2 {
        return Place::Tail;
    }
    let byte = split::char_to_byte(sql, chars.min(total)).unwrap_or(sql.len());
    // Past the last statement's text: the end of that statement.
    let byte = match statements.last() {
        Some(last) if chars >= total => {
            (last.sql.as_ptr() as usize - sql.as_ptr() as usize) + last.sql.len()
        }
        _ => byte,
    };
    let (line, column) = split::line_and_column(sql, byte);
    match split::statement_at(statements, sql, byte) {
        Some(index) => Place::Statement {
            index,
            line,
            column: Some(column),
        },
        None => Place::Unknown,
    }
}

/// What running the statements again found.
enum Replay {
    Failed {
        index: usize,
        error: diesel::result::Error,
    },
    /// Every statement succeeded, and the checks or bookkeeping after them failed.
    Tail,
    NotReproduced,
    /// A statement failed differently (another error, or the replay's time limit).
    Different,
    /// dbctl could not run them again (or roll that back).
    Unavailable,
}

/// Runs the statements again, one by one, in a transaction that is always rolled back, to find the
/// one that fails: only after a failure the server gave no position for, and with a statement
/// timeout of twice what the failed run took (plus a second), so that a long migration is not
/// held up much longer.
fn replay(
    conn: &mut AnyConnection,
    statements: &[Statement<'_>],
    record: &str,
    took: Duration,
    original: &diesel::result::Error,
) -> Replay {
    let limit = took.as_millis().saturating_mul(2).saturating_add(1000);
    if conn
        .batch_execute(&format!("BEGIN;\nSET LOCAL statement_timeout = {limit}"))
        .is_err()
    {
        let _ = settle(conn);
        return Replay::Unavailable;
    }
    let mut found = Replay::NotReproduced;
    for (index, stmt) in statements.iter().enumerate() {
        if let Err(error) = conn.batch_execute(stmt.sql) {
            // Only the same failure tells where the first one was (not, say, the timeout).
            found = if database_message(&error) == database_message(original) {
                Replay::Failed { index, error }
            } else {
                Replay::Different
            };
            break;
        }
    }
    if let Replay::NotReproduced = found {
        let tail = pg_tail(record);
        // Everything of the tail but its COMMIT.
        let checks = tail.trim_end_matches("COMMIT");
        if conn.batch_execute(checks).is_err() {
            found = Replay::Tail;
        }
    }
    match settle(conn) {
        Fate::RolledBack | Fate::Closed => found,
        _ => Replay::Unavailable,
    }
}

/// The first part of a failure message: the migration, the file, and where in it.
fn located(file: &File<'_>, statements: &[Statement<'_>], place: &Place) -> String {
    let head = format!("{} migration {}", verb(file.direction), file.m.label());
    let name = file.name();
    let total = statements.len();
    match place {
        Place::Statement {
            index,
            line,
            column,
        } => {
            let stmt = &statements[*index];
            match column {
                None => format!(
                    "{head} failed at {name} line {line} (statement {} of {total}: `{}`)",
                    index + 1,
                    stmt.summary()
                ),
                Some(column) if stmt.line == *line => format!(
                    "{head} failed at {name} line {line}, column {column}: `{}` (statement {} of \
                     {total})",
                    shorten(split::line_text(file.sql, *line).trim()),
                    index + 1,
                ),
                Some(column) => format!(
                    "{head} failed at {name} line {line}, column {column}: `{}` (in statement {} \
                     of {total}, from line {}: `{}`)",
                    shorten(split::line_text(file.sql, *line).trim()),
                    index + 1,
                    stmt.line,
                    stmt.summary()
                ),
            }
        }
        Place::Tail => format!(
            "{head} failed after all {total} statements of {name} ran: checking its deferred \
             constraints, or recording it in the bookkeeping tables"
        ),
        Place::Unknown => format!("{head} failed in {name}"),
    }
}

fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        out.push_str(" ...");
    }
    out
}

/// The error for a migration whose transaction was no longer open: a statement of it ended the
/// transaction dbctl opened. `err` is the failure that revealed it, if there was one.
fn ended(file: &File<'_>, err: Option<&diesel::result::Error>) -> anyhow::Error {
    let msg = format!(
        "{} migration {}: the transaction dbctl opened for it was no longer open afterwards (a statement \
         ended it: a COMMIT or ROLLBACK the statement splitter did not see, or a procedure that \
         commits), so dbctl cannot undo what ran before that point (it may have been committed) \
         and the migration was NOT recorded: look at the database by hand before running it \
         again. A migration that manages its own transactions needs `run_in_transaction = false` \
         in its metadata.toml [{}]",
        verb(file.direction),
        file.m.label(),
        file.path.display()
    );
    match err {
        Some(e) => anyhow::anyhow!("{}", database_message(e)).context(msg),
        None => anyhow::anyhow!(msg),
    }
}

/// A backend without the one-query form (SQLite): the statements one by one in one transaction.
/// SQLite has no round trips to save, and this names the failing statement.
fn run_statement_by_statement(
    conn: &mut AnyConnection,
    book: &Book,
    file: &File<'_>,
) -> anyhow::Result<Duration> {
    let statements = file.statements();
    // The transaction is opened by hand so that BEGIN travels with the first statement.
    let started = Instant::now();
    let result = (|| -> Result<Duration, TxFailure> {
        if statements.is_empty() {
            conn.batch_execute("BEGIN")
                .map_err(|e| TxFailure::Finish(anyhow::Error::new(e).context("BEGIN")))?;
        }
        run_each(conn, &statements, "BEGIN;\n")
            .map_err(|(index, err)| TxFailure::Statement { index, err })?;
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
        file.record(conn, book, took).map_err(TxFailure::Finish)?;
        conn.batch_execute("COMMIT").map_err(|e| {
            TxFailure::Finish(anyhow::Error::new(e).context("committing the migration"))
        })?;
        Ok(took)
    })();
    let failed = match result {
        Ok(took) => return Ok(took),
        Err(failed) => failed,
    };
    let fate = match failed {
        // Nothing is open any more: touching the connection would only run outside any
        // transaction.
        TxFailure::Ended => Fate::Closed,
        _ => settle(conn),
    };
    Err(match failed {
        TxFailure::Statement { index, err } => {
            let what = fate.after_statement(book, &err);
            failure(file, &statements, index, &err, Some(&what))
        }
        TxFailure::Ended => ended(file, None),
        TxFailure::Finish(err) => {
            let what = fate.after_finish();
            err.context(format!(
                "{} migration {} failed while recording or committing it; {what} [{}]",
                verb(file.direction),
                file.m.label(),
                file.path.display()
            ))
        }
    })
}

/// Runs `statements` one by one, `head` sent in front of the first (so that a `BEGIN` costs no
/// round trip of its own); on failure, which statement failed and how.
fn run_each(
    conn: &mut AnyConnection,
    statements: &[Statement<'_>],
    head: &str,
) -> Result<(), (usize, diesel::result::Error)> {
    for (i, stmt) in statements.iter().enumerate() {
        let sql = if i == 0 && !head.is_empty() {
            Cow::Owned(format!("{head}{}", stmt.sql))
        } else {
            Cow::Borrowed(stmt.sql)
        };
        conn.batch_execute(&sql).map_err(|err| (i, err))?;
    }
    Ok(())
}

/// `run_in_transaction = false`: statement by statement (so that `CREATE INDEX CONCURRENTLY`
/// works next to other statements), recorded in a transaction of its own once all succeeded.
fn run_without_transaction(
    conn: &mut AnyConnection,
    book: &Book,
    file: &File<'_>,
) -> anyhow::Result<Duration> {
    let statements = file.statements();
    let started = Instant::now();
    run_each(conn, &statements, "").map_err(|(i, e)| failure(file, &statements, i, &e, None))?;
    let took = started.elapsed();
    conn.transaction(|conn| file.record(conn, book, took))
        .map_err(|e| {
            e.context(format!(
                "migration {} ran, but recording it failed: it is not marked as {}",
                file.m.label(),
                if file.direction == Direction::Up {
                    "applied"
                } else {
                    "reverted"
                }
            ))
        })?;
    Ok(took)
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
    fn after_statement(&self, book: &Book, err: &diesel::result::Error) -> String {
        match self {
            Fate::RolledBack => {
                "it was rolled back, the migrations before it stay applied".to_string()
            }
            Fate::Lost => "the connection to the database was lost: the server discards the \
                 open transaction, so nothing of this migration was committed and it was not \
                 recorded; the migrations before it stay applied"
                .to_string(),
            Fate::Closed => match book.sql().closes_failed_transactions() {
                Some(what) if !is_lost(err) => what.to_string(),
                _ => format!(
                    "dbctl's transaction was already closed when this statement failed (an \
                     earlier statement ended it), so the statements before it may have been \
                     committed; the migration was NOT recorded: {LOOK}"
                ),
            },
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

pub(crate) fn verb(direction: Direction) -> &'static str {
    match direction {
        Direction::Up => "applying",
        Direction::Down => "reverting",
    }
}

/// The error for a failed statement run on its own: migration, file, line (and column, when
/// PostgreSQL gave a position) and statement, what happened to the database (`fate`, verified,
/// for a transactional migration; `None` for one without a transaction), and the database's own
/// message, with DETAIL and HINT, as the cause. `sent_before` is how many characters were sent
/// ahead of the statement in its query.
fn failure(
    file: &File<'_>,
    statements: &[Statement<'_>],
    index: usize,
    err: &diesel::result::Error,
    fate: Option<&str>,
) -> anyhow::Error {
    let sent_before = if fate.is_some() && index == 0 {
        "BEGIN;\n".len()
    } else {
        0
    };
    let stmt = &statements[index];
    let place = match position(err).and_then(|p| p.checked_sub(sent_before)) {
        Some(chars) => {
            let offset = stmt.sql.as_ptr() as usize - file.sql.as_ptr() as usize;
            let start = file.sql[..offset].chars().count();
            match from_position(file.sql, statements, start + chars) {
                Place::Statement {
                    index: i,
                    line,
                    column,
                } if i == index => Place::Statement {
                    index,
                    line,
                    column,
                },
                _ => Place::Statement {
                    index,
                    line: stmt.line,
                    column: None,
                },
            }
        }
        None => Place::Statement {
            index,
            line: stmt.line,
            column: None,
        },
    };
    let mut msg = located(file, statements, &place);
    if fate.is_none() && is_lost(err) {
        // The server ends the session and discards its open transaction: say so, since the
        // database's own words ("unexpected eof", "server closed the connection") do not.
        msg.push_str("; the connection to the database was lost");
    }
    if crate::db::is_lock_busy(err) {
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
    msg.push_str(&format!(" [{}]", file.path.display()));
    anyhow::anyhow!("{}", database_message(err)).context(msg)
}

/// The database's message, followed by PostgreSQL's DETAIL and HINT when it gave them, as psql
/// prints them.
fn database_message(err: &diesel::result::Error) -> String {
    match err {
        diesel::result::Error::DatabaseError(_, info) => {
            let mut text = info.message().trim().to_string();
            for (label, part) in [("DETAIL", info.details()), ("HINT", info.hint())] {
                if let Some(part) = part.map(str::trim).filter(|p| !p.is_empty()) {
                    text.push_str(&format!("; {label}: {part}"));
                }
            }
            text
        }
        other => other.to_string(),
    }
}

/// The SQL a dry run shows for one step.
pub(crate) fn sql_of(m: &Migration, direction: Direction) -> String {
    match direction {
        Direction::Up => m.up.clone(),
        Direction::Down => m.down.clone().unwrap_or_default(),
    }
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
            checksum: crate::migrate::source::checksum(up),
        }
    }

    #[test]
    fn a_transaction_ended_by_the_migration_is_never_recorded() {
        crate::db::install_sqlite_probe();
        let mut conn = AnyConnection::Sqlite(
            diesel::SqliteConnection::establish(":memory:").expect("in-memory SQLite"),
        );
        let mut book = Book::locate(&mut conn).unwrap();
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

    /// PostgreSQL: the one-query form's check. A COMMIT the splitter missed ends dbctl's block;
    /// what follows it in the query runs in an implicit transaction, where the SAVEPOINT check
    /// fails: the migration is not recorded, and what ran after the COMMIT is rolled back.
    #[test]
    fn postgres_a_transaction_ended_inside_the_query_is_never_recorded() {
        if std::env::var("DBCTL_TEST_SKIP_PG").is_ok_and(|v| v == "1" || v == "true") {
            eprintln!("skipping: DBCTL_TEST_SKIP_PG is set");
            return;
        }
        let url = std::env::var("DBCTL_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let name = format!("dbctl_unit_ended_{}", std::process::id());
        let mut admin = diesel::PgConnection::establish(&url).unwrap();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = url.rsplit_once('/').map(|(b, _)| b).unwrap();
        let result = std::panic::catch_unwind(|| {
            let mut conn = AnyConnection::Postgresql(
                diesel::PgConnection::establish(&format!("{base}/{name}")).unwrap(),
            );
            let mut book = Book::locate(&mut conn).unwrap();
            book.ensure(&mut conn).unwrap();
            book.read(&mut conn).unwrap();
            let m =
                migration("CREATE TABLE a (id INTEGER);\nCOMMIT;\nCREATE TABLE b (id INTEGER);\n");
            let err = apply(&mut conn, &book, &m).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("was no longer open"), "{msg}");
            assert!(msg.contains("NOT recorded"), "{msg}");
            let n = |conn: &mut AnyConnection, sql: &str| count(conn, sql);
            assert_eq!(
                n(
                    &mut conn,
                    "SELECT count(*)::bigint AS n FROM __diesel_schema_migrations"
                ),
                0
            );
            assert_eq!(
                n(
                    &mut conn,
                    "SELECT count(*)::bigint AS n FROM __dbctl_migrations"
                ),
                0
            );
            assert_eq!(
                n(
                    &mut conn,
                    "SELECT count(*)::bigint AS n FROM pg_class WHERE relname = 'a'"
                ),
                1,
                "committed by the migration's own COMMIT"
            );
            assert_eq!(
                n(
                    &mut conn,
                    "SELECT count(*)::bigint AS n FROM pg_class WHERE relname = 'b'"
                ),
                0,
                "rolled back with the failed check"
            );
            assert!(!crate::db::transaction_is_open(&mut conn).unwrap());
        });
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}
