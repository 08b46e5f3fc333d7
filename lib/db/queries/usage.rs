//! The queries of what runs cost: each batch job's record (`remote_jobs`),
//! and the runs and components `remotetool report` spreads it over.
//! Written once for every backend, as the rest of [`super`].

use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use diesel::prelude::*;

use super::TallyStore;
use crate::db::models::JobRecord;
use crate::db::schema::*;
use crate::state::{ItemState, RunState};

/// A run as the report counts it.
#[derive(Debug, Clone, Queryable)]
pub struct RunKey {
    pub remote_id: i64,
    pub label: String,
    pub stage: String,
    pub state: RunState,
}

/// A component as the report spreads its run's cost over its components.
#[derive(Debug, Clone, Queryable)]
pub struct ComponentCost {
    pub remote_id: i64,
    pub work_item_id: i64,
    pub stage_id: i64,
    /// Its work item's state.
    pub item_state: ItemState,
    pub runtime: Option<f64>,
}

pub trait UsageStore {
    /// Record what a job used, in place of an earlier record of the same
    /// job (a poll that is tried again records it again).
    fn record_job(&mut self, row: &JobRecord) -> QueryResult<()>;
    /// The jobs of the runs of this label and stage, by run and job.
    fn job_records(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<JobRecord>>;
    /// The runs of this label and stage, by id.
    fn report_runs(&mut self, label: Option<&str>, stage: Option<&str>)
        -> QueryResult<Vec<RunKey>>;
    /// The summed runtime (seconds, the positive ones) of each of those
    /// runs' components, per run: what the groups and runs reports need,
    /// in one GROUP BY.
    fn run_runtime_sums(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<(i64, Option<f64>)>>;
    /// Every component of those runs.
    fn component_costs(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<ComponentCost>>;
}

macro_rules! impl_usage_store {
    ($conn:ty) => {
        impl UsageStore for $conn {
            fn record_job(&mut self, row: &JobRecord) -> QueryResult<()> {
                diesel::delete(
                    remote_jobs::table
                        .filter(remote_jobs::remote_id.eq(row.remote_id))
                        .filter(remote_jobs::job_id.eq(&row.job_id)),
                )
                .execute(self)?;
                diesel::insert_into(remote_jobs::table)
                    .values(row)
                    .execute(self)?;
                Ok(())
            }

            fn job_records(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<JobRecord>> {
                let mut q = remote_jobs::table
                    .inner_join(remote_runs::table)
                    .select(remote_jobs::all_columns)
                    .into_boxed();
                if let Some(l) = label {
                    q = q.filter(remote_runs::label.eq(l));
                }
                if let Some(s) = stage {
                    q = q.filter(remote_runs::stage.eq(s));
                }
                q.order((remote_jobs::remote_id, remote_jobs::recorded_at))
                    .load(self)
            }

            fn report_runs(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<RunKey>> {
                let mut q = remote_runs::table
                    .select((
                        remote_runs::remote_id,
                        remote_runs::label,
                        remote_runs::stage,
                        remote_runs::state,
                    ))
                    .into_boxed();
                if let Some(l) = label {
                    q = q.filter(remote_runs::label.eq(l));
                }
                if let Some(s) = stage {
                    q = q.filter(remote_runs::stage.eq(s));
                }
                q.order(remote_runs::remote_id).load(self)
            }

            fn run_runtime_sums(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<(i64, Option<f64>)>> {
                Ok(self
                    .tally_runtimes(label, stage)?
                    .into_iter()
                    .map(|(id, sum)| (id, Some(sum)))
                    .collect())
            }

            fn component_costs(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<ComponentCost>> {
                let mut q = remote_components::table
                    .inner_join(work_items::table)
                    .inner_join(remote_runs::table)
                    .select((
                        remote_components::remote_id,
                        remote_components::work_item_id,
                        work_items::stage_id,
                        work_items::state,
                        remote_components::runtime,
                    ))
                    .into_boxed();
                if let Some(l) = label {
                    q = q.filter(remote_runs::label.eq(l));
                }
                if let Some(s) = stage {
                    q = q.filter(remote_runs::stage.eq(s));
                }
                q.order((remote_components::remote_id, remote_components::id))
                    .load(self)
            }
        }
    };
}

impl_usage_store!(SqliteConnection);
impl_usage_store!(PgConnection);
impl_usage_store!(MysqlConnection);
