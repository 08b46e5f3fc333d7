//! A recipe's `[next]`: what a chained stage's finished work feeds, checked
//! and compiled when the recipe is read.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::exit;

use super::template::{is_name_char, Compiler, Piece, Template};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NextFile {
    stage: String,
    #[serde(default)]
    group_by: Vec<String>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<String>>,
}

/// A recipe's `[next]`: the stage its finished work feeds, how its work
/// items group, and the next stage's work item's params.
#[derive(Debug, Clone)]
pub struct Next {
    pub stage: String,
    pub group_by: Vec<String>,
    /// (param name, template); a template holding `@out:NAME@` yields a
    /// list.
    pub params: Vec<(String, Template)>,
}

/// Builtins with no value outside a run: a `[next]` param or an output it
/// names may not use them.
const RUN_BUILTINS: &[&str] = &["REMOTE_ID", "COMPONENT_ID", "RUN_DIR"];

fn valid_param_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_name_char)
}

pub(super) fn compile_next(
    c: &Compiler<'_>,
    f: NextFile,
    file_name: &str,
    outputs: &[Template],
) -> anyhow::Result<Next> {
    let bad = |m: String| exit::usage(format!("recipe {file_name}: [next] {m}"));
    if f.stage.is_empty()
        || !f
            .stage
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
    {
        return Err(bad(format!(
            "stage {:?} is not a stage name (letters, digits and ._-)",
            f.stage
        )));
    }
    if let Some(g) = f.group_by.iter().find(|g| !valid_param_name(g)) {
        return Err(bad(format!(
            "group_by names {g:?}, which is not a param name"
        )));
    }
    if f.params.is_empty() {
        return Err(bad(
            "has no [next.params]: the next work item needs some".into()
        ));
    }
    let mut params = Vec::new();
    for (name, t) in &f.params {
        if !valid_param_name(name) {
            return Err(bad(format!(
                "param {name:?} is not a param name (letters, digits and _)"
            )));
        }
        let t = c.compile(t, true)?;
        for p in &t.pieces {
            match p {
                Piece::Input(_) => {
                    return Err(exit::usage(format!(
                        "recipe {}: [next.params] may name outputs (@out:NAME@), not inputs",
                        t.origin
                    )))
                }
                Piece::Var(v) if RUN_BUILTINS.contains(&v.as_str()) => {
                    return Err(exit::usage(format!(
                        "recipe {}: @{v}@ has no value in [next.params] (it belongs to a run)",
                        t.origin
                    )))
                }
                Piece::Output(i) => {
                    if let Some(v) = outputs[*i].vars().find(|v| RUN_BUILTINS.contains(v)) {
                        return Err(exit::usage(format!(
                            "recipe {}: [next.params] names an output whose path uses @{v}@ (recipe {}), which has no value outside its run",
                            t.origin, outputs[*i].origin
                        )));
                    }
                }
                _ => {}
            }
        }
        params.push((name.clone(), t));
    }
    Ok(Next {
        stage: f.stage,
        group_by: f.group_by,
        params,
    })
}
