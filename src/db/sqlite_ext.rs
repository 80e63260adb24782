//! What every SQLite connection dbctl opens gets, installed once per process as an SQLite
//! auto-extension (so no connection can miss it, whichever code opens it):
//!
//! - `REGEXP`: SQLite parses `x REGEXP p` as `regexp(p, x)` but ships no such function. dbctl's
//!   is the `regex` crate's syntax, matching anywhere in the text (like Python's `re.search`,
//!   which the SQLAlchemy setups in the seed documents register); a NULL on either side gives
//!   NULL, as with SQLite's own `regexp` extension and PostgreSQL's `~`; a pattern that does not
//!   compile is an error naming it. Each statement compiles a constant pattern once.
//! - a progress handler that stops the running statement with SQLITE_INTERRUPT once SIGINT or
//!   SIGTERM was received (`crate::interrupt`): the effect of `sqlite3_interrupt`, without
//!   holding raw handles to connections that diesel owns and may close at any time;
//! - a commit hook that turns every commit after such a signal into a rollback. SQLite ends an
//!   interrupted transaction by itself, so without it a statement run afterwards in autocommit
//!   mode (a short one, which the progress handler never sees) would commit on its own;
//! - the transaction probes: `dbctl_in_autocommit()` returns `sqlite3_get_autocommit` for the
//!   calling connection (`db::transaction_is_open`), and `dbctl_transactions_ended()` how many
//!   transactions have ended on it, counted by the same commit hook and a rollback hook, which
//!   tells one transaction from the next (`db::sqlite_transactions_ended`). A connection has one
//!   commit hook, so both jobs share it.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Once;

use libsqlite3_sys as ffi;
use regex::bytes::Regex;

/// Virtual-machine instructions between two looks at the signal flag (a few microseconds).
const PROGRESS_STEPS: c_int = 1000;

/// The SQL name of the function returning `sqlite3_get_autocommit`.
pub(super) const IN_AUTOCOMMIT: &str = "dbctl_in_autocommit";
/// The SQL name of the function returning how many transactions have ended on the connection.
pub(super) const TRANSACTIONS_ENDED: &str = "dbctl_transactions_ended";

/// Installs the auto-extension; call before opening any SQLite connection.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `on_open` has the signature SQLite expects of an extension entry point.
        unsafe {
            ffi::sqlite3_auto_extension(Some(on_open));
        }
    });
}

unsafe extern "C" fn on_open(
    db: *mut ffi::sqlite3,
    _err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    const NAME: &CStr = c"regexp";
    // SAFETY: `db` is the connection being opened; the callbacks live for the whole program.
    unsafe {
        let rc = ffi::sqlite3_create_function_v2(
            db,
            NAME.as_ptr(),
            2,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC,
            std::ptr::null_mut(),
            Some(regexp),
            None,
            None,
            None,
        );
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        ffi::sqlite3_progress_handler(db, PROGRESS_STEPS, Some(progress), std::ptr::null_mut());
        transaction_probes(db)
    }
}

unsafe extern "C" fn progress(_: *mut c_void) -> c_int {
    c_int::from(crate::interrupt::requested())
}

/// Registers the two probe functions and the commit and rollback hooks that count ended
/// transactions in a counter owned by the connection.
///
/// SAFETY: `db` is a connection being opened (called from `on_open`).
unsafe fn transaction_probes(db: *mut ffi::sqlite3) -> c_int {
    // DIRECTONLY: usable in dbctl's own statements, never from a trigger or a view.
    let flags = ffi::SQLITE_UTF8 | ffi::SQLITE_DIRECTONLY;
    let counter = Box::into_raw(Box::new(AtomicI64::new(0))).cast::<c_void>();
    // SAFETY: the names are static C strings; the counter is freed by SQLite through
    // `free_counter` when the function holding it goes away (the connection closes), and the
    // hooks cannot fire after that.
    unsafe {
        let rc = ffi::sqlite3_create_function_v2(
            db,
            c"dbctl_in_autocommit".as_ptr(),
            0,
            flags,
            std::ptr::null_mut(),
            Some(in_autocommit),
            None,
            None,
            None,
        );
        if rc != ffi::SQLITE_OK {
            drop(Box::from_raw(counter.cast::<AtomicI64>()));
            return rc;
        }
        // On failure SQLite calls `free_counter` itself.
        let rc = ffi::sqlite3_create_function_v2(
            db,
            c"dbctl_transactions_ended".as_ptr(),
            0,
            flags,
            counter,
            Some(transactions_ended),
            None,
            None,
            Some(free_counter),
        );
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        ffi::sqlite3_commit_hook(db, Some(on_commit), counter);
        ffi::sqlite3_rollback_hook(db, Some(on_rollback), counter);
    }
    ffi::SQLITE_OK
}

/// SAFETY: called by SQLite with a live context of a function registered above.
unsafe extern "C" fn in_autocommit(
    ctx: *mut ffi::sqlite3_context,
    _argc: c_int,
    _argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: `ctx` is valid for the duration of the call; its handle is the calling
    // connection, open while it runs a statement.
    unsafe {
        let db = ffi::sqlite3_context_db_handle(ctx);
        ffi::sqlite3_result_int(ctx, ffi::sqlite3_get_autocommit(db));
    }
}

/// SAFETY: the user data is the connection's counter, alive until `free_counter`.
unsafe extern "C" fn transactions_ended(
    ctx: *mut ffi::sqlite3_context,
    _argc: c_int,
    _argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: see above; the counter outlives every call on its connection.
    unsafe {
        let counter = &*ffi::sqlite3_user_data(ctx).cast::<AtomicI64>();
        ffi::sqlite3_result_int64(ctx, counter.load(Ordering::Relaxed));
    }
}

/// Counts the ended transaction, and turns the commit into a rollback after SIGINT/SIGTERM
/// (non-zero).
///
/// SAFETY: `data` is the connection's counter (see `transaction_probes`).
unsafe extern "C" fn on_commit(data: *mut c_void) -> c_int {
    // SAFETY: the counter lives as long as the connection whose hook this is.
    unsafe { (*data.cast::<AtomicI64>()).fetch_add(1, Ordering::Relaxed) };
    c_int::from(crate::interrupt::requested())
}

/// SAFETY: as `on_commit`.
unsafe extern "C" fn on_rollback(data: *mut c_void) {
    // SAFETY: as `on_commit`.
    unsafe { (*data.cast::<AtomicI64>()).fetch_add(1, Ordering::Relaxed) };
}

/// SAFETY: called by SQLite once, when the function holding the counter is dropped (the
/// connection closes), with the pointer `transaction_probes` made from a `Box`.
unsafe extern "C" fn free_counter(data: *mut c_void) {
    // SAFETY: made by `Box::into_raw` in `transaction_probes`, freed only here.
    drop(unsafe { Box::from_raw(data.cast::<AtomicI64>()) });
}

unsafe extern "C" fn drop_regex(p: *mut c_void) {
    // SAFETY: only ever called on a pointer made by `Box::into_raw` in `regexp`.
    drop(unsafe { Box::from_raw(p.cast::<Regex>()) });
}

/// The bytes of a value as text; `None` for NULL.
unsafe fn text<'a>(value: *mut ffi::sqlite3_value) -> Option<&'a [u8]> {
    // SAFETY: SQLite's documented order: text first, then its length in bytes.
    unsafe {
        if ffi::sqlite3_value_type(value) == ffi::SQLITE_NULL {
            return None;
        }
        let ptr = ffi::sqlite3_value_text(value);
        let len = usize::try_from(ffi::sqlite3_value_bytes(value)).unwrap_or(0);
        if ptr.is_null() {
            return Some(&[]);
        }
        Some(std::slice::from_raw_parts(ptr, len))
    }
}

unsafe fn result_error(ctx: *mut ffi::sqlite3_context, msg: &str) {
    let len = c_int::try_from(msg.len()).unwrap_or(c_int::MAX);
    // SAFETY: SQLite copies the message (length given, no terminator needed).
    unsafe { ffi::sqlite3_result_error(ctx, msg.as_ptr().cast::<c_char>(), len) };
}

unsafe extern "C" fn regexp(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    // Never let a panic unwind into SQLite's C frames.
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: SQLite passes `argc` (2, as registered) valid values.
        unsafe {
            if argc != 2 || argv.is_null() {
                result_error(ctx, "regexp() takes 2 arguments");
                return;
            }
            let args = std::slice::from_raw_parts(argv, 2);
            let (Some(pattern), Some(subject)) = (text(args[0]), text(args[1])) else {
                ffi::sqlite3_result_null(ctx);
                return;
            };
            let cached = ffi::sqlite3_get_auxdata(ctx, 0).cast::<Regex>();
            let matched = if cached.is_null() {
                let compiled = std::str::from_utf8(pattern)
                    .map_err(|e| e.to_string())
                    .and_then(|p| Regex::new(p).map_err(|e| e.to_string()));
                let re = match compiled {
                    Ok(re) => re,
                    Err(e) => {
                        let shown = String::from_utf8_lossy(pattern);
                        let shown: String = shown.chars().take(200).collect();
                        let first = e.lines().last().unwrap_or_default().to_string();
                        result_error(
                            ctx,
                            &format!("REGEXP: invalid regular expression `{shown}`: {first}"),
                        );
                        return;
                    }
                };
                let matched = re.is_match(subject);
                // SQLite may free it at once; it is not used after this call.
                ffi::sqlite3_set_auxdata(
                    ctx,
                    0,
                    Box::into_raw(Box::new(re)).cast::<c_void>(),
                    Some(drop_regex),
                );
                matched
            } else {
                (*cached).is_match(subject)
            };
            ffi::sqlite3_result_int(ctx, c_int::from(matched));
        }
    });
    if outcome.is_err() {
        // SAFETY: as above.
        unsafe { result_error(ctx, "REGEXP failed") };
    }
}
