//! Migrations: reading diesel-format folders, planning, applying and recording them.
//!
//! Bookkeeping is diesel's own `__diesel_schema_migrations`, so dbctl and diesel_cli can take
//! turns on one database.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel_migrations::{FileBasedMigrations, MigrationHarness as _};
use serde::Serialize;

use crate::db::{self, AnyConnection};
use crate::error;

/// diesel's bookkeeping table.
pub(crate) const DIESEL_TABLE: &str = "__diesel_schema_migrations";

/// One migration that was applied.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Applied {
    pub(crate) version: String,
    pub(crate) duration_ms: f64,
}

/// Creates the bookkeeping table if it is missing; says whether it had to.
pub(crate) fn ensure_bookkeeping(conn: &mut AnyConnection) -> anyhow::Result<bool> {
    if db::table_exists(conn, DIESEL_TABLE)? {
        return Ok(false);
    }
    conn.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {DIESEL_TABLE} (
            version VARCHAR(50) PRIMARY KEY NOT NULL,
            run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
        )"
    ))
    .context("creating the migration bookkeeping table")?;
    Ok(true)
}

/// Applies every pending migration in `dir`, each in its own transaction.
pub(crate) fn apply_pending(conn: &mut AnyConnection, dir: &Path) -> anyhow::Result<Vec<Applied>> {
    if !dir.is_dir() {
        return Err(error::usage(format!(
            "migrations folder `{}` does not exist",
            dir.display()
        )));
    }
    let source = FileBasedMigrations::from_path(dir)
        .map_err(|e| error::usage(format!("reading `{}`: {e}", dir.display())))?;
    let started = Instant::now();
    let versions = conn
        .run_pending_migrations(source)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("applying migrations")?;
    let per = crate::output::ms_f64(started.elapsed()) / versions.len().max(1) as f64;
    Ok(versions
        .into_iter()
        .map(|v| Applied {
            version: v.to_string(),
            duration_ms: per,
        })
        .collect())
}
