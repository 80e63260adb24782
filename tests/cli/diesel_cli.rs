//! Claims about diesel_cli, checked against diesel_cli itself: each test here runs the real
//! `diesel` binary (from `DIESEL_CLI`, else `/work/tools/bin/diesel`) next to dbctl on one
//! database. Where diesel_cli is not installed (CI) each test says on stderr that it skipped; the
//! dbctl side of every behaviour checked here is also pinned by a dbctl-only test in `migrate`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use crate::support::{Backend, Project, Run};

/// The diesel_cli binary, or `None` (with a line on stderr saying why this test skips).
pub fn diesel_cli(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("DIESEL_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/tools/bin/diesel"));
    if path.is_file() {
        return Some(path);
    }
    // Straight to the process's stderr, past the test harness's capture: a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: diesel_cli not found at {} (set DIESEL_CLI to a diesel binary)",
        path.display()
    );
    None
}

/// Runs `diesel ARGS` in the project folder against the project's database.
pub fn diesel(bin: &PathBuf, p: &Project, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.current_dir(p.path())
        .args(args)
        .args(["--migration-dir", "migrations", "--database-url", p.url()])
        .env_remove("DATABASE_URL")
        .env_remove("MIGRATION_DIRECTORY")
        .env_remove("DIESEL_CONFIG_FILE")
        .env("RUST_LOG", "off");
    Run::from(cmd.output().expect("run diesel"))
}

fn recorded(p: &Project) -> i64 {
    p.count("SELECT count(*) AS n FROM __diesel_schema_migrations")
}

/// What diesel_cli 2.3 does with an up.sql holding nothing, white space, or only comments, and
/// what dbctl does with the same file: dbctl refuses only the file with no bytes (as diesel does)
/// and applies the other two on both backends (diesel fails on PostgreSQL with "Received an
/// empty query", since libpq reports an empty query as an error).
#[test]
fn blank_up_sql_diesel_cli_against_dbctl() {
    let Some(bin) = diesel_cli("blank_up_sql_diesel_cli_against_dbctl") else {
        return;
    };
    let cases = [
        ("empty", ""),
        ("white_space", "  \n\t\n"),
        ("comment", "-- nothing to do here\n/* really */\n"),
    ];
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for (kind, up) in cases {
            let folder = "migrations/2024-01-01-000000_blank";
            let (Some(with_diesel), Some(with_dbctl)) =
                (Project::new(backend), Project::new(backend))
            else {
                return;
            };
            for p in [&with_diesel, &with_dbctl] {
                p.file(&format!("{folder}/up.sql"), up);
                p.file(&format!("{folder}/down.sql"), "SELECT 1;");
                p.run(["init", "--no-migrate"]).success();
            }
            let d = diesel(&bin, &with_diesel, &["migration", "run"]);
            let diesel_applies = kind != "empty" && backend == Backend::Sqlite;
            if diesel_applies {
                d.success();
                assert_eq!(recorded(&with_diesel), 1, "{kind} on {backend:?}");
            } else {
                d.code(1).stderr_has(if kind == "empty" {
                    "Attempted to run an empty migration"
                } else {
                    "Received an empty query"
                });
                assert_eq!(recorded(&with_diesel), 0, "{kind} on {backend:?}");
            }
            let run = with_dbctl.run(["migrate", "up"]);
            if kind == "empty" {
                run.code(2).stderr_has("is an empty file");
                assert_eq!(recorded(&with_dbctl), 0);
            } else {
                run.success();
                assert_eq!(recorded(&with_dbctl), 1, "{kind} on {backend:?}");
            }
        }
    }
}
