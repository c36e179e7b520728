//! The real `weir` binary, driven over TCP by a minimal RESP client that
//! shows every reply's exact type: handshakes, stream commands in RESP2 and
//! RESP3, blocking reads woken by other clients, pub/sub, transactions,
//! authentication, malformed and oversized requests (the server keeps
//! serving everyone else), limits, restarts. The same behaviours are
//! checked with real Redis clients in `real_clients.rs`.

use std::time::{Duration, Instant};

mod common;
use common::{Server, Value};

fn ok() -> Value {
    Value::Simple("OK".into())
}

#[test]
fn handshake_and_connection_commands() {
    let server = Server::start(&[]);
    let mut client = server.client();
    assert_eq!(client.call(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(client.call(&["PING", "hi"]), Value::bulk("hi"));
    assert_eq!(client.call(&["ECHO", "x y"]), Value::bulk("x y"));
    let hello = client.call(&["HELLO", "3", "SETNAME", "tester"]);
    let Value::Map(fields) = &hello else {
        panic!("HELLO 3 replies with a map: {hello:?}");
    };
    assert!(fields.contains(&(Value::bulk("proto"), Value::Int(3))));
    assert!(fields.contains(&(Value::bulk("version"), Value::bulk("7.4.0"))));
    assert_eq!(client.call(&["CLIENT", "GETNAME"]), Value::bulk("tester"));
    let id = client.call(&["CLIENT", "ID"]).int();
    assert!(id > 0);
    assert_eq!(
        client.call(&["CLIENT", "SETINFO", "LIB-NAME", "weir-test"]),
        ok()
    );
    let list = client.call(&["CLIENT", "LIST"]);
    let Value::Verbatim(format, text) = &list else {
        panic!("RESP3 CLIENT LIST is verbatim text: {list:?}");
    };
    assert_eq!(format, "txt");
    let text = String::from_utf8_lossy(text);
    assert!(text.contains(&format!("id={id} ")), "{text}");
    assert!(
        text.contains("name=tester")
            && text.contains("lib-name=weir-test")
            && text.contains("resp=3"),
        "{text}"
    );
    assert_eq!(
        client.call(&["HELLO", "4"]),
        Value::Error("NOPROTO unsupported protocol version".into())
    );
    assert_eq!(client.call(&["SELECT", "0"]), ok());
    assert_eq!(
        client.call(&["SELECT", "1"]),
        Value::Error("ERR DB index is out of range".into())
    );
    assert_eq!(
        client.call(&["NOSUCH", "a"]),
        Value::Error("ERR unknown command 'NOSUCH', with args beginning with: 'a' ".into())
    );
    assert_eq!(
        client.call(&["ECHO"]),
        Value::Error("ERR wrong number of arguments for 'echo' command".into())
    );
    assert_eq!(
        client.call(&["CLIENT", "NOSUCH"]),
        Value::Error("ERR unknown subcommand 'NOSUCH'. Try CLIENT HELP.".into())
    );
    let count = client.call(&["COMMAND", "COUNT"]).int();
    assert!(count >= 50, "{count}");
    let info = client.call(&["COMMAND", "INFO", "xadd", "nosuch"]);
    let items = info.items();
    assert_eq!(items[0].items()[0], Value::bulk("xadd"));
    assert_eq!(items[0].items()[1], Value::Int(-5));
    assert_eq!(items[1], Value::Null);
    let docs = client.call(&["COMMAND", "DOCS", "xreadgroup"]);
    assert!(
        matches!(docs, Value::Map(ref pairs) if pairs.len() == 1),
        "{docs:?}"
    );
    let info = client.call(&["INFO"]).text();
    for field in [
        "redis_version:",
        "connected_clients:",
        "blocked_clients:0",
        "total_error_replies:",
        "aof_enabled:1",
        "used_memory:",
        "# Keyspace",
    ] {
        assert!(info.contains(field), "INFO lacks {field}: {info}");
    }
    assert!(info.contains("errorstat_ERR:count="), "{info}");
    assert_eq!(client.call(&["HELLO", "2"]).items().len(), 14);
    assert_eq!(client.call(&["RESET"]), Value::Simple("RESET".into()));
    assert_eq!(client.call(&["CLIENT", "GETNAME"]), Value::NullBulk);
    assert_eq!(client.call(&["QUIT"]), ok());
    assert!(client.is_closed());
}

#[test]
fn stream_commands_in_resp2_and_resp3() {
    let server = Server::start(&[]);
    let mut client = server.client();
    assert_eq!(
        client.call(&["XADD", "s", "1-1", "a", "1"]),
        Value::bulk("1-1")
    );
    assert_eq!(
        client.call(&["XADD", "s", "2-1", "b", "2"]),
        Value::bulk("2-1")
    );
    assert_eq!(client.call(&["XGROUP", "CREATE", "s", "g", "0"]), ok());
    let read = client.call(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "alice",
        "COUNT",
        "1",
        "STREAMS",
        "s",
        ">",
    ]);
    assert_eq!(
        read,
        Value::Array(vec![Value::Array(vec![
            Value::bulk("s"),
            Value::Array(vec![Value::Array(vec![
                Value::bulk("1-1"),
                Value::Array(vec![Value::bulk("a"), Value::bulk("1")])
            ])])
        ])])
    );
    assert_eq!(client.call(&["XRANGE", "s", "(1-1", "+"]).items().len(), 1);
    assert_eq!(
        client.call(&["XREAD", "STREAMS", "missing", "0"]),
        Value::NullArray
    );
    client.call(&["HELLO", "3"]);
    // RESP3: XREAD's reply is a map; a null is `_`.
    let read = client.call(&["XREAD", "STREAMS", "s", "1-1"]);
    assert!(
        matches!(&read, Value::Map(pairs) if pairs.len() == 1),
        "{read:?}"
    );
    assert_eq!(
        client.call(&["XREAD", "STREAMS", "missing", "0"]),
        Value::Null
    );
    let pending = client.call(&["XPENDING", "s", "g"]);
    assert_eq!(pending.items()[0], Value::Int(1));
    assert_eq!(client.call(&["XACK", "s", "g", "1-1"]), Value::Int(1));
    let info = client.call(&["XINFO", "STREAM", "s"]);
    assert!(matches!(&info, Value::Map(_)), "{info:?}");
    assert_eq!(client.call(&["XLEN", "s"]), Value::Int(2));
    assert_eq!(client.call(&["TYPE", "s"]), Value::Simple("stream".into()));
    assert_eq!(client.call(&["EXISTS", "s", "nope"]), Value::Int(1));
    assert_eq!(client.call(&["DBSIZE"]), Value::Int(1));
    assert!(client.call(&["MEMORY", "USAGE", "s"]).int() > 0);
    assert_eq!(client.call(&["DEL", "s"]), Value::Int(1));
    assert_eq!(client.call(&["DBSIZE"]), Value::Int(0));
}

#[test]
fn blocking_reads_are_woken_by_other_clients() {
    let server = Server::start(&[]);
    let mut reader = server.client();
    let mut writer = server.client();
    // XREAD BLOCK 0 on `$`, woken by an XADD.
    reader.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    std::thread::sleep(Duration::from_millis(100));
    let info = writer.call(&["INFO", "clients"]).text();
    assert!(info.contains("blocked_clients:1"), "{info}");
    writer.call(&["XADD", "s", "5-1", "f", "v"]);
    let woken = reader.read();
    assert_eq!(woken.items()[0].items()[0], Value::bulk("s"));
    // A timeout gives a null array.
    let started = Instant::now();
    assert_eq!(
        reader.call(&["XREAD", "BLOCK", "150", "STREAMS", "s", "$"]),
        Value::NullArray
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(140) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // XREADGROUP BLOCK is served by XADD; destroying the group wakes with
    // NOGROUP.
    writer.call(&["XGROUP", "CREATE", "s", "g", "$"]);
    reader.send(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "0",
        "STREAMS",
        "s",
        ">",
    ]);
    std::thread::sleep(Duration::from_millis(50));
    writer.call(&["XADD", "s", "6-1", "f", "v"]);
    assert_eq!(
        reader.read().items()[0].items()[1].items()[0].items()[0],
        Value::bulk("6-1")
    );
    reader.send(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "0",
        "STREAMS",
        "s",
        ">",
    ]);
    std::thread::sleep(Duration::from_millis(50));
    writer.call(&["XGROUP", "DESTROY", "s", "g"]);
    let error = reader.read();
    assert!(
        matches!(&error, Value::Error(text) if text.starts_with("NOGROUP")),
        "{error:?}"
    );
    // CLIENT UNBLOCK, with a timeout reply and with an error.
    let reader_id = reader.call(&["CLIENT", "ID"]).int().to_string();
    reader.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        writer.call(&["CLIENT", "UNBLOCK", &reader_id]),
        Value::Int(1)
    );
    assert_eq!(reader.read(), Value::NullArray);
    reader.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        writer.call(&["CLIENT", "UNBLOCK", &reader_id, "ERROR"]),
        Value::Int(1)
    );
    assert_eq!(
        reader.read(),
        Value::Error("UNBLOCKED client unblocked via CLIENT UNBLOCK".into())
    );
    assert_eq!(
        writer.call(&["CLIENT", "UNBLOCK", &reader_id]),
        Value::Int(0)
    );
    // Commands pipelined behind a blocked read run after it is served.
    reader.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    reader.send(&["PING"]);
    std::thread::sleep(Duration::from_millis(50));
    writer.call(&["XADD", "s", "7-1", "f", "v"]);
    assert_eq!(
        reader.read().items()[0].items()[1].items()[0].items()[0],
        Value::bulk("7-1")
    );
    assert_eq!(reader.read(), Value::Simple("PONG".into()));
    // A client that disconnects while blocked is forgotten.
    let mut gone = server.client();
    gone.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    std::thread::sleep(Duration::from_millis(50));
    drop(gone);
    std::thread::sleep(Duration::from_millis(100));
    let info = writer.call(&["INFO", "clients"]).text();
    assert!(info.contains("blocked_clients:0"), "{info}");
}

#[test]
fn pub_sub_with_patterns_in_both_protocols() {
    let server = Server::start(&[]);
    let mut subscriber = server.client();
    let mut publisher = server.client();
    assert_eq!(
        subscriber.call(&["SUBSCRIBE", "news", "sport"]),
        Value::Array(vec![
            Value::bulk("subscribe"),
            Value::bulk("news"),
            Value::Int(1)
        ])
    );
    assert_eq!(subscriber.read().items()[2], Value::Int(2));
    assert_eq!(
        subscriber.call(&["PSUBSCRIBE", "n*"]),
        Value::Array(vec![
            Value::bulk("psubscribe"),
            Value::bulk("n*"),
            Value::Int(3)
        ])
    );
    // RESP2 subscribed mode: only (P)(UN)SUBSCRIBE, PING, QUIT, RESET.
    assert_eq!(
        subscriber.call(&["XLEN", "s"]),
        Value::Error("ERR Can't execute 'xlen': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context".into())
    );
    assert_eq!(
        subscriber.call(&["PING"]),
        Value::Array(vec![Value::bulk("pong"), Value::bulk("")])
    );
    assert_eq!(publisher.call(&["PUBLISH", "news", "hello"]), Value::Int(2));
    assert_eq!(
        subscriber.read(),
        Value::Array(vec![
            Value::bulk("message"),
            Value::bulk("news"),
            Value::bulk("hello")
        ])
    );
    assert_eq!(
        subscriber.read(),
        Value::Array(vec![
            Value::bulk("pmessage"),
            Value::bulk("n*"),
            Value::bulk("news"),
            Value::bulk("hello")
        ])
    );
    assert_eq!(publisher.call(&["PUBLISH", "nobody", "x"]), Value::Int(1));
    assert_eq!(subscriber.read().items()[0], Value::bulk("pmessage"));
    assert_eq!(publisher.call(&["PUBLISH", "other", "x"]), Value::Int(0));
    assert_eq!(
        publisher.call(&["PUBSUB", "CHANNELS"]),
        Value::Array(vec![Value::bulk("news"), Value::bulk("sport")])
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "NUMSUB", "news", "x"]),
        Value::Array(vec![
            Value::bulk("news"),
            Value::Int(1),
            Value::bulk("x"),
            Value::Int(0)
        ])
    );
    assert_eq!(publisher.call(&["PUBSUB", "NUMPAT"]), Value::Int(1));
    // Unsubscribing from everything leaves subscribed mode.
    subscriber.send(&["UNSUBSCRIBE"]);
    let mut remaining = Vec::new();
    for _ in 0..2 {
        remaining.push(subscriber.read().items()[2].int());
    }
    assert_eq!(remaining, vec![2, 1]);
    assert_eq!(subscriber.call(&["PUNSUBSCRIBE"]).items()[2], Value::Int(0));
    assert_eq!(subscriber.call(&["XLEN", "s"]), Value::Int(0));
    // RESP3: pushes, and other commands allowed while subscribed.
    let mut resp3 = server.client();
    resp3.call(&["HELLO", "3"]);
    assert_eq!(
        resp3.call(&["SUBSCRIBE", "news"]),
        Value::Push(vec![
            Value::bulk("subscribe"),
            Value::bulk("news"),
            Value::Int(1)
        ])
    );
    assert_eq!(resp3.call(&["XLEN", "s"]), Value::Int(0));
    publisher.call(&["PUBLISH", "news", "pushed"]);
    assert_eq!(
        resp3.read(),
        Value::Push(vec![
            Value::bulk("message"),
            Value::bulk("news"),
            Value::bulk("pushed")
        ])
    );
}

#[test]
fn a_subscriber_that_does_not_read_is_dropped_not_the_server() {
    let server = Server::start(&["--pubsub-output-hard-limit", "100000"]);
    let mut slow = server.client();
    slow.call(&["SUBSCRIBE", "firehose"]);
    let mut publisher = server.client();
    let payload = "x".repeat(10_000);
    // The slow subscriber never reads: its socket buffers fill, then the
    // engine's queue passes the hard limit and it is disconnected.
    let mut published = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let receivers = publisher.call(&["PUBLISH", "firehose", &payload]).int();
        published += 1;
        if receivers == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never dropped after {published} messages"
        );
    }
    let info = publisher.call(&["INFO", "stats"]).text();
    assert!(info.contains("pubsub_clients_dropped:1"), "{info}");
    assert!(
        info.contains("client_output_buffer_limit_disconnections:1"),
        "{info}"
    );
    assert_eq!(publisher.call(&["PING"]), Value::Simple("PONG".into()));
}

#[test]
fn transactions_follow_redis_error_rules() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut other = server.client();
    assert_eq!(client.call(&["MULTI"]), ok());
    assert_eq!(
        client.call(&["XADD", "s", "1-1", "f", "v"]),
        Value::Simple("QUEUED".into())
    );
    assert_eq!(client.call(&["XLEN", "s"]), Value::Simple("QUEUED".into()));
    assert_eq!(
        client.call(&["XADD", "s", "0-1", "f", "v"]),
        Value::Simple("QUEUED".into())
    );
    assert_eq!(
        client.call(&["MULTI"]),
        Value::Error("ERR MULTI calls can not be nested".into())
    );
    let replies = client.call(&["EXEC"]);
    assert_eq!(replies.items()[0], Value::bulk("1-1"));
    assert_eq!(replies.items()[1], Value::Int(1));
    assert!(matches!(&replies.items()[2], Value::Error(text) if text.contains("equal or smaller")));
    // A command refused while queueing aborts EXEC.
    client.call(&["MULTI"]);
    assert!(matches!(client.call(&["NOSUCH"]), Value::Error(_)));
    assert!(matches!(client.call(&["XLEN"]), Value::Error(_)));
    assert_eq!(
        client.call(&["EXEC"]),
        Value::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(
        client.call(&["EXEC"]),
        Value::Error("ERR EXEC without MULTI".into())
    );
    assert_eq!(
        client.call(&["DISCARD"]),
        Value::Error("ERR DISCARD without MULTI".into())
    );
    client.call(&["MULTI"]);
    client.call(&["XADD", "s", "9-1", "f", "v"]);
    assert_eq!(client.call(&["DISCARD"]), ok());
    assert_eq!(client.call(&["XLEN", "s"]), Value::Int(1));
    // WATCH: a change by another client makes EXEC return null.
    assert_eq!(client.call(&["WATCH", "s"]), ok());
    other.call(&["XADD", "s", "2-1", "f", "v"]);
    client.call(&["MULTI"]);
    client.call(&["XLEN", "s"]);
    assert_eq!(client.call(&["EXEC"]), Value::NullArray);
    client.call(&["WATCH", "s"]);
    client.call(&["MULTI"]);
    client.call(&["XLEN", "s"]);
    assert_eq!(client.call(&["EXEC"]).items(), &[Value::Int(2)]);
    assert_eq!(
        {
            client.call(&["MULTI"]);
            client.call(&["WATCH", "s"])
        },
        Value::Error("ERR WATCH inside MULTI is not allowed".into())
    );
    client.call(&["DISCARD"]);
    // Blocking reads inside EXEC do not block; readers blocked elsewhere
    // are served after EXEC.
    let mut blocked = server.client();
    blocked.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    std::thread::sleep(Duration::from_millis(50));
    client.call(&["MULTI"]);
    client.call(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    client.call(&["XADD", "s", "3-1", "f", "v"]);
    let replies = client.call(&["EXEC"]);
    assert_eq!(replies.items()[0], Value::NullArray);
    assert_eq!(
        blocked.read().items()[0].items()[1].items()[0].items()[0],
        Value::bulk("3-1")
    );
}

#[test]
fn authentication_is_required_when_a_password_is_set() {
    let server = Server::start(&["--requirepass", "s3cret"]);
    let mut client = server.client();
    assert_eq!(
        client.call(&["XLEN", "s"]),
        Value::Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        client.call(&["AUTH", "wrong"]),
        Value::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(
        client.call(&["AUTH", "someone", "s3cret"]),
        Value::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert!(
        matches!(client.call(&["HELLO", "3"]), Value::Error(text) if text.starts_with("NOAUTH HELLO"))
    );
    assert_eq!(client.call(&["AUTH", "s3cret"]), ok());
    assert_eq!(client.call(&["XLEN", "s"]), Value::Int(0));
    let mut hello = server.client();
    let reply = hello.call(&["HELLO", "3", "AUTH", "default", "s3cret"]);
    assert!(matches!(reply, Value::Map(_)), "{reply:?}");
    assert_eq!(hello.call(&["XLEN", "s"]), Value::Int(0));
    // Before AUTH, a large request is a protocol error (Redis's limits).
    let mut big = server.client();
    big.send_raw(b"*2\r\n$4\r\nAUTH\r\n$100000\r\n").unwrap();
    assert_eq!(
        big.read(),
        Value::Error("ERR Protocol error: unauthenticated bulk length".into())
    );
    assert!(big.is_closed());
    // CONFIG SET requirepass changes it for new authentications.
    assert_eq!(
        client.call(&["CONFIG", "SET", "requirepass", "other"]),
        ok()
    );
    let mut late = server.client();
    assert!(matches!(late.call(&["AUTH", "s3cret"]), Value::Error(_)));
    assert_eq!(late.call(&["AUTH", "other"]), ok());
    let no_password = Server::start(&[]);
    assert!(matches!(
        no_password.client().call(&["AUTH", "x"]),
        Value::Error(text) if text.contains("without any password configured")
    ));
}

#[test]
fn malformed_and_oversized_requests_close_only_their_connection() {
    let server = Server::start(&["--proto-max-bulk-len", "2048"]);
    let mut bystander = server.client();
    bystander.call(&["XADD", "s", "1-1", "f", "v"]);
    let cases: &[(&[u8], &str)] = &[
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (
            b"*1\r\n+PING\r\n",
            "ERR Protocol error: expected '$', got '+'",
        ),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*1\r\n$4096\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"PING \"unclosed\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ];
    for (input, expected) in cases {
        let mut bad = server.client();
        bad.send_raw(input).unwrap();
        assert_eq!(bad.read(), Value::Error((*expected).into()), "{input:?}");
        assert!(bad.is_closed(), "{input:?}");
        assert_eq!(bystander.call(&["XLEN", "s"]), Value::Int(1));
    }
    // Binary garbage never crashes the server.
    let mut rng = 0x1234_5678_u64;
    for _ in 0..50 {
        let mut garbage = Vec::new();
        for _ in 0..200 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            garbage.push((rng >> 56) as u8);
        }
        let mut bad = server.client();
        let _ = bad.send_raw(&garbage);
        drop(bad);
    }
    // Inline commands work, as with telnet.
    let mut inline = server.client();
    inline.send_raw(b"XLEN s\r\nPING\n").unwrap();
    assert_eq!(inline.read(), Value::Int(1));
    assert_eq!(inline.read(), Value::Simple("PONG".into()));
    // The query buffer limit: a request that never ends is cut off.
    assert_eq!(
        bystander.call(&["CONFIG", "SET", "client-query-buffer-limit", "1mb"]),
        ok()
    );
    let mut hog = server.client();
    hog.send_raw(b"*2\r\n$4\r\nECHO\r\n$2000\r\n").unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < 4 << 20 {
        if hog.send_raw(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    assert!(hog.is_closed());
    assert_eq!(bystander.call(&["XLEN", "s"]), Value::Int(1));
    let info = bystander.call(&["INFO", "stats"]).text();
    assert!(info.contains("protocol_errors:"), "{info}");
}

#[test]
fn maxclients_refuses_extra_connections() {
    let server = Server::start(&["--maxclients", "2"]);
    let mut first = server.client();
    let _second = server.client();
    std::thread::sleep(Duration::from_millis(50));
    let mut third = server.client();
    assert_eq!(
        third.read(),
        Value::Error("ERR max number of clients reached".into())
    );
    assert_eq!(first.call(&["PING"]), Value::Simple("PONG".into()));
    let info = first.call(&["INFO", "stats"]).text();
    assert!(info.contains("rejected_connections:1"), "{info}");
}

#[test]
fn config_get_and_set() {
    let server = Server::start(&[]);
    let mut client = server.client();
    assert_eq!(
        client.call(&["CONFIG", "GET", "stream-node-*"]),
        Value::Array(vec![
            Value::bulk("stream-node-max-entries"),
            Value::bulk("100"),
            Value::bulk("stream-node-max-bytes"),
            Value::bulk("4096"),
        ])
    );
    assert_eq!(
        client.call(&["CONFIG", "SET", "stream-node-max-entries", "2"]),
        ok()
    );
    for id in 1..=5 {
        client.call(&["XADD", "s", &format!("{id}-1"), "f", "v"]);
    }
    let info = client.call(&["XINFO", "STREAM", "s"]);
    let items = info.items();
    assert_eq!(items[2], Value::bulk("radix-tree-keys"));
    assert_eq!(items[3], Value::Int(3));
    assert_eq!(
        client.call(&["CONFIG", "SET", "appendfsync", "always"]),
        ok()
    );
    assert_eq!(
        client.call(&["CONFIG", "GET", "appendfsync"]).items()[1],
        Value::bulk("always")
    );
    assert_eq!(
        client.call(&["CONFIG", "SET", "appendfsync", "sometimes"]),
        Value::Error("ERR CONFIG SET failed (possibly related to argument 'appendfsync') - argument(s) must be one of the following: always, everysec, no".into())
    );
    assert_eq!(
        client.call(&["CONFIG", "SET", "port", "1"]),
        Value::Error("ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config".into())
    );
    assert_eq!(
        client.call(&["CONFIG", "SET", "nosuch", "1"]),
        Value::Error("ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'".into())
    );
    // All or nothing.
    assert!(matches!(
        client.call(&["CONFIG", "SET", "timeout", "5", "maxclients", "zero"]),
        Value::Error(_)
    ));
    assert_eq!(
        client.call(&["CONFIG", "GET", "timeout"]).items()[1],
        Value::bulk("0")
    );
    assert_eq!(
        client.call(&["CONFIG", "GET", "save"]).items()[1],
        Value::bulk("")
    );
}

#[test]
fn keys_scan_and_flushall() {
    let server = Server::start(&[]);
    let mut client = server.client();
    for index in 0..500 {
        client.send(&["XADD", &format!("key:{index}"), "1-1", "f", "v"]);
    }
    for _ in 0..500 {
        client.read();
    }
    assert_eq!(client.call(&["DBSIZE"]), Value::Int(500));
    assert_eq!(client.call(&["KEYS", "key:1?"]).items().len(), 10);
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    let mut calls = 0;
    loop {
        let reply = client.call(&["SCAN", &cursor, "COUNT", "37"]);
        calls += 1;
        cursor = reply.items()[0].text();
        for key in reply.items()[1].items() {
            seen.insert(key.text());
        }
        if cursor == "0" {
            break;
        }
        // Keys added during the scan do not disturb it.
        client.call(&["XADD", &format!("extra:{calls}"), "1-1", "f", "v"]);
    }
    assert!(calls > 5);
    for index in 0..500 {
        assert!(seen.contains(&format!("key:{index}")), "key:{index} missed");
    }
    let matched = client.call(&["SCAN", "0", "MATCH", "key:42*", "COUNT", "10000"]);
    assert_eq!(matched.items()[1].items().len(), 11);
    assert_eq!(
        client.call(&["SCAN", "0", "TYPE", "string"]).items()[1]
            .items()
            .len(),
        0
    );
    assert_eq!(client.call(&["FLUSHALL"]), ok());
    assert_eq!(client.call(&["DBSIZE"]), Value::Int(0));
}

#[test]
fn data_survives_restart_and_graceful_shutdown() {
    let directory = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(directory.path(), &[]);
    let mut client = server.client();
    client.call(&["XADD", "s", "1-1", "f", "v"]);
    client.call(&["XGROUP", "CREATE", "s", "g", "0"]);
    client.call(&["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", ">"]);
    client.call(&["FLUSHALL"]);
    client.call(&["XADD", "t", "2-1", "f", "v"]);
    client.call(&["XGROUP", "CREATE", "t", "g", "0"]);
    client.call(&["XREADGROUP", "GROUP", "g", "bob", "STREAMS", "t", ">"]);
    assert!(server.terminate(), "SIGTERM exits cleanly");
    assert!(
        server.log_text().contains("command log synced"),
        "{}",
        server.log_text()
    );
    let server = Server::start_in(directory.path(), &[]);
    let mut client = server.client();
    assert_eq!(client.call(&["EXISTS", "s"]), Value::Int(0));
    assert_eq!(client.call(&["XLEN", "t"]), Value::Int(1));
    let pending = client.call(&["XPENDING", "t", "g", "-", "+", "10"]);
    assert_eq!(pending.items()[0].items()[1], Value::bulk("bob"));
    assert!(
        server.log_text().contains("recovered_commands="),
        "{}",
        server.log_text()
    );
    // BGREWRITEAOF compacts the log; the state stays.
    assert_eq!(
        client.call(&["BGREWRITEAOF"]),
        Value::Simple("Background append only file rewriting started".into())
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .call(&["INFO", "persistence"])
        .text()
        .contains("aof_rewrite_in_progress:1")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(server);
    let server = Server::start_in(directory.path(), &[]);
    let mut client = server.client();
    assert_eq!(client.call(&["XLEN", "t"]), Value::Int(1));
    assert_eq!(
        client.call(&["XPENDING", "t", "g"]).items()[0],
        Value::Int(1)
    );
}

#[test]
fn shutdown_command_stops_the_server() {
    let mut server = Server::start(&[]);
    let mut client = server.client();
    client.send(&["SHUTDOWN"]);
    assert!(client.is_closed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.running() {
        assert!(Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `cmdstat_<name>` line of INFO commandstats, if any.
fn command_stat(client: &mut common::Client, name: &str) -> Option<String> {
    let info = client.call(&["INFO", "commandstats"]).text();
    let prefix = format!("cmdstat_{name}:");
    info.lines()
        .find(|line| line.starts_with(&prefix))
        .map(|line| line.to_string())
}

#[test]
fn commandstats_count_a_blocking_read_when_it_completes_and_reset() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut reader = server.client();
    // Only `all`/`everything` or its name shows the section, as Redis.
    client.call(&["XADD", "s", "1-1", "f", "v"]);
    assert!(!client.call(&["INFO"]).text().contains("cmdstat_"));
    assert!(client
        .call(&["INFO", "all"])
        .text()
        .contains("cmdstat_xadd:calls=1,"));
    let xadd = command_stat(&mut client, "xadd").expect("xadd counted");
    assert!(xadd.contains("usec_per_call="), "{xadd}");
    // Blocked: not a call yet (Redis 7.2 on); completed: one call.
    reader.send(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client
        .call(&["INFO", "clients"])
        .text()
        .contains("blocked_clients:1")
    {
        assert!(Instant::now() < deadline, "the reader never blocked");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(command_stat(&mut client, "xread"), None);
    client.call(&["XADD", "s", "2-1", "f", "v"]);
    reader.read();
    let xread = command_stat(&mut client, "xread").expect("xread counted");
    assert!(xread.starts_with("cmdstat_xread:calls=1,"), "{xread}");
    assert!(
        xread.ends_with("rejected_calls=0,failed_calls=0"),
        "{xread}"
    );
    // Rejected (arity) and failed (ran, replied an error) apart.
    client.call(&["XADD", "s"]);
    client.call(&["XADD", "s", "1-1", "f", "v"]);
    let xadd = command_stat(&mut client, "xadd").expect("xadd counted");
    assert!(xadd.starts_with("cmdstat_xadd:calls=3,"), "{xadd}");
    assert!(xadd.ends_with("rejected_calls=1,failed_calls=1"), "{xadd}");
    assert_eq!(client.call(&["CONFIG", "RESETSTAT"]), ok());
    assert_eq!(command_stat(&mut client, "xadd"), None);
    assert!(command_stat(&mut client, "config|resetstat").is_some());
}
