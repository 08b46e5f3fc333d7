//! The queries of the results the pipeline receives: every component
//! attempt whose result was applied (`results`, in the order applied), and
//! each named consumer's cursor and lease (`consumers`). Written once for
//! every backend, as the rest of [`super`].

use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::{Component, Consumer, NewResult, ResultRow, WorkItem};
use crate::db::schema::*;
use crate::state::{ComponentState, ItemState};

/// Which results to list.
#[derive(Debug, Clone, Default)]
pub struct ResultFilter {
    pub label: Option<String>,
    pub stage: Option<String>,
    pub remote_id: Option<i64>,
    /// Work item states after the attempt: done, failed, abandoned.
    pub states: Vec<ItemState>,
    /// Only results after this sequence number.
    pub after: i64,
    pub limit: Option<i64>,
}

pub trait ResultStore {
    /// Record applied results. On PostgreSQL and MySQL the transactions
    /// that do so take one lock in turn, so that sequence numbers commit in order and
    /// a cursor never passes a number still to commit.
    fn insert_results(&mut self, rows: &[NewResult]) -> QueryResult<usize>;
    /// Results with their work items and components, oldest first.
    fn results(&mut self, f: &ResultFilter) -> QueryResult<Vec<ResultRow>>;
    /// A run's active components whose results are recorded but not yet
    /// released (a run waiting for its apply command), with their items.
    fn recorded_components(&mut self, remote_id: i64) -> QueryResult<Vec<(Component, WorkItem)>>;
    /// Work items not finished (`ready`, in a run or not) whose params
    /// mention `text`, at most `limit`.
    fn ready_items_mentioning(&mut self, text: &str, limit: i64) -> QueryResult<Vec<WorkItem>>;
    /// The stage_ids of a run's components that failed, in any of its
    /// attempts (released or not), in order.
    fn failed_in_run(&mut self, remote_id: i64) -> QueryResult<Vec<i64>>;
    /// Components leave their run (their results released).
    fn deactivate_components(&mut self, ids: &[i64]) -> QueryResult<usize>;
    fn consumer(&mut self, name: &str) -> QueryResult<Option<Consumer>>;
    /// Create a consumer at the start, if it is new.
    fn ensure_consumer(&mut self, name: &str, now: NaiveDateTime) -> QueryResult<()>;
    /// Take the consumer's lease if it is still held as seen (`seen`: its
    /// holder then, None for none): 1 when taken.
    fn take_consumer(
        &mut self,
        name: &str,
        seen: Option<(&str, i32)>,
        host: &str,
        pid: i32,
        now: NaiveDateTime,
    ) -> QueryResult<usize>;
    fn heartbeat_consumer(
        &mut self,
        name: &str,
        host: &str,
        pid: i32,
        now: NaiveDateTime,
    ) -> QueryResult<usize>;
    /// Give the lease back, moving the cursor to `cursor` when given.
    fn release_consumer(
        &mut self,
        name: &str,
        host: &str,
        pid: i32,
        cursor: Option<i64>,
        now: NaiveDateTime,
    ) -> QueryResult<usize>;
}

/// What differs: the lock that orders result inserts.
trait InsertOrder {
    fn order_inserts(&mut self) -> QueryResult<()>;
}

impl InsertOrder for SqliteConnection {
    /// An SQLite write transaction holds the whole database already.
    fn order_inserts(&mut self) -> QueryResult<()> {
        Ok(())
    }
}

impl InsertOrder for PgConnection {
    fn order_inserts(&mut self) -> QueryResult<()> {
        // The key is offload's own: "results" in ASCII.
        diesel::sql_query("SELECT pg_advisory_xact_lock(7310897559608755000)")
            .execute(self)
            .map(|_| ())
    }
}

impl InsertOrder for MysqlConnection {
    fn order_inserts(&mut self) -> QueryResult<()> {
        // A row lock, held to the end of the transaction (migrations/mysql).
        crate::db::mysql_lock_row(self, "results")
    }
}

macro_rules! impl_result_store {
    ($conn:ty) => {
        impl ResultStore for $conn {
            fn insert_results(&mut self, rows: &[NewResult]) -> QueryResult<usize> {
                if rows.is_empty() {
                    return Ok(0);
                }
                self.order_inserts()?;
                let mut n = 0;
                // Within SQLite's limit of bound values per statement.
                for chunk in rows.chunks(2000) {
                    n += diesel::insert_into(results::table)
                        .values(chunk)
                        .execute(self)?;
                }
                Ok(n)
            }

            fn results(&mut self, f: &ResultFilter) -> QueryResult<Vec<ResultRow>> {
                let mut q = results::table
                    .inner_join(work_items::table)
                    .inner_join(remote_components::table)
                    .filter(results::seq.gt(f.after))
                    .into_boxed();
                if let Some(l) = &f.label {
                    q = q.filter(work_items::label.eq(l));
                }
                if let Some(s) = &f.stage {
                    q = q.filter(work_items::stage.eq(s));
                }
                if let Some(id) = f.remote_id {
                    q = q.filter(results::remote_id.eq(id));
                }
                if !f.states.is_empty() {
                    q = q.filter(results::state.eq_any(&f.states));
                }
                if let Some(n) = f.limit {
                    q = q.limit(n);
                }
                q.order(results::seq.asc())
                    .select((
                        results::seq,
                        results::remote_id,
                        results::attempt,
                        results::state,
                        results::outputs,
                        results::applied_at,
                        work_items::stage,
                        work_items::stage_id,
                        work_items::label,
                        work_items::params,
                        remote_components::id,
                        remote_components::exit_status,
                        remote_components::runtime,
                        remote_components::result,
                    ))
                    .load(self)
            }

            fn recorded_components(
                &mut self,
                remote_id: i64,
            ) -> QueryResult<Vec<(Component, WorkItem)>> {
                remote_components::table
                    .inner_join(work_items::table)
                    .filter(remote_components::remote_id.eq(remote_id))
                    .filter(remote_components::active.eq(true))
                    .filter(remote_components::state.ne(ComponentState::Queued))
                    .order(remote_components::id.asc())
                    .select((Component::as_select(), WorkItem::as_select()))
                    .load(self)
            }

            fn ready_items_mentioning(
                &mut self,
                text: &str,
                limit: i64,
            ) -> QueryResult<Vec<WorkItem>> {
                // LIKE's wildcards in a path only widen the match; the
                // caller checks the text exactly.
                work_items::table
                    .filter(work_items::state.eq(ItemState::Ready))
                    .filter(work_items::params.like(format!("%{text}%")))
                    .order(work_items::id.asc())
                    .limit(limit)
                    .select(WorkItem::as_select())
                    .load(self)
            }

            fn failed_in_run(&mut self, remote_id: i64) -> QueryResult<Vec<i64>> {
                remote_components::table
                    .inner_join(work_items::table)
                    .filter(remote_components::remote_id.eq(remote_id))
                    .filter(remote_components::state.eq(ComponentState::Failed))
                    .order(work_items::stage_id.asc())
                    .select(work_items::stage_id)
                    .load(self)
            }

            fn deactivate_components(&mut self, ids: &[i64]) -> QueryResult<usize> {
                let mut n = 0;
                for chunk in ids.chunks(2000) {
                    n += diesel::update(
                        remote_components::table.filter(remote_components::id.eq_any(chunk)),
                    )
                    .set(remote_components::active.eq(false))
                    .execute(self)?;
                }
                Ok(n)
            }

            fn consumer(&mut self, name: &str) -> QueryResult<Option<Consumer>> {
                consumers::table
                    .find(name)
                    .select(Consumer::as_select())
                    .first(self)
                    .optional()
            }

            fn ensure_consumer(&mut self, name: &str, now: NaiveDateTime) -> QueryResult<()> {
                // The count is not read: MySQL's stand-in for DO NOTHING
                // (ON DUPLICATE KEY) counts a kept row too.
                diesel::insert_into(consumers::table)
                    .values((
                        consumers::name.eq(name),
                        consumers::cursor.eq(0i64),
                        consumers::updated_at.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .execute(self)
                    .map(|_| ())
            }

            fn take_consumer(
                &mut self,
                name: &str,
                seen: Option<(&str, i32)>,
                host: &str,
                pid: i32,
                now: NaiveDateTime,
            ) -> QueryResult<usize> {
                let target = consumers::table.filter(consumers::name.eq(name));
                let set = (
                    consumers::holder_host.eq(host),
                    consumers::holder_pid.eq(pid),
                    consumers::heartbeat_at.eq(now),
                    consumers::updated_at.eq(now),
                );
                match seen {
                    None => diesel::update(target.filter(consumers::holder_host.is_null()))
                        .set(set)
                        .execute(self),
                    Some((h, p)) => diesel::update(
                        target
                            .filter(consumers::holder_host.eq(h))
                            .filter(consumers::holder_pid.eq(p)),
                    )
                    .set(set)
                    .execute(self),
                }
            }

            fn heartbeat_consumer(
                &mut self,
                name: &str,
                host: &str,
                pid: i32,
                now: NaiveDateTime,
            ) -> QueryResult<usize> {
                diesel::update(
                    consumers::table
                        .filter(consumers::name.eq(name))
                        .filter(consumers::holder_host.eq(host))
                        .filter(consumers::holder_pid.eq(pid)),
                )
                .set(consumers::heartbeat_at.eq(now))
                .execute(self)
            }

            fn release_consumer(
                &mut self,
                name: &str,
                host: &str,
                pid: i32,
                cursor: Option<i64>,
                now: NaiveDateTime,
            ) -> QueryResult<usize> {
                let held = consumers::table
                    .filter(consumers::name.eq(name))
                    .filter(consumers::holder_host.eq(host))
                    .filter(consumers::holder_pid.eq(pid));
                let free = (
                    consumers::holder_host.eq(None::<String>),
                    consumers::holder_pid.eq(None::<i32>),
                    consumers::heartbeat_at.eq(None::<NaiveDateTime>),
                    consumers::updated_at.eq(now),
                );
                match cursor {
                    Some(c) => diesel::update(held)
                        .set((free, consumers::cursor.eq(c)))
                        .execute(self),
                    None => diesel::update(held).set(free).execute(self),
                }
            }
        }
    };
}

impl_result_store!(SqliteConnection);
impl_result_store!(PgConnection);
impl_result_store!(MysqlConnection);
