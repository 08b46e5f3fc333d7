//! The work a transfer's channels share: the jobs (as planned, then
//! queued), the state of each file, and what went wrong. The channels
//! (`supervisor`) and their workers (`push`, `pull`) take jobs from it and
//! report back; it calls none of them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{compression_pays, Compress, Direction, Options, Pair};

/// One piece of work for a channel: a bundle of small files, a chunk of a
/// large one, or the check and rename that finishes a chunked file.
#[derive(Debug, Clone)]
pub(super) enum Job {
    Bundle {
        id: u64,
        files: Vec<usize>,
    },
    Chunk {
        id: u64,
        file: usize,
        offset: u64,
        len: u64,
    },
    Finish {
        id: u64,
        file: usize,
    },
}

impl Job {
    pub(super) fn id(&self) -> u64 {
        match self {
            Job::Bundle { id, .. } | Job::Chunk { id, .. } | Job::Finish { id, .. } => *id,
        }
    }
    pub(super) fn files(&self) -> Vec<usize> {
        match self {
            Job::Bundle { files, .. } => files.clone(),
            Job::Chunk { file, .. } | Job::Finish { file, .. } => vec![*file],
        }
    }
}

/// Where one file of the transfer stands.
pub(super) struct FileState {
    pub(super) size: u64,
    pub(super) chunks_left: usize,
    pub(super) done: bool,
    pub(super) failed: Option<String>,
}

/// The jobs, in order, and the state of each file.
pub(super) struct Plan {
    pub(super) queue: VecDeque<Job>,
    pub(super) files: Vec<FileState>,
    /// The id the next job made will have.
    pub(super) next_id: u64,
}

/// A transfer's state, under `Shared`'s lock.
pub(super) struct Inner {
    pub(super) queue: VecDeque<Job>,
    pub(super) attempts: HashMap<u64, u32>,
    /// Jobs queued or in flight.
    pub(super) outstanding: usize,
    pub(super) files: Vec<FileState>,
    pub(super) next_id: u64,
    pub(super) bytes_done: u64,
    pub(super) files_done: usize,
    pub(super) retries: u64,
    pub(super) refusals: u64,
    pub(super) compressed: u64,
    /// Open channels per host index.
    pub(super) open: Vec<usize>,
    /// Channel cap per host index (lowered on refusals).
    pub(super) cap: Vec<usize>,
    /// Whether the host's channel count is settled (with `auto_channels`,
    /// once its round trip is measured); other slots wait for it.
    pub(super) sized: Vec<bool>,
    /// Measured round trip per host index.
    pub(super) round_trip: Vec<Option<Duration>>,
    pub(super) alive: Vec<bool>,
    pub(super) lost: Vec<String>,
    pub(super) abort: Option<String>,
    /// The write here that stopped the transfer (and set `abort`).
    pub(super) local: Option<super::local::LocalFault>,
    /// What the last channel to fail said: the reason given for files left
    /// over when every channel has given up.
    pub(super) last_error: Option<String>,
    pub(super) max_open: usize,
    pub(super) compress_now: bool,
    pub(super) started: Instant,
}

impl Inner {
    /// The state before any channel opens: the plan's jobs queued, every
    /// host alive, none sized yet with automatic channel counts.
    pub(super) fn new(plan: Plan, hosts: usize, opts: &Options, started: Instant) -> Inner {
        Inner {
            outstanding: plan.queue.len(),
            queue: plan.queue,
            attempts: HashMap::new(),
            files: plan.files,
            next_id: plan.next_id,
            bytes_done: 0,
            files_done: 0,
            retries: 0,
            refusals: 0,
            compressed: 0,
            open: vec![0; hosts],
            cap: vec![opts.channels.max(1); hosts],
            sized: vec![!opts.auto_channels; hosts],
            round_trip: vec![None; hosts],
            alive: vec![true; hosts],
            lost: Vec::new(),
            abort: None,
            local: None,
            last_error: None,
            max_open: 0,
            compress_now: opts.compress == Compress::Always,
            started,
        }
    }
}

/// What a transfer's channels share.
pub(super) struct Shared {
    pub(super) inner: Mutex<Inner>,
    pub(super) cv: Condvar,
    pub(super) pairs: Vec<Pair>,
    pub(super) opts: Options,
    pub(super) dir: Direction,
    pub(super) progress: indicatif::ProgressBar,
    /// Compressible sample ratio (compressed / raw), when measured.
    pub(super) ratio: Option<f64>,
    /// This transfer's token for the remote agents' temporary names.
    pub(super) session: String,
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next job, waiting while others are in flight; None when all is
    /// done or the transfer was aborted.
    pub(super) fn next(&self) -> Option<Job> {
        let mut g = self.lock();
        loop {
            if g.abort.is_some() || g.outstanding == 0 {
                return None;
            }
            if let Some(j) = g.queue.pop_front() {
                return Some(j);
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(super) fn succeed(&self, job: &Job) {
        let mut g = self.lock();
        g.outstanding -= 1;
        match job {
            Job::Bundle { files, .. } => {
                for &f in files {
                    g.files[f].done = true;
                    g.files_done += 1;
                    g.bytes_done += g.files[f].size;
                    self.progress.inc(g.files[f].size);
                }
            }
            Job::Chunk { file, len, .. } => {
                g.bytes_done += len;
                self.progress.inc(*len);
                g.files[*file].chunks_left -= 1;
                if g.files[*file].chunks_left == 0 && g.files[*file].failed.is_none() {
                    let id = g.next_id;
                    g.next_id += 1;
                    g.outstanding += 1;
                    g.queue.push_front(Job::Finish { id, file: *file });
                }
            }
            Job::Finish { file, .. } => {
                g.files[*file].done = true;
                g.files_done += 1;
            }
        }
        self.progress.set_message(format!("{} files", g.files_done));
        self.cv.notify_all();
        drop(g);
        self.consider_compression();
    }

    /// A job failed: again, up to the attempt limit; then its files fail.
    pub(super) fn fail(&self, job: Job, reason: &str) {
        self.fail_with(job, |_| Some(reason.to_string()));
    }

    /// A job failed with a reason per file: each file its own (a bundle's
    /// files fail for different reasons), again up to the attempt limit.
    pub(super) fn fail_each(&self, job: Job, reasons: &HashMap<usize, String>) {
        self.fail_with(job, |f| reasons.get(&f).cloned());
    }

    fn fail_with(&self, job: Job, reason_of: impl Fn(usize) -> Option<String>) {
        let mut g = self.lock();
        let n = {
            let a = g.attempts.entry(job.id()).or_insert(0);
            *a += 1;
            *a
        };
        if n < self.opts.attempts && g.abort.is_none() {
            g.retries += 1;
            g.queue.push_back(job);
        } else {
            g.outstanding -= 1;
            for f in job.files() {
                if g.files[f].failed.is_none() && !g.files[f].done {
                    g.files[f].failed = reason_of(f);
                }
            }
        }
        self.cv.notify_all();
    }

    /// An I/O error writing `path` here: when it is this machine's fault
    /// (full, read-only, no permission, I/O error), the transfer stops;
    /// the first such fault is kept for the report. True when it was one.
    pub(super) fn local_error(&self, path: &std::path::Path, e: &std::io::Error) -> bool {
        let Some(fault) = super::local::fault_of(path, e) else {
            return false;
        };
        let mut g = self.lock();
        if g.local.is_none() {
            g.abort = Some(fault.message());
            g.local = Some(fault);
        }
        self.cv.notify_all();
        true
    }

    /// Put a job back without counting an attempt (its channel went away).
    pub(super) fn requeue(&self, job: Job) {
        let mut g = self.lock();
        g.queue.push_front(job);
        self.cv.notify_all();
    }

    /// With automatic compression: on once the rate so far shows it pays.
    fn consider_compression(&self) {
        let Some(ratio) = self.ratio else { return };
        let mut g = self.lock();
        if g.compress_now || self.opts.compress != Compress::Auto || g.bytes_done < (64 << 20) {
            return;
        }
        let rate = g.bytes_done as f64 / 1e6 / g.started.elapsed().as_secs_f64().max(1e-6);
        // zstd level 1 runs at a few hundred MB/s per core.
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        if compression_pays(ratio, 300.0 * cores, rate) {
            g.compress_now = true;
        }
    }
}
