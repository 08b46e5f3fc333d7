//! Templates with `@NAME@` placeholders, compiled once when a recipe is
//! read (every name checked, with the recipe line that uses it) and
//! rendered per component.

use toml::Spanned;

use crate::exit;

use super::BUILTINS;

/// One piece of a compiled template.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// A param, builtin or target variable.
    Var(String),
    Input(usize),
    Output(usize),
}

/// A compiled template and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Template {
    pub pieces: Vec<Piece>,
    /// "chip.toml line 12"
    pub origin: String,
}

pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Split a template into text and placeholders. `@` that does not start a
/// well-formed placeholder is text.
fn scan(s: &str) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('@') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let name_len = after
            .char_indices()
            .find(|(_, c)| !(is_name_char(*c) || *c == ':'))
            .map(|(i, _)| i)
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let closes = after[name_len..].starts_with('@');
        let well_formed = !name.is_empty()
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.matches(':').count() <= 1
            && !name.ends_with(':');
        if closes && well_formed {
            if !text.is_empty() {
                out.push((false, std::mem::take(&mut text)));
            }
            out.push((true, name.to_string()));
            rest = &after[name_len + 1..];
        } else {
            text.push('@');
            rest = after;
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push((false, text));
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

pub(super) struct Compiler<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) inputs: &'a [String],
    pub(super) outputs: &'a [String],
}

impl Compiler<'_> {
    pub(super) fn compile(
        &self,
        t: &Spanned<String>,
        files_allowed: bool,
    ) -> anyhow::Result<Template> {
        let origin = format!("{} line {}", self.file, line_of(self.text, t.span().start));
        let mut pieces = Vec::new();
        for (is_var, s) in scan(t.get_ref()) {
            if !is_var {
                pieces.push(Piece::Text(s));
                continue;
            }
            let piece = match s.split_once(':') {
                Some((kind @ ("in" | "out"), name)) => {
                    if !files_allowed {
                        return Err(exit::usage(format!(
                            "recipe {origin}: @{s}@ names a file, which only commands may use"
                        )));
                    }
                    let (names, what) =
                        if kind == "in" { (self.inputs, "inputs") } else { (self.outputs, "outputs") };
                    let idx = names.iter().position(|n| n == name).ok_or_else(|| {
                        exit::usage(format!(
                            "recipe {origin}: @{s}@ names no entry of [{what}] (it has: {})",
                            names.join(", ")
                        ))
                    })?;
                    if kind == "in" {
                        Piece::Input(idx)
                    } else {
                        Piece::Output(idx)
                    }
                }
                Some(_) => {
                    return Err(exit::usage(format!(
                        "recipe {origin}: unknown placeholder @{s}@ (file placeholders are @in:NAME@ and @out:NAME@)"
                    )))
                }
                None => Piece::Var(s),
            };
            pieces.push(piece);
        }
        Ok(Template { pieces, origin })
    }
}

/// Values for one component's placeholders.
pub trait Values {
    fn var(&self, name: &str) -> Option<std::borrow::Cow<'_, str>>;
    fn input(&self, idx: usize) -> &str;
    fn output(&self, idx: usize) -> &str;
    /// Is `name` a param whose value is a list (so it has no one value)?
    fn is_list(&self, _name: &str) -> bool {
        false
    }
    /// A list input's remote paths, when input `idx` is one.
    fn input_list(&self, _idx: usize) -> Option<&[String]> {
        None
    }
}

/// Why a template could not be rendered; the caller adds the work item.
#[derive(Debug)]
pub struct RenderError {
    /// "chip.toml line 12"
    pub origin: String,
    pub placeholder: String,
    pub problem: &'static str,
}

impl Template {
    /// Render; in `shell` mode every value is shell-quoted, the recipe's own
    /// text is written as it is.
    pub fn render(&self, v: &dyn Values, shell: bool) -> Result<String, RenderError> {
        let mut out = String::with_capacity(128);
        for p in &self.pieces {
            let (name, value) = match p {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Var(name) => match v.var(name) {
                    Some(val) => (name.as_str(), val),
                    None => {
                        return Err(RenderError {
                            origin: self.origin.clone(),
                            placeholder: name.clone(),
                            problem: if v.is_list(name) {
                                "is a list, which only an input whose template is exactly that param may take"
                            } else {
                                "has no value"
                            },
                        })
                    }
                },
                Piece::Input(i) if v.input_list(*i).is_some() => {
                    let list = v.input_list(*i).unwrap_or_default();
                    let mut words = Vec::with_capacity(list.len());
                    for path in list {
                        if !shell {
                            words.push(path.clone());
                            continue;
                        }
                        words.push(crate::shell::try_quote(path).map_err(|_| RenderError {
                            origin: self.origin.clone(),
                            placeholder: "in".to_string(),
                            problem: "has a NUL byte in its value",
                        })?);
                    }
                    out.push_str(&words.join(" "));
                    continue;
                }
                Piece::Input(i) => ("in", std::borrow::Cow::Borrowed(v.input(*i))),
                Piece::Output(i) => ("out", std::borrow::Cow::Borrowed(v.output(*i))),
            };
            if shell {
                match crate::shell::try_quote(&value) {
                    Ok(q) => out.push_str(&q),
                    Err(_) => {
                        return Err(RenderError {
                            origin: self.origin.clone(),
                            placeholder: name.to_string(),
                            problem: "has a NUL byte in its value",
                        })
                    }
                }
            } else {
                out.push_str(&value);
            }
        }
        Ok(out)
    }

    /// The param it is exactly, when it is one placeholder and nothing
    /// else (`@CHIPS@`), not a builtin.
    pub fn sole_var(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece::Var(n)] if !BUILTINS.contains(&n.as_str()) => Some(n.as_str()),
            _ => None,
        }
    }

    /// Does it name an output (`@out:NAME@`)?
    pub fn names_outputs(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Output(_)))
    }

    /// The names of the variables it uses.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(n) => Some(n.as_str()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_keeps_stray_at_signs() {
        let parts = scan("a@b.c @X@ @in:Y@ @@ @1@ @a:b:c@");
        let vars: Vec<&str> = parts
            .iter()
            .filter(|(v, _)| *v)
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(vars, vec!["X", "in:Y"]);
    }
}
