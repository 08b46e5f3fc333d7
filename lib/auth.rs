//! The operators' masters: one ControlMaster per front end, opened by a
//! person with the key card and cut by the site after a fixed lifetime
//! (12 hours by default, `master_lifetime_hours` of the target). A
//! master's start is its control socket's modification time: ssh creates
//! the socket when the master starts and never touches it again.

use std::time::SystemTime;

use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;

use crate::config::Config;
use crate::ssh::Host;
use crate::target::{SchedulerKind, Target};

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
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    chrono::DateTime::from_timestamp(secs as i64, 0).map(|d| d.naive_utc())
}

/// Probe one host's master.
pub fn probe(target: &Target, host: &Host, now: NaiveDateTime) -> Master {
    let lifetime = TimeDelta::seconds((target.config.master_lifetime_hours * 3600.0) as i64);
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
                out.push(unresolved(name, "-", &e));
                continue;
            }
        };
        if target.config.scheduler == SchedulerKind::Local {
            continue;
        }
        match crate::exec::target_hosts(&target) {
            Ok(hosts) => out.extend(hosts.iter().map(|h| probe(&target, h, now))),
            Err(e) => out.push(unresolved(name, "-", &e)),
        }
    }
    out
}

fn unresolved(target: &str, host: &str, e: &anyhow::Error) -> Master {
    Master {
        target: target.to_string(),
        host: host.to_string(),
        socket: String::new(),
        alive: false,
        pid: None,
        started: None,
        expires: None,
        seconds_left: None,
        problem: Some(crate::exit::one_line(e)),
    }
}

/// "3h 05m", "12m", "-1h 10m" (overdue).
pub fn human_duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{sign}{d}d {h:02}h")
    } else if h > 0 {
        format!("{sign}{h}h {m:02}m")
    } else if m > 0 {
        format!("{sign}{m}m")
    } else {
        format!("{sign}{s}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_well() {
        use super::human_duration as h;
        assert_eq!(h(42), "42s");
        assert_eq!(h(12 * 60), "12m");
        assert_eq!(h(3 * 3600 + 5 * 60), "3h 05m");
        assert_eq!(h(-(3600 + 600)), "-1h 10m");
        assert_eq!(h(2 * 86_400 + 3600), "2d 01h");
    }
}
