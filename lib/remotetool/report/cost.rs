//! What a run cost: from its jobs' accounting records, else the estimate
//! from its components' runtime and the recipe's threads per command.

use crate::db::models::JobRecord;
use crate::db::usage::RunKey;

use super::RunCost;

/// Where a cost comes from when the site's accounting (`sacct`, `qacct`:
/// the command it came from) has none.
pub(super) const ESTIMATE: &str = "estimate";

pub(super) fn add(a: &mut Option<f64>, b: Option<f64>) {
    if let Some(b) = b {
        *a = Some(a.unwrap_or(0.0) + b);
    }
}

/// Sources joined with `+`, accounting's first, the estimate last.
pub(super) fn merge_source(a: &mut Option<String>, b: Option<&str>) {
    let Some(b) = b else { return };
    let mut parts: Vec<&str> = a
        .as_deref()
        .map(|x| x.split('+').collect())
        .unwrap_or_default();
    if !parts.contains(&b) {
        parts.push(b);
    }
    parts.sort_by_key(|p| (*p == ESTIMATE, *p));
    *a = Some(parts.join("+"));
}

pub(super) fn ratio(used: Option<f64>, asked: Option<f64>) -> Option<f64> {
    match (used, asked) {
        (Some(u), Some(a)) if a > 0.0 => Some(u / a),
        _ => None,
    }
}

/// A run's cost from its jobs' records, else the estimate from its
/// components' runtime (`runtime_s`) and the recipe's `threads`.
pub(super) fn run_cost(
    key: RunKey,
    jobs: &[&JobRecord],
    runtime_s: f64,
    threads: Option<u32>,
) -> RunCost {
    let RunKey {
        remote_id,
        label,
        stage,
        state,
    } = key;
    let accounted = !jobs.is_empty() && jobs.iter().all(|j| j.source != ESTIMATE);
    let product = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| (a * b) as f64 / 3600.0);
    let sum = |f: &dyn Fn(&JobRecord) -> Option<f64>| -> Option<f64> {
        let mut s = None;
        for j in jobs {
            add(&mut s, f(j));
        }
        s
    };
    let (core_hours, cpu_hours, source) = if accounted {
        let cpu = jobs
            .iter()
            .all(|j| j.cpu_s.is_some())
            .then(|| sum(&|j| j.cpu_s.map(|c| c / 3600.0)))
            .flatten();
        (
            sum(&|j| product(j.elapsed_s, j.alloc_cpus)),
            cpu,
            Some(jobs[0].source.clone()),
        )
    } else if !jobs.is_empty() || runtime_s > 0.0 {
        let core = threads.map(|t| runtime_s * t as f64 / 3600.0);
        (core, None, core.map(|_| ESTIMATE.to_string()))
    } else {
        (None, None, None)
    };
    let node_hours = sum(&|j| product(j.elapsed_s, j.nodes));
    let requested_node_hours = sum(&|j| product(j.timelimit_s, j.req_nodes));
    RunCost {
        remote_id,
        label,
        stage,
        state,
        jobs: jobs.len(),
        runtime_hours: runtime_s / 3600.0,
        core_hours,
        cpu_hours,
        node_hours,
        requested_node_hours,
        of_request: ratio(node_hours, requested_node_hours),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remotetool::report::render::percent;

    const SACCT: &str = "sacct";

    fn job(
        source: &str,
        elapsed: i64,
        cpus: i64,
        cpu_s: Option<f64>,
        nodes: i64,
        limit: i64,
    ) -> JobRecord {
        JobRecord {
            remote_id: 1,
            job_id: "7".into(),
            attempt: 0,
            source: source.into(),
            final_state: None,
            elapsed_s: Some(elapsed),
            alloc_cpus: Some(cpus),
            cpu_s,
            nodes: Some(nodes),
            req_nodes: Some(nodes),
            timelimit_s: Some(limit),
            recorded_at: crate::db::now(),
        }
    }

    fn key() -> RunKey {
        RunKey {
            remote_id: 1,
            label: "L".into(),
            stage: "chip".into(),
            state: crate::state::RunState::Full,
        }
    }

    #[test]
    fn accounting_wins_over_the_estimate() {
        // Two jobs (the first cut at its limit): 1 h x 48 CPUs + 0.5 h x 48.
        let a = job(SACCT, 3600, 48, Some(36000.0), 2, 3600);
        let b = job(SACCT, 1800, 48, Some(18000.0), 2, 3600);
        let c = run_cost(key(), &[&a, &b], 999.0, Some(2));
        assert_eq!(c.source.as_deref(), Some(SACCT));
        assert_eq!(c.core_hours, Some(72.0));
        assert_eq!(c.cpu_hours, Some(15.0));
        assert_eq!(c.node_hours, Some(3.0));
        assert_eq!(c.requested_node_hours, Some(4.0));
        assert_eq!(c.of_request, Some(0.75));
        assert_eq!(percent(c.of_request), "75 %");
    }

    #[test]
    fn without_accounting_the_estimate_says_so() {
        let e = job(ESTIMATE, 600, 48, None, 2, 3600);
        let c = run_cost(key(), &[&e], 7200.0, Some(2));
        assert_eq!(c.source.as_deref(), Some(ESTIMATE));
        assert_eq!(c.core_hours, Some(4.0));
        assert_eq!(c.cpu_hours, None);
        assert_eq!(c.node_hours.map(|h| (h * 3600.0).round()), Some(1200.0));
        // One job without accounting makes the whole run an estimate.
        let a = job(SACCT, 3600, 48, Some(1.0), 2, 3600);
        assert_eq!(
            run_cost(key(), &[&a, &e], 7200.0, Some(2))
                .source
                .as_deref(),
            Some(ESTIMATE)
        );
        // No job, no runtime: nothing to say.
        let c = run_cost(key(), &[], 0.0, Some(2));
        assert_eq!((c.core_hours, c.source), (None, None));
        let mut s = None;
        merge_source(&mut s, Some(SACCT));
        merge_source(&mut s, Some(SACCT));
        assert_eq!(s.as_deref(), Some("sacct"));
        merge_source(&mut s, Some(ESTIMATE));
        merge_source(&mut s, Some(SACCT));
        assert_eq!(s.as_deref(), Some("sacct+estimate"));
        // Grid Engine's accounting is as good as Slurm's.
        let q = job("qacct", 3600, 4, Some(100.0), 1, 7200);
        let c = run_cost(key(), &[&q], 3000.0, Some(2));
        assert_eq!(
            (c.source.as_deref(), c.core_hours),
            (Some("qacct"), Some(4.0))
        );
        let mut s = None;
        merge_source(&mut s, Some(ESTIMATE));
        merge_source(&mut s, Some("qacct"));
        merge_source(&mut s, Some(SACCT));
        assert_eq!(s.as_deref(), Some("qacct+sacct+estimate"));
    }
}
