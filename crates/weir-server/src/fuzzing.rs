//! Entry points of the server's fuzz targets (`fuzz/fuzz_targets/`), plain
//! functions so that `cargo test` replays the committed corpus through
//! them too.
//!
//! - [`resp_request`]: the request parser on any bytes, fed whole and in
//!   chunks of every size the input picks: it must never panic, and the
//!   requests and the error must not depend on how the bytes arrived.
//! - [`resp_session`]: any bytes sent by two clients to a node (in memory,
//!   or with its command log on a simulated disk), through the real command
//!   handlers: nothing panics, every write settles, and the log the node
//!   wrote recovers.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Notify;
use weir_io::{Clock, ManualClock, SimStorage, Storage};

use crate::commands::{self, Session};
use crate::config::Settings;
use crate::node::Node;
use crate::resp::{self, Limits};

/// Limits small enough for the fuzzer to reach them.
fn fuzz_limits() -> Limits {
    Limits {
        max_bulk_bytes: 4096,
        max_arguments: 64,
        max_query_buffer_bytes: 1 << 20,
        ..Limits::default()
    }
}

/// The parser on `data`: the first byte picks a chunk size.
pub fn resp_request(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let limits = fuzz_limits();
    let whole = resp::parse_all(input, input.len().max(1), limits);
    let chunked = resp::parse_all(input, usize::from(first % 17) + 1, limits);
    assert_eq!(
        whole, chunked,
        "the result depends on how the bytes arrived"
    );
    for request in &whole.0 {
        assert!(!request.is_empty(), "an empty request was returned");
        assert!(request.len() <= limits.max_arguments);
        for arg in request {
            assert!(arg.len() <= limits.max_bulk_bytes);
        }
    }
}

/// Two clients' bytes through a node: the first byte picks the setup
/// (persistence, protocol), then each request goes to client A or B by its
/// position, and time moves between requests so blocked reads time out.
pub fn resp_session(data: &[u8]) {
    let Some((&setup, input)) = data.split_first() else {
        return;
    };
    let (requests, _) = resp::parse_all(input, input.len().max(1), fuzz_limits());
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let persistent = setup & 1 == 1;
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(u64::from(setup)));
    let settings = Settings {
        appendonly: persistent,
        appendfsync: if setup & 2 == 0 { "always" } else { "everysec" }.into(),
        stream_node_max_entries: u64::from(setup >> 4) + 1,
        ..Settings::default()
    };
    let open = |settings: Settings| {
        Node::open(
            settings,
            Some(Arc::clone(&storage)),
            Arc::clone(&clock) as Arc<dyn Clock>,
        )
        .expect("a node opens on a clean or recovered disk")
    };
    let node = open(settings.clone());
    let addr: SocketAddr = "127.0.0.1:50000".parse().expect("address");
    let laddr: SocketAddr = "127.0.0.1:6379".parse().expect("address");
    let mut sessions = Vec::new();
    {
        let mut state = node.lock();
        for _ in 0..2 {
            let id = state
                .register_client(addr, laddr, clock.now_ms(), Arc::new(Notify::new()))
                .expect("room for two clients");
            sessions.push(Session::new(id, true));
        }
    }
    let mut out = Vec::new();
    for (position, request) in requests.iter().enumerate() {
        let session = &mut sessions[position % 2];
        if session.close {
            continue;
        }
        let argv: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
        let mut state = node.lock();
        if !session.blocked {
            commands::run(session, &node, &mut state, &argv, &mut out);
        }
        clock.advance(u64::from(setup % 7) * 40);
        let now = clock.now_ms();
        state.db.engine().expire_blocked(now);
        let _ = state.db.tick();
        let _ = state.settle();
        for session in &mut sessions {
            let Some(entry) = state.clients.get_mut(&session.id) else {
                continue;
            };
            let replies = std::mem::take(&mut entry.inbox);
            entry.inbox_bytes = 0;
            if !replies.is_empty() {
                session.blocked = false;
                entry.blocked = false;
            }
            for reply in &replies {
                commands::emit(session, &mut state, reply, &mut out);
            }
            let messages = state.db.engine().pubsub().drain(session.id);
            for reply in commands::message_replies(messages) {
                session.encode(&reply, &mut out);
            }
        }
        out.clear();
    }
    if persistent {
        let _ = node.lock().db.commit();
        drop(node);
        // What the node wrote must recover.
        let _ = open(settings);
    }
}

/// Encodes a request as a RESP multibulk array.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Starting inputs for both targets: `(target, name, bytes)`.
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let sessions: &[(&str, u8, &[&[&str]])] = &[
        (
            "streams",
            0b0011_0001,
            &[
                &["XADD", "s", "*", "f", "v"],
                &["XADD", "s", "MAXLEN", "~", "10", "*", "a", "b"],
                &["XRANGE", "s", "-", "+", "COUNT", "2"],
                &["XREVRANGE", "s", "+", "-"],
                &["XLEN", "s"],
                &["XTRIM", "s", "MINID", "0-1"],
                &["XDEL", "s", "0-1"],
                &["XINFO", "STREAM", "s", "FULL"],
                &["XSETID", "s", "99999999999999-0"],
                &["TYPE", "s"],
                &["DEL", "s"],
            ],
        ),
        (
            "groups",
            0b0101_0011,
            &[
                &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c1",
                    "BLOCK",
                    "100",
                    "STREAMS",
                    "s",
                    ">",
                ],
                &["XADD", "s", "1-1", "f", "v"],
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c2",
                    "COUNT",
                    "1",
                    "STREAMS",
                    "s",
                    "0",
                ],
                &["XPENDING", "s", "g", "-", "+", "10"],
                &["XCLAIM", "s", "g", "c2", "0", "1-1", "JUSTID"],
                &["XAUTOCLAIM", "s", "g", "c2", "0", "0"],
                &["XACK", "s", "g", "1-1"],
                &["XINFO", "GROUPS", "s"],
                &["XINFO", "CONSUMERS", "s", "g"],
                &["XGROUP", "DELCONSUMER", "s", "g", "c1"],
                &["XGROUP", "DESTROY", "s", "g"],
            ],
        ),
        (
            "transactions",
            0b0000_0001,
            &[
                &["WATCH", "s"],
                &["MULTI"],
                &["XADD", "s", "*", "f", "v"],
                &["XLEN"],
                &["EXEC"],
                &["MULTI"],
                &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
                &["DISCARD"],
                &["FLUSHALL"],
                &["DBSIZE"],
            ],
        ),
        (
            "connection",
            0b0000_0010,
            &[
                &["HELLO", "3", "SETNAME", "me"],
                &["CLIENT", "SETINFO", "LIB-NAME", "fuzz"],
                &["CLIENT", "LIST"],
                &["CLIENT", "ID"],
                &["CONFIG", "SET", "stream-node-max-entries", "2"],
                &["CONFIG", "GET", "*"],
                &["INFO", "everything"],
                &["COMMAND", "DOCS", "xadd"],
                &["COMMAND", "INFO", "get"],
                &["SCAN", "0", "MATCH", "*", "COUNT", "1"],
                &["KEYS", "[a-z]*"],
                &["SELECT", "1"],
                &["RESET"],
            ],
        ),
        (
            "pubsub",
            0b0000_0000,
            &[
                &["SUBSCRIBE", "a", "b"],
                &["PSUBSCRIBE", "h?llo"],
                &["PUBLISH", "hello", "x"],
                &["PING"],
                &["PUBLISH", "a", "y"],
                &["PUBSUB", "NUMSUB", "a"],
                &["PUNSUBSCRIBE"],
                &["UNSUBSCRIBE"],
            ],
        ),
    ];
    let mut corpus = Vec::new();
    for (name, setup, requests) in sessions {
        let mut input = vec![*setup];
        for request in *requests {
            input.extend(encode(request));
        }
        corpus.push(("resp_session", (*name).to_string(), input.clone()));
        corpus.push(("resp_request", (*name).to_string(), input));
    }
    let inline = b"\x05PING\r\nXADD s * f \"v w\"\r\n*1\r\n$4\r\nPING\r\n\n".to_vec();
    corpus.push(("resp_request", "inline".into(), inline));
    corpus.push((
        "resp_request",
        "errors".into(),
        b"\x01*2\r\n$3\r\nGET\r\n$-1\r\n*abc\r\n".to_vec(),
    ));
    corpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_runs_stream_commands() {
        let mut input = vec![0b0001_0001];
        for command in [
            "*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$1\r\nf\r\n$1\r\nv\r\n",
            "*2\r\n$5\r\nMULTI\r\n",
            "XGROUP CREATE s g 0\r\n",
            "XREADGROUP GROUP g c BLOCK 10 STREAMS s >\r\n",
            "EXEC\r\n",
            "SUBSCRIBE ch\r\n",
            "PUBLISH ch hi\r\n",
        ] {
            input.extend_from_slice(command.as_bytes());
        }
        resp_session(&input);
        resp_request(&input);
    }

    #[test]
    fn the_seed_corpus_runs() {
        for (target, _, input) in seed_corpus() {
            match target {
                "resp_session" => resp_session(&input),
                _ => resp_request(&input),
            }
        }
    }
}
