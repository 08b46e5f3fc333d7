//! Moab: msub, checkjob, showq --xml, mjobctl -c; `#MSUB` directives,
//! and `srun` inside the job (Moab over Slurm, as at the original site).
//!
//! Not run against a real Moab: no server could be had. The formats are
//! those Moab's documentation gives for each command (msub prints the job
//! id, possibly after blank lines; `checkjob` has a `State: NAME` line and,
//! once ended, `Completion Code: N`; `showq --xml` has one
//! `<job JobID=... JobName=... State=...>` element a job), kept to the few
//! fields offload reads, and checked against the outputs recorded from
//! those documented formats in `fixtures/moab/`.

use anyhow::anyhow;

use super::{JobState, Scheduler};
use crate::scripts::{job_name, JobSpec};

pub struct Moab;

/// (JobID, JobName, State) of each `<job .../>` in `showq --xml`.
pub fn parse_showq(text: &str) -> Vec<(String, String, String)> {
    let attr = |el: &str, k: &str| -> String {
        let key = format!(" {k}=\"");
        el.split_once(&key)
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(v, _)| v.to_string())
            .unwrap_or_default()
    };
    text.split("<job ")
        .skip(1)
        .map(|b| {
            let el = format!(" {}", b.split('>').next().unwrap_or(""));
            (attr(&el, "JobID"), attr(&el, "JobName"), attr(&el, "State"))
        })
        .collect()
}

const ENDED: &[&str] = &["Completed", "Removed", "Vacated"];

impl Scheduler for Moab {
    fn name(&self) -> &'static str {
        "moab"
    }

    fn directives(&self, j: &JobSpec<'_>) -> String {
        let a = j.alloc;
        let per_node = a.ranks.div_ceil(a.nodes.max(1)) * a.threads;
        let mut s = String::new();
        s.push_str(&format!(
            "#MSUB -N {}\n",
            job_name(j.job_prefix, j.remote_id, j.attempt)
        ));
        s.push_str(&format!(
            "#MSUB -l nodes={}:ppn={per_node},walltime={}\n",
            a.nodes,
            a.walltime()
        ));
        s.push_str(&format!(
            "#MSUB -o {}/job-moab.out\n#MSUB -j oe\n",
            j.remote_run
        ));
        if let Some(p) = j.partition {
            s.push_str(&format!("#MSUB -q {p}\n"));
        }
        if let Some(acc) = j.account {
            s.push_str(&format!("#MSUB -A {acc}\n"));
        }
        s
    }

    fn job_id_expr(&self) -> &'static str {
        "${MOAB_JOBID:-${SLURM_JOB_ID:-}}"
    }

    fn nodes_expr(&self) -> &'static str {
        "${SLURM_JOB_NODELIST:-${MOAB_NODELIST:-}}"
    }

    fn submit_command(&self) -> &'static str {
        "msub"
    }

    fn submit_script(&self) -> &'static str {
        "msub -N \"$2\" job.sh"
    }

    /// The last line that is not empty: `12345` or `Moab.12345`.
    fn parse_submit(&self, out: &str) -> anyhow::Result<String> {
        let id = out
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("");
        let ok = !id.is_empty()
            && id.chars().any(|c| c.is_ascii_digit())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !ok {
            return Err(anyhow!("msub printed no job id: {out:?}"));
        }
        Ok(id.to_string())
    }

    fn find_script(&self) -> &'static str {
        "showq --xml"
    }

    fn parse_find(&self, out: &str, name: &str) -> Option<String> {
        parse_showq(out)
            .into_iter()
            .find(|(_, n, st)| n == name && !ENDED.contains(&st.as_str()))
            .map(|(id, _, _)| id)
    }

    fn state_script(&self) -> &'static str {
        "checkjob \"$1\""
    }

    fn parse_state(&self, status: Option<i32>, out: &str, _job_id: &str) -> Option<JobState> {
        if status != Some(0) {
            return None;
        }
        let field = |k: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let state = field("State:")?;
        let state = state.split_whitespace().next().unwrap_or("").to_string();
        if ENDED.contains(&state.as_str()) {
            let code = field("Completion Code:")
                .and_then(|c| c.split_whitespace().next().map(str::to_string));
            return Some(JobState::Ended(Some(match code {
                Some(c) => format!("{state} code={c}"),
                None => state,
            })));
        }
        Some(JobState::Active(state))
    }

    /// Moab keeps an ended job for checkjob a while; after that the
    /// job's summary decides.
    fn accounting_script(&self) -> Option<&'static str> {
        None
    }

    fn parse_accounting(&self, _out: &str) -> Option<String> {
        None
    }

    fn cancel_command(&self) -> &'static str {
        "mjobctl -c"
    }

    fn cancel_script(&self) -> &'static str {
        "mjobctl -c \"$1\""
    }

    fn cancel_gone(&self, stderr: &str) -> bool {
        stderr.contains("cannot locate job") || stderr.contains("invalid job")
    }

    fn queue_script(&self) -> &'static str {
        "showq --xml"
    }

    fn parse_queue(&self, out: &str, mine: &str) -> (u64, u64) {
        let (mut pending, mut running) = (0, 0);
        for (_, name, st) in parse_showq(out) {
            if !name.starts_with(mine) {
                continue;
            }
            match st.as_str() {
                "Running" | "Starting" => running += 1,
                "Idle" | "Hold" | "UserHold" | "SystemHold" | "BatchHold" | "Deferred"
                | "Blocked" | "Staging" | "NotQueued" => pending += 1,
                _ => {}
            }
        }
        (pending, running)
    }

    /// Removed (over its walltime, preempted) or vacated (its node lost)
    /// by Moab.
    fn cut_short(&self, final_state: &str) -> bool {
        matches!(
            final_state.split_whitespace().next(),
            Some("Removed" | "Vacated")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/fixtures/moab/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Against outputs written from Moab's documented formats (not a real
    /// Moab's: see fixtures/moab/README).
    #[test]
    fn documented_outputs_parse() {
        let m = Moab;
        assert_eq!(m.parse_submit(&fixture("msub.txt")).unwrap(), "Moab.4821");
        let q = fixture("showq-xml.txt");
        assert_eq!(
            m.parse_find(&q, "offload-r12-a0").as_deref(),
            Some("Moab.4821")
        );
        assert_eq!(m.parse_find(&q, "offload-r99-a0"), None);
        assert_eq!(m.parse_queue(&q, "offload-r"), (2, 1));
        assert_eq!(
            m.parse_state(Some(0), &fixture("checkjob-running.txt"), "Moab.4821"),
            Some(JobState::Active("Running".into()))
        );
        let done = m.parse_state(Some(0), &fixture("checkjob-completed.txt"), "Moab.4821");
        assert_eq!(done, Some(JobState::Ended(Some("Completed code=0".into()))));
        let cut = m.parse_state(Some(0), &fixture("checkjob-removed.txt"), "Moab.4822");
        assert_eq!(cut, Some(JobState::Ended(Some("Removed code=-11".into()))));
        assert!(m.cut_short("Removed code=-11") && !m.cut_short("Completed code=0"));
        assert_eq!(
            m.parse_state(Some(1), "ERROR:  cannot locate job 'x'\n", "x"),
            None
        );
    }
}
