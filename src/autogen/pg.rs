//! PostgreSQL's DDL writer: the steps that take one schema model to another, as statements a
//! person would write (`ALTER TABLE ... ADD COLUMN`, named constraints, `CREATE INDEX` as the
//! server prints it without the scratch schema's name). Enum values are added in place
//! (`ALTER TYPE ... ADD VALUE`); removing or reordering them swaps the type. Column order is not
//! compared: PostgreSQL can only append columns.

use std::collections::{BTreeMap, BTreeSet};

use super::plan::{dependency_order, Phase, Step};
use super::scratch::Side;
use super::sql::{ident, idents, literal};
use crate::schema::{
    deferral, not_valid, Check, Column, EnumType, ForeignKey, Index, Schema, Sequence, Table,
    UniqueConstraint, View,
};

pub(crate) fn plan(from: &Side, to: &Side) -> Vec<Step> {
    let (a, b) = (&from.schema, &to.schema);
    let mut steps = Vec::new();
    let old_tables: BTreeMap<&str, &Table> =
        a.tables.iter().map(|t| (t.name.as_str(), t)).collect();
    let new_tables: BTreeMap<&str, &Table> =
        b.tables.iter().map(|t| (t.name.as_str(), t)).collect();

    let mut altered: BTreeSet<String> = BTreeSet::new();
    enums(a, b, &old_tables, &new_tables, &mut steps);
    sequences(a, b, &old_tables, &new_tables, &mut steps);

    // Tables that only exist on one side.
    let dropped: Vec<&Table> = a
        .tables
        .iter()
        .filter(|t| !new_tables.contains_key(t.name.as_str()))
        .collect();
    let created: Vec<&Table> = b
        .tables
        .iter()
        .filter(|t| !old_tables.contains_key(t.name.as_str()))
        .collect();
    drop_tables(&dropped, &mut steps);
    create_tables(b, &created, &mut steps);
    if !dropped.is_empty() && !created.is_empty() {
        let note = format!(
            "Tables dropped ({}) and created ({}): if one was renamed, run again with \
             --rename OLD=NEW to keep its rows.",
            names(&dropped),
            names(&created)
        );
        if let Some(first) = steps.iter_mut().find(|s| s.phase == Phase::DropTables) {
            first.note = Some(note);
        }
    }

    // Tables on both sides.
    let mut rekeyed: BTreeSet<&str> = BTreeSet::new();
    for (name, old) in &old_tables {
        if let Some(new) = new_tables.get(name) {
            if old.primary_key != new.primary_key
                || keyed(&old.unique_constraints) != keyed(&new.unique_constraints)
            {
                rekeyed.insert(name);
            }
        }
    }
    for (name, old) in &old_tables {
        let Some(new) = new_tables.get(name) else {
            continue;
        };
        if alter_table(b, old, new, &rekeyed, &mut steps) {
            altered.insert(name.to_string());
        }
    }
    let recreated_views = views(a, b, &altered, &mut steps);
    steps.extend(super::pg_objects::plan(a, b, &recreated_views));
    steps.sort_by_key(|s| s.phase);
    steps
}

fn names(tables: &[&Table]) -> String {
    tables
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn keyed(list: &[UniqueConstraint]) -> Vec<&UniqueConstraint> {
    list.iter().collect()
}

/// A sequence that stands for a column (serial or identity) rather than on its own.
fn implicit_sequence(schema: &Schema, seq: &Sequence) -> bool {
    let Some((t, c)) = seq.owned_by.as_deref().and_then(|o| o.split_once('.')) else {
        return false;
    };
    let Some(column) = schema
        .tables
        .iter()
        .find(|x| x.name == t)
        .and_then(|x| x.column(c))
    else {
        return false;
    };
    column.identity.is_some() || serial_type(schema, t, column).is_some()
}

/// `serial`, `bigserial` or `smallserial` for a column whose default takes the next value of the
/// sequence it owns, named as `serial` names it.
fn serial_type(schema: &Schema, table: &str, c: &Column) -> Option<&'static str> {
    let seq = format!("{table}_{}_seq", c.name);
    let owned = format!("{table}.{}", c.name);
    let default = c.default.as_deref()?;
    let named = default == format!("nextval({}::regclass)", literal(&seq))
        || default
            == format!(
                "nextval({}::regclass)",
                literal(&crate::db::quote_ident(&seq))
            );
    let owns = schema
        .sequences
        .iter()
        .any(|s| s.name == seq && s.owned_by.as_deref() == Some(owned.as_str()));
    if !named || !owns {
        return None;
    }
    match c.data_type.as_str() {
        "integer" => Some("serial"),
        "bigint" => Some("bigserial"),
        "smallint" => Some("smallserial"),
        _ => None,
    }
}

fn column_def(schema: &Schema, t: &Table, c: &Column) -> String {
    let in_key = t
        .primary_key
        .as_ref()
        .is_some_and(|pk| pk.columns.contains(&c.name));
    let mut def = format!("{} ", ident(&c.name));
    let serial = serial_type(schema, &t.name, c);
    def.push_str(serial.unwrap_or(&c.data_type));
    if let Some(identity) = &c.identity {
        def.push_str(&format!(
            " GENERATED {} AS IDENTITY",
            identity.to_ascii_uppercase()
        ));
    }
    if let Some(expr) = &c.generated {
        def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
    }
    if serial.is_none() && c.generated.is_none() {
        if let Some(d) = &c.default {
            def.push_str(&format!(" DEFAULT {d}"));
        }
    }
    if !c.nullable && !in_key && serial.is_none() && c.identity.is_none() {
        def.push_str(" NOT NULL");
    }
    def
}

fn constraint_name(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!("CONSTRAINT {} ", ident(n)))
        .unwrap_or_default()
}

fn fk_clause(t: &Table, fk: &ForeignKey) -> String {
    let referred = if fk.referred_schema == t.schema || fk.referred_schema.is_empty() {
        ident(&fk.referred_table)
    } else {
        format!(
            "{}.{}",
            ident(&fk.referred_schema),
            ident(&fk.referred_table)
        )
    };
    let mut sql = format!(
        "{}FOREIGN KEY ({}) REFERENCES {} ({})",
        constraint_name(&fk.name),
        idents(&fk.columns),
        referred,
        idents(&fk.referred_columns)
    );
    if fk.on_update != "NO ACTION" {
        sql.push_str(&format!(" ON UPDATE {}", fk.on_update));
    }
    if fk.on_delete != "NO ACTION" {
        sql.push_str(&format!(" ON DELETE {}", fk.on_delete));
    }
    sql.push_str(deferral(fk.deferrable, fk.initially_deferred));
    sql
}

fn check_clause(ck: &Check) -> String {
    format!("{}CHECK ({})", constraint_name(&ck.name), ck.expression)
}

fn unique_clause(u: &UniqueConstraint) -> String {
    format!(
        "{}UNIQUE ({}){}",
        constraint_name(&u.name),
        idents(&u.columns),
        deferral(u.deferrable, u.initially_deferred)
    )
}

/// `ALTER TABLE ... ADD CHECK`, `NOT VALID` when the check is not validated.
fn add_check(t: &Table, ck: &Check) -> Step {
    Step::new(
        Phase::AddConstraints,
        format!("+ check {}.{}", t.name, ck.name.clone().unwrap_or_default()),
        format!(
            "ALTER TABLE {} ADD {}{};",
            ident(&t.name),
            check_clause(ck),
            not_valid(ck.validated)
        ),
    )
}

/// `CREATE INDEX` as the server prints it, without the schema before the table's name (the
/// migration then creates it wherever it runs).
fn index_sql(schema: &str, ix: &Index) -> String {
    let def = &ix.definition;
    let prefix = format!("{}.", ident(schema));
    let plain = match def.find(" ON ") {
        Some(at) => {
            let (head, tail) = def.split_at(at + 4);
            let tail = tail.strip_prefix("ONLY ").map_or(tail.to_string(), |t| {
                format!("ONLY {}", t.strip_prefix(&prefix).unwrap_or(t))
            });
            format!("{head}{}", tail.strip_prefix(&prefix).unwrap_or(&tail))
        }
        None => def.clone(),
    };
    format!("{plain};")
}

fn drop_tables(dropped: &[&Table], steps: &mut Vec<Step>) {
    let mut order = dependency_order(dropped);
    order.reverse();
    // Foreign keys between dropped tables that form a cycle go first.
    let position = |name: &str| order.iter().position(|n| n == name);
    for t in dropped {
        for fk in &t.foreign_keys {
            if let (Some(me), Some(other)) = (position(&t.name), position(&fk.referred_table)) {
                if other < me {
                    if let Some(name) = &fk.name {
                        steps.push(Step::new(
                            Phase::DropForeignKeys,
                            format!("- foreign key {}.{name}", t.name),
                            format!(
                                "ALTER TABLE {} DROP CONSTRAINT {};",
                                ident(&t.name),
                                ident(name)
                            ),
                        ));
                    }
                }
            }
        }
    }
    for name in order {
        steps.push(
            Step::new(
                Phase::DropTables,
                format!("- table {name}"),
                format!("DROP TABLE {};", ident(&name)),
            )
            .destructive(),
        );
    }
}

fn create_tables(schema: &Schema, created: &[&Table], steps: &mut Vec<Step>) {
    let order = dependency_order(created);
    let mut made: BTreeSet<&str> = BTreeSet::new();
    for name in &order {
        let Some(t) = created.iter().find(|t| &t.name == name) else {
            continue;
        };
        let mut lines: Vec<String> = t.columns.iter().map(|c| column_def(schema, t, c)).collect();
        if let Some(pk) = &t.primary_key {
            lines.push(format!(
                "{}PRIMARY KEY ({})",
                constraint_name(&pk.name),
                idents(&pk.columns)
            ));
        }
        lines.extend(t.unique_constraints.iter().map(unique_clause));
        // `NOT VALID` only exists for constraints added to a table: those come after it.
        for ck in &t.checks {
            if ck.validated {
                lines.push(check_clause(ck));
            } else {
                steps.push(add_check(t, ck));
            }
        }
        for fk in &t.foreign_keys {
            // A reference to a table created later (a cycle) is added once both exist.
            let later = created.iter().any(|o| o.name == fk.referred_table)
                && fk.referred_table != t.name
                && !made.contains(fk.referred_table.as_str());
            if later || !fk.validated {
                steps.push(add_foreign_key(t, fk));
            } else {
                lines.push(fk_clause(t, fk));
            }
        }
        made.insert(t.name.as_str());
        steps.push(Step::new(
            Phase::CreateTables,
            format!("+ table {}", t.name),
            format!(
                "CREATE TABLE {} (\n    {}\n);",
                ident(&t.name),
                lines.join(",\n    ")
            ),
        ));
        for ix in &t.indexes {
            steps.push(Step::new(
                Phase::CreateIndexes,
                format!("+ index {}.{}", t.name, ix.name),
                index_sql(&t.schema, ix),
            ));
        }
    }
}

fn add_foreign_key(t: &Table, fk: &ForeignKey) -> Step {
    Step::new(
        Phase::AddForeignKeys,
        format!(
            "+ foreign key {}.{}",
            t.name,
            fk.name.clone().unwrap_or_else(|| fk.columns.join(","))
        ),
        format!(
            "ALTER TABLE {} ADD {}{};",
            ident(&t.name),
            fk_clause(t, fk),
            not_valid(fk.validated)
        ),
    )
}

fn drop_constraint(t: &Table, phase: Phase, kind: &str, name: &Option<String>) -> Option<Step> {
    let name = name.as_ref()?;
    Some(Step::new(
        phase,
        format!("- {kind} {}.{name}", t.name),
        format!(
            "ALTER TABLE {} DROP CONSTRAINT {};",
            ident(&t.name),
            ident(name)
        ),
    ))
}

/// Whether changing `from` to `to` can fail or lose data (a narrower or unrelated type).
pub(crate) fn narrowing(from: &str, to: &str) -> bool {
    let base = |t: &str| t.split('(').next().unwrap_or(t).trim().to_string();
    let size = |t: &str| -> Option<Vec<i64>> {
        let inner = t.split_once('(')?.1.split_once(')')?.0;
        inner.split(',').map(|n| n.trim().parse().ok()).collect()
    };
    let rank = |t: &str| match t {
        "smallint" => Some(1),
        "integer" => Some(2),
        "bigint" => Some(3),
        "numeric" => Some(4),
        _ => None,
    };
    let (fb, tb) = (base(from), base(to));
    if fb == tb {
        return match (size(from), size(to)) {
            (Some(f), Some(t)) => f.iter().zip(&t).any(|(a, b)| b < a),
            (None, Some(_)) => true,
            _ => false,
        };
    }
    let texty = |b: &str| matches!(b, "text" | "character varying");
    if texty(&fb) && texty(&tb) {
        return tb == "character varying" && size(to).is_some();
    }
    match (rank(&fb), rank(&tb)) {
        (Some(f), Some(t)) => t < f || (tb == "numeric" && size(to).is_some()),
        _ => !(texty(&tb) && size(to).is_none()),
    }
}

/// The steps for one table on both sides; returns whether a column was dropped, retyped or
/// renamed (views on it are then rebuilt).
fn alter_table(
    schema: &Schema,
    old: &Table,
    new: &Table,
    rekeyed: &BTreeSet<&str>,
    steps: &mut Vec<Step>,
) -> bool {
    let t = ident(&new.name);
    let mut reshaped = false;
    // Columns dropped and added again (a new generation expression): what stands on them goes
    // with them and comes back.
    let recreated: BTreeSet<&str> = new
        .columns
        .iter()
        .filter(|c| {
            old.column(&c.name)
                .is_some_and(|o| o.generated != c.generated)
        })
        .map(|c| c.name.as_str())
        .collect();
    let on_recreated = |cols: &[String]| cols.iter().any(|c| recreated.contains(c.as_str()));
    let dropped: Vec<&Column> = old
        .columns
        .iter()
        .filter(|c| new.column(&c.name).is_none())
        .collect();
    let added: Vec<&Column> = new
        .columns
        .iter()
        .filter(|c| old.column(&c.name).is_none())
        .collect();
    for c in &dropped {
        reshaped = true;
        steps.push(
            Step::new(
                Phase::Columns,
                format!("- column {}.{}", new.name, c.name),
                format!("ALTER TABLE {t} DROP COLUMN {};", ident(&c.name)),
            )
            .destructive(),
        );
    }
    for c in &added {
        let mut step = Step::new(
            Phase::Columns,
            format!("+ column {}.{}", new.name, c.name),
            format!("ALTER TABLE {t} ADD COLUMN {};", column_def(schema, new, c)),
        );
        if !c.nullable && c.default.is_none() && c.identity.is_none() && c.generated.is_none() {
            step = step.note("NOT NULL without a default: fails if the table has rows.");
        }
        steps.push(step);
    }
    if !dropped.is_empty() && !added.is_empty() {
        if let Some(s) = steps
            .iter_mut()
            .rev()
            .find(|s| s.summary.starts_with("- column ") && s.summary.contains(&new.name))
        {
            s.note = Some(format!(
                "Columns dropped and added in {}: if one was renamed, run again with \
                 --rename {}.OLD=NEW to keep its values.",
                new.name, new.name
            ));
        }
    }
    for nc in &new.columns {
        let Some(oc) = old.column(&nc.name) else {
            continue;
        };
        if oc == nc {
            continue;
        }
        reshaped |= alter_column(schema, new, oc, nc, steps);
    }

    // Primary key, unique and check constraints: by name; changed ones are dropped and added.
    if old.primary_key != new.primary_key {
        if let Some(pk) = &old.primary_key {
            steps.extend(drop_constraint(
                old,
                Phase::DropConstraints,
                "primary key",
                &pk.name,
            ));
        }
        if let Some(pk) = &new.primary_key {
            steps.push(Step::new(
                Phase::AddConstraints,
                format!("+ primary key {}", new.name),
                format!(
                    "ALTER TABLE {t} ADD {}PRIMARY KEY ({});",
                    constraint_name(&pk.name),
                    idents(&pk.columns)
                ),
            ));
        }
    }
    pair_by_name(
        &old.unique_constraints,
        &new.unique_constraints,
        |u| (u.name.clone(), on_recreated(&u.columns)),
        |u, phase| match phase {
            Phase::AddConstraints => Some(Step::new(
                phase,
                format!(
                    "+ unique {}.{}",
                    new.name,
                    u.name.clone().unwrap_or_default()
                ),
                format!("ALTER TABLE {t} ADD {};", unique_clause(u)),
            )),
            _ => drop_constraint(old, phase, "unique", &u.name),
        },
        steps,
    );
    // A check (or foreign key) that only becomes validated is validated in place.
    let old_checks: Vec<Check> = old
        .checks
        .iter()
        .map(|c| {
            let validates = |n: &&Check| {
                n.name.is_some()
                    && n.name == c.name
                    && n.expression == c.expression
                    && !c.validated
                    && n.validated
                    && !recreated.iter().any(|r| mentions(&c.expression, r))
            };
            match new.checks.iter().find(validates) {
                Some(n) => {
                    steps.push(validate(
                        new,
                        n.name.as_deref().unwrap_or_default(),
                        "check",
                    ));
                    n.clone()
                }
                None => c.clone(),
            }
        })
        .collect();
    pair_by_name(
        &old_checks,
        &new.checks,
        |c| {
            let mentions = recreated.iter().any(|r| mentions(&c.expression, r));
            (c.name.clone(), mentions)
        },
        |c, phase| match phase {
            Phase::AddConstraints => Some(add_check(new, c)),
            _ => drop_constraint(old, phase, "check", &c.name),
        },
        steps,
    );
    // Foreign keys: also dropped and added again when the key they point at is; one whose
    // deferral changes is altered in place, one that becomes validated is validated.
    let mut old_fks: Vec<ForeignKey> = old.foreign_keys.clone();
    for fk in &mut old_fks {
        let Some(n) = new.foreign_keys.iter().find(|n| n.name == fk.name) else {
            continue;
        };
        let Some(name) = n.name.as_deref() else {
            continue;
        };
        let forced = rekeyed.contains(fk.referred_table.as_str()) || on_recreated(&fk.columns);
        let mut same_base = n.clone();
        same_base.deferrable = fk.deferrable;
        same_base.initially_deferred = fk.initially_deferred;
        same_base.validated = fk.validated;
        if forced || &same_base != fk || (fk.validated && !n.validated) {
            continue;
        }
        if (fk.deferrable, fk.initially_deferred) != (n.deferrable, n.initially_deferred) {
            let mode = match (n.deferrable, n.initially_deferred) {
                (false, _) => "NOT DEFERRABLE",
                (true, false) => "DEFERRABLE INITIALLY IMMEDIATE",
                (true, true) => "DEFERRABLE INITIALLY DEFERRED",
            };
            steps.push(Step::new(
                Phase::AddForeignKeys,
                format!(
                    "~ foreign key {}.{name}: {}",
                    new.name,
                    mode.to_ascii_lowercase()
                ),
                format!("ALTER TABLE {t} ALTER CONSTRAINT {} {mode};", ident(name)),
            ));
        }
        if !fk.validated && n.validated {
            let mut step = validate(new, name, "foreign key");
            step.phase = Phase::AddForeignKeys;
            steps.push(step);
        }
        *fk = n.clone();
    }
    for fk in &old_fks {
        let same = new.foreign_keys.iter().find(|n| n.name == fk.name);
        if same != Some(fk)
            || rekeyed.contains(fk.referred_table.as_str())
            || on_recreated(&fk.columns)
        {
            steps.extend(drop_constraint(
                old,
                Phase::DropForeignKeys,
                "foreign key",
                &fk.name,
            ));
        }
    }
    for fk in &new.foreign_keys {
        let same = old_fks.iter().find(|o| o.name == fk.name);
        if same != Some(fk)
            || rekeyed.contains(fk.referred_table.as_str())
            || on_recreated(&fk.columns)
        {
            steps.push(add_foreign_key(new, fk));
        }
    }
    // Indexes: by name and statement.
    for ix in &old.indexes {
        let same = new.indexes.iter().find(|n| n.name == ix.name);
        let forced = recreated.iter().any(|r| mentions(&ix.definition, r));
        if forced || same.map(|n| index_sql(&new.schema, n)) != Some(index_sql(&old.schema, ix)) {
            steps.push(Step::new(
                Phase::DropIndexes,
                format!("- index {}.{}", old.name, ix.name),
                format!("DROP INDEX {};", ident(&ix.name)),
            ));
        }
    }
    for ix in &new.indexes {
        let same = old.indexes.iter().find(|o| o.name == ix.name);
        let forced = recreated.iter().any(|r| mentions(&ix.definition, r));
        if forced || same.map(|o| index_sql(&old.schema, o)) != Some(index_sql(&new.schema, ix)) {
            steps.push(Step::new(
                Phase::CreateIndexes,
                format!("+ index {}.{}", new.name, ix.name),
                index_sql(&new.schema, ix),
            ));
        }
    }
    reshaped
}

/// `ALTER TABLE ... VALIDATE CONSTRAINT`: the rows are checked, the constraint is kept.
fn validate(t: &Table, name: &str, kind: &str) -> Step {
    Step::new(
        Phase::AddConstraints,
        format!("~ {kind} {}.{name}: validated", t.name),
        format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {};",
            ident(&t.name),
            ident(name)
        ),
    )
}

/// Drops the items of `old` that `new` lacks or has otherwise, adds those of `new` that `old`
/// lacks or has otherwise.
/// `key` gives an item's name and whether it must be made again regardless (it stands on a
/// recreated column).
fn pair_by_name<T: PartialEq>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> (Option<String>, bool),
    step: impl Fn(&T, Phase) -> Option<Step>,
    steps: &mut Vec<Step>,
) {
    for o in old {
        let (name, forced) = key(o);
        if forced || new.iter().find(|n| key(n).0 == name) != Some(o) {
            steps.extend(step(o, Phase::DropConstraints));
        }
    }
    for n in new {
        let (name, forced) = key(n);
        if forced || old.iter().find(|o| key(o).0 == name) != Some(n) {
            steps.extend(step(n, Phase::AddConstraints));
        }
    }
}

fn alter_column(
    schema: &Schema,
    t: &Table,
    oc: &Column,
    nc: &Column,
    steps: &mut Vec<Step>,
) -> bool {
    let table = ident(&t.name);
    let col = ident(&nc.name);
    let label = format!("{}.{}", t.name, nc.name);
    let mut sql = Vec::new();
    let mut destructive = false;
    let mut summary = Vec::new();
    if oc.generated != nc.generated {
        // A generation expression cannot be changed in place: the column is dropped before the
        // columns it reads change type, and added after (with what stands on it, see
        // `alter_table`).
        steps.push(
            Step::new(
                Phase::DropConstraints,
                format!("~ column {label}: generated expression (dropped and added)"),
                format!("ALTER TABLE {table} DROP COLUMN {col};"),
            )
            .destructive(),
        );
        steps.push(Step::new(
            Phase::AddConstraints,
            format!("+ column {label} (generated)"),
            format!(
                "ALTER TABLE {table} ADD COLUMN {};",
                column_def(schema, t, nc)
            ),
        ));
        return true;
    }
    let default_changes = oc.default != nc.default;
    let type_changes = oc.data_type != nc.data_type;
    if default_changes && oc.default.is_some() {
        sql.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {col} DROP DEFAULT;"
        ));
    }
    if oc.identity.is_some() && nc.identity.is_none() {
        sql.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {col} DROP IDENTITY;"
        ));
        summary.push("identity dropped".to_string());
    }
    if type_changes {
        let base = |s: &str| s.split('(').next().unwrap_or(s).to_string();
        let using = if base(&oc.data_type) == base(&nc.data_type) {
            String::new()
        } else {
            format!(" USING {col}::{}", nc.data_type)
        };
        sql.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {col} TYPE {}{using};",
            nc.data_type
        ));
        summary.push(format!("type {} -> {}", oc.data_type, nc.data_type));
        destructive |= narrowing(&oc.data_type, &nc.data_type);
    }
    if oc.nullable != nc.nullable {
        let what = if nc.nullable { "DROP" } else { "SET" };
        sql.push(format!(
            "ALTER TABLE {table} ALTER COLUMN {col} {what} NOT NULL;"
        ));
        summary.push(if nc.nullable { "nullable" } else { "not null" }.to_string());
    }
    match (&oc.identity, &nc.identity) {
        (None, Some(kind)) => {
            sql.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {col} ADD GENERATED {} AS IDENTITY;",
                kind.to_ascii_uppercase()
            ));
            summary.push(format!("identity {kind}"));
        }
        (Some(a), Some(b)) if a != b => {
            sql.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {col} SET GENERATED {};",
                b.to_ascii_uppercase()
            ));
            summary.push(format!("identity {b}"));
        }
        _ => {}
    }
    if default_changes {
        if let Some(d) = &nc.default {
            sql.push(format!(
                "ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {d};"
            ));
        }
        summary.push(format!(
            "default {} -> {}",
            oc.default.as_deref().unwrap_or("none"),
            nc.default.as_deref().unwrap_or("none")
        ));
    }
    if sql.is_empty() {
        return false;
    }
    let mut step = Step::new(
        Phase::Columns,
        format!("~ column {label}: {}", summary.join(", ")),
        sql.join("\n"),
    );
    if destructive {
        step = step.destructive();
    }
    steps.push(step);
    type_changes
}

fn enums(
    a: &Schema,
    b: &Schema,
    old_tables: &BTreeMap<&str, &Table>,
    new_tables: &BTreeMap<&str, &Table>,
    steps: &mut Vec<Step>,
) {
    for e in &b.enums {
        match a.enums.iter().find(|o| o.name == e.name) {
            None => steps.push(Step::new(
                Phase::Enums,
                format!("+ enum {}", e.name),
                create_enum(&e.name, e),
            )),
            Some(o) if o.values == e.values => {}
            Some(o) => steps.push(change_enum(o, e, old_tables, new_tables)),
        }
    }
    for e in &a.enums {
        if !b.enums.iter().any(|n| n.name == e.name) {
            steps.push(Step::new(
                Phase::DropEnums,
                format!("- enum {}", e.name),
                format!("DROP TYPE {};", ident(&e.name)),
            ));
        }
    }
}

fn create_enum(name: &str, e: &EnumType) -> String {
    let values: Vec<String> = e.values.iter().map(|v| literal(v)).collect();
    format!(
        "CREATE TYPE {} AS ENUM ({});",
        ident(name),
        values.join(", ")
    )
}

/// New values only, in the old order: `ADD VALUE`. Anything else: a new type swapped in.
fn change_enum(
    o: &EnumType,
    e: &EnumType,
    old_tables: &BTreeMap<&str, &Table>,
    new_tables: &BTreeMap<&str, &Table>,
) -> Step {
    let kept: Vec<&String> = e.values.iter().filter(|v| o.values.contains(v)).collect();
    let only_added =
        kept.len() == o.values.len() && kept.iter().zip(&o.values).all(|(a, b)| *a == b);
    let name = ident(&e.name);
    if only_added {
        let mut sql = Vec::new();
        for (i, v) in e.values.iter().enumerate() {
            if o.values.contains(v) {
                continue;
            }
            let place = match i.checked_sub(1).and_then(|p| e.values.get(p)) {
                Some(prev) => format!(" AFTER {}", literal(prev)),
                None => e
                    .values
                    .iter()
                    .find(|x| o.values.contains(x))
                    .map(|first| format!(" BEFORE {}", literal(first)))
                    .unwrap_or_default(),
            };
            sql.push(format!(
                "ALTER TYPE {name} ADD VALUE {}{place};",
                literal(v)
            ));
        }
        return Step::new(
            Phase::Enums,
            format!("~ enum {}: values added", e.name),
            sql.join("\n"),
        )
        .note("A value added here cannot be used before this migration commits.");
    }
    let old_name = format!("{}__old", e.name);
    let mut sql = vec![
        format!("ALTER TYPE {name} RENAME TO {};", ident(&old_name)),
        create_enum(&e.name, e),
    ];
    let typed = |c: &Column| c.data_type == e.name || c.data_type == name;
    for (tname, new) in new_tables {
        let Some(old) = old_tables.get(tname) else {
            continue;
        };
        for c in new.columns.iter().filter(|c| typed(c)) {
            let Some(oc) = old.column(&c.name).filter(|oc| typed(oc)) else {
                continue;
            };
            let (t, col) = (ident(tname), ident(&c.name));
            if oc.default.is_some() {
                sql.push(format!("ALTER TABLE {t} ALTER COLUMN {col} DROP DEFAULT;"));
            }
            sql.push(format!(
                "ALTER TABLE {t} ALTER COLUMN {col} TYPE {name} USING {col}::text::{name};"
            ));
            if let Some(d) = &oc.default {
                sql.push(format!(
                    "ALTER TABLE {t} ALTER COLUMN {col} SET DEFAULT {d};"
                ));
            }
        }
    }
    sql.push(format!("DROP TYPE {};", ident(&old_name)));
    let removed = o.values.iter().any(|v| !e.values.contains(v));
    let step = Step::new(
        Phase::Enums,
        format!(
            "~ enum {}: values {}",
            e.name,
            if removed { "removed" } else { "reordered" }
        ),
        sql.join("\n"),
    )
    .note("PostgreSQL cannot remove or reorder enum values: the type is swapped for a new one.");
    if removed {
        step.destructive()
    } else {
        step
    }
}

fn sequences(
    a: &Schema,
    b: &Schema,
    old_tables: &BTreeMap<&str, &Table>,
    new_tables: &BTreeMap<&str, &Table>,
    steps: &mut Vec<Step>,
) {
    let own = |s: &Sequence| format!("CREATE SEQUENCE {}", ident(&s.name));
    let body = |s: &Sequence| {
        format!(
            " AS {} INCREMENT BY {} START WITH {};",
            s.data_type, s.increment, s.start
        )
    };
    let explicit_a: Vec<&Sequence> = a
        .sequences
        .iter()
        .filter(|s| !implicit_sequence(a, s))
        .collect();
    let explicit_b: Vec<&Sequence> = b
        .sequences
        .iter()
        .filter(|s| !implicit_sequence(b, s))
        .collect();
    for s in &explicit_b {
        let old = explicit_a.iter().find(|o| o.name == s.name);
        match old {
            None => steps.push(Step::new(
                Phase::CreateSequences,
                format!("+ sequence {}", s.name),
                format!("{}{}", own(s), body(s)),
            )),
            Some(o)
                if (&o.data_type, o.increment, o.start) != (&s.data_type, s.increment, s.start) =>
            {
                steps.push(Step::new(
                    Phase::CreateSequences,
                    format!("~ sequence {}", s.name),
                    format!("ALTER SEQUENCE {}{}", ident(&s.name), body(s)),
                ))
            }
            Some(_) => {}
        }
        if old.map(|o| &o.owned_by) != Some(&s.owned_by) {
            let owner = match s.owned_by.as_deref().and_then(|o| o.split_once('.')) {
                Some((t, c)) => format!("{}.{}", ident(t), ident(c)),
                None => "NONE".to_string(),
            };
            steps.push(Step::new(
                Phase::SequenceOwners,
                format!("~ sequence {} owned by {owner}", s.name),
                format!("ALTER SEQUENCE {} OWNED BY {owner};", ident(&s.name)),
            ));
        }
    }
    for s in &explicit_a {
        if explicit_b.iter().any(|n| n.name == s.name) {
            continue;
        }
        // A sequence owned by a dropped table or column goes with it.
        let goes_with_owner = s
            .owned_by
            .as_deref()
            .and_then(|o| o.split_once('.'))
            .is_some_and(|(t, c)| {
                old_tables.contains_key(t)
                    && new_tables.get(t).is_none_or(|nt| nt.column(c).is_none())
            });
        if !goes_with_owner {
            steps.push(Step::new(
                Phase::DropSequences,
                format!("- sequence {}", s.name),
                format!("DROP SEQUENCE {};", ident(&s.name)),
            ));
        }
    }
}

/// The text a view is created from.
fn view_sql(v: &View) -> String {
    let kind = if v.materialized {
        "MATERIALIZED VIEW"
    } else {
        "VIEW"
    };
    let body = v.definition.trim().trim_end_matches(';');
    let mut sql = format!("CREATE {kind} {} AS\n{body};", ident(&v.name));
    for ix in &v.indexes {
        sql.push('\n');
        sql.push_str(&index_sql(&v.schema, ix));
    }
    sql
}

fn mentions(text: &str, name: &str) -> bool {
    super::plan::replace_word(text, name, "\u{1}x") != text
}

/// The view steps; returns the views dropped and created again (or created).
fn views(
    a: &Schema,
    b: &Schema,
    altered: &BTreeSet<String>,
    steps: &mut Vec<Step>,
) -> BTreeSet<String> {
    let changed = |v: &View| -> bool {
        match a.views.iter().find(|o| o.name == v.name) {
            None => true,
            Some(o) => {
                view_sql(o) != view_sql(v) || altered.iter().any(|t| mentions(&o.definition, t))
            }
        }
    };
    // A view that reads a view being recreated is recreated too.
    let mut redo: BTreeSet<String> = b
        .views
        .iter()
        .filter(|v| changed(v))
        .map(|v| v.name.clone())
        .collect();
    loop {
        let more: Vec<String> = b
            .views
            .iter()
            .filter(|v| !redo.contains(&v.name) && redo.iter().any(|r| mentions(&v.definition, r)))
            .map(|v| v.name.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        redo.extend(more);
    }
    let order = |list: &[&View]| -> Vec<String> {
        // Each view after the views it mentions.
        let mut done: Vec<String> = Vec::new();
        let mut left: Vec<&View> = list.to_vec();
        while !left.is_empty() {
            let before = left.len();
            left.retain(|v| {
                let ready = !list.iter().any(|o| {
                    o.name != v.name && !done.contains(&o.name) && mentions(&v.definition, &o.name)
                });
                if ready {
                    done.push(v.name.clone());
                }
                !ready
            });
            if left.len() == before {
                done.extend(left.iter().map(|v| v.name.clone()));
                break;
            }
        }
        done
    };
    let old_list: Vec<&View> = a
        .views
        .iter()
        .filter(|o| redo.contains(&o.name) || !b.views.iter().any(|n| n.name == o.name))
        .collect();
    let mut drops = order(&old_list);
    drops.reverse();
    for name in drops {
        if let Some(v) = a.views.iter().find(|v| v.name == name) {
            let kind = if v.materialized {
                "MATERIALIZED VIEW"
            } else {
                "VIEW"
            };
            steps.push(Step::new(
                Phase::DropViews,
                format!("- view {name}"),
                format!("DROP {kind} {};", ident(&name)),
            ));
        }
    }
    let new_list: Vec<&View> = b.views.iter().filter(|v| redo.contains(&v.name)).collect();
    for name in order(&new_list) {
        if let Some(v) = b.views.iter().find(|v| v.name == name) {
            steps.push(Step::new(
                Phase::CreateViews,
                format!("+ view {name}"),
                view_sql(v),
            ));
        }
    }
    redo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_types() {
        assert!(narrowing("character varying(100)", "character varying(50)"));
        assert!(!narrowing(
            "character varying(50)",
            "character varying(100)"
        ));
        assert!(!narrowing("character varying(50)", "text"));
        assert!(narrowing("text", "character varying(50)"));
        assert!(!narrowing("integer", "bigint"));
        assert!(narrowing("bigint", "integer"));
        assert!(narrowing("text", "integer"));
        assert!(!narrowing("integer", "text"));
    }

    #[test]
    fn index_statement_loses_the_schema() {
        let ix = Index {
            name: "ix".into(),
            unique: false,
            columns: vec!["a".into()],
            expression: false,
            predicate: None,
            method: Some("btree".into()),
            definition: "CREATE INDEX ix ON public.t USING btree (a)".into(),
        };
        assert_eq!(
            index_sql("public", &ix),
            "CREATE INDEX ix ON t USING btree (a);"
        );
    }
}
