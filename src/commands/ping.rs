//! `dbctl ping`: can the database be reached, and how fast does it answer?
//!
//! Connects through the pool (the first connection is the pool's), times `SELECT 1` round trips,
//! and with `--wait` keeps trying until the database answers or the deadline passes. It only reads:
//! a missing SQLite file is reported, never created.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use serde::Serialize;

use crate::commands::Context;
use crate::db::topology::{self, Role, ServerRole};
use crate::db::{self, Backend, Database, OpenMode};
use crate::error::{self, Exit};
use crate::output::{self, millis, ms_f64, Report};

/// Check that the database answers: backend, server version and round-trip latency.
///
/// Examples:
///   dbctl ping
///   dbctl ping --database-url postgres://app@db:5432/app --wait 30
///   dbctl ping --count 10 --format json
///   dbctl ping --writable --wait 60    # until a primary that takes writes answers (failover)
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct PingArgs {
    /// Keep trying until the database answers or SECONDS have passed (for CI and containers)
    #[arg(long, value_name = "SECONDS", value_parser = crate::config::numbers::ping_wait_flag)]
    wait: Option<Duration>,

    /// Number of round trips to time, like ping(8)'s -c
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,

    /// Bound on each connection attempt [default: $DB_CONNECT_TIMEOUT, then 5]
    #[arg(long, value_name = "SECONDS", value_parser = crate::config::numbers::connect_timeout_flag)]
    timeout: Option<Duration>,

    /// Exit 5 unless the server takes writes (a primary, not a read-only standby); with --wait,
    /// keep waiting until one does
    #[arg(long, visible_alias = "primary")]
    writable: bool,
}

#[derive(Serialize, Debug)]
pub(crate) struct PingReport {
    backend: Backend,
    url: String,
    server_version: String,
    /// The server that answered (`host:port`; for a URL naming several, the one libpq chose).
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    /// PostgreSQL: primary or standby, whether it takes writes, a standby's lag and upstream.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    server: Option<ServerRole>,
    /// Connection attempts made (more than 1 only with `--wait`).
    attempts: u32,
    connect_ms: f64,
    count: u32,
    min_ms: f64,
    median_ms: f64,
    max_ms: f64,
    #[serde(skip)]
    samples: Vec<Duration>,
    #[serde(skip)]
    connect: Duration,
}

impl Report for PingReport {
    fn human(&self) -> String {
        let latency = if self.count == 1 {
            millis(self.samples[0])
        } else {
            let (min, median, max) = stats(&self.samples);
            format!(
                "{} round trips: min {}, median {}, max {}",
                self.count,
                millis(min),
                millis(median),
                millis(max)
            )
        };
        let mut rows = vec![
            ("backend", self.backend.to_string()),
            ("url", self.url.clone()),
        ];
        if let Some(host) = &self.host {
            rows.push(("host", host.clone()));
        }
        rows.push(("server version", self.server_version.clone()));
        if let Some(server) = &self.server {
            rows.extend(role_rows(server));
        }
        rows.push(("connect", millis(self.connect)));
        rows.push(("latency", latency));
        let table = output::key_value_table(&rows);
        format!("{table}")
    }
}

/// The role lines of the human table.
fn role_rows(server: &ServerRole) -> Vec<(&'static str, String)> {
    let mut rows = vec![(
        "role",
        match (server.role, server.writable) {
            (Role::Primary, true) => "primary (writable)".to_string(),
            (Role::Primary, false) => "primary (read-only sessions)".to_string(),
            (Role::Standby, _) => "standby (read-only)".to_string(),
        },
    )];
    if server.role == Role::Standby {
        let time = server
            .replay_lag_ms
            .map_or("unknown".to_string(), |ms| format!("{ms:.0} ms"));
        let bytes = server
            .replay_lag_bytes
            .map_or("unknown".to_string(), |b| format!("{b} bytes"));
        rows.push(("replay lag", format!("{time}, {bytes}")));
        rows.push((
            "upstream",
            server
                .upstream
                .clone()
                .unwrap_or_else(|| "unknown (needs pg_read_all_stats)".to_string()),
        ));
    }
    rows
}

/// min, median and max of a non-empty list.
fn stats(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    };
    (sorted[0], median, sorted[n - 1])
}

pub(crate) fn run(ctx: &Context, args: PingArgs) -> anyhow::Result<PingReport> {
    let url = ctx.url()?;
    let mut settings = ctx.config.pool_settings(args.timeout)?;
    // Whether the server answers does not depend on DATABASE_SCHEMA (`ping --wait` may run
    // before `init` creates it).
    settings.schema = None;
    let (db, attempts) = match args.wait {
        None => (ctx.open_url(&url, &settings, OpenMode::Existing)?, 1),
        Some(wait) => wait_for(ctx, &url, &settings, wait, args.writable)?,
    };
    let mut conn = db.get()?;
    let server_version = db::server_version(&mut conn)?;
    let server = topology::server_role(&mut conn)?;
    if let Some(role) = server.as_ref().filter(|r| args.writable && !r.writable) {
        return Err(topology::not_writable(&db, role));
    }
    let mut samples = Vec::with_capacity(args.count as usize);
    for _ in 0..args.count {
        let started = Instant::now();
        conn.batch_execute("SELECT 1")
            .map_err(|e| error::connect(format!("{} stopped answering: {e}", url.redacted())))?;
        samples.push(started.elapsed());
    }
    let (min, median, max) = stats(&samples);
    Ok(PingReport {
        backend: db.backend(),
        url: url.redacted(),
        server_version,
        host: db.server(),
        server,
        attempts,
        connect_ms: ms_f64(db.connect_time()),
        count: args.count,
        min_ms: ms_f64(min),
        median_ms: ms_f64(median),
        max_ms: ms_f64(max),
        samples,
        connect: db.connect_time(),
    })
}

/// Retries connection failures (exit 3) until `wait` has passed; anything else fails at once.
fn wait_for(
    ctx: &Context,
    url: &db::DbUrl,
    settings: &db::PoolSettings,
    wait: Duration,
    writable: bool,
) -> anyhow::Result<(Database, u32)> {
    let started = Instant::now();
    let deadline = started + wait;
    let mut attempts = 0;
    let mut last_said: Option<Instant> = None;
    loop {
        attempts += 1;
        let mut settings = settings.clone();
        // Never let one attempt run past the deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        settings.connect_timeout = settings
            .connect_timeout
            .min(left.max(Duration::from_secs(1)));
        let opened = Database::open(url, &settings, OpenMode::Existing).and_then(|db| {
            if writable {
                topology::require_writable(&db)?;
            }
            Ok(db)
        });
        let err = match opened {
            Ok(db) => {
                if attempts > 1 {
                    ctx.out.info(format_args!(
                        "{} answered after {:.1}s ({attempts} attempts)",
                        url.redacted(),
                        started.elapsed().as_secs_f64()
                    ));
                }
                return Ok((db, attempts));
            }
            Err(err) => err,
        };
        let retry = matches!(error::exit_of(&err), Exit::Connect | Exit::ReadOnly);
        if !retry || Instant::now() >= deadline {
            return Err(err.context(format!(
                "gave up waiting for {} after {:.1}s ({attempts} attempts)",
                url.redacted(),
                started.elapsed().as_secs_f64()
            )));
        }
        if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            ctx.out.info(format_args!(
                "waiting for {} ({:.0}s left): {}",
                url.redacted(),
                deadline
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64(),
                error::render(&err).trim_start_matches("error: ")
            ));
            last_said = Some(Instant::now());
        }
        crate::interrupt::check()?;
        std::thread::sleep(Duration::from_millis(250).min(left));
    }
}
