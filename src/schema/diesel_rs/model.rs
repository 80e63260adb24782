//! The facts print-schema renders: tables with their Rust names, columns with diesel's type for
//! each, primary keys and foreign keys. Ordering (`Ord`) follows diesel_cli's, field by field,
//! since the order of `joinable!` lines and table groups depends on it.

use std::fmt;

use super::names;

/// A table's SQL and Rust names, and its schema when it is not the default one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TableName {
    pub(crate) sql_name: String,
    pub(crate) rust_name: String,
    pub(crate) schema: Option<String>,
    pub(crate) rust_schema: Option<String>,
}

impl TableName {
    pub(crate) fn new(sql_name: String, schema: Option<String>) -> TableName {
        TableName {
            rust_name: names::rust_name(&sql_name, None),
            sql_name,
            rust_schema: schema.as_deref().map(|s| names::rust_name(s, None)),
            schema,
        }
    }

    /// `schema.table`, or `table` in the default schema.
    pub(crate) fn full_sql_name(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.sql_name),
            None => self.sql_name.clone(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rust_schema {
            Some(schema) => write!(f, "{schema}.{}", self.rust_name),
            None => f.write_str(&self.rust_name),
        }
    }
}

/// One column as the catalog describes it, before its type is mapped.
#[derive(Clone, Debug)]
pub(crate) struct ColumnInfo {
    pub(crate) name: String,
    pub(crate) type_name: String,
    pub(crate) type_schema: Option<String>,
    pub(crate) nullable: bool,
    pub(crate) max_length: Option<u64>,
    pub(crate) comment: Option<String>,
}

/// diesel's SQL type for a column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnType {
    /// The type's schema when it is not the default one (PostgreSQL).
    pub(crate) schema: Option<String>,
    pub(crate) rust_name: String,
    pub(crate) sql_name: String,
    pub(crate) is_array: bool,
    pub(crate) is_nullable: bool,
    pub(crate) max_length: Option<u64>,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (open_null, close_null) = if self.is_nullable {
            ("Nullable<", ">")
        } else {
            ("", "")
        };
        let (open_array, close_array) = if self.is_array {
            ("Array<Nullable<", ">>")
        } else {
            ("", "")
        };
        write!(
            f,
            "{open_null}{open_array}{}{close_array}{close_null}",
            self.rust_name
        )
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub(crate) sql_name: String,
    pub(crate) rust_name: String,
    pub(crate) ty: ColumnType,
    pub(crate) comment: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub(crate) name: TableName,
    /// Rust names of the primary key's columns, in key order.
    pub(crate) primary_key: Vec<String>,
    pub(crate) columns: Vec<Column>,
    pub(crate) comment: Option<String>,
}

/// A foreign key from `child` to `parent`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ForeignKey {
    pub(crate) child: TableName,
    pub(crate) parent: TableName,
    pub(crate) columns: Vec<String>,
    pub(crate) columns_rust: Vec<String>,
    pub(crate) parent_columns: Vec<String>,
}

impl ForeignKey {
    /// The two tables, smaller first: keys between the same pair of tables, in either
    /// direction, are ambiguous for `joinable!`.
    pub(crate) fn table_pair(&self) -> (&TableName, &TableName) {
        if self.parent <= self.child {
            (&self.parent, &self.child)
        } else {
            (&self.child, &self.parent)
        }
    }
}
