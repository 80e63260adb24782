//! `--engine diesel`: dbctl's migrations applied and reverted by diesel_migrations' own
//! `MigrationHarness`, exactly as `diesel migration run/revert/redo` would, on the same kind of
//! connection diesel_cli uses (a `MultiConnection` over both backends).
//!
//! dbctl's folder reader ([`super::source`]) stays the authority on the folder: its migrations are
//! handed to the harness through diesel's `MigrationSource` and `Migration` traits ([`Folder`],
//! [`Entry`]), with `run_in_transaction` from metadata.toml. The harness then decides what is
//! pending, opens (or not) each migration's transaction, runs up.sql or down.sql with one
//! `batch_execute`, and writes or deletes its `__diesel_schema_migrations` row. dbctl adds only
//! what sits around a harness call: the run lock (taken before the harness is called, since the
//! harness has no hook for one), the checks that refuse a run before anything is touched, the
//! session settings of a dbctl run, and the report. What the harness cannot do (dbctl's
//! checksums and companion rows, the failing line on SQLite) is listed in docs/migrate.md.

use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use diesel::connection::BoxableConnection;
use diesel::migration::{
    Migration as DieselMigration, MigrationMetadata, MigrationName, MigrationSource,
    MigrationVersion,
};
use diesel_migrations::{MigrationError, MigrationHarness};

use crate::db::AnyConnection;
use crate::error;

use super::bookkeeping::Book;
use super::run::Direction;
use super::source::{Migration, Source};
use super::split::{self, Dialect};
use super::{millis, Action, DownTarget, Events, Options, RunReport, UpTarget};

/// Which code applies and records the migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Engine {
    /// dbctl's own engine: run lock, checksums, failing-line location (the default).
    #[default]
    Dbctl,
    /// diesel_migrations' `MigrationHarness`, as diesel_cli runs it.
    Diesel,
}

/// One of dbctl's migrations, as diesel sees it.
struct Entry {
    m: Rc<Migration>,
    dialect: Dialect,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.m.label())
    }
}

impl MigrationName for Entry {
    fn version(&self) -> MigrationVersion<'_> {
        MigrationVersion::from(&self.m.version)
    }
}

impl MigrationMetadata for Entry {
    fn run_in_transaction(&self) -> bool {
        self.m.run_in_transaction
    }
}

/// What [`Entry::revert`] says when there is no down.sql to run (the checks before the run refuse
/// that first; this stands for a harness call that gets there anyway).
#[derive(Debug)]
struct NoDownSql(PathBuf);

impl fmt::Display for NoDownSql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is missing or holds no statement", self.0.display())
    }
}

impl std::error::Error for NoDownSql {}

impl Entry {
    /// Runs `sql` as diesel does (one `batch_execute`), except that a file holding only comments
    /// or white space runs nothing: libpq reports such a query as an error, and dbctl's reader
    /// treats the file as a deliberate no-op on both backends.
    fn execute<DB: diesel::backend::Backend>(
        &self,
        conn: &mut dyn BoxableConnection<DB>,
        sql: &str,
    ) -> diesel::migration::Result<()> {
        if split::split(sql, self.dialect).is_empty() {
            return Ok(());
        }
        conn.batch_execute(sql)?;
        Ok(())
    }
}

impl<DB: diesel::backend::Backend> DieselMigration<DB> for Entry {
    fn run(&self, conn: &mut dyn BoxableConnection<DB>) -> diesel::migration::Result<()> {
        self.execute(conn, &self.m.up)
    }

    fn revert(&self, conn: &mut dyn BoxableConnection<DB>) -> diesel::migration::Result<()> {
        match &self.m.down {
            Some(down) => self.execute(conn, down),
            None => Err(Box::new(NoDownSql(self.m.down_path()))),
        }
    }

    fn metadata(&self) -> &dyn MigrationMetadata {
        self
    }

    fn name(&self) -> &dyn MigrationName {
        self
    }
}

/// A folder read by dbctl, as a diesel `MigrationSource` (for any backend, `MultiBackend`
/// included).
struct Folder {
    migrations: Vec<Rc<Migration>>,
    dialect: Dialect,
}

impl Folder {
    fn new(source: &Source) -> Folder {
        Folder {
            migrations: source.migrations.iter().cloned().map(Rc::new).collect(),
            dialect: source.dialect,
        }
    }
}

impl Folder {
    /// The migration with `version`, as diesel sees it.
    fn entry(&self, version: &str) -> Option<Entry> {
        self.migrations
            .iter()
            .find(|m| m.version == version)
            .map(|m| Entry {
                m: Rc::clone(m),
                dialect: self.dialect,
            })
    }
}

impl<DB: diesel::backend::Backend> MigrationSource<DB> for &Folder {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn DieselMigration<DB>>>> {
        Ok(self
            .migrations
            .iter()
            .map(|m| {
                Box::new(Entry {
                    m: Rc::clone(m),
                    dialect: self.dialect,
                }) as Box<dyn DieselMigration<DB>>
            })
            .collect())
    }
}

/// Refuses (exit 2), before connecting for the run, what `--engine diesel` cannot do: a dry
/// run (asking the harness what is pending creates its table), dbctl's own checks (`--strict`,
/// `--allow-modified`: the harness keeps no checksum and applies out-of-order migrations as any
/// other), and a run through a transaction-pooling proxy (dbctl's run lock there is a lease that
/// each migration's transaction must check, and the harness opens those transactions itself).
pub(crate) fn refuse(
    db: &crate::db::Database,
    action: &Action,
    opts: &Options,
) -> anyhow::Result<()> {
    let flag = if opts.dry_run {
        Some("--dry-run")
    } else if opts.strict {
        Some("--strict")
    } else if opts.allow_modified {
        Some("--allow-modified")
    } else {
        None
    };
    if let Some(flag) = flag {
        return Err(error::usage(format!(
            "{flag} works only with dbctl's engine: drop --engine diesel (diesel_migrations' \
             harness has no dry run and keeps no checksums)"
        )));
    }
    if matches!(action, Action::Prepare) {
        return Err(error::usage(
            "--engine diesel applies or reverts migrations; preparing the bookkeeping tables is \
             dbctl's engine's",
        ));
    }
    if db.pooling().on {
        return Err(error::usage(format!(
            "--engine diesel cannot run through a transaction-pooling proxy ({}): dbctl's run \
             lock there must be checked inside each migration's transaction, which diesel's \
             harness opens itself; drop --engine diesel, or connect directly",
            db.pooling().why
        )));
    }
    Ok(())
}

/// The harness's error as an anyhow error.
fn harness_error(err: Box<dyn std::error::Error + Send + Sync>) -> anyhow::Error {
    anyhow::anyhow!(err)
}

/// The versions the harness records as applied, newest version first (its own order).
fn applied(conn: &mut AnyConnection) -> anyhow::Result<Vec<String>> {
    let versions = MigrationHarness::applied_migrations(conn)
        .map_err(|e| harness_error(e).context("reading __diesel_schema_migrations"))?;
    Ok(versions.iter().map(ToString::to_string).collect())
}

/// The part of an `--engine diesel` run that happens under dbctl's run lock. `book` says whether
/// diesel's table exists yet.
pub(crate) fn locked(
    events: &dyn Events,
    conn: &mut AnyConnection,
    book: &Book,
    source: &Source,
    action: &Action,
    report: &mut RunReport,
) -> anyhow::Result<()> {
    let folder = Folder::new(source);
    // Asking the harness anything creates its table: a database without it is asked nothing
    // until the checks passed and there is something to do.
    let asked = Asked {
        applied: if book.diesel_exists() {
            Some(applied(conn)?)
        } else {
            None
        },
    };
    let plan = plan(events, conn, &asked, &folder, source, action, report)?;
    super::check_steps(source, &plan)?;
    if plan.is_empty() {
        return Ok(());
    }
    if asked.applied.is_none() {
        // The harness creates its table (`MigrationConnection::setup`) when asked.
        applied(conn)?;
        report.bookkeeping_created = true;
    }
    let session = book.begin_session(conn)?;
    events.steps_started(plan.len());
    // diesel_cli redoes in one transaction unless a migration to revert has
    // run_in_transaction = false.
    let in_one_transaction = matches!(action, Action::Redo(_))
        && plan
            .iter()
            .all(|(m, direction)| *direction == Direction::Up || m.run_in_transaction);
    let result = if in_one_transaction {
        redo(events, conn, &folder, &plan, report)
    } else {
        run_plan(events, conn, &folder, &plan, report, false)
    };
    events.steps_ended(result.is_ok());
    let ended = book.end_session(conn, &session);
    result?;
    ended
}

/// What the harness said before the run.
struct Asked {
    /// The applied versions, newest version first; `None` when diesel's table does not exist yet
    /// (nothing is applied).
    applied: Option<Vec<String>>,
}

/// What the harness will do, worked out with the harness's own answers (its pending list, its
/// applied list) and refused, before anything runs, when a migration to revert has no down.sql.
fn plan<'a>(
    events: &dyn Events,
    conn: &mut AnyConnection,
    asked: &Asked,
    folder: &Folder,
    source: &'a Source,
    action: &Action,
    report: &mut RunReport,
) -> anyhow::Result<Vec<(&'a Migration, Direction)>> {
    let find = |v: &str| source.migrations.iter().find(|m| m.version == v);
    let applied = asked.applied.as_deref().unwrap_or_default();
    match action {
        Action::Prepare => Ok(Vec::new()),
        Action::Up(target) => {
            let plan = up_plan(conn, asked, folder, source, target)?;
            // The harness applies a migration older than an applied one as any other; dbctl says
            // so, as its own engine does.
            let newest = applied.first();
            let late: Vec<String> = plan
                .iter()
                .filter(|m| newest.is_some_and(|n| *n > m.version))
                .map(|m| m.label())
                .collect();
            if !late.is_empty() {
                let msg = format!("{}; applying anyway", super::out_of_order(&late));
                events.warn(&msg);
                report.warnings.push(msg);
            }
            Ok(plan.into_iter().map(|m| (m, Direction::Up)).collect())
        }
        Action::Down(target) => {
            let reverts = down_plan(applied, target)?;
            Ok(revertible(&reverts, find)?
                .into_iter()
                .map(|m| (m, Direction::Down))
                .collect())
        }
        Action::Redo(target) => {
            let reverts = revertible(&down_plan(applied, target)?, find)?;
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

/// The harness's pending migrations (oldest version first; every migration when its table does
/// not exist yet), cut by `--to` and `--step`.
fn up_plan<'a>(
    conn: &mut AnyConnection,
    asked: &Asked,
    folder: &Folder,
    source: &'a Source,
    target: &UpTarget,
) -> anyhow::Result<Vec<&'a Migration>> {
    if let Some(to) = &target.to {
        if !source.migrations.iter().any(|m| &m.version == to) {
            return Err(error::usage(format!(
                "--to {to}: no migration in the folder has that version"
            )));
        }
    }
    let pending: Vec<String> = match asked.applied {
        Some(_) => MigrationHarness::pending_migrations(conn, folder)
            .map_err(|e| harness_error(e).context("asking diesel_migrations what is pending"))?
            .iter()
            .map(|p| p.name().version().to_string())
            .collect(),
        None => source
            .migrations
            .iter()
            .map(|m| m.version.clone())
            .collect(),
    };
    let mut plan: Vec<&Migration> = pending
        .iter()
        .filter_map(|version| source.migrations.iter().find(|m| &m.version == version))
        .filter(|m| target.to.as_ref().is_none_or(|to| m.version <= *to))
        .collect();
    if let Some(n) = target.step {
        plan.truncate(n);
    }
    Ok(plan)
}

/// The versions `revert_last_migration` would revert one after another: the harness reverts the
/// highest applied *version* each time (not the last applied, as dbctl's engine does).
fn down_plan(applied: &[String], target: &DownTarget) -> anyhow::Result<Vec<String>> {
    let applied = applied.iter().cloned();
    Ok(match target {
        DownTarget::Step(n) => applied.take(*n).collect(),
        DownTarget::All => applied.collect(),
        DownTarget::To(to) => {
            if !applied.clone().any(|v| &v == to) {
                return Err(error::usage(format!(
                    "--to {to}: that version is not applied"
                )));
            }
            applied.filter(|v| v > to).collect()
        }
    })
}

/// The migrations for `versions`; refuses (exit 2) when one is not in the folder or has no
/// down.sql, before anything is touched.
fn revertible<'a>(
    versions: &[String],
    find: impl Fn(&str) -> Option<&'a Migration>,
) -> anyhow::Result<Vec<&'a Migration>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for v in versions {
        match find(v) {
            None => problems.push(format!("{v} is applied but not in the folder")),
            Some(m) if m.down.is_none() => problems.push(format!(
                "{} has no down.sql (or it holds no statement)",
                m.label()
            )),
            Some(m) => out.push(m),
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

/// What diesel_cli's `migration redo` does on PostgreSQL and SQLite when every migration it
/// reverts runs in a transaction: the reverts and the applications in one transaction, each
/// migration's own transaction nested in it (a savepoint). A failure or SIGINT rolls all of it
/// back: every migration is as it was before the redo.
fn redo(
    events: &dyn Events,
    conn: &mut AnyConnection,
    folder: &Folder,
    plan: &[(&Migration, Direction)],
    report: &mut RunReport,
) -> anyhow::Result<()> {
    use diesel::Connection as _;
    let before = report.steps.len();
    let result = conn.transaction::<_, anyhow::Error, _>(|conn| {
        run_plan(events, conn, folder, plan, report, true)
    });
    if result.is_err() {
        report.steps.truncate(before);
    }
    result
}

/// Runs `plan` through the harness; `in_redo` when inside [`redo`]'s transaction.
fn run_plan(
    events: &dyn Events,
    conn: &mut AnyConnection,
    folder: &Folder,
    plan: &[(&Migration, Direction)],
    report: &mut RunReport,
    in_redo: bool,
) -> anyhow::Result<()> {
    for (m, direction) in plan {
        let label = m.label();
        crate::interrupt::check().map_err(|err| {
            err.context(format!(
                "stopped before {} {label}: nothing of it ran; {}",
                super::run::verb(*direction),
                if in_redo {
                    REDO_ROLLED_BACK
                } else {
                    "those before it stay done"
                }
            ))
        })?;
        events.step_started(&label);
        let started = Instant::now();
        let done = match direction {
            // What `run_pending_migrations` does for each pending migration.
            Direction::Up => match folder.entry(&m.version) {
                Some(entry) => MigrationHarness::run_migration(conn, &entry).map(|v| v.to_string()),
                None => Err(
                    MigrationError::UnknownMigrationVersion(MigrationVersion::from(
                        m.version.clone(),
                    ))
                    .into(),
                ),
            },
            Direction::Down => {
                MigrationHarness::revert_last_migration(conn, folder).map(|v| v.to_string())
            }
        };
        let took = started.elapsed();
        match done {
            Ok(version) if version == m.version => {}
            Ok(version) => {
                return Err(anyhow::anyhow!(
                    "diesel_migrations' harness {} {version} where {label} was planned: another \
                     tool changed __diesel_schema_migrations during the run; look at it before \
                     running again",
                    match direction {
                        Direction::Up => "applied",
                        Direction::Down => "reverted",
                    }
                ))
            }
            Err(err) => return Err(failure(conn, folder.dialect, m, *direction, err, in_redo)),
        }
        events.step_finished(&label, *direction, Some(took));
        report
            .steps
            .push(super::step(m, *direction, Some(millis(took)), None));
    }
    Ok(())
}

/// The error for a migration the harness failed to apply or revert: which file, where in it when
/// the database said (PostgreSQL's error position; SQLite's one-batch run names no place), what
/// became of it, and the database's message.
fn failure(
    conn: &mut AnyConnection,
    dialect: Dialect,
    m: &Migration,
    direction: Direction,
    err: Box<dyn std::error::Error + Send + Sync>,
    in_redo: bool,
) -> anyhow::Error {
    let (path, sql) = match direction {
        Direction::Up => (m.up_path(), m.up.as_str()),
        Direction::Down => (m.down_path(), m.down.as_deref().unwrap_or_default()),
    };
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let db_error = err.downcast_ref::<diesel::result::Error>();
    let place = db_error
        .and_then(position)
        .and_then(|chars| split::char_to_byte(sql, chars))
        .map(|byte| {
            let (line, column) = split::line_and_column(sql, byte);
            let text: String = split::line_text(sql, line)
                .trim()
                .chars()
                .take(80)
                .collect();
            format!(" at {file} line {line}, column {column}: `{text}`")
        })
        .unwrap_or_else(|| format!(" in {file}"));
    // Inside a redo, the redo's own transaction is still open here; it is rolled back after.
    let fate = if in_redo {
        REDO_ROLLED_BACK.to_string()
    } else {
        fate(conn, dialect, m)
    };
    let cause = match db_error {
        Some(diesel::result::Error::DatabaseError(_, info)) => {
            let mut text = info.message().trim().to_string();
            for (label, part) in [("DETAIL", info.details()), ("HINT", info.hint())] {
                if let Some(part) = part.map(str::trim).filter(|p| !p.is_empty()) {
                    text.push_str(&format!("; {label}: {part}"));
                }
            }
            text
        }
        _ => match err.downcast_ref::<MigrationError>() {
            Some(e) => e.to_string(),
            None => err.to_string(),
        },
    };
    anyhow::anyhow!("{cause}").context(format!(
        "{} migration {} with diesel_migrations' harness failed{place}; {fate} [{}]",
        super::run::verb(direction),
        m.label(),
        path.display()
    ))
}

/// The error position PostgreSQL reported (0-based, in characters of the file: the harness sends
/// its BEGIN as a query of its own).
fn position(err: &diesel::result::Error) -> Option<usize> {
    match err {
        diesel::result::Error::DatabaseError(_, info) => info
            .statement_position()
            .and_then(|p| usize::try_from(p).ok())
            .and_then(|p| p.checked_sub(1)),
        _ => None,
    }
}

/// What became of a redo that failed or was interrupted.
const REDO_ROLLED_BACK: &str = "the redo ran in one transaction, as diesel_cli's does, and it was \
                                rolled back: every migration is as it was before the redo";

/// What became of the failed migration, as far as the connection tells.
fn fate(conn: &mut AnyConnection, dialect: Dialect, m: &Migration) -> String {
    use diesel::connection::SimpleConnection as _;
    if m.run_in_transaction {
        return match crate::db::transaction_is_open(conn) {
            Ok(false) => "diesel's harness rolled its transaction back; the migrations before it \
                          stay applied"
                .to_string(),
            Ok(true) => match conn.batch_execute("ROLLBACK") {
                Ok(()) => "dbctl rolled back the transaction diesel's harness left open; the \
                           migrations before it stay applied"
                    .to_string(),
                Err(e) => format!(
                    "the transaction diesel's harness left open could not be rolled back ({e}): \
                     look at the database by hand before running it again"
                ),
            },
            Err(e) => format!(
                "whether diesel's harness rolled it back is unknown ({e}): look at the database \
                 by hand before running it again"
            ),
        };
    }
    match dialect {
        Dialect::Postgres => "it ran without a transaction (run_in_transaction = false): \
             diesel sends the file as one query, which PostgreSQL runs as one implicit \
             transaction unless a statement in it ends that; it was not recorded"
            .to_string(),
        Dialect::Sqlite => "it ran without a transaction (run_in_transaction = false): the \
             statements before the failing one stay in the database, and it was not recorded: \
             look at the database by hand before running it again"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::Connection as _;

    fn source(dir: &std::path::Path) -> Source {
        super::super::source::load(dir, crate::db::Backend::Sqlite).unwrap()
    }

    fn write(dir: &std::path::Path, folder: &str, up: &str, down: Option<&str>) {
        let f = dir.join(folder);
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("up.sql"), up).unwrap();
        if let Some(down) = down {
            std::fs::write(f.join("down.sql"), down).unwrap();
        }
    }

    /// diesel's harness, given dbctl's reader as its source, sees the same migrations, in the
    /// same order, with the same versions, and runs and reverts them with its own bookkeeping.
    #[test]
    fn diesels_harness_runs_dbctls_folder() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "2024-01-02-000000_b",
            "CREATE TABLE b (id INTEGER);",
            Some("DROP TABLE b;"),
        );
        write(
            dir.path(),
            "2024-01-01-000000_a",
            "CREATE TABLE a (id INTEGER);",
            Some("DROP TABLE a;"),
        );
        write(dir.path(), "2024-01-03-000000_c", "-- nothing here\n", None);
        std::fs::write(
            dir.path().join("2024-01-03-000000_c/metadata.toml"),
            "run_in_transaction = false\n",
        )
        .unwrap();
        let source = source(dir.path());
        let folder = Folder::new(&source);
        let listed = MigrationSource::<diesel::sqlite::Sqlite>::migrations(&&folder).unwrap();
        let versions: Vec<String> = listed
            .iter()
            .map(|m| m.name().version().to_string())
            .collect();
        assert_eq!(
            versions,
            ["20240101000000", "20240102000000", "20240103000000"]
        );
        assert!(listed[1].metadata().run_in_transaction());
        assert!(!listed[2].metadata().run_in_transaction());
        assert_eq!(listed[0].name().to_string(), "20240101000000_a");

        let mut conn = AnyConnection::Sqlite(
            diesel::SqliteConnection::establish(":memory:").expect("in-memory SQLite"),
        );
        let ran = MigrationHarness::run_pending_migrations(&mut conn, &folder)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(ran, versions);
        assert_eq!(applied(&mut conn).unwrap().len(), 3);
        // diesel's own reader of the same folder agrees on versions, order, names and
        // run_in_transaction (for a folder both accept).
        let diesels = diesel_migrations::FileBasedMigrations::from_path(dir.path()).unwrap();
        let theirs = MigrationSource::<diesel::sqlite::Sqlite>::migrations(&diesels).unwrap();
        let seen = |list: &[Box<dyn DieselMigration<diesel::sqlite::Sqlite>>]| {
            list.iter()
                .map(|m| {
                    (
                        m.name().version().to_string(),
                        m.metadata().run_in_transaction(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut theirs_seen = seen(&theirs);
        theirs_seen.sort();
        assert_eq!(seen(&listed), theirs_seen);

        // c has no down.sql: diesel's revert stops with dbctl's reason.
        let err = MigrationHarness::revert_last_migration(&mut conn, &folder).unwrap_err();
        assert!(err.to_string().contains("down.sql"), "{err}");
        assert_eq!(applied(&mut conn).unwrap().len(), 3);
    }
}
