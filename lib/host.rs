//! This machine: its name as the history and leases record it, and whether
//! one of its processes is alive.

/// The name this host goes by in leases, history and `[hosts]` of the
/// configuration: `$OFFLOAD_HOSTNAME`, else the system's host name.
pub fn this_host() -> String {
    std::env::var("OFFLOAD_HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
}

/// Is `pid` a live process on this host (a zombie is not)?
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}
