//! Operations: the masters (`remotetool auth`), waiting for the tools at
//! work, the guided auth refresh, and many processes claiming runs at once.
//! The masters here are the tests' own (their own ControlPath in the test's
//! home, the testbed's sshd and key), so killing one touches no other test.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use predicates::str::contains;

const KEY: &str = "/var/lib/offload-testbed/ssh/id_ed25519";
const KNOWN: &str = "/var/lib/offload-testbed/ssh/known_hosts";

/// An ssh configuration of the test's own: `ofe1` (fe1's sshd), `ofe3`
/// (fe3's, MaxSessions 3), `closedfe` (a closed port) and `viabad`
/// (behind a bastion that does not answer); sockets under HOME/cm.
fn own_ssh(db: &common::TestDb) -> PathBuf {
    let home = db.home.path();
    std::fs::create_dir_all(home.join("cm")).unwrap();
    db.write(
        "ssh_config",
        &format!(
            "Host ofe1\n  Port 2201\nHost ofe3\n  Port 2203\nHost closedfe\n  Port 1\n\
             Host viabad\n  HostName localhost\n  Port 2201\n  ProxyJump badbastion\nHost badbastion\n  Port 9\n\
             Host *\n  HostName 127.0.0.1\n  User root\n  IdentityFile {KEY}\n  IdentitiesOnly yes\n\
             UserKnownHostsFile {KNOWN}\n  StrictHostKeyChecking yes\n  ControlPath {}/cm/%n\n\
             ControlMaster no\n  BatchMode yes\n  ConnectTimeout 5\n",
            home.display()
        ),
    )
}

/// Stops the test's masters when the test ends, whatever happened.
struct Masters {
    ssh: PathBuf,
    hosts: Vec<String>,
}

impl Drop for Masters {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = std::process::Command::new("ssh")
                .arg("-F")
                .arg(&self.ssh)
                .args(["-O", "exit", h])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// A config whose target `hpc` has these front ends, in the test's home.
fn auth_site(db: &common::TestDb, hosts: &[&str]) -> (common::Site, Masters) {
    let ssh = own_ssh(db);
    let list: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let site = db.site_with(&format!(
        "hosts = [{}]\nssh_config = \"{}\"\njob_prefix = \"op{}\"\nmax_nodes = 1",
        list.join(", "),
        ssh.display(),
        // Tests share one Slurm: each its own job names.
        db.home
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "")
    ));
    (
        site,
        Masters {
            ssh,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        },
    )
}

fn master_pid(socket: &Path) -> Option<u32> {
    let out = std::process::Command::new("ssh")
        .arg("-S")
        .arg(socket)
        .args(["-O", "check", "x"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.split("pid=").nth(1)?.split(')').next()?.parse().ok()
}

#[test]
fn auth_status_start_stop_and_what_is_broken() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let (_site, _masters) = auth_site(&db, &["ofe1", "ofe3", "closedfe", "viabad"]);
    let sock = db.home.path().join("cm/ofe1");
    // All down: exit 5, and each one's way walked.
    let out = db
        .remotetool()
        .args(["auth", "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let s = common::json(&out.stdout);
    let hops = |host: &str| -> Vec<(String, bool, String)> {
        s.as_array()
            .unwrap()
            .iter()
            .find(|m| m["host"] == host)
            .unwrap()["hops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["hop"].as_str().unwrap().to_string(),
                    h["ok"].as_bool().unwrap(),
                    h["detail"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let h = hops("ofe1");
    assert_eq!(h.last().unwrap().0, "authentication");
    assert!(h.last().unwrap().2.starts_with("expired"), "{h:?}");
    assert!(
        h.iter()
            .any(|(n, ok, d)| n == "front end" && *ok && d.contains("SSH-2.0")),
        "{h:?}"
    );
    let h = hops("closedfe");
    assert!(
        h.iter()
            .any(|(n, ok, d)| n == "front end" && !ok && d.contains("refused")),
        "{h:?}"
    );
    let h = hops("viabad");
    assert!(
        h.iter()
            .any(|(n, ok, d)| n == "bastion" && !ok && d.contains("unreachable")),
        "{h:?}"
    );

    // Start two; they live, with about 12 hours left.
    db.remotetool()
        .args(["auth", "start", "ofe1", "ofe3"])
        .assert()
        .success()
        .stdout("ofe1\nofe3\n");
    let mut c = db.remotetool();
    c.args(["auth", "status", "ofe1", "ofe3", "--json"]);
    let s = common::json_of(c);
    for m in s.as_array().unwrap() {
        assert_eq!(m["alive"], true, "{m}");
        let left = m["seconds_left"].as_i64().unwrap();
        assert!((11 * 3600 + 3500..=12 * 3600).contains(&left), "{m}");
    }
    assert_eq!(s[0]["socket"], sock.display().to_string());
    // Starting again is a no-op.
    db.remotetool()
        .args(["auth", "start", "ofe1"])
        .assert()
        .success()
        .stdout("");

    // MaxSessions: three sessions held through ofe3's master fill it.
    let sock3 = db.home.path().join("cm/ofe3");
    let holders = common::hold_sessions(
        (0..3).map(|_| {
            let mut ssh = std::process::Command::new("ssh");
            ssh.arg("-S").arg(&sock3).args(["-F", "/dev/null", "x"]);
            ssh
        }),
        20,
    );
    let mut c = db.remotetool();
    c.args(["auth", "status", "--diagnose", "ofe3", "--json"]);
    let s = common::json_of(c);
    let session = s[0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == "session")
        .unwrap()
        .clone();
    assert_eq!(session["ok"], false, "{s}");
    assert!(
        session["detail"]
            .as_str()
            .unwrap()
            .contains("MaxSessions reached"),
        "{session}"
    );
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }

    // A master killed hard leaves a stale socket: named, and stop clears it.
    kill_master(&sock);
    assert!(sock.exists());
    db.remotetool()
        .args(["auth", "status", "--diagnose", "ofe1"])
        .assert()
        .code(5)
        .stdout(contains("stale"));
    db.remotetool()
        .args(["auth", "stop", "ofe1"])
        .assert()
        .success()
        .stdout("ofe1\n");
    assert!(!sock.exists());
    db.remotetool()
        .args(["auth", "stop", "ofe3"])
        .assert()
        .success()
        .stdout("ofe3\n");
    assert!(master_pid(&sock3).is_none());
    db.remotetool()
        .args(["auth", "stop", "nosuch"])
        .assert()
        .code(2)
        .stderr(contains("'nosuch' is in no remote target"));
}

/// A process row for `pid` on `host`, with this heartbeat.
fn register(db: &common::TestDb, host: &str, pid: i32, heartbeat: chrono::NaiveDateTime) {
    let mut c = db.open();
    c.tx(|s| {
        s.insert_process(&offload::db::models::NewProcess {
            tool: "exec".into(),
            host: host.into(),
            pid,
            started_at: heartbeat,
            heartbeat_at: heartbeat,
            command: Some("exec --next".into()),
        })?;
        Ok(())
    })
    .unwrap();
}

each_backend! {
    fn wait_waits_for_live_tools_and_reclaims_dead_ones(db) {
        db.import(&common::items("W", "chip", 1, 2, 1));
        db.define("W", "chip", &["--path-base", "/tmp/w"]);
        let now = offload::db::now();
        // Dead here: a pid that has exited; holding run 1's lease.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id() as i32;
        gone.wait().unwrap();
        register(db, &offload::host::this_host(), gone_pid, now);
        {
            let mut c = db.open();
            c.tx(|s| {
                s.insert_lease(&offload::db::models::Lease {
                    remote_id: 1,
                    tool: "exec".into(),
                    host: offload::host::this_host(),
                    pid: gone_pid,
                    acquired_at: now,
                    heartbeat_at: now,
                })?;
                Ok(())
            })
            .unwrap();
        }
        // Silent elsewhere: no heartbeat for an hour.
        register(db, "ws99", 4242, now - chrono::TimeDelta::hours(1));
        // Alive here for two more seconds.
        let mut live = std::process::Command::new("sleep").arg("2").spawn().unwrap();
        register(db, &offload::host::this_host(), live.id() as i32, now);

        // The dead ones are reclaimed at once; the live one is waited for.
        let out = db.remotetool().args(["wait", "--timeout", "0"]).output().unwrap();
        assert_eq!(out.status.code(), Some(4));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("reclaimed exec on {}:{gone_pid} (its process is gone); 1 run leases freed", offload::host::this_host())), "{err}");
        assert!(err.contains("reclaimed exec on ws99:4242 (no heartbeat for 1h 00m)"), "{err}");
        assert!(err.contains(&format!("still at work after 0 s: exec on {}:{}", offload::host::this_host(), live.id())), "{err}");
        let t0 = Instant::now();
        let mut wait = db.std_remotetool();
        let waiter = wait.args(["wait", "--json"]).stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        // The live one ends (and is reaped), so wait can return.
        live.wait().unwrap();
        let out = waiter.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(t0.elapsed() >= Duration::from_millis(800), "wait returned before the live one ended");
        let j = common::json(&out.stdout);
        assert_eq!(j["reclaimed"].as_array().unwrap().len(), 1, "{j}");
        let mut c = db.open();
        assert!(c.read(|s| s.processes()).unwrap().is_empty());
        assert!(c.read(|s| s.lease(1)).unwrap().is_none());
        // The reclaims are in the history.
        let h = c.read(|s| s.history(None, 10)).unwrap();
        assert!(h.iter().filter(|r| r.message.as_deref().unwrap_or("").starts_with("reclaimed exec")).count() >= 3);
        db.remotetool().args(["wait", "bogus"]).assert().code(2).stderr(contains("unknown tool 'bogus'"));
    }
}

/// Put `n` runs into `auth` (defined, then pending, then auth by hand).
fn runs_in_auth(db: &common::TestDb, label: &str, n: usize) {
    db.import(&common::items(label, "chip", 1, n, 1));
    for _ in 0..n {
        let id = db.define(label, "chip", &["--limit", "1", "--path-base", "/tmp/ra"]);
        db.set_state(id, "pending");
        db.set_state(id, "auth");
    }
}

#[test]
fn refresh_auth_runs_the_eight_steps_and_finishes_an_interrupted_one() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let (_site, _masters) = auth_site(&db, &["ofe1"]);
    let sock = db.home.path().join("cm/ofe1");
    runs_in_auth(&db, "RA", 2);
    db.remotetool()
        .args(["pause", "exec", "--reason", "disk full"])
        .assert()
        .success();
    db.remotetool().args(["auth", "start"]).assert().success();
    let old = master_pid(&sock).unwrap();

    // Interrupted: an exec is still at work when the wait gives up.
    let mut busy = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    register(
        &db,
        &offload::host::this_host(),
        busy.id() as i32,
        offload::db::now(),
    );
    db.remotetool()
        .args(["refresh-auth", "--wait-timeout", "1"])
        .assert()
        .code(4)
        .stderr(contains("step 2/7 pause: paused poll, xfer"))
        .stderr(contains("run `remotetool refresh-auth` again to go on"));
    assert_eq!(
        master_pid(&sock),
        Some(old),
        "nothing stopped before the tools ended"
    );
    db.remotetool()
        .args(["status", "--no-masters"])
        .assert()
        .success()
        .stdout(contains("auth refresh in progress since"));
    busy.kill().unwrap();
    busy.wait().unwrap();

    // Run again: it goes on, restarts the master, resumes only what it
    // paused, and reverts the runs.
    let out = db
        .remotetool()
        .args(["refresh-auth", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("going on with the refresh begun at"), "{err}");
    for n in 1..=7 {
        assert!(
            err.contains(&format!("step {n}/7 ")),
            "step {n} missing: {err}"
        );
    }
    let j = common::json(&out.stdout);
    assert_eq!(j["reverted"].as_array().unwrap().len(), 2);
    let new = master_pid(&sock).expect("the master is up again");
    assert_ne!(new, old);
    assert_eq!(
        db.paused_tools(),
        vec!["exec"],
        "the operator's own pause stays"
    );
    let mut c = db.remotetool();
    c.args(["list", "--json"]);
    let l = common::json_of(c);
    assert!(
        l.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "pending"),
        "{l}"
    );

    // A refresh interrupted after its master was started keeps that master.
    register(
        &db,
        &offload::host::this_host(),
        std::process::id() as i32,
        offload::db::now(),
    );
    db.remotetool()
        .args(["refresh-auth", "--wait-timeout", "0"])
        .assert()
        .code(4);
    db.remotetool().args(["auth", "stop"]).assert().success();
    db.remotetool().args(["auth", "start"]).assert().success();
    let started_during = master_pid(&sock).unwrap();
    {
        let mut c = db.open();
        let mine = c.read(|s| s.processes()).unwrap();
        c.tx(|s| {
            for p in &mine {
                s.delete_process(p.id)?;
            }
            Ok(())
        })
        .unwrap();
    }
    db.remotetool()
        .args(["refresh-auth"])
        .assert()
        .success()
        .stderr(contains("kept (started during this refresh): ofe1"));
    assert_eq!(master_pid(&sock), Some(started_during));
}

/// A recipe that does nothing for a while (no inputs, no outputs).
fn quick_recipe(stage: &str) -> String {
    format!("stage = \"{stage}\"\nthreads = 1\ntime_cost = 1\ncommand = \"true\"\n")
}

/// A local site whose recipes folder holds quick recipes for `stages`.
fn quick_site(db: &common::TestDb, stages: &[&str], extra_config: &str) -> common::Site {
    let site = db.site_with("scheduler = \"local\"");
    let recipes: Vec<(String, String)> = stages
        .iter()
        .map(|st| (format!("{st}.toml"), quick_recipe(st)))
        .collect();
    let refs: Vec<(&str, &str)> = recipes
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    site.use_recipes(&refs);
    let text = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(&site.config, format!("{text}\n{extra_config}\n")).unwrap();
    site
}

each_backend! {
    fn each_host_claims_what_it_may_run_best_first(db) {
        let _site = quick_site(
            db,
            &["chip", "camera"],
            "[local_hosts.ipp054]\nrunnable = '^chip/'\npriorities = [{ pattern = '^chip/urgent$', priority = 10 }]\n",
        );
        db.import(&common::bare_items("old", "camera", 1, 1));
        db.import(&common::bare_items("old", "chip", 1, 1));
        db.import(&common::bare_items("urgent", "chip", 1, 2));
        for (label, stage) in [("old", "camera"), ("old", "chip"), ("urgent", "chip")] {
            db.define(label, stage, &[]);
        }
        let ids = |host: &str| -> Vec<String> {
            let mut got = Vec::new();
            loop {
                let out = db.tool("prepare").env("OFFLOAD_HOSTNAME", host).args(["--next"]).output().unwrap();
                match out.status.code() {
                    Some(0) => got.push(String::from_utf8(out.stdout).unwrap().trim().to_string()),
                    Some(3) => return got,
                    c => panic!("prepare exited {c:?}: {}", String::from_utf8_lossy(&out.stderr)),
                }
            }
        };
        let stage_label = |id: &str| {
            let mut c = db.remotetool();
            c.args(["show", id, "--json"]);
            let r = common::json_of(c);
            format!("{}/{}", r["stage"].as_str().unwrap(), r["label"].as_str().unwrap())
        };
        // ipp054 takes only chip runs, the urgent label first.
        let first: Vec<String> = ids("ipp054").iter().map(|i| stage_label(i)).collect();
        assert_eq!(first, vec!["chip/urgent", "chip/old"]);
        // Another host (no section of its own, no default) takes the rest.
        let rest: Vec<String> = ids("ipp055").iter().map(|i| stage_label(i)).collect();
        assert_eq!(rest, vec!["camera/old"]);
        // A bad pattern is named.
        let cfg = db.home.path().join(".config/offload/config.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, text.replace("runnable = '^chip/'", "runnable = '(chip'")).unwrap();
        db.tool("prepare")
            .env("OFFLOAD_HOSTNAME", "ipp054")
            .args(["--next"])
            .assert()
            .code(2)
            .stderr(contains("local_hosts.ipp054: runnable \"(chip\" is not a valid regular expression"));
    }
}

/// Many processes at once, each looping prepare, exec and poll `--next`
/// until every run is full: each run is prepared, submitted and finished
/// exactly once, and no process meets a locked database.
fn many_processes(db: &common::TestDb, workers: usize, runs: usize) {
    let site = quick_site(db, &["quick"], "");
    db.import(&common::bare_items("MANY", "quick", runs, 1));
    {
        let mut c = db.open();
        let actor = offload::runs::Actor::current("remotetool");
        for _ in 0..runs {
            offload::runs::define(
                &mut c,
                &offload::runs::DefineRequest {
                    label: "MANY".into(),
                    stage: "quick".into(),
                    limit: Some(1),
                    path_base: site.runs.display().to_string(),
                    target: None,
                    job_policy: offload::state::JobPolicy::Fatal,
                },
                &actor,
            )
            .unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let stderr = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut idle = 0;
                while idle < 40 && Instant::now() < deadline {
                    let mut worked = false;
                    for (tool, extra) in [
                        ("prepare", vec![]),
                        ("exec", vec![]),
                        ("poll", vec!["--interval", "0"]),
                    ] {
                        let out = db
                            .std_tool(tool)
                            .arg("--next")
                            .args(&extra)
                            .output()
                            .unwrap();
                        let err = String::from_utf8_lossy(&out.stderr).into_owned();
                        match out.status.code() {
                            Some(0) => worked = true,
                            Some(3) | Some(4) => {}
                            c => panic!("{tool} exited {c:?}: {err}"),
                        }
                        if !err.is_empty() {
                            stderr.lock().unwrap().push(format!("{tool}: {err}"));
                        }
                    }
                    if worked {
                        idle = 0;
                    } else {
                        idle += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
    });
    let err = stderr.into_inner().unwrap();
    assert!(
        !err.iter()
            .any(|e| e.contains("database is locked") || e.contains("busy")),
        "{:?}",
        err.iter()
            .filter(|e| e.contains("locked") || e.contains("busy"))
            .take(3)
            .collect::<Vec<_>>()
    );
    let mut c = db.open();
    let filter = offload::db::models::RunFilter::default();
    let all = c.read(|s| s.runs(&filter)).unwrap();
    assert_eq!(all.len(), runs);
    let not_full: Vec<_> = all
        .iter()
        .filter(|r| r.state != offload::state::RunState::Full)
        .map(|r| (r.remote_id, r.state))
        .collect();
    assert!(not_full.is_empty(), "not full: {not_full:?}");
    // Exactly once: one history row per step of each run.
    let history = c.read(|s| s.history(None, 100_000)).unwrap();
    for r in &all {
        for (from, to) in [("new", "pending"), ("pending", "run"), ("run", "full")] {
            let n = history
                .iter()
                .filter(|h| {
                    h.remote_id == Some(r.remote_id)
                        && h.from_state.map(|s| s.as_str()) == Some(from)
                        && h.to_state.map(|s| s.as_str()) == Some(to)
                })
                .count();
            assert_eq!(
                n, 1,
                "run {}: {from} -> {to} happened {n} times",
                r.remote_id
            );
        }
    }
    assert!(
        c.read(|s| s.processes()).unwrap().is_empty(),
        "every process deregistered"
    );
    assert!(
        c.read(|s| s.all_leases()).unwrap().is_empty(),
        "every lease released"
    );
}

#[test]
fn eight_processes_on_postgresql_handle_each_run_once() {
    let db = common::TestDb::new(common::Kind::Postgres);
    many_processes(&db, 8, 200);
}

#[test]
fn eight_processes_on_mariadb_handle_each_run_once() {
    let db = common::TestDb::new(common::Kind::Mysql);
    many_processes(&db, 8, 200);
}

#[test]
fn four_processes_on_sqlite_handle_each_run_once() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    many_processes(&db, 4, 200);
}

/// Kill a master hard (its socket stays behind, stale), and wait until it
/// no longer answers.
fn kill_master(socket: &Path) {
    let pid = master_pid(socket).expect("a live master to kill");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    common::wait_until(10, 20, "the killed master to go", || {
        master_pid(socket).is_none()
    });
}

/// Run `tool --remote-id 1`, kill the master once `watch` appears (the
/// transfer is under way), and check the tool ends with the auth exit; the
/// run as `show` then sees it.
fn kill_master_during(
    db: &common::TestDb,
    tool: &str,
    watch: &Path,
    socket: &Path,
) -> serde_json::Value {
    let child = db
        .std_tool(tool)
        .args(["--remote-id", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the transfer has begun writing there.
    common::wait_until(60, 5, &format!("{} to appear", watch.display()), || {
        watch.exists()
    });
    kill_master(socket);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{tool}: {err}");
    let run = db.show(1);
    assert_eq!(run["state"], "auth", "{run}");
    run
}

/// Of a list's pairs (source in the first column, destination in the
/// second), (how many destinations exist, how many pairs); every one that
/// exists must equal its source: nothing looks complete that is not.
fn whole_where_present(list: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(list).unwrap();
    let mut present = 0;
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if Path::new(f[1]).exists() {
            assert_eq!(
                std::fs::read(f[0]).unwrap(),
                std::fs::read(f[1]).unwrap(),
                "{} looks complete but is not",
                f[1]
            );
            present += 1;
        }
    }
    (present, text.lines().count())
}

/// Every output listed for the run is back and equal to the remote file.
fn outputs_identical(site: &common::Site, id: i64) -> usize {
    let (back, total) = whole_where_present(&site.run_dir(id).join("outputs.list"));
    assert_eq!(back, total, "every output is back");
    back
}

#[test]
fn a_master_killed_during_exec_push_leaves_the_run_in_auth_until_the_refresh() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let (site, _masters) = auth_site(&db, &["ofe1"]);
    let sock = db.home.path().join("cm/ofe1");
    db.remotetool().args(["auth", "start"]).assert().success();
    // Inputs big enough that the push takes a while: 60 files of 4 MB (the
    // kill came before the first one landed in every run here, even at
    // 1 MB); more would only crowd a loaded machine's disk, where exec's own
    // space check then refuses the push.
    db.import_chip_failing(&site, "KX", (2, 6), 4_000_000, &[]);
    assert_eq!(db.define_prepare("KX", "chip", &[]), 1);
    let run = kill_master_during(&db, "exec", &site.remote.join("neb"), &sock);
    assert_eq!(run["auth_return_state"], "pending");
    assert_eq!(
        run["job_id"],
        serde_json::Value::Null,
        "nothing was submitted"
    );
    // What landed under its final name is whole (also what the remote side
    // finished after the master went).
    common::wait_until_still(&site.remote);
    let (landed, total) = whole_where_present(&site.run_dir(1).join("inputs.list"));
    assert!(landed < total, "the kill came before the end of the push");
    // The refresh: stale socket gone, master up, the run back to pending.
    db.remotetool()
        .args(["refresh-auth"])
        .assert()
        .success()
        .stdout("1\n");
    assert_eq!(db.show(1)["state"], "pending");
    db.exec(1);
    let p = common::poll_until_done(&db, 1);
    assert_eq!(p["state"], "full", "{p}");
    assert_eq!(outputs_identical(&site, 1), 24);
}

#[test]
fn a_master_killed_during_poll_pull_applies_nothing_until_the_refresh() {
    let db = common::TestDb::new(common::Kind::Postgres);
    let (site, _masters) = auth_site(&db, &["ofe1"]);
    let sock = db.home.path().join("cm/ofe1");
    db.remotetool().args(["auth", "start"]).assert().success();
    // Components whose outputs are big: the pull takes a while.
    site.use_recipes(&[(
        "big.toml",
        "stage = \"big\"\nthreads = 1\ntime_cost = 10\ncommand = \"head -c 80000000 /dev/urandom > @out:DATA@\"\n[outputs]\nDATA = \"@WORKDIR@/big-@STAGE_ID@.dat\"\n",
    )]);
    let items: String = (1..=4)
        .map(|i| format!("{{\"stage\":\"big\",\"stage_id\":{i},\"label\":\"KP\",\"params\":{{\"WORKDIR\":\"neb://any/out\"}}}}\n"))
        .collect();
    db.import(&items);
    assert_eq!(db.define_prepare("KP", "big", &[]), 1);
    let job = db.exec_json(1)["job_id"].as_str().unwrap().to_string();
    // Let the job end, then poll and kill the master while outputs come back.
    let summary = site.remote_run_dir(1).join("job-summary.txt");
    common::wait_until(180, 200, &format!("job {job} to end"), || summary.exists());
    let run = kill_master_during(&db, "poll", &site.neb.join("out"), &sock);
    assert_eq!(run["auth_return_state"], "run");
    // Nothing applied: every component still queued, no work item done.
    assert_eq!(run["components_by_state"]["queued"], 4, "{run}");
    let mut conn = db.open();
    assert_eq!(
        conn.read(|s| s.count_items(Some("KP"), None, Some(offload::state::ItemState::Done)))
            .unwrap(),
        0
    );
    // No output looks complete unless it is.
    let (back, total) = whole_where_present(&site.run_dir(1).join("outputs.list"));
    assert!(back < total, "the kill came before the end of the pull");
    db.remotetool()
        .args(["refresh-auth", "--label", "KP"])
        .assert()
        .success()
        .stdout("1\n");
    assert_eq!(db.show(1)["state"], "run");
    let p = common::poll_until_done(&db, 1);
    assert_eq!(p["state"], "full", "{p}");
    assert_eq!(outputs_identical(&site, 1), 4);
}

#[test]
fn exec_refuses_a_push_that_would_outlive_the_master() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let (site, _masters) = auth_site(&db, &["ofe1"]);
    // The site cuts connections after six minutes.
    site.target_lines("master_lifetime_hours = 0.1");
    db.remotetool().args(["auth", "start"]).assert().success();
    db.import_chip_failing(&site, "FC", (1, 6), 100000, &[]);
    assert_eq!(db.define_prepare("FC", "chip", &[]), 1);
    // Measured before: 1 kB/s over ofe1.
    db.insert_rate("ofe1", "push", 2_000_000, 2000.0);
    db.tool("exec")
        .args(["--remote-id", "1"])
        .assert()
        .code(5)
        .stderr(contains("run 1 not sent"))
        .stderr(contains(
            "at the measured 0.0 MB/s, but the master to ofe1 is expected to expire in",
        ))
        .stderr(contains("the auth refresh is due"));
    let run = db.show(1);
    assert_eq!(run["state"], "pending");
    assert!(!site.remote.join("neb").exists(), "nothing sent");
    // A faster measurement lets it go, and the push is measured in turn.
    for _ in 0..3 {
        db.insert_rate("ofe1", "push", 100_000_000, 1.0);
    }
    db.exec(1);
    assert_eq!(db.show(1)["state"], "run");
}

#[test]
fn xfer_with_a_database_refuses_a_push_that_would_outlive_the_master_and_measures_its_own() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let (site, _masters) = auth_site(&db, &["ofe1"]);
    site.target_lines("master_lifetime_hours = 0.1");
    db.remotetool().args(["auth", "start"]).assert().success();
    let src = db.home.path().join("src.dat");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let dst = site.remote.join("x/dst.dat");
    let from = db.write("from.list", &format!("{}\n", src.display()));
    let to = db.write("to.list", &format!("{}\n", dst.display()));
    let rate = |bytes: i64, seconds: f64| db.insert_rate("ofe1", "push", bytes, seconds);
    rate(1_000_000, 1000.0);
    let xfer = || {
        let mut c = db.tool("xfer");
        c.args(["push", "--target", "testsite", "--from"])
            .arg(&from)
            .arg("--to")
            .arg(&to);
        c
    };
    xfer()
        .assert()
        .code(5)
        .stderr(contains("nothing sent: 3.0 MB take about"))
        .stderr(contains("the auth refresh is due"));
    assert!(!dst.exists());
    // Faster measurements let it go; its own transfer is measured too.
    for _ in 0..2 {
        rate(100_000_000, 1.0);
    }
    xfer().assert().success();
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    let mut c = db.open();
    let key = vec!["ofe1".to_string()];
    assert_eq!(
        c.read(|s| s.rates(&key, "push", 100)).unwrap().len(),
        4,
        "the push was recorded"
    );
}

#[test]
fn quiet_keeps_nothing_to_do_off_stderr_for_schedulers() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let _site = quick_site(&db, &["quick"], "");
    db.tool("prepare")
        .args(["--next"])
        .assert()
        .code(3)
        .stderr(contains("no new runs to prepare"));
    db.tool("prepare")
        .args(["--next", "--quiet"])
        .assert()
        .code(3)
        .stderr("");
    db.tool("prepare")
        .args(["--next", "-q"])
        .assert()
        .code(3)
        .stderr("");
    db.tool("poll")
        .args(["-q", "--next"])
        .assert()
        .code(3)
        .stderr("");
    // Errors still speak.
    db.tool("prepare")
        .args(["--remote-id", "7", "-q"])
        .assert()
        .code(2)
        .stderr(contains("no run with remote_id 7"));
}

each_backend! {
    fn a_dead_holders_lease_is_reclaimed_with_a_message(db) {
        let _site = quick_site(db, &["quick"], "");
        db.import(&common::bare_items("DL", "quick", 2, 1));
        for _ in 0..2 {
            db.define("DL", "quick", &["--limit", "1"]);
        }
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id() as i32;
        gone.wait().unwrap();
        let now = offload::db::now();
        let lease = |id: i64, host: &str, pid: i32, heartbeat: chrono::NaiveDateTime| {
            let mut c = db.open();
            c.tx(|s| {
                s.insert_lease(&offload::db::models::Lease {
                    remote_id: id,
                    tool: "prepare".into(),
                    host: host.into(),
                    pid,
                    acquired_at: heartbeat,
                    heartbeat_at: heartbeat,
                })?;
                Ok(())
            })
            .unwrap();
        };
        // Run 1: its holder died here. Run 2: its holder elsewhere fell silent.
        lease(1, &offload::host::this_host(), gone_pid, now);
        lease(2, "ws99", 4242, now - chrono::TimeDelta::minutes(10));
        db.tool("prepare").args(["--remote-id", "1"]).assert().success();
        db.tool("prepare").args(["--remote-id", "2"]).assert().success();
        let mut c = db.open();
        let h = c.read(|s| s.history(None, 50)).unwrap();
        let said: Vec<&str> = h.iter().filter_map(|r| r.message.as_deref()).filter(|m| m.starts_with("reclaimed")).collect();
        assert!(said.contains(&format!("reclaimed the lease of prepare on {}:{gone_pid} (its process is gone)", offload::host::this_host()).as_str()), "{said:?}");
        assert!(said.contains(&"reclaimed the lease of prepare on ws99:4242 (no heartbeat)"), "{said:?}");
        // A live holder elsewhere is not: try later.
        db.remotetool().args(["set", "1", "new", "--reason", "again"]).assert().success();
        lease(1, "ws99", 4243, offload::db::now());
        db.tool("prepare").args(["--remote-id", "1"]).assert().code(4).stderr(contains("run 1 is held by prepare on ws99:4243"));
    }
}
