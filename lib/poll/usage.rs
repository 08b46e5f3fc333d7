//! What an ended job cost: the site's accounting where it keeps one
//! (Slurm's sacct, Grid Engine's qacct), else an estimate from what the run asked for (its
//! `run.json`) and the job summary's wall time. One record per job, which
//! `remotetool report` reads.

use std::path::Path;

use crate::db::models::{JobRecord, Run};
use crate::db::{self, Db};
use crate::exit;
use crate::printer::Printer;
use crate::scheduler::Site;

/// Record what job `job_id` of the run used. Never fails the poll: a job
/// whose cost cannot be read or written is a warning.
pub fn record(
    db: &mut Db,
    site: &dyn Site,
    run: &Run,
    job: (&str, &str),
    local_run: &Path,
    printer: &Printer,
) {
    let (job_id, job_name) = job;
    let accounted = match site.usage(job_id, job_name) {
        Ok(u) => u,
        Err(e) => {
            printer.warn(format!(
                "run {}: cannot read job {job_id}'s accounting ({}); its cost is an estimate",
                run.remote_id,
                exit::one_line(&e)
            ));
            None
        }
    };
    let row = match accounted {
        Some(u) => JobRecord {
            remote_id: run.remote_id,
            job_id: job_id.to_string(),
            attempt: run.attempt,
            source: u.source.into(),
            final_state: u.final_state,
            elapsed_s: Some(u.elapsed_s),
            alloc_cpus: Some(u.alloc_cpus),
            cpu_s: u.cpu_s,
            nodes: Some(u.nodes),
            req_nodes: Some(u.req_nodes),
            timelimit_s: u.timelimit_s,
            recorded_at: db::now(),
        },
        None => estimate(run.remote_id, run.attempt, job_id, local_run),
    };
    if let Err(e) = db.tx(|s| Ok(s.record_job(&row)?)) {
        printer.warn(format!(
            "run {}: could not record job {job_id}'s cost: {}",
            run.remote_id,
            exit::one_line(&e)
        ));
    }
}

/// Where the site keeps no accounting: what the run asked for (prepare's
/// `run.json`), and the wall time between the job summary's `started` and
/// `ended` (none without a summary).
fn estimate(remote_id: i64, attempt: i32, job_id: &str, local_run: &Path) -> JobRecord {
    let plan: Option<serde_json::Value> = std::fs::read(local_run.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let alloc = plan.as_ref().map(|p| &p["allocation"]);
    let num = |k: &str| alloc.and_then(|a| a[k].as_i64());
    let nodes = num("nodes");
    let summary = std::fs::read_to_string(local_run.join("job-summary.txt")).unwrap_or_default();
    let field = |k: &str| {
        summary
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let elapsed = match (field("started"), field("ended")) {
        (Some(a), Some(b)) if b >= a => Some(b - a),
        _ => None,
    };
    JobRecord {
        remote_id,
        job_id: job_id.to_string(),
        attempt,
        source: "estimate".into(),
        final_state: None,
        elapsed_s: elapsed,
        alloc_cpus: num("ranks").zip(num("threads")).map(|(r, t)| r * t),
        cpu_s: None,
        nodes,
        req_nodes: nodes,
        timelimit_s: num("hours").map(|h| h * 3600),
        recorded_at: db::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_read_the_plan_and_the_summary() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("run.json"),
            r#"{"allocation": {"nodes": 2, "ranks": 24, "threads": 2, "hours": 3}}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("job-summary.txt"),
            "job_id=7\nstarted=1000\nended=1600\n",
        )
        .unwrap();
        let r = estimate(5, 1, "7", d.path());
        assert_eq!(r.source, "estimate");
        assert_eq!(
            (
                r.elapsed_s,
                r.alloc_cpus,
                r.nodes,
                r.req_nodes,
                r.timelimit_s
            ),
            (Some(600), Some(48), Some(2), Some(2), Some(10800))
        );
        // Without a summary, no wall time; without a plan, nothing asked.
        let empty = tempfile::tempdir().unwrap();
        let r = estimate(5, 1, "7", empty.path());
        assert_eq!((r.elapsed_s, r.nodes, r.timelimit_s), (None, None, None));
    }
}
