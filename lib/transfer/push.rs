//! The push side of a channel: frames built on one thread, sent on
//! another, answers read on a third.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Condvar, Mutex};
use std::thread::ScopedJoinHandle;
use std::time::Duration;

use super::bundle::{build_push_frame, Buffers, Frame};
use super::channel::Channel;
use super::state::{Job, Shared};
use crate::exit;

/// Work one channel until the queue is empty: frames are built (files read,
/// checksummed, packed) on their own thread while the previous one is being
/// sent, and the answers are read on a third. Err when the channel failed;
/// what it had not finished is back in the queue.
pub(super) fn push_worker(shared: &Shared, ch: Channel) -> Result<(), String> {
    let Channel {
        mut child,
        stdin,
        stdout,
        stderr,
        zstd,
        tmp,
    } = ch;
    let mut stdin = match stdin {
        Some(s) => s,
        None => return Err("channel has no input".into()),
    };
    let flight = Flight::default();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| flight.read_answers(shared, stdout));
        let (ftx, frx) = std::sync::mpsc::sync_channel::<(Job, Frame)>(1);
        let (rtx, rrx) = std::sync::mpsc::channel::<Vec<u8>>();
        let builder = scope.spawn(|| flight.build_frames(shared, zstd, &tmp, ftx, rrx));
        let dead = flight.send_frames(shared, &mut stdin, &frx, &rtx);
        flight.wind_down(shared, dead, stdin, frx, reader, builder);
    });
    let lost = flight.give_back_unanswered(shared);
    channel_outcome(&mut child, &stderr, lost)
}

/// What a push channel's three threads share.
#[derive(Default)]
struct Flight {
    /// Frames sent and not answered yet, by id.
    inflight: Mutex<HashMap<u64, Job>>,
    /// How many of them; at most two, so the agent always has the next one
    /// while it finishes the last.
    window: (Mutex<usize>, Condvar),
    /// The agent's answers ended.
    closed: AtomicBool,
    /// Sending ended: the builder takes no more jobs.
    stop: AtomicBool,
    /// Frames were still in flight when the channel died.
    lost_any: AtomicBool,
}

impl Flight {
    /// One answered frame leaves the window.
    fn release(&self) {
        let (m, cv) = &self.window;
        *m.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        cv.notify_all();
    }

    /// The reader: each answer settles its frame, until the agent says BYE
    /// or its output ends.
    fn read_answers(&self, shared: &Shared, stdout: BufReader<ChildStdout>) {
        let mut stdout = stdout;
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let l = line.trim_end();
            let mut it = l.splitn(3, ' ');
            let kind = it.next().unwrap_or("");
            let id: u64 = it.next().and_then(|i| i.parse().ok()).unwrap_or(0);
            if kind == "BYE" {
                break;
            }
            let job = self
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if let Some(job) = job {
                match kind {
                    "OK" => shared.succeed(&job),
                    "BAD" => shared.fail(job, it.next().unwrap_or("failed")),
                    _ => shared.fail(job, &format!("unexpected answer {l:?}")),
                }
                self.release();
            }
        }
        self.closed.store(true, SeqCst);
        let (_, cv) = &self.window;
        cv.notify_all();
    }

    /// The builder: a frame for each job taken from the queue, handed to
    /// the sender one at a time; payload buffers come back to be reused.
    fn build_frames(
        &self,
        shared: &Shared,
        zstd: bool,
        tmp: &str,
        ftx: SyncSender<(Job, Frame)>,
        rrx: Receiver<Vec<u8>>,
    ) {
        let mut bufs = Buffers::default();
        while let Some(job) = shared.next() {
            if self.stop.load(SeqCst) {
                shared.requeue(job);
                break;
            }
            bufs.bodies.extend(rrx.try_iter());
            bufs.bodies.truncate(3);
            match build_push_frame(shared, &job, zstd, tmp, &mut bufs) {
                Ok(frame) => {
                    if let Err(e) = ftx.send((job, frame)) {
                        shared.requeue(e.0 .0);
                        break;
                    }
                }
                Err(e) => {
                    // A local problem (an unreadable source): retrying will not help.
                    shared
                        .lock()
                        .attempts
                        .insert(job.id(), shared.opts.attempts);
                    shared.fail(job, &exit::one_line(&e));
                }
            }
        }
    }

    /// The sender: each frame, once the window has room, to the agent.
    /// True when the channel died on the way.
    fn send_frames(
        &self,
        shared: &Shared,
        stdin: &mut ChildStdin,
        frx: &Receiver<(Job, Frame)>,
        rtx: &Sender<Vec<u8>>,
    ) -> bool {
        loop {
            // Wait for the next frame, but notice a channel that closed
            // meanwhile (its frames in flight must go back to the queue).
            let (job, frame) = match frx.recv_timeout(Duration::from_millis(200)) {
                Ok(x) => x,
                Err(RecvTimeoutError::Timeout) => {
                    if self.closed.load(SeqCst) {
                        return true;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return false,
            };
            if !self.take_slot() {
                shared.requeue(job);
                return true;
            }
            self.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.id(), job.clone());
            let sent = stdin
                .write_all(&frame.head)
                .and_then(|_| stdin.write_all(&frame.body))
                .and_then(|_| stdin.flush());
            if sent.is_err() {
                return true;
            }
            if frame.body.capacity() > 0 {
                let _ = rtx.send(frame.body);
            }
        }
    }

    /// Wait for room in the window and take it; false when the channel
    /// closed meanwhile.
    fn take_slot(&self) -> bool {
        let (m, cv) = &self.window;
        let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= 2 && !self.closed.load(SeqCst) {
            n = cv
                .wait_timeout(n, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if self.closed.load(SeqCst) {
            return false;
        }
        *n += 1;
        true
    }

    /// Sending is over: frames built and not sent go back to the queue;
    /// then the builder and the reader end, in the order that lets each
    /// one finish (a dead channel's frames in flight are given back first,
    /// a live one is asked to end once the last frame is built).
    fn wind_down(
        &self,
        shared: &Shared,
        dead: bool,
        mut stdin: ChildStdin,
        frx: Receiver<(Job, Frame)>,
        reader: ScopedJoinHandle<'_, ()>,
        builder: ScopedJoinHandle<'_, ()>,
    ) {
        self.stop.store(true, SeqCst);
        for (job, _) in frx.try_iter() {
            shared.requeue(job);
        }
        drop(frx);
        if dead {
            // Give back what this channel had in flight before waiting for
            // the builder: it may be waiting for exactly those jobs.
            drop(stdin);
            let _ = reader.join();
            let left: Vec<Job> = self
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .map(|(_, j)| j)
                .collect();
            self.lost_any.store(!left.is_empty(), SeqCst);
            for j in left {
                shared.requeue(j);
            }
            let _ = builder.join();
        } else {
            let _ = builder.join();
            let _ = stdin.write_all(b"E 0\n").and_then(|_| stdin.flush());
            drop(stdin);
            let _ = reader.join();
        }
    }

    /// What the channel did not answer goes back to the queue; true when
    /// anything was lost that way.
    fn give_back_unanswered(self, shared: &Shared) -> bool {
        let left: Vec<Job> = self
            .inflight
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_values()
            .collect();
        let lost = !left.is_empty() || self.lost_any.load(SeqCst);
        for j in left {
            shared.requeue(j);
        }
        lost
    }
}

/// How the channel ended, once its agent has exited: Err (what ssh said)
/// when frames were lost or the agent failed.
fn channel_outcome(child: &mut Child, stderr: &Mutex<String>, lost: bool) -> Result<(), String> {
    let status = child.wait();
    if lost || !matches!(status, Ok(s) if s.success()) {
        let msg = stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Err(if msg.is_empty() {
            "channel closed".to_string()
        } else {
            msg
        })
    } else {
        Ok(())
    }
}
