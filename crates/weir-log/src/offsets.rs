//! Consumer-group committed offsets, kept in an internal partition log.
//!
//! Each commit appends records keyed by (group, topic, partition) whose
//! value is the committed offset; a record without a value deletes the key.
//! The log uses [`FlushPolicy::Always`], so a commit is durable when it
//! returns. On open the log is replayed into a map and compacted: the live
//! entries are appended again as a snapshot in a fresh segment, which is
//! made durable, and every older segment is deleted. A crash at any point
//! of the compaction leaves either the old log or the old log followed by
//! (part of) a snapshot of the same values, which replay to the same map.
//!
//! Key encoding: `version u8 = 1`, `group_length u16`, group, `topic_length
//! u16`, topic, `partition u32`. Value encoding: `version u8 = 1`, `offset
//! u64`, `commit_timestamp_ms i64`, `metadata_length u16`, metadata. All
//! little-endian.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_io::sync::{lock, Mutex};
use weir_io::{Clock, Storage};

use crate::batch::{ProducerInfo, Record};
use crate::config::{FlushPolicy, LogConfig};
use crate::error::LogError;
use crate::partition::Partition;
use crate::recovery::RecoveryReport;

const KEY_VERSION: u8 = 1;
const VALUE_VERSION: u8 = 1;
/// Records per snapshot batch written by compaction.
const SNAPSHOT_BATCH_RECORDS: usize = 1000;

/// An offset a consumer group committed for a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: u64,
    /// Free-form metadata the consumer attached.
    pub metadata: String,
    /// When the commit happened, by the broker's clock.
    pub commit_timestamp_ms: i64,
}

/// (group, topic, partition).
pub(crate) type OffsetKey = (String, String, u32);

#[derive(Debug)]
struct Entry {
    committed: CommittedOffset,
    /// The offset of the record in the internal log; a commit replaces an
    /// entry only with a later record, so the map always agrees with a
    /// replay of the log.
    log_offset: u64,
}

/// What replaying and compacting the offsets log found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetsRecovery {
    /// The internal log's own recovery.
    pub log: RecoveryReport,
    /// Records replayed.
    pub records_replayed: u64,
    /// Live committed offsets after replay.
    pub live_offsets: usize,
    /// Whether the log was compacted.
    pub compacted: bool,
}

#[derive(Debug)]
pub(crate) struct OffsetStore {
    log: Partition,
    entries: Mutex<BTreeMap<OffsetKey, Entry>>,
    clock: Arc<dyn Clock>,
}

/// Why the offsets log could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OffsetsError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("undecodable record at offset {offset} of the offsets log: {reason}")]
    Corrupt { offset: u64, reason: &'static str },
}

impl OffsetStore {
    pub fn open(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        mut config: LogConfig,
    ) -> Result<(Self, OffsetsRecovery), OffsetsError> {
        config.flush = FlushPolicy::Always;
        config.retention_ms = None;
        config.retention_bytes = None;
        let (log, log_report) = Partition::open(storage, Arc::clone(&clock), config)?;
        let mut entries = BTreeMap::new();
        let mut records_replayed = 0u64;
        let mut next = log.log_start_offset();
        while next < log.high_watermark() {
            let read = log.read(next, 1 << 20)?;
            for record in read.records() {
                let record = record.map_err(LogError::InvalidBatch)?;
                records_replayed += 1;
                let key = decode_key(record.key).ok_or(OffsetsError::Corrupt {
                    offset: record.offset,
                    reason: "bad key",
                })?;
                match record.value {
                    None => {
                        entries.remove(&key);
                    }
                    Some(value) => {
                        let committed = decode_value(value).ok_or(OffsetsError::Corrupt {
                            offset: record.offset,
                            reason: "bad value",
                        })?;
                        entries.insert(
                            key,
                            Entry {
                                committed,
                                log_offset: record.offset,
                            },
                        );
                    }
                }
            }
            next = read.info.next_offset;
        }
        let store = Self {
            log,
            entries: Mutex::new(entries),
            clock,
        };
        let live_offsets = lock(&store.entries).len();
        let compacted = records_replayed > live_offsets as u64;
        if compacted {
            store.compact()?;
        }
        Ok((
            store,
            OffsetsRecovery {
                log: log_report,
                records_replayed,
                live_offsets,
                compacted,
            },
        ))
    }

    /// Appends the live entries as a snapshot in a new segment and deletes
    /// the older segments.
    fn compact(&self) -> Result<(), LogError> {
        self.log.roll()?;
        let snapshot_start = self.log.log_end_offset();
        let mut entries = lock(&self.entries);
        let keys: Vec<OffsetKey> = entries.keys().cloned().collect();
        for chunk in keys.chunks(SNAPSHOT_BATCH_RECORDS) {
            let encoded: Vec<(Vec<u8>, Vec<u8>)> = chunk
                .iter()
                .map(|key| (encode_key(key), encode_value(&entries[key].committed)))
                .collect();
            let records: Vec<Record<'_>> = encoded
                .iter()
                .map(|(key, value)| Record::keyed(self.now(), key, value))
                .collect();
            let info = self.log.append(&records, ProducerInfo::NONE)?;
            for (index, key) in chunk.iter().enumerate() {
                if let Some(entry) = entries.get_mut(key) {
                    entry.log_offset = info.base_offset + index as u64;
                }
            }
        }
        drop(entries);
        self.log.flush()?;
        self.log.delete_before(snapshot_start)?;
        Ok(())
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Commits offsets atomically (one batch) and durably.
    pub fn commit(&self, commits: &[(OffsetKey, u64, String)]) -> Result<(), LogError> {
        if commits.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let encoded: Vec<(Vec<u8>, CommittedOffset)> = commits
            .iter()
            .map(|(key, offset, metadata)| {
                (
                    encode_key(key),
                    CommittedOffset {
                        offset: *offset,
                        metadata: metadata.clone(),
                        commit_timestamp_ms: now,
                    },
                )
            })
            .collect();
        let values: Vec<Vec<u8>> = encoded
            .iter()
            .map(|(_, value)| encode_value(value))
            .collect();
        let records: Vec<Record<'_>> = encoded
            .iter()
            .zip(&values)
            .map(|((key, _), value)| Record::keyed(now, key, value))
            .collect();
        let info = self.log.append(&records, ProducerInfo::NONE)?;
        let mut entries = lock(&self.entries);
        for (index, ((key, _, _), (_, committed))) in commits.iter().zip(encoded).enumerate() {
            let log_offset = info.base_offset + index as u64;
            let newer = entries
                .get(key)
                .is_none_or(|entry| entry.log_offset < log_offset);
            if newer {
                entries.insert(
                    key.clone(),
                    Entry {
                        committed,
                        log_offset,
                    },
                );
            }
        }
        Ok(())
    }

    /// Deletes every committed offset matching `filter`, durably.
    pub fn remove_where(&self, filter: impl Fn(&OffsetKey) -> bool) -> Result<usize, LogError> {
        let keys: Vec<OffsetKey> = lock(&self.entries)
            .keys()
            .filter(|key| filter(key))
            .cloned()
            .collect();
        let now = self.now();
        for chunk in keys.chunks(SNAPSHOT_BATCH_RECORDS) {
            let encoded: Vec<Vec<u8>> = chunk.iter().map(encode_key).collect();
            let records: Vec<Record<'_>> = encoded
                .iter()
                .map(|key| Record {
                    timestamp_ms: now,
                    key: Some(key),
                    value: None,
                    headers: &[],
                })
                .collect();
            let info = self.log.append(&records, ProducerInfo::NONE)?;
            let mut entries = lock(&self.entries);
            for (index, key) in chunk.iter().enumerate() {
                let log_offset = info.base_offset + index as u64;
                if entries
                    .get(key)
                    .is_some_and(|entry| entry.log_offset < log_offset)
                {
                    entries.remove(key);
                }
            }
        }
        Ok(keys.len())
    }

    pub fn get(&self, key: &OffsetKey) -> Option<CommittedOffset> {
        lock(&self.entries)
            .get(key)
            .map(|entry| entry.committed.clone())
    }

    pub fn group(&self, group: &str) -> Vec<(String, u32, CommittedOffset)> {
        lock(&self.entries)
            .iter()
            .filter(|((entry_group, _, _), _)| entry_group == group)
            .map(|((_, topic, partition), entry)| {
                (topic.clone(), *partition, entry.committed.clone())
            })
            .collect()
    }

    pub fn groups(&self) -> Vec<String> {
        let entries = lock(&self.entries);
        let mut groups: Vec<String> = Vec::new();
        for (group, _, _) in entries.keys() {
            if groups.last() != Some(group) {
                groups.push(group.clone());
            }
        }
        groups
    }

    pub fn log(&self) -> &Partition {
        &self.log
    }
}

/// A record batch of committed offsets (`None`: the key is deleted) in the
/// offsets log's format, for a log that someone else appends to (a
/// cluster's replicated offsets). Names must be shorter than 64 KiB and
/// metadata at most [`crate::OFFSET_METADATA_BYTES_MAX`].
pub fn offsets_batch(
    commits: &[(&str, &str, u32, Option<CommittedOffset>)],
    timestamp_ms: i64,
) -> Result<Vec<u8>, LogError> {
    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = commits
        .iter()
        .map(|(group, topic, partition, committed)| {
            let key = encode_key(&((*group).to_string(), (*topic).to_string(), *partition));
            (key, committed.as_ref().map(encode_value))
        })
        .collect();
    let records: Vec<Record<'_>> = encoded
        .iter()
        .map(|(key, value)| Record {
            timestamp_ms,
            key: Some(key),
            value: value.as_deref(),
            headers: &[],
        })
        .collect();
    let mut batch = Vec::new();
    crate::batch::encode(&records, ProducerInfo::NONE, &mut batch)?;
    Ok(batch)
}

/// Decodes one record of an offsets log: its (group, topic, partition)
/// and the committed offset (`None`: deleted); `None` if it is not one.
pub fn decode_offset_record(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Option<((String, String, u32), Option<CommittedOffset>)> {
    let key = decode_key(key)?;
    match value {
        None => Some((key, None)),
        Some(value) => Some((key, Some(decode_value(value)?))),
    }
}

fn encode_key((group, topic, partition): &OffsetKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + group.len() + topic.len());
    bytes.push(KEY_VERSION);
    for text in [group, topic] {
        let length = u16::try_from(text.len()).expect("names are checked shorter than 64 KiB");
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
    }
    bytes.extend_from_slice(&partition.to_le_bytes());
    bytes
}

fn decode_key(bytes: Option<&[u8]>) -> Option<OffsetKey> {
    let mut reader = Reader(bytes?);
    if reader.u8()? != KEY_VERSION {
        return None;
    }
    let group = reader.string()?;
    let topic = reader.string()?;
    let partition = u32::from_le_bytes(reader.take(4)?.try_into().ok()?);
    reader.0.is_empty().then_some((group, topic, partition))
}

fn encode_value(committed: &CommittedOffset) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(19 + committed.metadata.len());
    bytes.push(VALUE_VERSION);
    bytes.extend_from_slice(&committed.offset.to_le_bytes());
    bytes.extend_from_slice(&committed.commit_timestamp_ms.to_le_bytes());
    let length = u16::try_from(committed.metadata.len()).expect("checked: at most 4 KiB");
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(committed.metadata.as_bytes());
    bytes
}

fn decode_value(bytes: &[u8]) -> Option<CommittedOffset> {
    let mut reader = Reader(bytes);
    if reader.u8()? != VALUE_VERSION {
        return None;
    }
    let offset = u64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let commit_timestamp_ms = i64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let metadata = reader.string()?;
    reader.0.is_empty().then_some(CommittedOffset {
        offset,
        metadata,
        commit_timestamp_ms,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (head, tail) = self.0.split_at(count);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|bytes| bytes[0])
    }

    fn string(&mut self) -> Option<String> {
        let length = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(length)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip_and_reject_garbage() {
        let key = ("group".to_string(), "topic".to_string(), 7);
        assert_eq!(decode_key(Some(&encode_key(&key))), Some(key.clone()));
        let value = CommittedOffset {
            offset: 42,
            metadata: "meta".into(),
            commit_timestamp_ms: -5,
        };
        assert_eq!(decode_value(&encode_value(&value)), Some(value.clone()));
        let encoded = encode_key(&key);
        for length in 0..encoded.len() {
            assert_eq!(decode_key(Some(&encoded[..length])), None);
        }
        assert_eq!(decode_key(None), None);
        let mut trailing = encode_value(&value);
        trailing.push(0);
        assert_eq!(decode_value(&trailing), None);
    }

    #[test]
    fn a_batch_of_commits_and_deletions_reads_back_record_by_record() {
        let kept = CommittedOffset {
            offset: 9,
            metadata: "m".into(),
            commit_timestamp_ms: 5,
        };
        let commits = [("g", "t", 0, Some(kept.clone())), ("g", "t", 1, None)];
        let batch = offsets_batch(&commits, 5).expect("a batch");
        let parsed = crate::batch::Batch::parse(&batch).expect("a valid batch");
        let records: Vec<_> = parsed
            .records()
            .expect("uncompressed")
            .map(|record| {
                let record = record.expect("a record");
                decode_offset_record(record.key, record.value).expect("an offsets record")
            })
            .collect();
        let key = |partition| ("g".to_string(), "t".to_string(), partition);
        assert_eq!(records, vec![(key(0), Some(kept)), (key(1), None)]);
        assert_eq!(decode_offset_record(Some(b"x"), None), None);
    }
}
