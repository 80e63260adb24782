//! What print-schema reads from PostgreSQL, with the queries diesel_cli 2.3 runs, so that the
//! same database gives the same facts: `information_schema` for tables, primary keys and
//! columns (type names as `udt_name`, `_` in front for arrays), `pg_constraint` for foreign keys,
//! `col_description`/`obj_description` for comments. Where diesel_cli asks once per table, the
//! question is asked here once for the whole schema ([`Catalog`]), so a schema of 1,000 tables
//! costs the same four queries (five with comments) as one of 10.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{Array, Integer, Nullable, Text};
use diesel::PgConnection;

use super::model::{ColumnInfo, ForeignKey, TableName};
use super::names;

/// The schema diesel_cli takes as the default (it does not read `search_path`).
pub(crate) const DEFAULT_SCHEMA: &str = "public";

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Base tables of `schema` (default `public`) whose names do not start with `__`, sorted by
/// name byte for byte.
pub(crate) fn table_names(
    conn: &mut PgConnection,
    schema: Option<&str>,
) -> QueryResult<Vec<TableName>> {
    let mut names: Vec<String> = diesel::sql_query(
        "SELECT table_name::text AS name FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name NOT LIKE '\\_\\_%' \
         AND table_type LIKE 'BASE TABLE'",
    )
    .bind::<Text, _>(schema.unwrap_or(DEFAULT_SCHEMA))
    .load::<NameRow>(conn)?
    .into_iter()
    .map(|r| r.name)
    .collect();
    names.sort_unstable();
    let schema = schema.filter(|s| *s != DEFAULT_SCHEMA);
    Ok(names
        .into_iter()
        .map(|name| TableName::new(name, schema.map(str::to_string)))
        .collect())
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    type_name: String,
    #[diesel(sql_type = Nullable<Text>)]
    type_schema: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    domain_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    domain_schema: Option<String>,
    #[diesel(sql_type = Text)]
    nullable: String,
    #[diesel(sql_type = Nullable<Integer>)]
    max_length: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

#[derive(QueryableByName)]
struct CommentRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    comment: String,
}

/// What diesel_cli asks of each table in turn (its primary key, its columns, its comment), read
/// for every table of one schema at once: one query each, whatever the number of tables. The
/// queries are diesel_cli's per-table ones with the table condition dropped and the table name
/// added to each row, so each table gets the rows, in the order, that its own query would give.
pub(crate) struct Catalog {
    schema: String,
    primary_keys: HashMap<String, Vec<String>>,
    columns: HashMap<String, Vec<ColumnInfo>>,
    comments: HashMap<String, String>,
}

impl Catalog {
    /// Reads `schema` (default `public`); `tables` are the schema's tables print-schema may
    /// print (each gets an entry, empty when it has no primary key). Comments are read only
    /// when `with_comments`; columns come by position or by name, and a column whose domain
    /// matches one of `domains` gets the domain as its type.
    pub(crate) fn load(
        conn: &mut PgConnection,
        schema: Option<&str>,
        tables: &[TableName],
        by_name: bool,
        domains: &[regex::Regex],
        with_comments: bool,
    ) -> QueryResult<Catalog> {
        let schema = schema.unwrap_or(DEFAULT_SCHEMA).to_string();
        let mut primary_keys: HashMap<String, Vec<String>> = tables
            .iter()
            .map(|t| (t.sql_name.clone(), Vec::new()))
            .collect();
        for row in diesel::sql_query(
            "SELECT table_name::text AS table_name, column_name::text AS name \
             FROM information_schema.key_column_usage \
             WHERE constraint_name IN (SELECT constraint_name FROM information_schema.table_constraints \
             WHERE constraint_type = 'PRIMARY KEY') \
             AND table_schema = $1 ORDER BY table_name, ordinal_position",
        )
        .bind::<Text, _>(&schema)
        .load::<KeyRow>(conn)?
        {
            primary_keys.entry(row.table_name).or_default().push(row.name);
        }
        let columns = all_columns(conn, &schema, by_name, domains, with_comments)?;
        let comments = if with_comments {
            table_comments(conn, &schema)?
        } else {
            HashMap::new()
        };
        Ok(Catalog {
            schema,
            primary_keys,
            columns,
            comments,
        })
    }

    /// The primary key's columns in key order (empty when the table has none). A table of
    /// another schema, or one `load` was not told about (a foreign key's parent that is not
    /// printed), is asked about alone.
    pub(crate) fn primary_keys(
        &mut self,
        conn: &mut PgConnection,
        table: &TableName,
    ) -> QueryResult<Vec<String>> {
        let schema = table.schema.as_deref().unwrap_or(DEFAULT_SCHEMA);
        if schema == self.schema {
            if let Some(keys) = self.primary_keys.get(&table.sql_name) {
                return Ok(keys.clone());
            }
        }
        let keys = primary_keys(conn, table)?;
        if schema == self.schema {
            self.primary_keys
                .insert(table.sql_name.clone(), keys.clone());
        }
        Ok(keys)
    }

    /// The table's columns (none for a table of another schema).
    pub(crate) fn columns(&mut self, table: &TableName) -> Vec<ColumnInfo> {
        if table.schema.as_deref().unwrap_or(DEFAULT_SCHEMA) != self.schema {
            return Vec::new();
        }
        self.columns.remove(&table.sql_name).unwrap_or_default()
    }

    /// `COMMENT ON TABLE`, if any (and if `load` read comments).
    pub(crate) fn table_comment(&mut self, table: &TableName) -> Option<String> {
        if table.schema.as_deref().unwrap_or(DEFAULT_SCHEMA) != self.schema {
            return None;
        }
        self.comments.remove(&table.sql_name)
    }
}

/// The primary key's columns of one table, in key order (diesel_cli's own query).
fn primary_keys(conn: &mut PgConnection, table: &TableName) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query(
        "SELECT column_name::text AS name FROM information_schema.key_column_usage \
         WHERE constraint_name IN (SELECT constraint_name FROM information_schema.table_constraints \
         WHERE constraint_type = 'PRIMARY KEY') \
         AND table_name = $1 AND table_schema = $2 ORDER BY ordinal_position",
    )
    .bind::<Text, _>(&table.sql_name)
    .bind::<Text, _>(table.schema.as_deref().unwrap_or(DEFAULT_SCHEMA))
    .load::<NameRow>(conn)?
    .into_iter()
    .map(|r| r.name)
    .collect())
}

/// Every column of every relation of `schema`, per table name, each table's in order. For the
/// comments, diesel_cli leaves a table of the default schema unqualified (found through
/// `search_path`); it is qualified here, so that a `search_path` set by `DATABASE_SCHEMA` still
/// finds it. Both name the same table on a default setup.
fn all_columns(
    conn: &mut PgConnection,
    schema: &str,
    by_name: bool,
    domains: &[regex::Regex],
    with_comments: bool,
) -> QueryResult<HashMap<String, Vec<ColumnInfo>>> {
    let sql = format!(
        "SELECT c.table_name::text AS table_name, column_name::text AS column_name, \
         udt_name::text AS type_name, \
         udt_schema::text AS type_schema, domain_name::text AS domain_name, \
         domain_schema::text AS domain_schema, is_nullable::text AS nullable, \
         character_maximum_length::integer AS max_length, {} AS comment \
         FROM information_schema.columns c WHERE table_schema = $1 \
         ORDER BY c.table_name, {}",
        if with_comments {
            "col_description((quote_ident(c.table_schema) || '.' || quote_ident(c.table_name))\
             ::regclass, ordinal_position::integer)"
        } else {
            "NULL::text"
        },
        // The catalog's own column (type `name`, C collation), not the text output column.
        if by_name {
            "c.column_name"
        } else {
            "c.ordinal_position"
        }
    );
    let rows: Vec<ColumnRow> = diesel::sql_query(sql).bind::<Text, _>(schema).load(conn)?;
    let mut columns: HashMap<String, Vec<ColumnInfo>> = HashMap::new();
    for row in rows {
        let (type_name, type_schema) = match row.domain_name {
            Some(domain) if domains.iter().any(|rx| rx.is_match(&domain)) => {
                (domain, row.domain_schema)
            }
            _ => (row.type_name, row.type_schema),
        };
        let max_length = row
            .max_length
            .map(|n| {
                u64::try_from(n).map_err(|e| {
                    diesel::result::Error::DeserializationError(
                        format!("column length {n} is not a length: {e}").into(),
                    )
                })
            })
            .transpose()?;
        columns.entry(row.table_name).or_default().push(ColumnInfo {
            name: row.column_name,
            type_name,
            type_schema,
            nullable: row.nullable == "YES",
            max_length,
            comment: row.comment,
        });
    }
    Ok(columns)
}

/// `COMMENT ON TABLE` of every relation of `schema` that has one.
fn table_comments(conn: &mut PgConnection, schema: &str) -> QueryResult<HashMap<String, String>> {
    Ok(diesel::sql_query(
        "SELECT c.relname::text AS table_name, obj_description(c.oid, 'pg_class') AS comment \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND obj_description(c.oid, 'pg_class') IS NOT NULL",
    )
    .bind::<Text, _>(schema)
    .load::<CommentRow>(conn)?
    .into_iter()
    .map(|r| (r.table_name, r.comment))
    .collect())
}

#[derive(QueryableByName)]
struct ForeignKeyRow {
    #[diesel(sql_type = Text)]
    self_schema: String,
    #[diesel(sql_type = Text)]
    self_table: String,
    #[diesel(sql_type = Array<Text>)]
    self_columns: Vec<String>,
    #[diesel(sql_type = Text)]
    foreign_schema: String,
    #[diesel(sql_type = Text)]
    foreign_table: String,
    #[diesel(sql_type = Array<Text>)]
    foreign_columns: Vec<String>,
}

/// Foreign keys between tables of `schema` (default `public`), one per referencing and
/// referenced table pair: the key columns of all constraints between the same two tables are
/// gathered into one row, as diesel_cli's query does.
pub(crate) fn foreign_keys(
    conn: &mut PgConnection,
    schema: Option<&str>,
) -> QueryResult<Vec<ForeignKey>> {
    let rows: Vec<ForeignKeyRow> = diesel::sql_query(
        "SELECT sch.nspname::text AS self_schema, tbl.relname::text AS self_table, \
         array_agg(col.attname::text ORDER BY u.attposition) AS self_columns, \
         f_sch.nspname::text AS foreign_schema, f_tbl.relname::text AS foreign_table, \
         array_agg(f_col.attname::text ORDER BY f_u.attposition) AS foreign_columns \
         FROM pg_constraint c \
         LEFT JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS u(attnum, attposition) ON TRUE \
         LEFT JOIN LATERAL unnest(c.confkey) WITH ORDINALITY AS f_u(attnum, attposition) \
           ON f_u.attposition = u.attposition \
         JOIN pg_class tbl ON tbl.oid = c.conrelid \
         JOIN pg_namespace sch ON sch.oid = tbl.relnamespace \
         LEFT JOIN pg_attribute col ON col.attrelid = tbl.oid AND col.attnum = u.attnum \
         LEFT JOIN pg_class f_tbl ON f_tbl.oid = c.confrelid \
         LEFT JOIN pg_namespace f_sch ON f_sch.oid = f_tbl.relnamespace \
         LEFT JOIN pg_attribute f_col ON f_col.attrelid = f_tbl.oid AND f_col.attnum = f_u.attnum \
         WHERE sch.nspname = $1 AND f_sch.nspname = $1 AND c.contype = 'f' \
         GROUP BY sch.nspname, tbl.relname, f_sch.nspname, f_tbl.relname \
         ORDER BY sch.nspname, tbl.relname",
    )
    .bind::<Text, _>(schema.unwrap_or(DEFAULT_SCHEMA))
    .load(conn)?;
    let local = |schema: String| Some(schema).filter(|s| s != DEFAULT_SCHEMA);
    Ok(rows
        .into_iter()
        .map(|row| {
            let child = TableName::new(row.self_table, local(row.self_schema));
            let parent = TableName::new(row.foreign_table, local(row.foreign_schema));
            let columns_rust = row
                .self_columns
                .iter()
                .map(|c| names::rust_name(c, Some(&child.rust_name)))
                .collect();
            ForeignKey {
                child,
                parent,
                columns: row.self_columns,
                columns_rust,
                parent_columns: row.foreign_columns,
            }
        })
        .collect())
}
