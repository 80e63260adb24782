//! `dbctl migrate up/down/redo/status`: every flag on both backends, failures in the middle of a
//! run, non-transactional failures, modified and missing migrations, dry runs, out-of-order
//! migrations, and concurrent runs.

use std::process::Stdio;

use crate::both_backends;
use crate::support::{Backend, Project};

/// Three reversible migrations: tables a, b, c.
fn three(p: &Project) {
    for (i, t) in ["a", "b", "c"].iter().enumerate() {
        p.migration_folder(
            &format!("2024-01-0{}-000000_create_{t}", i + 1),
            &format!("CREATE TABLE {t} (\n  id INTEGER PRIMARY KEY\n);\n"),
            Some(&format!("DROP TABLE {t};")),
        );
    }
}

both_backends!(up_applies_everything_once_and_records_it, |p: Project| {
    three(&p);
    p.init();
    let run = p.run(["migrate", "up", "--format", "json"]);
    run.success();
    let json = run.json();
    assert_eq!(json["command"], "up");
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["version"], "20240101000000");
    assert_eq!(steps[0]["name"], "create_a");
    assert_eq!(steps[0]["direction"], "up");
    assert_eq!(steps[0]["transaction"], true);
    assert!(steps[0]["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(p.has_table("a") && p.has_table("b") && p.has_table("c"));
    assert_eq!(
        p.applied(),
        ["20240101000000", "20240102000000", "20240103000000"]
    );
    // The companion table: name, a SHA-256 checksum, and the order of application.
    let sums = p.strings("SELECT checksum AS v FROM __dbctl_migrations ORDER BY seq");
    assert_eq!(sums.len(), 3);
    assert!(sums.iter().all(|s| s.as_ref().unwrap().len() == 64));
    assert_eq!(
        p.strings("SELECT name AS v FROM __dbctl_migrations ORDER BY seq")[2].as_deref(),
        Some("create_c")
    );

    let again = p.run(["migrate", "up", "--format", "json"]);
    again.success();
    assert_eq!(again.json()["steps"].as_array().unwrap().len(), 0);
    p.run(["migrate", "up"])
        .success()
        .stdout_has("Nothing to apply");
});

both_backends!(
    up_prints_a_summary_and_lists_every_migration_only_with_verbose,
    |p: Project| {
        for i in 1..=12 {
            p.migration_folder(
                &format!("2024-01-01-{i:06}_t{i}"),
                &format!("CREATE TABLE t{i} (id INTEGER);"),
                Some(&format!("DROP TABLE t{i};")),
            );
        }
        p.init();
        let run = p.run(["migrate", "up"]);
        run.success()
            .stdout_has("Applied 12 migrations in ")
            .stdout_has("from 20240101000001_t1 to 20240101000012_t12.")
            .stdout_has("Slowest: ");
        assert!(
            run.stdout.lines().count() <= 3,
            "a summary, not a row per migration:\n{}",
            run.stdout
        );
        assert!(
            !run.stderr.contains("applied 2024"),
            "no line per migration without -v:\n{}",
            run.stderr
        );
        // The slowest three are named, with their times.
        let slowest = run
            .stdout
            .lines()
            .find(|l| l.starts_with("Slowest"))
            .unwrap();
        assert_eq!(slowest.matches(" ms)").count(), 3, "{slowest}");

        // -v: a line per migration on stderr and the table on stdout.
        p.run(["migrate", "down", "--all"]).success();
        let run = p.run(["migrate", "up", "-v"]);
        run.success()
            .stderr_has("applied 20240101000001_t1 (")
            .stderr_has("applied 20240101000012_t12 (")
            .stdout_has("20240101000012")
            .stdout_has("Applied 12 migrations");
        assert!(run.stdout.lines().count() > 12, "{}", run.stdout);
        // JSON always has every step.
        p.run(["migrate", "down", "--step", "5"]).success();
        let run = p.run(["migrate", "up", "--format", "json"]);
        run.success();
        assert_eq!(run.json()["steps"].as_array().unwrap().len(), 5);
        // A few: each named.
        let run = p.run(["migrate", "down", "--step", "2"]);
        run.success().stdout_has("Reverted 2 migrations in ");
        assert!(
            run.stdout.contains(": 20240101000012_t12 (")
                && run.stdout.contains(", 20240101000011_t11 ("),
            "{}",
            run.stdout
        );
    }
);

both_backends!(down_to_with_nothing_newer_says_so, |p: Project| {
    three(&p);
    p.init();
    p.run(["migrate", "up"]).success();
    p.run(["migrate", "down", "--to", "20240103000000"])
        .success()
        .stdout_has("Nothing to revert: no applied migration is newer than 20240103000000.");
    p.run(["migrate", "up", "--to", "20240102000000"])
        .success()
        .stdout_has("Nothing to apply: every migration up to 20240102000000 is applied.");
    assert_eq!(p.applied().len(), 3);
    p.run(["migrate", "down", "--all"]).success();
    p.run(["migrate", "down"])
        .success()
        .stdout_has("Nothing to revert: no migration is applied.");
});

both_backends!(up_step_and_to, |p: Project| {
    three(&p);
    p.init();
    p.run(["migrate", "up", "--step", "1"]).success();
    assert_eq!(p.applied(), ["20240101000000"]);
    p.run(["migrate", "up", "--to", "2024-01-02-000000"])
        .success();
    assert_eq!(p.applied(), ["20240101000000", "20240102000000"]);
    p.run(["migrate", "up", "--to", "20991231000000"])
        .code(2)
        .stderr_has("no migration in the folder has that version");
    p.run(["migrate", "up", "--step", "0"]).code(2);
    p.run(["migrate", "up"]).success();
    assert_eq!(p.applied().len(), 3);
});

both_backends!(down_step_to_and_all, |p: Project| {
    three(&p);
    p.init();
    p.run(["migrate", "up"]).success();
    let run = p.run(["migrate", "down", "--format", "json"]);
    run.success();
    let json = run.json();
    assert_eq!(json["steps"][0]["version"], "20240103000000");
    assert_eq!(json["steps"][0]["direction"], "down");
    assert!(!p.has_table("c"));
    assert_eq!(p.applied().len(), 2);
    assert_eq!(
        p.count("SELECT count(*) AS n FROM __dbctl_migrations"),
        2,
        "the companion row goes with the migration"
    );

    p.run(["migrate", "up"]).success();
    p.run(["migrate", "down", "--to", "20240101000000"])
        .success();
    assert_eq!(p.applied(), ["20240101000000"], "--to keeps that version");
    assert!(p.has_table("a") && !p.has_table("b"));

    p.run(["migrate", "up"]).success();
    p.run(["migrate", "down", "--step", "2"]).success();
    assert_eq!(p.applied(), ["20240101000000"]);

    p.run(["migrate", "down", "--all"]).success();
    assert!(p.applied().is_empty());
    assert!(!p.has_table("a"));
    p.run(["migrate", "down"])
        .success()
        .stdout_has("Nothing to revert");
    p.run(["migrate", "down", "--to", "20240101000000"])
        .code(2)
        .stderr_has("not applied");
});

both_backends!(
    down_refuses_before_touching_anything_without_down_sql,
    |p: Project| {
        p.migration_folder(
            "2024-01-01-000000_a",
            "CREATE TABLE a (id INTEGER);",
            Some("DROP TABLE a;"),
        );
        p.migration_folder("2024-01-02-000000_b", "CREATE TABLE b (id INTEGER);", None);
        p.migration_folder(
            "2024-01-03-000000_c",
            "CREATE TABLE c (id INTEGER);",
            Some("-- nothing here yet\n"),
        );
        p.init();
        p.run(["migrate", "up"]).success();
        p.run(["migrate", "down", "--all"])
            .code(2)
            .stderr_has("2024010200000")
            .stderr_has("no down.sql")
            .stderr_has("20240103000000_c")
            .stderr_has("nothing was changed");
        assert_eq!(p.applied().len(), 3);
        assert!(p.has_table("c"), "c must not be reverted either");
    }
);

both_backends!(redo_reverts_and_reapplies, |p: Project| {
    three(&p);
    p.init();
    p.run(["migrate", "up"]).success();
    p.execute("INSERT INTO c (id) VALUES (1)");
    let run = p.run(["migrate", "redo", "--format", "json"]);
    run.success();
    let steps = run.json()["steps"].as_array().unwrap().clone();
    let dirs: Vec<_> = steps
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["direction"].as_str().unwrap(),
                s["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(dirs, ["down 20240103000000", "up 20240103000000"]);
    assert_eq!(
        p.count("SELECT count(*) AS n FROM c"),
        0,
        "c was dropped and recreated"
    );

    let run = p.run(["migrate", "redo", "--all", "--format", "json"]);
    run.success();
    assert_eq!(run.json()["steps"].as_array().unwrap().len(), 6);
    assert_eq!(p.applied().len(), 3);
    let run = p.run(["migrate", "redo", "--step", "2", "--format", "json"]);
    run.success();
    assert_eq!(run.json()["steps"].as_array().unwrap().len(), 4);
});

both_backends!(status_lists_states_and_check_gates, |p: Project| {
    three(&p);
    p.init();
    p.run(["migrate", "status", "--check"]).code(4);
    let json = p.run(["migrate", "status", "--format", "json"]).json();
    assert_eq!(json["pending"], 3);
    assert_eq!(json["ok"], false);
    assert_eq!(json["migrations"][0]["state"], "pending");
    assert_eq!(json["migrations"][0]["reversible"], true);

    p.run(["migrate", "up", "--step", "2"]).success();
    let run = p.run(["migrate", "status"]);
    run.success().stdout_has("applied").stdout_has("pending");
    p.run(["migrate", "up"]).success();
    let run = p.run(["migrate", "status", "--check", "--format", "json"]);
    run.success();
    let json = run.json();
    assert_eq!(json["applied"], 3);
    assert_eq!(json["ok"], true);
    let first = &json["migrations"][0];
    assert_eq!(first["state"], "applied");
    assert!(first["applied_at"].as_str().unwrap().starts_with("20"));
    assert!(first["duration_ms"].as_f64().is_some());
});

both_backends!(
    a_failing_migration_stops_the_run_and_leaves_the_one_before,
    |p: Project| {
        p.migration_folder(
            "2024-01-01-000000_good",
            "CREATE TABLE good (id INTEGER);",
            Some("DROP TABLE good;"),
        );
        p.migration_folder(
            "2024-01-02-000000_bad",
            "CREATE TABLE half (id INTEGER);\n\n-- the typo:\nCREATE TABLEX oops (id INTEGER);\n",
            Some("DROP TABLE half;"),
        );
        p.migration_folder(
            "2024-01-03-000000_after",
            "CREATE TABLE after (id INTEGER);",
            Some("DROP TABLE after;"),
        );
        p.init();
        p.run(["migrate", "up"])
            .code(1)
            .stderr_has("20240102000000_bad")
            .stderr_has("up.sql line 4")
            .stderr_has("CREATE TABLEX oops")
            // PostgreSQL parses the whole file before running any of it.
            .stderr_has(if p.pg_database().is_some() {
                "none of its statements ran"
            } else {
                "rolled back"
            })
            .stderr_has("TABLEX");
        assert_eq!(p.applied(), ["20240101000000"]);
        assert!(p.has_table("good"));
        assert!(
            !p.has_table("half"),
            "the failed migration is rolled back whole"
        );
        assert!(!p.has_table("after"));
        assert_eq!(p.count("SELECT count(*) AS n FROM __dbctl_migrations"), 1);
        // The JSON error names the same things.
        let run = p.run(["migrate", "up", "--format", "json"]);
        run.code(1);
        let msg = run.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains("line 4"), "{msg}");
    }
);

both_backends!(
    a_failing_non_transactional_migration_is_not_recorded,
    |p: Project| {
        p.migration_folder(
        "2024-01-01-000000_notx",
        "CREATE TABLE first_one (id INTEGER);\nCREATE TABLEX oops (id INTEGER);\nCREATE TABLE third (id INTEGER);\n",
        Some("DROP TABLE first_one;"),
    );
        p.file(
            "migrations/2024-01-01-000000_notx/metadata.toml",
            "run_in_transaction = false\n",
        );
        p.init();
        p.run(["migrate", "up"])
            .code(1)
            .stderr_has("statement 2 of 3")
            .stderr_has("line 2")
            .stderr_has("statements 1 to 1 ran and were NOT rolled back")
            .stderr_has("not recorded");
        assert!(
            p.has_table("first_one"),
            "statement 1 ran outside a transaction"
        );
        assert!(!p.has_table("third"));
        assert!(p.applied().is_empty());
        assert_eq!(p.count("SELECT count(*) AS n FROM __dbctl_migrations"), 0);
    }
);

both_backends!(
    modified_migrations_are_reported_and_refused,
    |p: Project| {
        three(&p);
        p.init();
        p.run(["migrate", "up"]).success();
        // Line endings only: not a change.
        p.file(
            "migrations/2024-01-01-000000_create_a/up.sql",
            "CREATE TABLE a (\r\n  id INTEGER PRIMARY KEY\r\n);\r\n",
        );
        p.run(["migrate", "status", "--check"]).success();

        p.file(
            "migrations/2024-01-02-000000_create_b/up.sql",
            "CREATE TABLE b (id INTEGER PRIMARY KEY, extra TEXT);",
        );
        p.migration_folder(
            "2024-01-04-000000_create_d",
            "CREATE TABLE d (id INTEGER);",
            Some("DROP TABLE d;"),
        );
        let json = p.run(["migrate", "status", "--format", "json"]).json();
        assert_eq!(json["migrations"][0]["state"], "applied");
        assert_eq!(json["migrations"][1]["state"], "modified");
        assert_eq!(json["modified"], 1);
        p.run(["migrate", "status", "--check"]).code(4);
        p.run(["migrate", "up"])
            .code(4)
            .stderr_has("20240102000000_create_b")
            .stderr_has("--allow-modified");
        assert!(!p.has_table("d"));
        p.run(["migrate", "up", "--allow-modified"])
            .success()
            .stderr_has("warning");
        assert!(p.has_table("d"));
    }
);

both_backends!(missing_migrations_are_reported, |p: Project| {
    three(&p);
    p.init();
    p.run(["migrate", "up"]).success();
    std::fs::remove_dir_all(p.path().join("migrations/2024-01-02-000000_create_b")).unwrap();
    let json = p.run(["migrate", "status", "--format", "json"]).json();
    assert_eq!(json["missing"], 1);
    assert_eq!(json["migrations"][1]["state"], "missing");
    assert_eq!(
        json["migrations"][1]["name"], "create_b",
        "the name comes from dbctl's table"
    );
    p.run(["migrate", "status", "--check"]).code(4);
    p.run(["migrate", "up"])
        .success()
        .stderr_has("missing from the folder: 20240102000000_create_b");
    // Reverting through it is refused before anything changes.
    p.run(["migrate", "down", "--step", "2"])
        .code(2)
        .stderr_has("not in the folder");
    assert_eq!(p.applied().len(), 3);
});

both_backends!(dry_runs_change_nothing, |p: Project| {
    three(&p);
    p.init();
    p.execute("DROP TABLE __diesel_schema_migrations");
    let run = p.run(["migrate", "up", "--dry-run", "--format", "json"]);
    run.success();
    let json = run.json();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["steps"].as_array().unwrap().len(), 3);
    assert!(json["steps"][0]["sql"]
        .as_str()
        .unwrap()
        .contains("CREATE TABLE a"));
    assert!(
        !p.has_table("__diesel_schema_migrations"),
        "not even bookkeeping"
    );
    assert!(!p.has_table("a"));
    p.run(["migrate", "up", "--dry-run"])
        .success()
        .stdout_has("Dry run")
        .stdout_has("CREATE TABLE b");

    p.run(["migrate", "up"]).success();
    p.run(["migrate", "down", "--all", "--dry-run"])
        .success()
        .stdout_has("DROP TABLE c");
    p.run(["migrate", "redo", "--dry-run"])
        .success()
        .stdout_has("DROP TABLE c");
    assert_eq!(p.applied().len(), 3);
    assert!(p.has_table("c"));
});

both_backends!(out_of_order_migrations, |p: Project| {
    p.migration_folder(
        "2024-01-02-000000_newer",
        "CREATE TABLE newer (id INTEGER);",
        Some("DROP TABLE newer;"),
    );
    p.init();
    p.run(["migrate", "up"]).success();
    // An older migration merged late.
    p.migration_folder(
        "2024-01-01-000000_older",
        "CREATE TABLE older (id INTEGER);",
        Some("DROP TABLE older;"),
    );
    let json = p.run(["migrate", "status", "--format", "json"]).json();
    assert_eq!(json["migrations"][0]["state"], "pending");
    assert_eq!(json["migrations"][0]["out_of_order"], true);
    assert_eq!(json["out_of_order"], 1);
    p.run(["migrate", "up", "--strict"])
        .code(4)
        .stderr_has("out of order");
    assert!(!p.has_table("older"));
    p.run(["migrate", "up"])
        .success()
        .stderr_has("out of order");
    assert!(p.has_table("older"));
    // down follows the order of application: the older one went in last, so it goes first.
    let run = p.run(["migrate", "down", "--format", "json"]);
    run.success();
    assert_eq!(run.json()["steps"][0]["version"], "20240101000000");
    assert!(p.has_table("newer"));
});

both_backends!(malformed_folders_are_usage_errors, |p: Project| {
    p.init();
    p.file("migrations/2024-01-01-000000_no_up/down.sql", "SELECT 1;");
    p.run(["migrate", "up"])
        .code(2)
        .stderr_has("2024-01-01-000000_no_up")
        .stderr_has("no up.sql");
    std::fs::remove_dir_all(p.path().join("migrations/2024-01-01-000000_no_up")).unwrap();

    p.migration_folder("2024-01-01-000000_one", "SELECT 1;", None);
    p.migration_folder("20240101000000_two", "SELECT 1;", None);
    p.run(["migrate", "status"])
        .code(2)
        .stderr_has("two migrations have version 20240101000000");
    std::fs::remove_dir_all(p.path().join("migrations/20240101000000_two")).unwrap();

    p.migration_folder("version1_bad", "SELECT 1;", None);
    p.run(["migrate", "up"])
        .code(2)
        .stderr_has("version1_bad")
        .stderr_has("not a version");
    std::fs::remove_dir_all(p.path().join("migrations/version1_bad")).unwrap();

    p.file(
        "migrations/2024-01-02-000000_latin1/up.sql",
        b"SELECT '\xe9';".as_slice(),
    );
    p.run(["migrate", "up"])
        .code(2)
        .stderr_has("2024-01-02-000000_latin1/up.sql")
        .stderr_has("not valid UTF-8");
    std::fs::remove_dir_all(p.path().join("migrations/2024-01-02-000000_latin1")).unwrap();

    p.file("migrations/2024-01-03-000000_meta/up.sql", "SELECT 1;");
    p.file(
        "migrations/2024-01-03-000000_meta/metadata.toml",
        "run_in_transaction = \"false\"\n",
    );
    p.run(["migrate", "up"])
        .code(2)
        .stderr_has("must be true or false");
    p.file(
        "migrations/2024-01-03-000000_meta/metadata.toml",
        "run_in_transaction = \n",
    );
    p.run(["migrate", "up"])
        .code(2)
        .stderr_has("not valid TOML");
    p.file(
        "migrations/2024-01-03-000000_meta/metadata.toml",
        "run_in_transactoin = false\n",
    );
    p.run(["migrate", "up"])
        .success()
        .stderr_has("unknown key `run_in_transactoin`")
        .stderr_has("diesel_cli would run it without one");
    assert_eq!(p.applied().len(), 2);

    let missing = p.run(["migrate", "status", "--migrations-dir", "nope"]);
    missing.code(2).stderr_has("does not exist");
});

both_backends!(per_backend_folders_are_chosen_by_the_url, |p: Project| {
    p.file(
        "migrations/sqlite/2024-01-01-000000_t/up.sql",
        "CREATE TABLE only_sqlite (id INTEGER);",
    );
    p.file(
        "migrations/postgresql/2024-01-01-000000_t/up.sql",
        "CREATE TABLE only_pg (id SERIAL);",
    );
    p.init();
    let json = p.run(["migrate", "up", "--format", "json"]).json();
    let (mine, other, folder) = match p.backend {
        Backend::Sqlite => ("only_sqlite", "only_pg", "sqlite"),
        Backend::Postgres => ("only_pg", "only_sqlite", "postgresql"),
    };
    assert!(json["migrations_dir"].as_str().unwrap().ends_with(folder));
    assert!(p.has_table(mine) && !p.has_table(other));
});

both_backends!(init_and_up_share_the_engine, |p: Project| {
    three(&p);
    let json = p.run(["init", "--format", "json"]).json();
    assert_eq!(json["applied"].as_array().unwrap().len(), 3);
    assert_eq!(p.count("SELECT count(*) AS n FROM __dbctl_migrations"), 3);
    p.file(
        "migrations/2024-01-01-000000_create_a/up.sql",
        "CREATE TABLE a (id INTEGER PRIMARY KEY, x TEXT);",
    );
    p.run(["init"]).code(4).stderr_has("--allow-modified");
});

both_backends!(a_held_lock_is_waited_for_then_reported, |p: Project| {
    three(&p);
    p.init();
    match p.backend {
        Backend::Postgres => {
            let mut holder = p.connect();
            holder.execute("SELECT pg_advisory_lock(7233453303196903783)");
            p.run(["migrate", "up", "--lock-timeout", "0.5"])
                .code(1)
                .stderr_has("waiting for another migration run")
                .stderr_has("another migration run holds the lock");
            drop(holder);
        }
        Backend::Sqlite => {
            let file = std::fs::File::open(p.path().join("test.db")).unwrap();
            file.lock().unwrap();
            p.run(["migrate", "up", "--lock-timeout", "0.5"])
                .code(1)
                .stderr_has("another migration run holds the lock");
            drop(file);
        }
    }
    assert!(p.applied().is_empty());
    p.run(["migrate", "up", "--lock-timeout", "5"]).success();
    assert_eq!(p.applied().len(), 3);
});

/// Migrations slow enough that two runs started together overlap.
fn slow_migrations(p: &Project, n: usize) {
    let burn = match p.backend {
        Backend::Postgres => "SELECT pg_sleep(0.05);".to_string(),
        Backend::Sqlite => "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                            WHERE x < 100000) SELECT count(*) FROM c;"
            .to_string(),
    };
    for i in 0..n {
        p.migration_folder(
            &format!("2024-02-01-{i:06}_t{i}"),
            &format!("{burn}\nCREATE TABLE t{i} (id INTEGER);"),
            Some(&format!("DROP TABLE t{i};")),
        );
    }
}

fn two_concurrent_ups(p: &Project) {
    let spawn = || {
        p.command()
            .args(["migrate", "up", "--format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let runs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let mut total = 0;
    for out in &runs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a concurrent run failed:\n{stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        total += json["steps"].as_array().unwrap().len();
    }
    let expected = p.applied().len();
    assert_eq!(total, expected, "every migration applied exactly once");
}

both_backends!(
    two_concurrent_runs_apply_each_migration_once,
    |p: Project| {
        slow_migrations(&p, 12);
        p.init();
        two_concurrent_ups(&p);
        assert_eq!(p.applied().len(), 12);
        assert_eq!(p.count("SELECT count(*) AS n FROM __dbctl_migrations"), 12);
    }
);

#[test]
fn postgres_concurrent_runs_with_create_index_concurrently() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    let _ = &mut p;
    p.migration_folder( "2024-01-01-000000_t", "CREATE TABLE t (id INTEGER, v TEXT);\nINSERT INTO t SELECT g, g::text FROM generate_series(1, 20000) g;", Some("DROP TABLE t;"));
    p.migration_folder(
        "2024-01-02-000000_slow",
        "SELECT pg_sleep(0.3);",
        Some("SELECT 1;"),
    );
    p.migration_folder(
        "2024-01-03-000000_idx",
        "CREATE INDEX CONCURRENTLY t_v ON t (v);\nCREATE INDEX CONCURRENTLY t_id ON t (id);",
        Some("DROP INDEX CONCURRENTLY t_v;\nDROP INDEX CONCURRENTLY t_id;"),
    );
    p.file(
        "migrations/2024-01-03-000000_idx/metadata.toml",
        "run_in_transaction = false\n",
    );
    p.init();
    two_concurrent_ups(&p);
    assert_eq!(p.applied().len(), 3);
    assert_eq!(
        p.count("SELECT count(*)::bigint AS n FROM pg_indexes WHERE tablename = 't' AND indexname IN ('t_v', 't_id')"),
        2
    );
    p.run(["migrate", "redo"]).success();
}

#[test]
fn postgres_concurrently_in_a_transaction_says_how_to_fix_it() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.migration_folder("2024-01-01-000000_t", "CREATE TABLE t (id INTEGER);", None);
    p.migration_folder(
        "2024-01-02-000000_idx",
        "CREATE INDEX CONCURRENTLY t_id ON t (id);",
        None,
    );
    p.init();
    // Refused before anything runs, not half-way through the run.
    p.run(["migrate", "up"])
        .code(2)
        .stderr_has(
            "up.sql: line 1: `CREATE INDEX CONCURRENTLY t_id ON t (id)` cannot run inside a transaction",
        )
        .stderr_has("run_in_transaction = false");
    assert!(p.applied().is_empty());
}

#[test]
fn postgres_search_path_changes_do_not_move_the_bookkeeping() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.migration_folder(
        "2024-01-01-000000_elsewhere",
        "CREATE SCHEMA app;\nSET search_path = app;\nCREATE TABLE inside (id INTEGER);",
        Some("SET search_path = public;\nDROP SCHEMA app CASCADE;"),
    );
    p.migration_folder(
        "2024-01-02-000000_next",
        "CREATE TABLE next_one (id INTEGER);",
        None,
    );
    p.init();
    p.run(["migrate", "up"]).success();
    assert_eq!(
        p.count("SELECT count(*)::bigint AS n FROM public.__diesel_schema_migrations"),
        2
    );
    assert_eq!(
        p.count("SELECT count(*)::bigint AS n FROM public.__dbctl_migrations"),
        2
    );
    assert_eq!(
        p.count("SELECT count(*)::bigint AS n FROM pg_tables WHERE tablename = '__diesel_schema_migrations'"),
        1
    );
}

#[test]
fn postgres_functions_and_dollar_quotes_run_whole() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.migration_folder(
        "2024-01-01-000000_fn",
        "CREATE FUNCTION add_one(i integer) RETURNS integer AS $$\nBEGIN\n  RETURN i + 1;\nEND;\n$$ LANGUAGE plpgsql;\n\
         CREATE FUNCTION two() RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n\
         CREATE TABLE notes (body TEXT DEFAULT E'it\\'s; fine');",
        Some("DROP TABLE notes; DROP FUNCTION two(); DROP FUNCTION add_one(integer);"),
    );
    p.init();
    p.run(["migrate", "up"]).success();
    assert_eq!(p.count("SELECT add_one(1)::bigint AS n"), 2);
    assert_eq!(p.count("SELECT two()::bigint AS n"), 2);
    p.run(["migrate", "redo"]).success();
}

#[test]
fn sqlite_triggers_run_whole() {
    let p = Project::sqlite();
    p.migration_folder(
        "2024-01-01-000000_trigger",
        "CREATE TABLE t (id INTEGER, n INTEGER);\nCREATE TABLE log (msg TEXT);\n\
         CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN\n  INSERT INTO log VALUES (CASE WHEN NEW.n > 1 THEN 'big;' ELSE 'small' END);\n  UPDATE t SET n = n + 1 WHERE id = NEW.id;\nEND;\n",
        Some("DROP TABLE log; DROP TABLE t;"),
    );
    p.init();
    p.run(["migrate", "up"]).success();
    p.execute("INSERT INTO t VALUES (1, 5)");
    assert_eq!(
        p.strings("SELECT msg AS v FROM log")[0].as_deref(),
        Some("big;")
    );
    assert_eq!(p.count("SELECT n AS n FROM t"), 6);
}

#[test]
fn sqlite_migrations_run_with_foreign_keys_off_like_diesel() {
    // SQLite's table-rebuild recipe (used by real projects) drops a referenced table; with
    // foreign keys on, that would delete or refuse the referencing rows.
    let p = Project::sqlite();
    p.migration_folder(
        "2024-01-01-000000_base",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);\nCREATE TABLE child (pid INTEGER REFERENCES parent(id) ON DELETE CASCADE);\nINSERT INTO parent VALUES (1);\nINSERT INTO child VALUES (1);",
        None,
    );
    p.migration_folder(
        "2024-01-02-000000_rebuild",
        "CREATE TABLE new_parent (id INTEGER PRIMARY KEY, extra TEXT);\nINSERT INTO new_parent (id) SELECT id FROM parent;\nDROP TABLE parent;\nALTER TABLE new_parent RENAME TO parent;",
        None,
    );
    p.init();
    p.run(["migrate", "up"]).success();
    assert_eq!(p.count("SELECT count(*) AS n FROM child"), 1);
}

both_backends!(
    migrations_applied_by_diesel_cli_are_understood,
    |p: Project| {
        three(&p);
        p.init();
        p.run(["migrate", "up", "--step", "1"]).success();
        // diesel's own harness applies the second one a little later: its row (with a
        // whole-second run_on on SQLite), no companion row.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        p.run(["migrate", "up", "--engine", "diesel", "--step", "1"])
            .success();
        assert!(p.has_table("b"));
        assert_eq!(p.count("SELECT count(*) AS n FROM __dbctl_migrations"), 1);
        let json = p.run(["migrate", "status", "--format", "json"]).json();
        assert_eq!(json["applied"], 2);
        assert_eq!(json["migrations"][1]["state"], "applied");
        assert!(
            json["migrations"][1]["applied_at"].is_string(),
            "from run_on"
        );
        p.run(["migrate", "up"]).success();
        assert_eq!(p.applied().len(), 3);
        // Reverting goes newest application first, across both tools' rows.
        let run = p.run(["migrate", "down", "--step", "2", "--format", "json"]);
        run.success();
        let json = run.json();
        assert_eq!(json["steps"][0]["version"], "20240103000000");
        assert_eq!(json["steps"][1]["version"], "20240102000000");
        assert_eq!(p.applied(), ["20240101000000"]);
    }
);

both_backends!(
    an_empty_or_placeholder_up_sql_is_refused_before_anything_runs,
    |p: Project| {
        p.migration_folder(
            "2024-01-01-000001_first",
            "CREATE TABLE first (id INTEGER);",
            Some("DROP TABLE first;"),
        );
        p.migration_folder("2024-01-01-000002_unfinished", "", Some("SELECT 1;"));
        p.init();
        p.run(["migrate", "up"])
            .code(2)
            .stderr_has("refusing to apply an unwritten migration")
            .stderr_has("2024-01-01-000002_unfinished/up.sql is an empty file");
        assert!(
            p.applied().is_empty(),
            "the run stopped before applying anything"
        );
        assert!(!p.has_table("first"));
        // `--to` the migration before it still works.
        p.run(["migrate", "up", "--to", "20240101000001"]).success();
        assert!(p.has_table("first"));
        // A byte-order mark alone is no content either.
        p.file("migrations/2024-01-01-000002_unfinished/up.sql", "\u{feff}");
        p.run(["migrate", "up"])
            .code(2)
            .stderr_has("is an empty file");
        // What `dbctl revision` writes when no SQL is given is an unfinished revision too.
        p.run(["revision", "later"]).success();
        std::fs::remove_dir_all(p.path().join("migrations/2024-01-01-000002_unfinished")).unwrap();
        p.run(["migrate", "up"])
            .code(2)
            .stderr_has("still holds only the placeholder `dbctl revision` wrote");
        assert_eq!(p.applied(), ["20240101000001"]);
    }
);

both_backends!(
    a_comment_or_white_space_only_up_sql_is_applied_and_recorded,
    |p: Project| {
        // vaultwarden's SQLite folder has such migrations: the other backends needed a change,
        // SQLite needed none. diesel_cli applies them on SQLite (and fails on PostgreSQL with
        // "Received an empty query"); dbctl applies and records them on both.
        p.migration_folder(
            "2024-01-01-000001_comment_only",
            "-- Integer size in SQLite is already i64, so we don't need to do anything\n",
            None,
        );
        p.migration_folder(
            "2024-01-01-000002_white_space_only",
            "  \n\t\r\n",
            Some("-- nothing to undo either\n"),
        );
        p.migration_folder(
            "2024-01-01-000003_comments_and_semicolons",
            "/* block */ ;\n-- line\n;;\n",
            None,
        );
        p.migration_folder(
            "2024-01-01-000004_after",
            "CREATE TABLE after_them (id INTEGER);",
            Some("DROP TABLE after_them;"),
        );
        p.init();
        let run = p.run(["migrate", "up", "--format", "json"]);
        run.success();
        assert_eq!(run.json()["steps"].as_array().unwrap().len(), 4);
        assert_eq!(
            p.applied(),
            [
                "20240101000001",
                "20240101000002",
                "20240101000003",
                "20240101000004"
            ]
        );
        assert_eq!(p.count("SELECT count(*) AS n FROM __dbctl_migrations"), 4);
        assert!(p.has_table("after_them"));
        p.run(["migrate", "status", "--check"]).success();
        // A down.sql with no statement still makes the migration irreversible: reverting it would
        // silently leave whatever up.sql did.
        p.run(["migrate", "down", "--step", "2"])
            .code(2)
            .stderr_has("no down.sql");
        assert_eq!(p.applied().len(), 4);
    }
);

/// `applied_at` as dbctl shows it: RFC 3339, UTC, milliseconds.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 24
        && s.ends_with('Z')
        && b[10] == b'T'
        && b[19] == b'.'
        && s.chars()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 23) || c.is_ascii_digit())
}

/// diesel's `run_on` of `version` in dbctl's format, read straight from the database.
fn diesel_run_on(p: &Project, version: &str) -> String {
    let sql = match p.backend {
        Backend::Sqlite => format!(
            "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', run_on) AS v FROM __diesel_schema_migrations \
             WHERE version = '{version}'"
        ),
        Backend::Postgres => format!(
            "SELECT to_char(run_on AT TIME ZONE current_setting('TimeZone') AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS v FROM __diesel_schema_migrations \
             WHERE version = '{version}'"
        ),
    };
    p.strings(&sql)[0].clone().unwrap()
}

both_backends!(
    a_companion_row_older_than_diesels_row_is_ignored,
    |p: Project| stale_companion_row(p)
);

/// The same where the server's time zone is not UTC: `run_on` is written in local time, and
/// `applied_at` must still be the same instant, in UTC.
#[test]
fn a_companion_row_older_than_diesels_row_is_ignored_in_another_time_zone_postgres() {
    let Some(p) = Project::postgres() else { return };
    p.execute(&format!(
        "ALTER DATABASE \"{}\" SET timezone TO 'Asia/Kolkata'",
        p.pg_database().unwrap()
    ));
    stale_companion_row(p);
}

fn stale_companion_row(p: Project) {
    {
        three(&p);
        p.init();
        p.run(["migrate", "up"]).success();
        // dbctl's own rows: applied_at is the instant of diesel's run_on, in UTC.
        let json = p.run(["migrate", "status", "--format", "json"]).json();
        assert_eq!(
            json["migrations"][0]["applied_at"].as_str().unwrap(),
            diesel_run_on(&p, "20240101000000")
        );
        // What `diesel migration revert` does, through diesel's own harness: down.sql, then
        // delete its own row only (dbctl's companion row stays).
        p.run(["migrate", "down", "--engine", "diesel"]).success();
        assert!(!p.has_table("c"));
        // The user edits up.sql, then `diesel migration run` (diesel's harness again): up.sql,
        // and a fresh row whose run_on is CURRENT_TIMESTAMP (whole seconds on SQLite; here
        // maybe in the same second as dbctl's).
        p.file(
            "migrations/2024-01-03-000000_create_c/up.sql",
            "CREATE TABLE c (id INTEGER PRIMARY KEY, added TEXT);\n",
        );
        p.run(["migrate", "up", "--engine", "diesel"]).success();
        // The edited up.sql ran (`added` exists).
        assert_eq!(p.count("SELECT count(added) AS n FROM c"), 0);
        assert_eq!(
            p.count("SELECT count(*) AS n FROM __dbctl_migrations"),
            3,
            "the stale companion row is there"
        );

        p.run(["migrate", "status", "--check"]).success();
        p.run(["migrate", "up"])
            .success()
            .stdout_has("Nothing to apply");
        let json = p.run(["migrate", "status", "--format", "json"]).json();
        let rows = json["migrations"].as_array().unwrap();
        assert_eq!(rows[2]["state"], "applied");
        assert!(
            rows[2]["duration_ms"].is_null(),
            "the stale duration is not shown"
        );
        for r in rows {
            let at = r["applied_at"].as_str().unwrap();
            assert!(is_rfc3339_utc(at), "applied_at {at:?} is not RFC 3339 UTC");
        }
        assert_eq!(
            rows[2]["applied_at"].as_str().unwrap(),
            diesel_run_on(&p, "20240103000000"),
            "diesel's time of the new application"
        );
        // dbctl's own rows keep their checksums: a change to a's up.sql is still caught.
        p.file(
            "migrations/2024-01-01-000000_create_a/up.sql",
            "CREATE TABLE a (id INTEGER PRIMARY KEY, other TEXT);\n",
        );
        p.run(["migrate", "status", "--check"]).code(4);
        p.run(["migrate", "up"])
            .code(4)
            .stderr_has("20240101000000_create_a");
        // Reverting goes through diesel's row as through dbctl's.
        p.run(["migrate", "down"]).success();
        assert!(!p.has_table("c"));
        p.run(["migrate", "up", "--allow-modified"]).success();
        assert!(p.has_table("c"));
    }
}
