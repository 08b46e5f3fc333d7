//! Names the commit the tools are built from, for `--version`
//! (`OFFLOAD_COMMIT`): `git describe`'s abbreviated hash with "+dirty" for
//! uncommitted changes, the environment's OFFLOAD_COMMIT when set (a build
//! from a source archive), else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=OFFLOAD_COMMIT");
    let commit = std::env::var("OFFLOAD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            Some(if dirty { format!("{hash}+dirty") } else { hash })
        })
        .unwrap_or_else(|| "unknown".to_string());
    // A new commit or a checkout moves HEAD or the branch it names; the
    // index changes with every staged edit.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{r}");
        }
    }
    println!("cargo:rustc-env=OFFLOAD_COMMIT={commit}");
}
