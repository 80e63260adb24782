//! The command line itself: numbers range-checked at parse time, usage errors as JSON, output kept
//! proportionate to what went wrong, help layout, tables on odd terminals, completions and the
//! man page.

use std::process::Command;

use crate::both_backends;
use crate::support::{Project, Run};

/// Every numeric flag and setting, given a value outside its range (or not a number at all):
/// exit 2, one line naming the flag or setting and the accepted range, no panic, no abort, no
/// 30-second stall.
/// Arguments, an environment variable to set, and the name the error must give.
type Case = (
    Vec<&'static str>,
    Option<(&'static str, &'static str)>,
    &'static str,
);

fn out_of_range_cases() -> Vec<Case> {
    vec![
        // Flags.
        (
            vec!["migrate", "up", "--lock-timeout", "1e20"],
            None,
            "--lock-timeout",
        ),
        (
            vec!["migrate", "up", "--lock-timeout=-1"],
            None,
            "--lock-timeout",
        ),
        (
            vec!["migrate", "down", "--lock-timeout", "NaN"],
            None,
            "--lock-timeout",
        ),
        (
            vec!["migrate", "redo", "--lock-timeout", "inf"],
            None,
            "--lock-timeout",
        ),
        (vec!["migrate", "up", "--step", "0"], None, "--step"),
        (
            vec!["migrate", "up", "--step", "99999999999999999999999"],
            None,
            "--step",
        ),
        (vec!["ping", "--wait", "1e300"], None, "--wait"),
        (vec!["ping", "--wait", "0"], None, "--wait"),
        (vec!["ping", "--timeout", "1e20"], None, "--timeout"),
        (vec!["ping", "--count", "4294967296"], None, "--count"),
        // Settings from the environment.
        (
            vec!["ping"],
            Some(("DB_POOL_SIZE", "4294967295")),
            "DB_POOL_SIZE",
        ),
        (vec!["ping"], Some(("DB_POOL_SIZE", "1e3")), "DB_POOL_SIZE"),
        (
            vec!["ping"],
            Some(("DATABASE_POOL_SIZE", "100000")),
            "DATABASE_POOL_SIZE",
        ),
        (
            vec!["ping"],
            Some(("DB_MAX_OVERFLOW", "-2")),
            "DB_MAX_OVERFLOW",
        ),
        (
            vec!["ping"],
            Some(("DATABASE_MAX_OVERFLOW", "1e9")),
            "DATABASE_MAX_OVERFLOW",
        ),
        (
            vec!["ping"],
            Some(("DB_STATEMENT_TIMEOUT", "3000000")),
            "DB_STATEMENT_TIMEOUT",
        ),
        (
            vec!["ping"],
            Some(("DB_STATEMENT_TIMEOUT", "0.0001")),
            "DB_STATEMENT_TIMEOUT",
        ),
        (
            vec!["ping"],
            Some(("DB_POOL_TIMEOUT", "1e20")),
            "DB_POOL_TIMEOUT",
        ),
        (
            vec!["ping"],
            Some(("DB_POOL_RECYCLE", "1e30")),
            "DB_POOL_RECYCLE",
        ),
        (
            vec!["ping"],
            Some(("DB_POOL_RECYCLE", "-7")),
            "DB_POOL_RECYCLE",
        ),
        (
            vec!["ping"],
            Some(("DB_CONNECT_TIMEOUT", "1e20")),
            "DB_CONNECT_TIMEOUT",
        ),
        (
            vec!["ping"],
            Some(("DB_CONNECT_TIMEOUT", "0")),
            "DB_CONNECT_TIMEOUT",
        ),
    ]
}

both_backends!(every_number_is_range_checked_at_parse_time, |p: Project| {
    p.run(["init", "-q"]).success();
    for (args, env, name) in out_of_range_cases() {
        let mut cmd = p.command();
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let run = Run::from(cmd.args(&args).output().unwrap());
        run.code(2).stderr_has(name);
        assert!(
            run.stderr.contains(" to ") || run.stderr.contains(" in "),
            "{args:?} {env:?}: the message names no range:\n{}",
            run.stderr
        );
        assert_eq!(
            run.stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count(),
            1
        );
    }
});

// The same numbers in `.env` and in the URL's driver parameters.
both_backends!(numbers_in_dotenv_and_url_are_range_checked, |p: Project| {
    p.run(["init", "-q"]).success();
    p.file(".env", "DB_POOL_SIZE=4294967295\n");
    p.run(["ping"])
        .code(2)
        .stderr_has("DB_POOL_SIZE")
        .stderr_has("from 1 to 1000")
        .stderr_has(".env");
    std::fs::remove_file(p.path().join(".env")).unwrap();
    if p.backend == crate::support::Backend::Postgres {
        for (param, value) in [("command_timeout", "3000000"), ("timeout", "-1")] {
            let url = format!("{}?{param}={value}", p.url());
            p.run(["ping", "--database-url", &url])
                .code(2)
                .stderr_has(param)
                .stderr_has("from 0.001");
        }
    }
});

// In range, the extremes work.
both_backends!(numbers_at_the_ends_of_their_ranges_work, |p: Project| {
    p.run(["init", "-q"]).success();
    let mut cmd = p.command();
    cmd.env("DB_POOL_SIZE", "1000")
        .env("DB_MAX_OVERFLOW", "-1")
        .env("DB_STATEMENT_TIMEOUT", "2147483")
        .env("DB_POOL_RECYCLE", "-1");
    Run::from(cmd.args(["migrate", "status"]).output().unwrap()).success();
    p.run(["migrate", "up", "--lock-timeout", "0"]).success();
    p.run(["migrate", "up", "--lock-timeout", "86400"])
        .success();
});

/// Usage errors found by clap, with `--format json` (before or after the subcommand) or
/// `DBCTL_FORMAT=json`: exit 2 and exactly one JSON error document on stdout.
#[test]
fn usage_errors_are_a_json_document_with_format_json() {
    let p = Project::sqlite();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--format", "json", "nosuch"],
        vec!["nosuch", "--format", "json"],
        vec!["migrate", "up", "--step", "0", "--format", "json"],
        vec!["--format=json", "migrate", "up", "--step"],
        vec!["--format", "json", "ping", "--no-such-flag"],
        vec!["--format", "json", "migrate"],
        vec![
            "--format",
            "json",
            "migrate",
            "up",
            "--lock-timeout",
            "1e20",
        ],
        vec![
            "--format", "json", "ping", "--format", "json", "--count", "x",
        ],
    ];
    for args in cases {
        let run = p.run(&args);
        run.code(2);
        let doc = run.json();
        assert_eq!(doc["error"]["exit_code"], 2, "{args:?}: {doc}");
        let message = doc["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{args:?}: {doc}");
    }
    let mut cmd = p.command();
    cmd.env("DBCTL_FORMAT", "json")
        .args(["migrate", "up", "--step", "0"]);
    let run = Run::from(cmd.output().unwrap());
    run.code(2);
    assert_eq!(run.json()["error"]["exit_code"], 2);
    // Human format: nothing on stdout.
    let run = p.run(["migrate", "up", "--step", "0"]);
    run.code(2);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

/// `--format mermaid|dot` are `inspect`'s: listed only in its help, refused elsewhere by the
/// argument parser (exit 2); each command's help lists its own flags before the global ones.
#[test]
fn help_lists_own_flags_first_and_diagram_formats_only_on_inspect() {
    let p = Project::sqlite();
    for cmd in [
        vec!["init"],
        vec!["ping"],
        vec!["migrate", "up"],
        vec!["migrate", "status"],
        vec!["revision", "add_x"],
        vec!["seed"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let run = p.run(&args);
        run.success();
        assert!(!run.stdout.contains("mermaid"), "{cmd:?}:\n{}", run.stdout);
        let own = run.stdout.find("Options:").expect("an Options heading");
        let global = run
            .stdout
            .find("Global options:")
            .expect("a Global options heading");
        assert!(own < global, "{cmd:?}:\n{}", run.stdout);
        let global_flag = run.stdout.find("--database-url <URL>").unwrap();
        assert!(global_flag > global, "{cmd:?}:\n{}", run.stdout);
        let mut args = cmd.clone();
        args.extend(["--format", "mermaid"]);
        p.run(&args).code(2).stderr_has("mermaid");
    }
    // Refused before anything is done.
    assert!(!p.path().join("migrations").exists());
    let run = p.run(["inspect", "--help"]);
    run.success().stdout_has("mermaid").stdout_has("dot");
    let top = p.run(["--help"]);
    assert!(!top.stdout.contains("mermaid"), "{}", top.stdout);
}

// 200,000 unknown keys in a metadata.toml: one warning naming a few (not 23 MB), on stderr and
// in the JSON report; 30 migrations with a warning each: 20 lines and one saying how many more.
both_backends!(repeated_warnings_are_capped, |mut p: Project| {
    p.migration(
        "many_keys",
        "CREATE TABLE t (id INTEGER);",
        Some("DROP TABLE t;"),
    );
    let mut toml = String::from("run_in_transaction = true\n");
    for i in 0..200_000 {
        toml.push_str(&format!("unknown_key_{i} = 1\n"));
    }
    let dir = std::fs::read_dir(p.path().join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with("_many_keys")
        })
        .unwrap();
    std::fs::write(dir.join("metadata.toml"), toml).unwrap();
    let run = p.run(["init"]);
    run.success()
        .stderr_has("200,000 unknown keys `unknown_key_0`")
        .stderr_has("and 199,995 more ignored");
    assert!(
        run.stderr.len() < 5_000,
        "{} bytes of stderr",
        run.stderr.len()
    );
    let run = p.run(["migrate", "status", "--format", "json"]);
    run.success();
    assert!(
        run.stdout.len() < 5_000,
        "{} bytes of stdout",
        run.stdout.len()
    );
    run.json();

    for i in 0..30 {
        let name = format!("extra_{i}");
        p.migration(&name, "SELECT 1;", Some("SELECT 1;"));
    }
    for entry in std::fs::read_dir(p.path().join("migrations")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.to_string_lossy().contains("_extra_") {
            std::fs::write(
                dir.join("metadata.toml"),
                "run_in_transaction = true\nspeed = 1\n",
            )
            .unwrap();
        }
    }
    let run = p.run(["migrate", "status"]);
    run.success()
        .stderr_has("and 11 more warnings not shown (31 in all)");
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .count(),
        21
    );
});

// A 50 MB CSV header: the error names the file, line and column and quotes a bounded piece.
both_backends!(a_huge_csv_header_gives_a_short_error, |p: Project| {
    p.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)");
    let name = "x".repeat(50 * 1024 * 1024);
    p.file("seeds/items.csv", format!("id,{name}\n1,a\n"));
    let run = p.run(["seed"]);
    run.code(1).stderr_has("items.csv").stderr_has("more bytes");
    assert!(
        run.stderr.len() < 5_000,
        "{} bytes of stderr",
        run.stderr.len()
    );
    let run = p.run(["seed", "--format", "json"]);
    run.code(1);
    assert!(
        run.stdout.len() < 5_000,
        "{} bytes of stdout",
        run.stdout.len()
    );
    run.json();
    // A 20 MB field PostgreSQL refuses and quotes back in its error: the line is cut too.
    if p.backend == crate::support::Backend::Postgres {
        p.execute("CREATE TABLE counts (id INTEGER PRIMARY KEY, n INTEGER)");
        std::fs::remove_file(p.path().join("seeds/items.csv")).unwrap();
        let value = "y".repeat(20 * 1024 * 1024);
        p.file("seeds/counts.csv", format!("id,n\n1,2\n2,{value}\n"));
        let run = p.run(["seed"]);
        run.code(1)
            .stderr_has("invalid input syntax for type integer")
            .stderr_has("more bytes cut");
        assert!(
            run.stderr.len() < 5_000,
            "{} bytes of stderr",
            run.stderr.len()
        );
    }
});

/// A 100 kB bad setting value (about the most one variable may hold) is quoted cut short too.
#[test]
fn a_huge_bad_setting_value_is_quoted_cut_short() {
    let p = Project::sqlite();
    let mut cmd = p.command();
    cmd.env("DB_POOL_SIZE", "9".repeat(100_000)).arg("ping");
    let run = Run::from(cmd.output().unwrap());
    run.code(2)
        .stderr_has("DB_POOL_SIZE")
        .stderr_has("more bytes");
    assert!(run.stderr.len() < 2_000, "{} bytes", run.stderr.len());
}

/// Runs `dbctl ARGS` on a pseudo-terminal of the given size (util-linux `script`), in the
/// project; `None` when `script` is not installed.
fn on_a_terminal(p: &Project, rows_cols: (u16, u16), args: &str) -> Option<String> {
    let bin = env!("CARGO_BIN_EXE_dbctl");
    let shell = format!(
        "stty rows {} cols {}; {bin} {args}",
        rows_cols.0, rows_cols.1
    );
    let out = Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .current_dir(p.path())
        .env("DATABASE_URL", p.url())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

// A terminal that reports 0x0 (some CI and docker ptys): tables are printed at their natural
// width instead of one character per column.
both_backends!(a_terminal_of_width_zero_gets_whole_tables, |p: Project| {
    p.copy_example("migrations");
    p.run(["init", "-q"]).success();
    let Some(text) = on_a_terminal(&p, (0, 0), "migrate status") else {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    };
    assert!(
        text.contains("20240101000000") && text.contains("create_users"),
        "{text}"
    );
    // A real narrow terminal still gets a fitted table.
    let narrow = on_a_terminal(&p, (24, 40), "migrate status").unwrap();
    assert!(!narrow.contains("20240101000000"), "{narrow}");
});

// `init`'s table and its JSON use the same words for what happened.
both_backends!(init_table_and_json_use_the_same_words, |p: Project| {
    p.run(["init", "-q"]).success();
    let table = p.run(["init"]);
    table.success();
    let json = p.run(["init", "--format", "json"]);
    json.success();
    let doc = json.json();
    for step in doc["steps"].as_array().unwrap() {
        let item = step["item"].as_str().unwrap();
        let status = step["status"].as_str().unwrap();
        let line = table
            .stdout
            .lines()
            .find(|l| l.contains(item))
            .unwrap_or_else(|| panic!("{item} missing from\n{}", table.stdout));
        assert!(line.contains(status), "{item}: {status} not in {line}");
    }
});

/// Shell completions and the man page are produced by `dbctl completions SHELL` and `dbctl man`.
#[test]
fn completions_and_man_page_are_produced() {
    let p = Project::sqlite();
    let bash = p.run(["completions", "bash"]);
    bash.success().stdout_has("dbctl");
    let script = p.file("dbctl.bash", &bash.stdout);
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for sub in ["migrate", "seed", "inspect", "ping", "revision", "init"] {
        assert!(bash.stdout.contains(sub), "bash completion lacks {sub}");
    }
    p.run(["completions", "zsh"])
        .success()
        .stdout_has("#compdef dbctl");
    let fish = p.run(["completions", "fish"]);
    fish.success().stdout_has("complete -c dbctl");
    if Command::new("fish").arg("--version").output().is_ok() {
        let file = p.file("dbctl.fish", &fish.stdout);
        let check = Command::new("fish").arg("-n").arg(&file).output().unwrap();
        assert!(check.status.success());
    }
    let man = p.run(["man"]);
    man.success().stdout_has(".TH dbctl").stdout_has("migrate");
    for sub in ["INIT", "PING", "MIGRATE UP", "REVISION", "SEED", "INSPECT"] {
        let heading = format!(".SH \"DBCTL {sub}\"");
        assert!(man.stdout.contains(&heading), "man page lacks {heading}");
    }
    // groff parses it without a warning, where groff is installed.
    let page = p.file("dbctl.1", &man.stdout);
    if let Ok(out) = Command::new("groff")
        .args(["-man", "-z", "-ww"])
        .arg(&page)
        .output()
    {
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("groff is not installed: the man page was not checked by it");
    }
    p.run(["completions", "tcsh"]).code(2);
}

// `inspect --schema nosuch` says which schemas the database has (exit 2).
both_backends!(
    inspect_of_a_missing_schema_lists_those_that_exist,
    |p: Project| {
        p.run(["init", "-q"]).success();
        let expected = if p.backend == crate::support::Backend::Postgres {
            p.execute("CREATE SCHEMA billing");
            "billing, public"
        } else {
            "main"
        };
        p.run(["inspect", "--schema", "nosuch"])
            .code(2)
            .stderr_has("`nosuch` does not exist")
            .stderr_has(&format!("its schemas: {expected}"));
        let json = p.run(["inspect", "--schema", "nosuch", "--format", "json"]);
        json.code(2);
        assert_eq!(json.json()["error"]["exit_code"], 2);
    }
);
