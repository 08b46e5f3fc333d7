//! The queries of the tool processes at work and the leases they hold on
//! runs, with their heartbeats. Written once for every backend (see
//! [`super`]).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::writes::Writes;
use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::*;
use crate::db::schema::*;

pub trait WorkerStore {
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

    fn all_leases(&mut self) -> QueryResult<Vec<Lease>>;

    fn insert_process(&mut self, row: &NewProcess) -> QueryResult<i64>;

    fn delete_process(&mut self, id: i64) -> QueryResult<usize>;

    fn processes(&mut self) -> QueryResult<Vec<Process>>;

    /// The heartbeat of host/pid's process rows and leases.
    fn heartbeat(&mut self, host: &str, pid: i32, now: NaiveDateTime) -> QueryResult<usize>;

    /// Remove every lease host/pid holds.
    fn delete_leases_of(&mut self, host: &str, pid: i32) -> QueryResult<usize>;
}

macro_rules! impl_workers_store {
    ($conn:ty) => {
        impl WorkerStore for $conn {
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

            fn all_leases(&mut self) -> QueryResult<Vec<Lease>> {
                leases::table
                    .order(leases::remote_id)
                    .select(Lease::as_select())
                    .load(self)
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
        }
    };
}

impl_workers_store!(SqliteConnection);
impl_workers_store!(PgConnection);
impl_workers_store!(MysqlConnection);
