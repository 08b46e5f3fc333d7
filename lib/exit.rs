//! Exit statuses and the error kinds that map onto them, in one place.
//!
//! | code | meaning                                                    |
//! |------|------------------------------------------------------------|
//! | 0    | done: the command did what was asked                       |
//! | 1    | error: a person should look (message on stderr)            |
//! | 2    | usage: bad flags, bad input file, unknown name             |
//! | 3    | nothing to do: e.g. no ready work items, no run to claim   |
//! | 4    | try later: a tool is paused, the database is busy          |
//! | 5    | auth: the connection to the remote centre is down          |
//! | 6    | local: a write here failed for this machine's reason (a    |
//! |      | full, read-only or failing file system, a quota, no        |
//! |      | permission), or the database had no room to write;         |
//! |      | nothing was lost, run again once it is fixed               |

/// The process exit status of every offload tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    Failure,
    Usage,
    NothingToDo,
    TryLater,
    Auth,
    Local,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::NothingToDo => 3,
            ExitStatus::TryLater => 4,
            ExitStatus::Auth => 5,
            ExitStatus::Local => 6,
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}

/// An error that carries the exit status it must end the process with.
/// Anything else reaching `main` is a plain failure (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Status {
    pub status: ExitStatus,
    pub message: String,
}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Status {
        status: ExitStatus::Usage,
        message: message.into(),
    }
    .into()
}

pub fn nothing_to_do(message: impl Into<String>) -> anyhow::Error {
    Status {
        status: ExitStatus::NothingToDo,
        message: message.into(),
    }
    .into()
}

pub fn try_later(message: impl Into<String>) -> anyhow::Error {
    Status {
        status: ExitStatus::TryLater,
        message: message.into(),
    }
    .into()
}

pub fn auth(message: impl Into<String>) -> anyhow::Error {
    Status {
        status: ExitStatus::Auth,
        message: message.into(),
    }
    .into()
}

/// A write here that failed for this machine's reason (exit 6).
pub fn local(message: impl Into<String>) -> anyhow::Error {
    Status {
        status: ExitStatus::Local,
        message: message.into(),
    }
    .into()
}

/// The exit status an error maps to: the first `Status` in its chain (the
/// module that raised the error says which kind it is: the database, for
/// one, marks its busy errors "try later"); anything else is a failure.
pub fn status_of(err: &anyhow::Error) -> ExitStatus {
    // A status given as context ([`with_status`]) is found by anyhow's own
    // downcast, through any context added later; one raised as the error
    // itself is in the chain.
    err.downcast_ref::<Status>()
        .map(|s| s.status)
        .or_else(|| {
            err.chain()
                .find_map(|cause| cause.downcast_ref::<Status>().map(|s| s.status))
        })
        .unwrap_or(ExitStatus::Failure)
}

/// `err` with the status `status` in its chain, its text unchanged.
pub fn with_status(err: anyhow::Error, status: ExitStatus) -> anyhow::Error {
    err.context(Status {
        status,
        message: String::new(),
    })
}

/// One line: the error and its chain, joined by ": ".
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        let s = s.trim().replace('\n', " ");
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Whether an error is a closed pipe on stdout (`remotetool list | head`):
/// not an error at all.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn statuses_survive_context() {
        let busy = with_status(anyhow::anyhow!("database is locked"), ExitStatus::TryLater);
        let wrapped = Err::<(), _>(busy).context("run 7").unwrap_err();
        assert_eq!(status_of(&wrapped), ExitStatus::TryLater);
        assert_eq!(one_line(&wrapped), "run 7: database is locked");
        let raised = Err::<(), _>(auth("master gone"))
            .context("run 8")
            .unwrap_err();
        assert_eq!(status_of(&raised), ExitStatus::Auth);
        assert_eq!(status_of(&anyhow::anyhow!("plain")), ExitStatus::Failure);
    }
}
