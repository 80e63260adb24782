//! PostgreSQL's DDL writer for what stands beside the tables: extensions, domains, composite
//! types, functions and procedures, triggers, and comments. Functions are written from the
//! statement the server prints (`pg_get_functiondef`, a `CREATE OR REPLACE`), triggers from
//! `pg_get_triggerdef`; both come before what uses them and go after it. What PostgreSQL cannot
//! change in place and what uses it would lose (a domain's type, a composite type's fields while
//! columns hold it) is listed as not written rather than guessed at.

use std::collections::BTreeSet;

use super::plan::{Phase, Step};
use super::sql::{ident, literal};
use crate::schema::{
    not_valid, Check, CompositeType, Domain, Extension, Function, Schema, Trigger, View,
};

/// Every step for the objects this module owns. `recreated_views`: views dropped and created
/// again (their triggers and comments come back with them).
pub(crate) fn plan(a: &Schema, b: &Schema, recreated_views: &BTreeSet<String>) -> Vec<Step> {
    let mut steps = Vec::new();
    extensions(&a.extensions, &b.extensions, &mut steps);
    domains(a, b, &mut steps);
    composites(a, b, &mut steps);
    functions(a, b, &mut steps);
    table_triggers(a, b, &mut steps);
    view_triggers(a, b, recreated_views, &mut steps);
    comments(a, b, recreated_views, &mut steps);
    steps
}

fn extensions(old: &[Extension], new: &[Extension], steps: &mut Vec<Step>) {
    for e in new {
        match old.iter().find(|o| o.name == e.name) {
            None => {
                let schema = if e.schema == "public" || e.schema == "pg_catalog" {
                    String::new()
                } else {
                    format!(" SCHEMA {}", ident(&e.schema))
                };
                steps.push(Step::new(
                    Phase::CreateExtensions,
                    format!("+ extension {}", e.name),
                    format!("CREATE EXTENSION IF NOT EXISTS {}{schema};", ident(&e.name)),
                ));
            }
            Some(o) if o.version != e.version => steps.push(Step::new(
                Phase::CreateExtensions,
                format!(
                    "~ extension {}: version {} -> {}",
                    e.name, o.version, e.version
                ),
                format!(
                    "ALTER EXTENSION {} UPDATE TO {};",
                    ident(&e.name),
                    literal(&e.version)
                ),
            )),
            Some(o) if o.schema != e.schema => steps.push(Step::new(
                Phase::CreateExtensions,
                format!(
                    "~ extension {}: schema {} -> {}",
                    e.name, o.schema, e.schema
                ),
                format!(
                    "ALTER EXTENSION {} SET SCHEMA {};",
                    ident(&e.name),
                    ident(&e.schema)
                ),
            )),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|e| e.name == o.name) {
            steps.push(Step::new(
                Phase::DropExtensions,
                format!("- extension {}", o.name),
                format!("DROP EXTENSION {};", ident(&o.name)),
            ));
        }
    }
}

/// Whether a column, field or domain of `s` is of type `name` (or an array of it).
fn type_used(s: &Schema, name: &str) -> bool {
    let quoted = ident(name);
    let is = |t: &str| {
        let t = t.trim_end_matches("[]");
        t == name || t == quoted
    };
    s.tables
        .iter()
        .any(|t| t.columns.iter().any(|c| is(&c.data_type)))
        || s.composite_types
            .iter()
            .any(|c| c.attributes.iter().any(|a| is(&a.data_type)))
        || s.domains.iter().any(|d| is(&d.data_type))
}

fn check_sql(c: &Check) -> String {
    let name = c
        .name
        .as_ref()
        .map(|n| format!("CONSTRAINT {} ", ident(n)))
        .unwrap_or_default();
    format!("{name}CHECK ({})", c.expression)
}

/// `CREATE DOMAIN`, with the checks not validated added after (`NOT VALID` is refused there).
fn create_domain(d: &Domain) -> String {
    let name = ident(&d.name);
    let mut sql = format!("CREATE DOMAIN {name} AS {}", d.data_type);
    if let Some(default) = &d.default {
        sql.push_str(&format!(" DEFAULT {default}"));
    }
    if !d.nullable {
        sql.push_str(" NOT NULL");
    }
    for c in d.checks.iter().filter(|c| c.validated) {
        sql.push(' ');
        sql.push_str(&check_sql(c));
    }
    sql.push(';');
    for c in d.checks.iter().filter(|c| !c.validated) {
        sql.push_str(&format!(
            "\nALTER DOMAIN {name} ADD {} NOT VALID;",
            check_sql(c)
        ));
    }
    sql
}

fn domains(a: &Schema, b: &Schema, steps: &mut Vec<Step>) {
    for d in &b.domains {
        let Some(o) = a.domains.iter().find(|o| o.name == d.name) else {
            steps.push(Step::new(
                Phase::CreateTypes,
                format!("+ domain {}", d.name),
                create_domain(d),
            ));
            continue;
        };
        if o == d {
            continue;
        }
        let name = ident(&d.name);
        if o.data_type != d.data_type {
            if type_used(a, &d.name) || type_used(b, &d.name) {
                steps.push(Step::unwritten(
                    Phase::CreateTypes,
                    format!(
                        "domain {}: type {} -> {} (PostgreSQL cannot change a domain's type, \
                         and columns use it)",
                        d.name, o.data_type, d.data_type
                    ),
                ));
            } else {
                steps.push(Step::new(
                    Phase::CreateTypes,
                    format!(
                        "~ domain {}: type {} -> {}",
                        d.name, o.data_type, d.data_type
                    ),
                    format!("DROP DOMAIN {name};\n{}", create_domain(d)),
                ));
            }
            continue;
        }
        let mut sql = Vec::new();
        if o.default != d.default {
            sql.push(match &d.default {
                Some(x) => format!("ALTER DOMAIN {name} SET DEFAULT {x};"),
                None => format!("ALTER DOMAIN {name} DROP DEFAULT;"),
            });
        }
        if o.nullable != d.nullable {
            let what = if d.nullable { "DROP" } else { "SET" };
            sql.push(format!("ALTER DOMAIN {name} {what} NOT NULL;"));
        }
        for c in &o.checks {
            let same = d.checks.iter().find(|n| n.name == c.name);
            let only_validated = same.is_some_and(|n| n.expression == c.expression);
            if same == Some(c) || (only_validated && !c.validated) {
                continue;
            }
            match &c.name {
                Some(n) => sql.push(format!("ALTER DOMAIN {name} DROP CONSTRAINT {};", ident(n))),
                None => {
                    steps.push(Step::unwritten(
                        Phase::CreateTypes,
                        format!("domain {}: a check without a name changes", d.name),
                    ));
                }
            }
        }
        for c in &d.checks {
            let old = o.checks.iter().find(|x| x.name == c.name);
            if old == Some(c) {
                continue;
            }
            if let (Some(x), Some(n)) = (old, &c.name) {
                if x.expression == c.expression && !x.validated && c.validated {
                    sql.push(format!(
                        "ALTER DOMAIN {name} VALIDATE CONSTRAINT {};",
                        ident(n)
                    ));
                    continue;
                }
            }
            sql.push(format!(
                "ALTER DOMAIN {name} ADD {}{};",
                check_sql(c),
                not_valid(c.validated)
            ));
        }
        if !sql.is_empty() {
            steps.push(Step::new(
                Phase::CreateTypes,
                format!("~ domain {}", d.name),
                sql.join("\n"),
            ));
        }
    }
    for o in &a.domains {
        if !b.domains.iter().any(|d| d.name == o.name) {
            steps.push(Step::new(
                Phase::DropTypes,
                format!("- domain {}", o.name),
                format!("DROP DOMAIN {};", ident(&o.name)),
            ));
        }
    }
}

fn create_composite(c: &CompositeType) -> String {
    let fields: Vec<String> = c
        .attributes
        .iter()
        .map(|f| format!("{} {}", ident(&f.name), f.data_type))
        .collect();
    format!("CREATE TYPE {} AS ({});", ident(&c.name), fields.join(", "))
}

fn composites(a: &Schema, b: &Schema, steps: &mut Vec<Step>) {
    for c in &b.composite_types {
        let Some(o) = a.composite_types.iter().find(|o| o.name == c.name) else {
            steps.push(Step::new(
                Phase::CreateTypes,
                format!("+ composite type {}", c.name),
                create_composite(c),
            ));
            continue;
        };
        if o == c {
            continue;
        }
        let name = ident(&c.name);
        // Fields dropped and fields added at the end, the others as they were: done in place.
        let kept_old: Vec<_> = o
            .attributes
            .iter()
            .filter(|f| c.attributes.iter().any(|n| n.name == f.name))
            .collect();
        let in_place = kept_old.len() <= c.attributes.len()
            && kept_old.iter().zip(&c.attributes).all(|(x, y)| *x == y);
        if in_place {
            let mut sql = Vec::new();
            let mut dropped = false;
            for f in &o.attributes {
                if !c.attributes.iter().any(|n| n.name == f.name) {
                    dropped = true;
                    sql.push(format!(
                        "ALTER TYPE {name} DROP ATTRIBUTE {};",
                        ident(&f.name)
                    ));
                }
            }
            for f in &c.attributes[kept_old.len()..] {
                sql.push(format!(
                    "ALTER TYPE {name} ADD ATTRIBUTE {} {};",
                    ident(&f.name),
                    f.data_type
                ));
            }
            let step = Step::new(
                Phase::CreateTypes,
                format!(
                    "~ composite type {}: fields {}",
                    c.name,
                    if dropped { "dropped or added" } else { "added" }
                ),
                sql.join("\n"),
            );
            steps.push(if dropped { step.destructive() } else { step });
        } else if type_used(a, &c.name) || type_used(b, &c.name) {
            steps.push(Step::unwritten(
                Phase::CreateTypes,
                format!(
                    "composite type {}: fields changed while columns use it (write the \
                     ALTER TYPE ... ATTRIBUTE steps and the data conversion by hand)",
                    c.name
                ),
            ));
        } else {
            steps.push(Step::new(
                Phase::CreateTypes,
                format!("~ composite type {}: fields changed", c.name),
                format!("DROP TYPE {name};\n{}", create_composite(c)),
            ));
        }
    }
    for o in &a.composite_types {
        if !b.composite_types.iter().any(|c| c.name == o.name) {
            steps.push(Step::new(
                Phase::DropTypes,
                format!("- composite type {}", o.name),
                format!("DROP TYPE {};", ident(&o.name)),
            ));
        }
    }
}

/// `FUNCTION name(argument types)` as `DROP` takes it.
fn signature(f: &Function) -> String {
    let kind = if f.kind == "procedure" {
        "PROCEDURE"
    } else {
        "FUNCTION"
    };
    format!("{kind} {}({})", ident(&f.name), f.arguments)
}

fn label(f: &Function) -> String {
    format!("{} {}({})", f.kind, f.name, f.arguments)
}

/// The statement the server printed, ending in one `;`.
fn function_sql(f: &Function) -> String {
    format!("{};", f.definition.trim_end().trim_end_matches(';'))
}

/// Where a function is created: before the tables, unless it is written in SQL and reads a
/// table or view of the schema (PostgreSQL checks an SQL body when it is created).
fn function_phase(s: &Schema, f: &Function) -> Phase {
    let reads =
        |name: &str| super::plan::replace_word(&f.definition, name, "\u{1}x") != f.definition;
    let reads_relation =
        s.tables.iter().any(|t| reads(&t.name)) || s.views.iter().any(|v| reads(&v.name));
    if f.language == "sql" && reads_relation {
        Phase::LateFunctions
    } else {
        Phase::Functions
    }
}

fn functions(a: &Schema, b: &Schema, steps: &mut Vec<Step>) {
    let key = |f: &Function| (f.name.clone(), f.arguments.clone());
    for f in &b.functions {
        match a.functions.iter().find(|o| key(o) == key(f)) {
            None => steps.push(Step::new(
                function_phase(b, f),
                format!("+ {}", label(f)),
                function_sql(f),
            )),
            Some(o) if o.definition == f.definition => {}
            Some(o) if o.kind == f.kind && o.returns == f.returns => steps.push(Step::new(
                function_phase(b, f),
                format!("~ {}: definition", label(f)),
                function_sql(f),
            )),
            Some(o) => steps.push(
                Step::new(
                    function_phase(b, f),
                    format!("~ {}: dropped and created (its result changes)", label(f)),
                    format!("DROP {};\n{}", signature(o), function_sql(f)),
                )
                .note("CREATE OR REPLACE cannot change a result type: what depends on it must go first."),
            ),
        }
    }
    for o in &a.functions {
        if !b.functions.iter().any(|f| key(f) == key(o)) {
            steps.push(Step::new(
                Phase::DropFunctions,
                format!("- {}", label(o)),
                format!("DROP {};", signature(o)),
            ));
        }
    }
}

/// A trigger created, and disabled when it is.
fn create_trigger(on: &str, tr: &Trigger) -> String {
    let mut sql = format!("{};", tr.definition.trim_end().trim_end_matches(';'));
    if !tr.enabled {
        sql.push_str(&format!(
            "\nALTER TABLE {} DISABLE TRIGGER {};",
            ident(on),
            ident(&tr.name)
        ));
    }
    sql
}

/// The steps between two trigger lists of one table or view (`old`: `None` when it is created
/// or created again).
/// `create`: the phase triggers are created in (a view's come after the view).
fn triggers(
    on: &str,
    old: Option<&[Trigger]>,
    new: &[Trigger],
    create: Phase,
    steps: &mut Vec<Step>,
) {
    let old = old.unwrap_or_default();
    for tr in new {
        match old.iter().find(|o| o.name == tr.name) {
            None => steps.push(Step::new(
                create,
                format!("+ trigger {on}.{}", tr.name),
                create_trigger(on, tr),
            )),
            Some(o) if o.definition != tr.definition => {
                steps.push(Step::new(
                    Phase::DropTriggers,
                    format!("- trigger {on}.{} (to be created again)", o.name),
                    format!("DROP TRIGGER {} ON {};", ident(&o.name), ident(on)),
                ));
                steps.push(Step::new(
                    create,
                    format!("~ trigger {on}.{}: definition", tr.name),
                    create_trigger(on, tr),
                ));
            }
            Some(o) if o.enabled != tr.enabled => {
                let what = if tr.enabled { "ENABLE" } else { "DISABLE" };
                steps.push(Step::new(
                    create,
                    format!(
                        "~ trigger {on}.{}: {}",
                        tr.name,
                        if tr.enabled { "enabled" } else { "disabled" }
                    ),
                    format!(
                        "ALTER TABLE {} {what} TRIGGER {};",
                        ident(on),
                        ident(&tr.name)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| n.name == o.name) {
            steps.push(Step::new(
                Phase::DropTriggers,
                format!("- trigger {on}.{}", o.name),
                format!("DROP TRIGGER {} ON {};", ident(&o.name), ident(on)),
            ));
        }
    }
}

fn table_triggers(a: &Schema, b: &Schema, steps: &mut Vec<Step>) {
    for t in &b.tables {
        let old = a.tables.iter().find(|o| o.name == t.name);
        triggers(
            &t.name,
            old.map(|o| o.triggers.as_slice()),
            &t.triggers,
            Phase::Triggers,
            steps,
        );
    }
    // Triggers of dropped tables go with them.
}

fn view_triggers(a: &Schema, b: &Schema, recreated: &BTreeSet<String>, steps: &mut Vec<Step>) {
    for v in &b.views {
        let old = a
            .views
            .iter()
            .find(|o| o.name == v.name)
            .filter(|_| !recreated.contains(&v.name));
        triggers(
            &v.name,
            old.map(|o| o.triggers.as_slice()),
            &v.triggers,
            Phase::ViewTriggers,
            steps,
        );
    }
}

fn comment_sql(what: &str, target: &str, text: &Option<String>) -> String {
    let value = text.as_deref().map_or_else(|| "NULL".to_string(), literal);
    format!("COMMENT ON {what} {target} IS {value};")
}

fn comments(a: &Schema, b: &Schema, recreated_views: &BTreeSet<String>, steps: &mut Vec<Step>) {
    let mut push = |what: &str,
                    label: String,
                    target: String,
                    old: Option<&Option<String>>,
                    new: &Option<String>| {
        let old = old.cloned().flatten();
        if &old != new {
            steps.push(Step::new(
                Phase::Comments,
                format!(
                    "~ comment on {} {label}{}",
                    what.to_ascii_lowercase(),
                    if new.is_none() { " removed" } else { "" }
                ),
                comment_sql(what, &target, new),
            ));
        }
    };
    for t in &b.tables {
        let old = a.tables.iter().find(|o| o.name == t.name);
        push(
            "TABLE",
            t.name.clone(),
            ident(&t.name),
            old.map(|o| &o.comment),
            &t.comment,
        );
        for c in &t.columns {
            // A column whose generation expression changes is dropped and added: its comment
            // goes with it.
            let oc = old
                .and_then(|o| o.column(&c.name))
                .filter(|oc| oc.generated == c.generated);
            push(
                "COLUMN",
                format!("{}.{}", t.name, c.name),
                format!("{}.{}", ident(&t.name), ident(&c.name)),
                oc.map(|oc| &oc.comment),
                &c.comment,
            );
        }
    }
    for v in &b.views {
        let old: Option<&View> = a
            .views
            .iter()
            .find(|o| o.name == v.name)
            .filter(|_| !recreated_views.contains(&v.name));
        let what = if v.materialized {
            "MATERIALIZED VIEW"
        } else {
            "VIEW"
        };
        push(
            what,
            v.name.clone(),
            ident(&v.name),
            old.map(|o| &o.comment),
            &v.comment,
        );
        for c in &v.columns {
            let oc = old.and_then(|o| o.columns.iter().find(|x| x.name == c.name));
            push(
                "COLUMN",
                format!("{}.{}", v.name, c.name),
                format!("{}.{}", ident(&v.name), ident(&c.name)),
                oc.map(|oc| &oc.comment),
                &c.comment,
            );
        }
    }
}
