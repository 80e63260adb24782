//! Ctrl-C and SIGTERM: stop what runs on the database, let the command roll back and release its
//! lock, then exit 130 (SIGINT) or 143 (SIGTERM) with one line saying what was undone.
//!
//! The two signals are blocked in every thread and taken by one thread with `sigwait`, so no code
//! runs inside a signal handler. On the first signal that thread records it, which SQLite
//! connections see through their progress handler (the running statement stops with
//! SQLITE_INTERRUPT, see `db::sqlite_ext`) and the command's loops through [`check`]; it asks
//! the server to cancel every PostgreSQL statement in flight (`db::watch::cancel_all`, handed to
//! [`install`] by `main`); then the
//! command's own error path rolls back and releases the lock, and `main` reports with [`outcome`].
//! A second signal, or a command that has not returned within [`GRACE`], exits at once: the
//! server rolls back whatever the closed connection had open, and SQLite's journal does the same
//! at the next open.
//!
//! [`abort`] is the one way out for the other watchers (a stalled server, see `db::watch`): it
//! prints through the same printer and exits with the error's code.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use crate::error::{self, Exit};
use crate::output::{abort, Format};

/// The signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// What the command undid after the signal besides its own rollback (a lock released, ...).
static UNDONE: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// How long the command gets to roll back after the first signal.
const GRACE: Duration = Duration::from_secs(10);

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread started after it) and starts
/// the thread that receives them, which calls `cancel` on the first one (the database layer's
/// "cancel every statement in flight", handed in so that this module needs no database).
/// Call it first in `main`.
pub(crate) fn install(format: Format, quiet: bool, verbose: bool, cancel: fn()) {
    crate::output::remember_printer(format, quiet, verbose);
    // SAFETY: plain libc calls on a sigset_t owned by this frame.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let spawned = thread::Builder::new()
        .name("dbctl-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised above; `sig` is a valid out-pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                on_signal(sig, cancel);
            }
        });
    if spawned.is_err() {
        // No receiver: give the signals their default action back rather than ignore them.
        // SAFETY: as above.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

fn on_signal(sig: i32, cancel: fn()) {
    if SIGNAL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        abort(interrupted_error(
            sig,
            "a second signal: exiting without waiting for the rollback (the server rolls back \
             what the closed connection had open)",
        ));
    }
    cancel();
    thread::spawn(move || {
        thread::sleep(GRACE);
        abort(interrupted_error(
            sig,
            &format!(
                "the command did not stop within {}s; exiting (the server rolls back what the \
                 closed connection had open)",
                GRACE.as_secs()
            ),
        ));
    });
}

/// Records, when a signal was received, something undone on the way out, for the final line.
pub(crate) fn undone(what: &'static str) {
    if received().is_some() {
        UNDONE.lock().unwrap_or_else(|e| e.into_inner()).push(what);
    }
}

/// The signal received, if any.
pub(crate) fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Whether a signal asked the command to stop (cheap: for hot loops and the SQLite progress
/// handler).
pub(crate) fn requested() -> bool {
    SIGNAL.load(Ordering::Relaxed) != 0
}

/// Fails once a signal has been received: call it in loops that do work between statements.
/// (The exit code is `main`'s to choose, from the signal: see [`outcome`].)
pub(crate) fn check() -> anyhow::Result<()> {
    match received() {
        None => Ok(()),
        Some(sig) => Err(anyhow::anyhow!("interrupted by {}", signal_name(sig))),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

fn tag(err: anyhow::Error, sig: i32) -> anyhow::Error {
    let exit = if sig == libc::SIGTERM {
        Exit::Terminated
    } else {
        Exit::Interrupted
    };
    error::tag(err, exit)
}

fn interrupted_error(sig: i32, what: &str) -> anyhow::Error {
    tag(
        anyhow::anyhow!("interrupted by {}: {what}", signal_name(sig)),
        sig,
    )
}

/// What `main` reports after a signal: the command's own failure (which says what was rolled
/// back) folded into one line that starts with the signal, with exit 130 or 143. `None` when the
/// command finished its work before it noticed the signal: its report stands, and only the exit
/// code says it was interrupted.
pub(crate) fn outcome(sig: i32, result: &anyhow::Result<Exit>) -> Option<anyhow::Error> {
    match result {
        Ok(_) => {
            eprintln!(
                "note: {} arrived after the work was committed; nothing was undone",
                signal_name(sig)
            );
            None
        }
        Err(err) => {
            let text = error::render(err);
            let first = text.lines().next().unwrap_or_default();
            let what = first.trim_start_matches("error: ");
            let name = signal_name(sig);
            let mut line = if what.starts_with(&format!("interrupted by {name}")) {
                what.to_string()
            } else {
                format!("interrupted by {name}: {what}")
            };
            for undone in UNDONE.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                line.push_str("; ");
                line.push_str(undone);
            }
            Some(tag(anyhow::anyhow!("{line}"), sig))
        }
    }
}

/// The exit code for a signal whose command finished anyway.
pub(crate) fn exit_code(sig: i32) -> u8 {
    if sig == libc::SIGTERM {
        Exit::Terminated.code()
    } else {
        Exit::Interrupted.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_line_starts_with_the_signal_and_keeps_what_was_undone() {
        let failed: anyhow::Result<Exit> = Err(anyhow::anyhow!("database said no")
            .context("applying migration 1_a failed; it was rolled back"));
        let err = outcome(libc::SIGINT, &failed).expect("an error");
        assert_eq!(
            error::render(&err),
            "error: interrupted by SIGINT: applying migration 1_a failed; it was rolled back"
        );
        assert_eq!(error::exit_of(&err), Exit::Interrupted);
        let stopped: anyhow::Result<Exit> = Err(anyhow::anyhow!(
            "interrupted by SIGTERM (rolled back: the database is unchanged)"
        ));
        let err = outcome(libc::SIGTERM, &stopped).expect("an error");
        assert_eq!(
            error::render(&err),
            "error: interrupted by SIGTERM (rolled back: the database is unchanged)"
        );
        assert_eq!(error::exit_of(&err), Exit::Terminated);
        assert!(outcome(libc::SIGINT, &Ok(Exit::Success)).is_none());
    }
}
