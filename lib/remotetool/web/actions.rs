//! What an operator may do from the page, with `--allow-actions` only:
//! retry a run's failed work, unfault, abort, set a state, revert auth,
//! pause and resume tools. Each is a POST form with a confirmation and a
//! required reason; each calls the same library function as the command
//! (same refusals, same messages) as the tool `web`, and the history
//! keeps the reason and this host. The key-card refresh stays on the
//! terminal.

use serde::Deserialize;

use crate::cli::Session;
use crate::remotetool::args::{AbortArgs, RetryArgs, SetArgs};
use crate::remotetool::{abort, retry, set};
use crate::runs;
use crate::state::RunState;

/// A form's fields (each form sends those it has).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ActionForm {
    pub reason: String,
    pub confirm: String,
    /// `set`: the state.
    pub state: String,
    /// `pause`, `resume`: the tools, comma- or space-separated.
    pub tools: String,
    /// `pause`, `resume`: one target's runs only.
    pub target: String,
}

impl ActionForm {
    /// The reason, or a usage error: every action needs one, and the box
    /// that says "sure".
    fn reason(&self) -> anyhow::Result<String> {
        if self.confirm != "yes" {
            return Err(crate::exit::usage("tick \"sure\" to confirm"));
        }
        let r = self.reason.trim();
        if r.is_empty() {
            return Err(crate::exit::usage(
                "say why: the reason is kept in the history",
            ));
        }
        Ok(r.to_string())
    }
}

/// What an action did, for the page that follows it.
pub struct Done {
    pub message: String,
    /// Where to go next.
    pub to: String,
}

/// Note the reason in the run's history (for actions whose command keeps
/// none of its own).
fn note(s: &mut Session, remote_id: Option<i64>, what: &str) -> anyhow::Result<()> {
    let row = s.actor.history(remote_id, None, None, what);
    s.db.tx(|st| Ok(st.insert_history(&row)?))
}

pub fn act(
    s: &mut Session,
    action: &str,
    remote_id: Option<i64>,
    f: &ActionForm,
) -> anyhow::Result<Done> {
    let reason = f.reason()?;
    let back = |id: i64| format!("/runs/{id}");
    let need_id = || remote_id.ok_or_else(|| crate::exit::usage(format!("{action} needs a run")));
    match action {
        "retry" => {
            let id = need_id()?;
            let done = retry::retry(
                s,
                RetryArgs {
                    remote_id: Some(id),
                    label: None,
                    state: None,
                    attempts: runs::DEFAULT_ATTEMPTS,
                    ignore_limit: false,
                },
            )?;
            note(s, Some(id), &format!("retry from the web: {reason}"))?;
            let r = done.first();
            Ok(Done {
                message: format!(
                    "run {id}: {} ready again, {} withdrawn",
                    r.map_or(0, |r| r.ready_again + r.already_ready),
                    r.map_or(0, |r| r.withdrawn)
                ),
                to: back(id),
            })
        }
        "unfault" => {
            let id = need_id()?;
            let (db, _, _, actor) = s.parts();
            let done = runs::unfault(db, Some(id), None, Some(&reason), actor)?;
            Ok(Done {
                message: format!("run {id}: {} fault and hold cleared", done.len()),
                to: back(id),
            })
        }
        "abort" => {
            let id = need_id()?;
            let done = abort::abort(
                s,
                AbortArgs {
                    remote_id: Some(id),
                    label: None,
                    reason,
                    no_cancel_job: false,
                },
            )?;
            Ok(Done {
                message: format!(
                    "run {id}: aborted{}",
                    done.first()
                        .map(|a| format!(", now {}", a.to))
                        .unwrap_or_default()
                ),
                to: back(id),
            })
        }
        "set" => {
            let id = need_id()?;
            let state: RunState = f.state.parse().map_err(crate::exit::usage)?;
            let (from, to, _) = set::set(
                s,
                &SetArgs {
                    remote_id: id,
                    state,
                    reason,
                    recipes: None,
                    no_chain: false,
                },
            )?;
            Ok(Done {
                message: format!("run {id}: {from} -> {to}"),
                to: back(id),
            })
        }
        "revertauth" => {
            let id = need_id()?;
            let (db, _, _, actor) = s.parts();
            let done = runs::revert_auth(db, None, Some(id), actor)?;
            note(s, Some(id), &format!("revertauth from the web: {reason}"))?;
            Ok(Done {
                message: done
                    .first()
                    .map(|r| format!("run {id}: {} -> {}", r.from, r.to))
                    .unwrap_or_default(),
                to: back(id),
            })
        }
        "pause" | "resume" => {
            let tools: Vec<String> = f
                .tools
                .split([',', ' '])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            if tools.is_empty() {
                return Err(crate::exit::usage(
                    "name the tools: define, prepare, exec, poll, xfer",
                ));
            }
            let target = Some(f.target.trim()).filter(|t| !t.is_empty());
            if let Some(t) = target {
                s.config.target(t)?;
            }
            let pause = action == "pause";
            let (db, _, _, actor) = s.parts();
            runs::set_paused_for(db, &tools, target, pause, Some(&reason), actor)?;
            if !pause {
                note(
                    s,
                    None,
                    &format!("resumed {} from the web: {reason}", tools.join(", ")),
                )?;
            }
            Ok(Done {
                message: format!(
                    "{} {}{}",
                    if pause { "paused" } else { "resumed" },
                    tools.join(", "),
                    target
                        .map(|t| format!(" for target '{t}'"))
                        .unwrap_or_default()
                ),
                to: "/hosts".into(),
            })
        }
        other => Err(crate::exit::usage(format!("no action '{other}'"))),
    }
}
