//! SQLite's side of seeding: the catalog queries (`sqlite_master`, the `pragma_*` functions),
//! `BEGIN IMMEDIATE`, emptying tables with `DELETE` (refusing, before deleting, when a table
//! outside the list references one), deferred and checked foreign keys, and the bulk path: one
//! cached multi-row `INSERT` statement, with the refused row found by replaying the failed
//! statement's rows one at a time. A table that references itself loads with its keys checked
//! once every row is in, as one COPY does on PostgreSQL.

use std::path::Path;

use anyhow::Context as _;
use diesel::connection::{AnsiTransactionManager, SimpleConnection};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Integer, Nullable, Text};
use diesel::sqlite::Sqlite;
use indicatif::ProgressBar;

use super::csv::{self, Record};
use super::load::{reopen, Located};
use super::loader::{quoted_target, Column, ForeignKey, Loader, Relation, TargetKind, TargetRow};
use super::loader::{CsvTarget, RowStream};
use super::transaction::{savepoint, DbFailure, Savepoint};
use super::Sink;
use crate::db::{self, quote_ident, TableName};

impl Loader for SqliteConnection {
    fn database(&self) -> &'static str {
        "SQLite"
    }

    /// `BEGIN IMMEDIATE` takes the write lock at once and so waits for another writer up to the
    /// busy timeout (`DB_STATEMENT_TIMEOUT`). A plain (deferred) `BEGIN` would first read the
    /// catalog under a shared lock; SQLite then refuses the later upgrade to a write lock with
    /// "database is locked" at once, without waiting, because waiting there could deadlock.
    fn begin(&mut self) -> anyhow::Result<()> {
        AnsiTransactionManager::begin_transaction_sql(self, "BEGIN IMMEDIATE").map_err(|e| {
            let busy = db::is_lock_busy(&e);
            anyhow::Error::new(e).context(if busy {
                "another connection is writing to the database: its write lock was not \
                 released within the busy timeout (DB_STATEMENT_TIMEOUT, default 5 s)"
            } else {
                "starting the seed's transaction"
            })
        })
    }

    /// The connection's count of ended transactions.
    fn transaction_identity(&mut self) -> anyhow::Result<String> {
        Ok(db::sqlite_transactions_ended(self)
            .context("reading the connection's transaction count")?
            .to_string())
    }

    fn relations(&mut self) -> anyhow::Result<Vec<Relation>> {
        diesel::sql_query(
            "SELECT NULL AS schema, name, 1 AS visible FROM sqlite_master \
             WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )
        .load(self)
        .context("listing the tables seed files can name")
    }

    fn foreign_keys(&mut self) -> anyhow::Result<Vec<ForeignKey>> {
        diesel::sql_query(
            "SELECT DISTINCT m.name AS child, f.\"table\" AS parent, \
                    '\"' || replace(m.name, '\"', '\"\"') || '\"' AS child_sql, \
                    'fk ' || f.id AS name, 1 AS \"deferrable\" \
             FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE m.type = 'table'",
        )
        .load(self)
        .context("reading foreign keys from the catalog")
    }

    fn target_kind(&mut self, table: &TableName) -> anyhow::Result<TargetKind> {
        let found: Vec<TargetRow> = diesel::sql_query(
            "SELECT type AS kind, (SELECT count(*) FROM sqlite_master t \
                 WHERE t.type = 'trigger' AND t.tbl_name = m.name) AS triggers \
             FROM sqlite_master m WHERE m.type IN ('table', 'view') AND m.name = $1",
        )
        .bind::<Text, _>(&table.name)
        .load(self)
        .with_context(|| format!("looking for table {}", table.quoted()))?;
        Ok(TargetKind::of(&found))
    }

    fn columns(&mut self, table: &TableName) -> anyhow::Result<Vec<Column>> {
        diesel::sql_query("SELECT name, type AS sql_type FROM pragma_table_info($1) ORDER BY cid")
            .bind::<Text, _>(&table.name)
            .load(self)
            .with_context(|| format!("reading the columns of table {table}"))
    }

    /// A `DELETE` per table, children first so foreign keys hold at each step. A table outside
    /// the list whose rows reference one in it is named before deleting, whether its key would
    /// make the `DELETE` fail or cascade into it (`ON DELETE CASCADE`/`SET NULL`).
    fn empty_tables(&mut self, tables: &[TableName]) -> anyhow::Result<()> {
        let quoted: Vec<String> = tables.iter().map(TableName::quoted).collect();
        for (name, table) in tables.iter().zip(&quoted) {
            let blockers = referencing_rows(self, name, tables)?;
            if !blockers.is_empty() {
                let list = blockers
                    .iter()
                    .map(|t| quote_ident(t))
                    .collect::<Vec<_>>()
                    .join(", ");
                let (noun, verb, them) = match blockers.len() {
                    1 => ("table", "references", "it"),
                    _ => ("tables", "reference", "them"),
                };
                anyhow::bail!(
                        "emptying {name} (--truncate): cannot empty a table referenced by a foreign key: \
                         {noun} {list} {verb} {table} (seed {list} too, or empty {them} first)"
                    );
            }
            self.batch_execute(&format!("DELETE FROM {table}"))
                .map_err(|e| anyhow::Error::new(DbFailure::of(&e)))
                .with_context(|| format!("emptying {name} (--truncate)"))?;
        }
        Ok(())
    }

    /// Every key waits for the commit.
    fn defer_foreign_keys(&mut self) -> anyhow::Result<()> {
        self.batch_execute("PRAGMA defer_foreign_keys = ON")
            .context("deferring foreign-key checks")
    }

    fn check_deferred_foreign_keys(&mut self) -> anyhow::Result<()> {
        #[derive(QueryableByName)]
        struct Dangling {
            #[diesel(sql_type = Text)]
            child: String,
            #[diesel(sql_type = Nullable<Text>)]
            row_id: Option<String>,
            #[diesel(sql_type = Text)]
            parent: String,
        }
        let found: Vec<Dangling> = diesel::sql_query(
            "SELECT \"table\" AS child, CAST(\"rowid\" AS TEXT) AS row_id, parent \
                 FROM pragma_foreign_key_check LIMIT 1",
        )
        .load(self)
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

    /// A table that references itself loads whatever the order of its rows (and however many
    /// there are): its keys are checked once every row is in (see [`Loader::verify`]).
    fn load_csv(&mut self, target: &CsvTarget, stream: &mut RowStream<'_>) -> anyhow::Result<u64> {
        if target.self_referencing {
            defer_foreign_keys(self, true)?;
        }
        let rows = insert_into(self, target, stream)?;
        if target.self_referencing {
            defer_foreign_keys(self, false)?;
        }
        Ok(rows)
    }

    /// Checks the keys of the self-referencing tables whose checks were deferred, so a dangling
    /// one is named before the commit.
    fn verify(&mut self, loaded: &[CsvTarget]) -> anyhow::Result<()> {
        let mut checked: Vec<&TableName> = Vec::new();
        for target in loaded.iter().filter(|t| t.self_referencing) {
            if checked.contains(&&target.table) {
                continue;
            }
            checked.push(&target.table);
            if let Some(dangling) = dangling_key(self, &target.table)? {
                anyhow::bail!("{dangling} (checked after loading every row of the table)");
            }
        }
        Ok(())
    }

    fn before_commit(&mut self, _loaded: &[CsvTarget], _sink: &dyn Sink) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The SQLite tables outside `listed` holding a row whose foreign key points into `table` (every
/// column of the key set): emptying `table` would fail on them, or cascade into them.
fn referencing_rows(
    sq: &mut SqliteConnection,
    table: &TableName,
    listed: &[TableName],
) -> anyhow::Result<Vec<String>> {
    #[derive(QueryableByName)]
    struct Key {
        #[diesel(sql_type = Text)]
        child: String,
        /// The key's columns, separated by U+001F.
        #[diesel(sql_type = Text)]
        columns: String,
    }
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Integer)]
        n: i32,
    }
    let keys: Vec<Key> = diesel::sql_query(
        "SELECT m.name AS child, group_concat(f.\"from\", char(31)) AS columns \
         FROM sqlite_master m, pragma_foreign_key_list(m.name) f \
         WHERE m.type = 'table' AND f.\"table\" = $1 COLLATE NOCASE \
         GROUP BY m.name, f.id ORDER BY m.name",
    )
    .bind::<Text, _>(&table.name)
    .load(sq)
    .context("reading the foreign keys that reference the table")?;
    let mut blockers: Vec<String> = Vec::new();
    for key in keys {
        let outside = !listed
            .iter()
            .any(|t| t.schema.is_none() && t.name.eq_ignore_ascii_case(&key.child));
        if !outside || blockers.contains(&key.child) {
            continue;
        }
        let set: Vec<String> = key
            .columns
            .split('\u{1f}')
            .map(|c| format!("{} IS NOT NULL", quote_ident(c)))
            .collect();
        let found: Found = diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {}) AS n",
            quote_ident(&key.child),
            set.join(" AND ")
        ))
        .get_result(sq)
        .with_context(|| format!("looking for rows of {} that reference {table}", key.child))?;
        if found.n != 0 {
            blockers.push(key.child);
        }
    }
    Ok(blockers)
}

/// Turns SQLite's `PRAGMA defer_foreign_keys` on or off. On, every foreign key is checked at the
/// commit instead of at each statement, so a table that references itself loads whatever the
/// order of its rows, as one COPY does on PostgreSQL. Off again, the other tables' keys are
/// checked per statement as before; the keys that were deferred stay pending until the commit.
fn defer_foreign_keys(sq: &mut SqliteConnection, on: bool) -> anyhow::Result<()> {
    sq.batch_execute(if on {
        "PRAGMA defer_foreign_keys = ON"
    } else {
        "PRAGMA defer_foreign_keys = OFF"
    })
    .context("switching SQLite's deferred foreign-key checks")
}

/// The first row of `table` whose foreign key points at a missing row, named by its rowid and the
/// key's values (SQLite's `pragma_foreign_key_check`), or `None` when every key holds.
fn dangling_key(sq: &mut SqliteConnection, table: &TableName) -> anyhow::Result<Option<String>> {
    #[derive(QueryableByName)]
    struct Dangling {
        #[diesel(sql_type = Nullable<diesel::sql_types::BigInt>)]
        row_id: Option<i64>,
        #[diesel(sql_type = Text)]
        parent: String,
        #[diesel(sql_type = Text)]
        columns: String,
    }
    let found: Vec<Dangling> = diesel::sql_query(
        "SELECT c.\"rowid\" AS row_id, c.parent AS parent, \
                (SELECT group_concat(f.\"from\", ', ') FROM pragma_foreign_key_list($1) f WHERE f.id = c.fkid) AS columns \
         FROM pragma_foreign_key_check($1) c LIMIT 1",
    )
    .bind::<Text, _>(&table.name)
    .load(sq)
    .context("checking the deferred foreign keys")?;
    Ok(found.first().map(|d| {
        let row = d.row_id.map_or_else(
            || "a row".to_string(),
            |r| format!("the row with rowid {r}"),
        );
        format!(
            "FOREIGN KEY constraint failed: {row} of {} has ({}) pointing at no row of {}",
            table.quoted(),
            d.columns,
            quote_ident(&d.parent)
        )
    }))
}

const SQLITE_SAVEPOINT: &str = "dbctl_seed_file";

/// Inserts the rows through one cached multi-row INSERT. A boolean column takes the usual
/// spellings (`true`/`false`, `t`/`f`, `yes`/`no`, `on`/`off`, `1`/`0`) and stores 1 or 0, as
/// diesel and PostgreSQL read them.
///
/// The file loads inside a savepoint. When a statement fails, the transaction is checked first
/// (SQLite ends it itself on some errors); if it is still open, the file is rolled back to the
/// savepoint and replayed, row by row from the failed statement's first row, to name the row.
fn insert_into(
    sq: &mut SqliteConnection,
    target: &CsvTarget,
    stream: &mut RowStream<'_>,
) -> anyhow::Result<u64> {
    let booleans: Vec<bool> = target
        .columns
        .iter()
        .map(|c| c.sql_type.to_ascii_uppercase().contains("BOOL"))
        .collect();
    savepoint(sq, Savepoint::Set, SQLITE_SAVEPOINT)?;
    let mut batch = Batch::new(&target.table, &target.names);
    // (row, line) of the first and the last buffered row.
    let mut first = (0u64, 0u64);
    let mut last = (0u64, 0u64);
    let mut rows = 0;
    loop {
        let more = stream.next()?;
        if more {
            push_row(&mut batch, &stream.record, &booleans);
            last = (stream.row, stream.record.line);
            if batch.rows() == 1 {
                first = last;
            }
        }
        if batch.is_full() || (!more && batch.rows() > 0) {
            let n = batch.rows() as u64;
            if let Err(failure) = batch.flush(sq) {
                let replay = Replay {
                    path: stream.path,
                    dialect: stream.dialect,
                    width: stream.width,
                    target,
                    booleans: &booleans,
                };
                return Err(replay.failure(sq, first, last, failure));
            }
            rows += n;
        }
        if !more {
            savepoint(sq, Savepoint::Release, SQLITE_SAVEPOINT)?;
            return Ok(rows);
        }
    }
}

fn push_row(batch: &mut Batch, record: &Record, booleans: &[bool]) {
    batch.push((0..record.len()).map(|i| {
        let value = record.get(i);
        if booleans[i] {
            value.map(sqlite_bool)
        } else {
            value
        }
    }));
}

/// Finds the row SQLite refused by loading the file again after a rollback to its savepoint.
struct Replay<'a> {
    path: &'a Path,
    dialect: csv::Dialect,
    width: usize,
    target: &'a CsvTarget,
    booleans: &'a [bool],
}

impl Replay<'_> {
    /// The error for a failed statement holding rows `first..=last`: the refused row when it can
    /// be found, else the statement's rows.
    fn failure(
        &self,
        sq: &mut SqliteConnection,
        first: (u64, u64),
        last: (u64, u64),
        failure: DbFailure,
    ) -> anyhow::Error {
        let whole = |failure: DbFailure| {
            let place = if first.0 == last.0 {
                format!("row {} (line {})", first.0, first.1)
            } else {
                format!("rows {}-{} (lines {}-{})", first.0, last.0, first.1, last.1)
            };
            anyhow::Error::new(DbFailure {
                message: format!("{} {place}: {}", self.path.display(), failure.message),
                ..failure
            })
        };
        // A transaction SQLite has ended must not see another statement: replayed rows would
        // each commit on their own.
        // After SIGINT/SIGTERM there is no bad row to look for, and nothing more may run.
        if crate::interrupt::requested()
            || !db::sqlite_transaction_is_open(sq).unwrap_or(false)
            || first.0 == last.0
        {
            return whole(failure);
        }
        let found = savepoint(sq, Savepoint::RollbackTo, SQLITE_SAVEPOINT)
            .and_then(|()| self.locate(sq, first.0, last.0));
        match found {
            Ok(Some(located)) => anyhow::Error::new(located.at(self.path)),
            _ => whole(failure),
        }
    }

    /// Reloads the rows before `from` as before, then inserts rows `from..=to` one at a time
    /// until one fails.
    fn locate(
        &self,
        sq: &mut SqliteConnection,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Option<Located>> {
        let Some((reader, record)) = reopen(self.path, self.dialect)? else {
            return Ok(None);
        };
        let bar = ProgressBar::hidden();
        let mut stream = RowStream {
            path: self.path,
            reader,
            dialect: self.dialect,
            record,
            width: self.width,
            row: 0,
            bar: &bar,
            bytes_before: 0,
        };
        let mut batch = Batch::new(&self.target.table, &self.target.names);
        let mut one = Batch::new(&self.target.table, &self.target.names);
        while stream.row < to && stream.next()? {
            if stream.row < from {
                push_row(&mut batch, &stream.record, self.booleans);
                // These rows loaded before: if they now fail, the failure cannot be pinned down.
                if batch.is_full() && batch.flush(sq).is_err() {
                    return Ok(None);
                }
                continue;
            }
            if batch.flush(sq).is_err() {
                return Ok(None);
            }
            push_row(&mut one, &stream.record, self.booleans);
            if let Err(failure) = one.flush(sq) {
                return Ok(Some(Located {
                    row: stream.row,
                    line: stream.record.line,
                    column: None,
                    failure,
                }));
            }
        }
        Ok(None)
    }
}

fn sqlite_bool(value: &str) -> &str {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => "1",
        "false" | "f" | "no" | "n" | "off" | "0" => "0",
        _ => value,
    }
}

/// Rows waiting to be inserted into one SQLite table with one multi-row `INSERT`, whose prepared
/// statement diesel caches by its text, so a full batch reuses the same statement every time.
struct Batch {
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

impl Batch {
    fn new(table: &TableName, columns: &[String]) -> Self {
        let head = format!("INSERT INTO {} VALUES ", quoted_target(table, columns));
        let capacity = (SQLITE_MAX_VALUES / columns.len().max(1)).clamp(1, SQLITE_BATCH_ROWS);
        Batch {
            head,
            columns: columns.len(),
            capacity,
            text: String::new(),
            spans: Vec::new(),
        }
    }

    /// Buffers one row (exactly one value per column).
    fn push<'v>(&mut self, values: impl Iterator<Item = Option<&'v str>>) {
        for value in values {
            self.spans.push(value.map(|v| {
                let start = self.text.len();
                self.text.push_str(v);
                (start, self.text.len())
            }));
        }
    }

    fn rows(&self) -> usize {
        self.spans.len() / self.columns.max(1)
    }

    fn is_full(&self) -> bool {
        // Large rows flush early, so that a batch's memory stays bounded (64 MiB and one row).
        self.rows() >= self.capacity || self.text.len() >= SQLITE_BATCH_BYTES
    }

    /// Inserts the buffered rows with one statement and empties the buffer, whatever the outcome.
    ///
    /// A failed statement is not assumed to have left nothing behind: with `RAISE(FAIL)` in a
    /// trigger or an `OR FAIL` conflict clause the rows before the failing one stay, and some
    /// errors end the whole transaction. The caller checks the transaction and rolls back to
    /// its savepoint before looking for the row at fault.
    fn flush(&mut self, sq: &mut SqliteConnection) -> Result<(), DbFailure> {
        if self.rows() == 0 {
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
        self.text.clear();
        self.spans.clear();
        outcome.map(|_| ()).map_err(|e| DbFailure::of(&e))
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
