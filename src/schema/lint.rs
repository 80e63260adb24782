//! `inspect --lint`: what a reviewer looks for in a schema. A table without a primary key, a
//! foreign key whose columns no index leads with (every delete of a referred row then scans the
//! referencing table), and constraint and index names that break the project's naming convention:
//!
//! | rule       | name expected                                   |
//! |------------|-------------------------------------------------|
//! | `pk-name`  | `pk_<table>`                                    |
//! | `fk-name`  | `fk_<table>_<first column>_<referred table>`    |
//! | `uq-name`  | `uq_<table>_<first column>`                     |
//! | `ck-name`  | `ck_<table>_<anything>`                         |
//! | `ix-name`  | `ix_<table>_<first column>` (SQLAlchemy's `ix_%(column_0_label)s`) |
//!
//! A constraint without a name breaks its rule too: SQLite keeps only the names written in the
//! DDL, and PostgreSQL invents names (`users_pkey`) that break the convention anyway.

use serde::Serialize;

use crate::error::{self, Exit};
use crate::output::{self, Report};
use crate::schema::{Schema, Table};

/// Every rule, by the name `--allow` takes.
pub(crate) const RULES: [&str; 7] = [
    "missing-primary-key",
    "unindexed-foreign-key",
    "pk-name",
    "fk-name",
    "uq-name",
    "ck-name",
    "ix-name",
];

/// `naming` turns off every name rule at once.
const NAMING: [&str; 5] = ["pk-name", "fk-name", "uq-name", "ck-name", "ix-name"];

/// A rule turned off, everywhere or for one table.
#[derive(Debug, Clone)]
pub(crate) struct Allow {
    rule: &'static str,
    table: Option<String>,
}

/// Parses `RULE[:TABLE]` values; an unknown rule is a usage error that lists them all and says
/// where the value came from (`from`: `--allow`, or the setting and its source).
pub(crate) fn parse_allow(values: &[String], from: &str) -> anyhow::Result<Vec<Allow>> {
    let mut out = Vec::new();
    for value in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let (rule, table) = match value.split_once(':') {
            Some((r, t)) => (r, Some(t.to_string())),
            None => (value, None),
        };
        let rules: Vec<&'static str> = if rule == "naming" {
            NAMING.to_vec()
        } else if let Some(r) = RULES.iter().find(|r| **r == rule) {
            vec![r]
        } else {
            return Err(error::usage(format!(
                "unknown lint rule `{rule}` in {from} {value} (rules: {}, naming)",
                RULES.join(", ")
            )));
        };
        for rule in rules {
            out.push(Allow {
                rule,
                table: table.clone(),
            });
        }
    }
    Ok(out)
}

#[derive(Serialize, Debug)]
pub(crate) struct Problem {
    rule: &'static str,
    table: String,
    /// The constraint, index or column concerned (the table itself for missing-primary-key).
    object: String,
    message: String,
}

#[derive(Serialize, Debug)]
pub(crate) struct LintReport {
    /// The rules that ran (those not turned off everywhere).
    rules: Vec<&'static str>,
    problems: Vec<Problem>,
}

impl Report for LintReport {
    fn human(&self) -> String {
        if self.problems.is_empty() {
            return format!("no problems ({} rules checked)", self.rules.len());
        }
        let mut table = output::table(["rule", "table", "problem"]);
        for p in &self.problems {
            table.add_row(vec![p.rule, p.table.as_str(), p.message.as_str()]);
        }
        format!(
            "{table}\n{} problem{} (turn a rule off with --allow RULE or --allow RULE:TABLE)",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )
    }

    fn exit(&self) -> Exit {
        if self.problems.is_empty() {
            Exit::Success
        } else {
            Exit::Check
        }
    }
}

pub(crate) fn check(schema: &Schema, allow: &[Allow]) -> LintReport {
    let mut problems = Vec::new();
    for t in &schema.tables {
        let display = schema.display_name(&t.schema, &t.name);
        let mut found = Vec::new();
        check_table(t, &mut found);
        for (rule, object, message) in found {
            let allowed = allow.iter().any(|a| {
                a.rule == rule
                    && a.table
                        .as_deref()
                        .is_none_or(|x| x == t.name || x == display)
            });
            if !allowed {
                problems.push(Problem {
                    rule,
                    table: display.clone(),
                    object,
                    message,
                });
            }
        }
    }
    LintReport {
        rules: RULES
            .iter()
            .copied()
            .filter(|r| !allow.iter().any(|a| a.rule == *r && a.table.is_none()))
            .collect(),
        problems,
    }
}

type Found = Vec<(&'static str, String, String)>;

/// Every rule on one table, one kind of object after the other.
fn check_table(t: &Table, found: &mut Found) {
    primary_key(t, found);
    foreign_keys(t, found);
    let table = &t.name;
    for u in &t.unique_constraints {
        let first = u.columns.first().map_or("", String::as_str);
        let expected = Expected::Exact(format!("uq_{table}_{first}"));
        name_rule(
            found,
            "uq-name",
            "unique constraint",
            u.name.as_deref(),
            expected,
        );
    }
    for c in &t.checks {
        let expected = Expected::Prefix(format!("ck_{table}_"));
        name_rule(found, "ck-name", "check", c.name.as_deref(), expected);
    }
    indexes(t, found);
}

fn primary_key(t: &Table, found: &mut Found) {
    let table = &t.name;
    match &t.primary_key {
        None => found.push((
            "missing-primary-key",
            table.clone(),
            format!("{table} has no primary key"),
        )),
        Some(pk) => {
            let expected = Expected::Exact(format!("pk_{table}"));
            name_rule(
                found,
                "pk-name",
                "primary key",
                pk.name.as_deref(),
                expected,
            );
        }
    }
}

fn foreign_keys(t: &Table, found: &mut Found) {
    let table = &t.name;
    for fk in &t.foreign_keys {
        let first = fk.columns.first().map_or("", String::as_str);
        let expected = Expected::Exact(format!("fk_{table}_{first}_{}", fk.referred_table));
        name_rule(
            found,
            "fk-name",
            "foreign key",
            fk.name.as_deref(),
            expected,
        );
        if !is_indexed(t, &fk.columns) {
            found.push((
                "unindexed-foreign-key",
                fk.columns.join(", "),
                format!(
                    "foreign key ({}) → {} has no index that starts with its columns \
                     (add one, e.g. ix_{table}_{first})",
                    fk.columns.join(", "),
                    fk.referred_table,
                ),
            ));
        }
    }
}

fn indexes(t: &Table, found: &mut Found) {
    let table = &t.name;
    for ix in &t.indexes {
        let first = ix.columns.first().map_or("", String::as_str);
        let first_is_column = !first.is_empty() && t.column(first).is_some();
        let expected = if first_is_column {
            Expected::Exact(format!("ix_{table}_{first}"))
        } else {
            Expected::Prefix(format!("ix_{table}_"))
        };
        // A unique index may follow the unique-constraint convention instead.
        let as_unique = ix.unique && first_is_column && ix.name == format!("uq_{table}_{first}");
        if !as_unique {
            name_rule(found, "ix-name", "index", Some(&ix.name), expected);
        }
    }
}

/// The name a rule expects.
enum Expected {
    /// Exactly this name.
    Exact(String),
    /// This prefix and something after it.
    Prefix(String),
}

impl Expected {
    fn accepts(&self, name: &str) -> bool {
        match self {
            Expected::Exact(e) => name == e,
            Expected::Prefix(p) => name.len() > p.len() && name.starts_with(p.as_str()),
        }
    }

    /// As a message shows it: the name, or the prefix and `<name>`.
    fn shown(&self) -> String {
        match self {
            Expected::Exact(e) => e.clone(),
            Expected::Prefix(p) => format!("{p}<name>"),
        }
    }
}

/// Records a name that is missing or that `expected` does not accept.
fn name_rule(
    found: &mut Found,
    rule: &'static str,
    what: &str,
    name: Option<&str>,
    expected: Expected,
) {
    let shown = expected.shown();
    match name {
        None => found.push((
            rule,
            "(unnamed)".to_string(),
            format!("{what} has no name (expected {shown})"),
        )),
        Some(n) if !expected.accepts(n) => found.push((
            rule,
            n.to_string(),
            format!("{what} {n} should be named {shown}"),
        )),
        Some(_) => {}
    }
}

/// Whether an index, the primary key or a unique constraint starts with exactly these columns
/// (in any order), so that lookups by the foreign key can use it. Partial and expression indexes
/// do not count.
fn is_indexed(t: &Table, columns: &[String]) -> bool {
    let leads = |keys: &[String]| {
        keys.len() >= columns.len() && keys[..columns.len()].iter().all(|k| columns.contains(k))
    };
    t.primary_key.as_ref().is_some_and(|pk| leads(&pk.columns))
        || t.unique_constraints.iter().any(|u| leads(&u.columns))
        || t.indexes
            .iter()
            .any(|ix| ix.predicate.is_none() && leads(&ix.columns))
}
