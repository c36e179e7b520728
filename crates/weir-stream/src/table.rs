//! The engine's command table, the one place each stream command is
//! described: Redis's arity, flags, key positions, documentation and
//! subcommands, and the handler that runs it. The engine checks arities
//! from it; a server lists these commands in `COMMAND` and checks them
//! before running them from the same entries ([`commands`]).

use crate::commands::{self as run, Args};
use crate::engine::{Context, Engine, Outcome};

/// What Redis's `COMMAND` reports of a command, and what a server checks
/// before running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandInfo {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis's arity: exactly this many arguments if positive, at least
    /// `-arity` if negative (the name counts).
    pub arity: i32,
    /// Redis's command flags (`write`, `readonly`, `fast`, …).
    pub flags: &'static [&'static str],
    /// First key position, last key position (-1: the last argument), step.
    pub keys: (i32, i32, i32),
    /// Redis's command group.
    pub group: &'static str,
    /// The Redis version that introduced it.
    pub since: &'static str,
    /// One line of documentation.
    pub summary: &'static str,
    /// Its subcommands, for a container command.
    pub subcommands: &'static [Subcommand],
}

/// A subcommand of a container command (`XGROUP CREATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subcommand {
    /// Lower-case name.
    pub name: &'static str,
    /// Its arity, the container's name and its own included.
    pub arity: i32,
    /// Redis's flags of the subcommand.
    pub flags: &'static [&'static str],
    /// One line of documentation.
    pub summary: &'static str,
}

impl CommandInfo {
    /// Whether it has `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// Whether `count` arguments (the name included) fit its arity.
    pub fn arity_ok(&self, count: usize) -> bool {
        arity_fits(self.arity, count)
    }

    /// Whether it changes state: a write command, or a container with a
    /// subcommand that writes.
    pub fn writes(&self) -> bool {
        self.has("write")
            || self
                .subcommands
                .iter()
                .any(|sub| sub.flags.contains(&"write"))
    }

    /// The subcommand `name` (any case).
    pub fn subcommand(&self, name: &[u8]) -> Option<&'static Subcommand> {
        self.subcommands
            .iter()
            .find(|sub| name.eq_ignore_ascii_case(sub.name.as_bytes()))
    }
}

/// Whether `count` arguments (the name included) fit Redis's `arity`:
/// exactly `arity` if positive, at least `-arity` if negative.
pub fn arity_fits(arity: i32, count: usize) -> bool {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    if arity >= 0 {
        count == i64::from(arity)
    } else {
        count >= -i64::from(arity)
    }
}

pub(crate) type Handler = fn(&mut Engine, &Context, Args<'_, '_>) -> Outcome;

/// A command of the table and its handler.
pub(crate) struct Command {
    pub(crate) info: CommandInfo,
    pub(crate) run: Handler,
}

const WRITE: &[&str] = &["write", "fast"];
const WRITE_SLOW: &[&str] = &["write"];
const WRITE_DENYOOM: &[&str] = &["write", "denyoom", "fast"];
const READ: &[&str] = &["readonly"];
const READ_FAST: &[&str] = &["readonly", "fast"];
const CONTAINER: &[&str] = &[];
const HELP: Subcommand = Subcommand {
    name: "help",
    arity: 2,
    flags: &["loading", "stale"],
    summary: "Returns helpful text about the different subcommands.",
};

#[rustfmt::skip]
macro_rules! command {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $since:literal, $summary:literal, $run:expr) => {
        command!($name, $arity, $flags, $keys, $group, $since, $summary, $run, &[])
    };
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $since:literal, $summary:literal, $run:expr, $subs:expr) => {
        Command {
            info: CommandInfo {
                name: $name,
                arity: $arity,
                flags: $flags,
                keys: $keys,
                group: $group,
                since: $since,
                summary: $summary,
                subcommands: $subs,
            },
            run: $run,
        }
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

/// Every command the engine runs.
#[rustfmt::skip]
pub(crate) const COMMANDS: &[Command] = &[
    command!("xadd", -5, WRITE_DENYOOM, (1, 1, 1), "stream", "5.0.0", "Appends a new message to a stream. Creates the key if it doesn't exist.", run::xadd),
    command!("xrange", -4, READ, (1, 1, 1), "stream", "5.0.0", "Returns the messages from a stream within a range of IDs.", run::xrange),
    command!("xrevrange", -4, READ, (1, 1, 1), "stream", "5.0.0", "Returns the messages from a stream within a range of IDs in reverse order.", run::xrevrange),
    command!("xlen", 2, READ_FAST, (1, 1, 1), "stream", "5.0.0", "Return the number of messages in a stream.", run::xlen),
    command!("xread", -4, &["readonly", "blocking", "movablekeys"], (0, 0, 0), "stream", "5.0.0", "Returns messages from multiple streams with IDs greater than the ones requested. Blocks until a message is available otherwise.", run::xread),
    command!("xreadgroup", -7, &["write", "blocking", "movablekeys"], (0, 0, 0), "stream", "5.0.0", "Returns new or historical messages from a stream for a consumer in a group. Blocks until a message is available otherwise.", run::xread),
    command!("xgroup", -2, CONTAINER, (0, 0, 0), "stream", "5.0.0", "A container for consumer groups commands.", run::xgroup, &[
        sub!("create", -5, &["write", "denyoom"], "Creates a consumer group."),
        sub!("setid", -5, &["write"], "Sets the last-delivered ID of a consumer group."),
        sub!("destroy", 4, &["write"], "Destroys a consumer group."),
        sub!("createconsumer", 5, &["write", "denyoom"], "Creates a consumer in a consumer group."),
        sub!("delconsumer", 5, &["write"], "Deletes a consumer from a consumer group."),
        HELP,
    ]),
    command!("xsetid", -3, WRITE_DENYOOM, (1, 1, 1), "stream", "5.0.0", "An internal command for replicating stream values.", run::xsetid),
    command!("xack", -4, WRITE, (1, 1, 1), "stream", "5.0.0", "Returns the number of messages that were successfully acknowledged by the consumer group member of a stream.", run::xack),
    command!("xpending", -3, READ, (1, 1, 1), "stream", "5.0.0", "Returns the information and entries from a stream consumer group's pending entries list.", run::xpending),
    command!("xclaim", -6, WRITE, (1, 1, 1), "stream", "5.0.0", "Changes, or acquires, ownership of a message in a consumer group, as if the message was delivered a consumer group member.", run::xclaim),
    command!("xautoclaim", -6, WRITE, (1, 1, 1), "stream", "6.2.0", "Changes, or acquires, ownership of messages in a consumer group, as if the messages were delivered to as consumer group member.", run::xautoclaim),
    command!("xinfo", -2, CONTAINER, (0, 0, 0), "stream", "5.0.0", "A container for stream introspection commands.", crate::info::xinfo, &[
        sub!("stream", -3, &["readonly"], "Returns information about a stream."),
        sub!("groups", 3, &["readonly"], "Returns a list of the consumer groups of a stream."),
        sub!("consumers", 4, &["readonly"], "Returns a list of the consumers in a consumer group."),
        HELP,
    ]),
    command!("xdel", -3, WRITE, (1, 1, 1), "stream", "5.0.0", "Returns the number of messages after removing them from a stream.", run::xdel),
    command!("xtrim", -4, WRITE_SLOW, (1, 1, 1), "stream", "5.0.0", "Deletes messages from the beginning of a stream.", run::xtrim),
    command!("del", -2, WRITE_SLOW, (1, -1, 1), "generic", "1.0.0", "Deletes one or more keys.", run::del),
    command!("unlink", -2, WRITE, (1, -1, 1), "generic", "4.0.0", "Asynchronously deletes one or more keys.", run::del),
    command!("exists", -2, READ_FAST, (1, -1, 1), "generic", "1.0.0", "Determines whether one or more keys exist.", run::exists),
    command!("type", 2, READ_FAST, (1, 1, 1), "generic", "1.0.0", "Determines the type of value stored at a key.", run::type_command),
    command!("flushall", -1, WRITE_SLOW, (0, 0, 0), "server", "1.0.0", "Removes all keys from all databases.", run::flush),
    command!("flushdb", -1, WRITE_SLOW, (0, 0, 0), "server", "1.0.0", "Remove all keys from the current database.", run::flush),
];

/// Commands that exist only while replaying a log (see `snapshot`).
#[rustfmt::skip]
pub(crate) const REPLAY_COMMANDS: &[Command] = &[
    command!("weir.streammeta", 6, WRITE_SLOW, (1, 1, 1), "stream", "0.1.0", "Restores a stream's counters from a snapshot.", run::replay_stream_meta),
    command!("weir.consumer", 6, WRITE_SLOW, (1, 1, 1), "stream", "0.1.0", "Restores a consumer from a snapshot.", run::replay_consumer),
    command!("weir.pending", 7, WRITE_SLOW, (1, 1, 1), "stream", "0.1.0", "Restores a pending entry from a snapshot.", run::replay_pending),
];

/// The command named `name` (any case); replay-only commands only while
/// replaying.
pub(crate) fn find(name: &[u8], replaying: bool) -> Option<&'static Command> {
    let named = |command: &&Command| name.eq_ignore_ascii_case(command.info.name.as_bytes());
    COMMANDS.iter().find(named).or_else(|| {
        replaying
            .then(|| REPLAY_COMMANDS.iter().find(named))
            .flatten()
    })
}

/// Every command the engine runs, as a server lists and checks them.
pub fn commands() -> impl Iterator<Item = &'static CommandInfo> {
    COMMANDS.iter().map(|command| &command.info)
}

/// The engine's command named `name` (any case).
pub fn command(name: &[u8]) -> Option<&'static CommandInfo> {
    find(name, false).map(|command| &command.info)
}

/// Whether the engine implements `name`.
pub fn is_stream_command(name: &[u8]) -> bool {
    command(name).is_some()
}

/// The commands that change state (and so are refused when the log
/// cannot be written).
pub fn is_write_command(name: &[u8]) -> bool {
    command(name).is_some_and(CommandInfo::writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_and_unique() {
        let mut names: Vec<&str> = COMMANDS
            .iter()
            .chain(REPLAY_COMMANDS)
            .map(|command| command.info.name)
            .collect();
        assert!(names.iter().all(|name| *name == name.to_ascii_lowercase()));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len() + REPLAY_COMMANDS.len());
    }

    #[test]
    fn the_writes_are_redis_s() {
        let writes: Vec<&str> = commands()
            .filter(|info| info.writes())
            .map(|info| info.name)
            .collect();
        assert_eq!(
            writes,
            [
                "xadd",
                "xreadgroup",
                "xgroup",
                "xsetid",
                "xack",
                "xclaim",
                "xautoclaim",
                "xdel",
                "xtrim",
                "del",
                "unlink",
                "flushall",
                "flushdb"
            ]
        );
        assert!(is_write_command(b"XGROUP") && !is_write_command(b"xinfo"));
    }
}
