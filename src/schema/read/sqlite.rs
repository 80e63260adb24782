//! SQLite's catalog in five queries whatever the number of tables: `sqlite_master`, then the
//! pragma table-valued functions joined to it (`pragma_table_xinfo`, `pragma_index_list` with
//! `pragma_index_xinfo`, `pragma_foreign_key_list`), each returning the rows of every table at
//! once (view columns are asked apart, see `view_columns`). What no pragma reports (constraint
//! names, CHECKs, generated columns' expressions, index expressions and predicates, whether a
//! foreign key is `DEFERRABLE`) comes from the stored `CREATE` text, see `sqlite_ddl`; triggers
//! are their `sqlite_master` rows. The rows are assembled one kind of object at a time.

use std::collections::HashMap;

use anyhow::Context as _;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::SqliteConnection;

use super::sqlite_ddl::{self, Kind};
use super::{fk_action, put_count, CountRow};
use crate::db::{quote_ident, Backend};
use crate::schema::{
    Check, Column, ForeignKey, Index, PrimaryKey, RowCounts, Schema, Table, Trigger,
    UniqueConstraint, View, MODEL_VERSION,
};

#[derive(QueryableByName)]
struct MasterRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    name: String,
    /// The table or view a trigger (or index) belongs to.
    #[diesel(sql_type = Text)]
    tbl: String,
    #[diesel(sql_type = Nullable<Text>)]
    sql: Option<String>,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    tbl: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = BigInt)]
    not_null: i64,
    #[diesel(sql_type = Nullable<Text>)]
    default_expr: Option<String>,
    #[diesel(sql_type = BigInt)]
    pk: i64,
    #[diesel(sql_type = BigInt)]
    hidden: i64,
}

#[derive(QueryableByName)]
struct IndexRow {
    #[diesel(sql_type = Text)]
    tbl: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    is_unique: i64,
    #[diesel(sql_type = Text)]
    origin: String,
    #[diesel(sql_type = BigInt)]
    seqno: i64,
    #[diesel(sql_type = BigInt)]
    cid: i64,
    #[diesel(sql_type = Nullable<Text>)]
    col: Option<String>,
}

#[derive(QueryableByName)]
struct ForeignKeyRow {
    #[diesel(sql_type = Text)]
    tbl: String,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    ref_table: String,
    #[diesel(sql_type = Text)]
    col: String,
    #[diesel(sql_type = Nullable<Text>)]
    ref_col: Option<String>,
    #[diesel(sql_type = Text)]
    on_update: String,
    #[diesel(sql_type = Text)]
    on_delete: String,
}

/// Every column of the objects of `sqlite_master m` that the caller's WHERE selects.
const COLUMNS: &str = "SELECT m.name AS tbl, p.name AS name, p.type AS data_type, \
        p.\"notnull\" AS not_null, p.dflt_value AS default_expr, p.pk AS pk, p.hidden AS hidden \
     FROM main.sqlite_master m JOIN pragma_table_xinfo(m.name, 'main') p";

/// Every index key of every table (`pragma_index_list` with `pragma_index_xinfo`), in order.
const INDEXES: &str = "SELECT m.name AS tbl, il.name AS name, il.\"unique\" AS is_unique, \
        il.origin AS origin, ix.seqno AS seqno, ix.cid AS cid, ix.name AS col \
     FROM main.sqlite_master m \
     JOIN pragma_index_list(m.name, 'main') il \
     JOIN pragma_index_xinfo(il.name, 'main') ix \
     WHERE m.type = 'table' AND ix.key = 1 ORDER BY m.name, il.name, ix.seqno";

/// Every foreign key column of every table, grouped by key.
const FOREIGN_KEYS: &str = "SELECT m.name AS tbl, f.id AS id, f.\"table\" AS ref_table, \
        f.\"from\" AS col, f.\"to\" AS ref_col, f.on_update AS on_update, f.on_delete AS on_delete \
     FROM main.sqlite_master m JOIN pragma_foreign_key_list(m.name, 'main') f \
     WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq";

/// SQLite's one schema.
const MAIN: &str = "main";

impl super::Catalog for SqliteConnection {
    fn begin_snapshot(&self) -> &'static str {
        "BEGIN DEFERRED"
    }

    fn read(&mut self, schemas: &[String]) -> anyhow::Result<Schema> {
        // Any other schema name asked for is a mistake to say so.
        if let Some(other) = schemas.iter().find(|s| s.as_str() != MAIN) {
            return Err(crate::error::usage(format!(
                "schema {} does not exist in this SQLite database; its schemas: main",
                crate::output::quote(other)
            )));
        }
        read(self)
    }

    fn count_rows(&mut self, tables: &[&mut Table]) -> anyhow::Result<Vec<Option<i64>>> {
        count_rows(self, tables)
    }

    fn estimates_rows(&self) -> bool {
        false
    }
}

/// Five queries, then the model built one kind of object after the other.
fn read(conn: &mut SqliteConnection) -> anyhow::Result<Schema> {
    let master: Vec<MasterRow> = diesel::sql_query(
        "SELECT type AS kind, name, tbl_name AS tbl, sql FROM main.sqlite_master \
         WHERE type IN ('table', 'view', 'index', 'trigger') ORDER BY name",
    )
    .load(conn)
    .context("reading sqlite_master")?;
    let mut columns: Vec<ColumnRow> = diesel::sql_query(format!(
        "{COLUMNS} WHERE m.type = 'table' ORDER BY m.name, p.cid"
    ))
    .load(conn)
    .context("reading columns with pragma_table_xinfo")?;
    columns.extend(view_columns(conn, &master)?);
    let indexes: Vec<IndexRow> = diesel::sql_query(INDEXES)
        .load(conn)
        .context("reading indexes with pragma_index_list")?;
    let foreign_keys: Vec<ForeignKeyRow> = diesel::sql_query(FOREIGN_KEYS)
        .load(conn)
        .context("reading foreign keys with pragma_foreign_key_list")?;

    let mut objects = Objects::from_master(master);
    objects.add_columns(columns);
    add_indexes(&mut objects.drafts, indexes, &objects.index_sql);
    add_foreign_keys(&mut objects.drafts, foreign_keys);
    objects.add_triggers();
    Ok(Schema {
        dbctl_schema_version: MODEL_VERSION,
        backend: Backend::Sqlite,
        schemas: vec![MAIN.to_string()],
        row_counts: RowCounts::None,
        migrations: None,
        tables: objects.drafts.into_values().map(Draft::finish).collect(),
        views: objects.views.into_values().collect(),
        enums: Vec::new(),
        sequences: Vec::new(),
        composite_types: Vec::new(),
        domains: Vec::new(),
        functions: Vec::new(),
        extensions: Vec::new(),
    })
}

/// The columns of every view in one query. SQLite keeps a view whose table was dropped, and
/// asking for its columns then fails; only in that case is each view asked on its own, and a
/// broken one is shown without columns rather than failing the whole inspection.
fn view_columns(
    conn: &mut SqliteConnection,
    master: &[MasterRow],
) -> anyhow::Result<Vec<ColumnRow>> {
    let query = |conn: &mut SqliteConnection, name: Option<&str>| -> QueryResult<Vec<ColumnRow>> {
        match name {
            None => diesel::sql_query(format!(
                "{COLUMNS} WHERE m.type = 'view' ORDER BY m.name, p.cid"
            ))
            .load(conn),
            Some(name) => diesel::sql_query(format!(
                "{COLUMNS} WHERE m.type = 'view' AND m.name = $1 ORDER BY p.cid"
            ))
            .bind::<Text, _>(name)
            .load(conn),
        }
    };
    let refused = |e: &diesel::result::Error| matches!(e, diesel::result::Error::DatabaseError(..));
    match query(conn, None) {
        Ok(rows) => return Ok(rows),
        Err(e) if !refused(&e) => return Err(e).context("reading view columns"),
        Err(_) => {}
    }
    let mut rows = Vec::new();
    for view in master.iter().filter(|m| m.kind == "view") {
        match query(conn, Some(&view.name)) {
            Ok(found) => rows.extend(found),
            Err(e) if !refused(&e) => return Err(e).context("reading view columns"),
            Err(_) => {}
        }
    }
    Ok(rows)
}

/// The objects of `sqlite_master` while they are being filled in.
struct Objects {
    drafts: HashMap<String, Draft>,
    views: HashMap<String, View>,
    /// Each index's `CREATE INDEX`, by name.
    index_sql: HashMap<String, String>,
    /// Each trigger, with the table or view it is on.
    triggers: Vec<(String, Trigger)>,
}

impl Objects {
    fn from_master(master: Vec<MasterRow>) -> Objects {
        let mut objects = Objects {
            drafts: HashMap::new(),
            views: HashMap::new(),
            index_sql: HashMap::new(),
            triggers: Vec::new(),
        };
        for m in master {
            let sql = m.sql.unwrap_or_default();
            match m.kind.as_str() {
                "table" => {
                    let draft = Draft {
                        ddl: sqlite_ddl::table_constraints(&sql),
                        table: Table::new(MAIN.to_string(), m.name.clone(), Vec::new()),
                        pk: Vec::new(),
                    };
                    objects.drafts.insert(m.name, draft);
                }
                "view" => {
                    let view = View {
                        schema: MAIN.to_string(),
                        name: m.name.clone(),
                        materialized: false,
                        columns: Vec::new(),
                        indexes: Vec::new(),
                        definition: sql,
                        comment: None,
                        triggers: Vec::new(),
                    };
                    objects.views.insert(m.name, view);
                }
                "trigger" => {
                    let trigger = Trigger {
                        name: m.name,
                        enabled: true,
                        definition: sql,
                    };
                    objects.triggers.push((m.tbl, trigger));
                }
                _ => {
                    objects.index_sql.insert(m.name, sql);
                }
            }
        }
        objects
    }

    /// Triggers onto their tables and views (SQLite matches those names without case).
    fn add_triggers(&mut self) {
        for (on, trigger) in std::mem::take(&mut self.triggers) {
            if let Some(d) = self
                .drafts
                .values_mut()
                .find(|d| d.table.name.eq_ignore_ascii_case(&on))
            {
                d.table.triggers.push(trigger);
            } else if let Some(v) = self
                .views
                .values_mut()
                .find(|v| v.name.eq_ignore_ascii_case(&on))
            {
                v.triggers.push(trigger);
            }
        }
    }

    /// Columns onto their tables and views, noting each table's primary-key columns.
    fn add_columns(&mut self, columns: Vec<ColumnRow>) {
        for c in columns {
            // hidden 1 = a virtual table's hidden column; 2 and 3 = generated columns.
            if c.hidden == 1 {
                continue;
            }
            // The pragma says `notnull = 0` for primary key columns written without NOT NULL; an
            // INTEGER PRIMARY KEY is the rowid and never NULL, and a key column is reported NOT
            // NULL like on PostgreSQL (SQLite's legacy NULLs in other key columns are not
            // modelled).
            let column = Column {
                name: c.name.clone(),
                data_type: c.data_type,
                nullable: c.not_null == 0 && c.pk == 0,
                default: if c.hidden >= 2 { None } else { c.default_expr },
                identity: None,
                generated: None,
                comment: None,
            };
            if let Some(d) = self.drafts.get_mut(&c.tbl) {
                if c.pk > 0 {
                    d.pk.push((c.pk, c.name));
                }
                d.table.columns.push(column);
            } else if let Some(v) = self.views.get_mut(&c.tbl) {
                v.columns.push(column);
            }
        }
    }
}

/// A table under construction: its columns' primary-key positions and parsed DDL.
struct Draft {
    table: Table,
    pk: Vec<(i64, String)>,
    ddl: Vec<sqlite_ddl::Constraint>,
}

impl Draft {
    /// The primary key's columns in key order.
    fn pk_columns(&self) -> Vec<String> {
        let mut pk = self.pk.clone();
        pk.sort();
        pk.into_iter().map(|(_, n)| n).collect()
    }

    /// The table, with what only the DDL holds: the primary key's name, generated columns'
    /// expressions and the CHECKs.
    fn finish(mut self) -> Table {
        if !self.pk.is_empty() {
            let columns = self.pk_columns();
            self.table.primary_key = Some(PrimaryKey {
                name: take(&mut self.ddl, Kind::PrimaryKey, &columns, None).and_then(|c| c.name),
                columns,
            });
        }
        for g in self.ddl.iter().filter(|c| c.kind == Kind::Generated) {
            let column = self.table.columns.iter_mut().find(|c| {
                g.columns
                    .first()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&c.name))
            });
            if let Some(column) = column {
                column.generated = g.expression.clone();
            }
        }
        for c in self.ddl.iter().filter(|c| c.kind == Kind::Check) {
            self.table.checks.push(Check {
                name: c.name.clone(),
                expression: c.expression.clone().unwrap_or_default(),
                validated: true,
            });
        }
        self.table
    }
}

fn same_columns(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// Takes the first parsed constraint of `kind` on `columns` (each is used once).
fn take(
    ddl: &mut [sqlite_ddl::Constraint],
    kind: Kind,
    columns: &[String],
    referred: Option<&str>,
) -> Option<sqlite_ddl::Constraint> {
    let found = ddl.iter_mut().find(|c| {
        c.kind == kind
            && same_columns(&c.columns, columns)
            && match (referred, &c.referred_table) {
                (Some(r), Some(t)) => r.eq_ignore_ascii_case(t),
                _ => true,
            }
            && !c.used
    })?;
    found.used = true;
    Some(found.clone())
}

/// One key of an index: position, column number (-1 rowid, -2 expression), column name.
type Key = (i64, i64, Option<String>);

fn add_indexes(
    drafts: &mut HashMap<String, Draft>,
    rows: Vec<IndexRow>,
    index_sql: &HashMap<String, String>,
) {
    // Rows come ordered by table, index, key position: group consecutive ones.
    let mut groups: Vec<(IndexRow, Vec<Key>)> = Vec::new();
    for r in rows {
        let key = (r.seqno, r.cid, r.col.clone());
        match groups.last_mut() {
            Some((g, keys)) if g.tbl == r.tbl && g.name == r.name => keys.push(key),
            _ => groups.push((r, vec![key])),
        }
    }
    for (first, keys) in groups {
        let (name, unique, origin) = (first.name, first.is_unique != 0, first.origin);
        let Some(d) = drafts.get_mut(&first.tbl) else {
            continue;
        };
        let named_keys: Vec<String> = keys.iter().filter_map(|k| k.2.clone()).collect();
        match origin.as_str() {
            // The primary key's own index: the key is reported from the columns.
            "pk" => {}
            "u" => {
                let name = take(&mut d.ddl, Kind::Unique, &named_keys, None).and_then(|c| c.name);
                d.table.unique_constraints.push(UniqueConstraint {
                    name,
                    columns: named_keys,
                    deferrable: false,
                    initially_deferred: false,
                });
            }
            _ => {
                let sql = index_sql.get(&name).cloned().unwrap_or_default();
                d.table
                    .indexes
                    .push(created_index(name, unique, &keys, sql));
            }
        }
    }
}

/// An index made by `CREATE INDEX`: its expression keys and `WHERE` come from its statement.
fn created_index(name: String, unique: bool, keys: &[Key], sql: String) -> Index {
    let (texts, predicate) = sqlite_ddl::index_parts(&sql).unwrap_or_default();
    let mut expression = false;
    let columns = keys
        .iter()
        .map(|(seqno, cid, col)| match col {
            Some(c) => c.clone(),
            None if *cid == -1 => "rowid".to_string(),
            None => {
                expression = true;
                usize::try_from(*seqno)
                    .ok()
                    .and_then(|i| texts.get(i))
                    .map(|t| sqlite_ddl::key_expression(t))
                    .unwrap_or_default()
            }
        })
        .collect();
    Index {
        name,
        unique,
        columns,
        expression,
        predicate,
        method: None,
        definition: sql,
    }
}

fn add_foreign_keys(drafts: &mut HashMap<String, Draft>, rows: Vec<ForeignKeyRow>) {
    // A foreign key written without referred columns points at the referred table's primary key.
    let pks: HashMap<String, Vec<String>> = drafts
        .iter()
        .map(|(name, d)| (name.to_ascii_lowercase(), d.pk_columns()))
        .collect();
    let mut groups: Vec<(String, i64, Vec<ForeignKeyRow>)> = Vec::new();
    for r in rows {
        match groups.last_mut() {
            Some(g) if g.0 == r.tbl && g.1 == r.id => g.2.push(r),
            _ => groups.push((r.tbl.clone(), r.id, vec![r])),
        }
    }
    for (tbl, _, parts) in groups {
        let Some(d) = drafts.get_mut(&tbl) else {
            continue;
        };
        let Some(first) = parts.first() else {
            continue;
        };
        let columns: Vec<String> = parts.iter().map(|p| p.col.clone()).collect();
        let mut referred_columns: Vec<String> =
            parts.iter().filter_map(|p| p.ref_col.clone()).collect();
        if referred_columns.len() != columns.len() {
            referred_columns = pks
                .get(&first.ref_table.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default();
        }
        let written = take(
            &mut d.ddl,
            Kind::ForeignKey,
            &columns,
            Some(&first.ref_table),
        );
        let (deferrable, initially_deferred) = written
            .as_ref()
            .map_or((false, false), |c| (c.deferrable, c.initially_deferred));
        d.table.foreign_keys.push(ForeignKey {
            name: written.and_then(|c| c.name),
            columns,
            referred_schema: MAIN.to_string(),
            referred_table: first.ref_table.clone(),
            referred_columns,
            on_update: fk_action(&first.on_update),
            on_delete: fk_action(&first.on_delete),
            deferrable,
            initially_deferred,
            validated: true,
        });
    }
}

/// `count(*)` of each table in one statement: a multi-row VALUES of scalar subqueries (SQLite
/// limits UNION ALL to 500 arms, but not the rows of a VALUES).
fn count_rows(
    conn: &mut SqliteConnection,
    tables: &[&mut Table],
) -> anyhow::Result<Vec<Option<i64>>> {
    let values = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "({i}, (SELECT count(*) FROM main.{}))",
                quote_ident(&t.name)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let rows: Vec<CountRow> = diesel::sql_query(format!(
        "SELECT column1 AS i, column2 AS n FROM (VALUES {values})"
    ))
    .load(conn)
    .context("counting rows")?;
    let mut counts = vec![None; tables.len()];
    for r in rows {
        put_count(&mut counts, r.i, r.n);
    }
    Ok(counts)
}
