//! `remotetool report`: per label and stage, the components done, failed,
//! abandoned and queued, their runtime, and what the runs cost: core-hours
//! and CPU-hours from the site's accounting (Slurm's sacct, Grid Engine's
//! qacct, recorded by poll for each job), node-hours against the node-hours the jobs asked
//! for. Where a site keeps no accounting the core-hours are an estimate
//! (runtime x the recipe's threads per command), and the report says so.
//! `--runs` gives the same per run, `--items` per work item (each run's
//! cost spread over its components by their measured runtimes).

mod cost;
mod render;

pub use render::render;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::args::ReportArgs;
use crate::cli::Session;
use crate::config::Config;
use crate::db::models::JobRecord;
use crate::db::Db;
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::state::{ComponentState, RunState};
use cost::{add, merge_source, ratio, run_cost, ESTIMATE};

/// What `report` reports: per label and stage (the default), per run
/// (`--runs`) or per work item (`--items`). Its JSON is the rows' array.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Report {
    Groups(Vec<GroupRow>),
    Runs(Vec<RunCost>),
    Items(Vec<ItemRow>),
}

pub fn run(s: &mut Session, a: ReportArgs) -> anyhow::Result<ExitStatus> {
    let report = gather(&mut s.db, &s.config, &a, &s.printer)?;
    s.printer.model(&report, render)?;
    Ok(ExitStatus::Success)
}

/// What one run cost.
#[derive(Serialize, Debug, Clone)]
pub struct RunCost {
    pub remote_id: i64,
    pub label: String,
    pub stage: String,
    pub state: RunState,
    /// Batch jobs poll saw end.
    pub jobs: usize,
    pub runtime_hours: f64,
    /// Accounting's elapsed x allocated CPUs; the estimate: runtime x
    /// threads per command. Null without either.
    pub core_hours: Option<f64>,
    /// Accounting's CPU time (user + system); null without accounting.
    pub cpu_hours: Option<f64>,
    /// Wall time x nodes held.
    pub node_hours: Option<f64>,
    /// Walltime asked for x nodes asked for.
    pub requested_node_hours: Option<f64>,
    /// node_hours / requested_node_hours.
    pub of_request: Option<f64>,
    /// The accounting command ("sacct", "qacct") or "estimate".
    pub source: Option<String>,
}

#[derive(Serialize, Default)]
pub struct GroupRow {
    pub label: String,
    pub stage: String,
    pub done: i64,
    pub failed: i64,
    pub queued: i64,
    pub abandoned: i64,
    pub runtime_hours: f64,
    pub core_hours: Option<f64>,
    pub cpu_hours: Option<f64>,
    pub node_hours: Option<f64>,
    pub requested_node_hours: Option<f64>,
    pub of_request: Option<f64>,
    /// "sacct", "qacct", "estimate", or "sacct+estimate" when its runs differ.
    pub source: Option<String>,
}

#[derive(Serialize, Default)]
pub struct ItemRow {
    pub label: String,
    pub stage: String,
    pub stage_id: i64,
    pub work_item_id: i64,
    pub state: String,
    /// Components the item had (one per run it was in).
    pub components: usize,
    pub runtime_hours: f64,
    pub core_hours: Option<f64>,
    pub cpu_hours: Option<f64>,
    pub source: Option<String>,
}

/// Gather the report `a` asks for (reads only); `printer` says which
/// core-hours are estimates.
pub fn gather(
    db: &mut Db,
    cfg: &Config,
    a: &ReportArgs,
    printer: &Printer,
) -> anyhow::Result<Report> {
    let (label, stage) = (a.label.as_deref(), a.stage.as_deref());
    let recipes = cfg.recipes_dir(a.recipes.as_deref());
    let mut threads: HashMap<String, Option<u32>> = HashMap::new();
    let mut threads_of = |stage: &str| {
        *threads.entry(stage.to_string()).or_insert_with(|| {
            crate::recipe::Recipe::load_for_stage(&recipes, stage)
                .ok()
                .map(|r| r.threads)
        })
    };

    let run_keys = db.read(|s| s.report_runs(label, stage))?;
    let records = db.read(|s| s.job_records(label, stage))?;
    // Every component only when the report is per work item; otherwise
    // each run's summed runtime, counted in the database.
    let components = if a.items {
        db.read(|s| s.component_costs(label, stage))?
    } else {
        Vec::new()
    };
    let mut jobs_of: HashMap<i64, Vec<&JobRecord>> = HashMap::new();
    for j in &records {
        jobs_of.entry(j.remote_id).or_default().push(j);
    }
    let mut runtime_of: HashMap<i64, (f64, usize)> = HashMap::new();
    if a.items {
        for c in &components {
            let e = runtime_of.entry(c.remote_id).or_default();
            e.0 += c.runtime.unwrap_or(0.0).max(0.0);
            e.1 += 1;
        }
    } else {
        for (id, sum) in db.read(|s| s.run_runtime_sums(label, stage))? {
            runtime_of.insert(id, (sum.unwrap_or(0.0), 0));
        }
    }
    let runs: Vec<RunCost> = run_keys
        .into_iter()
        .map(|k| {
            let id = k.remote_id;
            let t = threads_of(&k.stage);
            run_cost(
                k,
                jobs_of.get(&id).map(Vec::as_slice).unwrap_or(&[]),
                runtime_of.get(&id).map(|r| r.0).unwrap_or(0.0),
                t,
            )
        })
        .collect();
    let estimated: Vec<String> = runs
        .iter()
        .filter(|r| r.source.as_deref() == Some(ESTIMATE))
        .map(|r| r.remote_id.to_string())
        .collect();
    if !estimated.is_empty() {
        printer.info(format!(
            "core-hours of run{} {} are estimates (runtime x the recipe's threads per command): no accounting record was read for their jobs (offload reads Slurm's and Grid Engine's; where one could not be read, poll said why)",
            if estimated.len() == 1 { "" } else { "s" },
            crate::runs::abbreviate(&estimated)
        ));
    }
    if a.runs {
        return Ok(Report::Runs(runs));
    }
    if a.items {
        return Ok(Report::Items(items(&runs, &components, &runtime_of)));
    }
    Ok(Report::Groups(groups(db, label, stage, &runs)?))
}

fn group<'a>(
    out: &'a mut BTreeMap<(String, String), GroupRow>,
    label: &str,
    stage: &str,
) -> &'a mut GroupRow {
    out.entry((label.to_string(), stage.to_string()))
        .or_insert_with(|| GroupRow {
            label: label.to_string(),
            stage: stage.to_string(),
            ..Default::default()
        })
}

/// Components and costs per label and stage.
fn groups(
    db: &mut Db,
    label: Option<&str>,
    stage: Option<&str>,
    runs: &[RunCost],
) -> anyhow::Result<Vec<GroupRow>> {
    let counts = db.read(|s| s.component_report(label, stage))?;
    let abandoned = db.read(|s| s.abandoned_items(label, stage))?;
    let mut out: BTreeMap<(String, String), GroupRow> = BTreeMap::new();
    for g in counts {
        let r = group(&mut out, &g.label, &g.stage);
        match g.state {
            ComponentState::Done => r.done += g.components,
            ComponentState::Failed => r.failed += g.components,
            ComponentState::Queued => r.queued += g.components,
        }
        r.runtime_hours += g.runtime_s.unwrap_or(0.0) / 3600.0;
    }
    for g in abandoned {
        group(&mut out, &g.label, &g.stage).abandoned = g.items;
    }
    for run in runs {
        let r = group(&mut out, &run.label, &run.stage);
        add(&mut r.core_hours, run.core_hours);
        add(&mut r.cpu_hours, run.cpu_hours);
        add(&mut r.node_hours, run.node_hours);
        add(&mut r.requested_node_hours, run.requested_node_hours);
        merge_source(&mut r.source, run.source.as_deref());
    }
    for r in out.values_mut() {
        r.of_request = ratio(r.node_hours, r.requested_node_hours);
    }
    let rows: Vec<GroupRow> = out.into_values().collect();
    Ok(rows)
}

/// Each run's core- and CPU-hours spread over its components by their
/// measured runtimes (evenly when none has one), summed per work item.
fn items(
    runs: &[RunCost],
    components: &[crate::db::usage::ComponentCost],
    runtime_of: &HashMap<i64, (f64, usize)>,
) -> Vec<ItemRow> {
    let by_id: HashMap<i64, &RunCost> = runs.iter().map(|r| (r.remote_id, r)).collect();
    let mut items: BTreeMap<(String, String, i64), ItemRow> = BTreeMap::new();
    for c in components {
        let (remote_id, stage_id, runtime) = (&c.remote_id, &c.stage_id, &c.runtime);
        let Some(run) = by_id.get(remote_id) else {
            continue;
        };
        let (total, n) = runtime_of.get(remote_id).copied().unwrap_or((0.0, 1));
        let own = runtime.unwrap_or(0.0).max(0.0);
        let share = if total > 0.0 {
            own / total
        } else {
            1.0 / n.max(1) as f64
        };
        let r = items
            .entry((run.label.clone(), run.stage.clone(), *stage_id))
            .or_insert_with(|| ItemRow {
                label: run.label.clone(),
                stage: run.stage.clone(),
                stage_id: *stage_id,
                work_item_id: c.work_item_id,
                state: c.item_state.to_string(),
                ..Default::default()
            });
        r.components += 1;
        r.runtime_hours += own / 3600.0;
        add(&mut r.core_hours, run.core_hours.map(|h| h * share));
        add(&mut r.cpu_hours, run.cpu_hours.map(|h| h * share));
        merge_source(&mut r.source, run.source.as_deref());
    }
    items.into_values().collect()
}
