//! `remotetool list` (`-listrun`): runs, with their components by state.
//! The model ([`RunView`]) is shared with `show`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::args::ListArgs;
use crate::cli::Session;
use crate::db::models::{Run, RunFilter};
use crate::db::Db;
use crate::exit::ExitStatus;
use crate::table;

#[derive(Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub run: Run,
    pub components: i64,
    pub components_by_state: BTreeMap<String, i64>,
}

/// The runs with their components counted by state (one query for all).
pub fn views(db: &mut Db, runs: Vec<Run>) -> anyhow::Result<Vec<RunView>> {
    let ids: Vec<i64> = runs.iter().map(|r| r.remote_id).collect();
    let counts = db.read(|s| s.component_counts(&ids))?;
    let mut by_run: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    for c in counts {
        by_run
            .entry(c.remote_id)
            .or_default()
            .insert(c.state.to_string(), c.components);
    }
    Ok(runs
        .into_iter()
        .map(|run| {
            let by_state = by_run.remove(&run.remote_id).unwrap_or_default();
            RunView {
                components: by_state.values().sum(),
                components_by_state: by_state,
                run,
            }
        })
        .collect())
}

/// The runs `filter` selects, with their components by state (reads only).
pub fn gather(db: &mut Db, filter: &RunFilter) -> anyhow::Result<Vec<RunView>> {
    let runs = db.read(|s| s.runs(filter))?;
    views(db, runs)
}

pub fn run(s: &mut Session, a: ListArgs) -> anyhow::Result<ExitStatus> {
    let filter = RunFilter {
        states: a.state.clone(),
        label: a.label,
        stage: a.stage,
        remote_id: None,
    };
    let views = gather(&mut s.db, &filter)?;
    if views.is_empty() && !s.printer.is_json() {
        s.printer.info("no runs match");
        return Ok(ExitStatus::Success);
    }
    s.printer.model(&views, |v| render(v))?;
    Ok(ExitStatus::Success)
}

/// The runs as a table.
pub fn render(views: &[RunView]) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let r = &v.run;
            vec![
                r.remote_id.to_string(),
                r.state.to_string(),
                r.stage.clone(),
                r.label.clone(),
                v.components.to_string(),
                r.target.clone().unwrap_or_else(|| "-".into()),
                r.job_id.clone().unwrap_or_else(|| "-".into()),
                r.attempt.to_string(),
                r.fault.to_string(),
                table::time(&r.updated_at),
            ]
        })
        .collect();
    table::render(
        &[
            "REMOTE_ID",
            "STATE",
            "STAGE",
            "LABEL",
            "COMPONENTS",
            "TARGET",
            "JOB_ID",
            "ATTEMPT",
            "FAULT",
            "UPDATED",
        ],
        &rows,
    )
}
