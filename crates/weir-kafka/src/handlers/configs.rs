//! AlterConfigs and IncrementalAlterConfigs: a topic's changeable configs
//! (`retention.ms`, `retention.bytes`, `segment.bytes`, `segment.ms`,
//! `max.message.bytes`) change on this node's log or, in a cluster,
//! through the controller's metadata.
//!
//! A topic's configs are kept as Kafka keeps a topic's dynamic configs: a
//! list of (name, value) over the node's defaults. AlterConfigs replaces
//! the list (a config left out goes back to the default);
//! IncrementalAlterConfigs changes it: SET, DELETE (back to the default),
//! APPEND and SUBTRACT (list configs only: `cleanup.policy`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::incremental_alter_configs_response;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use weir_log::LogConfig;

use super::errors::for_broker;
use super::metadata::{topic_configs, topic_log_config, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::node::{off_loop, Kafka};

/// Kafka's refusal: the error and why.
type Refused = (ResponseError, String);

/// What an IncrementalAlterConfigs entry does to a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigOperation {
    /// Sets the value.
    Set,
    /// Removes the topic's value: the node's default applies.
    Delete,
    /// Adds a value to a list config.
    Append,
    /// Removes a value from a list config.
    Subtract,
}

impl ConfigOperation {
    /// The operation of Kafka's code (0 to 3).
    pub fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            0 => Self::Set,
            1 => Self::Delete,
            2 => Self::Append,
            3 => Self::Subtract,
            _ => return None,
        })
    }

    /// Kafka's code.
    pub fn code(self) -> i8 {
        match self {
            Self::Set => 0,
            Self::Delete => 1,
            Self::Append => 2,
            Self::Subtract => 3,
        }
    }
}

/// One change to a topic's configs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    /// The config's Kafka name.
    pub name: String,
    /// What is done to it.
    pub operation: ConfigOperation,
    /// The value (none for DELETE, and for a config AlterConfigs names
    /// with a null value, which Kafka leaves out).
    pub value: Option<String>,
}

/// Configs whose value is a list (APPEND and SUBTRACT apply to them only).
const LIST_CONFIGS: &[&str] = &["cleanup.policy"];

/// A topic's configs after `changes`: from none when `replace`
/// (AlterConfigs), else from `current`. Refused with Kafka's error when a
/// config is named twice, a value is missing, or APPEND or SUBTRACT names a
/// config that is not a list; the values themselves are checked when the
/// result is applied ([`topic_log_config`]).
pub fn altered_configs(
    current: &[(String, String)],
    changes: &[ConfigChange],
    replace: bool,
) -> Result<Vec<(String, String)>, Refused> {
    let mut named = BTreeMap::new();
    for change in changes {
        if named.insert(change.name.as_str(), ()).is_some() {
            return Err((
                ResponseError::InvalidRequest,
                format!("Error due to duplicate config keys: {}", change.name),
            ));
        }
    }
    let mut configs: BTreeMap<String, String> = if replace {
        BTreeMap::new()
    } else {
        current.iter().cloned().collect()
    };
    for change in changes {
        apply_change(&mut configs, change)?;
    }
    Ok(configs.into_iter().collect())
}

fn apply_change(
    configs: &mut BTreeMap<String, String>,
    change: &ConfigChange,
) -> Result<(), Refused> {
    let name = &change.name;
    let value = || {
        change.value.clone().ok_or_else(|| {
            (
                ResponseError::InvalidRequest,
                format!("Null value not supported for : {name}"),
            )
        })
    };
    let list = LIST_CONFIGS.contains(&name.as_str());
    match change.operation {
        ConfigOperation::Set => {
            configs.insert(name.clone(), value()?);
        }
        ConfigOperation::Delete => {
            configs.remove(name);
        }
        ConfigOperation::Append | ConfigOperation::Subtract if !list => {
            let verb = if change.operation == ConfigOperation::Append {
                "append"
            } else {
                "subtract"
            };
            return Err((
                ResponseError::InvalidConfig,
                format!("Config value {verb} is not allowed for config key: {name}"),
            ));
        }
        ConfigOperation::Append => {
            let mut items = list_items(configs, name);
            for item in value()?.split(',').map(str::trim) {
                if !items.iter().any(|existing| existing == item) {
                    items.push(item.to_string());
                }
            }
            configs.insert(name.clone(), items.join(","));
        }
        ConfigOperation::Subtract => {
            let removed = value()?;
            let removed: Vec<&str> = removed.split(',').map(str::trim).collect();
            let mut items = list_items(configs, name);
            items.retain(|item| !removed.contains(&item.as_str()));
            configs.insert(name.clone(), items.join(","));
        }
    }
    Ok(())
}

/// A list config's items: the topic's value, else the default (weir's
/// only list config, `cleanup.policy`, defaults to `delete`).
fn list_items(configs: &BTreeMap<String, String>, name: &str) -> Vec<String> {
    let value = configs.get(name).map_or("delete", String::as_str);
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// The configs a topic of this node holds apart from the node's defaults:
/// those whose value differs (a topic's log settings are stored whole, so
/// a config set to the default's value is not told apart from it).
pub fn own_configs(defaults: &LogConfig, log: &LogConfig) -> Vec<(String, String)> {
    let defaults = topic_configs(defaults);
    topic_configs(log)
        .into_iter()
        .filter(|config| !defaults.contains(config))
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// Handles AlterConfigs (the topic's configs become those named).
pub async fn alter_configs(
    kafka: &Arc<Kafka>,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let resources: Vec<_> = request
        .resources
        .into_iter()
        .map(|resource| {
            let changes = resource
                .configs
                .into_iter()
                .map(|config| ConfigChange {
                    name: config.name.to_string(),
                    operation: ConfigOperation::Set,
                    value: config.value.map(|value| value.to_string()),
                })
                .filter(|change| change.value.is_some())
                .collect();
            (resource.resource_type, resource.resource_name, Ok(changes))
        })
        .collect();
    let outcomes = alter_resources(kafka, resources, true, request.validate_only).await;
    let responses = outcomes
        .into_iter()
        .map(|(resource_type, name, outcome)| {
            let (code, message) = code_and_message(outcome);
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// Handles IncrementalAlterConfigs (each named config set, deleted,
/// appended to or subtracted from).
pub async fn incremental_alter_configs(
    kafka: &Arc<Kafka>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources: Vec<_> = request
        .resources
        .into_iter()
        .map(|resource| {
            let changes = resource
                .configs
                .into_iter()
                .map(|config| {
                    let operation = ConfigOperation::from_code(config.config_operation)
                        .ok_or_else(|| {
                            (
                                ResponseError::InvalidRequest,
                                format!("unknown config operation {}", config.config_operation),
                            )
                        })?;
                    Ok(ConfigChange {
                        name: config.name.to_string(),
                        operation,
                        value: config.value.map(|value| value.to_string()),
                    })
                })
                .collect::<Result<Vec<_>, Refused>>();
            (resource.resource_type, resource.resource_name, changes)
        })
        .collect();
    let outcomes = alter_resources(kafka, resources, false, request.validate_only).await;
    let responses = outcomes
        .into_iter()
        .map(|(resource_type, name, outcome)| {
            let (code, message) = code_and_message(outcome);
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

type Resource = (i8, StrBytes, Result<Vec<ConfigChange>, Refused>);

fn code_and_message(outcome: Result<(), Refused>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((error, message)) => (error.code(), Some(StrBytes::from_string(message))),
    }
}

/// Alters each resource in turn; a resource named twice is refused
/// (INVALID_REQUEST) and changes nothing.
async fn alter_resources(
    kafka: &Arc<Kafka>,
    resources: Vec<Resource>,
    replace: bool,
    validate_only: bool,
) -> Vec<(i8, StrBytes, Result<(), Refused>)> {
    let mut named: BTreeMap<(i8, String), usize> = BTreeMap::new();
    for (resource_type, name, _) in &resources {
        *named.entry((*resource_type, name.to_string())).or_default() += 1;
    }
    let mut outcomes = Vec::with_capacity(resources.len());
    for (resource_type, name, changes) in resources {
        let outcome = if named[&(resource_type, name.to_string())] > 1 {
            Err((
                ResponseError::InvalidRequest,
                format!("resource {name} is named more than once"),
            ))
        } else {
            match changes {
                Ok(changes) => {
                    alter_resource(kafka, resource_type, &name, changes, replace, validate_only)
                        .await
                }
                Err(refused) => Err(refused),
            }
        };
        if let Err((error, message)) = &outcome {
            tracing::info!(resource = %name, ?error, detail = message, "configs not changed");
        }
        outcomes.push((resource_type, name, outcome));
    }
    outcomes
}

async fn alter_resource(
    kafka: &Arc<Kafka>,
    resource_type: i8,
    name: &str,
    changes: Vec<ConfigChange>,
    replace: bool,
    validate_only: bool,
) -> Result<(), Refused> {
    match resource_type {
        RESOURCE_TOPIC => alter_topic(kafka, name, changes, replace, validate_only).await,
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest,
            "weir's broker configs do not change while it runs: set them in its configuration \
             file"
                .into(),
        )),
        other => Err((
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported"),
        )),
    }
}

/// Changes one topic's configs (checks only, when `validate_only`).
async fn alter_topic(
    kafka: &Arc<Kafka>,
    name: &str,
    changes: Vec<ConfigChange>,
    replace: bool,
    validate_only: bool,
) -> Result<(), Refused> {
    if kafka.leaders.is_internal(name) {
        return Err((
            ResponseError::InvalidRequest,
            format!("{name} is internal: its configs are weir's"),
        ));
    }
    let defaults = kafka.log.default_log_config();
    let unknown = || {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("no topic {name}"),
        )
    };
    if let Some(replication) = kafka.leaders.replication() {
        let current = replication.topic_configs(name).ok_or_else(unknown)?;
        let configs = altered_configs(&current, &changes, replace)?;
        topic_log_config(defaults, &configs)
            .map_err(|reason| (ResponseError::InvalidConfig, reason))?;
        if validate_only {
            return Ok(());
        }
        return replication
            .alter_topic_configs(name, changes, replace)
            .await
            .map_err(|(error, message)| (error, message.unwrap_or_default()));
    }
    let topic = kafka
        .log
        .topic(name)
        .map_err(|error| (for_broker(&error), error.to_string()))?;
    let configs = altered_configs(&own_configs(defaults, &topic.log), &changes, replace)?;
    let log = topic_log_config(defaults, &configs)
        .map_err(|reason| (ResponseError::InvalidConfig, reason))?;
    if validate_only {
        return Ok(());
    }
    let broker = Arc::clone(&kafka.log);
    let topic = name.to_string();
    off_loop(move || broker.change_topic_settings(&topic, log.settings()))
        .await
        .map_err(|error| (for_broker(&error), error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, operation: ConfigOperation, value: Option<&str>) -> ConfigChange {
        ConfigChange {
            name: name.into(),
            operation,
            value: value.map(str::to_string),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn incremental_changes_keep_what_they_do_not_name() {
        use ConfigOperation::*;
        let current = pairs(&[("retention.ms", "1000"), ("segment.bytes", "4096")]);
        let changes = [
            change("retention.ms", Delete, None),
            change("retention.bytes", Set, Some("10")),
            change("cleanup.policy", Append, Some("delete")),
        ];
        let altered = altered_configs(&current, &changes, false).expect("altered");
        assert_eq!(
            altered,
            pairs(&[
                ("cleanup.policy", "delete"),
                ("retention.bytes", "10"),
                ("segment.bytes", "4096")
            ])
        );
        let replaced = altered_configs(&current, &changes[1..2], true).expect("replaced");
        assert_eq!(replaced, pairs(&[("retention.bytes", "10")]));
    }

    #[test]
    fn changes_kafka_refuses_are_refused() {
        use ConfigOperation::*;
        let refused =
            |changes: &[ConfigChange]| altered_configs(&[], changes, false).expect_err("refused").0;
        let twice = [
            change("retention.ms", Set, Some("1")),
            change("retention.ms", Delete, None),
        ];
        assert_eq!(refused(&twice), ResponseError::InvalidRequest);
        assert_eq!(
            refused(&[change("retention.ms", Set, None)]),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            refused(&[change("retention.ms", Append, Some("1"))]),
            ResponseError::InvalidConfig
        );
        let subtracted = altered_configs(
            &[],
            &[change("cleanup.policy", Subtract, Some("delete"))],
            false,
        )
        .expect("a list config");
        assert_eq!(subtracted, pairs(&[("cleanup.policy", "")]));
        let defaults = LogConfig::default();
        assert!(topic_log_config(&defaults, &subtracted).is_err());
        let appended = altered_configs(
            &[],
            &[change("cleanup.policy", Append, Some("compact"))],
            false,
        )
        .expect("a list config");
        assert!(topic_log_config(&defaults, &appended).is_err());
    }

    #[test]
    fn own_configs_are_those_apart_from_the_defaults() {
        let defaults = LogConfig::default();
        let log = LogConfig {
            retention_ms: None,
            segment_bytes: 4096,
            ..defaults.clone()
        };
        assert_eq!(
            own_configs(&defaults, &log),
            pairs(&[("retention.ms", "-1"), ("segment.bytes", "4096")])
        );
        assert!(own_configs(&defaults, &defaults).is_empty());
    }
}
