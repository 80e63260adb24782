//! The bulk paths for one CSV file: the row stream (width checks, progress), COPY into
//! PostgreSQL with the search for a refused row, and batched inserts into SQLite. The SQL itself
//! is in `db::seed`; this module turns CSV records into what those functions take and maps
//! failures back to the file's rows and lines.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use indicatif::ProgressBar;

use super::csv::{self, CsvReader, Record};
use crate::db::seed::{self as dbseed, savepoint, Savepoint};
use crate::db::TableName;

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
            // If the search itself fails (the connection dropped, say), the first error stands.
            let located = savepoint(pg, Savepoint::RollbackTo, PG_SAVEPOINT)
                .and_then(|()| locate_pg_failure(pg, stream.path, stream.dialect, table, columns));
            Err(match located {
                Ok(Some(found)) => anyhow::anyhow!("{} {found}", stream.path.display()),
                _ => anyhow::anyhow!("{}: {e:#}", stream.path.display()),
            })
        }
    }
}

const PG_SAVEPOINT: &str = "dbctl_seed_file";
const PG_PROBE: &str = "dbctl_seed_probe";

/// Rows replayed per COPY while looking for the one PostgreSQL refused.
const PROBE_CHUNK: usize = 10_000;
/// ... or fewer, so that the replayed chunk's memory stays bounded whatever the rows' size.
const PROBE_BYTES: usize = csv::MAX_ROW_BYTES;

/// Replays the file (from the savepoint taken before it) in chunks, each in its own savepoint,
/// then halves the failing chunk until one row is left. Returns `row N (line L)[, column c]:
/// message`, or `None` when the failure does not come back.
fn locate_pg_failure(
    pg: &mut diesel::PgConnection,
    path: &Path,
    dialect: csv::Dialect,
    table: &TableName,
    columns: &[String],
) -> anyhow::Result<Option<String>> {
    let probe = |pg: &mut diesel::PgConnection, data: &[u8]| -> anyhow::Result<Option<String>> {
        savepoint(pg, Savepoint::Set, PG_PROBE)?;
        match dbseed::copy_csv(pg, table, columns, |out| Ok(out.write_all(data)?)) {
            Ok(_) => {
                savepoint(pg, Savepoint::Release, PG_PROBE)?;
                Ok(None)
            }
            Err(e) => {
                savepoint(pg, Savepoint::RollbackTo, PG_PROBE)?;
                Ok(Some(format!("{e:#}")))
            }
        }
    };
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
        if probe(pg, &data)?.is_none() {
            continue;
        }
        let start_of = |i: usize| if i == 0 { 0 } else { rows[i - 1].0 };
        let (mut lo, mut hi) = (0, rows.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            match probe(pg, &data[start_of(lo)..start_of(mid)])? {
                None => lo = mid,
                Some(_) => hi = mid,
            }
        }
        let Some(message) = probe(pg, &data[start_of(lo)..rows[lo].0])? else {
            return Ok(None);
        };
        let (_, row, line) = rows[lo];
        let column = refused_column(path, dialect, row, &message, columns);
        let column = column.map_or(String::new(), |c| format!(", column {c}"));
        return Ok(Some(format!("row {row} (line {line}){column}: {message}")));
    }
}

/// The column holding the value a type error quotes (`invalid input syntax for type integer:
/// "x"`), when exactly one field of that row holds it.
fn refused_column(
    path: &Path,
    dialect: csv::Dialect,
    row: u64,
    message: &str,
    columns: &[String],
) -> Option<String> {
    let value = message.strip_suffix('"')?.rsplit_once(": \"")?.1;
    let mut reader = CsvReader::open(path, dialect).ok()?;
    let mut record = Record::default();
    for _ in 0..=row {
        if !reader.read(&mut record).ok()? {
            return None;
        }
    }
    let hits: Vec<usize> = (0..record.len())
        .filter(|&i| record.get(i) == Some(value))
        .collect();
    match hits.as_slice() {
        [i] => columns.get(*i).cloned(),
        _ => None,
    }
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
pub(super) fn insert_into_sqlite<R: std::io::BufRead>(
    sq: &mut diesel::SqliteConnection,
    table: &TableName,
    columns: &[String],
    booleans: &[bool],
    stream: &mut RowStream<'_, R>,
) -> anyhow::Result<u64> {
    let mut batch = dbseed::SqliteBatch::new(table, columns);
    // (row, line) of each buffered row, to name the one the database refused.
    let mut positions: Vec<(u64, u64)> = Vec::new();
    let mut rows = 0;
    loop {
        let more = stream.next()?;
        if more {
            let record = &stream.record;
            batch.push((0..record.len()).map(|i| {
                let value = record.get(i);
                if booleans[i] {
                    value.map(sqlite_bool)
                } else {
                    value
                }
            }));
            positions.push((stream.row, record.line));
        }
        if batch.is_full() || (!more && batch.rows() > 0) {
            let n = batch.rows() as u64;
            batch.flush(sq).map_err(|(i, message)| {
                let (row, line) = positions.get(i).copied().unwrap_or_default();
                anyhow::anyhow!(
                    "{} row {row} (line {line}): {message}",
                    stream.path.display()
                )
            })?;
            rows += n;
            positions.clear();
        }
        if !more {
            return Ok(rows);
        }
    }
}

fn sqlite_bool(value: &str) -> &str {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => "1",
        "false" | "f" | "no" | "n" | "off" | "0" => "0",
        _ => value,
    }
}
