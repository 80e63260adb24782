//! The migration engine: reading diesel-format folders ([`source`]), deciding what to do
//! ([`plan`]), doing it ([`run`]), under a run lock with bookkeeping (`db::migrations`).
//!
//! Every path that changes the schema (`init`, `migrate up/down/redo`) goes through [`execute`]:
//! take the lock, read what is applied *after* taking it (a run that waited finds the work done),
//! check, apply or revert one migration at a time, release. Dry runs and `status` read without
//! locking and change nothing, not even the bookkeeping tables.

pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod source;
pub(crate) mod split;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::db::lease::{self, Lease};
use crate::db::migrations::{self as book, AppliedRow, Bookkeeping};
use crate::db::{AnyConnection, Database, SqliteTarget};
use crate::error::{self, Exit};
use crate::output::{self, Output};

pub(crate) use book::DIESEL_TABLE;
pub(crate) use plan::{DownTarget, State, StatusRow, UpTarget};
pub(crate) use run::Direction;
use source::{Migration, Source, Unwritten};

/// A migration that takes this long gets its own progress line even without `-v`.
const SLOW_STEP: Duration = Duration::from_secs(1);

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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            strict: false,
            allow_modified: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
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

/// `migrate status`.
#[derive(Serialize, Debug)]
pub(crate) struct StatusReport {
    pub(crate) migrations_dir: String,
    pub(crate) migrations: Vec<StatusRow>,
    pub(crate) applied: usize,
    pub(crate) pending: usize,
    pub(crate) modified: usize,
    pub(crate) missing: usize,
    pub(crate) out_of_order: usize,
    pub(crate) warnings: Vec<String>,
}

fn sqlite_file(db: &Database) -> Option<PathBuf> {
    match db.url().sqlite_target() {
        Some(SqliteTarget::File(path)) => Some(path.clone()),
        _ => None,
    }
}

fn load_source(out: &Output, dir: &Path, db: &Database) -> anyhow::Result<Source> {
    let source = source::load(dir, db.backend())?;
    out.verbose(format_args!(
        "{} migrations in {}",
        source.migrations.len(),
        source.dir.display()
    ));
    for w in &source.warnings {
        out.warn(w);
    }
    Ok(source)
}

/// `migrate status`: reads only.
pub(crate) fn status(out: &Output, db: &Database, dir: &Path) -> anyhow::Result<StatusReport> {
    let source = load_source(out, dir, db)?;
    let mut conn = db.get()?;
    let rows = status_rows(&mut conn, &source)?;
    let count = |s: State| rows.iter().filter(|r| r.state == s).count();
    Ok(StatusReport {
        migrations_dir: source.dir.display().to_string(),
        applied: count(State::Applied),
        pending: count(State::Pending),
        modified: count(State::Modified),
        missing: count(State::Missing),
        out_of_order: rows.iter().filter(|r| r.out_of_order).count(),
        migrations: rows,
        warnings: source.warnings,
    })
}

/// Every migration known from the folder or the database with its state: what `status` shows and
/// what `inspect` sums up in one line.
pub(crate) fn status_rows(
    conn: &mut AnyConnection,
    source: &Source,
) -> anyhow::Result<Vec<StatusRow>> {
    Ok(plan::status(source, &applied_rows(conn)?))
}

/// What the bookkeeping tables record, without reading any folder.
pub(crate) fn applied_rows(conn: &mut AnyConnection) -> anyhow::Result<Vec<AppliedRow>> {
    let bk = Bookkeeping::locate(conn)?;
    bk.read(conn)
}

/// Runs `action`: the one code path for `init` and `migrate up/down/redo`. Takes the database by
/// value because the SQLite run lock must be released only after its connections are closed.
pub(crate) fn execute(
    out: &Output,
    db: Database,
    dir: &Path,
    action: &Action,
    opts: &Options,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let source = match action {
        Action::Prepare => None,
        _ => Some(load_source(out, dir, &db)?),
    };
    let mut report = RunReport {
        command: action.name(),
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
    let mut conn = db.get()?;
    if opts.dry_run {
        let bk = Bookkeeping::locate(&mut conn)?;
        let applied = bk.read(&mut conn)?;
        let source = source.as_ref().context("a dry run needs the migrations")?;
        let steps = decide(out, source, &applied, action, opts, &mut report.warnings)?;
        report.steps = steps
            .into_iter()
            .map(|(m, d)| step(m, d, None, Some(run::sql_of(m, d))))
            .collect();
        report.duration_ms = output::ms_f64(started.elapsed());
        return Ok(report);
    }

    if db.pooling().on {
        return pooled_run(
            out,
            &db,
            conn,
            source.as_ref(),
            action,
            opts,
            report,
            started,
        );
    }
    let lock_file = sqlite_file(&db);
    let waited = book::acquire_run_lock(
        &mut conn,
        lock_file.as_deref(),
        opts.lock_timeout,
        |holder| {
            let holder = holder.map_or(String::new(), |h| format!(" ({h})"));
            out.info(format_args!(
                "waiting for another migration run on this database to finish{holder} ..."
            ))
        },
    )?;
    report.lock_wait_ms = output::ms_f64(waited.waited);
    let result = locked(
        out,
        &mut conn,
        source.as_ref(),
        action,
        opts,
        &mut report,
        None,
    );
    let released = waited.lock.release(&mut conn);
    if released.is_ok() {
        crate::interrupt::undone("the migration lock was released");
    }
    // Close every connection before the SQLite file lock goes (see RunLock::release).
    drop(conn);
    drop(db);
    drop(waited.lock);
    result?;
    released?;
    report.duration_ms = output::ms_f64(started.elapsed());
    Ok(report)
}

/// A run in transaction-pooling mode (PgBouncer): a lease row instead of the session lock, and
/// each transactional migration guarded inside its own transaction (see `db::lease`).
#[allow(clippy::too_many_arguments)]
fn pooled_run(
    out: &Output,
    db: &Database,
    mut conn: crate::db::Pooled,
    source: Option<&Source>,
    action: &Action,
    opts: &Options,
    mut report: RunReport,
    started: Instant,
) -> anyhow::Result<RunReport> {
    let prefix = Bookkeeping::locate(&mut conn)?.prefix().to_string();
    let table = lease::ensure_table(&mut conn, &prefix)?;
    let (lease, waited) = lease::acquire(
        &mut conn,
        table,
        db.lock_expiry(),
        opts.lock_timeout,
        || db.dedicated(),
        |holder| {
            out.info(format_args!(
 "waiting for another migration run on this database to finish ({}, last heartbeat {:.0}s ago; its lock expires {:.0}s after its last heartbeat) ...",
                holder.owner,
                holder.heartbeat_age_s,
                db.lock_expiry().as_secs_f64()
            ))
        },
    )?;
    report.lock_wait_ms = output::ms_f64(waited);
    let result = locked(
        out,
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
    report.duration_ms = output::ms_f64(started.elapsed());
    Ok(report)
}

/// The part of a run that happens under the lock.
fn locked(
    out: &Output,
    conn: &mut AnyConnection,
    source: Option<&Source>,
    action: &Action,
    opts: &Options,
    report: &mut RunReport,
    lease: Option<&Lease>,
) -> anyhow::Result<()> {
    let mut bk = Bookkeeping::locate(conn)?;
    if lease.is_none() && matches!(conn, AnyConnection::Postgresql(_)) {
        let mut waited = false;
        lease::wait_for_live_lease(conn, bk.prefix(), opts.lock_timeout, |owner| {
            waited = true;
            out.info(format_args!(
                "waiting for a migration run through a pooler ({owner}) to finish ..."
            ))
        })?;
        if waited {
            // The pooled run may have created the bookkeeping tables meanwhile.
            bk = Bookkeeping::locate(conn)?;
        }
    }
    if let Some(lease) = lease {
        let (table, owner) = lease.row();
        bk.set_lease(table, owner);
    }
    report.bookkeeping_created = bk.ensure(conn)?;
    let Some(source) = source else {
        return Ok(());
    };
    let applied = bk.read(conn)?;
    let steps = decide(out, source, &applied, action, opts, &mut report.warnings)?;
    if steps.is_empty() {
        return Ok(());
    }
    let session = book::begin_session(conn)?;
    let result = run_steps(out, conn, &bk, &steps, report, lease);
    let ended = book::end_session(conn, &session);
    result?;
    ended
}

fn run_steps(
    out: &Output,
    conn: &mut AnyConnection,
    bk: &Bookkeeping,
    steps: &[(&Migration, Direction)],
    report: &mut RunReport,
    lease: Option<&Lease>,
) -> anyhow::Result<()> {
    let bar = out.progress_bar(
        steps.len() as u64,
        "{spinner} [{bar:30}] {pos}/{len} {wide_msg}",
    );
    for (m, direction) in steps {
        if let Err(err) = crate::interrupt::check() {
            bar.abandon();
            return Err(err.context(format!(
                "stopped before {} {}: nothing of it ran; those before it stay done",
                if *direction == Direction::Up {
                    "applying"
                } else {
                    "reverting"
                },
                m.label()
            )));
        }
        bar.set_message(m.label());
        if let Some(lease) = lease {
            // A transactional migration checks inside its own transaction; one outside a
            // transaction asks first.
            let lost = lease.is_lost() || (!m.run_in_transaction && !lease.still_ours(conn)?);
            if lost {
                bar.abandon();
                return Err(lease::taken_over(&m.label()));
            }
        }
        let started = Instant::now();
        let result = match direction {
            Direction::Up => run::apply(conn, bk, m),
            Direction::Down => run::revert(conn, bk, m),
        };
        let done = match result {
            Ok(done) => done,
            Err(err) => {
                bar.abandon();
                return Err(err);
            }
        };
        if done.is_none() {
            bar.inc(1);
            out.verbose(format_args!(
                "{} was already done by another run: skipped",
                m.label()
            ));
            continue;
        }
        let took = started.elapsed();
        bar.inc(1);
        // The per-migration list is for `-v` (and JSON); without it only a slow migration gets a
        // line, so that a long CI run shows where it is.
        if out.writes_progress_lines() && (out.is_verbose() || took >= SLOW_STEP) {
            let verb = match direction {
                Direction::Up => "applied",
                Direction::Down => "reverted",
            };
            out.info(format_args!(
                "{verb} {} ({})",
                m.label(),
                output::millis(took)
            ));
        }
        report
            .steps
            .push(step(m, *direction, Some(output::ms_f64(took)), None));
    }
    bar.finish_and_clear();
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
    out: &Output,
    source: &'a Source,
    applied: &[AppliedRow],
    action: &Action,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<(&'a Migration, Direction)>> {
    let steps = plan_steps(out, source, applied, action, opts, warnings)?;
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
    for (m, direction) in &steps {
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
    Ok(steps)
}

fn plan_steps<'a>(
    out: &Output,
    source: &'a Source,
    applied: &[AppliedRow],
    action: &Action,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<(&'a Migration, Direction)>> {
    let rows = plan::status(source, applied);
    let mut warn = |msg: String| {
        out.warn(&msg);
        warnings.push(msg);
    };
    match action {
        Action::Prepare => Ok(Vec::new()),
        Action::Up(target) => {
            check_modified(&rows, opts, &mut warn)?;
            let missing: Vec<String> = rows
                .iter()
                .filter(|r| r.state == State::Missing)
                .map(|r| run::label(&r.version, &r.name))
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
                let msg = format!(
                    "out of order: {} {} older than a migration already applied",
                    late.join(", "),
                    if late.len() == 1 { "is" } else { "are" }
                );
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
        .map(|r| run::label(&r.version, &r.name))
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
