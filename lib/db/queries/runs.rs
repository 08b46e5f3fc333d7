//! The queries of the runs: defining, reading and listing them, moving
//! them from state to state ([`RunChanges`]), their holds, and their
//! history. Written once for every backend (see [`super`]).

use chrono::NaiveDateTime;
use diesel::dsl::count_star;
use diesel::prelude::*;

use super::writes::Writes;
use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::*;
use crate::db::schema::*;
use crate::state::RunState;

/// What a state change writes. `None` leaves a column as it is.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = remote_runs)]
pub struct RunChanges {
    pub state: RunState,
    pub updated_at: NaiveDateTime,
    pub auth_return_state: Option<Option<RunState>>,
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
    pub fn to(state: RunState) -> RunChanges {
        RunChanges {
            state,
            updated_at: crate::db::now(),
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

pub trait RunStore {
    fn insert_run(&mut self, run: &NewRun<'_>) -> QueryResult<i64>;

    fn run(&mut self, remote_id: i64) -> QueryResult<Option<Run>>;

    fn runs(&mut self, filter: &RunFilter) -> QueryResult<Vec<Run>>;

    /// Change a run's state if it is still `from`; the number of rows changed.
    fn set_run_state(
        &mut self,
        remote_id: i64,
        from: RunState,
        changes: &RunChanges,
    ) -> QueryResult<usize>;

    /// Set a run's hold (`held_until`, `fault_count`), whatever its state.
    fn set_hold(
        &mut self,
        remote_id: i64,
        held_until: Option<NaiveDateTime>,
        fault_count: i32,
    ) -> QueryResult<usize>;

    /// Runs held back from `--next` (`held_until` set), in open states.
    fn held_runs(&mut self) -> QueryResult<Vec<Run>>;

    /// Runs per label, stage and state.
    fn run_groups(&mut self) -> QueryResult<Vec<RunGroup>>;

    fn insert_history(&mut self, row: &NewHistory) -> QueryResult<()>;

    fn history(&mut self, remote_id: Option<i64>, limit: i64) -> QueryResult<Vec<History>>;
}

macro_rules! impl_runs_store {
    ($conn:ty) => {
        impl RunStore for $conn {
            fn insert_run(&mut self, run: &NewRun<'_>) -> QueryResult<i64> {
                Writes::insert_returning_id(self, run)
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

            fn set_run_state(
                &mut self,
                remote_id: i64,
                from: RunState,
                changes: &RunChanges,
            ) -> QueryResult<usize> {
                diesel::update(remote_runs::table)
                    .filter(remote_runs::remote_id.eq(remote_id))
                    .filter(remote_runs::state.eq(from))
                    .set(changes)
                    .execute(self)
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
                    .filter(remote_runs::state.ne_all(RunState::CLOSED))
                    .order(remote_runs::remote_id.asc())
                    .select(Run::as_select())
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
        }
    };
}

impl_runs_store!(SqliteConnection);
impl_runs_store!(PgConnection);
impl_runs_store!(MysqlConnection);
