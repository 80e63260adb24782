//! The one place that knows the backends: URL to connection (`url`), the r2d2 pool,
//! per-connection setup (one dispatch point, [`establish`]), creating a missing database
//! (`create`), and the backend facts every engine shares: quoting, transaction state, a lock held
//! too long ([`is_lock_busy`]), the server's version and role (`topology`).
//!
//! Commands open a [`Database`] and take connections from it; when they need something
//! backend-specific they ask here ([`Backend`]'s methods, [`Database::create_if_missing`]) rather
//! than matching on the backend themselves. Errors are classified where they happen, by kind: a
//! missing database carries [`OpenError::MissingDatabase`], a refused connection exit 3.

pub(crate) mod backend;
pub(crate) mod create;
mod probe;
mod sqlite_ext;
pub(crate) mod topology;
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
pub(crate) use backend::Backend;
pub(crate) use url::{DbUrl, SqliteTarget};

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
    /// Whether a transaction-pooling proxy (PgBouncer) stands in between (`DB_PGBOUNCER`; the
    /// URL's `pgbouncer=` wins); `None`: find out.
    pub(crate) pgbouncer: Option<bool>,
    /// How long a pooled-mode migration lock outlives its holder's last heartbeat
    /// (`DB_LOCK_EXPIRY`).
    pub(crate) lock_expiry: Duration,
    /// PostgreSQL: the schema put alone on each connection's search_path (`DATABASE_SCHEMA`).
    pub(crate) schema: Option<String>,
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

/// Why a database could not be opened, where a caller may act on it. It rides in the error's
/// chain as a marker that prints as nothing (the message says it in words); [`OpenError::of`]
/// reads it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The database itself is not there: no SQLite file, or no such PostgreSQL database
    /// (`pg_database` says so).
    MissingDatabase,
}

impl OpenError {
    /// The kind marked on `err`, if any.
    pub(crate) fn of(err: &anyhow::Error) -> Option<OpenError> {
        err.downcast_ref::<OpenError>().copied()
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

/// Whether a statement failed because another connection held a lock for longer than it would
/// wait: SQLite's `SQLITE_BUSY` or `SQLITE_LOCKED`. (PostgreSQL's 55P03 and 40P01 reach diesel
/// as `DatabaseErrorKind::Unknown` without their SQLSTATE, so they cannot be told apart here.)
pub(crate) fn is_lock_busy(err: &diesel::result::Error) -> bool {
    matches!(err, diesel::result::Error::DatabaseError(_, info)
        if probe::message_is_busy(info.message()))
}

/// A database reached through an r2d2 pool.
pub(crate) struct Database {
    url: DbUrl,
    pool: r2d2::Pool<AnyManager>,
    connect_time: Duration,
    /// Whether a transaction-pooling proxy stands in between, and how that was decided.
    pooling: Pooling,
    lock_expiry: Duration,
    session: SessionSetup,
}

/// Whether dbctl works in transaction-pooling mode (PgBouncer and the like): no named prepared
/// statements, no session settings, and the migration lock is a lease row (`migrate::lease`).
#[derive(Clone, Debug)]
pub(crate) struct Pooling {
    pub(crate) on: bool,
    /// Why, in words, for `-v`.
    pub(crate) why: String,
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
            prepare_sqlite_file(url, path, mode)?;
        }
        let url = &choose_server(url, settings.connect_timeout)?;
        let session = SessionSetup {
            backend: url.backend(),
            conn_str: url.connection_string(settings.connect_timeout.as_secs()),
            redacted: url.redacted(),
            echo: settings.echo,
            statement_timeout: settings.statement_timeout,
            connect_timeout: settings.connect_timeout,
            schema: settings.schema.clone(),
            pooling: std::sync::Arc::new(std::sync::OnceLock::new()),
            explicit_pooling: explicit_pooling(url, settings),
            connected_port: url
                .server()
                .and_then(|s| s.rsplit_once(':').and_then(|(_, p)| p.parse::<i32>().ok())),
        };
        let started = Instant::now();
        if url.backend() == Backend::Sqlite {
            probe_sqlite(url, &session.conn_str, settings)?;
        }
        let mut first = establish_within(url, &session)?;
        let pooling = session.pooling.get().cloned().unwrap_or(Pooling {
            on: false,
            why: "SQLite".to_string(),
        });
        if let (AnyConnection::Postgresql(_), Some(schema)) = (&mut first, &settings.schema) {
            use_schema(&mut first, schema, mode, pooling.on)?;
        }
        let connect_time = started.elapsed();
        if pooling.on {
            set_pooled(settings);
        }
        let manager = AnyManager {
            url: url.clone(),
            session: session.clone(),
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
            pooling,
            lock_expiry: settings.lock_expiry,
            session,
        })
    }

    /// Whether dbctl works in transaction-pooling mode, and why.
    pub(crate) fn pooling(&self) -> &Pooling {
        &self.pooling
    }

    /// How long a pooled-mode migration lock outlives its holder's heartbeat.
    pub(crate) fn lock_expiry(&self) -> Duration {
        self.lock_expiry
    }

    /// A new connection of its own, outside the pool (the lock heartbeat's).
    pub(crate) fn dedicated(&self) -> anyhow::Result<AnyConnection> {
        establish_within(&self.url, &self.session)
    }

    /// A connection from the pool (the first call gets the one `open` made).
    pub(crate) fn get(&self) -> anyhow::Result<Pooled> {
        self.pool.get().map_err(|e| {
            error::connect(format!(
                "cannot get a connection to {}: {}",
                self.url.redacted(),
                error::redact_driver(&e.to_string())
            ))
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        self.url.backend()
    }

    pub(crate) fn url(&self) -> &DbUrl {
        &self.url
    }

    /// The PostgreSQL server the connections go to, as `host:port` (for a URL naming several, the
    /// one libpq chose); `None` for SQLite.
    pub(crate) fn server(&self) -> Option<String> {
        self.url.server()
    }

    /// How long the first connection took to establish.
    pub(crate) fn connect_time(&self) -> Duration {
        self.connect_time
    }
}

/// Transaction-pooling mode when the URL's `pgbouncer=` or `DB_PGBOUNCER` says it; `None`: find
/// out on the first connection.
fn explicit_pooling(url: &DbUrl, settings: &PoolSettings) -> Option<Pooling> {
    match (url.pgbouncer(), settings.pgbouncer) {
        (Some(on), _) => Some(Pooling {
            on,
            why: "the URL's pgbouncer= parameter".to_string(),
        }),
        (None, Some(on)) => Some(Pooling {
            on,
            why: "DB_PGBOUNCER".to_string(),
        }),
        (None, None) => None,
    }
}

/// Reads a SQLite database once before the pool exists. A file that is not a database opens fine
/// and fails at its first read; left to the pool, the connection setup would be retried for the
/// whole pool timeout (30 s of busy retries) before the same message came out. The busy timeout
/// comes first: another process committing must be waited for, not reported as a failure to open.
fn probe_sqlite(url: &DbUrl, conn_str: &str, settings: &PoolSettings) -> anyhow::Result<()> {
    let busy = settings.statement_timeout.unwrap_or(DEFAULT_SQLITE_BUSY);
    probe::probe(conn_str, busy).map_err(|e| {
        let msg = format!("cannot open {}: {}", url.redacted(), e.message);
        if e.is_busy() {
            anyhow::anyhow!(
                "{msg} (another process held it longer than the busy timeout, {:.1}s; see DB_STATEMENT_TIMEOUT)",
                busy.as_secs_f64()
            )
        } else {
            error::connect(msg)
        }
    })
}

/// For a URL naming several servers, lets libpq choose one by its own rules (order,
/// `target_session_attrs`, `load_balance_hosts`) and pins the URL to it: every pooled connection
/// then reaches the same server, and dbctl can say which one answered. Bounded by the connect
/// timeout like any connection.
fn choose_server(url: &DbUrl, timeout: Duration) -> anyhow::Result<DbUrl> {
    if url.host_count() < 2 {
        return Ok(url.clone());
    }
    let (tx, rx) = mpsc::channel();
    let conn_str = url.connection_string(timeout.as_secs());
    thread::spawn(move || {
        let _ = tx.send(url::libpq::choose_host(&conn_str));
    });
    let chosen = match rx.recv_timeout(timeout + Duration::from_millis(1500)) {
        Ok(Ok(chosen)) => chosen,
        Ok(Err(why)) => {
            return Err(error::connect(format!(
                "cannot connect to {}: {}",
                url.redacted(),
                error::redact_driver(&why)
            )))
        }
        Err(_) => {
            return Err(error::connect(format!(
                "cannot connect to {}: timed out after {:.1}s",
                url.redacted(),
                timeout.as_secs_f64()
            )))
        }
    };
    let mut pinned = url.clone();
    pinned.pin(chosen);
    Ok(pinned)
}

/// Decides transaction-pooling mode: the URL's `pgbouncer=`, then `DB_PGBOUNCER`, then a look at
/// the server: when the port the server itself listens on (`inet_server_port()`) is not the port
/// dbctl connected to, something stands in between (PgBouncer's 6432, or a port mapping: then the
/// pooled mode costs a little speed and stays correct). A pooler on the server's own port, or
/// reached over a Unix socket, is not seen: say so with `pgbouncer=true`.
fn pooling(setup: &SessionSetup, conn: &mut diesel::PgConnection) -> QueryResult<Pooling> {
    if let Some(explicit) = &setup.explicit_pooling {
        return Ok(explicit.clone());
    }
    #[derive(QueryableByName)]
    struct Port {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
        port: Option<i32>,
    }
    let row: Port = diesel::sql_query("SELECT inet_server_port() AS port").get_result(conn)?;
    Ok(match (row.port, setup.connected_port) {
        // Something stands in between. A pooler hands out a backend key of its own; a plain
        // TCP proxy passes the server's through: one more login tells them apart.
        (Some(server), Some(ours))
            if server != ours
                && url::libpq::backend_key_is_the_servers(&setup.conn_str) == Ok(false) =>
        {
            Pooling {
                on: true,
                why: format!(
                    "detected: connected to port {ours}, the server listens on {server}, and the \
                     login's backend key is not the server process's: a pooler in between; \
                     pgbouncer=false or DB_PGBOUNCER=false turns this off"
                ),
            }
        }
        _ => Pooling {
            on: false,
            why: "nothing between dbctl and the server was detected".to_string(),
        },
    })
}

/// The statement PostgreSQL sessions in pooled mode run at the start of each of dbctl's
/// transactions instead of once per session (a session setting would stay on the pool's server
/// connection, for other clients, and be missing on the next one).
static POOLED_TX_SETUP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Pooled mode on a connection: no named (cached) prepared statements, which live on one server
/// connection of the pool only.
fn set_pooled(settings: &PoolSettings) {
    let mut sql = String::new();
    if let Some(t) = settings.statement_timeout {
        sql.push_str(&format!("SET LOCAL statement_timeout = {};", t.as_millis()));
    }
    if let Some(schema) = &settings.schema {
        sql.push_str(&format!(
            "SET LOCAL search_path TO {};",
            quote_ident(schema)
        ));
    }
    if !sql.is_empty() {
        let _ = POOLED_TX_SETUP.set(sql);
    }
}

/// At the start of one of dbctl's own transactions: in pooled mode, the settings a direct session
/// gets once (`DB_STATEMENT_TIMEOUT`), for this transaction only.
pub(crate) fn pooled_transaction_setup(conn: &mut AnyConnection) -> QueryResult<()> {
    match POOLED_TX_SETUP.get() {
        Some(sql) if matches!(conn, AnyConnection::Postgresql(_)) => conn.batch_execute(sql),
        _ => Ok(()),
    }
}

/// SQLite creates a missing file on open; only `init` may do that, and only where the URL clearly
/// means one file. It also cannot create folders, and anything but a regular file (a device like
/// /dev/null, a FIFO, a folder) is not a database: SQLite would write `-journal` files beside it.
fn prepare_sqlite_file(url: &DbUrl, path: &std::path::Path, mode: OpenMode) -> anyhow::Result<()> {
    if let Some(readings) = url.sqlite_readings() {
        return Err(match mode {
            OpenMode::Existing => error::connect(format!(
                "SQLite database does not exist: {}, and neither file exists (run `dbctl init` to create one; {})",
                readings.both(),
                readings.how_to_write()
            ))
            .context(OpenError::MissingDatabase),
            OpenMode::Create => error::usage(format!(
                "not creating a SQLite database: {}, and neither file exists; {}",
                readings.both(),
                readings.how_to_write()
            )),
        });
    }
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let kind = file_kind(&meta);
            return Err(error::usage(format!(
                "`{}` is {kind}, not a SQLite database file",
                path.display()
            )));
        }
        Ok(_) => return Ok(()),
        Err(_) => {}
    }
    match mode {
        OpenMode::Existing => Err(error::connect(format!(
            "SQLite database `{}` does not exist (run `dbctl init` to create it)",
            path.display()
        ))
        .context(OpenError::MissingDatabase)),
        OpenMode::Create => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create folder `{}`", parent.display()))
                    .exit_with(Exit::Usage)?;
            }
            Ok(())
        }
    }
}

/// What a path that is not a regular file is, in words.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
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
    /// `DATABASE_SCHEMA`, put alone on the search path of every PostgreSQL session.
    schema: Option<String>,
    /// Transaction-pooling mode, decided on the first PostgreSQL connection and shared by the
    /// later ones.
    pooling: std::sync::Arc<std::sync::OnceLock<Pooling>>,
    /// The URL's `pgbouncer=` or `DB_PGBOUNCER`, when set.
    explicit_pooling: Option<Pooling>,
    /// The port dbctl connects to, for detecting a pooler.
    connected_port: Option<i32>,
}

/// How often the server checks, during a statement, that dbctl is still there (PostgreSQL 14's
/// `client_connection_check_interval`): a killed dbctl's statement is abandoned within this,
/// and with it the migration lock.
const CLIENT_CHECK_INTERVAL_MS: u32 = 2000;

/// A new connection, set up for dbctl: the one place that opens either backend.
fn establish(setup: &SessionSetup) -> ConnectionResult<AnyConnection> {
    match setup.backend {
        Backend::Postgres => establish_postgres(setup).map(AnyConnection::Postgresql),
        Backend::Sqlite => {
            sqlite_ext::install();
            diesel::SqliteConnection::establish(&setup.conn_str).map(AnyConnection::Sqlite)
        }
    }
}

/// A PostgreSQL connection: pooling mode decided on the first one, then either the pooled
/// setup or dbctl's session setup and the watchdog.
fn establish_postgres(setup: &SessionSetup) -> ConnectionResult<diesel::PgConnection> {
    let mut conn = diesel::PgConnection::establish(&setup.conn_str)?;
    let pooled = match setup.pooling.get() {
        Some(p) => p.on,
        None => {
            let decided =
                pooling(setup, &mut conn).map_err(ConnectionError::CouldntSetupConfiguration)?;
            let on = decided.on;
            let _ = setup.pooling.set(decided);
            on
        }
    };
    if pooled {
        // No named prepared statements (they live on one server connection of the pool), no
        // session settings (they would stay there for other clients: per transaction instead,
        // `pooled_transaction_setup`), and no watchdog or cancel by backend pid (the next
        // statement may run on another server connection). The time zone is a parameter the
        // pooler carries itself.
        conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
        conn.batch_execute("RESET TimeZone")
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        if setup.echo {
            conn.set_instrumentation(EchoSql);
        }
        return Ok(conn);
    }
    let pid = pg_session_setup(&mut conn, setup.statement_timeout, setup.schema.as_deref())
        .map_err(ConnectionError::CouldntSetupConfiguration)?;
    conn.set_instrumentation(watch::Watch::register(
        pid,
        &setup.conn_str,
        &setup.redacted,
        setup.connect_timeout,
        setup.echo,
    ));
    Ok(conn)
}

/// dbctl's PostgreSQL session: the time zone the server, the role, the database, `PGTZ` or the
/// URL's `options` configure (diesel's establish forces UTC; `RESET` goes back to exactly what
/// psql would have), the statement timeout, `DATABASE_SCHEMA` on the search path, and the
/// server-side check for a vanished client
/// (PostgreSQL 14 and later). Returns the backend's pid, for the watchdog and for cancelling.
fn pg_session_setup(
    conn: &mut diesel::PgConnection,
    statement_timeout: Option<Duration>,
    schema: Option<&str>,
) -> QueryResult<i32> {
    let mut sql = String::from("RESET TimeZone;");
    if let Some(t) = statement_timeout {
        sql.push_str(&format!(" SET statement_timeout = {};", t.as_millis()));
    }
    if let Some(schema) = schema {
        sql.push_str(&search_path_sql(schema));
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

/// A connection string is checked before it reaches the driver (`url`: dbctl's validator and
/// libpq's own parser), so what the driver says here is the server or the network: exit 3. Only
/// a string the driver cannot even hand to C (a NUL byte) is a usage error.
fn classify_connection_error(err: ConnectionError, url: &DbUrl) -> anyhow::Error {
    let usage = matches!(
        err,
        ConnectionError::InvalidConnectionUrl(_) | ConnectionError::InvalidCString(_)
    );
    let text = error::redact_driver(&err.to_string());
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

/// `DATABASE_SCHEMA`: that schema alone on the search path, so that unqualified names (the
/// migrations' tables, diesel's and dbctl's bookkeeping tables, seeded tables, inspect's default)
/// all resolve in it, as they would in `public` without it.
fn search_path_sql(schema: &str) -> String {
    format!("SET search_path TO {};", quote_ident(schema))
}

/// Checks that `DATABASE_SCHEMA` exists (`init` creates it), then puts it on the first
/// connection's search path. Without the check, a missing schema would leave no schema to create
/// tables in (or, with `public` also on the path, put them in `public` silently).
fn use_schema(
    conn: &mut AnyConnection,
    schema: &str,
    mode: OpenMode,
    pooled: bool,
) -> anyhow::Result<()> {
    if !pg_schema_exists(conn, schema)? {
        if mode == OpenMode::Existing {
            return Err(error::usage(format!(
                "schema {} (DATABASE_SCHEMA) is missing from this database; `dbctl init` creates it",
                quote_ident(schema)
            )));
        }
        conn.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .with_context(|| format!("creating schema {} (DATABASE_SCHEMA)", quote_ident(schema)))?;
    }
    // Pooled: per transaction instead (`pooled_transaction_setup`).
    if !pooled {
        conn.batch_execute(&search_path_sql(schema))
            .context("setting search_path to DATABASE_SCHEMA")?;
    }
    Ok(())
}

/// Whether a PostgreSQL schema of exactly this name exists.
pub(crate) fn pg_schema_exists(conn: &mut AnyConnection, schema: &str) -> anyhow::Result<bool> {
    pg_catalog_has(
        conn,
        "SELECT count(*)::bigint AS n FROM pg_catalog.pg_namespace WHERE nspname = $1",
        schema,
    )
    .context("looking up DATABASE_SCHEMA")
}

/// Whether a catalog query counting rows named `$1` (as `n`) finds any.
pub(super) fn pg_catalog_has(
    conn: &mut AnyConnection,
    count_sql: &str,
    name: &str,
) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let found: Found = diesel::sql_query(count_sql)
        .bind::<Text, _>(name)
        .get_result(conn)?;
    Ok(found.n > 0)
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

/// A table (or view) a seed file loads: its name, and on PostgreSQL its schema when the file
/// named one (`app.users.csv`); without a schema the name is looked up on the search path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableName {
    pub(crate) schema: Option<String>,
    pub(crate) name: String,
}

impl TableName {
    pub(crate) fn bare(name: impl Into<String>) -> TableName {
        TableName {
            schema: None,
            name: name.into(),
        }
    }
}

impl TableName {
    /// `"schema"."name"`, or `"name"`.
    pub(crate) fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

/// `schema.name`, or `name`, as people write it.
impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Whether the connection is still inside a transaction. Called after a statement failed, before
/// anything else is sent on the connection: some failures end the transaction on their own.
///
/// SQLite rolls the whole transaction back itself on SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM,
/// an interrupt or a trigger's `RAISE(ROLLBACK, ...)`; what follows then runs in autocommit mode.
/// The answer is `sqlite3_get_autocommit`, read through a function registered on every SQLite
/// connection dbctl opens (diesel does not hand out the raw handle); it reads no table.
/// PostgreSQL: libpq's transaction status (`PQtransactionStatus`, as diesel's transaction manager
/// keeps it), refreshed by an empty query. An aborted transaction is still open (it needs a
/// ROLLBACK); a lost or broken connection is an error: its state is unknown.
pub(crate) fn transaction_is_open(conn: &mut AnyConnection) -> QueryResult<bool> {
    match conn {
        AnyConnection::Sqlite(sq) => sqlite_transaction_is_open(sq),
        AnyConnection::Postgresql(pg) => pg_transaction_is_open(pg),
    }
}

/// [`transaction_is_open`] for a SQLite connection: `sqlite3_get_autocommit` is 0.
pub(crate) fn sqlite_transaction_is_open(sq: &mut diesel::SqliteConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Autocommit {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        autocommit: i32,
    }
    let row: Autocommit = diesel::sql_query(format!(
        "SELECT {}() AS autocommit",
        sqlite_ext::IN_AUTOCOMMIT
    ))
    .get_result(sq)?;
    Ok(row.autocommit == 0)
}

/// [`transaction_is_open`] for a PostgreSQL connection: libpq's status is in a transaction block
/// (idle or aborted); `Err` when the connection is broken.
///
/// diesel copies libpq's status into its transaction manager after each statement, but not after
/// a COPY; so the server is asked first with an empty query string, which runs nothing (it is
/// answered even in an aborted transaction) and leaves libpq's fresh status in diesel's manager.
///
/// diesel only keeps a depth for transactions it began; one opened by hand (the migration engine
/// sends `BEGIN` with the first statement) would read as none in an aborted block, or break the
/// manager. So when diesel knows of no transaction, it is told of one for the duration of the
/// probe: libpq's status then either keeps it (a block is open) or clears it (no block), and the
/// depth is put back as it was.
pub(crate) fn pg_transaction_is_open(pg: &mut diesel::PgConnection) -> QueryResult<bool> {
    use diesel::connection::{
        AnsiTransactionManager, TransactionDepthChange, TransactionManager,
        TransactionManagerStatus,
    };
    let lent = match AnsiTransactionManager::transaction_manager_status_mut(pg) {
        TransactionManagerStatus::Valid(valid) if valid.transaction_depth().is_none() => {
            valid.change_transaction_depth(TransactionDepthChange::IncreaseDepth)?;
            true
        }
        // Broken (the last statement lost the connection, say): the probe still tells a lost
        // connection from one that answers.
        TransactionManagerStatus::Valid(_) | TransactionManagerStatus::InError => false,
    };
    // The answer is always "empty query", an error to diesel; only the status it leaves matters,
    // unless the connection is gone: that error is the answer, kept for the caller to classify.
    if let Err(e) = pg.batch_execute("") {
        use diesel::result::{DatabaseErrorKind, Error};
        if matches!(
            e,
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _
            )
        ) {
            return Err(e);
        }
    }
    let status = AnsiTransactionManager::transaction_manager_status_mut(pg);
    let open = status.transaction_depth()?.is_some();
    if lent && open {
        if let TransactionManagerStatus::Valid(valid) = status {
            valid.change_transaction_depth(TransactionDepthChange::DecreaseDepth)?;
        }
    }
    Ok(open)
}

/// Registers the probe functions [`sqlite_transaction_is_open`] and [`sqlite_transactions_ended`]
/// call on every SQLite connection opened from now on ([`establish`] does this itself).
#[cfg(test)]
pub(crate) fn install_sqlite_probe() {
    sqlite_ext::install();
}

/// How many transactions have ended on a SQLite connection (commits and rollbacks, including
/// those SQLite does itself): a different count means a different transaction.
pub(crate) fn sqlite_transactions_ended(sq: &mut diesel::SqliteConnection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Ended {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        ended: i64,
    }
    let row: Ended = diesel::sql_query(format!(
        "SELECT {}() AS ended",
        sqlite_ext::TRANSACTIONS_ENDED
    ))
    .get_result(sq)?;
    Ok(row.ended)
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

    #[test]
    fn transaction_state_is_read_from_sqlite() {
        use super::{transaction_is_open, AnyConnection};
        use diesel::connection::SimpleConnection as _;
        use diesel::Connection as _;
        super::install_sqlite_probe();
        let mut conn =
            AnyConnection::Sqlite(diesel::SqliteConnection::establish(":memory:").unwrap());
        assert!(!transaction_is_open(&mut conn).unwrap());
        assert!(
            !transaction_is_open(&mut conn).unwrap(),
            "the probe left nothing open"
        );
        conn.batch_execute("CREATE TABLE t (id INTEGER); BEGIN; INSERT INTO t VALUES (1)")
            .unwrap();
        assert!(transaction_is_open(&mut conn).unwrap());
        assert!(conn.batch_execute("INSERT INTO nosuch VALUES (1)").is_err());
        assert!(
            transaction_is_open(&mut conn).unwrap(),
            "a plain error keeps it"
        );
        conn.batch_execute(
            "CREATE TRIGGER tr BEFORE INSERT ON t BEGIN SELECT RAISE(ROLLBACK, 'no'); END",
        )
        .unwrap();
        assert!(conn.batch_execute("INSERT INTO t VALUES (2)").is_err());
        assert!(
            !transaction_is_open(&mut conn).unwrap(),
            "RAISE(ROLLBACK) ended it"
        );
        conn.batch_execute("BEGIN; COMMIT").unwrap();
        assert!(!transaction_is_open(&mut conn).unwrap());
    }

    /// PostgreSQL (`DBCTL_TEST_PG_URL`, skipped with a line when `DBCTL_TEST_SKIP_PG=1`).
    #[test]
    fn transaction_state_is_read_from_postgres() {
        use super::{transaction_is_open, AnyConnection};
        use diesel::connection::SimpleConnection as _;
        use diesel::Connection as _;
        if std::env::var("DBCTL_TEST_SKIP_PG").is_ok_and(|v| v == "1" || v == "true") {
            eprintln!("skipping: DBCTL_TEST_SKIP_PG is set");
            return;
        }
        let url = std::env::var("DBCTL_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let mut conn = AnyConnection::Postgresql(diesel::PgConnection::establish(&url).unwrap());
        for _ in 0..20 {
            assert!(!transaction_is_open(&mut conn).unwrap(), "no block");
        }
        conn.batch_execute("BEGIN; SELECT 1").unwrap();
        for _ in 0..3 {
            assert!(transaction_is_open(&mut conn).unwrap(), "in a block");
        }
        assert!(conn.batch_execute("SELECT 1/0").is_err());
        assert!(transaction_is_open(&mut conn).unwrap(), "a failed block");
        conn.batch_execute("ROLLBACK").unwrap();
        assert!(!transaction_is_open(&mut conn).unwrap());
        conn.batch_execute("BEGIN; CREATE TEMP TABLE probe_t (id int); COMMIT")
            .unwrap();
        assert!(!transaction_is_open(&mut conn).unwrap(), "after COMMIT");
    }
}
