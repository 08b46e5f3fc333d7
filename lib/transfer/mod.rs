//! The transfer engine behind `xfer`: copies element i of a source list to
//! element i of a destination list, to (push) or from (pull) one or more
//! front ends, over a few long-lived channels per master.
//!
//! Each channel runs one small bash agent on the remote side (standard
//! tools only: bash, coreutils, tar, cksum, dd, zstd when present) that
//! reads framed requests on stdin. It answers `READY Z TMP` first: whether
//! it has zstd, and its own temporary folder.
//!
//! | frame | meaning |
//! |---|---|
//! | `P id len z` + payload | push a bundle: a tar (zstd when z=1) of files staged as `DIR/.offload-part.SESSION-ID/NAME` and of the bundle's lists in the agent's `TMP/b.ID/`, then `cksum` of each file against the list and a move per folder |
//! | `C id off len z` + path line + payload | push a chunk of a large file into `DEST.offload-part.SESSION` at `off` |
//! | `F id size sha` + path line | finish a chunked push: check size and checksum, rename |
//! | `G id n m z` + NUL-separated paths, absolute (n bytes) then relative (m bytes) | pull a bundle: `M` manifest (cksum), `T` tar stream (or `Z` zstd), `X` errors |
//! | `R id off len` + path line | pull a chunk: `D id len` + bytes |
//! | `H id` + path line | checksum of one file: `S id sum` |
//! | `Q id n` + NUL-separated paths | stat: `L id n` + `size path` lines for those that exist |
//! | `K id n` + NUL-separated paths | checksums: `L id n` + cksum lines |
//! | `N id` | nothing: `OK id` at once (the round trip is measured with it) |
//! | `W id n age` + NUL-separated folders | sweep: remove the staging names in those folders not modified for `age` seconds, other than this session's: `L id n` + their paths, NUL-separated |
//!
//! The agent's `$1` is the session: a token of the transfer, so that what a
//! dead transfer left behind (its agents may still be finishing) is never
//! taken for this one's. Answers are lines `OK id`, `BAD id reason`, or the
//! frames above. Files
//! are written under a temporary name and renamed only once their size and
//! checksum are right, on either side, so nothing incomplete looks complete.
//! What a killed transfer left under those names is swept by the next
//! transfer into the same folder once older than `Options::sweep_after`
//! (see `sweep` for the rule); a destination named like a staging name is
//! refused, so a sweep never takes a complete file.
//!
//! The parts: `agent.sh` (the far side), `channel` (one ssh session running
//! it, and its framing), `checksum` (`cksum`, here), `plan` (the pairs
//! checked, the preflight: sizes, what is complete already, and the jobs
//! planned), `state` (the jobs the channels share and each file's state),
//! `supervisor` (each host's channel slots, worked until the queue is
//! empty), `bundle` (what a push sends), `push` and `pull` (a channel's
//! work either way), `sweep` (what killed transfers left), `local` (writes
//! here that fail for this machine's reasons, and the free-space check)
//! and `engine` (`transfer` itself: the rest in order). Within the folder
//! imports run one way too: `supervisor` calls the workers, the workers
//! and `plan` use `state`, and `state` calls none of them.

mod bundle;
mod channel;
mod checksum;
mod engine;
pub mod local;
mod plan;
mod pull;
mod push;
mod state;
mod supervisor;
pub mod sweep;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::exit;

pub use checksum::{cksum_bytes, cksum_file, Cksum};
pub use engine::transfer;

/// Suffix of files being written.
pub const PART: &str = ".offload-part";
/// Prefix of the hidden staging folder of a pushed bundle.
pub const PART_DIR: &str = ".offload-part.";

/// The remote agent (see the module documentation), run by bash on the
/// far side of each channel.
pub const AGENT: &str = include_str!("agent.sh");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Push,
    Pull,
}

impl Direction {
    /// "push" or "pull", as the JSON and the transfer-rate rows spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    /// When the data compresses, the remote side has zstd, and the link is
    /// slower than compression.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Channels per master (sshd's MaxSessions is 10 by default and the
    /// user's own shell uses one): the most opened, or exactly this many
    /// when `auto_channels` is off.
    pub channels: usize,
    /// Open only as many channels per master as its measured round trip
    /// needs to keep `AUTO_RATE` in flight, at least 2 (see `channels_for`).
    pub auto_channels: bool,
    /// Target size of a bundle of small files.
    pub bundle_bytes: u64,
    /// At most this many files in a bundle.
    pub bundle_files: usize,
    /// Files larger than this travel in chunks of this size.
    pub chunk_bytes: u64,
    /// Attempts per bundle or chunk before its files are reported failed.
    pub attempts: u32,
    pub compress: Compress,
    /// Before a transfer writes into a folder, the staging names there not
    /// modified for this long (killed transfers' leftovers; see `sweep`)
    /// are removed. None: never.
    pub sweep_after: Option<Duration>,
}

/// `Options::sweep_after` by default: a day, far above any bundle's time.
pub const DEFAULT_SWEEP_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Default for Options {
    fn default() -> Options {
        Options {
            channels: 8,
            auto_channels: true,
            bundle_bytes: 32 << 20,
            bundle_files: 4096,
            chunk_bytes: 32 << 20,
            attempts: 3,
            compress: Compress::Auto,
            sweep_after: Some(DEFAULT_SWEEP_AFTER),
        }
    }
}

/// One copy to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub src: String,
    pub dst: String,
}

/// What happened, for people and scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub direction: Direction,
    pub complete: bool,
    pub files: usize,
    pub transferred: usize,
    pub skipped: usize,
    pub failed: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub hosts: Vec<String>,
    pub channels: usize,
    pub retries: u64,
    pub refusals: u64,
    pub compressed_frames: u64,
    pub failures: Vec<Failure>,
    /// Hosts whose master went away during the transfer.
    pub hosts_lost: Vec<String>,
    /// The measured round trip to each host, in milliseconds (with
    /// automatic channel counts).
    pub round_trip_ms: std::collections::BTreeMap<String, f64>,
    /// Staging names older than `Options::sweep_after` removed from the
    /// destination folders before the transfer wrote there.
    pub swept: usize,
    /// The first of them (at most `sweep::SWEPT_PATHS`).
    pub swept_paths: Vec<String>,
    /// A write here that failed for this machine's reason (a full or
    /// read-only file system...): the transfer stopped at it, or, found by
    /// the free-space check, never started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_fault: Option<local::LocalFault>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub src: String,
    pub dst: String,
    pub reason: String,
}

/// Read a list file: one path per line.
pub fn read_list(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| exit::usage(format!("cannot read list {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Read a TSV list: the first two columns are source and destination
/// (`inputs.list` for a push, `outputs.list` for a pull).
pub fn read_pairs(path: &Path) -> anyhow::Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| exit::usage(format!("cannot read list {}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            let mut f = l.split('\t');
            match (f.next(), f.next()) {
                (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => Ok(Pair {
                    src: a.to_string(),
                    dst: b.to_string(),
                }),
                _ => Err(exit::usage(format!(
                    "{} line {}: expected SOURCE<TAB>DESTINATION",
                    path.display(),
                    i + 1
                ))),
            }
        })
        .collect()
}

/// Pair two lists element by element.
pub fn zip_lists(from: Vec<String>, to: Vec<String>) -> anyhow::Result<Vec<Pair>> {
    if from.len() != to.len() {
        return Err(exit::usage(format!(
            "the lists differ in length: {} sources, {} destinations; element i of one goes to element i of the other",
            from.len(),
            to.len()
        )));
    }
    Ok(from
        .into_iter()
        .zip(to)
        .map(|(src, dst)| Pair { src, dst })
        .collect())
}

/// With automatic channel counts: enough channels to keep this many bytes
/// per second in flight, at OpenSSH's window of about 2 MiB per channel
/// per round trip (a 10 Gbit/s link).
pub const AUTO_RATE: f64 = 1e9;
/// OpenSSH's channel window.
const WINDOW: f64 = 2.0 * 1024.0 * 1024.0;

/// Channels for a host at this round trip: enough to keep `AUTO_RATE` in
/// flight, at least 2 (one bundle is checked while the next arrives), at
/// most `cap`. On a fast local link that is 2; from about 15 ms, 8.
pub fn channels_for(round_trip: Duration, cap: usize) -> usize {
    let need = (round_trip.as_secs_f64() * AUTO_RATE / WINDOW).ceil() as usize;
    need.max(2).min(cap.max(1))
}

/// Switch compression on once the measured rate shows it pays.
pub fn compression_pays(ratio: f64, compress_mb_s: f64, link_mb_s: f64) -> bool {
    ratio < 0.9 && compress_mb_s > link_mb_s * 1.2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_follow_the_round_trip() {
        let ms = Duration::from_millis;
        // Loopback or a LAN: two, so one bundle is checked while the next
        // arrives.
        assert_eq!(channels_for(Duration::from_micros(150), 8), 2);
        assert_eq!(channels_for(ms(3), 8), 2);
        // 1 GB/s in flight at 2 MiB per channel per round trip.
        assert_eq!(channels_for(ms(5), 8), 3);
        assert_eq!(channels_for(ms(10), 8), 5);
        // Never past the cap, whatever the distance.
        assert_eq!(channels_for(ms(40), 8), 8);
        assert_eq!(channels_for(ms(40), 1), 1);
    }

    #[test]
    fn compression_only_pays_when_it_pays() {
        assert!(compression_pays(0.5, 600.0, 50.0));
        assert!(!compression_pays(0.99, 600.0, 50.0));
        assert!(!compression_pays(0.5, 600.0, 1000.0));
    }
}
