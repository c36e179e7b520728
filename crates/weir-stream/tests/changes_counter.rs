//! The engine's change counter (Redis's `dirty`, INFO
//! `rdb_changes_since_last_save`) in the default Redis 7.4 mode; the 7.0
//! mode is compared with redis-server command by command in weir-server's
//! `differential_wire`.

use std::sync::Arc;

use weir_io::ManualClock;
use weir_stream::{Config, Context, Engine};

fn changes_after(engine: &mut Engine, args: &[&str]) -> u64 {
    let before = engine.stats().changes;
    let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    engine.execute(&Context::default(), &args);
    engine.stats().changes - before
}

#[test]
fn each_command_moves_the_counter_as_redis_7_4_does() {
    let mut engine = Engine::new(Config::default(), Arc::new(ManualClock::new(1_000)));
    let e = &mut engine;
    assert_eq!(changes_after(e, &["XADD", "s", "1-1", "f", "v"]), 1);
    assert_eq!(
        changes_after(e, &["XADD", "s", "MAXLEN", "1", "2-1", "f", "v"]),
        1
    );
    assert_eq!(
        changes_after(e, &["XADD", "s", "1-1", "f", "v"]),
        0,
        "refused"
    );
    for id in ["3-1", "4-1", "5-1"] {
        changes_after(e, &["XADD", "s", id, "f", "v"]);
    }
    assert_eq!(changes_after(e, &["XGROUP", "CREATE", "s", "g", "0"]), 1);
    // New entries to a new consumer: one for the consumer, one for the
    // read, however many entries it delivers.
    assert_eq!(
        changes_after(e, &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]),
        2
    );
    // History from the PEL changes nothing.
    assert_eq!(
        changes_after(e, &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "0"]),
        0
    );
    // Nothing new for an existing consumer: nothing.
    assert_eq!(
        changes_after(e, &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]),
        0
    );
    assert_eq!(
        changes_after(e, &["XACK", "s", "g", "3-1", "4-1", "9-9"]),
        2
    );
    assert_eq!(
        changes_after(e, &["XCLAIM", "s", "g", "d", "0", "5-1"]),
        2,
        "claim + consumer"
    );
    assert_eq!(changes_after(e, &["XDEL", "s", "2-1", "3-1", "9-9"]), 2);
    assert_eq!(changes_after(e, &["XTRIM", "s", "MAXLEN", "0"]), 2);
    assert_eq!(changes_after(e, &["XSETID", "s", "10-0"]), 1);
    assert_eq!(changes_after(e, &["XGROUP", "SETID", "s", "g", "$"]), 1);
    assert_eq!(
        changes_after(e, &["XGROUP", "CREATECONSUMER", "s", "g", "x"]),
        1
    );
    assert_eq!(
        changes_after(e, &["XGROUP", "CREATECONSUMER", "s", "g", "x"]),
        0
    );
    assert_eq!(
        changes_after(e, &["XGROUP", "DELCONSUMER", "s", "g", "x"]),
        1
    );
    assert_eq!(changes_after(e, &["XGROUP", "DESTROY", "s", "g"]), 1);
    assert_eq!(changes_after(e, &["XRANGE", "s", "-", "+"]), 0, "a read");
    assert_eq!(changes_after(e, &["DEL", "s", "missing"]), 1);
}
