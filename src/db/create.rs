//! Creating the database a URL names when it is missing (`dbctl init`): a SQLite file (its folder
//! is made when the database is opened in [`OpenMode::Create`]), or a PostgreSQL database created
//! through the server's maintenance database. Whether a PostgreSQL database is missing is asked
//! of the server (`pg_database`), never read from the words of a connection error: a missing
//! role, a TLS setting or a refused password fail the same way against every database, and are
//! reported as they are.

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;

use super::{quote_ident, topology, AnyConnection, Database, DbUrl, OpenError, OpenMode};
use super::{PoolSettings, SqliteTarget};
use crate::error::{self, Exit};

/// What [`Database::create_if_missing`] found.
pub(crate) struct Creation {
    /// Whether dbctl created the database (`false`: it was there, or another session made it).
    pub(crate) created: bool,
    /// The database as people name it: the file, the PostgreSQL name, or "in memory".
    pub(crate) name: String,
    /// The database, when finding out meant opening it (so the run uses that one connection).
    pub(crate) opened: Option<Database>,
}

/// How the caller opens a database (its own logging included).
pub(crate) type Opener<'a> =
    &'a dyn Fn(&DbUrl, &PoolSettings, OpenMode) -> anyhow::Result<Database>;

impl Database {
    /// Creates the database `url` names if it does not exist. `note` hears what happened in
    /// words, for `-v`.
    pub(crate) fn create_if_missing(
        url: &DbUrl,
        settings: &PoolSettings,
        open: Opener<'_>,
        note: &dyn Fn(&str),
    ) -> anyhow::Result<Creation> {
        match url.sqlite_target() {
            Some(target) => Ok(sqlite_creation(target)),
            None => create_postgres(url, settings, open, note),
        }
    }
}

/// A SQLite file is created when it is first opened; here it is only looked at.
fn sqlite_creation(target: &SqliteTarget) -> Creation {
    let (created, name) = match target {
        SqliteTarget::File(path) => (!path.exists(), path.display().to_string()),
        SqliteTarget::Memory => (true, "in memory (gone when dbctl exits)".to_string()),
    };
    Creation {
        created,
        name,
        opened: None,
    }
}

fn create_postgres(
    url: &DbUrl,
    settings: &PoolSettings,
    open: Opener<'_>,
    note: &dyn Fn(&str),
) -> anyhow::Result<Creation> {
    let name = name_to_create(url)?;
    let missing = match open_or_find_missing(url, &name, settings, open) {
        Ok(db) => {
            return Ok(Creation {
                created: false,
                name,
                opened: Some(db),
            })
        }
        Err(err) if OpenError::of(&err) == Some(OpenError::MissingDatabase) => err,
        Err(err) => return Err(err),
    };
    let admin = open_maintenance(url, settings, open).ok_or(missing)?;
    let mut conn = admin.get()?;
    // A standby has the same databases as its primary; a missing one cannot be created.
    topology::check_writable(&admin, &mut conn)?;
    note(&format!("creating database {name}"));
    let created = create_database(&mut conn, &name)?;
    if !created {
        note(&format!(
            "database {name} was created meanwhile by another session"
        ));
    }
    Ok(Creation {
        created,
        name,
        opened: None,
    })
}

/// The PostgreSQL database name in the URL, checked: PostgreSQL silently cuts identifiers to 63
/// bytes, and a longer name would create a database under another name than the URL's.
fn name_to_create(url: &DbUrl) -> anyhow::Result<String> {
    let name = url.pg_database().ok_or_else(|| {
        error::usage(format!(
            "the URL {} names no database to create (add /name after the host)",
            url.redacted()
        ))
    })?;
    if name.len() > 63 {
        return Err(error::usage(format!(
            "the database name `{name}` is {} bytes long; PostgreSQL keeps only 63",
            name.len()
        )));
    }
    Ok(name)
}

/// Opens the database; when that fails to connect, asks the maintenance database whether it
/// exists. The first error is returned either way, marked [`OpenError::MissingDatabase`] when the
/// server says there is no such database.
fn open_or_find_missing(
    url: &DbUrl,
    name: &str,
    settings: &PoolSettings,
    open: Opener<'_>,
) -> anyhow::Result<Database> {
    // Most runs find the database already there: try it first, so that `init` needs no access to
    // a maintenance database in that case.
    let started = std::time::Instant::now();
    let target_err = match open(url, settings, OpenMode::Existing) {
        Ok(db) => return Ok(db),
        Err(err) if error::exit_of(&err) != Exit::Connect => return Err(err),
        Err(err) => err,
    };
    // A server that let the whole connect timeout pass will not answer for another database
    // either: `init` stays bounded by one connect timeout.
    if started.elapsed() >= settings.connect_timeout {
        return Err(target_err);
    }
    let Some(admin) = open_maintenance(url, settings, open) else {
        return Err(target_err);
    };
    let mut conn = admin.get()?;
    if !database_exists(&mut conn, name)? {
        return Err(target_err.context(OpenError::MissingDatabase));
    }
    // It exists (or was just created by someone else): the first error stands unless a second
    // try gets in.
    open(url, settings, OpenMode::Existing).map_err(|_| target_err)
}

/// A connection to the `postgres` maintenance database, or `template1` where that cannot be
/// reached; `None` when neither can.
fn open_maintenance(url: &DbUrl, settings: &PoolSettings, open: Opener<'_>) -> Option<Database> {
    let mut settings = settings.clone();
    settings.size = 1;
    settings.schema = None;
    ["postgres", "template1"]
        .into_iter()
        .find_map(|maintenance| {
            open(
                &url.with_pg_database(maintenance),
                &settings,
                OpenMode::Existing,
            )
            .ok()
        })
}

/// Whether a PostgreSQL database exists, asked through a connection to another one.
fn database_exists(conn: &mut AnyConnection, name: &str) -> anyhow::Result<bool> {
    super::pg_catalog_has(
        conn,
        "SELECT count(*)::bigint AS n FROM pg_catalog.pg_database WHERE datname = $1",
        name,
    )
    .context("looking up the database in pg_database")
}

/// `CREATE DATABASE` with the name quoted (it cannot be a bound parameter). `Ok(false)` when
/// another session created it meanwhile: the unique violation (23505) on `pg_database` that a
/// concurrent creation gives, or any failure after which the database is there (that is
/// `duplicate_database`, 42P04, which diesel does not tell apart by kind).
pub(crate) fn create_database(conn: &mut AnyConnection, name: &str) -> anyhow::Result<bool> {
    use diesel::result::{DatabaseErrorKind, Error};
    match conn.batch_execute(&format!("CREATE DATABASE {}", quote_ident(name))) {
        Ok(()) => Ok(true),
        Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(e) => {
            if database_exists(conn, name)? {
                Ok(false)
            } else {
                Err(e).with_context(|| format!("creating database `{name}`"))
            }
        }
    }
}
