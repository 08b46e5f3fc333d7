//! Remote targets (sites) and path translation.
//!
//! ```toml
//! [targets.lanl]
//! scheduler = "slurm"              # how jobs are run there
//! hosts = ["lanl-fe1", "lanl-fe2"] # ssh Host aliases of the front ends
//! remote_root = "/scratch/ipp/offload"   # runs' folders go under it
//! partition = "standard"
//! account = "ipp"
//! cores_per_node = 24
//! fill_factor = 0.8
//! max_nodes = 1000
//! max_walltime_hours = 12
//! multiprog_max_bytes = 60000      # 536870912 on Slurm >= 25.11
//! sweep_after_hours = 24           # staging names older than this are swept
//! [targets.lanl.vars]              # values for @NAME@ in recipes
//! BIN = "/usr/projects/ipp/bin"
//!
//! # Ordered path rules: the first that matches a path as the pipeline
//! # writes it gives its local form (default: the path itself) and its
//! # remote form.
//! [[targets.lanl.paths]]
//! pattern = '^neb://[^/]+/(.*)$'
//! local = '/data/neb/$1'
//! remote = '/scratch/ipp/neb/$1'
//! [[targets.lanl.paths]]
//! prefix = "/data/"
//! remote = "/scratch/ipp/data/"
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

use crate::exit;
use crate::ssh::{Host, SshOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// A Slurm cluster behind front ends reached over ssh.
    Slurm,
    /// PBS or Torque (qsub, qstat, qdel; `#PBS` directives).
    Pbs,
    /// Grid Engine (qsub, qstat, qacct, qdel; `#$` directives, a parallel
    /// environment).
    Sge,
    /// Moab (msub, checkjob, showq, mjobctl; `#MSUB` directives), with
    /// srun inside the job.
    Moab,
    /// This machine: no ssh, no Slurm; the batch script runs here and its
    /// ranks run side by side (for trying offload out, and for tests).
    Local,
}

impl SchedulerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::Slurm => "slurm",
            SchedulerKind::Pbs => "pbs",
            SchedulerKind::Sge => "sge",
            SchedulerKind::Moab => "moab",
            SchedulerKind::Local => "local",
        }
    }
}

/// How the ranks start inside the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// `srun --multi-prog` (Slurm, Moab over Slurm).
    Srun,
    /// Local processes on the job's (one) node, `nproc` at a time.
    Local,
    /// `pbsdsh -h HOST` for each rank, from `$PBS_NODEFILE`.
    Pbsdsh,
    /// `qrsh -inherit HOST` for each rank, from `$PE_HOSTFILE`.
    Qrsh,
    /// `ssh HOST` for each rank, from the scheduler's node list.
    Ssh,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    #[serde(default = "default_scheduler")]
    pub scheduler: SchedulerKind,
    /// How the ranks start inside the job (default: by scheduler, see
    /// `scheduler::launch_for`).
    pub launcher: Option<LauncherKind>,
    /// A folder on the front end put first on PATH for the scheduler's
    /// commands (when they are not on the login PATH).
    pub scheduler_path: Option<String>,
    /// Grid Engine's parallel environment for the job's slots.
    #[serde(default = "default_pe")]
    pub parallel_environment: String,
    /// ssh Host aliases of the front ends (each with its own master).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// ssh configuration file for these hosts (default: ssh's own).
    pub ssh_config: Option<std::path::PathBuf>,
    pub remote_root: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    #[serde(default = "default_cores")]
    pub cores_per_node: u32,
    #[serde(default = "default_fill")]
    pub fill_factor: f64,
    #[serde(default = "default_max_nodes")]
    pub max_nodes: u32,
    #[serde(default = "default_walltime")]
    pub max_walltime_hours: u32,
    #[serde(default = "default_multiprog")]
    pub multiprog_max_bytes: usize,
    /// Longest command a component may have (a Slurm task line's limit).
    #[serde(default = "default_command_bytes")]
    pub max_command_bytes: usize,
    /// Throttle: at most `queue_factor * running + queue_base` of offload's
    /// jobs waiting in the remote queue (ARC Control Tower's rule).
    #[serde(default = "default_queue_factor")]
    pub queue_factor: f64,
    #[serde(default = "default_queue_base")]
    pub queue_base: u64,
    /// A shell command run on the front end that prints how many bytes the
    /// account may still write (the site's quota), e.g. a wrapper around
    /// `lfs quota`; exec checks it beside the free space.
    pub quota_command: Option<String>,
    /// Job names are `PREFIX-rRUN-aATTEMPT`; give each database its own
    /// prefix when several share a remote account.
    #[serde(default = "default_job_prefix")]
    pub job_prefix: String,
    /// Bytes of each component's stdout and of its stderr kept (the tail)
    /// in its result record; 0 keeps none.
    #[serde(default = "default_tail_bytes")]
    pub log_tail_bytes: usize,
    /// How long the site lets an SSH connection live; a master's expected
    /// expiry is its start plus this.
    #[serde(default = "default_master_lifetime")]
    pub master_lifetime_hours: f64,
    /// What killed transfers left (staging names: `.offload-part.*/`,
    /// `*.offload-part`, `*.offload-part.*`) not modified for this many
    /// hours is removed from a folder before exec's or poll's next
    /// transfer into it, and by `remotetool clean --staging`; 0: never
    /// swept by transfers. A live transfer's staging is modified as it is
    /// written, so keep this well above a bundle's time.
    #[serde(default = "default_sweep_after")]
    pub sweep_after_hours: f64,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub paths: Vec<PathRule>,
}

fn default_scheduler() -> SchedulerKind {
    SchedulerKind::Slurm
}
fn default_pe() -> String {
    "mpi".to_string()
}
fn default_cores() -> u32 {
    24
}
fn default_fill() -> f64 {
    0.8
}
fn default_max_nodes() -> u32 {
    1000
}
fn default_walltime() -> u32 {
    12
}
fn default_multiprog() -> usize {
    60_000
}
fn default_job_prefix() -> String {
    "offload".to_string()
}
fn default_queue_factor() -> f64 {
    0.15
}
fn default_queue_base() -> u64 {
    100
}
fn default_tail_bytes() -> usize {
    crate::scripts::DEFAULT_TAIL_BYTES
}
/// A master's expected lifetime when the target does not say (hours).
pub const DEFAULT_MASTER_LIFETIME_HOURS: f64 = 12.0;

fn default_master_lifetime() -> f64 {
    DEFAULT_MASTER_LIFETIME_HOURS
}
/// `sweep_after_hours` when the target does not say (as the transfer
/// engine's own default).
fn default_sweep_after() -> f64 {
    24.0
}
fn default_command_bytes() -> usize {
    16 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    pub prefix: Option<String>,
    pub pattern: Option<String>,
    pub local: Option<String>,
    pub remote: String,
}

#[derive(Debug, Clone)]
enum Matcher {
    Prefix(String),
    Pattern(Regex),
}

#[derive(Debug, Clone)]
struct Rule {
    matcher: Matcher,
    local: Option<String>,
    remote: String,
}

/// A target ready for use: its settings and compiled path rules.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub config: TargetConfig,
    rules: Vec<Rule>,
}

/// Characters no path in a list may hold: the lists are one path per line,
/// fields split by tabs.
pub fn bad_path_char(p: &str) -> Option<&'static str> {
    if p.contains('\n') {
        Some("a newline")
    } else if p.contains('\t') {
        Some("a tab")
    } else if p.contains('\r') {
        Some("a carriage return")
    } else if p.contains('\0') {
        Some("a NUL byte")
    } else {
        None
    }
}

impl Target {
    /// How this target's hosts are reached (see [`SshOptions::for_target`]).
    pub fn ssh_options(&self) -> SshOptions {
        SshOptions::for_target(self.config.ssh_config.as_deref())
    }

    /// Whether runs go through front ends' masters (every scheduler but
    /// `local`).
    pub fn has_masters(&self) -> bool {
        self.config.scheduler != SchedulerKind::Local
    }

    /// The front ends, resolved, with their ssh options.
    pub fn hosts(&self) -> anyhow::Result<Vec<Host>> {
        if self.config.hosts.is_empty() {
            return Err(exit::usage(format!(
                "target '{}' has no hosts: add hosts = [\"front-end\"] to [targets.{}]",
                self.name, self.name
            )));
        }
        let ssh = self.ssh_options();
        self.config.hosts.iter().map(|h| ssh.host(h)).collect()
    }

    pub fn new(name: &str, config: TargetConfig) -> anyhow::Result<Target> {
        let bad = |m: String| exit::usage(format!("target '{name}' in the configuration: {m}"));
        let c = &config;
        if c.cores_per_node == 0 || c.max_nodes == 0 || c.max_walltime_hours == 0 {
            return Err(bad(
                "cores_per_node, max_nodes and max_walltime_hours must be at least 1".into(),
            ));
        }
        if !(c.fill_factor > 0.0 && c.fill_factor <= 1.0) {
            return Err(bad("fill_factor must be in (0, 1]".into()));
        }
        if !(c.master_lifetime_hours.is_finite() && c.master_lifetime_hours > 0.0) {
            return Err(bad(
                "master_lifetime_hours must be a positive number of hours".into(),
            ));
        }
        if !(c.sweep_after_hours.is_finite() && c.sweep_after_hours >= 0.0) {
            return Err(bad(
                "sweep_after_hours must be a number of hours, 0 or more (0: no sweep)".into(),
            ));
        }
        if c.log_tail_bytes > 16_000 {
            return Err(bad(format!(
                "log_tail_bytes {} is over 16000: keep whole logs with the recipe's `log` instead",
                c.log_tail_bytes
            )));
        }
        if !c.remote_root.starts_with('/')
            || c.remote_root
                .chars()
                .any(|ch| ch.is_whitespace() || "'\"\\$`%".contains(ch))
        {
            return Err(bad(format!(
                "remote_root '{}' must be an absolute path without spaces, quotes, $, ` or % (it goes into Slurm's multi-prog file)",
                c.remote_root
            )));
        }
        if c.parallel_environment.is_empty()
            || !c
                .parallel_environment
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
        {
            return Err(bad(format!(
                "parallel_environment '{}' must be a name of letters, digits and ._-",
                c.parallel_environment
            )));
        }
        if let Some(p) = &c.scheduler_path {
            if !p.starts_with('/') || bad_path_char(p).is_some() || p.contains(':') {
                return Err(bad(format!(
                    "scheduler_path '{p}' must be an absolute folder (no ':', no newline)"
                )));
            }
        }
        let mut rules = Vec::new();
        for (i, r) in c.paths.iter().enumerate() {
            let matcher = match (&r.prefix, &r.pattern) {
                (Some(p), None) => Matcher::Prefix(p.clone()),
                (None, Some(p)) => Matcher::Pattern(Regex::new(p).map_err(|e| {
                    bad(format!(
                        "paths rule {}: pattern is not a valid regular expression: {e}",
                        i + 1
                    ))
                })?),
                _ => {
                    return Err(bad(format!(
                        "paths rule {}: give exactly one of prefix and pattern",
                        i + 1
                    )))
                }
            };
            rules.push(Rule {
                matcher,
                local: r.local.clone(),
                remote: r.remote.clone(),
            });
        }
        Ok(Target {
            name: name.to_string(),
            config,
            rules,
        })
    }

    /// (local path, remote path) of a path as the pipeline writes it, by the
    /// first rule that matches; None when no rule does.
    pub fn translate<'a>(&self, path: &'a str) -> Option<(Cow<'a, str>, String)> {
        for r in &self.rules {
            match &r.matcher {
                Matcher::Prefix(p) => {
                    if let Some(rest) = path.strip_prefix(p.as_str()) {
                        let local = match &r.local {
                            Some(l) => Cow::Owned(format!("{l}{rest}")),
                            None => Cow::Borrowed(path),
                        };
                        return Some((local, format!("{}{rest}", r.remote)));
                    }
                }
                Matcher::Pattern(re) => {
                    if let Some(caps) = re.captures(path) {
                        let mut remote = String::new();
                        caps.expand(&r.remote, &mut remote);
                        let local = match &r.local {
                            Some(l) => {
                                let mut s = String::new();
                                caps.expand(l, &mut s);
                                Cow::Owned(s)
                            }
                            None => Cow::Borrowed(path),
                        };
                        return Some((local, remote));
                    }
                }
            }
        }
        None
    }

    /// The remote folder of a run.
    /// How old a staging name must be before a transfer sweeps it
    /// (`sweep_after_hours`); None when 0 (or past any duration).
    pub fn sweep_after(&self) -> Option<std::time::Duration> {
        let h = self.config.sweep_after_hours;
        (h > 0.0)
            .then(|| std::time::Duration::try_from_secs_f64(h * 3600.0).ok())
            .flatten()
    }

    pub fn remote_run_dir(&self, remote_id: i64) -> String {
        format!(
            "{}/run-{remote_id}",
            self.config.remote_root.trim_end_matches('/')
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(toml_text: &str) -> anyhow::Result<Target> {
        let c: TargetConfig = toml::from_str(toml_text).unwrap();
        Target::new("t", c)
    }

    #[test]
    fn rules_in_order() {
        let t = target(
            "remote_root = \"/r\"\n[[paths]]\npattern = '^neb://[^/]+/(.*)$'\nlocal = '/data/neb/$1'\nremote = '/s/neb/$1'\n[[paths]]\nprefix = '/data/'\nremote = '/s/data/'\n",
        )
        .unwrap();
        let (l, r) = t.translate("neb://ipp011.0/gpc1/a b.fits").unwrap();
        assert_eq!(
            (l.as_ref(), r.as_str()),
            ("/data/neb/gpc1/a b.fits", "/s/neb/gpc1/a b.fits")
        );
        let (l, r) = t.translate("/data/x/y").unwrap();
        assert_eq!((l.as_ref(), r.as_str()), ("/data/x/y", "/s/data/x/y"));
        assert!(t.translate("/elsewhere/z").is_none());
        assert_eq!(t.remote_run_dir(42), "/r/run-42");
    }

    #[test]
    fn bad_targets_are_named() {
        let e = exit::one_line(&target("remote_root = \"/r x\"\n").unwrap_err());
        assert!(e.contains("target 't'") && e.contains("remote_root"), "{e}");
        let e =
            exit::one_line(&target("remote_root = \"/r\"\n[[paths]]\nremote = 'x'\n").unwrap_err());
        assert!(e.contains("paths rule 1"), "{e}");
        let e = exit::one_line(
            &target("remote_root = \"/r\"\n[[paths]]\npattern = '('\nremote = 'x'\n").unwrap_err(),
        );
        assert!(e.contains("not a valid regular expression"), "{e}");
    }

    #[test]
    fn the_sweep_limit_is_in_hours_and_0_is_off() {
        let h = std::time::Duration::from_secs(3600);
        let t = |extra: &str| target(&format!("remote_root = \"/r\"\n{extra}"));
        assert_eq!(t("").unwrap().sweep_after(), Some(24 * h));
        assert_eq!(
            t("sweep_after_hours = 0.5").unwrap().sweep_after(),
            Some(h / 2)
        );
        assert_eq!(t("sweep_after_hours = 0").unwrap().sweep_after(), None);
        let e = exit::one_line(&t("sweep_after_hours = -1").unwrap_err());
        assert!(e.contains("sweep_after_hours"), "{e}");
    }
}
