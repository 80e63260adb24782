//! Error kinds, the exit codes they map to, and password redaction.
//!
//! Commands return `anyhow::Error`s with as much context as they like. A failure that is not an
//! ordinary "the operation failed" (exit 1) is tagged once, where it is known, with [`tag`]; `main`
//! reads the outermost tag to choose the exit code. Every line dbctl prints goes through
//! [`redact`], which hides passwords where they can stand (a URL's user info, a `password=`
//! value); text from a driver or server also goes through [`redact_driver`], which cuts out each
//! password registered with [`register_secret`] wherever it stands. Nothing else is rewritten, so
//! a password that is also a word or a number never corrupts output.

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
    /// The server takes no writes (a hot standby, or read-only sessions): a writing command
    /// stopped before doing anything, or `ping --writable` found it so.
    ReadOnly = 5,
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

/// Remembers a secret (a password, raw or percent-decoded) so that [`redact_driver`] cuts it out of
/// driver messages.
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

/// Hides passwords where they can stand in text: the user info of anything shaped like
/// `scheme://user:password@host`, and the value of `password=` (URL query or libpq key=value
/// string, quoted or not). Nothing else is touched, so a password that is also a common word or
/// a number does not blank out unrelated text.
pub(crate) fn redact(text: &str) -> String {
    redact_password_values(&redact_userinfo(text))
}

/// [`redact`], plus every registered password wherever it stands: for the text of a driver's or
/// server's message, which may quote a connection string in a form [`redact`] cannot see.
pub(crate) fn redact_driver(text: &str) -> String {
    let mut out = redact(text);
    let list = secrets().lock().unwrap_or_else(|e| e.into_inner());
    for secret in list.iter() {
        out = replace_delimited(&out, secret);
    }
    out
}

/// Replaces each occurrence of `secret` that is not glued to letters or digits on either side:
/// an echoed password stands between quotes, `:`, `@` or `=`; the same letters inside a word
/// (`e` in "exist") are not an echo of it.
fn replace_delimited(text: &str, secret: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices(secret) {
        if at < copied {
            continue;
        }
        let before = text[..at].chars().next_back();
        let after = text[at + secret.len()..].chars().next();
        let glued = (word(before) && secret.chars().next().is_some_and(char::is_alphanumeric))
            || (word(after)
                && secret
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphanumeric));
        if glued {
            continue;
        }
        out.push_str(&text[copied..at]);
        out.push_str("***");
        copied = at + secret.len();
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a URL written inside text ends: at a quote or a line end. A password may hold spaces
/// and `/?#` (that is how it ends up in an error), so the user info runs to the token's last `@`.
fn url_token_end(tail: &str) -> usize {
    let end = tail
        .find(['"', '\'', '`', '\n', '\r', '\\'])
        .unwrap_or(tail.len());
    // A second URL on the same line starts a token of its own.
    match tail[..end].find("://") {
        Some(next) => tail[..next]
            .rfind(char::is_whitespace)
            .map_or(end, |space| space),
        None => end,
    }
}

/// One command-line argument as it may be echoed (by the argument parser): the user info of a
/// URL up to its last `@`, and `password=` values, hidden. The argument is known whole here, so
/// a password holding quotes or spaces is hidden whole too.
pub(crate) fn redact_argument(arg: &str) -> String {
    let mut out = arg.to_string();
    if let Some(pos) = arg.find("://") {
        let tail = &arg[pos + 3..];
        if let Some(at) = tail.rfind('@') {
            if let Some(colon) = tail[..at].find(':') {
                out = format!("{}{}:***{}", &arg[..pos + 3], &tail[..colon], &tail[at..]);
            }
        }
    }
    redact_password_values(&out)
}

/// Hides the password part of anything shaped like `scheme://user:password@host`, whether or not it
/// was registered (a URL typed as a stray argument, say).
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = url_token_end(tail);
        let token = &tail[..end];
        let consumed = match token.rfind('@') {
            Some(at) => {
                let userinfo = &token[..at];
                match userinfo.find(':') {
                    Some(colon) if !userinfo[..colon].contains(char::is_whitespace) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                        at
                    }
                    _ => 0,
                }
            }
            None => 0,
        };
        // Nothing hidden: go on after the `://` (the token may hold another URL).
        rest = &tail[consumed..];
    }
    out.push_str(rest);
    out
}

/// Hides the value of every `password=` (case-insensitive, optional spaces around `=`), as in a
/// URL query (`?password=x&...`) or a libpq string (`password='a b'`).
fn redact_password_values(text: &str) -> String {
    const KEY: &str = "password";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(KEY) {
        let start = search + found;
        let key_end = start + KEY.len();
        search = key_end;
        let boundary = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let after = &text[key_end..];
        let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
        if !boundary || !after[spaces..].starts_with('=') {
            continue;
        }
        let value_start = key_end + spaces + 1;
        let value = &text[value_start..];
        let lead = value.len() - value.trim_start_matches([' ', '\t']).len();
        let value_start = value_start + lead;
        let value = &text[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            // libpq quoting: up to the first quote not escaped by a backslash.
            let mut escaped = false;
            let mut len = quoted.len();
            for (i, c) in quoted.char_indices() {
                match c {
                    '\n' | '\r' => {
                        len = i;
                        break;
                    }
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        len = i + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            1 + len
        } else {
            value
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '\\' | '`' | '\''))
                .unwrap_or(value.len())
        };
        if value_len == 0 {
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str("***");
        copied = value_start + value_len;
        search = copied;
    }
    out.push_str(&text[copied..]);
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
    fn registered_secrets_are_hidden_in_driver_text_only() {
        register_secret("hunter2-unit");
        assert_eq!(
            redact_driver("token hunter2-unit leaked"),
            "token *** leaked"
        );
        assert_eq!(redact("token hunter2-unit"), "token hunter2-unit");
        register_secret("e");
        assert_eq!(
            redact_driver("database \"e\" does not exist: e"),
            "database \"***\" does not exist: ***"
        );
    }

    #[test]
    fn passwords_with_any_bytes_are_hidden_in_urls_and_conninfo() {
        for (text, want) in [
            ("'postgres://u:a#b/c?d@h/db' x", "'postgres://u:***@h/db' x"),
            ("at postgres://u:p w@h/db", "at postgres://u:***@h/db"),
            (
                "host=h password=s3cr3t dbname=x",
                "host=h password=*** dbname=x",
            ),
            ("password = 'a \\' b' user=u", "password = *** user=u"),
            (
                "x?sslmode=off&password=pw&a=1",
                "x?sslmode=off&password=***&a=1",
            ),
            ("PASSWORD=pw", "PASSWORD=***"),
            ("dbpassword=keep", "dbpassword=keep"),
            (
                "\"attempts\": 1, \"backend\": \"postgres\"",
                "\"attempts\": 1, \"backend\": \"postgres\"",
            ),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
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
