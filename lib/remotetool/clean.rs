//! `remotetool clean`: the remote folders of finished runs removed (`full`
//! -> `cleaned`; a folder a later run or work item still reads is kept,
//! with what needs it); with `--staging`, what killed transfers left
//! (staging names, see `transfer::sweep`) swept under each target's
//! `remote_root` (by its site: on a front end through the master) and
//! under the local `path_base` folders of its runs.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::args::CleanArgs;
use crate::cli::Session;
use crate::config::Config;
use crate::db::models::RunFilter;
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::runs;
use crate::state::RunState;

#[derive(Serialize)]
struct Cleaned {
    remote_id: i64,
    folder: String,
    /// Kept: a later run still needs what is in it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    needed_by: Vec<String>,
}

/// The remote-resident inputs of the prepared runs not finished: (run,
/// state, its `remote-inputs.list`). Read once for a whole `clean`.
fn open_remote_inputs(db: &mut Db, cfg: &Config) -> anyhow::Result<Vec<(i64, RunState, String)>> {
    let open = db.read(|s| {
        s.runs(&RunFilter {
            states: [
                RunState::New,
                RunState::Pending,
                RunState::Run,
                RunState::Auth,
                RunState::Error,
            ]
            .to_vec(),
            ..RunFilter::default()
        })
    })?;
    Ok(open
        .iter()
        .filter_map(|r| {
            let target = cfg.run_target(r.target.as_deref(), r.remote_id).ok()?;
            let dir = runs::local_run_dir(r, &target).ok()?;
            let list = std::fs::read_to_string(dir.join("remote-inputs.list")).unwrap_or_default();
            Some((r.remote_id, r.state, list))
        })
        .collect())
}

/// What still needs files under a run's remote folder: prepared runs not
/// finished whose remote-resident inputs are there (`open`, from
/// [`open_remote_inputs`]), and unfinished work items whose params name a
/// path there (a later stage reading an earlier one's products where they
/// are).
fn still_needed(
    db: &mut Db,
    open: &[(i64, RunState, String)],
    folder: &str,
) -> anyhow::Result<Vec<String>> {
    let prefix = format!("{}/", folder.trim_end_matches('/'));
    let mut why = Vec::new();
    for (id, state, list) in open {
        if let Some(p) = list.lines().find(|l| l.starts_with(&prefix)) {
            why.push(format!("run {id} ({state}) reads {p}"));
        }
    }
    for w in db.read(|s| s.ready_items_mentioning(&prefix, 100))? {
        if w.params.contains(&prefix) {
            why.push(format!(
                "work item {}/{} of {} names a path there",
                w.stage, w.stage_id, w.label
            ));
        }
    }
    Ok(why)
}

/// Remove the remote folder of each full run chosen, then mark it cleaned.
pub fn run(s: &mut Session, a: CleanArgs) -> anyhow::Result<ExitStatus> {
    if a.staging {
        return clean_staging(s, a.target.as_deref(), a.older_than);
    }
    let (db, cfg, printer, actor) = s.parts();
    let filter = RunFilter {
        states: vec![RunState::Full],
        label: a.label.clone(),
        remote_id: a.remote_id,
        ..RunFilter::default()
    };
    let found = db.read(|s| s.runs(&filter))?;
    if found.is_empty() {
        return Err(exit::nothing_to_do(match (a.remote_id, &a.label) {
            (Some(id), _) => format!("run {id} is not full"),
            (None, Some(l)) => format!("no full runs of label '{l}'"),
            _ => "no full runs".to_string(),
        }));
    }
    let mut done = Vec::new();
    let mut kept = Vec::new();
    let open = open_remote_inputs(db, cfg)?;
    for run in found {
        let target = cfg.run_target(run.target.as_deref(), run.remote_id)?;
        let folder = target.remote_run_dir(run.remote_id);
        let needed_by = still_needed(db, &open, &folder)?;
        if !needed_by.is_empty() {
            printer.warn(format!(
                "run {}: kept {folder}: still needed ({}{})",
                run.remote_id,
                needed_by
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; "),
                if needed_by.len() > 3 { "; ..." } else { "" }
            ));
            kept.push(Cleaned {
                remote_id: run.remote_id,
                folder,
                needed_by,
            });
            continue;
        }
        crate::scheduler::site_for(&target)?.remove(&folder)?;
        runs::transition(
            db,
            run.remote_id,
            RunState::Cleaned,
            actor,
            &format!("removed {folder}"),
            Default::default(),
        )?;
        printer.info(format!("run {}: removed {folder}", run.remote_id));
        done.push(Cleaned {
            remote_id: run.remote_id,
            folder,
            needed_by: Vec::new(),
        });
    }
    if printer.is_json() {
        // The kept ones too, with what needs them.
        done.extend(kept);
        printer.json(&done)?;
        return Ok(ExitStatus::Success);
    }
    let ids: Vec<String> = done.iter().map(|c| c.remote_id.to_string()).collect();
    printer.data(ids.join("\n"))?;
    Ok(ExitStatus::Success)
}

#[derive(Serialize)]
struct Removed {
    target: String,
    /// "remote" (under remote_root) or "local" (under a run's path_base).
    side: &'static str,
    path: String,
}

/// Sweep the targets (all, or the one named) of staging names not modified
/// for `older_than` seconds (default: each target's `sweep_after_hours`,
/// else a day); print what was removed.
fn clean_staging(
    s: &mut Session,
    target: Option<&str>,
    older_than: Option<u64>,
) -> anyhow::Result<ExitStatus> {
    let Session {
        db,
        config: cfg,
        printer,
        ..
    } = s;
    let names: Vec<String> = match target {
        Some(t) => vec![t.to_string()],
        None => cfg.targets.keys().cloned().collect(),
    };
    if names.is_empty() {
        return Err(exit::usage("no targets in the configuration"));
    }
    let runs = db.read(|s| s.runs(&RunFilter::default()))?;
    let mut removed = Vec::new();
    let mut failed = None;
    for name in names {
        let target = cfg.target(&name)?;
        let age = older_than
            .map(Duration::from_secs)
            .or_else(|| target.sweep_after())
            .unwrap_or(crate::transfer::DEFAULT_SWEEP_AFTER);
        let root = &target.config.remote_root;
        let site = crate::scheduler::site_for(&target)?;
        match site.sweep_staging(root, age) {
            Ok(paths) => {
                printer.info(format!(
                    "target {name}: removed {} staging names older than {} s under {root} {}",
                    paths.len(),
                    age.as_secs(),
                    site.place()
                ));
                removed.extend(paths.into_iter().map(|path| Removed {
                    target: name.clone(),
                    side: "remote",
                    path,
                }));
            }
            Err(e) => {
                printer.warn(format!("target {name}: {}", exit::one_line(&e)));
                failed.get_or_insert(e);
            }
        }
        // The local folders its runs' files are pulled into.
        let mut bases = BTreeSet::new();
        for run in &runs {
            if run.target.as_deref().or(cfg.default_target.as_deref()) != Some(name.as_str()) {
                continue;
            }
            match crate::runs::paths::local_run_dir(run, &target) {
                Ok(dir) => {
                    bases.insert(dir.parent().map(Path::to_path_buf).unwrap_or(dir));
                }
                Err(e) => printer.warn(exit::one_line(&e)),
            }
        }
        for base in bases.iter().filter(|b| b.is_dir()) {
            let paths = crate::transfer::sweep::local_tree(base, age);
            printer.info(format!(
                "target {name}: removed {} staging names older than {} s under {} here",
                paths.len(),
                age.as_secs(),
                base.display()
            ));
            removed.extend(paths.into_iter().map(|path| Removed {
                target: name.clone(),
                side: "local",
                path,
            }));
        }
    }
    if printer.is_json() {
        printer.json(&removed)?;
    } else if !removed.is_empty() {
        let lines: Vec<&str> = removed.iter().map(|r| r.path.as_str()).collect();
        printer.data(lines.join("\n"))?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitStatus::Success),
    }
}
