//! What is applied, what is pending, and what a command would do: pure functions over the folder
//! and the bookkeeping rows, so that `status`, the dry runs and the real runs agree.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::bookkeeping::AppliedRow;

use super::source::{Migration, Source};

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    /// Applied, and up.sql is what was applied (or was applied by diesel_cli, which keeps no
    /// checksum).
    Applied,
    /// In the folder, not applied.
    Pending,
    /// Applied, but up.sql changed since (line endings aside).
    Modified,
    /// Applied, but no longer in the folder.
    Missing,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::Modified => "modified",
            State::Missing => "missing",
        }
    }
}

/// One line of `migrate status`.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct StatusRow {
    pub(crate) version: String,
    pub(crate) name: String,
    pub(crate) state: State,
    /// Pending, but older than a migration already applied (merged late).
    pub(crate) out_of_order: bool,
    pub(crate) applied_at: Option<String>,
    pub(crate) duration_ms: Option<f64>,
    /// Whether down.sql exists and holds a statement.
    pub(crate) reversible: bool,
}

/// Every migration known from the folder or the database, in version order.
pub(crate) fn status(source: &Source, applied: &[AppliedRow]) -> Vec<StatusRow> {
    let applied_by_version: BTreeMap<&str, &AppliedRow> =
        applied.iter().map(|a| (a.version.as_str(), a)).collect();
    let newest_applied = applied.iter().map(|a| a.version.as_str()).max();
    let mut rows: Vec<StatusRow> = Vec::new();
    let mut seen = BTreeSet::new();
    for m in &source.migrations {
        seen.insert(m.version.as_str());
        let row = match applied_by_version.get(m.version.as_str()) {
            Some(a) => StatusRow {
                version: m.version.clone(),
                name: m.name.clone(),
                state: match &a.checksum {
                    Some(sum) if *sum != m.checksum => State::Modified,
                    _ => State::Applied,
                },
                out_of_order: false,
                applied_at: applied_at(a),
                duration_ms: a.duration_ms,
                reversible: m.down.is_some(),
            },
            None => StatusRow {
                version: m.version.clone(),
                name: m.name.clone(),
                state: State::Pending,
                out_of_order: newest_applied.is_some_and(|n| n > m.version.as_str()),
                applied_at: None,
                duration_ms: None,
                reversible: m.down.is_some(),
            },
        };
        rows.push(row);
    }
    for a in applied {
        if !seen.contains(a.version.as_str()) {
            rows.push(StatusRow {
                version: a.version.clone(),
                name: a.name.clone().unwrap_or_default(),
                state: State::Missing,
                out_of_order: false,
                applied_at: applied_at(a),
                duration_ms: a.duration_ms,
                reversible: false,
            });
        }
    }
    rows.sort_by(|a, b| a.version.cmp(&b.version));
    rows
}

/// dbctl's own timestamp when it ran the migration, else diesel's `run_on` (UTC).
fn applied_at(a: &AppliedRow) -> Option<String> {
    a.applied_at.clone().or_else(|| a.run_on.clone())
}

/// Applied versions, oldest application first: by diesel's `run_on` to the second (the
/// precision both tools share), then, on SQLite, by the rowid of diesel's row (rows written within
/// one second, where diesel_cli's whole-second `run_on` cannot tell), then by the full `run_on`,
/// dbctl's sequence number and the version.
pub(crate) fn application_order(applied: &[AppliedRow]) -> Vec<&AppliedRow> {
    let key = |a: &AppliedRow| {
        let run_on = a.run_on.as_deref().unwrap_or_default();
        (
            run_on.get(..19).unwrap_or(run_on).to_string(),
            a.rowid,
            run_on.to_string(),
            a.seq.unwrap_or(0),
            a.version.clone(),
        )
    };
    let mut rows: Vec<&AppliedRow> = applied.iter().collect();
    rows.sort_by_cached_key(|a| key(a));
    rows
}

/// How far `up` goes.
#[derive(Debug, Clone, Default)]
pub(crate) struct UpTarget {
    pub(crate) to: Option<String>,
    pub(crate) step: Option<usize>,
}

/// The pending migrations `up` would apply, in version order. `to` must name a known migration.
pub(crate) fn up_plan<'a>(
    source: &'a Source,
    rows: &[StatusRow],
    target: &UpTarget,
) -> Result<Vec<&'a Migration>, String> {
    if let Some(to) = &target.to {
        if !source.migrations.iter().any(|m| &m.version == to) {
            return Err(format!(
                "--to {to}: no migration in the folder has that version"
            ));
        }
    }
    let pending: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.state == State::Pending)
        .map(|r| r.version.as_str())
        .collect();
    let mut plan: Vec<&Migration> = source
        .migrations
        .iter()
        .filter(|m| pending.contains(m.version.as_str()))
        .filter(|m| target.to.as_ref().is_none_or(|to| m.version <= *to))
        .collect();
    if let Some(n) = target.step {
        plan.truncate(n);
    }
    Ok(plan)
}

/// How far `down` (and `redo`) go.
#[derive(Debug, Clone)]
pub(crate) enum DownTarget {
    Step(usize),
    /// Revert every migration with a greater version; this one stays.
    To(String),
    All,
}

/// The applied versions `down` would revert, newest application first.
pub(crate) fn down_plan(
    applied: &[AppliedRow],
    target: &DownTarget,
) -> Result<Vec<String>, String> {
    let order = application_order(applied);
    let newest_first = order.iter().rev().map(|a| a.version.clone());
    Ok(match target {
        DownTarget::Step(n) => newest_first.take(*n).collect(),
        DownTarget::All => newest_first.collect(),
        DownTarget::To(to) => {
            if !applied.iter().any(|a| &a.version == to) {
                return Err(format!("--to {to}: that version is not applied"));
            }
            newest_first.filter(|v| v > to).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: &str, run_on: &str, seq: Option<i64>) -> AppliedRow {
        AppliedRow {
            version: version.to_string(),
            run_on: Some(run_on.to_string()),
            name: None,
            checksum: None,
            duration_ms: None,
            applied_at: None,
            seq,
            rowid: None,
        }
    }

    #[test]
    fn down_follows_application_order_not_versions() {
        let applied = vec![
            row("3", "2024-01-01 00:00:00", Some(1)),
            row("1", "2024-01-01 00:00:00", Some(2)),
            row("2", "2024-01-01 00:00:01", Some(3)),
        ];
        assert_eq!(
            down_plan(&applied, &DownTarget::Step(2)).unwrap(),
            vec!["2", "1"]
        );
        assert_eq!(
            down_plan(&applied, &DownTarget::To("1".into())).unwrap(),
            vec!["2", "3"]
        );
        assert!(down_plan(&applied, &DownTarget::To("9".into())).is_err());
    }
}
