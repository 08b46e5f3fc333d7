//! Hosts and tools: the tool processes at work with their heartbeats, the
//! runs each holds, the pauses (as `remotetool paused` lists them), and
//! the newest transfers to and from the front ends.

use askama::Template;

use super::{age, framed, Ctx};
use crate::cli::Session;
use crate::remotetool::paused;

pub struct Proc {
    pub tool: String,
    pub host: String,
    pub pid: i32,
    pub since: String,
    pub heartbeat: String,
    pub stale: bool,
    pub command: String,
}

pub struct Lease {
    pub href: String,
    pub remote_id: i64,
    pub by: String,
    pub heartbeat: String,
}

pub struct Pause {
    pub tool: String,
    pub target: String,
    pub paused: bool,
    pub reason: String,
    pub by: String,
}

pub struct Transfer {
    pub at: String,
    pub host: String,
    pub direction: String,
    pub mb: String,
    pub seconds: String,
    pub rate: String,
}

/// Transfers the hosts page lists at most (the newest, in the last 7 days).
const TRANSFERS: i64 = 20;

#[derive(Template)]
#[template(path = "hosts.html")]
pub struct Page {
    pub procs: Vec<Proc>,
    pub transfers: Vec<Transfer>,
    pub charts_href: String,
    pub leases: Vec<Lease>,
    pub pauses: Vec<Pause>,
    pub actions: bool,
}

pub fn body(s: &mut Session, ctx: &Ctx) -> anyhow::Result<String> {
    let now = crate::db::now();
    let stale = crate::runs::LEASE_STALE.as_secs() as i64;
    let procs =
        s.db.read(|st| st.processes())?
            .into_iter()
            .map(|p| {
                let beat = (now - p.heartbeat_at).num_seconds();
                Proc {
                    tool: p.tool,
                    host: p.host,
                    pid: p.pid,
                    since: p.started_at.format("%Y-%m-%d %H:%M").to_string(),
                    heartbeat: format!("{} ago", age(&beat)),
                    stale: beat > stale,
                    command: p.command.unwrap_or_default(),
                }
            })
            .collect();
    let leases =
        s.db.read(|st| st.all_leases())?
            .into_iter()
            .map(|l| Lease {
                href: ctx.run_href(&l.remote_id),
                remote_id: l.remote_id,
                by: format!("{} on {}:{}", l.tool, l.host, l.pid),
                heartbeat: format!("{} ago", age(&(now - l.heartbeat_at).num_seconds())),
            })
            .collect();
    let pauses = paused::gather(&mut s.db)?
        .into_iter()
        .map(|p| Pause {
            tool: p.tool,
            target: p.target.unwrap_or_else(|| "(all)".into()),
            paused: p.paused,
            reason: p.reason.unwrap_or_default(),
            by: p.changed_by,
        })
        .collect();
    let week_ago = now - chrono::TimeDelta::days(7);
    let transfers =
        s.db.read(|st| st.transfers_since(week_ago, TRANSFERS))?
            .into_iter()
            .map(|t| Transfer {
                at: t.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                mb: format!("{:.1}", t.bytes as f64 / 1e6),
                seconds: format!("{:.1}", t.seconds),
                rate: if t.seconds > 0.0 {
                    format!("{:.1}", t.bytes as f64 / t.seconds / 1e6)
                } else {
                    "-".into()
                },
                host: t.host,
                direction: t.direction,
            })
            .collect();
    Ok(Page {
        procs,
        transfers,
        charts_href: ctx.page_href("charts"),
        leases,
        pauses,
        actions: ctx.actions,
    }
    .render()?)
}

pub fn page(s: &mut Session, ctx: &Ctx) -> anyhow::Result<String> {
    framed(ctx, "Hosts and tools", &body(s, ctx)?, false)
}
