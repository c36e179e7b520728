//! Introspection and administration: CLIENT, CONFIG and INFO.

use std::fmt::Write as _;

use weir_stream::pubsub::glob_match;
use weir_stream::{Error, NodeLimits, Reply};

use crate::config::{fsync_name, parse_fsync};
use crate::node::{ClientEntry, Node, State};
use crate::session::{help, unknown_subcommand, Response, Session, REDIS_VERSION};

/// Checks a client name (CLIENT SETNAME, HELLO SETNAME): printable ASCII,
/// no spaces.
pub fn valid_client_name(name: &[u8]) -> Result<(), Error> {
    if name.iter().all(|byte| (b'!'..=b'~').contains(byte)) {
        Ok(())
    } else {
        Err(Error::fixed(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

fn text_reply(session: &Session, text: String) -> Reply {
    if session.resp == 3 {
        Reply::Verbatim("txt", text.into_bytes())
    } else {
        Reply::Bulk(text.into_bytes())
    }
}

/// One line of CLIENT LIST (Redis's fields; memory figures weir does not
/// track per client are 0).
fn client_line(id: u64, entry: &ClientEntry, now_ms: u64, out: &mut String) {
    let mut flags = String::new();
    if entry.subscriptions > 0 {
        flags.push('P');
    }
    if entry.blocked {
        flags.push('b');
    }
    if entry.multi.is_some() {
        flags.push('x');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let _ = writeln!(
        out,
        "id={id} addr={} laddr={} fd=-1 name={} age={} idle={} flags={flags} db=0 sub={} psub=0 ssub=0 multi={} watch={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll={} omem={} tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
        entry.addr,
        entry.laddr,
        String::from_utf8_lossy(&entry.name),
        now_ms.saturating_sub(entry.created_ms) / 1000,
        now_ms.saturating_sub(entry.last_ms) / 1000,
        entry.subscriptions,
        entry.multi.map_or(-1, |queued| queued as i64),
        entry.watched.len(),
        entry.inbox.len(),
        entry.inbox_bytes,
        if entry.last_command.is_empty() { "NULL" } else { &entry.last_command },
        entry.resp,
        String::from_utf8_lossy(&entry.lib_name),
        String::from_utf8_lossy(&entry.lib_ver),
    );
}

fn parse_u64(arg: &[u8]) -> Option<u64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// CLIENT and its subcommands.
pub fn client(session: &mut Session, node: &Node, state: &mut State, args: &[&[u8]]) -> Response {
    let sub = args[1];
    let is = |word: &str| sub.eq_ignore_ascii_case(word.as_bytes());
    let now = node.clock.now_ms();
    if is("ID") && args.len() == 2 {
        Reply::Integer(session.id as i64).into()
    } else if is("SETNAME") && args.len() == 3 {
        if let Err(error) = valid_client_name(args[2]) {
            return error.into();
        }
        if let Some(entry) = state.clients.get_mut(&session.id) {
            entry.name = args[2].to_vec();
        }
        Reply::OK.into()
    } else if is("GETNAME") && args.len() == 2 {
        match state.clients.get(&session.id) {
            Some(entry) if !entry.name.is_empty() => Reply::Bulk(entry.name.clone()).into(),
            _ => Reply::NullBulk.into(),
        }
    } else if is("SETINFO") && args.len() == 4 {
        let value = args[3];
        if value.iter().any(|byte| !(b'!'..=b'~').contains(byte)) {
            return Error::err(format_args!(
                "{} cannot contain spaces, newlines or special characters.",
                String::from_utf8_lossy(args[2]).to_ascii_lowercase()
            ))
            .into();
        }
        let Some(entry) = state.clients.get_mut(&session.id) else {
            return Reply::OK.into();
        };
        if args[2].eq_ignore_ascii_case(b"LIB-NAME") {
            entry.lib_name = value.to_vec();
        } else if args[2].eq_ignore_ascii_case(b"LIB-VER") {
            entry.lib_ver = value.to_vec();
        } else {
            return Error::err(format_args!(
                "Unrecognized option '{}'",
                String::from_utf8_lossy(args[2])
            ))
            .into();
        }
        Reply::OK.into()
    } else if is("LIST") {
        client_list(session, state, args, now)
    } else if is("INFO") && args.len() == 2 {
        let mut line = String::new();
        if let Some(entry) = state.clients.get(&session.id) {
            client_line(session.id, entry, now, &mut line);
        }
        text_reply(session, line).into()
    } else if is("KILL") && args.len() >= 3 {
        client_kill(session, state, args, now)
    } else if is("UNBLOCK") && (args.len() == 3 || args.len() == 4) {
        client_unblock(state, args)
    } else if (is("NO-EVICT") || is("NO-TOUCH")) && args.len() == 3 {
        if args[2].eq_ignore_ascii_case(b"ON") || args[2].eq_ignore_ascii_case(b"OFF") {
            Reply::OK.into()
        } else {
            Error::SYNTAX.into()
        }
    } else if is("HELP") && args.len() == 2 {
        help(
            "CLIENT",
            &[
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "KILL <ip:port>",
                "    Kill connection made from <ip:port>.",
                "KILL <option> <value> [<option> <value> [...]]",
                "    Kill connections. Options are: ID, ADDR, LADDR, TYPE (normal|pubsub), USER, SKIPME (yes|no), MAXAGE.",
                "LIST [TYPE (normal|pubsub)] [ID <id> [<id> ...]]",
                "    Return information about client connections.",
                "UNBLOCK <clientid> [TIMEOUT|ERROR]",
                "    Unblock the specified blocked client.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "SETINFO <option> <value>",
                "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
            ],
        )
    } else if crate::table::subcommand(crate::table::lookup(b"client").expect("in the table"), sub)
        .is_some()
    {
        Error::arity(&format!(
            "client|{}",
            String::from_utf8_lossy(sub).to_ascii_lowercase()
        ))
        .into()
    } else {
        unknown_subcommand(sub, "CLIENT")
    }
}

fn client_list(session: &Session, state: &State, args: &[&[u8]], now: u64) -> Response {
    let mut kind: Option<Vec<u8>> = None;
    let mut ids: Option<Vec<u64>> = None;
    let mut index = 2;
    while index < args.len() {
        if args[index].eq_ignore_ascii_case(b"TYPE") && index + 1 < args.len() {
            let value = args[index + 1].to_ascii_lowercase();
            if !matches!(
                &value[..],
                b"normal" | b"pubsub" | b"master" | b"replica" | b"slave"
            ) {
                return Error::err(format_args!(
                    "Unknown client type '{}'",
                    String::from_utf8_lossy(args[index + 1])
                ))
                .into();
            }
            kind = Some(value);
            index += 2;
        } else if args[index].eq_ignore_ascii_case(b"ID") && index + 1 < args.len() {
            let mut list = Vec::new();
            for arg in &args[index + 1..] {
                match parse_u64(arg) {
                    Some(id) if id > 0 => list.push(id),
                    _ => return Error::fixed("ERR Invalid client ID").into(),
                }
            }
            ids = Some(list);
            index = args.len();
        } else {
            return Error::SYNTAX.into();
        }
    }
    let mut text = String::new();
    for (id, entry) in &state.clients {
        let matches_kind = match kind.as_deref() {
            None => true,
            Some(b"pubsub") => entry.subscriptions > 0,
            Some(b"normal") => entry.subscriptions == 0,
            Some(_) => false,
        };
        let matches_id = ids.as_ref().is_none_or(|ids| ids.contains(id));
        if matches_kind && matches_id {
            client_line(*id, entry, now, &mut text);
        }
    }
    text_reply(session, text).into()
}

fn client_kill(session: &mut Session, state: &mut State, args: &[&[u8]], now: u64) -> Response {
    if args.len() == 3 {
        // The old form: CLIENT KILL ip:port.
        let addr = String::from_utf8_lossy(args[2]).into_owned();
        let target = state
            .clients
            .iter()
            .find(|(_, entry)| entry.addr.to_string() == addr)
            .map(|(id, _)| *id);
        return match target {
            Some(id) => {
                kill(session, state, id);
                Reply::OK.into()
            }
            None => Error::fixed("ERR No such client").into(),
        };
    }
    let mut id: Option<u64> = None;
    let mut addr: Option<String> = None;
    let mut laddr: Option<String> = None;
    let mut kind: Option<Vec<u8>> = None;
    let mut skip_me = true;
    let mut max_age: Option<u64> = None;
    let mut index = 2;
    while index + 1 < args.len() {
        let (option, value) = (args[index], args[index + 1]);
        if option.eq_ignore_ascii_case(b"ID") {
            match parse_u64(value) {
                Some(parsed) if parsed > 0 => id = Some(parsed),
                _ => return Error::fixed("ERR client-id should be greater than 0").into(),
            }
        } else if option.eq_ignore_ascii_case(b"ADDR") {
            addr = Some(String::from_utf8_lossy(value).into_owned());
        } else if option.eq_ignore_ascii_case(b"LADDR") {
            laddr = Some(String::from_utf8_lossy(value).into_owned());
        } else if option.eq_ignore_ascii_case(b"TYPE") {
            let value = value.to_ascii_lowercase();
            if !matches!(
                &value[..],
                b"normal" | b"pubsub" | b"master" | b"replica" | b"slave"
            ) {
                return Error::err(format_args!(
                    "Unknown client type '{}'",
                    String::from_utf8_lossy(args[index + 1])
                ))
                .into();
            }
            kind = Some(value);
        } else if option.eq_ignore_ascii_case(b"USER") {
            if !value.eq_ignore_ascii_case(b"default") {
                return Error::err(format_args!(
                    "No such user '{}'",
                    String::from_utf8_lossy(value)
                ))
                .into();
            }
        } else if option.eq_ignore_ascii_case(b"SKIPME") {
            if value.eq_ignore_ascii_case(b"yes") {
                skip_me = true;
            } else if value.eq_ignore_ascii_case(b"no") {
                skip_me = false;
            } else {
                return Error::SYNTAX.into();
            }
        } else if option.eq_ignore_ascii_case(b"MAXAGE") {
            match parse_u64(value) {
                Some(parsed) => max_age = Some(parsed),
                None => return Error::NOT_AN_INTEGER.into(),
            }
        } else {
            return Error::SYNTAX.into();
        }
        index += 2;
    }
    if index != args.len() {
        return Error::SYNTAX.into();
    }
    let targets: Vec<u64> = state
        .clients
        .iter()
        .filter(|(client, entry)| {
            id.is_none_or(|id| id == **client)
                && addr
                    .as_ref()
                    .is_none_or(|addr| entry.addr.to_string() == *addr)
                && laddr
                    .as_ref()
                    .is_none_or(|laddr| entry.laddr.to_string() == *laddr)
                && kind.as_deref().is_none_or(|kind| match kind {
                    b"pubsub" => entry.subscriptions > 0,
                    b"normal" => entry.subscriptions == 0,
                    _ => false,
                })
                && max_age.is_none_or(|age| now.saturating_sub(entry.created_ms) / 1000 >= age)
                && !(skip_me && **client == session.id)
        })
        .map(|(client, _)| *client)
        .collect();
    for target in &targets {
        kill(session, state, *target);
    }
    Reply::Integer(targets.len() as i64).into()
}

fn kill(session: &mut Session, state: &mut State, target: u64) {
    if target == session.id {
        session.close = true;
        return;
    }
    if let Some(entry) = state.clients.get_mut(&target) {
        entry.killed = Some("CLIENT KILL");
        entry.notify.notify_one();
    }
}

fn client_unblock(state: &mut State, args: &[&[u8]]) -> Response {
    let Some(target) = parse_u64(args[2]) else {
        return Error::NOT_AN_INTEGER.into();
    };
    let with_error = match args.get(3) {
        None => false,
        Some(mode) if mode.eq_ignore_ascii_case(b"TIMEOUT") => false,
        Some(mode) if mode.eq_ignore_ascii_case(b"ERROR") => true,
        Some(_) => {
            return Error::fixed("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR").into()
        }
    };
    if !state.db.engine().unblock(target) {
        return Reply::Integer(0).into();
    }
    if let Some(entry) = state.clients.get_mut(&target) {
        entry.blocked = false;
        entry.inbox.push(if with_error {
            Reply::Error(Error::fixed(
                "UNBLOCKED client unblocked via CLIENT UNBLOCK",
            ))
        } else {
            Reply::NullArray
        });
        entry.notify.notify_one();
    }
    Reply::Integer(1).into()
}

/// Parses a CONFIG value and, when the flag is true, applies it.
type Setter = fn(&mut State, &str, bool) -> Result<(), String>;

/// A CONFIG parameter.
struct Param {
    name: &'static str,
    get: fn(&Node, &mut State) -> String,
    /// Parses a value and, when `apply`, sets it. `None`: immutable.
    set: Option<Setter>,
}

fn parse_size(value: &str) -> Result<usize, String> {
    let lower = value.to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => lower.split_at(at),
        None => (lower.as_str(), ""),
    };
    let number: usize = digits
        .parse()
        .map_err(|_| "argument must be a memory value".to_string())?;
    let multiplier = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return Err("argument must be a memory value".into()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| "argument must be a memory value".to_string())
}

fn parse_number(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| "argument couldn't be parsed into an integer".to_string())
}

fn node_limits(state: &mut State) -> NodeLimits {
    state.db.engine().config().node_limits
}

const PARAMS: &[Param] = &[
    Param {
        name: "appendonly",
        get: |node, _| {
            if node.settings.appendonly {
                "yes"
            } else {
                "no"
            }
            .into()
        },
        set: None,
    },
    Param {
        name: "appendfsync",
        get: |node, state| match state.db.store() {
            Some(store) => fsync_name(store.policy()).into(),
            None => node.settings.appendfsync.clone(),
        },
        set: Some(|state, value, apply| {
            let policy = parse_fsync(value).map_err(|_| {
                "argument(s) must be one of the following: always, everysec, no".to_string()
            })?;
            if let (true, Some(store)) = (apply, state.db.store()) {
                store.set_policy(policy);
            }
            Ok(())
        }),
    },
    Param {
        name: "requirepass",
        get: |_, state| String::from_utf8_lossy(&state.runtime.requirepass).into_owned(),
        set: Some(|state, value, apply| {
            if apply {
                state.runtime.requirepass = value.as_bytes().to_vec();
            }
            Ok(())
        }),
    },
    Param {
        name: "maxclients",
        get: |_, state| state.runtime.maxclients.to_string(),
        set: Some(|state, value, apply| {
            let clients = parse_number(value)?;
            if clients == 0 {
                return Err("argument must be between 1 and 4294967295 inclusive".into());
            }
            if apply {
                state.runtime.maxclients = clients as usize;
            }
            Ok(())
        }),
    },
    Param {
        name: "timeout",
        get: |_, state| state.runtime.timeout.to_string(),
        set: Some(|state, value, apply| {
            let timeout = parse_number(value)?;
            if apply {
                state.runtime.timeout = timeout;
            }
            Ok(())
        }),
    },
    Param {
        name: "stream-node-max-entries",
        get: |_, state| node_limits(state).max_entries.to_string(),
        set: Some(|state, value, apply| {
            let mut limits = node_limits(state);
            limits.max_entries = parse_number(value)?;
            if apply {
                state.db.engine().set_node_limits(limits);
            }
            Ok(())
        }),
    },
    Param {
        name: "stream-node-max-bytes",
        get: |_, state| node_limits(state).max_bytes.to_string(),
        set: Some(|state, value, apply| {
            let mut limits = node_limits(state);
            limits.max_bytes = parse_size(value)? as u64;
            if apply {
                state.db.engine().set_node_limits(limits);
            }
            Ok(())
        }),
    },
    Param {
        name: "proto-max-bulk-len",
        get: |_, state| state.runtime.proto_max_bulk_len.to_string(),
        set: Some(|state, value, apply| {
            let size = parse_size(value)?;
            if size < 1024 {
                return Err(
                    "argument must be between 1024 and 9223372036854775807 inclusive".into(),
                );
            }
            if apply {
                state.runtime.proto_max_bulk_len = size;
            }
            Ok(())
        }),
    },
    Param {
        name: "client-query-buffer-limit",
        get: |_, state| state.runtime.client_query_buffer_limit.to_string(),
        set: Some(|state, value, apply| {
            let size = parse_size(value)?;
            if size < 1024 * 1024 {
                return Err(
                    "argument must be between 1048576 and 9223372036854775807 inclusive".into(),
                );
            }
            if apply {
                state.runtime.client_query_buffer_limit = size;
            }
            Ok(())
        }),
    },
    Param {
        name: "client-output-buffer-limit",
        get: |_, state| {
            let pubsub = state.runtime.pubsub_limits;
            format!(
                "normal {} 0 0 slave 0 0 0 pubsub {} {} {}",
                state.runtime.client_output_limit,
                pubsub.hard_bytes,
                pubsub.soft_bytes,
                pubsub.soft_seconds
            )
        },
        set: Some(|state, value, apply| {
            let words: Vec<&str> = value.split_whitespace().collect();
            if words.is_empty() || !words.len().is_multiple_of(4) {
                return Err("Wrong number of arguments in buffer limit configuration.".into());
            }
            let mut runtime = state.runtime.clone();
            for class in words.chunks(4) {
                let hard = parse_size(class[1])?;
                let soft = parse_size(class[2])?;
                let seconds = parse_number(class[3])?;
                match class[0].to_ascii_lowercase().as_str() {
                    "normal" => {
                        runtime.client_output_limit = if hard == 0 { usize::MAX } else { hard }
                    }
                    "pubsub" => {
                        runtime.pubsub_limits = weir_stream::pubsub::Limits {
                            hard_bytes: hard,
                            soft_bytes: soft,
                            soft_seconds: seconds,
                        }
                    }
                    "slave" | "replica" => {}
                    _ => {
                        return Err(
                            "Invalid client class specified in buffer limit configuration.".into(),
                        )
                    }
                }
            }
            if apply {
                let limits = runtime.pubsub_limits;
                state.runtime = runtime;
                state.db.engine().pubsub().set_limits(limits);
            }
            Ok(())
        }),
    },
    Param {
        name: "dir",
        get: |node, _| node.settings.data_dir.display().to_string(),
        set: None,
    },
    Param {
        name: "bind",
        get: |node, _| {
            let addr = &node.settings.resp_addr;
            addr.rsplit_once(':')
                .map_or(addr.clone(), |(host, _)| host.to_string())
        },
        set: None,
    },
    Param {
        name: "port",
        get: |node, _| {
            weir_io::sync::lock(&node.resp_addr)
                .map_or(0, |addr| addr.port())
                .to_string()
        },
        set: None,
    },
    Param {
        name: "save",
        get: |_, _| String::new(),
        set: Some(|_, value, _| {
            if value.trim().is_empty() {
                Ok(())
            } else {
                Err("weir has no RDB snapshots; only \"\" is accepted".into())
            }
        }),
    },
    Param {
        name: "databases",
        get: |_, _| "1".into(),
        set: None,
    },
    Param {
        name: "loglevel",
        get: |node, _| node.settings.log_level.clone(),
        set: None,
    },
    Param {
        name: "maxmemory",
        get: |_, _| "0".into(),
        set: None,
    },
    Param {
        name: "compatibility",
        get: |node, _| node.settings.compatibility.clone(),
        set: None,
    },
];

/// CONFIG and its subcommands.
pub fn config(node: &Node, state: &mut State, args: &[&[u8]]) -> Response {
    let sub = args[1];
    if sub.eq_ignore_ascii_case(b"GET") && args.len() >= 3 {
        let mut pairs = Vec::new();
        for param in PARAMS {
            let wanted = args[2..].iter().any(|pattern| {
                glob_match(&pattern.to_ascii_lowercase(), param.name.as_bytes(), false)
            });
            if wanted {
                pairs.push((
                    Reply::bulk(param.name),
                    Reply::bulk((param.get)(node, state)),
                ));
            }
        }
        Reply::Map(pairs).into()
    } else if sub.eq_ignore_ascii_case(b"SET") && args.len() >= 4 && args.len().is_multiple_of(2) {
        config_set(state, args)
    } else if sub.eq_ignore_ascii_case(b"RESETSTAT") && args.len() == 2 {
        state.stats = crate::node::Stats::default();
        Reply::OK.into()
    } else if sub.eq_ignore_ascii_case(b"HELP") && args.len() == 2 {
        help(
            "CONFIG",
            &[
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>",
                "    Set the configuration <directive> to <value>.",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
            ],
        )
    } else if sub.eq_ignore_ascii_case(b"SET") {
        Error::arity("config|set").into()
    } else if sub.eq_ignore_ascii_case(b"GET") {
        Error::arity("config|get").into()
    } else {
        unknown_subcommand(sub, "CONFIG")
    }
}

fn config_set(state: &mut State, args: &[&[u8]]) -> Response {
    let mut changes = Vec::new();
    for pair in args[2..].chunks(2) {
        let name = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
        let Some(param) = PARAMS.iter().find(|param| param.name == name) else {
            return Error::err(format_args!(
                "Unknown option or number of arguments for CONFIG SET - '{name}'"
            ))
            .into();
        };
        let Some(set) = param.set else {
            return Error::err(format_args!(
                "CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
            ))
            .into();
        };
        changes.push((name, set, String::from_utf8_lossy(pair[1]).into_owned()));
    }
    // Check every value first, so that a bad one changes nothing (Redis
    // applies all or none).
    for apply in [false, true] {
        for (name, set, value) in &changes {
            if let Err(reason) = set(state, value, apply) {
                return Error::err(format_args!(
                    "CONFIG SET failed (possibly related to argument '{name}') - {reason}"
                ))
                .into();
            }
            if apply {
                tracing::info!(parameter = %name, "CONFIG SET");
            }
        }
    }
    Reply::OK.into()
}

/// INFO: the sections asked for (as Redis: the default ones when none is
/// named, or `default`; `all` and `everything` add `commandstats`).
pub fn info(session: &Session, node: &Node, state: &mut State, args: &[&[u8]]) -> Response {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|arg| String::from_utf8_lossy(arg).to_ascii_lowercase())
        .collect();
    let every = wanted
        .iter()
        .any(|section| matches!(section.as_str(), "all" | "everything"));
    let default = wanted.is_empty() || every || wanted.iter().any(|section| section == "default");
    let show = |section: &str| {
        let extra = section == "commandstats";
        (default && !extra) || (extra && every) || wanted.iter().any(|wanted| wanted == section)
    };
    let now = node.clock.now_ms();
    let mut text = String::new();
    if show("server") {
        let addr = *weir_io::sync::lock(&node.resp_addr);
        let _ = write!(
            text,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nweir_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutable:weir\r\nconfig_file:\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            addr.map_or(0, |addr| addr.port()),
            now.saturating_sub(node.started_ms) / 1000,
            now.saturating_sub(node.started_ms) / 86_400_000,
        );
    }
    if show("clients") {
        let blocked = state.clients.values().filter(|entry| entry.blocked).count();
        let pubsub = state
            .clients
            .values()
            .filter(|entry| entry.subscriptions > 0)
            .count();
        let watching = state
            .clients
            .values()
            .filter(|entry| !entry.watched.is_empty())
            .count();
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{blocked}\r\npubsub_clients:{pubsub}\r\nwatching_clients:{watching}\r\nwatched_keys:{}\r\n\r\n",
            state.clients.len(),
            state.runtime.maxclients,
            state.watchers.len(),
        );
    }
    if show("memory") {
        let engine = state.db.engine();
        let keys: Vec<Vec<u8>> = engine.keys().map(<[u8]>::to_vec).collect();
        let used: usize = keys.iter().filter_map(|key| engine.memory_usage(key)).sum();
        let _ = write!(
            text,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{:.2}M\r\nused_memory_dataset:{used}\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\r\n",
            used as f64 / (1024.0 * 1024.0),
        );
    }
    if show("persistence") {
        let error = state.last_write_error.clone();
        let (enabled, size, synced, rewriting, policy) = match state.db.store() {
            Some(store) => (
                1,
                store.log_bytes(),
                store.synced_bytes(),
                u8::from(store.rewrite_in_progress()),
                fsync_name(store.policy()),
            ),
            None => (0, 0, 0, 0, "no"),
        };
        let recovery = node.recovery.as_ref();
        let changes = state
            .db
            .engine()
            .stats()
            .changes
            .saturating_sub(state.changes_at_start);
        let _ = write!(
            text,
            "# Persistence\r\nloading:0\r\naof_enabled:{enabled}\r\naof_rewrite_in_progress:{rewriting}\r\naof_last_write_status:{}\r\naof_current_size:{size}\r\naof_synced_size:{synced}\r\nappendfsync:{policy}\r\nrdb_changes_since_last_save:{changes}\r\nrdb_bgsave_in_progress:0\r\nrecovered_commands:{}\r\nrecovered_torn_tail_bytes:{}\r\n\r\n",
            if error.is_some() { "err" } else { "ok" },
            recovery.map_or(0, |recovery| recovery.commands),
            recovery
                .and_then(|recovery| recovery.truncated.as_ref())
                .map_or(0, |cut| cut.1),
        );
    }
    if show("stats") {
        let pubsub = state.db.engine().pubsub();
        let (channels, patterns, dropped) = (
            pubsub.channel_count(),
            pubsub.pattern_count(),
            pubsub.dropped(),
        );
        let stats = &state.stats;
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\npubsub_channels:{channels}\r\npubsub_patterns:{patterns}\r\npubsub_clients_dropped:{dropped}\r\nclient_query_buffer_limit_disconnections:{}\r\nclient_output_buffer_limit_disconnections:{}\r\ntotal_error_replies:{}\r\nprotocol_errors:{}\r\n\r\n",
            stats.connections_received,
            stats.commands,
            stats.net_input_bytes,
            stats.net_output_bytes,
            stats.rejected_connections,
            stats.query_buffer_disconnections,
            stats.output_buffer_disconnections,
            stats.error_replies,
            stats.protocol_errors,
        );
    }
    if show("replication") {
        text.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if show("commandstats") {
        text.push_str("# Commandstats\r\n");
        for (name, stat) in &state.stats.commands_by_name {
            let per_call = match stat.calls {
                0 => 0.0,
                calls => stat.usec as f64 / calls as f64,
            };
            let _ = write!(
                text,
                "cmdstat_{name}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
                stat.calls, stat.usec, stat.rejected_calls, stat.failed_calls
            );
        }
        text.push_str("\r\n");
    }
    if show("errorstats") {
        text.push_str("# Errorstats\r\n");
        for (code, count) in &state.stats.errors {
            let _ = write!(text, "errorstat_{code}:count={count}\r\n");
        }
        text.push_str("\r\n");
    }
    if show("keyspace") {
        text.push_str("# Keyspace\r\n");
        let keys = state.db.engine().key_count();
        if keys > 0 {
            let _ = write!(text, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
        }
        text.push_str("\r\n");
    }
    while text.ends_with("\r\n\r\n") {
        text.truncate(text.len() - 2);
    }
    text_reply(session, text).into()
}
