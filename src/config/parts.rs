//! A database URL built from parts, as the seed documents' projects configure it when they give
//! no URL: `DATABASE_TYPE`, `DATABASE_HOST`, `DATABASE_PORT`, `DATABASE_USER`,
//! `DATABASE_PASSWORD`, `DATABASE_NAME`, `DATABASE_SSL`. Each part is percent-encoded (the
//! projects' own f-strings forget to, so a password with `@` or `/` breaks them), and the
//! password is registered for redaction before anything can fail.

use super::{bad_value, numbers, Config, Source};
use crate::db::url::percent_encode as encode;
use crate::error;

/// The parts, in the order they appear in a URL.
pub(crate) const PARTS: &[&str] = &[
    "DATABASE_TYPE",
    "DATABASE_USER",
    "DATABASE_PASSWORD",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "DATABASE_SSL",
];

/// The parts that mean nothing for a SQLite file.
pub(crate) const SERVER_PARTS: &[&str] = &[
    "DATABASE_USER",
    "DATABASE_PASSWORD",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_SSL",
];

/// The URL the parts describe, or `None` when no part is set.
pub(crate) fn url_from_parts(config: &Config) -> anyhow::Result<Option<(String, Source)>> {
    let set: Vec<&str> = PARTS
        .iter()
        .copied()
        .filter(|name| config.lookup(name).is_some())
        .collect();
    if set.is_empty() {
        return Ok(None);
    }
    let get = |name: &str| config.lookup(name).filter(|(v, _)| !v.trim().is_empty());
    if let Some((password, _)) = config.lookup("DATABASE_PASSWORD") {
        error::register_secret(&password);
    }
    // Seed 004 names the backend; a server's parts without a type mean PostgreSQL.
    let kind = match get("DATABASE_TYPE") {
        Some((raw, source)) => backend_of(&raw).ok_or_else(|| {
            bad_value(
                "DATABASE_TYPE",
                &raw,
                &source,
                "postgresql (or postgres, postgresql+<driver>) or sqlite",
            )
        })?,
        None => "postgresql",
    };
    let url = if kind == "sqlite" {
        sqlite_path(config)?
    } else {
        postgres_url(config)?
    };
    let source = Source::Built(format!(
        "{} ({})",
        set.join(", "),
        match config.lookup(set[0]) {
            Some((_, Source::Env(_))) => "the environment".to_string(),
            Some((_, Source::DotEnv(_, path))) => path.display().to_string(),
            _ => "settings".to_string(),
        }
    ));
    Ok(Some((url, source)))
}

/// `postgresql`, `postgres`, `postgresql+asyncpg`, ... -> "postgresql"; `sqlite`,
/// `sqlite+aiosqlite` -> "sqlite"; anything else is not something dbctl can reach.
fn backend_of(raw: &str) -> Option<&'static str> {
    let lower = raw.trim().to_ascii_lowercase();
    let (base, driver) = lower.split_once('+').unwrap_or((lower.as_str(), "x"));
    if driver.is_empty()
        || !driver
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    match base {
        "postgres" | "postgresql" | "pg" => Some("postgresql"),
        "sqlite" | "sqlite3" => Some("sqlite"),
        _ => None,
    }
}

/// Seed 004: `f"{DATABASE_NAME}.db"`, relative to the current folder. Written as a plain path
/// (`./name.db`) so that no character of the name can be read as URL syntax.
fn sqlite_path(config: &Config) -> anyhow::Result<String> {
    let Some((name, _)) = config
        .lookup("DATABASE_NAME")
        .filter(|(v, _)| !v.trim().is_empty())
    else {
        return Err(error::usage(
            "DATABASE_TYPE=sqlite needs DATABASE_NAME (the file is DATABASE_NAME.db), or set DATABASE_URL",
        ));
    };
    let has_ext = [".db", ".sqlite", ".sqlite3"]
        .iter()
        .any(|ext| name.to_ascii_lowercase().ends_with(ext));
    let file = if has_ext { name } else { format!("{name}.db") };
    Ok(if file.starts_with('/') || file.starts_with("./") {
        file
    } else {
        format!("./{file}")
    })
}

/// `postgresql://user:password@host:port/name?sslmode=...`, each part percent-encoded; a part
/// that is not set is left out, so libpq's defaults apply (the local socket, the login name).
fn postgres_url(config: &Config) -> anyhow::Result<String> {
    let get = |name: &str| config.lookup(name).filter(|(v, _)| !v.trim().is_empty());
    let mut url = String::from("postgresql://");
    let user = get("DATABASE_USER").map(|(v, _)| v);
    let password = config.lookup("DATABASE_PASSWORD").map(|(v, _)| v);
    if user.is_some() || password.as_deref().is_some_and(|p| !p.is_empty()) {
        url.push_str(&encode(user.as_deref().unwrap_or_default()));
        if let Some(pw) = password.filter(|p| !p.is_empty()) {
            let encoded = encode(&pw);
            error::register_secret(&encoded);
            url.push(':');
            url.push_str(&encoded);
        }
        url.push('@');
    }
    if let Some((host, _)) = get("DATABASE_HOST") {
        let host = host.trim();
        if host.parse::<std::net::Ipv6Addr>().is_ok() {
            url.push_str(&format!("[{host}]"));
        } else {
            // A socket folder (`/var/run/postgresql`) is written percent-encoded, as libpq reads it.
            url.push_str(&encode(host));
        }
    }
    if let Some((port, source)) = get("DATABASE_PORT") {
        let n = numbers::PORT
            .parse(&port)
            .map_err(|want| bad_value("DATABASE_PORT", &port, &source, &want))?;
        url.push_str(&format!(":{n}"));
    }
    url.push('/');
    if let Some((name, _)) = get("DATABASE_NAME") {
        url.push_str(&encode(&name));
    }
    if let Some((ssl, source)) = get("DATABASE_SSL") {
        let mode = sslmode(&ssl).ok_or_else(|| {
            bad_value(
                "DATABASE_SSL",
                &ssl,
                &source,
                "true, false, or a libpq sslmode (disable, allow, prefer, require, verify-ca, verify-full)",
            )
        })?;
        url.push_str("?sslmode=");
        url.push_str(mode);
    }
    Ok(url)
}

/// libpq's sslmode for `DATABASE_SSL`: its own values, or a boolean as Python settings write it.
fn sslmode(raw: &str) -> Option<&'static str> {
    Some(match raw.trim().to_ascii_lowercase().as_str() {
        "disable" => "disable",
        "allow" => "allow",
        "prefer" => "prefer",
        "require" => "require",
        "verify-ca" => "verify-ca",
        "verify-full" => "verify-full",
        "true" | "1" | "yes" | "on" => "require",
        "false" | "0" | "no" | "off" => "disable",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_by_type() {
        assert_eq!(backend_of("postgresql"), Some("postgresql"));
        assert_eq!(backend_of("PostgreSQL+asyncpg"), Some("postgresql"));
        assert_eq!(backend_of("sqlite"), Some("sqlite"));
        assert_eq!(backend_of("mysql"), None);
        assert_eq!(backend_of("postgresql+"), None);
        assert_eq!(backend_of("postgresql://x@"), None);
    }

    #[test]
    fn encoding_keeps_only_unreserved() {
        assert_eq!(encode("p@ss/w:rd#?%"), "p%40ss%2Fw%3Ard%23%3F%25");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
