//! `dbctl seed`'s CSV reading compared with the reference loaders: each file is loaded with dbctl
//! and with `psql \copy ... (FORMAT csv, HEADER true)` (and `sqlite3 .import --csv` where it
//! stores values at all the same way) into separate databases, and the stored rows compared.
//! Also: special files (FIFO, `/dev/zero`, folders) refused before anything starts, and the
//! 64 MiB row limit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::both_backends;
use crate::support::{Backend, Project, Run};

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// The `v` column of `table` in insertion order.
fn rows(p: &Project, table: &str) -> Vec<Option<String>> {
    let order = match p.backend {
        Backend::Sqlite => "rowid",
        Backend::Postgres => "ctid",
    };
    p.strings(&format!("SELECT v AS v FROM {table} ORDER BY {order}"))
}

/// Seeds each bad file into `table` from a folder of its own: each fails (exit 1) with
/// `<prefix><message>` and leaves the table empty.
fn each_is_refused(p: &Project, table: &str, prefix: &str, cases: &[(&[u8], &str)]) {
    for (i, (csv, message)) in cases.iter().enumerate() {
        let dir = format!("case{i}");
        p.file(&format!("{dir}/{table}.csv"), csv);
        p.run(["seed", "--seeds-dir", &dir])
            .code(1)
            .stderr_has(&format!("{prefix}{message}"))
            .stderr_has("rolled back");
        assert_eq!(rows(p, table), Vec::<Option<String>>::new());
    }
}

/// Loads `csv` into `table` (created by `schema`) of a fresh PostgreSQL database with
/// `psql \copy table FROM file WITH (FORMAT csv, HEADER true<options>)`: the stored `v` values,
/// or psql's error. `None` when the PostgreSQL tests are skipped.
fn psql_copy(
    schema: &str,
    table: &str,
    csv: &[u8],
    options: &str,
) -> Option<Result<Vec<Option<String>>, String>> {
    let reference = Project::postgres()?;
    reference.execute(schema);
    let file = reference.file("reference.csv", csv);
    let out = Command::new("psql")
        .args([reference.url(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "\\copy {table} FROM '{}' WITH (FORMAT csv, HEADER true{options})",
            file.display()
        ))
        .output()
        .expect("run psql (the reference loader)");
    if !out.status.success() {
        return Some(Err(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Some(Ok(rows(&reference, table)))
}

/// Loads `csv` with `sqlite3 .import --csv --skip 1` into `table` of a fresh SQLite file.
fn sqlite3_import(schema: &str, table: &str, csv: &[u8]) -> Vec<Option<String>> {
    let reference = Project::sqlite();
    reference.execute(schema);
    let file = reference.file("reference.csv", csv);
    let db = reference.path().join("test.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(".import --csv --skip 1 {} {table}", file.display()))
        .output()
        .expect("run sqlite3 (the reference loader)");
    assert!(out.status.success(), "{out:?}");
    rows(&reference, table)
}

/// Runs `dbctl ARGS`, failing the test (and killing dbctl) if it runs for more than 30 s: the
/// faults below used to hang forever.
fn run_bounded(p: &Project, args: &[&str]) -> Run {
    let mut child = p
        .command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dbctl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait for dbctl").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dbctl {args:?} still running after 30 s: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().expect("dbctl output"))
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

both_backends!(
    a_blank_line_in_a_one_column_file_is_a_null_row,
    |p: Project| {
        let schema = "CREATE TABLE one (v TEXT); CREATE TABLE two (id INTEGER, v TEXT);";
        p.execute(schema);
        // Blank lines in the middle and at the end, with LF and with CRLF line ends.
        let csv: &[u8] = b"v\na\n\nb\n\n\"\"\n\n";
        let crlf: &[u8] = b"v\r\na\r\n\r\nb\r\n\r\n\"\"\r\n\r\n";
        p.file("seeds/one.csv", csv);
        p.run(["seed", "-q"]).success();
        let ours = rows(&p, "one");
        assert_eq!(ours, [s("a"), None, s("b"), None, s(""), None]);
        p.file("crlf/one.csv", crlf);
        p.run(["seed", "-q", "--seeds-dir", "crlf", "--truncate"])
            .success();
        assert_eq!(rows(&p, "one"), ours);
        for file in [csv, crlf] {
            if let Some(reference) = psql_copy(schema, "one", file, "") {
                assert_eq!(Ok(ours.clone()), reference, "psql \\copy stores other rows");
            }
        }
        // sqlite3 .import reads the same rows, but it has no NULL: every empty field is ''.
        let imported = sqlite3_import(schema, "one", csv);
        assert_eq!(imported.len(), ours.len());
        assert_eq!(imported[1], s(""));

        // In wider files a blank line is skipped (psql refuses the file, sqlite3 stores a row of
        // '' and NULL): nothing is stored that the file does not hold.
        let wide: &[u8] = b"id,v\n1,a\n\n2,b\n";
        p.file("wide/two.csv", wide);
        p.run(["seed", "-q", "--seeds-dir", "wide"]).success();
        assert_eq!(rows(&p, "two"), [s("a"), s("b")]);
        if let Some(reference) = psql_copy(schema, "two", wide, "") {
            assert!(reference.unwrap_err().contains("missing data for column"));
        }
    }
);

both_backends!(
    quotes_psql_and_sqlite3_read_differently_are_refused_with_row_and_column,
    |p: Project| {
        let schema = "CREATE TABLE people (id INTEGER, v TEXT);";
        p.execute(schema);
        let cases: [(&[u8], &str); 6] = [
            (
                b"id,v\n1,ok\n2, \"ab\"\n",
                "row 2 (line 3), column 2: a `\"` inside a field",
            ),
            (
                b"id,v\n1, \"Smith, John\"\n",
                "row 1 (line 2), column 2: a `\"` inside a field",
            ),
            (
                b"id,v\n1,12\" pizza\n2,x\n",
                "row 1 (line 2), column 2: a `\"` inside a field",
            ),
            (
                b"id,v\n1,\"ab\" \n",
                "row 1 (line 2), column 2: text after the closing quote",
            ),
            (
                b"id,v\n\"1\"2,ab\n",
                "row 1 (line 2), column 1: text after the closing quote",
            ),
            // A lone carriage return used to split the row in two valid rows; psql refuses it.
            (
                b"id,v\n1,a\r2,b\n",
                "line 2: a carriage return (\\r) outside quotes",
            ),
        ];
        each_is_refused(&p, "people", "people.csv ", &cases);
        // Why refuse: the reference loaders disagree. psql drops the quotes and keeps the space,
        // sqlite3 keeps both.
        if let Some(reference) = psql_copy(schema, "people", cases[0].0, "") {
            assert_eq!(reference, Ok(vec![s("ok"), s(" ab")]));
        }
        if let Some(reference) = psql_copy(schema, "people", cases[5].0, "") {
            assert!(reference.unwrap_err().contains("carriage return"));
        }
        assert_eq!(
            sqlite3_import(schema, "people", cases[0].0),
            [s("ok"), s(" \"ab\"")]
        );

        // What RFC 4180 allows loads exactly as psql stores it.
        let good: &[u8] =
        b"id,v\n1,\"Smith, John\"\n2,\"say \"\"hi\"\"\"\n3,\" padded \"\n4,\"\"\n5,\n6,a b\n7,\"two\nlines\"\n";
        p.file("good/people.csv", good);
        p.run(["seed", "-q", "--seeds-dir", "good"]).success();
        let ours = rows(&p, "people");
        assert_eq!(ours[0], s("Smith, John"));
        assert_eq!(ours[4], None);
        if let Some(reference) = psql_copy(schema, "people", good, "") {
            assert_eq!(Ok(ours), reference);
        }
    }
);

both_backends!(a_nul_byte_is_refused_with_row_and_column, |p: Project| {
    let schema = "CREATE TABLE t (id INTEGER, v TEXT);";
    p.execute(schema);
    let cases: [(&[u8], &str); 3] = [
        (
            b"id,v\n1,ok\n2,a\0b\n",
            "t.csv row 2 (line 3), column 2: a NUL byte",
        ),
        (
            b"id,v\n1,\"a\0b\"\n",
            "t.csv row 1 (line 2), column 2: a NUL byte",
        ),
        (b"id,v\0\n1,a\n", "t.csv: line 1, column 2: a NUL byte"),
    ];
    each_is_refused(&p, "t", "", &cases);
    // The references store a different value silently: psql \copy cuts the line at the NUL.
    if let Some(reference) = psql_copy(schema, "t", cases[0].0, "") {
        assert_eq!(reference, Ok(vec![s("ok"), s("a")]));
    }
});

both_backends!(
    delimiters_and_encodings_store_what_psql_stores,
    |p: Project| {
        let schema =
            "CREATE TABLE semi (id INTEGER, v TEXT); CREATE TABLE tabbed (id INTEGER, v TEXT); \
                  CREATE TABLE latin (id INTEGER, v TEXT); CREATE TABLE win (id INTEGER, v TEXT);";
        p.execute(schema);
        let semi: &[u8] = b"id;v\n1;\"a;b\"\n2;x,y\n3;\n4;\"\"\n5;back\\slash\n";
        let tabbed: &[u8] = b"id\tv\n1\ta b\n2\t\"q\tq\"\n3\t\n4\tx,y;z\n";
        p.file("seeds/semi.csv", semi);
        p.file("seeds/tabbed.tsv", tabbed);
        p.run(["seed", "-q", "--delimiter", ";"]).success();
        let expected_semi = [s("a;b"), s("x,y"), None, s(""), s("back\\slash")];
        assert_eq!(rows(&p, "semi"), expected_semi);
        assert_eq!(rows(&p, "tabbed"), [s("a b"), s("q\tq"), None, s("x,y;z")]);
        // Every byte of the upper half, as Latin-1 and as Windows-1252 (without the five bytes
        // Windows-1252 leaves undefined).
        let upper = |skip: &[u8]| -> Vec<u8> {
            let mut csv = b"id,v\n".to_vec();
            for b in 0x80u8..=0xFF {
                if !skip.contains(&b) {
                    csv.extend_from_slice(format!("{b},x").as_bytes());
                    csv.extend_from_slice(&[b, b'y', b'\n']);
                }
            }
            csv
        };
        let latin = upper(&[]);
        let win = upper(&[0x81, 0x8D, 0x8F, 0x90, 0x9D]);
        p.file("l1/latin.csv", &latin);
        p.file("w/win.csv", &win);
        p.run([
            "seed",
            "-q",
            "--seeds-dir",
            "l1",
            "--encoding",
            "ISO-8859-1",
        ])
        .success();
        p.run([
            "seed",
            "-q",
            "--seeds-dir",
            "w",
            "--encoding",
            "windows-1252",
        ])
        .success();
        assert_eq!(rows(&p, "latin")[0x69], s("xéy"));
        assert_eq!(rows(&p, "win")[0], s("x€y"));
        for (table, csv, options) in [
            ("semi", semi, ", DELIMITER ';'"),
            ("tabbed", tabbed, ", DELIMITER E'\\t'"),
            ("latin", &latin[..], ", ENCODING 'LATIN1'"),
            ("win", &win[..], ", ENCODING 'WIN1252'"),
        ] {
            if let Some(reference) = psql_copy(schema, table, csv, options) {
                assert_eq!(Ok(rows(&p, table)), reference, "{table}");
            }
        }

        // A byte Windows-1252 does not define: refused with its row and column, nothing stored
        // (psql refuses the file too).
        let bad: &[u8] = b"id,v\n1,ok\n2,x\x81\n";
        p.file("bad/win.csv", bad);
        p.run([
            "seed",
            "--seeds-dir",
            "bad",
            "--encoding",
            "win1252",
            "--truncate",
        ])
        .code(1)
        .stderr_has(
            "win.csv row 2 (line 3), column 2: holds a byte that is not a character in WIN1252",
        );
        assert_eq!(
            rows(&p, "win").len(),
            win.iter().filter(|&&b| b == b'\n').count() - 1
        );
        if let Some(reference) = psql_copy(schema, "win", bad, ", ENCODING 'WIN1252'") {
            assert!(reference.is_err());
        }
        // A Latin-1 file read as UTF-8 is refused, not stored as something else.
        p.run(["seed", "--seeds-dir", "l1", "--truncate"])
            .code(1)
            .stderr_has("latin.csv row 1 (line 2), column 2: not valid UTF-8");
        // Bad flags are usage errors.
        for bad in [
            ["--delimiter", "ab"],
            ["--delimiter", "\""],
            ["--encoding", "ebcdic"],
        ] {
            p.run(["seed", bad[0], bad[1]]).code(2).stderr_has(bad[1]);
        }
    }
);

both_backends!(
    special_files_are_refused_before_anything_starts,
    |p: Project| {
        p.execute("CREATE TABLE users (id INTEGER, v TEXT);");
        // A FIFO used to block the seed forever, holding SQLite's write lock.
        mkfifo(&p.path().join("fifo/users.csv"));
        run_bounded(&p, &["seed", "--seeds-dir", "fifo"])
            .code(2)
            .stderr_has("users.csv`: it is a FIFO, not a regular file");
        run_bounded(&p, &["seed", "fifo/users.csv"])
            .code(2)
            .stderr_has("it is a FIFO");
        // A .sql seed too.
        mkfifo(&p.path().join("fifosql/010_fix.sql"));
        run_bounded(&p, &["seed", "--seeds-dir", "fifosql"])
            .code(2)
            .stderr_has("010_fix.sql`: it is a FIFO");
        // A link to /dev/zero used to grow without bound.
        std::fs::create_dir_all(p.path().join("zero")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", p.path().join("zero/users.csv")).unwrap();
        run_bounded(&p, &["seed", "--seeds-dir", "zero"])
            .code(2)
            .stderr_has("it is a character device");
        // A folder with a seed file's name is not skipped silently.
        std::fs::create_dir_all(p.path().join("folder/users.csv")).unwrap();
        run_bounded(&p, &["seed", "--seeds-dir", "folder"])
            .code(2)
            .stderr_has("users.csv`: it is a folder");
        // Nothing was loaded, and the database is free for the next writer.
        assert_eq!(rows(&p, "users"), Vec::<Option<String>>::new());
        // A link to a regular file is a seed like any other.
        p.file("data/users.csv", "id,v\n1,linked\n");
        std::fs::create_dir_all(p.path().join("linked")).unwrap();
        std::os::unix::fs::symlink(
            p.path().join("data/users.csv"),
            p.path().join("linked/users.csv"),
        )
        .unwrap();
        run_bounded(&p, &["seed", "-q", "--seeds-dir", "linked"]).success();
        assert_eq!(rows(&p, "users"), [s("linked")]);
    }
);

both_backends!(
    special_migration_files_are_refused_before_anything_runs,
    |p: Project| {
        let mut p = p;
        p.execute("SELECT 1;");
        let version = p.migration(
            "first",
            "CREATE TABLE a (id INTEGER);",
            Some("DROP TABLE a;"),
        );
        let folder = std::fs::read_dir(p.path().join("migrations"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert!(folder.to_string_lossy().contains("first"), "{version}");
        // down.sql and metadata.toml as FIFOs used to be taken for missing files, and the
        // migration applied; up.sql linked to /dev/zero was read forever.
        let down = folder.join("down.sql");
        std::fs::remove_file(&down).unwrap();
        mkfifo(&down);
        run_bounded(&p, &["migrate", "up"])
            .code(2)
            .stderr_has("down.sql`: it is a FIFO, not a regular file");
        std::fs::remove_file(&down).unwrap();
        mkfifo(&folder.join("metadata.toml"));
        run_bounded(&p, &["migrate", "up"])
            .code(2)
            .stderr_has("metadata.toml`: it is a FIFO");
        std::fs::remove_file(folder.join("metadata.toml")).unwrap();
        let up = folder.join("up.sql");
        std::fs::rename(&up, p.path().join("real_up.sql")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &up).unwrap();
        run_bounded(&p, &["migrate", "up"])
            .code(2)
            .stderr_has("up.sql`: it is a character device");
        assert!(!p.has_table("a"));
        // Links to regular files are fine.
        std::fs::remove_file(&up).unwrap();
        std::os::unix::fs::symlink(p.path().join("real_up.sql"), &up).unwrap();
        run_bounded(&p, &["migrate", "up", "-q"]).success();
        assert!(p.has_table("a"));
    }
);

/// 64 MiB: the most one CSV row may hold (README, docs/seed.md).
const LIMIT: usize = 64 * 1024 * 1024;

both_backends!(
    a_row_over_64_mib_is_refused_and_one_at_the_limit_loads,
    |p: Project| {
        p.execute("CREATE TABLE big (id INTEGER, v TEXT);");
        // Row 2 holds "2" and a field of LIMIT bytes: one byte over.
        let mut over = b"id,v\n1,ok\n2,".to_vec();
        over.resize(over.len() + LIMIT, b'x');
        over.push(b'\n');
        p.file("over/big.csv", &over);
        drop(over);
        p.run(["seed", "--seeds-dir", "over"])
            .code(1)
            .stderr_has("big.csv row 2 (line 3), column 2: the row is larger than 64 MiB");
        assert_eq!(rows(&p, "big"), Vec::<Option<String>>::new());
        // A quoted field never closed in a large file stops at the limit too.
        let mut open = b"id,v\n1,\"".to_vec();
        while open.len() < LIMIT + 1024 {
            open.extend_from_slice(b"a line inside an open quote\n");
        }
        p.file("open/big.csv", &open);
        drop(open);
        p.run(["seed", "--seeds-dir", "open"])
            .code(1)
            .stderr_has("big.csv row 1 (line 2), column 2: the row is larger than 64 MiB");
        // Exactly at the limit: "1" and LIMIT - 1 bytes.
        let mut at = b"id,v\n1,".to_vec();
        at.resize(at.len() + LIMIT - 1, b'y');
        p.file("at/big.csv", &at);
        drop(at);
        p.run(["seed", "-q", "--seeds-dir", "at"]).success();
        let length = match p.backend {
            Backend::Sqlite => "SELECT length(v) AS n FROM big",
            Backend::Postgres => "SELECT length(v)::bigint AS n FROM big",
        };
        assert_eq!(p.count(length), (LIMIT - 1) as i64);
    }
);

both_backends!(
    file_names_match_tables_as_headers_match_columns,
    |p: Project| {
        let schema =
            "CREATE TABLE users (id INTEGER, v TEXT); CREATE TABLE lower_t (id INTEGER, v TEXT);";
        p.execute(schema);
        let users: &[u8] = b"id,v\n1,Ada\n2,\n";
        p.file("seeds/010_Users.csv", users);
        p.file("seeds/Lower_T.csv", "ID,V\n7,x\n");
        let run = p.run(["seed", "--verbose"]);
        run.success()
            .stderr_has("010_Users.csv loads \"users\" (the name matched ignoring case)");
        assert_eq!(rows(&p, "users"), [s("Ada"), None]);
        assert_eq!(rows(&p, "lower_t"), [s("x")]);
        if let Some(reference) = psql_copy(schema, "users", users, "") {
            assert_eq!(reference, Ok(rows(&p, "users")));
        }
        // --truncate empties the matched table once, and an exact name still wins.
        p.file("seeds/users.csv", "id,v\n3,Grace\n");
        p.run(["seed", "-q", "--truncate"]).success();
        assert_eq!(rows(&p, "users"), [s("Ada"), None, s("Grace")]);
        if p.backend == Backend::Postgres {
            // Two tables that differ only in case: the exact one is taken, and a name matching
            // both only ignoring case is refused before anything starts.
            p.execute("CREATE TABLE \"Users\" (id INTEGER, v TEXT);");
            p.file("exact/Users.csv", "id,v\n9,upper\n");
            p.run(["seed", "-q", "--seeds-dir", "exact"]).success();
            assert_eq!(p.strings("SELECT v AS v FROM \"Users\""), [s("upper")]);
            p.file("ambiguous/USERS.csv", "id,v\n10,x\n");
            p.run(["seed", "--seeds-dir", "ambiguous"])
                .code(2)
                .stderr_has(
                    "matches several tables that differ only in case (\"Users\", \"users\")",
                );

            // A schema in the file name: `app.users.csv` loads app.users (not the users on
            // the search path), parents first across schemas, --truncate included.
            let app = "CREATE SCHEMA app; \
                       CREATE TABLE app.users (id INTEGER PRIMARY KEY, v TEXT); \
                       CREATE TABLE app.posts (id INTEGER, user_id INTEGER REFERENCES app.users (id), v TEXT);";
            p.execute(app);
            let app_users: &[u8] = b"id,v\n1,in app\n2,\"\"\n";
            p.file("schema/app.users.csv", app_users);
            p.file("schema/App.Posts.csv", "id,user_id,v\n1,2,post\n");
            let run = p.run(["seed", "--verbose", "--truncate", "--seeds-dir", "schema"]);
            run.success()
                .stderr_has("load order: app.users.csv -> app.users, App.Posts.csv -> app.posts");
            assert_eq!(rows(&p, "app.users"), [s("in app"), s("")]);
            assert_eq!(rows(&p, "app.posts"), [s("post")]);
            assert_eq!(rows(&p, "users"), [s("Ada"), None, s("Grace")]);
            if let Some(reference) = psql_copy(app, "app.users", app_users, "") {
                assert_eq!(reference, Ok(rows(&p, "app.users")));
            }
            // A schema that does not exist leaves a missing table, named as the file names it.
            p.file("noschema/nope.users.csv", "id,v\n1,x\n");
            p.run(["seed", "--seeds-dir", "noschema"])
                .code(1)
                .stderr_has("table \"nope.users\" does not exist");
        }
    }
);
