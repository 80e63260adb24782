//! `inspect --lint`: what a reviewer looks for in a schema. Two kinds of rules:
//!
//! - Problems, on by default (each finds something that costs in production):
//!   `missing-primary-key`; `unindexed-foreign-key` (every delete of a referred row then scans
//!   the referencing table); `not-valid-constraint` (a check or foreign key added `NOT VALID` and
//!   never validated: old rows may break it); `fk-without-on-delete` (a foreign key with no
//!   `ON DELETE` action on a table of at least [`Settings::large_rows`] rows, by the row-count
//!   estimate); `duplicate-index` (two indexes on the same keys); `redundant-index` (an index
//!   whose keys start another index's).
//! - Naming, off unless a naming convention is configured (`DBCTL_LINT_NAMING=sqlalchemy`) or the
//!   rules are asked for by name (`--rule naming`): a project that never adopted a convention
//!   would otherwise see every object flagged. The one convention is SQLAlchemy's:
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

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{self, Exit};
use crate::output::{self, Report};
use crate::schema::{Index, Schema, Table};

/// The rules on by default.
const DEFAULT: [&str; 6] = [
    "missing-primary-key",
    "unindexed-foreign-key",
    "not-valid-constraint",
    "fk-without-on-delete",
    "duplicate-index",
    "redundant-index",
];

/// The name rules: on with a naming convention, or asked for by name.
const NAMING: [&str; 5] = ["pk-name", "fk-name", "uq-name", "ck-name", "ix-name"];

/// Every rule, by the name `--rule` and `--allow` take.
pub(crate) const RULES: [&str; 11] = [
    "missing-primary-key",
    "unindexed-foreign-key",
    "not-valid-constraint",
    "fk-without-on-delete",
    "duplicate-index",
    "redundant-index",
    "pk-name",
    "fk-name",
    "uq-name",
    "ck-name",
    "ix-name",
];

/// The naming conventions the name rules know, by the name `DBCTL_LINT_NAMING` takes.
pub(crate) const CONVENTIONS: [&str; 1] = ["sqlalchemy"];

/// The rows from which a table counts as large for `fk-without-on-delete`, unless the setting
/// `DBCTL_LINT_LARGE_ROWS` says otherwise.
pub(crate) const DEFAULT_LARGE_ROWS: i64 = 100_000;

/// The rules a name or group stands for (`naming`, `default`, `all`), or `None` if unknown.
fn expand(name: &str) -> Option<Vec<&'static str>> {
    Some(match name {
        "naming" => NAMING.to_vec(),
        "default" => DEFAULT.to_vec(),
        "all" => RULES.to_vec(),
        _ => vec![*RULES.iter().find(|r| **r == name)?],
    })
}

fn unknown_rule(rule: &str, value: &str, from: &str) -> anyhow::Error {
    error::usage(format!(
        "unknown lint rule `{rule}` in {from} {value} (rules: {}; groups: default, naming, all)",
        RULES.join(", ")
    ))
}

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
        let rules = expand(rule).ok_or_else(|| unknown_rule(rule, value, from))?;
        for rule in rules {
            out.push(Allow {
                rule,
                table: table.clone(),
            });
        }
    }
    Ok(out)
}

/// The rules to run: those named by `--rule` (names or groups), else the default ones and, with
/// a naming convention, the name rules.
pub(crate) fn choose_rules(
    asked: &[String],
    convention: Option<&str>,
) -> anyhow::Result<Vec<&'static str>> {
    let mut chosen: Vec<&'static str> = Vec::new();
    let names: Vec<&str> = asked
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    if names.is_empty() {
        chosen.extend(DEFAULT);
        if convention.is_some() {
            chosen.extend(NAMING);
        }
    }
    for name in names {
        chosen.extend(expand(name).ok_or_else(|| unknown_rule(name, name, "--rule"))?);
    }
    // In the order of RULES, each once.
    Ok(RULES
        .iter()
        .copied()
        .filter(|r| chosen.contains(r))
        .collect())
}

/// What the rules need besides the schema.
pub(crate) struct Settings {
    /// The rules that run (see [`choose_rules`]).
    pub(crate) rules: Vec<&'static str>,
    pub(crate) allow: Vec<Allow>,
    /// The rows from which a table is large (`fk-without-on-delete`).
    pub(crate) large_rows: i64,
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
    /// The rules that ran (those chosen and not turned off everywhere).
    rules: Vec<&'static str>,
    problems: Vec<Problem>,
    /// The number of problems each rule that ran found (0 included).
    counts: BTreeMap<&'static str, usize>,
}

impl Report for LintReport {
    fn human(&self) -> String {
        if self.problems.is_empty() {
            return format!(
                "no problems ({} rule{} checked: {})",
                self.rules.len(),
                if self.rules.len() == 1 { "" } else { "s" },
                self.rules.join(", ")
            );
        }
        let mut table = output::table(["rule", "table", "problem"]);
        for p in &self.problems {
            table.add_row(vec![p.rule, p.table.as_str(), p.message.as_str()]);
        }
        let per_rule: Vec<String> = self
            .rules
            .iter()
            .filter_map(|r| {
                self.counts
                    .get(r)
                    .filter(|n| **n > 0)
                    .map(|n| format!("{r} {n}"))
            })
            .collect();
        format!(
            "{table}\n{} problem{}: {} (turn a rule off with --allow RULE or --allow RULE:TABLE)",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" },
            per_rule.join(", ")
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

pub(crate) fn check(schema: &Schema, settings: &Settings) -> LintReport {
    let allow = &settings.allow;
    let rules: Vec<&'static str> = settings
        .rules
        .iter()
        .copied()
        .filter(|r| !allow.iter().any(|a| a.rule == *r && a.table.is_none()))
        .collect();
    let mut problems = Vec::new();
    for t in &schema.tables {
        let display = schema.display_name(&t.schema, &t.name);
        let mut found = Vec::new();
        check_table(t, settings.large_rows, &mut found);
        for (rule, object, message) in found {
            let allowed = allow.iter().any(|a| {
                a.rule == rule
                    && a.table
                        .as_deref()
                        .is_none_or(|x| x == t.name || x == display)
            });
            if rules.contains(&rule) && !allowed {
                problems.push(Problem {
                    rule,
                    table: display.clone(),
                    object,
                    message,
                });
            }
        }
    }
    let mut counts: BTreeMap<&'static str, usize> = rules.iter().map(|r| (*r, 0)).collect();
    for p in &problems {
        *counts.entry(p.rule).or_default() += 1;
    }
    LintReport {
        rules,
        problems,
        counts,
    }
}

type Found = Vec<(&'static str, String, String)>;

/// Every rule on one table, one kind of object after the other (the caller keeps the findings
/// of the rules that run).
fn check_table(t: &Table, large_rows: i64, found: &mut Found) {
    primary_key(t, found);
    foreign_keys(t, large_rows, found);
    not_valid(t, found);
    duplicate_and_redundant_indexes(t, found);
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

fn foreign_keys(t: &Table, large_rows: i64, found: &mut Found) {
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
        if let Some(rows) = t.rows.filter(|n| *n >= large_rows) {
            if fk.on_delete == "NO ACTION" {
                found.push((
                    "fk-without-on-delete",
                    fk.name.clone().unwrap_or_else(|| fk.columns.join(", ")),
                    format!(
                        "foreign key ({}) → {} has no ON DELETE action on a table of ~{rows} \
                         rows: deleting a referred row fails while rows point at it (say \
                         CASCADE, SET NULL or RESTRICT)",
                        fk.columns.join(", "),
                        fk.referred_table,
                    ),
                ));
            }
        }
    }
}

/// Checks and foreign keys added `NOT VALID` and never validated.
fn not_valid(t: &Table, found: &mut Found) {
    let table = &t.name;
    let unvalidated = t
        .foreign_keys
        .iter()
        .filter(|f| !f.validated)
        .map(|f| ("foreign key", &f.name))
        .chain(
            t.checks
                .iter()
                .filter(|c| !c.validated)
                .map(|c| ("check", &c.name)),
        );
    for (what, name) in unvalidated {
        let name = name.clone().unwrap_or_default();
        found.push((
            "not-valid-constraint",
            name.clone(),
            format!(
                "{what} {name} was added NOT VALID and never validated: rows from before may \
                 break it (ALTER TABLE {table} VALIDATE CONSTRAINT {name})"
            ),
        ));
    }
}

/// One b-tree key list of a table: an index, or the index behind its primary key or a unique
/// constraint.
struct Keys<'t> {
    name: &'t str,
    /// `index`, `primary key` or `unique constraint`.
    what: &'static str,
    columns: &'t [String],
    unique: bool,
    /// Made by `CREATE INDEX` (the only kind these rules suggest dropping).
    created: bool,
}

/// The plain b-tree keys of a table: the primary key, unique constraints, and the indexes that
/// are not partial, use b-tree, and whose definition has none of `INCLUDE`, `DESC`, `COLLATE`
/// or operator classes that would make two alike key lists serve different queries.
fn btree_keys(t: &Table) -> Vec<Keys<'_>> {
    let mut keys = Vec::new();
    if let Some(pk) = &t.primary_key {
        keys.push(Keys {
            name: pk.name.as_deref().unwrap_or("(primary key)"),
            what: "primary key",
            columns: &pk.columns,
            unique: true,
            created: false,
        });
    }
    for u in &t.unique_constraints {
        keys.push(Keys {
            name: u.name.as_deref().unwrap_or("(unnamed)"),
            what: "unique constraint",
            columns: &u.columns,
            unique: true,
            created: false,
        });
    }
    for ix in t.indexes.iter().filter(|ix| plain_btree(ix)) {
        keys.push(Keys {
            name: &ix.name,
            what: "index",
            columns: &ix.columns,
            unique: ix.unique,
            created: true,
        });
    }
    keys
}

fn plain_btree(ix: &Index) -> bool {
    // The words after the index's name and table: its keys and what follows them.
    let keys = ix
        .definition
        .find('(')
        .map_or("", |at| &ix.definition[at..]);
    let odd = keys
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map(str::to_ascii_uppercase)
        .any(|w| ["INCLUDE", "DESC", "COLLATE"].contains(&w.as_str()) || w.ends_with("_OPS"));
    ix.predicate.is_none() && ix.method.as_deref().is_none_or(|m| m == "btree") && !odd
}

/// `duplicate-index`: an index with the same keys as another index or key (the index to drop is
/// the one that enforces nothing more); `redundant-index`: a non-unique index whose keys start
/// another's, which serves the same lookups.
fn duplicate_and_redundant_indexes(t: &Table, found: &mut Found) {
    let keys = btree_keys(t);
    for (i, k) in keys.iter().enumerate().filter(|(_, k)| k.created) {
        let same = keys.iter().enumerate().find(|(j, o)| {
            *j != i
                && o.columns == k.columns
                // Keep the one that enforces uniqueness, else the one first by kind and name.
                && (o.unique && !k.unique || (o.unique == k.unique && (!o.created || *j < i)))
        });
        if let Some((_, o)) = same {
            found.push((
                "duplicate-index",
                k.name.to_string(),
                format!(
                    "index {} ({}) duplicates {} {}",
                    k.name,
                    k.columns.join(", "),
                    o.what,
                    o.name
                ),
            ));
            continue;
        }
        if k.unique {
            continue;
        }
        let longer = keys.iter().find(|o| {
            o.columns.len() > k.columns.len() && o.columns[..k.columns.len()] == *k.columns
        });
        if let Some(o) = longer {
            found.push((
                "redundant-index",
                k.name.to_string(),
                format!(
                    "index {} ({}) is covered by {} {} ({}), whose keys start with its own",
                    k.name,
                    k.columns.join(", "),
                    o.what,
                    o.name,
                    o.columns.join(", ")
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
