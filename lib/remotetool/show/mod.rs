//! `remotetool show`: one run (fields, components by state, the failed
//! ones, history: [`run`]) or one component (state, attempts, exit status,
//! runtime, fault, log tails, the exact commands it ran, every attempt of
//! its work item, and the run's history: [`component`]). Each is a model
//! gathered by reading only, and rendered as text or JSON.

pub mod component;
pub mod run;

use super::args::ShowArgs;
use crate::cli::Session;
use crate::db::models::Component;
use crate::exit::{self, ExitStatus};
use crate::record::ResultRecord;

pub fn run(s: &mut Session, a: ShowArgs) -> anyhow::Result<ExitStatus> {
    let component = match (a.component, a.remote_id, a.stage_id) {
        (Some(cid), _, _) => Some(cid),
        (None, Some(remote_id), Some(sid)) => {
            let Some(cid) = s.db.read(|s| s.run_component_id(remote_id, sid))? else {
                s.db.read(|s| s.run(remote_id))?
                    .ok_or_else(|| no_run(remote_id))?;
                return Err(exit::usage(format!(
                    "run {remote_id} has no component of stage_id {sid}"
                )));
            };
            Some(cid)
        }
        _ => None,
    };
    if let Some(cid) = component {
        let view = component::gather(&mut s.db, &s.config, cid, a.remote_id, a.history)?;
        s.printer.model(&view, component::render)?;
        return Ok(ExitStatus::Success);
    }
    let remote_id = a.remote_id.expect("clap requires a run or a component");
    let view = run::gather(&mut s.db, remote_id, a.history, a.failed)?;
    let width = s.printer.width();
    s.printer.model(&view, |v| run::render(v, width))?;
    Ok(ExitStatus::Success)
}

/// The result record a component's row keeps, if it parses.
pub(super) fn record(c: &Component) -> Option<ResultRecord> {
    c.result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
}

pub(super) fn no_run(id: i64) -> anyhow::Error {
    exit::usage(format!(
        "no run with remote_id {id}; `remotetool list` shows the runs"
    ))
}
