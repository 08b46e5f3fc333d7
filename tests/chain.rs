//! The whole chain on the testbed: define -> prepare -> exec (over the
//! fe1 master) -> real Slurm -> poll -> full or error, on every backend.

mod common;

use std::time::Duration;

use predicates::prelude::*;
use predicates::str::contains;

/// A target on a front end; its job names carry a prefix of the test's
/// own, since tests share the one Slurm, which has one node.
fn site(db: &common::TestDb, host: &str, cfg: &str) -> common::Site {
    db.site_with(&format!(
        "hosts = [\"{host}\"]\nssh_config = \"{cfg}\"\njob_prefix = \"{}\"\nmax_nodes = 1",
        prefix(db)
    ))
}

fn prefix(db: &common::TestDb) -> String {
    db.job_prefix("t")
}

/// exec refuses run 1 (exit `code`, saying `said`): it stays pending and
/// nothing was sent.
fn exec_refused(
    db: &common::TestDb,
    site: &common::Site,
    code: i32,
    said: impl predicates::Predicate<str>,
) {
    db.refused("exec", 1, code, said);
    assert_eq!(db.show(1)["state"], "pending");
    assert!(!site.remote_run_dir(1).exists(), "nothing was sent");
}

each_backend! {
    fn a_run_goes_to_slurm_and_comes_back(db) {
        let site = site(db, "fe1", &common::ssh_config());
        db.import_chip_failing(&site, "CH", (2, 6), 64, &[3, 8]);
        db.define_prepare("CH", "chip", &[]);
        let e = db.exec_json(1);
        assert_eq!(e["found_existing"], false);
        assert!(e["files_sent"].as_u64().unwrap() > 60, "{e}");
        let run = db.show(1);
        assert_eq!(run["state"], "run");
        assert_eq!(run["job_id"], e["job_id"]);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "error", "{p}");
        assert_eq!((p["done"].as_u64(), p["failed"].as_u64(), p["retry"].as_u64()), (Some(10), Some(2), Some(2)));
        assert_eq!(p["outputs"], 20);
        let run = db.show(1);
        assert_eq!(run["fault"], 30);
        let msg = run["message"].as_str().unwrap();
        assert!(msg.contains("failed chip/3,8"), "{msg}");
        assert_eq!(run["components_by_state"]["done"], 10);
        assert_eq!(run["components_by_state"]["failed"], 2);
        // Why: each failed component's stderr tail came back in its record.
        let failed = run["failed_components"].as_array().unwrap();
        let ids: Vec<i64> = failed.iter().map(|f| f["stage_id"].as_i64().unwrap()).collect();
        assert_eq!(ids, vec![3, 8]);
        for f in failed {
            assert_eq!(f["last_line"], "ppfake: failing as asked (--fail 3) after reading 5 inputs", "{f}");
        }
        // Outputs back in their local places, byte-identical.
        let outputs = std::fs::read_to_string(site.run_dir(1).join("outputs.list")).unwrap();
        let mut back = 0;
        for l in outputs.lines() {
            let f: Vec<&str> = l.split('\t').collect();
            if std::path::Path::new(f[0]).exists() {
                assert_eq!(std::fs::read(f[0]).unwrap(), std::fs::read(f[1]).unwrap(), "{}", f[1]);
                back += 1;
            } else {
                assert!(!std::path::Path::new(f[1]).exists());
            }
        }
        assert_eq!(back, 20);
        // The failed components are ready again and go into the next run.
        let mut c = db.open();
        assert_eq!(c.read(|s| s.count_items(Some("CH"), None, Some(offload::state::ItemState::Done))).unwrap(), 10);
        assert_eq!(c.read(|s| s.count_free_items("CH", "chip")).unwrap(), 2);
        // What the job cost, in Slurm's accounting (slurmdbd), against what it asked for.
        let job = e["job_id"].as_str().unwrap();
        // Accounting has the job's end a moment after the queue forgets it.
        let acct = common::wait_for(60, 500, &format!("job {job} in accounting"), || {
            let out = std::process::Command::new("sacct")
                .args(["-n", "-X", "-P", "-j", job, "-o", "ElapsedRaw,AllocCPUS,NNodes,TimelimitRaw,State"])
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            // The newest record of the id (a reset controller reuses ids),
            // once every field is filled in.
            let last = text.trim().lines().last().unwrap_or("");
            match last.strip_suffix("|COMPLETED") {
                Some(fields) if fields.split('|').all(|v| v.parse::<f64>().is_ok()) => Ok(fields.to_string()),
                _ => Err(format!("not COMPLETED: {text:?}")),
            }
        });
        let f: Vec<f64> = acct.trim().split('|').map(|v| v.parse().unwrap()).collect();
        assert_eq!(f.len(), 4, "{acct}");
        let mut c = db.remotetool();
        c.args(["report", "--runs", "--json"]);
        let r = common::json_of(c);
        let r1 = r.as_array().unwrap().iter().find(|x| x["remote_id"] == 1).unwrap();
        assert_eq!((r1["source"].as_str(), r1["jobs"].as_u64()), (Some("sacct"), Some(1)), "{r1}");
        let near = |a: &serde_json::Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-9;
        assert!(near(&r1["core_hours"], f[0] * f[1] / 3600.0), "{r1} vs sacct {acct}");
        assert!(near(&r1["node_hours"], f[0] * f[2] / 3600.0), "{r1} vs sacct {acct}");
        assert!(r1["cpu_hours"].as_f64().unwrap() >= 0.0, "{r1}");
        let plan: serde_json::Value =
            serde_json::from_slice(&std::fs::read(site.run_dir(1).join("run.json")).unwrap()).unwrap();
        let a = &plan["allocation"];
        let asked = a["nodes"].as_f64().unwrap() * a["hours"].as_f64().unwrap();
        assert!(near(&r1["requested_node_hours"], asked), "{r1} vs {plan}");
        assert_eq!(f[3], a["hours"].as_f64().unwrap() * 60.0, "the job asked for the plan's walltime");
        // Spread over the work items by runtime, the items' shares add up to the run's.
        let mut c = db.remotetool();
        c.args(["report", "--items", "--label", "CH", "--json"]);
        let items = common::json_of(c);
        let items = items.as_array().unwrap();
        assert_eq!(items.len(), 12);
        let sum: f64 = items.iter().map(|i| i["core_hours"].as_f64().unwrap()).sum();
        assert!((sum - r1["core_hours"].as_f64().unwrap()).abs() < 1e-9, "{sum} vs {r1}");
        assert!(items.iter().all(|i| i["source"] == "sacct"));
        db.remotetool()
            .args(["report", "--label", "CH"])
            .assert()
            .success()
            .stdout(contains("sacct").and(contains(" %")))
            .stderr(contains("estimate").not());

        assert_eq!(db.define("CH", "chip", &[]), 2);
        assert_eq!(db.show(2)["components"], 2);
    }

    fn job_policy_ignore_ends_full(db) {
        let site = site(db, "fe2", &common::ssh_config());
        db.import_chip_failing(&site, "IG", (2, 6), 64, &[5]);
        let (_, p) = db.run_through("IG", "chip", &["--job-policy", "ignore"]);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["failed"], 1);
        assert_eq!(db.show(1)["fault"], 0);
    }

    fn a_job_already_submitted_is_found_not_submitted_again(db) {
        let site = site(db, "fe1", &common::ssh_config());
        db.import_chip_failing(&site, "EO", (2, 6), 64, &[]);
        db.define_prepare("EO", "chip", &[]);
        // An exec that died after sbatch: the job is queued (held), the database says pending.
        let remote = site.push(1);
        let held = common::sbatch_held(&remote, &format!("{}-r1-a0", prefix(db)));
        assert!(!held.is_empty());
        let e = db.exec_json(1);
        let _ = std::process::Command::new("scancel").arg(&held).status();
        assert_eq!(e["found_existing"], true);
        assert_eq!(e["job_id"], held.as_str());
        assert_eq!(db.show(1)["job_id"], held.as_str());
    }

    fn a_dead_master_puts_the_run_in_auth(db) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ssh_config");
        std::fs::write(&cfg, "Host fe-dead\n  HostName 127.0.0.1\n  Port 2202\n  ControlPath /nonexistent/offload/%n\n").unwrap();
        let site = site(db, "fe-dead", &cfg.display().to_string());
        db.import_chip_failing(&site, "AU", (2, 6), 64, &[]);
        db.define_prepare("AU", "chip", &[]);
        db.tool("exec")
            .args(["--remote-id", "1"])
            .assert()
            .code(5)
            .stderr(contains("run 1 is now 'auth'").and(contains("no master connection to fe-dead")));
        let run = db.show(1);
        assert_eq!(run["state"], "auth");
        assert_eq!(run["auth_return_state"], "pending");
        db.remotetool().args(["revertauth", "--label", "AU"]).assert().success();
        assert_eq!(db.show(1)["state"], "pending");
    }
}

/// A `local` target: the chain with no ssh and no Slurm, driven with the
/// original command lines where they exist.
fn local_site(db: &common::TestDb) -> common::Site {
    let site = db.site_with("scheduler = \"local\"");
    // The database by name, as the operators' scripts give it.
    let text = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        format!("{text}\n[databases.gpc1]\nurl = \"{}\"\n", db.url),
    )
    .unwrap();
    site
}

each_backend! {
    fn the_seed_command_lines_drive_a_local_run_to_full(db) {
        let site = local_site(db);
        db.import_chip_failing(&site, "lanl.SAS.201402114", (2, 6), 64, &[]);
        db.bare("remotetool")
            .args(["-dbname", "gpc1", "-definebyquery", "-label", "lanl.SAS.201402114", "-stage", "chip", "-path_base"])
            .arg(&site.runs)
            .assert()
            .success()
            .stdout("1\n");
        db.bare("prepare").args(["--dbname", "gpc1", "--next"]).assert().success();
        // Called by path, as scripts must (exec is a shell builtin).
        let exec = assert_cmd::cargo::cargo_bin("exec");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("{} --dbname gpc1 --next --quiet", shlex::try_quote(&exec.to_string_lossy()).unwrap()))
            .env("HOME", db.home.path())
            .env_remove("OFFLOAD_DB")
            .env_remove("OFFLOAD_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("local:"));
        common::wait_for(120, 300, "run 1", || {
            let out = db.bare("poll").args(["--dbname", "gpc1", "--remote-id", "1", "--quiet"]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let state = String::from_utf8(out.stdout).unwrap().trim().to_string();
            if state == "full" {
                return Ok(());
            }
            assert_eq!(state, "RUNNING");
            Err(state)
        });
        let run = db.show(1);
        assert_eq!(run["components_by_state"]["done"], 12);
        let mut c = db.open();
        assert_eq!(c.read(|s| s.count_items(Some("lanl.SAS.201402114"), None, Some(offload::state::ItemState::Done))).unwrap(), 12);
        // The products are in their local places.
        let outputs = std::fs::read_to_string(site.run_dir(1).join("outputs.list")).unwrap();
        for l in outputs.lines() {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(std::fs::read(f[0]).unwrap(), std::fs::read(f[1]).unwrap());
        }
        // Report, then clean the remote folder.
        let mut c = db.remotetool();
        c.args(["report", "--json"]);
        let r = common::json_of(c);
        assert_eq!(r[0]["done"], 12);
        assert_eq!(r[0]["failed"], 0);
        let rh = r[0]["runtime_hours"].as_f64().unwrap();
        assert!(rh > 0.0);
        assert!((r[0]["core_hours"].as_f64().unwrap() - 2.0 * rh).abs() < 1e-9, "chip runs 2 threads");
        // This machine keeps no accounting: the estimate, and the report says so.
        assert_eq!(r[0]["source"], "estimate", "{r}");
        assert!(r[0]["cpu_hours"].is_null(), "{r}");
        assert!(r[0]["requested_node_hours"].as_f64().unwrap() > 0.0, "{r}");
        db.remotetool()
            .args(["report"])
            .assert()
            .success()
            .stdout(contains("estimate"))
            .stderr(contains("core-hours of run 1 are estimates"));
        let remote = site.remote_run_dir(1);
        assert!(remote.exists());
        db.remotetool().args(["clean", "--remote-id", "1"]).assert().success().stdout("1\n");
        assert!(!remote.exists());
        assert_eq!(db.show(1)["state"], "cleaned");
        db.remotetool().args(["clean", "--label", "lanl.SAS.201402114"]).assert().code(3);
    }

    fn a_result_record_for_another_component_is_rejected(db) {
        let site = local_site(db);
        db.import_chip_failing(&site, "RJ", (2, 6), 64, &[]);
        db.define_prepare("RJ", "chip", &[]);
        db.exec(1);
        common::wait_for_local_job(db, &site, 1);
        let rank0 = site.remote_run_dir(1).join("results/rank-0.tsv");
        let mut text = std::fs::read_to_string(&rank0).unwrap();
        text.push_str("R\t999999\t0\tok\t1\t2\tinjected\nnot a record; rm -rf /\n");
        std::fs::write(&rank0, text).unwrap();
        let out = db.tool("poll").args(["--remote-id", "1", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let p = common::json(&out.stdout);
        assert_eq!(p["state"], "full");
        assert_eq!(p["rejected_records"], 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("component 999999 is not in run 1"), "{err}");
    }
}

each_backend! {
    fn a_job_the_site_lost_is_submitted_again(db) {
        let site = site(db, "fe2", &common::ssh_config());
        db.import_chip_failing(&site, "SF", (2, 6), 64, &[]);
        db.define_prepare("SF", "chip", &[]);
        let first = db.exec_json(1);
        // The site loses the job before it writes its summary.
        let job = first["job_id"].as_str().unwrap();
        let _ = std::process::Command::new("scancel").arg(job).status();
        common::wait_for_job_end(job);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "pending", "{p}");
        let run = db.show(1);
        assert_eq!((run["state"].as_str(), run["attempt"].as_i64()), (Some("pending"), Some(1)));
        let second = db.exec_json(1);
        assert_eq!(second["job_name"], format!("{}-r1-a1", prefix(db)));
        assert_ne!(second["job_id"], first["job_id"]);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["done"], 12);
    }
}

/// A few hundred components through Slurm, some failing; then the next
/// stage (camera) defined from the first stage's outputs.
#[test]
fn three_hundred_chips_then_camera_from_their_outputs() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let site = site(&db, "fe1", &common::ssh_config());
    // The camera items are written here by hand: the chip recipe without
    // its [next].
    let chip = std::fs::read_to_string(common::fixtures().join("recipes/chip.toml")).unwrap();
    let (chip, _) = chip.split_once("\n[next]").unwrap();
    site.use_recipes(&[("chip.toml", chip)]);
    db.import_generated(&site, "BIG", (5, 60), 1, 64, |v| {
        if [7, 77, 177].contains(&v["stage_id"].as_i64().unwrap()) {
            v["params"]["FAIL"] = 4.into();
        }
    });
    let (_, p) = db.run_through("BIG", "chip", &["--job-policy", "ignore"]);
    assert_eq!(p["state"], "full", "{p}");
    assert_eq!(
        (
            p["done"].as_u64(),
            p["failed"].as_u64(),
            p["outputs"].as_u64()
        ),
        (Some(297), Some(3), Some(594))
    );
    // Camera: one item per exposure, its input the chip stage's XY01 image.
    db.import(&common::json_lines((0..5).map(|e| {
        let exp = format!("o5745g{:04}o", e + 1);
        serde_json::json!({
            "stage": "camera", "stage_id": e + 1, "label": "BIG",
            "params": {
                "EXP_NAME": exp,
                "CHIPS": [format!("neb://any/czw/BIG/{exp}/{exp}.XY01.ch.fits")],
                "WORKDIR": format!("neb://any/czw/BIG/{exp}"),
            }
        })
    })));
    assert_eq!(db.define_prepare("BIG", "camera", &[]), 2);
    db.exec(2);
    let p = common::poll_until_done(&db, 2);
    assert_eq!(p["state"], "full", "{p}");
    assert_eq!(p["done"], 5);
    for e in 0..5 {
        let exp = format!("o5745g{:04}o", e + 1);
        let cmf = site.neb.join(format!("czw/BIG/{exp}/{exp}.cm.cmf"));
        let text =
            std::fs::read_to_string(&cmf).unwrap_or_else(|e| panic!("{}: {e}", cmf.display()));
        assert!(text.contains(&format!("{exp}.XY01.ch.fits")), "{text}");
    }
}

each_backend! {
    // Chip then camera, declared in the chip recipe's [next], through fe1
    // and the real Slurm: define --all, prepare, exec, poll; poll makes
    // each exposure's camera item when its last chip is done.
    fn chip_feeds_camera_through_slurm(db) {
        let site = site(db, "fe1", &common::ssh_config());
        // Both stages apply their results to a database of the pipeline's own.
        let pipeline_db = db.home.path().join("pipeline.db");
        let apply = format!(
            "apply = \"python3 {} {}\"\n",
            common::fixtures().join("bin/apply-sqlite.py").display(),
            pipeline_db.display()
        );
        let with_apply = |name: &str| {
            let text = std::fs::read_to_string(common::fixtures().join("recipes").join(name)).unwrap();
            text.replacen("\npost = ", &format!("\n{apply}post = "), 1)
        };
        let (chip, camera) = (with_apply("chip.toml"), with_apply("camera.toml"));
        assert!(chip.contains("apply = ") && camera.contains("apply = "));
        site.use_recipes(&[("chip.toml", &chip), ("camera.toml", &camera)]);
        db.import_chip_failing(&site, "CC", (2, 4), 64, &[]);
        db.remotetool().args(["define", "--all"]).assert().success().stdout("1\n");
        db.prepare(1);
        db.exec(1);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["chained"], serde_json::json!(["camera/1", "camera/5"]), "{p}");
        let mut c = db.open();
        let cams = c.read(|s| s.stage_items("CC", "camera")).unwrap();
        assert_eq!(cams.len(), 2);
        db.remotetool().args(["define", "--all"]).assert().success().stdout("2\n");
        db.remotetool().args(["define", "--all"]).assert().code(3);
        db.prepare(2);
        db.exec(2);
        let p = common::poll_until_done(db, 2);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["done"], 2);
        assert_eq!(p["chained"], serde_json::json!([]));
        assert_eq!(c.read(|s| s.count_items(Some("CC"), Some("camera"), Some(offload::state::ItemState::Done))).unwrap(), 2);
        for e in 0..2 {
            let exp = format!("o5745g{:04}o", e + 1);
            let cmf = site.neb.join(format!("czw/CC/{exp}/{exp}.cm.cmf"));
            let text = std::fs::read_to_string(&cmf).unwrap_or_else(|e| panic!("{}: {e}", cmf.display()));
            for chip in ["XY01", "XY02", "XY03", "XY04"] {
                assert!(text.contains(&format!("{exp}.{chip}.ch.fits")), "{chip} missing in {text}");
            }
            assert_eq!(text.lines().count(), 5, "{text}");
        }
        // Exactly one applied row per done work item, of both stages.
        let rows = std::process::Command::new("python3")
            .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(*c.execute(\"select count(*), count(distinct stage||'/'||stage_id), sum(state='done'), sum(stage='camera') from applied\").fetchone())"])
            .arg(&pipeline_db)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "10 10 10 2", "{}", String::from_utf8_lossy(&rows.stderr));
        for id in [1, 2] {
            assert!(db.show(id)["history"].to_string().contains("applied: `python3"), "run {id}");
        }
    }
}

each_backend! {
    fn exec_holds_back_when_the_queue_is_full(db) {
        let site = site(db, "fe1", &common::ssh_config());
        site.target_lines("queue_base = 0\nqueue_factor = 0.0");
        db.import_chip_failing(&site, "TH", (2, 6), 64, &[]);
        db.define_prepare("TH", "chip", &[]);
        exec_refused(db, &site, 4, contains("throttled").and(contains("run 1 stays pending")));
    }

    fn exec_refuses_what_the_remote_disk_cannot_hold(db) {
        let site = site(db, "fe1", &common::ssh_config());
        // A sparse 15 TB input: its size, not its blocks, is what must fit.
        let big = site.neb.join("huge/all-sky.fits");
        std::fs::create_dir_all(big.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(15 << 40).unwrap();
        let item = "{\"stage\":\"camera\",\"stage_id\":1,\"label\":\"DF\",\"params\":{\"CHIPS\":\"neb://any/huge/all-sky.fits\",\"WORKDIR\":\"neb://any/out\",\"EXP_NAME\":\"e1\"}}\n";
        db.import(item);
        db.define_prepare("DF", "camera", &[]);
        exec_refused(db, &site, 1, contains("not enough space on fe1 for run 1").and(contains("nothing was sent")));
        assert_eq!(db.show(1)["fault"], 20);
    }
}

each_backend! {
    fn exec_refuses_what_the_quota_does_not_allow(db) {
        let site = site(db, "fe1", &common::ssh_config());
        site.target_lines("quota_command = \"echo 1000\"");
        db.import_chip_failing(&site, "QU", (2, 6), 64, &[]);
        db.define_prepare("QU", "chip", &[]);
        exec_refused(db, &site, 1, contains("over quota on fe1 for run 1").and(contains("the quota leaves 1000")));
    }
}

each_backend! {
    fn paused_exec_and_poll_touch_nothing(db) {
        let site = local_site(db);
        db.import_chip_failing(&site, "PA", (2, 6), 64, &[]);
        db.define_prepare("PA", "chip", &[]);
        db.remotetool().args(["pause", "exec", "poll", "--reason", "auth refresh"]).assert().success();
        db.tool("exec").arg("--next").assert().code(4).stderr(contains("exec is paused"));
        assert_eq!(db.show(1)["state"], "pending");
        assert!(!site.remote_run_dir(1).exists());
        db.remotetool().args(["resume", "exec"]).assert().success();
        db.tool("exec").arg("--next").assert().success();
        db.tool("poll").args(["--remote-id", "1"]).assert().code(4).stderr(contains("poll is paused"));
        assert_eq!(db.show(1)["state"], "run");
        db.remotetool().args(["resume", "poll"]).assert().success();
        // Not due yet: the interval since the submission has not passed.
        db.tool("poll").arg("--next").assert().code(3).stderr(contains("no runs due for a poll"));
    }
}

/// Wait until squeue says one of `want` of a job.
fn wait_for_job(job: &str, want: &[&str], secs: u64) {
    common::wait_for(
        secs,
        250,
        &format!("job {job}, not one of {want:?},"),
        || {
            let st = common::squeue_state(job);
            if want.contains(&st.as_str()) {
                Ok(())
            } else {
                Err(format!("{st:?}"))
            }
        },
    )
}

each_backend! {
    fn abort_cancels_a_queued_and_a_running_slurm_job(db) {
        let site = site(db, "fe2", &common::ssh_config());
        site.use_recipes(&[("sleepy.toml", "stage = \"sleepy\"\nthreads = 24\ntime_cost = 60\ncommand = \"sleep 300\"\n")]);
        db.import(&common::bare_items("AQ", "sleepy", 2, 1));
        let ids: Vec<i64> = (0..2).map(|_| db.define("AQ", "sleepy", &["--limit", "1"])).collect();
        let mut jobs = Vec::new();
        for id in &ids {
            db.prepare(*id);
            let job = db.exec_json(*id)["job_id"].as_str().unwrap().to_string();
            if jobs.is_empty() {
                // The first takes the one node, so the second must queue.
                wait_for_job(&job, &["RUNNING"], 120);
            }
            jobs.push(job);
        }
        assert_eq!(common::squeue_state(&jobs[1]), "PENDING");
        // The queued one first, then the running one.
        for (id, job) in ids.iter().zip(&jobs).rev() {
            let mut c = db.remotetool();
            c.args(["abort", &id.to_string(), "--reason", "operator test", "--json"]);
            let a = common::json_of(c);
            assert_eq!((a[0]["from"].as_str(), a[0]["to"].as_str()), (Some("run"), Some("error")), "{a}");
            assert_eq!(a[0]["job_cancelled"], true);
            assert_eq!(a[0]["job_id"].as_str(), Some(job.as_str()));
            wait_for_job(job, &["", "CANCELLED"], 60);
            let run = db.show(*id);
            assert_eq!(run["fault"], 40);
            assert!(run["message"].as_str().unwrap().contains(&format!("job {job} cancelled")), "{run}");
        }
        // Retry frees both work items for the next define.
        let mut c = db.remotetool();
        c.args(["retry", "--label", "AQ", "--json"]);
        let r = common::json_of(c);
        assert_eq!(r.as_array().unwrap().len(), 2);
        let mut c = db.open();
        assert_eq!(c.read(|s| s.count_free_items("AQ", "sleepy")).unwrap(), 2);
    }
}

/// Make `path` (and its folders) as a file, or as a folder when it ends in
/// `/`, last modified `when` (touch -d).
fn plant(path: &std::path::Path, when: &str) {
    let s = path.to_string_lossy();
    if s.ends_with('/') {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
    } else {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }
    let st = std::process::Command::new("touch")
        .args(["-d", when])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

each_backend! {
    fn clean_staging_sweeps_remote_and_local_targets(db) {
        // testsite: Slurm on fe1; here: this machine.
        let site = site(db, "fe1", &common::ssh_config());
        let here_remote = site.root.join("here-remote");
        let here_runs = site.root.join("here-runs");
        let text = std::fs::read_to_string(&site.config).unwrap();
        std::fs::write(
            &site.config,
            format!("{text}\n[targets.here]\nscheduler = \"local\"\nremote_root = \"{}\"\n", here_remote.display()),
        )
        .unwrap();
        db.import_chip(&site, "ST", 1, 2, 1);
        db.define("ST", "chip", &["--limit", "1"]);
        db.define("ST", "chip", &["--limit", "1", "--target", "here", "--path-base", here_runs.to_str().unwrap()]);
        let old = "2 days ago";
        let now = "now";
        let gone = [
            (site.remote.join("run-1/results/.offload-part.dead-1/"), "testsite", "remote"),
            (site.remote.join("neb/a/b.fits.offload-part.dead"), "testsite", "remote"),
            (site.runs.join("run-1/outputs/c.fits.offload-part"), "testsite", "local"),
            (here_remote.join("run-2/.offload-part.dead-3/"), "here", "remote"),
            (here_runs.join("run-2/d.fits.offload-part"), "here", "local"),
        ];
        for (p, _, _) in &gone {
            plant(p, old);
        }
        let complete = [site.remote.join("neb/a/b.fits"), site.runs.join("run-1/outputs/c.fits")];
        for p in &complete {
            plant(p, old);
        }
        let fresh_remote = site.remote.join("neb/a/e.fits.offload-part.live");
        let fresh_here = here_runs.join("run-2/f.fits.offload-part");
        plant(&fresh_remote, now);
        plant(&fresh_here, now);
        let mut c = db.remotetool();
        c.args(["clean", "--staging", "--json"]);
        let out = common::json_of(c);
        let mut got: Vec<(String, String, String)> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["path"].as_str().unwrap().to_string(),
                    r["target"].as_str().unwrap().to_string(),
                    r["side"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort();
        let mut want: Vec<(String, String, String)> = gone
            .iter()
            .map(|(p, t, s)| (p.display().to_string().trim_end_matches('/').to_string(), t.to_string(), s.to_string()))
            .collect();
        want.sort();
        assert_eq!(got, want);
        for (p, _, _) in &gone {
            assert!(!p.exists(), "{} is still there", p.display());
        }
        for p in complete.iter().chain([&fresh_remote, &fresh_here]) {
            assert!(p.exists(), "{} was removed", p.display());
        }
        // One target, a limit of its own: the fresh one there goes, the
        // other target's stays; without --json, the paths a line each.
        let planted = std::fs::metadata(&fresh_here).unwrap().modified().unwrap();
        common::wait_until(5, 50, "the fresh staging name to be a second old", || {
            planted.elapsed().is_ok_and(|a| a > Duration::from_secs(1))
        });
        db.remotetool()
            .args(["clean", "--staging", "--target", "here", "--older-than", "1"])
            .assert()
            .success()
            .stdout(format!("{}\n", fresh_here.display()))
            .stderr(contains("target here: removed 1 staging names"));
        assert!(!fresh_here.exists() && fresh_remote.exists());
        db.remotetool().args(["clean", "--older-than", "1"]).assert().code(2);
    }
}

each_backend! {
    fn exec_and_poll_sweep_by_the_targets_limit(db) {
        let site = site(db, "fe1", &common::ssh_config());
        site.target_lines("sweep_after_hours = 1");
        db.import_chip(&site, "SW", 1, 2, 1);
        db.define_prepare("SW", "chip", &[]);
        // Past the target's hour: swept by exec's push into the run's folder;
        // within it: kept (the default of a day would keep both).
        let remote = site.remote_run_dir(1);
        let old = remote.join(".offload-part.dead-1/");
        let recent = remote.join("job.sh.offload-part.dead");
        plant(&old, "2 hours ago");
        plant(&recent, "30 minutes ago");
        db.tool("exec")
            .args(["--remote-id", "1", "-v"])
            .assert()
            .success()
            .stderr(contains("push: swept 1 staging names"));
        assert!(!old.exists() && recent.exists());
        // And by poll's pull into the outputs' local folders.
        let outputs = std::fs::read_to_string(site.run_dir(1).join("outputs.list")).unwrap();
        let first = outputs.lines().next().unwrap().split('\t').nth(1).unwrap().to_string();
        let left = std::path::PathBuf::from(format!("{first}.offload-part"));
        plant(&left, "3 hours ago");
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert!(!left.exists());
        assert!(std::path::Path::new(&first).exists());
    }
}
