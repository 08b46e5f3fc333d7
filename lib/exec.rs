//! `exec`: sends a prepared run to its target and submits it, exactly once.
//! State `pending -> run` (or `auth` when the connection is down).
//!
//! Steps: check the masters; find a job already submitted for this run and
//! attempt (an exec killed between sbatch and its commit); the throttle
//! (`queue_factor * running + queue_base` jobs waiting at most); free space
//! on the remote side; push the run's folder and the inputs the remote side
//! lacks or has different (one listing of sizes, then checksums of those of
//! the same size); sbatch; record the job id.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::db::models::Run;
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::runs::{self, Actor, Extra, OnFailure, Work};
use crate::scheduler::{self, Site};
use crate::state::{fault, RunState};
use crate::target::Target;
use crate::transfer::{self, Direction, Pair};

const TOOL: &str = "exec";

#[derive(Debug, Parser)]
#[command(
    name = "exec",
    version = crate::cli::VERSION,
    about = "Send a prepared run to its target and submit it",
    after_help = "Exit status: 0 submitted, 1 error, 2 usage, 3 nothing to do, \
                  4 try later (paused, throttled, run held elsewhere), 5 auth (the run went to `auth`, or \
                  with --next: the only pending runs are of targets whose masters are down), \
                  6 local (the database had no room to write; nothing was written). \
                  `exec` is also a shell builtin: call this tool by path, e.g. \"$OFFLOAD_BIN/exec\"."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub which: runs::Which,
    /// With --next: only runs of this target
    #[arg(long, value_name = "T", requires = "next")]
    pub target: Option<String>,
}

/// A target's site answers: every master of its front ends is alive.
pub fn reach(target: &Target) -> anyhow::Result<()> {
    scheduler::site_for(target)?.check()
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, base, out)?;
        } else {
            out.push(p.strip_prefix(base).expect("inside").to_path_buf());
        }
    }
    Ok(())
}

/// The local run folder's files and the inputs, with where they go.
fn run_pairs(local_run: &Path, remote_run: &str) -> anyhow::Result<Vec<Pair>> {
    if !local_run.join("MANIFEST.sha256").is_file() {
        return Err(exit::usage(format!(
            "no prepared folder at {}: prepare the run again",
            local_run.display()
        )));
    }
    let mut rels = Vec::new();
    walk(local_run, local_run, &mut rels)
        .with_context(|| format!("cannot read {}", local_run.display()))?;
    rels.sort();
    let mut pairs: Vec<Pair> = rels
        .iter()
        .map(|r| Pair {
            src: local_run.join(r).to_string_lossy().into_owned(),
            dst: format!("{remote_run}/{}", r.to_string_lossy()),
        })
        .collect();
    pairs.extend(transfer::read_pairs(&local_run.join("inputs.list"))?);
    Ok(pairs)
}

#[derive(Debug, Serialize)]
pub struct Submitted {
    pub remote_id: i64,
    pub job_id: String,
    pub job_name: String,
    pub found_existing: bool,
    pub files_sent: usize,
    pub files_present: usize,
    pub bytes_sent: u64,
}

pub fn exec_run(
    db: &mut Db,
    cfg: &Config,
    run: &Run,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<Submitted> {
    runs::expect_state(run, RunState::Pending, "exec takes pending runs")?;
    let target = cfg.run_target(run.target.as_deref(), run.remote_id)?;
    let site = scheduler::site_for(&target)?;
    printer.debug(format!(
        "run {}: target '{}', masters {}",
        run.remote_id,
        target.name,
        site.hosts()
            .iter()
            .map(|h| h.socket.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    runs::check_or_auth(db, run, site.as_ref(), actor)?;
    let name = crate::scripts::job_name(&target.config.job_prefix, run.remote_id, run.attempt);
    if let Some(job_id) = site.find_job(&name)? {
        record_job(
            db,
            run,
            site.as_ref(),
            actor,
            &job_id,
            &name,
            "found the already submitted",
        )?;
        return Ok(Submitted {
            remote_id: run.remote_id,
            job_id,
            job_name: name,
            found_existing: true,
            files_sent: 0,
            files_present: 0,
            bytes_sent: 0,
        });
    }
    throttle(site.as_ref(), &target, run, printer)?;
    let remote_run = target.remote_run_dir(run.remote_id);
    let local_run = runs::local_run_dir(run, &target)?;
    let pairs = run_pairs(&local_run, &remote_run)?;
    let bytes: u64 = pairs
        .iter()
        .filter_map(|p| std::fs::metadata(&p.src).ok())
        .map(|m| m.len())
        .sum();
    check_space(site.as_ref(), &target, run, &remote_run, bytes)?;
    crate::masters::forecast(
        db,
        target.config.master_lifetime_hours,
        site.hosts(),
        Direction::Push,
        bytes,
        &format!("run {} not sent", run.remote_id),
    )?;
    let report = site.push(pairs, printer)?;
    if !report.complete {
        return Err(runs::incomplete(
            db,
            run,
            site.as_ref(),
            actor,
            &report,
            "were not sent",
        ));
    }
    crate::masters::record_rate(
        db,
        site.hosts(),
        Direction::Push,
        report.bytes,
        report.seconds,
    )?;
    let job_id = site.submit(&remote_run, &name)?;
    record_job(db, run, site.as_ref(), actor, &job_id, &name, "submitted")?;
    Ok(Submitted {
        remote_id: run.remote_id,
        job_id,
        job_name: name,
        found_existing: false,
        files_sent: report.transferred,
        files_present: report.skipped,
        bytes_sent: report.bytes,
    })
}

/// The run's job is known: `pending -> run` with its id.
fn record_job(
    db: &mut Db,
    run: &Run,
    site: &dyn Site,
    actor: &Actor,
    job_id: &str,
    name: &str,
    how: &str,
) -> anyhow::Result<()> {
    runs::transition(
        db,
        run.remote_id,
        RunState::Run,
        actor,
        &format!("{how} job {job_id} ({name}) {}", site.place()),
        Extra {
            job_id: Some(Some(job_id.to_string())),
            fault: Some(0),
            message: Some(None),
            ..Extra::default()
        },
    )
}

/// At most `queue_factor * running + queue_base` of offload's jobs may wait
/// in the target's queue; over it the run stays pending ("try later").
fn throttle(site: &dyn Site, target: &Target, run: &Run, printer: &Printer) -> anyhow::Result<()> {
    let (pending, running) = site.queue_counts(&target.config.job_prefix)?;
    printer.debug(format!(
        "queue of '{}': {pending} waiting, {running} running",
        target.name
    ));
    let allowed =
        (target.config.queue_factor * running as f64).floor() as u64 + target.config.queue_base;
    if pending >= allowed {
        return Err(runs::throttled(format!(
            "throttled: {pending} offload jobs wait in the queue of target '{}', at most {} x {running} running + {} may; run {} stays pending",
            target.name, target.config.queue_factor, target.config.queue_base, run.remote_id
        )));
    }
    Ok(())
}

/// Free space under the run's remote folder, and the quota where the
/// target names a command, against the bytes to send.
fn check_space(
    site: &dyn Site,
    target: &Target,
    run: &Run,
    remote_run: &str,
    bytes: u64,
) -> anyhow::Result<()> {
    let free = site.free_bytes(remote_run)?;
    if free < bytes {
        return Err(anyhow::anyhow!(
            "not enough space {} for run {}: {bytes} bytes to send at most, {free} free under {}; nothing was sent",
            site.place(),
            run.remote_id,
            remote_run
        ));
    }
    if let Some(cmd) = &target.config.quota_command {
        let left = site.quota_bytes(cmd)?;
        if left < bytes {
            return Err(anyhow::anyhow!(
                "over quota {} for run {}: {bytes} bytes to send at most, the quota leaves {left}; nothing was sent",
                site.place(),
                run.remote_id
            ));
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<ExitStatus> {
    let g = &args.global;
    // Registered as at work until the session is dropped.
    let mut session = crate::cli::Session::open_worker(TOOL, g)?;
    let work = Work {
        which: &args.which,
        state: RunState::Pending,
        polled_before: None,
        target: args.target.as_deref(),
        reach: Some(reach),
        none: "no pending runs to submit",
        on_failure: Some(OnFailure {
            fault: fault::EXEC,
            what: "exec failed",
            when: runs::needs_a_person,
        }),
    };
    let s = session.work_on(work, |db, cfg, printer, actor, run| {
        exec_run(db, cfg, run, printer, actor)
    })?;
    let printer = &session.printer;
    printer.info(format!(
        "run {}: {} job {} ({} files sent, {} already there)",
        s.remote_id,
        if s.found_existing {
            "found"
        } else {
            "submitted"
        },
        s.job_id,
        s.files_sent,
        s.files_present
    ));
    printer.model(&s, |s| s.job_id.clone())?;
    Ok(ExitStatus::Success)
}
