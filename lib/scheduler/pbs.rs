//! PBS and Torque: qsub, qstat -f, qdel; `#PBS` directives. Tested against
//! Slurm's own PBS wrappers (Debian's `slurm-wlm-torque`), whose `qstat -f`
//! prints what Torque's does (`Job Id:`, then `key = value` lines).
//!
//! A finished job stays in `qstat -f` as `C` while the server keeps it
//! (Torque's `keep_completed`; Slurm's MinJobAge), with `exit_status`
//! where the server records one; after that the queue no longer knows it
//! and poll goes by what the job left (its summary).

use anyhow::anyhow;

use super::{JobState, Scheduler};
use crate::scripts::{job_name, JobSpec};

pub struct Pbs;

/// One job of `qstat -f`: id, name, state, exit status.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PbsJob {
    pub id: String,
    pub name: String,
    pub state: String,
    pub exit_status: Option<i64>,
}

/// Every job of a `qstat -f` listing.
pub fn parse_full(text: &str) -> Vec<PbsJob> {
    let mut jobs: Vec<PbsJob> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(id) = t.strip_prefix("Job Id:") {
            jobs.push(PbsJob {
                id: id.trim().to_string(),
                ..PbsJob::default()
            });
            continue;
        }
        let (Some(job), Some((k, v))) = (jobs.last_mut(), t.split_once(" = ")) else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "job_name" => job.name = v.trim().to_string(),
            "job_state" => job.state = v.trim().to_string(),
            "exit_status" => job.exit_status = v.trim().parse().ok(),
            _ => {}
        }
    }
    jobs
}

/// Finished: `C` (Torque), `F` (PBS Pro's history), `X` (a finished subjob).
fn finished(state: &str) -> bool {
    matches!(state, "C" | "F" | "X")
}

impl Scheduler for Pbs {
    fn name(&self) -> &'static str {
        "pbs"
    }

    fn directives(&self, j: &JobSpec<'_>) -> String {
        let a = j.alloc;
        let per_node = a.ranks.div_ceil(a.nodes.max(1)) * a.threads;
        let mut s = String::new();
        s.push_str(&format!(
            "#PBS -N {}\n",
            job_name(j.job_prefix, j.remote_id, j.attempt)
        ));
        s.push_str(&format!("#PBS -l nodes={}:ppn={per_node}\n", a.nodes));
        s.push_str(&format!("#PBS -l walltime={}\n", a.walltime()));
        s.push_str(&format!(
            "#PBS -o {}/job-pbs.out\n#PBS -j oe\n",
            j.remote_run
        ));
        if let Some(p) = j.partition {
            s.push_str(&format!("#PBS -q {p}\n"));
        }
        if let Some(acc) = j.account {
            s.push_str(&format!("#PBS -A {acc}\n"));
        }
        s
    }

    fn job_id_expr(&self) -> &'static str {
        "${PBS_JOBID:-${SLURM_JOB_ID:-}}"
    }

    fn nodes_expr(&self) -> &'static str {
        "$(sort -u \"${PBS_NODEFILE:-/dev/null}\" 2>/dev/null | paste -sd, -)${SLURM_JOB_NODELIST:-}"
    }

    fn submit_command(&self) -> &'static str {
        "qsub"
    }

    /// The output file on the command line too: Slurm's wrapper sets its
    /// own unless told.
    fn submit_script(&self) -> &'static str {
        "qsub -N \"$2\" -o \"$1/job-pbs.out\" -j oe job.sh"
    }

    /// `1234` or `1234.server`.
    fn parse_submit(&self, out: &str) -> anyhow::Result<String> {
        let id = out
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let ok = id.starts_with(|c: char| c.is_ascii_digit())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-[]@".contains(c));
        if !ok {
            return Err(anyhow!("qsub printed no job id: {out:?}"));
        }
        Ok(id.to_string())
    }

    fn find_script(&self) -> &'static str {
        "qstat -f"
    }

    fn parse_find(&self, out: &str, name: &str) -> Option<String> {
        parse_full(out)
            .into_iter()
            .find(|j| j.name == name && !finished(&j.state))
            .map(|j| j.id)
    }

    fn state_script(&self) -> &'static str {
        "qstat -f \"$1\""
    }

    fn parse_state(&self, status: Option<i32>, out: &str, _job_id: &str) -> Option<JobState> {
        if status != Some(0) {
            return None;
        }
        let job = parse_full(out).into_iter().next()?;
        Some(if finished(&job.state) {
            JobState::Ended(Some(match job.exit_status {
                Some(e) => format!("{} exit_status={e}", job.state),
                None => job.state,
            }))
        } else {
            JobState::Active(job.state)
        })
    }

    /// Torque's `qstat -x` is XML, PBS Pro's is its history: no one
    /// command; the job's summary decides.
    fn accounting_script(&self) -> Option<&'static str> {
        None
    }

    fn parse_accounting(&self, _out: &str) -> Option<String> {
        None
    }

    fn cancel_command(&self) -> &'static str {
        "qdel"
    }

    fn cancel_script(&self) -> &'static str {
        "qdel \"$1\""
    }

    fn cancel_gone(&self, stderr: &str) -> bool {
        stderr.contains("Unknown Job Id") || stderr.contains("has finished")
    }

    fn queue_script(&self) -> &'static str {
        "qstat -f"
    }

    fn parse_queue(&self, out: &str, mine: &str) -> (u64, u64) {
        let (mut pending, mut running) = (0, 0);
        for j in parse_full(out).iter().filter(|j| j.name.starts_with(mine)) {
            match j.state.as_str() {
                "Q" | "H" | "W" | "T" | "S" | "U" => pending += 1,
                "R" | "E" | "B" => running += 1,
                _ => {}
            }
        }
        (pending, running)
    }

    /// Killed by the server: Torque's negative `JOB_EXEC_*` codes (e.g.
    /// -11, over its walltime), PBS Pro's 256 + signal (271: SIGTERM at
    /// the walltime).
    fn cut_short(&self, final_state: &str) -> bool {
        final_state
            .split_once("exit_status=")
            .and_then(|(_, e)| e.trim().parse::<i64>().ok())
            .is_some_and(|e| !(0..256).contains(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/fixtures/pbs/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Recorded from Slurm's PBS wrappers on the testbed.
    #[test]
    fn recorded_qstat_outputs_parse() {
        let p = Pbs;
        let all = fixture("qstat-f.txt");
        assert_eq!(p.parse_find(&all, "pbsfix-r2-a0").as_deref(), Some("239"));
        assert_eq!(p.parse_find(&all, "pbsfix-r9-a0"), None);
        // 238 had ended (C), 239 was held (Slurm's wrapper says Q).
        assert_eq!(p.parse_queue(&all, "pbsfix-r"), (1, 0));
        assert_eq!(p.parse_find(&all, "pbsfix-r1-a0"), None);
        assert_eq!(
            p.parse_state(Some(0), &fixture("qstat-f-held.txt"), "239"),
            Some(JobState::Active("Q".into()))
        );
        assert_eq!(
            p.parse_state(Some(0), &fixture("qstat-f-cancelled.txt"), "239"),
            Some(JobState::Ended(Some("C".into())))
        );
        assert_eq!(p.parse_state(Some(153), "", "239"), None);
        assert_eq!(p.parse_submit("238\n").unwrap(), "238");
        assert_eq!(
            p.parse_submit("1234.pbs01.site\n").unwrap(),
            "1234.pbs01.site"
        );
        assert!(p.parse_submit("qsub: error\n").is_err());
    }

    /// Torque's own format (exit_status of a job over its walltime).
    #[test]
    fn torque_exit_statuses_say_cut_short() {
        let p = Pbs;
        let text = "Job Id: 77.torque01\n    Job_Name = off-r3-a1\n    job_state = C\n    exit_status = -11\n";
        let st = p.parse_state(Some(0), text, "77.torque01");
        assert_eq!(st, Some(JobState::Ended(Some("C exit_status=-11".into()))));
        assert!(p.cut_short("C exit_status=-11"));
        assert!(p.cut_short("F exit_status=271"));
        assert!(!p.cut_short("C exit_status=1"));
        assert!(!p.cut_short("C"));
    }
}
