//! `remotetool results`: every applied result, as JSON Lines, to every
//! consumer exactly once.
//!
//! Without `--consumer` it lists the results the filters select. With
//! `--consumer NAME` it hands NAME only what it has not been given yet,
//! oldest first, and moves NAME's cursor past them once they are out
//! (written to stdout, or, with `--exec CMD`, read by CMD and CMD exited
//! 0). A consumer is held by one process at a time, as a run is: a second
//! one is told to try later (exit 4), and a dead holder's hold is reclaimed.
//! Nothing is marked when the output fails, CMD fails or is killed, or this
//! tool is killed: the next call hands the same results again.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

use super::args::ResultsArgs;
use crate::cli::Session;
use crate::db::results::ResultFilter;
use crate::db::{self, Db};
use crate::exit::{self, ExitStatus};
use crate::pipeline::{self, ResultLine};
use crate::printer::Printer;
use crate::runs::{self, Actor};

fn filter(a: &ResultsArgs, after: i64) -> anyhow::Result<ResultFilter> {
    if a.limit.is_some_and(|n| n < 1) {
        return Err(exit::usage("--limit must be at least 1"));
    }
    Ok(ResultFilter {
        label: a.label.clone(),
        stage: a.stage.clone(),
        remote_id: a.remote_id,
        // clap lets only the three names through.
        states: a.state.iter().filter_map(|s| s.parse().ok()).collect(),
        after,
        limit: a.limit,
    })
}

/// The results `f` selects, oldest first (reads only): the model, whose
/// only rendering is JSON Lines, one result a line.
pub fn gather(db: &mut Db, f: &ResultFilter) -> anyhow::Result<Vec<ResultLine>> {
    let rows = db.read(|s| s.results(f))?;
    Ok(rows.iter().map(ResultLine::from_row).collect())
}

/// The results as JSON Lines, how many, and the last one's sequence number.
fn lines_of(db: &mut Db, f: &ResultFilter) -> anyhow::Result<(Vec<u8>, usize, Option<i64>)> {
    let lines = gather(db, f)?;
    let last = lines.last().and_then(|l| l.seq);
    Ok((pipeline::json_lines(&lines)?, lines.len(), last))
}

pub fn run(s: &mut Session, a: ResultsArgs) -> anyhow::Result<ExitStatus> {
    let Session {
        db,
        db_url: url,
        printer,
        actor,
        ..
    } = s;
    let Some(name) = a.consumer.clone() else {
        let (text, _, _) = lines_of(db, &filter(&a, 0)?)?;
        printer.data_bytes(&text)?;
        return Ok(ExitStatus::Success);
    };
    check_name(&name)?;
    let cursor = take(db, &name, actor)?;
    let hold = Heartbeat::start(url, &name, actor)?;
    let outcome = hand_out(db, &a, &name, cursor, printer);
    drop(hold);
    let cursor = match outcome {
        Ok(c) => c,
        Err(e) => {
            give_back(db, &name, actor, None)?;
            return Err(e);
        }
    };
    give_back(db, &name, actor, Some(cursor))?;
    Ok(ExitStatus::Success)
}

/// Hand the batch out; the new cursor once it was taken.
fn hand_out(
    db: &mut Db,
    a: &ResultsArgs,
    name: &str,
    cursor: i64,
    printer: &Printer,
) -> anyhow::Result<i64> {
    let (text, n, last) = lines_of(db, &filter(a, cursor)?)?;
    let Some(last) = last else {
        return Err(exit::nothing_to_do(format!(
            "no new results for consumer '{name}'"
        )));
    };
    match &a.exec {
        None => {
            printer.data_bytes(&text)?;
            printer.info(format!("consumer '{name}': {n} results, up to {last}"));
            Ok(last)
        }
        Some(cmd) => {
            let status = run_consumer(cmd, text, name)?;
            if !status.success() {
                return Err(anyhow::anyhow!(
                    "consumer '{name}': `{cmd}` {}; nothing was marked given, the next call hands the same {n} results again",
                    match status.code() {
                        Some(c) => format!("exited {c}"),
                        None => "was killed".to_string(),
                    }
                ));
            }
            printer.info(format!(
                "consumer '{name}': `{cmd}` took {n} results, up to {last}"
            ));
            Ok(last)
        }
    }
}

fn run_consumer(cmd: &str, input: Vec<u8>, name: &str) -> anyhow::Result<std::process::ExitStatus> {
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .env("OFFLOAD_CONSUMER", name)
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{cmd}`"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{cmd}`"))?;
    let _ = writer.join();
    Ok(status)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(exit::usage(format!(
            "consumer name {name:?}: use letters, digits and ._-"
        )));
    }
    Ok(())
}

/// Take the consumer (made at its start if new): its cursor. Held by a live
/// process: "try later"; by a dead one: reclaimed.
fn take(db: &mut Db, name: &str, actor: &Actor) -> anyhow::Result<i64> {
    let now = db::now();
    let taken = db.tx(|s| {
        s.ensure_consumer(name, now)?;
        let c = s.consumer(name)?.expect("made above");
        let seen = match (&c.holder_host, c.holder_pid, c.heartbeat_at) {
            (Some(h), Some(p), Some(beat)) => {
                if runs::holder_gone(h, p, beat, &actor.host, now).is_none() {
                    return Err(exit::try_later(format!(
                        "consumer '{name}' is held by {h}:{p} (heartbeat {})",
                        beat.format("%Y-%m-%d %H:%M:%S")
                    )));
                }
                s.insert_history(&actor.history(
                    None,
                    None,
                    None,
                    format!("reclaimed consumer '{name}' from {h}:{p}"),
                ))?;
                Some((h.clone(), p))
            }
            _ => None,
        };
        let n = s.take_consumer(
            name,
            seen.as_ref().map(|(h, p)| (h.as_str(), *p)),
            &actor.host,
            actor.pid,
            now,
        )?;
        Ok((n, c.cursor))
    })?;
    match taken {
        (1, cursor) => Ok(cursor),
        _ => Err(exit::try_later(format!(
            "consumer '{name}' was just taken by another process"
        ))),
    }
}

fn give_back(db: &mut Db, name: &str, actor: &Actor, cursor: Option<i64>) -> anyhow::Result<()> {
    db.tx(|s| Ok(s.release_consumer(name, &actor.host, actor.pid, cursor, db::now())?))?;
    Ok(())
}

/// Keeps the consumer's hold fresh (on a connection of its own) while a
/// long command reads the batch.
struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(url: &str, name: &str, actor: &Actor) -> anyhow::Result<Heartbeat> {
        let mut db = Db::open(url)?;
        let (tx, rx) = mpsc::channel::<()>();
        let (name, host, pid) = (name.to_string(), actor.host.clone(), actor.pid);
        let every = Duration::from_secs(20);
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                let _ = db.tx(|s| Ok(s.heartbeat_consumer(&name, &host, pid, db::now())?));
            }
        });
        Ok(Heartbeat {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
