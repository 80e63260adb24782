//! `dbctl seed`: foreign-key order, CSV edge cases, all-or-nothing on every kind of failure,
//! `--dry-run`, `--truncate`, hostile names, and the example app's seeds.

use crate::both_backends;
use crate::support::{Backend, Project};

/// Three tables whose dependency order is the reverse of their alphabetical order:
/// people <- orders <- items.
const SCHEMA: &str = "
CREATE TABLE people (
    id INTEGER PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    note TEXT,
    CONSTRAINT uq_people_name UNIQUE (name)
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people (id),
    placed_at TIMESTAMP
);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders (id),
    label TEXT
);
";

const PEOPLE: &str = "id,name,note\n1,Ada,first\n2,Alan,\n";
const ORDERS: &str = "id,person_id,placed_at\n10,1,2024-01-02 03:04:05\n11,2,\n";
const ITEMS: &str = "label,order_id,id\nbolt,10,100\nnut,11,101\nwasher,10,102\n";

fn project_with_schema(mut p: Project) -> Project {
    p.migration("schema", SCHEMA, None);
    p.run(["init", "-q"]).success();
    p
}

/// Every row of the three tables as text, so "unchanged" means exactly unchanged.
fn snapshot(p: &Project) -> Vec<Option<String>> {
    let mut rows = p.strings(
        "SELECT 'people|' || CAST(id AS TEXT) || '|' || name || '|' || COALESCE(note, '<NULL>') AS v \
         FROM people ORDER BY id",
    );
    rows.extend(p.strings(
        "SELECT 'orders|' || CAST(id AS TEXT) || '|' || CAST(person_id AS TEXT) || '|' \
         || COALESCE(CAST(placed_at AS TEXT), '<NULL>') AS v FROM orders ORDER BY id",
    ));
    rows.extend(p.strings(
        "SELECT 'items|' || CAST(id AS TEXT) || '|' || CAST(order_id AS TEXT) || '|' \
         || COALESCE(label, '<NULL>') AS v FROM items ORDER BY id",
    ));
    rows
}

fn count(p: &Project, table: &str) -> i64 {
    let cast = if p.backend == Backend::Postgres {
        "::bigint"
    } else {
        ""
    };
    p.count(&format!("SELECT count(*){cast} AS n FROM {table}"))
}

both_backends!(parents_load_before_children, |p: Project| {
    let p = project_with_schema(p);
    p.file("seeds/items.csv", ITEMS);
    p.file("seeds/orders.csv", ORDERS);
    p.file("seeds/people.csv", PEOPLE);
    p.file("seeds/README.txt", "not a seed file");
    let run = p.run(["seed", "--format", "json", "--verbose"]);
    run.success()
        .stderr_has("load order: people.csv -> people, orders.csv -> orders, items.csv -> items");
    let json = run.json();
    assert_eq!(json["committed"], true);
    assert_eq!(json["total_rows"], 7);
    let files: Vec<(&str, i64)> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["table"].as_str().unwrap(), f["rows"].as_i64().unwrap()))
        .collect();
    assert_eq!(files, [("people", 2), ("orders", 2), ("items", 3)]);
    assert_eq!(count(&p, "items"), 3);
    // Columns are matched by name: items.csv lists them in another order.
    assert_eq!(
        p.strings("SELECT label AS v FROM items WHERE id = 102"),
        [Some("washer".to_string())]
    );
    // Human output: a summary table.
    let p2 = p.run(["seed", "--truncate"]);
    p2.success()
        .stdout_has("people.csv")
        .stdout_has("seeded 7 rows from 3 files");
});

both_backends!(numeric_prefixes_and_sql_files, |p: Project| {
    let p = project_with_schema(p);
    // The prefix only orders; the .sql file runs after every file named before it.
    p.file("seeds/020_orders.csv", ORDERS);
    p.file(
        "seeds/010_people.sql",
        "INSERT INTO people (id, name) VALUES (1, 'Ada');\nINSERT INTO people (id, name) VALUES (2, 'Alan');\n",
    );
    p.file("seeds/030_fix.sql", "UPDATE people SET note = 'fixed';");
    let json = p.run(["seed", "--format", "json"]).json();
    let names: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sql", "csv", "sql"]);
    assert_eq!(json["files"][1]["table"], "orders");
    assert_eq!(count(&p, "orders"), 2);
    assert_eq!(
        p.strings("SELECT note AS v FROM people WHERE id = 2"),
        [Some("fixed".to_string())]
    );
});

both_backends!(csv_edge_cases, |p: Project| {
    let p = project_with_schema(p);
    let csv = concat!(
        "id,name,note\r\n",
        "1,\"Lovelace, Ada\",\"She said \"\"hello\"\"\"\r\n",
        "2,\"two\nlines\",\"\"\r\n",
        "3,Zoë ✓ 東京,\r\n",
        "4,\"back\\slash\",\"\\.\"\r\n",
        "5,plain,\" padded \"\r\n",
    );
    p.file("seeds/people.csv", csv);
    p.run(["seed", "-q"]).success();
    let names = p.strings("SELECT name AS v FROM people ORDER BY id");
    let notes = p.strings("SELECT note AS v FROM people ORDER BY id");
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        names,
        [
            s("Lovelace, Ada"),
            s("two\nlines"),
            s("Zoë ✓ 東京"),
            s("back\\slash"),
            s("plain")
        ]
    );
    // "" is an empty string, an empty unquoted field is NULL.
    assert_eq!(
        notes,
        [
            s("She said \"hello\""),
            s(""),
            None,
            s("\\."),
            s(" padded ")
        ]
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM people WHERE note IS NULL"),
        1
    );
});

/// A seeds folder whose first file (people) is valid, so that a failure in a later file must
/// also undo rows already loaded in the same run.
fn failing_case(p: &Project, name: &str, files: &[(&str, &str)]) -> String {
    let dir = format!("cases/{name}");
    p.file(
        &format!("{dir}/people.csv"),
        "id,name,note\n7,Grace,new\n8,Edsger,new\n",
    );
    for (file, body) in files {
        p.file(&format!("{dir}/{file}"), body);
    }
    let run = p.run(["seed", "--seeds-dir", &dir]);
    run.code(1).stderr_has("rolled back");
    run.stderr.clone()
}

both_backends!(every_failure_leaves_the_database_unchanged, |p: Project| {
    let p = project_with_schema(p);
    p.file("seeds/people.csv", PEOPLE);
    p.file("seeds/orders.csv", ORDERS);
    p.run(["seed", "-q"]).success();
    let before = snapshot(&p);
    assert_eq!(before.len(), 4);

    // Bad SQL (after a valid CSV, named after it).
    let err = failing_case(
        &p,
        "bad_sql",
        &[(
            "z_fix.sql",
            "UPDATE people SET note = 'x';\nUPDATE people SET note = 'y';\nUPDATEX people;\n",
        )],
    );
    assert!(err.contains("z_fix.sql"), "{err}");
    if p.backend == Backend::Postgres {
        assert!(err.contains("line 3"), "{err}");
    }
    assert!(err.contains("UPDATEX"), "{err}");
    assert_eq!(snapshot(&p), before);

    // A row with the wrong number of fields.
    let err = failing_case(
        &p,
        "width",
        &[("orders.csv", "id,person_id,placed_at\n20,7,\n21,8\n")],
    );
    assert!(
        err.contains("orders.csv row 2 (line 3): expected 3 fields as in the header, found 2"),
        "{err}"
    );
    assert_eq!(snapshot(&p), before);

    // A value the column refuses (an integer primary key given text), after a multi-line row.
    let err = failing_case(
        &p,
        "type",
        &[(
            "orders.csv",
            "id,person_id,placed_at\n20,7,\n21,8,\nabc,7,\n",
        )],
    );
    assert!(err.contains("orders.csv row 3 (line 4)"), "{err}");
    if p.backend == Backend::Postgres {
        assert!(err.contains("column id"), "{err}");
        assert!(err.contains("invalid input syntax"), "{err}");
    } else {
        assert!(err.contains("datatype mismatch"), "{err}");
    }
    assert_eq!(snapshot(&p), before);

    // A unique violation against a row already there.
    let err = failing_case(
        &p,
        "unique",
        &[
            ("persons.sql", ""),
            ("people.csv", "id,name\n7,Grace\n8,Ada\n"),
        ],
    );
    assert!(err.contains("people.csv row 2 (line 3)"), "{err}");
    assert!(
        err.to_lowercase().contains("unique") || err.contains("duplicate key"),
        "{err}"
    );
    assert_eq!(snapshot(&p), before);

    // A foreign key pointing nowhere.
    let err = failing_case(
        &p,
        "foreign_key",
        &[("orders.csv", "id,person_id\n20,7\n21,999\n")],
    );
    assert!(err.contains("orders.csv row 2 (line 3)"), "{err}");
    assert!(err.to_lowercase().contains("foreign key"), "{err}");
    assert_eq!(snapshot(&p), before);

    // An unknown table.
    let err = failing_case(&p, "unknown_table", &[("ghosts.csv", "id\n1\n")]);
    assert!(
        err.contains("ghosts.csv: table \"ghosts\" does not exist"),
        "{err}"
    );
    assert_eq!(snapshot(&p), before);

    // An unknown column.
    let err = failing_case(
        &p,
        "unknown_column",
        &[("orders.csv", "id,persn_id\n20,7\n")],
    );
    assert!(
        err.contains("orders.csv line 1, column 2: table \"orders\" has no column \"persn_id\""),
        "{err}"
    );
    assert_eq!(snapshot(&p), before);

    // An unreadable file (a link to nothing), loaded after a valid one.
    let dir = p.path().join("cases/unreadable");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(dir.join("missing-target"), dir.join("orders.csv")).unwrap();
    let err = failing_case(&p, "unreadable", &[]);
    assert!(err.contains("cannot read"), "{err}");
    assert!(err.contains("orders.csv"), "{err}");
    assert_eq!(snapshot(&p), before);

    // Text that is not UTF-8.
    p.file(
        "cases/not_utf8/orders.csv",
        b"id,person_id,placed_at\n20,7,\xff\n",
    );
    let err = failing_case(&p, "not_utf8", &[]);
    assert!(
        err.contains("row 1 (line 2), column 3: not valid UTF-8"),
        "{err}"
    );
    assert_eq!(snapshot(&p), before);
});

both_backends!(dry_run_changes_nothing, |p: Project| {
    let p = project_with_schema(p);
    p.file("seeds/people.csv", PEOPLE);
    p.file("seeds/orders.csv", ORDERS);
    p.file("seeds/items.csv", ITEMS);
    let before = snapshot(&p);
    let run = p.run(["seed", "--dry-run", "--format", "json"]);
    run.success();
    let json = run.json();
    assert_eq!(json["committed"], false);
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["total_rows"], 7);
    assert_eq!(snapshot(&p), before);
    assert_eq!(count(&p, "people"), 0);
    // The order is said in --dry-run's human output as well.
    p.run(["seed", "--dry-run"])
        .success()
        .stderr_has("people.csv -> people, orders.csv -> orders, items.csv -> items")
        .stdout_has("rolled back");
    assert_eq!(snapshot(&p), before);
});

both_backends!(truncate_makes_a_second_run_succeed, |p: Project| {
    let p = project_with_schema(p);
    p.file("seeds/people.csv", PEOPLE);
    p.file("seeds/orders.csv", ORDERS);
    p.file("seeds/items.csv", ITEMS);
    p.run(["seed", "-q"]).success();
    let first = snapshot(&p);
    // Without --truncate the conflict is reported as the error it is.
    p.run(["seed"])
        .code(1)
        .stderr_has("people.csv row 1 (line 2)");
    assert_eq!(snapshot(&p), first);
    // Rows added outside the seeds go too, children first.
    p.execute("INSERT INTO people (id, name) VALUES (50, 'Extra')");
    let json = p.run(["seed", "--truncate", "--format", "json"]).json();
    assert_eq!(
        json["truncated"],
        serde_json::json!(["items", "orders", "people"])
    );
    assert_eq!(json["committed"], true);
    assert_eq!(snapshot(&p), first);
});

both_backends!(hostile_names_run_no_sql, |p: Project| {
    let p = project_with_schema(p);
    p.file("seeds/people.csv", PEOPLE);
    p.file(
        "seeds/orders\"; DROP TABLE people; --.csv",
        "id,person_id\n1,1\n",
    );
    let run = p.run(["seed"]);
    run.code(1)
        .stderr_has("table \"orders\"\"; DROP TABLE people; --\" does not exist");
    assert!(p.has_table("people"));
    assert_eq!(count(&p, "people"), 0);

    // A hostile column name in a header is quoted too.
    let p2 = p.file(
        "other/people.csv",
        "id,\"name\"\" text); DROP TABLE orders; --\"\n1,x\n",
    );
    assert!(p2.exists());
    p.run(["seed", "--seeds-dir", "other"])
        .code(1)
        .stderr_has("has no column \"name\"\" text); DROP TABLE orders; --\"");
    assert!(p.has_table("orders"));
    assert!(p.has_table("people"));
    // Nothing else ran: the tables are empty and the semicolon file name did no harm.
    assert_eq!(count(&p, "orders"), 0);
});

both_backends!(files_folders_and_settings, |p: Project| {
    let mut p = project_with_schema(p);
    p.file("fixtures/people.csv", PEOPLE);
    p.file("fixtures/orders.csv", ORDERS);
    // No seeds folder: a usage error.
    p.run(["seed"])
        .code(2)
        .stderr_has("seeds folder `seeds` does not exist");
    // A named file that is missing: a usage error, nothing done.
    p.run(["seed", "nope.csv"]).code(2).stderr_has("nope.csv");
    // Named files, found inside the seeds folder given by the setting.
    p.env("DBCTL_SEEDS_DIR", "fixtures");
    let json = p.run(["seed", "people.csv", "--format", "json"]).json();
    assert_eq!(json["files"].as_array().unwrap().len(), 1);
    assert_eq!(count(&p, "people"), 2);
    assert_eq!(count(&p, "orders"), 0);
    // A path as given.
    p.run(["seed", "fixtures/orders.csv", "-q"]).success();
    assert_eq!(count(&p, "orders"), 2);
    // An empty folder is nothing to do.
    std::fs::create_dir_all(p.path().join("empty")).unwrap();
    p.run(["seed", "--seeds-dir", "empty"])
        .success()
        .stdout_has("nothing to seed");
});

both_backends!(example_app_seeds_load_after_init, |p: Project| {
    p.copy_example("migrations");
    p.copy_example("seeds");
    p.run(["init", "-q"]).success();
    let json = p.run(["seed", "--format", "json"]).json();
    assert_eq!(json["total_rows"], 9);
    assert_eq!(count(&p, "users"), 3);
    assert_eq!(count(&p, "posts"), 3);
    assert_eq!(count(&p, "comments"), 3);
    // Booleans and NULLs arrive as such on both backends.
    assert_eq!(
        count(&p, "posts WHERE published") + count(&p, "comments WHERE author_id IS NULL"),
        3
    );
    assert_eq!(
        p.strings("SELECT body AS v FROM comments WHERE id = 2"),
        [Some("Quoted, with a comma".to_string())]
    );
});

#[test]
fn postgres_sequences_move_past_seeded_ids() {
    let Some(p) = Project::postgres() else { return };
    p.execute("CREATE TABLE tags (id SERIAL PRIMARY KEY, name TEXT NOT NULL)");
    p.file("seeds/tags.csv", "id,name\n1,a\n2,b\n40,c\n");
    p.run(["seed", "-q"]).success();
    // The application's next insert gets a fresh id instead of colliding with a seeded one.
    p.execute("INSERT INTO tags (name) VALUES ('d')");
    assert_eq!(
        p.strings("SELECT CAST(max(id) AS TEXT) AS v FROM tags"),
        [Some("41".to_string())]
    );
}

both_backends!(a_refused_row_deep_in_a_big_file_is_named, |p: Project| {
    let p = project_with_schema(p);
    // Past PostgreSQL's replay chunks and SQLite's insert batches, so both searches are exercised.
    let mut csv = String::from("id,name\n");
    for i in 1..=25_000 {
        if i == 23_456 {
            csv.push_str("oops,broken\n");
        } else {
            csv.push_str(&format!("{i},person {i}\n"));
        }
    }
    p.file("seeds/people.csv", csv);
    let run = p.run(["seed"]);
    run.code(1).stderr_has("people.csv row 23456 (line 23457)");
    assert_eq!(count(&p, "people"), 0);
});

both_backends!(
    a_foreign_key_cycle_loads_with_deferred_checks,
    |p: Project| {
        match p.backend {
            Backend::Sqlite => p.execute(
                "CREATE TABLE teams (id INTEGER PRIMARY KEY, captain_id INTEGER \
                 REFERENCES players (id) DEFERRABLE INITIALLY IMMEDIATE);
             CREATE TABLE players (id INTEGER PRIMARY KEY, team_id INTEGER NOT NULL \
                 REFERENCES teams (id) DEFERRABLE INITIALLY IMMEDIATE);",
            ),
            Backend::Postgres => p.execute(
                "CREATE TABLE teams (id INTEGER PRIMARY KEY, captain_id INTEGER);
             CREATE TABLE players (id INTEGER PRIMARY KEY, team_id INTEGER NOT NULL \
                 REFERENCES teams (id) DEFERRABLE INITIALLY IMMEDIATE);
             ALTER TABLE teams ADD FOREIGN KEY (captain_id) REFERENCES players (id) \
                 DEFERRABLE INITIALLY IMMEDIATE;",
            ),
        }
        // players.csv sorts first, but its rows need teams, whose rows need players.
        p.file("seeds/players.csv", "id,team_id\n1,10\n2,10\n");
        p.file("seeds/teams.csv", "id,captain_id\n10,1\n");
        p.run(["seed"]).success().stderr_has("form a cycle");
        assert_eq!(count(&p, "players"), 2);
        // A dangling key in a cycle is still caught, at the commit, and rolled back.
        p.file("other/players.csv", "id,team_id\n3,99\n");
        p.file("other/teams.csv", "id,captain_id\n11,3\n");
        p.run(["seed", "--seeds-dir", "other"])
            .code(1)
            .stderr_has("foreign keys of the tables in a cycle")
            .stderr_has("players");
        assert_eq!(count(&p, "players"), 2);
        assert_eq!(count(&p, "teams"), 1);
    }
);
