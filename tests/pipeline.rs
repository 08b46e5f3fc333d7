//! The loop closed with the pipeline that owns the work: every applied
//! result out to every consumer exactly once (`remotetool results`), and a
//! recipe's apply command run by poll with the run's results on stdin, on
//! every backend.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// The chip recipe, with a post phase that also echoes the item's NOTE, and
/// `apply` when given.
fn recipe(apply: Option<&str>) -> String {
    let mut r = String::from(
        r#"stage = "chip"
threads = 1
time_cost = 5
command = "@BIN@/ppfake --threads @THREADS@ --fail @FAIL@ --output @out:IMAGE@ --stats @out:STATS@ @in:IMAGE@ @in:MASK@"
post = "cat @out:STATS@; echo @NOTE@"
"#,
    );
    if let Some(a) = apply {
        r.push_str(&format!("apply = {}\napply_timeout = 60\n", toml_string(a)));
    }
    r.push_str(common::CHIP_FILES);
    r
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A local site whose chip recipe is ours; NOTE defaults to "-".
fn site(db: &common::TestDb, apply: Option<&str>) -> common::Site {
    let site = db.site_with("scheduler = \"local\"");
    site.use_recipes(&[("chip.toml", &recipe(apply))]);
    site.set_vars(&[("NOTE", "-")]);
    site
}

const ODD: &str = "'; DROP TABLE applied; -- $(touch /tmp/offload-pwned) `id`";

/// Import `n` chip items of `label` (first stage_id `first`), item
/// `first + 1` failing and item `first + 2` with the odd note.
fn import(db: &common::TestDb, site: &common::Site, label: &str, n: usize, first: i64) {
    db.import_generated(site, label, (1, n), first, 64, |v| {
        let id = v["stage_id"].as_i64().unwrap();
        if id == first + 1 {
            v["params"]["FAIL"] = 3.into();
        }
        if id == first + 2 {
            v["params"]["NOTE"] = ODD.into();
        }
    });
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn results(db: &common::TestDb, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let out = db.remotetool().arg("results").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        lines(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

each_backend! {
    fn results_are_listed_field_by_field(db) {
        let site = site(db, None);
        import(db, &site, "RL", 4, 1);
        let (id, p) = db.run_through("RL", "chip", &[]);
        assert_eq!(p["state"], "error", "{p}");
        let (code, all, err) = results(db, &[]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(all.len(), 4);
        let seqs: Vec<i64> = all.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let ok = all.iter().find(|l| l["stage_id"] == 1).unwrap();
        assert_eq!((ok["stage"].as_str(), ok["label"].as_str()), (Some("chip"), Some("RL")));
        assert_eq!(ok["remote_id"], id);
        assert_eq!((ok["attempt"].as_i64(), ok["state"].as_str()), (Some(1), Some("done")));
        assert_eq!((ok["exit_status"].as_i64(), ok["phase"].as_str()), (Some(0), Some("ok")));
        assert_eq!(ok["params"]["CHIP"], "XY01");
        assert!(ok["runtime"].as_f64().unwrap() >= 0.0);
        assert!(ok["end"].as_f64().unwrap() >= ok["start"].as_f64().unwrap());
        assert!(ok["stats"].as_str().unwrap().starts_with("inputs=2"), "{ok}");
        let outs = ok["outputs"].as_array().unwrap();
        assert_eq!(outs.len(), 2, "{ok}");
        for o in outs {
            let path = Path::new(o["path"].as_str().unwrap());
            assert_eq!(std::fs::metadata(path).unwrap().len(), o["size"].as_u64().unwrap());
        }
        assert!(outs.iter().any(|o| o["name"] == "IMAGE"));
        let failed = all.iter().find(|l| l["stage_id"] == 2).unwrap();
        assert_eq!((failed["state"].as_str(), failed["exit_status"].as_i64()), (Some("failed"), Some(3)));
        assert_eq!(failed["phase"], "command");
        // What came from the remote side stays text.
        let odd = all.iter().find(|l| l["stage_id"] == 3).unwrap();
        assert!(odd["stats"].as_str().unwrap().ends_with(ODD), "{odd}");
        assert!(!Path::new("/tmp/offload-pwned").exists());
        // Filters.
        assert_eq!(results(db, &["--state", "done"]).1.len(), 3);
        assert_eq!(results(db, &["--state", "failed", "--state", "abandoned"]).1.len(), 1);
        assert_eq!(results(db, &["--label", "nope"]).1.len(), 0);
        assert_eq!(results(db, &["--remote-id", &id.to_string(), "--limit", "2"]).1.len(), 2);
        assert_eq!(results(db, &["--stage", "chip", "--limit", "0"]).0, 2);
    }

    fn a_consumer_gets_each_result_once_and_a_crashed_batch_again(db) {
        let site = site(db, None);
        import(db, &site, "C1", 4, 1);
        db.run_through("C1", "chip", &[]);
        let dir = db.home.path();
        // Crashes mid-batch: nothing marked.
        let f1 = dir.join("first.jsonl");
        let cmd = format!("head -c 100 > {}; exit 1", f1.display());
        let (code, _, err) = results(db, &["--consumer", "loader", "--exec", &cmd]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("nothing was marked given"), "{err}");
        // Killed: nothing marked either.
        let (code, _, _) = results(db, &["--consumer", "loader", "--exec", "kill -9 $$"]);
        assert_eq!(code, 1);
        // The same batch again, whole, and marked.
        let f2 = dir.join("second.jsonl");
        let (code, _, err) = results(db, &["--consumer", "loader", "--exec", &format!("cat > {}", f2.display())]);
        assert_eq!(code, 0, "{err}");
        let got = lines(&std::fs::read(&f2).unwrap());
        assert_eq!(got.len(), 4);
        assert!(String::from_utf8_lossy(&std::fs::read(&f1).unwrap()).starts_with("{\"seq\""));
        // Nothing new: exit 3.
        assert_eq!(results(db, &["--consumer", "loader", "--exec", "cat"]).0, 3);
        // Another consumer has its own cursor; stdout consumers too.
        let (code, other, _) = results(db, &["--consumer", "report", "--limit", "3"]);
        assert_eq!((code, other.len()), (0, 3));
        let (_, rest, _) = results(db, &["--consumer", "report"]);
        assert_eq!(rest.len(), 1);
        assert!(rest[0]["seq"].as_i64() > other[2]["seq"].as_i64());
        // Results of a later poll arrive, and only they.
        import(db, &site, "C2", 2, 101);
        db.run_through("C2", "chip", &[]);
        let f3 = dir.join("third.jsonl");
        results(db, &["--consumer", "loader", "--exec", &format!("cat > {}", f3.display())]);
        let later = lines(&std::fs::read(&f3).unwrap());
        assert_eq!(later.len(), 2);
        assert!(later.iter().all(|l| l["label"] == "C2"));
        assert!(later[0]["seq"].as_i64() > got[3]["seq"].as_i64());
    }

    fn two_processes_of_one_consumer_never_share_a_result(db) {
        let site = site(db, None);
        import(db, &site, "RC", 12, 1);
        db.run_through("RC", "chip", &[]);
        import(db, &site, "RD", 12, 201);
        db.run_through("RD", "chip", &[]);
        let out = db.home.path().join("taken");
        std::fs::create_dir_all(&out).unwrap();
        let mut workers = Vec::new();
        for w in 0..2 {
            let mut c = db.std_remotetool();
            c.args(["--quiet", "results", "--consumer", "racer", "--limit", "3", "--exec"]);
            let file = out.join(format!("w{w}"));
            c.arg(format!("cat >> {}; sleep 0.2", file.display()));
            workers.push((c, file));
        }
        // Each process takes batches until there are none; a held consumer is "try later".
        let handles: Vec<_> = workers
            .into_iter()
            .map(|(mut c, _)| {
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut later = 0;
                    loop {
                        let code = c.status().unwrap().code();
                        match code {
                            Some(0) => {}
                            Some(4) => {
                                later += 1;
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            Some(3) => return later,
                            other => panic!("results exited {other:?}"),
                        }
                        assert!(Instant::now() < deadline);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut seen = BTreeSet::new();
        let mut n = 0;
        for w in 0..2 {
            let text = std::fs::read(out.join(format!("w{w}"))).unwrap_or_default();
            for l in lines(&text) {
                n += 1;
                assert!(seen.insert(l["seq"].as_i64().unwrap()), "given twice: {l}");
            }
        }
        assert_eq!((n, seen.len()), (24, 24));
    }

    fn apply_runs_once_with_the_results_and_a_failed_one_again_without_a_pull(db) {
        let pipeline_db = db.home.path().join("pipeline.db");
        let marker = db.home.path().join("fail-once");
        std::fs::write(&marker, "").unwrap();
        let apply = format!(
            "if [ -e {m} ]; then rm -f {m}; echo 'pipeline database refused: lock timeout' >&2; exit 7; fi; python3 {py} {db}",
            m = marker.display(),
            py = common::fixtures().join("bin/apply-sqlite.py").display(),
            db = pipeline_db.display()
        );
        let site = site(db, Some(&apply));
        import(db, &site, "AP", 4, 1);
        db.define_prepare("AP", "chip", &[]);
        db.exec(1);
        // Until the job ends, then the apply fails: the run stays in `run`.
        let err = common::wait_for(120, 300, "run 1's apply to fail", || {
            let out = db.tool("poll").args(["--remote-id", "1", "--json"]).output().unwrap();
            if out.status.code() == Some(1) {
                return Ok(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            Err("polling".to_string())
        });
        assert!(err.contains("exited 7"), "{err}");
        let run = db.show(1);
        assert_eq!((run["state"].as_str(), run["fault"].as_i64()), (Some("run"), Some(50)), "{run}");
        assert!(run["message"].as_str().unwrap().contains("lock timeout"), "{run}");
        assert_eq!(run["apply_pending"], true);
        // Nothing is done for the pipeline yet.
        let mut c = db.open();
        assert_eq!(c.read(|s| s.count_items(Some("AP"), None, Some(offload::state::ItemState::Done))).unwrap(), 0);
        assert_eq!(results(db, &[]).1.len(), 0);
        assert!(!pipeline_db.exists());
        let st = db.remotetool().args(["status", "--json"]).output().unwrap();
        let st = common::json(&st.stdout);
        assert!(st["attention"].as_array().unwrap().iter().any(|a| a["why"].as_str().unwrap().contains("apply failed")), "{st}");
        // The next poll runs only the apply: the remote folder is gone, so a
        // second pull would fail.
        std::fs::remove_dir_all(site.remote_run_dir(1)).unwrap();
        let mut c = db.tool("poll");
        c.args(["--remote-id", "1", "--json"]);
        let p = common::json_of(c);
        assert_eq!(p["state"], "error", "{p}");
        assert_eq!((p["done"].as_u64(), p["failed"].as_u64()), (Some(3), Some(1)));
        let run = db.show(1);
        assert_eq!(run["apply_pending"], false);
        assert!(run["history"].to_string().contains("applied: `"), "{run}");
        // Exactly one row per result in the pipeline's database, text as text.
        let rows = std::process::Command::new("python3")
            .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('select count(*), sum(state=\"done\") from applied').fetchone()); print(c.execute('select stats from applied where stage_id=3').fetchone()[0])"])
            .arg(&pipeline_db)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&rows.stdout);
        assert!(text.starts_with("(4, 3)"), "{text}{}", String::from_utf8_lossy(&rows.stderr));
        assert!(text.contains("DROP TABLE applied"), "{text}");
        assert!(!Path::new("/tmp/offload-pwned").exists());
        assert_eq!(results(db, &[]).1.len(), 4);
        // A poll of the finished run does not apply again.
        db.tool("poll").args(["--remote-id", "1"]).assert().code(2);
    }
}

/// A stage that reads a reference file living at the site and keeps a
/// product there for a later stage.
const WARP: &str = r#"stage = "chip"
threads = 1
time_cost = 5
command = "cat @in:REFCAT@ @in:IMAGE@ > @out:KEPT@ && cp @out:KEPT@ @out:IMAGE@"

[inputs]
IMAGE = "@INPUT@"

[remote_inputs]
REFCAT = "@REFROOT@/refcat.fits"

[outputs]
IMAGE = "@WORKDIR@/@EXP_NAME@.@CHIP@.wp.fits"

[remote_outputs]
KEPT = "@RUN_DIR@/kept/@CHIP@.fits"
"#;

each_backend! {
    fn inputs_that_live_at_the_site_are_not_pushed_and_kept_products_not_cleaned(db) {
        let site = db.site_with("scheduler = \"local\"");
        site.use_recipes(&[("chip.toml", WARP)]);
        let refroot = site.remote.join("ref");
        site.set_vars(&[("REFROOT", &refroot.display().to_string())]);
        std::fs::create_dir_all(&refroot).unwrap();
        std::fs::write(refroot.join("refcat.fits"), "catalogue\n").unwrap();
        import(db, &site, "RR", 3, 1);
        db.define_prepare("RR", "chip", &["--limit", "2"]);
        let dir = site.run_dir(1);
        let inputs = std::fs::read_to_string(dir.join("inputs.list")).unwrap();
        assert!(!inputs.contains("refcat"), "{inputs}");
        let remote_inputs = std::fs::read_to_string(dir.join("remote-inputs.list")).unwrap();
        assert_eq!(remote_inputs, format!("{}\n", refroot.join("refcat.fits").display()));
        let outputs = std::fs::read_to_string(dir.join("outputs.list")).unwrap();
        assert!(!outputs.contains("/kept/"), "{outputs}");
        db.exec_json(1);
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["outputs"], 2, "{p}");
        // The kept products are at the site, not here.
        let kept = site.remote_run_dir(1).join("kept");
        assert_eq!(std::fs::read_dir(&kept).unwrap().count(), 2);
        let back = std::fs::read_to_string(site.neb.join("czw/RR/o5745g0001o/o5745g0001o.XY01.wp.fits")).unwrap();
        assert!(back.starts_with("catalogue\n"), "{back}");
        // A later stage's item reads a kept product where it is: clean keeps the folder.
        let later = serde_json::json!({
            "stage": "stack", "stage_id": 1, "label": "RR",
            "params": {"WARPED": kept.join("XY01.fits").display().to_string()}
        });
        db.import(&format!("{later}\n"));
        let out = db.remotetool().args(["clean", "--remote-id", "1", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("kept") && err.contains("stack/1"), "{err}");
        let j = common::json(&out.stdout);
        assert!(j[0]["needed_by"][0].as_str().unwrap().contains("stack/1 of RR"), "{j}");
        assert!(kept.is_dir());
        assert_eq!(db.show(1)["state"], "full");
        // The site purged the reference data: the next run runs nothing and goes again.
        std::fs::remove_file(refroot.join("refcat.fits")).unwrap();
        db.define_prepare("RR", "chip", &[]);
        db.exec(2);
        let p = common::poll_until_done(db, 2);
        assert_eq!(p["state"], "pending", "{p}");
        let run = db.show(2).to_string();
        assert!(run.contains("inputs missing at the site") && run.contains("refcat.fits"), "{run}");
    }
}
