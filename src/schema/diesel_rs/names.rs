//! Rust names for SQL names, as diesel_cli 2.3 spells them: unmappable characters become one
//! `_`, a leading digit gets a `_` in front, keywords and a few names the `table!` macro keeps
//! for itself get a `_` after, and SQL type names become UpperCamelCase.

/// Words that are not identifiers in Rust 2021 (what `syn` 2 refuses as an `Ident`).
const KEYWORDS: &[&str] = &[
    "_", "abstract", "as", "async", "await", "become", "box", "break", "const", "continue",
    "crate", "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "Self", "self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Names the `table!` macro uses itself.
const TAKEN_BY_TABLE_MACRO: &[&str] = &["table", "columns", "is_nullable"];

/// Whether `name` cannot be used as it is: not an identifier, a keyword, a name `table!` uses,
/// or a double-underscore name (those are left to the macro) that does not end in `_`.
pub(crate) fn is_reserved(name: &str) -> bool {
    !is_identifier(name)
        || KEYWORDS.contains(&name)
        || TAKEN_BY_TABLE_MACRO.contains(&name)
        || (name.starts_with("__") && !name.ends_with('_'))
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn mappable(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Replaces each run of characters Rust does not allow in a name by one `_`; a name starting
/// with a digit gets a `_` in front.
fn replace_unmappable(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    let mut last_underscore = false;
    let mut chars = name.chars().peekable();
    if chars.peek().is_some_and(|c| c.is_ascii_digit()) {
        out.push('_');
        last_underscore = true;
    } else {
        // Copied as they are until the first character that needs replacing.
        while let Some(&c) = chars.peek() {
            if !mappable(c) {
                break;
            }
            out.push(c);
            chars.next();
        }
    }
    for c in chars {
        if mappable(c) {
            out.push(c);
            last_underscore = false;
        } else if !last_underscore {
            out.push('_');
            last_underscore = true;
        }
    }
    out
}

/// The Rust name for a table, schema or column. A column named like its table gets a `_` too
/// (`table_rust_name`).
pub(crate) fn rust_name(sql_name: &str, table_rust_name: Option<&str>) -> String {
    let name = replace_unmappable(sql_name);
    if is_reserved(&name) || Some(name.as_str()) == table_rust_name {
        format!("{name}_")
    } else {
        name
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    None,
    Lower,
    Upper,
}

/// UpperCamelCase of a SQL type name: split on anything not alphanumeric and where the case
/// changes (`fooBar`, `HTTPServer`), then each word capitalised and the rest lowercased.
pub(crate) fn upper_camel(name: &str) -> String {
    let mut out = String::new();
    let mut push_word = |word: &str| {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            let rest: String = chars.collect();
            let count = rest.chars().count();
            for (i, c) in rest.chars().enumerate() {
                if c == 'Σ' && i + 1 == count {
                    out.push('ς');
                } else {
                    out.extend(c.to_lowercase());
                }
            }
        }
    };
    for part in name.split(|c: char| !c.is_alphanumeric()) {
        let chars: Vec<(usize, char)> = part.char_indices().collect();
        let mut start = 0;
        let mut case = Case::None;
        for (n, &(i, c)) in chars.iter().enumerate() {
            let Some(&(next_i, next)) = chars.get(n + 1) else {
                push_word(&part[start..]);
                break;
            };
            let case_with_c = if c.is_lowercase() {
                Case::Lower
            } else if c.is_uppercase() {
                Case::Upper
            } else {
                case
            };
            if case_with_c == Case::Lower && next.is_uppercase() {
                push_word(&part[start..next_i]);
                start = next_i;
                case = Case::None;
            } else if case == Case::Upper && c.is_uppercase() && next.is_lowercase() {
                push_word(&part[start..i]);
                start = i;
                case = Case::None;
            } else {
                case = case_with_c;
            }
        }
    }
    out
}

/// A Rust string literal for `text`: raw (`r#"…"#`, one `#` more than the text holds) when it
/// holds a double quote.
pub(crate) fn string_literal(text: &str) -> String {
    if text.contains('"') {
        let hashes = "#".repeat(text.matches('#').count() + 1);
        format!("r{hashes}\"{text}\"{hashes}")
    } else {
        format!("\"{text}\"")
    }
}

/// Whether `literal` (a string literal [`string_literal`] made) is one Rust accepts: rustfmt
/// refuses a file with an escape Rust does not know (`\s`), a `\x` above 7F, a bad `\u{…}`,
/// or a carriage return without a line feed after it.
pub(crate) fn lexes(literal: &str) -> bool {
    let raw = literal.starts_with('r');
    let chars: Vec<char> = literal.chars().collect();
    let lone_cr = chars
        .iter()
        .enumerate()
        .any(|(i, &c)| c == '\r' && chars.get(i + 1) != Some(&'\n'));
    if lone_cr {
        return false;
    }
    if raw {
        return true;
    }
    // The text between the quotes.
    let inner = &chars[1..chars.len().saturating_sub(1).max(1)];
    let mut i = 0;
    while i < inner.len() {
        if inner[i] != '\\' {
            i += 1;
            continue;
        }
        let Some(&next) = inner.get(i + 1) else {
            return false;
        };
        i += 2;
        match next {
            'n' | 'r' | 't' | '\\' | '0' | '\'' | '"' | '\n' => {}
            '\r' if inner.get(i) == Some(&'\n') => i += 1,
            'x' => {
                let hex: String = inner.iter().skip(i).take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(v) if hex.len() == 2 && v <= 0x7F => i += 2,
                    _ => return false,
                }
            }
            'u' => {
                if inner.get(i) != Some(&'{') {
                    return false;
                }
                let Some(close) = inner[i..].iter().position(|&c| c == '}') else {
                    return false;
                };
                let digits: String = inner[i + 1..i + close].iter().collect();
                let hex = digits.replace('_', "");
                let valid = !digits.starts_with('_')
                    && (1..=6).contains(&hex.len())
                    && u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .is_some();
                if !valid {
                    return false;
                }
                i += close + 1;
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_names() {
        assert_eq!(rust_name("users", None), "users");
        assert_eq!(rust_name("type", None), "type_");
        assert_eq!(rust_name("self", None), "self_");
        assert_eq!(rust_name("Mixed Case", None), "Mixed_Case");
        assert_eq!(rust_name("a  -b", None), "a_b");
        assert_eq!(rust_name("1st", None), "_1st");
        assert_eq!(rust_name("__x", None), "__x_");
        assert_eq!(rust_name("x_", None), "x_");
        assert_eq!(rust_name("columns", None), "columns_");
        assert_eq!(rust_name("users", Some("users")), "users_");
        assert_eq!(rust_name("Quote\"d", None), "Quote_d");
        assert_eq!(rust_name("é", None), "__");
    }

    #[test]
    fn camel() {
        assert_eq!(upper_camel("pg_lsn"), "PgLsn");
        assert_eq!(upper_camel("int4range"), "Int4range");
        assert_eq!(upper_camel("Weird\"Type"), "WeirdType");
        assert_eq!(upper_camel("HTTPServer"), "HttpServer");
        assert_eq!(upper_camel("fooBar"), "FooBar");
        assert_eq!(upper_camel("mood"), "Mood");
    }

    #[test]
    fn literals_rust_accepts() {
        for ok in [
            "a",
            "a\\nb",
            "\\x7f",
            "\\u{1F600}",
            "\\u{1_0}",
            "a\nb",
            "a\r\nb",
            "\\\\",
        ] {
            assert!(lexes(&string_literal(ok)), "{ok:?}");
        }
        for bad in [
            "back\\slash",
            "\\x80",
            "\\u{D800}",
            "\\u{}",
            "\\u{_1}",
            "a\rb",
            "end\\",
        ] {
            assert!(!lexes(&string_literal(bad)), "{bad:?}");
        }
        assert!(lexes(&string_literal("q\"\\s")));
        assert!(!lexes(&string_literal("q\"\r")));
    }

    #[test]
    fn literals() {
        assert_eq!(string_literal("type"), "\"type\"");
        assert_eq!(string_literal("a\"b#"), "r##\"a\"b#\"##");
    }
}
