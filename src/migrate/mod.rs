//! The migration engine: reading diesel-format folders ([`source`]), deciding what to do
//! ([`plan`]), doing it ([`run`]), under a run lock ([`lock`], or [`lease`] through a
//! transaction-pooling proxy) with diesel's and dbctl's bookkeeping tables ([`bookkeeping`], whose
//! per-backend files hold every piece of backend-specific SQL). With `--engine diesel` the work
//! under the lock is handed to diesel_migrations' own `MigrationHarness` instead ([`harness`]).
//!
//! The surface the commands use: [`execute`] and [`status`] (which report progress and warnings
//! to an [`Events`] sink and print nothing), [`state_summary`] (what `inspect` shows), the plan
//! types ([`Action`], [`Options`], [`UpTarget`], [`DownTarget`]) and the reports ([`RunReport`],
//! [`Step`], [`StatusReport`], [`Counts`], [`Summary`]).
//!
//! Every path that changes the schema (`init`, `migrate up/down/redo`) goes through [`execute`]:
//! take the lock, read what is applied *after* taking it (a run that waited finds the work done),
//! check, apply or revert one migration at a time, release. Dry runs and `status` read without
//! locking and change nothing, not even the bookkeeping tables.

mod bookkeeping;
mod harness;
mod lease;
mod lock;
mod plan;
mod run;
mod source;
pub(crate) mod split;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::db::{AnyConnection, Backend, Database, SqliteTarget};
use crate::error::{self, Exit};
use bookkeeping::{AppliedRow, Book};
use lease::Lease;
use source::{Migration, Source, Unwritten};

pub(crate) use bookkeeping::DIESEL_TABLE;
pub(crate) use harness::Engine;
pub(crate) use lease::DEFAULT_EXPIRY as DEFAULT_LOCK_EXPIRY;
pub(crate) use plan::{DownTarget, State, StatusRow, UpTarget};
pub(crate) use run::Direction;
pub(crate) use source::{parse_folder_name, read_folder, UP_PLACEHOLDER};

/// Where the engine reports what happens while it works; it prints nothing itself. The command
/// decides what reaches the terminal (and how: a bar, lines, nothing).
pub(crate) trait Events {
    /// Something worth a warning (also kept in the report's `warnings`).
    fn warn(&self, msg: &str);
    /// Something worth saying while the run waits (for another run's lock).
    fn waiting(&self, msg: &str);
    /// A detail for `-v`.
    fn detail(&self, msg: &str);
    /// `total` migrations are about to be applied or reverted.
    fn steps_started(&self, total: usize);
    /// One of them starts.
    fn step_started(&self, label: &str);
    /// One of them is done (`took: None` when another run had done it already).
    fn step_finished(&self, label: &str, direction: Direction, took: Option<Duration>);
    /// The steps are over: all done (`ok`), or stopped by a failure.
    fn steps_ended(&self, ok: bool);
}

/// The warning for migrations applied older than one already applied (`late`: their labels).
fn out_of_order(late: &[String]) -> String {
    format!(
        "out of order: {} {} older than a migration already applied",
        late.join(", "),
        if late.len() == 1 { "is" } else { "are" }
    )
}

/// Events nobody watches: a run whose warnings are read from its report afterwards (the scratch
/// databases of `revision --autogenerate`).
pub(crate) struct Unwatched;

impl Events for Unwatched {
    fn warn(&self, _: &str) {}
    fn waiting(&self, _: &str) {}
    fn detail(&self, _: &str) {}
    fn steps_started(&self, _: usize) {}
    fn step_started(&self, _: &str) {}
    fn step_finished(&self, _: &str, _: Direction, _: Option<Duration>) {}
    fn steps_ended(&self, _: bool) {}
}

/// The default for `--lock-timeout`.
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// What to do.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Up(UpTarget),
    Down(DownTarget),
    /// Revert the last migrations and apply them again.
    Redo(DownTarget),
    /// Only make sure the bookkeeping tables exist (`init --no-migrate`).
    Prepare,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Up(_) => "up",
            Action::Down(_) => "down",
            Action::Redo(_) => "redo",
            Action::Prepare => "prepare",
        }
    }
}

/// How to do it.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) dry_run: bool,
    /// Refuse to apply a migration older than one already applied.
    pub(crate) strict: bool,
    /// Go on although an applied migration's up.sql changed.
    pub(crate) allow_modified: bool,
    pub(crate) lock_timeout: Duration,
    /// Which code applies and records the migrations (see [`harness`]).
    pub(crate) engine: Engine,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            strict: false,
            allow_modified: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            engine: Engine::Dbctl,
        }
    }
}

/// One migration applied or reverted (or, in a dry run, that would be).
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Step {
    pub(crate) version: String,
    pub(crate) name: String,
    pub(crate) direction: Direction,
    /// Whether it runs in a transaction (`run_in_transaction` in metadata.toml).
    pub(crate) transaction: bool,
    /// Wall time including the bookkeeping and the commit; absent in a dry run.
    pub(crate) duration_ms: Option<f64>,
    /// The SQL that would run (dry runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sql: Option<String>,
}

/// What a run did.
#[derive(Serialize, Debug)]
pub(crate) struct RunReport {
    pub(crate) command: &'static str,
    /// Which code applied and recorded the migrations (`--engine`).
    pub(crate) engine: Engine,
    pub(crate) dry_run: bool,
    /// The folder read (the per-backend one when there are several).
    pub(crate) migrations_dir: String,
    pub(crate) steps: Vec<Step>,
    pub(crate) warnings: Vec<String>,
    /// Whether `__diesel_schema_migrations` had to be created.
    pub(crate) bookkeeping_created: bool,
    /// How long the run waited for another run's lock.
    pub(crate) lock_wait_ms: f64,
    pub(crate) duration_ms: f64,
}

/// Milliseconds, to the microsecond, as the reports and the bookkeeping keep them.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// `migrate status`.
#[derive(Serialize, Debug)]
pub(crate) struct StatusReport {
    pub(crate) migrations_dir: String,
    pub(crate) migrations: Vec<StatusRow>,
    #[serde(flatten)]
    pub(crate) counts: Counts,
    pub(crate) warnings: Vec<String>,
}

/// How many migrations are in each state: the one count `status` and `inspect` share.
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) applied: usize,
    pub(crate) pending: usize,
    pub(crate) modified: usize,
    pub(crate) missing: usize,
    pub(crate) out_of_order: usize,
}

impl Counts {
    fn of(rows: &[StatusRow]) -> Counts {
        let count = |s: State| rows.iter().filter(|r| r.state == s).count();
        Counts {
            applied: count(State::Applied),
            pending: count(State::Pending),
            modified: count(State::Modified),
            missing: count(State::Missing),
            out_of_order: rows.iter().filter(|r| r.out_of_order).count(),
        }
    }
}

/// The migration state in short, for `inspect`: what the bookkeeping tables record, and, when
/// the migrations folder exists, how it compares.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Migrations recorded as applied (whether or not the folder has them).
    pub(crate) applied: usize,
    /// The highest applied version.
    pub(crate) last_applied: Option<String>,
    /// `None` when there is no migrations folder; an error when it cannot be read.
    pub(crate) folder: Option<anyhow::Result<Counts>>,
}

fn sqlite_file(db: &Database) -> Option<PathBuf> {
    match db.url().sqlite_target() {
        Some(SqliteTarget::File(path)) => Some(path.clone()),
        _ => None,
    }
}

fn load_source(events: &dyn Events, dir: &Path, backend: Backend) -> anyhow::Result<Source> {
    let source = source::load(dir, backend)?;
    events.detail(&format!(
        "{} migrations in {}",
        source.migrations.len(),
        source.dir.display()
    ));
    for w in &source.warnings {
        events.warn(w);
    }
    Ok(source)
}

/// `migrate status`: reads only.
pub(crate) fn status(
    events: &dyn Events,
    db: &Database,
    dir: &Path,
) -> anyhow::Result<StatusReport> {
    let source = load_source(events, dir, db.backend())?;
    let mut conn = db.get()?;
    let rows = plan::status(&source, &applied_rows(&mut conn)?);
    Ok(StatusReport {
        migrations_dir: source.dir.display().to_string(),
        counts: Counts::of(&rows),
        migrations: rows,
        warnings: source.warnings,
    })
}

/// The migration state in short (see [`Summary`]): reads only. A folder that cannot be read is
/// not an error here, only an unknown comparison.
pub(crate) fn state_summary(
    conn: &mut AnyConnection,
    dir: &Path,
    backend: Backend,
) -> anyhow::Result<Summary> {
    let rows = applied_rows(conn)?;
    let last_applied = rows
        .iter()
        .map(|r| r.version.as_str())
        .max()
        .map(str::to_string);
    let folder = dir.is_dir().then(|| {
        source::load(dir, backend).map(|source| Counts::of(&plan::status(&source, &rows)))
    });
    Ok(Summary {
        applied: rows.len(),
        last_applied,
        folder,
    })
}

/// What the bookkeeping tables record, without reading any folder.
fn applied_rows(conn: &mut AnyConnection) -> anyhow::Result<Vec<AppliedRow>> {
    Book::locate(conn)?.read(conn)
}

/// Runs `action`: the one code path for `init` and `migrate up/down/redo`. Takes the database by
/// value because the SQLite run lock must be released only after its connections are closed.
pub(crate) fn execute(
    events: &dyn Events,
    db: Database,
    dir: &Path,
    action: &Action,
    opts: &Options,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let source = match action {
        Action::Prepare => None,
        _ => Some(load_source(events, dir, db.backend())?),
    };
    let mut report = RunReport {
        command: action.name(),
        engine: opts.engine,
        dry_run: opts.dry_run,
        migrations_dir: source.as_ref().map_or_else(
            || dir.display().to_string(),
            |s| s.dir.display().to_string(),
        ),
        steps: Vec::new(),
        warnings: source
            .as_ref()
            .map(|s| s.warnings.clone())
            .unwrap_or_default(),
        bookkeeping_created: false,
        lock_wait_ms: 0.0,
        duration_ms: 0.0,
    };
    if opts.engine == Engine::Diesel {
        harness::refuse(&db, action, opts)?;
    }
    let mut conn = db.get()?;
    if opts.dry_run {
        let applied = applied_rows(&mut conn)?;
        let source = source.as_ref().context("a dry run needs the migrations")?;
        let steps = decide(events, source, &applied, action, opts, &mut report.warnings)?;
        report.steps = steps
            .into_iter()
            .map(|(m, d)| step(m, d, None, Some(run::sql_of(m, d))))
            .collect();
        report.duration_ms = millis(started.elapsed());
        return Ok(report);
    }

    if db.pooling().on {
        return pooled_run(
            events,
            &db,
            conn,
            source.as_ref(),
            action,
            opts,
            report,
            started,
        );
    }
    let mut lock = bookkeeping::for_connection(&conn).run_lock(sqlite_file(&db).as_deref())?;
    let waited = lock::acquire(&mut conn, lock.as_mut(), opts.lock_timeout, |holder| {
        let holder = holder.map_or(String::new(), |h| format!(" ({h})"));
        events.waiting(&format!(
            "waiting for another migration run on this database to finish{holder} ..."
        ))
    })?;
    report.lock_wait_ms = millis(waited);
    let result = match (opts.engine, source.as_ref()) {
        (Engine::Diesel, Some(source)) => {
            diesel_locked(events, &mut conn, source, action, opts, &mut report)
        }
        _ => locked(
            events,
            &mut conn,
            source.as_ref(),
            action,
            opts,
            &mut report,
            None,
        ),
    };
    let released = lock.release(&mut conn);
    if released.is_ok() {
        crate::interrupt::undone("the migration lock was released");
    }
    // Close every connection before the SQLite file lock goes (see RunLock::release).
    drop(conn);
    drop(db);
    drop(lock);
    result?;
    released?;
    report.duration_ms = millis(started.elapsed());
    Ok(report)
}

/// A run in transaction-pooling mode (PgBouncer): a lease row instead of the session lock, and
/// each transactional migration guarded inside its own transaction (see [`lease`]).
#[allow(clippy::too_many_arguments)]
fn pooled_run(
    events: &dyn Events,
    db: &Database,
    mut conn: crate::db::Pooled,
    source: Option<&Source>,
    action: &Action,
    opts: &Options,
    mut report: RunReport,
    started: Instant,
) -> anyhow::Result<RunReport> {
    let prefix = Book::locate(&mut conn)?.prefix().to_string();
    let table = lease::ensure_table(&mut conn, &prefix)?;
    let (lease, waited) = lease::acquire(
        &mut conn,
        table,
        db.lock_expiry(),
        opts.lock_timeout,
        || db.dedicated(),
        |holder| {
            events.waiting(&format!(
 "waiting for another migration run on this database to finish ({}, last heartbeat {:.0}s ago; its lock expires {:.0}s after its last heartbeat) ...",
                holder.owner,
                holder.heartbeat_age_s,
                db.lock_expiry().as_secs_f64()
            ))
        },
    )?;
    report.lock_wait_ms = millis(waited);
    let result = locked(
        events,
        &mut conn,
        source,
        action,
        opts,
        &mut report,
        Some(&lease),
    );
    let released = lease.release(&mut conn);
    if released.is_ok() {
        crate::interrupt::undone("the migration lock was released");
    }
    result?;
    released?;
    report.duration_ms = millis(started.elapsed());
    Ok(report)
}

/// The part of an `--engine diesel` run that happens under the lock: after any run through a
/// pooler is over, diesel's harness does the work (see [`harness`]).
fn diesel_locked(
    events: &dyn Events,
    conn: &mut AnyConnection,
    source: &Source,
    action: &Action,
    opts: &Options,
    report: &mut RunReport,
) -> anyhow::Result<()> {
    let book = Book::locate(conn)?;
    let waited =
        book.sql()
            .wait_for_pooled_runs(conn, book.prefix(), opts.lock_timeout, &mut |owner| {
                events.waiting(&format!(
                    "waiting for a migration run through a pooler ({owner}) to finish ..."
                ))
            })?;
    let book = if waited { Book::locate(conn)? } else { book };
    harness::locked(events, conn, &book, source, action, report)
}

/// The part of a run that happens under the lock.
fn locked(
    events: &dyn Events,
    conn: &mut AnyConnection,
    source: Option<&Source>,
    action: &Action,
    opts: &Options,
    report: &mut RunReport,
    lease: Option<&Lease>,
) -> anyhow::Result<()> {
    let mut book = Book::locate(conn)?;
    match lease {
        Some(lease) => {
            let (table, owner) = lease.row();
            book.set_lease(table, owner);
        }
        None => {
            let waited = book.sql().wait_for_pooled_runs(
                conn,
                book.prefix(),
                opts.lock_timeout,
                &mut |owner| {
                    events.waiting(&format!(
                        "waiting for a migration run through a pooler ({owner}) to finish ..."
                    ))
                },
            )?;
            if waited {
                // The pooled run may have created the bookkeeping tables meanwhile.
                book = Book::locate(conn)?;
            }
        }
    }
    report.bookkeeping_created = book.ensure(conn)?;
    let Some(source) = source else {
        return Ok(());
    };
    let applied = book.read(conn)?;
    let steps = decide(events, source, &applied, action, opts, &mut report.warnings)?;
    if steps.is_empty() {
        return Ok(());
    }
    let session = book.begin_session(conn)?;
    events.steps_started(steps.len());
    let result = run_steps(events, conn, &book, &steps, report, lease);
    events.steps_ended(result.is_ok());
    let ended = book.end_session(conn, &session);
    result?;
    ended
}

fn run_steps(
    events: &dyn Events,
    conn: &mut AnyConnection,
    book: &Book,
    steps: &[(&Migration, Direction)],
    report: &mut RunReport,
    lease: Option<&Lease>,
) -> anyhow::Result<()> {
    for (m, direction) in steps {
        let label = m.label();
        crate::interrupt::check().map_err(|err| {
            err.context(format!(
                "stopped before {} {label}: nothing of it ran; those before it stay done",
                run::verb(*direction)
            ))
        })?;
        events.step_started(&label);
        if let Some(lease) = lease {
            // A transactional migration checks inside its own transaction; one outside a
            // transaction asks first.
            if lease.is_lost() || (!m.run_in_transaction && !lease.still_ours(conn)?) {
                return Err(lease::taken_over(&label));
            }
        }
        let started = Instant::now();
        let done = match direction {
            Direction::Up => run::apply(conn, book, m),
            Direction::Down => run::revert(conn, book, m),
        }?;
        let took = done.map(|_| started.elapsed());
        events.step_finished(&label, *direction, took);
        if let Some(took) = took {
            report
                .steps
                .push(step(m, *direction, Some(millis(took)), None));
        }
    }
    Ok(())
}

fn step(m: &Migration, direction: Direction, ms: Option<f64>, sql: Option<String>) -> Step {
    Step {
        version: m.version.clone(),
        name: m.name.clone(),
        direction,
        transaction: m.run_in_transaction,
        duration_ms: ms,
        sql,
    }
}

/// The ordered steps for `action`, after every check that must pass before anything is touched:
/// an up.sql with no bytes at all (refused by diesel_cli too) or still holding `dbctl revision`'s
/// placeholder is refused (exit 2); one holding only comments or white space runs as a no-op and is
/// recorded.
fn decide<'a>(
    events: &dyn Events,
    source: &'a Source,
    applied: &[AppliedRow],
    action: &Action,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<(&'a Migration, Direction)>> {
    let steps = plan_steps(events, source, applied, action, opts, warnings)?;
    check_steps(source, &steps)?;
    Ok(steps)
}

/// The checks on the files of `steps`, whichever engine runs them: an up.sql not written yet is
/// refused, and so is transaction control in a migration that runs in a transaction (exit 2).
fn check_steps(source: &Source, steps: &[(&Migration, Direction)]) -> anyhow::Result<()> {
    let unwritten: Vec<String> = steps
        .iter()
        .filter(|(_, d)| *d == Direction::Up)
        .filter_map(|(m, _)| {
            let why = match m.unwritten? {
                Unwritten::Empty => "is an empty file",
                Unwritten::Placeholder => "still holds only the placeholder `dbctl revision` wrote",
            };
            Some(format!("{} {why}", m.up_path().display()))
        })
        .collect();
    if !unwritten.is_empty() {
        return Err(error::usage(format!(
            "refusing to apply an unwritten migration: {} (write its SQL, or a comment saying why \
             this backend needs none; or delete the folder); no migration was applied",
            unwritten.join(", ")
        )));
    }
    for (m, direction) in steps {
        if !m.run_in_transaction {
            continue;
        }
        let (path, sql) = match direction {
            Direction::Up => (m.up_path(), m.up.as_str()),
            Direction::Down => (m.down_path(), m.down.as_deref().unwrap_or_default()),
        };
        split::refuse_transaction_control(
            &path,
            sql,
            source.dialect,
            "remove it, or, if the migration manages its own transactions, add \
             `run_in_transaction = false` to its metadata.toml; no migration was applied",
        )?;
    }
    Ok(())
}

fn plan_steps<'a>(
    events: &dyn Events,
    source: &'a Source,
    applied: &[AppliedRow],
    action: &Action,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<(&'a Migration, Direction)>> {
    let rows = plan::status(source, applied);
    let mut warn = |msg: String| {
        events.warn(&msg);
        warnings.push(msg);
    };
    match action {
        Action::Prepare => Ok(Vec::new()),
        Action::Up(target) => {
            check_modified(&rows, opts, &mut warn)?;
            let missing: Vec<String> = rows
                .iter()
                .filter(|r| r.state == State::Missing)
                .map(|r| source::label(&r.version, &r.name))
                .collect();
            if !missing.is_empty() {
                warn(format!(
                    "applied but missing from the folder: {}",
                    missing.join(", ")
                ));
            }
            let plan = plan::up_plan(source, &rows, target).map_err(error::usage)?;
            let late: Vec<String> = plan
                .iter()
                .filter(|m| {
                    rows.iter()
                        .any(|r| r.version == m.version && r.out_of_order)
                })
                .map(|m| m.label())
                .collect();
            if !late.is_empty() {
                let msg = out_of_order(&late);
                if opts.strict {
                    return Err(error::tag(
                        anyhow::anyhow!(
                            "{msg}; refusing with --strict (drop --strict to apply them anyway)"
                        ),
                        Exit::Check,
                    ));
                }
                warn(format!("{msg}; applying anyway"));
            }
            Ok(plan.into_iter().map(|m| (m, Direction::Up)).collect())
        }
        Action::Down(target) => {
            let reverts = revert_plan(source, &rows, applied, target, &mut warn)?;
            Ok(reverts.into_iter().map(|m| (m, Direction::Down)).collect())
        }
        Action::Redo(target) => {
            check_modified(&rows, opts, &mut warn)?;
            let reverts = revert_plan(source, &rows, applied, target, &mut warn)?;
            let mut again = reverts.clone();
            again.sort_by(|a, b| a.version.cmp(&b.version));
            Ok(reverts
                .into_iter()
                .map(|m| (m, Direction::Down))
                .chain(again.into_iter().map(|m| (m, Direction::Up)))
                .collect())
        }
    }
}

/// Refuses (exit 4) when an applied migration's up.sql changed, unless `--allow-modified`.
fn check_modified(
    rows: &[StatusRow],
    opts: &Options,
    warn: &mut impl FnMut(String),
) -> anyhow::Result<()> {
    let modified: Vec<String> = rows
        .iter()
        .filter(|r| r.state == State::Modified)
        .map(|r| source::label(&r.version, &r.name))
        .collect();
    if modified.is_empty() {
        return Ok(());
    }
    let msg = format!(
        "up.sql changed since it was applied: {}",
        modified.join(", ")
    );
    if opts.allow_modified {
        warn(format!("{msg}; going on (--allow-modified)"));
        Ok(())
    } else {
        Err(error::tag(
            anyhow::anyhow!(
                "{msg}; refusing to go on (restore the file, or pass --allow-modified)"
            ),
            Exit::Check,
        ))
    }
}

/// The migrations to revert, newest application first; refuses (exit 2) before touching anything
/// when one of them is not in the folder or has no down.sql.
fn revert_plan<'a>(
    source: &'a Source,
    rows: &[StatusRow],
    applied: &[AppliedRow],
    target: &DownTarget,
    warn: &mut impl FnMut(String),
) -> anyhow::Result<Vec<&'a Migration>> {
    let versions = plan::down_plan(applied, target).map_err(error::usage)?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for v in &versions {
        match source.migrations.iter().find(|m| &m.version == v) {
            None => problems.push(format!("{v} is applied but not in the folder")),
            Some(m) if m.down.is_none() => problems.push(format!(
                "{} has no down.sql (or it holds no statement)",
                m.label()
            )),
            Some(m) => {
                if rows
                    .iter()
                    .any(|r| r.version == m.version && r.state == State::Modified)
                {
                    warn(format!(
                        "{}: up.sql changed since it was applied; down.sql may not match what ran",
                        m.label()
                    ));
                }
                out.push(m);
            }
        }
    }
    if !problems.is_empty() {
        return Err(error::usage(format!(
            "cannot revert: {}; nothing was changed",
            problems.join("; ")
        )));
    }
    Ok(out)
}
