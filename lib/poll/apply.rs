//! Applying an ended job's results: each component's result is recorded
//! (its state, exit status, runtime, fault and record), then released (its
//! work item done, ready again or abandoned, and the result listed for the
//! pipeline's consumers), and the run settles. Without an apply command all
//! of it is one transaction. With one, the results are recorded first
//! (`apply_pending`), the command reads them, and only when it exits 0 are
//! they released and the run settled, in one transaction that also says it
//! was applied; a failed apply leaves the run in `run` with fault 50, and
//! the next poll runs the apply again, and nothing else.

use std::collections::HashMap;
use std::path::Path;

use crate::chain::{self, Chain, Created};
use crate::db::models::{NewResult, Run};
use crate::db::queries::ComponentChanges;
use crate::db::{self, Db, Store};
use crate::pipeline::{self, ResultLine};
use crate::printer::Printer;
use crate::recipe::Recipe;
use crate::runs::{self, Actor, Extra};
use crate::state::{fault, ComponentState, ItemState, JobPolicy, RunState};
use crate::target::Target;

use super::fetch::Fetched;
use crate::db::models::Member;

/// What applying the results did.
pub(super) struct Applied {
    pub(super) done: usize,
    pub(super) failed: usize,
    pub(super) retry: usize,
    pub(super) abandoned: usize,
    /// The next stage's work items made from groups this completed.
    pub(super) chained: Vec<Created>,
}

/// A recorded result, to be released.
struct Recorded {
    component: i64,
    work_item: i64,
    /// The work item's attempts before this one.
    attempts: i32,
    ok: bool,
}

/// The work item's state after an attempt.
fn item_state(ok: bool, attempts: i32, attempts_limit: i32) -> ItemState {
    if ok {
        ItemState::Done
    } else if attempts + 1 < attempts_limit {
        ItemState::Ready
    } else {
        ItemState::Abandoned
    }
}

/// Record every component's result that came back (all of them but, when
/// `partial`, those without a result, which go round again), inside the
/// caller's transaction. With `leave` the components leave the run in the
/// same write (they are released in this transaction); else they stay in
/// it until released (an apply command reads them first).
fn record(
    s: &mut dyn Store,
    members: &[Member],
    fetched: &Fetched,
    partial: bool,
    leave: bool,
) -> anyhow::Result<Vec<Recorded>> {
    let now = db::now();
    let mut out = Vec::new();
    let mut changes = Vec::with_capacity(members.len());
    for &Member {
        component_id: cid,
        work_item_id: wid,
        attempts,
        ..
    } in members
    {
        let rec = fetched.result_of.get(&cid);
        if partial && rec.is_none() {
            continue;
        }
        let output_error = fetched.output_failed.get(&cid);
        let ok = rec.is_some_and(|r| r.exit == 0) && output_error.is_none();
        let result = rec
            .map(|r| {
                let mut result = r.result.clone();
                if let Some(e) = output_error {
                    result.output_error = e.clone();
                }
                serde_json::to_string(&result)
            })
            .transpose()?;
        changes.push((
            cid,
            ComponentChanges {
                state: if ok {
                    ComponentState::Done
                } else {
                    ComponentState::Failed
                },
                active: !leave,
                attempts: 1,
                exit_status: rec.map(|r| r.exit),
                runtime: rec.map(|r| r.result.runtime),
                fault: match rec {
                    _ if ok => 0,
                    None => fault::COMPONENT_NO_RECORD,
                    Some(r) if r.exit != 0 => fault::COMPONENT_FAILED,
                    Some(_) => fault::COMPONENT_OUTPUT,
                },
                result,
                updated_at: now,
            },
        ));
        out.push(Recorded {
            component: cid,
            work_item: wid,
            attempts,
            ok,
        });
    }
    s.update_components(&changes)?;
    Ok(out)
}

/// The run's recorded results, as the database has them (a run waiting for
/// its apply command).
fn recorded_of(s: &mut dyn Store, remote_id: i64) -> anyhow::Result<Vec<Recorded>> {
    Ok(s.recorded_components(remote_id)?
        .into_iter()
        .map(|(c, w)| Recorded {
            component: c.id,
            work_item: w.id,
            attempts: w.attempts,
            ok: c.state == ComponentState::Done,
        })
        .collect())
}

/// Release recorded results, inside the caller's transaction: the
/// components have left the run (recorded so, or deactivated by the
/// caller); their work items are done, ready again (under the attempt
/// limit) or abandoned, and each result is listed for the
/// pipeline's consumers with its outputs here. With a chain, the groups
/// the done items complete get their next stage's work items.
fn release(
    s: &mut dyn Store,
    run: &Run,
    recorded: &[Recorded],
    attempts_limit: i32,
    outputs: &HashMap<i64, String>,
    next: Option<&Chain<'_>>,
    actor: &Actor,
) -> anyhow::Result<Applied> {
    let now = db::now();
    let mut a = Applied {
        done: 0,
        failed: 0,
        retry: 0,
        abandoned: 0,
        chained: Vec::new(),
    };
    let mut rows = Vec::with_capacity(recorded.len());
    // Work items by their new state: a statement per state, not per item.
    let mut items_to: HashMap<ItemState, Vec<i64>> = HashMap::new();
    for r in recorded {
        let item = item_state(r.ok, r.attempts, attempts_limit);
        match item {
            ItemState::Done => a.done += 1,
            ItemState::Ready => a.retry += 1,
            _ => a.abandoned += 1,
        }
        if !r.ok {
            a.failed += 1;
        }
        items_to.entry(item).or_default().push(r.work_item);
        rows.push(NewResult {
            component_id: r.component,
            remote_id: run.remote_id,
            work_item_id: r.work_item,
            attempt: r.attempts + 1,
            state: result_state(item),
            outputs: outputs
                .get(&r.component)
                .cloned()
                .unwrap_or_else(|| "[]".into()),
            applied_at: now,
        });
    }
    for (item, ids) in &items_to {
        s.set_work_items(ids, *item, true, now)?;
    }
    s.insert_results(&rows)?;
    if let Some(c) = next {
        let done: Vec<i64> = recorded
            .iter()
            .filter(|r| item_state(r.ok, r.attempts, attempts_limit) == ItemState::Done)
            .map(|r| r.work_item)
            .collect();
        a.chained = chain::after_done(s, c, &run.label, &done)?;
        if !a.chained.is_empty() {
            s.insert_history(&chained_history(run, &a.chained, actor))?;
        }
    }
    Ok(a)
}

/// One history row for the next stage's work items a release made.
fn chained_history(run: &Run, made: &[Created], actor: &Actor) -> crate::db::models::NewHistory {
    actor.history(Some(run.remote_id), None, None, chain::history_line(made))
}

/// A result's state for the pipeline: done, failed (tried again) or
/// abandoned.
fn result_state(item: ItemState) -> ItemState {
    match item {
        ItemState::Ready => ItemState::Failed,
        other => other,
    }
}

/// How the run settles once its results are released.
pub(super) enum Ending<'a> {
    /// The job ended: `full` or `error`.
    Ended { job_id: &'a str },
    /// The job was cut short: back to `new` for what did not come back
    /// (settled as ended when everything came back).
    Cut { why: &'a str, job_id: &'a str },
}

/// What a run's apply needs: the command rendered, and its limit.
pub(super) struct ApplyStep {
    command: String,
    limit: std::time::Duration,
}

impl ApplyStep {
    /// The recipe's apply command for this run, if it has one.
    pub(super) fn of(
        recipe: &Recipe,
        run: &Run,
        target: &Target,
    ) -> anyhow::Result<Option<ApplyStep>> {
        let Some(t) = &recipe.apply else {
            return Ok(None);
        };
        let values = RunValues { run, target };
        let command = t.render(&values, true).map_err(|e| {
            crate::exit::usage(format!(
                "recipe {}: the apply command's @{}@ {}",
                e.origin, e.placeholder, e.problem
            ))
        })?;
        Ok(Some(ApplyStep {
            command,
            limit: recipe.apply_timeout,
        }))
    }
}

/// The placeholders of a run-level command: `@LABEL@`, `@STAGE@`,
/// `@REMOTE_ID@`, then the target's vars.
struct RunValues<'a> {
    run: &'a Run,
    target: &'a Target,
}

impl crate::recipe::Values for RunValues<'_> {
    fn var(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match name {
            "LABEL" => Some(Cow::Borrowed(self.run.label.as_str())),
            "STAGE" => Some(Cow::Borrowed(self.run.stage.as_str())),
            "REMOTE_ID" => Some(Cow::Owned(self.run.remote_id.to_string())),
            _ => self
                .target
                .config
                .vars
                .get(name)
                .map(|v| Cow::Borrowed(v.as_str())),
        }
    }
    fn input(&self, _idx: usize) -> &str {
        ""
    }
    fn output(&self, _idx: usize) -> &str {
        ""
    }
}

/// What applying needs of the poll: the run, where its files are here, the
/// attempt limit, the stage its work feeds, and who acts.
#[derive(Clone, Copy)]
pub(super) struct Settling<'a> {
    pub(super) run: &'a Run,
    pub(super) local_run: &'a Path,
    pub(super) attempts_limit: i32,
    pub(super) next: Option<&'a Chain<'a>>,
    pub(super) printer: &'a Printer,
    pub(super) actor: &'a Actor,
}

/// Record the results, run the apply command (if any), release them and
/// settle the run. Returns the run's new state and what was applied.
pub(super) fn apply_and_settle(
    db: &mut Db,
    how: Settling<'_>,
    members: &[Member],
    fetched: &Fetched,
    ending: Ending<'_>,
    apply: Option<&ApplyStep>,
) -> anyhow::Result<(RunState, Applied)> {
    let Settling {
        run,
        local_run,
        attempts_limit,
        next,
        actor,
        ..
    } = how;
    let partial = matches!(ending, Ending::Cut { .. });
    let Some(step) = apply else {
        let outputs = pipeline::outputs_here(&local_run.join("outputs.list"))?;
        return db.tx(|s| {
            let recorded = record(s, members, fetched, partial, true)?;
            let a = release(s, run, &recorded, attempts_limit, &outputs, next, actor)?;
            let to = settle(s, run, &ending, &a, actor)?;
            Ok((to, a))
        });
    };
    db.tx(|s| {
        record(s, members, fetched, partial, false)?;
        runs::set_columns_in(s, run.remote_id, |_, c| c.apply_pending = Some(true))
    })?;
    run_the_apply(db, how, step, ending)
}

/// The apply step of a run whose results are recorded (now, or by an
/// earlier poll whose apply failed): the command reads the results; when
/// it exits 0 they are released and the run settles, in one transaction
/// that says it was applied. Otherwise fault 50, and the run stays.
pub(super) fn run_the_apply(
    db: &mut Db,
    how: Settling<'_>,
    step: &ApplyStep,
    ending: Ending<'_>,
) -> anyhow::Result<(RunState, Applied)> {
    let Settling {
        run,
        local_run,
        attempts_limit,
        next,
        printer,
        actor,
    } = how;
    let outputs = pipeline::outputs_here(&local_run.join("outputs.list"))?;
    let rows = db.read(|s| s.recorded_components(run.remote_id))?;
    let lines: Vec<ResultLine> = rows
        .iter()
        .map(|(c, w)| {
            let ok = c.state == ComponentState::Done;
            let item = item_state(ok, w.attempts, attempts_limit);
            ResultLine::pending(
                c,
                w,
                w.attempts + 1,
                result_state(item),
                outputs.get(&c.id).map(String::as_str).unwrap_or("[]"),
            )
        })
        .collect();
    let key = format!("run-{}-a{}", run.remote_id, run.attempt);
    printer.debug(format!(
        "run {}: apply `{}` with {} results (key {key})",
        run.remote_id,
        step.command,
        lines.len()
    ));
    let outcome = pipeline::run_apply(
        &step.command,
        pipeline::json_lines(&lines)?,
        step.limit,
        &[
            ("OFFLOAD_APPLY_KEY", key.clone()),
            ("OFFLOAD_REMOTE_ID", run.remote_id.to_string()),
        ],
    )?;
    if let Err(f) = outcome {
        let msg = format!(
            "apply `{}` {}: {}; its results stay recorded, the next poll runs the apply again",
            step.command,
            f.how,
            if f.stderr_tail.is_empty() {
                "(nothing on stderr)"
            } else {
                &f.stderr_tail
            }
        );
        db.tx(|s| {
            runs::record_fault_in(s, run.remote_id, fault::APPLY, &msg, actor)?;
            runs::set_columns_in(s, run.remote_id, |_, c| c.last_poll = Some(Some(db::now())))
        })?;
        return Err(anyhow::anyhow!("run {}: {msg}", run.remote_id));
    }
    let n = lines.len();
    db.tx(|s| {
        let recorded = recorded_of(s, run.remote_id)?;
        let ids: Vec<i64> = recorded.iter().map(|r| r.component).collect();
        s.deactivate_components(&ids)?;
        let a = release(s, run, &recorded, attempts_limit, &outputs, next, actor)?;
        s.insert_history(&actor.history(
            Some(run.remote_id),
            None,
            None,
            format!(
                "applied: `{}` exited 0 with {n} results (key {key})",
                step.command
            ),
        ))?;
        let to = settle(s, run, &ending, &a, actor)?;
        runs::set_columns_in(s, run.remote_id, |_, c| c.apply_pending = Some(false))?;
        Ok((to, a))
    })
}

/// Settle the run as `ending` says, inside the caller's transaction.
fn settle(
    s: &mut dyn Store,
    run: &Run,
    ending: &Ending<'_>,
    a: &Applied,
    actor: &Actor,
) -> anyhow::Result<RunState> {
    match ending {
        Ending::Ended { job_id } => settle_ended(s, run, job_id, a, actor),
        Ending::Cut { why, job_id } => settle_cut(s, run, why, job_id, a, actor),
    }
}

/// A job cut short after some components came back, inside the caller's
/// transaction: those were applied; the run goes back to `new` as its next
/// attempt, to be prepared again for the components that did not come back
/// (sized anew from the runtimes just measured) and submitted again. When
/// every component came back there is no rest: the run settles as after a
/// job that ended, whatever the scheduler called the ending.
fn settle_cut(
    s: &mut dyn Store,
    run: &Run,
    why: &str,
    job_id: &str,
    a: &Applied,
    actor: &Actor,
) -> anyhow::Result<RunState> {
    let left = s.run_component_count(run.remote_id)?;
    if left == 0 {
        return settle_ended(s, run, job_id, a, actor);
    }
    let now_run = runs::get_run(s, run.remote_id)?;
    let msg = format!(
        "{why}: {} components came back ({} done, {} failed); the other {left} go again as attempt {}",
        a.done + a.failed,
        a.done,
        a.failed,
        now_run.attempt + 1
    );
    runs::transition_in(
        s,
        &now_run,
        RunState::New,
        actor,
        &msg,
        Extra {
            attempt: Some(now_run.attempt + 1),
            job_id: Some(None),
            // What came back was applied: no fault of an earlier try stays.
            fault: Some(0),
            message: Some(Some(msg.clone())),
        },
    )?;
    Ok(RunState::New)
}

/// The run ends, inside the caller's transaction: `full` when none of its
/// components failed, in this attempt or an earlier one (a job cut short
/// after some failed), or its policy ignores failures; else `error` naming
/// the failed.
fn settle_ended(
    s: &mut dyn Store,
    run: &Run,
    job_id: &str,
    a: &Applied,
    actor: &Actor,
) -> anyhow::Result<RunState> {
    let now_run = runs::get_run(s, run.remote_id)?;
    let failed_ids = s.failed_in_run(run.remote_id)?;
    let earlier = failed_ids.len().saturating_sub(a.failed);
    let summary = format!(
        "{} done, {} failed ({} to retry, {} abandoned){}",
        a.done,
        a.failed,
        a.retry,
        a.abandoned,
        if earlier > 0 {
            format!("; {earlier} failed in earlier attempts")
        } else {
            String::new()
        }
    );
    if failed_ids.is_empty() || now_run.job_policy == JobPolicy::Ignore {
        runs::transition_in(
            s,
            &now_run,
            RunState::Full,
            actor,
            &format!("job {job_id} ended: {summary}"),
            Extra {
                fault: Some(0),
                message: Some(None),
                ..Extra::default()
            },
        )?;
        return Ok(RunState::Full);
    }
    let ids: Vec<String> = failed_ids.iter().take(10).map(|i| i.to_string()).collect();
    let msg = format!(
        "job {job_id} ended: {summary}; failed {}/{}{}",
        run.stage,
        ids.join(","),
        if failed_ids.len() > 10 { ",..." } else { "" }
    );
    runs::transition_in(
        s,
        &now_run,
        RunState::Error,
        actor,
        &msg,
        Extra {
            fault: Some(fault::COMPONENTS),
            message: Some(Some(msg.clone())),
            ..Extra::default()
        },
    )?;
    Ok(RunState::Error)
}
