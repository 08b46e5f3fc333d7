//! Every command-line type of `remotetool`, in one place: the subcommands
//! and their options. Each subcommand's work is in the file named after it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cli::GlobalArgs;
use crate::state::{JobPolicy, RunState};

#[derive(Debug, Parser)]
#[command(
    name = "remotetool",
    version = crate::cli::VERSION,
    about = "The offload database tool: work items, remote runs and their states",
    after_help = "The original spelling works too:\n  \
        remotetool -definebyquery -label L -stage chip -path_base P [-limit N]\n  \
        remotetool -dbname gpc1 -revertauth -label L\n\n\
        Exit status: 0 done, 1 error, 2 usage, 3 nothing to do, 4 try later, 5 auth, 6 local (no room to write: the database, or a file here)."
)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import ready work items from JSON Lines (a file, or - for stdin), all or nothing
    Import(ImportArgs),
    /// Define a new run from the ready work items of a label and stage (-definebyquery)
    Define(DefineArgs),
    /// List runs (-listrun)
    List(ListArgs),
    /// Is everything moving? Runs and work items per label and stage, runs
    /// that need a person, masters, paused tools
    Status(StatusArgs),
    /// Show one run (fields, components, failed ones, history) or one
    /// component (result, log tails, the commands it ran, attempts)
    Show(ShowArgs),
    /// Stop runs: withdraw one not yet submitted, cancel the job of one
    /// submitted (it goes to `error`)
    Abort(AbortArgs),
    /// Put failed work back to ready so the next define bundles it
    Retry(RetryArgs),
    /// The masters to the front ends: status (with --diagnose), start, stop
    Auth(AuthArgs),
    /// Wait until no exec, poll or xfer is at work on any host (dead ones
    /// are reclaimed)
    Wait(WaitArgs),
    /// The 12-hour auth refresh in one command: check, pause, wait, stop,
    /// start (type the password), resume, revertauth; run it again to
    /// finish an interrupted one
    RefreshAuth(RefreshArgs),
    /// Set a run's state by hand (legal transitions only), with a reason
    Set(SetArgs),
    /// Return runs in `auth` to the state they were in (-revertauth)
    Revertauth(RevertAuthArgs),
    /// Pause tools (or, with --target, their work on one target's runs):
    /// they exit with "try later" and touch nothing
    Pause(PauseArgs),
    /// Resume paused tools (with --target: for that target)
    Resume(ResumeArgs),
    /// Show which tools are paused, and for which targets
    Paused,
    /// A person has acted on a run held back after a fault: clear its
    /// fault and its hold, so --next takes it again
    Unfault(UnfaultArgs),
    /// Show the history of state changes (all runs, or one)
    History(HistoryArgs),
    /// Remove finished runs' remote folders (full -> cleaned), or with
    /// --staging what killed transfers left
    Clean(CleanArgs),
    /// Per label and stage (or run, or work item): components done, failed,
    /// abandoned; runtime; core-, CPU- and node-hours from the site's accounting
    Report(ReportArgs),
    /// Every applied result as JSON Lines; with --consumer, each result to
    /// each named consumer exactly once
    Results(ResultsArgs),
    /// The operators' view in a browser: serve it until stopped (its first
    /// line on stdout is the URL to open, token included), or write it
    /// into one HTML file with --snapshot
    Web(WebArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["label", "remote_id", "staging"])))]
pub struct CleanArgs {
    /// Clean the full runs of this label
    #[arg(long)]
    pub label: Option<String>,
    /// Clean this run
    #[arg(long, value_name = "N")]
    pub remote_id: Option<i64>,
    /// Remove the transfers' staging names (.offload-part.*/, *.offload-part,
    /// *.offload-part.*) that killed transfers left, under each target's
    /// remote_root and its runs' local path_base folders
    #[arg(long)]
    pub staging: bool,
    /// With --staging: only this target
    #[arg(long, requires = "staging")]
    pub target: Option<String>,
    /// With --staging: only names not modified for this long [default: the
    /// target's sweep_after_hours, a day when 0]
    #[arg(long, value_name = "SECONDS", requires = "staging")]
    pub older_than: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// JSON Lines file of work items; - reads stdin
    #[arg(value_name = "FILE", default_value = "-")]
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct DefineArgs {
    /// Label of the work items (with --all: only this label)
    #[arg(long, required_unless_present = "all")]
    pub label: Option<String>,
    /// Stage of the work items (chip, camera, warp, stack, ...)
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    pub stage: Option<String>,
    /// One run per label and stage with free ready items, each at most the
    /// recipe's max_components (several runs when there are more); exit 3
    /// when none was defined
    #[arg(long)]
    pub all: bool,
    /// With --all: folder of stage recipes (for max_components) [default:
    /// `recipes` of the configuration, else ~/.config/offload/recipes]
    #[arg(long, value_name = "DIR", requires = "all")]
    pub recipes: Option<PathBuf>,
    /// At most this many components in the run (highest priority first)
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub limit: Option<i64>,
    /// Folder for the run's generated files [default: path_base of the
    /// configuration, else ~/.local/share/offload/runs]
    #[arg(long, value_name = "PATH")]
    pub path_base: Option<String>,
    /// Remote target (site) the run goes to, from the configuration
    #[arg(long)]
    pub target: Option<String>,
    /// What failed components do to the run when it ends
    #[arg(long, value_enum, default_value = "fatal")]
    pub job_policy: JobPolicy,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only runs in this state (repeat for several)
    #[arg(long, value_enum)]
    pub state: Vec<RunState>,
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub stage: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["label", "remote_id"])))]
pub struct RevertAuthArgs {
    /// Revert the runs of this label
    #[arg(long)]
    pub label: Option<String>,
    /// Revert this run
    #[arg(long, value_name = "N")]
    pub remote_id: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// Tools to pause: define, prepare, exec, poll, xfer
    #[arg(required = true, value_name = "TOOL")]
    pub tools: Vec<String>,
    /// Why (shown to whoever finds the tool paused)
    #[arg(long)]
    pub reason: Option<String>,
    /// Only for the runs of this target (prepare, exec, poll)
    #[arg(long, value_name = "T")]
    pub target: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Tools to resume
    #[arg(required = true, value_name = "TOOL")]
    pub tools: Vec<String>,
    /// Only for the runs of this target (as paused with --target)
    #[arg(long, value_name = "T")]
    pub target: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["label", "remote_id"])))]
pub struct UnfaultArgs {
    /// The run's remote_id
    #[arg(value_name = "REMOTE_ID")]
    pub remote_id: Option<i64>,
    /// Every run of this label that has a fault or is held back
    #[arg(long)]
    pub label: Option<String>,
    /// What was done about it (kept in the history)
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only this run
    #[arg(long, value_name = "N")]
    pub remote_id: Option<i64>,
    /// How many rows (newest)
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["remote_id", "label"])))]
pub struct AbortArgs {
    /// The run to abort
    #[arg(value_name = "REMOTE_ID")]
    pub remote_id: Option<i64>,
    /// Abort every open run (new, pending, run, auth) of this label
    #[arg(long)]
    pub label: Option<String>,
    /// Why (kept in the history and the run's message)
    #[arg(long)]
    pub reason: String,
    /// Do not cancel the remote job (it is gone, or you cancel it by hand)
    #[arg(long)]
    pub no_cancel_job: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["remote_id", "label", "state"])))]
pub struct RetryArgs {
    /// The run whose failed work goes back
    #[arg(value_name = "REMOTE_ID")]
    pub remote_id: Option<i64>,
    /// Every run of this label in the chosen state
    #[arg(long)]
    pub label: Option<String>,
    /// Runs in this state: error (the default) or full
    #[arg(long, value_enum)]
    pub state: Option<RunState>,
    /// A work item is tried this many times in all (as poll's --attempts)
    #[arg(long, default_value_t = crate::runs::DEFAULT_ATTEMPTS, value_name = "N")]
    pub attempts: i32,
    /// Put failed work items back even past the attempt limit
    #[arg(long)]
    pub ignore_limit: bool,
}

#[derive(Debug, clap::Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
}

#[derive(Debug, clap::Args)]
pub struct Which {
    /// Only the front ends of this target
    #[arg(long)]
    pub target: Option<String>,
    /// Only these front ends (ssh Host aliases) [default: every front end
    /// of the configuration's remote targets]
    #[arg(value_name = "HOST")]
    pub hosts: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Each master: alive, pid, started, expected expiry, socket; exit 5
    /// when one is down
    Status {
        #[command(flatten)]
        which: Which,
        /// Walk the way to each front end and name what is broken
        #[arg(long)]
        diagnose: bool,
    },
    /// Open the masters that are down: `ssh -M -f -N HOST` (type the
    /// key-card password), detached
    Start {
        #[command(flatten)]
        which: Which,
    },
    /// Close the masters (`ssh -O exit`); remove stale sockets
    Stop {
        #[command(flatten)]
        which: Which,
    },
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Wait for these tools [default: exec poll xfer]
    #[arg(value_name = "TOOL")]
    pub tools: Vec<String>,
    /// Give up after this many seconds (exit 4)
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// Revert the `auth` runs of this label at the end [default: every run in `auth`]
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub which: Which,
    /// How long to wait for exec, poll and xfer to end (exit 4 after it;
    /// running the command again goes on)
    #[arg(long, default_value_t = 1800, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub stage: Option<String>,
    /// Folder of stage recipes (for threads per command) [default: as prepare's]
    #[arg(long, value_name = "DIR")]
    pub recipes: Option<PathBuf>,
    /// One line per run: its jobs' node-hours against what they asked for
    #[arg(long, conflicts_with = "items")]
    pub runs: bool,
    /// One line per work item: its share of its runs' cost
    #[arg(long)]
    pub items: bool,
}

#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    /// Only results of work items of this label
    #[arg(long)]
    pub label: Option<String>,
    /// Only results of work items of this stage
    #[arg(long)]
    pub stage: Option<String>,
    /// Only results of this run
    #[arg(long, value_name = "N")]
    pub remote_id: Option<i64>,
    /// Only results whose work item ended in this state (done, failed:
    /// tried again, abandoned); repeat for several
    #[arg(long, value_parser = ["done", "failed", "abandoned"])]
    pub state: Vec<String>,
    /// Hand only what this consumer has not been given yet, and mark it
    /// given (keep the same filters for a consumer)
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,
    /// With --consumer: run CMD (`sh -c`) with the batch on its stdin; mark
    /// it given only when CMD exits 0
    #[arg(long, value_name = "CMD", requires = "consumer")]
    pub exec: Option<String>,
    /// At most this many results
    #[arg(long, value_name = "N")]
    pub limit: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The run's remote_id
    #[arg(value_name = "REMOTE_ID")]
    pub remote_id: i64,
    /// The new state
    #[arg(value_enum, value_name = "STATE")]
    pub state: RunState,
    /// Why (kept in the history)
    #[arg(long)]
    pub reason: String,
    /// Folder of stage recipes, for the next stage's work items a run set
    /// `full` feeds [default: as prepare's]
    #[arg(long, value_name = "DIR")]
    pub recipes: Option<PathBuf>,
    /// Set `full` without reading the stage's recipe: no next-stage work
    /// items are made for its groups
    #[arg(long)]
    pub no_chain: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["remote_id", "component"])))]
pub struct ShowArgs {
    /// The run's remote_id
    #[arg(value_name = "REMOTE_ID")]
    pub remote_id: Option<i64>,
    /// Show this component (its id, as in `show RUN` or `components.tsv`)
    #[arg(long, value_name = "ID", conflicts_with = "stage_id")]
    pub component: Option<i64>,
    /// Show the run's component of this work item (stage_id)
    #[arg(long, value_name = "N", requires = "remote_id")]
    pub stage_id: Option<i64>,
    /// How many history rows to show (newest)
    #[arg(long, default_value_t = 50)]
    pub history: i64,
    /// How many failed components of the run to list
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub failed: i64,
}

/// How long a run in `run` may go unpolled before status (and the web
/// view's front page) says it needs a person, in seconds.
pub const STUCK_AFTER: i64 = 7200;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A run in `run` not polled for this long looks stuck
    #[arg(long, default_value_t = STUCK_AFTER, value_name = "SECONDS")]
    pub stuck_after: i64,
    /// Do not ask the masters (no ssh at all)
    #[arg(long)]
    pub no_masters: bool,
    /// Compute ages as of this time (UTC, "YYYY-MM-DD HH:MM:SS") instead of now
    #[arg(long, value_name = "TIME", hide = true)]
    pub at: Option<String>,
    /// Folder of stage recipes (their [next], for blocked groups) [default:
    /// `recipes` of the configuration, else ~/.config/offload/recipes]
    #[arg(long, value_name = "DIR")]
    pub recipes: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct WebArgs {
    /// Where to serve: ADDRESS:PORT (port 0: any free one), or unix:PATH (a
    /// socket made 0600 in a 0700 folder, reached with `ssh -L`). Beyond
    /// loopback, the token is all that keeps others out
    #[arg(
        long,
        value_name = "ADDR:PORT|unix:PATH",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,
    /// Show the forms that act (retry, unfault, abort, set, revertauth,
    /// pause, resume), each with a confirmation and a reason kept in the
    /// history; without it the view is read-only
    #[arg(long)]
    pub allow_actions: bool,
    /// Write the front page and the pages it links to most into FILE (one
    /// self-contained HTML file, no script), then exit
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "allow_actions"])]
    pub snapshot: Option<PathBuf>,
}
