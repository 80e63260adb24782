//! The command line: global options, accepted before or after the subcommand, and one variant per
//! subcommand. Each command's own arguments live beside its code in `commands/`.

use std::path::PathBuf;

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
configuration error, 3 cannot connect, 4 a check found a problem."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(clap::Args, Debug)]
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
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
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
}

impl Command {
    /// Whether the command can print a diagram (`--format mermaid|dot`).
    pub(crate) fn draws_diagrams(&self) -> bool {
        matches!(self, Command::Inspect(_))
    }
}
