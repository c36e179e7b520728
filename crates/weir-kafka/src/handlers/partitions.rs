//! CreatePartitions: a topic grows to the partition count asked for, on
//! this node's log or through the replication layer.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use weir_log::PARTITIONS_PER_TOPIC_MAX;

use crate::handlers::errors::for_broker;
use crate::node::{off_loop, Kafka};

/// Why a topic of `current` partitions cannot grow to `count`, in Kafka's
/// words where Kafka has them.
pub fn partitions_not_added(topic: &str, current: usize, count: u32) -> String {
    if count as usize == current {
        format!("Topic {topic} already has {current} partitions.")
    } else if (count as usize) < current {
        format!(
            "Topic {topic} currently has {current} partitions, which is higher than the \
             requested {count}."
        )
    } else {
        format!("{count} partitions: a topic has at most {PARTITIONS_PER_TOPIC_MAX}")
    }
}

/// Handles CreatePartitions: each topic named once grows to its count;
/// a topic named twice gets INVALID_REQUEST, as in Kafka.
pub async fn create_partitions(
    kafka: &Arc<Kafka>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut named: BTreeMap<String, usize> = BTreeMap::new();
    for topic in &request.topics {
        *named.entry(topic.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let outcome = if named[&name] > 1 {
            Err((
                ResponseError::InvalidRequest,
                "Duplicate topic in request.".to_string(),
            ))
        } else if topic.assignments.is_some() {
            Err((
                ResponseError::InvalidRequest,
                "manual replica assignments are not supported".to_string(),
            ))
        } else {
            grow(kafka, &name, topic.count, request.validate_only).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Grows one topic to `count` partitions (checks only, when
/// `validate_only`).
async fn grow(
    kafka: &Arc<Kafka>,
    name: &str,
    count: i32,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if kafka.leaders.is_internal(name) {
        return Err((
            ResponseError::InvalidRequest,
            format!("{name} is internal: its partitions may not be added to"),
        ));
    }
    let current = kafka
        .log
        .topic(name)
        .map(|topic| topic.partitions as usize)
        .map_err(|error| (for_broker(&error), error.to_string()));
    let count = u32::try_from(count).unwrap_or(0);
    let replication = kafka.leaders.replication();
    // A node of a cluster may not have made a new topic yet: the
    // replication layer's metadata decides there.
    let current = match (current, replication) {
        (Ok(current), _) => current,
        (Err(_), Some(_)) => 0,
        (Err(error), None) => return Err(error),
    };
    if count as usize <= current || count > PARTITIONS_PER_TOPIC_MAX {
        return Err((
            ResponseError::InvalidPartitions,
            partitions_not_added(name, current, count),
        ));
    }
    if validate_only {
        return Ok(());
    }
    if let Some(replication) = replication {
        return replication
            .create_partitions(name, count)
            .await
            .map_err(|(error, message)| (error, message.unwrap_or_default()));
    }
    let log = Arc::clone(&kafka.log);
    let name = name.to_string();
    off_loop(move || log.add_partitions(&name, count))
        .await
        .map_err(|error| (for_broker(&error), error.to_string()))
}
