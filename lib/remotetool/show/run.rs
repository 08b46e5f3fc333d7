//! `remotetool show RUN`: its fields, its components by state, the failed
//! ones with the last line each wrote, and its history.

use serde::Serialize;

use super::{no_run, record};
use crate::db::models::History;
use crate::db::Db;
use crate::record::{last_lines, ResultRecord};
use crate::remotetool::history::history_table;
use crate::remotetool::list::{views, RunView};
use crate::table;

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
    /// The last few lines of that tail (the web view's run page; not in
    /// `show`'s JSON, which keeps the one line).
    #[serde(skip)]
    pub last_lines: String,
}

#[derive(Serialize)]
/// What `show RUN` reports (its JSON as it is).
pub struct RunShow {
    #[serde(flatten)]
    pub view: RunView,
    pub failed_components: Vec<FailedRow>,
    pub history: Vec<History>,
}

/// The tail a failure is read from: the output error when there is one,
/// else stderr's tail (or stdout's when stderr is empty).
fn telling_tail(r: &ResultRecord) -> &str {
    if !r.output_error.is_empty() {
        &r.output_error
    } else if r.stderr_tail.trim().is_empty() {
        &r.stdout_tail
    } else {
        &r.stderr_tail
    }
}

fn last_line(r: &ResultRecord) -> String {
    last_lines(telling_tail(r), 1).trim().to_string()
}

/// Lines the web view's run page shows of each failed component's tail.
const LAST_LINES: usize = 5;

/// Gather a run's show (reads only): at most `history` history rows and
/// `failed` failed components.
pub fn gather(db: &mut Db, remote_id: i64, history: i64, failed: i64) -> anyhow::Result<RunShow> {
    let run = db
        .read(|s| s.run(remote_id))?
        .ok_or_else(|| no_run(remote_id))?;
    let history = db.read(|s| s.history(Some(remote_id), history))?;
    let failed: Vec<FailedRow> = db
        .read(|s| s.run_failed_components(remote_id, failed.max(0)))?
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
                last_lines: r
                    .as_ref()
                    .map(|r| last_lines(telling_tail(r), LAST_LINES))
                    .unwrap_or_default(),
            }
        })
        .collect();
    let view = views(db, vec![run])?
        .pop()
        .expect("one run in, one view out");
    Ok(RunShow {
        view,
        failed_components: failed,
        history,
    })
}

/// The text of a run's show, cut to `width` columns where a table would
/// overflow.
pub fn render(show: &RunShow, width: Option<usize>) -> String {
    let (view, failed, history) = (&show.view, &show.failed_components, &show.history);
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
            width,
        ));
    }
    out.push_str("\nhistory:\n");
    out.push_str(&history_table(history));
    out
}
