//! Database URLs: which backend a URL names, what the driver is given, and how it is shown.
//!
//! dbctl chooses the backend from the scheme itself (diesel's `MultiConnection` would try every
//! backend and lose the real error). PostgreSQL URLs are validated here, before libpq sees them,
//! because libpq echoes a malformed URL, password included, in its error. The password is
//! registered for redaction the moment it is seen, even in a URL that then fails to parse.

use std::fmt;
use std::path::PathBuf;

use crate::error::{self, register_secret};

/// The forms listed in every "unsupported URL" error.
pub(crate) const ACCEPTED_FORMS: &str = "postgres://, postgresql://, postgresql+<driver>:// \
(SQLAlchemy style, e.g. postgresql+asyncpg://), sqlite://relative/path, sqlite:///absolute/path, \
sqlite::memory:, file:path (SQLite URI), or a plain file path";

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
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a SQLite database lives.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum SqliteTarget {
    /// A file on disk (from a plain path, `sqlite://`, `sqlite:` or a `file:` URI).
    File(PathBuf),
    /// `sqlite::memory:` and friends: one in-memory database shared by the pool's connections.
    Memory,
}

/// The parts of a PostgreSQL URL, kept percent-encoded as written so that the URL can be rebuilt.
#[derive(Clone)]
struct PgParts {
    user: Option<String>,
    password: Option<String>,
    /// `host[:port]` list as written (libpq accepts several, comma-separated).
    hosts: String,
    dbname: String,
    query: Vec<(String, String)>,
}

/// A parsed database URL. Its `Debug` and `Display` never show the password.
#[derive(Clone)]
pub(crate) struct DbUrl {
    backend: Backend,
    sqlite: Option<SqliteTarget>,
    /// What SQLite's open call gets (a path or a `file:` URI).
    sqlite_conn: String,
    pg: Option<PgParts>,
    /// What normalisation changed, for `--verbose`.
    notes: Vec<String>,
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
        let (scheme, rest) = match split_scheme(raw) {
            Some(parts) => parts,
            None => return Ok(Self::sqlite_path(raw, Vec::new())),
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
                        raw,
                        "a PostgreSQL URL needs `//` after the scheme",
                    ));
                };
                let pg = parse_pg(after, raw, &mut notes)?;
                Ok(DbUrl {
                    backend: Backend::Postgres,
                    sqlite: None,
                    sqlite_conn: String::new(),
                    pg: Some(pg),
                    notes,
                })
            }
            "sqlite" => Self::sqlite_url(rest, raw, notes),
            "file" if driver.is_none() => Self::sqlite_file_uri(raw, notes),
            "mysql" | "mariadb" => Err(unsupported(raw, "MySQL is not supported")),
            _ => Err(unsupported(raw, &format!("unknown scheme `{scheme}:`"))),
        }
    }

    fn sqlite_path(path: &str, notes: Vec<String>) -> DbUrl {
        if path == ":memory:" {
            return Self::memory(notes);
        }
        DbUrl {
            backend: Backend::Sqlite,
            sqlite: Some(SqliteTarget::File(PathBuf::from(path))),
            sqlite_conn: path.to_string(),
            pg: None,
            notes,
        }
    }

    fn memory(notes: Vec<String>) -> DbUrl {
        DbUrl {
            backend: Backend::Sqlite,
            sqlite: Some(SqliteTarget::Memory),
            // Shared cache, so that every pooled connection sees the same in-memory database.
            sqlite_conn: "file:dbctl-memory?mode=memory&cache=shared".to_string(),
            pg: None,
            notes,
        }
    }

    /// `sqlite://relative`, `sqlite:///absolute`, `sqlite:relative` (sqlx), `sqlite::memory:`.
    fn sqlite_url(rest: &str, raw: &str, notes: Vec<String>) -> anyhow::Result<DbUrl> {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(unsupported(raw, "the SQLite URL names no file"));
        }
        if path == ":memory:" {
            return Ok(Self::memory(notes));
        }
        match path.split_once('?') {
            // Query parameters (mode=ro, ...) only mean something to SQLite in a `file:` URI.
            Some((file, query)) => Self::sqlite_file_uri(&format!("file:{file}?{query}"), notes),
            None => Ok(Self::sqlite_path(path, notes)),
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
            .ok_or_else(|| unsupported(uri, "the file: URI has a bad percent-encoding"))?;
        let memory = path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory");
        if path.is_empty() && !memory {
            return Err(unsupported(uri, "the file: URI names no file"));
        }
        Ok(DbUrl {
            backend: Backend::Sqlite,
            sqlite: Some(if memory {
                SqliteTarget::Memory
            } else {
                SqliteTarget::File(PathBuf::from(path))
            }),
            sqlite_conn: uri.to_string(),
            pg: None,
            notes,
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
                pg.build(pg.password.as_deref(), &query)
            }
        }
    }

    /// The URL as it may be shown: the password replaced by `***`.
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

/// Registers every password a URL carries, before anything can fail and print it.
fn register_url_secrets(raw: &str) {
    if let Some(pos) = raw.find("://") {
        let tail = &raw[pos + 3..];
        let end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
        let authority = &tail[..end];
        if let Some(at) = authority.rfind('@') {
            if let Some((_, pw)) = authority[..at].split_once(':') {
                register_secret(pw);
                if let Some(decoded) = percent_decode(pw) {
                    register_secret(&decoded);
                }
            }
        }
    }
    if let Some((_, query)) = raw.split_once('?') {
        // A stray `?` inside the query must not hide a `password=` from redaction.
        for pair in query.split(['&', '?']) {
            if let Some(pw) = pair.strip_prefix("password=") {
                register_secret(pw);
                if let Some(decoded) = percent_decode(pw) {
                    register_secret(&decoded);
                }
            }
        }
    }
}

fn unsupported(raw: &str, why: &str) -> anyhow::Error {
    error::usage(format!(
        "unsupported database URL `{}`: {why}; accepted forms: {ACCEPTED_FORMS}",
        error::redact(raw)
    ))
}

/// Splits and checks `[user[:password]@]host[:port][,host[:port]...][/dbname][?k=v&...]`.
fn parse_pg(after: &str, raw: &str, notes: &mut Vec<String>) -> anyhow::Result<PgParts> {
    let bad = |why: &str| {
        error::usage(format!(
            "invalid PostgreSQL URL `{}`: {why}",
            error::redact(raw)
        ))
    };
    if after.contains('#') {
        return Err(bad(
            "a `#` fragment is not allowed (percent-encode it as %23)",
        ));
    }
    let (before_query, query_str) = after.split_once('?').unwrap_or((after, ""));
    let (authority, dbname) = before_query.split_once('/').unwrap_or((before_query, ""));
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
            None => (Some(info.to_string()), None),
        },
        None => (None, None),
    };
    if let Some(u) = &user {
        percent_decode(u).ok_or_else(|| bad("the user name has a bad percent-encoding"))?;
    }
    if let Some(p) = &password {
        percent_decode(p).ok_or_else(|| bad("the password has a bad percent-encoding"))?;
    }
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        check_host(host).map_err(|why| bad(&why))?;
    }
    percent_decode(dbname).ok_or_else(|| bad("the database name has a bad percent-encoding"))?;
    if dbname.contains('/') {
        return Err(bad(
            "the database name contains `/` (percent-encode it as %2F)",
        ));
    }
    let mut query = Vec::new();
    // A second `?` is a typo for `&`: libpq would read `a=1?password=x` as one value for `a`,
    // and the password in it would neither be used nor hidden.
    if query_str.contains('?') {
        return Err(bad(
            "the query has a second `?`: separate parameters with `&` (`?a=1&b=2`)",
        ));
    }
    for pair in query_str.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(bad(&format!(
                "query parameter `{}` has no `=value`",
                error::redact(pair)
            )));
        };
        if k.is_empty() {
            return Err(bad("a query parameter has an empty name"));
        }
        // libpq's parameter names are plain words; anything else (`/db?password`) is a mangled
        // URL, and a value hiding behind such a name would escape redaction.
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(&format!(
                "`{}` is not a query parameter name",
                error::redact(k)
            )));
        }
        percent_decode(v)
            .ok_or_else(|| bad(&format!("parameter `{k}` has a bad percent-encoding")))?;
        // asyncpg spells libpq's sslmode as `ssl`; accept the SQLAlchemy URL as users wrote it.
        if k == "ssl" {
            notes.push(format!(
                "translated asyncpg's `ssl={v}` to libpq's `sslmode={v}`"
            ));
            query.push(("sslmode".to_string(), v.to_string()));
        } else {
            query.push((k.to_string(), v.to_string()));
        }
    }
    Ok(PgParts {
        user,
        password,
        hosts: hosts.to_string(),
        dbname: dbname.to_string(),
        query,
    })
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(inner) = host.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Err("an IPv6 host is missing its closing `]`".to_string());
        };
        let after = &inner[close + 1..];
        if !after.is_empty() && !after.starts_with(':') {
            return Err(format!("unexpected text after the IPv6 host: `{after}`"));
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
    if name.contains(['[', ']', ' ']) {
        return Err(format!("`{name}` is not a valid host name"));
    }
    percent_decode(name).ok_or_else(|| "the host has a bad percent-encoding".to_string())?;
    if let Some(port) = port {
        match port.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) && port.chars().all(|c| c.is_ascii_digit()) => {}
            _ => return Err(format!("`{port}` is not a valid port (1-65535)")),
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes; `None` when an escape is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(raw: &str) -> DbUrl {
        let url = DbUrl::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e:#}"));
        assert_eq!(url.backend(), Backend::Postgres, "{raw}");
        url
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
        assert!(sqlite("sqlite::memory:") == SqliteTarget::Memory);
        assert!(sqlite(":memory:") == SqliteTarget::Memory);
        assert!(sqlite("sqlite://data/app.db") == SqliteTarget::File("data/app.db".into()));
        assert!(sqlite("sqlite:///tmp/app.db") == SqliteTarget::File("/tmp/app.db".into()));
        assert!(sqlite("sqlite:app.db") == SqliteTarget::File("app.db".into()));
        assert!(sqlite("file:app.db?mode=rwc") == SqliteTarget::File("app.db".into()));
        assert!(sqlite("file:///tmp/a%20b.db") == SqliteTarget::File("/tmp/a b.db".into()));
        assert!(sqlite("./dev.db") == SqliteTarget::File("./dev.db".into()));
        assert!(sqlite("dev.db") == SqliteTarget::File("dev.db".into()));
    }

    #[test]
    fn unknown_forms_list_the_accepted_ones() {
        for raw in ["mysql://u@h/db", "redis://h", "", "http://x", "sqlite://"] {
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
    }
}
