//! `dbctl init`: everything `diesel setup` does, safe to run again.
//!
//! Creates what is missing (the database, the migrations folder, diesel.toml, .env.example, the
//! bookkeeping table), never overwrites a file, applies pending migrations through the migration
//! engine, and reports what it did and what already existed.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::commands::Context;
use crate::db::{self, Backend, Database, DbUrl, OpenMode, PoolSettings};
use crate::error::{self, Exit};
use crate::migrate;
use crate::output::{self, Report};

/// The `.env.example` written into a new project: the same file this repository ships.
const ENV_EXAMPLE: &str = include_str!("../../.env.example");

/// Create the database and project files if missing, then apply pending migrations.
///
/// Safe to run again: what exists is left as it is and reported as such.
///
/// Examples:
///   dbctl init
///   dbctl init --database-url postgres://postgres@127.0.0.1/app_dev
///   dbctl init --no-migrate --format json
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct InitArgs {
    /// Create the database and files, but apply no migrations
    #[arg(long)]
    no_migrate: bool,

    /// Afterwards, exit 4 with a diff instead of rewriting diesel.toml's [print_schema] `file`
    #[arg(long)]
    locked_schema: bool,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Created,
    Existed,
    Applied,
    Skipped,
}

impl Status {
    /// `Created` when dbctl made it, `Existed` when it was there.
    fn created_if(created: bool) -> Status {
        if created {
            Status::Created
        } else {
            Status::Existed
        }
    }

    /// The word both the table and JSON use (JSON through serde's lowercase names).
    fn word(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Existed => "existed",
            Status::Applied => "applied",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Serialize, Debug)]
pub(crate) struct Step {
    item: String,
    status: Status,
    detail: String,
}

#[derive(Serialize, Debug)]
pub(crate) struct InitReport {
    backend: Backend,
    url: String,
    /// The server that answered (`host:port`; for a URL naming several, the one libpq chose);
    /// absent for SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    steps: Vec<Step>,
    applied: Vec<migrate::Step>,
}

impl Report for InitReport {
    fn human(&self) -> String {
        let mut table = output::table(["item", "status", "detail"]);
        for step in &self.steps {
            table.add_row(vec![
                step.item.as_str(),
                step.status.word(),
                step.detail.as_str(),
            ]);
        }
        format!("{table}")
    }
}

impl InitReport {
    fn step(&mut self, item: impl Into<String>, status: Status, detail: impl Into<String>) {
        self.steps.push(Step {
            item: item.into(),
            status,
            detail: detail.into(),
        });
    }
}

pub(crate) fn run(ctx: &Context, args: InitArgs) -> anyhow::Result<InitReport> {
    let url = ctx.url()?;
    let settings = ctx.config.pool_settings(None)?;
    let mut report = InitReport {
        backend: url.backend(),
        url: url.redacted(),
        host: None,
        steps: Vec::new(),
        applied: Vec::new(),
    };
    let db = open_database(ctx, &url, &settings, &mut report)?;
    report.host = db.server();
    db::topology::require_writable(&db)?;
    let dir = migrations_folder(ctx, &mut report)?;
    project_files(&dir, &mut report)?;
    apply_migrations(ctx, db, &dir, &settings, &args, &mut report)?;
    Ok(report)
}

/// The database and, with `DATABASE_SCHEMA`, its schema: each created when missing; then the
/// database opened with every setting.
fn open_database(
    ctx: &Context,
    url: &DbUrl,
    settings: &PoolSettings,
    report: &mut InitReport,
) -> anyhow::Result<Database> {
    // The database is looked for (and created) without DATABASE_SCHEMA, which may not exist yet.
    let without_schema = PoolSettings {
        schema: None,
        ..settings.clone()
    };
    let open = |url: &DbUrl, settings: &PoolSettings, mode| ctx.open_url(url, settings, mode);
    let creation =
        Database::create_if_missing(url, &without_schema, &open, &|line| ctx.out.verbose(line))?;
    report.step(
        "database",
        Status::created_if(creation.created),
        creation.name,
    );
    let Some(schema) = settings.schema.as_deref() else {
        return match creation.opened {
            Some(db) => Ok(db),
            None => ctx.open_url(url, settings, OpenMode::Create),
        };
    };
    let existed = {
        let db = match creation.opened {
            Some(db) => db,
            None => ctx.open_url(url, &without_schema, OpenMode::Create)?,
        };
        let mut conn = db.get()?;
        db::pg_schema_exists(&mut conn, schema)?
    };
    // Opening in Create mode creates the schema and puts it on every search path.
    let db = ctx.open_url(url, settings, OpenMode::Create)?;
    report.step(
        "schema",
        Status::created_if(!existed),
        format!("{schema} (DATABASE_SCHEMA)"),
    );
    Ok(db)
}

/// The migrations folder, made when missing.
fn migrations_folder(ctx: &Context, report: &mut InitReport) -> anyhow::Result<PathBuf> {
    let (dir, source) = ctx.config.migrations_dir();
    ctx.out.verbose(format_args!(
        "migrations folder {} ({source})",
        dir.display()
    ));
    let existed = dir.is_dir();
    if !existed {
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the migrations folder `{}`", dir.display()))
            .map_err(|e| error::tag(e, Exit::Usage))?;
    }
    report.step(
        "migrations folder",
        Status::created_if(!existed),
        dir.display().to_string(),
    );
    Ok(dir)
}

/// diesel.toml (naming the migrations folder) and .env.example, each written only when missing.
fn project_files(dir: &Path, report: &mut InitReport) -> anyhow::Result<()> {
    let toml = format!(
        "# dbctl and diesel_cli read this file.\n[migrations_directory]\ndir = {}\n",
        toml::Value::String(dir.display().to_string())
    );
    report.step(
        "diesel.toml",
        write_new(Path::new("diesel.toml"), &toml)?,
        "diesel.toml",
    );
    report.step(
        ".env.example",
        write_new(Path::new(".env.example"), ENV_EXAMPLE)?,
        ".env.example",
    );
    Ok(())
}

/// The migration engine does the rest (lock, bookkeeping tables, pending migrations), the same
/// code path as `migrate up`; `--no-migrate` stops after the bookkeeping table.
fn apply_migrations(
    ctx: &Context,
    db: Database,
    dir: &Path,
    settings: &PoolSettings,
    args: &InitArgs,
    report: &mut InitReport,
) -> anyhow::Result<()> {
    let action = if args.no_migrate {
        migrate::Action::Prepare
    } else {
        migrate::Action::Up(migrate::UpTarget::default())
    };
    // diesel.toml's [print_schema] files, rewritten after the migrations as diesel_cli does.
    let schema_files = if args.no_migrate {
        Vec::new()
    } else {
        super::print_schema::file_sections(ctx, db.backend(), args.locked_schema)?
    };
    let run = migrate::execute(
        &crate::commands::migrate::Progress::new(ctx.out),
        db,
        dir,
        &action,
        &migrate::Options::default(),
    )?;
    super::print_schema::regenerate(ctx, &schema_files, args.locked_schema)?;
    // Say where the bookkeeping lives when DATABASE_SCHEMA moved it out of the default schema.
    let table = match settings.schema.as_deref() {
        Some(schema) => format!("{schema}.{}", migrate::DIESEL_TABLE),
        None => migrate::DIESEL_TABLE.to_string(),
    };
    report.step(
        "bookkeeping table",
        Status::created_if(run.bookkeeping_created),
        table,
    );
    if args.no_migrate {
        report.step("migrations", Status::Skipped, "--no-migrate");
        return Ok(());
    }
    let detail = match run.steps.len() {
        0 => "nothing pending".to_string(),
        1 => "1 migration".to_string(),
        n => format!("{n} migrations"),
    };
    let status = if run.steps.is_empty() {
        Status::Existed
    } else {
        Status::Applied
    };
    report.step("migrations", status, detail);
    report.applied = run.steps;
    Ok(())
}

/// Writes a file only if it does not exist yet (never overwriting a user's file).
fn write_new(path: &Path, contents: &str) -> anyhow::Result<Status> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path);
    match file {
        Ok(mut f) => {
            f.write_all(contents.as_bytes())
                .with_context(|| format!("writing `{}`", path.display()))?;
            Ok(Status::Created)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Status::Existed),
        Err(e) => Err(error::tag(
            anyhow::anyhow!("cannot create `{}`: {e}", path.display()),
            Exit::Usage,
        )),
    }
}
