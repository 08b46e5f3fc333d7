//! remotetool against a real database of each backend.

mod common;

use predicates::prelude::*;
use predicates::str::contains;

const L: &str = "lanl.SAS.201402114";

fn define(db: &common::TestDb, limit: &str) -> assert_cmd::assert::Assert {
    db.remotetool()
        .args(["define", "--label", L, "--stage", "chip", "--limit", limit])
        .assert()
}

fn list(db: &common::TestDb) -> serde_json::Value {
    let mut c = db.remotetool();
    c.args(["list", "--json"]);
    common::json_of(c)
}

each_backend! {
    fn define_bundles_ready_items_in_runs(db) {
        db.import(&common::items(L, "chip", 3, 4, 1));
        define(db, "5").success().code(0).stdout("1\n");
        define(db, "5").success().stdout("2\n");
        define(db, "5").success().stdout("3\n");
        define(db, "5")
            .code(3)
            .stdout("")
            .stderr(contains("no ready work items of label 'lanl.SAS.201402114' stage 'chip'"));
        let runs = list(db);
        let counts: Vec<i64> =
            runs.as_array().unwrap().iter().map(|r| r["components"].as_i64().unwrap()).collect();
        assert_eq!(counts, vec![5, 5, 2]);
        for r in runs.as_array().unwrap() {
            assert_eq!(r["state"], "new");
            assert_eq!(r["components_by_state"]["queued"], r["components"]);
        }
    }

    fn define_json_and_options(db) {
        db.import(&common::items(L, "chip", 1, 3, 1));
        let out = db
            .remotetool()
            .args(["--json", "define", "--label", L, "--stage", "chip", "--path-base", "/data/pb",
                   "--target", "lanl", "--job-policy", "ignore"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let d = common::json(&out.stdout);
        assert_eq!(d["remote_id"], 1);
        assert_eq!(d["components"], 3);
        let s = db.show(1);
        assert_eq!(s["path_base"], "/data/pb");
        assert_eq!(s["target"], "lanl");
        assert_eq!(s["job_policy"], "ignore");
        assert_eq!(s["history"][0]["to_state"], "new");
        assert!(s["history"][0]["command"].as_str().unwrap().contains("define"));
    }

    fn define_takes_highest_priority_first(db) {
        let items = "{\"stage\":\"chip\",\"stage_id\":1,\"label\":\"P\",\"priority\":0}\n\
                     {\"stage\":\"chip\",\"stage_id\":2,\"label\":\"P\",\"priority\":9}\n\
                     {\"stage\":\"chip\",\"stage_id\":3,\"label\":\"P\",\"priority\":5}\n";
        db.import(items);
        db.remotetool().args(["define", "--label", "P", "--stage", "chip", "--limit", "2"]).assert().success();
        // The item left over is the lowest priority one: stage_id 1.
        let mut conn = db.open();
        let free = conn.read(|s| s.count_free_items("P", "chip")).unwrap();
        assert_eq!(free, 1);
        db.remotetool().args(["define", "--label", "P", "--stage", "chip"]).assert().success();
        let mut c = db.open();
        assert_eq!(c.read(|s| s.runs(&Default::default())).unwrap().len(), 2);
        let mut c = db.open();
        let run = c.read(|s| s.run(1)).unwrap().unwrap();
        assert_eq!(run.state, offload::state::RunState::New);
    }

    fn states_and_policies_go_to_the_database_and_back_typed(db) {
        use offload::db::queries::RunChanges;
        use offload::state::{ItemState, JobPolicy, RunState};
        db.import("{\"stage\":\"chip\",\"stage_id\":1,\"label\":\"T\"}\n");
        db.remotetool()
            .args(["define", "--label", "T", "--stage", "chip", "--job-policy", "ignore"])
            .assert()
            .success();
        let mut c = db.open();
        let run = c.read(|s| s.run(1)).unwrap().unwrap();
        assert_eq!((run.state, run.job_policy), (RunState::New, JobPolicy::Ignore));
        // Every state a run can hold is written and read back as itself,
        // and the auth return state with it.
        let mut from = RunState::New;
        for to in offload::state::ALL.iter().copied().filter(|s| *s != RunState::New) {
            let changes = RunChanges {
                auth_return_state: Some(Some(from)),
                ..RunChanges::to(to)
            };
            assert_eq!(c.tx(|s| Ok(s.set_run_state(1, from, &changes)?)).unwrap(), 1, "{from} -> {to}");
            let run = c.read(|s| s.run(1)).unwrap().unwrap();
            assert_eq!((run.state, run.auth_return_state), (to, Some(from)));
            from = to;
        }
        // A query for a state counts only rows in it, on every backend.
        for st in ItemState::ALL {
            let n = c.read(|s| s.count_items(Some("T"), None, Some(*st))).unwrap();
            assert_eq!(n, i64::from(*st == ItemState::Ready), "{st}");
        }
        // A state this offload does not know is an error naming it, not a
        // silent default.
        db.batch("UPDATE work_items SET state = 'sideways'").unwrap();
        let e = c.read(|s| s.stage_items("T", "chip")).unwrap_err();
        assert!(format!("{e:#}").contains("unknown work item state 'sideways'"), "{e:#}");
    }

    fn unknown_label_and_stage_are_named(db) {
        db.remotetool()
            .args(["define", "--label", "nope", "--stage", "chip"])
            .assert()
            .code(2)
            .stderr(contains("no work items with label 'nope'").and(contains("database has no work items yet")));
        db.import(&common::items(L, "chip", 1, 2, 1));
        db.remotetool()
            .args(["define", "--label", "nope", "--stage", "chip"])
            .assert()
            .code(2)
            .stderr(contains("known labels: lanl.SAS.201402114").and(contains("remotetool import")));
        db.remotetool()
            .args(["define", "--label", L, "--stage", "warp"])
            .assert()
            .code(2)
            .stderr(contains("has no work items of stage 'warp' (its stages: chip)"));
        assert_eq!(list(db).as_array().unwrap().len(), 0, "no run left behind");
    }

    fn import_is_all_or_nothing(db) {
        let good = common::items(L, "chip", 1, 2, 1);
        let bad = format!("{good}{{\"stage\":\"chip\",\"label\":\"x\"}}\n");
        db.remotetool()
            .args(["import", "-"])
            .write_stdin(bad)
            .assert()
            .code(2)
            .stderr(contains("stdin line 3: missing field `stage_id`"));
        let mut c = db.open();
        assert_eq!(c.read(|s| s.count_items(None, None, None)).unwrap(), 0);

        let f = db.write("items.jsonl", &good);
        db.remotetool().arg("import").arg(&f).assert().success();
        db.remotetool()
            .arg("import")
            .arg(&f)
            .assert()
            .code(2)
            .stderr(contains("line 1: work item chip/1 is already in the database"));
        assert_eq!(c.read(|s| s.count_items(None, None, None)).unwrap(), 2);

        db.remotetool()
            .args(["import", "-"])
            .write_stdin("{\"stage\":\"chip\",\"stage_id\":7,\"label\":\"x\"}\nnot json\n")
            .assert()
            .code(2)
            .stderr(contains("stdin line 2: not valid JSON"));
        db.remotetool()
            .args(["import", "/nonexistent/items.jsonl"])
            .assert()
            .code(2)
            .stderr(contains("cannot open work-item file /nonexistent/items.jsonl"));
        assert_eq!(c.read(|s| s.count_items(None, None, None)).unwrap(), 2);
    }

    fn import_json_summary(db) {
        let out = db
            .remotetool()
            .args(["import", "--json", "-"])
            .write_stdin(common::items(L, "chip", 2, 5, 100))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(common::json(&out.stdout)["imported"], 10);
    }

    fn set_state_follows_the_table(db) {
        db.import(&common::items(L, "chip", 1, 2, 1));
        define(db, "10").success();
        db.set_state(1, "pending");
        db.remotetool()
            .args(["set", "1", "full", "--reason", "why not"])
            .assert()
            .code(2)
            .stderr(contains("illegal transition 'pending' -> 'full'").and(contains("may go to: run")));
        let s = db.show(1);
        assert_eq!(s["state"], "pending");
        let changes: Vec<(String, String)> = s["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["from_state"].as_str().unwrap_or("-").to_string(), h["to_state"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(changes, vec![("-".into(), "new".into()), ("new".into(), "pending".into())]);
        assert_eq!(s["history"][1]["message"], "set by hand: test");
        db.remotetool()
            .args(["set", "99", "pending", "--reason", "x"])
            .assert()
            .code(2)
            .stderr(contains("no run with remote_id 99"));
        db.remotetool()
            .args(["set", "1", "run", "--reason", "  "])
            .assert()
            .code(2)
            .stderr(contains("--reason"));
    }

    fn cancel_frees_items_and_full_finishes_them(db) {
        db.import(&common::items(L, "chip", 2, 3, 1));
        define(db, "3").success().stdout("1\n");
        define(db, "3").success().stdout("2\n");
        db.set_state(1, "cancelled");
        // Run 1's items are ready again and go into a new run.
        define(db, "10").success().stdout("3\n");
        assert_eq!(db.show(3)["components"], 3);
        db.set_state(2, "pending");
        db.set_state(2, "run");
        // No recipes here: set full refuses rather than skip the next
        // stage unsaid, and names the way on; --no-chain is that way.
        db.remotetool()
            .args(["set", "2", "full", "--reason", "test"])
            .assert()
            .code(2)
            .stderr(contains("chip.toml does not exist").and(contains("--no-chain")));
        assert_eq!(db.show(2)["state"], "run");
        db.remotetool()
            .args(["set", "2", "full", "--reason", "test", "--no-chain"])
            .assert()
            .success();
        let mut c = db.open();
        assert_eq!(c.read(|s| s.count_items(Some(L), None, Some(offload::state::ItemState::Done))).unwrap(), 3);
        assert_eq!(c.read(|s| s.count_free_items(L, "chip")).unwrap(), 0);
        assert_eq!(c.read(|s| s.count_items(Some(L), None, Some(offload::state::ItemState::Ready))).unwrap(), 3);
        db.set_state(2, "cleaned");
        db.remotetool()
            .args(["set", "2", "new", "--reason", "x"])
            .assert()
            .code(2)
            .stderr(contains("'cleaned' is final"));
    }

    fn revertauth_returns_runs_where_they_were(db) {
        db.import(&common::items(L, "chip", 3, 2, 1));
        for _ in 0..3 {
            define(db, "2").success();
        }
        db.set_state(1, "pending");
        db.set_state(1, "auth");
        db.set_state(2, "pending");
        db.set_state(2, "run");
        db.set_state(2, "auth");
        let s = db.show(2);
        assert_eq!(s["auth_return_state"], "run");
        assert!(s["last_poll"].is_string(), "auth notes the time");
        let out = db.remotetool().args(["--json", "revertauth", "--label", L]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let done = common::json(&out.stdout);
        assert_eq!(done.as_array().unwrap().len(), 2);
        assert_eq!(db.show(1)["state"], "pending");
        assert_eq!(db.show(2)["state"], "run");
        assert_eq!(db.show(2)["auth_return_state"], serde_json::Value::Null);
        assert_eq!(db.show(3)["state"], "new");
        db.remotetool()
            .args(["revertauth", "--label", L])
            .assert()
            .code(3)
            .stderr(contains("no runs of label 'lanl.SAS.201402114' are in 'auth'"));
        db.set_state(1, "auth");
        db.remotetool().args(["revertauth", "--remote-id", "1"]).assert().success().stdout("1\n");
        db.remotetool().args(["revertauth"]).assert().code(2);
    }

    fn seed_command_lines_work_as_written(db) {
        db.import(&common::items(L, "chip", 2, 3, 1));
        let cfg = db.write(
            "config.toml",
            &format!("[databases.gpc1]\nurl = \"{}\"\n", db.url),
        );
        let seed = |args: &[&str]| {
            let mut c = db.bare("remotetool");
            c.env("OFFLOAD_CONFIG", &cfg).args(args);
            c.assert()
        };
        seed(&["-dbname", "gpc1", "-definebyquery", "-label", L, "-stage", "chip",
               "-path_base", "neb://@HOST@.0/czw/lanl.SAS.201402114", "-limit", "4"])
            .success()
            .stdout("1\n");
        let s = db.show(1);
        assert_eq!(s["path_base"], "neb://@HOST@.0/czw/lanl.SAS.201402114");
        assert_eq!(s["components"], 4);
        db.set_state(1, "pending");
        db.set_state(1, "auth");
        seed(&["-dbname", "gpc1", "-revertauth", "-label", L]).success().stdout("1\n");
        assert_eq!(db.show(1)["state"], "pending");
        seed(&["-dbname", "nosuch", "-revertauth", "-label", L])
            .code(2)
            .stderr(contains("unknown database name 'nosuch' (known: gpc1)"));
    }

    fn pause_and_resume(db) {
        db.import(&common::items(L, "chip", 1, 2, 1));
        db.remotetool().args(["pause", "define", "exec", "--reason", "auth refresh"]).assert().success();
        define(db, "1")
            .code(4)
            .stderr(contains("define is paused").and(contains("auth refresh")).and(contains("remotetool resume define")));
        assert_eq!(list(db).as_array().unwrap().len(), 0);
        assert_eq!(db.paused_tools(), vec!["define", "exec"]);
        db.remotetool().args(["resume", "define"]).assert().success();
        define(db, "1").success();
        db.remotetool()
            .args(["pause", "lunch"])
            .assert()
            .code(2)
            .stderr(contains("unknown tool 'lunch'"));
        let out = db.remotetool().args(["history", "--json"]).output().unwrap();
        let h = common::json(&out.stdout);
        let msgs: Vec<&str> = h.as_array().unwrap().iter().map(|r| r["message"].as_str().unwrap()).collect();
        assert!(msgs.contains(&"paused exec: auth refresh"), "{msgs:?}");
        assert!(msgs.contains(&"resumed define"), "{msgs:?}");
    }

    fn racing_defines_never_share_an_item(db) {
        db.import(&common::items(L, "chip", 20, 30, 1));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let mut cmd = db.std_remotetool();
                cmd.args(["define", "--label", L, "--stage", "chip", "--limit", "37", "--quiet"]);
                std::thread::spawn(move || {
                    let mut codes = Vec::new();
                    loop {
                        let out = cmd.output().unwrap();
                        let code = out.status.code().unwrap();
                        assert!(code == 0 || code == 3, "define failed: {}", String::from_utf8_lossy(&out.stderr));
                        codes.push(code);
                        if code == 3 {
                            return codes;
                        }
                    }
                })
            })
            .collect();
        let defined: usize = workers
            .into_iter()
            .map(|w| w.join().unwrap().iter().filter(|c| **c == 0).count())
            .sum();
        let runs = list(db);
        let runs = runs.as_array().unwrap();
        assert_eq!(runs.len(), defined);
        let total: i64 = runs.iter().map(|r| r["components"].as_i64().unwrap()).sum();
        // Every item in exactly one run: 600 items, 600 components.
        assert_eq!(total, 600);
        assert!(runs.iter().all(|r| r["components"].as_i64().unwrap() <= 37));
    }

    fn list_filters(db) {
        db.import(&common::items(L, "chip", 1, 4, 1));
        db.import(&common::items("other", "camera", 1, 2, 1));
        define(db, "2").success();
        define(db, "2").success();
        db.remotetool().args(["define", "--label", "other", "--stage", "camera"]).assert().success();
        db.set_state(2, "pending");
        let ids = |args: &[&str]| -> Vec<i64> {
            let out = db.remotetool().arg("list").arg("--json").args(args).output().unwrap();
            common::json(&out.stdout).as_array().unwrap().iter().map(|r| r["remote_id"].as_i64().unwrap()).collect()
        };
        assert_eq!(ids(&[]), vec![1, 2, 3]);
        assert_eq!(ids(&["--state", "new"]), vec![1, 3]);
        assert_eq!(ids(&["--state", "new", "--state", "pending"]), vec![1, 2, 3]);
        assert_eq!(ids(&["--label", "other"]), vec![3]);
        assert_eq!(ids(&["--stage", "chip", "--state", "pending"]), vec![2]);
        db.remotetool()
            .args(["list"])
            .assert()
            .success()
            .stdout(contains("REMOTE_ID").and(contains("pending")).and(contains("camera")));
        db.remotetool().args(["list", "--state", "bogus"]).assert().code(2);
    }

    fn newer_database_is_refused(db) {
        db.remotetool().args(["list"]).assert().success();
        db.batch("INSERT INTO __diesel_schema_migrations (version) VALUES ('29991231000000')")
            .unwrap();
        db.remotetool()
            .args(["list"])
            .assert()
            .code(2)
            .stderr(contains("newer offload (schema version 29991231000000").and(contains("run the newer offload")));
    }

    fn default_database_from_configuration(db) {
        let dir = db.home.path().join(".config/offload");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!("default_db = \"main\"\n[databases.main]\nurl = \"{}\"\n", db.url),
        )
        .unwrap();
        db.bare("remotetool")
            .args(["import", "-"])
            .write_stdin(common::items(L, "chip", 1, 1, 1))
            .assert()
            .success();
        define(db, "1").success().stdout("1\n");
    }
}

#[test]
fn default_sqlite_file_is_created_in_home() {
    let home = tempfile::tempdir().unwrap();
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.args(["list"]).assert().success();
    assert!(home
        .path()
        .join(".local/share/offload/offload.db")
        .is_file());
}

#[test]
fn offload_db_variable_names_the_database() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("env.db");
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.env("OFFLOAD_DB", &path).args(["list"]).assert().success();
    assert!(path.is_file());
}

#[test]
fn sqlite_in_a_missing_folder_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.args(["--db", "/nonexistent/dir/x.db", "list"])
        .assert()
        .code(2)
        .stderr(contains("folder /nonexistent/dir does not exist"));
}

#[test]
fn not_a_database_file_is_an_error() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("junk.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.arg("--db")
        .arg(&path)
        .arg("list")
        .assert()
        .code(1)
        .stderr(contains("junk.db").and(contains("not a database")));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![b'x'; 4096],
        "file untouched"
    );
}

#[test]
fn unreachable_postgres_is_named_without_its_password() {
    let home = tempfile::tempdir().unwrap();
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.args(["--db", "postgres://u:secret@127.0.0.1:1/gpc1", "list"])
        .assert()
        .code(1)
        .stderr(
            contains("database postgres://u:***@127.0.0.1:1/gpc1: cannot connect")
                .and(contains("secret").not()),
        );
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        vec!["frobnicate"],
        vec!["define", "--stage", "chip"],
        vec!["show", "x"],
    ] {
        let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
        common::isolate(&mut c, home.path());
        c.args(&args).assert().code(2);
    }
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.arg("--help")
        .assert()
        .success()
        .stdout(contains("Exit status"));
}

#[test]
fn bad_configuration_is_named() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("c.toml");
    std::fs::write(&cfg, "databses = 1\n").unwrap();
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.arg("--config")
        .arg(&cfg)
        .arg("list")
        .assert()
        .code(2)
        .stderr(contains("c.toml is not valid").and(contains("databses")));
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.args(["--config", "/nonexistent.toml", "list"])
        .assert()
        .code(2)
        .stderr(contains("cannot read configuration file /nonexistent.toml"));
}

each_backend! {
    fn the_database_itself_refuses_a_second_active_run_for_an_item(db) {
        db.import(&common::items(L, "chip", 1, 2, 1));
        define(db, "10").success();
        db.set_state(1, "cancelled");
        define(db, "10").success().stdout("2\n");
        // Run 1 is closed, its components inactive: a third active row for
        // item 1 (beside run 2's) must be refused by the unique index.
        let sql = "INSERT INTO remote_components (remote_id, work_item_id, state, active, attempts, fault, created_at, updated_at) \
                   VALUES (1, 1, 'queued', TRUE, 0, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')";
        let msg = db.batch(sql).unwrap_err().to_string();
        assert!(
            msg.contains("UNIQUE") || msg.contains("unique") || msg.contains("Duplicate entry"),
            "{msg}"
        );
    }
}

/// The testbed's role that may log in over TLS only, its password
/// percent-encoded in the URL (`p@ss:w/rd%tls`).
fn pg_tls_url() -> String {
    std::env::var("OFFLOAD_TEST_PG_TLS_URL").unwrap_or_else(|_| {
        "postgres://offload_tls:p%40ss%3Aw%2Frd%25tls@127.0.0.1:5432/offload_tls".to_string()
    })
}

#[test]
fn postgresql_over_tls_with_a_percent_encoded_password() {
    let home = tempfile::tempdir().unwrap();
    let url = pg_tls_url();
    // sslmode=require, and the default (prefer), which tries TLS first.
    for db in [format!("{url}?sslmode=require"), url.clone()] {
        let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
        common::isolate(&mut c, home.path());
        c.args(["--db", &db, "list", "--json"]).assert().success();
    }
    // The server refuses this role without TLS: the refusal is said, the
    // password is not.
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.args(["--db", &format!("{url}?sslmode=disable"), "list"])
        .assert()
        .code(1)
        .stderr(
            contains("cannot connect")
                .and(contains("no encryption"))
                .and(contains("offload_tls:***@"))
                .and(contains("w%2Frd").not()),
        );
    // The session really is encrypted.
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let mut conn =
        offload::db::drivers::connect_postgres(&format!("{url}?sslmode=require")).unwrap();
    let rows: Vec<Ssl> =
        diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .load(&mut conn)
            .unwrap();
    assert!(rows[0].ssl);
}

#[test]
fn mariadb_url_with_a_percent_encoded_password() {
    let home = tempfile::tempdir().unwrap();
    let url = std::env::var("OFFLOAD_TEST_MYSQL_PCT_URL").unwrap_or_else(|_| {
        "mysql://offload_pct:p%40ss%3Aw%2Frd%25my@127.0.0.1:3306/offload_pct".to_string()
    });
    // Both schemes an operator writes.
    let mariadb = url.replacen("mysql://", "mariadb://", 1);
    for db in [&url, &mariadb] {
        let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
        common::isolate(&mut c, home.path());
        c.args(["--db", db, "list", "--json"]).assert().success();
    }
    let wrong = url.replace("%25my", "%25no");
    let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
    common::isolate(&mut c, home.path());
    c.args(["--db", &wrong, "list"])
        .assert()
        .code(1)
        .stderr(contains("cannot connect").and(contains("offload_pct:***@")));
}

/// Bytes free on the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain data, filled by statvfs from a NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail as u64 * s.f_frsize as u64
}

// An SQLite database on a disk that fills: the import that does not fit
// writes nothing, exits 6 and names the database and the cause; once there
// is room, the same import goes through.
#[test]
fn an_sqlite_database_on_a_full_disk_writes_nothing_and_names_itself() {
    let home = tempfile::tempdir().unwrap();
    let disk = common::Tmpfs::mount(&home.path().join("disk"), "size=32m");
    let db = disk.0.join("offload.db");
    let db_arg = db.display().to_string();
    let tool = || {
        let mut c = assert_cmd::Command::cargo_bin("remotetool").unwrap();
        common::isolate(&mut c, home.path());
        c.args(["--db", &db_arg]);
        c
    };
    tool()
        .args(["import", "-"])
        .write_stdin(common::items(L, "chip", 1, 10, 1))
        .assert()
        .success();
    // Leave 256 KB: room to open the database, not for 5,000 more items.
    let filler = disk.0.join("filler");
    let fill = free_bytes(&disk.0).saturating_sub(256 << 10);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    let more = common::items(L, "chip", 50, 100, 11);
    tool()
        .args(["import", "-"])
        .write_stdin(more.clone())
        .assert()
        .code(6)
        .stderr(
            contains(format!("database {} has no room to write", db.display()))
                .and(contains("database or disk is full"))
                .and(contains("nothing was written")),
        );
    let count = |c: &mut offload::db::Db| c.read(|s| s.count_items(Some(L), None, None)).unwrap();
    assert_eq!(
        count(&mut offload::db::Db::open(&db_arg).unwrap()),
        10,
        "nothing half-written"
    );
    std::fs::remove_file(&filler).unwrap();
    tool()
        .args(["import", "-"])
        .write_stdin(more)
        .assert()
        .success();
    assert_eq!(count(&mut offload::db::Db::open(&db_arg).unwrap()), 5010);
}

#[test]
fn a_mysql_migration_stopped_half_way_starts_over() {
    // MySQL commits DDL as it goes: a migration refused at its first
    // trigger (no SUPER on a server with a binary log) leaves its tables
    // made and filled, the rest not. The next run must start it over.
    let db = common::TestDb::new(common::Kind::Mysql);
    db.import(&common::items(L, "chip", 2, 2, 1));
    define(&db, "2").success();
    db.batch(
        "DELETE FROM __diesel_schema_migrations WHERE version = '20261207000008';
         DROP INDEX work_items_updated ON work_items;
         DROP INDEX transfer_rates_at ON transfer_rates;
         DROP INDEX remote_components_failures ON remote_components;
         DROP TRIGGER run_tallies_update; DROP TRIGGER run_tallies_insert; DROP TRIGGER result_hours_insert;
         UPDATE run_tallies SET components = 999;",
    )
    .unwrap();
    // Opening migrates again: counts recounted, triggers back.
    db.remotetool().args(["list"]).assert().success();
    db.assert_tallies_match();
    define(&db, "100").success();
    db.assert_tallies_match();
}
