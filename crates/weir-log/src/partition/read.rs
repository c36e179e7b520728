//! Reading: whole stored batches from the one holding an offset, every one
//! checked against both CRCs before it is returned; records decoded (and
//! decompressed) from them; the first record at or after a timestamp.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use weir_io::sync::lock;
use weir_io::File;

use super::{Isolation, Partition, ReadInfo, TimestampOffset};
use crate::batch::{Batch, BatchError, Compression, RecordView, Records};
use crate::config::READ_BYTES_MAX;
use crate::error::LogError;
use crate::frame::{stored_batches, StoredBatch, StoredHeader, STORED_HEADER_BYTES};
use crate::index;
use crate::segment::{self, SegmentIndex};

/// Stored batches read from a log, every one checked against its CRCs.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Stored batches back to back (a weir frame and a Kafka batch each).
    /// The first may start before the requested offset.
    stored: Vec<u8>,
    /// Offsets and watermarks.
    pub info: ReadInfo,
    uncompressed_bytes_max: usize,
    /// The records of each compressed batch, decompressed on the first call
    /// of [`ReadResult::records`] (`None` for an uncompressed batch).
    decompressed: OnceLock<Vec<Result<Option<Vec<u8>>, BatchError>>>,
}

impl ReadResult {
    pub(crate) fn new(stored: Vec<u8>, info: ReadInfo, uncompressed_bytes_max: usize) -> Self {
        Self {
            stored,
            info,
            uncompressed_bytes_max,
            decompressed: OnceLock::new(),
        }
    }

    /// The stored bytes: frames and batches, as in the segment.
    pub fn stored_bytes(&self) -> &[u8] {
        &self.stored
    }

    /// The stored batches, with their frames.
    pub fn stored_batches(&self) -> impl Iterator<Item = StoredBatch<'_>> {
        // Every batch was checked when it was read.
        stored_batches(&self.stored).map_while(Result::ok)
    }

    /// The Kafka batches, whose bytes are exactly what was produced or
    /// replicated (with the base offset and leader epoch stamped).
    pub fn batches(&self) -> impl Iterator<Item = Batch<'_>> {
        self.stored_batches().map(|stored| stored.batch)
    }

    /// Bytes of the Kafka batches, frames excluded: the size of a fetch
    /// response's records.
    pub fn kafka_bytes_len(&self) -> usize {
        self.batches().map(|batch| batch.bytes().len()).sum()
    }

    /// Appends the Kafka batches to `out`, back to back, as a Kafka fetch
    /// returns them.
    pub fn copy_kafka_batches(&self, out: &mut Vec<u8>) {
        out.reserve(self.kafka_bytes_len());
        for batch in self.batches() {
            out.extend_from_slice(batch.bytes());
        }
    }

    /// The stored bytes, and where each Kafka batch lies in them (frames
    /// excluded): for a reader that sends the batches on without copying
    /// them, as a fetch response written with vectored I/O does.
    pub fn into_kafka_batch_ranges(self) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        let mut ranges = Vec::new();
        let mut position = 0;
        for stored in self.stored_batches() {
            let start = position + crate::frame::FRAME_BYTES;
            let end = start + stored.batch.bytes().len();
            ranges.push(start..end);
            position = end;
        }
        // After the read: the batches were checked when read, so they
        // cover the stored bytes exactly.
        assert_eq!(
            position,
            self.stored.len(),
            "stored batches must fill the read"
        );
        (self.stored, ranges)
    }

    /// Whether the read returned nothing.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }

    /// The records from the requested offset on, decompressed where their
    /// batch is compressed.
    pub fn records(&self) -> ReadRecords<'_> {
        let decompressed = self.decompressed.get_or_init(|| {
            self.batches()
                .map(|batch| match batch.compression()? {
                    Compression::None => Ok(None),
                    compression => {
                        let mut out = Vec::new();
                        compression
                            .decompress(
                                &batch.bytes()[crate::batch::HEADER_BYTES..],
                                self.uncompressed_bytes_max,
                                &mut out,
                            )
                            .map_err(|error| error.into_batch_error(compression))?;
                        Ok(Some(out))
                    }
                })
                .collect()
        });
        ReadRecords {
            batches: Box::new(self.batches()),
            decompressed,
            index: 0,
            current: None,
            from: self.info.requested_offset,
            failed: false,
        }
    }
}

/// The records of a [`ReadResult`], from the requested offset on.
pub struct ReadRecords<'a> {
    batches: Box<dyn Iterator<Item = Batch<'a>> + 'a>,
    decompressed: &'a [Result<Option<Vec<u8>>, BatchError>],
    index: usize,
    current: Option<Records<'a>>,
    from: u64,
    failed: bool,
}

impl std::fmt::Debug for ReadRecords<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReadRecords")
            .field("batch", &self.index)
            .field("from", &self.from)
            .finish()
    }
}

impl<'a> ReadRecords<'a> {
    fn next_batch(&mut self) -> Option<Result<Records<'a>, BatchError>> {
        let batch = self.batches.next()?;
        let index = self.index;
        self.index += 1;
        let records = match &self.decompressed[index] {
            Err(error) => Err(error.clone()),
            Ok(Some(bytes)) => Ok(Records::new(batch.header(), bytes)),
            Ok(None) => batch.records(),
        };
        Some(records)
    }
}

impl<'a> Iterator for ReadRecords<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(records) = &mut self.current {
                match records.next() {
                    Some(Ok(record)) if record.offset < self.from => continue,
                    Some(Err(error)) => {
                        self.failed = true;
                        return Some(Err(error));
                    }
                    Some(ok) => return Some(ok),
                    None => self.current = None,
                }
            }
            match self.next_batch()? {
                Ok(records) => self.current = Some(records),
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

/// How much a read takes from the file at a time. Measured on the replay
/// benchmark: smaller reads, whose batches would still be in the cache
/// when their CRCs are checked, lost more to system calls than they gained
/// (128 KiB 0.76x of plain reads, 512 KiB 0.81x, 1 MiB 0.82x).
const READ_CHUNK_BYTES: usize = 1 << 20;

struct ReadPlan {
    file: Arc<dyn File>,
    base_offset: u64,
    end: u32,
    position: u32,
    batch_base: u64,
    from_index: bool,
    /// Batches ending after this offset are not returned.
    limit: u64,
}

enum ReadFailure {
    IndexDisagrees,
    Corrupt { position: u64, reason: String },
    Io(std::io::Error),
}

impl Partition {
    /// Reads whole committed batches from `offset` on, up to about
    /// `max_bytes` (at least one batch is returned if there is one, however
    /// large).
    pub fn read(&self, offset: u64, max_bytes: u32) -> Result<ReadResult, LogError> {
        self.read_with(offset, max_bytes, Isolation::Committed)
    }

    /// Like [`Partition::read`], up to the high watermark or to the log end.
    pub fn read_with(
        &self,
        offset: u64,
        max_bytes: u32,
        isolation: Isolation,
    ) -> Result<ReadResult, LogError> {
        let mut bytes = Vec::new();
        let info = self.read_into(offset, max_bytes, isolation, &mut bytes)?;
        Ok(ReadResult::new(
            bytes,
            info,
            self.config.max_uncompressed_batch_bytes as usize,
        ))
    }

    /// Reads stored batches into a buffer the caller reuses (see
    /// [`crate::frame::stored_batches`] to walk them).
    pub fn read_into(
        &self,
        offset: u64,
        max_bytes: u32,
        isolation: Isolation,
        out: &mut Vec<u8>,
    ) -> Result<ReadInfo, LogError> {
        let result = self.read_into_buffer(offset, max_bytes, isolation, out);
        if let Err(error) = &result {
            out.clear();
            if matches!(error, LogError::Corrupt { .. }) {
                self.corrupt_read.fetch_min(offset, Ordering::Relaxed);
            }
        }
        result
    }

    fn read_into_buffer(
        &self,
        offset: u64,
        max_bytes: u32,
        isolation: Isolation,
        out: &mut Vec<u8>,
    ) -> Result<ReadInfo, LogError> {
        let max_bytes = max_bytes.clamp(1, READ_BYTES_MAX);
        let mut rebuilt = false;
        loop {
            let Some((plan, info)) = self.plan_read(offset, isolation, out)? else {
                return Ok(ReadInfo {
                    next_offset: offset,
                    ..self.read_info(offset)
                });
            };
            match self.read_segment(&plan, &info, max_bytes, out) {
                Ok(next_offset) => {
                    return Ok(ReadInfo {
                        next_offset,
                        ..info
                    })
                }
                Err(ReadFailure::IndexDisagrees) if !rebuilt => {
                    rebuilt = true;
                    self.rebuild_index_of(plan.base_offset)?;
                }
                Err(failure) => return Err(self.read_error(&plan, failure)),
            }
        }
    }

    fn read_info(&self, offset: u64) -> ReadInfo {
        let inner = lock(&self.inner);
        ReadInfo {
            requested_offset: offset,
            next_offset: offset,
            high_watermark: inner.high_watermark,
            log_end_offset: inner.next_offset,
            log_start_offset: inner.log_start_offset,
        }
    }

    /// Where to read, under the lock; `None` when there is nothing to read
    /// at `offset` (it is the end).
    fn plan_read(
        &self,
        offset: u64,
        isolation: Isolation,
        out: &mut Vec<u8>,
    ) -> Result<Option<(ReadPlan, ReadInfo)>, LogError> {
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        let limit = match isolation {
            Isolation::Committed => inner.high_watermark,
            Isolation::Uncommitted => inner.next_offset,
        };
        let info = ReadInfo {
            requested_offset: offset,
            next_offset: offset,
            high_watermark: inner.high_watermark,
            log_end_offset: inner.next_offset,
            log_start_offset: inner.log_start_offset,
        };
        if offset < inner.log_start_offset || offset > limit {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: inner.log_start_offset,
                high_watermark: limit,
            });
        }
        if offset == limit {
            out.clear();
            return Ok(None);
        }
        let storage = Arc::clone(&self.storage);
        let interval = self.config.index_interval_bytes;
        let segment = inner
            .segment_for(offset)
            .expect("offsets from the log start on are in a segment");
        segment.load_index(storage.as_ref(), interval)?;
        let (position, batch_base) = segment.locate(offset);
        let plan = ReadPlan {
            file: Arc::clone(&segment.file),
            base_offset: segment.base_offset,
            end: segment.size,
            position,
            batch_base,
            from_index: position > 0,
            limit,
        };
        Ok(Some((plan, info)))
    }

    fn rebuild_index_of(&self, base_offset: u64) -> Result<(), LogError> {
        tracing::warn!(
            segment = %segment::log_file_name(base_offset),
            "offset index disagrees with the log; rebuilding it"
        );
        let mut inner = lock(&self.inner);
        let storage = Arc::clone(&self.storage);
        let interval = self.config.index_interval_bytes;
        let Some(segment) = inner.segments.get_mut(&base_offset) else {
            return Ok(());
        };
        if matches!(segment.index, SegmentIndex::Building(_)) {
            let scan = segment::scan(
                segment.file.as_ref(),
                segment.base_offset,
                u64::from(segment.size),
                interval,
            )
            .map_err(|source| LogError::io("scanning", segment.name(), source))?;
            segment.index = SegmentIndex::Building(scan.index);
            Ok(())
        } else {
            segment.rebuild_index(storage.as_ref(), interval)
        }
    }

    fn read_error(&self, plan: &ReadPlan, failure: ReadFailure) -> LogError {
        let segment = segment::log_file_name(plan.base_offset);
        match failure {
            ReadFailure::IndexDisagrees => LogError::Corrupt {
                segment,
                position: u64::from(plan.position),
                reason: "the batch at the indexed position does not match its index entry".into(),
            },
            ReadFailure::Corrupt { position, reason } => LogError::Corrupt {
                segment,
                position,
                reason,
            },
            ReadFailure::Io(source) => LogError::io("reading", segment, source),
        }
    }

    /// Reads stored batches of one segment into `out`; returns the next
    /// offset. Every batch returned passed both CRCs; one that fails is read
    /// again by the agreement rule before it is called corrupt.
    fn read_segment(
        &self,
        plan: &ReadPlan,
        info: &ReadInfo,
        max_bytes: u32,
        out: &mut Vec<u8>,
    ) -> Result<u64, ReadFailure> {
        let start = u64::from(plan.position);
        let end = u64::from(plan.end);
        let slack = u64::from(self.config.index_interval_bytes) + STORED_HEADER_BYTES as u64;
        let mut buffered = 0usize;
        let wanted = (end - start).min(u64::from(max_bytes) + slack);
        let initial = chunk(wanted.min(READ_CHUNK_BYTES as u64));
        fill(plan.file.as_ref(), out, &mut buffered, start, initial)
            .map_err(|error| short_or_io(error, start))?;
        let mut cursor = 0usize;
        let mut first: Option<usize> = None;
        let mut expected = plan.batch_base;
        let mut next_offset = info.requested_offset;
        while start + (cursor as u64) < end {
            let position = start + cursor as u64;
            if buffered - cursor < STORED_HEADER_BYTES {
                let more = chunk((end - start - buffered as u64).min(READ_CHUNK_BYTES as u64));
                if more == 0 {
                    break;
                }
                fill(plan.file.as_ref(), out, &mut buffered, start, more)
                    .map_err(|error| short_or_io(error, start + buffered as u64))?;
                continue;
            }
            let stored = match StoredHeader::parse(&out[cursor..buffered]) {
                Ok(stored) if stored.header.base_offset == expected => stored,
                Ok(_) | Err(_) if cursor == 0 && plan.from_index => {
                    return Err(ReadFailure::IndexDisagrees)
                }
                _ => {
                    self.reread_batch(plan, position, expected, out, cursor, &mut buffered)?;
                    continue;
                }
            };
            let length = stored.stored_bytes() as usize;
            if let Some(first) = first {
                if cursor + length - first > max_bytes as usize {
                    break;
                }
            }
            if buffered - cursor < length {
                if position + length as u64 > end {
                    return Err(ReadFailure::Corrupt {
                        position,
                        reason: "batch runs past the end of the segment".into(),
                    });
                }
                let more = (length - (buffered - cursor)).max(READ_CHUNK_BYTES);
                let more = chunk((end - start - buffered as u64).min(more as u64));
                fill(plan.file.as_ref(), out, &mut buffered, start, more)
                    .map_err(|error| short_or_io(error, start + buffered as u64))?;
                continue;
            }
            // Only the frame is checked so far: the header's fields after
            // Kafka's CRC field are trusted once the whole batch is.
            if StoredBatch::parse(&out[cursor..cursor + length]).is_err() {
                self.reread_batch(plan, position, expected, out, cursor, &mut buffered)?;
                continue;
            }
            let header = stored.header;
            if header.next_offset() > plan.limit {
                break;
            }
            // After the read: a checked batch that continues the offsets.
            debug_assert_eq!(header.base_offset, expected);
            if header.next_offset() > info.requested_offset && first.is_none() {
                first = Some(cursor);
            }
            if first.is_some() {
                next_offset = header.next_offset();
            }
            expected = header.next_offset();
            cursor += length;
        }
        match first {
            Some(first) => {
                out.truncate(cursor);
                out.drain(..first);
            }
            None => out.clear(),
        }
        Ok(next_offset)
    }

    /// Reads the stored batch at `position` again, by the agreement rule,
    /// into `out[cursor..]`; fails as corrupt if what the storage holds
    /// there is not a valid batch with the expected base offset. The rest
    /// of the buffer is dropped.
    fn reread_batch(
        &self,
        plan: &ReadPlan,
        position: u64,
        expected: u64,
        out: &mut Vec<u8>,
        cursor: usize,
        buffered: &mut usize,
    ) -> Result<(), ReadFailure> {
        let bytes =
            read_batch_bytes(plan.file.as_ref(), position).map_err(|error| match error {
                segment::ScanError::Io(error) => ReadFailure::Io(error),
                other => ReadFailure::Corrupt {
                    position,
                    reason: other.to_string(),
                },
            })?;
        let base_offset = StoredBatch::parse(&bytes)
            .map(|stored| stored.batch.header().base_offset)
            .map_err(|error| ReadFailure::Corrupt {
                position,
                reason: error.to_string(),
            })?;
        if base_offset != expected {
            return Err(ReadFailure::Corrupt {
                position,
                reason: format!("batch has base offset {base_offset}, expected {expected}"),
            });
        }
        if position + bytes.len() as u64 > u64::from(plan.end) {
            return Err(ReadFailure::Corrupt {
                position,
                reason: "batch runs past the end of the segment".into(),
            });
        }
        out.truncate(cursor);
        out.extend_from_slice(&bytes);
        *buffered = out.len();
        Ok(())
    }

    /// The first record with a timestamp at or after `timestamp_ms`, among
    /// the committed records, or `None` if every record is older.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        let (start_offset, high_watermark, candidates) = self.timestamp_candidates(timestamp_ms)?;
        let mut scratch = Vec::new();
        for (base, file, position, size) in candidates {
            let mut position = u64::from(position);
            while position < u64::from(size) {
                let corrupt = |reason: String| LogError::Corrupt {
                    segment: segment::log_file_name(base),
                    position,
                    reason,
                };
                let bytes =
                    read_batch_bytes(file.as_ref(), position).map_err(|error| match error {
                        segment::ScanError::Io(source) => {
                            LogError::io("reading", segment::log_file_name(base), source)
                        }
                        other => corrupt(other.to_string()),
                    })?;
                let stored =
                    StoredBatch::parse(&bytes).map_err(|error| corrupt(error.to_string()))?;
                let header = *stored.batch.header();
                if header.next_offset() > high_watermark {
                    return Ok(None);
                }
                if header.max_timestamp >= timestamp_ms && header.next_offset() > start_offset {
                    let limit = self.config.max_uncompressed_batch_bytes as usize;
                    let records = stored
                        .batch
                        .decode(&mut scratch, limit)
                        .map_err(|error| corrupt(error.to_string()))?;
                    for record in records {
                        let record = record.map_err(|error| corrupt(error.to_string()))?;
                        if record.offset >= start_offset && record.timestamp_ms >= timestamp_ms {
                            return Ok(Some(TimestampOffset {
                                offset: record.offset,
                                timestamp_ms: record.timestamp_ms,
                            }));
                        }
                    }
                }
                position += bytes.len() as u64;
            }
        }
        Ok(None)
    }

    /// The segments that may hold a record at or after `timestamp_ms`, with
    /// the position to start from in each.
    #[allow(clippy::type_complexity)]
    fn timestamp_candidates(
        &self,
        timestamp_ms: i64,
    ) -> Result<(u64, u64, Vec<(u64, Arc<dyn File>, u32, u32)>), LogError> {
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        let storage = Arc::clone(&self.storage);
        let interval = self.config.index_interval_bytes;
        let (log_start, high_watermark) = (inner.log_start_offset, inner.high_watermark);
        let mut candidates = Vec::new();
        for segment in inner.segments.values_mut() {
            if segment
                .max_timestamp
                .is_none_or(|(max, _)| max < timestamp_ms)
            {
                continue;
            }
            segment.load_index(storage.as_ref(), interval)?;
            let from = segment
                .time_index()
                .and_then(|times| index::lookup_time(times, timestamp_ms))
                .map_or(segment.base_offset, |entry| {
                    segment.base_offset + u64::from(entry.relative_offset)
                });
            let (position, _) = segment.locate(from.max(log_start));
            candidates.push((
                segment.base_offset,
                Arc::clone(&segment.file),
                position,
                segment.size,
            ));
        }
        Ok((log_start, high_watermark, candidates))
    }
}

/// A segment file shorter than the bytes the log wrote to it lost them
/// (a write that went astray, a file cut behind the log's back): corrupt
/// data at the end of what was read, which a replica cuts and repairs from
/// its peers, not a passing I/O error that every later read meets again.
fn short_or_io(error: std::io::Error, position: u64) -> ReadFailure {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        return ReadFailure::Corrupt {
            position,
            reason: error.to_string(),
        };
    }
    ReadFailure::Io(error)
}

/// Reads `wanted` more bytes of the file into `out[*buffered..]`, from
/// `start + *buffered`.
fn fill(
    file: &dyn File,
    out: &mut Vec<u8>,
    buffered: &mut usize,
    start: u64,
    wanted: usize,
) -> std::io::Result<()> {
    if wanted == 0 {
        return Ok(());
    }
    // The buffer keeps its length between reads: bytes past `buffered`
    // are stale and only overwritten, never zeroed again.
    if out.len() < *buffered + wanted {
        out.resize(*buffered + wanted, 0);
    }
    let read = file.read_at(
        &mut out[*buffered..*buffered + wanted],
        start + *buffered as u64,
    )?;
    *buffered += read;
    if read < wanted {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "segment shorter than its recorded size",
        ));
    }
    Ok(())
}

/// Reads the whole stored batch at `position` by the agreement rule and
/// checks it.
pub(crate) fn read_batch_bytes(
    file: &dyn File,
    position: u64,
) -> Result<Vec<u8>, segment::ScanError> {
    let header = weir_io::read_agreed(file, position, STORED_HEADER_BYTES)?;
    let parsed = StoredHeader::parse(&header)?;
    let bytes = weir_io::read_agreed(file, position, parsed.stored_bytes() as usize)?;
    StoredBatch::parse(&bytes)?;
    Ok(bytes)
}

/// Bytes to read, already bounded by a buffer's size.
fn chunk(bytes: u64) -> usize {
    usize::try_from(bytes).expect("bounded by a usize")
}
