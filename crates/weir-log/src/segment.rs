//! Segments: the files a partition log is made of, and the scan that
//! validates them batch by batch.
//!
//! A segment is named by the offset of its first record, zero-padded to 20
//! digits: `00000000000000000000.log` holds stored batches back to back (a
//! weir frame and a Kafka record batch v2 each, see [`crate::frame`]), with
//! its offset index in `.index` and its time index in `.timeindex` (see
//! [`crate::index`]). Positions in a segment are those of frames.

use std::io;
use std::sync::Arc;

use weir_io::{File, OpenMode, Storage};

use crate::batch::BatchError;
use crate::checkpoint::SegmentSummary;
use crate::error::LogError;
use crate::frame::{StoredBatch, StoredHeader, FRAME_MAGIC, STORED_HEADER_BYTES};
use crate::index::{self, IndexBuilder, IndexBytes};

/// How much a scan reads at a time.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// The file name of the segment starting at `base_offset`.
pub fn log_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// The offset index file name of the segment starting at `base_offset`.
pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.index")
}

/// The time index file name of the segment starting at `base_offset`.
pub fn time_index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.timeindex")
}

/// What kind of segment file a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentFile {
    /// `.log`
    Log,
    /// `.index`
    Index,
    /// `.timeindex`
    TimeIndex,
}

/// Parses a segment file name into its base offset and kind.
pub fn parse_file_name(name: &str) -> Option<(u64, SegmentFile)> {
    let (stem, extension) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let kind = match extension {
        "log" => SegmentFile::Log,
        "index" => SegmentFile::Index,
        "timeindex" => SegmentFile::TimeIndex,
        _ => return None,
    };
    Some((stem.parse().ok()?, kind))
}

/// The indexes of a segment.
#[derive(Debug)]
pub(crate) enum SegmentIndex {
    /// The active segment's (or a rebuilt one's) indexes, growing in memory.
    Building(IndexBuilder),
    /// A sealed segment's indexes.
    Sealed {
        offsets: IndexBytes,
        times: IndexBytes,
    },
    /// A sealed segment whose index files have not been loaded yet.
    Unloaded,
}

/// One segment of a partition log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: u64,
    pub file: Arc<dyn File>,
    /// Bytes of valid batches.
    pub size: u32,
    /// The offset after the last record.
    pub next_offset: u64,
    /// The largest timestamp and its batch's offset.
    pub max_timestamp: Option<(i64, u64)>,
    /// Bytes known durable.
    pub synced_position: u32,
    /// When the segment was created or opened, by the log's clock.
    pub created_ms: u64,
    pub index: SegmentIndex,
    /// Whether the segment and its index files are durable and listed in
    /// the checkpoint.
    pub trusted: bool,
    /// Index files written at seal time and not yet synced.
    pub unsynced_index_files: Vec<Arc<dyn File>>,
    /// Bytes of the file reserved ahead of appends (at least `size`).
    pub allocated: u64,
}

impl Segment {
    /// A new, empty segment that will take appends.
    pub fn empty(base_offset: u64, file: Arc<dyn File>, now: u64) -> Self {
        Self {
            base_offset,
            file,
            size: 0,
            next_offset: base_offset,
            max_timestamp: None,
            synced_position: 0,
            created_ms: now,
            index: SegmentIndex::Building(IndexBuilder::default()),
            trusted: false,
            unsynced_index_files: Vec::new(),
            allocated: 0,
        }
    }

    pub fn name(&self) -> String {
        log_file_name(self.base_offset)
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            base_offset: self.base_offset,
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
        }
    }

    /// The offset relative to the segment's base.
    pub fn relative(&self, offset: u64) -> u32 {
        let relative = offset - self.base_offset;
        assert!(
            relative <= u64::from(u32::MAX),
            "offset {offset} is outside its segment"
        );
        u32::try_from(relative).expect("checked above")
    }

    /// The offset index bytes, if loaded.
    pub fn offset_index(&self) -> Option<&[u8]> {
        match &self.index {
            SegmentIndex::Building(builder) => Some(&builder.offsets),
            SegmentIndex::Sealed { offsets, .. } => Some(offsets),
            SegmentIndex::Unloaded => None,
        }
    }

    /// The time index bytes, if loaded.
    pub fn time_index(&self) -> Option<&[u8]> {
        match &self.index {
            SegmentIndex::Building(builder) => Some(&builder.times),
            SegmentIndex::Sealed { times, .. } => Some(times),
            SegmentIndex::Unloaded => None,
        }
    }

    /// Where to start reading for `offset`: a batch position at or before
    /// it, and that batch's base offset.
    pub fn locate(&self, offset: u64) -> (u32, u64) {
        let relative = self.relative(offset.max(self.base_offset));
        match self
            .offset_index()
            .and_then(|bytes| index::lookup_offset(bytes, relative))
        {
            Some(entry) => (
                entry.position,
                self.base_offset + u64::from(entry.relative_offset),
            ),
            None => (0, self.base_offset),
        }
    }

    /// Loads a sealed segment's index files, checking their shape and that
    /// their last entries point at the batches they name; rebuilds them from
    /// the log when they disagree. Returns whether it rebuilt.
    pub fn load_index(
        &mut self,
        storage: &dyn Storage,
        interval_bytes: u32,
    ) -> Result<bool, LogError> {
        if !matches!(self.index, SegmentIndex::Unloaded) {
            return Ok(false);
        }
        match self.load_index_files(storage) {
            Ok(Some((offsets, times))) => {
                self.index = SegmentIndex::Sealed { offsets, times };
                Ok(false)
            }
            Ok(None) | Err(_) => {
                self.rebuild_index(storage, interval_bytes)?;
                Ok(true)
            }
        }
    }

    fn load_index_files(
        &self,
        storage: &dyn Storage,
    ) -> io::Result<Option<(IndexBytes, IndexBytes)>> {
        let offsets = storage
            .open_file(&index_file_name(self.base_offset), OpenMode::Existing)?
            .view()?;
        let times = storage
            .open_file(&time_index_file_name(self.base_offset), OpenMode::Existing)?
            .view()?;
        let relative_end = self.next_offset - self.base_offset;
        if index::check_offset_index(&offsets, self.size).is_err()
            || index::check_time_index(&times, relative_end).is_err()
        {
            return Ok(None);
        }
        // The last offset entry must point at the batch it names.
        let count = offsets.len() / index::OFFSET_ENTRY_BYTES;
        if let Some(last) = count.checked_sub(1) {
            let entry = index::offset_entry(&offsets, last);
            let expected = self.base_offset + u64::from(entry.relative_offset);
            match read_batch_at(self.file.as_ref(), u64::from(entry.position)) {
                Ok(stored) if stored.header.base_offset == expected => {}
                _ => return Ok(None),
            }
        }
        // The last time entry must hold the segment's largest timestamp.
        let last_time = index::last_time_entry(&times).map(|entry| entry.timestamp);
        if last_time != self.max_timestamp.map(|(timestamp, _)| timestamp) {
            return Ok(None);
        }
        Ok(Some((IndexBytes::File(offsets), IndexBytes::File(times))))
    }

    /// Rebuilds the indexes of a sealed segment by scanning it, and writes
    /// them to their files (unsynced: they are derived data). A batch that
    /// reads corrupt ends the scan: the batches before it are indexed in
    /// memory only (no file claims to index the whole segment), so they
    /// stay readable and a truncation can still find its cut before the
    /// corrupt batch; a read that reaches it reports it.
    pub fn rebuild_index(
        &mut self,
        storage: &dyn Storage,
        interval_bytes: u32,
    ) -> Result<(), LogError> {
        let scan = scan(
            self.file.as_ref(),
            self.base_offset,
            u64::from(self.size),
            interval_bytes,
        )
        .map_err(|source| LogError::io("scanning", self.name(), source))?;
        if let Some(stop) = scan.stop {
            tracing::error!(
                segment = %self.name(),
                position = stop.position,
                reason = %stop.reason,
                "a segment's index was rebuilt only up to a corrupt batch"
            );
            // The partial index points only at batches that read whole.
            assert!(stop.position <= self.size);
            self.index = SegmentIndex::Sealed {
                offsets: IndexBytes::Memory(scan.index.offsets),
                times: IndexBytes::Memory(scan.index.times),
            };
            return Ok(());
        }
        let mut builder = scan.index;
        builder.seal();
        self.unsynced_index_files = write_index_files(storage, self.base_offset, &builder)?;
        self.index = SegmentIndex::Sealed {
            offsets: IndexBytes::Memory(builder.offsets),
            times: IndexBytes::Memory(builder.times),
        };
        Ok(())
    }
}

/// Writes a segment's index files under temporary names and renames them
/// into place (a mapped index file is never written to). Returns the files,
/// which the caller syncs before listing the segment in a checkpoint.
pub(crate) fn write_index_files(
    storage: &dyn Storage,
    base_offset: u64,
    builder: &IndexBuilder,
) -> Result<Vec<Arc<dyn File>>, LogError> {
    let mut files = Vec::with_capacity(2);
    for (name, bytes) in [
        (index_file_name(base_offset), &builder.offsets),
        (time_index_file_name(base_offset), &builder.times),
    ] {
        let temporary = format!("{name}.tmp");
        let io = |source| LogError::io("writing index", temporary.clone(), source);
        let file = storage
            .open_file(&temporary, OpenMode::CreateIfMissing)
            .map_err(io)?;
        file.set_len(0).map_err(io)?;
        file.write_at(bytes, 0).map_err(io)?;
        storage.rename(&temporary, &name).map_err(io)?;
        files.push(file);
    }
    Ok(files)
}

/// Reads and checks the stored batch at `position` and returns its frame and
/// header. The bytes are read by the shared agreement rule
/// ([`weir_io::read_agreed`]), so a verdict that the batch is bad is about
/// what the storage holds, not about a read corrupted in flight.
pub(crate) fn read_batch_at(file: &dyn File, position: u64) -> Result<StoredHeader, ScanError> {
    let header = weir_io::read_agreed(file, position, STORED_HEADER_BYTES)?;
    let parsed = StoredHeader::parse(&header)?;
    let bytes = weir_io::read_agreed(file, position, parsed.stored_bytes() as usize)?;
    StoredBatch::parse(&bytes)?;
    Ok(parsed)
}

/// Why a scan stopped before the end of a segment.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("{0}")]
    Batch(#[from] BatchError),
    #[error("batch has base offset {found}, expected {expected}")]
    OffsetMismatch { expected: u64, found: u64 },
    #[error("batch would take the segment past {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// Where and why a scan stopped.
#[derive(Debug)]
pub(crate) struct ScanStop {
    pub position: u32,
    pub reason: ScanError,
}

/// What a walk over a segment's batches found.
#[derive(Debug)]
pub(crate) struct WalkReport {
    /// Bytes of valid batches from the start of the segment.
    pub valid_bytes: u32,
    /// The offset after the last valid batch.
    pub next_offset: u64,
    pub batches: u64,
    /// The largest `synced_position` claimed by a valid batch.
    pub synced_claim: u32,
    /// Set when the walk met an invalid batch before `length`.
    pub stop: Option<ScanStop>,
}

/// A position in a walk, which never passes `u32::MAX` (its length is
/// capped there).
fn below_4_gib(position: u64) -> u32 {
    u32::try_from(position).expect("the walk's length is at most u32::MAX")
}

/// Walks the first `length` bytes of a segment: checks each stored batch
/// (frame, header, CRCs, offsets continuing from `base_offset`) and hands
/// it to `visit` with its position. Stops at the first batch that fails a
/// check; I/O errors other than on the data are returned.
pub(crate) fn walk(
    file: &dyn File,
    base_offset: u64,
    length: u64,
    mut visit: impl FnMut(u32, &StoredHeader),
) -> io::Result<WalkReport> {
    let length = length.min(u64::from(u32::MAX));
    let mut report = WalkReport {
        valid_bytes: 0,
        next_offset: base_offset,
        batches: 0,
        synced_claim: 0,
        stop: None,
    };
    let mut reader = ChunkReader::new(file, length);
    let mut position = 0u64;
    while position < length {
        let stop = |reason| ScanStop {
            position: below_4_gib(position),
            reason,
        };
        let stored = match reader.batch_at(position) {
            Ok(stored) => stored,
            Err(ScanError::Io(error)) if !is_data_error(&error) => return Err(error),
            Err(reason) => {
                report.stop = Some(stop(reason));
                break;
            }
        };
        let header = stored.header;
        if header.base_offset != report.next_offset {
            report.stop = Some(stop(ScanError::OffsetMismatch {
                expected: report.next_offset,
                found: header.base_offset,
            }));
            break;
        }
        if header.last_offset() - base_offset > u64::from(u32::MAX) {
            report.stop = Some(stop(ScanError::TooLarge {
                limit: u64::from(u32::MAX),
            }));
            break;
        }
        visit(below_4_gib(position), &stored);
        report.synced_claim = report.synced_claim.max(stored.synced_position);
        report.batches += 1;
        report.next_offset = header.next_offset();
        position += u64::from(stored.stored_bytes());
        report.valid_bytes = below_4_gib(position);
    }
    Ok(report)
}

/// What a scan of a segment found: a walk, and the indexes it rebuilt.
#[derive(Debug)]
pub(crate) struct ScanReport {
    /// Bytes of valid batches from the start of the segment.
    pub valid_bytes: u32,
    /// The offset after the last valid batch.
    pub next_offset: u64,
    pub batches: u64,
    pub index: IndexBuilder,
    /// The largest `synced_position` claimed by a valid batch.
    pub synced_claim: u32,
    /// The largest timestamp and its batch's offset.
    pub max_timestamp: Option<(i64, u64)>,
    /// Set when the scan met an invalid batch before `length`.
    pub stop: Option<ScanStop>,
}

/// Walks the first `length` bytes of a segment (see [`walk`]) and builds
/// its indexes.
pub(crate) fn scan(
    file: &dyn File,
    base_offset: u64,
    length: u64,
    interval_bytes: u32,
) -> io::Result<ScanReport> {
    let mut index = IndexBuilder::default();
    let mut max_timestamp: Option<(i64, u64)> = None;
    let walked = walk(file, base_offset, length, |position, stored| {
        let header = &stored.header;
        index.add_batch(
            u32::try_from(header.base_offset - base_offset)
                .expect("the walk stops before 2^32 offsets"),
            position,
            header.max_timestamp,
            interval_bytes,
        );
        if max_timestamp.is_none_or(|(max, _)| header.max_timestamp > max) {
            max_timestamp = Some((header.max_timestamp, header.base_offset));
        }
    })?;
    Ok(ScanReport {
        valid_bytes: walked.valid_bytes,
        next_offset: walked.next_offset,
        batches: walked.batches,
        index,
        synced_claim: walked.synced_claim,
        max_timestamp,
        stop: walked.stop,
    })
}

/// Whether an I/O error means the data ends early (a scan stops there, as at
/// a torn batch) rather than that the storage failed. A read that fails
/// even when retried fails the scan: truncating data that could not be read
/// would lose it.
fn is_data_error(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::UnexpectedEof
}

/// Looks for valid batches in `from..length` of a segment (after the point
/// where a scan stopped), returning the largest `synced_position` any of
/// them claims, or `None` if there is none. A batch found there with a claim
/// beyond the stop point proves that the bytes at the stop point had been
/// synced: they are corrupt, not a torn write. Every byte is read by the
/// agreement rule: a flipped bit in a read must not hide the evidence and
/// make recovery cut synced data as a torn tail.
pub(crate) fn find_synced_claim_after(
    file: &dyn File,
    from: u64,
    length: u64,
    min_offset: u64,
) -> io::Result<Option<u32>> {
    let mut best: Option<u32> = None;
    let mut chunk_start = from + 1;
    while chunk_start < length {
        let want = usize::try_from((length - chunk_start).min(SCAN_CHUNK_BYTES as u64))
            .expect("at most a chunk");
        let chunk = weir_io::read_agreed(file, chunk_start, want)?;
        if chunk.is_empty() {
            break;
        }
        for (at, window) in chunk.windows(FRAME_MAGIC.len()).enumerate() {
            if window != FRAME_MAGIC {
                continue;
            }
            let candidate = chunk_start + at as u64;
            if let Some(claim) = claim_at(file, candidate, length, min_offset)? {
                best = Some(best.unwrap_or(0).max(claim));
            }
        }
        if chunk_start + (chunk.len() as u64) >= length {
            break;
        }
        // Overlap the chunks so that a magic cut by the chunk's end is
        // still seen.
        chunk_start += (chunk.len() - (FRAME_MAGIC.len() - 1).min(chunk.len())).max(1) as u64;
    }
    Ok(best)
}

/// The synced position claimed by a valid stored batch at `candidate`, if
/// there is one there that lies within the file and is not older than
/// `min_offset`.
fn claim_at(
    file: &dyn File,
    candidate: u64,
    length: u64,
    min_offset: u64,
) -> io::Result<Option<u32>> {
    let header = weir_io::read_agreed(file, candidate, STORED_HEADER_BYTES)?;
    let Ok(parsed) = StoredHeader::parse(&header) else {
        return Ok(None);
    };
    if parsed.header.base_offset < min_offset
        || candidate + u64::from(parsed.stored_bytes()) > length
    {
        return Ok(None);
    }
    match read_batch_at(file, candidate) {
        Ok(found) => Ok(Some(found.synced_position)),
        Err(ScanError::Io(error)) if !is_data_error(&error) => Err(error),
        Err(_) => Ok(None),
    }
}

/// Sequential reads of a file through a buffer, for scans.
struct ChunkReader<'a> {
    file: &'a dyn File,
    length: u64,
    buffer: Vec<u8>,
    /// File position of `buffer[0]`.
    start: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(file: &'a dyn File, length: u64) -> Self {
        Self {
            file,
            length,
            buffer: Vec::new(),
            start: 0,
        }
    }

    /// Makes `position..position + wanted` (clamped to the length) buffered
    /// and returns the buffered bytes from `position`.
    fn fill(&mut self, position: u64, wanted: usize) -> io::Result<&[u8]> {
        let available =
            usize::try_from((self.length - position).min(wanted as u64)).expect("at most `wanted`");
        let end = self.start + self.buffer.len() as u64;
        if position < self.start || position + available as u64 > end {
            let size = available
                .max(SCAN_CHUNK_BYTES)
                .min(usize::try_from(self.length - position).unwrap_or(usize::MAX));
            self.buffer.resize(size, 0);
            let read = self.file.read_at(&mut self.buffer, position)?;
            self.buffer.truncate(read);
            self.start = position;
        }
        let from = usize::try_from(position - self.start).expect("within the buffer");
        Ok(&self.buffer[from..])
    }

    /// The checked stored batch at `position`. On a failed check or read,
    /// the batch is read again by the agreement rule before the failure is
    /// believed.
    fn batch_at(&mut self, position: u64) -> Result<StoredHeader, ScanError> {
        match self.buffered_batch_at(position) {
            Ok(header) => Ok(header),
            Err(_) => {
                self.buffer.clear();
                read_batch_at(self.file, position)
            }
        }
    }

    fn buffered_batch_at(&mut self, position: u64) -> Result<StoredHeader, ScanError> {
        let header = StoredHeader::parse(self.fill(position, STORED_HEADER_BYTES)?)?;
        let bytes = self.fill(position, header.stored_bytes() as usize)?;
        StoredBatch::parse(bytes)?;
        Ok(header)
    }
}

/// Opens the segment file of `base_offset`.
pub(crate) fn open_log_file(
    storage: &dyn Storage,
    base_offset: u64,
    mode: OpenMode,
) -> Result<Arc<dyn File>, LogError> {
    let name = log_file_name(base_offset);
    storage
        .open_file(&name, mode)
        .map_err(|source| LogError::io("opening", name, source))
}
