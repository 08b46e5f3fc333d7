//! `remotetool clean --staging`: what killed transfers left (staging
//! names, see `transfer::sweep`) swept under each target's `remote_root`
//! (by its site: on a front end through the master) and under the local
//! `path_base` folders of its runs.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::db::models::RunFilter;
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;

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
pub(super) fn clean_staging(
    db: &mut Db,
    cfg: &Config,
    target: Option<&str>,
    older_than: Option<u64>,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
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
    if json {
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
