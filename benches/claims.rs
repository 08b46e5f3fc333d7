//! Benchmark: `--next` claims per second (goal >= 1,000/s on PostgreSQL),
//! with 1, 4 and 8 claimers at once, each on its own connection. Each
//! claim is what a tool does around its work: claim the oldest `new` run,
//! then move it to `pending` (with its history row; the transition gives
//! the lease back in the same commit), then `runs::release` as the tools
//! call it after their work (it finds nothing left to delete).
//!
//! Side by side with the smallest claim a hand-written script could make:
//! one SQL statement that moves the oldest `new` run to `pending`
//! (PostgreSQL: `UPDATE ... WHERE remote_id = (SELECT ... FOR UPDATE SKIP
//! LOCKED)`; SQLite: `UPDATE ... WHERE remote_id = (SELECT ... LIMIT 1)`),
//! which skips everything offload does per claim: the pause check, the
//! lease with its holder and heartbeat, the host's claim policy, the retry.
//!
//!     scripts/testbed up && cargo bench --bench claims

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use offload::config::ClaimPolicy;
use offload::db::models::NewRun;
use offload::runs::{self, Actor};
use offload::state::RunState;

const RUNS: usize = 4000;

fn fill(db: &common::TestDb) {
    let mut c = db.open();
    let now = offload::db::now();
    c.tx(|s| {
        for _ in 0..RUNS {
            s.insert_run(&NewRun {
                state: offload::state::RunState::New,
                stage: "chip",
                label: "bench",
                path_base: "/tmp/bench",
                target: None,
                job_policy: offload::state::JobPolicy::Fatal,
                attempt: 0,
                fault: 0,
                created_at: now,
                updated_at: now,
                state_since: now,
            })?;
        }
        Ok(())
    })
    .unwrap();
}

/// (claims per second counting only the time spent claiming, whole
/// cycles per second) of offload's `claim_next` with `threads` claimers.
fn offload_claims(kind: common::Kind, threads: usize) -> (f64, f64) {
    let db = common::TestDb::new(kind);
    fill(&db);
    let policy = ClaimPolicy::default();
    let t = Instant::now();
    let per_thread: Vec<(usize, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut c = db.open();
                    let actor = Actor::current("prepare");
                    let mut n = 0;
                    let mut claiming = 0.0;
                    loop {
                        let t = Instant::now();
                        let claimed =
                            runs::claim_next(&mut c, RunState::New, &policy, &actor).unwrap();
                        claiming += t.elapsed().as_secs_f64();
                        let Some(run) = claimed else { break };
                        c.tx(|s| {
                            runs::transition_in(
                                s,
                                &run,
                                RunState::Pending,
                                &actor,
                                "claimed",
                                Default::default(),
                            )?;
                            Ok(())
                        })
                        .unwrap();
                        // As the tools do (runs::work_on): the transition
                        // gave the lease back; this finds it gone.
                        runs::release(&mut c, run.remote_id, &actor).unwrap();
                        n += 1;
                    }
                    (n, claiming)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = t.elapsed().as_secs_f64();
    let total: usize = per_thread.iter().map(|p| p.0).sum();
    let claiming = per_thread.iter().map(|p| p.1).sum::<f64>() / threads as f64;
    assert_eq!(total, RUNS, "every run claimed exactly once");
    let mut c = db.open();
    assert!(c.read(|s| s.all_leases()).unwrap().is_empty());
    let history = c.read(|s| s.history(None, 1_000_000)).unwrap();
    assert_eq!(history.len(), RUNS, "one transition per run");
    (total as f64 / claiming, total as f64 / secs)
}

/// Claims per second of the one-statement claim.
fn sql_claims(kind: common::Kind, threads: usize) -> f64 {
    let db = common::TestDb::new(kind);
    fill(&db);
    let stmt = match kind {
        common::Kind::Postgres => "UPDATE remote_runs SET state = 'pending' WHERE remote_id = \
             (SELECT remote_id FROM remote_runs WHERE state = 'new' ORDER BY remote_id LIMIT 1 FOR UPDATE SKIP LOCKED)",
        common::Kind::Sqlite => "UPDATE remote_runs SET state = 'pending' WHERE remote_id = \
             (SELECT remote_id FROM remote_runs WHERE state = 'new' ORDER BY remote_id LIMIT 1)",

        // MySQL cannot update the table its subquery reads: the same lock,
        // then the update, in one transaction (below).
        common::Kind::Mysql => "SELECT remote_id FROM remote_runs WHERE state = 'new' \
             ORDER BY remote_id LIMIT 1 FOR UPDATE SKIP LOCKED",
    };
    let t = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let url = db.url.clone();
                s.spawn(move || {
                    let mut n = 0;
                    match kind {
                        common::Kind::Postgres => {
                            let mut c = offload::db::drivers::PgConnection::establish(&url).unwrap();
                            while diesel::sql_query(stmt).execute(&mut c).unwrap() == 1 {
                                n += 1;
                            }
                        }
                        common::Kind::Mysql => {
                            use diesel::sql_types::BigInt;
                            #[derive(diesel::QueryableByName)]
                            struct Id {
                                #[diesel(sql_type = BigInt)]
                                remote_id: i64,
                            }
                            let mut c = offload::db::drivers::MysqlConnection::establish(&url).unwrap();
                            c.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                                .unwrap();
                            loop {
                                let took = c
                                    .transaction::<_, diesel::result::Error, _>(|c| {
                                        let ids: Vec<Id> = diesel::sql_query(stmt).load(c)?;
                                        let Some(id) = ids.first() else {
                                            return Ok(false);
                                        };
                                        diesel::sql_query(
                                            "UPDATE remote_runs SET state = 'pending' WHERE remote_id = ?",
                                        )
                                        .bind::<BigInt, _>(id.remote_id)
                                        .execute(c)?;
                                        Ok(true)
                                    })
                                    .unwrap();
                                if !took {
                                    break;
                                }
                                n += 1;
                            }
                        }
                        common::Kind::Sqlite => {
                            let mut c = diesel::sqlite::SqliteConnection::establish(&url).unwrap();
                            c.batch_execute("PRAGMA busy_timeout = 30000;").unwrap();
                            loop {
                                match diesel::sql_query(stmt).execute(&mut c) {
                                    Ok(1) => n += 1,
                                    Ok(_) => break,
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(total, RUNS);
    total as f64 / secs
}

use diesel::RunQueryDsl;

fn main() {
    println!("claims of {RUNS} new runs, each claimer on its own connection (higher is better)");
    println!("claim/s: claims per second of the time claimers spent claiming;");
    println!("cycle/s: whole cycles (claim; move to pending, the lease given back with it; release) per second");
    println!(
        "{:<11} {:>8} {:>10} {:>10} {:>12} {:>13} {:>13}",
        "backend", "claimers", "claim/s", "cycle/s", "one-stmt/s", "claim/1-stmt", "cycle/1-stmt"
    );
    for (kind, name, threads) in [
        (
            common::Kind::Postgres,
            "postgresql",
            [1usize, 4, 8].as_slice(),
        ),
        (common::Kind::Mysql, "mariadb", [1usize, 4, 8].as_slice()),
        (common::Kind::Sqlite, "sqlite", [1usize, 4].as_slice()),
    ] {
        for &t in threads {
            let (claim, cycle) = offload_claims(kind, t);
            let peer = sql_claims(kind, t);
            println!(
                "{name:<11} {t:>8} {claim:>10.0} {cycle:>10.0} {peer:>12.0} {:>13.2} {:>13.2}",
                claim / peer,
                cycle / peer
            );
        }
    }
    println!("goal: >= 1,000 claims/s and >= 1,000 whole cycles/s on PostgreSQL");
}
