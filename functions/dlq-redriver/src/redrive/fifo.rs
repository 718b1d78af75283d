//! A FIFO queue takes a group's messages in order: a batch holds at most one of each group.

use std::collections::HashMap;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

/// Entries in layers holding at most one message of each FIFO group, in their order.
pub(super) fn fifo_layers<T>(
    entries: Vec<(SendMessageBatchRequestEntry, T)>,
) -> Vec<Vec<(SendMessageBatchRequestEntry, T)>> {
    let mut layers: Vec<Vec<(SendMessageBatchRequestEntry, T)>> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        let group = entry.0.message_group_id().unwrap_or_default().to_string();
        let depth = seen.entry(group).or_insert(0);
        if layers.len() <= *depth {
            layers.push(Vec::new());
        }
        layers[*depth].push(entry);
        *depth += 1;
    }
    layers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_entries_go_out_one_per_group_per_layer_in_order() {
        let entry = |id: &str, group: &str| {
            (
                SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body("{}")
                    .message_group_id(group)
                    .build()
                    .unwrap(),
                (),
            )
        };
        let layers = fifo_layers(vec![
            entry("1", "G"),
            entry("2", "G"),
            entry("3", "H"),
            entry("4", "G"),
        ]);
        let ids: Vec<Vec<&str>> = layers
            .iter()
            .map(|layer| layer.iter().map(|(e, _)| e.id()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["1", "3"], vec!["2"], vec!["4"]]);
    }
}
