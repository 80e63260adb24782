//! `dbctl seed`: load the seeds folder (or the files named) in one transaction.
//!
//! Plans the order (`plan`), then streams each file inside one transaction: `.sql` files run as
//! written, `.csv` files go through `csv` into the backend's bulk path in `db::seed` (COPY on
//! PostgreSQL, a cached multi-row INSERT on SQLite). Any failure rolls the whole run back and is
//! reported with the file, the CSV row and line (or SQL line), and the database's message.

mod csv;
mod plan;

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::Connection as _;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::commands::Context;
use crate::db::seed::{self as dbseed, savepoint, Savepoint};
use crate::db::{self, AnyConnection, OpenMode};
use crate::output::{self, millis, ms_f64, Report};
use csv::{CsvReader, Record};
use plan::{Kind, SeedFile};

/// Load seed data in one transaction: every row of every file, or nothing.
///
/// Loads every .csv and .sql file in the seeds folder, or just the FILEs given. A CSV file's header
/// names the columns; it loads into the table named by the file (`010_users.csv` loads `users`).
/// An empty unquoted field is NULL, `""` is an empty string. Files load parents first, following
/// the foreign keys in the database; a .sql file runs after every file named before it.
///
/// Examples:
///   dbctl seed
///   dbctl seed --dry-run --verbose
///   dbctl seed --truncate seeds/users.csv seeds/posts.csv
///   dbctl seed --seeds-dir fixtures/ci --format json
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct SeedArgs {
    /// Files to load instead of the whole seeds folder (a path, or a name inside the folder)
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Seeds folder [default: $DBCTL_SEEDS_DIR, then ./seeds]
    #[arg(long, value_name = "DIR")]
    seeds_dir: Option<PathBuf>,

    /// Load everything, report the counts, then roll back
    #[arg(long)]
    dry_run: bool,

    /// Empty the CSV files' tables first (children before parents), in the same transaction
    #[arg(long)]
    truncate: bool,
}

#[derive(Serialize, Debug)]
pub(crate) struct FileReport {
    file: String,
    kind: Kind,
    /// The target table of a CSV file.
    table: Option<String>,
    /// Rows loaded from a CSV file (not counted for .sql files).
    rows: Option<u64>,
    bytes: u64,
    duration_ms: f64,
    #[serde(skip)]
    duration: Duration,
}

#[derive(Serialize, Debug)]
pub(crate) struct SeedReport {
    /// True when the transaction was committed; false for `--dry-run` (rolled back).
    committed: bool,
    dry_run: bool,
    /// Tables emptied first (`--truncate`), children first.
    truncated: Vec<String>,
    files: Vec<FileReport>,
    total_rows: u64,
    duration_ms: f64,
    #[serde(skip)]
    duration: Duration,
    #[serde(skip)]
    empty_note: Option<String>,
}

impl Report for SeedReport {
    fn human(&self) -> String {
        if let Some(note) = &self.empty_note {
            return note.clone();
        }
        let mut table = output::table(["file", "table", "rows", "time"]);
        for f in &self.files {
            table.add_row(vec![
                f.file.clone(),
                f.table.clone().unwrap_or_else(|| "(sql)".to_string()),
                f.rows.map_or("-".to_string(), |r| r.to_string()),
                millis(f.duration),
            ]);
        }
        let files = match self.files.len() {
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        };
        let outcome = if self.committed {
            format!(
                "seeded {} rows from {files} in {} (committed)",
                self.total_rows,
                millis(self.duration)
            )
        } else {
            format!(
                "dry run: {} rows from {files} loaded in {}, then rolled back",
                self.total_rows,
                millis(self.duration)
            )
        };
        format!("{table}\n{outcome}")
    }
}

/// Returned through the transaction to roll a `--dry-run` back; carries the counts out.
#[derive(Debug)]
struct DryRunDone(Vec<FileReport>);

impl std::fmt::Display for DryRunDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dry run")
    }
}

impl std::error::Error for DryRunDone {}

pub(crate) fn run(ctx: &Context, args: SeedArgs) -> anyhow::Result<SeedReport> {
    let (dir, source) = ctx.config.seeds_dir(args.seeds_dir.as_deref());
    ctx.out
        .verbose(format_args!("seeds folder {} ({source})", dir.display()));
    let files = if args.files.is_empty() {
        if !dir.is_dir() {
            return Err(crate::error::usage(format!(
                "seeds folder `{}` does not exist ({source}); create it or pass --seeds-dir",
                dir.display()
            )));
        }
        let (files, skipped) = plan::discover(&dir)?;
        for name in skipped {
            ctx.out
                .verbose(format_args!("skipping {name} (not a .csv or .sql file)"));
        }
        files
    } else {
        plan::named(&args.files, &dir)?
    };
    let started = Instant::now();
    if files.is_empty() {
        return Ok(SeedReport {
            committed: !args.dry_run,
            dry_run: args.dry_run,
            truncated: Vec::new(),
            files: Vec::new(),
            total_rows: 0,
            duration_ms: 0.0,
            duration: Duration::ZERO,
            empty_note: Some(format!(
                "nothing to seed: no .csv or .sql files in `{}`",
                dir.display()
            )),
        });
    }

    let database = ctx.open(OpenMode::Existing)?;
    let mut conn = database.get()?;
    let edges = dbseed::foreign_keys(&mut conn)?;
    let (files, cyclic) = plan::order(files, &edges);
    if !cyclic.is_empty() {
        ctx.out.warn(format_args!(
            "the foreign keys of {} form a cycle: those files load in name order with foreign-key checks deferred to the commit",
            cyclic.join(", ")
        ));
    }
    let order: Vec<String> = files
        .iter()
        .map(|f| match &f.table {
            Some(t) => format!("{} -> {t}", f.name),
            None => f.name.clone(),
        })
        .collect();
    ctx.out
        .verbose(format_args!("load order: {}", order.join(", ")));
    if args.dry_run {
        ctx.out.info(format_args!(
            "dry run: loading in this order, then rolling back: {}",
            order.join(", ")
        ));
    }
    let truncated = if args.truncate {
        truncate_order(&files)
    } else {
        Vec::new()
    };

    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    let bar = ctx.out.progress_bar(
        total_bytes,
        "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}",
    );
    let mut loader = Loader {
        ctx,
        bar: &bar,
        bytes_before: 0,
    };
    let outcome = conn.transaction(|c| -> anyhow::Result<Vec<FileReport>> {
        if !cyclic.is_empty() {
            dbseed::defer_foreign_keys(c)?;
        }
        if !truncated.is_empty() {
            ctx.out
                .verbose(format_args!("emptying {}", truncated.join(", ")));
            dbseed::empty_tables(c, &truncated)?;
        }
        let mut reports = Vec::with_capacity(files.len());
        for file in &files {
            reports.push(loader.load(c, file)?);
        }
        if !cyclic.is_empty() {
            dbseed::check_deferred_foreign_keys(c)
                .context("checking the foreign keys of the tables in a cycle")?;
        }
        if args.dry_run {
            return Err(DryRunDone(reports).into());
        }
        Ok(reports)
    });
    bar.finish_and_clear();
    let (reports, committed) = match outcome {
        Ok(reports) => (reports, true),
        Err(err) => match err.downcast::<DryRunDone>() {
            Ok(DryRunDone(reports)) => (reports, false),
            Err(err) => return Err(rolled_back(err)),
        },
    };
    let total_rows = reports.iter().filter_map(|r| r.rows).sum();
    let duration = started.elapsed();
    Ok(SeedReport {
        committed,
        dry_run: args.dry_run,
        truncated,
        files: reports,
        total_rows,
        duration_ms: ms_f64(duration),
        duration,
        empty_note: None,
    })
}

/// The failure as one line that says the run was rolled back, keeping its exit code.
fn rolled_back(err: anyhow::Error) -> anyhow::Error {
    let exit = crate::error::exit_of(&err);
    let err = anyhow::anyhow!("{err:#} (rolled back: the database is unchanged)");
    match exit {
        crate::error::Exit::Failed => err,
        other => crate::error::tag(err, other),
    }
}

/// The distinct tables of the CSV files, children first (the reverse of the load order).
fn truncate_order(files: &[SeedFile]) -> Vec<String> {
    let mut tables: Vec<String> = Vec::new();
    for file in files.iter().rev() {
        if let Some(t) = &file.table {
            if !tables.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                tables.push(t.clone());
            }
        }
    }
    tables
}

/// Loads files one after another, keeping the progress bar and per-file lines up to date.
struct Loader<'a> {
    ctx: &'a Context<'a>,
    bar: &'a ProgressBar,
    bytes_before: u64,
}

impl Loader<'_> {
    fn load(&mut self, conn: &mut AnyConnection, file: &SeedFile) -> anyhow::Result<FileReport> {
        let started = Instant::now();
        self.bar.set_message(file.name.clone());
        let (rows, bytes) = match file.kind {
            Kind::Sql => (None, self.load_sql(conn, file)?),
            Kind::Csv => {
                let (rows, bytes) = self.load_csv(conn, file)?;
                (Some(rows), bytes)
            }
        };
        self.bytes_before += bytes;
        self.bar.set_position(self.bytes_before);
        let duration = started.elapsed();
        if self.ctx.out.writes_progress_lines() || self.ctx.out.is_verbose() {
            let what = match (&file.table, rows) {
                (Some(t), Some(1)) => format!("1 row into {t}"),
                (Some(t), Some(r)) => format!("{r} rows into {t}"),
                _ => "ran".to_string(),
            };
            self.ctx.out.info(format_args!(
                "{}: {what} ({})",
                file.path.display(),
                millis(duration)
            ));
        }
        Ok(FileReport {
            file: file.path.display().to_string(),
            kind: file.kind,
            table: file.table.clone(),
            rows,
            bytes,
            duration_ms: ms_f64(duration),
            duration,
        })
    }

    fn load_sql(&mut self, conn: &mut AnyConnection, file: &SeedFile) -> anyhow::Result<u64> {
        let path = &file.path;
        let sql = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // An empty statement is an error to PostgreSQL; an empty file is simply nothing to do.
        if sql.trim().is_empty() {
            return Ok(sql.len() as u64);
        }
        dbseed::run_sql(conn, &sql).map_err(|f| match f.line {
            Some(line) => anyhow::anyhow!("{} line {line}: {}", path.display(), f.message),
            None => anyhow::anyhow!("{}: {}", path.display(), f.message),
        })?;
        Ok(sql.len() as u64)
    }

    fn load_csv(
        &mut self,
        conn: &mut AnyConnection,
        file: &SeedFile,
    ) -> anyhow::Result<(u64, u64)> {
        let path = &file.path;
        let table = file.table.as_deref().unwrap_or_default();
        let opened = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut reader = CsvReader::new(BufReader::with_capacity(256 * 1024, opened));
        let mut record = Record::default();
        let has_header = reader
            .read(&mut record)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if !has_header {
            anyhow::bail!(
                "{}: the file is empty; a CSV seed needs a header row naming the columns",
                path.display()
            );
        }
        let columns = dbseed::columns(conn, table)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: table {} does not exist (the table is named by the file name)",
                path.display(),
                db::quote_ident(table)
            )
        })?;
        let header = match_header(path, table, &record, &columns)?;
        let names: Vec<String> = header.iter().map(|c| c.name.clone()).collect();
        let mut stream = RowStream {
            path,
            reader,
            record,
            width: header.len(),
            row: 0,
            bar: self.bar,
            bytes_before: self.bytes_before,
        };
        let rows = match conn {
            AnyConnection::Postgresql(pg) => {
                let rows = copy_into_pg(pg, table, &names, &mut stream)?;
                for seq in dbseed::pg_reset_sequences(pg, table, &names)? {
                    self.ctx.out.verbose(format_args!(
                        "moved sequence {seq} past the ids seeded into {table}"
                    ));
                }
                rows
            }
            AnyConnection::Sqlite(sq) => {
                let booleans: Vec<bool> = header
                    .iter()
                    .map(|c| c.sql_type.to_ascii_uppercase().contains("BOOL"))
                    .collect();
                insert_into_sqlite(sq, table, &names, &booleans, &mut stream)?
            }
        };
        Ok((rows, stream.reader.bytes_read()))
    }
}

/// Matches the header to the table's columns: exactly, else case-insensitively when that is
/// unambiguous. Unknown, empty and repeated names are errors.
fn match_header(
    path: &Path,
    table: &str,
    header: &Record,
    columns: &[dbseed::Column],
) -> anyhow::Result<Vec<dbseed::Column>> {
    let mut out: Vec<dbseed::Column> = Vec::with_capacity(header.len());
    for i in 0..header.len() {
        let name = header.get(i).unwrap_or_default().trim();
        if name.is_empty() {
            anyhow::bail!(
                "{} line {}: header field {} is empty; every column needs a name",
                path.display(),
                header.line,
                i + 1
            );
        }
        let exact = columns.iter().find(|c| c.name == name);
        let folded: Vec<&dbseed::Column> = columns
            .iter()
            .filter(|c| c.name.eq_ignore_ascii_case(name))
            .collect();
        let column = match (exact, folded.as_slice()) {
            (Some(c), _) => c,
            (None, [c]) => *c,
            _ => anyhow::bail!(
                "{} line {}, column {}: table {} has no column {} (it has: {})",
                path.display(),
                header.line,
                i + 1,
                db::quote_ident(table),
                db::quote_ident(name),
                columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if out.iter().any(|c| c.name == column.name) {
            anyhow::bail!(
                "{} line {}: column {} appears twice in the header",
                path.display(),
                header.line,
                db::quote_ident(&column.name)
            );
        }
        out.push(column.clone());
    }
    Ok(out)
}

/// The data rows of one CSV file, checked for width, with progress.
struct RowStream<'a, R> {
    path: &'a Path,
    reader: CsvReader<R>,
    record: Record,
    width: usize,
    /// Data rows read so far (1 = the first row after the header).
    row: u64,
    bar: &'a ProgressBar,
    bytes_before: u64,
}

impl<R: std::io::BufRead> RowStream<'_, R> {
    /// Advances to the next data row; `Ok(false)` at the end of the file.
    fn next(&mut self) -> anyhow::Result<bool> {
        let more = self.reader.read(&mut self.record).map_err(|e| match e {
            csv::ReadError::NotUtf8 { line, field } => anyhow::anyhow!(
                "{} row {} (line {line}), column {}: not valid UTF-8 (save the file as UTF-8)",
                self.path.display(),
                self.row + 1,
                field + 1
            ),
            csv::ReadError::Io(e) => anyhow::anyhow!("cannot read {}: {e}", self.path.display()),
        })?;
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
        if self.row % 4096 == 0 {
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
fn copy_into_pg<R: std::io::BufRead>(
    pg: &mut diesel::PgConnection,
    table: &str,
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
                .and_then(|()| locate_pg_failure(pg, stream.path, table, columns));
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

/// Replays the file (from the savepoint taken before it) in chunks, each in its own savepoint,
/// then halves the failing chunk until one row is left. Returns `row N (line L)[, column c]:
/// message`, or `None` when the failure does not come back.
fn locate_pg_failure(
    pg: &mut diesel::PgConnection,
    path: &Path,
    table: &str,
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
    let opened = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = CsvReader::new(BufReader::with_capacity(256 * 1024, opened));
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
        while rows.len() < PROBE_CHUNK && reader.read(&mut record).unwrap_or(false) {
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
        let column = refused_column(path, row, &message, columns);
        let column = column.map_or(String::new(), |c| format!(", column {c}"));
        return Ok(Some(format!("row {row} (line {line}){column}: {message}")));
    }
}

/// The column holding the value a type error quotes (`invalid input syntax for type integer:
/// "x"`), when exactly one field of that row holds it.
fn refused_column(path: &Path, row: u64, message: &str, columns: &[String]) -> Option<String> {
    let value = message.strip_suffix('"')?.rsplit_once(": \"")?.1;
    let opened = File::open(path).ok()?;
    let mut reader = CsvReader::new(BufReader::new(opened));
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
fn insert_into_sqlite<R: std::io::BufRead>(
    sq: &mut diesel::SqliteConnection,
    table: &str,
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
