//! `dbctl seed`: load the seeds folder (or the files named) in one transaction.
//!
//! Plans the order (`plan`), then streams each file inside one transaction: `.sql` files run as
//! written, `.csv` files go through `csv` into the backend's bulk path in `db::seed` (COPY on
//! PostgreSQL, a cached multi-row INSERT on SQLite). Any failure rolls the whole run back and is
//! reported with the file, the CSV row and line (or SQL line), and the database's message, ending
//! with how the transaction ended as read back from the connection (never assumed). PostgreSQL
//! sequences move last, just before COMMIT.

mod csv;
mod load;
mod plan;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::commands::Context;
use crate::db::seed as dbseed;
use crate::db::seed::{savepoint, Savepoint};
use crate::db::{self, AnyConnection, OpenMode, TableName};
use crate::output::{self, millis, ms_f64, Report};
use csv::{CsvReader, Record};
use load::{copy_into_pg, insert_into_sqlite, RowStream};

/// The savepoint each `.sql` file runs in.
const SQL_SAVEPOINT: &str = "dbctl_seed_sql";
use plan::{Kind, SeedFile};

/// Load seed data in one transaction: every row of every file, or nothing.
///
/// Loads every .csv, .tsv and .sql file in the seeds folder, or just the FILEs given. A CSV file's
/// header names the columns; it loads into the table named by the file (`010_users.csv` loads
/// `users`, `app.users.csv` loads `app.users`). An empty unquoted field is NULL, `""` is an empty
/// string. Files load parents first, following the foreign keys in the database; a .sql file runs
/// after every file named before it.
///
/// Examples:
///   dbctl seed
///   dbctl seed --dry-run --verbose
///   dbctl seed --delimiter ';' --encoding latin1 seeds/export.csv
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

    /// Field separator of the .csv files: one ASCII punctuation character, a space, or `tab`
    /// (.tsv files are always tab-separated)
    #[arg(long, value_name = "CHAR", default_value = ",", value_parser = csv::parse_delimiter)]
    delimiter: u8,

    /// Character encoding of the CSV files: UTF8, LATIN1 (ISO-8859-1) or WIN1252 (Windows-1252)
    #[arg(long, value_name = "NAME", default_value = "UTF8", value_parser = csv::Encoding::parse)]
    encoding: csv::Encoding,
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
    let files = select_files(ctx, &args.files, &dir, &source)?;
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
                "nothing to seed: no .csv, .tsv or .sql files in `{}`",
                dir.display()
            )),
        });
    }

    let database = ctx.open(OpenMode::Existing)?;
    // Even a dry run loads into a transaction it then rolls back: a standby refuses that too.
    db::topology::require_writable(&database)?;
    let mut conn = database.get()?;
    let mut files = files;
    for note in plan::resolve_tables(&mut files, &dbseed::relations(&mut conn)?)? {
        ctx.out.verbose(format_args!("{note}"));
    }
    let keys = dbseed::foreign_keys(&mut conn)?;
    let edges: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.child.clone(), k.parent.clone()))
        .collect();
    let (files, cyclic) = plan::order(files, &edges);
    announce_order(ctx, &files, &cyclic, &keys, args.dry_run);
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
        keys: &keys,
        defer_all: !cyclic.is_empty(),
        deferred: Vec::new(),
        sequenced: Vec::new(),
        transaction: None,
        dialect: csv::Dialect {
            delimiter: args.delimiter,
            encoding: args.encoding,
        },
    };
    let has_sql = files.iter().any(|f| f.kind == Kind::Sql);
    let outcome = dbseed::write_transaction(&mut conn, |c| -> anyhow::Result<Vec<FileReport>> {
        if has_sql {
            loader.transaction = dbseed::transaction_identity(c)?;
        }
        if !cyclic.is_empty() {
            dbseed::defer_foreign_keys(c)?;
        }
        if !truncated.is_empty() {
            ctx.out
                .verbose(format_args!("emptying {}", names(&truncated).join(", ")));
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
        loader.check_self_references(c)?;
        if args.dry_run {
            return Err(DryRunDone(reports).into());
        }
        // Last, just before COMMIT: `setval` cannot be rolled back.
        loader.adjust_sequences(c)?;
        Ok(reports)
    });
    bar.finish_and_clear();
    let (reports, committed) = match outcome {
        Ok(reports) => (reports, true),
        Err(failure) => match failure.error.downcast::<DryRunDone>() {
            Ok(DryRunDone(reports)) if matches!(failure.ending, dbseed::Ending::RolledBack) => {
                (reports, false)
            }
            Ok(_) => {
                return Err(not_committed(
                    anyhow::anyhow!("dry run"),
                    failure.ending,
                    database.backend(),
                    false,
                ))
            }
            Err(error) => {
                return Err(not_committed(
                    error,
                    failure.ending,
                    database.backend(),
                    args.truncate,
                ))
            }
        },
    };
    let total_rows = reports.iter().filter_map(|r| r.rows).sum();
    let duration = started.elapsed();
    Ok(SeedReport {
        committed,
        dry_run: args.dry_run,
        truncated: names(&truncated),
        files: reports,
        total_rows,
        duration_ms: ms_f64(duration),
        duration,
        empty_note: None,
    })
}

/// The seed files: those named on the command line, else every seed file in the folder.
fn select_files(
    ctx: &Context,
    named: &[PathBuf],
    dir: &Path,
    source: &crate::config::Source,
) -> anyhow::Result<Vec<SeedFile>> {
    if !named.is_empty() {
        return plan::named(named, dir);
    }
    if !dir.is_dir() {
        return Err(crate::error::usage(format!(
            "seeds folder `{}` does not exist ({source}); create it or pass --seeds-dir",
            dir.display()
        )));
    }
    let (files, skipped) = plan::discover(dir)?;
    for name in skipped {
        ctx.out.verbose(format_args!(
            "skipping {name} (not a .csv, .tsv or .sql file)"
        ));
    }
    Ok(files)
}

/// Says the load order (verbose, and always for `--dry-run`) and warns about cycles, naming
/// the keys that cannot be deferred (PostgreSQL checks those as each row loads).
fn announce_order(
    ctx: &Context,
    files: &[SeedFile],
    cyclic: &[String],
    keys: &[dbseed::ForeignKey],
    dry_run: bool,
) {
    if !cyclic.is_empty() {
        let in_cycle = |t: &str| cyclic.iter().any(|c| c.eq_ignore_ascii_case(t));
        let fixed: Vec<String> = keys
            .iter()
            .filter(|k| !k.deferrable && in_cycle(&k.child) && in_cycle(&k.parent))
            .map(|k| format!("{} on {}", db::quote_ident(&k.name), k.child_sql))
            .collect();
        if fixed.is_empty() {
            ctx.out.warn(format_args!(
                "the foreign keys of {} form a cycle: those files load in name order with foreign-key checks deferred to the commit",
                cyclic.join(", ")
            ));
        } else {
            ctx.out.warn(format_args!(
                "the foreign keys of {} form a cycle: those files load in name order; {} cannot be deferred (not DEFERRABLE) and {} checked as each row loads, so a row must not reference one loaded after it",
                cyclic.join(", "),
                fixed.join(", "),
                if fixed.len() == 1 { "is" } else { "are" }
            ));
        }
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
    if dry_run {
        ctx.out.info(format_args!(
            "dry run: loading in this order, then rolling back: {}",
            order.join(", ")
        ));
    }
}

/// The failure as one line that says how the transaction ended, as verified after the failure,
/// keeping its exit code. A unique violation without `--truncate` says how to reload.
fn not_committed(
    err: anyhow::Error,
    ending: dbseed::Ending,
    backend: db::Backend,
    truncate: bool,
) -> anyhow::Error {
    let exit = crate::error::exit_of(&err);
    let unique = err.chain().any(|c| {
        c.downcast_ref::<dbseed::DbFailure>()
            .is_some_and(|f| f.unique)
    });
    let hint = if unique && !truncate {
        " (if these rows were seeded before, `dbctl seed --truncate` empties the tables first and reloads them)"
    } else {
        ""
    };
    let database = match backend {
        db::Backend::Sqlite => "SQLite",
        db::Backend::Postgres => "PostgreSQL",
    };
    let ending = match ending {
        dbseed::Ending::RolledBack => "rolled back: the database is unchanged".to_string(),
        dbseed::Ending::EndedByDatabase => format!(
            "{database} rolled back the whole transaction itself when this statement failed, and dbctl sent nothing after it: the database is unchanged"
        ),
        dbseed::Ending::Uncertain(what) => format!("not committed by dbctl; {what}"),
    };
    let err = anyhow::anyhow!("{err:#}{hint} ({ending})");
    match exit {
        crate::error::Exit::Failed => err,
        other => crate::error::tag(err, other),
    }
}

/// Tables as people write them (`users`, `app.users`).
fn names(tables: &[TableName]) -> Vec<String> {
    tables.iter().map(|t| t.to_string()).collect()
}

/// The distinct tables of the CSV files, children first (the reverse of the load order).
fn truncate_order(files: &[SeedFile]) -> Vec<TableName> {
    let mut tables: Vec<TableName> = Vec::new();
    for file in files.iter().rev() {
        if let Some(t) = &file.table {
            // Names were matched to the catalog: "Users" and "users" are two tables here.
            if !tables.iter().any(|x| x == t) {
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
    keys: &'a [dbseed::ForeignKey],
    /// Every foreign-key check is already deferred to the commit (tables in a cycle).
    defer_all: bool,
    /// SQLite tables that reference themselves, loaded with foreign-key checks deferred.
    deferred: Vec<TableName>,
    /// PostgreSQL tables and the columns loaded into them, for the sequences at the end.
    sequenced: Vec<(TableName, Vec<String>)>,
    /// Which transaction is dbctl's (see `transaction_identity`), when there are .sql files.
    transaction: Option<String>,
    /// How the .csv files are written (`--delimiter`, `--encoding`).
    dialect: csv::Dialect,
}

impl Loader<'_> {
    /// Checks the keys of the self-referencing SQLite tables whose checks were deferred, so a
    /// dangling one is named before the commit.
    fn check_self_references(&mut self, conn: &mut AnyConnection) -> anyhow::Result<()> {
        let AnyConnection::Sqlite(sq) = conn else {
            return Ok(());
        };
        for table in &self.deferred {
            if let Some(dangling) = dbseed::sqlite_dangling_key(sq, table)? {
                anyhow::bail!("{dangling} (checked after loading every row of the table)");
            }
        }
        Ok(())
    }

    /// Moves the sequences of the loaded PostgreSQL columns past the seeded values. Deferred
    /// constraints are checked first, so that the COMMIT that follows can only fail for reasons
    /// outside the data (the connection, the server): `setval` cannot be undone.
    fn adjust_sequences(&mut self, conn: &mut AnyConnection) -> anyhow::Result<()> {
        if self.sequenced.is_empty() || !matches!(conn, AnyConnection::Postgresql(_)) {
            return Ok(());
        }
        dbseed::check_deferred_foreign_keys(conn).context("checking the deferred constraints")?;
        let AnyConnection::Postgresql(pg) = conn else {
            return Ok(());
        };
        for moved in dbseed::pg_adjust_sequences(pg, &self.sequenced)? {
            self.ctx.out.verbose(format_args!(
                "moved sequence {moved} past the seeded values"
            ));
        }
        Ok(())
    }

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
            table: file.table.as_ref().map(|t| t.to_string()),
            rows,
            bytes,
            duration_ms: ms_f64(duration),
            duration,
        })
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
        if let Err(f) = dbseed::run_sql(conn, &sql) {
            // Nothing is sent before the transaction is known to be open.
            let ended = db::transaction_is_open(conn).unwrap_or(false)
                && savepoint(conn, Savepoint::RollbackTo, SQL_SAVEPOINT).is_err();
            return Err(anyhow::Error::new(dbseed::UserSql {
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
                || dbseed::transaction_identity(conn)? == self.transaction);
        if !same {
            return Err(anyhow::Error::new(dbseed::UserSql {
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
        match dbseed::target_kind(conn, table)? {
            dbseed::TargetKind::Table | dbseed::TargetKind::InsertableView => {}
            dbseed::TargetKind::View => anyhow::bail!(
                "{}: {} is a view without an INSTEAD OF INSERT trigger, so it cannot take rows; seed the table it reads from",
                path.display(),
                table.quoted()
            ),
            dbseed::TargetKind::Missing => anyhow::bail!(
                "{}: table {} does not exist (the table is named by the file name)",
                path.display(),
                table.quoted()
            ),
        }
        let columns = dbseed::columns(conn, table)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: table {} does not exist (the table is named by the file name)",
                path.display(),
                table.quoted()
            )
        })?;
        let header = match_header(path, table, &record, &columns)?;
        let names: Vec<String> = header.iter().map(|c| c.name.clone()).collect();
        let mut stream = RowStream {
            path,
            reader,
            dialect,
            record,
            width: header.len(),
            row: 0,
            bar: self.bar,
            bytes_before: self.bytes_before,
        };
        let rows = match conn {
            AnyConnection::Postgresql(pg) => {
                let rows = copy_into_pg(pg, table, &names, &mut stream)?;
                self.sequenced.push((table.clone(), names));
                rows
            }
            AnyConnection::Sqlite(sq) => {
                let booleans: Vec<bool> = header
                    .iter()
                    .map(|c| c.sql_type.to_ascii_uppercase().contains("BOOL"))
                    .collect();
                // A table that references itself loads whatever the order of its rows (and
                // however many there are): its keys are checked once every row is in, as one
                // COPY does on PostgreSQL.
                let self_referencing = !self.defer_all
                    && self.keys.iter().any(|k| {
                        k.child.eq_ignore_ascii_case(&table.name)
                            && k.parent.eq_ignore_ascii_case(&table.name)
                    });
                if self_referencing {
                    dbseed::sqlite_defer_foreign_keys(sq, true)?;
                }
                let rows = insert_into_sqlite(sq, table, &names, &booleans, &mut stream)?;
                if self_referencing {
                    dbseed::sqlite_defer_foreign_keys(sq, false)?;
                    if !self.deferred.iter().any(|t| t == table) {
                        self.deferred.push(table.clone());
                    }
                }
                rows
            }
        };
        Ok((rows, stream.reader.bytes_read()))
    }
}

/// Matches the header to the table's columns: exactly, else case-insensitively when that is
/// unambiguous. Unknown, empty and repeated names are errors.
fn match_header(
    path: &Path,
    table: &TableName,
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
