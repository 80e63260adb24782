//! dbctl: database administration for SQLite and PostgreSQL.
//!
//! `main` only translates: parse the command line, run the command, turn the result into an exit
//! code. Everything printed passes through `error::redact`.

mod autogen;
mod cli;
mod commands;
mod config;
mod db;
mod error;
mod files;
mod interrupt;
mod migrate;
mod output;
mod schema;
mod seed;
mod sql;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(err) => return clap_exit(&err),
    };
    let (format, quiet, verbose) = (cli.global.format, cli.global.quiet, cli.global.verbose);
    interrupt::install(format, quiet, verbose, db::watch::cancel_all);
    let out = output::Output::new(format, quiet, verbose);
    let result = commands::run(cli, &out);
    let code = match interrupt::received() {
        Some(sig) => match interrupt::outcome(sig, &result) {
            Some(err) => {
                out.error(&err);
                error::exit_of(&err).code()
            }
            None => interrupt::exit_code(sig),
        },
        None => match result {
            Ok(exit) => exit.code(),
            Err(err) => {
                out.error(&err);
                error::exit_of(&err).code()
            }
        },
    };
    out.finish();
    ExitCode::from(code)
}

/// Help and version go to stdout with exit 0; usage errors to stderr with exit 2, redacted (a URL
/// given where a flag was expected would otherwise be echoed with its password). With
/// `--format json` (or `DBCTL_FORMAT=json`) a usage error is also one JSON error document on
/// stdout, as every other failure is.
fn clap_exit(err: &clap::Error) -> ExitCode {
    let mut text = err.render().to_string();
    for arg in std::env::args_os()
        .skip(1)
        .filter_map(|a| a.into_string().ok())
    {
        let shown = error::redact_argument(&arg);
        if shown != arg {
            text = text.replace(&arg, &shown);
        }
    }
    let text = output::clip_lines(&error::redact(&text));
    if !err.use_stderr() {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    eprint!("{text}");
    if cli::json_requested(std::env::args_os()) {
        // The message and clap's tips; not the usage lines, which are for people.
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("error:") || l.trim_start().starts_with("tip:"))
            .map(str::to_string)
            .collect();
        if lines.is_empty() {
            // A command group given without its subcommand prints its help as the error.
            let usage = text.lines().find_map(|l| l.strip_prefix("Usage: "));
            lines.push(format!(
                "a subcommand is required: {}",
                usage.unwrap_or("see --help")
            ));
        }
        output::print_json_error(&lines.join("\n"), error::Exit::Usage);
    }
    ExitCode::from(error::Exit::Usage.code())
}
