//! The runs list: filtered by state, label, stage, target, fault, held and
//! age, searched by remote_id or job_id, sorted and paged, all in SQL. The
//! filters are the page's query string, so a filtered list is a bookmark
//! and survives going back; the same rows come as CSV or JSON
//! (`&format=csv`, `&format=json`).

use askama::Template;
use serde::{Deserialize, Serialize};

use super::{framed, q, Ctx};
use crate::cli::Session;
use crate::db::models::Run;
use crate::db::queries::pages::{RunPage, RunSort};
use crate::state::RunState;

/// Rows per page unless asked.
pub const PER_PAGE: i64 = 50;
/// At most this many rows in one page (and in one CSV or JSON answer).
pub const MAX_PER_PAGE: i64 = 1000;

/// The list's query string.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunsQuery {
    /// Comma-separated states.
    pub state: Option<String>,
    /// Only open runs (new, pending, run, error, auth).
    pub open: Option<String>,
    pub label: Option<String>,
    pub stage: Option<String>,
    pub target: Option<String>,
    /// "1": with a fault; "0": without.
    pub fault: Option<String>,
    /// "1": held back from --next.
    pub held: Option<String>,
    /// In its state for at least this many hours.
    pub older: Option<String>,
    /// A remote_id or a job_id.
    pub q: Option<String>,
    /// newest (default), oldest, longest, updated.
    pub sort: Option<String>,
    pub page: Option<i64>,
    pub per: Option<i64>,
    /// html (default), csv, json.
    pub format: Option<String>,
}

fn some(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

impl RunsQuery {
    /// The query as the database reads it; a value it does not know is a
    /// usage error naming it.
    pub fn page(&self) -> anyhow::Result<RunPage> {
        let mut states = Vec::new();
        if let Some(s) = some(&self.state) {
            for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                states.push(name.parse::<RunState>().map_err(crate::exit::usage)?);
            }
        }
        if some(&self.open).as_deref() == Some("1") && states.is_empty() {
            states = RunState::ALL_OPEN.to_vec();
        }
        let flag = |v: &Option<String>, what: &str| -> anyhow::Result<Option<bool>> {
            match some(v).as_deref() {
                None => Ok(None),
                Some("1") => Ok(Some(true)),
                Some("0") => Ok(Some(false)),
                Some(x) => Err(crate::exit::usage(format!("{what}={x}: say 1 or 0"))),
            }
        };
        let older = match some(&self.older) {
            None => None,
            Some(h) => {
                let hours: f64 = h.parse().map_err(|_| {
                    crate::exit::usage(format!("older={h}: a number of hours, like 6"))
                })?;
                Some(crate::db::now() - chrono::TimeDelta::seconds((hours * 3600.0) as i64))
            }
        };
        let sort = match some(&self.sort).as_deref() {
            None | Some("newest") => RunSort::Newest,
            Some("oldest") => RunSort::Oldest,
            Some("longest") => RunSort::LongestInState,
            Some("updated") => RunSort::Updated,
            Some(x) => {
                return Err(crate::exit::usage(format!(
                    "sort={x}: one of newest, oldest, longest, updated"
                )))
            }
        };
        let per = self.per.unwrap_or(PER_PAGE).clamp(1, MAX_PER_PAGE);
        let page = self.page.unwrap_or(1).max(1);
        Ok(RunPage {
            states,
            label: some(&self.label),
            stage: some(&self.stage),
            target: self.target.clone().map(|t| t.trim().to_string()),
            fault: flag(&self.fault, "fault")?,
            held: flag(&self.held, "held")?,
            in_state_before: older,
            search: some(&self.q),
            sort,
            offset: (page - 1) * per,
            limit: per,
        })
    }

    /// The query string again, without its page (for the page links) or
    /// its format.
    pub fn without_page(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |k: &str, v: &Option<String>| {
            if let Some(v) = some(v) {
                parts.push(format!("{k}={}", q(&v)));
            }
        };
        add("state", &self.state);
        add("open", &self.open);
        add("label", &self.label);
        add("stage", &self.stage);
        add("target", &self.target);
        add("fault", &self.fault);
        add("held", &self.held);
        add("older", &self.older);
        add("q", &self.q);
        add("sort", &self.sort);
        if let Some(p) = self.per {
            parts.push(format!("per={p}"));
        }
        parts.join("&")
    }
}

/// A row as the list shows it, and as CSV and JSON give it.
#[derive(Debug, Serialize)]
pub struct RunRow {
    pub remote_id: i64,
    pub state: RunState,
    pub label: String,
    pub stage: String,
    pub target: Option<String>,
    pub job_id: Option<String>,
    pub attempt: i32,
    pub fault: i32,
    pub message: Option<String>,
    pub held_until: Option<chrono::NaiveDateTime>,
    pub state_since: chrono::NaiveDateTime,
    pub updated_at: chrono::NaiveDateTime,
}

impl From<Run> for RunRow {
    fn from(r: Run) -> RunRow {
        RunRow {
            remote_id: r.remote_id,
            state: r.state,
            label: r.label,
            stage: r.stage,
            target: r.target,
            job_id: r.job_id,
            attempt: r.attempt,
            fault: r.fault,
            message: r.message,
            held_until: r.held_until,
            state_since: r.state_since,
            updated_at: r.updated_at,
        }
    }
}

/// One page of the list: its rows and how many there are in all.
#[derive(Debug, Serialize)]
pub struct RunList {
    pub total: i64,
    pub page: i64,
    pub per: i64,
    pub runs: Vec<RunRow>,
}

/// Gather one page (reads only: two queries).
pub fn gather(s: &mut Session, query: &RunsQuery) -> anyhow::Result<RunList> {
    let p = query.page()?;
    let total = s.db.read(|st| st.count_runs_page(&p))?;
    let runs = s.db.read(|st| st.runs_page(&p))?;
    Ok(RunList {
        total,
        page: p.offset / p.limit + 1,
        per: p.limit,
        runs: runs.into_iter().map(RunRow::from).collect(),
    })
}

/// The rows as CSV (a header line, then one line a run; quoted as RFC 4180).
pub fn csv(list: &RunList) -> String {
    let mut out = String::from(
        "remote_id,state,label,stage,target,job_id,attempt,fault,message,held_until,state_since,updated_at\n",
    );
    for r in &list.runs {
        let fields = [
            r.remote_id.to_string(),
            r.state.to_string(),
            r.label.clone(),
            r.stage.clone(),
            r.target.clone().unwrap_or_default(),
            r.job_id.clone().unwrap_or_default(),
            r.attempt.to_string(),
            r.fault.to_string(),
            r.message.clone().unwrap_or_default(),
            r.held_until.map(|t| t.to_string()).unwrap_or_default(),
            r.state_since.to_string(),
            r.updated_at.to_string(),
        ];
        out.push_str(&super::csv_line(&fields));
    }
    out
}

pub struct Row {
    pub href: String,
    pub remote_id: i64,
    pub state: String,
    pub label: String,
    pub stage: String,
    pub target: String,
    pub job_id: String,
    pub fault: i32,
    pub message: String,
    pub held: bool,
    pub since: String,
}

#[derive(Template)]
#[template(path = "runs.html")]
pub struct Page {
    pub f: RunsQuery,
    pub states: Vec<(&'static str, bool)>,
    pub total: i64,
    pub first: i64,
    pub last: i64,
    pub prev: Option<String>,
    pub next: Option<String>,
    pub rows: Vec<Row>,
    pub csv: String,
    pub json: String,
}

/// The whole runs page.
pub fn page(s: &mut Session, query: &RunsQuery, ctx: &Ctx) -> anyhow::Result<String> {
    let list = gather(s, query)?;
    let base = query.without_page();
    let link = |page: i64| format!("/runs?{base}&page={page}");
    let chosen: Vec<String> = some(&query.state)
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let first = (list.page - 1) * list.per + 1;
    let last = first + list.runs.len() as i64 - 1;
    let body = Page {
        f: query.clone(),
        states: crate::state::ALL
            .iter()
            .map(|s| (s.as_str(), chosen.iter().any(|c| c == s.as_str())))
            .collect(),
        total: list.total,
        first: first.min(list.total),
        last: last.max(0),
        prev: (list.page > 1).then(|| link(list.page - 1)),
        next: (last < list.total).then(|| link(list.page + 1)),
        rows: list
            .runs
            .into_iter()
            .map(|r| Row {
                href: ctx.run_href(&r.remote_id),
                remote_id: r.remote_id,
                state: r.state.to_string(),
                label: r.label,
                stage: r.stage,
                target: r.target.unwrap_or_else(|| "-".into()),
                job_id: r.job_id.unwrap_or_else(|| "-".into()),
                fault: r.fault,
                message: r.message.unwrap_or_default(),
                held: r.held_until.is_some(),
                since: r.state_since.format("%Y-%m-%d %H:%M").to_string(),
            })
            .collect(),
        csv: format!("/runs?{base}&page={}&format=csv", list.page),
        json: format!("/runs?{base}&page={}&format=json", list.page),
    }
    .render()?;
    framed(ctx, "Runs", &body, false)
}
