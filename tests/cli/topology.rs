//! Production topologies with real parts: a streaming standby of the tests' own (`initdb` plus
//! `pg_basebackup -R`), URLs naming several hosts, and PgBouncer in transaction pooling mode
//! (support/topology.rs starts them once per test process).

use diesel::connection::SimpleConnection as _;

use crate::support::topology::{self, Pair};
use crate::support::{unique_name, Project};

/// The test pair, and a project whose database (named too) lives on its primary (and so,
/// replayed, on its standby); `None` when topology tests are skipped.
fn on_pair() -> Option<(&'static Pair, Project, String)> {
    let pair = topology::pair()?;
    let name = unique_name("dbctl_topo");
    topology::create_on_pair(pair, &name);
    let p = Project::postgres_at(
        pair.primary_url(&name),
        pair.primary_url("postgres"),
        name.clone(),
    );
    Some((pair, p, name))
}

/// The `create_items` migration: a table `items` with these columns (down.sql drops it).
fn create_items(p: &mut Project, columns: &str) {
    p.migration(
        "create_items",
        &format!("CREATE TABLE items ({columns});"),
        Some("DROP TABLE items;"),
    );
}

fn db_name(p: &Project) -> String {
    p.pg_database().expect("a PostgreSQL project").to_string()
}

#[test]
fn ping_reports_primary_and_standby_with_lag_and_upstream() {
    let Some((pair, mut p, name)) = on_pair() else {
        return;
    };
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
    let Some((pair, mut p, name)) = on_pair() else {
        return;
    };
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
    let Some((pair, mut p, name)) = on_pair() else {
        return;
    };
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
    let Some((pair, mut p, name)) = on_pair() else {
        return;
    };
    create_items(&mut p, "id INT PRIMARY KEY");
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
    let Some((pair, mut p, name)) = on_pair() else {
        return;
    };
    create_items(&mut p, "id INT PRIMARY KEY, label TEXT");
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
    let Some((pair, mut p, name)) = on_pair() else {
        return;
    };
    create_items(&mut p, "id INT PRIMARY KEY");
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
    // Every command's JSON names the server that answered, as ping's does.
    for args in [
        &["init"][..],
        &["seed"],
        &["migrate", "redo"],
        &["seed"],
        &["migrate", "status", "--check"],
        &["inspect", "items"],
        &["print-schema"],
    ] {
        let run = p.run(args.iter().chain(&["--format", "json"]));
        let json = run.success().json();
        assert_eq!(json["host"], primary.as_str(), "{args:?}: {json}");
    }
    // The libpq key=value form of the same list.
    p.use_url(&format!(
        "host=127.0.0.1,127.0.0.1,127.0.0.1 port={closed},{},{} user=postgres dbname={name} \
         target_session_attrs=read-write",
        pair.standby_port, pair.primary_port
    ));
    let json = p.run(["ping", "--format", "json"]).success().json();
    assert_eq!(json["host"], primary.as_str(), "{json}");
    p.run(["seed", "--dry-run", "--truncate"]).success();
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
    // Reading commands work there, and say so.
    let json = p
        .run(["migrate", "status", "--format", "json"])
        .success()
        .json();
    assert_eq!(json["host"], standby.as_str(), "{json}");
    let json = p.run(["inspect", "--format", "json"]).success().json();
    assert_eq!(json["host"], standby.as_str(), "{json}");
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

// ---- PgBouncer in transaction pooling mode (pool size 4) ----

use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::topology::Bouncer;
use crate::support::Run;

/// A fresh database on the test server, with the project's commands going through PgBouncer.
fn through_bouncer() -> Option<(Project, &'static Bouncer)> {
    let bouncer = topology::bouncer()?;
    let mut p = Project::postgres()?;
    let url = bouncer.url(p.pg_database().expect("a PostgreSQL project"));
    p.use_url(&url);
    Some((p, bouncer))
}

fn spawn(p: &Project, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = p.command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::reliability::spawn_cmd(cmd)
}

/// Waits for a child at most `limit` (then kills it and fails: dbctl must never hang).
#[track_caller]
fn finish(child: Child, limit: Duration) -> Run {
    crate::reliability::finish(child, limit, "dbctl through the topology fixtures")
}

/// Every version recorded exactly once in both bookkeeping tables.
#[track_caller]
fn recorded_once(p: &Project, versions: &[String]) {
    for table in ["__diesel_schema_migrations", "__dbctl_migrations"] {
        let rows = p.strings(&format!(
            "SELECT version::text AS v FROM {table} ORDER BY version"
        ));
        let rows: Vec<String> = rows.into_iter().map(Option::unwrap_or_default).collect();
        assert_eq!(rows, versions, "{table}");
    }
}

fn lock_rows(p: &Project) -> i64 {
    if !p.has_table("__dbctl_lock") {
        return 0;
    }
    p.count("SELECT count(*)::bigint AS n FROM __dbctl_lock")
}

#[test]
fn pgbouncer_eight_concurrent_ups_apply_each_migration_once() {
    let Some((mut p, _)) = through_bouncer() else {
        return;
    };
    let mut versions = Vec::new();
    for i in 0..12 {
        versions.push(p.migration(
            &format!("t{i}"),
            &format!(
                "CREATE TABLE t{i} (id INT PRIMARY KEY, v TEXT);\n\
                 INSERT INTO t{i} SELECT g, md5(g::text) FROM generate_series(1, 500) g;\n\
                 UPDATE t{i} SET v = v || '{i}';"
            ),
            Some(&format!("DROP TABLE t{i};")),
        ));
    }
    // A non-transactional one in the middle of the run: the lease protects it, not a transaction.
    p.file(
        "migrations/2024-01-01-0000065_zz_index/up.sql",
        "CREATE INDEX CONCURRENTLY t5_v ON t5 (v);",
    );
    p.file(
        "migrations/2024-01-01-0000065_zz_index/metadata.toml",
        "run_in_transaction = false\n",
    );
    versions.push("202401010000065".to_string());
    versions.sort();
    versions.dedup();
    let started = Instant::now();
    let children: Vec<Child> = (0..8)
        .map(|_| spawn(&p, &["migrate", "up", "--format", "json"], &[]))
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| finish(c, Duration::from_secs(120)))
        .collect();
    let wall = started.elapsed();
    let mut applied = 0;
    let mut waits = Vec::new();
    for run in &runs {
        run.success();
        let json = run.json();
        applied += json["steps"].as_array().map_or(0, Vec::len);
        waits.push(json["lock_wait_ms"].as_f64().unwrap_or(-1.0));
    }
    // Each migration applied by exactly one of the eight, recorded once, and nothing left locked.
    assert_eq!(applied, versions.len(), "steps over all runs");
    recorded_once(&p, &versions);
    for i in 0..12 {
        assert_eq!(
            p.count(&format!("SELECT count(*)::bigint AS n FROM t{i}")),
            500
        );
    }
    assert_eq!(lock_rows(&p), 0, "the lease row was not released");
    waits.sort_by(f64::total_cmp);
    eprintln!(
        "pgbouncer, 8 concurrent `migrate up` of {} migrations, pool size {}: wall {:.0} ms, \
         lock waits (ms) {waits:?}",
        versions.len(),
        topology::BOUNCER_POOL_SIZE,
        wall.as_secs_f64() * 1000.0
    );
}

#[test]
fn pgbouncer_vaultwarden_corpus_applies_with_every_migration_recorded_once() {
    let Some(dir) = crate::support::vaultwarden_for(
        crate::support::Backend::Postgres,
        "the PgBouncer corpus run",
    ) else {
        return;
    };
    let Some((p, _)) = through_bouncer() else {
        return;
    };
    let mut versions: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.path().is_dir().then(|| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.split('_').next().unwrap().replace('-', "")
            })
        })
        .collect();
    versions.sort();
    let dir_arg = dir.display().to_string();
    let out = p.run(["--migrations-dir", &dir_arg, "migrate", "up", "-v"]);
    out.success().stderr_has("transaction pooling on");
    recorded_once(&p, &versions);
    p.run(["--migrations-dir", &dir_arg, "migrate", "status", "--check"])
        .success();
    p.run([
        "--migrations-dir",
        &dir_arg,
        "migrate",
        "redo",
        "--step",
        "3",
    ])
    .success();
    recorded_once(&p, &versions);
    assert_eq!(lock_rows(&p), 0);
    let schema = p.run(["--migrations-dir", &dir_arg, "inspect", "--format", "json"]);
    assert!(
        schema.success().stdout.contains("\"users\""),
        "{}",
        schema.stdout
    );
}

/// Waits until a statement holding `needle` runs on the project's database.
#[track_caller]
fn wait_for_statement(p: &Project, needle: &str) {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let dbname = p.pg_database().unwrap().to_string();
    let mut admin = crate::support::pg_admin();
    let started = Instant::now();
    loop {
        let n: N = diesel::sql_query(
            "SELECT count(*)::bigint AS n FROM pg_stat_activity WHERE datname = $1 \
             AND strpos(query, $2) > 0 AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .bind::<diesel::sql_types::Text, _>(&dbname)
        .bind::<diesel::sql_types::Text, _>(needle)
        .get_result(&mut admin)
        .unwrap();
        if n.n > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "`{needle}` never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pgbouncer_sigkill_mid_run_leaves_no_lock_beyond_the_expiry() {
    let Some((mut p, _)) = through_bouncer() else {
        return;
    };
    let versions = vec![
        p.migration("first", "CREATE TABLE first (id INT);", None),
        p.migration(
            "slow",
            "CREATE TABLE slow (id INT);\nSELECT pg_sleep(1.5);",
            None,
        ),
        p.migration("last", "CREATE TABLE last (id INT);", None),
    ];
    let expiry = [("DB_LOCK_EXPIRY", "3")];
    let victim = spawn(&p, &["migrate", "up"], &expiry);
    // Kill it while the slow migration runs (its pg_sleep is on the server).
    wait_for_statement(&p, "pg_sleep(1.5)");
    let mut victim = victim;
    victim.kill().expect("SIGKILL the runner");
    let _ = victim.wait();
    assert_eq!(lock_rows(&p), 1, "the killed runner's lease is still there");
    // The next run waits for the lease to expire (3 s after the last heartbeat), takes it over,
    // and finishes the work: each migration once.
    let next = finish(
        spawn(&p, &["migrate", "up", "--format", "json"], &expiry),
        Duration::from_secs(60),
    );
    next.success();
    let waited = next.json()["lock_wait_ms"].as_f64().unwrap();
    assert!(
        waited < 15_000.0,
        "the next run waited {waited} ms for a dead runner's lock (expiry 3 s)"
    );
    recorded_once(&p, &versions);
    assert_eq!(lock_rows(&p), 0);
    eprintln!("after SIGKILL the next run took the lock over after {waited:.0} ms (expiry 3 s)");
}

#[test]
fn pgbouncer_stalled_runner_loses_its_lease_and_nothing_runs_twice() {
    // A runner stopped (SIGSTOP) in the middle of a migration for longer than the expiry: another
    // run takes the lease over, waits in the migration's transaction lock for the stalled one, and
    // skips what it finds applied; the stalled runner, resumed, stops at its next migration.
    let Some((mut p, _)) = through_bouncer() else {
        return;
    };
    let mut versions = vec![p.migration(
        "slow",
        "CREATE TABLE slow (id INT);\nSELECT pg_sleep(1);",
        None,
    )];
    for i in 0..3 {
        versions.push(p.migration(
            &format!("after{i}"),
            &format!("CREATE TABLE after{i} (id INT);"),
            None,
        ));
    }
    let expiry = [("DB_LOCK_EXPIRY", "2")];
    let stalled = spawn(&p, &["migrate", "up"], &expiry);
    let pid = stalled.id().to_string();
    wait_for_statement(&p, "pg_sleep(1)");
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stop.success());
    let owner = |p: &Project| p.strings("SELECT owner AS v FROM __dbctl_lock");
    let stalled_owner = owner(&p);
    let other = spawn(&p, &["migrate", "up", "--format", "json"], &expiry);
    // Resumed only once the other run has taken the lease (after the 2 s expiry, however loaded
    // the machine is). The stalled run's migration may have committed already (its whole query
    // was on the server), so the other run may also have finished and released the lease.
    let started = Instant::now();
    while owner(&p) == stalled_owner {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the lease was never taken over"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    let stalled = finish(stalled, Duration::from_secs(60));
    let other = finish(other, Duration::from_secs(60));
    other.success();
    stalled.code(1).stderr_has("taken over");
    recorded_once(&p, &versions);
    assert_eq!(lock_rows(&p), 0);
}

#[test]
fn pgbouncer_seed_stays_all_or_nothing() {
    let Some((mut p, _)) = through_bouncer() else {
        return;
    };
    p.migration(
        "create_items",
        "CREATE TABLE items (id INT PRIMARY KEY, label TEXT NOT NULL);",
        None,
    );
    p.run(["migrate", "up", "-q"]).success();
    let rows = 1_000_000;
    let mut csv = String::with_capacity(rows * 16);
    csv.push_str("id,label\n");
    for i in 1..=rows {
        csv.push_str(&format!("{i},item {i}\n"));
    }
    // The last row breaks the primary key: nothing may stay.
    let bad = format!("{csv}1,duplicate\n");
    p.file("seeds/items.csv", &bad);
    p.run(["seed"]).code(1).stderr_has("items.csv");
    assert_eq!(p.count("SELECT count(*)::bigint AS n FROM items"), 0);
    p.file("seeds/items.csv", &csv);
    p.run(["seed", "-v"])
        .success()
        .stderr_has("transaction pooling on");
    assert_eq!(
        p.count("SELECT count(*)::bigint AS n FROM items"),
        rows as i64
    );
}

#[test]
fn pgbouncer_session_settings_stay_with_dbctl() {
    // DB_STATEMENT_TIMEOUT is applied per transaction through the pooler: it bounds dbctl's
    // migration, and it does not stay behind on the pool's server connections for other clients.
    let Some((mut p, bouncer)) = through_bouncer() else {
        return;
    };
    p.migration("slow", "SELECT pg_sleep(3);", None);
    p.env("DB_STATEMENT_TIMEOUT", "1");
    p.execute("CREATE SCHEMA app");
    p.env("DATABASE_SCHEMA", "app");
    let out = p.run(["migrate", "up"]);
    out.code(1);
    for _ in 0..4 {
        p.run(["migrate", "status", "-q"]);
        p.run(["ping", "-q"]).success();
    }
    let url = bouncer.url(p.pg_database().unwrap());
    for _ in 0..(topology::BOUNCER_POOL_SIZE * 2) {
        use diesel::prelude::*;
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        let shown = crate::support::Conn::Pg(diesel::PgConnection::establish(&url).unwrap())
            .strings(
                "SELECT current_setting('statement_timeout') || '/' || \
                 current_setting('client_connection_check_interval') || '/' || \
                 current_setting('search_path') AS v",
            );
        assert_eq!(
            shown,
            vec![Some("0/0/\"$user\", public".to_string())],
            "a dbctl setting leaked into the pool"
        );
        c.batch_execute("SELECT 1").unwrap();
    }
}

#[test]
fn pgbouncer_migrations_and_their_bookkeeping_run_in_utc() {
    // A direct run sets the session's time zone to UTC for the run. Through a transaction pooler
    // dbctl makes no session setting (it would land on one server connection of the pool): each
    // migration's transaction sets UTC with SET LOCAL, and a migration without a transaction its
    // bookkeeping transaction. dbctl's pooled session is in the database's zone otherwise.
    let Some((mut p, _)) = through_bouncer() else {
        return;
    };
    let db = p.pg_database().unwrap().to_string();
    // The zone every server connection to this database starts in (none is open yet): not UTC.
    crate::support::pg_admin()
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" SET timezone = 'Pacific/Chatham'"
        ))
        .unwrap();
    p.migration(
        "zone",
        "CREATE TABLE zone AS SELECT current_setting('TimeZone') AS tz;",
        None,
    );
    p.migration_folder(
        "2024-01-01-000100_notx",
        "CREATE TABLE notx (id INT);",
        None,
    );
    p.file(
        "migrations/2024-01-01-000100_notx/metadata.toml",
        "run_in_transaction = false\n",
    );
    p.run(["migrate", "up"]).success();
    assert_eq!(
        p.strings("SELECT tz AS v FROM zone"),
        vec![Some("UTC".to_string())],
        "the migration did not run in UTC"
    );
    // diesel's run_on is CURRENT_TIMESTAMP in the writing transaction's zone: UTC for both rows.
    let off = p.strings(
        "SELECT bool_and(abs(extract(epoch FROM (now() AT TIME ZONE 'UTC') - run_on)) < 600)::text \
         AS v FROM __diesel_schema_migrations",
    );
    assert_eq!(off, vec![Some("true".to_string())], "run_on is not in UTC");
}

#[test]
fn pooling_mode_is_detected_or_set() {
    let Some((mut p, bouncer)) = through_bouncer() else {
        return;
    };
    let name = p.pg_database().unwrap().to_string();
    p.migration("t", "CREATE TABLE t (id INT);", None);
    p.run(["ping", "-v"])
        .success()
        .stderr_has("transaction pooling on (detected");
    // Explicitly off through the bouncer, explicitly on directly; bad values are usage errors.
    p.use_url(&format!("{}?pgbouncer=false", bouncer.url(&name)));
    p.run(["ping", "-v"])
        .success()
        .stderr_has("transaction pooling off (the URL's pgbouncer=");
    let direct = crate::support::pg_url_for(&name);
    p.use_url(&direct);
    p.run(["ping", "-v"])
        .success()
        .stderr_has("transaction pooling off (nothing");
    p.env("DB_PGBOUNCER", "true");
    p.run(["ping", "-v"])
        .success()
        .stderr_has("transaction pooling on (DB_PGBOUNCER)");
    p.run(["migrate", "up"]).success();
    assert!(
        p.has_table("__dbctl_lock"),
        "pooled mode uses the lease table"
    );
    let sep = if direct.contains('?') { '&' } else { '?' };
    p.use_url(&format!("{direct}{sep}pgbouncer=maybe"));
    p.run(["ping"]).code(2).stderr_has("pgbouncer");
    p.use_url(&direct);
    p.env("DB_PGBOUNCER", "sometimes");
    p.run(["ping"]).code(2).stderr_has("DB_PGBOUNCER");
}

#[test]
fn runs_through_the_pooler_and_direct_runs_exclude_each_other() {
    let Some((mut p, bouncer)) = through_bouncer() else {
        return;
    };
    let name = p.pg_database().unwrap().to_string();
    let mut versions = Vec::new();
    for i in 0..6 {
        versions.push(p.migration(
            &format!("m{i}"),
            &format!("CREATE TABLE m{i} (id INT);\nSELECT pg_sleep(0.1);"),
            None,
        ));
    }
    let pooled = bouncer.url(&name);
    let direct = crate::support::pg_url_for(&name);
    let children: Vec<Child> = (0..6)
        .map(|i| {
            let url = if i % 2 == 0 { &pooled } else { &direct };
            spawn(
                &p,
                &["migrate", "up", "--format", "json"],
                &[("DATABASE_URL", url.as_str())],
            )
        })
        .collect();
    let mut applied = 0;
    for c in children {
        let run = finish(c, Duration::from_secs(120));
        run.success();
        applied += run.json()["steps"].as_array().map_or(0, Vec::len);
    }
    assert_eq!(applied, versions.len());
    recorded_once(&p, &versions);
    assert_eq!(lock_rows(&p), 0);
}

#[test]
fn a_plain_tcp_proxy_is_not_taken_for_a_pooler() {
    // A port mapping or TCP proxy also puts another port in front of the server, but passes the
    // server's own backend key through: no pooled mode (the silent-server watchdog stays on).
    let Some(mut p) = Project::postgres() else {
        return;
    };
    let upstream = {
        let url = crate::support::pg_url_for("x");
        let after = url
            .split_once('@')
            .map_or(url.clone(), |(_, r)| r.to_string());
        let hostport = after
            .split('/')
            .next()
            .unwrap_or("127.0.0.1:5432")
            .to_string();
        if hostport.contains(':') {
            hostport
        } else {
            format!("{hostport}:5432")
        }
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || std::io::copy(&mut c1, &mut s1));
            std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
        }
    });
    let name = p.pg_database().unwrap().to_string();
    let url = crate::support::pg_url_for(&name);
    let proxied = url.replacen(
        url.split_once('@')
            .map_or("", |(_, r)| r.split('/').next().unwrap_or("")),
        &format!("127.0.0.1:{port}"),
        1,
    );
    p.use_url(&proxied);
    p.run(["ping", "-v"])
        .success()
        .stderr_has("transaction pooling off")
        .stderr_has(&format!("connected to 127.0.0.1:{port}"));
}

/// The test server's `host:port` (from the URL the PostgreSQL tests use).
fn test_server_hostport() -> String {
    let url = crate::support::pg_url_for("x");
    let after = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
    let hostport = after.split('/').next().unwrap_or("127.0.0.1:5432");
    if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    }
}

#[test]
fn every_json_report_names_the_host_that_answered() {
    // No standby needed: a dead host first, then the tests' own server. libpq skips the dead
    // one; every command's JSON (and -v) names the one that answered, ping's `host` field.
    let Some(mut p) = Project::postgres() else {
        return;
    };
    let name = db_name(&p);
    let server = test_server_hostport();
    let closed = topology::free_port();
    let direct = crate::support::pg_url_for(&name);
    let multi = direct.replacen(&server, &format!("127.0.0.1:{closed},{server}"), 1);
    assert_ne!(multi, direct, "the test URL names its server as {server}");
    let sep = if multi.contains('?') { '&' } else { '?' };
    p.use_url(&format!("{multi}{sep}target_session_attrs=read-write"));
    create_items(&mut p, "id INT PRIMARY KEY, label TEXT");
    p.file("seeds/items.csv", "id,label\n1,a\n2,b\n");
    let json = p.run(["ping", "--format", "json"]).success().json();
    assert_eq!(json["host"], server.as_str(), "{json}");
    for args in [
        &["init"][..],
        &["migrate", "status"],
        &["seed"],
        &["migrate", "redo"],
        &["migrate", "down"],
        &["migrate", "up", "--dry-run"],
        &["migrate", "up"],
        &["inspect"],
        &["inspect", "items"],
        &["print-schema"],
    ] {
        let run = p.run(args.iter().chain(&["--format", "json"]));
        let json = run.success().json();
        assert_eq!(json["host"], server.as_str(), "{args:?}: {json}");
    }
    // The naming lint finds `items_pkey` misnamed (exit 4); its report names the host too.
    let lint = p.run(["inspect", "--lint", "--rule", "naming", "--format", "json"]);
    let json = lint.code(4).json();
    assert_eq!(json["host"], server.as_str(), "{json}");
    p.run(["migrate", "status", "-v"])
        .success()
        .stderr_has(&format!("connected to {server}"));

    // SQLite has no server: the field is absent.
    let s = Project::sqlite();
    s.run(["init", "-q"]).success();
    for args in [
        &["init"][..],
        &["migrate", "status"],
        &["inspect"],
        &["print-schema"],
    ] {
        let json = s
            .run(args.iter().chain(&["--format", "json"]))
            .success()
            .json();
        assert!(json.get("host").is_none(), "{args:?}: {json}");
    }
}
