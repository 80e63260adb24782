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

pub(crate) struct Output {
    format: Format,
    quiet: bool,
    verbose: bool,
    stderr_tty: bool,
}

impl Output {
    pub(crate) fn new(format: Format, quiet: bool, verbose: bool) -> Output {
        Output {
            format,
            quiet,
            verbose,
            stderr_tty: std::io::stderr().is_terminal(),
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
            eprintln!("{}", redact(&msg.to_string()));
        }
    }

    /// A line of the `--verbose` log on stderr.
    pub(crate) fn verbose(&self, msg: impl std::fmt::Display) {
        if self.verbose {
            eprintln!("{}", redact(&format!("dbctl: {msg}")));
        }
    }

    /// A warning on stderr (not with `--quiet`).
    pub(crate) fn warn(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{}", redact(&format!("warning: {msg}")));
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
        let text = error::render(err);
        eprintln!("{text}");
        if self.format == Format::Json {
            let mut lines = text.lines().map(|l| {
                l.trim_start()
                    .trim_start_matches("error: ")
                    .trim_start_matches("caused by: ")
                    .to_string()
            });
            let doc = serde_json::json!({
                "error": {
                    "message": lines.next().unwrap_or_default(),
                    "causes": lines.collect::<Vec<_>>(),
                    "exit_code": error::exit_of(err).code(),
                }
            });
            // Built from the redacted lines above: printed as it is, so it stays valid JSON.
            let _ = print_stdout_unchanged(&format!("{doc:#}\n"));
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

/// A table in dbctl's house style.
pub(crate) fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// A two-column table of labels and values, without a header.
pub(crate) fn key_value_table<K: ToString, V: ToString>(rows: &[(K, V)]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
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
