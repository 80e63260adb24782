//! dbctl's integration tests: one crate (one binary to link), one module per subcommand. Every
//! test drives the real `dbctl` binary against a real SQLite file or PostgreSQL database.

mod support;

mod adversary;
mod autogen;
mod connection;
mod corpus;
mod diesel_cli;
mod diesel_harness;
mod floor;
mod hostile;
mod init;
mod inspect;
mod interface;
mod migrate;
mod ping;
mod print_schema;
mod reliability;
mod revision;
mod seed;
mod seed_csv;
mod seed_failures;
mod seed_names;
mod settings;
mod topology;
mod transactions;
mod urls;
