//! `remotetool refresh-auth`: the operators' 12-hour refresh as one
//! command, in seven steps: check, pause, wait, stop, start (the person
//! types the password), resume, revertauth. Its progress is kept in the
//! database (the `refresh-auth` control row): run again after an
//! interruption, it goes on where it stopped (masters started since the
//! refresh began are kept; only the tools it paused are resumed).

use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Serialize;

use super::args::RefreshArgs;
use super::auth::status_views;
use super::wait::{tools_or_default, wait_for};
use crate::cli::Session;
use crate::db::models::Control;
use crate::db::{self, Db};
use crate::exit::{self, ExitStatus};
use crate::masters::{self, FrontEnd};
use crate::printer::{human_duration, Printer};
use crate::runs::{self, Actor};
use crate::table;

/// The pause reason that marks a refresh's own pauses.
pub const REFRESH_REASON: &str = "auth refresh";
/// The control row of an unfinished refresh.
pub const REFRESH_ROW: &str = "refresh-auth";

/// The steps, in order.
const STEPS: usize = 7;

#[derive(Debug, Serialize)]
struct Step {
    step: &'static str,
    done: String,
}

/// Say a step is done and keep it for the JSON.
fn say(printer: &Printer, steps: &mut Vec<Step>, step: &'static str, done: String) {
    printer.info(format!("step {}/{STEPS} {step}: {done}", steps.len() + 1));
    steps.push(Step { step, done });
}

pub fn run(s: &mut Session, a: RefreshArgs) -> anyhow::Result<ExitStatus> {
    let (db, cfg, printer, actor) = s.parts();
    let fes = masters::front_ends(cfg, a.which.target.as_deref(), &a.which.hosts)?;
    let since = begin(db, printer, actor)?;
    let mut steps: Vec<Step> = Vec::new();
    say(printer, &mut steps, "check", check(&fes));
    let tools = tools_or_default(&[])?;
    say(printer, &mut steps, "pause", pause(db, &tools, actor)?);
    let waited = wait(db, &tools, a.wait_timeout, printer, actor)?;
    say(printer, &mut steps, "wait", waited);
    say(printer, &mut steps, "stop", stop_old(&fes, since)?);
    say(printer, &mut steps, "start", start(&fes, printer)?);
    say(printer, &mut steps, "resume", resume(db, actor)?);
    let reverted = match runs::revert_auth(db, a.label.as_deref(), None, actor) {
        Ok(r) => r,
        Err(e) if exit::status_of(&e) == ExitStatus::NothingToDo => Vec::new(),
        Err(e) => return Err(e),
    };
    let ids: Vec<String> = reverted.iter().map(|r| r.remote_id.to_string()).collect();
    say(
        printer,
        &mut steps,
        "revertauth",
        format!("reverted: {}", none_or(&ids)),
    );
    finish(db, actor)?;
    if printer.is_json() {
        printer.json(&serde_json::json!({"steps": steps, "reverted": reverted}))?;
    } else {
        printer.data(ids.join("\n"))?;
    }
    Ok(ExitStatus::Success)
}

/// "none", or the names joined.
fn none_or(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Begin, or go on with an unfinished refresh: when it began.
fn begin(db: &mut Db, printer: &Printer, actor: &Actor) -> anyhow::Result<NaiveDateTime> {
    let (since, resumed) = db.tx(|s| {
        let existing = s.controls()?.into_iter().find(|c| c.tool == REFRESH_ROW);
        match existing {
            Some(c) if c.paused => Ok((c.changed_at, true)),
            _ => {
                let now = db::now();
                s.set_control(&Control {
                    tool: REFRESH_ROW.into(),
                    paused: true,
                    reason: Some("in progress".into()),
                    changed_at: now,
                    changed_by: format!("{}:{}", actor.host, actor.pid),
                })?;
                s.insert_history(&actor.history(None, None, None, "auth refresh begun"))?;
                Ok((now, false))
            }
        }
    })?;
    if resumed {
        printer.info(format!(
            "going on with the refresh begun at {} UTC",
            table::time(&since)
        ));
    }
    Ok(since)
}

/// Step 1: the masters as they are, and why each one down is.
fn check(fes: &[FrontEnd]) -> String {
    let summary: Vec<String> = status_views(fes, false)
        .iter()
        .map(|v| {
            let m = &v.master;
            if m.alive {
                format!(
                    "{} alive, {} left",
                    m.host,
                    m.seconds_left
                        .map(human_duration)
                        .unwrap_or_else(|| "?".into())
                )
            } else {
                let why = v
                    .hops
                    .iter()
                    .flatten()
                    .rfind(|h| !h.ok)
                    .map(|h| h.detail.clone())
                    .unwrap_or_default();
                format!("{} DOWN ({why})", m.host)
            }
        })
        .collect();
    summary.join("; ")
}

/// Step 2: pause the network tools not paused already (marked as the
/// refresh's own).
fn pause(db: &mut Db, tools: &[String], actor: &Actor) -> anyhow::Result<String> {
    let controls = db.read(|s| s.controls())?;
    let to_pause: Vec<String> = tools
        .iter()
        .filter(|t| !controls.iter().any(|c| &c.tool == *t && c.paused))
        .cloned()
        .collect();
    if to_pause.is_empty() {
        return Ok("exec, poll and xfer were paused already".into());
    }
    runs::set_paused(db, &to_pause, true, Some(REFRESH_REASON), actor)?;
    Ok(format!("paused {}", to_pause.join(", ")))
}

/// Step 3: wait until none of them is at work (dead ones reclaimed).
fn wait(
    db: &mut Db,
    tools: &[String],
    timeout: u64,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<String> {
    let reclaimed =
        wait_for(db, tools, Duration::from_secs(timeout), printer, actor).map_err(|e| {
            exit::try_later(format!(
                "{}; run `remotetool refresh-auth` again to go on",
                exit::one_line(&e)
            ))
        })?;
    Ok(format!(
        "no exec, poll or xfer at work{}",
        if reclaimed.is_empty() {
            String::new()
        } else {
            format!(" ({} dead ones reclaimed)", reclaimed.len())
        }
    ))
}

/// Step 4: stop the masters from before this refresh (those started
/// since are kept).
fn stop_old(fes: &[FrontEnd], since: NaiveDateTime) -> anyhow::Result<String> {
    let mut stopped = Vec::new();
    let mut kept = Vec::new();
    for fe in fes {
        let m = masters::probe(&fe.target, &fe.host, db::now());
        if m.alive && m.started.is_some_and(|t| t >= since) {
            kept.push(fe.host.alias.clone());
            continue;
        }
        if masters::stop(&fe.host)? {
            stopped.push(fe.host.alias.clone());
        }
    }
    Ok(format!(
        "stopped: {}{}",
        none_or(&stopped),
        if kept.is_empty() {
            String::new()
        } else {
            format!("; kept (started during this refresh): {}", kept.join(", "))
        }
    ))
}

/// Step 5: start each master not running; the person types the password.
fn start(fes: &[FrontEnd], printer: &Printer) -> anyhow::Result<String> {
    let mut started = Vec::new();
    for fe in fes {
        if fe.host.master_pid().is_ok() {
            continue;
        }
        printer.info(format!(
            "{}: starting the master; type the key-card password when asked",
            fe.host.alias
        ));
        masters::start(fe).map_err(|e| {
            exit::auth(format!(
                "{}; run `remotetool refresh-auth` again to go on",
                exit::one_line(&e)
            ))
        })?;
        started.push(fe.host.alias.clone());
    }
    Ok(format!("started: {}", none_or(&started)))
}

/// Step 6: resume what the refresh paused; say what someone else paused.
fn resume(db: &mut Db, actor: &Actor) -> anyhow::Result<String> {
    let (ours, others): (Vec<_>, Vec<_>) = db
        .read(|s| s.controls())?
        .into_iter()
        .filter(|c| c.paused && runs::PAUSABLE.contains(&c.tool.as_str()))
        .partition(|c| c.reason.as_deref() == Some(REFRESH_REASON));
    let ours: Vec<String> = ours.into_iter().map(|c| c.tool).collect();
    if !ours.is_empty() {
        runs::set_paused(db, &ours, false, None, actor)?;
    }
    let others: Vec<String> = others
        .into_iter()
        .map(|c| format!("{} ({})", c.tool, c.reason.unwrap_or_default()))
        .collect();
    Ok(format!(
        "resumed: {}{}",
        none_or(&ours),
        if others.is_empty() {
            String::new()
        } else {
            format!("; left paused by someone else: {}", others.join(", "))
        }
    ))
}

/// The refresh is done: its control row says so, and the history.
fn finish(db: &mut Db, actor: &Actor) -> anyhow::Result<()> {
    db.tx(|s| {
        s.set_control(&Control {
            tool: REFRESH_ROW.into(),
            paused: false,
            reason: Some("done".into()),
            changed_at: db::now(),
            changed_by: format!("{}:{}", actor.host, actor.pid),
        })?;
        s.insert_history(&actor.history(None, None, None, "auth refresh done"))?;
        Ok(())
    })
}
