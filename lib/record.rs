//! A component's result: the line the rank runner writes on the remote side
//! (`results/rank-R.tsv`), and the record stored with the component
//! (`remote_components.result`, JSON). What comes back is data: it is
//! parsed, never run.

use serde::{Deserialize, Serialize};

use crate::scripts::unescape_tail;

/// What is stored with a component, and what `remotetool show` reads back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// `ok`, or the phase that failed: `pre`, `command`, `post`, or
    /// `output` (a declared output missing or not a regular file).
    #[serde(default)]
    pub phase: String,
    /// The post phase's stdout, on one line.
    #[serde(default)]
    pub stats: String,
    /// Seconds from the component's start to its end.
    #[serde(default)]
    pub runtime: f64,
    /// Its start and end on the remote side (Unix time, seconds; 0 when not
    /// known).
    #[serde(default)]
    pub start: f64,
    #[serde(default)]
    pub end: f64,
    #[serde(default)]
    pub stdout_tail: String,
    #[serde(default)]
    pub stderr_tail: String,
    /// Why an output of a component that worked did not come back (its
    /// component fault is then [`crate::state::fault::COMPONENT_OUTPUT`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_error: String,
}

/// One component's result line, as the rank runner wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub component: i64,
    pub exit: i32,
    #[serde(flatten)]
    pub result: ResultRecord,
}

/// The phases a result line may name.
pub const PHASES: &[&str] = &["ok", "pre", "command", "post", "output"];

/// Parse result lines (7 fields, or 9 with the log tails); malformed ones
/// are returned apart (their first 200 characters), never run.
pub fn parse_results(text: &str) -> (Vec<Record>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        match parse_line(line) {
            Some(r) => ok.push(r),
            None => bad.push(line.chars().take(200).collect()),
        }
    }
    (ok, bad)
}

fn parse_line(line: &str) -> Option<Record> {
    let f: Vec<&str> = line.split('\t').collect();
    if !(f.len() == 7 || f.len() == 9) || f[0] != "R" {
        return None;
    }
    let t0: f64 = f[4].parse().ok()?;
    let t1: f64 = f[5].parse().ok()?;
    let phase = f[3];
    if !PHASES.contains(&phase) {
        return None;
    }
    Some(Record {
        component: f[1].parse().ok()?,
        exit: f[2].parse().ok()?,
        result: ResultRecord {
            phase: phase.to_string(),
            runtime: (t1 - t0).max(0.0),
            start: t0,
            end: t1,
            stats: f[6].to_string(),
            stdout_tail: f.get(7).map(|t| unescape_tail(t)).unwrap_or_default(),
            stderr_tail: f.get(8).map(|t| unescape_tail(t)).unwrap_or_default(),
            output_error: String::new(),
        },
    })
}

/// The last `n` lines of a log tail.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_data() {
        let (ok, bad) = parse_results(
            "R\t7\t0\tok\t10.5\t12.0\tinputs=5\nR\t8\t3\tcommand\t1\t2\t\tdone\\n\tno such file\\tx\\\\y\n$(rm -rf /)\nR\t9\tx\tok\t1\t2\t\nR\t9\t0\tsql'\t1\t2\t\nR\t9\t0\tok\t1\t2\t\tonly one tail\n",
        );
        assert_eq!(ok.len(), 2);
        assert_eq!(
            ok[0],
            Record {
                component: 7,
                exit: 0,
                result: ResultRecord {
                    phase: "ok".into(),
                    runtime: 1.5,
                    start: 10.5,
                    end: 12.0,
                    stats: "inputs=5".into(),
                    stdout_tail: String::new(),
                    stderr_tail: String::new(),
                    output_error: String::new(),
                },
            }
        );
        assert_eq!((ok[1].exit, ok[1].result.phase.as_str()), (3, "command"));
        assert_eq!(ok[1].result.stdout_tail, "done\n");
        assert_eq!(ok[1].result.stderr_tail, "no such file\tx\\y");
        assert_eq!(bad.len(), 4);
    }
}
