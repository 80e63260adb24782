//! `dbctl revision`: diesel's folder naming, unique versions within one second, inline SQL, and
//! refusals.

use crate::both_backends;
use crate::support::Project;

fn folders(p: &Project, sub: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(p.path().join(sub))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

both_backends!(creates_a_diesel_style_folder, |p: Project| {
    std::fs::create_dir(p.path().join("migrations")).unwrap();
    let run = p.run(["revision", "create users", "--format", "json"]);
    run.success();
    let json = run.json();
    let version = json["version"].as_str().unwrap();
    assert_eq!(version.len(), 14);
    assert!(version.chars().all(|c| c.is_ascii_digit()));
    let names = folders(&p, "migrations");
    assert_eq!(names.len(), 1);
    let folder = &names[0];
    // YYYY-MM-DD-HHMMSS_name
    assert_eq!(&folder[4..5], "-");
    assert_eq!(&folder[17..], "_create users");
    assert_eq!(folder[..17].replace('-', ""), version);
    assert!(json["up"].as_str().unwrap().ends_with("up.sql"));
    let down =
        std::fs::read_to_string(p.path().join("migrations").join(folder).join("down.sql")).unwrap();
    assert!(down.starts_with("--"));
    // A placeholder down.sql holds no statement: the migration is not reversible until written.
    p.run(["revision", "create users"])
        .code(2)
        .stderr_has("exists already");
});

both_backends!(same_second_calls_get_distinct_versions, |p: Project| {
    std::fs::create_dir(p.path().join("migrations")).unwrap();
    let mut versions = Vec::new();
    for i in 0..5 {
        let run = p.run(["revision", &format!("step_{i}"), "--format", "json"]);
        run.success();
        versions.push(run.json()["version"].as_str().unwrap().to_string());
    }
    let mut unique = versions.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "{versions:?}");
    // Concurrent calls too.
    let children: Vec<_> = (0..4)
        .map(|i| {
            p.command()
                .args(["revision", &format!("par_{i}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let mut all: Vec<String> = folders(&p, "migrations")
        .iter()
        .map(|f| f[..17].to_string())
        .collect();
    assert_eq!(all.len(), 9);
    all.dedup();
    assert_eq!(all.len(), 9, "versions collide: {all:?}");
});

both_backends!(inline_sql_is_applied, |p: Project| {
    p.run(["init"]).success();
    p.run([
        "revision",
        "widgets",
        "--sql",
        "CREATE TABLE widgets (id INTEGER);",
        "--down-sql",
        "DROP TABLE widgets;",
    ])
    .success();
    p.run(["migrate", "up"]).success();
    assert!(p.has_table("widgets"));
    p.run(["migrate", "redo"]).success();
    p.run(["migrate", "down"]).success();
    assert!(!p.has_table("widgets"));
});

both_backends!(refuses_bad_names_and_missing_folders, |p: Project| {
    p.run(["revision", "x"])
        .code(2)
        .stderr_has("does not exist");
    std::fs::create_dir(p.path().join("migrations")).unwrap();
    p.run(["revision", "  "]).code(2).stderr_has("empty");
    p.run(["revision", "../escape"]).code(2);
    p.run(["revision", "a/b"]).code(2);
    assert!(folders(&p, "migrations").is_empty());
});

both_backends!(goes_into_the_backend_folder, |p: Project| {
    std::fs::create_dir_all(p.path().join("migrations/sqlite")).unwrap();
    std::fs::create_dir_all(p.path().join("migrations/postgresql")).unwrap();
    p.run(["revision", "split"]).success();
    let (mine, other) = match p.backend {
        crate::support::Backend::Sqlite => ("migrations/sqlite", "migrations/postgresql"),
        crate::support::Backend::Postgres => ("migrations/postgresql", "migrations/sqlite"),
    };
    assert_eq!(folders(&p, mine).len(), 1);
    assert!(folders(&p, other).is_empty());
});
