//! The claim: which runs a tool may take next ([`ClaimFilter`]), and
//! taking one. Both spellings live here side by side: the query-builder
//! one every backend runs (candidates, then the row locked with `FOR
//! UPDATE SKIP LOCKED`, or SQLite's write lock), and PostgreSQL's claim in
//! one statement ([`claim_oldest_in_one_statement`]), which also checks
//! the pauses and writes the lease.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::*;
use crate::db::schema::*;
use crate::db::{Conn, Db};
use crate::state::RunState;
use diesel::dsl::{count_star, exists, not};
use diesel::IntoSql;

/// Which runs a claim may take: those in `state` with no live lease (none,
/// or a heartbeat not after `stale_before`), last polled before
/// `polled_before` (or never), not held after `now`, of the targets
/// `targets` allows.
#[derive(Debug, Clone)]
pub struct ClaimFilter {
    pub state: RunState,
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

/// Row locks differ: PostgreSQL and MySQL have `FOR UPDATE SKIP LOCKED`; an SQLite
/// write transaction holds the whole database.
trait RowLock {
    fn lock_run_row(&mut self, remote_id: i64, state: RunState) -> QueryResult<bool>;
    fn oldest_locked(&mut self, filter: &ClaimFilter) -> QueryResult<Option<Run>>;
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
            .filter(remote_runs::state.eq(f.state))
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
            fn lock_run_row(&mut self, remote_id: i64, state: RunState) -> QueryResult<bool> {
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

impl RowLock for SqliteConnection {
    fn lock_run_row(&mut self, _remote_id: i64, _state: RunState) -> QueryResult<bool> {
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

pub trait ClaimStore {
    /// The runs [`ClaimFilter`] allows, oldest first, at most `limit`.
    fn claimable_runs(&mut self, filter: &ClaimFilter, limit: i64) -> QueryResult<Vec<Run>>;

    /// (target column, runs) of the runs [`ClaimFilter`] allows.
    fn claimable_targets(
        &mut self,
        filter: &ClaimFilter,
    ) -> QueryResult<Vec<(Option<String>, i64)>>;

    /// Lock a run's row for this transaction without waiting: false when
    /// another transaction holds it (PostgreSQL `FOR UPDATE SKIP LOCKED`).
    /// On SQLite the transaction already holds the write lock: true.
    /// False too when the run has left `state`.
    fn lock_run(&mut self, remote_id: i64, state: RunState) -> QueryResult<bool>;

    /// The oldest claimable run (as [`Store::claimable_runs`]), its row
    /// locked for this transaction; rows other claimers hold are skipped
    /// (PostgreSQL `FOR UPDATE SKIP LOCKED`; on SQLite the transaction
    /// holds the whole database).
    fn claim_oldest_locked(&mut self, filter: &ClaimFilter) -> QueryResult<Option<Run>>;
}

macro_rules! impl_claims_store {
    ($conn:ty) => {
        impl ClaimStore for $conn {
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

            fn lock_run(&mut self, remote_id: i64, state: RunState) -> QueryResult<bool> {
                RowLock::lock_run_row(self, remote_id, state)
            }

            fn claim_oldest_locked(&mut self, filter: &ClaimFilter) -> QueryResult<Option<Run>> {
                RowLock::oldest_locked(self, filter)
            }
        }
    };
}

impl_claims_store!(SqliteConnection);
impl_claims_store!(PgConnection);
impl_claims_store!(MysqlConnection);

/// PostgreSQL's claim in one statement: the oldest run `filter` allows
/// (its state, no live lease, due for a poll, not held, of a target its
/// scope allows), while `tool` is not paused, nor paused for the run's
/// target (`control` row `TOOL@TARGET`; a run naming none is of
/// `default_target`), is leased to host/pid, skipping rows other claimers
/// have locked. Some(run) claimed; Some(None) nothing claimed; None on
/// SQLite (whose claims take the database's write lock instead).
#[allow(clippy::too_many_arguments)]
pub fn claim_oldest_in_one_statement(
    db: &mut Db,
    filter: &ClaimFilter,
    default_target: Option<&str>,
    tool: &str,
    host: &str,
    pid: i32,
    now: chrono::NaiveDateTime,
) -> anyhow::Result<Option<Option<Run>>> {
    use diesel::sql_types::{Array, Bool, Integer, Nullable, Text, Timestamp};
    let Conn::Postgres(c) = &mut db.conn else {
        return Ok(None);
    };
    let t = &filter.targets;
    let rows: Vec<Run> = diesel::sql_query(
        "WITH c AS (
           SELECT r.remote_id FROM remote_runs r
           WHERE r.state = $1
             AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.remote_id = r.remote_id AND l.heartbeat_at > $2)
             AND ($3::timestamp IS NULL OR r.last_poll IS NULL OR r.last_poll <= $3)
             AND (r.held_until IS NULL OR r.held_until <= $8)
             AND ((r.target IS NULL AND $9)
                  OR (r.target <> ALL($10) AND ($11::text IS NULL OR r.target = $11)))
             AND NOT EXISTS (SELECT 1 FROM control k WHERE k.paused AND k.tool = $4)
             -- Per-target pauses: looked at row by row only when there is one.
             AND (NOT EXISTS (SELECT 1 FROM control k WHERE k.paused AND k.tool LIKE $4 || '@%')
                  OR NOT EXISTS (SELECT 1 FROM control k WHERE k.paused
                                 AND k.tool = $4 || '@' || COALESCE(r.target, $12)))
           ORDER BY r.remote_id LIMIT 1
           FOR UPDATE OF r SKIP LOCKED)
         , leased AS (
         INSERT INTO leases (remote_id, tool, host, pid, acquired_at, heartbeat_at)
         SELECT remote_id, $4, $5, $6, $7, $7 FROM c
         ON CONFLICT (remote_id) DO UPDATE SET tool = EXCLUDED.tool, host = EXCLUDED.host,
           pid = EXCLUDED.pid, acquired_at = EXCLUDED.acquired_at, heartbeat_at = EXCLUDED.heartbeat_at
           WHERE leases.heartbeat_at <= $2
         RETURNING remote_id)
         SELECT r.* FROM remote_runs r JOIN leased USING (remote_id)",
    )
    .bind::<Text, _>(&filter.state)
    .bind::<Timestamp, _>(filter.stale_before)
    .bind::<Nullable<Timestamp>, _>(filter.polled_before)
    .bind::<Text, _>(tool)
    .bind::<Text, _>(host)
    .bind::<Integer, _>(pid)
    .bind::<Timestamp, _>(now)
    .bind::<Timestamp, _>(filter.now)
    .bind::<Bool, _>(t.allows(None))
    .bind::<Array<Text>, _>(&t.skip)
    .bind::<Nullable<Text>, _>(t.only.as_deref())
    .bind::<Nullable<Text>, _>(default_target)
    .load(c.as_mut())
    .map_err(|e| db.mark(e.into()))?;
    Ok(Some(rows.into_iter().next()))
}
