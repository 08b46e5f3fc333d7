//! What `--next` takes when part of the work cannot go on: a target whose
//! masters are down, a target paused or throttled, a run whose last try
//! failed with a fault. The rest of the queue goes on, on every backend.

mod common;

use predicates::prelude::*;
use predicates::str::contains;

/// A second target, `name`, like `testsite` (same vars and path rules)
/// but with `lines` of its own instead of `scheduler = "local"`.
fn add_target(site: &common::Site, name: &str, lines: &str) {
    let text = std::fs::read_to_string(&site.config).unwrap();
    let section = &text[text.find("[targets.testsite]").unwrap()..];
    let copy = section
        .replace("targets.testsite", &format!("targets.{name}"))
        .replace("scheduler = \"local\"", lines);
    std::fs::write(&site.config, format!("{text}\n{copy}")).unwrap();
}

/// `testsite` is local (always reachable); `deadsite` is a Slurm target
/// whose only front end has no master.
fn two_targets(db: &common::TestDb) -> common::Site {
    let site = db.site_with("scheduler = \"local\"");
    let ssh = db.write(
        "ssh_config_dead",
        "Host fe-dead\n  HostName 127.0.0.1\n  Port 2202\n  ControlPath /nonexistent/offload/%n\n",
    );
    add_target(
        &site,
        "deadsite",
        &format!(
            "scheduler = \"slurm\"\nhosts = [\"fe-dead\"]\nssh_config = \"{}\"",
            ssh.display()
        ),
    );
    site
}

/// Define a run of label and stage (at most 2 components: the items of
/// one label make several runs).
fn define(db: &common::TestDb, label: &str, stage: &str, target: Option<&str>) {
    match target {
        Some(t) => db.define(label, stage, &["--limit", "2", "--target", t]),
        None => db.define(label, stage, &["--limit", "2"]),
    };
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_row(db: &common::TestDb, id: i64) -> offload::db::models::Run {
    db.open().read(|s| s.run(id)).unwrap().unwrap()
}

/// Move a run's hold to the past, as if its time had run out.
fn expire_hold(db: &common::TestDb, id: i64) {
    let run = run_row(db, id);
    let past = offload::db::now() - chrono::TimeDelta::seconds(1);
    db.open()
        .tx(|s| {
            s.set_hold(id, Some(past), run.fault_count)?;
            Ok(())
        })
        .unwrap();
}

each_backend! {
    fn exec_next_goes_on_past_a_dead_target(db) {
        let site = two_targets(db);
        db.import_chip_failing(&site, "AA", (1, 4), 64, &[]);
        // Run 1, the oldest, goes to the dead site; run 2 to the live one.
        define(db, "AA", "chip", Some("deadsite"));
        define(db, "AA", "chip", None);
        db.tool("prepare").arg("--next").assert().success().stdout("1\n");
        db.tool("prepare").arg("--next").assert().success().stdout("2\n");
        let out = db.tool("exec").arg("--next").output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("run 2: submitted job local:"), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("deadsite")).collect();
        assert_eq!(lines.len(), 1, "one line names the dead target: {err}");
        assert!(lines[0].contains("target 'deadsite' cannot be reached"), "{err}");
        assert!(lines[0].contains("no master connection to fe-dead"), "{err}");
        assert!(lines[0].contains("remotetool refresh-auth --target deadsite"), "{err}");
        assert!(lines[0].contains("left as they are"), "{err}");
        assert_eq!(db.show(2)["state"], "run");
        let dead = db.show(1);
        assert_eq!(dead["state"], "pending", "left as it is, not auth");
        assert_eq!(dead["fault"], 0);
        assert_eq!(dead["held_until"], serde_json::Value::Null);
        // Only the dead target's run is left: auth, and still pending.
        let out = db.tool("exec").arg("--next").output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(err.contains("masters are down: deadsite"), "{err}");
        assert_eq!(db.show(1)["state"], "pending");
        // --target: one target's runs only.
        db.tool("exec").args(["--next", "--target", "deadsite"]).assert().code(5);
        db.tool("exec")
            .args(["--next", "--target", "testsite"])
            .assert()
            .code(3)
            .stderr(contains("no pending runs to submit"));
        db.tool("exec")
            .args(["--next", "--target", "nosuch"])
            .assert()
            .code(2)
            .stderr(contains("unknown target 'nosuch'"));
        db.tool("exec").args(["--remote-id", "1", "--target", "testsite"]).assert().code(2);
        // Named by id, the dead target's run goes to auth as before.
        db.tool("exec").args(["--remote-id", "1"]).assert().code(5).stderr(contains("run 1 is now 'auth'"));
        assert_eq!(db.show(1)["state"], "auth");
        db.remotetool().args(["revertauth", "--remote-id", "1"]).assert().success();
        // poll --next the same: run 1 in `run` on the dead site is left alone.
        db.remotetool().args(["set", "1", "run", "--reason", "test"]).assert().success();
        let out = db.tool("poll").args(["--next", "--interval", "0"]).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("run 2: job local:"), "{err}");
        assert_eq!(err.lines().filter(|l| l.contains("deadsite")).count(), 1, "{err}");
        assert_eq!(db.show(1)["state"], "run");
        db.tool("poll")
            .args(["--next", "--interval", "0", "--target", "deadsite"])
            .assert()
            .code(5);
        assert_eq!(db.show(1)["state"], "run");
        if db.show(2)["state"] == "run" {
            common::poll_until_done(db, 2);
        }
    }

    fn pauses_per_target(db) {
        let site = two_targets(db);
        db.import_chip_failing(&site, "AA", (1, 4), 64, &[]);
        define(db, "AA", "chip", Some("deadsite"));
        define(db, "AA", "chip", None);
        db.remotetool()
            .args(["pause", "prepare", "--target", "deadsite", "--reason", "site maintenance"])
            .assert()
            .success();
        db.remotetool().args(["pause", "xfer", "--target", "deadsite"]).assert().code(2);
        db.remotetool().args(["pause", "exec", "--target", "nosuch"]).assert().code(2);
        // The paused target's run (the oldest) is skipped, the other taken.
        db.tool("prepare").arg("--next").assert().success().stdout("2\n");
        db.tool("prepare")
            .arg("--next")
            .assert()
            .code(4)
            .stderr(contains("prepare is paused for target(s) deadsite"));
        db.tool("prepare")
            .args(["--remote-id", "1"])
            .assert()
            .code(4)
            .stderr(contains("prepare is paused for target 'deadsite'").and(contains("site maintenance")));
        assert_eq!(db.show(1)["state"], "new");
        let mut c = db.remotetool();
        c.args(["paused", "--json"]);
        let p = common::json_of(c);
        let rows: Vec<(String, String)> = p
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["paused"] == true)
            .map(|r| (r["tool"].as_str().unwrap().to_string(), r["target"].as_str().unwrap_or("").to_string()))
            .collect();
        assert_eq!(rows, vec![("prepare".to_string(), "deadsite".to_string())]);
        db.remotetool()
            .arg("paused")
            .assert()
            .success()
            .stdout(contains("deadsite").and(contains("site maintenance")));
        // Another tool, or the tool for another target, is not paused.
        db.tool("prepare").args(["--next", "--target", "testsite"]).assert().code(3);
        db.remotetool().args(["resume", "prepare", "--target", "deadsite"]).assert().success();
        db.tool("prepare").arg("--next").assert().success().stdout("1\n");
        // exec paused for the dead target: its masters are not even asked.
        db.remotetool().args(["pause", "exec", "--target", "deadsite"]).assert().success();
        let out = db.tool("exec").args(["--next", "--target", "deadsite"]).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains("exec is paused for target(s) deadsite"), "{err}");
        assert!(!err.contains("cannot be reached"), "{err}");
        db.tool("exec").arg("--next").assert().success();
        assert_eq!(db.show(2)["state"], "run");
        assert_eq!(db.show(1)["state"], "pending");
        let mut c = db.remotetool();
        c.args(["status", "--no-masters", "--json"]);
        let st = common::json_of(c);
        let paused: Vec<&str> = st["paused"].as_array().unwrap().iter().map(|c| c["tool"].as_str().unwrap()).collect();
        assert_eq!(paused, vec!["exec@deadsite"]);
        common::poll_until_done(db, 2);
    }

    fn a_failed_prepare_is_held_until_a_person_acts(db) {
        let site = db.site_with("scheduler = \"local\"");
        site.use_recipes(&[]);
        // Run 1 has no recipe: prepare fails (fault 10). Run 2 is fine.
        db.import(&common::items("BAD", "warp", 1, 2, 1));
        db.import_chip_failing(&site, "OK", (1, 2), 64, &[]);
        define(db, "BAD", "warp", None);
        define(db, "OK", "chip", None);
        let out = db.tool("prepare").arg("--next").output().unwrap();
        let err = stderr_of(&out);
        assert!(matches!(out.status.code(), Some(1 | 2)), "{err}");
        assert!(err.contains("run 1"), "{err}");
        assert!(err.contains("remotetool unfault 1"), "{err}");
        let bad = run_row(db, 1);
        assert_eq!((bad.state.as_str(), bad.fault, bad.fault_count), ("new", 10, 1));
        assert_eq!(bad.held_until, Some(offload::db::models::held_for_a_person()));
        // The next prepare goes on to run 2; then nothing is left to take.
        db.tool("prepare").arg("--next").assert().success().stdout("2\n");
        db.tool("prepare").arg("--next").assert().code(3).stderr(contains("no new runs to prepare"));
        assert_eq!(run_row(db, 1).fault_count, 1, "not taken again");
        // status lists it, with the remedy.
        let mut c = db.remotetool();
        c.args(["status", "--no-masters", "--json"]);
        let st = common::json_of(c);
        let held = st["held"].as_array().unwrap();
        assert_eq!(held.len(), 1, "{st}");
        assert_eq!(held[0]["remote_id"], 1);
        assert_eq!(held[0]["until"], serde_json::Value::Null);
        assert_eq!(held[0]["fault"], 10);
        assert!(held[0]["remedy"].as_str().unwrap().contains("until a person acts: `remotetool unfault 1`"));
        db.remotetool()
            .args(["status", "--no-masters"])
            .assert()
            .success()
            .stdout(contains("held back from --next:").and(contains("remotetool unfault 1")));
        // A person fixes the recipe and clears the fault.
        site.use_recipes(&[("warp.toml", "stage = \"warp\"\nthreads = 1\ntime_cost = 10\ncommand = \"echo @EXP_NAME@ @CHIP@\"\n")]);
        db.remotetool().args(["unfault", "2"]).assert().code(3);
        db.remotetool()
            .args(["unfault", "1", "--reason", "warp recipe added"])
            .assert()
            .success()
            .stdout("1\n");
        let bad = run_row(db, 1);
        assert_eq!((bad.fault, bad.fault_count, bad.held_until), (0, 0, None));
        let mut c = db.remotetool();
        c.args(["history", "--remote-id", "1", "--json"]);
        let h = common::json_of(c);
        assert!(
            h.as_array().unwrap().iter().any(|r| r["message"].as_str().unwrap_or("").contains("unfaulted by hand (warp recipe added): was fault 10")),
            "{h}"
        );
        let mut c = db.remotetool();
        c.args(["status", "--no-masters", "--json"]);
        assert!(common::json_of(c).get("held").is_none());
        db.tool("prepare").arg("--next").assert().success().stdout("1\n");
        assert_eq!(db.show(1)["state"], "pending");
    }

    fn a_held_run_named_by_id_is_taken_and_a_success_ends_the_hold(db) {
        let site = db.site_with("scheduler = \"local\"");
        site.use_recipes(&[]);
        db.import(&common::items("BAD", "warp", 1, 2, 1));
        define(db, "BAD", "warp", None);
        db.tool("prepare").arg("--next").assert().failure();
        db.tool("prepare").arg("--next").assert().code(3);
        // Named by id, a held run is taken: it fails again, one more in a row.
        db.tool("prepare").args(["--remote-id", "1"]).assert().failure().stderr(contains("run 1"));
        assert_eq!(run_row(db, 1).fault_count, 2);
        site.use_recipes(&[("warp.toml", "stage = \"warp\"\nthreads = 1\ntime_cost = 10\ncommand = \"echo @EXP_NAME@ @CHIP@\"\n")]);
        db.tool("prepare").args(["--remote-id", "1"]).assert().success();
        let run = run_row(db, 1);
        assert_eq!((run.state.as_str(), run.fault, run.fault_count, run.held_until), ("pending", 0, 0, None));
        // `set` by hand ends a hold too (any change of state does).
        db.remotetool().args(["set", "1", "new", "--reason", "again"]).assert().success();
        db.tool("prepare").arg("--next").assert().success().stdout("1\n");
    }

    fn a_throttled_target_is_held_back_and_its_hold_grows(db) {
        // testsite is always over its queue limit; othersite is not.
        let site = db.site_with("scheduler = \"local\"\nqueue_base = 0\nqueue_factor = 0.0");
        add_target(&site, "othersite", "scheduler = \"local\"");
        let text = std::fs::read_to_string(&site.config).unwrap();
        // othersite's copy took testsite's throttle lines: drop them there.
        let (head, tail) = text.split_at(text.find("[targets.othersite]").unwrap());
        let tail = tail.replace("queue_base = 0\nqueue_factor = 0.0\n", "");
        std::fs::write(&site.config, format!("{head}{tail}")).unwrap();
        db.import_chip_failing(&site, "AA", (1, 4), 64, &[]);
        define(db, "AA", "chip", None);
        define(db, "AA", "chip", Some("othersite"));
        db.tool("prepare").arg("--next").assert().success();
        db.tool("prepare").arg("--next").assert().success();
        // The throttled run is held, and exec goes on to the other target.
        let out = db.tool("exec").arg("--next").output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("throttled") && err.contains("run 1 stays pending"), "{err}");
        assert!(err.contains("run 2: submitted"), "{err}");
        let held = run_row(db, 1);
        assert_eq!((held.state.as_str(), held.fault, held.fault_count), ("pending", 0, 1));
        let left = |r: &offload::db::models::Run| (r.held_until.unwrap() - offload::db::now()).num_seconds();
        assert!((50..=60).contains(&left(&held)), "{}", left(&held));
        // Held: not taken again; nothing else to do.
        db.tool("exec").arg("--next").assert().code(3);
        assert_eq!(run_row(db, 1).fault_count, 1);
        let mut c = db.remotetool();
        c.args(["status", "--no-masters", "--json"]);
        let st = common::json_of(c);
        let h = &st["held"][0];
        assert_eq!(h["remote_id"], 1);
        assert!(h["until"].is_string(), "{st}");
        assert!(h["why"].as_str().unwrap().contains("throttled"), "{st}");
        // The hold runs out: taken again, throttled again, held twice as long.
        expire_hold(db, 1);
        db.tool("exec").arg("--next").assert().code(4).stderr(contains("throttled"));
        let held = run_row(db, 1);
        assert_eq!(held.fault_count, 2);
        assert!((110..=120).contains(&left(&held)), "{}", left(&held));
        // Named by id it is still taken; one more in a row.
        db.tool("exec").args(["--remote-id", "1"]).assert().code(4);
        let held = run_row(db, 1);
        assert_eq!(held.fault_count, 3);
        assert!((230..=240).contains(&left(&held)), "{}", left(&held));
        assert_eq!(held.state, offload::state::RunState::Pending);
        common::poll_until_done(db, 2);
    }
}

#[test]
fn back_off_doubles_to_an_hour() {
    let secs: Vec<u64> = (1..=8)
        .map(|n| offload::runs::back_off(n).as_secs())
        .collect();
    assert_eq!(secs, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
}
