//! Claims: which process works on which run. A tool takes a run by id or
//! with `--next` (the oldest it may take that no live process holds) under
//! a lease, does its work, records a fault when the work failed for a
//! reason a person must fix, and gives the lease back ([`work_on`]).

use std::collections::HashSet;
use std::time::Duration;

use crate::config::{ClaimPolicy, Config};
use crate::db::models::{Lease, Run};
use crate::db::queries::{ClaimFilter, TargetScope};
use crate::db::{self, Db};
use crate::exit::{self, ExitStatus};
use crate::state::RunState;
use crate::target::Target;

use super::actor::Actor;
use super::faults::{end_hold, hold_back_off, record_fault_and_hold};
use super::pauses::{check_paused, ensure_not_paused, ensure_target_not_paused, paused_targets};
use super::transitions::get_run;
use crate::host::pid_alive;

/// Which run a tool takes: one by id, or the next one due.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// The run to work on
    #[arg(long, value_name = "N")]
    pub remote_id: Option<i64>,
    /// Claim the oldest run that is due and that no other process holds
    #[arg(long)]
    pub next: bool,
}
/// A lease (or a registered process) whose heartbeat is older than this is
/// taken over: several heartbeats (`workers::HEARTBEAT`) missed.
pub const LEASE_STALE: Duration = Duration::from_secs(120);

fn stale_before() -> chrono::NaiveDateTime {
    db::now() - chrono::TimeDelta::from_std(LEASE_STALE).expect("small duration")
}

fn new_lease(actor: &Actor, remote_id: i64) -> Lease {
    let now = db::now();
    Lease {
        remote_id,
        tool: actor.tool.clone(),
        host: actor.host.clone(),
        pid: actor.pid,
        acquired_at: now,
        heartbeat_at: now,
    }
}

/// Why the holder of a lease or a process registration is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Its pid is no longer alive on this host.
    Process,
    /// No heartbeat for this many seconds (at least [`LEASE_STALE`]).
    Silent(i64),
}

/// Is the holder host/pid, last heard at `heartbeat_at`, gone? Seen from
/// `this_host` at `now`.
pub fn holder_gone(
    host: &str,
    pid: i32,
    heartbeat_at: chrono::NaiveDateTime,
    this_host: &str,
    now: chrono::NaiveDateTime,
) -> Option<Gone> {
    if host == this_host && !pid_alive(pid) {
        return Some(Gone::Process);
    }
    let silent = (now - heartbeat_at).num_seconds();
    (silent >= LEASE_STALE.as_secs() as i64).then_some(Gone::Silent(silent))
}

/// Claim the run in `state` that no live process holds and this host
/// should take first (its claim policy: runnable pattern, then priority,
/// then the oldest): exactly one claimer wins each run, on either backend.
/// None: nothing to claim.
pub fn claim_next(
    db: &mut Db,
    state: RunState,
    policy: &ClaimPolicy,
    actor: &Actor,
) -> anyhow::Result<Option<Run>> {
    let next = Next {
        state,
        polled_before: None,
        only: None,
        default_target: None,
        skip: &[],
    };
    claim_next_in(db, &next, policy, actor)
}

/// What `--next` may take: runs in `state` (last polled before
/// `polled_before`, when given), not held, of `only` (`--target`) when
/// given, of no target in `skip`, and of no target the tool is paused for.
/// A run naming no target is of `default_target`.
#[derive(Debug, Clone, Copy)]
pub struct Next<'a> {
    pub state: RunState,
    pub polled_before: Option<chrono::NaiveDateTime>,
    pub only: Option<&'a str>,
    pub default_target: Option<&'a str>,
    pub skip: &'a [String],
}

impl Next<'_> {
    /// The claim's filter, leaving `also` alone besides `skip`.
    fn filter(&self, also: &[String]) -> ClaimFilter {
        let skip: Vec<String> = self.skip.iter().chain(also).cloned().collect();
        let default = self.default_target;
        ClaimFilter {
            state: self.state,
            stale_before: stale_before(),
            polled_before: self.polled_before,
            now: db::now(),
            targets: TargetScope {
                skip_unnamed: default.is_some_and(|d| skip.iter().any(|s| s == d)),
                skip,
                only: self.only.map(str::to_string),
                only_unnamed: self.only.is_some() && self.only == default,
            },
        }
    }
}

/// Claim what `next` allows, as [`claim_next`] does.
pub fn claim_next_in(
    db: &mut Db,
    next: &Next<'_>,
    policy: &ClaimPolicy,
    actor: &Actor,
) -> anyhow::Result<Option<Run>> {
    if policy.is_trivial() {
        // PostgreSQL: one statement takes the oldest (pauses, per target
        // too, are checked in it). When it takes none, there is none to
        // take; only a pause is left to report.
        let now = db::now();
        match db::queries::claims::claim_oldest_in_one_statement(
            db,
            &next.filter(&[]),
            next.default_target,
            &actor.tool,
            &actor.host,
            actor.pid,
            now,
        )? {
            Some(Some(run)) => return Ok(Some(run)),
            Some(None) => {
                db.tx(|s| ensure_not_paused(s, &actor.tool))?;
                return Ok(None);
            }
            None => {}
        }
    }
    for attempt in 0..20u64 {
        let r = db.tx(|s| {
            let controls = s.controls()?;
            check_paused(&controls, &actor.tool)?;
            let filter = next.filter(&paused_targets(&controls, &actor.tool));
            let chosen = if policy.is_trivial() {
                // The oldest, locked in the same statement.
                s.claim_oldest_locked(&filter)?
            } else {
                let mut candidates: Vec<(i32, Run)> = s
                    .claimable_runs(&filter, 2000)?
                    .into_iter()
                    .filter_map(|r| policy.rank(&r.stage, &r.label).map(|p| (p, r)))
                    .collect();
                // Stable: equal priorities stay oldest first.
                candidates.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
                let mut chosen = None;
                for (_, run) in candidates {
                    // Another claimer holds it, or it moved on: the next one.
                    if s.lock_run(run.remote_id, next.state)? {
                        chosen = Some(run);
                        break;
                    }
                }
                chosen
            };
            let Some(run) = chosen else {
                return Ok(None);
            };
            // A stale lease goes; a live one (taken since our query) makes
            // the insert fail and the claim start again.
            s.delete_lease(run.remote_id, None, Some(filter.stale_before))?;
            s.insert_lease(&new_lease(actor, run.remote_id))?;
            Ok(Some(run))
        });
        match r {
            Err(e) if db::is_unique_violation(&e) => {
                std::thread::sleep(Duration::from_millis(5 * (attempt + 1)));
            }
            r => return r,
        }
    }
    Err(exit::try_later(format!(
        "could not claim a '{}' run: other processes kept taking them first",
        next.state
    )))
}

/// Claim one run by id. Held by another live process: "try later".
pub fn claim(db: &mut Db, remote_id: i64, actor: &Actor) -> anyhow::Result<Run> {
    claim_named(db, remote_id, None, actor)
}

/// Claim one run by id, as [`claim`]; refused ("try later") when the tool
/// is paused for the run's target (its own, else `default_target`).
pub fn claim_named(
    db: &mut Db,
    remote_id: i64,
    default_target: Option<&str>,
    actor: &Actor,
) -> anyhow::Result<Run> {
    let r = db.tx(|s| {
        ensure_not_paused(s, &actor.tool)?;
        let run = get_run(s, remote_id)?;
        if let Some(target) = run.target.as_deref().or(default_target) {
            ensure_target_not_paused(s, &actor.tool, target)?;
        }
        if let Some(l) = s.lease(remote_id)? {
            let gone = holder_gone(&l.host, l.pid, l.heartbeat_at, &actor.host, db::now());
            if let Some(gone) = gone {
                let why = match gone {
                    Gone::Process => "its process is gone",
                    Gone::Silent(_) => "no heartbeat",
                };
                s.delete_lease(remote_id, Some((&l.host, l.pid)), None)?;
                s.insert_history(&actor.history(
                    Some(remote_id),
                    None,
                    None,
                    format!(
                        "reclaimed the lease of {} on {}:{} ({why})",
                        l.tool, l.host, l.pid
                    ),
                ))?;
            } else {
                return Err(exit::try_later(format!(
                    "run {remote_id} is held by {} on {}:{} since {}",
                    l.tool,
                    l.host,
                    l.pid,
                    l.acquired_at.format("%Y-%m-%d %H:%M:%S")
                )));
            }
        }
        s.insert_lease(&new_lease(actor, remote_id))?;
        Ok(run)
    });
    match r {
        Err(e) if db::is_unique_violation(&e) => Err(exit::try_later(format!(
            "run {remote_id} was just claimed by another process"
        ))),
        r => r,
    }
}

/// Give a run's lease back.
pub fn release(db: &mut Db, remote_id: i64, actor: &Actor) -> anyhow::Result<()> {
    db.single(|s| s.delete_lease(remote_id, Some((&actor.host, actor.pid)), None))?;
    Ok(())
}

/// A fault to record on the run when the work on it fails. A run with a
/// recorded fault is held back from `--next` until a person acts on it
/// (`remotetool unfault`, `set`, `retry`).
pub struct OnFailure<'a> {
    /// The run's fault number.
    pub fault: i32,
    /// What failed, put before the error in the run's message.
    pub what: &'a str,
    /// Whether this failure is one to record (the run as claimed, the
    /// error).
    pub when: fn(&Run, &anyhow::Error) -> bool,
}

/// A tool's work on one run: which run it takes, and what a failure leaves.
pub struct Work<'a> {
    pub which: &'a Which,
    /// The state `--next` claims from.
    pub state: RunState,
    /// With `--next`: only runs last polled before this (or never).
    pub polled_before: Option<chrono::NaiveDateTime>,
    /// With `--next`: only runs of this target (`--target`).
    pub target: Option<&'a str>,
    /// With `--next`: whether a target's site can be reached (its
    /// masters), asked once per target per call before its runs are
    /// claimed; the runs of one that cannot are left as they are.
    pub reach: Option<fn(&Target) -> anyhow::Result<()>>,
    /// What "nothing to do" says when `--next` finds no run.
    pub none: &'a str,
    pub on_failure: Option<OnFailure<'a>>,
}

/// The work failed because the run's target is over its queue limit (exec's
/// throttle): "try later", the run is held a short, growing while
/// ([`back_off`]) and `--next` goes on with other targets' runs.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Throttled {
    message: String,
    /// "Try later", as the error's source (what the exit status is read
    /// from).
    #[source]
    status: exit::Status,
}

/// A [`Throttled`] error ("try later").
pub fn throttled(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Throttled {
        message: message.into(),
        status: exit::Status {
            status: ExitStatus::TryLater,
            message: String::new(),
        },
    })
}

/// Was the work throttled ([`throttled`])?
pub fn is_throttled(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Throttled>().is_some())
}

/// Claim the run `work` names (with `--next`: the oldest it allows whose
/// target can be reached), do `f` on it, record the fault of a failure
/// (and hold the run), and give the lease back whatever happened. A
/// throttled run is held a while and `--next` tries the next target's
/// runs. The error names the run.
pub fn work_on<T>(
    db: &mut Db,
    cfg: &Config,
    policy: &ClaimPolicy,
    actor: &Actor,
    printer: &crate::printer::Printer,
    work: Work<'_>,
    mut f: impl FnMut(&mut Db, &Run) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let default = cfg.default_target.as_deref();
    if let Some(id) = work.which.remote_id {
        if work.target.is_some() {
            return Err(exit::usage(
                "--target goes with --next (a run named by --remote-id has its own target)",
            ));
        }
        let run = claim_named(db, id, default, actor)?;
        return attempt(db, actor, printer, &work, &run, &mut f);
    }
    if let Some(t) = work.target {
        cfg.target(t)?;
    }
    let tool = actor.tool.as_str();
    let mut skip: Vec<String> = Vec::new();
    let mut checked: HashSet<String> = HashSet::new();
    let mut dead: Vec<String> = Vec::new();
    let mut throttled: Option<anyhow::Error> = None;
    loop {
        let controls = db.read(|s| s.controls())?;
        check_paused(&controls, tool)?;
        let paused = paused_targets(&controls, tool);
        fn next<'n>(work: &Work<'n>, default: Option<&'n str>, skip: &'n [String]) -> Next<'n> {
            Next {
                state: work.state,
                polled_before: work.polled_before,
                only: work.target,
                default_target: default,
                skip,
            }
        }
        // The targets with runs to take, each checked once.
        let filter = next(&work, default, &skip).filter(&[]);
        let targets = db.read(|s| s.claimable_targets(&filter))?;
        let mut paused_with_work: Vec<String> = Vec::new();
        for (column, n) in &targets {
            let Some(name) = column.as_deref().or(default) else {
                continue;
            };
            if paused.iter().any(|p| p == name) {
                paused_with_work.push(name.to_string());
                continue;
            }
            let Some(reach) = work.reach else { continue };
            if !checked.insert(name.to_string()) {
                continue;
            }
            // A target the configuration lacks is the work's to report.
            let Ok(target) = cfg.target(name) else {
                continue;
            };
            if let Err(e) = reach(&target) {
                printer.warn(format!(
                    "target '{name}' cannot be reached ({}): its {n} {} run(s) are left as they are; \
                     `remotetool refresh-auth --target {name}` (or `remotetool auth start --target {name}`) opens its masters",
                    exit::one_line(&e),
                    work.state
                ));
                skip.push(name.to_string());
                dead.push(name.to_string());
            }
        }
        let Some(run) = claim_next_in(db, &next(&work, default, &skip), policy, actor)? else {
            if !dead.is_empty() {
                return Err(exit::auth(format!(
                    "the only {} runs left are of target(s) whose masters are down: {}; \
                     after `remotetool refresh-auth` they are taken again",
                    work.state,
                    dead.join(", ")
                )));
            }
            if let Some(e) = throttled {
                return Err(e);
            }
            if !paused_with_work.is_empty() {
                return Err(exit::try_later(format!(
                    "{tool} is paused for target(s) {}; `remotetool resume {tool} --target T` switches it on",
                    paused_with_work.join(", ")
                )));
            }
            return Err(exit::nothing_to_do(work.none.to_string()));
        };
        match attempt(db, actor, printer, &work, &run, &mut f) {
            Err(e) if is_throttled(&e) => {
                let Some(name) = run.target.as_deref().or(default) else {
                    return Err(e);
                };
                printer.info(format!(
                    "{}; trying the runs of other targets",
                    exit::one_line(&e)
                ));
                skip.push(name.to_string());
                throttled = Some(e);
            }
            r => return r,
        }
    }
}

/// Do `f` on a claimed run; a success ends its hold, a fault holds it
/// until a person acts, a throttle holds it a while; the lease goes back.
fn attempt<T>(
    db: &mut Db,
    actor: &Actor,
    printer: &crate::printer::Printer,
    work: &Work<'_>,
    run: &Run,
    f: &mut impl FnMut(&mut Db, &Run) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use anyhow::Context;
    let result = f(db, run);
    let after = match &result {
        Ok(_) if run.held_until.is_some() || run.fault_count > 0 => {
            end_hold(db, run.remote_id, actor)
        }
        Ok(_) => Ok(()),
        Err(e) if is_throttled(e) => hold_back_off(db, run.remote_id, &exit::one_line(e), actor)
            .map(|until| {
                printer.info(format!(
                    "run {} is held until {} UTC",
                    run.remote_id,
                    until.format("%Y-%m-%d %H:%M:%S")
                ))
            }),
        Err(e) => match &work.on_failure {
            Some(on) if (on.when)(run, e) => {
                let msg = format!("{}: {}", on.what, exit::one_line(e));
                record_fault_and_hold(db, run.remote_id, on.fault, &msg, actor).map(|()| {
                    printer.info(format!(
                        "run {} is held back from --next until a person acts: `remotetool unfault {}`",
                        run.remote_id, run.remote_id
                    ))
                })
            }
            _ => Ok(()),
        },
    };
    if let Err(e2) = after {
        printer.warn(format!(
            "could not record the outcome on run {}: {}",
            run.remote_id,
            exit::one_line(&e2)
        ));
    }
    release(db, run.remote_id, actor)?;
    result.with_context(|| format!("run {}", run.remote_id))
}
