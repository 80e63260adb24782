//! Reading a diesel-format migrations folder, strictly.
//!
//! `<dir>/<version>_<name>/up.sql`, optional `down.sql` and `metadata.toml`. The version is the part
//! before the first `_` with dashes removed; it must be digits. When the folder holds per-backend
//! folders (`sqlite/`, `postgresql/`), the one matching the URL's backend is read instead. Anything
//! diesel would silently accept or ignore and that is likely a mistake is an error naming the folder
//! or a warning. Nothing here touches a database.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::db::Backend;
use crate::error;

use super::split::{self, Dialect};

/// One migration as found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Migration {
    /// Digits only (`20240101000000`), as stored in `__diesel_schema_migrations`.
    pub(crate) version: String,
    /// The part after the first `_` (may hold spaces and dashes).
    pub(crate) name: String,
    pub(crate) folder: PathBuf,
    pub(crate) up: String,
    /// Why up.sql is not written yet, if it is not: applying it is refused. One holding only white
    /// space or comments is a deliberate no-op (a backend that needs no change, as in vaultwarden's
    /// SQLite folder): it is applied and recorded.
    pub(crate) unwritten: Option<Unwritten>,
    /// `None` when down.sql is missing or holds no statement: the migration cannot be reverted.
    pub(crate) down: Option<String>,
    pub(crate) run_in_transaction: bool,
    /// SHA-256 of up.sql with CRLF turned into LF, hex.
    pub(crate) checksum: String,
}

impl Migration {
    /// `version_name`, as people see it in the folder.
    pub(crate) fn label(&self) -> String {
        label(&self.version, &self.name)
    }

    pub(crate) fn up_path(&self) -> PathBuf {
        self.folder.join("up.sql")
    }

    pub(crate) fn down_path(&self) -> PathBuf {
        self.folder.join("down.sql")
    }
}

/// An up.sql that is not written yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unwritten {
    /// No bytes at all (a byte-order mark aside): diesel_cli refuses it too.
    Empty,
    /// Still exactly the placeholder `dbctl revision` wrote.
    Placeholder,
}

/// What `dbctl revision` writes into up.sql when no `--sql` is given. A file still holding only
/// this is an unfinished revision, not a deliberate no-op, and is refused.
pub(crate) const UP_PLACEHOLDER: &str = "-- Write the SQL that applies this migration here.\n";

fn unwritten(up: &str) -> Option<Unwritten> {
    if up.is_empty() {
        Some(Unwritten::Empty)
    } else if up.trim() == UP_PLACEHOLDER.trim() {
        Some(Unwritten::Placeholder)
    } else {
        None
    }
}

/// `version_name`, or the version alone when the name is unknown.
pub(crate) fn label(version: &str, name: &str) -> String {
    if name.is_empty() {
        version.to_string()
    } else {
        format!("{version}_{name}")
    }
}

/// The migrations of one folder, sorted by version, and what was worth a warning.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) dir: PathBuf,
    pub(crate) migrations: Vec<Migration>,
    pub(crate) warnings: Vec<String>,
    /// The SQL dialect of the backend the folder was read for.
    pub(crate) dialect: Dialect,
}

/// The folder to read for `backend`: `dir` itself, or its per-backend folder when it has them
/// (see `db::backend::migrations_dir`).
pub(crate) fn backend_dir(dir: &Path, backend: Backend) -> anyhow::Result<PathBuf> {
    crate::db::backend::migrations_dir(dir, backend)
}

/// The entries of a migrations folder, sorted: the one place a migrations folder is listed, so
/// that every caller reports an unreadable folder alike (exit 2, naming it).
pub(crate) fn read_folder(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let unreadable = |e: std::io::Error| {
        error::usage(format!(
            "cannot read migrations folder `{}`: {e}",
            dir.display()
        ))
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        paths.push(entry.map_err(unreadable)?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Reads every migration of `dir` (after choosing the per-backend folder).
pub(crate) fn load(dir: &Path, backend: Backend) -> anyhow::Result<Source> {
    let dir = backend_dir(dir, backend)?;
    let mut warnings = Vec::new();
    let mut by_version: BTreeMap<String, Migration> = BTreeMap::new();
    for path in read_folder(&dir)? {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if file_name.starts_with('.') {
            continue;
        }
        if !path.is_dir() {
            if file_name.ends_with(".sql") {
                warnings.push(format!(
                    "`{}` is ignored: migrations are folders `<version>_<name>/` holding up.sql",
                    path.display()
                ));
            }
            continue;
        }
        let migration = read_migration(&path, &file_name, backend, &mut warnings)?;
        if let Some(other) = by_version.get(&migration.version) {
            return Err(error::usage(format!(
                "two migrations have version {}: `{}` and `{}`",
                migration.version,
                other.folder.display(),
                migration.folder.display()
            )));
        }
        by_version.insert(migration.version.clone(), migration);
    }
    Ok(Source {
        dir,
        // A BTreeMap over strings gives diesel's order (versions compare as strings).
        migrations: by_version.into_values().collect(),
        warnings,
        dialect: crate::db::backend::dialect(backend),
    })
}

/// Splits a folder name into its version (dashes removed) and name, or says what is wrong.
pub(crate) fn parse_folder_name(folder: &str) -> Result<(String, String), String> {
    let (raw, name) = folder.split_once('_').unwrap_or((folder, ""));
    let version: String = raw.chars().filter(|c| *c != '-').collect();
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{raw}` is not a version: a migration folder is named `<version>_<name>`, the version \
             being a timestamp such as 2024-01-31-120000 or a number"
        ));
    }
    if version.len() > 50 {
        return Err(format!(
            "version `{raw}` is longer than the 50 characters diesel's table can hold"
        ));
    }
    Ok((version, name.to_string()))
}

fn read_migration(
    folder: &Path,
    folder_name: &str,
    backend: Backend,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Migration> {
    let (version, name) = parse_folder_name(folder_name)
        .map_err(|why| error::usage(format!("migration folder `{}`: {why}", folder.display())))?;
    let up_path = folder.join("up.sql");
    for file in ["up.sql", "down.sql", "metadata.toml"] {
        let path = folder.join(file);
        crate::files::check_regular(&path)
            .map_err(|e| error::usage(format!("`{}`: {e}", path.display())))?;
    }
    if !up_path.is_file() {
        return Err(error::usage(format!(
            "migration folder `{}` has no up.sql",
            folder.display()
        )));
    }
    let up = read_text(&up_path)?;
    let down_path = folder.join("down.sql");
    let dialect = crate::db::backend::dialect(backend);
    let down = if down_path.is_file() {
        let text = read_text(&down_path)?;
        if split::split(&text, dialect).is_empty() {
            None
        } else {
            Some(text)
        }
    } else {
        None
    };
    let meta_path = folder.join("metadata.toml");
    let run_in_transaction = if meta_path.is_file() {
        read_metadata(&meta_path, warnings)?
    } else {
        true
    };
    Ok(Migration {
        checksum: checksum(&up),
        unwritten: unwritten(&up),
        version,
        name,
        folder: folder.to_path_buf(),
        up,
        down,
        run_in_transaction,
    })
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::files::read_regular(path).map_err(|e| match e {
        crate::files::OpenError::Io(e) => {
            error::usage(format!("cannot read `{}`: {e}", path.display()))
        }
        e => error::usage(format!("`{}`: {e}", path.display())),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        error::usage(format!(
            "`{}` is not valid UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    // A byte-order mark would reach the database as part of the first statement.
    Ok(text.strip_prefix('\u{feff}').unwrap_or(&text).to_string())
}

/// `metadata.toml`: only `run_in_transaction` (a boolean) means something. diesel reads the file
/// loosely (a file it cannot parse means "in a transaction", a file without the key means "not in
/// a transaction"); dbctl refuses what it cannot parse and warns about unknown keys.
fn read_metadata(path: &Path, warnings: &mut Vec<String>) -> anyhow::Result<bool> {
    let text = read_text(path)?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        error::usage(format!(
            "`{}` is not valid TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    let mut run_in_transaction = None;
    let mut unknown = Vec::new();
    for (key, value) in &table {
        if key == "run_in_transaction" {
            match value.as_bool() {
                Some(b) => run_in_transaction = Some(b),
                None => {
                    return Err(error::usage(format!(
                        "`{}`: run_in_transaction must be true or false (unquoted), not {value}",
                        path.display()
                    )))
                }
            }
        } else {
            unknown.push(key.as_str());
        }
    }
    // One warning per file, however many unknown keys it has (200,000 keys are one mistake).
    if !unknown.is_empty() {
        warnings.push(format!(
            "`{}`: {} ignored (the only key is run_in_transaction)",
            path.display(),
            crate::output::quoted_list("unknown key", &unknown)
        ));
    }
    match run_in_transaction {
        Some(b) => Ok(b),
        None => {
            warnings.push(format!(
                "`{}` does not set run_in_transaction: dbctl runs the migration in a transaction, \
                 but diesel_cli would run it without one",
                path.display()
            ));
            Ok(true)
        }
    }
}

/// SHA-256 of the text with CRLF line endings turned into LF, so that a checkout on Windows does
/// not make every migration look modified.
pub(crate) fn checksum(text: &str) -> String {
    let normalised = text.replace("\r\n", "\n");
    let digest = Sha256::digest(normalised.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names() {
        assert_eq!(
            parse_folder_name("2024-01-31-120000_add users-table now").unwrap(),
            (
                "20240131120000".to_string(),
                "add users-table now".to_string()
            )
        );
        assert_eq!(
            parse_folder_name("00000000000000_diesel_initial_setup").unwrap(),
            (
                "00000000000000".to_string(),
                "diesel_initial_setup".to_string()
            )
        );
        assert!(parse_folder_name("v1_users").is_err());
        assert!(parse_folder_name("_users").is_err());
    }

    #[test]
    fn checksums_ignore_line_endings() {
        assert_eq!(checksum("a;\r\nb;\r\n"), checksum("a;\nb;\n"));
        assert_ne!(checksum("a;\n"), checksum("b;\n"));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: folder names and whole folder trees of any shape are read without a
    //! panic; what is refused is refused as a usage error (exit 2).

    use super::*;
    use proptest::prelude::*;

    /// A folder name: usually close to `<version>_<name>`, sometimes anything.
    fn folder_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9-]{1,20}_[a-z_ ]{0,8}",
            "[0-9]{1,60}",
            "[0-9a-z_ '\\-]{1,20}",
            "\\PC{1,12}".prop_filter("a file name", |s| {
                !s.contains(['/', '\0']) && s != "." && s != ".."
            }),
        ]
    }

    /// What a migration folder holds: (file name, contents), or a folder where a file should be.
    #[derive(Debug, Clone)]
    enum Entry {
        File(&'static str, Vec<u8>),
        Dir(&'static str),
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let name = prop_oneof![
            Just("up.sql"),
            Just("down.sql"),
            Just("metadata.toml"),
            Just("x.sql")
        ];
        let bytes = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            Just(b"CREATE TABLE t (id int);".to_vec()),
            Just(b"run_in_transaction = false".to_vec()),
            Just(b"run_in_transaction = \"x\"\n[a]".to_vec()),
            Just(b"\xEF\xBB\xBFSELECT 1;".to_vec()),
        ];
        prop_oneof![
            4 => (name.clone(), bytes).prop_map(|(n, b)| Entry::File(n, b)),
            1 => name.prop_map(Entry::Dir),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn folder_names_never_panic(name in "\\PC{0,70}") {
            if let Ok((version, _)) = parse_folder_name(&name) {
                prop_assert!(!version.is_empty() && version.len() <= 50);
                prop_assert!(version.chars().all(|c| c.is_ascii_digit()));
            }
        }

        #[test]
        fn folder_trees_never_panic(
            folders in proptest::collection::vec(
                (folder_name(), proptest::collection::vec(entry(), 0..4)),
                0..5,
            ),
            stray in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
        ) {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (name, entries) in &folders {
                let folder = dir.path().join(name);
                if fs::create_dir_all(&folder).is_err() {
                    continue;
                }
                for entry in entries {
                    let _ = match entry {
                        Entry::File(file, bytes) => fs::write(folder.join(file), bytes),
                        Entry::Dir(file) => fs::create_dir_all(folder.join(file)),
                    };
                }
            }
            if let Some(bytes) = stray {
                let _ = fs::write(dir.path().join("stray.sql"), bytes);
            }
            for backend in [Backend::Sqlite, Backend::Postgres] {
                if let Err(err) = load(dir.path(), backend) {
                    prop_assert_eq!(crate::error::exit_of(&err), crate::error::Exit::Usage);
                }
            }
        }
    }
}
