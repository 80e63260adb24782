//! The schema of a database: one backend-neutral model and everything dbctl does with it.
//!
//! - `model.rs`: the model itself (tables, columns, keys, indexes, triggers, comments, views,
//!   enums, sequences, composite types, domains, functions, extensions), the JSON of
//!   `inspect --format json`.
//! - `read/`: filling the model from a live catalog, one file per backend behind one dispatch.
//! - `diff.rs`: comparing two models (`inspect --diff`); `lint.rs`: review rules (`inspect --lint`).
//! - `render/`: turning a model into text for people and tools (tables, Mermaid, Graphviz); a new
//!   output form is one more file there.
//! - `diesel_rs/`: diesel's `schema.rs` (`print-schema`), with its own catalog reads, because
//!   diesel's facts (its type names, its table and key order) are not the model's.
//!
//! `commands::inspect` chooses what to read and show; nothing here parses arguments or prints.

pub(crate) mod diesel_rs;
pub(crate) mod diff;
pub(crate) mod lint;
mod model;
pub(crate) mod read;
pub(crate) mod render;

pub(crate) use model::*;
