//! Where a PostgreSQL connection landed: whether the server is a primary or a read-only standby,
//! how far a standby's replay lags behind what it has heard from its upstream, and the guard that
//! stops a writing command before it does anything on a server that cannot take writes.
//!
//! Which of a multi-host URL's servers answered is found when the database is opened
//! (`Database::open`, through libpq's own choice); this module only asks the server about itself.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
use serde::Serialize;

use super::{AnyConnection, Database};
use crate::error::{self, Exit};

/// A PostgreSQL server's part in replication.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Primary,
    Standby,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        })
    }
}

/// What a server says about its role (`pg_is_in_recovery`, `transaction_read_only`) and, for a
/// standby, its replication.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct ServerRole {
    pub(crate) role: Role,
    /// Whether a write would be accepted: a primary whose sessions are not read-only
    /// (`default_transaction_read_only`).
    pub(crate) writable: bool,
    /// Standby only: how old the last replayed commit is while WAL is still waiting to be
    /// replayed (0 when all WAL received is replayed); `None` when unknown.
    pub(crate) replay_lag_ms: Option<f64>,
    /// Standby only: bytes of WAL the upstream has reported and this standby has not replayed.
    pub(crate) replay_lag_bytes: Option<i64>,
    /// Standby only: the server it streams from (`pg_stat_wal_receiver`, which needs
    /// `pg_read_all_stats` or a superuser: `None` otherwise, or when it restores from an archive).
    pub(crate) upstream: Option<String>,
}

#[derive(QueryableByName)]
struct RoleRow {
    #[diesel(sql_type = Bool)]
    standby: bool,
    #[diesel(sql_type = Bool)]
    read_only: bool,
    #[diesel(sql_type = Nullable<Double>)]
    lag_ms: Option<f64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    lag_bytes: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    upstream: Option<String>,
}

/// One round trip. The byte lag is measured against the end of WAL the upstream last reported
/// (`latest_end_lsn`), falling back to what was received; the time lag is the age of the last
/// replayed commit, counted only while received WAL waits to be replayed (an idle primary sends
/// no commits, and its standby is not behind).
const ROLE_QUERY: &str = "\
SELECT s.standby, s.read_only,
       CASE WHEN NOT s.standby THEN NULL
            WHEN pg_catalog.pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_catalog.pg_last_wal_replay_lsn() THEN 0::float8
            ELSE GREATEST(0, EXTRACT(EPOCH FROM (pg_catalog.clock_timestamp() - pg_catalog.pg_last_xact_replay_timestamp())) * 1000)::float8
       END AS lag_ms,
       CASE WHEN s.standby THEN GREATEST(0, pg_catalog.pg_wal_lsn_diff(
                COALESCE(w.latest_end_lsn, pg_catalog.pg_last_wal_receive_lsn(), pg_catalog.pg_last_wal_replay_lsn()),
                pg_catalog.pg_last_wal_replay_lsn()))::bigint
       END AS lag_bytes,
       CASE WHEN s.standby AND w.sender_host IS NOT NULL
            THEN CASE WHEN w.sender_host LIKE '/%' THEN w.sender_host
                      ELSE w.sender_host || ':' || w.sender_port END
       END AS upstream
FROM (SELECT pg_catalog.pg_is_in_recovery() AS standby,
             pg_catalog.current_setting('transaction_read_only') = 'on' AS read_only) s
LEFT JOIN (SELECT latest_end_lsn, sender_host::text AS sender_host, sender_port
           FROM pg_catalog.pg_stat_wal_receiver LIMIT 1) w ON true";

/// The server's role; `None` for SQLite (a file has no replicas).
pub(crate) fn server_role(conn: &mut AnyConnection) -> anyhow::Result<Option<ServerRole>> {
    if matches!(conn, AnyConnection::Sqlite(_)) {
        return Ok(None);
    }
    let row: RoleRow = diesel::sql_query(ROLE_QUERY)
        .get_result(conn)
        .map_err(|e| anyhow::anyhow!(e))
        .map_err(|e| e.context("asking the server whether it is a primary or a standby"))?;
    let role = if row.standby {
        Role::Standby
    } else {
        Role::Primary
    };
    Ok(Some(ServerRole {
        role,
        writable: !row.standby && !row.read_only,
        replay_lag_ms: row.lag_ms,
        replay_lag_bytes: row.lag_bytes,
        upstream: row.upstream,
    }))
}

/// Stops a writing command (`init`, `migrate up/down/redo`, `seed`) before it does anything when
/// the server cannot take writes: one line naming the server and the way out, exit 5.
pub(crate) fn require_writable(db: &Database) -> anyhow::Result<()> {
    let mut conn = db.get()?;
    check_writable(db, &mut conn)
}

/// [`require_writable`] on a connection already taken from `db`'s pool.
pub(crate) fn check_writable(db: &Database, conn: &mut AnyConnection) -> anyhow::Result<()> {
    let Some(role) = server_role(conn)? else {
        return Ok(());
    };
    if role.writable {
        return Ok(());
    }
    Err(not_writable(db, &role))
}

/// The error for a server that takes no writes (exit 5).
pub(crate) fn not_writable(db: &Database, role: &ServerRole) -> anyhow::Error {
    let server = db.server().unwrap_or_else(|| db.url().redacted());
    let msg = match role.role {
        Role::Standby => format!(
            "{server} is a read-only standby (in recovery): point dbctl at the primary \
             (with several hosts in the URL, add target_session_attrs=read-write)"
        ),
        Role::Primary => format!(
            "{server} accepts no writes (transaction_read_only is on, e.g. \
             default_transaction_read_only): point dbctl at a writable server or role"
        ),
    };
    error::tag(anyhow::anyhow!(msg), Exit::ReadOnly)
}
