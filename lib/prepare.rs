//! `prepare`: turns a `new` run into everything the remote side needs, with
//! no network: file lists with local and remote paths, every component's
//! pre/command/post, the multi-prog config, the batch script and the
//! allocation. State `new -> pending`.
//!
//! The run's folder is written aside and renamed into place, so a folder
//! named `run-N` is always complete; a failure leaves the run `new` with a
//! fault and a message.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::alloc::{self, Allocation, Limits};
use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::db::models::{ComponentItem, Run};
use crate::db::Db;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::recipe::{Recipe, RenderError, Values, BUILTINS};
use crate::runs::{self, Actor, Extra, OnFailure, Work};
use crate::scripts;
use crate::state::{fault, RunState};
use crate::target::{bad_path_char, Target};

const TOOL: &str = "prepare";

#[derive(Debug, Parser)]
#[command(
    name = "prepare",
    version,
    about = "Prepare a new run: file lists, component scripts, multi-prog config, batch script, allocation",
    after_help = "Exit status: 0 prepared, 1 error, 2 bad input (the run stays new with a fault), \
                  3 nothing to prepare, 4 try later (paused, run held by another process)."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub which: runs::Which,
    /// Folder of stage recipes [default: `recipes` of the configuration,
    /// else ~/.config/offload/recipes]
    #[arg(long, value_name = "DIR")]
    pub recipes: Option<PathBuf>,
    /// With --next: only runs of this target
    #[arg(long, value_name = "T", requires = "next")]
    pub target: Option<String>,
}

/// One input file of a run: each file once, however many components read it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    pub local: String,
    pub remote: String,
    pub size: u64,
}

/// A component as a recipe needs it.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    pub component_id: i64,
    pub work_item_id: i64,
    pub stage: String,
    pub stage_id: i64,
    pub label: String,
    pub params: Map<String, Value>,
}

impl ComponentSpec {
    fn from_row(c: ComponentItem) -> anyhow::Result<ComponentSpec> {
        let params: Map<String, Value> = serde_json::from_str(&c.params).with_context(|| {
            format!(
                "work item {}/{} has params that are not a JSON object",
                c.stage, c.stage_id
            )
        })?;
        Ok(ComponentSpec {
            component_id: c.component_id,
            work_item_id: c.work_item_id,
            stage: c.stage,
            stage_id: c.stage_id,
            label: c.label,
            params,
        })
    }

    fn name(&self) -> String {
        format!(
            "work item {}/{} (component {})",
            self.stage, self.stage_id, self.component_id
        )
    }
}

/// What prepare works from.
pub struct Job<'a> {
    pub remote_id: i64,
    pub attempt: i32,
    pub stage: &'a str,
    pub label: &'a str,
    pub recipe: &'a Recipe,
    pub target: &'a Target,
    /// Seconds per command used for sizing, and where it came from.
    pub time_cost: f64,
    pub time_cost_source: String,
}

/// Everything to be written, computed in memory.
pub struct Plan {
    pub inputs: Vec<InputFile>,
    /// Remote paths of the inputs that live at the site (each once).
    pub remote_inputs: Vec<String>,
    /// (remote path, local path, component id, kind: `out:NAME` for the
    /// recipe's output NAME, `log` for the component's kept log)
    pub outputs: Vec<(String, String, i64, String)>,
    pub mkdirs: Vec<String>,
    pub lines: Vec<String>,
    pub costs: Vec<f64>,
    pub ranks: Vec<Vec<usize>>,
    pub alloc: Allocation,
    pub multiprog: Vec<String>,
    pub job_script: String,
    /// Whether the job starts its ranks with `tasks/launch.sh`.
    pub launcher: bool,
    pub remote_run: String,
}

struct Rendered {
    line: String,
    cost: f64,
    inputs: Vec<(String, String)>,
    /// (remote, local, kind: `out:NAME` or `log`)
    outputs: Vec<(String, String, String)>,
    /// Remote paths of its remote-resident inputs.
    remote_inputs: Vec<String>,
    /// Remote paths of its outputs kept at the site.
    kept: Vec<String>,
}

struct ComponentValues<'a> {
    job: &'a Job<'a>,
    c: &'a ComponentSpec,
    remote_run: &'a str,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// List inputs' remote paths, by input index.
    input_lists: HashMap<usize, Vec<String>>,
}

impl Values for ComponentValues<'_> {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        let builtin = match name {
            "STAGE" => Some(Cow::Borrowed(self.c.stage.as_str())),
            "STAGE_ID" => Some(Cow::Owned(self.c.stage_id.to_string())),
            "LABEL" => Some(Cow::Borrowed(self.c.label.as_str())),
            "REMOTE_ID" => Some(Cow::Owned(self.job.remote_id.to_string())),
            "COMPONENT_ID" => Some(Cow::Owned(self.c.component_id.to_string())),
            "THREADS" => Some(Cow::Owned(self.job.recipe.threads.to_string())),
            "RUN_DIR" => Some(Cow::Borrowed(self.remote_run)),
            _ => None,
        };
        if builtin.is_some() {
            return builtin;
        }
        match self.c.params.get(name) {
            Some(Value::String(s)) => return Some(Cow::Borrowed(s.as_str())),
            Some(Value::Number(n)) => return Some(Cow::Owned(n.to_string())),
            Some(Value::Bool(b)) => return Some(Cow::Owned(b.to_string())),
            Some(Value::Array(_)) => return None,
            _ => {}
        }
        self.job
            .target
            .config
            .vars
            .get(name)
            .map(|s| Cow::Borrowed(s.as_str()))
    }
    fn input(&self, idx: usize) -> &str {
        &self.inputs[idx]
    }
    fn output(&self, idx: usize) -> &str {
        &self.outputs[idx]
    }
    fn is_list(&self, name: &str) -> bool {
        matches!(self.c.params.get(name), Some(Value::Array(_)))
    }
    fn input_list(&self, idx: usize) -> Option<&[String]> {
        self.input_lists.get(&idx).map(Vec::as_slice)
    }
}

/// A list input: an input whose template is exactly one param whose value
/// is a list of strings; its paths as the pipeline writes them.
fn list_input<'c>(c: &'c ComponentSpec, t: &crate::recipe::Template) -> Option<Vec<&'c str>> {
    match c.params.get(t.sole_var()?) {
        Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn render_error(job: &Job<'_>, c: &ComponentSpec, e: RenderError) -> anyhow::Error {
    let mut known: Vec<&str> = c.params.keys().map(String::as_str).collect();
    known.extend(BUILTINS);
    known.extend(job.target.config.vars.keys().map(String::as_str));
    exit::usage(format!(
        "recipe {}: placeholder @{}@ {} for {} (known: {})",
        e.origin,
        e.placeholder,
        e.problem,
        c.name(),
        known.join(", ")
    ))
}

fn translate_path(
    job: &Job<'_>,
    c: &ComponentSpec,
    what: &str,
    path: &str,
) -> anyhow::Result<(String, String)> {
    if let Some(ch) = bad_path_char(path) {
        return Err(exit::usage(format!(
            "{} {what} {path:?} holds {ch}; offload's file lists are one path per line: rename the file",
            c.name()
        )));
    }
    if path.is_empty() {
        return Err(exit::usage(format!("{} {what} is an empty path", c.name())));
    }
    match job.target.translate(path) {
        Some((local, remote)) => Ok((local.into_owned(), remote)),
        None => Err(exit::usage(format!(
            "{} {what} {path:?} matches no path rule of target '{}': add a [[targets.{}.paths]] rule for it",
            c.name(),
            job.target.name,
            job.target.name
        ))),
    }
}

/// A path at the remote site only: a storage URL through the target's
/// path rules (their remote side), or a remote absolute path as it is.
fn remote_path(job: &Job<'_>, c: &ComponentSpec, what: &str, path: &str) -> anyhow::Result<String> {
    if let Some(ch) = bad_path_char(path) {
        return Err(exit::usage(format!(
            "{} {what} {path:?} holds {ch}; offload's file lists are one path per line: rename the file",
            c.name()
        )));
    }
    match job.target.translate(path) {
        Some((_, remote)) => Ok(remote),
        None if path.starts_with('/') => Ok(path.to_string()),
        None => Err(exit::usage(format!(
            "{} {what} {path:?} matches no path rule of target '{}' and is no absolute path at the site: add a [[targets.{}.paths]] rule for it",
            c.name(),
            job.target.name,
            job.target.name
        ))),
    }
}

fn render_component(
    job: &Job<'_>,
    c: &ComponentSpec,
    remote_run: &str,
) -> anyhow::Result<Rendered> {
    let r = job.recipe;
    let mut v = ComponentValues {
        job,
        c,
        remote_run,
        inputs: Vec::new(),
        outputs: Vec::new(),
        input_lists: HashMap::new(),
    };
    let mut inputs = Vec::with_capacity(r.inputs.len());
    let mut remote_inputs = Vec::new();
    for (i, (name, t)) in r.input_names.iter().zip(&r.inputs).enumerate() {
        if let Some(paths) = list_input(c, t).filter(|_| i < r.local_inputs) {
            let mut remotes = Vec::with_capacity(paths.len());
            for (j, path) in paths.into_iter().enumerate() {
                let (local, remote) = translate_path(job, c, &format!("input {name}[{j}]"), path)?;
                remotes.push(remote.clone());
                inputs.push((local, remote));
            }
            v.input_lists.insert(v.inputs.len(), remotes);
            v.inputs.push(String::new());
            continue;
        }
        let path = t.render(&v, false).map_err(|e| render_error(job, c, e))?;
        if i < r.local_inputs {
            let (local, remote) = translate_path(job, c, &format!("input {name}"), &path)?;
            v.inputs.push(remote.clone());
            inputs.push((local, remote));
        } else {
            let remote = remote_path(job, c, &format!("remote input {name}"), &path)?;
            v.inputs.push(remote.clone());
            remote_inputs.push(remote);
        }
    }
    let mut outputs = Vec::with_capacity(r.outputs.len());
    let mut kept = Vec::new();
    for (i, (name, t)) in r.output_names.iter().zip(&r.outputs).enumerate() {
        let path = t.render(&v, false).map_err(|e| render_error(job, c, e))?;
        if i < r.local_outputs {
            let (local, remote) = translate_path(job, c, &format!("output {name}"), &path)?;
            v.outputs.push(remote.clone());
            outputs.push((remote, local, format!("out:{name}")));
        } else {
            let remote = remote_path(job, c, &format!("remote output {name}"), &path)?;
            v.outputs.push(remote.clone());
            kept.push(remote);
        }
    }
    let mut log = String::new();
    if let Some(t) = &r.log {
        let path = t.render(&v, false).map_err(|e| render_error(job, c, e))?;
        let (local, remote) = translate_path(job, c, "log", &path)?;
        log = remote.clone();
        outputs.push((remote, local, "log".to_string()));
    }
    let phase = |t: Option<&crate::recipe::Template>, what: &str| -> anyhow::Result<String> {
        let Some(t) = t else { return Ok(String::new()) };
        let s = t.render(&v, true).map_err(|e| render_error(job, c, e))?;
        let max = job.target.config.max_command_bytes;
        if s.len() > max {
            return Err(exit::usage(format!(
                "{}: its {what} is {} bytes, over the limit of {max} (max_command_bytes of target '{}'); \
                 shorten the recipe's {what} (recipe {})",
                c.name(),
                s.len(),
                job.target.name,
                t.origin
            )));
        }
        Ok(s)
    };
    let pre = phase(r.pre.as_ref(), "pre")?;
    let command = phase(Some(&r.command), "command")?;
    let post = phase(r.post.as_ref(), "post")?;
    let cost = match &r.cost_param {
        Some(p) => match c.params.get(p).and_then(Value::as_f64) {
            Some(x) if x.is_finite() && x > 0.0 => x,
            _ => job.time_cost,
        },
        None => job.time_cost,
    };
    Ok(Rendered {
        line: scripts::component_line(c.component_id, &pre, &command, &post, &log, &v.outputs),
        cost,
        inputs,
        outputs,
        remote_inputs,
        kept,
    })
}

/// An output of component `i`: no other component may write it, and its
/// folder is made before any component runs.
fn place_output(
    job: &Job<'_>,
    comps: &[ComponentSpec],
    i: usize,
    remote: &str,
    output_map: &mut HashMap<String, usize>,
    mkdirs: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    if let Some(first) = output_map.insert(remote.to_string(), i) {
        return Err(exit::usage(format!(
            "{} and {} both write {remote:?}: outputs must differ per component (recipe {})",
            comps[first].name(),
            comps[i].name(),
            job.recipe.path.display()
        )));
    }
    if let Some((dir, _)) = remote.rsplit_once('/') {
        if !dir.is_empty() {
            mkdirs.insert(dir.to_string());
        }
    }
    Ok(())
}

/// Compute everything a run needs. Reads the local input files' sizes;
/// writes nothing.
pub fn plan(
    job: &Job<'_>,
    comps: &[ComponentSpec],
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Plan> {
    if comps.is_empty() {
        return Err(exit::usage(format!(
            "run {} has no active components",
            job.remote_id
        )));
    }
    let remote_run = job.target.remote_run_dir(job.remote_id);
    let rendered: Vec<anyhow::Result<Rendered>> = comps
        .par_iter()
        .map(|c| {
            let r = render_component(job, c, &remote_run);
            progress.inc(1);
            r
        })
        .collect();
    let mut lines = Vec::with_capacity(comps.len());
    let mut costs = Vec::with_capacity(comps.len());
    // remote path -> (local path, first component index)
    let mut input_map: HashMap<String, (String, usize)> = HashMap::new();
    let mut output_map: HashMap<String, usize> = HashMap::new();
    let mut outputs = Vec::new();
    let mut mkdirs = BTreeSet::new();
    let mut remote_inputs = BTreeSet::new();
    for (i, r) in rendered.into_iter().enumerate() {
        let r = r?;
        remote_inputs.extend(r.remote_inputs);
        for remote in &r.kept {
            place_output(job, comps, i, remote, &mut output_map, &mut mkdirs)?;
        }
        for (local, remote) in r.inputs {
            match input_map.get(&remote) {
                Some((l, first)) if *l != local => {
                    return Err(exit::usage(format!(
                        "remote path {remote:?} would receive two different local files: {l:?} ({}) and {local:?} ({}); fix the path rules of target '{}'",
                        comps[*first].name(),
                        comps[i].name(),
                        job.target.name
                    )))
                }
                Some(_) => {}
                None => {
                    input_map.insert(remote, (local, i));
                }
            }
        }
        for (remote, local, kind) in r.outputs {
            place_output(job, comps, i, &remote, &mut output_map, &mut mkdirs)?;
            outputs.push((remote, local, comps[i].component_id, kind));
        }
        lines.push(r.line);
        costs.push(r.cost);
    }
    let mut inputs: Vec<(String, String, usize)> = input_map
        .into_iter()
        .map(|(remote, (local, first))| (local, remote, first))
        .collect();
    inputs.sort_by(|a, b| a.1.cmp(&b.1));
    let inputs: Vec<InputFile> = inputs
        .par_iter()
        .map(|(local, remote, first)| match std::fs::metadata(local) {
            Ok(m) if m.is_file() => Ok(InputFile {
                local: local.clone(),
                remote: remote.clone(),
                size: m.len(),
            }),
            Ok(_) => Err(exit::usage(format!(
                "input {local:?} of {} is not a regular file",
                comps[*first].name()
            ))),
            Err(e) => Err(exit::usage(format!(
                "input {local:?} of {} cannot be read: {e}",
                comps[*first].name()
            ))),
        })
        .collect::<anyhow::Result<_>>()?;
    let c = &job.target.config;
    let limits = Limits {
        cores_per_node: c.cores_per_node,
        fill_factor: c.fill_factor,
        max_nodes: c.max_nodes,
        max_walltime_hours: c.max_walltime_hours,
    };
    let alloc =
        alloc::size(comps.len(), job.recipe.threads, job.time_cost, &limits).map_err(|e| {
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
    Ok(Plan {
        inputs,
        remote_inputs: remote_inputs.into_iter().collect(),
        outputs,
        mkdirs: mkdirs.into_iter().collect(),
        lines,
        costs,
        ranks,
        alloc,
        multiprog,
        job_script,
        launcher,
        remote_run,
    })
}

/// What prepare reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub remote_id: i64,
    pub dir: String,
    pub remote_dir: String,
    pub components: usize,
    pub files: usize,
    pub bytes: u64,
    pub outputs: usize,
    pub folders: usize,
    pub ranks: u32,
    pub configs: usize,
    pub nodes: u32,
    pub walltime: String,
    pub time_cost: f64,
    pub time_cost_source: String,
}

struct Writer {
    root: PathBuf,
    manifest: Vec<(String, String)>,
}

impl Writer {
    fn file(&mut self, rel: &str, content: &[u8]) -> anyhow::Result<()> {
        let digest = write_file(&self.root, rel, content)?;
        self.manifest.push((rel.to_string(), digest));
        Ok(())
    }
}

fn write_file(root: &Path, rel: &str, content: &[u8]) -> anyhow::Result<String> {
    let path = root.join(rel);
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?,
    );
    f.write_all(content)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(content)))
}

/// Write the plan into `dir` (the run's folder): aside first, then renamed
/// into place, replacing an earlier preparation.
pub fn write(
    plan: &Plan,
    job: &Job<'_>,
    comps: &[ComponentSpec],
    dir: &Path,
) -> anyhow::Result<()> {
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
        std::fs::create_dir(root.join(sub))?;
    }
    let mut w = Writer {
        root: root.clone(),
        manifest: Vec::new(),
    };

    let mut text = String::new();
    for f in &plan.inputs {
        text.push_str(&format!("{}\t{}\t{}\n", f.local, f.remote, f.size));
    }
    w.file("inputs.list", text.as_bytes())?;
    if !plan.remote_inputs.is_empty() {
        let mut text = String::new();
        for r in &plan.remote_inputs {
            text.push_str(r);
            text.push('\n');
        }
        w.file("remote-inputs.list", text.as_bytes())?;
    }
    let mut text = String::new();
    for (remote, local, cid, kind) in &plan.outputs {
        text.push_str(&format!("{remote}\t{local}\t{cid}\t{kind}\n"));
    }
    w.file("outputs.list", text.as_bytes())?;
    let mut text = String::new();
    for d in &plan.mkdirs {
        text.push_str(d);
        text.push('\n');
    }
    w.file("mkdirs.list", text.as_bytes())?;

    let mut rank_of = vec![0usize; comps.len()];
    for (r, members) in plan.ranks.iter().enumerate() {
        for &i in members {
            rank_of[i] = r;
        }
    }
    let mut text = String::with_capacity(comps.len() * 40);
    for (i, c) in comps.iter().enumerate() {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            c.component_id, c.work_item_id, c.stage_id, rank_of[i], plan.costs[i]
        ));
    }
    w.file("components.tsv", text.as_bytes())?;

    w.file("tasks/run.sh", scripts::RUNNER.as_bytes())?;
    if plan.launcher {
        w.file("tasks/launch.sh", scripts::LAUNCHER.as_bytes())?;
    }
    let rank_files: Vec<(String, String)> = plan
        .ranks
        .par_iter()
        .enumerate()
        .map(|(r, members)| {
            let mut text = format!(
                "# offload run {}, rank {r}: {} components\n",
                job.remote_id,
                members.len()
            );
            for &i in members {
                text.push_str(&plan.lines[i]);
            }
            let rel = format!("tasks/rank-{r}.sh");
            write_file(&root, &rel, text.as_bytes()).map(|d| (rel, d))
        })
        .collect::<anyhow::Result<_>>()?;
    w.manifest.extend(rank_files);
    for (i, conf) in plan.multiprog.iter().enumerate() {
        w.file(&format!("multiprog/step-{i}.conf"), conf.as_bytes())?;
    }
    w.file("job.sh", plan.job_script.as_bytes())?;
    let info = serde_json::json!({
        "remote_id": job.remote_id,
        "stage": job.stage,
        "label": job.label,
        "target": job.target.name,
        "attempt": job.attempt,
        "remote_dir": plan.remote_run,
        "components": comps.len(),
        "inputs": plan.inputs.len(),
        "input_bytes": plan.inputs.iter().map(|f| f.size).sum::<u64>(),
        "outputs": plan.outputs.len(),
        "folders": plan.mkdirs.len(),
        "time_cost_source": job.time_cost_source,
        "allocation": plan.alloc,
        "walltime": plan.alloc.walltime(),
    });
    w.file("run.json", serde_json::to_string_pretty(&info)?.as_bytes())?;
    let mut manifest = std::mem::take(&mut w.manifest);
    manifest.sort();
    let text: String = manifest
        .iter()
        .map(|(rel, d)| format!("{d}  {rel}\n"))
        .collect();
    write_file(&root, "MANIFEST.sha256", text.as_bytes())?;

    // Into place: the new folder replaces any earlier one.
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

/// Prepare one run already claimed. Errors leave the database as it was.
pub fn prepare_run(
    db: &mut Db,
    cfg: &Config,
    run: &Run,
    recipes: &Path,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<Summary> {
    let state: RunState = runs::run_state(run)?;
    if !matches!(state, RunState::New | RunState::Pending) {
        return Err(exit::usage(format!(
            "run {} is '{state}': only new runs (or pending ones, again) can be prepared",
            run.remote_id
        )));
    }
    let target = cfg.run_target(run.target.as_deref(), run.remote_id)?;
    let recipe = Recipe::load_for_stage(recipes, &run.stage)?;
    let rows = db.read(|s| s.run_components(run.remote_id))?;
    let comps: Vec<ComponentSpec> = rows
        .into_iter()
        .map(ComponentSpec::from_row)
        .collect::<anyhow::Result<_>>()?;
    let mut samples = db.read(|s| s.stage_runtimes(&run.stage, 10_000))?;
    let (mut time_cost, mut source) = if samples.len() as i64 >= recipe.min_samples {
        let p = alloc::percentile(&mut samples, recipe.percentile).expect("samples");
        (
            p.max(1.0),
            format!(
                "p{} of {} measured runtimes",
                recipe.percentile,
                samples.len()
            ),
        )
    } else {
        (
            recipe.time_cost,
            format!("recipe {}", recipe.path.display()),
        )
    };
    // A run prepared again after its job was cut short: what did not come
    // back takes at least as long as the longest that did.
    let own = db.read(|s| s.run_runtimes(run.remote_id))?;
    if let Some(longest) = own.iter().copied().reduce(f64::max) {
        if longest > time_cost {
            time_cost = longest;
            source = format!(
                "the longest of {} runtimes measured in this run's earlier attempts",
                own.len()
            );
        }
    }
    let job = Job {
        remote_id: run.remote_id,
        attempt: run.attempt,
        stage: &run.stage,
        label: &run.label,
        recipe: &recipe,
        target: &target,
        time_cost,
        time_cost_source: source.clone(),
    };
    let dir = runs::local_run_dir(run, &target)?;
    printer.debug(format!(
        "run {}: recipe {}, target '{}', time cost {time_cost} s ({source}), folder {}",
        run.remote_id,
        recipe.path.display(),
        target.name,
        dir.display()
    ));
    let bar = printer.progress(comps.len() as u64, "prepare");
    let plan = plan(&job, &comps, &bar)?;
    bar.finish_and_clear();
    write(&plan, &job, &comps, &dir)?;
    let summary = Summary {
        remote_id: run.remote_id,
        dir: dir.display().to_string(),
        remote_dir: plan.remote_run.clone(),
        components: comps.len(),
        files: plan.inputs.len(),
        bytes: plan.inputs.iter().map(|f| f.size).sum(),
        outputs: plan.outputs.len(),
        folders: plan.mkdirs.len(),
        ranks: plan.alloc.ranks,
        configs: plan.multiprog.len(),
        nodes: plan.alloc.nodes,
        walltime: plan.alloc.walltime(),
        time_cost,
        time_cost_source: source,
    };
    let message = format!(
        "prepared {} components, {} input files, {} ranks on {} nodes x {} in {}",
        summary.components,
        summary.files,
        summary.ranks,
        summary.nodes,
        summary.walltime,
        summary.dir
    );
    db.tx(|s| {
        let now = runs::get_run(s, run.remote_id)?;
        let extra = Extra { fault: Some(0), message: Some(None), ..Extra::default() };
        match runs::run_state(&now)? {
            RunState::New => runs::transition_in(s, &now, RunState::Pending, actor, &message, extra),
            RunState::Pending => {
                s.insert_history(&actor.history(Some(run.remote_id), None, None, format!("again: {message}")))?;
                Ok(())
            }
            other => Err(exit::try_later(format!(
                "run {} went to '{other}' while it was being prepared; its files in {} are ready but it was not marked pending",
                run.remote_id, summary.dir
            ))),
        }
    })?;
    Ok(summary)
}

pub fn run(args: Args) -> anyhow::Result<ExitStatus> {
    let g = &args.global;
    // Registered as at work until the session is dropped.
    let mut session = crate::cli::Session::open_worker(TOOL, g)?;
    let recipes = session.config.recipes_dir(args.recipes.as_deref());
    let work = Work {
        which: &args.which,
        state: RunState::New,
        polled_before: None,
        target: args.target.as_deref(),
        // No network: every target's runs can be prepared.
        reach: None,
        none: "no new runs to prepare",
        // A pending run prepared again keeps its earlier files and no fault.
        on_failure: Some(OnFailure {
            fault: fault::PREPARE,
            what: "prepare failed",
            when: |run, _| run.state == RunState::New.as_str(),
        }),
    };
    let summary = session.work_on(work, |db, cfg, printer, actor, run| {
        prepare_run(db, cfg, run, &recipes, printer, actor)
    })?;
    let printer = &session.printer;
    printer.info(format!(
        "run {}: {} components, {} input files ({} bytes), {} ranks on {} nodes x {} -> {}",
        summary.remote_id,
        summary.components,
        summary.files,
        summary.bytes,
        summary.ranks,
        summary.nodes,
        summary.walltime,
        summary.dir
    ));
    if g.json {
        printer.json(&summary)?;
    } else {
        printer.data(summary.remote_id.to_string())?;
    }
    Ok(ExitStatus::Success)
}
