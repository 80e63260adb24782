//! `dbctl print-schema`: diesel's `schema.rs` (`table!`, `joinable!`,
//! `allow_tables_to_appear_in_same_query!` and the `sql_types` module), byte for byte as
//! `diesel print-schema` 2.3 prints it for the same database and diesel.toml. This is the command:
//! its arguments laid over diesel.toml's `[print_schema]` sections, then printing, writing each
//! section's `file` or checking it (`--locked-schema`, exit 4), which `migrate` and `init` also
//! do after changing the schema. Reading the catalog, rendering and `patch_file` are the engine's
//! (`schema::diesel_rs`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::commands::Context;
use crate::db::OpenMode;
use crate::error::{self, Exit};
use crate::output::{Format, Output, Report};
use crate::schema::diesel_rs::{self, Docs, Filter, Grouping, Section};

/// Print the schema as diesel's schema.rs (what `diesel print-schema` prints).
///
/// Reads diesel.toml's [print_schema] (and [print_schema.NAME]) sections: file, filter,
/// schema, with_docs, column_sorting, import_types, patch_file, custom_type_derives,
/// generate_missing_sql_type_definitions, except_custom_type_definitions,
/// allow_tables_to_appear_in_same_query_config, sqlite_integer_primary_key_is_bigint,
/// pg_domains_as_custom_types. Without --write or --locked-schema the schema goes to stdout,
/// one section after the other, as diesel prints it.
///
/// Examples:
///   dbctl print-schema > src/schema.rs
///   dbctl print-schema -o users posts --with-docs
///   dbctl print-schema --write
///   dbctl print-schema --locked-schema
///   dbctl print-schema --schema-key users_db
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct PrintSchemaArgs {
    /// Only this [print_schema.NAME] section (repeatable) [default: every section; diesel
    /// prints every section whatever --schema-key says]
    #[arg(long = "schema-key", value_name = "NAME")]
    schema_keys: Vec<String>,

    /// Write each section's `file` instead of printing
    #[arg(long, conflicts_with = "locked_schema")]
    write: bool,

    /// Write nothing; exit 4 with a unified diff when a section's `file` would change
    #[arg(long)]
    locked_schema: bool,

    /// Only the tables matching the TABLE regexes (diesel's -o; overrides diesel.toml's filter)
    #[arg(
        short = 'o',
        long,
        conflicts_with = "except_tables",
        requires = "tables"
    )]
    only_tables: bool,

    /// Every table but those matching the TABLE regexes (diesel's -e)
    #[arg(short = 'e', long, requires = "tables")]
    except_tables: bool,

    /// Table name regexes for --only-tables or --except-tables
    #[arg(value_name = "TABLE")]
    tables: Vec<String>,

    /// The PostgreSQL schema to print, in a `pub mod` of its name (overrides diesel.toml)
    #[arg(short = 's', long, value_name = "SCHEMA")]
    schema: Option<String>,

    /// Doc comments: the database's comments, else generated ones (diesel's --with-docs)
    #[arg(long)]
    with_docs: bool,

    /// Column order (overrides diesel.toml's column_sorting)
    #[arg(long, value_name = "ORDER", value_parser = ["ordinal_position", "name"])]
    column_sorting: Option<String>,

    /// Which doc comments to write (overrides with_docs)
    #[arg(long, value_name = "MODE", value_parser = [
        "database-comments-fallback-to-auto-generated-doc-comment",
        "only-database-comments",
        "no-doc-comments",
    ])]
    with_docs_config: Option<String>,

    /// How allow_tables_to_appear_in_same_query! groups tables
    #[arg(long, value_name = "MODE", value_parser = ["fk_related_tables", "all_tables", "none"])]
    allow_tables_to_appear_in_same_query_config: Option<String>,

    /// A unified diff applied to the output (relative to the current folder)
    #[arg(long, value_name = "PATH")]
    patch_file: Option<PathBuf>,

    /// A `use` line for every table (repeatable; replaces import_types)
    #[arg(long, value_name = "PATH")]
    import_types: Vec<String>,

    /// A derive for each generated SQL type (repeatable; replaces custom_type_derives)
    #[arg(long, value_name = "DERIVE")]
    custom_type_derives: Vec<String>,

    /// Generate no `sql_types` module for types diesel does not provide
    #[arg(long)]
    no_generate_missing_sql_type_definitions: bool,

    /// Generate no SQL type whose Rust name matches this regex (repeatable)
    #[arg(long, value_name = "REGEX")]
    except_custom_type_definitions: Vec<String>,

    /// PostgreSQL domains matching this regex get a type of their own (repeatable)
    #[arg(long, value_name = "REGEX")]
    pg_domains_as_custom_types: Vec<String>,

    /// SQLite: an INTEGER PRIMARY KEY (the rowid) and keys referencing one are BigInt
    #[arg(long)]
    sqlite_integer_primary_key_is_bigint: bool,
}

/// Regexes given on the command line; a bad one is a usage error naming the flag.
fn flag_regexes(flag: &str, texts: &[String]) -> anyhow::Result<Vec<regex::Regex>> {
    texts
        .iter()
        .map(|t| {
            regex::Regex::new(t).map_err(|e| error::usage(format!("{flag} `{t}`: bad regex: {e}")))
        })
        .collect()
}

impl PrintSchemaArgs {
    /// The command line's settings, laid over each section's.
    fn apply_to(&self, section: &mut Section) -> anyhow::Result<()> {
        if !self.tables.is_empty() {
            let regexes = self
                .tables
                .iter()
                .map(|t| {
                    regex::Regex::new(t)
                        .map_err(|e| error::usage(format!("bad table regex `{t}`: {e}")))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            section.filter = if self.except_tables {
                Filter::Except(regexes)
            } else if self.only_tables {
                Filter::Only(regexes)
            } else {
                return Err(error::usage(
                    "table names go with --only-tables (-o) or --except-tables (-e)",
                ));
            };
        }
        if let Some(schema) = &self.schema {
            section.schema = Some(schema.clone());
        }
        if self.with_docs {
            section.with_docs = Docs::CommentsOrGenerated;
        }
        if let Some(order) = &self.column_sorting {
            section.sort_by_name = order == "name";
        }
        if let Some(mode) = &self.with_docs_config {
            section.with_docs = match mode.as_str() {
                "only-database-comments" => Docs::OnlyDatabaseComments,
                "no-doc-comments" => Docs::None,
                _ => Docs::CommentsOrGenerated,
            };
        }
        if let Some(mode) = &self.allow_tables_to_appear_in_same_query_config {
            section.grouping = match mode.as_str() {
                "fk_related_tables" => Grouping::FkRelatedTables,
                "none" => Grouping::None,
                _ => Grouping::AllTables,
            };
        }
        if let Some(path) = &self.patch_file {
            section.patch_file = Some(path.clone());
        }
        if !self.import_types.is_empty() {
            section.import_types = Some(self.import_types.clone());
        }
        if !self.custom_type_derives.is_empty() {
            let mut derives = self.custom_type_derives.clone();
            if !derives.iter().any(|d| d == diesel_rs::SQL_TYPE_DERIVE) {
                derives.push(diesel_rs::SQL_TYPE_DERIVE.to_string());
            }
            section.custom_type_derives = derives;
        }
        if self.no_generate_missing_sql_type_definitions {
            section.generate_missing_types = false;
        }
        if !self.except_custom_type_definitions.is_empty() {
            section.except_custom_types = flag_regexes(
                "--except-custom-type-definitions",
                &self.except_custom_type_definitions,
            )?;
        }
        if !self.pg_domains_as_custom_types.is_empty() {
            section.pg_domains_as_custom_types = flag_regexes(
                "--pg-domains-as-custom-types",
                &self.pg_domains_as_custom_types,
            )?;
        }
        if self.sqlite_integer_primary_key_is_bigint {
            section.sqlite_bigint_rowid = true;
        }
        Ok(())
    }
}

/// What `print-schema` did, for `--format json` (with `--format human` the schema itself is
/// the output).
#[derive(Serialize, Debug)]
pub(crate) struct PrintReport {
    /// The server that answered (`host:port`; for a URL naming several, the one libpq chose);
    /// absent for SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    sections: Vec<SectionReport>,
    #[serde(skip)]
    mode: Mode,
}

#[derive(Serialize, Debug)]
struct SectionReport {
    name: String,
    file: Option<PathBuf>,
    /// `written`, `unchanged`, `would_change` or `printed`.
    status: &'static str,
    schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Print,
    Write,
    Check,
}

impl Report for PrintReport {
    fn human(&self) -> String {
        match self.mode {
            Mode::Print => self.sections.iter().map(|s| s.schema.as_str()).collect(),
            Mode::Write | Mode::Check => self
                .sections
                .iter()
                .filter_map(|s| s.diff.as_deref())
                .collect(),
        }
    }

    fn exit(&self) -> Exit {
        if self.sections.iter().any(|s| s.status == "would_change") {
            Exit::Check
        } else {
            Exit::Success
        }
    }
}

impl PrintReport {
    /// Prints the report; the schema text is printed exactly, with no line added.
    pub(crate) fn print(&self, out: &Output) -> anyhow::Result<Exit> {
        if out.format() == Format::Json || self.mode != Mode::Print {
            for s in &self.sections {
                let file = s.file.as_deref().map(Path::display);
                match (s.status, file) {
                    ("written", Some(f)) => out.info(format_args!("wrote {f}")),
                    ("unchanged", Some(f)) => out.info(format_args!("{f} is up to date")),
                    ("would_change", Some(f)) => out.info(format_args!(
                        "{f} would change (--locked-schema): the diff is on stdout"
                    )),
                    _ => {}
                }
            }
            return out.emit(self);
        }
        out.raw(&self.human())?;
        Ok(Exit::Success)
    }
}

pub(crate) fn run(ctx: &Context, args: PrintSchemaArgs) -> anyhow::Result<PrintReport> {
    let mut sections = selected_sections(ctx, &args.schema_keys)?;
    for section in &mut sections {
        args.apply_to(section)?;
    }
    let mode = if args.locked_schema {
        Mode::Check
    } else if args.write {
        Mode::Write
    } else {
        Mode::Print
    };
    if mode != Mode::Print && sections.iter().all(|s| s.file.is_none()) {
        return Err(error::usage(
            "no [print_schema] section of diesel.toml names a `file` to write or check",
        ));
    }
    if mode != Mode::Print {
        for section in &sections {
            check_target(section, mode == Mode::Write)?;
        }
    }
    let db = ctx.open(OpenMode::Existing)?;
    let mut conn = db.get()?;
    let reports = sections
        .iter()
        .filter(|s| mode == Mode::Print || s.file.is_some())
        .map(|section| {
            let schema = diesel_rs::generate(&mut conn, section, ctx.out)?;
            match mode {
                Mode::Print => Ok(SectionReport {
                    name: section.name.clone(),
                    file: section.file.clone(),
                    status: "printed",
                    schema,
                    diff: None,
                }),
                Mode::Write | Mode::Check => settle_file(section, schema, mode == Mode::Check),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(PrintReport {
        host: db.server(),
        sections: reports,
        mode,
    })
}

/// The sections of diesel.toml, or those `--schema-key` names (each must exist).
fn selected_sections(ctx: &Context, keys: &[String]) -> anyhow::Result<Vec<Section>> {
    let all = diesel_rs::read_settings(ctx.config.diesel_toml())?;
    if keys.is_empty() {
        return Ok(all);
    }
    keys.iter()
        .map(|key| {
            all.iter().find(|s| &s.name == key).cloned().ok_or_else(|| {
                error::usage(format!(
                    "--schema-key {key}: no [print_schema.{key}] section in diesel.toml"
                ))
            })
        })
        .collect()
}

/// Refuses (exit 2) a section whose `file` cannot be a file: an existing folder, or a path
/// under something that is not a folder; and, when it is to be `written`, a file (or, for a new
/// file, a folder) the system does not let dbctl write. Checked before anything is written or
/// migrated, so that a `file` that can never be written stops `migrate` and `init` before they
/// change the database, not after.
fn check_target(section: &Section, written: bool) -> anyhow::Result<()> {
    let Some(path) = &section.file else {
        return Ok(());
    };
    let refuse = |what: &str| {
        error::usage(format!(
            "[print_schema] section `{}`: `file` `{}` cannot be written: {what}",
            section.name,
            path.display()
        ))
    };
    let text = path.as_os_str().to_string_lossy();
    if text.is_empty() || text.ends_with(std::path::MAIN_SEPARATOR) {
        return Err(refuse("it names no file"));
    }
    if path.is_dir() {
        return Err(refuse("it is a folder, not a file"));
    }
    for parent in path.ancestors().skip(1) {
        if parent.as_os_str().is_empty() {
            break;
        }
        match std::fs::metadata(parent) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(refuse(&format!("`{}` is not a folder", parent.display()))),
            // A folder above it that is missing, or is itself under a file, which a parent
            // further up names.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => {
                return Err(refuse(&format!(
                    "cannot look at `{}`: {e}",
                    parent.display()
                )))
            }
        }
    }
    if written {
        probe_writable(path).map_err(|e| refuse(&e))?;
    }
    Ok(())
}

/// Whether `path` can be written, changing nothing: an existing file is opened for writing
/// (not truncated); a new one is created and removed again when its folder exists (a missing
/// folder is created at the write, and says so then).
fn probe_writable(path: &Path) -> Result<(), String> {
    use std::fs::OpenOptions;
    match OpenOptions::new().write(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let folder = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            // A symbolic link to a file not there yet is left to the write (which follows it).
            if !folder.is_dir() || path.symlink_metadata().is_ok() {
                return Ok(());
            }
            // Another run probing or writing the same file at the same moment is no error.
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(_) => match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(format!("cannot remove the file made to test it: {e}"))
                    }
                    _ => Ok(()),
                },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(format!("cannot create it: {e}")),
            }
        }
        Err(e) => Err(format!("cannot open it for writing: {e}")),
    }
}

/// Writes the section's file, or (`check`) compares it and writes nothing.
fn settle_file(section: &Section, schema: String, check: bool) -> anyhow::Result<SectionReport> {
    let Some(path) = section.file.clone() else {
        return Err(error::usage(format!(
            "[print_schema] section `{}` has no `file`",
            section.name
        )));
    };
    let current = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    // Byte for byte, as diesel_cli compares: a file with other line ends or without its last
    // line break is not what diesel would write, so it is stale.
    let unchanged = current.as_deref() == Some(schema.as_bytes());
    let mut report = SectionReport {
        name: section.name.clone(),
        file: Some(path.clone()),
        status: "unchanged",
        schema,
        diff: None,
    };
    if unchanged {
        return Ok(report);
    }
    if check {
        let label = path.display().to_string();
        let current = current.as_deref().map(String::from_utf8_lossy);
        report.diff = Some(diesel_rs::unified_diff(
            current.as_deref().unwrap_or(""),
            &report.schema,
            &label,
            "new schema",
        ));
        report.status = "would_change";
        return Ok(report);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create `{}`", parent.display()))?;
    }
    std::fs::write(&path, report.schema.as_bytes())
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    report.status = "written";
    Ok(report)
}

/// The diesel.toml sections that name a `file`, read before `migrate` or `init` changes
/// anything, so that a bad diesel.toml (or a `file` that cannot be written, a `patch_file` that
/// cannot be read, a `schema` on SQLite) stops them first.
pub(crate) fn file_sections(
    ctx: &Context,
    backend: crate::db::Backend,
    locked: bool,
) -> anyhow::Result<Vec<Section>> {
    let sections: Vec<Section> = diesel_rs::read_settings(ctx.config.diesel_toml())?
        .into_iter()
        .filter(|s| s.file.is_some())
        .collect();
    for section in &sections {
        check_target(section, !locked)?;
        // What would stop the rewrite whatever the migrations do stops the run now.
        if backend == crate::db::Backend::Sqlite && section.schema.is_some() {
            return Err(diesel_rs::schema_on_sqlite(section));
        }
        if let Some(path) = &section.patch_file {
            diesel_rs::read_patch(path)?;
        }
    }
    Ok(sections)
}

/// After `migrate` or `init` changed the schema: writes (or, `locked`, checks) the `file` of
/// each of `sections`, saying so on stderr. A file that would change under `locked` is an
/// error (exit 4) after its diff is printed on stdout; the migrations stay applied.
pub(crate) fn regenerate(ctx: &Context, sections: &[Section], locked: bool) -> anyhow::Result<()> {
    if sections.is_empty() {
        return Ok(());
    }
    let db = ctx.open(OpenMode::Existing)?;
    let mut conn = db.get()?;
    // With `--format json` stdout holds one JSON document (the error), so the diffs go to
    // stderr instead.
    let json = ctx.out.format() == Format::Json;
    let mut stale = Vec::new();
    for section in sections {
        let schema = diesel_rs::generate(&mut conn, section, ctx.out)?;
        let report = settle_file(section, schema, locked)?;
        let file = report.file.as_deref().map(Path::display);
        match (report.status, file) {
            ("written", Some(f)) => ctx.out.info(format_args!("wrote the schema to {f}")),
            ("would_change", Some(f)) => {
                let diff = report.diff.as_deref().unwrap_or_default();
                if json {
                    eprint!("{}", error::redact(diff));
                } else {
                    ctx.out.raw(diff)?;
                }
                stale.push(f.to_string());
            }
            _ => {}
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    let message = format!(
        "--locked-schema: {} would change (the diff is {}; the migrations did run); run without \
         --locked-schema to update it",
        stale.join(", "),
        if json { "on stderr" } else { "on stdout" }
    );
    Err(error::tag(anyhow::anyhow!(message), Exit::Check))
}
