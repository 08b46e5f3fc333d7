//! `remotetool wait`: until no exec, poll or xfer (or the tools named) is
//! at work on any host; dead ones are reclaimed. The auth refresh waits
//! the same way.

use std::time::{Duration, Instant};

use super::args::WaitArgs;
use crate::cli::Session;
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::runs::{self, Actor};
use crate::workers;

/// The tools the refresh switches off while the masters change, and the
/// ones `wait` waits for unless told.
pub const NETWORK_TOOLS: &[&str] = &["exec", "poll", "xfer"];

pub fn run(s: &mut Session, a: WaitArgs) -> anyhow::Result<ExitStatus> {
    let Session {
        db, printer, actor, ..
    } = s;
    let tools = tools_or_default(&a.tools)?;
    let reclaimed = wait_for(db, &tools, Duration::from_secs(a.timeout), printer, actor)?;
    printer.info(format!("no {} at work", tools.join(", ")));
    if printer.is_json() {
        printer.json(&serde_json::json!({"tools": tools, "reclaimed": reclaimed}))?;
    }
    Ok(ExitStatus::Success)
}

pub(super) fn tools_or_default(tools: &[String]) -> anyhow::Result<Vec<String>> {
    if tools.is_empty() {
        return Ok(NETWORK_TOOLS.iter().map(|t| t.to_string()).collect());
    }
    runs::check_tools(tools)?;
    Ok(tools.to_vec())
}

/// Wait until no process of `tools` is at work; dead ones are reclaimed
/// with a message. Err "try later" after `timeout`.
pub(super) fn wait_for(
    db: &mut Db,
    tools: &[String],
    timeout: Duration,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<Vec<workers::Reclaimed>> {
    let deadline = Instant::now() + timeout;
    let mut said = String::new();
    let mut all_reclaimed = Vec::new();
    loop {
        let (alive, reclaimed) = workers::live(db, tools, actor)?;
        for r in &reclaimed {
            printer.warn(format!(
                "reclaimed {} on {}:{} ({}); {} run leases freed",
                r.tool, r.host, r.pid, r.why, r.leases
            ));
        }
        all_reclaimed.extend(reclaimed);
        if alive.is_empty() {
            return Ok(all_reclaimed);
        }
        let names: Vec<String> = alive
            .iter()
            .map(|p| format!("{} on {}:{}", p.tool, p.host, p.pid))
            .collect();
        let now = names.join(", ");
        if now != said {
            printer.info(format!("waiting for {now}"));
            said = now;
        }
        if Instant::now() >= deadline {
            return Err(exit::try_later(format!(
                "still at work after {} s: {said}",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
