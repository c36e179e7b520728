//! Running one request: the checks Redis makes before a command runs (known
//! command, arity, authentication, RESP2 subscribed mode, MULTI queueing),
//! then the command itself, in the engine (streams) or here (connection,
//! server, transaction and pub/sub commands).

use std::borrow::Cow;
use std::time::Instant;

use weir_stream::pubsub::{glob_match, Message};
use weir_stream::{Context, Error, Outcome, Reply};

use crate::admin;
use crate::node::{Node, State};
pub use crate::session::{
    help, unknown_subcommand, BlockedCall, Multi, Response, Session, REDIS_VERSION,
};
use crate::table::{self, Handler, Spec};

/// Runs one request and appends its replies to `out`.
pub fn run(
    session: &mut Session,
    node: &Node,
    state: &mut State,
    args: &[&[u8]],
    out: &mut Vec<u8>,
) {
    let response = check_and_run(session, node, state, args);
    match response {
        Response::Reply(reply) => emit(session, state, &reply, out),
        Response::Replies(replies) => {
            for reply in &replies {
                emit(session, state, reply, out);
            }
        }
        Response::Blocked => {
            session.blocked = true;
            if let Some(entry) = state.clients.get_mut(&session.id) {
                entry.blocked = true;
            }
            node.timer.notify_one();
        }
    }
}

/// Appends a reply, counting errors.
pub fn emit(session: &Session, state: &mut State, reply: &Reply, out: &mut Vec<u8>) {
    if let Reply::Error(error) = reply {
        state.count_error(error.text());
    }
    session.encode(reply, out);
}

fn check_and_run(
    session: &mut Session,
    node: &Node,
    state: &mut State,
    args: &[&[u8]],
) -> Response {
    state.stats.commands += 1;
    let now = session.now_ms.unwrap_or_else(|| node.clock.now_ms());
    let Some(spec) = table::lookup(args[0]) else {
        abort_multi(session);
        if let Some(entry) = state.clients.get_mut(&session.id) {
            entry.last_ms = now;
        }
        return weir_stream::unknown_command(args).into();
    };
    if let Some(entry) = state.clients.get_mut(&session.id) {
        entry.last_ms = now;
        if entry.last_command != spec.name {
            entry.last_command.clear();
            entry.last_command.push_str(spec.name);
        }
    }
    if !spec.arity_ok(args.len()) {
        abort_multi(session);
        return reject(state, spec.name, Error::arity(spec.name));
    }
    if let Some(error) = subcommand_arity_error(spec, args) {
        abort_multi(session);
        return reject(state, &stat_name(spec, args), error);
    }
    if !session.authenticated && !spec.has("no_auth") {
        abort_multi(session);
        return reject(
            state,
            &stat_name(spec, args),
            Error::fixed("NOAUTH Authentication required."),
        );
    }
    if session.resp == 2
        && session.subscriptions > 0
        && !matches!(
            spec.name,
            "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ping" | "quit" | "reset"
        )
    {
        let error = Error::err(format_args!(
            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        ));
        return reject(state, &stat_name(spec, args), error);
    }
    if let Some(multi) = &mut session.multi {
        if !matches!(
            spec.name,
            "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
        ) {
            multi
                .queued
                .push(args.iter().map(|arg| arg.to_vec()).collect());
            if let Some(entry) = state.clients.get_mut(&session.id) {
                entry.multi = Some(multi.queued.len());
            }
            return Reply::Simple("QUEUED".into()).into();
        }
    }
    call(session, node, state, spec, args, false)
}

/// A command refused before running: counted as rejected.
fn reject(state: &mut State, name: &str, error: Error) -> Response {
    state.command_stat(name).rejected_calls += 1;
    error.into()
}

/// The commandstats name: `container|subcommand` for a known subcommand.
fn stat_name(spec: &Spec, args: &[&[u8]]) -> Cow<'static, str> {
    match args.get(1).and_then(|sub| table::subcommand(spec, sub)) {
        Some(sub) => Cow::Owned(format!("{}|{}", spec.name, sub.name)),
        _ => Cow::Borrowed(spec.info.name),
    }
}

/// Runs a command and counts it in commandstats: a call (with the time it
/// ran) once it has replied, an error reply as a failed call; a blocking
/// read is counted when it completes (`Session::blocked_call`; under
/// `--compatibility 7.0` when it blocks, as Redis 7.0 did). An unknown
/// subcommand is not counted (Redis refuses it before it is a command).
fn call(
    session: &mut Session,
    node: &Node,
    state: &mut State,
    spec: &Spec,
    args: &[&[u8]],
    in_exec: bool,
) -> Response {
    let unknown_subcommand = !spec.subcommands.is_empty()
        && args.len() >= 2
        && table::subcommand(spec, args[1]).is_none();
    // Within a batch, one command's end is the next one's start.
    let started = session.mark.take().unwrap_or_else(Instant::now);
    let response = dispatch(session, node, state, spec, args, in_exec);
    let ended = Instant::now();
    session.mark = session.now_ms.is_some().then_some(ended);
    if unknown_subcommand {
        return response;
    }
    let usec = u64::try_from(ended.duration_since(started).as_micros()).unwrap_or(u64::MAX);
    let name = stat_name(spec, args);
    match &response {
        // Redis 7.0 counted a blocking read when it blocked; 7.2 on count
        // it when it completes.
        Response::Blocked => {
            let counted = node.settings.compatibility == "7.0";
            if counted {
                count_call(state, &name, usec, false);
            }
            session.blocked_call = Some(BlockedCall {
                name: name.into_owned(),
                usec,
                counted,
            });
        }
        Response::Reply(reply) => count_call(state, &name, usec, is_error(reply)),
        Response::Replies(_) => count_call(state, &name, usec, false),
    }
    response
}

/// Counts the completion of a blocking read: a call, failed if the reply
/// is an error (only the failure if the call was counted when it blocked).
pub fn count_blocked_call(state: &mut State, call: &BlockedCall, reply: &Reply) {
    if !call.counted {
        count_call(state, &call.name, call.usec, is_error(reply));
    } else if is_error(reply) {
        state.command_stat(&call.name).failed_calls += 1;
    }
}

/// Counts a completed call, and whether it failed (replied an error).
fn count_call(state: &mut State, name: &str, usec: u64, failed: bool) {
    let stat = state.command_stat(name);
    stat.calls += 1;
    stat.usec += usec;
    stat.failed_calls += u64::from(failed);
}

fn is_error(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(_))
}

fn abort_multi(session: &mut Session) {
    if let Some(multi) = &mut session.multi {
        multi.aborted = true;
    }
}

/// The arity error of a container's subcommand, as Redis checks it when
/// queueing in MULTI.
fn subcommand_arity_error(spec: &Spec, args: &[&[u8]]) -> Option<Error> {
    if spec.subcommands.is_empty() || args.len() < 2 {
        return None;
    }
    let sub = table::subcommand(spec, args[1])?;
    (!table::arity_fits(sub.arity, args.len()))
        .then(|| Error::arity(&format!("{}|{}", spec.name, sub.name)))
}

fn dispatch(
    session: &mut Session,
    node: &Node,
    state: &mut State,
    spec: &Spec,
    args: &[&[u8]],
    in_exec: bool,
) -> Response {
    match spec.handler {
        Handler::Engine => engine_command(session, state, spec, args, in_exec),
        Handler::Server(run) => run(session, node, state, args, in_exec),
    }
}

pub(crate) fn quit(session: &mut Session) -> Response {
    session.close = true;
    Reply::OK.into()
}

pub(crate) fn unwatch(session: &Session, state: &mut State) -> Response {
    state.unwatch(session.id);
    Reply::OK.into()
}

pub(crate) fn publish(node: &Node, state: &mut State, args: &[&[u8]]) -> Response {
    let now = node.clock.now_ms();
    let receivers = state.db.engine().pubsub().publish(args[1], args[2], now);
    Reply::Integer(i64::try_from(receivers).unwrap_or(i64::MAX)).into()
}

pub(crate) fn dbsize(state: &mut State) -> Response {
    let keys = state.db.engine().key_count();
    Reply::Integer(i64::try_from(keys).unwrap_or(i64::MAX)).into()
}

pub(crate) fn time(node: &Node) -> Response {
    let now = node.clock.now_ms();
    Reply::Array(vec![
        Reply::bulk((now / 1000).to_string()),
        Reply::bulk(((now % 1000) * 1000).to_string()),
    ])
    .into()
}

pub(crate) fn shutdown(session: &mut Session, node: &Node) -> Response {
    tracing::info!(client = session.id, "SHUTDOWN requested by a client");
    node.request_shutdown();
    session.close = true;
    // As Redis: no reply, the connection closes.
    Response::Replies(Vec::new())
}

fn engine_command(
    session: &mut Session,
    state: &mut State,
    spec: &Spec,
    args: &[&[u8]],
    in_exec: bool,
) -> Response {
    let context = Context {
        client: session.id,
        no_blocking: in_exec,
        replaying: false,
        now_ms: session.now_ms,
    };
    let outcome = state.db.execute(&context, args);
    let succeeded = !matches!(outcome, Outcome::Reply(Reply::Error(_)));
    if succeeded && !state.watchers.is_empty() && spec.writes() {
        touch_keys(state, spec, args);
    }
    match outcome {
        Outcome::Reply(reply) => reply.into(),
        Outcome::Blocked => Response::Blocked,
    }
}

/// Marks the keys a successful write touched for WATCH.
fn touch_keys(state: &mut State, spec: &Spec, args: &[&[u8]]) {
    match spec.name {
        "flushall" | "flushdb" => state.touch_all(),
        "del" | "unlink" => {
            for key in &args[1..] {
                state.touch(key);
            }
        }
        "xgroup" => {
            if let Some(key) = args.get(2) {
                state.touch(key);
            }
        }
        "xreadgroup" => {
            if let Some(streams) = args
                .iter()
                .position(|arg| arg.eq_ignore_ascii_case(b"STREAMS"))
            {
                let rest = &args[streams + 1..];
                for key in &rest[..rest.len() / 2] {
                    state.touch(key);
                }
            }
        }
        _ => state.touch(args[1]),
    }
}

pub(crate) fn ping(session: &Session, args: &[&[u8]]) -> Response {
    if args.len() > 2 {
        return Error::arity("ping").into();
    }
    if session.resp == 2 && session.subscriptions > 0 {
        let payload = args.get(1).map_or_else(Vec::new, |arg| arg.to_vec());
        return Reply::Array(vec![Reply::bulk("pong"), Reply::Bulk(payload)]).into();
    }
    match args.get(1) {
        Some(payload) => Reply::Bulk(payload.to_vec()).into(),
        None => Reply::Simple("PONG".into()).into(),
    }
}

/// Compares a password in time that does not depend on where it differs.
pub fn password_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for index in 0..given.len().max(expected.len()) {
        let left = given.get(index).copied().unwrap_or(0);
        let right = expected.get(index).copied().unwrap_or(0);
        difference |= usize::from(left ^ right);
    }
    std::hint::black_box(difference) == 0
}

const WRONGPASS: Error =
    Error::fixed("WRONGPASS invalid username-password pair or user is disabled.");

fn check_credentials(state: &State, user: &[u8], password: &[u8]) -> Result<(), Error> {
    let expected = &state.runtime.requirepass;
    // Compare the password even for a wrong user name, so that timing does
    // not tell which part was wrong.
    let password_ok = password_matches(password, expected);
    if user.eq_ignore_ascii_case(b"default") && password_ok && !expected.is_empty() {
        Ok(())
    } else {
        Err(WRONGPASS)
    }
}

pub(crate) fn auth(session: &mut Session, state: &mut State, args: &[&[u8]]) -> Response {
    let (user, password): (&[u8], &[u8]) = match args.len() {
        2 => (b"default", args[1]),
        3 => (args[1], args[2]),
        _ => return Error::SYNTAX.into(),
    };
    if state.runtime.requirepass.is_empty() && args.len() == 2 {
        return Error::fixed("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?").into();
    }
    match check_credentials(state, user, password) {
        Ok(()) => {
            session.authenticated = true;
            Reply::OK.into()
        }
        Err(error) => {
            tracing::warn!(client = session.id, "authentication failed");
            error.into()
        }
    }
}

pub(crate) fn hello(
    session: &mut Session,
    node: &Node,
    state: &mut State,
    args: &[&[u8]],
) -> Response {
    let mut protocol = session.resp;
    if let Some(version) = args.get(1) {
        match std::str::from_utf8(version)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
        {
            Some(2) => protocol = 2,
            Some(3) => protocol = 3,
            Some(_) => return Error::fixed("NOPROTO unsupported protocol version").into(),
            None => {
                return Error::fixed("ERR Protocol version is not an integer or out of range")
                    .into()
            }
        }
    }
    let mut index = 2;
    let mut credentials = None;
    let mut name = None;
    while index < args.len() {
        let more = args.len() - index - 1;
        if args[index].eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            credentials = Some((args[index + 1], args[index + 2]));
            index += 3;
        } else if args[index].eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            name = Some(args[index + 1]);
            index += 2;
        } else {
            return Error::err(format_args!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(args[index])
            ))
            .into();
        }
    }
    if let Some((user, password)) = credentials {
        if let Err(error) = check_credentials(state, user, password) {
            tracing::warn!(client = session.id, "authentication failed");
            return error.into();
        }
        session.authenticated = true;
    }
    if !session.authenticated {
        return Error::fixed("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time").into();
    }
    if let Some(name) = name {
        if let Err(error) = admin::valid_client_name(name) {
            return error.into();
        }
        if let Some(entry) = state.clients.get_mut(&session.id) {
            entry.name = name.to_vec();
        }
    }
    session.resp = protocol;
    if let Some(entry) = state.clients.get_mut(&session.id) {
        entry.resp = protocol;
    }
    let _ = node;
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("weir")),
        (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
        (Reply::bulk("proto"), Reply::Integer(i64::from(protocol))),
        (Reply::bulk("id"), Reply::Integer(session.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ])
    .into()
}

pub(crate) fn select(args: &[&[u8]]) -> Response {
    match std::str::from_utf8(args[1])
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
    {
        Some(0) => Reply::OK.into(),
        Some(_) => Error::fixed("ERR DB index is out of range").into(),
        None => Error::NOT_AN_INTEGER.into(),
    }
}

pub(crate) fn reset(session: &mut Session, state: &mut State) -> Response {
    session.multi = None;
    state.unwatch(session.id);
    let engine = state.db.engine();
    engine.pubsub().remove_client(session.id);
    session.subscriptions = 0;
    session.resp = 2;
    session.authenticated = state.runtime.requirepass.is_empty();
    if let Some(entry) = state.clients.get_mut(&session.id) {
        entry.name.clear();
        entry.resp = 2;
        entry.multi = None;
        entry.subscriptions = 0;
    }
    Reply::Simple("RESET".into()).into()
}

pub(crate) fn multi(session: &mut Session, state: &mut State) -> Response {
    if session.multi.is_some() {
        return Error::fixed("ERR MULTI calls can not be nested").into();
    }
    session.multi = Some(Multi::default());
    if let Some(entry) = state.clients.get_mut(&session.id) {
        entry.multi = Some(0);
    }
    Reply::OK.into()
}

pub(crate) fn discard(session: &mut Session, state: &mut State) -> Response {
    if session.multi.take().is_none() {
        return Error::fixed("ERR DISCARD without MULTI").into();
    }
    state.unwatch(session.id);
    if let Some(entry) = state.clients.get_mut(&session.id) {
        entry.multi = None;
    }
    Reply::OK.into()
}

pub(crate) fn exec(
    session: &mut Session,
    node: &Node,
    state: &mut State,
    in_exec: bool,
) -> Response {
    if in_exec {
        return Error::fixed("ERR EXEC without MULTI").into();
    }
    let Some(multi) = session.multi.take() else {
        return Error::fixed("ERR EXEC without MULTI").into();
    };
    if let Some(entry) = state.clients.get_mut(&session.id) {
        entry.multi = None;
    }
    let dirty = state
        .clients
        .get(&session.id)
        .is_some_and(|entry| entry.watch_dirty);
    state.unwatch(session.id);
    if multi.aborted {
        return Error::fixed("EXECABORT Transaction discarded because of previous errors.").into();
    }
    if dirty {
        return Reply::NullArray.into();
    }
    let mut replies = Vec::with_capacity(multi.queued.len());
    state.db.begin_transaction();
    state.db.engine().begin_batch();
    for command in &multi.queued {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        state.stats.commands += 1;
        let Some(spec) = table::lookup(args[0]) else {
            replies.push(Reply::Error(weir_stream::unknown_command(&args)));
            continue;
        };
        let reply = match call(session, node, state, spec, &args, true) {
            Response::Reply(reply) => reply,
            Response::Replies(many) => Reply::Array(many),
            // `no_blocking` makes blocking reads time out at once.
            Response::Blocked => Reply::NullArray,
        };
        if let Reply::Error(error) = &reply {
            state.count_error(error.text());
        }
        replies.push(reply);
    }
    // The transaction's record first, then what serving blocked readers
    // changed, as Redis serves them after the whole EXEC.
    state.db.end_transaction();
    state.db.end_batch();
    Reply::Array(replies).into()
}

pub(crate) fn watch(session: &mut Session, state: &mut State, args: &[&[u8]]) -> Response {
    if session.multi.is_some() {
        return Error::fixed("ERR WATCH inside MULTI is not allowed").into();
    }
    let Some(entry) = state.clients.get_mut(&session.id) else {
        return Reply::OK.into();
    };
    let mut added = Vec::new();
    for key in &args[1..] {
        if !entry.watched.iter().any(|watched| watched == key) {
            entry.watched.push(key.to_vec());
            added.push(key.to_vec());
        }
    }
    for key in added {
        state.watchers.entry(key).or_default().insert(session.id);
    }
    Reply::OK.into()
}

pub(crate) fn subscribe(
    session: &mut Session,
    state: &mut State,
    args: &[&[u8]],
    pattern: bool,
) -> Response {
    let kind = if pattern { "psubscribe" } else { "subscribe" };
    let pubsub = state.db.engine().pubsub();
    let mut replies = Vec::with_capacity(args.len() - 1);
    for channel in &args[1..] {
        let count = if pattern {
            pubsub.psubscribe(session.id, channel)
        } else {
            pubsub.subscribe(session.id, channel)
        };
        replies.push(Reply::Push(vec![
            Reply::bulk(kind),
            Reply::Bulk(channel.to_vec()),
            Reply::Integer(count as i64),
        ]));
    }
    update_subscriptions(session, state);
    Response::Replies(replies)
}

pub(crate) fn unsubscribe(
    session: &mut Session,
    state: &mut State,
    args: &[&[u8]],
    pattern: bool,
) -> Response {
    let kind = if pattern {
        "punsubscribe"
    } else {
        "unsubscribe"
    };
    let pubsub = state.db.engine().pubsub();
    let targets: Vec<Vec<u8>> = if args.len() > 1 {
        args[1..].iter().map(|arg| arg.to_vec()).collect()
    } else if pattern {
        pubsub.patterns_of(session.id)
    } else {
        pubsub.channels_of(session.id)
    };
    let mut replies = Vec::with_capacity(targets.len().max(1));
    if targets.is_empty() {
        replies.push(Reply::Push(vec![
            Reply::bulk(kind),
            Reply::NullBulk,
            Reply::Integer(pubsub.subscription_count(session.id) as i64),
        ]));
    }
    for target in targets {
        let count = if pattern {
            pubsub.punsubscribe(session.id, &target)
        } else {
            pubsub.unsubscribe(session.id, &target)
        };
        replies.push(Reply::Push(vec![
            Reply::bulk(kind),
            Reply::Bulk(target),
            Reply::Integer(count as i64),
        ]));
    }
    update_subscriptions(session, state);
    Response::Replies(replies)
}

fn update_subscriptions(session: &mut Session, state: &mut State) {
    session.subscriptions = state.db.engine().pubsub().subscription_count(session.id);
    if let Some(entry) = state.clients.get_mut(&session.id) {
        entry.subscriptions = session.subscriptions;
    }
}

/// The replies for messages taken from a subscriber's queue.
pub fn message_replies(messages: Vec<Message>) -> impl Iterator<Item = Reply> {
    messages.into_iter().map(|message| match message {
        Message::Message { channel, payload } => Reply::Push(vec![
            Reply::bulk("message"),
            Reply::Bulk(channel),
            Reply::Bulk(payload),
        ]),
        Message::PatternMessage {
            pattern,
            channel,
            payload,
        } => Reply::Push(vec![
            Reply::bulk("pmessage"),
            Reply::Bulk(pattern),
            Reply::Bulk(channel),
            Reply::Bulk(payload),
        ]),
    })
}

pub(crate) fn pubsub(state: &mut State, args: &[&[u8]]) -> Response {
    let pubsub = state.db.engine().pubsub();
    let sub = args[1];
    if sub.eq_ignore_ascii_case(b"CHANNELS") && args.len() <= 3 {
        let channels = pubsub
            .channels()
            .filter(|channel| {
                args.get(2)
                    .is_none_or(|pattern| glob_match(pattern, channel, false))
            })
            .map(Reply::bulk)
            .collect();
        Reply::Array(channels).into()
    } else if sub.eq_ignore_ascii_case(b"NUMSUB") {
        let counts = args[2..]
            .iter()
            .flat_map(|channel| {
                [
                    Reply::Bulk(channel.to_vec()),
                    Reply::Integer(pubsub.subscribers_of(channel) as i64),
                ]
            })
            .collect();
        Reply::Array(counts).into()
    } else if sub.eq_ignore_ascii_case(b"NUMPAT") && args.len() == 2 {
        Reply::Integer(pubsub.pattern_count() as i64).into()
    } else if sub.eq_ignore_ascii_case(b"HELP") && args.len() == 2 {
        help(
            "PUBSUB",
            &[
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
            ],
        )
    } else {
        unknown_subcommand(sub, "PUBSUB")
    }
}

pub(crate) fn keys(state: &mut State, args: &[&[u8]]) -> Response {
    let pattern = args[1];
    let all = pattern == b"*";
    let keys = state
        .db
        .engine()
        .keys()
        .filter(|key| all || glob_match(pattern, key, false))
        .map(Reply::bulk)
        .collect();
    Reply::Array(keys).into()
}

/// The SCAN position of a key: a hash of it in 63 bits, so that a cursor
/// (the position after the last key returned) survives the keyspace
/// growing or shrinking between calls. Keys present for the whole scan are
/// returned at least once, as Redis guarantees.
fn scan_position(key: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = weir_stream::FxHasher::default();
    hasher.write(key);
    // Mix the bits, FxHash's low bits being weak.
    let mut hash = hasher.finish();
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash >> 1
}

pub(crate) fn scan(state: &mut State, args: &[&[u8]]) -> Response {
    let Some(cursor) = std::str::from_utf8(args[1])
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
    else {
        return Error::fixed("ERR invalid cursor").into();
    };
    let mut count = 10usize;
    let mut pattern: Option<&[u8]> = None;
    let mut kind: Option<&[u8]> = None;
    let mut index = 2;
    while index < args.len() {
        if index + 1 >= args.len() {
            return Error::SYNTAX.into();
        }
        let value = args[index + 1];
        if args[index].eq_ignore_ascii_case(b"COUNT") {
            match std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
            {
                Some(parsed) if parsed >= 1 => count = parsed as usize,
                Some(_) => return Error::SYNTAX.into(),
                None => return Error::NOT_AN_INTEGER.into(),
            }
        } else if args[index].eq_ignore_ascii_case(b"MATCH") {
            pattern = Some(value);
        } else if args[index].eq_ignore_ascii_case(b"TYPE") {
            kind = Some(value);
        } else {
            return Error::SYNTAX.into();
        }
        index += 2;
    }
    let engine = state.db.engine();
    let mut candidates: Vec<(u64, &[u8])> = engine
        .keys()
        .map(|key| (scan_position(key), key))
        .filter(|(position, _)| *position >= cursor)
        .collect();
    candidates.sort_unstable();
    // Take `count` keys, plus any sharing the last one's position, so that
    // the next cursor does not split keys of equal position.
    let mut end = count.min(candidates.len());
    while end > 0 && end < candidates.len() && candidates[end].0 == candidates[end - 1].0 {
        end += 1;
    }
    let next = if end == candidates.len() {
        0
    } else {
        candidates[end - 1].0 + 1
    };
    let keys = candidates[..end]
        .iter()
        .filter(|(_, key)| pattern.is_none_or(|pattern| glob_match(pattern, key, false)))
        .filter(|_| kind.is_none_or(|kind| kind.eq_ignore_ascii_case(b"stream")))
        .map(|(_, key)| Reply::bulk(key))
        .collect();
    Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(keys)]).into()
}

pub(crate) fn command(args: &[&[u8]]) -> Response {
    let Some(sub) = args.get(1) else {
        return Reply::Array(table::all().iter().map(table::info_reply).collect()).into();
    };
    if sub.eq_ignore_ascii_case(b"COUNT") && args.len() == 2 {
        Reply::Integer(table::all().len() as i64).into()
    } else if sub.eq_ignore_ascii_case(b"INFO") {
        if args.len() == 2 {
            return Reply::Array(table::all().iter().map(table::info_reply).collect()).into();
        }
        let infos = args[2..]
            .iter()
            .map(|name| table::lookup(name).map_or(Reply::NullArray, table::info_reply))
            .collect();
        Reply::Array(infos).into()
    } else if sub.eq_ignore_ascii_case(b"DOCS") {
        let docs = if args.len() == 2 {
            table::all().iter().map(table::docs_reply).collect()
        } else {
            args[2..]
                .iter()
                .filter_map(|name| table::lookup(name))
                .map(table::docs_reply)
                .collect()
        };
        Reply::Map(docs).into()
    } else if sub.eq_ignore_ascii_case(b"LIST") {
        Reply::Array(
            table::all()
                .iter()
                .map(|spec| Reply::bulk(spec.name))
                .collect(),
        )
        .into()
    } else if sub.eq_ignore_ascii_case(b"HELP") && args.len() == 2 {
        help(
            "COMMAND",
            &[
                "(no subcommand)",
                "    Return details about all commands.",
                "COUNT",
                "    Return the total number of commands in this server.",
                "LIST",
                "    Return a list of all commands in this server.",
                "INFO [<command-name> ...]",
                "    Return details about multiple commands.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple commands.",
            ],
        )
    } else {
        unknown_subcommand(sub, "COMMAND")
    }
}

pub(crate) fn memory(state: &mut State, args: &[&[u8]]) -> Response {
    let sub = args[1];
    if sub.eq_ignore_ascii_case(b"USAGE") && args.len() >= 3 {
        if args.len() != 3 && !(args.len() == 5 && args[3].eq_ignore_ascii_case(b"SAMPLES")) {
            return Error::SYNTAX.into();
        }
        match state.db.engine().memory_usage(args[2]) {
            Some(bytes) => Reply::Integer(bytes as i64).into(),
            None => Reply::NullBulk.into(),
        }
    } else if sub.eq_ignore_ascii_case(b"HELP") && args.len() == 2 {
        help(
            "MEMORY",
            &[
                "USAGE <key> [SAMPLES <count>]",
                "    Return memory in bytes used by <key> and its value.",
            ],
        )
    } else {
        unknown_subcommand(sub, "MEMORY")
    }
}

pub(crate) fn bgrewriteaof(state: &mut State) -> Response {
    let Some(store) = state.db.store() else {
        return Error::fixed(
            "ERR persistence is off (appendonly no): there is no command log to rewrite",
        )
        .into();
    };
    if store.rewrite_in_progress() {
        return Error::fixed("ERR Background append only file rewriting already in progress")
            .into();
    }
    match store.start_rewrite() {
        Ok(()) => Reply::Simple("Background append only file rewriting started".into()).into(),
        Err(error) => Error::err(format_args!("rewrite failed to start: {error}")).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_compare_whole() {
        assert!(password_matches(b"secret", b"secret"));
        assert!(!password_matches(b"secret", b"secreT"));
        assert!(!password_matches(b"secret", b"secret2"));
        assert!(!password_matches(b"", b"x"));
        assert!(password_matches(b"", b""));
    }

    #[test]
    fn scan_positions_fit_in_63_bits() {
        for key in [&b""[..], b"a", b"stream:1", &[0xff; 40]] {
            assert!(scan_position(key) < 1 << 63);
        }
    }
}
