//! `poll`: asks the scheduler about a run's job; when it has ended, brings
//! back the result records, the job summary and the outputs of the
//! components that worked, applies every component's result in one
//! transaction, and ends the run `full` or `error`. State `run -> full |
//! error` (or `pending` again after a site failure, or `auth`).

use std::collections::HashMap;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::db::models::Run;
use crate::db::queries::{ComponentChanges, RunChanges};
use crate::db::{self, Db};
use crate::exec::{check_or_auth, target_hosts};
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::runs::{self, Actor, Extra};
use crate::scheduler::{JobState, Slurm};
use crate::scripts::unescape_tail;
use crate::state::RunState;
use crate::target::SchedulerKind;
use crate::transfer::{self, Direction, Options, Pair};

const TOOL: &str = "poll";

/// Fault of a run whose components failed (job_policy fatal).
pub const FAULT_COMPONENTS: i32 = 30;
/// A component's fault: its command failed (its record says how).
pub const COMPONENT_FAILED: i32 = 1;
/// A component's fault: no result record came back (it never ran, or its
/// rank died).
pub const COMPONENT_NO_RECORD: i32 = 2;
/// Fault of a run whose job kept failing for the site's reasons.
pub const FAULT_SITE: i32 = 31;
/// Resubmissions after site failures (node failure, time limit, preemption,
/// a vanished job) before the run needs a person.
pub const SITE_RETRIES: i32 = 2;
/// Times a work item is tried in all before it is abandoned.
pub const DEFAULT_ATTEMPTS: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "poll",
    version,
    about = "Ask about a run's job; when it has ended, bring back results and outputs",
    after_help = "Exit status: 0 polled (still running, or finished: full or error), 1 error, 2 usage, \
                  3 nothing to poll, 4 try later, 5 auth (the run went to `auth`)."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub which: crate::prepare::Which,
    /// With --next: only runs not polled for this many seconds
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub interval: i64,
    /// A failed component is tried this many times in all, then abandoned
    #[arg(long, default_value_t = DEFAULT_ATTEMPTS)]
    pub attempts: i32,
}

/// One component's result line, as the rank runner wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub component: i64,
    pub exit: i32,
    pub phase: String,
    pub runtime: f64,
    pub stats: String,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// A component's result as stored in `remote_components.result` (JSON),
/// what `remotetool show` reads back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ResultRecord {
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub stats: String,
    #[serde(default)]
    pub runtime: f64,
    #[serde(default)]
    pub stdout_tail: String,
    #[serde(default)]
    pub stderr_tail: String,
}

impl From<&Record> for ResultRecord {
    fn from(r: &Record) -> ResultRecord {
        ResultRecord {
            phase: r.phase.clone(),
            stats: r.stats.clone(),
            runtime: r.runtime,
            stdout_tail: r.stdout_tail.clone(),
            stderr_tail: r.stderr_tail.clone(),
        }
    }
}

/// Parse result lines (7 fields, or 9 with the log tails); malformed ones
/// are returned apart, never run.
pub fn parse_results(text: &str) -> (Vec<Record>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let parsed = (|| {
            if !(f.len() == 7 || f.len() == 9) || f[0] != "R" {
                return None;
            }
            let t0: f64 = f[4].parse().ok()?;
            let t1: f64 = f[5].parse().ok()?;
            let phase = f[3];
            if !matches!(phase, "ok" | "pre" | "command" | "post") {
                return None;
            }
            Some(Record {
                component: f[1].parse().ok()?,
                exit: f[2].parse().ok()?,
                phase: phase.to_string(),
                runtime: (t1 - t0).max(0.0),
                stats: f[6].to_string(),
                stdout_tail: f.get(7).map(|t| unescape_tail(t)).unwrap_or_default(),
                stderr_tail: f.get(8).map(|t| unescape_tail(t)).unwrap_or_default(),
            })
        })();
        match parsed {
            Some(r) => ok.push(r),
            None => bad.push(line.chars().take(200).collect()),
        }
    }
    (ok, bad)
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

/// Result files and the summary in a run folder on this machine, listed as
/// the remote listing is.
fn local_listing(remote_run: &str) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(std::path::Path::new(remote_run).join("results")) {
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("rank-") && n.ends_with(".tsv"))
            .collect();
        names.sort();
        for n in names {
            out.push_str(&n);
            out.push('\n');
        }
    }
    if std::path::Path::new(remote_run)
        .join("job-summary.txt")
        .is_file()
    {
        out.push_str("SUMMARY\n");
    }
    out
}

/// Bring files back: through the masters, or by copying on a local target.
fn fetch(
    db: &mut Db,
    run: &Run,
    hosts: &[crate::ssh::Host],
    pairs: &[Pair],
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<()> {
    if hosts.is_empty() {
        crate::scheduler::local::copy(pairs)?;
        return Ok(());
    }
    let report = transfer::transfer(
        hosts,
        pairs.to_vec(),
        Direction::Pull,
        &Options::default(),
        printer.bytes_progress(Direction::Pull),
    )?;
    if report.complete {
        crate::auth::record_rate(db, hosts, Direction::Pull, report.bytes, report.seconds)?;
    } else {
        check_or_auth(db, run, hosts, actor)?;
        let first = report
            .failures
            .first()
            .map(|f| format!("{}: {}", f.src, f.reason))
            .unwrap_or_default();
        return Err(anyhow::anyhow!(
            "{} of {} files did not come back ({first})",
            report.failed,
            report.files
        ));
    }
    Ok(())
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

pub fn poll_run(
    db: &mut Db,
    cfg: &Config,
    run: &Run,
    args: &Args,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<Polled> {
    if runs::run_state(run)? != RunState::Run {
        return Err(exit::usage(format!(
            "run {} is '{}': poll takes runs in 'run'",
            run.remote_id, run.state
        )));
    }
    let job_id = run
        .job_id
        .clone()
        .ok_or_else(|| anyhow::anyhow!("run {} has no job id", run.remote_id))?;
    let target = cfg.run_target(run.target.as_deref(), run.remote_id)?;
    let local = target.config.scheduler == SchedulerKind::Local;
    let hosts = if local {
        Vec::new()
    } else {
        target_hosts(&target)?
    };
    check_or_auth(db, run, &hosts, actor)?;
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
    let job_state = match hosts.first() {
        Some(h) => Slurm { host: h }.state(&job_id)?,
        None => crate::scheduler::local::state(&job_id),
    };
    printer.debug(format!(
        "run {}: job {job_id} is {job_state:?}",
        run.remote_id
    ));
    let final_state = match job_state {
        JobState::Active(s) => {
            touch_poll(db, run)?;
            return Ok(polled(&s));
        }
        JobState::Ended(s) => s,
    };
    let remote_run = target.remote_run_dir(run.remote_id);
    let local_run = crate::prepare::local_run_dir(run, &target)?;
    // What the job left: the summary and the per-rank result files.
    let listing = match hosts.first() {
        Some(h) => {
            let out = h.run(
                &format!(
                    "cd {} 2>/dev/null && {{ ls -1 results 2>/dev/null | grep -E '^rank-[0-9]+\\.tsv$'; [ -f job-summary.txt ] && echo SUMMARY; }}; true",
                    shlex::try_quote(&remote_run).unwrap_or_default()
                ),
                b"",
                std::time::Duration::from_secs(60),
            )?;
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
        None => local_listing(&remote_run),
    };
    let has_summary = listing.lines().any(|l| l == "SUMMARY");
    let site_failure = matches!(
        final_state.as_deref(),
        Some("TIMEOUT" | "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL" | "DEADLINE")
    ) || !has_summary;
    if site_failure {
        let why = format!(
            "job {job_id} ended {} without its summary: the site's failure",
            final_state.as_deref().unwrap_or("(no accounting)")
        );
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
                )
            } else {
                runs::transition_in(
                    s,
                    &now,
                    RunState::Error,
                    actor,
                    &why,
                    Extra {
                        fault: Some(FAULT_SITE),
                        message: Some(Some(why.clone())),
                        ..Extra::default()
                    },
                )
            }
        })?;
        return Ok(polled(if again { "pending" } else { "error" }));
    }
    let mut pairs: Vec<Pair> = listing
        .lines()
        .filter(|l| l.starts_with("rank-"))
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
    fetch(db, run, &hosts, &pairs, printer, actor)
        .with_context(|| format!("could not bring back the results of run {}", run.remote_id))?;
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    for p in pairs.iter().filter(|p| p.dst.ends_with(".tsv")) {
        // Log tails may end inside a character: read as bytes.
        let bytes = std::fs::read(&p.dst).with_context(|| format!("cannot read {}", p.dst))?;
        let (ok, bad) = parse_results(&String::from_utf8_lossy(&bytes));
        records.extend(ok);
        rejected.extend(bad);
    }
    let members = db.read(|s| s.run_members(run.remote_id))?;
    let known: HashMap<i64, usize> = members.iter().enumerate().map(|(i, m)| (m.0, i)).collect();
    let mut result_of: HashMap<i64, Record> = HashMap::new();
    for r in records {
        if known.contains_key(&r.component) {
            result_of.insert(r.component, r);
        } else {
            rejected.push(format!(
                "component {} is not in run {}",
                r.component, run.remote_id
            ));
        }
    }
    for r in rejected.iter().take(5) {
        printer.warn(format!(
            "run {}: rejected result record: {r}",
            run.remote_id
        ));
    }
    // Outputs of the components that worked; kept logs of every component
    // that ran.
    let outputs: Vec<Pair> = std::fs::read_to_string(local_run.join("outputs.list"))
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
        .collect();
    let n_outputs = outputs.len();
    if !outputs.is_empty() {
        fetch(db, run, &hosts, &outputs, printer, actor)
            .with_context(|| format!("outputs of run {} did not come back", run.remote_id))?;
    }
    // Apply everything in one transaction.
    let attempts_limit = args.attempts.max(1);
    let out = db.tx(|s| {
        let now_run = runs::get_run(s, run.remote_id)?;
        let now = db::now();
        let (mut done, mut failed, mut retry, mut abandoned) = (0, 0, 0, 0);
        let mut failed_ids = Vec::new();
        for &(cid, wid, stage_id, attempts) in &members {
            let rec = result_of.get(&cid);
            let ok = rec.is_some_and(|r| r.exit == 0);
            let result = rec
                .map(|r| serde_json::to_string(&ResultRecord::from(r)))
                .transpose()?;
            s.update_component(
                cid,
                &ComponentChanges {
                    state: if ok { "done" } else { "failed" }.into(),
                    active: false,
                    attempts: 1,
                    exit_status: rec.map(|r| r.exit),
                    runtime: rec.map(|r| r.runtime),
                    fault: if ok {
                        0
                    } else if rec.is_some() {
                        COMPONENT_FAILED
                    } else {
                        COMPONENT_NO_RECORD
                    },
                    result,
                    updated_at: now,
                },
            )?;
            if ok {
                done += 1;
                s.set_work_item(wid, "done", true, now)?;
            } else {
                failed += 1;
                failed_ids.push(stage_id);
                if attempts + 1 < attempts_limit {
                    retry += 1;
                    s.set_work_item(wid, "ready", true, now)?;
                } else {
                    abandoned += 1;
                    s.set_work_item(wid, "abandoned", true, now)?;
                }
            }
        }
        let summary =
            format!("{done} done, {failed} failed ({retry} to retry, {abandoned} abandoned)");
        if failed == 0 || now_run.job_policy == "ignore" {
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
            Ok(("full", done, failed, retry, abandoned))
        } else {
            let ids: Vec<String> = failed_ids.iter().take(10).map(|i| i.to_string()).collect();
            let msg = format!(
                "job {job_id} ended: {summary}; failed {}/{}{}",
                run.stage,
                ids.join(","),
                if failed > 10 { ",..." } else { "" }
            );
            runs::transition_in(
                s,
                &now_run,
                RunState::Error,
                actor,
                &msg,
                Extra {
                    fault: Some(FAULT_COMPONENTS),
                    message: Some(Some(msg.clone())),
                    ..Extra::default()
                },
            )?;
            Ok(("error", done, failed, retry, abandoned))
        }
    })?;
    Ok(Polled {
        remote_id: run.remote_id,
        job_id,
        state: out.0.to_string(),
        done: out.1,
        failed: out.2,
        retry: out.3,
        abandoned: out.4,
        rejected_records: rejected.len(),
        outputs: n_outputs,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitStatus> {
    let g = &args.global;
    let crate::cli::Session {
        printer,
        config: cfg,
        actor,
        mut db,
        registration: _registration,
    } = crate::cli::Session::open_worker(TOOL, g)?;
    // --next: only runs not polled for the interval (a named run is polled now).
    let due = db::now() - chrono::TimeDelta::seconds(args.interval.max(0));
    let run = runs::claim_which(
        &mut db,
        args.which.remote_id,
        RunState::Run,
        Some(due),
        &cfg.claim_policy(&actor.host)?,
        &actor,
        "no runs due for a poll",
    )?;
    let result = poll_run(&mut db, &cfg, &run, &args, &printer, &actor);
    runs::release(&mut db, run.remote_id, &actor)?;
    let p = result.with_context(|| format!("run {}", run.remote_id))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_data() {
        let (ok, bad) = parse_results(
            "R\t7\t0\tok\t10.5\t12.0\tinputs=5\nR\t8\t3\tcommand\t1\t2\t\tdone\\n\tno such file\\tx\\\\y\n$(rm -rf /)\nR\t9\tx\tok\t1\t2\t\nR\t9\t0\tsql'\t1\t2\t\nR\t9\t0\tok\t1\t2\t\tonly one tail\n",
        );
        assert_eq!(ok.len(), 2);
        assert_eq!(
            ok[0],
            Record {
                component: 7,
                exit: 0,
                phase: "ok".into(),
                runtime: 1.5,
                stats: "inputs=5".into(),
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            }
        );
        assert_eq!((ok[1].exit, ok[1].phase.as_str()), (3, "command"));
        assert_eq!(ok[1].stdout_tail, "done\n");
        assert_eq!(ok[1].stderr_tail, "no such file\tx\\y");
        assert_eq!(bad.len(), 4);
    }
}
