//! The stream commands, argument by argument as Redis parses them, so that
//! replies and errors are Redis's, in the same order of checks.

use std::sync::Arc;

use crate::api::{Sink, StreamError};
use crate::engine::{BlockedGroup, BlockedRead, Compatibility, Context, Engine, Outcome};
use crate::group::{Group, Stream, ENTRIES_READ_UNKNOWN};
use crate::id::{parse_id, parse_range_bound, parse_xadd_id, IdSpec, MissingSeq, StreamId};
use crate::reply::{Error, Reply};
use crate::stream::{Entry, TrimStrategy};
use crate::table::{arity_fits, CommandInfo};

pub(crate) type Args<'a, 'b> = &'a [&'b [u8]];

macro_rules! try_reply {
    ($expression:expr) => {
        match $expression {
            Ok(value) => value,
            Err(error) => return Outcome::Reply(Reply::Error(error)),
        }
    };
}

fn replay_number(arg: &[u8]) -> Result<i64, Error> {
    parse_i64(arg).ok_or(Error::NOT_AN_INTEGER)
}

fn replay_unsigned(arg: &[u8]) -> Result<u64, Error> {
    u64::try_from(replay_number(arg)?).map_err(|_| Error::NOT_AN_INTEGER)
}

pub(crate) fn replay_stream_meta(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let last_id = try_reply!(strict_id(args[2]));
    let entries_added = try_reply!(replay_unsigned(args[3]));
    let max_deleted = try_reply!(strict_id(args[4]));
    let first_id = try_reply!(strict_id(args[5]));
    let stream = engine.keys.entry(args[1].to_vec()).or_default();
    stream.last_id = last_id;
    stream.entries_added = entries_added;
    stream.max_deleted_entry_id = max_deleted;
    stream.first_id = first_id;
    Reply::OK.into()
}

pub(crate) fn replay_consumer(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let seen = try_reply!(replay_unsigned(args[4]));
    // -1: never active.
    let active = u64::try_from(try_reply!(replay_number(args[5]))).ok();
    let Some(group) = group_mut(engine, args[1], args[2]) else {
        return Error::no_group(args[1], args[2]).into();
    };
    let (name, _) = group.consumer_entry(args[3], seen);
    if let Some(consumer) = group.consumers.get_mut(&name) {
        consumer.seen_time = seen;
        consumer.active_time = active;
    }
    Reply::OK.into()
}

pub(crate) fn replay_pending(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let id = try_reply!(strict_id(args[4]));
    let time = try_reply!(replay_unsigned(args[5]));
    let count = try_reply!(replay_unsigned(args[6]));
    let now = engine.now;
    let Some(group) = group_mut(engine, args[1], args[2]) else {
        return Error::no_group(args[1], args[2]).into();
    };
    let (owner, _) = group.consumer_entry(args[3], now);
    group.assign(id, &owner, time, count);
    Reply::OK.into()
}

pub(crate) fn dispatch(engine: &mut Engine, context: &Context, args: Args<'_, '_>) -> Outcome {
    let Some(name) = args.first() else {
        return Error::err("empty command").into();
    };
    let Some(command) = crate::table::find(name, context.replaying) else {
        return unknown_command(args).into();
    };
    if !command.info.arity_ok(args.len()) {
        return Error::arity(command.info.name).into();
    }
    (command.run)(engine, context, args)
}

/// Redis's reply to an unknown command.
pub fn unknown_command(args: Args<'_, '_>) -> Error {
    let mut listed = String::new();
    for arg in args.iter().skip(1) {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        let text = String::from_utf8_lossy(arg);
        let shown: String = text.chars().take(room).collect();
        listed.push_str(&format!("'{shown}' "));
    }
    let name = String::from_utf8_lossy(args.first().copied().unwrap_or_default());
    Error::err(format_args!(
        "unknown command '{}', with args beginning with: {listed}",
        name.chars().take(128).collect::<String>()
    ))
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Redis's `string2ll`: an optional `-`, no leading zeros, no `+`.
pub(crate) fn parse_i64(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, bytes),
    };
    let first = *digits.first()?;
    if !(b'1'..=b'9').contains(&first) {
        return None;
    }
    let mut value: u64 = 0;
    for digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            return None;
        }
        Some((value as i64).wrapping_neg())
    } else {
        i64::try_from(value).ok()
    }
}

fn integer(bytes: &[u8]) -> Result<i64, Error> {
    parse_i64(bytes).ok_or(Error::NOT_AN_INTEGER)
}

fn integer_or(bytes: &[u8], message: &'static str) -> Result<i64, Error> {
    parse_i64(bytes).ok_or(Error::fixed(message))
}

fn strict_id(bytes: &[u8]) -> Result<StreamId, Error> {
    parse_id(bytes, MissingSeq::Zero, true)
}

fn id_reply(id: StreamId) -> Reply {
    Reply::Bulk(id.to_bytes())
}

pub(crate) fn entry_reply(entry: &Entry<'_>) -> Reply {
    Reply::Entry(crate::reply::EntryReply::new(
        entry.id,
        entry.fields(),
        entry.encoded_hint(),
    ))
}

/// Parsed trimming options of XADD and XTRIM.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrimArgs {
    pub(crate) strategy: Option<TrimStrategy>,
    pub(crate) approx: bool,
    pub(crate) limit: u64,
    pub(crate) no_mkstream: bool,
    pub(crate) id: Option<IdSpec>,
    /// Index of the ID argument (XADD) or one past the last option.
    pub(crate) position: usize,
}

/// How many entries an approximate trim without LIMIT removes at most:
/// 100 nodes' worth, as Redis.
pub(crate) fn default_trim_limit(engine: &Engine) -> u64 {
    let per_node = engine.config.node_limits.max_entries;
    if per_node == 0 {
        10_000
    } else {
        per_node.saturating_mul(100).clamp(1, 1_000_000)
    }
}

fn parse_trim_args(
    engine: &Engine,
    context: &Context,
    args: Args<'_, '_>,
    xadd: bool,
) -> Result<TrimArgs, Error> {
    let mut parsed = TrimArgs::default();
    let mut limit_given = false;
    let mut limit: u64 = 0;
    let mut index = 2;
    while index < args.len() {
        let more = args.len() - 1 - index;
        let option = args[index];
        if xadd && option == b"*" {
            parsed.id = Some(IdSpec::Auto);
            break;
        } else if (is(option, "MAXLEN") || is(option, "MINID")) && more > 0 {
            if parsed.strategy.is_some() {
                return Err(Error::fixed(
                    "ERR syntax error, MAXLEN and MINID options at the same time are not compatible",
                ));
            }
            parsed.approx = false;
            let next = args[index + 1];
            if more >= 2 && next == b"~" {
                parsed.approx = true;
                index += 1;
            } else if more >= 2 && next == b"=" {
                index += 1;
            }
            let threshold = args[index + 1];
            parsed.strategy = Some(if is(option, "MAXLEN") {
                let Ok(maxlen) = u64::try_from(integer(threshold)?) else {
                    return Err(Error::fixed("ERR The MAXLEN argument must be >= 0."));
                };
                TrimStrategy::MaxLen(maxlen)
            } else {
                TrimStrategy::MinId(strict_id(threshold)?)
            });
            index += 1;
        } else if is(option, "LIMIT") && more > 0 {
            let Ok(value) = u64::try_from(integer(args[index + 1])?) else {
                return Err(Error::fixed("ERR The LIMIT argument must be >= 0."));
            };
            limit = value;
            limit_given = true;
            index += 1;
        } else if xadd && is(option, "NOMKSTREAM") {
            parsed.no_mkstream = true;
        } else if xadd {
            parsed.id = Some(parse_xadd_id(option)?);
            break;
        } else {
            return Err(Error::SYNTAX);
        }
        index += 1;
    }
    parsed.position = index;
    if limit != 0 && parsed.strategy.is_none() {
        return Err(Error::fixed(
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && parsed.strategy.is_none() {
        return Err(Error::fixed(
            "ERR syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    if context.replaying {
        parsed.limit = 0;
    } else if limit_given {
        if !parsed.approx {
            return Err(Error::fixed(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
        parsed.limit = limit;
    } else if parsed.approx {
        parsed.limit = default_trim_limit(engine);
    }
    Ok(parsed)
}

/// Trims and returns the exact threshold to log (the stream's length for
/// MAXLEN, its first ID for MINID), so that a replay removes the same
/// entries whatever its node layout.
fn apply_trim(stream: &mut Stream, trim: &TrimArgs) -> (u64, Vec<u8>) {
    let Some(strategy) = trim.strategy else {
        return (0, Vec::new());
    };
    let removed = stream.entries.trim(strategy, trim.approx, trim.limit);
    if removed > 0 {
        stream.first_id = stream
            .entries
            .first()
            .map_or(StreamId::MIN, |entry| entry.id);
    }
    let exact = match strategy {
        TrimStrategy::MaxLen(_) => stream.entries.len().to_string().into_bytes(),
        TrimStrategy::MinId(_) => stream
            .entries
            .first()
            .map_or(StreamId::MAX, |entry| entry.id)
            .to_bytes(),
    };
    (removed, exact)
}

fn trim_propagation(key: &[u8], strategy: TrimStrategy, exact: Vec<u8>) -> Vec<Vec<u8>> {
    let name = match strategy {
        TrimStrategy::MaxLen(_) => b"MAXLEN".to_vec(),
        TrimStrategy::MinId(_) => b"MINID".to_vec(),
    };
    vec![b"XTRIM".to_vec(), key.to_vec(), name, b"=".to_vec(), exact]
}

pub(crate) fn xadd(engine: &mut Engine, context: &Context, args: Args<'_, '_>) -> Outcome {
    let trim = try_reply!(parse_trim_args(engine, context, args, true));
    let field_start = trim.position + 1;
    let fields_given = args.len().saturating_sub(field_start);
    if args.len() < field_start + 2 || fields_given % 2 == 1 {
        return Error::arity("XADD").into();
    }
    let id_spec = trim.id.unwrap_or(IdSpec::Auto);
    let fields = &args[field_start..];
    match add_core(engine, args[1], id_spec, fields, &trim, trim.no_mkstream) {
        Ok(Some(id)) => id_reply(id).into(),
        Ok(None) => Reply::NullBulk.into(),
        Err(error) => Error::from(error).into(),
    }
}

/// XADD once parsed (and [`Engine::add`]): adds the entry, trims, logs
/// both and wakes the stream's readers; `None` for NOMKSTREAM on a
/// missing stream.
pub(crate) fn add_core(
    engine: &mut Engine,
    key: &[u8],
    id_spec: IdSpec,
    fields: &[&[u8]],
    trim: &TrimArgs,
    no_mkstream: bool,
) -> Result<Option<StreamId>, StreamError> {
    if id_spec == IdSpec::Explicit(StreamId::MIN) {
        return Err(StreamError::IdZero);
    }
    if no_mkstream && !engine.keys.contains_key(key) {
        return Ok(None);
    }
    let now = engine.now;
    let limits = engine.config.node_limits;
    let stream = match engine.keys.get_mut(key) {
        Some(stream) => stream,
        None => engine.keys.entry(key.to_vec()).or_default(),
    };
    if stream.last_id == StreamId::MAX {
        return Err(StreamError::Exhausted);
    }
    let id = match id_spec {
        IdSpec::Auto => {
            if now > stream.last_id.ms {
                StreamId::new(now, 0)
            } else {
                // Not MAX: checked above.
                stream.last_id.next().unwrap_or(StreamId::MAX)
            }
        }
        IdSpec::AutoSeq(ms) => {
            if ms == stream.last_id.ms {
                if stream.last_id.seq == u64::MAX {
                    return Err(StreamError::IdTooSmall);
                }
                StreamId::new(ms, stream.last_id.seq + 1)
            } else {
                StreamId::new(ms, 0)
            }
        }
        IdSpec::Explicit(id) => id,
    };
    if id <= stream.last_id {
        return Err(StreamError::IdTooSmall);
    }
    if stream.entries.is_empty() {
        stream.first_id = id;
    }
    stream.entries.append(id, fields, limits);
    stream.last_id = id;
    stream.entries_added += 1;
    let (_, exact) = apply_trim(stream, trim);
    engine.stats.changes += 1;
    engine.propagate(|| {
        let mut logged = Vec::with_capacity(fields.len() + 3);
        logged.push(b"XADD".to_vec());
        logged.push(key.to_vec());
        logged.push(id.to_bytes());
        logged.extend(fields.iter().map(|arg| arg.to_vec()));
        logged
    });
    if let Some(strategy) = trim.strategy {
        engine.propagate(|| trim_propagation(key, strategy, exact));
    }
    engine.signal_ready(key);
    Ok(Some(id))
}

pub(crate) fn xtrim(engine: &mut Engine, context: &Context, args: Args<'_, '_>) -> Outcome {
    let trim = try_reply!(parse_trim_args(engine, context, args, false));
    let removed = trim_core(engine, args[1], &trim);
    Reply::Integer(removed as i64).into()
}

/// XTRIM once parsed (and [`Engine::trim`]): trims and logs the exact
/// threshold; returns the entries removed.
pub(crate) fn trim_core(engine: &mut Engine, key: &[u8], trim: &TrimArgs) -> u64 {
    let Some(stream) = engine.keys.get_mut(key) else {
        return 0;
    };
    let (removed, exact) = apply_trim(stream, trim);
    engine.stats.changes += removed;
    if let Some(strategy) = trim.strategy {
        engine.propagate(|| trim_propagation(key, strategy, exact));
    }
    removed
}

pub(crate) fn xrange(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    range_command(engine, args, false)
}

pub(crate) fn xrevrange(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    range_command(engine, args, true)
}

fn range_command(engine: &mut Engine, args: Args<'_, '_>, reverse: bool) -> Outcome {
    let (start_arg, end_arg) = if reverse {
        (args[3], args[2])
    } else {
        (args[2], args[3])
    };
    let start = try_reply!(parse_range_bound(start_arg, MissingSeq::Zero));
    let end = try_reply!(parse_range_bound(end_arg, MissingSeq::Max));
    let mut count: Option<i64> = None;
    let mut index = 4;
    while index < args.len() {
        if is(args[index], "COUNT") && index + 1 < args.len() {
            count = Some(try_reply!(integer(args[index + 1])).max(0));
            index += 2;
        } else {
            return Error::SYNTAX.into();
        }
    }
    if !engine.keys.contains_key(args[1]) {
        return Reply::Array(Vec::new()).into();
    }
    if count == Some(0) {
        return Reply::NullArray.into();
    }
    let limit = count.map(|count| usize::try_from(count).unwrap_or(usize::MAX));
    let mut entries = Vec::new();
    range_core(engine, args[1], start, end, reverse, limit, |entry| {
        entries.push(entry_reply(entry));
    });
    Reply::Array(entries).into()
}

/// XRANGE and XREVRANGE once parsed (and [`Engine::range`]): visits the
/// entries from `start` to `end` (both included), at most `limit`.
pub(crate) fn range_core(
    engine: &Engine,
    key: &[u8],
    start: StreamId,
    end: StreamId,
    reverse: bool,
    limit: Option<usize>,
    mut visit: impl FnMut(&Entry<'_>),
) {
    let Some(stream) = engine.keys.get(key) else {
        return;
    };
    let limit = limit.unwrap_or(usize::MAX);
    for entry in stream.entries.range(start, end, reverse).take(limit) {
        visit(&entry);
    }
}

pub(crate) fn xlen(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let length = engine
        .keys
        .get(args[1])
        .map_or(0, |stream| stream.entries.len());
    Reply::Integer(length as i64).into()
}

pub(crate) fn xdel(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let key = args[1];
    // Redis 7.0 looks the key up before checking the IDs.
    if engine.config.compatibility == Compatibility::Redis70 && !engine.keys.contains_key(key) {
        return Reply::Integer(0).into();
    }
    let ids: Vec<StreamId> = try_reply!(args[2..].iter().map(|arg| strict_id(arg)).collect());
    let Some(stream) = engine.keys.get_mut(key) else {
        return Reply::Integer(0).into();
    };
    let mut deleted: u64 = 0;
    let mut first_deleted = false;
    for id in ids {
        if stream.entries.delete(id) {
            if id == stream.first_id {
                first_deleted = true;
            }
            if id > stream.max_deleted_entry_id {
                stream.max_deleted_entry_id = id;
            }
            deleted += 1;
        }
    }
    if deleted > 0 {
        if stream.entries.is_empty() {
            stream.first_id = StreamId::MIN;
        } else if first_deleted {
            stream.first_id = stream
                .entries
                .first()
                .map_or(StreamId::MIN, |entry| entry.id);
        }
        let mut logged = vec![b"XDEL".to_vec(), key.to_vec()];
        logged.extend(args[2..].iter().map(|arg| arg.to_vec()));
        engine.stats.changes += deleted;
        engine.propagate(|| logged);
    }
    Reply::Integer(deleted as i64).into()
}

pub(crate) fn del(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let mut removed = 0;
    for key in &args[1..] {
        if engine.keys.remove(*key).is_some() {
            removed += 1;
            engine.stats.changes += 1;
            engine.signal_ready(key);
            engine.propagate(|| vec![b"DEL".to_vec(), key.to_vec()]);
        }
    }
    Reply::Integer(removed).into()
}

/// FLUSHALL and FLUSHDB (one database): `[ASYNC|SYNC]`, both synchronous
/// here.
pub(crate) fn flush(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    match args.len() {
        1 => {}
        2 if is(args[1], "ASYNC") || is(args[1], "SYNC") => {}
        _ => return Error::SYNTAX.into(),
    }
    // As Redis: a change per key removed.
    engine.stats.changes += engine.keys.len() as u64;
    engine.flush_all();
    Reply::OK.into()
}

pub(crate) fn exists(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let count = args[1..]
        .iter()
        .filter(|key| engine.keys.contains_key(**key))
        .count();
    Reply::Integer(count as i64).into()
}

pub(crate) fn type_command(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let kind = if engine.keys.contains_key(args[1]) {
        "stream"
    } else {
        "none"
    };
    Reply::Simple(kind.into()).into()
}

pub(crate) fn xsetid(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let id = try_reply!(strict_id(args[2]));
    let mut entries_added: Option<u64> = None;
    let mut max_deleted = StreamId::MIN;
    let mut index = 3;
    while index < args.len() {
        let more = args.len() - 1 - index;
        if is(args[index], "ENTRIESADDED") && more > 0 {
            let Ok(value) = u64::try_from(try_reply!(integer(args[index + 1]))) else {
                return Error::fixed("ERR entries_added must be positive").into();
            };
            entries_added = Some(value);
            index += 2;
        } else if is(args[index], "MAXDELETEDID") && more > 0 {
            max_deleted = try_reply!(strict_id(args[index + 1]));
            if id < max_deleted {
                return Error::fixed(
                    "ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id",
                )
                .into();
            }
            index += 2;
        } else {
            return Error::SYNTAX.into();
        }
    }
    let compatibility = engine.config.compatibility;
    let key = args[1];
    let Some(stream) = engine.keys.get_mut(key) else {
        return Error::NO_SUCH_KEY.into();
    };
    if compatibility == Compatibility::Redis74 && id < stream.max_deleted_entry_id {
        return Error::fixed(
            "ERR The ID specified in XSETID is smaller than current max_deleted_entry_id",
        )
        .into();
    }
    if !stream.entries.is_empty() {
        if id < stream.last_live_id() {
            return Error::fixed(
                "ERR The ID specified in XSETID is smaller than the target stream top item",
            )
            .into();
        }
        if entries_added.is_some_and(|added| stream.entries.len() > added) {
            return Error::fixed(
                "ERR The entries_added specified in XSETID is smaller than the target stream length",
            )
            .into();
        }
    }
    stream.last_id = id;
    if let Some(added) = entries_added {
        stream.entries_added = added;
    }
    if !max_deleted.is_zero() {
        stream.max_deleted_entry_id = max_deleted;
    }
    engine.stats.changes += 1;
    engine.propagate(|| args.iter().map(|arg| arg.to_vec()).collect());
    Reply::OK.into()
}

// ---------------------------------------------------------------------------
// Consumer groups.
// ---------------------------------------------------------------------------

fn subcommand_error(args: Args<'_, '_>, container: &str) -> Outcome {
    Error::err(format_args!(
        "unknown subcommand or wrong number of arguments for '{}'. Try {container} HELP.",
        String::from_utf8_lossy(args[1])
            .chars()
            .take(128)
            .collect::<String>()
    ))
    .into()
}

/// Checks a container subcommand's arity the way Redis's command table
/// does; `None` when it is fine.
pub(crate) fn subcommand_arity(args: Args<'_, '_>, container: &CommandInfo) -> Option<Outcome> {
    let upper = container.name.to_ascii_uppercase();
    let Some(sub) = container.subcommand(args[1]) else {
        return Some(
            Error::err(format_args!(
                "unknown subcommand '{}'. Try {upper} HELP.",
                String::from_utf8_lossy(args[1])
                    .chars()
                    .take(128)
                    .collect::<String>()
            ))
            .into(),
        );
    };
    if arity_fits(sub.arity, args.len()) {
        None
    } else {
        Some(
            Error::err(format_args!(
                "wrong number of arguments for '{}|{}' command",
                container.name, sub.name
            ))
            .into(),
        )
    }
}

pub(crate) fn xgroup(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let info = crate::table::command(b"xgroup").expect("in the table");
    if let Some(error) = subcommand_arity(args, info) {
        return error;
    }
    let subcommand = args[1];
    if is(subcommand, "HELP") {
        return help(&[
            "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CREATE <key> <groupname> <id|$> [option]",
            "    Create a new consumer group. Options are:",
            "    * MKSTREAM",
            "      Create the empty stream if it does not exist.",
            "    * ENTRIESREAD entries_read",
            "      Set the group's entries_read counter (internal use).",
            "CREATECONSUMER <key> <groupname> <consumer>",
            "    Create a new consumer in the specified group.",
            "DELCONSUMER <key> <groupname> <consumer>",
            "    Remove the specified consumer.",
            "DESTROY <key> <groupname>",
            "    Remove the specified group.",
            "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
            "    Set the current group ID and entries_read counter.",
            "HELP",
            "    Print this help.",
        ]);
    }
    let mut mkstream = false;
    let mut entries_read = ENTRIES_READ_UNKNOWN;
    if is(subcommand, "CREATE") {
        let mut index = 5;
        while index < args.len() {
            if is(args[index], "MKSTREAM") {
                mkstream = true;
                index += 1;
            } else if is(args[index], "ENTRIESREAD") && index + 1 < args.len() {
                entries_read = try_reply!(integer(args[index + 1]));
                if entries_read < 0 && entries_read != ENTRIES_READ_UNKNOWN {
                    return Error::fixed("ERR value for ENTRIESREAD must be positive or -1").into();
                }
                index += 2;
            } else {
                return subcommand_error(args, "XGROUP");
            }
        }
    }
    if is(subcommand, "SETID") && args.len() == 7 {
        let Some(value) = is(args[5], "ENTRIESREAD")
            .then(|| parse_i64(args[6]))
            .flatten()
        else {
            return Error::SYNTAX.into();
        };
        if value < 0 && value != ENTRIES_READ_UNKNOWN {
            return Error::fixed("ERR value for ENTRIESREAD must be positive or -1").into();
        }
        entries_read = value;
    }
    let key = args[2];
    let group_name = args[3];
    let exists = engine.keys.contains_key(key);
    if !mkstream && !exists {
        return Error::fixed(
            "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.",
        )
        .into();
    }
    let group_exists = engine
        .keys
        .get(key)
        .is_some_and(|stream| stream.groups.contains_key(group_name));
    let needs_group = ["SETID", "CREATECONSUMER", "DELCONSUMER"]
        .iter()
        .any(|name| is(subcommand, name));
    if needs_group && !group_exists {
        return Error::no_group(key, group_name).into();
    }
    if is(subcommand, "CREATE") && args.len() <= 8 {
        let id = if args[4] == b"$" {
            engine
                .keys
                .get(key)
                .map_or(StreamId::MIN, |stream| stream.last_id)
        } else {
            try_reply!(strict_id(args[4]))
        };
        return match group_create_core(engine, key, group_name, id, entries_read) {
            Ok(()) => Reply::OK.into(),
            Err(error) => Error::from(error).into(),
        };
    }
    if is(subcommand, "SETID") && (args.len() == 5 || args.len() == 7) {
        let id = if args[4] == b"$" {
            engine
                .keys
                .get(key)
                .map_or(StreamId::MIN, |stream| stream.last_id)
        } else {
            try_reply!(parse_id(args[4], MissingSeq::Zero, false))
        };
        group_set_id_core(engine, key, group_name, id, entries_read);
        return Reply::OK.into();
    }
    if is(subcommand, "DESTROY") {
        let removed = group_destroy_core(engine, key, group_name);
        return Reply::Integer(i64::from(removed)).into();
    }
    if is(subcommand, "CREATECONSUMER") {
        let created = consumer_create_core(engine, key, group_name, args[4]);
        return Reply::Integer(i64::from(created)).into();
    }
    if is(subcommand, "DELCONSUMER") {
        let pending = consumer_delete_core(engine, key, group_name, args[4]);
        return Reply::Integer(pending as i64).into();
    }
    subcommand_error(args, "XGROUP")
}

/// XGROUP CREATE once parsed (and [`Engine::create_group`]): creates the
/// group (and the stream if it does not exist) and logs it.
pub(crate) fn group_create_core(
    engine: &mut Engine,
    key: &[u8],
    group_name: &[u8],
    id: StreamId,
    entries_read: i64,
) -> Result<(), StreamError> {
    let stream = engine.keys.entry(key.to_vec()).or_default();
    if stream.groups.contains_key(group_name) {
        return Err(StreamError::GroupExists);
    }
    stream
        .groups
        .insert(group_name.to_vec(), Group::new(id, entries_read));
    engine.stats.changes += 1;
    engine.propagate(|| {
        vec![
            b"XGROUP".to_vec(),
            b"CREATE".to_vec(),
            key.to_vec(),
            group_name.to_vec(),
            id.to_bytes(),
            b"MKSTREAM".to_vec(),
            b"ENTRIESREAD".to_vec(),
            entries_read.to_string().into_bytes(),
        ]
    });
    Ok(())
}

/// XGROUP SETID once parsed (and [`Engine::set_group_id`]).
pub(crate) fn group_set_id_core(
    engine: &mut Engine,
    key: &[u8],
    group_name: &[u8],
    id: StreamId,
    entries_read: i64,
) {
    if let Some(group) = group_mut(engine, key, group_name) {
        group.last_id = id;
        group.entries_read = entries_read;
    }
    propagate_group_id(engine, key, group_name);
    engine.stats.changes += 1;
}

/// XGROUP DESTROY (and [`Engine::destroy_group`]): removes the group and
/// wakes its blocked readers (they get an error); whether it existed.
pub(crate) fn group_destroy_core(engine: &mut Engine, key: &[u8], group_name: &[u8]) -> bool {
    let removed = engine
        .keys
        .get_mut(key)
        .is_some_and(|stream| stream.groups.remove(group_name).is_some());
    if removed {
        engine.stats.changes += 1;
        engine.propagate(|| {
            vec![
                b"XGROUP".to_vec(),
                b"DESTROY".to_vec(),
                key.to_vec(),
                group_name.to_vec(),
            ]
        });
        engine.signal_ready(key);
    }
    removed
}

/// XGROUP CREATECONSUMER (and [`Engine::create_consumer`]); whether the
/// consumer is new.
pub(crate) fn consumer_create_core(
    engine: &mut Engine,
    key: &[u8],
    group_name: &[u8],
    consumer: &[u8],
) -> bool {
    let now = engine.now;
    let created = group_mut(engine, key, group_name)
        .map(|group| group.consumer_entry(consumer, now).1)
        .unwrap_or(false);
    if created {
        engine.stats.changes += 1;
        engine.propagate(|| consumer_command(b"CREATECONSUMER", key, group_name, consumer));
    }
    created
}

/// XGROUP DELCONSUMER (and [`Engine::delete_consumer`]): removes the
/// consumer and its pending entries; returns how many it had.
pub(crate) fn consumer_delete_core(
    engine: &mut Engine,
    key: &[u8],
    group_name: &[u8],
    consumer: &[u8],
) -> u64 {
    let mut pending = 0;
    let mut existed = false;
    if let Some(group) = group_mut(engine, key, group_name) {
        if let Some(removed) = group.consumers.remove(consumer) {
            existed = true;
            pending = removed.pending.len() as u64;
            for id in &removed.pending {
                group.pending.remove(id);
            }
        }
    }
    if existed {
        engine.stats.changes += 1;
        engine.propagate(|| consumer_command(b"DELCONSUMER", key, group_name, consumer));
    }
    pending
}

fn consumer_command(subcommand: &[u8], key: &[u8], group: &[u8], consumer: &[u8]) -> Vec<Vec<u8>> {
    vec![
        b"XGROUP".to_vec(),
        subcommand.to_vec(),
        key.to_vec(),
        group.to_vec(),
        consumer.to_vec(),
    ]
}

pub(crate) fn help(lines: &[&str]) -> Outcome {
    Reply::Array(
        lines
            .iter()
            .map(|line| Reply::Simple(line.to_string().into()))
            .collect(),
    )
    .into()
}

fn group_mut<'a>(engine: &'a mut Engine, key: &[u8], group: &[u8]) -> Option<&'a mut Group> {
    engine.keys.get_mut(key)?.groups.get_mut(group)
}

/// Logs a group's last ID and read counter.
fn propagate_group_id(engine: &mut Engine, key: &[u8], group_name: &[u8]) {
    if !engine.propagating() {
        return;
    }
    let Some(group) = engine
        .keys
        .get(key)
        .and_then(|stream| stream.groups.get(group_name))
    else {
        return;
    };
    let command = vec![
        b"XGROUP".to_vec(),
        b"SETID".to_vec(),
        key.to_vec(),
        group_name.to_vec(),
        group.last_id.to_bytes(),
        b"ENTRIESREAD".to_vec(),
        group.entries_read.to_string().into_bytes(),
    ];
    engine.propagate(|| command);
}

/// Logs the state of one pending entry as Redis propagates a delivery.
fn propagate_claim(engine: &mut Engine, key: &[u8], group_name: &[u8], id: StreamId) {
    if !engine.propagating() {
        return;
    }
    let Some(group) = engine
        .keys
        .get(key)
        .and_then(|stream| stream.groups.get(group_name))
    else {
        return;
    };
    let Some(pending) = group.pending.get(&id) else {
        // It left the PEL: log that as an acknowledgement.
        engine.propagate(|| {
            vec![
                b"XACK".to_vec(),
                key.to_vec(),
                group_name.to_vec(),
                id.to_bytes(),
            ]
        });
        return;
    };
    let command = vec![
        b"XCLAIM".to_vec(),
        key.to_vec(),
        group_name.to_vec(),
        pending.consumer.to_vec(),
        b"0".to_vec(),
        id.to_bytes(),
        b"TIME".to_vec(),
        pending.delivery_time.to_string().into_bytes(),
        b"RETRYCOUNT".to_vec(),
        pending.delivery_count.to_string().into_bytes(),
        b"FORCE".to_vec(),
        b"JUSTID".to_vec(),
        b"LASTID".to_vec(),
        group.last_id.to_bytes(),
    ];
    engine.propagate(|| command);
}

pub(crate) fn xack(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let key = args[1];
    let group_name = args[2];
    if group_mut(engine, key, group_name).is_none() {
        return Reply::Integer(0).into();
    }
    // Every ID is checked before any is acknowledged.
    let mut ids = [StreamId::MIN; 16];
    let mut many = Vec::new();
    let ids: &[StreamId] = if args.len() - 3 <= ids.len() {
        for (slot, arg) in ids.iter_mut().zip(&args[3..]) {
            *slot = try_reply!(strict_id(arg));
        }
        &ids[..args.len() - 3]
    } else {
        many = try_reply!(args[3..].iter().map(|arg| strict_id(arg)).collect());
        &many
    };
    let acknowledged = ack_core(engine, key, group_name, ids);
    drop(many);
    Reply::Integer(acknowledged as i64).into()
}

/// XACK once parsed (and [`Engine::ack`]): acknowledges the IDs pending in
/// the group and logs them; returns how many were pending.
pub(crate) fn ack_core(
    engine: &mut Engine,
    key: &[u8],
    group_name: &[u8],
    ids: &[StreamId],
) -> u64 {
    let Some(group) = group_mut(engine, key, group_name) else {
        return 0;
    };
    let mut acknowledged: u64 = 0;
    for id in ids {
        if group.acknowledge(*id) {
            acknowledged += 1;
        }
    }
    if acknowledged > 0 {
        engine.stats.changes += acknowledged;
        engine.propagate(|| {
            let mut logged = vec![b"XACK".to_vec(), key.to_vec(), group_name.to_vec()];
            logged.extend(ids.iter().map(|id| id.to_bytes()));
            logged
        });
    }
    acknowledged
}

pub(crate) fn xpending(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let summary = args.len() == 3;
    if args.len() != 3 && !(6..=9).contains(&args.len()) {
        return Error::SYNTAX.into();
    }
    let mut start = StreamId::MIN;
    let mut end = StreamId::MAX;
    let mut count: i64 = 0;
    let mut min_idle: i64 = 0;
    let mut consumer: Option<&[u8]> = None;
    if args.len() >= 6 {
        let mut index = 3;
        if is(args[3], "IDLE") {
            min_idle = try_reply!(integer(args[4]));
            if args.len() < 8 {
                return Error::SYNTAX.into();
            }
            index += 2;
        }
        count = try_reply!(integer(args[index + 2])).max(0);
        start = try_reply!(parse_range_bound(args[index], MissingSeq::Zero));
        end = try_reply!(parse_range_bound(args[index + 1], MissingSeq::Max));
        if index + 3 < args.len() {
            consumer = Some(args[index + 3]);
        }
    }
    let key = args[1];
    let group_name = args[2];
    let Some(group) = engine
        .keys
        .get(key)
        .and_then(|stream| stream.groups.get(group_name))
    else {
        return no_key_or_group(key, group_name, "").into();
    };
    if summary {
        if group.pending.is_empty() {
            return Reply::Array(vec![
                Reply::Integer(0),
                Reply::NullBulk,
                Reply::NullBulk,
                Reply::NullArray,
            ])
            .into();
        }
        let first = group.pending.keys().next().copied().unwrap_or_default();
        let last = group
            .pending
            .keys()
            .next_back()
            .copied()
            .unwrap_or_default();
        let consumers = group
            .consumers
            .iter()
            .filter(|(_, consumer)| !consumer.pending.is_empty())
            .map(|(name, consumer)| {
                Reply::Array(vec![
                    Reply::Bulk(name.to_vec()),
                    Reply::Bulk(consumer.pending.len().to_string().into_bytes()),
                ])
            })
            .collect();
        return Reply::Array(vec![
            Reply::Integer(group.pending.len() as i64),
            id_reply(first),
            id_reply(last),
            Reply::Array(consumers),
        ])
        .into();
    }
    let now = engine.now;
    let ids: Vec<StreamId> = match consumer {
        Some(name) => match group.consumers.get(name) {
            None => return Reply::Array(Vec::new()).into(),
            Some(consumer) => consumer.pending.range(start..).copied().collect(),
        },
        None => group.pending.range(start..).map(|(id, _)| *id).collect(),
    };
    let mut rows = Vec::new();
    for id in ids {
        if count == 0 || id > end {
            break;
        }
        let Some(pending) = group.pending.get(&id) else {
            continue;
        };
        let idle = now as i64 - pending.delivery_time as i64;
        if min_idle != 0 && idle < min_idle {
            continue;
        }
        count -= 1;
        rows.push(Reply::Array(vec![
            id_reply(id),
            Reply::Bulk(pending.consumer.to_vec()),
            Reply::Integer(idle.max(0)),
            Reply::Integer(pending.delivery_count as i64),
        ]));
    }
    Reply::Array(rows).into()
}

fn no_key_or_group(key: &[u8], group: &[u8], suffix: &str) -> Error {
    Error(std::borrow::Cow::Owned(format!(
        "NOGROUP No such key '{}' or consumer group '{}'{suffix}",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    )))
}

pub(crate) fn xclaim(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let key = args[1];
    let group_name = args[2];
    let consumer_name = args[3];
    if group_mut(engine, key, group_name).is_none() {
        return no_key_or_group(key, group_name, "").into();
    }
    let min_idle = try_reply!(integer_or(
        args[4],
        "ERR Invalid min-idle-time argument for XCLAIM"
    ))
    .max(0);
    let mut ids = Vec::new();
    let mut index = 5;
    while index < args.len() {
        match strict_id(args[index]) {
            Ok(id) => ids.push(id),
            Err(_) => break,
        }
        index += 1;
    }
    let now = engine.now as i64;
    let mut delivery_time: Option<i64> = None;
    let mut retry_count: Option<i64> = None;
    let mut force = false;
    let mut just_id = false;
    let mut last_id = StreamId::MIN;
    while index < args.len() {
        let more = args.len() - 1 - index;
        let option = args[index];
        if is(option, "FORCE") {
            force = true;
        } else if is(option, "JUSTID") {
            just_id = true;
        } else if is(option, "IDLE") && more > 0 {
            index += 1;
            let idle = try_reply!(integer_or(
                args[index],
                "ERR Invalid IDLE option argument for XCLAIM"
            ));
            delivery_time = Some(now - idle);
        } else if is(option, "TIME") && more > 0 {
            index += 1;
            delivery_time = Some(try_reply!(integer_or(
                args[index],
                "ERR Invalid TIME option argument for XCLAIM"
            )));
        } else if is(option, "RETRYCOUNT") && more > 0 {
            index += 1;
            retry_count = Some(try_reply!(integer_or(
                args[index],
                "ERR Invalid RETRYCOUNT option argument for XCLAIM"
            )));
        } else if is(option, "LASTID") && more > 0 {
            index += 1;
            last_id = try_reply!(strict_id(args[index]));
        } else {
            return Error::err(format_args!(
                "Unrecognized XCLAIM option '{}'",
                String::from_utf8_lossy(option)
            ))
            .into();
        }
        index += 1;
    }
    let claim = ClaimArgs {
        consumer: consumer_name,
        min_idle,
        delivery_time,
        retry_count,
        force,
        just_id,
        last_id,
    };
    let claimed = claim_core(engine, key, group_name, &ids, &claim);
    claimed_replies(engine, key, &claimed, just_id).into()
}

/// XCLAIM's and XAUTOCLAIM's list of claimed entries: their IDs with
/// JUSTID, else the entries.
fn claimed_replies(engine: &Engine, key: &[u8], claimed: &[StreamId], just_id: bool) -> Reply {
    let stream = engine.keys.get(key).expect("the group's stream exists");
    let replies = claimed
        .iter()
        .map(|id| {
            if just_id {
                id_reply(*id)
            } else {
                stream
                    .entries
                    .get(*id)
                    .map_or(Reply::NullBulk, |entry| entry_reply(&entry))
            }
        })
        .collect();
    Reply::Array(replies)
}

/// XCLAIM's options, parsed.
pub(crate) struct ClaimArgs<'a> {
    pub(crate) consumer: &'a [u8],
    pub(crate) min_idle: i64,
    /// The delivery time to set (from IDLE or TIME), if given.
    pub(crate) delivery_time: Option<i64>,
    pub(crate) retry_count: Option<i64>,
    pub(crate) force: bool,
    pub(crate) just_id: bool,
    pub(crate) last_id: StreamId,
}

/// XCLAIM once parsed (and [`Engine::claim`]), on a group that exists:
/// moves the claimable entries to the consumer, drops those deleted from
/// the stream, logs both; returns the IDs claimed.
pub(crate) fn claim_core(
    engine: &mut Engine,
    key: &[u8],
    group_name: &[u8],
    ids: &[StreamId],
    claim: &ClaimArgs<'_>,
) -> Vec<StreamId> {
    let &ClaimArgs {
        consumer: consumer_name,
        min_idle,
        delivery_time,
        retry_count,
        force,
        just_id,
        last_id,
    } = claim;
    let now = engine.now;
    let delivery_time = match delivery_time.map(u64::try_from) {
        Some(Ok(time)) if time <= now => time,
        _ => now,
    };
    let stream = engine.keys.get_mut(key).expect("checked above");
    let group = stream.groups.get_mut(group_name).expect("checked above");
    let mut propagate_last_id = false;
    if last_id > group.last_id {
        group.last_id = last_id;
        propagate_last_id = true;
    }
    let mut claimed: Vec<StreamId> = Vec::new();
    let mut dropped: Vec<StreamId> = Vec::new();
    let mut consumer: Option<Arc<[u8]>> = None;
    let mut consumer_created = false;
    for &id in ids {
        let exists = stream.entries.get(id).is_some();
        let group = stream.groups.get_mut(group_name).expect("checked above");
        if !exists {
            if group.acknowledge(id) {
                dropped.push(id);
            }
            continue;
        }
        let pending = group.pending.get(&id).cloned();
        if pending.is_none() && !force {
            continue;
        }
        if let Some(pending) = &pending {
            if min_idle != 0 {
                let idle = now as i64 - pending.delivery_time as i64;
                if idle < min_idle {
                    continue;
                }
            }
        }
        let owner = match &consumer {
            Some(owner) => Arc::clone(owner),
            None => {
                let (owner, created) = group.consumer_entry(consumer_name, now);
                if let Some(state) = group.consumers.get_mut(&owner) {
                    state.seen_time = now;
                }
                consumer_created |= created;
                consumer = Some(Arc::clone(&owner));
                owner
            }
        };
        // A pending entry made by FORCE starts with one delivery.
        let previous_count = pending.as_ref().map_or(1, |pending| pending.delivery_count);
        let delivery_count = match retry_count {
            Some(count) if count >= 0 => count.unsigned_abs(),
            _ if just_id => previous_count,
            _ => previous_count + 1,
        };
        group.assign(id, &owner, delivery_time, delivery_count);
        if let Some(state) = group.consumers.get_mut(&owner) {
            state.active_time = Some(now);
        }
        claimed.push(id);
    }
    for id in dropped.iter().chain(&claimed) {
        propagate_claim(engine, key, group_name, *id);
    }
    if propagate_last_id {
        propagate_group_id(engine, key, group_name);
    }
    // As Redis: a change per entry claimed or dropped (which carry a moved
    // LASTID), else one for a moved LASTID, and one per consumer created.
    let entries = (dropped.len() + claimed.len()) as u64;
    engine.stats.changes +=
        entries + u64::from(propagate_last_id && entries == 0) + u64::from(consumer_created);
    claimed
}

pub(crate) fn xautoclaim(engine: &mut Engine, _: &Context, args: Args<'_, '_>) -> Outcome {
    let min_idle = try_reply!(integer_or(
        args[4],
        "ERR Invalid min-idle-time argument for XAUTOCLAIM"
    ))
    .max(0);
    let start = try_reply!(parse_range_bound(args[5], MissingSeq::Zero));
    let mut count: i64 = 100;
    let mut just_id = false;
    let mut index = 6;
    while index < args.len() {
        let more = args.len() - 1 - index;
        if is(args[index], "COUNT") && more > 0 {
            let max = i64::MAX / 16;
            count = match parse_i64(args[index + 1]) {
                Some(value) if (1..=max).contains(&value) => value,
                _ => return Error::fixed("ERR COUNT must be > 0").into(),
            };
            index += 1;
        } else if is(args[index], "JUSTID") {
            just_id = true;
        } else {
            return Error::SYNTAX.into();
        }
        index += 1;
    }
    let key = args[1];
    let group_name = args[2];
    let consumer_name = args[3];
    if group_mut(engine, key, group_name).is_none() {
        return no_key_or_group(key, group_name, "").into();
    }
    let claimed = auto_claim_core(
        engine,
        key,
        group_name,
        consumer_name,
        min_idle,
        start,
        count,
        just_id,
    );
    Reply::Array(vec![
        id_reply(claimed.next),
        claimed_replies(engine, key, &claimed.claimed, just_id),
        Reply::Array(claimed.deleted.iter().map(|id| id_reply(*id)).collect()),
    ])
    .into()
}

/// What XAUTOCLAIM did.
pub(crate) struct AutoClaimed {
    /// Where the next call starts (0-0: the scan reached the end).
    pub(crate) next: StreamId,
    pub(crate) claimed: Vec<StreamId>,
    /// Pending entries found deleted from the stream (now acknowledged).
    pub(crate) deleted: Vec<StreamId>,
}

/// XAUTOCLAIM once parsed (and [`Engine::auto_claim`]), on a group that
/// exists: scans the PEL from `start`, moves up to `count` entries idle
/// for `min_idle` to the consumer, drops deleted ones, logs both.
#[allow(clippy::too_many_arguments)]
pub(crate) fn auto_claim_core(
    engine: &mut Engine,
    key: &[u8],
    group_name: &[u8],
    consumer_name: &[u8],
    min_idle: i64,
    start: StreamId,
    mut count: i64,
    just_id: bool,
) -> AutoClaimed {
    let now = engine.now;
    let stream = engine.keys.get_mut(key).expect("checked above");
    let candidates: Vec<StreamId> = stream
        .groups
        .get(group_name)
        .expect("checked above")
        .pending
        .range(start..)
        .map(|(id, _)| *id)
        .collect();
    let mut attempts = count.saturating_mul(10);
    let mut claimed = Vec::new();
    let mut deleted = Vec::new();
    let mut consumer: Option<Arc<[u8]>> = None;
    let mut consumer_created = false;
    let mut examined = 0;
    while attempts > 0 && count > 0 && examined < candidates.len() {
        attempts -= 1;
        let id = candidates[examined];
        examined += 1;
        let exists = stream.entries.get(id).is_some();
        let group = stream.groups.get_mut(group_name).expect("checked above");
        if !exists {
            group.acknowledge(id);
            deleted.push(id);
            count -= 1;
            continue;
        }
        let Some(pending) = group.pending.get(&id).cloned() else {
            continue;
        };
        if min_idle != 0 && (now as i64 - pending.delivery_time as i64) < min_idle {
            continue;
        }
        let owner = match &consumer {
            Some(owner) => Arc::clone(owner),
            None => {
                let (owner, created) = group.consumer_entry(consumer_name, now);
                if let Some(state) = group.consumers.get_mut(&owner) {
                    state.seen_time = now;
                }
                consumer_created |= created;
                consumer = Some(Arc::clone(&owner));
                owner
            }
        };
        let delivery_count = pending.delivery_count + u64::from(!just_id);
        group.assign(id, &owner, now, delivery_count);
        if let Some(state) = group.consumers.get_mut(&owner) {
            state.active_time = Some(now);
        }
        claimed.push(id);
        count -= 1;
    }
    let next = candidates.get(examined).copied().unwrap_or(StreamId::MIN);
    for id in deleted.iter().chain(&claimed) {
        propagate_claim(engine, key, group_name, *id);
    }
    engine.stats.changes += (deleted.len() + claimed.len()) as u64 + u64::from(consumer_created);
    AutoClaimed {
        next,
        claimed,
        deleted,
    }
}

// ---------------------------------------------------------------------------
// XREAD and XREADGROUP.
// ---------------------------------------------------------------------------

pub(crate) fn xread(engine: &mut Engine, context: &Context, args: Args<'_, '_>) -> Outcome {
    let group_command = is(args[0], "XREADGROUP");
    let full_name = if group_command { "xreadgroup" } else { "xread" };
    let mut timeout: Option<i64> = None;
    let mut count: i64 = 0;
    let mut streams_at = 0;
    let mut streams = 0;
    let mut noack = false;
    let mut group: Option<(&[u8], &[u8])> = None;
    let mut index = 1;
    while index < args.len() {
        let more = args.len() - index - 1;
        let option = args[index];
        if is(option, "BLOCK") && more > 0 {
            index += 1;
            let value = try_reply!(integer_or(
                args[index],
                "ERR timeout is not an integer or out of range"
            ));
            if value < 0 {
                return Error::fixed("ERR timeout is negative").into();
            }
            timeout = Some(value);
        } else if is(option, "COUNT") && more > 0 {
            index += 1;
            count = try_reply!(integer(args[index])).max(0);
        } else if is(option, "STREAMS") && more > 0 {
            streams_at = index + 1;
            let remaining = args.len() - streams_at;
            if !remaining.is_multiple_of(2) {
                let symbol = if group_command { '>' } else { '$' };
                return Error::err(format_args!(
                    "Unbalanced '{full_name}' list of streams: for each stream key an ID or '{symbol}' must be specified."
                ))
                .into();
            }
            streams = remaining / 2;
            break;
        } else if is(option, "GROUP") && more >= 2 {
            if !group_command {
                return Error::fixed(
                    "ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.",
                )
                .into();
            }
            group = Some((args[index + 1], args[index + 2]));
            index += 2;
        } else if is(option, "NOACK") {
            if !group_command {
                return Error::fixed(
                    "ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.",
                )
                .into();
            }
            noack = true;
        } else {
            return Error::SYNTAX.into();
        }
        index += 1;
    }
    if streams_at == 0 {
        return Error::SYNTAX.into();
    }
    if group_command && group.is_none() {
        return Error::fixed("ERR Missing GROUP option for XREADGROUP").into();
    }
    let keys: Vec<&[u8]> = args[streams_at..streams_at + streams].to_vec();
    let mut ids: Vec<StreamId> = Vec::with_capacity(streams);
    for (position, id_arg) in args[streams_at + streams..].iter().enumerate() {
        let key = keys[position];
        let stream = engine.keys.get(key);
        if let Some((group_name, _)) = group {
            if stream.is_none_or(|stream| !stream.groups.contains_key(group_name)) {
                return no_key_or_group(key, group_name, " in XREADGROUP with GROUP option").into();
            }
        }
        if *id_arg == b"$" {
            if group_command {
                return Error::fixed(
                    "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.",
                )
                .into();
            }
            ids.push(stream.map_or(StreamId::MIN, |stream| stream.last_id));
            continue;
        }
        if *id_arg == b">" {
            if !group_command {
                return Error::fixed(
                    "ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.",
                )
                .into();
            }
            ids.push(StreamId::MAX);
            continue;
        }
        if *id_arg == b"+" && engine.config.compatibility == Compatibility::Redis74 {
            if group_command {
                return Error::fixed(
                    "ERR The + ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The + ID would just return an empty result set.",
                )
                .into();
            }
            // As Redis 7.4: after the ID before the stream's last ID (so
            // its last entry, if it was not deleted); a stream that does
            // not exist yet is read from the start, so a blocked read gets
            // the first entry added.
            match stream.map(|stream| stream.last_id.prev()) {
                None => ids.push(StreamId::MIN),
                Some(Some(before)) => ids.push(before),
                Some(None) => {
                    return Error::fixed("ERR the stream last element ID is 0-0").into();
                }
            }
            continue;
        }
        ids.push(try_reply!(strict_id(id_arg)));
    }
    // Not negative: COUNT is read as at least 0.
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let mut served = Vec::new();
    for (position, key) in keys.iter().enumerate() {
        let mut entries: Vec<Reply> = Vec::new();
        if serve_key(
            engine,
            key,
            ids[position],
            group,
            noack,
            count,
            true,
            &mut entries,
        ) {
            served.push((Reply::Bulk(key.to_vec()), Reply::Array(entries)));
        }
    }
    if !served.is_empty() {
        return Reply::PairMap(served).into();
    }
    match timeout {
        Some(timeout) if !context.no_blocking && !context.replaying => {
            let blocked_group = group.map(|(group, consumer)| BlockedGroup {
                group: group.to_vec(),
                consumer: consumer.to_vec(),
                noack,
            });
            let read = BlockedRead {
                keys: keys.iter().map(|key| key.to_vec()).collect(),
                ids,
                group: blocked_group,
                count,
                deadline_ms: (timeout > 0)
                    .then(|| engine.now.saturating_add(timeout.unsigned_abs())),
            };
            engine.unblock(context.client);
            for key in &read.keys {
                engine
                    .blocked_on_key
                    .entry(key.clone())
                    .or_default()
                    .push_back(context.client);
            }
            engine.blocked.insert(context.client, read);
            Outcome::Blocked
        }
        _ => Reply::NullArray.into(),
    }
}

/// Serves one key of an XREAD/XREADGROUP (and of [`Engine::read`] and
/// [`Engine::read_group`]) into `sink`; false if there is nothing to
/// serve (so the key is left out of the reply). `synchronous` is false
/// when serving a blocked client, where only `>` reads are possible.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve_key<S: Sink>(
    engine: &mut Engine,
    key: &[u8],
    after: StreamId,
    group: Option<(&[u8], &[u8])>,
    noack: bool,
    count: usize,
    synchronous: bool,
    sink: &mut S,
) -> bool {
    serve_key_into(engine, key, after, group, noack, count, synchronous, sink).is_some()
}

#[allow(clippy::too_many_arguments)]
fn serve_key_into<S: Sink>(
    engine: &mut Engine,
    key: &[u8],
    after: StreamId,
    group: Option<(&[u8], &[u8])>,
    noack: bool,
    count: usize,
    synchronous: bool,
    sink: &mut S,
) -> Option<()> {
    let now = engine.now;
    let compatibility = engine.config.compatibility;
    let stream = engine.keys.get_mut(key)?;
    let Some((group_name, consumer_name)) = group else {
        // Redis 7.0 served a blocked reader once the stream's last ID had
        // passed its ID, even if the entries after it were deleted since
        // (it gets an empty list); a read, and a blocked reader from 7.2
        // on (which runs the read again), needs an entry to serve.
        let blocked_7_0 = !synchronous && compatibility == Compatibility::Redis70;
        let servable = if blocked_7_0 {
            stream.last_id > after
        } else {
            !stream.entries.is_empty() && stream.last_live_id() > after
        };
        if !servable {
            return None;
        }
        let start = after.next()?;
        let limit = if count == 0 { usize::MAX } else { count };
        for entry in stream
            .entries
            .range(start, StreamId::MAX, false)
            .take(limit)
        {
            sink.entry(&entry);
        }
        return Some(());
    };
    let last_live = stream.last_live_id();
    let group_state = stream.groups.get_mut(group_name)?;
    let history = after != StreamId::MAX;
    let mut serve = history;
    let mut start = after;
    if !history && !stream.entries.is_empty() && last_live > group_state.last_id {
        serve = true;
        start = group_state.last_id;
    }
    // Redis 7.2 and later create (or refresh) the consumer on every read;
    // 7.0 only when something is served.
    let always_create = compatibility == Compatibility::Redis74;
    if !serve && !always_create {
        return None;
    }
    let (owner, created) = group_state.consumer_entry(consumer_name, now);
    if let Some(consumer) = group_state.consumers.get_mut(&owner) {
        consumer.seen_time = now;
    }
    if created {
        engine.stats.changes += 1;
        engine.propagate(|| {
            vec![
                b"XGROUP".to_vec(),
                b"CREATECONSUMER".to_vec(),
                key.to_vec(),
                group_name.to_vec(),
                consumer_name.to_vec(),
            ]
        });
    }
    if !serve {
        return None;
    }
    // Redis 7.0 counts a change for every stream a group read serves
    // (history too); 7.4 only for one whose group state it changed (below).
    if compatibility == Compatibility::Redis70 {
        engine.stats.changes += 1;
    }
    let stream = engine.keys.get_mut(key)?;
    let from = start.next()?;
    if history {
        let group_state = stream.groups.get_mut(group_name)?;
        let pending: Vec<StreamId> = group_state
            .consumers
            .get(&owner)
            .map(|consumer| consumer.pending.range(from..).copied().collect())
            .unwrap_or_default();
        let limit = if count == 0 { usize::MAX } else { count };
        let mut delivered = Vec::new();
        for id in pending.into_iter().take(limit) {
            match stream.entries.get(id) {
                Some(entry) => {
                    sink.entry(&entry);
                    delivered.push(id);
                }
                None => sink.deleted(id),
            }
        }
        let group_state = stream.groups.get_mut(group_name)?;
        for id in &delivered {
            if let Some(entry) = group_state.pending.get_mut(id) {
                entry.delivery_time = now;
                entry.delivery_count += 1;
            }
        }
        for id in delivered {
            propagate_claim(engine, key, group_name, id);
        }
        return Some(());
    }
    // New entries, after the group's last delivered ID.
    let limit = if count == 0 { usize::MAX } else { count };
    let mut ids: Vec<StreamId> = Vec::new();
    for entry in stream.entries.range(from, StreamId::MAX, false).take(limit) {
        ids.push(entry.id);
        sink.entry(&entry);
    }
    // The group's last ID and read counter after these deliveries.
    let tombstone_rule = compatibility == Compatibility::Redis74;
    let (mut last_id, mut entries_read) = {
        let group_state = stream.groups.get(group_name)?;
        (group_state.last_id, group_state.entries_read)
    };
    let mut last_id_moved = false;
    for id in &ids {
        if *id > last_id {
            entries_read = if entries_read != ENTRIES_READ_UNKNOWN
                && !stream.range_has_tombstones(*id, StreamId::MAX)
            {
                entries_read + 1
            } else if stream.entries_added > 0 {
                stream
                    .estimate_entries_read(*id, tombstone_rule)
                    .map_or(ENTRIES_READ_UNKNOWN, |read| read as i64)
            } else {
                entries_read
            };
            last_id = *id;
            last_id_moved = true;
        }
    }
    let group_state = stream.groups.get_mut(group_name)?;
    group_state.last_id = last_id;
    group_state.entries_read = entries_read;
    let delivered = !noack && !ids.is_empty();
    if delivered {
        for id in &ids {
            group_state.assign(*id, &owner, now, 1);
        }
        if let Some(consumer) = group_state.consumers.get_mut(&owner) {
            consumer.active_time = Some(now);
        }
        for id in &ids {
            propagate_claim(engine, key, group_name, *id);
        }
    }
    if last_id_moved {
        propagate_group_id(engine, key, group_name);
    }
    if compatibility == Compatibility::Redis74 && (delivered || last_id_moved) {
        engine.stats.changes += 1;
    }
    Some(())
}

impl Engine {
    /// Serves the clients blocked on keys that a write made ready.
    pub(crate) fn serve_ready_keys(&mut self) {
        while !self.ready_keys.is_empty() {
            let keys = std::mem::take(&mut self.ready_keys);
            for key in keys {
                let waiting: Vec<u64> = self
                    .blocked_on_key
                    .get(&key)
                    .map(|queue| queue.iter().copied().collect())
                    .unwrap_or_default();
                for client in waiting {
                    let Some(read) = self.blocked.get(&client).cloned() else {
                        continue;
                    };
                    let Some(position) = read.keys.iter().position(|blocked| *blocked == key)
                    else {
                        continue;
                    };
                    let mut entries: Vec<Reply> = Vec::new();
                    let reply = match &read.group {
                        None => serve_key(
                            self,
                            &key,
                            read.ids[position],
                            None,
                            false,
                            read.count,
                            false,
                            &mut entries,
                        )
                        .then_some(Reply::Array(entries)),
                        Some(group) => {
                            let exists = self
                                .keys
                                .get(&key)
                                .is_some_and(|stream| stream.groups.contains_key(&group.group));
                            if !exists {
                                Some(Reply::Error(Error::fixed(
                                    "NOGROUP the consumer group this client was blocked on no longer exists",
                                )))
                            } else {
                                serve_key(
                                    self,
                                    &key,
                                    StreamId::MAX,
                                    Some((&group.group, &group.consumer)),
                                    group.noack,
                                    read.count,
                                    false,
                                    &mut entries,
                                )
                                .then_some(Reply::Array(entries))
                            }
                        }
                    };
                    if let Some(reply) = reply {
                        let reply = match reply {
                            Reply::Error(error) => Reply::Error(error),
                            reply => Reply::PairMap(vec![(Reply::Bulk(key.clone()), reply)]),
                        };
                        self.unblock(client);
                        self.wakeups.push((client, reply));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            "",
            "-",
            "-0",
            "007",
            "+1",
            " 1",
            "1 ",
            "9223372036854775808",
            "1e3",
        ] {
            assert_eq!(parse_i64(bad.as_bytes()), None, "{bad}");
        }
    }
}
