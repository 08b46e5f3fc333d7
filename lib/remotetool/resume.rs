//! `remotetool resume`: paused tools (or their work on one target's runs)
//! work again.

use super::args::ResumeArgs;
use super::pause::for_target;
use crate::cli::Session;
use crate::exit::ExitStatus;
use crate::runs;

pub fn run(s: &mut Session, a: ResumeArgs) -> anyhow::Result<ExitStatus> {
    let target = a.target.as_deref();
    runs::set_paused_for(&mut s.db, &a.tools, target, false, None, &s.actor)?;
    s.printer.info(format!(
        "resumed: {}{}",
        a.tools.join(", "),
        for_target(target)
    ));
    Ok(ExitStatus::Success)
}
