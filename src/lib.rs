//! scalectl: one topology file -> rendered configs, plans, deploys and diagnoses of a scaled service.
//!
//! The library holds everything; `src/main.rs` only parses arguments and maps errors to exit codes.
//! See ARCHITECTURE.md for the map and the invariants.

pub mod cli;
pub mod doctor;
pub mod exec;
pub mod plan;
pub mod render;
pub mod deploy;
pub mod topology;
