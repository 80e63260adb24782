//! PostgreSQL sessions watched from the side, so that no wait for the server lasts forever and a
//! signal can cancel what runs there.
//!
//! Every PostgreSQL connection dbctl opens carries a [`Watch`] (its diesel instrumentation): it
//! registers the session's backend pid and marks when a statement is sent and when its answer
//! is in. A statement may legitimately run for hours, so a long wait alone proves nothing; the
//! watchdog thread therefore asks the server itself, over a separate connection, once a
//! statement has waited longer than the connect timeout (and again every connect timeout):
//! - the side connection gets no answer within the connect timeout either: the server (or the
//!   network to it) is silent;
//! - the server has no session with our pid: the connection is gone;
//! - the session is idle twice in a row while we still wait: the answer was lost on the way.
//!
//! In each case dbctl stops with exit 3 and one line saying so (after asking the server to end
//! the orphaned session, when it answers, so its locks go with it). While the server says the
//! statement is active, dbctl keeps waiting: that is a long statement, bounded only by
//! `DB_STATEMENT_TIMEOUT`. TCP keepalives and `tcp_user_timeout` (set in the connection string)
//! cover a dead peer at the socket level; this covers a peer that is alive but silent.
//!
//! [`cancel_all`] is the SIGINT/SIGTERM path: `pg_cancel_backend` of every statement in flight,
//! over a side connection (diesel does not expose libpq's cancel handle; the server-side call
//! does the same, for the same role).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text};
use diesel::PgConnection;

use crate::error;

/// How often the watchdog looks at the sessions.
const TICK: Duration = Duration::from_millis(200);

/// A statement younger than this is not cancelled yet on a signal: it is most likely the
/// rollback or the lock release that the signal itself set off.
const CANCEL_AFTER: Duration = Duration::from_millis(100);

struct Session {
    pid: i32,
    /// Where a side connection goes (holds the password: never printed).
    conn_str: String,
    /// The URL as it may be shown.
    redacted: String,
    connect_timeout: Duration,
    /// When the statement now waiting for the server was sent.
    busy_since: Option<Instant>,
    /// The statement's text, shortened, for messages.
    statement: String,
    /// The last probe, and how many probes in a row found the session idle, for `busy_since`.
    probed: Option<(Instant, Instant, u32)>,
    /// The statement (by `busy_since`) already cancelled after a signal.
    cancelled: Option<Instant>,
}

fn sessions() -> &'static Mutex<HashMap<u64, Session>> {
    static SESSIONS: OnceLock<Mutex<HashMap<u64, Session>>> = OnceLock::new();
    SESSIONS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn with_sessions<T>(f: impl FnOnce(&mut HashMap<u64, Session>) -> T) -> T {
    let mut guard = sessions().lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// The instrumentation of one PostgreSQL connection: marks its statements for the watchdog and
/// echoes them with `DB_ECHO`. Dropped with the connection, which unregisters it.
pub(crate) struct Watch {
    id: u64,
    echo: bool,
}

impl Watch {
    /// Registers the session with backend `pid` and starts the watchdog if it is not running.
    pub(crate) fn register(
        pid: i32,
        conn_str: &str,
        redacted: &str,
        connect_timeout: Duration,
        echo: bool,
    ) -> Watch {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        with_sessions(|all| {
            all.insert(
                id,
                Session {
                    pid,
                    conn_str: conn_str.to_string(),
                    redacted: redacted.to_string(),
                    connect_timeout: connect_timeout.max(Duration::from_secs(1)),
                    busy_since: None,
                    statement: String::new(),
                    probed: None,
                    cancelled: None,
                },
            )
        });
        static WATCHDOG: OnceLock<()> = OnceLock::new();
        WATCHDOG.get_or_init(|| {
            let _ = thread::Builder::new()
                .name("dbctl-watchdog".into())
                .spawn(watchdog);
        });
        Watch { id, echo }
    }
}

impl Instrumentation for Watch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                let text = query.to_string();
                if self.echo {
                    eprintln!("{}", error::redact(&format!("[sql] {text}")));
                }
                with_sessions(|all| {
                    if let Some(s) = all.get_mut(&self.id) {
                        s.busy_since = Some(Instant::now());
                        s.statement = summary(&text);
                    }
                });
            }
            InstrumentationEvent::FinishQuery { .. } => with_sessions(|all| {
                if let Some(s) = all.get_mut(&self.id) {
                    s.busy_since = None;
                }
            }),
            _ => {}
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        with_sessions(|all| all.remove(&self.id));
    }
}

/// The first line of a statement (without diesel's `-- binds: [...]`), at most 80 characters.
fn summary(sql: &str) -> String {
    let sql = sql.split(" -- binds: ").next().unwrap_or_default();
    let line = sql.trim().lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(80).collect();
    if out.len() < line.len() {
        out.push_str("...");
    }
    out
}

/// A side connection kept by the watchdog between probes (a long statement is probed every
/// connect timeout; one connection serves them all).
type Spare = Option<(String, PgConnection)>;

/// Runs `f` on a side connection to the session's server (`spare` when it goes to the same
/// server, else a new one), giving up after the connect timeout twice (once to connect, once
/// for the query). `Err(true)` means no answer in time. The connection is put back in `spare`
/// when it answered.
fn on_side_connection<T: Send + 'static>(
    conn_str: &str,
    timeout: Duration,
    spare: &mut Spare,
    f: impl FnOnce(&mut PgConnection) -> QueryResult<T> + Send + 'static,
) -> Result<T, bool> {
    let (tx, rx) = mpsc::channel();
    let reuse = spare
        .take()
        .filter(|(s, _)| s == conn_str)
        .map(|(_, conn)| conn);
    let owned = conn_str.to_string();
    thread::spawn(move || {
        let conn = match reuse {
            Some(conn) => Ok(conn),
            None => PgConnection::establish(&owned),
        };
        let _ = tx.send(match conn {
            Err(_) => (Err(false), None),
            Ok(mut conn) => {
                let result = f(&mut conn).map_err(|_| false);
                let keep = result.is_ok().then_some((owned, conn));
                (result, keep)
            }
        });
    });
    // libpq rounds its own connect_timeout up to whole seconds: leave it room to answer first.
    match rx.recv_timeout(timeout * 2 + Duration::from_millis(1500)) {
        Ok((result, keep)) => {
            *spare = keep;
            result
        }
        Err(_) => Err(true),
    }
}

#[derive(QueryableByName)]
struct State {
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
}

#[derive(QueryableByName)]
struct Done {
    #[diesel(sql_type = Nullable<Integer>)]
    _n: Option<i32>,
}

/// What a probe found out about a session whose statement waits for an answer.
enum Verdict {
    Alive,
    Idle,
    Lost(String),
    Unknown,
}

fn probe(conn_str: &str, pid: i32, timeout: Duration, spare: &mut Spare) -> Verdict {
    let found = on_side_connection(conn_str, timeout, spare, move |conn| {
        diesel::sql_query(
            "SELECT state::text AS state FROM pg_catalog.pg_stat_activity WHERE pid = $1",
        )
        .bind::<Integer, _>(pid)
        .load::<State>(conn)
    });
    match found {
        Err(true) => Verdict::Lost(format!(
            "a new connection to the server got no answer within {:.0}s either",
            timeout.as_secs_f64()
        )),
        // The server answered, if only with an error (too many clients, say): not silent.
        Err(false) => Verdict::Unknown,
        Ok(rows) => match rows.first() {
            None => Verdict::Lost(format!("the server no longer has its session (pid {pid})")),
            Some(State { state }) if state.as_deref() == Some("active") => Verdict::Alive,
            Some(_) => Verdict::Idle,
        },
    }
}

/// Ends an orphaned session so that its transaction rolls back and its locks are released.
fn terminate(conn_str: &str, pid: i32, timeout: Duration, spare: &mut Spare) {
    let _ = on_side_connection(conn_str, timeout, spare, move |conn| {
        diesel::sql_query("SELECT CASE WHEN pg_terminate_backend($1) THEN 1 END AS _n")
            .bind::<Integer, _>(pid)
            .load::<Done>(conn)
    });
}

fn watchdog() {
    let mut spare: Spare = None;
    loop {
        thread::sleep(TICK);
        let due: Vec<(u64, String, i32, Duration, Instant)> = with_sessions(|all| {
            all.iter()
                .filter_map(|(id, s)| {
                    let since = s.busy_since?;
                    let patience = s.connect_timeout;
                    let waited_enough = since.elapsed() >= patience;
                    let probe_due = match s.probed {
                        Some((for_since, at, _)) if for_since == since => at.elapsed() >= patience,
                        _ => true,
                    };
                    (waited_enough && probe_due)
                        .then(|| (*id, s.conn_str.clone(), s.pid, s.connect_timeout, since))
                })
                .collect()
        });
        for (id, conn_str, pid, timeout, since) in due {
            let verdict = probe(&conn_str, pid, timeout, &mut spare);
            let lost = with_sessions(|all| {
                let s = all.get_mut(&id)?;
                if s.busy_since != Some(since) {
                    // The answer came in meanwhile.
                    return None;
                }
                let idle_before = match s.probed {
                    Some((for_since, _, n)) if for_since == since => n,
                    _ => 0,
                };
                let reason = match verdict {
                    Verdict::Alive | Verdict::Unknown => None,
                    Verdict::Idle if idle_before == 0 => None,
                    Verdict::Idle => Some(
                        "the server shows the session idle, waiting for dbctl: the statement \
                         or its answer was lost on the way"
                            .to_string(),
                    ),
                    Verdict::Lost(ref why) => Some(why.clone()),
                };
                let idle = u32::from(matches!(verdict, Verdict::Idle));
                s.probed = Some((
                    since,
                    Instant::now(),
                    if idle == 1 { idle_before + 1 } else { 0 },
                ));
                reason.map(|why| {
                    (
                        why,
                        s.redacted.clone(),
                        s.statement.clone(),
                        matches!(verdict, Verdict::Idle),
                    )
                })
            });
            if let Some((why, redacted, statement, answers)) = lost {
                if answers {
                    terminate(&conn_str, pid, timeout, &mut spare);
                }
                crate::output::abort(error::connect(format!(
                    "lost the connection to {redacted}: no answer for {:.0}s to `{statement}`; \
                     {why}; the server rolls back whatever this session had not committed",
                    since.elapsed().as_secs_f64()
                )));
            }
        }
    }
}

/// After SIGINT/SIGTERM: cancels every statement in flight now, and any that starts (and is not
/// over within [`CANCEL_AFTER`]) until the process exits.
pub(crate) fn cancel_all() {
    let _ = thread::Builder::new()
        .name("dbctl-cancel".into())
        .spawn(|| loop {
            let due: Vec<(String, i32, Duration)> = with_sessions(|all| {
                all.values_mut()
                    .filter_map(|s| {
                        let since = s.busy_since?;
                        if since.elapsed() < CANCEL_AFTER || s.cancelled == Some(since) {
                            return None;
                        }
                        s.cancelled = Some(since);
                        Some((s.conn_str.clone(), s.pid, s.connect_timeout))
                    })
                    .collect()
            });
            for (conn_str, pid, timeout) in due {
                thread::spawn(move || {
                    let _ = on_side_connection(&conn_str, timeout, &mut None, move |conn| {
                        diesel::sql_query("SELECT CASE WHEN pg_cancel_backend($1) THEN 1 END AS _n")
                            .bind::<Integer, _>(pid)
                            .load::<Done>(conn)
                    });
                });
            }
            thread::sleep(Duration::from_millis(20));
        });
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn statements_are_shown_short_and_without_binds() {
        assert_eq!(summary("SELECT 1 -- binds: []"), "SELECT 1");
        assert_eq!(summary("\n  BEGIN;\nCREATE TABLE t (id int)"), "BEGIN;");
        let long = format!("SELECT {}", "x".repeat(200));
        assert_eq!(summary(&long).chars().count(), 83);
    }
}
