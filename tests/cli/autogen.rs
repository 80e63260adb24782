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
    assert!(
        !run.stderr.contains("not written"),
        "a difference was left unwritten:\n{}",
        run.stderr
    );
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
fn postgres_generated_columns_identity_cycles_and_materialized_views() {
    let Some(p) = Project::postgres() else {
        return;
    };
    let p = start(
        p,
        "CREATE TABLE items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             price numeric(10,2) NOT NULL, qty int NOT NULL DEFAULT 1,
             total numeric GENERATED ALWAYS AS (price * qty) STORED);
         CREATE INDEX items_total ON items (total);
         CREATE VIEW cheap AS SELECT id, price FROM items WHERE price < 10;
         CREATE VIEW cheap_ids AS SELECT id FROM cheap;
         CREATE MATERIALIZED VIEW stats AS SELECT count(*) AS n FROM items;
         INSERT INTO items (price, qty) VALUES (2.5, 4);",
    );
    // A generation expression changed over columns whose types change (the column is dropped
    // first, added last, its index made again), identity kind changed, a self-reference, a
    // foreign key cycle between new tables, views over a changed table, a materialized view
    // with an index.
    let (up, _) = round_trip(
        &p,
        "CREATE TABLE items (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
             price numeric(12,2) NOT NULL, qty bigint NOT NULL DEFAULT 1,
             total numeric GENERATED ALWAYS AS (price * qty * 2) STORED,
             parent_id int REFERENCES items (id));
         CREATE INDEX items_total ON items (total);
         CREATE VIEW cheap AS SELECT id, price FROM items WHERE price < 10;
         CREATE VIEW cheap_ids AS SELECT id FROM cheap;
         CREATE MATERIALIZED VIEW stats AS SELECT count(*) AS n, sum(qty) AS q FROM items;
         CREATE UNIQUE INDEX stats_n ON stats (n);
         CREATE TABLE a (id int PRIMARY KEY, b_id int);
         CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id));
         ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b (id);",
    );
    assert!(
        up.contains("ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b (id);"),
        "{up}"
    );
    assert!(up.contains("SET GENERATED BY DEFAULT;"), "{up}");
    assert_eq!(p.count("SELECT total::bigint AS n FROM items"), 20);
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
    p.run(["revision", "x", "--autogenerate", "--from", "migrations"])
        .code(2)
        .stderr_has("not a regular file");
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

/// Random schemas and random edits: small, deterministic (the seed is in the failure message).
mod random {
    use super::*;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    const TYPES: &[&str] = &[
        "INTEGER",
        "TEXT",
        "VARCHAR(20)",
        "VARCHAR(40)",
        "NUMERIC(10, 2)",
    ];

    #[derive(Clone)]
    struct Col {
        name: String,
        ty: &'static str,
        not_null: bool,
        default: bool,
    }

    #[derive(Clone)]
    struct Tbl {
        name: String,
        cols: Vec<Col>,
        /// (constraint name, column).
        uniques: Vec<(String, String)>,
        checks: Vec<(String, String)>,
        /// (constraint name, column, referred table).
        fks: Vec<(String, String, String)>,
        /// (index name, column, kind: 0 plain, 1 partial, 2 expression).
        indexes: Vec<(String, String, u8)>,
    }

    #[derive(Clone, Default)]
    struct Model {
        tables: Vec<Tbl>,
        counter: usize,
        /// SQLite takes foreign keys only inside CREATE TABLE (and to tables created later);
        /// PostgreSQL gets them after every table exists.
        sqlite: bool,
    }

    fn default_of(ty: &str) -> &'static str {
        match ty {
            "INTEGER" => "7",
            "NUMERIC(10, 2)" => "1.5",
            _ => "'x'",
        }
    }

    fn check_of(ty: &str, col: &str) -> String {
        match ty {
            "INTEGER" | "NUMERIC(10, 2)" => format!("{col} >= 0"),
            _ => format!("length({col}) < 100"),
        }
    }

    impl Model {
        fn fresh(&mut self, prefix: &str) -> String {
            self.counter += 1;
            format!("{prefix}{}", self.counter)
        }

        fn sql(&self) -> String {
            let mut out = String::new();
            for t in &self.tables {
                let mut lines = vec!["id INTEGER PRIMARY KEY".to_string()];
                for c in &t.cols {
                    let mut line = format!("{} {}", c.name, c.ty);
                    if c.not_null {
                        line.push_str(" NOT NULL");
                    }
                    if c.default {
                        line.push_str(&format!(" DEFAULT {}", default_of(c.ty)));
                    }
                    lines.push(line);
                }
                for (n, c) in &t.uniques {
                    lines.push(format!("CONSTRAINT {n} UNIQUE ({c})"));
                }
                for (n, c) in &t.checks {
                    let ty = t
                        .cols
                        .iter()
                        .find(|x| &x.name == c)
                        .map_or("TEXT", |x| x.ty);
                    lines.push(format!("CONSTRAINT {n} CHECK ({})", check_of(ty, c)));
                }
                if self.sqlite {
                    for (n, c, r) in &t.fks {
                        lines.push(format!(
                            "CONSTRAINT {n} FOREIGN KEY ({c}) REFERENCES {r} (id)"
                        ));
                    }
                }
                out.push_str(&format!(
                    "CREATE TABLE {} (\n    {}\n);\n",
                    t.name,
                    lines.join(",\n    ")
                ));
            }
            for t in self.tables.iter().filter(|_| !self.sqlite) {
                for (n, c, r) in &t.fks {
                    out.push_str(&format!(
                        "ALTER TABLE {} ADD CONSTRAINT {n} FOREIGN KEY ({c}) REFERENCES {r} (id);\n",
                        t.name
                    ));
                }
            }
            for t in &self.tables {
                for (n, c, kind) in &t.indexes {
                    out.push_str(&match kind {
                        0 => format!("CREATE INDEX {n} ON {} ({c});\n", t.name),
                        1 => format!(
                            "CREATE INDEX {n} ON {} ({c}) WHERE {c} IS NOT NULL;\n",
                            t.name
                        ),
                        _ => format!("CREATE INDEX {n} ON {} (({c} IS NULL));\n", t.name),
                    });
                }
            }
            out
        }

        fn add_table(&mut self, rng: &mut Rng) {
            let name = self.fresh("t");
            let mut t = Tbl {
                name,
                cols: Vec::new(),
                uniques: Vec::new(),
                checks: Vec::new(),
                fks: Vec::new(),
                indexes: Vec::new(),
            };
            for _ in 0..1 + rng.below(3) {
                let c = self.new_col(rng);
                t.cols.push(c);
            }
            self.tables.push(t);
        }

        fn new_col(&mut self, rng: &mut Rng) -> Col {
            let ty = TYPES[rng.below(TYPES.len())];
            let default = rng.chance(40);
            Col {
                name: self.fresh("c"),
                ty,
                not_null: default && rng.chance(50),
                default,
            }
        }

        /// One random edit.
        fn edit(&mut self, rng: &mut Rng) {
            if self.tables.is_empty() {
                return self.add_table(rng);
            }
            let ti = rng.below(self.tables.len());
            let has_cols = !self.tables[ti].cols.is_empty();
            let pick_col = |t: &Tbl, rng: &mut Rng| t.cols[rng.below(t.cols.len())].name.clone();
            match rng.below(15) {
                0 => self.add_table(rng),
                1 if self.tables.len() > 1 => {
                    let gone = self.tables.remove(ti).name;
                    for t in &mut self.tables {
                        t.fks.retain(|f| f.2 != gone);
                    }
                }
                2 => {
                    let c = self.new_col(rng);
                    self.tables[ti].cols.push(c);
                }
                3 if has_cols => {
                    let t = &mut self.tables[ti];
                    let c = pick_col(t, rng);
                    t.cols.retain(|x| x.name != c);
                    t.uniques.retain(|x| x.1 != c);
                    t.checks.retain(|x| x.1 != c);
                    t.fks.retain(|x| x.1 != c);
                    t.indexes.retain(|x| x.1 != c);
                }
                4 if has_cols => {
                    let t = &mut self.tables[ti];
                    let c = pick_col(t, rng);
                    let ty = TYPES[rng.below(TYPES.len())];
                    if let Some(col) = t.cols.iter_mut().find(|x| x.name == c) {
                        col.ty = ty;
                    }
                    t.checks.retain(|x| x.1 != c);
                    t.fks.retain(|x| x.1 != c);
                }
                5 if has_cols => {
                    let t = &mut self.tables[ti];
                    let i = rng.below(t.cols.len());
                    t.cols[i].not_null = !t.cols[i].not_null;
                }
                6 if has_cols => {
                    let t = &mut self.tables[ti];
                    let i = rng.below(t.cols.len());
                    t.cols[i].default = !t.cols[i].default;
                }
                7 if has_cols => {
                    let name = self.fresh("ix");
                    let t = &mut self.tables[ti];
                    let c = pick_col(t, rng);
                    let kind = rng.below(3) as u8;
                    t.indexes.push((format!("{}_{name}", t.name), c, kind));
                }
                8 if !self.tables[ti].indexes.is_empty() => {
                    let t = &mut self.tables[ti];
                    let i = rng.below(t.indexes.len());
                    t.indexes.remove(i);
                }
                9 if has_cols => {
                    let name = self.fresh("uq");
                    let t = &mut self.tables[ti];
                    let c = pick_col(t, rng);
                    if !t.uniques.iter().any(|u| u.1 == c) {
                        t.uniques.push((format!("{}_{name}", t.name), c));
                    }
                }
                10 if !self.tables[ti].uniques.is_empty() => {
                    self.tables[ti].uniques.remove(0);
                }
                11 if has_cols => {
                    let name = self.fresh("ck");
                    let t = &mut self.tables[ti];
                    let c = pick_col(t, rng);
                    t.checks.push((format!("{}_{name}", t.name), c));
                }
                12 if !self.tables[ti].checks.is_empty() => {
                    self.tables[ti].checks.remove(0);
                }
                13 => {
                    let target = self.tables[rng.below(self.tables.len())].name.clone();
                    let col = self.fresh("ref");
                    let fk = self.fresh("fk");
                    let t = &mut self.tables[ti];
                    t.cols.push(Col {
                        name: col.clone(),
                        ty: "INTEGER",
                        not_null: false,
                        default: false,
                    });
                    t.fks.push((format!("{}_{fk}", t.name), col, target));
                }
                14 if !self.tables[ti].fks.is_empty() => {
                    self.tables[ti].fks.remove(0);
                }
                _ => self.edit(rng),
            }
        }
    }

    fn schemas_and_edits(p: Project, seeds: std::ops::Range<u64>) {
        let mut p = p;
        for seed in seeds {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let mut model = Model {
                sqlite: p.backend == Backend::Sqlite,
                ..Model::default()
            };
            for _ in 0..2 + rng.below(2) {
                model.add_table(&mut rng);
            }
            for _ in 0..3 {
                model.edit(&mut rng);
            }
            let before = model.sql();
            let mut edited = model.clone();
            for _ in 0..1 + rng.below(4) {
                edited.edit(&mut rng);
            }
            // Edits can cancel out: edit until something differs.
            while edited.sql() == before {
                edited.edit(&mut rng);
            }
            let after = edited.sql();
            // Each seed starts from its own schema: a fresh migrations folder and database.
            p = match p.backend {
                Backend::Sqlite => Project::sqlite(),
                Backend::Postgres => Project::postgres().expect("PostgreSQL"),
            };
            let q = start(p, &before);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                round_trip(&q, &after);
            }));
            if let Err(e) = result {
                panic!(
                    "seed {seed}: {}\n--- from\n{before}\n--- to\n{after}",
                    e.downcast_ref::<String>().cloned().unwrap_or_default()
                );
            }
            p = q;
        }
    }

    // 8 seeds by default; DBCTL_TEST_AUTOGEN_SEEDS=N runs seeds 1..=N.
    both_backends!(random_schemas_and_edits, |p: Project| {
        let n = std::env::var("DBCTL_TEST_AUTOGEN_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8);
        schemas_and_edits(p, 1..n + 1);
    });
}

/// Issue 14: a desired schema with each object kind the model gained (comments, deferrable and
/// `NOT VALID` constraints, triggers, functions and procedures, extensions, domains, composite
/// types) is written, converges (`--check` finds nothing after `migrate up`), and goes back.
#[test]
fn postgres_comments_deferral_triggers_functions_and_types() {
    let Some(p) = Project::postgres() else {
        return;
    };
    let p = start(p, "CREATE TABLE old_stuff (id INTEGER PRIMARY KEY);");
    let (up, down) = round_trip(
        &p,
        "
CREATE TABLE old_stuff (id INTEGER PRIMARY KEY);
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE DOMAIN posint AS integer DEFAULT 1 NOT NULL CONSTRAINT pos CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, n posint, p pair);
COMMENT ON TABLE users IS 'people';
COMMENT ON COLUMN users.name IS 'it''s a name';
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM users';
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE PROCEDURE noop(x int) LANGUAGE sql AS 'SELECT 1';
CREATE TRIGGER users_insert BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER users_update BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch();
ALTER TABLE users DISABLE TRIGGER users_update;
CREATE TABLE posts (id serial PRIMARY KEY,
    user_id int REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    slug text UNIQUE DEFERRABLE, score int DEFAULT f());
ALTER TABLE posts ADD CONSTRAINT posts_id_check CHECK (id > 0) NOT VALID;
ALTER TABLE posts ADD CONSTRAINT posts_author FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;
CREATE VIEW names AS SELECT id, name FROM users;
COMMENT ON VIEW names IS 'just names';
CREATE TRIGGER names_insert INSTEAD OF INSERT ON names FOR EACH ROW EXECUTE FUNCTION touch();
",
    );
    for want in [
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;",
        "CREATE DOMAIN posint AS integer DEFAULT 1 NOT NULL CONSTRAINT pos CHECK (VALUE > 0);",
        "CREATE TYPE pair AS (a integer, b text);",
        "CREATE OR REPLACE FUNCTION public.f()",
        "CREATE OR REPLACE PROCEDURE public.noop(IN x integer)",
        "FOREIGN KEY (user_id) REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED",
        "UNIQUE (slug) DEFERRABLE",
        "ALTER TABLE posts ADD CONSTRAINT posts_id_check CHECK (id > 0) NOT VALID;",
        "ALTER TABLE users DISABLE TRIGGER users_update;",
        "COMMENT ON TABLE users IS 'people';",
        "COMMENT ON COLUMN users.name IS 'it''s a name';",
        "COMMENT ON VIEW names IS 'just names';",
    ] {
        assert!(up.contains(want), "{want}\n--- up.sql\n{up}");
    }
    // Functions before the tables that use them; an SQL function reading a table after it;
    // triggers after their function.
    let at = |s: &str| {
        up.find(s)
            .unwrap_or_else(|| panic!("{s}\n--- up.sql\n{up}"))
    };
    assert!(at("FUNCTION public.f()") < at("CREATE TABLE posts"), "{up}");
    assert!(
        at("CREATE TABLE users") < at("FUNCTION public.user_count()"),
        "{up}"
    );
    assert!(
        at("FUNCTION public.touch()") < at("CREATE TRIGGER users_insert"),
        "{up}"
    );
    assert!(
        at("CREATE VIEW names") < at("CREATE TRIGGER names_insert"),
        "{up}"
    );
    // Down: functions and types after the tables.
    let at = |s: &str| {
        down.find(s)
            .unwrap_or_else(|| panic!("{s}\n--- down.sql\n{down}"))
    };
    assert!(at("DROP TABLE posts;") < at("DROP FUNCTION f();"), "{down}");
    assert!(
        at("DROP TABLE users;") < at("DROP DOMAIN posint;"),
        "{down}"
    );
    assert!(
        at("DROP FUNCTION touch();") < at("DROP EXTENSION pgcrypto;"),
        "{down}"
    );

    // Each of them changed in place.
    let (up, down) = round_trip(
        &p,
        "
CREATE TABLE old_stuff (id INTEGER PRIMARY KEY);
CREATE DOMAIN posint AS integer DEFAULT 2 CONSTRAINT pos CHECK (VALUE > 0) CONSTRAINT small CHECK (VALUE < 1000);
CREATE TYPE pair AS (a int, b text, c int);
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, n posint, p pair);
COMMENT ON TABLE users IS 'persons';
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2';
CREATE FUNCTION user_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM users';
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER users_insert AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER users_update BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TABLE posts (id serial PRIMARY KEY, user_id int REFERENCES users (id), slug text UNIQUE,
    score int DEFAULT f());
ALTER TABLE posts ADD CONSTRAINT posts_id_check CHECK (id > 0);
ALTER TABLE posts ADD CONSTRAINT posts_author FOREIGN KEY (user_id) REFERENCES users (id) DEFERRABLE;
CREATE VIEW names AS SELECT id, name FROM users;
CREATE TRIGGER names_insert INSTEAD OF INSERT ON names FOR EACH ROW EXECUTE FUNCTION touch();
",
    );
    for want in [
        "ALTER DOMAIN posint SET DEFAULT 2;",
        "ALTER DOMAIN posint DROP NOT NULL;",
        "ALTER DOMAIN posint ADD CONSTRAINT small CHECK (VALUE < 1000);",
        "ALTER TYPE pair ADD ATTRIBUTE c integer;",
        "AS $function$SELECT 2$function$;",
        "ALTER TABLE posts VALIDATE CONSTRAINT posts_id_check;",
        "ALTER TABLE posts VALIDATE CONSTRAINT posts_author;",
        "ALTER TABLE posts ALTER CONSTRAINT posts_author DEFERRABLE INITIALLY IMMEDIATE;",
        "ALTER TABLE posts ALTER CONSTRAINT posts_user_id_fkey NOT DEFERRABLE;",
        "DROP TRIGGER users_insert ON users;",
        "ALTER TABLE users ENABLE TRIGGER users_update;",
        "COMMENT ON TABLE users IS 'persons';",
        "COMMENT ON COLUMN users.name IS NULL;",
        "COMMENT ON VIEW names IS NULL;",
        "DROP PROCEDURE noop(IN x integer);",
        "DROP EXTENSION pgcrypto;",
    ] {
        assert!(up.contains(want), "{want}\n--- up.sql\n{up}");
    }
    assert!(
        down.contains("-- DESTRUCTIVE: ~ composite type pair: fields dropped or added\nALTER TYPE pair DROP ATTRIBUTE c;"),
        "{down}"
    );
    assert!(!up.contains("DROP CONSTRAINT posts_user_id_fkey"), "{up}");
}

/// What autogen cannot write is never passed over: a composite type whose fields change while a
/// column holds it is listed as not written, on stderr, in the JSON report and in up.sql, and
/// `--check` exits 4.
#[test]
fn postgres_what_cannot_be_written_is_listed_and_check_differs() {
    let Some(p) = Project::postgres() else {
        return;
    };
    let p = start(
        p,
        "CREATE TYPE pair AS (a int, b text); CREATE TABLE t (id int PRIMARY KEY, p pair);",
    );
    p.run(["migrate", "up", "-q"]).success();
    p.file(
        "schema.sql",
        "CREATE TYPE pair AS (a bigint, b text); CREATE TABLE t (id int PRIMARY KEY, p pair);",
    );
    p.run(["revision", "--check"])
        .code(4)
        .stdout_has("not written: composite type pair")
        .stderr_has("not written: composite type pair");
    let run = p.run([
        "revision",
        &next_name(),
        "--autogenerate",
        "--format",
        "json",
    ]);
    run.success().stderr_has("not written: composite type pair");
    let json = run.json();
    let listed = json.to_string();
    assert!(
        listed.contains("not written: composite type pair"),
        "{listed}"
    );
    let (up, _) = written(&p, &json);
    assert!(
        up.contains("-- NOT WRITTEN (write it by hand): composite type pair"),
        "{up}"
    );
}

/// SQLite: a foreign key's deferral is part of the table's DDL, so changing it rebuilds the
/// table (it used to pass unnoticed), and triggers on tables and views still come back.
#[test]
fn sqlite_deferrable_foreign_keys_and_view_triggers() {
    let p = start(
        Project::sqlite(),
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id), body TEXT);
         INSERT INTO users VALUES (1, 'ann');
         INSERT INTO posts VALUES (1, 1, 'a');",
    );
    let desired = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE posts (id INTEGER PRIMARY KEY,
             user_id INTEGER REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED, body TEXT);
         CREATE TABLE log (what TEXT);
         CREATE VIEW bodies AS SELECT id, body FROM posts;
         CREATE TRIGGER bodies_insert INSTEAD OF INSERT ON bodies
             BEGIN INSERT INTO posts (id, body) VALUES (NEW.id, NEW.body); END;
         CREATE TRIGGER posts_log AFTER INSERT ON posts BEGIN INSERT INTO log VALUES ('post'); END;";
    let (up, down) = round_trip(&p, desired);
    assert!(up.contains("DEFERRABLE INITIALLY DEFERRED"), "{up}");
    assert!(
        up.contains("ALTER TABLE _dbctl_new_posts RENAME TO posts;"),
        "{up}"
    );
    assert!(
        down.contains("ALTER TABLE _dbctl_new_posts RENAME TO posts;"),
        "{down}"
    );
    assert_eq!(p.count("SELECT count(*) AS n FROM posts"), 1);
    // A change elsewhere that rebuilds posts again keeps the view's trigger.
    round_trip(
        &p,
        &desired.replace(
            "body TEXT);",
            "body TEXT, extra INTEGER NOT NULL DEFAULT (1));",
        ),
    );
    p.execute("INSERT INTO bodies (id, body) VALUES (5, 'via view')");
    assert_eq!(p.count("SELECT count(*) AS n FROM posts WHERE id = 5"), 1);
    assert_eq!(p.count("SELECT count(*) AS n FROM log"), 1);
}

/// Issue 14's report, as it was written: an empty migrations folder and a schema with a comment,
/// a function and a deferred foreign key. The comment, the function and `DEFERRABLE` are written,
/// and after `migrate up` the check converges (it used to drop and add the key forever).
#[test]
fn postgres_issue_14_report_converges() {
    let Some(p) = Project::postgres() else {
        return;
    };
    std::fs::create_dir_all(p.path().join("migrations")).unwrap();
    p.file(
        "schema.sql",
        "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
         COMMENT ON TABLE users IS 'people';
         CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE TABLE posts (id serial PRIMARY KEY,
             user_id int REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED);",
    );
    let run = p.run(["revision", "init", "--autogenerate", "--format", "json"]);
    run.success();
    let (up, _) = written(&p, &run.json());
    assert!(up.contains("COMMENT ON TABLE users IS 'people';"), "{up}");
    assert!(up.contains("CREATE OR REPLACE FUNCTION public.f()"), "{up}");
    assert!(up.contains("DEFERRABLE INITIALLY DEFERRED"), "{up}");
    p.run(["migrate", "up"]).success();
    p.run(["revision", "--check", "--autogenerate"])
        .success()
        .stdout_has("no changes");
    // The domain's base type cannot change while a column uses it: listed, not guessed.
    p.file(
        "schema.sql",
        "CREATE DOMAIN code AS text; CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
         COMMENT ON TABLE users IS 'people';
         CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE TABLE posts (id serial PRIMARY KEY,
             user_id int REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED, c code);",
    );
    p.run(["revision", "code", "--autogenerate"]).success();
    p.run(["migrate", "up"]).success();
    p.file(
        "schema.sql",
        "CREATE DOMAIN code AS varchar(10); CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
         COMMENT ON TABLE users IS 'people';
         CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE TABLE posts (id serial PRIMARY KEY,
             user_id int REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED, c code);",
    );
    p.run(["revision", "--check"])
        .code(4)
        .stdout_has("not written: domain code: type text -> character varying(10)")
        .stderr_has("not written: domain code");
}

/// SQLite: the same schema written with other spacing, quoting and case stays "no changes"
/// (the check that lists differences no writer saw compares SQLite's text in normal form too).
#[test]
fn sqlite_same_schema_written_otherwise_is_no_change() {
    let p = start(
        Project::sqlite(),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n TEXT);
         CREATE VIEW v AS SELECT  id   FROM t;
         CREATE INDEX ix ON t(n);
         CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;",
    );
    p.run(["migrate", "up", "-q"]).success();
    p.file(
        "schema.sql",
        "create table \"t\" (id integer primary key, n text);
         create view v as select id from t;
         create index ix on t (n);
         create trigger tr after insert on t begin select 1; end;",
    );
    p.run(["revision", "--check"])
        .success()
        .stdout_has("no changes");
}

/// PostgreSQL: a trigger and a column comment follow a table and a column renamed by hint: no
/// drop and create of the trigger (which would name the table before its rename), and the
/// migration converges and reverts.
#[test]
fn postgres_triggers_and_comments_follow_renames() {
    let Some(p) = Project::postgres() else {
        return;
    };
    let p = start(
        p,
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
         CREATE TABLE users (id int PRIMARY KEY, mail text);
         CREATE TRIGGER stamp BEFORE UPDATE OF mail ON users FOR EACH ROW EXECUTE FUNCTION touch();
         COMMENT ON COLUMN users.mail IS 'where to write';",
    );
    p.run(["migrate", "up", "-q"]).success();
    let before = schema_json(&p, p.url());
    p.file(
        "schema.sql",
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
         CREATE TABLE accounts (id int PRIMARY KEY, email text);
         CREATE TRIGGER stamp BEFORE UPDATE OF email ON accounts FOR EACH ROW EXECUTE FUNCTION touch();
         COMMENT ON COLUMN accounts.email IS 'where to write';",
    );
    let run = p.run([
        "revision",
        "renames",
        "--autogenerate",
        "--rename",
        "users=accounts",
        "--rename",
        "accounts.mail=email",
        "--format",
        "json",
    ]);
    run.success();
    let (up, _) = written(&p, &run.json());
    assert!(!up.contains("TRIGGER"), "{up}");
    assert!(!up.contains("COMMENT"), "{up}");
    p.run(["migrate", "up"]).success();
    p.run(["revision", "--check"])
        .success()
        .stdout_has("no changes");
    p.run(["migrate", "down"]).success();
    assert_eq!(schema_json(&p, p.url()), before);
}
