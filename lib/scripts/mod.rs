//! The files that run on the remote side: the rank runner, each rank's
//! component list, the `srun --multi-prog` config and the batch script.
//!
//! Layout of a run's folder (the same locally under path_base and remotely
//! under the target's remote_root):
//!
//! ```text
//! job.sh                 batch script: directives, output folders, srun, job summary
//! job-JOBID.out          (at run time) the batch script's own output
//! multiprog/step-0.conf  srun --multi-prog config: one line for every rank
//! tasks/run.sh           rank runner: pre; command; post per component, result lines
//! tasks/rank-R.sh        rank R's components, one `offload_component` line each
//! mkdirs.list            every distinct output folder, created once by job.sh
//! inputs.list            local path <TAB> remote path <TAB> size
//! remote-inputs.list     remote path: inputs that live at the site (not pushed), checked by job.sh
//! outputs.list           remote path <TAB> local path <TAB> component id <TAB> out:NAME or log
//! components.tsv         component id <TAB> work item id <TAB> stage_id <TAB> rank <TAB> expected seconds
//! run.json               what was prepared: counts, allocation, sources
//! MANIFEST.sha256        sha256sum -c format, every file above
//! ```
//!
//! At run time, `results/rank-R.tsv` receives one line per component:
//! `R <TAB> component id <TAB> exit status <TAB> phase (ok|pre|command|post)
//! <TAB> start epoch <TAB> end epoch <TAB> stats <TAB> stdout tail <TAB>
//! stderr tail` (stats: the post phase's stdout on one line, at most 4,000
//! bytes; tails: the last `OFFLOAD_TAIL` bytes with `\`, tab, newline and
//! CR escaped), and `job-summary.txt` is written last.

use crate::alloc::Allocation;

/// Bytes of each component's stdout and stderr kept in its result record
/// (the tail), unless the target says otherwise.
pub const DEFAULT_TAIL_BYTES: usize = 2000;

/// The rank runner. `$1` is the rank. Components run one after another;
/// a failing component is recorded and the next one runs. Each
/// component's stdout and stderr go to files in a node-local folder; their
/// tails (`OFFLOAD_TAIL` bytes each) go into the result line, the whole of
/// them to the rank log, and to the component's log file when the recipe
/// keeps one.
pub const RUNNER: &str = include_str!("run.sh");

/// One component's line in its rank file; `log` is the remote path of the
/// component's kept log, or empty.
/// `outputs` are the remote paths of its declared outputs: the runner
/// checks each is there, a regular file, once the post phase worked.
pub fn component_line(
    id: i64,
    pre: &str,
    command: &str,
    post: &str,
    log: &str,
    outputs: &[String],
) -> String {
    let q = crate::shell::quote;
    let mut line = format!(
        "offload_component {id} {} {} {}",
        q(pre),
        q(command),
        q(post)
    );
    if !log.is_empty() || !outputs.is_empty() {
        line.push(' ');
        line.push_str(&q(log));
    }
    for o in outputs {
        line.push(' ');
        line.push_str(&q(o));
    }
    line.push('\n');
    line
}

/// The phases of one component, read back from its rank file line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentCommands {
    pub pre: String,
    pub command: String,
    pub post: String,
    /// Remote path of the kept log, when the recipe keeps one.
    pub log: Option<String>,
    /// Remote paths of the declared outputs the runner checks.
    pub outputs: Vec<String>,
}

/// Find component `id`'s line in a rank file and split it back into its
/// phases.
pub fn find_component(rank_file: &str, id: i64) -> Option<ComponentCommands> {
    // A quoted phase may hold newlines: a component's text runs to the next
    // line that starts a component.
    let prefix = format!("offload_component {id} ");
    let start = if rank_file.starts_with(&prefix) {
        0
    } else {
        rank_file.find(&format!("\n{prefix}"))? + 1
    };
    let rest = &rank_file[start..];
    let end = rest
        .find("\noffload_component ")
        .map(|e| e + 1)
        .unwrap_or(rest.len());
    let words = shlex::split(&rest[..end])?;
    if words.len() < 5 {
        return None;
    }
    Some(ComponentCommands {
        pre: words[2].clone(),
        command: words[3].clone(),
        post: words[4].clone(),
        log: words.get(5).cloned().filter(|l| !l.is_empty()),
        outputs: words.get(6..).map(<[String]>::to_vec).unwrap_or_default(),
    })
}

/// Undo the runner's one-line escaping of a log tail.
pub fn unescape_tail(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The multi-prog config(s) for `ranks` ranks: one line covering every rank,
/// each rank running the runner with its number. Err when a config would
/// break the site's limits.
pub fn multiprog(remote_run: &str, ranks: u32, max_bytes: usize) -> Result<Vec<String>, String> {
    let line = format!(
        "0-{} /bin/bash {remote_run}/tasks/run.sh %t\n",
        ranks.saturating_sub(1)
    );
    check_multiprog(&line, max_bytes)?;
    Ok(vec![line])
}

/// Slurm's limits on a multi-prog file, as measured on Slurm 22.05: its
/// size (`Multi_prog config file X is too large`), a line's length (16,382
/// bytes with its newline; `Line N of configuration file X too long`), and
/// a line's words: the rank spec, the program and 126 arguments; more are
/// dropped silently.
pub fn check_multiprog(text: &str, max_bytes: usize) -> Result<(), String> {
    if text.len() > max_bytes {
        return Err(format!(
            "multi-prog config of {} bytes is over the limit of {max_bytes}",
            text.len()
        ));
    }
    for line in text.lines() {
        if line.len() > MULTIPROG_LINE_MAX {
            return Err(format!(
                "multi-prog line of {} bytes is over Slurm's {MULTIPROG_LINE_MAX}",
                line.len()
            ));
        }
        if line.split_whitespace().count() > MULTIPROG_WORDS_MAX {
            return Err(format!(
                "multi-prog line has more than {} arguments; Slurm drops the rest silently",
                MULTIPROG_WORDS_MAX - 2
            ));
        }
    }
    Ok(())
}

/// Longest multi-prog line Slurm reads, without its newline.
pub const MULTIPROG_LINE_MAX: usize = 16_381;
/// Rank spec + program + 126 arguments.
pub const MULTIPROG_WORDS_MAX: usize = 128;

pub struct JobSpec<'a> {
    pub job_prefix: &'a str,
    pub remote_id: i64,
    pub attempt: i32,
    pub stage: &'a str,
    pub label: &'a str,
    pub remote_run: &'a str,
    pub alloc: &'a Allocation,
    pub partition: Option<&'a str>,
    pub account: Option<&'a str>,
    /// Grid Engine's parallel environment for the job's slots.
    pub parallel_environment: &'a str,
    pub steps: usize,
    /// How the ranks start.
    pub launch: Launch,
    /// Bytes of each component's stdout and stderr kept in its result.
    pub tail_bytes: usize,
}

/// How the ranks start inside the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// `srun --multi-prog` over the step configs.
    Srun,
    /// As local processes on the job's (first) node: every rank at once
    /// in a scheduler's job (it holds their cores), `nproc` at a time on
    /// the `local` target (`all_at_once` false).
    Local { all_at_once: bool },
    /// Each rank on its node from the scheduler's node list, started with
    /// the site's own remote start, by [`LAUNCHER`].
    Nodes {
        /// Shell text for the node list's file (`${PBS_NODEFILE:-}`).
        node_file: &'static str,
        /// `pbs` (a line per slot) or `sge` (HOST SLOTS ...).
        format: &'static str,
        /// The words that start a command on a host given next.
        start: &'static str,
    },
}

/// The rank launcher for sites without srun (`tasks/launch.sh`): see
/// its header.
pub const LAUNCHER: &str = include_str!("launch.sh");

/// The job name: the target's prefix, run id and attempt, so a job can be
/// found again.
pub fn job_name(prefix: &str, remote_id: i64, attempt: i32) -> String {
    format!("{prefix}-r{remote_id}-a{attempt}")
}

/// The batch script's check, before any component starts, that every input
/// of the run is there (the site's scratch may have been purged while the
/// job waited in the queue): one pass over `inputs.list`. Any missing: it
/// runs nothing and says so in the job summary (`inputs_missing=N` and the
/// first few names), which poll takes for the site's failure.
const INPUTS_CHECK: &str = r#"# Every input must be there: the scratch may have been purged while the job waited.
missing=0
first=()
if [ -s inputs.list ]; then
    while IFS=$'\t' read -r _ f _; do
        if [ ! -e "$f" ]; then
            missing=$((missing + 1))
            [ "$missing" -le 5 ] && first+=("$f")
        fi
    done < inputs.list
fi
# ...and those that live at the site (reference data, an earlier stage's kept products).
if [ -s remote-inputs.list ]; then
    while IFS= read -r f; do
        if [ ! -e "$f" ]; then
            missing=$((missing + 1))
            [ "$missing" -le 5 ] && first+=("$f")
        fi
    done < remote-inputs.list
fi
if [ "$missing" -gt 0 ]; then
    {
        echo "job_id=$OFFLOAD_JOB_ID"
        echo "inputs_missing=$missing"
        for f in "${first[@]}"; do echo "inputs_missing_first=$f"; done
    } > job-summary.txt.tmp && mv job-summary.txt.tmp job-summary.txt
    echo "offload: $missing inputs of this run are missing at the site; nothing ran" >&2
    exit 93
fi
"#;

/// The batch script: the scheduler's `directives`, then the job; the job's
/// id and nodes for its summary are the scheduler's shell text `job_id`
/// and `nodes`.
pub fn batch_job(j: &JobSpec<'_>, directives: &str, job_id: &str, nodes: &str) -> String {
    let a = j.alloc;
    let q = crate::shell::quote;
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(directives);
    s.push_str(&format!(
        "# offload run {} ({}/{}), attempt {}: {} components on {} ranks, {} nodes x {} h\n",
        j.remote_id,
        j.stage,
        j.label.replace('\n', " "),
        j.attempt,
        a.components,
        a.ranks,
        a.nodes,
        a.hours
    ));
    s.push_str("set -u\nexport LC_ALL=C\n");
    s.push_str(&format!(
        "OFFLOAD_RUN={}\nexport OFFLOAD_RUN\nOFFLOAD_TAIL={}\nexport OFFLOAD_TAIL\nOFFLOAD_JOB_ID=\"{job_id}\"\n",
        q(j.remote_run),
        j.tail_bytes
    ));
    s.push_str("cd \"$OFFLOAD_RUN\" || exit 90\n");
    s.push_str("mkdir -p results logs\nstarted=$(date +%s)\n");
    s.push_str("# Every distinct output folder, created once for the whole run.\n");
    s.push_str(
        "if [ -s mkdirs.list ]; then xargs -d '\\n' mkdir -p -- < mkdirs.list || exit 91; fi\n",
    );
    s.push_str(INPUTS_CHECK);
    s.push_str("status=0\n");
    for step in 0..j.steps {
        match &j.launch {
            Launch::Local { all_at_once } => s.push_str(&format!(
                "seq 0 {} | xargs -P {} -I RANK bash -c 'bash \"$OFFLOAD_RUN/tasks/run.sh\" RANK > \"$OFFLOAD_RUN/logs/rank-RANK.log\" 2>&1'\n",
                a.ranks.saturating_sub(1),
                if *all_at_once {
                    a.ranks.max(1).to_string()
                } else {
                    "\"$(nproc)\"".to_string()
                }
            )),
            Launch::Srun => s.push_str(&format!(
                "srun --multi-prog --ntasks={} --cpus-per-task={} --kill-on-bad-exit=0 --output=logs/rank-%t.log multiprog/step-{step}.conf\n",
                a.ranks, a.threads
            )),
            Launch::Nodes {
                node_file,
                format,
                start,
            } => s.push_str(&format!(
                "bash \"$OFFLOAD_RUN/tasks/launch.sh\" \"{node_file}\" {format} {} {} {start}\n",
                a.ranks, a.threads
            )),
        }
        s.push_str(&format!(
            "step{step}=$?\n[ \"$step{step}\" -ne 0 ] && status=$step{step}\n"
        ));
    }
    s.push_str("ended=$(date +%s)\n{\n");
    s.push_str(&format!(
        "  echo \"job_id=$OFFLOAD_JOB_ID\"\n  echo \"nodes={nodes}\"\n"
    ));
    s.push_str("  echo \"started=$started\"\n  echo \"ended=$ended\"\n");
    for step in 0..j.steps {
        s.push_str(&format!("  echo \"step.{step}.exit=$step{step}\"\n"));
    }
    s.push_str(&format!("  echo \"components={}\"\n", a.components));
    s.push_str("  echo \"results=$(cat results/rank-*.tsv 2>/dev/null | wc -l)\"\n");
    s.push_str("} > job-summary.txt.tmp && mv job-summary.txt.tmp job-summary.txt\n");
    s.push_str("exit \"$status\"\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the rank runner on one rank's lines; its result lines, split.
    fn run_rank(lines: &[String]) -> (Vec<Vec<String>>, String) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tasks")).unwrap();
        std::fs::create_dir_all(d.path().join("results")).unwrap();
        std::fs::write(d.path().join("tasks/run.sh"), RUNNER).unwrap();
        std::fs::write(d.path().join("tasks/rank-0.sh"), lines.join("\n") + "\n").unwrap();
        let out = std::process::Command::new("bash")
            .arg(d.path().join("tasks/run.sh"))
            .arg("0")
            .env("OFFLOAD_RUN", d.path())
            .env("OFFLOAD_TAIL", "100")
            .current_dir(d.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = std::fs::read_to_string(d.path().join("results/rank-0.tsv")).unwrap();
        let rows = text
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        (rows, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn each_phase_runs_on_its_own_and_a_failure_stops_only_its_component() {
        let keep = tempfile::NamedTempFile::new().unwrap();
        let keep = keep.path().display().to_string();
        let (rows, log) = run_rank(&[
            component_line(
                1,
                "echo pre",
                "printf 'a\\tb\\n'; echo e >&2; exit 3",
                "echo never",
                "",
                &[],
            ),
            component_line(2, "false", "echo not-run", "", "", &[]),
            // No positional parameters, its own folder and variables; the runner's own
            // names do not leak into the next component.
            component_line(
                3,
                "",
                "x=set; cd /; echo \"[$#][$1][$PWD]\"",
                "printf 'n=1\\tm=2'",
                &keep,
                &[],
            ),
            component_line(
                4,
                "",
                "echo \"[${x:-}][$PWD]\"",
                "",
                "",
                &["/nonexistent/out".into()],
            ),
            component_line(5, "", "if", "", "", &[]),
            component_line(6, "", "exec true", "", "", &[]),
        ]);
        let cols = |r: &Vec<String>| (r[1].clone(), r[2].clone(), r[3].clone());
        assert_eq!(rows.len(), 6, "{rows:?}");
        assert_eq!(cols(&rows[0]), ("1".into(), "3".into(), "command".into()));
        assert_eq!(
            (rows[0][7].as_str(), rows[0][8].as_str()),
            ("pre\\na\\tb", "e")
        );
        assert_eq!(cols(&rows[1]), ("2".into(), "1".into(), "pre".into()));
        assert_eq!(cols(&rows[2]), ("3".into(), "0".into(), "ok".into()));
        assert_eq!(
            (rows[2][6].as_str(), rows[2][7].as_str()),
            ("n=1 m=2", "[0][][/]")
        );
        assert!(
            !rows[3][8].is_empty() && rows[3][3] == "output",
            "{:?}",
            rows[3]
        );
        assert!(
            !rows[3][7].contains("[set]") && !rows[3][7].contains("[/]"),
            "{:?}",
            rows[3]
        );
        assert_eq!(cols(&rows[4]), ("5".into(), "2".into(), "command".into()));
        assert_eq!(cols(&rows[5]), ("6".into(), "0".into(), "ok".into()));
        assert!(
            log.contains("== offload component 4: exit 70 (output)"),
            "{log}"
        );
        let kept = std::fs::read_to_string(&keep).unwrap();
        assert!(kept.contains("== stdout\n[0][][/]\n== stderr\n"), "{kept}");
    }

    #[test]
    fn tails_unescape() {
        assert_eq!(unescape_tail(r"a\tb\nc\\d\r"), "a\tb\nc\\d\r");
        assert_eq!(unescape_tail(r"odd\x end\"), "odd\\x end\\");
    }

    #[test]
    fn multiprog_stays_one_line_and_is_checked() {
        let c = multiprog("/r/run-1", 1944, 60_000).unwrap();
        assert_eq!(
            c,
            vec!["0-1943 /bin/bash /r/run-1/tasks/run.sh %t\n".to_string()]
        );
        assert!(check_multiprog(&"x".repeat(60_001), 60_000)
            .unwrap_err()
            .contains("over the limit"));
        assert!(check_multiprog(&"x".repeat(16_381), 60_000).is_ok());
        assert!(check_multiprog(&"x".repeat(16_382), 60_000)
            .unwrap_err()
            .contains("over Slurm's 16381"));
        let words = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        assert!(check_multiprog(&words(128), 60_000).is_ok());
        assert!(check_multiprog(&words(129), 60_000)
            .unwrap_err()
            .contains("more than 126 arguments"));
    }

    #[test]
    fn component_lines_quote_every_phase() {
        let l = component_line(7, "", "prog 'a b' $(x)", "cat s", "", &[]);
        assert_eq!(
            shlex::split(l.trim()).unwrap(),
            vec!["offload_component", "7", "", "prog 'a b' $(x)", "cat s"]
        );
        let file = format!(
            "{l}{}",
            component_line(
                8,
                "mkdir -p d",
                "run\nrun 2",
                "",
                "/r/8.log",
                &["/r/o 1.fits".to_string()]
            )
        );
        let c = find_component(&file, 8).unwrap();
        assert_eq!(
            (
                c.pre.as_str(),
                c.command.as_str(),
                c.post.as_str(),
                c.log.as_deref()
            ),
            ("mkdir -p d", "run\nrun 2", "", Some("/r/8.log"))
        );
        assert_eq!(
            find_component(&file, 8).unwrap().outputs,
            vec!["/r/o 1.fits"]
        );
        assert_eq!(find_component(&file, 7).unwrap().log, None);
        let no_log = component_line(10, "", "x", "", "", &["/r/a".into(), "/r/b".into()]);
        let c = find_component(&no_log, 10).unwrap();
        assert_eq!(
            (c.log, c.outputs),
            (None, vec!["/r/a".into(), "/r/b".into()])
        );
        assert!(find_component(&file, 9).is_none());
        let third = format!("{file}{}", component_line(9, "", "x", "", "", &[]));
        assert_eq!(find_component(&third, 8).unwrap().command, "run\nrun 2");
        assert_eq!(find_component(&third, 9).unwrap().command, "x");
    }
}
