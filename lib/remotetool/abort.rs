//! `remotetool abort`: stop work. A run not yet submitted is withdrawn
//! (`cancelled`, its work items free for the next define). A submitted run
//! has its job cancelled
//! (`scancel`, or the local job's session killed) and goes to `error` with
//! fault 40 and the reason; from there a person either resubmits it
//! (`remotetool set RUN pending`) or frees its work items (`remotetool
//! retry RUN`).

use serde::Serialize;

use super::args::AbortArgs;
use crate::cli::Session;
use crate::config::Config;
use crate::db::models::{Run, RunFilter};
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::runs::{self, Actor, Extra};
use crate::state::{fault, RunState};

/// Runs that can be aborted whatever they hold: not yet ended.
const OPEN: &[RunState] = &[
    RunState::New,
    RunState::Pending,
    RunState::Run,
    RunState::Auth,
];

#[derive(Debug, Serialize)]
pub struct Aborted {
    pub remote_id: i64,
    pub from: String,
    pub to: String,
    pub job_id: Option<String>,
    pub job_cancelled: bool,
}

/// Run `f` on each run, holding its lease; the first error is returned
/// after every run was tried.
pub(super) fn each_run<T>(
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

pub(super) fn one_run(db: &mut Db, remote_id: i64) -> anyhow::Result<Run> {
    db.read(|s| s.run(remote_id))?
        .ok_or_else(|| exit::usage(format!("no run with remote_id {remote_id}")))
}

/// The runs in these states (of this label).
pub(super) fn runs_in(
    db: &mut Db,
    states: &[RunState],
    label: Option<&str>,
) -> anyhow::Result<Vec<Run>> {
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

pub fn run(s: &mut Session, a: AbortArgs) -> anyhow::Result<ExitStatus> {
    let done = abort(s, a)?;
    s.printer.ids(&done, |d| d.remote_id)?;
    Ok(ExitStatus::Success)
}

/// The work of `abort`, as the command and the web view both do it: what was
/// done to each run.
pub fn abort(s: &mut Session, a: AbortArgs) -> anyhow::Result<Vec<Aborted>> {
    let (db, cfg, printer, actor) = s.parts();
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
    Ok(done)
}
