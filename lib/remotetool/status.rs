//! `remotetool status`: one screen that answers "is everything moving?".
//! Runs per label, stage and state; work items waiting, in runs, done,
//! failed and abandoned; the oldest run in each open state; runs that need a
//! person; the masters and their expected expiry; paused tools; who holds
//! which run.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::config::Config;
use crate::db::models::{Control, ItemGroup, RunFilter};
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::masters::{self, Master};
use crate::printer::{human_duration, Printer};
use crate::state::{ComponentState, ItemState, RunState, ALL, POLL_FAILURES_NEED_A_PERSON};
use crate::table;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A run in `run` not polled for this long looks stuck
    #[arg(long, default_value_t = 7200, value_name = "SECONDS")]
    pub stuck_after: i64,
    /// Do not ask the masters (no ssh at all)
    #[arg(long)]
    pub no_masters: bool,
    /// Compute ages as of this time (UTC, "YYYY-MM-DD HH:MM:SS") instead of now
    #[arg(long, value_name = "TIME", hide = true)]
    pub at: Option<String>,
    /// Folder of stage recipes (their [next], for blocked groups) [default:
    /// `recipes` of the configuration, else ~/.config/offload/recipes]
    #[arg(long, value_name = "DIR")]
    pub recipes: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize, Default)]
pub struct Group {
    pub label: String,
    pub stage: String,
    /// Runs by state (every state, zeros included).
    pub runs: BTreeMap<String, i64>,
    /// Work items ready and in no run.
    pub waiting: i64,
    /// Work items in an open run.
    pub in_runs: i64,
    pub done: i64,
    /// Failed component attempts (a work item may have failed more than once).
    pub failed: i64,
    /// Work items given up after their last attempt failed.
    pub abandoned: i64,
}

#[derive(Debug, Serialize)]
pub struct Oldest {
    pub state: RunState,
    pub runs: i64,
    pub remote_id: i64,
    pub since: NaiveDateTime,
    pub seconds: i64,
}

#[derive(Debug, Serialize)]
pub struct Attention {
    pub remote_id: i64,
    pub state: RunState,
    pub label: String,
    pub stage: String,
    pub since: NaiveDateTime,
    pub seconds: i64,
    pub why: String,
}

/// A run's lease: the run and the process that holds it.
#[derive(Debug, Serialize)]
pub struct Holder {
    pub remote_id: i64,
    #[serde(flatten)]
    pub by: Worker,
}

/// A tool process at work, from the registry (or holding a lease).
#[derive(Debug, Serialize)]
pub struct Worker {
    pub tool: String,
    pub host: String,
    pub pid: i32,
    pub since: NaiveDateTime,
    pub heartbeat_seconds: i64,
    pub stale: bool,
}

impl Worker {
    /// The table's cells: tool, host:pid, since, heartbeat (`stale` says
    /// what a stale one means).
    fn cells(&self, stale: &str) -> Vec<String> {
        vec![
            self.tool.clone(),
            format!("{}:{}", self.host, self.pid),
            table::time(&self.since),
            format!(
                "{} ago{}",
                human_duration(self.heartbeat_seconds),
                if self.stale { stale } else { "" }
            ),
        ]
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub at: NaiveDateTime,
    /// No run needs a person and every master is alive.
    pub moving: bool,
    pub groups: Vec<Group>,
    pub oldest: Vec<Oldest>,
    pub attention: Vec<Attention>,
    /// Null with --no-masters.
    pub masters: Option<Vec<Master>>,
    pub paused: Vec<Control>,
    /// When an unfinished `remotetool refresh-auth` began.
    pub refresh_since: Option<NaiveDateTime>,
    pub holders: Vec<Holder>,
    /// exec, poll, prepare and xfer processes at work on any host.
    pub workers: Vec<Worker>,
    /// Runs `--next` leaves alone for now (present when there are any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// Groups of a chained stage (a recipe with `[next]`) that an abandoned
    /// work item keeps from feeding the next stage (present when there
    /// are any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<crate::chain::Blocked>,
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

fn render_blocked(st: &Status, width: Option<usize>, out: &mut String) {
    if st.blocked.is_empty() {
        return;
    }
    out.push_str("\ngroups blocked (an abandoned work item; `remotetool retry` puts it back):\n");
    let rows: Vec<Vec<String>> = st
        .blocked
        .iter()
        .map(|b| {
            vec![
                b.label.clone(),
                b.stage.clone(),
                b.group.clone(),
                b.next_stage.clone(),
                format!("{}/{}", b.done, b.items),
                format!(
                    "{}{}",
                    b.blocked_by,
                    if b.abandoned.len() > 1 {
                        format!(" (+{} more)", b.abandoned.len() - 1)
                    } else {
                        String::new()
                    }
                ),
            ]
        })
        .collect();
    out.push_str(&table::render_fit(
        &["LABEL", "STAGE", "GROUP", "NEXT", "DONE", "BLOCKED BY"],
        &rows,
        width,
    ));
}

/// A run held back from `--next`: after a fault, until a person acts; or
/// a while, after a throttle.
#[derive(Debug, Serialize)]
pub struct Held {
    pub remote_id: i64,
    pub state: RunState,
    pub label: String,
    pub stage: String,
    pub target: Option<String>,
    /// Null: until a person acts.
    pub until: Option<NaiveDateTime>,
    pub fault: i32,
    /// Faults (or throttles) in a row.
    pub in_a_row: i32,
    pub why: String,
    /// What ends the hold.
    pub remedy: String,
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

fn render_held(st: &Status, width: Option<usize>, out: &mut String) {
    if st.held.is_empty() {
        return;
    }
    out.push_str(
        "
held back from --next:
",
    );
    let rows: Vec<Vec<String>> = st
        .held
        .iter()
        .map(|h| {
            vec![
                h.remote_id.to_string(),
                h.state.to_string(),
                h.label.clone(),
                h.stage.clone(),
                h.remedy.clone(),
                h.why.clone(),
            ]
        })
        .collect();
    out.push_str(&table::render_fit(
        &["RUN", "STATE", "LABEL", "STAGE", "HELD", "WHY"],
        &rows,
        width,
    ));
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

fn parse_at(at: &str) -> anyhow::Result<NaiveDateTime> {
    NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S").map_err(|e| {
        exit::usage(format!(
            "--at {at:?} is not a time like \"2026-11-25 12:00:00\" ({e})"
        ))
    })
}

/// Gather the status (reads only).
pub fn gather(db: &mut Db, cfg: &Config, a: &StatusArgs) -> anyhow::Result<Status> {
    let at = match &a.at {
        Some(t) => parse_at(t)?,
        None => crate::db::now(),
    };
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
    let open: Vec<RunState> = ALL.iter().copied().filter(|s| !s.is_closed()).collect();
    let runs = db.read(|s| {
        s.runs(&RunFilter {
            states: open,
            ..RunFilter::default()
        })
    })?;
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
    let mut attention = Vec::new();
    for r in &runs {
        let why = match r.state {
            RunState::Run | RunState::New if r.fault == crate::state::fault::LOCAL => {
                Some(format!(
                    "a write here failed, fault {}: {}",
                    r.fault,
                    r.message.as_deref().unwrap_or("(no message)")
                ))
            }
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
                (secs(last) > a.stuck_after).then(|| {
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
        };
        if let Some(why) = why {
            attention.push(Attention {
                remote_id: r.remote_id,
                state: r.state,
                label: r.label.clone(),
                stage: r.stage.clone(),
                since: r.state_since,
                seconds: secs(r.state_since),
                why,
            });
        }
    }
    let masters = if a.no_masters {
        None
    } else {
        Some(masters::all_masters(cfg, at))
    };
    let controls = db.read(|s| s.controls())?;
    let refresh_since = controls
        .iter()
        .find(|c| c.tool == super::auth::REFRESH_ROW && c.paused)
        .map(|c| c.changed_at);
    let paused: Vec<Control> = controls
        .into_iter()
        .filter(|c| {
            let tool = crate::runs::split_pause_key(&c.tool).map_or(c.tool.as_str(), |(t, _)| t);
            c.paused && crate::runs::PAUSABLE.contains(&tool)
        })
        .collect();
    let stale = crate::runs::LEASE_STALE.as_secs() as i64;
    let holders = db
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
        .collect();
    let workers = db
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
        .collect();
    let held = held(db, at)?;
    let blocked = blocked(db, cfg, a, &item_groups)?;
    let masters_ok = masters.as_ref().is_none_or(|m| m.iter().all(|m| m.alive));
    Ok(Status {
        at,
        moving: attention.is_empty() && masters_ok,
        groups: groups.into_values().collect(),
        oldest,
        attention,
        masters,
        paused,
        refresh_since,
        holders,
        workers,
        held,
        blocked,
    })
}

/// The status as people read it, tables cut to `width`.
pub fn render(st: &Status, width: Option<usize>) -> String {
    let mut out = String::new();
    let open: i64 = st.oldest.iter().map(|o| o.runs).sum();
    let alive = st.masters.as_ref().map(|m| {
        let up = m.iter().filter(|m| m.alive).count();
        let soonest = m.iter().filter_map(|m| m.seconds_left).min();
        match soonest {
            Some(s) => format!(
                "; masters {up}/{} alive, first expiry in {}",
                m.len(),
                human_duration(s)
            ),
            None => format!("; masters {up}/{} alive", m.len()),
        }
    });
    if let Some(t) = st.refresh_since {
        out.push_str(&format!(
            "auth refresh in progress since {} UTC: `remotetool refresh-auth` finishes it\n",
            table::time(&t)
        ));
    }
    out.push_str(&format!(
        "offload status at {} UTC: {}{open} open runs, {} need attention{}; {}\n",
        table::time(&st.at),
        if st.moving {
            "moving; "
        } else {
            "NOT MOVING; "
        },
        st.attention.len(),
        alive.unwrap_or_default(),
        if st.paused.is_empty() {
            "no tool paused".to_string()
        } else {
            let names: Vec<&str> = st.paused.iter().map(|c| c.tool.as_str()).collect();
            format!("paused: {}", names.join(", "))
        }
    ));

    out.push_str("\nruns by label and stage:\n");
    if st.groups.is_empty() {
        out.push_str("  (no work items and no runs)\n");
    } else {
        let mut headers = vec!["LABEL", "STAGE"];
        let upper: Vec<String> = ALL.iter().map(|s| s.as_str().to_uppercase()).collect();
        headers.extend(upper.iter().map(String::as_str));
        headers.extend(["WAITING", "IN_RUNS", "DONE", "FAILED", "ABANDONED"]);
        let rows: Vec<Vec<String>> = st
            .groups
            .iter()
            .map(|g| {
                let mut r = vec![g.label.clone(), g.stage.clone()];
                r.extend(
                    ALL.iter()
                        .map(|s| g.runs.get(s.as_str()).copied().unwrap_or(0).to_string()),
                );
                r.extend(
                    [g.waiting, g.in_runs, g.done, g.failed, g.abandoned]
                        .iter()
                        .map(|n| n.to_string()),
                );
                r
            })
            .collect();
        out.push_str(&table::render_fit(&headers, &rows, width));
    }

    if !st.oldest.is_empty() {
        out.push_str("\noldest run in each open state:\n");
        let rows: Vec<Vec<String>> = st
            .oldest
            .iter()
            .map(|o| {
                vec![
                    o.state.to_string(),
                    o.runs.to_string(),
                    o.remote_id.to_string(),
                    table::time(&o.since),
                    human_duration(o.seconds),
                ]
            })
            .collect();
        out.push_str(&table::render_fit(
            &["STATE", "RUNS", "OLDEST", "SINCE", "FOR"],
            &rows,
            width,
        ));
    }

    out.push_str("\nneeds attention:\n");
    if st.attention.is_empty() {
        out.push_str("  (nothing)\n");
    } else {
        let rows: Vec<Vec<String>> = st
            .attention
            .iter()
            .map(|a| {
                vec![
                    a.remote_id.to_string(),
                    a.state.to_string(),
                    a.label.clone(),
                    a.stage.clone(),
                    human_duration(a.seconds),
                    a.why.clone(),
                ]
            })
            .collect();
        out.push_str(&table::render_fit(
            &["RUN", "STATE", "LABEL", "STAGE", "FOR", "WHY"],
            &rows,
            width,
        ));
    }

    if let Some(masters) = &st.masters {
        out.push_str("\nmasters:\n");
        if masters.is_empty() {
            out.push_str("  (no SSH targets configured)\n");
        } else {
            let rows: Vec<Vec<String>> = masters
                .iter()
                .map(|m| {
                    vec![
                        m.target.clone(),
                        m.host.clone(),
                        if m.alive { "alive" } else { "DOWN" }.to_string(),
                        table::opt_time(&m.started),
                        m.seconds_left
                            .map(human_duration)
                            .unwrap_or_else(|| "-".into()),
                        m.problem.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table::render_fit(
                &["TARGET", "HOST", "MASTER", "STARTED", "LEFT", "PROBLEM"],
                &rows,
                width,
            ));
        }
    }

    if !st.paused.is_empty() {
        out.push_str("\npaused tools:\n");
        let rows: Vec<Vec<String>> = st
            .paused
            .iter()
            .map(|c| {
                vec![
                    c.tool.clone(),
                    table::time(&c.changed_at),
                    c.changed_by.clone(),
                    c.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table::render_fit(
            &["TOOL", "SINCE", "BY", "REASON"],
            &rows,
            width,
        ));
    }

    render_held(st, width, &mut out);
    render_blocked(st, width, &mut out);

    if !st.holders.is_empty() {
        out.push_str("\nruns being worked on:\n");
        let rows: Vec<Vec<String>> = st
            .holders
            .iter()
            .map(|h| {
                let mut row = vec![h.remote_id.to_string()];
                row.extend(h.by.cells(" (stale)"));
                row
            })
            .collect();
        out.push_str(&table::render_fit(
            &["RUN", "TOOL", "HOST:PID", "SINCE", "HEARTBEAT"],
            &rows,
            width,
        ));
    }
    if !st.workers.is_empty() {
        out.push_str("\ntools at work:\n");
        let rows: Vec<Vec<String>> = st
            .workers
            .iter()
            .map(|w| w.cells(" (stale: `remotetool wait` reclaims it)"))
            .collect();
        out.push_str(&table::render_fit(
            &["TOOL", "HOST:PID", "SINCE", "HEARTBEAT"],
            &rows,
            width,
        ));
    }
    out
}

pub fn status(
    db: &mut Db,
    cfg: &Config,
    a: StatusArgs,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let st = gather(db, cfg, &a)?;
    if json {
        printer.json(&st)?;
    } else {
        printer.data(render(&st, printer.width()))?;
    }
    Ok(ExitStatus::Success)
}
