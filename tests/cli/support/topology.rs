//! Real production parts for the tests, started once per test process and shared: PgBouncer
//! (Debian's `pgbouncer`) in transaction pooling mode in front of the test server, and a primary
//! of the tests' own (`initdb`) with a streaming standby (`pg_basebackup -R`), all on free ports.
//!
//! Everything lives in one folder, `$TMPDIR/dbctl-topology-<pid>`. A watcher process (its own
//! session, so a Ctrl-C to the test run does not take it first) waits for the test process to
//! end, however it ends, then stops the servers and removes the folder; a folder whose test
//! process is gone is cleaned up by the next run as well. PostgreSQL refuses to run as root: as
//! root the servers run as the `postgres` user (`setpriv`).
//!
//! `DBCTL_TEST_SKIP_TOPOLOGY=1` skips the tests that need these parts (they fail otherwise when a
//! binary is missing: CI installs them).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

use super::pg_server_url;

/// The newest PostgreSQL server binaries installed (Debian's layout), 15 by default.
fn pg_bin() -> String {
    let mut found: Vec<(u32, String)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb")
                .exists()
                .then(|| (v, bin.display().to_string()))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map_or_else(|| "/usr/lib/postgresql/15/bin".to_string(), |(_, b)| b)
}
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
/// The server pool size per database and user: small, so that concurrent runs share connections.
pub const BOUNCER_POOL_SIZE: u32 = 4;

/// Whether the topology tests were turned off on purpose (or PostgreSQL tests altogether).
pub fn skipped() -> bool {
    let on = |k: &str| std::env::var(k).is_ok_and(|v| v == "1" || v == "true");
    if on("DBCTL_TEST_SKIP_TOPOLOGY") || super::pg_skipped() {
        eprintln!(
            "skipping a topology test: DBCTL_TEST_SKIP_TOPOLOGY or DBCTL_TEST_SKIP_PG is set"
        );
        return true;
    }
    false
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    super::FakeServer::ClosedPort.start()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command run as the `postgres` user when the tests run as root.
fn as_server_user(program: &str) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
            program,
        ]);
        cmd
    } else {
        Command::new(program)
    }
}

#[track_caller]
fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shared folder of this test process, made once: stale folders of earlier runs whose
/// process is gone are cleaned up first, and a watcher cleans this one up when the process ends.
fn base_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix("dbctl-topology-") else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let script = entry.path().join("cleanup.sh");
                    if script.exists() {
                        let _ = Command::new("sh").arg(&script).status();
                    }
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("dbctl-topology-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the topology folder");
        if is_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(&dir);
                    c
                },
                "chown the topology folder",
            );
        }
        let script = dir.join("cleanup.sh");
        std::fs::write(&script, cleanup_script(&dir)).expect("write cleanup.sh");
        // The watcher: waits for this process, then cleans up, in a session of its own.
        let watcher = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; sh '{script}'",
            pid = std::process::id(),
            script = script.display()
        );
        // `setsid -f` forks the watcher off and returns at once.
        Command::new("setsid")
            .args(["-f", "sh", "-c", &watcher])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("start the topology cleanup watcher");
        dir
    })
}

/// Stops every server started in `dir` (SIGQUIT: PostgreSQL's immediate shutdown; then SIGKILL
/// for whatever is left after 5 s) and removes the folder.
fn cleanup_script(dir: &Path) -> String {
    format!(
        r#"D='{dir}'
pids=""
for f in "$D"/*/postmaster.pid; do [ -f "$f" ] && pids="$pids $(head -n1 "$f")"; done
for f in "$D"/*.pid; do [ -f "$f" ] && pids="$pids $(cat "$f")"; done
for p in $pids; do kill -QUIT "$p" 2>/dev/null; done
for _ in $(seq 1 50); do
  alive=""; for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && break; sleep 0.1
done
for p in $pids; do kill -KILL "$p" 2>/dev/null; done
rm -rf "$D"
"#,
        dir = dir.display()
    )
}

/// The parts of the test server's URL PgBouncer needs.
struct Upstream {
    host: String,
    port: String,
    user: String,
    password: Option<String>,
}

fn upstream() -> Upstream {
    let url = pg_server_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let rest = rest.split(['/', '?']).next().unwrap_or("");
    let (info, hostport) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    let (user, password) = match info.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (info.to_string(), None),
    };
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    Upstream {
        host: if host.is_empty() { "127.0.0.1" } else { host }.to_string(),
        port: port.to_string(),
        user,
        password,
    }
}

/// PgBouncer in transaction pooling mode in front of the test server.
pub struct Bouncer {
    pub port: u16,
    user: String,
    password: Option<String>,
}

impl Bouncer {
    /// The URL of database `db` through PgBouncer.
    pub fn url(&self, db: &str) -> String {
        let auth = match &self.password {
            Some(p) => format!("{}:{p}", self.user),
            None => self.user.clone(),
        };
        format!("postgres://{auth}@127.0.0.1:{}/{db}", self.port)
    }
}

/// The shared PgBouncer, started on first use; `None` when the topology tests are skipped.
pub fn bouncer() -> Option<&'static Bouncer> {
    if skipped() {
        return None;
    }
    static BOUNCER: OnceLock<Bouncer> = OnceLock::new();
    Some(BOUNCER.get_or_init(start_bouncer))
}

fn start_bouncer() -> Bouncer {
    assert!(
        Path::new(PGBOUNCER).exists(),
        "{PGBOUNCER} is missing: install Debian's `pgbouncer` (apt-get install pgbouncer), or set \
         DBCTL_TEST_SKIP_TOPOLOGY=1"
    );
    let dir = base_dir();
    let up = upstream();
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let password = up
            .password
            .as_ref()
            .map_or(String::new(), |p| format!(" password={p}"));
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={host} port={uport} user={user}{password}\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
                 default_pool_size = {BOUNCER_POOL_SIZE}\nreserve_pool_size = 0\n\
                 max_client_conn = 1000\nlogfile = {dir}/pgbouncer.log\n\
                 pidfile = {dir}/pgbouncer.pid\nadmin_users = {user}\n",
                host = up.host,
                uport = up.port,
                user = up.user,
                dir = dir.display(),
            ),
        )
        .expect("write pgbouncer.ini");
        std::fs::write(dir.join("users.txt"), format!("\"{}\" \"\"\n", up.user))
            .expect("write users.txt");
        let out = as_server_user(PGBOUNCER)
            .arg("-d")
            .arg(&ini)
            .stdin(Stdio::null())
            .output()
            .expect("start pgbouncer");
        if out.status.success() && wait_for_port(port, Duration::from_secs(10)) {
            return Bouncer {
                port,
                user: up.user.clone(),
                password: up.password.clone(),
            };
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
        );
    }
    panic!("pgbouncer did not start:\n{last}");
}

fn wait_for_port(port: u16, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A primary of the tests' own and its streaming standby.
pub struct Pair {
    pub primary_port: u16,
    pub standby_port: u16,
}

impl Pair {
    pub fn primary_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.primary_port)
    }

    pub fn standby_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.standby_port)
    }

    pub fn primary(&self) -> PgConnection {
        PgConnection::establish(&self.primary_url("postgres")).expect("connect to the primary")
    }

    pub fn standby(&self) -> PgConnection {
        PgConnection::establish(&self.standby_url("postgres")).expect("connect to the standby")
    }

    /// Waits until the standby has replayed everything the primary has written so far.
    #[track_caller]
    pub fn wait_for_replay(&self) {
        #[derive(QueryableByName)]
        struct Lsn {
            #[diesel(sql_type = diesel::sql_types::Text)]
            lsn: String,
        }
        #[derive(QueryableByName)]
        struct Caught {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            ok: bool,
        }
        let target: Lsn = diesel::sql_query("SELECT pg_current_wal_lsn()::text AS lsn")
            .get_result(&mut self.primary())
            .expect("read the primary's WAL position");
        let mut standby = self.standby();
        let started = Instant::now();
        loop {
            let caught: Caught = diesel::sql_query(format!(
                "SELECT COALESCE(pg_last_wal_replay_lsn() >= '{}'::pg_lsn, false) AS ok",
                target.lsn
            ))
            .get_result(&mut standby)
            .expect("read the standby's replay position");
            if caught.ok {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the standby did not catch up within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The shared primary and standby, started on first use (about 4 s); `None` when skipped.
pub fn pair() -> Option<&'static Pair> {
    if skipped() {
        return None;
    }
    static PAIR: OnceLock<Pair> = OnceLock::new();
    Some(PAIR.get_or_init(start_pair))
}

fn start_pair() -> Pair {
    let initdb = format!("{}/initdb", pg_bin());
    assert!(
        Path::new(&initdb).exists(),
        "{initdb} is missing: install PostgreSQL 15's server binaries, or set DBCTL_TEST_SKIP_TOPOLOGY=1"
    );
    let dir = base_dir();
    let primary = dir.join("primary");
    let standby = dir.join("standby");
    let mut init = as_server_user(&initdb);
    init.arg("-D")
        .arg(&primary)
        .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        .stdout(Stdio::null());
    run_ok(init, "initdb");
    let primary_port = start_server(&primary, "primary");
    let mut backup = as_server_user(&format!("{}/pg_basebackup", pg_bin()));
    backup
        .args(["-h", "127.0.0.1", "-p", &primary_port.to_string()])
        .args(["-U", "postgres", "-D"])
        .arg(&standby)
        .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
    run_ok(backup, "pg_basebackup -R");
    let standby_port = start_server(&standby, "standby");
    Pair {
        primary_port,
        standby_port,
    }
}

/// Starts the cluster in `data` on a free port (a few tries: a port can be taken meanwhile).
fn start_server(data: &Path, name: &str) -> u16 {
    let dir = base_dir();
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let options = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c synchronous_commit=off -c max_connections=100 -c shared_buffers=16MB \
             -c wal_level=replica -c max_wal_senders=4 -c wal_receiver_status_interval=1s",
            dir = dir.display()
        );
        let log = dir.join(format!("{name}.log"));
        let out = as_server_user(&format!("{}/pg_ctl", pg_bin()))
            .arg("-D")
            .arg(data)
            .args(["-o", &options, "-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl");
        if out.status.success() {
            return port;
        }
        last = std::fs::read_to_string(&log).unwrap_or_default();
    }
    panic!("the {name} server did not start:\n{last}");
}

/// Creates database `name` on the pair's primary and waits until the standby has it.
pub fn create_on_pair(pair: &Pair, name: &str) {
    pair.primary()
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .expect("create the test database on the primary");
    pair.wait_for_replay();
}

/// Drops database `name` on the pair's primary.
pub fn drop_on_pair(pair: &Pair, name: &str) {
    if let Ok(mut c) = PgConnection::establish(&pair.primary_url("postgres")) {
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    }
}
