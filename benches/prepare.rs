//! Benchmark: prepare.
//!
//! 1. The whole `prepare` process on the full chip fixture (620 exposures x
//!    60 chips = 37,200 components, 38,400 distinct input files on disk),
//!    SQLite: wall time and peak memory (goal <= 5 s, <= 300 MB). The
//!    original Perl preparation took about 2 hours for the same batch
//!    (0.2 s per component, after its in-memory catalogue fix).
//! 2. The library's plan + write on synthetic runs of 37,200, 200,000 and
//!    1,000,000 components (the chip recipe; raw images reused cyclically
//!    from the 37,200 on disk, so every component renders and every output
//!    is distinct; 150 s per command, sized by the formula): time per
//!    component should stay flat (goal: 1,000,000 in
//!    <= 2 minutes).
//!
//!     cargo bench --bench prepare

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Map, Value};

const LABEL: &str = "lanl.SAS.201402114";

/// Run a command; (seconds, peak resident KiB of the child).
fn measure(mut c: Command) -> (f64, i64) {
    let t = Instant::now();
    let mut child = c.stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    let secs = t.elapsed().as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{c:?} failed"
    );
    let _ = child.try_wait();
    (secs, usage.ru_maxrss)
}

fn peak_rss_kib() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn end_to_end() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let site = db.site();
    db.import_chip(&site, LABEL, 620, 60, 1);
    let mut c = db.std_remotetool();
    c.args(["define", "--label", LABEL, "--stage", "chip", "--quiet"]);
    assert!(c.stdout(Stdio::null()).status().unwrap().success());
    let mut best = (f64::MAX, 0);
    for _ in 0..3 {
        let mut c = db.std_tool("prepare");
        c.args(["--remote-id", "1", "--quiet"]);
        let m = measure(c);
        if m.0 < best.0 {
            best = m;
        }
    }
    println!("prepare, whole process, 37,200 chip components, 38,400 input files (best of 3)");
    println!(
        "  {:.2} s wall, {:.0} MB peak  (goals: 5 s, 300 MB; the original: ~7,440 s, ratio {:.0}x)",
        best.0,
        best.1 as f64 / 1024.0,
        7440.0 / best.0
    );
}

fn synthetic(n: usize, site: &common::Site, items: &[Map<String, Value>]) -> (f64, f64) {
    let cfg = offload::config::Config::load(Some(&site.config)).unwrap();
    let target = cfg.target("testsite").unwrap();
    let recipe =
        offload::recipe::Recipe::load(&common::fixtures().join("recipes/chip.toml")).unwrap();
    let comps: Vec<offload::prepare::ComponentSpec> = (0..n)
        .map(|i| {
            let mut params = items[i % items.len()].clone();
            // Distinct outputs per component.
            params.insert("EXP_NAME".into(), Value::String(format!("s{:07}", i / 60)));
            offload::prepare::ComponentSpec {
                component_id: i as i64 + 1,
                work_item_id: i as i64 + 1,
                stage: "chip".into(),
                stage_id: i as i64 + 1,
                label: LABEL.into(),
                params,
            }
        })
        .collect();
    let job = offload::prepare::Job {
        remote_id: 1,
        attempt: 0,
        stage: "chip",
        label: LABEL,
        recipe: &recipe,
        target: &target,
        time_cost: 150.0,
        time_cost_source: "bench".into(),
    };
    let dir = site.root.join(format!("synthetic-{n}/run-1"));
    let t = Instant::now();
    let bar = indicatif::ProgressBar::hidden();
    let plan = offload::prepare::plan(&job, &comps, &bar).unwrap();
    offload::prepare::write(&plan, &job, &comps, &dir).unwrap();
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir).unwrap();
    (secs, secs / n as f64 * 1e6)
}

fn main() {
    end_to_end();
    let db = common::TestDb::new(common::Kind::Sqlite);
    let site = db.site();
    let out = Command::new("python3")
        .arg(common::fixtures().join("gen-chip-items.py"))
        .arg("--files")
        .arg(&site.neb)
        .output()
        .unwrap();
    assert!(out.status.success());
    let items: Vec<Map<String, Value>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["params"].as_object().unwrap().clone()
        })
        .collect();
    println!();
    println!("prepare library (plan + write), synthetic chip components, 150 s each");
    println!(
        "  {:>10} {:>9} {:>14} {:>14}",
        "components", "seconds", "us/component", "peak RSS MB"
    );
    for n in [37_200, 200_000, 1_000_000] {
        let (secs, per) = synthetic(n, &site, &items);
        println!(
            "  {:>10} {:>9.2} {:>14.1} {:>14.0}",
            n,
            secs,
            per,
            peak_rss_kib() as f64 / 1024.0
        );
    }
}
