//! `remotetool`: the database tool (work items, runs and their states).
//! This file only dispatches: the command line is in [`args`], and each
//! subcommand's work in the file named after it, taking the session.

pub mod abort;
pub mod args;
pub mod auth;
pub mod clean;
pub mod define;
pub mod history;
pub mod import;
pub mod list;
pub mod pause;
pub mod paused;
pub mod refresh_auth;
pub mod report;
pub mod results;
pub mod resume;
pub mod retry;
pub mod revertauth;
pub mod set;
pub mod show;
pub mod status;
pub mod unfault;
pub mod wait;
pub mod web;

pub use args::{Args, Command};

use crate::cli::Session;
use crate::exit::ExitStatus;

const TOOL: &str = "remotetool";

pub fn run(args: Args) -> anyhow::Result<ExitStatus> {
    let s = &mut Session::open(TOOL, &args.global)?;
    match args.command {
        Command::Import(a) => import::run(s, a),
        Command::Define(a) => define::run(s, a),
        Command::List(a) => list::run(s, a),
        Command::Status(a) => status::run(s, a),
        Command::Show(a) => show::run(s, a),
        Command::Abort(a) => abort::run(s, a),
        Command::Retry(a) => retry::run(s, a),
        Command::Auth(a) => auth::run(s, a),
        Command::Wait(a) => wait::run(s, a),
        Command::RefreshAuth(a) => refresh_auth::run(s, a),
        Command::Set(a) => set::run(s, a),
        Command::Revertauth(a) => revertauth::run(s, a),
        Command::Pause(a) => pause::run(s, a),
        Command::Resume(a) => resume::run(s, a),
        Command::Paused => paused::run(s),
        Command::Unfault(a) => unfault::run(s, a),
        Command::History(a) => history::run(s, a),
        Command::Clean(a) => clean::run(s, a),
        Command::Report(a) => report::run(s, a),
        Command::Results(a) => results::run(s, a),
        Command::Web(a) => web::run(s, &args.global, a),
    }
}
