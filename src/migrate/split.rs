//! Splitting a migration file into statements, each with the line it starts on.
//!
//! dbctl runs a migration statement by statement (inside one transaction unless the migration
//! opts out), so that a failure can name the statement and its line, and so that a
//! non-transactional migration can say which statements already ran. The splitter only needs to
//! know where a `;` really ends a statement: the shared lexer (`crate::sql`) hides the `;` of
//! quoted strings and identifiers, PostgreSQL's `E'...'` and dollar-quoted bodies, and comments;
//! this module adds the `BEGIN ... END` bodies of SQLite's `CREATE TRIGGER` and PostgreSQL's
//! `BEGIN ATOMIC`. It never rewrites the SQL.

pub(crate) use crate::sql::Dialect;
use crate::sql::{self, Kind};

impl Dialect {
    /// The dialect of the backend `conn` talks to.
    pub(crate) fn of(conn: &crate::db::AnyConnection) -> Dialect {
        crate::db::backend::dialect(crate::db::backend::of(conn))
    }
}

/// One statement of a file: its text (without the closing `;`) and its first line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement<'a> {
    pub(crate) sql: &'a str,
    pub(crate) line: usize,
    /// Its first words, upper-cased, comments and quoted text skipped (at most 4).
    pub(crate) first_words: Vec<String>,
}

impl Statement<'_> {
    /// The first line of the statement, shortened, for error messages.
    pub(crate) fn summary(&self) -> String {
        let first = self.sql.lines().next().unwrap_or_default().trim();
        let mut out: String = first.chars().take(60).collect();
        if first.chars().count() > 60 || self.sql.trim().lines().nth(1).is_some() {
            out.push_str(" ...");
        }
        out
    }
}

/// Splits `sql` into statements. Pieces holding only white space and comments are dropped.
pub(crate) fn split(sql: &str, dialect: Dialect) -> Vec<Statement<'_>> {
    split_checked(sql, dialect).0
}

/// Whether text appended after `sql` (on a new line, after a `;`) would be read as statements of
/// its own: false when the file ends inside a quoted string or identifier, a block comment, a
/// dollar-quoted body, or a trigger or `BEGIN ATOMIC` body. Such a file is broken, and the server
/// says so; it is only never sent with anything after it.
pub(crate) fn is_closed(sql: &str, dialect: Dialect) -> bool {
    split_checked(sql, dialect).1
}

/// Where `byte` (an offset into `sql`) is: its 1-based line and column (in characters).
pub(crate) fn line_and_column(sql: &str, byte: usize) -> (usize, usize) {
    let byte = floor_char_boundary(sql, byte.min(sql.len()));
    let before = &sql[..byte];
    let line = 1 + before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, 1 + before[line_start..].chars().count())
}

/// The text of line `line` (1-based) of `sql`, without its line break.
pub(crate) fn line_text(sql: &str, line: usize) -> &str {
    sql.split('\n')
        .nth(line.saturating_sub(1))
        .unwrap_or_default()
        .trim_end_matches('\r')
}

/// The byte offset of the character with 0-based index `chars` in `sql` (PostgreSQL reports
/// error positions in characters), or `None` past the end.
pub(crate) fn char_to_byte(sql: &str, chars: usize) -> Option<usize> {
    if chars == sql.chars().count() {
        return Some(sql.len());
    }
    sql.char_indices().nth(chars).map(|(i, _)| i)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The index of the statement holding byte offset `byte` of the text they were split from
/// (`base` is the text's start): the last one starting at or before it.
pub(crate) fn statement_at(statements: &[Statement<'_>], base: &str, byte: usize) -> Option<usize> {
    let origin = base.as_ptr() as usize;
    statements
        .iter()
        .rposition(|s| (s.sql.as_ptr() as usize).saturating_sub(origin) <= byte)
}

fn split_checked(sql: &str, dialect: Dialect) -> (Vec<Statement<'_>>, bool) {
    let mut lexer = sql::Lexer::new(sql, dialect);
    let mut out = Vec::new();
    let mut stmt = StmtState::default();
    for token in lexer.by_ref() {
        match token.kind {
            Kind::Space | Kind::Comment => {}
            Kind::Semicolon if stmt.depth == 0 => {
                if let Some((start, line)) = stmt.start.take() {
                    out.push(Statement {
                        sql: &sql[start..token.start],
                        line,
                        first_words: std::mem::take(&mut stmt.first_words),
                    });
                }
                stmt = StmtState::default();
            }
            kind => {
                if stmt.start.is_none() {
                    stmt.start = Some((token.start, token.line));
                }
                if kind == Kind::Word {
                    stmt.word(token.text(sql), dialect);
                }
            }
        }
    }
    let closed = !lexer.unterminated() && stmt.depth == 0;
    if let Some((start, line)) = stmt.start {
        let rest = sql[start..].trim_end();
        if !rest.is_empty() {
            out.push(Statement {
                sql: rest,
                line,
                first_words: stmt.first_words,
            });
        }
    }
    (out, closed)
}

/// Refuses (exit 2, before anything runs) a file that runs inside a transaction dbctl opened and
/// holds a statement that would end that transaction or cannot run in one: names the file, the
/// line and the statement, and `way_out`.
pub(crate) fn refuse_transaction_control(
    path: &std::path::Path,
    sql: &str,
    dialect: Dialect,
    way_out: &str,
) -> anyhow::Result<()> {
    let found: Vec<String> = split(sql, dialect)
        .iter()
        .filter_map(|stmt| {
            transaction_control(stmt, dialect)
                .map(|why| format!("line {}: `{}` {why}", stmt.line, stmt.summary()))
        })
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(crate::error::usage(format!(
        "{}: {} ({}); the file runs inside a transaction dbctl opens, which such a statement \
         would end or break: {way_out}",
        path.display(),
        found.first().map(String::as_str).unwrap_or_default(),
        if found.len() == 1 {
            "the only such statement".to_string()
        } else {
            format!("and {} more", found.len() - 1)
        }
    )))
}

/// [`refuse_transaction_control`] for a seed `.sql` file, read inside the seed's transaction
/// before any of its statements runs.
pub(crate) fn refuse_in_seed(
    path: &std::path::Path,
    sql: &str,
    conn: &crate::db::AnyConnection,
) -> anyhow::Result<()> {
    refuse_transaction_control(
        path,
        sql,
        Dialect::of(conn),
        "remove it: a seed loads every file in one transaction, all or nothing",
    )
}

/// Why `stmt` cannot run inside a transaction dbctl opened, if it cannot: it starts, ends or
/// nests a transaction itself (`BEGIN`, `COMMIT`, `END`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`,
/// `START TRANSACTION`, `ABORT`, `PREPARE TRANSACTION`, `COMMIT AND CHAIN`, ...), or it refuses to
/// run inside one (`VACUUM`). Decided from the statement's first words, so `BEGIN` inside a
/// trigger body, a `BEGIN ATOMIC` body, a `DO` block or a function body never counts. PostgreSQL
/// refuses `COMMIT` in a procedure called inside a transaction block, so `CALL` is left to the
/// run-time check.
pub(crate) fn transaction_control(stmt: &Statement<'_>, dialect: Dialect) -> Option<&'static str> {
    let first = stmt.first_words.first()?.as_str();
    let second = stmt.first_words.get(1).map(String::as_str);
    let pg = dialect == Dialect::Postgres;
    match first {
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => {
            Some("controls the transaction itself")
        }
        "START" if pg && second == Some("TRANSACTION") => Some("controls the transaction itself"),
        "ABORT" if pg => Some("controls the transaction itself"),
        "PREPARE" if pg && second == Some("TRANSACTION") => Some("controls the transaction itself"),
        "VACUUM" => Some(OUTSIDE),
        // SQLite refuses to switch to or from WAL inside a transaction, and silently ignores
        // any other journal mode change there.
        "PRAGMA"
            if !pg
                && stmt.first_words.iter().any(|w| w == "JOURNAL_MODE")
                && stmt.sql.contains(['=', '(']) =>
        {
            Some("cannot take effect inside a transaction")
        }
        _ if pg && refused_in_a_block(&stmt.first_words) => Some(OUTSIDE),
        _ => None,
    }
}

const OUTSIDE: &str = "cannot run inside a transaction";

/// PostgreSQL statements that refuse to run inside a transaction block.
fn refused_in_a_block(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let concurrently = w.contains(&"CONCURRENTLY");
    match w.as_slice() {
        ["CREATE" | "DROP", "DATABASE" | "TABLESPACE", ..] => true,
        ["CREATE" | "DROP", "INDEX", ..] | ["CREATE", "UNIQUE", "INDEX", ..] => concurrently,
        ["REINDEX", ..] => {
            concurrently || w.get(1).is_some_and(|k| *k == "SYSTEM" || *k == "DATABASE")
        }
        ["ALTER", "SYSTEM", ..] | ["DISCARD", "ALL", ..] => true,
        _ => false,
    }
}

/// What the lexer knows about the statement it is in.
#[derive(Default)]
struct StmtState {
    /// Byte offset and line of the statement's first token.
    start: Option<(usize, usize)>,
    /// How many words the statement has had, and a few of the first ones, upper-cased.
    words: usize,
    first_words: Vec<String>,
    previous: String,
    /// Nesting of BEGIN/CASE ... END inside a trigger or BEGIN ATOMIC body; `;` ends the statement
    /// only at depth 0.
    depth: usize,
    /// Inside a SQLite trigger's `UPDATE OF` column list.
    in_column_list: bool,
}

impl StmtState {
    fn word(&mut self, word: &str, dialect: Dialect) {
        let upper = word.to_ascii_uppercase();
        self.words += 1;
        if self.first_words.len() < 4 {
            self.first_words.push(upper.clone());
        }
        let is_trigger = self.first_words.first().is_some_and(|w| w == "CREATE")
            && self.first_words.iter().any(|w| w == "TRIGGER");
        if is_trigger && self.depth == 0 {
            // `UPDATE OF col, ... ON`: SQLite lets a column be named `begin`.
            match upper.as_str() {
                "OF" => self.in_column_list = true,
                "ON" => self.in_column_list = false,
                _ => {}
            }
        }
        match upper.as_str() {
            // The body's BEGIN; inside the body (no nested blocks in SQLite triggers) or in the
            // column list, `begin` is a name.
            "BEGIN"
                if dialect == Dialect::Sqlite
                    && is_trigger
                    && self.depth == 0
                    && !self.in_column_list =>
            {
                self.depth += 1
            }
            // Only a routine has a `BEGIN ATOMIC` body (`SELECT begin atomic FROM t` is a
            // column and its alias).
            "ATOMIC"
                if dialect == Dialect::Postgres
                    && self.previous == "BEGIN"
                    && self.first_words.first().is_some_and(|w| w == "CREATE")
                    && self
                        .first_words
                        .iter()
                        .any(|w| w == "FUNCTION" || w == "PROCEDURE") =>
            {
                self.depth += 1
            }
            "CASE" if self.depth > 0 => self.depth += 1,
            "END" if self.depth > 0 => self.depth -= 1,
            _ => {}
        }
        self.previous = upper;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str, d: Dialect) -> Vec<(String, usize)> {
        split(sql, d)
            .into_iter()
            .map(|s| (s.sql.to_string(), s.line))
            .collect()
    }

    #[test]
    fn plain_statements_with_lines() {
        let got = texts(
            "CREATE TABLE a (x INT);\n\n-- note; not a statement\nINSERT INTO a VALUES (1);\n",
            Dialect::Sqlite,
        );
        assert_eq!(
            got,
            vec![
                ("CREATE TABLE a (x INT)".to_string(), 1),
                ("INSERT INTO a VALUES (1)".to_string(), 4)
            ]
        );
    }

    #[test]
    fn quotes_and_comments_hide_semicolons() {
        let sql = "INSERT INTO t VALUES ('a;''b', \"c;d\");/* x; /* y; */ z; */ SELECT 1;";
        let got = texts(sql, Dialect::Postgres);
        assert_eq!(got.len(), 2, "{got:?}");
        // SQLite does not nest comments: `z; */ SELECT 1` is text after the comment.
        let got = texts("SELECT 1; /* a /* b */ SELECT 2;", Dialect::Sqlite);
        assert_eq!(got[1].0, "SELECT 2");
        let got = texts("SELECT `a;b`, [c;d] FROM t; SELECT 2", Dialect::Sqlite);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], ("SELECT 2".to_string(), 1));
    }

    #[test]
    fn postgres_dollar_and_escape_strings() {
        let sql = "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $x$ $body$ LANGUAGE sql;\n\
                   SELECT E'it\\'s; fine', $$a;b$$, $1;\nSELECT a$b FROM t;";
        let got = texts(sql, Dialect::Postgres);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[1].1, 2);
        assert_eq!(got[2].0, "SELECT a$b FROM t");
    }

    #[test]
    fn trigger_and_atomic_bodies() {
        let sql = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  UPDATE t SET x = CASE WHEN 1 THEN 2 ELSE 3 END;\n  DELETE FROM u;\nEND;\nSELECT 1;";
        let got = texts(sql, Dialect::Sqlite);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].0.ends_with("END"));
        assert_eq!(got[1].1, 5);
        let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END;\nBEGIN;";
        let got = texts(sql, Dialect::Postgres);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1].0, "BEGIN");
    }

    fn control(sql: &str, d: Dialect) -> Vec<(usize, &'static str)> {
        split(sql, d)
            .iter()
            .filter_map(|s| transaction_control(s, d).map(|why| (s.line, why)))
            .collect()
    }

    #[test]
    fn transaction_control_statements_are_found() {
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            for sql in [
                "COMMIT",
                "commit;",
                "  Begin Transaction",
                "BEGIN IMMEDIATE",
                "END",
                "end transaction;",
                "ROLLBACK",
                "rollback to savepoint a",
                "SAVEPOINT a",
                "RELEASE a",
                "release savepoint a",
                "/* hidden */ COMMIT",
                "-- a comment\nCOMMIT",
                "COMMIT /* in between */ ; SELECT 1",
                "VACUUM",
            ] {
                assert_eq!(control(sql, d).len(), 1, "{sql:?} in {d:?}");
            }
        }
        for sql in [
            "COMMIT AND CHAIN",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "ABORT",
            "PREPARE TRANSACTION 'x'",
            "COMMIT PREPARED 'x'",
            "BEGIN WORK",
        ] {
            assert_eq!(control(sql, Dialect::Postgres).len(), 1, "{sql:?}");
        }
        for sql in [
            "CREATE INDEX CONCURRENTLY i ON t (x)",
            "create unique index concurrently i on t (x)",
            "DROP INDEX CONCURRENTLY i",
            "REINDEX TABLE CONCURRENTLY t",
            "CREATE DATABASE x",
            "ALTER SYSTEM SET work_mem = '1MB'",
        ] {
            assert_eq!(control(sql, Dialect::Postgres), [(1, OUTSIDE)], "{sql:?}");
        }
        for sql in [
            "CREATE INDEX i ON t (x)",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY v",
            "ALTER DATABASE x SET work_mem = '1MB'",
        ] {
            assert!(control(sql, Dialect::Postgres).is_empty(), "{sql:?}");
        }
        for sql in [
            "PRAGMA journal_mode = WAL",
            "pragma main.journal_mode(truncate)",
        ] {
            assert_eq!(control(sql, Dialect::Sqlite).len(), 1, "{sql:?}");
        }
        for sql in [
            "PRAGMA journal_mode",
            "PRAGMA foreign_keys = OFF",
            "PRAGMA defer_foreign_keys = ON",
        ] {
            assert!(control(sql, Dialect::Sqlite).is_empty(), "{sql:?}");
        }
        let got = control(
            "CREATE TABLE a (id INT);\n\nCOMMIT;\nBEGIN;\n",
            Dialect::Sqlite,
        );
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn begin_that_is_not_transaction_control() {
        let sqlite = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  UPDATE t SET x = 1;\nEND;\n\
                      CREATE TEMP TRIGGER IF NOT EXISTS t2 BEFORE DELETE ON t BEGIN SELECT RAISE(ROLLBACK, 'no'); END;\n\
                      INSERT OR ROLLBACK INTO t VALUES (1);\n\
                      SELECT 'COMMIT; BEGIN;', \"end\" FROM t;\n\
                      PREPARE;";
        assert!(control(sqlite, Dialect::Sqlite).is_empty());
        let pg = "DO $$ BEGIN COMMIT; END $$;\n\
                  CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n\
                  CREATE PROCEDURE p() LANGUAGE plpgsql AS $b$ BEGIN COMMIT; ROLLBACK; END $b$;\n\
                  CALL p();\n\
                  PREPARE q AS SELECT 1;\n\
                  SELECT E'\\'; COMMIT;';\n\
                  START_x;";
        assert!(
            control(pg, Dialect::Postgres).is_empty(),
            "{:?}",
            control(pg, Dialect::Postgres)
        );
    }

    #[test]
    fn begin_atomic_outside_a_routine_is_a_column_and_its_alias() {
        let sql = "SELECT begin atomic FROM t;\nCOMMIT;\nCREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;";
        let got = texts(sql, Dialect::Postgres);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            control(sql, Dialect::Postgres),
            [(2, "controls the transaction itself")]
        );
    }

    #[test]
    fn a_column_named_begin_does_not_open_a_trigger_body() {
        // SQLite lets `begin` name a column; only the body's BEGIN opens the body.
        let sql = "CREATE TRIGGER tr AFTER UPDATE OF begin, x ON t BEGIN UPDATE t SET begin = 1; END;\nCOMMIT;";
        let got = texts(sql, Dialect::Sqlite);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1], ("COMMIT".to_string(), 2));
        assert_eq!(
            control(sql, Dialect::Sqlite),
            [(2, "controls the transaction itself")]
        );
    }

    #[test]
    fn trailing_statement_and_comment_only_files() {
        assert_eq!(
            texts("SELECT 1;\nSELECT 2\n", Dialect::Sqlite)[1],
            ("SELECT 2".to_string(), 2)
        );
        assert!(texts("-- nothing\n/* here */\n;;", Dialect::Postgres).is_empty());
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: the splitter never panics, its statements are slices of the input in
    //! order, each on the line it says, and what lies between them is only `;`, white space and
    //! comments (so nothing of the file is dropped).

    use super::*;
    use proptest::prelude::*;

    fn sqlish() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("SELECT 1".to_string()),
                Just(";".to_string()),
                Just("'".to_string()),
                Just("\"".to_string()),
                Just("--".to_string()),
                Just("/*".to_string()),
                Just("*/".to_string()),
                Just("$$".to_string()),
                Just("$tag$".to_string()),
                Just("E'\\''".to_string()),
                Just("BEGIN".to_string()),
                Just("END".to_string()),
                Just("CREATE TRIGGER t AFTER INSERT ON x BEGIN".to_string()),
                Just("BEGIN ATOMIC".to_string()),
                Just("CASE".to_string()),
                Just("\n".to_string()),
                Just(" ".to_string()),
                "\\PC{0,4}",
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
    }

    fn check(sql: &str, dialect: Dialect) -> Result<(), TestCaseError> {
        let statements = split(sql, dialect);
        let base = sql.as_ptr() as usize;
        let mut at = 0;
        for s in &statements {
            let start = s.sql.as_ptr() as usize - base;
            prop_assert!(start >= at, "statements overlap or go backwards");
            let gap = &sql[at..start];
            prop_assert!(
                split(&gap.replace(';', " "), dialect).is_empty(),
                "text between statements was dropped: {gap:?}"
            );
            prop_assert_eq!(s.line, 1 + sql[..start].matches('\n').count());
            prop_assert!(!s.sql.trim().is_empty());
            at = start + s.sql.len();
        }
        let tail = &sql[at..];
        prop_assert!(
            split(&tail.replace(';', " "), dialect).is_empty(),
            "the end of the file was dropped: {tail:?}"
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn statements_cover_the_input(sql in sqlish(), pg in any::<bool>()) {
            check(&sql, if pg { Dialect::Postgres } else { Dialect::Sqlite })?;
        }

        #[test]
        fn never_panics_on_any_text(sql in "\\PC{0,120}") {
            let _ = split(&sql, Dialect::Postgres);
            let _ = split(&sql, Dialect::Sqlite);
        }
    }
}
