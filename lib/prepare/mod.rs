//! `prepare`: turns a `new` run into everything the remote side needs, with
//! no network: file lists with local and remote paths, every component's
//! pre/command/post, the multi-prog config, the batch script and the
//! allocation. State `new -> pending`.
//!
//! The run's folder is written aside and renamed into place, so a folder
//! named `run-N` is always complete; a failure leaves the run `new` with a
//! fault and a message. Components are read and rendered a page at a time
//! (`build`), so memory stays bounded however large the run.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::db::models::Run;
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::recipe::Recipe;
use crate::runs::{self, Actor, Extra, OnFailure, Work};
use crate::state::{fault, RunState};

mod build;
mod render;

pub use build::{build, Built};
pub use render::{ComponentSpec, InputFile, Job};

const TOOL: &str = "prepare";
/// Components read, rendered and merged at a time.
pub const PAGE: i64 = 2000;

#[derive(Debug, Parser)]
#[command(
    name = "prepare",
    version = crate::cli::VERSION,
    about = "Prepare a new run: file lists, component scripts, multi-prog config, batch script, allocation",
    after_help = "Exit status: 0 prepared, 1 error, 2 bad input (the run stays new with a fault), \
                  3 nothing to prepare, 4 try later (paused, run held by another process), \
                  6 local (a write here failed: a full or read-only path_base, a quota, no permission, \
                  an I/O error; the run stays new with fault 60, prepared anew once fixed)."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub which: runs::Which,
    /// Folder of stage recipes [default: `recipes` of the configuration,
    /// else ~/.config/offload/recipes]
    #[arg(long, value_name = "DIR")]
    pub recipes: Option<PathBuf>,
    /// With --next: only runs of this target
    #[arg(long, value_name = "T", requires = "next")]
    pub target: Option<String>,
}

/// What prepare reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub remote_id: i64,
    pub dir: String,
    pub remote_dir: String,
    pub components: usize,
    pub files: usize,
    pub bytes: u64,
    pub outputs: usize,
    pub folders: usize,
    pub ranks: u32,
    pub configs: usize,
    pub nodes: u32,
    pub walltime: String,
    pub time_cost: f64,
    pub time_cost_source: String,
}

/// Prepare one run already claimed. Errors leave the database as it was.
pub fn prepare_run(
    db: &mut Db,
    cfg: &Config,
    run: &Run,
    recipes: &Path,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<Summary> {
    let state: RunState = run.state;
    if !matches!(state, RunState::New | RunState::Pending) {
        return Err(exit::usage(format!(
            "run {} is '{state}': only new runs (or pending ones, again) can be prepared",
            run.remote_id
        )));
    }
    let target = cfg.run_target(run.target.as_deref(), run.remote_id)?;
    let recipe = Recipe::load_for_stage(recipes, &run.stage)?;
    let total = db.read(|s| s.run_component_count(run.remote_id))?;
    let mut samples = db.read(|s| s.stage_runtimes(&run.stage, crate::recipe::RUNTIME_SAMPLES))?;
    let (mut time_cost, mut source) = recipe.time_cost_of(&mut samples);
    // A run prepared again after its job was cut short: what did not come
    // back takes at least as long as the longest that did.
    let own = db.read(|s| s.run_runtimes(run.remote_id))?;
    if let Some(longest) = own.iter().copied().reduce(f64::max) {
        if longest > time_cost {
            time_cost = longest;
            source = format!(
                "the longest of {} runtimes measured in this run's earlier attempts",
                own.len()
            );
        }
    }
    let job = Job {
        remote_id: run.remote_id,
        attempt: run.attempt,
        stage: &run.stage,
        label: &run.label,
        recipe: &recipe,
        target: &target,
        time_cost,
        time_cost_source: source.clone(),
    };
    let dir = runs::local_run_dir(run, &target)?;
    printer.debug(format!(
        "run {}: recipe {}, target '{}', time cost {time_cost} s ({source}), folder {}",
        run.remote_id,
        recipe.path.display(),
        target.name,
        dir.display()
    ));
    let bar = printer.progress(total.max(0) as u64, "prepare");
    let mut after = 0;
    let next = || -> anyhow::Result<Vec<ComponentSpec>> {
        let rows = db.read(|s| s.run_components_page(run.remote_id, after, PAGE))?;
        if let Some(last) = rows.last() {
            after = last.component_id;
        }
        rows.into_iter().map(ComponentSpec::from_row).collect()
    };
    let built = build(&job, next, &bar, &dir)?;
    bar.finish_and_clear();
    let summary = Summary {
        remote_id: run.remote_id,
        dir: dir.display().to_string(),
        remote_dir: built.remote_run.clone(),
        components: built.components,
        files: built.inputs,
        bytes: built.input_bytes,
        outputs: built.outputs,
        folders: built.folders,
        ranks: built.alloc.ranks,
        configs: built.configs,
        nodes: built.alloc.nodes,
        walltime: built.alloc.walltime(),
        time_cost,
        time_cost_source: source,
    };
    let message = format!(
        "prepared {} components, {} input files, {} ranks on {} nodes x {} in {}",
        summary.components,
        summary.files,
        summary.ranks,
        summary.nodes,
        summary.walltime,
        summary.dir
    );
    db.tx(|s| {
        let now = runs::get_run(s, run.remote_id)?;
        let extra = Extra { fault: Some(0), message: Some(None), ..Extra::default() };
        match now.state {
            RunState::New => runs::transition_in(s, &now, RunState::Pending, actor, &message, extra),
            RunState::Pending => {
                s.insert_history(&actor.history(Some(run.remote_id), None, None, format!("again: {message}")))?;
                Ok(())
            }
            other => Err(exit::try_later(format!(
                "run {} went to '{other}' while it was being prepared; its files in {} are ready but it was not marked pending",
                run.remote_id, summary.dir
            ))),
        }
    })?;
    Ok(summary)
}

/// A write of the run's files that failed for this machine's reason (a full
/// or read-only path_base...): the run stays `new`, with fault 60 saying
/// what failed where, held a while (the back-off) rather than for a person;
/// the next prepare writes its files anew. Exit 6.
fn local_write(db: &mut Db, run: &Run, actor: &Actor, e: anyhow::Error) -> anyhow::Error {
    let Some(errno) = crate::transfer::local::errno_in(&e) else {
        return e;
    };
    let msg = format!(
        "cannot write the run's files here ({}; errno {errno}): this machine's fault, nothing was lost; \
         fix it, then `prepare --remote-id {}` (or wait for the next round)",
        exit::one_line(&e),
        run.remote_id
    );
    let recorded = db
        .tx(|s| runs::record_fault_in(s, run.remote_id, fault::LOCAL, &msg, actor))
        .and_then(|()| runs::hold_back_off(db, run.remote_id, &msg, actor).map(|_| ()));
    match recorded {
        // (The run's number is put before it by the caller.)
        Ok(()) => exit::local(msg),
        Err(d) => exit::local(format!(
            "{msg}; and recording the fault failed: {}",
            exit::one_line(&d)
        )),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitStatus> {
    let g = &args.global;
    // Registered as at work until the session is dropped.
    let mut session = crate::cli::Session::open_worker(TOOL, g)?;
    let recipes = session.config.recipes_dir(args.recipes.as_deref());
    let work = Work {
        which: &args.which,
        state: RunState::New,
        polled_before: None,
        target: args.target.as_deref(),
        // No network: every target's runs can be prepared.
        reach: None,
        none: "no new runs to prepare",
        // A pending run prepared again keeps its earlier files and no fault.
        // A write here that failed for this machine's reason is not the
        // run's: it is recorded apart (fault 60) and held a while, not for a
        // person.
        on_failure: Some(OnFailure {
            fault: fault::PREPARE,
            what: "prepare failed",
            when: |run, e| run.state == RunState::New && exit::status_of(e) != ExitStatus::Local,
        }),
    };
    let summary = session.work_on(work, |db, cfg, printer, actor, run| {
        prepare_run(db, cfg, run, &recipes, printer, actor)
            .map_err(|e| local_write(db, run, actor, e))
    })?;
    let printer = &session.printer;
    printer.info(format!(
        "run {}: {} components, {} input files ({} bytes), {} ranks on {} nodes x {} -> {}",
        summary.remote_id,
        summary.components,
        summary.files,
        summary.bytes,
        summary.ranks,
        summary.nodes,
        summary.walltime,
        summary.dir
    ));
    printer.model(&summary, |s| s.remote_id.to_string())?;
    Ok(ExitStatus::Success)
}
