//! Before anything moves: the pairs checked, the sizes and what is
//! complete already found out over a first channel (the preflight).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use super::bundle::folder_and_name;
use super::channel::{Channel, OpenError};
use super::checksum::{cksum_file, parse_sums};
use super::state::{FileState, Job, Plan};
use super::{Direction, Options, Pair};
use crate::exit;
use crate::ssh::Host;
use crate::target::bad_path_char;

pub(super) fn check_pairs(pairs: &[Pair], dir: Direction) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    for (i, p) in pairs.iter().enumerate() {
        for (what, path) in [("source", &p.src), ("destination", &p.dst)] {
            if let Some(ch) = bad_path_char(path) {
                return Err(exit::usage(format!(
                    "element {}: {what} {path:?} holds {ch}",
                    i + 1
                )));
            }
            if path.trim() != path {
                return Err(exit::usage(format!(
                    "element {}: {what} {path:?} starts or ends with white space",
                    i + 1
                )));
            }
        }
        let remote = if dir == Direction::Push {
            &p.dst
        } else {
            &p.src
        };
        if !remote.starts_with('/') {
            return Err(exit::usage(format!(
                "element {}: remote path {remote:?} must be absolute",
                i + 1
            )));
        }
        if remote.split('/').any(|c| c == "..") {
            return Err(exit::usage(format!(
                "element {}: remote path {remote:?} holds '..'",
                i + 1
            )));
        }
        if super::sweep::is_staging_name(folder_and_name(&p.dst).1) {
            return Err(exit::usage(format!(
                "element {}: destination {:?} is named like a transfer's staging file (.offload-part), which sweeps remove",
                i + 1,
                p.dst
            )));
        }
        if !seen.insert(p.dst.as_str()) {
            return Err(exit::usage(format!(
                "element {}: destination {:?} appears twice",
                i + 1,
                p.dst
            )));
        }
    }
    Ok(())
}

/// Sizes of the remote files that exist, by path.
fn remote_sizes<'a>(
    ch: &mut Channel,
    paths: impl Iterator<Item = &'a str>,
) -> anyhow::Result<HashMap<String, u64>> {
    let paths: Vec<&str> = paths.collect();
    let mut out = HashMap::new();
    for chunk in paths.chunks(20_000) {
        for l in ch.listing('Q', chunk)?.lines() {
            if let Some((s, p)) = l.split_once(' ') {
                if let Ok(s) = s.parse() {
                    out.insert(p.to_string(), s);
                }
            }
        }
    }
    Ok(out)
}

/// Of the candidates (same size on both sides), those whose checksums also
/// agree: complete already, to be skipped.
fn already_complete(
    ch: &mut Channel,
    pairs: &[Pair],
    candidates: &[usize],
    dir: Direction,
) -> anyhow::Result<Vec<bool>> {
    let mut skip = vec![false; pairs.len()];
    for chunk in candidates.chunks(20_000) {
        let paths: Vec<&str> = chunk.iter().map(|&i| ends(&pairs[i], dir).0).collect();
        let sums = parse_sums(&ch.listing('K', &paths)?);
        for &i in chunk {
            let (remote, local) = ends(&pairs[i], dir);
            if let Some(sum) = sums.get(remote) {
                if cksum_file(Path::new(local)).ok().as_ref() == Some(sum) {
                    skip[i] = true;
                }
            }
        }
    }
    Ok(skip)
}

/// (remote path, local path) of a pair.
fn ends(p: &Pair, dir: Direction) -> (&str, &str) {
    match dir {
        Direction::Push => (&p.dst, &p.src),
        Direction::Pull => (&p.src, &p.dst),
    }
}

/// What the preflight found out, over the channel it opened (on host
/// `host`): each file's size, and whether it is complete already.
pub(super) struct Preflight {
    pub(super) host: usize,
    pub(super) channel: Channel,
    pub(super) sizes: Vec<u64>,
    pub(super) skip: Vec<bool>,
}

pub(super) fn preflight(
    hosts: &[Host],
    pairs: &[Pair],
    dir: Direction,
    session: &str,
) -> anyhow::Result<Preflight> {
    let (host, mut channel) = open_preflight_channel(hosts, session)?;
    let (sizes, skip) = match dir {
        Direction::Push => push_preflight(&mut channel, pairs)?,
        Direction::Pull => pull_preflight(&mut channel, pairs)?,
    };
    Ok(Preflight {
        host,
        channel,
        sizes,
        skip,
    })
}

/// A channel for the preflight listings: any host will do; a host whose
/// sessions are all taken (MaxSessions) is waited for, not failed.
fn open_preflight_channel(hosts: &[Host], session: &str) -> anyhow::Result<(usize, Channel)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut wait = Duration::from_millis(100);
    loop {
        let mut last = String::new();
        for (hi, h) in hosts.iter().enumerate() {
            match Channel::open(h, session) {
                Ok(ch) => return Ok((hi, ch)),
                Err(OpenError::Refused(m)) => last = format!("{}: {m}", h.alias),
                Err(OpenError::Gone(m)) | Err(OpenError::Other(m)) => {
                    return Err(exit::auth(format!(
                        "cannot open a channel to {}: {m}",
                        h.alias
                    )))
                }
            }
        }
        if Instant::now() > deadline {
            return Err(exit::try_later(format!(
                "every host refused a session for 2 minutes (MaxSessions reached): {last}"
            )));
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

fn push_preflight(ch: &mut Channel, pairs: &[Pair]) -> anyhow::Result<(Vec<u64>, Vec<bool>)> {
    let mut sizes = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        let m = std::fs::metadata(&p.src).map_err(|e| {
            exit::usage(format!(
                "source {} (element {}) cannot be read: {e}; nothing was sent",
                p.src,
                i + 1
            ))
        })?;
        if !m.is_file() {
            return Err(exit::usage(format!(
                "source {} (element {}) is not a regular file",
                p.src,
                i + 1
            )));
        }
        sizes.push(m.len());
    }
    // Only files whose folder exists there can be complete: ask for the
    // folders first (a first push into new folders then stats no file).
    fn folder(p: &Pair) -> &str {
        folder_and_name(&p.dst).0
    }
    let folders: HashSet<&str> = pairs.iter().map(folder).collect();
    let present = remote_sizes(ch, folders.into_iter())?;
    let remote = remote_sizes(
        ch,
        pairs
            .iter()
            .filter(|p| present.contains_key(folder(p)))
            .map(|p| p.dst.as_str()),
    )?;
    let candidates: Vec<usize> = (0..pairs.len())
        .filter(|&i| remote.get(&pairs[i].dst) == Some(&sizes[i]))
        .collect();
    let skip = already_complete(ch, pairs, &candidates, Direction::Push)?;
    Ok((sizes, skip))
}

fn pull_preflight(ch: &mut Channel, pairs: &[Pair]) -> anyhow::Result<(Vec<u64>, Vec<bool>)> {
    let remote = remote_sizes(ch, pairs.iter().map(|p| p.src.as_str()))?;
    let mut sizes = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        match remote.get(&p.src) {
            Some(s) => sizes.push(*s),
            None => {
                return Err(exit::usage(format!(
                    "source {} (element {}) does not exist on the remote side; nothing was fetched",
                    p.src,
                    i + 1
                )))
            }
        }
    }
    let candidates: Vec<usize> = (0..pairs.len())
        .filter(|&i| {
            std::fs::metadata(&pairs[i].dst)
                .map(|m| m.is_file() && m.len() == sizes[i])
                .unwrap_or(false)
        })
        .collect();
    let skip = already_complete(ch, pairs, &candidates, Direction::Pull)?;
    Ok((sizes, skip))
}

/// Plan the jobs: files larger than a chunk go in chunks; the others in
/// bundles of up to `bundle_bytes` or `bundle_files`. Skipped files are
/// done already.
pub(super) fn plan_jobs(sizes: &[u64], skip: &[bool], opts: &Options) -> Plan {
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
    Plan {
        queue,
        files,
        next_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::zip_lists;

    #[test]
    fn lists_must_match() {
        let e = zip_lists(vec!["a".into()], vec![]).unwrap_err();
        assert!(exit::one_line(&e).contains("1 sources, 0 destinations"));
        let ok = zip_lists(vec!["/l/a".into()], vec!["/r/a".into()]).unwrap();
        assert!(check_pairs(&ok, Direction::Push).is_ok());
        let bad = vec![Pair {
            src: "/l/a".into(),
            dst: "r/a".into(),
        }];
        assert!(
            exit::one_line(&check_pairs(&bad, Direction::Push).unwrap_err()).contains("absolute")
        );
        let bad = vec![Pair {
            src: "/l/a".into(),
            dst: "/r/../a".into(),
        }];
        assert!(exit::one_line(&check_pairs(&bad, Direction::Push).unwrap_err()).contains("'..'"));
        let bad = vec![Pair {
            src: "/l/a\nb".into(),
            dst: "/r/a".into(),
        }];
        assert!(
            exit::one_line(&check_pairs(&bad, Direction::Push).unwrap_err()).contains("newline")
        );
    }
}
