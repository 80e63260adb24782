//! The backend-neutral model of a database schema: what `dbctl inspect --format json` prints and
//! `--diff` reads back, sorted so that equal schemas give equal bytes. Readers (`read/`) fill it,
//! and everything else (diff, lint, renderers) takes it as it is.

use serde::{Deserialize, Serialize};

use crate::db::Backend;

/// The version of the JSON model, bumped when a field changes meaning, disappears or is added.
/// Version 2 added comments, triggers, deferrable and `NOT VALID` constraints, composite types,
/// domains, functions and procedures, and extensions; every field it added has a default, so a
/// version 1 snapshot still loads (see [`OLDEST_MODEL_VERSION`]).
pub(crate) const MODEL_VERSION: u32 = 2;

/// The oldest snapshot version `--diff` still reads: what later versions added is then empty,
/// false or absent (which `--diff` reports as a difference if the database has it).
pub(crate) const OLDEST_MODEL_VERSION: u32 = 1;

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
    /// PostgreSQL composite types made by `CREATE TYPE ... AS (...)` (always empty on SQLite).
    #[serde(default)]
    pub(crate) composite_types: Vec<CompositeType>,
    /// PostgreSQL domains (always empty on SQLite).
    #[serde(default)]
    pub(crate) domains: Vec<Domain>,
    /// PostgreSQL functions and procedures, not those an extension owns (always empty on SQLite).
    #[serde(default)]
    pub(crate) functions: Vec<Function>,
    /// PostgreSQL extensions of the whole database, whatever schemas were read (always empty on
    /// SQLite).
    #[serde(default)]
    pub(crate) extensions: Vec<Extension>,
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
    /// `COMMENT ON TABLE` (PostgreSQL).
    #[serde(default)]
    pub(crate) comment: Option<String>,
    #[serde(default)]
    pub(crate) triggers: Vec<Trigger>,
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
    /// `COMMENT ON COLUMN` (PostgreSQL).
    #[serde(default)]
    pub(crate) comment: Option<String>,
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
    /// `DEFERRABLE`.
    #[serde(default)]
    pub(crate) deferrable: bool,
    /// `DEFERRABLE INITIALLY DEFERRED`.
    #[serde(default)]
    pub(crate) initially_deferred: bool,
    /// False for a constraint added `NOT VALID` and not validated since (PostgreSQL).
    #[serde(default = "yes")]
    pub(crate) validated: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct UniqueConstraint {
    pub(crate) name: Option<String>,
    pub(crate) columns: Vec<String>,
    /// `DEFERRABLE` (PostgreSQL).
    #[serde(default)]
    pub(crate) deferrable: bool,
    /// `DEFERRABLE INITIALLY DEFERRED` (PostgreSQL).
    #[serde(default)]
    pub(crate) initially_deferred: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) name: Option<String>,
    /// The boolean expression, without `CHECK ( )`.
    pub(crate) expression: String,
    /// False for a check added `NOT VALID` and not validated since (PostgreSQL).
    #[serde(default = "yes")]
    pub(crate) validated: bool,
}

/// The default of the `validated` fields (snapshots of version 1 knew no `NOT VALID`).
fn yes() -> bool {
    true
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
    /// `COMMENT ON VIEW` / `COMMENT ON MATERIALIZED VIEW` (PostgreSQL).
    #[serde(default)]
    pub(crate) comment: Option<String>,
    /// `INSTEAD OF` triggers and the like.
    #[serde(default)]
    pub(crate) triggers: Vec<Trigger>,
}

/// A trigger on a table or view.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trigger {
    pub(crate) name: String,
    /// False after `ALTER TABLE ... DISABLE TRIGGER` (PostgreSQL; SQLite triggers always fire).
    pub(crate) enabled: bool,
    /// The `CREATE TRIGGER` statement: PostgreSQL's `pg_get_triggerdef`, SQLite's stored text.
    pub(crate) definition: String,
}

/// A composite type (`CREATE TYPE name AS (field type, ...)`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompositeType {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// In declaration order.
    pub(crate) attributes: Vec<Attribute>,
}

/// One field of a composite type.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attribute {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) data_type: String,
}

/// A domain (`CREATE DOMAIN name AS type ...`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Domain {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// The underlying type, as `format_type` prints it.
    #[serde(rename = "type")]
    pub(crate) data_type: String,
    pub(crate) nullable: bool,
    pub(crate) default: Option<String>,
    /// Its `CHECK` constraints (on `VALUE`).
    pub(crate) checks: Vec<Check>,
}

/// A function or procedure.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Function {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// `function` or `procedure`.
    pub(crate) kind: String,
    /// The argument types that identify it among overloads (`a integer, b text`).
    pub(crate) arguments: String,
    /// The result type (`integer`, `trigger`, `TABLE(...)`); `None` for a procedure.
    pub(crate) returns: Option<String>,
    /// `plpgsql`, `sql`, `c`, ...
    pub(crate) language: String,
    /// The whole `CREATE OR REPLACE FUNCTION` statement as `pg_get_functiondef` prints it: the
    /// signature, the attributes (volatility, security, settings) and the body.
    pub(crate) definition: String,
}

/// An installed extension.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extension {
    pub(crate) name: String,
    /// The schema its objects went to.
    pub(crate) schema: String,
    pub(crate) version: String,
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
            t.triggers.sort_by(|a, b| a.name.cmp(&b.name));
        }
        self.views
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        for v in &mut self.views {
            v.indexes.sort_by(|a, b| a.name.cmp(&b.name));
            v.triggers.sort_by(|a, b| a.name.cmp(&b.name));
        }
        self.enums
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        self.sequences
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        self.composite_types
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        self.domains
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        for d in &mut self.domains {
            d.checks
                .sort_by(|a, b| (&a.name, &a.expression).cmp(&(&b.name, &b.expression)));
        }
        self.functions.sort_by(|a, b| {
            (&a.schema, &a.name, &a.arguments).cmp(&(&b.schema, &b.name, &b.arguments))
        });
        self.extensions.sort_by(|a, b| a.name.cmp(&b.name));
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

/// ` DEFERRABLE [INITIALLY DEFERRED]` as SQL writes it after a constraint, or nothing for the
/// default `NOT DEFERRABLE`.
pub(crate) fn deferral(deferrable: bool, initially_deferred: bool) -> &'static str {
    match (deferrable, initially_deferred) {
        (false, _) => "",
        (true, false) => " DEFERRABLE",
        (true, true) => " DEFERRABLE INITIALLY DEFERRED",
    }
}

/// ` NOT VALID` after a constraint not validated, else nothing.
pub(crate) fn not_valid(validated: bool) -> &'static str {
    if validated {
        ""
    } else {
        " NOT VALID"
    }
}

impl Domain {
    /// What follows `CREATE DOMAIN name AS`: the type, default, `NOT NULL` and checks.
    pub(crate) fn declaration(&self) -> String {
        let mut text = self.data_type.clone();
        if let Some(default) = &self.default {
            text.push_str(" DEFAULT ");
            text.push_str(default);
        }
        if !self.nullable {
            text.push_str(" NOT NULL");
        }
        for c in &self.checks {
            if let Some(name) = &c.name {
                text.push_str(" CONSTRAINT ");
                text.push_str(name);
            }
            text.push_str(&format!(
                " CHECK ({}){}",
                c.expression,
                not_valid(c.validated)
            ));
        }
        text
    }
}

impl Table {
    /// A table with these columns and, so far, no keys, constraints, indexes or row count.
    pub(crate) fn new(schema: String, name: String, columns: Vec<Column>) -> Table {
        Table {
            schema,
            name,
            columns,
            primary_key: None,
            foreign_keys: Vec::new(),
            unique_constraints: Vec::new(),
            checks: Vec::new(),
            indexes: Vec::new(),
            rows: None,
            comment: None,
            triggers: Vec::new(),
        }
    }

    pub(crate) fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}
