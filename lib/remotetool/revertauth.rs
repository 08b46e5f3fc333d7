//! `remotetool revertauth` (`-revertauth`): runs in `auth` go back to the
//! state they were in when the connection failed.

use super::args::RevertAuthArgs;
use crate::cli::Session;
use crate::exit::ExitStatus;
use crate::runs;

pub fn run(s: &mut Session, a: RevertAuthArgs) -> anyhow::Result<ExitStatus> {
    let done = runs::revert_auth(&mut s.db, a.label.as_deref(), a.remote_id, &s.actor)?;
    for r in &done {
        s.printer
            .info(format!("run {}: {} -> {}", r.remote_id, r.from, r.to));
    }
    s.printer.ids(&done, |r| r.remote_id)?;
    Ok(ExitStatus::Success)
}
