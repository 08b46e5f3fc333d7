//! Every query, written once and compiled for every backend: each table
//! group's trait (items, runs, components, claims, workers, control, rates,
//! results, chains, usage, pages, the kept tallies) is implemented for `SqliteConnection`,
//! `PgConnection` and `MysqlConnection` by one macro body in its own file.
//! What the backends write differently is in [`writes`] (RETURNING,
//! upserts) and [`claims`] (row locks, and PostgreSQL's claim in one
//! statement); [`Store`] is the umbrella the tools take.

pub mod chain;
mod changes;
pub mod claims;
pub mod components;
pub mod control;
pub mod items;
pub mod pages;
pub mod rates;
pub mod results;
pub mod runs;
pub mod tallies;
pub mod usage;
pub mod workers;
mod writes;

pub use chain::ChainStore;
pub use changes::ComponentChanges;
pub use claims::{ClaimFilter, ClaimStore, TargetScope};
pub use components::ComponentStore;
pub use control::ControlStore;
pub use items::ItemStore;
pub use pages::PageStore;
pub use rates::RateStore;
pub use results::{ResultFilter, ResultStore};
pub use runs::{RunChanges, RunStore};
pub use tallies::TallyStore;
pub use usage::UsageStore;
pub use workers::WorkerStore;

use super::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use super::Backend;

/// Rows written per INSERT: under SQLite's and PostgreSQL's bind limits.
const CHUNK: usize = 1000;

/// Every query offload runs. Object safe, so tool code takes `&mut dyn
/// Store` inside [`super::Db::tx`] and never names a backend.
pub trait Store:
    ItemStore
    + RunStore
    + ComponentStore
    + ClaimStore
    + WorkerStore
    + ControlStore
    + RateStore
    + ResultStore
    + ChainStore
    + UsageStore
    + PageStore
    + TallyStore
{
    fn backend(&self) -> Backend;
}

impl Store for SqliteConnection {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }
}

impl Store for PgConnection {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }
}

impl Store for MysqlConnection {
    fn backend(&self) -> Backend {
        Backend::Mysql
    }
}
