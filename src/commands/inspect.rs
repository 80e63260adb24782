//! `dbctl inspect`: what is in the database, for people (tables), machines (a stable JSON model),
//! documentation (Mermaid, Graphviz) and CI (`--diff` against a snapshot, `--lint`).
//!
//! This module holds the arguments and the report; the work is in `crate::schema`: the catalog is
//! read by `schema::read` in a fixed number of queries, compared by `schema::diff`, reviewed by
//! `schema::lint` and drawn by `schema::render`. Here is chosen what to show (internal tables, the
//! tables named on the command line), and the row counts and the migration state are added.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::commands::Context;
use crate::db::{self, AnyConnection, OpenMode};
use crate::error::{self, Exit};
use crate::output::{Format, Output, Report};
use crate::schema::read::{self, ReadOptions};
use crate::schema::render::{diagram, human};
use crate::schema::{self, diff, lint, MigrationState, RowCounts, Schema};

/// Show the schema: tables, columns, keys, indexes, views, row counts; diff it; lint it; draw it.
///
/// Without TABLE, one line per table and the migration state. With TABLE..., every column,
/// constraint and index of those tables. `--format json` prints the schema model (sorted, stable:
/// commit it and check it with `--diff`), `--format mermaid` and `--format dot` draw it.
///
/// Examples:
///   dbctl inspect
///   dbctl inspect users posts
///   dbctl inspect --format json --no-rows > schema.json
///   dbctl inspect --diff schema.json
///   dbctl inspect --lint --allow missing-primary-key:audit_log
///   dbctl inspect --format mermaid > docs/schema.mmd
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct InspectArgs {
    /// Tables or views to show in full (`name` or `schema.name`; exact, case-sensitive)
    #[arg(value_name = "TABLE")]
    tables: Vec<String>,

    /// PostgreSQL: read this schema instead of those on the search path (repeatable)
    #[arg(long = "schema", value_name = "NAME")]
    schemas: Vec<String>,

    /// Count rows with count(*) (PostgreSQL; the default there is the planner's estimate)
    #[arg(long, conflicts_with = "no_rows")]
    exact: bool,

    /// Do not count rows (`rows` is null in JSON)
    #[arg(long)]
    no_rows: bool,

    /// Also show internal tables (__diesel_schema_migrations, __dbctl_*, sqlite_*)
    #[arg(long)]
    all: bool,

    /// Compare the database with a JSON snapshot from `inspect --format json`; exit 4 on any
    /// difference
    #[arg(long, value_name = "FILE", conflicts_with = "lint")]
    diff: Option<PathBuf>,

    /// Report missing primary keys, unindexed foreign keys, NOT VALID constraints, foreign keys
    /// without ON DELETE on large tables, duplicate and redundant indexes (and, with
    /// DBCTL_LINT_NAMING=sqlalchemy, names that break the convention); exit 4 on any
    #[arg(long)]
    lint: bool,

    /// With --lint: run only these rules (repeatable, or comma-separated). Rules:
    /// missing-primary-key, unindexed-foreign-key, not-valid-constraint, fk-without-on-delete,
    /// duplicate-index, redundant-index, pk-name, fk-name, uq-name, ck-name, ix-name; groups:
    /// default, naming (the five name rules), all
    #[arg(
        long = "rule",
        value_name = "RULE",
        value_delimiter = ',',
        requires = "lint"
    )]
    rules: Vec<String>,

    /// With --lint: turn RULE off, everywhere or for one TABLE (repeatable, or comma-separated;
    /// default: the setting DBCTL_LINT_ALLOW). Takes the rules and groups of --rule
    #[arg(long, value_name = "RULE[:TABLE]", value_delimiter = ',')]
    allow: Vec<String>,
}

/// What `inspect` found, in one of its four modes, and which server it asked.
#[derive(Serialize, Debug)]
pub(crate) struct InspectReport {
    #[serde(flatten)]
    found: Found,
    /// The server that answered (`host:port`; for a URL naming several, the one libpq chose);
    /// absent for SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(untagged)]
enum Found {
    Schema(Box<SchemaReport>),
    Diff(diff::DiffReport),
    Lint(lint::LintReport),
}

/// The schema itself; its JSON is the model of `schema::Schema` (with `host` beside it).
#[derive(Serialize, Debug)]
#[serde(transparent)]
pub(crate) struct SchemaReport {
    schema: Schema,
    /// Whether tables were named (full detail) or not (overview).
    #[serde(skip)]
    detail: bool,
}

impl Report for SchemaReport {
    fn human(&self) -> String {
        if self.detail {
            human::detail(&self.schema)
        } else {
            human::overview(&self.schema)
        }
    }
}

impl InspectReport {
    /// Prints the report: diagrams as they are, everything else through `Output::emit`.
    pub(crate) fn print(&self, out: &Output) -> anyhow::Result<Exit> {
        match (&self.found, out.format()) {
            (Found::Schema(r), Format::Mermaid) => {
                out.raw(&diagram::mermaid(&r.schema))?;
                Ok(Exit::Success)
            }
            (Found::Schema(r), Format::Dot) => {
                out.raw(&diagram::dot(&r.schema))?;
                Ok(Exit::Success)
            }
            _ => out.emit(self),
        }
    }
}

pub(crate) fn run(ctx: &Context, args: InspectArgs) -> anyhow::Result<InspectReport> {
    let diagram = matches!(ctx.out.format(), Format::Mermaid | Format::Dot);
    if diagram && (args.diff.is_some() || args.lint) {
        return Err(error::usage(
            "--format mermaid and --format dot draw the schema; they do not go with --diff or --lint",
        ));
    }
    let lint_settings = if args.lint {
        let (rules, source) = ctx.config.lint_allow(&args.allow);
        ctx.out.verbose(format_args!(
            "lint rules turned off: {} ({source})",
            if rules.is_empty() {
                "none".to_string()
            } else {
                rules.join(", ")
            }
        ));
        let from = match source {
            crate::config::Source::Flag(flag) => flag.to_string(),
            other => format!("DBCTL_LINT_ALLOW ({other})"),
        };
        let allow = lint::parse_allow(&rules, &from)?;
        let (convention, naming_source) = ctx.config.lint_naming(&lint::CONVENTIONS)?;
        ctx.out.verbose(format_args!(
            "lint naming convention: {} ({naming_source})",
            convention.unwrap_or("none")
        ));
        Some(lint::Settings {
            rules: lint::choose_rules(&args.rules, convention)?,
            allow,
            large_rows: ctx.config.lint_large_rows(lint::DEFAULT_LARGE_ROWS)?,
        })
    } else {
        None
    };
    // Read the snapshot before connecting: a bad file is the user's to fix, whatever the database.
    let snapshot = args.diff.as_deref().map(read_snapshot).transpose()?;
    if let Some((path, old)) = &snapshot {
        if !diff::compares_everything(old.dbctl_schema_version) {
            ctx.out.warn(format_args!(
                "`{}` is a version {} snapshot: comments, triggers, deferrable and NOT VALID \
                 constraints, composite types, domains, functions and extensions are not \
                 compared (save a new snapshot to compare them)",
                path.display(),
                old.dbctl_schema_version
            ));
        }
    }

    let db = ctx.open(OpenMode::Existing)?;
    let mut conn = db.get()?;
    // The catalog, the counts and the migration state come from one read-only snapshot, so a
    // migration running meanwhile is seen whole or not at all.
    let found = read::in_snapshot(&mut conn, |conn, last| {
        read_and_report(
            ctx,
            conn,
            &args,
            snapshot.clone(),
            lint_settings.as_ref(),
            last,
        )
    })?;
    Ok(InspectReport {
        found,
        host: db.server(),
    })
}

impl Report for InspectReport {
    fn human(&self) -> String {
        match &self.found {
            Found::Schema(r) => r.human(),
            Found::Diff(r) => r.human(),
            Found::Lint(r) => r.human(),
        }
    }

    fn exit(&self) -> Exit {
        match &self.found {
            Found::Schema(r) => r.exit(),
            Found::Diff(r) => r.exit(),
            Found::Lint(r) => r.exit(),
        }
    }
}

/// The part of `run` that reads the database, inside one snapshot.
fn read_and_report(
    ctx: &Context,
    conn: &mut AnyConnection,
    args: &InspectArgs,
    snapshot: Option<(PathBuf, Schema)>,
    lint: Option<&lint::Settings>,
    last_attempt: bool,
) -> anyhow::Result<Found> {
    let started = std::time::Instant::now();
    let mut schema = read::read(
        conn,
        &ReadOptions {
            schemas: args.schemas.clone(),
        },
    )?;
    ctx.out.verbose(format_args!(
        "read {} tables, {} views from the catalog in {}",
        schema.tables.len(),
        schema.views.len(),
        crate::output::millis(started.elapsed())
    ));
    if !args.all {
        schema.tables.retain(|t| !schema::is_internal(&t.name));
        schema.views.retain(|v| !schema::is_internal(&v.name));
    }
    let detail = !args.tables.is_empty();

    if let Some((path, expected)) = snapshot {
        return Ok(Found::Diff(compare(&path, expected, schema, args)?));
    }
    if detail {
        select(&mut schema, &args.tables)?;
    }
    schema.row_counts = count_rows(conn, &mut schema, args, last_attempt)?;
    if let Some(settings) = lint {
        // The row counts (PostgreSQL's estimates, SQLite's count) tell which tables are large.
        return Ok(Found::Lint(lint::check(&schema, settings)));
    }
    if schema.row_counts == RowCounts::Exact {
        for t in schema.tables.iter().filter(|t| t.rows.is_none()) {
            ctx.out.warn(format_args!(
                "rows of {}.{} unknown: another session dropped the table while it was being \
                 counted",
                t.schema, t.name
            ));
        }
    }
    schema.migrations = Some(migration_state(ctx, conn, schema.backend)?);
    Ok(Found::Schema(Box::new(SchemaReport { schema, detail })))
}

/// `--diff`: the snapshot and the live schema through the same filters, then compared.
fn compare(
    path: &Path,
    mut expected: Schema,
    mut actual: Schema,
    args: &InspectArgs,
) -> anyhow::Result<diff::DiffReport> {
    if expected.backend != actual.backend {
        return Err(error::usage(format!(
            "`{}` is a {} snapshot and this database is {}: compare a schema with a snapshot \
             of the same backend",
            path.display(),
            expected.backend,
            actual.backend
        )));
    }
    if !args.all {
        expected.tables.retain(|t| !schema::is_internal(&t.name));
        expected.views.retain(|v| !schema::is_internal(&v.name));
    }
    if !args.tables.is_empty() {
        // A name found on neither side is a typo, not "no differences".
        if let Some(w) = args
            .tables
            .iter()
            .find(|w| !names_something(&expected, w) && !names_something(&actual, w))
        {
            return Err(error::usage(format!(
                "no table or view named `{w}` in the database or in `{}`",
                path.display()
            )));
        }
        keep_named(&mut expected, &args.tables);
        keep_named(&mut actual, &args.tables);
    }
    Ok(diff::compare(path, &expected, &actual))
}

/// Whether `wanted` names a table or view of `schema`.
fn names_something(schema: &Schema, wanted: &str) -> bool {
    schema
        .tables
        .iter()
        .any(|t| is_named(&t.schema, &t.name, wanted))
        || schema
            .views
            .iter()
            .any(|v| is_named(&v.schema, &v.name, wanted))
}

/// Keeps only the named tables and views; a name that matches nothing is a usage error (exit 2),
/// with the closest existing names as a hint. Names are matched here, in memory: they never reach
/// SQL.
fn select(schema: &mut Schema, wanted: &[String]) -> anyhow::Result<()> {
    for w in wanted {
        let found = schema
            .tables
            .iter()
            .any(|t| is_named(&t.schema, &t.name, w))
            || schema.views.iter().any(|v| is_named(&v.schema, &v.name, w));
        if !found {
            let mut hint: Vec<&str> = schema
                .tables
                .iter()
                .map(|t| t.name.as_str())
                .chain(schema.views.iter().map(|v| v.name.as_str()))
                .filter(|n| {
                    n.eq_ignore_ascii_case(w) || n.to_lowercase().contains(&w.to_lowercase())
                })
                .collect();
            hint.truncate(5);
            let hint = if hint.is_empty() {
                String::new()
            } else {
                format!(" (did you mean {}?)", hint.join(", "))
            };
            return Err(error::usage(format!(
                "no table or view named `{w}` in {}{hint}",
                schema.schemas.join(", ")
            )));
        }
    }
    keep_named(schema, wanted);
    Ok(())
}

/// Whether `wanted` names the object `schema.name` (as `name` or `schema.name`).
fn is_named(schema: &str, name: &str, wanted: &str) -> bool {
    wanted == name
        || wanted
            .strip_prefix(schema)
            .and_then(|r| r.strip_prefix('.'))
            == Some(name)
}

/// Keeps the tables and views named in `wanted`.
fn keep_named(schema: &mut Schema, wanted: &[String]) {
    schema
        .tables
        .retain(|t| wanted.iter().any(|w| is_named(&t.schema, &t.name, w)));
    schema
        .views
        .retain(|v| wanted.iter().any(|w| is_named(&v.schema, &v.name, w)));
}

/// Fills the row counts the flags ask for and says how they were obtained.
fn count_rows(
    conn: &mut AnyConnection,
    schema: &mut Schema,
    args: &InspectArgs,
    settle: bool,
) -> anyhow::Result<RowCounts> {
    if args.no_rows {
        for t in &mut schema.tables {
            t.rows = None;
        }
        return Ok(RowCounts::None);
    }
    if !args.exact && read::default_counts_are_estimates(conn) {
        return Ok(RowCounts::Estimate);
    }
    let mut tables: Vec<&mut schema::Table> = schema.tables.iter_mut().collect();
    read::count_rows(conn, &mut tables, settle)?;
    Ok(RowCounts::Exact)
}

/// The migration state line, from the migration engine: the same folder rules (per-backend
/// subfolders, strict names) and the same states as `migrate status`. A folder that is missing or
/// cannot be read leaves the folder-based counts unknown, with a warning, rather than failing.
fn migration_state(
    ctx: &Context,
    conn: &mut AnyConnection,
    backend: db::Backend,
) -> anyhow::Result<MigrationState> {
    let dir = ctx.config.migrations_dir().0;
    let summary = crate::migrate::state_summary(conn, &dir, backend)?;
    let mut state = MigrationState {
        applied: summary.applied as u64,
        pending: None,
        modified: None,
        missing: None,
        last_applied: summary.last_applied,
    };
    match summary.folder {
        None => {}
        Some(Ok(counts)) => {
            state.pending = Some(counts.pending as u64);
            state.modified = Some(counts.modified as u64);
            state.missing = Some(counts.missing as u64);
        }
        Some(Err(err)) => ctx.out.warn(format_args!(
            "migration state unknown: {}",
            error::render(&err).trim_start_matches("error: ")
        )),
    }
    Ok(state)
}

/// Reads a snapshot written by `inspect --format json`; a missing or malformed file is exit 2.
fn read_snapshot(path: &Path) -> anyhow::Result<(PathBuf, Schema)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| error::usage(format!("cannot read snapshot `{}`: {e}", path.display())))?;
    let mut schema: Schema = serde_json::from_str(&text).map_err(|e| {
        error::usage(format!(
            "`{}` is not a schema snapshot from `dbctl inspect --format json`: {e}",
            path.display()
        ))
    })?;
    // What a later version added has a default, so an older snapshot reads as one that has none
    // of it; a newer one may mean something this dbctl does not know.
    let version = schema.dbctl_schema_version;
    if !(schema::OLDEST_MODEL_VERSION..=schema::MODEL_VERSION).contains(&version) {
        return Err(error::usage(format!(
            "`{}` has dbctl_schema_version {version}; this dbctl reads versions {} to {}",
            path.display(),
            schema::OLDEST_MODEL_VERSION,
            schema::MODEL_VERSION
        )));
    }
    schema.sort();
    Ok((path.to_path_buf(), schema))
}
