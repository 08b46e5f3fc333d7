//! The channels of a transfer: up to `channels` per live host, each worked
//! by the push or pull worker until the shared queue (`state`) is empty;
//! refused sessions lower a host's cap, a lost master takes the host out.

use std::time::Duration;

use super::channel::{Channel, OpenError};
use super::channels_for;
use super::pull::pull_worker;
use super::push::push_worker;
use super::state::Shared;
use super::Direction;
use crate::ssh::Host;

/// Keep up to `channels` channels per live host busy until the work is
/// done: refused sessions lower that host's cap; a lost master takes the
/// host out; when no host is left, the transfer stops. `first` (already
/// open, on host `first_host`) is used as that host's first channel.
pub(super) fn run_channels(shared: &Shared, hosts: &[Host], first_host: usize, first: Channel) {
    let mut first = Some(first);
    std::thread::scope(|scope| {
        for (hi, host) in hosts.iter().enumerate() {
            for slot in 0..shared.opts.channels.max(1) {
                let initial = if hi == first_host && slot == 0 {
                    first.take()
                } else {
                    None
                };
                scope.spawn(move || channel_slot(shared, hosts, hi, host, slot, initial));
                // Stagger channel set-up a little.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
}

/// Slot `slot` of host `hi`: open a channel (or use `initial`) and work it
/// until the queue is empty, opening again after a failure. With automatic
/// channel counts, the first slot to get a channel measures the round trip
/// and sets the host's cap; the others wait for that before opening.
fn channel_slot(
    shared: &Shared,
    hosts: &[Host],
    hi: usize,
    host: &Host,
    slot: usize,
    initial: Option<Channel>,
) {
    let mut initial = initial;
    let mut failures = 0u32;
    // However this slot ends, a host must not stay unsized: the slots
    // waiting on it would wait for ever.
    struct Settle<'a>(&'a Shared, usize);
    impl Drop for Settle<'_> {
        fn drop(&mut self) {
            let mut g = self.0.lock();
            if !g.sized[self.1] {
                g.sized[self.1] = true;
                self.0.cv.notify_all();
            }
        }
    }
    let _settle = (slot == 0).then(|| Settle(shared, hi));
    loop {
        {
            let mut g = shared.lock();
            while slot > 0 && !g.sized[hi] && g.abort.is_none() && g.outstanding > 0 && g.alive[hi]
            {
                g = shared
                    .cv
                    .wait_timeout(g, Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if g.abort.is_some() || g.outstanding == 0 || !g.alive[hi] || slot >= g.cap[hi] {
                return;
            }
        }
        let opened = match initial.take() {
            Some(ch) => Ok(ch),
            None => Channel::open(host, &shared.session),
        };
        match opened {
            Ok(mut ch) => {
                if slot == 0 && !shared.lock().sized[hi] {
                    let rt = ch.round_trip();
                    let mut g = shared.lock();
                    if let Ok(rt) = rt {
                        g.round_trip[hi] = Some(rt);
                        g.cap[hi] = channels_for(rt, g.cap[hi]);
                    }
                    g.sized[hi] = true;
                    shared.cv.notify_all();
                }
                {
                    let mut g = shared.lock();
                    g.open[hi] += 1;
                    let total: usize = g.open.iter().sum();
                    g.max_open = g.max_open.max(total);
                }
                let r = match shared.dir {
                    Direction::Push => push_worker(shared, ch),
                    Direction::Pull => pull_worker(shared, ch),
                };
                shared.lock().open[hi] -= 1;
                match r {
                    Ok(()) => return,
                    Err(msg) => {
                        if !failed_again(shared, hosts, hi, msg, &mut failures) {
                            return;
                        }
                    }
                }
            }
            Err(OpenError::Refused(_)) => {
                // MaxSessions: carry on with fewer channels on this host.
                let mut g = shared.lock();
                g.refusals += 1;
                if g.cap[hi] > 1 {
                    g.cap[hi] -= 1;
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(100 + 50 * slot as u64));
            }
            Err(OpenError::Gone(msg)) => {
                lose_host(shared, hosts, hi, &msg);
                return;
            }
            Err(OpenError::Other(msg)) => {
                if !failed_again(shared, hosts, hi, msg, &mut failures) {
                    return;
                }
            }
        }
    }
}

/// A channel slot's worker or opening failed: the host is lost when its
/// master is gone; otherwise the error is kept and the slot backs off.
/// False when the slot should give up (the host lost, or too many
/// failures).
fn failed_again(
    shared: &Shared,
    hosts: &[Host],
    hi: usize,
    msg: String,
    failures: &mut u32,
) -> bool {
    if hosts[hi].check().is_err() {
        lose_host(shared, hosts, hi, &msg);
        return false;
    }
    shared.lock().last_error = Some(msg);
    *failures += 1;
    if *failures > shared.opts.attempts + 2 {
        return false;
    }
    std::thread::sleep(Duration::from_millis(200 * *failures as u64));
    true
}

fn lose_host(shared: &Shared, hosts: &[Host], hi: usize, msg: &str) {
    let mut g = shared.lock();
    if g.alive[hi] {
        g.alive[hi] = false;
        g.lost.push(hosts[hi].alias.clone());
    }
    if g.alive.iter().all(|a| !a) && g.abort.is_none() {
        g.abort = Some(format!(
            "the master connection to {} went away during the transfer ({}); open it again, then rerun: what is complete is skipped",
            hosts[hi].alias,
            msg.lines().next().unwrap_or("")
        ));
    }
    shared.cv.notify_all();
}
