//! A run's state changes: every one checked against the table of legal
//! transitions ([`crate::state::check`]) and written with its history row
//! in the same transaction; reverting `auth`; and the site check that sends
//! a run to `auth` when its front end cannot be reached.

use serde::Serialize;

use super::actor::Actor;
use crate::chain::{Chain, Created};
use crate::db::models::{Run, RunFilter};
use crate::db::queries::RunChanges;
use crate::db::{self, Db, Store};
use crate::exit;
use crate::scheduler::Site;
use crate::state::{self, RunState};
use crate::transfer::Report;

/// Load a run or fail naming it.
pub fn get_run(s: &mut dyn Store, remote_id: i64) -> anyhow::Result<Run> {
    s.run(remote_id)?.ok_or_else(|| {
        exit::usage(format!(
            "no run with remote_id {remote_id}; `remotetool list` shows the runs"
        ))
    })
}

/// The run is in `state`, or a usage error naming its state and what the
/// tool takes (`what`, e.g. "exec takes pending runs").
pub fn expect_state(run: &Run, state: RunState, what: &str) -> anyhow::Result<()> {
    if run.state != state {
        return Err(exit::usage(format!(
            "run {} is '{}': {what}",
            run.remote_id, run.state
        )));
    }
    Ok(())
}

/// Extra columns a transition writes.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub fault: Option<i32>,
    pub message: Option<Option<String>>,
    pub job_id: Option<Option<String>>,
    pub attempt: Option<i32>,
}

/// Move a run from its current state to `to`, inside the caller's
/// transaction: checks the transition table, writes the state and its
/// history row, and releases the work items of a run that closes.
pub fn transition_in(
    s: &mut dyn Store,
    run: &Run,
    to: RunState,
    actor: &Actor,
    message: &str,
    extra: Extra,
) -> anyhow::Result<()> {
    let from = run.state;
    state::check(from, to).map_err(|e| exit::usage(format!("run {}: {e}", run.remote_id)))?;
    let now = db::now();
    let mut changes = RunChanges {
        updated_at: now,
        fault: extra.fault,
        message: extra.message,
        job_id: extra.job_id,
        attempt: extra.attempt,
        state_since: Some(now),
        // A run that moves on is no longer held back from `--next`.
        held_until: Some(None),
        fault_count: Some(0),
        ..RunChanges::to(to)
    };
    if to == RunState::Auth {
        changes.auth_return_state = Some(Some(from));
        changes.last_poll = Some(Some(now));
    } else if from == RunState::Auth {
        changes.auth_return_state = Some(None);
    }
    // Submitting and finishing count as polls: the next is due an interval on.
    if to == RunState::Run || from == RunState::Run {
        changes.last_poll = Some(Some(now));
    }
    if s.set_run_state(run.remote_id, from, &changes)? == 0 {
        return Err(exit::try_later(format!(
            "run {} left state '{from}' while this command worked on it; look with `remotetool show {}` and try again",
            run.remote_id, run.remote_id
        )));
    }
    // The tool's final transition gives its lease back in the same
    // commit: the release that follows it finds nothing to delete, and a
    // transaction that writes nothing costs no flush of the log.
    s.delete_lease(run.remote_id, Some((&actor.host, actor.pid)), None)?;
    if to.is_closed() && !from.is_closed() {
        // Cancelled: the items are free for a later define; else finished.
        s.close_components(run.remote_id, to != RunState::Cancelled, now)?;
    }
    s.insert_history(&actor.history(Some(run.remote_id), Some(from), Some(to), message))?;
    Ok(())
}

/// Move a run, as it is now in the database, to `to` in a transaction of
/// its own (see [`transition_in`]).
pub fn transition(
    db: &mut Db,
    remote_id: i64,
    to: RunState,
    actor: &Actor,
    message: &str,
    extra: Extra,
) -> anyhow::Result<()> {
    db.tx(|s| {
        let now = get_run(s, remote_id)?;
        transition_in(s, &now, to, actor, message, extra)
    })
}

/// Set a run's state by hand (a person's reason is required). A run set
/// `full` marks its work items done, and with its stage's chain (`next`)
/// makes the next stage's work items of the groups that leaves all done,
/// as poll does, in the same transaction; returns them.
pub fn set_state(
    db: &mut Db,
    remote_id: i64,
    to: RunState,
    reason: &str,
    actor: &Actor,
    next: Option<&Chain<'_>>,
) -> anyhow::Result<(RunState, RunState, Vec<Created>)> {
    if reason.trim().is_empty() {
        return Err(exit::usage(
            "--reason must say why the state is changed by hand",
        ));
    }
    db.tx(|s| {
        let run = get_run(s, remote_id)?;
        let from = run.state;
        let finishing = match next {
            Some(c) if to == RunState::Full && !from.is_closed() => Some(c),
            _ => None,
        };
        // Before the transition releases them.
        let members: Vec<i64> = match finishing {
            Some(_) => s
                .run_members(remote_id)?
                .iter()
                .map(|m| m.work_item_id)
                .collect(),
            None => Vec::new(),
        };
        transition_in(
            s,
            &run,
            to,
            actor,
            &format!("set by hand: {reason}"),
            Extra::default(),
        )?;
        let made = match finishing {
            Some(c) => crate::chain::after_done(s, c, &run.label, &members)?,
            None => Vec::new(),
        };
        if !made.is_empty() {
            s.insert_history(&actor.history(
                Some(remote_id),
                None,
                None,
                crate::chain::history_line(&made),
            ))?;
        }
        Ok((from, to, made))
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Reverted {
    pub remote_id: i64,
    pub from: RunState,
    pub to: RunState,
}

/// Runs in `auth` (by label or id) go back to the state they were in when
/// the connection was found down.
pub fn revert_auth(
    db: &mut Db,
    label: Option<&str>,
    remote_id: Option<i64>,
    actor: &Actor,
) -> anyhow::Result<Vec<Reverted>> {
    db.tx(|s| {
        let filter = RunFilter {
            states: vec![RunState::Auth],
            label: label.map(str::to_string),
            remote_id,
            ..RunFilter::default()
        };
        let runs = s.runs(&filter)?;
        if runs.is_empty() {
            let which = match (label, remote_id) {
                (_, Some(id)) => format!("run {id} is not in 'auth'"),
                (Some(l), None) => format!("no runs of label '{l}' are in 'auth'"),
                (None, None) => "no runs are in 'auth'".to_string(),
            };
            return Err(exit::nothing_to_do(which));
        }
        let mut out = Vec::new();
        for run in runs {
            let to = run.auth_return_state.unwrap_or(RunState::Pending);
            transition_in(
                s,
                &run,
                to,
                actor,
                "connection back: reverted from auth",
                Extra::default(),
            )?;
            out.push(Reverted {
                remote_id: run.remote_id,
                from: RunState::Auth,
                to,
            });
        }
        Ok(out)
    })
}

/// The site is reachable, or the run goes to `auth` (remembering where it
/// was) and the error says which host and what to do.
pub fn check_or_auth(db: &mut Db, run: &Run, site: &dyn Site, actor: &Actor) -> anyhow::Result<()> {
    let Err(e) = site.check() else {
        return Ok(());
    };
    let msg = exit::one_line(&e);
    transition(
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
