//! `poll`: asks the scheduler about a run's job; when it has ended, brings
//! back the result records, the job summary and the outputs of the
//! components that worked, applies every component's result in one
//! transaction, and ends the run `full` or `error`. State `run -> full |
//! error` (or `pending` again after a site failure, or `auth`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::db::models::Run;
use crate::db::queries::{ComponentChanges, RunChanges};
use crate::db::{self, Db, Store};
use crate::exit::ExitStatus;
use crate::printer::Printer;
use crate::record::{parse_results, Record};
use crate::runs::{self, Actor, Extra, Work};
use crate::scheduler::{self, JobState, Listing, Site};
use crate::state::{fault, ComponentState, ItemState, JobPolicy, RunState};
use crate::transfer::{Direction, Pair};

/// A run's component: (component id, work item id, stage_id, attempts).
type Member = (i64, i64, i64, i32);

const TOOL: &str = "poll";

/// Resubmissions after site failures (node failure, time limit, preemption,
/// a vanished job) before the run needs a person.
pub const SITE_RETRIES: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "poll",
    version,
    about = "Ask about a run's job; when it has ended, bring back results and outputs",
    after_help = "Exit status: 0 polled (still running, or finished: full or error), 1 error, 2 usage, \
                  3 nothing to poll, 4 try later, 5 auth (the run went to `auth`, or with --next: the only \
                  runs due are of targets whose masters are down)."
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
}

/// Bring files back; a transfer that did not complete is an error (and
/// the run goes to `auth` when a master is gone).
fn fetch(
    db: &mut Db,
    run: &Run,
    site: &dyn Site,
    pairs: Vec<Pair>,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<()> {
    let report = site.pull(pairs, printer)?;
    if !report.complete {
        return Err(scheduler::incomplete(
            db,
            run,
            site,
            actor,
            &report,
            "did not come back",
        ));
    }
    crate::auth::record_rate(
        db,
        site.hosts(),
        Direction::Pull,
        report.bytes,
        report.seconds,
    )
}

fn touch_poll(db: &mut Db, run: &Run) -> anyhow::Result<()> {
    db.tx(|s| {
        let changes = RunChanges {
            last_poll: Some(Some(db::now())),
            ..RunChanges::to(&run.state)
        };
        s.set_run_state(run.remote_id, &run.state, &changes)?;
        Ok(())
    })
}

/// What the job's end means for the run.
enum Decision {
    /// Still queued or running: the scheduler's state.
    Running(String),
    /// Ended without its summary, or cut by the site: why.
    SiteFailure(String),
    /// Ended: what it left.
    Ended(Listing),
}

/// What came back of an ended job.
struct Fetched {
    /// Each component's result line, by component id.
    result_of: HashMap<i64, Record>,
    /// Result lines refused (malformed, or of no component of the run).
    rejected: Vec<String>,
    /// Outputs brought back.
    outputs: usize,
}

/// What applying the results did.
struct Applied {
    done: usize,
    failed: usize,
    retry: usize,
    abandoned: usize,
    /// stage_ids of the failed components.
    failed_ids: Vec<i64>,
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
    let site = scheduler::site_for(&target)?;
    let site = site.as_ref();
    scheduler::check_or_auth(db, run, site, actor)?;
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
    };
    let job_state = site.state(&job_id)?;
    printer.debug(format!(
        "run {}: job {job_id} is {job_state:?}",
        run.remote_id
    ));
    let remote_run = target.remote_run_dir(run.remote_id);
    let listing = match decide(site, &remote_run, &job_id, job_state)? {
        Decision::Running(state) => {
            touch_poll(db, run)?;
            return Ok(polled(&state));
        }
        Decision::SiteFailure(why) => {
            let to = settle_site_failure(db, run, actor, &why)?;
            return Ok(polled(to.as_str()));
        }
        Decision::Ended(listing) => listing,
    };
    let local_run = runs::local_run_dir(run, &target)?;
    let members = db.read(|s| s.run_members(run.remote_id))?;
    let fetched = fetch_all(
        db,
        run,
        site,
        &remote_run,
        &local_run,
        &listing,
        &members,
        printer,
        actor,
    )?;
    let attempts_limit = args.attempts.max(1);
    let (to, applied) = db.tx(|s| {
        let applied = apply(s, &members, &fetched.result_of, attempts_limit)?;
        let to = settle(s, run, &job_id, &applied, actor)?;
        Ok((to, applied))
    })?;
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
    })
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
    let cut = matches!(
        final_state.as_deref(),
        Some("TIMEOUT" | "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL" | "DEADLINE")
    );
    if cut || !listing.summary {
        return Ok(Decision::SiteFailure(format!(
            "job {job_id} ended {} without its summary: the site's failure",
            final_state.as_deref().unwrap_or("(no accounting)")
        )));
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

/// Bring back the result files and the summary, read the result lines, then
/// the outputs of the components that worked and the kept logs of every
/// component that ran.
#[allow(clippy::too_many_arguments)]
fn fetch_all(
    db: &mut Db,
    run: &Run,
    site: &dyn Site,
    remote_run: &str,
    local_run: &Path,
    listing: &Listing,
    members: &[Member],
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<Fetched> {
    let mut pairs: Vec<Pair> = listing
        .rank_files
        .iter()
        .map(|l| Pair {
            src: format!("{remote_run}/results/{l}"),
            dst: local_run
                .join("results")
                .join(l)
                .to_string_lossy()
                .into_owned(),
        })
        .collect();
    pairs.push(Pair {
        src: format!("{remote_run}/job-summary.txt"),
        dst: local_run
            .join("job-summary.txt")
            .to_string_lossy()
            .into_owned(),
    });
    let result_files: Vec<String> = pairs
        .iter()
        .filter(|p| p.dst.ends_with(".tsv"))
        .map(|p| p.dst.clone())
        .collect();
    fetch(db, run, site, pairs, printer, actor)
        .with_context(|| format!("could not bring back the results of run {}", run.remote_id))?;
    let (result_of, rejected) = read_results(run, &result_files, members)?;
    for r in rejected.iter().take(5) {
        printer.warn(format!(
            "run {}: rejected result record: {r}",
            run.remote_id
        ));
    }
    let outputs = outputs_to_fetch(local_run, &result_of)?;
    let n_outputs = outputs.len();
    if !outputs.is_empty() {
        fetch(db, run, site, outputs, printer, actor)
            .with_context(|| format!("outputs of run {} did not come back", run.remote_id))?;
    }
    Ok(Fetched {
        result_of,
        rejected,
        outputs: n_outputs,
    })
}

/// The result lines of the run's components, by component id, and the
/// lines refused.
fn read_results(
    run: &Run,
    files: &[String],
    members: &[Member],
) -> anyhow::Result<(HashMap<i64, Record>, Vec<String>)> {
    let known: HashSet<i64> = members.iter().map(|m| m.0).collect();
    let mut result_of = HashMap::new();
    let mut rejected = Vec::new();
    for f in files {
        // Log tails may end inside a character: read as bytes.
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {f}"))?;
        let (ok, bad) = parse_results(&String::from_utf8_lossy(&bytes));
        rejected.extend(bad);
        for r in ok {
            if known.contains(&r.component) {
                result_of.insert(r.component, r);
            } else {
                rejected.push(format!(
                    "component {} is not in run {}",
                    r.component, run.remote_id
                ));
            }
        }
    }
    Ok((result_of, rejected))
}

/// The outputs of the components that worked, and the kept logs of every
/// component that ran (`outputs.list`).
fn outputs_to_fetch(
    local_run: &Path,
    result_of: &HashMap<i64, Record>,
) -> anyhow::Result<Vec<Pair>> {
    Ok(std::fs::read_to_string(local_run.join("outputs.list"))
        .with_context(|| format!("cannot read {}/outputs.list", local_run.display()))?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let cid: i64 = f.get(2)?.parse().ok()?;
            let is_log = f.get(3) == Some(&"log");
            result_of
                .get(&cid)
                .filter(|r| r.exit == 0 || is_log)
                .map(|_| Pair {
                    src: f[0].to_string(),
                    dst: f[1].to_string(),
                })
        })
        .collect())
}

/// Every component's result, inside the caller's transaction: its state,
/// exit status, runtime, fault and record; its work item done, ready again
/// (under the attempt limit) or abandoned.
fn apply(
    s: &mut dyn Store,
    members: &[Member],
    result_of: &HashMap<i64, Record>,
    attempts_limit: i32,
) -> anyhow::Result<Applied> {
    let now = db::now();
    let mut a = Applied {
        done: 0,
        failed: 0,
        retry: 0,
        abandoned: 0,
        failed_ids: Vec::new(),
    };
    for &(cid, wid, stage_id, attempts) in members {
        let rec = result_of.get(&cid);
        let ok = rec.is_some_and(|r| r.exit == 0);
        let result = rec.map(|r| serde_json::to_string(&r.result)).transpose()?;
        s.update_component(
            cid,
            &ComponentChanges {
                state: if ok {
                    ComponentState::Done
                } else {
                    ComponentState::Failed
                }
                .as_str()
                .into(),
                active: false,
                attempts: 1,
                exit_status: rec.map(|r| r.exit),
                runtime: rec.map(|r| r.result.runtime),
                fault: if ok {
                    0
                } else if rec.is_some() {
                    fault::COMPONENT_FAILED
                } else {
                    fault::COMPONENT_NO_RECORD
                },
                result,
                updated_at: now,
            },
        )?;
        let item = if ok {
            a.done += 1;
            ItemState::Done
        } else {
            a.failed += 1;
            a.failed_ids.push(stage_id);
            if attempts + 1 < attempts_limit {
                a.retry += 1;
                ItemState::Ready
            } else {
                a.abandoned += 1;
                ItemState::Abandoned
            }
        };
        s.set_work_item(wid, item.as_str(), true, now)?;
    }
    Ok(a)
}

/// The run ends, inside the caller's transaction: `full` when nothing
/// failed or its policy ignores failures, else `error` naming the failed.
fn settle(
    s: &mut dyn Store,
    run: &Run,
    job_id: &str,
    a: &Applied,
    actor: &Actor,
) -> anyhow::Result<RunState> {
    let now_run = runs::get_run(s, run.remote_id)?;
    let summary = format!(
        "{} done, {} failed ({} to retry, {} abandoned)",
        a.done, a.failed, a.retry, a.abandoned
    );
    if a.failed == 0 || JobPolicy::of(&now_run.job_policy) == JobPolicy::Ignore {
        runs::transition_in(
            s,
            &now_run,
            RunState::Full,
            actor,
            &format!("job {job_id} ended: {summary}"),
            Extra {
                fault: Some(0),
                message: Some(None),
                ..Extra::default()
            },
        )?;
        return Ok(RunState::Full);
    }
    let ids: Vec<String> = a
        .failed_ids
        .iter()
        .take(10)
        .map(|i| i.to_string())
        .collect();
    let msg = format!(
        "job {job_id} ended: {summary}; failed {}/{}{}",
        run.stage,
        ids.join(","),
        if a.failed > 10 { ",..." } else { "" }
    );
    runs::transition_in(
        s,
        &now_run,
        RunState::Error,
        actor,
        &msg,
        Extra {
            fault: Some(fault::COMPONENTS),
            message: Some(Some(msg.clone())),
            ..Extra::default()
        },
    )?;
    Ok(RunState::Error)
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
        poll_run(db, cfg, run, &args, printer, actor)
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
    if g.json {
        printer.json(&p)?;
    } else {
        printer.data(&p.state)?;
    }
    Ok(ExitStatus::Success)
}
