//! What seeding needs from each backend: the catalog (columns, foreign keys, tables and views),
//! emptying tables, the run's write transaction and how it ended after a failure, savepoints,
//! running a seed `.sql` file, the bulk paths (`COPY ... FROM STDIN` on PostgreSQL, one cached
//! multi-row `INSERT` statement on SQLite), asking PostgreSQL which value it refused, and moving
//! sequences past the seeded values.
//!
//! diesel's `copy_from` wants a table known at compile time: its `CopyTarget::walk_target` is an
//! associated function with no `self`. [`RuntimeTarget`] implements that trait and writes the
//! quoted table and column list that [`copy_csv`] put in a thread-local just before the call, so
//! COPY runs on the same diesel connection, inside the same transaction as everything else.

use std::cell::RefCell;
use std::io::Write;

use anyhow::Context as _;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::{CopyFormat, CopyTarget, Pg};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Integer, Nullable, Text};
use diesel::sqlite::Sqlite;

use super::{quote_ident, AnyConnection, TableName};

/// How a failed run's transaction ended, as verified on the connection after the failure.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The transaction was still open and dbctl's ROLLBACK succeeded.
    RolledBack,
    /// The database had already ended the transaction when dbctl's own statement failed (SQLite
    /// does on disk-full, I/O, out-of-memory errors, interrupts and `RAISE(ROLLBACK)`). dbctl never
    /// sent COMMIT and was inside its transaction before that statement, so nothing is committed.
    EndedByDatabase,
    /// What happened is not known for certain; the text says what is known.
    Uncertain(String),
}

/// A run that did not commit: the first error, and how the transaction ended.
#[derive(Debug)]
pub(crate) struct TxFailure {
    pub(crate) error: anyhow::Error,
    pub(crate) ending: Ending,
}

/// An error raised by or after a user's `.sql` file: a transaction that is gone after it may have
/// been ended by a COMMIT in the file, so nothing can be promised about what it left.
///
/// `ended` says dbctl's transaction was found ended (or replaced) after the file ran.
#[derive(Debug)]
pub(crate) struct UserSql {
    pub(crate) message: String,
    pub(crate) ended: bool,
}

impl std::fmt::Display for UserSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserSql {}

/// Something that tells one transaction from the next on a connection: PostgreSQL's transaction
/// start time (`now()`), SQLite's count of ended transactions. A `COMMIT; BEGIN;` in a user's
/// `.sql` file leaves a transaction open, but not the same one.
pub(crate) fn transaction_identity(conn: &mut AnyConnection) -> anyhow::Result<Option<String>> {
    #[derive(QueryableByName)]
    struct Started {
        #[diesel(sql_type = Text)]
        at: String,
    }
    match conn {
        AnyConnection::Sqlite(sq) => Ok(Some(
            super::sqlite_transactions_ended(sq)
                .context("reading the connection's transaction count")?
                .to_string(),
        )),
        AnyConnection::Postgresql(pg) => {
            let started: Started = diesel::sql_query(
                // In microseconds since the epoch: unaffected by a file's SET TIME ZONE,
                // DateStyle or extra_float_digits.
                "SELECT (extract(epoch FROM pg_catalog.now()) * 1000000)::bigint::text AS at",
            )
            .get_result(pg)
            .context("reading the transaction's start time")?;
            Ok(Some(started.at))
        }
    }
}

/// Runs `f` in the seed's one transaction, committed when `f` succeeds and rolled back otherwise.
///
/// On SQLite the transaction starts with `BEGIN IMMEDIATE`, which takes the write lock at once
/// and so waits for another writer up to the busy timeout (`DB_STATEMENT_TIMEOUT`). A plain
/// (deferred) `BEGIN` would first read the catalog under a shared lock; SQLite then refuses the
/// later upgrade to a write lock with "database is locked" at once, without waiting, because
/// waiting there could deadlock. PostgreSQL takes row locks as it goes: a plain BEGIN.
///
/// After a failure nothing is sent before [`super::transaction_is_open`] says the transaction is
/// still there; only then is it rolled back, and only a successful rollback counts as one.
pub(crate) fn write_transaction<T>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> anyhow::Result<T>,
) -> Result<T, TxFailure> {
    // The begin goes to the backend's own transaction manager, the one the derived
    // `AnyConnection` manager delegates commit and rollback to, so diesel's depth stays right.
    let begun = match conn {
        AnyConnection::Sqlite(sq) => {
            AnsiTransactionManager::begin_transaction_sql(sq, "BEGIN IMMEDIATE").map_err(|e| {
                let busy = super::is_lock_busy(&e);
                anyhow::Error::new(e).context(if busy {
                    "another connection is writing to the database: its write lock was not \
                     released within the busy timeout (DB_STATEMENT_TIMEOUT, default 5 s)"
                } else {
                    "starting the seed's transaction"
                })
            })
        }
        AnyConnection::Postgresql(pg) => {
            <diesel::PgConnection as Connection>::TransactionManager::begin_transaction(pg)
                .map_err(anyhow::Error::new)
        }
    };
    if let Err(error) = begun {
        return Err(TxFailure {
            error,
            ending: Ending::Uncertain("the transaction did not start: nothing was changed".into()),
        });
    }
    type Manager = <AnyConnection as Connection>::TransactionManager;
    let work = |conn: &mut AnyConnection| {
        super::pooled_transaction_setup(conn).context("setting the transaction's timeout")?;
        f(conn)
    };
    let error = match work(conn) {
        Ok(value) => match Manager::commit_transaction(conn) {
            Ok(()) => return Ok(value),
            Err(e) => {
                // A COMMIT the database answered with an error did not commit; diesel has
                // already rolled back what was left. A connection lost during COMMIT is unknown.
                let ending = match super::transaction_is_open(conn) {
                    Ok(true) => rollback(conn),
                    Ok(false) if matches!(e, diesel::result::Error::DatabaseError(..)) => {
                        Ending::RolledBack
                    }
                    _ => Ending::Uncertain(
                        "the connection failed during COMMIT: whether it committed is unknown; check the database".into(),
                    ),
                };
                return Err(TxFailure {
                    error: anyhow::anyhow!("{}", database_message(&e)).context("committing"),
                    ending,
                });
            }
        },
        Err(error) => error,
    };
    let user_sql = error.chain().find_map(|c| c.downcast_ref::<UserSql>());
    let from_sql_file = user_sql.is_some();
    let replaced = user_sql.is_some_and(|u| u.ended);
    let ending = match super::transaction_is_open(conn) {
        // The open transaction is one the file began: rolled back, but dbctl's own was ended
        // by the file, and what ran before that is committed.
        Ok(true) if replaced => match rollback(conn) {
            Ending::RolledBack => Ending::Uncertain(
                "the file ended dbctl's transaction and began another (rolled back now): what ran \
                 before its COMMIT is committed; check the database"
                    .into(),
            ),
            other => other,
        },
        Ok(true) => rollback(conn),
        Ok(false) if replaced => Ending::Uncertain(
            "the file ended dbctl's transaction: what ran before its COMMIT is committed; check \
             the database"
                .into(),
        ),
        Ok(false) if from_sql_file => Ending::Uncertain(
            "the transaction had ended by then: the database rolled it back itself, or a COMMIT, \
             ROLLBACK or END in that .sql file ended it, and what ran before such a statement may \
             be committed; check the database"
                .into(),
        ),
        Ok(false) => Ending::EndedByDatabase,
        // diesel's manager is broken when libpq reports the connection gone.
        Err(_) => Ending::Uncertain(
            "the connection failed, so the transaction's state cannot be read back; dbctl never \
             sent COMMIT, so the database discards the transaction"
                .into(),
        ),
    };
    Err(TxFailure { error, ending })
}

fn rollback(conn: &mut AnyConnection) -> Ending {
    type Manager = <AnyConnection as Connection>::TransactionManager;
    match Manager::rollback_transaction(conn) {
        Ok(()) => Ending::RolledBack,
        Err(e) => Ending::Uncertain(format!(
            "ROLLBACK failed ({}); dbctl never sent COMMIT, so the database discards the transaction",
            database_message(&e)
        )),
    }
}

/// A failure the database reported for one statement, with what seeding needs to know about it.
#[derive(Debug, Clone)]
pub(crate) struct DbFailure {
    /// The database's message, with PostgreSQL's detail.
    pub(crate) message: String,
    /// A unique or primary-key violation (SQLSTATE 23505, SQLITE_CONSTRAINT_UNIQUE/PRIMARYKEY).
    pub(crate) unique: bool,
    /// The column the server's error fields name (PostgreSQL's `column_name`), if any.
    pub(crate) column: Option<String>,
}

impl DbFailure {
    pub(crate) fn of(err: &diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        let (unique, column) = match err {
            Error::DatabaseError(kind, info) => (
                matches!(kind, DatabaseErrorKind::UniqueViolation),
                info.column_name().map(str::to_string),
            ),
            _ => (false, None),
        };
        DbFailure {
            message: database_message(err),
            unique,
            column,
        }
    }
}

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbFailure {}

/// A column of a seeded table.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// The declared type (PostgreSQL's `format_type`, SQLite's declared type).
    pub(crate) sql_type: String,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    sql_type: String,
}

/// A foreign key between two tables.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct ForeignKey {
    #[diesel(sql_type = Text)]
    pub(crate) child: String,
    #[diesel(sql_type = Text)]
    pub(crate) parent: String,
    /// The child table as SQL writes it: quoted, and qualified when off the search path.
    #[diesel(sql_type = Text)]
    pub(crate) child_sql: String,
    /// The constraint's name (PostgreSQL), or `fk N` (SQLite keys have no names).
    #[diesel(sql_type = Text)]
    pub(crate) name: String,
    /// Whether `SET CONSTRAINTS ALL DEFERRED` can defer it (always on SQLite, whose
    /// `PRAGMA defer_foreign_keys` defers every key).
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub(crate) deferrable: bool,
}

/// Every foreign key between tables.
pub(crate) fn foreign_keys(conn: &mut AnyConnection) -> anyhow::Result<Vec<ForeignKey>> {
    let sql = match conn {
        AnyConnection::Postgresql(_) => {
            // Tables off the search path are named `schema.table`, as seed files name them.
            "SELECT \
               CASE WHEN pg_catalog.pg_table_is_visible(c.oid) THEN c.relname::text \
                    ELSE cn.nspname || '.' || c.relname END AS child, \
               CASE WHEN pg_catalog.pg_table_is_visible(p.oid) THEN p.relname::text \
                    ELSE pn.nspname || '.' || p.relname END AS parent, \
               CASE WHEN pg_catalog.pg_table_is_visible(c.oid) THEN '' \
                    ELSE '\"' || replace(cn.nspname, '\"', '\"\"') || '\".' END \
                 || '\"' || replace(c.relname, '\"', '\"\"') || '\"' AS child_sql, \
               k.conname::text AS name, k.condeferrable AS \"deferrable\" \
             FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
             JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
             JOIN pg_catalog.pg_class p ON p.oid = k.confrelid \
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE k.contype = 'f'"
        }
        AnyConnection::Sqlite(_) => {
            "SELECT DISTINCT m.name AS child, f.\"table\" AS parent, \
                    '\"' || replace(m.name, '\"', '\"\"') || '\"' AS child_sql, \
                    'fk ' || f.id AS name, 1 AS \"deferrable\" \
             FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE m.type = 'table'"
        }
    };
    diesel::sql_query(sql)
        .load(conn)
        .context("reading foreign keys from the catalog")
}

/// What a seed file's name points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// A table (PostgreSQL: also a partitioned or foreign table).
    Table,
    /// A view that takes inserts through an `INSTEAD OF INSERT` trigger (on SQLite: any trigger;
    /// a view can only carry INSTEAD OF triggers there, and SQLite names a missing INSERT one).
    InsertableView,
    /// A view (or materialized view) that cannot take rows.
    View,
    Missing,
}

/// What `name` is: COPY and INSERT load tables and views with an `INSTEAD OF INSERT` trigger,
/// as `psql \copy` and `sqlite3 .import` do.
pub(crate) fn target_kind(
    conn: &mut AnyConnection,
    table: &TableName,
) -> anyhow::Result<TargetKind> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        triggers: i64,
    }
    // tgtype bits (pg_trigger.h): ROW 1, INSERT 4, INSTEAD 64.
    // PostgreSQL: in the file's schema, else the one visible on the search path.
    let query = match conn {
        AnyConnection::Postgresql(_) => diesel::sql_query(
            "SELECT c.relkind::text AS kind, (SELECT count(*) FROM pg_catalog.pg_trigger t \
                 WHERE t.tgrelid = c.oid AND t.tgenabled <> 'D' AND (t.tgtype & 69) = 69)::bigint AS triggers \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND c.relkind IN ('r', 'p', 'f', 'v', 'm') \
               AND CASE WHEN $2::text IS NULL THEN pg_catalog.pg_table_is_visible(c.oid) ELSE n.nspname = $2 END",
        )
        .into_boxed::<<AnyConnection as Connection>::Backend>()
        .bind::<Text, _>(&table.name)
        .bind::<Nullable<Text>, _>(&table.schema),
        AnyConnection::Sqlite(_) => diesel::sql_query(
            "SELECT type AS kind, (SELECT count(*) FROM sqlite_master t \
                 WHERE t.type = 'trigger' AND t.tbl_name = m.name) AS triggers \
             FROM sqlite_master m WHERE m.type IN ('table', 'view') AND m.name = $1",
        )
        .into_boxed::<<AnyConnection as Connection>::Backend>()
        .bind::<Text, _>(&table.name),
    };
    let found: Vec<Found> = query
        .load(conn)
        .with_context(|| format!("looking for table {}", table.quoted()))?;
    Ok(match found.first() {
        None => TargetKind::Missing,
        Some(f) => match f.kind.as_str() {
            "v" | "view" if f.triggers > 0 => TargetKind::InsertableView,
            "v" | "view" | "m" => TargetKind::View,
            _ => TargetKind::Table,
        },
    })
}

/// The columns of a table, or `None` when there is no such table.
pub(crate) fn columns(
    conn: &mut AnyConnection,
    table: &TableName,
) -> anyhow::Result<Option<Vec<Column>>> {
    if target_kind(conn, table)? == TargetKind::Missing {
        return Ok(None);
    }
    let query = match conn {
        AnyConnection::Postgresql(_) => diesel::sql_query(
            "SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS sql_type \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND c.relkind IN ('r', 'p', 'f', 'v', 'm') \
               AND CASE WHEN $2::text IS NULL THEN pg_catalog.pg_table_is_visible(c.oid) ELSE n.nspname = $2 END \
               AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .into_boxed::<<AnyConnection as Connection>::Backend>()
        .bind::<Text, _>(&table.name)
        .bind::<Nullable<Text>, _>(&table.schema),
        AnyConnection::Sqlite(_) => {
            diesel::sql_query("SELECT name, type AS sql_type FROM pragma_table_info($1) ORDER BY cid")
        .into_boxed::<<AnyConnection as Connection>::Backend>()
        .bind::<Text, _>(&table.name)
        }
    };
    let rows: Vec<ColumnRow> = query
        .load(conn)
        .with_context(|| format!("reading the columns of table {table}"))?;
    Ok(Some(
        rows.into_iter()
            .map(|r| Column {
                name: r.name,
                sql_type: r.sql_type,
            })
            .collect(),
    ))
}

/// Empties tables, given children first. PostgreSQL: one `TRUNCATE` (it refuses when a table
/// outside the list still references one of them, rather than silently cascading). SQLite: a
/// `DELETE` per table, children first so foreign keys hold at each step. SQLite refuses the same
/// way, before deleting: a table outside the list whose rows reference one in it is named, whether
/// its key would make the `DELETE` fail or cascade into it (`ON DELETE CASCADE`/`SET NULL`).
pub(crate) fn empty_tables(conn: &mut AnyConnection, tables: &[TableName]) -> anyhow::Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let quoted: Vec<String> = tables.iter().map(TableName::quoted).collect();
    match conn {
        AnyConnection::Postgresql(_) => conn
            .batch_execute(&format!("TRUNCATE TABLE {}", quoted.join(", ")))
            .map_err(|e| anyhow::Error::new(DbFailure::of(&e)))
            .with_context(|| {
                let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
                format!("emptying {} (--truncate)", names.join(", "))
            }),
        AnyConnection::Sqlite(sq) => {
            for (name, table) in tables.iter().zip(&quoted) {
                let blockers = sqlite_referencing_rows(sq, name, tables)?;
                if !blockers.is_empty() {
                    let list = blockers
                        .iter()
                        .map(|t| quote_ident(t))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let (noun, verb, them) = match blockers.len() {
                        1 => ("table", "references", "it"),
                        _ => ("tables", "reference", "them"),
                    };
                    anyhow::bail!(
                        "emptying {name} (--truncate): cannot empty a table referenced by a foreign key: \
                         {noun} {list} {verb} {table} (seed {list} too, or empty {them} first)"
                    );
                }
                sq.batch_execute(&format!("DELETE FROM {table}"))
                    .map_err(|e| anyhow::Error::new(DbFailure::of(&e)))
                    .with_context(|| format!("emptying {name} (--truncate)"))?;
            }
            Ok(())
        }
    }
}

/// The SQLite tables outside `listed` holding a row whose foreign key points into `table` (every
/// column of the key set): emptying `table` would fail on them, or cascade into them.
fn sqlite_referencing_rows(
    sq: &mut SqliteConnection,
    table: &TableName,
    listed: &[TableName],
) -> anyhow::Result<Vec<String>> {
    #[derive(QueryableByName)]
    struct Key {
        #[diesel(sql_type = Text)]
        child: String,
        /// The key's columns, separated by U+001F.
        #[diesel(sql_type = Text)]
        columns: String,
    }
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Integer)]
        n: i32,
    }
    let keys: Vec<Key> = diesel::sql_query(
        "SELECT m.name AS child, group_concat(f.\"from\", char(31)) AS columns \
         FROM sqlite_master m, pragma_foreign_key_list(m.name) f \
         WHERE m.type = 'table' AND f.\"table\" = $1 COLLATE NOCASE \
         GROUP BY m.name, f.id ORDER BY m.name",
    )
    .bind::<Text, _>(&table.name)
    .load(sq)
    .context("reading the foreign keys that reference the table")?;
    let mut blockers: Vec<String> = Vec::new();
    for key in keys {
        let outside = !listed
            .iter()
            .any(|t| t.schema.is_none() && t.name.eq_ignore_ascii_case(&key.child));
        if !outside || blockers.contains(&key.child) {
            continue;
        }
        let set: Vec<String> = key
            .columns
            .split('\u{1f}')
            .map(|c| format!("{} IS NOT NULL", quote_ident(c)))
            .collect();
        let found: Found = diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {}) AS n",
            quote_ident(&key.child),
            set.join(" AND ")
        ))
        .get_result(sq)
        .with_context(|| format!("looking for rows of {} that reference {table}", key.child))?;
        if found.n != 0 {
            blockers.push(key.child);
        }
    }
    Ok(blockers)
}

/// What to do with a savepoint.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Savepoint {
    Set,
    Release,
    RollbackTo,
}

/// Sets, releases or rolls back to a savepoint (the name is dbctl's own, never a user's), on
/// either backend's connection.
pub(crate) fn savepoint(
    conn: &mut impl SimpleConnection,
    action: Savepoint,
    name: &str,
) -> anyhow::Result<()> {
    let verb = match action {
        Savepoint::Set => "SAVEPOINT",
        Savepoint::Release => "RELEASE SAVEPOINT",
        Savepoint::RollbackTo => "ROLLBACK TO SAVEPOINT",
    };
    conn.batch_execute(&format!("{verb} {}", quote_ident(name)))
        .with_context(|| format!("{verb} {name}"))
}

/// Defers foreign-key checks to the commit, for tables whose keys form a cycle. SQLite defers
/// every key; PostgreSQL only those declared DEFERRABLE.
pub(crate) fn defer_foreign_keys(conn: &mut AnyConnection) -> anyhow::Result<()> {
    let sql = match conn {
        AnyConnection::Postgresql(_) => "SET CONSTRAINTS ALL DEFERRED",
        AnyConnection::Sqlite(_) => "PRAGMA defer_foreign_keys = ON",
    };
    conn.batch_execute(sql)
        .context("deferring foreign-key checks")
}

/// Checks the foreign keys whose checks were deferred (on PostgreSQL: every deferred constraint),
/// before the commit, so that a dangling key is reported with its table and row rather than as a
/// bare failed commit.
pub(crate) fn check_deferred_foreign_keys(conn: &mut AnyConnection) -> anyhow::Result<()> {
    #[derive(QueryableByName)]
    struct Dangling {
        #[diesel(sql_type = Text)]
        child: String,
        #[diesel(sql_type = Nullable<Text>)]
        row_id: Option<String>,
        #[diesel(sql_type = Text)]
        parent: String,
    }
    match conn {
        AnyConnection::Postgresql(_) => conn
            .batch_execute("SET CONSTRAINTS ALL IMMEDIATE")
            .map_err(|e| anyhow::anyhow!("{}", database_message(&e))),
        AnyConnection::Sqlite(_) => {
            let found: Vec<Dangling> = diesel::sql_query(
                "SELECT \"table\" AS child, CAST(\"rowid\" AS TEXT) AS row_id, parent \
                 FROM pragma_foreign_key_check LIMIT 1",
            )
            .load(conn)
            .context("checking the deferred foreign keys")?;
            match found.first() {
                None => Ok(()),
                Some(d) => Err(anyhow::anyhow!(
                    "FOREIGN KEY constraint failed: a row of {} (rowid {}) references a missing row of {}",
                    quote_ident(&d.child),
                    d.row_id.as_deref().unwrap_or("?"),
                    quote_ident(&d.parent)
                )),
            }
        }
    }
}

/// Turns SQLite's `PRAGMA defer_foreign_keys` on or off. On, every foreign key is checked at the
/// commit instead of at each statement, so a table that references itself loads whatever the
/// order of its rows, as one COPY does on PostgreSQL. Off again, the other tables' keys are
/// checked per statement as before; the keys that were deferred stay pending until the commit.
pub(crate) fn sqlite_defer_foreign_keys(sq: &mut SqliteConnection, on: bool) -> anyhow::Result<()> {
    sq.batch_execute(if on {
        "PRAGMA defer_foreign_keys = ON"
    } else {
        "PRAGMA defer_foreign_keys = OFF"
    })
    .context("switching SQLite's deferred foreign-key checks")
}

/// The first row of `table` whose foreign key points at a missing row, named by its rowid and the
/// key's values (SQLite's `pragma_foreign_key_check`), or `None` when every key holds.
pub(crate) fn sqlite_dangling_key(
    sq: &mut SqliteConnection,
    table: &TableName,
) -> anyhow::Result<Option<String>> {
    #[derive(QueryableByName)]
    struct Dangling {
        #[diesel(sql_type = Nullable<diesel::sql_types::BigInt>)]
        row_id: Option<i64>,
        #[diesel(sql_type = Text)]
        parent: String,
        #[diesel(sql_type = Text)]
        columns: String,
    }
    let found: Vec<Dangling> = diesel::sql_query(
        "SELECT c.\"rowid\" AS row_id, c.parent AS parent, \
                (SELECT group_concat(f.\"from\", ', ') FROM pragma_foreign_key_list($1) f WHERE f.id = c.fkid) AS columns \
         FROM pragma_foreign_key_check($1) c LIMIT 1",
    )
    .bind::<Text, _>(&table.name)
    .load(sq)
    .context("checking the deferred foreign keys")?;
    Ok(found.first().map(|d| {
        let row = d.row_id.map_or_else(
            || "a row".to_string(),
            |r| format!("the row with rowid {r}"),
        );
        format!(
            "FOREIGN KEY constraint failed: {row} of {} has ({}) pointing at no row of {}",
            table.quoted(),
            d.columns,
            quote_ident(&d.parent)
        )
    }))
}

/// A failure reported by the database, with the 1-based line it points at when known.
#[derive(Debug)]
pub(crate) struct SqlFailure {
    pub(crate) message: String,
    pub(crate) line: Option<usize>,
}

/// Runs a seed `.sql` file's text as written. PostgreSQL reports where in the text the failing
/// statement is; that position becomes a line number.
pub(crate) fn run_sql(conn: &mut AnyConnection, sql: &str) -> Result<(), SqlFailure> {
    conn.batch_execute(sql).map_err(|e| {
        let line = match &e {
            diesel::result::Error::DatabaseError(_, info) => {
                info.statement_position().and_then(|pos| {
                    let chars = usize::try_from(pos).ok()?.saturating_sub(1);
                    Some(sql.chars().take(chars).filter(|&c| c == '\n').count() + 1)
                })
            }
            _ => None,
        };
        SqlFailure {
            message: database_message(&e),
            line,
        }
    })
}

/// The database's message, with PostgreSQL's detail (`Key (id)=(1) already exists.`) when given.
pub(crate) fn database_message(err: &diesel::result::Error) -> String {
    match err {
        diesel::result::Error::DatabaseError(_, info) => {
            let mut text = info.message().trim().to_string();
            if let Some(detail) = info.details().filter(|d| !d.trim().is_empty()) {
                text.push_str(": ");
                text.push_str(detail.trim());
            }
            text
        }
        other => other.to_string(),
    }
}

diesel::table! {
    /// Never queried: it only gives diesel's COPY machinery the compile-time table it asks for.
    /// The real target is written by [`RuntimeTarget::walk_target`].
    dbctl_runtime_copy_target (id) {
        id -> Integer,
    }
}

thread_local! {
    /// `"table" ("col", ...)`, already quoted, for the COPY statement being built on this thread.
    static COPY_TARGET: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A COPY target named at run time (see the module comment).
struct RuntimeTarget;

impl CopyTarget for RuntimeTarget {
    type Table = dbctl_runtime_copy_target::table;
    type SqlType = Integer;

    fn walk_target(mut pass: AstPass<'_, '_, Pg>) -> QueryResult<()> {
        COPY_TARGET.with(|target| pass.push_sql(&target.borrow()));
        Ok(())
    }
}

/// Clears the thread-local target however `copy_csv` ends.
struct TargetGuard;

impl Drop for TargetGuard {
    fn drop(&mut self) {
        COPY_TARGET.with(|t| t.borrow_mut().clear());
    }
}

/// `"table" ("a", "b")`: the quoted target of a COPY or an INSERT.
fn quoted_target(table: &TableName, columns: &[String]) -> String {
    let columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    format!("{} ({})", table.quoted(), columns.join(", "))
}

/// `COPY "table" ("col", ...) FROM STDIN (FORMAT csv)`, fed by `fill`, which writes CSV rows in
/// PostgreSQL's dialect (an unquoted empty field is NULL, `""` an empty string: the same rule as
/// the seed files). Returns the rows PostgreSQL stored.
///
/// An error from `fill` aborts the COPY and is returned as it is; otherwise a failure is the
/// database's message.
pub(crate) fn copy_csv(
    pg: &mut PgConnection,
    table: &TableName,
    columns: &[String],
    fill: impl FnMut(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let target = quoted_target(table, columns);
    COPY_TARGET.with(|t| *t.borrow_mut() = target);
    let _guard = TargetGuard;
    // diesel takes an `Fn`; the fill function streams and so needs `&mut` state.
    let fill = RefCell::new(fill);
    let failure: RefCell<Option<anyhow::Error>> = RefCell::new(None);
    let result = diesel::copy_from(dbctl_runtime_copy_target::table)
        .from_raw_data(RuntimeTarget, |sink: &mut dyn Write| {
            // Large writes: each one is a CopyData message.
            let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, sink);
            let outcome = (fill.borrow_mut())(&mut buffered)
                .and_then(|()| buffered.flush().context("sending rows to PostgreSQL"));
            outcome.map_err(|e| {
                let text = format!("{e:#}");
                *failure.borrow_mut() = Some(e);
                diesel::result::Error::SerializationError(text.into())
            })
        })
        .with_format(CopyFormat::Csv)
        .execute(pg);
    if let Some(err) = failure.into_inner() {
        return Err(err);
    }
    match result {
        Ok(rows) => Ok(rows as u64),
        Err(e) => Err(anyhow::Error::new(DbFailure::of(&e))),
    }
}

/// Whether PostgreSQL reads `value` as a value of `table.column`: the column type's input
/// function is called with the type's I/O parameter and the column's type modifier, the call COPY
/// makes for each field (so `varchar(3)` refuses four characters and a domain checks its
/// constraints). Runs in a savepoint; a lost transaction is an error.
pub(crate) fn pg_value_reads(
    pg: &mut PgConnection,
    table: &TableName,
    column: &str,
    value: &str,
) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Input {
        /// `regproc` output: quoted and qualified by the server.
        #[diesel(sql_type = Text)]
        func: String,
        #[diesel(sql_type = Integer)]
        nargs: i32,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        ioparam: i64,
        #[diesel(sql_type = Integer)]
        typmod: i32,
    }
    let input: Input = diesel::sql_query(
        "SELECT t.typinput::regproc::text AS func, p.pronargs::int AS nargs, \
                (CASE WHEN t.typelem <> 0 THEN t.typelem ELSE t.oid END)::bigint AS ioparam, \
                a.atttypmod AS typmod \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         JOIN pg_catalog.pg_proc p ON p.oid = t.typinput \
         WHERE a.attrelid = $1::regclass AND a.attname = $2",
    )
    .bind::<Text, _>(table.quoted())
    .bind::<Text, _>(column)
    .get_result(pg)
    .with_context(|| format!("reading the input function of column {column}"))?;
    let args = match input.nargs {
        1 => "$1::cstring",
        2 => "$1::cstring, $2::oid",
        _ => "$1::cstring, $2::oid, $3::int4",
    };
    let sql = format!("SELECT ({}({args})) IS NULL AS isnull", input.func);
    savepoint(pg, Savepoint::Set, "dbctl_seed_value")?;
    // Binding fewer parameters than the statement uses is an error, so every call binds three.
    let sql = match input.nargs {
        1 => format!("{sql} WHERE $2::oid IS NOT NULL AND $3::int4 IS NOT NULL"),
        2 => format!("{sql} WHERE $3::int4 IS NOT NULL"),
        _ => sql,
    };
    #[derive(QueryableByName)]
    struct Read {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        #[allow(dead_code)]
        isnull: bool,
    }
    let outcome: QueryResult<Vec<Read>> = diesel::sql_query(sql)
        .bind::<Text, _>(value)
        .bind::<diesel::sql_types::BigInt, _>(input.ioparam)
        .bind::<Integer, _>(input.typmod)
        .load(pg);
    match outcome {
        Ok(_) => {
            savepoint(pg, Savepoint::Release, "dbctl_seed_value")?;
            Ok(true)
        }
        Err(e) => {
            if !super::pg_transaction_is_open(pg).unwrap_or(false) {
                return Err(anyhow::anyhow!("{}", database_message(&e)));
            }
            savepoint(pg, Savepoint::RollbackTo, "dbctl_seed_value")?;
            Ok(false)
        }
    }
}

/// A sequence feeding a column's default (serial, identity, or `DEFAULT nextval(...)`).
#[derive(QueryableByName)]
struct ColumnSequence {
    #[diesel(sql_type = Text)]
    column: String,
    /// Qualified and quoted by the server (`regclass` output), so it can be put in SQL.
    #[diesel(sql_type = Text)]
    seq: String,
}

/// Moves the sequences behind the given columns so the application's next insert does not collide
/// with a seeded value. Called once, just before COMMIT (never in a dry run): `setval` is not
/// transactional, so a sequence moved earlier would stay moved after a rollback.
///
/// A sequence only ever moves forward in its own direction: past the column's largest value for an
/// ascending one, below its smallest for a descending one, and only when that value lies inside
/// the sequence's bounds and beyond the value it would hand out next. So a sequence another table
/// shares, or one already past the seeded values, is left where it is, and ids of 0 or below a
/// sequence's minimum are loaded as they are (as `psql \copy` does). Returns the sequences moved,
/// as `name -> next value`.
pub(crate) fn pg_adjust_sequences(
    pg: &mut PgConnection,
    targets: &[(TableName, Vec<String>)],
) -> anyhow::Result<Vec<String>> {
    let mut moved = Vec::new();
    for (table, columns) in targets {
        let sequences: Vec<ColumnSequence> = diesel::sql_query(
            "SELECT a.attname::text AS column, d.refobjid::regclass::text AS seq \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
             JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::regclass \
               AND d.objid = ad.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
             JOIN pg_catalog.pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' \
             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             UNION \
             SELECT a.attname::text, pg_catalog.pg_get_serial_sequence($1, a.attname)::regclass::text \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
               AND pg_catalog.pg_get_serial_sequence($1, a.attname) IS NOT NULL",
        )
        .bind::<Text, _>(table.quoted())
        .load(pg)
        .with_context(|| format!("looking up the sequences of {}", table.quoted()))?;
        for found in sequences.iter().filter(|s| columns.contains(&s.column)) {
            if let Some(next) = advance_sequence(pg, table, &found.column, &found.seq)? {
                moved.push(format!("{} -> {next}", found.seq));
            }
        }
    }
    Ok(moved)
}

/// Moves one sequence forward past the values of `table.column`, if that is forward and in range.
/// Returns the value the sequence hands out next when it was moved.
fn advance_sequence(
    pg: &mut PgConnection,
    table: &TableName,
    column: &str,
    seq: &str,
) -> anyhow::Result<Option<String>> {
    #[derive(QueryableByName)]
    struct Next {
        #[diesel(sql_type = Nullable<Text>)]
        next: Option<String>,
    }
    // `seq` comes from the server's regclass output: already quoted and qualified.
    // The column's extreme is compared as numeric, so values beyond bigint cannot overflow.
    let sql = format!(
        "WITH s AS ( \
            SELECT p.seqincrement AS inc, p.seqmin AS lo, p.seqmax AS hi, \
                   CASE WHEN q.is_called THEN q.last_value + p.seqincrement ELSE q.last_value END::numeric AS upcoming \
            FROM pg_catalog.pg_sequence p, {seq} q WHERE p.seqrelid = '{seq_lit}'::regclass), \
         v AS (SELECT CASE WHEN (SELECT inc FROM s) > 0 THEN max({col})::numeric ELSE min({col})::numeric END AS m FROM {tab}) \
         SELECT CASE WHEN v.m IS NOT NULL AND v.m BETWEEN s.lo AND s.hi \
                      AND ((s.inc > 0 AND v.m >= s.upcoming) OR (s.inc < 0 AND v.m <= s.upcoming)) \
                 THEN (pg_catalog.setval('{seq_lit}'::regclass, v.m::bigint, true)::numeric + s.inc)::text END AS next \
         FROM s, v",
        col = quote_ident(column),
        tab = table.quoted(),
        seq_lit = seq.replace('\'', "''"),
    );
    let next: Next = diesel::sql_query(sql)
        .get_result(pg)
        .with_context(|| format!("moving sequence {seq} past the seeded values"))?;
    Ok(next.next)
}

/// Rows waiting to be inserted into one SQLite table with one multi-row `INSERT`, whose prepared
/// statement diesel caches by its text, so a full batch reuses the same statement every time.
pub(crate) struct SqliteBatch {
    head: String,
    columns: usize,
    capacity: usize,
    /// The values of the buffered rows, back to back; `spans` index into it, `None` is NULL.
    text: String,
    spans: Vec<Option<(usize, usize)>>,
}

/// SQLite allows 32766 bound values per statement; a few hundred rows per statement is where
/// the per-statement cost stops mattering.
const SQLITE_MAX_VALUES: usize = 32_000;
const SQLITE_BATCH_ROWS: usize = 256;
const SQLITE_BATCH_BYTES: usize = 64 * 1024 * 1024;

impl SqliteBatch {
    pub(crate) fn new(table: &TableName, columns: &[String]) -> Self {
        let head = format!("INSERT INTO {} VALUES ", quoted_target(table, columns));
        let capacity = (SQLITE_MAX_VALUES / columns.len().max(1)).clamp(1, SQLITE_BATCH_ROWS);
        SqliteBatch {
            head,
            columns: columns.len(),
            capacity,
            text: String::new(),
            spans: Vec::new(),
        }
    }

    /// Buffers one row (exactly one value per column).
    pub(crate) fn push<'v>(&mut self, values: impl Iterator<Item = Option<&'v str>>) {
        for value in values {
            self.spans.push(value.map(|v| {
                let start = self.text.len();
                self.text.push_str(v);
                (start, self.text.len())
            }));
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.spans.len() / self.columns.max(1)
    }

    pub(crate) fn is_full(&self) -> bool {
        // Large rows flush early, so that a batch's memory stays bounded (64 MiB and one row).
        self.rows() >= self.capacity || self.text.len() >= SQLITE_BATCH_BYTES
    }

    /// Inserts the buffered rows with one statement and empties the buffer, whatever the outcome.
    ///
    /// A failed statement is not assumed to have left nothing behind: with `RAISE(FAIL)` in a
    /// trigger or an `OR FAIL` conflict clause the rows before the failing one stay, and some
    /// errors end the whole transaction. The caller checks the transaction and rolls back to
    /// its savepoint before looking for the row at fault.
    pub(crate) fn flush(&mut self, sq: &mut SqliteConnection) -> Result<(), DbFailure> {
        if self.rows() == 0 {
            return Ok(());
        }
        let values: Vec<Option<&str>> = self
            .spans
            .iter()
            .map(|s| s.map(|(a, b)| &self.text[a..b]))
            .collect();
        let all = InsertRows {
            head: &self.head,
            columns: self.columns,
            values: &values,
        };
        let outcome = sq.execute_returning_count(&all);
        self.text.clear();
        self.spans.clear();
        outcome.map(|_| ()).map_err(|e| DbFailure::of(&e))
    }
}

/// `INSERT INTO t (cols) VALUES ($1, $2), ($3, $4), ...` with every value bound as text (SQLite
/// applies the column's affinity, as its own `.import` does).
struct InsertRows<'a> {
    head: &'a str,
    columns: usize,
    values: &'a [Option<&'a str>],
}

impl QueryId for InsertRows<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Sqlite> for InsertRows<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(self.head);
        for (r, row) in self.values.chunks(self.columns.max(1)).enumerate() {
            out.push_sql(if r == 0 { "(" } else { ", (" });
            for (c, value) in row.iter().enumerate() {
                if c > 0 {
                    out.push_sql(", ");
                }
                out.push_bind_param::<Nullable<Text>, _>(value)?;
            }
            out.push_sql(")");
        }
        Ok(())
    }
}

/// A relation a CSV file may name: its schema (PostgreSQL) and name, and whether it is on the
/// search path (always on SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub(crate) schema: Option<String>,
    pub(crate) name: String,
    pub(crate) visible: bool,
}

/// The tables, views and foreign tables a seed file's name may be matched against (the file
/// names a table the way a header names columns: exactly, else ignoring case when unambiguous).
pub(crate) fn relations(conn: &mut AnyConnection) -> anyhow::Result<Vec<Relation>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Text>)]
        schema: Option<String>,
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        visible: bool,
    }
    let sql = match conn {
        AnyConnection::Postgresql(_) => {
            "SELECT n.nspname::text AS schema, c.relname::text AS name, \
                    pg_catalog.pg_table_is_visible(c.oid) AS visible \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'f') \
               AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"
        }
        AnyConnection::Sqlite(_) => {
            "SELECT NULL AS schema, name, 1 AS visible FROM sqlite_master \
             WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        }
    };
    let rows: Vec<Row> = diesel::sql_query(sql)
        .load(conn)
        .context("listing the tables seed files can name")?;
    Ok(rows
        .into_iter()
        .map(|r| Relation {
            schema: r.schema,
            name: r.name,
            visible: r.visible,
        })
        .collect())
}
