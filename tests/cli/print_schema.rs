//! `dbctl print-schema` against diesel_cli's own output. Each folder under
//! `tests/fixtures/print_schema/cases/` holds a diesel.toml, the database it is printed from
//! (`source`: the example app's migrations, the fixture schemas with every type diesel maps, or
//! vaultwarden's migrations), and `expected.rs`, what `diesel print-schema` 2.3 printed for them
//! (`regenerate.sh` there makes them again with diesel_cli). Here the database is built by
//! `dbctl init` (which, as `migrate up`, also writes a configured `file`) and dbctl's output must match byte
//! for byte. The vaultwarden cases need `../shared/corpus/vaultwarden` (or `DBCTL_CORPUS_DIR`)
//! and say on stderr that they skipped when it is absent.

use std::path::{Path, PathBuf};

use crate::support::{Backend, Project, Run};

const HEADER: &str = "// @generated automatically by Diesel CLI.\n";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/print_schema")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read folder") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if skip.iter().any(|s| name == **s) {
            continue;
        }
        let target = to.join(&name);
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target, &[]);
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

/// Asserts two schema texts are equal, showing the first line that differs.
#[track_caller]
fn assert_same(what: &str, expected: &str, actual: &str) {
    if expected == actual {
        return;
    }
    let line = expected
        .lines()
        .zip(actual.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    panic!(
        "{what} differs from diesel_cli's at line {}:\n  diesel: {:?}\n  dbctl:  {:?}\n--- dbctl printed\n{actual}",
        line + 1,
        expected.lines().nth(line),
        actual.lines().nth(line)
    );
}

/// A project with the case's database built by `dbctl migrate up` and its diesel.toml (and
/// patch files) in place; `None` when the case's backend or corpus is not available.
fn case_project(name: &str) -> Option<(Project, PathBuf)> {
    let dir = fixtures().join("cases").join(name);
    let source = read(&dir.join("source"));
    let (backend, source) = source
        .trim()
        .split_once(' ')
        .expect("source: BACKEND SOURCE");
    let backend = match backend {
        "pg" => Backend::Postgres,
        "sqlite" => Backend::Sqlite,
        other => panic!("{name}: unknown backend {other}"),
    };
    let migrations = match source {
        "vaultwarden" => Some(crate::support::vaultwarden_for(backend, name)?),
        _ => None,
    };
    let p = Project::new(backend)?;
    match source {
        "example" => p.copy_example("migrations"),
        "types" => {
            let sql = match backend {
                Backend::Postgres => "pg_types.sql",
                Backend::Sqlite => "sqlite_types.sql",
            };
            p.migration_folder(
                "2024-01-01-000000_types",
                &read(&fixtures().join(sql)),
                None,
            );
        }
        "vaultwarden" => {
            let from = migrations.expect("corpus found above");
            copy_dir(&from, &p.path().join("migrations"), &[]);
        }
        other => panic!("{name}: unknown source {other}"),
    }
    copy_dir(&dir, p.path(), &["source", "args", "expected.rs"]);
    Some((p, dir))
}

/// The oracle check for one case: `init` writes any configured `file` as diesel_cli
/// would, and `print-schema` prints exactly what diesel_cli printed.
fn check_case(name: &str) {
    let Some((p, dir)) = case_project(name) else {
        return;
    };
    let expected = read(&dir.join("expected.rs"));
    // `init` creates the database and applies the migrations, as `migrate up` would.
    p.run(["init"]).success();
    let file = p.path().join("src/schema.rs");
    let toml = read(&p.path().join("diesel.toml"));
    if toml.contains("file = \"src/schema.rs\"") {
        // The default section's part of what diesel printed (each section starts with the header).
        let written = read(&file);
        let parts: Vec<String> = expected
            .split(HEADER)
            .skip(1)
            .map(|part| format!("{HEADER}{part}"))
            .collect();
        assert!(
            parts.contains(&written),
            "{name}: init wrote src/schema.rs unlike any section diesel printed:\n{written}"
        );
        p.run(["print-schema", "--locked-schema"])
            .success()
            .stderr_has("is up to date");
    } else {
        assert!(!file.exists(), "{name}: no `file` is configured");
    }
    // Flags given to both diesel_cli and dbctl, if any.
    let args_file = dir.join("args");
    let args = if args_file.is_file() {
        read(&args_file)
    } else {
        String::new()
    };
    let run = p.run(std::iter::once("print-schema").chain(args.split_whitespace()));
    run.success();
    assert_same(name, &expected, &run.stdout);
}

macro_rules! oracle_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_case(stringify!($name));
            }
        )*

        /// Every case folder has its test above, so that none is silently left out.
        #[test]
        fn every_fixture_case_is_tested() {
            let listed: Vec<&str> = vec![$(stringify!($name)),*];
            let mut found: Vec<String> = std::fs::read_dir(fixtures().join("cases"))
                .expect("cases folder")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            found.sort();
            let mut listed_sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
            listed_sorted.sort();
            assert_eq!(found, listed_sorted);
        }
    };
}

oracle_cases! {
    pg_example,
    pg_example_file,
    pg_types,
    pg_types_column_sorting,
    pg_types_docs,
    pg_types_domains,
    pg_types_except_custom_types,
    pg_types_except_tables,
    pg_types_fk_groups,
    pg_types_flags,
    pg_types_flags_schema,
    pg_types_import_types,
    pg_types_long_derives,
    pg_types_more_flags,
    pg_types_no_groups,
    pg_types_no_missing_types,
    pg_types_only_db_comments,
    pg_types_only_tables,
    pg_types_patch,
    pg_types_schema_empty,
    pg_types_schema_other,
    pg_types_schema_other_docs,
    pg_types_sections,
    pg_vaultwarden,
    pg_vaultwarden_fk_docs,
    sqlite_example,
    sqlite_example_fk_groups,
    sqlite_example_flags,
    sqlite_types,
    sqlite_types_bigint,
    sqlite_types_docs_by_name,
    sqlite_types_flags,
    sqlite_types_patch,
    sqlite_vaultwarden,
}

/// A SQLite project with the example app applied and diesel.toml naming `src/schema.rs`.
fn example_with_file() -> Project {
    let p = Project::sqlite();
    p.copy_example("migrations");
    p.file("diesel.toml", "[print_schema]\nfile = \"src/schema.rs\"\n");
    p.run(["init"])
        .success()
        .stderr_has("wrote the schema to src/schema.rs");
    p
}

#[test]
fn locked_schema_prints_a_diff_and_exits_4_without_writing() {
    let p = example_with_file();
    let file = p.path().join("src/schema.rs");
    let fresh = read(&file);
    let stale = fresh.replace("        body -> Text,\n", "        body -> Binary,\n");
    std::fs::write(&file, &stale).expect("write");

    let run = p.run(["print-schema", "--locked-schema"]);
    run.code(4).stderr_has("would change");
    assert!(
        run.stdout
            .starts_with("--- src/schema.rs\n+++ new schema\n@@ "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\n-        body -> Binary,\n+        body -> Text,\n"),
        "{}",
        run.stdout
    );
    assert_eq!(read(&file), stale, "--locked-schema must not write");

    p.run(["print-schema", "--write"])
        .success()
        .stderr_has("wrote src/schema.rs");
    assert_eq!(read(&file), fresh);

    // migrate down --locked-schema reverts, then refuses to rewrite the file (exit 4).
    let run = p.run(["migrate", "down", "--locked-schema"]);
    run.code(4).stdout_has("-    comments (id) {");
    assert_eq!(read(&file), fresh);
    assert!(!p.has_table("comments"), "the migration itself ran");
    // Without the flag the file follows the schema.
    p.run(["migrate", "redo"]).success();
    p.run(["migrate", "down"])
        .success()
        .stderr_has("wrote the schema to src/schema.rs");
    assert!(!read(&file).contains("comments (id)"));
    p.run(["migrate", "up", "--locked-schema"]).code(4);
    assert!(p.has_table("comments"));
    p.run(["print-schema", "--locked-schema"]).code(4);
    p.run(["print-schema", "--write"]).success();
    assert_eq!(read(&file), fresh);
    p.run(["print-schema", "--locked-schema"]).success();
}

#[test]
fn write_and_locked_schema_need_a_configured_file() {
    let p = Project::sqlite();
    p.copy_example("migrations");
    p.run(["init"]).success();
    p.run(["print-schema", "--write"])
        .code(2)
        .stderr_has("names a `file`");
    p.run(["print-schema", "--locked-schema"])
        .code(2)
        .stderr_has("names a `file`");
}

#[test]
fn unknown_keys_are_named_and_stop_migrate_before_it_changes_anything() {
    let p = Project::sqlite();
    p.copy_example("migrations");
    p.file(
        "diesel.toml",
        "[print_schema]\nfile = \"schema.rs\"\nwith_dogs = true\n",
    );
    p.run(["init", "--no-migrate"]).success();
    p.run(["print-schema"])
        .code(2)
        .stderr_has("[print_schema] has the key `with_dogs`, which dbctl does not support");
    p.run(["migrate", "up"]).code(2).stderr_has("`with_dogs`");
    assert!(p.applied().is_empty(), "nothing may be applied");

    p.file(
        "diesel.toml",
        "[print_schema.api]\nfile = \"schema.rs\"\nbogus = 1\n",
    );
    p.run(["print-schema"])
        .code(2)
        .stderr_has("[print_schema.api] has the key `bogus`");
    p.file(
        "diesel.toml",
        "[print_schema]\nfilter = { only = [\"x\"] }\n",
    );
    p.run(["print-schema"])
        .code(2)
        .stderr_has("`filter`: unknown key `only`");
    p.file("diesel.toml", "[print_schema]\ncolumn_sorting = \"size\"\n");
    p.run(["print-schema"])
        .code(2)
        .stderr_has("`column_sorting`: unknown value `size`");
    p.file(
        "diesel.toml",
        "[print_schema]\nfilter = { only_tables = [\"(\"] }\n",
    );
    p.run(["print-schema"]).code(2).stderr_has("bad regex `(`");
}

#[test]
fn a_patch_that_does_not_apply_is_named() {
    let p = Project::sqlite();
    p.copy_example("migrations");
    p.file(
        "diesel.toml",
        "[print_schema]\npatch_file = \"fix.patch\"\n",
    );
    p.file(
        "fix.patch",
        "--- a\n+++ b\n@@ -4,1 +4,1 @@\n-    nothing (id) {\n+    else (id) {\n",
    );
    p.run(["init"]).success();
    p.run(["print-schema"])
        .code(2)
        .stderr_has("patch_file `fix.patch` does not apply")
        .stderr_has("hunk #1");
    p.file(
        "diesel.toml",
        "[print_schema]\npatch_file = \"missing.patch\"\n",
    );
    p.run(["print-schema"])
        .code(2)
        .stderr_has("cannot read the patch_file `missing.patch`");
}

#[test]
fn sqlite_has_no_schema_key() {
    let p = Project::sqlite();
    p.file("diesel.toml", "[print_schema]\nschema = \"other\"\n");
    p.run(["init"]).success();
    p.run(["print-schema"])
        .code(2)
        .stderr_has("`schema` is for PostgreSQL");
}

#[test]
fn a_postgres_table_without_primary_key_fails_as_in_diesel_unless_filtered_out() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.execute("CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (a int, b text[]);");
    // diesel_cli 2.3 stops on such a table (exit 1) with this message; so does dbctl.
    p.run(["print-schema"]).code(1).stderr_has(
        "Diesel only supports tables with primary keys. Table `loose` has no primary key",
    );
    p.file(
        "diesel.toml",
        "[print_schema]\nfilter = { except_tables = [\"^loose$\"] }\n",
    );
    let run = p.run(["print-schema"]);
    run.success();
    assert_eq!(
        run.stdout,
        format!(
            "{HEADER}\ndiesel::table! {{\n    keyed (id) {{\n        id -> Int4,\n    }}\n}}\n"
        )
    );
}

#[test]
fn varchar_arrays_are_warned_about_on_stderr() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.execute("CREATE TABLE t (id int PRIMARY KEY, tags varchar(20)[]);");
    let run = p.run(["print-schema"]);
    run.success()
        .stderr_has("The column `tags` is of type `varchar[]`")
        .stdout_has("tags -> Nullable<Array<Nullable<Varchar>>>,");
}

#[test]
fn schema_key_picks_sections() {
    let Some((p, dir)) = case_project("pg_types_sections") else {
        return;
    };
    p.run(["init"]).success();
    let expected = read(&dir.join("expected.rs"));
    let b = p.run(["print-schema", "--schema-key", "b"]);
    b.success();
    assert!(
        expected.starts_with(&b.stdout),
        "section b comes first in name order"
    );
    assert_eq!(b.stdout.matches(HEADER).count(), 1);
    p.run(["print-schema", "--schema-key", "nope"])
        .code(2)
        .stderr_has("no [print_schema.nope] section");
}

#[test]
fn diesel_toml_is_found_from_a_subfolder_up_to_the_project_root() {
    let p = example_with_file();
    p.file("Cargo.toml", "[package]\nname = \"app\"\n");
    p.file(
        "diesel.toml",
        "[print_schema]\nfile = \"src/schema.rs\"\n\n[migrations_directory]\ndir = \"migrations\"\n",
    );
    let deeper = p.path().join("src/bin/deeper");
    std::fs::create_dir_all(&deeper).expect("mkdir");
    std::fs::remove_file(p.path().join("src/schema.rs")).expect("rm");

    let run = Run::from(
        p.command()
            .current_dir(&deeper)
            .args(["print-schema", "--write"])
            .output()
            .expect("run dbctl"),
    );
    run.success();
    // `file` is relative to diesel.toml's folder, not to where dbctl ran.
    assert!(p.path().join("src/schema.rs").is_file(), "{}", run.stderr);
    assert!(!deeper.join("src/schema.rs").exists());
    let status = Run::from(
        p.command()
            .current_dir(&deeper)
            .args(["migrate", "status", "--check"])
            .output()
            .expect("run dbctl"),
    );
    status.success();

    // Cargo.toml marks the root: a diesel.toml above it is not used.
    let inner = p.path().join("inner");
    std::fs::create_dir_all(inner.join("src")).expect("mkdir");
    std::fs::write(inner.join("Cargo.toml"), "[package]\nname = \"inner\"\n").expect("write");
    let run = Run::from(
        p.command()
            .current_dir(inner.join("src"))
            .args(["print-schema", "--write"])
            .output()
            .expect("run dbctl"),
    );
    run.code(2).stderr_has("names a `file`");
}

/// `DATABASE_SCHEMA` puts another schema alone on the search path; the tables of the printed
/// schema (`public` by default, as in diesel_cli) are still found with their comments.
#[test]
fn comments_are_found_whatever_the_search_path() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.execute(
        "CREATE SCHEMA app; CREATE TABLE t (id int PRIMARY KEY, n text);
         COMMENT ON TABLE t IS 'the table'; COMMENT ON COLUMN t.n IS 'the name';",
    );
    p.file(
        "diesel.toml",
        "[print_schema]\nwith_docs = \"only-database-comments\"\n",
    );
    p.env("DATABASE_SCHEMA", "app");
    let run = p.run(["print-schema"]);
    run.success();
    assert_eq!(
        run.stdout,
        format!(
            "{HEADER}\ndiesel::table! {{\n    /// the table\n    t (id) {{\n        id -> Int4,\n        \
             /// the name\n        n -> Nullable<Text>,\n    }}\n}}\n"
        )
    );
}
