//! The human rendering of a schema: an overview (one row per table) and the full detail of named
//! tables, as comfy-tables.

use std::fmt::Write as _;

use crate::output;
use crate::schema::{
    deferral, not_valid, ForeignKey, Index, RowCounts, Schema, Table, Trigger, View,
};

/// One row per table, then views, enums, sequences, composite types, domains, functions and
/// extensions, with the migration state first.
pub(crate) fn overview(schema: &Schema) -> String {
    let mut out = header(schema);
    if schema.tables.is_empty() {
        out.push_str("no tables\n");
    } else {
        let mut table = output::table([
            "table",
            "columns",
            "primary key",
            "foreign keys",
            "indexes",
            "rows",
        ]);
        for t in &schema.tables {
            let columns: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
            table.add_row(vec![
                schema.display_name(&t.schema, &t.name),
                columns.join(", "),
                t.primary_key
                    .as_ref()
                    .map(|pk| pk.columns.join(", "))
                    .unwrap_or_else(|| "(none)".to_string()),
                t.foreign_keys
                    .iter()
                    .map(|fk| fk_summary(schema, fk))
                    .collect::<Vec<_>>()
                    .join("\n"),
                t.indexes
                    .iter()
                    .map(index_summary)
                    .collect::<Vec<_>>()
                    .join("\n"),
                rows(schema, t),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    append_others(schema, &mut out);
    out
}

/// Every column, constraint, index and trigger of the selected tables (and their comments), and
/// the selected views.
pub(crate) fn detail(schema: &Schema) -> String {
    let mut out = String::new();
    for t in &schema.tables {
        let _ = writeln!(
            out,
            "table {} · rows: {}",
            schema.display_name(&t.schema, &t.name),
            rows(schema, t)
        );
        if let Some(comment) = &t.comment {
            let _ = writeln!(out, "comment: {comment}");
        }
        let commented = t.columns.iter().any(|c| c.comment.is_some());
        let mut header = vec!["column", "type", "nullable", "default"];
        if commented {
            header.push("comment");
        }
        let mut columns = output::table(header);
        for c in &t.columns {
            let default = match (&c.default, &c.identity, &c.generated) {
                (_, Some(identity), _) => format!("generated {identity} as identity"),
                (_, _, Some(expr)) => format!("generated always as ({expr})"),
                (Some(d), _, _) => d.clone(),
                _ => String::new(),
            };
            let mut row = vec![
                c.name.clone(),
                c.data_type.clone(),
                if c.nullable { "yes" } else { "no" }.to_string(),
                default,
            ];
            if commented {
                row.push(c.comment.clone().unwrap_or_default());
            }
            columns.add_row(row);
        }
        let _ = writeln!(out, "{columns}");
        let constraints = constraint_rows(schema, t);
        if !constraints.is_empty() {
            let mut table = output::table(["constraint", "kind", "definition"]);
            for row in constraints {
                table.add_row(row);
            }
            let _ = writeln!(out, "{table}");
        }
        index_table(&t.indexes, &mut out);
        trigger_table(&t.triggers, &mut out);
        out.push('\n');
    }
    for v in &schema.views {
        view_detail(schema, v, &mut out);
    }
    out.trim_end().to_string()
}

fn view_detail(schema: &Schema, v: &View, out: &mut String) {
    let kind = if v.materialized {
        "materialized view"
    } else {
        "view"
    };
    let _ = writeln!(out, "{kind} {}", schema.display_name(&v.schema, &v.name));
    if let Some(comment) = &v.comment {
        let _ = writeln!(out, "comment: {comment}");
    }
    let mut columns = output::table(["column", "type"]);
    for c in &v.columns {
        columns.add_row(vec![c.name.clone(), c.data_type.clone()]);
    }
    let _ = writeln!(out, "{columns}");
    index_table(&v.indexes, out);
    trigger_table(&v.triggers, out);
    let _ = writeln!(out, "{}\n", v.definition);
}

/// The indexes of a table or materialized view, with their definitions (nothing when none).
fn index_table(indexes: &[Index], out: &mut String) {
    if indexes.is_empty() {
        return;
    }
    let mut table = output::table(["index", "definition"]);
    for ix in indexes {
        table.add_row(vec![ix.name.clone(), ix.definition.clone()]);
    }
    let _ = writeln!(out, "{table}");
}

/// The triggers of a table or view, with their definitions (nothing when none).
fn trigger_table(triggers: &[Trigger], out: &mut String) {
    if triggers.is_empty() {
        return;
    }
    let mut table = output::table(["trigger", "definition"]);
    for t in triggers {
        let name = if t.enabled {
            t.name.clone()
        } else {
            format!("{} (disabled)", t.name)
        };
        table.add_row(vec![name, t.definition.clone()]);
    }
    let _ = writeln!(out, "{table}");
}

/// (name, kind, definition) of every constraint, in a fixed order: key, unique, foreign, check.
fn constraint_rows(schema: &Schema, t: &Table) -> Vec<Vec<String>> {
    let name = |n: &Option<String>| n.clone().unwrap_or_else(|| "(unnamed)".to_string());
    let mut rows = Vec::new();
    if let Some(pk) = &t.primary_key {
        rows.push(vec![
            name(&pk.name),
            "primary key".to_string(),
            format!("PRIMARY KEY ({})", pk.columns.join(", ")),
        ]);
    }
    for u in &t.unique_constraints {
        rows.push(vec![
            name(&u.name),
            "unique".to_string(),
            format!(
                "UNIQUE ({}){}",
                u.columns.join(", "),
                deferral(u.deferrable, u.initially_deferred)
            ),
        ]);
    }
    for fk in &t.foreign_keys {
        rows.push(vec![
            name(&fk.name),
            "foreign key".to_string(),
            fk_definition(schema, fk),
        ]);
    }
    for c in &t.checks {
        rows.push(vec![
            name(&c.name),
            "check".to_string(),
            format!("CHECK ({}){}", c.expression, not_valid(c.validated)),
        ]);
    }
    rows
}

pub(crate) fn fk_definition(schema: &Schema, fk: &ForeignKey) -> String {
    let mut text = format!(
        "FOREIGN KEY ({}) REFERENCES {} ({})",
        fk.columns.join(", "),
        schema.display_name(&fk.referred_schema, &fk.referred_table),
        fk.referred_columns.join(", ")
    );
    if fk.on_update != "NO ACTION" {
        let _ = write!(text, " ON UPDATE {}", fk.on_update);
    }
    if fk.on_delete != "NO ACTION" {
        let _ = write!(text, " ON DELETE {}", fk.on_delete);
    }
    text.push_str(deferral(fk.deferrable, fk.initially_deferred));
    text.push_str(not_valid(fk.validated));
    text
}

fn fk_summary(schema: &Schema, fk: &ForeignKey) -> String {
    format!(
        "{} → {}({})",
        fk.columns.join(", "),
        schema.display_name(&fk.referred_schema, &fk.referred_table),
        fk.referred_columns.join(", ")
    )
}

fn index_summary(ix: &Index) -> String {
    let mut text = format!("{} ({})", ix.name, ix.columns.join(", "));
    if ix.unique {
        text.push_str(" unique");
    }
    if ix.predicate.is_some() {
        text.push_str(" partial");
    }
    text
}

fn rows(schema: &Schema, t: &Table) -> String {
    match (schema.row_counts, t.rows) {
        (RowCounts::None, _) => "-".to_string(),
        (RowCounts::Estimate, Some(n)) => format!("~{n}"),
        (RowCounts::Estimate, None) => "? (not analyzed)".to_string(),
        (RowCounts::Exact, Some(n)) => n.to_string(),
        (RowCounts::Exact, None) => "?".to_string(),
    }
}

/// The first lines: backend, schemas and migration state.
fn header(schema: &Schema) -> String {
    let mut out = format!("{} schema {}", schema.backend, schema.schemas.join(", "));
    if let Some(m) = &schema.migrations {
        let pending = m
            .pending
            .map_or("? pending (no migrations folder)".to_string(), |n| {
                format!("{n} pending")
            });
        let _ = write!(out, " · migrations: {} applied, {pending}", m.applied);
        for (n, what) in [(m.modified, "modified"), (m.missing, "missing")] {
            if let Some(n) = n.filter(|n| *n > 0) {
                let _ = write!(out, ", {n} {what}");
            }
        }
        if let Some(last) = &m.last_applied {
            let _ = write!(out, " (last {last})");
        }
    }
    out.push('\n');
    out
}

fn append_others(schema: &Schema, out: &mut String) {
    if !schema.views.is_empty() {
        let mut table = output::table(["view", "columns"]);
        for v in &schema.views {
            let name = schema.display_name(&v.schema, &v.name);
            let cols: Vec<&str> = v.columns.iter().map(|c| c.name.as_str()).collect();
            let name = if v.materialized {
                format!("{name} (materialized)")
            } else {
                name
            };
            table.add_row(vec![name, cols.join(", ")]);
        }
        let _ = writeln!(out, "{table}");
    }
    if !schema.enums.is_empty() {
        let mut table = output::table(["enum", "values"]);
        for e in &schema.enums {
            table.add_row(vec![
                schema.display_name(&e.schema, &e.name),
                e.values.join(", "),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    if !schema.sequences.is_empty() {
        let mut table = output::table(["sequence", "type", "start", "increment", "owned by"]);
        for s in &schema.sequences {
            table.add_row(vec![
                schema.display_name(&s.schema, &s.name),
                s.data_type.clone(),
                s.start.to_string(),
                s.increment.to_string(),
                s.owned_by.clone().unwrap_or_default(),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    append_types_and_code(schema, out);
}

/// Composite types, domains, functions and procedures, and extensions.
fn append_types_and_code(schema: &Schema, out: &mut String) {
    if !schema.composite_types.is_empty() {
        let mut table = output::table(["composite type", "attributes"]);
        for c in &schema.composite_types {
            let fields: Vec<String> = c
                .attributes
                .iter()
                .map(|a| format!("{} {}", a.name, a.data_type))
                .collect();
            table.add_row(vec![
                schema.display_name(&c.schema, &c.name),
                fields.join(", "),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    if !schema.domains.is_empty() {
        let mut table = output::table(["domain", "definition"]);
        for d in &schema.domains {
            table.add_row(vec![
                schema.display_name(&d.schema, &d.name),
                d.declaration(),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    if !schema.functions.is_empty() {
        let mut table = output::table(["function", "returns", "language"]);
        for f in &schema.functions {
            let name = format!(
                "{}({})",
                schema.display_name(&f.schema, &f.name),
                f.arguments
            );
            let returns = f
                .returns
                .clone()
                .unwrap_or_else(|| "(procedure)".to_string());
            table.add_row(vec![name, returns, f.language.clone()]);
        }
        let _ = writeln!(out, "{table}");
    }
    if !schema.extensions.is_empty() {
        let mut table = output::table(["extension", "version", "schema"]);
        for x in &schema.extensions {
            table.add_row(vec![x.name.clone(), x.version.clone(), x.schema.clone()]);
        }
        let _ = writeln!(out, "{table}");
    }
}
