//! Ordinary trouble settles the run it touches and never stops the rest, on
//! the testbed's real sshd and Slurm: a component that forgets an output or
//! leaves a link where it should be, outputs gone before the pull, polls
//! that keep failing, a job cut at its time limit or cancelled (while
//! components run, or after every one came back), inputs purged from the
//! scratch while the job waited; and this machine's own faults (a local
//! output tree that is read-only, too small, or fills mid-pull; a path_base
//! that fills during prepare), which are never the components'.

mod common;

use std::path::{Path, PathBuf};

/// Job names of the test's own: tests share the one Slurm.
fn prefix(db: &common::TestDb) -> String {
    db.job_prefix("f")
}

/// A Slurm target on fe1 (cores_per_node small so that jobs of tests
/// running side by side fit on the one node together).
fn site(db: &common::TestDb, extra: &str) -> common::Site {
    db.site_with(&format!(
        "hosts = [\"fe1\"]\nssh_config = \"{}\"\njob_prefix = \"{}\"\nmax_nodes = 1\ncores_per_node = 8\n{extra}",
        common::ssh_config(),
        prefix(db)
    ))
}

/// That target with [`common::odd_chip`] as its chip recipe.
fn odd_site(db: &common::TestDb, extra: &str) -> common::Site {
    let site = site(db, extra);
    site.use_odd_chip();
    site
}

fn define_prepare_exec(db: &common::TestDb, label: &str, policy: &str) -> serde_json::Value {
    let id = db.define_prepare(label, "chip", &["--job-policy", policy]);
    db.exec_json(id)
}

/// Run 1 of `label` under `fatal`: 8 components on 4 ranks (2 each, in id
/// order), the second of each rank (5 to 8) sleeping while the marker is
/// there, and `more` odd params besides. The marker, and the job's id.
fn start_with_sleepers(
    db: &common::TestDb,
    site: &common::Site,
    label: &str,
    more: &[(i64, &str, &str)],
) -> (PathBuf, String) {
    let mut odd: Vec<(i64, &str, &str)> = (5..=8).map(|i| (i, "ODD", "sleep")).collect();
    odd.extend_from_slice(more);
    db.import_with_params(site, label, (1, 8), &odd);
    let marker = site.root.join("marker");
    std::fs::write(&marker, "").unwrap();
    let e = define_prepare_exec(db, label, "fatal");
    (marker, e["job_id"].as_str().unwrap().to_string())
}

fn component(db: &common::TestDb, stage_id: i64) -> serde_json::Value {
    let mut c = db.remotetool();
    c.args(["show", "1", "--stage-id", &stage_id.to_string(), "--json"]);
    common::json_of(c)
}

each_backend! {
    fn a_component_that_forgets_an_output_fails_alone(db) {
        let site = odd_site(db, "");
        db.import_with_params(&site, "FO", (1, 8), &[(2, "ODD", "forget"), (5, "ODD", "link")]);
        define_prepare_exec(db, "FO", "fatal");
        let p = common::poll_until_done(db, 1);
        // Before, every poll of the run failed and it stayed in `run`.
        assert_eq!(p["state"], "error", "{p}");
        assert_eq!((p["done"].as_u64(), p["failed"].as_u64()), (Some(6), Some(2)), "{p}");
        for sid in [2, 5] {
            let c = component(db, sid);
            let text = c.to_string();
            assert_eq!(c["result"]["phase"], "output", "{text}");
            assert_eq!(c["component"]["exit_status"], 70, "{text}");
            assert_eq!(c["component"]["fault"], 1, "{text}");
            assert!(text.contains("declared output missing or not a regular file"), "{text}");
            assert!(text.contains(".ch.fits"), "{text}");
        }
        // The others' outputs came back, byte-identical; no link came back.
        let outputs = std::fs::read_to_string(site.run_dir(1).join("outputs.list")).unwrap();
        let mut back = 0;
        for l in outputs.lines() {
            let f: Vec<&str> = l.split('\t').collect();
            let local = Path::new(f[1]);
            if local.exists() {
                assert!(!local.is_symlink());
                assert_eq!(std::fs::read(f[0]).unwrap(), std::fs::read(local).unwrap());
                back += 1;
            }
        }
        assert_eq!(back, 12);
    }

    fn outputs_gone_before_the_pull_fail_only_their_components(db) {
        let site = odd_site(db, "");
        db.import_with_params(&site, "GB", (1, 6), &[]);
        let e = define_prepare_exec(db, "GB", "ignore");
        common::wait_for_job_end(e["job_id"].as_str().unwrap());
        // After the job: one output removed, one replaced by a link, one by a folder.
        let outputs = std::fs::read_to_string(site.run_dir(1).join("outputs.list")).unwrap();
        let rows: Vec<Vec<String>> = outputs
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .filter(|f: &Vec<String>| f[0].ends_with(".ch.fits"))
            .collect();
        std::fs::remove_file(&rows[0][0]).unwrap();
        std::fs::remove_file(&rows[1][0]).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &rows[1][0]).unwrap();
        std::fs::remove_file(&rows[2][0]).unwrap();
        std::fs::create_dir(&rows[2][0]).unwrap();
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!((p["done"].as_u64(), p["failed"].as_u64()), (Some(3), Some(3)), "{p}");
        let run = db.show(1);
        let failed = run["failed_components"].as_array().unwrap();
        assert_eq!(failed.len(), 3, "{run}");
        for f in failed {
            assert!(
                f["last_line"].as_str().unwrap().contains("is missing or not a regular file"),
                "{f}"
            );
        }
        let c = component(db, failed[0]["stage_id"].as_i64().unwrap());
        assert_eq!(c["component"]["fault"], 3, "{c}");
        assert!(c["result"]["output_error"].as_str().unwrap().contains(".ch.fits"), "{c}");
        // Nothing refused was written here, no link came back.
        for r in &rows[..3] {
            assert!(!Path::new(&r[1]).exists(), "{}", r[1]);
        }
        for r in &rows[3..] {
            assert_eq!(std::fs::read(&r[0]).unwrap(), std::fs::read(&r[1]).unwrap());
        }
    }

    fn polls_that_keep_failing_need_a_person(db) {
        let site = odd_site(db, "");
        db.import_with_params(&site, "PF", (1, 2), &[]);
        let e = define_prepare_exec(db, "PF", "fatal");
        common::wait_for_job_end(e["job_id"].as_str().unwrap());
        // The run's local lists are gone: every poll fails, not the job.
        std::fs::remove_file(site.run_dir(1).join("outputs.list")).unwrap();
        for n in 1..=3 {
            db.tool("poll").args(["--remote-id", "1"]).assert().code(1);
            let run = db.show(1);
            assert_eq!(run["poll_failures"], n, "{run}");
            let status = db.remotetool().args(["status", "--no-masters", "--json"]).output().unwrap();
            let st = common::json(&status.stdout);
            let listed = st["attention"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["why"].as_str().unwrap_or("").contains("poll failed"));
            assert_eq!(listed, n >= 3, "{st}");
        }
        let st = db.remotetool().args(["status", "--no-masters"]).output().unwrap();
        let text = String::from_utf8_lossy(&st.stdout);
        assert!(text.contains("poll failed 3 times in a row since"), "{text}");
        assert!(text.contains("outputs.list"), "{text}");
        // Mended, the next poll works and the count goes.
        std::fs::copy(
            site.remote_run_dir(1).join("outputs.list"),
            site.run_dir(1).join("outputs.list"),
        )
        .unwrap();
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        let run = db.show(1);
        assert_eq!(run["poll_failures"], 0, "{run}");
        assert!(run["poll_error"].is_null(), "{run}");
    }

    fn inputs_purged_while_the_job_waited_go_again(db) {
        let site = odd_site(db, "");
        db.import_with_params(&site, "PU", (1, 4), &[]);
        db.define_prepare("PU", "chip", &[]);
        // The job waits in the queue (held) while the scratch is purged of
        // one input; exec finds it and records it.
        let remote = site.push(1);
        let held = common::sbatch_held(&remote, &format!("{}-r1-a0", prefix(db)));
        assert_eq!(db.exec_json(1)["found_existing"], true);
        let inputs = std::fs::read_to_string(site.run_dir(1).join("inputs.list")).unwrap();
        let purged = inputs.lines().next().unwrap().split('\t').nth(1).unwrap().to_string();
        std::fs::remove_file(&purged).unwrap();
        assert!(std::process::Command::new("scontrol").args(["release", &held]).status().unwrap().success());
        let p = common::poll_until_done(db, 1);
        // The site's failure: nothing ran, no component lost an attempt.
        assert_eq!(p["state"], "pending", "{p}");
        let run = db.show(1);
        assert_eq!(run["attempt"], 1);
        let history = run.to_string();
        assert!(history.contains("inputs missing at the site"), "{history}");
        assert!(history.contains(&purged), "{history}");
        assert_eq!(run["components_by_state"]["queued"], 4, "{run}");
        // exec sends only what is missing, and the run comes back whole.
        let e = db.exec_json(1);
        assert_eq!(e["files_sent"], 1, "{e}");
        assert!(Path::new(&purged).is_file());
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["done"], 4);
    }
}

// A real Slurm job killed at its time limit: the components that wrote
// their results are applied (and their outputs pulled), only the others go
// round again, in a run prepared anew as the next attempt.
each_backend! {
    fn a_job_cut_at_its_time_limit_keeps_the_work_it_did(db) {
        let site = odd_site(db, "");
        // 8 components on 4 ranks (2 each, in id order): the second of each
        // rank sleeps while the marker is there.
        let (marker, job) = start_with_sleepers(db, &site, "TL", &[]);
        assert!(std::process::Command::new("scontrol")
            .args(["update", &format!("JobId={job}"), "TimeLimit=1"])
            .status()
            .unwrap()
            .success());
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "new", "{p}");
        assert_eq!(
            (p["done"].as_u64(), p["failed"].as_u64()),
            (Some(4), Some(0)),
            "{p}"
        );
        assert_eq!(p["outputs"], 8, "{p}");
        let run = db.show(1);
        assert_eq!(run["attempt"], 1, "{run}");
        assert_eq!(run["components_by_state"]["done"], 4, "{run}");
        assert_eq!(run["components_by_state"]["queued"], 4, "{run}");
        let text = run.to_string();
        assert!(text.contains("the other 4 go again as attempt 1"), "{text}");
        for sid in 5..=8 {
            assert_eq!(item_attempts(db, sid), 0, "item {sid} was cut off, not tried");
        }
        // Prepared again for the four that did not come back.
        std::fs::remove_file(&marker).unwrap();
        let mut c = db.tool("prepare");
        c.args(["--remote-id", "1", "--json"]);
        let prep = common::json_of(c);
        assert_eq!(prep["components"], 4, "{prep}");
        let e = db.exec_json(1);
        assert_eq!(e["job_name"], format!("{}-r1-a1", prefix(db)));
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["done"], 4);
        let mut c = db.open();
        assert_eq!(
            c.read(|s| s.count_items(Some("TL"), None, Some(offload::state::ItemState::Done)))
                .unwrap(),
            8
        );
        assert_eq!(pulled_files_whole(&site.neb.join("czw"), &site.remote.join("neb/czw")), 16);
        db.assert_tallies_match();
    }
}

/// Result lines written so far in a run's remote folder (regular files
/// only: a FIFO there is not read).
fn records_at_site(site: &common::Site, id: i64) -> usize {
    let dir = site.remote.join(format!("run-{id}/results"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|t| t.lines().count())
        .sum()
}

fn scancel(job: &str) {
    assert!(std::process::Command::new("scancel")
        .arg(job)
        .status()
        .expect("scancel runs (scripts/testbed up)")
        .success());
}

fn item_attempts(db: &common::TestDb, stage_id: i64) -> i64 {
    component(db, stage_id)["work_item"]["attempts"]
        .as_i64()
        .unwrap()
}

// A job cancelled by the site while components run: the four that were
// running were cut off by the end of the job, not failed: they go round
// again with no attempt counted, and the run ends full.
each_backend! {
    fn a_job_cancelled_while_components_run_sends_them_round_again(db) {
        let site = odd_site(db, "");
        let (marker, job) = start_with_sleepers(db, &site, "CX", &[]);
        common::wait_until(120, 200, "the four quick components' results", || records_at_site(&site, 1) >= 4);
        scancel(&job);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "new", "{p}");
        assert_eq!((p["done"].as_u64(), p["failed"].as_u64()), (Some(4), Some(0)), "{p}");
        for sid in 5..=8 {
            assert_eq!(item_attempts(db, sid), 0, "item {sid} was cut off, not tried");
        }
        let run = db.show(1);
        assert_eq!(run["components_by_state"]["queued"], 4, "{run}");
        assert!(run["components_by_state"].get("failed").is_none(), "{run}");
        std::fs::remove_file(&marker).unwrap();
        db.prepare(1);
        db.exec(1);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["done"], 4, "{p}");
        let mut c = db.open();
        assert_eq!(c.read(|s| s.count_items(Some("CX"), None, Some(offload::state::ItemState::Done))).unwrap(), 8);
        for sid in 5..=8 {
            assert_eq!(item_attempts(db, sid), 1, "item {sid}: one attempt, the one that worked");
        }
        assert_eq!(pulled_files_whole(&site.neb.join("czw"), &site.remote.join("neb/czw")), 16);
        db.assert_tallies_match();
    }
}

// One component fails on its own in the first job, the rest are cut short
// by a cancel; the second job does the rest. Under `fatal` the run ends in
// error for the first job's failure.
each_backend! {
    fn a_failure_in_an_attempt_cut_short_still_ends_the_run_in_error(db) {
        let site = odd_site(db, "");
        let (marker, job) = start_with_sleepers(db, &site, "FX", &[(1, "ODD", "fail")]);
        common::wait_until(120, 200, "the first four components' results", || records_at_site(&site, 1) >= 4);
        scancel(&job);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "new", "{p}");
        assert_eq!((p["done"].as_u64(), p["failed"].as_u64()), (Some(3), Some(1)), "{p}");
        std::fs::remove_file(&marker).unwrap();
        db.prepare(1);
        db.exec(1);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "error", "{p}");
        let run = db.show(1);
        assert_eq!(run["fault"], 30, "{run}");
        let msg = run["message"].as_str().unwrap();
        assert!(msg.contains("1 failed in earlier attempts") && msg.contains("chip/1"), "{msg}");
    }
}

// Every component came back, then Slurm ended the job at its time limit
// (the batch script was still busy): nothing is left to run, so the run
// settles as a job that ended does.
each_backend! {
    fn a_job_cut_at_its_time_limit_after_every_component_came_back_ends_full(db) {
        let site = odd_site(db, "");
        db.import_with_params(&site, "TX", (1, 8), &[(8, "ODD", "hold")]);
        let e = define_prepare_exec(db, "TX", "fatal");
        let job = e["job_id"].as_str().unwrap().to_string();
        common::wait_until(120, 200, "all eight results", || records_at_site(&site, 1) >= 8);
        // The summary's `cat results/rank-*.tsv` waits on the FIFO: once it
        // has it open (a writer's non-blocking open succeeds only then),
        // the FIFO leaves the folder and the job stays busy until Slurm
        // ends it.
        let fifo = site.remote.join("run-1/results/rank-hold.tsv");
        let mut writer = None;
        common::wait_until(120, 200, "the batch script to read the FIFO", || {
            use std::os::unix::fs::OpenOptionsExt;
            writer = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .ok();
            writer.is_some()
        });
        std::fs::remove_file(&fifo).unwrap();
        assert!(std::process::Command::new("scontrol")
            .args(["update", &format!("JobId={job}"), "TimeLimit=1"])
            .status()
            .unwrap()
            .success());
        common::wait_for_job_end(&job);
        drop(writer);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!((p["done"].as_u64(), p["failed"].as_u64()), (Some(8), Some(0)), "{p}");
        let run = db.show(1);
        assert_eq!(run["attempt"], 0, "{run}");
        let history = run.to_string();
        assert!(history.contains(&format!("job {job} ended: 8 done")), "{history}");
    }
}

/// Every file under `local` (the pulled outputs) that does not carry a
/// staging name is byte for byte its remote copy; how many there are.
fn pulled_files_whole(local: &Path, remote: &Path) -> usize {
    let mut n = 0;
    for p in common::walk(local).into_iter().filter(|p| !p.is_dir()) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.contains(".offload-part") {
            continue;
        }
        let there = remote.join(p.strip_prefix(local).unwrap());
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(&there).unwrap(),
            "{} looks complete but is not {}",
            p.display(),
            there.display()
        );
        n += 1;
    }
    n
}

// This machine's output tree is read-only, then too small (the free-space
// check refuses the pull before it writes), then out of inodes in the
// middle of the pull, then fine: each time poll exits 6 saying what failed
// where, the run stays in `run` with fault 60 and nothing failed; the
// last poll pulls only what is missing and the run ends full, every output
// right, each result applied once.
each_backend! {
    fn a_local_output_tree_that_cannot_take_the_outputs_fails_no_component(db) {
        let site = odd_site(db, "");
        db.import_with_params(&site, "DX", (1, 8), &[]);
        // Outputs (neb://any/czw/...) land under neb/czw here and
        // neb/czw at the site.
        let local = site.neb.join("czw");
        let remote = site.remote.join("neb/czw");
        let disk = common::Tmpfs::mount(&local, "size=1m,nr_inodes=1000");
        define_prepare_exec(db, "DX", "fatal");
        let job = db.show(1)["job_id"].as_str().unwrap().to_string();
        common::wait_for_job_end(&job);
        let poll_fails = |what: &str| -> String {
            // Slurm may still call the job COMPLETING for a moment.
            let out = common::wait_for(120, 300, &format!("{what}: job"), || {
                let out = db.tool("poll").args(["--remote-id", "1", "--quiet"]).output().unwrap();
                let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if out.status.success() && common::JOB_ACTIVE.contains(&said.as_str()) {
                    Err(said)
                } else {
                    Ok(out)
                }
            });
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(
                out.status.code(),
                Some(6),
                "{what}: {err} {}",
                String::from_utf8_lossy(&out.stdout)
            );
            let run = db.show(1);
            assert_eq!(run["state"], "run", "{what}: {run}");
            assert_eq!(run["fault"], 60, "{what}: {run}");
            assert!(run["components_by_state"].get("failed").is_none(), "{what}: {run}");
            assert!(run["components_by_state"].get("done").is_none(), "{what}: {run}");
            let status = db.remotetool().args(["status", "--json", "--no-masters"]).output().unwrap();
            let status = String::from_utf8_lossy(&status.stdout).to_string();
            assert!(status.contains("a write here failed, fault 60"), "{what}: {status}");
            // Said once, not once per file.
            assert_eq!(err.lines().count(), 1, "{what}: {err}");
            err
        };
        disk.remount("ro");
        let err = poll_fails("read-only");
        assert!(err.contains("Read-only file system") && err.contains(&local.display().to_string()), "{err}");
        assert_eq!(pulled_files_whole(&local, &remote), 0);
        // From here on the scheduler cannot be asked (its commands are
        // nowhere): how the job ended is remembered, not asked again.
        let cfg = std::fs::read_to_string(&site.config).unwrap();
        std::fs::write(
            &site.config,
            cfg.replacen("remote_root = ", "scheduler_path = \"/nowhere\"\nremote_root = ", 1),
        )
        .unwrap();
        // Room for a page or two: each output takes a page of tmpfs.
        disk.remount("rw,size=8k");
        let err = poll_fails("too small");
        assert!(err.contains("No space left on device") && err.contains("is free"), "{err}");
        assert_eq!(pulled_files_whole(&local, &remote), 0, "refused before writing");
        // Bytes enough, inodes for a few files: the pull fills it midway.
        disk.remount("size=1m,nr_inodes=8");
        let err = poll_fails("out of inodes");
        assert!(err.contains("No space left on device") && err.contains("inodes"), "{err}");
        let partial = pulled_files_whole(&local, &remote);
        assert!(partial < 16, "{partial} of 16 outputs came before the disk filled");
        disk.remount("nr_inodes=1000");
        let mut c = db.tool("poll");
        c.args(["--remote-id", "1", "--json"]);
        let p = common::json_of(c);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!((p["done"].as_u64(), p["failed"].as_u64()), (Some(8), Some(0)), "{p}");
        assert_eq!(pulled_files_whole(&local, &remote), 16);
        let run = db.show(1);
        assert_eq!(run["fault"], 0, "{run}");
        for sid in 1..=8 {
            assert_eq!(item_attempts(db, sid), 1, "item {sid}");
        }
        let out = db.remotetool().args(["results", "--json", "--label", "DX"]).output().unwrap();
        // JSON Lines, a result each: every component's once.
        let mut ids: Vec<i64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| common::json(l.as_bytes())["component_id"].as_i64().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, (1..=8).collect::<Vec<i64>>(), "each result once");
    }
}

// prepare's path_base fills: exit 6, the run stays new with fault 60 and
// is held a while (not for a person); once there is room, prepare
// prepares it.
each_backend! {
    fn a_path_base_that_fills_during_prepare_is_this_machines_fault(db) {
        let site = odd_site(db, "");
        db.import_with_params(&site, "PX", (1, 8), &[]);
        let disk = common::Tmpfs::mount(&site.runs, "size=4k,nr_inodes=1000");
        db.define("PX", "chip", &[]);
        let out = db.tool("prepare").args(["--remote-id", "1"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(6), "{err}");
        assert!(err.contains("No space left on device") && err.contains("this machine's fault"), "{err}");
        let run = db.show(1);
        assert_eq!((run["state"].as_str(), run["fault"].as_i64()), (Some("new"), Some(60)), "{run}");
        let status = db.remotetool().args(["status", "--json", "--no-masters"]).output().unwrap();
        let status = String::from_utf8_lossy(&status.stdout).to_string();
        assert!(status.contains("a write here failed, fault 60"), "{status}");
        assert!(!status.contains("remotetool unfault 1"), "held a while, not for a person: {status}");
        disk.remount("size=8m");
        db.tool("prepare").args(["--remote-id", "1"]).assert().success();
        let run = db.show(1);
        assert_eq!((run["state"].as_str(), run["fault"].as_i64()), (Some("pending"), Some(0)), "{run}");
    }
}
