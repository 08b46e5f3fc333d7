//! The operators' masters: one ControlMaster per front end, opened by a
//! person with the key card and cut by the site after a fixed lifetime
//! (12 hours by default, `master_lifetime_hours` of the target). A
//! master's start is its control socket's modification time: ssh creates
//! the socket when the master starts and never touches it again.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;

use crate::config::Config;
use crate::exit;
use crate::printer::human_duration;
use crate::ssh::{setting, Host, SshOptions};
use crate::target::Target;

/// What is known of one front end's master.
#[derive(Debug, Clone, Serialize)]
pub struct Master {
    pub target: String,
    pub host: String,
    pub socket: String,
    pub alive: bool,
    pub pid: Option<u32>,
    /// When the master started (UTC).
    pub started: Option<NaiveDateTime>,
    /// Started plus the site's lifetime.
    pub expires: Option<NaiveDateTime>,
    /// Seconds from now until the expected expiry (negative: overdue).
    pub seconds_left: Option<i64>,
    /// Why it is not usable, when it is not.
    pub problem: Option<String>,
}

fn mtime(path: &std::path::Path) -> Option<NaiveDateTime> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    // To the microsecond, as the database keeps times.
    chrono::DateTime::from_timestamp(d.as_secs() as i64, d.subsec_micros() * 1000)
        .map(|d| d.naive_utc())
}

/// The site's connection lifetime as a duration.
fn lifetime(hours: f64) -> TimeDelta {
    TimeDelta::seconds((hours * 3600.0) as i64)
}

/// Probe one host's master.
pub fn probe(target: &Target, host: &Host, now: NaiveDateTime) -> Master {
    let lifetime = lifetime(target.config.master_lifetime_hours);
    let (alive, pid, problem) = match host.master_pid() {
        Ok(pid) => (true, Some(pid), None),
        Err(e) => (false, None, Some(e)),
    };
    let started = if alive { mtime(&host.socket) } else { None };
    let expires = started.map(|s| s + lifetime);
    Master {
        target: target.name.clone(),
        host: host.alias.clone(),
        socket: host.socket.display().to_string(),
        alive,
        pid,
        started,
        expires,
        seconds_left: expires.map(|e| (e - now).num_seconds()),
        problem,
    }
}

/// Every master the configuration's remote targets use, in order. A target
/// whose hosts cannot be resolved gives one entry naming the problem.
pub fn all_masters(cfg: &Config, now: NaiveDateTime) -> Vec<Master> {
    let mut out = Vec::new();
    for name in cfg.targets.keys() {
        let target = match cfg.target(name) {
            Ok(t) => t,
            Err(e) => {
                out.push(unresolved(name, &e));
                continue;
            }
        };
        if !target.has_masters() {
            continue;
        }
        match front_ends(cfg, Some(name), &[]) {
            Ok(fes) => out.extend(fes.iter().map(|fe| probe(&fe.target, &fe.host, now))),
            Err(e) => out.push(unresolved(name, &e)),
        }
    }
    out
}

/// A target whose hosts could not be worked out (host "-").
fn unresolved(target: &str, e: &anyhow::Error) -> Master {
    Master {
        target: target.to_string(),
        host: "-".to_string(),
        socket: String::new(),
        alive: false,
        pid: None,
        started: None,
        expires: None,
        seconds_left: None,
        problem: Some(crate::exit::one_line(e)),
    }
}

/// A target's front end with how to reach it.
pub struct FrontEnd {
    pub target: Target,
    pub ssh: SshOptions,
    pub host: Host,
}

/// The front ends of the configuration's remote targets: all, those of
/// `target`, or those named in `hosts`.
pub fn front_ends(
    cfg: &Config,
    target: Option<&str>,
    hosts: &[String],
) -> anyhow::Result<Vec<FrontEnd>> {
    let names: Vec<String> = match target {
        Some(t) => vec![t.to_string()],
        None => cfg.targets.keys().cloned().collect(),
    };
    let mut out = Vec::new();
    for name in names {
        let t = cfg.target(&name)?;
        if !t.has_masters() {
            continue;
        }
        let ssh = t.ssh_options();
        for alias in &t.config.hosts {
            if !hosts.is_empty() && !hosts.contains(alias) {
                continue;
            }
            out.push(FrontEnd {
                host: ssh.host(alias)?,
                ssh: ssh.clone(),
                target: t.clone(),
            });
        }
    }
    for h in hosts {
        if !out.iter().any(|f| &f.host.alias == h) {
            return Err(exit::usage(format!(
                "host '{h}' is in no remote target of the configuration"
            )));
        }
    }
    if out.is_empty() {
        return Err(exit::usage(
            "no front ends: the configuration has no target with hosts (scheduler = \"slurm\")",
        ));
    }
    Ok(out)
}

/// Open the master to a front end: `ssh -M -f -N HOST`, interactive (the
/// person types the key-card password on the terminal), then detached. A
/// stale control socket is removed first. Returns the master's pid.
pub fn start(fe: &FrontEnd) -> anyhow::Result<u32> {
    let host = &fe.host;
    if let Ok(pid) = host.master_pid() {
        return Ok(pid);
    }
    if host.socket.exists() {
        std::fs::remove_file(&host.socket).with_context(|| {
            format!(
                "cannot remove the stale control socket {}",
                host.socket.display()
            )
        })?;
    }
    if let Some(dir) = host.socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    // The master outlives this command: it must not hold our stdout or
    // stderr. Prompts go to the terminal; ssh's complaints to a file.
    let errors = tempfile::NamedTempFile::new().context("cannot make a temporary file")?;
    let mut c: Command = fe.ssh.ssh_command();
    c.args([
        "-M",
        "-f",
        "-N",
        "-o",
        "BatchMode=no",
        "-o",
        "ControlPersist=no",
    ])
    .arg("-o")
    .arg(format!("ControlPath={}", host.socket.display()))
    .arg(&host.alias)
    .stdin(Stdio::inherit())
    .stdout(Stdio::null())
    .stderr(errors.reopen()?);
    let status = c.status().context("cannot run ssh")?;
    let mut said = String::new();
    let _ = errors.reopen()?.read_to_string(&mut said);
    let said = said.trim().replace('\n', "; ");
    if !status.success() {
        return Err(exit::auth(format!(
            "ssh -M to {} failed ({}): {said}",
            host.alias,
            status
                .code()
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| "killed".into())
        )));
    }
    // ssh -f returns once authenticated; the socket follows at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match host.master_pid() {
            Ok(pid) => return Ok(pid),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(exit::auth(format!(
                    "the master to {} did not come up: {e} {said}",
                    host.alias
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Close the master to a front end (`ssh -O exit`); a stale socket is
/// removed. True when there was something to stop.
pub fn stop(host: &Host) -> anyhow::Result<bool> {
    match host.master_pid() {
        Ok(_) => {
            host.exit_master()
                .map_err(|e| anyhow::anyhow!("ssh -O exit to {} failed: {e}", host.alias))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while host.socket.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(true)
        }
        Err(_) if host.socket.exists() => {
            std::fs::remove_file(&host.socket).with_context(|| {
                format!(
                    "cannot remove the stale control socket {}",
                    host.socket.display()
                )
            })?;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

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

/// Transfers smaller than this say little about the rate; not recorded.
const RATE_MIN_BYTES: u64 = 1 << 20;
/// Added to every forecast: the submission, the checks, a margin.
const FORECAST_SLACK_S: f64 = 60.0;

/// The key a set of hosts' rates are kept under: their aliases, sorted.
pub fn hosts_key(hosts: &[Host]) -> String {
    let mut names: Vec<&str> = hosts.iter().map(|h| h.alias.as_str()).collect();
    names.sort_unstable();
    names.join(",")
}

/// Keep a finished transfer's rate for later forecasts.
pub fn record_rate(
    db: &mut crate::db::Db,
    hosts: &[Host],
    direction: crate::transfer::Direction,
    bytes: u64,
    seconds: f64,
) -> anyhow::Result<()> {
    // Without masters (a local target) there is no link to measure.
    if hosts.is_empty() || bytes < RATE_MIN_BYTES || seconds <= 0.0 {
        return Ok(());
    }
    let row = crate::db::models::NewRate {
        host: hosts_key(hosts),
        direction: direction.as_str().to_string(),
        bytes: bytes as i64,
        seconds,
        at: crate::db::now(),
    };
    db.tx(|s| Ok(s.insert_rate(&row)?))
}

/// The median rate (bytes per second) of the newest ten transfers over
/// these hosts in this direction; None before the first.
pub fn measured_rate(
    db: &mut crate::db::Db,
    hosts: &[Host],
    direction: crate::transfer::Direction,
) -> anyhow::Result<Option<f64>> {
    let key = vec![hosts_key(hosts)];
    let mut rates: Vec<f64> = db
        .read(|s| s.rates(&key, direction.as_str(), 10))?
        .into_iter()
        .filter(|(_, secs)| *secs > 0.0)
        .map(|(b, secs)| b as f64 / secs)
        .collect();
    if rates.is_empty() {
        return Ok(None);
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    Ok(Some(rates[rates.len() / 2]))
}

/// Refuse (exit 5) work of `bytes` over these masters that cannot finish
/// before the first of them is expected to expire, at the measured rate;
/// the error says when the refresh is due. Without a measured rate, or
/// with masters whose start is unknown, there is nothing to forecast.
pub fn forecast(
    db: &mut crate::db::Db,
    lifetime_hours: f64,
    hosts: &[Host],
    direction: crate::transfer::Direction,
    bytes: u64,
    what: &str,
) -> anyhow::Result<()> {
    if hosts.is_empty() {
        return Ok(());
    }
    let Some(rate) = measured_rate(db, hosts, direction)? else {
        return Ok(());
    };
    let needed = bytes as f64 / rate * 1.25 + FORECAST_SLACK_S;
    let now = crate::db::now();
    let lifetime = lifetime(lifetime_hours);
    let first = hosts
        .iter()
        .filter_map(|h| {
            h.master_pid().ok()?;
            Some((h, mtime(&h.socket)? + lifetime))
        })
        .min_by_key(|(_, e)| *e);
    let Some((host, expires)) = first else {
        return Ok(());
    };
    let left = (expires - now).num_seconds();
    if (left as f64) < needed {
        return Err(exit::auth(format!(
            "{what}: {:.1} MB take about {} at the measured {:.1} MB/s, but the master to {} is expected to expire in {} (at {} UTC): \
             the auth refresh is due; run `remotetool refresh-auth`, then this again",
            bytes as f64 / 1e6,
            human_duration(needed as i64),
            rate / 1e6,
            host.alias,
            human_duration(left),
            expires.format("%Y-%m-%d %H:%M")
        )));
    }
    Ok(())
}
