//! Everything dbctl prints. Commands build a report (a plain struct) and hand it here; the format
//! is chosen once. stdout carries only the result (a table or one JSON document); notes, warnings,
//! progress and the verbose log go to stderr. Every line passes through password redaction.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use comfy_table::{presets, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::error::{self, redact, Exit};

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Tables and sentences for people.
    Human,
    /// One JSON document on stdout, stable field names.
    Json,
    /// A Mermaid entity-relationship diagram (`inspect` only).
    Mermaid,
    /// A Graphviz graph (`inspect` only).
    Dot,
}

/// A command's result: printable for people and serialisable for machines.
pub(crate) trait Report: Serialize {
    /// The text printed on stdout with `--format human`.
    fn human(&self) -> String;

    /// The exit code the report stands for (4 when a check found a problem).
    fn exit(&self) -> Exit {
        Exit::Success
    }
}

/// Most warnings printed by one run; the rest are counted and summed up in one line at the end
/// (200,000 unknown metadata.toml keys must not print 23 MB).
const MAX_WARNINGS: usize = 20;

/// Longest single line written to stderr; the rest is cut with a note of how much (a 50 MB CSV
/// header quoted in an error would otherwise be a 50 MB line).
const MAX_LINE: usize = 2_000;

/// Longest piece of user input quoted into a message by [`quote`].
const MAX_QUOTED: usize = 120;

pub(crate) struct Output {
    format: Format,
    quiet: bool,
    verbose: bool,
    stderr_tty: bool,
    warnings: std::cell::Cell<usize>,
}

impl Output {
    pub(crate) fn new(format: Format, quiet: bool, verbose: bool) -> Output {
        Output {
            format,
            quiet,
            verbose,
            stderr_tty: std::io::stderr().is_terminal(),
            warnings: std::cell::Cell::new(0),
        }
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    pub(crate) fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// Prints the report on stdout in the chosen format and returns its exit code. With `--quiet`
    /// a human report is not printed (the exit code says it); JSON always is.
    pub(crate) fn emit<R: Report>(&self, report: &R) -> anyhow::Result<Exit> {
        let text = match self.format {
            Format::Json => {
                // Redacted string by string, so the document stays valid JSON whatever is hidden.
                let doc = redact_json(&serde_json::to_string_pretty(report)?);
                return print_stdout_unchanged(&(doc + "\n")).map(|()| report.exit());
            }
            Format::Human if self.quiet => String::new(),
            Format::Human => {
                let mut text = report.human();
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text
            }
            Format::Mermaid | Format::Dot => {
                return Err(error::usage(format!(
                    "--format {} is only for `dbctl inspect`",
                    self.format_name()
                )))
            }
        };
        print_stdout(&text)?;
        Ok(report.exit())
    }

    /// Prints text that is itself the result (a diagram), redacted, on stdout.
    pub(crate) fn raw(&self, text: &str) -> anyhow::Result<()> {
        print_stdout(text)
    }

    fn format_name(&self) -> &'static str {
        match self.format {
            Format::Human => "human",
            Format::Json => "json",
            Format::Mermaid => "mermaid",
            Format::Dot => "dot",
        }
    }

    /// A status line for people on stderr (not with `--quiet`).
    pub(crate) fn info(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{}", clip_lines(&redact(&msg.to_string())));
        }
    }

    /// A line of the `--verbose` log on stderr.
    pub(crate) fn verbose(&self, msg: impl std::fmt::Display) {
        if self.verbose {
            eprintln!("{}", clip_lines(&redact(&format!("dbctl: {msg}"))));
        }
    }

    /// A warning on stderr (not with `--quiet`). After [`MAX_WARNINGS`] they are only counted;
    /// [`Output::finish`] says how many were left out.
    pub(crate) fn warn(&self, msg: impl std::fmt::Display) {
        let n = self.warnings.get() + 1;
        self.warnings.set(n);
        if !self.quiet && n <= MAX_WARNINGS {
            eprintln!("{}", clip_lines(&redact(&format!("warning: {msg}"))));
        }
    }

    /// Ends the run's output: the count of warnings that were not printed.
    pub(crate) fn finish(&self) {
        let n = self.warnings.get();
        if !self.quiet && n > MAX_WARNINGS {
            eprintln!(
                "warning: and {} more warnings not shown ({} in all)",
                thousands(n - MAX_WARNINGS),
                thousands(n)
            );
        }
    }

    /// Whether progress is drawn as a bar (stderr is a terminal, human format, not quiet).
    pub(crate) fn draws_bars(&self) -> bool {
        self.stderr_tty && !self.quiet && self.format == Format::Human
    }

    /// Whether progress is written as one line per step instead (stderr is not a terminal).
    pub(crate) fn writes_progress_lines(&self) -> bool {
        !self.stderr_tty && !self.quiet && self.format == Format::Human
    }

    /// A progress bar on stderr, hidden unless [`Output::draws_bars`]. `template` is indicatif's.
    pub(crate) fn progress_bar(&self, len: u64, template: &str) -> ProgressBar {
        if !self.draws_bars() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// Prints a failure: one line (and its causes) on stderr, and with `--format json` a JSON
    /// document on stdout as well, so that a script always gets one document.
    pub(crate) fn error(&self, err: &anyhow::Error) {
        let text = clip_lines(&error::render(err));
        eprintln!("{text}");
        if self.format == Format::Json {
            print_json_error(&text, error::exit_of(err));
        }
    }
}

/// Hides passwords in every string of a JSON document, keeping its layout and key order: each
/// string literal is decoded, redacted and, when that changed it, encoded again.
fn redact_json(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..start]);
        let literal = &rest[start..];
        // The closing quote is the first one not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in literal.char_indices().skip(1) {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i + 1);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else {
            out.push_str(literal);
            return out;
        };
        let quoted = &literal[..end];
        match serde_json::from_str::<String>(quoted) {
            Ok(value) => {
                let shown = redact(&value);
                if shown == value {
                    out.push_str(quoted);
                } else {
                    out.push_str(&serde_json::Value::String(shown).to_string());
                }
            }
            Err(_) => out.push_str(quoted),
        }
        rest = &literal[end..];
    }
    out.push_str(rest);
    out
}

/// The JSON error document on stdout: `{"error": {"message", "causes", "exit_code"}}`, from the
/// printed error text (its first line is the message, each further non-empty line a cause).
pub(crate) fn print_json_error(text: &str, exit: Exit) {
    let mut lines = text
        .lines()
        .map(|l| {
            l.trim_start()
                .trim_start_matches("error: ")
                .trim_start_matches("caused by: ")
                .to_string()
        })
        .filter(|l| !l.is_empty());
    let doc = serde_json::json!({
        "error": {
            "message": lines.next().unwrap_or_default(),
            "causes": lines.collect::<Vec<_>>(),
            "exit_code": exit.code(),
        }
    });
    // Built from redacted text: printed as it is, so it stays valid JSON.
    let _ = print_stdout_unchanged(&format!("{doc:#}\n"));
}

fn print_stdout(text: &str) -> anyhow::Result<()> {
    print_stdout_unchanged(&redact(text))
}

/// Writes already redacted text on stdout.
fn print_stdout_unchanged(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        // A closed pipe (`dbctl ... | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// User input quoted into a message: in backticks, cut to [`MAX_QUOTED`] characters with a note
/// of how much was left out, control characters shown escaped. Every message that repeats what
/// a user gave (a setting's value, a CSV header field, a file's key) goes through here.
pub(crate) fn quote(text: &str) -> String {
    let mut out = String::from("`");
    for (shown, (at, c)) in text.char_indices().enumerate() {
        if shown == MAX_QUOTED {
            let rest = text.len() - at;
            out.push_str(&format!("...` ({} more bytes)", thousands(rest)));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

/// User input cut to [`MAX_QUOTED`] characters, with a note of how much was left out, for a
/// message that quotes it its own way (an SQL identifier, say).
pub(crate) fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_QUOTED) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!(
            "{}... ({} more bytes)",
            &text[..at],
            thousands(text.len() - at)
        )),
    }
}

/// `unknown key `a``, or `3 unknown keys `a`, `b`, `c``, or for a long list the first few and
/// `and 199,997 more`: a list of user input quoted into one message, bounded.
pub(crate) fn quoted_list(what: &str, items: &[&str]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = items.iter().take(SHOWN).map(|i| quote(i)).collect();
    let mut text = match items.len() {
        1 => format!("{what} {}", shown[0]),
        n => format!("{} {what}s {}", thousands(n), shown.join(", ")),
    };
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", thousands(items.len() - SHOWN)));
    }
    text
}

/// Cuts every line of `text` to [`MAX_LINE`] bytes (at a character boundary), saying how much
/// was cut: the safety net for a message that quotes input without [`quote`].
pub(crate) fn clip_lines(text: &str) -> String {
    if text.len() <= MAX_LINE {
        return text.to_string();
    }
    let mut out = String::new();
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.len() <= MAX_LINE {
            out.push_str(line);
            continue;
        }
        let mut end = MAX_LINE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&line[..end]);
        out.push_str(&format!(
            "... ({} more bytes cut)",
            thousands(line.len() - end)
        ));
    }
    out
}

/// `199980` -> `199,980`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A table in dbctl's house style.
pub(crate) fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    let fit = arrangement(&table);
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(fit)
        .set_header(header);
    table
}

/// Fit the table to the terminal's width, unless the terminal reports a width of 0 (some CI and
/// docker ptys report 0x0): fitting to 0 would squeeze every column to one character, so such a
/// table gets no width limit, as when stdout is not a terminal.
fn arrangement(table: &Table) -> ContentArrangement {
    match table.width() {
        Some(0) => ContentArrangement::Disabled,
        _ => ContentArrangement::Dynamic,
    }
}

/// A two-column table of labels and values, without a header.
pub(crate) fn key_value_table<K: ToString, V: ToString>(rows: &[(K, V)]) -> Table {
    let mut table = Table::new();
    let fit = arrangement(&table);
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(fit);
    for (k, v) in rows {
        table.add_row(vec![k.to_string(), v.to_string()]);
    }
    table
}

/// Milliseconds with enough precision for a human (`0.42 ms`, `12.3 ms`, `1534 ms`).
pub(crate) fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A duration in milliseconds for JSON, rounded to microseconds.
pub(crate) fn ms_f64(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Serializes a duration the way [`ms_f64`] shows it, so that an engine's result can keep a
/// `Duration` and its JSON still says milliseconds.
pub(crate) fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ms_f64(*d))
}

/// How `main` prints, for a message printed from another thread (see [`abort`]).
static PRINTER: std::sync::OnceLock<(Format, bool, bool)> = std::sync::OnceLock::new();

/// Remembers how `main` prints, for [`abort`]. Called once, first thing in `main`.
pub(crate) fn remember_printer(format: Format, quiet: bool, verbose: bool) {
    let _ = PRINTER.set((format, quiet, verbose));
}

/// Prints `err` the way `main` would and exits with its code, from any thread. `_exit`, not
/// `exit`: the main thread may be inside libpq or SQLite, and must not see their exit handlers
/// run under it (what was printed is flushed already).
pub(crate) fn abort(err: anyhow::Error) -> ! {
    let (format, quiet, verbose) = PRINTER
        .get()
        .copied()
        .unwrap_or((Format::Human, false, false));
    Output::new(format, quiet, verbose).error(&err);
    // SAFETY: ends the process; nothing runs after it.
    unsafe { libc::_exit(i32::from(error::exit_of(&err).code())) }
}

#[cfg(test)]
mod tests {
    use super::redact_json;

    #[test]
    fn json_redaction_keeps_order_and_validity() {
        // Written by hand: key order as a serialised struct has it (not sorted).
        let text = r#"{"zeta": "postgres://u:p w@h/db \"q\"", "alpha": ["password='a b' x", 1, "\\\"plain"]}"#;
        let shown = redact_json(text);
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["zeta"], "postgres://u:***@h/db \"q\"");
        assert_eq!(back["alpha"][0], "password=*** x");
        assert_eq!(back["alpha"][2], "\\\"plain");
        assert!(shown.find("zeta") < shown.find("alpha"), "{shown}");
    }
}
