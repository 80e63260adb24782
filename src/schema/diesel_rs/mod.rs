//! diesel's `schema.rs` (`table!`, `joinable!`, `allow_tables_to_appear_in_same_query!` and the
//! `sql_types` module), byte for byte as `diesel print-schema` 2.3 prints it for the same database
//! and diesel.toml: the engine behind `dbctl print-schema` (`commands::print_schema`, which also
//! writes and checks the files). It owns its own catalog reads (diesel's facts differ from
//! `inspect`'s: type names as diesel maps them, diesel's table and key order), diesel.toml's
//! `[print_schema]` sections, the rendering, the `patch_file` step and the unified diff text.

mod diff;
mod infer;
mod model;
mod names;
mod pg;
mod render;
mod settings;
mod sqlite;

pub(crate) use diff::unified as unified_diff;
pub(crate) use infer::generate;
pub(crate) use infer::{read_patch, schema_on_sqlite};
pub(crate) use settings::{
    read as read_settings, Docs, Filter, Grouping, Section, SQL_TYPE_DERIVE,
};
