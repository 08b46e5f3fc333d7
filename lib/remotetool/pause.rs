//! `remotetool pause`: tools (or their work on one target's runs) exit
//! with "try later" and touch nothing until resumed.

use super::args::PauseArgs;
use crate::cli::Session;
use crate::exit::ExitStatus;
use crate::runs;

pub fn run(s: &mut Session, a: PauseArgs) -> anyhow::Result<ExitStatus> {
    if let Some(t) = &a.target {
        s.config.target(t)?;
    }
    let target = a.target.as_deref();
    runs::set_paused_for(
        &mut s.db,
        &a.tools,
        target,
        true,
        a.reason.as_deref(),
        &s.actor,
    )?;
    s.printer.info(format!(
        "paused: {}{}",
        a.tools.join(", "),
        for_target(target)
    ));
    Ok(ExitStatus::Success)
}

/// " for target 'T'", or nothing.
pub(super) fn for_target(target: Option<&str>) -> String {
    target
        .map(|t| format!(" for target '{t}'"))
        .unwrap_or_default()
}
