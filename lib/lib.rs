//! offload: bundle local pipeline work items into a few big batch jobs on a
//! remote HPC centre reached over SSH, and drive them to the end.
//!
//! Imports run one way, never back up (`tests/layers.rs` checks it, that
//! no two modules import each other however indirectly, and that no two
//! files of a module's folder do, its `mod.rs` aside):
//!
//! binaries (`bins/`, each only parses and dispatches)
//! -> **tools**, one module each, named after it, never importing another
//! tool: `remotetool` (the database tool, a folder of its commands),
//! `prepare`, `exec`, `poll`, `xfer`
//! -> **shared services**: `cli` (what every tool starts with: the command
//! line, the session, errors to exit statuses), `scheduler` (the remote
//! site: its jobs and its files, one implementation per kind of site),
//! `transfer` (the bundled parallel transfer engine), `masters` (the
//! operators' masters), `workers` (tool processes at work), `runs` (runs'
//! lifecycle, claims and leases, their folders), `workitems` (the local
//! pipeline's items), `pipeline` (the result lines the pipeline receives,
//! its apply command), `chain` (chained stages: a finished group's next
//! work item, groups blocked)
//! -> **foundations**: `db` (schema, models, queries, migrations per
//! backend), `config`, `target` (a remote target's settings and path
//! rules), `host` (this machine's name and its live processes), `recipe`
//! (stage recipes), `record` (a component's result
//! record), `scripts` (the remote-side scripts prepare writes), `alloc`
//! (the allocation formula), `ssh` (hosts and their masters), `shell`
//! (quoting), `state` (every state, policy and fault number), `exit` (exit
//! statuses), `printer` (stdout for data, stderr for the rest), `table`,
//! `legacy` (the original single-dash command lines).

pub mod alloc;
pub mod chain;
pub mod cli;
pub mod config;
pub mod db;
pub mod exec;
pub mod exit;
pub mod host;
pub mod legacy;
pub mod masters;
pub mod pipeline;
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
