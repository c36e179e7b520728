//! Differential tests against a real `redis-server`: random sequences of
//! stream commands, with their edge cases, go to both Redis and the engine,
//! and every reply must be the same bytes of RESP2.
//!
//! The engine runs in Redis 7.0 compatibility mode because the server
//! available here (Debian 12's package) is Redis 7.0.15. Time cannot be
//! shared with Redis, so the commands use explicit IDs (never `*`), and
//! idle and delivery times, which depend on each server's clock, are
//! replaced by 0 in both replies before comparing (XPENDING's idle column,
//! XINFO's idle, seen-time and delivery times). `radix-tree-nodes` is
//! replaced too: it counts the nodes of Redis's radix tree, a structure weir
//! does not have (weir reports an estimate). Nothing else is normalised.
//!
//! Plain `cargo test` lists this test as ignored (it needs a server the
//! machine may not have); `cargo xtask ci` installs `redis-server` and runs
//! it with `--include-ignored`, and there the test fails, never skips, when
//! the server cannot be started. A failure prints the seed and the command
//! that replays it: `DIFF_SEED=<seed> cargo test -p weir-stream --test
//! differential_redis -- --include-ignored`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::ManualClock;
use weir_stream::{Compatibility, Config, Context, Engine, NodeLimits, Outcome};

mod common;
use common::Generator;

const CASES: u64 = 400;
const COMMANDS_PER_CASE: usize = 70;

/// A redis-server started for the test on a free loopback port.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {binary}: {error}. The differential tests need a real redis-server: \
                     `cargo xtask ci` installs it (Debian package redis-server)."
                )
            });
        let server = Self { child, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal RESP2 client that returns each reply's raw bytes.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Self {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn call(&mut self, args: &[Vec<u8>]) -> Vec<u8> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&request).expect("send");
        let mut reply = Vec::new();
        read_reply(&mut self.reader, &mut reply);
        reply
    }
}

fn read_line(reader: &mut BufReader<TcpStream>, out: &mut Vec<u8>) -> Vec<u8> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).expect("read");
    out.extend_from_slice(&line);
    line.truncate(line.len().saturating_sub(2));
    line
}

fn read_reply(reader: &mut BufReader<TcpStream>, out: &mut Vec<u8>) {
    let line = read_line(reader, out);
    let (kind, rest) = line.split_first().expect("a reply");
    let number = || {
        String::from_utf8_lossy(rest)
            .parse::<i64>()
            .expect("length")
    };
    match kind {
        b'$' if number() >= 0 => {
            let mut data = vec![0; number() as usize + 2];
            reader.read_exact(&mut data).expect("bulk");
            out.extend_from_slice(&data);
        }
        b'*' if number() >= 0 => {
            for _ in 0..number() {
                read_reply(reader, out);
            }
        }
        _ => {}
    }
}

/// A parsed RESP2 reply, for normalising time-dependent fields.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Line(u8, Vec<u8>),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

fn parse(bytes: &[u8]) -> (Value, &[u8]) {
    let end = bytes
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .expect("line end");
    let (kind, text) = (bytes[0], &bytes[1..end]);
    let rest = &bytes[end + 2..];
    let number = || {
        String::from_utf8_lossy(text)
            .parse::<i64>()
            .expect("number")
    };
    match kind {
        b'$' if number() < 0 => (Value::Bulk(None), rest),
        b'$' => {
            let length = number() as usize;
            (
                Value::Bulk(Some(rest[..length].to_vec())),
                &rest[length + 2..],
            )
        }
        b'*' if number() < 0 => (Value::Array(None), rest),
        b'*' => {
            let mut items = Vec::new();
            let mut rest = rest;
            for _ in 0..number() {
                let (item, remaining) = parse(rest);
                items.push(item);
                rest = remaining;
            }
            (Value::Array(Some(items)), rest)
        }
        kind => (Value::Line(kind, text.to_vec()), rest),
    }
}

fn zero() -> Value {
    Value::Line(b':', b"0".to_vec())
}

/// Replaces time-dependent values (and `radix-tree-nodes`) by 0.
fn normalise(command: &[Vec<u8>], value: &mut Value) {
    let name = String::from_utf8_lossy(&command[0]).to_ascii_uppercase();
    let sub = command
        .get(1)
        .map(|arg| String::from_utf8_lossy(arg).to_ascii_uppercase());
    match (name.as_str(), sub.as_deref()) {
        ("XPENDING", _) if command.len() > 3 => {
            if let Value::Array(Some(rows)) = value {
                for row in rows {
                    if let Value::Array(Some(fields)) = row {
                        if fields.len() == 4 {
                            fields[2] = zero();
                        }
                    }
                }
            }
        }
        ("XINFO", Some("CONSUMERS")) => {
            if let Value::Array(Some(consumers)) = value {
                for consumer in consumers {
                    zero_map_fields(consumer, &["idle", "inactive"]);
                }
            }
        }
        ("XINFO", Some("STREAM")) => {
            zero_map_fields(value, &["radix-tree-nodes"]);
            if let Some(Value::Array(Some(groups))) = map_get(value, "groups") {
                for group in groups {
                    if let Some(Value::Array(Some(pending))) = map_get(group, "pending") {
                        for row in pending {
                            if let Value::Array(Some(fields)) = row {
                                fields[2] = zero();
                            }
                        }
                    }
                    if let Some(Value::Array(Some(consumers))) = map_get(group, "consumers") {
                        for consumer in consumers {
                            zero_map_fields(consumer, &["seen-time", "active-time"]);
                            if let Some(Value::Array(Some(pending))) = map_get(consumer, "pending")
                            {
                                for row in pending {
                                    if let Value::Array(Some(fields)) = row {
                                        fields[1] = zero();
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn map_get<'a>(map: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let Value::Array(Some(items)) = map else {
        return None;
    };
    let position = items
        .chunks(2)
        .position(|pair| pair[0] == Value::Bulk(Some(key.as_bytes().to_vec())))?;
    items.get_mut(position * 2 + 1)
}

fn zero_map_fields(map: &mut Value, keys: &[&str]) {
    for key in keys {
        if let Some(value) = map_get(map, key) {
            *value = zero();
        }
    }
}

fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace("\r\n", "\\r\\n")
}

/// Replies that were not errors, by command, to show what was compared.
type Coverage = std::collections::BTreeMap<String, (u64, u64)>;

fn run_case(redis: &mut Client, seed: u64, coverage: &mut Coverage) -> Result<usize, String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let limits = NodeLimits {
        max_entries: [100, 4, 3, 0][rng.random_range(0..4)],
        max_bytes: [4096, 200, 90, 0][rng.random_range(0..4)],
    };
    redis.call(&[b"FLUSHALL".to_vec()]);
    for (name, value) in [
        ("stream-node-max-entries", limits.max_entries),
        ("stream-node-max-bytes", limits.max_bytes),
    ] {
        redis.call(&[
            b"CONFIG".to_vec(),
            b"SET".to_vec(),
            name.into(),
            value.to_string().into_bytes(),
        ]);
    }
    let clock = ManualClock::new(0);
    let config = Config {
        node_limits: limits,
        compatibility: Compatibility::Redis70,
    };
    let mut engine = Engine::new(config, Arc::new(clock.clone()));
    let mut generator = Generator::new(rng);
    let context = Context::default();
    let mut history = Vec::new();
    for index in 0..COMMANDS_PER_CASE {
        let command = generator.command();
        let args: Vec<Vec<u8>> = command.iter().map(|arg| arg.clone().into_bytes()).collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis() as u64;
        clock.set(now);
        let expected = redis.call(&args);
        let borrowed: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let actual = match engine.execute(&context, &borrowed) {
            Outcome::Reply(reply) => reply.to_resp2(),
            Outcome::Blocked => return Err(format!("command {index} blocked: {command:?}")),
        };
        let (mut expected_value, _) = parse(&expected);
        let (mut actual_value, _) = parse(&actual);
        normalise(&args, &mut expected_value);
        normalise(&args, &mut actual_value);
        if expected_value != actual_value {
            let shown = if std::env::var("DIFF_SEED").is_ok() {
                history.len()
            } else {
                8
            };
            let earlier = history[history.len().saturating_sub(shown)..].join("\n    ");
            return Err(format!(
                "seed {seed}, command {index}: {}\n  redis: {}\n  weir:  {}\n  (node limits {limits:?})\n  earlier commands and Redis's replies:\n    {earlier}",
                command.join(" "),
                printable(&expected),
                printable(&actual)
            ));
        }
        history.push(format!("{} -> {}", command.join(" "), printable(&expected)));
        let mut name = command[0].to_ascii_uppercase();
        if name == "XGROUP" || name == "XINFO" {
            name = format!(
                "{name} {}",
                command
                    .get(1)
                    .map_or("", String::as_str)
                    .to_ascii_uppercase()
            );
        }
        let counts = coverage.entry(name).or_default();
        counts.0 += 1;
        if !expected.starts_with(b"-") {
            counts.1 += 1;
        }
    }
    Ok(COMMANDS_PER_CASE)
}

#[test]
#[ignore = "needs a real redis-server: `cargo xtask ci` installs it and runs this test"]
fn stream_commands_reply_exactly_like_redis() {
    let server = RedisServer::start();
    let mut redis = Client::connect(server.port);
    let version = redis.call(&[b"INFO".to_vec(), b"server".to_vec()]);
    assert!(
        String::from_utf8_lossy(&version).contains("redis_version:7."),
        "a Redis 7 server is needed"
    );
    let seeds: Vec<u64> = match std::env::var("DIFF_SEED") {
        Ok(seed) => vec![seed.parse().expect("DIFF_SEED is a number")],
        Err(_) => {
            let cases = std::env::var("DIFF_CASES")
                .map_or(CASES, |cases| cases.parse().expect("DIFF_CASES"));
            (0..cases).collect()
        }
    };
    let mut commands = 0;
    let mut coverage = Coverage::new();
    for seed in seeds {
        match run_case(&mut redis, seed, &mut coverage) {
            Ok(count) => commands += count,
            Err(message) => panic!(
                "{message}\nreplay with: DIFF_SEED={seed} cargo test -p weir-stream --test differential_redis -- --include-ignored"
            ),
        }
    }
    eprintln!("{commands} commands replied identically by redis-server and weir:");
    for (name, (total, successful)) in &coverage {
        eprintln!("  {name:<22} {total:>7} sent, {successful:>7} not errors");
    }
    for name in [
        "XADD",
        "XDEL",
        "XTRIM",
        "XRANGE",
        "XREVRANGE",
        "XLEN",
        "XREAD",
        "XREADGROUP",
        "XACK",
        "XPENDING",
        "XCLAIM",
        "XAUTOCLAIM",
        "XSETID",
        "XGROUP CREATE",
        "XGROUP SETID",
        "XGROUP DESTROY",
        "XGROUP CREATECONSUMER",
        "XGROUP DELCONSUMER",
        "XINFO STREAM",
        "XINFO GROUPS",
        "XINFO CONSUMERS",
        "DEL",
        "EXISTS",
        "TYPE",
    ] {
        let successful = coverage.get(name).map_or(0, |counts| counts.1);
        assert!(
            successful > 0,
            "{name} never succeeded: the comparison does not cover it"
        );
    }
}
