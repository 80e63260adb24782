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
                p.init();
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

/// Taking turns: dbctl applies, diesel_cli reverts, the user edits up.sql, diesel_cli applies it
/// again (then redoes it). dbctl must not call the migration modified (its companion row describes
/// the earlier application), shows diesel's time for it, and can revert it.
#[test]
fn taking_turns_with_diesel_cli_is_not_a_modification() {
    let Some(bin) = diesel_cli("taking_turns_with_diesel_cli_is_not_a_modification") else {
        return;
    };
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(p) = Project::new(backend) else {
            return;
        };
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            let folder = format!("migrations/2024-01-0{}-000000_create_{t}", i + 1);
            p.file(
                &format!("{folder}/up.sql"),
                format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY);\n"),
            );
            p.file(&format!("{folder}/down.sql"), format!("DROP TABLE {t};\n"));
        }
        p.run(["init"]).success();
        diesel(&bin, &p, &["migration", "revert"]).success();
        assert!(!p.has_table("c"), "{backend:?}: diesel reverted c");
        p.file(
            "migrations/2024-01-03-000000_create_c/up.sql",
            "CREATE TABLE c (id INTEGER PRIMARY KEY, added TEXT);\n",
        );
        diesel(&bin, &p, &["migration", "run"]).success();
        p.run(["migrate", "status", "--check"]).success();
        p.run(["migrate", "up"])
            .success()
            .stdout_has("Nothing to apply");
        let first = p.run(["migrate", "status", "--format", "json"]).json()["migrations"][2]
            ["applied_at"]
            .as_str()
            .unwrap()
            .to_string();
        // diesel's redo writes a new run_on; dbctl shows it, in its one format.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        diesel(&bin, &p, &["migration", "redo"]).success();
        let json = p.run(["migrate", "status", "--check", "--format", "json"]);
        json.success();
        let rows = json.json()["migrations"].as_array().unwrap().clone();
        let after = rows[2]["applied_at"].as_str().unwrap().to_string();
        assert!(
            after > first,
            "{backend:?}: {after} is diesel's new time, not {first}"
        );
        for r in &rows {
            let at = r["applied_at"].as_str().unwrap();
            assert!(
                at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
                "{backend:?}: applied_at {at:?} is not RFC 3339 UTC"
            );
        }
        // dbctl reverts what diesel applied, newest application first.
        let run = p.run(["migrate", "down", "--format", "json"]);
        run.success();
        assert_eq!(run.json()["steps"][0]["version"], "20240103000000");
        assert!(!p.has_table("c") && p.has_table("b"));
    }
}

/// diesel_cli sees what dbctl applied as applied; and a down.sql of only comments: diesel_cli
/// "reverts" with it on SQLite (forgets the migration, leaves its table, so applying it again
/// fails), where dbctl refuses to revert before touching anything.
#[test]
fn diesel_cli_reads_dbctls_bookkeeping_and_blank_down_sql() {
    let Some(bin) = diesel_cli("diesel_cli_reads_dbctls_bookkeeping_and_blank_down_sql") else {
        return;
    };
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(p) = Project::new(backend) else {
            return;
        };
        let folder = "migrations/2024-01-01-000000_x";
        p.file(
            &format!("{folder}/up.sql"),
            "CREATE TABLE x (id INTEGER);\n",
        );
        p.file(&format!("{folder}/down.sql"), "-- nothing to undo\n");
        p.run(["init"]).success();
        diesel(&bin, &p, &["migration", "pending"])
            .success()
            .stdout_has("false");
        diesel(&bin, &p, &["migration", "list"])
            .success()
            .stdout_has("[X] 2024-01-01-000000_x");
        p.run(["migrate", "down"])
            .code(2)
            .stderr_has("no down.sql (or it holds no statement)");
        assert_eq!(recorded(&p), 1);
        let d = diesel(&bin, &p, &["migration", "revert"]);
        if backend == Backend::Sqlite {
            d.success();
            assert_eq!(recorded(&p), 0, "diesel forgot the migration");
            assert!(p.has_table("x"), "and left its table");
            diesel(&bin, &p, &["migration", "run"])
                .code(1)
                .stderr_has("already exists");
        } else {
            d.code(1).stderr_has("Received an empty query");
            assert_eq!(recorded(&p), 1);
        }
    }
}

/// `dbctl migrate --engine diesel` (diesel_migrations' harness over dbctl's reader) leaves what
/// diesel_cli leaves, and each reads the other's work: one folder applied by diesel_cli on one
/// database and by dbctl's diesel engine on another, then reverted and redone crosswise.
#[test]
fn dbctls_diesel_engine_leaves_what_diesel_cli_leaves() {
    let Some(bin) = diesel_cli("dbctls_diesel_engine_leaves_what_diesel_cli_leaves") else {
        return;
    };
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (Some(by_cli), Some(by_dbctl)) = (Project::new(backend), Project::new(backend)) else {
            return;
        };
        for p in [&by_cli, &by_dbctl] {
            for (i, t) in ["a", "b", "c"].iter().enumerate() {
                let folder = format!("migrations/2024-01-0{}-000000_create_{t}", i + 1);
                p.file(
                    &format!("{folder}/up.sql"),
                    format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY);\nCREATE TABLE {t}2 (id INTEGER);\n"),
                );
                p.file(
                    &format!("{folder}/down.sql"),
                    format!("DROP TABLE {t}2;\nDROP TABLE {t};\n"),
                );
            }
            p.file(
                "migrations/2024-01-02-000000_create_b/metadata.toml",
                "run_in_transaction = false\n",
            );
            p.run(["init", "--no-migrate"]).success();
        }
        diesel(&bin, &by_cli, &["migration", "run"]).success();
        by_dbctl
            .run(["migrate", "up", "--engine", "diesel"])
            .success();
        let all = ["20240101000000", "20240102000000", "20240103000000"];
        for p in [&by_cli, &by_dbctl] {
            assert_eq!(p.applied(), all, "{backend:?}");
            assert!(p.has_table("b2") && p.has_table("c2"), "{backend:?}");
        }
        // Each tool sees the other's rows as applied.
        diesel(&bin, &by_dbctl, &["migration", "pending"])
            .success()
            .stdout_has("false");
        by_cli
            .run(["migrate", "up", "--engine", "diesel"])
            .success()
            .stdout_has("Nothing to apply");
        // Reverting crosswise: both revert the highest version.
        diesel(&bin, &by_dbctl, &["migration", "revert"]).success();
        by_cli
            .run(["migrate", "down", "--engine", "diesel"])
            .success();
        for p in [&by_cli, &by_dbctl] {
            assert_eq!(p.applied(), &all[..2], "{backend:?}");
            assert!(!p.has_table("c") && p.has_table("b"), "{backend:?}");
        }
        diesel(&bin, &by_cli, &["migration", "redo", "--all"]).success();
        by_dbctl
            .run(["migrate", "redo", "--engine", "diesel", "--all"])
            .success();
        for p in [&by_cli, &by_dbctl] {
            assert_eq!(p.applied(), &all[..2], "{backend:?}");
            assert!(p.has_table("a2") && p.has_table("b2"), "{backend:?}");
        }
    }
}
