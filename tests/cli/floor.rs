//! Migrations at the floor (issue 12): on PostgreSQL each transactional migration travels as one
//! query, and a failure still names the exact line and column, with the server's DETAIL and HINT;
//! what the one-query form could get wrong (a file that swallows what follows it, values written
//! without binds, a transaction ended inside the query, deferred constraints) is tried here.

use crate::both_backends;
use crate::support::Project;

fn companions(p: &Project) -> i64 {
    p.count("SELECT count(*) AS n FROM __dbctl_migrations")
}

const FIRST: &str = "2024-01-01-000000_first";

fn first(p: &Project) {
    p.migration_folder(FIRST, "CREATE TABLE first_t (id INTEGER);\n", None);
}

/// The statement starts on line 6; the error is on line 13 (inside the function body), column 14.
const BODY_TYPO: &str = "-- line 1: items and their total
CREATE TABLE items (id INTEGER PRIMARY KEY, price INTEGER NOT NULL, quantity INTEGER NOT NULL);

-- line 4: the total, as a function

CREATE FUNCTION items_total()
RETURNS BIGINT
LANGUAGE sql
STABLE
AS $body$
  SELECT sum(
           price
           * quantiy)
    FROM items
$body$;
";

#[test]
fn postgres_names_the_exact_failing_line_and_column_with_the_hint() {
    let Some(p) = Project::postgres() else {
        return;
    };
    first(&p);
    p.migration_folder("2024-01-02-000000_total", BODY_TYPO, None);
    let run = p.run(["migrate", "up"]);
    run.code(1)
        .stderr_has("20240102000000_total failed at up.sql line 13, column 14")
        .stderr_has("* quantiy)")
        .stderr_has("statement 2 of 2, from line 6")
        .stderr_has("column \"quantiy\" does not exist")
        .stderr_has("HINT: Perhaps you meant to reference the column \"items.quantity\"")
        .stderr_has("rolled back");
    assert_eq!(p.applied(), ["20240101000000"]);
    assert!(!p.has_table("items"), "rolled back whole");
    // JSON carries the same.
    let run = p.run(["migrate", "up", "--format", "json"]);
    run.code(1);
    let json = run.json();
    let msg = json["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("line 13, column 14"), "{msg}");
}

#[test]
fn postgres_a_failure_without_a_position_names_its_statement_and_the_detail() {
    let Some(p) = Project::postgres() else {
        return;
    };
    first(&p);
    p.migration_folder(
        "2024-01-02-000000_dup",
        "CREATE TABLE d1 (id INTEGER PRIMARY KEY);\n\
         INSERT INTO d1 VALUES (1);\n\n\
         -- the same key again\n\
         INSERT INTO d1\n  VALUES (1);\n\
         CREATE TABLE d2 (id INTEGER);\n",
        None,
    );
    p.migration_folder(
        "2024-01-03-000000_after",
        "CREATE TABLE after_t (id INTEGER);",
        None,
    );
    p.run(["migrate", "up"])
        .code(1)
        .stderr_has(
            "20240102000000_dup failed at up.sql line 5 (statement 3 of 4: `INSERT INTO d1 ...`)",
        )
        .stderr_has("duplicate key value violates unique constraint \"d1_pkey\"")
        .stderr_has("DETAIL: Key (id)=(1) already exists.")
        .stderr_has("it was rolled back, the migrations before it stay applied");
    assert_eq!(p.applied(), ["20240101000000"]);
    assert!(!p.has_table("d1") && !p.has_table("d2") && !p.has_table("after_t"));
    assert_eq!(companions(&p), 1);
}

/// A DO block raising with DETAIL and HINT: no position; the block is found and both are printed.
#[test]
fn postgres_a_do_block_failure_prints_detail_and_hint() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.migration_folder(
        "2024-01-01-000000_guard",
        "CREATE TABLE g1 (id INTEGER);\n\
         DO $$\nBEGIN\n  RAISE EXCEPTION 'not yet' USING DETAIL = 'the back-fill is missing', \
         HINT = 'run the back-fill first';\nEND\n$$;\nCREATE TABLE g2 (id INTEGER);\n",
        None,
    );
    p.run(["migrate", "up"])
        .code(1)
        .stderr_has("failed at up.sql line 2 (statement 2 of 3: `DO $$ ...`)")
        .stderr_has("not yet; DETAIL: the back-fill is missing; HINT: run the back-fill first");
    assert!(p.applied().is_empty());
    assert!(!p.has_table("g1"));
}

/// A deferred constraint that fails: checked inside the migration's transaction, after its
/// statements, and reported as such (not as a failed COMMIT of unknown outcome).
#[test]
fn postgres_a_deferred_constraint_failure_is_rolled_back_and_said() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.migration_folder(
        "2024-01-01-000000_deferred",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);\n\
         CREATE TABLE child (id INTEGER, parent_id INTEGER REFERENCES parent (id) \
         DEFERRABLE INITIALLY DEFERRED);\n\
         INSERT INTO child VALUES (1, 42);\n",
        None,
    );
    p.run(["migrate", "up"])
        .code(1)
        .stderr_has(
            "failed after all 3 statements of up.sql ran: checking its deferred constraints",
        )
        .stderr_has("violates foreign key constraint")
        .stderr_has("DETAIL: Key (parent_id)=(42) is not present in table \"parent\".")
        .stderr_has("it was rolled back");
    assert!(p.applied().is_empty());
    assert!(!p.has_table("parent") && !p.has_table("child"));
}

/// One query per migration: `DB_ECHO` shows every query dbctl sends; the migration's statements,
/// its bookkeeping and its COMMIT are one of them.
#[test]
fn postgres_sends_each_migration_as_one_query() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.migration_folder(
        "2024-01-01-000000_three",
        "CREATE TABLE one_q_a (id INTEGER);\nCREATE TABLE one_q_b (id INTEGER);\n\
         CREATE TABLE one_q_c (id INTEGER);\n",
        None,
    );
    p.init();
    p.env("DB_ECHO", "1");
    let run = p.run(["migrate", "up"]);
    run.success();
    let queries: Vec<&str> = run.stderr.split("[sql] ").skip(1).collect();
    let carrying: Vec<&&str> = queries.iter().filter(|q| q.contains("one_q_")).collect();
    assert_eq!(carrying.len(), 1, "{}", run.stderr);
    let q = carrying[0];
    for part in [
        "BEGIN",
        "one_q_a",
        "one_q_c",
        "__diesel_schema_migrations",
        "__dbctl_migrations",
        "COMMIT",
    ] {
        assert!(q.contains(part), "{part} missing from {q}");
    }
    assert!(
        !queries.iter().any(|q| q.trim() == "COMMIT"),
        "{}",
        run.stderr
    );
    assert_eq!(p.applied(), ["20240101000000"]);
    assert_eq!(companions(&p), 1);
}

/// A file that ends inside a quote, a comment or a dollar-quoted body must not swallow the
/// bookkeeping and COMMIT that follow it in the query: it fails, and nothing is recorded.
#[test]
fn postgres_a_file_ending_inside_a_quote_or_comment_is_never_glued_to_the_bookkeeping() {
    let Some(p) = Project::postgres() else {
        return;
    };
    for (i, tail) in [
        "SELECT 'never closed\n",
        "SELECT 1; /* never closed\n",
        "SELECT $x$ never closed\n",
        "SELECT \"never closed\n",
        "CREATE FUNCTION f() RETURNS INTEGER LANGUAGE sql BEGIN ATOMIC SELECT 1;\n",
    ]
    .iter()
    .enumerate()
    {
        let folder = format!("2024-01-0{}-000000_open_{i}", i + 1);
        p.migration_folder(
            &folder,
            &format!("CREATE TABLE open_t{i} (id INTEGER);\n{tail}"),
            None,
        );
        let run = p.run(["migrate", "up"]);
        run.code(1).stderr_has(&format!("_open_{i}"));
        assert!(
            !p.has_table(&format!("open_t{i}")),
            "{tail}: {}",
            run.stderr
        );
        assert!(p.applied().is_empty(), "{tail}: {}", run.stderr);
        std::fs::remove_dir_all(p.path().join("migrations").join(&folder)).unwrap();
    }
}

/// The bookkeeping values travel without binds: a name with quotes, backslashes and non-ASCII,
/// after the migration turned `standard_conforming_strings` off, is recorded as it is.
#[test]
fn postgres_a_hostile_name_is_recorded_exactly_whatever_the_migration_sets() {
    let Some(p) = Project::postgres() else {
        return;
    };
    let name = "o'neil \\' é";
    p.migration_folder(
        &format!("2024-01-01-000000_{name}"),
        "SET standard_conforming_strings = off;\nSET search_path = pg_catalog;\n\
         CREATE TABLE public.hostile_t (id INTEGER);\n",
        None,
    );
    p.run(["migrate", "up"]).success();
    assert_eq!(
        p.strings("SELECT name AS v FROM __dbctl_migrations"),
        [Some(name.to_string())]
    );
    let dur = p.count("SELECT (duration_ms >= 0)::int::bigint AS n FROM __dbctl_migrations");
    assert_eq!(dur, 1);
    p.run(["migrate", "status", "--check"]).success();
}

both_backends!(
    reverting_in_one_query_forgets_the_migration,
    |p: Project| {
        p.file(
            "migrations/2024-01-01-000000_rev/up.sql",
            "CREATE TABLE rev_a (id INTEGER);\nCREATE TABLE rev_b (id INTEGER);\n",
        );
        p.file(
            "migrations/2024-01-01-000000_rev/down.sql",
            "DROP TABLE rev_b;\nDROP TABLE rev_a;\n",
        );
        p.init();
        p.run(["migrate", "up"]).success();
        p.run(["migrate", "down"]).success();
        assert!(p.applied().is_empty());
        assert_eq!(companions(&p), 0);
        assert!(!p.has_table("rev_a"));
        p.run(["migrate", "up"]).success();
        p.run(["migrate", "redo"]).success();
        assert_eq!(p.applied(), ["20240101000000"]);
        assert_eq!(companions(&p), 1);
    }
);

/// SQLite: the run commits each migration with the journal in `truncate` mode, then puts the
/// connection back: no journal file is left, a fresh connection sees `delete`, a WAL database
/// stays in WAL, and a non-transactional migration that switches to WAL keeps its choice.
#[test]
fn sqlite_the_journal_mode_is_left_as_it_was() {
    let p = Project::sqlite();
    p.init();
    p.migration_folder(
        "2024-01-01-000000_a",
        "CREATE TABLE ja (id INTEGER);\n",
        None,
    );
    p.migration_folder(
        "2024-01-02-000000_b",
        "CREATE TABLE jb (id INTEGER);\n",
        None,
    );
    p.run(["migrate", "up"]).success();
    let journal = p.path().join("test.db-journal");
    assert!(!journal.exists(), "a journal file was left behind");
    let mode = || p.strings("SELECT journal_mode AS v FROM pragma_journal_mode");
    assert_eq!(mode(), [Some("delete".to_string())]);
    assert_eq!(p.applied().len(), 2);

    // A migration that switches to WAL (it must run outside a transaction) keeps WAL.
    p.migration_folder(
        "2024-01-03-000000_wal",
        "PRAGMA journal_mode = WAL;\nCREATE TABLE jc (id INTEGER);\n",
        None,
    );
    p.file(
        "migrations/2024-01-03-000000_wal/metadata.toml",
        "run_in_transaction = false\n",
    );
    p.migration_folder(
        "2024-01-04-000000_d",
        "CREATE TABLE jd (id INTEGER);\n",
        None,
    );
    p.run(["migrate", "up"]).success();
    assert_eq!(mode(), [Some("wal".to_string())]);
    // And a WAL database stays WAL through a later run.
    p.migration_folder(
        "2024-01-05-000000_e",
        "CREATE TABLE je (id INTEGER);\n",
        None,
    );
    p.run(["migrate", "up"]).success();
    assert_eq!(mode(), [Some("wal".to_string())]);
    assert_eq!(p.applied().len(), 5);
    assert!(!journal.exists());
}
