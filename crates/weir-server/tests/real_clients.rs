//! The real `weir` binary driven by real Redis clients: `redis-cli` (Debian's
//! `redis-tools`) and redis-py 8 in RESP2 and RESP3 (from PyPI, in the
//! virtualenv `cargo xtask ci` creates and names in `WEIR_PYTHON`).
//!
//! Each client script also runs against a real `redis-server` in the same
//! test, so its expectations are Redis's behaviour, not weir's idea of it.
//! Ignored by plain `cargo test`, which does not install the clients;
//! `cargo xtask ci` runs them, and they fail, never skip, when a client is
//! missing.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
#[path = "../../weir-stream/tests/common/wire.rs"]
#[allow(dead_code)]
mod wire;

use common::{python, show, Server};
use wire::RedisServer;

const PASSWORD: &str = "correct horse";

fn run_redis_py(port: u16, protocol: u8, auth_port: u16) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/redis_py.py");
    Command::new(python())
        .arg(script)
        .args([
            port.to_string(),
            protocol.to_string(),
            auth_port.to_string(),
        ])
        .arg(PASSWORD)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {}: {error}; `cargo xtask ci` creates the virtualenv with redis-py",
                python()
            )
        })
}

#[test]
#[ignore = "needs redis-py and redis-server: `cargo xtask ci` installs them and runs this test"]
fn redis_py_in_resp2_and_resp3() {
    let weir = Server::start(&[]);
    let weir_auth = Server::start(&["--requirepass", PASSWORD]);
    let redis = RedisServer::start();
    let redis_auth = RedisServer::start_with_password(PASSWORD);
    for protocol in [2, 3] {
        let reference = run_redis_py(redis.port, protocol, redis_auth.port);
        assert!(
            reference.status.success(),
            "the script fails against redis-server itself:\n{}",
            show(&reference)
        );
        let output = run_redis_py(weir.port, protocol, weir_auth.port);
        assert!(
            output.status.success(),
            "redis-py against weir:\n{}",
            show(&output)
        );
        eprint!("weir: {}", String::from_utf8_lossy(&output.stdout));
    }
}

fn redis_cli(port: u16, flags: &[&str], args: &[&str]) -> Output {
    Command::new(std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".into()))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(flags)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli (Debian's redis-tools; cargo xtask ci installs it)")
}

/// `redis-cli` with a script on its standard input, as a user types it.
fn redis_cli_script(port: u16, flags: &[&str], script: &str) -> Output {
    let mut child = Command::new(std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".into()))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli (Debian's redis-tools; cargo xtask ci installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write the script");
    child.wait_with_output().expect("redis-cli output")
}

/// Every stream command as a user types it into redis-cli, in RESP2 and
/// RESP3 output; the text must be what redis-cli prints for redis-server.
const SESSION: &str = "\
PING
ECHO \"hello world\"
XADD s 1-1 name alice age 30
XADD s 2-0 name bob
XADD s 3-0 name carol
XLEN s
XRANGE s - +
XREVRANGE s + - COUNT 1
XRANGE s (1-1 + COUNT 1
XREAD COUNT 2 STREAMS s 0
XGROUP CREATE s g 0
XGROUP CREATECONSUMER s g c0
XREADGROUP GROUP g c1 COUNT 2 STREAMS s >
XPENDING s g
XACK s g 1-1
XCLAIM s g c2 0 2-0 JUSTID
XAUTOCLAIM s g c3 0 0 COUNT 1 JUSTID
XINFO GROUPS s
XGROUP SETID s g 0 ENTRIESREAD 0
XGROUP DELCONSUMER s g c0
XDEL s 3-0
XTRIM s MAXLEN 1
XSETID s 9-9
XADD s NOMKSTREAM MAXLEN = 5 10-0 k v
XADD missing NOMKSTREAM 1-1 k v
TYPE s
EXISTS s missing
XADD s 1-0 too small
XREADGROUP GROUP nogroup c STREAMS s >
XREAD BLOCK 10 STREAMS s $
XGROUP DESTROY s g
DBSIZE
MULTI
XADD t 1-0 a b
XLEN t
EXEC
DEL s t
DBSIZE
";

#[test]
#[ignore = "needs redis-cli and redis-server: `cargo xtask ci` installs them and runs this test"]
fn redis_cli_prints_what_it_prints_for_redis() {
    let weir = Server::start(&[]);
    let redis = RedisServer::start();
    for flags in [&[][..], &["-3"][..]] {
        let expected = redis_cli_script(redis.port, flags, SESSION);
        let actual = redis_cli_script(weir.port, flags, SESSION);
        assert!(expected.status.success(), "{}", show(&expected));
        assert!(actual.status.success(), "{}", show(&actual));
        let (expected, actual) = (
            String::from_utf8_lossy(&expected.stdout).into_owned(),
            String::from_utf8_lossy(&actual.stdout).into_owned(),
        );
        for (line, (want, got)) in expected.lines().zip(actual.lines()).enumerate() {
            assert_eq!(got, want, "redis-cli {flags:?}, line {line}:\n{actual}");
        }
        assert_eq!(actual.lines().count(), expected.lines().count(), "{actual}");
        assert!(actual.contains("alice"), "the session ran: {actual}");
    }
}

#[test]
#[ignore = "needs redis-cli: `cargo xtask ci` installs it and runs this test"]
fn redis_cli_tools_work() {
    let weir = Server::start(&["--requirepass", PASSWORD]);
    // AUTH failures: a wrong password, then no password.
    let wrong = redis_cli(weir.port, &["--no-auth-warning", "-a", "nope"], &["PING"]);
    let text = String::from_utf8_lossy(&wrong.stdout).into_owned()
        + &String::from_utf8_lossy(&wrong.stderr);
    assert!(text.contains("WRONGPASS"), "{}", show(&wrong));
    let anonymous = redis_cli(weir.port, &[], &["XLEN", "s"]);
    assert!(
        String::from_utf8_lossy(&anonymous.stdout).contains("NOAUTH"),
        "{}",
        show(&anonymous)
    );
    let auth = ["--no-auth-warning", "-a", PASSWORD];
    // Mass insertion with --pipe: 20 000 XADDs in raw RESP.
    let mut protocol = Vec::new();
    for n in 1..=20_000 {
        let id = format!("{n}-0");
        let value = format!("value-{n}");
        let args = ["XADD", "bulk", &id, "field", &value];
        protocol.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            protocol.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
    }
    let mut pipe = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &weir.port.to_string()])
        .args(auth)
        .arg("--pipe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    pipe.stdin
        .take()
        .expect("stdin")
        .write_all(&protocol)
        .expect("pipe");
    let piped = pipe.wait_with_output().expect("redis-cli --pipe");
    let text = String::from_utf8_lossy(&piped.stdout).into_owned();
    assert!(
        text.contains("errors: 0, replies: 20000"),
        "{}",
        show(&piped)
    );
    let length = redis_cli(weir.port, &auth, &["XLEN", "bulk"]);
    assert_eq!(String::from_utf8_lossy(&length.stdout).trim(), "20000");
    // -r: repeat a command; --scan walks the keyspace with SCAN.
    let repeated = redis_cli(weir.port, &auth, &["-r", "5", "XADD", "rep", "*", "f", "v"]);
    assert_eq!(String::from_utf8_lossy(&repeated.stdout).lines().count(), 5);
    let scan = redis_cli(weir.port, &auth, &["--scan", "--pattern", "*"]);
    let mut keys: Vec<String> = String::from_utf8_lossy(&scan.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    keys.sort();
    assert_eq!(keys, ["bulk", "rep"], "{}", show(&scan));
    // A blocked XREAD in one redis-cli is woken by an XADD from another.
    let blocked = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &weir.port.to_string()])
        .args(auth)
        .args(["XREAD", "BLOCK", "10000", "STREAMS", "wake", "$"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    let started = std::time::Instant::now();
    loop {
        let info = redis_cli(weir.port, &auth, &["INFO", "clients"]);
        if String::from_utf8_lossy(&info.stdout).contains("blocked_clients:1") {
            break;
        }
        assert!(started.elapsed().as_secs() < 10, "the reader never blocked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    redis_cli(weir.port, &auth, &["XADD", "wake", "5-5", "hello", "there"]);
    let woken = blocked.wait_with_output().expect("blocked redis-cli");
    let text = String::from_utf8_lossy(&woken.stdout).into_owned();
    assert!(text.contains("5-5") && text.contains("there"), "{text}");
    assert!(
        started.elapsed().as_secs() < 9,
        "woken by the XADD, not the timeout"
    );
}
