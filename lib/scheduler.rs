//! The remote batch scheduler, asked through a front end's master: find a
//! job by name, submit, ask a job's state, count queued jobs, free space.
//! Slurm's commands: squeue, sbatch, sacct, and df for the space.

use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::ssh::Host;

const LIMIT: Duration = Duration::from_secs(120);

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Queued or running (Slurm's state name).
    Active(String),
    /// Ended; Slurm's final state when accounting knows it.
    Ended(Option<String>),
}

pub struct Slurm<'a> {
    pub host: &'a Host,
}

fn q(s: &str) -> String {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

impl Slurm<'_> {
    fn run(&self, script: &str) -> anyhow::Result<String> {
        let out = self.host.run(script, b"", LIMIT)?;
        if out.status != Some(0) {
            return Err(anyhow!(
                "`{script}` failed on {}: {}",
                self.host.alias,
                out.stderr.trim().replace('\n', "; ")
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The id of a queued or running job with this name, if any.
    pub fn find_job(&self, name: &str) -> anyhow::Result<Option<String>> {
        let out = self.run(&format!("squeue -h -n {} -o %i", q(name)))?;
        Ok(out.split_whitespace().next().map(str::to_string))
    }

    /// Submit `job.sh` in the run's folder (clearing what an earlier attempt
    /// left); the job id.
    pub fn submit(&self, remote_run: &str, name: &str) -> anyhow::Result<String> {
        let out = self
            .run(&format!(
                "cd {} && rm -rf -- results job-summary.txt && sbatch --parsable --job-name={} job.sh",
                q(remote_run),
                q(name)
            ))
            .context("sbatch refused the job")?;
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(anyhow!("sbatch printed no job id: {out:?}"));
        }
        Ok(id)
    }

    pub fn state(&self, job_id: &str) -> anyhow::Result<JobState> {
        let out = self
            .host
            .run(&format!("squeue -h -j {} -o %T", q(job_id)), b"", LIMIT)?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status == Some(0) {
            if let Some(s) = text.split_whitespace().next() {
                if !matches!(
                    s,
                    "COMPLETED"
                        | "FAILED"
                        | "CANCELLED"
                        | "TIMEOUT"
                        | "NODE_FAIL"
                        | "PREEMPTED"
                        | "OUT_OF_MEMORY"
                        | "BOOT_FAIL"
                        | "DEADLINE"
                ) {
                    return Ok(JobState::Active(s.to_string()));
                }
                return Ok(JobState::Ended(Some(s.to_string())));
            }
        }
        // Gone from the queue: accounting, where the site keeps it.
        let acct = self.host.run(
            &format!("sacct -n -X -P -j {} -o State", q(job_id)),
            b"",
            LIMIT,
        )?;
        let state = (acct.status == Some(0))
            .then(|| {
                String::from_utf8_lossy(&acct.stdout)
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            })
            .flatten();
        Ok(JobState::Ended(state))
    }

    /// Cancel a job (`scancel`). A job that has already ended is not an
    /// error: there is nothing left to cancel.
    pub fn cancel(&self, job_id: &str) -> anyhow::Result<()> {
        let out = self
            .host
            .run(&format!("scancel {}", q(job_id)), b"", LIMIT)?;
        let err = out.stderr.trim();
        let gone =
            err.contains("already completing or completed") || err.contains("Invalid job id");
        if out.status == Some(0) || gone {
            return Ok(());
        }
        Err(anyhow!(
            "scancel {job_id} failed on {}: {}",
            self.host.alias,
            err.replace('\n', "; ")
        ))
    }

    /// (pending, running) jobs of offload (names `PREFIX-r...`) in the queue.
    pub fn queue_counts(&self, prefix: &str) -> anyhow::Result<(u64, u64)> {
        let mine = format!("{prefix}-r");
        let out = self.run("squeue -h -o '%j %t'")?;
        let mut pending = 0;
        let mut running = 0;
        for l in out.lines() {
            let mut f = l.split_whitespace();
            if let (Some(name), Some(st)) = (f.next(), f.next()) {
                if name.starts_with(&mine) {
                    match st {
                        "PD" => pending += 1,
                        "R" | "CG" | "CF" => running += 1,
                        _ => {}
                    }
                }
            }
        }
        Ok((pending, running))
    }

    /// Bytes the account may still write, from the site's quota command.
    pub fn quota_bytes(&self, command: &str) -> anyhow::Result<u64> {
        let out = self.run(command)?;
        out.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                anyhow!("the quota command `{command}` printed no number of bytes: {out:?}")
            })
    }

    /// Free bytes where `path` lives (its nearest existing parent).
    pub fn free_bytes(&self, path: &str) -> anyhow::Result<u64> {
        let out = self.run(&format!(
            "p={}; while [ ! -e \"$p\" ]; do p=$(dirname -- \"$p\"); done; df -P -B1 -- \"$p\" | tail -n 1",
            q(path)
        ))?;
        out.split_whitespace()
            .nth(3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("cannot read free space from df: {out:?}"))
    }
}

/// The `local` scheduler: the batch script runs on this machine, detached.
pub mod local {
    use std::path::Path;
    use std::process::{Command, Stdio};

    use anyhow::Context;

    use super::JobState;
    use crate::transfer::{cksum_file, Pair};

    /// Start `job.sh` in the run's folder in a session of its own; the job
    /// id is `local:PID`.
    pub fn submit(remote_run: &str) -> anyhow::Result<String> {
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

    pub fn state(job_id: &str) -> JobState {
        let pid = job_id.strip_prefix("local:").unwrap_or(job_id);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let alive = String::from_utf8_lossy(&cmdline).contains("job.sh")
            && pid.parse().is_ok_and(crate::runs::pid_alive);
        if alive {
            JobState::Active("RUNNING".into())
        } else {
            JobState::Ended(None)
        }
    }

    /// Stop a local job: its whole session (it was started with setsid).
    pub fn cancel(job_id: &str) -> anyhow::Result<()> {
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
    pub fn copy(pairs: &[Pair]) -> anyhow::Result<(usize, usize)> {
        let (mut copied, mut present) = (0, 0);
        for p in pairs {
            let src = Path::new(&p.src);
            let dst = Path::new(&p.dst);
            let same = match (std::fs::metadata(src), std::fs::metadata(dst)) {
                (Ok(a), Ok(b)) if a.len() == b.len() => {
                    cksum_file(src).ok() == cksum_file(dst).ok()
                }
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
            std::fs::copy(src, &part)
                .with_context(|| format!("cannot copy {} to {part}", p.src))?;
            std::fs::rename(&part, dst).with_context(|| format!("cannot rename into {}", p.dst))?;
            copied += 1;
        }
        Ok((copied, present))
    }
}
