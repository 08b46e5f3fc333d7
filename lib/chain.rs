//! Chained stages: a recipe's `[next]` says what its stage's finished work
//! feeds (see `crate::recipe`). When every work item of a group (the same
//! label, stage and `group_by` params) is done, the next stage's work item
//! is created, once: its `stage_id` is the group's smallest, and the
//! database's unique (stage, stage_id) with ON CONFLICT DO NOTHING makes a
//! second creation a no-op. poll calls [`after_done`] inside the
//! transaction that releases results, and so does a run set `full` by hand
//! (`crate::runs::set_state`); `remotetool status` lists the groups
//! an abandoned item blocks ([`blocked`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::models::{NewWorkItem, WorkItem};
use crate::db::{self, Store};
use crate::exit;
use crate::recipe::{Next, Piece, Recipe, RenderError, Template, Values};
use crate::state::ItemState;

/// A stage that feeds another, with the values its `[next.params]` may use
/// beyond the items' params (the target's vars).
pub struct Chain<'a> {
    pub recipe: &'a Recipe,
    pub next: &'a Next,
    pub vars: &'a BTreeMap<String, String>,
}

impl<'a> Chain<'a> {
    /// The recipe's chain, when it has a `[next]`.
    pub fn of(recipe: &'a Recipe, vars: &'a BTreeMap<String, String>) -> Option<Chain<'a>> {
        recipe
            .next
            .as_ref()
            .map(|next| Chain { recipe, next, vars })
    }
}

/// A work item with its params read.
struct Item {
    row: WorkItem,
    params: Map<String, Value>,
}

fn read_items(rows: Vec<WorkItem>) -> anyhow::Result<Vec<Item>> {
    rows.into_iter()
        .map(|row| {
            let params = match serde_json::from_str(&row.params) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(anyhow::anyhow!(
                        "work item {}/{} has params that are not a JSON object",
                        row.stage,
                        row.stage_id
                    ))
                }
            };
            Ok(Item { row, params })
        })
        .collect()
}

/// A group of work items, in stage_id order.
struct Group<'i> {
    /// "EXP_NAME=o5745g0001o"
    name: String,
    items: Vec<&'i Item>,
}

impl Group<'_> {
    fn first_id(&self) -> i64 {
        self.items[0].row.stage_id
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".to_string(),
        other => other.to_string(),
    }
}

/// The items grouped by the values of `group_by` (a missing param counts
/// as none), in the order of their first items.
fn groups<'i>(next: &Next, items: &'i [Item]) -> Vec<Group<'i>> {
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<Group<'i>> = Vec::new();
    for item in items {
        let values: Vec<&Value> = next
            .group_by
            .iter()
            .map(|k| item.params.get(k).unwrap_or(&Value::Null))
            .collect();
        let key = serde_json::to_string(&values).unwrap_or_default();
        let i = *by_key.entry(key).or_insert_with(|| {
            let name = if next.group_by.is_empty() {
                format!("all of {}", item.row.label)
            } else {
                next.group_by
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| format!("{k}={}", describe(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            out.push(Group {
                name,
                items: Vec::new(),
            });
            out.len() - 1
        });
        out[i].items.push(item);
    }
    out
}

/// The values a `[next.params]` template takes from one work item.
struct ItemValues<'a> {
    chain: &'a Chain<'a>,
    item: &'a Item,
    outputs: Vec<String>,
}

impl Values for ItemValues<'_> {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        let r = self.chain.recipe;
        match name {
            "STAGE" => return Some(Cow::Borrowed(r.stage.as_str())),
            "STAGE_ID" => return Some(Cow::Owned(self.item.row.stage_id.to_string())),
            "LABEL" => return Some(Cow::Borrowed(self.item.row.label.as_str())),
            "THREADS" => return Some(Cow::Owned(r.threads.to_string())),
            _ => {}
        }
        match self.item.params.get(name) {
            Some(Value::String(s)) => return Some(Cow::Borrowed(s.as_str())),
            Some(Value::Number(n)) => return Some(Cow::Owned(n.to_string())),
            Some(Value::Bool(b)) => return Some(Cow::Owned(b.to_string())),
            Some(Value::Array(_)) => return None,
            _ => {}
        }
        self.chain.vars.get(name).map(|s| Cow::Borrowed(s.as_str()))
    }
    fn input(&self, _idx: usize) -> &str {
        ""
    }
    fn output(&self, idx: usize) -> &str {
        &self.outputs[idx]
    }
    fn is_list(&self, name: &str) -> bool {
        matches!(self.item.params.get(name), Some(Value::Array(_)))
    }
}

fn render_error(e: RenderError, item: &Item, group: &Group<'_>) -> anyhow::Error {
    exit::usage(format!(
        "recipe {}: [next] placeholder @{}@ {} for work item {}/{} (group {}); fix the recipe or the item, then poll again",
        e.origin, e.placeholder, e.problem, item.row.stage, item.row.stage_id, group.name
    ))
}

/// One template for one item: the outputs it names rendered first, as the
/// recipe renders them before any path rule.
fn render_for(
    chain: &Chain<'_>,
    t: &Template,
    item: &Item,
    group: &Group<'_>,
) -> anyhow::Result<String> {
    let mut v = ItemValues {
        chain,
        item,
        outputs: vec![String::new(); chain.recipe.outputs.len()],
    };
    for p in &t.pieces {
        if let Piece::Output(i) = p {
            let path = chain.recipe.outputs[*i]
                .render(&v, false)
                .map_err(|e| render_error(e, item, group))?;
            v.outputs[*i] = path;
        }
    }
    t.render(&v, false)
        .map_err(|e| render_error(e, item, group))
}

/// A `[next.params]` value for a group: a list (one entry per item) when
/// the template names an output; else from the group's first item, its
/// JSON value itself when the template is exactly one of its params.
fn render_param(chain: &Chain<'_>, t: &Template, group: &Group<'_>) -> anyhow::Result<Value> {
    if t.names_outputs() {
        return group
            .items
            .iter()
            .map(|item| render_for(chain, t, item, group).map(Value::String))
            .collect::<anyhow::Result<Vec<Value>>>()
            .map(Value::Array);
    }
    let first = group.items[0];
    if let Some(v) = t.sole_var().and_then(|name| first.params.get(name)) {
        return Ok(v.clone());
    }
    render_for(chain, t, first, group).map(Value::String)
}

/// A work item made for the next stage.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub stage: String,
    pub stage_id: i64,
    /// The group it was made from ("EXP_NAME=o5745g0001o").
    pub group: String,
    /// Work items in the group.
    pub items: usize,
}

/// The history line for the next stage's work items a release made.
pub fn history_line(made: &[Created]) -> String {
    let names: Vec<String> = made
        .iter()
        .take(10)
        .map(|c| {
            format!(
                "{}/{} ({}: {} items done)",
                c.stage, c.stage_id, c.group, c.items
            )
        })
        .collect();
    format!(
        "chained: {} work items for the next stage: {}{}",
        made.len(),
        names.join(", "),
        if made.len() > 10 { ", ..." } else { "" }
    )
}

/// After work items of the chain's stage (`done`: their ids) became done,
/// inside the caller's transaction: every group of theirs whose items are
/// all done gets the next stage's work item, unless it has it already. A
/// group with an abandoned item gets nothing. Returns what was created.
pub fn after_done(
    s: &mut dyn Store,
    chain: &Chain<'_>,
    label: &str,
    done: &[i64],
) -> anyhow::Result<Vec<Created>> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    // Before reading the groups: a transaction that released other items
    // of them has committed by now (PostgreSQL; SQLite's writer is alone).
    s.lock_groups()?;
    let items = read_items(s.stage_items(label, &chain.recipe.stage)?)?;
    let done: HashSet<i64> = done.iter().copied().collect();
    let now = db::now();
    let mut out = Vec::new();
    for g in groups(chain.next, &items) {
        if !g.items.iter().any(|i| done.contains(&i.row.id))
            || !g.items.iter().all(|i| i.row.state == ItemState::Done)
        {
            continue;
        }
        let mut params = Map::new();
        for (name, t) in &chain.next.params {
            params.insert(name.clone(), render_param(chain, t, &g)?);
        }
        let row = NewWorkItem {
            stage: chain.next.stage.clone(),
            stage_id: g.first_id(),
            label: label.to_string(),
            priority: g.items.iter().map(|i| i.row.priority).max().unwrap_or(0),
            params: Value::Object(params).to_string(),
            state: ItemState::Ready,
            attempts: 0,
            created_at: now,
            updated_at: now,
        };
        if s.insert_work_item_once(&row)? == 1 {
            out.push(Created {
                stage: row.stage,
                stage_id: row.stage_id,
                group: g.name.clone(),
                items: g.items.len(),
            });
        }
    }
    Ok(out)
}

/// A group that cannot feed the next stage: one of its items is abandoned.
#[derive(Debug, Clone, Serialize)]
pub struct Blocked {
    pub label: String,
    pub stage: String,
    /// "EXP_NAME=o5745g0001o"
    pub group: String,
    pub next_stage: String,
    pub items: usize,
    pub done: usize,
    /// stage_ids of its abandoned items.
    pub abandoned: Vec<i64>,
    /// The first of them, as `stage/stage_id`.
    pub blocked_by: String,
}

/// The groups of `rows` (one label and stage, by stage_id) that an
/// abandoned item blocks, whose next item (`existing`: the next stage's
/// stage_ids) was not made.
pub fn blocked(
    rows: Vec<WorkItem>,
    next: &Next,
    existing: &HashSet<i64>,
) -> anyhow::Result<Vec<Blocked>> {
    let items = read_items(rows)?;
    let mut out = Vec::new();
    for g in groups(next, &items) {
        let abandoned: Vec<i64> = g
            .items
            .iter()
            .filter(|i| i.row.state == ItemState::Abandoned)
            .map(|i| i.row.stage_id)
            .collect();
        if abandoned.is_empty() || existing.contains(&g.first_id()) {
            continue;
        }
        let first = g.items[0];
        out.push(Blocked {
            label: first.row.label.clone(),
            stage: first.row.stage.clone(),
            group: g.name.clone(),
            next_stage: next.stage.clone(),
            items: g.items.len(),
            done: g
                .items
                .iter()
                .filter(|i| i.row.state == ItemState::Done)
                .count(),
            blocked_by: format!("{}/{}", first.row.stage, abandoned[0]),
            abandoned,
        });
    }
    Ok(out)
}
