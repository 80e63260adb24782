//! Settings and global behaviour: where the URL comes from, URL forms, pool variables, global
//! options anywhere on the line, exit codes, JSON errors and password redaction.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::support::{dbctl, pg_admin, pg_skipped, pg_url_for, Project, Run};

#[test]
fn url_default_is_sqlite_dev_db() {
    let p = Project::sqlite();
    p.init_without_url(&[]).success();
    assert!(p.path().join("dev.db").is_file());
}

#[test]
fn url_order_flag_then_env_then_dotenv_then_default() {
    let p = Project::sqlite();
    p.file(".env", "DATABASE_URL=sqlite://from-dotenv.db\n");
    p.init_without_url(&[]).success();
    assert!(p.path().join("from-dotenv.db").is_file());

    let mut cmd = p.command();
    cmd.env("DATABASE_URL", "sqlite://from-env.db");
    Run::from(cmd.args(["init", "--no-migrate", "-q"]).output().unwrap()).success();
    assert!(p.path().join("from-env.db").is_file());

    let mut cmd = p.command();
    cmd.env("DATABASE_URL", "sqlite://from-env.db");
    cmd.args([
        "init",
        "--no-migrate",
        "--database-url",
        "sqlite://from-flag.db",
    ]);
    Run::from(cmd.output().unwrap()).success();
    assert!(p.path().join("from-flag.db").is_file());
    assert!(!p.path().join("dev.db").exists());
}

#[test]
fn verbose_says_where_the_url_came_from() {
    let p = Project::sqlite();
    p.file(".env", "DATABASE_URL=sqlite://x.db\n");
    let mut cmd = p.command();
    cmd.env_remove("DATABASE_URL")
        .args(["init", "--no-migrate", "-v"]);
    Run::from(cmd.output().unwrap())
        .success()
        .stderr_has("from DATABASE_URL in .env");
}

#[test]
fn env_file_flag_names_another_file() {
    let p = Project::sqlite();
    p.file("ci.env", "# comment\nDATABASE_URL=\"sqlite://ci.db\"\n");
    p.init_without_url(&["--env-file", "ci.env"]).success();
    assert!(p.path().join("ci.db").is_file());
}

#[test]
fn missing_named_env_file_is_exit_2() {
    let p = Project::sqlite();
    p.init_without_url(&["--env-file", "nope.env"])
        .code(2)
        .stderr_has("nope.env");
}

#[test]
fn malformed_env_file_is_exit_2_without_echoing_its_secrets() {
    let p = Project::sqlite();
    p.file(".env", "OK=1\nDATABASE_URL postgres://u:envsecret@h/db\n");
    p.init_without_url(&[])
        .code(2)
        .stderr_has("malformed env file")
        .stderr_has("line 2")
        .no_secret("envsecret");
}

#[test]
fn empty_database_url_is_an_error_not_a_silent_default() {
    let p = Project::sqlite();
    let mut cmd = p.command();
    cmd.env("DATABASE_URL", "").args(["ping"]);
    Run::from(cmd.output().unwrap())
        .code(2)
        .stderr_has("DATABASE_URL is set but empty");
}

#[test]
fn diesel_toml_names_the_migrations_folder_and_the_flag_overrides_it() {
    let p = Project::sqlite();
    p.file(
        "diesel.toml",
        "[print_schema]\nfile = \"x.rs\"\n[migrations_directory]\ndir = \"db/migs\"\n",
    );
    p.file(
        "db/migs/2024-01-01-000000_t/up.sql",
        "CREATE TABLE from_toml (id INTEGER);",
    );
    p.file(
        "db/migs/2024-01-01-000000_t/down.sql",
        "DROP TABLE from_toml;",
    );
    p.file(
        "other/2024-01-01-000000_t/up.sql",
        "CREATE TABLE from_flag (id INTEGER);",
    );
    p.file(
        "other/2024-01-01-000000_t/down.sql",
        "DROP TABLE from_flag;",
    );
    p.run(["init", "-q"]).success();
    assert!(p.has_table("from_toml"));

    let q = Project::sqlite();
    q.file("diesel.toml", "[migrations_directory]\ndir = \"db/migs\"\n");
    q.file(
        "other/2024-01-01-000000_t/up.sql",
        "CREATE TABLE from_flag (id INTEGER);",
    );
    q.file(
        "other/2024-01-01-000000_t/down.sql",
        "DROP TABLE from_flag;",
    );
    q.run(["init", "-q", "--migrations-dir", "other"]).success();
    assert!(q.has_table("from_flag"));
}

#[test]
fn malformed_diesel_toml_is_exit_2() {
    let p = Project::sqlite();
    p.file("diesel.toml", "[migrations_directory\ndir = 1\n");
    p.run(["init"]).code(2).stderr_has("diesel.toml");
}

#[test]
fn sqlite_url_forms() {
    let p = Project::sqlite();
    let forms = [
        ("sqlite://rel.db".to_string(), "rel.db"),
        ("sqlite:sqlx-style.db".to_string(), "sqlx-style.db"),
        ("file:uri.db?mode=rwc".to_string(), "uri.db"),
        ("plain.db".to_string(), "plain.db"),
        ("./dot/slash.db".to_string(), "dot/slash.db"),
    ];
    for (url, file) in forms {
        p.run(["init", "--no-migrate", "-q", "--database-url", &url])
            .success();
        assert!(p.path().join(file).is_file(), "{url} did not create {file}");
        p.run(["ping", "-q", "--database-url", &url]).success();
    }
    for url in [
        "sqlite::memory:",
        ":memory:",
        "sqlite://",
        "sqlite:///:memory:",
    ] {
        let json = p
            .run(["ping", "--format", "json", "--database-url", url])
            .json();
        assert_eq!(json["backend"], "sqlite");
        assert_eq!(json["url"], "sqlite::memory:", "{url}");
    }
    // No file named after the URL was created (diesel alone would create `sqlite::memory:`).
    assert!(!p.path().join("sqlite::memory:").exists());
}

/// The seeds' SQLAlchemy forms read as SQLAlchemy reads them; the Rust tools' absolute form finds
/// its file; where the two readings differ and neither file exists, `init` refuses and names both.
#[test]
fn sqlite_urls_follow_one_rule_for_sqlalchemy_and_the_rust_tools() {
    let p = Project::sqlite();
    let name = crate::support::unique_name("dbctl_rule");
    // Seed 000's `sqlite:///./dev.db`: relative, never at the file system's root.
    let dotted = format!("sqlite:///./{name}_dot.db");
    let run = p.run([
        "init",
        "--no-migrate",
        "--format",
        "json",
        "--database-url",
        &dotted,
    ]);
    let at_root = std::path::Path::new("/").join(format!("{name}_dot.db"));
    let leaked = at_root.exists();
    let _ = std::fs::remove_file(&at_root);
    run.success();
    assert!(!leaked, "{dotted} created {}", at_root.display());
    let here = p.path().join(format!("{name}_dot.db"));
    assert!(here.is_file(), "{dotted} did not create {}", here.display());
    // init's report names the absolute path.
    let detail = run.json()["steps"][0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(detail, here.display().to_string());

    // Seed 004's `sqlite:///{name}.db` and `sqlite+aiosqlite:///x.db`: relative.
    for url in [
        format!("sqlite:///{name}_one.db"),
        format!("sqlite+aiosqlite:///{name}_aio.db"),
    ] {
        p.run(["init", "--no-migrate", "-q", "--database-url", &url])
            .success();
        let file = url.rsplit('/').next().unwrap();
        assert!(p.path().join(file).is_file(), "{url}");
        assert!(!std::path::Path::new("/").join(file).exists(), "{url}");
    }

    // `sqlite:///a/b.db` where neither reading exists: init refuses, names both and both fixes.
    let abs = p.path().join("abs.db");
    let three = format!("sqlite://{}", abs.display());
    assert!(three.starts_with("sqlite:///"));
    let relative = p.path().join(abs.strip_prefix("/").unwrap());
    let refused = p.run(["init", "--no-migrate", "--database-url", &three]);
    refused
        .code(2)
        .stderr_has(&abs.display().to_string())
        .stderr_has(&relative.display().to_string())
        .stderr_has(&format!("sqlite:///{}", abs.display()))
        .stderr_has("sqlite:///./");
    assert!(!abs.exists() && !relative.exists(), "a file was created");
    p.run(["ping", "--database-url", &three])
        .code(3)
        .stderr_has("neither file exists");

    // Four slashes are absolute for every tool; then the Rust tools' three-slash form finds it.
    let four = format!("sqlite:///{}", abs.display());
    p.run(["init", "--no-migrate", "-q", "--database-url", &four])
        .success();
    assert!(abs.is_file());
    let ping = p.run(["ping", "-v", "--format", "json", "--database-url", &three]);
    ping.success()
        .stderr_has(&abs.display().to_string())
        .stderr_has("only");
    assert_eq!(ping.json()["url"], format!("sqlite://{}", abs.display()));

    // Both readings exist: every command refuses to guess.
    std::fs::create_dir_all(relative.parent().unwrap()).unwrap();
    std::fs::copy(&abs, &relative).unwrap();
    p.run(["ping", "--database-url", &three])
        .code(2)
        .stderr_has("both files exist");
}

/// A mistyped server URL is never taken for a file name, and special files are not databases.
#[test]
fn mistyped_urls_and_special_files_are_refused() {
    let p = Project::sqlite();
    for url in [
        "postgres//postgres@127.0.0.1/db",
        "127.0.0.1:5432/db",
        "localhost:5432/db",
        "localhost/db",
        "10.0.0.1/db",
        "~/app.db",
        "$HOME/app.db",
        "postgres",
        "data/",
        "user@host/db",
        "//host/db",
        "sqlite://user@host/db",
        "sqlite://127.0.0.1:5432/db",
        "host=localhost user=app nosuchword=1",
    ] {
        p.run(["init", "--no-migrate", "--database-url", url])
            .code(2)
            .stderr_has("error:");
        let entries: Vec<_> = std::fs::read_dir(p.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(entries.is_empty(), "{url} created {entries:?}");
    }
    for dir in ["/postgres", "/host"] {
        assert!(!std::path::Path::new(dir).join("db").exists());
    }
    // What was clearly meant still works: a `./` path may hold `@` or `:`.
    p.run([
        "init",
        "--no-migrate",
        "-q",
        "--database-url",
        "./user@host/x.db",
    ])
    .success();
    assert!(p.path().join("user@host/x.db").is_file());

    // /dev/null is not a database, and nothing is written beside it.
    let journal = std::path::Path::new("/dev/null-journal");
    let had_journal = journal.exists();
    for url in ["sqlite:///dev/null", "/dev/null", "sqlite:////dev/null"] {
        for args in [
            &["init", "--no-migrate"][..],
            &["ping"],
            &["migrate", "status"],
        ] {
            p.run(args.iter().copied().chain(["--database-url", url]))
                .code(2)
                .stderr_has("character device");
        }
    }
    assert_eq!(journal.exists(), had_journal, "/dev/null-journal appeared");
}

#[test]
fn postgres_url_forms_and_parameters_reach_libpq() {
    if pg_skipped() {
        return;
    }
    let base = pg_url_for("postgres");
    let rest = base.split_once("://").unwrap().1;
    for scheme in [
        "postgres",
        "postgresql",
        "postgresql+asyncpg",
        "postgresql+psycopg",
        "postgres+pg8000",
    ] {
        let url = format!("{scheme}://{rest}");
        let json = dbctl_json(&["ping", "--database-url", &url]);
        assert_eq!(json["backend"], "postgres", "{url}");
        assert!(json["url"].as_str().unwrap().starts_with("postgresql://"));
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    for params in [
        "sslmode=disable",
        "sslmode=require",
        "connect_timeout=3",
        "application_name=mine",
    ] {
        dbctl_json(&["ping", "--database-url", &format!("{base}{sep}{params}")]);
    }
    // asyncpg's `ssl=` is translated to libpq's sslmode.
    dbctl_json(&["ping", "--database-url", &format!("{base}{sep}ssl=disable")]);
    // A parameter libpq does not know is its error, and a usage error.
    let out = Run::from(
        dbctl()
            .args([
                "ping",
                "--database-url",
                &format!("{base}{sep}sslmode=sometimes"),
            ])
            .output()
            .unwrap(),
    );
    out.code(2).stderr_has("sslmode");
}

fn dbctl_json(args: &[&str]) -> serde_json::Value {
    let out = Run::from(
        dbctl()
            .args(args)
            .args(["--format", "json"])
            .output()
            .unwrap(),
    );
    out.success();
    out.json()
}

#[test]
fn unsupported_urls_are_exit_2_and_list_the_accepted_forms() {
    for url in [
        "mysql://u@h/db",
        "redis://localhost",
        "http://example.invalid/x",
        "postgres:no-slashes",
        "postgres://u@h:0/db",
        "postgres://u@h:65536/db",
        "postgres://u@h:12ab/db",
        "postgres://u@[::1/db",
        "postgres://u@h/db?bare",
        "postgres://u@h/d%zzb",
        "sqlite:",
    ] {
        let out = Run::from(
            dbctl()
                .args(["ping", "--database-url", url])
                .output()
                .unwrap(),
        );
        out.code(2);
        assert!(out.stderr.lines().count() <= 2, "{url}: {}", out.stderr);
    }
    let out = Run::from(
        dbctl()
            .args(["ping", "--database-url", "mysql://u@h/db"])
            .output()
            .unwrap(),
    );
    out.stderr_has("sqlite::memory:")
        .stderr_has("postgresql+<driver>://");
}

#[test]
fn bad_pool_settings_are_exit_2() {
    let p = Project::sqlite();
    p.run(["init", "--no-migrate", "-q"]).success();
    for (key, value) in [
        ("DB_POOL_SIZE", "abc"),
        ("DB_POOL_SIZE", "0"),
        ("DB_POOL_TIMEOUT", "-1"),
        ("DB_POOL_TIMEOUT", "soon"),
        ("DB_POOL_RECYCLE", "hourly"),
        ("DB_POOL_PRE_PING", "maybe"),
        ("DB_ECHO", "loud"),
        ("DB_STATEMENT_TIMEOUT", "-5"),
        ("DB_CONNECT_TIMEOUT", "x"),
    ] {
        let mut cmd = p.command();
        cmd.env(key, value).arg("ping");
        let out = Run::from(cmd.output().unwrap());
        out.code(2).stderr_has(key).stderr_has(value);
    }
}

#[test]
fn pool_settings_from_dotenv_reach_the_pool() {
    let p = Project::sqlite();
    p.run(["init", "--no-migrate", "-q"]).success();
    p.file(
        ".env",
        "DB_POOL_SIZE=7\nDB_POOL_TIMEOUT=12\nDB_POOL_RECYCLE=-1\nDB_POOL_PRE_PING=false\n",
    );
    p.run(["ping", "-v"])
        .success()
        .stderr_has("max 7 connections")
        .stderr_has("checkout timeout 12.0s")
        .stderr_has("recycle off")
        .stderr_has("pre-ping false");
}

#[test]
fn echo_logs_every_statement_to_stderr() {
    let p = Project::sqlite();
    p.run(["init", "--no-migrate", "-q"]).success();
    let mut cmd = p.command();
    cmd.env("DB_ECHO", "true")
        .args(["ping", "--format", "json"]);
    let out = Run::from(cmd.output().unwrap());
    out.success()
        .stderr_has("[sql] SELECT 1")
        .stderr_has("PRAGMA foreign_keys = ON");
    out.json(); // stdout is still one JSON document
}

#[test]
fn sqlite_connections_enforce_foreign_keys() {
    // Migrations run with foreign keys off, as diesel_cli's do (table rebuilds need it); every
    // other connection has them on, so a seed row pointing nowhere is refused.
    let p = Project::sqlite();
    p.file(
        "migrations/2024-01-01-000000_fk/up.sql",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);\n\
         CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent (id));\n",
    );
    p.file(
        "migrations/2024-01-01-000000_fk/down.sql",
        "DROP TABLE child; DROP TABLE parent;",
    );
    p.file("seeds/child.csv", "id,parent_id\n1,42\n");
    p.run(["init", "-q"]).success();
    p.run(["seed"])
        .code(1)
        .stderr_has("FOREIGN KEY constraint failed");
    assert_eq!(p.count("SELECT count(*) AS n FROM child"), 0);
}

#[test]
fn statement_timeout_reaches_postgres() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.migration("slow", "SELECT pg_sleep(5);", Some("SELECT 1;"));
    p.env("DB_STATEMENT_TIMEOUT", "0.5");
    p.run(["init"]).code(1).stderr_has("statement timeout");
}

#[test]
fn a_one_connection_command_opens_one_connection() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.env("DB_POOL_SIZE", "10");
    p.run(["ping", "--count", "3", "-q"]).success();
    p.run(["init", "--no-migrate", "-q"]).success();
    let name = p.pg_database().unwrap().to_string();
    #[derive(QueryableByName)]
    struct Sessions {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    // Session counts reach pg_stat_database when each backend exits: poll briefly.
    let mut admin = pg_admin();
    let mut sessions = 0;
    for _ in 0..40 {
        let row: Sessions =
            diesel::sql_query("SELECT sessions AS n FROM pg_stat_database WHERE datname = $1")
                .bind::<diesel::sql_types::Text, _>(&name)
                .get_result(&mut admin)
                .unwrap();
        sessions = row.n;
        if sessions >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sessions, 2, "ping and init should open one connection each");
}

#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let p = Project::sqlite();
    let url = format!("sqlite:///{}", p.path().join("g.db").display());
    Run::from(
        dbctl()
            .args([
                "--database-url",
                &url,
                "--format",
                "json",
                "init",
                "--no-migrate",
            ])
            .output()
            .unwrap(),
    )
    .success()
    .json();
    let after = Run::from(
        dbctl()
            .args(["ping", "-v", "--format", "json", "--database-url", &url])
            .output()
            .unwrap(),
    );
    after.success().stderr_has("dbctl: database");
    after.json();
}

#[test]
fn quiet_prints_nothing_on_success() {
    let p = Project::sqlite();
    let out = p.run(["init", "--no-migrate", "-q"]);
    out.success();
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}

#[test]
fn errors_are_one_line_and_a_json_document_with_format_json() {
    let p = Project::sqlite();
    let out = p.run(["ping", "--format", "json"]);
    out.code(3);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "));
    let json = out.json();
    assert_eq!(json["error"]["exit_code"], 3);
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
}

#[test]
fn exit_codes_one_by_one() {
    let p = Project::sqlite();
    // 2: a bad flag, a bad URL, a conflicting pair of flags.
    p.run(["ping", "--no-such-flag"]).code(2);
    p.run(["ping", "--database-url", "oracle://x"]).code(2);
    p.run(["ping", "-q", "-v"]).code(2);
    p.run(["--format", "mermaid", "ping"]).code(2);
    // 3: cannot connect.
    p.run(["ping"]).code(3);
    // 0: success.
    p.run(["init", "--no-migrate", "-q"]).code(0);
    p.run(["ping", "-q"]).code(0);
    // 1: the operation failed (an SQL error), rolled back.
    p.file(
        "migrations/2024-01-01-000000_bad/up.sql",
        "CREATE TABLE ok_one (id INTEGER);\nCREATE TABLEX oops;\n",
    );
    p.file(
        "migrations/2024-01-01-000000_bad/down.sql",
        "DROP TABLE ok_one;",
    );
    p.run(["init"]).code(1);
    assert!(!p.has_table("ok_one"));
    // 4: a check ran and found a problem (the failed migration is still pending).
    p.run(["migrate", "status", "--check"]).code(4);
    // --help and --version are not errors.
    p.run(["--help"]).code(0);
    p.run(["ping", "--help"]).code(0).stdout_has("Examples:");
    p.run(["--version"]).code(0);
}

const SECRET: &str = "Pa55-w0rd-s3cret";

#[test]
fn passwords_never_appear_on_failing_paths() {
    let port = crate::support::FakeServer::ClosedPort.start();
    let encoded = "Pa55%2Dw0rd%2Ds3cret";
    let urls = [
        format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/db"),
        format!("postgresql+asyncpg://postgres:{SECRET}@127.0.0.1:{port}/db"),
        format!("postgres://postgres:{SECRET}@[::1/db"),
        format!("postgres://postgres:{SECRET}%zz@127.0.0.1/db"),
        format!("postgres://postgres:{encoded}@127.0.0.1:99999/db"),
        format!("postgres://postgres:{SECRET}@no-such-host.invalid/db"),
        format!("postgres://postgres@127.0.0.1:{port}/db?password={SECRET}"),
        format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/db?sslmode=bogus"),
        format!("mysql://root:{SECRET}@127.0.0.1/db"),
    ];
    for url in &urls {
        for args in [
            vec!["ping", "-v"],
            vec!["ping", "--format", "json"],
            vec!["ping", "--wait", "0.3"],
            vec!["init", "-v", "--no-migrate"],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let out = Run::from(
                dbctl()
                    .current_dir(dir.path())
                    .env("DB_ECHO", "true")
                    .args(&args)
                    .args(["--database-url", url])
                    .output()
                    .unwrap(),
            );
            assert_ne!(out.code, 0, "{url} {args:?}");
            out.no_secret(SECRET)
                .no_secret(encoded)
                .no_secret("Pa55-w0rd");
        }
    }
    // A database that does not exist (only read-only commands: init would create it).
    let missing = pg_url_for("dbctl_missing_db_for_redaction").replacen(
        "://postgres@",
        &format!("://postgres:{SECRET}@"),
        1,
    );
    if !pg_skipped() {
        for args in [vec!["ping", "-v"], vec!["ping", "--format", "json"]] {
            Run::from(
                dbctl()
                    .args(&args)
                    .args(["--database-url", &missing])
                    .output()
                    .unwrap(),
            )
            .code(3)
            .no_secret(SECRET);
        }
    }
    // A URL given where no argument is expected is echoed by clap: redacted too.
    Run::from(dbctl().args(["ping", &urls[0]]).output().unwrap())
        .code(2)
        .no_secret(SECRET);
    // From the environment and from .env as well.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("DATABASE_URL={}\n", urls[0]),
    )
    .unwrap();
    Run::from(
        dbctl()
            .current_dir(dir.path())
            .args(["ping", "-v"])
            .output()
            .unwrap(),
    )
    .code(3)
    .no_secret(SECRET);
}

#[test]
fn passwords_never_appear_on_success_paths_either() {
    if pg_skipped() {
        return;
    }
    // The server trusts local connections, so a password is accepted and ignored.
    let base = pg_url_for("postgres");
    let url = base.replacen("://postgres@", &format!("://postgres:{SECRET}@"), 1);
    assert!(
        url.contains(SECRET),
        "DBCTL_TEST_PG_URL must have the form postgres://postgres@host/db"
    );
    let out = Run::from(
        dbctl()
            .env("DB_ECHO", "1")
            .args(["ping", "-v", "--database-url", &url])
            .output()
            .unwrap(),
    );
    out.success().no_secret(SECRET).stdout_has("postgres:***@");
    let json = Run::from(
        dbctl()
            .args(["ping", "--format", "json", "--database-url", &url])
            .output()
            .unwrap(),
    );
    json.success().no_secret(SECRET);
    assert!(json.json()["url"].as_str().unwrap().contains("***"));
}
