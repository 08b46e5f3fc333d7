//! A component's page: `show --component` (every attempt of its work
//! item, exit status, phase, runtime, its log tails and result record,
//! the commands it ran, its work item) and its run's history.

use askama::Template;

use super::{framed, Ctx};
use crate::cli::Session;
use crate::remotetool::show::component::{self as show_component, ComponentShow};

pub struct Field {
    pub name: &'static str,
    pub value: String,
}

pub struct Attempt {
    pub href: String,
    pub id: i64,
    pub run_href: String,
    pub remote_id: i64,
    pub state: String,
    pub exit: String,
    pub runtime: String,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "component.html")]
pub struct Page {
    pub id: i64,
    pub run_href: String,
    pub remote_id: i64,
    pub fields: Vec<Field>,
    pub params: String,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub commands: Vec<(&'static str, String)>,
    pub commands_unknown: Option<String>,
    pub record: Option<String>,
    pub attempts: Vec<Attempt>,
}

pub fn view(v: &ComponentShow, ctx: &Ctx) -> Page {
    let c = &v.component;
    let w = &v.work_item;
    let none = || "-".to_string();
    let fields = vec![
        Field {
            name: "state",
            value: format!("{}{}", c.state, if c.active { ", active" } else { "" }),
        },
        Field {
            name: "run",
            value: format!(
                "{} ({}/{}, {})",
                v.run.remote_id, v.run.stage, v.run.label, v.run.state
            ),
        },
        Field {
            name: "work item",
            value: format!(
                "{}: {} {} ({}, {} attempts)",
                w.id, w.stage, w.stage_id, w.state, w.attempts
            ),
        },
        Field {
            name: "exit status",
            value: c.exit_status.map(|e| e.to_string()).unwrap_or_else(none),
        },
        Field {
            name: "phase",
            value: v
                .result
                .as_ref()
                .map(|r| r.phase.clone())
                .unwrap_or_else(none),
        },
        Field {
            name: "runtime",
            value: c.runtime.map(|r| format!("{r:.1} s")).unwrap_or_else(none),
        },
        Field {
            name: "fault",
            value: format!("{} ({})", c.fault, v.fault_meaning),
        },
        Field {
            name: "rank",
            value: v.rank.map(|r| r.to_string()).unwrap_or_else(none),
        },
        Field {
            name: "rank log",
            value: v.rank_log.clone().unwrap_or_else(none),
        },
    ];
    let mut commands = Vec::new();
    if let Some(cmds) = &v.commands {
        for (name, text) in [
            ("pre", &cmds.pre),
            ("command", &cmds.command),
            ("post", &cmds.post),
        ] {
            if !text.is_empty() {
                commands.push((name, text.clone()));
            }
        }
    }
    Page {
        id: c.id,
        run_href: ctx.run_href(&v.run.remote_id),
        remote_id: v.run.remote_id,
        fields,
        params: w.params.clone(),
        stdout: v.result.as_ref().map(|r| r.stdout_tail.clone()),
        stderr: v.result.as_ref().map(|r| r.stderr_tail.clone()),
        commands,
        commands_unknown: v.commands_unknown.clone(),
        record: v
            .result
            .as_ref()
            .and_then(|r| serde_json::to_string_pretty(r).ok()),
        attempts: v
            .attempts
            .iter()
            .map(|a| Attempt {
                href: ctx.component_href(&a.id, &a.remote_id),
                id: a.id,
                run_href: ctx.run_href(&a.remote_id),
                remote_id: a.remote_id,
                state: a.state.to_string(),
                exit: a.exit_status.map(|e| e.to_string()).unwrap_or_else(none),
                runtime: a.runtime.map(|r| format!("{r:.1}")).unwrap_or_else(none),
                updated: a.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            })
            .collect(),
    }
}

pub fn page(s: &mut Session, id: i64, ctx: &Ctx) -> anyhow::Result<String> {
    let v = show_component::gather(&mut s.db, &s.config, id, None, 50)?;
    let body = view(&v, ctx).render()?;
    framed(ctx, &format!("Component {id}"), &body, false)
}
