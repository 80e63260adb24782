//! Facts about each backend that every engine shares: which SQL dialect its files are written
//! in, which per-backend migrations folder belongs to it, which backend a connection talks to, and
//! whether a table exists. Adding a backend means a new arm here, not edits across the engines.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::{AnyConnection, TableName};
use crate::error;
use crate::sql::Dialect;

/// The database engines dbctl drives, as chosen by the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Whether the database is reached through a server (host, port, user, connect timeout,
    /// transaction pooling) rather than opened as a file.
    pub(crate) fn has_server(self) -> bool {
        self == Backend::Postgres
    }

    /// Whether tables live in named schemas (`DATABASE_SCHEMA` applies).
    pub(crate) fn has_schemas(self) -> bool {
        self == Backend::Postgres
    }

    /// The Python drivers' options dbctl takes out of this backend's URLs.
    pub(crate) fn driver_params(self) -> &'static [&'static str] {
        match self {
            Backend::Sqlite => super::url::SQLITE_DRIVER_PARAMS,
            Backend::Postgres => super::url::DRIVER_PARAMS,
        }
    }

    /// The driver option read as `DB_STATEMENT_TIMEOUT` when that is not set: pysqlite's
    /// `timeout` (the busy timeout), asyncpg's `command_timeout`.
    pub(crate) fn statement_timeout_param(self) -> &'static str {
        match self {
            Backend::Sqlite => "timeout",
            Backend::Postgres => "command_timeout",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend `conn` talks to.
pub(crate) fn of(conn: &AnyConnection) -> Backend {
    match conn {
        AnyConnection::Postgresql(_) => Backend::Postgres,
        AnyConnection::Sqlite(_) => Backend::Sqlite,
    }
}

/// The SQL dialect migration and seed files for `backend` are written in.
pub(crate) fn dialect(backend: Backend) -> Dialect {
    match backend {
        Backend::Sqlite => Dialect::Sqlite,
        Backend::Postgres => Dialect::Postgres,
    }
}

/// The names a per-backend migrations folder may have for `backend`, the usual one first.
fn migration_folders(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Sqlite => &["sqlite"],
        Backend::Postgres => &["postgresql", "postgres"],
    }
}

/// Every per-backend folder name diesel projects use, including backends dbctl does not run.
const ALL_MIGRATION_FOLDERS: &[&str] = &["sqlite", "postgresql", "postgres", "mysql"];

/// Whether `dir` holds per-backend migrations folders (`sqlite/`, `postgresql/`, ...).
pub(crate) fn has_migration_folders(dir: &Path) -> bool {
    ALL_MIGRATION_FOLDERS.iter().any(|n| dir.join(n).is_dir())
}

/// Fails (usage error) when the migrations folder `dir` does not exist.
pub(crate) fn require_migrations_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    Err(error::usage(format!(
        "migrations folder `{}` does not exist (run `dbctl init`, or pass --migrations-dir)",
        dir.display()
    )))
}

/// The migrations folder to use for `backend`: `dir` itself, or its per-backend folder when it has
/// them. A missing `dir`, or per-backend folders without one for `backend`, is a usage error.
pub(crate) fn migrations_dir(dir: &Path, backend: Backend) -> anyhow::Result<PathBuf> {
    require_migrations_dir(dir)?;
    for name in migration_folders(backend) {
        let sub = dir.join(name);
        if sub.is_dir() {
            return Ok(sub);
        }
    }
    let others: Vec<&str> = ALL_MIGRATION_FOLDERS
        .iter()
        .copied()
        .filter(|n| dir.join(n).is_dir())
        .collect();
    if !others.is_empty() {
        return Err(error::usage(format!(
            "migrations folder `{}` has per-backend folders ({}) but none for {backend} (expected `{}/`)",
            dir.display(),
            others.join(", "),
            migration_folders(backend)[0]
        )));
    }
    Ok(dir.to_path_buf())
}

/// Whether a table exists: on PostgreSQL in `table.schema` (the search path when none is
/// given), on SQLite in `main`.
pub(crate) fn table_exists(conn: &mut AnyConnection, table: &TableName) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let found: Count = match (&*conn, &table.schema) {
        (AnyConnection::Postgresql(_), Some(schema)) => diesel::sql_query(
            "SELECT count(*)::bigint AS n FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND n.nspname = $2 AND c.relkind IN ('r', 'p')",
        )
        .bind::<Text, _>(&table.name)
        .bind::<Text, _>(schema)
        .get_result(conn),
        (AnyConnection::Postgresql(_), None) => diesel::sql_query(
            "SELECT count(*)::bigint AS n FROM pg_catalog.pg_class c \
             WHERE c.relname = $1 AND c.relkind IN ('r', 'p') \
             AND pg_catalog.pg_table_is_visible(c.oid)",
        )
        .bind::<Text, _>(&table.name)
        .get_result(conn),
        (AnyConnection::Sqlite(_), _) => diesel::sql_query(
            "SELECT count(*) AS n FROM main.sqlite_master WHERE type = 'table' AND name = $1",
        )
        .bind::<Text, _>(&table.name)
        .get_result(conn),
    }
    .with_context(|| format!("looking for table {table}"))?;
    Ok(found.n > 0)
}
