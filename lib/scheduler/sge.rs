//! Grid Engine: qsub -terse, qstat -xml, qacct, qdel; `#$` directives,
//! the job's slots from the target's parallel environment. Tested on the
//! testbed's one-host cell (Debian's gridengine 8.1.9).

use std::collections::BTreeSet;

use anyhow::anyhow;

use super::{JobState, NoUsage, Scheduler, Usage};
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

/// One record of `qacct -j`: its `key value` lines, in order.
type Record<'a> = Vec<(&'a str, &'a str)>;

/// The records of `qacct -j`'s answer (each after a line of `=`).
fn qacct_records(text: &str) -> Vec<Record<'_>> {
    let mut records: Vec<Record<'_>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("==") {
            records.push(Vec::new());
            continue;
        }
        let Some((key, value)) = line.trim_end().split_once(char::is_whitespace) else {
            continue;
        };
        match records.last_mut() {
            Some(r) => r.push((key, value.trim())),
            None => records.push(vec![(key, value.trim())]),
        }
    }
    records
}

fn field<'a>(r: &Record<'a>, key: &str) -> Option<&'a str> {
    r.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// `failed=N (reason) exit_status=M` of one record.
fn final_state(r: &Record<'_>) -> Option<String> {
    let failed = field(r, "failed")?;
    let exit = field(r, "exit_status")
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default();
    let (n, why) = match failed.split_once(':') {
        Some((n, why)) => (n.trim(), format!(" ({})", why.trim())),
        None => (failed.trim(), String::new()),
    };
    Some(format!("failed={n}{why} exit_status={exit}"))
}

/// qacct's seconds: `4s`, `0.007s`, `4.000` (older cells).
fn seconds(v: &str) -> Option<f64> {
    v.trim().trim_end_matches('s').parse::<f64>().ok()
}

/// The `h_rt` a job asked for, from its `category` (`-l h_rt=3600,...`
/// or `h_rt=1:00:00`; the last one given, which is the one that holds).
fn h_rt(category: &str) -> Option<i64> {
    let (_, v) = category.rsplit_once("h_rt=")?;
    let v = v.split([',', ' ']).next()?;
    let mut total = 0i64;
    for part in v.split(':') {
        total = total * 60 + part.parse::<i64>().ok()?;
    }
    Some(total)
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
        qacct_records(out)
            .iter()
            .rev()
            .find(|r| field(r, "failed").is_some())
            .and_then(final_state)
    }

    fn usage_script(&self) -> Option<&'static str> {
        Some("qacct -j \"$1\"")
    }

    /// The job's own record: the last of its number and name without a
    /// `pe_taskid` (the name tells it from an older job of a number the
    /// cell reused). A parallel job's tasks started with `qrsh -inherit`
    /// have records of their own, written before the job's: those since
    /// the previous job record are its, their hosts count as its nodes and
    /// their CPU time as its. Elapsed is `ru_wallclock`, CPUs `slots`, the
    /// time limit the `h_rt` of its category. Grid Engine asks for slots,
    /// not nodes: the nodes asked for are the nodes it held.
    fn parse_usage(&self, out: &str, job_id: &str, job_name: &str) -> Option<Usage> {
        let records = qacct_records(out);
        let is_task = |r: &Record<'_>| field(r, "pe_taskid").is_some_and(|t| t != "NONE");
        let is_mine = |r: &Record<'_>| {
            field(r, "jobnumber") == Some(job_id)
                && (job_name.is_empty() || field(r, "jobname") == Some(job_name))
        };
        let at = records.iter().rposition(|r| is_mine(r) && !is_task(r))?;
        let job = &records[at];
        let since = records[..at]
            .iter()
            .rposition(|r| !is_task(r))
            .map_or(0, |p| p + 1);
        let tasks: Vec<&Record<'_>> = records[since..at]
            .iter()
            .filter(|r| is_mine(r) && is_task(r))
            .collect();
        let hosts: BTreeSet<&str> = tasks
            .iter()
            .copied()
            .chain(std::iter::once(job))
            .filter_map(|r| field(r, "hostname"))
            .collect();
        let nodes = hosts.len().max(1) as i64;
        let cpu_s = tasks
            .iter()
            .copied()
            .chain(std::iter::once(job))
            .map(|r| field(r, "cpu").and_then(seconds))
            .sum::<Option<f64>>();
        Some(Usage {
            source: "qacct",
            final_state: final_state(job),
            elapsed_s: seconds(field(job, "ru_wallclock")?)?.round() as i64,
            alloc_cpus: field(job, "slots")?.parse().ok()?,
            cpu_s,
            nodes,
            req_nodes: nodes,
            timelimit_s: field(job, "category").and_then(h_rt),
        })
    }

    /// `error: job id N not found`: the record is not written yet. Any
    /// other complaint (qacct missing: 127; an accounting file it cannot
    /// read) is a failure.
    fn usage_failure(&self, status: Option<i32>, stderr: &str) -> NoUsage {
        if status != Some(127) && stderr.contains("job id") && stderr.contains("not found") {
            NoUsage::NotYet
        } else {
            NoUsage::Failed
        }
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

    /// A two-host job: the tasks `qrsh -inherit` started on each host have
    /// records of their own, written before the job's; a job number the
    /// cell reused has an older record first.
    #[test]
    fn a_parallel_jobs_records_count_its_hosts() {
        let rec = |name: &str, host: &str, task: Option<&str>, wall: &str| {
            format!(
                "==============================================================\nqname        all.q\nhostname     {host}\njobname      {name}\njobnumber    9\nslots        {}\nfailed       0    \nexit_status  0\nru_wallclock {wall}\ncpu          {}s\n{}category     -l h_rt=1:00:00 -pe mpi 48\n",
                if task.is_some() { 1 } else { 48 },
                if task.is_some() { "1000" } else { "7.5" },
                task.map(|t| format!("pe_taskid    {t}\n")).unwrap_or_default(),
            )
        };
        // An older job of the same number, with a task of its own on n3,
        // then this one's two tasks and its own record.
        let out = [
            rec("o-r1-a0", "n3", Some("1.n3"), "11s"),
            rec("o-r1-a0", "old", None, "11s"),
            rec("o-r7-a0", "n2", Some("1.n2"), "90s"),
            rec("o-r7-a0", "n1", Some("2.n1"), "90s"),
            rec("o-r7-a0", "n1", None, "100s"),
        ]
        .concat();
        let u = Sge.parse_usage(&out, "9", "o-r7-a0").unwrap();
        assert_eq!(
            (u.elapsed_s, u.alloc_cpus, u.nodes, u.timelimit_s),
            (100, 48, 2, Some(3600))
        );
        // The tasks' CPU time is the job's too.
        assert_eq!(u.cpu_s, Some(2007.5));
        // The older job is read as itself; a name no record has, not at all
        // (its record is not written yet: ask again).
        let old = Sge.parse_usage(&out, "9", "o-r1-a0").unwrap();
        assert_eq!((old.elapsed_s, old.nodes, old.cpu_s), (11, 2, Some(1007.5)));
        assert_eq!(Sge.parse_usage(&out, "9", "o-r8-a0"), None);
        assert_eq!(h_rt("-l h_rt=3600,h_vmem=2G -pe mpi 4"), Some(3600));
        assert_eq!(h_rt("-l h_rt=60 -l h_rt=0:2:0"), Some(120));
        assert_eq!(h_rt("-l h_rt=INFINITY"), None);
        assert_eq!(h_rt("-pe mpi 4"), None);
    }

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
        // What the jobs used.
        let u = s
            .parse_usage(&fixture("qacct-completed.txt"), "3", "sgetest-r1-a0")
            .unwrap();
        assert_eq!(u.source, "qacct");
        assert_eq!(u.final_state.as_deref(), Some("failed=0 exit_status=0"));
        assert_eq!(
            (
                u.elapsed_s,
                u.alloc_cpus,
                u.nodes,
                u.req_nodes,
                u.timelimit_s
            ),
            (0, 4, 1, 1, Some(60))
        );
        assert!((u.cpu_s.unwrap() - 0.007).abs() < 1e-9);
        let u = s
            .parse_usage(&fixture("qacct-h_rt.txt"), "4", "sgetest-r2-a0")
            .unwrap();
        assert_eq!((u.elapsed_s, u.alloc_cpus, u.timelimit_s), (4, 1, Some(3)));
        assert!(s.cut_short(u.final_state.as_deref().unwrap()));
        assert_eq!(s.parse_usage(&fixture("qacct-h_rt.txt"), "44", "x"), None);
        assert_eq!(
            s.parse_usage(&fixture("qacct-h_rt.txt"), "4", "sgetest-r1-a0"),
            None
        );
        assert_eq!(
            s.usage_failure(Some(1), "error: job id 44 not found\n"),
            NoUsage::NotYet
        );
        assert_eq!(
            s.usage_failure(Some(1), "error: unable to open accounting file\n"),
            NoUsage::Failed
        );
        assert_eq!(
            s.usage_failure(Some(127), "bash: line 1: qacct: command not found\n"),
            NoUsage::Failed
        );
        assert_eq!(s.parse_submit("3\n").unwrap(), "3");
        assert_eq!(s.parse_submit("12.1-4:1\n").unwrap(), "12");
        assert!(s.parse_submit("Unable to run job\n").is_err());
        assert!(s.cancel_gone("denied: job \"5\" does not exist"));
    }
}
