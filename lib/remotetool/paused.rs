//! `remotetool paused`: which tools are paused, and for which targets.

use serde::Serialize;

use crate::cli::Session;
use crate::db::models::Control;
use crate::db::Db;
use crate::exit::ExitStatus;
use crate::runs;
use crate::table;

/// A row of `remotetool paused`: a tool, paused for every run or (with a
/// target) for one target's runs.
#[derive(Serialize)]
pub struct PauseRow {
    pub tool: String,
    /// Null: the tool as a whole.
    pub target: Option<String>,
    pub paused: bool,
    pub reason: Option<String>,
    pub changed_at: chrono::NaiveDateTime,
    pub changed_by: String,
}

/// Every pausable tool (paused or not), then each per-target pause in
/// force (reads only).
pub fn gather(db: &mut Db) -> anyhow::Result<Vec<PauseRow>> {
    let controls = db.read(|s| s.controls())?;
    let row = |c: &Control, tool: &str, target: Option<&str>| PauseRow {
        tool: tool.to_string(),
        target: target.map(str::to_string),
        paused: c.paused,
        reason: c.reason.clone(),
        changed_at: c.changed_at,
        changed_by: c.changed_by.clone(),
    };
    let mut all: Vec<PauseRow> = runs::PAUSABLE
        .iter()
        .map(|t| match controls.iter().find(|c| c.tool == *t) {
            Some(c) => row(c, t, None),
            None => PauseRow {
                tool: t.to_string(),
                target: None,
                paused: false,
                reason: None,
                changed_at: chrono::NaiveDateTime::default(),
                changed_by: String::new(),
            },
        })
        .collect();
    // Per-target pauses in force (a resumed one is no longer listed).
    for c in controls.iter().filter(|c| c.paused) {
        if let Some((tool, target)) = runs::split_pause_key(&c.tool) {
            if runs::PAUSABLE_PER_TARGET.contains(&tool) {
                all.push(row(c, tool, Some(target)));
            }
        }
    }
    Ok(all)
}

pub fn run(s: &mut Session) -> anyhow::Result<ExitStatus> {
    let rows = gather(&mut s.db)?;
    s.printer.model(&rows, |r| render(r))?;
    Ok(ExitStatus::Success)
}

/// The pauses as a table.
pub fn render(all: &[PauseRow]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|c| {
            let changed = if c.changed_by.is_empty() {
                ("-".to_string(), "-".to_string())
            } else {
                (table::time(&c.changed_at), c.changed_by.clone())
            };
            vec![
                c.tool.clone(),
                c.target.clone().unwrap_or_else(|| "(all)".to_string()),
                if c.paused { "paused" } else { "on" }.to_string(),
                changed.0,
                changed.1,
                c.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::render(&["TOOL", "TARGET", "STATE", "SINCE", "BY", "REASON"], &rows)
}
