//! What print-schema reads from SQLite, the way diesel_cli 2.3 reads it: `sqlite_master` for the
//! tables, `PRAGMA table_xinfo` for columns and primary keys (a table without one is keyed by
//! its rowid), `PRAGMA foreign_key_list` for foreign keys (one per referencing column), and the
//! declared type names mapped to diesel's SQLite types by the words they contain.

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

fn xinfo(conn: &mut SqliteConnection, table: &TableName) -> QueryResult<Vec<XInfoRow>> {
    diesel::sql_query(format!(
        "PRAGMA table_xinfo({})",
        quote_literal(&table.sql_name)
    ))
    .load(conn)
}

/// The names SQLite answers to for a rowid, in the order diesel_cli tries them.
const ROWID_ALIASES: &[&str] = &["rowid", "oid", "_rowid_"];

/// The primary key's columns in column order; a table without one is keyed by the first rowid
/// alias that no column uses.
pub(crate) fn primary_keys(
    conn: &mut SqliteConnection,
    table: &TableName,
) -> QueryResult<Vec<String>> {
    let rows = xinfo(conn, table)?;
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
    conn: &mut SqliteConnection,
    table: &TableName,
    by_name: bool,
) -> QueryResult<Vec<ColumnInfo>> {
    let mut columns: Vec<ColumnInfo> = xinfo(conn, table)?
        .into_iter()
        .map(|r| ColumnInfo {
            name: r.name,
            type_name: r.type_name,
            type_schema: None,
            nullable: !r.notnull,
            max_length: None,
            comment: None,
        })
        .collect();
    if let [key] = primary_keys(conn, table)?.as_slice() {
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

#[derive(QueryableByName)]
struct ForeignKeyRow {
    #[diesel(sql_type = Text)]
    table: String,
    #[diesel(sql_type = Text)]
    from: String,
    #[diesel(sql_type = Nullable<Text>)]
    to: Option<String>,
}

/// Every foreign key column of every table, each as a key of its own (a composite key gives one
/// per column, as diesel_cli reads them); a key naming no parent column points at the parent's
/// primary key.
pub(crate) fn foreign_keys(conn: &mut SqliteConnection) -> QueryResult<Vec<ForeignKey>> {
    let mut keys = Vec::new();
    for child in table_names(conn)? {
        let rows: Vec<ForeignKeyRow> = diesel::sql_query(format!(
            "PRAGMA foreign_key_list({})",
            quote_literal(&child.sql_name)
        ))
        .load(conn)?;
        for row in rows {
            let parent = TableName::new(row.table, None);
            let parent_columns = match row.to {
                Some(to) => vec![to],
                None => primary_keys(conn, &parent)?,
            };
            let rust = names::rust_name(&row.from, Some(&child.rust_name));
            keys.push(ForeignKey {
                child: child.clone(),
                parent,
                columns: vec![row.from],
                columns_rust: vec![rust],
                parent_columns,
            });
        }
    }
    Ok(keys)
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

/// Whether `column` (declared `integer`) is the table's rowid: its only primary key column, in a
/// table with a rowid. Needs `PRAGMA table_list` (SQLite 3.37).
pub(crate) fn is_rowid(
    conn: &mut SqliteConnection,
    table: &TableName,
    keys: &[String],
    column: &str,
    declared: &str,
) -> anyhow::Result<bool> {
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
    if declared != "integer" || !matches!(keys, [key] if key == column) {
        return Ok(false);
    }
    let rows: Vec<TableListRow> = diesel::sql_query(format!(
        "PRAGMA table_list({})",
        quote_literal(&table.sql_name)
    ))
    .load(conn)?;
    Ok(rows
        .iter()
        .find(|r| r.name == table.sql_name)
        .is_some_and(|r| !r.wr))
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
