//! `remotetool show --component ID` (or `show RUN --stage-id N`): one
//! component's state, attempts, exit status, runtime, fault, log tails,
//! the exact commands it ran, every attempt of its work item, and its
//! run's history.

use serde::Serialize;

use super::{no_run, record};
use crate::config::Config;
use crate::db::models::{Component, History, Run, WorkItem};
use crate::db::Db;
use crate::exit;
use crate::record::ResultRecord;
use crate::remotetool::history::history_table;
use crate::scripts::{self, ComponentCommands};
use crate::table;

#[derive(Serialize)]
/// What `show --component` reports (its JSON as it is).
pub struct ComponentShow {
    pub component: Component,
    pub result: Option<ResultRecord>,
    pub fault_meaning: &'static str,
    pub work_item: WorkItem,
    pub run: Run,
    pub rank: Option<u32>,
    /// The run's folder on the remote side (OFFLOAD_RUN of its job).
    pub remote_run: Option<String>,
    /// The rank's whole log there.
    pub rank_log: Option<String>,
    /// The phases exactly as the rank ran them; null when the run's local
    /// folder is gone.
    pub commands: Option<ComponentCommands>,
    /// Why the commands are unknown, when they are.
    pub commands_unknown: Option<String>,
    /// Every component this work item has had, oldest first.
    pub attempts: Vec<Component>,
    pub history: Vec<History>,
}

/// The run's remote folder, and the rank and phases of a component, from
/// the run's local folder.
fn commands_of(
    cfg: &Config,
    run: &Run,
    cid: i64,
) -> anyhow::Result<(String, u32, ComponentCommands)> {
    let target = cfg.run_target(run.target.as_deref(), run.remote_id)?;
    let dir = crate::runs::local_run_dir(run, &target)?;
    let tsv = std::fs::read_to_string(dir.join("components.tsv")).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e} (the run is not prepared, or its folder was removed)",
            dir.join("components.tsv").display()
        )
    })?;
    let rank: u32 = tsv
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.first()? == &cid.to_string()).then(|| f.get(3)?.parse().ok())?
        })
        .ok_or_else(|| anyhow::anyhow!("component {cid} is not in {}", dir.display()))?;
    let rank_file = dir.join("tasks").join(format!("rank-{rank}.sh"));
    let text = std::fs::read_to_string(&rank_file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", rank_file.display()))?;
    let cmds = scripts::find_component(&text, cid)
        .ok_or_else(|| anyhow::anyhow!("component {cid} has no line in {}", rank_file.display()))?;
    Ok((target.remote_run_dir(run.remote_id), rank, cmds))
}

fn indent(text: &str) -> String {
    let mut out = String::new();
    for l in text.trim_end().lines() {
        out.push_str("  ");
        out.push_str(l);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("  (empty)\n");
    }
    out
}

/// Gather a component's show (reads only); `remote_id`, when given, must
/// be its run's.
pub fn gather(
    db: &mut Db,
    cfg: &Config,
    cid: i64,
    remote_id: Option<i64>,
    history: i64,
) -> anyhow::Result<ComponentShow> {
    let (component, work_item) = db.read(|s| s.component(cid))?.ok_or_else(|| {
        exit::usage(format!(
            "no component with id {cid}; `remotetool show RUN` lists a run's failed components"
        ))
    })?;
    if let Some(id) = remote_id.filter(|id| *id != component.remote_id) {
        return Err(exit::usage(format!(
            "component {cid} belongs to run {}, not run {id}",
            component.remote_id
        )));
    }
    let run = db
        .read(|s| s.run(component.remote_id))?
        .ok_or_else(|| no_run(component.remote_id))?;
    let attempts = db.read(|s| s.item_components(work_item.id))?;
    let history = db.read(|s| s.history(Some(run.remote_id), history))?;
    let (remote_run, rank, rank_log, commands, commands_unknown) = match commands_of(cfg, &run, cid)
    {
        Ok((rr, rank, c)) => {
            let log = format!("{rr}/logs/rank-{rank}.log");
            (Some(rr), Some(rank), Some(log), Some(c), None)
        }
        Err(e) => (None, None, None, None, Some(exit::one_line(&e))),
    };
    Ok(ComponentShow {
        result: record(&component),
        fault_meaning: crate::state::fault::component_meaning(component.fault),
        component,
        work_item,
        run,
        rank,
        remote_run,
        rank_log,
        commands,
        commands_unknown,
        attempts,
        history,
    })
}

/// The text of a component's show.
pub fn render(view: &ComponentShow) -> String {
    let c = &view.component;
    let w = &view.work_item;
    let none = || "-".to_string();
    let mut out = String::new();
    let phase = view
        .result
        .as_ref()
        .map(|r| format!(" (phase {})", r.phase))
        .unwrap_or_default();
    let fields = [
        ("component", c.id.to_string()),
        (
            "run",
            format!(
                "{} ({}/{}, {})",
                view.run.remote_id, view.run.stage, view.run.label, view.run.state
            ),
        ),
        (
            "work item",
            format!(
                "{}: {} {} ({}, {} attempts)",
                w.id, w.stage, w.stage_id, w.state, w.attempts
            ),
        ),
        ("params", w.params.clone()),
        (
            "state",
            format!("{}{}", c.state, if c.active { ", active" } else { "" }),
        ),
        (
            "exit status",
            c.exit_status
                .map(|e| format!("{e}{phase}"))
                .unwrap_or_else(none),
        ),
        (
            "runtime",
            c.runtime.map(|r| format!("{r:.1} s")).unwrap_or_else(none),
        ),
        ("fault", format!("{} ({})", c.fault, view.fault_meaning)),
        (
            "stats",
            view.result
                .as_ref()
                .map(|r| r.stats.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(none),
        ),
        (
            "rank",
            view.rank.map(|r| r.to_string()).unwrap_or_else(none),
        ),
        ("rank log", view.rank_log.clone().unwrap_or_else(none)),
        (
            "output error",
            view.result
                .as_ref()
                .map(|r| r.output_error.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(none),
        ),
    ];
    for (k, v) in fields {
        out.push_str(&format!("{k:<12} {v}\n"));
    }
    out.push_str("\ncommands:\n");
    match (&view.commands, &view.remote_run) {
        (Some(cmds), Some(rr)) => {
            out.push_str("  # to run it by hand on the front end:\n");
            out.push_str(&format!(
                "  export OFFLOAD_RUN={}\n",
                crate::shell::quote(rr)
            ));
            for (name, text) in [
                ("pre", &cmds.pre),
                ("command", &cmds.command),
                ("post", &cmds.post),
            ] {
                if text.is_empty() {
                    continue;
                }
                out.push_str(&format!("  # {name}\n"));
                out.push_str(&indent(text));
            }
            if let Some(l) = &cmds.log {
                out.push_str(&format!("  # whole log kept at {l}\n"));
            }
        }
        _ => out.push_str(&format!(
            "  unknown: {}\n",
            view.commands_unknown.clone().unwrap_or_default()
        )),
    }
    match &view.result {
        Some(r) => {
            out.push_str("\nstdout (tail):\n");
            out.push_str(&indent(&r.stdout_tail));
            out.push_str("\nstderr (tail):\n");
            out.push_str(&indent(&r.stderr_tail));
        }
        None => out.push_str("\nno result record: no log tails\n"),
    }
    out.push_str("\nattempts of this work item:\n");
    let rows: Vec<Vec<String>> = view
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.remote_id.to_string(),
                a.state.to_string(),
                a.exit_status
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into()),
                a.runtime
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "-".into()),
                table::time(&a.updated_at),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["COMPONENT", "RUN", "STATE", "EXIT", "RUNTIME_S", "UPDATED"],
        &rows,
    ));
    out.push_str(&format!("\nhistory of run {}:\n", view.run.remote_id));
    out.push_str(&history_table(&view.history));
    out
}
