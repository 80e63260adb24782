//! SQLite's DDL writer. What `ALTER TABLE` can do in place it does (rename, add a column at the
//! end); any other change to a table rebuilds it by SQLite's documented procedure
//! (<https://www.sqlite.org/lang_altertable.html#otheralter>): create the new table under a
//! scratch name from the desired `CREATE TABLE` as written, copy the rows of the columns both
//! have, drop the old table, rename the new one, then create its indexes and triggers again.
//!
//! That runs inside the migration's transaction, where `PRAGMA foreign_keys` cannot change: it
//! relies on foreign keys being off during migrations, as dbctl and diesel both run them (so
//! `DROP TABLE` deletes no rows through `ON DELETE` actions). `PRAGMA defer_foreign_keys = ON`
//! comes first for a run with them on, and after the rebuilds a check fails the migration when a
//! rebuilt table holds a row whose foreign key points nowhere (`pragma_foreign_key_check`).
//! Views are dropped first and created again last, since renaming a table checks every view.
//! Text kept as written (types, defaults, CHECKs, index and view statements) is compared in a
//! normal form: the same thing written differently is no change.

use std::collections::{BTreeMap, BTreeSet};

use super::plan::{dependency_order, Phase, Step};
use super::scratch::Side;
use super::sql::{ident, idents, normal};
use crate::schema::{Column, ForeignKey, Table};

pub(crate) fn plan(from: &Side, to: &Side) -> Vec<Step> {
    let (a, b) = (&from.schema, &to.schema);
    let mut steps = Vec::new();
    let old_tables: BTreeMap<&str, &Table> =
        a.tables.iter().map(|t| (t.name.as_str(), t)).collect();
    let new_tables: BTreeMap<&str, &Table> =
        b.tables.iter().map(|t| (t.name.as_str(), t)).collect();

    let dropped: Vec<&Table> = a
        .tables
        .iter()
        .filter(|t| !new_tables.contains_key(t.name.as_str()))
        .collect();
    for t in &dropped {
        steps.push(
            Step::new(
                Phase::DropTables,
                format!("- table {}", t.name),
                format!("DROP TABLE {};", ident(&t.name)),
            )
            .destructive(),
        );
    }
    let created: Vec<&Table> = b
        .tables
        .iter()
        .filter(|t| !old_tables.contains_key(t.name.as_str()))
        .collect();
    if let (Some(first), false) = (steps.first_mut(), created.is_empty()) {
        first.note = Some(format!(
            "Tables dropped and created: if one was renamed, run again with --rename OLD=NEW \
             to keep its rows (created: {}).",
            created
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Tables whose indexes and triggers are all created anew.
    let mut fresh: BTreeSet<String> = BTreeSet::new();
    for name in dependency_order(&created) {
        let sql = to.table_sql.get(&name).cloned().unwrap_or_default();
        steps.push(Step::new(
            Phase::CreateTables,
            format!("+ table {name}"),
            format!("{};", sql.trim_end_matches(';')),
        ));
        fresh.insert(name);
    }
    let mut rebuilt = Vec::new();
    for (name, old) in &old_tables {
        let Some(new) = new_tables.get(name) else {
            continue;
        };
        if same_table(old, new) {
            continue;
        }
        if let Some(added) = appended(old, new) {
            for c in added {
                let def = column_text(to, name, &c.name).unwrap_or_else(|| column_def(c));
                steps.push(Step::new(
                    Phase::Columns,
                    format!("+ column {name}.{}", c.name),
                    format!("ALTER TABLE {} ADD COLUMN {def};", ident(name)),
                ));
            }
            continue;
        }
        steps.push(rebuild(to, old, new));
        rebuilt.push(name.to_string());
        fresh.insert(name.to_string());
    }

    // Indexes.
    for t in &b.tables {
        let old = old_tables.get(t.name.as_str());
        for ix in &t.indexes {
            let same = old
                .filter(|_| !fresh.contains(&t.name))
                .and_then(|o| o.indexes.iter().find(|x| x.name == ix.name))
                .is_some_and(|x| normal(&x.definition) == normal(&ix.definition));
            if !same {
                steps.push(Step::new(
                    Phase::CreateIndexes,
                    format!("+ index {}.{}", t.name, ix.name),
                    format!("{};", ix.definition.trim_end_matches(';')),
                ));
            }
        }
    }
    for t in &a.tables {
        let Some(new) = new_tables.get(t.name.as_str()) else {
            continue;
        };
        if fresh.contains(&t.name) {
            continue;
        }
        for ix in &t.indexes {
            let same = new
                .indexes
                .iter()
                .find(|x| x.name == ix.name)
                .is_some_and(|x| normal(&x.definition) == normal(&ix.definition));
            if !same {
                steps.push(Step::new(
                    Phase::DropIndexes,
                    format!("- index {}.{}", t.name, ix.name),
                    format!("DROP INDEX {};", ident(&ix.name)),
                ));
            }
        }
    }

    // Triggers. Those whose body names a rebuilt table are made again too: renaming the new
    // table checks every trigger, and one naming the dropped table fails it.
    let mentions_rebuilt = |sql: &str| {
        rebuilt
            .iter()
            .any(|t| super::plan::replace_word(sql, t, "\u{1}") != sql)
    };
    // Views dropped and created again lose their triggers too (`INSTEAD OF`); those come back
    // once the view is there.
    let disturbed = !rebuilt.is_empty() || !dropped.is_empty();
    let recreated_views = recreated_views(from, to, disturbed);
    fresh.extend(recreated_views.iter().cloned());
    let is_view = |name: &str| b.views.iter().any(|v| v.name == name);
    for tr in &to.triggers {
        let same = !fresh.contains(&tr.table)
            && !mentions_rebuilt(&tr.sql)
            && from
                .triggers
                .iter()
                .any(|o| o.name == tr.name && normal(&o.sql) == normal(&tr.sql));
        if !same {
            let phase = if is_view(&tr.table) {
                Phase::ViewTriggers
            } else {
                Phase::Triggers
            };
            steps.push(Step::new(
                phase,
                format!("+ trigger {}.{}", tr.table, tr.name),
                format!("{};", tr.sql.trim_end_matches(';')),
            ));
        }
    }
    for tr in &from.triggers {
        let gone_with_table = !(new_tables.contains_key(tr.table.as_str()) || is_view(&tr.table))
            || fresh.contains(&tr.table);
        let same = !mentions_rebuilt(&tr.sql)
            && to
                .triggers
                .iter()
                .any(|n| n.name == tr.name && normal(&n.sql) == normal(&tr.sql));
        if !same && !gone_with_table {
            steps.push(Step::new(
                Phase::DropViews,
                format!("- trigger {}.{}", tr.table, tr.name),
                format!("DROP TRIGGER {};", ident(&tr.name)),
            ));
        }
    }

    // Views: all of them again when a table is rebuilt, renamed or dropped; else the changed.
    views(from, to, &recreated_views, &mut steps);

    if !rebuilt.is_empty() {
        steps.insert(
            0,
            Step::new(
                Phase::DropViews,
                "foreign keys checked at commit",
                "PRAGMA defer_foreign_keys = ON;",
            )
            .note(
                "Tables below are rebuilt. Migrations run with foreign keys off (dbctl and diesel \
                 both do); with them on, this defers their checks to the commit.",
            ),
        );
        let counts: Vec<String> = rebuilt
            .iter()
            .map(|t| {
                format!(
                    "(SELECT count(*) FROM pragma_foreign_key_check({}))",
                    super::sql::literal(t)
                )
            })
            .collect();
        steps.push(
            Step::new(
                Phase::Check,
                "foreign keys of rebuilt tables checked",
                format!(
                    "CREATE TEMP TABLE _dbctl_fk_check (foreign_key_violations INTEGER CHECK (foreign_key_violations = 0));\n\
                     INSERT INTO _dbctl_fk_check SELECT {};\n\
                     DROP TABLE _dbctl_fk_check;",
                    counts.join(" + ")
                ),
            )
            .note("Fails the migration if a rebuilt table holds a row whose foreign key points nowhere."),
        );
    }
    steps.sort_by_key(|s| s.phase);
    steps
}

/// Whether two tables say the same (indexes and triggers aside).
fn same_table(a: &Table, b: &Table) -> bool {
    a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| same_column(x, y))
        && same_constraints(a, b)
}

fn same_column(a: &Column, b: &Column) -> bool {
    let n = |s: &Option<String>| s.as_deref().map(normal);
    a.name == b.name
        && a.data_type.eq_ignore_ascii_case(&b.data_type)
        && a.nullable == b.nullable
        && n(&a.default) == n(&b.default)
        && n(&a.generated) == n(&b.generated)
}

/// A foreign key as compared: its deferral is part of the table's DDL (a change rebuilds it).
type FkKey = (
    Option<String>,
    Vec<String>,
    String,
    Vec<String>,
    String,
    String,
    (bool, bool),
);

fn fk_key(fk: &ForeignKey) -> FkKey {
    (
        fk.name.clone(),
        fk.columns.clone(),
        fk.referred_table.to_ascii_lowercase(),
        fk.referred_columns.clone(),
        fk.on_update.clone(),
        fk.on_delete.clone(),
        (fk.deferrable, fk.initially_deferred),
    )
}

fn same_constraints(a: &Table, b: &Table) -> bool {
    let fks = |t: &Table| t.foreign_keys.iter().map(fk_key).collect::<BTreeSet<_>>();
    let checks = |t: &Table| {
        t.checks
            .iter()
            .map(|c| (c.name.clone(), normal(&c.expression)))
            .collect::<BTreeSet<_>>()
    };
    let uniques = |t: &Table| {
        t.unique_constraints
            .iter()
            .map(|u| (u.name.clone(), u.columns.clone()))
            .collect::<BTreeSet<_>>()
    };
    a.primary_key == b.primary_key
        && fks(a) == fks(b)
        && checks(a) == checks(b)
        && uniques(a) == uniques(b)
}

/// The columns `b` adds at the end of `a`, when that is its only change and `ADD COLUMN` can
/// add each (no key, no expression default, a default when NOT NULL, not generated).
fn appended<'b>(a: &Table, b: &'b Table) -> Option<Vec<&'b Column>> {
    if b.columns.len() <= a.columns.len()
        || !a
            .columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| same_column(x, y))
        || !same_constraints(a, b)
    {
        return None;
    }
    let added: Vec<&Column> = b.columns[a.columns.len()..].iter().collect();
    let ok = added.iter().all(|c| {
        let constant = c.default.as_deref().is_none_or(|d| {
            let d = d.trim().to_ascii_uppercase();
            !d.starts_with('(') && !d.starts_with("CURRENT_")
        });
        c.generated.is_none() && constant && (c.nullable || c.default.is_some())
    });
    ok.then_some(added)
}

fn column_def(c: &Column) -> String {
    let mut def = format!("{} {}", ident(&c.name), c.data_type);
    if !c.nullable {
        def.push_str(" NOT NULL");
    }
    if let Some(d) = &c.default {
        def.push_str(&format!(" DEFAULT {d}"));
    }
    def
}

/// The definition of a column as written in the desired `CREATE TABLE`.
fn column_text(side: &Side, table: &str, column: &str) -> Option<String> {
    let sql = side.table_sql.get(table)?;
    let (_, body) = split_create(sql)?;
    body.into_iter()
        .find(|part| first_name(part).is_some_and(|n| n.eq_ignore_ascii_case(column)))
}

fn rebuild(to: &Side, old: &Table, new: &Table) -> Step {
    let scratch = format!("_dbctl_new_{}", new.name);
    let sql = to.table_sql.get(&new.name).cloned().unwrap_or_default();
    let create = rename_create(&sql, &scratch).unwrap_or(sql);
    let kept: Vec<String> = new
        .columns
        .iter()
        .filter(|c| {
            c.generated.is_none() && old.column(&c.name).is_some_and(|o| o.generated.is_none())
        })
        .map(|c| c.name.clone())
        .collect();
    let lost: Vec<&str> = old
        .columns
        .iter()
        .filter(|c| new.column(&c.name).is_none())
        .map(|c| c.name.as_str())
        .collect();
    let t = ident(&new.name);
    let s = ident(&scratch);
    let mut text = format!("{};\n", create.trim_end_matches(';'));
    if !kept.is_empty() {
        let cols = idents(&kept);
        text.push_str(&format!(
            "INSERT INTO {s} ({cols}) SELECT {cols} FROM {t};\n"
        ));
    }
    text.push_str(&format!("DROP TABLE {t};\nALTER TABLE {s} RENAME TO {t};"));
    let mut what = Vec::new();
    if !lost.is_empty() {
        what.push(format!("columns dropped: {}", lost.join(", ")));
    }
    let gained: Vec<&str> = new
        .columns
        .iter()
        .filter(|c| old.column(&c.name).is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !gained.is_empty() {
        what.push(format!("columns added: {}", gained.join(", ")));
    }
    if what.is_empty() {
        what.push("columns or constraints changed".to_string());
    }
    let mut note = format!(
        "SQLite cannot make this change with ALTER TABLE: {} is rebuilt (new table, copy, drop, rename).",
        new.name
    );
    if gained
        .iter()
        .filter_map(|g| new.column(g))
        .any(|c| !c.nullable && c.default.is_none() && c.generated.is_none())
    {
        note.push_str(
            "\nA new NOT NULL column has no default: the copy fails if the table has rows.",
        );
    }
    let step = Step::new(
        Phase::Columns,
        format!("~ table {} rebuilt ({})", new.name, what.join("; ")),
        text,
    )
    .note(note);
    if lost.is_empty() {
        step
    } else {
        step.destructive()
    }
}

/// The views of `to` created (again): all of them when `disturbed`, else those new or changed.
fn recreated_views(from: &Side, to: &Side, disturbed: bool) -> BTreeSet<String> {
    let a = &from.schema.views;
    to.schema
        .views
        .iter()
        .filter(|n| {
            disturbed
                || !a
                    .iter()
                    .any(|o| o.name == n.name && normal(&o.definition) == normal(&n.definition))
        })
        .map(|v| v.name.clone())
        .collect()
}

fn views(from: &Side, to: &Side, recreated: &BTreeSet<String>, steps: &mut Vec<Step>) {
    let (a, b) = (&from.schema.views, &to.schema.views);
    for v in a.iter().rev() {
        let kept = b.iter().any(|n| n.name == v.name) && !recreated.contains(&v.name);
        if !kept {
            steps.push(Step::new(
                Phase::DropViews,
                format!("- view {}", v.name),
                format!("DROP VIEW {};", ident(&v.name)),
            ));
        }
    }
    for v in b {
        if recreated.contains(&v.name) {
            steps.push(Step::new(
                Phase::CreateViews,
                format!("+ view {}", v.name),
                format!("{};", v.definition.trim_end_matches(';')),
            ));
        }
    }
}

/// A token of a `CREATE TABLE` statement: its byte range and whether it is a word or a quoted
/// name (with the name unquoted).
struct Tok {
    start: usize,
    end: usize,
    text: String,
    name: bool,
}

/// The tokens of `sql` up to depth-0 `(`, skipping comments.
fn next_token(sql: &str, mut i: usize) -> Option<Tok> {
    let b = sql.as_bytes();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if sql[i..].starts_with("--") {
            i += sql[i..].find('\n').map_or(sql.len() - i, |n| n + 1);
        } else if sql[i..].starts_with("/*") {
            i += sql[i..].find("*/").map_or(sql.len() - i, |n| n + 2);
        } else {
            break;
        }
    }
    let start = i;
    let c = *b.get(i)?;
    if matches!(c, b'"' | b'`' | b'[') {
        let close = if c == b'[' { b']' } else { c };
        let mut text = Vec::new();
        i += 1;
        while i < b.len() {
            if b[i] == close {
                if close != b']' && b.get(i + 1) == Some(&close) {
                    text.push(close);
                    i += 2;
                    continue;
                }
                break;
            }
            text.push(b[i]);
            i += 1;
        }
        return Some(Tok {
            start,
            end: (i + 1).min(b.len()),
            text: String::from_utf8_lossy(&text).into_owned(),
            name: true,
        });
    }
    if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
        while i < b.len()
            && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
        {
            i += 1;
        }
        return Some(Tok {
            start,
            end: i,
            text: sql[start..i].to_string(),
            name: false,
        });
    }
    Some(Tok {
        start,
        end: i + 1,
        text: (c as char).to_string(),
        name: false,
    })
}

/// The byte range of the table's name in a `CREATE TABLE` (with any `schema.` before it), and
/// where the column list opens.
fn name_span(sql: &str) -> Option<(usize, usize, usize)> {
    let mut i = 0;
    let mut seen_table = false;
    loop {
        let tok = next_token(sql, i)?;
        i = tok.end;
        if !seen_table {
            seen_table = tok.text.eq_ignore_ascii_case("table") && !tok.name;
            continue;
        }
        let upper = tok.text.to_ascii_uppercase();
        if !tok.name && matches!(upper.as_str(), "IF" | "NOT" | "EXISTS") {
            continue;
        }
        let start = tok.start;
        let mut end = tok.end;
        let mut after = next_token(sql, end)?;
        if after.text == "." && !after.name {
            let name = next_token(sql, after.end)?;
            end = name.end;
            after = next_token(sql, end)?;
        }
        return (after.text == "(").then_some((start, end, after.start));
    }
}

/// `CREATE TABLE` with another name.
fn rename_create(sql: &str, name: &str) -> Option<String> {
    let (start, end, _) = name_span(sql)?;
    Some(format!("{}{}{}", &sql[..start], ident(name), &sql[end..]))
}

/// The parts of the column list, split at its top-level commas.
fn split_create(sql: &str) -> Option<(String, Vec<String>)> {
    let (start, end, open) = name_span(sql)?;
    let b = sql.as_bytes();
    let mut depth = 0;
    let mut parts = Vec::new();
    let mut part_start = open + 1;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if b[i] == b'[' { b']' } else { b[i] };
                i += 1;
                while i < b.len() && b[i] != close {
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    parts.push(lead_trimmed(&sql[part_start..i]));
                    return Some((sql[start..end].to_string(), parts));
                }
            }
            b',' if depth == 1 => {
                parts.push(lead_trimmed(&sql[part_start..i]));
                part_start = i + 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A part without the white space and comments around it.
fn lead_trimmed(part: &str) -> String {
    let start = next_token(part, 0).map_or(part.len(), |t| t.start);
    part[start..].trim().to_string()
}

/// The column a part of the column list defines (`None` for a table constraint).
fn first_name(part: &str) -> Option<String> {
    let tok = next_token(part, 0)?;
    let upper = tok.text.to_ascii_uppercase();
    if !tok.name
        && matches!(
            upper.as_str(),
            "CONSTRAINT" | "PRIMARY" | "UNIQUE" | "CHECK" | "FOREIGN"
        )
    {
        return None;
    }
    Some(tok.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_the_created_table() {
        assert_eq!(
            rename_create("CREATE TABLE IF NOT EXISTS \"my t\" (a INT)", "x").unwrap(),
            "CREATE TABLE IF NOT EXISTS x (a INT)"
        );
        assert_eq!(
            rename_create("create table main.t(a)", "_dbctl_new_t").unwrap(),
            "create table _dbctl_new_t(a)"
        );
    }

    #[test]
    fn finds_column_definitions() {
        let sql = "CREATE TABLE t (\n  id INTEGER PRIMARY KEY, -- the key, (really)\n  \"Name\" TEXT DEFAULT 'a,b' NOT NULL,\n  n NUMERIC(10, 2),\n  CONSTRAINT c CHECK (n > 0)\n)";
        let (_, parts) = split_create(sql).unwrap();
        let names: Vec<Option<String>> = parts.iter().map(|p| first_name(p)).collect();
        assert_eq!(
            names,
            [
                Some("id".into()),
                Some("Name".into()),
                Some("n".into()),
                None
            ]
        );
        assert_eq!(parts[1], "\"Name\" TEXT DEFAULT 'a,b' NOT NULL");
    }
}
