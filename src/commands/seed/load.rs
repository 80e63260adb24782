//! The bulk paths for one CSV file: the row stream (width checks, progress), COPY into
//! PostgreSQL with the search for a refused row, and batched inserts into SQLite. The SQL itself
//! is in `db::seed`; this module turns CSV records into what those functions take and maps
//! failures back to the file's rows and lines.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use indicatif::ProgressBar;

use super::csv::{self, CsvReader, Record};
use crate::db::seed::{self as dbseed, savepoint, DbFailure, Savepoint};
use crate::db::{self, TableName};

/// The data rows of one CSV file, checked for width, with progress.
pub(super) struct RowStream<'a, R> {
    pub(super) path: &'a Path,
    pub(super) reader: CsvReader<R>,
    /// The file's delimiter and encoding, to read it again when looking for a refused row.
    pub(super) dialect: csv::Dialect,
    pub(super) record: Record,
    pub(super) width: usize,
    /// Data rows read so far (1 = the first row after the header).
    pub(super) row: u64,
    pub(super) bar: &'a ProgressBar,
    pub(super) bytes_before: u64,
}

impl<R: std::io::BufRead> RowStream<'_, R> {
    /// Advances to the next data row; `Ok(false)` at the end of the file.
    fn next(&mut self) -> anyhow::Result<bool> {
        crate::interrupt::check()?;
        let more = self
            .reader
            .read(&mut self.record)
            .map_err(|e| anyhow::anyhow!("{} {}", self.path.display(), e.at_row(self.row + 1)))?;
        if !more {
            return Ok(false);
        }
        self.row += 1;
        if self.record.len() != self.width {
            anyhow::bail!(
                "{} {}: expected {} fields as in the header, found {}",
                self.path.display(),
                self.at(),
                self.width,
                self.record.len()
            );
        }
        if self.row.is_multiple_of(4096) {
            self.bar
                .set_position(self.bytes_before + self.reader.bytes_read());
            self.bar.set_message(format!(
                "{}: {} rows",
                self.path
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                self.row
            ));
        }
        Ok(true)
    }

    /// `row N (line L)` for the current row.
    fn at(&self) -> String {
        format!("row {} (line {})", self.row, self.record.line)
    }
}

/// Streams the rows into `COPY ... FROM STDIN (FORMAT csv)` inside a savepoint. PostgreSQL's
/// error does not say which row it refused (diesel keeps only the message), so after a failure
/// the file is replayed in checked pieces to find the row: slower, but only on the way to an error.
pub(super) fn copy_into_pg<R: std::io::BufRead>(
    pg: &mut diesel::PgConnection,
    table: &TableName,
    columns: &[String],
    stream: &mut RowStream<'_, R>,
) -> anyhow::Result<u64> {
    savepoint(pg, Savepoint::Set, PG_SAVEPOINT)?;
    let mut reader_failed = false;
    let copied = dbseed::copy_csv(pg, table, columns, |out| {
        while stream.next().inspect_err(|_| reader_failed = true)? {
            write_pg_csv_row(out, &stream.record).context("sending rows to PostgreSQL")?;
        }
        Ok(())
    });
    match copied {
        Ok(rows) => {
            savepoint(pg, Savepoint::Release, PG_SAVEPOINT)?;
            Ok(rows)
        }
        Err(e) if reader_failed => Err(e),
        Err(e) => {
            let whole = || e.context(stream.path.display().to_string());
            // Nothing is sent on a connection whose transaction is gone; the caller says so.
            // After SIGINT/SIGTERM there is no bad row to look for either.
            if crate::interrupt::requested() || !db::pg_transaction_is_open(pg).unwrap_or(false) {
                return Err(whole());
            }
            // If the search itself fails (the connection dropped, say), the first error stands.
            let located = savepoint(pg, Savepoint::RollbackTo, PG_SAVEPOINT)
                .and_then(|()| locate_pg_failure(pg, stream.path, stream.dialect, table, columns));
            match located {
                Ok(Some(found)) => Err(anyhow::Error::new(found.at(stream.path))),
                _ => Err(whole()),
            }
        }
    }
}

const PG_SAVEPOINT: &str = "dbctl_seed_file";
const PG_PROBE: &str = "dbctl_seed_probe";
const SQLITE_SAVEPOINT: &str = "dbctl_seed_file";

/// Rows replayed per COPY while looking for the one PostgreSQL refused.
const PROBE_CHUNK: usize = 10_000;
/// ... or fewer, so that the replayed chunk's memory stays bounded whatever the rows' size.
const PROBE_BYTES: usize = csv::MAX_ROW_BYTES;

/// The row a database refused, and why.
struct Located {
    row: u64,
    line: u64,
    column: Option<String>,
    failure: DbFailure,
}

impl Located {
    /// The failure, its message prefixed with `file row N (line L)[, column c]`.
    fn at(self, path: &Path) -> DbFailure {
        let column = self
            .column
            .map_or(String::new(), |c| format!(", column {c}"));
        DbFailure {
            message: format!(
                "{} row {} (line {}){column}: {}",
                path.display(),
                self.row,
                self.line,
                self.failure.message
            ),
            ..self.failure
        }
    }
}

/// One COPY of `data` inside its own savepoint: `None` when it loads, else the failure (rolled
/// back to the savepoint). A lost transaction is an error: nothing more is sent.
fn pg_probe(
    pg: &mut diesel::PgConnection,
    table: &TableName,
    columns: &[String],
    data: &[u8],
) -> anyhow::Result<Option<DbFailure>> {
    savepoint(pg, Savepoint::Set, PG_PROBE)?;
    match dbseed::copy_csv(pg, table, columns, |out| Ok(out.write_all(data)?)) {
        Ok(_) => {
            savepoint(pg, Savepoint::Release, PG_PROBE)?;
            Ok(None)
        }
        Err(e) => {
            if !db::pg_transaction_is_open(pg).unwrap_or(false) {
                return Err(e.context("the transaction ended while looking for the refused row"));
            }
            savepoint(pg, Savepoint::RollbackTo, PG_PROBE)?;
            Ok(Some(match e.downcast::<DbFailure>() {
                Ok(f) => f,
                Err(other) => DbFailure {
                    message: format!("{other:#}"),
                    unique: false,
                    column: None,
                },
            }))
        }
    }
}

/// Replays the file (from the savepoint taken before it) in chunks, each in its own savepoint,
/// then halves the failing chunk until one row is left, and asks the server which of its
/// columns it refused. `None` when the failure does not come back.
fn locate_pg_failure(
    pg: &mut diesel::PgConnection,
    path: &Path,
    dialect: csv::Dialect,
    table: &TableName,
    columns: &[String],
) -> anyhow::Result<Option<Located>> {
    let mut reader = CsvReader::open(path, dialect)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut record = Record::default();
    if !reader.read(&mut record).unwrap_or(false) {
        return Ok(None);
    }
    let mut data: Vec<u8> = Vec::new();
    // For each buffered row: where it ends in `data`, its row number and line.
    let mut rows: Vec<(usize, u64, u64)> = Vec::new();
    let mut row = 0u64;
    loop {
        data.clear();
        rows.clear();
        while rows.len() < PROBE_CHUNK
            && data.len() < PROBE_BYTES
            && reader.read(&mut record).unwrap_or(false)
        {
            row += 1;
            write_pg_csv_row(&mut data, &record)?;
            rows.push((data.len(), row, record.line));
        }
        if rows.is_empty() {
            return Ok(None);
        }
        if pg_probe(pg, table, columns, &data)?.is_none() {
            continue;
        }
        let start_of = |i: usize| if i == 0 { 0 } else { rows[i - 1].0 };
        let (mut lo, mut hi) = (0, rows.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            match pg_probe(pg, table, columns, &data[start_of(lo)..start_of(mid)])? {
                None => lo = mid,
                Some(_) => hi = mid,
            }
        }
        let Some(failure) = pg_probe(pg, table, columns, &data[start_of(lo)..rows[lo].0])? else {
            return Ok(None);
        };
        let (_, row, line) = rows[lo];
        let column = match failure.column.clone() {
            Some(c) => Some(c),
            None => refused_column(pg, path, dialect, row, table, columns)?,
        };
        return Ok(Some(Located {
            row,
            line,
            column,
            failure,
        }));
    }
}

/// The column whose value PostgreSQL's COPY could not read, asked of the server: each value of
/// the row goes, in the file's column order (COPY's order), through its column type's input
/// function with the column's type modifier, exactly the call COPY makes; the first one refused is
/// the column COPY's error context names. `None` when every value reads (the row failed a
/// constraint or a trigger instead).
fn refused_column(
    pg: &mut diesel::PgConnection,
    path: &Path,
    dialect: csv::Dialect,
    row: u64,
    table: &TableName,
    columns: &[String],
) -> anyhow::Result<Option<String>> {
    let mut reader = CsvReader::open(path, dialect)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut record = Record::default();
    for _ in 0..=row {
        if !reader.read(&mut record).unwrap_or(false) {
            return Ok(None);
        }
    }
    for (i, column) in columns.iter().enumerate() {
        let Some(value) = record.get(i) else { continue };
        if !dbseed::pg_value_reads(pg, table, column, value)? {
            return Ok(Some(column.clone()));
        }
    }
    Ok(None)
}

/// One row in PostgreSQL's CSV dialect: NULL as an unquoted empty field, anything that could be
/// misread (empty, separators, quotes, line ends, a backslash as in `\.`) quoted.
fn write_pg_csv_row(out: &mut dyn Write, record: &Record) -> std::io::Result<()> {
    for i in 0..record.len() {
        if i > 0 {
            out.write_all(b",")?;
        }
        if record.is_null(i) {
            continue;
        }
        let field = record.bytes(i);
        let needs_quotes = field.is_empty()
            || field
                .iter()
                .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r' | b'\\'));
        if !needs_quotes {
            out.write_all(field)?;
            continue;
        }
        out.write_all(b"\"")?;
        for part in field.split_inclusive(|&b| b == b'"') {
            out.write_all(part)?;
            if part.last() == Some(&b'"') {
                out.write_all(b"\"")?;
            }
        }
        out.write_all(b"\"")?;
    }
    out.write_all(b"\n")
}

/// Inserts the rows through one cached multi-row INSERT. A boolean column takes the usual
/// spellings (`true`/`false`, `t`/`f`, `yes`/`no`, `on`/`off`, `1`/`0`) and stores 1 or 0, as
/// diesel and PostgreSQL read them.
///
/// The file loads inside a savepoint. When a statement fails, the transaction is checked first
/// (SQLite ends it itself on some errors); if it is still open, the file is rolled back to the
/// savepoint and replayed, row by row from the failed statement's first row, to name the row.
pub(super) fn insert_into_sqlite<R: std::io::BufRead>(
    sq: &mut diesel::SqliteConnection,
    table: &TableName,
    columns: &[String],
    booleans: &[bool],
    stream: &mut RowStream<'_, R>,
) -> anyhow::Result<u64> {
    savepoint(sq, Savepoint::Set, SQLITE_SAVEPOINT)?;
    let mut batch = dbseed::SqliteBatch::new(table, columns);
    // (row, line) of the first and the last buffered row.
    let mut first = (0u64, 0u64);
    let mut last = (0u64, 0u64);
    let mut rows = 0;
    loop {
        let more = stream.next()?;
        if more {
            push_row(&mut batch, &stream.record, booleans);
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
                    table,
                    columns,
                    booleans,
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

fn push_row(batch: &mut dbseed::SqliteBatch, record: &Record, booleans: &[bool]) {
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
    table: &'a TableName,
    columns: &'a [String],
    booleans: &'a [bool],
}

impl Replay<'_> {
    /// The error for a failed statement holding rows `first..=last`: the refused row when it can
    /// be found, else the statement's rows.
    fn failure(
        &self,
        sq: &mut diesel::SqliteConnection,
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
        sq: &mut diesel::SqliteConnection,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Option<Located>> {
        let reader = CsvReader::open(self.path, self.dialect)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.path.display()))?;
        let bar = ProgressBar::hidden();
        let mut stream = RowStream {
            path: self.path,
            reader,
            dialect: self.dialect,
            record: Record::default(),
            width: self.width,
            row: 0,
            bar: &bar,
            bytes_before: 0,
        };
        if !stream.reader.read(&mut stream.record).unwrap_or(false) {
            return Ok(None);
        }
        let mut batch = dbseed::SqliteBatch::new(self.table, self.columns);
        let mut one = dbseed::SqliteBatch::new(self.table, self.columns);
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
