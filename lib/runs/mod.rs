//! The life of remote runs in the database, a file per concern: who acts
//! ([`actor`]), pauses ([`pauses`]), defining runs from ready work items
//! ([`define`]), moving them between states, always with a history row in
//! the same transaction ([`transitions`]), faults and holds ([`faults`]),
//! which process works on which run ([`claims`]), and where a run's files
//! are ([`paths`]).

pub mod actor;
pub mod claims;
pub mod define;
pub mod faults;
pub mod paths;
pub mod pauses;
pub mod transitions;

pub use actor::Actor;
pub use claims::{
    claim, claim_named, claim_next, claim_next_in, holder_gone, is_throttled, release, throttled,
    work_on, Gone, Next, OnFailure, Throttled, Which, Work, LEASE_STALE,
};
pub use define::{abbreviate, define, DefineRequest, Defined};
pub use faults::{
    back_off, end_hold, hold_back_off, needs_a_person, record_fault, record_fault_and_hold,
    record_fault_in, set_columns_in, unfault, Unfaulted,
};
pub use paths::local_run_dir;
pub use pauses::{
    check_paused, check_tools, ensure_not_paused, ensure_target_not_paused, pause_key,
    paused_targets, set_paused, set_paused_for, split_pause_key, PAUSABLE, PAUSABLE_PER_TARGET,
};
pub use transitions::{
    check_or_auth, expect_state, get_run, incomplete, revert_auth, set_state, transition,
    transition_in, Extra, Reverted,
};

/// Times a work item is tried in all before it is abandoned (poll's and
/// retry's `--attempts`).
pub const DEFAULT_ATTEMPTS: i32 = 2;
