//! Test support: a fresh database of each backend per test, and the
//! `remotetool` binary pointed at it in an empty home.
//!
//! PostgreSQL and MariaDB come from `scripts/testbed up` (URLs in
//! $OFFLOAD_TEST_PG_URL and $OFFLOAD_TEST_MYSQL_URL, default the testbed's).
//! A test that cannot reach its server fails: it never skips.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::connection::SimpleConnection;
use diesel::Connection;
use offload::db::drivers::MysqlConnection;
use offload::db::drivers::PgConnection;

pub const DEFAULT_PG_URL: &str = "postgres://offload:offload@127.0.0.1:5432/postgres";
pub const DEFAULT_MYSQL_URL: &str = "mysql://offload:offload@127.0.0.1:3306/offload";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    Mysql,
}

pub struct TestDb {
    pub kind: Kind,
    /// What `--db` gets.
    pub url: String,
    /// An empty home for the tool: no configuration, no default database.
    pub home: tempfile::TempDir,
    /// A server database this test made (its backend, its name), dropped
    /// at the end.
    made: Option<(Kind, String)>,
}

fn admin_url() -> String {
    std::env::var("OFFLOAD_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("PostgreSQL URL ends in /DATABASE");
    format!("{base}/{name}")
}

/// A connection to a test server (`server` names it, `var` is the
/// variable that moves it), or a failure saying how to start it.
fn connect<C: Connection>(url: &str, server: &str, var: &str) -> C {
    C::establish(url).unwrap_or_else(|e| {
        panic!(
            "{server} test server unreachable at {url}: {e}\n\
             Start it with `scripts/testbed up` (as root), or set {var}. \
             {server} tests never skip."
        )
    })
}

pub fn admin() -> PgConnection {
    connect(&admin_url(), "PostgreSQL", "OFFLOAD_TEST_PG_URL")
}

fn mysql_admin_url() -> String {
    std::env::var("OFFLOAD_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_string())
}

pub fn mysql_admin() -> MysqlConnection {
    connect(&mysql_admin_url(), "MariaDB", "OFFLOAD_TEST_MYSQL_URL")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A database name no other test (or earlier run) uses.
fn fresh_name() -> String {
    format!(
        "offload_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

impl TestDb {
    pub fn new(kind: Kind) -> TestDb {
        let home = tempfile::tempdir().expect("temp dir");
        match kind {
            Kind::Sqlite => {
                let url = home.path().join("test.db").to_string_lossy().into_owned();
                TestDb {
                    kind,
                    url,
                    home,
                    made: None,
                }
            }
            Kind::Postgres | Kind::Mysql => {
                let name = fresh_name();
                let create = format!("CREATE DATABASE {name}");
                let server = match kind {
                    Kind::Postgres => {
                        admin()
                            .batch_execute(&create)
                            .expect("create test database");
                        admin_url()
                    }
                    _ => {
                        mysql_admin()
                            .batch_execute(&create)
                            .expect("create test database");
                        mysql_admin_url()
                    }
                };
                TestDb {
                    kind,
                    url: with_database(&server, &name),
                    home,
                    made: Some((kind, name)),
                }
            }
        }
    }

    /// `remotetool --db URL` in an empty home, with no OFFLOAD_* variables.
    pub fn remotetool(&self) -> assert_cmd::Command {
        let mut c = self.bare("remotetool");
        c.arg("--db").arg(&self.url);
        c
    }

    /// A tool without `--db`, in the empty home.
    pub fn bare(&self, tool: &str) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin(tool).expect("binary built");
        isolate(&mut c, self.home.path());
        c
    }

    /// The same, as a std Command (for processes run side by side).
    pub fn std_remotetool(&self) -> std::process::Command {
        self.std_tool("remotetool")
    }

    /// Any tool with `--db` as a std Command, in the test's home.
    pub fn std_tool(&self, tool: &str) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin(tool));
        c.env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("OFFLOAD_DB")
            .env_remove("OFFLOAD_CONFIG")
            .arg("--db")
            .arg(&self.url);
        c
    }

    pub fn open(&self) -> offload::db::Db {
        offload::db::Db::open(&self.url).expect("open test database")
    }

    /// Run SQL on the test database as it is, through offload's own
    /// connection (migrated).
    pub fn batch(&self, sql: &str) -> diesel::QueryResult<()> {
        let mut c = self.open();
        match &mut c.conn {
            offload::db::Conn::Sqlite(c) => c.batch_execute(sql),
            offload::db::Conn::Postgres(c) => c.batch_execute(sql),
            offload::db::Conn::Mysql(c) => c.batch_execute(sql),
        }
    }

    /// A server that runs transactions side by side (not SQLite's one
    /// writer at a time).
    pub fn concurrent(&self) -> bool {
        self.kind != Kind::Sqlite
    }

    /// Write a file in the test's home and return its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.home.path().join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    /// Import `items` (JSON Lines) and check it worked.
    pub fn import(&self, items: &str) {
        self.remotetool()
            .args(["import", "-"])
            .write_stdin(items.to_string())
            .assert()
            .success();
    }
}

pub fn isolate(c: &mut assert_cmd::Command, home: &Path) {
    c.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("OFFLOAD_DB")
        .env_remove("OFFLOAD_CONFIG")
        .timeout(std::time::Duration::from_secs(120));
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.made {
            Some((Kind::Postgres, name)) => {
                if let Ok(mut c) = PgConnection::establish(&admin_url()) {
                    let _ =
                        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
            Some((Kind::Mysql, name)) => {
                if let Ok(mut c) = MysqlConnection::establish(&mysql_admin_url()) {
                    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
                }
            }
            _ => {}
        }
    }
}

/// Work items as JSON Lines: `exposures` x `chips` of stage `stage`.
pub fn items(label: &str, stage: &str, exposures: usize, chips: usize, first_id: i64) -> String {
    let mut out = String::new();
    let mut id = first_id;
    for e in 0..exposures {
        for c in 0..chips {
            out.push_str(&format!(
                "{{\"stage\":\"{stage}\",\"stage_id\":{id},\"label\":\"{label}\",\"priority\":0,\
                 \"params\":{{\"EXP_NAME\":\"o5745g{e:04}o\",\"CHIP\":\"XY{c:02}\"}}}}\n"
            ));
            id += 1;
        }
    }
    out
}

/// Values as JSON Lines (work items for `remotetool import`).
pub fn json_lines(values: impl IntoIterator<Item = serde_json::Value>) -> String {
    values.into_iter().map(|v| format!("{v}\n")).collect()
}

/// Work items as JSON Lines with no params: `n` of `stage`, stage_ids
/// from `first`.
pub fn bare_items(label: &str, stage: &str, n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| {
            format!("{{\"stage\":\"{stage}\",\"stage_id\":{i},\"label\":\"{label}\",\"params\":{{}}}}\n")
        })
        .collect()
}

/// Run a command that must succeed; its stdout as JSON.
pub fn json_of(mut c: impl std::borrow::BorrowMut<assert_cmd::Command>) -> serde_json::Value {
    let out = c.borrow_mut().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out.stdout)
}

/// What poll says (the scheduler's states) while a run's job waits or runs.
pub const JOB_ACTIVE: [&str; 4] = ["RUNNING", "PENDING", "CONFIGURING", "COMPLETING"];

/// Try `attempt` every `every_ms` milliseconds until it gives a value, for
/// at most `secs` seconds; then it fails, naming `what` and what the last
/// attempt said (its `Err`).
pub fn wait_for<T>(
    secs: u64,
    every_ms: u64,
    what: &str,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(now) => assert!(
                std::time::Instant::now() < deadline,
                "{what}: still {now} after {secs} s"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(every_ms));
    }
}

/// Wait until `ok` holds, checking every `every_ms` milliseconds, for at
/// most `secs` seconds.
pub fn wait_until(secs: u64, every_ms: u64, what: &str, mut ok: impl FnMut() -> bool) {
    wait_for(secs, every_ms, what, || {
        if ok() {
            Ok(())
        } else {
            Err("waiting".to_string())
        }
    })
}

/// Poll a run (`poll --remote-id ID --json`, then `extra`; each poll must
/// succeed) every 500 ms until `settled` holds of its JSON, for at most
/// `secs` seconds; the JSON of the last poll.
pub fn poll_until(
    db: &TestDb,
    id: i64,
    extra: &[&str],
    secs: u64,
    settled: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(secs, 500, &format!("job of run {id}"), || {
        let mut c = db.tool("poll");
        c.args(["--remote-id", &id.to_string(), "--json"])
            .args(extra);
        let p = json_of(c);
        if settled(&p) {
            Ok(p)
        } else {
            Err(p["state"].to_string())
        }
    })
}

/// Poll a run until its job has ended (poll's JSON of the last poll).
pub fn poll_until_done(db: &TestDb, id: i64) -> serde_json::Value {
    poll_done_with(db, id, &[])
}

/// The same, each poll with `extra` arguments.
pub fn poll_done_with(db: &TestDb, id: i64, extra: &[&str]) -> serde_json::Value {
    poll_until(db, id, extra, 240, |p| {
        !JOB_ACTIVE.contains(&p["state"].as_str().unwrap_or(""))
    })
}

pub fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// Define one test per backend from one body:
/// `each_backend! { fn name(db) { ... } }` makes `name::sqlite`,
/// `name::postgres` and `name::mysql`.
#[macro_export]
macro_rules! each_backend {
    ($(fn $name:ident($db:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                fn body($db: &common::TestDb) $body
                #[test]
                fn sqlite() {
                    body(&common::TestDb::new(common::Kind::Sqlite))
                }
                #[test]
                fn postgres() {
                    body(&common::TestDb::new(common::Kind::Postgres))
                }
                #[test]
                fn mysql() {
                    body(&common::TestDb::new(common::Kind::Mysql))
                }
            }
        )*
    };
}

/// A site for prepare and the tools after it, inside the test's home: the
/// chip and camera recipes, a target `testsite` whose "remote" side is a
/// folder on this machine (`remote/`), local storage under `neb/`, and
/// `fixtures/bin` as the programs' folder. Written as the default
/// configuration file, so every tool run in this home reads it.
pub struct Site {
    pub root: PathBuf,
    pub remote: PathBuf,
    pub neb: PathBuf,
    pub runs: PathBuf,
    pub config: PathBuf,
}

/// The testbed's ssh configuration ($OFFLOAD_TEST_SSH_CONFIG, else the
/// testbed's own), with hosts bastion, fe1, fe2, fe3, fe1-via-bastion.
pub fn ssh_config() -> String {
    std::env::var("OFFLOAD_TEST_SSH_CONFIG")
        .unwrap_or_else(|_| "/var/lib/offload-testbed/ssh/ssh_config".to_string())
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

impl TestDb {
    pub fn site(&self) -> Site {
        self.site_with("")
    }

    /// A site whose target section gets `extra` TOML lines.
    pub fn site_with(&self, extra: &str) -> Site {
        let root = self.home.path().to_path_buf();
        let remote = root.join("remote");
        let neb = root.join("neb");
        let runs = root.join("runs");
        let dir = root.join(".config/offload");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "default_target = \"testsite\"\n\
                 recipes = \"{recipes}\"\n\
                 path_base = \"{runs}\"\n\
                 [targets.testsite]\n\
                 remote_root = \"{remote}\"\n\
                 {extra}\n\
                 [targets.testsite.vars]\n\
                 BIN = \"{bin}\"\n\
                 FAIL = \"0\"\n\
                 [[targets.testsite.paths]]\n\
                 pattern = '^neb://[^/]+/(.*)$'\n\
                 local = '{neb}/$1'\n\
                 remote = '{remote}/neb/$1'\n",
                recipes = fixtures().join("recipes").display(),
                runs = runs.display(),
                remote = remote.display(),
                bin = fixtures().join("bin").display(),
                neb = neb.display(),
            ),
        )
        .unwrap();
        Site {
            root,
            remote,
            neb,
            runs,
            config,
        }
    }

    /// Generate chip work items with their local input files and import
    /// them.
    pub fn import_chip(
        &self,
        site: &Site,
        label: &str,
        exposures: usize,
        chips: usize,
        first_id: i64,
    ) -> String {
        self.import_generated(site, label, (exposures, chips), first_id, 64, |_| {})
    }

    /// Job names of this test's own (`letter` and the home folder's name):
    /// tests share the one Slurm.
    pub fn job_prefix(&self, letter: &str) -> String {
        let name = self
            .home
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "");
        format!("{letter}{name}")
    }

    /// `remotetool show ID --json`.
    pub fn show(&self, id: i64) -> serde_json::Value {
        let mut c = self.remotetool();
        c.args(["show", &id.to_string(), "--json"]);
        json_of(c)
    }

    /// Record a measured transfer rate, as exec and xfer do.
    pub fn insert_rate(&self, host: &str, direction: &str, bytes: i64, seconds: f64) {
        let mut c = self.open();
        c.tx(|s| {
            s.insert_rate(&offload::db::models::NewRate {
                host: host.into(),
                direction: direction.into(),
                bytes,
                seconds,
                at: offload::db::now(),
            })?;
            Ok(())
        })
        .unwrap();
    }

    /// Generate `exposures` x `chips` chip items of `label`, first stage_id
    /// `first_id`, with their input files (each `file_size` bytes), let
    /// `edit` change each item's JSON, and import them; the lines imported.
    #[allow(clippy::too_many_arguments)]
    pub fn import_generated(
        &self,
        site: &Site,
        label: &str,
        (exposures, chips): (usize, usize),
        first_id: i64,
        file_size: u64,
        mut edit: impl FnMut(&mut serde_json::Value),
    ) -> String {
        let out = std::process::Command::new("python3")
            .arg(fixtures().join("gen-chip-items.py"))
            .args(["--exposures", &exposures.to_string()])
            .args(["--chips", &chips.to_string(), "--label", label])
            .args(["--first-id", &first_id.to_string()])
            .args(["--file-size", &file_size.to_string(), "--files"])
            .arg(&site.neb)
            .output()
            .expect("python3 runs the fixture generator");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let items = json_lines(String::from_utf8(out.stdout).unwrap().lines().map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            edit(&mut v);
            v
        }));
        self.import(&items);
        items
    }

    /// Generate `exposures` x `chips` chip items (as
    /// [`TestDb::import_generated`], files of 64 bytes); `params` sets
    /// params of some stage_ids: (stage_id, name, value).
    pub fn import_with_params(
        &self,
        site: &Site,
        label: &str,
        shape: (usize, usize),
        params: &[(i64, &str, &str)],
    ) {
        self.import_generated(site, label, shape, 1, 64, |v| {
            let id = v["stage_id"].as_i64().unwrap();
            for (sid, k, val) in params {
                if *sid == id {
                    v["params"][*k] = (*val).into();
                }
            }
        });
    }

    /// Generate chip items (as [`TestDb::import_generated`]) whose stage_id
    /// in `failing` fail with exit status 3.
    pub fn import_chip_failing(
        &self,
        site: &Site,
        label: &str,
        shape: (usize, usize),
        file_size: u64,
        failing: &[i64],
    ) {
        self.import_generated(site, label, shape, 1, file_size, |v| {
            if failing.contains(&v["stage_id"].as_i64().unwrap()) {
                v["params"]["FAIL"] = 3.into();
            }
        });
    }

    /// Any tool with `--db`, in the test's home.
    pub fn tool(&self, tool: &str) -> assert_cmd::Command {
        let mut c = self.bare(tool);
        c.arg("--db").arg(&self.url);
        c
    }

    /// `remotetool define --label LABEL --stage STAGE`, then `extra`: it
    /// must succeed and print the new run's id, which it returns.
    pub fn define(&self, label: &str, stage: &str, extra: &[&str]) -> i64 {
        let done = self
            .remotetool()
            .args(["define", "--label", label, "--stage", stage])
            .args(extra)
            .assert()
            .success();
        let text = String::from_utf8(done.get_output().stdout.clone()).unwrap();
        let id: i64 = text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("define printed {text:?}: {e}"));
        assert_eq!(text, format!("{id}\n"), "define prints the run's id");
        id
    }

    /// `prepare --remote-id ID`, which must succeed.
    pub fn prepare(&self, id: i64) {
        self.tool("prepare")
            .args(["--remote-id", &id.to_string()])
            .assert()
            .success();
    }

    /// `exec --remote-id ID`, which must succeed.
    pub fn exec(&self, id: i64) {
        self.tool("exec")
            .args(["--remote-id", &id.to_string()])
            .assert()
            .success();
    }

    /// `TOOL --remote-id ID`, which must fail with exit `code` saying
    /// `said` on stderr.
    pub fn refused(&self, tool: &str, id: i64, code: i32, said: impl predicates::Predicate<str>) {
        self.tool(tool)
            .args(["--remote-id", &id.to_string()])
            .assert()
            .code(code)
            .stderr(said);
    }

    /// `exec --remote-id ID --json`, which must succeed: its JSON.
    pub fn exec_json(&self, id: i64) -> serde_json::Value {
        let mut c = self.tool("exec");
        c.args(["--remote-id", &id.to_string(), "--json"]);
        json_of(c)
    }

    /// Define a run (as [`TestDb::define`]) and prepare it: its id.
    pub fn define_prepare(&self, label: &str, stage: &str, extra: &[&str]) -> i64 {
        let id = self.define(label, stage, extra);
        self.prepare(id);
        id
    }

    /// Define a run (as [`TestDb::define`]), prepare it, exec it and poll
    /// it until its job has ended: its id and poll's last JSON.
    pub fn run_through(
        &self,
        label: &str,
        stage: &str,
        extra: &[&str],
    ) -> (i64, serde_json::Value) {
        let id = self.define_prepare(label, stage, extra);
        self.exec(id);
        let polled = poll_until_done(self, id);
        self.assert_tallies_match();
        (id, polled)
    }

    /// The counts the database keeps as rows change (run_tallies) equal
    /// a count of every component.
    pub fn assert_tallies_match(&self) {
        let mut db = self.open();
        let kept = db.read(|s| s.tally_groups(None, None)).unwrap();
        let counted = db.read(|s| s.recount()).unwrap();
        let runs = |v: Vec<offload::db::queries::tallies::TallyGroup>| {
            v.into_iter()
                .filter(|g| g.components != 0)
                .map(|g| {
                    let key = (
                        g.label,
                        g.stage,
                        g.state.to_string(),
                        g.active,
                        g.components,
                    );
                    (key, (g.runtime * 1000.0).round() as i64)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(runs(kept), runs(counted), "run_tallies against a recount");
    }

    /// The tools `remotetool paused --json` says are paused.
    pub fn paused_tools(&self) -> Vec<String> {
        let mut c = self.remotetool();
        c.args(["paused", "--json"]);
        json_of(c)
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["paused"] == true)
            .map(|c| c["tool"].as_str().unwrap().to_string())
            .collect()
    }

    /// `remotetool set ID STATE --reason test`, which must succeed.
    pub fn set_state(&self, id: i64, state: &str) {
        self.remotetool()
            .args(["set", &id.to_string(), state, "--reason", "test"])
            .assert()
            .success();
    }
}

/// The files of the chip recipes here: the image and its mask in, the
/// image and its stats out.
pub const CHIP_FILES: &str = r#"
[inputs]
IMAGE = "@INPUT@"
MASK = "@MASK@"

[outputs]
IMAGE = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.fits"
STATS = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.stats"
"#;

/// A chip recipe whose command does what the item's ODD param says after
/// the real program worked: `forget` removes the image, `link` leaves a
/// symbolic link in its place, `sleep` sleeps while the marker file exists,
/// `fail` fails (exit 3), `hold` leaves a FIFO among the run's result files
/// (the batch script's summary then waits on it).
pub fn odd_chip() -> String {
    let command = "@BIN@/ppfake --threads @THREADS@ --output @out:IMAGE@ --stats @out:STATS@ @in:IMAGE@ @in:MASK@ && case @ODD@ in forget) rm -f -- @out:IMAGE@ ;; link) rm -f -- @out:IMAGE@ && ln -s -- @out:STATS@ @out:IMAGE@ ;; sleep) while [ -e @MARKER@ ]; do sleep 1; done ;; fail) exit 3 ;; hold) mkfifo \\\"$OFFLOAD_RUN/results/rank-hold.tsv\\\" ;; esac";
    format!(
        "\nstage = \"chip\"\nthreads = 2\ntime_cost = 20\ncommand = \"{command}\"\npost = \"cat @out:STATS@\"\n{CHIP_FILES}"
    )
}

impl Site {
    /// Make [`odd_chip`] the chip recipe, each item by default doing
    /// nothing odd, its marker a file nobody made: the marker's path.
    pub fn use_odd_chip(&self) -> PathBuf {
        self.use_recipes(&[("chip.toml", &odd_chip())]);
        let marker = self.root.join("marker");
        self.set_vars(&[("ODD", "none"), ("MARKER", &marker.display().to_string())]);
        marker
    }

    /// Read recipes from a folder of the test's own: the fixtures' chip and
    /// camera, plus `extra` (file name, text), which may replace them.
    pub fn use_recipes(&self, extra: &[(&str, &str)]) {
        let dir = self.root.join("recipes");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["chip.toml", "camera.toml"] {
            std::fs::copy(fixtures().join("recipes").join(f), dir.join(f)).unwrap();
        }
        for (name, text) in extra {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let text = std::fs::read_to_string(&self.config).unwrap();
        let recipes = fixtures().join("recipes").display().to_string();
        std::fs::write(
            &self.config,
            text.replace(&recipes, &dir.display().to_string()),
        )
        .unwrap();
    }

    /// Set the target's `vars` (placeholders of every recipe).
    pub fn set_vars(&self, vars: &[(&str, &str)]) {
        let mut lines = String::from("[targets.testsite.vars]\n");
        for (k, v) in vars {
            lines.push_str(&format!("{k} = {}\n", toml::Value::String(v.to_string())));
        }
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(
            &self.config,
            text.replacen("[targets.testsite.vars]\n", &lines, 1),
        )
        .unwrap();
    }

    /// Add lines to the target's section of the configuration.
    pub fn target_lines(&self, lines: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(
            &self.config,
            text.replacen(
                "[targets.testsite]\n",
                &format!("[targets.testsite]\n{lines}\n"),
                1,
            ),
        )
        .unwrap();
    }

    pub fn run_dir(&self, remote_id: i64) -> PathBuf {
        self.runs.join(format!("run-{remote_id}"))
    }

    pub fn remote_run_dir(&self, remote_id: i64) -> PathBuf {
        self.remote.join(format!("run-{remote_id}"))
    }

    /// Stand in for the push: copy a prepared run's folder and its inputs
    /// to the "remote" side, as its lists say.
    pub fn push(&self, remote_id: i64) -> PathBuf {
        let local = self.run_dir(remote_id);
        let remote = self.remote_run_dir(remote_id);
        std::fs::create_dir_all(&remote).unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", local.display()))
            .arg(&remote)
            .status()
            .unwrap();
        assert!(status.success());
        let list = std::fs::read_to_string(local.join("inputs.list")).unwrap();
        for line in list.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let dest = Path::new(f[1]);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(f[0], dest).unwrap();
        }
        remote
    }
}

/// Start each `ssh` command (given up to its host) running a remote
/// command that holds its session open for `secs` seconds, and return once
/// every remote side has said it is there (at most 60 s): sessions taken.
pub fn hold_sessions(
    cmds: impl IntoIterator<Item = std::process::Command>,
    secs: u64,
) -> Vec<std::process::Child> {
    use std::io::BufRead;
    let started: Vec<_> = cmds
        .into_iter()
        .map(|mut c| {
            let mut child = c
                .arg(format!("echo held; sleep {secs}"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("ssh runs");
            let out = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = std::io::BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
            (child, rx)
        })
        .collect();
    started
        .into_iter()
        .map(|(child, rx)| {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("a held session opens within 60 s");
            assert_eq!(line.trim(), "held", "the session did not open");
            child
        })
        .collect()
}

/// Wait until nothing under `dir` changes (names, sizes, times) for half
/// a second, at most 60 s: whoever was writing there is done.
pub fn wait_until_still(dir: &Path) {
    let look = || {
        let mut now: Vec<_> = walk(dir)
            .into_iter()
            .map(|p| {
                let m = std::fs::symlink_metadata(&p).ok();
                let (len, at) = m.map_or((0, None), |m| (m.len(), m.modified().ok()));
                (p, len, at)
            })
            .collect();
        now.sort();
        now
    };
    let mut before = None;
    wait_until(60, 500, &format!("{} to be still", dir.display()), || {
        let now = Some(look());
        let still = now == before;
        before = now;
        still
    });
}

/// Everything below `dir`, folders included (nothing when it does not
/// exist, or goes while being read).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// Wait until run `id`'s job on a `local` target has ended: its summary
/// written at the site, its process gone (at most 120 s each).
pub fn wait_for_local_job(db: &TestDb, site: &Site, id: i64) {
    let summary = site.remote_run_dir(id).join("job-summary.txt");
    wait_until(120, 100, &format!("run {id}'s job summary"), || {
        summary.exists()
    });
    let job = db.show(id)["job_id"].as_str().unwrap().to_string();
    let pid: i32 = job.strip_prefix("local:").unwrap().parse().unwrap();
    wait_until(120, 50, &format!("job {job} to end"), || {
        !offload::host::pid_alive(pid)
    });
}

/// What squeue says of a Slurm job now (empty once it has left the queue).
pub fn squeue_state(job_id: &str) -> String {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-j", job_id, "-o", "%T"])
        .output()
        .expect("squeue runs (scripts/testbed up)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Wait until a Slurm job has left the queue or ended (at most 240 s).
pub fn wait_for_job_end(job_id: &str) {
    wait_for(240, 300, &format!("job {job_id}"), || {
        let state = squeue_state(job_id);
        if JOB_ACTIVE.contains(&state.as_str()) {
            Err(state)
        } else {
            Ok(())
        }
    })
}

/// Submit a batch script to the real Slurm and wait for it to end; returns
/// the job id. Panics, naming the testbed, when Slurm is not there.
pub fn sbatch_wait(script: &Path, cwd: &Path) -> String {
    let out = std::process::Command::new("sbatch")
        .args(["--parsable", "--wait"])
        .arg(script)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("sbatch not runnable ({e}): start Slurm with `scripts/testbed up`")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !stdout.is_empty(),
        "sbatch gave no job id: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.split(';').next().unwrap().to_string()
}

/// Submit a pushed run's `job.sh` (in `remote`) to the real Slurm by hand,
/// held, under the job name `name`, as an exec that died after its sbatch
/// leaves it: what sbatch printed (the job id).
pub fn sbatch_held(remote: &Path, name: &str) -> String {
    let out = std::process::Command::new("sbatch")
        .args([
            "--parsable",
            "--hold",
            &format!("--job-name={name}"),
            "job.sh",
        ])
        .current_dir(remote)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Result lines of a run's remote folder: (component id, exit, phase, stats).
pub fn results(remote_run: &Path) -> Vec<(i64, i32, String, String)> {
    let mut out = Vec::new();
    let dir = remote_run.join("results");
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(
                f.len(),
                9,
                "result line has 9 fields (with the log tails): {line:?}"
            );
            assert_eq!(f[0], "R");
            let t0: f64 = f[4].parse().unwrap();
            let t1: f64 = f[5].parse().unwrap();
            assert!(t1 >= t0, "end after start: {line:?}");
            out.push((
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].to_string(),
                f[6].to_string(),
            ));
        }
    }
    out.sort();
    out
}

/// Hex SHA-256 of bytes, as in a run's `MANIFEST.sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// A tmpfs mounted by the test over a folder, unmounted at the end (the
/// tests run as root, as CI does): a small disk to fill.
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount -t tmpfs {} (the tests run as root)",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }

    pub fn remount(&self, opts: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {} {opts}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A log tail no page may show as markup: it would retitle the page and
/// raise an alert if it ran.
pub const HOSTILE: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

impl TestDb {
    /// Two runs of label WEB: run 1 in `error` with a failed component whose
    /// stderr tail is hostile markup, run 2 `new`; an empty configuration.
    /// Beside [`TestDb::web_scene`], what the charts draw: run 2's two
    /// components came back an hour ago (40 s each), their results
    /// applied; a front end `fe1<b>` pulled 50 MB in 2 s; a job used 4
    /// CPUs for half an hour. The time it wrote ("YYYY-MM-DD HH:MM:SS").
    pub fn chart_scene(&self) -> String {
        let hour_ago = (chrono::Utc::now().naive_utc() - chrono::TimeDelta::hours(1))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        self.batch(&format!(
            "UPDATE remote_components SET state = 'done', runtime = 40 WHERE remote_id = 2;
             INSERT INTO results (component_id, remote_id, work_item_id, attempt, state, outputs, applied_at)
               SELECT id, remote_id, work_item_id, 1, 'done', '[]', '{hour_ago}' FROM remote_components WHERE remote_id = 2;
             INSERT INTO transfer_rates (host, direction, bytes, seconds, at) VALUES ('fe1<b>', 'pull', 50000000, 2.0, '{hour_ago}');
             INSERT INTO remote_jobs (remote_id, job_id, attempt, source, final_state, elapsed_s, alloc_cpus, recorded_at)
               VALUES (2, '700', 1, 'sacct', 'COMPLETED', 1800, 4, '{hour_ago}');"
        ))
        .unwrap();
        hour_ago
    }

    pub fn web_scene(&self) -> std::path::PathBuf {
        let cfg = self.write("config.toml", "");
        self.import(&items("WEB", "chip", 1, 4, 1));
        for _ in 0..2 {
            self.remotetool()
                .args([
                    "define",
                    "--label",
                    "WEB",
                    "--stage",
                    "chip",
                    "--limit",
                    "2",
                    "--path-base",
                    "/data/runs",
                ])
                .assert()
                .success();
        }
        for st in ["pending", "run", "error"] {
            self.remotetool()
                .args(["set", "1", st, "--reason", "test"])
                .assert()
                .success();
        }
        let record = serde_json::json!({
            "phase": "command", "stats": "", "runtime": 1.5, "start": 0.0, "end": 0.0,
            "stdout_tail": "", "stderr_tail": format!("reading chip: {HOSTILE}"),
        })
        .to_string()
        .replace('\'', "''");
        self.batch(&format!(
            "UPDATE remote_components SET state = 'failed', exit_status = 3, fault = 1, runtime = 1.5, result = '{record}' \
             WHERE remote_id = 1 AND work_item_id = (SELECT MIN(work_item_id) FROM (SELECT work_item_id FROM remote_components WHERE remote_id = 1) m)"
        ))
        .unwrap();
        cfg
    }
}
