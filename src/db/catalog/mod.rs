//! The schema of a database as one backend-neutral model, read from the catalog with a fixed,
//! small number of queries whatever the number of tables.
//!
//! This module owns the model (what `dbctl inspect --format json` prints and `--diff` reads back)
//! and the choice of backend; `pg.rs` and `sqlite.rs` hold each backend's catalog SQL. Nothing here
//! takes a name from the user: the catalog is read whole and filtered by the caller, and the only
//! identifiers that reach SQL (the row counts) come from the catalog itself and are quoted.

mod pg;
mod sqlite;
mod sqlite_ddl;

use serde::{Deserialize, Serialize};

use crate::db::{AnyConnection, Backend};

/// The version of the JSON model, bumped when a field changes meaning or disappears.
pub(crate) const MODEL_VERSION: u32 = 1;

/// A whole schema: what `inspect --format json` prints, sorted so that equal schemas give equal
/// bytes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Schema {
    /// [`MODEL_VERSION`].
    pub(crate) dbctl_schema_version: u32,
    pub(crate) backend: Backend,
    /// PostgreSQL: the schemas (namespaces) read; SQLite: `["main"]`.
    pub(crate) schemas: Vec<String>,
    /// How `rows` was obtained.
    pub(crate) row_counts: RowCounts,
    /// Applied and pending migrations; `None` when not asked for (never compared by `--diff`).
    pub(crate) migrations: Option<MigrationState>,
    pub(crate) tables: Vec<Table>,
    pub(crate) views: Vec<View>,
    /// PostgreSQL enum types (always empty on SQLite).
    pub(crate) enums: Vec<EnumType>,
    /// PostgreSQL sequences (always empty on SQLite).
    pub(crate) sequences: Vec<Sequence>,
}

/// How row counts were obtained.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RowCounts {
    /// PostgreSQL's planner estimate (`pg_class.reltuples`); `null` when never analyzed.
    Estimate,
    /// `count(*)` of every table.
    Exact,
    /// Not counted (`--no-rows`).
    None,
}

/// What the migration bookkeeping says.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct MigrationState {
    /// Versions recorded in `__diesel_schema_migrations`.
    pub(crate) applied: u64,
    /// Folders in the migrations directory with an up.sql whose version is not applied; `None`
    /// when the directory does not exist.
    pub(crate) pending: Option<u64>,
    /// Applied migrations whose up.sql changed since (`None` as for `pending`).
    #[serde(default)]
    pub(crate) modified: Option<u64>,
    /// Applied migrations no longer in the folder (`None` as for `pending`).
    #[serde(default)]
    pub(crate) missing: Option<u64>,
    /// The highest applied version.
    pub(crate) last_applied: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Table {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// In the table's own order.
    pub(crate) columns: Vec<Column>,
    pub(crate) primary_key: Option<PrimaryKey>,
    pub(crate) foreign_keys: Vec<ForeignKey>,
    pub(crate) unique_constraints: Vec<UniqueConstraint>,
    pub(crate) checks: Vec<Check>,
    /// Indexes created by `CREATE INDEX`, not those that back a primary key or unique constraint.
    pub(crate) indexes: Vec<Index>,
    /// The row count (see [`Schema::row_counts`]); `None` when unknown.
    pub(crate) rows: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// As the database names it (`character varying(255)`, `VARCHAR(255)`).
    #[serde(rename = "type")]
    pub(crate) data_type: String,
    pub(crate) nullable: bool,
    /// The default expression as the database prints it.
    pub(crate) default: Option<String>,
    /// PostgreSQL identity columns: `always` or `by default`.
    pub(crate) identity: Option<String>,
    /// The expression of a generated column.
    pub(crate) generated: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrimaryKey {
    /// `None` when the database keeps no name (SQLite, when the DDL gave none).
    pub(crate) name: Option<String>,
    pub(crate) columns: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForeignKey {
    pub(crate) name: Option<String>,
    pub(crate) columns: Vec<String>,
    pub(crate) referred_schema: String,
    pub(crate) referred_table: String,
    pub(crate) referred_columns: Vec<String>,
    /// `NO ACTION`, `RESTRICT`, `CASCADE`, `SET NULL` or `SET DEFAULT`.
    pub(crate) on_update: String,
    pub(crate) on_delete: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct UniqueConstraint {
    pub(crate) name: Option<String>,
    pub(crate) columns: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) name: Option<String>,
    /// The boolean expression, without `CHECK ( )`.
    pub(crate) expression: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Index {
    pub(crate) name: String,
    pub(crate) unique: bool,
    /// Key columns in order; an expression key is given as its expression text.
    pub(crate) columns: Vec<String>,
    /// Whether some key is an expression rather than a column.
    pub(crate) expression: bool,
    /// The `WHERE` predicate of a partial index.
    pub(crate) predicate: Option<String>,
    /// PostgreSQL's access method (`btree`, `gin`, ...); `None` on SQLite.
    pub(crate) method: Option<String>,
    /// The statement that creates it, as the database gives it.
    pub(crate) definition: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) materialized: bool,
    pub(crate) columns: Vec<Column>,
    /// Indexes of a materialized view (always empty for plain views).
    #[serde(default)]
    pub(crate) indexes: Vec<Index>,
    /// PostgreSQL: the view's query as `pg_get_viewdef` prints it; SQLite: its `CREATE VIEW`.
    pub(crate) definition: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnumType {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// In declaration order.
    pub(crate) values: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sequence {
    pub(crate) schema: String,
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) data_type: String,
    pub(crate) start: i64,
    pub(crate) increment: i64,
    /// `table.column` of the column that owns it (serial and identity columns).
    pub(crate) owned_by: Option<String>,
}

/// What to read.
pub(crate) struct ReadOptions {
    /// PostgreSQL schemas to read; empty means those on the search path. Ignored on SQLite.
    pub(crate) schemas: Vec<String>,
}

/// Reads the whole schema (row counts: PostgreSQL's estimates, none on SQLite; see
/// [`count_rows`]). PostgreSQL: 7 queries; SQLite: 5.
pub(crate) fn read(conn: &mut AnyConnection, opts: &ReadOptions) -> anyhow::Result<Schema> {
    let mut schema = match conn {
        AnyConnection::Postgresql(pg) => pg::read(pg, &opts.schemas)?,
        AnyConnection::Sqlite(sq) => {
            // SQLite's one schema is `main`: any other name asked for is a mistake to say so.
            if let Some(other) = opts.schemas.iter().find(|s| s.as_str() != "main") {
                return Err(crate::error::usage(format!(
                    "schema {} does not exist in this SQLite database; its schemas: main",
                    crate::output::quote(other)
                )));
            }
            sqlite::read(sq)?
        }
    };
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
    use diesel::connection::SimpleConnection as _;
    let begin = match conn {
        AnyConnection::Postgresql(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        AnyConnection::Sqlite(_) => "BEGIN DEFERRED",
    };
    let mut attempt = 1;
    loop {
        conn.batch_execute(begin)
            .map_err(|e| anyhow::anyhow!("starting a read-only snapshot: {e}"))?;
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
                ended.map_err(|e| anyhow::anyhow!("ending the read-only snapshot: {e}"))?;
                return Ok(value);
            }
        }
    }
}

/// Whether the default row counts of a backend are estimates (PostgreSQL) or exact (SQLite, which
/// keeps no estimate).
pub(crate) fn default_counts_are_estimates(backend: Backend) -> bool {
    backend == Backend::Postgres
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
    let counts = match conn {
        AnyConnection::Postgresql(pg) => pg::count_rows(pg, tables)?,
        AnyConnection::Sqlite(sq) => sqlite::count_rows(sq, tables)?,
    };
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

/// Internal tables: diesel's and dbctl's bookkeeping, and SQLite's own.
pub(crate) fn is_internal(name: &str) -> bool {
    name == crate::migrate::DIESEL_TABLE
        || name.starts_with("__dbctl_")
        || name.starts_with("sqlite_")
}

impl Schema {
    /// Sorts everything that has no order of its own, so that output is byte-stable.
    pub(crate) fn sort(&mut self) {
        self.schemas.sort();
        self.tables
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        for t in &mut self.tables {
            t.foreign_keys.sort_by(|a, b| {
                (&a.name, &a.columns, &a.referred_table).cmp(&(
                    &b.name,
                    &b.columns,
                    &b.referred_table,
                ))
            });
            t.unique_constraints
                .sort_by(|a, b| (&a.name, &a.columns).cmp(&(&b.name, &b.columns)));
            t.checks
                .sort_by(|a, b| (&a.name, &a.expression).cmp(&(&b.name, &b.expression)));
            t.indexes.sort_by(|a, b| a.name.cmp(&b.name));
        }
        self.views
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        for v in &mut self.views {
            v.indexes.sort_by(|a, b| a.name.cmp(&b.name));
        }
        self.enums
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        self.sequences
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    }

    /// Whether names need their schema to be unambiguous (more than one schema read).
    pub(crate) fn qualify(&self) -> bool {
        self.schemas.len() > 1
    }

    /// A display name: `name`, or `schema.name` when several schemas were read or the object
    /// lives outside those read (a foreign key to another schema).
    pub(crate) fn display_name(&self, schema: &str, name: &str) -> String {
        if self.qualify() || !self.schemas.iter().any(|s| s == schema) {
            format!("{schema}.{name}")
        } else {
            name.to_string()
        }
    }
}

impl Table {
    pub(crate) fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Maps a foreign key action as SQLite spells it (or PostgreSQL's one-letter code) to SQL words.
pub(crate) fn fk_action(code: &str) -> String {
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
