//! The typed API against the command path: random sequences of operations
//! run on two engines with the same clock, one through the typed calls
//! (`Engine::add`, `read_group`, `claim`, …), the other through the Redis
//! commands they stand for. Every result must render to the command's
//! reply, both engines must log the same records for the command log, and
//! they must end in the same state (entries, groups, consumers, pending
//! entries and their delivery counts).

use std::sync::Arc;

use proptest::prelude::*;
use weir_io::ManualClock;
use weir_stream::{
    AddOptions, ClaimOptions, Config, Context, Delivered, Engine, GroupStart, IdSpec, NodeLimits,
    Outcome, ReadFrom, Reply, StreamEntry, StreamError, StreamId, Trim,
};

const KEYS: [&[u8]; 2] = [b"a", b"b"];
const GROUPS: [&[u8]; 2] = [b"g1", b"g2"];
const CONSUMERS: [&[u8]; 2] = [b"c1", b"c2"];

#[derive(Clone, Debug)]
enum Op {
    Tick(u64),
    Add {
        key: usize,
        explicit: Option<(u64, u64)>,
        fields: u8,
        trim: Option<(bool, u64, bool)>,
        no_mkstream: bool,
    },
    Trim {
        key: usize,
        max_len: u64,
        approx: bool,
    },
    Range {
        key: usize,
        start: (u64, u64),
        end: (u64, u64),
        count: Option<u8>,
        reverse: bool,
    },
    Read {
        after: (u64, u64),
        count: Option<u8>,
    },
    CreateGroup {
        key: usize,
        group: usize,
        last: bool,
        mkstream: bool,
    },
    ReadGroup {
        group: usize,
        consumer: usize,
        history: bool,
        count: Option<u8>,
        noack: bool,
    },
    Ack {
        key: usize,
        group: usize,
        ids: Vec<(u64, u64)>,
    },
    Claim {
        key: usize,
        group: usize,
        consumer: usize,
        min_idle: u64,
        ids: Vec<(u64, u64)>,
        force: bool,
        just_id: bool,
        retry_count: Option<u8>,
    },
    AutoClaim {
        key: usize,
        group: usize,
        consumer: usize,
        min_idle: u64,
        start: (u64, u64),
        count: u8,
        just_id: bool,
    },
    SetId {
        key: usize,
        group: usize,
        last: bool,
    },
    Destroy {
        key: usize,
        group: usize,
    },
    CreateConsumer {
        key: usize,
        group: usize,
        consumer: usize,
    },
    DeleteConsumer {
        key: usize,
        group: usize,
        consumer: usize,
    },
}

fn id() -> impl Strategy<Value = (u64, u64)> {
    (1_000u64..1_006, 0u64..3)
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0usize..2;
    let group = 0usize..2;
    let consumer = 0usize..2;
    let count = proptest::option::of(0u8..4);
    prop_oneof![
        2 => (0u64..3).prop_map(Op::Tick),
        8 => (key.clone(), proptest::option::of(id()), 1u8..3,
              proptest::option::of((any::<bool>(), 0u64..6, any::<bool>())), proptest::bool::weighted(0.1))
            .prop_map(|(key, explicit, fields, trim, no_mkstream)| Op::Add { key, explicit, fields, trim, no_mkstream }),
        1 => (key.clone(), 0u64..5, any::<bool>()).prop_map(|(key, max_len, approx)| Op::Trim { key, max_len, approx }),
        2 => (key.clone(), id(), id(), count.clone(), any::<bool>())
            .prop_map(|(key, start, end, count, reverse)| Op::Range { key, start, end, count, reverse }),
        2 => (id(), count.clone()).prop_map(|(after, count)| Op::Read { after, count }),
        3 => (key.clone(), group.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(key, group, last, mkstream)| Op::CreateGroup { key, group, last, mkstream }),
        5 => (group.clone(), consumer.clone(), proptest::bool::weighted(0.3), count.clone(), proptest::bool::weighted(0.2))
            .prop_map(|(group, consumer, history, count, noack)| Op::ReadGroup { group, consumer, history, count, noack }),
        3 => (key.clone(), group.clone(), proptest::collection::vec(id(), 1..4))
            .prop_map(|(key, group, ids)| Op::Ack { key, group, ids }),
        3 => (key.clone(), group.clone(), consumer.clone(), 0u64..3, proptest::collection::vec(id(), 1..4),
              any::<bool>(), any::<bool>(), proptest::option::of(0u8..4))
            .prop_map(|(key, group, consumer, min_idle, ids, force, just_id, retry_count)| Op::Claim {
                key, group, consumer, min_idle, ids, force, just_id, retry_count }),
        2 => (key.clone(), group.clone(), consumer.clone(), 0u64..3, id(), 1u8..4, any::<bool>())
            .prop_map(|(key, group, consumer, min_idle, start, count, just_id)| Op::AutoClaim {
                key, group, consumer, min_idle, start, count, just_id }),
        1 => (key.clone(), group.clone(), any::<bool>()).prop_map(|(key, group, last)| Op::SetId { key, group, last }),
        1 => (key.clone(), group.clone()).prop_map(|(key, group)| Op::Destroy { key, group }),
        1 => (key.clone(), group.clone(), consumer.clone())
            .prop_map(|(key, group, consumer)| Op::CreateConsumer { key, group, consumer }),
        1 => (key, group, consumer).prop_map(|(key, group, consumer)| Op::DeleteConsumer { key, group, consumer }),
    ]
}

fn sid((ms, seq): (u64, u64)) -> StreamId {
    StreamId::new(ms, seq)
}

fn text(id: StreamId) -> Vec<u8> {
    id.to_bytes()
}

fn entry(entry: &StreamEntry) -> Reply {
    let fields = entry
        .fields
        .iter()
        .flat_map(|(field, value)| [Reply::Bulk(field.clone()), Reply::Bulk(value.clone())])
        .collect();
    Reply::Array(vec![Reply::Bulk(text(entry.id)), Reply::Array(fields)])
}

fn error(error: StreamError) -> Reply {
    Reply::Error(error.into())
}

/// Runs `op` both ways; returns (typed result as a reply, command reply).
fn run(typed: &mut Engine, commands: &mut Engine, op: &Op, clock: &ManualClock) -> (Reply, Reply) {
    let context = Context::default();
    let mut command = |args: Vec<Vec<u8>>| {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        match commands.execute(&context, &args) {
            Outcome::Reply(reply) => reply,
            other => panic!("{args:?} did not reply: {other:?}"),
        }
    };
    let owned = |words: &[&[u8]]| words.iter().map(|word| word.to_vec()).collect::<Vec<_>>();
    match op {
        Op::Tick(ms) => {
            clock.advance(*ms);
            (Reply::OK, Reply::OK)
        }
        Op::Add {
            key,
            explicit,
            fields,
            trim,
            no_mkstream,
        } => {
            let values: Vec<Vec<u8>> = (0..*fields)
                .flat_map(|field| {
                    [
                        format!("f{field}").into_bytes(),
                        format!("v{field}").into_bytes(),
                    ]
                })
                .collect();
            let field_refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let trim = trim.map(|(min_id, threshold, approx)| {
                let trim = if min_id {
                    Trim::min_id(StreamId::new(1_000 + threshold, 0))
                } else {
                    Trim::max_len(threshold)
                };
                if approx {
                    trim.approximate()
                } else {
                    trim
                }
            });
            let id = explicit.map_or(IdSpec::Auto, |id| IdSpec::Explicit(sid(id)));
            let options = AddOptions {
                id,
                trim,
                no_mkstream: *no_mkstream,
            };
            let result = match typed.add(KEYS[*key], &field_refs, &options) {
                Ok(Some(id)) => Reply::Bulk(text(id)),
                Ok(None) => Reply::NullBulk,
                Err(e) => error(e),
            };
            let mut args = owned(&[b"XADD", KEYS[*key]]);
            if *no_mkstream {
                args.push(b"NOMKSTREAM".to_vec());
            }
            if let Some(trim) = trim {
                let (name, threshold) = match trim.strategy {
                    weir_stream::TrimStrategy::MaxLen(n) => ("MAXLEN", n.to_string().into_bytes()),
                    weir_stream::TrimStrategy::MinId(id) => ("MINID", text(id)),
                };
                args.push(name.as_bytes().to_vec());
                args.push(if trim.approx {
                    b"~".to_vec()
                } else {
                    b"=".to_vec()
                });
                args.push(threshold);
            }
            args.push(explicit.map_or(b"*".to_vec(), |id| text(sid(id))));
            args.extend(values);
            (result, command(args))
        }
        Op::Trim {
            key,
            max_len,
            approx,
        } => {
            let trim = Trim::max_len(*max_len);
            let trim = if *approx { trim.approximate() } else { trim };
            let result = match typed.trim(KEYS[*key], &trim) {
                Ok(removed) => Reply::Integer(removed as i64),
                Err(e) => error(e),
            };
            let how: &[u8] = if *approx { b"~" } else { b"=" };
            let max = max_len.to_string().into_bytes();
            (
                result,
                command(owned(&[b"XTRIM", KEYS[*key], b"MAXLEN", how, &max])),
            )
        }
        Op::Range {
            key,
            start,
            end,
            count,
            reverse,
        } => {
            let (start, end) = (sid(*start), sid(*end));
            let count_typed = count.map(usize::from);
            let entries = if *reverse {
                typed.rev_range(KEYS[*key], end, start, count_typed)
            } else {
                typed.range(KEYS[*key], start, end, count_typed)
            };
            let mut args = if *reverse {
                owned(&[b"XREVRANGE", KEYS[*key], &text(end), &text(start)])
            } else {
                owned(&[b"XRANGE", KEYS[*key], &text(start), &text(end)])
            };
            if let Some(count) = count {
                args.push(b"COUNT".to_vec());
                args.push(count.to_string().into_bytes());
            }
            let reply = command(args);
            // COUNT 0 on an existing stream is Redis's null array.
            let result = if *count == Some(0) && reply == Reply::NullArray {
                Reply::NullArray
            } else {
                Reply::Array(entries.iter().map(entry).collect())
            };
            (result, reply)
        }
        Op::Read { after, count } => {
            let after = sid(*after);
            let streams: Vec<(&[u8], StreamId)> = KEYS.iter().map(|key| (*key, after)).collect();
            let read = typed.read(&streams, count.filter(|c| *c > 0).map(usize::from));
            let result = if read.is_empty() {
                Reply::NullArray
            } else {
                Reply::PairMap(
                    read.iter()
                        .map(|stream| {
                            (
                                Reply::Bulk(stream.key.clone()),
                                Reply::Array(stream.entries.iter().map(entry).collect()),
                            )
                        })
                        .collect(),
                )
            };
            let mut args = owned(&[b"XREAD"]);
            if let Some(count) = count.filter(|c| *c > 0) {
                args.push(b"COUNT".to_vec());
                args.push(count.to_string().into_bytes());
            }
            args.extend(owned(&[
                b"STREAMS",
                KEYS[0],
                KEYS[1],
                &text(after),
                &text(after),
            ]));
            (result, command(args))
        }
        Op::CreateGroup {
            key,
            group,
            last,
            mkstream,
        } => {
            let start = if *last {
                GroupStart::Last
            } else {
                GroupStart::Id(StreamId::MIN)
            };
            let result = match typed.create_group(KEYS[*key], GROUPS[*group], start, *mkstream) {
                Ok(()) => Reply::OK,
                Err(e) => error(e),
            };
            let start: &[u8] = if *last { b"$" } else { b"0" };
            let mut args = owned(&[b"XGROUP", b"CREATE", KEYS[*key], GROUPS[*group], start]);
            if *mkstream {
                args.push(b"MKSTREAM".to_vec());
            }
            (result, command(args))
        }
        Op::ReadGroup {
            group,
            consumer,
            history,
            count,
            noack,
        } => {
            let from = if *history {
                ReadFrom::Pending(StreamId::MIN)
            } else {
                ReadFrom::New
            };
            let streams: Vec<(&[u8], ReadFrom)> = KEYS.iter().map(|key| (*key, from)).collect();
            let count_typed = count.filter(|c| *c > 0).map(usize::from);
            let result = match typed.read_group(
                GROUPS[*group],
                CONSUMERS[*consumer],
                &streams,
                count_typed,
                *noack,
            ) {
                Ok(read) if read.is_empty() => Reply::NullArray,
                Ok(read) => Reply::PairMap(
                    read.iter()
                        .map(|stream| {
                            let entries = stream
                                .entries
                                .iter()
                                .map(|delivered| match delivered {
                                    Delivered::Entry(e) => entry(e),
                                    Delivered::Deleted(id) => {
                                        Reply::Array(vec![Reply::Bulk(text(*id)), Reply::NullArray])
                                    }
                                })
                                .collect();
                            (Reply::Bulk(stream.key.clone()), Reply::Array(entries))
                        })
                        .collect(),
                ),
                Err(e) => error(e),
            };
            let mut args = owned(&[
                b"XREADGROUP",
                b"GROUP",
                GROUPS[*group],
                CONSUMERS[*consumer],
            ]);
            if let Some(count) = count.filter(|c| *c > 0) {
                args.push(b"COUNT".to_vec());
                args.push(count.to_string().into_bytes());
            }
            if *noack {
                args.push(b"NOACK".to_vec());
            }
            let id: &[u8] = if *history { b"0" } else { b">" };
            args.extend(owned(&[b"STREAMS", KEYS[0], KEYS[1], id, id]));
            let reply = command(args);
            // The typed call checks every stream's group before reading;
            // the command names the first stream without it.
            errors_alike(result, reply)
        }
        Op::Ack { key, group, ids } => {
            let ids: Vec<StreamId> = ids.iter().copied().map(sid).collect();
            let acknowledged = typed.ack(KEYS[*key], GROUPS[*group], &ids);
            let mut args = owned(&[b"XACK", KEYS[*key], GROUPS[*group]]);
            args.extend(ids.iter().map(|id| text(*id)));
            (Reply::Integer(acknowledged as i64), command(args))
        }
        Op::Claim {
            key,
            group,
            consumer,
            min_idle,
            ids,
            force,
            just_id,
            retry_count,
        } => {
            let ids: Vec<StreamId> = ids.iter().copied().map(sid).collect();
            let options = ClaimOptions {
                force: *force,
                just_id: *just_id,
                retry_count: retry_count.map(u64::from),
                ..ClaimOptions::default()
            };
            let result = match typed.claim(
                KEYS[*key],
                GROUPS[*group],
                CONSUMERS[*consumer],
                *min_idle,
                &ids,
                &options,
            ) {
                Ok(entries) if *just_id => {
                    Reply::Array(entries.iter().map(|e| Reply::Bulk(text(e.id))).collect())
                }
                Ok(entries) => Reply::Array(entries.iter().map(entry).collect()),
                Err(e) => error(e),
            };
            let min_idle = min_idle.to_string().into_bytes();
            let mut args = owned(&[
                b"XCLAIM",
                KEYS[*key],
                GROUPS[*group],
                CONSUMERS[*consumer],
                &min_idle,
            ]);
            args.extend(ids.iter().map(|id| text(*id)));
            if let Some(count) = retry_count {
                args.push(b"RETRYCOUNT".to_vec());
                args.push(count.to_string().into_bytes());
            }
            if *force {
                args.push(b"FORCE".to_vec());
            }
            if *just_id {
                args.push(b"JUSTID".to_vec());
            }
            let reply = command(args);
            // XCLAIM's error for a missing group is worded differently.
            errors_alike(result, reply)
        }
        Op::AutoClaim {
            key,
            group,
            consumer,
            min_idle,
            start,
            count,
            just_id,
        } => {
            let result = match typed.auto_claim(
                KEYS[*key],
                GROUPS[*group],
                CONSUMERS[*consumer],
                *min_idle,
                sid(*start),
                usize::from(*count),
                *just_id,
            ) {
                Ok(claimed) => {
                    let entries = if *just_id {
                        claimed
                            .entries
                            .iter()
                            .map(|e| Reply::Bulk(text(e.id)))
                            .collect()
                    } else {
                        claimed.entries.iter().map(entry).collect()
                    };
                    Reply::Array(vec![
                        Reply::Bulk(text(claimed.next)),
                        Reply::Array(entries),
                        Reply::Array(
                            claimed
                                .deleted
                                .iter()
                                .map(|id| Reply::Bulk(text(*id)))
                                .collect(),
                        ),
                    ])
                }
                Err(e) => error(e),
            };
            let min_idle = min_idle.to_string().into_bytes();
            let count = count.to_string().into_bytes();
            let mut args = owned(&[
                b"XAUTOCLAIM",
                KEYS[*key],
                GROUPS[*group],
                CONSUMERS[*consumer],
                &min_idle,
            ]);
            args.extend([text(sid(*start)), b"COUNT".to_vec(), count]);
            if *just_id {
                args.push(b"JUSTID".to_vec());
            }
            let reply = command(args);
            errors_alike(result, reply)
        }
        Op::SetId { key, group, last } => {
            let start = if *last {
                GroupStart::Last
            } else {
                GroupStart::Id(StreamId::MIN)
            };
            let result = match typed.set_group_id(KEYS[*key], GROUPS[*group], start) {
                Ok(()) => Reply::OK,
                Err(e) => error(e),
            };
            let start: &[u8] = if *last { b"$" } else { b"0" };
            let reply = command(owned(&[
                b"XGROUP",
                b"SETID",
                KEYS[*key],
                GROUPS[*group],
                start,
            ]));
            // On a missing stream XGROUP names the stream, not the group.
            errors_alike(result, reply)
        }
        Op::Destroy { key, group } => {
            let removed = typed.destroy_group(KEYS[*key], GROUPS[*group]);
            let reply = command(owned(&[b"XGROUP", b"DESTROY", KEYS[*key], GROUPS[*group]]));
            // XGROUP DESTROY on a missing stream is an error, the typed
            // call says it removed nothing.
            match reply {
                Reply::Error(_) if !removed => (reply.clone(), reply),
                reply => (Reply::Integer(i64::from(removed)), reply),
            }
        }
        Op::CreateConsumer {
            key,
            group,
            consumer,
        } => {
            let result =
                match typed.create_consumer(KEYS[*key], GROUPS[*group], CONSUMERS[*consumer]) {
                    Ok(created) => Reply::Integer(i64::from(created)),
                    Err(e) => error(e),
                };
            let reply = command(owned(&[
                b"XGROUP",
                b"CREATECONSUMER",
                KEYS[*key],
                GROUPS[*group],
                CONSUMERS[*consumer],
            ]));
            errors_alike(result, reply)
        }
        Op::DeleteConsumer {
            key,
            group,
            consumer,
        } => {
            let result =
                match typed.delete_consumer(KEYS[*key], GROUPS[*group], CONSUMERS[*consumer]) {
                    Ok(pending) => Reply::Integer(pending as i64),
                    Err(e) => error(e),
                };
            let reply = command(owned(&[
                b"XGROUP",
                b"DELCONSUMER",
                KEYS[*key],
                GROUPS[*group],
                CONSUMERS[*consumer],
            ]));
            errors_alike(result, reply)
        }
    }
}

/// Where the typed call and the command fail with differently worded
/// errors (the command names the first stream, XCLAIM words NOGROUP its
/// own way), both failing is what must agree; any other result is
/// compared whole.
fn errors_alike(result: Reply, reply: Reply) -> (Reply, Reply) {
    match (&result, &reply) {
        (Reply::Error(_), Reply::Error(_)) => (reply.clone(), reply),
        _ => (result, reply),
    }
}

fn resp(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    reply.write_resp2(&mut out);
    out
}

/// Everything a client can see of the state, through commands.
fn state(engine: &mut Engine) -> Vec<Vec<u8>> {
    let context = Context::default();
    let mut seen = Vec::new();
    for key in KEYS {
        for args in [
            vec![&b"XRANGE"[..], key, b"-", b"+"],
            vec![&b"XINFO"[..], b"STREAM", key, b"FULL"],
        ] {
            if let Outcome::Reply(reply) = engine.execute(&context, &args) {
                seen.push(resp(&reply));
            }
        }
    }
    seen
}

fn engines() -> (Engine, Engine, ManualClock) {
    let clock = ManualClock::new(1_000);
    let config = Config {
        node_limits: NodeLimits {
            max_entries: 3,
            max_bytes: 4096,
        },
        ..Config::default()
    };
    let mut typed = Engine::new(config, Arc::new(clock.clone()));
    let mut commands = Engine::new(config, Arc::new(clock.clone()));
    typed.enable_propagation();
    commands.enable_propagation();
    (typed, commands, clock)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn typed_calls_do_what_their_commands_do(ops in proptest::collection::vec(op(), 1..60)) {
        let (mut typed, mut commands, clock) = engines();
        for (step, op) in ops.iter().enumerate() {
            let (result, reply) = run(&mut typed, &mut commands, op, &clock);
            prop_assert_eq!(resp(&result), resp(&reply), "step {}: {:?}", step, op);
            prop_assert_eq!(typed.take_propagated(), commands.take_propagated(), "log records, step {}: {:?}", step, op);
        }
        prop_assert_eq!(state(&mut typed), state(&mut commands));
        prop_assert_eq!(typed.stats().changes, commands.stats().changes);
    }
}

#[test]
fn errors_read_as_redis_errors() {
    let (mut engine, _, _) = engines();
    let added = engine.add(
        b"s",
        &[b"f", b"v"],
        &AddOptions {
            id: IdSpec::Explicit(StreamId::new(5, 0)),
            ..AddOptions::default()
        },
    );
    assert_eq!(added, Ok(Some(StreamId::new(5, 0))));
    let again = engine.add(
        b"s",
        &[b"f", b"v"],
        &AddOptions {
            id: IdSpec::Explicit(StreamId::new(5, 0)),
            ..AddOptions::default()
        },
    );
    assert_eq!(again, Err(StreamError::IdTooSmall));
    assert_eq!(
        engine.add(b"s", &[b"f"], &AddOptions::default()),
        Err(StreamError::Fields)
    );
    let missing = engine.read_group(b"nope", b"c", &[(b"s", ReadFrom::New)], None, false);
    assert_eq!(
        missing.unwrap_err().to_string(),
        "NOGROUP No such consumer group 'nope' for key name 's'"
    );
    assert_eq!(
        engine.trim(
            b"s",
            &Trim {
                limit: Some(5),
                ..Trim::max_len(1)
            }
        ),
        Err(StreamError::LimitWithoutApprox)
    );
}
