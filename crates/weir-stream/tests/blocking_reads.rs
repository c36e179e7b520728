//! Blocking XREAD and XREADGROUP: expressed without threads or clocks in the
//! engine. A read that cannot be served blocks; writes wake the waiting
//! clients in the order they blocked; timeouts come from the time the owner
//! passes in; deleting a key or destroying a group wakes group readers with
//! -NOGROUP while plain readers keep waiting.

use std::sync::Arc;

use weir_io::ManualClock;
use weir_stream::{Config, Context, Engine, Outcome, Reply};

fn engine() -> (Engine, ManualClock) {
    let clock = ManualClock::new(1_000);
    (
        Engine::new(Config::default(), Arc::new(clock.clone())),
        clock,
    )
}

fn run(engine: &mut Engine, client: u64, args: &[&str]) -> Outcome {
    let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    engine.execute(
        &Context {
            client,
            ..Context::default()
        },
        &args,
    )
}

fn ids(reply: &Reply) -> Vec<String> {
    let Reply::PairMap(streams) = reply else {
        panic!("not a streams reply: {reply:?}");
    };
    let mut ids = Vec::new();
    for (_, entries) in streams {
        let Reply::Array(entries) = entries else {
            panic!("entries")
        };
        for entry in entries {
            let Reply::Entry(entry) = entry else {
                panic!("entry")
            };
            ids.push(entry.id().to_string());
        }
    }
    ids
}

#[test]
fn xread_blocks_until_an_entry_arrives_after_the_given_id() {
    let (mut engine, _) = engine();
    run(&mut engine, 9, &["XADD", "s", "1-0", "f", "v"]);
    assert_eq!(
        run(
            &mut engine,
            1,
            &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]
        ),
        Outcome::Blocked
    );
    assert_eq!(
        run(
            &mut engine,
            2,
            &["XREAD", "BLOCK", "0", "STREAMS", "other", "s", "0", "5-0"]
        ),
        Outcome::Blocked
    );
    assert_eq!(engine.blocked_clients(), 2);
    run(&mut engine, 9, &["XADD", "s", "2-0", "f", "v"]);
    let wakeups = engine.take_wakeups();
    assert_eq!(wakeups.len(), 1, "client 2 waits for IDs after 5-0");
    assert_eq!(wakeups[0].0, 1);
    assert_eq!(ids(&wakeups[0].1), ["2-0"]);
    run(&mut engine, 9, &["XADD", "other", "1-0", "f", "v"]);
    let wakeups = engine.take_wakeups();
    assert_eq!(wakeups[0].0, 2);
    assert_eq!(ids(&wakeups[0].1), ["1-0"]);
    assert_eq!(engine.blocked_clients(), 0);
}

#[test]
fn a_timeout_replies_null_and_block_zero_waits_forever() {
    let (mut engine, _) = engine();
    assert_eq!(
        run(
            &mut engine,
            1,
            &["XREAD", "BLOCK", "500", "STREAMS", "s", "$"]
        ),
        Outcome::Blocked
    );
    assert_eq!(
        run(
            &mut engine,
            2,
            &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]
        ),
        Outcome::Blocked
    );
    assert_eq!(engine.next_deadline(), Some(1_500));
    engine.expire_blocked(1_499);
    assert!(engine.take_wakeups().is_empty());
    engine.expire_blocked(1_500);
    assert_eq!(engine.take_wakeups(), [(1, Reply::NullArray)]);
    engine.expire_blocked(u64::MAX);
    assert!(engine.take_wakeups().is_empty(), "BLOCK 0 never times out");
    assert!(engine.unblock(2));
    assert_eq!(engine.blocked_clients(), 0);
}

#[test]
fn inside_multi_block_is_an_immediate_timeout() {
    let (mut engine, _) = engine();
    let context = Context {
        client: 1,
        no_blocking: true,
        ..Context::default()
    };
    let outcome = engine.execute(
        &context,
        &[b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s", b"$"],
    );
    assert_eq!(outcome, Outcome::Reply(Reply::NullArray));
}

#[test]
fn group_readers_are_served_in_blocking_order_one_entry_each() {
    let (mut engine, _) = engine();
    run(
        &mut engine,
        9,
        &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
    );
    for client in 1..=3 {
        let consumer = format!("c{client}");
        let outcome = run(
            &mut engine,
            client,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                &consumer,
                "COUNT",
                "1",
                "BLOCK",
                "0",
                "STREAMS",
                "s",
                ">",
            ],
        );
        assert_eq!(outcome, Outcome::Blocked);
    }
    run(&mut engine, 9, &["XADD", "s", "1-0", "f", "v"]);
    run(&mut engine, 9, &["XADD", "s", "2-0", "f", "v"]);
    let wakeups = engine.take_wakeups();
    let served: Vec<(u64, Vec<String>)> = wakeups
        .iter()
        .map(|(client, reply)| (*client, ids(reply)))
        .collect();
    assert_eq!(
        served,
        [(1, vec!["1-0".to_string()]), (2, vec!["2-0".to_string()])]
    );
    assert_eq!(engine.blocked_clients(), 1);
    // The deliveries are in the PEL of the consumers that got them.
    let Outcome::Reply(Reply::Array(summary)) = run(&mut engine, 9, &["XPENDING", "s", "g"]) else {
        panic!()
    };
    assert_eq!(summary[0], Reply::Integer(2));
}

#[test]
fn destroying_the_group_or_deleting_the_key_wakes_group_readers_with_nogroup() {
    let (mut engine, _) = engine();
    run(
        &mut engine,
        9,
        &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
    );
    run(
        &mut engine,
        1,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">",
        ],
    );
    run(
        &mut engine,
        2,
        &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
    );
    run(&mut engine, 9, &["XGROUP", "DESTROY", "s", "g"]);
    let wakeups = engine.take_wakeups();
    assert_eq!(wakeups.len(), 1);
    assert!(matches!(&wakeups[0], (1, Reply::Error(error)) if error.text().starts_with("NOGROUP")));

    run(&mut engine, 9, &["XGROUP", "CREATE", "s", "g", "$"]);
    run(
        &mut engine,
        3,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">",
        ],
    );
    run(&mut engine, 9, &["DEL", "s"]);
    let wakeups = engine.take_wakeups();
    assert_eq!(wakeups.len(), 1, "the plain XREAD survives the DEL");
    assert!(matches!(&wakeups[0], (3, Reply::Error(error)) if error.text().starts_with("NOGROUP")));
    run(&mut engine, 9, &["XADD", "s", "7-0", "f", "v"]);
    let wakeups = engine.take_wakeups();
    assert_eq!(wakeups[0].0, 2);
    assert_eq!(ids(&wakeups[0].1), ["7-0"]);
}

#[test]
fn flushall_wakes_group_readers() {
    let (mut engine, _) = engine();
    run(
        &mut engine,
        9,
        &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
    );
    run(
        &mut engine,
        1,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">",
        ],
    );
    engine.flush_all();
    let wakeups = engine.take_wakeups();
    assert!(matches!(&wakeups[..], [(1, Reply::Error(_))]));
    assert_eq!(engine.key_count(), 0);
}

#[test]
fn xread_plus_reads_the_last_entry_in_redis_7_4_mode() {
    let (mut engine, _) = engine();
    run(&mut engine, 9, &["XADD", "s", "1-0", "f", "v"]);
    run(&mut engine, 9, &["XADD", "s", "2-0", "f", "v"]);
    let Outcome::Reply(reply) = run(&mut engine, 1, &["XREAD", "STREAMS", "s", "+"]) else {
        panic!()
    };
    assert_eq!(ids(&reply), ["2-0"]);
}

#[test]
fn xread_plus_on_a_stream_that_does_not_exist_blocks_for_the_first_entry() {
    let (mut engine, _) = engine();
    assert_eq!(
        run(&mut engine, 1, &["XREAD", "STREAMS", "s", "+"]),
        Outcome::Reply(Reply::NullArray)
    );
    assert_eq!(
        run(
            &mut engine,
            1,
            &["XREAD", "BLOCK", "0", "STREAMS", "s", "+"]
        ),
        Outcome::Blocked
    );
    run(&mut engine, 9, &["XADD", "s", "5-0", "f", "v"]);
    let wakeups = engine.take_wakeups();
    assert_eq!(wakeups.len(), 1);
    assert_eq!(wakeups[0].0, 1);
    assert_eq!(ids(&wakeups[0].1), ["5-0"]);
}

#[test]
fn xread_plus_follows_the_streams_last_id_as_redis_7_4_does() {
    let (mut engine, _) = engine();
    run(&mut engine, 9, &["XADD", "s", "1-0", "f", "v"]);
    run(&mut engine, 9, &["XADD", "s", "2-0", "f", "v"]);
    // The last entry deleted: its ID stays the stream's last, and nothing
    // is after the ID before it.
    run(&mut engine, 9, &["XDEL", "s", "2-0"]);
    assert_eq!(
        run(&mut engine, 1, &["XREAD", "STREAMS", "s", "+"]),
        Outcome::Reply(Reply::NullArray)
    );
    // A stream created empty has the last ID 0-0: Redis refuses it.
    run(
        &mut engine,
        9,
        &["XGROUP", "CREATE", "empty", "g", "$", "MKSTREAM"],
    );
    let Outcome::Reply(Reply::Error(error)) =
        run(&mut engine, 1, &["XREAD", "STREAMS", "empty", "+"])
    else {
        panic!("expected an error")
    };
    assert_eq!(error.to_string(), "ERR the stream last element ID is 0-0");
    // XREADGROUP has its own error for it.
    let Outcome::Reply(Reply::Error(error)) = run(
        &mut engine,
        1,
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "empty", "+"],
    ) else {
        panic!("expected an error")
    };
    assert!(
        error.to_string().starts_with("ERR The + ID is meaningless"),
        "{error}"
    );
}

#[test]
fn xread_plus_is_an_invalid_id_in_redis_7_0_mode() {
    let clock = ManualClock::new(1_000);
    let config = Config {
        compatibility: weir_stream::Compatibility::Redis70,
        ..Config::default()
    };
    let mut engine = Engine::new(config, Arc::new(clock));
    let Outcome::Reply(Reply::Error(error)) = run(&mut engine, 1, &["XREAD", "STREAMS", "s", "+"])
    else {
        panic!("expected an error")
    };
    assert_eq!(
        error.to_string(),
        "ERR Invalid stream ID specified as stream command argument"
    );
}

#[test]
fn readers_blocked_on_keys_a_batch_writes_are_served_when_it_ends() {
    let (mut engine, _) = engine();
    assert_eq!(
        run(
            &mut engine,
            1,
            &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]
        ),
        Outcome::Blocked
    );
    assert_eq!(
        run(
            &mut engine,
            2,
            &["XREAD", "BLOCK", "0", "STREAMS", "t", "$"]
        ),
        Outcome::Blocked
    );
    // MULTI; XADD s old; DEL s; XADD t one; XADD t two; EXEC
    engine.begin_batch();
    run(&mut engine, 9, &["XADD", "s", "5-0", "old", "x"]);
    run(&mut engine, 9, &["DEL", "s"]);
    run(&mut engine, 9, &["XADD", "t", "1-1", "field", "one"]);
    run(&mut engine, 9, &["XADD", "t", "1-2", "field", "two"]);
    assert!(
        engine.take_wakeups().is_empty(),
        "nobody is served inside the batch"
    );
    engine.end_batch();
    let wakeups = engine.take_wakeups();
    assert_eq!(wakeups.len(), 1, "s was deleted: its reader waits on");
    assert_eq!(wakeups[0].0, 2);
    assert_eq!(
        ids(&wakeups[0].1),
        ["1-1", "1-2"],
        "both entries of the batch"
    );
    run(&mut engine, 9, &["XADD", "s", "6-0", "new", "x"]);
    let wakeups = engine.take_wakeups();
    assert_eq!(wakeups.len(), 1);
    assert_eq!(
        (wakeups[0].0, ids(&wakeups[0].1)),
        (1, vec!["6-0".to_string()])
    );
}
