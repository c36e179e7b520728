//! A real process appends with flush policy `always` on the real file
//! system and is killed with SIGKILL at random moments; after each kill the
//! log is reopened and every append the child reported as acknowledged must
//! be present and intact.
//!
//! The child is this same test binary, started with `WEIR_KILL_CHILD_DIR`
//! set: it then runs [`child`] instead of the test, appending until killed
//! and printing one line per acknowledged batch.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::{OsStorage, SystemClock};
use weir_log::{LogConfig, Partition, ProducerInfo, Record};

const ROUNDS: u64 = 12;
const CHILD_DIR: &str = "WEIR_KILL_CHILD_DIR";
const CHILD_ROUND: &str = "WEIR_KILL_CHILD_ROUND";
const TEST_NAME: &str = "acknowledged_appends_survive_sigkill_at_random_moments";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

fn value(round: u64, sequence: u64, length: usize) -> Vec<u8> {
    let mut value = format!("round {round} record {sequence} ").into_bytes();
    let fill = value.len() as u8;
    value.resize(length.max(value.len()), fill);
    value
}

/// The child: append batches forever, reporting each acknowledged one as
/// `ack <base offset> <record count> <first sequence> <value length>`.
fn child(directory: &str, round: u64) {
    let storage = Arc::new(OsStorage::open(directory).expect("open directory"));
    let (log, _) = Partition::open(storage, Arc::new(SystemClock), config()).expect("open log");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(round);
    let mut stdout = std::io::stdout().lock();
    let mut sequence = 0u64;
    loop {
        let count = rng.random_range(1..20u64);
        let length = rng.random_range(1..400usize);
        let values: Vec<Vec<u8>> = (0..count)
            .map(|i| value(round, sequence + i, length))
            .collect();
        let records: Vec<Record<'_>> = values.iter().map(|value| Record::value(1, value)).collect();
        let info = log.append(&records, ProducerInfo::NONE).expect("append");
        writeln!(
            stdout,
            "ack {} {count} {sequence} {length}",
            info.base_offset
        )
        .expect("report");
        stdout.flush().expect("flush");
        sequence += count;
    }
}

#[test]
fn acknowledged_appends_survive_sigkill_at_random_moments() {
    if let Ok(directory) = std::env::var(CHILD_DIR) {
        let round = std::env::var(CHILD_ROUND)
            .expect("round")
            .parse()
            .expect("number");
        child(&directory, round);
        return;
    }
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let mut acknowledged: Vec<(u64, Vec<u8>)> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, directory.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let stdout = child.stdout.take().expect("stdout");
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().expect("lines").push(line);
                }
            })
        };
        // Let it get going, then kill it at a random moment.
        let started = std::time::Instant::now();
        while lines.lock().expect("lines").is_empty() && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(5..150)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader");
        let lines = lines.lock().expect("lines");
        assert!(
            !lines.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        for line in lines.iter() {
            // A line cut by the kill is not an acknowledgement.
            let fields: Vec<&str> = line.split(' ').collect();
            let [_, base, count, sequence, length] = fields[..] else {
                continue;
            };
            let (Ok(base), Ok(count), Ok(sequence), Ok(length)) = (
                base.parse::<u64>(),
                count.parse::<u64>(),
                sequence.parse::<u64>(),
                length.parse::<usize>(),
            ) else {
                continue;
            };
            for index in 0..count {
                acknowledged.push((base + index, value(round, sequence + index, length)));
            }
        }

        let storage = Arc::new(OsStorage::open(directory.path()).expect("open directory"));
        let (log, report) = Partition::open(storage, Arc::new(SystemClock), config())
            .expect("recovery after SIGKILL");
        let mut found = std::collections::BTreeMap::new();
        let mut next = log.log_start_offset();
        while next < log.high_watermark() {
            let result = log.read(next, 1 << 20).expect("read");
            for record in result.records() {
                let record = record.expect("record");
                found.insert(record.offset, record.value.expect("value").to_vec());
            }
            next = result.info.next_offset;
        }
        for (offset, value) in &acknowledged {
            assert_eq!(
                found.get(offset),
                Some(value),
                "round {round}: acknowledged offset {offset} is missing or changed; recovery: {report:?}"
            );
        }
        eprintln!(
            "round {round}: {} acknowledged records intact, log end {}, recovery cut {:?} bytes",
            acknowledged.len(),
            log.log_end_offset(),
            report.truncation.map(|cut| cut.bytes_removed)
        );
    }
}
