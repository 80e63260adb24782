//! The run lock a direct migration run holds (a run through a transaction-pooling proxy holds a
//! lease instead, see [`super::lease`]): taken by polling until `--lock-timeout`, so that a run
//! that waits can say who it waits for and give up in time. How the lock is held is each
//! backend's ([`RunLock`], made by `Bookkeeping::run_lock`): a session advisory lock on
//! PostgreSQL, polled with `pg_try_advisory_lock` (a session blocked in `pg_advisory_lock` would
//! hold a snapshot that a `CREATE INDEX CONCURRENTLY` run by the lock holder waits for: a
//! deadlock); an exclusive `flock` on the database file on SQLite, held for the whole run.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::db::AnyConnection;

/// One backend's run lock.
pub(crate) trait RunLock {
    /// One attempt to take the lock; `false` when another run holds it.
    fn try_take(&mut self, conn: &mut AnyConnection) -> anyhow::Result<bool>;

    /// Who holds the lock, for the wait message, when that can be told.
    fn holder(&self, conn: &mut AnyConnection) -> Option<String>;

    /// Gives the lock back. A lock kept by an open file (SQLite's `flock`) goes when the value is
    /// dropped: the caller drops the connections first and the lock last, since closing any
    /// descriptor of the file drops the process's POSIX locks.
    fn release(&self, conn: &mut AnyConnection) -> anyhow::Result<()>;
}

/// Takes `lock`, polling until `timeout`; `on_wait` hears once about the holder when the lock is
/// busy. Returns how long it waited.
pub(crate) fn acquire(
    conn: &mut AnyConnection,
    lock: &mut dyn RunLock,
    timeout: Duration,
    mut on_wait: impl FnMut(Option<&str>),
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    let mut told = false;
    loop {
        if lock.try_take(conn)? {
            return Ok(started.elapsed());
        }
        crate::interrupt::check()
            .context("stopped while waiting for the migration lock: nothing was changed")?;
        if started.elapsed() >= timeout {
            let holder = lock
                .holder(conn)
                .map_or(String::new(), |h| format!(" ({h})"));
            anyhow::bail!(
                "another migration run holds the lock on this database{holder}; gave up after \
                 {:.0}s (raise --lock-timeout to wait longer)",
                timeout.as_secs_f64()
            );
        }
        if !told {
            on_wait(lock.holder(conn).as_deref());
            told = true;
        }
        std::thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
