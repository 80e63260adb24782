//! The seeding engine: which files load and in what order (`plan`), reading CSV (`csv`), one
//! file at a time (`load`), the run's one transaction and how a failed one ended
//! (`transaction`), and each backend's SQL and bulk path (`pg`: COPY, `sqlite`: a cached
//! multi-row INSERT), chosen once in `loader`.
//!
//! [`run`] loads planned files in one transaction: every row of every file, or nothing. Any
//! failure rolls the whole run back and is reported with the file, the CSV row and line (or SQL
//! line), and the database's message, ending with how the transaction ended as read back from the
//! connection. PostgreSQL sequences move last, just before COMMIT. The engine prints nothing: what
//! it has to say goes to a [`Sink`]. Finding the files and the report are `commands::seed`'s.

pub(crate) mod csv;
mod load;
mod loader;
mod pg;
pub(crate) mod plan;
mod sqlite;
mod transaction;

use std::fmt::Display;

use anyhow::Context as _;
use indicatif::ProgressBar;

use crate::db::{self, AnyConnection, TableName};
pub(crate) use load::FileLoaded;
use load::FileLoader;
use loader::{loader, ForeignKey};
use plan::{Kind, SeedFile};
use transaction::{not_committed, write_transaction, Ending};

/// Where the engine's progress, notes and warnings go (the command's printer).
pub(crate) trait Sink {
    /// A detail for `--verbose`.
    fn note(&self, message: &dyn Display);
    /// A line people always see (unless quiet).
    fn info(&self, message: &dyn Display);
    fn warn(&self, message: &dyn Display);
    /// One file has loaded.
    fn file_loaded(&self, file: &FileLoaded);
    /// A progress bar over `total_bytes` of input (hidden when nobody watches).
    fn progress_bar(&self, total_bytes: u64) -> ProgressBar;
}

/// How to seed.
pub(crate) struct Options {
    /// Load everything, then roll back.
    pub(crate) dry_run: bool,
    /// Empty the CSV files' tables first, children before parents.
    pub(crate) truncate: bool,
    /// How the .csv files are written (`--delimiter`, `--encoding`).
    pub(crate) dialect: csv::Dialect,
}

/// What a run that did not fail did.
pub(crate) struct Seeded {
    /// True when the transaction was committed; false for a dry run (rolled back).
    pub(crate) committed: bool,
    /// Tables emptied first (`--truncate`), children first.
    pub(crate) truncated: Vec<TableName>,
    pub(crate) files: Vec<FileLoaded>,
}

/// The files in load order, with what the load needs from the catalog.
struct Plan {
    files: Vec<SeedFile>,
    keys: Vec<ForeignKey>,
    /// Tables whose foreign keys form a cycle (their checks wait for the commit).
    cyclic: Vec<String>,
    truncate: Vec<TableName>,
}

/// Seeds `files` (sorted by name) on `conn`, in one transaction: plan, load each file, verify,
/// then commit (or roll back for a dry run).
pub(crate) fn run(
    conn: &mut AnyConnection,
    files: Vec<SeedFile>,
    options: &Options,
    sink: &dyn Sink,
) -> anyhow::Result<Seeded> {
    let plan = plan(conn, files, options, sink)?;
    let bar = sink.progress_bar(total_bytes(&plan.files));
    let mut files = FileLoader::new(
        sink,
        bar,
        &plan.keys,
        !plan.cyclic.is_empty(),
        options.dialect,
    );
    let outcome = write_transaction(conn, |c| load_all(c, &plan, &mut files, options));
    files.bar.finish_and_clear();
    let database = loader(conn).database();
    finish(outcome, plan.truncate, options, database)
}

/// Matches the CSV files to tables, orders the files by the catalog's foreign keys, and says
/// the order.
fn plan(
    conn: &mut AnyConnection,
    mut files: Vec<SeedFile>,
    options: &Options,
    sink: &dyn Sink,
) -> anyhow::Result<Plan> {
    let backend = loader(conn);
    for note in plan::resolve_tables(&mut files, &backend.relations()?)? {
        sink.note(&note);
    }
    let keys = backend.foreign_keys()?;
    let edges: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.child.clone(), k.parent.clone()))
        .collect();
    let (files, cyclic) = plan::order(files, &edges);
    announce_order(sink, &files, &cyclic, &keys, options.dry_run);
    let truncate = if options.truncate {
        truncate_order(&files)
    } else {
        Vec::new()
    };
    Ok(Plan {
        files,
        keys,
        cyclic,
        truncate,
    })
}

/// Inside the transaction: prepares it, loads each file, and checks what is left to check.
/// A dry run ends here with [`DryRunDone`], which rolls the transaction back.
fn load_all(
    conn: &mut AnyConnection,
    plan: &Plan,
    files: &mut FileLoader<'_>,
    options: &Options,
) -> anyhow::Result<Vec<FileLoaded>> {
    prepare(conn, plan, files)?;
    let mut loaded = Vec::with_capacity(plan.files.len());
    for file in &plan.files {
        loaded.push(files.load(conn, file)?);
    }
    verify(conn, plan, files)?;
    if options.dry_run {
        return Err(DryRunDone(loaded).into());
    }
    // Last, just before COMMIT: `setval` cannot be rolled back.
    loader(conn).before_commit(&files.loaded, files.sink)?;
    Ok(loaded)
}

/// Notes which transaction is dbctl's (for `.sql` files), defers the keys of tables in a cycle
/// and empties the tables for `--truncate`.
fn prepare(
    conn: &mut AnyConnection,
    plan: &Plan,
    files: &mut FileLoader<'_>,
) -> anyhow::Result<()> {
    if plan.files.iter().any(|f| f.kind == Kind::Sql) {
        files.note_transaction(conn)?;
    }
    let backend = loader(conn);
    if !plan.cyclic.is_empty() {
        backend.defer_foreign_keys()?;
    }
    if !plan.truncate.is_empty() {
        files.sink.note(&format_args!(
            "emptying {}",
            names(&plan.truncate).join(", ")
        ));
        backend.empty_tables(&plan.truncate)?;
    }
    Ok(())
}

/// Checks the keys whose checks waited: the tables in a cycle, then what the backend deferred.
fn verify(conn: &mut AnyConnection, plan: &Plan, files: &FileLoader<'_>) -> anyhow::Result<()> {
    let backend = loader(conn);
    if !plan.cyclic.is_empty() {
        backend
            .check_deferred_foreign_keys()
            .context("checking the foreign keys of the tables in a cycle")?;
    }
    backend.verify(&files.loaded)
}

/// The run's result: the files loaded and whether they were committed, or the failure as one
/// line that says how the transaction ended.
fn finish(
    outcome: Result<Vec<FileLoaded>, transaction::TxFailure>,
    truncated: Vec<TableName>,
    options: &Options,
    database: &str,
) -> anyhow::Result<Seeded> {
    let (files, committed) = match outcome {
        Ok(files) => (files, true),
        Err(failure) => match failure.error.downcast::<DryRunDone>() {
            Ok(DryRunDone(files)) if matches!(failure.ending, Ending::RolledBack) => (files, false),
            Ok(_) => {
                let error = anyhow::anyhow!("dry run");
                return Err(not_committed(error, failure.ending, database, false));
            }
            Err(error) => {
                return Err(not_committed(
                    error,
                    failure.ending,
                    database,
                    options.truncate,
                ))
            }
        },
    };
    Ok(Seeded {
        committed,
        truncated,
        files,
    })
}

/// Returned through the transaction to roll a dry run back; carries the counts out.
#[derive(Debug)]
struct DryRunDone(Vec<FileLoaded>);

impl std::fmt::Display for DryRunDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dry run")
    }
}

impl std::error::Error for DryRunDone {}

/// The size of every file, for the progress bar.
fn total_bytes(files: &[SeedFile]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum()
}

/// Says the load order (verbose, and always for `--dry-run`) and warns about cycles, naming
/// the keys that cannot be deferred (PostgreSQL checks those as each row loads).
fn announce_order(
    sink: &dyn Sink,
    files: &[SeedFile],
    cyclic: &[String],
    keys: &[ForeignKey],
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
            sink.warn(&format_args!(
                "the foreign keys of {} form a cycle: those files load in name order with foreign-key checks deferred to the commit",
                cyclic.join(", ")
            ));
        } else {
            sink.warn(&format_args!(
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
    sink.note(&format_args!("load order: {}", order.join(", ")));
    if dry_run {
        sink.info(&format_args!(
            "dry run: loading in this order, then rolling back: {}",
            order.join(", ")
        ));
    }
}

/// Tables as people write them (`users`, `app.users`).
pub(crate) fn names(tables: &[TableName]) -> Vec<String> {
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
