//! A migration's (and a seed's) transaction belongs to dbctl: statements that would end it are
//! refused before anything runs, and after a failure dbctl looks at the transaction before saying
//! what became of it (a trigger's `RAISE(ROLLBACK)` and a full disk make SQLite end it itself).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::both_backends;
use crate::support::{Backend, Project};

/// Statements that end, nest or cannot run in dbctl's transaction, as people write them.
fn controls(backend: Backend) -> Vec<&'static str> {
    let mut v = vec![
        "COMMIT",
        "commit",
        "BEGIN",
        "Begin Transaction",
        "ROLLBACK",
        "END",
        "SAVEPOINT s",
        "RELEASE s",
        "rollback to savepoint s",
        "/* a comment first */ COMMIT",
        "VACUUM",
    ];
    match backend {
        Backend::Sqlite => v.extend([
            "BEGIN IMMEDIATE",
            "END TRANSACTION",
            "PRAGMA journal_mode = WAL",
        ]),
        Backend::Postgres => v.extend([
            "COMMIT AND CHAIN",
            "START TRANSACTION",
            "ABORT",
            "END WORK",
            "PREPARE TRANSACTION 'x'",
        ]),
    }
    v
}

both_backends!(
    transaction_control_in_a_migration_is_refused_before_anything_runs,
    |p: Project| {
        p.migration_folder(
            "2024-01-01-000001_first",
            "CREATE TABLE first (id INTEGER);",
            Some("DROP TABLE first;"),
        );
        p.init();
        for control in controls(p.backend) {
            p.migration_folder(
                "2024-01-01-000002_second",
                &format!(
                    "CREATE TABLE v (id INTEGER);\n\n-- then:\n{control};\nCREATE TABLE w (id INTEGER);\n"
                ),
                Some("DROP TABLE w;\nDROP TABLE v;"),
            );
            let run = p.run(["migrate", "up"]);
            run.code(2)
                .stderr_has("2024-01-01-000002_second/up.sql: line 4: `")
                .stderr_has("run_in_transaction = false")
                .stderr_has("no migration was applied");
            assert!(
                p.applied().is_empty(),
                "{control}: nothing was applied, not even the first migration"
            );
            assert!(!p.has_table("first") && !p.has_table("v") && !p.has_table("w"));
            // A dry run says the same.
            p.run(["migrate", "up", "--dry-run"]).code(2);
        }

        // down.sql is checked too, before anything is reverted.
        p.migration_folder(
            "2024-01-01-000002_second",
            "CREATE TABLE v (id INTEGER);",
            Some("DROP TABLE v;\nCOMMIT;"),
        );
        p.run(["migrate", "up"]).success();
        p.run(["migrate", "down", "--all"])
            .code(2)
            .stderr_has("down.sql: line 2: `COMMIT`");
        assert_eq!(p.applied().len(), 2);
        assert!(p.has_table("v") && p.has_table("first"));

        // The way out: a migration that manages its own transactions says so.
        p.migration_folder(
            "2024-01-01-000003_own_transactions",
            "BEGIN;\nCREATE TABLE own (id INTEGER);\nCOMMIT;\n",
            None,
        );
        p.file(
            "migrations/2024-01-01-000003_own_transactions/metadata.toml",
            "run_in_transaction = false\n",
        );
        p.run(["migrate", "up"]).success();
        assert!(p.has_table("own"));
        assert_eq!(p.applied().len(), 3);
    }
);

#[test]
fn begin_in_bodies_and_strings_is_not_transaction_control_sqlite() {
    let p = Project::sqlite();
    p.migration_folder(
        "2024-01-01-000001_trigger",
        "CREATE TABLE t (id INTEGER, \"begin\" TEXT);\n\
         CREATE TRIGGER tr AFTER UPDATE OF begin ON t BEGIN\n  UPDATE t SET begin = 'COMMIT;' WHERE id = NEW.id;\nEND;\n\
         CREATE TABLE after_trigger (note TEXT DEFAULT 'BEGIN; ROLLBACK;');\n",
        None,
    );
    p.run(["init"]).success();
    assert!(p.has_table("after_trigger"));
}

#[test]
fn begin_in_bodies_and_strings_is_not_transaction_control_postgres() {
    let Some(p) = Project::postgres() else { return };
    p.migration_folder(
        "2024-01-01-000001_bodies",
        "DO $$ BEGIN RAISE NOTICE 'COMMIT;'; END $$;\n\
         CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n\
         CREATE TABLE after_bodies (note TEXT DEFAULT E'BEGIN; \\' ROLLBACK;');\n",
        None,
    );
    p.run(["init"]).success();
    assert!(p.has_table("after_bodies"));
}

both_backends!(
    transaction_control_in_a_seed_sql_file_is_refused,
    |p: Project| {
        p.migration_folder(
            "2024-01-01-000001_t",
            "CREATE TABLE t (id INTEGER PRIMARY KEY);",
            None,
        );
        p.run(["init"]).success();
        p.file("seeds/010_t.csv", "id\n1\n2\n");
        p.file(
            "seeds/020_more.sql",
            "INSERT INTO t (id) VALUES (3);\nCOMMIT;\nINSERT INTO t (id) VALUES (4);\n",
        );
        p.run(["seed"])
            .code(2)
            .stderr_has("020_more.sql: line 2: `COMMIT`");
        assert_eq!(
            p.count("SELECT count(*) AS n FROM t"),
            0,
            "the CSV rows loaded before went too"
        );
    }
);

/// SQLite: a trigger's `RAISE(ROLLBACK)` ends the migration's transaction inside SQLite. dbctl must
/// notice that (and not send its own ROLLBACK into nothing), and say what happened.
#[test]
fn a_trigger_that_rolls_back_is_reported_as_sqlite_did_it() {
    let p = Project::sqlite();
    p.migration_folder(
        "2024-01-01-000001_guard",
        "CREATE TABLE t (id INTEGER);\n\
         CREATE TRIGGER no_twos BEFORE INSERT ON t WHEN NEW.id = 2 BEGIN\n  SELECT RAISE(ROLLBACK, 'no twos');\nEND;\n",
        None,
    );
    p.migration_folder(
        "2024-01-01-000002_insert",
        "CREATE TABLE m2 (id INTEGER);\nINSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2);\nCREATE TABLE m2b (id INTEGER);\n",
        None,
    );
    p.init();
    let run = p.run(["migrate", "up"]);
    run.code(1)
        .stderr_has("20240101000002_insert failed at up.sql line 3")
        .stderr_has("SQLite rolled back the transaction itself")
        .stderr_has("not recorded")
        .stderr_has("no twos");
    assert!(
        !run.stderr.contains("it was rolled back"),
        "dbctl did not roll it back: {}",
        run.stderr
    );
    assert_eq!(p.applied(), ["20240101000001"]);
    assert!(!p.has_table("m2") && !p.has_table("m2b"));
    assert_eq!(p.count("SELECT count(*) AS n FROM t"), 0);
    assert_eq!(p.count("SELECT count(*) AS n FROM __dbctl_migrations"), 1);
}

/// PostgreSQL: a procedure that commits, called from a migration. PostgreSQL refuses the COMMIT
/// inside dbctl's transaction block; dbctl verifies the block is still open before rolling back.
#[test]
fn a_procedure_that_commits_is_rolled_back_postgres() {
    let Some(p) = Project::postgres() else { return };
    p.migration_folder(
        "2024-01-01-000001_proc",
        "CREATE TABLE t (id INTEGER);\n\
         CREATE PROCEDURE sneaky() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO t VALUES (1); COMMIT; END $$;\n",
        None,
    );
    p.migration_folder(
        "2024-01-01-000002_call",
        "CREATE TABLE m2 (id INTEGER);\nCALL sneaky();\n",
        None,
    );
    p.init();
    p.run(["migrate", "up"])
        .code(1)
        .stderr_has("up.sql line 2")
        .stderr_has("it was rolled back")
        .stderr_has("invalid transaction termination");
    assert_eq!(p.applied(), ["20240101000001"]);
    assert!(!p.has_table("m2"));
    assert_eq!(p.count("SELECT count(*)::bigint AS n FROM t"), 0);
}

/// A small tmpfs, unmounted (and its folder removed) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(under: &Path, size: &str) -> Option<Tmpfs> {
        let dir = under.join("small_disk");
        std::fs::create_dir_all(&dir).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .ok()?;
        if out.status.success() {
            Some(Tmpfs(dir))
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "skipping the full-disk test: cannot mount a tmpfs ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// SQLite on a full disk: SQLITE_FULL in the middle of a migration. Whatever SQLite did with the
/// transaction, dbctl reports what it verified, the migration is not recorded, its changes are
/// gone, and the database is intact.
#[test]
fn a_full_disk_during_a_migration_is_reported_truthfully_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(disk) = Tmpfs::mount(dir.path(), "600k") else {
        return;
    };
    let mut p = Project::sqlite();
    let url = disk.0.join("full.db").display().to_string();
    p.env("DATABASE_URL", &url);
    p.migration_folder(
        "2024-01-01-000001_small",
        "CREATE TABLE small (id INTEGER);",
        None,
    );
    p.migration_folder(
        "2024-01-01-000002_big",
        "CREATE TABLE big (b BLOB);\n\
         INSERT INTO big SELECT randomblob(4096) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) SELECT i FROM n);\n",
        None,
    );
    let first = p.run(["init"]);
    first.code(1).stderr_has("20240101000002_big");
    assert!(
        first.stderr.contains("it was rolled back")
            || first
                .stderr
                .contains("SQLite rolled back the transaction itself"),
        "says what it verified: {}",
        first.stderr
    );
    let run = p.run(["migrate", "status", "--format", "json"]);
    run.success();
    let json = run.json();
    assert_eq!(json["applied"], 1, "{json}");
    assert_eq!(json["migrations"][1]["state"], "pending");
    let check = Command::new("sqlite3")
        .arg(disk.0.join("full.db"))
        .arg("PRAGMA integrity_check; SELECT count(*) FROM sqlite_master WHERE name = 'big';")
        .output();
    if let Ok(out) = check {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n0\n");
    }
    drop(p);
    drop(disk);
}

// Words that look like a body's start (`begin` as a column name, `begin atomic` as a column and
// its alias) must not glue the statements after them into one, hiding a COMMIT from the check.
both_backends!(a_column_named_begin_does_not_hide_a_commit, |p: Project| {
    let up = match p.backend {
        Backend::Sqlite => {
            "CREATE TABLE t (id INTEGER, begin TEXT);\n\
                 CREATE TRIGGER tr AFTER UPDATE OF begin ON t BEGIN SELECT 1; END;\n\
                 COMMIT;\n\
                 CREATE TABLE after_commit (id INTEGER);\n"
        }
        Backend::Postgres => {
            "CREATE TABLE t (id INTEGER, begin TEXT);\n\
                 SELECT begin atomic FROM t;\n\
                 COMMIT;\n\
                 CREATE TABLE after_commit (id INTEGER);\n"
        }
    };
    p.migration_folder("2024-01-01-000001_tricky", up, None);
    p.run(["init"])
        .code(2)
        .stderr_has("up.sql: line 3: `COMMIT`");
    assert!(!p.has_table("t") && !p.has_table("after_commit"));
});
