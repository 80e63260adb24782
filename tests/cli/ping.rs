//! `dbctl ping`: up, down, waiting, counting, and what it prints.

use std::time::{Duration, Instant};

use crate::both_backends;
use crate::support::{dbctl, pg_url_for, Backend, FakeServer, Project};

both_backends!(answers_with_backend_version_and_latency, |p: Project| {
    p.run(["init", "--no-migrate", "-q"]).success();
    let out = p.run(["ping", "--format", "json"]);
    out.success();
    let json = out.json();
    let backend = if p.backend == Backend::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    assert_eq!(json["backend"], backend);
    assert!(json["server_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert!(json["median_ms"].as_f64().is_some_and(|v| v >= 0.0));
    assert_eq!(json["count"], 1);
    assert_eq!(json["attempts"], 1);

    let human = p.run(["ping"]);
    human
        .success()
        .stdout_has("server version")
        .stdout_has(backend);
});

both_backends!(count_reports_min_median_max, |p: Project| {
    p.run(["init", "--no-migrate", "-q"]).success();
    let json = p.run(["ping", "--count", "5", "--format", "json"]).json();
    assert_eq!(json["count"], 5);
    let (min, med, max) = (
        json["min_ms"].as_f64().unwrap(),
        json["median_ms"].as_f64().unwrap(),
        json["max_ms"].as_f64().unwrap(),
    );
    assert!(min <= med && med <= max, "{json}");
    p.run(["ping", "-c", "3"])
        .success()
        .stdout_has("3 round trips");
});

#[test]
fn missing_sqlite_file_is_reported_not_created() {
    let p = Project::sqlite();
    let out = p.run(["ping"]);
    out.code(3).stderr_has("does not exist");
    assert!(!p.path().join("test.db").exists(), "ping created the file");
}

#[test]
fn closed_port_exits_3_quickly() {
    let port = FakeServer::ClosedPort.start();
    let started = Instant::now();
    let out = dbctl()
        .args([
            "ping",
            "--database-url",
            &format!("postgres://postgres@127.0.0.1:{port}/x"),
        ])
        .output()
        .unwrap();
    let run = crate::support::Run::from(out);
    run.code(3).stderr_has("Connection refused");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn unknown_host_exits_3() {
    let run = crate::support::Run::from(
        dbctl()
            .args([
                "ping",
                "--timeout",
                "3",
                "--database-url",
                "postgres://u@no-such-host.invalid/db",
            ])
            .output()
            .unwrap(),
    );
    run.code(3).stderr_has("no-such-host.invalid");
}

#[test]
fn silent_server_is_bounded_by_timeout() {
    // A server that accepts connections and never answers: libpq would wait forever.
    let port = FakeServer::Silent.start();
    let started = Instant::now();
    let run = crate::support::Run::from(
        dbctl()
            .args(["ping", "--timeout", "1", "--database-url"])
            .arg(format!("postgres://u:pw-silent@127.0.0.1:{port}/db"))
            .output()
            .unwrap(),
    );
    run.code(3).no_secret("pw-silent");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn wait_retries_until_the_deadline() {
    let p = Project::sqlite();
    let started = Instant::now();
    let out = p.run(["ping", "--wait", "1.5"]);
    out.code(3)
        .stderr_has("gave up waiting")
        .stderr_has("waiting for");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[test]
fn wait_succeeds_when_the_database_appears() {
    let p = Project::sqlite();
    let db = p.path().join("test.db");
    let child = p
        .command()
        .args(["ping", "--wait", "20", "--format", "json"])
        .spawn_output();
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(&db, b"").unwrap();
    let run = child();
    run.success();
    assert!(run.json()["attempts"].as_u64().unwrap() > 1);
}

#[test]
fn postgres_wait_fails_fast_on_bad_url() {
    let run = crate::support::Run::from(
        dbctl()
            .args([
                "ping",
                "--wait",
                "30",
                "--database-url",
                "postgres://u@h:notaport/db",
            ])
            .output()
            .unwrap(),
    );
    run.code(2).stderr_has("port is not a number");
}

#[test]
fn postgres_missing_database_is_exit_3() {
    if crate::support::pg_skipped() {
        return;
    }
    let url = pg_url_for("dbctl_no_such_database_here");
    let run = crate::support::Run::from(
        dbctl()
            .args(["ping", "--database-url", &url])
            .output()
            .unwrap(),
    );
    run.code(3).stderr_has("does not exist");
}

/// Runs a command in the background; the closure waits for it.
trait SpawnOutput {
    fn spawn_output(&mut self) -> Box<dyn FnOnce() -> crate::support::Run>;
}

impl SpawnOutput for std::process::Command {
    fn spawn_output(&mut self) -> Box<dyn FnOnce() -> crate::support::Run> {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Box::new(move || crate::support::Run::from(child.wait_with_output().unwrap()))
    }
}
