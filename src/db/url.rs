//! Database URLs: which backend a URL names, what the driver is given, and how it is shown.
//!
//! dbctl chooses the backend from the scheme itself (diesel's `MultiConnection` would try every
//! backend and lose the real error). PostgreSQL URLs and libpq `key=value` strings are checked
//! here, before libpq sees them, and their errors never quote the input: a password can hold any
//! byte, and a mistyped URL puts it where no parser expects it. SQLite forms follow the rule in
//! [`sqlite`].

mod conninfo;
pub(crate) mod libpq;
pub(crate) mod sqlite;

use std::fmt;
use std::path::PathBuf;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::Backend;
use crate::error::{self, register_secret};

pub(crate) use sqlite::Readings;

/// The forms listed in every "unsupported URL" error.
pub(crate) const ACCEPTED_FORMS: &str = "postgres://, postgresql://, postgresql+<driver>:// \
(SQLAlchemy style, e.g. postgresql+asyncpg://), a libpq `host=... dbname=...` string, \
sqlite:///relative/path or sqlite:////absolute/path (SQLAlchemy style), sqlite://relative/path, \
sqlite://, sqlite::memory:, file:path (SQLite URI), or a plain file path";

/// Where the PostgreSQL server's socket usually is when neither the URL nor `PGHOST` names one
/// (the bundled libpq only looks in /tmp; Debian's server listens in /var/run/postgresql).
const SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/run/postgresql", "/tmp"];

/// Where a SQLite database lives.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum SqliteTarget {
    /// A file on disk, as an absolute path (from a plain path, `sqlite:` or a `file:` URI).
    File(PathBuf),
    /// `sqlite::memory:` and friends: one in-memory database shared by the pool's connections.
    Memory,
}

/// SQLAlchemy/asyncpg options written as URL query parameters. libpq refuses unknown
/// parameters, so these are taken out of the URL: `command_timeout` and `timeout` are used as the
/// statement and connect timeouts, the others are accepted and reported in `-v` as without effect.
pub(crate) const DRIVER_PARAMS: &[&str] = &[
    "command_timeout",
    "timeout",
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
    "statement_cache_size",
    "max_cached_statement_lifetime",
    "max_cacheable_statement_size",
    "async_fallback",
    "direct_tls",
    "server_settings",
];

/// pysqlite's options in a SQLite URL (`sqlite:///app.db?timeout=20&check_same_thread=false`):
/// SQLite itself would ignore them silently. `timeout` is the busy timeout
/// (`DB_STATEMENT_TIMEOUT`); the others have no effect, said by `-v`.
pub(crate) const SQLITE_DRIVER_PARAMS: &[&str] = &[
    "timeout",
    "check_same_thread",
    "cached_statements",
    "detect_types",
    "isolation_level",
    "factory",
    "uri",
];

/// The parts of a PostgreSQL URL, kept percent-encoded as written so that the URL can be rebuilt.
#[derive(Clone)]
struct PgParts {
    user: Option<String>,
    password: Option<String>,
    /// `host[:port]` list as written (libpq accepts several, comma-separated).
    hosts: String,
    dbname: String,
    query: Vec<(String, String)>,
    /// `pgbouncer=true|false`: dbctl's own parameter (Prisma's name), never passed to libpq.
    pgbouncer: Option<bool>,
    /// Driver options ([`DRIVER_PARAMS`]) set aside before libpq sees the query: libpq refuses
    /// names it does not know.
    driver: Vec<(String, String)>,
}

/// A parsed database URL. Its `Debug` and `Display` never show the password.
#[derive(Clone)]
pub(crate) struct DbUrl {
    backend: Backend,
    sqlite: Option<SqliteTarget>,
    /// What SQLite's open call gets (a path or a `file:` URI).
    sqlite_conn: String,
    /// Both files a `sqlite:///a/b.db` could mean, when neither exists.
    readings: Option<Readings>,
    pg: Option<PgParts>,
    /// What normalisation changed, for `--verbose`.
    notes: Vec<String>,
    /// The one server connections go to, when the URL names several (see [`DbUrl::pin`]).
    pin: Option<libpq::Chosen>,
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.redacted())
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl DbUrl {
    pub(crate) fn parse(raw: &str) -> anyhow::Result<DbUrl> {
        register_url_secrets(raw);
        if raw.trim().is_empty() {
            return Err(error::usage(format!(
                "the database URL is empty; accepted forms: {ACCEPTED_FORMS}"
            )));
        }
        if raw != raw.trim() {
            return Err(error::usage(
                "the database URL has leading or trailing white space",
            ));
        }
        if conninfo::looks_like(raw) {
            return Self::from_conninfo(raw);
        }
        let (scheme, rest) = match split_scheme(raw) {
            Some(parts) => parts,
            None => {
                return sqlite::from_path(raw)
                    .map(|form| Self::sqlite(form, Vec::new()))
                    .map_err(error::usage)
            }
        };
        let lower = scheme.to_ascii_lowercase();
        let (base, driver) = match lower.split_once('+') {
            Some((base, driver)) => (base.to_string(), Some(driver.to_string())),
            None => (lower.clone(), None),
        };
        let mut notes = Vec::new();
        if let Some(driver) = &driver {
            notes.push(format!(
                "normalised the SQLAlchemy scheme `{scheme}:` to `{base}:` (the `+{driver}` driver suffix is Python's; dbctl uses libpq or SQLite directly)"
            ));
        }
        match base.as_str() {
            "postgres" | "postgresql" => {
                let Some(after) = rest.strip_prefix("//") else {
                    return Err(unsupported(
                        scheme,
                        "a PostgreSQL URL needs `//` after the scheme",
                    ));
                };
                let pg = parse_pg(after, &mut notes)?;
                Self::postgres(pg, notes)
            }
            "sqlite" => sqlite::from_url(rest)
                .map(|form| Self::sqlite(form, notes))
                .map_err(|why| unsupported(scheme, &why)),
            "file" if driver.is_none() => Self::sqlite_file_uri(raw, notes),
            "mysql" | "mariadb" => Err(unsupported(scheme, "MySQL is not supported")),
            _ => Err(unsupported(scheme, &unknown_scheme_hint(scheme, rest))),
        }
    }

    /// A libpq `key=value` string, turned into the URL form (values percent-encoded).
    fn from_conninfo(raw: &str) -> anyhow::Result<DbUrl> {
        let pairs = conninfo::parse(raw, &mut |pw| register_secret(pw))
            .map_err(|why| error::usage(format!("invalid libpq connection string: {why}")))?;
        let mut pg = PgParts {
            user: None,
            password: None,
            hosts: String::new(),
            dbname: String::new(),
            query: Vec::new(),
            pgbouncer: None,
            driver: Vec::new(),
        };
        for (key, value) in pairs {
            let encoded = percent_encode(&value);
            if key == "dbname" && (value.contains('=') || value.contains("://")) {
                // libpq would read such a dbname as a second connection string.
                return Err(error::usage(
                    "invalid libpq connection string: `dbname` holds a connection string of its own; give its parts as keywords",
                ));
            }
            match key.as_str() {
                "user" => pg.user = Some(encoded),
                "password" => pg.password = Some(encoded),
                "dbname" => pg.dbname = encoded,
                _ => pg.query.push((key, encoded)),
            }
        }
        if pg.password.is_some() && pg.user.is_none() {
            // The URL form can only carry a password after a user name.
            let pw = pg.password.take().unwrap_or_default();
            pg.query.push(("password".to_string(), pw));
        }
        pg.pgbouncer = take_pgbouncer(&mut pg.query)
            .map_err(|why| error::usage(format!("invalid libpq connection string: {why}")))?;
        check_query(&pg.query)
            .map_err(|why| error::usage(format!("invalid libpq connection string: {why}")))?;
        let notes = vec!["read a libpq key=value connection string".to_string()];
        Self::postgres(pg, notes)
    }

    fn postgres(mut pg: PgParts, mut notes: Vec<String>) -> anyhow::Result<DbUrl> {
        if let Some(dir) = socket_dir(&pg) {
            notes.push(format!(
                "no host given (URL or PGHOST): using the server socket found in {dir}"
            ));
            pg.query.push(("host".to_string(), percent_encode(dir)));
        }
        let url = DbUrl {
            backend: Backend::Postgres,
            sqlite: None,
            sqlite_conn: String::new(),
            readings: None,
            pg: Some(pg),
            notes,
            pin: None,
        };
        // The last word is libpq's own parser: what it cannot parse is a usage error by that
        // fact. Its message may quote the string, so only registered secrets are cut from it.
        libpq::parse(&url.connection_string(5)).map_err(|why| {
            error::usage(format!(
                "invalid PostgreSQL URL: {}",
                error::redact_driver(&why)
            ))
        })?;
        Ok(url)
    }

    fn sqlite(form: sqlite::Form, mut notes: Vec<String>) -> DbUrl {
        match form {
            sqlite::Form::Memory => Self::memory(notes),
            sqlite::Form::File {
                path,
                query,
                readings,
                note,
            } => {
                notes.extend(note);
                let conn = match query {
                    // Query parameters (mode=ro, ...) only mean something to SQLite in a URI.
                    Some(q) => format!("file:{}?{q}", uri_path(&path.to_string_lossy())),
                    None => path.to_string_lossy().into_owned(),
                };
                DbUrl {
                    backend: Backend::Sqlite,
                    sqlite: Some(SqliteTarget::File(path)),
                    sqlite_conn: conn,
                    readings,
                    pg: None,
                    notes,
                    pin: None,
                }
            }
        }
    }

    fn memory(notes: Vec<String>) -> DbUrl {
        DbUrl {
            backend: Backend::Sqlite,
            sqlite: Some(SqliteTarget::Memory),
            // Shared cache, so that every pooled connection sees the same in-memory database.
            sqlite_conn: "file:dbctl-memory?mode=memory&cache=shared".to_string(),
            readings: None,
            pg: None,
            notes,
            pin: None,
        }
    }

    /// A `file:` URI, passed to SQLite as written; its path is kept for existence checks.
    fn sqlite_file_uri(uri: &str, notes: Vec<String>) -> anyhow::Result<DbUrl> {
        let body = &uri["file:".len()..];
        let (path, query) = body.split_once('?').unwrap_or((body, ""));
        let path = match path.strip_prefix("//") {
            // file://host/path: only an empty host or localhost is allowed by SQLite.
            Some(after) => after.find('/').map_or("", |i| &after[i..]),
            None => path,
        };
        let path = percent_decode(path)
            .ok_or_else(|| unsupported("file", "the file: URI has a bad percent-encoding"))?;
        let memory = path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory");
        if path.is_empty() && !memory {
            return Err(unsupported("file", "the file: URI names no file"));
        }
        Ok(DbUrl {
            backend: Backend::Sqlite,
            sqlite: Some(if memory {
                SqliteTarget::Memory
            } else {
                SqliteTarget::File(sqlite::absolute(std::path::Path::new(&path)))
            }),
            sqlite_conn: uri.to_string(),
            readings: None,
            pg: None,
            notes,
            pin: None,
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn notes(&self) -> &[String] {
        &self.notes
    }

    pub(crate) fn sqlite_target(&self) -> Option<&SqliteTarget> {
        self.sqlite.as_ref()
    }

    /// The two files a `sqlite:///a/b.db` URL may mean when neither exists yet.
    pub(crate) fn sqlite_readings(&self) -> Option<&Readings> {
        self.readings.as_ref()
    }

    /// The PostgreSQL database name, percent-decoded (`None` for SQLite or when the URL names none).
    pub(crate) fn pg_database(&self) -> Option<String> {
        let pg = self.pg.as_ref()?;
        if pg.dbname.is_empty() {
            return None;
        }
        percent_decode(&pg.dbname)
    }

    /// The same server with another database (for `init`'s maintenance connection).
    pub(crate) fn with_pg_database(&self, name: &str) -> DbUrl {
        let mut copy = self.clone();
        if let Some(pg) = copy.pg.as_mut() {
            pg.dbname = percent_encode(name);
        }
        copy
    }

    /// The string given to the driver, with dbctl's connection parameters added where the URL does
    /// not set them. Never print it: it holds the password.
    pub(crate) fn connection_string(&self, connect_timeout_secs: u64) -> String {
        match &self.pg {
            None => self.sqlite_conn.clone(),
            Some(pg) => {
                let mut query = pg.query.clone();
                let mut hosts_written = pg.hosts.as_str();
                if let Some(pin) = &self.pin {
                    // Every connection of the pool goes to the server the first one found.
                    query.retain(|(k, _)| {
                        !matches!(
                            k.as_str(),
                            "host" | "hostaddr" | "port" | "load_balance_hosts"
                        )
                    });
                    query.push(("host".to_string(), percent_encode(&pin.host)));
                    query.push(("port".to_string(), percent_encode(&pin.port)));
                    if let Some(addr) = &pin.hostaddr {
                        query.push(("hostaddr".to_string(), percent_encode(addr)));
                    }
                    hosts_written = "";
                }
                let mut add = |k: &str, v: String| {
                    if !query.iter().any(|(key, _)| key == k) {
                        query.push((k.to_string(), v));
                    }
                };
                add("connect_timeout", connect_timeout_secs.max(1).to_string());
                add("application_name", "dbctl".to_string());
                // A peer that vanished (host down, network cut) is noticed by the socket:
                // keepalives after 10 s of silence, and unacknowledged data for 30 s ends it.
                add("keepalives", "1".to_string());
                add("keepalives_idle", "10".to_string());
                add("keepalives_interval", "5".to_string());
                add("keepalives_count", "3".to_string());
                add("tcp_user_timeout", "30000".to_string());
                let pg = PgParts {
                    hosts: hosts_written.to_string(),
                    ..pg.clone()
                };
                pg.build(pg.password.as_deref(), &query)
            }
        }
    }

    /// How many servers the URL names (libpq's comma-separated `host`, `hostaddr` and URL host
    /// lists); 0 for SQLite.
    pub(crate) fn host_count(&self) -> usize {
        let Some(pg) = &self.pg else { return 0 };
        let listed = |list: &str| list.split(',').count();
        let mut n = if pg.hosts.is_empty() {
            1
        } else {
            listed(&pg.hosts)
        };
        for (k, v) in &pg.query {
            if k == "host" || k == "hostaddr" {
                n = n.max(listed(&percent_decode(v).unwrap_or_default()));
            }
        }
        n
    }

    /// The URL's `pgbouncer=true|false`, if it has one.
    pub(crate) fn pgbouncer(&self) -> Option<bool> {
        self.pg.as_ref().and_then(|pg| pg.pgbouncer)
    }

    /// Sends every later connection to the server libpq chose first (a URL naming several hosts
    /// would otherwise let each pooled connection choose again, possibly another server).
    pub(crate) fn pin(&mut self, chosen: libpq::Chosen) {
        if self.pg.is_some() {
            self.pin = Some(chosen);
        }
    }

    /// The server connections go to, as `host:port`: the pinned one, else the URL's only host
    /// (or `PGHOST`, or libpq's default); `None` for SQLite.
    pub(crate) fn server(&self) -> Option<String> {
        let pg = self.pg.as_ref()?;
        if let Some(pin) = &self.pin {
            return Some(host_port(&pin.host, &pin.port));
        }
        let param = |key: &str| {
            pg.query
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| percent_decode(v))
        };
        let first = pg.hosts.split(',').next().unwrap_or("");
        let (url_host, url_port) = if let Some(rest) = first.strip_prefix('[') {
            let (h, after) = rest.split_once(']').unwrap_or((rest, ""));
            (
                h.to_string(),
                after.strip_prefix(':').unwrap_or("").to_string(),
            )
        } else {
            let (h, p) = first.split_once(':').unwrap_or((first, ""));
            (percent_decode(h).unwrap_or_default(), p.to_string())
        };
        let host = Some(url_host)
            .filter(|h| !h.is_empty())
            .or_else(|| param("host"))
            .or_else(|| param("hostaddr"))
            .or_else(|| std::env::var("PGHOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "localhost".to_string());
        let port = Some(url_port)
            .filter(|p| !p.is_empty())
            .or_else(|| param("port"))
            .or_else(|| std::env::var("PGPORT").ok().filter(|p| !p.is_empty()))
            .unwrap_or_else(|| "5432".to_string());
        Some(host_port(&host, &port))
    }

    /// Takes the named query parameters out of the URL (driver options the driver would refuse
    /// or silently ignore) and returns them percent-decoded, in the order written. For SQLite
    /// they come out of the `file:` URI's query.
    pub(crate) fn take_query_params(&mut self, names: &[&str]) -> Vec<(String, String)> {
        let mut taken = Vec::new();
        let mut take = |k: &str, v: &str| {
            if !names.contains(&k) {
                return true;
            }
            taken.push((
                k.to_string(),
                percent_decode(v).unwrap_or_else(|| v.to_string()),
            ));
            false
        };
        match self.pg.as_mut() {
            Some(pg) => {
                for (k, v) in std::mem::take(&mut pg.driver) {
                    take(&k, &v);
                }
                pg.query.retain(|(k, v)| take(k, v));
            }
            None => {
                let Some((uri, query)) = self.sqlite_conn.split_once('?') else {
                    return taken;
                };
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        take(k, v)
                    })
                    .collect();
                self.sqlite_conn = if kept.is_empty() {
                    uri.to_string()
                } else {
                    format!("{uri}?{}", kept.join("&"))
                };
            }
        }
        taken
    }

    /// The URL as it may be shown: the password replaced by `***`, a SQLite file by its absolute
    /// path.
    pub(crate) fn redacted(&self) -> String {
        match &self.pg {
            Some(pg) => {
                let query: Vec<(String, String)> = pg
                    .query
                    .iter()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".to_string()
                        } else {
                            v.clone()
                        };
                        (k.clone(), v)
                    })
                    .collect();
                pg.build(pg.password.as_ref().map(|_| "***"), &query)
            }
            None => match &self.sqlite {
                Some(SqliteTarget::Memory) => "sqlite::memory:".to_string(),
                Some(SqliteTarget::File(path)) if !self.sqlite_conn.starts_with("file:") => {
                    format!("sqlite://{}", path.display())
                }
                _ => self.sqlite_conn.clone(),
            },
        }
    }
}

impl PgParts {
    fn build(&self, password: Option<&str>, query: &[(String, String)]) -> String {
        let mut url = String::from("postgresql://");
        if let Some(user) = &self.user {
            url.push_str(user);
            if let Some(pw) = password {
                url.push(':');
                url.push_str(pw);
            }
            url.push('@');
        }
        url.push_str(&self.hosts);
        url.push('/');
        url.push_str(&self.dbname);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(v);
        }
        url
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('/') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The first usual socket folder holding the server's socket, when nothing names a host.
fn socket_dir(pg: &PgParts) -> Option<&'static str> {
    let named = |k: &str| pg.query.iter().any(|(key, _)| key == k);
    // `postgresql://:5433/db` names a port but no host.
    let hosts_named = pg
        .hosts
        .split(',')
        .any(|h| !h.split(':').next().unwrap_or("").is_empty() || h.starts_with('['));
    if hosts_named || named("host") || named("hostaddr") || named("service") {
        return None;
    }
    for var in ["PGHOST", "PGHOSTADDR", "PGSERVICE"] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return None;
        }
    }
    let url_port = pg.hosts.split(',').next().and_then(|h| h.split_once(':'));
    let port = url_port
        .map(|(_, p)| p.to_string())
        .or_else(|| {
            pg.query
                .iter()
                .find(|(k, _)| k == "port")
                .map(|(_, v)| v.clone())
        })
        .or_else(|| std::env::var("PGPORT").ok())
        .unwrap_or_else(|| "5432".to_string());
    let port = port.split(',').next().unwrap_or("5432").trim().to_string();
    SOCKET_DIRS.iter().copied().find(|dir| {
        std::path::Path::new(dir)
            .join(format!(".s.PGSQL.{port}"))
            .exists()
    })
}

/// A path as the path part of a `file:` URI.
fn uri_path(path: &str) -> String {
    utf8_percent_encode(path, URI_PATH).to_string()
}

/// Finds `scheme:` at the start of a URL. A string with no scheme is a plain SQLite path.
fn split_scheme(raw: &str) -> Option<(&str, &str)> {
    let colon = raw.find(':')?;
    let scheme = &raw[..colon];
    let first = scheme.chars().next()?;
    let valid = first.is_ascii_alphabetic()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    // A one-letter "scheme" is a Windows drive (C:\...), a path.
    if !valid || scheme.len() < 2 {
        return None;
    }
    Some((scheme, &raw[colon + 1..]))
}

/// Why an unknown `scheme:` was refused, with a hint when it is a server address in disguise.
fn unknown_scheme_hint(scheme: &str, rest: &str) -> String {
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && rest[digits..].chars().next().is_none_or(|c| c == '/') {
        return "it starts with `host:port` but has no scheme: write postgresql://host:port/db"
            .to_string();
    }
    if rest.contains('@') {
        return "it looks like `user:password@host` without a scheme: put `postgresql://` in front"
            .to_string();
    }
    format!("unknown scheme `{scheme}:`")
}

/// Registers every password a URL may carry, before anything can fail: what the parser below
/// reads, and for a URL it refuses, everything that any reader could take for a password.
fn register_url_secrets(raw: &str) {
    let both = |pw: &str| {
        register_secret(pw);
        if let Some(decoded) = percent_decode(pw) {
            register_secret(&decoded);
        }
    };
    if let Some(pos) = raw.find("://") {
        let tail = &raw[pos + 3..];
        // libpq ends the user info at the first `@` before a `/`; dbctl's refusals consider every
        // `@`: register from the first `:` to each `@`.
        if let Some(colon) = tail.find(':') {
            for (at, _) in tail.match_indices('@') {
                if at > colon {
                    both(&tail[colon + 1..at]);
                }
            }
        }
    }
    for (i, _) in raw.match_indices("password=") {
        let value = &raw[i + "password=".len()..];
        let end = value.find(['&', ' ']).unwrap_or(value.len());
        both(&value[..end]);
    }
}

/// An unsupported URL. Only the scheme is quoted: the rest may hold a password.
fn unsupported(scheme: &str, why: &str) -> anyhow::Error {
    error::usage(format!(
        "unsupported database URL ({scheme}:...): {why}; accepted forms: {ACCEPTED_FORMS}"
    ))
}

/// Splits and checks `[user[:password]@]host[:port][,host[:port]...][/dbname][?k=v&...]`.
///
/// The user info ends at the only `@`; a URL with two, or whose user info holds a raw `/`, `?` or
/// `#`, is refused: libpq and other readers would cut it elsewhere and send part of the password
/// to DNS or into their errors. No error quotes the user info.
fn parse_pg(after: &str, notes: &mut Vec<String>) -> anyhow::Result<PgParts> {
    let bad = |why: &str| error::usage(format!("invalid PostgreSQL URL: {why}"));
    if after.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "it holds white space or a control character (percent-encode a space as %20)",
        ));
    }
    if after.contains('#') {
        return Err(bad("it holds a `#` (percent-encode it as %23)"));
    }
    let (userinfo, rest) = match after.match_indices('@').count() {
        0 => (None, after),
        1 => {
            let at = after.find('@').unwrap_or(0);
            let info = &after[..at];
            if info.contains(['/', '?']) {
                return Err(bad(
                    "the user name or password holds a raw `/` or `?`, or an `@` stands after the host: \
                     percent-encode them (`/` %2F, `?` %3F, `@` %40)",
                ));
            }
            (Some(info), &after[at + 1..])
        }
        _ => return Err(bad(
            "it holds more than one `@` (readers split such a URL differently): percent-encode \
                 an `@` inside the user name or password as %40",
        )),
    };
    let (before_query, query_str) = rest.split_once('?').unwrap_or((rest, ""));
    let (hosts, dbname) = before_query.split_once('/').unwrap_or((before_query, ""));
    let (user, password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
            None => (Some(info.to_string()), None),
        },
        None => (None, None),
    };
    if let Some(u) = &user {
        decoded(u).map_err(|why| bad(&format!("the user name {why}")))?;
    }
    if let Some(p) = &password {
        decoded(p).map_err(|why| bad(&format!("the password {why}")))?;
    }
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        check_host(host).map_err(|why| bad(&why))?;
    }
    decoded(dbname).map_err(|why| bad(&format!("the database name {why}")))?;
    if dbname.contains('/') {
        return Err(bad(
            "the database name contains `/` (percent-encode it as %2F)",
        ));
    }
    // A second `?` is a typo for `&`: libpq would read `a=1?password=x` as one value for `a`,
    // and the password in it would neither be used nor hidden.
    if query_str.contains('?') {
        return Err(bad(
            "the query has a second `?`: separate parameters with `&` (`?a=1&b=2`)",
        ));
    }
    let mut query = Vec::new();
    let mut driver = Vec::new();
    let mut after_password = false;
    for (i, pair) in query_str.split('&').filter(|p| !p.is_empty()).enumerate() {
        // After a `password=`, a raw `&` in the password would make the rest look like parameters:
        // from there on, name them by position only.
        let hide = after_password;
        let name = |k: &str| {
            if hide {
                format!("query parameter {}", i + 1)
            } else {
                format!("query parameter `{k}`")
            }
        };
        let Some((k, v)) = pair.split_once('=') else {
            return Err(bad(&format!("{} has no `=value`", name(pair))));
        };
        if k == "password" {
            after_password = true;
        }
        decoded(v).map_err(|why| bad(&format!("the value of {} {why}", name(k))))?;
        // asyncpg spells libpq's sslmode as `ssl`; accept the SQLAlchemy URL as users wrote it.
        if k == "ssl" {
            notes.push(format!(
                "translated asyncpg's `ssl={v}` to libpq's `sslmode={v}`"
            ));
            query.push(("sslmode".to_string(), v.to_string()));
        } else if DRIVER_PARAMS.contains(&k) {
            driver.push((k.to_string(), v.to_string()));
        } else {
            query.push((k.to_string(), v.to_string()));
        }
    }
    let pgbouncer = take_pgbouncer(&mut query).map_err(|why| bad(&why))?;
    check_query(&query).map_err(|why| bad(&why))?;
    Ok(PgParts {
        user,
        password,
        hosts: hosts.to_string(),
        dbname: dbname.to_string(),
        query,
        pgbouncer,
        driver,
    })
}

/// Takes dbctl's own `pgbouncer=` parameter out of the query (libpq would refuse it).
fn take_pgbouncer(query: &mut Vec<(String, String)>) -> Result<Option<bool>, String> {
    let mut found = None;
    let mut bad = None;
    query.retain(|(k, v)| {
        if k != "pgbouncer" {
            return true;
        }
        match percent_decode(v)
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "true" | "1" | "yes" | "on" => found = Some(true),
            "false" | "0" | "no" | "off" => found = Some(false),
            _ => bad = Some("the value of parameter `pgbouncer` is not true or false".to_string()),
        }
        false
    });
    match bad {
        Some(why) => Err(why),
        None => Ok(found),
    }
}

/// libpq's integer parameters.
const INTEGER_PARAMS: &[&str] = &[
    "connect_timeout",
    "port",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
];

/// libpq's parameters with a fixed set of values.
const ENUM_PARAMS: &[(&str, &[&str])] = &[
    (
        "sslmode",
        &[
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ],
    ),
    ("gssencmode", &["disable", "prefer", "require"]),
    ("channel_binding", &["disable", "prefer", "require"]),
    (
        "target_session_attrs",
        &[
            "any",
            "read-write",
            "read-only",
            "primary",
            "standby",
            "prefer-standby",
        ],
    ),
    ("load_balance_hosts", &["disable", "random"]),
    ("sslnegotiation", &["postgres", "direct"]),
    ("sslcertmode", &["disable", "allow", "require"]),
    (
        "ssl_min_protocol_version",
        &["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"],
    ),
    (
        "ssl_max_protocol_version",
        &["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"],
    ),
    ("min_protocol_version", &["3.0", "3.2", "latest"]),
    ("max_protocol_version", &["3.0", "3.2", "latest"]),
    (
        "replication",
        &[
            "true", "on", "yes", "1", "false", "off", "no", "0", "database",
        ],
    ),
];

/// The methods `require_auth` may list (each optionally negated with `!`).
const AUTH_METHODS: &[&str] = &[
    "password",
    "md5",
    "gss",
    "sspi",
    "scram-sha-256",
    "oauth",
    "none",
];

/// Checks names and values of connection parameters (percent-encoded values) before libpq does:
/// libpq only checks most values while connecting, and its failure there looks like any other
/// failure to connect. The value of `password` is never looked at.
fn check_query(query: &[(String, String)]) -> Result<(), String> {
    let mut after_password = false;
    for (i, (k, v)) in query.iter().enumerate() {
        let shown = if after_password {
            format!("parameter {}", i + 1)
        } else {
            format!("parameter `{k}`")
        };
        if k == "password" {
            after_password = true;
            continue;
        }
        if !libpq::is_keyword(k) {
            return Err(format!(
                "{shown} is not a libpq connection parameter (sslmode, connect_timeout, application_name, ...)"
            ));
        }
        let value = percent_decode(v).unwrap_or_default();
        if INTEGER_PARAMS.contains(&k.as_str()) {
            let all_ints = value
                .split(',')
                .all(|n| n.trim().parse::<i64>().is_ok() || (k == "port" && n.is_empty()));
            if !all_ints {
                return Err(format!("the value of {shown} is not a whole number"));
            }
        }
        if let Some((_, allowed)) = ENUM_PARAMS.iter().find(|(name, _)| name == k) {
            if !allowed.contains(&value.as_str()) {
                return Err(format!(
                    "the value of {shown} is not one of {}",
                    allowed.join(", ")
                ));
            }
        }
        let needs = match (k.as_str(), value.as_str()) {
            ("sslmode", "require" | "verify-ca" | "verify-full") => Some(("ssl", "TLS")),
            ("gssencmode", "require") => Some(("gss", "GSSAPI")),
            _ => None,
        };
        if let Some((feature, name)) = needs {
            if !libpq::supports(feature) {
                return Err(format!(
                    "{shown}={value} needs {name}, which this build of libpq does not include"
                ));
            }
        }
        match k.as_str() {
            "require_auth"
                if !value
                    .split(',')
                    .all(|m| AUTH_METHODS.contains(&m.trim_start_matches('!'))) =>
            {
                return Err(format!(
                    "the value of {shown} is not a list of {}",
                    AUTH_METHODS.join(", ")
                ));
            }
            "hostaddr"
                if !value
                    .split(',')
                    .all(|a| a.is_empty() || a.parse::<std::net::IpAddr>().is_ok()) =>
            {
                return Err(format!("the value of {shown} is not a numeric IP address"));
            }
            "require_auth" => {
                let negated = value.split(',').filter(|m| m.starts_with('!')).count();
                if negated != 0 && negated != value.split(',').count() {
                    return Err(format!(
                        "the value of {shown} mixes methods with `!methods` (libpq takes one kind)"
                    ));
                }
            }
            "replication" if !matches!(value.as_str(), "false" | "off" | "no" | "0") => {
                return Err(format!(
                    "{shown} asks for a replication connection, on which dbctl's queries cannot run"
                ));
            }
            _ => {}
        }
    }
    check_combinations(query)
}

/// Settings libpq refuses in combination, again only while connecting.
fn check_combinations(query: &[(String, String)]) -> Result<(), String> {
    let get = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| percent_decode(v))
    };
    let sslmode = get("sslmode");
    let strong = matches!(
        sslmode.as_deref(),
        Some("require" | "verify-ca" | "verify-full")
    );
    if get("sslnegotiation").as_deref() == Some("direct") && !strong {
        return Err(
            "sslnegotiation=direct needs sslmode=require, verify-ca or verify-full".to_string(),
        );
    }
    if get("sslrootcert").as_deref() == Some("system")
        && sslmode.as_deref().is_some_and(|m| m != "verify-full")
    {
        return Err("sslrootcert=system needs sslmode=verify-full".to_string());
    }
    Ok(())
}

/// A percent-encoded part, checked: `Err` says why it cannot be used (never what it holds).
fn decoded(part: &str) -> Result<String, &'static str> {
    let text = percent_decode(part).ok_or("has a bad percent-encoding")?;
    if text.contains('\0') {
        return Err("holds %00 (a NUL byte), which PostgreSQL cannot take");
    }
    Ok(text)
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(inner) = host.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Err("an IPv6 host is missing its closing `]`".to_string());
        };
        let after = &inner[close + 1..];
        if !after.is_empty() && !after.starts_with(':') {
            return Err("unexpected text after the IPv6 host".to_string());
        }
        // A bracketed host is an IPv6 literal (with an optional `%zone`); anything else would
        // only fail later as an unresolvable host name, with exit 3 instead of 2.
        let literal = &inner[..close];
        let address = literal.split('%').next().unwrap_or(literal);
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`[{literal}]` is not an IPv6 address"));
        }
        (literal, after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.contains(['[', ']', ' ', ':']) && !host.starts_with('[') {
        return Err("a host name holds `[`, `]` or `:`".to_string());
    }
    let decoded_name = decoded(name).map_err(|why| format!("the host {why}"))?;
    if decoded_name.contains(['@', '/']) && !decoded_name.starts_with('/') {
        return Err("a host name holds `@` or `/`".to_string());
    }
    if let Some(port) = port {
        match port.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) && port.chars().all(|c| c.is_ascii_digit()) => {}
            _ => return Err("the port is not a number from 1 to 65535".to_string()),
        }
    }
    Ok(())
}

/// What [`percent_encode`] leaves as it is: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a path must not hold raw in a `file:` URI: the escape, query and fragment characters.
const URI_PATH: &AsciiSet = &AsciiSet::EMPTY.add(b'%').add(b'?').add(b'#');

/// Decodes `%XX` escapes; `None` when an escape is malformed or the result is not UTF-8. (The
/// crate's decoder keeps a malformed escape as it is; here it is an error, so it is refused first.)
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(raw: &str) -> DbUrl {
        let url = DbUrl::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e:#}"));
        assert_eq!(url.backend(), Backend::Postgres, "{raw}");
        url
    }

    #[test]
    fn several_hosts_are_counted_pinned_and_named() {
        assert_eq!(pg("postgres://u@h1:5432/db").host_count(), 1);
        assert_eq!(pg("postgres://u@h1:5432,h2:5433/db").host_count(), 2);
        assert_eq!(pg("host=a,b,c port=1,2,3 dbname=db").host_count(), 3);
        assert_eq!(pg("postgres://u@h1:5432/db").server().unwrap(), "h1:5432");
        assert_eq!(
            pg("postgres://u@[::1]:6000/db").server().unwrap(),
            "[::1]:6000"
        );
        let mut url = pg("postgres://u:pw@h1:5432,h2:5433/db?target_session_attrs=read-write&load_balance_hosts=random");
        url.pin(libpq::Chosen {
            host: "h2".into(),
            port: "5433".into(),
            hostaddr: Some("10.0.0.2".into()),
        });
        assert_eq!(url.server().unwrap(), "h2:5433");
        let conn = url.connection_string(5);
        assert!(conn.starts_with("postgresql://u:pw@/db?"), "{conn}");
        assert!(
            conn.contains("host=h2&port=5433&hostaddr=10.0.0.2"),
            "{conn}"
        );
        assert!(conn.contains("target_session_attrs=read-write"), "{conn}");
        assert!(!conn.contains("load_balance_hosts"), "{conn}");
        // What is shown stays the URL as written.
        assert!(url.redacted().contains("h1:5432,h2:5433"));
    }

    #[test]
    fn pgbouncer_is_dbctls_own_parameter() {
        assert_eq!(
            pg("postgres://u@h/db?pgbouncer=true").pgbouncer(),
            Some(true)
        );
        assert_eq!(
            pg("postgres://u@h/db?pgbouncer=0&sslmode=disable").pgbouncer(),
            Some(false)
        );
        assert_eq!(pg("host=h dbname=db pgbouncer=yes").pgbouncer(), Some(true));
        assert_eq!(pg("postgres://u@h/db").pgbouncer(), None);
        assert!(!pg("postgres://u@h/db?pgbouncer=true")
            .connection_string(5)
            .contains("pgbouncer"));
        assert!(DbUrl::parse("postgres://u@h/db?pgbouncer=maybe").is_err());
    }

    fn sqlite(raw: &str) -> SqliteTarget {
        let url = DbUrl::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e:#}"));
        url.sqlite_target().cloned().expect("sqlite")
    }

    #[test]
    fn postgres_forms() {
        pg("postgres://u@localhost/db");
        pg("postgresql://u:pw-unit-a@127.0.0.1:5432/db?sslmode=disable");
        let url = pg("postgresql+asyncpg://u:pw-unit-b@h:5432/app");
        assert_eq!(url.redacted(), "postgresql://u:***@h:5432/app");
        assert_eq!(url.notes().len(), 1);
        pg("postgresql+psycopg://[::1]:5432/db");
        pg("postgres://h1:5432,h2:5433/db");
        pg("postgres:///db");
        assert_eq!(
            pg("postgres://u@h/my%20db").pg_database().as_deref(),
            Some("my db")
        );
    }

    #[test]
    fn postgres_errors_never_show_the_password() {
        for raw in [
            "postgres://u:topsecret@[::1/x",
            "postgres://u:top%zzsecret@h/db",
            "postgres://u:topsecret@h:99999/db",
            "postgres://u:topsecret@h:abc/db",
            "postgres://u:topsecret@h/db?sslmode",
            // Found by the property test below: a second `?` hid `password=` from redaction.
            "postgres://@?/db?password=topsecret&a=",
            "postgres://u@h/db?x=1?password=topsecret",
            "postgres://u:topsecret@[zz::1]:5432/db",
            // Raw `#`, `?`, `/`, a second `@`, a space: refused without quoting anything.
            "postgres://u:top#secret@h/db",
            "postgres://u:top?secret@h/db",
            "postgres://u:top/secret@h/db",
            "postgres://u:top@secret@h/db",
            "postgres://u:top secret@h/db",
            "postgres://u:topsecret/db",
            "postgres://u@h/db?password=topsecret&x",
            "user:topsecret@h/db",
        ] {
            let err = DbUrl::parse(raw).expect_err(raw);
            let text = crate::error::render(&err);
            assert!(
                !text.contains("topsecret") && !text.contains("top%zzsecret"),
                "{text}"
            );
            assert_eq!(crate::error::exit_of(&err), crate::error::Exit::Usage);
        }
    }

    #[test]
    fn sqlite_forms() {
        let cwd = std::env::current_dir().unwrap();
        let file = |p: &str| SqliteTarget::File(cwd.join(p));
        assert!(sqlite("sqlite::memory:") == SqliteTarget::Memory);
        assert!(sqlite(":memory:") == SqliteTarget::Memory);
        assert!(sqlite("sqlite://") == SqliteTarget::Memory);
        assert!(sqlite("sqlite:///:memory:") == SqliteTarget::Memory);
        assert!(sqlite("sqlite://data/app.db") == file("data/app.db"));
        assert!(sqlite("sqlite:////tmp/app.db") == SqliteTarget::File("/tmp/app.db".into()));
        assert!(sqlite("sqlite:///./app.db") == file("app.db"));
        assert!(sqlite("sqlite+aiosqlite:///app.db") == file("app.db"));
        assert!(sqlite("sqlite:app.db") == file("app.db"));
        assert!(sqlite("file:app.db?mode=rwc") == file("app.db"));
        assert!(sqlite("file:///tmp/a%20b.db") == SqliteTarget::File("/tmp/a b.db".into()));
        assert!(sqlite("./dev.db") == file("dev.db"));
        assert!(sqlite("dev.db") == file("dev.db"));
    }

    #[test]
    fn conninfo_strings_are_postgres_and_hide_the_password() {
        let url = pg("host=h user=u password='top secret' dbname=app sslmode=disable");
        assert_eq!(
            url.redacted(),
            "postgresql://u:***@/app?host=h&sslmode=disable"
        );
        assert_eq!(url.pg_database().as_deref(), Some("app"));
        for raw in [
            "host=h password=top secret",
            "host=h nosuch=1 password=topsecret",
        ] {
            let err = DbUrl::parse(raw).expect_err(raw);
            assert!(!crate::error::render(&err).contains("secret"));
            assert_eq!(crate::error::exit_of(&err), crate::error::Exit::Usage);
        }
    }

    #[test]
    fn unknown_forms_list_the_accepted_ones() {
        for raw in ["mysql://u@h/db", "redis://h", "", "http://x", "sqlite:"] {
            let err = DbUrl::parse(raw).expect_err(raw);
            assert!(format!("{err:#}").contains("sqlite::memory:") || raw.is_empty());
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: parsing never panics, and a password given in a URL never shows in
    //! `redacted()`, in `Debug`, or in a rendered error, whatever surrounds it.

    use super::*;
    use proptest::prelude::*;

    /// A password that cannot appear by chance in the rest of the output.
    fn password() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]{6,12}".prop_map(|p| format!("Pw{p}Zq"))
    }

    /// Text for the other parts, with the characters that break parsers (but no `@`: a second
    /// user info would carry a password of its own, registered process-wide).
    fn part() -> impl Strategy<Value = String> {
        "[a-z0-9:/?&=%\\[\\]., _+#-]{0,12}"
    }

    fn assert_hidden(raw: &str, secret: &str) -> Result<(), TestCaseError> {
        match DbUrl::parse(raw) {
            Ok(url) => {
                let shown = format!("{} {:?} {}", url.redacted(), url, url);
                prop_assert!(!shown.contains(secret), "{raw} -> {shown}");
            }
            Err(err) => {
                let text = crate::error::render(&err);
                prop_assert!(!text.contains(secret), "{raw} -> {text}");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn never_panics(raw in "[^@]{0,40}") {
            let _ = DbUrl::parse(&raw);
        }

        // Parsing registers any password it sees, process-wide; a random one-letter "password"
        // would then be starred out of other tests' text. So random text gets no user info of its
        // own (no `@`), and the user-info case carries a long password.
        #[test]
        fn never_panics_on_url_like_text(
            scheme in prop_oneof![Just("postgres"), Just("postgresql+asyncpg"), Just("sqlite"), Just("file"), Just("x")],
            rest in "[a-z0-9:/?&=%\\[\\].,_ -]{0,40}",
            tail in "[a-z0-9:@/?&=%\\[\\].,_ -]{0,40}",
        ) {
            let _ = DbUrl::parse(&format!("{scheme}:{rest}"));
            let _ = DbUrl::parse(&format!("{scheme}://u:FuzzPassword1@{tail}"));
        }

        #[test]
        fn a_password_never_shows(
            scheme in prop_oneof![Just("postgres"), Just("postgresql"), Just("postgresql+psycopg")],
            user in "[a-z]{0,6}",
            secret in password(),
            host in part(),
            tail in part(),
            encode in any::<bool>(),
        ) {
            let pw = if encode {
                secret.chars().map(|c| format!("%{:02X}", c as u32)).collect()
            } else {
                secret.clone()
            };
            assert_hidden(&format!("{scheme}://{user}:{pw}@{host}{tail}"), &secret)?;
            assert_hidden(&format!("{scheme}://{user}:{pw}@{host}{tail}"), &pw)?;
            assert_hidden(&format!("{scheme}://{user}@{host}/db?password={pw}&{tail}"), &secret)?;
        }

        // A raw password holding any printable byte (`#?/@`, spaces, quotes, `%`), in a valid
        // or invalid URL or a libpq string: never in what parsing shows or says.
        #[test]
        fn a_raw_password_with_any_bytes_never_shows(
            middle in "[ -~]{0,60}",
            host in prop_oneof![Just("h"), Just("h:5432"), Just("[::1]"), Just("h:x")],
        ) {
            let secret = format!("Pw{middle}Zq");
            assert_hidden(&format!("postgres://u:{secret}@{host}/db"), &secret)?;
            assert_hidden(&format!("postgresql+asyncpg://u:{secret}@{host}/db?sslmode=disable"), &secret)?;
            let quoted = secret.replace('\\', "\\\\").replace('\'', "\\'");
            assert_hidden(&format!("host={host} user=u password='{quoted}' dbname=db"), &secret)?;
        }
    }
}
