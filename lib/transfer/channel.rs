//! One channel: an ssh session through a host's master running the
//! agent, and its framing (request lines, answer lines, exact reads).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::AGENT;
use crate::ssh::{self, Host};

/// One agent on one host.
pub(super) struct Channel {
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) stdout: BufReader<std::process::ChildStdout>,
    pub(super) stderr: Arc<Mutex<String>>,
    pub(super) zstd: bool,
    /// The agent's temporary folder (absolute).
    pub(super) tmp: String,
}

pub(super) enum OpenError {
    Refused(String),
    Gone(String),
    Other(String),
}

impl Channel {
    pub(super) fn open(host: &Host, session: &str) -> Result<Channel, OpenError> {
        let mut cmd = host.command_with(AGENT, &[session]);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| OpenError::Other(format!("cannot run ssh: {e}")))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    if s.len() < 16_384 {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stdin = child.stdin.take();
        let mut line = String::new();
        let got = stdout.read_line(&mut line);
        if let Some((z, tmp)) = line
            .trim_end_matches('\n')
            .strip_prefix("READY ")
            .and_then(|r| r.split_once(' '))
            .filter(|_| matches!(got, Ok(n) if n > 0))
        {
            return Ok(Channel {
                zstd: z == "1",
                tmp: tmp.to_string(),
                child,
                stdin,
                stdout,
                stderr,
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(50));
        let msg = stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if ssh::session_refused(&msg) {
            Err(OpenError::Refused(msg))
        } else if ssh::master_gone(&msg) {
            Err(OpenError::Gone(msg))
        } else {
            Err(OpenError::Other(if msg.is_empty() {
                format!("agent did not start: {line:?}")
            } else {
                msg
            }))
        }
    }

    pub(super) fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(w) => w.write_all(bytes),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "closed",
            )),
        }
    }

    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    pub(super) fn line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        if self.stdout.read_line(&mut l)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "channel closed",
            ));
        }
        Ok(l.trim_end_matches('\n').to_string())
    }

    pub(super) fn exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.stdout.read_exact(&mut b)?;
        Ok(b)
    }

    pub(super) fn close(mut self) {
        let _ = self.send(b"E 0\n");
        let _ = self.flush();
        drop(self.stdin.take());
        let _ = self.line();
        let _ = self.child.wait();
    }

    /// The shortest of three empty round trips to the agent.
    pub(super) fn round_trip(&mut self) -> std::io::Result<Duration> {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            self.send(b"N 0\n")?;
            self.flush()?;
            let answer = self.line()?;
            if answer.trim_end() != "OK 0" {
                return Err(std::io::Error::other(format!(
                    "unexpected answer {answer:?}"
                )));
            }
            best = best.min(t.elapsed());
        }
        Ok(best)
    }

    pub(super) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A request whose answer is `L id n` + n bytes.
    pub(super) fn listing(&mut self, kind: char, paths: &[&str]) -> anyhow::Result<String> {
        let mut body = Vec::new();
        for p in paths {
            body.extend_from_slice(p.as_bytes());
            body.push(0);
        }
        self.send(format!("{kind} 0 {}\n", body.len()).as_bytes())?;
        self.send(&body)?;
        self.flush()?;
        let head = self.line()?;
        let n: usize = head
            .strip_prefix("L 0 ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("unexpected answer {head:?}"))?;
        Ok(String::from_utf8_lossy(&self.exact(n)?).into_owned())
    }
}
