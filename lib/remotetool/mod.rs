//! `remotetool`: the database tool. Imports work items, defines runs from
//! them, lists and shows runs, sets states by hand, reverts `auth`, pauses
//! and resumes tools, shows the history; `status` (one screen), `show` of
//! a run or a component, `abort` and `retry` live in their own files.

mod abort;
mod auth;
mod report;
mod results;
mod set;
mod show;
mod staging;
mod status;

pub use abort::{AbortArgs, RetryArgs};
pub use auth::{AuthArgs, RefreshArgs, WaitArgs};
pub use set::SetArgs;
pub use show::ShowArgs;
pub use status::StatusArgs;

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::db::models::{Control, Run, RunFilter};
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::runs::{self, Actor, DefineRequest};
use crate::state::{JobPolicy, RunState};
use crate::table;
use crate::workitems;

const TOOL: &str = "remotetool";

#[derive(Debug, Parser)]
#[command(
    name = "remotetool",
    version = crate::cli::VERSION,
    about = "The offload database tool: work items, remote runs and their states",
    after_help = "The original spelling works too:\n  \
        remotetool -definebyquery -label L -stage chip -path_base P [-limit N]\n  \
        remotetool -dbname gpc1 -revertauth -label L\n\n\
        Exit status: 0 done, 1 error, 2 usage, 3 nothing to do, 4 try later, 5 auth, 6 local (no room to write: the database, or a file here)."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import ready work items from JSON Lines (a file, or - for stdin), all or nothing
    Import(ImportArgs),
    /// Define a new run from the ready work items of a label and stage (-definebyquery)
    Define(DefineArgs),
    /// List runs (-listrun)
    List(ListArgs),
    /// Is everything moving? Runs and work items per label and stage, runs
    /// that need a person, masters, paused tools
    Status(StatusArgs),
    /// Show one run (fields, components, failed ones, history) or one
    /// component (result, log tails, the commands it ran, attempts)
    Show(ShowArgs),
    /// Stop runs: withdraw one not yet submitted, cancel the job of one
    /// submitted (it goes to `error`)
    Abort(AbortArgs),
    /// Put failed work back to ready so the next define bundles it
    Retry(RetryArgs),
    /// The masters to the front ends: status (with --diagnose), start, stop
    Auth(AuthArgs),
    /// Wait until no exec, poll or xfer is at work on any host (dead ones
    /// are reclaimed)
    Wait(WaitArgs),
    /// The 12-hour auth refresh in one command: check, pause, wait, stop,
    /// start (type the password), resume, revertauth; run it again to
    /// finish an interrupted one
    RefreshAuth(RefreshArgs),
    /// Set a run's state by hand (legal transitions only), with a reason
    Set(SetArgs),
    /// Return runs in `auth` to the state they were in (-revertauth)
    Revertauth(RevertAuthArgs),
    /// Pause tools (or, with --target, their work on one target's runs):
    /// they exit with "try later" and touch nothing
    Pause(PauseArgs),
    /// Resume paused tools (with --target: for that target)
    Resume(ResumeArgs),
    /// Show which tools are paused, and for which targets
    Paused,
    /// A person has acted on a run held back after a fault: clear its
    /// fault and its hold, so --next takes it again
    Unfault(UnfaultArgs),
    /// Show the history of state changes (all runs, or one)
    History(HistoryArgs),
    /// Remove finished runs' remote folders (full -> cleaned), or with
    /// --staging what killed transfers left
    Clean(CleanArgs),
    /// Per label and stage (or run, or work item): components done, failed,
    /// abandoned; runtime; core-, CPU- and node-hours from the site's accounting
    Report(report::ReportArgs),
    /// Every applied result as JSON Lines; with --consumer, each result to
    /// each named consumer exactly once
    Results(results::ResultsArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["label", "remote_id", "staging"])))]
pub struct CleanArgs {
    /// Clean the full runs of this label
    #[arg(long)]
    pub label: Option<String>,
    /// Clean this run
    #[arg(long, value_name = "N")]
    pub remote_id: Option<i64>,
    /// Remove the transfers' staging names (.offload-part.*/, *.offload-part,
    /// *.offload-part.*) that killed transfers left, under each target's
    /// remote_root and its runs' local path_base folders
    #[arg(long)]
    pub staging: bool,
    /// With --staging: only this target
    #[arg(long, requires = "staging")]
    pub target: Option<String>,
    /// With --staging: only names not modified for this long [default: the
    /// target's sweep_after_hours, a day when 0]
    #[arg(long, value_name = "SECONDS", requires = "staging")]
    pub older_than: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// JSON Lines file of work items; - reads stdin
    #[arg(value_name = "FILE", default_value = "-")]
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct DefineArgs {
    /// Label of the work items (with --all: only this label)
    #[arg(long, required_unless_present = "all")]
    pub label: Option<String>,
    /// Stage of the work items (chip, camera, warp, stack, ...)
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    pub stage: Option<String>,
    /// One run per label and stage with free ready items, each at most the
    /// recipe's max_components (several runs when there are more); exit 3
    /// when none was defined
    #[arg(long)]
    pub all: bool,
    /// With --all: folder of stage recipes (for max_components) [default:
    /// `recipes` of the configuration, else ~/.config/offload/recipes]
    #[arg(long, value_name = "DIR", requires = "all")]
    pub recipes: Option<PathBuf>,
    /// At most this many components in the run (highest priority first)
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub limit: Option<i64>,
    /// Folder for the run's generated files [default: path_base of the
    /// configuration, else ~/.local/share/offload/runs]
    #[arg(long, value_name = "PATH")]
    pub path_base: Option<String>,
    /// Remote target (site) the run goes to, from the configuration
    #[arg(long)]
    pub target: Option<String>,
    /// What failed components do to the run when it ends
    #[arg(long, value_enum, default_value = "fatal")]
    pub job_policy: JobPolicy,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only runs in this state (repeat for several)
    #[arg(long, value_enum)]
    pub state: Vec<RunState>,
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub stage: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["label", "remote_id"])))]
pub struct RevertAuthArgs {
    /// Revert the runs of this label
    #[arg(long)]
    pub label: Option<String>,
    /// Revert this run
    #[arg(long, value_name = "N")]
    pub remote_id: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// Tools to pause: define, prepare, exec, poll, xfer
    #[arg(required = true, value_name = "TOOL")]
    pub tools: Vec<String>,
    /// Why (shown to whoever finds the tool paused)
    #[arg(long)]
    pub reason: Option<String>,
    /// Only for the runs of this target (prepare, exec, poll)
    #[arg(long, value_name = "T")]
    pub target: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Tools to resume
    #[arg(required = true, value_name = "TOOL")]
    pub tools: Vec<String>,
    /// Only for the runs of this target (as paused with --target)
    #[arg(long, value_name = "T")]
    pub target: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["label", "remote_id"])))]
pub struct UnfaultArgs {
    /// The run's remote_id
    #[arg(value_name = "REMOTE_ID")]
    pub remote_id: Option<i64>,
    /// Every run of this label that has a fault or is held back
    #[arg(long)]
    pub label: Option<String>,
    /// What was done about it (kept in the history)
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only this run
    #[arg(long, value_name = "N")]
    pub remote_id: Option<i64>,
    /// How many rows (newest)
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

pub fn run(args: Args) -> anyhow::Result<ExitStatus> {
    let g = &args.global;
    let crate::cli::Session {
        printer,
        config: cfg,
        actor,
        mut db,
        ..
    } = crate::cli::Session::open(TOOL, g)?;
    match args.command {
        Command::Import(a) => import(&mut db, &a, g.json, &printer, &actor),
        Command::Define(a) => define(&mut db, &cfg, a, g.json, &printer, &actor),
        Command::List(a) => list(&mut db, a, g.json, &printer),
        Command::Status(a) => status::status(&mut db, &cfg, a, g.json, &printer),
        Command::Show(a) => show::show(&mut db, &cfg, a, g.json, &printer),
        Command::Abort(a) => abort::abort(&mut db, &cfg, a, g.json, &printer, &actor),
        Command::Retry(a) => abort::retry(&mut db, a, g.json, &printer, &actor),
        Command::Auth(a) => auth::auth_command(&cfg, a, g.json, &printer),
        Command::Wait(a) => auth::wait(&mut db, a, g.json, &printer, &actor),
        Command::RefreshAuth(a) => auth::refresh(&mut db, &cfg, a, g.json, &printer, &actor),
        Command::Set(a) => set::set(&mut db, &cfg, a, g.json, &printer, &actor),
        Command::Revertauth(a) => {
            let done = runs::revert_auth(&mut db, a.label.as_deref(), a.remote_id, &actor)?;
            for r in &done {
                printer.info(format!("run {}: {} -> {}", r.remote_id, r.from, r.to));
            }
            print_runs(&printer, g.json, &done, |r| r.remote_id)
        }
        Command::Pause(a) => {
            if let Some(t) = &a.target {
                cfg.target(t)?;
            }
            let target = a.target.as_deref();
            runs::set_paused_for(&mut db, &a.tools, target, true, a.reason.as_deref(), &actor)?;
            printer.info(format!(
                "paused: {}{}",
                a.tools.join(", "),
                for_target(target)
            ));
            Ok(ExitStatus::Success)
        }
        Command::Resume(a) => {
            let target = a.target.as_deref();
            runs::set_paused_for(&mut db, &a.tools, target, false, None, &actor)?;
            printer.info(format!(
                "resumed: {}{}",
                a.tools.join(", "),
                for_target(target)
            ));
            Ok(ExitStatus::Success)
        }
        Command::Paused => paused(&mut db, g.json, &printer),
        Command::Unfault(a) => {
            let done = runs::unfault(
                &mut db,
                a.remote_id,
                a.label.as_deref(),
                a.reason.as_deref(),
                &actor,
            )?;
            for r in &done {
                printer.info(format!(
                    "run {} ({}): fault {} and its hold cleared; --next takes it again",
                    r.remote_id, r.state, r.fault
                ));
            }
            print_runs(&printer, g.json, &done, |r| r.remote_id)
        }
        Command::History(a) => history(&mut db, a, g.json, &printer),
        Command::Clean(a) if a.staging => staging::clean_staging(
            &mut db,
            &cfg,
            a.target.as_deref(),
            a.older_than,
            g.json,
            &printer,
        ),
        Command::Clean(a) => clean(&mut db, &cfg, a, g.json, &printer, &actor),
        Command::Report(a) => report::report(&mut db, &cfg, a, g.json, &printer),
        Command::Results(a) => {
            let url = cfg.resolve_database(g.db.as_deref(), g.dbname.as_deref())?;
            results::results(&mut db, &url, a, &printer, &actor)
        }
    }
}

#[derive(Serialize)]
struct ImportSummary {
    imported: usize,
    source: String,
}

fn import(
    db: &mut Db,
    a: &ImportArgs,
    json: bool,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<ExitStatus> {
    let stdin = a.file.as_os_str() == "-";
    let source = if stdin {
        "stdin".to_string()
    } else {
        a.file.display().to_string()
    };
    let items = if stdin {
        workitems::parse(std::io::stdin().lock(), &source)?
    } else {
        let f = std::fs::File::open(&a.file)
            .map_err(|e| exit::usage(format!("cannot open work-item file {source}: {e}")))?;
        workitems::parse(BufReader::new(f), &source)?
    };
    if items.is_empty() {
        return Err(exit::nothing_to_do(format!("{source} holds no work items")));
    }
    let n = workitems::import(db, &items, &source, actor)?;
    printer.info(format!("imported {n} work items from {source}"));
    if json {
        printer.json(&ImportSummary {
            imported: n,
            source,
        })?;
    }
    Ok(ExitStatus::Success)
}

fn define(
    db: &mut Db,
    cfg: &Config,
    a: DefineArgs,
    json: bool,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<ExitStatus> {
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
        return define_all(db, cfg, a, path_base, json, printer, actor);
    }
    let req = DefineRequest {
        label: a.label.unwrap_or_default(),
        stage: a.stage.unwrap_or_default(),
        limit: a.limit,
        path_base,
        target: a.target,
        job_policy: a.job_policy,
    };
    let d = runs::define(db, &req, actor)?;
    printer.info(format!(
        "defined run {} with {} components of {}/{}",
        d.remote_id, d.components, d.stage, d.label
    ));
    if json {
        printer.json(&d)?;
    } else {
        printer.data(d.remote_id.to_string())?;
    }
    Ok(ExitStatus::Success)
}

/// `define --all`: a run per label and stage with free ready items, each
/// at most its recipe's `max_components`, until none is free.
fn define_all(
    db: &mut Db,
    cfg: &Config,
    a: DefineArgs,
    path_base: String,
    json: bool,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<ExitStatus> {
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
    if json {
        printer.json(&made)?;
    } else {
        for d in &made {
            printer.data(d.remote_id.to_string())?;
        }
    }
    Ok(ExitStatus::Success)
}

#[derive(Serialize)]
struct RunView {
    #[serde(flatten)]
    run: Run,
    components: i64,
    components_by_state: BTreeMap<String, i64>,
}

fn views(db: &mut Db, runs: Vec<Run>) -> anyhow::Result<Vec<RunView>> {
    let ids: Vec<i64> = runs.iter().map(|r| r.remote_id).collect();
    let counts = db.read(|s| s.component_counts(&ids))?;
    let mut by_run: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    for c in counts {
        by_run
            .entry(c.remote_id)
            .or_default()
            .insert(c.state.to_string(), c.components);
    }
    Ok(runs
        .into_iter()
        .map(|run| {
            let by_state = by_run.remove(&run.remote_id).unwrap_or_default();
            RunView {
                components: by_state.values().sum(),
                components_by_state: by_state,
                run,
            }
        })
        .collect())
}

fn list(db: &mut Db, a: ListArgs, json: bool, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let filter = RunFilter {
        states: a.state.clone(),
        label: a.label,
        stage: a.stage,
        remote_id: None,
    };
    let runs = db.read(|s| s.runs(&filter))?;
    let views = views(db, runs)?;
    if json {
        printer.json(&views)?;
        return Ok(ExitStatus::Success);
    }
    if views.is_empty() {
        printer.info("no runs match");
        return Ok(ExitStatus::Success);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let r = &v.run;
            vec![
                r.remote_id.to_string(),
                r.state.to_string(),
                r.stage.clone(),
                r.label.clone(),
                v.components.to_string(),
                r.target.clone().unwrap_or_else(|| "-".into()),
                r.job_id.clone().unwrap_or_else(|| "-".into()),
                r.attempt.to_string(),
                r.fault.to_string(),
                table::time(&r.updated_at),
            ]
        })
        .collect();
    printer.data(table::render(
        &[
            "REMOTE_ID",
            "STATE",
            "STAGE",
            "LABEL",
            "COMPONENTS",
            "TARGET",
            "JOB_ID",
            "ATTEMPT",
            "FAULT",
            "UPDATED",
        ],
        &rows,
    ))?;
    Ok(ExitStatus::Success)
}

fn for_target(target: Option<&str>) -> String {
    target
        .map(|t| format!(" for target '{t}'"))
        .unwrap_or_default()
}

/// A row of `remotetool paused`: a tool, paused for every run or (with a
/// target) for one target's runs.
#[derive(Serialize)]
struct PauseRow {
    tool: String,
    /// Null: the tool as a whole.
    target: Option<String>,
    paused: bool,
    reason: Option<String>,
    changed_at: chrono::NaiveDateTime,
    changed_by: String,
}

fn paused(db: &mut Db, json: bool, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let controls = db.read(|s| s.controls())?;
    let row = |c: &Control, tool: &str, target: Option<&str>| PauseRow {
        tool: tool.to_string(),
        target: target.map(str::to_string),
        paused: c.paused,
        reason: c.reason.clone(),
        changed_at: c.changed_at,
        changed_by: c.changed_by.clone(),
    };
    let mut all: Vec<PauseRow> = runs::PAUSABLE
        .iter()
        .map(|t| match controls.iter().find(|c| c.tool == *t) {
            Some(c) => row(c, t, None),
            None => PauseRow {
                tool: t.to_string(),
                target: None,
                paused: false,
                reason: None,
                changed_at: chrono::NaiveDateTime::default(),
                changed_by: String::new(),
            },
        })
        .collect();
    // Per-target pauses in force (a resumed one is no longer listed).
    for c in controls.iter().filter(|c| c.paused) {
        if let Some((tool, target)) = runs::split_pause_key(&c.tool) {
            if runs::PAUSABLE_PER_TARGET.contains(&tool) {
                all.push(row(c, tool, Some(target)));
            }
        }
    }
    if json {
        printer.json(&all)?;
        return Ok(ExitStatus::Success);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|c| {
            let changed = if c.changed_by.is_empty() {
                ("-".to_string(), "-".to_string())
            } else {
                (table::time(&c.changed_at), c.changed_by.clone())
            };
            vec![
                c.tool.clone(),
                c.target.clone().unwrap_or_else(|| "(all)".to_string()),
                if c.paused { "paused" } else { "on" }.to_string(),
                changed.0,
                changed.1,
                c.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    printer.data(table::render(
        &["TOOL", "TARGET", "STATE", "SINCE", "BY", "REASON"],
        &rows,
    ))?;
    Ok(ExitStatus::Success)
}

fn history(
    db: &mut Db,
    a: HistoryArgs,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let rows = db.read(|s| s.history(a.remote_id, a.limit))?;
    if json {
        printer.json(&rows)?;
    } else {
        printer.data(show::history_table(&rows))?;
    }
    Ok(ExitStatus::Success)
}

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
fn clean(
    db: &mut Db,
    cfg: &Config,
    a: CleanArgs,
    json: bool,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<ExitStatus> {
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
    if json {
        // The kept ones too, with what needs them.
        done.extend(kept);
        printer.json(&done)?;
        return Ok(ExitStatus::Success);
    }
    print_runs(printer, false, &done, |c| c.remote_id)
}

/// What a command that acts on runs prints: the runs as JSON, or their ids
/// one a line.
fn print_runs<T: serde::Serialize>(
    printer: &Printer,
    json: bool,
    done: &[T],
    id: impl Fn(&T) -> i64,
) -> anyhow::Result<ExitStatus> {
    if json {
        printer.json(&done)?;
    } else {
        let ids: Vec<String> = done.iter().map(|d| id(d).to_string()).collect();
        printer.data(ids.join("\n"))?;
    }
    Ok(ExitStatus::Success)
}
