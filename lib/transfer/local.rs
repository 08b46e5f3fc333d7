//! Writes here that fail for this machine's reasons: a full or read-only
//! file system, a quota, no permission, an I/O error. Such a failure is no
//! file's own: every other file going to the same place would meet it too,
//! so a pull stops at the first and says once what failed where (the path,
//! its file system, the error, and for a full one how many bytes the rest
//! needs against what is free). Before a pull starts, the free space of
//! each destination file system is weighed against the sizes the remote
//! side reported ([`preflight`]), so a pull that cannot fit is refused
//! before it writes anything.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Pair;

/// The errors that are this machine's, not a file's.
const LOCAL_ERRNOS: &[i32] = &[
    libc::ENOSPC,
    libc::EDQUOT,
    libc::EROFS,
    libc::EACCES,
    libc::EPERM,
    libc::EIO,
    libc::EFBIG,
];

/// A write here that failed for this machine's reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalFault {
    /// The file or folder that could not be written.
    pub path: String,
    /// The file system it is on: its mount point.
    pub file_system: String,
    /// The error number (errno) and what the system calls it.
    pub errno: i32,
    pub error: String,
    /// For a file system without room: the bytes the rest of the transfer
    /// needs there, and the bytes free (and free inodes, when those ran
    /// out first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_inodes: Option<u64>,
}

impl LocalFault {
    /// One line: what failed where, and what to do about it (the caller
    /// says what to run then).
    pub fn message(&self) -> String {
        let room = match (self.needed_bytes, self.free_bytes) {
            (Some(need), Some(free)) if need > free => format!(
                "; the rest needs {} there and {} is free",
                human_bytes(need),
                human_bytes(free)
            ),
            (Some(need), Some(free)) => format!(
                "; the rest needs {} there, {} is free{}",
                human_bytes(need),
                human_bytes(free),
                match self.free_inodes {
                    Some(0) => ", but no inodes are (too many files)".to_string(),
                    Some(n) => format!(" and {n} inodes"),
                    None => String::new(),
                }
            ),
            _ => String::new(),
        };
        let fix = match self.errno {
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => "make room there",
            libc::EROFS => "make the file system writable",
            libc::EACCES | libc::EPERM => "let this user write there",
            _ => "check the storage",
        };
        format!(
            "cannot write {} ({}, errno {}) on the file system at {}{room}: this machine's fault, nothing was lost; {fix}",
            self.path, self.error, self.errno, self.file_system
        )
    }
}

/// The local fault an I/O error at `path` is, if it is one.
pub fn fault_of(path: &Path, e: &std::io::Error) -> Option<LocalFault> {
    let errno = e.raw_os_error().filter(|n| LOCAL_ERRNOS.contains(n))?;
    let error = std::io::Error::from_raw_os_error(errno).to_string();
    let error = error
        .split(" (os error")
        .next()
        .unwrap_or(&error)
        .to_string();
    let (file_system, space) = match existing(path) {
        Some(p) => (mount_point(&p).display().to_string(), free_space(&p)),
        None => ("/".to_string(), None),
    };
    let (free_bytes, free_inodes) = match (errno, space) {
        (libc::ENOSPC | libc::EDQUOT, Some((b, i))) => (Some(b), Some(i)),
        _ => (None, None),
    };
    Some(LocalFault {
        path: path.display().to_string(),
        file_system,
        errno,
        error,
        needed_bytes: None,
        free_bytes,
        free_inodes,
    })
}

/// The first I/O error in an error's chain that is this machine's fault
/// (by its errno), if any.
pub fn errno_in(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .filter(|n| LOCAL_ERRNOS.contains(n))
    })
}

/// The nearest folder at or above `path` that exists.
fn existing(path: &Path) -> Option<PathBuf> {
    let mut p = Some(path);
    while let Some(q) = p {
        if q.symlink_metadata().is_ok() && q.is_dir() {
            return Some(q.to_path_buf());
        }
        p = q.parent();
    }
    None
}

/// The mount point of the file system holding `dir` (an existing folder):
/// the highest folder above it on the same device.
fn mount_point(dir: &Path) -> PathBuf {
    let Ok(dev) = std::fs::metadata(dir).map(|m| m.dev()) else {
        return dir.to_path_buf();
    };
    let mut top = dir.to_path_buf();
    let mut p = dir.parent();
    while let Some(q) = p {
        match std::fs::metadata(q) {
            Ok(m) if m.dev() == dev => top = q.to_path_buf(),
            _ => break,
        }
        p = q.parent();
    }
    top
}

/// Bytes and inodes free to this user on the file system holding `dir`.
fn free_space(dir: &Path) -> Option<(u64, u64)> {
    statvfs(dir).map(|(b, i, _)| (b, i))
}

/// Bytes and inodes free to this user on the file system holding `dir`,
/// and its block size.
fn statvfs(dir: &Path) -> Option<(u64, u64, u64)> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all zeroes is a valid value of it.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let block = (s.f_frsize as u64).max(1);
    Some((
        (s.f_bavail as u64).saturating_mul(block),
        s.f_favail as u64,
        block,
    ))
}

/// Before a pull: the bytes each destination file system will receive (the
/// files not skipped, each rounded up to the file system's block), against
/// what it has free. The first that cannot hold its share, as a fault
/// (`ENOSPC`).
pub(super) fn preflight(pairs: &[Pair], sizes: &[u64], skip: &[bool]) -> Option<LocalFault> {
    // Files by the folder that exists above their destination, then by
    // file system (device).
    let mut by_dir: BTreeMap<PathBuf, (Vec<u64>, String)> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        if skip[i] {
            continue;
        }
        let dst = Path::new(&p.dst);
        let Some(dir) = dst.parent().and_then(existing) else {
            continue;
        };
        let e = by_dir.entry(dir).or_insert((Vec::new(), p.dst.clone()));
        e.0.push(sizes[i]);
    }
    let mut by_dev: BTreeMap<u64, (Vec<u64>, PathBuf, String)> = BTreeMap::new();
    for (dir, (files, first)) in by_dir {
        let Ok(dev) = std::fs::metadata(&dir).map(|m| m.dev()) else {
            continue;
        };
        let e = by_dev.entry(dev).or_insert((Vec::new(), dir, first));
        e.0.extend(files);
    }
    by_dev.into_values().find_map(|(files, dir, first)| {
        let (free, inodes, block) = statvfs(&dir)?;
        let need: u64 = files.iter().map(|&n| n.div_ceil(block) * block).sum();
        (need > free).then(|| LocalFault {
            path: first,
            file_system: mount_point(&dir).display().to_string(),
            errno: libc::ENOSPC,
            error: "No space left on device".to_string(),
            needed_bytes: Some(need),
            free_bytes: Some(free),
            free_inodes: Some(inodes),
        })
    })
}

/// The bytes the files not done need on `fault`'s file system: filled into
/// a fault met in the middle of a pull.
pub(super) fn needed_on(fault: &mut LocalFault, pending: &[(&str, u64)]) {
    let Some(fs) = existing(Path::new(&fault.file_system)) else {
        return;
    };
    let Ok(dev) = std::fs::metadata(&fs).map(|m| m.dev()) else {
        return;
    };
    let need: u64 = pending
        .iter()
        .filter(|(dst, _)| {
            Path::new(dst)
                .parent()
                .and_then(existing)
                .and_then(|d| std::fs::metadata(d).ok())
                .is_some_and(|m| m.dev() == dev)
        })
        .map(|(_, size)| size)
        .sum();
    fault.needed_bytes = Some(need);
    if let Some((free, inodes)) = free_space(&fs) {
        fault.free_bytes = Some(free);
        fault.free_inodes = Some(inodes);
    }
}

/// 1.5 MB, 320 KB, 12 bytes.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / 1e9),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1 << 10 => format!("{:.0} KB", n as f64 / 1e3),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_error_is_this_machines_and_a_missing_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.fits");
        let ro = std::io::Error::from_raw_os_error(libc::EROFS);
        let f = fault_of(&path, &ro).unwrap();
        assert_eq!(f.errno, libc::EROFS);
        assert_eq!(f.error, "Read-only file system");
        assert!(
            f.message().contains("make the file system writable"),
            "{}",
            f.message()
        );
        assert!(f.message().contains(&path.display().to_string()));
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert!(fault_of(&path, &missing).is_none());
    }

    #[test]
    fn preflight_weighs_the_bytes_against_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let pair = |n: &str| Pair {
            src: format!("/remote/{n}"),
            dst: dir.path().join("out").join(n).display().to_string(),
        };
        let pairs = vec![pair("a"), pair("b")];
        assert!(preflight(&pairs, &[10, 10], &[false, false]).is_none());
        let f = preflight(&pairs, &[u64::MAX / 4, u64::MAX / 4], &[false, false]).unwrap();
        assert_eq!(f.errno, libc::ENOSPC);
        assert!(f.needed_bytes.unwrap() > f.free_bytes.unwrap());
        assert!(f.message().contains("is free"), "{}", f.message());
        // What is complete already needs no room.
        assert!(preflight(&pairs, &[u64::MAX / 4, 10], &[true, false]).is_none());
    }
}
