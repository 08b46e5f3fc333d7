//! The status gathered, a section at a time, by reading only.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;

use super::{Attention, Group, Held, Holder, Oldest, Status, Worker};
use crate::config::Config;
use crate::db::models::{Control, ItemGroup, Run, RunFilter};
use crate::db::Db;
use crate::exit;
use crate::masters;
use crate::printer::human_duration;
use crate::remotetool::args::StatusArgs;
use crate::remotetool::refresh_auth::REFRESH_ROW;
use crate::state::{ComponentState, ItemState, RunState, ALL, POLL_FAILURES_NEED_A_PERSON};
use crate::table;

/// Gather the status (reads only).
pub fn gather(db: &mut Db, cfg: &Config, a: &StatusArgs) -> anyhow::Result<Status> {
    let at = match &a.at {
        Some(t) => parse_at(t)?,
        None => crate::db::now(),
    };
    let (groups, item_groups) = groups(db)?;
    let runs = open_runs(db)?;
    let attention: Vec<Attention> = runs
        .iter()
        .filter_map(|r| {
            needs_a_person(r, at, a.stuck_after).map(|why| Attention {
                remote_id: r.remote_id,
                state: r.state,
                label: r.label.clone(),
                stage: r.stage.clone(),
                since: r.state_since,
                seconds: (at - r.state_since).num_seconds(),
                why,
            })
        })
        .collect();
    let masters = if a.no_masters {
        None
    } else {
        Some(masters::all_masters(cfg, at))
    };
    let (paused, refresh_since) = pauses(db)?;
    let masters_ok = masters.as_ref().is_none_or(|m| m.iter().all(|m| m.alive));
    Ok(Status {
        at,
        moving: attention.is_empty() && masters_ok,
        groups,
        oldest: oldest(&runs, at),
        attention,
        masters,
        paused,
        refresh_since,
        holders: holders(db, at)?,
        workers: workers(db, at)?,
        held: held(db, at)?,
        blocked: blocked(db, cfg, a, &item_groups)?,
    })
}

fn parse_at(at: &str) -> anyhow::Result<NaiveDateTime> {
    NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S").map_err(|e| {
        exit::usage(format!(
            "--at {at:?} is not a time like \"2026-11-25 12:00:00\" ({e})"
        ))
    })
}

/// Runs and work items per label and stage (and the work items per state,
/// which [`blocked`] reads again).
fn groups(db: &mut Db) -> anyhow::Result<(Vec<Group>, Vec<ItemGroup>)> {
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let run_groups = db.read(|s| s.run_groups())?;
    let item_groups = db.read(|s| s.item_groups())?;
    let active = db.read(|s| s.active_item_groups())?;
    let components = db.read(|s| s.component_report(None, None))?;
    for g in &run_groups {
        *get(&mut groups, &g.label, &g.stage)
            .runs
            .entry(g.state.to_string())
            .or_default() += g.runs;
    }
    for i in &item_groups {
        let g = get(&mut groups, &i.label, &i.stage);
        match i.state {
            ItemState::Ready => g.waiting += i.items,
            ItemState::Done => g.done += i.items,
            ItemState::Abandoned => g.abandoned += i.items,
            ItemState::Failed => {}
        }
    }
    for i in &active {
        let g = get(&mut groups, &i.label, &i.stage);
        g.in_runs += i.items;
        g.waiting -= i.items;
    }
    for c in &components {
        if c.state == ComponentState::Failed {
            get(&mut groups, &c.label, &c.stage).failed += c.components;
        }
    }
    Ok((groups.into_values().collect(), item_groups))
}

fn get<'a>(
    groups: &'a mut BTreeMap<(String, String), Group>,
    label: &str,
    stage: &str,
) -> &'a mut Group {
    groups
        .entry((label.to_string(), stage.to_string()))
        .or_insert_with(|| Group {
            label: label.to_string(),
            stage: stage.to_string(),
            runs: ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect(),
            ..Group::default()
        })
}

/// The runs not closed.
fn open_runs(db: &mut Db) -> anyhow::Result<Vec<Run>> {
    let open: Vec<RunState> = ALL.iter().copied().filter(|s| !s.is_closed()).collect();
    db.read(|s| {
        s.runs(&RunFilter {
            states: open,
            ..RunFilter::default()
        })
    })
}

/// The oldest run in each open state, and how many are in it.
fn oldest(runs: &[Run], at: NaiveDateTime) -> Vec<Oldest> {
    let secs = |t: NaiveDateTime| (at - t).num_seconds();
    let mut oldest: Vec<Oldest> = Vec::new();
    for st in ALL.iter().filter(|s| !s.is_closed()) {
        let of: Vec<_> = runs.iter().filter(|r| r.state == *st).collect();
        if let Some(r) = of.iter().min_by_key(|r| (r.state_since, r.remote_id)) {
            oldest.push(Oldest {
                state: *st,
                runs: of.len() as i64,
                remote_id: r.remote_id,
                since: r.state_since,
                seconds: secs(r.state_since),
            });
        }
    }
    oldest
}

/// Why a run needs a person, if it does: a fault, a poll failing again and
/// again, a run not polled for `stuck_after` seconds, or one waiting for
/// the auth refresh.
fn needs_a_person(r: &Run, at: NaiveDateTime, stuck_after: i64) -> Option<String> {
    let secs = |t: NaiveDateTime| (at - t).num_seconds();
    match r.state {
        RunState::Run | RunState::New if r.fault == crate::state::fault::LOCAL => Some(format!(
            "a write here failed, fault {}: {}",
            r.fault,
            r.message.as_deref().unwrap_or("(no message)")
        )),
        RunState::Run if r.fault == crate::state::fault::APPLY => Some(format!(
            "apply failed, fault {}: {}",
            r.fault,
            r.message.as_deref().unwrap_or("(no message)")
        )),
        RunState::Run if r.poll_failures >= POLL_FAILURES_NEED_A_PERSON => Some(format!(
            "poll failed {} times in a row since {}: {}",
            r.poll_failures,
            r.poll_failed_since
                .map(|t| table::time(&t))
                .unwrap_or_else(|| "-".into()),
            r.poll_error.as_deref().unwrap_or("(no message)")
        )),
        RunState::Run => {
            let last = r.last_poll.unwrap_or(r.state_since);
            (secs(last) > stuck_after).then(|| {
                format!(
                    "not polled for {} (job {})",
                    human_duration(secs(last)),
                    r.job_id.as_deref().unwrap_or("-")
                )
            })
        }
        RunState::Auth => Some(format!(
            "waiting for the auth refresh (was {})",
            r.auth_return_state.unwrap_or(RunState::Pending)
        )),
        RunState::Error => Some(format!(
            "fault {}: {}",
            r.fault,
            r.message.as_deref().unwrap_or("(no message)")
        )),
        RunState::New if r.fault == crate::state::fault::PREPARE => Some(format!(
            "prepare failed, fault {}: {}",
            r.fault,
            r.message.as_deref().unwrap_or("(no message)")
        )),
        RunState::Pending if r.fault == crate::state::fault::EXEC => Some(format!(
            "exec failed, fault {}: {}",
            r.fault,
            r.message.as_deref().unwrap_or("(no message)")
        )),
        RunState::New | RunState::Pending if r.fault != 0 => Some(format!(
            "fault {}: {}",
            r.fault,
            r.message.as_deref().unwrap_or("(no message)")
        )),
        _ => None,
    }
}

/// The tools paused (as a whole or for a target), and when an unfinished
/// refresh began.
fn pauses(db: &mut Db) -> anyhow::Result<(Vec<Control>, Option<NaiveDateTime>)> {
    let controls = db.read(|s| s.controls())?;
    let refresh_since = controls
        .iter()
        .find(|c| c.tool == REFRESH_ROW && c.paused)
        .map(|c| c.changed_at);
    let paused: Vec<Control> = controls
        .into_iter()
        .filter(|c| {
            let tool = crate::runs::split_pause_key(&c.tool).map_or(c.tool.as_str(), |(t, _)| t);
            c.paused && crate::runs::PAUSABLE.contains(&tool)
        })
        .collect();
    Ok((paused, refresh_since))
}

/// Who holds which run's lease.
fn holders(db: &mut Db, at: NaiveDateTime) -> anyhow::Result<Vec<Holder>> {
    let secs = |t: NaiveDateTime| (at - t).num_seconds();
    let stale = crate::runs::LEASE_STALE.as_secs() as i64;
    Ok(db
        .read(|s| s.all_leases())?
        .into_iter()
        .map(|l| Holder {
            remote_id: l.remote_id,
            by: Worker {
                tool: l.tool,
                host: l.host,
                pid: l.pid,
                since: l.acquired_at,
                heartbeat_seconds: secs(l.heartbeat_at),
                stale: secs(l.heartbeat_at) > stale,
            },
        })
        .collect())
}

/// The tool processes at work on any host.
fn workers(db: &mut Db, at: NaiveDateTime) -> anyhow::Result<Vec<Worker>> {
    let secs = |t: NaiveDateTime| (at - t).num_seconds();
    let stale = crate::runs::LEASE_STALE.as_secs() as i64;
    Ok(db
        .read(|s| s.processes())?
        .into_iter()
        .map(|p| Worker {
            tool: p.tool,
            host: p.host,
            pid: p.pid,
            since: p.started_at,
            heartbeat_seconds: secs(p.heartbeat_at),
            stale: secs(p.heartbeat_at) > stale,
        })
        .collect())
}

/// The runs held back from `--next`, as of `at` (a hold that has run out
/// is not listed).
fn held(db: &mut Db, at: NaiveDateTime) -> anyhow::Result<Vec<Held>> {
    let person = crate::db::models::held_for_a_person();
    Ok(db
        .read(|s| s.held_runs())?
        .into_iter()
        .filter_map(|r| {
            let until = r.held_until?;
            if until <= at {
                return None;
            }
            let why = match (r.fault, r.message.as_deref()) {
                (0, Some(m)) => m.to_string(),
                (0, None) => "(no message)".to_string(),
                (f, m) => format!("fault {f}: {}", m.unwrap_or("(no message)")),
            };
            let (until, remedy) = if until >= person {
                (
                    None,
                    format!("until a person acts: `remotetool unfault {}`", r.remote_id),
                )
            } else {
                (
                    Some(until),
                    format!(
                        "until {} UTC (in {})",
                        table::time(&until),
                        human_duration((until - at).num_seconds())
                    ),
                )
            };
            Some(Held {
                remote_id: r.remote_id,
                state: r.state,
                label: r.label,
                stage: r.stage,
                target: r.target,
                until,
                fault: r.fault,
                in_a_row: r.fault_count,
                why,
                remedy,
            })
        })
        .collect())
}

/// The groups an abandoned item blocks, for each label and stage with
/// abandoned items whose recipe has a `[next]` (a stage without a readable
/// recipe shows none).
fn blocked(
    db: &mut Db,
    cfg: &Config,
    a: &StatusArgs,
    item_groups: &[ItemGroup],
) -> anyhow::Result<Vec<crate::chain::Blocked>> {
    let dir = cfg.recipes_dir(a.recipes.as_deref());
    let mut out = Vec::new();
    for ItemGroup {
        label,
        stage,
        state,
        items,
    } in item_groups
    {
        if *state != ItemState::Abandoned || *items == 0 {
            continue;
        }
        let Ok(recipe) = crate::recipe::Recipe::load_for_stage(&dir, stage) else {
            continue;
        };
        let Some(next) = &recipe.next else {
            continue;
        };
        let rows = db.read(|s| s.stage_items(label, stage))?;
        let existing: std::collections::HashSet<i64> = db
            .read(|s| s.existing_keys(std::slice::from_ref(&next.stage)))?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        out.extend(crate::chain::blocked(rows, next, &existing)?);
    }
    Ok(out)
}
