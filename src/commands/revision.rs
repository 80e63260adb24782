//! `dbctl revision NAME`: a new migration folder in diesel's naming,
//! `<dir>/<YYYY-MM-DD-HHMMSS>_<name>/` with up.sql and down.sql.
//!
//! The version is the current UTC second; when a migration already has it (two calls in the
//! same second), the next free second is taken. The choice and the folder's creation happen under
//! an exclusive lock on the migrations folder, so concurrent calls cannot pick the same version.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{Duration as ChronoDuration, NaiveDateTime, Utc};
use serde::Serialize;

use crate::autogen;
use crate::commands::Context;
use crate::db::backend;
use crate::db::DbUrl;
use crate::error::{self, Exit, ResultExt as _};
use crate::migrate::{parse_folder_name, read_folder, UP_PLACEHOLDER};
use crate::output::{self, Output, Report};

/// Create a new migration folder with up.sql and down.sql.
///
/// The folder is `<migrations dir>/<YYYY-MM-DD-HHMMSS>_<name>` (diesel's naming); in a
/// folder with per-backend subfolders, the one of the database URL's backend.
///
/// Examples:
///   dbctl revision create_users
///   dbctl revision add_index --sql 'CREATE INDEX users_email ON users (email);' \
///       --down-sql 'DROP INDEX users_email;'
///   dbctl revision add_posts --format json
///   dbctl revision add_posts --autogenerate --from schema.sql
///   dbctl revision --check
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct RevisionArgs {
    /// The migration's name (letters, digits, spaces, `_` and `-`)
    #[arg(required_unless_present = "check")]
    name: Option<String>,

    /// The SQL for up.sql (instead of a placeholder comment)
    #[arg(long, value_name = "SQL")]
    sql: Option<String>,

    /// The SQL for down.sql (instead of a placeholder comment)
    #[arg(long, value_name = "SQL")]
    down_sql: Option<String>,

    #[command(flatten)]
    autogen: AutogenArgs,
}

/// `revision`'s options for writing a migration from a desired schema.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct AutogenArgs {
    /// Write up.sql and down.sql from the difference between what the migrations build and the
    /// desired schema file (see --from)
    #[arg(long, conflicts_with_all = ["sql", "down_sql"])]
    pub(crate) autogenerate: bool,

    /// The desired schema, as SQL [default: $DBCTL_SCHEMA_FILE, then schema.sql beside the
    /// migrations folder]
    #[arg(long, value_name = "FILE")]
    pub(crate) from: Option<PathBuf>,

    /// PostgreSQL: an empty database to build both schemas in, instead of two temporary
    /// databases created and dropped on the server of the database URL
    #[arg(long, value_name = "URL", hide_env_values = true)]
    pub(crate) dev_url: Option<String>,

    /// A rename, instead of a drop and an add: OLD_TABLE=NEW_TABLE or TABLE.OLD=NEW (the table
    /// as the desired schema names it); repeat for several
    #[arg(long, value_name = "OLD=NEW")]
    pub(crate) rename: Vec<String>,

    /// Write nothing; exit 4 when the migrations and the desired schema differ, printing how
    /// (implies --autogenerate)
    #[arg(long, conflicts_with_all = ["sql", "down_sql"])]
    pub(crate) check: bool,
}

impl AutogenArgs {
    pub(crate) fn wanted(&self) -> bool {
        self.autogenerate || self.check
    }

    /// Refuses the options that mean nothing without --autogenerate.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if !self.wanted()
            && (self.from.is_some() || self.dev_url.is_some() || !self.rename.is_empty())
        {
            return Err(error::usage(
                "--from, --dev-url and --rename are options of --autogenerate",
            ));
        }
        Ok(())
    }
}

#[derive(Serialize, Debug)]
pub(crate) struct RevisionReport {
    /// The folder written (none for `--check`, or when --autogenerate found no change).
    #[serde(flatten)]
    written: Option<Written>,
    /// What --autogenerate compared and found.
    #[serde(skip_serializing_if = "Option::is_none")]
    autogenerate: Option<crate::autogen::Summary>,
}

#[derive(Serialize, Debug)]
struct Written {
    version: String,
    name: String,
    folder: String,
    up: String,
    down: String,
}

impl Report for RevisionReport {
    fn human(&self) -> String {
        let mut out = String::new();
        if let Some(auto) = &self.autogenerate {
            out.push_str(&auto.human());
        }
        if let Some(w) = &self.written {
            let table = output::key_value_table(&[
                ("version", w.version.as_str()),
                ("up", w.up.as_str()),
                ("down", w.down.as_str()),
            ]);
            out.push_str(&table.to_string());
        }
        out
    }

    fn exit(&self) -> Exit {
        match &self.autogenerate {
            Some(auto) if auto.check && auto.differs() => Exit::Check,
            _ => Exit::Success,
        }
    }
}

const DOWN_PLACEHOLDER: &str = "-- Write the SQL that undoes up.sql here. While this file holds \
no statement, dbctl refuses to revert the migration.\n";

pub(crate) fn run(ctx: &Context, mut args: RevisionArgs) -> anyhow::Result<RevisionReport> {
    args.autogen.validate()?;
    let name = args.name.clone().unwrap_or_default();
    let name = name.trim();
    if !args.autogen.check {
        check_name(name)?;
    }
    let (top, _) = ctx.config.migrations_dir();
    backend::require_migrations_dir(&top)?;
    let mut summary = None;
    if args.autogen.wanted() {
        let generated =
            crate::autogen::generate(&request(ctx, &top, &args.autogen)?, &top, ctx.out)?;
        if args.autogen.check || !generated.summary.differs() {
            return Ok(RevisionReport {
                written: None,
                autogenerate: Some(generated.summary),
            });
        }
        args.sql = Some(generated.up);
        args.down_sql = Some(generated.down);
        summary = Some(generated.summary);
    }
    let dir = source_dir(ctx, &top)?;

    // Hold the folder's lock while choosing the version and creating the folder.
    let lock = fs::File::open(&dir)
        .with_context(|| format!("opening `{}`", dir.display()))
        .exit_with(Exit::Usage)?;
    lock.lock()
        .with_context(|| format!("locking `{}`", dir.display()))?;

    let mut taken = BTreeSet::new();
    for existing in read_folder(&dir)? {
        let file_name = existing
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Ok((version, other)) = parse_folder_name(&file_name) {
            if other == name {
                return Err(error::usage(format!(
                    "a migration named `{name}` exists already: `{}`",
                    existing.display()
                )));
            }
            taken.insert(version);
        }
    }
    let mut when = Utc::now().naive_utc();
    let (stamp, version) = loop {
        let stamp = stamp_of(&when);
        let version = stamp.replace('-', "");
        if !taken.contains(&version) {
            break (stamp, version);
        }
        when += ChronoDuration::seconds(1);
    };
    let folder = dir.join(format!("{stamp}_{name}"));
    fs::create_dir(&folder)
        .with_context(|| format!("creating `{}`", folder.display()))
        .exit_with(Exit::Usage)?;
    let up = folder.join("up.sql");
    let down = folder.join("down.sql");
    write(&up, args.sql.as_deref(), UP_PLACEHOLDER)?;
    write(&down, args.down_sql.as_deref(), DOWN_PLACEHOLDER)?;
    drop(lock);
    Ok(RevisionReport {
        written: Some(Written {
            version,
            name: name.to_string(),
            folder: folder.display().to_string(),
            up: up.display().to_string(),
            down: down.display().to_string(),
        }),
        autogenerate: summary,
    })
}

/// The migrations folder, or its per-backend folder when it has them, chosen by the URL's backend
/// (the URL is needed only then). A missing folder is a usage error.
fn source_dir(ctx: &Context, dir: &Path) -> anyhow::Result<PathBuf> {
    if backend::has_migration_folders(dir) {
        return backend::migrations_dir(dir, ctx.url()?.backend());
    }
    backend::require_migrations_dir(dir)?;
    Ok(dir.to_path_buf())
}

/// What `--autogenerate` compares, from the arguments and settings.
fn request(ctx: &Context, dir: &Path, args: &AutogenArgs) -> anyhow::Result<autogen::Request> {
    let (url, dev) = match &args.dev_url {
        Some(raw) => (
            DbUrl::parse(raw).map_err(|e| error::tag(e, Exit::Usage))?,
            true,
        ),
        None => (ctx.config.database_url()?.0, false),
    };
    Ok(autogen::Request {
        url,
        dev,
        settings: ctx.config.pool_settings(None)?,
        desired_file: desired_file(ctx, dir, args),
        renames: args.rename.clone(),
        check: args.check,
    })
}

/// `--from`, else `DBCTL_SCHEMA_FILE`, else `schema.sql` beside the migrations folder.
fn desired_file(ctx: &Context, dir: &Path, args: &AutogenArgs) -> PathBuf {
    if let Some(file) = &args.from {
        return file.clone();
    }
    if let Some((file, _)) = ctx.config.lookup(autogen::SCHEMA_FILE_SETTING) {
        return PathBuf::from(file);
    }
    dir.parent()
        .map_or_else(|| PathBuf::from("schema.sql"), |p| p.join("schema.sql"))
}

impl autogen::Notes for Output {
    fn warn(&self, msg: &str) {
        Output::warn(self, msg);
    }

    fn verbose(&self, msg: &str) {
        Output::verbose(self, msg);
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        return Err(error::usage("the migration name is empty"));
    }
    let ok = name
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ');
    if !ok {
        return Err(error::usage(format!(
            "`{name}` is not a usable migration name: use letters, digits, spaces, `_` and `-`"
        )));
    }
    Ok(())
}

fn stamp_of(when: &NaiveDateTime) -> String {
    when.format("%Y-%m-%d-%H%M%S").to_string()
}

fn write(path: &Path, sql: Option<&str>, placeholder: &str) -> anyhow::Result<()> {
    let mut text = sql.unwrap_or(placeholder).to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    fs::write(path, text).with_context(|| format!("writing `{}`", path.display()))
}
