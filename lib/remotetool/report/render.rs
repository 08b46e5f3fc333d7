//! The report as people read it: a table per kind of row.

use super::{GroupRow, ItemRow, Report, RunCost};
use crate::table;

/// The report's table.
pub fn render(report: &Report) -> String {
    match report {
        Report::Groups(rows) => groups(rows),
        Report::Runs(rows) => runs(rows),
        Report::Items(rows) => items(rows),
    }
}

pub(super) fn hours(h: Option<f64>) -> String {
    h.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into())
}

pub(super) fn percent(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0} %", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn runs(runs: &[RunCost]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.remote_id.to_string(),
                r.label.clone(),
                r.stage.clone(),
                r.state.to_string(),
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
    table::render(
        &[
            "RUN", "LABEL", "STAGE", "STATE", "JOBS", "NODE_H", "ASKED_H", "USED", "CORE_H",
            "CPU_H", "SOURCE",
        ],
        &rows,
    )
}

fn groups(rows: &[GroupRow]) -> String {
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
    table::render(
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
    )
}

fn items(rows: &[ItemRow]) -> String {
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
    table::render(
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
    )
}
