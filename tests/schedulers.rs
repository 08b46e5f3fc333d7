//! The chain on each real batch system of the testbed: define -> prepare
//! -> exec (over fe1's master) -> the scheduler -> poll -> error (a
//! component made to fail) with every other component's output back, and
//! exec finding a job already submitted under the run's name instead of
//! submitting again. PBS is Slurm's own PBS commands (slurm-wlm-torque) on
//! the testbed's Slurm; Grid Engine is the testbed's one-host cell. Both
//! backends each. (Slurm's own chain is tests/chain.rs.)

mod common;

use std::process::Command;

use predicates::prelude::*;

const TORQUE_BIN: &str = "/opt/offload-testbed/torque/bin";

fn torque_bin() -> String {
    std::env::var("OFFLOAD_TEST_TORQUE_BIN").unwrap_or_else(|_| TORQUE_BIN.to_string())
}

fn prefix(db: &common::TestDb) -> String {
    db.job_prefix("s")
}

/// A target of this scheduler on fe1, with `extra` lines; PBS's commands
/// are Slurm's wrappers, in a folder of their own.
fn site(db: &common::TestDb, scheduler: &str, extra: &str) -> common::Site {
    let path = if scheduler == "pbs" {
        format!("\nscheduler_path = \"{}\"", torque_bin())
    } else {
        String::new()
    };
    db.site_with(&format!(
        "scheduler = \"{scheduler}\"\nhosts = [\"fe1\"]\nssh_config = \"{}\"\njob_prefix = \"{}\"\nmax_nodes = 1\n{extra}{path}",
        common::ssh_config(),
        prefix(db),
    ))
}

/// Poll a run until it has left `run` (whatever the scheduler calls its
/// job's states meanwhile: Q, R, qw, r...); poll's JSON of the last poll.
fn poll_until_settled(db: &common::TestDb, id: i64) -> serde_json::Value {
    common::poll_until(db, id, &[], 300, |p| {
        ["full", "error", "pending", "new"].contains(&p["state"].as_str().unwrap_or(""))
    })
}

/// The scheduler's own submit, by hand, of a held job under a name.
fn held_job(scheduler: &str, name: &str, dir: &std::path::Path) -> String {
    let out = match scheduler {
        "pbs" => Command::new(format!("{}/qsub", torque_bin()))
            .args(["-h", "-N", name, "-o", "/dev/null", "job.sh"])
            .current_dir(dir)
            .output(),
        _ => Command::new("qsub")
            .args(["-terse", "-h", "-N", name, "job.sh"])
            .env("SGE_ROOT", "/var/lib/gridengine")
            .env("SGE_CELL", "default")
            .current_dir(dir)
            .output(),
    }
    .expect("the scheduler's qsub runs (scripts/testbed up)");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!id.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    id
}

fn qdel(scheduler: &str, id: &str) {
    let mut c = match scheduler {
        "pbs" => Command::new(format!("{}/qdel", torque_bin())),
        _ => Command::new("qdel"),
    };
    let _ = c
        .arg(id)
        .env("SGE_ROOT", "/var/lib/gridengine")
        .env("SGE_CELL", "default")
        .output();
}

fn chain(db: &common::TestDb, scheduler: &str, directive: &str) {
    let site = site(db, scheduler, "");
    db.import_chip_failing(&site, "SC", (2, 6), 64, &[4]);
    db.define_prepare("SC", "chip", &[]);
    let job = std::fs::read_to_string(site.run_dir(1).join("job.sh")).unwrap();
    assert!(job.contains(directive), "{job}");
    assert!(!job.contains("#SBATCH"), "{job}");
    let e = db.exec_json(1);
    assert_eq!(e["found_existing"], false);
    let p = poll_until_settled(db, 1);
    assert_eq!(p["state"], "error", "{p}");
    assert_eq!(
        (p["done"].as_u64(), p["failed"].as_u64()),
        (Some(11), Some(1)),
        "{p}"
    );
    assert_eq!(p["outputs"], 22);
    let run = db.show(1);
    assert_eq!(run["fault"], 30);
    let failed = run["failed_components"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["stage_id"], 4);
    assert_eq!(
        failed[0]["last_line"],
        "ppfake: failing as asked (--fail 3) after reading 5 inputs"
    );
    let outputs = std::fs::read_to_string(site.run_dir(1).join("outputs.list")).unwrap();
    let mut back = 0;
    for l in outputs.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if std::path::Path::new(f[0]).exists() {
            assert_eq!(std::fs::read(f[0]).unwrap(), std::fs::read(f[1]).unwrap());
            back += 1;
        }
    }
    assert_eq!(back, 22);
    // The job's summary names its job id, as the scheduler gave it.
    let summary = std::fs::read_to_string(site.remote_run_dir(1).join("job-summary.txt")).unwrap();
    let job_id = e["job_id"].as_str().unwrap();
    assert!(summary.contains(&format!("job_id={job_id}")), "{summary}");
    // What the job cost: Grid Engine's accounting, read directly here,
    // against report's figures; PBS (Slurm's wrappers) keeps none that
    // offload reads, so its run is the estimate, and report says so.
    let mut c = db.remotetool();
    c.args(["report", "--runs", "--json"]);
    let r = common::json_of(c);
    let r1 = r
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["remote_id"] == 1)
        .unwrap();
    if scheduler == "sge" {
        let a = sge(&["qacct", "-j", job_id]);
        let text = String::from_utf8_lossy(&a.stdout).into_owned();
        let value = |key: &str| -> f64 {
            text.lines()
                .filter_map(|l| l.strip_prefix(key))
                .next_back()
                .and_then(|v| v.trim().trim_end_matches('s').parse().ok())
                .unwrap_or_else(|| panic!("qacct has no {key}: {text}"))
        };
        let (wall, slots) = (value("ru_wallclock"), value("slots"));
        assert_eq!(r1["source"], "qacct", "{r1}");
        let near = |v: &serde_json::Value, b: f64| (v.as_f64().unwrap() - b).abs() < 1e-9;
        assert!(
            near(&r1["core_hours"], wall * slots / 3600.0),
            "{r1} vs qacct {text}"
        );
        assert!(
            near(&r1["node_hours"], wall / 3600.0),
            "{r1} vs qacct {text}"
        );
        assert!(
            near(&r1["cpu_hours"], value("cpu") / 3600.0),
            "{r1} vs qacct {text}"
        );
        let plan: serde_json::Value =
            serde_json::from_slice(&std::fs::read(site.run_dir(1).join("run.json")).unwrap())
                .unwrap();
        let hours = plan["allocation"]["hours"].as_f64().unwrap();
        assert!(near(&r1["requested_node_hours"], hours), "{r1} vs {plan}");
        db.remotetool()
            .args(["report", "--label", "SC"])
            .assert()
            .success()
            .stdout(predicates::str::contains("qacct"))
            .stderr(predicates::str::contains("estimate").not());
    } else {
        assert_eq!(r1["source"], "estimate", "{r1}");
    }

    // Exactly once: a job of the next run already queued under its name
    // (an exec killed after qsub) is found and recorded, not submitted again.
    assert_eq!(db.define_prepare("SC", "chip", &[]), 2);
    let remote = site.push(2);
    let held = held_job(scheduler, &format!("{}-r2-a0", prefix(db)), &remote);
    let e = db.exec_json(2);
    qdel(scheduler, &held);
    assert_eq!(e["found_existing"], true, "{e}");
    assert_eq!(e["job_id"], held.as_str());
}

each_backend! {
    fn pbs_runs_the_chain_and_submits_exactly_once(db) {
        chain(db, "pbs", "#PBS -l nodes=1:ppn=");
    }

    fn sge_runs_the_chain_and_submits_exactly_once(db) {
        chain(db, "sge", "#$ -pe mpi ");
    }
}

fn sge(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .env("SGE_ROOT", "/var/lib/gridengine")
        .env("SGE_CELL", "default")
        .output()
        .expect("Grid Engine's commands run (scripts/testbed up)")
}

/// The queue takes no new jobs while this lives (jobs wait, `qw`).
/// The testbed's one queue held shut. The backends' copies of a test run
/// side by side: one at a time holds it, so that one's end does not open
/// the queue under another.
struct QueueDisabled(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

static QUEUE_HELD: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl QueueDisabled {
    fn new() -> QueueDisabled {
        let held = QUEUE_HELD.lock().unwrap_or_else(|e| e.into_inner());
        assert!(sge(&["qmod", "-d", "all.q"]).status.success());
        QueueDisabled(held)
    }
}

impl Drop for QueueDisabled {
    fn drop(&mut self) {
        let _ = sge(&["qmod", "-e", "all.q"]);
    }
}

// Grid Engine kills the job at its h_rt: qacct says `failed 37`, poll
// takes it for the site's cutting it short, applies what the first
// components did and prepares the rest again, which then ends full.
each_backend! {
    fn sge_kills_a_job_at_its_h_rt_and_the_work_it_did_is_kept(db) {
        let site = site(db, "sge", "cores_per_node = 8");
        let marker = site.use_odd_chip();
        let sleepers: Vec<(i64, &str, &str)> = (5..=8).map(|i| (i, "ODD", "sleep")).collect();
        db.import_with_params(&site, "HR", (1, 8), &sleepers);
        std::fs::write(&marker, "").unwrap();
        db.define_prepare("HR", "chip", &[]);
        let job = {
            let _held = QueueDisabled::new();
            let job = db.exec_json(1)["job_id"].as_str().unwrap().to_string();
            let alter = sge(&["qalter", "-l", "h_rt=0:0:10", &job]);
            assert!(alter.status.success(), "{}", String::from_utf8_lossy(&alter.stderr));
            job
        };
        // Wait for Grid Engine's own record of the job's end, then poll.
        let acct = common::wait_for(180, 500, &format!("job {job}"), || {
            let a = sge(&["qacct", "-j", &job]);
            if a.status.success() {
                Ok(String::from_utf8_lossy(&a.stdout).into_owned())
            } else {
                Err("without accounting".to_string())
            }
        });
        assert!(acct.lines().any(|l| l.starts_with("failed") && l.contains("37")), "{acct}");
        let p = poll_until_settled(db, 1);
        assert_eq!(p["state"], "new", "{p}");
        assert_eq!((p["done"].as_u64(), p["failed"].as_u64()), (Some(4), Some(0)), "{p}");
        assert_eq!(p["outputs"], 8, "{p}");
        let run = db.show(1);
        assert_eq!(run["attempt"], 1, "{run}");
        let text = run.to_string();
        assert!(text.contains("failed=37"), "{text}");
        // Prepared again for the four that did not come back; now they do.
        std::fs::remove_file(&marker).unwrap();
        let mut c = db.tool("prepare");
        c.args(["--remote-id", "1", "--json"]);
        assert_eq!(common::json_of(c)["components"], 4);
        db.exec(1);
        let p = poll_until_settled(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["done"], 4);
    }
}

/// A target of `scheduler` whose throttle lets one job wait in the queue,
/// with one run per work item of a stage that sleeps.
fn sleepy_runs(db: &common::TestDb, scheduler: &str, runs: usize) -> (common::Site, Vec<i64>) {
    let site = site(db, scheduler, "queue_base = 1\nqueue_factor = 0.0");
    site.use_recipes(&[(
        "sleepy.toml",
        "stage = \"sleepy\"\nthreads = 2\ntime_cost = 60\ncommand = \"sleep 300\"\n",
    )]);
    db.import(&common::bare_items("AB", "sleepy", runs, 1));
    let ids = (0..runs)
        .map(|_| db.define_prepare("AB", "sleepy", &["--limit", "1"]))
        .collect();
    (site, ids)
}

fn abort(db: &common::TestDb, id: i64, job: &str) {
    let mut c = db.remotetool();
    c.args([
        "abort",
        &id.to_string(),
        "--reason",
        "operator test",
        "--json",
    ]);
    let a = common::json_of(c);
    assert_eq!(a[0]["job_cancelled"], true, "{a}");
    assert_eq!(a[0]["job_id"].as_str(), Some(job), "{a}");
    assert_eq!(db.show(id)["fault"], 40);
}

each_backend! {
    fn sge_throttles_by_its_queue_and_abort_deletes_the_job(db) {
        let (_site, ids) = sleepy_runs(db, "sge", 2);
        let _held = QueueDisabled::new();
        let job = db.exec_json(ids[0])["job_id"].as_str().unwrap().to_string();
        // Its job waits (qw): the throttle (one may wait) holds the next back.
        db.tool("exec")
            .args(["--remote-id", &ids[1].to_string()])
            .assert()
            .code(4)
            .stderr(predicates::str::contains("throttled"));
        assert_eq!(db.show(ids[1])["state"], "pending");
        abort(db, ids[0], &job);
        let q = sge(&["qstat", "-u", "*", "-xml"]);
        let listed = String::from_utf8_lossy(&q.stdout).into_owned();
        assert!(!listed.contains(&format!("<JB_job_number>{job}</JB_job_number>")), "{listed}");
    }

    fn pbs_throttles_by_its_queue_and_abort_deletes_the_job(db) {
        let (site, ids) = sleepy_runs(db, "pbs", 2);
        // A held job of this prefix waits in the queue: the throttle holds exec back.
        let other = site.push(2);
        let held = held_job("pbs", &format!("{}-r9-a0", prefix(db)), &other);
        let throttled = db.tool("exec").args(["--remote-id", &ids[0].to_string()]).output().unwrap();
        qdel("pbs", &held);
        assert_eq!(throttled.status.code(), Some(4), "{}", String::from_utf8_lossy(&throttled.stderr));
        assert!(String::from_utf8_lossy(&throttled.stderr).contains("throttled"));
        // Nothing waits now: submitted; then aborted, its job deleted.
        let job = db.exec_json(ids[0])["job_id"].as_str().unwrap().to_string();
        abort(db, ids[0], &job);
        let st = Command::new(format!("{}/qstat", torque_bin())).args(["-f", &job]).output().unwrap();
        let text = String::from_utf8_lossy(&st.stdout).into_owned();
        assert!(!st.status.success() || text.contains("job_state = C"), "{text}");
    }
}
