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

pub fn admin() -> PgConnection {
    let url = admin_url();
    PgConnection::establish(&url).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL test server unreachable at {url}: {e}\n\
             Start it with `scripts/testbed up` (as root), or set OFFLOAD_TEST_PG_URL. \
             PostgreSQL tests never skip."
        )
    })
}

fn mysql_admin_url() -> String {
    std::env::var("OFFLOAD_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_string())
}

pub fn mysql_admin() -> MysqlConnection {
    let url = mysql_admin_url();
    MysqlConnection::establish(&url).unwrap_or_else(|e| {
        panic!(
            "MariaDB test server unreachable at {url}: {e}\n\
             Start it with `scripts/testbed up` (as root), or set OFFLOAD_TEST_MYSQL_URL. \
             MariaDB tests never skip."
        )
    })
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
            Kind::Postgres => {
                let name = fresh_name();
                admin()
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create test database");
                let url = with_database(&admin_url(), &name);
                TestDb {
                    kind,
                    url,
                    home,
                    made: Some((kind, name)),
                }
            }
            Kind::Mysql => {
                let name = fresh_name();
                mysql_admin()
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create test database");
                let url = with_database(&mysql_admin_url(), &name);
                TestDb {
                    kind,
                    url,
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

/// Run a command that must succeed; its stdout as JSON.
pub fn json_of(mut c: assert_cmd::Command) -> serde_json::Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out.stdout)
}

/// Poll a run until its job has ended (poll's JSON of the last poll).
pub fn poll_until_done(db: &TestDb, id: i64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let mut c = db.tool("poll");
        c.args(["--remote-id", &id.to_string(), "--json"]);
        let p = json_of(c);
        if !["RUNNING", "PENDING", "CONFIGURING", "COMPLETING"]
            .contains(&p["state"].as_str().unwrap_or(""))
        {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job of run {id} still {} after 240 s",
            p["state"]
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
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
        let out = std::process::Command::new("python3")
            .arg(fixtures().join("gen-chip-items.py"))
            .args([
                "--exposures",
                &exposures.to_string(),
                "--chips",
                &chips.to_string(),
            ])
            .args(["--label", label, "--first-id", &first_id.to_string()])
            .arg("--files")
            .arg(&site.neb)
            .output()
            .expect("python3 runs the fixture generator");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let items = String::from_utf8(out.stdout).unwrap();
        self.import(&items);
        items
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
        let mut items = String::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            edit(&mut v);
            items.push_str(&v.to_string());
            items.push('\n');
        }
        self.import(&items);
        items
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
}

impl Site {
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

/// Submit a batch script to the real Slurm and wait for it to end; returns
/// the job id. Panics, naming the testbed, when Slurm is not there.
/// Wait until a Slurm job has left the queue or ended (at most 240 s).
pub fn wait_for_job_end(job_id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let out = std::process::Command::new("squeue")
            .args(["-h", "-j", job_id, "-o", "%T"])
            .output()
            .expect("squeue runs");
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !["RUNNING", "PENDING", "CONFIGURING", "COMPLETING"].contains(&state.as_str()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {job_id} still {state} after 240 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

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
