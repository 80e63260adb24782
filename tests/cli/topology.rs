//! Production topologies with real parts: a streaming standby of the tests' own (`initdb` plus
//! `pg_basebackup -R`), URLs naming several hosts, and PgBouncer in transaction pooling mode
//! (support/topology.rs starts them once per test process).

use diesel::connection::SimpleConnection as _;

use crate::support::topology::{self, Pair};
use crate::support::{unique_name, Project};

/// A project whose database lives on the test primary (and so, replayed, on its standby).
fn on_pair(pair: &Pair) -> Project {
    let name = unique_name("dbctl_topo");
    topology::create_on_pair(pair, &name);
    Project::postgres_at(pair.primary_url(&name), pair.primary_url("postgres"), name)
}

fn db_name(p: &Project) -> String {
    p.pg_database().expect("a PostgreSQL project").to_string()
}

#[test]
fn ping_reports_primary_and_standby_with_lag_and_upstream() {
    let Some(pair) = topology::pair() else { return };
    let mut p = on_pair(pair);
    let name = db_name(&p);
    let primary = p.run(["ping", "--format", "json"]);
    let json = primary.success().json();
    assert_eq!(json["role"], "primary", "{json}");
    assert_eq!(json["writable"], true);
    assert_eq!(json["host"], format!("127.0.0.1:{}", pair.primary_port));

    p.use_url(&pair.standby_url(&name));
    let json = p.run(["ping", "--format", "json"]).success().json();
    assert_eq!(json["role"], "standby", "{json}");
    assert_eq!(json["writable"], false);
    assert_eq!(json["host"], format!("127.0.0.1:{}", pair.standby_port));
    assert_eq!(
        json["upstream"],
        format!("127.0.0.1:{}", pair.primary_port),
        "{json}"
    );
    assert!(json["replay_lag_ms"].as_f64().is_some(), "{json}");
    assert!(json["replay_lag_bytes"].as_i64().is_some(), "{json}");
    p.run(["ping"])
        .success()
        .stdout_has("standby")
        .stdout_has("replay lag")
        .stdout_has("upstream");
}

#[test]
fn a_standby_whose_replay_is_paused_reports_its_lag() {
    let Some(pair) = topology::pair() else { return };
    let mut p = on_pair(pair);
    let name = db_name(&p);
    p.use_url(&pair.standby_url(&name));
    let mut standby = pair.standby();
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .expect("pause replay");
    // Resumed whatever happens below: other tests share this standby.
    struct Resume(diesel::PgConnection);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = self.0.batch_execute("SELECT pg_wal_replay_resume()");
        }
    }
    let _resume = Resume(standby);
    let mut primary = pair.primary();
    primary
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS lag_probe (x int); \
             INSERT INTO lag_probe SELECT generate_series(1, 20000); DROP TABLE lag_probe",
        )
        .expect("write on the primary");
    // The standby hears of the new WAL end within its status interval (1 s).
    let started = std::time::Instant::now();
    let json = loop {
        let json = p.run(["ping", "--format", "json"]).success().json();
        if json["replay_lag_bytes"].as_i64().unwrap_or(0) > 100_000
            && json["replay_lag_ms"].as_f64().unwrap_or(0.0) > 0.0
        {
            break json;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the paused standby never reported a lag: {json}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(json["role"], "standby");
}

#[test]
fn ping_writable_exits_5_unless_the_server_takes_writes() {
    let Some(pair) = topology::pair() else { return };
    let mut p = on_pair(pair);
    let name = db_name(&p);
    p.run(["ping", "--writable"]).success();
    p.run(["ping", "--primary", "-q"]).success();

    p.use_url(&pair.standby_url(&name));
    let out = p.run(["ping", "--writable"]);
    out.code(5).stderr_has("read-only standby");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    let json = p.run(["ping", "--primary", "--format", "json"]);
    json.code(5);
    assert_eq!(json.json()["error"]["exit_code"], 5);
    // --wait keeps waiting for a writable server, and gives up with the same code.
    let started = std::time::Instant::now();
    p.run(["ping", "--writable", "--wait", "1"]).code(5);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));

    // A primary whose sessions are read-only takes no writes either.
    p.use_url(&pair.primary_url(&name));
    pair.primary()
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
        ))
        .unwrap();
    let json = p.run(["ping", "--format", "json"]).success().json();
    assert_eq!(
        (json["role"].clone(), json["writable"].clone()),
        ("primary".into(), false.into())
    );
    p.run(["ping", "--writable"])
        .code(5)
        .stderr_has("accepts no writes");
    p.run(["migrate", "up"]).code(5);
}

#[test]
fn writing_commands_stop_on_a_standby_before_doing_anything() {
    let Some(pair) = topology::pair() else { return };
    let mut p = on_pair(pair);
    let name = db_name(&p);
    p.migration(
        "create_items",
        "CREATE TABLE items (id INT PRIMARY KEY);",
        Some("DROP TABLE items;"),
    );
    p.file("seeds/items.csv", "id\n1\n2\n");
    p.use_url(&pair.standby_url(&name));
    for args in [
        vec!["init"],
        vec!["init", "--no-migrate"],
        vec!["migrate", "up"],
        vec!["migrate", "down"],
        vec!["migrate", "redo"],
        vec!["seed"],
        vec!["seed", "--dry-run"],
    ] {
        let out = p.run(&args);
        out.code(5).stderr_has("read-only standby");
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{args:?} printed more than one line:\n{}",
            out.stderr
        );
    }
    // `init` changed nothing: no project files were written.
    assert!(!p.path().join("diesel.toml").exists());
    assert!(!p.path().join(".env.example").exists());
    // A database missing on the standby cannot be created there either.
    let missing = unique_name("dbctl_topo_missing");
    p.use_url(&pair.standby_url(&missing));
    p.run(["init"]).code(5).stderr_has("read-only standby");
    // The primary saw no bookkeeping table, no migration, no row.
    p.use_url(&pair.primary_url(&name));
    assert!(!p.has_table("__diesel_schema_migrations"));
    assert!(!p.has_table("items"));
    // A dry run only reads, so it may look at the standby.
    p.use_url(&pair.standby_url(&name));
    p.run(["migrate", "up", "--dry-run"]).success();
}

#[test]
fn status_and_inspect_work_on_a_standby() {
    let Some(pair) = topology::pair() else { return };
    let mut p = on_pair(pair);
    let name = db_name(&p);
    p.migration(
        "create_items",
        "CREATE TABLE items (id INT PRIMARY KEY, label TEXT);",
        Some("DROP TABLE items;"),
    );
    p.run(["migrate", "up", "-q"]).success();
    pair.wait_for_replay();
    p.use_url(&pair.standby_url(&name));
    let status = p.run(["migrate", "status", "--check", "--format", "json"]);
    let json = status.success().json();
    assert_eq!(json["applied"], 1, "{json}");
    let inspect = p.run(["inspect", "--format", "json"]).success().json();
    assert!(inspect.to_string().contains("\"items\""), "{inspect}");
    p.run(["inspect", "items", "--exact"]).success();
}

#[test]
fn several_hosts_reach_the_writable_server_for_every_command() {
    let Some(pair) = topology::pair() else { return };
    let mut p = on_pair(pair);
    let name = db_name(&p);
    p.migration(
        "create_items",
        "CREATE TABLE items (id INT PRIMARY KEY);",
        Some("DROP TABLE items;"),
    );
    p.file("seeds/items.csv", "id\n1\n2\n3\n");
    let closed = topology::free_port();
    // A dead host, then the standby, then the primary: libpq skips the dead one, and
    // read-write skips the standby.
    let url = format!(
        "postgresql://postgres@127.0.0.1:{closed},127.0.0.1:{},127.0.0.1:{}/{name}?target_session_attrs=read-write",
        pair.standby_port, pair.primary_port
    );
    let primary = format!("127.0.0.1:{}", pair.primary_port);
    p.use_url(&url);
    let json = p.run(["ping", "--format", "json"]).success().json();
    assert_eq!(json["host"], primary.as_str(), "{json}");
    assert_eq!(json["role"], "primary");
    p.run(["init", "-v"])
        .success()
        .stderr_has(&format!("connected to {primary}"));
    p.run(["seed"]).success();
    p.run(["migrate", "redo"]).success();
    p.run(["seed"]).success();
    p.run(["migrate", "status", "--check"]).success();
    p.run(["inspect", "items"]).success();
    p.use_url(&pair.primary_url(&name));
    assert_eq!(p.count("SELECT count(*) AS n FROM items"), 3);

    // Without read-write the first live host answers: the standby, where writes stop (exit 5)
    // and -v and ping name it.
    let any = format!(
        "postgresql://postgres@127.0.0.1:{closed},127.0.0.1:{},127.0.0.1:{}/{name}",
        pair.standby_port, pair.primary_port
    );
    p.use_url(&any);
    let standby = format!("127.0.0.1:{}", pair.standby_port);
    let json = p.run(["ping", "--format", "json"]).success().json();
    assert_eq!(json["host"], standby.as_str(), "{json}");
    p.run(["migrate", "up", "-v"])
        .code(5)
        .stderr_has(&format!("connected to {standby}"));
    // No writable host at all: libpq finds none, which is a failure to connect (exit 3).
    let none = format!(
        "postgresql://postgres@127.0.0.1:{closed},127.0.0.1:{}/{name}?target_session_attrs=read-write",
        pair.standby_port
    );
    p.use_url(&none);
    p.run(["ping"]).code(3);
    p.run(["migrate", "up"]).code(3);
}

#[test]
fn the_host_named_is_the_server_that_did_the_work() {
    // Two servers with a database of the same name and load_balance_hosts=random: each run picks
    // one; the host it names (-v) must be the one holding its changes, and its connections must
    // not wander to the other.
    let Some(pair) = topology::pair() else { return };
    let Some(main) = Project::postgres() else {
        return;
    };
    let name = db_name(&main);
    topology::create_on_pair(pair, &name);
    struct DropOnPair<'a>(&'a Pair, String);
    impl Drop for DropOnPair<'_> {
        fn drop(&mut self) {
            topology::drop_on_pair(self.0, &self.1);
        }
    }
    let _cleanup = DropOnPair(pair, name.clone());
    let main_hostport = {
        let url = crate::support::pg_url_for(&name);
        let after = url
            .split_once('@')
            .map_or(url.as_str(), |(_, r)| r)
            .to_string();
        after
            .split('/')
            .next()
            .unwrap_or("127.0.0.1:5432")
            .to_string()
    };
    let main_hostport = if main_hostport.contains(':') {
        main_hostport
    } else {
        format!("{main_hostport}:5432")
    };
    let pair_hostport = format!("127.0.0.1:{}", pair.primary_port);
    let mut p = Project::postgres_at(
        pair.primary_url(&name),
        pair.primary_url("postgres"),
        unique_name("unused"),
    );
    p.migration("t", "CREATE TABLE t (id INT);", Some("DROP TABLE t;"));
    let url = format!(
        "postgresql://postgres@{main_hostport},{pair_hostport}/{name}?load_balance_hosts=random"
    );
    let direct = |host: &str| format!("postgres://postgres@{host}/{name}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        p.use_url(&url);
        let out = p.run(["migrate", "up", "-v"]);
        out.success();
        let host = [&main_hostport, &pair_hostport]
            .into_iter()
            .find(|h| out.stderr.contains(&format!("connected to {h} ")))
            .unwrap_or_else(|| panic!("no host named:\n{}", out.stderr))
            .clone();
        seen.insert(host.clone());
        let other = if host == main_hostport {
            &pair_hostport
        } else {
            &main_hostport
        };
        p.use_url(&direct(&host));
        p.run(["migrate", "status", "--check", "-q"]).success();
        p.run(["migrate", "down", "-q"]).success();
        p.use_url(&direct(other));
        let status = p.run(["migrate", "status", "--format", "json"]).json();
        assert_eq!(
            status["applied"], 0,
            "the other server has changes too: {status}"
        );
    }
    eprintln!("servers chosen: {seen:?}");
}
