//! The command line: global options, accepted before or after the subcommand, and one variant per
//! subcommand. Each command's own arguments live beside its code in `commands/`.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};

use crate::commands;
use crate::config::Overrides;
use crate::output::Format;

/// Database administration for SQLite and PostgreSQL: create, migrate, seed, ping and inspect,
/// from one binary, with JSON output and documented exit codes.
#[derive(Parser, Debug)]
#[command(
    name = "dbctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Exit codes: 0 success, 1 operation failed (rolled back), 2 usage or \
configuration error, 3 cannot connect, 4 a check found a problem, 5 the server takes no writes \
(a standby), 130/143 interrupted by SIGINT/SIGTERM (rolled back)."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes. `--help` lists them after the command's own, under their own
/// heading.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Global options")]
pub(crate) struct GlobalArgs {
    /// Database URL [default: $DATABASE_URL, then .env, then sqlite://dev.db]
    #[arg(long, global = true, value_name = "URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// Read settings from this file instead of ./.env (it must exist)
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) env_file: Option<PathBuf>,

    /// Migrations folder [default: $MIGRATION_DIRECTORY, then diesel.toml, then ./migrations]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) migrations_dir: Option<PathBuf>,

    /// Output format: human tables, or one JSON document on stdout
    #[arg(
        long,
        global = true,
        env = "DBCTL_FORMAT",
        value_name = "FORMAT",
        value_parser = result_format(),
        default_value = "human"
    )]
    pub(crate) format: Format,

    /// Print nothing but errors (the exit code tells the result)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,

    /// Say where each setting came from and what is being done
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
}

impl GlobalArgs {
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            database_url: self.database_url.clone(),
            env_file: self.env_file.clone(),
            migrations_dir: self.migrations_dir.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    Init(commands::init::InitArgs),
    Ping(commands::ping::PingArgs),
    Migrate(commands::migrate::MigrateArgs),
    Revision(commands::revision::RevisionArgs),
    Seed(commands::seed::SeedArgs),
    Inspect(commands::inspect::InspectArgs),
    PrintSchema(commands::print_schema::PrintSchemaArgs),
    Completions(commands::shell::CompletionsArgs),
    Man(commands::shell::ManArgs),
}

impl Command {
    /// Whether the command can print a diagram (`--format mermaid|dot`).
    pub(crate) fn draws_diagrams(&self) -> bool {
        matches!(self, Command::Inspect(_))
    }
}

/// The formats every command can print: `human` and `json`. Diagrams are `inspect`'s alone, so
/// only its `--format` lists them (see [`command`]); here they are hidden, and accepted only so
/// that `dbctl --format mermaid inspect` works: any other command refuses them (exit 2).
fn result_format() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::PossibleValue;
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("human").help("Tables and sentences for people"),
        PossibleValue::new("json").help("One JSON document on stdout, stable field names"),
        PossibleValue::new("mermaid").hide(true),
        PossibleValue::new("dot").hide(true),
    ])
    .map(|name| match name.as_str() {
        "json" => Format::Json,
        "mermaid" => Format::Mermaid,
        "dot" => Format::Dot,
        _ => Format::Human,
    })
}

/// The full command line definition: the derived one, with `inspect`'s own `--format` that also
/// takes the diagram formats. A value given there is passed up to the global option (clap
/// propagates global values from the subcommand that matched).
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory as _;
    Cli::command().mut_subcommand("inspect", |inspect| {
        inspect.arg(
            clap::Arg::new("format")
                .long("format")
                .value_name("FORMAT")
                .env("DBCTL_FORMAT")
                .value_parser(clap::builder::EnumValueParser::<Format>::new())
                .default_value("human")
                .help("Output format: human tables, one JSON document on stdout, or a diagram"),
        )
    })
}

/// Parses the command line with [`command`].
pub(crate) fn parse() -> Result<Cli, clap::Error> {
    use clap::FromArgMatches as _;
    let mut matches = command().try_get_matches()?;
    Cli::from_arg_matches_mut(&mut matches)
}

/// Whether the user asked for JSON output (`--format json`, `--format=json`, or
/// `DBCTL_FORMAT=json`), read from the raw arguments: for a usage error found before parsing
/// finished.
pub(crate) fn json_requested(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut format = None;
    for (i, arg) in args.iter().enumerate() {
        if arg == "--" {
            break;
        }
        if let Some(value) = arg.strip_prefix("--format=") {
            format = Some(value.to_string());
        } else if arg == "--format" {
            format = args.get(i + 1).cloned();
        }
    }
    let format = format.or_else(|| std::env::var("DBCTL_FORMAT").ok());
    format.is_some_and(|f| f.trim() == "json")
}
