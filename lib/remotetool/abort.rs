//! `remotetool abort` and `remotetool retry`: stop work, and put failed
//! work back.
//!
//! abort: a run not yet submitted is withdrawn (`cancelled`, its work items
//! free for the next define). A submitted run has its job cancelled
//! (`scancel`, or the local job's session killed) and goes to `error` with
//! fault 40 and the reason; from there a person either resubmits it
//! (`remotetool set RUN pending`) or frees its work items (`remotetool
//! retry RUN`).
//!
//! retry: a run in `error` whose components never came back (aborted,
//! exec or site failure) is withdrawn and its work items freed. A run whose
//! results were applied has its failed work items put back to `ready`
//! (those under the attempt limit, or all with `--ignore-limit`) and is
//! closed `full`.

use serde::Serialize;

use super::print_runs;
use crate::config::Config;
use crate::db::models::{Run, RunFilter};
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::runs::{self, Actor, Extra};
use crate::state::{fault, ItemState, RunState};

/// Runs that can be aborted whatever they hold: not yet ended.
const OPEN: &[RunState] = &[
    RunState::New,
    RunState::Pending,
    RunState::Run,
    RunState::Auth,
];
/// Runs whose failed work `retry` puts back.
const RETRYABLE: &[RunState] = &[RunState::Error, RunState::Full];

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["remote_id", "label"])))]
pub struct AbortArgs {
    /// The run to abort
    #[arg(value_name = "REMOTE_ID")]
    pub remote_id: Option<i64>,
    /// Abort every open run (new, pending, run, auth) of this label
    #[arg(long)]
    pub label: Option<String>,
    /// Why (kept in the history and the run's message)
    #[arg(long)]
    pub reason: String,
    /// Do not cancel the remote job (it is gone, or you cancel it by hand)
    #[arg(long)]
    pub no_cancel_job: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["remote_id", "label", "state"])))]
pub struct RetryArgs {
    /// The run whose failed work goes back
    #[arg(value_name = "REMOTE_ID")]
    pub remote_id: Option<i64>,
    /// Every run of this label in the chosen state
    #[arg(long)]
    pub label: Option<String>,
    /// Runs in this state: error (the default) or full
    #[arg(long, value_enum)]
    pub state: Option<RunState>,
    /// A work item is tried this many times in all (as poll's --attempts)
    #[arg(long, default_value_t = runs::DEFAULT_ATTEMPTS, value_name = "N")]
    pub attempts: i32,
    /// Put failed work items back even past the attempt limit
    #[arg(long)]
    pub ignore_limit: bool,
}

#[derive(Debug, Serialize)]
pub struct Aborted {
    pub remote_id: i64,
    pub from: String,
    pub to: String,
    pub job_id: Option<String>,
    pub job_cancelled: bool,
}

#[derive(Debug, Serialize)]
pub struct Retried {
    pub remote_id: i64,
    pub from: RunState,
    pub to: RunState,
    /// Components withdrawn from a run that never came back.
    pub withdrawn: usize,
    /// Abandoned work items put back to ready.
    pub ready_again: usize,
    /// Failed work items that were ready already (under the limit).
    pub already_ready: usize,
    /// Failed work items left abandoned (at the attempt limit).
    pub over_limit: usize,
}

/// Run `f` on each run, holding its lease; the first error is returned
/// after every run was tried.
fn each_run<T>(
    db: &mut Db,
    found: Vec<Run>,
    actor: &Actor,
    printer: &Printer,
    mut f: impl FnMut(&mut Db, &Run) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let mut done = Vec::new();
    let mut first_err = None;
    for run in found {
        let r = runs::claim(db, run.remote_id, actor).and_then(|run| {
            let r = f(db, &run);
            runs::release(db, run.remote_id, actor)?;
            r
        });
        match r {
            Ok(t) => done.push(t),
            Err(e) => {
                printer.warn(format!("run {}: {}", run.remote_id, exit::one_line(&e)));
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => {
            if !done.is_empty() {
                printer.warn(format!("{} other runs were handled", done.len()));
            }
            Err(e)
        }
        None => Ok(done),
    }
}

fn one_run(db: &mut Db, remote_id: i64) -> anyhow::Result<Run> {
    db.read(|s| s.run(remote_id))?
        .ok_or_else(|| exit::usage(format!("no run with remote_id {remote_id}")))
}

/// The runs in these states (of this label).
fn runs_in(db: &mut Db, states: &[RunState], label: Option<&str>) -> anyhow::Result<Vec<Run>> {
    db.read(|s| {
        s.runs(&RunFilter {
            states: states.to_vec(),
            label: label.map(str::to_string),
            ..RunFilter::default()
        })
    })
}

fn cancel_job(cfg: &Config, run: &Run, job_id: &str) -> anyhow::Result<()> {
    let target = cfg.run_target(run.target.as_deref(), run.remote_id)?;
    let site = crate::scheduler::site_for(&target)?;
    site.check().map_err(|e| {
        exit::auth(format!(
            "cannot cancel job {job_id} of run {}: {}; refresh the master, or pass --no-cancel-job if the job is gone",
            run.remote_id,
            exit::one_line(&e)
        ))
    })?;
    site.cancel(job_id)
}

pub fn abort(
    db: &mut Db,
    cfg: &Config,
    a: AbortArgs,
    json: bool,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<ExitStatus> {
    if a.reason.trim().is_empty() {
        return Err(exit::usage("--reason must say why the run is aborted"));
    }
    let found = match a.remote_id {
        Some(id) => vec![one_run(db, id)?],
        None => runs_in(db, OPEN, a.label.as_deref())?,
    };
    if found.is_empty() {
        return Err(exit::nothing_to_do(format!(
            "no open runs of label '{}' to abort",
            a.label.as_deref().unwrap_or_default()
        )));
    }
    let done = each_run(db, found, actor, printer, |db, run| {
        let from = run.state;
        let has_active = db.read(|s| s.run_has_active(run.remote_id))?;
        let abortable = OPEN.contains(&from) || (from == RunState::Error && has_active);
        if !abortable {
            return Err(exit::usage(format!(
                "run {} is '{from}'{}: nothing to abort",
                run.remote_id,
                if from == RunState::Error {
                    " with its results applied; `remotetool retry` puts its failed work back"
                } else {
                    ""
                }
            )));
        }
        let job = run.job_id.clone();
        let mut cancelled = false;
        if let Some(j) = &job {
            if !a.no_cancel_job {
                cancel_job(cfg, run, j)?;
                cancelled = true;
            }
        }
        let why = format!("aborted by {}: {}", actor.host, a.reason.trim());
        let to = db.tx(|s| {
            let now = runs::get_run(s, run.remote_id)?;
            if job.is_none() {
                runs::transition_in(
                    s,
                    &now,
                    RunState::Cancelled,
                    actor,
                    &format!("{why}; withdrawn, its work items are free"),
                    Extra::default(),
                )?;
                return Ok(RunState::Cancelled);
            }
            let msg = format!(
                "{why}; job {} {}",
                job.as_deref().unwrap_or("-"),
                if cancelled {
                    "cancelled"
                } else {
                    "left alone (--no-cancel-job)"
                }
            );
            if now.state == RunState::Error {
                runs::record_fault_in(s, run.remote_id, fault::ABORTED, &msg, actor)?;
            } else {
                runs::transition_in(
                    s,
                    &now,
                    RunState::Error,
                    actor,
                    &msg,
                    Extra {
                        fault: Some(fault::ABORTED),
                        message: Some(Some(msg.clone())),
                        ..Extra::default()
                    },
                )?;
            }
            Ok(RunState::Error)
        })?;
        printer.info(format!(
            "run {}: {from} -> {to}{}",
            run.remote_id,
            match (&job, cancelled) {
                (Some(j), true) => format!(", job {j} cancelled"),
                (Some(j), false) => format!(", job {j} left alone"),
                (None, _) => ", work items free".to_string(),
            }
        ));
        Ok(Aborted {
            remote_id: run.remote_id,
            from: from.to_string(),
            to: to.to_string(),
            job_id: job,
            job_cancelled: cancelled,
        })
    })?;
    print_runs(printer, json, &done, |d| d.remote_id)
}

pub fn retry(
    db: &mut Db,
    a: RetryArgs,
    json: bool,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<ExitStatus> {
    let state = a.state.unwrap_or(RunState::Error);
    if !RETRYABLE.contains(&state) {
        return Err(exit::usage(format!(
            "retry takes runs in 'error' or 'full', not '{state}'"
        )));
    }
    if a.attempts < 1 {
        return Err(exit::usage("--attempts must be at least 1"));
    }
    let found = match a.remote_id {
        Some(id) => {
            let run = one_run(db, id)?;
            if !RETRYABLE.contains(&run.state) {
                return Err(exit::usage(format!(
                    "run {id} is '{}': retry takes runs in 'error' or 'full' (abort it first)",
                    run.state
                )));
            }
            vec![run]
        }
        None => runs_in(db, &[state], a.label.as_deref())?,
    };
    if found.is_empty() {
        return Err(exit::nothing_to_do(format!(
            "no runs in '{state}'{}",
            a.label
                .as_deref()
                .map(|l| format!(" of label '{l}'"))
                .unwrap_or_default()
        )));
    }
    let done = each_run(db, found, actor, printer, |db, run| {
        let out = db.tx(|s| {
            let now_run = runs::get_run(s, run.remote_id)?;
            let from = now_run.state;
            let mut r = Retried {
                remote_id: run.remote_id,
                from,
                to: from,
                withdrawn: 0,
                ready_again: 0,
                already_ready: 0,
                over_limit: 0,
            };
            if s.run_has_active(run.remote_id)? {
                r.withdrawn = s.run_component_count(run.remote_id)? as usize;
                runs::transition_in(
                    s,
                    &now_run,
                    RunState::Cancelled,
                    actor,
                    &format!(
                        "retry: {} components withdrawn, their work items free for the next define",
                        r.withdrawn
                    ),
                    Extra::default(),
                )?;
                r.to = RunState::Cancelled;
                return Ok(r);
            }
            let now = crate::db::now();
            for (_, w) in s.run_failed_components(run.remote_id, i64::MAX)? {
                match w.state {
                    ItemState::Ready => r.already_ready += 1,
                    ItemState::Abandoned if a.ignore_limit || w.attempts < a.attempts => {
                        r.ready_again += s.reset_item(
                            w.id,
                            ItemState::Abandoned,
                            ItemState::Ready,
                            now,
                        )?;
                    }
                    ItemState::Abandoned => r.over_limit += 1,
                    _ => {}
                }
            }
            let summary = format!(
                "retry: {} failed work items back to ready, {} ready already, {} at the attempt limit",
                r.ready_again, r.already_ready, r.over_limit
            );
            if from == RunState::Error {
                runs::transition_in(
                    s,
                    &now_run,
                    RunState::Full,
                    actor,
                    &summary,
                    Extra {
                        fault: Some(0),
                        message: Some(Some(summary.clone())),
                        ..Extra::default()
                    },
                )?;
                r.to = RunState::Full;
            } else {
                s.insert_history(&actor.history(Some(run.remote_id), None, None, &summary))?;
            }
            Ok(r)
        })?;
        printer.info(format!(
            "run {}: {} -> {}: {} withdrawn, {} back to ready, {} ready already, {} at the attempt limit",
            out.remote_id,
            out.from,
            out.to,
            out.withdrawn,
            out.ready_again,
            out.already_ready,
            out.over_limit
        ));
        if out.over_limit > 0 {
            printer.warn(format!(
                "run {}: {} work items stay abandoned after {} attempts; --ignore-limit puts them back too",
                out.remote_id, out.over_limit, a.attempts
            ));
        }
        Ok(out)
    })?;
    print_runs(printer, json, &done, |d| d.remote_id)
}
