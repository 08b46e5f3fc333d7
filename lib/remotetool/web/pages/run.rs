//! A run's page: `show RUN` (its fields, components by state, the failed
//! ones with the last lines each wrote, its history) with the jobs it had
//! and what they cost, and, with `--allow-actions`, the forms that act on
//! it.

use askama::Template;

use super::{framed, Ctx};
use crate::cli::Session;
use crate::remotetool::show::run::{self as show_run, RunShow};
use crate::state::RunState;

pub struct Field {
    pub name: &'static str,
    pub value: String,
}

pub struct Failed {
    pub href: String,
    pub component: i64,
    pub stage_id: i64,
    pub exit: String,
    pub phase: String,
    pub last_line: String,
}

pub struct Job {
    pub job_id: String,
    pub source: String,
    pub state: String,
    pub elapsed: String,
    pub core_hours: String,
    pub nodes: String,
}

pub struct Event {
    pub at: String,
    pub who: String,
    pub change: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "run.html")]
pub struct Page {
    pub id: i64,
    pub anchor: String,
    pub fields: Vec<Field>,
    pub by_state: String,
    pub failed: Vec<Failed>,
    pub jobs: Vec<Job>,
    pub history: Vec<Event>,
    pub actions: bool,
    pub state: String,
    pub successors: Vec<&'static str>,
    pub retryable: bool,
    pub abortable: bool,
    pub faulted: bool,
    pub auth: bool,
}

/// Render `show` of a run, with its jobs.
pub fn view(show: &RunShow, jobs: &[crate::db::models::JobRecord], ctx: &Ctx) -> Page {
    let r = &show.view.run;
    let none = || "-".to_string();
    let time = |t: &chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let fields = vec![
        Field {
            name: "state",
            value: r.state.to_string(),
        },
        Field {
            name: "label",
            value: r.label.clone(),
        },
        Field {
            name: "stage",
            value: r.stage.clone(),
        },
        Field {
            name: "target",
            value: r.target.clone().unwrap_or_else(none),
        },
        Field {
            name: "job_id",
            value: r.job_id.clone().unwrap_or_else(none),
        },
        Field {
            name: "attempt",
            value: r.attempt.to_string(),
        },
        Field {
            name: "job policy",
            value: r.job_policy.to_string(),
        },
        Field {
            name: "fault",
            value: r.fault.to_string(),
        },
        Field {
            name: "message",
            value: r.message.clone().unwrap_or_else(none),
        },
        Field {
            name: "in state since",
            value: time(&r.state_since),
        },
        Field {
            name: "held until",
            value: r.held_until.as_ref().map(time).unwrap_or_else(none),
        },
        Field {
            name: "last poll",
            value: r.last_poll.as_ref().map(time).unwrap_or_else(none),
        },
        Field {
            name: "path_base",
            value: r.path_base.clone(),
        },
        Field {
            name: "created",
            value: time(&r.created_at),
        },
    ];
    let by_state: Vec<String> = show
        .view
        .components_by_state
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    Page {
        id: r.remote_id,
        anchor: format!("run-{}", r.remote_id),
        fields,
        by_state: format!("{} ({})", show.view.components, by_state.join(", ")),
        failed: show
            .failed_components
            .iter()
            .map(|f| Failed {
                href: ctx.component_href(&f.component, &r.remote_id),
                component: f.component,
                stage_id: f.stage_id,
                exit: f.exit_status.map(|e| e.to_string()).unwrap_or_else(none),
                phase: f.phase.clone().unwrap_or_else(none),
                last_line: if f.fault == crate::state::fault::COMPONENT_NO_RECORD {
                    "no result record".into()
                } else {
                    f.last_lines.clone()
                },
            })
            .collect(),
        jobs: jobs
            .iter()
            .map(|j| Job {
                job_id: j.job_id.clone(),
                source: j.source.clone(),
                state: j.final_state.clone().unwrap_or_else(none),
                elapsed: j
                    .elapsed_s
                    .map(crate::printer::human_duration)
                    .unwrap_or_else(none),
                core_hours: j
                    .elapsed_s
                    .zip(j.alloc_cpus)
                    .map(|(e, c)| format!("{:.2}", (e * c) as f64 / 3600.0))
                    .unwrap_or_else(none),
                nodes: j.nodes.map(|n| n.to_string()).unwrap_or_else(none),
            })
            .collect(),
        history: show
            .history
            .iter()
            .map(|h| Event {
                at: time(&h.at),
                who: format!("{} {}:{}", h.tool, h.host, h.pid),
                change: match (h.from_state, h.to_state) {
                    (None, None) => String::new(),
                    (f, t) => format!(
                        "{} -> {}",
                        f.map_or("-", RunState::as_str),
                        t.map_or("-", RunState::as_str)
                    ),
                },
                message: h.message.clone().unwrap_or_default(),
            })
            .collect(),
        actions: ctx.actions,
        state: r.state.to_string(),
        successors: r.state.successors().iter().map(|s| s.as_str()).collect(),
        retryable: matches!(r.state, RunState::Error | RunState::Full),
        abortable: matches!(
            r.state,
            RunState::New | RunState::Pending | RunState::Run | RunState::Auth
        ),
        faulted: r.fault != 0 || r.held_until.is_some(),
        auth: r.state == RunState::Auth,
    }
}

/// A run's section (its page's body).
pub fn body(s: &mut Session, remote_id: i64, ctx: &Ctx) -> anyhow::Result<String> {
    let show = show_run::gather(&mut s.db, remote_id, 50, 50)?;
    let (label, stage) = (show.view.run.label.clone(), show.view.run.stage.clone());
    let jobs: Vec<_> =
        s.db.read(|st| st.job_records(Some(&label), Some(&stage)))?
            .into_iter()
            .filter(|j| j.remote_id == remote_id)
            .collect();
    Ok(view(&show, &jobs, ctx).render()?)
}

pub fn page(s: &mut Session, remote_id: i64, ctx: &Ctx) -> anyhow::Result<String> {
    framed(
        ctx,
        &format!("Run {remote_id}"),
        &body(s, remote_id, ctx)?,
        false,
    )
}
