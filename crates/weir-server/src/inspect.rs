//! Offline tools on a data directory (`weir inspect ...`): check every CRC
//! of the stream command log and of weir-log segments, dump records,
//! batches and indexes, report torn tails and corruption — without
//! changing a byte. Each returns a report text and whether everything was
//! valid, so the binary can exit non-zero on corruption.

use std::fmt::Write as _;
use std::path::Path;

use weir_io::{read_whole_file, EntryKind, OsStorage, Storage};
use weir_log::inspect::{
    inspect_partition, inspect_partition_files, BatchSummary, PartitionFiles, SegmentProblem,
};
use weir_replication::{inspect_side_file, SIDE_FILE};
use weir_stream::persistence::{log_generation, scan_log, LogEnd};

/// What an inspection found.
#[derive(Debug, Default)]
pub struct Report {
    /// Human-readable lines.
    pub text: String,
    /// Whether corruption was found (torn tails are not corruption).
    pub corrupt: bool,
}

/// Checks the stream command log(s) in `dir` (a data directory or its
/// `streams` subdirectory). With `dump`, lists every record's commands.
pub fn streams(dir: &Path, dump: bool) -> std::io::Result<Report> {
    let dir = if dir.join("streams").is_dir() {
        dir.join("streams")
    } else {
        dir.to_path_buf()
    };
    let storage = OsStorage::open(&dir)?;
    let mut report = Report::default();
    let mut names: Vec<(u64, String)> = storage
        .list()?
        .into_iter()
        .filter(|entry| entry.kind == EntryKind::File)
        .filter_map(|entry| log_generation(&entry.name).map(|generation| (generation, entry.name)))
        .collect();
    names.sort();
    if names.is_empty() {
        let _ = writeln!(report.text, "{}: no stream command log", dir.display());
    }
    for (generation, name) in names {
        let bytes = read_whole_file(&storage, &name)?.unwrap_or_default();
        let mut records = 0u64;
        let mut commands = 0u64;
        let mut listing = String::new();
        let scanned = scan_log(&bytes, Some(generation), |position, record| {
            records += 1;
            commands += record.commands.len() as u64;
            if dump {
                for command in &record.commands {
                    let words: Vec<String> = command.iter().map(|arg| quote(arg)).collect();
                    let _ = writeln!(listing, "  @{position} {}", words.join(" "));
                }
            }
            Ok::<(), ()>(())
        });
        let _ = writeln!(
            report.text,
            "{name}: generation {generation}, {} bytes",
            bytes.len()
        );
        report.text.push_str(&listing);
        match scanned {
            Err(reason) => {
                report.corrupt = true;
                let _ = writeln!(report.text, "  CORRUPT: {reason}");
            }
            Ok(Err(())) => unreachable!("the callback never fails"),
            Ok(Ok((valid, end))) => {
                let _ = writeln!(
                    report.text,
                    "  {records} records, {commands} commands, {valid} valid bytes, every CRC checked"
                );
                match end {
                    LogEnd::Clean => {
                        let _ = writeln!(report.text, "  clean end");
                    }
                    LogEnd::TornTail { position, reason } => {
                        let _ = writeln!(
                            report.text,
                            "  torn tail at byte {position} ({} bytes; recovery will cut it): {reason}",
                            bytes.len() as u64 - position
                        );
                    }
                    LogEnd::Corrupt { position, reason } => {
                        report.corrupt = true;
                        let _ = writeln!(report.text, "  CORRUPT at byte {position}: {reason}");
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Checks every partition directory under `dir` (a weir-log broker
/// directory, a topic directory, or one partition directory). With `dump`,
/// lists every batch.
pub fn log(dir: &Path, dump: bool) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut partitions = Vec::new();
    collect_partitions(dir, &mut partitions, 0)?;
    if partitions.is_empty() {
        let _ = writeln!(report.text, "{}: no log segments", dir.display());
    }
    for partition in partitions {
        let storage = OsStorage::open(&partition)?;
        let segments = inspect_partition(&storage)?;
        let _ = writeln!(report.text, "{}:", partition.display());
        describe_partition_files(&inspect_partition_files(&storage)?, &mut report);
        for segment in segments {
            let records: u64 = segment
                .batches
                .iter()
                .map(|batch| u64::from(batch.header.record_count))
                .sum();
            let next = segment
                .batches
                .last()
                .map_or(segment.base_offset, |batch| batch.header.next_offset());
            let _ = writeln!(
                report.text,
                "  segment {:020}: {} bytes, {} batches, {records} records, offsets {}..{next}, the frame's and Kafka's CRC of every batch checked",
                segment.base_offset,
                segment.file_bytes,
                segment.batches.len(),
                segment.base_offset,
            );
            if dump {
                for batch in &segment.batches {
                    let _ = writeln!(report.text, "    {}", describe_batch(batch));
                }
            }
            for (kind, check) in [
                ("offset index", &segment.offset_index),
                ("time index", &segment.time_index),
            ] {
                if let Err(reason) = check {
                    let _ = writeln!(
                        report.text,
                        "    {kind}: {reason} (derived data: recovery rebuilds it)"
                    );
                }
            }
            match &segment.problem {
                None => {}
                Some(SegmentProblem::TornTail {
                    position,
                    bytes,
                    reason,
                }) => {
                    let _ = writeln!(
                        report.text,
                        "    torn tail at byte {position} ({bytes} bytes; recovery will cut it): {reason}"
                    );
                }
                Some(SegmentProblem::Corrupt {
                    position,
                    reason,
                    vouched_up_to,
                }) => {
                    report.corrupt = true;
                    let _ = writeln!(
                        report.text,
                        "    CORRUPT at byte {position}: {reason} (a later batch records bytes up to {vouched_up_to} as synced)"
                    );
                }
                Some(SegmentProblem::Format1) => {
                    report.corrupt = true;
                    let _ = writeln!(
                        report.text,
                        "    weir-log format 1 (weir's own batch layout): this version does not read it"
                    );
                }
            }
        }
    }
    Ok(report)
}

/// One stored batch as `weir inspect log --dump` lists it: Kafka's header
/// fields, and the frame's synced position.
fn describe_batch(batch: &BatchSummary) -> String {
    let header = &batch.header;
    let attributes = header.attributes;
    let compression = attributes.compression().map_or_else(
        |_| format!("codec {}", attributes.0 & 7),
        |codec| codec.name().to_string(),
    );
    let mut flags = Vec::new();
    if attributes.is_transactional() {
        flags.push("transactional");
    }
    if attributes.is_control() {
        flags.push("control");
    }
    if attributes.is_log_append_time() {
        flags.push("log-append-time");
    }
    let producer = &header.producer;
    let producer = if producer.is_idempotent() {
        format!(
            "producer {} epoch {} sequences {}..={}",
            producer.producer_id,
            producer.producer_epoch,
            producer.base_sequence,
            header.last_sequence()
        )
    } else {
        "no producer id".to_string()
    };
    format!(
        "@{} offsets {}..={} records {} bytes {} leader-epoch {} compression {compression}{} timestamps {}..{} {producer} crc {:#010x} synced {}",
        batch.position,
        header.base_offset,
        header.last_offset(),
        header.record_count,
        header.batch_bytes,
        header.leader_epoch,
        if flags.is_empty() { String::new() } else { format!(" [{}]", flags.join(",")) },
        header.base_timestamp,
        header.max_timestamp,
        header.crc,
        batch.synced_position,
    )
}

/// The checkpoint, leader epochs and producer snapshots of a partition.
fn describe_partition_files(files: &PartitionFiles, report: &mut Report) {
    match &files.checkpoint {
        None => {
            let _ = writeln!(
                report.text,
                "  checkpoint: none (the next open scans every segment)"
            );
        }
        Some(Ok(checkpoint)) => {
            let _ = writeln!(
                report.text,
                "  checkpoint (format 2): log start {}, {} durable segments{}{}",
                checkpoint.log_start_offset,
                checkpoint.segments.len(),
                if checkpoint.clean_shutdown {
                    ", clean shutdown"
                } else {
                    ""
                },
                checkpoint.truncation.map_or(String::new(), |cut| format!(
                    ", truncation to {} pending",
                    cut.end_offset
                )),
            );
        }
        Some(Err(reason)) => {
            report.corrupt = true;
            let _ = writeln!(report.text, "  checkpoint UNREADABLE: {reason}");
        }
    }
    match &files.epochs {
        None => {
            let _ = writeln!(report.text, "  leader epochs: no file");
        }
        Some(Ok(epochs)) => {
            let entries: Vec<String> = epochs
                .entries()
                .iter()
                .map(|entry| format!("{}@{}", entry.epoch, entry.start_offset))
                .collect();
            let _ = writeln!(
                report.text,
                "  leader epochs (epoch@start offset): {}",
                entries.join(" ")
            );
        }
        Some(Err(reason)) => {
            let _ = writeln!(
                report.text,
                "  leader epochs unreadable (recovery rebuilds them): {reason}"
            );
        }
    }
    for (offset, snapshot) in &files.producer_snapshots {
        let _ = match snapshot {
            Ok(producers) => writeln!(
                report.text,
                "  producer snapshot at {offset}: {producers} producers"
            ),
            Err(reason) => writeln!(
                report.text,
                "  producer snapshot at {offset} unreadable (derived data: ignored): {reason}"
            ),
        };
    }
}

/// Directories holding `.log` segment files, up to three levels down.
fn collect_partitions(
    dir: &Path,
    found: &mut Vec<std::path::PathBuf>,
    depth: usize,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    let has_segments = entries.iter().any(|entry| {
        weir_log::segment::parse_file_name(&entry.file_name().to_string_lossy())
            .is_some_and(|(_, kind)| kind == weir_log::segment::SegmentFile::Log)
    });
    if has_segments {
        found.push(dir.to_path_buf());
    }
    if depth < 3 {
        for entry in entries {
            if entry.file_type()?.is_dir() {
                collect_partitions(&entry.path(), found, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// An argument shown the way redis-cli shows strings: plain if printable,
/// quoted with escapes otherwise.
fn quote(arg: &[u8]) -> String {
    let plain = !arg.is_empty()
        && arg
            .iter()
            .all(|byte| byte.is_ascii_graphic() && *byte != b'"' && *byte != b'\\');
    if plain {
        return String::from_utf8_lossy(arg).into_owned();
    }
    let mut out = String::from("\"");
    for byte in arg {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(*byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// Reports the Raft state of a replicated partition's Raft directory (the
/// one holding `raft-log`): term, vote, commit, applied index,
/// configuration, entries and the terms (leader epochs) they span, and a
/// torn or corrupt tail. Changes nothing.
pub fn raft(dir: &Path) -> std::io::Result<Report> {
    let storage = OsStorage::open(dir)?;
    let bytes = read_whole_file(&storage, SIDE_FILE)?.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no {SIDE_FILE} in this directory"),
        )
    })?;
    let found = inspect_side_file(&bytes);
    let mut report = Report::default();
    let text = &mut report.text;
    match &found.state {
        Some(state) => {
            let _ = writeln!(
                text,
                "term {}, vote {}, commit {}, applied {}, voters {:?}, learners {:?}",
                state.hard.term,
                state.hard.vote,
                state.hard.commit,
                state.applied,
                state.conf.voters,
                state.conf.learners
            );
        }
        None => {
            let _ = writeln!(text, "no state record");
        }
    }
    let _ = writeln!(
        text,
        "{} entries ({} raft's own, taking no offset), records up to offset {}",
        found.entries, found.own_entries, found.end_offset
    );
    if let Some(start) = &found.start {
        let _ = writeln!(
            text,
            "compacted through entry {} (term {}): records from offset {}{}",
            start.index,
            start.term,
            start.offset,
            if start.reset {
                ", as a leader's snapshot put them"
            } else {
                ""
            }
        );
    }
    for (term, index, offset) in &found.terms {
        let _ = writeln!(
            text,
            "  term (leader epoch) {term}: from entry {index}, offset {offset}"
        );
    }
    if let Some(point) = &found.repair {
        let _ = writeln!(
            text,
            "REPAIRING: lost synced entries to corruption; no campaign or vote for a log behind entry {} (term {}) until the leader restores them",
            point.index, point.term
        );
    }
    if let Some(problem) = &found.problem {
        let _ = writeln!(text, "CORRUPT: {problem}");
        report.corrupt = true;
    }
    if found.invalid_tail_bytes > 0 {
        let _ = writeln!(
            text,
            "{} bytes after the last valid record: a torn tail (cut when the group opens) or corruption",
            found.invalid_tail_bytes
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_when_needed() {
        assert_eq!(quote(b"XADD"), "XADD");
        assert_eq!(quote(b"a b"), "\"a b\"");
        assert_eq!(quote(b"\x00\n"), "\"\\x00\\n\"");
        assert_eq!(quote(b""), "\"\"");
    }
}
