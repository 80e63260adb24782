//! The settings of the seed documents (/work/shared/seeds), by their own names: SQLAlchemy's pool
//! names, a URL built from `DATABASE_*` parts, `DATABASE_URI`, `DATABASE_SCHEMA`, and asyncpg's
//! URL parameters. Each is either used or reported by `-v` as having no effect, never silently
//! ignored.

use crate::both_backends;
use crate::support::{pg_admin, pg_skipped, unique_name, Project, Run};

use diesel::connection::SimpleConnection;

/// `dbctl ARGS` in the project with `DATABASE_URL` removed and the given variables set.
fn run_with(p: &Project, vars: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = p.command();
    cmd.env_remove("DATABASE_URL");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Run::from(cmd.args(args).output().unwrap())
}

// Seed 002 (`DB_MAX_OVERFLOW`, `DB_ECHO=debug`) and seed 003 (`DATABASE_POOL_SIZE`,
// `DATABASE_MAX_OVERFLOW`, `DATABASE_ECHO`, in a `.env`-style file).
both_backends!(sqlalchemy_pool_names_are_read, |p: Project| {
    p.run(["init", "-q"]).success();
    let mut cmd = p.command();
    cmd.env("DB_POOL_SIZE", "5")
        .env("DB_MAX_OVERFLOW", "10")
        .env("DB_ECHO", "debug")
        .args(["migrate", "status", "-v"]);
    let run = Run::from(cmd.output().unwrap());
    run.success()
        .stderr_has("pool: max 15 connections")
        .stderr_has("[sql]")
        .stderr_has("setting DB_MAX_OVERFLOW=`10` (from the environment): added to the pool size");

    p.file(
        ".env.api",
        "DATABASE_POOL_SIZE=10\nDATABASE_MAX_OVERFLOW=20\nDATABASE_ECHO=true\n",
    );
    let run = p.run(["migrate", "status", "-v", "--env-file", ".env.api"]);
    run.success()
        .stderr_has("pool: max 30 connections")
        .stderr_has("[sql]")
        .stderr_has("setting DATABASE_POOL_SIZE=`10` (from .env.api): the pool size");

    // Both spellings set: dbctl's own wins, and -v says the other has no effect.
    let mut cmd = p.command();
    cmd.env("DB_POOL_SIZE", "3")
        .env("DATABASE_POOL_SIZE", "9")
        .args(["migrate", "status", "-v"]);
    Run::from(cmd.output().unwrap())
        .success()
        .stderr_has("pool: max 3 connections")
        .stderr_has("DATABASE_POOL_SIZE=`9` (from the environment): no effect: DB_POOL_SIZE is also set and wins");
});

// Seed 004: no URL, only parts, with a password that needs percent-encoding (the seed's
// f-string would break on it); the database is created and the password never printed.
#[test]
fn postgres_url_from_parts() {
    if pg_skipped() {
        return;
    }
    let p = Project::sqlite();
    p.copy_example("migrations");
    let name = unique_name("dbctl_parts");
    let password = "p@ss/w:rd#?%&=Zq9";
    let vars = [
        ("DATABASE_TYPE", "postgresql"),
        ("DATABASE_HOST", "127.0.0.1"),
        ("DATABASE_PORT", "5432"),
        ("DATABASE_USER", "postgres"),
        ("DATABASE_PASSWORD", password),
        ("DATABASE_NAME", name.as_str()),
        ("DATABASE_SSL", "disable"),
        ("DB_ECHO", "true"),
    ];
    let run = run_with(&p, &vars, &["init", "-v", "--format", "json"]);
    let cleanup = || {
        pg_admin()
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .unwrap();
    };
    if run.code != 0 {
        cleanup();
    }
    run.success()
        .no_secret(password)
        .no_secret("p%40ss")
        .stderr_has("built from DATABASE_TYPE, DATABASE_USER, DATABASE_PASSWORD, DATABASE_HOST, DATABASE_PORT, DATABASE_NAME, DATABASE_SSL (the environment)")
        .stderr_has("setting DATABASE_PASSWORD=*** (from the environment): part of the database URL")
        .stderr_has("setting DATABASE_HOST=`127.0.0.1` (from the environment): part of the database URL");
    let doc = run.json();
    assert_eq!(doc["backend"], "postgres");
    assert_eq!(doc["steps"][0]["status"], "created", "{doc}");
    let run = run_with(&p, &vars, &["migrate", "status", "--format", "json"]);
    cleanup();
    run.success();
    let doc = run.json();
    let migrations = doc["migrations"].as_array().unwrap();
    assert_eq!(migrations.len(), 3, "{doc}");
    assert!(migrations.iter().all(|m| m["state"] == "applied"), "{doc}");
}

// Bad parts are usage errors naming the setting.
#[test]
fn bad_parts_are_exit_2_naming_the_setting() {
    let p = Project::sqlite();
    for (vars, name) in [
        (
            vec![("DATABASE_TYPE", "mysql"), ("DATABASE_NAME", "x")],
            "DATABASE_TYPE",
        ),
        (
            vec![("DATABASE_HOST", "h"), ("DATABASE_PORT", "99999")],
            "DATABASE_PORT",
        ),
        (
            vec![("DATABASE_HOST", "h"), ("DATABASE_PORT", "5432x")],
            "DATABASE_PORT",
        ),
        (
            vec![("DATABASE_HOST", "h"), ("DATABASE_SSL", "maybe")],
            "DATABASE_SSL",
        ),
        (vec![("DATABASE_TYPE", "sqlite")], "DATABASE_NAME"),
        (vec![("DATABASE_URI", "")], "DATABASE_URI"),
    ] {
        run_with(&p, &vars, &["ping"]).code(2).stderr_has(name);
    }
}

// Seed 004's SQLite form: `DATABASE_TYPE=sqlite`, the file is `DATABASE_NAME.db`; the server
// parts have no effect, and -v says so.
#[test]
fn sqlite_file_from_parts() {
    let p = Project::sqlite();
    let vars = [
        ("DATABASE_TYPE", "sqlite"),
        ("DATABASE_NAME", "app"),
        ("DATABASE_HOST", "db.example"),
        ("DATABASE_SCHEMA", "fba"),
    ];
    run_with(&p, &vars, &["init", "-v", "--no-migrate"])
        .success()
        .stderr_has(
            "setting DATABASE_HOST=`db.example` (from the environment): no effect on a SQLite file",
        )
        .stderr_has("setting DATABASE_SCHEMA=`fba` (from the environment): no effect on SQLite");
    assert!(p.path().join("app.db").is_file());
}

// `DATABASE_URI` is another name for the URL; with both set, DATABASE_URL wins and -v says so.
// Names dbctl does not know, and a .env value hidden by the environment, are reported too.
#[test]
fn database_uri_and_names_without_effect() {
    let p = Project::sqlite();
    run_with(
        &p,
        &[("DATABASE_URI", "sqlite://from-uri.db")],
        &["init", "-q"],
    )
    .success();
    assert!(p.path().join("from-uri.db").is_file());
    p.file(
        ".env",
        "DB_POOL_SIZE=7\nDB_FANCY=1\nDB_PASSWORD=unknown-secret-Zq7\n",
    );
    let run = run_with(
        &p,
        &[
            ("DATABASE_URL", "sqlite://from-uri.db"),
            ("DATABASE_URI", "sqlite://other.db"),
            ("DB_POOL_SIZE", "2"),
        ],
        &["migrate", "status", "-v"],
    );
    run.success()
        .stderr_has("setting DATABASE_URI=(the URL) (from the environment): no effect: DATABASE_URL is also set and wins")
        .stderr_has("setting DB_FANCY=(value not shown) (from .env): no effect: not a setting dbctl knows")
        .no_secret("unknown-secret-Zq7")
        .stderr_has("setting DB_POOL_SIZE=`7` (from .env): no effect: the environment variable of the same name wins")
        .stderr_has("pool: max 2 connections");
    assert!(!p.path().join("other.db").exists());
}

// asyncpg's URL parameters: accepted (libpq would refuse them), `command_timeout` used as the
// statement timeout, the others reported by -v as having no effect.
#[test]
fn asyncpg_url_parameters_are_accepted_and_command_timeout_is_used() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.migration("slow", "SELECT pg_sleep(3);", Some("SELECT 1;"));
    p.run(["init", "--no-migrate", "-q"]).success();
    let url = format!(
        "{}?prepared_statement_cache_size=500&statement_cache_size=0&command_timeout=0.3",
        p.url().replace("postgres://", "postgresql+asyncpg://")
    );
    p.run(["ping", "-v", "--database-url", &url])
        .success()
        .stderr_has("URL parameter prepared_statement_cache_size=`500`: accepted, no effect")
        .stderr_has("URL parameter command_timeout=`0.3`: used as the statement timeout");
    // The 3-second migration is cancelled by the 0.3 s statement timeout the URL asked for.
    p.run(["migrate", "up", "--database-url", &url])
        .code(1)
        .stderr_has("statement timeout");
    // DB_STATEMENT_TIMEOUT wins over it.
    let mut cmd = p.command();
    cmd.env("DB_STATEMENT_TIMEOUT", "30")
        .args(["migrate", "status", "-v", "--database-url", &url]);
    Run::from(cmd.output().unwrap())
        .success()
        .stderr_has("command_timeout=`0.3`: no effect: DB_STATEMENT_TIMEOUT is set and wins");
}

// `DATABASE_SCHEMA` on PostgreSQL: `init` creates the schema; migrations, both bookkeeping
// tables and seeded rows land in it, `public` stays empty; inspect reads it; a command against a
// database without that schema is exit 2, not tables silently created in `public`.
#[test]
fn database_schema_is_where_everything_lands() {
    let Some(p) = Project::postgres() else {
        return;
    };
    p.copy_example("migrations");
    p.copy_example("seeds");
    let mut cmd = p.command();
    cmd.env("DATABASE_SCHEMA", "tenant_a")
        .args(["init", "--format", "json"]);
    let run = Run::from(cmd.output().unwrap());
    run.success();
    let doc = run.json();
    let schema_step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["item"] == "schema")
        .cloned()
        .unwrap_or_default();
    assert_eq!(schema_step["status"], "created", "{doc}");
    assert!(
        doc.to_string()
            .contains("tenant_a.__diesel_schema_migrations"),
        "{doc}"
    );
    let mut cmd = p.command();
    cmd.env("DATABASE_SCHEMA", "tenant_a").args(["seed", "-q"]);
    Run::from(cmd.output().unwrap()).success();

    let in_schema = |schema: &str| {
        p.strings(&format!(
            "SELECT table_name::text AS v FROM information_schema.tables WHERE table_schema = '{schema}' ORDER BY 1"
        ))
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
    };
    assert_eq!(
        in_schema("tenant_a"),
        [
            "__dbctl_migrations",
            "__diesel_schema_migrations",
            "comments",
            "posts",
            "users"
        ]
    );
    assert!(in_schema("public").is_empty(), "{:?}", in_schema("public"));
    assert_eq!(p.count("SELECT count(*) AS n FROM tenant_a.users"), 3);

    let mut cmd = p.command();
    cmd.env("DATABASE_SCHEMA", "tenant_a")
        .args(["inspect", "--format", "json", "--no-rows"]);
    let run = Run::from(cmd.output().unwrap());
    run.success();
    let doc = run.json();
    assert_eq!(doc["schemas"], serde_json::json!(["tenant_a"]), "{doc}");
    assert_eq!(doc["migrations"]["applied"], 3, "{doc}");

    // ping only asks whether the server answers.
    let mut cmd = p.command();
    cmd.env("DATABASE_SCHEMA", "tenant_b").arg("ping");
    Run::from(cmd.output().unwrap()).success();
    let mut cmd = p.command();
    cmd.env("DATABASE_SCHEMA", "tenant_b")
        .args(["migrate", "up"]);
    Run::from(cmd.output().unwrap())
        .code(2)
        .stderr_has("schema \"tenant_b\" (DATABASE_SCHEMA) is missing");
    assert!(in_schema("public").is_empty());
}

// fastapi-best-architecture (seed 001) names its database DATABASE_SCHEMA; with no
// DATABASE_NAME dbctl reads it as the schema, as documented, and warns (without -v) how to say
// the other thing.
#[test]
fn schema_without_a_database_name_warns() {
    let p = Project::sqlite();
    let vars = [
        ("DATABASE_TYPE", "postgresql"),
        ("DATABASE_HOST", "127.0.0.1"),
        ("DATABASE_PORT", "1"),
        ("DATABASE_USER", "postgres"),
        ("DATABASE_SCHEMA", "fba"),
        ("DB_CONNECT_TIMEOUT", "1"),
    ];
    run_with(&p, &vars, &["ping"])
        .code(3)
        .stderr_has("warning: DATABASE_SCHEMA=`fba` is used as the PostgreSQL schema")
        .stderr_has("DATABASE_NAME=`fba`");
}

// The same names in .env as in the environment, on both backends: DB_ECHO=debug is accepted.
both_backends!(echo_debug_is_accepted, |p: Project| {
    p.run(["init", "-q"]).success();
    p.file(".env", "DB_ECHO=debug\n");
    p.run(["migrate", "status"]).success().stderr_has("[sql]");
    p.file(".env", "DATABASE_ECHO=loud\n");
    p.run(["migrate", "status"])
        .code(2)
        .stderr_has("DATABASE_ECHO")
        .stderr_has("true, false or debug");
});

// pysqlite's URL options (`?timeout=20&check_same_thread=false`, as SQLAlchemy projects write
// them): `timeout` is the busy timeout, the others are reported by -v, none is silently ignored.
#[test]
fn pysqlite_url_parameters_are_reported() {
    let p = Project::sqlite();
    p.run(["init", "-q"]).success();
    let url = format!("sqlite://{}?timeout=20&check_same_thread=false", p.url());
    p.run(["migrate", "status", "-v", "--database-url", &url])
        .success()
        .stderr_has("URL parameter timeout=`20`: used as the busy timeout")
        .stderr_has("URL parameter check_same_thread=`false`: accepted, no effect")
        .stderr_has("statement timeout 20.000s");
    let url = format!("sqlite://{}?timeout=1e20", p.url());
    p.run(["migrate", "status", "--database-url", &url])
        .code(2)
        .stderr_has("timeout=`1e20`");
}
