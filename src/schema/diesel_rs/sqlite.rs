//! What print-schema reads from SQLite, the way diesel_cli 2.3 reads it: `sqlite_master` for the
//! tables, `PRAGMA table_xinfo` for columns and primary keys (a table without one is keyed by
//! its rowid), `PRAGMA foreign_key_list` for foreign keys (one per referencing column), and the
//! declared type names mapped to diesel's SQLite types by the words they contain. diesel_cli
//! runs the PRAGMAs table by table; [`Catalog`] runs each once for all tables.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel::SqliteConnection;

use super::model::{ColumnInfo, ForeignKey, TableName};
use super::names;

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Tables of the main database, without SQLite's own and those whose names start with `__`.
pub(crate) fn table_names(conn: &mut SqliteConnection) -> QueryResult<Vec<TableName>> {
    Ok(diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE name NOT LIKE '\\_\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'sqlite%' AND type = 'table' ORDER BY name",
    )
    .load::<NameRow>(conn)?
    .into_iter()
    .map(|r| TableName::new(r.name, None))
    .collect())
}

#[derive(QueryableByName)]
struct XInfoRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    #[diesel(column_name = "type")]
    type_name: String,
    #[diesel(sql_type = Bool)]
    notnull: bool,
    #[diesel(sql_type = Bool)]
    pk: bool,
}

#[derive(QueryableByName)]
struct TableXInfoRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(embed)]
    column: XInfoRow,
}

#[derive(QueryableByName)]
struct ForeignKeyRow {
    #[diesel(sql_type = Text)]
    child: String,
    #[diesel(sql_type = Text)]
    parent: String,
    #[diesel(sql_type = Text)]
    from_column: String,
    #[diesel(sql_type = Nullable<Text>)]
    to_column: Option<String>,
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Text)]
    version: String,
}

#[derive(QueryableByName)]
struct TableListRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    wr: bool,
}

/// The names SQLite answers to for a rowid, in the order diesel_cli tries them.
const ROWID_ALIASES: &[&str] = &["rowid", "oid", "_rowid_"];

/// What diesel_cli asks of each table in turn with a PRAGMA (`table_xinfo`,
/// `foreign_key_list`, `table_list`), asked of every table at once through the PRAGMAs'
/// table-valued functions: one query each, whatever the number of tables. A table the first
/// query did not cover (a virtual table, whose module might be missing from this build and must
/// then fail only when that table is printed; a name written in another case in a REFERENCES
/// clause) is asked about alone with diesel_cli's own PRAGMA, as before.
pub(crate) struct Catalog {
    xinfo: HashMap<String, Vec<XInfoRow>>,
    /// Per table name, whether it has a rowid (`PRAGMA table_list`'s `wr` is off); read on the
    /// first question, with the SQLite version check it needs.
    rowid_tables: Option<HashMap<String, bool>>,
}

impl Catalog {
    pub(crate) fn load(conn: &mut SqliteConnection) -> QueryResult<Catalog> {
        let rows: Vec<TableXInfoRow> = diesel::sql_query(
            "SELECT m.name AS table_name, p.name AS name, p.type AS type, \
             p.\"notnull\" AS \"notnull\", p.pk AS pk \
             FROM sqlite_master m JOIN pragma_table_xinfo(m.name) p \
             WHERE m.type = 'table' AND m.sql NOT LIKE 'CREATE VIRTUAL %' \
             ORDER BY m.name, p.cid",
        )
        .load(conn)?;
        let mut xinfo: HashMap<String, Vec<XInfoRow>> = HashMap::new();
        for row in rows {
            xinfo.entry(row.table_name).or_default().push(row.column);
        }
        Ok(Catalog {
            xinfo,
            rowid_tables: None,
        })
    }

    fn xinfo(
        &mut self,
        conn: &mut SqliteConnection,
        table: &TableName,
    ) -> QueryResult<&[XInfoRow]> {
        if !self.xinfo.contains_key(&table.sql_name) {
            let rows = diesel::sql_query(format!(
                "PRAGMA table_xinfo({})",
                quote_literal(&table.sql_name)
            ))
            .load(conn)?;
            self.xinfo.insert(table.sql_name.clone(), rows);
        }
        Ok(self
            .xinfo
            .get(&table.sql_name)
            .map(Vec::as_slice)
            .unwrap_or_default())
    }

    /// The primary key's columns in column order; a table without one is keyed by the first
    /// rowid alias that no column uses.
    pub(crate) fn primary_keys(
        &mut self,
        conn: &mut SqliteConnection,
        table: &TableName,
    ) -> QueryResult<Vec<String>> {
        let rows = self.xinfo(conn, table)?;
        let mut keys: Vec<String> = rows
            .iter()
            .filter(|r| r.pk)
            .map(|r| r.name.clone())
            .collect();
        if keys.is_empty() {
            if let Some(alias) = ROWID_ALIASES
                .iter()
                .find(|alias| !rows.iter().any(|r| r.name == **alias))
            {
                keys.push((*alias).to_string());
            }
        }
        Ok(keys)
    }

    /// The table's columns; a rowid key that is no column comes first, as `Integer NOT NULL`.
    pub(crate) fn columns(
        &mut self,
        conn: &mut SqliteConnection,
        table: &TableName,
        by_name: bool,
    ) -> QueryResult<Vec<ColumnInfo>> {
        let mut columns: Vec<ColumnInfo> = self
            .xinfo(conn, table)?
            .iter()
            .map(|r| ColumnInfo {
                name: r.name.clone(),
                type_name: r.type_name.clone(),
                type_schema: None,
                nullable: !r.notnull,
                max_length: None,
                comment: None,
            })
            .collect();
        if let [key] = self.primary_keys(conn, table)?.as_slice() {
            if !columns.iter().any(|c| &c.name == key) {
                columns.insert(
                    0,
                    ColumnInfo {
                        name: key.clone(),
                        type_name: "Integer".to_string(),
                        type_schema: None,
                        nullable: false,
                        max_length: None,
                        comment: None,
                    },
                );
            }
        }
        if by_name {
            columns.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(columns)
    }

    /// Every foreign key column of every table `table_names` lists, each as a key of its own (a
    /// composite key gives one per column, as diesel_cli reads them); a key naming no parent
    /// column points at the parent's primary key.
    pub(crate) fn foreign_keys(
        &mut self,
        conn: &mut SqliteConnection,
    ) -> QueryResult<Vec<ForeignKey>> {
        let rows: Vec<ForeignKeyRow> = diesel::sql_query(
            "SELECT m.name AS child, f.\"table\" AS parent, f.\"from\" AS from_column, \
             f.\"to\" AS to_column \
             FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f \
             WHERE m.name NOT LIKE '\\_\\_%' ESCAPE '\\' AND m.name NOT LIKE 'sqlite%' \
             AND m.type = 'table' ORDER BY m.name, f.id, f.seq",
        )
        .load(conn)?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let child = TableName::new(row.child, None);
            let parent = TableName::new(row.parent, None);
            let parent_columns = match row.to_column {
                Some(to) => vec![to],
                None => self.primary_keys(conn, &parent)?,
            };
            let rust = names::rust_name(&row.from_column, Some(&child.rust_name));
            keys.push(ForeignKey {
                child,
                parent,
                columns: vec![row.from_column],
                columns_rust: vec![rust],
                parent_columns,
            });
        }
        Ok(keys)
    }

    /// Whether `column` (declared `integer`) is the table's rowid: its only primary key column,
    /// in a table with a rowid. Needs `PRAGMA table_list` (SQLite 3.37).
    pub(crate) fn is_rowid(
        &mut self,
        conn: &mut SqliteConnection,
        table: &TableName,
        keys: &[String],
        column: &str,
        declared: &str,
    ) -> anyhow::Result<bool> {
        let rowid_tables = match &mut self.rowid_tables {
            Some(tables) => tables,
            None => self.rowid_tables.insert(rowid_tables(conn)?),
        };
        if declared != "integer" || !matches!(keys, [key] if key == column) {
            return Ok(false);
        }
        Ok(rowid_tables.get(&table.sql_name).copied().unwrap_or(false))
    }
}

/// Per table name, whether it has a rowid, for every table of every attached database (the
/// first one SQLite lists when two databases have a table of that name, as `PRAGMA
/// table_list(name)` would list it first). Fails on SQLite older than 3.37.
fn rowid_tables(conn: &mut SqliteConnection) -> anyhow::Result<HashMap<String, bool>> {
    let version: VersionRow =
        diesel::sql_query("SELECT sqlite_version() AS version").get_result(conn)?;
    let parts: Vec<u32> = version
        .version
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    if parts.as_slice() < [3, 37, 0].as_slice() {
        anyhow::bail!(
            "`sqlite_integer_primary_key_is_bigint` needs SQLite 3.37 or above; this is SQLite {}",
            version.version
        );
    }
    let rows: Vec<TableListRow> =
        diesel::sql_query("SELECT name, wr FROM pragma_table_list").load(conn)?;
    let mut tables = HashMap::with_capacity(rows.len());
    for row in rows {
        tables.entry(row.name).or_insert(!row.wr);
    }
    Ok(tables)
}

/// diesel's SQLite type for a declared type (lowercased), `None` when it maps to none.
pub(crate) fn diesel_type(declared: &str) -> Option<&'static str> {
    let t = declared;
    let has = |word: &str| t.contains(word);
    Some(
        if t == "boolean" || t == "bool" || (has("tiny") && has("int")) {
            "Bool"
        } else if t == "int2" || (has("small") && has("int")) {
            "SmallInt"
        } else if t == "int8" || (has("big") && has("int")) {
            "BigInt"
        } else if has("int") {
            "Integer"
        } else if has("char") || has("clob") || has("text") {
            "Text"
        } else if has("blob") || has("binary") || t.is_empty() {
            "Binary"
        } else if has("float") || has("real") {
            "Float"
        } else if has("double") || has("num") || has("dec") {
            "Double"
        } else if t == "datetime" || t == "timestamp" {
            "Timestamp"
        } else if t == "date" {
            "Date"
        } else if t == "time" {
            "Time"
        } else {
            return None;
        },
    )
}
