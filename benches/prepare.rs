//! Benchmark: prepare.
//!
//! 1. The whole `prepare` process on the full chip fixture (620 exposures x
//!    60 chips = 37,200 components, 38,400 distinct input files on disk),
//!    SQLite: wall time and peak memory (goal <= 1.5 s, <= 300 MB). The
//!    original Perl preparation took about 2 hours for the same batch
//!    (0.2 s per component, after its in-memory catalogue fix).
//! 2. The library's build on synthetic runs of 37,200, 200,000 and
//!    1,000,000 components (the chip recipe; raw images reused cyclically
//!    from the 37,200 on disk, so every component renders and every output
//!    is distinct; 150 s per command, sized by the formula), each in a
//!    process of its own, components made a page at a time as the database
//!    gives them: goal 1,000,000 in <= 20 s with <= 1 GB peak resident
//!    memory.
//!
//!     cargo bench --bench prepare        # `-- quick`: up to 200,000

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Map, Value};

// As the prepare binary has it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LABEL: &str = "lanl.SAS.201402114";

/// Run a command; (seconds, peak resident KiB of the child).
fn measure(c: Command) -> (f64, i64) {
    let t = Instant::now();
    let (_, kib) = measure_out(c);
    (t.elapsed().as_secs_f64(), kib)
}

/// Run a command; (its stdout, peak resident KiB of the child).
fn measure_out(mut c: Command) -> (String, i64) {
    let mut child = c.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{c:?} failed"
    );
    let _ = child.try_wait();
    (out, usage.ru_maxrss)
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
    let mb = best.1 as f64 / 1024.0;
    let met = best.0 <= 1.5 && mb <= 300.0;
    println!(
        "  {:.2} s wall, {mb:.0} MB peak  (goals: 1.5 s, 300 MB: {}; the original: ~7,440 s, ratio {:.0}x)",
        best.0,
        if met { "met" } else { "NOT met" },
        7440.0 / best.0
    );
}

/// The library's build on `n` synthetic components, in a process of its
/// own (so its peak memory is its own): components made a page at a time,
/// as the database gives them. Prints the build's seconds.
fn synthetic_child(n: usize, config: &str, items: &str, dir: &str) {
    let cfg = offload::config::Config::load(Some(std::path::Path::new(config))).unwrap();
    let target = cfg.target("testsite").unwrap();
    let recipe =
        offload::recipe::Recipe::load(&common::fixtures().join("recipes/chip.toml")).unwrap();
    let items: Vec<Map<String, Value>> = std::fs::read_to_string(items)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["params"].as_object().unwrap().clone()
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
    let page = offload::prepare::PAGE as usize;
    let mut made = 0;
    let next = || -> anyhow::Result<Vec<offload::prepare::ComponentSpec>> {
        let end = (made + page).min(n);
        let out = (made..end)
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
        made = end;
        Ok(out)
    };
    let dir = std::path::Path::new(dir);
    let t = Instant::now();
    let bar = indicatif::ProgressBar::hidden();
    let built = offload::prepare::build(&job, next, &bar, dir).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(built.components, n);
    std::fs::remove_dir_all(dir).unwrap();
    println!("{secs}");
}

/// (seconds of the build, peak resident MB of its process)
fn synthetic(n: usize, site: &common::Site, items: &std::path::Path) -> (f64, f64) {
    let dir = site.root.join(format!("synthetic-{n}/run-1"));
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.arg("--synthetic")
        .arg(n.to_string())
        .arg(&site.config)
        .arg(items)
        .arg(&dir);
    let (out, kib) = measure_out(c);
    let secs: f64 = out.trim().parse().unwrap();
    (secs, kib as f64 / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--synthetic") {
        synthetic_child(args[2].parse().unwrap(), &args[3], &args[4], &args[5]);
        return;
    }
    let quick = args.iter().any(|a| a == "quick");
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
    let items = site.root.join("items.jsonl");
    std::fs::write(&items, &out.stdout).unwrap();
    println!();
    println!(
        "prepare library (build, components made a page at a time), synthetic chip components, 150 s each"
    );
    println!(
        "  {:>10} {:>9} {:>14} {:>14}  goal",
        "components", "seconds", "us/component", "peak RSS MB"
    );
    let sizes: &[usize] = if quick {
        &[37_200, 200_000]
    } else {
        &[37_200, 200_000, 1_000_000]
    };
    for &n in sizes {
        let (secs, mb) = synthetic(n, &site, &items);
        let goal = if n == 1_000_000 {
            let met = secs <= 20.0 && mb <= 1024.0;
            format!(
                "<= 20 s, <= 1,024 MB: {}",
                if met { "met" } else { "NOT met" }
            )
        } else {
            String::new()
        };
        println!(
            "  {:>10} {:>9.2} {:>14.1} {:>14.0}  {goal}",
            n,
            secs,
            secs / n as f64 * 1e6,
            mb
        );
    }
}
