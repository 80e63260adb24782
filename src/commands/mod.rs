//! One module per subcommand. Each takes the [`Context`] and its own arguments, does its work, and
//! returns a report for `output` to print; none of them prints a result itself.

pub(crate) mod init;
pub(crate) mod inspect;
pub(crate) mod migrate;
pub(crate) mod ping;
pub(crate) mod print_schema;
pub(crate) mod revision;
pub(crate) mod seed;
pub(crate) mod shell;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::db::{Database, DbUrl, OpenMode, PoolSettings};
use crate::error::{self, Exit};
use crate::output::{Format, Output};

/// What every command gets: the resolved settings and the printer.
pub(crate) struct Context<'a> {
    pub(crate) config: Config,
    pub(crate) out: &'a Output,
}

impl Context<'_> {
    /// The database URL, with where it came from in the verbose log.
    pub(crate) fn url(&self) -> anyhow::Result<DbUrl> {
        let (url, source) = self.config.database_url()?;
        self.out.verbose(format_args!(
            "database {} ({}, {source})",
            url.redacted(),
            url.backend()
        ));
        for note in url.notes() {
            self.out.verbose(note);
        }
        for line in self.config.explain(url.backend()) {
            self.out.verbose(line);
        }
        for warning in self.config.warnings(url.backend()) {
            self.out.warn(warning);
        }
        Ok(url)
    }

    /// Opens the configured database through the pool.
    pub(crate) fn open(&self, mode: OpenMode) -> anyhow::Result<Database> {
        let url = self.url()?;
        let settings = self.config.pool_settings(None)?;
        self.open_url(&url, &settings, mode)
    }

    /// Opens a given URL with given settings, logging what it did.
    pub(crate) fn open_url(
        &self,
        url: &DbUrl,
        settings: &PoolSettings,
        mode: OpenMode,
    ) -> anyhow::Result<Database> {
        self.out.verbose(format_args!(
            "pool: max {} connections, checkout timeout {:.1}s, recycle {}, pre-ping {}, connect timeout {:.1}s",
            settings.size,
            settings.timeout.as_secs_f64(),
            settings
                .recycle
                .map_or("off".to_string(), |d| format!("{:.0}s", d.as_secs_f64())),
            settings.pre_ping,
            settings.connect_timeout.as_secs_f64(),
        ));
        if let Some(t) = settings.statement_timeout {
            self.out
                .verbose(format_args!("statement timeout {:.3}s", t.as_secs_f64()));
        }
        if let Some(schema) = &settings.schema {
            self.out.verbose(format_args!(
                "PostgreSQL schema {schema}: search_path is set to it on every connection"
            ));
        }
        let db = Database::open(url, settings, mode)?;
        if db.backend().has_server() {
            let pooling = db.pooling();
            self.out.verbose(format_args!(
                "transaction pooling {} ({}){}",
                if pooling.on { "on" } else { "off" },
                pooling.why,
                if pooling.on {
                    ": no prepared statements kept, settings per transaction, migration lock \
                     held as a lease row"
                } else {
                    ""
                }
            ));
        }
        match db.server() {
            Some(server) => self.out.verbose(format_args!(
                "connected to {server} in {}",
                crate::output::millis(db.connect_time())
            )),
            None => self.out.verbose(format_args!(
                "connected in {}",
                crate::output::millis(db.connect_time())
            )),
        }
        Ok(db)
    }
}

/// Runs the command the user asked for and prints its report.
pub(crate) fn run(cli: Cli, out: &Output) -> anyhow::Result<Exit> {
    if matches!(out.format(), Format::Mermaid | Format::Dot) && !cli.command.draws_diagrams() {
        return Err(error::usage(
            "--format mermaid and --format dot are only for `dbctl inspect`",
        ));
    }
    // These two read no settings: a broken .env must not stop them.
    match &cli.command {
        Command::Completions(args) => return shell::completions(args).map(|_| Exit::Success),
        Command::Man(_) => return shell::man().map(|_| Exit::Success),
        _ => {}
    }
    let ctx = Context {
        config: Config::load(cli.global.overrides())?,
        out,
    };
    match cli.command {
        Command::Init(args) => out.emit(&init::run(&ctx, args)?),
        Command::Ping(args) => out.emit(&ping::run(&ctx, args)?),
        Command::Migrate(args) => out.emit(&migrate::run(&ctx, args)?),
        Command::Revision(args) => out.emit(&revision::run(&ctx, args)?),
        Command::Seed(args) => out.emit(&seed::run(&ctx, args)?),
        Command::Inspect(args) => inspect::run(&ctx, args)?.print(out),
        Command::PrintSchema(args) => print_schema::run(&ctx, args)?.print(out),
        Command::Completions(_) | Command::Man(_) => Ok(Exit::Success),
    }
}
