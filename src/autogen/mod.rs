//! `dbctl revision NAME --autogenerate`: a migration written from the difference between what
//! the migrations folder builds and a desired schema kept as SQL in the repository.
//!
//! No SQL is parsed to learn the schemas: both are built in scratch databases of the same backend
//! (`scratch`), read with the catalog reader `inspect` uses, and compared model to model. The DDL
//! writers (`pg`, `sqlite`) turn the difference into steps in dependency order (`plan`); up.sql
//! goes from the migrations to the desired schema, down.sql back, each written by the same writer
//! with the sides swapped. `commands::revision` resolves the inputs (a [`Request`]) from its
//! arguments and settings, hears what is noticed on the way through [`Notes`], and creates the
//! folder from the two files and the list of changes this module hands back.

mod pg;
mod pg_objects;
mod plan;
mod scratch;
mod sql;
mod sqlite;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use crate::db::{Backend, DbUrl, PoolSettings};
use crate::error;
pub(crate) use plan::Change;
use plan::{Renames, Step};

/// The setting that names the desired schema file.
pub(crate) const SCHEMA_FILE_SETTING: &str = "DBCTL_SCHEMA_FILE";

/// What [`generate`] is asked, resolved by the command from its arguments and settings.
pub(crate) struct Request {
    /// The backend's URL: the database URL's server, or the `--dev-url` database itself.
    pub(crate) url: DbUrl,
    /// `url` is a `--dev-url`: an empty database to build in instead of creating two.
    pub(crate) dev: bool,
    pub(crate) settings: PoolSettings,
    /// The desired schema, as SQL.
    pub(crate) desired_file: PathBuf,
    /// `--rename` hints: OLD_TABLE=NEW_TABLE or TABLE.OLD=NEW.
    pub(crate) renames: Vec<String>,
    /// `--check`: nothing is written, the summary says so.
    pub(crate) check: bool,
}

/// What the engine notices on the way, for the command to show (it prints nothing itself).
pub(crate) trait Notes {
    /// Worth a warning: a destructive step, a step not written, a scratch database left.
    fn warn(&self, msg: &str);
    /// A detail for `-v`.
    fn verbose(&self, msg: &str);
}

/// What the comparison found: the files to write when anything differs.
pub(crate) struct Generated {
    pub(crate) up: String,
    pub(crate) down: String,
    pub(crate) summary: Summary,
}

/// The part of `revision`'s report that `--autogenerate` adds.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Summary {
    /// The desired schema file.
    pub(crate) desired: String,
    pub(crate) backend: Backend,
    /// Whether this was `--check` (nothing written).
    pub(crate) check: bool,
    /// What up.sql changes, in its order.
    pub(crate) changes: Vec<Change>,
    /// How many of them can lose data.
    pub(crate) destructive: usize,
    pub(crate) duration_ms: f64,
}

impl Summary {
    pub(crate) fn differs(&self) -> bool {
        !self.changes.is_empty()
    }

    /// The changes as lines for people.
    pub(crate) fn human(&self) -> String {
        if self.changes.is_empty() {
            return format!(
                "no changes: the migrations build the schema of {}",
                self.desired
            );
        }
        let mut out = format!(
            "{} change{} from the migrations to {} (+ add, - drop, ~ change):\n",
            self.changes.len(),
            if self.changes.len() == 1 { "" } else { "s" },
            self.desired
        );
        for c in &self.changes {
            out.push_str("  ");
            out.push_str(&c.summary);
            if c.destructive {
                out.push_str("  [DESTRUCTIVE]");
            }
            out.push('\n');
        }
        out
    }
}

/// Compares what the migrations in `dir` build with the desired schema, and writes the two
/// migration files' text for the difference.
pub(crate) fn generate(req: &Request, dir: &Path, notes: &dyn Notes) -> anyhow::Result<Generated> {
    let started = Instant::now();
    let mut renames = Renames::default();
    for hint in &req.renames {
        renames.add(hint)?;
    }
    let url = &req.url;
    let desired_file = &req.desired_file;
    let desired_sql = read_desired(desired_file)?;
    notes.verbose(&format!(
        "autogenerate: desired schema {}, migrations {}, {} scratch databases",
        desired_file.display(),
        dir.display(),
        url.backend()
    ));
    let target = scratch::Target {
        url: url.clone(),
        dev: req.dev && url.backend().has_server(),
        settings: req.settings.clone(),
        out: notes,
    };
    let (desired, current) = scratch::build(&target, desired_file, &desired_sql, dir)?;
    notes.verbose(&format!(
        "autogenerate: both schemas built and read in {}",
        crate::output::millis(started.elapsed())
    ));
    let up = steps(url.backend(), &current, &desired, &renames, false)?;
    let down = steps(url.backend(), &desired, &current, &renames, true)?;
    let changes: Vec<Change> = up
        .iter()
        .filter(|s| s.unwritten || s.summary.starts_with(['+', '-', '~']))
        .map(|s| Change {
            summary: s.summary.clone(),
            destructive: s.destructive,
        })
        .collect();
    for c in changes.iter().filter(|c| c.destructive) {
        notes.warn(&format!("DESTRUCTIVE: {}", c.summary));
    }
    for s in up.iter().filter(|s| s.unwritten) {
        notes.warn(&format!("{} (up.sql)", s.summary));
    }
    for s in down.iter().filter(|s| s.unwritten) {
        notes.warn(&format!("{} (down.sql)", s.summary));
    }
    let shown = desired_file.display().to_string();
    let header = |what: &str| {
        format!(
            "Written by `dbctl revision --autogenerate` ({}): {what}.\nReview it before applying.",
            url.backend()
        )
    };
    Ok(Generated {
        up: plan::render(&header(&format!("from the migrations to {shown}")), &up),
        down: plan::render(
            &header(&format!("from {shown} back to the migrations")),
            &down,
        ),
        summary: Summary {
            desired: shown,
            backend: url.backend(),
            check: req.check,
            destructive: changes.iter().filter(|c| c.destructive).count(),
            changes,
            duration_ms: crate::output::ms_f64(started.elapsed()),
        },
    })
}

fn steps(
    backend: Backend,
    from: &scratch::Side,
    to: &scratch::Side,
    renames: &Renames,
    reverse: bool,
) -> anyhow::Result<Vec<Step>> {
    let mut from = from.clone();
    let mut steps = renames.apply(&mut from, to, reverse)?;
    steps.extend(match backend {
        Backend::Postgres => pg::plan(&from, to),
        Backend::Sqlite => sqlite::plan(&from, to),
    });
    let missed = unnoticed(backend, &from, to, &steps);
    steps.extend(missed);
    steps.sort_by_key(|s| s.phase);
    Ok(steps)
}

/// The safety net under the writers: each difference between the two models (by the comparison
/// `inspect --diff` makes) that no written step touches (none names its table, view, type or
/// function) is a step not written, so that no difference passes in silence, and never as
/// "no changes". Left out on purpose: PostgreSQL's column
/// order (it can only append columns, so it is never compared) and, on SQLite, text that says
/// the same thing written otherwise (compared in [`sql::normal`] form, as the writer does).
fn unnoticed(
    backend: Backend,
    from: &scratch::Side,
    to: &scratch::Side,
    written: &[Step],
) -> Vec<Step> {
    let (a, b) = match backend {
        Backend::Postgres => (from.schema.clone(), to.schema.clone()),
        Backend::Sqlite => (normalized(&from.schema), normalized(&to.schema)),
    };
    let report = crate::schema::diff::compare(Path::new("the desired schema"), &a, &b);
    let Ok(value) = serde_json::to_value(&report) else {
        return Vec::new();
    };
    let Some(list) = value.get("differences").and_then(|d| d.as_array()) else {
        return Vec::new();
    };
    let field = |d: &serde_json::Value, key: &str| {
        d.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let touched = |name: &str| {
        !name.is_empty()
            && written
                .iter()
                .any(|s| plan::replace_word(&s.summary, name, "\u{1}x") != s.summary)
    };
    let covered = |d: &serde_json::Value| {
        let object = field(d, "object");
        let owner = object
            .split(['.', '('])
            .next()
            .unwrap_or_default()
            .to_string();
        // A sequence a column owns changes with its table.
        let table = [&a, &b]
            .iter()
            .flat_map(|s| &s.sequences)
            .filter(|q| field(d, "kind") == "sequence" && q.name == owner)
            .find_map(|q| q.owned_by.as_deref().and_then(|o| o.split('.').next()))
            .unwrap_or_default()
            .to_string();
        touched(&owner) || touched(&table)
    };
    list.iter()
        .filter(|d| !(backend == Backend::Postgres && field(d, "property") == "column_order"))
        .filter(|d| !covered(d))
        .map(|d| {
            let kind = field(d, "kind").replace('_', " ");
            let object = field(d, "object");
            let change = field(d, "change");
            let property = field(d, "property");
            let what = if property.is_empty() {
                format!("{kind} {object} {change}")
            } else {
                format!("{kind} {object}: {property} {change}")
            };
            Step::unwritten(plan::Phase::Check, what)
        })
        .collect()
}

fn read_desired(file: &Path) -> anyhow::Result<String> {
    if file.exists() && !file.is_file() {
        return Err(error::usage(format!(
            "the desired schema `{}` is not a regular file",
            file.display()
        )));
    }
    if !file.is_file() {
        return Err(error::usage(format!(
            "the desired schema `{}` does not exist (write it, or name it with --from or {})",
            file.display(),
            SCHEMA_FILE_SETTING
        )));
    }
    std::fs::read_to_string(file)
        .with_context(|| format!("reading the desired schema `{}`", file.display()))
        .map_err(|e| error::tag(e, error::Exit::Usage))
}

/// SQLite's text kept as written (types, defaults, expressions, index, view and trigger
/// statements) in normal form.
fn normalized(schema: &crate::schema::Schema) -> crate::schema::Schema {
    let mut s = schema.clone();
    let n = |t: &mut String| *t = sql::normal(t);
    let columns = |cols: &mut Vec<crate::schema::Column>| {
        for c in cols {
            n(&mut c.data_type);
            c.default.iter_mut().for_each(n);
            c.generated.iter_mut().for_each(n);
        }
    };
    for t in &mut s.tables {
        columns(&mut t.columns);
        t.checks.iter_mut().for_each(|c| n(&mut c.expression));
        for ix in &mut t.indexes {
            n(&mut ix.definition);
            ix.columns.iter_mut().for_each(n);
            ix.predicate.iter_mut().for_each(n);
        }
        t.triggers.iter_mut().for_each(|tr| n(&mut tr.definition));
        t.foreign_keys
            .iter_mut()
            .for_each(|fk| fk.referred_table = fk.referred_table.to_ascii_lowercase());
    }
    for v in &mut s.views {
        columns(&mut v.columns);
        n(&mut v.definition);
        v.triggers.iter_mut().for_each(|tr| n(&mut tr.definition));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(comment: Option<&str>) -> scratch::Side {
        let json = serde_json::json!({
            "dbctl_schema_version": 2, "backend": "postgres", "schemas": ["public"],
            "row_counts": "none", "migrations": null, "views": [], "enums": [], "sequences": [],
            "tables": [{"schema": "public", "name": "t", "columns": [], "primary_key": null,
                "foreign_keys": [], "unique_constraints": [], "checks": [], "indexes": [],
                "rows": null, "comment": comment}]
        });
        scratch::Side {
            schema: serde_json::from_value(json).unwrap(),
            table_sql: Default::default(),
            triggers: Vec::new(),
        }
    }

    #[test]
    fn a_difference_no_writer_sees_is_listed_as_not_written() {
        let found = unnoticed(Backend::Postgres, &side(None), &side(Some("people")), &[]);
        assert_eq!(found.len(), 1);
        assert!(found[0].unwritten);
        assert!(
            found[0].summary.starts_with("not written: table t"),
            "{}",
            found[0].summary
        );
        assert!(unnoticed(Backend::Postgres, &side(None), &side(None), &[]).is_empty());
        // A step on the table covers it.
        let step = Step::new(plan::Phase::Comments, "~ comment on table t", "COMMENT ...");
        assert!(unnoticed(Backend::Postgres, &side(None), &side(Some("x")), &[step]).is_empty());
    }
}
