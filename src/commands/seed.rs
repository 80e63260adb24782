//! `dbctl seed`: the arguments, which files to seed (the ones named, else the seeds folder), the
//! call into the seeding engine (`crate::seed`), and the report. The engine plans, loads and
//! verifies; this module prints what it says through [`Output`].

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;

use crate::commands::Context;
use crate::db::{self, OpenMode};
use crate::output::{self, millis, ms_f64, Output, Report};
use crate::seed::{self, FileLoaded};

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
    #[arg(long, value_name = "CHAR", default_value = ",", value_parser = seed::csv::parse_delimiter)]
    delimiter: u8,

    /// Character encoding of the CSV files: UTF8, LATIN1 (ISO-8859-1) or WIN1252 (Windows-1252)
    #[arg(long, value_name = "NAME", default_value = "UTF8", value_parser = seed::csv::Encoding::parse)]
    encoding: seed::csv::Encoding,
}

#[derive(Serialize, Debug)]
pub(crate) struct SeedReport {
    /// The server that answered (`host:port`; for a URL naming several, the one libpq chose);
    /// absent for SQLite and when there was nothing to seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    /// True when the transaction was committed; false for `--dry-run` (rolled back).
    committed: bool,
    dry_run: bool,
    /// Tables emptied first (`--truncate`), children first.
    truncated: Vec<String>,
    files: Vec<FileLoaded>,
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

pub(crate) fn run(ctx: &Context, args: SeedArgs) -> anyhow::Result<SeedReport> {
    let (dir, source) = ctx.config.seeds_dir(args.seeds_dir.as_deref());
    ctx.out
        .verbose(format_args!("seeds folder {} ({source})", dir.display()));
    let files = select_files(ctx, &args.files, &dir, &source)?;
    if files.is_empty() {
        return Ok(SeedReport::nothing(&dir, args.dry_run));
    }
    let started = Instant::now();
    let database = ctx.open(OpenMode::Existing)?;
    // Even a dry run loads into a transaction it then rolls back: a standby refuses that too.
    db::topology::require_writable(&database)?;
    let mut conn = database.get()?;
    let options = seed::Options {
        dry_run: args.dry_run,
        truncate: args.truncate,
        dialect: seed::csv::Dialect {
            delimiter: args.delimiter,
            encoding: args.encoding,
        },
    };
    let seeded = seed::run(&mut conn, files, &options, ctx.out)?;
    let duration = started.elapsed();
    Ok(SeedReport {
        host: database.server(),
        committed: seeded.committed,
        dry_run: args.dry_run,
        truncated: seed::names(&seeded.truncated),
        total_rows: seeded.files.iter().filter_map(|f| f.rows).sum(),
        files: seeded.files,
        duration_ms: ms_f64(duration),
        duration,
        empty_note: None,
    })
}

impl SeedReport {
    /// The report when there is no seed file at all.
    fn nothing(dir: &Path, dry_run: bool) -> SeedReport {
        SeedReport {
            host: None,
            committed: !dry_run,
            dry_run,
            truncated: Vec::new(),
            files: Vec::new(),
            total_rows: 0,
            duration_ms: 0.0,
            duration: Duration::ZERO,
            empty_note: Some(format!(
                "nothing to seed: no .csv, .tsv or .sql files in `{}`",
                dir.display()
            )),
        }
    }
}

/// The seed files: those named on the command line, else every seed file in the folder.
fn select_files(
    ctx: &Context,
    named: &[PathBuf],
    dir: &Path,
    source: &crate::config::Source,
) -> anyhow::Result<Vec<seed::plan::SeedFile>> {
    if !named.is_empty() {
        return seed::plan::named(named, dir);
    }
    if !dir.is_dir() {
        return Err(crate::error::usage(format!(
            "seeds folder `{}` does not exist ({source}); create it or pass --seeds-dir",
            dir.display()
        )));
    }
    let (files, skipped) = seed::plan::discover(dir)?;
    for name in skipped {
        ctx.out.verbose(format_args!(
            "skipping {name} (not a .csv, .tsv or .sql file)"
        ));
    }
    Ok(files)
}

/// The engine's notes go to stderr through the command's printer: details with `--verbose`, a
/// line per file when stderr is not a terminal (or with `--verbose`), and the progress bar.
impl seed::Sink for Output {
    fn note(&self, message: &dyn Display) {
        self.verbose(message);
    }

    fn info(&self, message: &dyn Display) {
        Output::info(self, message);
    }

    fn warn(&self, message: &dyn Display) {
        Output::warn(self, message);
    }

    fn file_loaded(&self, file: &FileLoaded) {
        if !self.writes_progress_lines() && !self.is_verbose() {
            return;
        }
        let what = match (&file.table, file.rows) {
            (Some(t), Some(1)) => format!("1 row into {t}"),
            (Some(t), Some(r)) => format!("{r} rows into {t}"),
            _ => "ran".to_string(),
        };
        Output::info(
            self,
            format_args!("{}: {what} ({})", file.file, millis(file.duration)),
        );
    }

    fn progress_bar(&self, total_bytes: u64) -> ProgressBar {
        Output::progress_bar(
            self,
            total_bytes,
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}",
        )
    }
}
