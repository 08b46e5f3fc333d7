//! xfer against real sshd front ends on loopback, through the masters
//! `scripts/testbed up` started (standing in for the key-card logins).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::ssh_config;
use predicates::prelude::*;
use predicates::str::contains;

const STATE: &str = "/var/lib/offload-testbed/ssh";

/// xfer in `home` (with no OFFLOAD_* variables of this environment) through
/// the testbed's ssh configuration, as a std Command (to spawn).
fn std_xfer(home: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("xfer"));
    c.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("OFFLOAD_DB")
        .env_remove("OFFLOAD_CONFIG")
        .env("OFFLOAD_SSH_CONFIG", ssh_config());
    c
}

/// The same, to run (for at most 120 s).
fn xfer(home: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::from_std(std_xfer(home));
    c.timeout(std::time::Duration::from_secs(120));
    c
}

/// Logins to `server` (every one, whoever made it).
fn logins(server: &str) -> usize {
    logins_from(server, "")
}

/// Logins to `server` from a source address starting with `from` (e.g.
/// OwnMaster's 127.0.0.2), so that the tests side by side, whose masters
/// and sessions come from 127.0.0.1, do not count.
fn logins_from(server: &str, from: &str) -> usize {
    let log = Path::new(STATE).join(format!("{server}.log"));
    std::fs::read_to_string(&log)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (start the testbed: scripts/testbed up)",
                log.display()
            )
        })
        .matches(&format!("Accepted publickey for root from {from}"))
        .count()
}

/// Deterministic pseudo-random bytes (incompressible).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Files to move (under `dir`), and an empty home for xfer.
struct Set {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    names: Vec<String>,
}

const ODD: &[&str] = &[
    "a b.dat",
    "it's.dat",
    "$(touch PWNED).dat",
    "ünï cødé.dat",
    "back\\slash `x`.dat",
    "semi;colon&amp.dat",
    ".hidden.dat",
    "-leading dash.dat",
    "[glob]*?.dat",
];

/// Files to move: odd names, many small ones, and a few larger than the chunk size.
fn files(small: usize, big: &[usize]) -> Set {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("deep/er")).unwrap();
    let mut names = Vec::new();
    for (i, n) in ODD.iter().enumerate() {
        std::fs::write(src.join(n), noise(i as u64, 1000 + i)).unwrap();
        names.push(n.to_string());
    }
    for i in 0..small {
        let n = format!("deep/er/f{i:05}.fits");
        std::fs::write(src.join(&n), noise(100 + i as u64, (i * 997) % 70_000)).unwrap();
        names.push(n);
    }
    for (i, size) in big.iter().enumerate() {
        let n = format!("big{i}.fits");
        std::fs::write(src.join(&n), noise(9000 + i as u64, *size)).unwrap();
        names.push(n);
    }
    Set {
        dir,
        home: tempfile::tempdir().unwrap(),
        names,
    }
}

impl Set {
    fn path(&self, side: &str, name: &str) -> PathBuf {
        self.dir.path().join(side).join(name)
    }

    fn list(&self, side: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{side}.list"));
        let text: String = self
            .names
            .iter()
            .map(|n| format!("{}\n", self.path(side, n).display()))
            .collect();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `xfer DIRECTION --host HOSTS --from <FROM list> --to <TO list>` in
    /// the set's home, between two sides of the set (`sides`: from, to), as
    /// a std Command (to spawn); more options may follow.
    fn std_xfer(&self, direction: &str, hosts: &str, sides: (&str, &str)) -> Command {
        let mut c = std_xfer(self.home.path());
        c.args([direction, "--host", hosts, "--from"])
            .arg(self.list(sides.0))
            .arg("--to")
            .arg(self.list(sides.1));
        c
    }

    /// The same, to run (for at most 120 s).
    fn xfer(&self, direction: &str, hosts: &str, sides: (&str, &str)) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::from_std(self.std_xfer(direction, hosts, sides));
        c.timeout(std::time::Duration::from_secs(120));
        c
    }

    /// The same with `--json`: its report is its stdout (see
    /// [`common::json_of`]).
    fn xfer_json(&self, direction: &str, hosts: &str, sides: (&str, &str)) -> assert_cmd::Command {
        let mut c = self.xfer(direction, hosts, sides);
        c.arg("--json");
        c
    }

    /// A transfer (as [`Set::xfer_json`], with `options`) that must
    /// succeed: its report.
    fn transfer(
        &self,
        direction: &str,
        hosts: &str,
        sides: (&str, &str),
        options: &[&str],
    ) -> serde_json::Value {
        let mut c = self.xfer_json(direction, hosts, sides);
        c.args(options);
        common::json_of(c)
    }

    fn same(&self, a: &str, b: &str) {
        for n in &self.names {
            let x = std::fs::read(self.path(a, n)).unwrap();
            let y = std::fs::read(self.path(b, n)).unwrap_or_else(|e| panic!("{b}/{n}: {e}"));
            assert!(x == y, "{n} differs between {a} and {b}");
        }
    }
}

fn report(out: &std::process::Output) -> serde_json::Value {
    common::json(&out.stdout)
}

#[test]
fn push_and_pull_round_trip_byte_identical() {
    let set = files(300, &[9 << 20, (4 << 20) + 5]);
    let r = set.transfer(
        "push",
        "fe1,fe2",
        ("src", "remote"),
        &["--bundle-mib", "1", "--chunk-mib", "2"],
    );
    assert_eq!(r["complete"], true);
    assert_eq!(r["files"], set.names.len());
    assert_eq!(r["transferred"], set.names.len());
    // Without --channels, each host gets what its measured round trip
    // needs (on loopback the least, 2), not the cap of 8.
    let mut most = 0;
    for h in ["fe1", "fe2"] {
        let rt = r["round_trip_ms"][h].as_f64().unwrap_or(f64::NAN);
        assert!(rt > 0.0 && rt < 50.0, "{h}: {r}");
        most += offload::transfer::channels_for(std::time::Duration::from_secs_f64(rt / 1e3), 8);
    }
    let used = r["channels"].as_u64().unwrap() as usize;
    assert!(
        (2..=most).contains(&used) && most < 16,
        "{used} of {most}: {r}"
    );
    set.same("src", "remote");
    // Every file has its final name and nothing else is left: no staging
    // folder, no staged file.
    let entries = common::walk(&set.dir.path().join("remote"));
    for p in &entries {
        assert!(
            !p.to_string_lossy().contains(".offload-part"),
            "left behind: {}",
            p.display()
        );
    }
    let found: Vec<&PathBuf> = entries.iter().filter(|p| p.is_file()).collect();
    assert_eq!(found.len(), set.names.len(), "{found:?}");
    // The hosts as --host repeated.
    let r = set.transfer(
        "pull",
        "fe1",
        ("remote", "back"),
        &["--host", "fe3", "--bundle-mib", "1", "--chunk-mib", "2"],
    );
    assert_eq!(r["complete"], true);
    set.same("src", "back");
    // Nothing ran that a name spelled.
    assert!(!set.dir.path().join("remote/PWNED").exists() && !Path::new("PWNED").exists());
    // No temporary names left.
    let parts = common::walk(set.dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".offload-part"))
        .count();
    assert_eq!(parts, 0);
}

#[test]
fn a_rerun_skips_what_is_complete() {
    let set = files(50, &[]);
    let run = || {
        let mut c = xfer(set.home.path());
        c.args(["push", "--host", "fe2", "--json", "--list"]).arg({
            let p = set.dir.path().join("pairs.tsv");
            let text: String = set
                .names
                .iter()
                .map(|n| {
                    format!(
                        "{}\t{}\t0\n",
                        set.path("src", n).display(),
                        set.path("remote", n).display()
                    )
                })
                .collect();
            std::fs::write(&p, text).unwrap();
            p
        });
        common::json_of(c)
    };
    assert_eq!(run()["transferred"], set.names.len());
    let r = run();
    assert_eq!(
        (r["skipped"].as_u64(), r["transferred"].as_u64()),
        (Some(set.names.len() as u64), Some(0))
    );
    std::fs::write(set.path("src", "a b.dat"), b"changed").unwrap();
    let r = run();
    assert_eq!(r["transferred"], 1);
    set.same("src", "remote");
}

#[test]
fn sixteen_channels_against_max_sessions_3_one_login() {
    let set = files(400, &[]);
    let before = logins("fe3");
    let r = set.transfer(
        "push",
        "fe3",
        ("src", "remote"),
        &["--channels", "16", "--bundle-mib", "1"],
    );
    assert_eq!(r["complete"], true);
    assert!(
        r["refusals"].as_u64().unwrap() > 0,
        "MaxSessions 3 must refuse some of 16: {r}"
    );
    assert!(r["channels"].as_u64().unwrap() <= 3, "{r}");
    set.same("src", "remote");
    assert_eq!(
        logins("fe3"),
        before,
        "no new login on fe3: everything went over the one master"
    );
}

/// Held by the tests that log in to fe2 with masters of their own: one of
/// them counts fe2's logins, which the other's would spoil.
static OWN_LOGINS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The loopback address OwnMaster's logins come from (fe2 listens on
/// 127.0.0.1; Linux answers all of 127/8 on loopback).
const OWN_FROM: &str = "127.0.0.2 ";

/// An ssh configuration of the test's own, with a host `fe2-own` whose
/// master the test starts and may kill; it logs in from OWN_FROM.
struct OwnMaster {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl OwnMaster {
    fn new(dead_socket: bool) -> OwnMaster {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ssh_config");
        let cp = if dead_socket {
            "/nonexistent/offload-test/%n".to_string()
        } else {
            format!("{}/cm-%n", dir.path().display())
        };
        std::fs::write(
            &config,
            format!(
                "Host fe2-own\n  HostName 127.0.0.1\n  Port 2202\n  User root\n  IdentityFile {STATE}/id_ed25519\n  IdentitiesOnly yes\n  BindAddress {own}\n  \
                 UserKnownHostsFile {STATE}/known_hosts\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ControlPath {cp}\n",
                own = OWN_FROM.trim_end()
            ),
        )
        .unwrap();
        OwnMaster { dir, config }
    }

    fn start(&self) {
        // A master killed with SIGKILL leaves its socket; ssh -M would then
        // run without multiplexing.
        if self.pid().is_none() {
            let _ = std::fs::remove_file(self.dir.path().join("cm-fe2-own"));
        }
        let s = Command::new("ssh")
            .arg("-F")
            .arg(&self.config)
            .args(["-M", "-f", "-N", "-o", "ControlPersist=yes", "fe2-own"])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(s.success());
    }

    fn pid(&self) -> Option<i32> {
        let out = Command::new("ssh")
            .arg("-F")
            .arg(&self.config)
            .args(["-O", "check", "fe2-own"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        text.split("pid=")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.parse().ok())
    }

    /// Kill the master hard (its socket stays behind), and wait until it
    /// no longer answers.
    fn kill(&self) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        common::wait_until(10, 20, "the killed master to go", || self.pid().is_none());
    }
}

impl Drop for OwnMaster {
    fn drop(&mut self) {
        let _ = Command::new("ssh")
            .arg("-F")
            .arg(&self.config)
            .args(["-O", "exit", "fe2-own"])
            .output();
    }
}

#[test]
fn no_live_master_is_the_auth_exit_before_anything_moves() {
    let _serial = OWN_LOGINS.lock().unwrap_or_else(|e| e.into_inner());
    let own = OwnMaster::new(true);
    let set = files(3, &[]);
    set.xfer("push", "fe2-own", ("src", "remote"))
        .env("OFFLOAD_SSH_CONFIG", &own.config)
        .assert()
        .code(5)
        .stderr(contains("no master connection to fe2-own").and(contains("ssh -M -f -N fe2-own")));
    assert!(!set.dir.path().join("remote").exists(), "nothing moved");
    // A live socket of a dead master (SIGKILL leaves it behind) is the same.
    let own = OwnMaster::new(false);
    own.start();
    own.kill();
    set.xfer("push", "fe2-own", ("src", "remote"))
        .env("OFFLOAD_SSH_CONFIG", &own.config)
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .code(5)
        .stderr(contains("no live master connection to fe2-own"));
    assert!(!set.dir.path().join("remote").exists(), "nothing moved");
}

#[test]
fn a_master_killed_mid_transfer_leaves_nothing_looking_complete() {
    let _serial = OWN_LOGINS.lock().unwrap_or_else(|e| e.into_inner());
    let own = OwnMaster::new(false);
    own.start();
    let before = logins_from("fe2", OWN_FROM);
    let set = files(1500, &[24 << 20]);
    let mut cmd = set.std_xfer("push", "fe2-own", ("src", "remote"));
    cmd.env("OFFLOAD_SSH_CONFIG", &own.config)
        .args(["--json", "--bundle-mib", "1", "--chunk-mib", "1"])
        .args(["--channels", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Kill the master once the first files have landed.
    let first = set.path("remote", "a b.dat");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !first.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    own.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(r["complete"], false);
    assert_eq!(r["hosts_lost"], serde_json::json!(["fe2-own"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("went away"));
    // Every file with its final name is whole (also those the remote side
    // finished verifying after the master went).
    common::wait_until_still(&set.dir.path().join("remote"));
    let mut present = 0;
    for n in &set.names {
        let p = set.path("remote", n);
        if p.exists() {
            present += 1;
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(set.path("src", n)).unwrap(),
                "{n} looks complete but is not"
            );
        }
    }
    assert!(present < set.names.len(), "the kill came before the end");
    // After the refresh, the rerun finishes and skips what is complete.
    own.start();
    let r = common::json_of(
        set.xfer_json("push", "fe2-own", ("src", "remote"))
            .env("OFFLOAD_SSH_CONFIG", &own.config),
    );
    assert!(r["skipped"].as_u64().unwrap() >= present as u64, "{r}");
    assert!(r["transferred"].as_u64().unwrap() > 0, "{r}");
    set.same("src", "remote");
    // Two master logins (the start and the restart), nothing else.
    assert_eq!(logins_from("fe2", OWN_FROM), before + 1);
}

#[test]
fn bad_lists_and_missing_files_are_named() {
    let set = files(2, &[]);
    let short = set.dir.path().join("short.list");
    std::fs::write(&short, "/x\n").unwrap();
    xfer(set.home.path())
        .args(["push", "--host", "fe1", "--from"])
        .arg(set.list("src"))
        .arg("--to")
        .arg(&short)
        .assert()
        .code(2)
        .stderr(contains(
            "the lists differ in length: 11 sources, 1 destinations",
        ));
    std::fs::remove_file(set.path("src", "it's.dat")).unwrap();
    set.xfer("push", "fe1", ("src", "remote"))
        .assert()
        .code(2)
        .stderr(contains("it's.dat (element 2) cannot be read").and(contains("nothing was sent")));
    assert!(!set.dir.path().join("remote").exists());
    set.xfer("pull", "fe1", ("src", "back"))
        .assert()
        .code(2)
        .stderr(contains(
            "it's.dat (element 2) does not exist on the remote side",
        ));
    xfer(set.home.path())
        .args(["push", "--from", "/a", "--to", "/b"])
        .assert()
        .code(2)
        .stderr(contains("no hosts"));
}

#[test]
fn an_unwritable_destination_is_reported_per_file() {
    let set = files(4, &[]);
    // Pull into a "folder" that is a regular file.
    let blocker = set.dir.path().join("blocker");
    std::fs::write(&blocker, "a file").unwrap();
    let to = set.dir.path().join("to.list");
    let text: String = set
        .names
        .iter()
        .map(|n| format!("{}/{}\n", blocker.display(), n.replace('/', "_")))
        .collect();
    std::fs::write(&to, text).unwrap();
    let out = xfer(set.home.path())
        .args(["pull", "--host", "fe1", "--json", "--from"])
        .arg(set.list("src"))
        .arg("--to")
        .arg(&to)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["complete"], false);
    assert_eq!(r["failed"], set.names.len());
    let why = r["failures"][0]["reason"].as_str().unwrap();
    assert!(
        why.contains("cannot create folder") && why.contains("blocker"),
        "{why}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("transfer incomplete"));
}

// A pull into a read-only file system here: this machine's fault, said
// once (exit 6, the path, the file system and the error), with the
// report's local_fault; no file looks complete. Writable again, the same
// pull completes.
#[test]
fn a_pull_into_a_read_only_file_system_is_this_machines_fault() {
    let set = files(20, &[]);
    let back = set.dir.path().join("back");
    let disk = common::Tmpfs::mount(&back, "size=16m");
    disk.remount("ro");
    let pull = || {
        set.xfer_json("pull", "fe1", ("src", "back"))
            .output()
            .unwrap()
    };
    let out = pull();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(6), "{err}");
    let said: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(said.len(), 1, "said once: {err}");
    assert!(
        said[0].contains("Read-only file system") && said[0].contains(&back.display().to_string()),
        "{err}"
    );
    let r = report(&out);
    assert_eq!(r["local_fault"]["errno"], libc::EROFS);
    assert_eq!(r["local_fault"]["file_system"], back.display().to_string());
    for f in r["failures"].as_array().unwrap() {
        assert!(f["reason"].as_str().unwrap().len() < 300, "{f}");
    }
    assert!(common::walk(&back).is_empty(), "nothing written");
    disk.remount("rw");
    let out = pull();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    set.same("src", "back");
}

#[test]
fn zstd_frames_round_trip_both_ways() {
    let set = files(40, &[3 << 20]);
    // Compressible data too.
    std::fs::write(set.path("src", "a b.dat"), "offload ".repeat(50_000)).unwrap();
    for (dir, from, to) in [("push", "src", "remote"), ("pull", "remote", "back")] {
        let r = set.transfer(
            dir,
            "fe2",
            (from, to),
            &["--compress", "always", "--chunk-mib", "1"],
        );
        assert!(r["compressed_frames"].as_u64().unwrap() > 0, "{dir}: {r}");
    }
    set.same("src", "back");
}

#[test]
fn hosts_behind_a_proxy_jump_work_through_their_master() {
    let set = files(20, &[]);
    let before = logins("bastion");
    set.xfer("push", "fe1-via-bastion", ("src", "remote"))
        .assert()
        .success();
    set.same("src", "remote");
    assert_eq!(logins("bastion"), before, "no new login on the bastion");
}

/// Drive the remote agent by hand with a frame whose manifest lies, and
/// one cut short: neither leaves a file with its final name.
#[test]
fn corrupt_and_truncated_bundles_never_look_complete() {
    use std::io::{BufRead, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out/file.dat");
    let stage = format!(
        "{}/.offload-part.7/file.dat",
        dest.parent().unwrap().display()
    );
    let data = b"the real content\n";
    let folders = format!(
        "{}\t{}\n",
        Path::new(&stage).parent().unwrap().display(),
        dest.parent().unwrap().display()
    );
    // Feed the agent what `frames(tmp)` builds once it has said where its
    // temporary folder is; return all it answered.
    let agent = |frames: &dyn Fn(&str) -> Vec<u8>| -> String {
        let mut child = Command::new("ssh")
            .arg("-F")
            .arg(ssh_config())
            .args(["-T", "fe1", "--"])
            .arg(format!(
                "exec bash --norc -c {} offload test-session",
                shlex::try_quote(offload::transfer::AGENT).unwrap()
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        out.read_line(&mut ready).unwrap();
        let tmp = ready
            .trim_end()
            .strip_prefix("READY ")
            .and_then(|r| r.split_once(' '))
            .map(|(_, t)| t.to_string())
            .unwrap_or_else(|| panic!("{ready}"));
        assert!(tmp.starts_with('/'), "{ready}");
        let mut input = child.stdin.take().unwrap();
        input.write_all(&frames(&tmp)).unwrap();
        drop(input);
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        child.wait().unwrap();
        text
    };
    // A bundle as xfer builds it: the folders list, the file, then the
    // staged paths and their checksums, in whole tar records.
    let bundle = |tmp: &str, sum_of: &[u8], cut: Option<usize>| -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |name: &str, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name.trim_start_matches('/'), body)
                .unwrap();
        };
        add(&format!("{tmp}/b.7/D"), folders.as_bytes());
        add(&stage, data);
        add(&format!("{tmp}/b.7/P"), format!("{stage}\0").as_bytes());
        let manifest = format!("{} {stage}\n", offload::transfer::cksum_bytes(sum_of));
        add(&format!("{tmp}/b.7/M"), manifest.as_bytes());
        let mut payload = tar.into_inner().unwrap();
        payload.resize(payload.len().div_ceil(10240) * 10240, 0);
        if let Some(n) = cut {
            payload.truncate(n);
        }
        payload
    };
    let framed = |payload: &[u8], z: u8| {
        let mut f = format!("P 7 {} {z}\n", payload.len()).into_bytes();
        f.extend_from_slice(payload);
        f
    };
    // A checksum that does not match.
    let text = agent(&|tmp| {
        let mut f = framed(&bundle(tmp, b"something else entirely", None), 0);
        f.extend_from_slice(b"E 0\n");
        f
    });
    assert!(
        text.lines().any(|l| l.starts_with("BAD 7 checksum")),
        "{text}"
    );
    assert!(
        !dest.exists(),
        "a bundle that failed its check has no final name"
    );
    assert!(
        !Path::new(&stage).parent().unwrap().exists(),
        "its staging folder is removed"
    );
    // A bundle cut short: the stream ends inside the payload. Its header
    // announces the whole length, so the agent reads what it can and stops.
    let text = agent(&|tmp| {
        let whole = bundle(tmp, data, None);
        let mut f = format!("P 7 {} 0\n", whole.len()).into_bytes();
        f.extend_from_slice(&whole[..1800]);
        f
    });
    assert!(!text.lines().any(|l| l == "OK 7"), "{text}");
    assert!(!dest.exists(), "a truncated bundle has no final name");
    assert!(
        !Path::new(&stage).parent().unwrap().exists(),
        "its staging folder is removed"
    );

    // A good bundle, then another request on the same stream: the frames
    // stay in step, and the bundle's lists are cleared from the agent's
    // temporary folder.
    let text = agent(&|tmp| {
        let mut f = framed(&bundle(tmp, data, None), 0);
        f.extend_from_slice(b"Q 9 0\nN 10\nE 0\n");
        f
    });
    assert!(text.lines().any(|l| l == "OK 7"), "{text}");
    assert!(text.lines().any(|l| l == "L 9 0"), "{text}");
    assert!(text.lines().any(|l| l == "OK 10"), "{text}");
    assert!(text.lines().any(|l| l == "BYE"), "{text}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    std::fs::remove_file(&dest).unwrap();
    // The same bundle compressed goes through zstd and lands the same.
    let text = agent(&|tmp| {
        let packed = zstd::bulk::compress(&bundle(tmp, data, None), 1).unwrap();
        let mut f = framed(&packed, 1);
        f.extend_from_slice(b"E 0\n");
        f
    });
    assert!(text.lines().any(|l| l == "OK 7"), "{text}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    std::fs::remove_file(&dest).unwrap();
    // Not a tar at all: reported, and the channel ends rather than read on
    // out of step; nothing gets a final name.
    let text = agent(&|_| {
        let mut f = framed(&vec![b'x'; 10240], 0);
        f.extend_from_slice(b"E 0\n");
        f
    });
    assert!(text.lines().any(|l| l.starts_with("BAD 7 tar")), "{text}");
    assert!(!text.lines().any(|l| l == "BYE"), "{text}");
    assert!(!dest.exists());
    // A bundle whose files are all there but whose tar breaks off after
    // them: its staging folder is cleared away by the folders list.
    let text = agent(&|tmp| {
        let whole = bundle(tmp, data, None);
        let mut broken = whole[..4 * 512].to_vec();
        broken.resize(10240, b'x');
        let mut f = framed(&broken, 0);
        f.extend_from_slice(b"E 0\n");
        f
    });
    assert!(text.lines().any(|l| l.starts_with("BAD 7 tar")), "{text}");
    assert!(!dest.exists());
    assert!(
        !Path::new(&stage).parent().unwrap().exists(),
        "its staging folder is removed: {text}"
    );

    // A chunk of a large file is read straight from the stream too: the
    // next request is answered in step; a chunk that cannot be written ends
    // the channel.
    let big = dir.path().join("big.dat");
    let chunk = vec![b'c'; 300_000];
    let text = agent(&|_| {
        let mut f = format!("C 11 0 {} 0\n{}\n", chunk.len(), big.display()).into_bytes();
        f.extend_from_slice(&chunk);
        f.extend_from_slice(b"Q 12 0\nE 0\n");
        f
    });
    assert!(text.lines().any(|l| l == "OK 11"), "{text}");
    assert!(text.lines().any(|l| l == "L 12 0"), "{text}");
    assert!(text.lines().any(|l| l == "BYE"), "{text}");
    let part = format!("{}.offload-part.test-session", big.display());
    assert_eq!(std::fs::read(&part).unwrap(), chunk);
    assert!(!big.exists(), "a chunk alone never has the final name");
    let text = agent(&|_| {
        let mut f = format!("C 13 0 {} 0\n/proc/offload-no/x.dat\n", chunk.len()).into_bytes();
        f.extend_from_slice(&chunk);
        f.extend_from_slice(b"Q 14 0\nE 0\n");
        f
    });
    assert!(
        text.lines().any(|l| l.starts_with("BAD 13 write")),
        "{text}"
    );
    assert!(!text.lines().any(|l| l == "BYE"), "{text}");
}

#[test]
fn a_host_with_every_session_taken_is_waited_for() {
    let set = files(30, &[]);
    // Take fe3's three sessions for a few seconds.
    let sleepers = common::hold_sessions(
        (0..3).map(|_| {
            let mut ssh = Command::new("ssh");
            ssh.arg("-F")
                .arg(ssh_config())
                .args(["-o", "ProxyCommand=false", "fe3"]);
            ssh
        }),
        3,
    );
    let before = logins("fe3");
    let out = set
        .xfer_json("push", "fe3", ("src", "remote"))
        .output()
        .unwrap();
    for mut s in sleepers {
        let _ = s.wait();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report(&out)["complete"], true);
    set.same("src", "remote");
    assert_eq!(logins("fe3"), before);
}

/// Set a path's mtime with touch -d (folders too).
fn age(path: &Path, when: &str) {
    let s = Command::new("touch")
        .args(["-h", "-d", when])
        .arg(path)
        .status()
        .unwrap();
    assert!(s.success());
}

/// The sorted paths of a report's `swept_paths`.
fn swept_paths(r: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = r["swept_paths"]
        .as_array()
        .unwrap_or_else(|| panic!("no swept_paths: {r}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn the_next_push_and_pull_sweep_old_staging_and_keep_the_rest() {
    let set = files(5, &[]);
    let remote = set.dir.path().join("remote");
    let deep = remote.join("deep/er");
    std::fs::create_dir_all(&deep).unwrap();
    // What killed transfers left two days ago: a bundle's staging folder,
    // a chunked file's part, a pulled file's part; beside them a complete
    // file as old, and the staging of a transfer at work now.
    let old_dir = remote.join(".offload-part.dead1-4");
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::write(old_dir.join("a b.dat"), b"half").unwrap();
    let old_chunk = deep.join("big.fits.offload-part.dead1");
    std::fs::write(&old_chunk, b"chunk").unwrap();
    let old_part = remote.join("x.fits.offload-part");
    std::fs::write(&old_part, b"part").unwrap();
    let complete = remote.join("old.fits");
    std::fs::write(&complete, b"whole").unwrap();
    for p in [&old_dir, &old_chunk, &old_part, &complete] {
        age(p, "2 days ago");
    }
    let live_dir = remote.join(".offload-part.live2-1");
    std::fs::create_dir_all(&live_dir).unwrap();
    std::fs::write(live_dir.join("f"), b"now").unwrap();
    let live_chunk = deep.join("big.fits.offload-part.live2");
    std::fs::write(&live_chunk, b"now").unwrap();
    let out = set
        .xfer_json("push", "fe1,fe2", ("src", "remote"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r = report(&out);
    assert_eq!(r["complete"], true);
    assert_eq!(r["swept"], 3, "{r}");
    let mut want: Vec<String> = [&old_dir, &old_chunk, &old_part]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    want.sort();
    assert_eq!(swept_paths(&r), want);
    assert!(stderr.contains("swept 3 staging names"), "{stderr}");
    for p in [&old_dir, &old_chunk, &old_part] {
        assert!(!p.exists(), "{} is still there", p.display());
    }
    for p in [&complete, &live_dir, &live_chunk] {
        assert!(p.exists(), "{} was removed", p.display());
    }
    set.same("src", "remote");

    // A pull sweeps the local destination folders the same way.
    let back = set.dir.path().join("back");
    std::fs::create_dir_all(back.join("deep/er")).unwrap();
    let old_pulled = back.join("a b.dat.offload-part");
    let old_deep = back.join("deep/er/f00001.fits.offload-part");
    let fresh = back.join("deep/er/f00002.fits.offload-part.other");
    for p in [&old_pulled, &old_deep, &fresh] {
        std::fs::write(p, b"x").unwrap();
    }
    age(&old_pulled, "2 days ago");
    age(&old_deep, "25 hours ago");
    let r = set.transfer("pull", "fe3", ("remote", "back"), &[]);
    assert_eq!(r["swept"], 2, "{r}");
    let mut want = vec![
        old_pulled.display().to_string(),
        old_deep.display().to_string(),
    ];
    want.sort();
    assert_eq!(swept_paths(&r), want);
    assert!(fresh.exists());
    set.same("src", "back");

    // --sweep-after 0: nothing is swept.
    age(&live_chunk, "2 days ago");
    let r = set.transfer("push", "fe1", ("src", "remote"), &["--sweep-after", "0"]);
    assert_eq!(r["swept"], 0);
    assert!(live_chunk.exists());
    // A destination named like a staging file is refused: a sweep would
    // take it.
    let list = set.dir.path().join("staging-named.tsv");
    std::fs::write(
        &list,
        format!(
            "{}\t{}\n",
            set.path("src", "a b.dat").display(),
            remote.join("a b.dat.offload-part").display()
        ),
    )
    .unwrap();
    xfer(set.home.path())
        .args(["push", "--host", "fe1", "--list"])
        .arg(&list)
        .assert()
        .code(2)
        .stderr(contains("named like a transfer's staging file"));
}

#[test]
fn a_killed_transfers_leftovers_are_swept_by_the_next_one() {
    let set = files(0, &[160 << 20]);
    let remote = set.dir.path().join("remote");
    let mut cmd = set.std_xfer("push", "fe2", ("src", "remote"));
    cmd.args(["--chunk-mib", "1", "--channels", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Kill it once the large file's chunks are being written.
    let staging = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().contains(".offload-part"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let chunking = |dir: &Path| {
        staging(dir)
            .iter()
            .any(|p| p.to_string_lossy().contains("big0.fits.offload-part."))
    };
    while !chunking(&remote) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    let _ = child.wait();
    // Once the remote side has stopped writing.
    common::wait_until_still(&remote);
    let left = staging(&remote);
    assert!(!left.is_empty(), "the kill came after the end");
    assert!(!set.path("remote", "big0.fits").exists());
    // The next transfer into the folder, past the limit, takes them away.
    common::wait_until(10, 100, "the leftovers to be two seconds old", || {
        left.iter().all(|p| {
            std::fs::symlink_metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|a| a.as_secs() >= 2))
        })
    });
    let r = set.transfer("push", "fe2", ("src", "remote"), &["--sweep-after", "1"]);
    assert_eq!(r["complete"], true);
    assert_eq!(r["swept"], left.len() as u64, "{r} {left:?}");
    for p in &left {
        assert!(!p.exists(), "{} is still there", p.display());
    }
    assert!(staging(&remote).is_empty(), "{:?}", staging(&remote));
    set.same("src", "remote");
}
