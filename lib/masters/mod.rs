//! The operators' masters: one ControlMaster per front end, opened by a
//! person with the key card and cut by the site after a fixed lifetime
//! (12 hours by default, `master_lifetime_hours` of the target). A
//! master's start is its control socket's modification time: ssh creates
//! the socket when the master starts and never touches it again.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;

use crate::config::Config;
use crate::exit;
use crate::ssh::{Host, SshOptions};
use crate::target::Target;

mod diagnose;
mod rates;

pub use diagnose::{diagnose, Hop};
pub use rates::{forecast, hosts_key, measured_rate, record_rate};

/// What is known of one front end's master.
#[derive(Debug, Clone, Serialize)]
pub struct Master {
    pub target: String,
    pub host: String,
    pub socket: String,
    pub alive: bool,
    pub pid: Option<u32>,
    /// When the master started (UTC).
    pub started: Option<NaiveDateTime>,
    /// Started plus the site's lifetime.
    pub expires: Option<NaiveDateTime>,
    /// Seconds from now until the expected expiry (negative: overdue).
    pub seconds_left: Option<i64>,
    /// Why it is not usable, when it is not.
    pub problem: Option<String>,
}

fn mtime(path: &std::path::Path) -> Option<NaiveDateTime> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    // To the microsecond, as the database keeps times.
    chrono::DateTime::from_timestamp(d.as_secs() as i64, d.subsec_micros() * 1000)
        .map(|d| d.naive_utc())
}

/// The site's connection lifetime as a duration.
fn lifetime(hours: f64) -> TimeDelta {
    TimeDelta::seconds((hours * 3600.0) as i64)
}

/// Probe one host's master.
pub fn probe(target: &Target, host: &Host, now: NaiveDateTime) -> Master {
    let lifetime = lifetime(target.config.master_lifetime_hours);
    let (alive, pid, problem) = match host.master_pid() {
        Ok(pid) => (true, Some(pid), None),
        Err(e) => (false, None, Some(e)),
    };
    let started = if alive { mtime(&host.socket) } else { None };
    let expires = started.map(|s| s + lifetime);
    Master {
        target: target.name.clone(),
        host: host.alias.clone(),
        socket: host.socket.display().to_string(),
        alive,
        pid,
        started,
        expires,
        seconds_left: expires.map(|e| (e - now).num_seconds()),
        problem,
    }
}

/// Every master the configuration's remote targets use, in order. A target
/// whose hosts cannot be resolved gives one entry naming the problem.
pub fn all_masters(cfg: &Config, now: NaiveDateTime) -> Vec<Master> {
    let mut out = Vec::new();
    for name in cfg.targets.keys() {
        let target = match cfg.target(name) {
            Ok(t) => t,
            Err(e) => {
                out.push(unresolved(name, &e));
                continue;
            }
        };
        if !target.has_masters() {
            continue;
        }
        match front_ends(cfg, Some(name), &[]) {
            Ok(fes) => out.extend(fes.iter().map(|fe| probe(&fe.target, &fe.host, now))),
            Err(e) => out.push(unresolved(name, &e)),
        }
    }
    out
}

/// A target whose hosts could not be worked out (host "-").
fn unresolved(target: &str, e: &anyhow::Error) -> Master {
    Master {
        target: target.to_string(),
        host: "-".to_string(),
        socket: String::new(),
        alive: false,
        pid: None,
        started: None,
        expires: None,
        seconds_left: None,
        problem: Some(crate::exit::one_line(e)),
    }
}

/// A target's front end with how to reach it.
pub struct FrontEnd {
    pub target: Target,
    pub ssh: SshOptions,
    pub host: Host,
}

/// The front ends of the configuration's remote targets: all, those of
/// `target`, or those named in `hosts`.
pub fn front_ends(
    cfg: &Config,
    target: Option<&str>,
    hosts: &[String],
) -> anyhow::Result<Vec<FrontEnd>> {
    let names: Vec<String> = match target {
        Some(t) => vec![t.to_string()],
        None => cfg.targets.keys().cloned().collect(),
    };
    let mut out = Vec::new();
    for name in names {
        let t = cfg.target(&name)?;
        if !t.has_masters() {
            continue;
        }
        let ssh = t.ssh_options();
        for alias in &t.config.hosts {
            if !hosts.is_empty() && !hosts.contains(alias) {
                continue;
            }
            out.push(FrontEnd {
                host: ssh.host(alias)?,
                ssh: ssh.clone(),
                target: t.clone(),
            });
        }
    }
    for h in hosts {
        if !out.iter().any(|f| &f.host.alias == h) {
            return Err(exit::usage(format!(
                "host '{h}' is in no remote target of the configuration"
            )));
        }
    }
    if out.is_empty() {
        return Err(exit::usage(
            "no front ends: the configuration has no target with hosts (scheduler = \"slurm\")",
        ));
    }
    Ok(out)
}

/// Open the master to a front end: `ssh -M -f -N HOST`, interactive (the
/// person types the key-card password on the terminal), then detached. A
/// stale control socket is removed first. Returns the master's pid.
pub fn start(fe: &FrontEnd) -> anyhow::Result<u32> {
    let host = &fe.host;
    if let Ok(pid) = host.master_pid() {
        return Ok(pid);
    }
    if host.socket.exists() {
        std::fs::remove_file(&host.socket).with_context(|| {
            format!(
                "cannot remove the stale control socket {}",
                host.socket.display()
            )
        })?;
    }
    if let Some(dir) = host.socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    // The master outlives this command: it must not hold our stdout or
    // stderr. Prompts go to the terminal; ssh's complaints to a file.
    let errors = tempfile::NamedTempFile::new().context("cannot make a temporary file")?;
    let mut c: Command = fe.ssh.ssh_command();
    c.args([
        "-M",
        "-f",
        "-N",
        "-o",
        "BatchMode=no",
        "-o",
        "ControlPersist=no",
    ])
    .arg("-o")
    .arg(format!("ControlPath={}", host.socket.display()))
    .arg(&host.alias)
    .stdin(Stdio::inherit())
    .stdout(Stdio::null())
    .stderr(errors.reopen()?);
    let status = c.status().context("cannot run ssh")?;
    let mut said = String::new();
    let _ = errors.reopen()?.read_to_string(&mut said);
    let said = said.trim().replace('\n', "; ");
    if !status.success() {
        return Err(exit::auth(format!(
            "ssh -M to {} failed ({}): {said}",
            host.alias,
            status
                .code()
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| "killed".into())
        )));
    }
    // ssh -f returns once authenticated; the socket follows at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match host.master_pid() {
            Ok(pid) => return Ok(pid),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(exit::auth(format!(
                    "the master to {} did not come up: {e} {said}",
                    host.alias
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Close the master to a front end (`ssh -O exit`); a stale socket is
/// removed. True when there was something to stop.
pub fn stop(host: &Host) -> anyhow::Result<bool> {
    match host.master_pid() {
        Ok(_) => {
            host.exit_master()
                .map_err(|e| anyhow::anyhow!("ssh -O exit to {} failed: {e}", host.alias))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while host.socket.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(true)
        }
        Err(_) if host.socket.exists() => {
            std::fs::remove_file(&host.socket).with_context(|| {
                format!(
                    "cannot remove the stale control socket {}",
                    host.socket.display()
                )
            })?;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}
