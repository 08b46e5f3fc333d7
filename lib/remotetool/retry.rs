//! `remotetool retry`: failed work put back. A run in `error` whose
//! components never came back (aborted, exec or site failure) is withdrawn
//! and its work items freed. A run whose results were applied has its
//! failed work items put back to `ready` (those under the attempt limit,
//! or all with `--ignore-limit`) and is closed `full`.

use serde::Serialize;

use super::abort::{each_run, one_run, runs_in};
use super::args::RetryArgs;
use crate::cli::Session;
use crate::exit::{self, ExitStatus};
use crate::runs::{self, Extra};
use crate::state::{ItemState, RunState};

/// Runs whose failed work `retry` puts back.
const RETRYABLE: &[RunState] = &[RunState::Error, RunState::Full];

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

pub fn run(s: &mut Session, a: RetryArgs) -> anyhow::Result<ExitStatus> {
    let done = retry(s, a)?;
    s.printer.ids(&done, |d| d.remote_id)?;
    Ok(ExitStatus::Success)
}

/// The work of `retry`, as the command and the web view both do it: what was
/// done to each run.
pub fn retry(s: &mut Session, a: RetryArgs) -> anyhow::Result<Vec<Retried>> {
    let Session {
        db, printer, actor, ..
    } = s;
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
    Ok(done)
}
