//! What moto must hold after an invocation, from what its report says it applied: every part an
//! applied action changed shows its `after`, every other part is as it was, no message lost.

use super::*;

/// Which parts of the state an applied action may change, and what they must show after it.
pub(super) fn expected_change(
    round: &Round,
    action: &Value,
    changed: &mut BTreeMap<&'static str, Value>,
) {
    let target = action["target"].as_str().unwrap_or_default();
    let after = &action["after"];
    match action["api"].as_str().unwrap_or_default() {
        "dynamodb:UpdateTable" if target.ends_with("/index/by-customer") => {
            changed.insert("index", after.clone());
        }
        "dynamodb:UpdateTable" => {
            changed.insert("table", after.clone());
        }
        "dynamodb:UpdateItem" => {
            changed.insert("limit", after["value"].clone());
        }
        "lambda:PutFunctionConcurrency" => {
            let key = if target == round.api() {
                "api_reserved"
            } else {
                "worker_reserved"
            };
            changed.insert(key, after["reserved_concurrency"].clone());
        }
        "lambda:UpdateAlias" => {
            changed.insert("alias", after["version"].clone());
        }
        "lambda:UpdateFunctionConfiguration" => {
            let key = if target == round.api() {
                "api"
            } else {
                "worker"
            };
            changed.insert(key, after.clone());
        }
        api if api.starts_with("cloudformation:") => {
            // Recovered: out of the failed state it was in.
            changed.insert("stack", json!({"recovered": true}));
        }
        // The table's backups: each one made or deleted, by name (the part's value is what
        // was made and deleted; `mismatches` applies it to what was there).
        "dynamodb:CreateBackup" => {
            let backups = changed.entry("backups").or_insert_with(|| json!({}));
            backups["made"] = json!([after["backup"].clone()]);
        }
        "dynamodb:DeleteBackup" => {
            let backups = changed.entry("backups").or_insert_with(|| json!({}));
            let deleted = backups["deleted"].as_array().cloned().unwrap_or_default();
            backups["deleted"] = json!([deleted, vec![json!(target)]].concat());
        }
        "sqs:PurgeQueue" => {
            changed.insert("dlq", json!(0));
            changed.insert("dlq_ids", json!([]));
            changed.insert("dlq_in_flight", Value::Null);
        }
        api if api.starts_with("sqs:") => {
            for part in ["dlq", "dlq_ids", "dlq_in_flight", "source"] {
                changed.insert(part, Value::Null);
            }
        }
        // A hand-off changes nothing itself: the rollback's own report (in the report's
        // `details.handoff`, checked with it) lists what it changed, and an event is an event.
        "runbook:lambda-rollback" | "events:PutEvents" => {}
        other => panic!("the test does not know what {other} changes"),
    }
}

/// Every part an applied action changed shows its `after` (fields it names); every other part
/// is as it was; and no message was lost.
pub(super) fn mismatches(
    round: &Round,
    before: &BTreeMap<&'static str, Value>,
    after: &BTreeMap<&'static str, Value>,
    reports: &[Value],
) -> Vec<String> {
    let mut changed = BTreeMap::new();
    let mut moved = 0;
    let mut purged = false;
    let handed = reports.iter().map(|report| &report["details"]["handoff"]);
    for report in reports.iter().chain(handed) {
        for action in report["actions"].as_array().into_iter().flatten() {
            if action["applied"] == json!(true) {
                expected_change(round, action, &mut changed);
                moved += action["after"]["accepted"].as_i64().unwrap_or(0);
                purged |= action["api"] == "sqs:PurgeQueue";
            }
        }
    }
    let mut found = Vec::new();
    for (part, was) in before {
        let now = &after[part];
        match changed.get(part) {
            // A sample or an inspection leaves messages in flight for a moment (longer when
            // making them visible again was refused by a fault): they come back on their own,
            // whichever run is next, so no change.
            None if *part == "dlq_in_flight"
                || (*part == "dlq_ids"
                    && (after["dlq_in_flight"] != json!(0)
                        || before["dlq_in_flight"] != json!(0))) => {}
            None if now != was => found.push(format!(
                "{part} changed from {was} to {now}, and no report says so"
            )),
            Some(expected)
                if *part == "stack" && expected["recovered"] == json!(true) && now == was =>
            {
                found.push(format!(
                    "the stack is still {now} but the report says it acted"
                ));
            }
            Some(_) if *part == "stack" => {}
            Some(backups) if *part == "backups" => {
                let names = |value: &Value| -> std::collections::BTreeSet<String> {
                    value
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|name| name.as_str().map(str::to_string))
                        .collect()
                };
                let mut expected = names(was);
                expected.extend(names(&backups["made"]));
                expected.retain(|name| !names(&backups["deleted"]).contains(name));
                if names(now) != expected {
                    found.push(format!(
                        "the table's backups are {now} but the reports say {expected:?}"
                    ));
                }
            }
            Some(Value::Object(fields)) => {
                for (field, value) in fields {
                    if !value.is_null() && &now[field] != value {
                        found.push(format!(
                            "{part}.{field} is {} but the report says {value}",
                            now[field]
                        ));
                    }
                }
            }
            Some(value) if !value.is_null() && now != value => {
                found.push(format!("{part} is {now} but the report says {value}"));
            }
            _ => {}
        }
    }
    let total = |state: &BTreeMap<&'static str, Value>| {
        state["dlq"].as_i64().unwrap_or(0) + state["source"].as_i64().unwrap_or(0)
    };
    if !purged && total(after) < total(before) {
        found.push(format!(
            "messages lost: {} before, {} after",
            total(before),
            total(after)
        ));
    }
    let into_source =
        after["source"].as_i64().unwrap_or(0) - before["source"].as_i64().unwrap_or(0);
    if into_source != moved {
        found.push(format!(
            "{into_source} messages reached the source, the reports say {moved}"
        ));
    }
    // Every message that left the DLQ reached the source (or is still in flight in the DLQ).
    let ids = |state: &BTreeMap<&'static str, Value>| -> std::collections::BTreeSet<String> {
        state["dlq_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().map(str::to_string))
            .collect()
    };
    let left = ids(before).difference(&ids(after)).count() as i64;
    let in_flight = after["dlq_in_flight"].as_i64().unwrap_or(0);
    if !purged && left > moved + in_flight {
        found.push(format!(
            "{left} messages left the DLQ, {moved} reached the source, {in_flight} are in flight: some were lost"
        ));
    }
    found
}
