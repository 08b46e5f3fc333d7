//! Who acts: the tool, host, process and command line each history row
//! and lease names.

use crate::db;
use crate::db::models::NewHistory;
use crate::host::this_host;
use crate::state::RunState;

/// Who is acting: written into every history row.
#[derive(Debug, Clone)]
pub struct Actor {
    pub tool: String,
    pub host: String,
    pub pid: i32,
    /// The command line, shell-quoted, enough to run it again.
    pub command: String,
}

impl Actor {
    pub fn current(tool: &str) -> Actor {
        let args: Vec<String> = std::env::args().collect();
        Actor {
            tool: tool.to_string(),
            host: this_host(),
            pid: std::process::id() as i32,
            command: crate::shell::join(args.iter().map(String::as_str)),
        }
    }

    pub fn history(
        &self,
        remote_id: Option<i64>,
        from: Option<RunState>,
        to: Option<RunState>,
        message: impl Into<String>,
    ) -> NewHistory {
        NewHistory {
            remote_id,
            at: db::now(),
            host: self.host.clone(),
            pid: self.pid,
            tool: self.tool.clone(),
            from_state: from,
            to_state: to,
            message: Some(message.into()),
            command: Some(self.command.clone()),
        }
    }
}
