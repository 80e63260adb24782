//! Where each setting comes from: flag, then the process environment, then the `.env` file, then
//! diesel.toml, then the built-in default.
//!
//! `.env` is read into a map rather than into the process environment, so that a real environment
//! variable always wins and `--verbose` can say which source each value came from. Values are
//! parsed only when a command asks for them: `revision` must not fail on a bad `DB_POOL_SIZE`.

pub(crate) mod numbers;
mod parts;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::db::{Backend, DbUrl, PoolSettings};
use crate::error;
use crate::output;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Each setting's names, first present wins: dbctl's own, then the seed documents' spellings.
const URL: &[&str] = &["DATABASE_URL", "DATABASE_URI"];
const POOL_SIZE: &[&str] = &["DB_POOL_SIZE", "DATABASE_POOL_SIZE"];
const MAX_OVERFLOW: &[&str] = &["DB_MAX_OVERFLOW", "DATABASE_MAX_OVERFLOW"];
const ECHO: &[&str] = &["DB_ECHO", "DATABASE_ECHO"];
const SCHEMA: &str = "DATABASE_SCHEMA";
const LINT_ALLOW: &str = "DBCTL_LINT_ALLOW";
const LINT_NAMING: &str = "DBCTL_LINT_NAMING";
const LINT_LARGE_ROWS: &str = "DBCTL_LINT_LARGE_ROWS";

/// The database used when nothing else names one (diesel and sqlx users expect a local file).
pub(crate) const DEFAULT_DATABASE_URL: &str = "sqlite://dev.db";
pub(crate) const DEFAULT_MIGRATIONS_DIR: &str = "migrations";
pub(crate) const DEFAULT_SEEDS_DIR: &str = "seeds";
const DEFAULT_ENV_FILE: &str = ".env";
const DEFAULT_DIESEL_TOML: &str = "diesel.toml";

/// Where a value came from, for `--verbose`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Flag(&'static str),
    Env(String),
    /// Built from `DATABASE_HOST`, `DATABASE_NAME`, ... (the names listed).
    Built(String),
    DotEnv(String, PathBuf),
    DieselToml(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "from {flag}"),
            Source::Env(key) => write!(f, "from the environment variable {key}"),
            Source::Built(names) => write!(f, "built from {names}"),
            Source::DotEnv(key, path) => write!(f, "from {key} in {}", path.display()),
            Source::DieselToml(path) => write!(f, "from {}", path.display()),
            Source::Default => f.write_str("the default"),
        }
    }
}

/// The flags that take part in resolving settings.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides {
    pub(crate) database_url: Option<String>,
    pub(crate) env_file: Option<PathBuf>,
    pub(crate) migrations_dir: Option<PathBuf>,
}

pub(crate) struct Config {
    overrides: Overrides,
    dotenv: HashMap<String, String>,
    dotenv_path: Option<PathBuf>,
    /// diesel.toml's `[migrations_directory] dir`, resolved against the file's folder.
    diesel_migrations_dir: Option<(PathBuf, PathBuf)>,
    /// The diesel.toml read, if any (see [`find_diesel_toml`]).
    diesel_toml: Option<PathBuf>,
    /// The driver parameters [`Config::database_url`] took out of the URL, decoded.
    driver_params: RefCell<Vec<(String, String)>>,
    /// Where the URL came from, once resolved (for [`Config::explain`]).
    url_source: RefCell<Option<Source>>,
    /// That URL's backend, once resolved (a SQLite URL's `?timeout=` is pysqlite's busy timeout).
    url_backend: std::cell::Cell<Option<Backend>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The .env map may hold a password: never print it.
        f.debug_struct("Config")
            .field("dotenv_path", &self.dotenv_path)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads `.env` (or `--env-file`) and diesel.toml. A missing default `.env` is fine; a named
    /// one that is missing, unreadable or malformed is a usage error, and so is a bad diesel.toml.
    pub(crate) fn load(overrides: Overrides) -> anyhow::Result<Config> {
        let (dotenv, dotenv_path) = match &overrides.env_file {
            Some(path) => (read_env_file(path)?, Some(path.clone())),
            None if Path::new(DEFAULT_ENV_FILE).is_file() => {
                let path = PathBuf::from(DEFAULT_ENV_FILE);
                (read_env_file(&path)?, Some(path))
            }
            None => (HashMap::new(), None),
        };
        let mut config = Config {
            overrides,
            dotenv,
            dotenv_path,
            diesel_migrations_dir: None,
            diesel_toml: None,
            driver_params: RefCell::new(Vec::new()),
            url_source: RefCell::new(None),
            url_backend: std::cell::Cell::new(None),
        };
        let toml_path = match config.lookup("DIESEL_CONFIG_FILE") {
            Some((path, _)) => Some(PathBuf::from(path)),
            None => find_diesel_toml(),
        };
        if let Some(toml_path) = toml_path {
            config.diesel_migrations_dir =
                read_diesel_toml(&toml_path)?.map(|dir| (dir, toml_path.clone()));
            config.diesel_toml = Some(toml_path);
        }
        for (key, value) in &config.dotenv {
            if URL.contains(&key.as_str()) {
                DbUrl::parse(value).ok(); // registers its password for redaction, nothing more
            } else if key == "DATABASE_PASSWORD" {
                error::register_secret(value);
            }
        }
        if let Some((password, _)) = config.lookup("DATABASE_PASSWORD") {
            error::register_secret(&password);
        }
        Ok(config)
    }

    /// The diesel.toml in use (`DIESEL_CONFIG_FILE`, else found by [`find_diesel_toml`]).
    pub(crate) fn diesel_toml(&self) -> Option<&Path> {
        self.diesel_toml.as_deref()
    }

    /// A setting from the environment, else from `.env`.
    pub(crate) fn lookup(&self, key: &str) -> Option<(String, Source)> {
        if let Some(value) = std::env::var_os(key) {
            // A value that is not UTF-8 is kept (lossily) so that it fails as a bad value.
            let value = value.to_string_lossy().into_owned();
            return Some((value, Source::Env(key.to_string())));
        }
        let path = self.dotenv_path.clone()?;
        self.dotenv
            .get(key)
            .map(|v| (v.clone(), Source::DotEnv(key.to_string(), path)))
    }

    /// The first of `names` that is set (environment, then `.env`), and which name it was.
    pub(crate) fn lookup_any<'n>(&self, names: &[&'n str]) -> Option<(String, Source, &'n str)> {
        names
            .iter()
            .find_map(|name| self.lookup(name).map(|(v, s)| (v, s, *name)))
    }

    /// The database URL: `--database-url`, `DATABASE_URL` (or `DATABASE_URI`), built from
    /// `DATABASE_HOST`, `DATABASE_NAME`, ... when any of those is set, then `sqlite://dev.db`.
    /// Driver parameters libpq would refuse are taken out (see [`DRIVER_PARAMS`]).
    pub(crate) fn database_url(&self) -> anyhow::Result<(DbUrl, Source)> {
        let (raw, source) = match &self.overrides.database_url {
            Some(url) => (url.clone(), Source::Flag("--database-url")),
            None => match self.lookup_any(URL) {
                Some((value, source, name)) => {
                    if value.trim().is_empty() {
                        // An empty DATABASE_URL is usually a missing CI secret: falling back to a
                        // local file would "succeed" against the wrong database.
                        return Err(error::usage(format!(
                            "{name} is set but empty ({source}); unset it to use the default {DEFAULT_DATABASE_URL}"
                        )));
                    }
                    (value, source)
                }
                None => match parts::url_from_parts(self)? {
                    Some(built) => built,
                    None => (DEFAULT_DATABASE_URL.to_string(), Source::Default),
                },
            },
        };
        let mut url = DbUrl::parse(&raw)?;
        *self.driver_params.borrow_mut() = url.take_query_params(url.backend().driver_params());
        self.url_backend.set(Some(url.backend()));
        *self.url_source.borrow_mut() = Some(source.clone());
        Ok((url, source))
    }

    /// For `-v`: every `DB_*` and `DATABASE_*` name that is set (environment or `.env`), where it
    /// came from and what it does, including those that have no effect and why. Call after
    /// [`Config::database_url`]. Values are shown except passwords and URLs (shown redacted
    /// elsewhere).
    pub(crate) fn explain(&self, backend: Backend) -> Vec<String> {
        let mut names: Vec<(String, bool)> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| is_setting_name(k))
            .map(|k| (k, true))
            .collect();
        for key in self.dotenv.keys().filter(|k| is_setting_name(k)) {
            names.push((key.clone(), false));
        }
        names.sort();
        names.dedup();
        let url_source = self.url_source.borrow().clone();
        let built = matches!(url_source, Some(Source::Built(_)));
        let mut lines = Vec::new();
        for (name, in_env) in &names {
            let value = if *in_env {
                std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
            } else {
                self.dotenv.get(name).cloned()
            };
            // Only the values of known, non-secret settings are shown: an unknown `DB_PASSWORD`
            // or `DATABASE_TOKEN` may hold a secret dbctl was never told about.
            let shown = match name.as_str() {
                "DATABASE_PASSWORD" => "***".to_string(),
                n if URL.contains(&n) => "(the URL)".to_string(),
                n if is_known(n) => output::quote(value.as_deref().unwrap_or_default()),
                _ => "(value not shown)".to_string(),
            };
            let source = match (in_env, &self.dotenv_path) {
                (true, _) => "the environment".to_string(),
                (false, Some(path)) => path.display().to_string(),
                (false, None) => ".env".to_string(),
            };
            let effect = if !*in_env && std::env::var_os(name).is_some() {
                "no effect: the environment variable of the same name wins".to_string()
            } else {
                self.effect(name, backend, url_source.as_ref(), built)
            };
            lines.push(format!("setting {name}={shown} (from {source}): {effect}"));
        }
        for (key, value) in self.driver_params.borrow().iter() {
            let sqlite = !backend.has_server();
            let effect = match key.as_str() {
                "timeout" if sqlite && self.lookup("DB_STATEMENT_TIMEOUT").is_some() => {
                    "no effect: DB_STATEMENT_TIMEOUT is set and wins".to_string()
                }
                "timeout" if sqlite => "used as the busy timeout (DB_STATEMENT_TIMEOUT)".into(),
                _ if sqlite => {
                    "accepted, no effect: a Python sqlite3 option that SQLite has no counterpart for"
                        .to_string()
                }
                "command_timeout" if self.lookup("DB_STATEMENT_TIMEOUT").is_some() => {
                    "no effect: DB_STATEMENT_TIMEOUT is set and wins".to_string()
                }
                "command_timeout" => "used as the statement timeout (DB_STATEMENT_TIMEOUT)".into(),
                "timeout" if self.lookup("DB_CONNECT_TIMEOUT").is_some() => {
                    "no effect: DB_CONNECT_TIMEOUT is set and wins".to_string()
                }
                "timeout" => "used as the connect timeout (DB_CONNECT_TIMEOUT)".into(),
                _ => "accepted, no effect: an asyncpg/SQLAlchemy option that libpq has no counterpart for"
                    .to_string(),
            };
            lines.push(format!(
                "URL parameter {key}={}: {effect}",
                output::quote(value)
            ));
        }
        lines
    }

    /// Warnings about settings that are probably not meant as dbctl reads them (printed even
    /// without `-v`). Call after [`Config::database_url`].
    pub(crate) fn warnings(&self, backend: Backend) -> Vec<String> {
        let mut out = Vec::new();
        let built = matches!(*self.url_source.borrow(), Some(Source::Built(_)));
        let schema = self.lookup(SCHEMA).filter(|(v, _)| !v.trim().is_empty());
        if let (true, true, Some((schema, _)), None) = (
            built,
            backend.has_schemas(),
            schema,
            self.lookup("DATABASE_NAME"),
        ) {
            out.push(format!(
                "DATABASE_SCHEMA={} is used as the PostgreSQL schema, and no DATABASE_NAME is set, so \
                 the database is libpq's default (the user name); projects that use DATABASE_SCHEMA \
                 as the database name (fastapi-best-architecture) should also set DATABASE_NAME={}",
                output::quote(&schema),
                output::quote(&schema)
            ));
        }
        out
    }

    fn effect(
        &self,
        name: &str,
        backend: Backend,
        url_source: Option<&Source>,
        built: bool,
    ) -> String {
        let shadowed = |group: &[&str]| {
            let winner = group.iter().find(|n| self.lookup(n).is_some())?;
            (*winner != name).then(|| format!("no effect: {winner} is also set and wins"))
        };
        let meaning = match name {
            "DATABASE_URL" | "DATABASE_URI" => {
                if let Some(Source::Flag(flag)) = url_source {
                    return format!("no effect: {flag} wins");
                }
                if let Some(note) = shadowed(URL) {
                    return note;
                }
                "the database URL"
            }
            n if parts::PARTS.contains(&n) => {
                if !built {
                    return match url_source {
                        Some(source) => format!("no effect: the URL comes {source}"),
                        None => "no effect: this command uses no database".to_string(),
                    };
                }
                if !backend.has_server() && parts::SERVER_PARTS.contains(&n) {
                    return "no effect on a SQLite file".to_string();
                }
                "part of the database URL"
            }
            SCHEMA if !backend.has_schemas() => return "no effect on SQLite (PostgreSQL only)".to_string(),
            SCHEMA => "the PostgreSQL schema (first on search_path): migrations, bookkeeping tables, seeds and inspect use it",
            n if POOL_SIZE.contains(&n) => {
                if let Some(note) = shadowed(POOL_SIZE) {
                    return note;
                }
                "the pool size (r2d2 max_size, together with the overflow)"
            }
            n if MAX_OVERFLOW.contains(&n) => {
                if let Some(note) = shadowed(MAX_OVERFLOW) {
                    return note;
                }
                "added to the pool size: r2d2 has one limit (-1: up to 1000)"
            }
            n if ECHO.contains(&n) => {
                if let Some(note) = shadowed(ECHO) {
                    return note;
                }
                "log each SQL statement to stderr (debug: statements only, not result rows)"
            }
            "DB_POOL_TIMEOUT" => "seconds to wait for a free pooled connection",
            "DB_POOL_RECYCLE" => "seconds before a connection is replaced",
            "DB_POOL_PRE_PING" => "test each connection when it is taken from the pool",
            "DB_STATEMENT_TIMEOUT" => "PostgreSQL's statement_timeout and SQLite's busy timeout",
            "DB_CONNECT_TIMEOUT" => "bound on each connection attempt",
            _ => return "no effect: not a setting dbctl knows".to_string(),
        };
        meaning.to_string()
    }

    /// The migrations folder: `--migrations-dir`, `MIGRATION_DIRECTORY` (diesel_cli's variable),
    /// diesel.toml's `[migrations_directory] dir`, then `migrations`.
    pub(crate) fn migrations_dir(&self) -> (PathBuf, Source) {
        if let Some(dir) = &self.overrides.migrations_dir {
            return (dir.clone(), Source::Flag("--migrations-dir"));
        }
        if let Some((dir, source)) = self.lookup("MIGRATION_DIRECTORY") {
            return (PathBuf::from(dir), source);
        }
        if let Some((dir, file)) = &self.diesel_migrations_dir {
            return (dir.clone(), Source::DieselToml(file.clone()));
        }
        (PathBuf::from(DEFAULT_MIGRATIONS_DIR), Source::Default)
    }

    /// The seeds folder: the command's flag, `DBCTL_SEEDS_DIR`, then `seeds`.
    pub(crate) fn seeds_dir(&self, flag: Option<&Path>) -> (PathBuf, Source) {
        if let Some(dir) = flag {
            return (dir.to_path_buf(), Source::Flag("--seeds-dir"));
        }
        if let Some((dir, source)) = self.lookup("DBCTL_SEEDS_DIR") {
            return (PathBuf::from(dir), source);
        }
        (PathBuf::from(DEFAULT_SEEDS_DIR), Source::Default)
    }

    /// The lint rules `inspect --lint` turns off: the `--allow` values, else `DBCTL_LINT_ALLOW`
    /// (comma-separated, from the environment or `.env`), else none.
    pub(crate) fn lint_allow(&self, flag: &[String]) -> (Vec<String>, Source) {
        if !flag.is_empty() {
            return (flag.to_vec(), Source::Flag("--allow"));
        }
        if let Some((raw, source)) = self.lookup(LINT_ALLOW) {
            return (raw.split(',').map(str::to_string).collect(), source);
        }
        (Vec::new(), Source::Default)
    }

    /// `DBCTL_LINT_NAMING`: the naming convention `inspect --lint` checks names against (one of
    /// `conventions`), or `None` (`none`, empty or unset: the name rules do not run by default).
    pub(crate) fn lint_naming(
        &self,
        conventions: &[&'static str],
    ) -> anyhow::Result<(Option<&'static str>, Source)> {
        let Some((raw, source)) = self.lookup(LINT_NAMING) else {
            return Ok((None, Source::Default));
        };
        let value = raw.trim().to_ascii_lowercase();
        if value.is_empty() || value == "none" {
            return Ok((None, source));
        }
        match conventions.iter().find(|c| **c == value) {
            Some(c) => Ok((Some(c), source)),
            None => Err(bad_value(
                LINT_NAMING,
                &raw,
                &source,
                &format!("{} or none", conventions.join(", ")),
            )),
        }
    }

    /// `DBCTL_LINT_LARGE_ROWS`: the rows from which `inspect --lint` counts a table as large, else
    /// `default`.
    pub(crate) fn lint_large_rows(&self, default: i64) -> anyhow::Result<i64> {
        let Some((raw, source)) = self.lookup(LINT_LARGE_ROWS) else {
            return Ok(default);
        };
        raw.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad_value(LINT_LARGE_ROWS, &raw, &source, "a whole number of rows"))
    }

    /// Pool and connection settings; `connect_timeout` (from `ping --timeout`) overrides
    /// `DB_CONNECT_TIMEOUT`. Call after [`Config::database_url`]: asyncpg's `?command_timeout=`
    /// and `?timeout=` in the URL count too.
    pub(crate) fn pool_settings(
        &self,
        connect_timeout: Option<Duration>,
    ) -> anyhow::Result<PoolSettings> {
        let connect_timeout = match connect_timeout {
            Some(t) => t,
            None => match self.seconds(&["DB_CONNECT_TIMEOUT"], numbers::CONNECT_TIMEOUT)? {
                Some(t) => t.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                None if !self.resolved_backend().has_server() => DEFAULT_CONNECT_TIMEOUT,
                None => self
                    .driver_seconds("timeout", numbers::CONNECT_TIMEOUT)?
                    .flatten()
                    .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            },
        };
        let statement_timeout =
            match self.seconds(&["DB_STATEMENT_TIMEOUT"], numbers::STATEMENT_TIMEOUT)? {
                // 0 is "no limit": PostgreSQL's statement_timeout = 0, SQLite never waits for a lock.
                Some(t) => Some(t.unwrap_or(Duration::ZERO)),
                None => {
                    // asyncpg's command_timeout; pysqlite's timeout is SQLite's busy timeout.
                    let key = self.resolved_backend().statement_timeout_param();
                    self.driver_seconds(key, numbers::STATEMENT_TIMEOUT)?
                        .map(|t| t.unwrap_or(Duration::ZERO))
                }
            };
        Ok(PoolSettings {
            size: self.pool_size()?,
            timeout: self
                .seconds(&["DB_POOL_TIMEOUT"], numbers::POOL_TIMEOUT)?
                .flatten()
                .unwrap_or(Duration::from_secs(30)),
            recycle: self
                .seconds(&["DB_POOL_RECYCLE"], numbers::POOL_RECYCLE)?
                .unwrap_or(Some(Duration::from_secs(3600))),
            pre_ping: self.flag(&["DB_POOL_PRE_PING"])?.unwrap_or(true),
            echo: self.flag(ECHO)?.unwrap_or(false),
            statement_timeout,
            connect_timeout,
            schema: self.schema()?,
            pgbouncer: self.pgbouncer()?,
            lock_expiry: self
                .seconds(&["DB_LOCK_EXPIRY"], numbers::LOCK_EXPIRY)?
                .flatten()
                .unwrap_or(crate::migrate::DEFAULT_LOCK_EXPIRY),
        })
    }

    /// `DB_PGBOUNCER`: `true` or `false` says whether a transaction-pooling proxy stands between
    /// dbctl and the server; `auto` (or unset) lets dbctl find out.
    fn pgbouncer(&self) -> anyhow::Result<Option<bool>> {
        match self.lookup("DB_PGBOUNCER") {
            Some((raw, _)) if raw.trim().eq_ignore_ascii_case("auto") => Ok(None),
            _ => self.flag(&["DB_PGBOUNCER"]),
        }
    }

    /// r2d2 has one limit where SQLAlchemy has two: the pool size plus the overflow.
    fn pool_size(&self) -> anyhow::Result<u32> {
        let size = self.count(POOL_SIZE, numbers::POOL_SIZE)?.unwrap_or(5);
        let overflow = self
            .count(MAX_OVERFLOW, numbers::MAX_OVERFLOW)?
            .unwrap_or(0);
        // Both are range-checked, so the sum is small; -1 is SQLAlchemy's "no limit".
        let total = if overflow < 0 {
            size.max(numbers::POOL_SIZE.max())
        } else {
            size + overflow
        };
        Ok(u32::try_from(total).unwrap_or(1).max(1))
    }

    /// `DATABASE_SCHEMA`: the PostgreSQL schema put first on each connection's search_path.
    pub(crate) fn schema(&self) -> anyhow::Result<Option<String>> {
        let Some((raw, source)) = self.lookup(SCHEMA) else {
            return Ok(None);
        };
        if !self.resolved_backend().has_schemas() {
            return Ok(None); // no effect on SQLite, and `-v` says so
        }
        let name = raw.trim();
        if name.is_empty() {
            return Ok(None);
        }
        if name.len() > 63 || name.contains('\0') {
            return Err(bad_value(
                SCHEMA,
                &raw,
                &source,
                "a schema name of 1 to 63 bytes (PostgreSQL keeps only 63)",
            ));
        }
        Ok(Some(name.to_string()))
    }

    fn seconds(
        &self,
        names: &[&str],
        spec: numbers::Seconds,
    ) -> anyhow::Result<Option<Option<Duration>>> {
        let Some((raw, source, name)) = self.lookup_any(names) else {
            return Ok(None);
        };
        spec.parse(&raw)
            .map(Some)
            .map_err(|want| bad_value(name, &raw, &source, &want))
    }

    /// The backend of the resolved URL; before [`Config::database_url`], a server's (nothing is
    /// read as a SQLite option until a SQLite URL is seen).
    fn resolved_backend(&self) -> Backend {
        self.url_backend.get().unwrap_or(Backend::Postgres)
    }

    /// A driver parameter taken out of the URL (asyncpg's `command_timeout`, `timeout`).
    fn driver_seconds(
        &self,
        key: &str,
        spec: numbers::Seconds,
    ) -> anyhow::Result<Option<Option<Duration>>> {
        let params = self.driver_params.borrow();
        let Some((_, raw)) = params.iter().rev().find(|(k, _)| k == key) else {
            return Ok(None);
        };
        spec.parse(raw).map(Some).map_err(|want| {
            error::usage(format!(
                "invalid URL parameter {key}={} (read by dbctl): {want}",
                output::quote(raw)
            ))
        })
    }

    fn count(&self, names: &[&str], spec: numbers::Count) -> anyhow::Result<Option<i64>> {
        let Some((raw, source, name)) = self.lookup_any(names) else {
            return Ok(None);
        };
        spec.parse(&raw)
            .map(Some)
            .map_err(|want| bad_value(name, &raw, &source, &want))
    }

    /// A boolean; SQLAlchemy's `echo="debug"` (statements and result rows) counts as true: dbctl
    /// logs the statements.
    fn flag(&self, names: &[&str]) -> anyhow::Result<Option<bool>> {
        let Some((raw, source, name)) = self.lookup_any(names) else {
            return Ok(None);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "debug" if names == ECHO => Ok(Some(true)),
            "0" | "false" | "no" | "off" | "" => Ok(Some(false)),
            _ if names == ECHO => Err(bad_value(name, &raw, &source, "true, false or debug")),
            _ => Err(bad_value(name, &raw, &source, "true or false")),
        }
    }
}

/// Whether dbctl reads this name (its value can then be shown by `-v`).
fn is_known(name: &str) -> bool {
    const OTHERS: &[&str] = &[
        "DB_POOL_TIMEOUT",
        "DB_POOL_RECYCLE",
        "DB_POOL_PRE_PING",
        "DB_STATEMENT_TIMEOUT",
        "DB_CONNECT_TIMEOUT",
        SCHEMA,
    ];
    [URL, POOL_SIZE, MAX_OVERFLOW, ECHO, parts::PARTS, OTHERS]
        .iter()
        .any(|group| group.contains(&name))
}

/// The names `-v` reports on: dbctl's `DB_*` settings and the seed documents' `DATABASE_*` ones.
fn is_setting_name(name: &str) -> bool {
    name.starts_with("DB_") || name.starts_with("DATABASE_")
}

fn bad_value(key: &str, raw: &str, source: &Source, want: &str) -> anyhow::Error {
    let want = want.strip_prefix("expected ").unwrap_or(want);
    error::usage(format!(
        "invalid {key} {} ({source}): expected {want}",
        output::quote(raw)
    ))
}

fn read_env_file(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| error::usage(format!("cannot read env file `{}`: {e}", path.display())))?;
    let mut map = HashMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        let (key, value) = item.map_err(|e| {
            error::usage(format!(
                "malformed env file `{}`: {}",
                path.display(),
                env_error(&e, &text)
            ))
        })?;
        map.insert(key, value);
    }
    Ok(map)
}

/// dotenvy's parse errors quote the offending line, which may hold a password: say where it is
/// instead.
fn env_error(err: &dotenvy::Error, text: &str) -> String {
    match err {
        dotenvy::Error::LineParse(line, index) => {
            let first = line.lines().next().unwrap_or_default();
            let line_no = text.lines().position(|l| l == first).map_or(1, |i| i + 1);
            format!("cannot parse line {line_no} at character {}", index + 1)
        }
        dotenvy::Error::Io(io) => io.to_string(),
        other => error::redact_driver(&other.to_string()),
    }
}

/// diesel.toml in the current folder, else in the nearest parent folder that has one, looking
/// no higher than the folder holding Cargo.toml (the project root, as diesel_cli looks). Found
/// in the current folder it is `diesel.toml`, as before; higher up, its path from there.
fn find_diesel_toml() -> Option<PathBuf> {
    let here = Path::new(DEFAULT_DIESEL_TOML);
    if here.is_file() {
        return Some(here.to_path_buf());
    }
    if Path::new("Cargo.toml").is_file() {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let mut up = PathBuf::new();
    for dir in cwd.ancestors().skip(1) {
        up.push("..");
        if dir.join(DEFAULT_DIESEL_TOML).is_file() {
            return Some(up.join(DEFAULT_DIESEL_TOML));
        }
        if dir.join("Cargo.toml").is_file() {
            return None;
        }
    }
    None
}

/// diesel.toml's `[migrations_directory] dir`, relative to the file's folder.
fn read_diesel_toml(path: &Path) -> anyhow::Result<Option<PathBuf>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| error::usage(format!("cannot read `{}`: {e}", path.display())))?;
    let value: toml::Table = toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_string();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        match line {
            Some(line) => error::usage(format!(
                "malformed `{}` at line {line}: {msg}",
                path.display()
            )),
            None => error::usage(format!("malformed `{}`: {msg}", path.display())),
        }
    })?;
    let Some(section) = value.get("migrations_directory") else {
        return Ok(None);
    };
    let dir = section.get("dir").and_then(|d| d.as_str()).ok_or_else(|| {
        error::usage(format!(
            "`{}`: [migrations_directory] needs `dir = \"path\"`",
            path.display()
        ))
    })?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    Ok(Some(match base {
        Some(base) if Path::new(dir).is_relative() => base.join(dir),
        _ => PathBuf::from(dir),
    }))
}
