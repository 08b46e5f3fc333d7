//! Chained stages on a `local` target, on every backend: a recipe's
//! `[next]` (chip feeds camera), list params and list inputs, `define
//! --all` with `max_components`, groups an abandoned item blocks, two polls
//! racing on one group, and the demo's chain.

mod common;

use std::time::Duration;

use offload::chain::{self, Chain};
use offload::recipe::Recipe;
use predicates::prelude::*;
use predicates::str::contains;
use serde_json::{json, Value};

fn local(db: &common::TestDb) -> common::Site {
    db.site_with("scheduler = \"local\"")
}

/// Chip items of `exposures` x `chips` with their input files; `edit`
/// changes each item's JSON first.
fn import_chips(
    db: &common::TestDb,
    site: &common::Site,
    label: &str,
    shape: (usize, usize),
    edit: impl Fn(&mut Value),
) {
    db.import_generated(site, label, shape, 1, 64, edit);
}

/// prepare and exec a run, and wait until its local job has ended,
/// without polling it.
fn submit(db: &common::TestDb, site: &common::Site, id: i64) {
    db.prepare(id);
    db.exec(id);
    common::wait_for_local_job(db, site, id);
}

fn run_through(db: &common::TestDb, site: &common::Site, id: i64) -> Value {
    submit(db, site, id);
    common::poll_until_done(db, id)
}

fn items_of(db: &common::TestDb, label: &str, stage: &str) -> Vec<offload::db::models::WorkItem> {
    db.open().read(|s| s.stage_items(label, stage)).unwrap()
}

fn params(item: &offload::db::models::WorkItem) -> Value {
    serde_json::from_str(&item.params).unwrap()
}

/// Chip keeps its images at the site (no pull); camera reads the
/// exposure's chips there, a list of remote-resident inputs.
const KEEPING_CHIP: &str = r#"stage = "chip"
threads = 1
time_cost = 5
command = "cat @in:IMAGE@ > @out:KEPT@ && echo @CHIP@ > @out:STATS@"
post = "cat @out:STATS@"

[inputs]
IMAGE = "@INPUT@"

[outputs]
STATS = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.stats"

[remote_outputs]
KEPT = "@WORKDIR@/@EXP_NAME@.@CHIP@.kept.fits"

[next]
stage = "camera"
group_by = ["EXP_NAME"]

[next.params]
EXP_NAME = "@EXP_NAME@"
WORKDIR = "@WORKDIR@"
CHIPS = "@out:KEPT@"
"#;

const REMOTE_CAMERA: &str = r#"stage = "camera"
threads = 1
time_cost = 5
command = "cat @in:CHIPS@ > @out:CMF@"

[remote_inputs]
CHIPS = "@CHIPS@"

[outputs]
CMF = "@WORKDIR@/@EXP_NAME@.cm.cmf"
"#;

each_backend! {
    fn a_later_stage_reads_a_list_of_what_an_earlier_one_kept_at_the_site(db) {
        let site = local(db);
        site.use_recipes(&[("chip.toml", KEEPING_CHIP), ("camera.toml", REMOTE_CAMERA)]);
        import_chips(db, &site, "K", (2, 3), |_| {});
        assert_eq!(db.define("K", "chip", &["--limit", "10"]), 1);
        let p = run_through(db, &site, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["chained"], json!(["camera/1", "camera/4"]), "{p}");
        let exp = "o5745g0001o";
        let kept = |chip: &str| site.remote.join(format!("neb/czw/K/{exp}/{exp}.{chip}.kept.fits"));
        let here = |chip: &str| site.neb.join(format!("czw/K/{exp}/{exp}.{chip}.kept.fits"));
        assert!(kept("XY01").is_file() && !here("XY01").exists());
        // Camera reads them where they are: none looked for here, none pushed.
        db.remotetool().args(["define", "--all", "--label", "K"]).assert().success().stdout("2\n");
        db.tool("prepare").args(["--remote-id", "2"]).assert().success();
        let dir = site.run_dir(2);
        let inputs = std::fs::read_to_string(dir.join("inputs.list")).unwrap();
        assert!(!inputs.contains("kept"), "{inputs}");
        let listed = std::fs::read_to_string(dir.join("remote-inputs.list")).unwrap();
        assert_eq!(listed.lines().count(), 6, "{listed}");
        assert!(listed.contains(&kept("XY03").display().to_string()), "{listed}");
        // One chip's product purged at the site before the camera job runs:
        // it runs nothing and the run goes again, naming the file.
        let raw = std::fs::read(kept("XY02")).unwrap();
        std::fs::remove_file(kept("XY02")).unwrap();
        db.tool("exec").args(["--remote-id", "2"]).assert().success();
        let p = common::poll_until_done(db, 2);
        assert_eq!(p["state"], "pending", "{p}");
        let run = db.show(2).to_string();
        assert!(run.contains("inputs missing at the site") && run.contains("XY02.kept.fits"), "{run}");
        // Put back, it goes through: every chip's kept image, in stage_id order.
        std::fs::write(kept("XY02"), raw).unwrap();
        db.tool("exec").args(["--remote-id", "2"]).assert().success();
        let p = common::poll_until_done(db, 2);
        assert_eq!((p["state"].as_str(), p["done"].as_u64()), (Some("full"), Some(2)), "{p}");
        let cmf = std::fs::read(site.neb.join(format!("czw/K/{exp}/{exp}.cm.cmf"))).unwrap();
        let chips: Vec<u8> = ["XY01", "XY02", "XY03"].iter().flat_map(|c| std::fs::read(kept(c)).unwrap()).collect();
        assert_eq!(cmf, chips);
    }

    fn a_run_set_full_by_hand_feeds_the_next_stage(db) {
        let site = local(db);
        import_chips(db, &site, "H", (1, 3), |_| {});
        assert_eq!(db.define("H", "chip", &["--limit", "10"]), 1);
        // Its job ended; a person checked the outputs and closes it by hand.
        submit(db, &site, 1);
        // The recipe says what it feeds; one that cannot be read is refused,
        // with the way on, and nothing changes.
        db.remotetool()
            .args(["set", "1", "full", "--reason", "checked", "--recipes", "/nonexistent"])
            .assert()
            .code(2)
            .stderr(contains("chip.toml").and(contains("--no-chain")));
        assert_eq!(db.show(1)["state"], "run");
        let mut c = db.remotetool();
        c.args(["set", "1", "full", "--reason", "checked", "--json"]);
        let j = common::json_of(c);
        assert_eq!((j["from"].as_str(), j["to"].as_str()), (Some("run"), Some("full")));
        assert_eq!(j["chained"], json!(["camera/1"]), "{j}");
        let cams = items_of(db, "H", "camera");
        assert_eq!(cams.len(), 1);
        assert_eq!(params(&cams[0])["CHIPS"].as_array().map(Vec::len), Some(3));
        assert!(db.show(1)["history"].to_string().contains("chained: 1 work items for the next stage: camera/1"));
        // The next round bundles it, with no step of its own.
        db.remotetool().args(["define", "--all", "--label", "H"]).assert().success().stdout("2\n");
        assert_eq!(db.show(2)["stage"], "camera");
        // --no-chain closes a run without reading any recipe, and makes nothing.
        db.import_generated(&site, "N", (1, 2), 101, 64, |_| {});
        assert_eq!(db.define("N", "chip", &["--limit", "10"]), 3);
        submit(db, &site, 3);
        let mut c = db.remotetool();
        c.args(["set", "3", "full", "--reason", "by hand", "--no-chain", "--recipes", "/nonexistent", "--json"]);
        assert_eq!(common::json_of(c)["chained"], json!([]));
        assert!(items_of(db, "N", "camera").is_empty());
        assert_eq!(db.open().read(|s| s.count_items(Some("N"), Some("chip"), Some(offload::state::ItemState::Done))).unwrap(), 2);
    }

    fn a_group_feeds_the_next_stage_only_when_all_its_items_are_done(db) {
        let site = local(db);
        import_chips(db, &site, "L", (2, 3), |v| {
            if v["stage_id"] == 2 {
                v["priority"] = 5.into();
            }
        });
        // Run 1: items 2 (priority 5) and 1; run 2: the rest.
        assert_eq!(db.define("L", "chip", &["--limit", "2"]), 1);
        assert_eq!(db.define("L", "chip", &["--limit", "10"]), 2);
        let p = run_through(db, &site, 1);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["chained"], json!([]));
        assert!(items_of(db, "L", "camera").is_empty(), "exposure 1 has one chip left");
        let p = run_through(db, &site, 2);
        assert_eq!(p["state"], "full", "{p}");
        assert_eq!(p["chained"], json!(["camera/1", "camera/4"]), "{p}");
        let cams = items_of(db, "L", "camera");
        assert_eq!(cams.len(), 2);
        let (c1, c4) = (&cams[0], &cams[1]);
        assert_eq!((c1.stage_id, c1.priority, c1.state.as_str()), (1, 5, "ready"));
        assert_eq!((c4.stage_id, c4.priority), (4, 0));
        let exp = "o5745g0001o";
        let w = format!("neb://any/czw/L/{exp}");
        assert_eq!(
            params(c1),
            json!({
                "EXP_NAME": exp,
                "EXP_ID": 555000,
                "FILTER": "g.00000",
                "WORKDIR": w,
                "CHIPS": [
                    format!("{w}/{exp}.XY01.ch.fits"),
                    format!("{w}/{exp}.XY02.ch.fits"),
                    format!("{w}/{exp}.XY03.ch.fits"),
                ],
            })
        );
        let history = db.remotetool().args(["history", "--remote-id", "2"]).output().unwrap();
        assert!(String::from_utf8_lossy(&history.stdout).contains("chained: 2 work items for the next stage: camera/1 (EXP_NAME=o5745g0001o: 3 items done)"));
        // The camera run reads every chip of its exposure.
        db.remotetool().args(["define", "--all"]).assert().success().stdout("3\n");
        let p = run_through(db, &site, 3);
        assert_eq!((p["state"].as_str(), p["done"].as_u64()), (Some("full"), Some(2)), "{p}");
        let cmf = std::fs::read_to_string(site.neb.join(format!("czw/L/{exp}/{exp}.cm.cmf"))).unwrap();
        for chip in ["XY01", "XY02", "XY03"] {
            assert!(cmf.contains(&format!("{exp}.{chip}.ch.fits")), "{cmf}");
        }
        // Camera has no [next]: nothing more.
        assert_eq!(p["chained"], json!([]));
    }

    fn two_polls_racing_create_the_next_item_once(db) {
        let site = local(db);
        import_chips(db, &site, "R", (1, 4), |_| {});
        assert_eq!(db.define("R", "chip", &["--limit", "2"]), 1);
        assert_eq!(db.define("R", "chip", &["--limit", "2"]), 2);
        submit(db, &site, 1);
        submit(db, &site, 2);
        // Both jobs have ended: two polls at once, each the last half of
        // the group.
        let polls: Vec<std::process::Child> = [1, 2]
            .iter()
            .map(|id| {
                db.std_tool("poll")
                    .args(["--remote-id", &id.to_string(), "--json"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut chained = Vec::new();
        for p in polls {
            let out = p.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let v = common::json(&out.stdout);
            assert_eq!(v["state"], "full", "{v}");
            chained.extend(v["chained"].as_array().unwrap().clone());
        }
        assert_eq!(chained, vec![json!("camera/1")]);
        assert_eq!(items_of(db, "R", "camera").len(), 1);
    }

    fn two_transactions_completing_one_group_create_its_item_once(db) {
        // The race inside the database: two transactions each mark half of
        // a group done and look at the group, the first waiting before it
        // looks, so neither has committed when the other marks its half.
        let site = local(db);
        import_chips(db, &site, "T", (1, 4), |_| {});
        let ids: Vec<i64> = items_of(db, "T", "chip").iter().map(|i| i.id).collect();
        let recipe = Recipe::load(&common::fixtures().join("recipes/chip.toml")).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let made: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = [(0usize, 300u64), (2, 300)]
                .into_iter()
                .map(|(from, wait)| {
                    let (ids, recipe, barrier) = (&ids, &recipe, barrier.clone());
                    scope.spawn(move || {
                        let mut c = db.open();
                        let vars = Default::default();
                        let ch = Chain::of(recipe, &vars).unwrap();
                        let half = &ids[from..from + 2];
                        let barrier = &barrier;
                        c.tx(|s| {
                            s.set_work_items(half, offload::state::ItemState::Done, true, offload::db::now())?;
                            // SQLite's writers take turns (the second waits
                            // to begin); PostgreSQL's and MySQL's run side by side.
                            if db.concurrent() {
                                barrier.wait();
                            }
                            let n = chain::after_done(s, &ch, "T", half)?.len();
                            // Still uncommitted while the other looks.
                            std::thread::sleep(Duration::from_millis(wait));
                            Ok(n)
                        })
                        .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(made.iter().sum::<usize>(), 1, "{made:?}");
        assert_eq!(items_of(db, "T", "camera").len(), 1);
        // Once more, in a transaction of its own: nothing new.
        let mut c = db.open();
        let vars = Default::default();
        let ch = Chain::of(&recipe, &vars).unwrap();
        assert_eq!(c.tx(|s| chain::after_done(s, &ch, "T", &ids)).unwrap().len(), 0);
        assert_eq!(items_of(db, "T", "camera").len(), 1);
    }

    fn a_group_with_an_abandoned_item_feeds_nothing_and_status_shows_it_blocked(db) {
        let site = local(db);
        import_chips(db, &site, "AB", (2, 2), |v| {
            if v["stage_id"] == 2 {
                v["params"]["FAIL"] = 3.into();
            }
        });
        let mut c = db.remotetool();
        c.args(["status", "--no-masters", "--json"]);
        assert!(common::json_of(c).get("blocked").is_none(), "nothing blocked yet");
        assert_eq!(db.define("AB", "chip", &["--limit", "10"]), 1);
        submit(db, &site, 1);
        let p = common::poll_done_with(db, 1, &["--attempts", "1"]);
        assert_eq!(p["state"], "error", "{p}");
        assert_eq!(p["abandoned"], 1);
        // Exposure 2 is complete; exposure 1 is not, and never will be.
        assert_eq!(p["chained"], json!(["camera/3"]), "{p}");
        let cams = items_of(db, "AB", "camera");
        assert_eq!(cams.iter().map(|c| c.stage_id).collect::<Vec<_>>(), vec![3]);
        let mut c = db.remotetool();
        c.args(["status", "--no-masters", "--json"]);
        let st = common::json_of(c);
        assert_eq!(
            st["blocked"],
            json!([{
                "label": "AB", "stage": "chip", "group": "EXP_NAME=o5745g0001o",
                "next_stage": "camera", "items": 2, "done": 1,
                "abandoned": [2], "blocked_by": "chip/2",
            }]),
            "{st}"
        );
        db.remotetool()
            .args(["status", "--no-masters"])
            .assert()
            .success()
            .stdout(contains("groups blocked").and(contains("EXP_NAME=o5745g0001o")).and(contains("chip/2")));
    }

    fn list_params_import_and_expand_each_quoted(db) {
        let site = local(db);
        let odd = ["a b.fits", "it's.fits", "$(touch PWNED).fits", "ünï cødé.fits"];
        for name in odd {
            let f = site.neb.join("odd").join(name);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, format!("data {name}\n")).unwrap();
        }
        let chips: Vec<String> = odd.iter().map(|n| format!("neb://x/odd/{n}")).collect();
        let items = |first: usize| {
            common::json_lines([chips.clone(), chips[..2].to_vec()].iter().enumerate().map(|(i, list)| {
                json!({
                    "stage": "camera", "stage_id": first + i, "label": "LP",
                    "params": {"CHIPS": list, "WORKDIR": "neb://x/out dir", "EXP_NAME": format!("e{i}")}
                })
            }))
        };
        db.import(&items(1));
        db.remotetool()
            .args(["import", "-"])
            .write_stdin("{\"stage\":\"camera\",\"stage_id\":9,\"label\":\"LP\",\"params\":{\"CHIPS\":[\"a\",1]}}\n")
            .assert()
            .code(2)
            .stderr(contains("line 1: field `params.CHIPS`: expected a string, number, boolean or list of strings"));
        assert_eq!(db.define("LP", "camera", &["--limit", "10"]), 1);
        let mut c = db.tool("prepare");
        c.args(["--remote-id", "1", "--json"]);
        let prep = common::json_of(c);
        // Each file once, though two items read two of them.
        assert_eq!(prep["files"], 4, "{prep}");
        let list = std::fs::read_to_string(site.run_dir(1).join("inputs.list")).unwrap();
        assert_eq!(list.lines().count(), 4);
        db.tool("exec").args(["--remote-id", "1"]).assert().success();
        let p = common::poll_until_done(db, 1);
        assert_eq!(p["state"], "full", "{p}");
        let cmf = std::fs::read_to_string(site.neb.join("out dir/e0.cm.cmf")).unwrap();
        let names: Vec<&str> = cmf.lines().skip(1).map(|l| l.split_once("  ").unwrap().1).collect();
        assert_eq!(names, odd.to_vec(), "every element, in order, as one word each");
        let cmf = std::fs::read_to_string(site.neb.join("out dir/e1.cm.cmf")).unwrap();
        assert_eq!(cmf.lines().count(), 3, "{cmf}");
        assert!(!site.remote_run_dir(1).join("PWNED").exists());
        assert!(!site.root.join("PWNED").exists());
        // A list param anywhere but a list input: the recipe's line.
        let camera = std::fs::read_to_string(common::fixtures().join("recipes/camera.toml")).unwrap();
        site.use_recipes(&[("camera.toml", &camera.replace("@in:CHIPS@\"", "@in:CHIPS@ --tag @CHIPS@\""))]);
        db.import(&items(11));
        assert_eq!(db.define("LP", "camera", &["--limit", "10"]), 2);
        db.tool("prepare")
            .args(["--remote-id", "2"])
            .assert()
            .code(2)
            .stderr(contains("recipe camera.toml line 7: placeholder @CHIPS@ is a list"));
    }

    fn define_all_makes_a_run_per_label_and_stage_split_by_max_components(db) {
        let site = local(db);
        let chip = std::fs::read_to_string(common::fixtures().join("recipes/chip.toml")).unwrap();
        site.use_recipes(&[("chip.toml", &chip.replace("threads = 2\n", "threads = 2\nmax_components = 4\n"))]);
        db.import(&common::items("A", "chip", 2, 5, 1));
        db.import(&common::items("B", "chip", 1, 2, 101));
        db.import(&common::items("B", "camera", 1, 3, 1));
        db.remotetool().args(["define", "--all", "--label", "B"]).assert().success().stdout("1\n2\n");
        let mut c = db.remotetool();
        c.args(["define", "--all", "--json"]);
        let d = common::json_of(c);
        let got: Vec<(i64, String, String, u64)> = d
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["remote_id"].as_i64().unwrap(), r["label"].as_str().unwrap().into(), r["stage"].as_str().unwrap().into(), r["components"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![(3, "A".into(), "chip".into(), 4), (4, "A".into(), "chip".into(), 4), (5, "A".into(), "chip".into(), 2)]
        );
        assert_eq!(db.show(1)["stage"], "camera");
        assert_eq!(db.show(1)["components"], 3, "camera has no max_components");
        assert_eq!(db.show(2)["components"], 2);
        db.remotetool()
            .args(["define", "--all"])
            .assert()
            .code(3)
            .stderr(contains("no free ready work items"));
        db.remotetool().args(["define", "--all", "--stage", "chip"]).assert().code(2);
        site.use_recipes(&[("chip.toml", &chip.replace("threads = 2\n", "threads = 2\nmax_components = 0\n"))]);
        db.import(&common::items("C", "chip", 1, 1, 201));
        db.remotetool()
            .args(["define", "--all"])
            .assert()
            .success()
            .stderr(contains("max_components must be at least 1"));
    }

    fn the_demo_runs_chip_then_camera(db) {
        let work = tempfile::tempdir().unwrap();
        let bin = assert_cmd::cargo::cargo_bin("remotetool");
        let out = std::process::Command::new(common::fixtures().join("../scripts/demo"))
            .env("DEMO_BIN", bin.parent().unwrap())
            .env("DEMO_EXPOSURES", "2")
            .env("DEMO_WORK", work.path().join("demo"))
            .env("OFFLOAD_DB", &db.url)
            .env("HOME", db.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("== the camera outputs"), "{err}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        for e in 1..=2 {
            let exp = format!("o5745g{e:04}o");
            assert!(stdout.contains(&format!("{exp}.cm.cmf")), "{stdout}");
            let cmf = std::fs::read_to_string(work.path().join(format!("demo/neb/czw/demo.chip/{exp}/{exp}.cm.cmf"))).unwrap();
            assert_eq!(cmf.lines().count(), 61, "60 chips and a header");
        }
        let mut c = db.open();
        assert_eq!(c.read(|s| s.count_items(Some("demo.chip"), Some("chip"), Some(offload::state::ItemState::Done))).unwrap(), 120);
        assert_eq!(c.read(|s| s.count_items(Some("demo.chip"), Some("camera"), Some(offload::state::ItemState::Done))).unwrap(), 2);
    }
}
