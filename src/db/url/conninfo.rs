//! libpq's `key=value` connection strings (`host=db user=app password='a b' dbname=app`), read with
//! libpq's own quoting rules. Errors name an item by its position, never by its text: an unquoted
//! password holding a space would otherwise be echoed as "the next keyword".

use super::libpq;

/// Whether `raw` is shaped like a conninfo string (`keyword=` first), rather than a URL or a path.
pub(crate) fn looks_like(raw: &str) -> bool {
    let s = raw.trim_start();
    let word = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    word > 0 && s.as_bytes()[0].is_ascii_alphabetic() && s[word..].trim_start().starts_with('=')
}

/// The pairs of a conninfo string, values unquoted and unescaped. Every `password` value is
/// handed to `on_password` as soon as it is read, before anything can fail.
pub(crate) fn parse(
    raw: &str,
    on_password: &mut dyn FnMut(&str),
) -> Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut chars = raw.chars().peekable();
    let mut item = 0;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        item += 1;
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "item {item} of the connection string has no `=value` (quote a value that holds spaces: password='a b')"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(next) = chars.next() {
                            value.push(next);
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    _ => value.push(c),
                }
            }
            if key == "password" {
                on_password(&value);
            }
            if !closed {
                return Err(format!(
                    "item {item} of the connection string has an unclosed quote"
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
            if key == "password" {
                on_password(&value);
            }
        }
        pairs.push((key, value));
    }
    // Checked after reading everything, so that every password has been seen first. `pgbouncer`
    // is dbctl's own (taken out before libpq sees the string).
    for (i, (key, value)) in pairs.iter().enumerate() {
        let item = i + 1;
        if key.is_empty() || !(libpq::is_keyword(key) || key == "pgbouncer") {
            return Err(format!(
                "item {item} of the connection string is not a libpq connection keyword (host, port, user, password, dbname, sslmode, ...)"
            ));
        }
        if value.contains('\0') {
            return Err(format!("`{key}` holds a NUL byte"));
        }
    }
    if pairs.is_empty() {
        return Err("the connection string is empty".to_string());
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        parse(raw, &mut |_| {}).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn reads_libpq_quoting() {
        assert!(looks_like("host=h user=u"));
        assert!(looks_like("  dbname = x"));
        assert!(!looks_like("postgres://u@h/db"));
        assert!(!looks_like("./a=b.db"));
        assert_eq!(
            pairs("host=h  password = 'a b\\'c' dbname=x\\ y"),
            vec![
                ("host".to_string(), "h".to_string()),
                ("password".to_string(), "a b'c".to_string()),
                ("dbname".to_string(), "x y".to_string()),
            ]
        );
    }

    #[test]
    fn errors_never_quote_the_string() {
        for raw in [
            "host=h password=my secret",
            "host=h password='unclosed secret",
            "host=h nosuch=secret",
            "host=h password=a secret=b",
        ] {
            let mut seen = Vec::new();
            let err = parse(raw, &mut |p| seen.push(p.to_string())).expect_err(raw);
            assert!(!err.contains("secret"), "{raw}: {err}");
        }
    }
}
