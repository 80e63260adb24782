//! What both DDL writers produce: steps, each one statement group with its place in the
//! dependency order ([`Phase`]), a one-line summary and whether it can lose data; and the rename
//! hints (`--rename`), applied to the model of the starting side before the two are compared.

use serde::Serialize;

use super::scratch::Side;
use super::sql::ident;
use crate::schema::Table;

/// Where a step goes: steps are written in this order, and in their own order within a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Views (and SQLite triggers) that change or that a table change could break.
    DropViews,
    /// PostgreSQL triggers that change or go, before the functions they call.
    DropTriggers,
    Renames,
    DropForeignKeys,
    DropIndexes,
    DropConstraints,
    CreateExtensions,
    Enums,
    /// Domains and composite types made or changed.
    CreateTypes,
    CreateSequences,
    /// Functions and procedures made or replaced, before the tables and triggers that use them.
    Functions,
    DropTables,
    CreateTables,
    Columns,
    AddConstraints,
    AddForeignKeys,
    CreateIndexes,
    /// SQL functions that read the schema's tables or views (checked when created).
    LateFunctions,
    Triggers,
    CreateViews,
    /// Triggers on views (`INSTEAD OF`), once the view exists.
    ViewTriggers,
    /// `COMMENT ON`, once everything commented exists.
    Comments,
    SequenceOwners,
    DropSequences,
    /// Functions and procedures dropped, after what used them.
    DropFunctions,
    DropTypes,
    DropEnums,
    DropExtensions,
    /// SQLite: the foreign key check after table rebuilds.
    Check,
}

/// One statement group of a migration.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) phase: Phase,
    /// The SQL, ending in `;` (several lines for a group such as a table rebuild).
    pub(crate) sql: String,
    pub(crate) summary: String,
    pub(crate) destructive: bool,
    /// A comment written above the SQL (without `-- `).
    pub(crate) note: Option<String>,
    /// A difference the writer cannot express: the step holds no SQL, only its summary, which
    /// the file shows as a comment and the report as `not written: ...`.
    pub(crate) unwritten: bool,
}

impl Step {
    pub(crate) fn new(phase: Phase, summary: impl Into<String>, sql: impl Into<String>) -> Step {
        Step {
            phase,
            sql: sql.into(),
            summary: summary.into(),
            destructive: false,
            note: None,
            unwritten: false,
        }
    }

    /// A difference no SQL is written for; `what` says which and why.
    pub(crate) fn unwritten(phase: Phase, what: impl Into<String>) -> Step {
        Step {
            phase,
            sql: String::new(),
            summary: format!("not written: {}", what.into()),
            destructive: false,
            note: None,
            unwritten: true,
        }
    }

    pub(crate) fn destructive(mut self) -> Step {
        self.destructive = true;
        self
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Step {
        self.note = Some(note.into());
        self
    }
}

/// A change as `--check` and the report list it.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Change {
    pub(crate) summary: String,
    pub(crate) destructive: bool,
}

/// `--rename` hints, as the user wrote them (old name to new name).
#[derive(Debug, Clone, Default)]
pub(crate) struct Renames {
    pub(crate) tables: Vec<(String, String)>,
    /// (table as the desired schema names it, old column, new column).
    pub(crate) columns: Vec<(String, String, String)>,
}

impl Renames {
    /// Parses `old_table=new_table` or `table.old=new`.
    pub(crate) fn add(&mut self, hint: &str) -> anyhow::Result<()> {
        let bad = || {
            crate::error::usage(format!(
                "--rename {}: expected OLD_TABLE=NEW_TABLE or TABLE.OLD_COLUMN=NEW_COLUMN",
                crate::output::quote(hint)
            ))
        };
        let (left, new) = hint.split_once('=').ok_or_else(bad)?;
        let (left, new) = (left.trim(), new.trim());
        if left.is_empty() || new.is_empty() {
            return Err(bad());
        }
        match left.split_once('.') {
            Some((table, old)) if !table.is_empty() && !old.is_empty() => {
                self.columns
                    .push((table.to_string(), old.to_string(), new.to_string()))
            }
            Some(_) => return Err(bad()),
            None => self.tables.push((left.to_string(), new.to_string())),
        }
        Ok(())
    }

    /// Applies the hints to `from` (the side the migration starts from) and returns the rename
    /// statements. `reverse`: `from` is the desired side (down.sql), so each hint runs backwards.
    pub(crate) fn apply(
        &self,
        from: &mut Side,
        to: &Side,
        reverse: bool,
    ) -> anyhow::Result<Vec<Step>> {
        let mut steps = Vec::new();
        let tables: Vec<(String, String)> = self
            .tables
            .iter()
            .map(|(o, n)| {
                if reverse {
                    (n.clone(), o.clone())
                } else {
                    (o.clone(), n.clone())
                }
            })
            .collect();
        // The desired table name of a column hint, as named on the `from` side before the table
        // renames (up) or after them (down: the column renames run first).
        let mut column_steps = Vec::new();
        let mut columns = |from: &mut Side| -> anyhow::Result<()> {
            for (table, old, new) in &self.columns {
                let (old, new) = if reverse { (new, old) } else { (old, new) };
                let Some(t) = from.schema.tables.iter().position(|t| &t.name == table) else {
                    return Err(crate::error::usage(format!(
                        "--rename {table}.{old}={new}: no table {table} in the schema the \
                         migration starts from"
                    )));
                };
                if from.schema.tables[t].column(old).is_none() {
                    return Err(crate::error::usage(format!(
                        "--rename {table}.{old}={new}: table {table} has no column {old}"
                    )));
                }
                rename_column(from, t, old, new);
                column_steps.push(Step::new(
                    Phase::Renames,
                    format!("~ column {table}.{old} renamed to {new}"),
                    format!(
                        "ALTER TABLE {} RENAME COLUMN {} TO {};",
                        ident(table),
                        ident(old),
                        ident(new)
                    ),
                ));
            }
            Ok(())
        };
        if reverse {
            columns(from)?;
        }
        for (old, new) in &tables {
            if !from.schema.tables.iter().any(|t| &t.name == old) {
                return Err(crate::error::usage(format!(
                    "--rename {old}={new}: no table {old} in the schema the migration starts from"
                )));
            }
            if !to.schema.tables.iter().any(|t| &t.name == new) {
                return Err(crate::error::usage(format!(
                    "--rename {old}={new}: no table {new} in the schema the migration goes to"
                )));
            }
            rename_table(from, old, new);
            steps.push(Step::new(
                Phase::Renames,
                format!("~ table {old} renamed to {new}"),
                format!("ALTER TABLE {} RENAME TO {};", ident(old), ident(new)),
            ));
        }
        if !reverse {
            columns(from)?;
        }
        if reverse {
            column_steps.extend(steps);
            Ok(column_steps)
        } else {
            steps.extend(column_steps);
            Ok(steps)
        }
    }
}

/// Replaces `old` by `new` where it stands as a whole word (bare or double-quoted).
pub(crate) fn replace_word(text: &str, old: &str, new: &str) -> String {
    let quoted_old = format!("\"{old}\"");
    let text = text.replace(&quoted_old, &ident(new));
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(old)
            && (i == 0 || !word(bytes[i - 1]))
            && bytes.get(i + old.len()).is_none_or(|b| !word(*b))
        {
            out.push_str(&ident(new));
            i += old.len();
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn rename_table(side: &mut Side, old: &str, new: &str) {
    for t in &mut side.schema.tables {
        if t.name == old {
            t.name = new.to_string();
            for ix in &mut t.indexes {
                ix.definition = replace_word(&ix.definition, old, new);
            }
            // PostgreSQL's triggers name their table: they follow it.
            for tr in &mut t.triggers {
                tr.definition = replace_word(&tr.definition, old, new);
            }
        }
        for fk in &mut t.foreign_keys {
            if fk.referred_table == old {
                fk.referred_table = new.to_string();
            }
        }
    }
    if let Some(sql) = side.table_sql.remove(old) {
        side.table_sql.insert(new.to_string(), sql);
    }
    for tr in &mut side.triggers {
        if tr.table == old {
            tr.table = new.to_string();
        }
    }
    for s in &mut side.schema.sequences {
        if let Some((t, c)) = s
            .owned_by
            .clone()
            .as_deref()
            .and_then(|o| o.split_once('.'))
        {
            if t == old {
                s.owned_by = Some(format!("{new}.{c}"));
            }
        }
    }
}

fn rename_column(side: &mut Side, t: usize, old: &str, new: &str) {
    let rename = |cols: &mut Vec<String>| {
        for c in cols.iter_mut() {
            if c == old {
                *c = new.to_string();
            }
        }
    };
    let name = side.schema.tables[t].name.clone();
    let table: &mut Table = &mut side.schema.tables[t];
    for c in &mut table.columns {
        if c.name == old {
            c.name = new.to_string();
        }
    }
    if let Some(pk) = &mut table.primary_key {
        rename(&mut pk.columns);
    }
    for u in &mut table.unique_constraints {
        rename(&mut u.columns);
    }
    for fk in &mut table.foreign_keys {
        rename(&mut fk.columns);
    }
    for ck in &mut table.checks {
        ck.expression = replace_word(&ck.expression, old, new);
    }
    for ix in &mut table.indexes {
        rename(&mut ix.columns);
        ix.definition = replace_word(&ix.definition, old, new);
        ix.predicate = ix.predicate.as_ref().map(|p| replace_word(p, old, new));
    }
    for tr in &mut table.triggers {
        tr.definition = replace_word(&tr.definition, old, new);
    }
    for other in &mut side.schema.tables {
        for fk in &mut other.foreign_keys {
            if fk.referred_table == name {
                rename(&mut fk.referred_columns);
            }
        }
    }
    for s in &mut side.schema.sequences {
        if s.owned_by.as_deref() == Some(&format!("{name}.{old}")) {
            s.owned_by = Some(format!("{name}.{new}"));
        }
    }
}

/// The text of a migration file: a header, then each step (a blank line between), destructive
/// ones marked.
pub(crate) fn render(header: &str, steps: &[Step]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("-- ");
        out.push_str(line);
        out.push('\n');
    }
    for step in steps {
        out.push('\n');
        if step.unwritten {
            out.push_str(&format!(
                "-- NOT WRITTEN (write it by hand): {}\n",
                step.summary.trim_start_matches("not written: ")
            ));
            continue;
        }
        if step.destructive {
            out.push_str(&format!("-- DESTRUCTIVE: {}\n", step.summary));
        }
        if let Some(note) = &step.note {
            for line in note.lines() {
                out.push_str("-- ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str(step.sql.trim_end());
        out.push('\n');
    }
    out
}

/// Orders tables so that each comes after those it refers to (among `names`); tables in a cycle
/// come last, by name. Returns the order and, for each table, whether all its references to
/// tables in `names` point at tables earlier in the order (or itself).
pub(crate) fn dependency_order(tables: &[&Table]) -> Vec<String> {
    let mut left: Vec<&Table> = tables.to_vec();
    left.sort_by(|a, b| a.name.cmp(&b.name));
    let mut done: Vec<String> = Vec::new();
    loop {
        let before = left.len();
        let mut i = 0;
        while i < left.len() {
            let t = left[i];
            let ready = t.foreign_keys.iter().all(|fk| {
                fk.referred_table == t.name
                    || done.contains(&fk.referred_table)
                    || !left.iter().any(|o| o.name == fk.referred_table)
            });
            if ready {
                done.push(t.name.clone());
                left.remove(i);
            } else {
                i += 1;
            }
        }
        if left.is_empty() {
            return done;
        }
        if left.len() == before {
            done.extend(left.iter().map(|t| t.name.clone()));
            return done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_hints_parse() {
        let mut r = Renames::default();
        r.add("users=accounts").unwrap();
        r.add("users.mail=email").unwrap();
        assert_eq!(r.tables, [("users".to_string(), "accounts".to_string())]);
        assert_eq!(r.columns[0].2, "email");
        assert!(r.add("nothing").is_err());
        assert!(r.add(".a=b").is_err());
        assert!(r.add("a=").is_err());
    }

    #[test]
    fn words_are_replaced_whole() {
        assert_eq!(
            replace_word(
                "CREATE INDEX ix ON users (user_id, \"user\")",
                "user",
                "owner"
            ),
            "CREATE INDEX ix ON users (user_id, owner)"
        );
        assert_eq!(replace_word("a+ab+a", "a", "b"), "b+ab+b");
    }
}
