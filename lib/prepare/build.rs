//! A run's folder built in one pass over its components, in bounded
//! memory: components arrive in pages and are rendered in parallel; their
//! rank-file lines wait in an unlinked spill file until the allocation is
//! known; outputs are told apart by 16-byte keys. What stays in memory per
//! component is its ids, its cost and where its line lies in the spill.
//!
//! The folder is written aside and renamed into place, so a folder named
//! `run-N` is always complete.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::render::{component_name, render_component, ComponentSpec, InputFile, Job, Rendered};
use crate::alloc::{self, Allocation, Limits};
use crate::exit;
use crate::scripts;

/// What a build wrote, for the report.
#[derive(Debug, Clone)]
pub struct Built {
    pub components: usize,
    pub inputs: usize,
    pub input_bytes: u64,
    pub outputs: usize,
    pub folders: usize,
    pub alloc: Allocation,
    pub configs: usize,
    pub remote_run: String,
}

/// Hashes a path's key (already the start of a SHA-256) by taking it.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Paths known by their keys.
type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;

/// A component as the build keeps it once rendered.
struct Kept {
    component_id: i64,
    work_item_id: i64,
    stage_id: i64,
    /// Index into the build's stage names.
    stage: u32,
}

/// A file of the run's folder written as it is hashed.
struct Hashed {
    rel: String,
    path: PathBuf,
    out: BufWriter<File>,
    hash: Sha256,
}

impl Hashed {
    fn create(root: &Path, rel: &str) -> anyhow::Result<Hashed> {
        let path = root.join(rel);
        let f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Hashed {
            rel: rel.to_string(),
            path,
            out: BufWriter::with_capacity(1 << 16, f),
            hash: Sha256::new(),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.hash.update(bytes);
        self.out
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// (relative path, hex digest)
    fn finish(mut self) -> anyhow::Result<(String, String)> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok((self.rel, format!("{:x}", self.hash.finalize())))
    }
}

fn whole(root: &Path, rel: &str, content: &[u8]) -> anyhow::Result<(String, String)> {
    let mut f = Hashed::create(root, rel)?;
    f.put(content)?;
    f.finish()
}

/// Everything learnt from the components as they stream past.
struct Merge<'j> {
    job: &'j Job<'j>,
    kept: Vec<Kept>,
    stages: Vec<String>,
    costs: Vec<f64>,
    /// End offset of each component's line in the spill.
    ends: Vec<u64>,
    spill: BufWriter<File>,
    /// Each input once: (local path, remote path, first component index),
    inputs: Vec<(String, String, u32)>,
    /// by the key of its remote path.
    input_index: KeyMap<u32>,
    /// key of remote path -> component index
    outputs_seen: KeyMap<u32>,
    outputs: usize,
    outputs_list: Hashed,
    mkdirs: BTreeSet<String>,
    remote_inputs: BTreeSet<String>,
}

/// Component `i` in an error message.
fn name_of(kept: &[Kept], stages: &[String], i: u32) -> String {
    let k = &kept[i as usize];
    component_name(&stages[k.stage as usize], k.stage_id, k.component_id)
}

impl Merge<'_> {
    fn name(&self, i: u32) -> String {
        name_of(&self.kept, &self.stages, i)
    }

    /// An output of component `i`: no other component may write it, and
    /// its folder is made before any component runs.
    fn place(&mut self, i: u32, remote: &str, key: u128) -> anyhow::Result<()> {
        if let Some(&first) = self.outputs_seen.get(&key) {
            return Err(exit::usage(format!(
                "{} and {} both write {remote:?}: outputs must differ per component (recipe {})",
                self.name(first),
                self.name(i),
                self.job.recipe.path.display()
            )));
        }
        self.outputs_seen.insert(key, i);
        if let Some((dir, _)) = remote.rsplit_once('/') {
            if !dir.is_empty() && !self.mkdirs.contains(dir) {
                self.mkdirs.insert(dir.to_string());
            }
        }
        Ok(())
    }

    /// Take in the next component, in component order.
    fn add(&mut self, c: &ComponentSpec, r: anyhow::Result<Rendered>) -> anyhow::Result<()> {
        let i = u32::try_from(self.kept.len())
            .map_err(|_| exit::usage("a run holds at most 4,294,967,295 components"))?;
        let stage = match self.stages.iter().position(|s| *s == c.stage) {
            Some(s) => s,
            None => {
                self.stages.push(c.stage.clone());
                self.stages.len() - 1
            }
        };
        self.kept.push(Kept {
            component_id: c.component_id,
            work_item_id: c.work_item_id,
            stage_id: c.stage_id,
            stage: stage as u32,
        });
        let r = r?;
        self.remote_inputs.extend(r.remote_inputs);
        for (remote, key) in &r.kept {
            self.place(i, remote, *key)?;
        }
        for (local, remote, key) in r.inputs {
            match self.input_index.get(&key) {
                Some(&at) => {
                    let (l, r, first) = &self.inputs[at as usize];
                    anyhow::ensure!(
                        *r == remote,
                        "remote paths {r:?} and {remote:?} have the same key"
                    );
                    if *l != local {
                        return Err(exit::usage(format!(
                            "remote path {remote:?} would receive two different local files: {l:?} ({}) and {local:?} ({}); fix the path rules of target '{}'",
                            self.name(*first),
                            c.name(),
                            self.job.target.name
                        )));
                    }
                }
                None => {
                    self.input_index.insert(key, self.inputs.len() as u32);
                    self.inputs.push((local, remote, i));
                }
            }
        }
        for (remote, key) in &r.outputs {
            self.place(i, remote, *key)?;
            self.outputs += 1;
        }
        self.outputs_list.put(r.outputs_list.as_bytes())?;
        self.spill
            .write_all(r.line.as_bytes())
            .context("cannot write prepare's spill file")?;
        let end = self.ends.last().copied().unwrap_or(0) + r.line.len() as u64;
        self.ends.push(end);
        self.costs.push(r.cost);
        Ok(())
    }
}

/// Build the run's folder `dir` from its components, page by page:
/// `next` gives the next page in component order, an empty one at the end.
/// Reads the local input files' sizes. The folder replaces an earlier
/// preparation only once it is whole.
pub fn build(
    job: &Job<'_>,
    mut next: impl FnMut() -> anyhow::Result<Vec<ComponentSpec>> + Send,
    progress: &indicatif::ProgressBar,
    dir: &Path,
) -> anyhow::Result<Built> {
    let parent = dir.parent().context("run folder has no parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create path_base folder {}", parent.display()))?;
    let name = dir
        .file_name()
        .context("run folder has no name")?
        .to_string_lossy()
        .into_owned();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.new."))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    let root = tmp.path().to_path_buf();
    for sub in ["tasks", "multiprog"] {
        std::fs::create_dir(root.join(sub))
            .with_context(|| format!("cannot create {}", root.join(sub).display()))?;
    }
    let spill = tempfile::tempfile_in(&root)
        .with_context(|| format!("cannot create a spill file in {}", root.display()))?;
    let remote_run = job.target.remote_run_dir(job.remote_id);
    let mut m = Merge {
        job,
        kept: Vec::new(),
        stages: Vec::new(),
        costs: Vec::new(),
        ends: Vec::new(),
        spill: BufWriter::with_capacity(1 << 20, spill),
        inputs: Vec::new(),
        input_index: KeyMap::default(),
        outputs_seen: KeyMap::default(),
        outputs: 0,
        outputs_list: Hashed::create(&root, "outputs.list")?,
        mkdirs: BTreeSet::new(),
        remote_inputs: BTreeSet::new(),
    };
    // While one page is merged (in order, on one thread), the next is read
    // and rendered (in parallel on the others).
    let render = |page: &[ComponentSpec]| -> Vec<anyhow::Result<Rendered>> {
        page.par_iter()
            .map(|c| {
                let r = render_component(job, c, &remote_run);
                progress.inc(1);
                r
            })
            .collect()
    };
    let mut page = next()?;
    let mut rendered = render(&page);
    while !page.is_empty() {
        let (merged, ahead) = rayon::join(
            || -> anyhow::Result<()> {
                for (c, r) in page.iter().zip(rendered) {
                    m.add(c, r)?;
                }
                Ok(())
            },
            || -> anyhow::Result<_> {
                let page = next()?;
                let rendered = render(&page);
                Ok((page, rendered))
            },
        );
        merged?;
        (page, rendered) = ahead?;
    }
    if m.kept.is_empty() {
        return Err(exit::usage(format!(
            "run {} has no active components",
            job.remote_id
        )));
    }
    let Merge {
        kept,
        stages,
        costs,
        ends,
        spill,
        inputs,
        input_index,
        outputs_seen,
        outputs,
        outputs_list,
        mkdirs,
        remote_inputs,
        ..
    } = m;
    drop((input_index, outputs_seen));
    let spill = spill
        .into_inner()
        .map_err(|e| anyhow::Error::new(e.into_error()))
        .context("cannot write prepare's spill file")?;
    let mut manifest = vec![outputs_list.finish()?];

    let inputs = stat_inputs(&kept, &stages, inputs)?;
    let c = &job.target.config;
    let limits = Limits {
        cores_per_node: c.cores_per_node,
        fill_factor: c.fill_factor,
        max_nodes: c.max_nodes,
        max_walltime_hours: c.max_walltime_hours,
    };
    let alloc =
        alloc::size(kept.len(), job.recipe.threads, job.time_cost, &limits).map_err(|e| {
            exit::usage(format!(
                "run {}: allocation does not fit: {e}",
                job.remote_id
            ))
        })?;
    let ranks = alloc::spread(&costs, alloc.ranks as usize);
    let longest = ranks
        .iter()
        .map(|r| r.iter().map(|&i| costs[i]).sum::<f64>())
        .fold(0.0, f64::max);
    if longest > alloc.hours as f64 * 3600.0 {
        return Err(exit::usage(format!(
            "run {}: the busiest rank needs {longest:.0} s, more than the {} h requested; \
             some components' expected cost is too high for one allocation",
            job.remote_id, alloc.hours
        )));
    }
    let multiprog = scripts::multiprog(&remote_run, alloc.ranks, c.multiprog_max_bytes)
        .map_err(|e| exit::usage(format!("run {}: {e}", job.remote_id)))?;
    let launch = crate::scheduler::launch_for(job.target, alloc.nodes)
        .map_err(|e| exit::usage(format!("run {}: {}", job.remote_id, exit::one_line(&e))))?;
    let launcher = matches!(launch, scripts::Launch::Nodes { .. });
    let job_script = crate::scheduler::batch_script(
        job.target,
        &scripts::JobSpec {
            job_prefix: &c.job_prefix,
            remote_id: job.remote_id,
            attempt: job.attempt,
            stage: job.stage,
            label: job.label,
            remote_run: &remote_run,
            alloc: &alloc,
            partition: c.partition.as_deref(),
            account: c.account.as_deref(),
            parallel_environment: &c.parallel_environment,
            steps: multiprog.len(),
            launch,
            tail_bytes: c.log_tail_bytes,
        },
    );

    let mut f = Hashed::create(&root, "inputs.list")?;
    for i in &inputs {
        f.put(format!("{}\t{}\t{}\n", i.local, i.remote, i.size).as_bytes())?;
    }
    manifest.push(f.finish()?);
    if !remote_inputs.is_empty() {
        let mut f = Hashed::create(&root, "remote-inputs.list")?;
        for r in &remote_inputs {
            f.put(r.as_bytes())?;
            f.put(b"\n")?;
        }
        manifest.push(f.finish()?);
    }
    let mut f = Hashed::create(&root, "mkdirs.list")?;
    for d in &mkdirs {
        f.put(d.as_bytes())?;
        f.put(b"\n")?;
    }
    manifest.push(f.finish()?);

    let mut rank_of = vec![0u32; kept.len()];
    for (r, members) in ranks.iter().enumerate() {
        for &i in members {
            rank_of[i] = r as u32;
        }
    }
    let mut f = Hashed::create(&root, "components.tsv")?;
    for (i, k) in kept.iter().enumerate() {
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\n",
            k.component_id, k.work_item_id, k.stage_id, rank_of[i], costs[i]
        );
        f.put(line.as_bytes())?;
    }
    manifest.push(f.finish()?);
    drop(rank_of);

    manifest.push(whole(&root, "tasks/run.sh", scripts::RUNNER.as_bytes())?);
    if launcher {
        manifest.push(whole(
            &root,
            "tasks/launch.sh",
            scripts::LAUNCHER.as_bytes(),
        )?);
    }
    let rank_files: Vec<(String, String)> = ranks
        .par_iter()
        .enumerate()
        .map(|(r, members)| {
            let mut f = Hashed::create(&root, &format!("tasks/rank-{r}.sh"))?;
            let head = format!(
                "# offload run {}, rank {r}: {} components\n",
                job.remote_id,
                members.len()
            );
            f.put(head.as_bytes())?;
            let mut buf = Vec::new();
            for &i in members {
                let start = if i == 0 { 0 } else { ends[i - 1] };
                buf.resize((ends[i] - start) as usize, 0);
                spill
                    .read_exact_at(&mut buf, start)
                    .context("cannot read prepare's spill file")?;
                f.put(&buf)?;
            }
            f.finish()
        })
        .collect::<anyhow::Result<_>>()?;
    drop(spill);
    manifest.extend(rank_files);
    for (i, conf) in multiprog.iter().enumerate() {
        manifest.push(whole(
            &root,
            &format!("multiprog/step-{i}.conf"),
            conf.as_bytes(),
        )?);
    }
    manifest.push(whole(&root, "job.sh", job_script.as_bytes())?);
    let input_bytes = inputs.iter().map(|f| f.size).sum::<u64>();
    let info = serde_json::json!({
        "remote_id": job.remote_id,
        "stage": job.stage,
        "label": job.label,
        "target": job.target.name,
        "attempt": job.attempt,
        "remote_dir": remote_run,
        "components": kept.len(),
        "inputs": inputs.len(),
        "input_bytes": input_bytes,
        "outputs": outputs,
        "folders": mkdirs.len(),
        "time_cost_source": job.time_cost_source,
        "allocation": alloc,
        "walltime": alloc.walltime(),
    });
    manifest.push(whole(
        &root,
        "run.json",
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?);
    manifest.sort();
    let text: String = manifest
        .iter()
        .map(|(rel, d)| format!("{d}  {rel}\n"))
        .collect();
    whole(&root, "MANIFEST.sha256", text.as_bytes())?;

    into_place(tmp, parent, &name, dir)?;
    Ok(Built {
        components: kept.len(),
        inputs: inputs.len(),
        input_bytes,
        outputs,
        folders: mkdirs.len(),
        alloc,
        configs: multiprog.len(),
        remote_run,
    })
}

/// Each input file once, by remote path, with its size.
fn stat_inputs(
    kept: &[Kept],
    stages: &[String],
    mut inputs: Vec<(String, String, u32)>,
) -> anyhow::Result<Vec<InputFile>> {
    inputs.sort_by(|a, b| a.1.cmp(&b.1));
    let name = |first: u32| name_of(kept, stages, first);
    inputs
        .into_par_iter()
        .map(|(local, remote, first)| match std::fs::metadata(&local) {
            Ok(m) if m.is_file() => Ok(InputFile {
                size: m.len(),
                local,
                remote,
            }),
            Ok(_) => Err(exit::usage(format!(
                "input {local:?} of {} is not a regular file",
                name(first)
            ))),
            Err(e) => Err(exit::usage(format!(
                "input {local:?} of {} cannot be read: {e}",
                name(first)
            ))),
        })
        .collect()
}

/// The new folder replaces any earlier one.
fn into_place(tmp: tempfile::TempDir, parent: &Path, name: &str, dir: &Path) -> anyhow::Result<()> {
    let kept = tmp.keep();
    if dir.exists() {
        let old = parent.join(format!(".{name}.old.{}", std::process::id()));
        std::fs::rename(dir, &old)
            .with_context(|| format!("cannot move the earlier {} aside", dir.display()))?;
        std::fs::rename(&kept, dir)
            .with_context(|| format!("cannot rename into {}", dir.display()))?;
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
    } else {
        std::fs::rename(&kept, dir)
            .with_context(|| format!("cannot rename into {}", dir.display()))?;
    }
    Ok(())
}
