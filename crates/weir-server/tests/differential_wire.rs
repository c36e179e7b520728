//! The stream engine's differential test over the wire: the same random
//! command sequences (weir-stream's generator, with its edge cases) go over
//! RESP to the real `weir` binary and to a real `redis-server`, and every
//! reply must be the same RESP2 bytes, after the same normalisation as the
//! engine-level test (idle and delivery times, `radix-tree-nodes`; see
//! `crates/weir-stream/tests/differential_redis.rs`).
//!
//! `weir` runs with `--compatibility 7.0` (the server here is Debian's
//! Redis 7.0.15) and its command log on, so replies pass through the whole
//! server: parser, command table, MULTI-free dispatch, the log's commit.
//! Each case also sets both servers' node limits with CONFIG SET, as a
//! client would.
//!
//! Ignored by plain `cargo test` (it needs redis-server); `cargo xtask ci`
//! installs it and runs this test, which fails, never skips, without it.
//! Replay one case: `WIRE_DIFF_SEED=<seed> cargo test -p weir-server --test
//! differential_wire -- --include-ignored`.

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

mod common;
#[path = "../../weir-stream/tests/common/mod.rs"]
mod stream_common;

use stream_common::wire::{normalise, parse, printable, Client, RedisServer};
use stream_common::Generator;

const CASES: u64 = 400;
const COMMANDS_PER_CASE: usize = 70;

fn run_case(redis: &mut Client, weir: &mut Client, seed: u64) -> Result<(usize, usize), String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let max_entries = [100, 4, 3, 0][rng.random_range(0..4)];
    let max_bytes = [4096, 200, 90, 0][rng.random_range(0..4)];
    for server in [&mut *redis, &mut *weir] {
        let setup: [&[&str]; 3] = [
            &["FLUSHALL"],
            &[
                "CONFIG",
                "SET",
                "stream-node-max-entries",
                &max_entries.to_string(),
            ],
            &[
                "CONFIG",
                "SET",
                "stream-node-max-bytes",
                &max_bytes.to_string(),
            ],
        ];
        for request in setup {
            let args: Vec<Vec<u8>> = request.iter().map(|arg| arg.as_bytes().to_vec()).collect();
            let reply = server.call(&args);
            if reply != b"+OK\r\n" {
                return Err(format!("{request:?} failed: {}", printable(&reply)));
            }
        }
    }
    let mut generator = Generator::new(rng);
    let mut history = Vec::new();
    let mut successes = 0;
    for index in 0..COMMANDS_PER_CASE {
        let command = generator.command();
        let args: Vec<Vec<u8>> = command.iter().map(|arg| arg.clone().into_bytes()).collect();
        let expected = redis.call(&args);
        let actual = weir.call(&args);
        let (mut expected_value, _) = parse(&expected);
        let (mut actual_value, _) = parse(&actual);
        normalise(&args, &mut expected_value);
        normalise(&args, &mut actual_value);
        if expected_value != actual_value {
            let earlier = history[history.len().saturating_sub(8)..].join("\n    ");
            return Err(format!(
                "seed {seed}, command {index}: {}\n  redis: {}\n  weir:  {}\n  (node limits {max_entries}/{max_bytes})\n  earlier commands and Redis's replies:\n    {earlier}",
                command.join(" "),
                printable(&expected),
                printable(&actual)
            ));
        }
        if !expected.starts_with(b"-") {
            successes += 1;
        }
        history.push(format!("{} -> {}", command.join(" "), printable(&expected)));
    }
    Ok((COMMANDS_PER_CASE, successes))
}

#[test]
#[ignore = "needs a real redis-server: `cargo xtask ci` installs it and runs this test"]
fn stream_commands_over_resp_reply_exactly_like_redis() {
    let redis_server = RedisServer::start();
    let weir_server = common::Server::start(&["--compatibility", "7.0", "--appendfsync", "no"]);
    let mut redis = Client::connect(redis_server.port);
    let mut weir = Client::connect(weir_server.port);
    let seeds: Vec<u64> = match std::env::var("WIRE_DIFF_SEED") {
        Ok(seed) => vec![seed.parse().expect("WIRE_DIFF_SEED is a number")],
        Err(_) => (0..CASES).map(|case| 1_000_000 + case).collect(),
    };
    let (mut commands, mut successes) = (0, 0);
    for seed in seeds {
        match run_case(&mut redis, &mut weir, seed) {
            Ok((sent, succeeded)) => {
                commands += sent;
                successes += succeeded;
            }
            Err(message) => panic!(
                "{message}\nreplay with: WIRE_DIFF_SEED={seed} cargo test -p weir-server --test differential_wire -- --include-ignored"
            ),
        }
    }
    eprintln!(
        "{commands} commands over RESP replied identically by redis-server and weir ({successes} not errors)"
    );
    assert!(
        successes * 3 > commands,
        "too few commands succeeded to compare much"
    );
}
