//! One seed file at a time: a `.sql` file runs as written inside a savepoint (and must leave
//! dbctl's transaction open), a CSV file's header is matched to its table's columns and its rows
//! stream, checked for width and with progress, into the backend's bulk path (`Loader::load_csv`).
//! A failure is named by file, row and line; [`Located`] carries the row a database refused.

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::ProgressBar;
use serde::Serialize;

use super::csv::{self, CsvReader, FileReader, Record};
use super::loader::{loader, Column, CsvTarget, ForeignKey, RowStream, TargetKind};
use super::plan::{Kind, SeedFile};
use super::transaction::{run_sql, savepoint, DbFailure, Savepoint, UserSql};
use super::Sink;
use crate::db::{self, AnyConnection, TableName};

/// The savepoint each `.sql` file runs in.
const SQL_SAVEPOINT: &str = "dbctl_seed_sql";

/// Opens a CSV file again, past its header, to look for the row a database refused; `None` when
/// the header is no longer there.
pub(super) fn reopen(
    path: &Path,
    dialect: csv::Dialect,
) -> anyhow::Result<Option<(FileReader, Record)>> {
    let mut reader = CsvReader::open(path, dialect)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut record = Record::default();
    Ok(reader
        .read(&mut record)
        .unwrap_or(false)
        .then_some((reader, record)))
}

/// The row a database refused, and why.
pub(super) struct Located {
    pub(super) row: u64,
    pub(super) line: u64,
    pub(super) column: Option<String>,
    pub(super) failure: DbFailure,
}

impl Located {
    /// The failure, its message prefixed with `file row N (line L)[, column c]`.
    pub(super) fn at(self, path: &Path) -> DbFailure {
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

/// What one file loaded: the engine's result for it.
#[derive(Serialize, Debug)]
pub(crate) struct FileLoaded {
    pub(crate) file: String,
    pub(crate) kind: Kind,
    /// The target table of a CSV file.
    pub(crate) table: Option<String>,
    /// Rows loaded from a CSV file (not counted for .sql files).
    pub(crate) rows: Option<u64>,
    pub(crate) bytes: u64,
    #[serde(rename = "duration_ms", serialize_with = "crate::output::serialize_ms")]
    pub(crate) duration: Duration,
}

/// Loads files one after another inside the seed's transaction, keeping the progress bar up to
/// date and remembering what the last checks need.
pub(super) struct FileLoader<'a> {
    pub(super) sink: &'a dyn Sink,
    pub(super) bar: ProgressBar,
    bytes_before: u64,
    keys: &'a [ForeignKey],
    /// Every foreign-key check is already deferred to the commit (tables in a cycle).
    defer_all: bool,
    /// Which transaction is dbctl's (see `Loader::transaction_identity`), when there are .sql
    /// files.
    transaction: Option<String>,
    /// How the .csv files are written (`--delimiter`, `--encoding`).
    dialect: csv::Dialect,
    /// The CSV files loaded so far, for the checks at the end.
    pub(super) loaded: Vec<CsvTarget>,
}

impl<'a> FileLoader<'a> {
    pub(super) fn new(
        sink: &'a dyn Sink,
        bar: ProgressBar,
        keys: &'a [ForeignKey],
        defer_all: bool,
        dialect: csv::Dialect,
    ) -> Self {
        FileLoader {
            sink,
            bar,
            bytes_before: 0,
            keys,
            defer_all,
            transaction: None,
            dialect,
            loaded: Vec::new(),
        }
    }

    /// Remembers which transaction is dbctl's, so that a `.sql` file that ends it is caught.
    pub(super) fn note_transaction(&mut self, conn: &mut AnyConnection) -> anyhow::Result<()> {
        self.transaction = Some(loader(conn).transaction_identity()?);
        Ok(())
    }

    pub(super) fn load(
        &mut self,
        conn: &mut AnyConnection,
        file: &SeedFile,
    ) -> anyhow::Result<FileLoaded> {
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
        let loaded = FileLoaded {
            file: file.path.display().to_string(),
            kind: file.kind,
            table: file.table.as_ref().map(|t| t.to_string()),
            rows,
            bytes,
            duration,
        };
        self.sink.file_loaded(&loaded);
        Ok(loaded)
    }

    fn load_sql(&mut self, conn: &mut AnyConnection, file: &SeedFile) -> anyhow::Result<u64> {
        let path = &file.path;
        let mut sql = String::new();
        crate::files::open_regular(path)
            .map_err(|e| match e {
                crate::files::OpenError::NotRegular(_) => {
                    crate::error::usage(format!("{}: {e}", path.display()))
                }
                e => anyhow::anyhow!("cannot read {}: {e}", path.display()),
            })?
            .read_to_string(&mut sql)
            .with_context(|| format!("cannot read {}", path.display()))?;
        crate::migrate::split::refuse_in_seed(path, &sql, conn)?;
        // An empty statement is an error to PostgreSQL; an empty file is simply nothing to do.
        if sql.trim().is_empty() {
            return Ok(sql.len() as u64);
        }
        // The file runs inside a savepoint of dbctl's transaction: if a COMMIT in it ended that
        // transaction, the savepoint is gone too, which tells dbctl's transaction from one the
        // file began, even after a failure has aborted it.
        savepoint(conn, Savepoint::Set, SQL_SAVEPOINT)?;
        if let Err(f) = run_sql(conn, &sql) {
            // Nothing is sent before the transaction is known to be open.
            let ended = db::transaction_is_open(conn).unwrap_or(false)
                && savepoint(conn, Savepoint::RollbackTo, SQL_SAVEPOINT).is_err();
            return Err(anyhow::Error::new(UserSql {
                message: match f.line {
                    Some(line) => format!("{} line {line}: {}", path.display(), f.message),
                    None => format!("{}: {}", path.display(), f.message),
                },
                ended,
            }));
        }
        // A COMMIT, ROLLBACK or END in the file ends dbctl's transaction; what follows would run
        // in autocommit mode, row by row.
        let same = db::transaction_is_open(conn).unwrap_or(false)
            && (self.transaction.is_none()
                || Some(loader(conn).transaction_identity()?) == self.transaction);
        if !same {
            return Err(anyhow::Error::new(UserSql {
                message: format!(
                    "{} ended dbctl's transaction (a COMMIT, ROLLBACK or END in the file): stopping here",
                    path.display()
                ),
                ended: true,
            }));
        }
        savepoint(conn, Savepoint::Release, SQL_SAVEPOINT)?;
        Ok(sql.len() as u64)
    }

    fn load_csv(
        &mut self,
        conn: &mut AnyConnection,
        file: &SeedFile,
    ) -> anyhow::Result<(u64, u64)> {
        let path = &file.path;
        let bare = TableName::default();
        let table = file.table.as_ref().unwrap_or(&bare);
        let dialect = csv::Dialect {
            delimiter: file.delimiter.unwrap_or(self.dialect.delimiter),
            ..self.dialect
        };
        let mut reader = CsvReader::open(path, dialect).map_err(|e| match e {
            csv::ReadError::NotRegular(_) => crate::error::usage(e),
            e => anyhow::anyhow!("cannot read {}: {e}", path.display()),
        })?;
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
        let backend = loader(conn);
        match backend.target_kind(table)? {
            TargetKind::Table | TargetKind::InsertableView => {}
            TargetKind::View => anyhow::bail!(
                "{}: {} is a view without an INSTEAD OF INSERT trigger, so it cannot take rows; seed the table it reads from",
                path.display(),
                table.quoted()
            ),
            TargetKind::Missing => anyhow::bail!(
                "{}: table {} does not exist (the table is named by the file name)",
                path.display(),
                table.quoted()
            ),
        }
        let columns = backend.columns(table)?;
        let header = match_header(path, table, &record, &columns)?;
        let target = CsvTarget {
            table: table.clone(),
            names: header.iter().map(|c| c.name.clone()).collect(),
            columns: header,
            self_referencing: !self.defer_all
                && self.keys.iter().any(|k| {
                    k.child.eq_ignore_ascii_case(&table.name)
                        && k.parent.eq_ignore_ascii_case(&table.name)
                }),
        };
        let mut stream = RowStream {
            path,
            reader,
            dialect,
            record,
            width: target.names.len(),
            row: 0,
            bar: &self.bar,
            bytes_before: self.bytes_before,
        };
        let rows = backend.load_csv(&target, &mut stream)?;
        self.loaded.push(target);
        Ok((rows, stream.reader.bytes_read()))
    }
}

/// Matches the header to the table's columns: exactly, else case-insensitively when that is
/// unambiguous. Unknown, empty and repeated names are errors.
fn match_header(
    path: &Path,
    table: &TableName,
    header: &Record,
    columns: &[Column],
) -> anyhow::Result<Vec<Column>> {
    let mut out: Vec<Column> = Vec::with_capacity(header.len());
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
        let folded: Vec<&Column> = columns
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
                table.quoted(),
                db::quote_ident(&crate::output::clip(name)),
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
