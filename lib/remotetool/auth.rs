//! `remotetool auth status|start|stop`, `remotetool wait` and
//! `remotetool refresh-auth`: the 12-hour auth refresh as commands.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::db::models::Control;
use crate::db::{self, Db};
use crate::exit::{self, ExitStatus};
use crate::masters::{self, FrontEnd, Hop, Master};
use crate::printer::{human_duration, Printer};
use crate::runs::{self, Actor};
use crate::table;
use crate::workers;

/// The tools the refresh switches off while the masters change.
pub const NETWORK_TOOLS: &[&str] = &["exec", "poll", "xfer"];
/// The pause reason that marks a refresh's own pauses.
pub const REFRESH_REASON: &str = "auth refresh";
/// The control row of an unfinished refresh.
pub(super) const REFRESH_ROW: &str = "refresh-auth";

#[derive(Debug, clap::Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
}

#[derive(Debug, clap::Args)]
pub struct Which {
    /// Only the front ends of this target
    #[arg(long)]
    pub target: Option<String>,
    /// Only these front ends (ssh Host aliases) [default: every front end
    /// of the configuration's remote targets]
    #[arg(value_name = "HOST")]
    pub hosts: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Each master: alive, pid, started, expected expiry, socket; exit 5
    /// when one is down
    Status {
        #[command(flatten)]
        which: Which,
        /// Walk the way to each front end and name what is broken
        #[arg(long)]
        diagnose: bool,
    },
    /// Open the masters that are down: `ssh -M -f -N HOST` (type the
    /// key-card password), detached
    Start {
        #[command(flatten)]
        which: Which,
    },
    /// Close the masters (`ssh -O exit`); remove stale sockets
    Stop {
        #[command(flatten)]
        which: Which,
    },
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Wait for these tools [default: exec poll xfer]
    #[arg(value_name = "TOOL")]
    pub tools: Vec<String>,
    /// Give up after this many seconds (exit 4)
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// Revert the `auth` runs of this label at the end [default: every run in `auth`]
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub which: Which,
    /// How long to wait for exec, poll and xfer to end (exit 4 after it;
    /// running the command again goes on)
    #[arg(long, default_value_t = 1800, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

#[derive(Debug, Serialize)]
struct MasterView {
    #[serde(flatten)]
    master: Master,
    #[serde(skip_serializing_if = "Option::is_none")]
    hops: Option<Vec<Hop>>,
}

fn masters_table(views: &[MasterView], width: Option<usize>) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let m = &v.master;
            vec![
                m.target.clone(),
                m.host.clone(),
                if m.alive { "alive" } else { "DOWN" }.to_string(),
                m.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                table::opt_time(&m.started),
                table::opt_time(&m.expires),
                m.seconds_left
                    .map(human_duration)
                    .unwrap_or_else(|| "-".into()),
                m.socket.clone(),
            ]
        })
        .collect();
    table::render_fit(
        &[
            "TARGET", "HOST", "MASTER", "PID", "STARTED", "EXPIRES", "LEFT", "SOCKET",
        ],
        &rows,
        width,
    )
}

fn hops_text(v: &MasterView) -> String {
    let mut out = format!("{} ({}):\n", v.master.host, v.master.target);
    for h in v.hops.iter().flatten() {
        out.push_str(&format!(
            "  {:<15} {}  {}\n",
            h.hop,
            if h.ok { "ok  " } else { "FAIL" },
            h.detail
        ));
        if let Some(r) = &h.remedy {
            out.push_str(&format!("  {:<15}       -> {r}\n", ""));
        }
    }
    out
}

fn status_views(fes: &[FrontEnd], diagnose: bool) -> Vec<MasterView> {
    let now = db::now();
    fes.iter()
        .map(|fe| {
            let master = masters::probe(&fe.target, &fe.host, now);
            let hops = (diagnose || !master.alive).then(|| masters::diagnose(fe, &master));
            MasterView { master, hops }
        })
        .collect()
}

pub fn auth_command(
    cfg: &Config,
    a: AuthArgs,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    match a.command {
        AuthCommand::Status { which, diagnose } => {
            let fes = masters::front_ends(cfg, which.target.as_deref(), &which.hosts)?;
            for fe in &fes {
                if !crate::ssh::names_local_host(&fe.host.socket) {
                    printer.warn(format!(
                        "{}: its ControlPath {} does not name this local host (%l): local hosts that share a home folder would share one master; use `ControlPath ~/.ssh/connections/%l_%h_%p_%r`",
                        fe.host.alias,
                        fe.host.socket.display()
                    ));
                }
            }
            let views = status_views(&fes, diagnose);
            let down = views.iter().filter(|v| !v.master.alive).count();
            if json {
                printer.json(&views)?;
            } else {
                let mut out = masters_table(&views, printer.width());
                for v in views.iter().filter(|v| v.hops.is_some()) {
                    out.push('\n');
                    out.push_str(&hops_text(v));
                }
                printer.data(out)?;
            }
            if down > 0 {
                return Err(exit::auth(format!(
                    "{down} of {} masters are down",
                    views.len()
                )));
            }
            Ok(ExitStatus::Success)
        }
        AuthCommand::Start { which } => {
            let fes = masters::front_ends(cfg, which.target.as_deref(), &which.hosts)?;
            let mut started = Vec::new();
            for fe in &fes {
                if let Ok(pid) = fe.host.master_pid() {
                    printer.info(format!(
                        "{}: master already alive (pid {pid})",
                        fe.host.alias
                    ));
                    continue;
                }
                printer.info(format!(
                    "{}: starting the master; type the key-card password when asked",
                    fe.host.alias
                ));
                let pid = masters::start(fe)?;
                printer.info(format!("{}: master alive (pid {pid})", fe.host.alias));
                started.push(fe.host.alias.clone());
            }
            report_hosts(&started, json, printer)
        }
        AuthCommand::Stop { which } => {
            let fes = masters::front_ends(cfg, which.target.as_deref(), &which.hosts)?;
            let mut stopped = Vec::new();
            for fe in &fes {
                if masters::stop(&fe.host)? {
                    printer.info(format!("{}: master stopped", fe.host.alias));
                    stopped.push(fe.host.alias.clone());
                } else {
                    printer.info(format!("{}: no master to stop", fe.host.alias));
                }
            }
            report_hosts(&stopped, json, printer)
        }
    }
}

fn report_hosts(hosts: &[String], json: bool, printer: &Printer) -> anyhow::Result<ExitStatus> {
    if json {
        printer.json(&hosts)?;
    } else if !hosts.is_empty() {
        printer.data(hosts.join("\n"))?;
    }
    Ok(ExitStatus::Success)
}

fn tools_or_default(tools: &[String]) -> anyhow::Result<Vec<String>> {
    if tools.is_empty() {
        return Ok(NETWORK_TOOLS.iter().map(|t| t.to_string()).collect());
    }
    runs::check_tools(tools)?;
    Ok(tools.to_vec())
}

/// Wait until no process of `tools` is at work; dead ones are reclaimed
/// with a message. Err "try later" after `timeout`.
fn wait_for(
    db: &mut Db,
    tools: &[String],
    timeout: Duration,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<Vec<workers::Reclaimed>> {
    let deadline = Instant::now() + timeout;
    let mut said = String::new();
    let mut all_reclaimed = Vec::new();
    loop {
        let (alive, reclaimed) = workers::live(db, tools, actor)?;
        for r in &reclaimed {
            printer.warn(format!(
                "reclaimed {} on {}:{} ({}); {} run leases freed",
                r.tool, r.host, r.pid, r.why, r.leases
            ));
        }
        all_reclaimed.extend(reclaimed);
        if alive.is_empty() {
            return Ok(all_reclaimed);
        }
        let names: Vec<String> = alive
            .iter()
            .map(|p| format!("{} on {}:{}", p.tool, p.host, p.pid))
            .collect();
        let now = names.join(", ");
        if now != said {
            printer.info(format!("waiting for {now}"));
            said = now;
        }
        if Instant::now() >= deadline {
            return Err(exit::try_later(format!(
                "still at work after {} s: {said}",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn wait(
    db: &mut Db,
    a: WaitArgs,
    json: bool,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<ExitStatus> {
    let tools = tools_or_default(&a.tools)?;
    let reclaimed = wait_for(db, &tools, Duration::from_secs(a.timeout), printer, actor)?;
    printer.info(format!("no {} at work", tools.join(", ")));
    if json {
        printer.json(&serde_json::json!({"tools": tools, "reclaimed": reclaimed}))?;
    }
    Ok(ExitStatus::Success)
}

#[derive(Debug, Serialize)]
struct Step {
    step: &'static str,
    done: String,
}

/// The operators' refresh as one command: check, pause, wait, stop, start
/// (the person types the password), resume, revertauth. Its progress is
/// kept in the database: run again after an interruption, it goes on where
/// it stopped (masters started since the refresh began are kept; only the
/// tools it paused are resumed).
pub fn refresh(
    db: &mut Db,
    cfg: &Config,
    a: RefreshArgs,
    json: bool,
    printer: &Printer,
    actor: &Actor,
) -> anyhow::Result<ExitStatus> {
    let fes = masters::front_ends(cfg, a.which.target.as_deref(), &a.which.hosts)?;
    let mut steps: Vec<Step> = Vec::new();
    let say = |steps: &mut Vec<Step>, n: usize, step: &'static str, done: String| {
        printer.info(format!("step {n}/7 {step}: {done}"));
        steps.push(Step { step, done });
    };

    // Begin, or go on with an unfinished refresh.
    let begun = db.tx(|s| {
        let existing = s.controls()?.into_iter().find(|c| c.tool == REFRESH_ROW);
        match existing {
            Some(c) if c.paused => Ok((c.changed_at, true)),
            _ => {
                let now = db::now();
                s.set_control(&Control {
                    tool: REFRESH_ROW.into(),
                    paused: true,
                    reason: Some("in progress".into()),
                    changed_at: now,
                    changed_by: format!("{}:{}", actor.host, actor.pid),
                })?;
                s.insert_history(&actor.history(None, None, None, "auth refresh begun"))?;
                Ok((now, false))
            }
        }
    })?;
    let (since, resumed) = begun;
    if resumed {
        printer.info(format!(
            "going on with the refresh begun at {} UTC",
            table::time(&since)
        ));
    }

    // 1. check
    let views = status_views(&fes, false);
    let summary: Vec<String> = views
        .iter()
        .map(|v| {
            let m = &v.master;
            if m.alive {
                format!(
                    "{} alive, {} left",
                    m.host,
                    m.seconds_left
                        .map(human_duration)
                        .unwrap_or_else(|| "?".into())
                )
            } else {
                let why = v
                    .hops
                    .iter()
                    .flatten()
                    .rfind(|h| !h.ok)
                    .map(|h| h.detail.clone())
                    .unwrap_or_default();
                format!("{} DOWN ({why})", m.host)
            }
        })
        .collect();
    say(&mut steps, 1, "check", summary.join("; "));

    // 2. pause
    let tools = tools_or_default(&[])?;
    let controls = db.read(|s| s.controls())?;
    let to_pause: Vec<String> = tools
        .iter()
        .filter(|t| !controls.iter().any(|c| &c.tool == *t && c.paused))
        .cloned()
        .collect();
    if !to_pause.is_empty() {
        runs::set_paused(db, &to_pause, true, Some(REFRESH_REASON), actor)?;
    }
    say(
        &mut steps,
        2,
        "pause",
        if to_pause.is_empty() {
            "exec, poll and xfer were paused already".into()
        } else {
            format!("paused {}", to_pause.join(", "))
        },
    );

    // 3. wait
    let reclaimed = wait_for(
        db,
        &tools,
        Duration::from_secs(a.wait_timeout),
        printer,
        actor,
    )
    .map_err(|e| {
        exit::try_later(format!(
            "{}; run `remotetool refresh-auth` again to go on",
            exit::one_line(&e)
        ))
    })?;
    say(
        &mut steps,
        3,
        "wait",
        format!(
            "no exec, poll or xfer at work{}",
            if reclaimed.is_empty() {
                String::new()
            } else {
                format!(" ({} dead ones reclaimed)", reclaimed.len())
            }
        ),
    );

    // 4. stop the masters from before this refresh
    let mut stopped = Vec::new();
    let mut kept = Vec::new();
    for fe in &fes {
        let m = masters::probe(&fe.target, &fe.host, db::now());
        if m.alive && m.started.is_some_and(|t| t >= since) {
            kept.push(fe.host.alias.clone());
            continue;
        }
        if masters::stop(&fe.host)? {
            stopped.push(fe.host.alias.clone());
        }
    }
    say(
        &mut steps,
        4,
        "stop",
        format!(
            "stopped: {}{}",
            if stopped.is_empty() {
                "none".to_string()
            } else {
                stopped.join(", ")
            },
            if kept.is_empty() {
                String::new()
            } else {
                format!("; kept (started during this refresh): {}", kept.join(", "))
            }
        ),
    );

    // 5. start
    let mut started = Vec::new();
    for fe in &fes {
        if fe.host.master_pid().is_ok() {
            continue;
        }
        printer.info(format!(
            "{}: starting the master; type the key-card password when asked",
            fe.host.alias
        ));
        masters::start(fe).map_err(|e| {
            exit::auth(format!(
                "{}; run `remotetool refresh-auth` again to go on",
                exit::one_line(&e)
            ))
        })?;
        started.push(fe.host.alias.clone());
    }
    say(
        &mut steps,
        5,
        "start",
        format!(
            "started: {}",
            if started.is_empty() {
                "none".to_string()
            } else {
                started.join(", ")
            }
        ),
    );

    // 6. resume what the refresh paused
    let (ours, others): (Vec<_>, Vec<_>) = db
        .read(|s| s.controls())?
        .into_iter()
        .filter(|c| c.paused && runs::PAUSABLE.contains(&c.tool.as_str()))
        .partition(|c| c.reason.as_deref() == Some(REFRESH_REASON));
    let ours: Vec<String> = ours.into_iter().map(|c| c.tool).collect();
    if !ours.is_empty() {
        runs::set_paused(db, &ours, false, None, actor)?;
    }
    let others: Vec<String> = others
        .into_iter()
        .map(|c| format!("{} ({})", c.tool, c.reason.unwrap_or_default()))
        .collect();
    say(
        &mut steps,
        6,
        "resume",
        format!(
            "resumed: {}{}",
            if ours.is_empty() {
                "none".to_string()
            } else {
                ours.join(", ")
            },
            if others.is_empty() {
                String::new()
            } else {
                format!("; left paused by someone else: {}", others.join(", "))
            }
        ),
    );

    // 7. revertauth
    let reverted = match runs::revert_auth(db, a.label.as_deref(), None, actor) {
        Ok(r) => r,
        Err(e) if exit::status_of(&e) == ExitStatus::NothingToDo => Vec::new(),
        Err(e) => return Err(e),
    };
    let ids: Vec<String> = reverted.iter().map(|r| r.remote_id.to_string()).collect();
    say(
        &mut steps,
        7,
        "revertauth",
        format!(
            "reverted: {}",
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        ),
    );

    db.tx(|s| {
        s.set_control(&Control {
            tool: REFRESH_ROW.into(),
            paused: false,
            reason: Some("done".into()),
            changed_at: db::now(),
            changed_by: format!("{}:{}", actor.host, actor.pid),
        })?;
        s.insert_history(&actor.history(None, None, None, "auth refresh done"))?;
        Ok(())
    })?;
    if json {
        printer.json(&serde_json::json!({"steps": steps, "reverted": reverted}))?;
    } else {
        printer.data(ids.join("\n"))?;
    }
    Ok(ExitStatus::Success)
}
