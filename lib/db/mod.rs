//! The database: SQLite by default (a file, nothing to install), PostgreSQL
//! by URL when several hosts share the work, MySQL/MariaDB by URL where the
//! pipeline's own database is one. Opening applies the embedded migrations
//! of the backend and refuses a database written by a newer offload.

pub mod drivers;
pub mod models;
pub mod queries;
pub mod schema;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use drivers::{MysqlConnection, PgConnection, SqliteConnection};

pub use queries::{chain, results, usage, Store};

use crate::exit;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// How long a SQLite writer waits for another before giving up (ms).
const SQLITE_BUSY_MS: u32 = 30_000;
/// PostgreSQL advisory lock key held while migrating ("offload" in ASCII).
const MIGRATION_LOCK: i64 = 0x006f_6666_6c6f_6164;
/// MySQL's named lock held while migrating, and how long to wait for it (s).
const MYSQL_MIGRATION_LOCK: &str = "offload-migrations";
const MYSQL_MIGRATION_WAIT_S: u32 = 120;
/// How long a MySQL statement waits for a row lock before giving up (s).
const MYSQL_LOCK_WAIT_S: u32 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

/// An open database of any backend, and where it is (for messages).
pub struct Db {
    pub conn: Conn,
    /// The path, or the URL without its password.
    location: String,
}

/// The connection of a [`Db`] (the server connections, with their
/// runtimes, boxed: they are several times an SQLite connection's size).
pub enum Conn {
    Sqlite(SqliteConnection),
    Postgres(Box<PgConnection>),
    Mysql(Box<MysqlConnection>),
}

/// Where a database lives, parsed from a URL or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
    Mysql(String),
}

impl Location {
    pub fn parse(url: &str) -> Location {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Location::Postgres(url.to_string())
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            // diesel knows the scheme mysql:// only; MariaDB speaks the same.
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            Location::Mysql(format!("mysql://{rest}"))
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            Location::Sqlite(PathBuf::from(path))
        }
    }

    /// For messages: the path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) | Location::Mysql(url) => redact(url),
        }
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let re = regex::Regex::new(r"^(?P<pre>[a-z]+://[^:/@]+:)[^@]*@").expect("valid regex");
    re.replace(url, "${pre}***@").into_owned()
}

impl Db {
    /// Open (and migrate) the database at a URL or path.
    pub fn open(url: &str) -> anyhow::Result<Db> {
        let loc = Location::parse(url);
        let conn = match &loc {
            Location::Sqlite(path) => open_sqlite(path).map(Conn::Sqlite),
            Location::Postgres(url) => open_postgres(url).map(|c| Conn::Postgres(Box::new(c))),
            Location::Mysql(url) => open_mysql(url).map(|c| Conn::Mysql(Box::new(c))),
        }
        .with_context(|| format!("database {}", loc.display()))
        .map_err(busy_means_later)
        .map_err(|e| {
            if out_of_space(&e) {
                crate::exit::with_status(e, crate::exit::ExitStatus::Local)
            } else {
                e
            }
        })?;
        Ok(Db {
            conn,
            location: loc.display(),
        })
    }

    /// An error of this database, marked: busy means "try later" (exit 4);
    /// no room to write means this machine's (or the server's) storage
    /// (exit 6), named with the database. A failed transaction wrote
    /// nothing: it was rolled back.
    fn mark(&self, e: anyhow::Error) -> anyhow::Error {
        let e = busy_means_later(e);
        if !out_of_space(&e) {
            return e;
        }
        crate::exit::with_status(
            e.context(format!(
                "database {} has no room to write; nothing was written (the transaction was rolled back): \
                 make room where it keeps its files, then run again",
                self.location
            )),
            crate::exit::ExitStatus::Local,
        )
    }

    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
            Conn::Mysql(_) => Backend::Mysql,
        }
    }

    /// Run `f` in one transaction: committed when it returns Ok, rolled back
    /// otherwise. On SQLite the transaction takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so writers queue instead of failing on upgrade.
    pub fn tx<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Store) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let done = match &mut self.conn {
            Conn::Sqlite(c) => c.immediate_transaction(|c| f(c)),
            Conn::Postgres(c) => c.transaction(|c| f(c)),
            Conn::Mysql(c) => c.transaction(|c| f(c)),
        };
        done.map_err(|e| self.mark(e))
    }

    /// One statement on its own (committed by itself), no transaction
    /// around it: for single writes that need none.
    pub fn single<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Store) -> QueryResult<T>,
    ) -> anyhow::Result<T> {
        self.read(f)
    }

    /// Read without a transaction of our own.
    pub fn read<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Store) -> QueryResult<T>,
    ) -> anyhow::Result<T> {
        let done = match &mut self.conn {
            Conn::Sqlite(c) => f(c),
            Conn::Postgres(c) => f(c.as_mut()),
            Conn::Mysql(c) => f(c.as_mut()),
        };
        done.map_err(|e| self.mark(e.into()))
    }
}

fn open_sqlite(path: &Path) -> anyhow::Result<SqliteConnection> {
    if path.as_os_str() != ":memory:" {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                if path == crate::config::default_db_path() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create folder {}", dir.display()))?;
                } else {
                    return Err(exit::usage(format!(
                        "folder {} does not exist: create it, or give another --db",
                        dir.display()
                    )));
                }
            }
        }
    }
    let path_str = path
        .to_str()
        .ok_or_else(|| exit::usage(format!("database path {} is not UTF-8", path.display())))?;
    let mut c = SqliteConnection::establish(path_str).map_err(|e| anyhow!("cannot open: {e}"))?;
    c.batch_execute(&format!(
        "PRAGMA busy_timeout = {SQLITE_BUSY_MS}; PRAGMA foreign_keys = ON;"
    ))?;
    // WAL lets readers work while one process writes; it needs the lock too.
    c.batch_execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .context("cannot open (is this an SQLite database file?)")?;
    c.immediate_transaction(|c| migrate(c, SQLITE_MIGRATIONS))?;
    Ok(c)
}

fn open_postgres(url: &str) -> anyhow::Result<PgConnection> {
    let mut c = drivers::connect_postgres(url).map_err(|e| {
        anyhow!(
            "cannot connect: {}; check that the server runs and the URL, user and password are right",
            e.to_string().trim().replace('\n', " ")
        )
    })?;
    c.transaction(|c| {
        c.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))?;
        migrate(c, POSTGRES_MIGRATIONS)
    })?;
    Ok(c)
}

fn open_mysql(url: &str) -> anyhow::Result<MysqlConnection> {
    let mut c = drivers::connect_mysql(url).map_err(|e| {
        anyhow!(
            "cannot connect: {}; check that the server runs and the URL, user and password are right",
            e.to_string().trim().replace('\n', " ")
        )
    })?;
    // PostgreSQL's isolation: each statement sees what others committed
    // before it (InnoDB's default would keep the transaction's first view).
    // Times are UTC, as stored.
    c.batch_execute(&format!(
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; \
         SET SESSION innodb_lock_wait_timeout = {MYSQL_LOCK_WAIT_S}; \
         SET SESSION time_zone = '+00:00'; \
         SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_TRANS_TABLES')"
    ))
    .context("cannot set the session up")?;
    // Schema changes commit on their own in MySQL: a named lock keeps two
    // openers from migrating at once.
    let got: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "COALESCE(GET_LOCK('{MYSQL_MIGRATION_LOCK}', {MYSQL_MIGRATION_WAIT_S}), 0)"
    )))
    .get_result(&mut c)
    .context("cannot take the migration lock")?;
    if got != 1 {
        return Err(exit::with_status(
            anyhow!(
                "another offload has been migrating this database for {MYSQL_MIGRATION_WAIT_S} s"
            ),
            exit::ExitStatus::TryLater,
        ));
    }
    let migrated = migrate(&mut c, MYSQL_MIGRATIONS);
    let _ = c.batch_execute(&format!("DO RELEASE_LOCK('{MYSQL_MIGRATION_LOCK}')"));
    migrated.map_err(mysql_migration_hint)?;
    Ok(c)
}

/// A migration MySQL refused for want of SUPER on a server that keeps a
/// binary log (error 1419: offload's triggers, see migrations/mysql),
/// with what the database's administrator can do about it.
fn mysql_migration_hint(e: anyhow::Error) -> anyhow::Error {
    if format!("{e:#}").contains("binary logging is enabled") {
        e.context(
            "this MySQL/MariaDB server keeps a binary log, and creating offload's triggers there \
             needs more than the usual rights: ask its administrator to set \
             log_bin_trust_function_creators = 1 (my.cnf, [mysqld]; or SET GLOBAL), or to grant \
             this user BINLOG ADMIN (MariaDB 10.5 and later) or SUPER; then run again \
             (the migration starts over cleanly)",
        )
    } else {
        e
    }
}

/// MySQL's stand-in for a PostgreSQL advisory transaction lock: the row
/// `name` of `offload_locks` (migrations/mysql), locked to the end of the
/// transaction.
fn mysql_lock_row(c: &mut MysqlConnection, name: &str) -> QueryResult<()> {
    diesel::sql_query("SELECT name FROM offload_locks WHERE name = ? FOR UPDATE")
        .bind::<diesel::sql_types::Text, _>(name)
        .execute(c)
        .map(|_| ())
}

/// Refuse a database newer than this binary, then apply what is pending.
fn migrate<C, DB>(c: &mut C, migrations: EmbeddedMigrations) -> anyhow::Result<()>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB> + Connection<Backend = DB>,
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    use diesel::migration::MigrationSource;
    let known: Vec<String> = MigrationSource::<DB>::migrations(&migrations)
        .map_err(|e| anyhow!("embedded migrations: {e}"))?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    let applied: Vec<String> = c
        .applied_migrations()
        .map_err(|e| anyhow!("cannot read the schema version: {e}"))?
        .iter()
        .map(|v| v.to_string())
        .collect();
    if let Some(newer) = applied.iter().find(|v| !known.contains(v)) {
        return Err(exit::usage(format!(
            "written by a newer offload (schema version {newer}; this offload {} knows up to {}): \
             run the newer offload, or point --db at another database",
            env!("CARGO_PKG_VERSION"),
            known.last().map(String::as_str).unwrap_or("none")
        )));
    }
    c.run_pending_migrations(migrations)
        .map_err(|e| anyhow!("cannot apply migrations: {e}"))?;
    Ok(())
}

/// An error of the database that means "busy" carries the status "try
/// later" (exit 4): the same command may succeed then.
pub fn busy_means_later(e: anyhow::Error) -> anyhow::Error {
    let busy = e
        .chain()
        .any(|c| c.downcast_ref::<DieselError>().is_some_and(is_busy));
    if busy {
        crate::exit::with_status(e, crate::exit::ExitStatus::TryLater)
    } else {
        e
    }
}

/// A lock wait that ran out, or a conflict with a concurrent writer: the
/// same command may succeed later.
pub fn is_busy(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(kind, info) => {
            matches!(kind, DatabaseErrorKind::SerializationFailure)
                || info.message().contains("database is locked")
                || info.message().contains("database table is locked")
                // MySQL/MariaDB: a deadlock victim, a row lock waited for too long.
                || info.message().contains("Deadlock found")
                || info.message().contains("Lock wait timeout exceeded")
        }
        _ => false,
    }
}

/// The database had no room to write: SQLite's "database or disk is
/// full", PostgreSQL's "could not extend file" / "No space left on device"
/// (disk_full), MySQL's and MariaDB's "The table ... is full" or a disk
/// full error.
pub fn out_of_space(e: &anyhow::Error) -> bool {
    e.chain().any(|c| match c.downcast_ref::<DieselError>() {
        Some(DieselError::DatabaseError(_, info)) => no_room(info.message()),
        _ => c
            .downcast_ref::<diesel::ConnectionError>()
            .is_some_and(|ce| no_room(&ce.to_string())),
    })
}

fn no_room(m: &str) -> bool {
    m.contains("database or disk is full")
        || m.contains("No space left on device")
        || m.contains("could not extend file")
        || m.contains("Disk full")
        || (m.starts_with("The table") && m.contains("is full"))
}

/// A unique index refused a row.
pub fn is_unique_violation(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<DieselError>(),
            Some(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    })
}

/// Current time as stored: UTC, microseconds (PostgreSQL's precision).
pub fn now() -> chrono::NaiveDateTime {
    let t = chrono::Utc::now().naive_utc();
    chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::microseconds(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mysql_server_with_a_binary_log_gets_the_way_out() {
        let refused = anyhow!("Migration failed: You do not have the SUPER privilege and binary logging is enabled (you *might* want to use the less safe log_bin_trust_function_creators variable)");
        let said = format!("{:#}", mysql_migration_hint(refused));
        assert!(
            said.contains("log_bin_trust_function_creators = 1") && said.contains("BINLOG ADMIN"),
            "{said}"
        );
        assert!(
            said.ends_with("variable)"),
            "the server's own words last: {said}"
        );
        let other = format!(
            "{:#}",
            mysql_migration_hint(anyhow!("Table 'x' already exists"))
        );
        assert_eq!(other, "Table 'x' already exists");
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("postgresql://a:b@h/d"),
            Location::Postgres("postgresql://a:b@h/d".into())
        );
        assert_eq!(
            Location::parse("sqlite:///x/y.db"),
            Location::Sqlite("/x/y.db".into())
        );
        assert_eq!(Location::parse("y.db"), Location::Sqlite("y.db".into()));
        assert_eq!(
            redact("postgres://u:secret@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
    }

    #[test]
    fn no_room_in_each_backends_words() {
        for m in [
            "database or disk is full",
            "could not extend file \"base/16384/2619\": No space left on device",
            "The table 'results' is full",
            "Disk full (/var/tmp/#sql_1.MAI); waiting for someone to free some space...",
        ] {
            assert!(no_room(m), "{m}");
        }
        assert!(!no_room("database is locked"));
        assert!(!no_room("The table 'x' doesn't exist"));
    }
}
