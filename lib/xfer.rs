//! `xfer`: bundled, parallel transfers over the operators' ControlMasters,
//! in both directions. Element i of the source list goes to element i of the
//! destination list. The engine is `transfer/`; connections are `ssh.rs`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::exit::{self, ExitStatus};
use crate::printer::Printer;
use crate::ssh::SshOptions;
use crate::transfer::{self, Compress, Direction, Options, Pair};

const TOOL: &str = "xfer";

#[derive(Debug, Parser)]
#[command(
    name = "xfer",
    version = crate::cli::VERSION,
    about = "Copy files to or from remote front ends over their live ControlMasters",
    after_help = "Exit status: 0 complete, 1 partial or failed (see the report), 2 usage, \
                  4 try later (xfer is paused), 5 auth (no live master: nothing moved, \
                  or the master went away: rerun after the refresh, complete files are skipped), \
                  6 local (a write here failed: a full or read-only file system, a quota, no \
                  permission, an I/O error; rerun once fixed, complete files are skipped)."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// push: local -> remote; pull: remote -> local
    #[arg(value_enum)]
    pub direction: Direction,
    /// Front end (an ssh Host alias with a live master); repeat or comma-separate for several
    #[arg(long = "host", value_name = "HOST", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Take the hosts and ssh configuration from this target of the configuration
    #[arg(long)]
    pub target: Option<String>,
    /// ssh configuration file [default: $OFFLOAD_SSH_CONFIG, else the target's, else ssh's own]
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Source list: one path per line
    #[arg(long, value_name = "FILE", requires = "to", conflicts_with = "list")]
    pub from: Option<PathBuf>,
    /// Destination list: one path per line, as many as the source list
    #[arg(long, value_name = "FILE", requires = "from")]
    pub to: Option<PathBuf>,
    /// One list of SOURCE<TAB>DESTINATION lines (prepare's inputs.list for a
    /// push, outputs.list for a pull)
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Channels per master, exactly (keep below sshd's MaxSessions, 10 by
    /// default). Without it: as many as the measured round trip needs, 2 to 8
    #[arg(long, value_name = "N")]
    pub channels: Option<usize>,
    /// zstd: auto compresses pushes of compressible data when the link is slower than compression
    #[arg(long, value_enum, default_value = "auto")]
    pub compress: Compress,
    /// Target bundle size of small files, MiB
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    pub bundle_mib: u64,
    /// Files larger than this travel in chunks of this size, MiB
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    pub chunk_mib: u64,
    /// Before writing into a folder, remove the staging names there
    /// (.offload-part.*/, *.offload-part, *.offload-part.*: what killed
    /// transfers left) not modified for this long; 0: never. A live
    /// transfer's are modified as they are written [default: the target's
    /// sweep_after_hours, else 86400]
    #[arg(long, value_name = "SECONDS")]
    pub sweep_after: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitStatus> {
    let g = &args.global;
    let printer = Printer::new(TOOL, g.quiet, g.verbose, g.json);
    let cfg = Config::load(g.config.as_deref())?;
    // xfer honours `remotetool pause xfer` when a database is named.
    let named_db = g.db.is_some()
        || g.dbname.is_some()
        || std::env::var_os(crate::config::DB_ENV).is_some_and(|v| !v.is_empty())
        || cfg.default_db.is_some();
    // With a database, xfer is also known as at work (`remotetool wait`).
    let mut _registration = None;
    let mut db = None;
    if named_db {
        let actor = crate::runs::Actor::current(TOOL);
        let (mut d, reg) = crate::cli::open_db_as_worker(g, &cfg, &actor)?;
        d.tx(|s| crate::runs::ensure_not_paused(s, TOOL))?;
        _registration = Some(reg);
        db = Some(d);
    }
    let target = args.target.as_deref().map(|t| cfg.target(t)).transpose()?;
    let mut hosts = args.hosts.clone();
    if hosts.is_empty() {
        if let Some(t) = &target {
            hosts = t.config.hosts.clone();
        }
    }
    if hosts.is_empty() {
        return Err(exit::usage(
            "no hosts: give --host HOST (or --target with hosts in the configuration)",
        ));
    }
    let ssh_config = args
        .ssh_config
        .clone()
        .or_else(|| {
            std::env::var_os("OFFLOAD_SSH_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| target.as_ref().and_then(|t| t.config.ssh_config.clone()));
    let ssh = SshOptions { config: ssh_config };
    let pairs: Vec<Pair> = match (&args.list, &args.from, &args.to) {
        (Some(list), _, _) => transfer::read_pairs(list)?,
        (None, Some(from), Some(to)) => {
            transfer::zip_lists(transfer::read_list(from)?, transfer::read_list(to)?)?
        }
        _ => {
            return Err(exit::usage(
                "give --list FILE, or --from FILE and --to FILE",
            ))
        }
    };
    if pairs.is_empty() {
        return Err(exit::nothing_to_do("the lists are empty"));
    }
    let hosts = hosts
        .iter()
        .map(|h| ssh.host(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = Options {
        channels: args.channels.unwrap_or(Options::default().channels).max(1),
        auto_channels: args.channels.is_none(),
        bundle_bytes: args.bundle_mib.max(1) << 20,
        chunk_bytes: args.chunk_mib.max(1) << 20,
        compress: args.compress,
        sweep_after: match (args.sweep_after, &target) {
            (Some(0), _) => None,
            (Some(s), _) => Some(Duration::from_secs(s)),
            (None, Some(t)) => t.sweep_after(),
            (None, None) => Some(transfer::DEFAULT_SWEEP_AFTER),
        },
        ..Options::default()
    };
    if let Some(db) = db.as_mut() {
        // Pushes: the local sizes are known; forecast against the masters.
        if args.direction == Direction::Push {
            let bytes: u64 = pairs
                .iter()
                .filter_map(|p| std::fs::metadata(&p.src).ok())
                .map(|m| m.len())
                .sum();
            let lifetime = target
                .as_ref()
                .map(|t| t.config.master_lifetime_hours)
                .unwrap_or(crate::target::DEFAULT_MASTER_LIFETIME_HOURS);
            crate::masters::forecast(db, lifetime, &hosts, args.direction, bytes, "nothing sent")?;
        }
    }
    let bar = printer.bytes_progress(args.direction);
    let report = transfer::transfer(&hosts, pairs, args.direction, &opts, bar)?;
    if let Some(db) = db.as_mut() {
        if report.complete {
            crate::masters::record_rate(db, &hosts, args.direction, report.bytes, report.seconds)?;
        }
    }
    // A write here that failed for this machine's reason is said once (as
    // the error), not once per file.
    if report.local_fault.is_none() {
        for f in report.failures.iter().take(10) {
            printer.warn(format!("{} -> {}: {}", f.src, f.dst, f.reason));
        }
        if report.failures.len() > 10 {
            printer.warn(format!("... and {} more", report.failures.len() - 10));
        }
    }
    printer.info(format!(
        "{} {} of {} files ({} skipped as complete), {:.1} MB in {:.1} s ({:.1} MB/s) over {} channels, {} retries, {} refusals",
        if report.complete { "complete:" } else { "PARTIAL:" },
        report.transferred,
        report.files,
        report.skipped,
        report.bytes as f64 / 1e6,
        report.seconds,
        report.mb_per_s,
        report.channels,
        report.retries,
        report.refusals
    ));
    if report.swept > 0 {
        let more = report.swept - report.swept_paths.len();
        printer.info(format!(
            "swept {} staging names older than {} s left by killed transfers: {}{}",
            report.swept,
            opts.sweep_after.unwrap_or_default().as_secs(),
            report.swept_paths.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if printer.is_json() {
        printer.json(&report)?;
    }
    if report.complete {
        Ok(ExitStatus::Success)
    } else if let Some(f) = &report.local_fault {
        Err(exit::local(format!(
            "transfer incomplete ({} of {} files not written): {}, then run xfer again: the complete files are skipped",
            report.failed,
            report.files,
            f.message()
        )))
    } else if !report.hosts_lost.is_empty() {
        Err(exit::auth(format!(
            "transfer incomplete: the master connection to {} went away; open it again and rerun (complete files are skipped)",
            report.hosts_lost.join(", ")
        )))
    } else {
        Err(anyhow::anyhow!(
            "transfer incomplete: {} of {} files failed",
            report.failed,
            report.files
        ))
    }
}
