//! Applying many components' results in a few statements: each
//! component's values differ (state, exit status, runtime, record), so the
//! changes go as a table of values joined to the components by id, a few
//! hundred rows a statement, not one UPDATE a component: diesel prepares
//! every UPDATE anew, and SQLite codes the tallies' trigger into each
//! statement it prepares, which would be most of what a component costs.
//!
//! The statement is spelled per backend (SQLite's `UPDATE ... FROM
//! (VALUES ...)` with its `columnN` names, PostgreSQL's typed VALUES,
//! MySQL's UPDATE over a join with a derived table); the binding is the
//! same for all ([`super::components`]). A value left out (None) keeps the
//! component's own.

use chrono::NaiveDateTime;

use crate::db::Backend;
use crate::state::ComponentState;

/// What applying a component's result writes.
#[derive(Debug, Clone)]
pub struct ComponentChanges {
    pub state: ComponentState,
    pub active: bool,
    pub attempts: i32,
    pub exit_status: Option<i32>,
    pub runtime: Option<f64>,
    pub fault: i32,
    pub result: Option<String>,
    pub updated_at: NaiveDateTime,
}

/// Values bound per component: id and the eight columns.
const COLUMNS: usize = 9;

/// At most this many components a statement (9 values each: far under
/// every backend's limit of bound values)...
const ROWS: usize = 500;

/// ...and at most about this many bytes of records (MySQL's packet limit
/// is 16 MiB by default); a larger record goes alone.
const BYTES: usize = 1 << 20;

/// `changes` cut into the statements that write them.
pub(super) fn chunks(changes: &[(i64, ComponentChanges)]) -> Vec<&[(i64, ComponentChanges)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, c)) in changes.iter().enumerate() {
        let size = c.result.as_ref().map_or(0, String::len);
        if i > start && (i - start == ROWS || bytes + size > BYTES) {
            out.push(&changes[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}

/// The statement that writes `rows` components' changes, in `backend`'s
/// dialect; its values are bound per row in the order id, state, active,
/// attempts, exit_status, runtime, fault, result, updated_at.
pub(super) fn update_sql(backend: Backend, rows: usize) -> String {
    let keep = |col: &str, table: &str, new: &str| format!("COALESCE({new}, {table}.{col})");
    match backend {
        Backend::Sqlite => {
            let row = format!("({})", ["?"; COLUMNS].join(", "));
            format!(
                "UPDATE remote_components SET state = v.column2, active = v.column3, \
                 attempts = v.column4, exit_status = {}, runtime = {}, fault = v.column7, \
                 result = {}, updated_at = v.column9 \
                 FROM (VALUES {}) AS v WHERE remote_components.id = v.column1",
                keep("exit_status", "remote_components", "v.column5"),
                keep("runtime", "remote_components", "v.column6"),
                keep("result", "remote_components", "v.column8"),
                vec![row; rows].join(", ")
            )
        }
        Backend::Postgres => {
            const TYPES: [&str; COLUMNS] = [
                "bigint",
                "text",
                "boolean",
                "integer",
                "integer",
                "double precision",
                "integer",
                "text",
                "timestamp",
            ];
            let values: Vec<String> = (0..rows)
                .map(|r| {
                    let cells: Vec<String> = TYPES
                        .iter()
                        .enumerate()
                        .map(|(k, t)| format!("${}::{t}", r * COLUMNS + k + 1))
                        .collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            format!(
                "UPDATE remote_components AS r SET state = v.state, active = v.active, \
                 attempts = v.attempts, exit_status = {}, runtime = {}, fault = v.fault, \
                 result = {}, updated_at = v.updated_at \
                 FROM (VALUES {}) AS v (id, state, active, attempts, exit_status, runtime, fault, result, updated_at) \
                 WHERE r.id = v.id",
                keep("exit_status", "r", "v.exit_status"),
                keep("runtime", "r", "v.runtime"),
                keep("result", "r", "v.result"),
                values.join(", ")
            )
        }
        Backend::Mysql => {
            let first = "SELECT ? AS id, ? AS state, ? AS active, ? AS attempts, \
                         ? AS exit_status, ? AS runtime, ? AS fault, ? AS result, ? AS updated_at";
            let rest = format!(" UNION ALL SELECT {}", ["?"; COLUMNS].join(", "));
            format!(
                "UPDATE remote_components AS r JOIN ({first}{}) AS v ON r.id = v.id \
                 SET r.state = v.state, r.active = v.active, r.attempts = v.attempts, \
                 r.exit_status = {}, r.runtime = {}, r.fault = v.fault, r.result = {}, \
                 r.updated_at = v.updated_at",
                rest.repeat(rows - 1),
                keep("exit_status", "r", "v.exit_status"),
                keep("runtime", "r", "v.runtime"),
                keep("result", "r", "v.result"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(result: Option<usize>) -> (i64, ComponentChanges) {
        (
            1,
            ComponentChanges {
                state: ComponentState::Done,
                active: true,
                attempts: 1,
                exit_status: Some(0),
                runtime: Some(1.0),
                fault: 0,
                result: result.map(|n| "x".repeat(n)),
                updated_at: NaiveDateTime::default(),
            },
        )
    }

    #[test]
    fn chunks_keep_rows_and_records_under_their_limits() {
        let lens =
            |v: &[(i64, ComponentChanges)]| chunks(v).iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(lens(&[]), Vec::<usize>::new());
        assert_eq!(lens(&vec![change(None); 1201]), vec![500, 500, 201]);
        // 400 KiB records: two fit a megabyte, the third starts the next.
        assert_eq!(lens(&vec![change(Some(400 << 10)); 5]), vec![2, 2, 1]);
        // A record over the limit goes alone, and not empty-handed.
        assert_eq!(lens(&[change(Some(2 << 20)), change(None)]), vec![1, 1]);
    }

    #[test]
    fn each_dialect_binds_nine_values_a_row() {
        for b in [Backend::Sqlite, Backend::Mysql] {
            assert_eq!(update_sql(b, 3).matches('?').count(), 27, "{b:?}");
        }
        let pg = update_sql(Backend::Postgres, 3);
        assert!(pg.contains("$27::timestamp") && !pg.contains("$28"), "{pg}");
    }
}
