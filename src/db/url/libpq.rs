//! What libpq itself says about a connection string, asked without connecting: the keywords it
//! knows (`PQconndefaults`) and whether it can parse a string (`PQconninfoParse`). A string libpq
//! cannot parse is a usage error by that fact, not by the words of its message.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::OnceLock;

/// The connection keywords this libpq knows (`host`, `sslmode`, ...), or an empty list when libpq
/// could not allocate it (then no keyword is refused here and libpq decides at connect time).
pub(crate) fn keywords() -> &'static [(String, Option<String>)] {
    static KEYWORDS: OnceLock<Vec<(String, Option<String>)>> = OnceLock::new();
    KEYWORDS.get_or_init(|| {
        let mut out = Vec::new();
        // SAFETY: PQconndefaults returns NULL or an array terminated by an entry whose keyword is
        // NULL; every keyword and compiled default is NULL or a NUL-terminated string owned by
        // the array, copied out before the array is freed once below.
        unsafe {
            let options = pq_sys::PQconndefaults();
            if options.is_null() {
                return out;
            }
            let mut entry = options;
            while !(*entry).keyword.is_null() {
                let keyword = CStr::from_ptr((*entry).keyword)
                    .to_string_lossy()
                    .into_owned();
                let compiled = (*entry).compiled;
                let compiled = (!compiled.is_null())
                    .then(|| CStr::from_ptr(compiled).to_string_lossy().into_owned());
                out.push((keyword, compiled));
                entry = entry.add(1);
            }
            pq_sys::PQconninfoFree(options);
        }
        out
    })
}

/// Whether `keyword` is a libpq connection keyword.
pub(crate) fn is_keyword(keyword: &str) -> bool {
    let known = keywords();
    known.is_empty() || known.iter().any(|(k, _)| k == keyword)
}

/// Whether this libpq was built with TLS (`ssl`) or GSSAPI encryption (`gss`): its compiled
/// default for `sslmode`/`gssencmode` is `disable` exactly when it was not. libpq itself only
/// finds out while connecting, where its refusal looks like any other failure to connect.
pub(crate) fn supports(feature: &str) -> bool {
    let keyword = match feature {
        "ssl" => "sslmode",
        _ => "gssencmode",
    };
    keywords()
        .iter()
        .find(|(k, _)| k == keyword)
        .is_none_or(|(_, compiled)| compiled.as_deref() != Some("disable"))
}

/// Parses `conn_str` (a URI or key=value string) the way libpq will, without connecting. The
/// error is libpq's message; it may quote the string, so the caller must redact it.
pub(crate) fn parse(conn_str: &str) -> Result<(), String> {
    let Ok(c_str) = CString::new(conn_str) else {
        return Err("the connection string contains a NUL byte".to_string());
    };
    let mut errmsg: *mut c_char = std::ptr::null_mut();
    // SAFETY: `c_str` outlives the call; libpq returns either an options array (freed with
    // PQconninfoFree) or NULL with `errmsg` NULL or allocated by libpq (freed with PQfreemem).
    unsafe {
        let options = pq_sys::PQconninfoParse(c_str.as_ptr(), &mut errmsg);
        if !options.is_null() {
            pq_sys::PQconninfoFree(options);
            return Ok(());
        }
        if errmsg.is_null() {
            return Err("libpq could not parse the connection string (out of memory)".to_string());
        }
        let text = CStr::from_ptr(errmsg).to_string_lossy().trim().to_string();
        pq_sys::PQfreemem(errmsg.cast());
        Err(text)
    }
}

/// The server libpq chose for a connection string naming several hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chosen {
    pub(crate) host: String,
    pub(crate) port: String,
    /// The address connected to, when the host was reached over TCP.
    pub(crate) hostaddr: Option<String>,
}

/// Connects once by libpq's own rules (the host list in order, `target_session_attrs`,
/// `load_balance_hosts`) and reads which server it settled on (`PQhost`, `PQport`,
/// `PQhostaddr`), then closes that connection. The error is libpq's message, which may quote the
/// string: the caller must redact it. A failure here is a failure to connect (`CONNECTION_BAD`).
pub(crate) fn choose_host(conn_str: &str) -> Result<Chosen, String> {
    let Ok(c_str) = CString::new(conn_str) else {
        return Err("the connection string contains a NUL byte".to_string());
    };
    let text = |p: *const c_char| -> Option<String> {
        // SAFETY: libpq returns NULL or a NUL-terminated string owned by the connection, read
        // before the connection is finished.
        (!p.is_null())
            .then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
    };
    // SAFETY: `c_str` outlives the call; PQconnectdb returns NULL (out of memory) or a connection
    // that is finished exactly once below, after every string read from it was copied.
    unsafe {
        let conn = pq_sys::PQconnectdb(c_str.as_ptr());
        if conn.is_null() {
            return Err("libpq could not allocate a connection (out of memory)".to_string());
        }
        let result = if pq_sys::PQstatus(conn) == pq_sys::ConnStatusType::CONNECTION_OK {
            Ok(Chosen {
                host: text(pq_sys::PQhost(conn)).unwrap_or_default(),
                port: text(pq_sys::PQport(conn)).unwrap_or_default(),
                hostaddr: text(pq_sys::PQhostaddr(conn)),
            })
        } else {
            Err(text(pq_sys::PQerrorMessage(conn))
                .unwrap_or_else(|| "libpq could not connect".to_string())
                .trim()
                .to_string())
        };
        pq_sys::PQfinish(conn);
        result
    }
}

/// Whether the backend key libpq got at login names the server process that answers queries
/// (`PQbackendPID` against `pg_backend_pid()`): true for a direct connection or a plain TCP
/// proxy, false behind a pooler, which hands each client a key of its own (its sessions move
/// between server processes). Connects once, by libpq's rules, and closes again. The error is
/// libpq's message, which may quote the string: the caller must redact it.
pub(crate) fn backend_key_is_the_servers(conn_str: &str) -> Result<bool, String> {
    let Ok(c_str) = CString::new(conn_str) else {
        return Err("the connection string contains a NUL byte".to_string());
    };
    // SAFETY: `c_str` outlives the call; the connection and the result are each freed exactly
    // once below; PQgetvalue's string belongs to the result and is parsed before PQclear.
    unsafe {
        let conn = pq_sys::PQconnectdb(c_str.as_ptr());
        if conn.is_null() {
            return Err("libpq could not allocate a connection (out of memory)".to_string());
        }
        if pq_sys::PQstatus(conn) != pq_sys::ConnStatusType::CONNECTION_OK {
            let msg = pq_sys::PQerrorMessage(conn);
            let text = if msg.is_null() {
                "libpq could not connect".to_string()
            } else {
                CStr::from_ptr(msg).to_string_lossy().trim().to_string()
            };
            pq_sys::PQfinish(conn);
            return Err(text);
        }
        let key_pid = pq_sys::PQbackendPID(conn);
        let res = pq_sys::PQexec(conn, c"SELECT pg_backend_pid()".as_ptr());
        let server_pid = if !res.is_null()
            && pq_sys::PQresultStatus(res) == pq_sys::ExecStatusType::PGRES_TUPLES_OK
        {
            let v = pq_sys::PQgetvalue(res, 0, 0);
            (!v.is_null())
                .then(|| {
                    CStr::from_ptr(v)
                        .to_string_lossy()
                        .trim()
                        .parse::<i32>()
                        .ok()
                })
                .flatten()
        } else {
            None
        };
        if !res.is_null() {
            pq_sys::PQclear(res);
        }
        pq_sys::PQfinish(conn);
        server_pid
            .map(|pid| pid == key_pid)
            .ok_or_else(|| "the server did not say its process id".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_its_keywords_and_parses() {
        assert!(is_keyword("sslmode") && is_keyword("password") && is_keyword("host"));
        assert!(!is_keyword("sslmod"));
        assert!(parse("postgresql://u@h/db?sslmode=disable").is_ok());
        assert!(parse("postgresql://u@h/db?nosuch=1").is_err());
        assert!(parse("postgresql://u@h/d%00b").is_err());
    }
}
