//! SQL text as tokens: the one lexer for the SQL dbctl reads without running it, the statements
//! of migration and seed files (split by `migrate::split`) and SQLite's stored `CREATE` text
//! (read by `schema::read::sqlite_ddl`).
//!
//! It knows what hides a `;`, a `(` or a keyword: quoted strings and identifiers (`'..'`,
//! `".."`, and SQLite's `` `..` `` and `[..]`, a doubled quote being a literal one), PostgreSQL's
//! `E'..'` (backslash escapes) and `$tag$ .. $tag$` bodies, and comments (`--`, and `/* .. */`,
//! which PostgreSQL nests and SQLite does not). Every token carries its byte range, so callers
//! take the source text as written; nothing is rewritten or evaluated.

/// Which SQL dialect's quoting rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// White space.
    Space,
    /// `-- ...` (without its line break) or `/* ... */`.
    Comment,
    /// A bare word: keyword or identifier.
    Word,
    /// A number (digits, and the word characters glued to them).
    Number,
    /// A quoted identifier, quotes included (see [`Token::unquoted`]).
    QuotedIdent,
    /// A string literal, quotes included: `'..'`, `E'..'` or a dollar-quoted body.
    Str,
    Open,
    Close,
    Comma,
    Semicolon,
    /// Any other character (an operator, a `$1` parameter's `$`, ...).
    Other,
}

/// A token: its kind, its byte range in the text, and the 1-based line it starts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) line: usize,
}

impl Token {
    /// The token's text in `src` (the text it was read from).
    pub(crate) fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start..self.end).unwrap_or_default()
    }

    /// Whether this is the bare word `keyword`, in any case.
    pub(crate) fn is_keyword(&self, src: &str, keyword: &str) -> bool {
        self.kind == Kind::Word && self.text(src).eq_ignore_ascii_case(keyword)
    }

    /// A name: a bare word as written, or a quoted identifier without its quotes (a doubled
    /// quote inside being one quote); `None` for anything else.
    pub(crate) fn unquoted(&self, src: &str) -> Option<String> {
        let text = self.text(src);
        match self.kind {
            Kind::Word => Some(text.to_string()),
            Kind::QuotedIdent => {
                let open = text.chars().next()?;
                let close = if open == '[' { ']' } else { open };
                let inner = &text[open.len_utf8()..];
                let inner = inner.strip_suffix(close).unwrap_or(inner);
                Some(if close == ']' {
                    inner.to_string()
                } else {
                    inner.replace(&format!("{close}{close}"), &close.to_string())
                })
            }
            _ => None,
        }
    }
}

/// The tokens of `sql`, white space and comments included; see [`Lexer::unterminated`] for text
/// that ends inside a quote or comment.
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
    dialect: Dialect,
    unterminated: bool,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(sql: &'a str, dialect: Dialect) -> Lexer<'a> {
        Lexer {
            src: sql.as_bytes(),
            pos: 0,
            line: 1,
            dialect,
            unterminated: false,
        }
    }

    /// Whether the text read so far ended inside a quote, a block comment or a dollar-quoted
    /// body (its last token then runs to the end).
    pub(crate) fn unterminated(&self) -> bool {
        self.unterminated
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.src.get(self.pos + ahead).copied()
    }

    /// Reads one token's worth of bytes from `pos` and says what it was.
    fn scan(&mut self) -> Kind {
        let c = self.src[self.pos];
        let sqlite = self.dialect == Dialect::Sqlite;
        match c {
            c if c.is_ascii_whitespace() => {
                self.skip_while(|c| c.is_ascii_whitespace());
                Kind::Space
            }
            b'-' if self.peek(1) == Some(b'-') => {
                self.skip_while(|c| c != b'\n');
                Kind::Comment
            }
            b'/' if self.peek(1) == Some(b'*') => self.block_comment(),
            b'\'' => self.quoted(b'\'', false, Kind::Str),
            b'"' => self.quoted(b'"', false, Kind::QuotedIdent),
            b'`' if sqlite => self.quoted(b'`', false, Kind::QuotedIdent),
            b'[' if sqlite => self.quoted(b']', false, Kind::QuotedIdent),
            b'$' if !sqlite => self.dollar(),
            c if is_word_start(c) => {
                let start = self.pos;
                self.skip_while(is_word_char);
                let word = &self.src[start..self.pos];
                // PostgreSQL's E'...' strings treat backslash as an escape.
                if !sqlite && (word == b"E" || word == b"e") && self.peek(0) == Some(b'\'') {
                    return self.quoted(b'\'', true, Kind::Str);
                }
                Kind::Word
            }
            c if c.is_ascii_digit() => {
                self.skip_while(is_word_char);
                Kind::Number
            }
            _ => {
                self.pos += 1;
                match c {
                    b'(' => Kind::Open,
                    b')' => Kind::Close,
                    b',' => Kind::Comma,
                    b';' => Kind::Semicolon,
                    _ => Kind::Other,
                }
            }
        }
    }

    fn skip_while(&mut self, keep: impl Fn(u8) -> bool) {
        while self.pos < self.src.len() && keep(self.src[self.pos]) {
            self.pos += 1;
        }
    }

    /// `/* ... */`; PostgreSQL nests them, SQLite does not.
    fn block_comment(&mut self) -> Kind {
        self.pos += 2;
        let mut depth = 1;
        while self.pos < self.src.len() {
            if self.src[self.pos] == b'*' && self.peek(1) == Some(b'/') {
                self.pos += 2;
                depth -= 1;
                if depth == 0 {
                    return Kind::Comment;
                }
            } else if self.dialect == Dialect::Postgres
                && self.src[self.pos] == b'/'
                && self.peek(1) == Some(b'*')
            {
                self.pos += 2;
                depth += 1;
            } else {
                self.pos += 1;
            }
        }
        self.unterminated = true;
        Kind::Comment
    }

    /// A quoted string or identifier from its opening quote at `pos` (for `E'..'`, the `'`);
    /// the closing quote doubled is an escaped quote (not in `[..]`).
    fn quoted(&mut self, close: u8, backslash: bool, kind: Kind) -> Kind {
        self.pos += 1;
        while self.pos < self.src.len() {
            let c = self.src[self.pos];
            if backslash && c == b'\\' {
                self.pos += 2;
            } else if c == close {
                self.pos += 1;
                if close != b']' && self.peek(0) == Some(close) {
                    self.pos += 1;
                } else {
                    return kind;
                }
            } else {
                self.pos += 1;
            }
        }
        self.pos = self.src.len();
        self.unterminated = true;
        kind
    }

    /// `$tag$ ... $tag$` (the tag may be empty); a `$` that starts no such quote (`$1`) is
    /// an ordinary character.
    fn dollar(&mut self) -> Kind {
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
            return Kind::Other;
        }
        let tag = &self.src[start..=end];
        self.pos = end + 1;
        while self.pos < self.src.len() {
            if self.src[self.pos..].starts_with(tag) {
                self.pos += tag.len();
                return Kind::Str;
            }
            self.pos += 1;
        }
        self.unterminated = true;
        Kind::Str
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        if self.pos >= self.src.len() {
            return None;
        }
        let (start, line) = (self.pos, self.line);
        let kind = self.scan();
        let end = self.pos;
        self.line += self.src[start..end].iter().filter(|c| **c == b'\n').count();
        Some(Token {
            kind,
            start,
            end,
            line,
        })
    }
}

/// The tokens of `sql` that mean something: white space and comments left out.
pub(crate) fn significant(sql: &str, dialect: Dialect) -> Vec<Token> {
    Lexer::new(sql, dialect)
        .filter(|t| !matches!(t.kind, Kind::Space | Kind::Comment))
        .collect()
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

    fn kinds(sql: &str, d: Dialect) -> Vec<(Kind, &str)> {
        Lexer::new(sql, d).map(|t| (t.kind, t.text(sql))).collect()
    }

    #[test]
    fn quoting_rules_per_dialect() {
        let sql = "a `b;c` [d;e] 'f''g' \"h\"\"i\"";
        let got: Vec<_> = kinds(sql, Dialect::Sqlite)
            .into_iter()
            .filter(|(k, _)| *k != Kind::Space)
            .collect();
        assert_eq!(
            got,
            [
                (Kind::Word, "a"),
                (Kind::QuotedIdent, "`b;c`"),
                (Kind::QuotedIdent, "[d;e]"),
                (Kind::Str, "'f''g'"),
                (Kind::QuotedIdent, "\"h\"\"i\""),
            ]
        );
        // PostgreSQL has no backtick or bracket quoting, but E'' and $$ strings.
        let got = kinds("`a;` E'x\\'y' $t$ ; $t$ $1", Dialect::Postgres);
        assert!(got.contains(&(Kind::Semicolon, ";")), "{got:?}");
        assert!(got.contains(&(Kind::Str, "E'x\\'y'")), "{got:?}");
        assert!(got.contains(&(Kind::Str, "$t$ ; $t$")), "{got:?}");
        assert!(got.contains(&(Kind::Other, "$")), "{got:?}");
    }

    #[test]
    fn comments_nest_only_on_postgres() {
        let sql = "/* a /* b */ c */ x";
        let pg = significant(sql, Dialect::Postgres);
        assert_eq!(pg.len(), 1);
        assert_eq!(pg[0].text(sql), "x");
        let sqlite = significant(sql, Dialect::Sqlite);
        assert_eq!(sqlite[0].text(sql), "c");
    }

    #[test]
    fn lines_names_and_unterminated_text() {
        let sql = "a\n-- b\n\"x\"\"y\" [p]q]\n'open";
        let mut lexer = Lexer::new(sql, Dialect::Sqlite);
        let toks: Vec<Token> = lexer.by_ref().filter(|t| t.kind != Kind::Space).collect();
        assert!(lexer.unterminated());
        let lines: Vec<usize> = toks.iter().map(|t| t.line).collect();
        assert_eq!(lines, [1, 2, 3, 3, 3, 3, 4]);
        assert_eq!(toks[2].unquoted(sql).as_deref(), Some("x\"y"));
        assert_eq!(toks[3].unquoted(sql).as_deref(), Some("p"));
        assert_eq!(toks[6].text(sql), "'open");
        let mut closed = Lexer::new("'a' /* b */ $x$ c $x$", Dialect::Postgres);
        assert_eq!(closed.by_ref().count(), 5);
        assert!(!closed.unterminated());
    }
}
