//! Where each setting comes from: flag, then the process environment, then the `.env` file, then
//! diesel.toml, then the built-in default.
//!
//! `.env` is read into a map rather than into the process environment, so that a real environment
//! variable always wins and `--verbose` can say which source each value came from. Values are
//! parsed only when a command asks for them: `revision` must not fail on a bad `DB_POOL_SIZE`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::db::{DbUrl, PoolSettings};
use crate::error;

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
    DotEnv(String, PathBuf),
    DieselToml(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "from {flag}"),
            Source::Env(key) => write!(f, "from the environment variable {key}"),
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
        };
        let (toml_path, named) = match config.lookup("DIESEL_CONFIG_FILE") {
            Some((path, _)) => (PathBuf::from(path), true),
            None => (PathBuf::from(DEFAULT_DIESEL_TOML), false),
        };
        if named || toml_path.is_file() {
            config.diesel_migrations_dir =
                read_diesel_toml(&toml_path)?.map(|dir| (dir, toml_path));
        }
        for (key, value) in &config.dotenv {
            if key == "DATABASE_URL" {
                DbUrl::parse(value).ok(); // registers its password for redaction, nothing more
            }
        }
        Ok(config)
    }

    /// A setting from the environment, else from `.env`.
    pub(crate) fn lookup(&self, key: &str) -> Option<(String, Source)> {
        if let Ok(value) = std::env::var(key) {
            return Some((value, Source::Env(key.to_string())));
        }
        let path = self.dotenv_path.clone()?;
        self.dotenv
            .get(key)
            .map(|v| (v.clone(), Source::DotEnv(key.to_string(), path)))
    }

    /// The database URL: `--database-url`, `DATABASE_URL`, `.env`, then `sqlite://dev.db`.
    pub(crate) fn database_url(&self) -> anyhow::Result<(DbUrl, Source)> {
        let (raw, source) = match &self.overrides.database_url {
            Some(url) => (url.clone(), Source::Flag("--database-url")),
            None => match self.lookup("DATABASE_URL") {
                Some((value, source)) => {
                    if value.trim().is_empty() {
                        // An empty DATABASE_URL is usually a missing CI secret: falling back to a
                        // local file would "succeed" against the wrong database.
                        return Err(error::usage(format!(
                            "DATABASE_URL is set but empty ({source}); unset it to use the default {DEFAULT_DATABASE_URL}"
                        )));
                    }
                    (value, source)
                }
                None => (DEFAULT_DATABASE_URL.to_string(), Source::Default),
            },
        };
        let url = DbUrl::parse(&raw)?;
        Ok((url, source))
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

    /// Pool and connection settings; `connect_timeout` (from `ping --timeout`) overrides
    /// `DB_CONNECT_TIMEOUT`.
    pub(crate) fn pool_settings(
        &self,
        connect_timeout: Option<Duration>,
    ) -> anyhow::Result<PoolSettings> {
        let connect_timeout = match connect_timeout {
            Some(t) => t,
            None => self
                .seconds("DB_CONNECT_TIMEOUT")?
                .unwrap_or(Duration::from_secs(5)),
        };
        let recycle = self
            .seconds_or_off("DB_POOL_RECYCLE")?
            .unwrap_or(Some(Duration::from_secs(3600)));
        Ok(PoolSettings {
            size: self.pool_size()?,
            timeout: self
                .seconds("DB_POOL_TIMEOUT")?
                .unwrap_or(Duration::from_secs(30)),
            recycle,
            pre_ping: self.flag("DB_POOL_PRE_PING")?.unwrap_or(true),
            echo: self.flag("DB_ECHO")?.unwrap_or(false),
            statement_timeout: self.seconds_allow_zero("DB_STATEMENT_TIMEOUT")?,
            pgbouncer: self.pgbouncer()?,
            lock_expiry: match self.seconds("DB_LOCK_EXPIRY")? {
                Some(t) if t >= Duration::from_secs(1) => t,
                Some(_) => {
                    let (raw, source) = self
                        .lookup("DB_LOCK_EXPIRY")
                        .unwrap_or((String::new(), Source::Default));
                    return Err(bad_value(
                        "DB_LOCK_EXPIRY",
                        &raw,
                        &source,
                        "a number of seconds of at least 1",
                    ));
                }
                None => crate::db::lease::DEFAULT_EXPIRY,
            },
            connect_timeout: if connect_timeout.is_zero() {
                Duration::from_secs(1)
            } else {
                connect_timeout
            },
        })
    }

    /// `DB_PGBOUNCER`: `true` or `false` says whether a transaction-pooling proxy stands between
    /// dbctl and the server; `auto` (or unset) lets dbctl find out.
    fn pgbouncer(&self) -> anyhow::Result<Option<bool>> {
        match self.lookup("DB_PGBOUNCER") {
            Some((raw, _)) if raw.trim().eq_ignore_ascii_case("auto") => Ok(None),
            _ => self.flag("DB_PGBOUNCER"),
        }
    }

    fn pool_size(&self) -> anyhow::Result<u32> {
        match self.lookup("DB_POOL_SIZE") {
            None => Ok(5),
            Some((raw, source)) => match raw.trim().parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(bad_value(
                    "DB_POOL_SIZE",
                    &raw,
                    &source,
                    "a whole number of at least 1",
                )),
            },
        }
    }

    fn parse_seconds(&self, key: &str, allow_zero: bool) -> anyhow::Result<Option<(f64, Source)>> {
        let Some((raw, source)) = self.lookup(key) else {
            return Ok(None);
        };
        match raw.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && (s > 0.0 || (allow_zero && s >= 0.0)) && s < 1e9 => {
                Ok(Some((s, source)))
            }
            _ => {
                let want = if allow_zero {
                    "a number of seconds, 0 or more"
                } else {
                    "a number of seconds greater than 0"
                };
                Err(bad_value(key, &raw, &source, want))
            }
        }
    }

    fn seconds(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        Ok(self
            .parse_seconds(key, false)?
            .map(|(s, _)| Duration::from_secs_f64(s)))
    }

    fn seconds_allow_zero(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        Ok(self
            .parse_seconds(key, true)?
            .map(|(s, _)| Duration::from_secs_f64(s)))
    }

    /// Seconds where 0 or a negative number (SQLAlchemy's -1) turns the feature off.
    fn seconds_or_off(&self, key: &str) -> anyhow::Result<Option<Option<Duration>>> {
        let Some((raw, source)) = self.lookup(key) else {
            return Ok(None);
        };
        match raw.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s <= 0.0 => Ok(Some(None)),
            Ok(s) if s.is_finite() && s < 1e9 => Ok(Some(Some(Duration::from_secs_f64(s)))),
            _ => Err(bad_value(
                key,
                &raw,
                &source,
                "a number of seconds (0 or -1 turns it off)",
            )),
        }
    }

    fn flag(&self, key: &str) -> anyhow::Result<Option<bool>> {
        let Some((raw, source)) = self.lookup(key) else {
            return Ok(None);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" | "" => Ok(Some(false)),
            _ => Err(bad_value(key, &raw, &source, "true or false")),
        }
    }
}

fn bad_value(key: &str, raw: &str, source: &Source, want: &str) -> anyhow::Error {
    error::usage(format!("invalid {key} `{raw}` ({source}): expected {want}"))
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
