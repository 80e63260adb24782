//! PostgreSQL's catalog, read from `pg_catalog` in seven queries whatever the number of tables:
//! schemas, relations, columns, constraints (key columns gathered with array subqueries),
//! indexes, enum types (labels gathered with `array_agg`) and sequences. Each query returns the
//! rows of every table at once; they are joined here by the relation's oid.

use std::collections::HashMap;

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Nullable, Text};
use diesel::PgConnection;

use super::{
    fk_action, Check, Column, EnumType, ForeignKey, Index, PrimaryKey, RowCounts, Schema, Sequence,
    Table, UniqueConstraint, View,
};
use crate::db::{quote_ident, Backend};

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

/// The relations every query below is restricted to: tables, partitioned tables, views and
/// materialized views in the chosen schemas.
const IN_SCOPE: &str = "c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname = ANY($1)";

pub(super) fn read(conn: &mut PgConnection, wanted: &[String]) -> anyhow::Result<Schema> {
    let schemas = resolve_schemas(conn, wanted)?;
    let relations: Vec<RelationRow> = diesel::sql_query(format!(
        "SELECT c.oid::bigint AS oid, n.nspname::text AS schema, c.relname::text AS name, \
                c.relkind::text AS kind, c.reltuples::float8 AS reltuples, \
                CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid, true) END AS definition \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE {IN_SCOPE}"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .load(conn)
    .context("reading tables and views from pg_class")?;

    let columns: Vec<ColumnRow> = diesel::sql_query(format!(
        "SELECT a.attrelid::bigint AS oid, a.attname::text AS name, \
                pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type, \
                a.attnotnull AS not_null, pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) AS default_expr, \
                a.attidentity::text AS identity, a.attgenerated::text AS generated \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND {IN_SCOPE} \
         ORDER BY a.attrelid, a.attnum"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .load(conn)
    .context("reading columns from pg_attribute")?;

    let constraints: Vec<ConstraintRow> = diesel::sql_query(format!(
        "SELECT con.conrelid::bigint AS oid, con.conname::text AS name, con.contype::text AS kind, \
                ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord) \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num \
                      ORDER BY k.ord) AS columns, \
                fn.nspname::text AS ref_schema, fc.relname::text AS ref_table, \
                ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord) \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num \
                      ORDER BY k.ord) AS ref_columns, \
                con.confupdtype::text AS on_update, con.confdeltype::text AS on_delete, \
                CASE WHEN con.contype = 'c' THEN pg_catalog.pg_get_expr(con.conbin, con.conrelid, true) END AS check_expr \
         FROM pg_catalog.pg_constraint con \
         JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid \
         LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace \
         WHERE con.contype IN ('p', 'u', 'f', 'c') AND {IN_SCOPE}"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .load(conn)
    .context("reading constraints from pg_constraint")?;

    // Indexes that back a primary key or unique constraint are shown as that constraint.
    let indexes: Vec<IndexRow> = diesel::sql_query(format!(
        "SELECT i.indrelid::bigint AS oid, ic.relname::text AS name, i.indisunique AS unique, \
                ARRAY(SELECT CASE WHEN i.indkey[k - 1] = 0 \
                                  THEN COALESCE(pg_catalog.pg_get_indexdef(i.indexrelid, k, true), '') \
                                  ELSE (SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                                        WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[k - 1]) END \
                      FROM generate_series(1, i.indnkeyatts) k ORDER BY k) AS columns, \
                (i.indexprs IS NOT NULL) AS expression, \
                pg_catalog.pg_get_expr(i.indpred, i.indrelid, true) AS predicate, \
                am.amname::text AS method, COALESCE(pg_catalog.pg_get_indexdef(i.indexrelid, 0, true), '') AS definition \
         FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_catalog.pg_am am ON am.oid = ic.relam \
         JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_constraint con \
              ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u') \
         WHERE {IN_SCOPE} AND con.oid IS NULL"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .load(conn)
    .context("reading indexes from pg_index")?;

    let enums: Vec<EnumRow> = diesel::sql_query(
        "SELECT n.nspname::text AS schema, t.typname::text AS name, \
                array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels \
         FROM pg_catalog.pg_type t \
         JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
         JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid \
         WHERE n.nspname = ANY($1) GROUP BY n.nspname, t.typname",
    )
    .bind::<Array<Text>, _>(&schemas)
    .load(conn)
    .context("reading enum types from pg_enum")?;

    let sequences: Vec<SequenceRow> = diesel::sql_query(
        "SELECT n.nspname::text AS schema, c.relname::text AS name, \
                pg_catalog.format_type(s.seqtypid, NULL) AS data_type, \
                s.seqstart AS start, s.seqincrement AS increment, \
                (SELECT tc.relname || '.' || a.attname FROM pg_catalog.pg_depend d \
                 JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                 WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid \
                   AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1) AS owned_by \
         FROM pg_catalog.pg_sequence s \
         JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = ANY($1)",
    )
    .bind::<Array<Text>, _>(&schemas)
    .load(conn)
    .context("reading sequences from pg_sequence")?;

    Ok(assemble(
        schemas,
        relations,
        columns,
        constraints,
        indexes,
        enums,
        sequences,
    ))
}

/// The schemas to read: those asked for (each must exist), else the search path's.
fn resolve_schemas(conn: &mut PgConnection, wanted: &[String]) -> anyhow::Result<Vec<String>> {
    let wanted_opt: Option<&[String]> = (!wanted.is_empty()).then_some(wanted);
    let found: Vec<NameRow> = diesel::sql_query(
        "SELECT nspname::text AS value FROM pg_catalog.pg_namespace \
         WHERE nspname = ANY(COALESCE($1, current_schemas(false))) ORDER BY nspname",
    )
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
    let all: Vec<NameRow> = diesel::sql_query(
        "SELECT nspname::text AS value FROM pg_catalog.pg_namespace \
         WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
           AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%' \
         ORDER BY nspname",
    )
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

fn assemble(
    schemas: Vec<String>,
    relations: Vec<RelationRow>,
    columns: Vec<ColumnRow>,
    constraints: Vec<ConstraintRow>,
    indexes: Vec<IndexRow>,
    enums: Vec<EnumRow>,
    sequences: Vec<SequenceRow>,
) -> Schema {
    let mut columns_of: HashMap<i64, Vec<Column>> = HashMap::new();
    for c in columns {
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
        });
    }
    let mut tables: HashMap<i64, Table> = HashMap::new();
    let mut views: HashMap<i64, View> = HashMap::new();
    for r in relations {
        let cols = columns_of.remove(&r.oid).unwrap_or_default();
        match (r.kind.as_str(), r.definition) {
            ("v" | "m", Some(definition)) => {
                views.insert(
                    r.oid,
                    View {
                        schema: r.schema,
                        name: r.name,
                        materialized: r.kind == "m",
                        columns: cols,
                        indexes: Vec::new(),
                        definition: definition.trim().to_string(),
                    },
                );
            }
            _ => {
                tables.insert(
                    r.oid,
                    Table {
                        schema: r.schema,
                        name: r.name,
                        columns: cols,
                        primary_key: None,
                        foreign_keys: Vec::new(),
                        unique_constraints: Vec::new(),
                        checks: Vec::new(),
                        indexes: Vec::new(),
                        // -1 means never vacuumed or analyzed: no estimate at all.
                        rows: (r.reltuples >= 0.0).then(|| r.reltuples.round() as i64),
                    },
                );
            }
        }
    }
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
            }),
            "f" => table.foreign_keys.push(ForeignKey {
                name,
                columns: con.columns,
                referred_schema: con.ref_schema.unwrap_or_default(),
                referred_table: con.ref_table.unwrap_or_default(),
                referred_columns: con.ref_columns,
                on_update: fk_action(&con.on_update),
                on_delete: fk_action(&con.on_delete),
            }),
            _ => table.checks.push(Check {
                name,
                expression: con.check_expr.unwrap_or_default(),
            }),
        }
    }
    for ix in indexes {
        let list = match tables.get_mut(&ix.oid) {
            Some(table) => &mut table.indexes,
            // Materialized views have indexes too.
            None => match views.get_mut(&ix.oid) {
                Some(view) => &mut view.indexes,
                None => continue,
            },
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
    Schema {
        dbctl_schema_version: super::MODEL_VERSION,
        backend: Backend::Postgres,
        schemas,
        row_counts: RowCounts::Estimate,
        migrations: None,
        tables: tables.into_values().collect(),
        views: views.into_values().collect(),
        enums: enums
            .into_iter()
            .map(|e| EnumType {
                schema: e.schema,
                name: e.name,
                values: e.labels,
            })
            .collect(),
        sequences: sequences
            .into_iter()
            .map(|s| Sequence {
                schema: s.schema,
                name: s.name,
                data_type: s.data_type,
                start: s.start,
                increment: s.increment,
                owned_by: s.owned_by,
            })
            .collect(),
    }
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    i: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `count(*)` of each table in one `UNION ALL` statement (PostgreSQL has no limit on its arms).
/// Inside inspect's snapshot a table listed there may have been dropped since: the statement then
/// fails, is undone to a savepoint, and runs again without the tables that are gone (their count
/// is `None`), a few times at most.
pub(super) fn count_rows(
    conn: &mut PgConnection,
    tables: &[&mut Table],
) -> anyhow::Result<Vec<Option<i64>>> {
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
                    if let Some(slot) = usize::try_from(r.i).ok().and_then(|i| counts.get_mut(i)) {
                        *slot = Some(r.n);
                    }
                }
                return Ok(counts);
            }
            Err(e) => {
                conn.batch_execute("ROLLBACK TO SAVEPOINT dbctl_count")
                    .context("counting rows")?;
                let gone = vanished(conn, &present, &names)?;
                if gone.is_empty() || attempt >= 3 {
                    return Err(anyhow::anyhow!("{e}").context("counting rows"));
                }
                present.retain(|i| !gone.contains(i));
            }
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
    let gone: Vec<Gone> = diesel::sql_query(
        "SELECT t.i FROM unnest($1::text[], $2::bigint[]) AS t(name, i) \
         WHERE pg_catalog.to_regclass(t.name) IS NULL",
    )
    .bind::<Array<Text>, _>(&list)
    .bind::<Array<BigInt>, _>(&idx)
    .load(conn)
    .context("looking for tables dropped while counting")?;
    Ok(gone
        .into_iter()
        .filter_map(|g| usize::try_from(g.i).ok())
        .collect())
}
