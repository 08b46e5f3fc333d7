//! Measured transfer rates per set of front ends, and the forecasts made
//! from them: will a transfer finish before the masters are cut?

use crate::exit;
use crate::printer::human_duration;
use crate::ssh::Host;

use super::{lifetime, mtime};

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
