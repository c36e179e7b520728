//! What the workload clients saw, and the invariants checked against it.
//!
//! Plain code over plain data, so that every checker is unit-tested with
//! histories that break it (see the tests at the bottom) and runs the same
//! inside and outside the simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A stream entry ID.
pub type Id = (u64, u64);

/// Shows an ID as Redis does.
pub fn show(id: Id) -> String {
    format!("{}-{}", id.0, id.1)
}

/// Parses `ms-seq`.
pub fn parse_id(text: &str) -> Option<Id> {
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// What the clients observed, in the order they observed it.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Every value a producer sent, acknowledged or not (value -> producer
    /// and sequence number).
    pub sent: BTreeMap<String, (u32, u64)>,
    /// XADDs whose reply arrived: value -> ID, in reply order per producer.
    pub acknowledged: Vec<(u32, u64, String, Id)>,
    /// Entries an `XREADGROUP ... >` delivered (reply arrived):
    /// (consumer, session, ID, value).
    pub delivered: Vec<(String, u64, Id, String)>,
    /// XACKs whose reply arrived, with the count it returned.
    pub acked: Vec<(Id, i64)>,
    /// XAUTOCLAIMs whose reply arrived: (consumer, claimed IDs).
    pub claimed: Vec<(String, Vec<Id>)>,
    /// Crashes and disconnections the clients went through.
    pub interruptions: u64,
    /// Deliveries of each ID whose reply arrived (by `>` or a claim).
    pub observed_deliveries: BTreeMap<Id, u64>,
    /// Right after a claim whose reply arrived: (ID, claimer, owner the PEL
    /// named, its delivery count, deliveries the clients had observed).
    pub claim_checks: Vec<(Id, String, String, u64, u64)>,
    /// Consumers with an XAUTOCLAIM whose reply never came (it may have run).
    pub lost_claims: BTreeSet<String>,
    /// Entries a blocked `XREAD ... STREAMS s $` woke up with: (ID, value).
    pub watched: Vec<(Id, String)>,
}

/// What the final reads returned, after the liveness phase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalState {
    /// XRANGE s - +: (ID, value) in the order returned.
    pub entries: Vec<(Id, String)>,
    /// XPENDING s g - + N: (ID, owner, delivery count).
    pub pending: Vec<(Id, String, u64)>,
}

/// One broken invariant, with its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// What was seen.
    pub evidence: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.evidence)
    }
}

fn violation(invariant: &'static str, evidence: String) -> Violation {
    Violation {
        invariant,
        evidence,
    }
}

/// The IDs consumers received, by `>` or by a claim.
pub fn received(history: &History) -> BTreeSet<Id> {
    history
        .delivered
        .iter()
        .map(|(_, _, id, _)| *id)
        .chain(
            history
                .claimed
                .iter()
                .flat_map(|(_, ids)| ids.iter().copied()),
        )
        .collect()
}

/// Which promises apply to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promises {
    /// Acknowledged writes and deliveries are durable. Off only when the
    /// disk corrupted synced data: recovery then either refuses to start
    /// or, when the corrupt record is the last one, cannot tell it from a
    /// torn write and cuts it (both documented in GUARANTEES.md).
    pub durability: bool,
    /// After healing, everything is processed and nothing stays pending.
    /// Off when the node refused to start on detected corruption.
    pub liveness: bool,
}

/// Checks every invariant; returns the violations (at most a few per
/// invariant, so a broken run stays readable).
pub fn check(history: &History, last: &FinalState, promises: Promises) -> Vec<Violation> {
    let liveness = promises.liveness;
    let mut violations = Vec::new();
    let mut push = |found: Violation| {
        let same = violations
            .iter()
            .filter(|seen: &&Violation| seen.invariant == found.invariant)
            .count();
        if same < 3 {
            violations.push(found);
        }
    };
    let stored: BTreeMap<Id, &String> = last
        .entries
        .iter()
        .map(|(id, value)| (*id, value))
        .collect();

    // Ordering per stream: the stream's IDs strictly increase.
    for pair in last.entries.windows(2) {
        if pair[0].0 >= pair[1].0 {
            push(violation(
                "ids-increase",
                format!("{} comes before {}", show(pair[0].0), show(pair[1].0)),
            ));
        }
    }
    // Ordering per producer: acknowledged IDs increase in send order. Not
    // when synced data was corrupted: an acknowledged entry cut with a
    // corrupt tail takes the stream's last ID back with it, and later
    // entries may get lower IDs (the stream's own order is checked above).
    let mut last_by_producer: BTreeMap<u32, (u64, Id)> = BTreeMap::new();
    for (producer, seq, _, id) in history.acknowledged.iter().filter(|_| promises.durability) {
        if let Some((previous_seq, previous)) = last_by_producer.get(producer) {
            if seq > previous_seq && id <= previous {
                push(violation(
                    "producer-order",
                    format!(
                        "producer {producer}: send {seq} got {} after send {previous_seq} got {}",
                        show(*id),
                        show(*previous)
                    ),
                ));
            }
        }
        last_by_producer.insert(*producer, (*seq, *id));
    }

    // One ID, one value, in every read; every value is one a producer sent
    // (values are unique tags, so corruption shows as an unknown value).
    let mut value_of: BTreeMap<Id, &String> = BTreeMap::new();
    let observations = history
        .acknowledged
        .iter()
        .map(|(_, _, value, id)| (*id, value, "XADD reply"))
        .chain(
            history
                .delivered
                .iter()
                .map(|(_, _, id, value)| (*id, value, "XREADGROUP")),
        )
        .chain(
            last.entries
                .iter()
                .map(|(id, value)| (*id, value, "final XRANGE")),
        );
    for (id, value, source) in observations {
        if !history.sent.contains_key(value.as_str()) && !value.starts_with("probe") {
            push(violation(
                "no-corruption",
                format!(
                    "{source} returned {} = {value:?}, which no producer sent",
                    show(id)
                ),
            ));
        }
        match value_of.get(&id) {
            Some(first) if *first != value => push(violation(
                "one-value-per-id",
                format!("{} was {first:?}, then {value:?} ({source})", show(id)),
            )),
            Some(_) => {}
            None => {
                value_of.insert(id, value);
            }
        }
    }
    // A value gets one ID: a producer's XADD is not applied twice.
    let mut id_of_value: BTreeMap<&String, Id> = BTreeMap::new();
    for (id, value) in &last.entries {
        if let Some(other) = id_of_value.insert(value, *id) {
            push(violation(
                "no-duplicate-entry",
                format!("{value:?} stored as {} and {}", show(other), show(*id)),
            ));
        }
    }

    // No lost write: every acknowledged XADD is in the stream (nothing
    // trims or deletes in this workload).
    for (producer, seq, value, id) in history.acknowledged.iter().filter(|_| promises.durability) {
        match stored.get(id) {
            Some(found) if *found == value => {}
            Some(found) => push(violation(
                "no-lost-write",
                format!(
                    "producer {producer} send {seq}: {} acknowledged with {value:?} holds {found:?}",
                    show(*id)
                ),
            )),
            None => push(violation(
                "no-lost-write",
                format!(
                    "producer {producer} send {seq}: acknowledged {} ({value:?}) is not in the stream",
                    show(*id)
                ),
            )),
        }
    }

    // `>` never delivers an ID twice (a delivery is durable before its
    // reply), and within one consumer session deliveries increase.
    let mut delivered_once: BTreeMap<Id, (&String, u64)> = BTreeMap::new();
    let mut last_in_session: BTreeMap<(&String, u64), Id> = BTreeMap::new();
    for (consumer, session, id, _) in &history.delivered {
        if let Some((first, first_session)) = delivered_once
            .insert(*id, (consumer, *session))
            .filter(|_| promises.durability)
        {
            push(violation(
                "new-entries-delivered-once",
                format!(
                    "{} delivered by '>' to {first} (session {first_session}) and again to {consumer} (session {session})",
                    show(*id)
                ),
            ));
        }
        if let Some(previous) = last_in_session.insert((consumer, *session), *id) {
            if previous >= *id {
                push(violation(
                    "deliveries-increase",
                    format!(
                        "{consumer} session {session}: {} after {}",
                        show(*id),
                        show(previous)
                    ),
                ));
            }
        }
    }

    // A claim moves ownership to the claimer and raises the delivery count
    // (to at least the deliveries the clients had seen when they asked).
    // Right after the claim
    // the entry may already be acknowledged (by a late XACK of its former
    // owner) or claimed again (by a consumer that claimed it too, or whose
    // claim's reply was lost); any other owner is a violation.
    for (id, claimer, owner, count, observed) in &history.claim_checks {
        if owner.is_empty() {
            continue;
        }
        if owner == claimer {
            if count < observed {
                let by_read: Vec<String> = history
                    .delivered
                    .iter()
                    .filter(|(_, _, delivered, _)| delivered == id)
                    .map(|(consumer, session, _, _)| format!("{consumer} (session {session})"))
                    .collect();
                let by_claim: Vec<&String> = history
                    .claimed
                    .iter()
                    .filter(|(_, ids)| ids.contains(id))
                    .map(|(consumer, _)| consumer)
                    .collect();
                push(violation(
                    "claim-raises-delivery-count",
                    format!(
                        "{} delivered {observed} times to clients before the check (by '>' to {by_read:?}, claimed by {by_claim:?}), delivery count {count}",
                        show(*id)
                    ),
                ));
            }
            continue;
        }
        let claimed_too = history
            .claimed
            .iter()
            .any(|(consumer, ids)| consumer == owner && ids.contains(id));
        if !claimed_too && !history.lost_claims.contains(owner) {
            push(violation(
                "claim-moves-ownership",
                format!("{} claimed by {claimer} is owned by {owner:?}", show(*id)),
            ));
        }
    }

    // The PEL names only entries that exist.
    for (id, owner, _) in &last.pending {
        if !stored.contains_key(id) {
            push(violation(
                "pel-entries-exist",
                format!("{} pending for {owner} is not in the stream", show(*id)),
            ));
        }
    }

    if liveness && promises.durability {
        // At-least-once: after healing, every acknowledged entry reached a
        // consumer, by `>` or by a claim. (Consumers process what they
        // receive, then XACK it; an XACK whose reply was lost may still have
        // run, so receipt is what counts.) Nothing stays pending.
        let received = received(history);
        for (producer, seq, value, id) in &history.acknowledged {
            if !received.contains(id) {
                push(violation(
                    "at-least-once",
                    format!(
                        "producer {producer} send {seq}: {} ({value:?}) never reached a consumer",
                        show(*id)
                    ),
                ));
            }
        }
        for (id, owner, count) in &last.pending {
            push(violation(
                "liveness",
                format!(
                    "{} still pending for {owner} (delivered {count} times) after healing",
                    show(*id)
                ),
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Promises = Promises {
        durability: true,
        liveness: true,
    };
    const SAFETY: Promises = Promises {
        durability: true,
        liveness: false,
    };

    #[test]
    fn after_detected_corruption_only_safety_is_checked() {
        let mut last = state();
        last.entries.remove(1);
        let relaxed = Promises {
            durability: false,
            liveness: false,
        };
        assert!(check(&history(), &last, relaxed).is_empty());
        last.entries[0].1 = "p0-\u{2}".into();
        assert!(names(&check(&history(), &last, relaxed)).contains(&"no-corruption"));
    }

    fn history() -> History {
        let mut history = History::default();
        for (seq, value) in ["p0-1", "p0-2", "p0-3"].iter().enumerate() {
            history.sent.insert((*value).into(), (0, seq as u64));
        }
        history.acknowledged = vec![
            (0, 0, "p0-1".into(), (1, 0)),
            (0, 1, "p0-2".into(), (2, 0)),
            (0, 2, "p0-3".into(), (3, 0)),
        ];
        history.delivered = vec![
            ("c0".into(), 0, (1, 0), "p0-1".into()),
            ("c0".into(), 0, (2, 0), "p0-2".into()),
            ("c1".into(), 0, (3, 0), "p0-3".into()),
        ];
        history.acked = vec![((1, 0), 1), ((2, 0), 1), ((3, 0), 1)];
        history
    }

    fn state() -> FinalState {
        FinalState {
            entries: vec![
                ((1, 0), "p0-1".into()),
                ((2, 0), "p0-2".into()),
                ((3, 0), "p0-3".into()),
            ],
            pending: Vec::new(),
        }
    }

    fn names(violations: &[Violation]) -> Vec<&'static str> {
        violations.iter().map(|found| found.invariant).collect()
    }

    #[test]
    fn a_correct_history_passes() {
        assert_eq!(check(&history(), &state(), ALL), vec![]);
    }

    #[test]
    fn a_lost_write_is_caught() {
        let mut last = state();
        last.entries.remove(1);
        assert!(names(&check(&history(), &last, SAFETY)).contains(&"no-lost-write"));
    }

    #[test]
    fn corruption_and_changed_values_are_caught() {
        let mut last = state();
        last.entries[0].1 = "p0-\u{1}".into();
        let found = names(&check(&history(), &last, SAFETY));
        assert!(found.contains(&"no-corruption"), "{found:?}");
        assert!(found.contains(&"one-value-per-id"), "{found:?}");
    }

    #[test]
    fn a_reused_id_is_caught() {
        let mut reused = history();
        reused.acknowledged[2].3 = (2, 0);
        let found = names(&check(&reused, &state(), SAFETY));
        assert!(found.contains(&"producer-order"), "{found:?}");
        assert!(found.contains(&"one-value-per-id"), "{found:?}");
    }

    #[test]
    fn a_redelivery_by_new_entries_read_is_caught() {
        let mut again = history();
        again
            .delivered
            .push(("c1".into(), 1, (2, 0), "p0-2".into()));
        assert!(names(&check(&again, &state(), SAFETY)).contains(&"new-entries-delivered-once"));
    }

    #[test]
    fn a_forgotten_pel_entry_is_caught_by_at_least_once() {
        let mut forgotten = history();
        forgotten.delivered.pop();
        let found = names(&check(&forgotten, &state(), ALL));
        assert!(found.contains(&"at-least-once"), "{found:?}");
    }

    #[test]
    fn pending_leftovers_fail_liveness_only_after_healing() {
        let mut last = state();
        last.pending.push(((3, 0), "c1".into(), 2));
        assert!(check(&history(), &last, SAFETY).is_empty());
        assert!(names(&check(&history(), &last, ALL)).contains(&"liveness"));
    }

    #[test]
    fn claims_that_leave_another_owner_or_the_count_are_caught() {
        let mut claimed = history();
        claimed
            .claim_checks
            .push(((3, 0), "c0".into(), "c1".into(), 1, 2));
        claimed
            .claim_checks
            .push(((2, 0), "c0".into(), "c0".into(), 2, 2));
        claimed
            .claim_checks
            .push(((1, 0), "c0".into(), String::new(), 0, 2));
        let found = names(&check(&claimed, &state(), SAFETY));
        assert_eq!(
            found,
            vec!["claim-moves-ownership"],
            "an acknowledged entry is not a violation"
        );
        claimed.lost_claims.insert("c1".into());
        assert!(
            check(&claimed, &state(), SAFETY).is_empty(),
            "c1's lost claim may have run"
        );
    }

    #[test]
    fn unordered_streams_are_caught() {
        let mut last = state();
        last.entries.swap(0, 1);
        assert!(names(&check(&history(), &last, SAFETY)).contains(&"ids-increase"));
    }
}

/// What the log engine's clients saw (topic partitions driven in process).
#[derive(Clone, Debug, Default)]
pub struct LogHistory {
    /// Every value a producer sent.
    pub sent: BTreeSet<String>,
    /// Appends whose result arrived: (partition, offset, value), in order.
    pub acknowledged: Vec<(u32, u64, String)>,
    /// Records a consumer read: (assignment, partition, offset, value), in
    /// order. An assignment lasts from a node start to its crash.
    pub read: Vec<(u64, u32, u64, String)>,
    /// Offset commits whose result arrived: (partition, next offset).
    pub committed: Vec<(u32, u64)>,
    /// The committed offset a consumer found when it started: (partition,
    /// offset, how many commits had been acknowledged before).
    pub committed_at_start: Vec<(u32, u64, usize)>,
    /// Partitions that a truncator cuts: their records are checked by
    /// [`check_truncated`], not here.
    pub truncated_partitions: BTreeSet<u32>,
    /// Acknowledged truncations: (partition, new end, how many appends had
    /// been acknowledged before).
    pub truncations: Vec<(u32, u64, usize)>,
    /// Truncations that failed (they may or may not have happened):
    /// (partition, end asked for rounded down to the start of the batch
    /// holding it (a cut never splits a batch), how many appends had been
    /// acknowledged before).
    pub uncertain_truncations: Vec<(u32, u64, usize)>,
    /// Where acknowledged appends of the truncated partitions began:
    /// (partition, base offset).
    pub batch_starts: BTreeSet<(u32, u64)>,
    /// Fetched records at or above the high watermark their own fetch
    /// response reported: (partition, offset, high watermark).
    pub above_high_watermark: Vec<(u32, u64, u64)>,
}

/// The log after healing: every partition read from its start, and the
/// group's committed offsets.
#[derive(Clone, Debug, Default)]
pub struct LogFinal {
    /// (partition, offset, value), partition by partition.
    pub records: Vec<(u32, u64, String)>,
    /// Committed offset per partition.
    pub committed: BTreeMap<u32, u64>,
    /// The first offset of each partition (above 0 where retention deleted
    /// segments).
    pub log_start: BTreeMap<u32, u64>,
}

/// Checks the log engine's promises (with `liveness` after healing).
pub fn check_log(history: &LogHistory, last: &LogFinal, liveness: bool) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut push = |found: Violation| {
        if violations
            .iter()
            .filter(|seen: &&Violation| seen.invariant == found.invariant)
            .count()
            < 3
        {
            violations.push(found);
        }
    };
    // One (partition, offset), one value, in every append result, read and
    // replay; every value is one a producer sent.
    let mut value_at: BTreeMap<(u32, u64), &String> = BTreeMap::new();
    let observations = history
        .acknowledged
        .iter()
        .map(|(partition, offset, value)| (*partition, *offset, value, "append result"))
        .chain(
            history
                .read
                .iter()
                .map(|(_, partition, offset, value)| (*partition, *offset, value, "consumer read")),
        )
        .chain(
            last.records
                .iter()
                .map(|(partition, offset, value)| (*partition, *offset, value, "final read")),
        );
    for (partition, offset, value, source) in observations {
        if history.truncated_partitions.contains(&partition) {
            continue;
        }
        if !history.sent.contains(value) {
            push(violation(
                "log-no-corruption",
                format!(
                    "{source} returned {partition}/{offset} = {value:?}, which no producer sent"
                ),
            ));
        }
        match value_at.get(&(partition, offset)) {
            Some(first) if *first != value => push(violation(
                "log-one-value-per-offset",
                format!("{partition}/{offset} was {first:?}, then {value:?} ({source})"),
            )),
            Some(_) => {}
            None => {
                value_at.insert((partition, offset), value);
            }
        }
    }
    // The final read: offsets from the log start without gaps, in order.
    let mut next: BTreeMap<u32, u64> = last.log_start.clone();
    for (partition, offset, _) in &last.records {
        let expected = next.entry(*partition).or_insert(0);
        if offset != expected {
            push(violation(
                "log-offsets-contiguous",
                format!("partition {partition}: offset {offset} where {expected} was expected"),
            ));
        }
        *expected = offset + 1;
    }
    // No lost write.
    let stored: BTreeMap<(u32, u64), &String> = last
        .records
        .iter()
        .map(|(partition, offset, value)| ((*partition, *offset), value))
        .collect();
    let start = |partition: &u32| last.log_start.get(partition).copied().unwrap_or(0);
    for (partition, offset, value) in &history.acknowledged {
        if history.truncated_partitions.contains(partition) || *offset < start(partition) {
            continue;
        }
        if !stored.contains_key(&(*partition, *offset)) {
            push(violation(
                "log-no-lost-write",
                format!("acknowledged {partition}/{offset} ({value:?}) is not in the log"),
            ));
        }
    }
    // Within one assignment (and between two resets to the log start after
    // retention), a consumer's reads of a partition go up by one.
    let mut position: BTreeMap<(u64, u32), u64> = BTreeMap::new();
    for (assignment, partition, offset, _) in &history.read {
        if let Some(previous) = position.insert((*assignment, *partition), *offset) {
            if *offset != previous + 1 {
                push(violation(
                    "log-reads-without-gaps",
                    format!(
                        "assignment {assignment}, partition {partition}: read {offset} after {previous}"
                    ),
                ));
            }
        }
    }
    // Per producer (a value is `<producer>-<sequence>`), acknowledged
    // offsets increase in the order the acknowledgements came: a retried
    // batch is never written after a later one.
    let mut last_ack: BTreeMap<(u32, &str), u64> = BTreeMap::new();
    for (partition, offset, value) in &history.acknowledged {
        if history.truncated_partitions.contains(partition) {
            continue;
        }
        let producer = value
            .rsplit_once('-')
            .map_or(value.as_str(), |(producer, _)| producer);
        if let Some(previous) = last_ack.insert((*partition, producer), *offset) {
            if *offset <= previous {
                push(violation(
                    "log-producer-order",
                    format!("{value:?} acknowledged at {partition}/{offset}, after {producer}'s previous record at {previous}"),
                ));
            }
        }
    }
    // A fetch returns only records below the high watermark it reports
    // (records not yet durable are never served).
    for (partition, offset, high_watermark) in &history.above_high_watermark {
        push(violation(
            "log-fetch-below-high-watermark",
            format!("a fetch of partition {partition} returned offset {offset} with a high watermark of {high_watermark}"),
        ));
    }
    // No record twice: an idempotent producer's retries are written once.
    let mut seen: BTreeMap<(u32, &String), u64> = BTreeMap::new();
    for (partition, offset, value) in &last.records {
        if history.truncated_partitions.contains(partition) {
            continue;
        }
        if let Some(first) = seen.insert((*partition, value), *offset) {
            push(violation(
                "log-no-duplicates",
                format!("{value:?} is in partition {partition} at {first} and at {offset}"),
            ));
        }
    }
    // Committed offsets never move backwards: a consumer starting after a
    // crash finds at least the last acknowledged commit, and so does the
    // final read.
    for (partition, seen, before) in &history.committed_at_start {
        let highest = history.committed[..*before]
            .iter()
            .filter(|(at, _)| at == partition)
            .map(|(_, offset)| *offset)
            .max()
            .unwrap_or(0);
        if *seen < highest {
            push(violation(
                "log-commits-never-go-back",
                format!("partition {partition}: a consumer started at committed offset {seen} after a commit of {highest} was acknowledged"),
            ));
        }
    }
    for (partition, offset) in &history.committed {
        let last_committed = last.committed.get(partition).copied().unwrap_or(0);
        if last_committed < *offset {
            push(violation(
                "log-commits-never-go-back",
                format!("partition {partition}: committed offset {last_committed} after a commit of {offset} was acknowledged"),
            ));
        }
    }
    if liveness {
        // At-least-once: every acknowledged record was read, and the
        // group's committed offset passed it.
        let read: BTreeSet<(u32, u64)> = history
            .read
            .iter()
            .map(|(_, partition, offset, _)| (*partition, *offset))
            .collect();
        for (partition, offset, value) in &history.acknowledged {
            if history.truncated_partitions.contains(partition) || *offset < start(partition) {
                continue;
            }
            let committed = last.committed.get(partition).copied().unwrap_or(0);
            if !read.contains(&(*partition, *offset)) || committed <= *offset {
                push(violation(
                    "log-at-least-once",
                    format!(
                        "acknowledged {partition}/{offset} ({value:?}) was not consumed (committed offset {committed})"
                    ),
                ));
            }
        }
    }
    violations
}

/// Checks a partition that is truncated while it is written: every
/// acknowledged append that no later acknowledged truncation removed is in
/// the final log at its offset; no record a truncation removed comes back;
/// offsets follow on from the log start.
pub fn check_truncated(history: &LogHistory, last: &LogFinal, partition: u32) -> Vec<Violation> {
    let mut violations = Vec::new();
    let (expected, removed) = after_truncations(history, partition);
    let stored: BTreeMap<u64, &String> = last
        .records
        .iter()
        .filter(|(at, _, _)| *at == partition)
        .map(|(_, offset, value)| (*offset, value))
        .collect();
    let start = last.log_start.get(&partition).copied().unwrap_or(0);
    for (offset, value) in &expected {
        if *offset >= start && stored.get(offset) != Some(value) {
            violations.push(violation(
                "log-truncation-keeps-the-rest",
                format!("partition {partition}: acknowledged {offset} ({value:?}) is {:?} after the truncations", stored.get(offset)),
            ));
        }
    }
    for (offset, value) in &stored {
        if removed.contains(value) && expected.get(offset) != Some(value) {
            violations.push(violation(
                "log-truncation-is-durable",
                format!("partition {partition}: {value:?}, removed by an acknowledged truncation, is back at {offset}"),
            ));
        }
    }
    let mut next = start;
    for offset in stored.keys() {
        if *offset != next {
            violations.push(violation(
                "log-offsets-contiguous",
                format!("partition {partition}: offset {offset} where {next} was expected after the truncations"),
            ));
            break;
        }
        next = offset + 1;
    }
    violations.truncate(3);
    violations
}

/// Replays a partition's acknowledged appends and truncations in the order
/// their results arrived: what must be in the log (offset → value), and
/// what an acknowledged truncation removed for good. A failed truncation
/// makes what it may have removed optional.
fn after_truncations(
    history: &LogHistory,
    partition: u32,
) -> (BTreeMap<u64, &String>, BTreeSet<&String>) {
    let mut cuts: Vec<(usize, u64, bool)> = history
        .truncations
        .iter()
        .map(|cut| (cut, true))
        .chain(history.uncertain_truncations.iter().map(|cut| (cut, false)))
        .filter(|((at, _, _), _)| *at == partition)
        .map(|((_, end, before), certain)| (*before, *end, certain))
        .collect();
    cuts.sort_by_key(|(before, _, _)| *before);
    let mut expected: BTreeMap<u64, &String> = BTreeMap::new();
    let mut removed: BTreeSet<&String> = BTreeSet::new();
    let mut cuts = cuts.into_iter().peekable();
    for index in 0..=history.acknowledged.len() {
        while let Some((_, end, certain)) = cuts.next_if(|(before, _, _)| *before <= index) {
            for (_, gone) in expected.split_off(&end) {
                if certain {
                    removed.insert(gone);
                }
            }
        }
        if let Some((at, offset, value)) = history.acknowledged.get(index) {
            if *at == partition {
                expected.insert(*offset, value);
            }
        }
    }
    (expected, removed)
}

/// Messages of the pub/sub workload.
#[derive(Clone, Debug, Default)]
pub struct PubSubHistory {
    /// Sequence numbers published (sent, whatever the reply), with the
    /// publisher's connection that sent each.
    pub published: BTreeMap<u64, u64>,
    /// Messages received: (subscription session, sequence number), in
    /// order.
    pub received: Vec<(u64, u64)>,
    /// Pushes on a subscribed connection that were not a message of the
    /// channel.
    pub garbled: Vec<String>,
}

/// Pub/sub delivers at most once, in publish order: within one
/// subscription, the messages of one publisher's connection arrive in the
/// order it sent them, each once, and every message received was
/// published. (Across a publisher's reconnection there is no order: a
/// request of the connection it gave up on may still arrive later.)
pub fn check_pubsub(history: &PubSubHistory) -> Vec<Violation> {
    let mut violations: Vec<Violation> = history
        .garbled
        .iter()
        .map(|push| {
            violation(
                "pubsub-no-invention",
                format!("a subscriber received {push}"),
            )
        })
        .collect();
    let mut last: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for (session, sequence) in &history.received {
        let Some(publisher) = history.published.get(sequence) else {
            violations.push(violation(
                "pubsub-no-invention",
                format!("message {sequence} received, never published"),
            ));
            continue;
        };
        if let Some(previous) = last.insert((*session, *publisher), *sequence) {
            if *sequence <= previous {
                violations.push(violation(
                    "pubsub-order",
                    format!("subscription {session}: message {sequence} after {previous}, both from publisher connection {publisher}"),
                ));
            }
        }
    }
    violations.truncate(3);
    violations
}

/// An entry a blocked reader woke up with was written before its reply
/// left (with `appendfsync always`, durably): it is in the final stream,
/// with its value.
pub fn check_watched(history: &History, last: &FinalState) -> Vec<Violation> {
    let stored: BTreeMap<Id, &String> = last
        .entries
        .iter()
        .map(|(id, value)| (*id, value))
        .collect();
    let mut violations = Vec::new();
    for (id, value) in &history.watched {
        if stored.get(id) != Some(&value) {
            violations.push(violation(
                "woken-reader-saw-durable-entries",
                format!(
                    "a blocked XREAD received {} = {value:?}, the stream has {:?}",
                    show(*id),
                    stored.get(id)
                ),
            ));
        }
    }
    violations.truncate(3);
    violations
}

#[cfg(test)]
mod extra_tests {
    use super::*;

    #[test]
    fn truncations_void_what_they_removed_and_nothing_else() {
        let mut history = LogHistory::default();
        history.truncated_partitions.insert(3);
        history.acknowledged = vec![(3, 0, "a".into()), (3, 1, "b".into()), (3, 2, "c".into())];
        history.truncations = vec![(3, 1, 3)];
        history.acknowledged.push((3, 1, "d".into()));
        let good = LogFinal {
            records: vec![(3, 0, "a".into()), (3, 1, "d".into())],
            ..LogFinal::default()
        };
        assert!(check_truncated(&history, &good, 3).is_empty());
        let resurrected = LogFinal {
            records: vec![(3, 0, "a".into()), (3, 1, "d".into()), (3, 2, "c".into())],
            ..LogFinal::default()
        };
        let found = check_truncated(&history, &resurrected, 3);
        assert_eq!(found[0].invariant, "log-truncation-is-durable");
        let lost = LogFinal {
            records: vec![(3, 0, "a".into())],
            ..LogFinal::default()
        };
        assert_eq!(
            check_truncated(&history, &lost, 3)[0].invariant,
            "log-truncation-keeps-the-rest"
        );
    }

    #[test]
    fn a_failed_truncation_makes_what_it_may_have_cut_optional() {
        let history = LogHistory {
            acknowledged: vec![(3, 0, "a".into()), (3, 1, "b".into())],
            uncertain_truncations: vec![(3, 1, 2)],
            ..LogHistory::default()
        };
        for records in [
            vec![(3, 0, "a".into())],
            vec![(3, 0, "a".into()), (3, 1, "b".into())],
        ] {
            let last = LogFinal {
                records,
                ..LogFinal::default()
            };
            assert!(check_truncated(&history, &last, 3).is_empty());
        }
        let gap = LogFinal {
            records: vec![(3, 1, "b".into())],
            ..LogFinal::default()
        };
        assert!(!check_truncated(&history, &gap, 3).is_empty());
    }

    #[test]
    fn producer_order_and_duplicates_are_caught() {
        let sent = ["k0-a-1", "k0-a-2", "k0-b-1"];
        let history = LogHistory {
            sent: sent.iter().map(|value| value.to_string()).collect(),
            acknowledged: vec![
                (0, 1, "k0-a-1".into()),
                (0, 0, "k0-b-1".into()),
                (0, 2, "k0-a-2".into()),
            ],
            ..LogHistory::default()
        };
        let last = LogFinal {
            records: vec![
                (0, 0, "k0-b-1".into()),
                (0, 1, "k0-a-1".into()),
                (0, 2, "k0-a-2".into()),
            ],
            ..LogFinal::default()
        };
        assert!(
            check_log(&history, &last, false).is_empty(),
            "two producers interleaved"
        );
        let mut reordered = history.clone();
        reordered.acknowledged[2].1 = 0;
        let names: Vec<_> = check_log(&reordered, &last, false)
            .iter()
            .map(|found| found.invariant)
            .collect();
        assert!(names.contains(&"log-producer-order"), "{names:?}");
        let mut early = history.clone();
        early.above_high_watermark.push((0, 2, 2));
        let names: Vec<_> = check_log(&early, &last, false)
            .iter()
            .map(|found| found.invariant)
            .collect();
        assert!(
            names.contains(&"log-fetch-below-high-watermark"),
            "{names:?}"
        );
        let mut twice = last.clone();
        twice.records.push((0, 3, "k0-a-1".into()));
        let names: Vec<_> = check_log(&history, &twice, false)
            .iter()
            .map(|found| found.invariant)
            .collect();
        assert!(names.contains(&"log-no-duplicates"), "{names:?}");
    }

    #[test]
    fn commits_going_back_are_caught() {
        let history = LogHistory {
            committed: vec![(0, 5)],
            committed_at_start: vec![(0, 3, 1)],
            ..LogHistory::default()
        };
        let found = check_log(&history, &LogFinal::default(), false);
        assert!(
            found
                .iter()
                .any(|found| found.invariant == "log-commits-never-go-back"),
            "{found:?}"
        );
    }

    #[test]
    fn pubsub_out_of_order_and_invented_messages_are_caught() {
        let history = PubSubHistory {
            published: [(1, 1), (2, 1), (3, 1)].into_iter().collect(),
            received: vec![(1, 1), (1, 3), (1, 2), (2, 9)],
            garbled: Vec::new(),
        };
        let found: Vec<_> = check_pubsub(&history)
            .iter()
            .map(|found| found.invariant)
            .collect();
        assert!(
            found.contains(&"pubsub-order") && found.contains(&"pubsub-no-invention"),
            "{found:?}"
        );
    }

    #[test]
    fn a_woken_reader_that_saw_a_lost_entry_is_caught() {
        let history = History {
            watched: vec![((1, 0), "a".into())],
            ..History::default()
        };
        assert!(check_watched(&history, &FinalState::default()).len() == 1);
        let last = FinalState {
            entries: vec![((1, 0), "a".into())],
            ..FinalState::default()
        };
        assert!(check_watched(&history, &last).is_empty());
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    fn history() -> LogHistory {
        let mut history = LogHistory::default();
        for value in ["a", "b", "c"] {
            history.sent.insert(value.into());
        }
        history.acknowledged = vec![(0, 0, "a".into()), (0, 1, "b".into()), (1, 0, "c".into())];
        history.read = vec![
            (1, 0, 0, "a".into()),
            (1, 0, 1, "b".into()),
            (1, 1, 0, "c".into()),
        ];
        history.committed = vec![(0, 2), (1, 1)];
        history
    }

    fn last() -> LogFinal {
        LogFinal {
            records: vec![(0, 0, "a".into()), (0, 1, "b".into()), (1, 0, "c".into())],
            committed: [(0, 2), (1, 1)].into_iter().collect(),
            log_start: BTreeMap::new(),
        }
    }

    fn names(violations: &[Violation]) -> Vec<&'static str> {
        violations.iter().map(|found| found.invariant).collect()
    }

    #[test]
    fn a_correct_log_history_passes() {
        assert_eq!(check_log(&history(), &last(), true), vec![]);
    }

    #[test]
    fn lost_changed_and_gapped_records_are_caught() {
        let mut lost = last();
        lost.records.remove(1);
        let found = names(&check_log(&history(), &lost, false));
        assert!(found.contains(&"log-no-lost-write"), "{found:?}");
        let mut changed = last();
        changed.records[0].2 = "b".into();
        let found = names(&check_log(&history(), &changed, false));
        assert!(found.contains(&"log-one-value-per-offset"), "{found:?}");
        let mut gap = history();
        gap.read.remove(1);
        gap.read.push((1, 0, 2, "b".into()));
        let found = names(&check_log(&gap, &last(), false));
        assert!(found.contains(&"log-reads-without-gaps"), "{found:?}");
    }

    #[test]
    fn unconsumed_records_fail_at_least_once() {
        let mut behind = last();
        behind.committed.insert(0, 1);
        let mut history = history();
        history.committed = vec![(0, 1), (1, 1)];
        let found = names(&check_log(&history, &behind, true));
        assert!(found.contains(&"log-at-least-once"), "{found:?}");
        assert!(check_log(&history, &behind, false).is_empty());
    }
}
