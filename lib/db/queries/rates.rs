//! The queries of the measured transfer rates, per front end and
//! direction, which the transfer plan and the forecasts read. Written once
//! for every backend (see [`super`]).

use diesel::prelude::*;

use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::*;
use crate::db::schema::*;

pub trait RateStore {
    fn insert_rate(&mut self, row: &NewRate) -> QueryResult<()>;

    /// (bytes, seconds) of the newest `limit` transfers to or from these hosts.
    fn rates(
        &mut self,
        hosts: &[String],
        direction: &str,
        limit: i64,
    ) -> QueryResult<Vec<(i64, f64)>>;
}

macro_rules! impl_rates_store {
    ($conn:ty) => {
        impl RateStore for $conn {
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
        }
    };
}

impl_rates_store!(SqliteConnection);
impl_rates_store!(PgConnection);
impl_rates_store!(MysqlConnection);
