//! The first look at a SQLite database, through SQLite's C API so that a failure is classified by
//! SQLite's result code (busy, not a database, cannot open), never by the words of its message.

use std::ffi::{CStr, CString};
use std::time::Duration;

use libsqlite3_sys as ffi;

/// Why a SQLite database could not be read.
pub(crate) struct ProbeError {
    /// SQLite's primary result code (`SQLITE_BUSY`, `SQLITE_NOTADB`, ...).
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl ProbeError {
    /// Another connection held a lock for longer than the busy timeout.
    pub(crate) fn is_busy(&self) -> bool {
        self.code == ffi::SQLITE_BUSY || self.code == ffi::SQLITE_LOCKED
    }
}

/// Opens `conn_str` as diesel will (read-write, create, URI), waits up to `busy` for a lock, and
/// reads the schema once: a file that is not a database opens fine and fails only here.
pub(crate) fn probe(conn_str: &str, busy: Duration) -> Result<(), ProbeError> {
    let Ok(c_path) = CString::new(conn_str) else {
        return Err(ProbeError {
            code: ffi::SQLITE_CANTOPEN,
            message: "the path holds a NUL byte".to_string(),
        });
    };
    let sql = c"SELECT count(*) FROM sqlite_master";
    let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_URI;
    let mut db: *mut ffi::sqlite3 = std::ptr::null_mut();
    // SAFETY: every pointer passed is valid for the call; `db` is closed exactly once below,
    // whether opening succeeded or not (SQLite hands back a handle for its error either way).
    unsafe {
        let mut rc = ffi::sqlite3_open_v2(c_path.as_ptr(), &mut db, flags, std::ptr::null());
        if rc == ffi::SQLITE_OK {
            let ms = i32::try_from(busy.as_millis()).unwrap_or(i32::MAX);
            ffi::sqlite3_busy_timeout(db, ms);
            rc = ffi::sqlite3_exec(
                db,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
        let result = if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            let message = if db.is_null() {
                CStr::from_ptr(ffi::sqlite3_errstr(rc))
            } else {
                CStr::from_ptr(ffi::sqlite3_errmsg(db))
            };
            Err(ProbeError {
                code: rc & 0xff,
                message: message.to_string_lossy().into_owned(),
            })
        };
        ffi::sqlite3_close(db);
        result
    }
}

/// Whether a message diesel gives for a SQLite failure is the one SQLite has for `SQLITE_BUSY`
/// or `SQLITE_LOCKED`. diesel keeps only the message, not the result code, so the code is
/// recovered by comparing with SQLite's own text for each code (`sqlite3_errstr`), whole.
pub(super) fn message_is_busy(message: &str) -> bool {
    [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED]
        .into_iter()
        .any(|rc| {
            // SAFETY: sqlite3_errstr returns a static, NUL-terminated string for any code.
            let text = unsafe { CStr::from_ptr(ffi::sqlite3_errstr(rc)) };
            text.to_str().is_ok_and(|t| t == message)
        })
}
