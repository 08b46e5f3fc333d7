//! The queries of the pauses: one `control` row per paused tool (or
//! `TOOL@TARGET`). Written once for every backend (see [`super`]).

use diesel::prelude::*;

use super::writes::Writes;
use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::*;
use crate::db::schema::*;

pub trait ControlStore {
    fn set_control(&mut self, row: &Control) -> QueryResult<()>;

    fn controls(&mut self) -> QueryResult<Vec<Control>>;
}

macro_rules! impl_control_store {
    ($conn:ty) => {
        impl ControlStore for $conn {
            fn set_control(&mut self, row: &Control) -> QueryResult<()> {
                Writes::upsert_control(self, row)
            }

            fn controls(&mut self) -> QueryResult<Vec<Control>> {
                control::table
                    .order(control::tool)
                    .select(Control::as_select())
                    .load(self)
            }
        }
    };
}

impl_control_store!(SqliteConnection);
impl_control_store!(PgConnection);
impl_control_store!(MysqlConnection);
