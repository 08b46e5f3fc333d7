//! Ordinary trouble settles the run it touches and never stops the rest, on
//! the testbed's real sshd and Slurm: a component that forgets an output or
//! leaves a link where it should be, outputs gone before the pull, polls
//! that keep failing, a job cut at its time limit, inputs purged from the
//! scratch while the job waited.

mod common;

use std::path::Path;

const SSH: &str = "/var/lib/offload-testbed/ssh/ssh_config";

fn ssh_config() -> String {
    std::env::var("OFFLOAD_TEST_SSH_CONFIG").unwrap_or_else(|_| SSH.to_string())
}

/// Job names of the test's own: tests share the one Slurm.
fn prefix(db: &common::TestDb) -> String {
    let name = db
        .home
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "");
    format!("f{name}")
}

/// A Slurm target on fe1 (cores_per_node small so that jobs of tests
/// running side by side fit on the one node together).
fn site(db: &common::TestDb, extra: &str) -> common::Site {
    db.site_with(&format!(
        "hosts = [\"fe1\"]\nssh_config = \"{}\"\njob_prefix = \"{}\"\nmax_nodes = 1\ncores_per_node = 8\n{extra}",
        ssh_config(),
        prefix(db)
    ))
}

/// `exposures` x `chips` chip items with their input files; `params` sets
/// params of some stage_ids.
fn import(
    db: &common::TestDb,
    site: &common::Site,
    label: &str,
    shape: (usize, usize),
    params: &[(i64, &str, &str)],
) {
    db.import_generated(site, label, shape, 1, 64, |v| {
        let id = v["stage_id"].as_i64().unwrap();
        for (sid, k, val) in params {
            if *sid == id {
                v["params"][*k] = (*val).into();
            }
        }
    });
}

/// A chip recipe whose command does what the item's ODD param says after
/// the real program worked: `forget` removes the image, `link` leaves a
/// symbolic link in its place, `sleep` sleeps while the marker file exists.
const ODD_CHIP: &str = r#"
stage = "chip"
threads = 2
time_cost = 20
command = "@BIN@/ppfake --threads @THREADS@ --output @out:IMAGE@ --stats @out:STATS@ @in:IMAGE@ @in:MASK@ && case @ODD@ in forget) rm -f -- @out:IMAGE@ ;; link) rm -f -- @out:IMAGE@ && ln -s -- @out:STATS@ @out:IMAGE@ ;; sleep) while [ -e @MARKER@ ]; do sleep 1; done ;; esac"
post = "cat @out:STATS@"

[inputs]
IMAGE = "@INPUT@"
MASK = "@MASK@"

[outputs]
IMAGE = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.fits"
STATS = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.stats"
"#;

fn odd_site(db: &common::TestDb, extra: &str) -> common::Site {
    let site = site(db, extra);
    site.use_recipes(&[("chip.toml", ODD_CHIP)]);
    // Defaults for every item: nothing odd, a marker nobody made.
    let marker = site.root.join("marker");
    site.set_vars(&[("ODD", "none"), ("MARKER", &marker.display().to_string())]);
    site
}

fn define_prepare_exec(db: &common::TestDb, label: &str, policy: &str) -> serde_json::Value {
    db.remotetool()
        .args([
            "define",
            "--label",
            label,
            "--stage",
            "chip",
            "--job-policy",
            policy,
        ])
        .assert()
        .success();
    db.tool("prepare")
        .args(["--remote-id", "1"])
        .assert()
        .success();
    let mut c = db.tool("exec");
    c.args(["--remote-id", "1", "--json"]);
    common::json_of(c)
}

fn component(db: &common::TestDb, stage_id: i64) -> serde_json::Value {
    let out = db
        .remotetool()
        .args(["show", "1", "--stage-id", &stage_id.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::json(&out.stdout)
}

each_backend! {
    fn a_component_that_forgets_an_output_fails_alone(db) {
        let site = odd_site(db, "");
        import(db, &site, "FO", (1, 8), &[(2, "ODD", "forget"), (5, "ODD", "link")]);
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
        import(db, &site, "GB", (1, 6), &[]);
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
        import(db, &site, "PF", (1, 2), &[]);
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
        import(db, &site, "PU", (1, 4), &[]);
        db.remotetool().args(["define", "--label", "PU", "--stage", "chip"]).assert().success();
        db.tool("prepare").args(["--remote-id", "1"]).assert().success();
        // The job waits in the queue (held) while the scratch is purged of
        // one input; exec finds it and records it.
        let remote = site.push(1);
        let out = std::process::Command::new("sbatch")
            .args(["--parsable", "--hold", &format!("--job-name={}-r1-a0", prefix(db)), "job.sh"])
            .current_dir(&remote)
            .output()
            .unwrap();
        let held = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut c = db.tool("exec");
        c.args(["--remote-id", "1", "--json"]);
        assert_eq!(common::json_of(c)["found_existing"], true);
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
        let mut c = db.tool("exec");
        c.args(["--remote-id", "1", "--json"]);
        let e = common::json_of(c);
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
        let sleepers: Vec<(i64, &str, &str)> = (5..=8).map(|i| (i, "ODD", "sleep")).collect();
        import(db, &site, "TL", (1, 8), &sleepers);
        let marker = site.root.join("marker");
        std::fs::write(&marker, "").unwrap();
        let e = define_prepare_exec(db, "TL", "fatal");
        let job = e["job_id"].as_str().unwrap().to_string();
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
        // Prepared again for the four that did not come back.
        std::fs::remove_file(&marker).unwrap();
        let mut c = db.tool("prepare");
        c.args(["--remote-id", "1", "--json"]);
        let prep = common::json_of(c);
        assert_eq!(prep["components"], 4, "{prep}");
        let mut c = db.tool("exec");
        c.args(["--remote-id", "1", "--json"]);
        let e = common::json_of(c);
        assert_eq!(e["job_name"], format!("{}-r1-a1", prefix(db)));
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["done"], 4);
        let mut c = db.open();
        assert_eq!(
            c.read(|s| s.count_items(Some("TL"), None, Some("done")))
                .unwrap(),
            8
        );
    }
}
