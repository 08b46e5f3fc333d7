//! `remotetool show`: one run (fields, components by state, the failed
//! ones, history) or one component (state, attempts, exit status, runtime,
//! fault, log tails, the exact commands it ran, every attempt of its work
//! item, and the run's history).

use serde::Serialize;

use super::{views, RunView};
use crate::config::Config;
use crate::db::models::{Component, History, Run, WorkItem};
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::record::ResultRecord;
use crate::scripts::{self, ComponentCommands};
use crate::state::RunState;
use crate::table;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["remote_id", "component"])))]
pub struct ShowArgs {
    /// The run's remote_id
    #[arg(value_name = "REMOTE_ID")]
    pub remote_id: Option<i64>,
    /// Show this component (its id, as in `show RUN` or `components.tsv`)
    #[arg(long, value_name = "ID", conflicts_with = "stage_id")]
    pub component: Option<i64>,
    /// Show the run's component of this work item (stage_id)
    #[arg(long, value_name = "N", requires = "remote_id")]
    pub stage_id: Option<i64>,
    /// How many history rows to show (newest)
    #[arg(long, default_value_t = 50)]
    pub history: i64,
    /// How many failed components of the run to list
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub failed: i64,
}

/// One component as `show` reports it.
#[derive(Debug, Serialize)]
pub struct FailedRow {
    pub component: i64,
    pub stage_id: i64,
    pub exit_status: Option<i32>,
    pub phase: Option<String>,
    pub fault: i32,
    /// The last line of its stderr tail (or stdout's when stderr is empty).
    pub last_line: String,
}

#[derive(Serialize)]
struct ShowView {
    #[serde(flatten)]
    view: RunView,
    failed_components: Vec<FailedRow>,
    history: Vec<History>,
}

fn record(c: &Component) -> Option<ResultRecord> {
    c.result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
}

fn last_line(r: &ResultRecord) -> String {
    if !r.output_error.is_empty() {
        return r.output_error.clone();
    }
    let pick = if r.stderr_tail.trim().is_empty() {
        &r.stdout_tail
    } else {
        &r.stderr_tail
    };
    pick.trim_end()
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string()
}

pub(super) fn history_table(rows: &[History]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|h| {
            vec![
                table::time(&h.at),
                h.remote_id
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                h.tool.clone(),
                format!("{}:{}", h.host, h.pid),
                match (&h.from_state, &h.to_state) {
                    (None, None) => String::new(),
                    (f, t) => format!(
                        "{} -> {}",
                        f.map_or("-", RunState::as_str),
                        t.map_or("-", RunState::as_str)
                    ),
                },
                h.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::render(
        &["AT", "RUN", "TOOL", "HOST:PID", "CHANGE", "MESSAGE"],
        &rows,
    )
}

fn no_run(id: i64) -> anyhow::Error {
    exit::usage(format!(
        "no run with remote_id {id}; `remotetool list` shows the runs"
    ))
}

pub fn show(
    db: &mut Db,
    cfg: &Config,
    a: ShowArgs,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    if let Some(cid) = a.component {
        return show_component(db, cfg, cid, a.remote_id, &a, json, printer);
    }
    let remote_id = a.remote_id.expect("clap requires a run or a component");
    if let Some(sid) = a.stage_id {
        let Some(cid) = db.read(|s| s.run_component_id(remote_id, sid))? else {
            db.read(|s| s.run(remote_id))?
                .ok_or_else(|| no_run(remote_id))?;
            return Err(exit::usage(format!(
                "run {remote_id} has no component of stage_id {sid}"
            )));
        };
        return show_component(db, cfg, cid, Some(remote_id), &a, json, printer);
    }
    let run = db
        .read(|s| s.run(remote_id))?
        .ok_or_else(|| no_run(remote_id))?;
    let history = db.read(|s| s.history(Some(remote_id), a.history))?;
    let failed: Vec<FailedRow> = db
        .read(|s| s.run_failed_components(remote_id, a.failed.max(0)))?
        .into_iter()
        .map(|(c, w)| {
            let r = record(&c);
            FailedRow {
                component: c.id,
                stage_id: w.stage_id,
                exit_status: c.exit_status,
                phase: r.as_ref().map(|r| r.phase.clone()),
                fault: c.fault,
                last_line: r.as_ref().map(last_line).unwrap_or_default(),
            }
        })
        .collect();
    let view = views(db, vec![run])?
        .pop()
        .expect("one run in, one view out");
    if json {
        printer.json(&ShowView {
            view,
            failed_components: failed,
            history,
        })?;
        return Ok(ExitStatus::Success);
    }
    let r = &view.run;
    let none = || "-".to_string();
    let by_state: Vec<String> = view
        .components_by_state
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    let mut out = String::new();
    let fields = [
        ("remote_id", r.remote_id.to_string()),
        ("state", r.state.to_string()),
        ("stage", r.stage.clone()),
        ("label", r.label.clone()),
        ("path_base", r.path_base.clone()),
        ("target", r.target.clone().unwrap_or_else(none)),
        ("job_id", r.job_id.clone().unwrap_or_else(none)),
        ("job_policy", r.job_policy.to_string()),
        ("attempt", r.attempt.to_string()),
        ("fault", r.fault.to_string()),
        ("message", r.message.clone().unwrap_or_else(none)),
        (
            "auth_return_state",
            r.auth_return_state.map_or_else(none, |s| s.to_string()),
        ),
        ("last_poll", table::opt_time(&r.last_poll)),
        ("created", table::time(&r.created_at)),
        ("in state since", table::time(&r.state_since)),
        ("updated", table::time(&r.updated_at)),
        (
            "components",
            format!("{} ({})", view.components, by_state.join(", ")),
        ),
    ];
    for (k, v) in fields {
        out.push_str(&format!("{k:<18} {v}\n"));
    }
    if !failed.is_empty() {
        out.push_str(&format!(
            "\nfailed components (first {}; `remotetool show --component ID` for one):\n",
            failed.len()
        ));
        let rows: Vec<Vec<String>> = failed
            .iter()
            .map(|f| {
                vec![
                    f.component.to_string(),
                    f.stage_id.to_string(),
                    f.exit_status
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "-".into()),
                    f.phase.clone().unwrap_or_else(|| "-".into()),
                    if f.fault == crate::state::fault::COMPONENT_NO_RECORD {
                        "no result record".to_string()
                    } else {
                        f.last_line.clone()
                    },
                ]
            })
            .collect();
        out.push_str(&table::render_fit(
            &["COMPONENT", "STAGE_ID", "EXIT", "PHASE", "LAST LINE"],
            &rows,
            printer.width(),
        ));
    }
    out.push_str("\nhistory:\n");
    out.push_str(&history_table(&history));
    printer.data(out)?;
    Ok(ExitStatus::Success)
}

#[derive(Serialize)]
struct ComponentView {
    component: Component,
    result: Option<ResultRecord>,
    fault_meaning: &'static str,
    work_item: WorkItem,
    run: Run,
    rank: Option<u32>,
    /// The run's folder on the remote side (OFFLOAD_RUN of its job).
    remote_run: Option<String>,
    /// The rank's whole log there.
    rank_log: Option<String>,
    /// The phases exactly as the rank ran them; null when the run's local
    /// folder is gone.
    commands: Option<ComponentCommands>,
    /// Why the commands are unknown, when they are.
    commands_unknown: Option<String>,
    /// Every component this work item has had, oldest first.
    attempts: Vec<Component>,
    history: Vec<History>,
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

fn show_component(
    db: &mut Db,
    cfg: &Config,
    cid: i64,
    remote_id: Option<i64>,
    a: &ShowArgs,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
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
    let history = db.read(|s| s.history(Some(run.remote_id), a.history))?;
    let (remote_run, rank, rank_log, commands, commands_unknown) = match commands_of(cfg, &run, cid)
    {
        Ok((rr, rank, c)) => {
            let log = format!("{rr}/logs/rank-{rank}.log");
            (Some(rr), Some(rank), Some(log), Some(c), None)
        }
        Err(e) => (None, None, None, None, Some(exit::one_line(&e))),
    };
    let view = ComponentView {
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
    };
    if json {
        printer.json(&view)?;
        return Ok(ExitStatus::Success);
    }
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
    printer.data(out)?;
    Ok(ExitStatus::Success)
}
