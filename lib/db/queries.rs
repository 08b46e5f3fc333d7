//! Every query, written once and compiled for every backend: the [`Store`]
//! trait is implemented for `SqliteConnection`, `PgConnection` and
//! `MysqlConnection` by the same macro body. What the backends write
//! differently (row locks, RETURNING, upserts) is in small traits here;
//! backend-specific SQL lives in `db/mod.rs`, behind a `match`.

use super::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use chrono::NaiveDateTime;
use diesel::dsl::{count_star, exists, not};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamp};
use diesel::IntoSql;

use super::models::*;
use super::schema::*;
use super::Backend;

/// Rows written per INSERT: under SQLite's and PostgreSQL's bind limits.
const CHUNK: usize = 1000;

/// What a state change writes. `None` leaves a column as it is.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = remote_runs)]
pub struct RunChanges {
    pub state: String,
    pub updated_at: NaiveDateTime,
    pub auth_return_state: Option<Option<String>>,
    pub last_poll: Option<Option<NaiveDateTime>>,
    pub fault: Option<i32>,
    pub message: Option<Option<String>>,
    pub job_id: Option<Option<String>>,
    pub attempt: Option<i32>,
    pub state_since: Option<NaiveDateTime>,
    pub held_until: Option<Option<NaiveDateTime>>,
    pub fault_count: Option<i32>,
    pub poll_failures: Option<i32>,
    pub poll_failed_since: Option<Option<NaiveDateTime>>,
    pub poll_error: Option<Option<String>>,
    pub apply_pending: Option<bool>,
}

impl RunChanges {
    /// Set `state` (and the update time); every other column as it is.
    pub fn to(state: &str) -> RunChanges {
        RunChanges {
            state: state.to_string(),
            updated_at: super::now(),
            auth_return_state: None,
            last_poll: None,
            fault: None,
            message: None,
            job_id: None,
            attempt: None,
            state_since: None,
            held_until: None,
            fault_count: None,
            poll_failures: None,
            poll_failed_since: None,
            poll_error: None,
            apply_pending: None,
        }
    }
}

/// Which runs a claim may take: those in `state` with no live lease (none,
/// or a heartbeat not after `stale_before`), last polled before
/// `polled_before` (or never), not held after `now`, of the targets
/// `targets` allows.
#[derive(Debug, Clone)]
pub struct ClaimFilter {
    pub state: String,
    pub stale_before: NaiveDateTime,
    pub polled_before: Option<NaiveDateTime>,
    /// Runs held until after this are left alone.
    pub now: NaiveDateTime,
    pub targets: TargetScope,
}

/// The targets a claim may take runs of, as the `target` column holds
/// them (a run with none goes to the default target: "unnamed").
#[derive(Debug, Clone, Default)]
pub struct TargetScope {
    /// Runs naming one of these are not taken.
    pub skip: Vec<String>,
    /// Runs naming no target are not taken.
    pub skip_unnamed: bool,
    /// Only runs naming this target (and unnamed ones with `only_unnamed`).
    pub only: Option<String>,
    pub only_unnamed: bool,
}

impl TargetScope {
    /// Does the scope allow a run whose `target` column is `target`?
    pub fn allows(&self, target: Option<&str>) -> bool {
        match target {
            None => !self.skip_unnamed && (self.only.is_none() || self.only_unnamed),
            Some(t) => {
                !self.skip.iter().any(|s| s == t) && self.only.as_deref().is_none_or(|o| o == t)
            }
        }
    }
}

/// (label, stage, component state, count, summed runtime in seconds).
pub type ReportGroup = (String, String, String, i64, Option<f64>);

/// What applying a component's result writes.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = remote_components)]
pub struct ComponentChanges {
    pub state: String,
    pub active: bool,
    pub attempts: i32,
    pub exit_status: Option<i32>,
    pub runtime: Option<f64>,
    pub fault: i32,
    pub result: Option<String>,
    pub updated_at: NaiveDateTime,
}

/// The queries offload runs. Object safe, so tool code takes `&mut dyn Store`
/// inside [`super::Db::tx`] and never names a backend.
pub trait Store:
    super::results::ResultStore + super::chain::ChainStore + super::usage::UsageStore
{
    fn backend(&self) -> Backend;

    fn insert_work_items(&mut self, items: &[NewWorkItem]) -> QueryResult<usize>;
    /// (stage, stage_id) of every work item of these stages.
    fn existing_keys(&mut self, stages: &[String]) -> QueryResult<Vec<(String, i64)>>;
    fn count_items(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
        state: Option<&str>,
    ) -> QueryResult<i64>;
    /// Ready work items of a label and stage that are in no active run.
    fn count_free_items(&mut self, label: &str, stage: &str) -> QueryResult<i64>;
    fn distinct_labels(&mut self) -> QueryResult<Vec<String>>;
    fn distinct_stages(&mut self, label: &str) -> QueryResult<Vec<String>>;

    fn insert_run(&mut self, run: &NewRun<'_>) -> QueryResult<i64>;
    /// Attach the free ready items of label and stage (highest priority
    /// first, at most `limit`) to a run as its components. The unique index
    /// on active components refuses an item already in a run.
    fn claim_ready_items(
        &mut self,
        remote_id: i64,
        label: &str,
        stage: &str,
        limit: Option<i64>,
        now: NaiveDateTime,
    ) -> QueryResult<usize>;
    fn run(&mut self, remote_id: i64) -> QueryResult<Option<Run>>;
    fn runs(&mut self, filter: &RunFilter) -> QueryResult<Vec<Run>>;
    /// (remote_id, component state, count) for these runs.
    fn component_counts(&mut self, remote_ids: &[i64]) -> QueryResult<Vec<(i64, String, i64)>>;
    /// Change a run's state if it is still `from`; the number of rows changed.
    fn set_run_state(
        &mut self,
        remote_id: i64,
        from: &str,
        changes: &RunChanges,
    ) -> QueryResult<usize>;
    /// Release a closed run's components (they become inactive); with
    /// `done`, their work items are marked done first.
    fn close_components(
        &mut self,
        remote_id: i64,
        done: bool,
        now: NaiveDateTime,
    ) -> QueryResult<usize>;

    /// Up to `limit` active components of a run with their work items, by
    /// component id, those after component `after` (0: from the first).
    fn run_components_page(
        &mut self,
        remote_id: i64,
        after: i64,
        limit: i64,
    ) -> QueryResult<Vec<ComponentItem>>;
    /// How many active components a run has.
    fn run_component_count(&mut self, remote_id: i64) -> QueryResult<i64>;
    /// Runtimes (s) of the most recent finished components of a stage.
    fn stage_runtimes(&mut self, stage: &str, limit: i64) -> QueryResult<Vec<f64>>;
    /// Measured runtimes of a run's components that came back (from its
    /// earlier attempts).
    fn run_runtimes(&mut self, remote_id: i64) -> QueryResult<Vec<f64>>;

    /// The runs [`ClaimFilter`] allows, oldest first, at most `limit`.
    fn claimable_runs(&mut self, filter: &ClaimFilter, limit: i64) -> QueryResult<Vec<Run>>;
    /// (target column, runs) of the runs [`ClaimFilter`] allows.
    fn claimable_targets(
        &mut self,
        filter: &ClaimFilter,
    ) -> QueryResult<Vec<(Option<String>, i64)>>;
    /// Set a run's hold (`held_until`, `fault_count`), whatever its state.
    fn set_hold(
        &mut self,
        remote_id: i64,
        held_until: Option<NaiveDateTime>,
        fault_count: i32,
    ) -> QueryResult<usize>;
    /// Runs held back from `--next` (`held_until` set), in open states.
    fn held_runs(&mut self) -> QueryResult<Vec<Run>>;
    /// Apply a component's result.
    fn update_component(&mut self, id: i64, changes: &ComponentChanges) -> QueryResult<usize>;
    /// Set work items' state; `attempt` counts one more attempt for each.
    fn set_work_items(
        &mut self,
        ids: &[i64],
        state: &str,
        attempt: bool,
        now: NaiveDateTime,
    ) -> QueryResult<usize>;
    /// (label, stage, component state, count, summed runtime s) over all
    /// components, optionally of one label and stage.
    fn component_report(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<ReportGroup>>;
    /// (label, stage, count) of abandoned work items.
    fn abandoned_items(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<(String, String, i64)>>;
    /// (component id, work item id, work item attempts) of a run's active components.
    fn run_members(&mut self, remote_id: i64) -> QueryResult<Vec<(i64, i64, i64, i32)>>;
    fn lease(&mut self, remote_id: i64) -> QueryResult<Option<Lease>>;
    /// Insert a lease; the primary key refuses a second holder.
    fn insert_lease(&mut self, row: &Lease) -> QueryResult<()>;
    /// Remove a run's lease if held by host/pid, or if its heartbeat is not
    /// after `stale_before`.
    fn delete_lease(
        &mut self,
        remote_id: i64,
        holder: Option<(&str, i32)>,
        stale_before: Option<NaiveDateTime>,
    ) -> QueryResult<usize>;

    fn insert_history(&mut self, row: &NewHistory) -> QueryResult<()>;
    fn history(&mut self, remote_id: Option<i64>, limit: i64) -> QueryResult<Vec<History>>;

    fn set_control(&mut self, row: &Control) -> QueryResult<()>;
    fn controls(&mut self) -> QueryResult<Vec<Control>>;

    /// (label, stage, run state, runs, earliest state_since).
    fn run_groups(&mut self) -> QueryResult<Vec<RunGroup>>;
    /// (label, stage, work item state, count).
    fn item_groups(&mut self) -> QueryResult<Vec<(String, String, String, i64)>>;
    /// (label, stage, count) of work items in an active run.
    fn active_item_groups(&mut self) -> QueryResult<Vec<(String, String, i64)>>;
    fn all_leases(&mut self) -> QueryResult<Vec<Lease>>;
    /// One component and its work item.
    fn component(&mut self, id: i64) -> QueryResult<Option<(Component, WorkItem)>>;
    /// Every component a work item has had, oldest first.
    fn item_components(&mut self, work_item_id: i64) -> QueryResult<Vec<Component>>;
    /// A run's failed components with their work items, oldest first, at
    /// most `limit`.
    fn run_failed_components(
        &mut self,
        remote_id: i64,
        limit: i64,
    ) -> QueryResult<Vec<(Component, WorkItem)>>;
    /// The id of the run's component of the work item with this stage_id.
    fn run_component_id(&mut self, remote_id: i64, stage_id: i64) -> QueryResult<Option<i64>>;
    /// Is any component of the run still active?
    fn run_has_active(&mut self, remote_id: i64) -> QueryResult<bool>;
    fn insert_process(&mut self, row: &NewProcess) -> QueryResult<i64>;
    fn delete_process(&mut self, id: i64) -> QueryResult<usize>;
    fn processes(&mut self) -> QueryResult<Vec<Process>>;
    /// The heartbeat of host/pid's process rows and leases.
    fn heartbeat(&mut self, host: &str, pid: i32, now: NaiveDateTime) -> QueryResult<usize>;
    /// Remove every lease host/pid holds.
    fn delete_leases_of(&mut self, host: &str, pid: i32) -> QueryResult<usize>;
    fn insert_rate(&mut self, row: &NewRate) -> QueryResult<()>;
    /// (bytes, seconds) of the newest `limit` transfers to or from these hosts.
    fn rates(
        &mut self,
        hosts: &[String],
        direction: &str,
        limit: i64,
    ) -> QueryResult<Vec<(i64, f64)>>;
    /// Lock a run's row for this transaction without waiting: false when
    /// another transaction holds it (PostgreSQL `FOR UPDATE SKIP LOCKED`).
    /// On SQLite the transaction already holds the write lock: true.
    /// False too when the run has left `state`.
    fn lock_run(&mut self, remote_id: i64, state: &str) -> QueryResult<bool>;
    /// The oldest claimable run (as [`Store::claimable_runs`]), its row
    /// locked for this transaction; rows other claimers hold are skipped
    /// (PostgreSQL `FOR UPDATE SKIP LOCKED`; on SQLite the transaction
    /// holds the whole database).
    fn claim_oldest_locked(&mut self, filter: &ClaimFilter) -> QueryResult<Option<Run>>;
    /// A work item's state, if it is `from`, becomes `to` (attempts kept).
    fn reset_item(
        &mut self,
        id: i64,
        from: &str,
        to: &str,
        now: NaiveDateTime,
    ) -> QueryResult<usize>;
}

/// (label, stage, run state, runs).
pub type RunGroup = (String, String, String, i64);

/// The active component of the work item in the outer query, if any.
macro_rules! in_active_run {
    () => {
        remote_components::table
            .filter(remote_components::work_item_id.eq(work_items::id))
            .filter(remote_components::active.eq(true))
            .select(remote_components::id)
    };
}

/// Row locks differ: PostgreSQL and MySQL have `FOR UPDATE SKIP LOCKED`; an SQLite
/// write transaction holds the whole database.
trait RowLock {
    fn lock_run_row(&mut self, remote_id: i64, state: &str) -> QueryResult<bool>;
    fn oldest_locked(&mut self, filter: &ClaimFilter) -> QueryResult<Option<Run>>;
}

/// A run's active components joined with their work items, in id order.
macro_rules! active_components {
    ($remote_id:expr) => {
        remote_components::table
            .inner_join(work_items::table)
            .filter(remote_components::remote_id.eq($remote_id))
            .filter(remote_components::active.eq(true))
            .order(remote_components::id.asc())
    };
}

/// The runs a [`ClaimFilter`] allows: in its state, no live lease, polled
/// before its time (or never), not held, of a target its scope allows.
/// Unordered, no select: the callers add theirs.
macro_rules! claimable {
    ($filter:expr) => {{
        let f: &ClaimFilter = $filter;
        let live = leases::table
            .filter(leases::remote_id.eq(remote_runs::remote_id))
            .filter(leases::heartbeat_at.gt(f.stale_before))
            .select(leases::remote_id);
        let t = &f.targets;
        let unnamed_ok = t.allows(None);
        let any_named = t.only.is_none();
        remote_runs::table
            .filter(remote_runs::state.eq(f.state.clone()))
            .filter(not(exists(live)))
            .filter(
                remote_runs::last_poll
                    .is_null()
                    .or(f
                        .polled_before
                        .is_none()
                        .into_sql::<diesel::sql_types::Bool>())
                    .or(remote_runs::last_poll.le(f.polled_before.unwrap_or(f.now))),
            )
            .filter(
                remote_runs::held_until
                    .is_null()
                    .or(remote_runs::held_until.le(f.now)),
            )
            .filter(
                remote_runs::target
                    .is_null()
                    .and(unnamed_ok.into_sql::<diesel::sql_types::Bool>())
                    .or(remote_runs::target.ne_all(t.skip.clone()).and(
                        remote_runs::target
                            .eq(t.only.clone().unwrap_or_default())
                            .or(any_named.into_sql::<diesel::sql_types::Bool>()),
                    )),
            )
    }};
}

macro_rules! skip_locked_row_lock {
    ($conn:ty) => {
        impl RowLock for $conn {
            fn lock_run_row(&mut self, remote_id: i64, state: &str) -> QueryResult<bool> {
                // The state is checked again on the row as it is once locked.
                remote_runs::table
                    .find(remote_id)
                    .filter(remote_runs::state.eq(state))
                    .select(remote_runs::remote_id)
                    .for_update()
                    .skip_locked()
                    .first::<i64>(self)
                    .optional()
                    .map(|r| r.is_some())
            }

            fn oldest_locked(&mut self, filter: &ClaimFilter) -> QueryResult<Option<Run>> {
                claimable!(filter)
                    .order(remote_runs::remote_id.asc())
                    .select(Run::as_select())
                    .limit(1)
                    .for_update()
                    .skip_locked()
                    .first(self)
                    .optional()
            }
        }
    };
}

skip_locked_row_lock!(PgConnection);
skip_locked_row_lock!(MysqlConnection);

/// Writes MySQL spells differently: it has no RETURNING (the new id is
/// `LAST_INSERT_ID()`, per connection) and upserts with REPLACE.
trait Writes {
    fn insert_returning_id(&mut self, run: &NewRun<'_>) -> QueryResult<i64>;
    fn insert_process_returning_id(&mut self, row: &NewProcess) -> QueryResult<i64>;
    fn upsert_control(&mut self, row: &Control) -> QueryResult<()>;
    fn write_hold(
        &mut self,
        remote_id: i64,
        held_until: Option<NaiveDateTime>,
        fault_count: i32,
    ) -> QueryResult<usize>;
}

macro_rules! returning_writes {
    ($conn:ty) => {
        impl Writes for $conn {
            fn insert_returning_id(&mut self, run: &NewRun<'_>) -> QueryResult<i64> {
                diesel::insert_into(remote_runs::table)
                    .values(run)
                    .returning(remote_runs::remote_id)
                    .get_result(self)
            }

            fn insert_process_returning_id(&mut self, row: &NewProcess) -> QueryResult<i64> {
                diesel::insert_into(processes::table)
                    .values(row)
                    .returning(processes::id)
                    .get_result(self)
            }

            fn upsert_control(&mut self, row: &Control) -> QueryResult<()> {
                diesel::insert_into(control::table)
                    .values(row)
                    .on_conflict(control::tool)
                    .do_update()
                    .set(row)
                    .execute(self)
                    .map(|_| ())
            }

            fn write_hold(
                &mut self,
                remote_id: i64,
                held_until: Option<NaiveDateTime>,
                fault_count: i32,
            ) -> QueryResult<usize> {
                diesel::update(remote_runs::table.find(remote_id))
                    .set((
                        remote_runs::held_until.eq(held_until),
                        remote_runs::fault_count.eq(fault_count),
                    ))
                    .execute(self)
            }
        }
    };
}

returning_writes!(SqliteConnection);
returning_writes!(PgConnection);

/// The id the connection's last INSERT gave its AUTO_INCREMENT column.
fn mysql_last_insert_id(c: &mut MysqlConnection) -> QueryResult<i64> {
    diesel::select(diesel::dsl::sql::<BigInt>(
        "CAST(LAST_INSERT_ID() AS SIGNED)",
    ))
    .get_result(c)
}

impl Writes for MysqlConnection {
    fn insert_returning_id(&mut self, run: &NewRun<'_>) -> QueryResult<i64> {
        diesel::insert_into(remote_runs::table)
            .values(run)
            .execute(self)?;
        mysql_last_insert_id(self)
    }

    fn insert_process_returning_id(&mut self, row: &NewProcess) -> QueryResult<i64> {
        diesel::insert_into(processes::table)
            .values(row)
            .execute(self)?;
        mysql_last_insert_id(self)
    }

    fn upsert_control(&mut self, row: &Control) -> QueryResult<()> {
        // `control` rows are referenced by nothing: delete-and-insert is an
        // update here.
        diesel::replace_into(control::table)
            .values(row)
            .execute(self)
            .map(|_| ())
    }

    fn write_hold(
        &mut self,
        remote_id: i64,
        held_until: Option<NaiveDateTime>,
        fault_count: i32,
    ) -> QueryResult<usize> {
        use diesel::sql_types::{Integer, Nullable, Text};
        // diesel binds a time as MySQL's TIMESTAMP, whose range ends in
        // 2038: MariaDB turns "until a person acts" (9999-12-31) into NULL.
        // The hold goes as text, cast to the column's DATETIME.
        diesel::sql_query(
            "UPDATE remote_runs SET held_until = CAST(? AS DATETIME(6)), fault_count = ? \
             WHERE remote_id = ?",
        )
        .bind::<Nullable<Text>, _>(
            held_until.map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
        )
        .bind::<Integer, _>(fault_count)
        .bind::<BigInt, _>(remote_id)
        .execute(self)
    }
}

impl RowLock for SqliteConnection {
    fn lock_run_row(&mut self, _remote_id: i64, _state: &str) -> QueryResult<bool> {
        // The candidates came from this same write transaction: nothing
        // else can have taken or moved them.
        Ok(true)
    }

    fn oldest_locked(&mut self, filter: &ClaimFilter) -> QueryResult<Option<Run>> {
        claimable!(filter)
            .order(remote_runs::remote_id.asc())
            .select(Run::as_select())
            .limit(1)
            .first(self)
            .optional()
    }
}

macro_rules! impl_store {
    ($conn:ty, $backend:expr) => {
        impl Store for $conn {
            fn backend(&self) -> Backend {
                $backend
            }

            fn insert_work_items(&mut self, items: &[NewWorkItem]) -> QueryResult<usize> {
                let mut n = 0;
                for chunk in items.chunks(CHUNK) {
                    n += diesel::insert_into(work_items::table)
                        .values(chunk)
                        .execute(self)?;
                }
                Ok(n)
            }

            fn existing_keys(&mut self, stages: &[String]) -> QueryResult<Vec<(String, i64)>> {
                work_items::table
                    .filter(work_items::stage.eq_any(stages))
                    .select((work_items::stage, work_items::stage_id))
                    .load(self)
            }

            fn count_items(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
                state: Option<&str>,
            ) -> QueryResult<i64> {
                let mut q = work_items::table.into_boxed();
                if let Some(l) = label {
                    q = q.filter(work_items::label.eq(l));
                }
                if let Some(s) = stage {
                    q = q.filter(work_items::stage.eq(s));
                }
                if let Some(s) = state {
                    q = q.filter(work_items::state.eq(s));
                }
                q.select(count_star()).first(self)
            }

            fn count_free_items(&mut self, label: &str, stage: &str) -> QueryResult<i64> {
                work_items::table
                    .filter(work_items::label.eq(label))
                    .filter(work_items::stage.eq(stage))
                    .filter(work_items::state.eq("ready"))
                    .filter(not(exists(in_active_run!())))
                    .select(count_star())
                    .first(self)
            }

            fn distinct_labels(&mut self) -> QueryResult<Vec<String>> {
                work_items::table
                    .select(work_items::label)
                    .distinct()
                    .order(work_items::label)
                    .load(self)
            }

            fn distinct_stages(&mut self, label: &str) -> QueryResult<Vec<String>> {
                work_items::table
                    .filter(work_items::label.eq(label))
                    .select(work_items::stage)
                    .distinct()
                    .order(work_items::stage)
                    .load(self)
            }

            fn insert_run(&mut self, run: &NewRun<'_>) -> QueryResult<i64> {
                Writes::insert_returning_id(self, run)
            }

            fn claim_ready_items(
                &mut self,
                remote_id: i64,
                label: &str,
                stage: &str,
                limit: Option<i64>,
                now: NaiveDateTime,
            ) -> QueryResult<usize> {
                let ready = work_items::table
                    .filter(work_items::label.eq(label))
                    .filter(work_items::stage.eq(stage))
                    .filter(work_items::state.eq("ready"))
                    .filter(not(exists(in_active_run!())))
                    .order((work_items::priority.desc(), work_items::id.asc()))
                    .limit(limit.unwrap_or(i64::MAX))
                    .select((
                        remote_id.into_sql::<BigInt>(),
                        work_items::id,
                        now.into_sql::<Timestamp>(),
                        now.into_sql::<Timestamp>(),
                    ));
                let n = diesel::insert_into(remote_components::table)
                    .values(ready)
                    .into_columns((
                        remote_components::remote_id,
                        remote_components::work_item_id,
                        remote_components::created_at,
                        remote_components::updated_at,
                    ))
                    .execute(self)?;
                Ok(n)
            }

            fn run(&mut self, remote_id: i64) -> QueryResult<Option<Run>> {
                remote_runs::table
                    .find(remote_id)
                    .select(Run::as_select())
                    .first(self)
                    .optional()
            }

            fn runs(&mut self, filter: &RunFilter) -> QueryResult<Vec<Run>> {
                let mut q = remote_runs::table.into_boxed();
                if !filter.states.is_empty() {
                    q = q.filter(remote_runs::state.eq_any(&filter.states));
                }
                if let Some(l) = &filter.label {
                    q = q.filter(remote_runs::label.eq(l));
                }
                if let Some(s) = &filter.stage {
                    q = q.filter(remote_runs::stage.eq(s));
                }
                if let Some(id) = filter.remote_id {
                    q = q.filter(remote_runs::remote_id.eq(id));
                }
                q.order(remote_runs::remote_id.asc())
                    .select(Run::as_select())
                    .load(self)
            }

            fn component_counts(
                &mut self,
                remote_ids: &[i64],
            ) -> QueryResult<Vec<(i64, String, i64)>> {
                let mut out = Vec::new();
                for chunk in remote_ids.chunks(CHUNK) {
                    out.extend(
                        remote_components::table
                            .filter(remote_components::remote_id.eq_any(chunk))
                            .group_by((remote_components::remote_id, remote_components::state))
                            .select((
                                remote_components::remote_id,
                                remote_components::state,
                                count_star(),
                            ))
                            .load::<(i64, String, i64)>(self)?,
                    );
                }
                Ok(out)
            }

            fn set_run_state(
                &mut self,
                remote_id: i64,
                from: &str,
                changes: &RunChanges,
            ) -> QueryResult<usize> {
                diesel::update(remote_runs::table)
                    .filter(remote_runs::remote_id.eq(remote_id))
                    .filter(remote_runs::state.eq(from))
                    .set(changes)
                    .execute(self)
            }

            fn close_components(
                &mut self,
                remote_id: i64,
                done: bool,
                now: NaiveDateTime,
            ) -> QueryResult<usize> {
                if done {
                    let members = remote_components::table
                        .filter(remote_components::remote_id.eq(remote_id))
                        .filter(remote_components::active.eq(true))
                        .select(remote_components::work_item_id);
                    diesel::update(work_items::table)
                        .filter(work_items::id.eq_any(members))
                        .filter(work_items::state.eq("ready"))
                        .set((work_items::state.eq("done"), work_items::updated_at.eq(now)))
                        .execute(self)?;
                }
                diesel::update(remote_components::table)
                    .filter(remote_components::remote_id.eq(remote_id))
                    .filter(remote_components::active.eq(true))
                    .set((
                        remote_components::active.eq(false),
                        remote_components::updated_at.eq(now),
                    ))
                    .execute(self)
            }

            fn run_components_page(
                &mut self,
                remote_id: i64,
                after: i64,
                limit: i64,
            ) -> QueryResult<Vec<ComponentItem>> {
                active_components!(remote_id)
                    .filter(remote_components::id.gt(after))
                    .limit(limit)
                    .select((
                        remote_components::id,
                        work_items::id,
                        work_items::stage,
                        work_items::stage_id,
                        work_items::label,
                        work_items::params,
                    ))
                    .load(self)
            }

            fn run_component_count(&mut self, remote_id: i64) -> QueryResult<i64> {
                remote_components::table
                    .filter(remote_components::remote_id.eq(remote_id))
                    .filter(remote_components::active.eq(true))
                    .count()
                    .get_result(self)
            }

            fn stage_runtimes(&mut self, stage: &str, limit: i64) -> QueryResult<Vec<f64>> {
                let rows: Vec<Option<f64>> = remote_components::table
                    .inner_join(work_items::table)
                    .filter(work_items::stage.eq(stage))
                    .filter(remote_components::state.eq("done"))
                    .filter(remote_components::runtime.is_not_null())
                    .order(remote_components::id.desc())
                    .limit(limit)
                    .select(remote_components::runtime)
                    .load(self)?;
                Ok(rows.into_iter().flatten().collect())
            }

            fn run_runtimes(&mut self, remote_id: i64) -> QueryResult<Vec<f64>> {
                let rows: Vec<Option<f64>> = remote_components::table
                    .filter(remote_components::remote_id.eq(remote_id))
                    .filter(remote_components::runtime.is_not_null())
                    .select(remote_components::runtime)
                    .load(self)?;
                Ok(rows.into_iter().flatten().collect())
            }

            fn claimable_runs(
                &mut self,
                filter: &ClaimFilter,
                limit: i64,
            ) -> QueryResult<Vec<Run>> {
                claimable!(filter)
                    .order(remote_runs::remote_id.asc())
                    .select(Run::as_select())
                    .limit(limit)
                    .load(self)
            }

            fn claimable_targets(
                &mut self,
                filter: &ClaimFilter,
            ) -> QueryResult<Vec<(Option<String>, i64)>> {
                claimable!(filter)
                    .group_by(remote_runs::target)
                    .select((remote_runs::target, count_star()))
                    .order(remote_runs::target.asc())
                    .load(self)
            }

            fn set_hold(
                &mut self,
                remote_id: i64,
                held_until: Option<NaiveDateTime>,
                fault_count: i32,
            ) -> QueryResult<usize> {
                Writes::write_hold(self, remote_id, held_until, fault_count)
            }

            fn held_runs(&mut self) -> QueryResult<Vec<Run>> {
                remote_runs::table
                    .filter(remote_runs::held_until.is_not_null())
                    .filter(remote_runs::state.ne_all(["full", "cleaned", "cancelled"]))
                    .order(remote_runs::remote_id.asc())
                    .select(Run::as_select())
                    .load(self)
            }

            fn update_component(
                &mut self,
                id: i64,
                changes: &ComponentChanges,
            ) -> QueryResult<usize> {
                diesel::update(remote_components::table.find(id))
                    .set(changes)
                    .execute(self)
            }

            fn set_work_items(
                &mut self,
                ids: &[i64],
                state: &str,
                attempt: bool,
                now: NaiveDateTime,
            ) -> QueryResult<usize> {
                let add = if attempt { 1 } else { 0 };
                let mut n = 0;
                for chunk in ids.chunks(2000) {
                    n += diesel::update(work_items::table.filter(work_items::id.eq_any(chunk)))
                        .set((
                            work_items::state.eq(state),
                            work_items::attempts.eq(work_items::attempts + add),
                            work_items::updated_at.eq(now),
                        ))
                        .execute(self)?;
                }
                Ok(n)
            }

            fn component_report(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<(String, String, String, i64, Option<f64>)>> {
                let rows: Vec<(String, String, String, i64, Option<f64>)> =
                    remote_components::table
                        .inner_join(work_items::table)
                        .group_by((
                            work_items::label,
                            work_items::stage,
                            remote_components::state,
                        ))
                        .select((
                            work_items::label,
                            work_items::stage,
                            remote_components::state,
                            count_star(),
                            diesel::dsl::sum(remote_components::runtime),
                        ))
                        .order((
                            work_items::label,
                            work_items::stage,
                            remote_components::state,
                        ))
                        .load(self)?;
                Ok(rows
                    .into_iter()
                    .filter(|r| label.is_none_or(|l| r.0 == l) && stage.is_none_or(|st| r.1 == st))
                    .collect())
            }

            fn abandoned_items(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<(String, String, i64)>> {
                let rows: Vec<(String, String, i64)> = work_items::table
                    .filter(work_items::state.eq("abandoned"))
                    .group_by((work_items::label, work_items::stage))
                    .select((work_items::label, work_items::stage, count_star()))
                    .load(self)?;
                Ok(rows
                    .into_iter()
                    .filter(|r| label.is_none_or(|l| r.0 == l) && stage.is_none_or(|st| r.1 == st))
                    .collect())
            }

            fn run_members(&mut self, remote_id: i64) -> QueryResult<Vec<(i64, i64, i64, i32)>> {
                active_components!(remote_id)
                    .select((
                        remote_components::id,
                        work_items::id,
                        work_items::stage_id,
                        work_items::attempts,
                    ))
                    .load(self)
            }

            fn lease(&mut self, remote_id: i64) -> QueryResult<Option<Lease>> {
                leases::table
                    .find(remote_id)
                    .select(Lease::as_select())
                    .first(self)
                    .optional()
            }

            fn insert_lease(&mut self, row: &Lease) -> QueryResult<()> {
                diesel::insert_into(leases::table)
                    .values(row)
                    .execute(self)
                    .map(|_| ())
            }

            fn delete_lease(
                &mut self,
                remote_id: i64,
                holder: Option<(&str, i32)>,
                stale_before: Option<NaiveDateTime>,
            ) -> QueryResult<usize> {
                let mut q = diesel::delete(leases::table)
                    .filter(leases::remote_id.eq(remote_id))
                    .into_boxed();
                if let Some((host, pid)) = holder {
                    q = q.filter(leases::host.eq(host)).filter(leases::pid.eq(pid));
                }
                if let Some(t) = stale_before {
                    q = q.filter(leases::heartbeat_at.le(t));
                }
                q.execute(self)
            }

            fn insert_history(&mut self, row: &NewHistory) -> QueryResult<()> {
                diesel::insert_into(history::table)
                    .values(row)
                    .execute(self)
                    .map(|_| ())
            }

            fn history(&mut self, remote_id: Option<i64>, limit: i64) -> QueryResult<Vec<History>> {
                let mut q = history::table.into_boxed();
                if let Some(id) = remote_id {
                    q = q.filter(history::remote_id.eq(id));
                }
                let mut rows: Vec<History> = q
                    .order(history::id.desc())
                    .limit(limit)
                    .select(History::as_select())
                    .load(self)?;
                rows.reverse();
                Ok(rows)
            }

            fn set_control(&mut self, row: &Control) -> QueryResult<()> {
                Writes::upsert_control(self, row)
            }

            fn controls(&mut self) -> QueryResult<Vec<Control>> {
                control::table
                    .order(control::tool)
                    .select(Control::as_select())
                    .load(self)
            }

            fn lock_run(&mut self, remote_id: i64, state: &str) -> QueryResult<bool> {
                RowLock::lock_run_row(self, remote_id, state)
            }

            fn claim_oldest_locked(&mut self, filter: &ClaimFilter) -> QueryResult<Option<Run>> {
                RowLock::oldest_locked(self, filter)
            }

            fn insert_process(&mut self, row: &NewProcess) -> QueryResult<i64> {
                Writes::insert_process_returning_id(self, row)
            }

            fn delete_process(&mut self, id: i64) -> QueryResult<usize> {
                diesel::delete(processes::table.find(id)).execute(self)
            }

            fn processes(&mut self) -> QueryResult<Vec<Process>> {
                processes::table
                    .order(processes::id)
                    .select(Process::as_select())
                    .load(self)
            }

            fn heartbeat(
                &mut self,
                host: &str,
                pid: i32,
                now: NaiveDateTime,
            ) -> QueryResult<usize> {
                let a = diesel::update(processes::table)
                    .filter(processes::host.eq(host))
                    .filter(processes::pid.eq(pid))
                    .set(processes::heartbeat_at.eq(now))
                    .execute(self)?;
                let b = diesel::update(leases::table)
                    .filter(leases::host.eq(host))
                    .filter(leases::pid.eq(pid))
                    .set(leases::heartbeat_at.eq(now))
                    .execute(self)?;
                Ok(a + b)
            }

            fn delete_leases_of(&mut self, host: &str, pid: i32) -> QueryResult<usize> {
                diesel::delete(leases::table)
                    .filter(leases::host.eq(host))
                    .filter(leases::pid.eq(pid))
                    .execute(self)
            }

            fn insert_rate(&mut self, row: &NewRate) -> QueryResult<()> {
                diesel::insert_into(transfer_rates::table)
                    .values(row)
                    .execute(self)
                    .map(|_| ())
            }

            fn rates(
                &mut self,
                hosts: &[String],
                direction: &str,
                limit: i64,
            ) -> QueryResult<Vec<(i64, f64)>> {
                transfer_rates::table
                    .filter(transfer_rates::host.eq_any(hosts))
                    .filter(transfer_rates::direction.eq(direction))
                    .order(transfer_rates::id.desc())
                    .limit(limit)
                    .select((transfer_rates::bytes, transfer_rates::seconds))
                    .load(self)
            }

            fn run_groups(&mut self) -> QueryResult<Vec<RunGroup>> {
                remote_runs::table
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

            fn item_groups(&mut self) -> QueryResult<Vec<(String, String, String, i64)>> {
                work_items::table
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

            fn active_item_groups(&mut self) -> QueryResult<Vec<(String, String, i64)>> {
                remote_components::table
                    .inner_join(work_items::table)
                    .filter(remote_components::active.eq(true))
                    .group_by((work_items::label, work_items::stage))
                    .select((work_items::label, work_items::stage, count_star()))
                    .order((work_items::label, work_items::stage))
                    .load(self)
            }

            fn all_leases(&mut self) -> QueryResult<Vec<Lease>> {
                leases::table
                    .order(leases::remote_id)
                    .select(Lease::as_select())
                    .load(self)
            }

            fn component(&mut self, id: i64) -> QueryResult<Option<(Component, WorkItem)>> {
                remote_components::table
                    .inner_join(work_items::table)
                    .filter(remote_components::id.eq(id))
                    .select((Component::as_select(), WorkItem::as_select()))
                    .first(self)
                    .optional()
            }

            fn item_components(&mut self, work_item_id: i64) -> QueryResult<Vec<Component>> {
                remote_components::table
                    .filter(remote_components::work_item_id.eq(work_item_id))
                    .order(remote_components::id.asc())
                    .select(Component::as_select())
                    .load(self)
            }

            fn run_failed_components(
                &mut self,
                remote_id: i64,
                limit: i64,
            ) -> QueryResult<Vec<(Component, WorkItem)>> {
                remote_components::table
                    .inner_join(work_items::table)
                    .filter(remote_components::remote_id.eq(remote_id))
                    .filter(remote_components::state.eq("failed"))
                    .order(remote_components::id.asc())
                    .limit(limit)
                    .select((Component::as_select(), WorkItem::as_select()))
                    .load(self)
            }

            fn run_component_id(
                &mut self,
                remote_id: i64,
                stage_id: i64,
            ) -> QueryResult<Option<i64>> {
                remote_components::table
                    .inner_join(work_items::table)
                    .filter(remote_components::remote_id.eq(remote_id))
                    .filter(work_items::stage_id.eq(stage_id))
                    .order(remote_components::id.desc())
                    .select(remote_components::id)
                    .first(self)
                    .optional()
            }

            fn run_has_active(&mut self, remote_id: i64) -> QueryResult<bool> {
                diesel::select(exists(
                    remote_components::table
                        .filter(remote_components::remote_id.eq(remote_id))
                        .filter(remote_components::active.eq(true)),
                ))
                .get_result(self)
            }

            fn reset_item(
                &mut self,
                id: i64,
                from: &str,
                to: &str,
                now: NaiveDateTime,
            ) -> QueryResult<usize> {
                diesel::update(work_items::table.find(id))
                    .filter(work_items::state.eq(from))
                    .set((work_items::state.eq(to), work_items::updated_at.eq(now)))
                    .execute(self)
            }
        }
    };
}

impl_store!(SqliteConnection, Backend::Sqlite);
impl_store!(PgConnection, Backend::Postgres);
impl_store!(MysqlConnection, Backend::Mysql);
