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
use crate::runs::{self, Actor, Extra};
use crate::scheduler::Slurm;
use crate::ssh::{Host, SshOptions};
use crate::state::RunState;
use crate::target::{SchedulerKind, Target};
use crate::transfer::{self, Direction, Options, Pair};

const TOOL: &str = "exec";

/// Fault recorded when exec fails for a reason a person must fix.
pub const FAULT_EXEC: i32 = 20;

#[derive(Debug, Parser)]
#[command(
    name = "exec",
    version,
    about = "Send a prepared run to its target and submit it",
    after_help = "Exit status: 0 submitted, 1 error, 2 usage, 3 nothing to do, \
                  4 try later (paused, throttled, run held elsewhere), 5 auth (the run went to `auth`). \
                  `exec` is also a shell builtin: call this tool by path, e.g. \"$OFFLOAD_BIN/exec\"."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub which: crate::prepare::Which,
}

/// The front ends of a target, resolved, with their ssh options.
pub fn target_hosts(target: &Target) -> anyhow::Result<Vec<Host>> {
    if target.config.hosts.is_empty() {
        return Err(exit::usage(format!(
            "target '{}' has no hosts: add hosts = [\"front-end\"] to [targets.{}]",
            target.name, target.name
        )));
    }
    let ssh = ssh_options(target);
    target.config.hosts.iter().map(|h| ssh.host(h)).collect()
}

/// How a target's hosts are reached: `$OFFLOAD_SSH_CONFIG`, else the
/// target's `ssh_config`, else ssh's own configuration.
pub fn ssh_options(target: &Target) -> SshOptions {
    SshOptions {
        config: std::env::var_os("OFFLOAD_SSH_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| target.config.ssh_config.clone()),
    }
}

/// Every master alive, or the run goes to `auth` (remembering where it
/// was) and the error says which host and what to do.
pub fn check_or_auth(db: &mut Db, run: &Run, hosts: &[Host], actor: &Actor) -> anyhow::Result<()> {
    for h in hosts {
        if let Err(e) = h.check() {
            let msg = exit::one_line(&e);
            db.tx(|s| {
                let now = runs::get_run(s, run.remote_id)?;
                runs::transition_in(
                    s,
                    &now,
                    RunState::Auth,
                    actor,
                    &msg,
                    Extra {
                        message: Some(Some(msg.clone())),
                        ..Extra::default()
                    },
                )
            })?;
            return Err(exit::auth(format!(
                "run {} is now 'auth': {msg}",
                run.remote_id
            )));
        }
    }
    Ok(())
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

/// A `local` target: copy what is missing, start the batch script here.
fn exec_local(db: &mut Db, run: &Run, target: &Target, actor: &Actor) -> anyhow::Result<Submitted> {
    let local_run = crate::prepare::local_run_dir(run, target)?;
    let remote_run = target.remote_run_dir(run.remote_id);
    let pairs = run_pairs(&local_run, &remote_run)?;
    let bytes: u64 = pairs
        .iter()
        .filter_map(|p| std::fs::metadata(&p.src).ok())
        .map(|m| m.len())
        .sum();
    let (sent, present) = crate::scheduler::local::copy(&pairs)?;
    let job_id = crate::scheduler::local::submit(&remote_run)?;
    let name = crate::scripts::job_name(&target.config.job_prefix, run.remote_id, run.attempt);
    db.tx(|s| {
        let now = runs::get_run(s, run.remote_id)?;
        runs::transition_in(
            s,
            &now,
            RunState::Run,
            actor,
            &format!("started job {job_id} ({name}) here"),
            Extra {
                job_id: Some(Some(job_id.clone())),
                fault: Some(0),
                message: Some(None),
                ..Extra::default()
            },
        )
    })?;
    Ok(Submitted {
        remote_id: run.remote_id,
        job_id,
        job_name: name,
        found_existing: false,
        files_sent: sent,
        files_present: present,
        bytes_sent: bytes,
    })
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
    if runs::run_state(run)? != RunState::Pending {
        return Err(exit::usage(format!(
            "run {} is '{}': exec takes pending runs",
            run.remote_id, run.state
        )));
    }
    let target = cfg.run_target(run.target.as_deref(), run.remote_id)?;
    if target.config.scheduler == SchedulerKind::Local {
        return exec_local(db, run, &target, actor);
    }
    let hosts = target_hosts(&target)?;
    printer.debug(format!(
        "run {}: target '{}', masters {}",
        run.remote_id,
        target.name,
        hosts
            .iter()
            .map(|h| h.socket.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    check_or_auth(db, run, &hosts, actor)?;
    let slurm = Slurm { host: &hosts[0] };
    let name = crate::scripts::job_name(&target.config.job_prefix, run.remote_id, run.attempt);
    let remote_run = target.remote_run_dir(run.remote_id);
    let record = |db: &mut Db, job_id: &str, how: &str| -> anyhow::Result<()> {
        db.tx(|s| {
            let now = runs::get_run(s, run.remote_id)?;
            runs::transition_in(
                s,
                &now,
                RunState::Run,
                actor,
                &format!("{how} job {job_id} ({name}) on {}", hosts[0].alias),
                Extra {
                    job_id: Some(Some(job_id.to_string())),
                    fault: Some(0),
                    message: Some(None),
                    ..Extra::default()
                },
            )
        })
    };
    if let Some(job_id) = slurm.find_job(&name)? {
        record(db, &job_id, "found the already submitted")?;
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
    let (pending, running) = slurm.queue_counts(&target.config.job_prefix)?;
    printer.debug(format!(
        "queue of '{}': {pending} waiting, {running} running",
        target.name
    ));
    let allowed =
        (target.config.queue_factor * running as f64).floor() as u64 + target.config.queue_base;
    if pending >= allowed {
        return Err(exit::try_later(format!(
            "throttled: {pending} offload jobs wait in the queue of target '{}', at most {} x {running} running + {} may; run {} stays pending",
            target.name, target.config.queue_factor, target.config.queue_base, run.remote_id
        )));
    }
    let local_run = crate::prepare::local_run_dir(run, &target)?;
    let pairs = run_pairs(&local_run, &remote_run)?;
    let bytes: u64 = pairs
        .iter()
        .filter_map(|p| std::fs::metadata(&p.src).ok())
        .map(|m| m.len())
        .sum();
    let free = slurm.free_bytes(&remote_run)?;
    if free < bytes {
        return Err(anyhow::anyhow!(
            "not enough space on {} for run {}: {bytes} bytes to send at most, {free} free under {}; nothing was sent",
            hosts[0].alias,
            run.remote_id,
            remote_run
        ));
    }
    if let Some(cmd) = &target.config.quota_command {
        let left = slurm.quota_bytes(cmd)?;
        if left < bytes {
            return Err(anyhow::anyhow!(
                "over quota on {} for run {}: {bytes} bytes to send at most, the quota leaves {left}; nothing was sent",
                hosts[0].alias,
                run.remote_id
            ));
        }
    }
    crate::auth::forecast(
        db,
        target.config.master_lifetime_hours,
        &hosts,
        Direction::Push,
        bytes,
        &format!("run {} not sent", run.remote_id),
    )?;
    let bar = printer.bytes_progress(Direction::Push);
    let report = transfer::transfer(&hosts, pairs, Direction::Push, &Options::default(), bar)?;
    if report.complete {
        crate::auth::record_rate(db, &hosts, Direction::Push, report.bytes, report.seconds)?;
    } else {
        if !report.hosts_lost.is_empty() {
            check_or_auth(db, run, &hosts, actor)?;
        }
        let first = report
            .failures
            .first()
            .map(|f| format!("{}: {}", f.src, f.reason))
            .unwrap_or_default();
        return Err(anyhow::anyhow!(
            "{} of {} files were not sent ({first})",
            report.failed,
            report.files
        ));
    }
    let job_id = slurm.submit(&remote_run, &name)?;
    record(db, &job_id, "submitted")?;
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

pub fn run(args: Args) -> anyhow::Result<ExitStatus> {
    let g = &args.global;
    let crate::cli::Session {
        printer,
        config: cfg,
        actor,
        mut db,
        registration: _registration,
    } = crate::cli::Session::open_worker(TOOL, g)?;
    let run = runs::claim_which(
        &mut db,
        args.which.remote_id,
        RunState::Pending,
        None,
        &cfg.claim_policy(&actor.host)?,
        &actor,
        "no pending runs to submit",
    )?;
    let result = exec_run(&mut db, &cfg, &run, &printer, &actor);
    if let Err(e) = &result {
        let st = exit::status_of(e);
        if matches!(st, ExitStatus::Failure | ExitStatus::Usage) {
            let msg = format!("exec failed: {}", exit::one_line(e));
            if let Err(e2) = runs::record_fault(&mut db, run.remote_id, FAULT_EXEC, &msg, &actor) {
                printer.warn(format!(
                    "could not record the fault: {}",
                    exit::one_line(&e2)
                ));
            }
        }
    }
    runs::release(&mut db, run.remote_id, &actor)?;
    let s = result.with_context(|| format!("run {}", run.remote_id))?;
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
    if g.json {
        printer.json(&s)?;
    } else {
        printer.data(&s.job_id)?;
    }
    Ok(ExitStatus::Success)
}
