//! Slurm: sbatch, squeue, sacct, scancel; `#SBATCH` directives.

use anyhow::anyhow;

use super::{JobState, NoUsage, Scheduler, Usage};
use crate::scripts::{job_name, JobSpec};

pub struct Slurm;

macro_rules! usage_fields {
    () => {
        "JobID,State,ElapsedRaw,AllocCPUS,TotalCPU,NNodes,ReqNodes,TimelimitRaw"
    };
}

/// The fields [`Slurm::parse_usage`] reads, in its order (`sacct -o`).
pub const USAGE_FIELDS: &str = usage_fields!();

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

    /// Every record of the job, its steps too: the job's own line carries
    /// the steps' CPU time summed (`-X` would show none).
    fn usage_script(&self) -> Option<&'static str> {
        Some(concat!("sacct -n -P -j \"$1\" -o ", usage_fields!()))
    }

    /// None until accounting has the job's end, whole (it arrives a moment
    /// after the queue forgets the job, and a record can show its end
    /// before its time limit and CPU time are filled in: an empty field is
    /// asked again; `UNLIMITED` is an answer). The newest record of the id:
    /// a controller that started its ids again has older ones first.
    fn parse_usage(&self, out: &str, job_id: &str, _job_name: &str) -> Option<Usage> {
        let line = out.lines().rfind(|l| l.split('|').next() == Some(job_id))?;
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 8 || f[4].trim().is_empty() || f[7].trim().is_empty() {
            return None;
        }
        let int = |s: &str| s.trim().parse::<i64>().ok();
        let state = f[1].split_whitespace().next()?;
        if !FINAL.contains(&state) {
            return None;
        }
        Some(Usage {
            source: "sacct",
            final_state: Some(state.to_string()),
            elapsed_s: int(f[2])?,
            alloc_cpus: int(f[3])?,
            cpu_s: cpu_time(f[4]),
            nodes: int(f[5])?,
            req_nodes: int(f[6]).unwrap_or_else(|| int(f[5]).unwrap_or(0)),
            timelimit_s: int(f[7]).map(|m| m * 60),
        })
    }

    /// A cluster without accounting says so; anything else (slurmdbd
    /// down, a refused connection) is a failure worth a warning.
    fn usage_failure(&self, _status: Option<i32>, stderr: &str) -> NoUsage {
        if stderr.contains("accounting storage is disabled") {
            NoUsage::NotKept
        } else {
            NoUsage::Failed
        }
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

/// Seconds in sacct's `[D-][HH:]MM:SS[.mmm]`.
fn cpu_time(s: &str) -> Option<f64> {
    let s = s.trim();
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<f64>().ok()?, r),
        None => (0.0, s),
    };
    let parts: Vec<f64> = rest
        .split(':')
        .map(|p| p.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let (h, m, sec) = match parts[..] {
        [m, s] => (0.0, m, s),
        [h, m, s] => (h, m, s),
        _ => return None,
    };
    Some(days * 86400.0 + h * 3600.0 + m * 60.0 + sec)
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

    #[test]
    fn sacct_usage_parses() {
        let s = Slurm;
        // sacct 22.05 on the testbed: the job's line, then its steps.
        let out = "280|COMPLETED|2|8|00:02.511|1|1|10\n280.batch|COMPLETED|2|8|00:00.015|1|1|\n280.0|COMPLETED|2|8|00:02.495|1|1|\n";
        let u = s.parse_usage(out, "280", "j").unwrap();
        assert_eq!(u.final_state.as_deref(), Some("COMPLETED"));
        assert_eq!(
            (u.elapsed_s, u.alloc_cpus, u.nodes, u.req_nodes),
            (2, 8, 1, 1)
        );
        assert!((u.cpu_s.unwrap() - 2.511).abs() < 1e-9);
        assert_eq!(u.timelimit_s, Some(600));
        assert_eq!(s.parse_usage(out, "28", "j"), None);
        assert_eq!(s.parse_usage("", "280", "j"), None);
        // Not ended in accounting yet.
        assert_eq!(
            s.parse_usage("280|RUNNING|2|8|00:01.000|1|1|10\n", "280", "j"),
            None
        );
        let u = s
            .parse_usage(
                "9|CANCELLED by 0|3600|48|1-02:03:04|2|4|UNLIMITED\n",
                "9",
                "j",
            )
            .unwrap();
        assert_eq!(u.final_state.as_deref(), Some("CANCELLED"));
        assert_eq!(u.cpu_s, Some(86400.0 + 2.0 * 3600.0 + 3.0 * 60.0 + 4.0));
        assert_eq!((u.req_nodes, u.timelimit_s), (4, None));
        assert_eq!(cpu_time("12:34:56"), Some(45296.0));
        assert_eq!(u.source, "sacct");
        // A record whose time limit or CPU time is not filled in yet is
        // asked again; of an id's records, the newest counts.
        assert_eq!(
            s.parse_usage("5|COMPLETED|2|8|00:01.000|1|1|\n", "5", "j"),
            None
        );
        assert_eq!(s.parse_usage("5|COMPLETED|2|8||1|1|10\n", "5", "j"), None);
        let u = s
            .parse_usage(
                "5|COMPLETED|900|4|00:01.000|1|1|60\n5|COMPLETED|2|8|00:01.000|1|1|10\n",
                "5",
                "j",
            )
            .unwrap();
        assert_eq!((u.elapsed_s, u.timelimit_s), (2, Some(600)));
        assert_eq!(
            s.usage_failure(Some(1), "Slurm accounting storage is disabled\n"),
            NoUsage::NotKept
        );
        assert_eq!(
            s.usage_failure(
                Some(1),
                "sacct: error: Problem talking to the database: Connection refused\n"
            ),
            NoUsage::Failed
        );
        assert_eq!(cpu_time("junk"), None);
    }
}
