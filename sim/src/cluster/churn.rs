//! A second topic, deleted and created again while the faults go on: a
//! node down, cut off or paused across a deletion and a re-creation must
//! never take the old topic's files for the new one's (its group marker
//! says which group they belong to), and a deletion must never leave
//! records behind that a new incarnation serves.
//!
//! An incarnation is created with one partition and may grow (Kafka's
//! CreatePartitions) to two or three between its records: a node that
//! misses the growth must make the new partitions once it learns of it,
//! and never take them for an earlier incarnation's.
//!
//! An incarnation's configs may change too (IncrementalAlterConfigs: its
//! `retention.ms` set, or deleted back to the default): every node must
//! give its own copy of the topic the settings its metadata's configs
//! make (`a topic's copy on each node has the configs its metadata
//! gives`), a node that missed the change once it learns of it.
//!
//! An incarnation has the default replication factor or, half the time,
//! two replicas; each partition created or added is checked where it
//! went (`a new partition's replicas are placed on the nodes up`, see
//! [`check_placement`]).
//!
//! Each incarnation's records are `churn-<incarnation>-<n>`, produced with
//! acks=all to one of its partitions once its creation was answered.
//! Checks, on every replica the final metadata names, for each partition:
//! the replica has the partition (`a grown topic has its new partitions
//! on each of their replicas`), one partition log holds records of one
//! incarnation only (`a re-created topic holds none of the old one's
//! records`), and a replica holding an incarnation's records holds every
//! record of it that was acknowledged, at its offset, below its high
//! watermark (`no acknowledged record of a re-created topic lost`). A
//! deletion answered late may still delete the incarnation after it (by
//! name, as Kafka's): so a replica with no record of an incarnation is
//! not held to its acknowledged records.

use super::*;
use weir_kafka::handlers::metadata::topic_log_config;

/// The topic deleted and created again.
pub(super) const CHURN: &str = "churn";

/// What the churn client did.
#[derive(Default)]
pub(super) struct Churned {
    /// Each incarnation's acknowledged records: (partition, offset) →
    /// value.
    pub acked: BTreeMap<u64, BTreeMap<(i32, i64), String>>,
    /// Incarnations created.
    pub created: u64,
    /// Growths acknowledged.
    pub grown: u64,
    /// Config changes acknowledged.
    pub reconfigured: u64,
    /// The client has stopped.
    pub done: bool,
}

/// Deletes [`CHURN`], creates it again and produces a few records to it,
/// over and over until the producers stop.
pub(super) async fn churn(
    nodes: u64,
    shared: SharedRef,
    mut rng: Xoshiro256PlusPlus,
    started: Instant,
) {
    let mut incarnation = 0u64;
    while !shared.lock().expect("shared").stop_producers {
        sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
        if !admin(nodes, &shared, &mut rng, false).await {
            continue;
        }
        if !admin(nodes, &shared, &mut rng, true).await {
            continue;
        }
        incarnation += 1;
        shared.lock().expect("shared").churn.created += 1;
        note(
            &shared,
            started,
            format!("{CHURN} created again: incarnation {incarnation}"),
        );
        let mut partitions = 1;
        for n in 0..rng.random_range(2..8) {
            if partitions < 3 && rng.random_range(0..4) == 0 {
                if !grow(nodes, &shared, &mut rng, partitions + 1).await {
                    break;
                }
                partitions += 1;
                shared.lock().expect("shared").churn.grown += 1;
                note(
                    &shared,
                    started,
                    format!("{CHURN} {incarnation} grown to {partitions} partitions"),
                );
            }
            if rng.random_range(0..6) == 0 {
                let retention =
                    (rng.random_range(0..3) > 0).then(|| rng.random_range(1..48) * 3_600_000u64);
                if !reconfigure(nodes, &shared, &mut rng, retention).await {
                    break;
                }
                shared.lock().expect("shared").churn.reconfigured += 1;
                note(
                    &shared,
                    started,
                    format!("{CHURN} {incarnation} retention.ms {retention:?}"),
                );
            }
            let partition = rng.random_range(0..partitions);
            produce_one(nodes, &shared, &mut rng, (incarnation, partition), n).await;
        }
    }
    shared.lock().expect("shared").churn.done = true;
}

/// Deletes (`create` false) or creates [`CHURN`] through random nodes for
/// up to 15 s; whether it was done (or already so).
async fn admin(nodes: u64, shared: &SharedRef, rng: &mut Xoshiro256PlusPlus, create: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let node = rng.random_range(1..=nodes);
        if let Some(mut client) = connect(node).await {
            let sent = Instant::now();
            let code = if create {
                created(&mut client, shared, rng).await
            } else {
                deleted(&mut client, shared).await
            };
            if create && code == Some(0) {
                check_placement(shared, node, 0..1, sent);
            }
            // 36: it exists already; 3: there is none to delete.
            match (create, code) {
                (_, Some(0)) | (true, Some(36)) | (false, Some(3)) => return true,
                _ => {}
            }
        }
        sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Grows [`CHURN`] to `count` partitions through random nodes for up to
/// 15 s; whether it was done (or the topic had that many already: a
/// growth answered late). An unknown topic (deleted by a deletion
/// answered late) ends the incarnation.
async fn grow(nodes: u64, shared: &SharedRef, rng: &mut Xoshiro256PlusPlus, count: i32) -> bool {
    let request = RequestKind::CreatePartitions(
        CreatePartitionsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(CHURN)))
                    .with_count(count)
                    .with_assignments(None),
            ]),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let node = rng.random_range(1..=nodes);
        if let Some(mut client) = connect(node).await {
            let sent = Instant::now();
            let response = call(&mut client, shared, ApiKey::CreatePartitions, 1, &request).await;
            if let Some(ResponseKind::CreatePartitions(response)) = response {
                // 37: INVALID_PARTITIONS (it has that many); 3: no topic.
                match response.results.first().map(|result| result.error_code) {
                    Some(0) => {
                        check_placement(shared, node, count as usize - 1..count as usize, sent);
                        return true;
                    }
                    Some(37) => return true,
                    Some(3) => return false,
                    _ => {}
                }
            }
        }
        sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Creates [`CHURN`] with one partition, of the default replication
/// factor (the nodes, up to 3) or of 2 (so that a node down leaves the
/// controller a choice of where to place it).
async fn created(
    client: &mut KafkaClient,
    shared: &SharedRef,
    rng: &mut Xoshiro256PlusPlus,
) -> Option<i16> {
    let factor = if rng.random_bool(0.5) { 2 } else { -1 };
    let request = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(CHURN)))
                .with_num_partitions(1)
                .with_replication_factor(factor)]),
    );
    match call(client, shared, ApiKey::CreateTopics, 4, &request).await? {
        ResponseKind::CreateTopics(response) => Some(response.topics.first()?.error_code),
        _ => None,
    }
}

async fn deleted(client: &mut KafkaClient, shared: &SharedRef) -> Option<i16> {
    let request = RequestKind::DeleteTopics(
        DeleteTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topic_names(vec![TopicName(StrBytes::from_static_str(CHURN))]),
    );
    match call(client, shared, ApiKey::DeleteTopics, 4, &request).await? {
        ResponseKind::DeleteTopics(response) => Some(response.responses.first()?.error_code),
        _ => None,
    }
}

/// Produces `churn-<incarnation>-<n>` (acks=all, no producer id) to a
/// partition's leader, trying for up to 5 s; records it if acknowledged.
async fn produce_one(
    nodes: u64,
    shared: &SharedRef,
    rng: &mut Xoshiro256PlusPlus,
    (incarnation, partition): (u64, i32),
    n: u64,
) {
    let value = format!("{CHURN}-{incarnation}-{n}");
    let mut bytes = Vec::new();
    let record = [Record::value(1, value.as_bytes())];
    encode(&record, ProducerInfo::NONE, &mut bytes).expect("a batch");
    let batch = Bytes::from(bytes);
    let request = RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(3_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(CHURN)))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                ])]),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let node = rng.random_range(1..=nodes);
        if let Some(mut client) = connect(node).await {
            let response = call(&mut client, shared, ApiKey::Produce, 7, &request).await;
            if let Some(ResponseKind::Produce(response)) = response {
                let partition = response
                    .responses
                    .first()
                    .and_then(|topic| topic.partition_responses.first());
                if let Some(partition) = partition.filter(|p| p.error_code == 0) {
                    let mut state = shared.lock().expect("shared");
                    let acked = state.churn.acked.entry(incarnation).or_default();
                    acked.insert((partition.index, partition.base_offset), value);
                    return;
                }
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Sets [`CHURN`]'s `retention.ms` (`None`: deletes it, back to the
/// default) through random nodes for up to 15 s; whether it was done. An
/// unknown topic (deleted by a deletion answered late) ends the
/// incarnation.
async fn reconfigure(
    nodes: u64,
    shared: &SharedRef,
    rng: &mut Xoshiro256PlusPlus,
    retention: Option<u64>,
) -> bool {
    let change = incremental_alter_configs_request::AlterableConfig::default()
        .with_name(StrBytes::from_static_str("retention.ms"))
        .with_config_operation(if retention.is_some() { 0 } else { 1 })
        .with_value(retention.map(|ms| StrBytes::from_string(ms.to_string())));
    let request = RequestKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str(CHURN))
                .with_configs(vec![change]),
        ]),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let node = rng.random_range(1..=nodes);
        if let Some(mut client) = connect(node).await {
            let api = ApiKey::IncrementalAlterConfigs;
            let response = call(&mut client, shared, api, 1, &request).await;
            if let Some(ResponseKind::IncrementalAlterConfigs(response)) = response {
                match response.responses.first().map(|result| result.error_code) {
                    Some(0) => return true,
                    Some(3) => return false,
                    _ => {}
                }
            }
        }
        sleep(Duration::from_millis(200)).await;
    }
    false
}

/// How long no node may have stopped or started before a placement is
/// judged: by then every node running takes the ones down for down (two
/// election timeouts of silence).
const SETTLED: Duration = Duration::from_secs(5);

/// The new partitions `added` of [`CHURN`] that node `node` created for a
/// request sent at `sent`, as its metadata has them: placed on the nodes
/// running first (`a new partition's replicas are placed on the nodes
/// up`), a majority of each one's replicas on running nodes (the
/// controller refuses a placement it cannot give one), when no node had
/// stopped or started for [`SETTLED`] before the request nor since. A
/// node paused or cut off counts as running: the controller may take it
/// for down, which only moves replicas to other running nodes.
fn check_placement(shared: &SharedRef, node: u64, added: std::ops::Range<usize>, sent: Instant) {
    let state = shared.lock().expect("shared");
    let settled = state
        .nodes_changed
        .is_none_or(|changed| changed + SETTLED <= sent);
    let Some(metadata) = state.clusters.get(&node).map(|cluster| cluster.metadata()) else {
        return;
    };
    let running: BTreeSet<u64> = state.brokers.keys().copied().collect();
    drop(state);
    let Some(partitions) = metadata.topics.get(CHURN).filter(|_| settled) else {
        return;
    };
    let down: Vec<u64> = metadata
        .nodes
        .keys()
        .filter(|id| !running.contains(id))
        .copied()
        .collect();
    for (index, partition) in partitions
        .iter()
        .enumerate()
        .skip(added.start)
        .take(added.len())
    {
        let up = partition
            .replicas
            .iter()
            .filter(|r| running.contains(r))
            .count();
        if up <= partition.replicas.len() / 2 {
            let evidence = format!(
                "{CHURN} partition {index} placed on {:?} through weir-{node}; down: {down:?}",
                partition.replicas
            );
            violation(
                shared,
                "a new partition's replicas are placed on the nodes up",
                evidence,
            );
        } else if !down.is_empty() {
            reached(shared, "a partition was placed while a node was down");
        }
    }
}

/// The checks above, on the replicas the final metadata names for each
/// partition of [`CHURN`] (if it stands): (invariant, evidence) for each
/// problem.
pub(super) fn check(shared: &Shared) -> Vec<(&'static str, String)> {
    let mut problems = check_settings(shared);
    let partitions = shared
        .clusters
        .values()
        .next()
        .and_then(|cluster| cluster.metadata().topics.get(CHURN).cloned())
        .unwrap_or_default();
    for (index, assignment) in partitions.iter().enumerate() {
        let index = i32::try_from(index).expect("a few partitions");
        for id in &assignment.replicas {
            problems.extend(check_replica(shared, *id, index));
        }
    }
    problems
}

/// Each running node's copy of [`CHURN`] has the settings the configs of
/// its own metadata make of its defaults.
fn check_settings(shared: &Shared) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    for (id, broker) in &shared.brokers {
        let (Ok(topic), Some(cluster)) = (broker.topic(CHURN), shared.clusters.get(id)) else {
            continue;
        };
        let metadata = cluster.metadata();
        if !metadata.topics.contains_key(CHURN) {
            continue;
        }
        let configs = metadata
            .topic_configs
            .get(CHURN)
            .cloned()
            .unwrap_or_default();
        let wanted =
            topic_log_config(broker.default_log_config(), &configs).map(|log| log.settings());
        if wanted.as_ref() != Ok(&topic.log.settings()) {
            problems.push((
                "a topic's copy on each node has the configs its metadata gives",
                format!(
                    "weir-{id}'s {CHURN}: {:?}, its metadata's configs {configs:?} give {wanted:?}",
                    topic.log.settings()
                ),
            ));
        }
    }
    problems
}

/// The checks on weir-`id`'s copy of partition `index` of [`CHURN`].
fn check_replica(shared: &Shared, id: u64, index: i32) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    let Some(broker) = shared.brokers.get(&id) else {
        return problems;
    };
    let partition = u32::try_from(index).expect("a partition index");
    let log = match broker.partition(CHURN, partition) {
        Ok(log) => log,
        Err(error) => {
            if broker.topic(CHURN).is_ok() {
                problems.push((
                    "a grown topic has its new partitions on each of their replicas",
                    format!("weir-{id} has no partition {index} of {CHURN}: {error}"),
                ));
            }
            return problems;
        }
    };
    let records = log_records(&log);
    let incarnations: BTreeSet<u64> = records
        .values()
        .filter_map(|value| value.split('-').nth(1)?.parse().ok())
        .collect();
    if incarnations.len() > 1 {
        problems.push((
            "a re-created topic holds none of the old one's records",
            format!("weir-{id}'s {CHURN}/{index} holds records of incarnations {incarnations:?}"),
        ));
    }
    let high_watermark = log.high_watermark() as i64;
    for incarnation in incarnations {
        let acked = shared.churn.acked.get(&incarnation);
        for ((at, offset), value) in acked.into_iter().flatten() {
            if *at == index && *offset < high_watermark && records.get(offset) != Some(value) {
                problems.push((
                    "no acknowledged record of a re-created topic lost",
                    format!(
                        "{value} acknowledged at {index}/{offset}; weir-{id} has {:?}",
                        records.get(offset)
                    ),
                ));
            }
        }
    }
    problems
}
