//! What the pipeline that owns the work receives: one result line per
//! component attempt whose result was applied (`remotetool results`, and
//! the recipe's `apply` command on its stdin), as JSON. Everything in a
//! line came from the remote side as data and stays data: it is printed,
//! never run.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::Value;
use wait_timeout::ChildExt;

use crate::db::models::{Component, ResultRow, WorkItem};
use crate::record::ResultRecord;
use crate::state::ItemState;

/// One result, as `remotetool results` prints it (one JSON object a line).
#[derive(Debug, Clone, Serialize)]
pub struct ResultLine {
    /// Its place in the order results were applied (with `--consumer`,
    /// and once the result is applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub stage: String,
    pub stage_id: i64,
    pub label: String,
    /// The work item's params.
    pub params: Value,
    pub remote_id: i64,
    pub component_id: i64,
    /// The work item's attempt this result is of (1 for the first).
    pub attempt: i32,
    /// The work item's state after it: `done`, `failed` (it will be tried
    /// again) or `abandoned`.
    pub state: ItemState,
    pub exit_status: Option<i32>,
    /// `ok`, or the phase that failed (`pre`, `command`, `post`, `output`).
    pub phase: Option<String>,
    /// Seconds, and start and end (Unix time, seconds) on the remote side.
    pub runtime: Option<f64>,
    pub start: Option<f64>,
    pub end: Option<f64>,
    /// The post phase's record: a JSON value when it parses as one, else
    /// the text.
    pub stats: Value,
    /// Why an output did not come back, when one did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_error: Option<String>,
    /// The outputs here: `[{"name", "path", "size"}]` (`name` is the
    /// recipe's output name, or `log`).
    pub outputs: Value,
    /// When it was applied (once it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<NaiveDateTime>,
}

/// The post phase's record as JSON: a value when it parses as one, else the
/// text (null when there is none).
pub fn stats_value(stats: &str) -> Value {
    if stats.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(stats).unwrap_or_else(|_| Value::String(stats.to_string()))
}

fn record_of(text: Option<&str>) -> Option<ResultRecord> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

impl ResultLine {
    fn build(
        w: (&str, i64, &str, &str),
        c: (i64, i64, Option<i32>, Option<f64>, Option<&str>),
        attempt: i32,
        state: ItemState,
        outputs: &str,
    ) -> ResultLine {
        let (stage, stage_id, label, params) = w;
        let (remote_id, component_id, exit_status, runtime, result) = c;
        let rec = record_of(result);
        let when = |t: f64| (t > 0.0).then_some(t);
        ResultLine {
            seq: None,
            stage: stage.to_string(),
            stage_id,
            label: label.to_string(),
            params: serde_json::from_str(params).unwrap_or(Value::Null),
            remote_id,
            component_id,
            attempt,
            state,
            exit_status,
            phase: rec.as_ref().map(|r| r.phase.clone()),
            runtime,
            start: rec.as_ref().and_then(|r| when(r.start)),
            end: rec.as_ref().and_then(|r| when(r.end)),
            stats: rec
                .as_ref()
                .map(|r| stats_value(&r.stats))
                .unwrap_or(Value::Null),
            output_error: rec
                .as_ref()
                .map(|r| r.output_error.clone())
                .filter(|e| !e.is_empty()),
            outputs: serde_json::from_str(outputs).unwrap_or(Value::Array(Vec::new())),
            applied_at: None,
        }
    }

    /// A recorded result.
    pub fn from_row(r: &ResultRow) -> ResultLine {
        let mut line = ResultLine::build(
            (&r.stage, r.stage_id, &r.label, &r.params),
            (
                r.remote_id,
                r.component_id,
                r.exit_status,
                r.runtime,
                r.result.as_deref(),
            ),
            r.attempt,
            r.state,
            &r.outputs,
        );
        line.seq = Some(r.seq);
        line.applied_at = Some(r.applied_at);
        line
    }

    /// A component's result before it is recorded as applied (what the
    /// apply command reads).
    pub fn pending(
        c: &Component,
        w: &WorkItem,
        attempt: i32,
        state: ItemState,
        outputs: &str,
    ) -> ResultLine {
        ResultLine::build(
            (&w.stage, w.stage_id, &w.label, &w.params),
            (
                c.remote_id,
                c.id,
                c.exit_status,
                c.runtime,
                c.result.as_deref(),
            ),
            attempt,
            state,
            outputs,
        )
    }
}

/// Lines as JSON Lines.
pub fn json_lines(lines: &[ResultLine]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut out, l)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The outputs of each component from a run's `outputs.list`, as they are
/// here now: component id -> JSON `[{"name", "path", "size"}]` of those
/// whose local file exists.
pub fn outputs_here(outputs_list: &Path) -> anyhow::Result<std::collections::HashMap<i64, String>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(outputs_list)
        .with_context(|| format!("cannot read {}", outputs_list.display()))?;
    let mut by: std::collections::HashMap<i64, Vec<Value>> = Default::default();
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        let (Some(local), Some(cid)) = (f.get(1), f.get(2).and_then(|c| c.parse::<i64>().ok()))
        else {
            continue;
        };
        let name = match f.get(3) {
            Some(k) => k.strip_prefix("out:").unwrap_or(k),
            None => "",
        };
        if let Ok(m) = std::fs::metadata(local) {
            by.entry(cid).or_default().push(serde_json::json!({
                "name": name,
                "path": local,
                "size": m.len(),
            }));
        }
    }
    Ok(by
        .into_iter()
        .map(|(k, v)| (k, Value::Array(v).to_string()))
        .collect())
}

/// Why an apply command did not succeed.
#[derive(Debug)]
pub struct ApplyFailed {
    /// "exited 3", "was killed by signal 9", "ran past its limit of 600 s".
    pub how: String,
    /// The end of what it wrote on stderr.
    pub stderr_tail: String,
}

/// Bytes of the apply command's stderr kept for the run's message.
const STDERR_TAIL: usize = 2000;

/// Run a recipe's apply command here (`sh -c`, in a process group of its
/// own, killed whole past `limit`) with `input` on its stdin and `env` set;
/// its stdout goes to this process's stderr.
pub fn run_apply(
    command: &str,
    input: Vec<u8>,
    limit: Duration,
    env: &[(&str, String)],
) -> anyhow::Result<Result<(), ApplyFailed>> {
    use anyhow::Context;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(std::io::stderr())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start the apply command `{command}`"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        // A command that does not read all of its input is its own affair.
        let _ = stdin.write_all(&input);
    });
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        let from = all.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&all[from..])
            .trim()
            .replace('\n', "; ")
    });
    let status = child.wait_timeout(limit)?;
    let how = match status {
        Some(s) if s.success() => None,
        Some(s) => Some(match s.code() {
            Some(code) => format!("exited {code}"),
            None => "was killed by a signal".to_string(),
        }),
        None => {
            // The whole group: sh and what it started.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            Some(format!("ran past its limit of {} s", limit.as_secs()))
        }
    };
    let _ = writer.join();
    let stderr_tail = reader.join().unwrap_or_default();
    Ok(match how {
        None => Ok(()),
        Some(how) => Err(ApplyFailed { how, stderr_tail }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_json_when_they_parse() {
        assert_eq!(stats_value("{\"n\": 3}"), serde_json::json!({"n": 3}));
        assert_eq!(
            stats_value("inputs=5 bytes=3"),
            Value::String("inputs=5 bytes=3".into())
        );
        assert_eq!(
            stats_value("'; DROP TABLE x; --"),
            Value::String("'; DROP TABLE x; --".into())
        );
        assert_eq!(stats_value(""), Value::Null);
    }

    #[test]
    fn apply_commands_get_their_input_and_a_limit() {
        let ok = run_apply(
            "test \"$(cat)\" = hello",
            b"hello".to_vec(),
            Duration::from_secs(10),
            &[],
        )
        .unwrap();
        assert!(ok.is_ok());
        let failed = run_apply(
            "echo no >&2; exit 3",
            Vec::new(),
            Duration::from_secs(10),
            &[],
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(
            (failed.how.as_str(), failed.stderr_tail.as_str()),
            ("exited 3", "no")
        );
        let t0 = std::time::Instant::now();
        let slow = run_apply("sleep 30", Vec::new(), Duration::from_secs(1), &[])
            .unwrap()
            .unwrap_err();
        assert!(slow.how.contains("limit of 1 s"), "{}", slow.how);
        assert!(t0.elapsed() < Duration::from_secs(10));
        let env = run_apply(
            "test \"$OFFLOAD_APPLY_KEY\" = run-1-a0",
            Vec::new(),
            Duration::from_secs(10),
            &[("OFFLOAD_APPLY_KEY", "run-1-a0".to_string())],
        )
        .unwrap();
        assert!(env.is_ok());
    }
}
