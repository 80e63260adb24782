//! Faults aimed at `print-schema` and `migrate --engine diesel`: hostile names compared with
//! diesel_cli's own output, `file` paths that cannot be written, schema files that differ from
//! diesel's only in bytes a line-by-line comparison misses, `--locked-schema` under
//! `--format json`, a redo through diesel's harness that fails half way, and passwords in the
//! errors of both commands.

use crate::both_backends;
use crate::diesel_cli::{diesel, diesel_cli};
use crate::support::{Backend, Project, Run};

/// `diesel print-schema ARGS` in the project folder against the project's database.
fn diesel_print_schema(bin: &std::path::Path, p: &Project, args: &[&str]) -> Run {
    let out = std::process::Command::new(bin)
        .current_dir(p.path())
        .args(args)
        .args(["--database-url", p.url()])
        .env_remove("DATABASE_URL")
        .env_remove("DIESEL_CONFIG_FILE")
        .env("RUST_LOG", "off")
        .output()
        .expect("run diesel");
    Run::from(out)
}

fn init(p: &Project) {
    p.run(["init", "--no-migrate"]).success();
}

/// Tables and columns whose Rust names need diesel's mangling: quotes, spaces, `-`, non-ASCII
/// letters, keywords, names `table!` keeps, a leading digit, names that collide once mangled,
/// a column named like its table, a raw-string-breaking `#"`, a 120-character name, and line
/// breaks (diesel indents the lines of a multi-line name inside its string literal).
const HOSTILE_SQLITE: &str = r###"
CREATE TABLE "we""ird tab" (id INTEGER PRIMARY KEY, "select" TEXT, "a b" INT, "a-b" INT,
  "é" TEXT, "ü" TEXT, "we""ird tab" TEXT);
CREATE TABLE "type" (id INTEGER PRIMARY KEY, "type" TEXT, "table" TEXT, "columns" TEXT,
  "self" INT, "_" INT, "__x" INT, "1x" INT, "r#x" INT, "crate" INT, "super" INT);
CREATE TABLE "Mixed" (id INTEGER PRIMARY KEY, "x#y""z" TEXT, "q""#""##" TEXT,
  "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij" INTEGER);
CREATE TABLE kids (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES "type"(id),
  p2 INTEGER REFERENCES "Mixed"(id));
CREATE TABLE "日本" (id INTEGER PRIMARY KEY, "列" TEXT);
CREATE TABLE x (id INTEGER PRIMARY KEY, "x" TEXT, "x_" TEXT);
CREATE TABLE "two
lines" (id INTEGER PRIMARY KEY, "new
line" TEXT, "blank

line" TEXT);
"###;

const HOSTILE_PG: &str = r##"
CREATE TYPE "My ""Mood""" AS ENUM ('a');
CREATE TYPE "select" AS ENUM ('b');
CREATE TYPE "HTTPStatus" AS ENUM ('c');
CREATE TYPE http_status AS ENUM ('d');
CREATE TYPE "日本型" AS ENUM ('e');
CREATE TABLE "we""ird tab" (id serial PRIMARY KEY, "select" "select", m "My ""Mood""",
  h "HTTPStatus", h2 http_status, j "日本型", "Id" int, arr "HTTPStatus"[]);
COMMENT ON TABLE "we""ird tab" IS 'multi
line */ comment with "quotes" and ## hashes';
COMMENT ON COLUMN "we""ird tab"."Id" IS '  leading spaces ';
CREATE TABLE "type" (id bigserial PRIMARY KEY, parent int REFERENCES "we""ird tab"(id));
CREATE SCHEMA "Other Schema";
CREATE TABLE "Other Schema"."t x" (id int PRIMARY KEY, n numeric(10,2), c char(3));
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE dom (id posint PRIMARY KEY, r int4range, x xml, l pg_lsn, ip inet);
CREATE TABLE fk2 (id int PRIMARY KEY, a int REFERENCES "type"(id), b int REFERENCES "type"(id));
CREATE SCHEMA "we""ird";
CREATE TYPE "we""ird"."k ind" AS ENUM ('x');
CREATE TABLE sql_types (id int PRIMARY KEY, k "we""ird"."k ind", k2 "select"[], "trailing " int,
  "crate::x" int);
CREATE TABLE "we""ird".t (id int PRIMARY KEY, k "we""ird"."k ind", p int REFERENCES sql_types(id));
CREATE TABLE "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabc" (id int, "Id" int,
  PRIMARY KEY (id, "Id"));
CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES sql_types(id), "user" int,
  "default" text, "Σίσυφος" text);
CREATE TYPE "ΣΊΣΥΦΟΣ_type" AS ENUM ('z');
CREATE TYPE "ABCdef_GHI123jkl" AS ENUM ('z');
CREATE TYPE "a__b--c" AS ENUM ('z');
CREATE TABLE "ΣΊΣΥΦΟΣ" (id int PRIMARY KEY, a "ΣΊΣΥΦΟΣ_type", b "ABCdef_GHI123jkl", c "a__b--c");
CREATE TABLE "two
lines" (id int PRIMARY KEY, "new
line" int, "blank

line" int);
"##;

both_backends!(
    hostile_names_print_as_diesel_cli_prints_them,
    |p: Project| {
        let Some(bin) = diesel_cli("hostile_names_print_as_diesel_cli_prints_them") else {
            return;
        };
        init(&p);
        let flag_sets: Vec<Vec<&str>> = match p.backend {
            Backend::Sqlite => {
                p.execute(HOSTILE_SQLITE);
                vec![vec![], vec!["--with-docs", "--column-sorting", "name"]]
            }
            Backend::Postgres => {
                p.execute(HOSTILE_PG);
                vec![
                    vec![],
                    vec!["--with-docs"],
                    vec!["--schema", "Other Schema"],
                    vec!["--schema", "we\"ird", "--with-docs"],
                    vec!["--with-docs", "--pg-domains-as-custom-types", "posint"],
                ]
            }
        };
        for flags in flag_sets {
            let mut args = vec!["print-schema"];
            args.extend(&flags);
            let theirs = diesel_print_schema(&bin, &p, &args);
            assert_eq!(theirs.code, 0, "diesel_cli {flags:?}: {}", theirs.stderr);
            let ours = p.run(&args);
            ours.success();
            assert_eq!(ours.stdout, theirs.stdout, "print-schema {flags:?}");
        }
    }
);

/// A `file` that is a folder, or lies under a file, is refused (exit 2) before `migrate`
/// changes anything; before, the migrations ran and the write failed after them (exit 1).
#[test]
fn a_file_that_cannot_be_written_stops_migrate_before_it_changes_anything() {
    let p = Project::sqlite();
    p.migration_folder(
        "2024-01-01-000000_a",
        "CREATE TABLE a (id INTEGER PRIMARY KEY);",
        Some("DROP TABLE a;"),
    );
    init(&p);
    std::fs::create_dir_all(p.path().join("src/schema.rs")).expect("mkdir");
    p.file("notes.txt", "a file, not a folder\n");
    for (file, says) in [
        ("src/schema.rs", "it is a folder"),
        ("notes.txt/schema.rs", "is not a folder"),
        ("notes.txt/deeper/schema.rs", "is not a folder"),
        ("", "names no file"),
        ("src/", "names no file"),
        (".", "it is a folder"),
    ] {
        p.file(
            "diesel.toml",
            format!("[print_schema]\nfile = \"{file}\"\n"),
        );
        for engine in ["dbctl", "diesel"] {
            let run = p.run(["migrate", "up", "--engine", engine]);
            run.code(2).stderr_has(file).stderr_has(says);
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
            assert!(!p.has_table("a"), "{file}: the migration ran");
            assert!(p.applied().is_empty());
        }
        p.run(["print-schema", "--write"]).code(2).stderr_has(says);
        p.run(["print-schema", "--locked-schema"])
            .code(2)
            .stderr_has(says);
    }
    // A folder nobody may create files in (root included): refused before migrating, unless
    // the file is only checked (--locked-schema writes nothing).
    if std::path::Path::new("/proc").is_dir() {
        p.file(
            "diesel.toml",
            "[print_schema]\nfile = \"/proc/schema.rs\"\n",
        );
        for engine in ["dbctl", "diesel"] {
            p.run(["migrate", "up", "--engine", engine])
                .code(2)
                .stderr_has("cannot create it");
            assert!(p.applied().is_empty());
        }
        p.run(["print-schema", "--write"])
            .code(2)
            .stderr_has("cannot create it");
        p.run(["migrate", "up", "--locked-schema"])
            .code(4)
            .stdout_has("+++ new schema");
        assert!(p.has_table("a"));
    }
}

/// diesel_cli compares the schema file byte for byte: a file with CRLF line ends, or without
/// its last line break, is stale, and `--write` rewrites it as diesel would.
#[test]
fn locked_schema_compares_bytes_as_diesel_cli_does() {
    let p = Project::sqlite();
    p.migration_folder(
        "2024-01-01-000000_a",
        "CREATE TABLE a (id INTEGER PRIMARY KEY);",
        Some("DROP TABLE a;"),
    );
    p.file("diesel.toml", "[print_schema]\nfile = \"src/schema.rs\"\n");
    p.run(["init"]).success();
    let path = p.path().join("src/schema.rs");
    let fresh = std::fs::read_to_string(&path).expect("schema.rs");
    assert!(fresh.ends_with("}\n"), "{fresh}");
    p.run(["print-schema", "--locked-schema"]).success();
    for (what, stale) in [
        ("CRLF line ends", fresh.replace('\n', "\r\n")),
        ("no last line break", fresh.trim_end().to_string()),
    ] {
        std::fs::write(&path, &stale).expect("write");
        p.run(["print-schema", "--locked-schema"])
            .code(4)
            .stdout_has("+++ new schema");
        p.run(["migrate", "redo", "--locked-schema"]).code(4);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), stale, "{what}");
        p.run(["print-schema", "--write"])
            .success()
            .stderr_has("wrote");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), fresh, "{what}");
    }
}

/// `migrate up --locked-schema --format json` with a stale file: stdout is one JSON document
/// (the error, exit 4), the diff on stderr; before, the diff was printed on stdout first.
#[test]
fn migrate_locked_schema_with_json_prints_one_document() {
    let p = Project::sqlite();
    p.migration_folder(
        "2024-01-01-000000_a",
        "CREATE TABLE a (id INTEGER PRIMARY KEY);",
        Some("DROP TABLE a;"),
    );
    p.file("diesel.toml", "[print_schema]\nfile = \"src/schema.rs\"\n");
    init(&p);
    for engine in ["dbctl", "diesel"] {
        p.file("src/schema.rs", "// stale\n");
        let run = p.run([
            "migrate",
            "up",
            "--locked-schema",
            "--format",
            "json",
            "--engine",
            engine,
        ]);
        run.code(4).stderr_has("+++ new schema");
        let json = run.json();
        assert_eq!(json["error"]["exit_code"], 4, "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("src/schema.rs would change"),
            "{json}"
        );
        assert_eq!(
            std::fs::read_to_string(p.path().join("src/schema.rs")).unwrap(),
            "// stale\n"
        );
        p.run(["migrate", "down", "--engine", engine]).success();
    }
}

fn three(p: &Project) {
    for (i, t) in ["a", "b", "c"].iter().enumerate() {
        p.migration_folder(
            &format!("2024-01-0{}-000000_create_{t}", i + 1),
            &format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY);\n"),
            Some(&format!("DROP TABLE {t};")),
        );
    }
}

both_backends!(
    a_redo_through_diesels_harness_that_fails_changes_nothing,
    |p: Project| {
        three(&p);
        init(&p);
        p.run(["migrate", "up", "--engine", "diesel"]).success();
        let all = ["20240101000000", "20240102000000", "20240103000000"];
        // The up.sql of b fails once its down.sql ran: diesel_cli's redo is one transaction, so
        // b and c stay applied, their tables in place.
        p.file(
            "migrations/2024-01-02-000000_create_b/up.sql",
            "CREATE TABLE b (id INTEGER PRIMARY KEY);\nINSERT INTO nowhere VALUES (1);\n",
        );
        let run = p.run(["migrate", "redo", "--engine", "diesel", "--step", "2"]);
        run.code(1)
            .stderr_has("20240102000000_create_b")
            .stderr_has("rolled back");
        assert_eq!(p.applied(), all);
        for t in ["a", "b", "c"] {
            assert!(p.has_table(t), "table {t} is gone after a failed redo");
        }
        // A down.sql that fails after another one ran: the same.
        p.file(
            "migrations/2024-01-02-000000_create_b/up.sql",
            "CREATE TABLE b (id INTEGER PRIMARY KEY);\n",
        );
        p.file(
            "migrations/2024-01-02-000000_create_b/down.sql",
            "DROP TABLE b;\nDROP TABLE nowhere;\n",
        );
        let run = p.run([
            "migrate", "redo", "--engine", "diesel", "--all", "--format", "json",
        ]);
        run.code(1);
        assert_eq!(run.json()["error"]["exit_code"], 1);
        assert_eq!(p.applied(), all);
        for t in ["a", "b", "c"] {
            assert!(p.has_table(t), "table {t} is gone after a failed redo");
        }
        // What diesel_cli leaves after the same failed redo.
        if let Some(bin) = diesel_cli("a_redo_through_diesels_harness_that_fails_changes_nothing") {
            let theirs = diesel(&bin, &p, &["migration", "redo", "--all"]);
            assert_ne!(theirs.code, 0, "{}", theirs.stderr);
            assert_eq!(p.applied(), all, "diesel_cli's redo");
            assert!(p.has_table("c"));
        }
        // A redo that works still works, as one transaction.
        p.file(
            "migrations/2024-01-02-000000_create_b/down.sql",
            "DROP TABLE b;\n",
        );
        p.run(["migrate", "redo", "--engine", "diesel", "--all"])
            .success();
        assert_eq!(p.applied(), all);
    }
);

/// A password (percent-encoded `@`) never shows in print-schema's or the harness's errors: a
/// missing database and a dead port, each one line and exit 3.
#[test]
fn print_schema_and_diesels_harness_hide_the_password() {
    let mut p = Project::sqlite();
    three(&p);
    p.file("diesel.toml", "[print_schema]\nfile = \"src/schema.rs\"\n");
    for url in [
        "postgres://postgres:s3cr%40t@127.0.0.1:5432/dbctl_no_such_database_adv",
        "postgres://postgres:s3cr%40t@127.0.0.1:1/x",
    ] {
        p.use_url(url);
        for args in [
            vec!["print-schema"],
            vec!["print-schema", "--write"],
            vec!["migrate", "up", "--engine", "diesel"],
            vec!["migrate", "redo", "--engine", "diesel", "--format", "json"],
        ] {
            let run = p.run(&args);
            run.code(3).no_secret("s3cr").no_secret("%40t");
            assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        }
    }
}

/// As diesel_cli, a redo that reverts a migration with `run_in_transaction = false` runs
/// without the redo's own transaction: `DROP INDEX CONCURRENTLY` works in it.
#[test]
fn a_redo_of_a_migration_outside_a_transaction_runs_without_one() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.migration_folder(
        "2024-01-01-000000_a",
        "CREATE TABLE a (id INT PRIMARY KEY, v INT);",
        Some("DROP TABLE a;"),
    );
    p.migration_folder(
        "2024-01-02-000000_idx",
        "CREATE INDEX CONCURRENTLY a_v ON a (v);",
        Some("DROP INDEX CONCURRENTLY a_v;"),
    );
    p.file(
        "migrations/2024-01-02-000000_idx/metadata.toml",
        "run_in_transaction = false\n",
    );
    init(&p);
    p.run(["migrate", "up", "--engine", "diesel"]).success();
    p.run(["migrate", "redo", "--engine", "diesel"]).success();
    p.run(["migrate", "redo", "--engine", "diesel", "--all"])
        .success();
    assert_eq!(p.applied(), ["20240101000000", "20240102000000"]);
    assert_eq!(
        p.count("SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'a_v'"),
        1
    );
    if let Some(bin) = diesel_cli("a_redo_of_a_migration_outside_a_transaction_runs_without_one") {
        let theirs = diesel(&bin, &p, &["migration", "redo", "--all"]);
        assert_eq!(theirs.code, 0, "{}", theirs.stderr);
    }
}

/// A `patch_file` that cannot be read, or a `schema` on SQLite, would stop the schema.rs
/// rewrite whatever the migrations do: `migrate` and `init` stop before running them (before,
/// the migrations ran and the command failed after them).
#[test]
fn a_rewrite_that_cannot_work_stops_migrate_before_it_changes_anything() {
    let p = Project::sqlite();
    p.migration_folder(
        "2024-01-01-000000_a",
        "CREATE TABLE a (id INTEGER PRIMARY KEY);",
        Some("DROP TABLE a;"),
    );
    std::fs::create_dir_all(p.path().join("patches")).expect("mkdir");
    for (toml, says) in [
        ("patch_file = \"missing.patch\"", "missing.patch"),
        ("patch_file = \"patches\"", "patches"),
        ("schema = \"other\"", "`schema` is for PostgreSQL"),
    ] {
        p.file(
            "diesel.toml",
            format!("[print_schema]\nfile = \"src/schema.rs\"\n{toml}\n"),
        );
        for args in [
            vec!["init"],
            vec!["migrate", "up"],
            vec!["migrate", "up", "--engine", "diesel"],
        ] {
            let run = p.run(&args);
            run.code(2).stderr_has(says);
            assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
            assert!(!p.has_table("a"), "{toml}: {args:?} ran the migration");
        }
    }
}

/// SIGINT while a redo through diesel's harness applies again: exit 130, and the migrations it
/// had already reverted are back (the redo's transaction is rolled back), as after a failure.
#[test]
fn sigint_in_a_redo_through_diesels_harness_changes_nothing() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.migration_folder(
        "2024-01-01-000000_a",
        "CREATE TABLE a (id INT PRIMARY KEY);",
        Some("DROP TABLE a;"),
    );
    p.migration_folder(
        "2024-01-02-000000_b",
        "CREATE TABLE b (id INT PRIMARY KEY);",
        Some("DROP TABLE b;"),
    );
    init(&p);
    p.run(["migrate", "up", "--engine", "diesel"]).success();
    // b applies again slowly.
    p.file(
        "migrations/2024-01-02-000000_b/up.sql",
        "CREATE TABLE b (id INT PRIMARY KEY);\nSELECT pg_sleep(40);\n",
    );
    let child = p
        .command()
        .args(["migrate", "redo", "--all", "--engine", "diesel"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dbctl");
    let db = p.pg_database().expect("a database").to_string();
    let active = format!(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{db}' \
         AND query LIKE '%pg_sleep(40)%' AND pid <> pg_backend_pid()"
    );
    let started = std::time::Instant::now();
    while p.count(&active) == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the redo never reached b's up.sql"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let run = Run::from(child.wait_with_output().expect("wait"));
    run.code(130)
        .stderr_has("interrupted by SIGINT")
        .stderr_has("rolled back");
    assert_eq!(p.applied(), ["20240101000000", "20240102000000"]);
    assert!(p.has_table("a") && p.has_table("b"));
}

/// A SQL name whose string literal Rust cannot read (`\s` is no escape): rustfmt refuses
/// diesel's output, and diesel_cli prints it unformatted; dbctl prints the same bytes (before,
/// it laid out the lines rustfmt would have changed as rustfmt does).
#[test]
fn names_rust_cannot_read_print_unformatted_as_diesel_cli_prints_them() {
    let Some(bin) =
        diesel_cli("names_rust_cannot_read_print_unformatted_as_diesel_cli_prints_them")
    else {
        return;
    };
    let mut cases: Vec<(Project, &str, Vec<Vec<&str>>)> = vec![(
        Project::sqlite(),
        r#"CREATE TABLE "a\b" (id INTEGER PRIMARY KEY);
           CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES "a\b"(id));
           CREATE TABLE d (id INTEGER PRIMARY KEY);
           CREATE TABLE e (id INTEGER PRIMARY KEY, d INTEGER REFERENCES d(id));"#,
        vec![
            vec![],
            vec![
                "--allow-tables-to-appear-in-same-query-config",
                "fk_related_tables",
            ],
            vec!["-o", "d", "e"],
        ],
    )];
    if let Some(pg) = Project::postgres() {
        cases.push((
            pg,
            r#"CREATE SCHEMA "sch\ema";
               CREATE TYPE "sch\ema".a_very_long_enum_type_name_that_goes_on_and_on_and_on
                 AS ENUM ('a');
               CREATE TABLE "sch\ema".t (id int PRIMARY KEY,
                 e "sch\ema".a_very_long_enum_type_name_that_goes_on_and_on_and_on);
               CREATE TABLE "sch\ema".u (id int PRIMARY KEY);
               CREATE TABLE "x\y" (id int PRIMARY KEY, "\u{12}" int, "\x41" int);
               CREATE TABLE z (id int PRIMARY KEY);"#,
            vec![
                vec![],
                vec![
                    "--schema",
                    r"sch\ema",
                    "--custom-type-derives",
                    "diesel::query_builder::QueryId",
                    "--custom-type-derives",
                    "Clone",
                    "--custom-type-derives",
                    "Debug",
                    "--custom-type-derives",
                    "PartialEq",
                ],
            ],
        ));
    }
    for (p, sql, flag_sets) in &mut cases {
        init(p);
        p.execute(sql);
        for flags in flag_sets.iter() {
            let mut args = vec!["print-schema"];
            args.extend(flags);
            let theirs = diesel_print_schema(&bin, p, &args);
            assert_eq!(theirs.code, 0, "diesel_cli {flags:?}: {}", theirs.stderr);
            let ours = p.run(&args);
            ours.success();
            assert_eq!(ours.stdout, theirs.stdout, "print-schema {flags:?}");
        }
    }
}

/// As diesel_cli (its `migration run` returns before `regenerate_schema_if_file_specified`), a
/// run that fails leaves the schema file as it was, whichever engine ran it.
#[test]
fn a_failed_run_leaves_the_schema_file_alone() {
    let p = Project::sqlite();
    three(&p);
    p.file(
        "migrations/2024-01-03-000000_create_c/up.sql",
        "CREATE TABLE c (id INTEGER PRIMARY KEY);\nINSERT INTO nowhere VALUES (1);\n",
    );
    p.file("diesel.toml", "[print_schema]\nfile = \"src/schema.rs\"\n");
    init(&p);
    for engine in ["dbctl", "diesel"] {
        p.file("src/schema.rs", "// before\n");
        p.run(["migrate", "up", "--engine", engine]).code(1);
        assert_eq!(p.applied(), ["20240101000000", "20240102000000"]);
        assert_eq!(
            std::fs::read_to_string(p.path().join("src/schema.rs")).unwrap(),
            "// before\n",
            "{engine}"
        );
        p.run(["migrate", "down", "--all", "--engine", engine])
            .success();
    }
}

/// Two `migrate up` runs at once on a project whose schema file does not exist yet: each
/// migration is applied once, neither run fails, and the file ends up as `print-schema` prints
/// it (the up-front check that the file can be written must not trip over the other run).
#[test]
fn two_runs_at_once_apply_once_and_leave_the_schema_file_right() {
    for engine in ["dbctl", "diesel"] {
        let p = Project::sqlite();
        three(&p);
        p.file(
            "migrations/2024-01-02-000000_create_b/up.sql",
            "CREATE TABLE b (id INTEGER PRIMARY KEY);\nWITH RECURSIVE c(x) AS (SELECT 1 UNION \
             ALL SELECT x + 1 FROM c WHERE x < 300000) SELECT count(*) FROM c;\n",
        );
        p.file("diesel.toml", "[print_schema]\nfile = \"src/schema.rs\"\n");
        init(&p);
        let spawn = || {
            p.command()
                .args(["migrate", "up", "--engine", engine])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn dbctl")
        };
        let (a, b) = (spawn(), spawn());
        for child in [a, b] {
            Run::from(child.wait_with_output().expect("wait")).success();
        }
        assert_eq!(
            p.applied(),
            ["20240101000000", "20240102000000", "20240103000000"],
            "{engine}"
        );
        let printed = p.run(["print-schema"]);
        printed.success();
        assert_eq!(
            std::fs::read_to_string(p.path().join("src/schema.rs")).unwrap(),
            printed.stdout,
            "{engine}"
        );
    }
}
