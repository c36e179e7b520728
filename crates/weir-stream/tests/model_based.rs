//! A model-based property test of the stream engine: random operations
//! (appends, deletions, exact trims, ranges both ways, group reads,
//! acknowledgements, claims, pending lists) against a plain reference model
//! built on `BTreeMap`s, with small node limits so that entries spread over
//! many compact nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use weir_io::ManualClock;
use weir_stream::{Config, Context, Engine, NodeLimits, Outcome, Reply};

#[derive(Clone, Debug)]
enum Op {
    Add {
        ms: u64,
        fields: u8,
        value: u16,
    },
    Delete {
        pick: u16,
    },
    TrimMaxLen {
        max: u8,
    },
    TrimMinId {
        pick: u16,
    },
    Range {
        start: u16,
        end: u16,
        count: u8,
        reverse: bool,
    },
    CreateGroup {
        group: u8,
    },
    ReadGroup {
        group: u8,
        consumer: u8,
        count: u8,
    },
    Ack {
        group: u8,
        pick: u16,
    },
    Claim {
        group: u8,
        consumer: u8,
        pick: u16,
    },
    Pending {
        group: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..4, 1u8..4, any::<u16>()).prop_map(|(ms, fields, value)| Op::Add { ms, fields, value }),
        2 => any::<u16>().prop_map(|pick| Op::Delete { pick }),
        1 => (0u8..20).prop_map(|max| Op::TrimMaxLen { max }),
        1 => any::<u16>().prop_map(|pick| Op::TrimMinId { pick }),
        3 => (any::<u16>(), any::<u16>(), 0u8..6, any::<bool>()).prop_map(|(start, end, count, reverse)| Op::Range { start, end, count, reverse }),
        1 => (0u8..2).prop_map(|group| Op::CreateGroup { group }),
        3 => (0u8..2, 0u8..3, 0u8..4).prop_map(|(group, consumer, count)| Op::ReadGroup { group, consumer, count }),
        2 => (0u8..2, any::<u16>()).prop_map(|(group, pick)| Op::Ack { group, pick }),
        1 => (0u8..2, 0u8..3, any::<u16>()).prop_map(|(group, consumer, pick)| Op::Claim { group, consumer, pick }),
        1 => (0u8..2).prop_map(|group| Op::Pending { group }),
    ]
}

type Id = (u64, u64);

#[derive(Default)]
struct ModelGroup {
    last: Id,
    /// id -> (consumer, deliveries)
    pending: BTreeMap<Id, (String, u64)>,
}

#[derive(Default)]
struct Model {
    entries: BTreeMap<Id, Vec<(String, String)>>,
    last: Id,
    groups: BTreeMap<String, ModelGroup>,
    /// Every ID ever added, for picking.
    added: Vec<Id>,
}

fn id_text((ms, seq): Id) -> String {
    format!("{ms}-{seq}")
}

fn entry_reply(id: Id, fields: &[(String, String)]) -> Reply {
    let mut items = Vec::new();
    for (name, value) in fields {
        items.push(Reply::bulk(name));
        items.push(Reply::bulk(value));
    }
    Reply::Array(vec![Reply::bulk(id_text(id)), Reply::Array(items)])
}

fn run(engine: &mut Engine, args: &[String]) -> Reply {
    let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    match engine.execute(&Context::default(), &args) {
        Outcome::Reply(reply) => reply,
        Outcome::Blocked => panic!("blocked"),
    }
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|part| part.to_string()).collect()
}

impl Model {
    fn pick(&self, pick: u16) -> Id {
        if self.added.is_empty() {
            (0, 1)
        } else {
            self.added[pick as usize % self.added.len()]
        }
    }

    fn apply(&mut self, engine: &mut Engine, op: &Op) {
        match op {
            Op::Add { ms, fields, value } => {
                let id = if *ms > 0 {
                    (self.last.0 + ms, 0)
                } else {
                    (self.last.0, self.last.1 + 1)
                };
                let names = ["f", "g", "h"];
                let fields: Vec<(String, String)> = (0..*fields as usize)
                    .map(|index| {
                        (
                            names[index].to_string(),
                            format!("{value}{}", "x".repeat(*value as usize % 40)),
                        )
                    })
                    .collect();
                let mut command = args(&["XADD", "s", &id_text(id)]);
                for (name, value) in &fields {
                    command.push(name.clone());
                    command.push(value.clone());
                }
                assert_eq!(run(engine, &command), Reply::bulk(id_text(id)));
                self.entries.insert(id, fields);
                self.last = id;
                self.added.push(id);
            }
            Op::Delete { pick } => {
                let id = self.pick(*pick);
                let removed = i64::from(self.entries.remove(&id).is_some());
                assert_eq!(
                    run(engine, &args(&["XDEL", "s", &id_text(id)])),
                    Reply::Integer(removed)
                );
            }
            Op::TrimMaxLen { max } => {
                let max = *max as usize;
                let excess = self.entries.len().saturating_sub(max);
                let doomed: Vec<Id> = self.entries.keys().take(excess).copied().collect();
                for id in &doomed {
                    self.entries.remove(id);
                }
                let reply = run(engine, &args(&["XTRIM", "s", "MAXLEN", &max.to_string()]));
                assert_eq!(reply, Reply::Integer(doomed.len() as i64));
            }
            Op::TrimMinId { pick } => {
                let min = self.pick(*pick);
                let doomed: Vec<Id> = self.entries.range(..min).map(|(id, _)| *id).collect();
                for id in &doomed {
                    self.entries.remove(id);
                }
                let reply = run(engine, &args(&["XTRIM", "s", "MINID", &id_text(min)]));
                assert_eq!(reply, Reply::Integer(doomed.len() as i64));
            }
            Op::Range {
                start,
                end,
                count,
                reverse,
            } => {
                let (mut low, mut high) = (self.pick(*start), self.pick(*end));
                if low > high {
                    std::mem::swap(&mut low, &mut high);
                }
                let mut expected: Vec<Reply> = self
                    .entries
                    .range(low..=high)
                    .map(|(id, fields)| entry_reply(*id, fields))
                    .collect();
                if *reverse {
                    expected.reverse();
                }
                let mut command = if *reverse {
                    args(&["XREVRANGE", "s", &id_text(high), &id_text(low)])
                } else {
                    args(&["XRANGE", "s", &id_text(low), &id_text(high)])
                };
                if *count > 0 {
                    expected.truncate(*count as usize);
                    command.extend(args(&["COUNT", &count.to_string()]));
                }
                assert_eq!(run(engine, &command), Reply::Array(expected));
            }
            Op::CreateGroup { group } => {
                let name = format!("g{group}");
                let reply = run(
                    engine,
                    &args(&["XGROUP", "CREATE", "s", &name, "0", "MKSTREAM"]),
                );
                match self.groups.entry(name) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        assert!(matches!(reply, Reply::Error(_)));
                    }
                    std::collections::btree_map::Entry::Vacant(vacant) => {
                        assert_eq!(reply, Reply::OK);
                        vacant.insert(ModelGroup::default());
                    }
                }
            }
            Op::ReadGroup {
                group,
                consumer,
                count,
            } => {
                let name = format!("g{group}");
                let consumer = format!("c{consumer}");
                let mut command = args(&["XREADGROUP", "GROUP", &name, &consumer]);
                if *count > 0 {
                    command.extend(args(&["COUNT", &count.to_string()]));
                }
                command.extend(args(&["STREAMS", "s", ">"]));
                let reply = run(engine, &command);
                let Some(state) = self.groups.get_mut(&name) else {
                    assert!(matches!(reply, Reply::Error(_)));
                    return;
                };
                let limit = if *count == 0 {
                    usize::MAX
                } else {
                    *count as usize
                };
                let new: Vec<Id> = self
                    .entries
                    .range((
                        std::ops::Bound::Excluded(state.last),
                        std::ops::Bound::Unbounded,
                    ))
                    .map(|(id, _)| *id)
                    .take(limit)
                    .collect();
                if new.is_empty() {
                    assert_eq!(reply, Reply::NullArray);
                    return;
                }
                let expected: Vec<Reply> = new
                    .iter()
                    .map(|id| entry_reply(*id, &self.entries[id]))
                    .collect();
                assert_eq!(
                    reply,
                    Reply::PairMap(vec![(Reply::bulk("s"), Reply::Array(expected))])
                );
                for id in new {
                    state.pending.insert(id, (consumer.clone(), 1));
                    state.last = id;
                }
            }
            Op::Ack { group, pick } => {
                let name = format!("g{group}");
                let id = self.pick(*pick);
                let acknowledged = self
                    .groups
                    .get_mut(&name)
                    .map_or(0, |state| i64::from(state.pending.remove(&id).is_some()));
                assert_eq!(
                    run(engine, &args(&["XACK", "s", &name, &id_text(id)])),
                    Reply::Integer(acknowledged)
                );
            }
            Op::Claim {
                group,
                consumer,
                pick,
            } => {
                let name = format!("g{group}");
                let consumer = format!("c{consumer}");
                let id = self.pick(*pick);
                let reply = run(
                    engine,
                    &args(&["XCLAIM", "s", &name, &consumer, "0", &id_text(id), "JUSTID"]),
                );
                let Some(state) = self.groups.get_mut(&name) else {
                    assert!(matches!(reply, Reply::Error(_)));
                    return;
                };
                let exists = self.entries.contains_key(&id);
                let expected = match state.pending.get_mut(&id) {
                    Some(owner) if exists => {
                        owner.0 = consumer;
                        vec![Reply::bulk(id_text(id))]
                    }
                    Some(_) => {
                        state.pending.remove(&id);
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                assert_eq!(reply, Reply::Array(expected));
            }
            Op::Pending { group } => {
                let name = format!("g{group}");
                let reply = run(engine, &args(&["XPENDING", "s", &name, "-", "+", "1000"]));
                let Some(state) = self.groups.get(&name) else {
                    assert!(matches!(reply, Reply::Error(_)));
                    return;
                };
                let Reply::Array(rows) = reply else {
                    panic!("rows")
                };
                let got: Vec<(String, String)> = rows
                    .iter()
                    .map(|row| {
                        let Reply::Array(fields) = row else {
                            panic!("row")
                        };
                        let (Reply::Bulk(id), Reply::Bulk(owner)) = (&fields[0], &fields[1]) else {
                            panic!("fields")
                        };
                        (
                            String::from_utf8_lossy(id).into_owned(),
                            String::from_utf8_lossy(owner).into_owned(),
                        )
                    })
                    .collect();
                let expected: Vec<(String, String)> = state
                    .pending
                    .iter()
                    .map(|(id, (owner, _))| (id_text(*id), owner.clone()))
                    .collect();
                assert_eq!(got, expected);
            }
        }
        // Invariants after every operation.
        let length = run(engine, &args(&["XLEN", "s"]));
        assert_eq!(length, Reply::Integer(self.entries.len() as i64));
        let _: BTreeSet<Id> = self.entries.keys().copied().collect();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_matches_a_plain_model(
        max_entries in 0u64..6,
        max_bytes in prop_oneof![Just(0u64), 40u64..400],
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let config = Config {
            node_limits: NodeLimits { max_entries, max_bytes },
            ..Config::default()
        };
        let mut engine = Engine::new(config, Arc::new(ManualClock::new(5_000)));
        let mut model = Model::default();
        for op in &ops {
            model.apply(&mut engine, op);
        }
    }
}
