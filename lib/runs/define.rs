//! Defining a run: the free ready work items of a label and stage become
//! its components, in one transaction with its history row.

use std::time::Duration;

use serde::Serialize;

use super::actor::Actor;
use super::pauses::ensure_not_paused;
use crate::db::models::NewRun;
use crate::db::{self, Db, Store};
use crate::exit;
use crate::state::{JobPolicy, RunState};

#[derive(Debug, Clone)]
pub struct DefineRequest {
    pub label: String,
    pub stage: String,
    pub limit: Option<i64>,
    pub path_base: String,
    pub target: Option<String>,
    pub job_policy: JobPolicy,
}

#[derive(Debug, Clone, Serialize)]
pub struct Defined {
    pub remote_id: i64,
    pub components: usize,
    pub label: String,
    pub stage: String,
    pub path_base: String,
}

/// Register the ready work items of a label and stage as one new run.
/// Two defines racing on the same items never share one: the database's
/// unique index on active components refuses the loser, which then retries
/// and finds what is left.
pub fn define(db: &mut Db, req: &DefineRequest, actor: &Actor) -> anyhow::Result<Defined> {
    if req.limit.is_some_and(|n| n < 1) {
        return Err(exit::usage("--limit must be at least 1"));
    }
    let mut attempt = 0;
    loop {
        let result = db.tx(|s| define_in(s, req, actor));
        match result {
            Err(e) if db::is_unique_violation(&e) && attempt < 8 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20 * attempt));
            }
            Err(e) if db::is_unique_violation(&e) => {
                return Err(exit::try_later(format!(
                    "other processes kept taking the same work items ({e}); try again"
                )))
            }
            r => return r,
        }
    }
}

fn define_in(s: &mut dyn Store, req: &DefineRequest, actor: &Actor) -> anyhow::Result<Defined> {
    ensure_not_paused(s, "define")?;
    let (label, stage) = (req.label.as_str(), req.stage.as_str());
    if s.count_items(Some(label), None, None)? == 0 {
        let labels = s.distinct_labels()?;
        let known = if labels.is_empty() {
            "the database has no work items yet".to_string()
        } else {
            format!("known labels: {}", abbreviate(&labels))
        };
        return Err(exit::usage(format!(
            "no work items with label '{label}' ({known}); import them with `remotetool import`"
        )));
    }
    if s.count_items(Some(label), Some(stage), None)? == 0 {
        let stages = s.distinct_stages(label)?;
        return Err(exit::usage(format!(
            "label '{label}' has no work items of stage '{stage}' (its stages: {})",
            stages.join(", ")
        )));
    }
    let now = db::now();
    let remote_id = s.insert_run(&NewRun {
        state: RunState::New,
        stage,
        label,
        path_base: &req.path_base,
        target: req.target.as_deref(),
        job_policy: req.job_policy,
        attempt: 0,
        fault: 0,
        created_at: now,
        updated_at: now,
        state_since: now,
    })?;
    let n = s.claim_ready_items(remote_id, label, stage, req.limit, now)?;
    if n == 0 {
        // Returning an error rolls the new run back.
        return Err(exit::nothing_to_do(format!(
            "no ready work items of label '{label}' stage '{stage}': all are in runs or finished"
        )));
    }
    s.insert_history(&actor.history(
        Some(remote_id),
        None,
        Some(RunState::New),
        format!("defined with {n} components of {stage}/{label}"),
    ))?;
    Ok(Defined {
        remote_id,
        components: n,
        label: label.to_string(),
        stage: stage.to_string(),
        path_base: req.path_base.clone(),
    })
}

/// Names joined, the first ten and a count when there are more.
pub fn abbreviate(names: &[String]) -> String {
    if names.len() <= 10 {
        names.join(", ")
    } else {
        format!("{}, ... ({} in all)", names[..10].join(", "), names.len())
    }
}
