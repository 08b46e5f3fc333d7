//! `remotetool status`: one screen that answers "is everything moving?".
//! Runs per label, stage and state; work items waiting, in runs, done,
//! failed and abandoned; the oldest run in each open state; runs that need a
//! person; the masters and their expected expiry; paused tools; who holds
//! which run. The model ([`Status`]) is gathered by reading only
//! ([`gather`], a function per section) and rendered as text ([`render`])
//! or JSON.

mod gather;
mod render;

pub use gather::gather;
pub use render::render;

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::Serialize;

use super::args::StatusArgs;
use crate::cli::Session;
use crate::db::models::Control;
use crate::exit::ExitStatus;
use crate::masters::Master;
use crate::state::RunState;

pub fn run(s: &mut Session, a: StatusArgs) -> anyhow::Result<ExitStatus> {
    let st = gather(&mut s.db, &s.config, &a)?;
    let width = s.printer.width();
    s.printer.model(&st, |st| render(st, width))?;
    Ok(ExitStatus::Success)
}

#[derive(Debug, Serialize, Default)]
pub struct Group {
    pub label: String,
    pub stage: String,
    /// Runs by state (every state, zeros included).
    pub runs: BTreeMap<String, i64>,
    /// Work items ready and in no run.
    pub waiting: i64,
    /// Work items in an open run.
    pub in_runs: i64,
    pub done: i64,
    /// Failed component attempts (a work item may have failed more than once).
    pub failed: i64,
    /// Work items given up after their last attempt failed.
    pub abandoned: i64,
}

#[derive(Debug, Serialize)]
pub struct Oldest {
    pub state: RunState,
    pub runs: i64,
    pub remote_id: i64,
    pub since: NaiveDateTime,
    pub seconds: i64,
}

#[derive(Debug, Serialize)]
pub struct Attention {
    pub remote_id: i64,
    pub state: RunState,
    pub label: String,
    pub stage: String,
    pub since: NaiveDateTime,
    pub seconds: i64,
    pub why: String,
}

/// A run's lease: the run and the process that holds it.
#[derive(Debug, Serialize)]
pub struct Holder {
    pub remote_id: i64,
    #[serde(flatten)]
    pub by: Worker,
}

/// A tool process at work, from the registry (or holding a lease).
#[derive(Debug, Serialize)]
pub struct Worker {
    pub tool: String,
    pub host: String,
    pub pid: i32,
    pub since: NaiveDateTime,
    pub heartbeat_seconds: i64,
    pub stale: bool,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub at: NaiveDateTime,
    /// No run needs a person and every master is alive.
    pub moving: bool,
    pub groups: Vec<Group>,
    pub oldest: Vec<Oldest>,
    pub attention: Vec<Attention>,
    /// Null with --no-masters.
    pub masters: Option<Vec<Master>>,
    pub paused: Vec<Control>,
    /// When an unfinished `remotetool refresh-auth` began.
    pub refresh_since: Option<NaiveDateTime>,
    pub holders: Vec<Holder>,
    /// exec, poll, prepare and xfer processes at work on any host.
    pub workers: Vec<Worker>,
    /// Runs `--next` leaves alone for now (present when there are any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// Groups of a chained stage (a recipe with `[next]`) that an abandoned
    /// work item keeps from feeding the next stage (present when there
    /// are any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<crate::chain::Blocked>,
}

/// A run held back from `--next`: after a fault, until a person acts; or
/// a while, after a throttle.
#[derive(Debug, Serialize)]
pub struct Held {
    pub remote_id: i64,
    pub state: RunState,
    pub label: String,
    pub stage: String,
    pub target: Option<String>,
    /// Null: until a person acts.
    pub until: Option<NaiveDateTime>,
    pub fault: i32,
    /// Faults (or throttles) in a row.
    pub in_a_row: i32,
    pub why: String,
    /// What ends the hold.
    pub remedy: String,
}
