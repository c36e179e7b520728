//! XINFO STREAM [FULL [COUNT n]], XINFO GROUPS, XINFO CONSUMERS.

use crate::commands::{help, parse_i64, subcommand_arity};
use crate::engine::{Compatibility, Context, Engine, Outcome};
use crate::group::{Group, Stream, ENTRIES_READ_UNKNOWN};
use crate::id::StreamId;
use crate::reply::{Error, Reply};
use crate::stream::Entry;

fn field(name: &str) -> Reply {
    Reply::Bulk(name.as_bytes().to_vec())
}

fn id(id: StreamId) -> Reply {
    Reply::Bulk(id.to_bytes())
}

fn entry(entry: &Entry<'_>) -> Reply {
    Reply::Entry(crate::reply::EntryReply::new(
        entry.id,
        entry.fields(),
        entry.encoded_hint(),
    ))
}

fn entries_read(group: &Group) -> Reply {
    if group.entries_read == ENTRIES_READ_UNKNOWN {
        Reply::NullBulk
    } else {
        Reply::Integer(group.entries_read)
    }
}

fn lag(stream: &Stream, group: &Group, compatibility: Compatibility) -> Reply {
    match stream.lag(group, compatibility == Compatibility::Redis74) {
        Some(lag) => Reply::Integer(lag),
        None => Reply::NullBulk,
    }
}

/// The number of internal radix-tree nodes Redis would report. weir keeps
/// nodes in a sorted array, not a radix tree; this is the size of a radix
/// tree of 16-byte keys with one key per node: an estimate (see the
/// compatibility notes).
fn radix_tree_nodes(keys: usize) -> usize {
    if keys == 0 {
        1
    } else {
        keys * 2
    }
}

pub(crate) fn xinfo(engine: &mut Engine, _: &Context, args: &[&[u8]]) -> Outcome {
    let info = crate::table::command(b"xinfo").expect("in the table");
    if let Some(error) = subcommand_arity(args, info) {
        return error;
    }
    if args[1].eq_ignore_ascii_case(b"HELP") {
        return help(&[
            "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CONSUMERS <key> <groupname>",
            "    Show consumers of <groupname>.",
            "GROUPS <key>",
            "    Show the stream consumer groups.",
            "STREAM <key> [FULL [COUNT <count>]",
            "    Show information about the stream.",
            "HELP",
            "    Print this help.",
        ]);
    }
    let key = args[2];
    let compatibility = engine.config.compatibility;
    let now = engine.now;
    let Some(stream) = engine.keys.get(key) else {
        return Error::NO_SUCH_KEY.into();
    };
    let node_count = stream.entries.node_count();
    let subcommand = args[1];
    if subcommand.eq_ignore_ascii_case(b"CONSUMERS") {
        let Some(group) = stream.groups.get(args[3]) else {
            return Error::no_group(key, args[3]).into();
        };
        let consumers = group
            .consumers
            .iter()
            .map(|(name, consumer)| {
                let idle = now.saturating_sub(consumer.seen_time) as i64;
                let mut map = vec![
                    (field("name"), Reply::Bulk(name.to_vec())),
                    (
                        field("pending"),
                        Reply::Integer(consumer.pending.len() as i64),
                    ),
                    (field("idle"), Reply::Integer(idle)),
                ];
                if compatibility == Compatibility::Redis74 {
                    let inactive = consumer
                        .active_time
                        .map_or(-1, |active| now.saturating_sub(active) as i64);
                    map.push((field("inactive"), Reply::Integer(inactive)));
                }
                Reply::Map(map)
            })
            .collect();
        return Reply::Array(consumers).into();
    }
    if subcommand.eq_ignore_ascii_case(b"GROUPS") {
        let groups = stream
            .groups
            .iter()
            .map(|(name, group)| {
                Reply::Map(vec![
                    (field("name"), Reply::Bulk(name.clone())),
                    (
                        field("consumers"),
                        Reply::Integer(group.consumers.len() as i64),
                    ),
                    (field("pending"), Reply::Integer(group.pending.len() as i64)),
                    (field("last-delivered-id"), id(group.last_id)),
                    (field("entries-read"), entries_read(group)),
                    (field("lag"), lag(stream, group, compatibility)),
                ])
            })
            .collect();
        return Reply::Array(groups).into();
    }
    // STREAM [FULL [COUNT n]]
    let options = &args[3..];
    let (full, count) = match options.len() {
        0 => (false, 10),
        1 | 3 => {
            if !options[0].eq_ignore_ascii_case(b"FULL") {
                return subcommand_syntax(args);
            }
            let mut count = 10;
            if options.len() == 3 {
                if !options[1].eq_ignore_ascii_case(b"COUNT") {
                    return subcommand_syntax(args);
                }
                count = match parse_i64(options[2]) {
                    Some(value) if value < 0 => 10,
                    Some(value) => value,
                    None => return Error::NOT_AN_INTEGER.into(),
                };
            }
            (true, count)
        }
        _ => return subcommand_syntax(args),
    };
    let mut map = vec![
        (field("length"), Reply::Integer(stream.entries.len() as i64)),
        (field("radix-tree-keys"), Reply::Integer(node_count as i64)),
        (
            field("radix-tree-nodes"),
            Reply::Integer(radix_tree_nodes(node_count) as i64),
        ),
        (field("last-generated-id"), id(stream.last_id)),
        (
            field("max-deleted-entry-id"),
            id(stream.max_deleted_entry_id),
        ),
        (
            field("entries-added"),
            Reply::Integer(stream.entries_added as i64),
        ),
        (field("recorded-first-entry-id"), id(stream.first_id)),
    ];
    if !full {
        map.push((field("groups"), Reply::Integer(stream.groups.len() as i64)));
        map.push((
            field("first-entry"),
            stream
                .entries
                .first()
                .map_or(Reply::NullBulk, |first| entry(&first)),
        ));
        map.push((
            field("last-entry"),
            stream
                .entries
                .last()
                .map_or(Reply::NullBulk, |last| entry(&last)),
        ));
        return Reply::Map(map).into();
    }
    let limit = if count == 0 {
        usize::MAX
    } else {
        usize::try_from(count).unwrap_or(usize::MAX)
    };
    let entries = stream
        .entries
        .range(StreamId::MIN, StreamId::MAX, false)
        .take(limit)
        .map(|item| entry(&item))
        .collect();
    map.push((field("entries"), Reply::Array(entries)));
    let groups = stream
        .groups
        .iter()
        .map(|(name, group)| {
            let pending = group
                .pending
                .iter()
                .take(limit)
                .map(|(pending_id, pending)| {
                    Reply::Array(vec![
                        id(*pending_id),
                        Reply::Bulk(pending.consumer.to_vec()),
                        Reply::Integer(pending.delivery_time as i64),
                        Reply::Integer(pending.delivery_count as i64),
                    ])
                })
                .collect();
            let consumers = group
                .consumers
                .iter()
                .map(|(consumer_name, consumer)| {
                    let own = consumer
                        .pending
                        .iter()
                        .take(limit)
                        .filter_map(|pending_id| {
                            group.pending.get(pending_id).map(|pending| {
                                Reply::Array(vec![
                                    id(*pending_id),
                                    Reply::Integer(pending.delivery_time as i64),
                                    Reply::Integer(pending.delivery_count as i64),
                                ])
                            })
                        })
                        .collect();
                    let mut fields = vec![
                        (field("name"), Reply::Bulk(consumer_name.to_vec())),
                        (
                            field("seen-time"),
                            Reply::Integer(consumer.seen_time as i64),
                        ),
                    ];
                    if compatibility == Compatibility::Redis74 {
                        fields.push((
                            field("active-time"),
                            Reply::Integer(consumer.active_time.map_or(-1, |time| time as i64)),
                        ));
                    }
                    fields.push((
                        field("pel-count"),
                        Reply::Integer(consumer.pending.len() as i64),
                    ));
                    fields.push((field("pending"), Reply::Array(own)));
                    Reply::Map(fields)
                })
                .collect();
            Reply::Map(vec![
                (field("name"), Reply::Bulk(name.clone())),
                (field("last-delivered-id"), id(group.last_id)),
                (field("entries-read"), entries_read(group)),
                (field("lag"), lag(stream, group, compatibility)),
                (
                    field("pel-count"),
                    Reply::Integer(group.pending.len() as i64),
                ),
                (field("pending"), Reply::Array(pending)),
                (field("consumers"), Reply::Array(consumers)),
            ])
        })
        .collect();
    map.push((field("groups"), Reply::Array(groups)));
    Reply::Map(map).into()
}

fn subcommand_syntax(args: &[&[u8]]) -> Outcome {
    Error::err(format_args!(
        "unknown subcommand or wrong number of arguments for '{}'. Try XINFO HELP.",
        String::from_utf8_lossy(args[1])
    ))
    .into()
}
