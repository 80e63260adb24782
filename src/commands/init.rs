//! `dbctl init`: everything `diesel setup` does, safe to run again.
//!
//! Creates what is missing (the database, the migrations folder, diesel.toml, .env.example, the
//! bookkeeping table), never overwrites a file, applies pending migrations through the migration
//! engine, and reports what it did and what already existed.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::commands::Context;
use crate::db::{self, Backend, DbUrl, OpenMode, SqliteTarget};
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
        steps: Vec::new(),
        applied: Vec::new(),
    };

    // The database is looked for (and created) without DATABASE_SCHEMA, which may not exist yet.
    let probe = db::PoolSettings {
        schema: None,
        ..settings.clone()
    };
    let (status, detail, opened) = create_database(ctx, &url, &probe)?;
    report.step("database", status, detail);
    let schema = settings
        .schema
        .clone()
        .filter(|_| url.backend() == Backend::Postgres);
    let db = match (schema, opened) {
        (None, Some(db)) => db,
        (None, None) => ctx.open_url(&url, &settings, OpenMode::Create)?,
        (Some(schema), opened) => {
            let existed = {
                let probe_db = match opened {
                    Some(db) => db,
                    None => ctx.open_url(&url, &probe, OpenMode::Create)?,
                };
                let mut conn = probe_db.get()?;
                db::pg_schema_exists(&mut conn, &schema)?
            };
            // Opening in Create mode creates the schema and puts it on every search path.
            let db = ctx.open_url(&url, &settings, OpenMode::Create)?;
            let status = if existed {
                Status::Existed
            } else {
                Status::Created
            };
            report.step("schema", status, format!("{schema} (DATABASE_SCHEMA)"));
            db
        }
    };
    db::topology::require_writable(&db)?;

    let (dir, source) = ctx.config.migrations_dir();
    ctx.out.verbose(format_args!(
        "migrations folder {} ({source})",
        dir.display()
    ));
    let status = if dir.is_dir() {
        Status::Existed
    } else {
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the migrations folder `{}`", dir.display()))
            .map_err(|e| error::tag(e, Exit::Usage))?;
        Status::Created
    };
    report.step("migrations folder", status, dir.display().to_string());

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

    // The migration engine does the rest (lock, bookkeeping tables, pending migrations), the
    // same code path as `migrate up`.
    let action = if args.no_migrate {
        migrate::Action::Prepare
    } else {
        migrate::Action::Up(migrate::UpTarget::default())
    };
    // diesel.toml's [print_schema] files, rewritten after the migrations as diesel_cli does.
    let schema_files = if args.no_migrate {
        Vec::new()
    } else {
        crate::print_schema::file_sections(ctx)?
    };
    let run = migrate::execute(ctx.out, db, &dir, &action, &migrate::Options::default())?;
    crate::print_schema::regenerate(ctx, &schema_files, args.locked_schema)?;
    let status = if run.bookkeeping_created {
        Status::Created
    } else {
        Status::Existed
    };
    // Say where the bookkeeping lives when DATABASE_SCHEMA moved it out of the default schema.
    let table = match settings.schema.as_deref() {
        Some(schema) if url.backend() == Backend::Postgres => {
            format!("{schema}.{}", migrate::DIESEL_TABLE)
        }
        _ => migrate::DIESEL_TABLE.to_string(),
    };
    report.step("bookkeeping table", status, table);

    if args.no_migrate {
        report.step("migrations", Status::Skipped, "--no-migrate");
    } else {
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
    }
    Ok(report)
}

/// Creates the database itself if it does not exist: the SQLite file (and its folder), or the
/// PostgreSQL database through the server's maintenance database. When finding out meant
/// connecting to it, that open database is handed back so the run uses one connection.
fn create_database(
    ctx: &Context,
    url: &DbUrl,
    settings: &db::PoolSettings,
) -> anyhow::Result<(Status, String, Option<db::Database>)> {
    match url.backend() {
        Backend::Sqlite => Ok(match url.sqlite_target() {
            Some(SqliteTarget::File(path)) if path.exists() => {
                (Status::Existed, path.display().to_string(), None)
            }
            Some(SqliteTarget::File(path)) => (Status::Created, path.display().to_string(), None),
            _ => (
                Status::Created,
                "in memory (gone when dbctl exits)".to_string(),
                None,
            ),
        }),
        Backend::Postgres => {
            let name = url.pg_database().ok_or_else(|| {
                error::usage(format!(
                    "the URL {} names no database to create (add /name after the host)",
                    url.redacted()
                ))
            })?;
            // PostgreSQL silently cuts identifiers to 63 bytes: a longer name would create a
            // database under another name than the one in the URL.
            if name.len() > 63 {
                return Err(error::usage(format!(
                    "the database name `{name}` is {} bytes long; PostgreSQL keeps only 63",
                    name.len()
                )));
            }
            // Most runs find the database already there: try it first, so that `init` needs no
            // access to a maintenance database in that case.
            let started = std::time::Instant::now();
            let target_err = match ctx.open_url(url, settings, OpenMode::Existing) {
                Ok(db) => return Ok((Status::Existed, name, Some(db))),
                Err(err) if error::exit_of(&err) != Exit::Connect => return Err(err),
                Err(err) => err,
            };
            // A server that let the whole connect timeout pass will not answer for another
            // database either: `init` stays bounded by one connect timeout.
            if started.elapsed() >= settings.connect_timeout {
                return Err(target_err);
            }
            // Whether the database is missing is asked of the server (pg_database), never read
            // from the words of the error: a missing role, a TLS setting or a refused password
            // fail the same way against every database, and are reported as they are.
            let Some(admin) = open_maintenance(ctx, url, settings) else {
                return Err(target_err);
            };
            let mut conn = admin.get()?;
            if db::pg_database_exists(&mut conn, &name)? {
                // It exists (or was just created by someone else): the first error stands unless
                // a second try gets in.
                return match ctx.open_url(url, settings, OpenMode::Existing) {
                    Ok(db) => Ok((Status::Existed, name, Some(db))),
                    Err(_) => Err(target_err),
                };
            }
            // A standby has the same databases as its primary; a missing one cannot be created.
            db::topology::check_writable(&admin, &mut conn)?;
            ctx.out.verbose(format_args!("creating database {name}"));
            if db::pg_create_database(&mut conn, &name)? {
                Ok((Status::Created, name, None))
            } else {
                ctx.out.verbose(format_args!(
                    "database {name} was created meanwhile by another session"
                ));
                Ok((Status::Existed, name, None))
            }
        }
    }
}

/// A connection to the `postgres` maintenance database, or `template1` where that cannot be
/// reached; `None` when neither can.
fn open_maintenance(
    ctx: &Context,
    url: &DbUrl,
    settings: &db::PoolSettings,
) -> Option<db::Database> {
    let mut settings = settings.clone();
    settings.size = 1;
    settings.schema = None;
    ["postgres", "template1"]
        .into_iter()
        .find_map(|maintenance| {
            ctx.open_url(
                &url.with_pg_database(maintenance),
                &settings,
                OpenMode::Existing,
            )
            .ok()
        })
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
