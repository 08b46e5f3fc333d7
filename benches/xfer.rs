//! Benchmark: xfer against the tools operators would otherwise use, side by
//! side, every one through the same ControlMaster of the testbed's fe1.
//!
//!     scripts/testbed up && cargo bench --bench xfer [-- quick]
//!
//! Round trips: 0 ms (plain loopback), and 20 and 40 ms through a delay
//! relay (below; this kernel has no netem) placed between the master and
//! sshd. Data on tmpfs (/dev/shm) for transfer-only figures, and once on
//! disk (/var/tmp) end to end. Peers: scp per file (a 1,000-file sample,
//! extrapolated), `scp -r`, `sftp -b` (put -r), `rsync -a`, `tar | ssh tar`,
//! the same with xfer's checks done by hand (checksums on both sides, a
//! staging folder renamed into place when they agree), k parallel
//! `tar | ssh tar` streams, and the single-channel ceiling
//! (`ssh ... 'cat > /dev/null'` fed from a pipe). Both ends run on this
//! machine's 2 cores, so every tool's remote half competes with its local
//! half for CPU. xfer runs with its own choice of channels (2 on loopback,
//! 8 at 20 and 40 ms); xfer, the tar rows and the ceiling are the median of
//! `OFFLOAD_BENCH_REPS` (default 3) interleaved rounds, the rest one run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const STATE: &str = "/var/lib/offload-testbed/ssh";
const K: usize = 8;

/// A TCP relay that delays each direction by half the round trip, without
/// limiting throughput (what is read is queued and written when due).
fn relay(target: u16, rtt: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            client.set_nodelay(true).ok();
            server.set_nodelay(true).ok();
            for (from, to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
                let mut from = from;
                let mut to = to;
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 << 10];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx
                                    .send((Instant::now() + rtt / 2, buf[..n].to_vec()))
                                    .is_err()
                                {
                                    break;
                                }
                            }
                        }
                    }
                });
                std::thread::spawn(move || {
                    for (due, data) in rx {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if to.write_all(&data).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}

fn sh(script: &str) -> Duration {
    let file = std::env::temp_dir().join(format!("offload-bench-{}.sh", std::process::id()));
    std::fs::write(&file, script).unwrap();
    let t = Instant::now();
    let out = Command::new("bash")
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "failed: {script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn q(p: &Path) -> String {
    shlex::try_quote(&p.to_string_lossy()).unwrap().into_owned()
}

struct Bench {
    config: PathBuf,
    root: PathBuf,
}

struct Data {
    name: &'static str,
    dir: PathBuf,
    files: Vec<String>,
    bytes: u64,
}

fn make_data(root: &Path, name: &'static str, spec: &[(usize, usize)]) -> Data {
    let dir = root.join(name);
    let mut files = Vec::new();
    let mut bytes = 0;
    let mut seed = 1u64;
    if !dir.exists() {
        std::fs::create_dir_all(dir.join("d")).unwrap();
    }
    for &(count, size) in spec {
        for i in 0..count {
            let rel = format!("d/{size}-{i:05}.fits");
            let p = dir.join(&rel);
            if !p.exists() {
                let mut buf = vec![0u8; size];
                for chunk in buf.chunks_mut(8) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let b = seed.to_le_bytes();
                    chunk.copy_from_slice(&b[..chunk.len()]);
                }
                std::fs::write(&p, &buf).unwrap();
            }
            files.push(rel);
            bytes += size as u64;
        }
    }
    Data {
        name,
        dir,
        files,
        bytes,
    }
}

impl Bench {
    fn ssh(&self) -> String {
        format!("ssh -F {}", q(&self.config))
    }

    fn master(&self, host: &str) {
        let _ = Command::new("ssh")
            .arg("-F")
            .arg(&self.config)
            .args(["-O", "exit", host])
            .output();
        let s = Command::new("ssh")
            .arg("-F")
            .arg(&self.config)
            .args(["-M", "-f", "-N", "-o", "ControlPersist=yes", host])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(s.success(), "master for {host}");
    }

    fn dst(&self) -> PathBuf {
        self.root.join("dst")
    }

    fn clean(&self) {
        let _ = std::fs::remove_dir_all(self.dst());
        let _ = std::fs::remove_dir_all(self.root.join("back"));
    }

    /// A list file `NAME.WHICH`: each of the data's files under `base`.
    fn list(&self, d: &Data, which: &str, base: &Path) -> PathBuf {
        let path = self.root.join(format!("{}.{which}", d.name));
        let text: String = d
            .files
            .iter()
            .map(|f| format!("{}\n", base.join(f).display()))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn check(&self, d: &Data, at: &Path) {
        let n = walk_count(at);
        assert_eq!(n, d.files.len(), "{} files arrived at {}", n, at.display());
    }

    /// Seconds for each tool. xfer, the tar peers and the ceiling run in
    /// `reps()` interleaved rounds and give their median; the slow peers
    /// run once.
    fn run(&self, d: &Data, host: &str, full: bool) -> Vec<(String, f64)> {
        let ssh = self.ssh();
        let dst = self.dst();
        let src = &d.dir;
        let xfer = env!("CARGO_BIN_EXE_xfer");
        // Push: the sources to dst; pull: what is in dst back to back.
        let back = self.root.join("back");
        let from = self.list(d, "from", &d.dir);
        let to = self.list(d, "to", &dst);
        let rfrom = to.clone();
        let bto = self.list(d, "back", &back);
        // k streams, each a k-th of the files.
        let parts: Vec<String> = (0..K)
            .map(|i| {
                let list = self.root.join(format!("part{i}"));
                let names: String = d
                    .files
                    .iter()
                    .skip(i)
                    .step_by(K)
                    .map(|f| format!("{f}\n"))
                    .collect();
                std::fs::write(&list, names).unwrap();
                format!(
                    "tar -C {} -cf - -T {} | {ssh} {host} 'mkdir -p {} && tar -C {} -xf -' &",
                    q(src),
                    q(&list),
                    q(&dst),
                    q(&dst)
                )
            })
            .collect();
        let sums = |side: &str| q(&self.root.join(format!("{side}.sums")));
        // The same promises as xfer, by hand: checksums of the sources, the
        // tar unpacked into a staging folder, checksums there compared, and
        // the folder renamed into place only when they agree.
        let checked = format!(
            "cd {src} && find d -type f -print0 | sort -z | xargs -0 cksum > {l} && \
             tar -cf - d | {ssh} {host} 'mkdir -p {stage} && tar -C {stage} -xf - && cd {stage} && find d -type f -print0 | sort -z | xargs -0 cksum' > {r} && \
             cmp -s {l} {r} && {ssh} {host} 'mv {stage}/d {dst}/d && rmdir {stage}'",
            src = q(src),
            l = sums("local"),
            r = sums("remote"),
            stage = q(&dst.join(".stage")),
            dst = q(&dst),
        );
        let fast: Vec<(String, String, bool)> = vec![
            (
                "xfer push".into(),
                format!(
                    "OFFLOAD_SSH_CONFIG={} {xfer} push -q --host {host} --from {} --to {}",
                    q(&self.config),
                    q(&from),
                    q(&to)
                ),
                true,
            ),
            (
                "xfer pull".into(),
                format!(
                    "OFFLOAD_SSH_CONFIG={} {xfer} pull -q --host {host} --from {} --to {}",
                    q(&self.config),
                    q(&rfrom),
                    q(&bto)
                ),
                true,
            ),
            (
                "tar | ssh tar".into(),
                format!(
                    "tar -C {} -cf - d | {ssh} {host} 'mkdir -p {} && tar -C {} -xf -'",
                    q(src),
                    q(&dst),
                    q(&dst)
                ),
                true,
            ),
            ("tar | ssh tar, checked".into(), checked, true),
            (
                format!("{K} x tar | ssh tar"),
                format!("{} wait", parts.join(" ")),
                true,
            ),
            (
                "ceiling: 1 channel".into(),
                format!("tar -C {} -cf - d | {ssh} {host} 'cat > /dev/null'", q(src)),
                false,
            ),
        ];
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); fast.len()];
        for _ in 0..reps() {
            for (i, (name, script, check)) in fast.iter().enumerate() {
                // The pull fetches what the push just placed.
                if name != "xfer pull" {
                    self.clean();
                }
                let t = sh(script).as_secs_f64();
                if *check {
                    let at = if name == "xfer pull" { &back } else { &dst };
                    self.check(d, at);
                }
                times[i].push(t);
            }
        }
        let mut out: Vec<(String, f64)> = fast
            .iter()
            .zip(times)
            .map(|((name, _, _), mut t)| {
                t.sort_by(f64::total_cmp);
                (name.clone(), t[t.len() / 2])
            })
            .collect();
        let mut time = |name: &str, script: &str, check: bool| {
            self.clean();
            let t = sh(script).as_secs_f64();
            if check {
                self.check(d, &dst);
            }
            out.push((name.to_string(), t));
        };
        if full {
            time(
                "rsync -a",
                &format!(
                    "rsync -a -e {} {}/ {host}:{}/",
                    q(Path::new(&ssh)),
                    q(src),
                    q(&dst)
                ),
                true,
            );
            time(
                "scp -r",
                &format!(
                    "{ssh} {host} 'mkdir -p {}' && scp -q -r -F {} {}/d {host}:{}/",
                    q(&dst),
                    q(&self.config),
                    q(src),
                    q(&dst)
                ),
                true,
            );
            let batch = self.root.join("sftp.batch");
            std::fs::write(
                &batch,
                format!(
                    "-mkdir {}\nput -r {}/d {}/d\n",
                    dst.display(),
                    src.display(),
                    dst.display()
                ),
            )
            .unwrap();
            time(
                "sftp -b put -r",
                &format!(
                    "sftp -q -F {} -b {} {host} > /dev/null",
                    q(&self.config),
                    q(&batch)
                ),
                true,
            );
            if d.files.len() >= 1000 {
                // scp per file: a 1,000-file sample, extrapolated.
                let sample: Vec<&String> = d.files.iter().take(1000).collect();
                self.clean();
                sh(&format!("{ssh} {host} 'mkdir -p {}/d'", q(&dst)));
                let script: String = sample
                    .iter()
                    .map(|f| {
                        format!(
                            "scp -q -F {} {} {host}:{}\n",
                            q(&self.config),
                            q(&src.join(f)),
                            q(&dst.join(f))
                        )
                    })
                    .collect();
                let t = sh(&script).as_secs_f64() * d.files.len() as f64 / 1000.0;
                out.push(("scp per file (extrapolated)".into(), t));
            }
        }
        out
    }
}

/// Rounds of the fast rows: `OFFLOAD_BENCH_REPS`, 3 unless set.
fn reps() -> usize {
    std::env::var("OFFLOAD_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

fn walk_count(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map(|e| {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk_count(&p)
        } else {
            1
        }
    })
    .sum()
}

fn report(title: &str, d: &Data, rtt_ms: u64, rows: &[(String, f64)]) {
    let mb = d.bytes as f64 / 1e6;
    let get = |n: &str| rows.iter().find(|(k, _)| k == n).map(|(_, t)| mb / t);
    println!(
        "\n{title}: {} ({} files, {:.0} MB), round trip {rtt_ms} ms",
        d.name,
        d.files.len(),
        mb
    );
    for (name, t) in rows {
        println!("  {:<30} {:>8.2} s {:>9.1} MB/s", name, t, mb / t);
    }
    let push = get("xfer push").unwrap();
    let pull = get("xfer pull").unwrap();
    let tar = get("tar | ssh tar").unwrap();
    let checked = get("tar | ssh tar, checked").unwrap();
    let ceiling = get("ceiling: 1 channel").unwrap();
    println!(
        "  ratios: push/tar {:.2}x, pull/tar {:.2}x, push/ceiling {:.2}x, pull/ceiling {:.2}x",
        push / tar,
        pull / tar,
        push / ceiling,
        pull / ceiling
    );
    println!(
        "  against tar with the same checks by hand: push {:.2}x, pull {:.2}x",
        push / checked,
        pull / checked
    );
    if let Some(scp) = get("scp per file (extrapolated)") {
        println!("  push/scp-per-file {:.0}x", push / scp);
    }
    if rtt_ms > 0 {
        let window = K as f64 * 2.0 * 1048576.0 / (rtt_ms as f64 / 1000.0) / 1e6;
        let single = ["tar | ssh tar", "rsync -a", "scp -r", "sftp -b put -r"]
            .iter()
            .filter_map(|n| get(n))
            .fold(0.0, f64::max);
        println!(
            "  k x 2 MiB/RTT = {window:.0} MB/s; push/best single stream {:.2}x, pull/best single stream {:.2}x",
            push / single,
            pull / single
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let root = PathBuf::from("/dev/shm/offload-bench");
    std::fs::create_dir_all(&root).unwrap();
    let r20 = relay(2201, Duration::from_millis(20));
    let r40 = relay(2201, Duration::from_millis(40));
    let config = root.join("ssh_config");
    let mut text = String::new();
    for (host, port) in [("bench0", 2201), ("bench20", r20), ("bench40", r40)] {
        text.push_str(&format!(
            "Host {host}\n  HostName 127.0.0.1\n  HostKeyAlias [127.0.0.1]:2201\n  Port {port}\n  User root\n  IdentityFile {STATE}/id_ed25519\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {STATE}/known_hosts\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ControlPath {}/cm-%n\n",
            root.display()
        ));
    }
    std::fs::write(&config, text).unwrap();
    let b = Bench {
        config,
        root: root.clone(),
    };
    for h in ["bench0", "bench20", "bench40"] {
        b.master(h);
    }
    let small = make_data(&root, "37000x32KiB", &[(37_000, 32 << 10)]);
    let mid = make_data(&root, "4000x256KiB", &[(4_000, 256 << 10)]);
    let big = make_data(&root, "10x100MiB", &[(10, 100 << 20)]);
    let sets: Vec<&Data> = if quick {
        vec![&small, &big]
    } else {
        vec![&small, &mid, &big]
    };
    for d in &sets {
        let rows = b.run(d, "bench0", true);
        report("tmpfs", d, 0, &rows);
    }
    if !quick {
        let mix = make_data(
            &root,
            "mix",
            &[
                (37_000, 32 << 10),
                (10, 10 << 20),
                (10, 30 << 20),
                (10, 50 << 20),
                (10, 75 << 20),
                (10, 100 << 20),
            ],
        );
        let rows = b.run(&mix, "bench0", false);
        report("tmpfs", &mix, 0, &rows);
        drop(mix);
        let _ = std::fs::remove_dir_all(root.join("mix"));
    }
    for (host, rtt) in [("bench20", 20), ("bench40", 40)] {
        for d in [&small, &big] {
            let rows = b.run(d, host, false);
            report("tmpfs", d, rtt, &rows);
        }
    }
    // End to end on disk, once.
    let disk = PathBuf::from("/var/tmp/offload-bench");
    let db = Bench {
        config: b.config.clone(),
        root: disk.clone(),
    };
    std::fs::create_dir_all(&disk).unwrap();
    let dsmall = make_data(&disk, "37000x32KiB", &[(37_000, 32 << 10)]);
    let rows = db.run(&dsmall, "bench0", false);
    report("disk", &dsmall, 0, &rows);
    for h in ["bench0", "bench20", "bench40"] {
        let _ = Command::new("ssh")
            .arg("-F")
            .arg(&b.config)
            .args(["-O", "exit", h])
            .output();
    }
    let _ = std::fs::remove_dir_all(&disk);
}
