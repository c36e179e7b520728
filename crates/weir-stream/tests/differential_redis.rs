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

use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::ManualClock;
use weir_stream::{Compatibility, Config, Context, Engine, NodeLimits, Outcome};

mod common;
use common::wire::{normalise, parse, printable, Client, RedisServer};
use common::Generator;

const CASES: u64 = 400;
const COMMANDS_PER_CASE: usize = 70;

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
