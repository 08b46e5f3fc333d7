//! The remote site a run goes to, behind one interface: where its jobs are
//! submitted and watched, and how its files get there and back. The tools
//! ask a [`Site`] and never which kind it is:
//!
//! - [`slurm::SlurmSite`]: a remote centre's front ends, reached through the
//!   operators' masters; Slurm's commands (squeue, sbatch, sacct, scancel)
//!   and df run there, files move with the transfer engine.
//! - [`local::LocalSite`]: this machine stands in for the remote centre (no
//!   ssh, no scheduler): the batch script runs here, detached, files are
//!   copied.
//!
//! This module and the transfer engine are the only ones that write shell
//! text for the remote side (with [`crate::shell::quote`]).

use std::collections::HashSet;

use crate::db::models::Run;
use crate::db::Db;
use crate::exit;
use crate::printer::Printer;
use crate::runs::{self, Actor, Extra};
use crate::ssh::Host;
use crate::state::RunState;
use crate::target::{SchedulerKind, Target};
use crate::transfer::{Pair, Report};

pub mod local;
pub mod slurm;

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Queued or running (the scheduler's state name).
    Active(String),
    /// Ended; the scheduler's final state when accounting knows it.
    Ended(Option<String>),
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
    Ok(match target.config.scheduler {
        SchedulerKind::Local => Box::new(local::LocalSite),
        SchedulerKind::Slurm => {
            Box::new(slurm::SlurmSite::new(target.hosts()?, target.sweep_after()))
        }
    })
}

/// The site is reachable, or the run goes to `auth` (remembering where it
/// was) and the error says which host and what to do.
pub fn check_or_auth(db: &mut Db, run: &Run, site: &dyn Site, actor: &Actor) -> anyhow::Result<()> {
    let Err(e) = site.check() else {
        return Ok(());
    };
    let msg = exit::one_line(&e);
    runs::transition(
        db,
        run.remote_id,
        RunState::Auth,
        actor,
        &msg,
        Extra {
            message: Some(Some(msg.clone())),
            ..Extra::default()
        },
    )?;
    Err(exit::auth(format!(
        "run {} is now 'auth': {msg}",
        run.remote_id
    )))
}

/// A transfer that did not complete as an error: the first failure named;
/// when a master is gone, the run goes to `auth` and that is the error.
pub fn incomplete(
    db: &mut Db,
    run: &Run,
    site: &dyn Site,
    actor: &Actor,
    report: &Report,
    what: &str,
) -> anyhow::Error {
    if let Err(e) = check_or_auth(db, run, site, actor) {
        return e;
    }
    let first = report
        .failures
        .first()
        .map(|f| format!("{}: {}", f.src, f.reason))
        .unwrap_or_default();
    anyhow::anyhow!(
        "{} of {} files {what} ({first})",
        report.failed,
        report.files
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
