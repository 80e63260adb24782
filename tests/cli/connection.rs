//! Connections under faults: a server that goes silent at any point of a session (a stalling
//! TCP proxy of the test's own), Ctrl-C / SIGTERM / SIGKILL in the middle of a migration or a
//! seed, eight `init` racing to create one database, `inspect` while another process migrates,
//! the session time zone, and SQLite's REGEXP. Every check looks at the database afterwards.
//!
//! Timings are only generous upper bounds on waits that must end (a process still running then
//! is killed and the test fails); nothing here measures speed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::both_backends;
use crate::reliability::{
    clean_exit, companion, finish, pg_active, spawn, spawn_cmd, succeeds_within, wait_until,
};
use crate::support::{pg_admin, pg_url_for, Backend, Project, Run};

// ---------------------------------------------------------------------------------------------
// A proxy that stalls
// ---------------------------------------------------------------------------------------------

/// Where a [`StallProxy`] connection goes silent.
#[derive(Clone, Copy, Debug)]
enum Stall {
    /// After this many bytes, counted over both directions.
    Bytes(usize),
    /// Just before the client's k-th query message (`Q` or `P`) after the startup packet: the
    /// query never reaches the server.
    BeforeQuery(usize),
    /// Just after the client's k-th query message: the server runs it, the answer never arrives.
    AfterQuery(usize),
}

/// A TCP proxy to PostgreSQL whose every connection goes silent at the same point: it keeps both
/// sockets open and forwards nothing more (what reaches it is read and dropped). When the client
/// goes away the server side is closed too, so a stalled session does not outlive its client.
struct StallProxy {
    port: u16,
    stalled: Arc<AtomicUsize>,
}

impl StallProxy {
    fn start(stall: Stall) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stalled = Arc::new(AtomicUsize::new(0));
        let count = stalled.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect("127.0.0.1:5432") else {
                    continue;
                };
                let link = Arc::new(Link {
                    stall,
                    bytes: AtomicUsize::new(0),
                    queries: AtomicUsize::new(0),
                    stalled: AtomicBool::new(false),
                    count: count.clone(),
                });
                link.pump(&client, &server, true);
                link.pump(&server, &client, false);
            }
        });
        StallProxy { port, stalled }
    }

    /// The URL of database `db` through the proxy: TLS off, so that the messages can be told
    /// apart, or required (the stall then falls inside the encrypted stream).
    fn url(&self, db: &str, tls: bool) -> String {
        let url = pg_url_for(db).replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port));
        let sep = if url.contains('?') { '&' } else { '?' };
        let mode = if tls { "require" } else { "disable" };
        format!("{url}{sep}sslmode={mode}")
    }

    /// How many connections went silent.
    fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }
}

struct Link {
    stall: Stall,
    bytes: AtomicUsize,
    queries: AtomicUsize,
    stalled: AtomicBool,
    count: Arc<AtomicUsize>,
}

impl Link {
    fn go_silent(&self) {
        if !self.stalled.swap(true, Ordering::SeqCst) {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How many of `chunk`'s bytes may pass before the link goes silent (all of them: `None`).
    fn allowed(&self, chunk: &[u8], from_client: bool, parser: &mut Parser) -> Option<usize> {
        let (k, after) = match self.stall {
            Stall::Bytes(limit) => {
                let before = self.bytes.fetch_add(chunk.len(), Ordering::SeqCst);
                return (before + chunk.len() > limit).then(|| limit.saturating_sub(before));
            }
            _ if !from_client => return None,
            Stall::BeforeQuery(k) => (k, false),
            Stall::AfterQuery(k) => (k, true),
        };
        for (i, &b) in chunk.iter().enumerate() {
            let kind = parser.feed(b);
            if let Some(kind) = kind {
                if kind == b'Q' || kind == b'P' {
                    let n = self.queries.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == k && !after {
                        return Some(i);
                    }
                    if n == k {
                        // A simple query runs once it is in; an extended one at its Sync.
                        parser.wanted = Some(if kind == b'Q' { b'Q' } else { b'S' });
                    }
                }
                if parser.wanted == Some(kind) {
                    parser.armed = true;
                }
            }
            if parser.armed && parser.at_boundary() {
                return Some(i + 1);
            }
        }
        None
    }

    /// Copies `from` to `to` on a thread until the link goes silent (then drops what comes) or
    /// `from` closes. The client closing ends the server side too.
    fn pump(self: &Arc<Self>, from: &TcpStream, to: &TcpStream, from_client: bool) {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
            return;
        };
        let link = self.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            let mut parser = Parser::default();
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if link.stalled.load(Ordering::SeqCst) {
                    continue;
                }
                let pass = link.allowed(&buf[..n], from_client, &mut parser);
                let upto = pass.unwrap_or(n).min(n);
                if upto > 0 && to.write_all(&buf[..upto]).is_err() {
                    break;
                }
                if pass.is_some() {
                    link.go_silent();
                }
            }
            // A silent server never says goodbye; a client that leaves takes its session along.
            if from_client {
                let _ = to.shutdown(Shutdown::Both);
            }
        });
    }
}

/// Follows the frontend message boundaries: the startup packet (a length, no type byte; no
/// SSLRequest comes with sslmode=disable), then `type, length, body` messages.
#[derive(Default)]
struct Parser {
    started: bool,
    header: Vec<u8>,
    /// Body bytes still to come in the current message.
    left: usize,
    /// The message type after whose end the link goes silent (`Stall::AfterQuery`).
    wanted: Option<u8>,
    /// Inside that message.
    armed: bool,
}

impl Parser {
    /// Feeds one byte; returns the message type when `b` is the type byte of a new message.
    fn feed(&mut self, b: u8) -> Option<u8> {
        if self.left > 0 {
            self.left -= 1;
            return None;
        }
        self.header.push(b);
        let need = if self.started { 5 } else { 4 };
        if self.header.len() == need {
            let l = &self.header[need - 4..];
            let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
            self.left = len.saturating_sub(4);
            self.header.clear();
            self.started = true;
            return None;
        }
        (self.started && self.header.len() == 1).then_some(b)
    }

    /// Whether the last byte fed ended a message.
    fn at_boundary(&self) -> bool {
        self.started && self.header.is_empty() && self.left == 0
    }
}

// ---------------------------------------------------------------------------------------------
// A silent server: every command, several points of the session
// ---------------------------------------------------------------------------------------------

/// Every command that talks to the database; `seed --truncate` so that it can run again.
const COMMANDS: &[&[&str]] = &[
    &["ping"],
    &["init"],
    &["migrate", "status"],
    &["migrate", "up"],
    &["migrate", "down"],
    &["migrate", "redo"],
    &["seed", "--truncate"],
    &["inspect", "--exact"],
];

/// Where the proxy goes silent, and whether the command may still have finished first (a point
/// past its last query). The first four points are inside the connection set-up (diesel's two
/// statements and dbctl's two come first): no command gets past them.
const STALLS: &[(Stall, bool)] = &[
    (Stall::Bytes(0), false),
    (Stall::Bytes(40), false),
    (Stall::Bytes(300), false),
    (Stall::BeforeQuery(1), false),
    (Stall::AfterQuery(2), false),
    (Stall::BeforeQuery(4), false),
    (Stall::AfterQuery(5), true),
    (Stall::BeforeQuery(7), true),
    (Stall::AfterQuery(9), true),
    (Stall::BeforeQuery(12), true),
];

#[test]
fn postgres_server_going_silent_anywhere_gives_exit_3() {
    if crate::support::pg_skipped() {
        return;
    }
    let started = Instant::now();
    let (runs, exits_3) = silent_server_runs_in_parallel(COMMANDS, STALLS, false);
    eprintln!(
        "silent server: {runs} runs ({} commands x {} points), {exits_3} exit 3, the rest \
         finished before the stall; {:?} in all",
        COMMANDS.len(),
        STALLS.len(),
        started.elapsed()
    );
}

/// The same inside TLS: in the handshake, then at byte offsets well into the session.
const TLS_STALLS: &[(Stall, bool)] = &[
    (Stall::Bytes(0), false),
    (Stall::Bytes(300), false),
    (Stall::Bytes(1500), false),
    (Stall::Bytes(2500), true),
    (Stall::Bytes(3500), true),
    (Stall::Bytes(4500), true),
    (Stall::Bytes(5500), true),
    (Stall::Bytes(7000), true),
];

#[test]
fn postgres_server_going_silent_inside_tls_gives_exit_3() {
    if crate::support::pg_skipped() {
        return;
    }
    let commands: &[&[&str]] = &[
        &["ping"],
        &["migrate", "up"],
        &["seed", "--truncate"],
        &["inspect", "--exact"],
    ];
    let (runs, exits_3) = silent_server_runs_in_parallel(commands, TLS_STALLS, true);
    eprintln!("silent server inside TLS: {runs} runs, {exits_3} exit 3");
}

/// [`silent_server_runs`] for each command at once, on a thread each; returns the sums.
fn silent_server_runs_in_parallel(
    commands: &'static [&'static [&'static str]],
    stalls: &'static [(Stall, bool)],
    tls: bool,
) -> (usize, usize) {
    let workers: Vec<_> = commands
        .iter()
        .map(|&args| thread::spawn(move || silent_server_runs(args, stalls, tls)))
        .collect();
    workers.into_iter().fold((0, 0), |(runs, exits_3), w| {
        let (n, e3) = w.join().expect("a command's stall runs");
        (runs + n, exits_3 + e3)
    })
}

/// Runs `args` once per stall point against its own database; returns (runs, exits 3).
fn silent_server_runs(
    args: &'static [&'static str],
    stalls: &[(Stall, bool)],
    tls: bool,
) -> (usize, usize) {
    let Some(mut p) = Project::postgres() else {
        return (0, 0);
    };
    p.migration(
        "a",
        "CREATE TABLE a (id INTEGER PRIMARY KEY);",
        Some("DROP TABLE a;"),
    );
    p.migration(
        "b",
        "CREATE TABLE b (id INTEGER PRIMARY KEY);",
        Some("DROP TABLE b;"),
    );
    p.file("seeds/a.csv", "id\n1\n2\n3\n");
    p.run(["init"]).success();
    let db = p.pg_database().expect("database").to_string();
    let mut exits_3 = 0;
    for &(stall, may_finish) in stalls {
        let proxy = StallProxy::start(stall);
        let mut cmd = p.command();
        cmd.env("DATABASE_URL", proxy.url(&db, tls))
            .env("DB_CONNECT_TIMEOUT", "1")
            .args(args);
        let what = format!(
            "{args:?} silent at {stall:?}{}",
            if tls { " (TLS)" } else { "" }
        );
        let started = Instant::now();
        let run = finish(spawn_cmd(cmd), Duration::from_secs(40), &what);
        let took = started.elapsed();
        let first = run.stderr.lines().find(|l| l.starts_with("error:"));
        eprintln!(
            "{what}: exit {} after {took:?}, {} connection(s) stalled: {}",
            run.code,
            proxy.stalled(),
            first.unwrap_or("")
        );
        let allowed: &[i32] = if may_finish && proxy.stalled() == 0 {
            &[0]
        } else if may_finish {
            &[0, 3]
        } else {
            &[3]
        };
        clean_exit(&run, allowed, &what);
        if run.code == 3 {
            exits_3 += 1;
            assert!(first.is_some(), "{what}: no error line\n{}", run.stderr);
            assert!(!run.stdout.contains("panicked"), "{what}");
        }
        // The database is still usable directly, and not locked by the stalled session.
        p.run(["migrate", "status"]).success();
    }
    (stalls.len(), exits_3)
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

fn send(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Waits until the child is visibly working (PostgreSQL: its statement is active; SQLite: a
/// rollback journal, i.e. a write transaction, exists), and a little more.
#[track_caller]
fn wait_started(p: &Project, child: &mut Child, pg_prefix: &str) {
    let started = match p.backend {
        Backend::Postgres => wait_until(Duration::from_secs(60), || pg_active(p, pg_prefix)),
        Backend::Sqlite => {
            let journal = p.path().join("test.db-journal");
            wait_until(Duration::from_secs(60), || journal.exists())
        }
    };
    assert!(started, "the operation never visibly started");
    thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "dbctl finished before the signal: make the operation longer"
    );
}

/// The one `error:` line of a run, which must start with the signal's name.
#[track_caller]
fn one_interrupted_line(run: &Run, name: &str) -> String {
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.trim_start().starts_with("caused by:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{}", run.stderr);
    let line = errors[0].to_string();
    assert!(
        line.starts_with(&format!("error: interrupted by {name}")),
        "{}",
        run.stderr
    );
    line
}

/// The statement a migration or a seed would need 40 s or more for.
fn slow_statement(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "SELECT pg_sleep(40);",
        Backend::Sqlite => {
            "INSERT INTO slow_t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
             WHERE x < 200000000) SELECT x FROM c;"
        }
    }
}

/// A signal in the middle of a migration's long statement: the statement stops on the server,
/// the migration is rolled back and not recorded, the lock is free at once, exit 130/143.
fn signal_during_a_migration(mut p: Project, sig: i32, name: &str, code: i32) {
    let first = p.migration("first", "CREATE TABLE first_t (id INTEGER);", None);
    let slow = format!(
        "CREATE TABLE slow_t (id INTEGER);\n{}\n",
        slow_statement(p.backend)
    );
    let second = p.migration("slow", &slow, Some("DROP TABLE slow_t;"));
    p.init();
    p.run(["migrate", "up", "--to", &first]).success();
    let mut child = spawn(&p, &["migrate", "up"]);
    wait_started(&p, &mut child, "%SELECT pg_sleep");
    send(&child, sig);
    let run = finish(child, Duration::from_secs(30), "migrate up after a signal");
    clean_exit(&run, &[code], &format!("migrate up after {name}"));
    let line = one_interrupted_line(&run, name);
    eprintln!("{:?} {name}: {line}", p.backend);
    assert!(line.contains("rolled back"), "{line}");
    assert!(line.contains("the migration lock was released"), "{line}");
    if p.backend == Backend::Postgres {
        // Cancelled on the server, not left sleeping there.
        assert!(
            wait_until(Duration::from_secs(5), || !pg_active(
                &p,
                "%SELECT pg_sleep"
            )),
            "the statement still runs on the server"
        );
    } else {
        let ok = p.strings("SELECT integrity_check AS v FROM pragma_integrity_check");
        assert_eq!(ok, [Some("ok".to_string())]);
    }
    assert!(
        !p.has_table("slow_t"),
        "the interrupted migration left its table"
    );
    assert_eq!(p.applied(), std::slice::from_ref(&first));
    assert_eq!(companion(&p), std::slice::from_ref(&first));
    // The lock was released: a run that may wait only 1 s gets it.
    p.file(
        "migrations/2024-01-01-000002_slow/up.sql",
        "CREATE TABLE slow_t (id INTEGER);\n",
    );
    p.run(["migrate", "up", "--lock-timeout", "1"]).success();
    assert_eq!(p.applied(), [first, second]);
}

/// A signal in the middle of a seed: nothing loaded, exit 130/143, and the seed runs again.
fn signal_during_a_seed(mut p: Project, sig: i32, name: &str, code: i32) {
    p.migration(
        "big",
        "CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT);",
        Some("DROP TABLE big;"),
    );
    p.run(["init"]).success();
    let rows = 300_000;
    crate::reliability::big_csv(&p, rows);
    let mut child = spawn(&p, &["seed"]);
    wait_started(&p, &mut child, "COPY");
    send(&child, sig);
    let run = finish(child, Duration::from_secs(30), "seed after a signal");
    clean_exit(&run, &[code], &format!("seed after {name}"));
    let line = one_interrupted_line(&run, name);
    eprintln!("{:?} {name}: {line}", p.backend);
    assert!(line.contains("rolled back"), "{line}");
    assert_eq!(p.count("SELECT count(*) AS n FROM big"), 0);
    if p.backend == Backend::Postgres {
        assert!(
            wait_until(Duration::from_secs(5), || !pg_active(&p, "COPY")),
            "the COPY still runs on the server"
        );
    }
    p.run(["seed"]).success();
    assert_eq!(p.count("SELECT count(*) AS n FROM big"), rows as i64);
}

both_backends!(sigint_during_a_migration_rolls_back_and_exits_130, |p| {
    signal_during_a_migration(p, libc::SIGINT, "SIGINT", 130)
});

both_backends!(sigterm_during_a_migration_rolls_back_and_exits_143, |p| {
    signal_during_a_migration(p, libc::SIGTERM, "SIGTERM", 143)
});

both_backends!(sigint_during_a_seed_loads_nothing_and_exits_130, |p| {
    signal_during_a_seed(p, libc::SIGINT, "SIGINT", 130)
});

both_backends!(sigterm_during_a_seed_loads_nothing_and_exits_143, |p| {
    signal_during_a_seed(p, libc::SIGTERM, "SIGTERM", 143)
});

/// SIGKILL cannot be handled: the server must notice the vanished client by itself
/// (`client_connection_check_interval`) and abandon its statement, so that the run lock it held
/// does not block the next run for the 40 s the statement would have taken.
#[test]
fn postgres_sigkill_orphan_is_abandoned_and_the_next_run_is_not_blocked() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    let first = p.migration("first", "CREATE TABLE first_t (id INTEGER);", None);
    let second = p.migration(
        "slow",
        "CREATE TABLE slow_t (id INTEGER);\nSELECT pg_sleep(40);\n",
        Some("DROP TABLE slow_t;"),
    );
    p.init();
    p.run(["migrate", "up", "--to", &first]).success();
    let mut child = spawn(&p, &["migrate", "up"]);
    wait_started(&p, &mut child, "%SELECT pg_sleep");
    child.kill().expect("SIGKILL dbctl");
    let killed = Instant::now();
    let _ = child.wait();
    assert!(
        wait_until(Duration::from_secs(15), || !pg_active(
            &p,
            "%SELECT pg_sleep"
        )),
        "the killed client's statement still runs on the server after 15 s"
    );
    eprintln!(
        "the server abandoned the orphan after {:?}",
        killed.elapsed()
    );
    p.file(
        "migrations/2024-01-01-000002_slow/up.sql",
        "CREATE TABLE slow_t (id INTEGER);\n",
    );
    succeeds_within(
        &p,
        &["migrate", "up", "--lock-timeout", "15"],
        Duration::from_secs(60),
        "migrate up after SIGKILL",
    );
    assert_eq!(p.applied(), [first, second]);
}

/// While a run holds the lock, the waiting run says who holds it and what it runs.
#[test]
fn postgres_lock_wait_names_the_holder() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.migration(
        "slow",
        "CREATE TABLE slow_t (id INTEGER);\nSELECT pg_sleep(3);\n",
        Some("DROP TABLE slow_t;"),
    );
    p.init();
    let mut holder = spawn(&p, &["migrate", "up"]);
    wait_started(&p, &mut holder, "%SELECT pg_sleep");
    let waiter = succeeds_within(
        &p,
        &["migrate", "up", "--lock-timeout", "60"],
        Duration::from_secs(60),
        "the waiting run",
    );
    let line = waiter
        .stderr
        .lines()
        .find(|l| l.contains("waiting for another migration run"))
        .unwrap_or_else(|| panic!("no waiting message:\n{}", waiter.stderr));
    eprintln!("{line}");
    for part in [
        "held by pid ",
        "(dbctl, ",
        "connected ",
        "active for ",
        "pg_sleep(3)",
    ] {
        assert!(line.contains(part), "{part:?} missing: {line}");
    }
    clean_exit(
        &finish(holder, Duration::from_secs(60), "the holder"),
        &[0],
        "the holder",
    );
}

// ---------------------------------------------------------------------------------------------
// Eight `init` creating one database
// ---------------------------------------------------------------------------------------------

#[test]
fn postgres_concurrent_inits_all_succeed_and_create_the_database_once() {
    for rep in 0..3 {
        let Some(mut p) = Project::postgres() else {
            return;
        };
        let name = p.pg_database().expect("database").to_string();
        pg_admin()
            .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
            .expect("drop the database so that init creates it");
        let v = p.migration("a", "CREATE TABLE a (id INTEGER);", Some("DROP TABLE a;"));
        let children: Vec<Child> = (0..8)
            .map(|_| spawn(&p, &["init", "--format", "json"]))
            .collect();
        let mut created = 0;
        for child in children {
            let run = finish(child, Duration::from_secs(120), "concurrent init");
            clean_exit(&run, &[0], &format!("repetition {rep}"));
            let json = run.json();
            let step = json["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .find(|s| s["item"] == "database")
                .expect("a database step")
                .clone();
            match step["status"].as_str() {
                Some("created") => created += 1,
                Some("existed") => {}
                other => panic!("database step {other:?}: {json}"),
            }
        }
        eprintln!("repetition {rep}: 8 inits, {created} created the database");
        assert_eq!(created, 1, "repetition {rep}");
        assert_eq!(p.applied(), [v]);
    }
}

// ---------------------------------------------------------------------------------------------
// inspect while another process migrates
// ---------------------------------------------------------------------------------------------

/// `inspect` runs `rounds` times while another thread applies and reverts ten migrations over
/// and over: every inspect succeeds, and what it shows is of one moment (the tables `t*` are
/// exactly those of the migrations it counts as applied).
fn inspect_while_migrating(mut p: Project, rounds: usize, extra: &[&str]) {
    // Quick migrations, so that the schema changes many times during one inspect.
    let versions: Vec<String> = (0..10)
        .map(|i| {
            p.migration(
                &format!("t{i}"),
                &format!("CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v TEXT);"),
                Some(&format!("DROP TABLE t{i};")),
            )
        })
        .collect();
    p.init();
    /// Stops the migrator also when an assertion fails (else the scope would wait forever).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let stop = AtomicBool::new(false);
    let p = &p;
    thread::scope(|s| {
        let stop_flag = &stop;
        let migrator = s.spawn(move || {
            let mut cycles = 0;
            while !stop_flag.load(Ordering::SeqCst) {
                for args in [&["migrate", "up"][..], &["migrate", "down", "--all"]] {
                    let run = finish(spawn(p, args), Duration::from_secs(120), "migrator");
                    clean_exit(&run, &[0], &format!("migrator {args:?}"));
                }
                cycles += 1;
            }
            cycles
        });
        let guard = StopOnDrop(stop_flag);
        let mut seen = std::collections::BTreeSet::new();
        let mut unknown = 0;
        for round in 0..rounds {
            let mut args = vec!["inspect", "--format", "json"];
            args.extend_from_slice(extra);
            let run = finish(spawn(p, &args), Duration::from_secs(60), "inspect");
            clean_exit(&run, &[0], &format!("inspect round {round}"));
            let json = run.json();
            let applied = json["migrations"]["applied"].as_u64().expect("applied") as usize;
            let mut tables: Vec<String> = json["tables"]
                .as_array()
                .expect("tables")
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect();
            tables.sort();
            let mut expected: Vec<String> = (0..applied).map(|i| format!("t{i}")).collect();
            expected.sort();
            assert_eq!(
                tables,
                expected,
                "round {round}: {applied} migrations applied (of {})",
                versions.len()
            );
            for t in json["tables"].as_array().expect("tables") {
                assert!(!t["columns"].as_array().expect("columns").is_empty(), "{t}");
                // SQLite's read transaction keeps every table of its snapshot; PostgreSQL's
                // snapshot cannot count a table dropped meanwhile (tried again in new snapshots,
                // three times): only then is its count unknown.
                match p.backend {
                    Backend::Sqlite => assert!(t["rows"].is_i64(), "{t}"),
                    Backend::Postgres if t["rows"].is_null() => unknown += 1,
                    Backend::Postgres => assert!(t["rows"].is_i64(), "{t}"),
                }
            }
            seen.insert(applied);
        }
        drop(guard);
        let cycles = migrator.join().expect("migrator");
        eprintln!(
            "{:?}: {rounds} inspects during {cycles} up/down cycles saw {} distinct states; \
             {unknown} counts unknown (table dropped while counting)",
            p.backend,
            seen.len()
        );
    });
}

#[test]
fn sqlite_inspect_while_another_process_migrates() {
    inspect_while_migrating(Project::sqlite(), 100, &[]);
}

#[test]
fn postgres_inspect_exact_while_another_process_migrates() {
    if let Some(p) = Project::postgres() {
        inspect_while_migrating(p, 40, &["--exact"]);
    }
}

// ---------------------------------------------------------------------------------------------
// The session time zone
// ---------------------------------------------------------------------------------------------

/// Runs psql against `url` with `args`; `None` (and a printed reason) when psql is not installed.
fn psql(url: &str, env: &[(&str, &str)], args: &[&str]) -> Option<String> {
    let mut cmd = std::process::Command::new("psql");
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-d", url])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Err(e) => {
            eprintln!("skipping the psql comparison: cannot run psql ({e})");
            None
        }
        Ok(o) => {
            assert!(
                o.status.success(),
                "psql {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(String::from_utf8_lossy(&o.stdout).into_owned())
        }
    }
}

/// Loaded by dbctl and by psql: under the database's time zone, under `PGTZ`, and under the
/// URL's `options`.
const ALL_TZ_TABLES: [&str; 6] = [
    "by_dbctl",
    "by_psql",
    "tokyo_dbctl",
    "tokyo_psql",
    "paris_dbctl",
    "paris_psql",
];

#[test]
fn postgres_seed_stores_timestamps_in_the_configured_time_zone_as_psql_does() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    let db = p.pg_database().expect("database").to_string();
    p.execute(&format!(
        "ALTER DATABASE \"{db}\" SET timezone = 'America/New_York'"
    ));
    let mut up = String::new();
    for t in ALL_TZ_TABLES {
        up.push_str(&format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY, at TIMESTAMPTZ NOT NULL, \
             day TIMESTAMP NOT NULL DEFAULT now()::timestamp);\n"
        ));
    }
    // A time literal in a migration means the same instant whoever applies it: UTC, as in
    // diesel_cli's sessions.
    up.push_str("CREATE TABLE defaults (at TIMESTAMPTZ DEFAULT '2024-01-01 00:00:00');\n");
    p.migration("ts", &up, None);
    p.run(["init"]).success();
    let csv = "id,at\n1,2024-01-02 03:04:05\n2,2024-07-01 12:00:00\n3,2024-03-10 02:30:00\n";
    for t in ALL_TZ_TABLES {
        p.file(&format!("seeds/{t}.csv"), csv);
    }
    p.run(["seed", "seeds/by_dbctl.csv"]).success();
    let mut tokyo = p.command();
    tokyo
        .env("PGTZ", "Asia/Tokyo")
        .args(["seed", "seeds/tokyo_dbctl.csv"]);
    Run::from(tokyo.output().expect("run dbctl")).success();
    let url = p.url().to_string();
    let sep = if url.contains('?') { '&' } else { '?' };
    let paris = format!("{url}{sep}options=-c%20TimeZone%3DEurope/Paris");
    let mut by_url = p.command();
    by_url
        .env("DATABASE_URL", &paris)
        .args(["seed", "seeds/paris_dbctl.csv"]);
    Run::from(by_url.output().expect("run dbctl")).success();
    let copy = |table: &str, env: &[(&str, &str)]| {
        let file = p.path().join(format!("seeds/{table}.csv"));
        let url = if table.starts_with("paris") {
            &paris
        } else {
            &url
        };
        psql(
            url,
            env,
            &[
                "-c",
                &format!(
                    "\\copy {table} (id, at) FROM '{}' csv header",
                    file.display()
                ),
            ],
        )
    };
    if copy("by_psql", &[]).is_none()
        || copy("tokyo_psql", &[("PGTZ", "Asia/Tokyo")]).is_none()
        || copy("paris_psql", &[]).is_none()
    {
        return;
    }
    let same = |a: &str, b: &str| {
        p.count(&format!(
            "SELECT count(*) AS n FROM {a} JOIN {b} USING (id) \
             WHERE {a}.at = {b}.at AND {a}.day::date = {b}.day::date"
        ))
    };
    assert_eq!(
        same("by_dbctl", "by_psql"),
        3,
        "dbctl and psql stored other instants"
    );
    assert_eq!(
        same("tokyo_dbctl", "tokyo_psql"),
        3,
        "PGTZ: dbctl and psql differ"
    );
    assert_eq!(
        same("paris_dbctl", "paris_psql"),
        3,
        "URL options: dbctl and psql differ"
    );
    // And those are New York's and Tokyo's 03:04:05, not UTC's.
    let epoch = |table: &str| {
        p.count(&format!(
            "SELECT extract(epoch FROM at)::bigint AS n FROM {table} WHERE id = 1"
        ))
    };
    assert_eq!(epoch("by_dbctl"), 1_704_182_645, "2024-01-02 08:04:05 UTC");
    assert_eq!(
        epoch("tokyo_dbctl"),
        1_704_132_245,
        "2024-01-01 18:04:05 UTC"
    );
    assert_eq!(
        epoch("paris_dbctl"),
        1_704_161_045,
        "2024-01-02 02:04:05 UTC"
    );
    // The test's own diesel connection is in UTC.
    let default = p.strings(
        "SELECT pg_get_expr(d.adbin, d.adrelid) AS v FROM pg_attrdef d \
         JOIN pg_class c ON c.oid = d.adrelid WHERE c.relname = 'defaults'",
    );
    assert_eq!(
        default,
        [Some(
            "'2024-01-01 00:00:00+00'::timestamp with time zone".to_string()
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// REGEXP on SQLite
// ---------------------------------------------------------------------------------------------

#[test]
fn sqlite_regexp_works_in_migrations_seeds_and_inspected_views() {
    let mut p = Project::sqlite();
    p.migration(
        "people",
        "CREATE TABLE people (name TEXT);\n\
         INSERT INTO people VALUES ('alice'), ('bob'), ('anna'), (NULL), ('Ann');\n\
         DELETE FROM people WHERE name REGEXP '^b';\n\
         CREATE VIEW a_people AS SELECT name, name REGEXP 'n{2}' AS double_n FROM people \
         WHERE name REGEXP '^a';\n",
        Some("DROP VIEW a_people;\nDROP TABLE people;"),
    );
    p.file(
        "seeds/010_more.sql",
        "INSERT INTO people SELECT 'arthur' WHERE 'arthur' REGEXP '^a(r|x)t';\n\
         INSERT INTO people SELECT 'zed' WHERE 'zed' REGEXP '^a';\n\
         INSERT INTO people SELECT 'nobody' WHERE NULL REGEXP 'x' OR 'x' REGEXP NULL;\n",
    );
    // In a CHECK constraint, evaluated by the CSV loader's inserts.
    p.migration(
        "codes",
        "CREATE TABLE codes (code TEXT NOT NULL CHECK (code REGEXP '^[A-Z]{3}$'));",
        Some("DROP TABLE codes;"),
    );
    p.file("seeds/codes.csv", "code\nABC\nXYZ\n");
    p.run(["init"]).success();
    p.run(["seed"]).success();
    assert_eq!(p.count("SELECT count(*) AS n FROM codes"), 2);
    p.file("bad/codes.csv", "code\nABCD\n");
    p.run(["seed", "bad/codes.csv"])
        .code(1)
        .stderr_has("CHECK constraint failed");
    let names = p.strings("SELECT name AS v FROM people ORDER BY name");
    let names: Vec<&str> = names
        .iter()
        .map(|n| n.as_deref().unwrap_or("NULL"))
        .collect();
    assert_eq!(names, ["NULL", "Ann", "alice", "anna", "arthur"]);
    let json = p.run(["inspect", "a_people", "--format", "json"]).json();
    let view = &json["views"][0];
    let columns: Vec<&str> = view["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["name", "double_n"], "{view}");
    // A pattern that does not compile is an error naming it; the seed changes nothing.
    p.file(
        "seeds/020_bad.sql",
        "INSERT INTO people SELECT 'x' WHERE 'x' REGEXP '(';\n",
    );
    p.run(["seed", "seeds/020_bad.sql"])
        .code(1)
        .stderr_has("invalid regular expression `(`");
    assert_eq!(p.count("SELECT count(*) AS n FROM people"), 5);
}

// Ctrl-C while waiting for another run's lock (held here by the test itself: the advisory lock
// on PostgreSQL, the file lock on SQLite): the waiter stops at once, having changed nothing.
both_backends!(
    sigint_while_waiting_for_the_lock_changes_nothing,
    |mut p| {
        let v = p.migration("t", "CREATE TABLE t (id INTEGER);", Some("DROP TABLE t;"));
        p.init();
        let mut pg_holder = None;
        let mut file_holder = None;
        match p.backend {
            Backend::Postgres => {
                let mut conn = PgConnection::establish(p.url()).expect("connect");
                conn.batch_execute("SELECT pg_advisory_lock(7233453303196903783)")
                    .expect("take the run lock");
                pg_holder = Some(conn);
            }
            Backend::Sqlite => {
                let file = std::fs::File::open(p.path().join("test.db")).expect("open the file");
                file.lock().expect("take the file lock");
                file_holder = Some(file);
            }
        }
        let mut waiter = spawn(&p, &["migrate", "up", "--lock-timeout", "60"]);
        thread::sleep(Duration::from_millis(700));
        assert!(
            waiter.try_wait().expect("try_wait").is_none(),
            "the waiter did not wait for the lock"
        );
        send(&waiter, libc::SIGINT);
        let run = finish(waiter, Duration::from_secs(15), "the interrupted waiter");
        clean_exit(&run, &[130], "the interrupted waiter");
        let line = one_interrupted_line(&run, "SIGINT");
        assert!(
            line.contains("waiting for the migration lock: nothing was changed"),
            "{line}"
        );
        assert!(!p.has_table("t"));
        drop(pg_holder);
        drop(file_holder);
        assert!(p.applied().is_empty());
        p.run(["migrate", "up", "--lock-timeout", "5"]).success();
        assert_eq!(p.applied(), [v]);
    }
);

/// The watchdog asks the server about a statement that waits longer than the connect timeout;
/// a statement the server reports active is a long one, never taken for a silent server.
#[test]
fn postgres_a_long_statement_is_not_taken_for_a_silent_server() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    let v = p.migration(
        "long",
        "CREATE TABLE long_t (id INTEGER);\nSELECT pg_sleep(4.5);\n\
         CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT);\n",
        Some("DROP TABLE big;\nDROP TABLE long_t;"),
    );
    p.env("DB_CONNECT_TIMEOUT", "1");
    p.init();
    succeeds_within(
        &p,
        &["migrate", "up"],
        Duration::from_secs(60),
        "a long migration",
    );
    assert_eq!(p.applied(), [v]);
    // A long COPY too (the server reports it active while dbctl streams the rows).
    let rows = 600_000;
    crate::reliability::big_csv(&p, rows);
    let started = Instant::now();
    succeeds_within(&p, &["seed"], Duration::from_secs(300), "a long seed");
    eprintln!("a seed of {rows} rows took {:?}", started.elapsed());
    assert_eq!(p.count("SELECT count(*) AS n FROM big"), rows as i64);
}
