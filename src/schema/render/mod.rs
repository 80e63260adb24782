//! Renderers: a [`Schema`](super::Schema) turned into text. `human.rs` draws tables for people,
//! `diagram.rs` Mermaid and Graphviz diagrams; the JSON form is the model's own serde. Each
//! renderer takes the model as it is and returns a `String`; none reads the database or prints.

pub(crate) mod diagram;
pub(crate) mod human;
