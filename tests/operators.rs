//! The operators' view and control: `remotetool status`, `show` of a run
//! and of a component, `abort` and `retry`, on both database backends.
//! Jobs here run on a `local` target (this machine); aborting real Slurm
//! jobs is in tests/chain.rs.

mod common;

use predicates::str::contains;

/// A local-target site whose recipes folder is the fixtures' plus `extra`
/// recipes (file name, text).
fn local_site(db: &common::TestDb, extra: &[(&str, &str)]) -> common::Site {
    let site = db.site_with("scheduler = \"local\"");
    site.use_recipes(extra);
    site
}

/// The chip recipe that also keeps each component's whole log.
fn chip_with_log() -> String {
    let chip = std::fs::read_to_string(common::fixtures().join("recipes/chip.toml")).unwrap();
    chip.replace(
        "post = \"cat @out:STATS@\"",
        "post = \"cat @out:STATS@\"\nlog = \"@WORKDIR@/@EXP_NAME@.@CHIP@.ch.log\"",
    )
}

const SLEEPY: &str =
    "stage = \"sleepy\"\nthreads = 1\ntime_cost = 60\ncommand = \"echo started; sleep 600\"\n";

/// define (run `id`) -> prepare -> exec -> poll (with `poll_args`) until
/// the run leaves `run`: the state it went to.
fn chain(db: &common::TestDb, label: &str, stage: &str, id: i64, poll_args: &[&str]) -> String {
    assert_eq!(db.define(label, stage, &[]), id);
    db.prepare(id);
    db.exec(id);
    let p = common::poll_done_with(db, id, poll_args);
    p["state"].as_str().unwrap().to_string()
}

each_backend! {
    fn a_failed_component_shows_its_log_tail_and_commands(db) {
        let site = local_site(db, &[("chip.toml", &chip_with_log())]);
        db.import_chip_failing(&site, "LG", (1, 6), 64, &[2]);
        assert_eq!(chain(db, "LG", "chip", 1, &[]), "error");
        // The run lists its failed component with the last line it wrote.
        let run = db.show(1);
        let failed = run["failed_components"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{run}");
        assert_eq!(failed[0]["stage_id"], 2);
        assert_eq!(failed[0]["exit_status"], 3);
        assert_eq!(failed[0]["phase"], "command");
        assert_eq!(failed[0]["last_line"], "ppfake: failing as asked (--fail 3) after reading 5 inputs");
        let cid = failed[0]["component"].as_i64().unwrap();
        db.remotetool()
            .args(["show", "1"])
            .assert()
            .success()
            .stdout(contains("failed components"))
            .stdout(contains("ppfake: failing as asked"));

        // One component: by id, or by the run and the work item's stage_id.
        let mut c = db.remotetool();
        c.args(["show", "--component", &cid.to_string(), "--json"]);
        let comp = common::json_of(c);
        let mut c = db.remotetool();
        c.args(["show", "1", "--stage-id", "2", "--json"]);
        assert_eq!(common::json_of(c)["component"]["id"], cid);
        assert_eq!(comp["component"]["state"], "failed");
        assert_eq!(comp["component"]["exit_status"], 3);
        assert_eq!(comp["result"]["phase"], "command");
        assert_eq!(
            comp["result"]["stderr_tail"],
            "ppfake: failing as asked (--fail 3) after reading 5 inputs"
        );
        assert_eq!(comp["result"]["stdout_tail"], "");
        assert_eq!(comp["work_item"]["stage_id"], 2);
        assert_eq!(comp["attempts"].as_array().unwrap().len(), 1);
        let remote_run = comp["remote_run"].as_str().unwrap();
        assert_eq!(remote_run, site.remote_run_dir(1).to_str().unwrap());
        let rank = comp["rank"].as_u64().unwrap();
        assert_eq!(comp["rank_log"], format!("{remote_run}/logs/rank-{rank}.log"));
        // The commands shown run again by hand and fail the same way.
        let command = comp["commands"]["command"].as_str().unwrap();
        assert!(command.contains("--fail 3"), "{command}");
        let again = std::process::Command::new("bash")
            .arg("-c")
            .arg(command)
            .env("OFFLOAD_RUN", remote_run)
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&again.stderr).contains("failing as asked"));

        // The kept log came back for the failed component as for the others.
        let log = site.neb.join("czw").join("LG");
        let logs: Vec<String> = common::walk(&log)
            .iter()
            .filter(|p| !p.is_dir())
            .map(|p| p.display().to_string())
            .filter(|p| p.ends_with(".ch.log"))
            .collect();
        assert_eq!(logs.len(), 6, "{logs:?}");
        let failed_log = logs.iter().find(|p| p.contains("XY02")).expect("log of the failed chip");
        let text = std::fs::read_to_string(failed_log).unwrap();
        assert!(text.contains("exit 3 (command)"), "{text}");
        assert!(text.contains("== stderr\nppfake: failing as asked"), "{text}");

        // People read it too.
        db.remotetool()
            .args(["show", "--component", &cid.to_string()])
            .assert()
            .success()
            .stdout(contains("export OFFLOAD_RUN="))
            .stdout(contains("stderr (tail):\n  ppfake: failing as asked"))
            .stdout(contains("attempts of this work item"));
        // Bad names are named.
        db.remotetool().args(["show", "--component", "99999"]).assert().code(2).stderr(contains("no component with id 99999"));
        db.remotetool().args(["show", "1", "--stage-id", "77"]).assert().code(2).stderr(contains("run 1 has no component of stage_id 77"));
        db.remotetool().args(["show"]).assert().code(2);
    }

    fn abort_withdraws_runs_not_yet_submitted(db) {
        let site = local_site(db, &[]);
        db.import_chip_failing(&site, "AB", (1, 6), 64, &[]);
        for _ in 0..2 {
            db.define("AB", "chip", &["--limit", "3"]);
        }
        db.prepare(2);
        db.remotetool().args(["abort", "1"]).assert().code(2).stderr(contains("--reason"));
        let mut c = db.remotetool();
        c.args(["abort", "--label", "AB", "--reason", "wrong detrends", "--json"]);
        let a = common::json_of(c);
        assert_eq!(a.as_array().unwrap().len(), 2, "{a}");
        for (r, from) in a.as_array().unwrap().iter().zip(["new", "pending"]) {
            assert_eq!((r["from"].as_str(), r["to"].as_str()), (Some(from), Some("cancelled")));
            assert_eq!(r["job_id"], serde_json::Value::Null);
        }
        let h = db.show(2)["history"].clone();
        let last = h.as_array().unwrap().last().unwrap();
        assert!(last["message"].as_str().unwrap().contains("wrong detrends"), "{last}");
        // The work items are free: the next define takes all six.
        assert_eq!(db.define("AB", "chip", &[]), 3);
        assert_eq!(db.show(3)["components"], 6);
        // Nothing open left but run 3; a closed run is not aborted.
        db.remotetool().args(["abort", "1", "--reason", "again"]).assert().code(2).stderr(contains("nothing to abort"));
        db.remotetool().args(["abort", "3", "--reason", "x"]).assert().success();
        db.remotetool().args(["abort", "--label", "AB", "--reason", "x"]).assert().code(3);
    }

    fn abort_stops_a_submitted_job_and_retry_frees_its_work(db) {
        let site = local_site(db, &[("sleepy.toml", SLEEPY)]);
        let _ = site;
        db.import("{\"stage\":\"sleepy\",\"stage_id\":1,\"label\":\"SL\",\"params\":{}}\n");
        db.define_prepare("SL", "sleepy", &[]);
        let out = db.tool("exec").args(["--remote-id", "1"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let job = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let pid = job.strip_prefix("local:").unwrap().to_string();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        let mut c = db.remotetool();
        c.args(["abort", "1", "--reason", "wrong recipe", "--json"]);
        let a = common::json_of(c);
        assert_eq!((a[0]["from"].as_str(), a[0]["to"].as_str()), (Some("run"), Some("error")));
        assert_eq!(a[0]["job_cancelled"], true);
        let pid: i32 = pid.parse().unwrap();
        common::wait_until(10, 100, &format!("job {job} to end after abort"), || !offload::host::pid_alive(pid));
        let run = db.show(1);
        assert_eq!(run["fault"], 40);
        let msg = run["message"].as_str().unwrap();
        assert!(msg.contains("wrong recipe") && msg.contains(&format!("job {job} cancelled")), "{msg}");
        // Still held by the run until a person decides.
        db.remotetool().args(["define", "--label", "SL", "--stage", "sleepy"]).assert().code(3);
        let mut c = db.remotetool();
        c.args(["retry", "1", "--json"]);
        let r = common::json_of(c);
        assert_eq!((r[0]["from"].as_str(), r[0]["to"].as_str()), (Some("error"), Some("cancelled")));
        assert_eq!(r[0]["withdrawn"], 1);
        let next = db.define("SL", "sleepy", &[]);
        // A run not ended is not retried: abort it first.
        db.remotetool().args(["retry", &next.to_string()]).assert().code(2).stderr(contains("abort it first"));
        db.assert_tallies_match();
    }

    fn retry_puts_failed_work_back_within_the_attempt_limit(db) {
        let site = local_site(db, &[]);
        db.import_chip_failing(&site, "RT", (1, 6), 64, &[1, 4]);
        // One attempt only: the two failures are abandoned at once.
        assert_eq!(chain(db, "RT", "chip", 1, &["--attempts", "1"]), "error");
        let mut c = db.open();
        assert_eq!(c.read(|s| s.count_items(Some("RT"), None, Some(offload::state::ItemState::Abandoned))).unwrap(), 2);
        // At the limit of one attempt they stay abandoned, and the run stays error.
        let mut c1 = db.remotetool();
        c1.args(["retry", "1", "--attempts", "1", "--json"]);
        let r = common::json_of(c1);
        assert_eq!((r[0]["over_limit"].as_u64(), r[0]["ready_again"].as_u64()), (Some(2), Some(0)));
        assert_eq!(r[0]["to"], "full");
        assert_eq!(db.show(1)["state"], "full");
        // A full run is retried when named: two attempts allowed, both come back.
        let mut c2 = db.remotetool();
        c2.args(["retry", "1", "--json"]);
        let r = common::json_of(c2);
        assert_eq!((r[0]["ready_again"].as_u64(), r[0]["to"].as_str()), (Some(2), Some("full")));
        assert_eq!(c.read(|s| s.count_free_items("RT", "chip")).unwrap(), 2);
        // They fail again and are abandoned for good; --ignore-limit still brings them back.
        assert_eq!(chain(db, "RT", "chip", 2, &[]), "error");
        assert_eq!(c.read(|s| s.count_items(Some("RT"), None, Some(offload::state::ItemState::Abandoned))).unwrap(), 2);
        db.remotetool().args(["retry", "--label", "RT"]).assert().success().stderr(contains("--ignore-limit"));
        assert_eq!(c.read(|s| s.count_free_items("RT", "chip")).unwrap(), 0);
        db.remotetool().args(["retry", "--state", "error"]).assert().code(3);
        db.remotetool().args(["retry", "2", "--ignore-limit"]).assert().success();
        assert_eq!(c.read(|s| s.count_free_items("RT", "chip")).unwrap(), 2);
        db.remotetool().args(["retry", "--state", "pending"]).assert().code(2).stderr(contains("'error' or 'full'"));
        db.assert_tallies_match();
    }
}

/// Run SQL on the test database as it is (to pin timestamps).
fn sql(db: &common::TestDb, text: &str) {
    db.batch(text).unwrap()
}

/// Apply results to a run's components as poll would: `failed` stage_ids
/// fail (abandoned after this attempt), the rest are done.
fn apply(db: &common::TestDb, id: i64, failed: &[i64], to: &str, fault: i32) {
    use offload::db::queries::ComponentChanges;
    use offload::runs::{self, Actor, Extra};
    use offload::state::{ComponentState, ItemState, RunState};
    let mut c = db.open();
    c.tx(|s| {
        let now = offload::db::now();
        let mut changes = Vec::new();
        for m in s.run_members(id)? {
            let (cid, wid, stage_id) = (m.component_id, m.work_item_id, m.stage_id);
            let bad = failed.contains(&stage_id);
            changes.push((
                cid,
                ComponentChanges {
                    state: if bad {
                        ComponentState::Failed
                    } else {
                        ComponentState::Done
                    },
                    active: false,
                    attempts: 1,
                    exit_status: Some(if bad { 3 } else { 0 }),
                    runtime: Some(100.0),
                    fault: i32::from(bad),
                    result: None,
                    updated_at: now,
                },
            ));
            let item = if bad {
                ItemState::Abandoned
            } else {
                ItemState::Done
            };
            s.set_work_items(&[wid], item, true, now)?;
        }
        s.update_components(&changes)?;
        let run = runs::get_run(s, id)?;
        let to: RunState = to.parse().unwrap();
        runs::transition_in(
            s,
            &run,
            to,
            &Actor::current("poll"),
            "applied by the test",
            Extra {
                fault: Some(fault),
                message: Some(
                    (fault != 0).then(|| format!("job 77{id} ended: {} failed", failed.len())),
                ),
                ..Extra::default()
            },
        )
    })
    .unwrap();
}

/// A realistic mix, as of 2026-11-25 12:00: run 1 running and not polled
/// for hours, 2 ended with a failure (error), 3 with its connection down
/// (auth), 4 a camera run just defined, 5 of another label full, 6 running
/// and polled a minute ago; exec paused; run 6 leased by a poll on ws07.
fn realistic_mix(db: &common::TestDb) {
    let home = db.home.path();
    let dir = home.join(".config/offload");
    std::fs::create_dir_all(&dir).unwrap();
    let ssh = db.write(
        "ssh_config",
        "Host fe9\n  HostName 127.0.0.1\n  ControlPath /nonexistent/offload-test/%n.sock\n",
    );
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "default_target = \"hpc\"\n[targets.hpc]\nhosts = [\"fe9\"]\nssh_config = \"{}\"\nremote_root = \"/scratch/offload\"\n",
            ssh.display()
        ),
    )
    .unwrap();
    let sas = "lanl.SAS.201402114";
    db.import(&common::items(sas, "chip", 4, 4, 1));
    db.import(&common::items(sas, "camera", 1, 2, 1));
    db.import(&common::items("ps1.3pi.20261125", "chip", 1, 6, 101));
    let define = |label: &str, stage: &str, limit: &str| {
        db.define(
            label,
            stage,
            &["--limit", limit, "--path-base", "/data/runs"],
        )
    };
    let set = |id: i64, state: &str| db.set_state(id, state);
    // 1: running, not polled for hours.  2: ended with a failure (error).
    // 3: connection down (auth).  4: camera, new.  5: another label, full.
    // 6: running, polled a minute ago.
    define(sas, "chip", "4");
    set(1, "pending");
    set(1, "run");
    define(sas, "chip", "4");
    set(2, "pending");
    set(2, "run");
    apply(db, 2, &[6], "error", 30);
    define(sas, "chip", "4");
    set(3, "pending");
    set(3, "auth");
    define(sas, "camera", "2");
    define("ps1.3pi.20261125", "chip", "6");
    set(5, "pending");
    set(5, "run");
    apply(db, 5, &[], "full", 0);
    define(sas, "chip", "2");
    set(6, "pending");
    set(6, "run");
    db.remotetool()
        .args(["pause", "exec", "--reason", "key card refresh"])
        .assert()
        .success();
    {
        let mut c = db.open();
        c.tx(|s| {
            s.insert_lease(&offload::db::models::Lease {
                remote_id: 6,
                tool: "poll".into(),
                host: "ws07".into(),
                pid: 4242,
                acquired_at: offload::db::now(),
                heartbeat_at: offload::db::now(),
            })?;
            Ok(())
        })
        .unwrap();
    }
    sql(db, "
        UPDATE remote_runs SET created_at = '2026-11-25 06:00:00', updated_at = '2026-11-25 06:00:00', last_poll = NULL;
        UPDATE remote_runs SET state_since = '2026-11-25 07:10:00', last_poll = '2026-11-25 07:10:00', job_id = '7701' WHERE remote_id = 1;
        UPDATE remote_runs SET state_since = '2026-11-25 09:30:00', job_id = '7702' WHERE remote_id = 2;
        UPDATE remote_runs SET state_since = '2026-11-25 11:15:00' WHERE remote_id = 3;
        UPDATE remote_runs SET state_since = '2026-11-25 11:45:00' WHERE remote_id = 4;
        UPDATE remote_runs SET state_since = '2026-11-24 23:00:00' WHERE remote_id = 5;
        UPDATE remote_runs SET state_since = '2026-11-25 10:00:00', last_poll = '2026-11-25 11:59:00', job_id = '7706' WHERE remote_id = 6;
        UPDATE control SET changed_at = '2026-11-25 11:50:00', changed_by = 'ops01:311';
        UPDATE leases SET acquired_at = '2026-11-25 11:58:30', heartbeat_at = '2026-11-25 11:59:30';
        INSERT INTO processes (tool, host, pid, started_at, heartbeat_at, command)
            VALUES ('poll', 'ws07', 4242, '2026-11-25 11:58:29', '2026-11-25 11:59:40', 'poll --next'),
                   ('xfer', 'ws08', 977, '2026-11-25 09:00:00', '2026-11-25 09:10:00', 'xfer push');
    ");
}

each_backend! {
    fn status_shows_a_realistic_mix_at_a_glance(db) {
        realistic_mix(db);
        let at = ["status", "--at", "2026-11-25 12:00:00"];
        let out = db.remotetool().args(at).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        insta::assert_snapshot!("status_table", String::from_utf8(out.stdout).unwrap());
        let mut c = db.remotetool();
        c.args(at).arg("--json");
        let j = common::json_of(c);
        insta::assert_snapshot!("status_json", serde_json::to_string_pretty(&j).unwrap());
        // What a script checks.
        assert_eq!(j["moving"], false);
        let stuck: Vec<i64> = j["attention"].as_array().unwrap().iter().map(|a| a["remote_id"].as_i64().unwrap()).collect();
        assert_eq!(stuck, vec![1, 2, 3]);
        // --no-masters asks no ssh; a shorter stuck threshold catches run 6 too.
        let mut c = db.remotetool();
        c.args(at).args(["--no-masters", "--stuck-after", "30", "--json"]);
        let j = common::json_of(c);
        assert_eq!(j["masters"], serde_json::Value::Null);
        assert_eq!(j["attention"].as_array().unwrap().len(), 4);
        db.remotetool().args(["status", "--at", "noon"]).assert().code(2).stderr(contains("--at \"noon\""));
        db.assert_tallies_match();
    }

    fn reports_keep_their_text_and_json(db) {
        realistic_mix(db);
        // What is left of "now" in the rows, fixed.
        sql(db, "
            UPDATE history SET at = '2026-11-25 11:00:00', host = 'ops01', pid = 311, command = 'remotetool set';
            UPDATE remote_components SET created_at = '2026-11-25 06:00:00', updated_at = '2026-11-25 08:00:00';
            UPDATE work_items SET created_at = '2026-11-25 05:00:00', updated_at = '2026-11-25 08:00:00';
        ");
        // Each report as text and as JSON, byte for byte, the same on every
        // backend.
        let reports: &[(&str, &[&str])] = &[
            ("list", &["list"]),
            ("list_error", &["list", "--state", "error", "--state", "auth"]),
            ("show_run", &["show", "2"]),
            ("show_component", &["show", "2", "--stage-id", "6"]),
            ("history", &["history", "--remote-id", "2"]),
            ("paused", &["paused"]),
            ("report", &["report"]),
            ("report_runs", &["report", "--runs"]),
            ("report_items", &["report", "--items", "--label", "lanl.SAS.201402114"]),
        ];
        for (name, args) in reports {
            for json in [false, true] {
                let mut c = db.remotetool();
                c.args(*args);
                if json {
                    c.arg("--json");
                }
                let out = c.output().unwrap();
                assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
                let suffix = if json { "json" } else { "text" };
                // MySQL hands out AUTO_INCREMENT ids of a multi-row insert in
                // blocks (its ids have gaps): its component ids have their
                // own snapshots.
                let mysql = if db.kind == common::Kind::Mysql { "_mysql" } else { "" };
                insta::assert_snapshot!(format!("{name}_{suffix}{mysql}"), String::from_utf8(out.stdout).unwrap());
            }
        }
    }
}

each_backend! {
    fn results_applied_in_bulk_land_on_their_own_components(db) {
        use offload::db::queries::ComponentChanges;
        use offload::state::ComponentState;
        db.import(&common::items("BULK", "chip", 13, 100, 1));
        let run = db.define("BULK", "chip", &["--path-base", "/data/runs"]);
        let mut c = db.open();
        let members = c.read(|s| s.run_members(run)).unwrap();
        assert_eq!(members.len(), 1300);
        let now = offload::db::now();
        // Values of each component's own (more than one statement's worth,
        // and one record large enough to go alone), quotes and markup
        // included.
        let first = |i: usize| ComponentChanges {
            state: ComponentState::Done,
            active: true,
            attempts: 1,
            exit_status: Some(i as i32 % 4),
            runtime: Some(i as f64 + 0.25),
            fault: i as i32 % 3,
            result: Some(if i == 700 {
                "y".repeat(3 << 19)
            } else {
                format!("{{\"n\":{i},\"tail\":\"it's <b>{i}</b>\"}}")
            }),
            updated_at: now,
        };
        let changes: Vec<(i64, ComponentChanges)> =
            members.iter().enumerate().map(|(i, m)| (m.component_id, first(i))).collect();
        let written = c.tx(|s| Ok(s.update_components(&changes)?)).unwrap();
        assert_eq!(written, 1300);
        // Again for the even ones, leaving out exit status, runtime and
        // record: those keep what they had.
        let again: Vec<(i64, ComponentChanges)> = members
            .iter()
            .step_by(2)
            .map(|m| {
                (m.component_id, ComponentChanges {
                    state: ComponentState::Failed,
                    active: false,
                    attempts: 2,
                    exit_status: None,
                    runtime: None,
                    fault: 7,
                    result: None,
                    updated_at: now,
                })
            })
            .collect();
        c.tx(|s| Ok(s.update_components(&again)?)).unwrap();
        for (i, m) in members.iter().enumerate() {
            let (got, _) = c.read(|s| s.component(m.component_id)).unwrap().unwrap();
            let want = first(i);
            let even = i % 2 == 0;
            assert_eq!(got.state, if even { ComponentState::Failed } else { ComponentState::Done }, "{i}");
            assert_eq!((got.active, got.attempts), if even { (false, 2) } else { (true, 1) }, "{i}");
            assert_eq!(got.fault, if even { 7 } else { want.fault }, "{i}");
            assert_eq!((got.exit_status, got.runtime), (want.exit_status, want.runtime), "{i}");
            assert_eq!(got.result, want.result, "{i}");
            assert_eq!(got.updated_at, now, "{i}");
        }
        db.assert_tallies_match();
    }
}
