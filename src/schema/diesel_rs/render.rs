//! The text of a schema.rs, byte for byte as `diesel print-schema` 2.3 writes it: diesel's
//! layout, then the few changes rustfmt (which diesel_cli runs on its output) makes to it. Only
//! three kinds of line are ever changed by rustfmt here, and they are laid out here as rustfmt
//! lays them out (at its default width of 100): the `allow_tables_to_appear_in_same_query!`
//! list, a long `#[derive(...)]`, and a long `#[diesel(postgres_type(...))]`. So the output
//! does not depend on whether rustfmt is installed. When a SQL name makes a string literal Rust
//! cannot read, rustfmt refuses diesel's output and diesel prints it unformatted: so does this.

use std::collections::{BTreeSet, HashSet};

use super::model::{ColumnType, ForeignKey, Table, TableName};
use super::names::{lexes, string_literal};
use super::settings::{Docs, Grouping};

const HEADER: &str = "// @generated automatically by Diesel CLI.\n";
const MAX_WIDTH: usize = 100;
/// rustfmt's `short_array_element_width_threshold`: lists of items no longer than this are
/// filled line by line instead of one item a line.
const SHORT_ITEM: usize = 10;

/// Everything the renderer needs for one section.
pub(crate) struct Schema<'a> {
    pub(crate) module: Option<&'a str>,
    pub(crate) tables: &'a [Table],
    pub(crate) foreign_keys: &'a [ForeignKey],
    pub(crate) docs: Docs,
    pub(crate) grouping: Grouping,
    pub(crate) import_types: Option<&'a [String]>,
    /// Per table, per column: the custom SQL type generated for it (when generation is on).
    pub(crate) custom: Option<&'a [Vec<Option<ColumnType>>]>,
    pub(crate) derives: &'a [String],
}

/// A text builder that indents each non-empty line by its current depth.
struct Out {
    text: String,
    depth: usize,
    /// Lay lines out as diesel writes them before rustfmt (rustfmt refused the file).
    unformatted: bool,
    /// Every string literal written so far is valid Rust.
    lexes: bool,
}

impl Out {
    /// A string literal for `text`, noting whether rustfmt could read it.
    fn literal(&mut self, text: &str) -> String {
        let literal = string_literal(text);
        self.lexes &= lexes(&literal);
        literal
    }

    /// Writes `line` indented; a line holding line breaks (a SQL name with a newline in it) has
    /// each non-empty piece indented, as diesel's pad adapter writes it (inside the string
    /// literal too: rustfmt leaves a literal's text alone).
    fn line(&mut self, line: &str) {
        for (i, piece) in line.split('\n').enumerate() {
            if i > 0 {
                self.text.push('\n');
            }
            if !piece.is_empty() {
                for _ in 0..self.depth {
                    self.text.push_str("    ");
                }
                self.text.push_str(piece);
            }
        }
        self.text.push('\n');
    }

    fn indent(&self) -> usize {
        self.depth * 4
    }

    fn docs(&mut self, doc: &str) {
        for line in doc.lines() {
            let line = line.trim();
            if line.is_empty() {
                self.line("///");
            } else {
                self.line(&format!("/// {line}"));
            }
        }
    }
}

/// The schema.rs text. diesel_cli runs rustfmt on its output and prints it unformatted when
/// rustfmt cannot read it (a SQL name with a backslash that is no Rust escape, say): then the
/// lines rustfmt would have laid out are written as diesel writes them.
pub(crate) fn render(schema: &Schema) -> String {
    let (text, lexes) = render_as(schema, false);
    if lexes {
        text
    } else {
        render_as(schema, true).0
    }
}

fn render_as(schema: &Schema, unformatted: bool) -> (String, bool) {
    let mut out = Out {
        text: String::from(HEADER),
        depth: 0,
        unformatted,
        lexes: true,
    };
    out.line("");
    if let Some(module) = schema.module {
        out.line(&format!(
            "pub mod {} {{",
            super::names::rust_name(module, None)
        ));
        out.depth += 1;
    }
    let before = out.text.len();
    custom_types(&mut out, schema);
    definitions(&mut out, schema);
    if schema.module.is_some() {
        out.depth -= 1;
        if out.text.len() == before {
            // An empty module, as rustfmt writes it.
            out.text.truncate(before - 1);
            out.text.push_str("}\n");
        } else {
            out.line("}");
        }
    }
    // rustfmt leaves one line break at the end of the file.
    while out.text.ends_with("\n\n") {
        out.text.pop();
    }
    (out.text, out.lexes)
}

/// The `sql_types` module: one struct per SQL type diesel does not provide, sorted by Rust
/// name, each once.
fn custom_types(out: &mut Out, schema: &Schema) {
    let Some(custom) = schema.custom else {
        return;
    };
    let mut types: Vec<&ColumnType> = custom.iter().flatten().flatten().collect();
    if types.is_empty() {
        return;
    }
    types.sort_by(|a, b| a.rust_name.cmp(&b.rust_name));
    types.dedup_by(|a, b| a.rust_name == b.rust_name);
    let docs = schema.docs == Docs::CommentsOrGenerated;
    if docs {
        out.line("/// A module containing custom SQL type definitions");
        out.line("///");
        out.line("/// (Automatically generated by Diesel.)");
    }
    out.line("pub mod sql_types {");
    out.depth += 1;
    for (i, ty) in types.iter().enumerate() {
        if i > 0 {
            out.line("");
        }
        if docs {
            let name = ty.sql_name.replace('\n', "\\n");
            match &ty.schema {
                Some(s) => out.line(&format!(
                    "/// The `{}.{name}` SQL type",
                    s.replace('\n', "\\n")
                )),
                None => out.line(&format!("/// The `{name}` SQL type")),
            }
            out.line("///");
            out.line("/// (Automatically generated by Diesel.)");
        }
        derive(out, schema.derives);
        let mut args = vec![format!("name = {}", out.literal(&ty.sql_name))];
        if let Some(s) = &ty.schema {
            args.push(format!("schema = {}", out.literal(s)));
        }
        postgres_type(out, &args);
        out.line(&format!("pub struct {};", ty.rust_name));
    }
    out.depth -= 1;
    out.line("}");
    out.line("");
}

/// `#[derive(...)]` as rustfmt lays it out: on one line when it fits, else its items on one
/// line of their own when they fit, else one a line.
fn derive(out: &mut Out, derives: &[String]) {
    let joined = derives.join(", ");
    let line = format!("#[derive({joined})]");
    if out.unformatted || out.indent() + line.len() <= MAX_WIDTH {
        out.line(&line);
        return;
    }
    out.line("#[derive(");
    out.depth += 1;
    if out.indent() + joined.len() <= MAX_WIDTH {
        out.line(&format!("{joined},"));
    } else {
        for d in derives {
            out.line(&format!("{d},"));
        }
    }
    out.depth -= 1;
    out.line(")]");
}

/// `#[diesel(postgres_type(...))]` on one line, or its arguments one a line when it is too long.
fn postgres_type(out: &mut Out, args: &[String]) {
    let line = format!("#[diesel(postgres_type({}))]", args.join(", "));
    if out.unformatted || out.indent() + line.len() <= MAX_WIDTH {
        out.line(&line);
        return;
    }
    out.line("#[diesel(postgres_type(");
    out.depth += 1;
    for (i, arg) in args.iter().enumerate() {
        if i + 1 < args.len() {
            out.line(&format!("{arg},"));
        } else {
            out.line(arg);
        }
    }
    out.depth -= 1;
    out.line("))]");
}

fn definitions(out: &mut Out, schema: &Schema) {
    for (i, table) in schema.tables.iter().enumerate() {
        if i > 0 {
            out.line("");
        }
        let custom = schema.custom.map(|c| c[i].as_slice());
        table_definition(out, schema, table, custom);
    }
    if !schema.foreign_keys.is_empty() {
        out.line("");
    }
    for fk in schema.foreign_keys {
        out.line(&format!(
            "diesel::joinable!({} -> {} ({}));",
            fk.child.rust_name, fk.parent.rust_name, fk.columns_rust[0]
        ));
    }
    let groups: Vec<Vec<&TableName>> = match schema.grouping {
        Grouping::AllTables => vec![schema.tables.iter().map(|t| &t.name).collect()],
        Grouping::FkRelatedTables => related_groups(schema.tables, schema.foreign_keys),
        Grouping::None => Vec::new(),
    };
    for (i, group) in groups.iter().filter(|g| g.len() >= 2).enumerate() {
        if i == 0 {
            out.line("");
        }
        let names: Vec<&str> = group.iter().map(|t| t.rust_name.as_str()).collect();
        allow_tables(out, &names);
    }
}

/// `diesel::allow_tables_to_appear_in_same_query!(a, b, c,);` as rustfmt lays it out: on one
/// line when it fits; else, when every name is short, names filling lines; else one a line.
fn allow_tables(out: &mut Out, names: &[&str]) {
    const OPEN: &str = "diesel::allow_tables_to_appear_in_same_query!(";
    if out.unformatted {
        // diesel's own layout: each name followed by a comma, on one indented line.
        out.line(OPEN);
        out.depth += 1;
        let list: String = names.iter().map(|n| format!("{n},")).collect();
        out.line(&format!("{list});"));
        out.depth -= 1;
        return;
    }
    let joined = names.join(", ");
    if out.indent() + OPEN.len() + joined.len() + 2 <= MAX_WIDTH {
        out.line(&format!("{OPEN}{joined},);"));
        return;
    }
    out.line(OPEN);
    out.depth += 1;
    let width = out.indent();
    if names.iter().all(|n| n.len() <= SHORT_ITEM) {
        let mut line = String::new();
        for name in names {
            // Each item is followed by ", " while it is measured, the last of a line by ",".
            if !line.is_empty() && width + line.len() + 2 + name.len() + 2 > MAX_WIDTH {
                out.line(&format!("{line},"));
                line.clear();
            }
            if !line.is_empty() {
                line.push_str(", ");
            }
            line.push_str(name);
        }
        out.line(&format!("{line},"));
    } else {
        for name in names {
            out.line(&format!("{name},"));
        }
    }
    out.depth -= 1;
    out.line(");");
}

/// Tables linked by foreign keys (in either direction), each group sorted, groups sorted.
fn related_groups<'a>(tables: &'a [Table], keys: &'a [ForeignKey]) -> Vec<Vec<&'a TableName>> {
    let mut seen: BTreeSet<&TableName> = BTreeSet::new();
    let mut groups = Vec::new();
    for table in tables {
        if !seen.insert(&table.name) {
            continue;
        }
        let mut group = Vec::new();
        let mut todo = vec![&table.name];
        while let Some(name) = todo.pop() {
            group.push(name);
            for fk in keys {
                if fk.parent == *name && seen.insert(&fk.child) {
                    todo.push(&fk.child);
                }
            }
            for fk in keys {
                if fk.child == *name && seen.insert(&fk.parent) {
                    todo.push(&fk.parent);
                }
            }
        }
        group.sort();
        groups.push(group);
    }
    groups.sort();
    groups
}

fn table_definition(
    out: &mut Out,
    schema: &Schema,
    table: &Table,
    custom: Option<&[Option<ColumnType>]>,
) {
    out.line("diesel::table! {");
    out.depth += 1;
    let mut imported = false;
    for import in schema.import_types.unwrap_or_default() {
        out.line(&format!("use {import};"));
        imported = true;
    }
    let mut seen: HashSet<&str> = HashSet::new();
    for ty in custom.unwrap_or_default().iter().flatten() {
        if seen.insert(&ty.rust_name) {
            if !imported {
                out.line("use diesel::sql_types::*;");
            }
            out.line(&format!("use super::sql_types::{};", ty.rust_name));
            imported = true;
        }
    }
    if imported {
        out.line("");
    }
    let full = table.name.full_sql_name();
    match (schema.docs, &table.comment) {
        (Docs::None, _) | (Docs::OnlyDatabaseComments, None) => {}
        (_, Some(comment)) => out.docs(comment),
        (Docs::CommentsOrGenerated, None) => out.docs(&format!(
            "Representation of the `{full}` table.\n\n(Automatically generated by Diesel.)"
        )),
    }
    if table.name.rust_name != table.name.sql_name {
        let literal = out.literal(&full);
        out.line(&format!("#[sql_name = {literal}]"));
    }
    out.line(&format!(
        "{} ({}) {{",
        table.name,
        table.primary_key.join(", ")
    ));
    out.depth += 1;
    for (i, column) in table.columns.iter().enumerate() {
        let ty = custom.and_then(|c| c[i].as_ref()).unwrap_or(&column.ty);
        match (schema.docs, &column.comment) {
            (Docs::None, _) | (Docs::OnlyDatabaseComments, None) => {}
            (_, Some(comment)) => out.docs(comment),
            (Docs::CommentsOrGenerated, None) => out.docs(&format!(
                "The `{}` column of the `{full}` table.\n\nIts SQL type is `{ty}`.\n\n\
                 (Automatically generated by Diesel.)",
                column.sql_name
            )),
        }
        if column.rust_name != column.sql_name {
            let literal = out.literal(&column.sql_name);
            out.line(&format!("#[sql_name = {literal}]"));
        }
        if let Some(n) = column.ty.max_length {
            out.line(&format!("#[max_length = {n}]"));
        }
        out.line(&format!("{} -> {ty},", column.rust_name));
    }
    out.depth -= 1;
    out.line("}");
    out.depth -= 1;
    out.line("}");
}
