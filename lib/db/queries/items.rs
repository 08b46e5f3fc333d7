//! The queries of the work items: adding them, counting them by label,
//! stage and state, moving their state, and attaching the free ready ones
//! to a new run as its components. Written once for every backend (see
//! [`super`]).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::TallyStore;
use super::CHUNK;
use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::*;
use crate::db::schema::*;
use crate::state::ItemState;
use diesel::dsl::{count_star, exists, not};
use diesel::sql_types::{BigInt, Timestamp};
use diesel::IntoSql;

/// The active component of the work item in the outer query, if any.
macro_rules! in_active_run {
    () => {
        remote_components::table
            .filter(remote_components::work_item_id.eq(work_items::id))
            .filter(remote_components::active.eq(true))
            .select(remote_components::id)
    };
}

pub trait ItemStore {
    fn insert_work_items(&mut self, items: &[NewWorkItem]) -> QueryResult<usize>;

    /// (stage, stage_id) of every work item of these stages.
    fn existing_keys(&mut self, stages: &[String]) -> QueryResult<Vec<(String, i64)>>;

    fn count_items(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
        state: Option<ItemState>,
    ) -> QueryResult<i64>;

    /// Ready work items of a label and stage that are in no active run.
    fn count_free_items(&mut self, label: &str, stage: &str) -> QueryResult<i64>;

    fn distinct_labels(&mut self) -> QueryResult<Vec<String>>;

    fn distinct_stages(&mut self, label: &str) -> QueryResult<Vec<String>>;

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

    /// Set work items' state; `attempt` counts one more attempt for each.
    fn set_work_items(
        &mut self,
        ids: &[i64],
        state: ItemState,
        attempt: bool,
        now: NaiveDateTime,
    ) -> QueryResult<usize>;

    /// A work item's state, if it is `from`, becomes `to` (attempts kept).
    fn reset_item(
        &mut self,
        id: i64,
        from: ItemState,
        to: ItemState,
        now: NaiveDateTime,
    ) -> QueryResult<usize>;

    /// Abandoned work items per label and stage.
    fn abandoned_items(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<StageCount>>;

    /// Work items per label, stage and state.
    fn item_groups(&mut self) -> QueryResult<Vec<ItemGroup>>;

    /// Work items in an active run, per label and stage.
    fn active_item_groups(&mut self) -> QueryResult<Vec<StageCount>>;
}

macro_rules! impl_items_store {
    ($conn:ty) => {
        impl ItemStore for $conn {
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
                state: Option<ItemState>,
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
                    .filter(work_items::state.eq(ItemState::Ready))
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
                    .filter(work_items::state.eq(ItemState::Ready))
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

            fn set_work_items(
                &mut self,
                ids: &[i64],
                state: ItemState,
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

            fn reset_item(
                &mut self,
                id: i64,
                from: ItemState,
                to: ItemState,
                now: NaiveDateTime,
            ) -> QueryResult<usize> {
                diesel::update(work_items::table.find(id))
                    .filter(work_items::state.eq(from))
                    .set((work_items::state.eq(to), work_items::updated_at.eq(now)))
                    .execute(self)
            }

            fn abandoned_items(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<StageCount>> {
                let rows: Vec<StageCount> = work_items::table
                    .filter(work_items::state.eq(ItemState::Abandoned))
                    .group_by((work_items::label, work_items::stage))
                    .select((work_items::label, work_items::stage, count_star()))
                    .load(self)?;
                Ok(rows
                    .into_iter()
                    .filter(|r| {
                        label.is_none_or(|l| r.label == l) && stage.is_none_or(|st| r.stage == st)
                    })
                    .collect())
            }

            fn item_groups(&mut self) -> QueryResult<Vec<ItemGroup>> {
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

            fn active_item_groups(&mut self) -> QueryResult<Vec<StageCount>> {
                self.active_groups_tallied()
            }
        }
    };
}

impl_items_store!(SqliteConnection);
impl_items_store!(PgConnection);
impl_items_store!(MysqlConnection);
