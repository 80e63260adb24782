//! `migrate up/down/redo --engine diesel`: dbctl's migrations run by diesel_migrations' own
//! `MigrationHarness`, on both backends, taking turns with dbctl's engine on one database. Each
//! tool must see the other's bookkeeping as applied; a failure through the harness is one error
//! line with the documented exit code and leaves a transactional migration's database unchanged.

use crate::both_backends;
use crate::support::{Backend, Project};

fn three(p: &Project) {
    for (i, t) in ["a", "b", "c"].iter().enumerate() {
        p.migration_folder(
            &format!("2024-01-0{}-000000_create_{t}", i + 1),
            &format!("CREATE TABLE {t} (\n  id INTEGER PRIMARY KEY\n);\n"),
            Some(&format!("DROP TABLE {t};")),
        );
    }
}

fn init(p: &Project) {
    p.run(["init", "--no-migrate"]).success();
}

fn companions(p: &Project) -> i64 {
    p.count("SELECT count(*) AS n FROM __dbctl_migrations")
}

/// The lines of stderr that start an error (the cause follows on an indented line).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

both_backends!(
    diesels_harness_and_dbctls_engine_take_turns,
    |p: Project| {
        three(&p);
        init(&p);
        // diesel's harness applies the first: its own row, no companion row.
        let run = p.run([
            "migrate", "up", "--engine", "diesel", "--step", "1", "--format", "json",
        ]);
        run.success();
        let json = run.json();
        assert_eq!(json["engine"], "diesel");
        assert_eq!(json["command"], "up");
        let steps = json["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0]["version"], "20240101000000");
        assert_eq!(steps[0]["name"], "create_a");
        assert_eq!(steps[0]["transaction"], true);
        assert!(steps[0]["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(p.applied(), ["20240101000000"]);
        assert_eq!(
            companions(&p),
            0,
            "diesel's harness writes only its own row"
        );
        assert!(p.has_table("a"));

        // dbctl sees diesel's row as applied: it applies only the other two.
        let json = p.run(["migrate", "up", "--format", "json"]).json();
        assert_eq!(json["engine"], "dbctl");
        let steps = json["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["version"], "20240102000000");
        p.run(["migrate", "status", "--check"]).success();
        assert_eq!(companions(&p), 2);

        // diesel's harness sees dbctl's rows as applied: nothing pending, and it reverts the
        // newest version, which dbctl applied.
        p.run(["migrate", "up", "--engine", "diesel"])
            .success()
            .stdout_has("Nothing to apply");
        p.run(["migrate", "down", "--engine", "diesel"])
            .success()
            .stdout_has("Reverted 1 migration with diesel_migrations' harness")
            .stdout_has("20240103000000_create_c");
        assert!(!p.has_table("c"));
        assert_eq!(p.applied(), ["20240101000000", "20240102000000"]);
        let status = p.run(["migrate", "status", "--format", "json"]).json();
        assert_eq!(status["pending"], 1);
        assert_eq!(status["migrations"][2]["state"], "pending");

        // And applies it again; dbctl then sees all three applied, none modified.
        p.run(["migrate", "up", "--engine", "diesel"])
            .success()
            .stdout_has("Applied 1 migration with diesel_migrations' harness");
        p.run(["migrate", "status", "--check"]).success();

        // redo through the harness: every migration reverted, newest version first, then applied.
        let json = p
            .run([
                "migrate", "redo", "--engine", "diesel", "--all", "--format", "json",
            ])
            .json();
        let order: Vec<(String, String)> = json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["direction"].as_str().unwrap().to_string(),
                    s["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = [
            ("down", "20240103000000"),
            ("down", "20240102000000"),
            ("down", "20240101000000"),
            ("up", "20240101000000"),
            ("up", "20240102000000"),
            ("up", "20240103000000"),
        ]
        .iter()
        .map(|(d, v)| (d.to_string(), v.to_string()))
        .collect();
        assert_eq!(order, expected);
        assert_eq!(p.applied().len(), 3);

        // dbctl reverts what diesel's harness applied, and the harness reverts the rest.
        p.run(["migrate", "down", "--step", "1"]).success();
        assert!(!p.has_table("c"));
        p.run([
            "migrate",
            "down",
            "--engine",
            "diesel",
            "--to",
            "20240101000000",
        ])
        .success();
        assert_eq!(p.applied(), ["20240101000000"]);
        p.run(["migrate", "down", "--engine", "diesel", "--all"])
            .success();
        assert!(p.applied().is_empty());
        assert!(!p.has_table("a") && !p.has_table("b"));
        p.run(["migrate", "down", "--engine", "diesel"])
            .success()
            .stdout_has("Nothing to revert");
    }
);

both_backends!(
    a_failing_migration_through_diesels_harness_changes_nothing,
    |p: Project| {
        p.migration_folder(
            "2024-01-01-000000_good",
            "CREATE TABLE good (id INTEGER);",
            Some("DROP TABLE good;"),
        );
        p.migration_folder(
            "2024-01-02-000000_bad",
            "CREATE TABLE half (id INTEGER);\nCREATE TABLEX oops (id INTEGER);\n",
            Some("DROP TABLE half;"),
        );
        init(&p);
        let run = p.run(["migrate", "up", "--engine", "diesel"]);
        run.code(1)
            .stderr_has(
                "applying migration 20240102000000_bad with diesel_migrations' harness failed",
            )
            .stderr_has("rolled its transaction back; the migrations before it stay applied")
            .stderr_has("TABLEX");
        assert_eq!(error_lines(&run.stderr).len(), 1, "{}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        if p.backend == Backend::Postgres {
            // PostgreSQL's error position, in the file the harness sent.
            run.stderr_has("failed at up.sql line 2, column 8: `CREATE TABLEX oops (id INTEGER);`");
        }
        // The migration before it stays applied; the failing one left nothing.
        assert_eq!(p.applied(), ["20240101000000"]);
        assert!(p.has_table("good"));
        assert!(!p.has_table("half"));

        // The same as one JSON document, with the same exit code.
        let run = p.run(["migrate", "up", "--engine", "diesel", "--format", "json"]);
        run.code(1);
        let json = run.json();
        assert_eq!(json["error"]["exit_code"], 1);
        assert!(json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("20240102000000_bad"));
        assert!(!p.has_table("half"));
        assert_eq!(p.applied(), ["20240101000000"]);
    }
);

// Without a transaction diesel sends up.sql as one batch: on PostgreSQL that one query is one
// implicit transaction (nothing stays); on SQLite the statements before the failing one stay.
// Either way the migration is not recorded, and the message says which.
both_backends!(
    a_failing_migration_without_a_transaction_through_diesels_harness,
    |p: Project| {
        p.migration_folder(
            "2024-01-01-000000_loose",
            "CREATE TABLE first_half (id INTEGER);\nCREATE TABLEX oops (id INTEGER);\n",
            None,
        );
        p.file(
            "migrations/2024-01-01-000000_loose/metadata.toml",
            "run_in_transaction = false\n",
        );
        init(&p);
        let run = p.run(["migrate", "up", "--engine", "diesel"]);
        run.code(1)
            .stderr_has("applying migration 20240101000000_loose with diesel_migrations' harness")
            .stderr_has("it ran without a transaction (run_in_transaction = false)");
        assert_eq!(error_lines(&run.stderr).len(), 1, "{}", run.stderr);
        assert!(p.applied().is_empty());
        match p.backend {
            Backend::Postgres => assert!(!p.has_table("first_half")),
            Backend::Sqlite => {
                run.stderr_has("the statements before the failing one stay");
                assert!(p.has_table("first_half"));
            }
        }
    }
);

both_backends!(
    what_diesels_harness_cannot_do_is_refused_before_anything_runs,
    |p: Project| {
        three(&p);
        init(&p);
        for flag in ["--dry-run", "--strict", "--allow-modified"] {
            p.run(["migrate", "up", "--engine", "diesel", flag])
                .code(2)
                .stderr_has(&format!("{flag} works only with dbctl's engine"));
        }
        p.run(["migrate", "up", "--engine", "harness"]).code(2);
        if p.backend == Backend::Postgres {
            // Through a transaction-pooling proxy dbctl's lock is a lease that each migration's
            // transaction must check, and the harness opens those transactions itself.
            let mut pooled = p.command();
            pooled
                .env("DB_PGBOUNCER", "true")
                .args(["migrate", "up", "--engine", "diesel"]);
            crate::support::Run::from(pooled.output().unwrap())
                .code(2)
                .stderr_has("--engine diesel cannot run through a transaction-pooling proxy");
        }
        assert!(p.applied().is_empty());
        assert!(!p.has_table("a"));

        // dbctl's reader stays the authority on the folder: an unwritten up.sql is refused
        // before the harness runs anything.
        p.migration_folder("2024-01-04-000000_empty", "", None);
        p.run(["migrate", "up", "--engine", "diesel"])
            .code(2)
            .stderr_has("refusing to apply an unwritten migration");
        assert!(p.applied().is_empty());
        std::fs::remove_dir_all(p.path().join("migrations/2024-01-04-000000_empty")).unwrap();

        // A migration to revert without a down.sql: nothing is reverted.
        p.migration_folder(
            "2024-01-04-000000_one_way",
            "CREATE TABLE d (id INTEGER);",
            None,
        );
        p.run(["migrate", "up", "--engine", "diesel"]).success();
        assert_eq!(p.applied().len(), 4);
        p.run(["migrate", "down", "--engine", "diesel", "--step", "2"])
            .code(2)
            .stderr_has("cannot revert: 20240104000000_one_way has no down.sql");
        assert_eq!(p.applied().len(), 4);
        assert!(p.has_table("c") && p.has_table("d"));
        p.run([
            "migrate",
            "down",
            "--engine",
            "diesel",
            "--to",
            "20240109000000",
        ])
        .code(2)
        .stderr_has("--to 20240109000000: that version is not applied");
    }
);

// A migration that holds only comments is applied (and recorded) through the harness on both
// backends, as dbctl's engine does: libpq would call it an empty query.
both_backends!(
    a_comment_only_migration_is_recorded_through_diesels_harness,
    |p: Project| {
        p.migration_folder(
            "2024-01-01-000000_nothing_here",
            "-- this backend needs no change\n",
            Some("-- nor here\nSELECT 1;\n"),
        );
        init(&p);
        p.run(["migrate", "up", "--engine", "diesel"]).success();
        assert_eq!(p.applied(), ["20240101000000"]);
        p.run(["migrate", "down", "--engine", "diesel"]).success();
        assert!(p.applied().is_empty());
    }
);

// The harness has no lock hook: dbctl takes its run lock before calling it, so a run with
// `--engine diesel` waits for another run like any other.
both_backends!(diesels_harness_runs_under_dbctls_run_lock, |p: Project| {
    three(&p);
    init(&p);
    match p.backend {
        Backend::Postgres => {
            let mut holder = p.connect();
            holder.execute("SELECT pg_advisory_lock(7233453303196903783)");
            p.run([
                "migrate",
                "up",
                "--engine",
                "diesel",
                "--lock-timeout",
                "0.5",
            ])
            .code(1)
            .stderr_has("another migration run holds the lock");
            drop(holder);
        }
        Backend::Sqlite => {
            let file = std::fs::File::open(p.path().join("test.db")).unwrap();
            file.lock().unwrap();
            p.run([
                "migrate",
                "up",
                "--engine",
                "diesel",
                "--lock-timeout",
                "0.5",
            ])
            .code(1)
            .stderr_has("another migration run holds the lock");
            drop(file);
        }
    }
    assert!(p.applied().is_empty());
    p.run(["migrate", "up", "--engine", "diesel"]).success();
    assert_eq!(p.applied().len(), 3);
});

// Asking diesel's harness anything creates its table: a run that is refused, or finds nothing to
// do, on a database without the table leaves it without one.
both_backends!(
    a_refused_run_through_diesels_harness_creates_no_table,
    |p: Project| {
        init(&p);
        p.execute("DROP TABLE __diesel_schema_migrations");
        p.migration_folder("2024-01-01-000000_empty", "", None);
        p.run(["migrate", "up", "--engine", "diesel"])
            .code(2)
            .stderr_has("refusing to apply an unwritten migration");
        p.run(["migrate", "down", "--engine", "diesel"])
            .success()
            .stdout_has("Nothing to revert");
        assert!(!p.has_table("__diesel_schema_migrations"));
        // With something to do, the harness creates its table, and the report says so.
        p.file(
            "migrations/2024-01-01-000000_empty/up.sql",
            "CREATE TABLE e (id INTEGER);",
        );
        let json = p
            .run(["migrate", "up", "--engine", "diesel", "--format", "json"])
            .json();
        assert_eq!(json["bookkeeping_created"], true);
        assert_eq!(p.applied(), ["20240101000000"]);
    }
);

// The harness applies a migration older than an applied one as any other; dbctl warns, as its
// own engine does.
both_backends!(
    an_out_of_order_migration_through_diesels_harness_is_warned_about,
    |p: Project| {
        p.migration_folder(
            "2024-01-03-000000_late",
            "CREATE TABLE late (id INTEGER);",
            None,
        );
        init(&p);
        p.run(["migrate", "up", "--engine", "diesel"]).success();
        p.migration_folder(
            "2024-01-02-000000_merged",
            "CREATE TABLE merged (id INTEGER);",
            None,
        );
        let run = p.run(["migrate", "up", "--engine", "diesel", "--format", "json"]);
        run.success();
        let json = run.json();
        assert_eq!(json["steps"][0]["version"], "20240102000000");
        assert!(
            json["warnings"][0]
                .as_str()
                .unwrap()
                .contains("out of order: 20240102000000_merged is older"),
            "{json}"
        );
        assert_eq!(p.applied(), ["20240102000000", "20240103000000"]);
    }
);
