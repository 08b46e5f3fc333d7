//! `remotetool web`: the operators' view of the same database the tools
//! use, in a browser. No daemon unless asked: it serves until stopped,
//! its first line on stdout the URL to open (token included), or with
//! `--snapshot FILE` writes one self-contained HTML file (the front page
//! and the pages an operator needs most, styles inline, no script) for
//! cron to publish anywhere.
//!
//! The pages render the models behind `status`, `show`, `list` and
//! `report` ([`pages`]), so a page and a command never disagree;
//! templates, styles and the one small script are in the binary. The
//! guard ([`guard`]): loopback by default, a token exchanged for a cookie
//! (or a unix socket's permissions), the Host header checked, changes by
//! same-origin POST only, and only with `--allow-actions` ([`actions`]).

pub mod actions;
pub mod guard;
pub mod pages;
pub mod server;
pub mod svg;
pub mod worker;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::args::WebArgs;
use crate::cli::{GlobalArgs, Session};
use crate::exit::{self, ExitStatus};
use guard::Rules;
use pages::Ctx;
use worker::Worker;

/// What every request is served with.
#[derive(Clone)]
pub struct App {
    pub worker: Worker,
    pub rules: Arc<Rules>,
    pub actions: bool,
}

/// Where to listen.
#[derive(Debug, Clone)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    pub fn parse(text: &str) -> anyhow::Result<Listen> {
        if let Some(p) = text.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(exit::usage("--listen unix:PATH needs the socket's path"));
            }
            return Ok(Listen::Unix(PathBuf::from(p)));
        }
        text.parse().map(Listen::Tcp).map_err(|_| {
            exit::usage(format!(
                "--listen {text:?}: an address and port (127.0.0.1:8080), or unix:PATH"
            ))
        })
    }
}

pub fn run(s: &mut Session, global: &GlobalArgs, a: WebArgs) -> anyhow::Result<ExitStatus> {
    if let Some(file) = &a.snapshot {
        let html = snapshot(s)?;
        write_atomically(file, &html)?;
        s.printer.info(format!("wrote {}", file.display()));
        return Ok(ExitStatus::Success);
    }
    let listen = Listen::parse(&a.listen)?;
    let worker = Worker::start(global)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(listen, worker, a.allow_actions, s))
}

/// Bind, say where, and serve until SIGINT or SIGTERM.
async fn serve(
    listen: Listen,
    worker: Worker,
    actions: bool,
    s: &Session,
) -> anyhow::Result<ExitStatus> {
    let printer = &s.printer;
    match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                exit::usage(format!(
                    "cannot listen on {addr}: {e} (another server there? pick another port)"
                ))
            })?;
            let addr = listener.local_addr()?;
            let token = guard::new_token()?;
            if !addr.ip().is_loopback() {
                printer.warn(format!(
                    "listening on {addr}, beyond this machine: anyone who can reach it needs the token; prefer 127.0.0.1 with `ssh -L`, or unix:PATH"
                ));
            }
            let host = if addr.ip().is_loopback() && addr.ip().is_ipv4() {
                format!("127.0.0.1:{}", addr.port())
            } else {
                addr.to_string()
            };
            printer.data(format!("http://{host}/?token={token}"))?;
            printer.info(format!(
                "serving the {} view of {}; Ctrl-C stops it",
                if actions { "acting" } else { "read-only" },
                crate::db::redact(&s.db_url)
            ));
            let app = server::router(worker, Rules::for_tcp(addr, token), actions);
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped())
                .await?;
        }
        Listen::Unix(path) => {
            let listener = bind_unix(&path)?;
            printer.data(format!("unix:{}", path.display()))?;
            printer.info(format!(
                "reach it with `ssh -L 8080:{} THIS_HOST`, then open http://localhost:8080/; Ctrl-C stops it",
                path.display()
            ));
            let app = server::router(worker, Rules::for_unix(), actions);
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopped())
                .await;
            let _ = std::fs::remove_file(&path);
            served?;
        }
    }
    Ok(ExitStatus::Success)
}

/// A unix socket created 0600 in a folder only its owner may enter.
fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(exit::usage(format!(
            "{} is open to others (mode {mode:o}): the socket's folder must be 0700 (chmod 700 {0}, or pick a folder of your own)",
            dir.display()
        )));
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(exit::usage(format!(
                "{} is in use by another server",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// SIGINT or SIGTERM.
async fn stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// The snapshot: the front page, the table, the failures of the last 7
/// days, the cost, and the page of every run they name, in one file.
pub fn snapshot(s: &mut Session) -> anyhow::Result<String> {
    let ctx = Ctx::snapshot();
    let mut body = pages::front::body(s, &ctx)?;
    body.push_str(&pages::table::body(s, &Default::default(), &ctx)?);
    body.push_str(&pages::failures::body(s, &Default::default(), &ctx)?);
    body.push_str(&pages::cost::body(s, &ctx)?);
    body.push_str(&pages::charts::body(s, &ctx)?);
    // The runs those sections link to, each once.
    let mut ids: Vec<i64> = Vec::new();
    let mut rest = body.as_str();
    while let Some(i) = rest.find("href=\"#run-") {
        rest = &rest[i + "href=\"#run-".len()..];
        let id: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(id) = id.parse::<i64>() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    for id in ids.iter().take(200) {
        body.push_str(&pages::run::body(s, *id, &ctx)?);
    }
    pages::framed(&ctx, "Snapshot", &body, false)
}

/// Write to a temporary name beside `file`, then rename: a reader sees the
/// old file or the new one, never half of one.
fn write_atomically(file: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // A write that fails for this machine's reason (full, read-only, no
    // permission) is exit 6 and names the folder.
    // (A temporary file's error wraps the system's: its kind says which.)
    let local = |e: std::io::Error| {
        use std::io::ErrorKind::*;
        let errno = e.raw_os_error().or(match e.kind() {
            ReadOnlyFilesystem => Some(libc::EROFS),
            StorageFull => Some(libc::ENOSPC),
            QuotaExceeded => Some(libc::EDQUOT),
            PermissionDenied => Some(libc::EACCES),
            _ => None,
        });
        let plain = errno.map(std::io::Error::from_raw_os_error);
        match plain
            .as_ref()
            .and_then(|p| crate::transfer::local::fault_of(dir, p))
        {
            Some(f) => exit::local(format!("cannot write the snapshot: {}", f.message())),
            None => anyhow::anyhow!("cannot write the snapshot in {}: {e}", dir.display()),
        }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".offload-snapshot.")
        .tempfile_in(dir)
        .map_err(local)?;
    tmp.write_all(text.as_bytes()).map_err(local)?;
    tmp.as_file().sync_all().map_err(local)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(file)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", file.display(), e.error))?;
    Ok(())
}
