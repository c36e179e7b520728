//! The command table: every command the server answers, one entry each
//! with Redis's arity, flags, key positions, documentation and its
//! handler. The stream commands' entries are the engine's own
//! (`weir_stream::commands`, run by the engine); the server adds its
//! connection, transaction, pub/sub and server commands. Dispatch checks,
//! MULTI queueing and `COMMAND` (INFO, DOCS, COUNT, LIST, which clients
//! such as `redis-cli` read on connect) all read it.

use std::ops::Deref;
use std::sync::LazyLock;

use weir_stream::{CommandInfo, Reply, Subcommand};

use crate::admin;
use crate::commands as run;
use crate::node::{Node, State};
use crate::session::{Response, Session};

pub use weir_stream::arity_fits;

/// A server command's handler: the session, the node, its state, the
/// arguments, and whether it runs inside EXEC.
pub type ServerFn = fn(&mut Session, &Node, &mut State, &[&[u8]], bool) -> Response;

/// Who runs a command.
#[derive(Clone, Copy, Debug)]
pub enum Handler {
    /// The stream engine (through the node's `Db`).
    Engine,
    /// The server itself.
    Server(ServerFn),
}

/// One command: its description and its handler.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Arity, flags, keys, documentation, subcommands.
    pub info: &'static CommandInfo,
    /// Who runs it.
    pub handler: Handler,
}

impl Deref for Spec {
    type Target = CommandInfo;

    fn deref(&self) -> &CommandInfo {
        self.info
    }
}

const CONNECTION: &[&str] = &["noscript", "loading", "stale", "fast"];
const NO_AUTH: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];
const TRANSACTION: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];
const ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];
const PUBSUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const LOADING_STALE: &[&str] = &["loading", "stale"];
const CONTAINER: &[&str] = &[];

#[rustfmt::skip]
macro_rules! server {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $since:literal, $summary:literal, $run:expr) => {
        server!($name, $arity, $flags, $keys, $group, $since, $summary, $run, &[])
    };
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $since:literal, $summary:literal, $run:expr, $subs:expr) => {
        (
            CommandInfo {
                name: $name,
                arity: $arity,
                flags: $flags,
                keys: $keys,
                group: $group,
                since: $since,
                summary: $summary,
                subcommands: $subs,
            },
            $run as ServerFn,
        )
    };
}

macro_rules! sub {
    ($name:literal, $arity:expr, $flags:expr, $summary:literal) => {
        Subcommand {
            name: $name,
            arity: $arity,
            flags: $flags,
            summary: $summary,
        }
    };
}
const HELP: Subcommand = sub!(
    "help",
    2,
    LOADING_STALE,
    "Returns helpful text about the different subcommands."
);

/// The commands the server runs itself.
#[rustfmt::skip]
static SERVER_COMMANDS: &[(CommandInfo, ServerFn)] = &[
    // Keyspace.
    server!("keys", 2, &["readonly"], (0, 0, 0), "generic", "1.0.0", "Returns all key names that match a pattern.", |_, _, state, args, _| run::keys(state, args)),
    server!("scan", -2, &["readonly"], (0, 0, 0), "generic", "2.8.0", "Iterates over the key names in the database.", |_, _, state, args, _| run::scan(state, args)),
    server!("dbsize", 1, &["readonly", "fast"], (0, 0, 0), "server", "1.0.0", "Returns the number of keys in the database.", |_, _, state, _, _| run::dbsize(state)),
    // Connection.
    server!("ping", -1, &["fast"], (0, 0, 0), "connection", "1.0.0", "Returns the server's liveliness response.", |session, _, _, args, _| run::ping(session, args)),
    server!("echo", 2, &["fast"], (0, 0, 0), "connection", "1.0.0", "Returns the given string.", |_, _, _, args, _| Reply::Bulk(args[1].to_vec()).into()),
    server!("hello", -1, NO_AUTH, (0, 0, 0), "connection", "6.0.0", "Handshakes with the Redis server.", |session, node, state, args, _| run::hello(session, node, state, args)),
    server!("auth", -2, NO_AUTH, (0, 0, 0), "connection", "1.0.0", "Authenticates the connection.", |session, _, state, args, _| run::auth(session, state, args)),
    server!("select", 2, CONNECTION, (0, 0, 0), "connection", "1.0.0", "Changes the selected database.", |_, _, _, args, _| run::select(args)),
    server!("quit", -1, NO_AUTH, (0, 0, 0), "connection", "1.0.0", "Closes the connection.", |session, _, _, _, _| run::quit(session)),
    server!("reset", 1, NO_AUTH, (0, 0, 0), "connection", "6.2.0", "Resets the connection.", |session, _, state, _, _| run::reset(session, state)),
    server!("client", -2, CONTAINER, (0, 0, 0), "connection", "2.4.0", "A container for client connection commands.", |session, node, state, args, _| admin::client(session, node, state, args), &[
        sub!("id", 2, CONNECTION, "Returns the unique client ID of the connection."),
        sub!("setname", 3, CONNECTION, "Sets the connection name."),
        sub!("getname", 2, CONNECTION, "Returns the name of the connection."),
        sub!("setinfo", 4, CONNECTION, "Sets information specific to the client or connection."),
        sub!("list", -2, ADMIN, "Lists open connections."),
        sub!("info", 2, CONNECTION, "Returns information about the connection."),
        sub!("kill", -3, ADMIN, "Terminates open connections."),
        sub!("unblock", -3, ADMIN, "Unblocks a client blocked by a blocking command from a different connection."),
        sub!("no-evict", 3, ADMIN, "Sets the client eviction mode of the connection."),
        sub!("no-touch", 3, CONNECTION, "Controls whether commands sent by the client affect the LRU/LFU of accessed keys."),
        HELP,
    ]),
    // Transactions.
    server!("multi", 1, TRANSACTION, (0, 0, 0), "transactions", "1.2.0", "Starts a transaction.", |session, _, state, _, _| run::multi(session, state)),
    server!("exec", 1, &["noscript", "loading", "stale", "skip_slowlog"], (0, 0, 0), "transactions", "1.2.0", "Executes all commands in a transaction.", |session, node, state, _, in_exec| run::exec(session, node, state, in_exec)),
    server!("discard", 1, TRANSACTION, (0, 0, 0), "transactions", "2.0.0", "Discards a transaction.", |session, _, state, _, _| run::discard(session, state)),
    server!("watch", -2, TRANSACTION, (1, -1, 1), "transactions", "2.2.0", "Monitors changes to keys to determine the execution of a transaction.", |session, _, state, args, _| run::watch(session, state, args)),
    server!("unwatch", 1, TRANSACTION, (0, 0, 0), "transactions", "2.2.0", "Forgets about watched keys of a transaction.", |session, _, state, _, _| run::unwatch(session, state)),
    // Pub/Sub.
    server!("subscribe", -2, PUBSUB, (0, 0, 0), "pubsub", "2.0.0", "Listens for messages published to channels.", |session, _, state, args, _| run::subscribe(session, state, args, false)),
    server!("psubscribe", -2, PUBSUB, (0, 0, 0), "pubsub", "2.0.0", "Listens for messages published to channels that match one or more patterns.", |session, _, state, args, _| run::subscribe(session, state, args, true)),
    server!("unsubscribe", -1, PUBSUB, (0, 0, 0), "pubsub", "2.0.0", "Stops listening to messages posted to channels.", |session, _, state, args, _| run::unsubscribe(session, state, args, false)),
    server!("punsubscribe", -1, PUBSUB, (0, 0, 0), "pubsub", "2.0.0", "Stops listening to messages published to channels that match one or more patterns.", |session, _, state, args, _| run::unsubscribe(session, state, args, true)),
    server!("publish", 3, &["pubsub", "loading", "stale", "fast"], (0, 0, 0), "pubsub", "2.0.0", "Posts a message to a channel.", |_, node, state, args, _| run::publish(node, state, args)),
    server!("pubsub", -2, CONTAINER, (0, 0, 0), "pubsub", "2.8.0", "A container for Pub/Sub commands.", |_, _, state, args, _| run::pubsub(state, args), &[
        sub!("channels", -2, PUBSUB, "Returns the active channels."),
        sub!("numsub", -2, PUBSUB, "Returns a count of subscribers to channels."),
        sub!("numpat", 2, PUBSUB, "Returns a count of unique pattern subscriptions."),
        HELP,
    ]),
    // Server.
    server!("info", -1, LOADING_STALE, (0, 0, 0), "server", "1.0.0", "Returns information and statistics about the server.", |session, node, state, args, _| admin::info(session, node, state, args)),
    server!("config", -2, CONTAINER, (0, 0, 0), "server", "2.0.0", "A container for server configuration commands.", |_, node, state, args, _| admin::config(node, state, args), &[
        sub!("get", -3, ADMIN, "Returns the effective values of configuration parameters."),
        sub!("set", -4, ADMIN, "Sets configuration parameters in-flight."),
        sub!("resetstat", 2, ADMIN, "Resets the server's statistics."),
        HELP,
    ]),
    server!("command", -1, LOADING_STALE, (0, 0, 0), "server", "2.8.13", "Returns detailed information about all commands.", |_, _, _, args, _| run::command(args), &[
        sub!("count", 2, LOADING_STALE, "Returns a count of commands."),
        sub!("docs", -2, LOADING_STALE, "Returns documentary information about one, multiple or all commands."),
        sub!("info", -2, LOADING_STALE, "Returns information about one, multiple or all commands."),
        sub!("list", -2, LOADING_STALE, "Returns a list of command names."),
        HELP,
    ]),
    server!("memory", -2, CONTAINER, (0, 0, 0), "server", "4.0.0", "A container for memory diagnostics commands.", |_, _, state, args, _| run::memory(state, args), &[
        sub!("usage", -3, &["readonly"], "Estimates the memory usage of a key."),
        HELP,
    ]),
    server!("time", 1, &["loading", "stale", "fast"], (0, 0, 0), "server", "2.6.0", "Returns the server time.", |_, node, _, _, _| run::time(node)),
    server!("bgrewriteaof", 1, &["admin", "noscript"], (0, 0, 0), "server", "1.0.0", "Asynchronously rewrites the append-only file to disk.", |_, _, state, _, _| run::bgrewriteaof(state)),
    server!("shutdown", -1, ADMIN, (0, 0, 0), "server", "1.0.0", "Synchronously saves the database(s) to disk and shuts down the Redis server.", |session, node, _, _, _| run::shutdown(session, node)),
];

/// Every command: the engine's, then the server's.
static COMMANDS: LazyLock<Vec<Spec>> = LazyLock::new(|| {
    let engine = weir_stream::commands().map(|info| Spec {
        info,
        handler: Handler::Engine,
    });
    let server = SERVER_COMMANDS.iter().map(|(info, run)| Spec {
        info,
        handler: Handler::Server(*run),
    });
    engine.chain(server).collect()
});

/// Every command, the engine's first.
pub fn all() -> &'static [Spec] {
    &COMMANDS
}

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    // The engine's commands, the hottest, come first.
    COMMANDS
        .iter()
        .find(|spec| name.eq_ignore_ascii_case(spec.name.as_bytes()))
}

/// The subcommand `sub` of `spec`, if it has subcommands.
pub fn subcommand(spec: &Spec, sub: &[u8]) -> Option<&'static Subcommand> {
    spec.info.subcommand(sub)
}

/// `COMMAND INFO`'s reply for one command.
pub fn info_reply(spec: &Spec) -> Reply {
    let flags = Reply::Set(
        spec.flags
            .iter()
            .map(|flag| Reply::Simple((*flag).into()))
            .collect(),
    );
    let subcommands = spec
        .subcommands
        .iter()
        .map(|sub| {
            let flags = sub
                .flags
                .iter()
                .map(|flag| Reply::Simple((*flag).into()))
                .collect();
            Reply::Array(vec![
                Reply::bulk(format!("{}|{}", spec.name, sub.name)),
                Reply::Integer(i64::from(sub.arity)),
                Reply::Set(flags),
                Reply::Integer(0),
                Reply::Integer(0),
                Reply::Integer(0),
                Reply::Set(vec![Reply::Simple(format!("@{}", spec.group).into())]),
                Reply::Set(Vec::new()),
                Reply::Array(Vec::new()),
                Reply::Array(Vec::new()),
            ])
        })
        .collect();
    Reply::Array(vec![
        Reply::bulk(spec.name),
        Reply::Integer(i64::from(spec.arity)),
        flags,
        Reply::Integer(i64::from(spec.keys.0)),
        Reply::Integer(i64::from(spec.keys.1)),
        Reply::Integer(i64::from(spec.keys.2)),
        Reply::Set(vec![Reply::Simple(format!("@{}", spec.group).into())]),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(subcommands),
    ])
}

/// `COMMAND DOCS`'s entry for one command: its name and a map of summary,
/// since, group, and subcommands.
pub fn docs_reply(spec: &Spec) -> (Reply, Reply) {
    let mut fields = vec![
        (Reply::bulk("summary"), Reply::bulk(spec.summary)),
        (Reply::bulk("since"), Reply::bulk(spec.since)),
        (Reply::bulk("group"), Reply::bulk(spec.group)),
    ];
    if !spec.subcommands.is_empty() {
        let subs = spec
            .subcommands
            .iter()
            .map(|sub| {
                (
                    Reply::bulk(format!("{}|{}", spec.name, sub.name)),
                    Reply::Map(vec![
                        (Reply::bulk("summary"), Reply::bulk(sub.summary)),
                        (Reply::bulk("since"), Reply::bulk(spec.since)),
                        (Reply::bulk("group"), Reply::bulk(spec.group)),
                    ]),
                )
            })
            .collect();
        fields.push((Reply::bulk("subcommands"), Reply::Map(subs)));
    }
    (Reply::bulk(spec.name), Reply::Map(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_listed_once() {
        let mut names: Vec<&str> = all().iter().map(|spec| spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all().len(), "no duplicates");
        for spec in all() {
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            let found = lookup(spec.name.to_ascii_uppercase().as_bytes()).expect("found");
            assert_eq!(found.name, spec.name);
        }
        assert!(matches!(
            lookup(b"xadd").expect("xadd").handler,
            Handler::Engine
        ));
        assert!(matches!(
            lookup(b"ping").expect("ping").handler,
            Handler::Server(_)
        ));
    }
}
