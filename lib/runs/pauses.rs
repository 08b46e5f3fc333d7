//! Pauses: a tool (or its work on one target's runs) paused exits "try
//! later" and touches nothing; the `control` rows that say so, set and
//! checked.

use super::actor::Actor;
use crate::db::models::Control;
use crate::db::{self, Db, Store};
use crate::exit;

/// The tools whose work can be paused.
pub const PAUSABLE: &[&str] = &["define", "prepare", "exec", "poll", "xfer"];

/// The tools that can be paused for one target only (those that claim
/// runs with `--next`).
pub const PAUSABLE_PER_TARGET: &[&str] = &["prepare", "exec", "poll"];

/// Refuse to work while a tool is paused (exit "try later").
pub fn ensure_not_paused(s: &mut dyn Store, tool: &str) -> anyhow::Result<()> {
    check_paused(&s.controls()?, tool)
}

/// [`ensure_not_paused`] over control rows already read.
pub fn check_paused(controls: &[Control], tool: &str) -> anyhow::Result<()> {
    if let Some(c) = controls.iter().find(|c| c.tool == tool && c.paused) {
        let why = c
            .reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        return Err(exit::try_later(format!(
            "{tool} is paused (since {} by {}{why}); `remotetool resume {tool}` switches it on",
            c.changed_at.format("%Y-%m-%d %H:%M:%S"),
            c.changed_by
        )));
    }
    Ok(())
}

/// The `control` row of a tool paused for one target: `TOOL@TARGET`.
pub fn pause_key(tool: &str, target: &str) -> String {
    format!("{tool}@{target}")
}

/// (tool, target) of a per-target control row.
pub fn split_pause_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('@')
}

/// The targets `tool` is paused for.
pub fn paused_targets(controls: &[Control], tool: &str) -> Vec<String> {
    controls
        .iter()
        .filter(|c| c.paused)
        .filter_map(|c| split_pause_key(&c.tool))
        .filter(|(t, _)| *t == tool)
        .map(|(_, target)| target.to_string())
        .collect()
}

/// Refuse to work on a run of `target` while `tool` is paused for it
/// (exit "try later").
pub fn ensure_target_not_paused(s: &mut dyn Store, tool: &str, target: &str) -> anyhow::Result<()> {
    let key = pause_key(tool, target);
    if let Some(c) = s
        .controls()?
        .into_iter()
        .find(|c| c.tool == key && c.paused)
    {
        let why = c.reason.map(|r| format!(": {r}")).unwrap_or_default();
        return Err(exit::try_later(format!(
            "{tool} is paused for target '{target}' (since {} by {}{why}); \
             `remotetool resume {tool} --target {target}` switches it on",
            c.changed_at.format("%Y-%m-%d %H:%M:%S"),
            c.changed_by
        )));
    }
    Ok(())
}

/// Every name is a tool that can be paused (and waited for).
pub fn check_tools(tools: &[String]) -> anyhow::Result<()> {
    match tools.iter().find(|t| !PAUSABLE.contains(&t.as_str())) {
        Some(t) => Err(exit::usage(format!(
            "unknown tool '{t}' (tools that can be paused: {})",
            PAUSABLE.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Pause or resume tools; each change is recorded in the history.
pub fn set_paused(
    db: &mut Db,
    tools: &[String],
    paused: bool,
    reason: Option<&str>,
    actor: &Actor,
) -> anyhow::Result<()> {
    set_paused_for(db, tools, None, paused, reason, actor)
}

/// Pause or resume tools, for one target only when `target` is given
/// (prepare, exec and poll: their `--next` leaves that target's runs
/// alone, and a run of it named by id is refused).
pub fn set_paused_for(
    db: &mut Db,
    tools: &[String],
    target: Option<&str>,
    paused: bool,
    reason: Option<&str>,
    actor: &Actor,
) -> anyhow::Result<()> {
    check_tools(tools)?;
    if target.is_some() {
        if let Some(t) = tools
            .iter()
            .find(|t| !PAUSABLE_PER_TARGET.contains(&t.as_str()))
        {
            return Err(exit::usage(format!(
                "'{t}' cannot be paused for one target (those that can: {})",
                PAUSABLE_PER_TARGET.join(", ")
            )));
        }
    }
    db.tx(|s| {
        for t in tools {
            let key = match target {
                Some(target) => pause_key(t, target),
                None => t.clone(),
            };
            s.set_control(&Control {
                tool: key,
                paused,
                reason: reason.map(str::to_string),
                changed_at: db::now(),
                changed_by: format!("{}:{}", actor.host, actor.pid),
            })?;
            let what = if paused { "paused" } else { "resumed" };
            let whom = target
                .map(|x| format!(" for target '{x}'"))
                .unwrap_or_default();
            let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
            s.insert_history(&actor.history(None, None, None, format!("{what} {t}{whom}{why}")))?;
        }
        Ok(())
    })
}
