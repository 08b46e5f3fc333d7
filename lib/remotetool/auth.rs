//! `remotetool auth status|start|stop`: the masters to the front ends, as
//! commands (`refresh-auth` runs the whole 12-hour refresh).

use serde::Serialize;

use super::args::{AuthArgs, AuthCommand};
use crate::cli::Session;
use crate::db;
use crate::exit::{self, ExitStatus};
use crate::masters::{self, FrontEnd, Hop, Master};
use crate::printer::{human_duration, Printer};
use crate::table;

#[derive(Debug, Serialize)]
pub(super) struct MasterView {
    #[serde(flatten)]
    pub master: Master,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<Vec<Hop>>,
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

pub(super) fn status_views(fes: &[FrontEnd], diagnose: bool) -> Vec<MasterView> {
    let now = db::now();
    fes.iter()
        .map(|fe| {
            let master = masters::probe(&fe.target, &fe.host, now);
            let hops = (diagnose || !master.alive).then(|| masters::diagnose(fe, &master));
            MasterView { master, hops }
        })
        .collect()
}

pub fn run(s: &mut Session, a: AuthArgs) -> anyhow::Result<ExitStatus> {
    let Session {
        config: cfg,
        printer,
        ..
    } = s;
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
            if printer.is_json() {
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
            report_hosts(&started, printer)
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
            report_hosts(&stopped, printer)
        }
    }
}

fn report_hosts(hosts: &[String], printer: &Printer) -> anyhow::Result<ExitStatus> {
    if printer.is_json() {
        printer.json(&hosts)?;
    } else if !hosts.is_empty() {
        printer.data(hosts.join("\n"))?;
    }
    Ok(ExitStatus::Success)
}
