//! Diagrams of a schema: a Mermaid entity-relationship diagram (renders on GitHub and in most
//! documentation tools) and a Graphviz digraph. Both draw the tables shown and the foreign keys
//! between them; a foreign key to a table that is not shown is left out.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::schema::{ForeignKey, Schema, Table};

/// Mermaid `erDiagram`. Mermaid accepts only word characters (and `-`, `()`, `[]`) in attribute
/// types and names, so others become `_`; a column whose name had to change carries its real name
/// as the attribute's comment. Entity names that are not plain words are quoted.
pub(crate) fn mermaid(schema: &Schema) -> String {
    let mut out = String::from("erDiagram\n");
    for t in &schema.tables {
        let entity = mermaid_entity(&schema.display_name(&t.schema, &t.name));
        if t.columns.is_empty() {
            let _ = writeln!(out, "    {entity}");
            continue;
        }
        let _ = writeln!(out, "    {entity} {{");
        for c in &t.columns {
            let ty = mermaid_word(&c.data_type);
            let name = mermaid_word(&c.name);
            let mut line = format!("        {ty} {name}");
            let keys = keys_of(t, &c.name);
            if !keys.is_empty() {
                let _ = write!(line, " {}", keys.join(", "));
            }
            if name != c.name {
                let _ = write!(line, " \"{}\"", c.name.replace('"', "'"));
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "    }}");
    }
    for (t, fk, parent) in relationships(schema) {
        let child_name = mermaid_entity(&schema.display_name(&t.schema, &t.name));
        let parent_name = mermaid_entity(&schema.display_name(&parent.schema, &parent.name));
        let optional = fk
            .columns
            .iter()
            .any(|c| t.column(c).is_none_or(|c| c.nullable));
        let left = if optional { "|o" } else { "||" };
        let right = if is_unique(t, &fk.columns) {
            "o|"
        } else {
            "o{"
        };
        let identifying = t
            .primary_key
            .as_ref()
            .is_some_and(|pk| fk.columns.iter().all(|c| pk.columns.contains(c)));
        let line = if identifying { "--" } else { ".." };
        let label = fk
            .name
            .clone()
            .unwrap_or_else(|| fk.columns.join(", "))
            .replace('"', "'");
        let _ = writeln!(
            out,
            "    {parent_name} {left}{line}{right} {child_name} : \"{label}\""
        );
    }
    out
}

/// Graphviz `digraph`: one HTML-label node per table, one edge per foreign key, from the
/// referencing column to the referred one.
pub(crate) fn dot(schema: &Schema) -> String {
    let mut out = String::from(
        "digraph schema {\n    graph [rankdir=LR, fontname=\"Helvetica\"];\n    \
         node [shape=plaintext, fontname=\"Helvetica\"];\n    edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    for (i, t) in schema.tables.iter().enumerate() {
        let _ = write!(
            out,
            "    t{i} [label=<<TABLE BORDER=\"0\" CELLBORDER=\"1\" CELLSPACING=\"0\">\
             <TR><TD BGCOLOR=\"lightgrey\"><B>{}</B></TD></TR>",
            html(&schema.display_name(&t.schema, &t.name))
        );
        for (j, c) in t.columns.iter().enumerate() {
            let keys = keys_of(t, &c.name);
            let keys = if keys.is_empty() {
                String::new()
            } else {
                format!(" <I>{}</I>", keys.join(", "))
            };
            let null = if c.nullable { "" } else { " NOT NULL" };
            let _ = write!(
                out,
                "<TR><TD PORT=\"c{j}\" ALIGN=\"LEFT\">{}: {}{null}{keys}</TD></TR>",
                html(&c.name),
                html(&c.data_type)
            );
        }
        let _ = writeln!(out, "</TABLE>>];");
    }
    let index: HashMap<(&str, &str), usize> = schema
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| ((t.schema.as_str(), t.name.as_str()), i))
        .collect();
    for (t, fk, parent) in relationships(schema) {
        let (Some(&from), Some(&to)) = (
            index.get(&(t.schema.as_str(), t.name.as_str())),
            index.get(&(parent.schema.as_str(), parent.name.as_str())),
        ) else {
            continue;
        };
        let port = |table: &Table, col: Option<&String>| {
            col.and_then(|c| table.columns.iter().position(|x| &x.name == c))
                .map_or(String::new(), |p| format!(":c{p}"))
        };
        let label = fk.name.clone().unwrap_or_else(|| fk.columns.join(", "));
        let _ = writeln!(
            out,
            "    t{from}{} -> t{to}{} [label=\"{}\"];",
            port(t, fk.columns.first()),
            port(parent, fk.referred_columns.first()),
            label.replace('\\', "\\\\").replace('"', "\\\"")
        );
    }
    out.push_str("}\n");
    out
}

/// Every foreign key whose referred table is in the diagram, with both tables.
fn relationships(schema: &Schema) -> Vec<(&Table, &ForeignKey, &Table)> {
    let mut out = Vec::new();
    for t in &schema.tables {
        for fk in &t.foreign_keys {
            if let Some(parent) = schema
                .tables
                .iter()
                .find(|p| p.schema == fk.referred_schema && p.name == fk.referred_table)
            {
                out.push((t, fk, parent));
            }
        }
    }
    out
}

/// `PK`, `FK`, `UK` markers of a column.
fn keys_of(t: &Table, column: &str) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if t.primary_key
        .as_ref()
        .is_some_and(|pk| pk.columns.iter().any(|c| c == column))
    {
        keys.push("PK");
    }
    if t.foreign_keys
        .iter()
        .any(|fk| fk.columns.iter().any(|c| c == column))
    {
        keys.push("FK");
    }
    let unique_index = t
        .indexes
        .iter()
        .any(|ix| ix.unique && ix.predicate.is_none() && ix.columns.iter().any(|c| c == column));
    if unique_index
        || t.unique_constraints
            .iter()
            .any(|u| u.columns.iter().any(|c| c == column))
    {
        keys.push("UK");
    }
    keys
}

/// Whether `columns` are exactly a primary key or unique constraint (one row per value).
fn is_unique(t: &Table, columns: &[String]) -> bool {
    let same = |other: &[String]| {
        other.len() == columns.len() && other.iter().all(|c| columns.contains(c))
    };
    t.primary_key.as_ref().is_some_and(|pk| same(&pk.columns))
        || t.unique_constraints.iter().any(|u| same(&u.columns))
        || t.indexes
            .iter()
            .any(|ix| ix.unique && ix.predicate.is_none() && !ix.expression && same(&ix.columns))
}

/// A word Mermaid accepts as an attribute type or name.
fn mermaid_word(text: &str) -> String {
    let mut word: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-()[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        word.insert(0, '_');
    }
    word
}

/// An entity name: bare when it is a plain word, quoted otherwise.
fn mermaid_entity(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "'"))
    }
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
