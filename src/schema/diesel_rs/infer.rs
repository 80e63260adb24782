//! The facts behind one `[print_schema]` section and its text: tables kept by the filter,
//! their columns with diesel's type for each, the foreign keys `joinable!` can express, the SQL
//! types to generate, then the rendering and the `patch_file` step. What differs between the
//! backends is asked of `pg` and `sqlite`.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;

use super::model::{Column, ColumnInfo, ColumnType, ForeignKey, Table, TableName};
use super::settings::{Docs, Section};
use super::{diff, names, pg, render, sqlite};
use crate::db::AnyConnection;
use crate::error;
use crate::output::Output;

/// A connection as one of the two backends, with what was read of its catalog.
enum Reader<'a> {
    Pg(&'a mut diesel::PgConnection, pg::Catalog),
    Sqlite(&'a mut diesel::SqliteConnection, sqlite::Catalog),
}

impl Reader<'_> {
    fn primary_keys(&mut self, table: &TableName) -> anyhow::Result<Vec<String>> {
        Ok(match self {
            Reader::Pg(c, catalog) => catalog.primary_keys(c, table)?,
            Reader::Sqlite(c, catalog) => catalog.primary_keys(c, table)?,
        })
    }
}

/// The schema.rs text of one section. The catalog is read in a fixed number of queries,
/// whatever the number of tables.
pub(crate) fn generate(
    conn: &mut AnyConnection,
    section: &Section,
    out: &Output,
) -> anyhow::Result<String> {
    let schema = section.schema.as_deref();
    let (mut reader, names, keys) = match conn {
        AnyConnection::Postgresql(c) => {
            let names = pg::table_names(c, schema).context("reading the table names")?;
            let keys = pg::foreign_keys(c, schema).context("reading the foreign keys")?;
            let catalog = pg::Catalog::load(
                c,
                schema,
                &names,
                section.sort_by_name,
                &section.pg_domains_as_custom_types,
                section.with_docs != Docs::None,
            )
            .context("reading the primary keys, columns and comments")?;
            (Reader::Pg(c, catalog), names, keys)
        }
        AnyConnection::Sqlite(c) => {
            if schema.is_some() {
                return Err(schema_on_sqlite(section));
            }
            let names = sqlite::table_names(c).context("reading the table names")?;
            let mut catalog = sqlite::Catalog::load(c).context("reading the columns")?;
            let keys = catalog
                .foreign_keys(c)
                .context("reading the foreign keys")?;
            (Reader::Sqlite(c, catalog), names, keys)
        }
    };
    let names: Vec<TableName> = names
        .into_iter()
        .filter(|t| section.filter.keeps(&t.sql_name))
        .collect();
    let mut keys = keys;
    keys.sort();
    for key in &mut keys {
        for name in &mut key.columns_rust {
            if names::is_reserved(name) {
                name.push('_');
            }
        }
    }
    let joinable = usable_keys(&mut reader, &keys, &names)?;
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let table = load_table(&mut reader, name, section, &keys, out)?;
        tables.push(table);
    }
    let custom = section
        .generate_missing_types
        .then(|| custom_types(&reader, &tables, section));
    let text = render::render(&render::Schema {
        module: section.schema.as_deref(),
        tables: &tables,
        foreign_keys: &joinable,
        docs: section.with_docs,
        grouping: section.grouping,
        import_types: section.import_types.as_deref(),
        custom: custom.as_deref(),
        derives: &section.custom_type_derives,
    });
    match &section.patch_file {
        None => Ok(text),
        Some(path) => {
            let patch = read_patch(path)?;
            diff::apply(&text, &patch).map_err(|e| {
                error::usage(format!(
                    "patch_file `{}` does not apply to the generated schema: {e:#}",
                    path.display()
                ))
            })
        }
    }
}

/// The error for a section naming a `schema` on SQLite.
pub(crate) fn schema_on_sqlite(section: &Section) -> anyhow::Error {
    error::usage(format!(
        "[print_schema] section `{}`: `schema` is for PostgreSQL; SQLite prints only the main \
         database",
        section.name
    ))
}

/// The text of a `patch_file` (exit 2 naming it when it cannot be read).
pub(crate) fn read_patch(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        error::usage(format!(
            "cannot read the patch_file `{}`: {e}",
            path.display()
        ))
    })
}

/// The foreign keys `joinable!` can express: single-column, between two printed tables that
/// are not the same one, to a parent whose one-column primary key is the referenced column,
/// and the only key between its two tables.
fn usable_keys(
    reader: &mut Reader,
    keys: &[ForeignKey],
    tables: &[TableName],
) -> anyhow::Result<Vec<ForeignKey>> {
    let mut pair_count: HashMap<(&TableName, &TableName), usize> = HashMap::new();
    for key in keys {
        *pair_count.entry(key.table_pair()).or_default() += 1;
    }
    let printed: HashSet<&TableName> = tables.iter().collect();
    let mut usable = Vec::new();
    for key in keys {
        if key.parent == key.child
            || !printed.contains(&key.parent)
            || !printed.contains(&key.child)
            || key.columns.len() != 1
        {
            continue;
        }
        let parent_keys = reader.primary_keys(&key.parent)?;
        if parent_keys.is_empty() {
            return Err(no_primary_key(&key.parent));
        }
        if parent_keys.len() != 1 || key.parent_columns.first() != Some(&parent_keys[0]) {
            continue;
        }
        if pair_count.get(&key.table_pair()).copied().unwrap_or(0) > 1 {
            continue;
        }
        usable.push(key.clone());
    }
    Ok(usable)
}

fn no_primary_key(table: &TableName) -> anyhow::Error {
    anyhow::anyhow!(
        "Diesel only supports tables with primary keys. Table `{table}` has no primary key"
    )
}

fn load_table(
    reader: &mut Reader,
    name: TableName,
    section: &Section,
    keys: &[ForeignKey],
    out: &Output,
) -> anyhow::Result<Table> {
    let comment = match (&mut *reader, section.with_docs) {
        (_, Docs::None) | (Reader::Sqlite(..), _) => None,
        (Reader::Pg(_, catalog), _) => catalog.table_comment(&name),
    };
    let primary_key = reader.primary_keys(&name)?;
    if primary_key.is_empty() {
        return Err(no_primary_key(&name));
    }
    let own_keys: HashMap<&str, &ForeignKey> = keys
        .iter()
        .filter(|k| k.child == name && k.columns.len() == 1)
        .map(|k| (k.columns_rust[0].as_str(), k))
        .collect();
    let infos: Vec<ColumnInfo> = match &mut *reader {
        Reader::Pg(_, catalog) => catalog.columns(&name),
        Reader::Sqlite(c, catalog) => catalog
            .columns(c, &name, section.sort_by_name)
            .with_context(|| format!("reading the columns of `{}`", name.full_sql_name()))?,
    };
    let mut columns = Vec::with_capacity(infos.len());
    for info in infos {
        let ty = match &mut *reader {
            Reader::Pg(..) => pg_type(&info, out),
            Reader::Sqlite(c, catalog) => {
                sqlite_type(c, catalog, &info, &name, &primary_key, &own_keys, section)?
            }
        };
        columns.push(Column {
            rust_name: names::rust_name(&info.name, Some(&name.rust_name)),
            sql_name: info.name,
            ty,
            comment: info.comment,
        });
    }
    let primary_key = primary_key
        .iter()
        .map(|k| names::rust_name(k, Some(&name.rust_name)))
        .collect();
    Ok(Table {
        name,
        primary_key,
        columns,
        comment,
    })
}

/// diesel's type for a PostgreSQL column: the type's name in UpperCamelCase (`_name` is an
/// array of `name`), with its schema when that is not `public`.
fn pg_type(info: &ColumnInfo, out: &Output) -> ColumnType {
    let (is_array, name) = match info.type_name.strip_prefix('_') {
        Some(element) => (true, element),
        None => (false, info.type_name.as_str()),
    };
    let lower = name.to_lowercase();
    if is_array && (lower == "varchar" || lower == "citext") {
        out.warn(format_args!(
            "The column `{}` is of type `{name}[]`. This will cause problems when using Diesel. \
             You should consider changing the column type to `text[]`.",
            info.name
        ));
    }
    ColumnType {
        schema: info.type_schema.clone().filter(|s| s != pg::DEFAULT_SCHEMA),
        rust_name: names::upper_camel(name),
        sql_name: name.to_string(),
        is_array,
        is_nullable: info.nullable,
        max_length: info.max_length,
    }
}

/// diesel's type for a SQLite column, from the words its declared type holds.
fn sqlite_type(
    conn: &mut diesel::SqliteConnection,
    catalog: &mut sqlite::Catalog,
    info: &ColumnInfo,
    table: &TableName,
    primary_key: &[String],
    own_keys: &HashMap<&str, &ForeignKey>,
    section: &Section,
) -> anyhow::Result<ColumnType> {
    let mut declared = info.type_name.to_lowercase();
    if declared == "generated always" {
        declared.clear();
    }
    let Some(mut ty) = sqlite::diesel_type(&declared) else {
        return Err(anyhow::anyhow!(
            "Unsupported type: `{declared}` (column `{}` of `{}`)",
            info.name,
            table.sql_name
        ));
    };
    if ty == "Integer" && section.sqlite_bigint_rowid {
        let own = catalog.is_rowid(conn, table, primary_key, &info.name, &declared)?;
        let referenced = match own_keys.get(info.name.as_str()) {
            Some(key) => {
                let parent_keys = catalog.primary_keys(conn, &key.parent)?;
                match parent_keys.as_slice() {
                    [id] => catalog.is_rowid(conn, &key.parent, &parent_keys, id, "integer")?,
                    _ => false,
                }
            }
            None => false,
        };
        if own || referenced {
            ty = "BigInt";
        }
    }
    Ok(ColumnType {
        schema: None,
        rust_name: ty.to_string(),
        sql_name: ty.to_string(),
        is_array: false,
        is_nullable: info.nullable,
        max_length: info.max_length,
    })
}

/// SQL types diesel provides for every backend (with their hidden aliases).
const COMMON_TYPES: &[&str] = &[
    "Bool",
    "Integer",
    "SmallInt",
    "BigInt",
    "Binary",
    "Text",
    "Double",
    "Float",
    "Numeric",
    "Timestamp",
    "Date",
    "Time",
    "Float4",
    "Smallint",
    "Int2",
    "Int4",
    "Int8",
    "Bigint",
    "Float8",
    "Decimal",
    "VarChar",
    "Varchar",
    "Char",
    "Tinytext",
    "Mediumtext",
    "Longtext",
    "Tinyblob",
    "Blob",
    "Mediumblob",
    "Longblob",
    "Varbinary",
    "Bit",
];

/// SQL types diesel provides for PostgreSQL only.
const PG_TYPES: &[&str] = &[
    "Cidr",
    "Citext",
    "Inet",
    "Jsonb",
    "MacAddr",
    "MacAddr8",
    "Money",
    "Oid",
    "Range",
    "Timestamptz",
    "Uuid",
    "Json",
    "PgLsn",
    "Record",
    "Interval",
    "Int4range",
    "Int8range",
    "Daterange",
    "Numrange",
    "Tsrange",
    "Tstzrange",
    "Int4multirange",
    "Int8multirange",
    "Datemultirange",
    "Nummultirange",
    "Tsmultirange",
    "Tstzmultirange",
    "SmallSerial",
    "BigSerial",
    "Serial",
    "Bytea",
    "Bpchar",
    "Macaddr",
    "Macaddr8",
];

/// Per table and column, the SQL type to generate in `sql_types` (one diesel does not provide
/// and no `except_custom_type_definitions` regex matches).
fn custom_types(
    reader: &Reader,
    tables: &[Table],
    section: &Section,
) -> Vec<Vec<Option<ColumnType>>> {
    let pg = matches!(reader, Reader::Pg(..));
    let provided = |name: &str| COMMON_TYPES.contains(&name) || (pg && PG_TYPES.contains(&name));
    tables
        .iter()
        .map(|t| {
            t.columns
                .iter()
                .map(|c| {
                    Some(&c.ty)
                        .filter(|ty| !provided(&ty.rust_name))
                        .filter(|ty| {
                            !section
                                .except_custom_types
                                .iter()
                                .any(|rx| rx.is_match(&ty.rust_name))
                        })
                        .cloned()
                })
                .collect()
        })
        .collect()
}
