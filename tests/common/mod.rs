//! Test support: a fresh database of each backend per test, and the
//! `remotetool` binary pointed at it in an empty home.
//!
//! PostgreSQL comes from `scripts/testbed up` (URL in $OFFLOAD_TEST_PG_URL,
//! default the testbed's). A PostgreSQL test that cannot reach its server
//! fails: it never skips.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::Connection;

pub const DEFAULT_PG_URL: &str = "postgres://offload:offload@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub kind: Kind,
    /// What `--db` gets.
    pub url: String,
    /// An empty home for the tool: no configuration, no default database.
    pub home: tempfile::TempDir,
    pg: Option<(String, String)>,
}

fn admin_url() -> String {
    std::env::var("OFFLOAD_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("PostgreSQL URL ends in /DATABASE");
    format!("{base}/{name}")
}

pub fn admin() -> PgConnection {
    let url = admin_url();
    PgConnection::establish(&url).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL test server unreachable at {url}: {e}\n\
             Start it with `scripts/testbed up` (as root), or set OFFLOAD_TEST_PG_URL. \
             PostgreSQL tests never skip."
        )
    })
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    pub fn new(kind: Kind) -> TestDb {
        let home = tempfile::tempdir().expect("temp dir");
        match kind {
            Kind::Sqlite => {
                let url = home.path().join("test.db").to_string_lossy().into_owned();
                TestDb {
                    kind,
                    url,
                    home,
                    pg: None,
                }
            }
            Kind::Postgres => {
                let name = format!(
                    "offload_test_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .subsec_nanos()
                );
                admin()
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create test database");
                let url = with_database(&admin_url(), &name);
                TestDb {
                    kind,
                    url,
                    home,
                    pg: Some((admin_url(), name)),
                }
            }
        }
    }

    /// `remotetool --db URL` in an empty home, with no OFFLOAD_* variables.
    pub fn remotetool(&self) -> assert_cmd::Command {
        let mut c = self.bare("remotetool");
        c.arg("--db").arg(&self.url);
        c
    }

    /// A tool without `--db`, in the empty home.
    pub fn bare(&self, tool: &str) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin(tool).expect("binary built");
        isolate(&mut c, self.home.path());
        c
    }

    /// The same, as a std Command (for processes run side by side).
    pub fn std_remotetool(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("remotetool"));
        c.env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("OFFLOAD_DB")
            .env_remove("OFFLOAD_CONFIG")
            .arg("--db")
            .arg(&self.url);
        c
    }

    pub fn open(&self) -> offload::db::Db {
        offload::db::Db::open(&self.url).expect("open test database")
    }

    /// Write a file in the test's home and return its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.home.path().join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    /// Import `items` (JSON Lines) and check it worked.
    pub fn import(&self, items: &str) {
        self.remotetool()
            .args(["import", "-"])
            .write_stdin(items.to_string())
            .assert()
            .success();
    }
}

pub fn isolate(c: &mut assert_cmd::Command, home: &Path) {
    c.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("OFFLOAD_DB")
        .env_remove("OFFLOAD_CONFIG")
        .timeout(std::time::Duration::from_secs(120));
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((_, name)) = &self.pg {
            if let Ok(mut c) = PgConnection::establish(&admin_url()) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// Work items as JSON Lines: `exposures` x `chips` of stage `stage`.
pub fn items(label: &str, stage: &str, exposures: usize, chips: usize, first_id: i64) -> String {
    let mut out = String::new();
    let mut id = first_id;
    for e in 0..exposures {
        for c in 0..chips {
            out.push_str(&format!(
                "{{\"stage\":\"{stage}\",\"stage_id\":{id},\"label\":\"{label}\",\"priority\":0,\
                 \"params\":{{\"EXP_NAME\":\"o5745g{e:04}o\",\"CHIP\":\"XY{c:02}\"}}}}\n"
            ));
            id += 1;
        }
    }
    out
}

pub fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// Define one test per backend from one body:
/// `both_backends! { fn name(db) { ... } }` makes `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($(fn $name:ident($db:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                fn body($db: &common::TestDb) $body
                #[test]
                fn sqlite() {
                    body(&common::TestDb::new(common::Kind::Sqlite))
                }
                #[test]
                fn postgres() {
                    body(&common::TestDb::new(common::Kind::Postgres))
                }
            }
        )*
    };
}
