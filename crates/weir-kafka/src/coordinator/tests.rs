//! The coordinator against Kafka's rules, on a manual clock.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use weir_io::ManualClock;

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn coordinator() -> (Coordinator, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    (Coordinator::new(clock.clone(), 0), clock)
}

fn request(member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group: "g".into(),
        member_id: member.into(),
        instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        requires_known_member_id: true,
    }
}

fn now<T: std::fmt::Debug>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(value) => value,
        Reply::Later(mut receiver) => receiver
            .try_recv()
            .unwrap_or_else(|error| panic!("expected an answer now, the reply waits: {error:?}")),
    }
}

fn waiting<T>(reply: Reply<T>) -> tokio::sync::oneshot::Receiver<T> {
    match reply {
        Reply::Later(receiver) => receiver,
        Reply::Now(_) => panic!("expected the reply to wait"),
    }
}

/// The member-id round trip, then a join that forms a generation.
fn join_new(coordinator: &Coordinator) -> JoinResult {
    let first = now(coordinator.join(request("", None)));
    assert_eq!(first.error, ResponseError::MemberIdRequired.code());
    now(coordinator.join(request(&first.member_id, None)))
}

fn sync(
    coordinator: &Coordinator,
    member: &JoinResult,
    assignments: Vec<(String, Bytes)>,
) -> Reply<SyncResult> {
    coordinator.sync(
        "g",
        member.generation,
        &member.member_id,
        None,
        None,
        None,
        assignments,
    )
}

#[test]
fn a_lone_member_forms_generation_one_and_gets_its_assignment() {
    let (coordinator, _) = coordinator();
    let joined = join_new(&coordinator);
    assert_eq!(joined.error, 0);
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, joined.member_id);
    assert_eq!(joined.protocol.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);
    let assignment = Bytes::from_static(b"partitions 0-2");
    let synced = now(sync(
        &coordinator,
        &joined,
        vec![(joined.member_id.clone(), assignment.clone())],
    ));
    assert_eq!(synced.assignment, assignment);
    assert_eq!(coordinator.describe("g").unwrap().state, GroupState::Stable);
    assert_eq!(coordinator.heartbeat("g", 1, &joined.member_id, None), 0);
}

#[test]
fn a_second_member_triggers_a_rebalance_that_waits_for_the_first() {
    let (coordinator, _) = coordinator();
    let first = join_new(&coordinator);
    now(sync(&coordinator, &first, vec![]));
    let id = now(coordinator.join(request("", None))).member_id;
    let mut second = waiting(coordinator.join(request(&id, None)));
    // The first member learns of the rebalance from its heartbeat.
    assert_eq!(
        coordinator.heartbeat("g", 1, &first.member_id, None),
        ResponseError::RebalanceInProgress.code()
    );
    let again = now(coordinator.join(request(&first.member_id, None)));
    let second = second.try_recv().expect("the generation formed");
    assert_eq!((again.generation, second.generation), (2, 2));
    assert_eq!(again.leader, first.member_id, "the leader stays the leader");
    assert_eq!(again.members.len(), 2);
    assert!(
        second.members.is_empty(),
        "only the leader gets the members"
    );
    // The follower waits in SyncGroup for the leader's assignment.
    let mut follower = waiting(sync(&coordinator, &second, vec![]));
    let leader = now(sync(
        &coordinator,
        &again,
        vec![
            (again.member_id.clone(), Bytes::from_static(b"a")),
            (second.member_id.clone(), Bytes::from_static(b"b")),
        ],
    ));
    assert_eq!(leader.assignment, Bytes::from_static(b"a"));
    assert_eq!(
        follower.try_recv().unwrap().assignment,
        Bytes::from_static(b"b")
    );
    // The old generation is refused.
    assert_eq!(
        coordinator.heartbeat("g", 1, &second.member_id, None),
        ResponseError::IllegalGeneration.code()
    );
}

#[test]
fn unknown_members_and_generations_get_kafkas_errors() {
    let (coordinator, _) = coordinator();
    assert_eq!(
        now(coordinator.join(request("nobody", None))).error,
        ResponseError::UnknownMemberId.code()
    );
    let joined = join_new(&coordinator);
    assert_eq!(
        coordinator.heartbeat("g", 1, "nobody", None),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        coordinator.validate_commit("g", 7, &joined.member_id, None),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        coordinator.validate_commit("g", 1, &joined.member_id, None),
        Some(ResponseError::RebalanceInProgress),
        "no commits between join and sync"
    );
    now(sync(&coordinator, &joined, vec![]));
    assert_eq!(
        coordinator.validate_commit("g", 1, &joined.member_id, None),
        None
    );
    assert_eq!(
        coordinator.validate_commit("other", -1, "", None),
        None,
        "a commit outside any group (simple consumer) is allowed"
    );
    let mut bad = request("", None);
    bad.session_timeout_ms = 10;
    assert_eq!(
        now(coordinator.join(bad)).error,
        ResponseError::InvalidSessionTimeout.code()
    );
    let mut other = request("", None);
    other.protocols = vec![("roundrobin".into(), Bytes::new())];
    let id = now(coordinator.join(other.clone())).member_id;
    other.member_id = id;
    assert_eq!(
        now(coordinator.join(other)).error,
        ResponseError::InconsistentGroupProtocol.code()
    );
}

#[test]
fn a_silent_member_is_removed_after_its_session_and_the_group_rebalances() {
    let (coordinator, clock) = coordinator();
    let first = join_new(&coordinator);
    now(sync(&coordinator, &first, vec![]));
    let id = now(coordinator.join(request("", None))).member_id;
    let mut second = waiting(coordinator.join(request(&id, None)));
    // The first member heartbeats but never rejoins: at the rebalance
    // timeout it is gone.
    for _ in 0..(REBALANCE_MS / 5_000 - 1) {
        clock.advance(5_000);
        assert_eq!(
            coordinator.heartbeat("g", 1, &first.member_id, None),
            ResponseError::RebalanceInProgress.code()
        );
        coordinator.tick();
    }
    clock.advance(4_999);
    coordinator.tick();
    assert!(
        second.try_recv().is_err(),
        "still waiting before the timeout"
    );
    clock.advance(1);
    coordinator.tick();
    let formed = second.try_recv().unwrap();
    assert_eq!(formed.generation, 2);
    assert_eq!(formed.leader, formed.member_id);
    assert_eq!(formed.members.len(), 1);
    now(sync(&coordinator, &formed, vec![]));
    // Heartbeats keep it; silence past the session removes it.
    clock.advance(SESSION_MS as u64 - 1);
    assert_eq!(coordinator.heartbeat("g", 2, &formed.member_id, None), 0);
    clock.advance(SESSION_MS as u64);
    coordinator.tick();
    let group = coordinator.describe("g").unwrap();
    assert_eq!(group.state, GroupState::Empty);
    assert!(group.members.is_empty());
}

#[test]
fn leaving_hands_the_partitions_to_the_others() {
    let (coordinator, _) = coordinator();
    let first = join_new(&coordinator);
    now(sync(&coordinator, &first, vec![]));
    let id = now(coordinator.join(request("", None))).member_id;
    let mut second = waiting(coordinator.join(request(&id, None)));
    let again = now(coordinator.join(request(&first.member_id, None)));
    let second = second.try_recv().unwrap();
    now(sync(&coordinator, &again, vec![]));
    assert_eq!(
        coordinator.leave("g", &[(again.member_id.clone(), None)]),
        vec![0]
    );
    assert_eq!(
        coordinator.heartbeat("g", 2, &second.member_id, None),
        ResponseError::RebalanceInProgress.code()
    );
    let alone = now(coordinator.join(request(&second.member_id, None)));
    assert_eq!(
        (alone.generation, alone.leader.as_str()),
        (3, second.member_id.as_str())
    );
    assert_eq!(
        coordinator.leave("g", &[("nobody".into(), None)]),
        vec![ResponseError::UnknownMemberId.code()]
    );
}

#[test]
fn a_static_member_rejoining_keeps_its_assignment_and_fences_its_old_id() {
    let (coordinator, _) = coordinator();
    let joined = now(coordinator.join(request("", Some("instance-1"))));
    assert_eq!(
        joined.error, 0,
        "static members skip the member-id round trip"
    );
    now(sync(
        &coordinator,
        &joined,
        vec![(joined.member_id.clone(), Bytes::from_static(b"p0"))],
    ));
    // A restart of the same instance: a new member id, no rebalance.
    let back = now(coordinator.join(request("", Some("instance-1"))));
    assert_eq!(back.error, 0);
    assert_eq!(back.generation, joined.generation);
    assert_ne!(back.member_id, joined.member_id);
    assert_eq!(coordinator.describe("g").unwrap().state, GroupState::Stable);
    let synced = now(coordinator.sync(
        "g",
        back.generation,
        &back.member_id,
        Some("instance-1"),
        None,
        None,
        vec![],
    ));
    assert_eq!(synced.assignment, Bytes::from_static(b"p0"));
    assert_eq!(
        coordinator.heartbeat(
            "g",
            joined.generation,
            &joined.member_id,
            Some("instance-1")
        ),
        ResponseError::FencedInstanceId.code()
    );
}

#[test]
fn the_initial_rebalance_delay_gathers_members() {
    let clock = Arc::new(ManualClock::new(5_000));
    let coordinator = Coordinator::new(clock.clone(), 3_000);
    let ids: Vec<String> = (0..3)
        .map(|_| now(coordinator.join(request("", None))).member_id)
        .collect();
    let mut waiting_members: Vec<_> = ids
        .iter()
        .map(|id| waiting(coordinator.join(request(id, None))))
        .collect();
    coordinator.tick();
    assert!(waiting_members
        .iter_mut()
        .all(|receiver| receiver.try_recv().is_err()));
    clock.advance(3_000);
    coordinator.tick();
    let generations: Vec<i32> = waiting_members
        .iter_mut()
        .map(|receiver| receiver.try_recv().unwrap().generation)
        .collect();
    assert_eq!(generations, vec![1, 1, 1], "one generation for all three");
}

#[test]
fn a_member_whose_session_ends_during_a_rebalance_does_not_hold_it() {
    let (coordinator, clock) = coordinator();
    let first = join_new(&coordinator);
    now(sync(&coordinator, &first, vec![]));
    // The first member goes silent; a second joins and waits.
    let id = now(coordinator.join(request("", None))).member_id;
    let mut second = waiting(coordinator.join(request(&id, None)));
    clock.advance(SESSION_MS as u64 + 1);
    coordinator.tick();
    let formed = second.try_recv().expect(
        "the rebalance ended at the silent member's session timeout, not its rebalance timeout",
    );
    assert_eq!(formed.members.len(), 1);
    assert_eq!(formed.leader, formed.member_id);
}
