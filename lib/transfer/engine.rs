//! The transfer: preflight, plan, channels, report.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::bundle::sample_compression;
use super::plan::{check_pairs, open_preflight_channel, pull_preflight, push_preflight};
use super::queue::{run_channels, FileState, Inner, Job, Shared};
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
    let session = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let (first_host, mut first) = open_preflight_channel(hosts, &session)?;
    let (sizes, skip) = match dir {
        Direction::Push => push_preflight(&mut first, &pairs)?,
        Direction::Pull => pull_preflight(&mut first, &pairs)?,
    };
    let total: u64 = sizes
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip[*i])
        .map(|(_, s)| *s)
        .sum();
    progress.set_length(total);
    let ratio = match opts.compress {
        Compress::Never => None,
        _ => sample_compression(&pairs, dir).map(|(r, _)| r),
    };
    let compress_now = opts.compress == Compress::Always;
    // Plan the jobs.
    let mut queue = VecDeque::new();
    let mut next_id = 1u64;
    let mut files: Vec<FileState> = sizes
        .iter()
        .map(|&size| FileState {
            size,
            chunks_left: 0,
            done: false,
            failed: None,
        })
        .collect();
    let mut bundle: Vec<usize> = Vec::new();
    let mut bundle_bytes = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if skip[i] {
            files[i].done = true;
            continue;
        }
        if size > opts.chunk_bytes {
            let n = size.div_ceil(opts.chunk_bytes);
            files[i].chunks_left = n as usize;
            for k in 0..n {
                let offset = k * opts.chunk_bytes;
                queue.push_back(Job::Chunk {
                    id: next_id,
                    file: i,
                    offset,
                    len: opts.chunk_bytes.min(size - offset),
                });
                next_id += 1;
            }
            continue;
        }
        bundle.push(i);
        bundle_bytes += size + 512;
        if bundle_bytes >= opts.bundle_bytes || bundle.len() >= opts.bundle_files {
            queue.push_back(Job::Bundle {
                id: next_id,
                files: std::mem::take(&mut bundle),
            });
            next_id += 1;
            bundle_bytes = 0;
        }
    }
    if !bundle.is_empty() {
        queue.push_back(Job::Bundle {
            id: next_id,
            files: bundle,
        });
        next_id += 1;
    }
    let skipped = skip.iter().filter(|s| **s).count();
    let outstanding = queue.len();
    let shared = Shared {
        inner: Mutex::new(Inner {
            queue,
            attempts: HashMap::new(),
            outstanding,
            files,
            next_id,
            bytes_done: 0,
            files_done: 0,
            retries: 0,
            refusals: 0,
            compressed: 0,
            open: vec![0; hosts.len()],
            cap: vec![opts.channels.max(1); hosts.len()],
            sized: vec![!opts.auto_channels; hosts.len()],
            round_trip: vec![None; hosts.len()],
            alive: vec![true; hosts.len()],
            lost: Vec::new(),
            abort: None,
            last_error: None,
            max_open: 0,
            compress_now,
            started,
        }),
        cv: Condvar::new(),
        pairs,
        opts: opts.clone(),
        dir,
        progress,
        ratio,
        session,
    };
    if outstanding > 0 {
        // The preflight channel goes on as the first of its host's.
        run_channels(&shared, hosts, first_host, first);
    } else {
        first.close();
    }
    shared.progress.finish_and_clear();
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
    Ok(Report {
        direction: dir,
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
    })
}
