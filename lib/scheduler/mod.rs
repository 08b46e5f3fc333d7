//! The remote site a run goes to, behind one interface: where its jobs are
//! submitted and watched, and how its files get there and back. The tools
//! ask a [`Site`] and never which kind it is:
//!
//! - [`remote::RemoteSite`]: a remote centre's front ends, reached through
//!   the operators' masters; its batch system's commands (a [`Scheduler`]:
//!   [`slurm`], [`pbs`], [`sge`], [`moab`]) and df run there, files move
//!   with the transfer engine.
//! - [`local::LocalSite`]: this machine stands in for the remote centre (no
//!   ssh, no scheduler): the batch script runs here, detached, files are
//!   copied.
//!
//! A [`Scheduler`] is one batch system: the directives of its batch
//! script, and its commands (submit, find a job by name, state, accounting,
//! cancel, queue counts) with the parsing of what they print. prepare
//! renders the batch script with [`batch_script`] (no network).
//!
//! This module and the transfer engine are the only ones that write shell
//! text for the remote side (with [`crate::shell::quote`]).

use std::collections::HashSet;

use crate::printer::Printer;
use crate::scripts::{JobSpec, Launch};
use crate::ssh::Host;
use crate::target::{LauncherKind, SchedulerKind, Target};
use crate::transfer::{Pair, Report};

pub mod local;
pub mod moab;
pub mod pbs;
pub mod remote;
pub mod sge;
pub mod slurm;

/// One batch system: how its batch script asks for the job, and its
/// commands, each a script run on the front end with values as `$1`...
/// (never spliced into the text), and the parsing of what they print.
pub trait Scheduler: Send + Sync {
    /// Its name in the configuration (`scheduler = "..."`).
    fn name(&self) -> &'static str;
    /// The batch script's directive lines (job name, size, walltime,
    /// output file, queue, account), each ending in a newline.
    fn directives(&self, j: &JobSpec<'_>) -> String;
    /// Shell text for the job's id inside the job (for the summary).
    fn job_id_expr(&self) -> &'static str;
    /// Shell text for the job's nodes inside the job (for the summary).
    fn nodes_expr(&self) -> &'static str;
    /// The submit command's name, for messages.
    fn submit_command(&self) -> &'static str;
    /// Submit `job.sh` in the current folder under the name `$2` (`$1`
    /// is the run folder); prints the job id.
    fn submit_script(&self) -> &'static str;
    fn parse_submit(&self, out: &str) -> anyhow::Result<String>;
    /// List the queued or running jobs named `$1` (or all jobs, for
    /// [`Scheduler::parse_find`] to pick from).
    fn find_script(&self) -> &'static str;
    fn parse_find(&self, out: &str, name: &str) -> Option<String>;
    /// Ask the queue about job `$1`.
    fn state_script(&self) -> &'static str;
    /// The job's state from the queue's answer (its exit status and
    /// stdout); None when the queue no longer knows it.
    fn parse_state(&self, status: Option<i32>, out: &str, job_id: &str) -> Option<JobState>;
    /// Ask accounting about ended job `$1`, when the system keeps it.
    fn accounting_script(&self) -> Option<&'static str>;
    /// The final state from accounting's answer.
    fn parse_accounting(&self, out: &str) -> Option<String>;
    /// Ask accounting what ended job `$1` used, when the system keeps it.
    fn usage_script(&self) -> Option<&'static str> {
        None
    }
    /// What job `job_id`, submitted as `job_name`, used, from the usage
    /// script's answer; None when accounting does not know it (yet). The
    /// name tells a job from an older one of a number the site reused.
    fn parse_usage(&self, _out: &str, _job_id: &str, _job_name: &str) -> Option<Usage> {
        None
    }
    /// What the usage script's failure (its exit status and stderr) means.
    fn usage_failure(&self, _status: Option<i32>, _stderr: &str) -> NoUsage {
        NoUsage::Failed
    }
    /// The cancel command's name, for messages.
    fn cancel_command(&self) -> &'static str;
    /// Cancel job `$1`.
    fn cancel_script(&self) -> &'static str;
    /// Whether the cancel's complaint says the job had already ended.
    fn cancel_gone(&self, stderr: &str) -> bool;
    /// List the queue (every job's name and state).
    fn queue_script(&self) -> &'static str;
    /// (pending, running) jobs whose names start with `mine`.
    fn parse_queue(&self, out: &str, mine: &str) -> (u64, u64);
    /// Whether a final state means the site cut the job short (a time
    /// limit, a node's failure, preemption): the site's failure for poll.
    fn cut_short(&self, final_state: &str) -> bool;
}

/// The batch system of a remote target (none for `local`).
pub fn scheduler_of(kind: SchedulerKind) -> Option<Box<dyn Scheduler>> {
    Some(match kind {
        SchedulerKind::Slurm => Box::new(slurm::Slurm),
        SchedulerKind::Pbs => Box::new(pbs::Pbs),
        SchedulerKind::Sge => Box::new(sge::Sge),
        SchedulerKind::Moab => Box::new(moab::Moab),
        SchedulerKind::Local => return None,
    })
}

/// How the ranks start inside a target's job of `nodes` nodes: the
/// target's `launcher`, else `srun` on Slurm and Moab, local processes on
/// a one-node PBS or Grid Engine job (and on the `local` target), the
/// site's own remote start (`pbsdsh`, `qrsh -inherit`) on more nodes.
pub fn launch_for(target: &Target, nodes: u32) -> anyhow::Result<Launch> {
    let kind = target.config.scheduler;
    let chosen = match (target.config.launcher, kind) {
        (Some(l), _) => l,
        (None, SchedulerKind::Slurm | SchedulerKind::Moab) => LauncherKind::Srun,
        (None, SchedulerKind::Local) => LauncherKind::Local,
        (None, SchedulerKind::Pbs) if nodes > 1 => LauncherKind::Pbsdsh,
        (None, SchedulerKind::Sge) if nodes > 1 => LauncherKind::Qrsh,
        (None, _) => LauncherKind::Local,
    };
    let nodes_of = |what: &str| {
        match kind {
        SchedulerKind::Pbs | SchedulerKind::Moab => Ok(("${PBS_NODEFILE:-}", "pbs")),
        SchedulerKind::Sge => Ok(("${PE_HOSTFILE:-}", "sge")),
        _ => Err(crate::exit::usage(format!(
            "target '{}': launcher '{what}' reads a PBS or Grid Engine node list; scheduler '{}' has none (use srun)",
            target.name,
            kind.as_str()
        ))),
    }
    };
    Ok(match chosen {
        LauncherKind::Srun => Launch::Srun,
        LauncherKind::Local => {
            if nodes > 1 && kind != SchedulerKind::Local {
                return Err(crate::exit::usage(format!(
                    "target '{}': launcher 'local' runs the ranks on the job's first node only, and this job has {nodes} nodes (use srun, pbsdsh, qrsh or ssh)",
                    target.name
                )));
            }
            Launch::Local {
                all_at_once: kind != SchedulerKind::Local,
            }
        }
        LauncherKind::Pbsdsh => {
            let (node_file, format) = nodes_of("pbsdsh")?;
            Launch::Nodes {
                node_file,
                format,
                start: "pbsdsh -h",
            }
        }
        LauncherKind::Qrsh => {
            let (node_file, format) = nodes_of("qrsh")?;
            Launch::Nodes {
                node_file,
                format,
                start: "qrsh -inherit -nostdin",
            }
        }
        LauncherKind::Ssh => {
            let (node_file, format) = nodes_of("ssh")?;
            Launch::Nodes {
                node_file,
                format,
                start: "ssh -o BatchMode=yes",
            }
        }
    })
}

/// A target's batch script: its scheduler's directives, then the job (the
/// `local` target's is Slurm's, which nothing reads there).
pub fn batch_script(target: &Target, j: &JobSpec<'_>) -> String {
    let s = scheduler_of(target.config.scheduler).unwrap_or_else(|| Box::new(slurm::Slurm));
    crate::scripts::batch_job(j, &s.directives(j), s.job_id_expr(), s.nodes_expr())
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Queued or running (the scheduler's state name).
    Active(String),
    /// Ended; the scheduler's final state when accounting knows it.
    Ended(Option<String>),
}

/// Why a usage script that failed gave no usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoUsage {
    /// The site keeps no accounting: the cost is an estimate, and that is
    /// all there is to say.
    NotKept,
    /// Accounting does not know the job yet: ask again.
    NotYet,
    /// Accounting is there but failed (its daemon down, a file it cannot
    /// read): the cost is an estimate, and an operator should hear why.
    Failed,
}

/// What an ended job used, in its scheduler's accounting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// The accounting command it came from (`sacct`, `qacct`), recorded as
    /// the cost's source.
    pub source: &'static str,
    pub final_state: Option<String>,
    /// Wall time from start to end.
    pub elapsed_s: i64,
    /// CPUs it held.
    pub alloc_cpus: i64,
    /// CPU time of its processes (user + system), where accounting gathers it.
    pub cpu_s: Option<f64>,
    /// Nodes it held, and asked for.
    pub nodes: i64,
    pub req_nodes: i64,
    /// The wall time it asked for (None: no limit).
    pub timelimit_s: Option<i64>,
}

/// What an ended job left in its run folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The per-rank result files (`rank-R.tsv`, names within `results/`).
    pub rank_files: Vec<String>,
    /// Whether `job-summary.txt` is there (the job reached its end).
    pub summary: bool,
    /// Inputs the job found missing at the site before it started anything
    /// (`inputs_missing=` of the summary), with the first few names.
    pub inputs_missing: u64,
    pub inputs_missing_first: Vec<String>,
}

impl Listing {
    /// Read the listing a site prints: one result file name a line, and
    /// `SUMMARY` when the summary is there, followed by the summary's
    /// `inputs_missing` lines.
    pub fn parse(text: &str) -> Listing {
        let mut l = Listing::default();
        for line in text.lines() {
            if line == "SUMMARY" {
                l.summary = true;
            } else if let Some(n) = line.strip_prefix("inputs_missing=") {
                l.inputs_missing = n.trim().parse().unwrap_or(1);
            } else if let Some(f) = line.strip_prefix("inputs_missing_first=") {
                l.inputs_missing_first.push(f.to_string());
            } else if is_rank_file(line) {
                l.rank_files.push(line.to_string());
            }
        }
        l.rank_files.sort();
        l
    }
}

/// `rank-N.tsv`, as the rank runner names its result files.
pub fn is_rank_file(name: &str) -> bool {
    name.strip_prefix("rank-")
        .and_then(|r| r.strip_suffix(".tsv"))
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// A remote site: its scheduler and its storage.
pub trait Site {
    /// Where jobs go, for messages: "on fe1", "here".
    fn place(&self) -> String;
    /// The front ends whose masters carry the work (none on this machine).
    fn hosts(&self) -> &[Host];
    /// Every connection the site needs is alive; else an error naming the
    /// host and the remedy.
    fn check(&self) -> anyhow::Result<()>;
    /// The id of a queued or running job with this name, if any.
    fn find_job(&self, name: &str) -> anyhow::Result<Option<String>>;
    /// Submit `job.sh` in the run's folder (clearing what an earlier attempt
    /// left); the job id.
    fn submit(&self, remote_run: &str, name: &str) -> anyhow::Result<String>;
    /// Where a job is now.
    fn state(&self, job_id: &str) -> anyhow::Result<JobState>;
    /// Cancel a job; one that already ended is not an error.
    fn cancel(&self, job_id: &str) -> anyhow::Result<()>;
    /// (pending, running) jobs named `PREFIX-r...` in the queue.
    fn queue_counts(&self, prefix: &str) -> anyhow::Result<(u64, u64)>;
    /// Whether a job's final state means the site cut it short.
    fn cut_short(&self, _final_state: &str) -> bool {
        false
    }
    /// What an ended job used, from the site's accounting; None where the
    /// site keeps none, or it does not know the job.
    fn usage(&self, _job_id: &str, _job_name: &str) -> anyhow::Result<Option<Usage>> {
        Ok(None)
    }
    /// Free bytes where `path` lives (its nearest existing parent).
    fn free_bytes(&self, path: &str) -> anyhow::Result<u64>;
    /// Bytes the account may still write, from the site's quota command.
    fn quota_bytes(&self, command: &str) -> anyhow::Result<u64>;
    /// The result files and the summary an ended job left in its folder.
    fn listing(&self, remote_run: &str) -> anyhow::Result<Listing>;
    /// Which of these paths are regular files there (not links, not
    /// folders, not missing).
    fn regular_files(&self, paths: &[&str]) -> anyhow::Result<HashSet<String>>;
    /// Remove a run's folder with everything in it.
    fn remove(&self, folder: &str) -> anyhow::Result<()>;
    /// Send files there (only what is missing or different).
    fn push(&self, pairs: Vec<Pair>, printer: &Printer) -> anyhow::Result<Report>;
    /// Bring files back.
    fn pull(&self, pairs: Vec<Pair>, printer: &Printer) -> anyhow::Result<Report>;
    /// Remove the transfers' staging names (see `transfer::sweep`) anywhere
    /// under `root` not modified for `older_than`; the paths removed.
    fn sweep_staging(
        &self,
        root: &str,
        older_than: std::time::Duration,
    ) -> anyhow::Result<Vec<String>>;
}

/// The site of a target.
pub fn site_for(target: &Target) -> anyhow::Result<Box<dyn Site>> {
    Ok(match scheduler_of(target.config.scheduler) {
        None => Box::new(local::LocalSite),
        Some(s) => Box::new(remote::RemoteSite::new(
            target.hosts()?,
            s,
            target.config.scheduler_path.clone(),
            target.sweep_after(),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(extra: &str) -> Target {
        let c: crate::target::TargetConfig = toml::from_str(&format!(
            "remote_root = \"/r\"\npartition = \"q1\"\n{extra}"
        ))
        .unwrap();
        Target::new("t", c).unwrap()
    }

    fn script(extra: &str, nodes: u32) -> anyhow::Result<String> {
        let t = target(extra);
        let alloc = crate::alloc::Allocation {
            components: 100,
            threads: 2,
            time_cost: 60.0,
            core_need: 200.0,
            node_need: 8.0,
            hours: 2,
            nodes,
            ranks_per_node: 12,
            ranks: 12 * nodes,
        };
        let launch = launch_for(&t, nodes)?;
        Ok(batch_script(
            &t,
            &JobSpec {
                job_prefix: "off",
                remote_id: 7,
                attempt: 1,
                stage: "chip",
                label: "L",
                remote_run: "/r/run-7",
                alloc: &alloc,
                partition: t.config.partition.as_deref(),
                account: None,
                parallel_environment: &t.config.parallel_environment,
                steps: 1,
                launch,
                tail_bytes: 2000,
            },
        ))
    }

    fn has(text: &str, lines: &[&str]) {
        // Every rendering is a script bash reads.
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        let st = std::process::Command::new("bash")
            .arg("-n")
            .arg(f.path())
            .status()
            .unwrap();
        assert!(st.success(), "bash -n refuses:\n{text}");
        for l in lines {
            assert!(text.lines().any(|x| x == *l), "no line {l:?} in:\n{text}");
        }
    }

    #[test]
    fn each_scheduler_renders_its_directives_and_launcher() {
        let s = script("", 2).unwrap();
        has(
            &s,
            &[
                "#SBATCH --job-name=off-r7-a1",
                "#SBATCH --nodes=2",
                "#SBATCH --ntasks=24",
                "#SBATCH --time=2:00:00",
                "#SBATCH --partition=q1",
                "OFFLOAD_JOB_ID=\"${SLURM_JOB_ID:-}\"",
            ],
        );
        assert!(s.contains("srun --multi-prog --ntasks=24"), "{s}");

        let s = script("scheduler = \"pbs\"", 1).unwrap();
        has(
            &s,
            &[
                "#PBS -N off-r7-a1",
                "#PBS -l nodes=1:ppn=24",
                "#PBS -l walltime=2:00:00",
                "#PBS -q q1",
                "#PBS -j oe",
            ],
        );
        assert!(
            !s.contains("srun") && s.contains("| xargs -P 12 -I RANK"),
            "{s}"
        );
        let s = script("scheduler = \"pbs\"", 2).unwrap();
        has(
            &s,
            &[
                "#PBS -l nodes=2:ppn=24",
                "bash \"$OFFLOAD_RUN/tasks/launch.sh\" \"${PBS_NODEFILE:-}\" pbs 24 2 pbsdsh -h",
            ],
        );

        let s = script("scheduler = \"sge\"\nparallel_environment = \"orte\"", 2).unwrap();
        has(&s, &["#$ -N off-r7-a1", "#$ -pe orte 48", "#$ -l h_rt=2:00:00", "#$ -q q1", "#$ -o /r/run-7/job-$JOB_ID.out", "bash \"$OFFLOAD_RUN/tasks/launch.sh\" \"${PE_HOSTFILE:-}\" sge 24 2 qrsh -inherit -nostdin"]);
        let s = script("scheduler = \"sge\"\nlauncher = \"ssh\"", 2).unwrap();
        assert!(s.contains("sge 24 2 ssh -o BatchMode=yes\n"), "{s}");

        let s = script("scheduler = \"moab\"", 2).unwrap();
        has(
            &s,
            &[
                "#MSUB -N off-r7-a1",
                "#MSUB -l nodes=2:ppn=24,walltime=2:00:00",
                "#MSUB -q q1",
            ],
        );
        assert!(s.contains("srun --multi-prog"), "{s}");

        // Launchers that cannot work are refused before anything is written.
        let e = script("launcher = \"pbsdsh\"", 1).unwrap_err().to_string();
        assert!(e.contains("node list"), "{e}");
        let e = script("scheduler = \"pbs\"\nlauncher = \"local\"", 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("first node only"), "{e}");
    }

    #[test]
    fn listings_name_rank_files_and_the_summary() {
        let l = Listing::parse("rank-1.tsv\nrank-0.tsv\nrank-x.tsv\n../rank-2.tsv\nSUMMARY\n");
        assert_eq!(l.rank_files, vec!["rank-0.tsv", "rank-1.tsv"]);
        assert!(l.summary);
        assert_eq!(l.inputs_missing, 0);
        let l = Listing::parse(
            "SUMMARY\ninputs_missing=7\ninputs_missing_first=/s/a b\ninputs_missing_first=/s/c\n",
        );
        assert_eq!((l.inputs_missing, l.inputs_missing_first.len()), (7, 2));
        assert_eq!(l.inputs_missing_first[0], "/s/a b");
        assert!(!Listing::parse("rank-0.tsv\n").summary);
    }
}
