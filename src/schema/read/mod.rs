//! Reading the model from a live database's catalog, with a fixed, small number of queries
//! whatever the number of tables, inside one read-only snapshot.
//!
//! Each backend's catalog SQL and the assembly of its rows into the model live in its own file
//! (`pg.rs` with its `.sql` files in `pg/`, `sqlite.rs` with `sqlite_ddl.rs` for what only SQLite's
//! `CREATE` text holds), behind the [`Catalog`] trait; [`catalog`] is the one place that picks the
//! backend. Nothing here takes a name from the user: the catalog is read whole and filtered by the
//! caller, and the only identifiers that reach SQL (the row counts) come from the catalog itself
//! and are quoted.

mod pg;
mod sqlite;
mod sqlite_ddl;

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::sql_types::BigInt;

use super::{Schema, Table};
use crate::db::AnyConnection;

/// What each backend's catalog reader answers.
trait Catalog {
    /// The statement that opens a read-only snapshot (see [`in_snapshot`]).
    fn begin_snapshot(&self) -> &'static str;
    /// The whole schema, unsorted; `schemas` as in [`ReadOptions`].
    fn read(&mut self, schemas: &[String]) -> anyhow::Result<Schema>;
    /// `count(*)` of each table, in their order, in one statement; `None` for a table another
    /// session dropped meanwhile.
    fn count_rows(&mut self, tables: &[&mut Table]) -> anyhow::Result<Vec<Option<i64>>>;
    /// Whether the backend keeps row estimates (then they are the default row counts).
    fn estimates_rows(&self) -> bool;
}

/// The reader of the backend `conn` talks to: the one backend dispatch of schema reading.
fn catalog(conn: &mut AnyConnection) -> &mut dyn Catalog {
    match conn {
        AnyConnection::Postgresql(pg) => pg,
        AnyConnection::Sqlite(sq) => sq,
    }
}

/// What to read.
pub(crate) struct ReadOptions {
    /// PostgreSQL schemas to read; empty means those on the search path. SQLite has only `main`.
    pub(crate) schemas: Vec<String>,
}

/// Reads the whole schema, sorted (row counts: PostgreSQL's estimates, none on SQLite; see
/// [`count_rows`]). PostgreSQL: 11 queries; SQLite: 5.
pub(crate) fn read(conn: &mut AnyConnection, opts: &ReadOptions) -> anyhow::Result<Schema> {
    let mut schema = catalog(conn).read(&opts.schemas)?;
    schema.sort();
    Ok(schema)
}

/// How many times a snapshot read is tried when a concurrent change breaks it.
const SNAPSHOT_ATTEMPTS: u32 = 4;

/// Runs `read` in one read-only snapshot: on PostgreSQL a `REPEATABLE READ READ ONLY`
/// transaction, on SQLite one read transaction. Everything it reads (catalog, counts, the
/// migration bookkeeping) is then of one moment, whatever runs meanwhile. Catalog functions and
/// name lookups on PostgreSQL still see objects dropped after the snapshot as gone, so a read that
/// fails is tried again in a fresh snapshot (three times at most, a little later each time) before
/// its error is returned.
///
/// `read` is told whether this is the last attempt: only then should it settle for less (see
/// [`count_rows`]).
pub(crate) fn in_snapshot<T>(
    conn: &mut AnyConnection,
    mut read: impl FnMut(&mut AnyConnection, bool) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let begin = catalog(conn).begin_snapshot();
    let mut attempt = 1;
    loop {
        conn.batch_execute(begin)
            .context("starting a read-only snapshot")?;
        let result = read(conn, attempt == SNAPSHOT_ATTEMPTS);
        // Read-only: nothing to keep, and ROLLBACK also ends a transaction an error aborted.
        let ended = conn.batch_execute("ROLLBACK");
        match result {
            Err(err)
                if attempt < SNAPSHOT_ATTEMPTS
                    && crate::error::exit_of(&err) == crate::error::Exit::Failed
                    && crate::interrupt::received().is_none() =>
            {
                // Let a burst of schema changes (a run of migrations) pass.
                std::thread::sleep(std::time::Duration::from_millis(50) * attempt);
                attempt += 1;
            }
            result => {
                let value = result?;
                ended.context("ending the read-only snapshot")?;
                return Ok(value);
            }
        }
    }
}

/// Whether the default row counts of the backend are estimates (PostgreSQL) or exact (SQLite,
/// which keeps no estimate).
pub(crate) fn default_counts_are_estimates(conn: &mut AnyConnection) -> bool {
    catalog(conn).estimates_rows()
}

/// Fills `rows` of the given tables with `count(*)`, in one `UNION ALL` query (PostgreSQL) or one
/// multi-row `VALUES` query (SQLite, whose compound-select limit of 500 does not apply to VALUES).
/// The statement grows with the number of tables but stays one round trip.
///
/// A table dropped (by another session) after the snapshot was taken cannot be counted: that is
/// an error, for [`in_snapshot`] to try again, unless `settle` is set; then its count is unknown.
pub(crate) fn count_rows(
    conn: &mut AnyConnection,
    tables: &mut [&mut Table],
    settle: bool,
) -> anyhow::Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let counts = catalog(conn).count_rows(tables)?;
    if !settle {
        if let Some((t, _)) = tables.iter().zip(&counts).find(|(_, n)| n.is_none()) {
            anyhow::bail!(
                "table {}.{} was dropped while its rows were being counted",
                t.schema,
                t.name
            );
        }
    }
    for (table, n) in tables.iter_mut().zip(counts) {
        table.rows = n;
    }
    Ok(())
}

/// Maps a foreign key action as SQLite spells it (or PostgreSQL's one-letter code) to SQL words.
fn fk_action(code: &str) -> String {
    match code {
        "a" => "NO ACTION",
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        other => return other.to_ascii_uppercase(),
    }
    .to_string()
}

/// Puts a row count from a query into its slot of `counts` (by the table's position `i`).
fn put_count(counts: &mut [Option<i64>], i: i64, n: i64) {
    if let Some(slot) = usize::try_from(i).ok().and_then(|i| counts.get_mut(i)) {
        *slot = Some(n);
    }
}

/// One row of a row-count query: the table's position and its count.
#[derive(diesel::QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    i: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}
