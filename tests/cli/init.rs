//! `dbctl init`: creates what is missing, twice is safe, reports what it did.

use crate::both_backends;
use crate::support::{pg_admin, Project};

both_backends!(
    applies_the_example_schema_and_is_safe_twice,
    |p: Project| {
        p.copy_example("migrations");
        let first = p.run(["init", "--format", "json"]);
        first.success();
        let json = first.json();
        let steps = json["steps"].as_array().unwrap();
        let status = |item: &str| {
            steps.iter().find(|s| s["item"] == item).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(status("diesel.toml"), "created");
        assert_eq!(status(".env.example"), "created");
        assert_eq!(status("bookkeeping table"), "created");
        assert_eq!(status("migrations"), "applied");
        for table in ["users", "posts", "comments"] {
            assert!(p.has_table(table), "{table} missing");
        }
        assert_eq!(
            p.count("SELECT count(*) AS n FROM __diesel_schema_migrations"),
            3
        );

        let second = p.run(["init", "--format", "json"]).json();
        for step in second["steps"].as_array().unwrap() {
            assert_eq!(step["status"], "existed", "{step}");
        }
        assert!(p.path().join("diesel.toml").is_file());
    }
);

both_backends!(no_migrate_creates_only, |p: Project| {
    p.copy_example("migrations");
    p.run(["init", "--no-migrate"])
        .success()
        .stdout_has("skipped");
    assert!(!p.has_table("users"));
    assert!(p.has_table("__diesel_schema_migrations"));
});

#[test]
fn never_overwrites_an_existing_file() {
    let p = Project::sqlite();
    p.file(
        "diesel.toml",
        "# mine\n[migrations_directory]\ndir = \"db/migrations\"\n",
    );
    p.file(".env.example", "MINE=1\n");
    p.run(["init"]).success();
    assert!(std::fs::read_to_string(p.path().join("diesel.toml"))
        .unwrap()
        .starts_with("# mine"));
    assert_eq!(
        std::fs::read_to_string(p.path().join(".env.example")).unwrap(),
        "MINE=1\n"
    );
    assert!(
        p.path().join("db/migrations").is_dir(),
        "diesel.toml's folder is used"
    );
}

#[test]
fn sqlite_creates_the_parent_folder() {
    let p = Project::sqlite();
    let url = format!("sqlite:///{}", p.path().join("a/b/app.db").display());
    p.run(["init", "--database-url", &url]).success();
    assert!(p.path().join("a/b/app.db").is_file());
}

#[test]
fn postgres_creates_a_missing_database_with_a_hostile_name() {
    if crate::support::pg_skipped() {
        return;
    }
    let p = Project::sqlite(); // only for its folder
    let name = format!(
        "{}\"; DROP TABLE x; --",
        crate::support::unique_name("dbctl init")
    );
    let encoded = crate::support::percent_encode(&name);
    let url = crate::support::pg_url_for(&encoded);
    let out = p.run(["init", "--database-url", &url, "--format", "json"]);
    let mut admin = pg_admin();
    use diesel::connection::SimpleConnection;
    let cleanup = format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    );
    out.success();
    assert_eq!(out.json()["steps"][0]["status"], "created");
    let again = p.run(["init", "--database-url", &url, "--format", "json"]);
    admin.batch_execute(&cleanup).unwrap();
    again.success();
    assert_eq!(again.json()["steps"][0]["status"], "existed");
}
