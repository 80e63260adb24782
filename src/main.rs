//! dbctl: database administration for SQLite and PostgreSQL.
//!
//! `main` only translates: parse the command line, run the command, turn the result into an exit
//! code. Everything printed passes through `error::redact`.

mod cli;
mod commands;
mod config;
mod db;
mod error;
mod interrupt;
mod migrate;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return clap_exit(&err),
    };
    let (format, quiet, verbose) = (cli.global.format, cli.global.quiet, cli.global.verbose);
    interrupt::install(format, quiet, verbose);
    let out = output::Output::new(format, quiet, verbose);
    let result = commands::run(cli, &out);
    if let Some(sig) = interrupt::received() {
        return match interrupt::outcome(sig, &result) {
            Some(err) => {
                out.error(&err);
                ExitCode::from(error::exit_of(&err).code())
            }
            None => ExitCode::from(interrupt::exit_code(sig)),
        };
    }
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            out.error(&err);
            ExitCode::from(error::exit_of(&err).code())
        }
    }
}

/// Help and version go to stdout with exit 0; usage errors to stderr with exit 2, redacted (a URL
/// given where a flag was expected would otherwise be echoed with its password).
fn clap_exit(err: &clap::Error) -> ExitCode {
    let text = error::redact(&err.render().to_string());
    if err.use_stderr() {
        eprint!("{text}");
        ExitCode::from(error::Exit::Usage.code())
    } else {
        print!("{text}");
        ExitCode::SUCCESS
    }
}
