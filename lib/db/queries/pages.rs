//! The queries of the operators' web view: runs filtered, sorted, counted
//! and paginated, failed components across runs, and the counts per label
//! and stage over an interval. Each filters, counts and pages in SQL, so a
//! page reads what it shows and no more at a million components. Written
//! once for every backend (see [`super`]).

use chrono::NaiveDateTime;
use diesel::dsl::count_star;
use diesel::prelude::*;

use super::TallyStore;
use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::*;
use crate::db::schema::*;
use crate::state::{ComponentState, ItemState, RunState};

/// The order of the runs list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunSort {
    /// Newest first (highest remote_id).
    #[default]
    Newest,
    /// Oldest first.
    Oldest,
    /// Longest in its state first.
    LongestInState,
    /// Most recently changed first.
    Updated,
}

/// Which runs the list shows, in which order, which page.
#[derive(Debug, Clone, Default)]
pub struct RunPage {
    /// Any of these states (none: every state).
    pub states: Vec<RunState>,
    pub label: Option<String>,
    pub stage: Option<String>,
    /// The target column; `Some("")` for runs that name none.
    pub target: Option<String>,
    /// Some(true): only runs with a fault; Some(false): only without.
    pub fault: Option<bool>,
    /// Some(true): only runs held back from `--next`.
    pub held: Option<bool>,
    /// Only runs in their state since before this.
    pub in_state_before: Option<NaiveDateTime>,
    /// A remote_id or a job_id.
    pub search: Option<String>,
    pub sort: RunSort,
    pub offset: i64,
    pub limit: i64,
}

/// Failed components per fault and exit status.
#[derive(Debug, Clone, Queryable)]
pub struct FailureGroup {
    pub fault: i32,
    pub exit_status: Option<i32>,
    pub components: i64,
}

/// Work items a run brought back per label, done or given up, since a
/// time: the pace the ETA is reckoned from.
#[derive(Debug, Clone, Queryable)]
pub struct Pace {
    pub label: String,
    pub items: i64,
}

/// The runs a [`RunPage`] selects, unordered and unpaged, as a boxed query.
macro_rules! run_page {
    ($p:expr) => {{
        let p: &RunPage = $p;
        let mut q = remote_runs::table.into_boxed();
        if !p.states.is_empty() {
            q = q.filter(remote_runs::state.eq_any(p.states.clone()));
        }
        if let Some(l) = &p.label {
            q = q.filter(remote_runs::label.eq(l.clone()));
        }
        if let Some(s) = &p.stage {
            q = q.filter(remote_runs::stage.eq(s.clone()));
        }
        match p.target.as_deref() {
            Some("") => q = q.filter(remote_runs::target.is_null()),
            Some(t) => q = q.filter(remote_runs::target.eq(t.to_string())),
            None => {}
        }
        match p.fault {
            Some(true) => q = q.filter(remote_runs::fault.ne(0)),
            Some(false) => q = q.filter(remote_runs::fault.eq(0)),
            None => {}
        }
        match p.held {
            Some(true) => q = q.filter(remote_runs::held_until.is_not_null()),
            Some(false) => q = q.filter(remote_runs::held_until.is_null()),
            None => {}
        }
        if let Some(t) = p.in_state_before {
            q = q.filter(remote_runs::state_since.lt(t));
        }
        if let Some(s) = p.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            match s.parse::<i64>() {
                Ok(id) => {
                    q = q.filter(
                        remote_runs::remote_id
                            .eq(id)
                            .or(remote_runs::job_id.eq(s.to_string())),
                    )
                }
                Err(_) => q = q.filter(remote_runs::job_id.eq(s.to_string())),
            }
        }
        q
    }};
}

/// One transfer to or from a front end, as xfer recorded it.
#[derive(Debug, Clone, Queryable)]
pub struct Transfer {
    pub host: String,
    pub direction: String,
    pub bytes: i64,
    pub seconds: f64,
    pub at: NaiveDateTime,
}

/// The runs of a label, as a subquery: a run's components are work items
/// of its label, and filtering by run keeps the failures' queries on the
/// index `remote_components_failures` alone.
macro_rules! runs_of {
    ($label:expr) => {
        remote_runs::table
            .filter(remote_runs::label.eq($label.to_string()))
            .select(remote_runs::remote_id)
    };
}

pub trait PageStore {
    /// One page of the runs a [`RunPage`] selects, in its order.
    fn runs_page(&mut self, p: &RunPage) -> QueryResult<Vec<Run>>;
    /// How many runs it selects in all.
    fn count_runs_page(&mut self, p: &RunPage) -> QueryResult<i64>;
    /// Failed components (of runs of `label`, when given) updated since
    /// `since`, newest first: one page, with their work items.
    fn failed_page(
        &mut self,
        since: Option<NaiveDateTime>,
        label: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> QueryResult<Vec<(Component, WorkItem)>>;
    /// The same failed components, counted per fault and exit status.
    fn failure_groups(
        &mut self,
        since: Option<NaiveDateTime>,
        label: Option<&str>,
    ) -> QueryResult<Vec<FailureGroup>>;
    /// Failed component attempts per label and stage, updated since
    /// `since` (all with None): what `status` counts as failed.
    fn failed_per_stage(&mut self, since: Option<NaiveDateTime>) -> QueryResult<Vec<StageCount>>;
    /// Work items per label, stage and state changed since `since`.
    fn item_groups_since(&mut self, since: NaiveDateTime) -> QueryResult<Vec<ItemGroup>>;
    /// Runs per label, stage and state changed since `since`.
    fn run_groups_since(&mut self, since: NaiveDateTime) -> QueryResult<Vec<RunGroup>>;
    /// Work items finished (done or abandoned) per label since `since`,
    /// from the results applied since then.
    fn pace_since(&mut self, since: NaiveDateTime) -> QueryResult<Vec<Pace>>;
    /// Results applied per hour since `since` (from `result_hours`), by
    /// hour.
    fn applied_per_hour(&mut self, since: NaiveDateTime) -> QueryResult<Vec<(NaiveDateTime, i64)>>;
    /// The newest `limit` transfers since `since`, newest first.
    fn transfers_since(&mut self, since: NaiveDateTime, limit: i64) -> QueryResult<Vec<Transfer>>;
}

macro_rules! impl_page_store {
    ($conn:ty) => {
        impl PageStore for $conn {
            fn runs_page(&mut self, p: &RunPage) -> QueryResult<Vec<Run>> {
                let q = run_page!(p);
                let q = match p.sort {
                    RunSort::Newest => q.order(remote_runs::remote_id.desc()),
                    RunSort::Oldest => q.order(remote_runs::remote_id.asc()),
                    RunSort::LongestInState => {
                        q.order((remote_runs::state_since.asc(), remote_runs::remote_id.asc()))
                    }
                    RunSort::Updated => q.order((
                        remote_runs::updated_at.desc(),
                        remote_runs::remote_id.desc(),
                    )),
                };
                q.offset(p.offset.max(0))
                    .limit(p.limit.max(0))
                    .select(Run::as_select())
                    .load(self)
            }

            fn count_runs_page(&mut self, p: &RunPage) -> QueryResult<i64> {
                run_page!(p).select(count_star()).first(self)
            }

            fn failed_page(
                &mut self,
                since: Option<NaiveDateTime>,
                label: Option<&str>,
                offset: i64,
                limit: i64,
            ) -> QueryResult<Vec<(Component, WorkItem)>> {
                let mut q = remote_components::table
                    .inner_join(work_items::table)
                    .filter(remote_components::state.eq(ComponentState::Failed))
                    .into_boxed();
                if let Some(t) = since {
                    q = q.filter(remote_components::updated_at.ge(t));
                }
                if let Some(l) = label {
                    q = q.filter(remote_components::remote_id.eq_any(runs_of!(l)));
                }
                q.order(remote_components::id.desc())
                    .offset(offset.max(0))
                    .limit(limit.max(0))
                    .select((Component::as_select(), WorkItem::as_select()))
                    .load(self)
            }

            fn failure_groups(
                &mut self,
                since: Option<NaiveDateTime>,
                label: Option<&str>,
            ) -> QueryResult<Vec<FailureGroup>> {
                let mut q = remote_components::table
                    .filter(remote_components::state.eq(ComponentState::Failed))
                    .group_by((remote_components::fault, remote_components::exit_status))
                    .select((
                        remote_components::fault,
                        remote_components::exit_status,
                        count_star(),
                    ))
                    .order((remote_components::fault, remote_components::exit_status))
                    .into_boxed();
                if let Some(t) = since {
                    q = q.filter(remote_components::updated_at.ge(t));
                }
                if let Some(l) = label {
                    q = q.filter(remote_components::remote_id.eq_any(runs_of!(l)));
                }
                q.load(self)
            }

            fn failed_per_stage(
                &mut self,
                since: Option<NaiveDateTime>,
            ) -> QueryResult<Vec<StageCount>> {
                let Some(t) = since else {
                    return Ok(self
                        .report_groups_tallied(None, None)?
                        .into_iter()
                        .filter(|g| g.state == ComponentState::Failed)
                        .map(|g| StageCount {
                            label: g.label,
                            stage: g.stage,
                            items: g.components,
                        })
                        .collect());
                };
                // A run's components are work items of its label and stage.
                remote_components::table
                    .inner_join(remote_runs::table)
                    .filter(remote_components::state.eq(ComponentState::Failed))
                    .filter(remote_components::updated_at.ge(t))
                    .group_by((remote_runs::label, remote_runs::stage))
                    .select((remote_runs::label, remote_runs::stage, count_star()))
                    .order((remote_runs::label, remote_runs::stage))
                    .load(self)
            }

            fn item_groups_since(&mut self, since: NaiveDateTime) -> QueryResult<Vec<ItemGroup>> {
                work_items::table
                    .filter(work_items::updated_at.ge(since))
                    .group_by((work_items::label, work_items::stage, work_items::state))
                    .select((
                        work_items::label,
                        work_items::stage,
                        work_items::state,
                        count_star(),
                    ))
                    .order((work_items::label, work_items::stage, work_items::state))
                    .load(self)
            }

            fn run_groups_since(&mut self, since: NaiveDateTime) -> QueryResult<Vec<RunGroup>> {
                remote_runs::table
                    .filter(remote_runs::updated_at.ge(since))
                    .group_by((remote_runs::label, remote_runs::stage, remote_runs::state))
                    .select((
                        remote_runs::label,
                        remote_runs::stage,
                        remote_runs::state,
                        count_star(),
                    ))
                    .order((remote_runs::label, remote_runs::stage, remote_runs::state))
                    .load(self)
            }

            fn pace_since(&mut self, since: NaiveDateTime) -> QueryResult<Vec<Pace>> {
                // A result's run has its work item's label: the run
                // (one of a few thousand) gives it, not the work item.
                results::table
                    .inner_join(
                        remote_runs::table.on(remote_runs::remote_id.eq(results::remote_id)),
                    )
                    .filter(results::applied_at.ge(since))
                    .filter(results::state.eq_any([ItemState::Done, ItemState::Abandoned]))
                    .group_by(remote_runs::label)
                    .select((remote_runs::label, count_star()))
                    .order(remote_runs::label)
                    .load(self)
            }

            fn applied_per_hour(
                &mut self,
                since: NaiveDateTime,
            ) -> QueryResult<Vec<(NaiveDateTime, i64)>> {
                let rows: Vec<(NaiveDateTime, i64)> = result_hours::table
                    .filter(result_hours::hour.ge(since))
                    .order(result_hours::hour)
                    .select((result_hours::hour, result_hours::results))
                    .load(self)?;
                let mut out: Vec<(NaiveDateTime, i64)> = Vec::new();
                for (hour, n) in rows {
                    match out.last_mut() {
                        Some(last) if last.0 == hour => last.1 += n,
                        _ => out.push((hour, n)),
                    }
                }
                Ok(out)
            }

            fn transfers_since(
                &mut self,
                since: NaiveDateTime,
                limit: i64,
            ) -> QueryResult<Vec<Transfer>> {
                transfer_rates::table
                    .filter(transfer_rates::at.ge(since))
                    .order(transfer_rates::at.desc())
                    .limit(limit)
                    .select((
                        transfer_rates::host,
                        transfer_rates::direction,
                        transfer_rates::bytes,
                        transfer_rates::seconds,
                        transfer_rates::at,
                    ))
                    .load(self)
            }
        }
    };
}

impl_page_store!(SqliteConnection);
impl_page_store!(PgConnection);
impl_page_store!(MysqlConnection);
