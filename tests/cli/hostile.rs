//! Hostile and broken input, as one table: every row sets up a project (files, environment), runs
//! the real binary once, and must exit with its code and say its words on stderr. Every row must
//! also never panic, never exit 101, start stderr with `error:`, and keep stderr short (an
//! enormous input must not be echoed back). Rows that start from a database with a `users` table
//! check afterwards that its rows are all still there.

use crate::support::{pg_skipped, Backend, Project};

/// One bad input and what dbctl must do with it.
struct Case {
    name: &'static str,
    backend: Backend,
    setup: fn(&mut Project),
    args: &'static [&'static str],
    code: i32,
    stderr: &'static str,
}

fn nothing(_: &mut Project) {}

/// An initialised database holding `users` with two rows.
fn db(p: &mut Project) {
    p.run(["init"]).success();
    p.execute("CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL)");
    p.execute("INSERT INTO users (id, name) VALUES (1, 'ada'), (2, 'bob')");
}

/// `db` plus one good migration.
fn db_mig(p: &mut Project) {
    db(p);
    p.migration(
        "good",
        "CREATE TABLE good (id integer);",
        Some("DROP TABLE good;"),
    );
}

fn big_comment() -> String {
    format!("-- {}\n", "x".repeat(5 * 1024 * 1024))
}

fn symlink(target: &str, link: &std::path::Path) {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

const M: &str = "migrations/2024-01-01-000001_first";

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Backend::{Postgres as Pg, Sqlite as Sq};
    vec![
        // ---- database URLs -------------------------------------------------------------------
        Case { name: "empty URL", backend: Sq, setup: |p| { p.env("DATABASE_URL", ""); }, args: &["ping"], code: 2, stderr: "DATABASE_URL is set but empty" },
        Case { name: "blank URL", backend: Sq, setup: nothing, args: &["--database-url", "   ", "ping"], code: 2, stderr: "database URL" },
        Case { name: "URL with surrounding space", backend: Sq, setup: nothing, args: &["--database-url", " postgres://u@h/db", "ping"], code: 2, stderr: "white space" },
        Case { name: "port out of range", backend: Sq, setup: nothing, args: &["--database-url", "postgres://u@localhost:99999/db", "ping"], code: 2, stderr: "port" },
        Case { name: "port not a number", backend: Sq, setup: nothing, args: &["--database-url", "postgres://u@localhost:abc/db", "ping"], code: 2, stderr: "port" },
        Case { name: "unknown scheme", backend: Sq, setup: nothing, args: &["--database-url", "mongodb://h/db", "ping"], code: 2, stderr: "unknown scheme `mongodb:`" },
        Case { name: "MySQL scheme", backend: Sq, setup: nothing, args: &["--database-url", "mysql://root@h/db", "ping"], code: 2, stderr: "MySQL is not supported" },
        Case { name: "bad percent-encoding in user", backend: Sq, setup: nothing, args: &["--database-url", "postgres://u%zz@localhost/db", "ping"], code: 2, stderr: "percent" },
        Case { name: "truncated percent-encoding in database", backend: Sq, setup: nothing, args: &["--database-url", "postgres://u@localhost/db%4", "ping"], code: 2, stderr: "percent" },
        Case { name: "percent-encoding that is not UTF-8", backend: Sq, setup: nothing, args: &["--database-url", "postgres://u@localhost/%ff%fe", "ping"], code: 2, stderr: "percent" },
        Case { name: "unclosed IPv6 bracket", backend: Sq, setup: nothing, args: &["--database-url", "postgres://u@[::1/db", "ping"], code: 2, stderr: "IPv6" },
        Case { name: "IPv6 that is not an address", backend: Sq, setup: nothing, args: &["--database-url", "postgres://u@[zz::1]:5432/db", "ping"], code: 2, stderr: "`[zz::1]` is not an IPv6 address" },
        Case { name: "PostgreSQL URL without //", backend: Sq, setup: nothing, args: &["--database-url", "postgres:localhost/db", "ping"], code: 2, stderr: "needs `//`" },
        Case { name: "SQLite URL naming no file", backend: Sq, setup: nothing, args: &["--database-url", "sqlite:", "ping"], code: 2, stderr: "names no file" },
        Case { name: "file: URI with bad percent-encoding", backend: Sq, setup: nothing, args: &["--database-url", "file:db%zz.sqlite", "ping"], code: 2, stderr: "percent-encoding" },
        Case { name: "SQLite path that is a directory", backend: Sq, setup: |p| { p.file("adir/keep", ""); }, args: &["--database-url", "adir", "ping"], code: 2, stderr: "adir` is a folder" },
        Case { name: "SQLite file that is not a database", backend: Sq, setup: |p| { p.file("junk.db", vec![0x5au8; 4096]); }, args: &["--database-url", "junk.db", "inspect"], code: 3, stderr: "junk.db: file is not a database" },
        Case { name: "SQLite file that is not a database, migrate up", backend: Sq, setup: |p| { p.file("junk.db", b"SQLite format 2\0 not really"); p.file(&format!("{M}/up.sql"), "SELECT 1;"); }, args: &["--database-url", "junk.db", "migrate", "up"], code: 3, stderr: "file is not a database" },
        // ---- files and folders ----------------------------------------------------------------
        Case { name: "migrations folder missing", backend: Sq, setup: db, args: &["--migrations-dir", "nope", "migrate", "up"], code: 2, stderr: "nope" },
        Case { name: "migrations folder is a file", backend: Sq, setup: |p| { db(p); p.file("mfile", "x"); }, args: &["--migrations-dir", "mfile", "migrate", "up"], code: 2, stderr: "mfile" },
        Case { name: "migrations folder is a dangling symlink", backend: Sq, setup: |p| { db(p); symlink("gone", &p.path().join("mlink")); }, args: &["--migrations-dir", "mlink", "migrate", "up"], code: 2, stderr: "mlink" },
        Case { name: "migration without up.sql", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/down.sql"), "SELECT 1;"); }, args: &["migrate", "up"], code: 2, stderr: "has no up.sql" },
        Case { name: "up.sql is a directory", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/up.sql/inner"), ""); }, args: &["migrate", "up"], code: 2, stderr: "up.sql`: it is a folder, not a regular file" },
        Case { name: "up.sql is a dangling symlink", backend: Sq, setup: |p| { db(p); symlink("missing.sql", &p.path().join(M).join("up.sql")); }, args: &["migrate", "up"], code: 2, stderr: "has no up.sql" },
        Case { name: "folder name without a version", backend: Sq, setup: |p| { db(p); p.file("migrations/create_users/up.sql", "SELECT 1;"); }, args: &["migrate", "up"], code: 2, stderr: "is not a version" },
        Case { name: "folder name starting with _", backend: Sq, setup: |p| { db(p); p.file("migrations/_x/up.sql", "SELECT 1;"); }, args: &["migrate", "up"], code: 2, stderr: "is not a version" },
        Case { name: "folder name with spaces and quotes", backend: Sq, setup: |p| { db(p); p.file("migrations/12 ' 3_x/up.sql", "SELECT 1;"); }, args: &["migrate", "up"], code: 2, stderr: "is not a version" },
        Case { name: "version longer than 50 digits", backend: Sq, setup: |p| { db(p); p.file(&format!("migrations/{}_x/up.sql", "1".repeat(60)), "SELECT 1;"); }, args: &["migrate", "up"], code: 2, stderr: "longer than the 50 characters" },
        Case { name: "duplicate versions", backend: Sq, setup: |p| { db(p); p.file("migrations/2024-01-01-000001_a/up.sql", "SELECT 1;"); p.file("migrations/20240101000001_b/up.sql", "SELECT 1;"); }, args: &["migrate", "up"], code: 2, stderr: "two migrations have version 20240101000001" },
        Case { name: "non-UTF-8 up.sql", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/up.sql"), b"SELECT '\xff\xfe';"); }, args: &["migrate", "up"], code: 2, stderr: "is not valid UTF-8 (byte 8)" },
        Case { name: "non-UTF-8 down.sql", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/up.sql"), "SELECT 1;"); p.file(&format!("{M}/down.sql"), b"\xc3\x28"); }, args: &["migrate", "status"], code: 2, stderr: "down.sql` is not valid UTF-8" },
        Case { name: "empty down.sql", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/up.sql"), "CREATE TABLE t (id integer);"); p.file(&format!("{M}/down.sql"), ""); p.run(["migrate", "up"]).success(); }, args: &["migrate", "down"], code: 2, stderr: "first" },
        Case { name: "down.sql with only comments", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/up.sql"), "CREATE TABLE t (id integer);"); p.file(&format!("{M}/down.sql"), "-- nothing\n/* here */;\n"); p.run(["migrate", "up"]).success(); }, args: &["migrate", "down"], code: 2, stderr: "first" },
        Case { name: "malformed metadata.toml", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/up.sql"), "SELECT 1;"); p.file(&format!("{M}/metadata.toml"), "run_in_transaction = = true"); }, args: &["migrate", "up"], code: 2, stderr: "is not valid TOML" },
        Case { name: "metadata.toml with a string for a boolean", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/up.sql"), "SELECT 1;"); p.file(&format!("{M}/metadata.toml"), "run_in_transaction = \"no\""); }, args: &["migrate", "up"], code: 2, stderr: "run_in_transaction" },
        Case { name: "SQL error in up.sql", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/up.sql"), "CREATE TABLE t (id integer);\nSELEC 1;"); }, args: &["migrate", "up"], code: 1, stderr: "line 2" },
        Case { name: "5 MB one-line comment before an SQL error", backend: Sq, setup: |p| { db(p); p.file(&format!("{M}/up.sql"), format!("{}SELEC 1;", big_comment())); }, args: &["migrate", "up"], code: 1, stderr: "SELEC" },
        Case { name: "env file missing", backend: Sq, setup: nothing, args: &["--env-file", "nope.env", "ping"], code: 2, stderr: "nope.env" },
        Case { name: "env file is a directory", backend: Sq, setup: |p| { p.file("envdir/x", ""); }, args: &["--env-file", "envdir", "ping"], code: 2, stderr: "envdir" },
        // ---- seeds -------------------------------------------------------------------------------
        Case { name: "seed file missing", backend: Sq, setup: db, args: &["seed", "nope.csv"], code: 2, stderr: "nope.csv" },
        Case { name: "seeds folder missing", backend: Sq, setup: db, args: &["seed", "--seeds-dir", "nowhere"], code: 2, stderr: "nowhere" },
        Case { name: "seed file is a directory", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv/x", ""); }, args: &["seed", "seeds/users.csv"], code: 2, stderr: "users.csv`: it is a folder, not a regular file" },
        Case { name: "seed file of unknown kind", backend: Sq, setup: |p| { db(p); p.file("seeds/users.json", "[]"); }, args: &["seed", "seeds/users.json"], code: 2, stderr: "users.json" },
        Case { name: "CSV row with too many fields", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", "id,name\n3,cy\n4,di,extra\n"); }, args: &["seed"], code: 1, stderr: "line 3" },
        Case { name: "CSV row with too few fields", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", "id,name\n3\n"); }, args: &["seed"], code: 1, stderr: "line 2" },
        Case { name: "CSV with an unclosed quote", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", "id,name\n3,\"cy\n4,di\n"); }, args: &["seed"], code: 1, stderr: "users.csv row 1 (line 2): a quoted field is never closed" },
        Case { name: "CSV with a quote inside a field", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", "id,name\n3,c\"y\"z,q\n"); }, args: &["seed"], code: 1, stderr: "users.csv" },
        Case { name: "non-UTF-8 CSV", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", b"id,name\n3,\xff\n"); }, args: &["seed"], code: 1, stderr: "not valid UTF-8" },
        Case { name: "empty CSV", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", ""); }, args: &["seed"], code: 1, stderr: "the file is empty" },
        Case { name: "CSV header naming a column twice", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", "id,id\n3,4\n"); }, args: &["seed"], code: 1, stderr: "column \"id\" appears twice" },
        Case { name: "CSV for a table with quotes, semicolon and spaces", backend: Sq, setup: |p| { db(p); p.file("seeds/x\"; DROP TABLE users; --.csv", "id\n1\n"); }, args: &["seed"], code: 1, stderr: "DROP TABLE users" },
        Case { name: "CSV header with an injected column", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", "id,\"name\"\") VALUES (9,'x'); DROP TABLE users; --\"\n3,cy\n"); }, args: &["seed"], code: 1, stderr: "has no column" },
        Case { name: "CSV with a 5 MB field into an integer column", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", format!("id,name\n{},x\n", "9".repeat(5 * 1024 * 1024))); }, args: &["seed"], code: 1, stderr: "users.csv row 1" },
        Case { name: "CSV with a NULL in a NOT NULL column", backend: Sq, setup: |p| { db(p); p.file("seeds/users.csv", "id,name\n3,\n"); }, args: &["seed"], code: 1, stderr: "users.csv row 1" },
        // ---- flags in conflict ----------------------------------------------------------------------
        Case { name: "migrate down --all --step 2", backend: Sq, setup: db_mig, args: &["migrate", "down", "--all", "--step", "2"], code: 2, stderr: "cannot be used with" },
        Case { name: "migrate down --all --to", backend: Sq, setup: db_mig, args: &["migrate", "down", "--all", "--to", "1"], code: 2, stderr: "cannot be used with" },
        Case { name: "-q with -v", backend: Sq, setup: db, args: &["-q", "-v", "migrate", "status"], code: 2, stderr: "cannot be used with" },
        Case { name: "migrate up --step 0", backend: Sq, setup: db_mig, args: &["migrate", "up", "--step", "0"], code: 2, stderr: "--step" },
        Case { name: "migrate up --to an unknown version", backend: Sq, setup: db_mig, args: &["migrate", "up", "--to", "999"], code: 2, stderr: "999" },
        Case { name: "ping --count 0", backend: Sq, setup: db, args: &["ping", "--count", "0"], code: 2, stderr: "--count" },
        Case { name: "inspect --diff with --lint", backend: Sq, setup: db, args: &["inspect", "--diff", "s.json", "--lint"], code: 2, stderr: "cannot be used with" },
        Case { name: "unknown output format", backend: Sq, setup: db, args: &["--format", "yaml", "ping"], code: 2, stderr: "yaml" },
        Case { name: "unknown subcommand", backend: Sq, setup: nothing, args: &["migrat"], code: 2, stderr: "migrat" },
        // ---- inspect ---------------------------------------------------------------------------------
        Case { name: "inspect an unknown table", backend: Sq, setup: db, args: &["inspect", "no_such_table"], code: 2, stderr: "no_such_table" },
        Case { name: "inspect a hostile table name", backend: Sq, setup: db, args: &["inspect", "users\"; DROP TABLE users; --"], code: 2, stderr: "DROP TABLE users" },
        Case { name: "inspect --diff with a missing file", backend: Sq, setup: db, args: &["inspect", "--diff", "missing.json"], code: 2, stderr: "missing.json" },
        Case { name: "inspect --diff with a file that is not JSON", backend: Sq, setup: |p| { db(p); p.file("snap.json", "not json {"); }, args: &["inspect", "--diff", "snap.json"], code: 2, stderr: "snap.json" },
        Case { name: "inspect --diff with JSON of the wrong shape", backend: Sq, setup: |p| { db(p); p.file("snap.json", "{\"tables\": 5}"); }, args: &["inspect", "--diff", "snap.json"], code: 2, stderr: "snap.json" },
        Case { name: "inspect --diff with a directory", backend: Sq, setup: |p| { db(p); p.file("snapdir/x", ""); }, args: &["inspect", "--diff", "snapdir"], code: 2, stderr: "snapdir" },
        Case { name: "inspect --lint with an unknown rule", backend: Sq, setup: db, args: &["inspect", "--lint", "--allow", "no-such-rule"], code: 2, stderr: "no-such-rule" },
        // ---- revision ---------------------------------------------------------------------------------
        Case { name: "revision with a path in the name", backend: Sq, setup: db, args: &["revision", "../../escape"], code: 2, stderr: "escape" },
        Case { name: "revision with an empty name", backend: Sq, setup: db, args: &["revision", ""], code: 2, stderr: "name" },
        // ---- PostgreSQL -------------------------------------------------------------------------------
        Case { name: "PostgreSQL port closed", backend: Pg, setup: |p| { p.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/db"); }, args: &["ping", "--timeout", "2"], code: 3, stderr: "127.0.0.1" },
        Case { name: "PostgreSQL database missing", backend: Pg, setup: |p| { let url = crate::support::pg_url_for("dbctl_no_such_db_hostile"); p.env("DATABASE_URL", &url); }, args: &["migrate", "status"], code: 3, stderr: "dbctl_no_such_db_hostile" },
        Case { name: "PostgreSQL database name over 63 bytes", backend: Pg, setup: |p| { let url = crate::support::pg_url_for(&"d".repeat(70)); p.env("DATABASE_URL", &url); }, args: &["init"], code: 2, stderr: "PostgreSQL keeps only 63" },
        Case { name: "PostgreSQL CSV with text in an integer column", backend: Pg, setup: |p| { db(p); p.file("seeds/users.csv", "id,name\nabc,x\n"); }, args: &["seed"], code: 1, stderr: "users.csv" },
        Case { name: "PostgreSQL inspect a hostile table name", backend: Pg, setup: db, args: &["inspect", "users\"; DROP TABLE users; --"], code: 2, stderr: "DROP TABLE users" },
        Case { name: "PostgreSQL SQL error after a 5 MB comment", backend: Pg, setup: |p| { db(p); p.file(&format!("{M}/up.sql"), format!("{}SELEC 1;", big_comment())); }, args: &["migrate", "up"], code: 1, stderr: "SELEC" },
    ]
}

/// The whole table, one test: a failing row is reported with the others rather than alone.
#[test]
fn bad_inputs_exit_cleanly_with_their_code_and_message() {
    let cases = cases();
    assert!(cases.len() >= 40, "the table must hold at least 40 rows");
    let explore = std::env::var("HOSTILE_EXPLORE").is_ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        if case.backend == Backend::Postgres && pg_skipped() {
            continue;
        }
        let Some(mut p) = Project::new(case.backend) else {
            continue;
        };
        (case.setup)(&mut p);
        // Opening a SQLite file that does not exist would create it: look only when it does.
        let had_users = (p.backend == Backend::Postgres || p.path().join("test.db").exists())
            && users_rows(&p) == Some(2);
        let run = p.run(case.args);
        ran += 1;
        let first = run.stderr.lines().next().unwrap_or("");
        if explore {
            eprintln!(
                "{:<50} code {} | {}",
                case.name,
                run.code,
                first.chars().take(200).collect::<String>()
            );
        }
        let mut wrong = Vec::new();
        if run.code != case.code {
            wrong.push(format!("exit {} (expected {})", run.code, case.code));
        }
        if run.code == 101 || run.stderr.contains("panicked at") {
            wrong.push("panicked".to_string());
        }
        if !first.starts_with("error:") {
            wrong.push(format!("first stderr line is {first:?}"));
        }
        if !run.stderr.contains(case.stderr) {
            wrong.push(format!("stderr lacks {:?}", case.stderr));
        }
        if run.stderr.len() > 64 * 1024 {
            wrong.push(format!("stderr is {} bytes", run.stderr.len()));
        }
        if had_users && users_rows(&p) != Some(2) {
            wrong.push("the users table lost its rows".to_string());
        }
        if !wrong.is_empty() {
            let shown: String = run.stderr.chars().take(600).collect();
            failures.push(format!(
                "{}: {}\n  stderr: {shown}",
                case.name,
                wrong.join("; ")
            ));
        }
    }
    assert!(ran > 0);
    assert!(
        failures.is_empty(),
        "{} of {ran} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The number of rows in `users`, when the project's database has that table.
fn users_rows(p: &Project) -> Option<i64> {
    if p.has_table("users") {
        Some(p.count("SELECT count(*) AS n FROM users"))
    } else {
        None
    }
}

// ---- secrets -------------------------------------------------------------------------------------

/// A password with characters a URL must percent-encode, so both spellings can leak.
const SECRET: &str = "Zk9/s3cr3t@Pw";
const SECRET_FORMS: &[&str] = &[
    "Zk9/s3cr3t@Pw",
    "Zk9%2Fs3cr3t%40Pw",
    "Zk9%2fs3cr3t%40Pw",
    "s3cr3t",
];

fn encoded_secret() -> String {
    SECRET.replace('/', "%2F").replace('@', "%40")
}

/// Runs `args` with `--verbose` and `DB_ECHO=true`; checks that no form of the secret is printed
/// and that nothing panicked. Returns the run for further checks.
fn secret_run(p: &Project, args: &[&str]) -> crate::support::Run {
    let mut cmd = p.command();
    cmd.env("DB_ECHO", "true").arg("--verbose").args(args);
    let run = crate::support::Run::from(cmd.output().expect("run dbctl"));
    assert!(
        run.code != 101 && !run.stderr.contains("panicked at"),
        "{args:?} panicked:\n{}",
        run.stderr
    );
    for form in SECRET_FORMS {
        run.no_secret(form);
    }
    run
}

/// Every command, on success and failure paths, against a working server (trust auth ignores the
/// password) and against a closed port: the password is never printed.
#[test]
fn no_command_prints_the_password() {
    let Some(mut p) = Project::postgres() else {
        return;
    };
    let url = p.url().replacen(
        "://postgres@",
        &format!("://postgres:{}@", encoded_secret()),
        1,
    );
    assert!(
        url.contains(&encoded_secret()),
        "cannot put a password into {url}"
    );
    p.env("DATABASE_URL", &url);
    p.file("seeds/users.csv", "id,name\n1,ada\n2,bob\n");

    // Success paths.
    secret_run(&p, &["init"]).code(0);
    secret_run(
        &p,
        &[
            "revision",
            "create_users",
            "--sql",
            "CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL);",
            "--down-sql",
            "DROP TABLE users;",
        ],
    )
    .code(0);
    secret_run(&p, &["migrate", "up"]).code(0);
    secret_run(&p, &["migrate", "status"]).code(0);
    secret_run(&p, &["migrate", "redo"]).code(0);
    secret_run(&p, &["migrate", "down"]).code(0);
    secret_run(&p, &["migrate", "up"]).code(0);
    secret_run(&p, &["seed"]).code(0);
    secret_run(&p, &["ping"]).code(0);
    secret_run(&p, &["--format", "json", "ping"]).code(0);
    secret_run(&p, &["inspect"]).code(0);
    secret_run(&p, &["inspect", "users"]).code(0);
    let snapshot = secret_run(&p, &["--format", "json", "inspect"]);
    snapshot.code(0);
    p.file("snap.json", &snapshot.stdout);
    secret_run(&p, &["inspect", "--diff", "snap.json"]).code(0);
    secret_run(&p, &["inspect", "--lint"]);

    // Failure paths on a working server.
    p.file("seeds/users.csv", "id,name\n3,\n");
    secret_run(&p, &["seed"]).code(1);
    secret_run(&p, &["--format", "json", "seed"]).code(1);
    secret_run(&p, &["inspect", "no_such_table"]).code(2);
    secret_run(&p, &["inspect", "--diff", "missing.json"]).code(2);
    p.execute("CREATE TABLE extra (id integer)");
    secret_run(&p, &["inspect", "--diff", "snap.json"]).code(4);
    secret_run(&p, &["revision", "../bad"]).code(2);
    secret_run(&p, &["migrate", "down", "--all", "--step", "2"]).code(2);
    p.migration("broken", "SELEC 1;", Some("SELECT 1;"));
    secret_run(&p, &["migrate", "status", "--check"]).code(4);
    secret_run(&p, &["migrate", "up"]).code(1);
    secret_run(&p, &["--format", "json", "migrate", "up"]).code(1);

    // The same commands against a closed port: every one fails to connect.
    let port = crate::support::FakeServer::ClosedPort.start();
    p.env(
        "DATABASE_URL",
        &format!(
            "postgres://postgres:{}@127.0.0.1:{port}/db",
            encoded_secret()
        ),
    );
    for args in [
        &["init"][..],
        &["migrate", "up"],
        &["migrate", "down"],
        &["migrate", "redo"],
        &["migrate", "status"],
        &["seed"],
        &["ping"],
        &["--format", "json", "ping"],
        &["inspect"],
        &["inspect", "users"],
        &["inspect", "--diff", "snap.json"],
        &["inspect", "--lint"],
    ] {
        secret_run(&p, args).code(3);
    }
    // revision touches no database: it succeeds, and prints no password either.
    secret_run(&p, &["revision", "offline"]).code(0);
}

// ---- injection -----------------------------------------------------------------------------------

const HOSTILE: &str = "x\"; DROP TABLE users; --";

/// A table whose name and column are hostile exists: seeding it and inspecting it quote both,
/// and `users` keeps its rows.
#[test]
fn hostile_identifiers_that_exist_are_quoted() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(mut p) = Project::new(backend) else {
            continue;
        };
        db(&mut p);
        let table = HOSTILE.replace('"', "\"\"");
        p.execute(&format!(
            "CREATE TABLE \"{table}\" (\"a;b \"\"c\"\" d\" text, n integer)"
        ));
        p.file(
            &format!("seeds/{HOSTILE}.csv"),
            "\"a;b \"\"c\"\" d\",n\n\"'); DROP TABLE users; --\",1\n,2\n",
        );
        p.run(["seed"]).success();
        assert_eq!(
            p.count(&format!("SELECT count(*) AS n FROM \"{table}\"")),
            2
        );
        assert_eq!(
            p.strings(&format!(
                "SELECT \"a;b \"\"c\"\" d\" AS v FROM \"{table}\" ORDER BY n"
            )),
            vec![Some("'); DROP TABLE users; --".to_string()), None]
        );
        let json = p.run(["--format", "json", "inspect", HOSTILE]);
        json.success();
        assert!(json.stdout.contains("a;b \\\"c\\\" d"), "{}", json.stdout);
        p.run(["inspect", "--exact"]).success();
        assert_eq!(users_rows(&p), Some(2), "{backend:?}");
    }
}

/// `init` with a database name that tries to create a second database: exactly one database,
/// with exactly the hostile name, is created (and dropped by the test).
#[test]
fn init_creates_only_the_exact_hostile_database() {
    if pg_skipped() {
        return;
    }
    // The project is only for its folder. The name stays within PostgreSQL's 63 bytes (longer
    // ones are refused, see the table).
    let p = Project::sqlite();
    // unique_name grows with the process id and the clock: its last 17 characters (the counter
    // and the nanoseconds) keep it unique and the whole name within 63 bytes.
    let unique = crate::support::unique_name("i");
    let base = format!("i{}", &unique[unique.len().saturating_sub(17)..]);
    let name = format!("{base}\"; CREATE DATABASE {base}e; --");
    assert!(name.len() <= 63);
    let encoded = crate::support::percent_encode(&name);
    let url = crate::support::pg_url_for(&encoded);
    let databases = |admin: &mut diesel::PgConnection| -> Vec<String> {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct Name {
            #[diesel(sql_type = diesel::sql_types::Text)]
            datname: String,
        }
        diesel::sql_query("SELECT datname FROM pg_database")
            .load::<Name>(admin)
            .expect("list databases")
            .into_iter()
            .map(|n| n.datname)
            .filter(|n| n.starts_with(&base))
            .collect()
    };
    let mut admin = crate::support::pg_admin();
    assert!(databases(&mut admin).is_empty());
    let run = p.run(["init", "--no-migrate", "--database-url", &url]);
    let after = databases(&mut admin);
    for db in &after {
        use diesel::connection::SimpleConnection;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                db.replace('"', "\"\"")
            ))
            .expect("drop test database");
    }
    run.success();
    assert_eq!(after, vec![name], "init created other databases");
}
