//! Grid Engine: qsub -terse, qstat -xml, qacct, qdel; `#$` directives,
//! the job's slots from the target's parallel environment. Tested on the
//! testbed's one-host cell (Debian's gridengine 8.1.9).

use anyhow::anyhow;

use super::{JobState, Scheduler};
use crate::scripts::{job_name, JobSpec};

pub struct Sge;

/// (number, name, state) of each job in `qstat -xml`.
pub fn parse_xml(text: &str) -> Vec<(String, String, String)> {
    let tag = |block: &str, t: &str| -> String {
        let open = format!("<{t}>");
        let close = format!("</{t}>");
        block
            .split_once(&open)
            .and_then(|(_, r)| r.split_once(&close))
            .map(|(v, _)| xml_unescape(v.trim()))
            .unwrap_or_default()
    };
    text.split("<job_list")
        .skip(1)
        .map(|b| {
            let b = b.split("</job_list>").next().unwrap_or("");
            (tag(b, "JB_job_number"), tag(b, "JB_name"), tag(b, "state"))
        })
        .collect()
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

impl Scheduler for Sge {
    fn name(&self) -> &'static str {
        "sge"
    }

    fn directives(&self, j: &JobSpec<'_>) -> String {
        let a = j.alloc;
        let mut s = String::new();
        s.push_str(&format!(
            "#$ -N {}\n#$ -S /bin/bash\n",
            job_name(j.job_prefix, j.remote_id, j.attempt)
        ));
        s.push_str(&format!(
            "#$ -pe {} {}\n",
            j.parallel_environment,
            a.ranks * a.threads
        ));
        s.push_str(&format!("#$ -l h_rt={}\n", a.walltime()));
        s.push_str(&format!(
            "#$ -o {}/job-$JOB_ID.out\n#$ -j y\n",
            j.remote_run
        ));
        if let Some(p) = j.partition {
            s.push_str(&format!("#$ -q {p}\n"));
        }
        if let Some(acc) = j.account {
            s.push_str(&format!("#$ -A {acc}\n"));
        }
        s
    }

    fn job_id_expr(&self) -> &'static str {
        "${JOB_ID:-}"
    }

    fn nodes_expr(&self) -> &'static str {
        "$(cut -d' ' -f1 \"${PE_HOSTFILE:-/dev/null}\" 2>/dev/null | paste -sd, -)"
    }

    fn submit_command(&self) -> &'static str {
        "qsub"
    }

    fn submit_script(&self) -> &'static str {
        "qsub -terse -N \"$2\" job.sh"
    }

    /// `-terse`: the job number alone (`N.1-10:1` for an array).
    fn parse_submit(&self, out: &str) -> anyhow::Result<String> {
        let line = out
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let id = line.split('.').next().unwrap_or("");
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(anyhow!("qsub printed no job id: {out:?}"));
        }
        Ok(id.to_string())
    }

    fn find_script(&self) -> &'static str {
        "qstat -u '*' -xml"
    }

    fn parse_find(&self, out: &str, name: &str) -> Option<String> {
        parse_xml(out)
            .into_iter()
            .find(|(_, n, _)| n == name)
            .map(|(id, _, _)| id)
    }

    fn state_script(&self) -> &'static str {
        "qstat -u '*' -xml"
    }

    /// A job the queue lists is active (whatever its letters: qw, hqw, r,
    /// t, s, Eqw, dr); an ended one has left the list.
    fn parse_state(&self, status: Option<i32>, out: &str, job_id: &str) -> Option<JobState> {
        if status != Some(0) || !out.contains("<job_info") {
            return None;
        }
        parse_xml(out)
            .into_iter()
            .find(|(id, _, _)| id == job_id)
            .map(|(_, _, st)| JobState::Active(st))
    }

    fn accounting_script(&self) -> Option<&'static str> {
        Some("qacct -j \"$1\"")
    }

    /// `failed=N (reason) exit_status=M` from qacct's record (the last,
    /// for a job number the cell has reused).
    fn parse_accounting(&self, out: &str) -> Option<String> {
        let mut failed = None;
        let mut exit = None;
        for l in out.lines() {
            if let Some(v) = l.strip_prefix("failed") {
                failed = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("exit_status") {
                exit = v.split_whitespace().next().map(str::to_string);
            }
        }
        let failed = failed?;
        let (n, why) = match failed.split_once(':') {
            Some((n, why)) => (n.trim().to_string(), format!(" ({})", why.trim())),
            None => (failed.clone(), String::new()),
        };
        Some(format!(
            "failed={n}{why} exit_status={}",
            exit.unwrap_or_default()
        ))
    }

    fn cancel_command(&self) -> &'static str {
        "qdel"
    }

    fn cancel_script(&self) -> &'static str {
        "qdel \"$1\""
    }

    fn cancel_gone(&self, stderr: &str) -> bool {
        stderr.contains("does not exist")
    }

    fn queue_script(&self) -> &'static str {
        "qstat -u '*' -xml"
    }

    fn parse_queue(&self, out: &str, mine: &str) -> (u64, u64) {
        let (mut pending, mut running) = (0, 0);
        for (_, name, st) in parse_xml(out) {
            if !name.starts_with(mine) {
                continue;
            }
            if st.contains('q') {
                pending += 1;
            } else if st.contains('r') || st.contains('t') {
                running += 1;
            }
        }
        (pending, running)
    }

    /// Grid Engine failed the job (`failed` not 0: a limit such as h_rt
    /// enforced, the host lost, the job killed by a signal).
    fn cut_short(&self, final_state: &str) -> bool {
        final_state
            .strip_prefix("failed=")
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .is_some_and(|n| !n.is_empty() && n != "0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/fixtures/sge/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Recorded on the testbed's Grid Engine cell.
    #[test]
    fn recorded_outputs_parse() {
        let s = Sge;
        let q = fixture("qstat-u-xml.txt");
        assert_eq!(s.parse_find(&q, "sgetest-r2-a0").as_deref(), Some("4"));
        assert_eq!(s.parse_find(&q, "sgetest-r1-a0").as_deref(), Some("3"));
        assert_eq!(s.parse_find(&q, "sgetest-r9-a0"), None);
        assert_eq!(s.parse_queue(&q, "sgetest-r"), (1, 2));
        assert_eq!(
            s.parse_state(Some(0), &q, "5"),
            Some(JobState::Active("hqw".into()))
        );
        assert_eq!(s.parse_state(Some(0), &q, "6"), None);
        let done = s.parse_accounting(&fixture("qacct-completed.txt")).unwrap();
        assert_eq!(done, "failed=0 exit_status=0");
        assert!(!s.cut_short(&done));
        let killed = s.parse_accounting(&fixture("qacct-h_rt.txt")).unwrap();
        assert_eq!(
            killed,
            "failed=37 (qmaster enforced h_rt, h_cpu, or h_vmem limit) exit_status=137"
        );
        assert!(s.cut_short(&killed));
        assert_eq!(s.parse_submit("3\n").unwrap(), "3");
        assert_eq!(s.parse_submit("12.1-4:1\n").unwrap(), "12");
        assert!(s.parse_submit("Unable to run job\n").is_err());
        assert!(s.cancel_gone("denied: job \"5\" does not exist"));
    }
}
