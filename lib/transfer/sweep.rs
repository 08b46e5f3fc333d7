//! What killed transfers leave behind: staging names (a bundle's
//! `.offload-part.SESSION-ID/` folder, a chunked file's
//! `NAME.offload-part.SESSION`, a pulled file's `NAME.offload-part`) that
//! no rename ever took into place. Before a transfer writes into a folder,
//! those older than the limit are removed: on the far side by the agent
//! (`W`), for a push's destination folders; here, for a pull's.
//!
//! The rule: a staging name is taken for a dead transfer's when it has not
//! been modified for longer than the limit. A live transfer's staging is
//! modified as it is written (a bundle's folder as each of its files lands
//! in it, a chunked file at each chunk) and lasts no longer than one bundle
//! or one file, so a limit well above a bundle's time (the default is
//! 24 hours) never takes a live transfer's. This transfer's own session is
//! never swept whatever its age.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;

use super::channel::Channel;
use super::PART;

/// At most this many removed paths are kept for the report.
pub const SWEPT_PATHS: usize = 20;

/// Whether a file name is a staging name: `.offload-part.*`,
/// `*.offload-part` or `*.offload-part.*`.
pub fn is_staging_name(name: &str) -> bool {
    name.ends_with(PART) || name.contains(".offload-part.")
}

/// What a sweep removed: how many, and the first few paths.
#[derive(Debug, Clone, Default)]
pub(super) struct Swept {
    pub(super) count: usize,
    pub(super) paths: Vec<String>,
}

impl Swept {
    fn add(&mut self, path: String) {
        self.count += 1;
        if self.paths.len() < SWEPT_PATHS {
            self.paths.push(path);
        }
    }
}

/// Ask the agent to sweep `folders` (those that exist) of staging names
/// older than `older_than`, other than its own session's.
pub(super) fn remote(
    ch: &mut Channel,
    folders: &[&str],
    older_than: Duration,
) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    for chunk in folders.chunks(20_000) {
        let mut body = Vec::new();
        for f in chunk {
            body.extend_from_slice(f.as_bytes());
            body.push(0);
        }
        ch.send(format!("W 0 {} {}\n", body.len(), older_than.as_secs().max(1)).as_bytes())?;
        ch.send(&body)?;
        ch.flush()?;
        let head = ch.line()?;
        let n: usize = head
            .strip_prefix("L 0 ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("unexpected answer to a sweep {head:?}"))?;
        let removed = ch.exact(n)?;
        for p in removed.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            swept.add(String::from_utf8_lossy(p).into_owned());
        }
    }
    Ok(swept)
}

/// Sweep `folders` here (only their own entries, not below).
pub(super) fn local_folders(folders: &[&str], older_than: Duration) -> Swept {
    let mut swept = Swept::default();
    let Some(cutoff) = SystemTime::now().checked_sub(older_than) else {
        return swept;
    };
    for f in folders {
        let Ok(rd) = std::fs::read_dir(f) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            if is_staging_name(&e.file_name().to_string_lossy()) && remove_if_old(&e.path(), cutoff)
            {
                swept.add(e.path().display().to_string());
            }
        }
    }
    swept
}

/// Sweep everything under `root` here (as `remotetool clean --staging`
/// does): the staging names older than `older_than`, every one removed
/// whole; the paths removed.
pub fn local_tree(root: &Path, older_than: Duration) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cutoff) = SystemTime::now().checked_sub(older_than) {
        walk(root, cutoff, &mut out);
    }
    out
}

fn walk(dir: &Path, cutoff: SystemTime, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let path = e.path();
        if is_staging_name(&e.file_name().to_string_lossy()) {
            // A staging folder is removed whole or kept whole.
            if remove_if_old(&path, cutoff) {
                out.push(path.display().to_string());
            }
        } else if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, cutoff, out);
        }
    }
}

/// Remove a staging name (a folder with what is in it) when it was last
/// modified before `cutoff`; whether it was removed.
fn remove_if_old(path: &Path, cutoff: SystemTime) -> bool {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !m.modified().is_ok_and(|t| t < cutoff) {
        return false;
    }
    if m.is_dir() {
        std::fs::remove_dir_all(path).is_ok()
    } else {
        std::fs::remove_file(path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_staging_names_are_swept() {
        for n in [
            ".offload-part.1a2b-3",
            "x.fits.offload-part",
            "x.fits.offload-part.1a2b",
        ] {
            assert!(is_staging_name(n), "{n}");
        }
        for n in [
            "x.fits",
            "offload-part",
            ".offload-partial",
            "x.offload-parts",
        ] {
            assert!(!is_staging_name(n), "{n}");
        }
    }

    #[test]
    fn old_staging_goes_fresh_and_complete_stay() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        std::fs::create_dir_all(p("old/.offload-part.ab-1")).unwrap();
        std::fs::write(p("old/.offload-part.ab-1/x"), b"x").unwrap();
        std::fs::write(p("old/y.offload-part"), b"y").unwrap();
        std::fs::write(p("old/y"), b"y").unwrap();
        std::fs::write(p("old/deep.offload-part.ab"), b"z").unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        for n in [
            "old/.offload-part.ab-1",
            "old/y.offload-part",
            "old/y",
            "old/deep.offload-part.ab",
        ] {
            std::fs::File::options()
                .write(true)
                .open(p(n))
                .or_else(|_| std::fs::File::open(p(n)))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        std::fs::write(p("old/fresh.offload-part"), b"f").unwrap();
        let s = local_folders(&[p("old").to_str().unwrap()], Duration::from_secs(3600));
        assert_eq!(s.count, 3, "{:?}", s.paths);
        assert!(p("old/y").exists() && p("old/fresh.offload-part").exists());
        assert!(!p("old/.offload-part.ab-1").exists());
        // Off: nothing older than forever.
        std::fs::create_dir_all(p("a/b/.offload-part.cd-2")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(local_tree(d.path(), Duration::from_secs(3600)).is_empty());
        assert_eq!(local_tree(d.path(), Duration::ZERO).len(), 2);
    }
}
