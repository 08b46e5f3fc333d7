//! Benchmark: define one run from the full chip fixture (620 exposures x 60
//! chips = 37,200 work items), goal <= 1 s, on SQLite and PostgreSQL.
//!
//! Side by side with the hand-written SQL an operator would otherwise run
//! (the same INSERT ... SELECT through the `sqlite3`, `psql` and `mysql` clients), so
//! the ratio shows what offload adds on top of the database's own work.
//!
//!     scripts/testbed up && cargo bench --bench define
//!
//! Each figure is the best of 3 runs, each on a freshly imported database,
//! timing the whole `remotetool define` process (start, open, migrate
//! check, define, commit).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LABEL: &str = "lanl.SAS.201402114";
const ROUNDS: usize = 3;

fn fixture() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/gen-chip-items.py"
        ))
        .stdout(f.reopen().unwrap())
        .status()
        .expect("python3 runs the fixture generator");
    assert!(status.success());
    f
}

fn remotetool(db: &common::TestDb) -> Command {
    let mut c = db.std_remotetool();
    c.arg("--quiet").stdout(Stdio::null());
    c
}

fn import(db: &common::TestDb, items: &std::path::Path) {
    let s = remotetool(db).arg("import").arg(items).status().unwrap();
    assert!(s.success());
}

fn time(mut c: Command) -> Duration {
    let t = Instant::now();
    let out = c.output().unwrap();
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

/// The same work as `remotetool define`, as plain SQL.
fn sql(now: &str) -> String {
    format!(
        "BEGIN;\n\
         INSERT INTO remote_runs (state, stage, label, path_base, job_policy, attempt, fault, created_at, updated_at) \
           VALUES ('new', 'chip', '{LABEL}', '/tmp/pb', 'fatal', 0, 0, '{now}', '{now}');\n\
         INSERT INTO remote_components (remote_id, work_item_id, created_at, updated_at) \
           SELECT (SELECT max(remote_id) FROM remote_runs), id, '{now}', '{now}' FROM work_items \
           WHERE label = '{LABEL}' AND stage = 'chip' AND state = 'ready' \
           AND NOT EXISTS (SELECT 1 FROM remote_components c WHERE c.work_item_id = work_items.id AND c.active) \
           ORDER BY priority DESC, id;\n\
         COMMIT;\n"
    )
}

fn peer(db: &common::TestDb) -> Command {
    let now = "2026-11-25 00:00:00";
    match db.kind {
        common::Kind::Sqlite => {
            let mut c = Command::new("sqlite3");
            c.arg(&db.url).arg(sql(now)).stdout(Stdio::null());
            c
        }
        common::Kind::Postgres => {
            let mut c = Command::new("psql");
            c.arg("-qX")
                .arg(&db.url)
                .arg("-c")
                .arg(sql(now))
                .stdout(Stdio::null());
            c
        }
        common::Kind::Mysql => {
            // mysql://USER:PASSWORD@HOST:PORT/DATABASE
            let re = regex::Regex::new(r"^mysql://([^:]+):([^@]*)@([^:/]+):(\d+)/(.+)$").unwrap();
            let m = re
                .captures(&db.url)
                .expect("a mysql:// URL with user, password, host and port");
            let mut c = Command::new("mysql");
            c.arg(format!("-u{}", &m[1]))
                .arg(format!("-p{}", &m[2]))
                .arg(format!("-h{}", &m[3]))
                .arg(format!("-P{}", &m[4]))
                .arg(&m[5])
                .arg("-e")
                .arg(sql(now))
                .stdout(Stdio::null());
            c
        }
    }
}

fn best(
    kind: common::Kind,
    items: &std::path::Path,
    what: impl Fn(&common::TestDb) -> Command,
) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let db = common::TestDb::new(kind);
            import(&db, items);
            time(what(&db))
        })
        .min()
        .unwrap()
}

/// Define half the items, then time defining the other half: the select
/// must skip items already in runs through an index, not a scan.
fn second_half(kind: common::Kind, items: &std::path::Path) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let db = common::TestDb::new(kind);
            import(&db, items);
            let half = |db: &common::TestDb| {
                let mut c = remotetool(db);
                c.args([
                    "define", "--label", LABEL, "--stage", "chip", "--limit", "18600",
                ]);
                c
            };
            time(half(&db));
            time(half(&db))
        })
        .min()
        .unwrap()
}

fn main() {
    let items = fixture();
    println!("define 18,600 work items beside 18,600 already in a run (best of {ROUNDS})");
    for (kind, name) in [
        (common::Kind::Sqlite, "SQLite"),
        (common::Kind::Postgres, "PostgreSQL"),
        (common::Kind::Mysql, "MariaDB"),
    ] {
        println!(
            "{:<11} {:>10.3} s",
            name,
            second_half(kind, items.path()).as_secs_f64()
        );
    }
    println!();
    println!("define 37,200 work items into one run (best of {ROUNDS}, whole process)");
    println!(
        "{:<11} {:>12} {:>14} {:>7} {:>6}",
        "backend", "remotetool", "plain SQL", "ratio", "goal"
    );
    for (kind, name) in [
        (common::Kind::Sqlite, "SQLite"),
        (common::Kind::Postgres, "PostgreSQL"),
        (common::Kind::Mysql, "MariaDB"),
    ] {
        let ours = best(kind, items.path(), |db| {
            let mut c = remotetool(db);
            c.args([
                "define",
                "--label",
                LABEL,
                "--stage",
                "chip",
                "--path-base",
                "/tmp/pb",
            ]);
            c
        });
        let theirs = best(kind, items.path(), peer);
        println!(
            "{:<11} {:>10.3} s {:>12.3} s {:>6.2}x {:>6}",
            name,
            ours.as_secs_f64(),
            theirs.as_secs_f64(),
            ours.as_secs_f64() / theirs.as_secs_f64(),
            if ours <= Duration::from_secs(1) {
                "met"
            } else {
                "MISSED"
            }
        );
    }
}
