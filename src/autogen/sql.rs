//! Small pieces of SQL text shared by both DDL writers: identifiers quoted only when they must be
//! (as a person writes them), string literals, and a normal form of SQL text used to compare what
//! SQLite keeps as written (`CHECK` expressions, defaults, index and view statements).

/// Words that cannot stand unquoted as a name on one backend or the other (the reserved words
/// both share, plus SQLite's own that people hit in practice).
const RESERVED: &[&str] = &[
    "all",
    "alter",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "by",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "delete",
    "desc",
    "distinct",
    "do",
    "drop",
    "else",
    "end",
    "except",
    "exists",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "index",
    "initially",
    "insert",
    "intersect",
    "into",
    "is",
    "join",
    "key",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "null",
    "of",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "set",
    "some",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "transaction",
    "trigger",
    "true",
    "union",
    "unique",
    "update",
    "user",
    "using",
    "values",
    "variadic",
    "view",
    "when",
    "where",
    "window",
    "with",
];

/// An identifier as a person writes it: bare when it is lower-case letters, digits and `_`
/// (not first a digit) and no reserved word, else in double quotes.
pub(crate) fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&name);
    if plain {
        name.to_string()
    } else {
        crate::db::quote_ident(name)
    }
}

/// A comma-separated list of identifiers.
pub(crate) fn idents(names: &[String]) -> String {
    names
        .iter()
        .map(|n| ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A string literal.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// SQL text in a normal form for comparison: comments dropped, runs of white space made one space
/// (none next to punctuation), identifier quotes removed and everything outside string literals in
/// lower case. Two texts with equal normal forms say the same thing.
pub(crate) fn normal(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut space = false;
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                space = true;
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                space = true;
            }
            '\'' => {
                push_space(&mut out, &mut space, '\'');
                out.push('\'');
                while let Some(n) = chars.next() {
                    out.push(n);
                    if n == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                            out.push('\'');
                        } else {
                            break;
                        }
                    }
                }
            }
            '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                push_space(&mut out, &mut space, 'a');
                while let Some(n) = chars.next() {
                    if n == close {
                        if close != ']' && chars.peek() == Some(&close) {
                            chars.next();
                            out.push(n);
                            continue;
                        }
                        break;
                    }
                    out.extend(n.to_lowercase());
                }
            }
            c if c.is_whitespace() => space = true,
            c => {
                push_space(&mut out, &mut space, c);
                out.extend(c.to_lowercase());
            }
        }
    }
    out.trim_end_matches([';', ' ']).to_string()
}

/// Writes the pending space unless either side is punctuation.
fn push_space(out: &mut String, space: &mut bool, next: char) {
    if *space {
        let word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'';
        if out.chars().last().is_some_and(word) && word(next) {
            out.push(' ');
        }
        *space = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(ident("users"), "users");
        assert_eq!(ident("user"), "\"user\"");
        assert_eq!(ident("Users"), "\"Users\"");
        assert_eq!(ident("2fa"), "\"2fa\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn normal_form_ignores_layout_quotes_and_case() {
        assert_eq!(
            normal("CREATE INDEX \"ix\" ON [t] ( a ,\n  b ) -- note\n WHERE x > 'A b';"),
            normal("create index ix on t(a, b) where x>'A b'")
        );
        assert_ne!(normal("x = 'A'"), normal("x = 'a'"));
    }
}
