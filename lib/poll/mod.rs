//! `poll`: asks the scheduler about a run's job; when it has ended, brings
//! back the result records, the job summary and the outputs of the
//! components that worked ([`fetch`]), applies every component's result
//! (with the recipe's apply command, when it has one) and ends the run
//! `full` or `error` ([`apply`]). State `run -> full | error` (or `pending`
//! again after a site failure, `new` after a job cut short, or `auth`).
//!
//! The phases, in order: ask the scheduler; decide (still running, the
//! site's failure, cut short, ended); fetch; apply in one transaction (or
//! record, run the apply command, then release); settle the run.

use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::db::models::Run;
use crate::db::queries::RunChanges;
use crate::db::{self, Db};
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::recipe::Recipe;
use crate::runs::{self, Actor, Extra, Work};
use crate::scheduler::{self, JobState, Listing, Site};
use crate::state::{fault, RunState};

mod apply;
mod fetch;
mod usage;

use apply::{ApplyStep, Ending};

const TOOL: &str = "poll";

/// Resubmissions after site failures (node failure, time limit, preemption,
/// a vanished job) before the run needs a person.
pub const SITE_RETRIES: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "poll",
    version = crate::cli::VERSION,
    about = "Ask about a run's job; when it has ended, bring back results and outputs",
    after_help = "Exit status: 0 polled (still running, or finished: full or error), 1 error, 2 usage, \
                  3 nothing to poll, 4 try later, 5 auth (the run went to `auth`, or with --next: the only \
                  runs due are of targets whose masters are down), 6 local (a write here failed: a \
                  full or read-only file system, a quota, no permission, an I/O error; the run stays \
                  in `run` with fault 60, nothing applied or failed; poll again once fixed)."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub which: runs::Which,
    /// With --next: only runs of this target
    #[arg(long, value_name = "T", requires = "next")]
    pub target: Option<String>,
    /// With --next: only runs not polled for this many seconds
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub interval: i64,
    /// A failed component is tried this many times in all, then abandoned
    #[arg(long, default_value_t = runs::DEFAULT_ATTEMPTS)]
    pub attempts: i32,
    /// Folder of stage recipes (for their apply commands) [default:
    /// `recipes` of the configuration, else ~/.config/offload/recipes]
    #[arg(long, value_name = "DIR")]
    pub recipes: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Polled {
    pub remote_id: i64,
    pub job_id: String,
    /// The scheduler's state while the job is queued or running; else the
    /// run's new state.
    pub state: String,
    pub done: usize,
    pub failed: usize,
    pub retry: usize,
    pub abandoned: usize,
    pub rejected_records: usize,
    pub outputs: usize,
    /// The next stage's work items made from groups this poll completed
    /// (`stage/stage_id`).
    pub chained: Vec<String>,
    /// Seconds spent bringing back result records, summary and outputs,
    /// and applying the results and settling the run (0 when not reached).
    pub fetch_seconds: f64,
    pub apply_seconds: f64,
}

/// Count polls that fail in a row (not for the job's reasons, nor "auth"
/// or "try later": the poll itself), with the last error and since when;
/// a poll that works clears the count.
fn note_poll(db: &mut Db, run: &Run, polled: &anyhow::Result<Polled>) -> anyhow::Result<()> {
    let counted = match polled {
        Ok(_) => false,
        Err(e) => matches!(exit::status_of(e), ExitStatus::Failure | ExitStatus::Usage),
    };
    if polled.is_err() && !counted {
        return Ok(());
    }
    db.tx(|s| {
        let now = runs::get_run(s, run.remote_id)?;
        if !counted && now.poll_failures == 0 {
            return Ok(());
        }
        let changes = match polled {
            Err(e) if counted => RunChanges {
                // Not due again for `--next` until the interval is over.
                last_poll: Some(Some(db::now())),
                poll_failures: Some(now.poll_failures + 1),
                poll_failed_since: Some(Some(now.poll_failed_since.unwrap_or_else(db::now))),
                poll_error: Some(Some(exit::one_line(e))),
                ..RunChanges::to(now.state)
            },
            _ => RunChanges {
                poll_failures: Some(0),
                poll_failed_since: Some(None),
                poll_error: Some(None),
                ..RunChanges::to(now.state)
            },
        };
        s.set_run_state(run.remote_id, now.state, &changes)?;
        Ok(())
    })
}

/// What the job's end means for the run.
enum Decision {
    /// Still queued or running: the scheduler's state.
    Running(String),
    /// Ended without its summary, or cut by the site, before any component
    /// wrote a result; or its inputs were missing at the site: why.
    SiteFailure(String),
    /// Cut short (a time limit, a node failure, no summary) after some
    /// components wrote their result lines: why, and what it left.
    Cut(String, Listing),
    /// Ended: what it left.
    Ended(Listing),
}

pub fn poll_run(
    db: &mut Db,
    cfg: &Config,
    run: &Run,
    args: &Args,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<Polled> {
    runs::expect_state(run, RunState::Run, "poll takes runs in 'run'")?;
    let job_id = run
        .job_id
        .clone()
        .ok_or_else(|| anyhow::anyhow!("run {} has no job id", run.remote_id))?;
    let target = cfg.run_target(run.target.as_deref(), run.remote_id)?;
    let recipe = Recipe::load_for_stage(&cfg.recipes_dir(args.recipes.as_deref()), &run.stage)?;
    let apply = ApplyStep::of(&recipe, run, &target)?;
    let next = crate::chain::Chain::of(&recipe, &target.config.vars);
    let job_name = crate::scripts::job_name(&target.config.job_prefix, run.remote_id, run.attempt);
    let local_run = runs::local_run_dir(run, &target)?;
    let attempts_limit = args.attempts.max(1);
    let settling = apply::Settling {
        run,
        local_run: &local_run,
        attempts_limit,
        next: next.as_ref(),
        printer,
        actor,
    };
    let polled = |state: &str| Polled {
        remote_id: run.remote_id,
        job_id: job_id.clone(),
        state: state.to_string(),
        done: 0,
        failed: 0,
        retry: 0,
        abandoned: 0,
        rejected_records: 0,
        outputs: 0,
        chained: Vec::new(),
        fetch_seconds: 0.0,
        apply_seconds: 0.0,
    };
    if run.apply_pending {
        // The results are recorded: only the apply is left (no second pull).
        let Some(step) = &apply else {
            return Err(anyhow::anyhow!(
                "run {} waits for its recipe's apply command, but recipe {} has none now; put it back, or `remotetool set {} error --reason ...`",
                run.remote_id,
                recipe.path.display(),
                run.remote_id
            ));
        };
        let left = db.read(|s| s.run_component_count(run.remote_id))?
            - db.read(|s| s.recorded_components(run.remote_id))?.len() as i64;
        let why = format!("job {job_id} was cut short");
        let ending = if left > 0 {
            Ending::Cut {
                why: &why,
                job_id: &job_id,
            }
        } else {
            Ending::Ended { job_id: &job_id }
        };
        let (to, a) = apply::run_the_apply(db, settling, step, ending)?;
        return Ok(Polled {
            state: to.as_str().to_string(),
            done: a.done,
            failed: a.failed,
            retry: a.retry,
            abandoned: a.abandoned,
            chained: chained_names(&a.chained),
            ..polled("")
        });
    }
    let site = scheduler::site_for(&target)?;
    let site = site.as_ref();
    runs::check_or_auth(db, run, site, actor)?;
    // A job whose results could not all be written here (fault 60) ended
    // before: how is remembered here, and the scheduler is not asked again.
    let remembered = (run.fault == fault::LOCAL)
        .then(|| job_end(&local_run, &job_id))
        .flatten();
    let asked = remembered.is_none();
    let job_state = match remembered {
        Some(end) => JobState::Ended(end),
        None => site.state(&job_id)?,
    };
    printer.debug(format!(
        "run {}: job {job_id} is {job_state:?}{}",
        run.remote_id,
        if asked { "" } else { " (remembered)" }
    ));
    let ended = match &job_state {
        JobState::Ended(end) => Some(end.clone()),
        JobState::Active(_) => None,
    };
    let remote_run = target.remote_run_dir(run.remote_id);
    let decision = decide(site, &remote_run, &job_id, job_state)?;
    if let (Some(end), true) = (&ended, asked) {
        if matches!(decision, Decision::Cut(..) | Decision::Ended(..)) {
            remember_job_end(&local_run, &job_id, end.as_deref());
        }
    }
    let listing = match decision {
        Decision::Running(state) => {
            db.tx(|s| {
                runs::set_columns_in(s, run.remote_id, |_, c| c.last_poll = Some(Some(db::now())))
            })?;
            return Ok(polled(&state));
        }
        Decision::SiteFailure(why) => {
            usage::record(db, site, run, (&job_id, &job_name), &local_run, printer);
            let to = settle_site_failure(db, run, actor, &why)?;
            return Ok(polled(to.as_str()));
        }
        Decision::Cut(why, listing) => (Some(why), listing),
        Decision::Ended(listing) => (None, listing),
    };
    let (cut, listing) = listing;
    let members = db.read(|s| s.run_members(run.remote_id))?;
    let fetch_started = std::time::Instant::now();
    let fetched = match fetch::fetch_all(
        db,
        run,
        site,
        &remote_run,
        &local_run,
        &listing,
        &members,
        printer,
        actor,
    ) {
        Err(e) if exit::status_of(&e) == ExitStatus::Local => {
            return Err(local_fault(db, run, actor, &e));
        }
        fetched => fetched?,
    };
    let fetch_seconds = fetch_started.elapsed().as_secs_f64();
    // The summary is here now (the estimate's wall time, where the site
    // keeps no accounting).
    usage::record(db, site, run, (&job_id, &job_name), &local_run, printer);
    if cut.is_some() && fetched.result_of.is_empty() {
        let why = format!("{}: the site's failure", cut.unwrap_or_default());
        let to = settle_site_failure(db, run, actor, &why)?;
        return Ok(polled(to.as_str()));
    }
    let ending = match &cut {
        Some(why) => Ending::Cut {
            why,
            job_id: &job_id,
        },
        None => Ending::Ended { job_id: &job_id },
    };
    let apply_started = std::time::Instant::now();
    let (to, applied) =
        apply::apply_and_settle(db, settling, &members, &fetched, ending, apply.as_ref())?;
    let apply_seconds = apply_started.elapsed().as_secs_f64();
    Ok(Polled {
        remote_id: run.remote_id,
        job_id,
        state: to.as_str().to_string(),
        done: applied.done,
        failed: applied.failed,
        retry: applied.retry,
        abandoned: applied.abandoned,
        rejected_records: fetched.rejected.len(),
        outputs: fetched.outputs,
        chained: chained_names(&applied.chained),
        fetch_seconds,
        apply_seconds,
    })
}

/// The file in a run's folder here that remembers how its job ended.
const JOB_END: &str = "job-end.txt";

/// How job `job_id` ended, as remembered in the run's folder here: the
/// scheduler's final state (None: it gave none). None when nothing is
/// remembered of this job.
fn job_end(local_run: &std::path::Path, job_id: &str) -> Option<Option<String>> {
    let text = std::fs::read_to_string(local_run.join(JOB_END)).ok()?;
    let (job, end) = text.trim_end_matches('\n').split_once('\t')?;
    (job == job_id).then(|| (!end.is_empty()).then(|| end.to_string()))
}

/// Remember how the job ended (job id, tab, final state), under a
/// temporary name renamed into place. Where it cannot be written (the disk
/// this poll may fail on), the next poll asks the scheduler again.
fn remember_job_end(local_run: &std::path::Path, job_id: &str, end: Option<&str>) {
    let tmp = local_run.join(format!("{JOB_END}.tmp"));
    let line = format!("{job_id}\t{}\n", end.unwrap_or(""));
    if std::fs::write(&tmp, line).is_ok() {
        let _ = std::fs::rename(&tmp, local_run.join(JOB_END));
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// A write here failed for this machine's reason while the job's results
/// came back: the run stays in `run` with nothing recorded, applied or
/// failed, and says so (fault 60) until a poll brings the rest back.
fn local_fault(db: &mut Db, run: &Run, actor: &Actor, e: &anyhow::Error) -> anyhow::Error {
    // The fault's own words, without the contexts around them.
    let said = e
        .chain()
        .find_map(|c| c.downcast_ref::<exit::Status>().map(|s| s.message.clone()))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| exit::one_line(e));
    let msg = format!(
        "the job's results could not all be written here: {said}, then `poll --remote-id {}` \
         (or wait for the next round): it pulls only what is missing",
        run.remote_id
    );
    let recorded = db.tx(|s| {
        runs::record_fault_in(s, run.remote_id, fault::LOCAL, &msg, actor)?;
        runs::set_columns_in(s, run.remote_id, |_, c| c.last_poll = Some(Some(db::now())))
    });
    match recorded {
        // (The run's number is put before it by the caller.)
        Ok(()) => exit::local(msg),
        Err(d) => exit::with_status(
            d.context(format!("{msg}; and recording the fault failed")),
            ExitStatus::Local,
        ),
    }
}

fn chained_names(made: &[crate::chain::Created]) -> Vec<String> {
    made.iter()
        .map(|c| format!("{}/{}", c.stage, c.stage_id))
        .collect()
}

/// Still running, the site's failure (cut by the site, or no summary), or
/// ended with what it left.
fn decide(
    site: &dyn Site,
    remote_run: &str,
    job_id: &str,
    job_state: JobState,
) -> anyhow::Result<Decision> {
    let final_state = match job_state {
        JobState::Active(s) => return Ok(Decision::Running(s)),
        JobState::Ended(s) => s,
    };
    let listing = site.listing(remote_run)?;
    if listing.summary && listing.inputs_missing > 0 {
        return Ok(Decision::SiteFailure(format!(
            "job {job_id} found {} of the run's inputs missing at the site (first: {}) and ran nothing: the site's failure (its scratch was purged?)",
            listing.inputs_missing,
            listing.inputs_missing_first.join(", ")
        )));
    }
    // Cut short by the site, in its scheduler's words (Slurm's TIMEOUT,
    // NODE_FAIL...; Grid Engine's failed jobs; PBS's killed ones).
    let cut = final_state.as_deref().is_some_and(|f| site.cut_short(f));
    if cut || !listing.summary {
        let why = format!(
            "job {job_id} ended {} without its summary",
            final_state.as_deref().unwrap_or("(no accounting)")
        );
        if listing.rank_files.is_empty() {
            return Ok(Decision::SiteFailure(format!("{why}: the site's failure")));
        }
        return Ok(Decision::Cut(why, listing));
    }
    Ok(Decision::Ended(listing))
}

/// The site's failure: back to `pending` with the attempt + 1 (exec
/// submits it again), at most [`SITE_RETRIES`] times, then `error`.
fn settle_site_failure(
    db: &mut Db,
    run: &Run,
    actor: &Actor,
    why: &str,
) -> anyhow::Result<RunState> {
    let again = run.attempt < SITE_RETRIES;
    db.tx(|s| {
        let now = runs::get_run(s, run.remote_id)?;
        if again {
            runs::transition_in(
                s,
                &now,
                RunState::Pending,
                actor,
                &format!("{why}; submitting again"),
                Extra {
                    attempt: Some(now.attempt + 1),
                    job_id: Some(None),
                    ..Extra::default()
                },
            )?;
            Ok(RunState::Pending)
        } else {
            runs::transition_in(
                s,
                &now,
                RunState::Error,
                actor,
                why,
                Extra {
                    fault: Some(fault::SITE),
                    message: Some(Some(why.to_string())),
                    ..Extra::default()
                },
            )?;
            Ok(RunState::Error)
        }
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitStatus> {
    let g = &args.global;
    // Registered as at work until the session is dropped.
    let mut session = crate::cli::Session::open_worker(TOOL, g)?;
    // --next: only runs not polled for the interval (a named run is polled now).
    let due = db::now() - chrono::TimeDelta::seconds(args.interval.max(0));
    let work = Work {
        which: &args.which,
        state: RunState::Run,
        polled_before: Some(due),
        target: args.target.as_deref(),
        reach: Some(|target| scheduler::site_for(target)?.check()),
        none: "no runs due for a poll",
        on_failure: None,
    };
    let p = session.work_on(work, |db, cfg, printer, actor, run| {
        let polled = poll_run(db, cfg, run, &args, printer, actor);
        if let Err(e) = note_poll(db, run, &polled) {
            printer.warn(format!(
                "run {}: could not record how the poll went: {}",
                run.remote_id,
                exit::one_line(&e)
            ));
        }
        polled
    })?;
    let printer = &session.printer;
    printer.info(format!(
        "run {}: job {} {}{}",
        p.remote_id,
        p.job_id,
        p.state,
        if p.done + p.failed > 0 {
            format!(
                ": {} done, {} failed, {} outputs back",
                p.done, p.failed, p.outputs
            )
        } else {
            String::new()
        }
    ));
    if !p.chained.is_empty() {
        printer.info(format!(
            "run {}: {} work items for the next stage: {}",
            p.remote_id,
            p.chained.len(),
            p.chained.join(", ")
        ));
    }
    printer.model(&p, |p| p.state.to_string())?;
    Ok(ExitStatus::Success)
}
