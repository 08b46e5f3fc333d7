//! prepare against a real database of each backend; the prepared batch
//! scripts run under the real Slurm of the testbed.

mod common;

use std::collections::BTreeSet;

use predicates::prelude::*;
use predicates::str::contains;

const L: &str = "lanl.SAS.201402114";

/// Define a run of the label's items of `stage`: its id.
fn define(db: &common::TestDb, label: &str, stage: &str) -> i64 {
    db.define(label, stage, &["--quiet"])
}

fn prepare_json(db: &common::TestDb, id: i64) -> serde_json::Value {
    let mut c = db.tool("prepare");
    c.args(["--remote-id", &id.to_string(), "--json"]);
    common::json_of(c)
}

/// prepare refuses run `id` as a usage error (exit 2) saying `said`, and
/// makes no folder for it.
fn prepare_refuses(
    db: &common::TestDb,
    site: &common::Site,
    id: i64,
    said: impl predicates::Predicate<str>,
) {
    db.refused("prepare", id, 2, said);
    assert!(!site.run_dir(id).exists());
}

/// One camera item (label P, stage_id 5) reading `chips`, with `more`
/// params, and a run of it defined: the run's id.
fn camera_run(db: &common::TestDb, chips: &str, more: &[(&str, &str)]) -> i64 {
    let mut v = serde_json::json!({
        "stage": "camera", "stage_id": 5, "label": "P",
        "params": {"CHIPS": chips, "WORKDIR": "neb://a/w", "EXP_NAME": "o1"}
    });
    for (k, val) in more {
        v["params"][*k] = (*val).into();
    }
    db.import(&format!("{v}\n"));
    define(db, "P", "camera")
}

/// Push a prepared run by hand and run its batch script on the real Slurm
/// to its end: the run's remote folder and the job's id.
fn run_on_slurm(site: &common::Site, id: i64) -> (std::path::PathBuf, String) {
    let remote = site.push(id);
    let job_id = common::sbatch_wait(&remote.join("job.sh"), &remote);
    (remote, job_id)
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn lines(p: &std::path::Path) -> Vec<String> {
    read(p).lines().map(str::to_string).collect()
}

each_backend! {
    fn prepares_lists_scripts_and_allocation(db) {
        let site = db.site();
        db.import_chip(&site, L, 3, 4, 1);
        let id = define(db, L, "chip");
        let s = prepare_json(db, id);
        assert_eq!(s["components"], 12);
        // 12 raw images + 4 detrend kinds x 4 chips x 3 filters, each once.
        assert_eq!(s["files"], 12 + 4 * 4 * 3);
        assert_eq!(s["bytes"], (12 + 48) * 64);
        assert_eq!(s["outputs"], 24);
        assert_eq!(s["folders"], 3);
        assert_eq!(s["configs"], 1);
        assert_eq!(s["nodes"], 1);
        assert_eq!(s["walltime"], "1:00:00");
        assert_eq!(s["ranks"], 12);
        let run = db.show(id);
        assert_eq!(run["state"], "pending");
        assert_eq!(run["fault"], 0);
        let dir = site.run_dir(id);
        assert_eq!(s["dir"], dir.display().to_string());

        let inputs = lines(&dir.join("inputs.list"));
        assert_eq!(inputs.len(), 60);
        let remotes: BTreeSet<&str> = inputs.iter().map(|l| l.split('\t').nth(1).unwrap()).collect();
        assert_eq!(remotes.len(), 60, "each input once");
        for l in &inputs {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3);
            assert!(f[0].starts_with(&site.neb.display().to_string()), "{l}");
            assert!(f[1].starts_with(&site.remote.join("neb").display().to_string()), "{l}");
            assert_eq!(std::fs::metadata(f[0]).unwrap().len().to_string(), f[2]);
        }
        let outputs = lines(&dir.join("outputs.list"));
        assert!(outputs.iter().any(|l| l.split('\t').nth(1).unwrap().ends_with("/czw/lanl.SAS.201402114/o5745g0001o/o5745g0001o.XY01.ch.fits")));
        assert!(outputs.iter().all(|l| l.split('\t').count() == 4));
        // The fourth column names the recipe's output.
        assert!(outputs.iter().all(|l| l.ends_with("\tout:IMAGE") || l.ends_with("\tout:STATS")), "{outputs:?}");
        assert_eq!(lines(&dir.join("mkdirs.list")).len(), 3);
        let comps = lines(&dir.join("components.tsv"));
        assert_eq!(comps.len(), 12);
        let job = read(&dir.join("job.sh"));
        for d in ["#SBATCH --job-name=offload-r1-a0", "#SBATCH --nodes=1", "#SBATCH --ntasks=12",
                  "#SBATCH --cpus-per-task=2", "#SBATCH --time=1:00:00", "job-summary.txt"] {
            assert!(job.contains(d), "job.sh lacks {d}:\n{job}");
        }
        let conf = read(&dir.join("multiprog/step-0.conf"));
        assert_eq!(conf, format!("0-11 /bin/bash {}/tasks/run.sh %t\n", site.remote_run_dir(id).display()));
        // The manifest checks with the standard tool.
        let check = std::process::Command::new("sha256sum")
            .args(["--quiet", "-c", "MANIFEST.sha256"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
        assert_eq!(lines(&dir.join("MANIFEST.sha256")).len(), 8 + 12);
        // No leftovers beside the run's folder.
        let names: Vec<String> = std::fs::read_dir(&site.runs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec![format!("run-{id}")]);
    }

    fn preparing_twice_gives_the_same_files(db) {
        let site = db.site();
        db.import_chip(&site, L, 2, 3, 1);
        let id = define(db, L, "chip");
        prepare_json(db, id);
        let first = read(&site.run_dir(id).join("MANIFEST.sha256"));
        prepare_json(db, id);
        assert_eq!(read(&site.run_dir(id).join("MANIFEST.sha256")), first);
        let run = db.show(id);
        assert_eq!(run["state"], "pending");
        let msgs: Vec<&str> = run["history"].as_array().unwrap().iter().map(|h| h["message"].as_str().unwrap()).collect();
        assert!(msgs.last().unwrap().starts_with("again: prepared 6 components"), "{msgs:?}");
    }

    fn next_claims_each_run_exactly_once(db) {
        let site = db.site();
        db.import_chip(&site, L, 8, 2, 1);
        for _ in 0..8 {
            db.remotetool().args(["define", "--label", L, "--stage", "chip", "--limit", "2"]).assert().success();
        }
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let mut cmd = db.std_tool("prepare");
                cmd.args(["--next", "--quiet"]);
                std::thread::spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let out = cmd.output().unwrap();
                        match out.status.code().unwrap() {
                            0 => done.push(String::from_utf8(out.stdout).unwrap().trim().parse::<i64>().unwrap()),
                            3 => return done,
                            c => panic!("prepare --next exit {c}: {}", String::from_utf8_lossy(&out.stderr)),
                        }
                    }
                })
            })
            .collect();
        let mut all: Vec<i64> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        all.sort();
        assert_eq!(all, (1..=8).collect::<Vec<i64>>(), "each run prepared by exactly one process");
        for id in 1..=8 {
            let run = db.show(id);
            assert_eq!(run["state"], "pending");
            let transitions = run["history"].as_array().unwrap().iter().filter(|h| h["to_state"] == "pending").count();
            assert_eq!(transitions, 1);
        }
        db.tool("prepare").arg("--next").assert().code(3).stderr(contains("no new runs to prepare"));
    }

    fn a_missing_recipe_leaves_the_run_new_with_a_fault(db) {
        let site = db.site();
        db.import(&common::items("L2", "warp", 1, 2, 1));
        let id = define(db, "L2", "warp");
        prepare_refuses(db, &site, id, contains("no recipe for stage 'warp'").and(contains("warp.toml does not exist")));
        let run = db.show(id);
        assert_eq!(run["state"], "new");
        assert_eq!(run["fault"], 10);
        assert!(run["message"].as_str().unwrap().contains("no recipe for stage 'warp'"));
        assert!(!site.runs.exists() || std::fs::read_dir(&site.runs).unwrap().next().is_none());
    }

    fn a_placeholder_without_value_names_recipe_line_and_item(db) {
        let site = db.site();
        let items = "{\"stage\":\"chip\",\"stage_id\":77,\"label\":\"P\",\"params\":{\"INPUT\":\"neb://a/x.fits\",\"MASK\":\"neb://a/m\",\"DARK\":\"neb://a/d\",\"FLAT\":\"neb://a/f\",\"LINEARITY\":\"neb://a/l\",\"WORKDIR\":\"neb://a/w\",\"CHIP\":\"XY01\"}}\n";
        db.import(items);
        let id = define(db, "P", "chip");
        prepare_refuses(db, &site, id, contains("recipe chip.toml line 20: placeholder @EXP_NAME@ has no value for work item chip/77"));
        assert_eq!(db.show(id)["state"], "new");
    }

    fn a_path_no_rule_covers_is_named(db) {
        let site = db.site();
        let id = camera_run(db, "/elsewhere/x.fits", &[]);
        prepare_refuses(db, &site, id, contains("work item camera/5 (component 1) input CHIPS \"/elsewhere/x.fits\" matches no path rule of target 'testsite'"));
    }

    fn a_newline_in_a_path_is_refused(db) {
        let site = db.site();
        let id = camera_run(db, "neb://a/x\ny.fits", &[]);
        prepare_refuses(db, &site, id, contains("holds a newline"));
    }

    fn a_missing_input_file_is_named(db) {
        let site = db.site();
        let id = camera_run(db, "neb://a/not-there.fits", &[]);
        prepare_refuses(db, &site, id, contains("neb/not-there.fits").and(contains("of work item camera/5")));
        assert_eq!(db.show(id)["fault"], 10);
    }

    fn a_command_over_16_kib_is_refused(db) {
        let site = db.site();
        std::fs::create_dir_all(site.neb.join("a")).unwrap();
        std::fs::write(site.neb.join("a/x.fits"), "x").unwrap();
        let long = "o".repeat(17 * 1024);
        let id = camera_run(db, "neb://a/x.fits", &[("FAIL", &long)]);
        prepare_refuses(db, &site, id, contains("its command is").and(contains("over the limit of 16384")));
    }

    fn an_allocation_that_cannot_fit_says_what_would(db) {
        let site = db.site_with("max_nodes = 1\nmax_walltime_hours = 1");
        db.import_chip(&site, L, 5, 60, 1);
        let id = define(db, L, "chip");
        prepare_refuses(db, &site, id, contains("allocation does not fit").and(contains("--limit")));
        assert_eq!(db.show(id)["state"], "new");
    }

    fn paused_prepare_touches_nothing(db) {
        let site = db.site();
        db.import_chip(&site, L, 1, 2, 1);
        let id = define(db, L, "chip");
        db.remotetool().args(["pause", "prepare"]).assert().success();
        db.tool("prepare").arg("--next").assert().code(4).stderr(contains("prepare is paused"));
        db.tool("prepare").args(["--remote-id", &id.to_string()]).assert().code(4);
        assert_eq!(db.show(id)["state"], "new");
        assert!(!site.run_dir(id).exists());
    }

    fn odd_file_names_survive_quoting_on_real_slurm(db) {
        let site = db.site();
        let odd = ["a b.fits", "it's.fits", "$(touch PWNED).fits", "ünï cødé.fits", "back\\slash `x`.fits"];
        db.import(&common::json_lines(odd.iter().enumerate().map(|(i, name)| {
            let local = site.neb.join("odd").join(name);
            std::fs::create_dir_all(local.parent().unwrap()).unwrap();
            std::fs::write(&local, format!("data {i}\n")).unwrap();
            serde_json::json!({
                "stage": "camera", "stage_id": i + 1, "label": "ODD",
                "params": {"CHIPS": format!("neb://x/odd/{name}"), "WORKDIR": "neb://x/out dir", "EXP_NAME": format!("e{i} {name}")}
            })
        })));
        let id = define(db, "ODD", "camera");
        prepare_json(db, id);
        let (remote, _) = run_on_slurm(&site, id);
        let results = common::results(&remote);
        assert_eq!(results.len(), odd.len());
        for (_, exit, phase, stats) in &results {
            assert_eq!((*exit, phase.as_str()), (0, "ok"));
            assert!(stats.starts_with("inputs=1 bytes_in=7 "), "{stats}");
        }
        for (i, name) in odd.iter().enumerate() {
            let out = site.remote.join("neb/out dir").join(format!("e{i} {name}.cm.cmf"));
            assert!(out.is_file(), "{} missing", out.display());
        }
        assert!(!remote.join("PWNED").exists() && !site.remote.join("neb/out dir/PWNED").exists());
    }
}

each_backend! {
    fn real_slurm_runs_every_component_and_records_results(db) {
        let site = db.site();
        let items = db.import_chip(&site, L, 2, 6, 1);
        // Two components fail in their command, as a program does.
        let failing: Vec<i64> = vec![3, 8];
        db.import(&common::json_lines(items.lines().map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let sid = v["stage_id"].as_i64().unwrap() + 100;
            v["stage_id"] = sid.into();
            v["label"] = "F".into();
            if failing.contains(&(sid - 100)) {
                v["params"]["FAIL"] = 3.into();
            }
            v
        })));
        let id = define(db, "F", "chip");
        prepare_json(db, id);
        let (remote, job_id) = run_on_slurm(&site, id);
        let results = common::results(&remote);
        assert_eq!(results.len(), 12, "one result line per component");
        let comps = lines(&site.run_dir(id).join("components.tsv"));
        let stage_id_of = |cid: i64| -> i64 {
            comps.iter().map(|l| l.split('\t').collect::<Vec<_>>()).find(|f| f[0] == cid.to_string()).unwrap()[2].parse().unwrap()
        };
        for (cid, exit, phase, stats) in &results {
            let sid = stage_id_of(*cid) - 100;
            if failing.contains(&sid) {
                assert_eq!((*exit, phase.as_str(), stats.as_str()), (3, "command", ""), "component {cid}");
            } else {
                assert_eq!((*exit, phase.as_str()), (0, "ok"), "component {cid}");
                assert!(stats.starts_with("inputs=5 bytes_in=320 threads=2 bytes_out="), "{stats}");
            }
        }
        // Outputs where the output list says, for the components that worked.
        let outputs = lines(&site.run_dir(id).join("outputs.list"));
        let present = outputs.iter().filter(|l| std::path::Path::new(l.split('\t').next().unwrap()).is_file()).count();
        assert_eq!(present, 2 * 10);
        let summary = read(&remote.join("job-summary.txt"));
        assert!(summary.contains(&format!("job_id={job_id}")), "{summary}");
        assert!(summary.contains("components=12") && summary.contains("results=12"), "{summary}");
        assert!(summary.contains("step.0.exit=0"), "{summary}");
    }
}

#[test]
fn five_thousand_components_with_long_command_lines_run_on_real_slurm() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let site = db.site();
    // A stage whose command line is about 400 bytes.
    let recipes = site.root.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(
        recipes.join("tiny.toml"),
        "stage = \"tiny\"\nthreads = 1\ntime_cost = 1\n\
         command = \"test -n @PAD@ && test @N@ -ge 0 && echo @N@ > @out:OUT@\"\n\
         post = \"echo n=@N@\"\n[outputs]\nOUT = \"neb://x/tiny/@N@.out\"\n",
    )
    .unwrap();
    let pad = "p".repeat(340);
    let mut items = String::new();
    for n in 0..5000 {
        items.push_str(&format!(
            "{{\"stage\":\"tiny\",\"stage_id\":{n},\"label\":\"T\",\"params\":{{\"N\":{n},\"PAD\":\"{pad}\"}}}}\n"
        ));
    }
    db.import(&items);
    let id = define(&db, "T", "tiny");
    let s = common::json_of(
        db.tool("prepare")
            .args(["--remote-id", &id.to_string(), "--json", "--recipes"])
            .arg(&recipes),
    );
    assert_eq!(s["components"], 5000);
    assert_eq!(s["ranks"], 24);
    let dir = site.run_dir(id);
    let rank0 = read(&dir.join("tasks/rank-0.sh"));
    let line = rank0.lines().nth(1).unwrap();
    assert!(
        line.len() > 400,
        "command lines are about 400 bytes: {}",
        line.len()
    );
    for e in std::fs::read_dir(dir.join("multiprog")).unwrap() {
        let conf = read(&e.unwrap().path());
        offload::scripts::check_multiprog(&conf, 60_000).unwrap();
    }
    let (remote, _) = run_on_slurm(&site, id);
    let results = common::results(&remote);
    assert_eq!(results.len(), 5000);
    assert!(results
        .iter()
        .all(|(_, exit, phase, _)| *exit == 0 && phase == "ok"));
    let ns: BTreeSet<i64> = results
        .iter()
        .map(|r| r.3.trim_start_matches("n=").parse().unwrap())
        .collect();
    assert_eq!(ns.len(), 5000);
}

each_backend! {
    fn measured_runtimes_replace_the_recipe_cost(db) {
        let site = db.site();
        let recipes = site.root.join("recipes");
        std::fs::create_dir_all(&recipes).unwrap();
        std::fs::write(
            recipes.join("tiny.toml"),
            "stage = \"tiny\"\ntime_cost = 150\nmin_samples = 5\npercentile = 80\ncommand = \"true @N@\"\n",
        )
        .unwrap();
        let items = |label: &str, first: i64| -> String {
            (first..first + 5)
                .map(|n| format!("{{\"stage\":\"tiny\",\"stage_id\":{n},\"label\":\"{label}\",\"params\":{{\"N\":{n}}}}}\n"))
                .collect()
        };
        let prep = |id: i64| -> serde_json::Value {
            common::json_of(db.tool("prepare").args(["--json", "--remote-id", &id.to_string(), "--recipes"]).arg(&recipes))
        };
        db.import(&items("A", 1));
        let a = define(db, "A", "tiny");
        let s = prep(a);
        assert_eq!(s["time_cost"], 150.0);
        assert!(s["time_cost_source"].as_str().unwrap().contains("tiny.toml"));
        // Run A's components finished with these runtimes.
        let sql = "UPDATE remote_components SET state = 'done', runtime = 10.0 * id WHERE remote_id = 1";
        db.batch(sql).unwrap();
        db.import(&items("B", 100));
        let b = define(db, "B", "tiny");
        let s = prep(b);
        // Runtimes 10..50 s: the 80th percentile (nearest rank) is 40 s.
        assert_eq!(s["time_cost"], 40.0);
        assert_eq!(s["time_cost_source"], "p80 of 5 measured runtimes");
        let comps = lines(&site.run_dir(b).join("components.tsv"));
        assert!(comps.iter().all(|l| l.ends_with("\t40")), "{comps:?}");
    }
}

each_backend! {
    fn verbose_and_quiet_shape_stderr_only(db) {
        let site = db.site();
        db.import_chip(&site, L, 1, 2, 1);
        db.remotetool().args(["define", "--label", L, "--stage", "chip", "--quiet"]).assert().success().stderr("");
        db.tool("prepare")
            .args(["--remote-id", "1", "-v"])
            .assert()
            .success()
            .stdout("1\n")
            .stderr(contains("time cost 150 s").and(contains("run 1: 2 components")));
        db.tool("prepare").args(["--remote-id", "1", "--quiet"]).assert().success().stdout("1\n").stderr("");
        db.tool("prepare").args(["--remote-id", "1", "--verbose", "--quiet"]).assert().code(2);
    }
}

/// A recipe that uses every kind of file prepare lists: local inputs (one
/// of them a list input), remote-resident inputs, brought-back and kept
/// outputs, a kept log, a pre and a post, and a per-item cost.
const GOLDEN_RECIPE: &str = r#"
stage = "chip"
threads = 2
time_cost = 150
cost_param = "EXPECTED_SECONDS"
pre = "echo pre @COMPONENT_ID@ @STAGE_ID@"
command = "ppfake --threads @THREADS@ --output @out:IMAGE@ --stats @out:STATS@ --keep @out:MASKED@ --ref @in:REFCAT@ @in:IMAGE@ @in:MASK@ @in:DARK@ @in:FLAT@ @in:LINEARITY@ @in:EXTRA@"
post = "cat @out:STATS@"
log = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.log"

[inputs]
IMAGE = "@INPUT@"
MASK = "@MASK@"
DARK = "@DARK@"
FLAT = "@FLAT@"
LINEARITY = "@LINEARITY@"
EXTRA = "@EXTRA@"

[outputs]
IMAGE = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.fits"
STATS = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.stats"

[remote_inputs]
REFCAT = "/refcat/@FILTER@/ps1-refcat.fits"

[remote_outputs]
MASKED = "@RUN_DIR@/masked/@EXP_NAME@.@CHIP@.fits"
"#;

each_backend! {
    // prepare's output for a few thousand components, every file, is
    // pinned byte for byte (the site's own folders written as @ROOT@ and
    // @FIXTURES@): a change to how prepare computes or writes its files
    // must not change what it writes.
    fn a_few_thousand_components_give_the_pinned_files(db) {
        let site = db.site();
        let recipes = site.root.join("golden-recipes");
        std::fs::create_dir_all(&recipes).unwrap();
        std::fs::write(recipes.join("chip.toml"), GOLDEN_RECIPE).unwrap();
        db.import_generated(&site, L, (84, 60), 1, 16, |v| {
            let n = v["stage_id"].as_i64().unwrap();
            let p = &mut v["params"];
            p["EXPECTED_SECONDS"] = (100 + (n * 37) % 100).into();
            p["EXTRA"] = serde_json::json!([p["MASK"].clone(), p["DARK"].clone()]);
        });
        let id = define(db, L, "chip");
        let out = db
            .tool("prepare")
            .args(["--remote-id", &id.to_string(), "--recipes"])
            .arg(&recipes)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let dir = site.run_dir(id);
        let root = site.root.display().to_string();
        let fixtures = common::fixtures().display().to_string();
        let mut files: Vec<_> = common::walk(&dir).into_iter().filter(|p| !p.is_dir()).collect();
        files.sort();
        // The manifest holds the digests of the files as written.
        let manifest = read(&dir.join("MANIFEST.sha256"));
        let listed: Vec<&str> = manifest.lines().collect();
        assert_eq!(listed.len(), files.len() - 1, "{manifest}");
        for l in listed {
            let (digest, rel) = l.split_once("  ").unwrap();
            let bytes = std::fs::read(dir.join(rel)).unwrap();
            assert_eq!(common::sha256_hex(&bytes), digest, "{rel}");
        }
        // One line per file; the rank files as one line (their names and
        // contents in order); the runner itself is a constant of its own.
        let mut pinned = String::new();
        let mut ranks = (String::new(), 0, 0);
        for p in &files {
            let rel = p.strip_prefix(&dir).unwrap().display().to_string();
            if rel == "MANIFEST.sha256" || rel == "tasks/run.sh" {
                continue;
            }
            let text = read(p).replace(&fixtures, "@FIXTURES@").replace(&root, "@ROOT@");
            if rel.starts_with("tasks/rank-") {
                ranks.0.push_str(&format!("{rel}\n{text}"));
                ranks.1 += 1;
                ranks.2 += text.lines().count();
                continue;
            }
            pinned.push_str(&format!("{}  {rel}  {} lines\n", common::sha256_hex(text.as_bytes()), text.lines().count()));
        }
        pinned.push_str(&format!("{}  tasks/rank-*.sh  {} files, {} lines\n", common::sha256_hex(ranks.0.as_bytes()), ranks.1, ranks.2));
        insta::assert_snapshot!("prepare_golden_5040", pinned);
    }
}

each_backend! {
    // Outputs are told apart across the whole run, not a page at a time:
    // the 4,101st component writing the first one's image is refused, and
    // both are named.
    fn two_components_writing_one_output_are_named_pages_apart(db) {
        let site = db.site();
        let mut first: Option<serde_json::Value> = None;
        db.import_generated(&site, L, (70, 60), 1, 16, |v| match &first {
            None => first = Some(v["params"].clone()),
            Some(p) if v["stage_id"] == 4101 => {
                for k in ["WORKDIR", "EXP_NAME", "CHIP"] {
                    v["params"][k] = p[k].clone();
                }
            }
            Some(_) => {}
        });
        let id = define(db, L, "chip");
        db.tool("prepare")
            .args(["--remote-id", &id.to_string()])
            .assert()
            .code(2)
            .stderr(
                contains("work item chip/1 (component")
                    .and(contains("work item chip/4101 (component"))
                    .and(contains("both write"))
                    .and(contains("outputs must differ per component")),
            );
        assert_eq!(db.show(id)["state"], "new");
        assert!(!site.run_dir(id).exists());
        let leftovers: Vec<_> = std::fs::read_dir(site.run_dir(id).parent().unwrap())
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
