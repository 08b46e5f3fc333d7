//! Failures across runs (OWL's Monitor, filtered for failures): every
//! failed component in a chosen interval, counted per fault and exit
//! status, then a page of them, newest first, each with the last lines it
//! wrote. Counted and paged in SQL.

use askama::Template;
use serde::Deserialize;

use super::{framed, q, Ctx};
use crate::cli::Session;
use crate::record::{last_lines, ResultRecord};
use crate::state::fault;

/// Rows per page.
pub const PER_PAGE: i64 = 50;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FailuresQuery {
    /// 24h, 7d (default) or all.
    pub since: Option<String>,
    pub label: Option<String>,
    pub page: Option<i64>,
}

/// An interval's start: `24h`, `7d` or `all` (None).
pub fn since(
    text: Option<&str>,
    default: &str,
) -> anyhow::Result<(String, Option<chrono::NaiveDateTime>)> {
    let t = text
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(default);
    let now = crate::db::now();
    let start = match t {
        "24h" => Some(now - chrono::TimeDelta::hours(24)),
        "7d" => Some(now - chrono::TimeDelta::days(7)),
        "30d" => Some(now - chrono::TimeDelta::days(30)),
        "all" => None,
        x => {
            return Err(crate::exit::usage(format!(
                "since={x}: one of 24h, 7d, 30d, all"
            )))
        }
    };
    Ok((t.to_string(), start))
}

/// The links to a page over each interval [`since`] knows: (name, link,
/// chosen). `page` is the page's path without its slash, `rest` the rest
/// of its query; in the snapshot each links to the page's section.
pub fn intervals(
    ctx: &Ctx,
    page: &str,
    rest: &str,
    chosen: &str,
) -> Vec<(&'static str, String, bool)> {
    ["24h", "7d", "30d", "all"]
        .into_iter()
        .map(|i| {
            let href = if ctx.live {
                format!("/{page}?since={i}{rest}")
            } else {
                format!("#{page}")
            };
            (i, href, i == chosen)
        })
        .collect()
}

pub struct Group {
    pub fault: String,
    pub exit: String,
    pub components: i64,
}

pub struct Row {
    pub href: String,
    pub id: i64,
    pub run_href: String,
    pub remote_id: i64,
    pub label: String,
    pub stage: String,
    pub stage_id: i64,
    pub exit: String,
    pub phase: String,
    pub item_state: String,
    pub updated: String,
    pub tail: String,
}

#[derive(Template)]
#[template(path = "failures.html")]
pub struct Page {
    pub since: String,
    pub label: String,
    pub intervals: Vec<(&'static str, String, bool)>,
    pub total: i64,
    pub groups: Vec<Group>,
    pub rows: Vec<Row>,
    pub prev: Option<String>,
    pub next: Option<String>,
}

pub fn body(s: &mut Session, query: &FailuresQuery, ctx: &Ctx) -> anyhow::Result<String> {
    let (since_name, start) = since(query.since.as_deref(), "7d")?;
    let label = query
        .label
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string);
    let page = query.page.unwrap_or(1).max(1);
    let groups = s.db.read(|st| st.failure_groups(start, label.as_deref()))?;
    let total: i64 = groups.iter().map(|g| g.components).sum();
    let rows =
        s.db.read(|st| st.failed_page(start, label.as_deref(), (page - 1) * PER_PAGE, PER_PAGE))?;
    let base = format!(
        "/failures?since={}{}",
        q(&since_name),
        label
            .as_deref()
            .map(|l| format!("&label={}", q(l)))
            .unwrap_or_default()
    );
    let body = Page {
        since: since_name.clone(),
        label: label.clone().unwrap_or_default(),
        intervals: intervals(
            ctx,
            "failures",
            &label
                .as_deref()
                .map(|l| format!("&label={}", q(l)))
                .unwrap_or_default(),
            &since_name,
        ),
        total,
        groups: groups
            .iter()
            .map(|g| Group {
                fault: format!("{} ({})", g.fault, fault::component_meaning(g.fault)),
                exit: g
                    .exit_status
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into()),
                components: g.components,
            })
            .collect(),
        rows: rows
            .into_iter()
            .map(|(c, w)| {
                let rec: Option<ResultRecord> = c
                    .result
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok());
                let tail = match &rec {
                    None => "(no result record: it never ran, or its rank died)".to_string(),
                    Some(r) if !r.output_error.is_empty() => r.output_error.clone(),
                    Some(r) if !r.stderr_tail.trim().is_empty() => last_lines(&r.stderr_tail, 5),
                    Some(r) => last_lines(&r.stdout_tail, 5),
                };
                Row {
                    href: ctx.component_href(&c.id, &c.remote_id),
                    id: c.id,
                    run_href: ctx.run_href(&c.remote_id),
                    remote_id: c.remote_id,
                    label: w.label,
                    stage: w.stage,
                    stage_id: w.stage_id,
                    exit: c
                        .exit_status
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "-".into()),
                    phase: rec.map(|r| r.phase).unwrap_or_else(|| "-".into()),
                    item_state: w.state.to_string(),
                    updated: c.updated_at.format("%Y-%m-%d %H:%M").to_string(),
                    tail,
                }
            })
            .collect(),
        prev: (ctx.live && page > 1).then(|| format!("{base}&page={}", page - 1)),
        next: (ctx.live && page * PER_PAGE < total).then(|| format!("{base}&page={}", page + 1)),
    }
    .render()?;
    Ok(body)
}

pub fn page(s: &mut Session, query: &FailuresQuery, ctx: &Ctx) -> anyhow::Result<String> {
    framed(ctx, "Failures", &body(s, query, ctx)?, false)
}
