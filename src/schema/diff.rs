//! `inspect --diff FILE`: the live schema against a snapshot written earlier by
//! `inspect --format json`. Objects are matched by name (constraints SQLite keeps no name for, by
//! their columns, functions by their argument types); row counts and the migration state are not
//! compared. "added" means in the database but not in the snapshot, "removed" the other way round.
//!
//! A snapshot of model version 1 knew nothing of comments, triggers, deferrable and `NOT VALID`
//! constraints, composite types, domains, functions and extensions: against one, those are not
//! compared (the caller says so), rather than all reported as added.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Exit;
use crate::output::Report;
use crate::schema::{
    deferral, not_valid, Check, Column, CompositeType, Domain, Extension, ForeignKey, Function,
    Index, Schema, Table, Trigger, UniqueConstraint, View,
};

/// The first model version with comments, triggers, deferrable and `NOT VALID` constraints,
/// composite types, domains, functions and extensions.
const FULL_MODEL: u32 = 2;

/// Whether a snapshot of this version is compared in full (see the module's notes).
pub(crate) fn compares_everything(snapshot_version: u32) -> bool {
    snapshot_version >= FULL_MODEL
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Change {
    Added,
    Removed,
    Changed,
}

/// One difference.
#[derive(Serialize, Debug)]
pub(crate) struct Difference {
    /// `table`, `column`, `primary_key`, `foreign_key`, `unique`, `check`, `index`, `trigger`,
    /// `view`, `enum`, `sequence`, `composite_type`, `domain`, `function`, `procedure` or
    /// `extension`.
    kind: &'static str,
    change: Change,
    /// `table`, `table.column`, `table.constraint`, ...
    object: String,
    /// For `changed`: what changed (`type`, `nullable`, `default`, `definition`, `comment`, ...).
    /// A function's `definition` gives, as `from` and `to`, the first line that differs.
    property: Option<&'static str>,
    /// The snapshot's value (`changed` and `removed`).
    from: Option<String>,
    /// The database's value (`changed` and `added`).
    to: Option<String>,
}

#[derive(Serialize, Debug)]
pub(crate) struct DiffReport {
    snapshot: String,
    differences: Vec<Difference>,
}

impl Report for DiffReport {
    fn human(&self) -> String {
        if self.differences.is_empty() {
            return format!("no differences: the database matches {}", self.snapshot);
        }
        let mut out = format!(
            "{} difference{} between the database and {} (+ only in the database, - only in the snapshot, ~ changed):\n",
            self.differences.len(),
            if self.differences.len() == 1 { "" } else { "s" },
            self.snapshot
        );
        for d in &self.differences {
            let kind = d.kind.replace('_', " ");
            let line = match d.change {
                Change::Added => {
                    format!("+ {kind} {}: {}", d.object, d.to.as_deref().unwrap_or(""))
                }
                Change::Removed => {
                    format!("- {kind} {}: {}", d.object, d.from.as_deref().unwrap_or(""))
                }
                Change::Changed => format!(
                    "~ {kind} {}: {} changed from {} to {}",
                    d.object,
                    d.property.unwrap_or("definition"),
                    d.from.as_deref().unwrap_or("(none)"),
                    d.to.as_deref().unwrap_or("(none)")
                ),
            };
            out.push_str(line.trim_end_matches([':', ' ']));
            out.push('\n');
        }
        out
    }

    fn exit(&self) -> Exit {
        if self.differences.is_empty() {
            Exit::Success
        } else {
            Exit::Check
        }
    }
}

/// Differences from `expected` (the snapshot) to `actual` (the database), one kind of object
/// after the other.
pub(crate) fn compare(path: &Path, expected: &Schema, actual: &Schema) -> DiffReport {
    let names = Names {
        qualify: expected.qualify() || actual.qualify(),
    };
    let mut d = Diff {
        out: Vec::new(),
        full: compares_everything(expected.dbctl_schema_version),
    };
    let (e, a) = (expected, actual);
    pair(&names.tables(e), &names.tables(a), |object, e, a| {
        d.table_or_presence(object, e, a)
    });
    pair(&names.views(e), &names.views(a), |object, e, a| {
        d.view(object, e, a)
    });
    pair(&names.enums(e), &names.enums(a), |object, e, a| {
        d.either("enum", object, "values", e, a)
    });
    pair(&names.sequences(e), &names.sequences(a), |object, e, a| {
        d.either("sequence", object, "definition", e, a)
    });
    if d.full {
        pair(
            &names.composites(e),
            &names.composites(a),
            |object, e, a| d.either("composite_type", object, "attributes", e, a),
        );
        pair(&names.domains(e), &names.domains(a), |object, e, a| {
            d.either("domain", object, "definition", e, a)
        });
        pair(&names.functions(e), &names.functions(a), |object, e, a| {
            d.function(object, e, a)
        });
        pair(&extensions(e), &extensions(a), |object, e, a| {
            d.either("extension", object, "version", e, a)
        });
    }
    DiffReport {
        snapshot: path.display().to_string(),
        differences: d.out,
    }
}

/// How objects are named in differences: `schema.name` when either side read several schemas.
struct Names {
    qualify: bool,
}

impl Names {
    fn name(&self, schema: &str, name: &str) -> String {
        if self.qualify {
            format!("{schema}.{name}")
        } else {
            name.to_string()
        }
    }

    fn tables<'s>(&self, s: &'s Schema) -> BTreeMap<String, &'s Table> {
        s.tables
            .iter()
            .map(|t| (self.name(&t.schema, &t.name), t))
            .collect()
    }

    fn views<'s>(&self, s: &'s Schema) -> BTreeMap<String, &'s View> {
        s.views
            .iter()
            .map(|v| (self.name(&v.schema, &v.name), v))
            .collect()
    }

    /// Each enum's values as one string.
    fn enums(&self, s: &Schema) -> BTreeMap<String, String> {
        s.enums
            .iter()
            .map(|v| (self.name(&v.schema, &v.name), v.values.join(", ")))
            .collect()
    }

    /// Each sequence's definition as one string.
    fn sequences(&self, s: &Schema) -> BTreeMap<String, String> {
        s.sequences
            .iter()
            .map(|q| {
                let owned = q
                    .owned_by
                    .as_deref()
                    .map(|o| format!(", owned by {o}"))
                    .unwrap_or_default();
                let text = format!(
                    "{} start {} increment {}{owned}",
                    q.data_type, q.start, q.increment
                );
                (self.name(&q.schema, &q.name), text)
            })
            .collect()
    }
}

impl Names {
    /// Each composite type's attributes as one string.
    fn composites(&self, s: &Schema) -> BTreeMap<String, String> {
        s.composite_types
            .iter()
            .map(|c: &CompositeType| {
                let fields: Vec<String> = c
                    .attributes
                    .iter()
                    .map(|a| format!("{} {}", a.name, a.data_type))
                    .collect();
                (self.name(&c.schema, &c.name), fields.join(", "))
            })
            .collect()
    }

    /// Each domain as SQL would declare it.
    fn domains(&self, s: &Schema) -> BTreeMap<String, String> {
        s.domains
            .iter()
            .map(|d: &Domain| (self.name(&d.schema, &d.name), d.declaration()))
            .collect()
    }

    /// Functions and procedures by `name(argument types)`, overloads apart.
    fn functions<'s>(&self, s: &'s Schema) -> BTreeMap<String, &'s Function> {
        s.functions
            .iter()
            .map(|f| {
                let key = format!("{}({})", self.name(&f.schema, &f.name), f.arguments);
                (key, f)
            })
            .collect()
    }
}

/// Extensions by name (they belong to the database, not to a schema).
fn extensions(s: &Schema) -> BTreeMap<String, String> {
    s.extensions
        .iter()
        .map(|x: &Extension| {
            (
                x.name.clone(),
                format!("version {} in schema {}", x.version, x.schema),
            )
        })
        .collect()
}

/// Calls `f` for each key of either map, in key order, with both sides.
fn pair<V>(
    e: &BTreeMap<String, V>,
    a: &BTreeMap<String, V>,
    mut f: impl FnMut(&str, Option<&V>, Option<&V>),
) {
    let mut keys: Vec<&String> = e.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        f(k, e.get(k), a.get(k));
    }
}

struct Diff {
    out: Vec<Difference>,
    /// Whether what model version 2 added is compared (see [`compares_everything`]).
    full: bool,
}

impl Diff {
    fn changed(
        &mut self,
        kind: &'static str,
        object: &str,
        property: &'static str,
        from: &str,
        to: &str,
    ) {
        if from != to {
            self.out.push(Difference {
                kind,
                change: Change::Changed,
                object: object.to_string(),
                property: Some(property),
                from: Some(from.to_string()),
                to: Some(to.to_string()),
            });
        }
    }

    /// An object on one side only: `from` is the snapshot's, `to` the database's.
    fn presence(
        &mut self,
        kind: &'static str,
        object: &str,
        from: Option<String>,
        to: Option<String>,
    ) {
        let change = match (&from, &to) {
            (Some(_), None) => Change::Removed,
            (None, Some(_)) => Change::Added,
            _ => return,
        };
        self.out.push(Difference {
            kind,
            change,
            object: object.to_string(),
            property: None,
            from,
            to,
        });
    }

    /// An object described by one string (enums, sequences).
    fn either(
        &mut self,
        kind: &'static str,
        object: &str,
        property: &'static str,
        e: Option<&String>,
        a: Option<&String>,
    ) {
        match (e, a) {
            (Some(x), Some(y)) => self.changed(kind, object, property, x, y),
            _ => self.presence(kind, object, e.cloned(), a.cloned()),
        }
    }

    fn table_or_presence(&mut self, object: &str, e: Option<&&Table>, a: Option<&&Table>) {
        match (e, a) {
            (Some(e), Some(a)) => self.table(object, e, a),
            _ => self.presence(
                "table",
                object,
                e.map(|t| table_summary(t)),
                a.map(|t| table_summary(t)),
            ),
        }
    }

    fn view(&mut self, object: &str, e: Option<&&View>, a: Option<&&View>) {
        let (e, a) = match (e, a) {
            (Some(e), Some(a)) => (e, a),
            _ => {
                let definition = |v: &&View| v.definition.clone();
                return self.presence("view", object, e.map(definition), a.map(definition));
            }
        };
        let columns = |v: &View| {
            v.columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.data_type))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.changed("view", object, "definition", &e.definition, &a.definition);
        self.changed("view", object, "columns", &columns(e), &columns(a));
        self.constraints(
            "index",
            object,
            &e.indexes,
            &a.indexes,
            |i| i.name.clone(),
            ix_text,
        );
        if self.full {
            self.changed(
                "view",
                object,
                "comment",
                &opt(&e.comment),
                &opt(&a.comment),
            );
            self.triggers(object, &e.triggers, &a.triggers);
        }
    }

    /// Triggers, matched by name, compared by their `CREATE TRIGGER` and whether they fire.
    fn triggers(&mut self, on: &str, e: &[Trigger], a: &[Trigger]) {
        self.constraints("trigger", on, e, a, |t| t.name.clone(), trigger_text);
    }

    /// A function or procedure: its result, language and whole definition.
    fn function(&mut self, object: &str, e: Option<&&Function>, a: Option<&&Function>) {
        let (e, a) = match (e, a) {
            (Some(e), Some(a)) => (e, a),
            _ => {
                let kind = if e.or(a).is_some_and(|f| f.kind == "procedure") {
                    "procedure"
                } else {
                    "function"
                };
                return self.presence(
                    kind,
                    object,
                    e.map(|f| function_summary(f)),
                    a.map(|f| function_summary(f)),
                );
            }
        };
        let kind = if a.kind == "procedure" {
            "procedure"
        } else {
            "function"
        };
        self.changed(kind, object, "kind", &e.kind, &a.kind);
        self.changed(kind, object, "returns", &opt(&e.returns), &opt(&a.returns));
        self.changed(kind, object, "language", &e.language, &a.language);
        if e.definition != a.definition {
            let (from, to) = first_difference(&e.definition, &a.definition);
            self.changed(kind, object, "definition", &from, &to);
        }
    }

    /// Both sides of a table: its columns, keys, constraints and indexes.
    fn table(&mut self, t: &str, e: &Table, a: &Table) {
        self.columns(t, e, a);
        self.primary_key(t, e, a);
        let full = self.full;
        self.constraints(
            "foreign_key",
            t,
            &e.foreign_keys,
            &a.foreign_keys,
            fk_key,
            |f| fk_text(f, full),
        );
        self.constraints(
            "unique",
            t,
            &e.unique_constraints,
            &a.unique_constraints,
            uq_key,
            |u| uq_text(u, full),
        );
        self.constraints("check", t, &e.checks, &a.checks, ck_key, |c| {
            ck_text(c, full)
        });
        self.constraints(
            "index",
            t,
            &e.indexes,
            &a.indexes,
            |i: &Index| i.name.clone(),
            ix_text,
        );
        if self.full {
            self.changed("table", t, "comment", &opt(&e.comment), &opt(&a.comment));
            self.triggers(t, &e.triggers, &a.triggers);
        }
    }

    /// The columns of a table, and their order.
    fn columns(&mut self, t: &str, e: &Table, a: &Table) {
        let cols = |t: &Table| -> BTreeMap<String, Column> {
            t.columns
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect()
        };
        let (ec, ac) = (cols(e), cols(a));
        // Column order matters to code that maps rows by position (diesel's `table!`, `SELECT *`).
        let common = |t: &Table, other: &BTreeMap<String, Column>| {
            t.columns
                .iter()
                .filter(|c| other.contains_key(&c.name))
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.changed("table", t, "column_order", &common(e, &ac), &common(a, &ec));
        pair(&ec, &ac, |column, x, y| {
            let object = format!("{t}.{column}");
            match (x, y) {
                (Some(x), Some(y)) => {
                    let mut fields = vec![
                        ("type", x.data_type.clone(), y.data_type.clone()),
                        ("nullable", x.nullable.to_string(), y.nullable.to_string()),
                        ("default", opt(&x.default), opt(&y.default)),
                        ("identity", opt(&x.identity), opt(&y.identity)),
                        ("generated", opt(&x.generated), opt(&y.generated)),
                    ];
                    if self.full {
                        fields.push(("comment", opt(&x.comment), opt(&y.comment)));
                    }
                    for (field, was, now) in fields {
                        self.changed("column", &object, field, &was, &now);
                    }
                }
                _ => self.presence(
                    "column",
                    &object,
                    x.map(column_summary),
                    y.map(column_summary),
                ),
            }
        });
    }

    fn primary_key(&mut self, t: &str, e: &Table, a: &Table) {
        let pk = |t: &Table| {
            t.primary_key
                .as_ref()
                .map(|pk| format!("PRIMARY KEY ({})", pk.columns.join(", ")))
        };
        let pk_name = |t: &Table| t.primary_key.as_ref().and_then(|pk| pk.name.clone());
        match (pk(e), pk(a)) {
            (Some(x), Some(y)) => {
                self.changed("primary_key", t, "columns", &x, &y);
                self.changed(
                    "primary_key",
                    t,
                    "name",
                    &opt(&pk_name(e)),
                    &opt(&pk_name(a)),
                );
            }
            (x, y) => self.presence("primary_key", t, x, y),
        }
    }

    /// Constraints and indexes, matched by `key`, compared by `text`.
    fn constraints<C>(
        &mut self,
        kind: &'static str,
        table: &str,
        e: &[C],
        a: &[C],
        key: impl Fn(&C) -> String,
        text: impl Fn(&C) -> String,
    ) {
        let map = |list: &[C]| -> BTreeMap<String, String> {
            list.iter().map(|c| (key(c), text(c))).collect()
        };
        pair(&map(e), &map(a), |k, x, y| {
            self.either(kind, &format!("{table}.{k}"), "definition", x, y)
        });
    }
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".to_string())
}

fn column_summary(c: &Column) -> String {
    let mut s = format!(
        "{}{}",
        c.data_type,
        if c.nullable { "" } else { " NOT NULL" }
    );
    if let Some(d) = &c.default {
        s.push_str(&format!(" DEFAULT {d}"));
    }
    s
}

fn table_summary(t: &Table) -> String {
    let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
    format!("({})", cols.join(", "))
}

fn fk_key(f: &ForeignKey) -> String {
    f.name
        .clone()
        .unwrap_or_else(|| format!("({}) -> {}", f.columns.join(", "), f.referred_table))
}

/// A foreign key as SQL declares it; `full` adds what model version 2 added.
fn fk_text(f: &ForeignKey, full: bool) -> String {
    let mut text = format!(
        "FOREIGN KEY ({}) REFERENCES {}.{} ({}) ON UPDATE {} ON DELETE {}",
        f.columns.join(", "),
        f.referred_schema,
        f.referred_table,
        f.referred_columns.join(", "),
        f.on_update,
        f.on_delete
    );
    if full {
        text.push_str(deferral(f.deferrable, f.initially_deferred));
        text.push_str(not_valid(f.validated));
    }
    text
}

fn uq_key(u: &UniqueConstraint) -> String {
    u.name
        .clone()
        .unwrap_or_else(|| format!("unique ({})", u.columns.join(", ")))
}

fn uq_text(u: &UniqueConstraint, full: bool) -> String {
    let mut text = format!("UNIQUE ({})", u.columns.join(", "));
    if full {
        text.push_str(deferral(u.deferrable, u.initially_deferred));
    }
    text
}

fn ck_key(c: &Check) -> String {
    c.name
        .clone()
        .unwrap_or_else(|| format!("check ({})", c.expression))
}

fn ck_text(c: &Check, full: bool) -> String {
    let validity = if full { not_valid(c.validated) } else { "" };
    format!("CHECK ({}){validity}", c.expression)
}

fn trigger_text(t: &Trigger) -> String {
    if t.enabled {
        t.definition.clone()
    } else {
        format!("{} (disabled)", t.definition)
    }
}

fn function_summary(f: &Function) -> String {
    let returns = f
        .returns
        .as_deref()
        .map(|r| format!(" returns {r}"))
        .unwrap_or_default();
    format!("{}{returns} language {}", f.kind, f.language)
}

/// The first line where two texts differ, on each side, as `line N: text` (`(none)` past the
/// end of one).
fn first_difference(from: &str, to: &str) -> (String, String) {
    let (mut a, mut b) = (from.lines(), to.lines());
    let mut n = 1;
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => n += 1,
            (None, None) => {
                // Only the line endings or trailing text differ: show the ends.
                return (format!("{:?}", from), format!("{:?}", to));
            }
            (x, y) => {
                let show = |l: Option<&str>| match l {
                    Some(l) => format!("line {n}: {}", l.trim()),
                    None => format!("line {n}: (none)"),
                };
                return (show(x), show(y));
            }
        }
    }
}

fn ix_text(i: &Index) -> String {
    i.definition.clone()
}
