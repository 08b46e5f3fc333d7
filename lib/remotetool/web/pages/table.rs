//! Rector's table: one row per label and stage over a chosen interval
//! (24 h, 7 days, 30 days, all): work items waiting, in runs, done and
//! abandoned, failed attempts (as `status` counts them), runs per state, the oldest open run's age, and per
//! label an ETA from the pace of the last 24 hours. Every count of runs
//! links to the runs it counts; a stacked bar draws each row's progress.

use std::collections::BTreeMap;

use askama::Template;
use serde::Deserialize;

use super::failures::{intervals, since};
use super::{age, framed, q, Ctx};
use crate::cli::Session;
use crate::db::queries::pages::{RunPage, RunSort};
use crate::remotetool::web::svg::stacked_bar;
use crate::state::{ItemState, RunState};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TableQuery {
    /// 24h, 7d, 30d or all (default).
    pub since: Option<String>,
}

#[derive(Default)]
pub struct Row {
    pub label: String,
    pub stage: String,
    pub waiting: i64,
    pub in_runs: i64,
    pub done: i64,
    pub failed: i64,
    pub abandoned: i64,
    /// (runs, link) for each run state, in [`crate::state::ALL`]'s order.
    pub runs: Vec<(i64, String)>,
    pub oldest: String,
    pub oldest_href: String,
    /// The progress bar: done, abandoned, in runs, waiting (SVG).
    pub bar: String,
}

pub struct Eta {
    pub label: String,
    pub remaining: i64,
    pub pace: i64,
    pub eta: String,
}

#[derive(Template)]
#[template(path = "table.html")]
pub struct Page {
    pub intervals: Vec<(&'static str, String, bool)>,
    pub states: Vec<&'static str>,
    pub rows: Vec<Row>,
    pub etas: Vec<Eta>,
}

fn row<'a>(rows: &'a mut BTreeMap<(String, String), Row>, label: &str, stage: &str) -> &'a mut Row {
    rows.entry((label.to_string(), stage.to_string()))
        .or_insert_with(|| Row {
            label: label.to_string(),
            stage: stage.to_string(),
            ..Row::default()
        })
}

/// "in 3h 05m", or why there is none.
fn eta(remaining: i64, per_day: i64) -> String {
    if remaining == 0 {
        "done".into()
    } else if per_day == 0 {
        "no pace yet (nothing finished in 24 h)".into()
    } else {
        format!("in {}", age(&(remaining * 86_400 / per_day)))
    }
}

pub fn body(s: &mut Session, query: &TableQuery, ctx: &Ctx) -> anyhow::Result<String> {
    let (since_name, start) = since(query.since.as_deref(), "all")?;
    let (items, runs) = match start {
        Some(t) => (
            s.db.read(|st| st.item_groups_since(t))?,
            s.db.read(|st| st.run_groups_since(t))?,
        ),
        None => (
            s.db.read(|st| st.item_groups())?,
            s.db.read(|st| st.run_groups())?,
        ),
    };
    let active = s.db.read(|st| st.active_item_groups())?;
    let open = s.db.read(|st| {
        st.runs_page(&RunPage {
            states: RunState::ALL_OPEN.to_vec(),
            sort: RunSort::LongestInState,
            limit: 100_000,
            ..RunPage::default()
        })
    })?;
    let day_ago = crate::db::now() - chrono::TimeDelta::hours(24);
    let pace: BTreeMap<String, i64> =
        s.db.read(|st| st.pace_since(day_ago))?
            .into_iter()
            .map(|p| (p.label, p.items))
            .collect();
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for i in &items {
        let r = row(&mut rows, &i.label, &i.stage);
        match i.state {
            ItemState::Ready => r.waiting += i.items,
            ItemState::Done => r.done += i.items,
            // Counted below as failed attempts, as `status` does.
            ItemState::Failed => {}
            ItemState::Abandoned => r.abandoned += i.items,
        }
    }
    if start.is_none() {
        // Waiting is ready and in no run.
        for a in &active {
            let r = row(&mut rows, &a.label, &a.stage);
            r.in_runs += a.items;
            r.waiting -= a.items;
        }
    }
    for f in s.db.read(|st| st.failed_per_stage(start))? {
        row(&mut rows, &f.label, &f.stage).failed += f.items;
    }
    let mut run_counts: BTreeMap<(String, String, RunState), i64> = BTreeMap::new();
    for g in &runs {
        row(&mut rows, &g.label, &g.stage);
        *run_counts
            .entry((g.label.clone(), g.stage.clone(), g.state))
            .or_default() += g.runs;
    }
    let now = crate::db::now();
    for r in rows.values_mut() {
        let filter = format!("label={}&stage={}", q(&r.label), q(&r.stage));
        r.runs = crate::state::ALL
            .iter()
            .map(|st| {
                let n = run_counts
                    .get(&(r.label.clone(), r.stage.clone(), *st))
                    .copied()
                    .unwrap_or(0);
                (n, ctx.runs_href(&format!("{filter}&state={st}")))
            })
            .collect();
        if let Some(o) = open
            .iter()
            .find(|o| o.label == r.label && o.stage == r.stage)
        {
            r.oldest = format!(
                "{} ({})",
                age(&(now - o.state_since).num_seconds()),
                o.state
            );
            r.oldest_href = ctx.run_href(&o.remote_id);
        }
        r.bar = stacked_bar(
            &[
                (r.done, "#2e7d32", "done"),
                (r.abandoned, "#b3261e", "abandoned"),
                (r.in_runs, "#1565c0", "in runs"),
                (r.waiting.max(0), "#bdbdbd", "waiting"),
            ],
            160.0,
        );
    }
    let mut remaining: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows.values() {
        *remaining.entry(r.label.clone()).or_default() += r.waiting.max(0) + r.in_runs;
    }
    let etas = remaining
        .into_iter()
        .map(|(label, left)| {
            let per_day = pace.get(&label).copied().unwrap_or(0);
            Eta {
                eta: eta(left, per_day),
                label,
                remaining: left,
                pace: per_day,
            }
        })
        .collect();
    let body = Page {
        intervals: intervals(ctx, "table", "", &since_name),
        states: crate::state::ALL.iter().map(|s| s.as_str()).collect(),
        rows: rows.into_values().collect(),
        etas,
    }
    .render()?;
    Ok(body)
}

pub fn page(s: &mut Session, query: &TableQuery, ctx: &Ctx) -> anyhow::Result<String> {
    framed(ctx, "Table", &body(s, query, ctx)?, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etas_read_as_people_say_them() {
        assert_eq!(eta(0, 0), "done");
        assert!(eta(5, 0).starts_with("no pace"));
        assert_eq!(eta(100, 200), "in 12h 00m");
    }
}
