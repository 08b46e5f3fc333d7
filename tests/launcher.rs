//! `tasks/launch.sh`, the rank launcher for sites without srun, with the
//! `ssh` start against the testbed's real sshd: each rank runs on the host
//! the scheduler's node list gives it (fe1 and fe2, told apart by the port
//! in `$SSH_CONNECTION`), writes its result line and its log.

mod common;

use std::path::Path;
use std::process::Command;

use common::ssh_config;

fn lib_script(name: &str) -> String {
    format!("{}/lib/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A run folder whose every rank has one component printing where it runs.
fn run_folder(ranks: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    for d in ["tasks", "results", "logs"] {
        std::fs::create_dir_all(run.join(d)).unwrap();
    }
    std::fs::copy(lib_script("run.sh"), run.join("tasks/run.sh")).unwrap();
    for r in 0..ranks {
        std::fs::write(
            run.join(format!("tasks/rank-{r}.sh")),
            format!(
                "offload_component {} '' 'echo \"port ${{SSH_CONNECTION##* }}\"' ''\n",
                100 + r
            ),
        )
        .unwrap();
    }
    dir
}

fn launch(
    run: &Path,
    nodes: &str,
    format: &str,
    ranks: &str,
    threads: &str,
) -> std::process::Output {
    let node_file = run.join("nodes");
    std::fs::write(&node_file, nodes).unwrap();
    Command::new("bash")
        .arg(lib_script("launch.sh"))
        .args([node_file.to_str().unwrap(), format, ranks, threads])
        .args(["ssh", "-F", &ssh_config(), "-o", "BatchMode=yes"])
        .env("OFFLOAD_RUN", run)
        .env("OFFLOAD_TAIL", "200")
        .current_dir(run)
        .output()
        .unwrap()
}

/// The port of each rank's host, from its result line's stdout tail.
fn ports(run: &Path, ranks: usize) -> Vec<String> {
    (0..ranks)
        .map(|r| {
            let line = std::fs::read_to_string(run.join(format!("results/rank-{r}.tsv")))
                .unwrap_or_else(|e| panic!("rank {r} wrote no result: {e}"));
            let f: Vec<&str> = line.trim_end().split('\t').collect();
            assert_eq!(
                (f[1], f[2], f[3]),
                (&*(100 + r).to_string(), "0", "ok"),
                "{line}"
            );
            let log = std::fs::read_to_string(run.join(format!("logs/rank-{r}.log"))).unwrap();
            assert!(
                log.contains(&format!("== offload component {}: exit 0 (ok)", 100 + r)),
                "{log}"
            );
            f[7].trim_end_matches("\\n").to_string()
        })
        .collect()
}

#[test]
fn ranks_start_on_the_hosts_of_a_pbs_node_list() {
    let dir = run_folder(4);
    let out = launch(dir.path(), "fe1\nfe1\nfe2\nfe2\n", "pbs", "4", "1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ports(dir.path(), 4),
        vec!["port 2201", "port 2201", "port 2202", "port 2202"]
    );
}

#[test]
fn ranks_take_their_threads_slots_of_a_grid_engine_host_file() {
    let dir = run_folder(2);
    let out = launch(
        dir.path(),
        "fe1 2 all.q@fe1 UNDEFINED\nfe2 2 all.q@fe2 UNDEFINED\n",
        "sge",
        "2",
        "2",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ports(dir.path(), 2), vec!["port 2201", "port 2202"]);
}

#[test]
fn a_node_list_too_short_starts_nothing() {
    let dir = run_folder(3);
    let out = launch(dir.path(), "fe1\nfe2\n", "pbs", "3", "1");
    assert_eq!(out.status.code(), Some(94));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has 2 slots"));
    assert!(!dir.path().join("results/rank-0.tsv").exists());
}
