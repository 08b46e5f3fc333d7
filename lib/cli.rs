//! What every offload binary does around its own work: read the command line
//! (the original single-dash spelling included), report errors as one line
//! with their chain, and map the outcome to the documented exit status.

use std::process::ExitCode;

use clap::Parser;

use crate::exit::{self, ExitStatus};

/// What `--version` prints after the tool's name: the crate's version and
/// the commit it was built from (build.rs; "+dirty" for a changed work
/// tree, "unknown" for a build outside a git checkout).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("OFFLOAD_COMMIT"), ")");

/// Global options every tool takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Database: a PostgreSQL or MySQL/MariaDB URL, an SQLite file, or a name from the configuration
    /// [default: $OFFLOAD_DB, else default_db of the configuration, else ~/.local/share/offload/offload.db]
    #[arg(long, global = true, value_name = "URL|PATH|NAME")]
    pub db: Option<String>,

    /// Database by its name in the configuration (as in `-dbname gpc1`)
    #[arg(long, global = true, value_name = "NAME", conflicts_with = "db")]
    pub dbname: Option<String>,

    /// Configuration file [default: $OFFLOAD_CONFIG, else ~/.config/offload/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,

    /// Print results as JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// Print nothing on stderr but warnings and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail on stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// Parse the command line of a tool and run it. `run` returns the status
/// for a finished command; an error is printed on one line and mapped to
/// its status; a closed stdout pipe ends quietly.
pub fn main<A: Parser>(
    tool: &'static str,
    run: impl FnOnce(A) -> anyhow::Result<ExitStatus>,
) -> ExitCode {
    let argv = crate::legacy::translate(std::env::args().collect());
    if let Some(code) = generated::<A>(tool, &argv) {
        return code;
    }
    // "Nothing to do" is no news to a scheduler that asked for quiet.
    let quiet = argv.iter().skip(1).any(|a| a == "-q" || a == "--quiet");
    let args = match A::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    match run(args) {
        Ok(status) => status.into(),
        Err(e) if exit::is_broken_pipe(&e) => ExitStatus::Success.into(),
        Err(e) => {
            let status = exit::status_of(&e);
            match status {
                ExitStatus::NothingToDo if quiet => {}
                ExitStatus::NothingToDo => eprintln!("{tool}: {}", exit::one_line(&e)),
                ExitStatus::TryLater | ExitStatus::Auth => {
                    eprintln!("{tool}: try later: {}", exit::one_line(&e))
                }
                _ => eprintln!("{tool}: error: {}", exit::one_line(&e)),
            }
            status.into()
        }
    }
}

/// `TOOL --completions bash|zsh|fish|elvish|powershell` and `TOOL --man`:
/// shell completions and the man page, generated from the tool's command
/// line definition (for installing; see docs/src/installing.md).
fn generated<A: clap::CommandFactory>(tool: &'static str, argv: &[String]) -> Option<ExitCode> {
    let mut out = std::io::stdout().lock();
    let written = match argv.get(1).map(String::as_str) {
        Some("--completions") => {
            let shell = match argv.get(2).map(|s| s.parse::<clap_complete::Shell>()) {
                Some(Ok(s)) => s,
                _ => {
                    eprintln!(
                        "{tool}: error: --completions takes a shell: bash, zsh, fish, elvish or powershell"
                    );
                    return Some(ExitStatus::Usage.into());
                }
            };
            // Into memory first: the generator panics on a write error.
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut A::command(), tool, &mut text);
            std::io::Write::write_all(&mut out, &text)
        }
        Some("--man") if argv.len() == 2 => {
            clap_mangen::Man::new(A::command().name(tool)).render(&mut out)
        }
        _ => return None,
    };
    Some(
        match written.and_then(|_| std::io::Write::flush(&mut out)) {
            Ok(()) => ExitStatus::Success.into(),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitStatus::Success.into(),
            Err(e) => {
                eprintln!("{tool}: error: {e}");
                ExitStatus::Failure.into()
            }
        },
    )
}

/// Open the database the global options name, and register this process
/// as at work (see [`crate::workers`]).
pub fn open_db_as_worker(
    g: &GlobalArgs,
    cfg: &crate::config::Config,
    actor: &crate::runs::Actor,
) -> anyhow::Result<(crate::db::Db, crate::workers::Registration)> {
    let url = cfg.resolve_database(g.db.as_deref(), g.dbname.as_deref())?;
    let db = crate::db::Db::open(&url)?;
    let reg = crate::workers::register(&url, actor)?;
    Ok((db, reg))
}

/// What a tool that works on the database starts with.
pub struct Session {
    pub printer: crate::printer::Printer,
    pub config: crate::config::Config,
    pub actor: crate::runs::Actor,
    pub db: crate::db::Db,
    /// The database's URL (or SQLite path), as the options resolved it.
    pub db_url: String,
    /// Set for tools that do remote or long work ([`Session::open_worker`]).
    pub registration: Option<crate::workers::Registration>,
}

impl Session {
    /// Read the configuration and open the database the options name.
    pub fn open(tool: &'static str, g: &GlobalArgs) -> anyhow::Result<Session> {
        Session::open_as(tool, g, false)
    }

    /// Like [`Session::open`], the process registered as at work until the
    /// session is dropped.
    pub fn open_worker(tool: &'static str, g: &GlobalArgs) -> anyhow::Result<Session> {
        Session::open_as(tool, g, true)
    }

    /// The database (to change) and what the work reads: the
    /// configuration, the printer, who acts.
    pub fn parts(
        &mut self,
    ) -> (
        &mut crate::db::Db,
        &crate::config::Config,
        &crate::printer::Printer,
        &crate::runs::Actor,
    ) {
        (&mut self.db, &self.config, &self.printer, &self.actor)
    }

    /// Claim the run `work` names, do `f` on it with this session's
    /// configuration, printer and actor, and give it back (see
    /// [`crate::runs::work_on`]).
    pub fn work_on<T>(
        &mut self,
        work: crate::runs::Work<'_>,
        mut f: impl FnMut(
            &mut crate::db::Db,
            &crate::config::Config,
            &crate::printer::Printer,
            &crate::runs::Actor,
            &crate::db::models::Run,
        ) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let policy = self.config.claim_policy(&self.actor.host)?;
        let (db, cfg, printer, actor) = (&mut self.db, &self.config, &self.printer, &self.actor);
        crate::runs::work_on(db, cfg, &policy, actor, printer, work, |db, run| {
            f(db, cfg, printer, actor, run)
        })
    }

    fn open_as(tool: &'static str, g: &GlobalArgs, worker: bool) -> anyhow::Result<Session> {
        let printer = crate::printer::Printer::new(tool, g.quiet, g.verbose, g.json);
        let config = crate::config::Config::load(g.config.as_deref())?;
        let actor = crate::runs::Actor::current(tool);
        let db_url = config.resolve_database(g.db.as_deref(), g.dbname.as_deref())?;
        let db = crate::db::Db::open(&db_url)?;
        let registration = if worker {
            Some(crate::workers::register(&db_url, &actor)?)
        } else {
            None
        };
        Ok(Session {
            printer,
            config,
            actor,
            db,
            db_url,
            registration,
        })
    }
}
