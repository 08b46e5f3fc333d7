//! Work items as the local pipeline hands them over: JSON Lines, one object
//! per line.
//!
//! ```json
//! {"stage":"chip","stage_id":1001,"label":"lanl.SAS.1","priority":0,"params":{"EXP_NAME":"o6321g0123o","CHIP":"XY01"}}
//! ```
//!
//! `stage`, `stage_id` and `label` are required; `priority` (integer, higher
//! first) and `params` (an object of strings, numbers, booleans or lists of
//! strings, the values a recipe substitutes for `@NAME@`; a list is a list
//! input's files) are optional.

use std::collections::HashMap;
use std::io::BufRead;

use serde_json::{Map, Value};

use crate::db::models::NewWorkItem;
use crate::exit;

/// One validated line.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub line: usize,
    pub stage: String,
    pub stage_id: i64,
    pub label: String,
    pub priority: i32,
    pub params: Map<String, Value>,
}

impl Item {
    pub fn to_row(&self, now: chrono::NaiveDateTime) -> NewWorkItem {
        NewWorkItem {
            stage: self.stage.clone(),
            stage_id: self.stage_id,
            label: self.label.clone(),
            priority: self.priority,
            params: Value::Object(self.params.clone()).to_string(),
            state: crate::state::ItemState::Ready,
            attempts: 0,
            created_at: now,
            updated_at: now,
        }
    }
}

const FIELDS: &[&str] = &["stage", "stage_id", "label", "priority", "params"];

/// A stage or label: letters, digits and `._-`, as the pipeline names them.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Parse and validate a whole stream. The first bad line ends it with an
/// error naming the source, the line and the field; nothing is returned.
pub fn parse(reader: impl BufRead, source: &str) -> anyhow::Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut seen: HashMap<(String, i64), usize> = HashMap::new();
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| exit::usage(format!("{source} line {n}: cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let item =
            parse_line(&line, n).map_err(|m| exit::usage(format!("{source} line {n}: {m}")))?;
        let key = (item.stage.clone(), item.stage_id);
        if let Some(first) = seen.insert(key, n) {
            return Err(exit::usage(format!(
                "{source} line {n}: work item {}/{} is already on line {first}",
                item.stage, item.stage_id
            )));
        }
        items.push(item);
    }
    Ok(items)
}

fn parse_line(line: &str, n: usize) -> Result<Item, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("expected a JSON object".into());
    };
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field `{k}` (fields: {})",
            FIELDS.join(", ")
        ));
    }
    let name = |field: &str| -> Result<String, String> {
        match obj.get(field) {
            None => Err(format!("missing field `{field}`")),
            Some(Value::String(s)) if valid_name(s) => Ok(s.clone()),
            Some(v) => Err(format!(
                "field `{field}`: expected a name of letters, digits and ._- (got {v})"
            )),
        }
    };
    let stage = name("stage")?;
    let label = name("label")?;
    let stage_id = match obj.get("stage_id") {
        None => return Err("missing field `stage_id`".into()),
        Some(v) => v.as_i64().filter(|i| *i >= 0).ok_or_else(|| {
            format!("field `stage_id`: expected a non-negative integer (got {v})")
        })?,
    };
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| format!("field `priority`: expected an integer (got {v})"))?,
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "field `params`: key `{k}` must be letters, digits and _ (it becomes @{k}@)"
                    ));
                }
                let list_of_strings =
                    |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                if !(matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
                    || list_of_strings(v))
                {
                    return Err(format!(
                        "field `params.{k}`: expected a string, number, boolean or list of strings (got {v})"
                    ));
                }
            }
            m.clone()
        }
        Some(v) => return Err(format!("field `params`: expected an object (got {v})")),
    };
    Ok(Item {
        line: n,
        stage,
        stage_id,
        label,
        priority,
        params,
    })
}

/// Store parsed items, all or nothing. An item already in the database is
/// refused, naming its line.
pub fn import(
    db: &mut crate::db::Db,
    items: &[Item],
    source: &str,
    actor: &crate::runs::Actor,
) -> anyhow::Result<usize> {
    let mut stages: Vec<String> = items.iter().map(|i| i.stage.clone()).collect();
    stages.sort();
    stages.dedup();
    db.tx(|s| {
        let existing: std::collections::HashSet<(String, i64)> =
            s.existing_keys(&stages)?.into_iter().collect();
        if let Some(dup) = items
            .iter()
            .find(|i| existing.contains(&(i.stage.clone(), i.stage_id)))
        {
            return Err(exit::usage(format!(
                "{source} line {}: work item {}/{} is already in the database; nothing was imported",
                dup.line, dup.stage, dup.stage_id
            )));
        }
        let now = crate::db::now();
        let rows: Vec<NewWorkItem> = items.iter().map(|i| i.to_row(now)).collect();
        let n = s.insert_work_items(&rows)?;
        s.insert_history(&actor.history(
            None,
            None,
            None,
            format!("imported {n} work items from {source}"),
        ))?;
        Ok(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        exit::one_line(&parse(text.as_bytes(), "in.jsonl").unwrap_err())
    }

    #[test]
    fn good_lines() {
        let items = parse(
            "{\"stage\":\"chip\",\"stage_id\":1,\"label\":\"L\",\"params\":{\"CHIP\":\"XY01\",\"N\":3}}\n\n{\"stage\":\"chip\",\"stage_id\":2,\"label\":\"L\",\"priority\":5}\n"
                .as_bytes(),
            "in.jsonl",
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].params["CHIP"], "XY01");
        assert_eq!(items[1].priority, 5);
        assert_eq!(items[1].line, 3);
    }

    #[test]
    fn errors_name_line_and_field() {
        let ok = "{\"stage\":\"chip\",\"stage_id\":1,\"label\":\"L\"}\n";
        assert_eq!(
            err(&format!("{ok}{{\"stage\":\"chip\",\"label\":\"L\"}}")),
            "in.jsonl line 2: missing field `stage_id`"
        );
        assert!(
            err("{\"stage\":\"chip\",\"stage_id\":\"x\",\"label\":\"L\"}")
                .contains("line 1: field `stage_id`")
        );
        assert!(
            err("{\"stage\":\"chip\",\"stage_id\":1,\"label\":\"L\",\"colour\":1}")
                .contains("unknown field `colour`")
        );
        assert!(err("{\"stage\":\"chip\",").contains("line 1: not valid JSON"));
        assert!(err("{\"stage\":\"a b\",\"stage_id\":1,\"label\":\"L\"}").contains("field `stage`"));
        assert!(err(&format!("{ok}{ok}")).contains("line 2: work item chip/1 is already on line 1"));
        assert!(
            err("{\"stage\":\"chip\",\"stage_id\":1,\"label\":\"L\",\"params\":{\"A\":[1]}}")
                .contains("params.A")
        );
        assert!(err(
            "{\"stage\":\"chip\",\"stage_id\":1,\"label\":\"L\",\"params\":{\"A\":[\"x\",{}]}}"
        )
        .contains("list of strings"));
    }

    #[test]
    fn a_param_may_be_a_list_of_strings() {
        let items = parse(
            "{\"stage\":\"camera\",\"stage_id\":1,\"label\":\"L\",\"params\":{\"CHIPS\":[\"a b\",\"c\"],\"NONE\":[]}}"
                .as_bytes(),
            "in.jsonl",
        )
        .unwrap();
        assert_eq!(items[0].params["CHIPS"], serde_json::json!(["a b", "c"]));
    }
}
