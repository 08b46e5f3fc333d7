//! Stage recipes: per component, the files it reads and writes and the
//! commands it runs, as templates with `@NAME@` placeholders.
//!
//! ```toml
//! stage = "chip"
//! threads = 2            # threads per command
//! time_cost = 150        # typical seconds per command
//! pre = ""               # shell, before the command (output folders are made for you)
//! command = "@BIN@/ppImage -file @in:IMAGE@ -flat @in:FLAT@ -out @out:IMAGE@"
//! post = "cat @out:STATS@"  # its stdout becomes the component's stats
//! log = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.log"  # optional: keep the whole stdout+stderr
//! apply = "ipp-apply --dbname @DBNAME@ --stage @STAGE@"  # optional: run here by poll, results on stdin
//! apply_timeout = 600    # seconds the apply command may take
//!
//! [inputs]               # name = local path template
//! IMAGE = "@INPUT@"
//! FLAT = "@FLAT@"
//!
//! [outputs]              # name = local path template (permanent products only)
//! IMAGE = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.fits"
//! STATS = "@WORKDIR@/@EXP_NAME@.@CHIP@.ch.stats"
//!
//! [remote_inputs]        # name = path at the remote site: not here, not pushed
//! REFCAT = "@REFCAT_ROOT@/ps1-refcat.fits"
//!
//! [remote_outputs]       # name = path of a product kept at the site, not brought back
//! MASKED = "@RUN_DIR@/masked/@EXP_NAME@.@CHIP@.fits"
//! ```
//!
//! Placeholders: `@in:NAME@` / `@out:NAME@` (the remote path of an input or
//! output), `@STAGE@`, `@STAGE_ID@`, `@LABEL@`, `@REMOTE_ID@`,
//! `@COMPONENT_ID@`, `@THREADS@`, `@RUN_DIR@` (the remote run folder), the
//! work item's params, then the target's `vars`. In commands every value is
//! shell-quoted; in path templates values are used as they are.
//!
//! **List params.** A work item's param may be a list of strings. An input
//! whose template is exactly that param (`CHIPS = "@CHIPS@"`) is a list
//! input: every element is an input file (under `[remote_inputs]`, a file
//! at the site), and `@in:CHIPS@` in a command is all their remote paths,
//! each shell-quoted, separated by spaces. A list param anywhere else is an
//! error naming the recipe line.
//!
//! **Chained stages.** `max_components` caps the components of a run that
//! `remotetool define --all` makes (default: no cap). `[next]` says what the
//! stage's finished work feeds:
//!
//! ```toml
//! [next]
//! stage = "camera"            # the next stage
//! group_by = ["EXP_NAME"]     # params that group work items (none: one group per label)
//! [next.params]               # the next stage's work item, from the group
//! EXP_NAME = "@EXP_NAME@"     # no @out:@: one value, from the group's first item
//! WORKDIR = "@WORKDIR@"
//! CHIPS = "@out:IMAGE@"       # with @out:NAME@: a list, one entry per item, in stage_id order
//! ```
//!
//! When every work item of a group (same label, stage and `group_by`
//! values) is done, poll creates the next stage's work item once: the same
//! label, `stage_id` the group's smallest, the group's highest priority. In
//! `[next.params]`, `@NAME@` takes the item's param, `@STAGE@`,
//! `@STAGE_ID@`, `@LABEL@`, `@THREADS@`, then the target's vars; a template
//! that is exactly one param copies its JSON value (a number stays a
//! number). `@out:NAME@` is the output's path as the recipe renders it,
//! before any path rule (the storage URL), so the next stage translates it
//! as any input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::exit;

mod next;
mod template;

use next::{compile_next, NextFile};
use template::Compiler;

pub use next::Next;
pub use template::{Piece, RenderError, Template, Values};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    stage: String,
    #[serde(default = "one")]
    threads: u32,
    time_cost: f64,
    /// Work-item param holding this item's expected seconds, when known.
    cost_param: Option<String>,
    /// Finished components of the stage needed before their measured
    /// runtimes replace `time_cost`.
    #[serde(default = "default_min_samples")]
    min_samples: i64,
    /// Which percentile of measured runtimes to use.
    #[serde(default = "default_percentile")]
    percentile: f64,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    outputs: BTreeMap<String, Spanned<String>>,
    /// Inputs that live at the remote site (reference data, an earlier
    /// stage's products kept there): name = path template (a storage URL
    /// translated by the target's path rules, or a remote absolute path).
    /// Not looked for here, not pushed; the batch script checks they are
    /// there.
    #[serde(default)]
    remote_inputs: BTreeMap<String, Spanned<String>>,
    /// Outputs kept at the remote site, not brought back (a later stage
    /// reads them there): checked by the rank runner like any output.
    #[serde(default)]
    remote_outputs: BTreeMap<String, Spanned<String>>,
    pre: Option<Spanned<String>>,
    command: Spanned<String>,
    post: Option<Spanned<String>>,
    /// Local path template of the component's whole log (stdout and
    /// stderr), brought back whether the component worked or not. Without
    /// it only the tails in the result record are kept.
    log: Option<Spanned<String>>,
    /// A command run here by poll with the run's results on stdin (JSON
    /// Lines, as `remotetool results` prints them), after the outputs are
    /// in place and before the run leaves `run`: the pipeline's own
    /// database updates. Placeholders: `@LABEL@`, `@STAGE@`,
    /// `@REMOTE_ID@` and the target's vars.
    apply: Option<Spanned<String>>,
    /// Seconds the apply command may take (default 600).
    #[serde(default = "default_apply_timeout")]
    apply_timeout: u64,
    /// At most this many components in a run `define --all` makes.
    max_components: Option<i64>,
    /// What the stage's finished work feeds.
    next: Option<NextFile>,
}

fn default_apply_timeout() -> u64 {
    600
}

fn one() -> u32 {
    1
}

fn default_min_samples() -> i64 {
    100
}

fn default_percentile() -> f64 {
    90.0
}

#[derive(Debug, Clone)]
pub struct Recipe {
    pub path: PathBuf,
    pub stage: String,
    pub threads: u32,
    pub time_cost: f64,
    pub cost_param: Option<String>,
    pub min_samples: i64,
    pub percentile: f64,
    pub input_names: Vec<String>,
    pub inputs: Vec<Template>,
    pub output_names: Vec<String>,
    pub outputs: Vec<Template>,
    /// Of `input_names`/`inputs`, the first this many are local; the rest
    /// are remote-resident (`[remote_inputs]`).
    pub local_inputs: usize,
    /// Of `output_names`/`outputs`, the first this many are brought back;
    /// the rest are kept remotely (`[remote_outputs]`).
    pub local_outputs: usize,
    pub pre: Option<Template>,
    pub command: Template,
    pub post: Option<Template>,
    pub log: Option<Template>,
    pub apply: Option<Template>,
    pub apply_timeout: std::time::Duration,
    /// At most this many components per run of `define --all` (None: no cap).
    pub max_components: Option<i64>,
    pub next: Option<Next>,
}

pub const BUILTINS: &[&str] = &[
    "STAGE",
    "STAGE_ID",
    "LABEL",
    "REMOTE_ID",
    "COMPONENT_ID",
    "THREADS",
    "RUN_DIR",
];

/// Finished components of a stage whose runtimes prepare reads (the
/// newest), and the web view draws.
pub const RUNTIME_SAMPLES: i64 = 10_000;

impl Recipe {
    /// The seconds a command is expected to take, as prepare sizes the
    /// allocation by it, and where that figure came from: the recipe's
    /// `percentile` of the measured `samples` once there are `min_samples`
    /// of them, its `time_cost` before.
    pub fn time_cost_of(&self, samples: &mut [f64]) -> (f64, String) {
        match crate::alloc::percentile(samples, self.percentile) {
            Some(p) if samples.len() as i64 >= self.min_samples => (
                p.max(1.0),
                format!(
                    "p{} of {} measured runtimes",
                    self.percentile,
                    samples.len()
                ),
            ),
            _ => (self.time_cost, format!("recipe {}", self.path.display())),
        }
    }

    /// Load `<dir>/<stage>.toml`.
    pub fn load_for_stage(dir: &Path, stage: &str) -> anyhow::Result<Recipe> {
        let path = dir.join(format!("{stage}.toml"));
        if !path.is_file() {
            return Err(exit::usage(format!(
                "no recipe for stage '{stage}': {} does not exist (recipes folder: --recipes or `recipes` in the configuration)",
                path.display()
            )));
        }
        let r = Recipe::load(&path)?;
        if r.stage != stage {
            return Err(exit::usage(format!(
                "recipe {} is for stage '{}', not '{stage}'",
                path.display(),
                r.stage
            )));
        }
        Ok(r)
    }

    pub fn load(path: &Path) -> anyhow::Result<Recipe> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| exit::usage(format!("cannot read recipe {}: {e}", path.display())))?;
        Recipe::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Recipe> {
        let file_name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let f: RecipeFile = toml::from_str(text).map_err(|e| {
            exit::usage(format!(
                "recipe {} is not valid: {}",
                path.display(),
                e.to_string().trim().replace('\n', " ")
            ))
        })?;
        let bad = |m: String| exit::usage(format!("recipe {}: {m}", path.display()));
        if f.threads == 0 {
            return Err(bad("threads must be at least 1".into()));
        }
        if !(f.time_cost.is_finite() && f.time_cost > 0.0) {
            return Err(bad("time_cost must be a positive number of seconds".into()));
        }
        if !(0.0..=100.0).contains(&f.percentile) {
            return Err(bad("percentile must be between 0 and 100".into()));
        }
        for (what, a, b) in [
            ("inputs", &f.inputs, &f.remote_inputs),
            ("outputs", &f.outputs, &f.remote_outputs),
        ] {
            if let Some(n) = a.keys().find(|n| b.contains_key(*n)) {
                return Err(exit::usage(format!(
                    "recipe {file_name}: '{n}' is in both [{what}] and [remote_{what}]; give it one"
                )));
            }
        }
        let input_names: Vec<String> = f
            .inputs
            .keys()
            .chain(f.remote_inputs.keys())
            .cloned()
            .collect();
        let output_names: Vec<String> = f
            .outputs
            .keys()
            .chain(f.remote_outputs.keys())
            .cloned()
            .collect();
        let c = Compiler {
            file: &file_name,
            text,
            inputs: &input_names,
            outputs: &output_names,
        };
        let inputs = f
            .inputs
            .values()
            .chain(f.remote_inputs.values())
            .map(|t| c.compile(t, false))
            .collect::<Result<_, _>>()?;
        let outputs = f
            .outputs
            .values()
            .chain(f.remote_outputs.values())
            .map(|t| c.compile(t, false))
            .collect::<Result<Vec<Template>, _>>()?;
        let pre = f.pre.as_ref().map(|t| c.compile(t, true)).transpose()?;
        let command = c.compile(&f.command, true)?;
        let post = f.post.as_ref().map(|t| c.compile(t, true)).transpose()?;
        let log = f.log.as_ref().map(|t| c.compile(t, false)).transpose()?;
        let apply = f.apply.as_ref().map(|t| c.compile(t, false)).transpose()?;
        if f.apply_timeout == 0 {
            return Err(exit::usage(format!(
                "recipe {file_name}: apply_timeout must be at least 1 second"
            )));
        }
        if f.max_components.is_some_and(|n| n < 1) {
            return Err(bad("max_components must be at least 1".into()));
        }
        let next = f
            .next
            .map(|n| compile_next(&c, n, &file_name, &outputs))
            .transpose()?;
        Ok(Recipe {
            max_components: f.max_components,
            next,
            path: path.to_path_buf(),
            stage: f.stage,
            threads: f.threads,
            time_cost: f.time_cost,
            cost_param: f.cost_param,
            min_samples: f.min_samples,
            percentile: f.percentile,
            input_names,
            inputs,
            output_names,
            outputs,
            local_inputs: f.inputs.len(),
            local_outputs: f.outputs.len(),
            pre,
            command,
            post,
            log,
            apply,
            apply_timeout: std::time::Duration::from_secs(f.apply_timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    struct V;
    impl Values for V {
        fn var(&self, name: &str) -> Option<Cow<'_, str>> {
            match name {
                "EXP" => Some("o1 $(rm -rf /) 'x'".into()),
                "CHIP" => Some("XY01".into()),
                _ => None,
            }
        }
        fn input(&self, _: usize) -> &str {
            "/in/a b.fits"
        }
        fn output(&self, _: usize) -> &str {
            "/out/ü.fits"
        }
    }

    const R: &str = "stage = \"chip\"\nthreads = 2\ntime_cost = 150\ncommand = \"prog -i @in:IMAGE@ -o @out:OUT@ -e @EXP@ user@host @\"\n[inputs]\nIMAGE = \"@EXP@/x\"\n[outputs]\nOUT = \"/o/@CHIP@.fits\"\n";

    #[test]
    fn renders_quoted_commands_and_raw_paths() {
        let r = Recipe::parse(R, Path::new("chip.toml")).unwrap();
        assert_eq!(
            r.inputs[0].render(&V, false).unwrap(),
            "o1 $(rm -rf /) 'x'/x"
        );
        let cmd = r.command.render(&V, true).unwrap();
        // A shell reads the values back exactly.
        let words = shlex::split(&cmd).unwrap();
        assert_eq!(
            words,
            vec![
                "prog",
                "-i",
                "/in/a b.fits",
                "-o",
                "/out/ü.fits",
                "-e",
                "o1 $(rm -rf /) 'x'",
                "user@host",
                "@"
            ]
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "printf '%s\\n' {}",
                cmd.trim_start_matches("prog ")
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "-i\n/in/a b.fits\n-o\n/out/ü.fits\n-e\no1 $(rm -rf /) 'x'\nuser@host\n@\n"
        );
        assert_eq!(r.command.origin, "chip.toml line 4");
    }

    #[test]
    fn errors_name_file_line_and_placeholder() {
        let bad = R.replace("@in:IMAGE@", "@in:NOPE@");
        let e = exit::one_line(&Recipe::parse(&bad, Path::new("chip.toml")).unwrap_err());
        assert!(
            e.contains("chip.toml line 4: @in:NOPE@ names no entry of [inputs] (it has: IMAGE)"),
            "{e}"
        );
        let bad = R.replace("IMAGE = \"@EXP@/x\"", "IMAGE = \"@in:IMAGE@\"");
        let e = exit::one_line(&Recipe::parse(&bad, Path::new("chip.toml")).unwrap_err());
        assert!(e.contains("only commands may use"), "{e}");
        let r = Recipe::parse(&R.replace("@CHIP@", "@MISSING@"), Path::new("chip.toml")).unwrap();
        let e = r.outputs[0].render(&V, false).unwrap_err();
        assert_eq!(
            (e.origin.as_str(), e.placeholder.as_str()),
            ("chip.toml line 8", "MISSING")
        );
        let e = exit::one_line(&Recipe::parse("stage = 1", Path::new("x.toml")).unwrap_err());
        assert!(e.contains("recipe x.toml is not valid"), "{e}");
    }

    struct L;
    impl Values for L {
        fn var(&self, _: &str) -> Option<Cow<'_, str>> {
            None
        }
        fn input(&self, _: usize) -> &str {
            ""
        }
        fn output(&self, _: usize) -> &str {
            "/o"
        }
        fn is_list(&self, name: &str) -> bool {
            name == "EXP"
        }
        fn input_list(&self, _: usize) -> Option<&[String]> {
            static PATHS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
            Some(PATHS.get_or_init(|| vec!["/in/a b".into(), "/in/it's".into()]))
        }
    }

    #[test]
    fn a_list_input_expands_to_every_path_quoted_and_a_list_elsewhere_is_refused() {
        let r = Recipe::parse(&R.replace(" -e @EXP@", ""), Path::new("chip.toml")).unwrap();
        let cmd = r.command.render(&L, true).unwrap();
        assert_eq!(
            shlex::split(&cmd).unwrap(),
            vec![
                "prog",
                "-i",
                "/in/a b",
                "/in/it's",
                "-o",
                "/o",
                "user@host",
                "@"
            ]
        );
        let r = Recipe::parse(R, Path::new("chip.toml")).unwrap();
        let e = r.command.render(&L, true).unwrap_err();
        assert_eq!(
            (e.origin.as_str(), e.placeholder.as_str()),
            ("chip.toml line 4", "EXP")
        );
        assert!(e.problem.contains("is a list"), "{}", e.problem);
    }

    #[test]
    fn next_names_a_stage_groups_and_params() {
        let next = "[next]\nstage = \"camera\"\ngroup_by = [\"EXP\"]\n[next.params]\nEXP = \"@EXP@\"\nCHIPS = \"@out:OUT@\"\n";
        let r = Recipe::parse(
            &format!("max_components = 5\n{R}{next}"),
            Path::new("chip.toml"),
        )
        .unwrap();
        assert_eq!(r.max_components, Some(5));
        let n = r.next.unwrap();
        assert_eq!(
            (n.stage.as_str(), n.group_by.clone()),
            ("camera", vec!["EXP".to_string()])
        );
        let names: Vec<(&str, bool)> = n
            .params
            .iter()
            .map(|(k, t)| (k.as_str(), t.names_outputs()))
            .collect();
        assert_eq!(names, vec![("CHIPS", true), ("EXP", false)]);
        let e = |text: String| {
            exit::one_line(&Recipe::parse(&text, Path::new("chip.toml")).unwrap_err())
        };
        assert!(e(format!("{R}{}", next.replace("@out:OUT@", "@in:IMAGE@"))).contains("not inputs"));
        assert!(
            e(format!("{R}{}", next.replace("@out:OUT@", "@REMOTE_ID@")))
                .contains("belongs to a run")
        );
        assert!(e(format!(
            "{}{next}",
            R.replace("/o/@CHIP@", "/o/@COMPONENT_ID@")
        ))
        .contains("uses @COMPONENT_ID@"));
        assert!(
            e(format!("{R}{}", next.replace("\"camera\"", "\"a b\""))).contains("not a stage name")
        );
        assert!(e(format!("max_components = 0\n{R}")).contains("max_components must be at least 1"));
    }
}
