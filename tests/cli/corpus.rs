//! The corpus gate: a real project's migrations (vaultwarden's, in `../shared/corpus/vaultwarden`
//! beside the repository, or `DBCTL_CORPUS_DIR`) run through dbctl on both backends. Every
//! migration must be applied and recorded, the last reversible ones reverted and applied again,
//! and the schema must equal the one `sqlite3` / `psql` build from the same up.sql files, one
//! transaction each; and again with diesel_migrations' own harness (`--engine diesel`) taking
//! turns with dbctl's engine. Where the corpus (or `sqlite3`, `psql`, `pg_dump`) is absent the test says on
//! stderr that it skipped and why.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{Backend, Project};

/// Straight to the process's stderr, past the test harness's capture: a skip must be seen.
fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "skipping the corpus gate: {why}");
}

fn tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip(&format!("`{name}` is not installed"));
    }
    found
}

/// One migration folder of the corpus.
struct Folder {
    path: PathBuf,
    version: String,
    /// down.sql exists and holds more than comments and white space.
    reversible: bool,
}

fn folders(dir: &Path) -> Vec<Folder> {
    let mut out: Vec<Folder> = std::fs::read_dir(dir)
        .expect("read the corpus folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let version = name.split('_').next().unwrap().replace('-', "");
            let down = std::fs::read_to_string(path.join("down.sql")).unwrap_or_default();
            let reversible = down
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"));
            Folder {
                path,
                version,
                reversible,
            }
        })
        .collect();
    out.sort_by(|a, b| a.version.cmp(&b.version));
    out
}

/// The SQL that applies every up.sql in version order, each in its own transaction.
fn reference_script(folders: &[Folder]) -> String {
    let mut script = String::new();
    for f in folders {
        let up = std::fs::read_to_string(f.path.join("up.sql")).expect("read up.sql");
        script.push_str(&format!("BEGIN;\n{up}\n;\nCOMMIT;\n"));
    }
    script
}

fn pipe(mut cmd: Command, input: &str) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reference tool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .expect("feed the reference tool");
    let out = child.wait_with_output().expect("reference tool");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "the reference tool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The schema as sorted text, bookkeeping tables left out.
fn schema(p: &Project) -> Vec<String> {
    match p.backend {
        Backend::Sqlite => p
            .strings(
                "SELECT type || ' ' || name || ' ' || tbl_name || ': ' || COALESCE(sql, '') AS v \
                 FROM sqlite_master WHERE name NOT LIKE '\\_\\_%' ESCAPE '\\' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
            )
            .into_iter()
            .flatten()
            .collect(),
        Backend::Postgres => {
            let out = Command::new("pg_dump")
                .args([
                    "--schema-only",
                    "--no-owner",
                    "--no-privileges",
                    "-T",
                    "__diesel_schema_migrations",
                    "-T",
                    "__dbctl_migrations",
                    "--dbname",
                    p.url(),
                ])
                .output()
                .expect("pg_dump");
            assert!(
                out.status.success(),
                "pg_dump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("--")
                        && !l.starts_with("\\restrict")
                        && !l.starts_with("\\unrestrict")
                })
                .map(str::to_string)
                .collect();
            lines.sort();
            lines
        }
    }
}

/// Which engine applies the corpus.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Engines {
    /// dbctl's engine throughout.
    Dbctl,
    /// diesel_migrations' harness (`--engine diesel`) applies the first half, dbctl's engine the
    /// rest; the harness reverts and re-applies the tail.
    Mixed,
}

fn gate(backend: Backend, engines: Engines) {
    let Some(corpus) = crate::support::vaultwarden("the corpus gate") else {
        return;
    };
    let reference_tool = match backend {
        Backend::Sqlite => "sqlite3",
        Backend::Postgres => "psql",
    };
    if !tool(reference_tool) || (backend == Backend::Postgres && !tool("pg_dump")) {
        return;
    }
    let (Some(p), Some(reference)) = (Project::new(backend), Project::new(backend)) else {
        return;
    };
    let folder_name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgresql",
    };
    let all = folders(&corpus.join(folder_name));
    assert!(all.len() > 10, "the corpus looks truncated");
    // The corpus root, read only: dbctl picks the folder of the URL's backend itself.
    let dir = corpus.to_str().expect("a UTF-8 corpus path");
    let with_dir = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--migrations-dir".to_string(), dir.to_string()]);
        v
    };

    p.run(with_dir(&["init", "--no-migrate"])).success();
    let by_diesel = match engines {
        Engines::Dbctl => 0,
        Engines::Mixed => all.len() / 2,
    };
    if by_diesel > 0 {
        let run = p.run(with_dir(&[
            "migrate",
            "up",
            "--engine",
            "diesel",
            "--step",
            &by_diesel.to_string(),
            "--format",
            "json",
        ]));
        run.success();
        assert_eq!(run.json()["steps"].as_array().unwrap().len(), by_diesel);
    }
    let run = p.run(with_dir(&["migrate", "up", "--format", "json"]));
    run.success();
    assert_eq!(
        run.json()["steps"].as_array().unwrap().len(),
        all.len() - by_diesel
    );
    let recorded: Vec<String> = p
        .strings("SELECT version AS v FROM __diesel_schema_migrations ORDER BY version")
        .into_iter()
        .flatten()
        .collect();
    let expected: Vec<String> = all.iter().map(|f| f.version.clone()).collect();
    assert_eq!(recorded, expected, "every migration is recorded");
    assert_eq!(
        p.count("SELECT count(*) AS n FROM __dbctl_migrations"),
        (all.len() - by_diesel) as i64,
        "a companion row for each migration dbctl's engine applied"
    );
    p.run(with_dir(&["migrate", "status", "--check"])).success();

    // The last migrations that have a down.sql (at most 4): revert them and apply them again.
    let tail = all
        .iter()
        .rev()
        .take_while(|f| f.reversible)
        .take(4)
        .count();
    assert!(tail > 0, "the corpus's newest migration has a down.sql");
    let engine = match engines {
        Engines::Dbctl => "dbctl",
        Engines::Mixed => "diesel",
    };
    let run = p.run(with_dir(&[
        "migrate",
        "down",
        "--engine",
        engine,
        "--step",
        &tail.to_string(),
        "--format",
        "json",
    ]));
    run.success();
    assert_eq!(run.json()["steps"].as_array().unwrap().len(), tail);
    p.run(with_dir(&["migrate", "up", "--engine", engine]))
        .success();
    p.run(with_dir(&["migrate", "status", "--check"])).success();

    let script = reference_script(&all);
    match backend {
        Backend::Sqlite => {
            let file = reference.url().trim_start_matches("sqlite://").to_string();
            let mut cmd = Command::new("sqlite3");
            cmd.args(["-bail", &file]);
            pipe(cmd, &script);
        }
        Backend::Postgres => {
            let mut cmd = Command::new("psql");
            cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", reference.url()])
                .env("PGOPTIONS", "-c client_min_messages=warning");
            pipe(cmd, &script);
        }
    }
    let (ours, theirs) = (schema(&p), schema(&reference));
    assert!(
        theirs.len() > 20,
        "the reference schema is implausibly small"
    );
    if ours != theirs {
        let only_ours: Vec<_> = ours.iter().filter(|l| !theirs.contains(l)).collect();
        let only_theirs: Vec<_> = theirs.iter().filter(|l| !ours.contains(l)).collect();
        panic!("the schemas differ\n--- only dbctl's\n{only_ours:#?}\n--- only {reference_tool}'s\n{only_theirs:#?}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "corpus gate {folder_name}: {} migrations applied and recorded ({by_diesel} by diesel's \
         harness), {tail} reverted and re-applied ({engine}), schema identical to \
         {reference_tool}'s ({} lines)",
        all.len(),
        ours.len()
    );
}

#[test]
fn vaultwarden_sqlite() {
    gate(Backend::Sqlite, Engines::Dbctl);
}

#[test]
fn vaultwarden_postgres() {
    gate(Backend::Postgres, Engines::Dbctl);
}

/// The corpus taking turns: diesel's own harness (`--engine diesel`) and dbctl's engine each
/// apply part of it, each seeing the other's bookkeeping as applied, to the same schema.
#[test]
fn vaultwarden_sqlite_with_diesels_harness() {
    gate(Backend::Sqlite, Engines::Mixed);
}

#[test]
fn vaultwarden_postgres_with_diesels_harness() {
    gate(Backend::Postgres, Engines::Mixed);
}
