//! Error kinds, the exit codes they map to, and password redaction.
//!
//! Commands return `anyhow::Error`s with as much context as they like. A failure that is not an
//! ordinary "the operation failed" (exit 1) is tagged once, where it is known, with [`tag`]; `main`
//! reads the outermost tag to choose the exit code. Every byte dbctl prints goes through
//! [`redact`], which removes each password registered with [`register_secret`] and any
//! `scheme://user:password@` it finds, so no error path can leak one.

use std::fmt;
use std::sync::{Mutex, OnceLock};

/// The exit-code contract documented in README.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Success = 0,
    /// The operation failed and was rolled back (an SQL error, a bad seed row, ...).
    Failed = 1,
    /// Usage or configuration error: bad flag, bad URL, missing directory, malformed file.
    Usage = 2,
    /// The database could not be reached: refused, unreachable, timed out, auth, missing database.
    Connect = 3,
    /// A check ran and found a problem (`migrate status --check`, `inspect --diff`, `--lint`).
    Check = 4,
    /// Stopped by SIGINT (Ctrl-C) after undoing what was in progress.
    Interrupted = 130,
    /// Stopped by SIGTERM after undoing what was in progress.
    Terminated = 143,
}

impl Exit {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

/// A marker in an error's chain that carries its exit code; it prints as nothing.
#[derive(Debug)]
struct Tagged(Exit);

impl fmt::Display for Tagged {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

/// Marks `err` with the exit code it must produce.
pub(crate) fn tag(err: impl Into<anyhow::Error>, exit: Exit) -> anyhow::Error {
    err.into().context(Tagged(exit))
}

/// A usage or configuration error (exit 2) with the given message.
pub(crate) fn usage(msg: impl fmt::Display) -> anyhow::Error {
    tag(anyhow::anyhow!("{msg}"), Exit::Usage)
}

/// A cannot-connect error (exit 3) with the given message.
pub(crate) fn connect(msg: impl fmt::Display) -> anyhow::Error {
    tag(anyhow::anyhow!("{msg}"), Exit::Connect)
}

/// Tags the error of a `Result` with an exit code.
pub(crate) trait ResultExt<T> {
    fn exit_with(self, exit: Exit) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn exit_with(self, exit: Exit) -> anyhow::Result<T> {
        self.map_err(|e| tag(e, exit))
    }
}

/// The exit code of an error: its outermost tag, or 1.
pub(crate) fn exit_of(err: &anyhow::Error) -> Exit {
    // anyhow's downcast looks through the layers of context, outermost first.
    err.downcast_ref::<Tagged>().map_or(Exit::Failed, |t| t.0)
}

/// The printable lines of an error: the message, then one `caused by` line per cause.
/// Redacted, trimmed, and free of repeated lines (libpq and diesel often say the same thing twice).
pub(crate) fn render(err: &anyhow::Error) -> String {
    let mut lines: Vec<String> = Vec::new();
    for cause in err.chain() {
        // A tag prints as nothing and is skipped here.
        let text = one_line(&cause.to_string());
        if text.is_empty() || lines.iter().any(|l| l == &text) {
            continue;
        }
        lines.push(text);
    }
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i == 0 {
            out.push_str("error: ");
        } else {
            out.push_str("\n  caused by: ");
        }
        out.push_str(line);
    }
    redact(&out)
}

/// Folds a multi-line message (libpq's end in `\n` and add `\t` hints) into one line.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remembers a secret (a password, raw or percent-decoded) so that [`redact`] hides it.
pub(crate) fn register_secret(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let mut list = secrets().lock().unwrap_or_else(|e| e.into_inner());
    if !list.iter().any(|s| s == secret) {
        list.push(secret.to_string());
        // Longest first, so that a secret containing another is replaced whole.
        list.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Replaces every registered secret and every `scheme://user:password@` password with `***`.
pub(crate) fn redact(text: &str) -> String {
    let mut out = redact_userinfo(text);
    let list = secrets().lock().unwrap_or_else(|e| e.into_inner());
    for secret in list.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// Hides the password part of anything shaped like `scheme://user:password@host`, whether or not it
/// was registered (a URL typed as a stray argument, say).
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or white space; the userinfo at its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_passwords_are_hidden() {
        assert_eq!(
            redact_userinfo("at postgres://bob:s3cret@db:5432/app now"),
            "at postgres://bob:***@db:5432/app now"
        );
        assert_eq!(
            redact_userinfo("postgres://bob@db/app"),
            "postgres://bob@db/app"
        );
        assert_eq!(redact_userinfo("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(
            redact_userinfo("\"postgres://u:p@w@[::1/x\""),
            "\"postgres://u:***@[::1/x\""
        );
    }

    #[test]
    fn registered_secrets_are_hidden_anywhere() {
        register_secret("hunter2-unit");
        assert_eq!(redact("token hunter2-unit leaked"), "token *** leaked");
    }

    #[test]
    fn exit_codes_follow_the_outermost_tag() {
        let e = usage("bad flag");
        assert_eq!(exit_of(&e), Exit::Usage);
        let e = anyhow::anyhow!("plain");
        assert_eq!(exit_of(&e), Exit::Failed);
        let e = tag(connect("down"), Exit::Check);
        assert_eq!(exit_of(&e), Exit::Check);
        assert_eq!(
            render(&connect("down\n\tIs it up?")),
            "error: down Is it up?"
        );
    }
}
