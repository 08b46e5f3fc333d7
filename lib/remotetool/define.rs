//! `remotetool define` (`-definebyquery`): a new run from the ready work
//! items of a label and stage; with `--all`, a run per label and stage with
//! free ready items.

use super::args::DefineArgs;
use crate::cli::Session;
use crate::exit::{self, ExitStatus};
use crate::runs::{self, DefineRequest};

pub fn run(s: &mut Session, a: DefineArgs) -> anyhow::Result<ExitStatus> {
    let cfg = &s.config;
    let path_base = a
        .path_base
        .clone()
        .or_else(|| cfg.path_base.clone())
        .unwrap_or_else(|| {
            crate::config::default_db_path()
                .with_file_name("runs")
                .to_string_lossy()
                .into_owned()
        });
    if a.all {
        return define_all(s, a, path_base);
    }
    let req = DefineRequest {
        label: a.label.unwrap_or_default(),
        stage: a.stage.unwrap_or_default(),
        limit: a.limit,
        path_base,
        target: a.target,
        job_policy: a.job_policy,
    };
    let d = runs::define(&mut s.db, &req, &s.actor)?;
    let printer = &s.printer;
    printer.info(format!(
        "defined run {} with {} components of {}/{}",
        d.remote_id, d.components, d.stage, d.label
    ));
    if printer.is_json() {
        printer.json(&d)?;
    } else {
        printer.data(d.remote_id.to_string())?;
    }
    Ok(ExitStatus::Success)
}

/// `define --all`: a run per label and stage with free ready items, each
/// at most its recipe's `max_components`, until none is free.
fn define_all(s: &mut Session, a: DefineArgs, path_base: String) -> anyhow::Result<ExitStatus> {
    let (db, cfg, printer, actor) = s.parts();
    let recipes = cfg.recipes_dir(a.recipes.as_deref());
    let labels = match &a.label {
        Some(l) => vec![l.clone()],
        None => db.read(|s| s.distinct_labels())?,
    };
    let mut made = Vec::new();
    for label in labels {
        for stage in db.read(|s| s.distinct_stages(&label))? {
            if db.read(|s| s.count_free_items(&label, &stage))? == 0 {
                continue;
            }
            let cap = match crate::recipe::Recipe::load_for_stage(&recipes, &stage) {
                Ok(r) => r.max_components,
                Err(e) => {
                    printer.warn(format!(
                        "{label}/{stage}: {}; its run is not capped",
                        exit::one_line(&e)
                    ));
                    None
                }
            };
            // Until none is free; asked first, so no run is begun and rolled
            // back for nothing (PostgreSQL would skip its id).
            while db.read(|s| s.count_free_items(&label, &stage))? > 0 {
                let req = DefineRequest {
                    label: label.clone(),
                    stage: stage.clone(),
                    limit: cap,
                    path_base: path_base.clone(),
                    target: a.target.clone(),
                    job_policy: a.job_policy,
                };
                match runs::define(db, &req, actor) {
                    Ok(d) => {
                        printer.info(format!(
                            "defined run {} with {} components of {}/{}",
                            d.remote_id, d.components, d.stage, d.label
                        ));
                        made.push(d);
                    }
                    Err(e) if exit::status_of(&e) == ExitStatus::NothingToDo => break,
                    Err(e) => return Err(e),
                }
                if cap.is_none() {
                    break;
                }
            }
        }
    }
    if made.is_empty() {
        return Err(exit::nothing_to_do(format!(
            "no free ready work items{}",
            a.label
                .map(|l| format!(" of label '{l}'"))
                .unwrap_or_default()
        )));
    }
    if printer.is_json() {
        printer.json(&made)?;
    } else {
        for d in &made {
            printer.data(d.remote_id.to_string())?;
        }
    }
    Ok(ExitStatus::Success)
}
