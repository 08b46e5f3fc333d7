//! `remotetool unfault`: a person has acted on a run held back after a
//! fault; its fault and hold are cleared, so `--next` takes it again.

use super::args::UnfaultArgs;
use crate::cli::Session;
use crate::exit::ExitStatus;
use crate::runs;

pub fn run(s: &mut Session, a: UnfaultArgs) -> anyhow::Result<ExitStatus> {
    let done = runs::unfault(
        &mut s.db,
        a.remote_id,
        a.label.as_deref(),
        a.reason.as_deref(),
        &s.actor,
    )?;
    for r in &done {
        s.printer.info(format!(
            "run {} ({}): fault {} and its hold cleared; --next takes it again",
            r.remote_id, r.state, r.fault
        ));
    }
    s.printer.ids(&done, |r| r.remote_id)?;
    Ok(ExitStatus::Success)
}
