//! Tool processes at work, known to every host through the database: each
//! exec, poll, prepare and xfer that works on a database registers itself
//! (host, pid, command) and keeps a heartbeat, which also keeps its runs'
//! leases fresh. `remotetool wait` waits until none is left; a process
//! that died (its pid gone on this host, or no heartbeat for
//! [`crate::runs::LEASE_STALE`]) is reclaimed, its leases freed, with a
//! message.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::db::models::{NewProcess, Process};
use crate::db::{self, Db};
use crate::runs::{self, Actor};

/// How often a registered process tells the database it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// A registered process; dropping it removes the registration.
pub struct Registration {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Register this process and start its heartbeat (on a connection of its
/// own). A database that cannot be written is reported, not fatal: the
/// work itself will meet the same problem and say so.
pub fn register(url: &str, actor: &Actor) -> anyhow::Result<Registration> {
    let mut db = Db::open(url)?;
    let now = db::now();
    let id = db.tx(|s| {
        Ok(s.insert_process(&NewProcess {
            tool: actor.tool.clone(),
            host: actor.host.clone(),
            pid: actor.pid,
            started_at: now,
            heartbeat_at: now,
            command: Some(actor.command.clone()),
        })?)
    })?;
    let (tx, rx) = mpsc::channel::<()>();
    let host = actor.host.clone();
    let pid = actor.pid;
    let thread = std::thread::spawn(move || {
        // Until the registration is dropped (the sender goes away).
        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(HEARTBEAT) {
            let _ = db.tx(|s| Ok(s.heartbeat(&host, pid, db::now())?));
        }
        let _ = db.tx(|s| Ok(s.delete_process(id)?));
    });
    Ok(Registration {
        stop: Some(tx),
        thread: Some(thread),
    })
}

impl Drop for Registration {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why a process was reclaimed.
#[derive(Debug, Clone, Serialize)]
pub struct Reclaimed {
    pub tool: String,
    pub host: String,
    pub pid: i32,
    pub why: String,
    pub leases: usize,
}

/// Why `p` is dead, if it is: its pid gone on this host, or no heartbeat
/// for too long.
pub fn dead(p: &Process, this_host: &str, now: chrono::NaiveDateTime) -> Option<String> {
    runs::holder_gone(&p.host, p.pid, p.heartbeat_at, this_host, now).map(|g| match g {
        runs::Gone::Process => "its process is gone".to_string(),
        runs::Gone::Silent(secs) => {
            format!("no heartbeat for {}", crate::printer::human_duration(secs))
        }
    })
}

/// The live processes of `tools`; dead ones (and their leases) are removed
/// first, each with a history row, and returned apart.
pub fn live(
    db: &mut Db,
    tools: &[String],
    actor: &Actor,
) -> anyhow::Result<(Vec<Process>, Vec<Reclaimed>)> {
    let now = db::now();
    let all = db.read(|s| s.processes())?;
    let mut alive = Vec::new();
    let mut reclaimed = Vec::new();
    for p in all {
        if let Some(why) = dead(&p, &actor.host, now) {
            let leases = db.tx(|s| {
                s.delete_process(p.id)?;
                let n = s.delete_leases_of(&p.host, p.pid)?;
                s.insert_history(&actor.history(
                    None,
                    None,
                    None,
                    format!(
                        "reclaimed {} on {}:{} ({why}); {n} run leases freed",
                        p.tool, p.host, p.pid
                    ),
                ))?;
                Ok(n)
            })?;
            reclaimed.push(Reclaimed {
                tool: p.tool,
                host: p.host,
                pid: p.pid,
                why,
                leases,
            });
        } else if tools.is_empty() || tools.contains(&p.tool) {
            alive.push(p);
        }
    }
    Ok((alive, reclaimed))
}
