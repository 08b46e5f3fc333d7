//! The pictures where people would rather look than read, each with its
//! numbers in a table under it and as CSV (`/charts/NAME.csv`): results
//! applied per hour (48 hours), the runtimes of each stage's components
//! (a histogram of at most 10,000 from its newest runs, the samples
//! prepare reads, with the `time_cost` it sizes the allocation by
//! marked), core-hours per day (30 days, from the jobs' records) and
//! transfer rates per host (24 hours). Each reads aggregates or a bounded
//! number of rows, never every component.

use std::collections::BTreeMap;

use askama::Template;
use chrono::{DurationRound, NaiveDateTime, TimeDelta};

use super::{framed, Ctx};
use crate::cli::Session;
use crate::recipe::RUNTIME_SAMPLES;
use crate::remotetool::web::svg;

/// Bins of a histogram.
const BINS: usize = 24;
/// Transfers read for the rates at most.
const TRANSFERS: i64 = 5000;

/// One picture and its numbers.
pub struct Chart {
    /// Its name in `/charts/NAME.csv` and its section's id.
    pub name: String,
    pub title: String,
    pub note: String,
    /// The SVG (escaped where it is drawn).
    pub svg: String,
    pub head: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Template)]
#[template(path = "charts.html")]
pub struct Page<'a> {
    pub ctx: &'a Ctx,
    pub charts: Vec<Chart>,
}

fn hour(t: NaiveDateTime) -> NaiveDateTime {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// Results applied per hour over the last 48 hours.
fn throughput(s: &mut Session, now: NaiveDateTime) -> anyhow::Result<Chart> {
    let first = hour(now) - TimeDelta::hours(47);
    let counts: BTreeMap<NaiveDateTime, i64> =
        s.db.read(|st| st.applied_per_hour(first))?
            .into_iter()
            .collect();
    let hours: Vec<NaiveDateTime> = (0..48).map(|h| first + TimeDelta::hours(h)).collect();
    let cols: Vec<(String, f64)> = hours
        .iter()
        .map(|h| {
            (
                h.format("%m-%d %H:00").to_string(),
                counts.get(h).copied().unwrap_or(0) as f64,
            )
        })
        .collect();
    let total: i64 = counts.values().sum();
    Ok(Chart {
        name: "throughput".into(),
        title: "Results applied per hour".into(),
        note: format!("the last 48 hours, UTC: {total} results handed to the pipeline"),
        svg: svg::columns(&cols, "results", None),
        head: vec!["hour (UTC)", "results"],
        rows: hours
            .iter()
            .map(|h| {
                vec![
                    h.format("%Y-%m-%d %H:00").to_string(),
                    counts.get(h).copied().unwrap_or(0).to_string(),
                ]
            })
            .collect(),
    })
}

/// The runtime below which a share `q` of `sorted` lies.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A histogram of each stage's component runtimes, `time_cost` marked
/// (only the chart named `only`, when given).
fn runtimes(s: &mut Session, only: Option<&str>) -> anyhow::Result<Vec<Chart>> {
    // The stages with runs: a stage without any has no runtimes.
    let mut stages: Vec<String> =
        s.db.read(|st| st.run_groups())?
            .into_iter()
            .map(|g| g.stage)
            .collect();
    stages.sort();
    stages.dedup();
    let recipes = s.config.recipes_dir(None);
    let mut out = Vec::new();
    for stage in stages {
        let name = format!("runtimes-{}", super::q(&stage));
        // The CSV's name arrives decoded from the URL.
        if only.is_some_and(|o| o != name && o != format!("runtimes-{stage}")) {
            continue;
        }
        let mut v = s.db.read(|st| st.stage_runtimes(&stage, RUNTIME_SAMPLES))?;
        if v.is_empty() {
            continue;
        }
        // What prepare would size the next run of this stage by.
        let used = crate::recipe::Recipe::load_for_stage(&recipes, &stage)
            .ok()
            .map(|r| r.time_cost_of(&mut v));
        v.sort_by(f64::total_cmp);
        let top = quantile(&v, 0.99)
            .max(used.as_ref().map(|u| u.0).unwrap_or(0.0) * 1.2)
            .max(1.0);
        let width = top / BINS as f64;
        let mut bins = [0i64; BINS];
        let mut over = 0i64;
        for r in &v {
            let b = (r / width) as usize;
            if b < BINS {
                bins[b] += 1;
            } else {
                over += 1;
            }
        }
        // As many decimals as tell the bins apart (sub-second runtimes too).
        let places = (-width.log10().floor()).clamp(0.0, 3.0) as usize;
        let range = |b: usize| {
            format!(
                "{:.places$}-{:.places$} s",
                b as f64 * width,
                (b + 1) as f64 * width
            )
        };
        let cols: Vec<(String, f64)> = bins
            .iter()
            .enumerate()
            .map(|(b, n)| (range(b), *n as f64))
            .collect();
        let mark_text = used.as_ref().map(|u| format!("time_cost {:.0} s", u.0));
        let mut rows: Vec<Vec<String>> = bins
            .iter()
            .enumerate()
            .map(|(b, n)| vec![range(b), n.to_string()])
            .collect();
        rows.push(vec![format!("over {top:.places$} s"), over.to_string()]);
        out.push(Chart {
            name,
            title: format!("Component runtimes of stage {stage}"),
            note: format!(
                "{} done components of its newest runs: median {:.places$} s, 90 % under {:.places$} s; {}",
                v.len(),
                quantile(&v, 0.5),
                quantile(&v, 0.9),
                match &used {
                    Some((t, from)) => format!(
                        "prepare sizes the next run's allocation by time_cost {t:.0} s ({from})"
                    ),
                    None => "no recipe for it here: prepare could not size a run of it".to_string(),
                }
            ),
            svg: svg::columns(
                &cols,
                "components",
                used.as_ref()
                    .zip(mark_text.as_deref())
                    .map(|(u, text)| (u.0 / top, text)),
            ),
            head: vec!["runtime", "components"],
            rows,
        });
    }
    Ok(out)
}

/// Core-hours per day over the last 30 days, from the jobs' records.
fn core_hours(s: &mut Session, now: NaiveDateTime) -> anyhow::Result<Chart> {
    let first = now.date() - chrono::Days::new(29);
    let mut days: BTreeMap<chrono::NaiveDate, (f64, i64)> = (0..30)
        .map(|d| (first + chrono::Days::new(d), (0.0, 0)))
        .collect();
    for j in s.db.read(|st| st.job_records(None, None))? {
        if let (Some(e), Some(c), Some(day)) = (
            j.elapsed_s,
            j.alloc_cpus,
            days.get_mut(&j.recorded_at.date()),
        ) {
            day.0 += (e * c) as f64 / 3600.0;
            day.1 += 1;
        }
    }
    let cols: Vec<(String, f64)> = days
        .iter()
        .map(|(d, (h, _))| (d.format("%m-%d").to_string(), *h))
        .collect();
    Ok(Chart {
        name: "core-hours".into(),
        title: "Core-hours per day".into(),
        note: "the last 30 days, by the day a job's record was read: elapsed time × CPUs allocated, as the batch system accounted them".into(),
        svg: svg::columns(&cols, "core h", None),
        head: vec!["day", "core-hours", "jobs"],
        rows: days
            .iter()
            .map(|(d, (h, n))| vec![d.to_string(), format!("{h:.2}"), n.to_string()])
            .collect(),
    })
}

/// Transfer rates per host and direction, per hour, over 24 hours.
fn transfers(s: &mut Session, now: NaiveDateTime) -> anyhow::Result<Chart> {
    let first = hour(now) - TimeDelta::hours(23);
    let rows = s.db.read(|st| st.transfers_since(first, TRANSFERS))?;
    // (host, direction) -> hour index -> (bytes, seconds, transfers)
    type Hours = BTreeMap<i64, (i64, f64, i64)>;
    let mut per: BTreeMap<(String, String), Hours> = BTreeMap::new();
    for t in rows {
        let h = (hour(t.at) - first).num_hours();
        let e = per
            .entry((t.host, t.direction))
            .or_default()
            .entry(h)
            .or_default();
        e.0 += t.bytes;
        e.1 += t.seconds;
        e.2 += 1;
    }
    let mbs = |b: i64, s: f64| (s > 0.0).then(|| b as f64 / s / 1e6);
    let series: Vec<(String, Vec<Option<f64>>)> = per
        .iter()
        .map(|((host, dir), hours)| {
            (
                format!("{host} {dir}"),
                (0..24)
                    .map(|h| hours.get(&h).and_then(|(b, s, _)| mbs(*b, *s)))
                    .collect(),
            )
        })
        .collect();
    let mut table = Vec::new();
    for ((host, dir), hours) in &per {
        for (h, (b, secs, n)) in hours {
            table.push(vec![
                (first + TimeDelta::hours(*h))
                    .format("%Y-%m-%d %H:00")
                    .to_string(),
                host.clone(),
                dir.clone(),
                n.to_string(),
                format!("{:.1}", *b as f64 / 1e6),
                mbs(*b, *secs)
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    table.sort();
    Ok(Chart {
        name: "transfers".into(),
        title: "Transfer rates per host".into(),
        note: format!(
            "the last 24 hours, per hour: bytes moved over the seconds spent, per front end and direction (at most the newest {TRANSFERS} transfers)"
        ),
        svg: svg::lines(
            &series,
            "MB/s",
            &first.format("%m-%d %H:00").to_string(),
            &hour(now).format("%m-%d %H:00").to_string(),
        ),
        head: vec!["hour (UTC)", "host", "direction", "transfers", "MB", "MB/s"],
        rows: table,
    })
}

/// Every chart, in the page's order.
pub fn gather(s: &mut Session) -> anyhow::Result<Vec<Chart>> {
    let now = crate::db::now();
    let mut out = vec![throughput(s, now)?];
    out.extend(runtimes(s, None)?);
    out.push(core_hours(s, now)?);
    out.push(transfers(s, now)?);
    Ok(out)
}

/// The chart of this name only.
fn one(s: &mut Session, name: &str) -> anyhow::Result<Option<Chart>> {
    let now = crate::db::now();
    Ok(match name {
        "throughput" => Some(throughput(s, now)?),
        "core-hours" => Some(core_hours(s, now)?),
        "transfers" => Some(transfers(s, now)?),
        _ => runtimes(s, Some(name))?.pop(),
    })
}

pub fn body(s: &mut Session, ctx: &Ctx) -> anyhow::Result<String> {
    Ok(Page {
        ctx,
        charts: gather(s)?,
    }
    .render()?)
}

pub fn page(s: &mut Session, ctx: &Ctx) -> anyhow::Result<String> {
    framed(ctx, "Charts", &body(s, ctx)?, false)
}

/// One chart's numbers as CSV, or None when there is no such chart.
pub fn csv(s: &mut Session, name: &str) -> anyhow::Result<Option<String>> {
    let Some(chart) = one(s, name)? else {
        return Ok(None);
    };
    let mut out = super::csv_line(&chart.head);
    for r in &chart.rows {
        out.push_str(&super::csv_line(r));
    }
    Ok(Some(out))
}
