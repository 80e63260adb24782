//! Splitting a migration file into statements, each with the line it starts on.
//!
//! dbctl runs a migration statement by statement (inside one transaction unless the migration
//! opts out), so that a failure can name the statement and its line, and so that a
//! non-transactional migration can say which statements already ran. The lexer only needs to know
//! where a `;` really ends a statement: it skips quoted strings and identifiers, PostgreSQL's
//! `E'...'` and dollar-quoted bodies, comments, and the `BEGIN ... END` bodies of SQLite's
//! `CREATE TRIGGER` and PostgreSQL's `BEGIN ATOMIC`. It never rewrites the SQL.

/// Which SQL dialect's quoting rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// One statement of a file: its text (without the closing `;`) and its first line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement<'a> {
    pub(crate) sql: &'a str,
    pub(crate) line: usize,
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
    let mut lexer = Lexer {
        src: sql.as_bytes(),
        pos: 0,
        line: 1,
        dialect,
    };
    let mut out = Vec::new();
    let mut stmt = StmtState::default();
    while lexer.pos < lexer.src.len() {
        let c = lexer.src[lexer.pos];
        match c {
            b'\n' => {
                lexer.line += 1;
                lexer.pos += 1;
            }
            c if c.is_ascii_whitespace() => lexer.pos += 1,
            b'-' if lexer.peek(1) == Some(b'-') => lexer.skip_line_comment(),
            b'/' if lexer.peek(1) == Some(b'*') => lexer.skip_block_comment(),
            b';' if stmt.depth == 0 => {
                if let Some((start, line)) = stmt.start.take() {
                    out.push(Statement {
                        sql: &sql[start..lexer.pos],
                        line,
                    });
                }
                stmt = StmtState::default();
                lexer.pos += 1;
            }
            _ => {
                if stmt.start.is_none() {
                    stmt.start = Some((lexer.pos, lexer.line));
                }
                lexer.token(&mut stmt);
            }
        }
    }
    if let Some((start, line)) = stmt.start {
        let rest = sql[start..].trim_end();
        if !rest.is_empty() {
            out.push(Statement { sql: rest, line });
        }
    }
    out
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
        match upper.as_str() {
            "BEGIN" if dialect == Dialect::Sqlite && is_trigger => self.depth += 1,
            "ATOMIC" if dialect == Dialect::Postgres && self.previous == "BEGIN" => self.depth += 1,
            "CASE" if self.depth > 0 => self.depth += 1,
            "END" if self.depth > 0 => self.depth -= 1,
            _ => {}
        }
        self.previous = upper;
    }
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
    dialect: Dialect,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.src.get(self.pos + ahead).copied()
    }

    /// Moves past one byte, counting lines.
    fn bump(&mut self) {
        if self.src.get(self.pos) == Some(&b'\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    fn skip_line_comment(&mut self) {
        while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
            self.pos += 1;
        }
    }

    /// `/* ... */`; PostgreSQL nests them, SQLite does not.
    fn skip_block_comment(&mut self) {
        self.pos += 2;
        let mut depth = 1;
        while self.pos < self.src.len() {
            if self.src[self.pos] == b'*' && self.peek(1) == Some(b'/') {
                self.pos += 2;
                depth -= 1;
                if depth == 0 {
                    return;
                }
            } else if self.dialect == Dialect::Postgres
                && self.src[self.pos] == b'/'
                && self.peek(1) == Some(b'*')
            {
                self.pos += 2;
                depth += 1;
            } else {
                self.bump();
            }
        }
    }

    /// Consumes one token that is not white space, a comment or a `;`.
    fn token(&mut self, stmt: &mut StmtState) {
        let c = self.src[self.pos];
        match c {
            b'\'' => self.quoted(b'\'', false),
            b'"' => self.quoted(b'"', false),
            b'`' if self.dialect == Dialect::Sqlite => self.quoted(b'`', false),
            b'[' if self.dialect == Dialect::Sqlite => self.quoted(b']', false),
            b'$' if self.dialect == Dialect::Postgres => self.dollar(),
            c if is_word_start(c) => {
                let start = self.pos;
                while self.pos < self.src.len() && is_word_char(self.src[self.pos]) {
                    self.pos += 1;
                }
                let word = &self.src[start..self.pos];
                // PostgreSQL's E'...' strings treat backslash as an escape.
                if self.dialect == Dialect::Postgres
                    && (word == b"E" || word == b"e")
                    && self.peek(0) == Some(b'\'')
                {
                    self.quoted(b'\'', true);
                    return;
                }
                stmt.word(&String::from_utf8_lossy(word), self.dialect);
            }
            _ => self.bump(),
        }
    }

    /// A quoted string or identifier; the closing quote doubled is an escaped quote.
    fn quoted(&mut self, close: u8, backslash: bool) {
        self.pos += 1;
        while self.pos < self.src.len() {
            let c = self.src[self.pos];
            if backslash && c == b'\\' {
                self.pos += 1;
                self.bump();
            } else if c == close {
                self.pos += 1;
                if close != b']' && self.peek(0) == Some(close) {
                    self.pos += 1;
                } else {
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    /// `$tag$ ... $tag$` (the tag may be empty); a `$` that starts no such quote (`$1`) is
    /// an ordinary character.
    fn dollar(&mut self) {
        let start = self.pos;
        let mut end = start + 1;
        while end < self.src.len() && is_word_char(self.src[end]) && self.src[end] != b'$' {
            end += 1;
        }
        let tag_ok = end < self.src.len()
            && self.src[end] == b'$'
            && self
                .src
                .get(start + 1)
                .is_some_and(|c| *c == b'$' || !c.is_ascii_digit());
        if !tag_ok {
            self.pos += 1;
            return;
        }
        let tag = &self.src[start..=end];
        self.pos = end + 1;
        while self.pos < self.src.len() {
            if self.src[self.pos..].starts_with(tag) {
                self.pos += tag.len();
                return;
            }
            self.bump();
        }
    }
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
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
