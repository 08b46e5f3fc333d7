//! Slurm: sbatch, squeue, sacct, scancel; `#SBATCH` directives.

use anyhow::anyhow;

use super::{JobState, Scheduler};
use crate::scripts::{job_name, JobSpec};

pub struct Slurm;

/// Slurm's final states.
const FINAL: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
];

impl Scheduler for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn directives(&self, j: &JobSpec<'_>) -> String {
        let a = j.alloc;
        let mut s = String::new();
        s.push_str(&format!(
            "#SBATCH --job-name={}\n",
            job_name(j.job_prefix, j.remote_id, j.attempt)
        ));
        s.push_str(&format!("#SBATCH --nodes={}\n", a.nodes));
        s.push_str(&format!("#SBATCH --ntasks={}\n", a.ranks));
        s.push_str(&format!("#SBATCH --cpus-per-task={}\n", a.threads));
        s.push_str(&format!("#SBATCH --time={}\n", a.walltime()));
        // The run folder exists when the job starts; logs/ is made by the job.
        s.push_str(&format!("#SBATCH --output={}/job-%j.out\n", j.remote_run));
        if let Some(p) = j.partition {
            s.push_str(&format!("#SBATCH --partition={p}\n"));
        }
        if let Some(acc) = j.account {
            s.push_str(&format!("#SBATCH --account={acc}\n"));
        }
        s
    }

    fn job_id_expr(&self) -> &'static str {
        "${SLURM_JOB_ID:-}"
    }

    fn nodes_expr(&self) -> &'static str {
        "${SLURM_JOB_NODELIST:-}"
    }

    fn submit_command(&self) -> &'static str {
        "sbatch"
    }

    fn submit_script(&self) -> &'static str {
        "sbatch --parsable --job-name=\"$2\" job.sh"
    }

    fn parse_submit(&self, out: &str) -> anyhow::Result<String> {
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(anyhow!("sbatch printed no job id: {out:?}"));
        }
        Ok(id)
    }

    fn find_script(&self) -> &'static str {
        "squeue -h -n \"$1\" -o %i"
    }

    fn parse_find(&self, out: &str, _name: &str) -> Option<String> {
        out.split_whitespace().next().map(str::to_string)
    }

    fn state_script(&self) -> &'static str {
        "squeue -h -j \"$1\" -o %T"
    }

    fn parse_state(&self, status: Option<i32>, out: &str, _job_id: &str) -> Option<JobState> {
        if status != Some(0) {
            return None;
        }
        let s = out.split_whitespace().next()?;
        Some(if FINAL.contains(&s) {
            JobState::Ended(Some(s.to_string()))
        } else {
            JobState::Active(s.to_string())
        })
    }

    fn accounting_script(&self) -> Option<&'static str> {
        Some("sacct -n -X -P -j \"$1\" -o State")
    }

    fn parse_accounting(&self, out: &str) -> Option<String> {
        out.split_whitespace().next().map(str::to_string)
    }

    fn cancel_command(&self) -> &'static str {
        "scancel"
    }

    fn cancel_script(&self) -> &'static str {
        "scancel \"$1\""
    }

    fn cancel_gone(&self, stderr: &str) -> bool {
        stderr.contains("already completing or completed") || stderr.contains("Invalid job id")
    }

    fn queue_script(&self) -> &'static str {
        "squeue -h -o '%j %t'"
    }

    fn parse_queue(&self, out: &str, mine: &str) -> (u64, u64) {
        let mut pending = 0;
        let mut running = 0;
        for l in out.lines() {
            let mut f = l.split_whitespace();
            if let (Some(name), Some(st)) = (f.next(), f.next()) {
                if name.starts_with(mine) {
                    match st {
                        "PD" => pending += 1,
                        "R" | "CG" | "CF" => running += 1,
                        _ => {}
                    }
                }
            }
        }
        (pending, running)
    }

    /// Cut short by the site: a time limit, a node's failure, preemption.
    fn cut_short(&self, final_state: &str) -> bool {
        matches!(
            final_state.split_whitespace().next().unwrap_or(""),
            "TIMEOUT" | "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL" | "DEADLINE"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_outputs_parse() {
        let s = Slurm;
        assert_eq!(s.parse_submit("4242\n").unwrap(), "4242");
        assert_eq!(s.parse_submit("4242;cluster\n").unwrap(), "4242");
        assert!(s.parse_submit("error\n").is_err());
        assert_eq!(
            s.parse_state(Some(0), "PENDING\n", "1"),
            Some(JobState::Active("PENDING".into()))
        );
        assert_eq!(
            s.parse_state(Some(0), "TIMEOUT\n", "1"),
            Some(JobState::Ended(Some("TIMEOUT".into())))
        );
        assert_eq!(s.parse_state(Some(1), "", "1"), None);
        assert_eq!(
            s.parse_queue(
                "t1-r1-a0 PD\nt1-r2-a0 R\nother-r1-a0 PD\nt1-r3-a1 CG\n",
                "t1-r"
            ),
            (1, 2)
        );
        assert!(s.cut_short("TIMEOUT") && s.cut_short("NODE_FAIL"));
        assert!(!s.cut_short("COMPLETED") && !s.cut_short("FAILED"));
    }
}
