//! Where a run's files are on this side.

use std::path::{Path, PathBuf};

use crate::db::models::Run;
use crate::exit;
use crate::target::Target;

/// The local folder of a run: path_base (through the target's path rules
/// when it is a storage URL) / run-N.
pub fn local_run_dir(run: &Run, target: &Target) -> anyhow::Result<PathBuf> {
    let base = if run.path_base.contains("://") {
        match target.translate(&run.path_base) {
            Some((local, _)) => local.into_owned(),
            None => {
                return Err(exit::usage(format!(
                    "path_base {:?} of run {} matches no path rule of target '{}'",
                    run.path_base, run.remote_id, target.name
                )))
            }
        }
    } else {
        run.path_base.clone()
    };
    Ok(Path::new(&base).join(format!("run-{}", run.remote_id)))
}
