//! SQLite URL forms: one rule for SQLAlchemy's spellings and the Rust tools' (diesel, sqlx, dbmate).
//!
//! | written | read as |
//! |---|---|
//! | `sqlite://`, `sqlite:///:memory:`, `sqlite::memory:`, `:memory:` | in memory |
//! | `sqlite:////abs/x.db` | `/abs/x.db` (both readings agree) |
//! | `sqlite:///./x.db`, `sqlite:///../x.db` | relative (SQLAlchemy; `/./x.db` is never meant) |
//! | `sqlite:///x.db` (one name) | relative `x.db` (SQLAlchemy), unless only `/x.db` exists |
//! | `sqlite:///a/b.db` | the reading whose file exists; both or neither: ambiguous |
//! | `sqlite://rel/x.db`, `sqlite:rel.db`, `rel.db` | relative |
//!
//! An ambiguous URL whose neither file exists is kept with both readings: opening reports both
//! missing, and `init` refuses to create either. A relative path shaped like a server address
//! (`user@host/db`, `127.0.0.1:5432/db`, `//host/db`, `postgres//...`) is refused.

use std::path::{Path, PathBuf};

/// The two files `sqlite:///a/b.db` can name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Readings {
    /// SQLAlchemy's reading: relative to the current folder (made absolute).
    pub(crate) relative: PathBuf,
    /// diesel's, sqlx's and dbmate's reading.
    pub(crate) absolute: PathBuf,
    /// The path as written after `sqlite:///`.
    pub(crate) written: String,
}

impl Readings {
    /// How to write each reading so that no tool can read it otherwise.
    pub(crate) fn how_to_write(&self) -> String {
        format!(
            "write `sqlite:////{w}` (or the path `/{w}`) for {abs}, or `sqlite:///./{w}` (or `./{w}`) for {rel}",
            w = self.written,
            abs = self.absolute.display(),
            rel = self.relative.display()
        )
    }

    pub(crate) fn both(&self) -> String {
        format!(
            "`sqlite:///{}` reads as {} (SQLAlchemy: three slashes start a relative path) or as {} (diesel, sqlx, dbmate: an absolute path)",
            self.written,
            self.relative.display(),
            self.absolute.display()
        )
    }
}

/// A SQLite location read from a URL or a path.
#[derive(Debug)]
pub(crate) enum Form {
    Memory,
    File {
        /// Absolute.
        path: PathBuf,
        /// SQLite URI parameters (`mode=ro`, ...), without the `?`.
        query: Option<String>,
        /// Set when the URL could mean two files and neither exists yet.
        readings: Option<Readings>,
        /// What the rule decided, for `-v`.
        note: Option<String>,
    },
}

/// `sqlite:` URLs: `rest` is what follows the scheme's `:`.
pub(crate) fn from_url(rest: &str) -> Result<Form, String> {
    let (body, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q.to_string())),
        None => (rest, None),
    };
    if body == ":memory:" {
        return Ok(Form::Memory);
    }
    let Some(after) = body.strip_prefix("//") else {
        // sqlx style: `sqlite:path`.
        if body.is_empty() {
            return Err("the SQLite URL names no file".to_string());
        }
        check_path_shape(body)?;
        return file(Path::new(body), query, None, None);
    };
    if after.is_empty() || after == "/:memory:" || after == ":memory:" {
        // SQLAlchemy: `sqlite://` and `sqlite:///:memory:` are in memory.
        return Ok(Form::Memory);
    }
    if let Some(abs) = after.strip_prefix("//") {
        // Four slashes: absolute for every tool.
        return file(
            &Path::new("/").join(abs.trim_start_matches('/')),
            query,
            None,
            None,
        );
    }
    let Some(written) = after.strip_prefix('/') else {
        // Two slashes: `sqlite://rel/x.db`, relative (SQLAlchemy refuses this form).
        check_path_shape(after)?;
        return file(Path::new(after), query, None, None);
    };
    if written.is_empty() {
        return Err("the SQLite URL names no file".to_string());
    }
    if written == "." || written == ".." || written.starts_with("./") || written.starts_with("../")
    {
        let note = format!("read `sqlite:///{written}` as a relative path, as SQLAlchemy does");
        return file(Path::new(written), query, None, Some(note));
    }
    three_slashes(written, query)
}

/// `sqlite:///P`: SQLAlchemy reads `P`, the Rust tools `/P`.
fn three_slashes(written: &str, query: Option<String>) -> Result<Form, String> {
    let readings = Readings {
        relative: absolute(Path::new(written)),
        absolute: Path::new("/").join(written),
        written: written.to_string(),
    };
    let same =
        readings.relative == readings.absolute || same_file(&readings.relative, &readings.absolute);
    if same {
        return file(&readings.absolute, query, None, None);
    }
    let rel = readings.relative.exists();
    let abs = readings.absolute.exists();
    match (rel, abs) {
        (true, true) => Err(format!(
            "{}, and both files exist; {}",
            readings.both(),
            readings.how_to_write()
        )),
        (true, false) => {
            let note = format!(
                "{}; only {} exists, so that one is used",
                readings.both(),
                readings.relative.display()
            );
            file(&readings.relative.clone(), query, None, Some(note))
        }
        (false, true) => {
            let note = format!(
                "{}; only {} exists, so that one is used",
                readings.both(),
                readings.absolute.display()
            );
            file(&readings.absolute.clone(), query, None, Some(note))
        }
        (false, false) if !written.trim_end_matches('/').contains('/') => {
            // A database directly in `/` is never what a Rust tool's user means: SQLAlchemy's
            // reading (seed 004's `sqlite:///{name}.db`).
            let note = format!(
                "read `sqlite:///{written}` as the relative path {}, as SQLAlchemy does (a database directly in `/` is not a reading dbctl creates)",
                readings.relative.display()
            );
            file(&readings.relative.clone(), query, None, Some(note))
        }
        (false, false) => {
            let path = readings.relative.clone();
            file(&path, query, Some(readings), None)
        }
    }
}

/// A plain path (no scheme).
pub(crate) fn from_path(raw: &str) -> Result<Form, String> {
    if raw == ":memory:" {
        return Ok(Form::Memory);
    }
    check_path_shape(raw)?;
    file(Path::new(raw), None, None, None)
}

fn file(
    path: &Path,
    query: Option<String>,
    readings: Option<Readings>,
    note: Option<String>,
) -> Result<Form, String> {
    if path.to_string_lossy().ends_with('/') || path.file_name().is_none() {
        return Err(
            "the SQLite path ends with `/` or `..`: it names a folder, not a database file"
                .to_string(),
        );
    }
    Ok(Form::File {
        path: absolute(path),
        query,
        readings,
        note,
    })
}

/// `path` made absolute against the current folder, without touching the file system.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Refuses a relative path that is shaped like a server address rather than a file. The path is
/// never echoed: it may hold a password (`user:secret@host/db`).
fn check_path_shape(path: &str) -> Result<(), String> {
    let why = shape_problem(path);
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "the database URL is not taken as a SQLite file name: it {why}. For PostgreSQL write \
             postgresql://user@host:5432/db; for a file by that name write it as ./NAME or as an \
             absolute path"
        )),
    }
}

fn shape_problem(path: &str) -> Option<&'static str> {
    if path.starts_with("//") {
        return Some("starts with `//`, like a URL without its scheme (`//host/db`)");
    }
    let word = path
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(path.len());
    if word > 0 && path.as_bytes()[0].is_ascii_alphabetic() && path[word..].starts_with("//") {
        return Some("starts like a URL whose `:` after the scheme is missing (`postgres//...`)");
    }
    let base = path.split('+').next().unwrap_or(path).to_ascii_lowercase();
    if matches!(
        base.as_str(),
        "postgres" | "postgresql" | "sqlite" | "sqlite3" | "mysql" | "mariadb" | "file"
    ) {
        return Some("is only a scheme name, like a URL cut short");
    }
    if path.split('/').any(|part| part.starts_with('$')) {
        return Some("holds an unexpanded variable (`$NAME/...`): write the path it stands for");
    }
    if path.starts_with('~') {
        return Some("starts with `~`, which only a shell expands: write the full path");
    }
    if path.starts_with('/') || path.starts_with("./") || path.starts_with("../") {
        return None;
    }
    let first = path.split('/').next().unwrap_or(path);
    if first.contains('@') {
        return Some("starts with `user@host`, like a server address");
    }
    let ipv4 = first.split('.').count() == 4
        && first
            .split('.')
            .all(|n| !n.is_empty() && n.len() <= 3 && n.chars().all(|c| c.is_ascii_digit()));
    if path.contains('/')
        && (first.eq_ignore_ascii_case("localhost") || ipv4 || first.starts_with('['))
    {
        return Some(
            "starts with a host name (`localhost/db`, `10.0.0.1/db`), like a server address",
        );
    }
    if let Some((_, port)) = first.rsplit_once(':') {
        if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) {
            return Some("starts with `host:port`, like a server address");
        }
    }
    if first.contains(char::is_whitespace) && first.contains('=') {
        return Some("holds `key=value` words, like a libpq connection string");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(form: Form) -> PathBuf {
        match form {
            Form::File { path, readings, .. } => {
                assert!(readings.is_none());
                path
            }
            Form::Memory => panic!("memory"),
        }
    }

    #[test]
    fn forms_of_the_seeds_read_as_sqlalchemy_does() {
        let cwd = std::env::current_dir().unwrap();
        assert!(matches!(from_url("//"), Ok(Form::Memory)));
        assert!(matches!(from_url("///:memory:"), Ok(Form::Memory)));
        assert!(matches!(from_url(":memory:"), Ok(Form::Memory)));
        assert_eq!(
            path_of(from_url("///./dbctl-unit-dev.db").unwrap()),
            cwd.join("dbctl-unit-dev.db")
        );
        assert_eq!(
            path_of(from_url("///dbctl-unit-name.db").unwrap()),
            cwd.join("dbctl-unit-name.db")
        );
        assert_eq!(
            path_of(from_url("////srv/dbctl-unit/x.db").unwrap()),
            PathBuf::from("/srv/dbctl-unit/x.db")
        );
        assert_eq!(
            path_of(from_url("//rel/x.db").unwrap()),
            cwd.join("rel/x.db")
        );
    }

    #[test]
    fn the_rust_tools_absolute_form_finds_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"").unwrap();
        let url = format!("//{}", db.display());
        assert_eq!(path_of(from_url(&url).unwrap()), db);
        let missing = format!("//{}", dir.path().join("nope.db").display());
        match from_url(&missing).unwrap() {
            Form::File { readings, .. } => assert!(readings.is_some()),
            Form::Memory => panic!("memory"),
        }
    }

    #[test]
    fn server_addresses_are_not_file_names() {
        for p in [
            "postgres//postgres@127.0.0.1/db",
            "127.0.0.1:5432/db",
            "user@host/db",
            "//host/db",
            "u:secret@h/db",
            "localhost:5432",
            "localhost/db",
            "10.0.0.1/db",
            "[::1]/db",
            "~/app.db",
            "$HOME/app.db",
            "postgres",
            "postgresql+asyncpg",
        ] {
            let err = from_path(p).expect_err(p);
            assert!(!err.contains("secret"), "{err}");
        }
        for p in ["app.db", "./user@host/db", "/abs/x.db", "data/my db.sqlite"] {
            assert!(from_path(p).is_ok(), "{p}");
        }
        for p in ["data/", "sqlite_dir/..", "."] {
            assert!(from_path(p).is_err(), "{p}");
        }
    }
}
