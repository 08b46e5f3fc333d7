//! `remotetool set`: a run's state changed by hand, with a person's
//! reason. A run set `full` marks its work items done and feeds its
//! stage's next stage as poll's release does: its stage's recipe is read
//! for its `[next]`, and the groups that leaves all done get their next
//! work items in the same transaction.

use std::collections::BTreeMap;
use std::path::Path;

use super::args::SetArgs;
use crate::chain::{self, Chain, Created};
use crate::cli::Session;
use crate::config::Config;
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::recipe::Recipe;
use crate::runs;
use crate::state::RunState;

pub fn run(s: &mut Session, a: SetArgs) -> anyhow::Result<ExitStatus> {
    let (from, to, made) = set(s, &a)?;
    if s.printer.is_json() {
        let chained: Vec<String> = made
            .iter()
            .map(|c| format!("{}/{}", c.stage, c.stage_id))
            .collect();
        s.printer.json(&serde_json::json!({
            "remote_id": a.remote_id, "from": from, "to": to, "chained": chained,
        }))?;
    }
    Ok(ExitStatus::Success)
}

/// The work of `set`, as the command and the web view both do it: the
/// states before and after, and the next stage's work items it made.
pub fn set(s: &mut Session, a: &SetArgs) -> anyhow::Result<(RunState, RunState, Vec<Created>)> {
    let (db, cfg, printer, actor) = s.parts();
    let feeds = if a.state == RunState::Full && !a.no_chain {
        next_stage_of(db, cfg, a.remote_id, a.recipes.as_deref())?
    } else {
        None
    };
    let next = feeds
        .as_ref()
        .and_then(|(recipe, vars)| Chain::of(recipe, vars));
    let (from, to, made) =
        runs::set_state(db, a.remote_id, a.state, &a.reason, actor, next.as_ref())?;
    printer.info(format!("run {}: {from} -> {to}", a.remote_id));
    if !made.is_empty() {
        printer.info(chain::history_line(&made));
    }
    Ok((from, to, made))
}

/// The recipe of a run's stage and its target's vars, when the recipe
/// declares a `[next]` (None: the run feeds nothing, has no work items
/// left to finish, or there is no such run, or it may not go to `full`,
/// which `set` then names). A recipe or target that cannot be read is an
/// error that names the way on: nothing would make the next stage's items
/// later.
fn next_stage_of(
    db: &mut Db,
    cfg: &Config,
    remote_id: i64,
    recipes: Option<&Path>,
) -> anyhow::Result<Option<(Recipe, BTreeMap<String, String>)>> {
    let Some(run) = db.read(|s| s.run(remote_id))? else {
        return Ok(None);
    };
    if crate::state::check(run.state, RunState::Full).is_err()
        || db.read(|s| s.run_component_count(remote_id))? == 0
    {
        return Ok(None);
    }
    let way_on =
        "give --recipes DIR, or --no-chain to set it full without making next-stage work items";
    let recipe = Recipe::load_for_stage(&cfg.recipes_dir(recipes), &run.stage).map_err(|e| {
        exit::usage(format!(
            "run {remote_id}: a run set full feeds its stage's next stage, and its recipe cannot be read: {}; {way_on}",
            exit::one_line(&e)
        ))
    })?;
    if recipe.next.is_none() {
        return Ok(None);
    }
    let target = cfg.run_target(run.target.as_deref(), remote_id).map_err(|e| {
        exit::usage(format!(
            "run {remote_id}: a run set full feeds its stage's next stage, with its target's vars, and its target cannot be read: {}; fix the configuration, or --no-chain to set it full without making next-stage work items",
            exit::one_line(&e)
        ))
    })?;
    Ok(Some((recipe, target.config.vars.clone())))
}
