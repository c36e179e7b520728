//! The stream engine in process:
//!
//! 1. XADD of one small field (`f` -> a 9-byte value), through
//!    `Engine::execute` with Redis-style arguments (target: at least
//!    5 million entries/s);
//! 2. XREADGROUP `>` COUNT 10 followed by XACK of the 10 IDs read (target:
//!    at least 2 million entries/s).

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_benches::{record, report_rate, Side};
use weir_io::ManualClock;
use weir_stream::{Config, Context, Engine, Outcome, Reply};

const ENTRIES: u64 = 1_000_000;

fn xadd(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("stream_xadd");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(ENTRIES));
    group.bench_function("xadd_one_small_field", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = std::time::Duration::ZERO;
            for _ in 0..iterations {
                let clock = ManualClock::new(1_700_000_000_000);
                let mut engine = Engine::new(Config::default(), Arc::new(clock.clone()));
                let context = Context::default();
                let value = b"12345678x";
                let started = Instant::now();
                for index in 0..ENTRIES {
                    if index % 1024 == 0 {
                        clock.advance(1);
                    }
                    let outcome =
                        engine.execute(&context, &[b"XADD", b"stream", b"*", b"f", value]);
                    debug_assert!(matches!(outcome, Outcome::Reply(Reply::Bulk(_))));
                    let _ = outcome;
                }
                elapsed += started.elapsed();
            }
            record("xadd_one_small_field", elapsed, iterations)
        });
    });
    group.finish();
    report_rate(
        "in-process XADD of one small field",
        "entries",
        Side {
            id: "xadd_one_small_field",
            work: ENTRIES as f64,
        },
        5e6,
    );
}

fn read_and_ack(criterion: &mut Criterion) {
    let context = Context::default();
    let mut group = criterion.benchmark_group("stream_group_read");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(ENTRIES));
    group.bench_function("xreadgroup_count_10_then_xack", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = std::time::Duration::ZERO;
            for _ in 0..iterations {
                let clock = ManualClock::new(1_700_000_000_000);
                let mut engine = Engine::new(Config::default(), Arc::new(clock));
                for index in 0..ENTRIES {
                    let id = format!("{}-0", index + 1);
                    engine.execute(
                        &context,
                        &[b"XADD", b"stream", id.as_bytes(), b"f", b"12345678x"],
                    );
                }
                engine.execute(&context, &[b"XGROUP", b"CREATE", b"stream", b"group", b"0"]);
                // The IDs as a client would send them back: text it holds.
                let mut ids: Vec<u8> = Vec::with_capacity(512);
                let started = Instant::now();
                let mut consumed = 0;
                while consumed < ENTRIES {
                    let outcome = engine.execute(
                        &context,
                        &[
                            b"XREADGROUP",
                            b"GROUP",
                            b"group",
                            b"consumer",
                            b"COUNT",
                            b"10",
                            b"STREAMS",
                            b"stream",
                            b">",
                        ],
                    );
                    let Outcome::Reply(Reply::PairMap(streams)) = outcome else {
                        panic!("nothing read");
                    };
                    let Reply::Array(entries) = &streams[0].1 else {
                        panic!("entries")
                    };
                    ids.clear();
                    for entry in entries {
                        let Reply::Entry(entry) = entry else {
                            panic!("entry")
                        };
                        entry.id().write_to(&mut ids);
                        ids.push(b' ');
                    }
                    let mut ack: Vec<&[u8]> = Vec::with_capacity(16);
                    ack.extend_from_slice(&[b"XACK".as_slice(), b"stream", b"group"]);
                    ack.extend(ids.split(|byte| *byte == b' ').filter(|id| !id.is_empty()));
                    let Outcome::Reply(Reply::Integer(acknowledged)) =
                        engine.execute(&context, &ack)
                    else {
                        panic!("ack");
                    };
                    consumed += acknowledged as u64;
                }
                elapsed += started.elapsed();
            }
            record("xreadgroup_count_10_then_xack", elapsed, iterations)
        });
    });
    group.finish();
    report_rate(
        "in-process XREADGROUP COUNT 10 + XACK",
        "entries",
        Side {
            id: "xreadgroup_count_10_then_xack",
            work: ENTRIES as f64,
        },
        2e6,
    );
}

criterion_group!(benches, xadd, read_and_ack);
criterion_main!(benches);
