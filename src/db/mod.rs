//! The one place that knows the backends: URL to connection, the r2d2 pool, per-connection setup,
//! and the few operations whose SQL differs between SQLite and PostgreSQL.
//!
//! Commands open a [`Database`] and take connections from it; when they need something
//! backend-specific they call a function here rather than matching on the backend themselves.

pub(crate) mod catalog;
pub(crate) mod migrations;
pub(crate) mod seed;
mod sqlite_ext;
pub(crate) mod url;
pub(crate) mod watch;

use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::{self, CustomizeConnection, ManageConnection, R2D2Connection};
use diesel::sql_types::{Integer, Text};

use crate::error::{self, Exit, ResultExt as _};
pub(crate) use url::{Backend, DbUrl, SqliteTarget};

/// A connection to either backend.
#[derive(diesel::MultiConnection)]
pub(crate) enum AnyConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

pub(crate) type Pooled = r2d2::PooledConnection<AnyManager>;

/// Pool and connection settings (`DB_POOL_*`, `DB_ECHO`, `DB_STATEMENT_TIMEOUT`, ...).
#[derive(Clone, Debug)]
pub(crate) struct PoolSettings {
    /// r2d2's max size (`DB_POOL_SIZE`).
    pub(crate) size: u32,
    /// How long to wait for a free pooled connection (`DB_POOL_TIMEOUT`).
    pub(crate) timeout: Duration,
    /// Connections older than this are closed and replaced (`DB_POOL_RECYCLE`; 0 turns it off).
    pub(crate) recycle: Option<Duration>,
    /// Test each connection with a round trip when it is taken from the pool (`DB_POOL_PRE_PING`).
    pub(crate) pre_ping: bool,
    /// Log every SQL statement to stderr (`DB_ECHO`).
    pub(crate) echo: bool,
    /// PostgreSQL's statement_timeout and SQLite's busy timeout (`DB_STATEMENT_TIMEOUT`).
    pub(crate) statement_timeout: Option<Duration>,
    /// Bound on each connection attempt (`DB_CONNECT_TIMEOUT`, `ping --timeout`).
    pub(crate) connect_timeout: Duration,
}

/// SQLite's busy timeout when `DB_STATEMENT_TIMEOUT` is not set: long enough to wait out another
/// writer's transaction, short enough that a stuck lock is reported.
const DEFAULT_SQLITE_BUSY: Duration = Duration::from_secs(5);

/// Whether opening may create the database (only `init` may; everything else reports it missing).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    Existing,
    Create,
}

/// A database reached through an r2d2 pool.
pub(crate) struct Database {
    url: DbUrl,
    pool: r2d2::Pool<AnyManager>,
    connect_time: Duration,
}

impl Database {
    /// Connects once, directly and within the connect timeout, so that a bad URL or a dead server
    /// fails at once with the real message; that first connection becomes the pool's first, so a
    /// command that needs one connection opens exactly one.
    pub(crate) fn open(
        url: &DbUrl,
        settings: &PoolSettings,
        mode: OpenMode,
    ) -> anyhow::Result<Self> {
        if let Some(SqliteTarget::File(path)) = url.sqlite_target() {
            prepare_sqlite_file(path, mode)?;
        }
        let session = SessionSetup {
            backend: url.backend(),
            conn_str: url.connection_string(settings.connect_timeout.as_secs()),
            redacted: url.redacted(),
            echo: settings.echo,
            statement_timeout: settings.statement_timeout,
            connect_timeout: settings.connect_timeout,
        };
        let started = Instant::now();
        let mut first = establish_within(url, &session)?;
        if let AnyConnection::Sqlite(conn) = &mut first {
            // A file that is not a database opens fine and fails at its first read; left to the
            // pool, the connection setup would be retried for the whole pool timeout (30 s of
            // busy retries) before the same message came out.
            // The busy timeout comes first: another process committing must be waited for, not
            // reported as a failure to open.
            let busy = settings.statement_timeout.unwrap_or(DEFAULT_SQLITE_BUSY);
            let probe = format!(
                "PRAGMA busy_timeout = {}; SELECT count(*) FROM sqlite_master",
                busy.as_millis()
            );
            conn.batch_execute(&probe).map_err(|e| {
                let msg = format!("cannot open {}: {e}", url.redacted());
                if e.to_string().contains("locked") {
                    anyhow::anyhow!(
                        "{msg} (another process held it longer than the busy timeout, {:.1}s; see DB_STATEMENT_TIMEOUT)",
                        busy.as_secs_f64()
                    )
                } else {
                    error::connect(msg)
                }
            })?;
        }
        let connect_time = started.elapsed();
        let manager = AnyManager {
            url: url.clone(),
            session,
            first: Mutex::new(Some(first)),
        };
        let pool = r2d2::Pool::builder()
            .max_size(settings.size)
            .min_idle(Some(0))
            .connection_timeout(settings.timeout)
            .max_lifetime(settings.recycle)
            .idle_timeout(None)
            .test_on_check_out(settings.pre_ping)
            .connection_customizer(Box::new(Setup {
                backend: url.backend(),
                echo: settings.echo,
                statement_timeout: settings.statement_timeout,
            }))
            .build_unchecked(manager);
        Ok(Database {
            url: url.clone(),
            pool,
            connect_time,
        })
    }

    /// A connection from the pool (the first call gets the one `open` made).
    pub(crate) fn get(&self) -> anyhow::Result<Pooled> {
        self.pool.get().map_err(|e| {
            error::connect(format!(
                "cannot get a connection to {}: {e}",
                self.url.redacted()
            ))
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        self.url.backend()
    }

    pub(crate) fn url(&self) -> &DbUrl {
        &self.url
    }

    /// How long the first connection took to establish.
    pub(crate) fn connect_time(&self) -> Duration {
        self.connect_time
    }
}

/// SQLite creates a missing file on open; only `init` may do that. It also cannot create folders.
fn prepare_sqlite_file(path: &std::path::Path, mode: OpenMode) -> anyhow::Result<()> {
    match mode {
        OpenMode::Existing if !path.exists() => Err(error::connect(format!(
            "SQLite database `{}` does not exist (run `dbctl init` to create it)",
            path.display()
        ))),
        OpenMode::Create => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create folder `{}`", parent.display()))
                    .exit_with(Exit::Usage)?;
            }
            Ok(())
        }
        OpenMode::Existing => Ok(()),
    }
}

/// Connects and sets the session up on a helper thread, and gives up after the connect timeout:
/// libpq's own connect_timeout does not bound name resolution, nor the statements diesel and
/// dbctl run once connected, and a command must never hang on a dead or silent server.
fn establish_within(url: &DbUrl, session: &SessionSetup) -> anyhow::Result<AnyConnection> {
    let (tx, rx) = mpsc::channel();
    let setup = session.clone();
    thread::spawn(move || {
        let _ = tx.send(establish(&setup));
    });
    let timeout = session.connect_timeout;
    // libpq rounds its timeout up to whole seconds; leave it room to report its own error first.
    match rx.recv_timeout(timeout + Duration::from_millis(1500)) {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(classify_connection_error(e, url)),
        Err(_) => Err(error::connect(format!(
            "cannot connect to {}: timed out after {:.1}s",
            url.redacted(),
            timeout.as_secs_f64()
        ))),
    }
}

/// What every new connection is given, in the thread that opens it.
#[derive(Clone)]
struct SessionSetup {
    backend: Backend,
    /// Holds the password: never printed.
    conn_str: String,
    redacted: String,
    echo: bool,
    statement_timeout: Option<Duration>,
    connect_timeout: Duration,
}

/// How often the server checks, during a statement, that dbctl is still there (PostgreSQL 14's
/// `client_connection_check_interval`): a killed dbctl's statement is abandoned within this,
/// and with it the migration lock.
const CLIENT_CHECK_INTERVAL_MS: u32 = 2000;

fn establish(setup: &SessionSetup) -> ConnectionResult<AnyConnection> {
    match setup.backend {
        Backend::Postgres => {
            let mut conn = diesel::PgConnection::establish(&setup.conn_str)?;
            let pid = pg_session_setup(&mut conn, setup.statement_timeout)
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            conn.set_instrumentation(watch::Watch::register(
                pid,
                &setup.conn_str,
                &setup.redacted,
                setup.connect_timeout,
                setup.echo,
            ));
            Ok(AnyConnection::Postgresql(conn))
        }
        Backend::Sqlite => {
            sqlite_ext::install();
            Ok(AnyConnection::Sqlite(diesel::SqliteConnection::establish(
                &setup.conn_str,
            )?))
        }
    }
}

/// dbctl's PostgreSQL session: the time zone the server, the role, the database, `PGTZ` or the
/// URL's `options` configure (diesel's establish forces UTC; `RESET` goes back to exactly what
/// psql would have), the statement timeout, and the server-side check for a vanished client
/// (PostgreSQL 14 and later). Returns the backend's pid, for the watchdog and for cancelling.
fn pg_session_setup(
    conn: &mut diesel::PgConnection,
    statement_timeout: Option<Duration>,
) -> QueryResult<i32> {
    let mut sql = String::from("RESET TimeZone");
    if let Some(t) = statement_timeout {
        sql.push_str(&format!("; SET statement_timeout = {}", t.as_millis()));
    }
    conn.batch_execute(&sql)?;
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let row: Pid = diesel::sql_query(format!(
        "SELECT pg_backend_pid() AS pid, CASE WHEN current_setting('server_version_num')::int >= 140000 \
         THEN set_config('client_connection_check_interval', '{CLIENT_CHECK_INTERVAL_MS}', false) END AS checked"
    ))
    .get_result(conn)?;
    Ok(row.pid)
}

/// A bad URL or option is a usage error (2); anything the server or network said is exit 3.
fn classify_connection_error(err: ConnectionError, url: &DbUrl) -> anyhow::Error {
    let text = err.to_string();
    let usage = matches!(
        err,
        ConnectionError::InvalidConnectionUrl(_) | ConnectionError::InvalidCString(_)
    ) || text.starts_with("invalid ")
        || text.contains("invalid connection option")
        || text.contains("invalid URI")
        || text.contains("sslmode value");
    let msg = format!("cannot connect to {}: {}", url.redacted(), text.trim());
    if usage {
        error::usage(msg)
    } else {
        error::connect(msg)
    }
}

/// The pool's connection manager: chooses the backend from the URL (never by trial) and hands out
/// the pre-flight connection first.
pub(crate) struct AnyManager {
    url: DbUrl,
    session: SessionSetup,
    first: Mutex<Option<AnyConnection>>,
}

impl std::fmt::Debug for AnyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnyManager({})", self.session.redacted)
    }
}

impl ManageConnection for AnyManager {
    type Connection = AnyConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, r2d2::Error> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        match first {
            Some(conn) => Ok(conn),
            // Bounded like the first connection, so a server that goes silent cannot hang a
            // pool worker (or `get`) for longer than the connect timeout.
            None => establish_within(&self.url, &self.session).map_err(|e| {
                let text = error::render(&e);
                let text = text.trim_start_matches("error: ").to_string();
                r2d2::Error::ConnectionError(ConnectionError::BadConnection(text))
            }),
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// Per-connection setup of SQLite: SQL logging, foreign keys and busy timeout. (PostgreSQL
/// sessions are set up where they are opened, within the connect timeout: `pg_session_setup`.)
#[derive(Debug)]
struct Setup {
    backend: Backend,
    echo: bool,
    statement_timeout: Option<Duration>,
}

impl CustomizeConnection<AnyConnection, r2d2::Error> for Setup {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        if self.echo {
            conn.set_instrumentation(EchoSql);
        }
        let busy = self.statement_timeout.unwrap_or(DEFAULT_SQLITE_BUSY);
        let sql = format!(
            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {};",
            busy.as_millis()
        );
        conn.batch_execute(&sql).map_err(r2d2::Error::QueryError)
    }
}

/// `DB_ECHO`: every statement to stderr, redacted like everything else dbctl prints.
struct EchoSql;

impl Instrumentation for EchoSql {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            eprintln!("{}", error::redact(&format!("[sql] {query}")));
        }
    }
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The server's version: PostgreSQL's `server_version`, SQLite's library version.
pub(crate) fn server_version(conn: &mut AnyConnection) -> anyhow::Result<String> {
    let sql = match conn {
        AnyConnection::Postgresql(_) => "SELECT current_setting('server_version') AS value",
        AnyConnection::Sqlite(_) => "SELECT sqlite_version() AS value",
    };
    let row: TextRow = diesel::sql_query(sql)
        .get_result(conn)
        .context("reading the server version")?;
    Ok(row.value)
}

/// Quotes an identifier for either backend (both use SQL's double quotes).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether a PostgreSQL database exists, asked through a connection to another one.
pub(crate) fn pg_database_exists(conn: &mut AnyConnection, name: &str) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let found: Found =
        diesel::sql_query("SELECT count(*)::bigint AS n FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(name)
            .get_result(conn)
            .context("looking up the database in pg_database")?;
    Ok(found.n > 0)
}

/// `CREATE DATABASE` with the name quoted (it cannot be a bound parameter). `Ok(false)` when
/// another session created it meanwhile: the unique violation (23505) on `pg_database` that a
/// concurrent creation gives, or any failure after which the database is there (that is
/// `duplicate_database`, 42P04, which diesel does not tell apart by kind).
pub(crate) fn pg_create_database(conn: &mut AnyConnection, name: &str) -> anyhow::Result<bool> {
    use diesel::result::{DatabaseErrorKind, Error};
    match conn.batch_execute(&format!("CREATE DATABASE {}", quote_ident(name))) {
        Ok(()) => Ok(true),
        Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(e) => {
            if pg_database_exists(conn, name)? {
                Ok(false)
            } else {
                Err(e).with_context(|| format!("creating database `{name}`"))
            }
        }
    }
}

/// Whether a table exists (PostgreSQL: visible on the search path; SQLite: in `main`).
pub(crate) fn table_exists(conn: &mut AnyConnection, name: &str) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let query = match conn {
        AnyConnection::Postgresql(_) => {
            "SELECT count(*)::bigint AS n FROM pg_catalog.pg_class c \
             WHERE c.relname = $1 AND c.relkind IN ('r', 'p') AND pg_catalog.pg_table_is_visible(c.oid)"
        }
        AnyConnection::Sqlite(_) => {
            "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1"
        }
    };
    let found: Found = diesel::sql_query(query)
        .bind::<Text, _>(name)
        .get_result(conn)
        .with_context(|| format!("looking for table {name}"))?;
    Ok(found.n > 0)
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("users"), "\"users\"");
        assert_eq!(
            quote_ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
    }
}
