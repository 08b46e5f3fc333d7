//! `remotetool report`: per label and stage, the components done, failed,
//! abandoned and queued, their runtime, and what the runs cost: core-hours
//! and CPU-hours from the site's accounting (Slurm's sacct, Grid Engine's
//! qacct, recorded by poll for each job), node-hours against the node-hours the jobs asked
//! for. Where a site keeps no accounting the core-hours are an estimate
//! (runtime x the recipe's threads per command), and the report says so.
//! `--runs` gives the same per run, `--items` per work item (each run's
//! cost spread over its components by their measured runtimes).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::db::models::JobRecord;
use crate::db::Db;
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::state::ComponentState;
use crate::table;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub stage: Option<String>,
    /// Folder of stage recipes (for threads per command) [default: as prepare's]
    #[arg(long, value_name = "DIR")]
    pub recipes: Option<PathBuf>,
    /// One line per run: its jobs' node-hours against what they asked for
    #[arg(long, conflicts_with = "items")]
    pub runs: bool,
    /// One line per work item: its share of its runs' cost
    #[arg(long)]
    pub items: bool,
}

/// Where a cost comes from when the site's accounting (`sacct`, `qacct`:
/// the command it came from) has none.
const ESTIMATE: &str = "estimate";

/// What one run cost.
#[derive(Serialize, Debug, Clone)]
struct RunCost {
    remote_id: i64,
    label: String,
    stage: String,
    state: String,
    /// Batch jobs poll saw end.
    jobs: usize,
    runtime_hours: f64,
    /// Accounting's elapsed x allocated CPUs; the estimate: runtime x
    /// threads per command. Null without either.
    core_hours: Option<f64>,
    /// Accounting's CPU time (user + system); null without accounting.
    cpu_hours: Option<f64>,
    /// Wall time x nodes held.
    node_hours: Option<f64>,
    /// Walltime asked for x nodes asked for.
    requested_node_hours: Option<f64>,
    /// node_hours / requested_node_hours.
    of_request: Option<f64>,
    /// The accounting command ("sacct", "qacct") or "estimate".
    source: Option<String>,
}

#[derive(Serialize, Default)]
struct GroupRow {
    label: String,
    stage: String,
    done: i64,
    failed: i64,
    queued: i64,
    abandoned: i64,
    runtime_hours: f64,
    core_hours: Option<f64>,
    cpu_hours: Option<f64>,
    node_hours: Option<f64>,
    requested_node_hours: Option<f64>,
    of_request: Option<f64>,
    /// "sacct", "qacct", "estimate", or "sacct+estimate" when its runs differ.
    source: Option<String>,
}

#[derive(Serialize, Default)]
struct ItemRow {
    label: String,
    stage: String,
    stage_id: i64,
    work_item_id: i64,
    state: String,
    /// Components the item had (one per run it was in).
    components: usize,
    runtime_hours: f64,
    core_hours: Option<f64>,
    cpu_hours: Option<f64>,
    source: Option<String>,
}

fn add(a: &mut Option<f64>, b: Option<f64>) {
    if let Some(b) = b {
        *a = Some(a.unwrap_or(0.0) + b);
    }
}

/// Sources joined with `+`, accounting's first, the estimate last.
fn merge_source(a: &mut Option<String>, b: Option<&str>) {
    let Some(b) = b else { return };
    let mut parts: Vec<&str> = a
        .as_deref()
        .map(|x| x.split('+').collect())
        .unwrap_or_default();
    if !parts.contains(&b) {
        parts.push(b);
    }
    parts.sort_by_key(|p| (*p == ESTIMATE, *p));
    *a = Some(parts.join("+"));
}

fn ratio(used: Option<f64>, asked: Option<f64>) -> Option<f64> {
    match (used, asked) {
        (Some(u), Some(a)) if a > 0.0 => Some(u / a),
        _ => None,
    }
}

/// A run's cost from its jobs' records, else the estimate from its
/// components' runtime (`runtime_s`) and the recipe's `threads`.
fn run_cost(
    key: (i64, String, String, String),
    jobs: &[&JobRecord],
    runtime_s: f64,
    threads: Option<u32>,
) -> RunCost {
    let (remote_id, label, stage, state) = key;
    let accounted = !jobs.is_empty() && jobs.iter().all(|j| j.source != ESTIMATE);
    let product = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| (a * b) as f64 / 3600.0);
    let sum = |f: &dyn Fn(&JobRecord) -> Option<f64>| -> Option<f64> {
        let mut s = None;
        for j in jobs {
            add(&mut s, f(j));
        }
        s
    };
    let (core_hours, cpu_hours, source) = if accounted {
        let cpu = jobs
            .iter()
            .all(|j| j.cpu_s.is_some())
            .then(|| sum(&|j| j.cpu_s.map(|c| c / 3600.0)))
            .flatten();
        (
            sum(&|j| product(j.elapsed_s, j.alloc_cpus)),
            cpu,
            Some(jobs[0].source.clone()),
        )
    } else if !jobs.is_empty() || runtime_s > 0.0 {
        let core = threads.map(|t| runtime_s * t as f64 / 3600.0);
        (core, None, core.map(|_| ESTIMATE.to_string()))
    } else {
        (None, None, None)
    };
    let node_hours = sum(&|j| product(j.elapsed_s, j.nodes));
    let requested_node_hours = sum(&|j| product(j.timelimit_s, j.req_nodes));
    RunCost {
        remote_id,
        label,
        stage,
        state,
        jobs: jobs.len(),
        runtime_hours: runtime_s / 3600.0,
        core_hours,
        cpu_hours,
        node_hours,
        requested_node_hours,
        of_request: ratio(node_hours, requested_node_hours),
        source,
    }
}

fn hours(h: Option<f64>) -> String {
    h.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into())
}

fn percent(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0} %", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

pub fn report(
    db: &mut Db,
    cfg: &Config,
    a: ReportArgs,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
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
    let components = db.read(|s| s.component_costs(label, stage))?;
    let mut jobs_of: HashMap<i64, Vec<&JobRecord>> = HashMap::new();
    for j in &records {
        jobs_of.entry(j.remote_id).or_default().push(j);
    }
    let mut runtime_of: HashMap<i64, (f64, usize)> = HashMap::new();
    for c in &components {
        let e = runtime_of.entry(c.0).or_default();
        e.0 += c.4.unwrap_or(0.0).max(0.0);
        e.1 += 1;
    }
    let runs: Vec<RunCost> = run_keys
        .into_iter()
        .map(|k| {
            let id = k.0;
            let t = threads_of(&k.2);
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
        return print_runs(&runs, json, printer);
    }
    if a.items {
        return print_items(&runs, &components, &runtime_of, json, printer);
    }
    print_groups(db, label, stage, &runs, json, printer)
}

fn print_runs(runs: &[RunCost], json: bool, printer: &Printer) -> anyhow::Result<ExitStatus> {
    if json {
        printer.json(&runs)?;
        return Ok(ExitStatus::Success);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.remote_id.to_string(),
                r.label.clone(),
                r.stage.clone(),
                r.state.clone(),
                r.jobs.to_string(),
                hours(r.node_hours),
                hours(r.requested_node_hours),
                percent(r.of_request),
                hours(r.core_hours),
                hours(r.cpu_hours),
                r.source.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    printer.data(table::render(
        &[
            "RUN", "LABEL", "STAGE", "STATE", "JOBS", "NODE_H", "ASKED_H", "USED", "CORE_H",
            "CPU_H", "SOURCE",
        ],
        &rows,
    ))?;
    Ok(ExitStatus::Success)
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

fn print_groups(
    db: &mut Db,
    label: Option<&str>,
    stage: Option<&str>,
    runs: &[RunCost],
    json: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
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
    if json {
        printer.json(&rows)?;
        return Ok(ExitStatus::Success);
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.label.clone(),
                r.stage.clone(),
                r.done.to_string(),
                r.failed.to_string(),
                r.abandoned.to_string(),
                r.queued.to_string(),
                format!("{:.2}", r.runtime_hours),
                hours(r.core_hours),
                hours(r.cpu_hours),
                hours(r.node_hours),
                hours(r.requested_node_hours),
                percent(r.of_request),
                r.source.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    printer.data(table::render(
        &[
            "LABEL",
            "STAGE",
            "DONE",
            "FAILED",
            "ABANDONED",
            "QUEUED",
            "RUNTIME_H",
            "CORE_H",
            "CPU_H",
            "NODE_H",
            "ASKED_H",
            "USED",
            "SOURCE",
        ],
        &table_rows,
    ))?;
    Ok(ExitStatus::Success)
}

/// Each run's core- and CPU-hours spread over its components by their
/// measured runtimes (evenly when none has one), summed per work item.
fn print_items(
    runs: &[RunCost],
    components: &[crate::db::usage::ComponentCost],
    runtime_of: &HashMap<i64, (f64, usize)>,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let by_id: HashMap<i64, &RunCost> = runs.iter().map(|r| (r.remote_id, r)).collect();
    let mut items: BTreeMap<(String, String, i64), ItemRow> = BTreeMap::new();
    for (remote_id, item_id, stage_id, item_state, runtime) in components {
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
                work_item_id: *item_id,
                state: item_state.clone(),
                ..Default::default()
            });
        r.components += 1;
        r.runtime_hours += own / 3600.0;
        add(&mut r.core_hours, run.core_hours.map(|h| h * share));
        add(&mut r.cpu_hours, run.cpu_hours.map(|h| h * share));
        merge_source(&mut r.source, run.source.as_deref());
    }
    let rows: Vec<ItemRow> = items.into_values().collect();
    if json {
        printer.json(&rows)?;
        return Ok(ExitStatus::Success);
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.label.clone(),
                r.stage.clone(),
                r.stage_id.to_string(),
                r.state.clone(),
                r.components.to_string(),
                format!("{:.4}", r.runtime_hours),
                r.core_hours
                    .map(|h| format!("{h:.4}"))
                    .unwrap_or_else(|| "-".into()),
                r.cpu_hours
                    .map(|h| format!("{h:.4}"))
                    .unwrap_or_else(|| "-".into()),
                r.source.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    printer.data(table::render(
        &[
            "LABEL",
            "STAGE",
            "STAGE_ID",
            "STATE",
            "COMPONENTS",
            "RUNTIME_H",
            "CORE_H",
            "CPU_H",
            "SOURCE",
        ],
        &table_rows,
    ))?;
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SACCT: &str = "sacct";

    fn job(
        source: &str,
        elapsed: i64,
        cpus: i64,
        cpu_s: Option<f64>,
        nodes: i64,
        limit: i64,
    ) -> JobRecord {
        JobRecord {
            remote_id: 1,
            job_id: "7".into(),
            attempt: 0,
            source: source.into(),
            final_state: None,
            elapsed_s: Some(elapsed),
            alloc_cpus: Some(cpus),
            cpu_s,
            nodes: Some(nodes),
            req_nodes: Some(nodes),
            timelimit_s: Some(limit),
            recorded_at: crate::db::now(),
        }
    }

    fn key() -> (i64, String, String, String) {
        (1, "L".into(), "chip".into(), "full".into())
    }

    #[test]
    fn accounting_wins_over_the_estimate() {
        // Two jobs (the first cut at its limit): 1 h x 48 CPUs + 0.5 h x 48.
        let a = job(SACCT, 3600, 48, Some(36000.0), 2, 3600);
        let b = job(SACCT, 1800, 48, Some(18000.0), 2, 3600);
        let c = run_cost(key(), &[&a, &b], 999.0, Some(2));
        assert_eq!(c.source.as_deref(), Some(SACCT));
        assert_eq!(c.core_hours, Some(72.0));
        assert_eq!(c.cpu_hours, Some(15.0));
        assert_eq!(c.node_hours, Some(3.0));
        assert_eq!(c.requested_node_hours, Some(4.0));
        assert_eq!(c.of_request, Some(0.75));
        assert_eq!(percent(c.of_request), "75 %");
    }

    #[test]
    fn without_accounting_the_estimate_says_so() {
        let e = job(ESTIMATE, 600, 48, None, 2, 3600);
        let c = run_cost(key(), &[&e], 7200.0, Some(2));
        assert_eq!(c.source.as_deref(), Some(ESTIMATE));
        assert_eq!(c.core_hours, Some(4.0));
        assert_eq!(c.cpu_hours, None);
        assert_eq!(c.node_hours.map(|h| (h * 3600.0).round()), Some(1200.0));
        // One job without accounting makes the whole run an estimate.
        let a = job(SACCT, 3600, 48, Some(1.0), 2, 3600);
        assert_eq!(
            run_cost(key(), &[&a, &e], 7200.0, Some(2))
                .source
                .as_deref(),
            Some(ESTIMATE)
        );
        // No job, no runtime: nothing to say.
        let c = run_cost(key(), &[], 0.0, Some(2));
        assert_eq!((c.core_hours, c.source), (None, None));
        let mut s = None;
        merge_source(&mut s, Some(SACCT));
        merge_source(&mut s, Some(SACCT));
        assert_eq!(s.as_deref(), Some("sacct"));
        merge_source(&mut s, Some(ESTIMATE));
        merge_source(&mut s, Some(SACCT));
        assert_eq!(s.as_deref(), Some("sacct+estimate"));
        // Grid Engine's accounting is as good as Slurm's.
        let q = job("qacct", 3600, 4, Some(100.0), 1, 7200);
        let c = run_cost(key(), &[&q], 3000.0, Some(2));
        assert_eq!(
            (c.source.as_deref(), c.core_hours),
            (Some("qacct"), Some(4.0))
        );
        let mut s = None;
        merge_source(&mut s, Some(ESTIMATE));
        merge_source(&mut s, Some("qacct"));
        merge_source(&mut s, Some(SACCT));
        assert_eq!(s.as_deref(), Some("qacct+sacct+estimate"));
    }
}
