//! Benchmark: every page of `remotetool web`, and the snapshot, at the size
//! it will meet: 1,000,000 components in 1,000 runs over 30 labels, with
//! their work items, histories and results, on SQLite, PostgreSQL and
//! MariaDB (goals: <= 250 ms server time per page, <= 5 s for the
//! snapshot). Each page is rendered in process by the router the server
//! runs (the guard, the database thread, the template), three times; the
//! median is reported.
//!
//!     scripts/testbed up && cargo bench --bench web            # 1,000,000 components
//!     scripts/testbed up && cargo bench --bench web -- quick   # 100,000

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use offload::remotetool::web::{guard::Rules, server, worker::Worker};
use tower::ServiceExt;

const TOKEN: &str = "bench";
const HOST: &str = "127.0.0.1:8080";

/// The rows, made in the database from a table of ten digits: work item,
/// component and run numbers are sums of digits, the run a component
/// belongs to its thousands. Run r is full when r % 10 < 6 (one component
/// in 50 failed and abandoned), running at 6, in error at 7, pending at 8,
/// new at 9.
fn fill(db: &common::TestDb, digits: usize) {
    let ts = "'2026-12-06 12:00:00'";
    let d: Vec<String> = (0..digits).map(|k| format!("d{k}")).collect();
    let from = d
        .iter()
        .map(|t| format!("bench_d {t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let i = d
        .iter()
        .enumerate()
        .map(|(k, t)| format!("{}*{t}.i", 10i64.pow(k as u32)))
        .collect::<Vec<_>>()
        .join(" + ");
    // The run: the digits from the thousands up.
    let r = d
        .iter()
        .enumerate()
        .skip(3)
        .map(|(k, t)| format!("{}*{t}.i", 10i64.pow(k as u32 - 3)))
        .collect::<Vec<_>>()
        .join(" + ");
    let runs = 10i64.pow(digits as u32 - 3);
    let full = "d3.i < 6";
    let failed = "d0.i = 0 AND d1.i < 2"; // one in 50
    let mut sql = vec![
        "CREATE TABLE bench_d (i INTEGER NOT NULL)".to_string(),
        "INSERT INTO bench_d (i) VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)".to_string(),
    ];
    // Runs: 1..=runs, explicit ids.
    let rd: Vec<String> = (0..digits - 3).map(|k| format!("r{k}")).collect();
    let rfrom = rd
        .iter()
        .map(|t| format!("bench_d {t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rn = rd
        .iter()
        .enumerate()
        .map(|(k, t)| format!("{}*{t}.i", 10i64.pow(k as u32)))
        .collect::<Vec<_>>()
        .join(" + ");
    sql.push(format!(
        "INSERT INTO remote_runs (remote_id, state, stage, label, path_base, job_id, fault, message, job_policy, attempt, created_at, updated_at, state_since) \
         SELECT {rn} + 1, \
           CASE WHEN r0.i < 6 THEN 'full' WHEN r0.i = 6 THEN 'run' WHEN r0.i = 7 THEN 'error' WHEN r0.i = 8 THEN 'pending' ELSE 'new' END, \
           'chip', concat('label', ({rn}) % 30), '/data/runs', concat('', 700000 + {rn}), \
           CASE WHEN r0.i = 7 THEN 30 ELSE 0 END, CASE WHEN r0.i = 7 THEN 'job ended: 20 failed' ELSE NULL END, \
           'fatal', 0, {ts}, {ts}, {ts} FROM {rfrom}"
    ));
    sql.push(format!(
        "INSERT INTO work_items (id, stage, stage_id, label, priority, params, state, attempts, created_at, updated_at) \
         SELECT {i} + 1, 'chip', {i}, concat('label', ({r}) % 30), 0, concat('{{\"EXP_NAME\":\"o', {r}, '\",\"CHIP\":\"XY', d0.i, d1.i, '\"}}'), \
           CASE WHEN {full} AND {failed} THEN 'abandoned' WHEN {full} THEN 'done' ELSE 'ready' END, \
           CASE WHEN {full} THEN 1 ELSE 0 END, {ts}, {ts} FROM {from}"
    ));
    sql.push(format!(
        "INSERT INTO remote_components (id, remote_id, work_item_id, state, active, attempts, exit_status, runtime, fault, result, created_at, updated_at) \
         SELECT {i} + 1, {r} + 1, {i} + 1, \
           CASE WHEN ({full} OR d3.i = 7) AND {failed} THEN 'failed' WHEN {full} THEN 'done' ELSE 'queued' END, \
           CASE WHEN {full} THEN FALSE ELSE TRUE END, CASE WHEN {full} THEN 1 ELSE 0 END, \
           CASE WHEN ({full} OR d3.i = 7) AND {failed} THEN 3 WHEN {full} THEN 0 ELSE NULL END, \
           CASE WHEN {full} THEN 100 + d0.i ELSE NULL END, \
           CASE WHEN ({full} OR d3.i = 7) AND {failed} THEN 1 ELSE 0 END, \
           CASE WHEN ({full} OR d3.i = 7) AND {failed} THEN '{{\"phase\":\"command\",\"stats\":\"\",\"runtime\":100,\"start\":0,\"end\":0,\"stdout_tail\":\"\",\"stderr_tail\":\"ppImage: cannot open the flat\"}}' ELSE NULL END, \
           {ts}, {ts} FROM {from}"
    ));
    sql.push(format!(
        "INSERT INTO results (component_id, remote_id, work_item_id, attempt, state, outputs, applied_at) \
         SELECT id, remote_id, work_item_id, 1, CASE WHEN state = 'done' THEN 'done' ELSE 'abandoned' END, '[]', {ts} \
         FROM remote_components WHERE state IN ('done', 'failed') AND active = FALSE ORDER BY id"
    ));
    for step in ["new", "pending", "run", "full", "cleaned"] {
        sql.push(format!(
            "INSERT INTO history (remote_id, at, host, pid, tool, from_state, to_state, message, command) \
             SELECT remote_id, {ts}, 'ops01', 311, 'poll', NULL, '{step}', 'bench', 'poll --next' FROM remote_runs"
        ));
    }
    sql.push("DROP TABLE bench_d".to_string());
    // A server that has run a while has its statistics: PostgreSQL's
    // autovacuum analyses a table after a bulk change (here, at once).
    if db.kind == common::Kind::Postgres {
        sql.push("ANALYZE work_items, remote_runs, remote_components, results, history, run_tallies, result_hours".to_string());
    }
    let t = Instant::now();
    for s in &sql {
        db.batch(s).unwrap_or_else(|e| panic!("{e}\n{s}"));
    }
    eprintln!(
        "  filled: {} components in {runs} runs over 30 labels, with their work items, results and histories, in {:.1} s",
        10i64.pow(digits as u32),
        t.elapsed().as_secs_f64()
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(kind: common::Kind, digits: usize) {
    let db = common::TestDb::new(kind);
    fill(&db, digits);
    let cfg = db.write("config.toml", "");
    let global = offload::cli::GlobalArgs {
        db: Some(db.url.clone()),
        dbname: None,
        config: Some(cfg.clone()),
        json: false,
        quiet: true,
        verbose: false,
    };
    let app = server::router(
        Worker::start(&global).unwrap(),
        Rules::for_tcp(HOST.parse().unwrap(), TOKEN.into()),
        false,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runs = 10i64.pow(digits as u32 - 3);
    let mid = runs / 2 + 7; // an error run
    let component = 10i64.pow(digits as u32) / 2 + 1;
    let pages = [
        "/".to_string(),
        "/table".into(),
        "/table?since=24h".into(),
        "/runs".into(),
        "/runs?state=error&sort=longest".into(),
        "/runs?label=label7&page=3&per=10".into(),
        "/runs?q=700123".into(),
        "/runs?format=csv&per=1000".into(),
        format!("/runs/{mid}"),
        format!("/components/{component}"),
        "/failures".into(),
        "/failures?since=all&page=20".into(),
        "/cost".into(),
        "/hosts".into(),
        "/charts".into(),
        "/charts/throughput.csv".into(),
        "/charts/runtimes-chip.csv".into(),
    ];
    let mut worst = Duration::ZERO;
    for p in &pages {
        let mut times = Vec::new();
        for _ in 0..3 {
            let req = Request::get(p.as_str())
                .header(header::HOST, HOST)
                .header(header::COOKIE, format!("offload_token={TOKEN}"))
                .body(Body::empty())
                .unwrap();
            let t = Instant::now();
            let r = rt.block_on(async {
                let r = app.clone().oneshot(req).await.unwrap();
                let status = r.status();
                let body = axum::body::to_bytes(r.into_body(), 1 << 26).await.unwrap();
                (status, body.len())
            });
            times.push(t.elapsed());
            assert!(r.0.is_success(), "{p}: {}", r.0);
        }
        let m = median(times);
        worst = worst.max(m);
        println!(
            "  {:<34} {:>8.1} ms  {}",
            p,
            m.as_secs_f64() * 1e3,
            if m <= Duration::from_millis(250) {
                "ok"
            } else {
                "OVER 250 ms"
            }
        );
    }
    let mut session = offload::cli::Session::open("web", &global).unwrap();
    let t = Instant::now();
    let html = offload::remotetool::web::snapshot(&mut session).unwrap();
    let snap = t.elapsed();
    println!(
        "  {:<34} {:>8.1} ms  {} ({} KiB)",
        "snapshot",
        snap.as_secs_f64() * 1e3,
        if snap <= Duration::from_secs(5) {
            "ok"
        } else {
            "OVER 5 s"
        },
        html.len() / 1024
    );
    println!(
        "  slowest page: {:.1} ms (goal 250 ms: {:.2}x of it)",
        worst.as_secs_f64() * 1e3,
        worst.as_secs_f64() / 0.25
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let digits = if quick { 5 } else { 6 };
    for (name, kind) in [
        ("SQLite", common::Kind::Sqlite),
        ("PostgreSQL", common::Kind::Postgres),
        ("MariaDB", common::Kind::Mysql),
    ] {
        println!("{name}:");
        bench(kind, digits);
    }
}
