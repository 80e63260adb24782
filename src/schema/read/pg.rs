//! PostgreSQL's catalog, read from `pg_catalog` in eleven queries whatever the number of tables:
//! schemas, relations (with their comments), columns (with theirs), constraints (key columns
//! gathered with array subqueries), indexes, triggers, enum types (labels gathered with
//! `array_agg`), sequences, composite types and domains (one query), functions and procedures,
//! and extensions. Each query returns the rows of every table at once; they are joined here by
//! the relation's oid, one step per kind of object. The SQL lives in `pg/*.sql`, beside this file.

use std::collections::HashMap;

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Nullable, Text};
use diesel::PgConnection;

use super::{fk_action, put_count, CountRow};
use crate::db::{quote_ident, Backend};
use crate::schema::{
    Attribute, Check, Column, CompositeType, Domain, EnumType, Extension, ForeignKey, Function,
    Index, PrimaryKey, RowCounts, Schema, Sequence, Table, Trigger, UniqueConstraint, View,
    MODEL_VERSION,
};

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct RelationRow {
    #[diesel(sql_type = BigInt)]
    oid: i64,
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Double)]
    reltuples: f64,
    #[diesel(sql_type = Nullable<Text>)]
    definition: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = BigInt)]
    oid: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Bool)]
    not_null: bool,
    #[diesel(sql_type = Nullable<Text>)]
    default_expr: Option<String>,
    #[diesel(sql_type = Text)]
    identity: String,
    #[diesel(sql_type = Text)]
    generated: String,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

#[derive(QueryableByName)]
struct ConstraintRow {
    #[diesel(sql_type = BigInt)]
    oid: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Array<Text>)]
    columns: Vec<String>,
    #[diesel(sql_type = Nullable<Text>)]
    ref_schema: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    ref_table: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    ref_columns: Vec<String>,
    #[diesel(sql_type = Text)]
    on_update: String,
    #[diesel(sql_type = Text)]
    on_delete: String,
    #[diesel(sql_type = Nullable<Text>)]
    check_expr: Option<String>,
    #[diesel(sql_type = Bool)]
    deferrable: bool,
    #[diesel(sql_type = Bool)]
    deferred: bool,
    #[diesel(sql_type = Bool)]
    validated: bool,
}

#[derive(QueryableByName)]
struct TriggerRow {
    #[diesel(sql_type = BigInt)]
    oid: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    enabled: String,
    #[diesel(sql_type = Text)]
    definition: String,
}

#[derive(QueryableByName)]
struct TypeRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Array<Text>)]
    attribute_names: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    attribute_types: Vec<String>,
    #[diesel(sql_type = Nullable<Text>)]
    base_type: Option<String>,
    #[diesel(sql_type = Bool)]
    not_null: bool,
    #[diesel(sql_type = Nullable<Text>)]
    default_expr: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    check_names: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    check_exprs: Vec<String>,
    #[diesel(sql_type = Array<Bool>)]
    check_validated: Vec<bool>,
}

#[derive(QueryableByName)]
struct FunctionRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    arguments: String,
    #[diesel(sql_type = Nullable<Text>)]
    returns: Option<String>,
    #[diesel(sql_type = Text)]
    language: String,
    #[diesel(sql_type = Text)]
    definition: String,
}

#[derive(QueryableByName)]
struct ExtensionRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    version: String,
}

#[derive(QueryableByName)]
struct IndexRow {
    #[diesel(sql_type = BigInt)]
    oid: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    unique: bool,
    #[diesel(sql_type = Array<Text>)]
    columns: Vec<String>,
    #[diesel(sql_type = Bool)]
    expression: bool,
    #[diesel(sql_type = Nullable<Text>)]
    predicate: Option<String>,
    #[diesel(sql_type = Text)]
    method: String,
    #[diesel(sql_type = Text)]
    definition: String,
}

#[derive(QueryableByName)]
struct EnumRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Array<Text>)]
    labels: Vec<String>,
}

#[derive(QueryableByName)]
struct SequenceRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = BigInt)]
    start: i64,
    #[diesel(sql_type = BigInt)]
    increment: i64,
    #[diesel(sql_type = Nullable<Text>)]
    owned_by: Option<String>,
}

/// One catalog query: its SQL (in `pg/`) and what it reads, for the error's context.
struct Query(&'static str, &'static str);

macro_rules! query {
    ($file:literal, $what:literal) => {
        Query(include_str!(concat!("pg/", $file)), $what)
    };
}

const RELATIONS: Query = query!("relations.sql", "reading tables and views from pg_class");
const COLUMNS: Query = query!("columns.sql", "reading columns from pg_attribute");
const CONSTRAINTS: Query = query!("constraints.sql", "reading constraints from pg_constraint");
const INDEXES: Query = query!("indexes.sql", "reading indexes from pg_index");
const ENUMS: Query = query!("enums.sql", "reading enum types from pg_enum");
const SEQUENCES: Query = query!("sequences.sql", "reading sequences from pg_sequence");
const TRIGGERS: Query = query!("triggers.sql", "reading triggers from pg_trigger");
const TYPES: Query = query!(
    "types.sql",
    "reading composite types and domains from pg_type"
);
const FUNCTIONS: Query = query!("functions.sql", "reading functions from pg_proc");
const EXTENSIONS: Query = query!("extensions.sql", "reading extensions from pg_extension");

impl Query {
    /// Every row of the query for the schemas `schemas`.
    fn load<R: QueryableByName<diesel::pg::Pg> + 'static>(
        &self,
        conn: &mut PgConnection,
        schemas: &[String],
    ) -> anyhow::Result<Vec<R>> {
        diesel::sql_query(self.0)
            .bind::<Array<Text>, _>(schemas)
            .load(conn)
            .context(self.1)
    }

    /// Every row of a query that takes no schemas (what belongs to the whole database).
    fn load_all<R: QueryableByName<diesel::pg::Pg> + 'static>(
        &self,
        conn: &mut PgConnection,
    ) -> anyhow::Result<Vec<R>> {
        diesel::sql_query(self.0).load(conn).context(self.1)
    }
}

impl super::Catalog for PgConnection {
    fn begin_snapshot(&self) -> &'static str {
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    }

    fn read(&mut self, schemas: &[String]) -> anyhow::Result<Schema> {
        read(self, schemas)
    }

    fn count_rows(&mut self, tables: &[&mut Table]) -> anyhow::Result<Vec<Option<i64>>> {
        count_rows(self, tables)
    }

    fn estimates_rows(&self) -> bool {
        true
    }
}

/// Eleven queries, each returning the rows of every table at once, joined here by oid.
fn read(conn: &mut PgConnection, wanted: &[String]) -> anyhow::Result<Schema> {
    let schemas = resolve_schemas(conn, wanted)?;
    let relations: Vec<RelationRow> = RELATIONS.load(conn, &schemas)?;
    let columns: Vec<ColumnRow> = COLUMNS.load(conn, &schemas)?;
    let constraints: Vec<ConstraintRow> = CONSTRAINTS.load(conn, &schemas)?;
    let indexes: Vec<IndexRow> = INDEXES.load(conn, &schemas)?;
    let enums: Vec<EnumRow> = ENUMS.load(conn, &schemas)?;
    let sequences: Vec<SequenceRow> = SEQUENCES.load(conn, &schemas)?;
    let triggers: Vec<TriggerRow> = TRIGGERS.load(conn, &schemas)?;
    let types: Vec<TypeRow> = TYPES.load(conn, &schemas)?;
    let functions: Vec<FunctionRow> = FUNCTIONS.load(conn, &schemas)?;
    let extensions: Vec<ExtensionRow> = EXTENSIONS.load_all(conn)?;

    let (mut tables, mut views) = relations_of(relations, columns_by_relation(columns));
    add_constraints(&mut tables, constraints);
    add_indexes(&mut tables, &mut views, indexes);
    add_triggers(&mut tables, &mut views, triggers);
    let (composite_types, domains) = types_of(types);
    Ok(Schema {
        dbctl_schema_version: MODEL_VERSION,
        backend: Backend::Postgres,
        schemas,
        row_counts: RowCounts::Estimate,
        migrations: None,
        tables: tables.into_values().collect(),
        views: views.into_values().collect(),
        enums: enums.into_iter().map(enum_type).collect(),
        sequences: sequences.into_iter().map(sequence).collect(),
        composite_types,
        domains,
        functions: functions.into_iter().map(function).collect(),
        extensions: extensions
            .into_iter()
            .map(|e| Extension {
                name: e.name,
                schema: e.schema,
                version: e.version,
            })
            .collect(),
    })
}

/// The schemas to read: those asked for (each must exist), else the search path's.
fn resolve_schemas(conn: &mut PgConnection, wanted: &[String]) -> anyhow::Result<Vec<String>> {
    let wanted_opt: Option<&[String]> = (!wanted.is_empty()).then_some(wanted);
    let found: Vec<NameRow> = diesel::sql_query(include_str!("pg/schemas.sql"))
        .bind::<Nullable<Array<Text>>, _>(wanted_opt)
        .load(conn)
        .context("reading the schemas from pg_namespace")?;
    let found: Vec<String> = found.into_iter().map(|r| r.value).collect();
    if let Some(missing) = wanted.iter().find(|w| !found.contains(w)) {
        return Err(crate::error::usage(format!(
            "schema {} does not exist in this database; its schemas: {}",
            crate::output::quote(missing),
            existing_schemas(conn)?
        )));
    }
    Ok(found)
}

/// The database's own schemas (not PostgreSQL's internal ones), for an error message: the first
/// few by name, and how many more.
fn existing_schemas(conn: &mut PgConnection) -> anyhow::Result<String> {
    const SHOWN: usize = 20;
    let all: Vec<NameRow> = diesel::sql_query(include_str!("pg/existing_schemas.sql"))
        .load(conn)
        .context("listing the schemas from pg_namespace")?;
    let mut names: Vec<String> = all.iter().take(SHOWN).map(|r| r.value.clone()).collect();
    if all.is_empty() {
        names.push("none".to_string());
    }
    if all.len() > SHOWN {
        names.push(format!("and {} more", all.len() - SHOWN));
    }
    Ok(names.join(", "))
}

/// The columns of each relation, by oid, in the relation's order.
fn columns_by_relation(rows: Vec<ColumnRow>) -> HashMap<i64, Vec<Column>> {
    let mut columns_of: HashMap<i64, Vec<Column>> = HashMap::new();
    for c in rows {
        // A generated column's expression is stored as its default.
        let (default, generated) = if c.generated.is_empty() {
            (c.default_expr, None)
        } else {
            (None, c.default_expr)
        };
        columns_of.entry(c.oid).or_default().push(Column {
            name: c.name,
            data_type: c.data_type,
            nullable: !c.not_null,
            default,
            identity: match c.identity.as_str() {
                "a" => Some("always".to_string()),
                "d" => Some("by default".to_string()),
                _ => None,
            },
            generated,
            comment: c.comment,
        });
    }
    columns_of
}

/// The tables and views, by oid, each with its columns and nothing else yet.
fn relations_of(
    relations: Vec<RelationRow>,
    mut columns_of: HashMap<i64, Vec<Column>>,
) -> (HashMap<i64, Table>, HashMap<i64, View>) {
    let mut tables = HashMap::new();
    let mut views = HashMap::new();
    for r in relations {
        let columns = columns_of.remove(&r.oid).unwrap_or_default();
        match (r.kind.as_str(), r.definition) {
            ("v" | "m", Some(definition)) => {
                let view = View {
                    schema: r.schema,
                    name: r.name,
                    materialized: r.kind == "m",
                    columns,
                    indexes: Vec::new(),
                    definition: definition.trim().to_string(),
                    comment: r.comment,
                    triggers: Vec::new(),
                };
                views.insert(r.oid, view);
            }
            _ => {
                let mut table = Table::new(r.schema, r.name, columns);
                // -1 means never vacuumed or analyzed: no estimate at all.
                table.rows = (r.reltuples >= 0.0).then(|| r.reltuples.round() as i64);
                table.comment = r.comment;
                tables.insert(r.oid, table);
            }
        }
    }
    (tables, views)
}

/// Primary keys, unique constraints, foreign keys and checks, onto their tables.
fn add_constraints(tables: &mut HashMap<i64, Table>, constraints: Vec<ConstraintRow>) {
    for con in constraints {
        let Some(table) = tables.get_mut(&con.oid) else {
            continue;
        };
        let name = Some(con.name);
        match con.kind.as_str() {
            "p" => {
                table.primary_key = Some(PrimaryKey {
                    name,
                    columns: con.columns,
                })
            }
            "u" => table.unique_constraints.push(UniqueConstraint {
                name,
                columns: con.columns,
                deferrable: con.deferrable,
                initially_deferred: con.deferred,
            }),
            "f" => table.foreign_keys.push(ForeignKey {
                name,
                columns: con.columns,
                referred_schema: con.ref_schema.unwrap_or_default(),
                referred_table: con.ref_table.unwrap_or_default(),
                referred_columns: con.ref_columns,
                on_update: fk_action(&con.on_update),
                on_delete: fk_action(&con.on_delete),
                deferrable: con.deferrable,
                initially_deferred: con.deferred,
                validated: con.validated,
            }),
            _ => table.checks.push(Check {
                name,
                expression: con.check_expr.unwrap_or_default(),
                validated: con.validated,
            }),
        }
    }
}

/// The list of the table or view `oid` names that a row belongs on (`None`: neither, e.g. an
/// object of a schema not read).
fn onto<'a, T>(
    tables: &'a mut HashMap<i64, Table>,
    views: &'a mut HashMap<i64, View>,
    oid: i64,
    of_table: fn(&mut Table) -> &mut Vec<T>,
    of_view: fn(&mut View) -> &mut Vec<T>,
) -> Option<&'a mut Vec<T>> {
    match tables.get_mut(&oid) {
        Some(table) => Some(of_table(table)),
        None => views.get_mut(&oid).map(of_view),
    }
}

/// Indexes, onto their tables or materialized views.
fn add_indexes(
    tables: &mut HashMap<i64, Table>,
    views: &mut HashMap<i64, View>,
    indexes: Vec<IndexRow>,
) {
    for ix in indexes {
        let Some(list) = onto(
            tables,
            views,
            ix.oid,
            |t| &mut t.indexes,
            |v| &mut v.indexes,
        ) else {
            continue;
        };
        list.push(Index {
            name: ix.name,
            unique: ix.unique,
            columns: ix.columns,
            expression: ix.expression,
            predicate: ix.predicate,
            method: Some(ix.method),
            definition: ix.definition,
        });
    }
}

/// Triggers, onto their tables or views.
fn add_triggers(
    tables: &mut HashMap<i64, Table>,
    views: &mut HashMap<i64, View>,
    triggers: Vec<TriggerRow>,
) {
    for t in triggers {
        let Some(list) = onto(
            tables,
            views,
            t.oid,
            |t| &mut t.triggers,
            |v| &mut v.triggers,
        ) else {
            continue;
        };
        list.push(Trigger {
            name: t.name,
            // 'D' is disabled; 'O' (origin), 'R' (replica) and 'A' (always) fire.
            enabled: t.enabled != "D",
            definition: t.definition,
        });
    }
}

/// Composite types and domains, from the rows of `types.sql`.
fn types_of(rows: Vec<TypeRow>) -> (Vec<CompositeType>, Vec<Domain>) {
    let mut composites = Vec::new();
    let mut domains = Vec::new();
    for r in rows {
        if r.kind == "c" {
            composites.push(CompositeType {
                schema: r.schema,
                name: r.name,
                attributes: r
                    .attribute_names
                    .into_iter()
                    .zip(r.attribute_types)
                    .map(|(name, data_type)| Attribute { name, data_type })
                    .collect(),
            });
        } else {
            let checks = r
                .check_names
                .into_iter()
                .zip(r.check_exprs)
                .zip(r.check_validated)
                .map(|((name, expression), validated)| Check {
                    name: Some(name),
                    expression,
                    validated,
                })
                .collect();
            domains.push(Domain {
                schema: r.schema,
                name: r.name,
                data_type: r.base_type.unwrap_or_default(),
                nullable: !r.not_null,
                default: r.default_expr,
                checks,
            });
        }
    }
    (composites, domains)
}

fn function(f: FunctionRow) -> Function {
    Function {
        schema: f.schema,
        name: f.name,
        kind: if f.kind == "p" {
            "procedure"
        } else {
            "function"
        }
        .to_string(),
        arguments: f.arguments,
        returns: f.returns,
        language: f.language,
        definition: f.definition.trim_end().to_string(),
    }
}

fn enum_type(e: EnumRow) -> EnumType {
    EnumType {
        schema: e.schema,
        name: e.name,
        values: e.labels,
    }
}

fn sequence(s: SequenceRow) -> Sequence {
    Sequence {
        schema: s.schema,
        name: s.name,
        data_type: s.data_type,
        start: s.start,
        increment: s.increment,
        owned_by: s.owned_by,
    }
}

/// `count(*)` of each table in one `UNION ALL` statement (PostgreSQL has no limit on its arms).
/// Inside inspect's snapshot a table listed there may have been dropped since: the statement then
/// fails, is undone to a savepoint, and runs again without the tables that are gone (their count
/// is `None`), a few times at most.
fn count_rows(conn: &mut PgConnection, tables: &[&mut Table]) -> anyhow::Result<Vec<Option<i64>>> {
    let names: Vec<String> = tables
        .iter()
        .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name)))
        .collect();
    let mut counts: Vec<Option<i64>> = vec![None; tables.len()];
    let mut present: Vec<usize> = (0..tables.len()).collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        if present.is_empty() {
            return Ok(counts);
        }
        let sql = present
            .iter()
            .map(|&i| {
                format!(
                    "SELECT {i}::bigint AS i, count(*)::bigint AS n FROM {}",
                    names[i]
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        conn.batch_execute("SAVEPOINT dbctl_count")
            .context("counting rows")?;
        match diesel::sql_query(sql).load::<CountRow>(conn) {
            Ok(rows) => {
                conn.batch_execute("RELEASE SAVEPOINT dbctl_count")
                    .context("counting rows")?;
                for r in rows {
                    put_count(&mut counts, r.i, r.n);
                }
                return Ok(counts);
            }
            // The server refused the statement (a table gone, say); any other failure is final.
            Err(e @ diesel::result::Error::DatabaseError(..)) => {
                conn.batch_execute("ROLLBACK TO SAVEPOINT dbctl_count")
                    .context("counting rows")?;
                let gone = vanished(conn, &present, &names)?;
                if gone.is_empty() || attempt >= 3 {
                    return Err(anyhow::Error::new(e).context("counting rows"));
                }
                present.retain(|i| !gone.contains(i));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("counting rows")),
        }
    }
}

/// Which of the tables (by index) no longer exist, as name lookups see them now.
fn vanished(
    conn: &mut PgConnection,
    present: &[usize],
    names: &[String],
) -> anyhow::Result<Vec<usize>> {
    #[derive(QueryableByName)]
    struct Gone {
        #[diesel(sql_type = BigInt)]
        i: i64,
    }
    let list: Vec<String> = present.iter().map(|&i| names[i].clone()).collect();
    let idx: Vec<i64> = present.iter().map(|&i| i as i64).collect();
    let gone: Vec<Gone> = diesel::sql_query(include_str!("pg/vanished.sql"))
        .bind::<Array<Text>, _>(&list)
        .bind::<Array<BigInt>, _>(&idx)
        .load(conn)
        .context("looking for tables dropped while counting")?;
    Ok(gone
        .into_iter()
        .filter_map(|g| usize::try_from(g.i).ok())
        .collect())
}
