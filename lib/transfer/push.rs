//! The push side of a channel: frames built on one thread, sent on
//! another, answers read on a third.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::bundle::{build_push_frame, Buffers, Frame};
use super::channel::Channel;
use super::queue::{Job, Shared};
use crate::exit;

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
    // Frames in flight on this channel; at most two, so the agent always
    // has the next one while it finishes the last.
    let inflight: Mutex<HashMap<u64, Job>> = Mutex::new(HashMap::new());
    let window: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());
    let closed = std::sync::atomic::AtomicBool::new(false);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let lost_any = std::sync::atomic::AtomicBool::new(false);
    let release = || {
        let (m, cv) = &window;
        *m.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        cv.notify_all();
    };
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
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
                let job = inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(job) = job {
                    match kind {
                        "OK" => shared.succeed(&job),
                        "BAD" => shared.fail(job, it.next().unwrap_or("failed")),
                        _ => shared.fail(job, &format!("unexpected answer {l:?}")),
                    }
                    release();
                }
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
            let (_, cv) = &window;
            cv.notify_all();
        });
        // Frames are built (files read, checksummed, packed) on their own
        // thread while the previous one is being sent.
        let (ftx, frx) = std::sync::mpsc::sync_channel::<(Job, Frame)>(1);
        let (rtx, rrx) = std::sync::mpsc::channel::<Vec<u8>>();
        let builder = scope.spawn(|| {
            let ftx = ftx;
            let rrx = rrx;
            let mut bufs = Buffers::default();
            while let Some(job) = shared.next() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    shared.requeue(job);
                    break;
                }
                bufs.bodies.extend(rrx.try_iter());
                bufs.bodies.truncate(3);
                match build_push_frame(shared, &job, zstd, &tmp, &mut bufs) {
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
        });
        let mut dead = false;
        loop {
            // Wait for the next frame, but notice a channel that closed
            // meanwhile (its frames in flight must go back to the queue).
            let (job, frame) = match frx.recv_timeout(Duration::from_millis(200)) {
                Ok(x) => x,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if closed.load(std::sync::atomic::Ordering::SeqCst) {
                        dead = true;
                        break;
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            {
                let (m, cv) = &window;
                let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
                while *n >= 2 && !closed.load(std::sync::atomic::Ordering::SeqCst) {
                    n = cv
                        .wait_timeout(n, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                if closed.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(n);
                    shared.requeue(job);
                    dead = true;
                    break;
                }
                *n += 1;
            }
            inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.id(), job.clone());
            let sent = stdin
                .write_all(&frame.head)
                .and_then(|_| stdin.write_all(&frame.body))
                .and_then(|_| stdin.flush());
            if sent.is_err() {
                dead = true;
                break;
            }
            if frame.body.capacity() > 0 {
                let _ = rtx.send(frame.body);
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for (job, _) in frx.try_iter() {
            shared.requeue(job);
        }
        drop(frx);
        if dead {
            // Give back what this channel had in flight before waiting for
            // the builder: it may be waiting for exactly those jobs.
            drop(stdin);
            let _ = reader.join();
            let left: Vec<Job> = inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .map(|(_, j)| j)
                .collect();
            lost_any.store(!left.is_empty(), std::sync::atomic::Ordering::SeqCst);
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
    });
    // What the channel did not answer goes back to the queue.
    let left: Vec<Job> = inflight
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_values()
        .collect();
    let lost = !left.is_empty() || lost_any.load(std::sync::atomic::Ordering::SeqCst);
    for j in left {
        shared.requeue(j);
    }
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
