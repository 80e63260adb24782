//! The migration lock when a transaction-pooling proxy (PgBouncer) stands between dbctl and
//! PostgreSQL: a session advisory lock is useless there (the session belongs to the pool: the lock
//! would be taken on one server connection and released on another, or stay behind on a server
//! connection for another client), so a run holds a *lease*: a row in dbctl's own table
//! `__dbctl_lock` with its owner, a heartbeat and an expiry, all in the server's clock.
//!
//! - Taking it is one statement (one transaction, any server connection): insert the row, or take
//!   it over when its expiry has passed; polled like the session lock, until `--lock-timeout`.
//! - A thread renews it every third of the expiry over a connection of its own, so a long
//!   migration keeps it; a runner killed with SIGKILL stops renewing, and its lease can be taken
//!   over once it expires (`DB_LOCK_EXPIRY`, 30 s by default).
//! - A run whose lease was taken over (it stalled for longer than the expiry) stops before its
//!   next migration. Each transactional migration also takes a transaction-level advisory lock
//!   and checks, inside its own transaction, that it is still to be done
//!   ([`still_to_do`]): exactly once, whatever connection the pooler hands out.
//!
//! Pooled mode exists only on PostgreSQL, so everything here is PostgreSQL's SQL. The same lease
//! is what engines without advisory locks (CockroachDB, YugabyteDB) would need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{Double, Nullable, Text};

use crate::db::{quote_ident, AnyConnection};

/// The advisory lock key dbctl's migration runs share on PostgreSQL ("dbctlmig" in ASCII).
/// Advisory locks are per database, so runs against different databases do not wait for each
/// other.
pub(crate) const PG_LOCK_KEY: i64 = 0x6462_6374_6c6d_6967;

/// Sets UTC for the current transaction only (transaction-pooling mode).
pub(crate) const SET_LOCAL_UTC: &str = "SET LOCAL TIME ZONE 'UTC'";

/// How long a lease outlives its holder's last heartbeat, unless `DB_LOCK_EXPIRY` says otherwise.
pub(crate) const DEFAULT_EXPIRY: Duration = Duration::from_secs(30);

/// dbctl's lock table.
pub(crate) const LOCK_TABLE: &str = "__dbctl_lock";

/// The transaction-level advisory key each pooled-mode migration's transaction holds
/// ("dbctllck").
pub(crate) const XACT_KEY: i64 = 0x6462_6374_6c6c_636b;

/// The transaction-level advisory key that serialises creating the lock table ("dbctltbl"): not
/// [`XACT_KEY`], which a stalled run's migration transaction may hold for long.
const TABLE_KEY: i64 = 0x6462_6374_6c74_626c;

/// The lock's name in the table (one lock per database and schema).
const NAME: &str = "migrate";

/// A held lease; give it back with [`Lease::release`]. Dropping it stops the heartbeat.
pub(crate) struct Lease {
    table: String,
    owner: String,
    lost: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<thread::JoinHandle<()>>,
}

/// Who holds the lease now, for the wait message.
pub(crate) struct Holder {
    pub(crate) owner: String,
    pub(crate) heartbeat_age_s: f64,
    pub(crate) expires_in_s: f64,
}

/// A unique owner name: host, pid and the time, so that a restarted process is another owner.
fn owner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("dbctl@{host} pid {} ({nanos:x})", std::process::id())
}

/// Creates the lock table if it is missing, in a transaction that holds [`XACT_KEY`] so that two
/// runs creating it at once do not collide.
pub(crate) fn ensure_table(conn: &mut AnyConnection, prefix: &str) -> anyhow::Result<String> {
    let table = format!("{prefix}{}", quote_ident(LOCK_TABLE));
    conn.batch_execute(&format!(
        "BEGIN; SELECT pg_catalog.pg_advisory_xact_lock({TABLE_KEY}); \
         CREATE TABLE IF NOT EXISTS {table} (
             name TEXT PRIMARY KEY,
             owner TEXT NOT NULL,
             acquired_at TIMESTAMPTZ NOT NULL,
             heartbeat_at TIMESTAMPTZ NOT NULL,
             expires_at TIMESTAMPTZ NOT NULL
         ); COMMIT"
    ))
    .map_err(|e| {
        // A failed statement leaves the transaction open on this connection: end it.
        let _ = conn.batch_execute("ROLLBACK");
        anyhow::Error::new(e).context(format!("creating the lock table {LOCK_TABLE}"))
    })?;
    Ok(table)
}

#[derive(QueryableByName)]
struct Owner {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)]
    owner: String,
}

/// One attempt to take the lease: `Ok(None)` when it is taken, else who holds it.
fn try_take(
    conn: &mut AnyConnection,
    table: &str,
    owner: &str,
    expiry: Duration,
) -> anyhow::Result<Option<Holder>> {
    let taken: Vec<Owner> = diesel::sql_query(format!(
        "INSERT INTO {table} AS l (name, owner, acquired_at, heartbeat_at, expires_at) \
         SELECT $1, $2, now(), now(), now() + make_interval(secs => $3) \
         WHERE pg_catalog.pg_try_advisory_xact_lock($4) \
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
         acquired_at = excluded.acquired_at, heartbeat_at = excluded.heartbeat_at, \
         expires_at = excluded.expires_at WHERE l.expires_at < now() \
         RETURNING l.owner"
    ))
    .bind::<Text, _>(NAME)
    .bind::<Text, _>(owner)
    .bind::<Double, _>(expiry.as_secs_f64())
    // A direct run holds the session lock on this key for its whole run: not while it does.
    .bind::<diesel::sql_types::BigInt, _>(PG_LOCK_KEY)
    .load(conn)
    .context("taking the migration lock (a row in __dbctl_lock)")?;
    if !taken.is_empty() {
        return Ok(None);
    }
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Text>)]
        owner: Option<String>,
        #[diesel(sql_type = Nullable<Double>)]
        age: Option<f64>,
        #[diesel(sql_type = Nullable<Double>)]
        left: Option<f64>,
    }
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT owner, EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS age, \
         EXTRACT(EPOCH FROM expires_at - now())::float8 AS left FROM {table} WHERE name = $1"
    ))
    .bind::<Text, _>(NAME)
    .load(conn)
    .context("reading who holds the migration lock")?;
    let row = rows.into_iter().next();
    Ok(Some(Holder {
        owner: row
            .as_ref()
            .and_then(|r| r.owner.clone())
            .filter(|_| row.as_ref().and_then(|r| r.left).is_some_and(|l| l >= 0.0))
            .unwrap_or_else(|| "a run connected directly, holding the session lock".to_string()),
        heartbeat_age_s: row.as_ref().and_then(|r| r.age).unwrap_or(0.0),
        expires_in_s: row.as_ref().and_then(|r| r.left).unwrap_or(0.0),
    }))
}

/// Takes the lease, polling until `timeout`; `on_wait` hears about the holder once. `renew`
/// opens the heartbeat's own connection.
pub(crate) fn acquire(
    conn: &mut AnyConnection,
    table: String,
    expiry: Duration,
    timeout: Duration,
    renew: impl FnOnce() -> anyhow::Result<AnyConnection>,
    mut on_wait: impl FnMut(&Holder),
) -> anyhow::Result<(Lease, Duration)> {
    let owner = owner_name();
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    let mut told = false;
    loop {
        let Some(holder) = try_take(conn, &table, &owner, expiry)? else {
            break;
        };
        crate::interrupt::check()
            .context("stopped while waiting for the migration lock: nothing was changed")?;
        if started.elapsed() >= timeout {
            return Err(anyhow::anyhow!(
                "another migration run holds the lock on this database ({}, last heartbeat \
                 {:.0}s ago, expires in {:.0}s unless renewed); gave up after {:.0}s (raise \
                 --lock-timeout to wait longer)",
                holder.owner,
                holder.heartbeat_age_s,
                holder.expires_in_s.max(0.0),
                timeout.as_secs_f64()
            ));
        }
        if !told {
            on_wait(&holder);
            told = true;
        }
        thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
    let waited = started.elapsed();
    let lost = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = mpsc::channel();
    let mut side = renew().context("opening the connection that renews the migration lock")?;
    let (t, o, l) = (table.clone(), owner.clone(), lost.clone());
    let heartbeat = thread::Builder::new()
        .name("dbctl-lock-heartbeat".into())
        .spawn(move || heartbeat(&mut side, &t, &o, expiry, &l, &stopped))
        .context("starting the lock heartbeat")?;
    Ok((
        Lease {
            table,
            owner,
            lost,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        },
        waited,
    ))
}

/// Renews the lease every third of its expiry until told to stop; marks it lost when the row no
/// longer names this owner (taken over after this process stalled past the expiry).
fn heartbeat(
    conn: &mut AnyConnection,
    table: &str,
    owner: &str,
    expiry: Duration,
    lost: &AtomicBool,
    stop: &mpsc::Receiver<()>,
) {
    let every = (expiry / 3).max(Duration::from_millis(300));
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let renewed = diesel::sql_query(format!(
            "UPDATE {table} SET heartbeat_at = now(), \
             expires_at = now() + make_interval(secs => $3) WHERE name = $1 AND owner = $2"
        ))
        .bind::<Text, _>(NAME)
        .bind::<Text, _>(owner)
        .bind::<Double, _>(expiry.as_secs_f64())
        .execute(conn);
        match renewed {
            Ok(0) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            // A failed renewal is retried at the next beat; the expiry leaves room for two.
            Err(_) => {}
        }
    }
}

/// The error of a run whose lease was taken over.
pub(crate) fn taken_over(before: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the migration lock was taken over by another run (this run went without a heartbeat \
         for longer than DB_LOCK_EXPIRY); stopped before {before}: the migrations before it stay \
         applied"
    )
}

impl Lease {
    /// Whether another run took the lease over (this one stalled past the expiry), as the
    /// heartbeat last saw it.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The lock table and this run's owner name, for checks made inside a transaction.
    pub(crate) fn row(&self) -> (&str, &str) {
        (&self.table, &self.owner)
    }

    /// Asks the server whether the lease is still this run's (before a migration that runs
    /// outside a transaction, where no transaction lock backs it up).
    pub(crate) fn still_ours(&self, conn: &mut AnyConnection) -> anyhow::Result<bool> {
        let rows: Vec<Owner> = diesel::sql_query(format!(
            "SELECT owner FROM {} WHERE name = $1 AND owner = $2",
            self.table
        ))
        .bind::<Text, _>(NAME)
        .bind::<Text, _>(&self.owner)
        .load(conn)
        .context("checking that the migration lock is still held")?;
        Ok(!rows.is_empty())
    }

    fn stop_heartbeat(&mut self) {
        self.stop.take();
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
    }

    /// Stops the heartbeat and deletes the row, if it is still this run's.
    pub(crate) fn release(mut self, conn: &mut AnyConnection) -> anyhow::Result<()> {
        self.stop_heartbeat();
        diesel::sql_query(format!(
            "DELETE FROM {} WHERE name = $1 AND owner = $2",
            self.table
        ))
        .bind::<Text, _>(NAME)
        .bind::<Text, _>(&self.owner)
        .execute(conn)
        .context("releasing the migration lock (the row in __dbctl_lock)")?;
        Ok(())
    }
}

/// A direct run, holding the session lock: waits (until `timeout`) while a pooled run's lease is
/// live, so that runs through a pooler and runs connected directly exclude each other too. Says
/// whether it waited.
pub(crate) fn wait_for_live_lease(
    conn: &mut AnyConnection,
    prefix: &str,
    timeout: Duration,
    on_wait: &mut dyn FnMut(&str),
) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Live {
        #[diesel(sql_type = Nullable<Text>)]
        owner: Option<String>,
    }
    let table = format!("{prefix}{}", quote_ident(LOCK_TABLE));
    let started = Instant::now();
    let mut told = false;
    loop {
        let exists: Vec<Live> = diesel::sql_query(
            "SELECT NULL::text AS owner WHERE pg_catalog.to_regclass($1) IS NOT NULL",
        )
        .bind::<Text, _>(&table)
        .load(conn)
        .context("looking for the pooled-mode lock table")?;
        if exists.is_empty() {
            return Ok(told);
        }
        let live: Vec<Live> = diesel::sql_query(format!(
            "SELECT owner FROM {table} WHERE name = $1 AND expires_at >= now()"
        ))
        .bind::<Text, _>(NAME)
        .load(conn)
        .context("looking for a pooled run's migration lock")?;
        let Some(holder) = live.into_iter().next() else {
            return Ok(told);
        };
        let owner = holder.owner.unwrap_or_default();
        if started.elapsed() >= timeout {
            return Err(anyhow::anyhow!(
                "another migration run (through a pooler: {owner}) holds the lock on this \
                 database; gave up after {:.0}s (raise --lock-timeout to wait longer)",
                timeout.as_secs_f64()
            ));
        }
        if !told {
            on_wait(&owner);
            told = true;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// At the start of a migration's transaction in pooled mode: waits for the transaction-level
/// advisory lock (held by any other run's migration transaction until it ends), applies the
/// per-transaction settings (`DB_STATEMENT_TIMEOUT`, and UTC as a direct run's session has it),
/// then says whether `version` is still to be applied (`up`) or reverted, and fails when the
/// lease is no longer this run's. The lock goes with the transaction, on whatever server
/// connection it ran.
pub(crate) fn still_to_do(
    conn: &mut AnyConnection,
    diesel_table: &str,
    lock_table: &str,
    owner: &str,
    version: &str,
    up: bool,
) -> anyhow::Result<bool> {
    conn.batch_execute(&format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({XACT_KEY}); {}",
        SET_LOCAL_UTC
    ))
    .context("taking the migration's transaction lock (pg_advisory_xact_lock)")?;
    crate::db::pooled_transaction_setup(conn).context("setting the transaction's timeout")?;
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ours: bool,
    }
    let found: Found = diesel::sql_query(format!(
        "SELECT (SELECT count(*) FROM {diesel_table} WHERE version = $1)::bigint AS n, \
         EXISTS (SELECT 1 FROM {lock_table} WHERE owner = $2) AS ours"
    ))
    .bind::<Text, _>(version)
    .bind::<Text, _>(owner)
    .get_result(conn)
    .with_context(|| format!("checking whether {version} is applied"))?;
    if !found.ours {
        return Err(taken_over(version));
    }
    Ok((found.n == 0) == up)
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}
