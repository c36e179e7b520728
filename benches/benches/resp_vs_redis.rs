//! The weir server against a real `redis-server`, side by side in one run:
//! the same `redis-benchmark` commands, and the same custom clients, against
//! each server in turn, interleaved (redis, weir, redis with its AOF, weir
//! with its command log, then again), several rounds; medians and ratios
//! printed at the end.
//!
//! Servers, in two pairs compared with each other: `redis-server` with
//! persistence off (`--save '' --appendonly no`) against `weir serve
//! --appendonly no`; and `redis-server --appendonly yes --appendfsync
//! everysec` against `weir serve` with its default persistence (command
//! log, `appendfsync everysec`; target for pipelined XADD ≥ 1.5x).
//!
//! Measures:
//! - XADD, 50 clients, pipeline 16 (target: weir ≥ 1.5x Redis);
//! - XADD, 50 clients, no pipelining (target ≥ 1.0x), and its p99 latency
//!   (target: no worse than Redis's);
//! - PUBLISH, 50 clients, one subscriber receiving every message
//!   (target ≥ 1.0x);
//! - XREADGROUP COUNT 10 + XACK of what was read, 8 consumers over a
//!   pre-filled stream: entries consumed per second;
//! - XADD to a reader blocked in XREAD BLOCK: time from sending the XADD to
//!   the reader receiving the entry, median and p99 over sequential rounds.
//!
//! Run: `cargo xtask bench resp_vs_redis` (builds the release `weir` first),
//! or `cargo build --release -p weir-server && cargo bench -p weir-benches
//! --bench resp_vs_redis`. Needs `redis-server` and `redis-benchmark`
//! (Debian's redis-server and redis-tools; `cargo xtask setup` installs
//! them). `WEIR_BIN` overrides the binary, `WEIR_FLAGS` adds flags to both
//! weir servers; `ROUNDS` (default 3) and `SCALE`
//! (default 1.0, multiplies request counts) change the run's length.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weir_benches::start_resp_server;

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    _data: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn weir_binary() -> PathBuf {
    if let Ok(path) = std::env::var("WEIR_BIN") {
        return PathBuf::from(path);
    }
    // target/release/deps/resp_vs_redis-… -> target/release/weir
    let exe = std::env::current_exe().expect("the bench's path");
    let release = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/release");
    release.join("weir")
}

fn start_redis(name: &'static str, appendonly: bool) -> Server {
    let data = tempfile::tempdir().expect("data directory");
    let (child, port) = start_resp_server("redis-server", |port| {
        let mut command =
            Command::new(std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()));
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(data.path());
        if appendonly {
            command.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        command
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (cargo xtask setup installs it)")
    });
    Server {
        name,
        child,
        port,
        _data: Some(data),
    }
}

fn start_weir(name: &'static str, persistence: bool) -> Server {
    let binary = weir_binary();
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p weir-server` (or set WEIR_BIN)",
        binary.display()
    );
    let data = tempfile::tempdir().expect("data directory");
    let (child, port) = start_resp_server(name, |port| {
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .args(["--resp-addr", &format!("127.0.0.1:{port}")])
            .args(["--kafka-addr", "off"])
            .arg("--data-dir")
            .arg(data.path())
            .args(["--log-level", "warn"]);
        if !persistence {
            command.args(["--appendonly", "no"]);
        }
        if let Ok(flags) = std::env::var("WEIR_FLAGS") {
            command.args(flags.split_whitespace());
        }
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weir")
    });
    Server {
        name,
        child,
        port,
        _data: Some(data),
    }
}

/// A minimal blocking RESP client.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("send");
    }

    /// Reads one reply; returns the bulk strings in it, in order.
    fn read(&mut self) -> Vec<Vec<u8>> {
        let mut bulks = Vec::new();
        self.read_into(&mut bulks);
        bulks
    }

    fn read_into(&mut self, bulks: &mut Vec<Vec<u8>>) {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("read");
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        match line[0] {
            b'$' => {
                let length: i64 = text.parse().expect("length");
                if length >= 0 {
                    let mut data = vec![0; length as usize + 2];
                    self.reader.read_exact(&mut data).expect("bulk");
                    data.truncate(length as usize);
                    bulks.push(data);
                }
            }
            b'*' => {
                let count: i64 = text.parse().expect("count");
                for _ in 0..count.max(0) {
                    self.read_into(bulks);
                }
            }
            b'-' => panic!("error reply: {text}"),
            _ => {}
        }
    }

    fn call(&mut self, args: &[&str]) -> Vec<Vec<u8>> {
        let bytes: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.send(&bytes);
        self.read()
    }
}

/// One `redis-benchmark` run: requests per second and p99 latency (ms).
fn redis_benchmark(
    port: u16,
    clients: usize,
    pipeline: usize,
    requests: usize,
    command: &[&str],
) -> (f64, f64) {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string()])
        .args(["-n", &requests.to_string(), "--csv"])
        .args(command)
        .output()
        .expect("redis-benchmark (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    let row = text
        .lines()
        .find(|line| !line.starts_with("\"test\""))
        .unwrap_or_else(|| panic!("no result from redis-benchmark: {text}"));
    let fields: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|field| field.trim_matches('"').parse().expect("a number"))
        .collect();
    (fields[0], fields[5])
}

/// PUBLISH throughput with one subscriber (a redis-cli reading every
/// message); also checks that the subscriber stayed connected.
fn publish_with_subscriber(port: u16, requests: usize) -> (f64, f64) {
    let mut subscriber = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "SUBSCRIBE",
            "bench",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli");
    let mut client = Client::connect(port);
    let started = Instant::now();
    while !has_subscriber(&mut client) {
        assert!(started.elapsed() < Duration::from_secs(10), "no subscriber");
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = redis_benchmark(
        port,
        50,
        1,
        requests,
        &["PUBLISH", "bench", "hello-subscriber"],
    );
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    result
}

/// Whether channel `bench` has a subscriber (read line by line: NUMSUB's
/// count is an integer, which `Client::read` skips).
fn has_subscriber(client: &mut Client) -> bool {
    client.send(&[b"PUBSUB", b"NUMSUB", b"bench"]);
    let mut line = Vec::new();
    // *2, $5, bench, :N
    for _ in 0..4 {
        line.clear();
        client.reader.read_until(b'\n', &mut line).expect("read");
    }
    line != b":0\r\n"
}

/// Entries consumed per second by `consumers` clients each looping
/// XREADGROUP COUNT 10 and XACK of what it read, over `entries` entries.
fn group_consumption(port: u16, entries: usize, consumers: usize) -> f64 {
    let mut setup = Client::connect(port);
    setup.call(&["DEL", "grp"]);
    setup.call(&["XGROUP", "CREATE", "grp", "g", "0", "MKSTREAM"]);
    let mut batch = Vec::new();
    let value = "x".repeat(32);
    for n in 0..entries {
        let id = format!("{}-1", n + 1);
        batch.push(id);
        if batch.len() == 1000 || n + 1 == entries {
            for id in &batch {
                setup.send(&[b"XADD", b"grp", id.as_bytes(), b"f", value.as_bytes()]);
            }
            for _ in 0..batch.len() {
                setup.read();
            }
            batch.clear();
        }
    }
    let started = Instant::now();
    let threads: Vec<_> = (0..consumers)
        .map(|index| {
            std::thread::spawn(move || {
                let mut client = Client::connect(port);
                let name = format!("c{index}");
                let mut consumed = 0;
                loop {
                    let reply = client.call(&[
                        "XREADGROUP",
                        "GROUP",
                        "g",
                        &name,
                        "COUNT",
                        "10",
                        "STREAMS",
                        "grp",
                        ">",
                    ]);
                    // [stream, id, field, value, id, field, value, ...]
                    let ids: Vec<Vec<u8>> = reply.iter().skip(1).step_by(3).cloned().collect();
                    if ids.is_empty() {
                        return consumed;
                    }
                    let mut args: Vec<&[u8]> = vec![b"XACK", b"grp", b"g"];
                    args.extend(ids.iter().map(Vec::as_slice));
                    client.send(&args);
                    client.read();
                    consumed += ids.len();
                }
            })
        })
        .collect();
    let consumed: usize = threads
        .into_iter()
        .map(|thread| thread.join().expect("consumer"))
        .sum();
    assert_eq!(consumed, entries, "every entry consumed once");
    consumed as f64 / started.elapsed().as_secs_f64()
}

/// XADD to a blocked reader: median and p99 of the time from sending the
/// XADD to the reader receiving the entry (µs).
fn blocked_reader_latency(port: u16, rounds: usize) -> (f64, f64) {
    let mut writer = Client::connect(port);
    writer.call(&["DEL", "lat"]);
    let (ready_sender, ready) = std::sync::mpsc::channel::<()>();
    let (arrived_sender, arrived) = std::sync::mpsc::channel::<Instant>();
    let reader = std::thread::spawn(move || {
        let mut client = Client::connect(port);
        for round in 0..rounds {
            let last = format!("{round}-1");
            let last = if round == 0 { "0-0".to_string() } else { last };
            client.send(&[
                b"XREAD",
                b"BLOCK",
                b"0",
                b"STREAMS",
                b"lat",
                last.as_bytes(),
            ]);
            ready_sender.send(()).expect("ready");
            client.read();
            arrived_sender.send(Instant::now()).expect("arrived");
        }
    });
    let mut samples = Vec::with_capacity(rounds);
    let mut probe = Client::connect(port);
    for round in 0..rounds {
        ready.recv().expect("reader ready");
        // Wait until the server has the reader blocked.
        loop {
            let info = probe.call(&["INFO", "clients"]);
            let text = String::from_utf8_lossy(&info[0]).into_owned();
            if text.contains("blocked_clients:1") {
                break;
            }
        }
        let id = format!("{}-1", round + 1);
        let sent = Instant::now();
        writer.call(&["XADD", "lat", &id, "f", "v"]);
        let received = arrived.recv().expect("arrival");
        samples.push(received.duration_since(sent).as_secs_f64() * 1e6);
    }
    reader.join().expect("reader");
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn main() {
    if !weir_benches::selected("resp_vs_redis") {
        return;
    }
    let rounds: usize = std::env::var("ROUNDS").map_or(3, |value| value.parse().expect("ROUNDS"));
    let scale: f64 = std::env::var("SCALE").map_or(1.0, |value| value.parse().expect("SCALE"));
    let count = |base: usize| ((base as f64 * scale) as usize).max(1000);
    // Two pairs: [0] against [1] (no persistence), [2] against [3] (the
    // command log with `everysec` on both).
    let servers = [
        start_redis("redis", false),
        start_weir("weir", false),
        start_redis("redis+aof", true),
        start_weir("weir+log", true),
    ];
    const MEASURES: [&str; 9] = [
        "XADD -c 50 -P 16 (req/s)",
        "XADD -c 50 (req/s)",
        "XADD -c 50 p99 (ms)",
        "XADD -c 50 -P 16 p99 (ms)",
        "PUBLISH -c 50, 1 subscriber (req/s)",
        "PUBLISH p99 (ms)",
        "XREADGROUP+XACK (entries/s)",
        "XADD->blocked XREAD median (us)",
        "XADD->blocked XREAD p99 (us)",
    ];
    let mut results = vec![vec![Vec::new(); MEASURES.len()]; servers.len()];
    for round in 0..rounds {
        for (index, server) in servers.iter().enumerate() {
            let port = server.port;
            Client::connect(port).call(&["FLUSHALL"]);
            let (pipelined, pipelined_p99) = redis_benchmark(
                port,
                50,
                16,
                count(2_000_000),
                &["XADD", "s", "*", "f", "v"],
            );
            Client::connect(port).call(&["FLUSHALL"]);
            let (unpipelined, p99) =
                redis_benchmark(port, 50, 1, count(300_000), &["XADD", "s", "*", "f", "v"]);
            let (publish, publish_p99) = publish_with_subscriber(port, count(300_000));
            Client::connect(port).call(&["FLUSHALL"]);
            let group = group_consumption(port, count(200_000), 8);
            let (latency, latency_p99) = blocked_reader_latency(port, count(2_000));
            let row = [
                pipelined,
                unpipelined,
                p99,
                pipelined_p99,
                publish,
                publish_p99,
                group,
                latency,
                latency_p99,
            ];
            eprintln!("round {round} {:>9}: {row:.3?}", server.name);
            for (slot, value) in results[index].iter_mut().zip(row) {
                slot.push(value);
            }
        }
    }
    println!("\nmedians of {rounds} interleaved rounds (ratio = weir / redis, weir+log / redis+aof; for latencies, redis / weir, so > 1 is better for weir):");
    println!(
        "{:<38} {:>12} {:>12} {:>8} {:>12} {:>12} {:>8}",
        "measure", "redis", "weir", "ratio", "redis+aof", "weir+log", "ratio"
    );
    for (measure, name) in MEASURES.iter().enumerate() {
        let values: Vec<f64> = results
            .iter()
            .map(|server| median(&server[measure]))
            .collect();
        let lower_is_better = name.contains("p99") || name.contains("median");
        let ratio = |redis: f64, weir: f64| {
            if lower_is_better {
                redis / weir
            } else {
                weir / redis
            }
        };
        println!(
            "{name:<38} {:>12.3} {:>12.3} {:>7.2}x {:>12.3} {:>12.3} {:>7.2}x",
            values[0],
            values[1],
            ratio(values[0], values[1]),
            values[2],
            values[3],
            ratio(values[2], values[3])
        );
    }
}
