//! The consumer groups' committed offsets of a cluster, as applied from
//! the committed records of the replicated offsets partition (in the
//! offsets log's record format, [`weir_log::offsets_batch`]).

use std::collections::BTreeMap;

use weir_log::{decode_offset_record, CommittedOffset, LogError, Partition};

/// The offsets applied so far, and how far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicatedOffsets {
    next_offset: u64,
    entries: BTreeMap<(String, String, u32), CommittedOffset>,
}

impl ReplicatedOffsets {
    /// The offset of the next record to apply.
    pub fn applied_offset(&self) -> u64 {
        self.next_offset
    }

    /// Applies the records committed since the last call (below the
    /// partition's high watermark); how many. A record that does not
    /// decode stops the reading: nothing after it is applied.
    pub fn catch_up(&mut self, partition: &Partition) -> Result<u64, String> {
        let mut applied = 0;
        if self.next_offset < partition.log_start_offset() {
            // Only an offsets topic created with retention (before weir
            // exempted it) loses records: the commits deleted are gone,
            // as Kafka's expire; the later ones still apply.
            tracing::warn!(
                log_start = partition.log_start_offset(),
                applied = self.next_offset,
                "offsets records lost to retention; applying from the log start"
            );
            self.next_offset = partition.log_start_offset();
        }
        while self.next_offset < partition.high_watermark() {
            let read = partition
                .read(self.next_offset, 1 << 20)
                .map_err(|error| error.to_string())?;
            let before = self.next_offset;
            for record in read.records() {
                let record = record.map_err(|error| LogError::from(error).to_string())?;
                if record.offset < self.next_offset {
                    continue;
                }
                let Some((key, committed)) = decode_offset_record(record.key, record.value) else {
                    return Err(format!("undecodable offsets record at {}", record.offset));
                };
                match committed {
                    Some(committed) => self.entries.insert(key, committed),
                    None => self.entries.remove(&key),
                };
                self.next_offset = record.offset + 1;
                applied += 1;
            }
            if self.next_offset == before {
                break;
            }
        }
        Ok(applied)
    }

    /// A group's committed offsets: (topic, partition, offset).
    pub fn group(&self, group: &str) -> Vec<(String, u32, CommittedOffset)> {
        self.entries
            .iter()
            .filter(|((name, _, _), _)| name == group)
            .map(|((_, topic, partition), committed)| {
                (topic.clone(), *partition, committed.clone())
            })
            .collect()
    }

    /// The (topic, partition) keys of a group's offsets.
    pub fn keys_of(&self, group: &str) -> Vec<(String, u32)> {
        self.group(group)
            .into_iter()
            .map(|(topic, partition, _)| (topic, partition))
            .collect()
    }

    /// Every group with committed offsets.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .entries
            .keys()
            .map(|(group, _, _)| group.clone())
            .collect();
        groups.dedup();
        groups
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir_io::{ManualClock, SimStorage, Storage};
    use weir_log::{offsets_batch, HighWatermarkPolicy, LogConfig};

    use super::*;

    fn commit(offset: u64) -> Option<CommittedOffset> {
        Some(CommittedOffset {
            offset,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        })
    }

    /// An offsets topic created with retention (as weir did before it
    /// exempted that topic) lost its first records: a node rebuilding
    /// the offsets applies what is left rather than refusing them all.
    #[test]
    fn offsets_after_records_lost_to_retention_still_apply() {
        let dir: Arc<dyn Storage> = Arc::new(SimStorage::new(4));
        let config = LogConfig {
            high_watermark: HighWatermarkPolicy::SetByOwner,
            segment_bytes: 1024,
            ..LogConfig::default()
        };
        let (partition, _) =
            Partition::open(dir, Arc::new(ManualClock::new(0)), config).expect("a log");
        for round in 0..60 {
            let group = format!("g{}", round % 4);
            let batch = offsets_batch(&[(&group, "t", 0, commit(round))], 0).expect("a batch");
            partition.append_batch(&batch).expect("an append");
        }
        partition.set_high_watermark(partition.log_end_offset());
        assert_eq!(partition.delete_before(30).expect("a deletion"), 30);
        assert!(partition.segment_base_offsets()[0] > 0, "a segment deleted");
        let mut offsets = ReplicatedOffsets::default();
        assert_eq!(offsets.catch_up(&partition), Ok(30));
        assert_eq!(offsets.group("g3")[0].2.offset, 59);
        assert_eq!(offsets.applied_offset(), 60);
    }
}
