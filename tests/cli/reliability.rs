//! Reliability under concurrency and faults: many `migrate up` processes at once, `up` racing
//! `down` and `seed` racing `up`, processes killed with SIGKILL halfway, connections cut by a TCP
//! proxy of the test's own, a non-transactional migration failing halfway, a SQLite file locked by
//! another writer, and PostgreSQL unreachable, refusing or silent. Every check looks at the
//! database afterwards through a direct connection: nothing half-applied, nothing recorded that
//! did not happen, and the next run succeeds.
//!
//! Timings are only ever generous upper bounds (a process that hangs is killed and the test
//! fails); nothing here measures speed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::both_backends;
use crate::support::{pg_url_for, Backend, FakeServer, Project, Run};

/// Starts `dbctl ARGS` in the project with piped output.
pub(crate) fn spawn(p: &Project, args: &[&str]) -> Child {
    let mut cmd = p.command();
    cmd.args(args);
    spawn_cmd(cmd)
}

pub(crate) fn spawn_cmd(mut cmd: std::process::Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dbctl")
}

/// Waits for a child at most `limit`; a child still running then is killed and the test fails
/// (dbctl must never hang). The pipes are drained on threads so a chatty child cannot block.
#[track_caller]
pub(crate) fn finish(mut child: Child, limit: Duration, what: &str) -> Run {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dbctl") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
            panic!("{what}: dbctl still running after {limit:?} (killed)\n--- stderr\n{stderr}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned(),
    }
}

/// `dbctl ARGS` in `p`, run to its end within `limit` (see [`finish`]); it must exit 0 cleanly.
pub(crate) fn succeeds_within(p: &Project, args: &[&str], limit: Duration, what: &str) -> Run {
    let run = finish(spawn(p, args), limit, what);
    clean_exit(&run, &[0], what);
    run
}

/// Asserts a run ended with one of `codes`, without a panic.
#[track_caller]
pub(crate) fn clean_exit(run: &Run, codes: &[i32], what: &str) {
    assert!(
        !run.stderr.contains("panicked at") && run.code != 101,
        "{what}: dbctl panicked\n{}",
        run.stderr
    );
    assert!(
        codes.contains(&run.code),
        "{what}: exit {} (expected one of {codes:?})\n--- stdout\n{}\n--- stderr\n{}",
        run.code,
        run.stdout,
        run.stderr
    );
}

/// Polls `cond` every 10 ms for at most `limit`; whether it became true.
pub(crate) fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

pub(crate) fn companion(p: &Project) -> Vec<String> {
    p.strings("SELECT version AS v FROM __dbctl_migrations ORDER BY version")
        .into_iter()
        .flatten()
        .collect()
}

/// Writes `n` reversible migrations creating `t0..t{n-1}`, each burning a little time first so
/// that processes started together overlap. Returns the versions in order.
pub(crate) fn table_migrations(p: &mut Project, n: usize) -> Vec<String> {
    let burn = match p.backend {
        Backend::Postgres => "SELECT pg_sleep(0.05);",
        Backend::Sqlite => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000) \
             SELECT count(*) FROM c;"
        }
    };
    (0..n)
        .map(|i| {
            p.migration(
                &format!("t{i}"),
                &format!("{burn}\nCREATE TABLE t{i} (id INTEGER PRIMARY KEY, v TEXT);\n"),
                Some(&format!("DROP TABLE t{i};")),
            )
        })
        .collect()
}

/// The bookkeeping is consistent with the schema: both tables record the same versions, those
/// are a prefix of `versions` (migrations apply in order), and `t{i}` exists exactly for the
/// recorded ones. Returns how many are applied.
#[track_caller]
fn consistent(p: &Project, versions: &[String]) -> usize {
    let applied = p.applied();
    assert_eq!(
        applied,
        companion(p),
        "__diesel_schema_migrations and __dbctl_migrations disagree"
    );
    assert_eq!(
        applied.as_slice(),
        &versions[..applied.len()],
        "the applied migrations are not a prefix of the folder"
    );
    for i in 0..versions.len() {
        assert_eq!(
            p.has_table(&format!("t{i}")),
            i < applied.len(),
            "table t{i} vs recorded versions {applied:?}"
        );
    }
    applied.len()
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

const PROCESSES: usize = 8;
const REPETITIONS: usize = 3;
const MIGRATIONS: usize = 10;

/// 8 `migrate up` at once on a fresh database, 3 times: all exit 0, each migration applied once.
fn many_concurrent_ups(backend: Backend) {
    for rep in 0..REPETITIONS {
        let Some(mut p) = Project::new(backend) else {
            return;
        };
        let versions = table_migrations(&mut p, MIGRATIONS);
        p.init();
        let children: Vec<Child> = (0..PROCESSES)
            .map(|_| {
                spawn(
                    &p,
                    &["migrate", "up", "--lock-timeout", "120", "--format", "json"],
                )
            })
            .collect();
        let (mut steps, mut workers) = (0, 0);
        for child in children {
            let run = finish(child, Duration::from_secs(180), "concurrent migrate up");
            clean_exit(&run, &[0], &format!("repetition {rep}"));
            let did = run.json()["steps"].as_array().expect("steps").len();
            workers += usize::from(did > 0);
            steps += did;
        }
        eprintln!(
            "{backend:?} repetition {rep}: {PROCESSES} processes, {workers} applied something"
        );
        assert_eq!(steps, MIGRATIONS, "repetition {rep}: steps reported in all");
        assert_eq!(consistent(&p, &versions), MIGRATIONS, "repetition {rep}");
    }
}

#[test]
fn eight_concurrent_ups_apply_each_migration_once_sqlite() {
    many_concurrent_ups(Backend::Sqlite);
}

#[test]
fn eight_concurrent_ups_apply_each_migration_once_postgres() {
    many_concurrent_ups(Backend::Postgres);
}

both_backends!(up_racing_down_ends_in_a_serial_state, |mut p: Project| {
    let versions = table_migrations(&mut p, 6);
    p.init();
    for round in 0..3 {
        // Start from 3 applied of 6.
        let before = consistent(&p, &versions);
        if before > 3 {
            let n = (before - 3).to_string();
            p.run(["migrate", "down", "--step", &n]).success();
        } else if before < 3 {
            p.run(["migrate", "up", "--to", &versions[2]]).success();
        }
        assert_eq!(consistent(&p, &versions), 3);
        let up = spawn(&p, &["migrate", "up", "--lock-timeout", "60"]);
        let down = spawn(&p, &["migrate", "down", "--lock-timeout", "60"]);
        let up = finish(up, Duration::from_secs(120), "migrate up");
        let down = finish(down, Duration::from_secs(120), "migrate down");
        clean_exit(&up, &[0, 1], "migrate up racing down");
        clean_exit(&down, &[0, 1], "migrate down racing up");
        let after = consistent(&p, &versions);
        // up then down leaves 5; down then up leaves 6; one alone: 6 (up) or 2 (down).
        let allowed: &[usize] = match (up.code, down.code) {
            (0, 0) => &[5, 6],
            (0, _) => &[6],
            (_, 0) => &[2],
            _ => &[3],
        };
        eprintln!(
            "up/down round {round}: up exit {}, down exit {}, {after} applied",
            up.code, down.code
        );
        assert!(
            allowed.contains(&after),
            "round {round}: {after} applied after up={} down={}",
            up.code,
            down.code
        );
    }
});

/// `seed` racing `migrate up`, 4 times on a fresh database: the seeded table is created by the
/// first pending migration (even rounds) or already there (odd rounds).
fn seed_racing_up(backend: Backend) {
    for round in 0..4 {
        let Some(mut p) = Project::new(backend) else {
            return;
        };
        let p = &mut p;
        let first = p.migration(
            "items",
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
            Some("DROP TABLE items;"),
        );
        let rest = table_migrations(p, 5);
        let rows = 2000;
        let mut csv = String::from("id,name\n");
        for i in 1..=rows {
            csv.push_str(&format!("{i},item {i}\n"));
        }
        p.file("seeds/items.csv", csv);
        p.init();
        // Odd rounds: the seeded table already exists, so the seed must succeed while the other
        // migrations run next to it (on SQLite it waits for their write lock).
        let table_first = round % 2 == 1;
        if table_first {
            p.run(["migrate", "up", "--to", &first]).success();
        }
        let up = spawn(p, &["migrate", "up", "--lock-timeout", "60"]);
        let seed = spawn(p, &["seed"]);
        let up = finish(up, Duration::from_secs(120), "migrate up");
        let seed = finish(seed, Duration::from_secs(120), "seed");
        clean_exit(&up, &[0, 1], "migrate up racing seed");
        clean_exit(&seed, &[0, 1], "seed racing migrate up");
        let recorded = p.applied();
        assert_eq!(recorded, companion(p), "round {round}");
        let mut versions = vec![first.clone()];
        versions.extend(rest.iter().cloned());
        assert_eq!(recorded.as_slice(), &versions[..recorded.len()]);
        assert_eq!(p.has_table("items"), !recorded.is_empty(), "round {round}");
        for i in 0..rest.len() {
            assert_eq!(p.has_table(&format!("t{i}")), recorded.len() > i + 1);
        }
        if up.code == 0 {
            assert_eq!(recorded.len(), versions.len(), "round {round}");
        }
        let n = if p.has_table("items") {
            p.count("SELECT count(*) AS n FROM items")
        } else {
            0
        };
        eprintln!(
            "seed/up round {round}: up exit {}, seed exit {}, {} applied, {n} rows: {}",
            up.code,
            seed.code,
            recorded.len(),
            seed.stderr.lines().next().unwrap_or("")
        );
        if table_first {
            assert_eq!(seed.code, 0, "round {round}: {}", seed.stderr);
        }
        if seed.code == 0 {
            assert_eq!(n, rows, "round {round}: a successful seed loads every row");
        } else {
            assert_eq!(n, 0, "round {round}: a failed seed loads nothing");
            seed_failure_is_clear(&seed);
        }
    }
}

#[test]
fn seed_racing_up_ends_in_a_serial_state_sqlite() {
    seed_racing_up(Backend::Sqlite);
}

#[test]
fn seed_racing_up_ends_in_a_serial_state_postgres() {
    seed_racing_up(Backend::Postgres);
}

#[track_caller]
fn seed_failure_is_clear(run: &Run) {
    assert!(
        run.stderr.contains("error:"),
        "a failure without an error line:\n{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// SIGKILL
// ---------------------------------------------------------------------------------------------

/// A CSV with `rows` rows for `CREATE TABLE big (id, name, note)`.
pub(crate) fn big_csv(p: &Project, rows: usize) {
    let mut csv = String::with_capacity(rows * 40);
    csv.push_str("id,name,note\n");
    for i in 1..=rows {
        csv.push_str(&format!("{i},name {i},\"a note, with a comma, {i}\"\n"));
    }
    p.file("seeds/big.csv", csv);
}

/// Whether a session other than the test's own is running a statement starting with `prefix`
/// (a LIKE pattern: a migration's statements travel in one query that starts with BEGIN).
pub(crate) fn pg_active(p: &Project, prefix: &str) -> bool {
    let db = p.pg_database().expect("a PostgreSQL project");
    p.count(&format!(
        "SELECT count(*)::bigint AS n FROM pg_stat_activity WHERE datname = '{db}' \
         AND state = 'active' AND query ILIKE '{prefix}%' AND pid <> pg_backend_pid()"
    )) > 0
}

/// Waits until the child is visibly working (PostgreSQL: its statement is active; SQLite: a
/// rollback journal, i.e. a write transaction, exists, plus a little more), then SIGKILLs it.
/// Fails when the child finished first: then no fault was injected.
fn kill_midway(p: &Project, mut child: Child, pg_prefix: &str) {
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
        "dbctl finished before the kill: make the operation longer"
    );
    child.kill().expect("SIGKILL dbctl");
    let status = child.wait().expect("wait");
    assert!(status.code().is_none(), "killed by a signal");
}

both_backends!(sigkill_during_a_seed_leaves_no_rows, |mut p: Project| {
    p.migration(
        "big",
        "CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT);",
        Some("DROP TABLE big;"),
    );
    p.run(["init"]).success();
    let rows = 300_000;
    big_csv(&p, rows);
    let child = spawn(&p, &["seed"]);
    kill_midway(&p, child, "COPY");
    assert_eq!(
        p.count("SELECT count(*) AS n FROM big"),
        0,
        "no rows after SIGKILL"
    );
    if p.backend == Backend::Sqlite {
        let ok = p.strings("SELECT integrity_check AS v FROM pragma_integrity_check");
        assert_eq!(ok, [Some("ok".to_string())]);
    }
    let started = Instant::now();
    let run = finish(spawn(&p, &["seed"]), Duration::from_secs(300), "seed");
    clean_exit(&run, &[0], "seed after SIGKILL");
    eprintln!("{:?}: a whole seed took {:?}", p.backend, started.elapsed());
    assert_eq!(p.count("SELECT count(*) AS n FROM big"), rows as i64);
});

both_backends!(
    sigkill_during_a_migration_leaves_it_unapplied,
    |mut p: Project| {
        let slow = match p.backend {
            Backend::Postgres => {
                "CREATE TABLE slow_t (id INTEGER);\nSELECT pg_sleep(3);\n".to_string()
            }
            Backend::Sqlite => "CREATE TABLE slow_t (id INTEGER);\n\
                 INSERT INTO slow_t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 \
                 FROM c WHERE x < 3000000) SELECT x FROM c;\n"
                .to_string(),
        };
        let first = p.migration("first", "CREATE TABLE first_t (id INTEGER);", None);
        let second = p.migration("slow", &slow, Some("DROP TABLE slow_t;"));
        p.init();
        p.run(["migrate", "up", "--to", &first]).success();
        let child = spawn(&p, &["migrate", "up"]);
        kill_midway(&p, child, "%SELECT pg_sleep");
        assert!(
            !p.has_table("slow_t"),
            "the killed migration left its table"
        );
        assert_eq!(p.applied(), std::slice::from_ref(&first));
        assert_eq!(companion(&p), std::slice::from_ref(&first));
        if p.backend == Backend::Sqlite {
            let ok = p.strings("SELECT integrity_check AS v FROM pragma_integrity_check");
            assert_eq!(ok, [Some("ok".to_string())]);
        }
        let status = p.run(["migrate", "status", "--format", "json"]);
        status.success();
        assert_eq!(status.json()["pending"], 1);
        // The PostgreSQL backend may still be sleeping with the lock: the next run waits for it.
        let run = succeeds_within(
            &p,
            &["migrate", "up", "--lock-timeout", "60"],
            Duration::from_secs(300),
            "migrate up after SIGKILL",
        );
        eprintln!("{:?}: {}", p.backend, run.stderr.trim());
        assert!(p.has_table("slow_t"));
        assert_eq!(p.applied(), [first, second]);
    }
);

// ---------------------------------------------------------------------------------------------
// Connection cut
// ---------------------------------------------------------------------------------------------

/// A TCP proxy to PostgreSQL whose connections the test can cut.
struct Proxy {
    port: u16,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let streams = Arc::new(Mutex::new(Vec::new()));
        let cut = Arc::new(AtomicBool::new(false));
        let (s, c) = (streams.clone(), cut.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                {
                    let mut all = s.lock().expect("proxy streams");
                    for stream in [&client, &server] {
                        if let Ok(clone) = stream.try_clone() {
                            all.push(clone);
                        }
                    }
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Proxy { port, streams, cut }
    }

    /// Closes every connection, and every later one as soon as it is accepted.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.streams.lock().expect("proxy streams").iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn url(&self, db: &str) -> String {
        pg_url_for(db).replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port))
    }

    /// `dbctl ARGS` in `p`, through this proxy (connect timeout 2 s), started.
    fn spawn(&self, p: &Project, args: &[&str]) -> Child {
        let mut cmd = p.command();
        cmd.env("DATABASE_URL", self.url(p.pg_database().expect("database")))
            .env("DB_CONNECT_TIMEOUT", "2")
            .args(args);
        spawn_cmd(cmd)
    }

    /// Cuts the connections under a running `child`, which must then end cleanly with exit 1 or
    /// 3; returns its run.
    fn cut_under(&self, child: Child, what: &str) -> Run {
        self.cut();
        let run = finish(child, Duration::from_secs(30), what);
        clean_exit(&run, &[1, 3], what);
        eprintln!("{what}: exit {}: {}", run.code, run.stderr.trim());
        assert!(run.stderr.contains("error:"), "{}", run.stderr);
        run
    }
}

/// Copies bytes from `from` to `to` on a thread until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

#[test]
fn postgres_connection_cut_during_a_migration_applies_nothing() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    let first = p.migration("first", "CREATE TABLE first_t (id INTEGER);", None);
    let second = p.migration(
        "slow",
        "CREATE TABLE cut_t (id INTEGER);\nSELECT pg_sleep(2);\nCREATE TABLE cut_u (id INTEGER);\n",
        Some("DROP TABLE cut_u;\nDROP TABLE cut_t;"),
    );
    p.init();
    p.run(["migrate", "up", "--to", &first]).success();
    let proxy = Proxy::start("127.0.0.1:5432");
    let child = proxy.spawn(&p, &["migrate", "up"]);
    assert!(
        wait_until(Duration::from_secs(60), || pg_active(
            &p,
            "%SELECT pg_sleep"
        )),
        "the migration never started"
    );
    let run = proxy.cut_under(child, "migrate up through a cut");
    assert!(
        run.stderr.contains("connection to the database was lost"),
        "{}",
        run.stderr
    );
    assert!(!p.has_table("cut_t") && !p.has_table("cut_u"));
    assert_eq!(p.applied(), std::slice::from_ref(&first));
    assert_eq!(companion(&p), std::slice::from_ref(&first));
    // Directly, the migration applies (once the orphaned session gives up its lock).
    succeeds_within(
        &p,
        &["migrate", "up", "--lock-timeout", "60"],
        Duration::from_secs(120),
        "migrate up after the cut",
    );
    assert_eq!(p.applied(), [first, second]);
}

#[test]
fn postgres_connection_cut_during_a_seed_loads_nothing() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.migration(
        "big",
        "CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT);",
        None,
    );
    p.run(["init"]).success();
    let rows = 300_000;
    big_csv(&p, rows);
    let proxy = Proxy::start("127.0.0.1:5432");
    let mut child = proxy.spawn(&p, &["seed"]);
    assert!(
        wait_until(Duration::from_secs(60), || pg_active(&p, "COPY")),
        "the seed never started"
    );
    thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the seed finished before the cut: make it longer"
    );
    proxy.cut_under(child, "seed through a cut");
    assert_eq!(p.count("SELECT count(*) AS n FROM big"), 0);
    succeeds_within(
        &p,
        &["seed"],
        Duration::from_secs(300),
        "seed after the cut",
    );
    assert_eq!(p.count("SELECT count(*) AS n FROM big"), rows as i64);
}

// ---------------------------------------------------------------------------------------------
// A non-transactional migration failing halfway
// ---------------------------------------------------------------------------------------------

both_backends!(
    a_non_transactional_failure_halfway_stays_pending,
    |mut p: Project| {
        let first = p.migration("first", "CREATE TABLE first_t (id INTEGER);", None);
        let version = p.migration(
            "notx",
            "CREATE TABLE nt_a (id INTEGER);\nCREATE TABLE nt_b (id INTEGER);\n\
             INSERT INTO no_such_table VALUES (1);\nCREATE TABLE nt_c (id INTEGER);\n",
            Some("DROP TABLE nt_b;\nDROP TABLE nt_a;"),
        );
        let folder = std::fs::read_dir(p.path().join("migrations"))
            .expect("migrations folder")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.ends_with("_notx"))
            .expect("the notx folder");
        p.file(
            &format!("migrations/{folder}/metadata.toml"),
            "run_in_transaction = false\n",
        );
        p.init();
        p.run(["migrate", "up"])
            .code(1)
            .stderr_has("statement 3 of 4")
            .stderr_has("statements 1 to 2 ran and were NOT rolled back")
            .stderr_has("look at the database by hand")
            .stderr_has("not recorded");
        assert!(p.has_table("nt_a") && p.has_table("nt_b") && !p.has_table("nt_c"));
        assert_eq!(p.applied(), std::slice::from_ref(&first));
        assert_eq!(companion(&p), [first]);
        let status = p.run(["migrate", "status", "--format", "json"]);
        status.success();
        let json = status.json();
        assert_eq!(json["pending"], 1);
        let row = json["migrations"]
            .as_array()
            .expect("migrations")
            .iter()
            .find(|m| m["version"] == version.as_str())
            .expect("the failed migration is listed")
            .clone();
        assert_eq!(row["state"], "pending", "{row}");
    }
);

// ---------------------------------------------------------------------------------------------
// SQLite locked by another writer
// ---------------------------------------------------------------------------------------------

#[test]
fn sqlite_locked_by_another_writer_waits_then_fails_cleanly() {
    let mut p = Project::sqlite();
    let w = p.migration("w", "CREATE TABLE w (id INTEGER);", Some("DROP TABLE w;"));
    p.migration("a", "CREATE TABLE a (id INTEGER);", Some("DROP TABLE a;"));
    p.file("seeds/w.csv", "id\n1\n2\n");
    p.init();
    p.run(["migrate", "up", "--to", &w]).success();
    let mut holder = SqliteConnection::establish(p.url()).expect("open the file");
    holder
        .batch_execute(
            "CREATE TABLE other (id INTEGER); BEGIN IMMEDIATE; INSERT INTO other VALUES (1);",
        )
        .expect("take the write lock");
    p.env("DB_STATEMENT_TIMEOUT", "1");
    for args in [
        &["migrate", "up"][..],
        &["migrate", "down"],
        &["migrate", "redo"],
        &["init"],
        &["seed"],
    ] {
        let started = Instant::now();
        let run = finish(spawn(&p, args), Duration::from_secs(30), "locked file");
        let waited = started.elapsed();
        clean_exit(&run, &[1], &format!("{args:?} on a locked file"));
        eprintln!("{args:?} on a locked file: {}", run.stderr.trim());
        assert!(
            run.stderr.contains("database is locked")
                && run.stderr.contains("busy timeout (DB_STATEMENT_TIMEOUT"),
            "{args:?}: {}",
            run.stderr
        );
        // It waited for the lock (about 1 s) rather than failing at once.
        assert!(
            waited >= Duration::from_millis(900),
            "{args:?} gave up after {waited:?}, before the busy timeout"
        );
    }
    assert_eq!(p.applied(), [w]);
    assert_eq!(p.count("SELECT count(*) AS n FROM w"), 0);
    holder.batch_execute("COMMIT").expect("release the lock");
    drop(holder);
    let ok = p.strings("SELECT integrity_check AS v FROM pragma_integrity_check");
    assert_eq!(ok, [Some("ok".to_string())]);
    p.run(["migrate", "up"]).success();
    assert!(p.has_table("a"));
    p.run(["seed"]).success();
    assert_eq!(p.count("SELECT count(*) AS n FROM w"), 2);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL unreachable, refusing, silent
// ---------------------------------------------------------------------------------------------

/// Every command that connects.
const EVERY_COMMAND: &[&[&str]] = &[
    &["init"],
    &["migrate", "up"],
    &["migrate", "down"],
    &["migrate", "status"],
    &["migrate", "redo"],
    &["seed"],
    &["inspect"],
    &["ping"],
];

/// Runs every command against `url` and asserts exit 3 well within a bound; returns the runs.
fn every_command_exits_3(p: &Project, url: &str, what: &str) -> usize {
    let mut runs = 0;
    for args in EVERY_COMMAND {
        let mut cmd = p.command();
        cmd.env("DATABASE_URL", url)
            .env("DB_CONNECT_TIMEOUT", "1")
            .args(*args);
        let started = Instant::now();
        let run = finish(
            spawn_cmd(cmd),
            Duration::from_secs(15),
            &format!("{what}: {args:?}"),
        );
        eprintln!(
            "{what}: {args:?} exit {} after {:?}: {}",
            run.code,
            started.elapsed(),
            run.stderr.lines().next().unwrap_or("")
        );
        clean_exit(&run, &[3], &format!("{what}: {args:?}"));
        assert!(
            run.stderr.contains("error:"),
            "{what}: {args:?}: {}",
            run.stderr
        );
        runs += 1;
    }
    runs
}

fn offline_project() -> Project {
    let mut p = Project::sqlite();
    p.migration("a", "CREATE TABLE a (id INTEGER);", Some("DROP TABLE a;"));
    p.file("seeds/a.csv", "id\n1\n");
    p
}

#[test]
fn postgres_closed_port_every_command_exits_3() {
    let p = offline_project();
    let url = FakeServer::ClosedPort.url();
    assert_eq!(every_command_exits_3(&p, &url, "closed port"), 8);
}

#[test]
fn postgres_hang_up_every_command_exits_3() {
    let p = offline_project();
    let url = FakeServer::HangUp.url();
    assert_eq!(every_command_exits_3(&p, &url, "hang-up"), 8);
}

#[test]
fn postgres_silent_server_every_command_exits_3() {
    let p = offline_project();
    let url = FakeServer::Silent.url();
    assert_eq!(every_command_exits_3(&p, &url, "silent server"), 8);
}

#[test]
fn postgres_refusing_role_every_command_exits_3() {
    if crate::support::pg_skipped() {
        return;
    }
    // The closest to an authentication failure a trust-auth server gives: it refuses the role.
    let p = offline_project();
    let url = pg_url_for("postgres").replace("postgres@", "dbctl_no_such_role@");
    assert!(url.contains("dbctl_no_such_role@"), "{url}");
    assert_eq!(every_command_exits_3(&p, &url, "unknown role"), 8);
}
