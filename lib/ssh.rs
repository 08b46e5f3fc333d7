//! SSH: reaching a front end only through the operator's live ControlMaster.
//!
//! offload never authenticates. For each host it reads the ControlPath from
//! the user's OpenSSH configuration (`ssh -G`), and every command it runs
//! there goes through that socket with `ssh -F /dev/null -S SOCKET -o
//! ControlMaster=no -o BatchMode=yes offload-mux-only`: should the master be
//! gone, ssh falls back to a host name that does not resolve, so it can
//! never open a fresh login (which would need the key card). It never stops
//! the user's master. Every call has a time limit, so a hung master never
//! hangs a tool.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use wait_timeout::ChildExt;

use crate::exit;

/// The host name given to ssh beside `-S`: it must never resolve.
pub const PLACEHOLDER: &str = "offload-mux-only.invalid";

/// How to reach hosts: the user's ssh configuration file (default: ssh's own).
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    pub config: Option<PathBuf>,
}

/// A front end reached through its master.
#[derive(Debug, Clone)]
pub struct Host {
    /// The name the user gave (a Host alias of the ssh configuration).
    pub alias: String,
    /// The master's control socket.
    pub socket: PathBuf,
}

/// Output of a remote command.
#[derive(Debug)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

fn run_with_timeout(mut cmd: Command, input: &[u8], limit: Duration) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ssh (is OpenSSH's client installed?)")?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let ereader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = match child.wait_timeout(limit)? {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow::anyhow!(
                "ssh did not answer within {} s",
                limit.as_secs()
            ));
        }
    };
    let _ = writer.join();
    let stdout = reader.join().unwrap_or_default();
    let stderr = ereader.join().unwrap_or_default();
    Ok(Output {
        status: status.code(),
        stdout,
        stderr,
    })
}

impl SshOptions {
    /// How a target's hosts are reached: `$OFFLOAD_SSH_CONFIG`, else the
    /// target's `ssh_config`, else ssh's own configuration.
    pub fn for_target(ssh_config: Option<&Path>) -> SshOptions {
        SshOptions {
            config: std::env::var_os("OFFLOAD_SSH_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| ssh_config.map(Path::to_path_buf)),
        }
    }

    fn base(&self) -> Command {
        let mut c = Command::new("ssh");
        if let Some(f) = &self.config {
            c.arg("-F").arg(f);
        }
        c
    }

    /// The ssh configuration's settings for a host (`ssh -G`), keys in
    /// lower case.
    pub fn settings(&self, alias: &str) -> anyhow::Result<String> {
        if alias.is_empty() || alias.starts_with('-') || alias.chars().any(char::is_whitespace) {
            return Err(exit::usage(format!("'{alias}' is not a host name")));
        }
        let mut c = self.base();
        c.arg("-G").arg(alias);
        let out = run_with_timeout(c, b"", Duration::from_secs(20))
            .with_context(|| format!("ssh -G {alias}"))?;
        if out.status != Some(0) {
            return Err(exit::usage(format!(
                "ssh cannot read its configuration for host '{alias}': {}",
                out.stderr.trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An `ssh` command with this configuration file (when one is given).
    pub fn ssh_command(&self) -> Command {
        self.base()
    }

    /// Resolve a host's control socket from the ssh configuration.
    pub fn host(&self, alias: &str) -> anyhow::Result<Host> {
        let text = self.settings(alias)?;
        let get = |key: &str| setting(&text, key);
        let path = get("controlpath").filter(|p| p != "none").ok_or_else(|| {
            exit::usage(format!(
                "host '{alias}' has no ControlPath in the ssh configuration: offload only works over a \
                 master connection; add `ControlPath ~/.ssh/connections/%l_%h_%p_%r` for it"
            ))
        })?;
        let socket = if path.contains('%') {
            expand_tokens(&path, alias, &get)?
        } else {
            path
        };
        let socket = match socket.strip_prefix("~/") {
            Some(rest) => dirs::home_dir().unwrap_or_default().join(rest),
            None => PathBuf::from(socket),
        };
        Ok(Host {
            alias: alias.to_string(),
            socket,
        })
    }
}

/// Expand ControlPath tokens (for ssh versions whose `-G` leaves them).
fn expand_tokens(
    path: &str,
    alias: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    let local = gethostname::gethostname().to_string_lossy().into_owned();
    let mut out = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let t = chars.next().unwrap_or('%');
        let v = match t {
            '%' => "%".to_string(),
            'l' => local.clone(),
            'L' => local.split('.').next().unwrap_or("").to_string(),
            'h' => get("hostname").unwrap_or_else(|| alias.to_string()),
            'p' => get("port").unwrap_or_else(|| "22".into()),
            'r' => get("user").unwrap_or_default(),
            'n' => alias.to_string(),
            'u' => std::env::var("USER").unwrap_or_default(),
            'd' => dirs::home_dir().unwrap_or_default().to_string_lossy().into_owned(),
            other => {
                return Err(exit::usage(format!(
                    "ControlPath {path:?} of host '{alias}' uses %{other}, which offload cannot expand; use %l, %h, %p, %r, %n, %u or %d"
                )))
            }
        };
        out.push_str(&v);
    }
    Ok(out)
}

impl Host {
    fn mux(&self) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg("/dev/null")
            .arg("-S")
            .arg(&self.socket)
            .args([
                "-o",
                "ControlMaster=no",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
            ])
            .args(["-o", "ProxyCommand=none", "-o", "ProxyJump=none"]);
        c
    }

    /// Ask the master for its pid (`ssh -O check`). Err: ssh's words.
    pub fn master_pid(&self) -> Result<u32, String> {
        if !self.socket.exists() {
            return Err(format!(
                "control socket {} does not exist",
                self.socket.display()
            ));
        }
        let mut c = self.mux();
        c.args(["-O", "check", PLACEHOLDER]);
        let out = run_with_timeout(c, b"", Duration::from_secs(15))
            .map_err(|e| format!("the master does not answer ({e})"))?;
        let text = out.stderr.trim().replace('\n', "; ");
        if out.status != Some(0) {
            return Err(text);
        }
        text.split("pid=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("ssh -O check printed no pid: {text}"))
    }

    /// Ask the master to exit (`ssh -O exit`). Err: ssh's words.
    pub fn exit_master(&self) -> Result<(), String> {
        let mut c = self.mux();
        c.args(["-O", "exit", PLACEHOLDER]);
        let out = run_with_timeout(c, b"", Duration::from_secs(15)).map_err(|e| e.to_string())?;
        if out.status == Some(0) {
            Ok(())
        } else {
            Err(out.stderr.trim().replace('\n', "; "))
        }
    }

    /// Run `true` through the master: Err carries ssh's words (e.g. the
    /// server refusing another session).
    pub fn try_session(&self) -> Result<(), String> {
        let out = run_with_timeout(self.command("true"), b"", Duration::from_secs(20))
            .map_err(|e| e.to_string())?;
        if out.status == Some(0) {
            Ok(())
        } else {
            Err(out.stderr.trim().replace('\n', "; "))
        }
    }

    /// Is the master alive? Err carries ssh's words and the remedy.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.socket.exists() {
            return Err(exit::auth(format!(
                "no master connection to {}: control socket {} does not exist; open it with `ssh -M -f -N {}` \
                 (or `remotetool refresh-auth`), then try again",
                self.alias,
                self.socket.display(),
                self.alias
            )));
        }
        let mut c = self.mux();
        c.args(["-O", "check", PLACEHOLDER]);
        let out = run_with_timeout(c, b"", Duration::from_secs(15)).map_err(|e| {
            exit::auth(format!(
                "the master connection to {} does not answer ({e}); stop it and open it again",
                self.alias
            ))
        })?;
        if out.status == Some(0) {
            Ok(())
        } else {
            Err(exit::auth(format!(
                "no live master connection to {} ({}); open it with `ssh -M -f -N {}`, then try again",
                self.alias,
                out.stderr.trim().replace('\n', "; "),
                self.alias
            )))
        }
    }

    /// A command run on the host through the master, as a process to drive.
    /// The script runs under `bash --norc -c`, with `args` as `$1`...: the
    /// login shell sshd starts has already read the user's startup files
    /// (PATH, modules), and reading `~/.bashrc` a second time costs every
    /// channel a few hundred milliseconds of processes on some front ends.
    pub fn command_with(&self, script: &str, args: &[&str]) -> Command {
        let mut line = format!(
            "exec bash --norc -c {} offload",
            crate::shell::quote(script)
        );
        for a in args {
            line.push(' ');
            line.push_str(&crate::shell::quote(a));
        }
        let mut c = self.mux();
        c.arg("-T").arg(PLACEHOLDER).arg("--").arg(line);
        c
    }

    pub fn command(&self, script: &str) -> Command {
        self.command_with(script, &[])
    }

    /// Run a script there with input; wait at most `limit`.
    pub fn run(&self, script: &str, input: &[u8], limit: Duration) -> anyhow::Result<Output> {
        self.run_with(script, &[], input, limit)
    }

    /// Run a script there with `args` as its `$1`..., and input; wait at
    /// most `limit`.
    pub fn run_with(
        &self,
        script: &str,
        args: &[&str],
        input: &[u8],
        limit: Duration,
    ) -> anyhow::Result<Output> {
        run_with_timeout(self.command_with(script, args), input, limit)
            .with_context(|| format!("on {}", self.alias))
    }
}

/// Whether a control socket's name holds this machine's host name (as
/// ssh's `%l` puts it there, or `%C`'s hash of it): masters of several
/// local hosts sharing a home folder then never collide.
pub fn names_local_host(socket: &Path) -> bool {
    let full = gethostname::gethostname().to_string_lossy().into_owned();
    let short = full.split('.').next().unwrap_or(&full).to_string();
    let name = socket
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // %C: a 40-hex-digit hash of %l%h%p%r.
    let hashed = name.len() == 40 && name.chars().all(|c| c.is_ascii_hexdigit());
    hashed || (!short.is_empty() && socket.to_string_lossy().contains(&short))
}

/// One setting from `ssh -G`'s output (keys in any case).
pub fn setting(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        k.eq_ignore_ascii_case(key).then(|| v.trim().to_string())
    })
}

/// Does ssh's complaint say the server refused another session (MaxSessions)?
pub fn session_refused(stderr: &str) -> bool {
    stderr.contains("Session open refused by peer") || stderr.contains("session request failed")
}

/// Does it say the master is gone?
pub fn master_gone(stderr: &str) -> bool {
    stderr.contains("Control socket connect")
        || stderr.contains(PLACEHOLDER)
        || stderr.contains("Could not resolve hostname")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expand() {
        let get = |k: &str| match k {
            "hostname" => Some("10.0.0.1".to_string()),
            "port" => Some("2222".to_string()),
            "user" => Some("ipp".to_string()),
            _ => None,
        };
        let p = expand_tokens("/s/%l_%h_%p_%r-%n%%", "fe", &get).unwrap();
        let local = gethostname::gethostname().to_string_lossy().into_owned();
        assert_eq!(p, format!("/s/{local}_10.0.0.1_2222_ipp-fe%"));
        assert!(exit::one_line(&expand_tokens("/s/%C", "fe", &get).unwrap_err()).contains("%C"));
    }

    #[test]
    fn refusals_are_recognised() {
        assert!(session_refused(
            "mux_client_request_session: session request failed: Session open refused by peer"
        ));
        assert!(!session_refused("Connection closed"));
    }
}
