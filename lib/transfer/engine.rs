//! The transfer: checks, preflight, plan, channels, report.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::bundle::{folder_and_name, sample_compression};
use super::channel::Channel;
use super::local;
use super::plan::{check_pairs, plan_jobs, preflight, Preflight};
use super::state::{Inner, Shared};
use super::supervisor::run_channels;
use super::sweep::{self, Swept};
use super::{Compress, Direction, Failure, Options, Pair, Report};
use crate::exit;
use crate::ssh::Host;

/// Copy `pairs` in `dir` through the masters of `hosts`. Err only when
/// nothing could start (bad lists, a missing source, no live master);
/// otherwise the report says complete or partial.
pub fn transfer(
    hosts: &[Host],
    pairs: Vec<Pair>,
    dir: Direction,
    opts: &Options,
    progress: indicatif::ProgressBar,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    if hosts.is_empty() {
        return Err(exit::usage("no hosts given"));
    }
    check_pairs(&pairs, dir)?;
    // Every master must be alive before anything moves.
    for h in hosts {
        h.check()?;
    }
    // Sizes, and what is already complete at the destination.
    let session = session_token();
    let Preflight {
        host: first_host,
        channel: mut first,
        sizes,
        skip,
    } = preflight(hosts, &pairs, dir, &session)?;
    // What killed transfers left where this one writes, before it does.
    let swept = match opts.sweep_after {
        Some(age) => sweep_destinations(&mut first, &pairs, dir, age)?,
        None => Swept::default(),
    };
    progress.set_length(bytes_to_send(&sizes, &skip));
    let ratio = match opts.compress {
        Compress::Never => None,
        _ => sample_compression(&pairs, dir).map(|(r, _)| r),
    };
    // A pull that cannot fit where it writes is refused before it writes.
    let no_room = match dir {
        Direction::Pull => local::preflight(&pairs, &sizes, &skip),
        Direction::Push => None,
    };
    let plan = plan_jobs(&sizes, &skip, opts);
    let skipped = skip.iter().filter(|s| **s).count();
    let outstanding = plan.queue.len();
    let shared = Shared {
        inner: Mutex::new(Inner::new(plan, hosts.len(), opts, started)),
        cv: Condvar::new(),
        pairs,
        opts: opts.clone(),
        dir,
        progress,
        ratio,
        session,
    };
    if let Some(fault) = no_room {
        let mut g = shared.lock();
        g.abort = Some(fault.message());
        g.local = Some(fault);
        drop(g);
        first.close();
    } else if outstanding > 0 {
        // The preflight channel goes on as the first of its host's.
        run_channels(&shared, hosts, first_host, first);
    } else {
        first.close();
    }
    shared.progress.finish_and_clear();
    let mut report = report(&shared, hosts, skipped, started);
    if let Some(fault) = &mut report.local_fault {
        if fault.needed_bytes.is_none() && matches!(fault.errno, libc::ENOSPC | libc::EDQUOT) {
            let g = shared.lock();
            let left: Vec<(&str, u64)> = shared
                .pairs
                .iter()
                .zip(&g.files)
                .filter(|(_, f)| !f.done)
                .map(|(p, f)| (p.dst.as_str(), f.size))
                .collect();
            local::needed_on(fault, &left);
        }
    }
    report.swept = swept.count;
    report.swept_paths = swept.paths;
    Ok(report)
}

/// Sweep the destination folders (see `sweep`): on the far side over the
/// preflight channel for a push (one file system behind every host), here
/// for a pull.
fn sweep_destinations(
    ch: &mut Channel,
    pairs: &[Pair],
    dir: Direction,
    age: std::time::Duration,
) -> anyhow::Result<Swept> {
    let mut folders: Vec<&str> = pairs
        .iter()
        .map(|p| match dir {
            Direction::Push => folder_and_name(&p.dst).0,
            // A local destination may be relative.
            Direction::Pull => match p.dst.rsplit_once('/') {
                Some(("", _)) => "/",
                Some((d, _)) => d,
                None => ".",
            },
        })
        .collect();
    folders.sort_unstable();
    folders.dedup();
    Ok(match dir {
        Direction::Push => sweep::remote(ch, &folders, age)?,
        Direction::Pull => sweep::local_folders(&folders, age),
    })
}

/// This transfer's token for the remote agents' temporary names.
fn session_token() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// The bytes of the files not skipped.
fn bytes_to_send(sizes: &[u64], skip: &[bool]) -> u64 {
    sizes
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip[*i])
        .map(|(_, s)| *s)
        .sum()
}

/// What the channels did: each file left over failed, with its reason.
fn report(shared: &Shared, hosts: &[Host], skipped: usize, started: Instant) -> Report {
    let g = shared.lock();
    let failures: Vec<Failure> = g
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.done)
        .map(|(i, f)| Failure {
            src: shared.pairs[i].src.clone(),
            dst: shared.pairs[i].dst.clone(),
            reason: f
                .failed
                .clone()
                .or_else(|| {
                    // This machine's fault is said once, in the report's
                    // `local_fault`, not with every file it stopped.
                    g.local.as_ref().map(|l| {
                        format!(
                            "not transferred: the transfer stopped at {} ({})",
                            l.path, l.error
                        )
                    })
                })
                .or_else(|| g.abort.clone())
                .or_else(|| {
                    g.last_error
                        .as_ref()
                        .map(|m| format!("not transferred: the channels kept failing ({m})"))
                })
                .unwrap_or_else(|| "not transferred".to_string()),
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let bytes = g.bytes_done;
    Report {
        direction: shared.dir,
        complete: failures.is_empty(),
        files: shared.pairs.len(),
        transferred: g.files_done,
        skipped,
        failed: failures.len(),
        bytes,
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
        hosts: hosts.iter().map(|h| h.alias.clone()).collect(),
        channels: g.max_open,
        retries: g.retries,
        refusals: g.refusals,
        compressed_frames: g.compressed,
        failures,
        hosts_lost: g.lost.clone(),
        round_trip_ms: hosts
            .iter()
            .zip(&g.round_trip)
            .filter_map(|(h, rt)| Some((h.alias.clone(), rt.as_ref()?.as_secs_f64() * 1e3)))
            .collect(),
        swept: 0,
        swept_paths: Vec::new(),
        local_fault: g.local.clone(),
    }
}
