//! The life of a remote run: its states and the one table of legal
//! transitions. Every change of state goes through [`check`].

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// State of a `remote_runs` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
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
        matches!(self, Full | Cleaned | Cancelled)
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

impl Serialize for RunState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
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
