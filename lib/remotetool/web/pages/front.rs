//! The front page: `status` for people who would rather look. Moving or
//! not; what needs a person (with the command that helps); held runs and
//! until when; blocked chained groups; the masters and the 12-hour clock;
//! paused tools; who is at work where; the work per label and stage.

use askama::Template;

use super::{age, framed, q, Ctx};
use crate::cli::Session;
use crate::remotetool::args::{StatusArgs, STUCK_AFTER};
use crate::remotetool::status::{self, Attention, Status};
use crate::remotetool::web::svg;
use crate::state::{fault, RunState};

pub struct AttentionRow {
    pub href: String,
    pub remote_id: i64,
    pub state: String,
    pub label: String,
    pub stage: String,
    pub since: String,
    pub age: String,
    pub why: String,
    pub remedy: String,
}

pub struct HeldRow {
    pub href: String,
    pub remote_id: i64,
    pub state: String,
    pub label: String,
    pub stage: String,
    pub remedy: String,
    pub why: String,
}

pub struct MasterRow {
    pub target: String,
    pub host: String,
    pub alive: bool,
    pub expires: String,
    pub left: String,
    /// The refresh is due within the hour (or overdue).
    pub due: bool,
    /// The 12-hour clock (SVG): the time left as an arc.
    pub clock: String,
}

pub struct GroupRow {
    pub label: String,
    pub stage: String,
    pub waiting: i64,
    pub in_runs: i64,
    pub done: i64,
    pub failed: i64,
    pub abandoned: i64,
    pub open_runs: i64,
    pub error_runs: i64,
    pub runs_href: String,
    pub error_href: String,
}

pub struct Line {
    pub a: String,
    pub b: String,
    pub c: String,
    pub d: String,
}

#[derive(Template)]
#[template(path = "front.html")]
pub struct Front {
    pub moving: bool,
    pub headline: String,
    pub refresh_since: Option<String>,
    pub attention: Vec<AttentionRow>,
    pub held: Vec<HeldRow>,
    pub blocked: Vec<Line>,
    pub masters: Option<Vec<MasterRow>>,
    pub paused: Vec<Line>,
    pub workers: Vec<Line>,
    pub holders: Vec<(String, i64, String)>,
    pub groups: Vec<GroupRow>,
}

/// The command that helps a run needing a person, for the operator to
/// copy (the manual's Faults page says more).
pub fn remedy(a: &Attention) -> String {
    let id = a.remote_id;
    match a.state {
        RunState::Auth => "remotetool refresh-auth".to_string(),
        RunState::Error => format!(
            "remotetool show {id}; then remotetool retry {id} --reason '...' or remotetool set {id} pending --reason '...'"
        ),
        RunState::New if a.why.starts_with("prepare failed") => {
            format!("fix the cause, then remotetool unfault {id} --reason '...'")
        }
        RunState::Run if a.why.starts_with("a write here failed") => {
            format!("free space or fix the folder here, then poll --remote-id {id}")
        }
        RunState::Run if a.why.starts_with("apply failed") => {
            format!("fix the recipe's apply command, then poll --remote-id {id}")
        }
        RunState::Run => format!("poll --remote-id {id}; remotetool show {id}"),
        _ => format!("remotetool show {id}; then remotetool unfault {id} --reason '...'"),
    }
}

fn fault_note(f: i32) -> &'static str {
    match f {
        fault::LOCAL => " (a write here)",
        fault::APPLY => " (apply)",
        _ => "",
    }
}

/// Build the page's rows from the status.
pub fn view(st: &Status, ctx: &Ctx) -> Front {
    let open: i64 = st.oldest.iter().map(|o| o.runs).sum();
    let runs = if open == 1 { "open run" } else { "open runs" };
    let need = match st.attention.len() {
        1 => "1 needs a person".to_string(),
        n => format!("{n} need a person"),
    };
    let headline = format!("{open} {runs}, {need}");
    let attention = st
        .attention
        .iter()
        .map(|a| AttentionRow {
            href: ctx.run_href(&a.remote_id),
            remote_id: a.remote_id,
            state: a.state.to_string(),
            label: a.label.clone(),
            stage: a.stage.clone(),
            since: a.since.format("%Y-%m-%d %H:%M").to_string(),
            age: age(&a.seconds),
            why: a.why.clone(),
            remedy: remedy(a),
        })
        .collect();
    let held = st
        .held
        .iter()
        .map(|h| HeldRow {
            href: ctx.run_href(&h.remote_id),
            remote_id: h.remote_id,
            state: h.state.to_string(),
            label: h.label.clone(),
            stage: h.stage.clone(),
            remedy: h.remedy.clone(),
            why: format!("{}{}", h.why, fault_note(h.fault)),
        })
        .collect();
    let blocked = st
        .blocked
        .iter()
        .map(|b| Line {
            a: format!("{} / {}", b.label, b.stage),
            b: b.group.clone(),
            c: format!("{} of {} done, feeds {}", b.done, b.items, b.next_stage),
            d: b.blocked_by.clone(),
        })
        .collect();
    let masters = st.masters.as_ref().map(|ms| {
        ms.iter()
            .map(|m| MasterRow {
                target: m.target.clone(),
                host: m.host.clone(),
                alive: m.alive,
                expires: m
                    .expires
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into()),
                left: m
                    .seconds_left
                    .map(|s| age(&s))
                    .unwrap_or_else(|| "-".into()),
                due: !m.alive || m.seconds_left.is_some_and(|s| s < 3600),
                clock: svg::clock(
                    m.seconds_left.filter(|_| m.alive),
                    &m.seconds_left
                        .filter(|_| m.alive)
                        .map(|s| format!("{}h", s / 3600))
                        .unwrap_or_else(|| "-".into()),
                ),
            })
            .collect()
    });
    let paused = st
        .paused
        .iter()
        .map(|c| Line {
            a: c.tool.clone(),
            b: c.reason.clone().unwrap_or_default(),
            c: c.changed_at.format("%Y-%m-%d %H:%M").to_string(),
            d: c.changed_by.clone(),
        })
        .collect();
    let workers = st
        .workers
        .iter()
        .map(|w| Line {
            a: w.tool.clone(),
            b: format!("{}:{}", w.host, w.pid),
            c: w.since.format("%Y-%m-%d %H:%M").to_string(),
            d: format!(
                "{} ago{}",
                age(&w.heartbeat_seconds),
                if w.stale { " (stale)" } else { "" }
            ),
        })
        .collect();
    let holders = st
        .holders
        .iter()
        .map(|h| {
            (
                ctx.run_href(&h.remote_id),
                h.remote_id,
                format!("{} on {}:{}", h.by.tool, h.by.host, h.by.pid),
            )
        })
        .collect();
    let groups = st
        .groups
        .iter()
        .map(|g| {
            let filter = format!("label={}&stage={}", q(&g.label), q(&g.stage));
            GroupRow {
                label: g.label.clone(),
                stage: g.stage.clone(),
                waiting: g.waiting,
                in_runs: g.in_runs,
                done: g.done,
                failed: g.failed,
                abandoned: g.abandoned,
                open_runs: RunState::ALL_OPEN
                    .iter()
                    .map(|s| g.runs.get(s.as_str()).copied().unwrap_or(0))
                    .sum(),
                error_runs: g.runs.get("error").copied().unwrap_or(0),
                runs_href: ctx.runs_href(&format!("{filter}&open=1")),
                error_href: ctx.runs_href(&format!("{filter}&state=error")),
            }
        })
        .collect();
    Front {
        moving: st.moving,
        headline,
        refresh_since: st
            .refresh_since
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
        attention,
        held,
        blocked,
        masters,
        paused,
        workers,
        holders,
        groups,
    }
}

/// The front page's body.
pub fn body(s: &mut Session, ctx: &Ctx) -> anyhow::Result<String> {
    let args = StatusArgs {
        stuck_after: STUCK_AFTER,
        no_masters: false,
        at: None,
        recipes: None,
    };
    let st = status::gather(&mut s.db, &s.config, &args)?;
    Ok(view(&st, ctx).render()?)
}

/// The whole front page.
pub fn page(s: &mut Session, ctx: &Ctx) -> anyhow::Result<String> {
    framed(ctx, "Status", &body(s, ctx)?, ctx.live)
}
