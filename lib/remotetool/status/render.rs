//! The status as people read it.

use super::{Status, Worker};
use crate::printer::human_duration;
use crate::state::ALL;
use crate::table;

impl Worker {
    /// The table's cells: tool, host:pid, since, heartbeat (`stale` says
    /// what a stale one means).
    fn cells(&self, stale: &str) -> Vec<String> {
        vec![
            self.tool.clone(),
            format!("{}:{}", self.host, self.pid),
            table::time(&self.since),
            format!(
                "{} ago{}",
                human_duration(self.heartbeat_seconds),
                if self.stale { stale } else { "" }
            ),
        ]
    }
}

/// The status as people read it, tables cut to `width`.
pub fn render(st: &Status, width: Option<usize>) -> String {
    let mut out = String::new();
    let open: i64 = st.oldest.iter().map(|o| o.runs).sum();
    let alive = st.masters.as_ref().map(|m| {
        let up = m.iter().filter(|m| m.alive).count();
        let soonest = m.iter().filter_map(|m| m.seconds_left).min();
        match soonest {
            Some(s) => format!(
                "; masters {up}/{} alive, first expiry in {}",
                m.len(),
                human_duration(s)
            ),
            None => format!("; masters {up}/{} alive", m.len()),
        }
    });
    if let Some(t) = st.refresh_since {
        out.push_str(&format!(
            "auth refresh in progress since {} UTC: `remotetool refresh-auth` finishes it\n",
            table::time(&t)
        ));
    }
    out.push_str(&format!(
        "offload status at {} UTC: {}{open} open runs, {} need attention{}; {}\n",
        table::time(&st.at),
        if st.moving {
            "moving; "
        } else {
            "NOT MOVING; "
        },
        st.attention.len(),
        alive.unwrap_or_default(),
        if st.paused.is_empty() {
            "no tool paused".to_string()
        } else {
            let names: Vec<&str> = st.paused.iter().map(|c| c.tool.as_str()).collect();
            format!("paused: {}", names.join(", "))
        }
    ));

    out.push_str("\nruns by label and stage:\n");
    if st.groups.is_empty() {
        out.push_str("  (no work items and no runs)\n");
    } else {
        let mut headers = vec!["LABEL", "STAGE"];
        let upper: Vec<String> = ALL.iter().map(|s| s.as_str().to_uppercase()).collect();
        headers.extend(upper.iter().map(String::as_str));
        headers.extend(["WAITING", "IN_RUNS", "DONE", "FAILED", "ABANDONED"]);
        let rows: Vec<Vec<String>> = st
            .groups
            .iter()
            .map(|g| {
                let mut r = vec![g.label.clone(), g.stage.clone()];
                r.extend(
                    ALL.iter()
                        .map(|s| g.runs.get(s.as_str()).copied().unwrap_or(0).to_string()),
                );
                r.extend(
                    [g.waiting, g.in_runs, g.done, g.failed, g.abandoned]
                        .iter()
                        .map(|n| n.to_string()),
                );
                r
            })
            .collect();
        out.push_str(&table::render_fit(&headers, &rows, width));
    }

    if !st.oldest.is_empty() {
        out.push_str("\noldest run in each open state:\n");
        let rows: Vec<Vec<String>> = st
            .oldest
            .iter()
            .map(|o| {
                vec![
                    o.state.to_string(),
                    o.runs.to_string(),
                    o.remote_id.to_string(),
                    table::time(&o.since),
                    human_duration(o.seconds),
                ]
            })
            .collect();
        out.push_str(&table::render_fit(
            &["STATE", "RUNS", "OLDEST", "SINCE", "FOR"],
            &rows,
            width,
        ));
    }

    out.push_str("\nneeds attention:\n");
    if st.attention.is_empty() {
        out.push_str("  (nothing)\n");
    } else {
        let rows: Vec<Vec<String>> = st
            .attention
            .iter()
            .map(|a| {
                vec![
                    a.remote_id.to_string(),
                    a.state.to_string(),
                    a.label.clone(),
                    a.stage.clone(),
                    human_duration(a.seconds),
                    a.why.clone(),
                ]
            })
            .collect();
        out.push_str(&table::render_fit(
            &["RUN", "STATE", "LABEL", "STAGE", "FOR", "WHY"],
            &rows,
            width,
        ));
    }

    if let Some(masters) = &st.masters {
        out.push_str("\nmasters:\n");
        if masters.is_empty() {
            out.push_str("  (no SSH targets configured)\n");
        } else {
            let rows: Vec<Vec<String>> = masters
                .iter()
                .map(|m| {
                    vec![
                        m.target.clone(),
                        m.host.clone(),
                        if m.alive { "alive" } else { "DOWN" }.to_string(),
                        table::opt_time(&m.started),
                        m.seconds_left
                            .map(human_duration)
                            .unwrap_or_else(|| "-".into()),
                        m.problem.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table::render_fit(
                &["TARGET", "HOST", "MASTER", "STARTED", "LEFT", "PROBLEM"],
                &rows,
                width,
            ));
        }
    }

    if !st.paused.is_empty() {
        out.push_str("\npaused tools:\n");
        let rows: Vec<Vec<String>> = st
            .paused
            .iter()
            .map(|c| {
                vec![
                    c.tool.clone(),
                    table::time(&c.changed_at),
                    c.changed_by.clone(),
                    c.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table::render_fit(
            &["TOOL", "SINCE", "BY", "REASON"],
            &rows,
            width,
        ));
    }

    render_held(st, width, &mut out);
    render_blocked(st, width, &mut out);

    if !st.holders.is_empty() {
        out.push_str("\nruns being worked on:\n");
        let rows: Vec<Vec<String>> = st
            .holders
            .iter()
            .map(|h| {
                let mut row = vec![h.remote_id.to_string()];
                row.extend(h.by.cells(" (stale)"));
                row
            })
            .collect();
        out.push_str(&table::render_fit(
            &["RUN", "TOOL", "HOST:PID", "SINCE", "HEARTBEAT"],
            &rows,
            width,
        ));
    }
    if !st.workers.is_empty() {
        out.push_str("\ntools at work:\n");
        let rows: Vec<Vec<String>> = st
            .workers
            .iter()
            .map(|w| w.cells(" (stale: `remotetool wait` reclaims it)"))
            .collect();
        out.push_str(&table::render_fit(
            &["TOOL", "HOST:PID", "SINCE", "HEARTBEAT"],
            &rows,
            width,
        ));
    }
    out
}

fn render_blocked(st: &Status, width: Option<usize>, out: &mut String) {
    if st.blocked.is_empty() {
        return;
    }
    out.push_str("\ngroups blocked (an abandoned work item; `remotetool retry` puts it back):\n");
    let rows: Vec<Vec<String>> = st
        .blocked
        .iter()
        .map(|b| {
            vec![
                b.label.clone(),
                b.stage.clone(),
                b.group.clone(),
                b.next_stage.clone(),
                format!("{}/{}", b.done, b.items),
                format!(
                    "{}{}",
                    b.blocked_by,
                    if b.abandoned.len() > 1 {
                        format!(" (+{} more)", b.abandoned.len() - 1)
                    } else {
                        String::new()
                    }
                ),
            ]
        })
        .collect();
    out.push_str(&table::render_fit(
        &["LABEL", "STAGE", "GROUP", "NEXT", "DONE", "BLOCKED BY"],
        &rows,
        width,
    ));
}

fn render_held(st: &Status, width: Option<usize>, out: &mut String) {
    if st.held.is_empty() {
        return;
    }
    out.push_str(
        "
held back from --next:
",
    );
    let rows: Vec<Vec<String>> = st
        .held
        .iter()
        .map(|h| {
            vec![
                h.remote_id.to_string(),
                h.state.to_string(),
                h.label.clone(),
                h.stage.clone(),
                h.remedy.clone(),
                h.why.clone(),
            ]
        })
        .collect();
    out.push_str(&table::render_fit(
        &["RUN", "STATE", "LABEL", "STAGE", "HELD", "WHY"],
        &rows,
        width,
    ));
}
