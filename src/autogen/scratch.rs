//! The two scratch databases `revision --autogenerate` compares: one holding the desired schema
//! (the schema file run as it is), one holding what the migrations folder builds (applied by the
//! migration engine, as `migrate up` would). Both are of the backend the migrations are for, and
//! neither is the user's database.
//!
//! SQLite: two in-memory databases (shared cache, so that the migration engine's pool and the
//! reader see the same one); nothing touches the disk. PostgreSQL: two databases created on the
//! server of the database URL, one loaded with the desired schema while the migrations are
//! applied to the other (in parallel); both are dropped with `WITH (FORCE)` when [`Scratch`] is
//! dropped, so on every way out, an error or an interrupt included (a second Ctrl-C exits at
//! once and may leave them: their names start with `dbctl_autogen_`). With `--dev-url`, that
//! database (which must be empty) holds the desired schema first and, emptied, the migrations'
//! next, and is emptied again afterwards.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::db::{AnyConnection, Backend, Database, DbUrl, OpenMode, PoolSettings};
use crate::error::{self, Exit};
use crate::migrate::{self, Action, Options, UpTarget};
use crate::schema::{self as catalog, read::ReadOptions, Schema};

/// A schema as read from a scratch database, with what the model does not keep and SQLite's
/// DDL writer needs: each table's `CREATE TABLE` and the triggers, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    pub(crate) schema: Schema,
    /// SQLite: table name to its `CREATE TABLE` statement.
    pub(crate) table_sql: HashMap<String, String>,
    /// SQLite triggers.
    pub(crate) triggers: Vec<Trigger>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trigger {
    pub(crate) name: String,
    pub(crate) table: String,
    pub(crate) sql: String,
}

/// Where the scratch databases come from.
pub(crate) struct Target<'a> {
    /// The backend's URL: PostgreSQL's server to create the scratch databases on (or the dev
    /// database itself with `dev` set); ignored for SQLite.
    pub(crate) url: DbUrl,
    /// `--dev-url` was given: use `url` itself, emptied, instead of creating databases.
    pub(crate) dev: bool,
    pub(crate) settings: PoolSettings,
    pub(crate) out: &'a dyn super::Notes,
}

/// Builds both sides: (desired, current).
pub(crate) fn build(
    target: &Target<'_>,
    desired_file: &Path,
    desired_sql: &str,
    migrations_dir: &Path,
) -> anyhow::Result<(Side, Side)> {
    match target.url.backend() {
        Backend::Sqlite => {
            let desired = sqlite_memory(target, "desired")?;
            load_desired(&desired, desired_file, desired_sql)?;
            let desired = read(&desired)?;
            let current_url = memory_url("current")?;
            let keeper = open(target, &current_url)?;
            apply_migrations(target, &current_url, migrations_dir)?;
            Ok((desired, read(&keeper)?))
        }
        Backend::Postgres if target.dev => {
            let dev = open(target, &target.url)?;
            ensure_empty(&dev, &target.url)?;
            let _wipe = Wipe { db: &dev };
            both_in_turn(
                target,
                &target.url,
                desired_file,
                desired_sql,
                migrations_dir,
            )
        }
        Backend::Postgres => {
            let scratch = Scratch::create(target)?;
            let sides = in_parallel(target, &scratch, desired_file, desired_sql, migrations_dir);
            drop(scratch);
            sides
        }
    }
}

/// PostgreSQL: the desired schema built and read in one scratch database while the migrations
/// are applied and read in the other.
fn in_parallel(
    target: &Target<'_>,
    scratch: &Scratch<'_>,
    desired_file: &Path,
    desired_sql: &str,
    migrations_dir: &Path,
) -> anyhow::Result<(Side, Side)> {
    let started = std::time::Instant::now();
    let desired_url = target.url.with_pg_database(&scratch.names[0]);
    let current_url = target.url.with_pg_database(&scratch.names[1]);
    let settings = target.settings.clone();
    let (desired, current) = std::thread::scope(|s| {
        let current = s.spawn(|| -> anyhow::Result<(Side, Vec<String>)> {
            let warnings = apply_quietly(&settings, &current_url, migrations_dir)?;
            let side = read(&open_with(&settings, &current_url)?)?;
            Ok((side, warnings))
        });
        let desired = (|| -> anyhow::Result<Side> {
            let db = open(target, &desired_url)?;
            load_desired(&db, desired_file, desired_sql)?;
            // A fresh session: the file may have changed the search path (pg_dump's does).
            read(&open(target, &desired_url)?)
        })();
        let current = current.join().unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "applying the migrations stopped unexpectedly"
            ))
        });
        (desired, current)
    });
    let desired = desired?;
    let (current, warnings) = current?;
    for w in warnings {
        target.out.warn(&w);
    }
    target.out.verbose(&format!(
        "autogenerate: both schemas built and read in parallel in {}",
        crate::output::millis(started.elapsed())
    ));
    Ok((desired, current))
}

/// PostgreSQL: the desired schema built and read, the database emptied, then the migrations
/// applied and read, all in the one database `url` names. (One scratch database rather than two:
/// creating and dropping one costs the larger part of the whole run.)
fn both_in_turn(
    target: &Target<'_>,
    url: &DbUrl,
    desired_file: &Path,
    desired_sql: &str,
    migrations_dir: &Path,
) -> anyhow::Result<(Side, Side)> {
    let started = std::time::Instant::now();
    let lap = |what: &str| {
        target.out.verbose(&format!(
            "autogenerate: {what} at {}",
            crate::output::millis(started.elapsed())
        ))
    };
    let desired = {
        let db = open(target, url)?;
        load_desired(&db, desired_file, desired_sql)?;
        lap("desired schema loaded");
        // A fresh session: the file may have changed the search path (pg_dump's does).
        let fresh = open(target, url)?;
        let side = read(&fresh)?;
        wipe(&fresh)?;
        lap("desired schema read, scratch database emptied");
        side
    };
    apply_migrations(target, url, migrations_dir)?;
    lap("migrations applied");
    let current = read(&open(target, url)?)?;
    lap("migrations' schema read");
    Ok((desired, current))
}

fn open(target: &Target<'_>, url: &DbUrl) -> anyhow::Result<Database> {
    open_with(&target.settings, url)
}

fn open_with(settings: &PoolSettings, url: &DbUrl) -> anyhow::Result<Database> {
    let mut settings = settings.clone();
    settings.schema = None;
    settings.size = settings.size.max(2);
    Database::open(url, &settings, OpenMode::Existing)
}

/// A unique name within this process and moment.
fn unique(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "dbctl_autogen_{}_{}_{}_{tag}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn memory_url(tag: &str) -> anyhow::Result<DbUrl> {
    DbUrl::parse(&format!("file:{}?mode=memory&cache=shared", unique(tag)))
}

fn sqlite_memory(target: &Target<'_>, tag: &str) -> anyhow::Result<Database> {
    open(target, &memory_url(tag)?)
}

fn load_desired(db: &Database, file: &Path, sql: &str) -> anyhow::Result<()> {
    let mut conn = db.get()?;
    conn.batch_execute(sql).map_err(|e| {
        error::tag(
            anyhow::anyhow!(
                "the desired schema `{}` does not load: {}",
                file.display(),
                error::redact_driver(&e.to_string())
            ),
            Exit::Usage,
        )
    })
}

fn apply_migrations(target: &Target<'_>, url: &DbUrl, dir: &Path) -> anyhow::Result<()> {
    for w in apply_quietly(&target.settings, url, dir)? {
        target.out.warn(&w);
    }
    Ok(())
}

/// Applies the migrations without printing; returns the warnings.
fn apply_quietly(settings: &PoolSettings, url: &DbUrl, dir: &Path) -> anyhow::Result<Vec<String>> {
    let db = open_with(settings, url)?;
    let report = migrate::execute(
        &migrate::Unwatched,
        db,
        dir,
        &Action::Up(UpTarget::default()),
        &Options::default(),
    )
    .context("applying the migrations folder to a scratch database")?;
    Ok(report.warnings)
}

fn read(db: &Database) -> anyhow::Result<Side> {
    let mut conn = db.get()?;
    let mut schema = catalog::read::read(&mut conn, &ReadOptions { schemas: vec![] })?;
    schema.tables.retain(|t| !catalog::is_internal(&t.name));
    schema.views.retain(|v| !catalog::is_internal(&v.name));
    schema.sequences.retain(|s| {
        s.owned_by
            .as_deref()
            .is_none_or(|o| !catalog::is_internal(o.split('.').next().unwrap_or("")))
    });
    let mut side = Side {
        schema,
        table_sql: HashMap::new(),
        triggers: Vec::new(),
    };
    if let AnyConnection::Sqlite(sq) = &mut *conn {
        read_sqlite_extras(sq, &mut side)?;
    }
    Ok(side)
}

#[derive(QueryableByName)]
struct MasterRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    tbl: String,
    #[diesel(sql_type = Text)]
    sql: String,
}

fn read_sqlite_extras(conn: &mut diesel::SqliteConnection, side: &mut Side) -> anyhow::Result<()> {
    let rows: Vec<MasterRow> = diesel::sql_query(
        "SELECT type AS kind, name, tbl_name AS tbl, sql FROM main.sqlite_master \
         WHERE type IN ('table', 'trigger') AND sql IS NOT NULL ORDER BY rowid",
    )
    .load(conn)
    .context("reading table and trigger statements from sqlite_master")?;
    for r in rows {
        if catalog::is_internal(&r.tbl) {
            continue;
        }
        if r.kind == "table" {
            side.table_sql.insert(r.name, r.sql);
        } else {
            side.triggers.push(Trigger {
                name: r.name,
                table: r.tbl,
                sql: r.sql,
            });
        }
    }
    Ok(())
}

/// The PostgreSQL scratch database, dropped on drop.
struct Scratch<'a> {
    admin: Database,
    /// Where `admin` goes, for the connection that drops the scratch database.
    admin_url: DbUrl,
    connect_timeout: std::time::Duration,
    names: [String; 2],
    /// How many of `names` exist.
    created: usize,
    out: &'a dyn super::Notes,
}

impl<'a> Scratch<'a> {
    fn create(target: &Target<'a>) -> anyhow::Result<Scratch<'a>> {
        let (admin, admin_url) = match open(target, &target.url) {
            Ok(db) => (db, target.url.clone()),
            // The database the URL names may not exist yet: its server's `postgres` will do.
            Err(first) if error::exit_of(&first) == Exit::Connect => {
                let maintenance = target.url.with_pg_database("postgres");
                (open(target, &maintenance).map_err(|_| first)?, maintenance)
            }
            Err(first) => return Err(first),
        };
        let mut scratch = Scratch {
            admin,
            admin_url,
            connect_timeout: target.settings.connect_timeout,
            names: [unique("desired"), unique("current")],
            created: 0,
            out: target.out,
        };
        let mut conn = scratch.admin.get()?;
        for name in scratch.names.clone() {
            crate::db::create::create_database(&mut conn, &name).map_err(|e| {
                error::tag(
                    e.context(
                        "creating a scratch database for --autogenerate (or give --dev-url, an \
                         empty database to use instead)",
                    ),
                    Exit::Failed,
                )
            })?;
            scratch.created += 1;
            // Nothing here needs to survive a crash: commits need not wait for the disk
            // (measured: a third of the time of applying 200 small migrations).
            conn.batch_execute(&format!(
                "ALTER DATABASE {} SET synchronous_commit = off",
                crate::db::quote_ident(&name)
            ))
            .context("setting up the scratch database")?;
        }
        drop(conn);
        Ok(scratch)
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        // Connections of their own, outside dbctl's watch: after Ctrl-C the watch cancels every
        // statement that runs, and these must run. Both at once: each waits for a checkpoint.
        let conn_str = self
            .admin_url
            .connection_string(self.connect_timeout.as_secs().max(1));
        let results: Vec<(String, anyhow::Result<()>)> = std::thread::scope(|s| {
            let handles: Vec<_> = self.names[..self.created]
                .iter()
                .map(|name| {
                    let conn_str = &conn_str;
                    (name.clone(), s.spawn(move || drop_database(conn_str, name)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(name, h)| {
                    let result = h
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the drop stopped unexpectedly")));
                    (name, result)
                })
                .collect()
        });
        let mut all = true;
        for (name, result) in results {
            if let Err(e) = result {
                all = false;
                self.out.warn(&format!(
                    "could not drop the scratch database {name}: {e:#}"
                ));
            }
        }
        if all && self.created > 0 {
            crate::interrupt::undone("the scratch databases were dropped");
        }
    }
}

fn drop_database(conn_str: &str, name: &str) -> anyhow::Result<()> {
    let sql = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        crate::db::quote_ident(name)
    );
    let mut conn = diesel::PgConnection::establish(conn_str)
        .map_err(|e| anyhow::anyhow!(error::redact_driver(&e.to_string())))?;
    conn.batch_execute(&sql)
        .map_err(|e| anyhow::anyhow!(error::redact_driver(&e.to_string())))
}

/// Empties the dev database on drop.
struct Wipe<'a> {
    db: &'a Database,
}

impl Drop for Wipe<'_> {
    fn drop(&mut self) {
        if wipe(self.db).is_ok() {
            crate::interrupt::undone("the dev database was emptied");
        }
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// User schemas (not PostgreSQL's own).
const USER_SCHEMAS: &str = "nspname NOT IN ('pg_catalog', 'information_schema') \
     AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'";

fn ensure_empty(db: &Database, url: &DbUrl) -> anyhow::Result<()> {
    let mut conn = db.get()?;
    let found: Count = diesel::sql_query(format!(
        "SELECT (SELECT count(*) FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}) \
              + (SELECT count(*) FROM pg_catalog.pg_type t \
                 JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
                 WHERE {USER_SCHEMAS} AND t.typtype IN ('e', 'd', 'c', 'r') AND t.typrelid = 0) \
              + (SELECT count(*) FROM pg_catalog.pg_namespace WHERE {USER_SCHEMAS} AND nspname <> 'public') \
              AS n"
    ))
    .get_result(&mut conn)
    .context("checking that the dev database is empty")?;
    if found.n > 0 {
        return Err(error::usage(format!(
            "the dev database {} is not empty ({} objects): --dev-url needs an empty database, \
             which dbctl fills and empties again",
            url.redacted(),
            found.n
        )));
    }
    Ok(())
}

/// Drops every user schema and creates `public` again.
fn wipe(db: &Database) -> anyhow::Result<()> {
    let mut conn = db.get()?;
    let schemas: Vec<Name> = diesel::sql_query(format!(
        "SELECT nspname::text AS name FROM pg_catalog.pg_namespace WHERE {USER_SCHEMAS}"
    ))
    .load(&mut conn)
    .context("listing the dev database's schemas")?;
    let mut sql = String::new();
    for s in schemas {
        sql.push_str(&format!(
            "DROP SCHEMA {} CASCADE;",
            crate::db::quote_ident(&s.name)
        ));
    }
    sql.push_str("CREATE SCHEMA IF NOT EXISTS public;");
    conn.batch_execute(&sql)
        .context("emptying the dev database")?;
    Ok(())
}
