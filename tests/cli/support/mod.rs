//! The test builder: a temporary project folder, a fresh database per test (a SQLite file in the
//! folder, or a uniquely named PostgreSQL database dropped on `Drop`), and the real `dbctl` binary.
//!
//! PostgreSQL comes from `DBCTL_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! When it cannot be reached the PostgreSQL tests fail, unless `DBCTL_TEST_SKIP_PG=1` is set.

#![allow(dead_code)]

pub mod topology;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server URL the PostgreSQL tests use (a maintenance database on it).
pub fn pg_server_url() -> String {
    std::env::var("DBCTL_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// Whether PostgreSQL tests were explicitly turned off.
pub fn pg_skipped() -> bool {
    std::env::var("DBCTL_TEST_SKIP_PG").is_ok_and(|v| v == "1" || v == "true")
}

/// `server_url` with another database name.
pub fn pg_url_for(db: &str) -> String {
    let server = pg_server_url();
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (server.clone(), String::new()),
    };
    let slash = base[base.find("://").map_or(0, |i| i + 3)..]
        .find('/')
        .map(|i| i + base.find("://").map_or(0, |j| j + 3));
    let host = match slash {
        Some(i) => &base[..i],
        None => base.as_str(),
    };
    format!("{host}/{db}{query}")
}

/// Percent-encodes everything but ASCII letters, digits and `_` (for names put into a URL).
pub fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique name for a test database.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// The vaultwarden corpus (`sqlite/`, `postgresql/` inside): `../shared/corpus/vaultwarden` beside
/// the repository, or `DBCTL_CORPUS_DIR`. `None`, with a line on stderr saying that `test` skips
/// and why, when it is not there: the corpus is shared material, not part of the repository.
pub fn vaultwarden(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("DBCTL_CORPUS_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/vaultwarden"),
    };
    if dir.join("sqlite").is_dir() && dir.join("postgresql").is_dir() {
        return Some(dir);
    }
    // Straight to the process's stderr, past the test harness's capture: a skip must be seen.
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!(
            "skipping {test}: no vaultwarden corpus at {} (set DBCTL_CORPUS_DIR to a folder \
             holding sqlite/ and postgresql/)\n",
            dir.display()
        ),
    );
    None
}

/// The vaultwarden migrations folder for `backend` (see [`vaultwarden`]).
pub fn vaultwarden_for(backend: Backend, test: &str) -> Option<PathBuf> {
    let folder = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgresql",
    };
    vaultwarden(test).map(|dir| dir.join(folder))
}

/// A connection to the PostgreSQL server's maintenance database; panics with a clear message when
/// the server is down (the tests must not pass silently).
pub fn pg_admin() -> PgConnection {
    let url = pg_server_url();
    PgConnection::establish(&url).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url}: {e}\n\
             start it (see README.md) or set DBCTL_TEST_SKIP_PG=1 to skip the PostgreSQL tests"
        )
    })
}

/// A temporary project: a folder with its own migrations, seeds and database.
pub struct Project {
    dir: tempfile::TempDir,
    pub backend: Backend,
    url: String,
    pg_db: Option<String>,
    /// The maintenance URL of the server holding `pg_db` (where it is dropped).
    admin_url: String,
    env: Vec<(String, String)>,
    version_counter: usize,
    via: Option<String>,
}

impl Project {
    pub fn new(backend: Backend) -> Option<Project> {
        match backend {
            Backend::Sqlite => Some(Project::sqlite()),
            Backend::Postgres => Project::postgres(),
        }
    }

    /// A project whose database is `test.db` in the project folder (not created yet: run `init`).
    /// The URL is the plain absolute path: `sqlite:///tmp/...` could also be read as relative
    /// (SQLAlchemy's reading), and `init` refuses to guess.
    pub fn sqlite() -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = dir.path().join("test.db").display().to_string();
        Project {
            dir,
            backend: Backend::Sqlite,
            url,
            pg_db: None,
            admin_url: String::new(),
            env: Vec::new(),
            version_counter: 0,
            via: None,
        }
    }

    /// A project with a fresh, empty PostgreSQL database (created now, dropped on `Drop`), or
    /// `None` when `DBCTL_TEST_SKIP_PG=1`.
    pub fn postgres() -> Option<Project> {
        if pg_skipped() {
            eprintln!("skipping a PostgreSQL test: DBCTL_TEST_SKIP_PG is set");
            return None;
        }
        let name = unique_name("dbctl_test");
        pg_admin()
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create test database");
        Some(Project {
            dir: tempfile::tempdir().expect("temp dir"),
            backend: Backend::Postgres,
            url: pg_url_for(&name),
            pg_db: Some(name),
            admin_url: pg_server_url(),
            env: Vec::new(),
            version_counter: 0,
            via: None,
        })
    }

    /// A project whose database `name` already exists on another server, reached by `url` and
    /// dropped through `admin_url` (a maintenance database on that server) on `Drop`.
    pub fn postgres_at(url: String, admin_url: String, name: String) -> Project {
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
            backend: Backend::Postgres,
            url,
            pg_db: Some(name),
            admin_url,
            env: Vec::new(),
            version_counter: 0,
            via: None,
        }
    }

    /// Sends the project's commands to another URL (PgBouncer, a standby, several hosts); the
    /// database is still dropped where it was created. `connect` keeps the direct URL.
    pub fn use_url(&mut self, url: &str) {
        self.via = Some(url.to_string());
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The database URL the project's commands use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PostgreSQL database name, if any.
    pub fn pg_database(&self) -> Option<&str> {
        self.pg_db.as_deref()
    }

    /// Writes a file (folders created) relative to the project folder.
    pub fn file(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Adds `migrations/<version>_<name>/up.sql` and `down.sql` (no down.sql when `down` is None),
    /// with increasing versions. Returns the version.
    pub fn migration(&mut self, name: &str, up: &str, down: Option<&str>) -> String {
        self.version_counter += 1;
        let version = format!("2024-01-01-{:06}", self.version_counter);
        self.migration_folder(&format!("{version}_{name}"), up, down);
        version.replace('-', "")
    }

    /// Writes `migrations/<folder>/up.sql` (and down.sql when given), the folder named exactly.
    pub fn migration_folder(&self, folder: &str, up: &str, down: Option<&str>) {
        self.file(&format!("migrations/{folder}/up.sql"), up);
        if let Some(down) = down {
            self.file(&format!("migrations/{folder}/down.sql"), down);
        }
    }

    /// The versions recorded in diesel's table, in order.
    pub fn applied(&self) -> Vec<String> {
        self.strings("SELECT version AS v FROM __diesel_schema_migrations ORDER BY version")
            .into_iter()
            .flatten()
            .collect()
    }

    /// Copies a folder of the repository's example app (`migrations`, `seeds`) into the project.
    pub fn copy_example(&self, folder: &str) {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).expect("mkdir");
            for entry in std::fs::read_dir(from).expect("read example folder") {
                let entry = entry.expect("entry");
                let target = to.join(entry.file_name());
                if entry.path().is_dir() {
                    copy(&entry.path(), &target);
                } else {
                    std::fs::copy(entry.path(), target).expect("copy example file");
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy(&root.join(folder), &self.dir.path().join(folder));
    }

    /// Sets an environment variable for every command this project runs.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// A `dbctl` command run in the project folder, with the database URL in `DATABASE_URL` and a
    /// clean environment (no DATABASE_URL or DB_* inherited from the caller).
    pub fn command(&self) -> Command {
        let mut cmd = dbctl();
        cmd.current_dir(self.dir.path());
        cmd.env("DATABASE_URL", self.via.as_deref().unwrap_or(&self.url));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `dbctl ARGS` in the project.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Run::from(self.command().args(args).output().expect("run dbctl"))
    }

    /// `dbctl init --no-migrate`, which must succeed: the database and bookkeeping are ready.
    pub fn init(&self) -> &Self {
        self.run(["init", "--no-migrate"]).success();
        self
    }

    /// `init --no-migrate -q` (plus `extra`) with no `DATABASE_URL` in the environment, to see
    /// which database a run picks from its other settings.
    pub fn init_without_url(&self, extra: &[&str]) -> Run {
        let mut cmd = self.command();
        cmd.env_remove("DATABASE_URL");
        cmd.args(["init", "--no-migrate", "-q"]).args(extra);
        Run::from(cmd.output().expect("run dbctl"))
    }

    /// A direct connection for checking what is in the database.
    pub fn connect(&self) -> Conn {
        match self.backend {
            Backend::Sqlite => Conn::Sqlite(
                SqliteConnection::establish(&self.url).expect("open sqlite test database"),
            ),
            Backend::Postgres => {
                Conn::Pg(PgConnection::establish(&self.url).expect("connect to test database"))
            }
        }
    }

    /// Runs SQL directly (not through dbctl).
    pub fn execute(&self, sql: &str) {
        self.connect().execute(sql);
    }

    /// A single integer (`SELECT count(*) ...`); the query must return one column named `n`.
    pub fn count(&self, sql: &str) -> i64 {
        self.connect().count(sql)
    }

    /// Whether a table exists.
    pub fn has_table(&self, table: &str) -> bool {
        let sql = match self.backend {
            Backend::Sqlite => format!(
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
            ),
            Backend::Postgres => format!(
                "SELECT count(*)::bigint AS n FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_name = '{table}'"
            ),
        };
        self.count(&sql) > 0
    }

    /// Strings from a one-column query whose column is named `v`.
    pub fn strings(&self, sql: &str) -> Vec<Option<String>> {
        self.connect().strings(sql)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_db {
            if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
            }
        }
    }
}

/// A direct test connection to either backend.
pub enum Conn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Str {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

impl Conn {
    pub fn execute(&mut self, sql: &str) {
        match self {
            Conn::Sqlite(c) => c.batch_execute(sql),
            Conn::Pg(c) => c.batch_execute(sql),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn count(&mut self, sql: &str) -> i64 {
        let q = diesel::sql_query(sql);
        let row: Count = match self {
            Conn::Sqlite(c) => q.get_result(c),
            Conn::Pg(c) => q.get_result(c),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.n
    }

    pub fn strings(&mut self, sql: &str) -> Vec<Option<String>> {
        let q = diesel::sql_query(sql);
        let rows: Vec<Str> = match self {
            Conn::Sqlite(c) => q.load(c),
            Conn::Pg(c) => q.load(c),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().map(|r| r.v).collect()
    }
}

/// How a fake PostgreSQL server on a local port of its own treats a connection.
#[derive(Clone, Copy)]
pub enum FakeServer {
    /// Nothing listens: the port was bound, then let go.
    ClosedPort,
    /// Accepts, then hangs up at once.
    HangUp,
    /// Accepts and keeps the socket open, never answering.
    Silent,
}

impl FakeServer {
    /// Starts the server (on a thread that lives as long as the test process); returns its port.
    pub fn start(self) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        match self {
            FakeServer::ClosedPort => drop(listener),
            FakeServer::HangUp => {
                std::thread::spawn(move || {
                    for s in listener.incoming().flatten() {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                });
            }
            FakeServer::Silent => {
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for s in listener.incoming().flatten() {
                        held.push(s);
                    }
                });
            }
        }
        port
    }

    /// A URL of a database on a newly started server of this kind.
    pub fn url(self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/nowhere", self.start())
    }
}

/// The `dbctl` binary with an environment free of the caller's database settings.
pub fn dbctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbctl"));
    for (key, _) in std::env::vars() {
        if key.starts_with("DATABASE_")
            || key.starts_with("DB_")
            || key.starts_with("DBCTL_")
            || key == "MIGRATION_DIRECTORY"
            || key == "DIESEL_CONFIG_FILE"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// What a run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            // A signal death has no code: -1 never matches an expected one.
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing the output when it differs; also asserts no panic.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert!(
            !self.stderr.contains("panicked at"),
            "dbctl panicked:\n{}",
            self.stderr
        );
        assert_eq!(
            self.code, expected,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.code(0)
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    /// Asserts that `secret` appears in no byte of stdout or stderr.
    #[track_caller]
    pub fn no_secret(&self, secret: &str) -> &Self {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the secret {secret:?} leaked:\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Declares a test that runs once per backend: `both_backends!(name, |p: Project| { ... });`
/// gives `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                let body: fn($crate::support::Project) = $body;
                body($crate::support::Project::sqlite());
            }

            #[test]
            fn postgres() {
                let body: fn($crate::support::Project) = $body;
                if let Some(p) = $crate::support::Project::postgres() {
                    body(p);
                }
            }
        }
    };
}
