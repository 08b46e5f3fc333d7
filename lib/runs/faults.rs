//! Faults and holds: a failure's fault recorded on its run, the run held
//! back from `--next` (a while after a throttle, until a person acts after
//! a fault), and `unfault`, a person's word that it may go on.

use std::time::Duration;

use serde::Serialize;

use super::actor::Actor;
use super::transitions::get_run;
use crate::db::models::{Run, RunFilter};
use crate::db::queries::RunChanges;
use crate::db::{self, Db, Store};
use crate::exit::{self, ExitStatus};
use crate::state::RunState;

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

/// How long a run is held after its `n`th throttle in a row: 60 s x
/// 2^(n-1), at most an hour.
pub fn back_off(n: i32) -> Duration {
    let n = n.clamp(1, 7) as u32;
    Duration::from_secs((60u64 << (n - 1)).min(3600))
}

/// Failures a person must fix (not "try later", not "auth").
pub fn needs_a_person(_run: &Run, e: &anyhow::Error) -> bool {
    matches!(exit::status_of(e), ExitStatus::Failure | ExitStatus::Usage)
}
