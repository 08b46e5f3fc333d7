//! Benchmark: the rank runner's own cost per component, against the tools
//! that would otherwise run the same no-op tasks, side by side on this
//! machine's 2 cores, 24 at a time.
//!
//!     scripts/testbed up && cargo bench --bench runner [-- quick]
//!
//! 10,000 tasks whose command is `true` (`quick`: 1,000), no pre, no post.
//! Rows:
//! - offload's runner (`tasks/run.sh`, as prepare writes it) for 24 ranks,
//!   started as a one-node PBS or Grid Engine job starts them
//!   (`xargs -P 24`), every result line written and checked;
//! - the same runner in a Slurm job (`srun --multi-prog`, as on the remote
//!   centre), CPU from Slurm's accounting (`sacct` TotalCPU);
//! - GNU parallel (`parallel -j 24 true`), `xargs -P 24 sh -c true`;
//! - one `srun` per task inside a 24-task job (a tenth of the tasks; CPU
//!   from `sacct`, which counts the steps but not slurmctld's own work).
//!
//! CPU is user + system time of the whole process tree (bash's `time`,
//! children included); ms per task is CPU / tasks, and wall ms per task is
//! wall time / tasks. The goal: the runner <= 1 ms of CPU per component.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use offload::scheduler::slurm::{Slurm, USAGE_FIELDS};
use offload::scheduler::Scheduler;

const RANKS: u32 = 24;

/// (wall, cpu) seconds of a bash command line, its whole process tree.
fn timed(script: &str, dir: &Path) -> (f64, f64) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "TIMEFORMAT='%R %U %S'; {{ time ( {{ {script} ; }} >/dev/null 2>&1 ) ; }} 2>&1"
        ))
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(f.len() >= 3, "no timing from `{script}`: {text}");
    (f[0], f[1] + f[2])
}

/// A run folder with the runner and `n` no-op components over the ranks.
fn run_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    std::fs::create_dir_all(dir.join("results")).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("tasks/run.sh"), offload::scripts::RUNNER).unwrap();
    let mut ranks = vec![String::new(); RANKS as usize];
    for i in 0..n {
        let line = offload::scripts::component_line(i as i64 + 1, "", "true", "", "", &[]);
        ranks[i % RANKS as usize].push_str(&line);
        ranks[i % RANKS as usize].push('\n');
    }
    for (r, text) in ranks.iter().enumerate() {
        std::fs::write(dir.join(format!("tasks/rank-{r}.sh")), text).unwrap();
    }
}

fn result_lines(dir: &Path) -> usize {
    (0..RANKS)
        .map(|r| {
            std::fs::read_to_string(dir.join(format!("results/rank-{r}.tsv")))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("R\t") && l.split('\t').nth(2) == Some("0"))
                .count()
        })
        .sum()
}

/// Submit a job script and wait; (wall seconds, sacct CPU seconds).
fn slurm_job(dir: &Path, script: &str) -> Option<(f64, f64)> {
    std::fs::write(dir.join("job.sh"), script).unwrap();
    let t = Instant::now();
    let out = Command::new("sbatch")
        .args(["--parsable", "--wait", "job.sh"])
        .current_dir(dir)
        .output()
        .ok()?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "sbatch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()?
        .to_string();
    // Accounting has the job's end a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The same question and reading as poll's.
        let a = Command::new("sacct")
            .args(["-n", "-P", "-j", &id, "-o"])
            .arg(USAGE_FIELDS)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&a.stdout).into_owned();
        if let Some(u) = Slurm.parse_usage(&text, &id, "") {
            return Some((wall, u.cpu_s?));
        }
        if Instant::now() > deadline {
            eprintln!("job {id} is not in accounting after 30 s: {text}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn row(name: &str, tasks: usize, wall: f64, cpu: f64, runner_cpu: Option<f64>) {
    let ms = cpu * 1000.0 / tasks as f64;
    let ratio = runner_cpu
        .map(|r| format!("{:>7.2}x", ms / r))
        .unwrap_or_else(|| format!("{:>8}", "1.00x"));
    println!(
        "{name:<44} {tasks:>7} {wall:>8.2} {cpu:>8.2} {ms:>10.3} {:>10.3} {ratio}",
        wall * 1000.0 / tasks as f64
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let n: usize = if quick { 1_000 } else { 10_000 };
    let base = tempfile::Builder::new()
        .prefix("offload-bench-runner.")
        .tempdir_in("/var/tmp")
        .unwrap();
    println!(
        "{n} no-op tasks (`true`), {RANKS} at a time, on {} cores",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!(
        "{:<44} {:>7} {:>8} {:>8} {:>10} {:>10} {:>8}",
        "", "tasks", "wall s", "cpu s", "cpu ms/task", "wall ms/task", "vs runner"
    );

    // offload's runner, 24 ranks started by xargs -P as on a one-node job.
    let dir = base.path().join("local");
    run_folder(&dir, n);
    let (wall, cpu) = timed(
        &format!(
            "seq 0 {} | OFFLOAD_RUN={} xargs -P {RANKS} -I RANK bash -c 'bash \"$OFFLOAD_RUN/tasks/run.sh\" RANK > \"$OFFLOAD_RUN/logs/rank-RANK.log\" 2>&1'",
            RANKS - 1,
            dir.display()
        ),
        &dir,
    );
    assert_eq!(result_lines(&dir), n, "every component has its result line");
    let runner_ms = cpu * 1000.0 / n as f64;
    row("offload runner (24 ranks, xargs -P)", n, wall, cpu, None);

    // The same in a Slurm job, through srun --multi-prog.
    let dir = base.path().join("slurm");
    run_folder(&dir, n);
    let conf = offload::scripts::multiprog(&dir.display().to_string(), RANKS, 60_000).unwrap();
    std::fs::write(dir.join("multiprog.conf"), &conf[0]).unwrap();
    let job = format!(
        "#!/bin/bash\n#SBATCH --ntasks={RANKS} --time=0:30:00 --output={0}/job.out\nexport OFFLOAD_RUN={0}\ncd {0}\nsrun --multi-prog --ntasks={RANKS} --output=logs/rank-%t.log multiprog.conf\n",
        dir.display()
    );
    match slurm_job(&dir, &job) {
        Some((wall, cpu)) => {
            assert_eq!(result_lines(&dir), n, "every component has its result line");
            row(
                "offload runner (srun --multi-prog job)",
                n,
                wall,
                cpu,
                Some(runner_ms),
            );
        }
        None => {
            println!("offload runner (srun --multi-prog job): Slurm is not up (scripts/testbed up)")
        }
    }

    if Command::new("parallel").arg("--version").output().is_ok() {
        let (wall, cpu) = timed(&format!("seq {n} | parallel -j {RANKS} true"), base.path());
        row("GNU parallel -j 24 true", n, wall, cpu, Some(runner_ms));
    } else {
        println!("GNU parallel: not installed (apt install parallel)");
    }
    let (wall, cpu) = timed(
        &format!("seq {n} | xargs -P {RANKS} -I T sh -c true"),
        base.path(),
    );
    row("xargs -P 24 sh -c true", n, wall, cpu, Some(runner_ms));
    let (wall, cpu) = timed(
        &format!("seq {n} | xargs -P {RANKS} -n 1 true"),
        base.path(),
    );
    row(
        "xargs -P 24 -n 1 true (no shell)",
        n,
        wall,
        cpu,
        Some(runner_ms),
    );

    // One srun per task, 24 at a time, inside one job.
    let m = n / 10;
    let dir = base.path().join("srun");
    std::fs::create_dir_all(&dir).unwrap();
    let job = format!(
        "#!/bin/bash\n#SBATCH --ntasks={RANKS} --time=0:30:00 --output={}/job.out\nseq {m} | xargs -P {RANKS} -I T srun --exact -n 1 -N 1 --quiet true\n",
        dir.display()
    );
    match slurm_job(&dir, &job) {
        Some((wall, cpu)) => row(
            "one srun per task (sacct CPU)",
            m,
            wall,
            cpu,
            Some(runner_ms),
        ),
        None => println!("one srun per task: Slurm is not up (scripts/testbed up)"),
    }
    println!(
        "goal: offload runner <= 1 ms CPU per no-op component: {:.3} ms, {}",
        runner_ms,
        if runner_ms <= 1.0 { "met" } else { "NOT met" }
    );
}
