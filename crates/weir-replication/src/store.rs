//! The Raft log of one partition.
//!
//! The partition's segment log holds the data: each data entry is one Kafka
//! batch, whose base offset the leader assigned and whose leader epoch is
//! the entry's term, so a record keeps its offset on every replica and
//! through every failover. A small side file, `raft-log`, holds what the
//! segment log cannot:
//!
//! - for each entry its index, term and the offsets it covers (`start..end`,
//!   empty for raft's own entries), so that the index ↔ offset mapping is
//!   read, never computed from counts;
//! - raft's own entries in full (the empty entry of a new leader,
//!   configuration changes): they take no Kafka offset;
//! - the hard state (term, vote, commit), the applied index and the
//!   configuration, as records whose last valid one wins.
//!
//! ```text
//! record   u32 body length | u32 CRC-32C of the body | body
//! entry    u8 1 | u64 index, term, start, end | u8 entry type | u8 data? |
//!          (own entries:) u32 n | data | u32 n | context
//! state    u8 2 | u64 term, vote, commit, applied | conf state (as in codec)
//! start    u8 3 | u64 index, term, offset | u8 reset | conf state
//! claim    u8 4 | u64 magic, term, vote, index, index term
//! repair   u8 5 | u64 term, index   (0, 0: repaired)
//! ```
//!
//! A *claim* begins the first write after a sync: what that sync made
//! durable (the term and vote; under flush `always` the last entry, its
//! batch with it). It is evidence that does not need itself to be
//! durable: a claim that survives a crash, even past a bad record, tells
//! recovery what had been synced, so that a record lost to corruption is
//! not mistaken for a torn write. A replica that finds it lost synced
//! entries (a claim the log no longer holds, or a segment log that cut
//! corrupt synced batches) records a *repair* point: its last entry before
//! the loss. Until its log is back at or past that point (by Raft's
//! order: term, then index), it neither campaigns nor votes for a log
//! behind it, since it may have acknowledged what it lost.
//!
//! A start record compacts the log: the entries up to its index are gone
//! (their records before its offset deleted by retention, or, with
//! `reset`, replaced by a leader's snapshot), and the configuration at
//! its index is the one it holds. A state record whose applied index is
//! a configuration change's holds the configuration right after it, so
//! the configuration at any index a compaction may stop at is known.
//!
//! On open, a torn tail of the side file is cut, and the two files are
//! brought to agree: side-file entries whose batches the segment log lost
//! (never synced) are dropped, and batches past the last entry (written by
//! a leader, never made stable) are truncated. Neither can have been
//! acknowledged: a node answers only after both files are synced.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState,
    Snapshot,
};
use raft::{GetEntriesContext, RaftState, StorageError};
use weir_io::{File, OpenMode, Storage};

use crate::confchange::encode_conf_change;
use weir_log::batch::{crc32c, BatchHeader};
use weir_log::FlushPolicy;
use weir_log::{Isolation, LogError, Partition};

/// The side file's name in the group's directory.
pub const SIDE_FILE: &str = "raft-log";
const ENTRY_RECORD: u8 = 1;
const STATE_RECORD: u8 = 2;
const START_RECORD: u8 = 3;
const CLAIM_RECORD: u8 = 4;
const REPAIR_RECORD: u8 = 5;
/// Marks a claim record, which recovery looks for past a bad record.
const CLAIM_MAGIC: u64 = 0x6d69_616c_6372_6965;
const CLAIM_BODY_BYTES: usize = 1 + 8 * 5;
const RECORD_HEADER_BYTES: usize = 8;
/// Bytes read from the segment log at once when entries are fetched.
const READ_CHUNK_BYTES: u32 = 1 << 20;
/// Bytes of compacted entries' records from which the side file is
/// rewritten without them (when they are also over half of it).
pub const REWRITE_MIN_BYTES: u64 = 4 << 20;
/// Bytes of recent batches a log keeps for its followers at most.
const RECENT_BYTES_MAX: usize = 8 << 20;

/// Why the Raft log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The side file or the state could not be read or written.
    #[error("raft log I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The segment log refused an operation.
    #[error("segment log: {0}")]
    Log(#[from] LogError),
    /// The files disagree in a way no crash explains.
    #[error("raft log corrupt: {0}")]
    Corrupt(String),
}

/// What the side file records of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EntryMeta {
    term: u64,
    /// Offsets of the records of a data entry; `start == end` for raft's own.
    start: u64,
    end: u64,
    /// Raft's own entries, kept whole (type, data, context).
    own: Option<(EntryType, Vec<u8>, Vec<u8>)>,
}

/// The state records: raft's hard state, the applied index, the
/// configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistedState {
    /// Term, vote and commit.
    pub hard: HardState,
    /// Every entry up to this index has been applied.
    pub applied: u64,
    /// The configuration after the last applied change.
    pub conf: ConfState,
}

/// A batch a leader wrote to its segment log when it proposed it, before
/// raft handed the entry back to be persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderWrite {
    /// The term (epoch) it was written in.
    pub term: u64,
    /// Its first offset.
    pub start: u64,
    /// The offset after its last record.
    pub end: u64,
}

/// What a sync made durable, claimed by the next write ([`SIDE_FILE`]'s
/// claim records).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Claim {
    term: u64,
    vote: u64,
    /// The last entry synced with its batch (0: none claimed).
    index: u64,
    index_term: u64,
}

/// A replica's last entry before it lost synced entries, which it may
/// have acknowledged: ordered as Raft orders logs (term, then index).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RepairPoint {
    /// The entry's term.
    pub term: u64,
    /// Its index.
    pub index: u64,
}

/// What one [`RaftLog::scrub`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scrubbed {
    /// A batch that reads corrupt, by its first offset.
    pub corrupt: Option<u64>,
    /// Bytes read.
    pub bytes: u64,
    /// It reached the log's end (or the log is empty, or the read failed).
    pub pass_done: bool,
}

/// Where a compacted log begins: the entries up to `index` are gone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogStart {
    /// The last entry compacted away (0: none).
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The offset after its records: where the log's records begin.
    pub offset: u64,
    /// The configuration after it.
    pub conf: ConfState,
    /// The log was replaced by a leader's snapshot: none of the
    /// partition's records before `offset` are this log's.
    pub reset: bool,
}

/// The Raft log of one partition: raft's [`raft::Storage`] over a
/// [`Partition`] and the side file.
#[derive(Debug)]
pub struct RaftLog {
    /// The directory of the side file.
    dir: Arc<dyn Storage>,
    partition: Arc<Partition>,
    file: Arc<dyn File>,
    file_len: u64,
    /// Where each entry's record starts in the side file.
    positions: Vec<u64>,
    entries: Vec<EntryMeta>,
    state: PersistedState,
    /// Offset where the log's entries begin (the log start when created).
    base_offset: u64,
    /// What compaction removed (entries hold `start.index + 1` on).
    start: LogStart,
    /// The configuration right after each applied configuration change
    /// past `start.index`, by the change's index.
    confs: Vec<(u64, ConfState)>,
    unsynced: bool,
    /// Entries written and not yet synced (synced under flush `always`).
    entries_unsynced: bool,
    /// A term or vote written and not yet synced (synced whatever the
    /// flush policy: Raft's safety rests on them).
    vote_unsynced: bool,
    /// The batches of the last data entries persisted, by index (in
    /// order, without gaps), so that appends to followers are sent without
    /// reading them back; the owner forgets those every follower has.
    recent: VecDeque<(u64, Bytes)>,
    recent_bytes: usize,
    /// See [`REWRITE_MIN_BYTES`].
    rewrite_min_bytes: u64,
    /// Side-file rewrites since the log was opened.
    rewrites: u64,
    /// The newest claim read when the log was opened.
    claim: Option<Claim>,
    /// The claim the next write begins with (a sync ran since the last).
    pending_claim: Option<Claim>,
    /// Where the side file's valid records ended when it was read, if
    /// bytes followed (cut once the claims past them were read).
    torn_at: Option<u64>,
    /// See [`RaftLog::repair`].
    repair: Option<RepairPoint>,
    /// Where the next [`RaftLog::scrub`] reads.
    scrub_cursor: u64,
}

/// What a [`RaftLog`] needs synced to make its writes as durable as its
/// flush policy asks: the files, to sync from any thread (several groups'
/// syncs may run at once), then [`RaftLog::synced`].
#[derive(Clone, Debug, Default)]
pub struct SyncPlan {
    partition: Option<Arc<Partition>>,
    side: Option<Arc<dyn File>>,
}

impl SyncPlan {
    /// Nothing to sync.
    pub fn is_empty(&self) -> bool {
        self.partition.is_none() && self.side.is_none()
    }

    /// Syncs the segment log, then the side file (whose entries name the
    /// segment log's batches).
    pub fn run(&self) -> Result<(), StoreError> {
        if let Some(partition) = &self.partition {
            partition.sync()?;
        }
        if let Some(side) = &self.side {
            side.sync()?;
        }
        Ok(())
    }
}

impl RaftLog {
    /// Opens (or creates, with `voters` as the first configuration) the Raft
    /// log in `dir` over `partition`, bringing the two to agree.
    pub fn open(
        dir: Arc<dyn Storage>,
        partition: Arc<Partition>,
        voters: &[u64],
    ) -> Result<Self, StoreError> {
        let file = dir.open_file(SIDE_FILE, OpenMode::CreateIfMissing)?;
        let bytes = read_side_file(file.as_ref())?;
        let created = bytes.is_empty();
        let mut log = Self {
            dir: Arc::clone(&dir),
            base_offset: partition.log_start_offset(),
            start: LogStart::default(),
            confs: Vec::new(),
            partition,
            file,
            file_len: 0,
            positions: Vec::new(),
            entries: Vec::new(),
            state: PersistedState::default(),
            unsynced: false,
            entries_unsynced: false,
            vote_unsynced: false,
            recent: VecDeque::new(),
            recent_bytes: 0,
            rewrite_min_bytes: REWRITE_MIN_BYTES,
            rewrites: 0,
            claim: None,
            pending_claim: None,
            torn_at: None,
            repair: None,
            scrub_cursor: 0,
        };
        log.replay(&bytes)?;
        if created {
            if log.partition.log_end_offset() > log.partition.log_start_offset() {
                return Err(StoreError::Corrupt(
                    "the partition has records but no raft log: not a replica's".into(),
                ));
            }
            log.bootstrap(voters)?;
            dir.sync_dir()?;
        }
        log.reconcile_start()?;
        log.recover_synced(&bytes)?;
        log.reconcile()?;
        log.end_repair_if_caught_up()?;
        log.check()?;
        Ok(log)
    }

    /// Starts a new group's log. With `voters`, as an original member: the
    /// configuration goes into the log as one committed entry per voter
    /// (term 1, no offsets), written alike by every original member, so that
    /// a node that joins later learns it by applying the log from the
    /// start. Without, as a joining node: an empty log and configuration.
    fn bootstrap(&mut self, voters: &[u64]) -> Result<(), StoreError> {
        let entries: Vec<Entry> = voters
            .iter()
            .enumerate()
            .map(|(position, voter)| {
                let change = ConfChangeV2 {
                    changes: vec![ConfChangeSingle {
                        change_type: ConfChangeType::AddNode,
                        node_id: *voter,
                        ..ConfChangeSingle::default()
                    }]
                    .into(),
                    ..ConfChangeV2::default()
                };
                Entry {
                    entry_type: EntryType::EntryConfChangeV2,
                    term: 1,
                    index: position as u64 + 1,
                    data: encode_conf_change(&change).into(),
                    ..Entry::default()
                }
            })
            .collect();
        self.append(&entries, &mut std::collections::VecDeque::new())?;
        let count = entries.len() as u64;
        let mut state = PersistedState {
            applied: count,
            ..PersistedState::default()
        };
        if count > 0 {
            state.hard.term = 1;
            state.hard.commit = count;
            state.conf.voters = voters.to_vec();
        }
        self.state = state;
        self.note_conf();
        self.write_state()?;
        // The founding configuration is durable whatever the flush policy.
        self.vote_unsynced = true;
        self.sync()
    }

    /// Reads the side file's records, cutting a torn tail.
    fn replay(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut position = 0usize;
        while let Some((body, next)) = next_record(bytes, position) {
            match body.first() {
                Some(&ENTRY_RECORD) => {
                    let (index, meta) = decode_entry(body)?;
                    if index > self.last_index_() + 1 {
                        // A whole record of a later entry where the next
                        // one belongs: a write misdirected back over the
                        // records here, which happened to land on a
                        // record's start. The valid records end here, as
                        // at a bad one (claims past it tell what was lost).
                        break;
                    }
                    if self.entries.is_empty() && self.start.index == 0 {
                        self.base_offset = meta.start;
                        if index != 1 {
                            return Err(StoreError::Corrupt(format!(
                                "first entry has index {index}, not 1"
                            )));
                        }
                    }
                    self.push_meta(index, meta, position as u64)?;
                }
                Some(&STATE_RECORD) => {
                    self.state = decode_state(body)?;
                    self.raise_state_to_start();
                    self.note_conf();
                }
                Some(&START_RECORD) => {
                    let start = decode_start(body)?;
                    if start.reset {
                        // What was claimed before is replaced.
                        self.claim = None;
                    }
                    self.apply_start(start)?;
                }
                Some(&CLAIM_RECORD) => self.claim = Some(decode_claim(body)?),
                Some(&REPAIR_RECORD) => self.repair = decode_repair(body)?,
                _ => return Err(StoreError::Corrupt("unknown record kind".into())),
            }
            position = next;
        }
        if position < bytes.len() {
            if let Some(claim) = last_claim_after(bytes, position) {
                // Written after every valid record: the newest.
                self.claim = Some(claim);
            }
            self.torn_at = Some(position as u64);
        }
        self.file_len = position as u64;
        Ok(())
    }

    /// Did this replica lose what it had synced? The newest claim (which
    /// may lie past a bad record) against what the two files kept, and
    /// the segment log's own verdict ([`Partition::synced_data_cut`]).
    /// A lost term or vote is taken back from the claim; lost entries
    /// start a repair, recorded before the side file loses the evidence
    /// (the file is rewritten whole). Otherwise a torn tail is cut.
    fn recover_synced(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let claim = self.claim.unwrap_or_default();
        let restored = self.restore_vote(&claim);
        let log_end = self.partition.log_end_offset();
        let keep = self.entries.partition_point(|meta| meta.end <= log_end);
        let kept_last = self.index_of(keep) - 1;
        let mut lost = None;
        if claim.index > self.start.index
            && (claim.index > kept_last || self.term_of(claim.index) != Some(claim.index_term))
        {
            lost = Some(RepairPoint {
                term: claim.index_term,
                index: claim.index,
            });
        }
        if self.partition.synced_data_cut().is_some() && keep < self.entries.len() {
            let last = self.last_index_();
            let point = RepairPoint {
                term: self.term_of(last).expect("the last entry"),
                index: last,
            };
            lost = lost.max(Some(point));
        }
        match lost {
            Some(point) => self.begin_repair(point, keep, bytes)?,
            None => {
                if let Some(at) = self.torn_at.take() {
                    tracing::warn!(
                        valid = at,
                        cut = bytes.len() as u64 - at,
                        "raft log: cutting a torn tail of the side file"
                    );
                    self.file.set_len(at)?;
                    self.file.sync()?;
                }
                if restored {
                    self.write_state()?;
                    self.vote_unsynced = true;
                    self.sync()?;
                }
            }
        }
        Ok(())
    }

    /// Takes back a term or vote a claim shows was synced and the side
    /// file lost (a vote forgotten could be given twice in one term).
    fn restore_vote(&mut self, claim: &Claim) -> bool {
        let hard = &mut self.state.hard;
        let lost_term = claim.term > hard.term;
        let lost_vote = claim.term == hard.term && hard.vote == 0 && claim.vote != 0;
        if lost_term || lost_vote {
            tracing::error!(
                term = claim.term,
                vote = claim.vote,
                "raft log: a synced term or vote was lost to corruption; restored"
            );
            hard.term = claim.term;
            hard.vote = claim.vote;
        }
        lost_term || lost_vote
    }

    /// Drops the entries from position `keep` on (their batches are gone
    /// or corrupt) and records the repair point, in one atomic rewrite of
    /// the side file: its valid records before the first entry dropped,
    /// then the state and the repair record.
    fn begin_repair(
        &mut self,
        point: RepairPoint,
        keep: usize,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let valid_end = self.file_len;
        let cut = self.positions.get(keep).copied().unwrap_or(valid_end);
        tracing::error!(
            term = point.term,
            index = point.index,
            kept = self.index_of(keep) - 1,
            "raft log: synced entries lost to corruption; repairing from the leader"
        );
        self.entries.truncate(keep);
        self.positions.truncate(keep);
        let last = self.last_index_();
        self.confs.retain(|(index, _)| *index <= last);
        self.state.hard.commit = self.state.hard.commit.min(last);
        self.state.applied = self.state.applied.min(last);
        self.repair = Some(point);
        let cut = usize::try_from(cut).expect("in memory").min(bytes.len());
        let mut new = bytes[..cut].to_vec();
        encode_state(&self.state, &mut new);
        encode_repair(self.repair, &mut new);
        self.write_side_file_checked(&new)?;
        self.file = self.dir.open_file(SIDE_FILE, OpenMode::Existing)?;
        self.file_len = new.len() as u64;
        self.torn_at = None;
        (self.unsynced, self.vote_unsynced) = (false, false);
        Ok(())
    }

    /// Writes the side file whole and reads it back: the repair point it
    /// ends with is what keeps this replica from electing a leader that
    /// lacks the entries it lost, and a disk that stores a write wrong
    /// (bits flipped, or the write put elsewhere) would leave a tail that
    /// the next open cuts as torn, repair point and all (cluster seed 330:
    /// the replica, no longer repairing, was elected without three
    /// committed entries). Written again, up to three times, until it reads
    /// back as written; an error after that.
    fn write_side_file_checked(&self, bytes: &[u8]) -> Result<(), StoreError> {
        for attempt in 1..=3 {
            weir_io::write_file_atomically(self.dir.as_ref(), SIDE_FILE, bytes)?;
            let back = weir_io::read_whole_file_agreed(self.dir.as_ref(), SIDE_FILE)?;
            if back.as_deref() == Some(bytes) {
                return Ok(());
            }
            tracing::error!(
                attempt,
                "raft log: the side file read back wrong: written again"
            );
        }
        Err(StoreError::Corrupt(
            "the side file read back wrong three times after it was written".into(),
        ))
    }

    /// Where a read found a corrupt batch (at or after this offset), once:
    /// any read of the partition, of entries for a follower or a
    /// consumer's fetch ([`Partition::take_corrupt_read`]).
    pub fn take_suspect(&self) -> Option<u64> {
        self.partition.take_corrupt_read()
    }

    /// Reads the next `budget` bytes of the partition's batches from where
    /// the last scrub stopped (from the log start again after the end),
    /// every CRC checked as every read does, so that rot is found before a
    /// follower or a consumer needs the records, and before a second
    /// replica rots. Returns the offset of a batch that reads corrupt. A
    /// read that fails otherwise (the disk) is left to the next pass.
    pub fn scrub(&mut self, budget: u32) -> Result<Scrubbed, StoreError> {
        let mut scrubbed = Scrubbed::default();
        // A read stops at its segment's end: read on to the budget.
        while scrubbed.bytes < u64::from(budget) && !scrubbed.pass_done {
            let left = budget - u32::try_from(scrubbed.bytes).expect("below the budget");
            let step = self.scrub_step(left)?;
            scrubbed.bytes += step.bytes;
            scrubbed.pass_done = step.pass_done;
            if step.corrupt.is_some() {
                scrubbed.corrupt = step.corrupt;
                break;
            }
        }
        Ok(scrubbed)
    }

    fn scrub_step(&mut self, budget: u32) -> Result<Scrubbed, StoreError> {
        let (start, end) = (
            self.partition.log_start_offset(),
            self.partition.log_end_offset(),
        );
        if self.scrub_cursor < start || self.scrub_cursor >= end {
            self.scrub_cursor = start;
        }
        let mut scrubbed = Scrubbed {
            pass_done: start == end,
            ..Scrubbed::default()
        };
        if start == end {
            return Ok(scrubbed);
        }
        match self
            .partition
            .read_with(self.scrub_cursor, budget, Isolation::Uncommitted)
        {
            Ok(read) => {
                self.scrub_cursor = read.info.next_offset;
                scrubbed.bytes = read.stored_bytes().len() as u64;
                scrubbed.pass_done = self.scrub_cursor >= end || scrubbed.bytes == 0;
            }
            Err(LogError::Corrupt { .. }) => {
                scrubbed.corrupt = self.locate_corruption(self.scrub_cursor)?;
                // Found nothing: the next read goes on past it.
                scrubbed.pass_done = scrubbed.corrupt.is_none();
            }
            Err(error) => {
                tracing::debug!(%error, "scrub read failed; tried again next pass");
                self.scrub_cursor = start;
                scrubbed.pass_done = true;
            }
        }
        Ok(scrubbed)
    }

    /// The first batch at or after `from` that reads corrupt, searched one
    /// batch at a time over at most two read chunks: `None` if they all
    /// read whole (the failure was not theirs) or a read fails otherwise.
    pub fn locate_corruption(&self, from: u64) -> Result<Option<u64>, StoreError> {
        // From the first offset of the entry holding `from` (a consumer's
        // read may have asked for one inside a batch).
        let holding = self.entries.partition_point(|meta| meta.end <= from);
        let from = self
            .entries
            .get(holding)
            .map_or(from, |meta| meta.start.min(from));
        let mut at = from.max(self.partition.log_start_offset());
        let mut bytes = 0u64;
        while at < self.partition.log_end_offset() && bytes < 2 * u64::from(READ_CHUNK_BYTES) {
            match self.partition.read_with(at, 1, Isolation::Uncommitted) {
                Ok(read) if read.info.next_offset > at => {
                    bytes += read.stored_bytes().len() as u64;
                    at = read.info.next_offset;
                }
                Ok(_) => return Ok(None),
                Err(LogError::Corrupt { .. }) => return Ok(Some(at)),
                Err(error) => {
                    // Retention went past it, or the disk failed the read:
                    // a later pass looks again.
                    tracing::debug!(at, %error, "looking for a corrupt batch stopped");
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Cuts the log at the batch holding `offset`, which reads corrupt:
    /// its entry and every later one go, the side file rewritten whole
    /// with the repair point first, then the partition truncated (a crash
    /// between is finished by the next open's reconcile). The group is
    /// then reopened over the log, and gets the entries back from the
    /// leader. Records before the log's first entry (compacted, kept
    /// until retention deletes them) cannot come back: they are deleted.
    pub fn cut_for_repair(&mut self, offset: u64) -> Result<(), StoreError> {
        // A batch before it in its segment may have been written wrong
        // after the scrub passed it: the cut reads up to its point, so it
        // is cut there.
        let offset = match self.partition.first_corrupt_batch_up_to(offset)? {
            Some(earlier) if earlier < offset => {
                tracing::error!(
                    offset,
                    earlier,
                    "an earlier batch reads corrupt too: cut there"
                );
                earlier
            }
            _ => offset,
        };
        if offset < self.base_offset {
            tracing::error!(offset, "a compacted record reads corrupt: deleted");
            self.partition.delete_before(self.base_offset)?;
            return Ok(());
        }
        let keep = self.entries.partition_point(|meta| meta.end <= offset);
        if keep == self.entries.len() {
            return Ok(());
        }
        let last = self.last_index_();
        let point = RepairPoint {
            term: self.term_of(last).expect("the last entry"),
            index: last,
        };
        let (keep, bytes) = self.side_file_kept(keep)?;
        let first_lost = self.entries[keep].start;
        while !self.recent.is_empty() {
            self.forget_first();
        }
        self.begin_repair(self.repair.max(Some(point)).expect("a point"), keep, &bytes)?;
        self.partition.truncate(first_lost)?;
        // After the cut: the two files end together.
        assert_eq!(self.end_offset(), self.partition.log_end_offset());
        Ok(())
    }

    /// The side file's bytes before the record of entry `keep`, and how
    /// many entries they hold. The records before the cut must read back
    /// whole: one written wrong (a disk that stored it wrong while the
    /// batches rotted) would end the file there at the next open, cutting
    /// off the repair point written after it as a torn tail, and the
    /// replica would vote as if it had lost nothing (cluster seed 330:
    /// elected without three committed entries). The entries from the
    /// first record that does not read whole are cut too.
    fn side_file_kept(&self, keep: usize) -> Result<(usize, Vec<u8>), StoreError> {
        let cut = usize::try_from(self.positions[keep]).expect("in memory");
        let mut bytes = weir_io::read_agreed(self.file.as_ref(), 0, cut)?;
        let valid = valid_records_end(&bytes);
        if valid == bytes.len() {
            return Ok((keep, bytes));
        }
        let whole = self
            .positions
            .partition_point(|position| *position < valid as u64);
        tracing::error!(
            valid,
            cut,
            entries = keep - whole.min(keep),
            "raft log: side-file records before the cut read corrupt: cut there too"
        );
        let keep = keep.min(whole);
        bytes.truncate(valid);
        // After the read: what is kept reads whole.
        assert_eq!(valid_records_end(&bytes), bytes.len());
        Ok((keep, bytes))
    }

    /// The directory of the side file.
    pub fn dir(&self) -> &Arc<dyn Storage> {
        &self.dir
    }

    /// The last entry this replica had before it lost synced entries to
    /// corruption, while its log is behind it: until then it may lack
    /// entries it acknowledged, so it must not campaign, nor vote for a
    /// log behind this point.
    pub fn repair(&self) -> Option<RepairPoint> {
        self.repair
    }

    /// Gives up a repair that cannot happen (no other replica holds the
    /// entries): what was lost stays lost, as a torn tail would.
    pub fn abandon_repair(&mut self) -> Result<(), StoreError> {
        if let Some(point) = self.repair.take() {
            tracing::error!(
                term = point.term,
                index = point.index,
                from_offset = self.end_offset(),
                "raft log: records lost to corruption, with no other replica to restore them"
            );
            let mut record = Vec::new();
            encode_repair(None, &mut record);
            self.write_records(&record)?;
            self.sync()?;
        }
        Ok(())
    }

    /// Ends a repair once the log is back at or past its point; returns
    /// whether it ended.
    pub fn end_repair_if_caught_up(&mut self) -> Result<bool, StoreError> {
        let Some(point) = self.repair else {
            return Ok(false);
        };
        let last = self.last_index_();
        let now = RepairPoint {
            term: self.term_of(last).unwrap_or(0),
            index: last,
        };
        if now < point {
            return Ok(false);
        }
        tracing::info!(term = point.term, index = point.index, "raft log: repaired");
        self.repair = None;
        let mut record = Vec::new();
        encode_repair(None, &mut record);
        self.write_records(&record)?;
        Ok(true)
    }

    fn push_meta(&mut self, index: u64, meta: EntryMeta, position: u64) -> Result<(), StoreError> {
        let expected = self.last_index_() + 1;
        if index != expected || meta.start != self.end_offset() || meta.end < meta.start {
            return Err(StoreError::Corrupt(format!(
                "entry {index} (offsets {}..{}) does not follow entry {} ending at offset {}",
                meta.start,
                meta.end,
                expected - 1,
                self.end_offset()
            )));
        }
        self.entries.push(meta);
        self.positions.push(position);
        Ok(())
    }

    /// Drops the entries a start record compacted away.
    fn apply_start(&mut self, start: LogStart) -> Result<(), StoreError> {
        if start.index < self.start.index {
            // An older start (a rewritten side file copies the records
            // after the first entry kept, older starts among them).
            return Ok(());
        }
        if start.reset || start.index >= self.last_index_() {
            self.entries.clear();
            self.positions.clear();
        } else {
            let found = (self.term_of(start.index), self.end_offset_at(start.index));
            if found != (Some(start.term), start.offset) {
                return Err(StoreError::Corrupt(format!(
                    "compacted through entry {} (term {}, offset {}), which the log has as {found:?}",
                    start.index, start.term, start.offset
                )));
            }
            let drop = usize::try_from(start.index - self.start.index).expect("in memory");
            self.entries.drain(..drop);
            self.positions.drain(..drop);
        }
        self.confs.retain(|(index, _)| *index > start.index);
        self.base_offset = start.offset;
        self.start = start;
        self.raise_state_to_start();
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| *at <= self.start.index)
        {
            self.forget_first();
        }
        Ok(())
    }

    /// What is compacted was committed and applied: a state record read
    /// before the start record (a snapshot's state record may not have
    /// followed its start record before a crash; a rewritten file puts
    /// older state records after the start) is brought up to it.
    fn raise_state_to_start(&mut self) {
        let (state, start) = (&mut self.state, &self.start);
        state.hard.commit = state.hard.commit.max(start.index);
        if state.applied < start.index {
            state.applied = start.index;
            state.conf = start.conf.clone();
        }
        if state.hard.term < start.term {
            // No vote of this node in the snapshot's term was ever
            // persisted, so none was ever sent.
            state.hard.term = start.term;
            state.hard.vote = 0;
        }
    }

    /// Keeps the configuration of a state record whose applied index is a
    /// configuration change's: the configuration right after it.
    fn note_conf(&mut self) {
        let applied = self.state.applied;
        let is_change = self
            .meta(applied)
            .is_some_and(|meta| matches!(meta.own, Some((EntryType::EntryConfChangeV2, _, _))));
        if is_change && self.confs.last().is_none_or(|(index, _)| *index < applied) {
            self.confs.push((applied, self.state.conf.clone()));
        }
    }

    /// The configuration right after entry `index` (at or after the log's
    /// start, applied), if known.
    fn conf_at(&self, index: u64) -> Option<ConfState> {
        let last_change = (self.start.index + 1..=index).rev().find(|at| {
            self.meta(*at)
                .is_some_and(|meta| matches!(meta.own, Some((EntryType::EntryConfChangeV2, _, _))))
        });
        match last_change {
            None => Some(self.start.conf.clone()),
            Some(change) => self
                .confs
                .iter()
                .find(|(at, _)| *at == change)
                .map(|(_, conf)| conf.clone()),
        }
    }

    /// Where the log begins.
    pub fn log_start(&self) -> &LogStart {
        &self.start
    }

    /// Compacts the log through the last applied entry whose records end
    /// at or before `offset` (and whose configuration is known), durably,
    /// so that the partition's records before the new start may be
    /// deleted. Returns the new start, or `None` if it did not move.
    pub fn compact_to(&mut self, offset: u64) -> Result<Option<LogStart>, StoreError> {
        let applied = self.state.applied.min(self.last_index_());
        let applied_entries = usize::try_from(applied - self.start.index).expect("in memory");
        // Entries' end offsets never decrease: the last one ending by
        // `offset` is found by bisection (the log may hold millions).
        let ending_by = self.entries[..applied_entries].partition_point(|meta| meta.end <= offset);
        let index = self.start.index + ending_by as u64;
        if index <= self.start.index {
            return Ok(None);
        }
        let Some(conf) = self.conf_at(index) else {
            tracing::debug!(
                index,
                "compaction waits: configuration at the index unknown"
            );
            return Ok(None);
        };
        let start = LogStart {
            index,
            term: self.term_of(index).expect("an entry in the log"),
            offset: self.end_offset_at(index),
            conf,
            reset: false,
        };
        // Before the partition's records go: the start record is durable.
        self.write_start(&start)?;
        self.apply_start(start.clone())?;
        self.rewrite_if_mostly_compacted()?;
        Ok(Some(start))
    }

    /// Sets [`REWRITE_MIN_BYTES`] for this log.
    pub fn set_rewrite_min_bytes(&mut self, bytes: u64) {
        self.rewrite_min_bytes = bytes;
    }

    /// How many times the side file was rewritten since the log opened.
    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// Rewrites the side file without the records before the first entry
    /// kept (compacted entries, superseded state and start records) once
    /// they are at least the threshold and most of the file: the start
    /// and the state, then the kept records as they are. Atomic (a
    /// temporary file synced, renamed over it, the directory synced): a
    /// crash leaves the old file or the new one, which replay alike.
    fn rewrite_if_mostly_compacted(&mut self) -> Result<(), StoreError> {
        let dead = self.positions.first().copied().unwrap_or(self.file_len);
        let live = self.file_len - dead;
        if dead < self.rewrite_min_bytes || dead <= live {
            return Ok(());
        }
        let tail = weir_io::read_agreed(self.file.as_ref(), dead, live as usize)?;
        // Before the copy: the kept records are whole and valid.
        if valid_records_end(&tail) != tail.len() {
            return Err(StoreError::Corrupt(format!(
                "side-file records after byte {dead} do not read back whole"
            )));
        }
        let mut bytes = Vec::with_capacity(tail.len() + 256);
        encode_start(&self.start, &mut bytes);
        encode_state(&self.state, &mut bytes);
        let head = bytes.len() as u64;
        bytes.extend_from_slice(&tail);
        weir_io::write_file_atomically(self.dir.as_ref(), SIDE_FILE, &bytes)?;
        self.file = self.dir.open_file(SIDE_FILE, OpenMode::Existing)?;
        self.file_len = bytes.len() as u64;
        for position in &mut self.positions {
            *position = *position - dead + head;
        }
        // The new file is synced whole (the segment log's own sync is
        // still owed if it was).
        (self.unsynced, self.vote_unsynced) = (false, false);
        self.rewrites += 1;
        tracing::debug!(dead, live, "raft log: side file rewritten");
        Ok(())
    }

    fn write_start(&mut self, start: &LogStart) -> Result<(), StoreError> {
        let mut record = Vec::new();
        encode_start(start, &mut record);
        self.write_records(&record)?;
        self.file.sync()?;
        Ok(())
    }

    /// Replaces the log with a leader's snapshot: the entries up to its
    /// index are committed on a majority, and this log lacks or
    /// contradicts them, so every entry and record goes, and the partition
    /// restarts empty at the snapshot's offset. Durable when it returns.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<LogStart, StoreError> {
        let metadata = snapshot.get_metadata();
        let offset = decode_snapshot_data(&snapshot.data)?;
        // Before: raft hands over only a snapshot past what is committed.
        assert!(
            metadata.index > self.state.hard.commit,
            "snapshot at {} below commit {}",
            metadata.index,
            self.state.hard.commit
        );
        let start = LogStart {
            index: metadata.index,
            term: metadata.term,
            offset,
            conf: metadata.get_conf_state().clone(),
            reset: true,
        };
        while !self.recent.is_empty() {
            self.forget_first();
        }
        self.write_start(&start)?;
        self.apply_start(start.clone())?;
        // apply_start made the state follow: commit and applied at the
        // snapshot, its configuration.
        assert_eq!(
            (self.state.hard.commit, self.state.applied),
            (start.index, start.index)
        );
        self.vote_unsynced = true;
        self.write_state()?;
        self.sync()?;
        self.partition.reset_to(offset)?;
        self.rewrite_if_mostly_compacted()?;
        // After: the log and the partition begin and end at the offset.
        assert_eq!(self.end_offset(), self.partition.log_end_offset());
        Ok(start)
    }

    /// The snapshot a follower behind the log's start is sent: the start
    /// itself (the records before it are gone everywhere it matters).
    fn start_snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            data: encode_snapshot_data(self.start.offset).into(),
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = self.start.index;
        metadata.term = self.start.term;
        metadata.set_conf_state(self.start.conf.clone());
        snapshot
    }

    /// Brings the side file and the segment log to agree after a crash.
    /// Writes to the two files that were not synced may survive in one and
    /// not the other (a disk keeps unsynced writes in any order), so the
    /// side file may name batches the segment log lost, or a commit index
    /// past the entries kept. Neither was acknowledged to anyone by this
    /// node: its messages leave only after both files are synced. The
    /// committed entries it lost are on a majority, and come back from the
    /// leader.
    fn reconcile(&mut self) -> Result<(), StoreError> {
        let log_end = self.partition.log_end_offset();
        let keep = self.entries.partition_point(|meta| meta.end <= log_end);
        if keep < self.entries.len() {
            let first_lost = self.index_of(keep);
            tracing::warn!(
                first_lost,
                log_end,
                "raft log: dropping entries the segment log lost"
            );
            self.truncate_side(first_lost)?;
        }
        let end = self.end_offset();
        let log_start = self.partition.log_start_offset();
        if end < log_start {
            // Rot cut the side file back before the segment log's start
            // (a start record of a compaction or a snapshot lost with the
            // records after it): no entry kept describes a record the
            // segment log holds. It goes back to empty at the end of the
            // entries kept; the leader sends the rest again.
            tracing::error!(
                end,
                log_start,
                "raft log: the entries kept end before the segment log's start: emptied there"
            );
            self.partition.restart_at(end)?;
        } else if self.partition.log_end_offset() > end {
            tracing::warn!(end, "raft log: truncating batches never made stable");
            self.partition.truncate(end)?;
        }
        // After: the segment log ends where the entries kept end.
        assert_eq!(self.partition.log_end_offset(), end);
        let last = self.last_index_();
        if self.state.hard.commit > last || self.state.applied > last {
            tracing::warn!(
                commit = self.state.hard.commit,
                applied = self.state.applied,
                last,
                "raft log: commit index past the entries kept; lowered"
            );
            self.state.hard.commit = self.state.hard.commit.min(last);
            self.state.applied = self.state.applied.min(last);
            self.write_state()?;
        }
        Ok(())
    }

    /// A partition holding records before the log's start: left by a
    /// crash between a start record and the deletion that followed it
    /// (kept: they are this log's, and retention deletes them next), or
    /// between a snapshot's start record and the partition's reset (which
    /// is finished: those records may contradict the leader's).
    fn reconcile_start(&mut self) -> Result<(), StoreError> {
        let offset = self.base_offset;
        let partition = &self.partition;
        let behind = partition.log_end_offset() < offset;
        if partition.log_start_offset() < offset && (self.start.reset || behind) {
            if self.entries.iter().any(|meta| meta.end > meta.start) {
                return Err(StoreError::Corrupt(format!(
                    "entries after a reset at offset {offset}, the partition starting at {}",
                    partition.log_start_offset()
                )));
            }
            tracing::warn!(
                offset,
                "raft log: finishing the partition's reset to its start"
            );
            partition.reset_to(offset)?;
        }
        Ok(())
    }

    /// Checks what must hold between the two files.
    pub fn check(&self) -> Result<(), StoreError> {
        let last = self.last_index_();
        if self.state.hard.commit > last {
            return Err(StoreError::Corrupt(format!(
                "commit {} past the last entry {last}",
                self.state.hard.commit
            )));
        }
        if self.end_offset() != self.partition.log_end_offset() {
            return Err(StoreError::Corrupt(format!(
                "entries end at offset {}, the segment log at {}",
                self.end_offset(),
                self.partition.log_end_offset()
            )));
        }
        Ok(())
    }

    /// The partition.
    pub fn partition(&self) -> &Arc<Partition> {
        &self.partition
    }

    /// The persisted state.
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// The index of the last entry.
    pub fn last_index_(&self) -> u64 {
        self.start.index + self.entries.len() as u64
    }

    fn index_of(&self, position: usize) -> u64 {
        self.start.index + position as u64 + 1
    }

    fn meta(&self, index: u64) -> Option<&EntryMeta> {
        let position = usize::try_from(index.checked_sub(self.start.index + 1)?).ok()?;
        self.entries.get(position)
    }

    /// The term of the entry at `index`, if the log holds it (or it is
    /// the last one compacted away).
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.start.index {
            return Some(self.start.term);
        }
        self.meta(index).map(|meta| meta.term)
    }

    /// The offset after the records of entries up to `index` (included);
    /// the log's first offset for an index compacted away.
    pub fn end_offset_at(&self, index: u64) -> u64 {
        if index <= self.start.index {
            return self.base_offset;
        }
        self.meta(index).map_or(self.end_offset(), |meta| meta.end)
    }

    /// The offset after the last entry's records.
    pub fn end_offset(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.base_offset, |meta| meta.end)
    }

    /// The terms and offset ranges of data entries from `index` on: what a
    /// checker compares between replicas.
    pub fn data_entries(&self) -> Vec<(u64, u64, u64, u64)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, meta)| meta.own.is_none())
            .map(|(position, meta)| (self.index_of(position), meta.term, meta.start, meta.end))
            .collect()
    }

    /// Persists `entries` (handed out by raft's ready), replacing any
    /// entries at or after the first one's index. Data entries the leader
    /// already wrote (`written`, in order) are only recorded; others are
    /// appended to the segment log as the leader stamped them.
    pub fn append(
        &mut self,
        entries: &[Entry],
        written: &mut std::collections::VecDeque<LeaderWrite>,
    ) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert!(
            first.index > self.start.index && first.index <= self.last_index_() + 1,
            "entries from {} after a log ending at {}",
            first.index,
            self.last_index_()
        );
        if first.index <= self.last_index_() {
            assert!(
                first.index > self.state.hard.commit,
                "raft replaced committed entry {} (commit {})",
                first.index,
                self.state.hard.commit
            );
            self.truncate_side(first.index)?;
        }
        // The claim goes first in the same write: the entries' positions
        // are taken after it.
        let mut records = Vec::new();
        if let Some(claim) = self.pending_claim.take() {
            encode_claim(&claim, &mut records);
        }
        for entry in entries {
            let meta = self.persist_entry(entry, written)?;
            let position = self.file_len + records.len() as u64;
            encode_entry(entry.index, &meta, &mut records);
            if meta.own.is_none() {
                self.remember(entry.index, entry.data.clone());
            }
            self.push_meta(entry.index, meta, position)?;
        }
        self.entries_unsynced = true;
        self.write_records(&records)
    }

    fn persist_entry(
        &mut self,
        entry: &Entry,
        written: &mut std::collections::VecDeque<LeaderWrite>,
    ) -> Result<EntryMeta, StoreError> {
        let start = self.end_offset();
        if !is_data(entry) {
            return Ok(EntryMeta {
                term: entry.term,
                start,
                end: start,
                own: Some((
                    entry.entry_type,
                    entry.data.to_vec(),
                    entry.context.to_vec(),
                )),
            });
        }
        let header = BatchHeader::parse(&entry.data).map_err(LogError::from)?;
        let end = header.next_offset();
        // Before the write: the batch continues the log's offsets and was
        // stamped with the entry's term.
        assert_eq!(
            header.base_offset, start,
            "entry {} does not continue the offsets",
            entry.index
        );
        assert_eq!(
            u64::try_from(header.leader_epoch).ok(),
            Some(entry.term),
            "entry {} stamped with another epoch than its term",
            entry.index
        );
        let mine = LeaderWrite {
            term: entry.term,
            start,
            end,
        };
        if written.front() == Some(&mine) {
            written.pop_front();
        } else {
            written.clear();
            if self.partition.log_end_offset() > start {
                self.partition.truncate(start)?;
            }
            // The wire codec checked the batch whole before raft saw it.
            let info = self.partition.append_replicated_verified(&entry.data)?;
            assert_eq!((info.base_offset, info.last_offset + 1), (start, end));
        }
        Ok(EntryMeta {
            term: entry.term,
            start,
            end,
            own: None,
        })
    }

    /// Drops entries from `index` on, in the side file and the segment log.
    fn truncate_side(&mut self, index: u64) -> Result<(), StoreError> {
        assert!(index > self.start.index, "entry {index} compacted away");
        let position = usize::try_from(index - self.start.index - 1).expect("an index in memory");
        let cut_at = self.positions[position];
        let offset = self.entries[position].start;
        while self.recent.back().is_some_and(|(at, _)| *at >= index) {
            self.forget_last();
        }
        self.entries.truncate(position);
        self.positions.truncate(position);
        self.file.set_len(cut_at)?;
        self.file_len = cut_at;
        if self.partition.log_end_offset() > offset {
            self.partition.truncate(offset)?;
        }
        // The state records after the cut went with it: write it again.
        self.write_state()?;
        Ok(())
    }

    /// Records the hard state, the applied index and the configuration
    /// (durable at the next [`RaftLog::sync`]).
    pub fn set_state(&mut self, state: PersistedState) -> Result<(), StoreError> {
        assert!(
            state.hard.term >= self.state.hard.term,
            "term moved back from {} to {}",
            self.state.hard.term,
            state.hard.term
        );
        assert!(state.applied <= state.hard.commit.max(self.state.applied));
        if state == self.state {
            return Ok(());
        }
        let (hard, old) = (&state.hard, &self.state.hard);
        self.vote_unsynced |= hard.term != old.term || hard.vote != old.vote;
        self.state = state;
        self.note_conf();
        self.write_state()
    }

    fn write_state(&mut self) -> Result<(), StoreError> {
        let mut record = Vec::new();
        encode_state(&self.state, &mut record);
        self.write_records(&record)
    }

    fn write_records(&mut self, records: &[u8]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(claim) = self.pending_claim.take() {
            // One write with the records it precedes (none of their
            // positions is kept: `append` puts it first itself).
            let mut with_claim = Vec::with_capacity(records.len() + 64);
            encode_claim(&claim, &mut with_claim);
            with_claim.extend_from_slice(records);
            return self.write_records(&with_claim);
        }
        self.file.write_at(records, self.file_len)?;
        self.file_len += records.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Makes what was persisted durable as the partition's flush policy
    /// asks: with `always`, everything (the segment log, then the side
    /// file); otherwise only a new term or vote (with the side file's
    /// records before it), and entries when the partition's own flush
    /// comes: a replica then acknowledges entries its disk may lose in a
    /// power loss, as Kafka's brokers do by default (see GUARANTEES.md).
    ///
    /// Under `always`, a state record that only moves the commit or
    /// applied index is synced too: the owner of the metadata log rebuilds
    /// its view from the applied index at start (and drops the topics that
    /// view lacks), so that index must not move back. (The cluster
    /// simulator caught a version that left those records unsynced: a
    /// node restarted with an older view, dropped a topic and took it
    /// again empty.)
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let plan = self.sync_plan();
        plan.run()?;
        self.synced(&plan);
        Ok(())
    }

    /// The syncs [`RaftLog::sync`] would do, to run elsewhere; nothing may
    /// be written to this log until [`RaftLog::synced`].
    pub fn sync_plan(&self) -> SyncPlan {
        let durable_data = self.partition.config().flush == FlushPolicy::Always;
        // Entries written since the last sync wrote the segment log too
        // (a truncation there leaves its durable mark where it was, so
        // that mark alone does not tell).
        let partition = durable_data
            && (self.entries_unsynced
                || self.partition.durable_offset() < self.partition.log_end_offset());
        let side = self.unsynced && (durable_data || self.vote_unsynced);
        SyncPlan {
            partition: partition.then(|| Arc::clone(&self.partition)),
            side: side.then(|| Arc::clone(&self.file)),
        }
    }

    /// Records that `plan`, taken from this log, has run.
    pub fn synced(&mut self, plan: &SyncPlan) {
        if plan.side.is_some() {
            self.unsynced = false;
            self.entries_unsynced = false;
            self.vote_unsynced = false;
            self.pending_claim = Some(self.claim_now());
        }
        // After the sync, under `always`: every entry's batch is durable.
        debug_assert!(
            plan.partition.is_none() || self.partition.durable_offset() >= self.end_offset(),
            "a synced log whose entries' batches are not durable"
        );
    }

    /// What is durable right after a sync of both files: the term and
    /// vote, and under flush `always` the last entry with its batch.
    fn claim_now(&self) -> Claim {
        let durable_data = self.partition.config().flush == FlushPolicy::Always;
        let index = if durable_data { self.last_index_() } else { 0 };
        Claim {
            term: self.state.hard.term,
            vote: self.state.hard.vote,
            index,
            index_term: self.term_of(index).unwrap_or(0),
        }
    }

    /// Entries `low..high`, up to `max_size` bytes (at least one); data
    /// entries with their batches read from the segment log when
    /// `with_batches`, without (empty data) otherwise.
    fn entries_from(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
        with_batches: bool,
    ) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        let mut size = 0u64;
        let mut chunk: Option<Chunk> = None;
        for index in low..high {
            let meta = self.meta(index).expect("an index below the last");
            let mut entry = Entry {
                term: meta.term,
                index,
                ..Entry::default()
            };
            match &meta.own {
                Some((entry_type, data, context)) => {
                    entry.entry_type = *entry_type;
                    entry.data = data.clone().into();
                    entry.context = context.clone().into();
                }
                None if with_batches => {
                    entry.data = match self.recent_batch(index) {
                        Some(batch) => batch,
                        None => self.batch_at(meta, &mut chunk)?.into(),
                    }
                }
                None => {}
            }
            size += entry.data.len() as u64 + 24;
            if !out.is_empty() && max_size.is_some_and(|max| size > max) {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Keeps a data entry's batch for appends to followers, within
    /// [`RECENT_BYTES_MAX`].
    fn remember(&mut self, index: u64, batch: Bytes) {
        if self
            .recent
            .back()
            .is_some_and(|(last, _)| *last + 1 != index)
        {
            // Raft's own entries between: the kept ones stay in order
            // without gaps, so start again.
            while !self.recent.is_empty() {
                self.forget_first();
            }
        }
        self.recent_bytes += batch.len();
        self.recent.push_back((index, batch));
        while self.recent_bytes > RECENT_BYTES_MAX {
            self.forget_first();
        }
    }

    fn forget_first(&mut self) {
        if let Some((_, batch)) = self.recent.pop_front() {
            self.recent_bytes -= batch.len();
        }
    }

    fn forget_last(&mut self) {
        if let Some((_, batch)) = self.recent.pop_back() {
            self.recent_bytes -= batch.len();
        }
    }

    /// Forgets the batches kept of entries below `index` (every follower
    /// has them).
    pub fn forget_below(&mut self, index: u64) {
        while self.recent.front().is_some_and(|(at, _)| *at < index) {
            self.forget_first();
        }
    }

    /// The kept batch of entry `index`, if kept.
    fn recent_batch(&self, index: u64) -> Option<Bytes> {
        let (first, _) = self.recent.front()?;
        let position = usize::try_from(index.checked_sub(*first)?).ok()?;
        let (at, batch) = self.recent.get(position)?;
        // After the lookup: the kept batch is the entry's.
        assert_eq!(*at, index, "kept batches out of order");
        Some(batch.clone())
    }

    /// The stored batch of a data entry, read in chunks of several batches.
    fn batch_at(&self, meta: &EntryMeta, chunk: &mut Option<Chunk>) -> Result<Vec<u8>, LogError> {
        for attempt in 0..2 {
            if let Some(found) = chunk.as_mut().and_then(|chunk| chunk.take(meta.start)) {
                let header = BatchHeader::parse(&found).expect("a batch checked when read");
                // After the read: the batch is the entry's.
                assert_eq!(
                    (
                        header.next_offset(),
                        u64::try_from(header.leader_epoch).ok()
                    ),
                    (meta.end, Some(meta.term)),
                    "the batch at offset {} is not the entry's",
                    meta.start
                );
                return Ok(found);
            }
            assert_eq!(attempt, 0, "batch at offset {} not found", meta.start);
            let read =
                self.partition
                    .read_with(meta.start, READ_CHUNK_BYTES, Isolation::Uncommitted)?;
            *chunk = Some(Chunk { read, position: 0 });
        }
        unreachable!("the second attempt returns or panics")
    }
}

/// Stored batches read for consecutive entries, and where the next
/// entry's batch is looked for: each batch of the chunk is parsed once
/// however many entries it serves (looking from the chunk's start for
/// every entry made a follower's catch-up over small batches quadratic:
/// cluster seed 330 spent its time parsing and checksumming them).
struct Chunk {
    read: weir_log::ReadResult,
    /// Byte position of the first stored batch not yet passed.
    position: usize,
}

impl Chunk {
    /// The bytes of the batch starting at offset `start`, if the chunk
    /// holds it at or after its position (which moves past it).
    fn take(&mut self, start: u64) -> Option<Vec<u8>> {
        let bytes = &self.read.stored_bytes()[self.position..];
        let mut batches = weir_log::frame::stored_batches(bytes);
        while let Some(Ok(stored)) = batches.next() {
            let base = stored.batch.header().base_offset;
            if base > start {
                return None;
            }
            if base == start {
                let found = stored.batch.bytes().to_vec();
                self.position += batches.position();
                return Some(found);
            }
        }
        None
    }
}

/// Whether an entry carries a Kafka batch (raft's own entries do not).
pub fn is_data(entry: &Entry) -> bool {
    entry.entry_type == EntryType::EntryNormal && !entry.data.is_empty()
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.state.hard.clone(),
            self.state.conf.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.start.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last_index_() + 1,
            "entries up to {high} asked of a log ending at {}",
            self.last_index_()
        );
        // Only appends to followers carry the batches. Raft's other reads
        // (the committed entries handed over to apply, its checks for
        // configuration changes) look at indexes, terms and types, and
        // weir applies a data entry without its batch (the records are in
        // the segment log already): reading the batches back for them
        // would cost a read and a CRC check of every byte committed. Raft
        // also sizes committed entries to limit uncommitted bytes, a limit
        // weir leaves off (`max_uncommitted_size`).
        let with_batches = context.can_async();
        // Only these reads touch the disk. One that fails (an I/O error, a
        // batch that fails its checksum) leaves the follower waiting, and
        // the leader tries again at its next heartbeat: raft takes any
        // other error for a broken log and panics.
        self.entries_from(low, high, max_size.into(), with_batches)
            .map_err(|error| {
                // A corrupt batch is noted by the partition for the owner
                // to cut and repair ([`RaftLog::take_suspect`]).
                tracing::warn!(low, high, %error, "reading entries for a follower failed; retried later");
                raft::Error::Store(StorageError::LogTemporarilyUnavailable)
            })
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.start.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.start.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_())
    }

    /// The log's start, for follower `to`. A follower added after the
    /// start (a new replica) is not in the configuration there, and raft
    /// refuses a snapshot that does not name it: it is named as a learner,
    /// which changes nothing it does (a learner neither votes nor
    /// campaigns) until the entry that added it, applied after, makes
    /// its configuration the others' (adding a learner twice is nothing).
    fn snapshot(&self, _request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if self.start.index == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = self.start_snapshot();
        let conf = snapshot.mut_metadata().mut_conf_state();
        let named = [
            &conf.voters,
            &conf.learners,
            &conf.voters_outgoing,
            &conf.learners_next,
        ]
        .iter()
        .any(|ids| ids.contains(&to));
        if !named {
            conf.learners.push(to);
        }
        Ok(snapshot)
    }
}

/// What a side file holds, read without changing it (`weir inspect raft`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SideFileReport {
    /// The last valid state record.
    pub state: Option<PersistedState>,
    /// Entries, and how many of them are raft's own (no offsets).
    pub entries: u64,
    /// Raft's own entries among them.
    pub own_entries: u64,
    /// Each term (leader epoch) in the log: its first index and the first
    /// offset of its records.
    pub terms: Vec<(u64, u64, u64)>,
    /// The offset after the last entry's records.
    pub end_offset: u64,
    /// Bytes after the last valid record (a torn tail, or corruption).
    pub invalid_tail_bytes: u64,
    /// Why reading stopped early, if a valid record broke the file's rules.
    pub problem: Option<String>,
    /// The last start record: the log was compacted through this entry.
    pub start: Option<LogStart>,
    /// The last repair record's point, if a repair is under way.
    pub repair: Option<RepairPoint>,
}

/// Reads a side file's bytes as [`RaftLog::open`] would, without cutting
/// or changing anything.
pub fn inspect_side_file(bytes: &[u8]) -> SideFileReport {
    let mut report = SideFileReport::default();
    let mut position = 0usize;
    let mut last_index = 0u64;
    while let Some((body, next)) = next_record(bytes, position) {
        let outcome = match body.first() {
            Some(&ENTRY_RECORD) => decode_entry(body).map(|(index, meta)| {
                if index != last_index + 1 || (last_index > 0 && meta.start != report.end_offset) {
                    report.problem =
                        Some(format!("entry {index} does not follow entry {last_index}"));
                }
                if report
                    .terms
                    .last()
                    .is_none_or(|(term, _, _)| *term != meta.term)
                {
                    report.terms.push((meta.term, index, meta.start));
                }
                report.entries += 1;
                report.own_entries += u64::from(meta.own.is_some());
                report.end_offset = meta.end;
                last_index = index;
            }),
            Some(&STATE_RECORD) => decode_state(body).map(|state| report.state = Some(state)),
            Some(&START_RECORD) => decode_start(body).map(|start| {
                if start.index >= last_index || start.reset {
                    last_index = start.index;
                    report.end_offset = start.offset;
                }
                report.start = Some(start);
            }),
            Some(&CLAIM_RECORD) => decode_claim(body).map(|_| ()),
            Some(&REPAIR_RECORD) => decode_repair(body).map(|point| report.repair = point),
            _ => Err(StoreError::Corrupt("unknown record kind".into())),
        };
        if let Err(error) = outcome {
            report.problem = Some(error.to_string());
        }
        if report.problem.is_some() {
            break;
        }
        position = next;
    }
    report.invalid_tail_bytes = (bytes.len() - position) as u64;
    report
}

/// Reads the side file whole for [`RaftLog::open`] to judge. Bytes that
/// do not end in a whole valid record, or a read that failed, are read
/// again by the agreement rule ([`weir_io::read_agreed`], which retries
/// failed reads) before they are judged: `replay` cuts what follows the
/// last valid record as a torn tail, and a read that flipped a bit would
/// have it cut synced records (the vote, entries this node acknowledged)
/// for good.
fn read_side_file(file: &dyn File) -> std::io::Result<Vec<u8>> {
    let length = usize::try_from(file.len()?).expect("a side file fits in memory");
    let mut bytes = vec![0; length];
    if let Ok(read) = file.read_at(&mut bytes, 0) {
        bytes.truncate(read);
        if valid_records_end(&bytes) == bytes.len() {
            return Ok(bytes);
        }
    }
    weir_io::read_agreed(file, 0, length)
}

/// Where the side file's whole records with a valid CRC end.
fn valid_records_end(bytes: &[u8]) -> usize {
    let mut position = 0;
    while let Some((_, next)) = next_record(bytes, position) {
        position = next;
    }
    position
}

fn next_record(bytes: &[u8], position: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(position..position + RECORD_HEADER_BYTES)?;
    let length = u32::from_le_bytes(header[..4].try_into().expect("four bytes")) as usize;
    // Every record's body begins with its kind. An empty one is a run of
    // zeros (the CRC of nothing is 0): bytes never written, as a write
    // that landed past the end leaves, not a record.
    if length == 0 {
        return None;
    }
    let crc = u32::from_le_bytes(header[4..].try_into().expect("four bytes"));
    let start = position + RECORD_HEADER_BYTES;
    let body = bytes.get(start..start.checked_add(length)?)?;
    (crc32c(body) == crc).then_some((body, start + length))
}

fn frame_record(body: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(body.len()).expect("a side-file record below 4 GiB");
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

fn entry_type_byte(entry_type: EntryType) -> u8 {
    match entry_type {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn encode_entry(index: u64, meta: &EntryMeta, out: &mut Vec<u8>) {
    let mut body = vec![ENTRY_RECORD];
    for value in [index, meta.term, meta.start, meta.end] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    match &meta.own {
        None => body.extend_from_slice(&[0, 0]),
        Some((entry_type, data, context)) => {
            body.extend_from_slice(&[entry_type_byte(*entry_type), 1]);
            for bytes in [data, context] {
                let length = u32::try_from(bytes.len()).expect("an own entry below 4 GiB");
                body.extend_from_slice(&length.to_le_bytes());
                body.extend_from_slice(bytes);
            }
        }
    }
    frame_record(&body, out);
}

fn encode_state(state: &PersistedState, out: &mut Vec<u8>) {
    let mut body = vec![STATE_RECORD];
    for value in [
        state.hard.term,
        state.hard.vote,
        state.hard.commit,
        state.applied,
    ] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    encode_conf(&state.conf, &mut body);
    frame_record(&body, out);
}

fn encode_conf(conf: &ConfState, body: &mut Vec<u8>) {
    for ids in [
        &conf.voters,
        &conf.learners,
        &conf.voters_outgoing,
        &conf.learners_next,
    ] {
        let count = u32::try_from(ids.len()).expect("fewer than 4 G nodes");
        body.extend_from_slice(&count.to_le_bytes());
        for id in ids {
            body.extend_from_slice(&id.to_le_bytes());
        }
    }
    body.push(u8::from(conf.auto_leave));
}

fn encode_start(start: &LogStart, out: &mut Vec<u8>) {
    let mut body = vec![START_RECORD];
    for value in [start.index, start.term, start.offset] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    body.push(u8::from(start.reset));
    encode_conf(&start.conf, &mut body);
    frame_record(&body, out);
}

/// A snapshot's data: a version byte, then the offset where the log's
/// records begin.
fn encode_snapshot_data(offset: u64) -> Vec<u8> {
    let mut data = vec![1];
    data.extend_from_slice(&offset.to_le_bytes());
    data
}

fn decode_snapshot_data(data: &[u8]) -> Result<u64, StoreError> {
    match data {
        [1, offset @ ..] if offset.len() == 8 => {
            Ok(u64::from_le_bytes(offset.try_into().expect("eight bytes")))
        }
        _ => Err(StoreError::Corrupt(format!(
            "a snapshot of {} bytes that is not weir's",
            data.len()
        ))),
    }
}

/// Reads little-endian fields of a record whose CRC matched; running out of
/// bytes means a record written by another version, or a bug: corrupt.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < count {
            return Err(StoreError::Corrupt("side-file record too short".into()));
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("four bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("eight bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        let length = self.u32()? as usize;
        Ok(self.take(length)?.to_vec())
    }

    fn conf(&mut self) -> Result<ConfState, StoreError> {
        Ok(ConfState {
            voters: self.ids()?,
            learners: self.ids()?,
            voters_outgoing: self.ids()?,
            learners_next: self.ids()?,
            auto_leave: self.u8()? == 1,
            ..ConfState::default()
        })
    }

    fn ids(&mut self) -> Result<Vec<u64>, StoreError> {
        let count = self.u32()? as usize;
        if count > self.0.len() / 8 {
            return Err(StoreError::Corrupt(
                "node list longer than its record".into(),
            ));
        }
        (0..count).map(|_| self.u64()).collect()
    }
}

fn decode_entry(body: &[u8]) -> Result<(u64, EntryMeta), StoreError> {
    let mut fields = Fields(&body[1..]);
    let index = fields.u64()?;
    let term = fields.u64()?;
    let start = fields.u64()?;
    let end = fields.u64()?;
    let entry_type = match fields.u8()? {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        other => return Err(StoreError::Corrupt(format!("entry type {other}"))),
    };
    let own = match fields.u8()? {
        0 => None,
        1 => Some((entry_type, fields.bytes()?, fields.bytes()?)),
        other => return Err(StoreError::Corrupt(format!("entry kind {other}"))),
    };
    Ok((
        index,
        EntryMeta {
            term,
            start,
            end,
            own,
        },
    ))
}

fn decode_state(body: &[u8]) -> Result<PersistedState, StoreError> {
    let mut fields = Fields(&body[1..]);
    let hard = HardState {
        term: fields.u64()?,
        vote: fields.u64()?,
        commit: fields.u64()?,
        ..HardState::default()
    };
    let applied = fields.u64()?;
    let conf = fields.conf()?;
    Ok(PersistedState {
        hard,
        applied,
        conf,
    })
}

fn encode_claim(claim: &Claim, out: &mut Vec<u8>) {
    let mut body = vec![CLAIM_RECORD];
    for value in [
        CLAIM_MAGIC,
        claim.term,
        claim.vote,
        claim.index,
        claim.index_term,
    ] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    debug_assert_eq!(body.len(), CLAIM_BODY_BYTES);
    frame_record(&body, out);
}

fn decode_claim(body: &[u8]) -> Result<Claim, StoreError> {
    let mut fields = Fields(&body[1..]);
    if fields.u64()? != CLAIM_MAGIC {
        return Err(StoreError::Corrupt(
            "a claim record without its mark".into(),
        ));
    }
    Ok(Claim {
        term: fields.u64()?,
        vote: fields.u64()?,
        index: fields.u64()?,
        index_term: fields.u64()?,
    })
}

/// The last valid claim record starting after `position` (past a bad
/// record, where record boundaries are unknown: every byte is tried; the
/// length, kind, mark and CRC must all match).
fn last_claim_after(bytes: &[u8], position: usize) -> Option<Claim> {
    let length = (CLAIM_BODY_BYTES as u32).to_le_bytes();
    let magic = CLAIM_MAGIC.to_le_bytes();
    let mut found = None;
    for at in position + 1..bytes.len() {
        let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES + 9) else {
            break;
        };
        if header[..4] != length || header[8] != CLAIM_RECORD || header[9..17] != magic {
            continue;
        }
        if let Some((body, _)) = next_record(bytes, at) {
            found = decode_claim(body).ok().or(found);
        }
    }
    found
}

fn encode_repair(point: Option<RepairPoint>, out: &mut Vec<u8>) {
    let point = point.unwrap_or_default();
    let mut body = vec![REPAIR_RECORD];
    for value in [point.term, point.index] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    frame_record(&body, out);
}

fn decode_repair(body: &[u8]) -> Result<Option<RepairPoint>, StoreError> {
    let mut fields = Fields(&body[1..]);
    let point = RepairPoint {
        term: fields.u64()?,
        index: fields.u64()?,
    };
    Ok((point != RepairPoint::default()).then_some(point))
}

fn decode_start(body: &[u8]) -> Result<LogStart, StoreError> {
    let mut fields = Fields(&body[1..]);
    Ok(LogStart {
        index: fields.u64()?,
        term: fields.u64()?,
        offset: fields.u64()?,
        reset: fields.u8()? == 1,
        conf: fields.conf()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;
    use weir_io::{Faults, ManualClock, SimDisk};
    use weir_log::{HighWatermarkPolicy, LogConfig};

    fn open(disk: &Arc<SimDisk>) -> Result<RaftLog, StoreError> {
        open_with(disk, &[1, 2, 3])
    }

    fn open_with(disk: &Arc<SimDisk>, voters: &[u64]) -> Result<RaftLog, StoreError> {
        let raft_dir = disk.root().open_or_create_dir("raft")?;
        RaftLog::open(raft_dir, replica_partition(disk)?, voters)
    }

    /// The replica's partition log on `disk` (`SetByOwner`), opened.
    fn replica_partition(disk: &Arc<SimDisk>) -> Result<Arc<Partition>, StoreError> {
        let config = LogConfig {
            high_watermark: HighWatermarkPolicy::SetByOwner,
            ..LogConfig::default()
        };
        let partition_dir = disk.root().open_or_create_dir("partition")?;
        let (partition, _) = Partition::open(partition_dir, Arc::new(ManualClock::new(0)), config)?;
        Ok(Arc::new(partition))
    }

    /// A data entry of term 2 at `index`: a batch of three records
    /// continuing `log`'s offsets.
    fn data_entry(log: &RaftLog, index: u64) -> Entry {
        let value = format!("entry {index}");
        let records: Vec<_> = (0..3)
            .map(|at| weir_log::batch::Record::value(at, value.as_bytes()))
            .collect();
        let mut batch = Vec::new();
        weir_log::batch::encode(&records, weir_log::batch::ProducerInfo::NONE, &mut batch)
            .expect("a batch");
        weir_log::batch::stamp(&mut batch, log.end_offset(), 2);
        Entry {
            term: 2,
            index,
            data: batch.into(),
            ..Entry::default()
        }
    }

    /// A new log with two entries of raft's own of term 2 (4 and 5) after
    /// its creation's three.
    fn with_own_entries(disk: &Arc<SimDisk>) -> RaftLog {
        let mut log = open(disk).expect("a new log");
        let own = |index| Entry {
            term: 2,
            index,
            ..Entry::default()
        };
        log.append(&[own(4), own(5)], &mut VecDeque::new())
            .expect("an append");
        log
    }

    /// A group's log as a node leaves it: its creation's three entries,
    /// two of raft's own and forty data entries of a later term, a vote
    /// in the term after; all synced.
    fn written(disk: &Arc<SimDisk>) -> (PersistedState, u64, u64) {
        let mut log = with_own_entries(disk);
        for index in 6..46 {
            let entry = data_entry(&log, index);
            log.append(&[entry], &mut VecDeque::new())
                .expect("an append");
        }
        let mut state = log.state().clone();
        state.hard = HardState {
            term: 3,
            vote: 2,
            commit: 45,
            ..HardState::default()
        };
        log.set_state(state.clone()).expect("a state");
        log.sync().expect("a sync");
        (state, log.last_index().expect("an index"), log.end_offset())
    }

    /// The log written by `written`, every entry applied.
    fn applied_log(disk: &Arc<SimDisk>) -> RaftLog {
        written(disk);
        let mut log = open(disk).expect("a reopen");
        let mut state = log.state().clone();
        state.applied = 45;
        log.set_state(state).expect("a state");
        log.sync().expect("a sync");
        log
    }

    fn compacted_error<T: std::fmt::Debug>(result: raft::Result<T>) -> bool {
        matches!(result, Err(raft::Error::Store(StorageError::Compacted)))
    }

    /// Compaction through entry 20 (records end at offset 3 × 15 = 45):
    /// the entries before are gone, entry 20's term stays known, the
    /// snapshot names it with the founding configuration, and all of it
    /// survives a reopen; the partition's records before the start may
    /// then go.
    #[test]
    fn a_compacted_log_starts_after_its_last_compacted_entry_and_reopens_so() {
        let disk = SimDisk::new(21);
        let mut log = applied_log(&disk);
        let offset = log.end_offset_at(20);
        assert_eq!(offset, 45);
        assert_eq!(
            log.compact_to(offset + 2)
                .expect("a compaction")
                .map(|s| s.index),
            Some(20)
        );
        assert_eq!(log.compact_to(offset + 2).expect("a compaction"), None);
        for log in [log, open(&disk).expect("a reopen")] {
            assert_eq!(log.first_index().expect("an index"), 21);
            assert_eq!(log.last_index().expect("an index"), 45);
            assert_eq!(log.term(20).expect("a term"), 2);
            assert!(compacted_error(log.term(19)));
            assert!(compacted_error(log.entries(
                20,
                22,
                None,
                GetEntriesContext::empty(true)
            )));
            let entries = log
                .entries(21, 46, None, GetEntriesContext::empty(true))
                .expect("entries");
            assert_eq!(entries.len(), 25);
            assert_eq!(
                BatchHeader::parse(&entries[0].data)
                    .expect("a batch")
                    .base_offset,
                45
            );
            let snapshot = log.snapshot(0, 2).expect("a snapshot");
            assert_eq!(
                (snapshot.get_metadata().index, snapshot.get_metadata().term),
                (20, 2)
            );
            assert_eq!(snapshot.get_metadata().get_conf_state().voters, [1, 2, 3]);
            assert_eq!(decode_snapshot_data(&snapshot.data).expect("data"), 45);
            log.check().expect("the files agree");
        }
        let log = open(&disk).expect("a reopen");
        log.partition().set_high_watermark(log.end_offset());
        assert_eq!(log.partition().delete_before(45).expect("a deletion"), 45);
        drop(log);
        let log = open(&disk).expect("a reopen after the deletion");
        assert_eq!(log.first_index().expect("an index"), 21);
        assert_eq!(log.partition().log_start_offset(), 45);
        log.check().expect("the files agree");
    }

    /// Entries 4 and 5 of raft's own, then data entries 6 through `last`,
    /// each appended and synced on its own (a sync each, so that each
    /// write begins with a claim of the one before).
    fn synced_one_by_one(disk: &Arc<SimDisk>, last: u64) -> RaftLog {
        let mut log = with_own_entries(disk);
        log.sync().expect("a sync");
        for index in 6..=last {
            let entry = data_entry(&log, index);
            log.append(&[entry], &mut VecDeque::new())
                .expect("an append");
            log.sync().expect("a sync");
        }
        log
    }

    /// A synced batch in the middle of the segment log rots: the replica's
    /// segment log cuts it and all after (`SetByOwner`), and the Raft log
    /// drops their entries and repairs up to its last entry before the
    /// loss, across reopens, until the entries come back.
    #[test]
    fn a_replica_whose_synced_batches_rot_repairs_up_to_its_last_entry() {
        let disk = SimDisk::new(31);
        let log = synced_one_by_one(&disk, 11);
        assert_eq!(log.repair(), None);
        drop(log);
        rot_entry_nine(&disk);
        let point = RepairPoint { term: 2, index: 11 };
        let log = open(&disk).expect("a reopen that repairs");
        assert_eq!(log.partition().synced_data_cut(), Some(9));
        assert_eq!((log.last_index_(), log.repair()), (8, Some(point)));
        log.check().expect("the files agree");
        drop(log);
        let mut log = open(&disk).expect("a second reopen");
        assert_eq!((log.last_index_(), log.repair()), (8, Some(point)));
        for index in 9..=10 {
            let entry = data_entry(&log, index);
            log.append(&[entry], &mut VecDeque::new())
                .expect("an append");
            assert!(!log.end_repair_if_caught_up().expect("a check"));
        }
        let entry = data_entry(&log, 11);
        log.append(&[entry], &mut VecDeque::new())
            .expect("an append");
        assert!(log.end_repair_if_caught_up().expect("a check"));
        log.sync().expect("a sync");
        drop(log);
        let log = open(&disk).expect("a reopen after the repair");
        assert_eq!((log.last_index_(), log.repair()), (11, None));
    }

    /// A replica repairing entries lost to rot answers no vote for a log
    /// behind its repair point (pre-vote or vote), answers one at it, and
    /// never campaigns, however long it hears from no leader.
    #[test]
    fn a_repairing_replica_neither_votes_for_a_shorter_log_nor_campaigns() {
        use raft::eraftpb::{Message, MessageType};
        let disk = SimDisk::new(33);
        drop(synced_one_by_one(&disk, 11));
        rot_entry_nine(&disk);
        let (_, mut group) = open_group(&disk);
        assert_eq!(
            group.log().repair(),
            Some(RepairPoint { term: 2, index: 11 })
        );
        let vote_request = |kind, index| Message {
            msg_type: kind,
            from: 2,
            to: 1,
            term: 5,
            log_term: 2,
            index,
            ..Message::default()
        };
        let answered = |group: &mut crate::Group| {
            let messages = group.process_ready().expect("a ready");
            messages
                .iter()
                .filter(|message| {
                    matches!(
                        message.get_msg_type(),
                        MessageType::MsgRequestVoteResponse
                            | MessageType::MsgRequestPreVoteResponse
                    )
                })
                .count()
        };
        for kind in [MessageType::MsgRequestPreVote, MessageType::MsgRequestVote] {
            group.step(vote_request(kind, 10)).expect("a step");
            assert_eq!(
                answered(&mut group),
                0,
                "{kind:?} for a shorter log answered"
            );
        }
        for _ in 0..100 {
            group.tick();
            let messages = group.process_ready().expect("a ready");
            assert!(
                messages.iter().all(|message| !matches!(
                    message.get_msg_type(),
                    MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                )),
                "a repairing replica campaigned"
            );
        }
        group
            .step(vote_request(MessageType::MsgRequestVote, 11))
            .expect("a step");
        assert_eq!(
            answered(&mut group),
            1,
            "a vote for a log at the point unanswered"
        );
    }

    /// Opens the group of node 1 over the log on `disk`.
    fn open_group(disk: &Arc<SimDisk>) -> (crate::GroupConfig, crate::Group) {
        let raft_dir = disk.root().open_or_create_dir("raft").expect("a dir");
        let partition = replica_partition(disk).expect("a log");
        let group_config = crate::GroupConfig::new(1, vec![1, 2, 3], 7);
        let group = crate::Group::open(&group_config, raft_dir, partition).expect("a group");
        (group_config, group)
    }

    /// Node 1's `Replicas` with group 5 of `voters` over the log on `disk`.
    fn open_replicas(disk: &Arc<SimDisk>, voters: &[u64]) -> crate::Replicas {
        let mut replicas = crate::Replicas::new(crate::ReplicasConfig::new(1, 9), voters);
        let raft_dir = disk.root().open_or_create_dir("raft").expect("a dir");
        let partition = replica_partition(disk).expect("a log");
        replicas
            .open_group(5, voters.to_vec(), raft_dir, partition)
            .expect("a group");
        replicas
    }

    /// Flips a bit of entry 9's batch (of the six equal batches of
    /// entries 6 to 11).
    fn rot_entry_nine(disk: &Arc<SimDisk>) {
        rot_segment_at(disk, |length| length - length / 6 * 5 / 2);
    }

    /// Flips a bit of the partition's first segment, at the position
    /// `at` gives for its length.
    fn rot_segment_at(disk: &Arc<SimDisk>, at: impl Fn(u64) -> u64) {
        let name = weir_log::segment::log_file_name(0);
        let length = disk
            .root()
            .open_dir("partition")
            .and_then(|dir| dir.open_file(&name, OpenMode::Existing))
            .and_then(|file| file.len())
            .expect("the segment");
        disk.corrupt(&format!("partition/{name}"), at(length), 0x10)
            .expect("a flip");
    }

    /// Rot in a running replica, which recovery will not see (it was
    /// checked when opened): found by the scrub, by a read of entries for
    /// a follower, or by a consumer's read of the partition, at the
    /// batch's first offset; the replica is cut there and reopened to
    /// repair up to its last entry.
    #[test]
    fn rot_found_while_running_cuts_the_replica_there_to_repair() {
        for by in ["scrub", "follower", "consumer"] {
            let disk = SimDisk::new(34);
            drop(synced_one_by_one(&disk, 11));
            let (config, mut group) = open_group(&disk);
            assert_eq!(
                group.find_corruption(1 << 20).expect("a scrub").corrupt,
                None
            );
            rot_entry_nine(&disk);
            let found = match by {
                "scrub" => group.find_corruption(1 << 20).expect("a scrub").corrupt,
                "follower" => {
                    let read = group
                        .log()
                        .entries(7, 12, None, GetEntriesContext::empty(true));
                    assert!(read.is_err(), "a corrupt batch sent to a follower");
                    group.find_corruption(0).expect("a search").corrupt
                }
                _ => {
                    // Entry 9's records are offsets 9 to 11.
                    let read = group.log().partition().read_with(
                        10,
                        1 << 20,
                        weir_log::Isolation::Uncommitted,
                    );
                    assert!(read.is_err(), "a corrupt batch read by a consumer");
                    group.find_corruption(0).expect("a search").corrupt
                }
            };
            assert_eq!(found, Some(9), "found by the {by}");
            let group = group.reopen_cut_at(&config, 9).expect("a cut");
            assert_eq!(
                group.log().repair(),
                Some(RepairPoint { term: 2, index: 11 })
            );
            assert_eq!(group.last_index(), 8);
            assert_eq!(group.log().partition().log_end_offset(), 9);
            group.log().check().expect("the files agree");
            drop(group);
            let (_, group) = open_group(&disk);
            assert_eq!(
                group.log().repair(),
                Some(RepairPoint { term: 2, index: 11 })
            );
            assert_eq!(group.last_index(), 8);
        }
    }

    /// The side-file records before a cut must read back whole: a record
    /// written wrong there (the disk stored it wrong while the batches
    /// rotted) would end the file at the next open, cutting the repair
    /// point written after it as a torn tail, and the replica would vote
    /// as one that lost nothing (cluster seed 330). The cut goes back to
    /// that record, and the repair point survives the reopen.
    #[test]
    fn a_cut_also_cuts_side_file_records_written_wrong_before_it() {
        let disk = SimDisk::new(36);
        drop(synced_one_by_one(&disk, 11));
        let (config, group) = open_group(&disk);
        let slot = (0..group.log().entries.len())
            .find(|slot| group.log().index_of(*slot) == 7)
            .expect("entry 7");
        let position = group.log().positions[slot];
        disk.corrupt(&format!("raft/{SIDE_FILE}"), position + 3, 0x20)
            .expect("a flip");
        rot_entry_nine(&disk);
        let group = group.reopen_cut_at(&config, 9).expect("a cut");
        let point = Some(RepairPoint { term: 2, index: 11 });
        assert_eq!(group.log().repair(), point);
        assert_eq!(group.last_index(), 6);
        group.log().check().expect("the files agree");
        drop(group);
        let (_, group) = open_group(&disk);
        assert_eq!(group.log().repair(), point, "after the next open");
        assert_eq!(group.last_index(), 6);
    }

    /// The side file rewritten by a cut is read back: a write the disk
    /// stores wrong is made again, so that the repair point is what the
    /// next open finds (or the cut fails; it is never lost quietly).
    #[test]
    fn a_cut_reads_the_rewritten_side_file_back() {
        let mut retried = 0;
        for seed in 0..24 {
            let disk = SimDisk::new(seed);
            drop(synced_one_by_one(&disk, 11));
            let (config, group) = open_group(&disk);
            rot_entry_nine(&disk);
            disk.set_faults(weir_io::Faults {
                write_corruption: 0.5,
                ..weir_io::Faults::none()
            });
            let cut = group.reopen_cut_at(&config, 9);
            let corrupted = disk.stats().write_corruptions;
            disk.set_faults(weir_io::Faults::none());
            let Ok(group) = cut else { continue };
            drop(group);
            retried += u64::from(corrupted > 0);
            let (_, group) = open_group(&disk);
            assert_eq!(
                group.log().repair(),
                Some(RepairPoint { term: 2, index: 11 }),
                "seed {seed}: {corrupted} writes stored wrong"
            );
        }
        assert!(retried > 3, "only {retried} cuts saw a write stored wrong");
    }

    /// A batch found corrupt while running may have an earlier corrupt
    /// one in its segment (written wrong after the scrub passed it): the
    /// cut reads the segment up to its point, and cuts at the earlier one
    /// rather than failing (the node stopped replicating).
    #[test]
    fn a_cut_at_a_corrupt_batch_also_cuts_an_earlier_one() {
        let disk = SimDisk::new(38);
        drop(synced_one_by_one(&disk, 11));
        let (config, group) = open_group(&disk);
        rot_entry_nine(&disk);
        // Entry 7's batch, the second of the six.
        rot_segment_at(&disk, |length| length / 6 * 3 / 2);
        let group = group.reopen_cut_at(&config, 9).expect("a cut");
        assert_eq!(group.log().partition().log_end_offset(), 3);
        assert_eq!(group.last_index(), 6);
        assert_eq!(
            group.log().repair(),
            Some(RepairPoint { term: 2, index: 11 })
        );
        group.log().check().expect("the files agree");
    }

    /// A leader whose batch rots (found by the scrub) steps down at once,
    /// and only a turn later, once its front-ends were told, is its log
    /// cut there; then it repairs.
    #[test]
    fn a_leader_whose_batch_rots_steps_down_before_it_is_cut() {
        use raft::eraftpb::{Message, MessageType};
        let disk = SimDisk::new(35);
        drop(synced_one_by_one(&disk, 11));
        let mut replicas = open_replicas(&disk, &[1, 2, 3]);
        // Node 2 grants every (pre-)vote node 1 asks for.
        for _ in 0..200 {
            replicas.tick();
            replicas.process().expect("a turn");
            let mut answers = Vec::new();
            for (peer, envelopes) in replicas.take_outbox() {
                for envelope in envelopes.into_iter().filter(|_| peer == 2) {
                    let kind = match envelope.message.get_msg_type() {
                        MessageType::MsgRequestPreVote => MessageType::MsgRequestPreVoteResponse,
                        MessageType::MsgRequestVote => MessageType::MsgRequestVoteResponse,
                        _ => continue,
                    };
                    answers.push(crate::codec::Envelope {
                        group: 5,
                        message: Message {
                            msg_type: kind,
                            from: 2,
                            to: 1,
                            term: envelope.message.term,
                            ..Message::default()
                        },
                    });
                }
            }
            replicas.receive(2, answers);
            replicas.process().expect("a turn");
            if replicas.group(5).expect("the group").is_leader() {
                break;
            }
        }
        let group = replicas.group(5).expect("the group");
        assert!(group.is_leader(), "elected");
        let end = group.log().partition().log_end_offset();
        rot_entry_nine(&disk);
        replicas.tick();
        replicas.process().expect("a turn");
        let group = replicas.group(5).expect("the group");
        assert!(!group.is_leader(), "a leader with a rotted batch leads on");
        assert_eq!(
            (
                group.log().partition().log_end_offset(),
                group.log().repair()
            ),
            (end, None),
            "cut before its step down was out"
        );
        replicas.tick();
        replicas.process().expect("a turn");
        let group = replicas.group(5).expect("the group");
        assert_eq!(group.log().partition().log_end_offset(), 9);
        assert!(group.log().repair().is_some());
        assert_eq!(replicas.cuts(5), 1);
    }

    /// A partition with no other replica has nowhere to repair from: rot
    /// found at start costs the records from the corrupt batch on (as a
    /// torn tail would) and the group goes on; rot found while running is
    /// not cut (reading that batch fails; the records after it stay).
    #[test]
    fn a_replica_alone_gives_up_the_repair_and_is_not_cut_while_running() {
        let disk = SimDisk::new(36);
        drop(open_with(&disk, &[1]).expect("a new log"));
        let mut log = open_with(&disk, &[1]).expect("a reopen");
        for index in 2..=7 {
            let entry = data_entry(&log, index);
            log.append(&[entry], &mut VecDeque::new())
                .expect("an append");
            log.sync().expect("a sync");
        }
        drop(log);
        rot_entry_nine(&disk);
        let (_, group) = open_group(&disk);
        assert_eq!(group.log().repair(), None, "a repair nobody can serve");
        assert_eq!(group.log().partition().log_end_offset(), 9);
        drop(group);
        let (_, group) = open_group(&disk);
        assert_eq!(group.log().repair(), None);
        drop(group);
        let mut replicas = open_replicas(&disk, &[1]);
        // Entries 2 to 4 are left (offsets 0 to 9); rot entry 2 now.
        let name = weir_log::segment::log_file_name(0);
        disk.corrupt(&format!("partition/{name}"), 100, 0x10)
            .expect("a flip");
        for _ in 0..5 {
            replicas.tick();
            replicas.process().expect("a turn");
        }
        let group = replicas.group(5).expect("the group");
        assert_eq!(
            (replicas.cuts(5), group.log().partition().log_end_offset()),
            (0, 9)
        );
    }

    /// A synced state record rots, with records after it: the side file
    /// is cut there, but the claims past it give back the vote (which the
    /// node may have sent) and show that entry 12, synced, was lost.
    #[test]
    fn claims_past_a_rotted_record_restore_the_vote_and_start_a_repair() {
        let disk = SimDisk::new(32);
        let mut log = synced_one_by_one(&disk, 11);
        let mut state = log.state().clone();
        state.hard.term = 3;
        state.hard.vote = 2;
        log.set_state(state).expect("a state");
        let state_record_end = log.file_len;
        log.sync().expect("a sync");
        let entry = data_entry(&log, 12);
        log.append(&[entry], &mut VecDeque::new())
            .expect("an append");
        log.sync().expect("a sync");
        let mut state = log.state().clone();
        state.hard.commit = 12;
        log.set_state(state).expect("a state");
        log.sync().expect("a sync");
        drop(log);
        disk.corrupt("raft/raft-log", state_record_end - 3, 0x01)
            .expect("a flip");
        let log = open(&disk).expect("a reopen that repairs");
        assert_eq!((log.state().hard.term, log.state().hard.vote), (3, 2));
        assert_eq!(log.last_index_(), 11);
        assert_eq!(log.repair(), Some(RepairPoint { term: 2, index: 12 }));
        log.check().expect("the files agree");
    }

    /// A power loss takes back unsynced entries (nothing claims them):
    /// no repair, so that a cluster whose nodes all lost power elects.
    #[test]
    fn unsynced_entries_lost_to_a_power_loss_start_no_repair() {
        for seed in 0..20 {
            let disk = SimDisk::with_faults(
                seed,
                Faults {
                    crash: weir_io::CrashWeights {
                        lose_all: 1,
                        keep_prefix: 1,
                        tear: 1,
                    },
                    ..Faults::default()
                },
            );
            let mut log = synced_one_by_one(&disk, 8);
            for index in 9..=12 {
                let entry = data_entry(&log, index);
                log.append(&[entry], &mut VecDeque::new())
                    .expect("an append");
            }
            drop(log);
            disk.crash();
            let log = open(&disk).expect("a reopen");
            assert!(log.last_index_() >= 8, "seed {seed}: synced entries kept");
            assert_eq!(log.repair(), None, "seed {seed}");
        }
    }

    /// A leader whose disk fails the read of a follower's entries answers
    /// raft that they are not available yet (it tries again at the next
    /// heartbeat): any other error is, for raft, a broken log, and it
    /// panics (cluster seed 59 of the eleventh session, a read EIO).
    #[test]
    fn a_failed_read_of_entries_for_a_follower_is_retried_not_fatal() {
        let disk = SimDisk::new(23);
        written(&disk);
        let log = open(&disk).expect("a reopen");
        disk.set_faults(Faults {
            read_error: 1.0,
            ..Faults::none()
        });
        let fetched = log.entries(6, 46, None, GetEntriesContext::empty(true));
        assert!(
            matches!(
                fetched,
                Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
            ),
            "{fetched:?}"
        );
        disk.set_faults(Faults::none());
        let entries = log
            .entries(6, 46, None, GetEntriesContext::empty(true))
            .expect("entries once the disk reads");
        assert_eq!(entries.len(), 40);
    }

    /// A compaction that leaves most of the side file to compacted
    /// entries rewrites it: the file shrinks, and the log read back is
    /// the same; a crash at any point of it leaves the old file or the new
    /// one, never a log that lost an entry, the vote or the commit.
    #[test]
    fn a_rewritten_side_file_reads_back_the_same_log_after_a_crash_anywhere() {
        let mut outcomes = [0usize; 2];
        // Each crash point on several disks: a crash keeps a random prefix
        // of the writes not yet synced, or none.
        let points = (1..40).flat_map(|at| (0..6).map(move |disk| (at, disk)));
        for (crash_after, variant) in points.chain([(u64::MAX, 0)]) {
            let disk = SimDisk::new(300 + crash_after % 1000 + variant * 1000);
            let mut log = applied_log(&disk);
            log.set_rewrite_min_bytes(64);
            let kept_of = |log: &RaftLog| -> Vec<_> {
                let mut entries = log.data_entries();
                entries.retain(|entry| entry.0 > 40);
                entries
            };
            let before = (log.state().clone(), kept_of(&log));
            let length = log.file_len;
            if crash_after != u64::MAX {
                disk.schedule_crash(crash_after);
            }
            let result = log.compact_to(log.end_offset_at(40));
            if crash_after == u64::MAX {
                assert_eq!(log.rewrites(), 1);
                assert!(
                    log.file_len < length / 2,
                    "{} of {length} bytes",
                    log.file_len
                );
            }
            drop(log);
            disk.crash();
            let log = open(&disk).expect("a reopen");
            log.check().expect("the files agree");
            let first = log.first_index().expect("an index");
            match first {
                1 => outcomes[0] += 1,
                41 => outcomes[1] += 1,
                other => panic!("crash after {crash_after}: the log starts at {other}"),
            }
            if result.is_ok() {
                assert_eq!(first, 41, "a compaction that returned is durable");
            }
            assert_eq!(log.last_index().expect("an index"), 45);
            assert_eq!(log.state().hard, before.0.hard);
            assert_eq!(log.state().applied, before.0.applied);
            assert_eq!(kept_of(&log), before.1, "crash after {crash_after}");
        }
        assert!(
            outcomes.iter().all(|count| *count > 0),
            "outcomes {outcomes:?}"
        );
    }

    /// A follower whose log ends before a leader's start takes its
    /// snapshot: its log and partition restart at the snapshot's offset
    /// and take the leader's entries from there; a crash anywhere in the
    /// install leaves the old log or the snapshot's.
    #[test]
    fn a_follower_behind_the_leaders_start_takes_its_snapshot_whole_or_not_at_all() {
        let leader_disk = SimDisk::new(22);
        let mut leader = applied_log(&leader_disk);
        leader.compact_to(45).expect("a compaction");
        let snapshot = leader.snapshot(0, 2).expect("a snapshot");
        let entries = leader
            .entries(21, 46, None, GetEntriesContext::empty(true))
            .expect("entries");
        let mut outcomes = [0usize; 2];
        for crash_after in (1..40).chain([u64::MAX]) {
            let disk = SimDisk::new(100 + crash_after % 1000);
            let mut follower = open(&disk).expect("a new log");
            follower
                .append(&[data_entry(&follower, 4)], &mut VecDeque::new())
                .expect("an append of its own");
            follower.sync().expect("a sync");
            if crash_after != u64::MAX {
                disk.schedule_crash(crash_after);
            }
            let installed = follower.install_snapshot(&snapshot);
            drop(follower);
            disk.crash();
            let mut follower = open(&disk).expect("a reopen");
            follower.check().expect("the files agree");
            let span = (
                follower.first_index().expect("an index"),
                follower.end_offset(),
            );
            let partition = follower.partition();
            match span {
                (1, 3) => {
                    assert!(installed.is_err(), "an install that returned is durable");
                    outcomes[0] += 1;
                    continue;
                }
                (21, 45) => outcomes[1] += 1,
                other => panic!("crash after {crash_after}: log spans {other:?}"),
            }
            assert_eq!(
                (partition.log_start_offset(), partition.log_end_offset()),
                (45, 45)
            );
            assert_eq!(follower.state().hard.commit, 20);
            follower
                .append(&entries, &mut VecDeque::new())
                .expect("the leader's entries");
            assert_eq!(follower.end_offset(), leader.end_offset());
            assert_eq!(
                follower
                    .entries(21, 46, None, GetEntriesContext::empty(true))
                    .expect("entries"),
                entries
            );
        }
        assert!(
            outcomes.iter().all(|count| *count > 0),
            "outcomes {outcomes:?}"
        );
    }

    /// Reads that flip bits (or fail) while a node opens its Raft log must
    /// not be taken for a torn tail: the side file's synced records (the
    /// vote, the entries this node acknowledged) would be cut for good.
    #[test]
    fn reads_that_flip_bits_never_cut_the_side_file() {
        let mut flipped_opens = 0;
        for seed in 0..60 {
            let disk = SimDisk::new(seed);
            let (state, last, end) = written(&disk);
            disk.set_faults(Faults {
                read_corruption: 0.3,
                read_error: 0.05,
                ..Faults::none()
            });
            let before = disk.stats().read_corruptions;
            // Opening may fail (no three reads agreed); it may not cut.
            let opened = open(&disk);
            flipped_opens += usize::from(disk.stats().read_corruptions > before);
            disk.set_faults(Faults::none());
            let log = opened.or_else(|_| open(&disk)).expect("an open");
            assert_eq!(
                (
                    log.state(),
                    log.last_index().expect("an index"),
                    log.end_offset()
                ),
                (&state, last, end),
                "seed {seed}: the side file lost synced records to a flipped read"
            );
        }
        assert!(flipped_opens > 5, "only {flipped_opens} opens saw a flip");
    }

    /// A write that lands past the side file's end (misdirected) leaves
    /// zeros where records were due, which read as a record of length 0
    /// whose CRC checks (the CRC of nothing is 0): they are no record, and
    /// the log opens with what came before them, never refused as corrupt.
    #[test]
    fn zeros_after_the_side_files_records_are_no_record() {
        let disk = SimDisk::new(37);
        let (state, last, end) = written(&disk);
        let dir = disk.root().open_dir("raft").expect("the raft dir");
        let file = dir.open_file(SIDE_FILE, OpenMode::Existing).expect("it");
        let length = file.len().expect("a length");
        file.write_at(&[0; 1024], length).expect("zeros");
        file.sync().expect("a sync");
        drop(file);
        let log = open(&disk).expect("an open over the zeros");
        assert_eq!(
            (
                log.state(),
                log.last_index().expect("an index"),
                log.end_offset()
            ),
            (&state, last, end)
        );
        assert_eq!(log.repair(), None);
    }

    /// A write misdirected back over the side file's records may land a
    /// whole record of a later entry where the next one belongs (entry
    /// 11's over entry 8's): the valid records end there, as at a bad
    /// record, and the claims after it start a repair; the log is not
    /// refused for a gap in its entries.
    #[test]
    fn a_later_entry_written_over_earlier_ones_ends_the_valid_records() {
        let disk = SimDisk::new(39);
        let log = synced_one_by_one(&disk, 11);
        // Entries from 1 on: entry n's record is at positions[n - 1].
        let (eighth, eleventh) = (log.positions[7], log.positions[10]);
        drop(log);
        let dir = disk.root().open_dir("raft").expect("the raft dir");
        let file = dir.open_file(SIDE_FILE, OpenMode::Existing).expect("it");
        let mut record = vec![0; 43];
        file.read_at(&mut record, eleventh)
            .expect("entry 11's record");
        assert_eq!(next_record(&record, 0).map(|(_, end)| end), Some(43));
        file.write_at(&record, eighth).expect("a misdirected write");
        file.sync().expect("a sync");
        drop(file);
        let log = open(&disk).expect("an open over the gap");
        assert_eq!(log.last_index_(), 7);
        assert_eq!(log.repair(), Some(RepairPoint { term: 2, index: 10 }));
        log.check().expect("the files agree");
    }
}
