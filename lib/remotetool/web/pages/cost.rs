//! What the work cost (`report`): per label and stage, components done,
//! failed, abandoned and queued, runtime, core-, CPU- and node-hours, and
//! the share of the node-hours asked for that the jobs used.

use askama::Template;

use super::{framed, Ctx};
use crate::cli::Session;
use crate::remotetool::args::ReportArgs;
use crate::remotetool::report::{self, Report};
use crate::remotetool::web::svg::stacked_bar;

pub struct Row {
    pub label: String,
    pub stage: String,
    pub done: i64,
    pub failed: i64,
    pub abandoned: i64,
    pub queued: i64,
    pub runtime: String,
    pub core: String,
    pub cpu: String,
    pub node: String,
    pub asked: String,
    pub used: String,
    pub used_bar: String,
    pub source: String,
}

#[derive(Template)]
#[template(path = "cost.html")]
pub struct Page {
    pub rows: Vec<Row>,
}

fn hours(h: Option<f64>) -> String {
    h.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into())
}

pub fn body(s: &mut Session, _ctx: &Ctx) -> anyhow::Result<String> {
    let args = ReportArgs {
        label: None,
        stage: None,
        recipes: None,
        runs: false,
        items: false,
    };
    let Report::Groups(groups) = report::gather(&mut s.db, &s.config, &args, &s.printer)? else {
        return Err(anyhow::anyhow!("the report gave no groups"));
    };
    let rows = groups
        .into_iter()
        .map(|g| Row {
            used: g
                .of_request
                .map(|r| format!("{:.0} %", r * 100.0))
                .unwrap_or_else(|| "-".into()),
            used_bar: g
                .of_request
                .map(|r| {
                    let used = (r.clamp(0.0, 1.0) * 1000.0) as i64;
                    stacked_bar(
                        &[
                            (used, "#1565c0", "used"),
                            (1000 - used, "#e0e0e0", "asked, not used"),
                        ],
                        80.0,
                    )
                })
                .unwrap_or_default(),
            label: g.label,
            stage: g.stage,
            done: g.done,
            failed: g.failed,
            abandoned: g.abandoned,
            queued: g.queued,
            runtime: format!("{:.2}", g.runtime_hours),
            core: hours(g.core_hours),
            cpu: hours(g.cpu_hours),
            node: hours(g.node_hours),
            asked: hours(g.requested_node_hours),
            source: g.source.unwrap_or_else(|| "-".into()),
        })
        .collect();
    Ok(Page { rows }.render()?)
}

pub fn page(s: &mut Session, ctx: &Ctx) -> anyhow::Result<String> {
    framed(ctx, "Cost", &body(s, ctx)?, false)
}
