//! Benchmark: the seed's survey batch through the real chain on the
//! testbed: import, define, prepare, exec (the push over fe1's master),
//! the Slurm job, poll (the pull, then the apply), on SQLite.
//!
//!     scripts/testbed up && cargo bench --bench chain [-- quick]
//!
//! 620 exposures x 60 chips = 37,200 chip components (`quick`: 62
//! exposures, 3,720), their inputs (a raw image each and the shared
//! calibration files: mask, dark, flat, linearity per chip) and two
//! outputs each, through `fixtures/bin/ppfake`. Each phase is the whole
//! tool process. offload's own time is everything except the job (define,
//! prepare, exec and poll); the floor beside it is a bare `tar | ssh tar`
//! of the same inputs there and the same outputs back through the same
//! master, measured in the same run (both ends create every file).
//!
//! Goals: poll applies the results in <= 2 s beyond the pull; offload's own
//! time <= 1.3x the bare tar.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LABEL: &str = "survey.chain";
const SSH: &str = "/var/lib/offload-testbed/ssh/ssh_config";

fn timed(mut c: Command) -> (f64, String) {
    let t = Instant::now();
    let out = c.stderr(Stdio::piped()).output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sh(script: &str) -> f64 {
    let t = Instant::now();
    let st = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .status()
        .unwrap();
    assert!(st.success(), "`{script}` failed");
    t.elapsed().as_secs_f64()
}

/// The first column of each line, leading `/` dropped, into a file.
fn path_list(from: &Path, column: usize, to: &Path) -> usize {
    let text = std::fs::read_to_string(from).unwrap();
    let mut out = String::new();
    let mut n = 0;
    for l in text.lines() {
        if let Some(p) = l.split('\t').nth(column) {
            out.push_str(p.trim_start_matches('/'));
            out.push('\n');
            n += 1;
        }
    }
    std::fs::write(to, out).unwrap();
    n
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let exposures = if quick { 62 } else { 620 };
    let db = common::TestDb::new(common::Kind::Sqlite);
    let prefix = format!("bench{}", std::process::id());
    let site = db.site_with(&format!(
        "hosts = [\"fe1\"]\nssh_config = \"{SSH}\"\njob_prefix = \"{prefix}\"\nmax_nodes = 1\nmax_walltime_hours = 200"
    ));
    // The work items and their input files (not timed: the pipeline's side).
    let gen = Command::new("python3")
        .arg(common::fixtures().join("gen-chip-items.py"))
        .args(["--exposures", &exposures.to_string(), "--chips", "60"])
        .args(["--label", LABEL, "--first-id", "1"])
        .arg("--files")
        .arg(&site.neb)
        .output()
        .unwrap();
    assert!(gen.status.success());
    let items = db.write("items.jsonl", &String::from_utf8(gen.stdout).unwrap());
    let n = exposures * 60;
    println!("{n} chip components ({exposures} exposures x 60 chips), SQLite, fe1's master, Slurm");

    let mut c = db.std_remotetool();
    c.args(["--quiet", "import"]).arg(&items);
    let (import, _) = timed(c);
    let mut c = db.std_remotetool();
    c.args(["--quiet", "define", "--label", LABEL, "--stage", "chip"]);
    let (define, _) = timed(c);
    let mut c = db.std_tool("prepare");
    c.args(["--quiet", "--remote-id", "1"]);
    let (prepare, _) = timed(c);
    let mut c = db.std_tool("exec");
    c.args(["--quiet", "--remote-id", "1", "--json"]);
    let (exec, out) = timed(c);
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    let job = e["job_id"].as_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let out = Command::new("squeue")
            .args(["-h", "-j", &job, "-o", "%T"])
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !["RUNNING", "PENDING", "CONFIGURING", "COMPLETING"].contains(&state.as_str()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let job_secs = t.elapsed().as_secs_f64();
    let mut c = db.std_tool("poll");
    c.args(["--quiet", "--remote-id", "1", "--json"]);
    let (poll, out) = timed(c);
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["state"], "full", "{p}");
    assert_eq!(p["done"].as_u64(), Some(n as u64), "{p}");
    let fetch = p["fetch_seconds"].as_f64().unwrap();
    let apply = p["apply_seconds"].as_f64().unwrap();

    // The floor: the same files with a bare tar through the same master.
    let run = site.run_dir(1);
    let inputs = db.home.path().join("peer-inputs.list");
    let outputs = db.home.path().join("peer-outputs.list");
    let n_in = path_list(&run.join("inputs.list"), 0, &inputs);
    let n_out = path_list(&run.join("outputs.list"), 0, &outputs);
    let there = db.home.path().join("peer-remote");
    let back = db.home.path().join("peer-local");
    std::fs::create_dir_all(&back).unwrap();
    let push = sh(&format!(
        "tar -C / -cf - -T {list} | ssh -F {SSH} fe1 'mkdir -p {dir} && tar -C {dir} -xf -'",
        list = inputs.display(),
        dir = there.display(),
    ));
    let pull = sh(&format!(
        "ssh -F {SSH} fe1 'tar -C / -cf - -T {}' | tar -C {} -xf -",
        outputs.display(),
        back.display()
    ));
    let tar = push + pull;
    let own = define + prepare + exec + poll;

    println!("{:<28} {:>9}", "phase", "seconds");
    for (name, s) in [
        ("import", import),
        ("define", define),
        ("prepare", prepare),
        ("exec (push, submit)", exec),
        ("the job (Slurm)", job_secs),
        ("poll", poll),
        ("  pull (records, outputs)", fetch),
        ("  apply (results, settle)", apply),
    ] {
        println!("{name:<28} {s:>9.2}");
    }
    println!(
        "offload's own (define + prepare + exec + poll): {own:.2} s; bare tar | ssh tar: {tar:.2} s ({n_in} inputs there {push:.2} s, {n_out} outputs back {pull:.2} s); ratio {:.2}x (goal <= 1.3x: {})",
        own / tar,
        if own / tar <= 1.3 { "met" } else { "NOT met" }
    );
    println!(
        "poll's apply of {n} results: {apply:.2} s beyond the pull (goal <= 2 s: {})",
        if apply <= 2.0 { "met" } else { "NOT met" }
    );
    println!(
        "offload's share of the whole (all but the job): {:.0} %",
        100.0 * own / (own + job_secs)
    );
}
