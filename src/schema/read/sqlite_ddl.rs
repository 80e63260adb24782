//! What SQLite keeps only in the text of its `CREATE` statements: constraint names, CHECK
//! expressions, whether a foreign key is `DEFERRABLE [INITIALLY DEFERRED]`, and the key
//! expressions and `WHERE` clause of an index. No pragma reports them,
//! so they are read from `sqlite_master.sql` with the shared SQL lexer (`crate::sql`, SQLite's
//! quoting and comments), and never evaluated.

use crate::sql::{self, Dialect, Kind as Tok, Token};

fn tokenize(sql: &str) -> Vec<Token> {
    sql::significant(sql, Dialect::Sqlite)
}

/// The index of the `)` matching the `(` at `open`.
fn matching_close(toks: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t.kind {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits `toks` at top-level commas.
fn split_top(toks: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        match t.kind {
            Tok::Open => depth += 1,
            Tok::Close => depth = depth.saturating_sub(1),
            Tok::Comma if depth == 0 => {
                parts.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    parts
}

/// The source text covered by a run of tokens.
fn text_of<'a>(sql: &'a str, toks: &[Token]) -> &'a str {
    match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => sql[a.start..b.end].trim(),
        _ => "",
    }
}

/// The column names of a parenthesised list starting at `open` (COLLATE / ASC / DESC dropped),
/// and the index after its `)`.
fn column_list(sql: &str, toks: &[Token], open: usize) -> Option<(Vec<String>, usize)> {
    let close = matching_close(toks, open)?;
    let cols = split_top(&toks[open + 1..close])
        .into_iter()
        .filter_map(|part| part.first().and_then(|t| t.unquoted(sql)))
        .collect();
    Some((cols, close + 1))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    PrimaryKey,
    Unique,
    Check,
    ForeignKey,
    /// `[GENERATED ALWAYS] AS (expr)` on a column: not a constraint, but only the DDL has it.
    Generated,
}

/// A constraint as written in `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Constraint {
    pub(super) name: Option<String>,
    pub(super) kind: Kind,
    /// Local columns (for a column constraint: that column).
    pub(super) columns: Vec<String>,
    /// The CHECK expression, without `CHECK ( )`.
    pub(super) expression: Option<String>,
    /// The table a foreign key refers to.
    pub(super) referred_table: Option<String>,
    /// A foreign key's `DEFERRABLE` (not `NOT DEFERRABLE`).
    pub(super) deferrable: bool,
    /// A deferrable foreign key's `INITIALLY DEFERRED` (SQLite ignores it without `DEFERRABLE`).
    pub(super) initially_deferred: bool,
    /// Set once matched to what the pragmas report, so that two alike constraints get one each.
    pub(super) used: bool,
}

/// Every named or unnamed PRIMARY KEY, UNIQUE, CHECK and FOREIGN KEY of a `CREATE TABLE`, from
/// both column definitions and table constraints. Unparsable text gives an empty list.
pub(super) fn table_constraints(sql: &str) -> Vec<Constraint> {
    let toks = tokenize(sql);
    let Some(open) = toks.iter().position(|t| t.kind == Tok::Open) else {
        return Vec::new();
    };
    let Some(close) = matching_close(&toks, open) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for element in split_top(&toks[open + 1..close]) {
        let Some(first) = element.first() else {
            continue;
        };
        let table_level = ["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"]
            .iter()
            .any(|kw| first.is_keyword(sql, kw));
        if table_level {
            constraints_in(sql, element, None, &mut out);
        } else if let Some(column) = first.unquoted(sql) {
            constraints_in(sql, &element[1..], Some(&column), &mut out);
        }
    }
    out
}

/// Reads the constraints in a run of tokens: a table constraint (`column` is None) or the tail
/// of a column definition.
fn constraints_in(sql: &str, toks: &[Token], column: Option<&str>, out: &mut Vec<Constraint>) {
    let mut name: Option<String> = None;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        if t.kind == Tok::Open {
            // A type's arguments or a default's expression: skip it whole.
            i = matching_close(toks, i).map_or(toks.len(), |c| c + 1);
            continue;
        }
        if t.is_keyword(sql, "CONSTRAINT") {
            name = toks.get(i + 1).and_then(|t| t.unquoted(sql));
            i += 2;
            continue;
        }
        let Some(kind) = kind_at(sql, toks, i, column.is_some()) else {
            i += 1;
            continue;
        };
        let mut c = Constraint {
            name: name.take(),
            kind,
            columns: column.map(|c| vec![c.to_string()]).unwrap_or_default(),
            expression: None,
            referred_table: None,
            deferrable: false,
            initially_deferred: false,
            used: false,
        };
        i = read_constraint(sql, toks, i + 1, column.is_some(), &mut c);
        out.push(c);
    }
}

/// The kind of constraint the keyword at `i` starts, if it starts one.
fn kind_at(sql: &str, toks: &[Token], i: usize, in_column: bool) -> Option<Kind> {
    let t = &toks[i];
    let kw = |k: &str| t.is_keyword(sql, k);
    Some(
        if kw("AS") && in_column && toks.get(i + 1).is_some_and(|t| t.kind == Tok::Open) {
            Kind::Generated
        } else if kw("PRIMARY") {
            Kind::PrimaryKey
        } else if kw("UNIQUE") {
            Kind::Unique
        } else if kw("CHECK") {
            Kind::Check
        } else if kw("FOREIGN") || (kw("REFERENCES") && in_column) {
            Kind::ForeignKey
        } else {
            return None;
        },
    )
}

/// Reads what follows a constraint's keyword (from `i`) into `c`: its expression, its columns,
/// the table it refers to. Returns where reading stopped.
fn read_constraint(
    sql: &str,
    toks: &[Token],
    mut i: usize,
    in_column: bool,
    c: &mut Constraint,
) -> usize {
    let at = |i: usize, kind: Tok| toks.get(i).is_some_and(|t| t.kind == kind);
    let at_keyword = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is_keyword(sql, kw));
    if matches!(c.kind, Kind::PrimaryKey | Kind::ForeignKey) && at_keyword(i, "KEY") {
        i += 1;
    }
    if matches!(c.kind, Kind::Check | Kind::Generated) {
        if let Some(end) = at(i, Tok::Open).then(|| matching_close(toks, i)).flatten() {
            c.expression = Some(text_of(sql, &toks[i + 1..end]).to_string());
            i = end + 1;
        }
        return i;
    }
    if !in_column && at(i, Tok::Open) {
        if let Some((cols, next)) = column_list(sql, toks, i) {
            c.columns = cols;
            i = next;
        }
    }
    if c.kind == Kind::ForeignKey {
        if !in_column && at_keyword(i, "REFERENCES") {
            i += 1;
        }
        c.referred_table = toks.get(i).and_then(|t| t.unquoted(sql));
        i += 1;
        i = foreign_key_tail(sql, toks, i, in_column, c);
    }
    i
}

/// Reads the clauses after a foreign key's referred table (its columns, `ON DELETE`, `MATCH`,
/// `[NOT] DEFERRABLE [INITIALLY DEFERRED|IMMEDIATE]`) up to the next constraint; returns where
/// it stopped.
fn foreign_key_tail(
    sql: &str,
    toks: &[Token],
    mut i: usize,
    in_column: bool,
    c: &mut Constraint,
) -> usize {
    let at_keyword = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is_keyword(sql, kw));
    let mut deferred = false;
    while i < toks.len() {
        if toks[i].kind == Tok::Open {
            i = matching_close(toks, i).map_or(toks.len(), |c| c + 1);
            continue;
        }
        if at_keyword(i, "CONSTRAINT") || kind_at(sql, toks, i, in_column).is_some() {
            break;
        }
        if at_keyword(i, "NOT") && at_keyword(i + 1, "DEFERRABLE") {
            c.deferrable = false;
            i += 2;
            continue;
        }
        if at_keyword(i, "DEFERRABLE") {
            c.deferrable = true;
        } else if at_keyword(i, "INITIALLY") {
            deferred = at_keyword(i + 1, "DEFERRED");
        }
        i += 1;
    }
    c.initially_deferred = c.deferrable && deferred;
    i
}

/// The key texts and `WHERE` predicate of a `CREATE INDEX` statement.
pub(super) fn index_parts(sql: &str) -> Option<(Vec<String>, Option<String>)> {
    let toks = tokenize(sql);
    let open = toks.iter().position(|t| t.kind == Tok::Open)?;
    let close = matching_close(&toks, open)?;
    let keys = split_top(&toks[open + 1..close])
        .into_iter()
        .map(|part| text_of(sql, part).to_string())
        .collect();
    let rest = &toks[close + 1..];
    let predicate = match rest.first() {
        Some(t) if t.is_keyword(sql, "WHERE") => Some(text_of(sql, &rest[1..]).to_string()),
        _ => None,
    };
    Some((keys, predicate))
}

/// Strips the `COLLATE x` and `ASC`/`DESC` that may follow an index key.
pub(super) fn key_expression(key: &str) -> String {
    let toks = tokenize(key);
    let mut end = toks.len();
    if end > 0 && (toks[end - 1].is_keyword(key, "ASC") || toks[end - 1].is_keyword(key, "DESC")) {
        end -= 1;
    }
    if end >= 2 && toks[end - 2].is_keyword(key, "COLLATE") {
        end -= 2;
    }
    text_of(key, &toks[..end]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_unnamed_constraints() {
        let sql = r#"CREATE TABLE "Order Items" (
            id INTEGER CONSTRAINT pk_x PRIMARY KEY,
            "Qty" INT NOT NULL CHECK ("Qty" > 0) DEFAULT (1),
            note VARCHAR(20) CONSTRAINT ck_note CHECK (length(note) < 10) UNIQUE,
            order_id INTEGER REFERENCES orders (id) ON DELETE CASCADE,
            twice INT GENERATED ALWAYS AS ("Qty" * 2) STORED,
            -- a comment, with a comma
            CONSTRAINT "fk a" FOREIGN KEY ("Qty", note) REFERENCES [other t] (a, b),
            UNIQUE (note, "Qty"),
            CONSTRAINT ck_sum CHECK (id + "Qty" > 'a,b')
        )"#;
        let got = table_constraints(sql);
        let summary: Vec<_> = got
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.kind.clone(),
                    c.columns.clone(),
                    c.expression.clone(),
                    c.referred_table.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    Some("pk_x".into()),
                    Kind::PrimaryKey,
                    vec!["id".into()],
                    None,
                    None
                ),
                (
                    None,
                    Kind::Check,
                    vec!["Qty".into()],
                    Some("\"Qty\" > 0".into()),
                    None
                ),
                (
                    Some("ck_note".into()),
                    Kind::Check,
                    vec!["note".into()],
                    Some("length(note) < 10".into()),
                    None
                ),
                (None, Kind::Unique, vec!["note".into()], None, None),
                (
                    None,
                    Kind::ForeignKey,
                    vec!["order_id".into()],
                    None,
                    Some("orders".into())
                ),
                (
                    None,
                    Kind::Generated,
                    vec!["twice".into()],
                    Some("\"Qty\" * 2".into()),
                    None
                ),
                (
                    Some("fk a".into()),
                    Kind::ForeignKey,
                    vec!["Qty".into(), "note".into()],
                    None,
                    Some("other t".into())
                ),
                (
                    None,
                    Kind::Unique,
                    vec!["note".into(), "Qty".into()],
                    None,
                    None
                ),
                (
                    Some("ck_sum".into()),
                    Kind::Check,
                    vec![],
                    Some("id + \"Qty\" > 'a,b'".into()),
                    None
                ),
            ]
        );
    }

    #[test]
    fn malformed_text_gives_what_it_can_without_panicking() {
        for sql in [
            "",
            "CREATE TABLE t (a CHECK (",
            "CREATE TABLE t (a CHECK",
            "((((",
            ")))",
            "CREATE TABLE \"t (",
            "CREATE TABLE t (x INT, CONSTRAINT",
            "CREATE TABLE é (ü INT CHECK (ü > 'ß'))",
        ] {
            let _ = table_constraints(sql);
            let _ = index_parts(sql);
            let _ = key_expression(sql);
        }
        let c = table_constraints("CREATE TABLE é (ü INT CHECK (ü > 'ß'))");
        assert_eq!(c[0].expression.as_deref(), Some("ü > 'ß'"));
    }

    #[test]
    fn deferrable_foreign_keys() {
        let sql = "CREATE TABLE t (
            a INTEGER REFERENCES p (id) ON DELETE SET DEFAULT DEFERRABLE INITIALLY DEFERRED NOT NULL,
            b INTEGER REFERENCES p DEFERRABLE CHECK (b > 0),
            c INTEGER REFERENCES p NOT DEFERRABLE INITIALLY DEFERRED,
            d INTEGER,
            CONSTRAINT fk_d FOREIGN KEY (d) REFERENCES p (id) MATCH SIMPLE DEFERRABLE INITIALLY IMMEDIATE,
            FOREIGN KEY (a, d) REFERENCES q (x, y) DEFERRABLE INITIALLY DEFERRED
        )";
        let fks: Vec<_> = table_constraints(sql)
            .into_iter()
            .filter(|c| c.kind == Kind::ForeignKey)
            .map(|c| (c.columns.join(","), c.deferrable, c.initially_deferred))
            .collect();
        assert_eq!(
            fks,
            vec![
                ("a".to_string(), true, true),
                ("b".to_string(), true, false),
                ("c".to_string(), false, false),
                ("d".to_string(), true, false),
                ("a,d".to_string(), true, true),
            ]
        );
        let checks = table_constraints(sql)
            .into_iter()
            .filter(|c| c.kind == Kind::Check)
            .count();
        assert_eq!(checks, 1, "the CHECK after a foreign key is still read");
    }

    #[test]
    fn index_keys_and_predicate() {
        let (keys, pred) =
            index_parts(r#"CREATE INDEX "ix (odd" ON "t (x)" (lower("a b") COLLATE NOCASE DESC, b) WHERE b > 0"#)
                .unwrap();
        assert_eq!(keys, vec!["lower(\"a b\") COLLATE NOCASE DESC", "b"]);
        assert_eq!(key_expression(&keys[0]), "lower(\"a b\")");
        assert_eq!(pred.as_deref(), Some("b > 0"));
    }
}
