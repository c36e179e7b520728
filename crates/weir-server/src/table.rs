//! The command table: every command the server answers, with Redis's
//! arity, flags, key positions and documentation, for dispatch checks,
//! MULTI queueing, and `COMMAND` (INFO, DOCS, COUNT, LIST), which clients
//! such as `redis-cli` read on connect.

use weir_stream::Reply;

/// One command.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis's arity: exact count if positive, at least `-arity` if
    /// negative (the name counts).
    pub arity: i32,
    /// Redis's command flags.
    pub flags: &'static [&'static str],
    /// First key position, last key position (-1: the last argument), step.
    pub keys: (i32, i32, i32),
    /// Redis's command group.
    pub group: &'static str,
    /// Redis version that introduced it.
    pub since: &'static str,
    /// One line of documentation.
    pub summary: &'static str,
    /// Subcommands (`name|sub`), with their arities.
    pub subcommands: &'static [(&'static str, i32, &'static str)],
    /// Whether the stream engine runs it (otherwise the server does).
    pub engine: bool,
}

impl Spec {
    /// Whether it has `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// Whether `count` arguments (name included) fit the arity.
    pub fn arity_ok(&self, count: usize) -> bool {
        arity_fits(self.arity, count)
    }
}

/// Whether `count` arguments fit `arity`.
pub fn arity_fits(arity: i32, count: usize) -> bool {
    let count = count as i64;
    if arity >= 0 {
        count == i64::from(arity)
    } else {
        count >= -i64::from(arity)
    }
}

const WRITE: &[&str] = &["write", "fast"];
const WRITE_SLOW: &[&str] = &["write"];
const WRITE_DENYOOM: &[&str] = &["write", "denyoom", "fast"];
const READ: &[&str] = &["readonly"];
const READ_FAST: &[&str] = &["readonly", "fast"];
const CONNECTION: &[&str] = &["noscript", "loading", "stale", "fast"];
const NO_AUTH: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];
const ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];
const PUBSUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const CONTAINER: &[&str] = &[];

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $since:literal, $summary:literal, $engine:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            group: $group,
            since: $since,
            summary: $summary,
            subcommands: &[],
            engine: $engine,
        }
    };
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $since:literal, $summary:literal, $engine:expr, $subs:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            group: $group,
            since: $since,
            summary: $summary,
            subcommands: $subs,
            engine: $engine,
        }
    };
}

/// Every command.
pub const COMMANDS: &[Spec] = &[
    // Streams (run by the engine).
    spec!("xadd", -5, WRITE_DENYOOM, (1, 1, 1), "stream", "5.0.0", "Appends a new message to a stream. Creates the key if it doesn't exist.", true),
    spec!("xrange", -4, READ, (1, 1, 1), "stream", "5.0.0", "Returns the messages from a stream within a range of IDs.", true),
    spec!("xrevrange", -4, READ, (1, 1, 1), "stream", "5.0.0", "Returns the messages from a stream within a range of IDs in reverse order.", true),
    spec!("xlen", 2, READ_FAST, (1, 1, 1), "stream", "5.0.0", "Return the number of messages in a stream.", true),
    spec!("xread", -4, &["readonly", "blocking", "movablekeys"], (0, 0, 0), "stream", "5.0.0", "Returns messages from multiple streams with IDs greater than the ones requested. Blocks until a message is available otherwise.", true),
    spec!("xreadgroup", -7, &["write", "blocking", "movablekeys"], (0, 0, 0), "stream", "5.0.0", "Returns new or historical messages from a stream for a consumer in a group. Blocks until a message is available otherwise.", true),
    spec!("xgroup", -2, CONTAINER, (0, 0, 0), "stream", "5.0.0", "A container for consumer groups commands.", true, &[
        ("create", -5, "Creates a consumer group."),
        ("setid", -5, "Sets the last-delivered ID of a consumer group."),
        ("destroy", 4, "Destroys a consumer group."),
        ("createconsumer", 5, "Creates a consumer in a consumer group."),
        ("delconsumer", 5, "Deletes a consumer from a consumer group."),
        ("help", 2, "Returns helpful text about the different subcommands."),
    ]),
    spec!("xsetid", -3, WRITE_DENYOOM, (1, 1, 1), "stream", "5.0.0", "An internal command for replicating stream values.", true),
    spec!("xack", -4, WRITE, (1, 1, 1), "stream", "5.0.0", "Returns the number of messages that were successfully acknowledged by the consumer group member of a stream.", true),
    spec!("xpending", -3, READ, (1, 1, 1), "stream", "5.0.0", "Returns the information and entries from a stream consumer group's pending entries list.", true),
    spec!("xclaim", -6, WRITE, (1, 1, 1), "stream", "5.0.0", "Changes, or acquires, ownership of a message in a consumer group, as if the message was delivered a consumer group member.", true),
    spec!("xautoclaim", -6, WRITE, (1, 1, 1), "stream", "6.2.0", "Changes, or acquires, ownership of messages in a consumer group, as if the messages were delivered to as consumer group member.", true),
    spec!("xinfo", -2, CONTAINER, (0, 0, 0), "stream", "5.0.0", "A container for stream introspection commands.", true, &[
        ("stream", -3, "Returns information about a stream."),
        ("groups", 3, "Returns a list of the consumer groups of a stream."),
        ("consumers", 4, "Returns a list of the consumers in a consumer group."),
        ("help", 2, "Returns helpful text about the different subcommands."),
    ]),
    spec!("xdel", -3, WRITE, (1, 1, 1), "stream", "5.0.0", "Returns the number of messages after removing them from a stream.", true),
    spec!("xtrim", -4, WRITE_SLOW, (1, 1, 1), "stream", "5.0.0", "Deletes messages from the beginning of a stream.", true),
    // Keyspace.
    spec!("del", -2, WRITE_SLOW, (1, -1, 1), "generic", "1.0.0", "Deletes one or more keys.", true),
    spec!("unlink", -2, WRITE, (1, -1, 1), "generic", "4.0.0", "Asynchronously deletes one or more keys.", true),
    spec!("exists", -2, READ_FAST, (1, -1, 1), "generic", "1.0.0", "Determines whether one or more keys exist.", true),
    spec!("type", 2, READ_FAST, (1, 1, 1), "generic", "1.0.0", "Determines the type of value stored at a key.", true),
    spec!("keys", 2, READ, (0, 0, 0), "generic", "1.0.0", "Returns all key names that match a pattern.", false),
    spec!("scan", -2, READ, (0, 0, 0), "generic", "2.8.0", "Iterates over the key names in the database.", false),
    spec!("dbsize", 1, READ_FAST, (0, 0, 0), "server", "1.0.0", "Returns the number of keys in the database.", false),
    spec!("flushall", -1, WRITE_SLOW, (0, 0, 0), "server", "1.0.0", "Removes all keys from all databases.", true),
    spec!("flushdb", -1, WRITE_SLOW, (0, 0, 0), "server", "1.0.0", "Remove all keys from the current database.", true),
    // Connection.
    spec!("ping", -1, &["fast"], (0, 0, 0), "connection", "1.0.0", "Returns the server's liveliness response.", false),
    spec!("echo", 2, &["fast"], (0, 0, 0), "connection", "1.0.0", "Returns the given string.", false),
    spec!("hello", -1, NO_AUTH, (0, 0, 0), "connection", "6.0.0", "Handshakes with the Redis server.", false),
    spec!("auth", -2, NO_AUTH, (0, 0, 0), "connection", "1.0.0", "Authenticates the connection.", false),
    spec!("select", 2, CONNECTION, (0, 0, 0), "connection", "1.0.0", "Changes the selected database.", false),
    spec!("quit", -1, NO_AUTH, (0, 0, 0), "connection", "1.0.0", "Closes the connection.", false),
    spec!("reset", 1, NO_AUTH, (0, 0, 0), "connection", "6.2.0", "Resets the connection.", false),
    spec!("client", -2, CONTAINER, (0, 0, 0), "connection", "2.4.0", "A container for client connection commands.", false, &[
        ("id", 2, "Returns the unique client ID of the connection."),
        ("setname", 3, "Sets the connection name."),
        ("getname", 2, "Returns the name of the connection."),
        ("setinfo", 4, "Sets information specific to the client or connection."),
        ("list", -2, "Lists open connections."),
        ("info", 2, "Returns information about the connection."),
        ("kill", -3, "Terminates open connections."),
        ("unblock", -3, "Unblocks a client blocked by a blocking command from a different connection."),
        ("no-evict", 3, "Sets the client eviction mode of the connection."),
        ("no-touch", 3, "Controls whether commands sent by the client affect the LRU/LFU of accessed keys."),
        ("help", 2, "Returns helpful text about the different subcommands."),
    ]),
    // Transactions.
    spec!("multi", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], (0, 0, 0), "transactions", "1.2.0", "Starts a transaction.", false),
    spec!("exec", 1, &["noscript", "loading", "stale", "skip_slowlog"], (0, 0, 0), "transactions", "1.2.0", "Executes all commands in a transaction.", false),
    spec!("discard", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], (0, 0, 0), "transactions", "2.0.0", "Discards a transaction.", false),
    spec!("watch", -2, &["noscript", "loading", "stale", "fast", "allow_busy"], (1, -1, 1), "transactions", "2.2.0", "Monitors changes to keys to determine the execution of a transaction.", false),
    spec!("unwatch", 1, &["noscript", "loading", "stale", "fast", "allow_busy"], (0, 0, 0), "transactions", "2.2.0", "Forgets about watched keys of a transaction.", false),
    // Pub/Sub.
    spec!("subscribe", -2, PUBSUB, (0, 0, 0), "pubsub", "2.0.0", "Listens for messages published to channels.", false),
    spec!("psubscribe", -2, PUBSUB, (0, 0, 0), "pubsub", "2.0.0", "Listens for messages published to channels that match one or more patterns.", false),
    spec!("unsubscribe", -1, PUBSUB, (0, 0, 0), "pubsub", "2.0.0", "Stops listening to messages posted to channels.", false),
    spec!("punsubscribe", -1, PUBSUB, (0, 0, 0), "pubsub", "2.0.0", "Stops listening to messages published to channels that match one or more patterns.", false),
    spec!("publish", 3, &["pubsub", "loading", "stale", "fast"], (0, 0, 0), "pubsub", "2.0.0", "Posts a message to a channel.", false),
    spec!("pubsub", -2, CONTAINER, (0, 0, 0), "pubsub", "2.8.0", "A container for Pub/Sub commands.", false, &[
        ("channels", -2, "Returns the active channels."),
        ("numsub", -2, "Returns a count of subscribers to channels."),
        ("numpat", 2, "Returns a count of unique pattern subscriptions."),
        ("help", 2, "Returns helpful text about the different subcommands."),
    ]),
    // Server.
    spec!("info", -1, &["loading", "stale"], (0, 0, 0), "server", "1.0.0", "Returns information and statistics about the server.", false),
    spec!("config", -2, CONTAINER, (0, 0, 0), "server", "2.0.0", "A container for server configuration commands.", false, &[
        ("get", -3, "Returns the effective values of configuration parameters."),
        ("set", -4, "Sets configuration parameters in-flight."),
        ("resetstat", 2, "Resets the server's statistics."),
        ("help", 2, "Returns helpful text about the different subcommands."),
    ]),
    spec!("command", -1, &["loading", "stale"], (0, 0, 0), "server", "2.8.13", "Returns detailed information about all commands.", false, &[
        ("count", 2, "Returns a count of commands."),
        ("docs", -2, "Returns documentary information about one, multiple or all commands."),
        ("info", -2, "Returns information about one, multiple or all commands."),
        ("list", -2, "Returns a list of command names."),
        ("help", 2, "Returns helpful text about the different subcommands."),
    ]),
    spec!("memory", -2, CONTAINER, (0, 0, 0), "server", "4.0.0", "A container for memory diagnostics commands.", false, &[
        ("usage", -3, "Estimates the memory usage of a key."),
        ("help", 2, "Returns helpful text about the different subcommands."),
    ]),
    spec!("time", 1, &["loading", "stale", "fast"], (0, 0, 0), "server", "2.6.0", "Returns the server time.", false),
    spec!("bgrewriteaof", 1, &["admin", "noscript"], (0, 0, 0), "server", "1.0.0", "Asynchronously rewrites the append-only file to disk.", false),
    spec!("shutdown", -1, ADMIN, (0, 0, 0), "server", "1.0.0", "Synchronously saves the database(s) to disk and shuts down the Redis server.", false),
];

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    // The hottest commands first.
    COMMANDS
        .iter()
        .find(|spec| name.eq_ignore_ascii_case(spec.name.as_bytes()))
}

/// The subcommand `sub` of `spec`, if it has subcommands.
pub fn subcommand(spec: &Spec, sub: &[u8]) -> Option<&'static (&'static str, i32, &'static str)> {
    spec.subcommands
        .iter()
        .find(|(name, _, _)| sub.eq_ignore_ascii_case(name.as_bytes()))
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
        .map(|(sub, arity, _)| {
            Reply::Array(vec![
                Reply::bulk(format!("{}|{}", spec.name, sub)),
                Reply::Integer(i64::from(*arity)),
                Reply::Set(Vec::new()),
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
            .map(|(sub, _, summary)| {
                (
                    Reply::bulk(format!("{}|{}", spec.name, sub)),
                    Reply::Map(vec![
                        (Reply::bulk("summary"), Reply::bulk(*summary)),
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
    fn every_engine_command_is_in_the_table_with_its_arity() {
        for (name, arity) in weir_stream::command_table() {
            let spec = lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} is missing"));
            assert_eq!(spec.arity, arity, "{name}");
            assert!(spec.engine, "{name} runs in the engine");
        }
        for spec in COMMANDS.iter().filter(|spec| spec.engine) {
            assert!(
                weir_stream::is_stream_command(spec.name.as_bytes()),
                "{} is not an engine command",
                spec.name
            );
        }
        let mut names: Vec<&str> = COMMANDS.iter().map(|spec| spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len(), "no duplicates");
    }

    #[test]
    fn write_flags_match_the_engine() {
        let plain = COMMANDS
            .iter()
            .filter(|spec| spec.engine && spec.subcommands.is_empty());
        for spec in plain {
            assert_eq!(
                spec.has("write"),
                weir_stream::is_write_command(spec.name.as_bytes()),
                "{}",
                spec.name
            );
        }
    }
}
