//! A consumer group across failovers: members that join through the
//! group's coordinator (which moves with the leader of its offsets
//! partition), get partitions from the leader's assignment, fetch them
//! from the partitions' leaders, commit what they read with their
//! generation, heartbeat, and now and then crash or leave.
//!
//! Checks: within one assignment, each poll of a partition starts where
//! the last one ended and has no gap (`polls within one assignment without
//! gaps or reordering`); after healing, the group reads every acknowledged
//! record within bounded time (`the group consumes every acknowledged
//! record`: at least once, across rebalances, crashes and coordinator
//! moves, resuming from committed offsets). What members read is also
//! checked against the log with the other consumers' reads.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use super::*;

/// The group the members form (the committer's group is another).
pub(super) const CONSUMERS: &str = "consumers";
/// Members of the group.
pub(super) const MEMBERS: usize = 3;
/// The members' session timeout: long enough for a poll of every
/// partition (three fetches of up to 200 ms each) and a heartbeat.
const SESSION_TIMEOUT_MS: i32 = 6_000;
/// How long the coordinator waits for members to rejoin; below the
/// request timeout, so that a JoinGroup answer is waited for.
const REBALANCE_TIMEOUT_MS: i32 = 2_000;

/// How an incarnation of a member ended.
enum End {
    /// It dropped its connection without leaving.
    Crashed,
    /// It left the group.
    Left,
    /// The coordinator did not answer, or answered it is not one.
    Failed,
    /// The run is over.
    Stopped,
}

/// One generation's partitions.
struct Assignment {
    generation: i32,
    partitions: Vec<i32>,
}

/// A member of [`CONSUMERS`], incarnation after incarnation.
pub(super) async fn member(
    nodes: u64,
    shared: SharedRef,
    mut rng: Xoshiro256PlusPlus,
    started: Instant,
) {
    let mut member_id = String::new();
    loop {
        if shared.lock().expect("shared").stop_all {
            return;
        }
        let asked = rng.random_range(1..=nodes);
        let Some(coordinator) = find_coordinator(CONSUMERS, asked, &shared).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(mut client) = connect(coordinator).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        let seed: u64 = rng.random();
        let mut member = Member {
            client: &mut client,
            shared: &shared,
            member_id: &mut member_id,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            nodes,
            started,
            coordinator,
        };
        match member.incarnation().await {
            End::Stopped => return,
            End::Crashed => {
                reached(&shared, "group member crashed");
                member_id.clear();
                sleep(Duration::from_millis(rng.random_range(500..5_000))).await;
            }
            End::Left => {
                reached(&shared, "group member left");
                member_id.clear();
                sleep(Duration::from_millis(rng.random_range(100..2_000))).await;
            }
            End::Failed => sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A member's incarnation: one connection to the coordinator.
struct Member<'a> {
    client: &'a mut KafkaClient,
    shared: &'a SharedRef,
    member_id: &'a mut String,
    rng: Xoshiro256PlusPlus,
    nodes: u64,
    started: Instant,
    coordinator: u64,
}

impl Member<'_> {
    async fn incarnation(&mut self) -> End {
        loop {
            let assignment = match self.join_and_sync().await {
                Ok(assignment) => assignment,
                Err(end) => return end,
            };
            if let Some(end) = self.consume(assignment).await {
                return end;
            }
            reached(self.shared, "group member rejoined");
        }
    }

    async fn call(
        &mut self,
        api: ApiKey,
        version: i16,
        request: RequestKind,
    ) -> Option<ResponseKind> {
        call(self.client, self.shared, api, version, &request).await
    }

    /// Joins (with the member-id round trip) and syncs.
    async fn join_and_sync(&mut self) -> Result<Assignment, End> {
        loop {
            if self.shared.lock().expect("shared").stop_all {
                return Err(End::Stopped);
            }
            let Some(ResponseKind::JoinGroup(joined)) = self
                .call(ApiKey::JoinGroup, 5, join_request(self.member_id))
                .await
            else {
                return Err(End::Failed);
            };
            match ResponseError::try_from_code(joined.error_code) {
                None => {}
                Some(ResponseError::MemberIdRequired) => {
                    *self.member_id = joined.member_id.to_string();
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(ResponseError::RebalanceInProgress) => continue,
                Some(_) => return Err(End::Failed),
            }
            *self.member_id = joined.member_id.to_string();
            let assignments = match joined.leader == joined.member_id {
                true => assign(&joined),
                false => Vec::new(),
            };
            let request = RequestKind::SyncGroup(
                SyncGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str(CONSUMERS)))
                    .with_generation_id(joined.generation_id)
                    .with_member_id(StrBytes::from_string(self.member_id.clone()))
                    .with_assignments(assignments),
            );
            let Some(ResponseKind::SyncGroup(synced)) =
                self.call(ApiKey::SyncGroup, 3, request).await
            else {
                return Err(End::Failed);
            };
            match ResponseError::try_from_code(synced.error_code) {
                None => {}
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => {
                    continue
                }
                Some(_) => return Err(End::Failed),
            }
            let partitions: Vec<i32> = String::from_utf8_lossy(&synced.assignment)
                .split(',')
                .filter_map(|partition| partition.parse().ok())
                .collect();
            let text = format!(
                "group member {} of generation {} (coordinator weir-{}): partitions {partitions:?}",
                self.member_id, joined.generation_id, self.coordinator
            );
            note(self.shared, self.started, text);
            return Ok(Assignment {
                generation: joined.generation_id,
                partitions,
            });
        }
    }

    /// Reads the assignment's partitions from their committed offsets
    /// until the group rebalances (`None`: join again) or the incarnation
    /// ends.
    async fn consume(&mut self, assignment: Assignment) -> Option<End> {
        let mut positions = match self.committed(&assignment.partitions).await {
            Ok(positions) => positions,
            Err(end) => return Some(end),
        };
        let mut epochs: BTreeMap<i32, i32> = BTreeMap::new();
        loop {
            if let Some(end) = self.maybe_end().await {
                return Some(end);
            }
            let request = RequestKind::Heartbeat(
                HeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str(CONSUMERS)))
                    .with_generation_id(assignment.generation)
                    .with_member_id(StrBytes::from_string(self.member_id.clone())),
            );
            let Some(ResponseKind::Heartbeat(beat)) =
                self.call(ApiKey::Heartbeat, 3, request).await
            else {
                return Some(End::Failed);
            };
            if beat.error_code != 0 {
                let text = format!(
                    "group member {}: heartbeat error {}",
                    self.member_id, beat.error_code
                );
                note(self.shared, self.started, text);
            }
            match ResponseError::try_from_code(beat.error_code) {
                None => {}
                Some(
                    ResponseError::RebalanceInProgress
                    | ResponseError::IllegalGeneration
                    | ResponseError::UnknownMemberId,
                ) => return None,
                Some(_) => return Some(End::Failed),
            }
            let asked = self.rng.random_range(1..=self.nodes);
            let leaders = partitions_of(asked, self.shared).await.unwrap_or_default();
            for &partition in &assignment.partitions {
                let Some(&(leader, epoch)) = leaders.get(&partition) else {
                    continue;
                };
                let known = epochs.entry(partition).or_insert(-1);
                *known = (*known).max(epoch);
                let position = positions[&partition];
                let records = match fetch(self.shared, leader, partition, position, *known).await {
                    Some(Fetched::Records(_, records)) => records,
                    Some(Fetched::BelowStart(start)) => {
                        // As a Kafka consumer with auto.offset.reset=earliest.
                        positions.insert(partition, start);
                        continue;
                    }
                    None => continue,
                };
                let Some(next) = self.take(partition, position, records) else {
                    continue;
                };
                match self.commit(assignment.generation, partition, next).await {
                    Ok(()) => {
                        positions.insert(partition, next);
                    }
                    Err(end) => return end,
                }
            }
            sleep(Duration::from_millis(self.rng.random_range(20..150))).await;
        }
    }

    /// Before healing, now and then the member crashes or leaves.
    async fn maybe_end(&mut self) -> Option<End> {
        let (stop, healed) = {
            let shared = self.shared.lock().expect("shared");
            (shared.stop_all, shared.healed)
        };
        if stop {
            return Some(End::Stopped);
        }
        if healed {
            return None;
        }
        if self.rng.random_bool(0.005) {
            return Some(End::Crashed);
        }
        if self.rng.random_bool(0.005) {
            let request = RequestKind::LeaveGroup(
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str(CONSUMERS)))
                    .with_member_id(StrBytes::from_string(self.member_id.clone())),
            );
            let _ = self.call(ApiKey::LeaveGroup, 1, request).await;
            return Some(End::Left);
        }
        None
    }

    /// The group's committed offset of each partition (0 where none).
    async fn committed(&mut self, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, End> {
        let request = RequestKind::OffsetFetch(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str(CONSUMERS)))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                        .with_partition_indexes(partitions.to_vec()),
                ])),
        );
        let Some(ResponseKind::OffsetFetch(response)) =
            self.call(ApiKey::OffsetFetch, 5, request).await
        else {
            return Err(End::Failed);
        };
        let read = offsets_read(&response).ok_or(End::Failed)?;
        if read.values().any(|offset| *offset > 0) {
            reached(self.shared, "group member resumed from a committed offset");
        }
        Ok(partitions
            .iter()
            .map(|partition| {
                (
                    *partition,
                    read.get(partition).copied().unwrap_or(-1).max(0),
                )
            })
            .collect())
    }

    /// Takes a poll's records, which must continue the partition's reads
    /// of this assignment without a gap: the offset after the last one,
    /// or `None` if the poll had none.
    fn take(&mut self, partition: i32, position: i64, records: Vec<(i64, String)>) -> Option<i64> {
        let mut expected = position;
        let mut shared = self.shared.lock().expect("shared");
        for (offset, value) in records {
            if offset != expected {
                let evidence = format!(
                    "partition {partition}: a poll at {position} returned offset {offset} where \
                     {expected} was due"
                );
                shared.violations.push(Violation {
                    invariant: "polls within one assignment without gaps or reordering",
                    evidence,
                });
                return None;
            }
            if let Some(seen) = shared.read.get(&(partition, offset)) {
                if *seen != value {
                    let evidence = format!(
                        "partition {partition} offset {offset}: {seen} then {value} (a group member)"
                    );
                    shared.violations.push(Violation {
                        invariant: "one record per offset across reads",
                        evidence,
                    });
                }
            }
            shared.read.insert((partition, offset), value);
            shared.group_read.insert((partition, offset));
            expected = offset + 1;
        }
        (expected > position).then_some(expected)
    }

    /// Commits `offset` for `partition` in `generation`: `Err(None)` when
    /// the group rebalanced (join again), `Err(Some(_))` when the
    /// coordinator failed.
    async fn commit(
        &mut self,
        generation: i32,
        partition: i32,
        offset: i64,
    ) -> Result<(), Option<End>> {
        let member = (generation, self.member_id.as_str());
        let request = offset_commit(CONSUMERS, member, partition, offset);
        let Some(ResponseKind::OffsetCommit(response)) =
            self.call(ApiKey::OffsetCommit, 7, request).await
        else {
            return Err(Some(End::Failed));
        };
        let code = response
            .topics
            .first()
            .and_then(|topic| topic.partitions.first())
            .map_or(-1, |answer| answer.error_code);
        if code != 0 {
            let text = format!(
                "group member {}: commit of {offset} for partition {partition} refused: {code}",
                self.member_id
            );
            note(self.shared, self.started, text);
        }
        match ResponseError::try_from_code(code) {
            None if code == 0 => {
                reached(self.shared, "group offset committed");
                Ok(())
            }
            Some(
                ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId,
            ) => Err(None),
            _ => Err(Some(End::Failed)),
        }
    }
}

fn join_request(member_id: &str) -> RequestKind {
    RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(CONSUMERS)))
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(StrBytes::from_static_str("sim"))
            .with_metadata(Bytes::from_static(TOPIC.as_bytes()))]),
    )
}

/// The leader's assignment: the partitions dealt round-robin to the
/// members in id order.
fn assign(joined: &JoinGroupResponse) -> Vec<sync_group_request::SyncGroupRequestAssignment> {
    crate::kafka::deal_round_robin(
        joined,
        (0..PARTITIONS).map(|partition| partition.to_string()),
    )
}

/// After healing, the group reads every acknowledged record within 60 s.
pub(super) async fn consumes_everything(world: &World) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let shared = world.shared.lock().expect("shared");
            // Records retention deleted before the group read them are
            // not for it to read.
            let starts: Vec<i64> = (0..PARTITIONS)
                .map(|partition| super::max_log_start(&shared, partition))
                .collect();
            let kept = |acked: &&super::Acked| acked.offset >= starts[acked.partition as usize];
            shared
                .acked
                .iter()
                .filter(kept)
                .find(|acked| !shared.group_read.contains(&(acked.partition, acked.offset)))
                .cloned()
        };
        let Some(missing) = missing else {
            return;
        };
        if Instant::now() > deadline {
            let read: Vec<i64> = {
                let shared = world.shared.lock().expect("shared");
                shared
                    .group_read
                    .range((missing.partition, 0)..(missing.partition + 1, 0))
                    .map(|(_, offset)| *offset)
                    .collect()
            };
            let evidence = format!(
                "{} acknowledged at partition {} offset {} is not read by group {CONSUMERS} \
                 60 s after healing (the group read {} records of the partition, offsets {:?} to {:?})",
                missing.value,
                missing.partition,
                missing.offset,
                read.len(),
                read.first(),
                read.last()
            );
            violation(
                &world.shared,
                "the group consumes every acknowledged record",
                evidence,
            );
            return;
        }
        sleep(Duration::from_millis(200)).await;
    }
}
