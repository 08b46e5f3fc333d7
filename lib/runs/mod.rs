//! The life of remote runs in the database: defining them from ready work
//! items, moving them between states (always with a history row, in the same
//! transaction), reverting `auth`, pausing tools; which process works on
//! which run ([`claims`]); where a run's files are ([`paths`]).

use std::time::Duration;

use serde::Serialize;

use crate::chain::{Chain, Created};
use crate::db::models::{Control, NewHistory, NewRun, Run, RunFilter};
use crate::db::queries::RunChanges;
use crate::db::{self, Db, Store};
use crate::exit;
use crate::state::{self, JobPolicy, RunState};

pub mod claims;
pub mod paths;

pub use claims::{
    back_off, claim, claim_named, claim_next, claim_next_in, holder_gone, is_throttled,
    needs_a_person, pid_alive, release, throttled, work_on, Gone, Next, OnFailure, Throttled,
    Which, Work, LEASE_STALE,
};
pub use paths::local_run_dir;

/// Times a work item is tried in all before it is abandoned (poll's and
/// retry's `--attempts`).
pub const DEFAULT_ATTEMPTS: i32 = 2;

/// The tools whose work can be paused.
pub const PAUSABLE: &[&str] = &["define", "prepare", "exec", "poll", "xfer"];

/// The tools that can be paused for one target only (those that claim
/// runs with `--next`).
pub const PAUSABLE_PER_TARGET: &[&str] = &["prepare", "exec", "poll"];

/// The name this host goes by in leases, history and `[hosts]` of the
/// configuration: `$OFFLOAD_HOSTNAME`, else the system's host name.
pub fn this_host() -> String {
    std::env::var("OFFLOAD_HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
}

/// Who is acting: written into every history row.
#[derive(Debug, Clone)]
pub struct Actor {
    pub tool: String,
    pub host: String,
    pub pid: i32,
    /// The command line, shell-quoted, enough to run it again.
    pub command: String,
}

impl Actor {
    pub fn current(tool: &str) -> Actor {
        let args: Vec<String> = std::env::args().collect();
        Actor {
            tool: tool.to_string(),
            host: this_host(),
            pid: std::process::id() as i32,
            command: crate::shell::join(args.iter().map(String::as_str)),
        }
    }

    pub fn history(
        &self,
        remote_id: Option<i64>,
        from: Option<RunState>,
        to: Option<RunState>,
        message: impl Into<String>,
    ) -> NewHistory {
        NewHistory {
            remote_id,
            at: db::now(),
            host: self.host.clone(),
            pid: self.pid,
            tool: self.tool.clone(),
            from_state: from,
            to_state: to,
            message: Some(message.into()),
            command: Some(self.command.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DefineRequest {
    pub label: String,
    pub stage: String,
    pub limit: Option<i64>,
    pub path_base: String,
    pub target: Option<String>,
    pub job_policy: JobPolicy,
}

#[derive(Debug, Clone, Serialize)]
pub struct Defined {
    pub remote_id: i64,
    pub components: usize,
    pub label: String,
    pub stage: String,
    pub path_base: String,
}

/// Refuse to work while a tool is paused (exit "try later").
pub fn ensure_not_paused(s: &mut dyn Store, tool: &str) -> anyhow::Result<()> {
    check_paused(&s.controls()?, tool)
}

/// [`ensure_not_paused`] over control rows already read.
pub fn check_paused(controls: &[Control], tool: &str) -> anyhow::Result<()> {
    if let Some(c) = controls.iter().find(|c| c.tool == tool && c.paused) {
        let why = c
            .reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        return Err(exit::try_later(format!(
            "{tool} is paused (since {} by {}{why}); `remotetool resume {tool}` switches it on",
            c.changed_at.format("%Y-%m-%d %H:%M:%S"),
            c.changed_by
        )));
    }
    Ok(())
}

/// The `control` row of a tool paused for one target: `TOOL@TARGET`.
pub fn pause_key(tool: &str, target: &str) -> String {
    format!("{tool}@{target}")
}

/// (tool, target) of a per-target control row.
pub fn split_pause_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('@')
}

/// The targets `tool` is paused for.
pub fn paused_targets(controls: &[Control], tool: &str) -> Vec<String> {
    controls
        .iter()
        .filter(|c| c.paused)
        .filter_map(|c| split_pause_key(&c.tool))
        .filter(|(t, _)| *t == tool)
        .map(|(_, target)| target.to_string())
        .collect()
}

/// Refuse to work on a run of `target` while `tool` is paused for it
/// (exit "try later").
pub fn ensure_target_not_paused(s: &mut dyn Store, tool: &str, target: &str) -> anyhow::Result<()> {
    let key = pause_key(tool, target);
    if let Some(c) = s
        .controls()?
        .into_iter()
        .find(|c| c.tool == key && c.paused)
    {
        let why = c.reason.map(|r| format!(": {r}")).unwrap_or_default();
        return Err(exit::try_later(format!(
            "{tool} is paused for target '{target}' (since {} by {}{why}); \
             `remotetool resume {tool} --target {target}` switches it on",
            c.changed_at.format("%Y-%m-%d %H:%M:%S"),
            c.changed_by
        )));
    }
    Ok(())
}

/// Register the ready work items of a label and stage as one new run.
/// Two defines racing on the same items never share one: the database's
/// unique index on active components refuses the loser, which then retries
/// and finds what is left.
pub fn define(db: &mut Db, req: &DefineRequest, actor: &Actor) -> anyhow::Result<Defined> {
    if req.limit.is_some_and(|n| n < 1) {
        return Err(exit::usage("--limit must be at least 1"));
    }
    let mut attempt = 0;
    loop {
        let result = db.tx(|s| define_in(s, req, actor));
        match result {
            Err(e) if db::is_unique_violation(&e) && attempt < 8 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20 * attempt));
            }
            Err(e) if db::is_unique_violation(&e) => {
                return Err(exit::try_later(format!(
                    "other processes kept taking the same work items ({e}); try again"
                )))
            }
            r => return r,
        }
    }
}

fn define_in(s: &mut dyn Store, req: &DefineRequest, actor: &Actor) -> anyhow::Result<Defined> {
    ensure_not_paused(s, "define")?;
    let (label, stage) = (req.label.as_str(), req.stage.as_str());
    if s.count_items(Some(label), None, None)? == 0 {
        let labels = s.distinct_labels()?;
        let known = if labels.is_empty() {
            "the database has no work items yet".to_string()
        } else {
            format!("known labels: {}", abbreviate(&labels))
        };
        return Err(exit::usage(format!(
            "no work items with label '{label}' ({known}); import them with `remotetool import`"
        )));
    }
    if s.count_items(Some(label), Some(stage), None)? == 0 {
        let stages = s.distinct_stages(label)?;
        return Err(exit::usage(format!(
            "label '{label}' has no work items of stage '{stage}' (its stages: {})",
            stages.join(", ")
        )));
    }
    let now = db::now();
    let remote_id = s.insert_run(&NewRun {
        state: RunState::New,
        stage,
        label,
        path_base: &req.path_base,
        target: req.target.as_deref(),
        job_policy: req.job_policy,
        attempt: 0,
        fault: 0,
        created_at: now,
        updated_at: now,
        state_since: now,
    })?;
    let n = s.claim_ready_items(remote_id, label, stage, req.limit, now)?;
    if n == 0 {
        // Returning an error rolls the new run back.
        return Err(exit::nothing_to_do(format!(
            "no ready work items of label '{label}' stage '{stage}': all are in runs or finished"
        )));
    }
    s.insert_history(&actor.history(
        Some(remote_id),
        None,
        Some(RunState::New),
        format!("defined with {n} components of {stage}/{label}"),
    ))?;
    Ok(Defined {
        remote_id,
        components: n,
        label: label.to_string(),
        stage: stage.to_string(),
        path_base: req.path_base.clone(),
    })
}

/// Names joined, the first ten and a count when there are more.
pub fn abbreviate(names: &[String]) -> String {
    if names.len() <= 10 {
        names.join(", ")
    } else {
        format!("{}, ... ({} in all)", names[..10].join(", "), names.len())
    }
}

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

/// Every name is a tool that can be paused (and waited for).
pub fn check_tools(tools: &[String]) -> anyhow::Result<()> {
    match tools.iter().find(|t| !PAUSABLE.contains(&t.as_str())) {
        Some(t) => Err(exit::usage(format!(
            "unknown tool '{t}' (tools that can be paused: {})",
            PAUSABLE.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Pause or resume tools; each change is recorded in the history.
pub fn set_paused(
    db: &mut Db,
    tools: &[String],
    paused: bool,
    reason: Option<&str>,
    actor: &Actor,
) -> anyhow::Result<()> {
    set_paused_for(db, tools, None, paused, reason, actor)
}

/// Pause or resume tools, for one target only when `target` is given
/// (prepare, exec and poll: their `--next` leaves that target's runs
/// alone, and a run of it named by id is refused).
pub fn set_paused_for(
    db: &mut Db,
    tools: &[String],
    target: Option<&str>,
    paused: bool,
    reason: Option<&str>,
    actor: &Actor,
) -> anyhow::Result<()> {
    check_tools(tools)?;
    if target.is_some() {
        if let Some(t) = tools
            .iter()
            .find(|t| !PAUSABLE_PER_TARGET.contains(&t.as_str()))
        {
            return Err(exit::usage(format!(
                "'{t}' cannot be paused for one target (those that can: {})",
                PAUSABLE_PER_TARGET.join(", ")
            )));
        }
    }
    db.tx(|s| {
        for t in tools {
            let key = match target {
                Some(target) => pause_key(t, target),
                None => t.clone(),
            };
            s.set_control(&Control {
                tool: key,
                paused,
                reason: reason.map(str::to_string),
                changed_at: db::now(),
                changed_by: format!("{}:{}", actor.host, actor.pid),
            })?;
            let what = if paused { "paused" } else { "resumed" };
            let whom = target
                .map(|x| format!(" for target '{x}'"))
                .unwrap_or_default();
            let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
            s.insert_history(&actor.history(None, None, None, format!("{what} {t}{whom}{why}")))?;
        }
        Ok(())
    })
}

/// Change some of a run's columns (not its state), inside the caller's
/// transaction: `f` sets them on changes that keep the state it has now.
pub fn set_columns_in(
    s: &mut dyn Store,
    remote_id: i64,
    f: impl FnOnce(&Run, &mut RunChanges),
) -> anyhow::Result<()> {
    let run = get_run(s, remote_id)?;
    let mut changes = RunChanges::to(run.state);
    f(&run, &mut changes);
    s.set_run_state(remote_id, run.state, &changes)?;
    Ok(())
}

/// Note a failure on a run without changing its state.
pub fn record_fault(
    db: &mut Db,
    remote_id: i64,
    fault: i32,
    message: &str,
    actor: &Actor,
) -> anyhow::Result<()> {
    db.tx(|s| record_fault_in(s, remote_id, fault, message, actor))
}

/// [`record_fault`] inside the caller's transaction.
pub fn record_fault_in(
    s: &mut dyn Store,
    remote_id: i64,
    fault: i32,
    message: &str,
    actor: &Actor,
) -> anyhow::Result<()> {
    let run = get_run(s, remote_id)?;
    let changes = RunChanges {
        fault: Some(fault),
        message: Some(Some(message.to_string())),
        ..RunChanges::to(run.state)
    };
    s.set_run_state(remote_id, run.state, &changes)?;
    s.insert_history(&actor.history(
        Some(remote_id),
        None,
        None,
        format!("fault {fault}: {message}"),
    ))?;
    Ok(())
}

/// Record a fault on a run (as [`record_fault`]) and hold it back from
/// `--next` until a person acts on it, counting the fault in a row.
pub fn record_fault_and_hold(
    db: &mut Db,
    remote_id: i64,
    fault: i32,
    message: &str,
    actor: &Actor,
) -> anyhow::Result<()> {
    db.tx(|s| {
        record_fault_in(s, remote_id, fault, message, actor)?;
        let run = get_run(s, remote_id)?;
        s.set_hold(
            remote_id,
            Some(db::models::held_for_a_person()),
            run.fault_count + 1,
        )?;
        s.insert_history(&actor.history(
            Some(remote_id),
            None,
            None,
            format!(
                "held back from --next until a person acts (`remotetool unfault {remote_id}`); fault {} in a row",
                run.fault_count + 1
            ),
        ))?;
        Ok(())
    })
}

/// Hold a run back from `--next` for [`back_off`] of its faults in a row
/// (this one counted), with `why` as its message; until when.
pub fn hold_back_off(
    db: &mut Db,
    remote_id: i64,
    why: &str,
    actor: &Actor,
) -> anyhow::Result<chrono::NaiveDateTime> {
    db.tx(|s| {
        let run = get_run(s, remote_id)?;
        let n = run.fault_count + 1;
        let until = db::now() + chrono::TimeDelta::from_std(back_off(n)).expect("at most an hour");
        let changes = RunChanges {
            held_until: Some(Some(until)),
            fault_count: Some(n),
            message: Some(Some(why.to_string())),
            ..RunChanges::to(run.state)
        };
        s.set_run_state(remote_id, run.state, &changes)?;
        s.insert_history(&actor.history(
            Some(remote_id),
            None,
            None,
            format!(
                "held back from --next until {} ({} in a row): {why}",
                until.format("%Y-%m-%d %H:%M:%S"),
                n
            ),
        ))?;
        Ok(until)
    })
}

/// A run's work succeeded: its hold and its count of faults in a row end.
pub fn end_hold(db: &mut Db, remote_id: i64, actor: &Actor) -> anyhow::Result<()> {
    db.tx(|s| {
        s.set_hold(remote_id, None, 0)?;
        s.insert_history(&actor.history(
            Some(remote_id),
            None,
            None,
            "worked: no longer held back",
        ))?;
        Ok(())
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Unfaulted {
    pub remote_id: i64,
    pub state: RunState,
    /// The fault it had (0: only held).
    pub fault: i32,
    pub message: Option<String>,
    pub held_until: Option<chrono::NaiveDateTime>,
}

/// A person has acted on runs (by id or label): their fault and their
/// hold are cleared, so `--next` takes them again; one history row each.
/// A run in `error` is left to `set` or `retry`.
pub fn unfault(
    db: &mut Db,
    remote_id: Option<i64>,
    label: Option<&str>,
    reason: Option<&str>,
    actor: &Actor,
) -> anyhow::Result<Vec<Unfaulted>> {
    db.tx(|s| {
        let runs = match remote_id {
            Some(id) => vec![get_run(s, id)?],
            None => s.runs(&RunFilter {
                label: label.map(str::to_string),
                ..RunFilter::default()
            })?,
        };
        let mut out = Vec::new();
        for run in runs {
            let st = run.state;
            let faulted = run.fault != 0 || run.held_until.is_some() || run.fault_count != 0;
            if st.is_closed() || st == RunState::Error || !faulted {
                if remote_id.is_some() {
                    let why = if st == RunState::Error {
                        format!(
                            "run {} is 'error': `remotetool set {} STATE --reason ...` or `remotetool retry {}` acts on it",
                            run.remote_id, run.remote_id, run.remote_id
                        )
                    } else if st.is_closed() {
                        format!("run {} is '{}': nothing to clear", run.remote_id, run.state)
                    } else {
                        format!("run {} has no fault and is not held", run.remote_id)
                    };
                    return Err(if st == RunState::Error {
                        exit::usage(why)
                    } else {
                        exit::nothing_to_do(why)
                    });
                }
                continue;
            }
            let changes = RunChanges {
                fault: Some(0),
                message: Some(None),
                held_until: Some(None),
                fault_count: Some(0),
                ..RunChanges::to(run.state)
            };
            s.set_run_state(run.remote_id, run.state, &changes)?;
            let was = format!(
                "fault {}{}",
                run.fault,
                run.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
            s.insert_history(&actor.history(
                Some(run.remote_id),
                None,
                None,
                format!("unfaulted by hand{why}: was {was}; --next takes it again"),
            ))?;
            out.push(Unfaulted {
                remote_id: run.remote_id,
                state: run.state,
                fault: run.fault,
                message: run.message.clone(),
                held_until: run.held_until,
            });
        }
        if out.is_empty() {
            return Err(exit::nothing_to_do(format!(
                "no runs of label '{}' have a fault or are held back",
                label.unwrap_or_default()
            )));
        }
        Ok(out)
    })
}
