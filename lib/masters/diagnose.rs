//! `auth status --diagnose`: the way to a front end walked hop by hop
//! (the control socket, the master, a session through it, the bastion, the
//! front end, the authentication), each failing hop with its remedy.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

use crate::exit;
use crate::printer::human_duration;
use crate::ssh::{setting, Host};

use super::{FrontEnd, Master};

/// One step on the way to a front end, as `auth status --diagnose` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub hop: String,
    pub ok: bool,
    pub detail: String,
    /// What to do about it, when it is not ok.
    pub remedy: Option<String>,
}

fn hop(name: &str, ok: bool, detail: impl Into<String>, remedy: Option<String>) -> Hop {
    Hop {
        hop: name.to_string(),
        ok,
        detail: detail.into(),
        remedy,
    }
}

/// Connect to host:port and read the SSH banner. Err: why not.
fn ssh_banner(host: &str, port: &str) -> Result<String, String> {
    let addr = format!("{host}:{port}");
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr} does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} has no address"))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(5))
        .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = [0u8; 256];
    let n = s
        .read(&mut buf)
        .map_err(|e| format!("{addr}: no banner ({e})"))?;
    let banner = String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if banner.starts_with("SSH-") {
        Ok(banner)
    } else {
        Err(format!(
            "{addr} answers, but not as an SSH server ({banner:?})"
        ))
    }
}

/// Walk the way to a front end and say where it breaks and what to do:
/// the control socket (missing, stale), the master (alive, its expiry),
/// a session through it (MaxSessions), and without a master the bastion
/// and the front end themselves (unreachable, refused) or, when they
/// answer, the expired authentication. `m` is what [`probe`] found of the
/// master just now.
pub fn diagnose(fe: &FrontEnd, m: &Master) -> Vec<Hop> {
    let mut hops = Vec::new();
    walk(fe, m, &mut hops);
    hops
}

/// Add the hops to `hops` in order, up to the first that blocks the way
/// (then None).
fn walk(fe: &FrontEnd, m: &Master, hops: &mut Vec<Hop>) -> Option<()> {
    hops.push(control_socket_hop(&fe.host, m));
    if let Some(pid) = m.pid {
        hops.push(master_hop(pid, m));
        hops.push(session_hop(&fe.host));
        return Some(());
    }
    // No master: is the way there open?
    let way = match way(fe) {
        Ok(w) => w,
        Err(h) => {
            hops.push(h);
            return None;
        }
    };
    if let Some(jump) = &way.jump {
        pass(hops, bastion_hop(fe, jump))?;
    }
    pass(hops, front_end_hop(&way))?;
    hops.push(authentication_hop(fe));
    Some(())
}

/// Add a hop the rest of the way goes through: None when it is not ok.
fn pass(hops: &mut Vec<Hop>, h: Hop) -> Option<()> {
    let ok = h.ok;
    hops.push(h);
    ok.then_some(())
}

/// The control socket: there with a master, stale, or absent.
fn control_socket_hop(host: &Host, m: &Master) -> Hop {
    let alias = &host.alias;
    let sock = host.socket.display().to_string();
    if m.pid.is_some() {
        return hop("control socket", true, sock, None);
    }
    let e = m.problem.clone().unwrap_or_default();
    if host.socket.exists() {
        hop(
            "control socket",
            false,
            format!("stale: {sock} exists but no master answers ({e})"),
            Some(format!(
                "remove it and start the master: `remotetool auth stop {alias}` then `remotetool auth start {alias}`"
            )),
        )
    } else {
        hop(
            "control socket",
            false,
            format!("{sock} does not exist"),
            None,
        )
    }
}

/// A live master and its expected expiry: not ok within the last hour.
fn master_hop(pid: u32, m: &Master) -> Hop {
    let left = m
        .seconds_left
        .map(human_duration)
        .unwrap_or_else(|| "?".into());
    let expiring = m.seconds_left.is_some_and(|s| s < 3600);
    hop(
        "master",
        !expiring,
        format!("alive, pid {pid}, expected expiry in {left}"),
        expiring.then(|| "refresh soon: `remotetool refresh-auth`".to_string()),
    )
}

/// A command through the master.
fn session_hop(host: &Host) -> Hop {
    let alias = &host.alias;
    match host.try_session() {
        Ok(()) => hop("session", true, "a command runs through the master", None),
        Err(e) if crate::ssh::session_refused(&e) => hop(
            "session",
            false,
            format!("MaxSessions reached: the front end refuses another session ({e})"),
            Some("wait for transfers to end, or give xfer fewer --channels".into()),
        ),
        Err(e) => hop(
            "session",
            false,
            format!("the master is up but a command fails: {e}"),
            Some(format!(
                "authentication expired on the far side: `remotetool auth stop {alias}`, then start it again"
            )),
        ),
    }
}

/// Where the ssh configuration sends a front end.
struct Way {
    hostname: String,
    port: String,
    /// The ProxyJump setting, when there is one.
    jump: Option<String>,
}

/// The front end's address and jump host from the ssh configuration; Err:
/// the configuration hop, which blocks the way.
fn way(fe: &FrontEnd) -> Result<Way, Hop> {
    let alias = &fe.host.alias;
    let settings = fe.ssh.settings(alias).map_err(|e| {
        hop(
            "configuration",
            false,
            exit::one_line(&e),
            Some("fix the ssh configuration".into()),
        )
    })?;
    Ok(Way {
        hostname: setting(&settings, "hostname").unwrap_or_else(|| alias.clone()),
        port: setting(&settings, "port").unwrap_or_else(|| "22".into()),
        jump: setting(&settings, "proxyjump").filter(|j| j != "none"),
    })
}

/// The first jump host of `jump` (a ProxyJump value): does it answer?
fn bastion_hop(fe: &FrontEnd, jump: &str) -> Hop {
    let first = jump.split(',').next().unwrap_or(jump).to_string();
    let (jhost, jport) = match fe
        .ssh
        .settings(first.split('@').next_back().unwrap_or(&first))
    {
        Ok(t) => (
            setting(&t, "hostname").unwrap_or_else(|| first.clone()),
            setting(&t, "port").unwrap_or_else(|| "22".into()),
        ),
        Err(_) => (first.clone(), "22".to_string()),
    };
    match ssh_banner(&jhost, &jport) {
        Ok(b) => hop(
            "bastion",
            true,
            format!("{first} ({jhost}:{jport}) answers: {b}"),
            None,
        ),
        Err(e) => hop(
            "bastion",
            false,
            format!("bastion {first} unreachable: {e}"),
            Some("check the network (VPN, firewall) to the bastion; nothing else can work until it answers".into()),
        ),
    }
}

/// The front end itself: does it answer? Behind a bastion only logging in
/// tells.
fn front_end_hop(way: &Way) -> Hop {
    let Way { hostname, port, .. } = way;
    if way.jump.is_some() {
        return hop(
            "front end",
            true,
            format!("{hostname}:{port} is behind the bastion: checked only by logging in"),
            None,
        );
    }
    match ssh_banner(hostname, port) {
        Ok(b) => hop(
            "front end",
            true,
            format!("{hostname}:{port} answers: {b}"),
            None,
        ),
        Err(e) => {
            let refused = e.contains("refused");
            hop(
                "front end",
                false,
                format!(
                    "{} {e}",
                    if refused {
                        "front end refused the connection:"
                    } else {
                        "front end unreachable:"
                    }
                ),
                Some(if refused {
                    "its sshd is down or the port is wrong: ask the site, or check Port in the ssh configuration".into()
                } else {
                    "check the network to the front end and HostName in the ssh configuration"
                        .into()
                }),
            )
        }
    }
}

/// The way is open but no master is logged in.
fn authentication_hop(fe: &FrontEnd) -> Hop {
    let alias = &fe.host.alias;
    hop(
        "authentication",
        false,
        format!(
            "expired: the way is open but no master is logged in (the site cuts connections after {} h)",
            fe.target.config.master_lifetime_hours
        ),
        Some(format!(
            "start it with the key card: `remotetool auth start {alias}` (or `remotetool refresh-auth`)"
        )),
    )
}
