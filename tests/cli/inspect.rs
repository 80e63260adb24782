//! `dbctl inspect`: schemas built by real migrations (`dbctl init` applies them), read back on
//! both backends; the JSON model, the diagrams, `--diff` and `--lint`.

use serde_json::Value;

use crate::both_backends;
use crate::support::{Backend, Project, Run};

/// A schema with the awkward parts: composite key, self-reference, partial and expression
/// indexes, quoted mixed-case names with a space, a view, and on PostgreSQL an enum.
fn rich_schema(p: &mut Project) {
    let mood = match p.backend {
        Backend::Postgres => "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');",
        Backend::Sqlite => "",
    };
    let mood_type = match p.backend {
        Backend::Postgres => "mood",
        Backend::Sqlite => "TEXT",
    };
    p.migration(
        "people",
        &format!(
            "{mood}
            CREATE TABLE people (
                id INTEGER CONSTRAINT pk_people PRIMARY KEY,
                email VARCHAR(200) NOT NULL,
                feeling {mood_type} DEFAULT 'ok',
                deleted_at TIMESTAMP,
                CONSTRAINT uq_people_email UNIQUE (email),
                CONSTRAINT ck_people_email_has_at CHECK (email LIKE '%@%')
            );
            CREATE INDEX ix_people_lower_email ON people (lower(email));
            CREATE INDEX ix_people_deleted_at ON people (deleted_at) WHERE deleted_at IS NULL;
            CREATE TABLE categories (
                id INTEGER CONSTRAINT pk_categories PRIMARY KEY,
                parent_id INTEGER,
                CONSTRAINT fk_categories_parent_id_categories FOREIGN KEY (parent_id) REFERENCES categories (id)
            );
            CREATE INDEX ix_categories_parent_id ON categories (parent_id);"
        ),
        None,
    );
    p.migration(
        "order_items",
        r#"CREATE TABLE "Order Items" (
                "OrderId" INTEGER NOT NULL,
                "Line No" INTEGER NOT NULL,
                person_id INTEGER NOT NULL,
                "Qty" INTEGER NOT NULL DEFAULT 1,
                CONSTRAINT "pk_Order Items" PRIMARY KEY ("OrderId", "Line No"),
                CONSTRAINT "fk_Order Items_person_id_people" FOREIGN KEY (person_id) REFERENCES people (id) ON DELETE CASCADE
            );
            CREATE INDEX "ix_Order Items_person_id" ON "Order Items" (person_id);
            CREATE VIEW live_people AS SELECT id, email FROM people WHERE deleted_at IS NULL;"#,
        None,
    );
    p.run(["init"]).success();
}

fn inspect_json(p: &Project, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", "--format", "json"];
    args.extend_from_slice(extra);
    let run = p.run(&args);
    run.success();
    run.json()
}

fn table<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {json:#}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

both_backends!(reads_a_rich_schema, |mut p: Project| {
    rich_schema(&mut p);
    let json = inspect_json(&p, &[]);
    let names: Vec<&str> = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Order Items", "categories", "people"],
        "sorted, internal tables hidden"
    );

    let items = table(&json, "Order Items");
    assert_eq!(
        strings(&items["primary_key"]["columns"]),
        ["OrderId", "Line No"]
    );
    assert_eq!(items["primary_key"]["name"], "pk_Order Items");
    let fk = &items["foreign_keys"][0];
    assert_eq!(fk["name"], "fk_Order Items_person_id_people");
    assert_eq!(fk["referred_table"], "people");
    assert_eq!(strings(&fk["referred_columns"]), ["id"]);
    assert_eq!(fk["on_delete"], "CASCADE");
    assert_eq!(fk["on_update"], "NO ACTION");
    let qty = &items["columns"][3];
    assert_eq!(qty["name"], "Qty");
    assert_eq!(qty["nullable"], false);
    assert_eq!(qty["default"], "1");

    let cats = table(&json, "categories");
    let self_ref = &cats["foreign_keys"][0];
    assert_eq!(self_ref["referred_table"], "categories");
    assert_eq!(strings(&self_ref["columns"]), ["parent_id"]);

    let people = table(&json, "people");
    assert_eq!(people["unique_constraints"][0]["name"], "uq_people_email");
    assert_eq!(
        strings(&people["unique_constraints"][0]["columns"]),
        ["email"]
    );
    assert_eq!(people["checks"][0]["name"], "ck_people_email_has_at");
    assert!(people["checks"][0]["expression"]
        .as_str()
        .unwrap()
        .contains("email"));
    let indexes = people["indexes"].as_array().unwrap();
    assert_eq!(
        indexes.len(),
        2,
        "the unique constraint's index is not listed: {indexes:?}"
    );
    let partial = &indexes[0];
    assert_eq!(partial["name"], "ix_people_deleted_at");
    assert!(partial["predicate"]
        .as_str()
        .unwrap()
        .contains("deleted_at IS NULL"));
    assert_eq!(partial["expression"], false);
    let expr = &indexes[1];
    assert_eq!(expr["name"], "ix_people_lower_email");
    assert_eq!(expr["expression"], true);
    assert_eq!(expr["predicate"], Value::Null);
    assert!(
        expr["columns"][0].as_str().unwrap().starts_with("lower("),
        "{expr}"
    );
    assert!(expr["definition"].as_str().unwrap().contains("lower("));

    let view = &json["views"][0];
    assert_eq!(view["name"], "live_people");
    let view_cols: Vec<&str> = view["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(view_cols, ["id", "email"]);

    assert_eq!(json["migrations"]["applied"], 2);
    assert_eq!(json["migrations"]["pending"], 0);
    match p.backend {
        Backend::Postgres => {
            assert_eq!(json["enums"][0]["name"], "mood");
            assert_eq!(strings(&json["enums"][0]["values"]), ["sad", "ok", "happy"]);
            assert_eq!(people["columns"][2]["type"], "mood");
            assert_eq!(json["row_counts"], "estimate");
            assert_eq!(json["schemas"][0], "public");
        }
        Backend::Sqlite => {
            assert_eq!(json["enums"], Value::Array(vec![]));
            assert_eq!(json["row_counts"], "exact");
            assert_eq!(people["rows"], 0);
        }
    }
});

both_backends!(json_is_byte_identical_across_runs, |mut p: Project| {
    rich_schema(&mut p);
    let a = p.run(["inspect", "--format", "json"]);
    let b = p.run(["inspect", "--format", "json"]);
    a.success();
    b.success();
    assert_eq!(a.stdout, b.stdout);
    let c = p.run(["inspect", "--format", "mermaid"]);
    let d = p.run(["inspect", "--format", "mermaid"]);
    assert_eq!(c.stdout, d.stdout);
});

both_backends!(human_overview_and_detail, |mut p: Project| {
    rich_schema(&mut p);
    let run = p.run(["inspect"]);
    run.success()
        .stdout_has("migrations: 2 applied, 0 pending")
        .stdout_has("Order Items")
        .stdout_has("OrderId, Line No")
        .stdout_has("parent_id → categories(id)")
        .stdout_has("live_people");
    assert!(!run.stdout.contains("__diesel_schema_migrations"));
    let detail = p.run(["inspect", "Order Items", "live_people"]);
    detail
        .success()
        .stdout_has("table Order Items")
        .stdout_has("fk_Order Items_person_id_people")
        .stdout_has("ON DELETE CASCADE")
        .stdout_has("ix_Order Items_person_id")
        .stdout_has("view live_people");
    assert!(!detail.stdout.contains("categories"), "{}", detail.stdout);
    let json = inspect_json(&p, &["people"]);
    assert_eq!(json["tables"].as_array().unwrap().len(), 1);
});

both_backends!(unknown_table_is_a_usage_error, |mut p: Project| {
    rich_schema(&mut p);
    p.run(["inspect", "Peopl"])
        .code(2)
        .stderr_has("no table or view named `Peopl`")
        .stderr_has("did you mean people");
    // A hostile name is matched in memory, never pasted into SQL.
    p.run(["inspect", "people\"; DROP TABLE people; --"])
        .code(2);
    assert!(p.has_table("people"));
    // Scripts get one JSON document even on failure.
    let json = p.run(["inspect", "--format", "json", "nosuch"]);
    json.code(2);
    assert_eq!(json.json()["error"]["exit_code"], 2);
});

both_backends!(internal_tables_only_with_all, |mut p: Project| {
    rich_schema(&mut p);
    let json = inspect_json(&p, &["--all"]);
    let names: Vec<&str> = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"__diesel_schema_migrations"), "{names:?}");
    assert!(!inspect_json(&p, &[])
        .to_string()
        .contains("__diesel_schema_migrations"));
});

both_backends!(row_counts, |mut p: Project| {
    rich_schema(&mut p);
    p.execute("INSERT INTO people (id, email) VALUES (1, 'a@x'), (2, 'b@x'), (3, 'c@x')");
    let exact = inspect_json(&p, &["--exact"]);
    assert_eq!(exact["row_counts"], "exact");
    assert_eq!(table(&exact, "people")["rows"], 3);
    assert_eq!(table(&exact, "Order Items")["rows"], 0);
    let none = inspect_json(&p, &["--no-rows"]);
    assert_eq!(none["row_counts"], "none");
    assert_eq!(table(&none, "people")["rows"], Value::Null);
    if p.backend == Backend::Postgres {
        assert_eq!(
            table(&inspect_json(&p, &[]), "people")["rows"],
            Value::Null,
            "never analyzed"
        );
        p.execute("ANALYZE people");
        assert_eq!(table(&inspect_json(&p, &[]), "people")["rows"], 3);
    }
});

both_backends!(pending_migrations_are_counted, |mut p: Project| {
    rich_schema(&mut p);
    p.migration(
        "later",
        "CREATE TABLE later (id INTEGER PRIMARY KEY);",
        None,
    );
    let json = inspect_json(&p, &[]);
    assert_eq!(json["migrations"]["applied"], 2);
    assert_eq!(json["migrations"]["pending"], 1);
    assert!(json["migrations"]["last_applied"]
        .as_str()
        .unwrap()
        .starts_with("20240101"));
});

#[test]
fn postgres_schema_flag() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.migration(
        "other_schema",
        "CREATE SCHEMA billing; CREATE TABLE billing.invoices (id INTEGER PRIMARY KEY); \
         CREATE SEQUENCE billing.invoice_no START 1000 INCREMENT 10; \
         CREATE TABLE plain (id SERIAL PRIMARY KEY);",
        None,
    );
    p.run(["init"]).success();
    let public = inspect_json(&p, &[]);
    assert_eq!(strings(&public["schemas"]), ["public"]);
    assert_eq!(public["tables"].as_array().unwrap().len(), 1);
    assert_eq!(public["sequences"][0]["owned_by"], "plain.id");
    let billing = inspect_json(&p, &["--schema", "billing"]);
    assert_eq!(billing["tables"][0]["name"], "invoices");
    assert_eq!(billing["sequences"][0]["name"], "invoice_no");
    assert_eq!(billing["sequences"][0]["start"], 1000);
    assert_eq!(billing["sequences"][0]["increment"], 10);
    let both = inspect_json(&p, &["--schema", "billing", "--schema", "public"]);
    assert_eq!(both["tables"].as_array().unwrap().len(), 2);
    p.run(["inspect", "billing.invoices"]).code(2);
    p.run([
        "inspect",
        "--schema",
        "billing",
        "--schema",
        "public",
        "billing.invoices",
    ])
    .success()
    .stdout_has("table billing.invoices");
    p.run(["inspect", "--schema", "nope"])
        .code(2)
        .stderr_has("schema `nope` does not exist");
}

/// The changes a migration makes after the snapshot, one per kind of difference. Tables are
/// dropped and recreated, which SQLite needs for most changes.
fn changes(backend: Backend) -> String {
    let (mood, mood_type) = match backend {
        Backend::Postgres => ("ALTER TYPE mood ADD VALUE 'meh';", "mood"),
        Backend::Sqlite => ("", "TEXT"),
    };
    format!(
        r#"
    {mood}
    DROP VIEW live_people;
    DROP TABLE "Order Items";
    DROP TABLE people;
    DROP TABLE categories;
    CREATE TABLE people (
        id INTEGER CONSTRAINT pk_people PRIMARY KEY,
        email VARCHAR(200) NOT NULL,
        feeling {mood_type} DEFAULT 'ok',
        CONSTRAINT uq_people_email UNIQUE (email),
        CONSTRAINT ck_people_email_has_at CHECK (email LIKE '%@%')
    );
    CREATE INDEX ix_people_lower_email ON people (lower(email));
    CREATE TABLE categories (
        id INTEGER CONSTRAINT pk_cats PRIMARY KEY,
        parent_id INTEGER,
        CONSTRAINT fk_categories_parent_id_categories FOREIGN KEY (parent_id) REFERENCES categories (id) ON DELETE CASCADE
    );
    CREATE TABLE "Order Items" (
        "OrderId" INTEGER NOT NULL,
        "Line No" BIGINT NOT NULL,
        person_id INTEGER,
        "Qty" INTEGER NOT NULL DEFAULT 2,
        note TEXT,
        CONSTRAINT "pk_Order Items" PRIMARY KEY ("OrderId", "Line No"),
        CONSTRAINT "uq_Order Items_note" UNIQUE (note),
        CONSTRAINT "ck_Order Items_qty" CHECK ("Qty" > 0),
        CONSTRAINT "fk_Order Items_OrderId_categories" FOREIGN KEY ("OrderId") REFERENCES categories (id)
    );
    CREATE INDEX "ix_Order Items_person_id" ON "Order Items" (person_id, "Qty");
    CREATE INDEX "ix_Order Items_note" ON "Order Items" (note);
    CREATE TABLE tags (id INTEGER PRIMARY KEY);
    CREATE VIEW live_people AS SELECT id FROM people;
"#
    )
}

both_backends!(diff_finds_each_kind_of_difference, |mut p: Project| {
    rich_schema(&mut p);
    let snapshot = p.run(["inspect", "--format", "json"]);
    snapshot.success();
    p.file("schema.json", &snapshot.stdout);
    p.run(["inspect", "--diff", "schema.json"])
        .success()
        .stdout_has("no differences");
    let clean = p.run(["inspect", "--diff", "schema.json", "--format", "json"]);
    clean.success();
    assert_eq!(clean.json()["differences"], Value::Array(vec![]));

    p.migration("changes", &changes(p.backend), None);
    p.run(["init"]).success();
    let run = p.run(["inspect", "--diff", "schema.json", "--format", "json"]);
    run.code(4);
    let found: Vec<(String, String, String, String)> = run.json()["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["change"].as_str().unwrap().to_string(),
                d["object"].as_str().unwrap().to_string(),
                d["property"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expect = |kind: &str, change: &str, object: &str, property: &str| {
        let want = (
            kind.to_string(),
            change.to_string(),
            object.to_string(),
            property.to_string(),
        );
        assert!(found.contains(&want), "missing {want:?} in {found:#?}");
    };
    expect("table", "added", "tags", "");
    expect("column", "added", "Order Items.note", "");
    expect("column", "changed", "Order Items.Line No", "type");
    expect("column", "changed", "Order Items.person_id", "nullable");
    expect("column", "changed", "Order Items.Qty", "default");
    expect(
        "foreign_key",
        "removed",
        "Order Items.fk_Order Items_person_id_people",
        "",
    );
    expect("unique", "added", "Order Items.uq_Order Items_note", "");
    expect("check", "added", "Order Items.ck_Order Items_qty", "");
    expect(
        "index",
        "changed",
        "Order Items.ix_Order Items_person_id",
        "definition",
    );
    expect("index", "added", "Order Items.ix_Order Items_note", "");
    expect("view", "changed", "live_people", "columns");
    expect("view", "changed", "live_people", "definition");
    expect("column", "removed", "people.deleted_at", "");
    expect("index", "removed", "people.ix_people_deleted_at", "");
    expect(
        "foreign_key",
        "added",
        "Order Items.fk_Order Items_OrderId_categories",
        "",
    );
    expect(
        "foreign_key",
        "changed",
        "categories.fk_categories_parent_id_categories",
        "definition",
    );
    expect("index", "removed", "categories.ix_categories_parent_id", "");
    expect("primary_key", "changed", "categories", "name");
    if p.backend == Backend::Postgres {
        expect("enum", "changed", "mood", "values");
    }
    // What the migration recreated identically is not reported.
    assert!(
        !found
            .iter()
            .any(|f| f.2.contains("lower_email") || f.2.contains("uq_people")),
        "{found:#?}"
    );

    // The other way round: the snapshot has what the database lacks.
    let now = p.run(["inspect", "--format", "json"]);
    p.file("now.json", &now.stdout);
    p.execute("DROP TABLE tags");
    p.execute("DROP INDEX \"ix_Order Items_note\"");
    let back = p.run(["inspect", "--diff", "now.json"]);
    back.code(4)
        .stdout_has("2 differences")
        .stdout_has("- table tags")
        .stdout_has("- index Order Items.ix_Order Items_note");

    // Restricting to named tables compares only those.
    p.run(["inspect", "--diff", "now.json", "people"]).success();
});

both_backends!(diff_rejects_bad_snapshots, |mut p: Project| {
    rich_schema(&mut p);
    p.run(["inspect", "--diff", "missing.json"])
        .code(2)
        .stderr_has("missing.json");
    p.file("bad.json", "{\"tables\": 3}");
    p.run(["inspect", "--diff", "bad.json"])
        .code(2)
        .stderr_has("not a schema snapshot");
    let json = p.run(["inspect", "--format", "json"]).stdout;
    let other = match p.backend {
        Backend::Sqlite => json.replace("\"backend\": \"sqlite\"", "\"backend\": \"postgres\""),
        Backend::Postgres => json.replace("\"backend\": \"postgres\"", "\"backend\": \"sqlite\""),
    };
    p.file("other.json", other);
    p.run(["inspect", "--diff", "other.json"])
        .code(2)
        .stderr_has("same backend");
    p.run(["inspect", "--diff", "other.json", "--format", "mermaid"])
        .code(2);
});

/// A schema that breaks every lint rule once.
const MESSY: &str = r#"
    CREATE TABLE notes (body TEXT);
    CREATE TABLE authors (
        id INTEGER CONSTRAINT authors_pk PRIMARY KEY,
        email TEXT,
        CONSTRAINT email_unique UNIQUE (email),
        CONSTRAINT positive CHECK (id > 0)
    );
    CREATE TABLE books (
        id INTEGER CONSTRAINT pk_books PRIMARY KEY,
        author_id INTEGER CONSTRAINT books_author FOREIGN KEY REFERENCES authors (id),
        title TEXT
    );
    CREATE INDEX books_title ON books (title);
"#;

both_backends!(lint_reports_each_rule, |mut p: Project| {
    // Column-level FOREIGN KEY is not SQL; use REFERENCES (both backends accept it).
    p.migration(
        "messy",
        &MESSY.replace("FOREIGN KEY REFERENCES", "REFERENCES"),
        None,
    );
    p.run(["init"]).success();
    // Without a naming convention, the name rules do not run.
    let plain = p.run(["inspect", "--lint", "--format", "json"]);
    plain.code(4);
    let plain = plain.json();
    let rules: Vec<&str> = plain["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["unindexed-foreign-key", "missing-primary-key"]);
    assert!(!strings(&plain["rules"]).contains(&"pk-name".to_string()));
    assert_eq!(plain["counts"]["missing-primary-key"], 1);
    assert_eq!(plain["counts"]["duplicate-index"], 0);
    assert_eq!(plain["counts"].get("pk-name"), None);
    // Asked for by name, they run without the setting.
    let named = p.run(["inspect", "--lint", "--rule", "naming", "--format", "json"]);
    named.code(4);
    assert_eq!(named.json()["problems"].as_array().unwrap().len(), 5);
    assert_eq!(strings(&named.json()["rules"]).len(), 5);

    p.env("DBCTL_LINT_NAMING", "sqlalchemy");
    let run = p.run(["inspect", "--lint", "--format", "json"]);
    run.code(4);
    let json = run.json();
    let problems: Vec<(String, String)> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["rule"].as_str().unwrap().to_string(),
                p["table"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |rule: &str, table: &str| problems.contains(&(rule.to_string(), table.to_string()));
    assert!(has("missing-primary-key", "notes"), "{problems:?}");
    assert!(has("unindexed-foreign-key", "books"), "{problems:?}");
    assert!(has("pk-name", "authors"), "{problems:?}");
    assert!(has("fk-name", "books"), "{problems:?}");
    assert!(has("uq-name", "authors"), "{problems:?}");
    assert!(has("ck-name", "authors"), "{problems:?}");
    assert!(has("ix-name", "books"), "{problems:?}");
    assert!(!has("pk-name", "books"), "pk_books is right: {problems:?}");
    assert_eq!(problems.len(), 7, "{problems:?}");

    let human = p.run(["inspect", "--lint"]);
    human
        .code(4)
        .stdout_has("primary key authors_pk should be named pk_authors")
        .stdout_has("7 problems: missing-primary-key 1, unindexed-foreign-key 1, pk-name 1");

    // Rules off, everywhere or for one table.
    let fewer = p.run([
        "inspect",
        "--lint",
        "--format",
        "json",
        "--allow",
        "naming",
        "--allow",
        "missing-primary-key:notes",
    ]);
    fewer.code(4);
    let left = fewer.json()["problems"].as_array().unwrap().clone();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["rule"], "unindexed-foreign-key");
    p.run([
        "inspect",
        "--lint",
        "--allow",
        "naming,missing-primary-key,unindexed-foreign-key",
    ])
    .success()
    .stdout_has("no problems");
    p.run(["inspect", "--lint", "--allow", "pk-names"])
        .code(2)
        .stderr_has("unknown lint rule `pk-names`");
});

#[test]
fn lint_allow_is_a_setting_read_from_env_file_and_environment() {
    let mut p = Project::sqlite();
    p.migration(
        "messy",
        &MESSY.replace("FOREIGN KEY REFERENCES", "REFERENCES"),
        None,
    );
    p.run(["init"]).success();
    let rules = |run: &Run| -> Vec<String> {
        run.json()["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rule"].as_str().unwrap().to_string())
            .collect()
    };

    // From .env: honoured, and -v says where it came from.
    p.file(
        ".env",
        "DBCTL_LINT_NAMING=sqlalchemy\nDBCTL_LINT_ALLOW=naming,missing-primary-key:notes\n",
    );
    let run = p.run(["inspect", "--lint", "--format", "json"]);
    run.code(4);
    assert_eq!(rules(&run), ["unindexed-foreign-key"]);
    p.run(["inspect", "--lint", "-v"]).code(4).stderr_has(
        "lint rules turned off: naming, missing-primary-key:notes (from DBCTL_LINT_ALLOW in .env)",
    );

    // --allow wins over the setting.
    let run = p.run([
        "inspect",
        "--lint",
        "--format",
        "json",
        "--allow",
        "unindexed-foreign-key",
    ]);
    run.code(4);
    let got = rules(&run);
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(!got.contains(&"unindexed-foreign-key".to_string()));

    // A bad rule names the setting and the file (exit 2).
    p.file(".env", "DBCTL_LINT_ALLOW=pk-names\n");
    p.run(["inspect", "--lint"]).code(2).stderr_has(
        "unknown lint rule `pk-names` in DBCTL_LINT_ALLOW (from DBCTL_LINT_ALLOW in .env)",
    );

    // The environment wins over .env.
    p.env(
        "DBCTL_LINT_ALLOW",
        "naming,missing-primary-key,unindexed-foreign-key",
    );
    p.run(["inspect", "--lint", "-v"])
        .success()
        .stdout_has("no problems")
        .stderr_has("(from the environment variable DBCTL_LINT_ALLOW)");
}

both_backends!(lint_passes_a_conventional_schema, |mut p: Project| {
    p.migration(
        "clean",
        "CREATE TABLE authors (id INTEGER, email TEXT NOT NULL, \
             CONSTRAINT pk_authors PRIMARY KEY (id), CONSTRAINT uq_authors_email UNIQUE (email), \
             CONSTRAINT ck_authors_email_long CHECK (length(email) > 3)); \
         CREATE TABLE books (id INTEGER, author_id INTEGER NOT NULL, title TEXT, \
             CONSTRAINT pk_books PRIMARY KEY (id), \
             CONSTRAINT fk_books_author_id_authors FOREIGN KEY (author_id) REFERENCES authors (id)); \
         CREATE INDEX ix_books_author_id ON books (author_id); \
         CREATE INDEX ix_books_lower_title ON books (lower(title)); \
         CREATE UNIQUE INDEX uq_books_title ON books (title);",
        None,
    );
    p.run(["init"]).success();
    p.run(["inspect", "--lint"])
        .success()
        .stdout_has("no problems");
    p.env("DBCTL_LINT_NAMING", "sqlalchemy");
    p.run(["inspect", "--lint"])
        .success()
        .stdout_has("no problems (11 rules checked");
});

both_backends!(mermaid_and_dot_are_well_formed, |mut p: Project| {
    rich_schema(&mut p);
    let mermaid = p.run(["inspect", "--format", "mermaid"]);
    mermaid.success();
    let text = &mermaid.stdout;
    assert!(text.starts_with("erDiagram\n"), "{text}");
    assert!(text.contains("    \"Order Items\" {\n"), "{text}");
    assert!(
        text.contains("        INTEGER OrderId PK") || text.contains("        integer OrderId PK"),
        "{text}"
    );
    assert!(text.contains("Line_No PK \"Line No\""), "{text}");
    assert!(
        text.contains("    people ||..o{ \"Order Items\" : \"fk_Order Items_person_id_people\""),
        "{text}"
    );
    assert!(
        text.contains("    categories |o..o{ categories : \"fk_categories_parent_id_categories\""),
        "{text}"
    );
    assert_eq!(
        text.matches('{').count() - text.matches("o{").count(),
        text.matches('}').count()
    );

    let dot = p.run(["inspect", "--format", "dot"]);
    dot.success();
    let text = &dot.stdout;
    assert!(text.starts_with("digraph schema {"), "{text}");
    assert!(text.trim_end().ends_with('}'));
    assert_eq!(text.matches(" -> ").count(), 2, "{text}");
    assert!(text.contains("<B>Order Items</B>"));
    // Every edge joins declared nodes.
    for line in text.lines().filter(|l| l.contains(" -> ")) {
        for end in line.trim().split(" -> ") {
            let node = end.split([':', ' ']).next().unwrap();
            assert!(text.contains(&format!("    {node} [label=")), "{line}");
        }
    }
    p.run(["inspect", "--format", "mermaid", "--lint"]).code(2);
    p.run(["ping", "--format", "mermaid"]).code(2);
});

both_backends!(generated_columns, |mut p: Project| {
    p.migration(
        "generated",
        "CREATE TABLE g (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) STORED);",
        None,
    );
    p.run(["init"]).success();
    let json = inspect_json(&p, &["g"]);
    let b = &table(&json, "g")["columns"][2];
    assert_eq!(b["name"], "b");
    assert!(b["generated"].as_str().unwrap().contains('2'), "{b}");
    assert_eq!(b["default"], Value::Null);
});

#[test]
fn sqlite_view_over_a_dropped_table_does_not_break_inspect() {
    let mut p = Project::sqlite();
    p.migration(
        "broken_view",
        "CREATE TABLE a (x INTEGER); CREATE VIEW v AS SELECT x FROM a; \
         CREATE VIEW fine AS SELECT 1 AS one; DROP TABLE a;",
        None,
    );
    p.run(["init"]).success();
    let json = inspect_json(&p, &[]);
    let views = json["views"].as_array().unwrap();
    assert_eq!(views.len(), 2);
    assert_eq!(views[0]["name"], "fine");
    assert_eq!(views[0]["columns"][0]["name"], "one");
    assert_eq!(views[1]["columns"], Value::Array(vec![]));
}

both_backends!(diff_reports_column_order, |mut p: Project| {
    p.migration(
        "t",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT);",
        None,
    );
    p.run(["init"]).success();
    let snapshot = p.run(["inspect", "--format", "json", "--no-rows"]);
    p.file("s.json", &snapshot.stdout);
    p.migration(
        "reorder",
        "DROP TABLE t; CREATE TABLE t (id INTEGER PRIMARY KEY, b TEXT, a TEXT);",
        None,
    );
    p.run(["init"]).success();
    let run = p.run(["inspect", "--diff", "s.json", "--format", "json"]);
    run.code(4);
    let diffs = run.json()["differences"].as_array().unwrap().clone();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0]["kind"], "table");
    assert_eq!(diffs[0]["property"], "column_order");
    assert_eq!(diffs[0]["from"], "id, a, b");
    assert_eq!(diffs[0]["to"], "id, b, a");
    p.run(["inspect", "--diff", "s.json", "nosuch"])
        .code(2)
        .stderr_has("no table or view named `nosuch`");
});

/// The SQL statements one `inspect` sends, from `DB_ECHO`'s log.
fn statements(p: &Project, args: &[&str]) -> usize {
    let mut cmd = p.command();
    cmd.env("DB_ECHO", "true")
        .args(["inspect", "--format", "json"])
        .args(args);
    let out = cmd.output().expect("run dbctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr)
        .matches("[sql] ")
        .count()
}

both_backends!(query_count_does_not_grow_with_tables, |mut p: Project| {
    p.migration(
        "one",
        "CREATE TABLE t0 (id INTEGER PRIMARY KEY, v TEXT);",
        None,
    );
    p.run(["init"]).success();
    let few = (statements(&p, &[]), statements(&p, &["--exact"]));
    // Each table also has a trigger; on PostgreSQL a comment, a commented column, a NOT VALID
    // check, a function, a domain and a composite type of its own.
    let many: String = (1..40)
        .map(|i| {
            let tables = format!(
                "CREATE TABLE t{i} (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES t{} (id), v TEXT);
                 CREATE INDEX ix_t{i}_parent_id ON t{i} (parent_id);",
                i - 1
            );
            let more = match p.backend {
                Backend::Sqlite => format!(
                    "CREATE TRIGGER trg_t{i} AFTER UPDATE ON t{i} BEGIN SELECT 1; END;"
                ),
                Backend::Postgres => format!(
                    "COMMENT ON TABLE t{i} IS 'table {i}'; COMMENT ON COLUMN t{i}.v IS 'v';
                     ALTER TABLE t{i} ADD CONSTRAINT ck_t{i} CHECK (id > 0) NOT VALID;
                     CREATE FUNCTION f{i}() RETURNS trigger LANGUAGE plpgsql
                         AS $$ BEGIN RETURN NEW; END $$;
                     CREATE TRIGGER trg_t{i} BEFORE UPDATE ON t{i}
                         FOR EACH ROW EXECUTE FUNCTION f{i}();
                     CREATE DOMAIN d{i} AS integer CHECK (VALUE > {i});
                     CREATE TYPE c{i} AS (a integer, b text);"
                ),
            };
            format!("{tables}\n{more}\n")
        })
        .collect();
    p.migration("many", &many, None);
    p.run(["init"]).success();
    let json = inspect_json(&p, &[]);
    assert_eq!(json["tables"].as_array().unwrap().len(), 40);
    assert_eq!(table(&json, "t39")["triggers"][0]["name"], "trg_t39");
    if p.backend == Backend::Postgres {
        assert_eq!(json["functions"].as_array().unwrap().len(), 39);
        assert_eq!(json["domains"].as_array().unwrap().len(), 39);
        assert_eq!(json["composite_types"].as_array().unwrap().len(), 39);
        assert_eq!(table(&json, "t39")["comment"], "table 39");
    }
    let lots = (statements(&p, &[]), statements(&p, &["--exact"]));
    assert_eq!(few, lots, "statements for 1 table vs 40 tables");
    // Connection setup, the pre-ping, the catalog queries and the migration bookkeeping reads
    // (PostgreSQL reads 11 catalog queries since model version 2 added triggers, types,
    // functions and extensions, four more than before).
    assert!(few.0 <= 20, "{few:?}");
});

#[test]
fn postgres_materialized_view_and_identity() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.migration(
        "mv",
        "CREATE TABLE events (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL); \
         CREATE MATERIALIZED VIEW event_kinds AS SELECT kind, count(*) AS n FROM events GROUP BY kind; \
         CREATE UNIQUE INDEX ix_event_kinds_kind ON event_kinds (kind);",
        None,
    );
    p.run(["init"]).success();
    let json = inspect_json(&p, &[]);
    assert_eq!(table(&json, "events")["columns"][0]["identity"], "always");
    let mv = &json["views"][0];
    assert_eq!(mv["materialized"], true);
    assert_eq!(mv["indexes"][0]["name"], "ix_event_kinds_kind");
    assert_eq!(json["sequences"][0]["owned_by"], "events.id");
    p.file("s.json", p.run(["inspect", "--format", "json"]).stdout);
    p.execute("DROP INDEX ix_event_kinds_kind");
    p.run(["inspect", "--diff", "s.json"])
        .code(4)
        .stdout_has("- index event_kinds.ix_event_kinds_kind");
    p.run(["inspect", "event_kinds"])
        .success()
        .stdout_has("materialized view event_kinds");
}

both_backends!(migration_line_comes_from_the_engine, |mut p: Project| {
    p.migration(
        "one",
        "CREATE TABLE one (id INTEGER PRIMARY KEY);",
        Some("DROP TABLE one;"),
    );
    p.run(["init", "-q"]).success();
    let json = inspect_json(&p, &[]);
    assert_eq!(json["migrations"]["applied"], 1);
    assert_eq!(json["migrations"]["pending"], 0);
    assert_eq!(json["migrations"]["modified"], 0);
    // Changing an applied up.sql shows in the line as it does in `migrate status`.
    let dir = std::fs::read_dir(p.path().join("migrations"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::write(
        dir.path().join("up.sql"),
        "CREATE TABLE one (id BIGINT PRIMARY KEY);",
    )
    .unwrap();
    let json = inspect_json(&p, &[]);
    assert_eq!(json["migrations"]["modified"], 1);
    p.run(["inspect"]).success().stdout_has("1 modified");
});

/// The differences of a `--diff --format json` run as (kind, change, object, property).
fn differences(run: &Run) -> Vec<(String, String, String, String)> {
    run.json()["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
            (s("kind"), s("change"), s("object"), s("property"))
        })
        .collect()
}

/// A PostgreSQL schema with every object of model version 2.
const PG_OBJECTS: &str = r#"
    CREATE EXTENSION IF NOT EXISTS pgcrypto;
    CREATE TYPE money_pair AS (amount numeric(12, 2), currency char(3));
    CREATE DOMAIN positive_int AS integer NOT NULL DEFAULT 1
        CONSTRAINT positive_int_check CHECK (VALUE > 0);
    CREATE TABLE accounts (id INTEGER PRIMARY KEY, code TEXT,
        CONSTRAINT uq_accounts_code UNIQUE (code) DEFERRABLE);
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        account_id INTEGER,
        qty positive_int,
        CONSTRAINT fk_entries_account_id_accounts FOREIGN KEY (account_id)
            REFERENCES accounts (id) DEFERRABLE INITIALLY DEFERRED
    );
    CREATE INDEX ix_entries_account_id ON entries (account_id);
    ALTER TABLE entries ADD CONSTRAINT ck_entries_id CHECK (id > 0) NOT VALID;
    ALTER TABLE entries ADD CONSTRAINT fk_entries_id_accounts FOREIGN KEY (id)
        REFERENCES accounts (id) NOT VALID;
    COMMENT ON TABLE entries IS 'ledger lines';
    COMMENT ON COLUMN entries.qty IS 'how many';
    CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
    CREATE FUNCTION twice(n integer) RETURNS integer LANGUAGE sql AS $$ SELECT n * 2 $$;
    CREATE PROCEDURE settle(account integer) LANGUAGE sql AS $$ SELECT 1 $$;
    CREATE TRIGGER trg_entries_touch BEFORE UPDATE ON entries
        FOR EACH ROW EXECUTE FUNCTION touch();
    CREATE VIEW entry_ids AS SELECT id FROM entries;
    COMMENT ON VIEW entry_ids IS 'ids only';
"#;

#[test]
fn postgres_model_objects_in_json_and_human() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.migration("objects", PG_OBJECTS, None);
    p.run(["init"]).success();
    let json = inspect_json(&p, &[]);
    assert_eq!(json["dbctl_schema_version"], 2);

    let entries = table(&json, "entries");
    assert_eq!(entries["comment"], "ledger lines");
    assert_eq!(entries["columns"][2]["comment"], "how many");
    assert_eq!(entries["columns"][2]["type"], "positive_int");
    assert_eq!(entries["columns"][0]["comment"], Value::Null);
    let fks = entries["foreign_keys"].as_array().unwrap();
    let deferred = fks
        .iter()
        .find(|f| f["name"] == "fk_entries_account_id_accounts")
        .unwrap();
    assert_eq!(deferred["deferrable"], true);
    assert_eq!(deferred["initially_deferred"], true);
    assert_eq!(deferred["validated"], true);
    let unvalidated = fks
        .iter()
        .find(|f| f["name"] == "fk_entries_id_accounts")
        .unwrap();
    assert_eq!(unvalidated["validated"], false);
    assert_eq!(unvalidated["deferrable"], false);
    assert_eq!(entries["checks"][0]["name"], "ck_entries_id");
    assert_eq!(entries["checks"][0]["validated"], false);
    let trigger = &entries["triggers"][0];
    assert_eq!(trigger["name"], "trg_entries_touch");
    assert_eq!(trigger["enabled"], true);
    assert!(trigger["definition"]
        .as_str()
        .unwrap()
        .starts_with("CREATE TRIGGER trg_entries_touch BEFORE UPDATE ON"));
    let accounts = table(&json, "accounts");
    assert_eq!(accounts["unique_constraints"][0]["deferrable"], true);
    assert_eq!(
        accounts["unique_constraints"][0]["initially_deferred"],
        false
    );
    assert_eq!(accounts["triggers"], Value::Array(vec![]));
    assert_eq!(json["views"][0]["comment"], "ids only");

    let composite = &json["composite_types"][0];
    assert_eq!(composite["name"], "money_pair");
    assert_eq!(composite["attributes"][0]["name"], "amount");
    assert_eq!(composite["attributes"][0]["type"], "numeric(12,2)");
    assert_eq!(composite["attributes"][1]["type"], "character(3)");
    let domain = &json["domains"][0];
    assert_eq!(domain["name"], "positive_int");
    assert_eq!(domain["type"], "integer");
    assert_eq!(domain["nullable"], false);
    assert_eq!(domain["default"], "1");
    assert_eq!(domain["checks"][0]["name"], "positive_int_check");
    assert_eq!(domain["checks"][0]["expression"], "VALUE > 0");

    let functions: Vec<(String, String, String, Value)> = json["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
                f["arguments"].as_str().unwrap().to_string(),
                f["returns"].clone(),
            )
        })
        .collect();
    // pgcrypto's own functions (digest, crypt, ...) belong to the extension, not the schema.
    assert_eq!(
        functions,
        [
            (
                "settle".into(),
                "procedure".into(),
                "IN account integer".into(),
                Value::Null
            ),
            (
                "touch".into(),
                "function".into(),
                String::new(),
                "trigger".into()
            ),
            (
                "twice".into(),
                "function".into(),
                "n integer".into(),
                "integer".into()
            ),
        ]
    );
    let twice = &json["functions"][2];
    assert_eq!(twice["language"], "sql");
    assert!(twice["definition"]
        .as_str()
        .unwrap()
        .contains("SELECT n * 2"));
    let extensions: Vec<&str> = json["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(extensions.contains(&"pgcrypto"), "{extensions:?}");

    p.run(["inspect"])
        .success()
        .stdout_has("money_pair")
        .stdout_has("amount numeric(12,2), currency character(3)")
        .stdout_has("positive_int")
        .stdout_has("integer DEFAULT 1 NOT NULL CONSTRAINT positive_int_check CHECK (VALUE > 0)")
        .stdout_has("twice(n integer)")
        .stdout_has("settle(IN account integer)")
        .stdout_has("pgcrypto");
    p.run(["inspect", "entries", "accounts", "entry_ids"])
        .success()
        .stdout_has("comment: ledger lines")
        .stdout_has("how many")
        .stdout_has("REFERENCES accounts (id) DEFERRABLE INITIALLY DEFERRED")
        .stdout_has("CHECK (id > 0) NOT VALID")
        .stdout_has("UNIQUE (code) DEFERRABLE")
        .stdout_has("trg_entries_touch")
        .stdout_has("EXECUTE FUNCTION touch()")
        .stdout_has("comment: ids only");
}

#[test]
fn postgres_diff_catches_each_new_kind_of_change() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    p.migration("objects", PG_OBJECTS, None);
    p.run(["init"]).success();
    p.file("s.json", p.run(["inspect", "--format", "json"]).stdout);
    p.run(["inspect", "--diff", "s.json"])
        .success()
        .stdout_has("no differences");

    // Each statement alone is a difference that version 1 of the model did not see.
    let one_by_one = [
        (
            "ALTER TABLE entries VALIDATE CONSTRAINT ck_entries_id",
            ("check", "changed", "entries.ck_entries_id", "definition"),
        ),
        (
            "ALTER TABLE entries VALIDATE CONSTRAINT fk_entries_id_accounts",
            (
                "foreign_key",
                "changed",
                "entries.fk_entries_id_accounts",
                "definition",
            ),
        ),
        (
            "ALTER TABLE entries ALTER CONSTRAINT fk_entries_account_id_accounts NOT DEFERRABLE",
            (
                "foreign_key",
                "changed",
                "entries.fk_entries_account_id_accounts",
                "definition",
            ),
        ),
        (
            "CREATE TRIGGER trg_entries_again AFTER INSERT ON entries \
             FOR EACH ROW EXECUTE FUNCTION touch()",
            ("trigger", "added", "entries.trg_entries_again", ""),
        ),
        (
            "ALTER TABLE entries DISABLE TRIGGER trg_entries_touch",
            (
                "trigger",
                "changed",
                "entries.trg_entries_touch",
                "definition",
            ),
        ),
        (
            "COMMENT ON TABLE entries IS 'journal lines'",
            ("table", "changed", "entries", "comment"),
        ),
        (
            "COMMENT ON COLUMN entries.qty IS NULL",
            ("column", "changed", "entries.qty", "comment"),
        ),
        (
            "CREATE OR REPLACE FUNCTION twice(n integer) RETURNS integer LANGUAGE sql \
             AS $$ SELECT n + n $$",
            ("function", "changed", "twice(n integer)", "definition"),
        ),
        (
            "CREATE FUNCTION twice(n bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT n * 2 $$",
            ("function", "added", "twice(n bigint)", ""),
        ),
        (
            "DROP PROCEDURE settle(integer)",
            ("procedure", "removed", "settle(IN account integer)", ""),
        ),
        (
            "DROP EXTENSION pgcrypto",
            ("extension", "removed", "pgcrypto", ""),
        ),
        (
            "ALTER TYPE money_pair ADD ATTRIBUTE note text",
            ("composite_type", "changed", "money_pair", "attributes"),
        ),
        (
            "ALTER DOMAIN positive_int DROP DEFAULT",
            ("domain", "changed", "positive_int", "definition"),
        ),
    ];
    for (sql, (kind, change, object, property)) in one_by_one {
        p.execute(sql);
        let run = p.run(["inspect", "--diff", "s.json", "--format", "json"]);
        run.code(4);
        let found = differences(&run);
        let want = (
            kind.to_string(),
            change.to_string(),
            object.to_string(),
            property.to_string(),
        );
        assert!(
            found.contains(&want),
            "after {sql}: missing {want:?} in {found:#?}"
        );
        // The snapshot moves on, so that each step shows only its own change.
        assert_eq!(found.len(), 1, "after {sql}: {found:#?}");
        p.file("s.json", p.run(["inspect", "--format", "json"]).stdout);
    }
    p.execute("CREATE OR REPLACE FUNCTION twice(n integer) RETURNS integer LANGUAGE sql AS $$ SELECT 3 * n $$");
    p.run(["inspect", "--diff", "s.json"])
        .code(4)
        .stdout_has("~ function twice(n integer): definition changed from line 4:")
        .stdout_has("SELECT 3 * n");
}

#[test]
fn sqlite_triggers_and_deferrable_foreign_keys() {
    let mut p = Project::sqlite();
    p.migration(
        "objects",
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY);
         CREATE TABLE entries (
             id INTEGER PRIMARY KEY,
             account_id INTEGER REFERENCES accounts (id) DEFERRABLE INITIALLY DEFERRED,
             other_id INTEGER,
             CONSTRAINT fk_entries_other_id_accounts FOREIGN KEY (other_id) REFERENCES accounts (id)
         );
         CREATE INDEX ix_entries_account_id ON entries (account_id);
         CREATE INDEX ix_entries_other_id ON entries (other_id);
         CREATE TRIGGER trg_entries_touch AFTER UPDATE ON entries BEGIN SELECT 1; END;
         CREATE VIEW entry_ids AS SELECT id FROM entries;
         CREATE TRIGGER trg_entry_ids INSTEAD OF DELETE ON entry_ids BEGIN SELECT 1; END;",
        None,
    );
    p.run(["init"]).success();
    let json = inspect_json(&p, &[]);
    let entries = table(&json, "entries");
    let fk = |name: &str| {
        entries["foreign_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["columns"][0] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(fk("account_id")["deferrable"], true);
    assert_eq!(fk("account_id")["initially_deferred"], true);
    assert_eq!(fk("other_id")["deferrable"], false);
    assert_eq!(fk("other_id")["validated"], true);
    assert_eq!(entries["triggers"][0]["name"], "trg_entries_touch");
    assert!(entries["triggers"][0]["definition"]
        .as_str()
        .unwrap()
        .starts_with("CREATE TRIGGER trg_entries_touch AFTER UPDATE ON entries"));
    assert_eq!(json["views"][0]["triggers"][0]["name"], "trg_entry_ids");
    for kind in ["composite_types", "domains", "functions", "extensions"] {
        assert_eq!(json[kind], Value::Array(vec![]), "{kind}");
    }
    p.run(["inspect", "entries"])
        .success()
        .stdout_has("REFERENCES accounts (id) DEFERRABLE INITIALLY DEFERRED")
        .stdout_has("trg_entries_touch");

    p.file("s.json", p.run(["inspect", "--format", "json"]).stdout);
    p.execute("CREATE TRIGGER trg_entries_new AFTER INSERT ON entries BEGIN SELECT 2; END");
    let run = p.run(["inspect", "--diff", "s.json", "--format", "json"]);
    run.code(4);
    assert_eq!(
        differences(&run),
        [(
            "trigger".to_string(),
            "added".to_string(),
            "entries.trg_entries_new".to_string(),
            String::new()
        )]
    );
    // SQLite changes a foreign key by rebuilding the table.
    p.execute("DROP TRIGGER trg_entries_new");
    p.execute("DROP VIEW entry_ids");
    p.execute("DROP TABLE entries");
    p.execute(
        "CREATE TABLE entries (id INTEGER PRIMARY KEY, \
         account_id INTEGER REFERENCES accounts (id) NOT DEFERRABLE, other_id INTEGER, \
         CONSTRAINT fk_entries_other_id_accounts FOREIGN KEY (other_id) REFERENCES accounts (id))",
    );
    p.execute("CREATE INDEX ix_entries_account_id ON entries (account_id)");
    p.execute("CREATE INDEX ix_entries_other_id ON entries (other_id)");
    p.execute("CREATE TRIGGER trg_entries_touch AFTER UPDATE ON entries BEGIN SELECT 1; END");
    p.execute("CREATE VIEW entry_ids AS SELECT id FROM entries");
    p.execute("CREATE TRIGGER trg_entry_ids INSTEAD OF DELETE ON entry_ids BEGIN SELECT 1; END");
    let run = p.run(["inspect", "--diff", "s.json", "--format", "json"]);
    run.code(4);
    assert_eq!(
        differences(&run),
        [(
            "foreign_key".to_string(),
            "changed".to_string(),
            "entries.(account_id) -> accounts".to_string(),
            "definition".to_string()
        )]
    );
}

// The fixture snapshots were written by dbctl before model version 2, from `v1-schema.sql`.
both_backends!(old_snapshot_still_loads, |mut p: Project| {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inspect");
    let schema = std::fs::read_to_string(fixtures.join("v1-schema.sql")).unwrap();
    let snapshot = match p.backend {
        Backend::Sqlite => "v1-sqlite.json",
        Backend::Postgres => "v1-postgres.json",
    };
    let old = std::fs::read_to_string(fixtures.join(snapshot)).unwrap();
    assert!(old.contains("\"dbctl_schema_version\": 1"));
    p.file("old.json", &old);
    p.migration("books", &schema, None);
    p.run(["init"]).success();
    p.run(["inspect", "--diff", "old.json"])
        .success()
        .stdout_has("no differences")
        .stderr_has("version 1 snapshot");
    // What version 1 did not know is not compared (not reported as added); the rest still is.
    p.execute("CREATE TABLE later (id INTEGER PRIMARY KEY)");
    let trigger = match p.backend {
        Backend::Sqlite => "CREATE TRIGGER trg_books AFTER UPDATE ON books BEGIN SELECT 1; END",
        Backend::Postgres => {
            p.execute(
                "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN RETURN NEW; END $$",
            );
            "CREATE TRIGGER trg_books AFTER UPDATE ON books FOR EACH ROW EXECUTE FUNCTION touch()"
        }
    };
    p.execute(trigger);
    let run = p.run(["inspect", "--diff", "old.json", "--format", "json"]);
    run.code(4);
    assert_eq!(
        differences(&run),
        [(
            "table".to_string(),
            "added".to_string(),
            "later".to_string(),
            String::new()
        )]
    );
    // A snapshot from a later dbctl is refused.
    p.file(
        "new.json",
        old.replace(
            "\"dbctl_schema_version\": 1",
            "\"dbctl_schema_version\": 99",
        ),
    );
    p.run(["inspect", "--diff", "new.json"])
        .code(2)
        .stderr_has("dbctl_schema_version 99");
});

// The rules on by default: each fires once on `bad`, and stays quiet on the look-alikes.
both_backends!(lint_default_rules_fire_and_stay_quiet, |mut p: Project| {
    p.migration(
        "lintable",
        "CREATE TABLE parents (id INTEGER PRIMARY KEY, code TEXT, CONSTRAINT uq_parents_code UNIQUE (code));
         CREATE TABLE bad (
             id INTEGER PRIMARY KEY,
             parent_id INTEGER REFERENCES parents (id),
             a INTEGER, b INTEGER
         );
         CREATE INDEX ix_bad_parent_id ON bad (parent_id);
         CREATE INDEX ix_bad_a ON bad (a);
         CREATE INDEX ix_bad_a_b ON bad (a, b);
         CREATE INDEX ix_bad_a_b_again ON bad (a, b);
         CREATE TABLE good (
             id INTEGER PRIMARY KEY,
             parent_id INTEGER REFERENCES parents (id) ON DELETE CASCADE,
             a INTEGER, b INTEGER
         );
         CREATE INDEX ix_good_parent_id ON good (parent_id);
         CREATE UNIQUE INDEX uq_good_a ON good (a);
         CREATE INDEX ix_good_a_b ON good (a, b);
         CREATE INDEX ix_good_b ON good (b) WHERE a IS NULL;
         CREATE INDEX ix_good_b_a ON good (b, a);
         CREATE TABLE small (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parents (id));
         CREATE INDEX ix_small_parent_id ON small (parent_id);",
        None,
    );
    p.run(["init"]).success();
    p.execute("INSERT INTO parents (id, code) VALUES (1, 'a')");
    p.execute("INSERT INTO bad (id, parent_id) VALUES (1, 1), (2, 1), (3, 1), (4, 1)");
    p.execute("INSERT INTO good (id, parent_id) VALUES (1, 1), (2, 1), (3, 1), (4, 1)");
    p.execute("INSERT INTO small (id, parent_id) VALUES (1, 1)");
    if p.backend == Backend::Postgres {
        p.execute("ALTER TABLE bad ADD CONSTRAINT ck_bad_a CHECK (a > 0) NOT VALID");
        p.execute("ALTER TABLE good ADD CONSTRAINT ck_good_a CHECK (a > 0) NOT VALID");
        p.execute("ALTER TABLE good VALIDATE CONSTRAINT ck_good_a");
        // The rows of a table are PostgreSQL's estimate, known once analyzed.
        p.execute("ANALYZE");
    }
    p.env("DBCTL_LINT_LARGE_ROWS", "3");
    let run = p.run(["inspect", "--lint", "--format", "json"]);
    run.code(4);
    let json = run.json();
    let found: Vec<(String, String, String)> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            (s("rule"), s("table"), s("object"))
        })
        .collect();
    let unnamed_fk = match p.backend {
        Backend::Postgres => "bad_parent_id_fkey",
        Backend::Sqlite => "parent_id",
    };
    let mut want = vec![
        ("fk-without-on-delete", "bad", unnamed_fk),
        ("redundant-index", "bad", "ix_bad_a"),
        ("duplicate-index", "bad", "ix_bad_a_b_again"),
    ];
    if p.backend == Backend::Postgres {
        want.push(("not-valid-constraint", "bad", "ck_bad_a"));
    }
    let want: Vec<(String, String, String)> = want
        .into_iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    let mut sorted = found.clone();
    sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted, "{found:#?}");
    assert_eq!(json["counts"]["duplicate-index"], 1);
    assert_eq!(json["counts"]["redundant-index"], 1);
    assert_eq!(json["counts"]["fk-without-on-delete"], 1);
    assert_eq!(json["counts"]["missing-primary-key"], 0);
    p.run(["inspect", "--lint"])
        .code(4)
        .stdout_has("duplicate-index 1, redundant-index 1")
        .stdout_has("index ix_bad_a (a) is covered by index ix_bad_a_b (a, b)");

    // Below the size, a foreign key without ON DELETE is fine; without counts it is not judged.
    p.env("DBCTL_LINT_LARGE_ROWS", "1000");
    let run = p.run(["inspect", "--lint", "--format", "json"]);
    assert_eq!(run.json()["counts"]["fk-without-on-delete"], 0);
    p.env("DBCTL_LINT_LARGE_ROWS", "0");
    let run = p.run(["inspect", "--lint", "--no-rows", "--format", "json"]);
    assert_eq!(run.json()["counts"]["fk-without-on-delete"], 0);
    // Only the rules asked for run.
    p.run([
        "inspect",
        "--lint",
        "--rule",
        "missing-primary-key,unindexed-foreign-key",
    ])
    .success()
    .stdout_has("no problems (2 rules checked");
    p.run(["inspect", "--lint", "--rule", "nosuch"])
        .code(2)
        .stderr_has("unknown lint rule `nosuch` in --rule");
    p.env("DBCTL_LINT_LARGE_ROWS", "many");
    p.run(["inspect", "--lint"])
        .code(2)
        .stderr_has("invalid DBCTL_LINT_LARGE_ROWS");
});

#[test]
fn lint_naming_setting_is_checked() {
    let mut p = Project::sqlite();
    p.migration("t", "CREATE TABLE t (id INTEGER PRIMARY KEY);", None);
    p.run(["init"]).success();
    p.run(["inspect", "--lint"]).success();
    p.env("DBCTL_LINT_NAMING", "sqlalchemy");
    p.run(["inspect", "--lint", "-v"])
        .code(4)
        .stdout_has("primary key has no name (expected pk_t)")
        .stderr_has(
            "lint naming convention: sqlalchemy (from the environment variable DBCTL_LINT_NAMING)",
        );
    p.env("DBCTL_LINT_NAMING", "none");
    p.run(["inspect", "--lint"]).success();
    p.env("DBCTL_LINT_NAMING", "rails");
    p.run(["inspect", "--lint"])
        .code(2)
        .stderr_has("invalid DBCTL_LINT_NAMING `rails`")
        .stderr_has("expected sqlalchemy or none");
}
