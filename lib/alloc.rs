//! Sizing the allocation (nodes x walltime) and spreading components over
//! ranks so that ranks finish together.
//!
//! The original formula, kept exactly:
//!
//! ```text
//! core_need      = N * n_threads
//! node_need      = core_need / proc_per_node
//! time_requested = int(node_need * time_cost / (fill_factor * max_nodes)) + 1      (hours)
//! node_requested = int(node_need * time_cost / (fill_factor * time_requested)) + 1
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Allocation {
    pub components: usize,
    pub threads: u32,
    /// Seconds per command used for sizing.
    pub time_cost: f64,
    pub core_need: f64,
    pub node_need: f64,
    pub hours: u32,
    pub nodes: u32,
    pub ranks_per_node: u32,
    /// Ranks actually used: never more than components.
    pub ranks: u32,
}

impl Allocation {
    /// `H:MM:SS` for the scheduler.
    pub fn walltime(&self) -> String {
        format!("{}:00:00", self.hours)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub cores_per_node: u32,
    pub fill_factor: f64,
    pub max_nodes: u32,
    pub max_walltime_hours: u32,
}

/// Size a run of `n` commands; Err names what does not fit and the largest
/// run that would.
pub fn size(n: usize, threads: u32, time_cost_s: f64, l: &Limits) -> Result<Allocation, String> {
    let time_cost_h = time_cost_s / 3600.0;
    let hours_for = |n: usize| {
        let node_need = n as f64 * threads as f64 / l.cores_per_node as f64;
        (node_need * time_cost_h / (l.fill_factor * l.max_nodes as f64)).floor() + 1.0
    };
    let core_need = n as f64 * threads as f64;
    let node_need = core_need / l.cores_per_node as f64;
    let hours_f = hours_for(n);
    if hours_f > l.max_walltime_hours as f64 {
        // The largest run that fits, by the same formula.
        let per_item = threads as f64 / l.cores_per_node as f64 * time_cost_h
            / (l.fill_factor * l.max_nodes as f64);
        let mut fit = (l.max_walltime_hours as f64 / per_item).ceil() as usize + 1;
        while fit > 1 && hours_for(fit) > l.max_walltime_hours as f64 {
            fit -= 1;
        }
        return Err(format!(
            "{n} components of {time_cost_s:.0} s with {threads} threads need {:.0} node-hours, \
             more than {} nodes x {} h at fill factor {} give; define runs of at most {fit} components (--limit {fit})",
            node_need * time_cost_h,
            l.max_nodes,
            l.max_walltime_hours,
            l.fill_factor
        ));
    }
    let hours = hours_f as u32;
    let nodes = (node_need * time_cost_h / (l.fill_factor * hours as f64)).floor() as u32 + 1;
    let ranks_per_node = (l.cores_per_node / threads).max(1);
    let ranks = (nodes as u64 * ranks_per_node as u64).min(n.max(1) as u64) as u32;
    Ok(Allocation {
        components: n,
        threads,
        time_cost: time_cost_s,
        core_need,
        node_need,
        hours,
        nodes,
        ranks_per_node,
        ranks,
    })
}

/// Longest-processing-time-first: each component (costliest first, ties by
/// position) goes to the least loaded rank. Deterministic. Returns, per rank,
/// the component indices in the order they run.
pub fn spread(costs: &[f64], ranks: usize) -> Vec<Vec<usize>> {
    let ranks = ranks.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    // Loads in microseconds so the heap orders integers.
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..ranks).map(|r| Reverse((0, r))).collect();
    let mut out = vec![Vec::new(); ranks];
    for i in order {
        let Reverse((load, r)) = heap.pop().expect("ranks >= 1");
        out[r].push(i);
        heap.push(Reverse((load + (costs[i].max(0.0) * 1e6) as u64, r)));
    }
    for rank in &mut out {
        rank.sort_unstable();
    }
    out
}

/// The `p`th percentile (0-100) of samples, nearest-rank.
pub fn percentile(samples: &mut [f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: Limits = Limits {
        cores_per_node: 24,
        fill_factor: 0.8,
        max_nodes: 1000,
        max_walltime_hours: 12,
    };

    #[test]
    fn the_worked_example() {
        let a = size(37_200, 2, 150.0, &SITE).unwrap();
        assert_eq!(a.core_need, 74_400.0);
        assert_eq!(a.node_need, 3_100.0);
        assert_eq!(a.hours, 1);
        assert_eq!(a.nodes, 162);
        assert_eq!(a.walltime(), "1:00:00");
        assert_eq!(a.ranks_per_node, 12);
        assert_eq!(a.ranks, 162 * 12);
    }

    #[test]
    fn small_runs_use_few_ranks() {
        let a = size(5, 2, 150.0, &SITE).unwrap();
        assert_eq!((a.hours, a.nodes, a.ranks), (1, 1, 5));
    }

    #[test]
    fn too_big_says_what_fits() {
        let l = Limits {
            max_nodes: 10,
            max_walltime_hours: 2,
            ..SITE
        };
        let e = size(100_000, 2, 150.0, &l).unwrap_err();
        assert!(e.contains("--limit"), "{e}");
        let fit: usize = e
            .rsplit("--limit ")
            .next()
            .unwrap()
            .trim_end_matches(')')
            .parse()
            .unwrap();
        assert!(size(fit, 2, 150.0, &l).is_ok());
        assert!(
            size(fit + 1, 2, 150.0, &l).is_err(),
            "{fit} is the largest that fits"
        );
    }

    #[test]
    fn spread_balances_by_cost() {
        let costs = [10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let r = spread(&costs, 2);
        let loads: Vec<f64> = r
            .iter()
            .map(|ix| ix.iter().map(|&i| costs[i]).sum())
            .collect();
        assert_eq!(loads, vec![10.0, 10.0]);
        assert_eq!(r[0], vec![0]);
        let all: usize = r.iter().map(Vec::len).sum();
        assert_eq!(all, costs.len());
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 90.0), Some(90.0));
        assert_eq!(percentile(&mut [], 90.0), None);
    }
}
