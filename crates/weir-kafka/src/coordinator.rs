//! The group coordinator: Kafka's classic consumer-group protocol.
//!
//! A group moves through Kafka's states: `Empty` (no members),
//! `PreparingRebalance` (members are (re)joining; JoinGroup requests are
//! parked until every known member has joined or the rebalance timeout
//! passes), `CompletingRebalance` (the generation is chosen; members wait
//! in SyncGroup for the leader's assignment) and `Stable`. Members are
//! removed when their session times out (no heartbeat, commit or join
//! within their session timeout), when they leave, and when they do not
//! rejoin or sync in time; each removal starts a rebalance.
//!
//! Time is the injected [`Clock`]'s: the owner calls
//! [`Coordinator::tick`] from a timer; nothing here sleeps or reads the
//! system clock. Parked requests wait on oneshot channels, so a waiting
//! member holds no thread.
//!
//! Membership lives in memory, as Kafka's does between restarts of a
//! coordinator: after a restart members get `UNKNOWN_MEMBER_ID` and
//! rejoin. Committed offsets are the durable part, kept by the log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use weir_io::sync::{lock, Mutex};
use weir_io::Clock;

use crate::limits::{
    GROUPS_MAX, GROUP_MEMBERS_MAX, GROUP_SESSION_TIMEOUT_MS_MAX, GROUP_SESSION_TIMEOUT_MS_MIN,
    PENDING_MEMBERS_MAX,
};

/// Kafka's group states, named as DescribeGroups names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members (possibly committed offsets).
    Empty,
    /// Members are joining.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

impl GroupState {
    /// The name Kafka's tools show.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup request, as the coordinator needs it.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// The group.
    pub group: String,
    /// The member id ("" for a first join).
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The client's id and host, for DescribeGroups.
    pub client_id: String,
    /// See `client_id`.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (the session timeout before JoinGroup v1).
    pub rebalance_timeout_ms: i32,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// Assignment strategies with their metadata, preferred first.
    pub protocols: Vec<(String, Bytes)>,
    /// Whether the client understands MEMBER_ID_REQUIRED (v4+).
    pub requires_known_member_id: bool,
}

/// What a JoinGroup gets back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinResult {
    /// Kafka's error code (0: none).
    pub error: i16,
    /// The generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen assignment strategy.
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member with its metadata: for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(error: ResponseError, member_id: &str) -> Self {
        Self {
            error: error.code(),
            generation: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

/// What a SyncGroup gets back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncResult {
    /// Kafka's error code (0: none).
    pub error: i16,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen assignment strategy.
    pub protocol: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: ResponseError) -> Self {
        Self {
            error: error.code(),
            ..Self::default()
        }
    }
}

/// An answer now, or one to wait for.
#[derive(Debug)]
pub enum Reply<T> {
    /// The answer.
    Now(T),
    /// The answer comes when the group moves on.
    Later(oneshot::Receiver<T>),
}

/// One member as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// Its id.
    pub member_id: String,
    /// Its `group.instance.id`.
    pub instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its host.
    pub client_host: String,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Its assignment.
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The state.
    pub state: GroupState,
    /// The protocol type ("" when empty).
    pub protocol_type: String,
    /// The chosen protocol ("" unless stable).
    pub protocol: String,
    /// The members.
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// When the member is removed unless it is heard from.
    expires_at: u64,
    /// A parked JoinGroup.
    joining: Option<oneshot::Sender<JoinResult>>,
    /// A parked SyncGroup (or `Some` with the sender taken once answered).
    syncing: Option<oneshot::Sender<SyncResult>>,
    /// It sent SyncGroup in this generation.
    synced: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static members: `group.instance.id` → member id.
    instances: BTreeMap<String, String>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, not yet used.
    pending: BTreeSet<String>,
    /// When the current rebalance (or the wait for SyncGroups) ends.
    deadline: u64,
}

impl Group {
    fn new() -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: BTreeMap::new(),
            pending: BTreeSet::new(),
            deadline: 0,
        }
    }

    fn supports(&self, request: &JoinRequest) -> bool {
        if self.members.is_empty() {
            return !request.protocols.is_empty() && !request.protocol_type.is_empty();
        }
        self.protocol_type.as_deref() == Some(request.protocol_type.as_str())
            && request.protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|member| member.protocols.iter().any(|(theirs, _)| theirs == name))
            })
    }

    fn rebalance_timeout(&self) -> u64 {
        self.members
            .values()
            .map(|member| member.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// The protocol every member supports that most members prefer.
    fn choose_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .values()
                    .all(|member| member.protocols.iter().any(|(theirs, _)| theirs == *name))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            let vote = member
                .protocols
                .iter()
                .map(|(name, _)| name)
                .find(|name| candidates.contains(name));
            if let Some(vote) = vote {
                *votes.entry(vote).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        candidates
            .into_iter()
            .find(|name| votes.get(name) == Some(&best))
            .cloned()
    }

    fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.instance_id {
            if self.instances.get(instance).map(String::as_str) == Some(member_id) {
                self.instances.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        Some(member)
    }
}

#[derive(Debug, Default)]
struct Groups {
    groups: BTreeMap<String, Group>,
    next_member: u64,
}

/// The group coordinator of one node.
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<Groups>,
    clock: Arc<dyn Clock>,
    /// Kafka's `group.initial.rebalance.delay.ms`: how long the first
    /// rebalance of an empty group waits for more members.
    initial_rebalance_delay_ms: u64,
}

fn kafka(error: ResponseError) -> i16 {
    error.code()
}

impl Coordinator {
    /// A coordinator reading `clock`.
    pub fn new(clock: Arc<dyn Clock>, initial_rebalance_delay_ms: u64) -> Self {
        Self {
            groups: Mutex::new(Groups::default()),
            clock,
            initial_rebalance_delay_ms,
        }
    }

    /// Handles a JoinGroup.
    pub fn join(&self, request: JoinRequest) -> Reply<JoinResult> {
        let now = self.clock.now_ms();
        if request.group.is_empty() {
            return Reply::Now(JoinResult::error(
                ResponseError::InvalidGroupId,
                &request.member_id,
            ));
        }
        if !(GROUP_SESSION_TIMEOUT_MS_MIN..=GROUP_SESSION_TIMEOUT_MS_MAX)
            .contains(&request.session_timeout_ms)
        {
            return Reply::Now(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &request.member_id,
            ));
        }
        let mut guard = lock(&self.groups);
        let groups = &mut *guard;
        if !groups.groups.contains_key(&request.group) {
            if !request.member_id.is_empty() {
                return Reply::Now(JoinResult::error(
                    ResponseError::UnknownMemberId,
                    &request.member_id,
                ));
            }
            if groups.groups.len() >= GROUPS_MAX {
                return Reply::Now(JoinResult::error(
                    ResponseError::CoordinatorNotAvailable,
                    "",
                ));
            }
            groups.groups.insert(request.group.clone(), Group::new());
        }
        groups.next_member += 1;
        let fresh_id = format!(
            "{}-{}-{}",
            if request.client_id.is_empty() {
                "member"
            } else {
                request.client_id.as_str()
            },
            now,
            groups.next_member
        );
        let group = groups
            .groups
            .get_mut(&request.group)
            .unwrap_or_else(|| unreachable!("inserted above"));
        if !group.supports(&request) {
            return Reply::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &request.member_id,
            ));
        }
        if request.member_id.is_empty() {
            self.join_unknown(group, request, fresh_id, now)
        } else {
            self.join_known(group, request, now)
        }
    }

    fn join_unknown(
        &self,
        group: &mut Group,
        request: JoinRequest,
        member_id: String,
        now: u64,
    ) -> Reply<JoinResult> {
        if let Some(instance) = &request.instance_id {
            if let Some(old_id) = group.instances.get(instance).cloned() {
                return self.replace_static_member(group, request, old_id, member_id, now);
            }
        } else if request.requires_known_member_id {
            if group.pending.len() >= PENDING_MEMBERS_MAX {
                return Reply::Now(JoinResult::error(
                    ResponseError::GroupMaxSizeReached,
                    &member_id,
                ));
            }
            group.pending.insert(member_id.clone());
            return Reply::Now(JoinResult::error(
                ResponseError::MemberIdRequired,
                &member_id,
            ));
        }
        self.add_member(group, request, member_id, now)
    }

    fn join_known(&self, group: &mut Group, request: JoinRequest, now: u64) -> Reply<JoinResult> {
        let member_id = request.member_id.clone();
        if group.pending.remove(&member_id) {
            return self.add_member(group, request, member_id, now);
        }
        if let Some(error) = fenced(group, &member_id, request.instance_id.as_deref()) {
            return Reply::Now(JoinResult::error(error, &member_id));
        }
        let Some(member) = group.members.get_mut(&member_id) else {
            return Reply::Now(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            ));
        };
        member.expires_at = now + member.session_timeout_ms;
        let unchanged = member.same_protocols(&request.protocols);
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        match group.state {
            GroupState::CompletingRebalance if unchanged => {
                Reply::Now(current_generation(group, &member_id, is_leader))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Reply::Now(current_generation(group, &member_id, false))
            }
            _ => {
                let (sender, receiver) = oneshot::channel();
                update_member(member, &request, sender);
                self.prepare_rebalance(group, now);
                self.maybe_complete_join(group, now);
                Reply::Later(receiver)
            }
        }
    }

    fn add_member(
        &self,
        group: &mut Group,
        request: JoinRequest,
        member_id: String,
        now: u64,
    ) -> Reply<JoinResult> {
        if group.members.len() >= GROUP_MEMBERS_MAX {
            return Reply::Now(JoinResult::error(
                ResponseError::GroupMaxSizeReached,
                &member_id,
            ));
        }
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.instance_id {
            group.instances.insert(instance.clone(), member_id.clone());
        }
        let (sender, receiver) = oneshot::channel();
        let mut member = Member {
            instance_id: request.instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            expires_at: 0,
            joining: None,
            syncing: None,
            synced: false,
        };
        update_member(&mut member, &request, sender);
        member.expires_at = now + member.session_timeout_ms;
        group.members.insert(member_id, member);
        self.prepare_rebalance(group, now);
        self.maybe_complete_join(group, now);
        Reply::Later(receiver)
    }

    /// A static member rejoining with a new member id: the old id is
    /// fenced; a stable group keeps its assignment without a rebalance.
    fn replace_static_member(
        &self,
        group: &mut Group,
        request: JoinRequest,
        old_id: String,
        new_id: String,
        now: u64,
    ) -> Reply<JoinResult> {
        let was_leader = group.leader.as_deref() == Some(old_id.as_str());
        let Some(mut member) = group.remove_member(&old_id) else {
            return self.add_member(group, request, new_id, now);
        };
        if let Some(joining) = member.joining.take() {
            let _ = joining.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(syncing) = member.syncing.take() {
            let _ = syncing.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        let unchanged = member.same_protocols(&request.protocols);
        member.expires_at = now + member.session_timeout_ms;
        if let Some(instance) = &request.instance_id {
            group.instances.insert(instance.clone(), new_id.clone());
        }
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        if group.state == GroupState::Stable && unchanged {
            member.client_id = request.client_id.clone();
            member.client_host = request.client_host.clone();
            group.members.insert(new_id.clone(), member);
            return Reply::Now(current_generation(group, &new_id, false));
        }
        let (sender, receiver) = oneshot::channel();
        update_member(&mut member, &request, sender);
        group.members.insert(new_id, member);
        self.prepare_rebalance(group, now);
        self.maybe_complete_join(group, now);
        Reply::Later(receiver)
    }

    fn prepare_rebalance(&self, group: &mut Group, now: u64) {
        match group.state {
            GroupState::PreparingRebalance => return,
            GroupState::CompletingRebalance => {
                for member in group.members.values_mut() {
                    if let Some(syncing) = member.syncing.take() {
                        let _ = syncing.send(SyncResult::error(ResponseError::RebalanceInProgress));
                    }
                }
            }
            GroupState::Empty | GroupState::Stable => {}
        }
        let initial = group.state == GroupState::Empty;
        group.state = GroupState::PreparingRebalance;
        group.deadline = if initial {
            now + self.initial_rebalance_delay_ms
        } else {
            now + group.rebalance_timeout()
        };
        tracing::info!(generation = group.generation, "group rebalancing");
    }

    /// Completes the join phase once every member has rejoined (and an
    /// empty group's initial delay has passed).
    fn maybe_complete_join(&self, group: &mut Group, now: u64) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = group
            .members
            .values()
            .all(|member| member.joining.is_some());
        let waiting_for_delay = group.generation == 0 && now < group.deadline;
        if (all_joined && !waiting_for_delay) || now >= group.deadline {
            self.complete_join(group, now);
        }
    }

    fn complete_join(&self, group: &mut Group, now: u64) {
        let absent: Vec<String> = group
            .members
            .iter()
            .filter(|(_, member)| member.joining.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in absent {
            tracing::info!(member = %id, "member did not rejoin in time: removed");
            group.remove_member(&id);
        }
        group.pending.clear();
        group.generation += 1;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol = None;
            return;
        }
        group.protocol = group.choose_protocol();
        if group.leader.is_none() {
            group.leader = group.members.keys().next().cloned();
        }
        group.state = GroupState::CompletingRebalance;
        group.deadline = now + group.rebalance_timeout();
        let protocol = group.protocol.clone().unwrap_or_default();
        let everyone: Vec<(String, Option<String>, Bytes)> = group
            .members
            .iter()
            .map(|(id, member)| {
                (
                    id.clone(),
                    member.instance_id.clone(),
                    member.metadata_for(&protocol),
                )
            })
            .collect();
        let leader = group.leader.clone().unwrap_or_default();
        for (id, member) in &mut group.members {
            member.assignment = Bytes::new();
            member.synced = false;
            member.expires_at = now + member.session_timeout_ms;
            let result = JoinResult {
                error: 0,
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol: group.protocol.clone(),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader {
                    everyone.clone()
                } else {
                    Vec::new()
                },
            };
            if let Some(joining) = member.joining.take() {
                let _ = joining.send(result);
            }
        }
        tracing::info!(
            generation = group.generation,
            members = group.members.len(),
            protocol = %protocol,
            "group generation formed"
        );
    }

    /// Handles a SyncGroup.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncResult> {
        let now = self.clock.now_ms();
        let mut groups = lock(&self.groups);
        let Some(group) = groups.groups.get_mut(group_id) else {
            return Reply::Now(SyncResult::error(ResponseError::UnknownMemberId));
        };
        if let Some(error) = member_error(group, member_id, instance_id, generation) {
            return Reply::Now(SyncResult::error(error));
        }
        let mismatch = |asked: Option<&str>, ours: &Option<String>| {
            asked.is_some_and(|asked| Some(asked) != ours.as_deref())
        };
        if mismatch(protocol_type, &group.protocol_type) || mismatch(protocol, &group.protocol) {
            return Reply::Now(SyncResult::error(ResponseError::InconsistentGroupProtocol));
        }
        let is_leader = group.leader.as_deref() == Some(member_id);
        let member = group
            .members
            .get_mut(member_id)
            .unwrap_or_else(|| unreachable!("checked by member_error"));
        member.expires_at = now + member.session_timeout_ms;
        match group.state {
            GroupState::Empty | GroupState::PreparingRebalance => {
                Reply::Now(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => Reply::Now(SyncResult {
                error: 0,
                protocol_type: group.protocol_type.clone(),
                protocol: group.protocol.clone(),
                assignment: member.assignment.clone(),
            }),
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                member.syncing = Some(sender);
                member.synced = true;
                if is_leader {
                    Self::complete_sync(group, assignments);
                }
                Reply::Later(receiver)
            }
        }
    }

    fn complete_sync(group: &mut Group, assignments: Vec<(String, Bytes)>) {
        let mut assignments: BTreeMap<String, Bytes> = assignments.into_iter().collect();
        group.state = GroupState::Stable;
        for (id, member) in &mut group.members {
            member.assignment = assignments.remove(id).unwrap_or_default();
            if let Some(syncing) = member.syncing.take() {
                let _ = syncing.send(SyncResult {
                    error: 0,
                    protocol_type: group.protocol_type.clone(),
                    protocol: group.protocol.clone(),
                    assignment: member.assignment.clone(),
                });
            }
        }
        tracing::info!(generation = group.generation, "group stable");
    }

    /// Handles a Heartbeat; returns Kafka's error code.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        let now = self.clock.now_ms();
        let mut groups = lock(&self.groups);
        let Some(group) = groups.groups.get_mut(group_id) else {
            return kafka(ResponseError::UnknownMemberId);
        };
        if let Some(error) = member_error(group, member_id, instance_id, generation) {
            return error.code();
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.expires_at = now + member.session_timeout_ms;
        }
        match group.state {
            GroupState::PreparingRebalance => kafka(ResponseError::RebalanceInProgress),
            GroupState::Empty => kafka(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => 0,
        }
    }

    /// Handles a LeaveGroup of several members (member id, instance id);
    /// returns each one's error code.
    pub fn leave(&self, group_id: &str, leaving: &[(String, Option<String>)]) -> Vec<i16> {
        let now = self.clock.now_ms();
        let mut groups = lock(&self.groups);
        let Some(group) = groups.groups.get_mut(group_id) else {
            return vec![kafka(ResponseError::UnknownMemberId); leaving.len()];
        };
        let mut errors = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for (member_id, instance_id) in leaving {
            let id = match instance_id {
                Some(instance) => match group.instances.get(instance) {
                    Some(known) if member_id.is_empty() || known == member_id => known.clone(),
                    Some(_) => {
                        errors.push(kafka(ResponseError::FencedInstanceId));
                        continue;
                    }
                    None => {
                        errors.push(kafka(ResponseError::UnknownMemberId));
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            match group.remove_member(&id) {
                Some(mut member) => {
                    if let Some(joining) = member.joining.take() {
                        let _ =
                            joining.send(JoinResult::error(ResponseError::UnknownMemberId, &id));
                    }
                    tracing::info!(member = %id, "member left the group");
                    removed = true;
                    errors.push(0);
                }
                None => errors.push(kafka(ResponseError::UnknownMemberId)),
            }
        }
        if removed {
            self.after_removal(group, now);
        }
        errors
    }

    fn after_removal(&self, group: &mut Group, now: u64) {
        if group.members.is_empty() && group.state != GroupState::PreparingRebalance {
            group.state = GroupState::Empty;
            group.generation += 1;
            group.protocol = None;
            group.leader = None;
            return;
        }
        self.prepare_rebalance(group, now);
        self.maybe_complete_join(group, now);
    }

    /// Whether a member may commit offsets for the group now; `None` if it
    /// may. A commit also counts as a sign of life.
    pub fn validate_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Option<ResponseError> {
        let now = self.clock.now_ms();
        let mut groups = lock(&self.groups);
        let Some(group) = groups.groups.get_mut(group_id) else {
            return (generation >= 0).then_some(ResponseError::IllegalGeneration);
        };
        if generation < 0 && member_id.is_empty() && group.members.is_empty() {
            return None;
        }
        if let Some(error) = member_error(group, member_id, instance_id, generation) {
            return Some(error);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.expires_at = now + member.session_timeout_ms;
        }
        (group.state == GroupState::CompletingRebalance)
            .then_some(ResponseError::RebalanceInProgress)
    }

    /// Removes members whose session timed out, and ends rebalances and
    /// SyncGroup waits whose time is up. Call it from a timer.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        let mut groups = lock(&self.groups);
        for (name, group) in groups.groups.iter_mut() {
            self.tick_group(name, group, now);
        }
        groups.groups.retain(|_, group| {
            group.state != GroupState::Empty || !group.pending.is_empty() || group.generation > 0
        });
    }

    fn tick_group(&self, name: &str, group: &mut Group, now: u64) {
        match group.state {
            GroupState::PreparingRebalance => {
                // As in Kafka, a member that has not rejoined and whose
                // session ran out leaves the rebalance at once, rather
                // than holding it to the rebalance timeout.
                for id in Self::expired(group, now) {
                    tracing::info!(group = name, member = %id, "member session timed out during a rebalance: removed");
                    group.remove_member(&id);
                }
                if now >= group.deadline {
                    self.complete_join(group, now);
                } else {
                    self.maybe_complete_join(group, now);
                }
                return;
            }
            GroupState::CompletingRebalance if now >= group.deadline => {
                let unsynced: Vec<String> = group
                    .members
                    .iter()
                    .filter(|(_, member)| !member.synced)
                    .map(|(id, _)| id.clone())
                    .collect();
                if !unsynced.is_empty() {
                    for id in unsynced {
                        tracing::info!(group = name, member = %id, "member did not sync in time: removed");
                        group.remove_member(&id);
                    }
                    self.after_removal(group, now);
                    return;
                }
            }
            _ => {}
        }
        let expired = Self::expired(group, now);
        if expired.is_empty() {
            return;
        }
        for id in expired {
            tracing::info!(group = name, member = %id, "member session timed out: removed");
            group.remove_member(&id);
        }
        self.after_removal(group, now);
    }

    /// Members not waiting in a join or sync whose session ran out.
    fn expired(group: &Group, now: u64) -> Vec<String> {
        group
            .members
            .iter()
            .filter(|(_, member)| {
                member.joining.is_none() && member.syncing.is_none() && now >= member.expires_at
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A group's state and members, if the coordinator knows it.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = lock(&self.groups);
        let group = groups.groups.get(group_id)?;
        let protocol = group.protocol.clone().unwrap_or_default();
        let stable = group.state == GroupState::Stable;
        Some(GroupDescription {
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: group
                .members
                .iter()
                .map(|(id, member)| MemberDescription {
                    member_id: id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    metadata: member.metadata_for(&protocol),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Every group the coordinator holds: (name, state, protocol type).
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        let groups = lock(&self.groups);
        groups
            .groups
            .iter()
            .map(|(name, group)| {
                (
                    name.clone(),
                    group.state,
                    group.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Forgets an empty group; `Err` with Kafka's error if it has members.
    pub fn remove_if_empty(&self, group_id: &str) -> Result<(), ResponseError> {
        let mut groups = lock(&self.groups);
        match groups.groups.get(group_id) {
            Some(group) if !group.members.is_empty() => Err(ResponseError::NonEmptyGroup),
            Some(_) => {
                groups.groups.remove(group_id);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

fn update_member(member: &mut Member, request: &JoinRequest, sender: oneshot::Sender<JoinResult>) {
    member.protocols = request.protocols.clone();
    member.session_timeout_ms = request.session_timeout_ms.max(0) as u64;
    member.rebalance_timeout_ms = request.rebalance_timeout_ms.max(0) as u64;
    member.client_id = request.client_id.clone();
    member.client_host = request.client_host.clone();
    // A second JoinGroup from the same member supersedes the first, whose
    // sender is dropped (that request gets UNKNOWN_MEMBER_ID).
    member.joining = Some(sender);
}

/// The join answer of the generation in place, for a member whose join
/// changes nothing.
fn current_generation(group: &Group, member_id: &str, is_leader: bool) -> JoinResult {
    let protocol = group.protocol.clone().unwrap_or_default();
    JoinResult {
        error: 0,
        generation: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol: group.protocol.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members: if is_leader {
            group
                .members
                .iter()
                .map(|(id, member)| {
                    (
                        id.clone(),
                        member.instance_id.clone(),
                        member.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// A static member whose instance now belongs to another member id is
/// fenced.
fn fenced(group: &Group, member_id: &str, instance_id: Option<&str>) -> Option<ResponseError> {
    let instance = instance_id?;
    match group.instances.get(instance) {
        Some(known) if known != member_id => Some(ResponseError::FencedInstanceId),
        _ => None,
    }
}

/// Kafka's checks of a member's request: known member, not fenced, this
/// generation.
fn member_error(
    group: &Group,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
) -> Option<ResponseError> {
    if let Some(error) = fenced(group, member_id, instance_id) {
        return Some(error);
    }
    if !group.members.contains_key(member_id) {
        return Some(ResponseError::UnknownMemberId);
    }
    (generation != group.generation).then_some(ResponseError::IllegalGeneration)
}

#[cfg(test)]
mod tests;
