//! offload: bundle local pipeline work items into a few big batch jobs on a
//! remote HPC centre reached over SSH, and drive them to the end.
//!
//! Each tool's logic lives in the module named after it (`remotetool`);
//! each concern in its own: `db` (schema, models, queries, migrations),
//! `state` (the run state machine), `runs` (run lifecycle), `workitems`
//! (the local pipeline's items), `config`, `exit` (exit statuses), `cli`,
//! `printer`, `legacy` (the original single-dash command lines), `auth` (the
//! operators' masters).

pub mod alloc;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod exec;
pub mod exit;
pub mod legacy;
pub mod poll;
pub mod prepare;
pub mod printer;
pub mod recipe;
pub mod record;
pub mod remotetool;
pub mod runs;
pub mod scheduler;
pub mod scripts;
pub mod shell;
pub mod ssh;
pub mod state;
pub mod table;
pub mod target;
pub mod transfer;
pub mod workers;
pub mod workitems;
pub mod xfer;
