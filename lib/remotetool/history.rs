//! `remotetool history`: the state changes and what the tools did (all
//! runs, or one), newest last. Its table is shared with `show`.

use super::args::HistoryArgs;
use crate::cli::Session;
use crate::db::models::History;
use crate::exit::ExitStatus;
use crate::state::RunState;
use crate::table;

pub fn run(s: &mut Session, a: HistoryArgs) -> anyhow::Result<ExitStatus> {
    let rows = s.db.read(|s| s.history(a.remote_id, a.limit))?;
    s.printer.model(&rows, |r| history_table(r))?;
    Ok(ExitStatus::Success)
}

/// The history as a table, oldest first.
pub(super) fn history_table(rows: &[History]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|h| {
            vec![
                table::time(&h.at),
                h.remote_id
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                h.tool.clone(),
                format!("{}:{}", h.host, h.pid),
                match (&h.from_state, &h.to_state) {
                    (None, None) => String::new(),
                    (f, t) => format!(
                        "{} -> {}",
                        f.map_or("-", RunState::as_str),
                        t.map_or("-", RunState::as_str)
                    ),
                },
                h.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::render(
        &["AT", "RUN", "TOOL", "HOST:PID", "CHANGE", "MESSAGE"],
        &rows,
    )
}
