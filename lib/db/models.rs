//! Rows as Rust structs: what is read (`Queryable`) and what is written
//! (`Insertable`).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::schema::*;
use crate::state::{ComponentState, ItemState, JobPolicy, RunState};

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = work_items)]
pub struct WorkItem {
    pub id: i64,
    pub stage: String,
    pub stage_id: i64,
    pub label: String,
    pub priority: i32,
    pub params: String,
    pub state: ItemState,
    pub attempts: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = work_items)]
pub struct NewWorkItem {
    pub stage: String,
    pub stage_id: i64,
    pub label: String,
    pub priority: i32,
    pub params: String,
    pub state: ItemState,
    pub attempts: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Serialize)]
#[diesel(table_name = remote_runs)]
pub struct Run {
    pub remote_id: i64,
    pub state: RunState,
    pub stage: String,
    pub label: String,
    pub path_base: String,
    pub target: Option<String>,
    pub job_id: Option<String>,
    pub last_poll: Option<NaiveDateTime>,
    pub fault: i32,
    pub message: Option<String>,
    pub job_policy: JobPolicy,
    pub attempt: i32,
    pub auth_return_state: Option<RunState>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// When the run entered its current state.
    pub state_since: NaiveDateTime,
    /// `--next` leaves the run alone until then (a fault's back-off, or
    /// [`held_for_a_person`] until a person acts); None: not held.
    pub held_until: Option<NaiveDateTime>,
    /// Faults recorded in a row (the back-off grows with it).
    pub fault_count: i32,
    /// Polls in a row that failed (not the job: the poll itself).
    pub poll_failures: i32,
    /// Since when the polls fail.
    pub poll_failed_since: Option<NaiveDateTime>,
    /// The last failed poll's error.
    pub poll_error: Option<String>,
    /// Its results are recorded; its recipe's apply command has yet to
    /// succeed before it leaves `run`.
    pub apply_pending: bool,
}

/// `held_until` of a run held until a person acts.
pub fn held_for_a_person() -> NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a valid date")
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = remote_runs)]
pub struct NewRun<'a> {
    pub state: RunState,
    pub stage: &'a str,
    pub label: &'a str,
    pub path_base: &'a str,
    pub target: Option<&'a str>,
    pub job_policy: JobPolicy,
    pub attempt: i32,
    pub fault: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub state_since: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = remote_components)]
pub struct Component {
    pub id: i64,
    pub remote_id: i64,
    pub work_item_id: i64,
    pub state: ComponentState,
    pub active: bool,
    pub attempts: i32,
    pub exit_status: Option<i32>,
    pub runtime: Option<f64>,
    pub fault: i32,
    pub result: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = history)]
pub struct History {
    pub id: i64,
    pub remote_id: Option<i64>,
    pub at: NaiveDateTime,
    pub host: String,
    pub pid: i32,
    pub tool: String,
    pub from_state: Option<RunState>,
    pub to_state: Option<RunState>,
    pub message: Option<String>,
    pub command: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = history)]
pub struct NewHistory {
    pub remote_id: Option<i64>,
    pub at: NaiveDateTime,
    pub host: String,
    pub pid: i32,
    pub tool: String,
    pub from_state: Option<RunState>,
    pub to_state: Option<RunState>,
    pub message: Option<String>,
    pub command: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, Serialize)]
#[diesel(table_name = control, treat_none_as_null = true)]
pub struct Control {
    pub tool: String,
    pub paused: bool,
    pub reason: Option<String>,
    pub changed_at: NaiveDateTime,
    pub changed_by: String,
}

/// What a state change writes besides the state itself.
#[derive(Debug, Clone, Default)]
pub struct RunUpdate {
    pub auth_return_state: Option<Option<RunState>>,
    pub last_poll: Option<NaiveDateTime>,
    pub fault: Option<i32>,
    pub message: Option<Option<String>>,
}

/// Filters of `remotetool list`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub states: Vec<RunState>,
    pub label: Option<String>,
    pub stage: Option<String>,
    pub remote_id: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = leases)]
pub struct Lease {
    pub remote_id: i64,
    pub tool: String,
    pub host: String,
    pub pid: i32,
    pub acquired_at: NaiveDateTime,
    pub heartbeat_at: NaiveDateTime,
}

/// A run's component with what a recipe needs of its work item.
#[derive(Debug, Clone, Queryable)]
pub struct ComponentItem {
    pub component_id: i64,
    pub work_item_id: i64,
    pub stage: String,
    pub stage_id: i64,
    pub label: String,
    pub params: String,
}

/// A tool process at work.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = processes)]
pub struct Process {
    pub id: i64,
    pub tool: String,
    pub host: String,
    pub pid: i32,
    pub started_at: NaiveDateTime,
    pub heartbeat_at: NaiveDateTime,
    pub command: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = processes)]
pub struct NewProcess {
    pub tool: String,
    pub host: String,
    pub pid: i32,
    pub started_at: NaiveDateTime,
    pub heartbeat_at: NaiveDateTime,
    pub command: Option<String>,
}

/// One measured transfer.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = transfer_rates)]
pub struct NewRate {
    pub host: String,
    pub direction: String,
    pub bytes: i64,
    pub seconds: f64,
    pub at: NaiveDateTime,
}

/// One applied component attempt, as it is recorded for the consumers.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = results)]
pub struct NewResult {
    pub component_id: i64,
    pub remote_id: i64,
    pub work_item_id: i64,
    pub attempt: i32,
    /// What its work item became: done, failed or abandoned.
    pub state: ItemState,
    /// JSON: the outputs brought back, `[{"name", "path", "size"}]`.
    pub outputs: String,
    pub applied_at: NaiveDateTime,
}

/// A result with its work item and component, as `remotetool results`
/// reads it.
#[derive(Debug, Clone, Queryable)]
pub struct ResultRow {
    pub seq: i64,
    pub remote_id: i64,
    pub attempt: i32,
    pub state: ItemState,
    pub outputs: String,
    pub applied_at: NaiveDateTime,
    pub stage: String,
    pub stage_id: i64,
    pub label: String,
    pub params: String,
    pub component_id: i64,
    pub exit_status: Option<i32>,
    pub runtime: Option<f64>,
    pub result: Option<String>,
}

/// A named consumer of results: its cursor and who holds it.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = consumers)]
pub struct Consumer {
    pub name: String,
    pub cursor: i64,
    pub holder_host: Option<String>,
    pub holder_pid: Option<i32>,
    pub heartbeat_at: Option<NaiveDateTime>,
    pub updated_at: NaiveDateTime,
}

/// One batch job a run had: what accounting says it used, or the estimate
/// where the site keeps none (`source`: the accounting command, "sacct" or "qacct", or "estimate").
#[derive(Debug, Clone, PartialEq, Queryable, Insertable)]
#[diesel(table_name = remote_jobs)]
pub struct JobRecord {
    pub remote_id: i64,
    pub job_id: String,
    pub attempt: i32,
    pub source: String,
    /// The scheduler's final state, where accounting knows it.
    pub final_state: Option<String>,
    /// Wall time from start to end.
    pub elapsed_s: Option<i64>,
    /// CPUs the job held (its core-seconds are elapsed x these).
    pub alloc_cpus: Option<i64>,
    /// CPU time its processes used (user + system).
    pub cpu_s: Option<f64>,
    /// Nodes it held, and nodes it asked for.
    pub nodes: Option<i64>,
    pub req_nodes: Option<i64>,
    /// The wall time it asked for.
    pub timelimit_s: Option<i64>,
    pub recorded_at: NaiveDateTime,
}

/// How many runs of a label and stage are in a state.
#[derive(Debug, Clone, Queryable)]
pub struct RunGroup {
    pub label: String,
    pub stage: String,
    pub state: RunState,
    pub runs: i64,
}

/// How many work items of a label and stage are in a state.
#[derive(Debug, Clone, Queryable)]
pub struct ItemGroup {
    pub label: String,
    pub stage: String,
    pub state: ItemState,
    pub items: i64,
}

/// How many work items of a label and stage (in a run, or abandoned: as the
/// query says).
#[derive(Debug, Clone, Queryable)]
pub struct StageCount {
    pub label: String,
    pub stage: String,
    pub items: i64,
}

/// How many of a run's components are in a state.
#[derive(Debug, Clone, Queryable)]
pub struct ComponentCount {
    pub remote_id: i64,
    pub state: ComponentState,
    pub components: i64,
}

/// Components of a label and stage in a state, and their summed runtime.
#[derive(Debug, Clone, Queryable)]
pub struct ReportGroup {
    pub label: String,
    pub stage: String,
    pub state: ComponentState,
    pub components: i64,
    /// Seconds, summed over those that came back with one.
    pub runtime_s: Option<f64>,
}

/// One active component of a run, with what poll needs of its work item.
#[derive(Debug, Clone, Queryable)]
pub struct Member {
    pub component_id: i64,
    pub work_item_id: i64,
    pub stage_id: i64,
    /// The work item's attempts so far.
    pub attempts: i32,
}
