//! What seeding needs from each backend: the catalog (columns, foreign keys), emptying tables,
//! the run's write transaction, savepoints, running a seed `.sql` file, and the bulk paths: `COPY ... FROM STDIN` on
//! PostgreSQL and one cached multi-row `INSERT` statement on SQLite.
//!
//! diesel's `copy_from` wants a table known at compile time: its `CopyTarget::walk_target` is an
//! associated function with no `self`. [`RuntimeTarget`] implements that trait and writes the
//! quoted table and column list that [`copy_csv`] put in a thread-local just before the call, so
//! COPY runs on the same diesel connection, inside the same transaction as everything else.

use std::cell::RefCell;
use std::io::Write;

use anyhow::Context as _;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::{CopyFormat, CopyTarget, Pg};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Integer, Nullable, Text};
use diesel::sqlite::Sqlite;

use super::{quote_ident, AnyConnection, TableName};

/// Runs `f` in the seed's one transaction, committed when `f` succeeds and rolled back otherwise.
///
/// On SQLite the transaction starts with `BEGIN IMMEDIATE`, which takes the write lock at once
/// and so waits for another writer up to the busy timeout (`DB_STATEMENT_TIMEOUT`). A plain
/// (deferred) `BEGIN` would first read the catalog under a shared lock; SQLite then refuses the
/// later upgrade to a write lock with "database is locked" at once, without waiting, because
/// waiting there could deadlock. PostgreSQL takes row locks as it goes: a plain BEGIN.
pub(crate) fn write_transaction<T>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    // The begin goes to the backend's own transaction manager, the one the derived
    // `AnyConnection` manager delegates commit and rollback to, so diesel's depth stays right.
    match conn {
        AnyConnection::Sqlite(sq) => {
            AnsiTransactionManager::begin_transaction_sql(sq, "BEGIN IMMEDIATE").map_err(|e| {
                let busy = e.to_string().contains("locked");
                anyhow::Error::new(e).context(if busy {
                    "another connection is writing to the database: its write lock was not \
                     released within the busy timeout (DB_STATEMENT_TIMEOUT, default 5 s)"
                } else {
                    "starting the seed's transaction"
                })
            })?
        }
        AnyConnection::Postgresql(pg) => {
            <diesel::PgConnection as Connection>::TransactionManager::begin_transaction(pg)?
        }
    }
    type Manager = <AnyConnection as Connection>::TransactionManager;
    let work = |conn: &mut AnyConnection| {
        super::pooled_transaction_setup(conn).context("setting the transaction's timeout")?;
        f(conn)
    };
    match work(conn) {
        Ok(value) => {
            Manager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(err) => {
            // The first error is the one to report; a failed rollback (say, on a connection that
            // is gone) adds nothing the user can act on, and the server discards the transaction.
            let _ = Manager::rollback_transaction(conn);
            Err(err)
        }
    }
}

/// A column of a seeded table.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// The declared type (PostgreSQL's `format_type`, SQLite's declared type).
    pub(crate) sql_type: String,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    sql_type: String,
}

#[derive(QueryableByName)]
struct EdgeRow {
    #[diesel(sql_type = Text)]
    child: String,
    #[diesel(sql_type = Text)]
    parent: String,
}

/// Every foreign key between tables, as (child, parent) table names.
pub(crate) fn foreign_keys(conn: &mut AnyConnection) -> anyhow::Result<Vec<(String, String)>> {
    let sql = match conn {
        AnyConnection::Postgresql(_) => {
            // Tables off the search path are named `schema.table`, as seed files name them.
            "SELECT DISTINCT \
               CASE WHEN pg_catalog.pg_table_is_visible(c.oid) THEN c.relname::text \
                    ELSE cn.nspname || '.' || c.relname END AS child, \
               CASE WHEN pg_catalog.pg_table_is_visible(p.oid) THEN p.relname::text \
                    ELSE pn.nspname || '.' || p.relname END AS parent \
             FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
             JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
             JOIN pg_catalog.pg_class p ON p.oid = k.confrelid \
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE k.contype = 'f'"
        }
        AnyConnection::Sqlite(_) => {
            "SELECT DISTINCT m.name AS child, f.\"table\" AS parent \
             FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE m.type = 'table'"
        }
    };
    let rows: Vec<EdgeRow> = diesel::sql_query(sql)
        .load(conn)
        .context("reading foreign keys from the catalog")?;
    Ok(rows.into_iter().map(|r| (r.child, r.parent)).collect())
}

/// The columns of a table, or `None` when there is no such table.
pub(crate) fn columns(
    conn: &mut AnyConnection,
    table: &TableName,
) -> anyhow::Result<Option<Vec<Column>>> {
    if !super::table_exists(conn, table)? {
        return Ok(None);
    }
    let query = match conn {
        AnyConnection::Postgresql(_) => diesel::sql_query(
            "SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS sql_type \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND c.relkind IN ('r', 'p') \
               AND CASE WHEN $2::text IS NULL THEN pg_catalog.pg_table_is_visible(c.oid) ELSE n.nspname = $2 END \
               AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .into_boxed::<<AnyConnection as Connection>::Backend>()
        .bind::<Text, _>(&table.name)
        .bind::<Nullable<Text>, _>(&table.schema),
        AnyConnection::Sqlite(_) => {
            diesel::sql_query("SELECT name, type AS sql_type FROM pragma_table_info($1) ORDER BY cid")
        .into_boxed::<<AnyConnection as Connection>::Backend>()
        .bind::<Text, _>(&table.name)
        }
    };
    let rows: Vec<ColumnRow> = query
        .load(conn)
        .with_context(|| format!("reading the columns of table {table}"))?;
    Ok(Some(
        rows.into_iter()
            .map(|r| Column {
                name: r.name,
                sql_type: r.sql_type,
            })
            .collect(),
    ))
}

/// Empties tables, given children first. PostgreSQL: one `TRUNCATE` (it refuses when a table
/// outside the list still references one of them, rather than silently cascading). SQLite: a
/// `DELETE` per table, children first so foreign keys hold at each step.
pub(crate) fn empty_tables(conn: &mut AnyConnection, tables: &[TableName]) -> anyhow::Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let quoted: Vec<String> = tables.iter().map(TableName::quoted).collect();
    match conn {
        AnyConnection::Postgresql(_) => conn
            .batch_execute(&format!("TRUNCATE TABLE {}", quoted.join(", ")))
            .map_err(|e| anyhow::anyhow!("{}", database_message(&e)))
            .with_context(|| {
                let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
                format!("emptying {} (--truncate)", names.join(", "))
            }),
        AnyConnection::Sqlite(_) => {
            for (name, table) in tables.iter().zip(&quoted) {
                conn.batch_execute(&format!("DELETE FROM {table}"))
                    .map_err(|e| anyhow::anyhow!("{}", database_message(&e)))
                    .with_context(|| format!("emptying {name} (--truncate)"))?;
            }
            Ok(())
        }
    }
}

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

/// Defers foreign-key checks to the commit, for tables whose keys form a cycle. SQLite defers
/// every key; PostgreSQL only those declared DEFERRABLE.
pub(crate) fn defer_foreign_keys(conn: &mut AnyConnection) -> anyhow::Result<()> {
    let sql = match conn {
        AnyConnection::Postgresql(_) => "SET CONSTRAINTS ALL DEFERRED",
        AnyConnection::Sqlite(_) => "PRAGMA defer_foreign_keys = ON",
    };
    conn.batch_execute(sql)
        .context("deferring foreign-key checks")
}

/// Checks the foreign keys whose checks were deferred, before the commit, so that a dangling key
/// is reported with its table and row rather than as a bare failed commit.
pub(crate) fn check_deferred_foreign_keys(conn: &mut AnyConnection) -> anyhow::Result<()> {
    #[derive(QueryableByName)]
    struct Dangling {
        #[diesel(sql_type = Text)]
        child: String,
        #[diesel(sql_type = Nullable<Text>)]
        row_id: Option<String>,
        #[diesel(sql_type = Text)]
        parent: String,
    }
    match conn {
        AnyConnection::Postgresql(_) => conn
            .batch_execute("SET CONSTRAINTS ALL IMMEDIATE")
            .map_err(|e| anyhow::anyhow!("{}", database_message(&e))),
        AnyConnection::Sqlite(_) => {
            let found: Vec<Dangling> = diesel::sql_query(
                "SELECT \"table\" AS child, CAST(\"rowid\" AS TEXT) AS row_id, parent \
                 FROM pragma_foreign_key_check LIMIT 1",
            )
            .load(conn)
            .context("checking the deferred foreign keys")?;
            match found.first() {
                None => Ok(()),
                Some(d) => Err(anyhow::anyhow!(
                    "FOREIGN KEY constraint failed: a row of {} (rowid {}) references a missing row of {}",
                    quote_ident(&d.child),
                    d.row_id.as_deref().unwrap_or("?"),
                    quote_ident(&d.parent)
                )),
            }
        }
    }
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

diesel::table! {
    /// Never queried: it only gives diesel's COPY machinery the compile-time table it asks for.
    /// The real target is written by [`RuntimeTarget::walk_target`].
    dbctl_runtime_copy_target (id) {
        id -> Integer,
    }
}

thread_local! {
    /// `"table" ("col", ...)`, already quoted, for the COPY statement being built on this thread.
    static COPY_TARGET: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A COPY target named at run time (see the module comment).
struct RuntimeTarget;

impl CopyTarget for RuntimeTarget {
    type Table = dbctl_runtime_copy_target::table;
    type SqlType = Integer;

    fn walk_target(mut pass: AstPass<'_, '_, Pg>) -> QueryResult<()> {
        COPY_TARGET.with(|target| pass.push_sql(&target.borrow()));
        Ok(())
    }
}

/// Clears the thread-local target however `copy_csv` ends.
struct TargetGuard;

impl Drop for TargetGuard {
    fn drop(&mut self) {
        COPY_TARGET.with(|t| t.borrow_mut().clear());
    }
}

/// `"table" ("a", "b")`: the quoted target of a COPY or an INSERT.
fn quoted_target(table: &TableName, columns: &[String]) -> String {
    let columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    format!("{} ({})", table.quoted(), columns.join(", "))
}

/// `COPY "table" ("col", ...) FROM STDIN (FORMAT csv)`, fed by `fill`, which writes CSV rows in
/// PostgreSQL's dialect (an unquoted empty field is NULL, `""` an empty string: the same rule as
/// the seed files). Returns the rows PostgreSQL stored.
///
/// An error from `fill` aborts the COPY and is returned as it is; otherwise a failure is the
/// database's message.
pub(crate) fn copy_csv(
    pg: &mut PgConnection,
    table: &TableName,
    columns: &[String],
    fill: impl FnMut(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let target = quoted_target(table, columns);
    COPY_TARGET.with(|t| *t.borrow_mut() = target);
    let _guard = TargetGuard;
    // diesel takes an `Fn`; the fill function streams and so needs `&mut` state.
    let fill = RefCell::new(fill);
    let failure: RefCell<Option<anyhow::Error>> = RefCell::new(None);
    let result = diesel::copy_from(dbctl_runtime_copy_target::table)
        .from_raw_data(RuntimeTarget, |sink: &mut dyn Write| {
            // Large writes: each one is a CopyData message.
            let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, sink);
            let outcome = (fill.borrow_mut())(&mut buffered)
                .and_then(|()| buffered.flush().context("sending rows to PostgreSQL"));
            outcome.map_err(|e| {
                let text = format!("{e:#}");
                *failure.borrow_mut() = Some(e);
                diesel::result::Error::SerializationError(text.into())
            })
        })
        .with_format(CopyFormat::Csv)
        .execute(pg);
    if let Some(err) = failure.into_inner() {
        return Err(err);
    }
    match result {
        Ok(rows) => Ok(rows as u64),
        Err(e) => Err(anyhow::anyhow!("{}", database_message(&e))),
    }
}

/// After rows with explicit ids were copied in, moves each serial or identity sequence of the
/// given columns past the largest value, so the application's next insert does not collide.
/// Returns the sequences it moved.
pub(crate) fn pg_reset_sequences(
    pg: &mut PgConnection,
    table: &TableName,
    columns: &[String],
) -> anyhow::Result<Vec<String>> {
    #[derive(QueryableByName)]
    struct Seq {
        #[diesel(sql_type = Nullable<Text>)]
        seq: Option<String>,
    }
    let mut moved = Vec::new();
    for column in columns {
        let found: Seq =
            diesel::sql_query("SELECT pg_catalog.pg_get_serial_sequence($1, $2) AS seq")
                .bind::<Text, _>(table.quoted())
                .bind::<Text, _>(column)
                .get_result(pg)
                .with_context(|| format!("looking up the sequence of {table}.{column}"))?;
        let Some(seq) = found.seq else { continue };
        let sql = format!(
            "SELECT pg_catalog.setval($1::regclass, m) FROM (SELECT max({col})::bigint AS m FROM {tab}) x WHERE m IS NOT NULL",
            col = quote_ident(column),
            tab = table.quoted()
        );
        diesel::sql_query(sql)
            .bind::<Text, _>(&seq)
            .execute(pg)
            .with_context(|| format!("moving sequence {seq} past the seeded ids"))?;
        moved.push(seq);
    }
    Ok(moved)
}

/// Rows waiting to be inserted into one SQLite table with one multi-row `INSERT`, whose prepared
/// statement diesel caches by its text, so a full batch reuses the same statement every time.
pub(crate) struct SqliteBatch {
    head: String,
    columns: usize,
    capacity: usize,
    /// The values of the buffered rows, back to back; `spans` index into it, `None` is NULL.
    text: String,
    spans: Vec<Option<(usize, usize)>>,
}

/// SQLite allows 32766 bound values per statement; a few hundred rows per statement is where
/// the per-statement cost stops mattering.
const SQLITE_MAX_VALUES: usize = 32_000;
const SQLITE_BATCH_ROWS: usize = 256;
const SQLITE_BATCH_BYTES: usize = 64 * 1024 * 1024;

impl SqliteBatch {
    pub(crate) fn new(table: &TableName, columns: &[String]) -> Self {
        let head = format!("INSERT INTO {} VALUES ", quoted_target(table, columns));
        let capacity = (SQLITE_MAX_VALUES / columns.len().max(1)).clamp(1, SQLITE_BATCH_ROWS);
        SqliteBatch {
            head,
            columns: columns.len(),
            capacity,
            text: String::new(),
            spans: Vec::new(),
        }
    }

    /// Buffers one row (exactly one value per column).
    pub(crate) fn push<'v>(&mut self, values: impl Iterator<Item = Option<&'v str>>) {
        for value in values {
            self.spans.push(value.map(|v| {
                let start = self.text.len();
                self.text.push_str(v);
                (start, self.text.len())
            }));
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.spans.len() / self.columns.max(1)
    }

    pub(crate) fn is_full(&self) -> bool {
        // Large rows flush early, so that a batch's memory stays bounded (64 MiB and one row).
        self.rows() >= self.capacity || self.text.len() >= SQLITE_BATCH_BYTES
    }

    /// Inserts the buffered rows. On failure, finds the row at fault by inserting them one at a
    /// time, and returns its index in the batch with the database's message.
    pub(crate) fn flush(&mut self, sq: &mut SqliteConnection) -> Result<(), (usize, String)> {
        let rows = self.rows();
        if rows == 0 {
            return Ok(());
        }
        let values: Vec<Option<&str>> = self
            .spans
            .iter()
            .map(|s| s.map(|(a, b)| &self.text[a..b]))
            .collect();
        let all = InsertRows {
            head: &self.head,
            columns: self.columns,
            values: &values,
        };
        let outcome = sq.execute_returning_count(&all);
        let result = match outcome {
            Ok(_) => Ok(()),
            // After SIGINT/SIGTERM there is no bad row to look for, and nothing more may run.
            Err(e) if rows == 1 || crate::interrupt::requested() => Err((0, database_message(&e))),
            Err(e) => {
                // A failed statement leaves nothing behind in SQLite: replay row by row.
                let mut found = Err((rows - 1, database_message(&e)));
                for (i, row) in values.chunks(self.columns).enumerate() {
                    let one = InsertRows {
                        head: &self.head,
                        columns: self.columns,
                        values: row,
                    };
                    if let Err(e) = sq.execute_returning_count(&one) {
                        found = Err((i, database_message(&e)));
                        break;
                    }
                }
                found
            }
        };
        self.text.clear();
        self.spans.clear();
        result
    }
}

/// `INSERT INTO t (cols) VALUES ($1, $2), ($3, $4), ...` with every value bound as text (SQLite
/// applies the column's affinity, as its own `.import` does).
struct InsertRows<'a> {
    head: &'a str,
    columns: usize,
    values: &'a [Option<&'a str>],
}

impl QueryId for InsertRows<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Sqlite> for InsertRows<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(self.head);
        for (r, row) in self.values.chunks(self.columns.max(1)).enumerate() {
            out.push_sql(if r == 0 { "(" } else { ", (" });
            for (c, value) in row.iter().enumerate() {
                if c > 0 {
                    out.push_sql(", ");
                }
                out.push_bind_param::<Nullable<Text>, _>(value)?;
            }
            out.push_sql(")");
        }
        Ok(())
    }
}

/// A relation a CSV file may name: its schema (PostgreSQL) and name, and whether it is on the
/// search path (always on SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub(crate) schema: Option<String>,
    pub(crate) name: String,
    pub(crate) visible: bool,
}

/// The tables, views and foreign tables a seed file's name may be matched against (the file
/// names a table the way a header names columns: exactly, else ignoring case when unambiguous).
pub(crate) fn relations(conn: &mut AnyConnection) -> anyhow::Result<Vec<Relation>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Text>)]
        schema: Option<String>,
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        visible: bool,
    }
    let sql = match conn {
        AnyConnection::Postgresql(_) => {
            "SELECT n.nspname::text AS schema, c.relname::text AS name, \
                    pg_catalog.pg_table_is_visible(c.oid) AS visible \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'f') \
               AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"
        }
        AnyConnection::Sqlite(_) => {
            "SELECT NULL AS schema, name, 1 AS visible FROM sqlite_master \
             WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        }
    };
    let rows: Vec<Row> = diesel::sql_query(sql)
        .load(conn)
        .context("listing the tables seed files can name")?;
    Ok(rows
        .into_iter()
        .map(|r| Relation {
            schema: r.schema,
            name: r.name,
            visible: r.visible,
        })
        .collect())
}
