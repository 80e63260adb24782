//! `dbctl migrate up/down/redo/status`: the command line over the migration engine in
//! `migrate/`, and how its reports look.

use std::cell::RefCell;
use std::time::Duration;

use clap::Subcommand;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::commands::Context;
use crate::db::OpenMode;
use crate::error::Exit;
use crate::migrate::{
    self, Action, DownTarget, Engine, Options, RunReport, StatusReport, UpTarget,
};
use crate::output::{self, Output, Report};

/// Apply, revert, redo and list migrations (diesel's folder format and bookkeeping).
///
/// Each migration runs in its own transaction with its bookkeeping rows, unless its
/// metadata.toml says `run_in_transaction = false`. Concurrent runs wait for each other.
///
/// Examples:
///   dbctl migrate up
///   dbctl migrate down --step 2
///   dbctl migrate redo
///   dbctl migrate status --check
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct MigrateArgs {
    #[command(subcommand)]
    command: MigrateCommand,
}

#[derive(Subcommand, Debug)]
enum MigrateCommand {
    Up(UpArgs),
    Down(DownArgs),
    Redo(RedoArgs),
    Status(StatusArgs),
}

/// Options shared by the commands that change the schema.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Print the plan and the SQL that would run; change nothing
    #[arg(long)]
    dry_run: bool,

    /// Seconds to wait for another migration run on the same database to finish
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = crate::config::numbers::lock_timeout_flag)]
    lock_timeout: Duration,

    /// Afterwards, exit 4 with a diff instead of rewriting diesel.toml's [print_schema] `file`
    #[arg(long)]
    locked_schema: bool,
    /// What applies and records the migrations: dbctl's engine, or diesel_migrations' own
    /// MigrationHarness as diesel_cli runs it (no dry run, no checksums; see docs/migrate.md)
    #[arg(long, value_name = "ENGINE", value_enum, default_value = "dbctl")]
    engine: EngineArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum EngineArg {
    /// dbctl's engine: run lock, checksums, the failing line and statement
    Dbctl,
    /// diesel_migrations' MigrationHarness (dbctl still holds its run lock around it)
    Diesel,
}

/// Apply pending migrations, each in its own transaction.
///
/// Refuses (exit 4) when an applied migration's up.sql changed, unless --allow-modified.
/// Applies out-of-order migrations (older than one already applied) with a warning,
/// unless --strict.
///
/// Examples:
///   dbctl migrate up
///   dbctl migrate up --step 1
///   dbctl migrate up --to 20240131120000 --dry-run
///   dbctl migrate up --strict --format json
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
struct UpArgs {
    /// Apply pending migrations up to and including this version
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,

    /// Apply at most N pending migrations
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    step: Option<u64>,

    /// Refuse to apply a migration older than one already applied (exit 4)
    #[arg(long)]
    strict: bool,

    /// Go on although an applied migration's up.sql changed since it was applied
    #[arg(long)]
    allow_modified: bool,

    #[command(flatten)]
    run: RunArgs,
}

/// Revert applied migrations, newest application first (the last one by default).
///
/// Nothing is touched when one of the migrations to revert has no down.sql.
///
/// Examples:
///   dbctl migrate down
///   dbctl migrate down --step 3
///   dbctl migrate down --to 20240101000000   (that one stays applied)
///   dbctl migrate down --all --dry-run
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
struct DownArgs {
    /// Revert the last N applied migrations
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with_all = ["to", "all"])]
    step: Option<u64>,

    /// Revert every migration with a greater version; this one stays applied
    #[arg(long, value_name = "VERSION", conflicts_with = "all")]
    to: Option<String>,

    /// Revert every applied migration
    #[arg(long)]
    all: bool,

    #[command(flatten)]
    run: RunArgs,
}

/// Revert the last migrations and apply them again: the reversibility check for CI.
///
/// Examples:
///   dbctl migrate redo
///   dbctl migrate redo --step 3
///   dbctl migrate redo --all
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
struct RedoArgs {
    /// Redo the last N applied migrations
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "all")]
    step: Option<u64>,

    /// Redo every applied migration
    #[arg(long)]
    all: bool,

    /// Go on although an applied migration's up.sql changed since it was applied
    #[arg(long)]
    allow_modified: bool,

    #[command(flatten)]
    run: RunArgs,
}

/// List every migration known from the folder or the database, with its state.
///
/// States: applied, pending, modified (up.sql changed since it was applied), missing
/// (applied but no longer in the folder). Pending migrations older than an applied one
/// are flagged out of order.
///
/// Examples:
///   dbctl migrate status
///   dbctl migrate status --check          (exit 4 if anything is pending, modified or missing)
///   dbctl migrate status --format json
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
struct StatusArgs {
    /// Exit 4 when any migration is pending, modified or missing
    #[arg(long)]
    check: bool,
}

/// What `migrate` printed: a run or a status.
#[derive(Serialize, Debug)]
#[serde(untagged)]
pub(crate) enum MigrateReport {
    Run(RunOutput),
    Status(StatusOutput),
}

#[derive(Serialize, Debug)]
pub(crate) struct RunOutput {
    /// The server that answered (`host:port`; for a URL naming several, the one libpq chose);
    /// absent for SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(flatten)]
    run: RunReport,
    /// Show every step (`-v`, dry runs), not only the summary.
    #[serde(skip)]
    list_steps: bool,
    /// What "nothing to do" means for the target asked for.
    #[serde(skip)]
    nothing: String,
}

#[derive(Serialize, Debug)]
pub(crate) struct StatusOutput {
    /// The server that answered (`host:port`; for a URL naming several, the one libpq chose);
    /// absent for SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(flatten)]
    status: StatusReport,
    /// Whether `--check` was given.
    check: bool,
    /// Whether the check passed (nothing pending, modified or missing).
    ok: bool,
}

pub(crate) fn run(ctx: &Context, args: MigrateArgs) -> anyhow::Result<MigrateReport> {
    let (dir, source) = ctx.config.migrations_dir();
    ctx.out.verbose(format_args!(
        "migrations folder {} ({source})",
        dir.display()
    ));
    let nothing = match &args.command {
        MigrateCommand::Up(UpArgs { to: Some(v), .. }) => {
            format!("Nothing to apply: every migration up to {v} is applied.")
        }
        MigrateCommand::Up(_) => "Nothing to apply: every migration is applied.".to_string(),
        MigrateCommand::Down(DownArgs { to: Some(v), .. }) => {
            format!("Nothing to revert: no applied migration is newer than {v}.")
        }
        _ => "Nothing to revert: no migration is applied.".to_string(),
    };
    let locked_schema = match &args.command {
        MigrateCommand::Up(UpArgs { run, .. })
        | MigrateCommand::Down(DownArgs { run, .. })
        | MigrateCommand::Redo(RedoArgs { run, .. }) => run.locked_schema,
        MigrateCommand::Status(_) => false,
    };
    let (action, opts) = match args.command {
        MigrateCommand::Status(a) => {
            let db = ctx.open(OpenMode::Existing)?;
            let status = migrate::status(&Progress::new(ctx.out), &db, &dir)?;
            let c = &status.counts;
            let ok = c.pending == 0 && c.modified == 0 && c.missing == 0;
            return Ok(MigrateReport::Status(StatusOutput {
                host: db.server(),
                status,
                check: a.check,
                ok,
            }));
        }
        MigrateCommand::Up(a) => (
            Action::Up(UpTarget {
                to: a.to.map(|v| v.replace('-', "")),
                step: a.step.map(to_usize),
            }),
            options(&a.run, a.strict, a.allow_modified)?,
        ),
        MigrateCommand::Down(a) => (
            Action::Down(down_target(a.step, a.to, a.all)),
            options(&a.run, false, false)?,
        ),
        MigrateCommand::Redo(a) => (
            Action::Redo(down_target(a.step, None, a.all)),
            options(&a.run, false, a.allow_modified)?,
        ),
    };
    let db = ctx.open(OpenMode::Existing)?;
    let host = db.server();
    // A dry run only reads, so it may look at a standby; anything else stops before the lock.
    if !opts.dry_run {
        crate::db::topology::require_writable(&db)?;
    }
    // diesel.toml's [print_schema] files, rewritten after the run as diesel_cli does.
    let schema_files = if opts.dry_run {
        Vec::new()
    } else {
        super::print_schema::file_sections(ctx, db.backend(), locked_schema)?
    };
    let run = migrate::execute(&Progress::new(ctx.out), db, &dir, &action, &opts)?;
    super::print_schema::regenerate(ctx, &schema_files, locked_schema)?;
    Ok(MigrateReport::Run(RunOutput {
        host,
        list_steps: ctx.out.is_verbose() || run.dry_run,
        run,
        nothing,
    }))
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn down_target(step: Option<u64>, to: Option<String>, all: bool) -> DownTarget {
    match (step, to, all) {
        (_, _, true) => DownTarget::All,
        (_, Some(v), _) => DownTarget::To(v.replace('-', "")),
        (Some(n), _, _) => DownTarget::Step(to_usize(n)),
        _ => DownTarget::Step(1),
    }
}

fn options(run: &RunArgs, strict: bool, allow_modified: bool) -> anyhow::Result<Options> {
    Ok(Options {
        dry_run: run.dry_run,
        strict,
        allow_modified,
        lock_timeout: run.lock_timeout,
        engine: match run.engine {
            EngineArg::Dbctl => Engine::Dbctl,
            EngineArg::Diesel => Engine::Diesel,
        },
    })
}

impl Report for MigrateReport {
    fn human(&self) -> String {
        match self {
            MigrateReport::Run(r) => human_run(r),
            MigrateReport::Status(s) => human_status(s),
        }
    }

    fn exit(&self) -> Exit {
        match self {
            MigrateReport::Status(s) if s.check && !s.ok => Exit::Check,
            _ => Exit::Success,
        }
    }
}

fn human_run(o: &RunOutput) -> String {
    let r = &o.run;
    if r.steps.is_empty() {
        return o.nothing.clone();
    }
    let mut text = String::new();
    if r.dry_run {
        text.push_str("Dry run: nothing was changed. Plan:\n");
    }
    if o.list_steps {
        text.push_str(&steps_table(r).to_string());
        text.push('\n');
    }
    if r.dry_run {
        for s in &r.steps {
            let file = match s.direction {
                migrate::Direction::Up => "up.sql",
                migrate::Direction::Down => "down.sql",
            };
            text.push_str(&format!(
                "\n-- {}_{} ({file})\n{}\n",
                s.version,
                s.name,
                s.sql.as_deref().unwrap_or_default().trim_end()
            ));
        }
        return text.trim_end().to_string();
    }
    text.push_str(&summary(r));
    text
}

/// Every step, one row each (`-v` and dry runs).
fn steps_table(r: &RunReport) -> comfy_table::Table {
    let mut table = output::table(["", "version", "name", "transaction", "duration"]);
    for s in &r.steps {
        table.add_row(vec![
            direction(s).to_string(),
            s.version.clone(),
            s.name.clone(),
            if s.transaction { "yes" } else { "no" }.to_string(),
            s.duration_ms
                .map_or("-".to_string(), |ms| format!("{ms:.1} ms")),
        ]);
    }
    table
}

fn direction(s: &migrate::Step) -> &'static str {
    match s.direction {
        migrate::Direction::Up => "up",
        migrate::Direction::Down => "down",
    }
}

/// How many, how long, and which: every one when there are at most 3, else the first, the last
/// and the 3 slowest (the full list is `-v` or `--format json`).
fn summary(r: &RunReport) -> String {
    let (verb, n) = match r.command {
        "down" => ("Reverted", r.steps.len()),
        "redo" => ("Reverted and re-applied", r.steps.len() / 2),
        _ => ("Applied", r.steps.len()),
    };
    let label = |s: &migrate::Step| {
        let ms = s
            .duration_ms
            .map_or(String::new(), |ms| format!(" ({})", ms_text(ms)));
        let dir = if r.command == "redo" {
            format!("{} ", direction(s))
        } else {
            String::new()
        };
        format!("{dir}{}_{}{ms}", s.version, s.name)
    };
    let mut text = format!(
        "{verb} {n} migration{}{} in {}",
        if n == 1 { "" } else { "s" },
        match r.engine {
            Engine::Dbctl => "",
            Engine::Diesel => " with diesel_migrations' harness",
        },
        ms_text(r.duration_ms)
    );
    if r.steps.len() <= 3 {
        let all: Vec<String> = r.steps.iter().map(label).collect();
        text.push_str(&format!(": {}.", all.join(", ")));
        return text;
    }
    let (first, last) = (&r.steps[0], &r.steps[r.steps.len() - 1]);
    text.push_str(&format!(
        ", from {}_{} to {}_{}.",
        first.version, first.name, last.version, last.name
    ));
    let mut slowest: Vec<&migrate::Step> = r.steps.iter().collect();
    slowest.sort_by(|a, b| {
        b.duration_ms
            .unwrap_or(0.0)
            .total_cmp(&a.duration_ms.unwrap_or(0.0))
    });
    let top: Vec<String> = slowest.into_iter().take(3).map(label).collect();
    text.push_str(&format!(
        "\nSlowest: {}. Every migration: -v or --format json.",
        top.join(", ")
    ));
    text
}

fn ms_text(ms: f64) -> String {
    output::millis(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
}

fn human_status(s: &StatusOutput) -> String {
    if s.status.migrations.is_empty() {
        return format!("No migrations in {}.", s.status.migrations_dir);
    }
    let mut table = output::table(["version", "name", "state", "applied at", "duration"]);
    for r in &s.status.migrations {
        let mut state = r.state.as_str().to_string();
        if r.out_of_order {
            state.push_str(" (out of order)");
        }
        table.add_row(vec![
            r.version.clone(),
            r.name.clone(),
            state,
            r.applied_at.clone().unwrap_or_default(),
            r.duration_ms
                .map_or(String::new(), |ms| format!("{ms:.1} ms")),
        ]);
    }
    let st = &s.status.counts;
    let mut summary = format!("{} applied, {} pending", st.applied, st.pending);
    if st.modified > 0 {
        summary.push_str(&format!(", {} modified", st.modified));
    }
    if st.missing > 0 {
        summary.push_str(&format!(", {} missing", st.missing));
    }
    format!("{table}\n{summary}.")
}

/// A migration that takes this long gets its own progress line even without `-v`.
const SLOW_STEP: Duration = Duration::from_secs(1);

/// The migration engine's events on the terminal: warnings and waits on stderr, a bar while
/// migrations run on a terminal, and otherwise a line per migration with `-v` (or per slow one),
/// so that a long CI run shows where it is. `init` uses it too.
pub(crate) struct Progress<'a> {
    out: &'a Output,
    bar: RefCell<Option<ProgressBar>>,
}

impl<'a> Progress<'a> {
    pub(crate) fn new(out: &'a Output) -> Progress<'a> {
        Progress {
            out,
            bar: RefCell::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            f(bar);
        }
    }
}

impl migrate::Events for Progress<'_> {
    fn warn(&self, msg: &str) {
        self.out.warn(msg);
    }

    fn waiting(&self, msg: &str) {
        self.out.info(msg);
    }

    fn detail(&self, msg: &str) {
        self.out.verbose(msg);
    }

    fn steps_started(&self, total: usize) {
        let bar = self
            .out
            .progress_bar(total as u64, "{spinner} [{bar:30}] {pos}/{len} {wide_msg}");
        *self.bar.borrow_mut() = Some(bar);
    }

    fn step_started(&self, label: &str) {
        let label = label.to_string();
        self.with_bar(|bar| bar.set_message(label));
    }

    fn step_finished(&self, label: &str, direction: migrate::Direction, took: Option<Duration>) {
        self.with_bar(|bar| bar.inc(1));
        let Some(took) = took else {
            self.out.verbose(format_args!(
                "{label} was already done by another run: skipped"
            ));
            return;
        };
        if self.out.writes_progress_lines() && (self.out.is_verbose() || took >= SLOW_STEP) {
            let verb = match direction {
                migrate::Direction::Up => "applied",
                migrate::Direction::Down => "reverted",
            };
            self.out
                .info(format_args!("{verb} {label} ({})", output::millis(took)));
        }
    }

    fn steps_ended(&self, ok: bool) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            if ok {
                bar.finish_and_clear();
            } else {
                bar.abandon();
            }
        }
    }
}
