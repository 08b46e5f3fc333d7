//! Claims: which process works on which run. A tool takes a run by id or
//! with `--next` (the oldest it may take that no live process holds) under
//! a lease, does its work, records a fault when the work failed for a
//! reason a person must fix, and gives the lease back ([`work_on`]).

use std::time::Duration;

use crate::config::ClaimPolicy;
use crate::db::models::{Lease, Run};
use crate::db::{self, Db};
use crate::exit::{self, ExitStatus};
use crate::state::RunState;

use super::{ensure_not_paused, get_run, record_fault, Actor};

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

/// Is `pid` a live process on this host (a zombie is not)?
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
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
    claim_next_polled(db, state, None, policy, actor)
}

/// Like [`claim_next`], only runs last polled before `polled_before` (or
/// never).
pub fn claim_next_polled(
    db: &mut Db,
    state: RunState,
    polled_before: Option<chrono::NaiveDateTime>,
    policy: &ClaimPolicy,
    actor: &Actor,
) -> anyhow::Result<Option<Run>> {
    if policy.is_trivial() {
        // PostgreSQL: one statement takes the oldest. When it takes none,
        // there is none to take; only a pause is left to report.
        let now = db::now();
        match db::claim_oldest_in_one_statement(
            db,
            state.as_str(),
            stale_before(),
            polled_before,
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
            ensure_not_paused(s, &actor.tool)?;
            let stale = stale_before();
            let chosen = if policy.is_trivial() {
                // The oldest, locked in the same statement.
                s.claim_oldest_locked(state.as_str(), stale, polled_before)?
            } else {
                let mut candidates: Vec<(i32, Run)> = s
                    .claimable_runs(state.as_str(), stale, polled_before, 2000)?
                    .into_iter()
                    .filter_map(|r| policy.rank(&r.stage, &r.label).map(|p| (p, r)))
                    .collect();
                // Stable: equal priorities stay oldest first.
                candidates.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
                let mut chosen = None;
                for (_, run) in candidates {
                    // Another claimer holds it, or it moved on: the next one.
                    if s.lock_run(run.remote_id, state.as_str())? {
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
            s.delete_lease(run.remote_id, None, Some(stale))?;
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
        "could not claim a '{state}' run: other processes kept taking them first"
    )))
}

/// Claim one run by id. Held by another live process: "try later".
pub fn claim(db: &mut Db, remote_id: i64, actor: &Actor) -> anyhow::Result<Run> {
    let r = db.tx(|s| {
        ensure_not_paused(s, &actor.tool)?;
        let run = get_run(s, remote_id)?;
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

/// The run a tool works on: the one named (held by no other process), or
/// the oldest claimable in `state` (last polled before `polled_before`,
/// when given); none to claim is "nothing to do" with `none`.
#[allow(clippy::too_many_arguments)]
pub fn claim_which(
    db: &mut Db,
    remote_id: Option<i64>,
    state: RunState,
    polled_before: Option<chrono::NaiveDateTime>,
    policy: &ClaimPolicy,
    actor: &Actor,
    none: &str,
) -> anyhow::Result<Run> {
    match remote_id {
        Some(id) => claim(db, id, actor),
        None => claim_next_polled(db, state, polled_before, policy, actor)?
            .ok_or_else(|| exit::nothing_to_do(none.to_string())),
    }
}

/// Give a run's lease back.
pub fn release(db: &mut Db, remote_id: i64, actor: &Actor) -> anyhow::Result<()> {
    db.single(|s| s.delete_lease(remote_id, Some((&actor.host, actor.pid)), None))?;
    Ok(())
}

/// A fault to record on the run when the work on it fails.
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
    /// What "nothing to do" says when `--next` finds no run.
    pub none: &'a str,
    pub on_failure: Option<OnFailure<'a>>,
}

/// Claim the run `work` names, do `f` on it, record the fault of a failure,
/// and give the lease back whatever happened. The error names the run.
pub fn work_on<T>(
    db: &mut Db,
    policy: &ClaimPolicy,
    actor: &Actor,
    printer: &crate::printer::Printer,
    work: Work<'_>,
    f: impl FnOnce(&mut Db, &Run) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use anyhow::Context;
    let run = claim_which(
        db,
        work.which.remote_id,
        work.state,
        work.polled_before,
        policy,
        actor,
        work.none,
    )?;
    let result = f(db, &run);
    if let (Err(e), Some(on)) = (&result, &work.on_failure) {
        if (on.when)(&run, e) {
            let msg = format!("{}: {}", on.what, exit::one_line(e));
            if let Err(e2) = record_fault(db, run.remote_id, on.fault, &msg, actor) {
                printer.warn(format!(
                    "could not record the fault on run {}: {}",
                    run.remote_id,
                    exit::one_line(&e2)
                ));
            }
        }
    }
    release(db, run.remote_id, actor)?;
    result.with_context(|| format!("run {}", run.remote_id))
}

/// Failures a person must fix (not "try later", not "auth").
pub fn needs_a_person(_run: &Run, e: &anyhow::Error) -> bool {
    matches!(exit::status_of(e), ExitStatus::Failure | ExitStatus::Usage)
}
