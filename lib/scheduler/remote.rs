//! A remote site: its front ends, reached through the operators' masters.
//! Jobs are asked about and submitted on the first front end with the
//! commands of the site's [`Scheduler`] (Slurm's, PBS's, Grid Engine's,
//! Moab's; df for the space); files move over all of them with the
//! transfer engine.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{anyhow, Context};

use super::{JobState, Listing, NoUsage, Scheduler, Site, Usage};
use crate::printer::Printer;
use crate::ssh::Host;
use crate::transfer::{self, Direction, Options, Pair, Report};

const LIMIT: Duration = Duration::from_secs(120);
/// How long accounting is asked about an ended job, a second apart, before
/// its cost is left to the estimate (a loaded slurmctld hands a job's end
/// to slurmdbd some seconds late; a large accounting file is slow to read).
const USAGE_WAIT: Duration = Duration::from_secs(15);
/// Removing a run's folder may take a while on a busy file system.
const REMOVE_LIMIT: Duration = Duration::from_secs(600);

pub struct RemoteSite {
    hosts: Vec<Host>,
    scheduler: Box<dyn Scheduler>,
    /// A folder put first on PATH for the scheduler's commands.
    path: Option<String>,
    /// The transfers' `Options::sweep_after`.
    sweep_after: Option<Duration>,
}

impl RemoteSite {
    /// A site of these front ends (at least one) with this scheduler, whose
    /// commands are on PATH there or in `path`; its transfers sweep what
    /// killed ones left after `sweep_after`.
    pub fn new(
        hosts: Vec<Host>,
        scheduler: Box<dyn Scheduler>,
        path: Option<String>,
        sweep_after: Option<Duration>,
    ) -> RemoteSite {
        assert!(!hosts.is_empty(), "a remote site has front ends");
        RemoteSite {
            hosts,
            scheduler,
            path,
            sweep_after,
        }
    }

    /// A scheduler command's script, with the target's folder first on PATH.
    fn sched(&self, script: &str) -> String {
        match &self.path {
            Some(p) => format!("PATH={}:\"$PATH\"; {script}", crate::shell::quote(p)),
            None => script.to_string(),
        }
    }

    /// Run a scheduler's script on the first front end: (status, stdout,
    /// stderr).
    fn ask(&self, script: &str, args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
        let out = self
            .host()
            .run_with(&self.sched(script), args, b"", LIMIT)?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.stderr,
        ))
    }

    fn host(&self) -> &Host {
        &self.hosts[0]
    }

    /// Run a script on the first front end with `args` as `$1`...; its
    /// stdout, or an error with its stderr.
    fn run(&self, script: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.host().run_with(script, args, b"", LIMIT)?;
        if out.status != Some(0) {
            let with = if args.is_empty() {
                String::new()
            } else {
                format!(" (with {})", crate::shell::join(args.iter().copied()))
            };
            return Err(anyhow!(
                "`{script}`{with} failed on {}: {}",
                self.host().alias,
                out.stderr.trim().replace('\n', "; ")
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn transfer(
        &self,
        pairs: Vec<Pair>,
        dir: Direction,
        printer: &Printer,
    ) -> anyhow::Result<Report> {
        let opts = Options {
            sweep_after: self.sweep_after,
            ..Options::default()
        };
        let report =
            transfer::transfer(&self.hosts, pairs, dir, &opts, printer.bytes_progress(dir))?;
        if report.swept > 0 {
            printer.debug(format!(
                "{}: swept {} staging names left by killed transfers: {}",
                dir.as_str(),
                report.swept,
                report.swept_paths.join(", ")
            ));
        }
        Ok(report)
    }
}

impl Site for RemoteSite {
    fn place(&self) -> String {
        format!("on {}", self.host().alias)
    }

    fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    fn check(&self) -> anyhow::Result<()> {
        self.hosts.iter().try_for_each(Host::check)
    }

    fn listing(&self, remote_run: &str) -> anyhow::Result<Listing> {
        let out = self.host().run_with(
            "cd \"$1\" 2>/dev/null && { ls -1 results 2>/dev/null | grep -E '^rank-[0-9]+\\.tsv$'; [ -f job-summary.txt ] && { echo SUMMARY; grep '^inputs_missing' job-summary.txt; }; }; true",
            &[remote_run],
            b"",
            Duration::from_secs(60),
        )?;
        Ok(Listing::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    fn regular_files(&self, paths: &[&str]) -> anyhow::Result<HashSet<String>> {
        // A path not absolute is asked as `./PATH` (from the login folder,
        // as a shell test would take it): `find` would read one starting
        // with `-` or `(` as part of its expression.
        let asked = |p: &str| {
            if p.starts_with('/') {
                p.to_string()
            } else {
                format!("./{p}")
            }
        };
        let of_asked: HashMap<String, &str> = paths.iter().map(|p| (asked(p), *p)).collect();
        let mut input = Vec::new();
        for p in of_asked.keys() {
            input.extend_from_slice(p.as_bytes());
            input.push(0);
        }
        // One find per few thousand paths (`-type f` without following a
        // link: a link is not a regular file here). find's complaints are of
        // the missing ones, and xargs's 123 says only that some were:
        // neither is a failure; xargs's own are.
        let out = self.host().run_with(
            "xargs -0 -r sh -c 'exec find \"$@\" -maxdepth 0 -type f -print0 2>/dev/null' find; s=$?; [ \"$s\" -eq 0 ] || [ \"$s\" -eq 123 ] || { echo \"xargs find exited $s\" >&2; exit 1; }",
            &[],
            &input,
            LIMIT,
        )?;
        if out.status != Some(0) {
            return Err(anyhow!(
                "cannot look at the outputs on {}: {}",
                self.host().alias,
                out.stderr.trim()
            ));
        }
        Ok(out
            .stdout
            .split(|b| *b == 0)
            .filter_map(|p| of_asked.get(String::from_utf8_lossy(p).as_ref()))
            .map(|p| p.to_string())
            .collect())
    }

    fn remove(&self, folder: &str) -> anyhow::Result<()> {
        self.host().check()?;
        let out = self
            .host()
            .run_with("rm -rf -- \"$1\"", &[folder], b"", REMOVE_LIMIT)?;
        if out.status != Some(0) {
            return Err(anyhow!(
                "cannot remove {folder} on {}: {}",
                self.host().alias,
                out.stderr.trim()
            ));
        }
        Ok(())
    }

    fn push(&self, pairs: Vec<Pair>, printer: &Printer) -> anyhow::Result<Report> {
        self.transfer(pairs, Direction::Push, printer)
    }

    fn pull(&self, pairs: Vec<Pair>, printer: &Printer) -> anyhow::Result<Report> {
        self.transfer(pairs, Direction::Pull, printer)
    }

    /// One `find` on the first front end (GNU find: fractional `-mmin`);
    /// a staging folder is removed whole and not looked into.
    fn sweep_staging(&self, root: &str, older_than: Duration) -> anyhow::Result<Vec<String>> {
        self.host().check()?;
        let minutes = format!("{:.3}", older_than.as_secs_f64() / 60.0);
        let out = self.host().run_with(
            "[ -d \"$1\" ] || exit 0; \
             find \"$1\" -mindepth 1 \\( -name '*.offload-part' -o -name '*.offload-part.*' \\) -prune -mmin \"+$2\" -print0 2>/dev/null \
             | while IFS= read -r -d '' p; do rm -rf -- \"$p\" 2>/dev/null && printf '%s\\0' \"$p\"; done; exit 0",
            &[root, &minutes],
            b"",
            REMOVE_LIMIT,
        )?;
        if out.status != Some(0) {
            return Err(anyhow!(
                "cannot sweep {root} on {}: {}",
                self.host().alias,
                out.stderr.trim().replace('\n', "; ")
            ));
        }
        Ok(out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect())
    }

    fn cut_short(&self, final_state: &str) -> bool {
        self.scheduler.cut_short(final_state)
    }

    fn usage(&self, job_id: &str, job_name: &str) -> anyhow::Result<Option<Usage>> {
        let s = &self.scheduler;
        let Some(script) = s.usage_script() else {
            return Ok(None);
        };
        let command = script.split_whitespace().next().unwrap_or(script);
        // Accounting learns of a job's end a moment after the queue
        // forgets it: asked a second apart, for USAGE_WAIT at the most.
        let started = std::time::Instant::now();
        let mut last = String::new();
        let mut first = true;
        while first || started.elapsed() < USAGE_WAIT {
            if !first {
                std::thread::sleep(Duration::from_secs(1));
            }
            first = false;
            let (status, out, err) = self.ask(script, &[job_id])?;
            last = err.trim().replace('\n', "; ");
            if status == Some(0) {
                if let Some(u) = s.parse_usage(&out, job_id, job_name) {
                    return Ok(Some(u));
                }
                continue;
            }
            match s.usage_failure(status, &err) {
                NoUsage::NotKept => return Ok(None),
                NoUsage::NotYet => continue,
                NoUsage::Failed => {
                    return Err(anyhow!(
                        "{command} -j {job_id} failed on {}: {last}",
                        self.host().alias
                    ))
                }
            }
        }
        Err(anyhow!(
            "{command} on {} had no record of job {job_id} ({job_name}) ending, asked for {} s{}",
            self.host().alias,
            started.elapsed().as_secs(),
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        ))
    }

    /// The id of a queued or running job with this name, if any.
    fn find_job(&self, name: &str) -> anyhow::Result<Option<String>> {
        let s = &self.scheduler;
        let out = self.run(&self.sched(s.find_script()), &[name])?;
        Ok(s.parse_find(&out, name))
    }

    /// Submit `job.sh` in the run's folder (clearing what an earlier attempt
    /// left); the job id.
    fn submit(&self, remote_run: &str, name: &str) -> anyhow::Result<String> {
        let s = &self.scheduler;
        let script = format!(
            "cd \"$1\" && rm -rf -- results job-summary.txt && {}",
            s.submit_script()
        );
        let out = self
            .run(&self.sched(&script), &[remote_run, name])
            .with_context(|| format!("{} refused the job", s.submit_command()))?;
        s.parse_submit(&out)
    }

    fn state(&self, job_id: &str) -> anyhow::Result<JobState> {
        let s = &self.scheduler;
        let (status, out, _) = self.ask(s.state_script(), &[job_id])?;
        if let Some(st) = s.parse_state(status, &out, job_id) {
            return Ok(st);
        }
        // Gone from the queue: accounting, where the site keeps it.
        let Some(acct) = s.accounting_script() else {
            return Ok(JobState::Ended(None));
        };
        let (status, out, _) = self.ask(acct, &[job_id])?;
        Ok(JobState::Ended(
            (status == Some(0))
                .then(|| s.parse_accounting(&out))
                .flatten(),
        ))
    }

    /// Cancel a job. A job that has already ended is not an error: there
    /// is nothing left to cancel.
    fn cancel(&self, job_id: &str) -> anyhow::Result<()> {
        let s = &self.scheduler;
        let (status, _, err) = self.ask(s.cancel_script(), &[job_id])?;
        let err = err.trim();
        if status == Some(0) || s.cancel_gone(err) {
            return Ok(());
        }
        if matches!(self.state(job_id), Ok(JobState::Ended(_))) {
            return Ok(());
        }
        Err(anyhow!(
            "{} {job_id} failed on {}: {}",
            s.cancel_command(),
            self.host().alias,
            err.replace('\n', "; ")
        ))
    }

    /// (pending, running) jobs of offload (names `PREFIX-r...`) in the queue.
    fn queue_counts(&self, prefix: &str) -> anyhow::Result<(u64, u64)> {
        let s = &self.scheduler;
        let out = self.run(&self.sched(s.queue_script()), &[])?;
        Ok(s.parse_queue(&out, &format!("{prefix}-r")))
    }

    /// Bytes the account may still write, from the site's quota command.
    fn quota_bytes(&self, command: &str) -> anyhow::Result<u64> {
        let out = self.run(command, &[])?;
        out.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                anyhow!("the quota command `{command}` printed no number of bytes: {out:?}")
            })
    }

    /// Free bytes where `path` lives (its nearest existing parent).
    fn free_bytes(&self, path: &str) -> anyhow::Result<u64> {
        let out = self.run(
            "p=$1; while [ ! -e \"$p\" ]; do p=$(dirname -- \"$p\"); done; df -P -B1 -- \"$p\" | tail -n 1",
            &[path],
        )?;
        out.split_whitespace()
            .nth(3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("cannot read free space from df: {out:?}"))
    }
}
