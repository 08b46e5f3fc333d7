//! The queries of chained stages (`crate::chain`): a stage's work items of
//! one label, a work item created at most once, and the lock that orders
//! the transactions that decide whether a group is complete. Written once
//! for every backend, as the rest of [`super`].

use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use diesel::prelude::*;

use crate::db::models::{NewWorkItem, WorkItem};
use crate::db::schema::*;

pub trait ChainStore {
    /// Order the transactions that look at whole groups: on PostgreSQL and
    /// MySQL one lock, held to the end of the transaction, so a transaction that
    /// marks a group's last items done sees what the ones before it
    /// committed. (An SQLite write transaction holds the whole database.)
    fn lock_groups(&mut self) -> QueryResult<()>;
    /// The work items of a label and stage, by stage_id.
    fn stage_items(&mut self, label: &str, stage: &str) -> QueryResult<Vec<WorkItem>>;
    /// Insert a work item unless one of its stage and stage_id exists
    /// (ON CONFLICT DO NOTHING): 1 when inserted, 0 when it was there.
    fn insert_work_item_once(&mut self, item: &NewWorkItem) -> QueryResult<usize>;
}

/// What differs: the lock, and inserting a row unless its key exists.
trait GroupLock {
    fn group_lock(&mut self) -> QueryResult<()>;
    fn insert_once(&mut self, item: &NewWorkItem) -> QueryResult<usize>;
}

macro_rules! on_conflict_do_nothing {
    () => {
        fn insert_once(&mut self, item: &NewWorkItem) -> QueryResult<usize> {
            diesel::insert_into(work_items::table)
                .values(item)
                .on_conflict_do_nothing()
                .execute(self)
        }
    };
}

impl GroupLock for SqliteConnection {
    fn group_lock(&mut self) -> QueryResult<()> {
        Ok(())
    }

    on_conflict_do_nothing!();
}

impl GroupLock for PgConnection {
    fn group_lock(&mut self) -> QueryResult<()> {
        // The key is offload's own: "chain" in ASCII.
        diesel::sql_query("SELECT pg_advisory_xact_lock(426883901806)")
            .execute(self)
            .map(|_| ())
    }

    on_conflict_do_nothing!();
}

impl GroupLock for MysqlConnection {
    fn group_lock(&mut self) -> QueryResult<()> {
        // A row lock, held to the end of the transaction (migrations/mysql).
        crate::db::mysql_lock_row(self, "chain")
    }

    fn insert_once(&mut self, item: &NewWorkItem) -> QueryResult<usize> {
        // MySQL's ON DUPLICATE KEY counts a kept row as 1, and INSERT IGNORE
        // would hide other errors: try the insert in a savepoint instead.
        let tried = self.transaction(|c| {
            diesel::insert_into(work_items::table)
                .values(item)
                .execute(c)
        });
        match tried {
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(0),
            other => other,
        }
    }
}

macro_rules! impl_chain_store {
    ($conn:ty) => {
        impl ChainStore for $conn {
            fn lock_groups(&mut self) -> QueryResult<()> {
                self.group_lock()
            }

            fn stage_items(&mut self, label: &str, stage: &str) -> QueryResult<Vec<WorkItem>> {
                work_items::table
                    .filter(work_items::label.eq(label))
                    .filter(work_items::stage.eq(stage))
                    .order(work_items::stage_id.asc())
                    .select(WorkItem::as_select())
                    .load(self)
            }

            fn insert_work_item_once(&mut self, item: &NewWorkItem) -> QueryResult<usize> {
                self.insert_once(item)
            }
        }
    };
}

impl_chain_store!(SqliteConnection);
impl_chain_store!(PgConnection);
impl_chain_store!(MysqlConnection);
