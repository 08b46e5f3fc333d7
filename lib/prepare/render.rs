//! One component rendered from its recipe: its paths through the
//! target's path rules, its pre/command/post and its rank-file line.

use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::Context;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::db::models::ComponentItem;
use crate::exit;
use crate::recipe::{Recipe, RenderError, Values, BUILTINS};
use crate::scripts;
use crate::target::{bad_path_char, Target};

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
    pub(super) fn from_row(c: ComponentItem) -> anyhow::Result<ComponentSpec> {
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

    pub(super) fn name(&self) -> String {
        component_name(&self.stage, self.stage_id, self.component_id)
    }
}

/// A component as error messages name it.
pub(super) fn component_name(stage: &str, stage_id: i64, component_id: i64) -> String {
    format!("work item {stage}/{stage_id} (component {component_id})")
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

pub(super) struct Rendered {
    pub line: String,
    pub cost: f64,
    /// (local, remote, key of remote)
    pub inputs: Vec<(String, String, u128)>,
    /// (remote, key of remote) of the outputs brought back, and their
    /// lines of `outputs.list`: remote, local, component id and kind
    /// (`out:NAME` or `log`).
    pub outputs: Vec<(String, u128)>,
    pub outputs_list: String,
    /// Remote paths of its remote-resident inputs.
    pub remote_inputs: Vec<String>,
    /// Remote paths of its outputs kept at the site, with their keys.
    pub kept: Vec<(String, u128)>,
}

/// A remote path's key for telling outputs apart: the first 128 bits of
/// its SHA-256, so a run's outputs are known by 16 bytes each.
pub(super) fn key(path: &str) -> u128 {
    let d = Sha256::digest(path.as_bytes());
    u128::from_le_bytes(d[..16].try_into().expect("32-byte digest"))
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

pub(super) fn render_component(
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
        if let Some(paths) = list_input(c, t) {
            let mut remotes = Vec::with_capacity(paths.len());
            for (j, path) in paths.into_iter().enumerate() {
                if i < r.local_inputs {
                    let (local, remote) =
                        translate_path(job, c, &format!("input {name}[{j}]"), path)?;
                    remotes.push(remote.clone());
                    let k = key(&remote);
                    inputs.push((local, remote, k));
                } else {
                    // Files an earlier stage left at the site: checked there
                    // by the job, never looked for here nor pushed.
                    let remote = remote_path(job, c, &format!("remote input {name}[{j}]"), path)?;
                    remotes.push(remote.clone());
                    remote_inputs.push(remote);
                }
            }
            v.input_lists.insert(v.inputs.len(), remotes);
            v.inputs.push(String::new());
            continue;
        }
        let path = t.render(&v, false).map_err(|e| render_error(job, c, e))?;
        if i < r.local_inputs {
            let (local, remote) = translate_path(job, c, &format!("input {name}"), &path)?;
            v.inputs.push(remote.clone());
            let k = key(&remote);
            inputs.push((local, remote, k));
        } else {
            let remote = remote_path(job, c, &format!("remote input {name}"), &path)?;
            v.inputs.push(remote.clone());
            remote_inputs.push(remote);
        }
    }
    let mut outputs = Vec::with_capacity(r.outputs.len() + 1);
    let mut outputs_list = String::new();
    let mut kept = Vec::new();
    let cid = c.component_id;
    for (i, (name, t)) in r.output_names.iter().zip(&r.outputs).enumerate() {
        let path = t.render(&v, false).map_err(|e| render_error(job, c, e))?;
        if i < r.local_outputs {
            let (local, remote) = translate_path(job, c, &format!("output {name}"), &path)?;
            v.outputs.push(remote.clone());
            let k = key(&remote);
            outputs_list.push_str(&format!("{remote}\t{local}\t{cid}\tout:{name}\n"));
            outputs.push((remote, k));
        } else {
            let remote = remote_path(job, c, &format!("remote output {name}"), &path)?;
            v.outputs.push(remote.clone());
            let k = key(&remote);
            kept.push((remote, k));
        }
    }
    let mut log = String::new();
    if let Some(t) = &r.log {
        let path = t.render(&v, false).map_err(|e| render_error(job, c, e))?;
        let (local, remote) = translate_path(job, c, "log", &path)?;
        log = remote.clone();
        let k = key(&remote);
        outputs_list.push_str(&format!("{remote}\t{local}\t{cid}\tlog\n"));
        outputs.push((remote, k));
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
        outputs_list,
        remote_inputs,
        kept,
    })
}
