//! The writes MySQL spells differently from SQLite and PostgreSQL: no
//! RETURNING (the new id is `LAST_INSERT_ID()`, per connection), upserts
//! with REPLACE, and a hold far in the future that its TIMESTAMP binding
//! cannot carry.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::*;
use crate::db::schema::*;

/// Writes MySQL spells differently: it has no RETURNING (the new id is
/// `LAST_INSERT_ID()`, per connection) and upserts with REPLACE.
pub(super) trait Writes {
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
