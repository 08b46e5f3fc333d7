//! The `local` site: this machine stands in for the remote centre. The
//! batch script runs here in a session of its own (job id `local:PID`),
//! files are copied under a temporary name renamed into place.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{JobState, Listing, Site};
use crate::printer::Printer;
use crate::ssh::Host;
use crate::transfer::{cksum_file, Direction, Pair, Report};

pub struct LocalSite;

impl Site for LocalSite {
    fn place(&self) -> String {
        "here".to_string()
    }

    fn hosts(&self) -> &[Host] {
        &[]
    }

    fn check(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// A local job is recorded when it starts: none is ever left to find.
    fn find_job(&self, _name: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    fn submit(&self, remote_run: &str, _name: &str) -> anyhow::Result<String> {
        submit(remote_run)
    }

    fn state(&self, job_id: &str) -> anyhow::Result<JobState> {
        Ok(state(job_id))
    }

    fn cancel(&self, job_id: &str) -> anyhow::Result<()> {
        cancel(job_id)
    }

    /// No queue: local jobs start at once.
    fn queue_counts(&self, _prefix: &str) -> anyhow::Result<(u64, u64)> {
        Ok((0, 0))
    }

    fn free_bytes(&self, path: &str) -> anyhow::Result<u64> {
        free_bytes(path)
    }

    fn quota_bytes(&self, command: &str) -> anyhow::Result<u64> {
        let out = Command::new("sh")
            .args(["-c", command])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run the quota command `{command}`"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .next()
            .filter(|_| out.status.success())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the quota command `{command}` printed no number of bytes: {text:?}"
                )
            })
    }

    fn listing(&self, remote_run: &str) -> anyhow::Result<Listing> {
        let dir = Path::new(remote_run);
        let mut text = String::new();
        if let Ok(rd) = std::fs::read_dir(dir.join("results")) {
            for e in rd.filter_map(|e| e.ok()) {
                text.push_str(&e.file_name().to_string_lossy());
                text.push('\n');
            }
        }
        if let Ok(summary) = std::fs::read_to_string(dir.join("job-summary.txt")) {
            text.push_str("SUMMARY\n");
            for l in summary.lines().filter(|l| l.starts_with("inputs_missing")) {
                text.push_str(l);
                text.push('\n');
            }
        }
        Ok(Listing::parse(&text))
    }

    fn regular_files(&self, paths: &[&str]) -> anyhow::Result<HashSet<String>> {
        Ok(paths
            .iter()
            .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()))
            .map(|p| p.to_string())
            .collect())
    }

    fn remove(&self, folder: &str) -> anyhow::Result<()> {
        if Path::new(folder).exists() {
            std::fs::remove_dir_all(folder).with_context(|| format!("cannot remove {folder}"))?;
        }
        Ok(())
    }

    fn push(&self, pairs: Vec<Pair>, _printer: &Printer) -> anyhow::Result<Report> {
        copy_report(&pairs, Direction::Push)
    }

    /// A copy here that fails for this machine's reason (full, read-only,
    /// no permission) is that, not the files' (exit 6).
    fn pull(&self, pairs: Vec<Pair>, _printer: &Printer) -> anyhow::Result<Report> {
        copy_report(&pairs, Direction::Pull).map_err(|e| {
            if crate::transfer::local::errno_in(&e).is_some() {
                crate::exit::with_status(
                    e.context(
                        "this machine's fault, nothing was lost: make room there, or let this user write there",
                    ),
                    crate::exit::ExitStatus::Local,
                )
            } else {
                e
            }
        })
    }

    fn sweep_staging(&self, root: &str, older_than: Duration) -> anyhow::Result<Vec<String>> {
        Ok(crate::transfer::sweep::local_tree(
            Path::new(root),
            older_than,
        ))
    }
}

/// Copy, reported as a transfer is (bytes: all the listed files').
fn copy_report(pairs: &[Pair], direction: Direction) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    let bytes: u64 = pairs
        .iter()
        .filter_map(|p| std::fs::metadata(&p.src).ok())
        .map(|m| m.len())
        .sum();
    let (copied, present) = copy(pairs)?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(Report {
        direction,
        complete: true,
        files: pairs.len(),
        transferred: copied,
        skipped: present,
        failed: 0,
        bytes,
        seconds,
        mb_per_s: if seconds > 0.0 {
            bytes as f64 / 1e6 / seconds
        } else {
            0.0
        },
        hosts: Vec::new(),
        channels: 0,
        retries: 0,
        refusals: 0,
        compressed_frames: 0,
        failures: Vec::new(),
        hosts_lost: Vec::new(),
        round_trip_ms: Default::default(),
        swept: 0,
        swept_paths: Vec::new(),
        local_fault: None,
    })
}

/// Free bytes where `path` lives (its nearest existing parent).
fn free_bytes(path: &str) -> anyhow::Result<u64> {
    let mut p = Path::new(path);
    while !p.exists() {
        p = p.parent().unwrap_or(Path::new("/"));
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .context("a path with a NUL byte")?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid place to write.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot read the free space of {}", p.display()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Start `job.sh` in the run's folder in a session of its own; the job
/// id is `local:PID`.
fn submit(remote_run: &str) -> anyhow::Result<String> {
    let dir = Path::new(remote_run);
    for old in ["results", "job-summary.txt"] {
        let p = dir.join(old);
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else if p.exists() {
            std::fs::remove_file(&p)?;
        }
    }
    let log = std::fs::File::create(dir.join("job-local.out"))
        .with_context(|| format!("cannot write in {remote_run}"))?;
    let child = Command::new("setsid")
        .args(["bash", "job.sh"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the batch script with setsid bash")?;
    Ok(format!("local:{}", child.id()))
}

fn state(job_id: &str) -> JobState {
    let pid = job_id.strip_prefix("local:").unwrap_or(job_id);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let alive = String::from_utf8_lossy(&cmdline).contains("job.sh")
        && pid.parse().is_ok_and(crate::host::pid_alive);
    if alive {
        JobState::Active("RUNNING".into())
    } else {
        JobState::Ended(None)
    }
}

/// Stop a local job: its whole session (it was started with setsid).
fn cancel(job_id: &str) -> anyhow::Result<()> {
    let pid = job_id.strip_prefix("local:").unwrap_or(job_id);
    if !pid.chars().all(|c| c.is_ascii_digit()) || pid.is_empty() {
        return Err(anyhow::anyhow!("'{job_id}' is not a local job id"));
    }
    if matches!(state(job_id), JobState::Ended(_)) {
        return Ok(());
    }
    let st = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill")?;
    if !st.success() && matches!(state(job_id), JobState::Active(_)) {
        return Err(anyhow::anyhow!("could not stop local job {job_id}"));
    }
    Ok(())
}

/// Copy each source to its destination when missing or different,
/// under a temporary name renamed into place.
fn copy(pairs: &[Pair]) -> anyhow::Result<(usize, usize)> {
    let (mut copied, mut present) = (0, 0);
    for p in pairs {
        let src = Path::new(&p.src);
        let dst = Path::new(&p.dst);
        let same = match (std::fs::metadata(src), std::fs::metadata(dst)) {
            (Ok(a), Ok(b)) if a.len() == b.len() => cksum_file(src).ok() == cksum_file(dst).ok(),
            _ => false,
        };
        if same {
            present += 1;
            continue;
        }
        if let Some(d) = dst.parent() {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create folder {}", d.display()))?;
        }
        let part = format!("{}{}", p.dst, crate::transfer::PART);
        std::fs::copy(src, &part).with_context(|| format!("cannot copy {} to {part}", p.src))?;
        std::fs::rename(&part, dst).with_context(|| format!("cannot rename into {}", p.dst))?;
        copied += 1;
    }
    Ok((copied, present))
}
