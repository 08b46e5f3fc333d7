//! The queries of a run's components: paging through them, counting them,
//! applying their results ([`ComponentChanges`]), releasing them, and
//! their runtimes. Written once for every backend (see [`super`]).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::changes::{self, ComponentChanges};
use super::TallyStore;
use super::CHUNK;
use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::*;
use crate::db::schema::*;
use crate::db::Backend;
use crate::state::{ComponentState, ItemState};
use diesel::dsl::{count_star, exists};

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

pub trait ComponentStore {
    /// Components per run and state, for these runs.
    fn component_counts(&mut self, remote_ids: &[i64]) -> QueryResult<Vec<ComponentCount>>;

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

    /// A run's active components with their work items' ids and attempts.
    fn run_members(&mut self, remote_id: i64) -> QueryResult<Vec<Member>>;

    /// Runtimes (s) of the done components of a stage's newest runs, at
    /// most `limit` of them.
    fn stage_runtimes(&mut self, stage: &str, limit: i64) -> QueryResult<Vec<f64>>;

    /// Measured runtimes of a run's components that came back (from its
    /// earlier attempts).
    fn run_runtimes(&mut self, remote_id: i64) -> QueryResult<Vec<f64>>;

    /// Apply components' results, a few hundred a statement
    /// ([`super::changes`]): (component id, what it becomes).
    fn update_components(&mut self, changes: &[(i64, ComponentChanges)]) -> QueryResult<usize>;

    /// Components per label, stage and state, with their summed runtime,
    /// optionally of one label and stage.
    fn component_report(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<ReportGroup>>;

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
}

macro_rules! impl_components_store {
    ($conn:ty, $backend:expr) => {
        impl ComponentStore for $conn {
            fn component_counts(&mut self, remote_ids: &[i64]) -> QueryResult<Vec<ComponentCount>> {
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
                            .load::<ComponentCount>(self)?,
                    );
                }
                Ok(out)
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
                        .filter(work_items::state.eq(ItemState::Ready))
                        .set((
                            work_items::state.eq(ItemState::Done),
                            work_items::updated_at.eq(now),
                        ))
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

            fn run_members(&mut self, remote_id: i64) -> QueryResult<Vec<Member>> {
                active_components!(remote_id)
                    .select((
                        remote_components::id,
                        work_items::id,
                        work_items::stage_id,
                        work_items::attempts,
                    ))
                    .load(self)
            }

            fn stage_runtimes(&mut self, stage: &str, limit: i64) -> QueryResult<Vec<f64>> {
                // A run's components are work items of its stage: read run
                // by run, newest first, ten at a time, each batch from the
                // index on (remote_id, state), with no join per component
                // (and no plan that reads every component of the stage).
                const RUNS: i64 = 10;
                let mut out: Vec<f64> = Vec::new();
                let mut before: Option<i64> = None;
                while (out.len() as i64) < limit {
                    let mut q = remote_runs::table
                        .filter(remote_runs::stage.eq(stage.to_string()))
                        .into_boxed();
                    if let Some(b) = before {
                        q = q.filter(remote_runs::remote_id.lt(b));
                    }
                    let ids: Vec<i64> = q
                        .order(remote_runs::remote_id.desc())
                        .limit(RUNS)
                        .select(remote_runs::remote_id)
                        .load(self)?;
                    let Some(&oldest) = ids.last() else { break };
                    let rows: Vec<Option<f64>> = remote_components::table
                        .filter(remote_components::remote_id.eq_any(&ids))
                        .filter(remote_components::state.eq(ComponentState::Done))
                        .select(remote_components::runtime)
                        .load(self)?;
                    out.extend(rows.into_iter().flatten());
                    if (ids.len() as i64) < RUNS {
                        break;
                    }
                    before = Some(oldest);
                }
                out.truncate(limit.max(0) as usize);
                Ok(out)
            }

            fn run_runtimes(&mut self, remote_id: i64) -> QueryResult<Vec<f64>> {
                let rows: Vec<Option<f64>> = remote_components::table
                    .filter(remote_components::remote_id.eq(remote_id))
                    .filter(remote_components::runtime.is_not_null())
                    .select(remote_components::runtime)
                    .load(self)?;
                Ok(rows.into_iter().flatten().collect())
            }

            fn update_components(
                &mut self,
                changes: &[(i64, ComponentChanges)],
            ) -> QueryResult<usize> {
                use diesel::sql_types::{BigInt, Bool, Double, Integer, Nullable, Text, Timestamp};
                let mut written = 0;
                for chunk in changes::chunks(changes) {
                    let mut q =
                        diesel::sql_query(changes::update_sql($backend, chunk.len())).into_boxed();
                    for (id, c) in chunk {
                        q = q
                            .bind::<BigInt, _>(*id)
                            .bind::<Text, _>(c.state.as_str())
                            .bind::<Bool, _>(c.active)
                            .bind::<Integer, _>(c.attempts)
                            .bind::<Nullable<Integer>, _>(c.exit_status)
                            .bind::<Nullable<Double>, _>(c.runtime)
                            .bind::<Integer, _>(c.fault)
                            .bind::<Nullable<Text>, _>(c.result.as_deref())
                            .bind::<Timestamp, _>(c.updated_at);
                    }
                    written += q.execute(self)?;
                }
                Ok(written)
            }

            fn component_report(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<ReportGroup>> {
                self.report_groups_tallied(label, stage)
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
                    .filter(remote_components::state.eq(ComponentState::Failed))
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
        }
    };
}

impl_components_store!(SqliteConnection, Backend::Sqlite);
impl_components_store!(PgConnection, Backend::Postgres);
impl_components_store!(MysqlConnection, Backend::Mysql);
