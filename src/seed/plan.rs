//! Which seed files to load and in what order.
//!
//! Files are first sorted by name. A `.sql` file is a barrier: it runs after every file named
//! before it and before every file named after it, so `000_setup.sql` and `999_fix_sequences.sql`
//! do what their names say. Between two barriers, CSV files are ordered so that foreign keys hold
//! (parents before children, from the catalog's foreign keys), ties broken by file name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::loader::Relation;
use crate::db::TableName;
use crate::error;

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Csv,
    Sql,
}

#[derive(Debug, Clone)]
pub(crate) struct SeedFile {
    pub(crate) path: PathBuf,
    /// The file name, as printed and used for ordering.
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// The target table of a CSV file.
    pub(crate) table: Option<TableName>,
    /// The delimiter the file's extension implies (`.tsv`: tab); `None` for `--delimiter`'s.
    pub(crate) delimiter: Option<u8>,
}

/// The table a CSV file loads into: its stem without a numeric ordering prefix
/// (`010_users.csv` and `users.csv` both load `users`).
pub(crate) fn table_for(stem: &str) -> String {
    let digits = stem.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &stem[digits..];
    match rest.strip_prefix(['_', '-']) {
        Some(name) if digits > 0 && !name.is_empty() => name.to_string(),
        _ => stem.to_string(),
    }
}

fn kind_of(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "csv" | "tsv" => Some(Kind::Csv),
        "sql" => Some(Kind::Sql),
        _ => None,
    }
}

fn seed_file(path: PathBuf, kind: Kind) -> SeedFile {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let table = match kind {
        Kind::Csv => Some(TableName::bare(table_for(
            &path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ))),
        Kind::Sql => None,
    };
    let tsv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    SeedFile {
        path,
        name,
        kind,
        table,
        delimiter: tsv.then_some(b'\t'),
    }
}

/// Every `.csv` and `.sql` file directly in `dir`, sorted by name, and the names of the other
/// entries (which are skipped).
pub(crate) fn discover(dir: &Path) -> anyhow::Result<(Vec<SeedFile>, Vec<String>)> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        error::usage(format!(
            "cannot read the seeds folder `{}`: {e}",
            dir.display()
        ))
    })?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            error::usage(format!(
                "cannot read the seeds folder `{}`: {e}",
                dir.display()
            ))
        })?;
        let path = entry.path();
        match kind_of(&path) {
            Some(kind) => {
                ensure_regular(&path)?;
                files.push(seed_file(path, kind));
            }
            None => skipped.push(entry.file_name().to_string_lossy().into_owned()),
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    skipped.sort();
    Ok((files, skipped))
}

/// Refuses (exit 2) a seed file that is a folder, a FIFO, a device or a socket, before anything
/// is opened or started: reading a FIFO would wait forever, `/dev/zero` never ends. Links are
/// followed; a link to nothing is left to fail when the file is read.
fn ensure_regular(path: &Path) -> anyhow::Result<()> {
    crate::files::check_regular(path)
        .map_err(|e| error::usage(format!("seed file `{}`: {e}", path.display())))
}

/// The files named on the command line: as given, or else inside the seeds folder.
pub(crate) fn named(args: &[PathBuf], dir: &Path) -> anyhow::Result<Vec<SeedFile>> {
    let mut files = Vec::new();
    for arg in args {
        let path = if arg.exists() || arg.is_absolute() {
            arg.clone()
        } else if dir.join(arg).exists() {
            dir.join(arg)
        } else {
            return Err(error::usage(format!(
                "seed file `{}` not found (looked in . and in {})",
                arg.display(),
                dir.display()
            )));
        };
        let kind = kind_of(&path).ok_or_else(|| {
            error::usage(format!(
                "`{}` is not a .csv, .tsv or .sql file",
                path.display()
            ))
        })?;
        ensure_regular(&path)?;
        if files.iter().any(|f: &SeedFile| f.path == path) {
            continue;
        }
        files.push(seed_file(path, kind));
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Matches each CSV file's table name to the catalog the way a header's names are matched to
/// columns: exactly first, else the one relation whose name is the same ignoring (ASCII) case.
/// On PostgreSQL a name may carry a schema (`app.users.csv` loads `app.users`); a bare name is
/// looked up on the search path, as psql would. `Users.csv` loads `users`, `lower_t.csv` loads
/// `"Lower_T"`. Several matches ignoring case are a usage error; no match leaves the name as it
/// is, to fail as a missing table. Returns a note for each file not matched exactly by its name.
pub(crate) fn resolve_tables(
    files: &mut [SeedFile],
    relations: &[Relation],
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for file in files.iter_mut() {
        let Some(wanted) = file.table.as_ref().map(|t| t.name.clone()) else {
            continue;
        };
        match resolve(&wanted, relations) {
            Ok(None) => {}
            Ok(Some((found, folded))) => {
                // A relation on the search path is reached by its bare name: the same one.
                let table = TableName {
                    schema: (!found.visible).then(|| found.schema.clone()).flatten(),
                    name: found.name.clone(),
                };
                if folded {
                    notes.push(format!(
                        "{} loads {} (the name matched ignoring case)",
                        file.name,
                        table.quoted()
                    ));
                }
                file.table = Some(table);
            }
            Err(several) => {
                let mut names: Vec<String> = several
                    .iter()
                    .map(|r| match (&r.schema, r.visible) {
                        (Some(schema), false) => format!(
                            "{}.{}",
                            crate::db::quote_ident(schema),
                            crate::db::quote_ident(&r.name)
                        ),
                        _ => crate::db::quote_ident(&r.name),
                    })
                    .collect();
                names.sort();
                return Err(error::usage(format!(
                    "seed file `{}`: its name matches several tables that differ only in case ({}): \
                     name the file exactly as one of them",
                    file.path.display(),
                    names.join(", ")
                )));
            }
        }
    }
    Ok(notes)
}

/// The relation `wanted` names: exactly on the search path, exactly as `schema.name`, then the
/// same two ignoring case (then `true` comes with it). `Err` holds the relations that match
/// equally well.
fn resolve<'r>(
    wanted: &str,
    relations: &'r [Relation],
) -> Result<Option<(&'r Relation, bool)>, Vec<&'r Relation>> {
    let bare = |r: &Relation, fold: bool| r.visible && same_name(&r.name, wanted, fold);
    // Schema and table names may both hold dots: every split is tried.
    let qualified = |r: &Relation, fold: bool| {
        let Some(schema) = &r.schema else {
            return false;
        };
        wanted.match_indices('.').any(|(i, _)| {
            same_name(schema, &wanted[..i], fold) && same_name(&r.name, &wanted[i + 1..], fold)
        })
    };
    for fold in [false, true] {
        for matches in [&bare as &dyn Fn(&Relation, bool) -> bool, &qualified] {
            let found: Vec<&Relation> = relations.iter().filter(|r| matches(r, fold)).collect();
            match found.as_slice() {
                [] => {}
                [one] => return Ok(Some((one, fold))),
                several => return Err(several.to_vec()),
            }
        }
    }
    Ok(None)
}

fn same_name(a: &str, b: &str, fold: bool) -> bool {
    if fold {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// The load order, and the tables caught in a foreign-key cycle (loaded in name order).
/// `edges` are (child, parent) table pairs from the catalog; `files` are sorted by name.
pub(crate) fn order(
    files: Vec<SeedFile>,
    edges: &[(String, String)],
) -> (Vec<SeedFile>, Vec<String>) {
    let mut out = Vec::with_capacity(files.len());
    let mut cyclic = BTreeSet::new();
    let mut segment: Vec<SeedFile> = Vec::new();
    for file in files {
        if file.kind == Kind::Sql {
            order_segment(std::mem::take(&mut segment), edges, &mut out, &mut cyclic);
            out.push(file);
        } else {
            segment.push(file);
        }
    }
    order_segment(segment, edges, &mut out, &mut cyclic);
    (out, cyclic.into_iter().collect())
}

/// Kahn's algorithm over the CSV files of one segment; the ready file with the smallest name goes
/// first. A file waits for every earlier-named file of the same table, and for every file whose
/// table its own table references (self-references are left to the rows' order in the file).
fn order_segment(
    files: Vec<SeedFile>,
    edges: &[(String, String)],
    out: &mut Vec<SeedFile>,
    cyclic: &mut BTreeSet<String>,
) {
    let n = files.len();
    let keys: Vec<String> = files
        .iter()
        .map(|f| f.table.as_ref().map(|t| t.to_string()).unwrap_or_default())
        .collect();
    let table = |i: usize| keys[i].as_str();
    // waits_for[i] = the files that must load before file i.
    let waits_for: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| {
                    if j == i {
                        return false;
                    }
                    if table(j) == table(i) {
                        return j < i;
                    }
                    edges.iter().any(|(child, parent)| {
                        same_table(child, table(i))
                            && same_table(parent, table(j))
                            && !same_table(child, parent)
                    })
                })
                .collect()
        })
        .collect();
    let mut slots: Vec<Option<SeedFile>> = files.into_iter().map(Some).collect();
    let mut placed = vec![false; n];
    for _ in 0..n {
        let ready = (0..n).find(|&i| !placed[i] && waits_for[i].iter().all(|&j| placed[j]));
        let pick = ready.or_else(|| {
            // A cycle: take the first remaining file by name and say which tables are involved.
            let i = (0..n).find(|&i| !placed[i])?;
            cyclic.insert(table_of(&slots, i));
            for &j in waits_for[i].iter().filter(|&&j| !placed[j]) {
                cyclic.insert(table_of(&slots, j));
            }
            Some(i)
        });
        if let Some(i) = pick {
            placed[i] = true;
            if let Some(file) = slots[i].take() {
                out.push(file);
            }
        }
    }
}

fn table_of(slots: &[Option<SeedFile>], i: usize) -> String {
    slots[i]
        .as_ref()
        .and_then(|f| f.table.as_ref())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Catalog names and file stems are compared as SQL would for an unquoted name: PostgreSQL folds
/// to lower case, SQLite ignores case.
fn same_table(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(name: &str) -> SeedFile {
        seed_file(PathBuf::from(name), Kind::Csv)
    }

    fn names(files: &[SeedFile]) -> Vec<&str> {
        files.iter().map(|f| f.name.as_str()).collect()
    }

    fn edge(c: &str, p: &str) -> (String, String) {
        (c.to_string(), p.to_string())
    }

    #[test]
    fn numeric_prefixes_only_order() {
        assert_eq!(table_for("010_users"), "users");
        assert_eq!(table_for("2-posts"), "posts");
        assert_eq!(table_for("users"), "users");
        assert_eq!(table_for("2024"), "2024");
        assert_eq!(table_for("1_"), "1_");
        assert_eq!(table_for("v2_users"), "v2_users");
    }

    #[test]
    fn parents_load_before_children_whatever_the_names() {
        let files = vec![csv("comments.csv"), csv("posts.csv"), csv("users.csv")];
        let edges = [
            edge("posts", "users"),
            edge("comments", "posts"),
            edge("comments", "users"),
        ];
        let (ordered, cyclic) = order(files, &edges);
        assert_eq!(names(&ordered), ["users.csv", "posts.csv", "comments.csv"]);
        assert!(cyclic.is_empty());
    }

    #[test]
    fn sql_files_are_barriers_and_ties_go_by_name() {
        let files = vec![
            csv("b.csv"),
            csv("a.csv"),
            seed_file(PathBuf::from("m.sql"), Kind::Sql),
            csv("z.csv"),
        ];
        let mut files = files;
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let (ordered, _) = order(files, &[]);
        assert_eq!(names(&ordered), ["a.csv", "b.csv", "m.sql", "z.csv"]);
    }

    #[test]
    fn cycles_fall_back_to_names_and_are_reported() {
        let files = vec![csv("a.csv"), csv("b.csv"), csv("c.csv")];
        let edges = [edge("a", "b"), edge("b", "a"), edge("c", "c")];
        let (ordered, cyclic) = order(files, &edges);
        // c only references itself, so it is ready first; a and b wait for each other.
        assert_eq!(names(&ordered), ["c.csv", "a.csv", "b.csv"]);
        assert_eq!(cyclic, ["a", "b"]);
    }

    fn rel(schema: &str, name: &str, visible: bool) -> Relation {
        Relation {
            schema: Some(schema.to_string()),
            name: name.to_string(),
            visible,
        }
    }

    fn target(wanted: &str, relations: &[Relation]) -> Result<Option<String>, usize> {
        let mut files = vec![csv(&format!("{wanted}.csv"))];
        match resolve_tables(&mut files, relations) {
            Ok(_) => Ok(files[0].table.as_ref().map(|t| t.quoted())),
            Err(_) => Err(resolve(wanted, relations).err().map_or(0, |v| v.len())),
        }
    }

    #[test]
    fn file_names_resolve_exactly_then_ignoring_case_then_with_a_schema() {
        let catalog = [
            rel("public", "users", true),
            rel("public", "Users", true),
            rel("public", "lower_t", true),
            rel("app", "users", false),
            rel("app", "Posts", false),
            rel("my.schema", "t.x", false),
        ];
        let ok = |s: &str| Ok(Some(s.to_string()));
        assert_eq!(target("users", &catalog), ok("\"users\""));
        assert_eq!(target("Users", &catalog), ok("\"Users\""));
        assert_eq!(target("USERS", &catalog), Err(2));
        assert_eq!(target("Lower_T", &catalog), ok("\"lower_t\""));
        assert_eq!(target("app.users", &catalog), ok("\"app\".\"users\""));
        assert_eq!(target("APP.posts", &catalog), ok("\"app\".\"Posts\""));
        assert_eq!(target("public.lower_t", &catalog), ok("\"lower_t\""));
        assert_eq!(
            target("my.schema.t.x", &catalog),
            ok("\"my.schema\".\"t.x\"")
        );
        // No match: the name stays as the file gives it, to fail as a missing table.
        assert_eq!(target("ghosts", &catalog), ok("\"ghosts\""));
        assert_eq!(target("010_users", &catalog), ok("\"users\""));
    }
}
