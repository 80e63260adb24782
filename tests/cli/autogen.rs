//! `dbctl revision --autogenerate`: each test keeps migrations and a desired schema.sql, lets
//! dbctl write the migration, applies it with `migrate up` and compares `inspect --format json`
//! with a database built straight from schema.sql; then `migrate down` must give back the schema
//! from before. Also `--check`, "no changes", `--rename`, `--dev-url`, the scratch databases'
//! cleanup, and refusals.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use serde_json::Value;

use crate::both_backends;
use crate::support::{pg_admin, pg_url_for, unique_name, Backend, Project};

static NAMES: AtomicUsize = AtomicUsize::new(0);

/// The schema as `inspect --format json` gives it, without what a migration does not decide:
/// the migration state, row counts, and on PostgreSQL the columns' order (it only appends).
fn schema_json(p: &Project, url: &str) -> Value {
    let run = p.run([
        "inspect",
        "--format",
        "json",
        "--no-rows",
        "--database-url",
        url,
    ]);
    run.success();
    let mut json = run.json();
    json.as_object_mut().unwrap().remove("migrations");
    if let Some(tables) = json["tables"].as_array_mut() {
        for t in tables {
            t["rows"] = Value::Null;
            if p.backend == Backend::Postgres {
                let cols = t["columns"].as_array_mut().unwrap();
                cols.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            }
        }
    }
    json
}

/// The schema of a database built from `sql` alone.
fn desired_json(p: &Project, sql: &str) -> Value {
    match p.backend {
        Backend::Sqlite => {
            let n = NAMES.fetch_add(1, Ordering::SeqCst);
            let path = p.path().join(format!("want_{n}.db"));
            let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            conn.batch_execute(sql).unwrap();
            drop(conn);
            schema_json(p, path.to_str().unwrap())
        }
        Backend::Postgres => {
            let want = Project::postgres().expect("PostgreSQL");
            want.execute(sql);
            schema_json(p, want.url())
        }
    }
}

/// A fresh migration name.
fn next_name() -> String {
    format!("auto_{}", NAMES.fetch_add(1, Ordering::SeqCst))
}

/// The migration --autogenerate wrote: (up.sql, down.sql).
fn written(p: &Project, json: &Value) -> (String, String) {
    let read = |k: &str| std::fs::read_to_string(p.path().join(json[k].as_str().unwrap())).unwrap();
    (read("up"), read("down"))
}

/// Brings the database to the migrations' schema, writes `desired` as schema.sql, generates the
/// migration, applies it and compares with `desired`, reverts it and compares with the schema
/// from before, then applies it again. Returns (up.sql, down.sql).
fn round_trip(p: &Project, desired: &str) -> (String, String) {
    p.run(["migrate", "up", "-q"]).success();
    let before = schema_json(p, p.url());
    p.file("schema.sql", desired);
    let run = p.run([
        "revision",
        &next_name(),
        "--autogenerate",
        "--format",
        "json",
    ]);
    run.success();
    let (up, down) = written(p, &run.json());
    p.run(["migrate", "up"]).success();
    assert_eq!(
        schema_json(p, p.url()),
        desired_json(p, desired),
        "the schema after up.sql differs from schema.sql\n--- up.sql\n{up}"
    );
    p.run(["revision", "--check"])
        .success()
        .stdout_has("no changes");
    p.run(["migrate", "down"]).success();
    assert_eq!(
        schema_json(p, p.url()),
        before,
        "the schema after down.sql differs from the one before\n--- down.sql\n{down}"
    );
    p.run(["migrate", "up", "-q"]).success();
    (up, down)
}

/// A project with the database created and `base` applied as its first migration.
fn start(mut p: Project, base: &str) -> Project {
    p.migration(
        "base",
        base,
        Some("-- not reverted in these tests\nSELECT 1;"),
    );
    p.run(["init", "-q"]).success();
    p
}

const BASE: &str = "
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, legacy TEXT, age INTEGER);
CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id), title TEXT);
CREATE TABLE old_stuff (id INTEGER PRIMARY KEY);
CREATE INDEX posts_user ON posts (user_id);
INSERT INTO users (id, name, legacy, age) VALUES (1, 'ann', 'x', 30), (2, 'bob', NULL, 40);
INSERT INTO posts (id, user_id, title) VALUES (1, 1, 'hello');
";

both_backends!(tables_and_columns, |p: Project| {
    let p = start(p, BASE);
    let (up, down) = round_trip(
        &p,
        "
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, age INTEGER NOT NULL DEFAULT 0, email TEXT);
CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id), title TEXT DEFAULT 'untitled', score INTEGER DEFAULT 0 NOT NULL);
CREATE INDEX posts_user ON posts (user_id);
CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
",
    );
    // Rows of the tables kept are kept.
    assert_eq!(p.count("SELECT count(*) AS n FROM users"), 2);
    assert_eq!(
        p.count("SELECT count(*) AS n FROM posts WHERE score = 0"),
        1
    );
    assert!(up.contains("-- DESTRUCTIVE"), "{up}");
    assert!(up.contains("DROP TABLE old_stuff;"), "{up}");
    assert!(down.contains("DROP TABLE tags;"), "{down}");
    if p.backend == Backend::Postgres {
        assert!(up.contains("ALTER TABLE users DROP COLUMN legacy;"), "{up}");
        assert!(
            up.contains("ALTER TABLE users ALTER COLUMN name TYPE character varying(200);"),
            "{up}"
        );
        assert!(
            up.contains("ALTER TABLE users ALTER COLUMN age SET NOT NULL;"),
            "{up}"
        );
        assert!(
            up.contains("ALTER TABLE posts ADD COLUMN score integer DEFAULT 0 NOT NULL;"),
            "{up}"
        );
    } else {
        assert!(
            up.contains("ALTER TABLE _dbctl_new_users RENAME TO users;"),
            "{up}"
        );
        assert!(up.contains("PRAGMA defer_foreign_keys = ON;"), "{up}");
    }
});

both_backends!(keys_and_constraints, |p: Project| {
    let p = start(p, BASE);
    let (up, _) = round_trip(
        &p,
        "
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, legacy TEXT, age INTEGER,
    CONSTRAINT users_name_key UNIQUE (name), CONSTRAINT users_age_check CHECK (age >= 0));
CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, title TEXT,
    CONSTRAINT posts_author FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX posts_user ON posts (user_id);
CREATE TABLE old_stuff (id INTEGER PRIMARY KEY);
CREATE TABLE memberships (user_id INTEGER NOT NULL REFERENCES users (id), group_id INTEGER NOT NULL,
    CONSTRAINT memberships_pkey PRIMARY KEY (user_id, group_id));
",
    );
    assert!(up.contains("CONSTRAINT"), "{up}");
    // Then the other way: constraints dropped, primary key changed.
    round_trip(
        &p,
        "
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, legacy TEXT, age INTEGER);
CREATE TABLE posts (id INTEGER NOT NULL, user_id INTEGER NOT NULL, title TEXT,
    CONSTRAINT posts_pkey PRIMARY KEY (id, user_id));
CREATE INDEX posts_user ON posts (user_id);
CREATE TABLE old_stuff (id INTEGER PRIMARY KEY);
CREATE TABLE memberships (user_id INTEGER NOT NULL REFERENCES users (id), group_id INTEGER NOT NULL,
    CONSTRAINT memberships_pkey PRIMARY KEY (user_id, group_id));
",
    );
});

both_backends!(indexes_and_views, |p: Project| {
    let p = start(p, BASE);
    let (up, down) = round_trip(
        &p,
        "
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, legacy TEXT, age INTEGER);
CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id), title TEXT);
CREATE TABLE old_stuff (id INTEGER PRIMARY KEY);
CREATE INDEX posts_user_title ON posts (user_id, title);
CREATE UNIQUE INDEX users_lower_name ON users (lower(name));
CREATE INDEX users_adults ON users (age) WHERE age >= 18;
CREATE VIEW adults AS SELECT id, name FROM users WHERE age >= 18;
CREATE VIEW adult_posts AS SELECT p.id, a.name FROM posts p JOIN adults a ON a.id = p.user_id;
",
    );
    assert!(up.contains("DROP INDEX posts_user;"), "{up}");
    assert!(down.contains("DROP VIEW adult_posts;"), "{down}");
    // A view changed, an index changed.
    round_trip(
        &p,
        "
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, legacy TEXT, age INTEGER);
CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id), title TEXT);
CREATE TABLE old_stuff (id INTEGER PRIMARY KEY);
CREATE INDEX posts_user_title ON posts (user_id);
CREATE UNIQUE INDEX users_lower_name ON users (lower(name));
CREATE INDEX users_adults ON users (age) WHERE age >= 21;
CREATE VIEW adults AS SELECT id, name, age FROM users WHERE age >= 21;
CREATE VIEW adult_posts AS SELECT p.id, a.name FROM posts p JOIN adults a ON a.id = p.user_id;
",
    );
});

#[test]
fn postgres_enums_sequences_identity() {
    let Some(p) = Project::postgres() else {
        return;
    };
    let p = start(
        p,
        "CREATE TYPE mood AS ENUM ('sad', 'ok');
         CREATE TYPE gone AS ENUM ('a');
         CREATE SEQUENCE counter START 5;
         CREATE SEQUENCE unused;
         CREATE TABLE people (id serial PRIMARY KEY, m mood NOT NULL DEFAULT 'ok', g gone);
         INSERT INTO people (m) VALUES ('sad'), ('ok');",
    );
    // Values added in place, a new enum, sequences created, changed and dropped, identity.
    let (up, _) = round_trip(
        &p,
        "CREATE TYPE mood AS ENUM ('very sad', 'sad', 'ok', 'happy');
         CREATE TYPE color AS ENUM ('red', 'green');
         CREATE SEQUENCE counter START 10 INCREMENT 2;
         CREATE SEQUENCE invoice_no AS integer START 1000;
         CREATE TABLE people (id serial PRIMARY KEY, m mood NOT NULL DEFAULT 'ok', c color,
             badge bigint GENERATED BY DEFAULT AS IDENTITY);",
    );
    assert!(
        up.contains("ALTER TYPE mood ADD VALUE 'very sad' BEFORE 'sad';"),
        "{up}"
    );
    assert!(
        up.contains("ALTER TYPE mood ADD VALUE 'happy' AFTER 'ok';"),
        "{up}"
    );
    assert!(up.contains("DROP TYPE gone;"), "{up}");
    assert!(up.contains("DROP SEQUENCE unused;"), "{up}");
    // A value removed: the type is swapped, the rows converted.
    let (up, _) = round_trip(
        &p,
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TYPE color AS ENUM ('red', 'green');
         CREATE SEQUENCE counter START 10 INCREMENT 2;
         CREATE SEQUENCE invoice_no AS integer START 1000;
         CREATE TABLE people (id serial PRIMARY KEY, m mood NOT NULL DEFAULT 'ok', c color,
             badge bigint GENERATED BY DEFAULT AS IDENTITY);",
    );
    assert!(up.contains("ALTER TYPE mood RENAME TO mood__old;"), "{up}");
    assert!(up.contains("-- DESTRUCTIVE: ~ enum mood"), "{up}");
    assert_eq!(
        p.count("SELECT count(*) AS n FROM people WHERE m = 'sad'"),
        1
    );
}

#[test]
fn sqlite_triggers_and_rebuilds_keep_rows_and_check_keys() {
    let p = start(
        Project::sqlite(),
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER, body TEXT);
         CREATE TABLE log (what TEXT);
         CREATE TRIGGER posts_log AFTER INSERT ON posts BEGIN INSERT INTO log VALUES ('post'); END;
         INSERT INTO users VALUES (1, 'ann');
         INSERT INTO posts VALUES (1, 1, 'a'), (2, 1, 'b');",
    );
    // posts gains a foreign key: a rebuild, whose trigger must come back.
    let (up, _) = round_trip(
        &p,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id), body TEXT);
         CREATE TABLE log (what TEXT);
         CREATE TRIGGER posts_log AFTER INSERT ON posts BEGIN INSERT INTO log VALUES ('post'); END;
         CREATE TRIGGER users_log AFTER INSERT ON users BEGIN INSERT INTO log VALUES ('user'); END;",
    );
    assert!(
        up.contains(
            "INSERT INTO _dbctl_new_posts (id, user_id, body) SELECT id, user_id, body FROM posts;"
        ),
        "{up}"
    );
    assert_eq!(p.count("SELECT count(*) AS n FROM posts"), 2);
    p.execute("INSERT INTO posts (id, user_id, body) VALUES (3, 1, 'c')");
    // Two rows from the base migration, and this one: the trigger is back.
    assert_eq!(
        p.count("SELECT count(*) AS n FROM log WHERE what = 'post'"),
        3
    );

    // A rebuild that adds a foreign key the rows break fails, and changes nothing.
    p.file(
        "schema.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id), body TEXT);
         CREATE TABLE log (what TEXT REFERENCES users (id));
         CREATE TRIGGER posts_log AFTER INSERT ON posts BEGIN INSERT INTO log VALUES ('post'); END;
         CREATE TRIGGER users_log AFTER INSERT ON users BEGIN INSERT INTO log VALUES ('user'); END;",
    );
    p.run(["revision", "log_fk", "--autogenerate"]).success();
    let before = schema_json(&p, p.url());
    p.run(["migrate", "up"])
        .code(1)
        .stderr_has("foreign_key_violations");
    assert_eq!(schema_json(&p, p.url()), before);
}

both_backends!(check_and_no_changes, |p: Project| {
    let p = start(p, BASE);
    let migrations = || {
        std::fs::read_dir(p.path().join("migrations"))
            .unwrap()
            .count()
    };
    p.file("schema.sql", BASE.split("INSERT").next().unwrap());
    // Nothing differs: no folder, exit 0.
    p.run(["revision", "same", "--autogenerate"])
        .success()
        .stdout_has("no changes");
    assert_eq!(migrations(), 1);
    let desired = format!(
        "{}\nCREATE TABLE extra (id INTEGER PRIMARY KEY);",
        BASE.split("INSERT").next().unwrap()
    )
    .replace("legacy TEXT, ", "");
    p.file("schema.sql", &desired);
    let run = p.run(["revision", "--check", "--format", "json"]);
    run.code(4);
    let json = run.json();
    let changes: Vec<&str> = json["autogenerate"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["summary"].as_str().unwrap())
        .collect();
    assert!(changes.contains(&"+ table extra"), "{changes:?}");
    assert_eq!(json["autogenerate"]["destructive"], 1, "{json}");
    assert!(json.get("version").is_none());
    assert_eq!(migrations(), 1);
    p.run(["revision", "--check"])
        .code(4)
        .stdout_has("+ table extra")
        .stderr_has("DESTRUCTIVE");
    p.run(["revision", "extra", "--autogenerate"]).success();
    assert_eq!(migrations(), 2);
    p.run(["revision", "--check"]).success();
});

both_backends!(renames, |p: Project| {
    let p = start(p, BASE);
    let desired = "
CREATE TABLE accounts (id INTEGER PRIMARY KEY, full_name VARCHAR(100) NOT NULL, legacy TEXT, age INTEGER);
CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES accounts (id), title TEXT);
CREATE TABLE old_stuff (id INTEGER PRIMARY KEY);
CREATE INDEX posts_user ON posts (user_id);
";
    p.file("schema.sql", desired);
    // Without hints: a drop and an add, with a comment saying how to rename instead.
    let run = p.run(["revision", "--check"]);
    run.code(4).stdout_has("- table users");
    let run = p.run([
        "revision",
        "rename",
        "--autogenerate",
        "--rename",
        "users=accounts",
        "--rename",
        "accounts.name=full_name",
        "--format",
        "json",
    ]);
    run.success();
    let (up, down) = written(&p, &run.json());
    assert!(up.contains("ALTER TABLE users RENAME TO accounts;"), "{up}");
    assert!(
        up.contains("ALTER TABLE accounts RENAME COLUMN name TO full_name;"),
        "{up}"
    );
    assert!(
        down.contains("ALTER TABLE accounts RENAME COLUMN full_name TO name;"),
        "{down}"
    );
    assert!(
        down.contains("ALTER TABLE accounts RENAME TO users;"),
        "{down}"
    );
    assert!(!up.contains("DESTRUCTIVE"), "{up}");
    p.run(["migrate", "up"]).success();
    assert_eq!(
        p.count("SELECT count(*) AS n FROM accounts WHERE full_name = 'ann'"),
        1
    );
    assert_eq!(schema_json(&p, p.url()), desired_json(&p, desired));
    p.run(["migrate", "down"]).success();
    assert_eq!(
        p.count("SELECT count(*) AS n FROM users WHERE name = 'bob'"),
        1
    );
    // A hint that names nothing is refused.
    p.run([
        "revision",
        "x",
        "--autogenerate",
        "--rename",
        "nope=accounts",
    ])
    .code(2)
    .stderr_has("no table nope");
});

both_backends!(refusals, |p: Project| {
    let p = start(p, BASE);
    p.run(["revision", "x", "--autogenerate"])
        .code(2)
        .stderr_has("schema.sql");
    p.file(
        "broken.sql",
        "CREATE TABLE t (id INTEGER PRIMARY KEY);\nCREATE TABLE oops (",
    );
    p.run(["revision", "x", "--autogenerate", "--from", "broken.sql"])
        .code(2)
        .stderr_has("broken.sql");
    p.run(["revision", "x", "--from", "broken.sql"])
        .code(2)
        .stderr_has("--autogenerate");
    p.run(["revision", "x", "--autogenerate", "--rename", "no_equals"])
        .code(2)
        .stderr_has("--rename");
    p.run(["revision", "x", "--autogenerate", "--sql", "SELECT 1"])
        .code(2);
    // The setting names the file.
    p.file("other.sql", BASE.split("INSERT").next().unwrap());
    let run = crate::support::Run::from(
        p.command()
            .env("DBCTL_SCHEMA_FILE", "other.sql")
            .args(["revision", "--check"])
            .output()
            .unwrap(),
    );
    run.success().stdout_has("other.sql");
    assert_eq!(
        std::fs::read_dir(p.path().join("migrations"))
            .unwrap()
            .count(),
        1
    );
});

/// Scratch databases of one dbctl process still on the server.
fn scratch_left(pid: u32) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query(format!(
        "SELECT count(*)::bigint AS n FROM pg_database WHERE datname LIKE 'dbctl\\_autogen\\_{pid}\\_%'"
    ))
    .get_result(&mut pg_admin())
    .unwrap();
    n.n
}

#[test]
fn postgres_scratch_database_dropped_on_error_and_interrupt() {
    let Some(p) = Project::postgres() else {
        return;
    };
    let p = start(p, BASE);
    // An error in the desired schema.
    p.file(
        "schema.sql",
        "CREATE TABLE a (id int);\nSELECT * FROM nowhere;",
    );
    let child = p
        .command()
        .args(["revision", "x", "--autogenerate"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(scratch_left(pid), 0);
    // An interrupt while the desired schema loads.
    p.file(
        "schema.sql",
        "CREATE TABLE a (id int);\nSELECT pg_sleep(30);",
    );
    let child = p
        .command()
        .args(["revision", "x", "--autogenerate"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = std::time::Instant::now();
    while scratch_left(pid) == 0 && started.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        scratch_left(pid) > 0,
        "the scratch databases never appeared"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed().as_secs() < 20);
    assert_eq!(scratch_left(pid), 0);
}

#[test]
fn postgres_dev_url_must_be_empty_and_is_left_empty() {
    let Some(p) = Project::postgres() else {
        return;
    };
    let p = start(p, BASE);
    let dev = unique_name("dbctl_dev");
    pg_admin()
        .batch_execute(&format!("CREATE DATABASE \"{dev}\""))
        .unwrap();
    let dev_url = pg_url_for(&dev);
    let cleanup = DropDb(dev.clone());
    p.file("schema.sql", "CREATE TABLE only_this (id int PRIMARY KEY);");
    p.run(["revision", "--check", "--dev-url", &dev_url])
        .code(4)
        .stdout_has("+ table only_this")
        .stdout_has("- table users");
    let mut conn = PgConnection::establish(&dev_url).unwrap();
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query(
        "SELECT count(*)::bigint AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
         WHERE s.nspname = 'public'",
    )
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(n.n, 0);
    conn.batch_execute("CREATE TABLE mine (id int)").unwrap();
    drop(conn);
    p.run(["revision", "--check", "--dev-url", &dev_url])
        .code(2)
        .stderr_has("not empty");
    drop(cleanup);
}

struct DropDb(String);

impl Drop for DropDb {
    fn drop(&mut self) {
        let _ = pg_admin().batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.0
        ));
    }
}
