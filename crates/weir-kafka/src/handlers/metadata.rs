//! Metadata (with topic auto-creation), CreateTopics, DeleteTopics and
//! DescribeConfigs.

use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use weir_log::{validate_topic_name, LogConfig, TopicConfig, TopicMetadata};

use super::errors::for_broker;
use crate::node::{off_loop, Kafka};

/// DescribeConfigs' resource types.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs' config sources: DYNAMIC_TOPIC_CONFIG, DEFAULT_CONFIG.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// Handles Metadata: the brokers, and the topics asked for (every topic
/// when none is named), creating missing ones when allowed.
pub async fn metadata(
    kafka: &Arc<Kafka>,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let brokers = kafka
        .leaders
        .nodes()
        .into_iter()
        .map(|node| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(node.id))
                .with_host(text(node.host))
                .with_port(i32::from(node.port))
        })
        .collect();
    let wanted: Option<Vec<String>> = match request.topics {
        None => None,
        Some(topics) if version == 0 && topics.is_empty() => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .filter_map(|topic| topic.name.map(|name| name.0.to_string()))
                .collect(),
        ),
    };
    // Before v4 the request has no flag and topics are always created.
    let may_create =
        kafka.settings.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let topics = match wanted {
        None => kafka
            .log
            .topics()
            .iter()
            .map(|topic| describe_topic(kafka, topic, version))
            .collect(),
        Some(names) => {
            let mut topics = Vec::with_capacity(names.len());
            for name in names {
                topics.push(named_topic(kafka, &name, may_create, version).await);
            }
            topics
        }
    };
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    let response = if version >= 1 {
        response.with_controller_id(BrokerId(kafka.leaders.controller()))
    } else {
        response
    };
    if version >= 2 {
        response.with_cluster_id(Some(text(kafka.cluster_id.clone())))
    } else {
        response
    }
}

async fn named_topic(
    kafka: &Arc<Kafka>,
    name: &str,
    may_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    let failed = |error: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(text(name))))
            .with_error_code(error.code())
    };
    if validate_topic_name(name).is_err() {
        return failed(ResponseError::InvalidTopicException);
    }
    if let Ok(topic) = kafka.log.topic(name) {
        return describe_topic(kafka, &topic, version);
    }
    if !may_create {
        return failed(ResponseError::UnknownTopicOrPartition);
    }
    let config = TopicConfig::with_partitions(kafka.settings.default_partitions);
    match create(kafka, name.to_string(), config, Vec::new(), None).await {
        Ok(()) => {}
        Err((ResponseError::TopicAlreadyExists, _)) => {}
        Err((error, message)) => {
            tracing::warn!(
                topic = name,
                detail = message,
                "auto-creating a topic failed"
            );
            return failed(error);
        }
    }
    match kafka.log.topic(name) {
        Ok(topic) => describe_topic(kafka, &topic, version),
        Err(error) => failed(for_broker(&error)),
    }
}

/// Creates a topic: through the replication layer when there is one
/// (with its Kafka `configs`, already applied to `config` here, which
/// every node applies to its own settings), otherwise in the local log on
/// the blocking pool (it syncs directories).
async fn create(
    kafka: &Arc<Kafka>,
    name: String,
    config: TopicConfig,
    configs: Vec<(String, String)>,
    replication_factor: Option<u32>,
) -> Result<(), (ResponseError, String)> {
    if let Some(replication) = kafka.leaders.replication() {
        let created = replication
            .create_topic(&name, config.partitions, replication_factor, configs)
            .await;
        return created.map_err(|(error, message)| (error, message.unwrap_or_default()));
    }
    let log = Arc::clone(&kafka.log);
    off_loop(move || log.create_topic(&name, config))
        .await
        .map_err(|error| (for_broker(&error), error.to_string()))
}

fn describe_topic(kafka: &Kafka, topic: &TopicMetadata, version: i16) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions)
        .map(|index| {
            let leader = kafka.leaders.leader(&topic.name, index);
            let epoch = match kafka.log.partition(&topic.name, index) {
                Ok(log) if version >= 7 => kafka
                    .leaders
                    .leader_epoch(&topic.name, index)
                    .unwrap_or(log.leader_epoch() as i32),
                _ => -1,
            };
            let (replicas, in_sync) = kafka.leaders.replicas(&topic.name, index);
            let answer = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_epoch(epoch)
                .with_replica_nodes(replicas.into_iter().map(BrokerId).collect())
                .with_isr_nodes(in_sync.into_iter().map(BrokerId).collect());
            match leader {
                Some(leader) => answer.with_leader_id(BrokerId(leader)),
                None => answer
                    .with_leader_id(BrokerId(-1))
                    .with_error_code(ResponseError::LeaderNotAvailable.code()),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(text(topic.name.clone()))))
        .with_is_internal(kafka.leaders.is_internal(&topic.name))
        .with_partitions(partitions)
}

/// Handles CreateTopics.
pub async fn create_topics(
    kafka: &Arc<Kafka>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let factor = replication_factor(kafka, topic.replication_factor);
        let outcome = topic_config(kafka, &topic).and_then(|config| Ok((config, factor?)));
        let outcome = match outcome {
            Ok((config, _)) if request.validate_only => validate(kafka, &name, config),
            Ok((config, factor)) => {
                let configs = topic
                    .configs
                    .iter()
                    .map(|config| {
                        let value = config.value.as_deref().unwrap_or("");
                        (config.name.to_string(), value.to_string())
                    })
                    .collect();
                create(kafka, name.clone(), config, configs, Some(factor)).await
            }
            Err(refused) => Err(refused),
        };
        results.push(match outcome {
            Ok(()) if version < 5 => result,
            Ok(()) => {
                let log = kafka
                    .log
                    .topic(&name)
                    .map(|topic| topic.log)
                    .unwrap_or_else(|_| kafka.log.default_log_config().clone());
                let partitions = kafka.log.topic(&name).map_or(
                    if topic.num_partitions > 0 {
                        topic.num_partitions
                    } else {
                        kafka.settings.default_partitions as i32
                    },
                    |topic| topic.partitions as i32,
                );
                let factor = replication_factor(kafka, topic.replication_factor).unwrap_or(1);
                result
                    .with_num_partitions(partitions)
                    .with_replication_factor(factor as i16)
                    .with_configs(Some(
                        topic_configs_with_sources(kafka, &log)
                            .into_iter()
                            .map(|(name, value, source)| {
                                CreatableTopicConfigs::default()
                                    .with_name(text(name))
                                    .with_value(Some(text(value)))
                                    .with_config_source(source)
                            })
                            .collect(),
                    ))
            }
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(text(message))),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn validate(kafka: &Kafka, name: &str, config: TopicConfig) -> Result<(), (ResponseError, String)> {
    validate_topic_name(name).map_err(|error| (for_broker(&error), error.to_string()))?;
    if kafka.log.topic(name).is_ok() {
        return Err((
            ResponseError::TopicAlreadyExists,
            format!("topic {name} already exists"),
        ));
    }
    if let Some(log) = &config.log {
        log.validate()
            .map_err(|error| (ResponseError::InvalidConfig, error.to_string()))?;
    }
    Ok(())
}

/// The replication factor CreateTopics asks for (-1: the default), checked
/// against the nodes.
fn replication_factor(kafka: &Kafka, asked: i16) -> Result<u32, (ResponseError, String)> {
    let (default, nodes) = match kafka.leaders.replication() {
        Some(replication) => (
            replication.default_replication_factor(),
            replication.registered_nodes(),
        ),
        None => (1, 1),
    };
    match asked {
        -1 => Ok(default),
        factor if factor >= 1 && factor as usize <= nodes => Ok(factor as u32),
        factor => Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {factor} is not between 1 and the {nodes} registered nodes"
            ),
        )),
    }
}

/// The topic's settings from CreateTopics' fields and Kafka config names.
fn topic_config(
    kafka: &Kafka,
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<TopicConfig, (ResponseError, String)> {
    let partitions = match topic.num_partitions {
        -1 => kafka.settings.default_partitions,
        count if count > 0 => count as u32,
        count => {
            return Err((
                ResponseError::InvalidPartitions,
                format!("number of partitions must be larger than 0, not {count}"),
            ))
        }
    };
    if !topic.assignments.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "manual replica assignments are not supported".into(),
        ));
    }
    let mut log = kafka.log.default_log_config().clone();
    for config in &topic.configs {
        let value = config.value.as_deref().unwrap_or("");
        apply_config(&mut log, &config.name, value)
            .map_err(|reason| (ResponseError::InvalidConfig, reason))?;
    }
    Ok(TopicConfig {
        partitions,
        log: Some(log),
    })
}

/// A topic's log settings: `defaults` with its Kafka `configs` (name,
/// value) applied, checked. How every node of a cluster makes a topic's
/// settings from the configs it was created with.
pub fn topic_log_config(
    defaults: &LogConfig,
    configs: &[(String, String)],
) -> Result<LogConfig, String> {
    let mut log = defaults.clone();
    for (name, value) in configs {
        apply_config(&mut log, name, value)?;
    }
    log.validate().map_err(|error| error.to_string())?;
    Ok(log)
}

/// Sets one Kafka topic config on weir's log settings.
fn apply_config(log: &mut LogConfig, name: &str, value: &str) -> Result<(), String> {
    let number = || -> Result<i64, String> {
        value
            .parse::<i64>()
            .map_err(|_| format!("invalid value {value:?} for {name}: not a number"))
    };
    let positive_u32 = |number: i64| -> Result<u32, String> {
        u32::try_from(number)
            .map_err(|_| format!("invalid value {value:?} for {name}: out of range"))
    };
    match name {
        "retention.ms" => log.retention_ms = u64::try_from(number()?).ok(),
        "retention.bytes" => log.retention_bytes = u64::try_from(number()?).ok(),
        "segment.bytes" => log.segment_bytes = positive_u32(number()?)?,
        "segment.ms" => {
            log.segment_ms = u64::try_from(number()?)
                .map_err(|_| format!("invalid value {value:?} for {name}: negative"))?
        }
        "max.message.bytes" => log.max_batch_bytes = positive_u32(number()?)?,
        "cleanup.policy" if value == "delete" => {}
        "compression.type" if value == "producer" => {}
        _ => {
            return Err(format!(
                "config {name}={value:?} is not supported (weir supports retention.ms, \
                 retention.bytes, segment.bytes, segment.ms, max.message.bytes, \
                 cleanup.policy=delete, compression.type=producer)"
            ))
        }
    }
    log.validate().map_err(|error| error.to_string())
}

/// A topic's settings under Kafka's names, each with its source as
/// DescribeConfigs names it: the node's default (DEFAULT_CONFIG, which
/// clients such as kafka-python 3 leave out unless asked for every
/// config), or the topic's own (DYNAMIC_TOPIC_CONFIG), as Kafka reports a
/// topic config set at creation.
fn topic_configs_with_sources(kafka: &Kafka, log: &LogConfig) -> Vec<(&'static str, String, i8)> {
    let defaults = topic_configs(kafka.log.default_log_config());
    topic_configs(log)
        .into_iter()
        .map(|(name, value)| {
            let default = defaults.iter().any(|(n, v)| *n == name && *v == value);
            let source = if default {
                SOURCE_DEFAULT
            } else {
                SOURCE_TOPIC
            };
            (name, value, source)
        })
        .collect()
}

/// A topic's settings under Kafka's names.
pub(crate) fn topic_configs(log: &LogConfig) -> Vec<(&'static str, String)> {
    let or_unlimited =
        |value: Option<u64>| value.map_or("-1".to_string(), |value| value.to_string());
    vec![
        ("cleanup.policy", "delete".into()),
        ("compression.type", "producer".into()),
        ("max.message.bytes", log.max_batch_bytes.to_string()),
        ("retention.bytes", or_unlimited(log.retention_bytes)),
        ("retention.ms", or_unlimited(log.retention_ms)),
        ("segment.bytes", log.segment_bytes.to_string()),
        ("segment.ms", log.segment_ms.to_string()),
    ]
}

/// Handles DeleteTopics (by name; topic ids are not supported).
pub async fn delete_topics(
    kafka: &Arc<Kafka>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut names: Vec<Option<TopicName>> = request.topic_names.into_iter().map(Some).collect();
    names.extend(request.topics.into_iter().map(|topic| topic.name));
    let mut results = Vec::with_capacity(names.len());
    for name in names {
        let Some(name) = name else {
            results.push(
                DeletableTopicResult::default()
                    .with_error_code(ResponseError::UnknownTopicId.code())
                    .with_error_message(Some(text("weir deletes topics by name only"))),
            );
            continue;
        };
        let outcome = delete(kafka, name.0.to_string()).await;
        let result = DeletableTopicResult::default().with_name(Some(name));
        results.push(match outcome {
            Ok(()) => result,
            Err((error, message)) if version >= 5 => result
                .with_error_code(error.code())
                .with_error_message(Some(text(message))),
            Err((error, _)) => result.with_error_code(error.code()),
        });
    }
    DeleteTopicsResponse::default().with_responses(results)
}

/// Deletes a topic, through the replication layer when there is one.
async fn delete(kafka: &Arc<Kafka>, topic: String) -> Result<(), (ResponseError, String)> {
    if kafka.leaders.is_internal(&topic) {
        return Err((
            ResponseError::InvalidTopicException,
            format!("{topic} is internal: it may not be deleted"),
        ));
    }
    if let Some(replication) = kafka.leaders.replication() {
        return replication
            .delete_topic(&topic)
            .await
            .map_err(|(error, message)| (error, message.unwrap_or_default()));
    }
    let log = Arc::clone(&kafka.log);
    off_loop(move || log.delete_topic(&topic))
        .await
        .map_err(|error| (for_broker(&error), error.to_string()))
}

/// Handles DescribeConfigs for topics and the broker.
pub fn describe_configs(kafka: &Kafka, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let configs = match resource.resource_type {
                RESOURCE_TOPIC => match topic_settings(kafka, &resource.resource_name) {
                    Ok(log) => topic_configs_with_sources(kafka, &log),
                    Err((error, message)) => {
                        return result
                            .with_error_code(error.code())
                            .with_error_message(Some(text(message)))
                    }
                },
                RESOURCE_BROKER => broker_configs(kafka)
                    .into_iter()
                    .map(|(name, value)| (name, value, SOURCE_DEFAULT))
                    .collect(),
                other => {
                    return result
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(text(format!(
                            "resource type {other} is not supported"
                        ))))
                }
            };
            let wanted = resource.configuration_keys;
            let configs = configs
                .into_iter()
                .filter(|(name, _, _)| {
                    wanted
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|key| key.as_str() == *name))
                })
                .map(|(name, value, source)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(text(name))
                        .with_value(Some(text(value)))
                        .with_read_only(resource.resource_type == RESOURCE_BROKER)
                        .with_config_source(source)
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// A topic's log settings as DescribeConfigs reports them: in a cluster,
/// from the configs the metadata this node applied gives it (so that a
/// change is seen as soon as it is answered, before this node's log takes
/// it); else, and for the cluster's own topics, this node's log's.
fn topic_settings(kafka: &Kafka, name: &str) -> Result<LogConfig, (ResponseError, String)> {
    let replicated = kafka
        .leaders
        .replication()
        .filter(|_| !kafka.leaders.is_internal(name));
    if let Some(replication) = replicated {
        let configs = replication.topic_configs(name).ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic {name}"),
            )
        })?;
        return topic_log_config(kafka.log.default_log_config(), &configs)
            .map_err(|reason| (ResponseError::InvalidConfig, reason));
    }
    kafka
        .log
        .topic(name)
        .map(|topic| topic.log)
        .map_err(|error| (for_broker(&error), error.to_string()))
}

fn broker_configs(kafka: &Kafka) -> Vec<(&'static str, String)> {
    let mut configs = vec![
        (
            "auto.create.topics.enable",
            kafka.settings.auto_create_topics.to_string(),
        ),
        (
            "num.partitions",
            kafka.settings.default_partitions.to_string(),
        ),
        (
            "socket.request.max.bytes",
            kafka.settings.request_bytes_max.to_string(),
        ),
        (
            "group.initial.rebalance.delay.ms",
            kafka.settings.initial_rebalance_delay_ms.to_string(),
        ),
    ];
    configs.extend(topic_configs(kafka.log.default_log_config()));
    configs
}
