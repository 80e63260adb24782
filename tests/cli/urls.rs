//! Database URLs as people paste them: passwords holding any byte, libpq `key=value` strings,
//! exit codes chosen by the kind of failure, and URLs with no host. The property test at the end
//! runs random passwords through every command.

use std::process::Command;

use crate::support::{
    dbctl, percent_encode, pg_skipped, pg_url_for, unique_name, FakeServer, Project, Run,
};

/// `pg_url_for(db)` with a password put in after the user name (`encoded` as it goes in the URL).
fn url_with_password(db: &str, password_in_url: &str) -> String {
    let url = pg_url_for(db);
    let with = url.replacen(
        "://postgres@",
        &format!("://postgres:{password_in_url}@"),
        1,
    );
    assert_ne!(
        with, url,
        "DBCTL_TEST_PG_URL must look like postgres://postgres@host/db"
    );
    with
}

fn run(mut cmd: Command) -> Run {
    Run::from(cmd.output().expect("run dbctl"))
}

/// Passwords with the characters people paste raw: each is refused (exit 2) before anything
/// connects or resolves, and no part of it is printed, by any command, in any format.
#[test]
fn passwords_with_url_delimiters_are_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    // Each password is made of distinctive pieces, so that a half-printed one is seen too.
    let pieces = ["Qx7aa", "Wz8bb", "Kv9cc"];
    let cases = [
        format!("{}#{}#{}", pieces[0], pieces[1], pieces[2]),
        format!("{}?{}?{}", pieces[0], pieces[1], pieces[2]),
        format!("{}/{}/{}", pieces[0], pieces[1], pieces[2]),
        format!("{}@{}@{}", pieces[0], pieces[1], pieces[2]),
        format!("{} {} {}", pieces[0], pieces[1], pieces[2]),
        format!("{}%zz{}/{}", pieces[0], pieces[1], pieces[2]),
        format!("{}:{}?{}", pieces[0], pieces[1], pieces[2]),
    ];
    let port = FakeServer::ClosedPort.start();
    for pw in &cases {
        for url in [
            format!("postgres://postgres:{pw}@127.0.0.1:{port}/db"),
            format!("postgresql+asyncpg://postgres:{pw}@no-such-host.invalid/db"),
            format!("postgres://postgres@127.0.0.1:{port}/db?sslmode=disable&password={pw}&x=1"),
        ] {
            for args in [
                &["ping", "-v"][..],
                &["--format", "json", "ping"],
                &["init", "-v", "--no-migrate"],
                &["--format", "json", "migrate", "status"],
            ] {
                let mut cmd = dbctl();
                cmd.current_dir(dir.path())
                    .env("DB_ECHO", "true")
                    .args(args)
                    .args(["--database-url", &url]);
                let out = run(cmd);
                // Two `@`: refused before any DNS lookup, never exit 3.
                if pw.contains('@') && url.contains(&format!(":{pw}@")) {
                    out.code(2).stderr_has("more than one `@`");
                }
                assert!(matches!(out.code, 2 | 3), "{url} {args:?}: {out:?}");
                for piece in pieces.iter().skip(1) {
                    out.no_secret(piece);
                }
                if args.contains(&"json") {
                    out.json();
                }
            }
        }
        // The same URL given where no argument is expected is echoed by the argument parser.
        let url = format!("postgres://postgres:{pw}@h/db");
        let out = run({
            let mut c = dbctl();
            c.args(["ping", &url]);
            c
        });
        out.code(2);
        for piece in pieces.iter().skip(1) {
            out.no_secret(piece);
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a refused URL created a file"
    );
}

/// libpq `key=value` strings are PostgreSQL, with the password hidden; a malformed one is refused
/// (exit 2) without echoing it, and none of them ever becomes a SQLite file name.
#[test]
fn conninfo_strings_are_postgres_never_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "Cnf-s3cr3t-Pw";
    let port = FakeServer::ClosedPort.start();
    for (conninfo, code) in [
        (
            format!("host=127.0.0.1 port={port} user=postgres password={secret} dbname=app"),
            3,
        ),
        (
            format!("host=127.0.0.1 port={port} password='{secret} x' dbname=app"),
            3,
        ),
        (format!("host=127.0.0.1 password={secret} x dbname=app"), 2),
        (format!("host=127.0.0.1 password='{secret}"), 2),
        (
            format!("host=127.0.0.1 nosuchkey={secret} password={secret}"),
            2,
        ),
        (
            format!("host=127.0.0.1 sslmode=sometimes password={secret}"),
            2,
        ),
    ] {
        for args in [
            &["ping", "-v"][..],
            &["--format", "json", "ping"],
            &["init", "-v"],
        ] {
            let mut cmd = dbctl();
            cmd.current_dir(dir.path())
                .args(args)
                .args(["--database-url", &conninfo]);
            let out = run(cmd);
            out.code(code).no_secret(secret).no_secret("s3cr3t");
            if args.contains(&"json") {
                out.json();
            }
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a connection string became a file"
    );
    if pg_skipped() {
        return;
    }
    // Against the real server: ping, and init creates the PostgreSQL database it names.
    let name = unique_name("dbctl_conninfo");
    let server = pg_url_for("postgres");
    let host_port = server
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(hp, _)| hp.to_string())
        .unwrap();
    let (host, port) = host_port.rsplit_once(':').unwrap_or((&host_port, "5432"));
    let conninfo =
        format!("host={host} port={port} user=postgres password='{secret}' dbname={name}");
    let mut cmd = dbctl();
    cmd.current_dir(dir.path()).args([
        "--format",
        "json",
        "init",
        "--no-migrate",
        "--database-url",
        &conninfo,
    ]);
    let init = run(cmd);
    let mut admin = crate::support::pg_admin();
    use diesel::connection::SimpleConnection as _;
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    init.success().no_secret(secret);
    assert_eq!(init.json()["backend"], "postgres");
    assert_eq!(init.json()["steps"][0]["status"], "created");
    assert!(!dir.path().join(&conninfo).exists());
    let mut cmd = dbctl();
    cmd.args([
        "ping",
        "-v",
        "--database-url",
        &conninfo.replace(&name, "postgres"),
    ]);
    run(cmd)
        .success()
        .no_secret(secret)
        .stdout_has("postgres:***@");
}

/// Exit codes come from what failed (dbctl's URL check, libpq's parser, the server's catalog),
/// never from the words of a message.
#[test]
fn exit_codes_follow_the_kind_of_failure() {
    if pg_skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = pg_url_for("postgres");
    let sep = if base.contains('?') { '&' } else { '?' };
    // Usage errors: exit 2, whatever libpq would have said while connecting.
    for url in [
        format!("{base}{sep}connect_timeout=abc"),
        format!("{base}{sep}keepalives_idle=1x"),
        format!("{base}{sep}sslmode=sometimes"),
        format!("{base}{sep}target_session_attrs=whatever"),
        format!("{base}{sep}nosuchparameter=1"),
        // This libpq has no GSSAPI: libpq would only say so while connecting.
        format!("{base}{sep}gssencmode=require"),
        format!("{base}{sep}require_auth=bogus"),
        format!("{base}{sep}hostaddr=not-an-ip"),
        format!("{base}{sep}sslnegotiation=direct"),
        format!("{base}{sep}sslmode=require&sslrootcert=system"),
        format!("{base}{sep}ssl_min_protocol_version=SSLv3"),
        format!("{base}{sep}require_auth=!password,scram-sha-256"),
        format!("{base}{sep}replication=database"),
        pg_url_for("post%00gres"),
        url_with_password("postgres", "a b"),
        url_with_password("postgres", "a%00b"),
    ] {
        for args in [
            &["ping"][..],
            &["init", "--no-migrate"],
            &["migrate", "status"],
        ] {
            let mut cmd = dbctl();
            cmd.current_dir(dir.path())
                .args(args)
                .args(["--database-url", &url]);
            run(cmd).code(2).stderr_has("invalid PostgreSQL URL");
        }
    }
    // A missing role and an unusable TLS setting fail the same way against every database:
    // init reports that failure (exit 3), not a maintenance database it never needed.
    let missing_role = pg_url_for(&unique_name("dbctl_norole_db")).replacen(
        "://postgres@",
        "://dbctl_no_such_role@",
        1,
    );
    let verify_full = format!(
        "{}{sep}sslmode=verify-full",
        pg_url_for(&unique_name("dbctl_vf"))
    );
    for (url, says) in [
        (missing_role, "dbctl_no_such_role"),
        (verify_full, "verify-full"),
    ] {
        let mut cmd = dbctl();
        cmd.current_dir(dir.path())
            .env("PGSSLROOTCERT", dir.path().join("no-such-root.crt"))
            .args(["init", "--no-migrate", "--database-url", &url]);
        let out = run(cmd);
        out.code(3).stderr_has(says);
        assert!(
            !out.stderr.contains("maintenance"),
            "blamed a maintenance database:\n{}",
            out.stderr
        );
    }
}

/// `postgresql:///db` (no host) finds the server's socket in the usual folders when neither the
/// URL nor PGHOST names one; a named one is respected.
#[test]
fn no_host_urls_find_the_usual_socket_folder() {
    if pg_skipped() {
        return;
    }
    let found = ["/var/run/postgresql", "/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| std::path::Path::new(d).join(".s.PGSQL.5432").exists());
    let Some(folder) = found else {
        eprintln!("skipping: no PostgreSQL socket on port 5432 in the usual folders");
        return;
    };
    for url in [
        "postgresql://postgres@/postgres",
        "postgres:///postgres?user=postgres",
        "postgresql://:5432/postgres?user=postgres",
    ] {
        let mut cmd = dbctl();
        for var in ["PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE"] {
            cmd.env_remove(var);
        }
        cmd.args(["ping", "-v", "--format", "json", "--database-url", url]);
        let out = run(cmd);
        out.success().stderr_has(folder);
        assert_eq!(out.json()["backend"], "postgres");
    }
    // PGHOST names a folder with no server: it is used, and the error says so.
    let mut cmd = dbctl();
    cmd.env("PGHOST", "/nonexistent-socket-dir").args([
        "ping",
        "--database-url",
        "postgresql://postgres@/postgres",
    ]);
    run(cmd).code(3).stderr_has("/nonexistent-socket-dir");
}

// ---- the property test ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift), so a failing password is found again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// 1 to 64 printable ASCII characters (space included).
    fn password(&mut self) -> String {
        let len = 1 + self.below(64) as usize;
        (0..len)
            .map(|_| (0x20 + self.below(0x5f) as u8) as char)
            .collect()
    }
}

/// Passwords equal to words and numbers that dbctl's output holds anyway, or that broke the old
/// blanket redaction (`1` in `"attempts": 1`, `postgres` in `postgresql`, `%22` = `"`).
const COMMON: &[&str] = &[
    "1",
    "0",
    "5432",
    "postgres",
    "postgresql",
    "127.0.0.1",
    "sqlite",
    "true",
    "null",
    "url",
    "error",
    "backend",
    "users",
    "a",
    "%22",
    "\"",
    "'",
    "*",
    "ms",
    "p@ss",
    "p#ss",
    "p?ss",
    "p/ss",
    "p ss",
    "%zz",
    "%00",
    "pw\\",
];

/// Every command, on success and failure paths, for one password written `in_url` in the URL.
fn runs_for(p: &Project, db: &str, in_url: &str, conninfo_pw: &str) -> Vec<(String, Run)> {
    let url = url_with_password(db, in_url);
    let closed = format!(
        "postgres://postgres:{in_url}@127.0.0.1:{}/db",
        FakeServer::ClosedPort.start()
    );
    let server = pg_url_for("postgres");
    let host = server
        .split_once('@')
        .and_then(|(_, r)| r.split(['/', ':']).next().map(str::to_string))
        .unwrap();
    let conninfo = format!("host={host} user=postgres password='{conninfo_pw}' dbname={db}");
    let plan: Vec<(&str, &[&str])> = vec![
        (url.as_str(), &["ping", "-v"]),
        (url.as_str(), &["--format", "json", "ping"]),
        (url.as_str(), &["--format", "json", "-v", "init"]),
        (url.as_str(), &["--format", "json", "migrate", "up"]),
        (url.as_str(), &["-v", "migrate", "status"]),
        (url.as_str(), &["--format", "json", "seed", "--dry-run"]),
        (
            url.as_str(),
            &["--format", "json", "seed", "--seeds-dir", "bad_seeds"],
        ),
        (url.as_str(), &["--format", "json", "inspect"]),
        (url.as_str(), &["-v", "inspect", "users"]),
        (
            url.as_str(),
            &["-v", "revision", "noop", "--sql", "SELECT 1;"],
        ),
        (closed.as_str(), &["--format", "json", "ping"]),
        (closed.as_str(), &["-v", "init", "--no-migrate"]),
        (conninfo.as_str(), &["--format", "json", "-v", "ping"]),
    ];
    plan.into_iter()
        .map(|(url, args)| {
            let mut cmd = p.command();
            cmd.env("DATABASE_URL", url).args(args);
            (format!("{args:?}"), run(cmd))
        })
        .collect()
}

/// How a password is written inside a libpq single-quoted value.
fn conninfo_quote(pw: &str) -> String {
    pw.replace('\\', "\\\\").replace('\'', "\\'")
}

#[test]
fn random_passwords_never_show_and_json_always_parses() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    let db = p.pg_database().unwrap().to_string();
    p.migration(
        "users",
        "CREATE TABLE users (id integer PRIMARY KEY, name text);",
        Some("DROP TABLE users;"),
    );
    p.file("seeds/users.csv", "id,name\n1,ada\n");
    p.file("bad_seeds/users.csv", "id,name\nnot-a-number,x\n");
    p.env("DB_ECHO", "true");

    // What the output holds anyway, with a password that cannot occur by chance.
    let marker = "Mk7Baseline";
    let baseline: String = runs_for(&p, &db, marker, marker)
        .iter()
        .map(|(_, r)| format!("{}{}", r.stdout, r.stderr))
        .collect();
    assert!(!baseline.contains(marker), "the marker password leaked");

    let seed = std::env::var("DBCTL_PASSWORD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d8c7_1a2b_3c4d_u64);
    let random = std::env::var("DBCTL_PASSWORD_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut rng = Rng(seed);
    let mut passwords: Vec<(String, bool)> =
        COMMON.iter().map(|pw| (pw.to_string(), true)).collect();
    for _ in 0..random {
        let pw = rng.password();
        let raw = rng.below(2) == 0;
        passwords.push((pw, raw));
    }
    let mut failures = Vec::new();
    let mut runs = 0;
    for (pw, raw) in &passwords {
        let encoded = percent_encode(pw);
        let in_url = if *raw { pw.clone() } else { encoded.clone() };
        // Where a password stands in a URL or a connection string.
        let mut forms = vec![
            format!(":{pw}@"),
            format!(":{encoded}@"),
            format!("password={pw}"),
            format!("password={encoded}"),
            format!("password='{}'", conninfo_quote(pw)),
        ];
        // A password the output would not hold anyway must not appear at all.
        let distinctive = |s: &str| {
            s.chars().count() >= 4
                && s.chars()
                    .any(|c| !(c.is_ascii_digit() || c == '.' || c == ' '))
                && !baseline.contains(s)
        };
        for whole in [pw.as_str(), in_url.as_str()] {
            if distinctive(whole) {
                forms.push(whole.to_string());
            }
        }
        for (args, out) in runs_for(&p, &db, &in_url, &conninfo_quote(pw)) {
            runs += 1;
            let text = format!("{}\n{}", out.stdout, out.stderr);
            let mut wrong = Vec::new();
            if out.code == 101 || out.stderr.contains("panicked at") {
                wrong.push("panicked".to_string());
            }
            if let Some(form) = forms.iter().find(|f| text.contains(f.as_str())) {
                wrong.push(format!("printed {form:?}"));
            }
            if args.contains("json") {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&out.stdout) {
                    wrong.push(format!("stdout is not JSON ({e})"));
                }
            }
            if args.contains("\"json\", \"ping\"") && out.code == 0 {
                let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
                if doc["backend"] != "postgres" || doc["attempts"] != 1 {
                    wrong.push(format!("ping's JSON was rewritten: {doc}"));
                }
                if !doc["url"].as_str().unwrap_or("").contains("postgres:***@") {
                    wrong.push(format!("url not shown redacted: {}", doc["url"]));
                }
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "password {pw:?} ({}) {args}: {}\n--- stdout\n{}\n--- stderr\n{}",
                    if *raw { "raw" } else { "encoded" },
                    wrong.join("; "),
                    out.stdout,
                    out.stderr
                ));
            }
        }
    }
    eprintln!(
        "tried {} passwords ({} common, {random} random, seed {seed:#x}) in {runs} runs",
        passwords.len(),
        COMMON.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
