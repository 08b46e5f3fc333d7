//! Bringing an ended job's results back: the per-rank result files and the
//! summary, the result lines read as data, then the outputs of the
//! components that worked (and every kept log), each output that does not
//! come back failing only its component.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Context;

use crate::db::models::Run;
use crate::db::Db;
use crate::exit;
use crate::printer::Printer;
use crate::record::{parse_results, Record};
use crate::runs;
use crate::runs::Actor;
use crate::scheduler::{Listing, Site};
use crate::transfer::{Direction, Pair};

use crate::db::models::Member;

/// Bring files back; a transfer that did not complete is an error (and
/// the run goes to `auth` when a master is gone).
fn fetch(
    db: &mut Db,
    run: &Run,
    site: &dyn Site,
    pairs: Vec<Pair>,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<()> {
    let report = pull(db, site, pairs, printer)?;
    if let Some(f) = &report.local_fault {
        return Err(exit::local(f.message()));
    }
    if !report.complete {
        return Err(runs::incomplete(
            db,
            run,
            site,
            actor,
            &report,
            "did not come back",
        ));
    }
    Ok(())
}

/// Pull, and record the rate of a pull that completed (for the expiry
/// forecast).
fn pull(
    db: &mut Db,
    site: &dyn Site,
    pairs: Vec<Pair>,
    printer: &Printer,
) -> anyhow::Result<crate::transfer::Report> {
    let report = site.pull(pairs, printer)?;
    if report.complete {
        crate::masters::record_rate(
            db,
            site.hosts(),
            Direction::Pull,
            report.bytes,
            report.seconds,
        )?;
    }
    Ok(report)
}

/// What came back of an ended job.
pub(super) struct Fetched {
    /// Each component's result line, by component id.
    pub(super) result_of: HashMap<i64, Record>,
    /// Result lines refused (malformed, or of no component of the run).
    pub(super) rejected: Vec<String>,
    /// Outputs brought back.
    pub(super) outputs: usize,
    /// Components whose result came back but an output did not: why.
    pub(super) output_failed: HashMap<i64, String>,
}

/// Bring back the result files and the summary, read the result lines, then
/// the outputs of the components that worked and the kept logs of every
/// component that ran.
#[allow(clippy::too_many_arguments)]
pub(super) fn fetch_all(
    db: &mut Db,
    run: &Run,
    site: &dyn Site,
    remote_run: &str,
    local_run: &Path,
    listing: &Listing,
    members: &[Member],
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<Fetched> {
    let mut pairs: Vec<Pair> = listing
        .rank_files
        .iter()
        .map(|l| Pair {
            src: format!("{remote_run}/results/{l}"),
            dst: local_run
                .join("results")
                .join(l)
                .to_string_lossy()
                .into_owned(),
        })
        .collect();
    if listing.summary {
        pairs.push(Pair {
            src: format!("{remote_run}/job-summary.txt"),
            dst: local_run
                .join("job-summary.txt")
                .to_string_lossy()
                .into_owned(),
        });
    }
    let result_files: Vec<String> = pairs
        .iter()
        .filter(|p| p.dst.ends_with(".tsv"))
        .map(|p| p.dst.clone())
        .collect();
    fetch(db, run, site, pairs, printer, actor)
        .with_context(|| format!("could not bring back the results of run {}", run.remote_id))?;
    let (result_of, rejected) = read_results(run, &result_files, members)?;
    for r in rejected.iter().take(5) {
        printer.warn(format!(
            "run {}: rejected result record: {r}",
            run.remote_id
        ));
    }
    let outputs = outputs_to_fetch(local_run, &result_of)?;
    let (n_outputs, output_failed) = fetch_outputs(db, run, site, outputs, printer, actor)
        .with_context(|| format!("outputs of run {} did not come back", run.remote_id))?;
    Ok(Fetched {
        result_of,
        rejected,
        outputs: n_outputs,
        output_failed,
    })
}

/// An output to bring back.
struct Output {
    pair: Pair,
    component: i64,
    /// The component's kept log (brought back whether it worked or not;
    /// a log that does not come back fails nothing).
    log: bool,
}

/// A path that climbs out of where it is put.
fn climbs(path: &str) -> bool {
    path.split('/').any(|c| c == "..")
}

/// Bring back the outputs. One refused (a path with `..`), missing, not a
/// regular file there, or failing its check fails only its component: the
/// components that failed so, with why. A master that went away puts the
/// run in `auth` (an error).
fn fetch_outputs(
    db: &mut Db,
    run: &Run,
    site: &dyn Site,
    outputs: Vec<Output>,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<(usize, HashMap<i64, String>)> {
    // Each component's own first error (bounded), and how many more of
    // its outputs failed.
    let mut failed: HashMap<i64, (String, usize)> = HashMap::new();
    let mut fail = |o: &Output, why: String| {
        if o.log {
            printer.warn(format!(
                "run {}: the log of component {} did not come back: {why}",
                run.remote_id, o.component
            ));
        } else {
            failed
                .entry(o.component)
                .and_modify(|(_, more)| *more += 1)
                .or_insert((bounded(&why), 0));
        }
    };
    let (outputs, refused): (Vec<Output>, Vec<Output>) = outputs
        .into_iter()
        .partition(|o| !climbs(&o.pair.src) && !climbs(&o.pair.dst));
    for o in &refused {
        fail(
            o,
            format!("output {} refused: its path holds '..'", o.pair.src),
        );
    }
    let srcs: Vec<&str> = outputs.iter().map(|o| o.pair.src.as_str()).collect();
    let regular = if srcs.is_empty() {
        HashSet::new()
    } else {
        site.regular_files(&srcs)?
    };
    let (outputs, absent): (Vec<Output>, Vec<Output>) = outputs
        .into_iter()
        .partition(|o| regular.contains(&o.pair.src));
    for o in &absent {
        fail(
            o,
            format!("output {} is missing or not a regular file", o.pair.src),
        );
    }
    if outputs.is_empty() {
        return Ok((0, first_errors(failed)));
    }
    let of_dst: HashMap<&str, &Output> = outputs.iter().map(|o| (o.pair.dst.as_str(), o)).collect();
    let report = pull(
        db,
        site,
        outputs.iter().map(|o| o.pair.clone()).collect(),
        printer,
    )?;
    if let Some(f) = &report.local_fault {
        // Not the components': none fails for it.
        return Err(exit::local(f.message()));
    }
    if !report.complete {
        runs::check_or_auth(db, run, site, actor)?;
        for f in &report.failures {
            match of_dst.get(f.dst.as_str()) {
                Some(o) => fail(
                    o,
                    format!("output {} did not come back: {}", f.src, f.reason),
                ),
                None => return Err(anyhow::anyhow!("{}: {}", f.src, f.reason)),
            }
        }
    }
    Ok((
        outputs.len() - report.failed.min(outputs.len()),
        first_errors(failed),
    ))
}

/// The longest error kept for one output.
const ERROR_CHARS: usize = 500;

fn bounded(why: &str) -> String {
    if why.chars().count() <= ERROR_CHARS {
        return why.to_string();
    }
    let cut: String = why.chars().take(ERROR_CHARS).collect();
    format!("{cut}...")
}

/// A component's first error, and a count of its other outputs that
/// failed.
fn first_errors(failed: HashMap<i64, (String, usize)>) -> HashMap<i64, String> {
    failed
        .into_iter()
        .map(|(c, (first, more))| {
            let why = match more {
                0 => first,
                n => format!("{first} (and {n} more of its outputs)"),
            };
            (c, why)
        })
        .collect()
}

/// The result lines of the run's components, by component id, and the
/// lines refused.
fn read_results(
    run: &Run,
    files: &[String],
    members: &[Member],
) -> anyhow::Result<(HashMap<i64, Record>, Vec<String>)> {
    let known: HashSet<i64> = members.iter().map(|m| m.component_id).collect();
    let mut result_of = HashMap::new();
    let mut rejected = Vec::new();
    for f in files {
        // Log tails may end inside a character: read as bytes.
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {f}"))?;
        let (ok, bad) = parse_results(&String::from_utf8_lossy(&bytes));
        rejected.extend(bad);
        for r in ok {
            if known.contains(&r.component) {
                result_of.insert(r.component, r);
            } else {
                rejected.push(format!(
                    "component {} is not in run {}",
                    r.component, run.remote_id
                ));
            }
        }
    }
    Ok((result_of, rejected))
}

/// The outputs of the components that worked, and the kept logs of every
/// component that ran (`outputs.list`).
fn outputs_to_fetch(
    local_run: &Path,
    result_of: &HashMap<i64, Record>,
) -> anyhow::Result<Vec<Output>> {
    Ok(std::fs::read_to_string(local_run.join("outputs.list"))
        .with_context(|| format!("cannot read {}/outputs.list", local_run.display()))?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let cid: i64 = f.get(2)?.parse().ok()?;
            let log = f.get(3) == Some(&"log");
            result_of
                .get(&cid)
                .filter(|r| r.exit == 0 || log)
                .map(|_| Output {
                    pair: Pair {
                        src: f[0].to_string(),
                        dst: f[1].to_string(),
                    },
                    component: cid,
                    log,
                })
        })
        .collect())
}
