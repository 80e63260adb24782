//! diesel.toml's `[print_schema]` and `[print_schema.NAME]` sections, read the way diesel_cli
//! 2.3 reads them: paths relative to diesel.toml's folder, top-level keys as the `default`
//! section, sections taken in name order. A key dbctl does not know is an error naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::error;

/// Which doc comments to write (`with_docs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Docs {
    #[default]
    None,
    OnlyDatabaseComments,
    CommentsOrGenerated,
}

/// How `allow_tables_to_appear_in_same_query!` groups tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Grouping {
    #[default]
    AllTables,
    FkRelatedTables,
    None,
}

#[derive(Clone, Debug, Default)]
pub(crate) enum Filter {
    #[default]
    None,
    Only(Vec<Regex>),
    Except(Vec<Regex>),
}

impl Filter {
    pub(crate) fn keeps(&self, sql_name: &str) -> bool {
        match self {
            Filter::None => true,
            Filter::Only(rx) => rx.iter().any(|r| r.is_match(sql_name)),
            Filter::Except(rx) => !rx.iter().any(|r| r.is_match(sql_name)),
        }
    }
}

/// One `[print_schema]` section.
#[derive(Clone, Debug, Default)]
pub(crate) struct Section {
    /// `default` for the top-level keys, else the section's name.
    pub(crate) name: String,
    pub(crate) file: Option<PathBuf>,
    pub(crate) with_docs: Docs,
    pub(crate) grouping: Grouping,
    pub(crate) filter: Filter,
    pub(crate) sort_by_name: bool,
    pub(crate) schema: Option<String>,
    pub(crate) patch_file: Option<PathBuf>,
    pub(crate) import_types: Option<Vec<String>>,
    pub(crate) generate_missing_types: bool,
    pub(crate) except_custom_types: Vec<Regex>,
    pub(crate) custom_type_derives: Vec<String>,
    pub(crate) sqlite_bigint_rowid: bool,
    pub(crate) pg_domains_as_custom_types: Vec<Regex>,
}

impl Section {
    fn new(name: &str) -> Section {
        Section {
            name: name.to_string(),
            generate_missing_types: true,
            custom_type_derives: vec![SQL_TYPE_DERIVE.to_string()],
            ..Section::default()
        }
    }
}

/// The derive every generated SQL type has, added when `custom_type_derives` lacks it.
pub(crate) const SQL_TYPE_DERIVE: &str = "diesel::sql_types::SqlType";

/// The keys of a section, as diesel_cli 2.3 names them.
pub(crate) const KEYS: &[&str] = &[
    "file",
    "with_docs",
    "allow_tables_to_appear_in_same_query_config",
    "filter",
    "column_sorting",
    "schema",
    "patch_file",
    "import_types",
    "generate_missing_sql_type_definitions",
    "except_custom_type_definitions",
    "custom_type_derives",
    "sqlite_integer_primary_key_is_bigint",
    "pg_domains_as_custom_types",
];

/// The sections of `path` (a diesel.toml), or one default section when there is no file or no
/// `[print_schema]` in it.
pub(crate) fn read(path: Option<&Path>) -> anyhow::Result<Vec<Section>> {
    let Some(path) = path else {
        return Ok(vec![Section::new("default")]);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| error::usage(format!("cannot read `{}`: {e}", path.display())))?;
    let doc: toml::Table = toml::from_str(&text)
        .map_err(|e| error::usage(format!("malformed `{}`: {}", path.display(), e.message())))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let Some(top) = doc.get("print_schema") else {
        return Ok(vec![Section::new("default")]);
    };
    let top = top.as_table().ok_or_else(|| {
        error::usage(format!(
            "`{}`: `print_schema` must be a table ([print_schema])",
            path.display()
        ))
    })?;
    let mut default = Section::new("default");
    let mut named: BTreeMap<String, Section> = BTreeMap::new();
    for (key, value) in top {
        if KEYS.contains(&key.as_str()) {
            apply(&mut default, key, value, base)
                .map_err(|msg| bad(path, "[print_schema]", key, &msg))?;
        } else if let Some(table) = value.as_table().filter(|_| key != "filter") {
            let header = format!("[print_schema.{key}]");
            let mut section = Section::new(key);
            for (k, v) in table {
                if !KEYS.contains(&k.as_str()) {
                    return Err(unknown(path, &header, k));
                }
                apply(&mut section, k, v, base).map_err(|msg| bad(path, &header, k, &msg))?;
            }
            named.insert(key.clone(), section);
        } else {
            return Err(unknown(path, "[print_schema]", key));
        }
    }
    if named.is_empty() {
        return Ok(vec![default]);
    }
    named.entry("default".to_string()).or_insert(default);
    Ok(named.into_values().collect())
}

fn unknown(path: &Path, header: &str, key: &str) -> anyhow::Error {
    error::usage(format!(
        "`{}`: {header} has the key `{key}`, which dbctl does not support (known: {})",
        path.display(),
        KEYS.join(", ")
    ))
}

fn bad(path: &Path, header: &str, key: &str, msg: &str) -> anyhow::Error {
    error::usage(format!("`{}`: {header} `{key}`: {msg}", path.display()))
}

fn string(value: &toml::Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected a string, found {}", value.type_str()))
}

fn strings(value: &toml::Value) -> Result<Vec<String>, String> {
    let list = value
        .as_array()
        .ok_or_else(|| format!("expected a list of strings, found {}", value.type_str()))?;
    list.iter().map(|v| string(v).map(str::to_string)).collect()
}

fn regexes(value: &toml::Value) -> Result<Vec<Regex>, String> {
    strings(value)?
        .iter()
        .map(|s| Regex::new(s).map_err(|e| format!("bad regex `{s}`: {e}")))
        .collect()
}

fn boolean(value: &toml::Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("expected true or false, found {}", value.type_str()))
}

fn relative(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_relative() {
        base.join(path)
    } else {
        path.to_path_buf()
    }
}

fn apply(section: &mut Section, key: &str, value: &toml::Value, base: &Path) -> Result<(), String> {
    match key {
        "file" => section.file = Some(relative(base, string(value)?)),
        "patch_file" => section.patch_file = Some(relative(base, string(value)?)),
        "with_docs" => {
            section.with_docs = match value {
                toml::Value::Boolean(true) => Docs::CommentsOrGenerated,
                toml::Value::Boolean(false) => Docs::None,
                toml::Value::String(s) => match s.as_str() {
                    "database-comments-fallback-to-auto-generated-doc-comment" => {
                        Docs::CommentsOrGenerated
                    }
                    "only-database-comments" => Docs::OnlyDatabaseComments,
                    "no-doc-comments" => Docs::None,
                    other => {
                        return Err(format!(
                            "unknown value `{other}` (expected true, false, \
                             \"database-comments-fallback-to-auto-generated-doc-comment\", \
                             \"only-database-comments\" or \"no-doc-comments\")"
                        ))
                    }
                },
                other => return Err(format!("expected a boolean or a string, found {}", other.type_str())),
            }
        }
        "allow_tables_to_appear_in_same_query_config" => {
            section.grouping = match string(value)? {
                "fk_related_tables" => Grouping::FkRelatedTables,
                "all_tables" => Grouping::AllTables,
                "none" => Grouping::None,
                other => {
                    return Err(format!(
                        "unknown value `{other}` (expected \"fk_related_tables\", \"all_tables\" or \"none\")"
                    ))
                }
            }
        }
        "column_sorting" => {
            section.sort_by_name = match string(value)? {
                "ordinal_position" => false,
                "name" => true,
                other => {
                    return Err(format!(
                        "unknown value `{other}` (expected \"ordinal_position\" or \"name\")"
                    ))
                }
            }
        }
        "filter" => {
            let table = value
                .as_table()
                .ok_or_else(|| format!("expected a table, found {}", value.type_str()))?;
            let mut only = None;
            let mut except = None;
            for (k, v) in table {
                match k.as_str() {
                    "only_tables" => only = Some(regexes(v)?),
                    "except_tables" => except = Some(regexes(v)?),
                    other => {
                        return Err(format!(
                            "unknown key `{other}` (expected only_tables or except_tables)"
                        ))
                    }
                }
            }
            section.filter = match (only, except) {
                (Some(rx), None) => Filter::Only(rx),
                (None, Some(rx)) => Filter::Except(rx),
                (None, None) => Filter::None,
                (Some(_), Some(_)) => {
                    return Err("only_tables and except_tables cannot both be given".to_string())
                }
            };
        }
        "schema" => section.schema = Some(string(value)?.to_string()),
        "import_types" => section.import_types = Some(strings(value)?),
        "generate_missing_sql_type_definitions" => {
            section.generate_missing_types = boolean(value)?;
        }
        "except_custom_type_definitions" => section.except_custom_types = regexes(value)?,
        "custom_type_derives" => {
            let mut derives = strings(value)?;
            if !derives.iter().any(|d| d == SQL_TYPE_DERIVE) {
                derives.push(SQL_TYPE_DERIVE.to_string());
            }
            section.custom_type_derives = derives;
        }
        "sqlite_integer_primary_key_is_bigint" => section.sqlite_bigint_rowid = boolean(value)?,
        "pg_domains_as_custom_types" => section.pg_domains_as_custom_types = regexes(value)?,
        other => return Err(format!("unknown key `{other}`")),
    }
    Ok(())
}
