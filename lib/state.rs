//! The states of everything offload tracks, as typed values mapped to the
//! text the database stores: a run's states and the one table of legal
//! transitions (every change of state goes through [`check`]), a
//! component's and a work item's states, the job policies, and the fault
//! numbers ([`fault`]).

use std::fmt;
use std::str::FromStr;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use serde::{Serialize, Serializer};

/// A state enum stored as its text name in a `TEXT`/`VARCHAR` column, on
/// every backend: written with `as_str`, read back with `FromStr` (a name
/// the enum does not know is an error naming it, not a silent default).
macro_rules! text_column {
    ($name:ident) => {
        impl<DB> ToSql<Text, DB> for $name
        where
            DB: Backend,
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB> FromSql<Text, DB> for $name
        where
            DB: Backend,
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                String::from_sql(bytes)?
                    .parse::<$name>()
                    .map_err(|e| e.into())
            }
        }
    };
}

/// State of a `remote_runs` row.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = Text)]
pub enum RunState {
    /// Defined from ready work items; nothing generated yet.
    New,
    /// Prepared: scripts and file lists written, waiting for exec.
    Pending,
    /// Submitted to the remote scheduler; poll watches it.
    Run,
    /// Finished; results applied.
    Full,
    /// Needs a person: see fault and message.
    Error,
    /// The connection was down; `revertauth` returns it where it was.
    Auth,
    /// Finished and its remote scratch folder removed.
    Cleaned,
    /// Withdrawn by a person; its unfinished work items are free again.
    Cancelled,
}

use RunState::*;

/// Every legal transition, `(from, to)`. Nothing else is allowed.
pub const TRANSITIONS: &[(RunState, RunState)] = &[
    (New, Pending),
    (New, Cancelled),
    (Pending, Run),
    (Pending, Auth),
    (Pending, New),
    (Pending, Error),
    (Pending, Cancelled),
    (Run, Full),
    (Run, Error),
    (Run, Auth),
    (Run, Pending),
    // A job cut short: prepared again for what did not come back.
    (Run, New),
    (Run, Cancelled),
    (Auth, Pending),
    (Auth, Run),
    (Auth, Error),
    (Auth, Cancelled),
    (Error, New),
    (Error, Pending),
    (Error, Run),
    (Error, Full),
    (Error, Cancelled),
    (Full, Cleaned),
];

pub const ALL: &[RunState] = &[New, Pending, Run, Full, Error, Auth, Cleaned, Cancelled];

impl RunState {
    /// The closed states ([`RunState::is_closed`]).
    pub const CLOSED: [RunState; 3] = [Full, Cleaned, Cancelled];
    /// The open ones, in [`ALL`]'s order.
    pub const ALL_OPEN: [RunState; 5] = [New, Pending, Run, Error, Auth];
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            New => "new",
            Pending => "pending",
            Run => "run",
            Full => "full",
            Error => "error",
            Auth => "auth",
            Cleaned => "cleaned",
            Cancelled => "cancelled",
        }
    }

    /// States a run may go to from this one.
    pub fn successors(self) -> Vec<RunState> {
        TRANSITIONS
            .iter()
            .filter(|(f, _)| *f == self)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Closed runs hold no work items: theirs are done or free again.
    pub fn is_closed(self) -> bool {
        RunState::CLOSED.contains(&self)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown run state '{s}' (one of: {})", names.join(", "))
            })
    }
}

text_column!(RunState);

impl Serialize for RunState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Text names for the database and the command line, for the small state
/// enums below.
macro_rules! named {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
        #[diesel(sql_type = Text)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let names: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!(concat!("unknown ", $what, " '{}' (one of: {})"), s, names.join(", "))
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        text_column!($name);
    };
}

named! {
    /// State of a `remote_components` row: one work item in one run.
    ComponentState, "component state" {
        /// In a run whose job has not come back yet.
        Queued = "queued",
        /// Its result came back and it worked.
        Done = "done",
        /// It came back failed, or without a result.
        Failed = "failed",
    }
}

named! {
    /// State of a local pipeline's work item.
    ItemState, "work item state" {
        /// Ready to be bundled into a run (or in one now).
        Ready = "ready",
        /// A run brought back its result.
        Done = "done",
        /// Failed (kept for the record).
        Failed = "failed",
        /// Failed as many times as it may be tried.
        Abandoned = "abandoned",
    }
}

/// What a run does with failed components when it ends.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    clap::ValueEnum,
    Serialize,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "lowercase")]
pub enum JobPolicy {
    /// A failed component puts the run in `error` for a person.
    Fatal,
    /// The run ends `full` whatever failed.
    Ignore,
}

impl JobPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            JobPolicy::Fatal => "fatal",
            JobPolicy::Ignore => "ignore",
        }
    }
}

impl fmt::Display for JobPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [JobPolicy::Fatal, JobPolicy::Ignore]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown job policy '{s}' (one of: fatal, ignore)"))
    }
}

text_column!(JobPolicy);

/// Polls in a row that failed (the poll itself, not the job) before the run
/// is listed as needing a person.
pub const POLL_FAILURES_NEED_A_PERSON: i32 = 3;

/// Fault numbers: a run's `fault` says why it needs a person (0: none); a
/// component's, why it failed. The manual's Faults page
/// (docs/src/operations/faults.md) lists them.
pub mod fault {
    /// Run: prepare failed (the run stays `new`).
    pub const PREPARE: i32 = 10;
    /// Run: exec failed for a reason a person must fix.
    pub const EXEC: i32 = 20;
    /// Run: components failed (job_policy fatal).
    pub const COMPONENTS: i32 = 30;
    /// Run: the job kept failing for the site's reasons.
    pub const SITE: i32 = 31;
    /// Run: a person aborted its job.
    pub const ABORTED: i32 = 40;
    /// Run: its recipe's apply command failed (the run stays in `run`, its
    /// results recorded; the next poll runs the apply again).
    pub const APPLY: i32 = 50;
    /// Run: a write here failed for this machine's reason (a full or
    /// read-only file system, a quota, no permission, an I/O error) while
    /// its job's results came back or its files were prepared; the run
    /// stays where it was, nothing recorded, and goes on once it is fixed.
    pub const LOCAL: i32 = 60;

    /// Component: its command failed (its record says how).
    pub const COMPONENT_FAILED: i32 = 1;
    /// Component: no result record came back (it never ran, or its rank
    /// died).
    pub const COMPONENT_NO_RECORD: i32 = 2;

    /// Component: its result came back but an output did not (missing, not
    /// a regular file, refused, or failing its check).
    pub const COMPONENT_OUTPUT: i32 = 3;

    /// What a component's fault means, for people.
    pub fn component_meaning(fault: i32) -> &'static str {
        match fault {
            0 => "none",
            COMPONENT_FAILED => "its command failed (see exit status and phase)",
            COMPONENT_NO_RECORD => "no result record: it never ran, or its rank died",
            COMPONENT_OUTPUT => {
                "an output did not come back (missing, not a regular file, refused)"
            }
            _ => "unknown",
        }
    }
}

/// Refuse a transition that is not in [`TRANSITIONS`], naming both states and
/// where the run may go instead.
pub fn check(from: RunState, to: RunState) -> Result<(), String> {
    if TRANSITIONS.contains(&(from, to)) {
        return Ok(());
    }
    let next: Vec<&str> = from.successors().iter().map(|s| s.as_str()).collect();
    let allowed = if next.is_empty() {
        format!("'{from}' is final")
    } else {
        format!("from '{from}' a run may go to: {}", next.join(", "))
    };
    Err(format!("illegal transition '{from}' -> '{to}' ({allowed})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_line_is_legal() {
        for (f, t) in [(New, Pending), (Pending, Run), (Run, Full), (Full, Cleaned)] {
            assert!(check(f, t).is_ok(), "{f} -> {t}");
        }
    }

    #[test]
    fn illegal_names_both_states() {
        let e = check(New, Full).unwrap_err();
        assert!(e.contains("'new' -> 'full'"), "{e}");
        assert!(e.contains("pending"), "{e}");
        let e = check(Cleaned, New).unwrap_err();
        assert!(e.contains("'cleaned' is final"), "{e}");
    }

    #[test]
    fn names_round_trip() {
        for s in ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), *s);
        }
        for s in ComponentState::ALL {
            assert_eq!(s.as_str().parse::<ComponentState>().unwrap(), *s);
        }
        for s in ItemState::ALL {
            assert_eq!(s.as_str().parse::<ItemState>().unwrap(), *s);
        }
        assert!("x"
            .parse::<ItemState>()
            .unwrap_err()
            .contains("work item state 'x'"));
        assert_eq!("ignore".parse::<JobPolicy>().unwrap(), JobPolicy::Ignore);
        assert_eq!("fatal".parse::<JobPolicy>().unwrap(), JobPolicy::Fatal);
        assert!("x"
            .parse::<JobPolicy>()
            .unwrap_err()
            .contains("job policy 'x'"));
        assert!("bogus".parse::<RunState>().unwrap_err().contains("one of"));
    }

    #[test]
    fn no_transition_to_self_and_closed_states_only_clean() {
        for (f, t) in TRANSITIONS {
            assert_ne!(f, t);
        }
        assert_eq!(Full.successors(), vec![Cleaned]);
        assert!(Cancelled.successors().is_empty());
    }
}
