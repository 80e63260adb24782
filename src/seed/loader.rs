//! The one place the seeding engine chooses a backend: the [`Loader`] trait says what seeding
//! needs from a database (its catalog, the transaction, emptying tables, deferring and checking
//! foreign keys, the bulk path for a CSV file and the last steps before COMMIT), `seed/pg.rs` and
//! `seed/sqlite.rs` implement it on diesel's connections, and [`loader`] picks one for an
//! [`AnyConnection`]. A third backend is one more file implementing the trait and one more arm
//! here. The catalog types the implementations return, and the CSV rows they are handed, live
//! here too.

use std::path::Path;

use diesel::prelude::*;
use diesel::sql_types::Text;
use indicatif::ProgressBar;

use super::csv::{self, FileReader, Record};
use super::Sink;
use crate::db::{AnyConnection, TableName};

/// What seeding asks of one backend. Every method runs on the seed's connection, inside its
/// transaction unless it says otherwise.
pub(crate) trait Loader {
    /// The database's name as messages say it (`PostgreSQL`, `SQLite`).
    fn database(&self) -> &'static str;

    /// Starts the seed's transaction (before [`crate::db::pooled_transaction_setup`]).
    fn begin(&mut self) -> anyhow::Result<()>;

    /// Something that tells one transaction from the next on the connection: a `COMMIT; BEGIN;`
    /// in a user's `.sql` file leaves a transaction open, but not the same one.
    fn transaction_identity(&mut self) -> anyhow::Result<String>;

    /// The tables, views and foreign tables a seed file's name may be matched against.
    fn relations(&mut self) -> anyhow::Result<Vec<Relation>>;

    /// Every foreign key between tables.
    fn foreign_keys(&mut self) -> anyhow::Result<Vec<ForeignKey>>;

    /// What `table` is: COPY and INSERT load tables and views with an `INSTEAD OF INSERT`
    /// trigger, as `psql \copy` and `sqlite3 .import` do.
    fn target_kind(&mut self, table: &TableName) -> anyhow::Result<TargetKind>;

    /// The columns of a table [`Loader::target_kind`] found, in their declared order.
    fn columns(&mut self, table: &TableName) -> anyhow::Result<Vec<Column>>;

    /// Empties tables, given children first, refusing when a table outside the list still
    /// references one of them (never cascading silently).
    fn empty_tables(&mut self, tables: &[TableName]) -> anyhow::Result<()>;

    /// Defers foreign-key checks to the commit, for tables whose keys form a cycle.
    fn defer_foreign_keys(&mut self) -> anyhow::Result<()>;

    /// Checks the foreign keys whose checks were deferred, so that a dangling key is reported
    /// with its table and row rather than as a bare failed commit.
    fn check_deferred_foreign_keys(&mut self) -> anyhow::Result<()>;

    /// Loads one CSV file's rows into its table through the backend's bulk path, inside a
    /// savepoint; a refused row is named by its row and line. Returns the rows stored.
    fn load_csv(&mut self, target: &CsvTarget, stream: &mut RowStream<'_>) -> anyhow::Result<u64>;

    /// Checks left until every file has loaded (before a dry run rolls back).
    fn verify(&mut self, loaded: &[CsvTarget]) -> anyhow::Result<()>;

    /// The last steps, just before COMMIT and never in a dry run (PostgreSQL's `setval`, which
    /// cannot be rolled back).
    fn before_commit(&mut self, loaded: &[CsvTarget], sink: &dyn Sink) -> anyhow::Result<()>;
}

/// The seeding backend of a connection: the one dispatch point of the engine.
pub(crate) fn loader(conn: &mut AnyConnection) -> &mut dyn Loader {
    match conn {
        AnyConnection::Postgresql(pg) => pg,
        AnyConnection::Sqlite(sq) => sq,
    }
}

/// A column of a seeded table.
#[derive(Debug, Clone, QueryableByName)]
pub(crate) struct Column {
    #[diesel(sql_type = Text)]
    pub(crate) name: String,
    /// The declared type (PostgreSQL's `format_type`, SQLite's declared type).
    #[diesel(sql_type = Text)]
    pub(crate) sql_type: String,
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

/// The catalog's answer about a seed file's target: the relation's kind (`pg_class.relkind` or
/// `sqlite_master.type`) and how many INSERT triggers it has.
#[derive(QueryableByName)]
pub(super) struct TargetRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    triggers: i64,
}

impl TargetKind {
    /// Reads the catalog's answer (no row: no such relation).
    pub(super) fn of(found: &[TargetRow]) -> TargetKind {
        let Some(row) = found.first() else {
            return TargetKind::Missing;
        };
        match row.kind.as_str() {
            "v" | "view" if row.triggers > 0 => TargetKind::InsertableView,
            "v" | "view" | "m" => TargetKind::View,
            _ => TargetKind::Table,
        }
    }
}

/// A relation a CSV file may name: its schema (PostgreSQL) and name, and whether it is on the
/// search path (always on SQLite).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub(crate) struct Relation {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub(crate) schema: Option<String>,
    #[diesel(sql_type = Text)]
    pub(crate) name: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub(crate) visible: bool,
}

/// `"table" ("a", "b")`: the quoted target of a COPY or an INSERT.
pub(super) fn quoted_target(table: &TableName, columns: &[String]) -> String {
    let columns: Vec<String> = columns.iter().map(|c| crate::db::quote_ident(c)).collect();
    format!("{} ({})", table.quoted(), columns.join(", "))
}

/// A CSV file's table and the columns its header names, as the backends load it.
pub(crate) struct CsvTarget {
    pub(crate) table: TableName,
    /// The header's columns, in the file's order.
    pub(crate) columns: Vec<Column>,
    /// Their names, as the bulk statements list them.
    pub(crate) names: Vec<String>,
    /// The table references itself and its keys are not already deferred to the commit (a
    /// cycle): a backend that checks keys row by row defers them for this file.
    pub(crate) self_referencing: bool,
}

/// The data rows of one CSV file, checked for width, with progress.
pub(crate) struct RowStream<'a> {
    pub(super) path: &'a Path,
    pub(super) reader: FileReader,
    /// The file's delimiter and encoding, to read it again when looking for a refused row.
    pub(super) dialect: csv::Dialect,
    pub(super) record: Record,
    pub(super) width: usize,
    /// Data rows read so far (1 = the first row after the header).
    pub(super) row: u64,
    pub(super) bar: &'a ProgressBar,
    pub(super) bytes_before: u64,
}

impl RowStream<'_> {
    /// Advances to the next data row; `Ok(false)` at the end of the file.
    pub(super) fn next(&mut self) -> anyhow::Result<bool> {
        crate::interrupt::check()?;
        let more = self
            .reader
            .read(&mut self.record)
            .map_err(|e| anyhow::anyhow!("{} {}", self.path.display(), e.at_row(self.row + 1)))?;
        if !more {
            return Ok(false);
        }
        self.row += 1;
        if self.record.len() != self.width {
            anyhow::bail!(
                "{} {}: expected {} fields as in the header, found {}",
                self.path.display(),
                self.at(),
                self.width,
                self.record.len()
            );
        }
        if self.row.is_multiple_of(4096) {
            self.bar
                .set_position(self.bytes_before + self.reader.bytes_read());
            self.bar.set_message(format!(
                "{}: {} rows",
                self.path
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                self.row
            ));
        }
        Ok(true)
    }

    /// `row N (line L)` for the current row.
    fn at(&self) -> String {
        format!("row {} (line {})", self.row, self.record.line)
    }
}
