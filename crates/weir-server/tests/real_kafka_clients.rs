//! The real `weir` binary driven by real Kafka clients: kcat (Debian's,
//! librdkafka 2.0.2), kafka-python and confluent-kafka (PyPI, in the
//! virtualenv `cargo xtask ci` creates and names in `WEIR_PYTHON`).
//!
//! The client scenarios live in `tests/clients/kafka_clients.py`; each
//! checks what the client observes and fails with a message. Ignored by
//! plain `cargo test`, which does not install the clients; `cargo xtask ci`
//! runs them, and they fail, never skip, when a client is missing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{free_port, kafka_script, lines, python, show, Server};

const LIBRARIES: [&str; 2] = ["kp", "ck"];

fn client_command(scenario: &str, library: &str, port: u16, args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(kafka_script())
        .args([scenario, library, &format!("127.0.0.1:{port}")])
        .args(args);
    command
}

/// Runs a scenario to its end; panics with its output if it fails.
fn scenario(server: &Server, scenario: &str, library: &str, args: &[&str]) -> String {
    let output = client_command(scenario, library, server.kafka_port, args)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {}: {error}; `cargo xtask ci` creates the virtualenv with the Kafka clients",
                python()
            )
        });
    assert!(
        output.status.success(),
        "{scenario} with {library} against weir:\n{}\nweir's log:\n{}",
        show(&output),
        server.log_text()
    );
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    eprintln!("{scenario} {library}: {stdout}");
    stdout
}

fn kcat(port: u16, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new("kcat")
        .args(["-b", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run kcat: {error}; `cargo xtask ci` installs it"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write to kcat");
    }
    let output = child.wait_with_output().expect("kcat runs");
    assert!(output.status.success(), "kcat {args:?}:\n{}", show(&output));
    output
}

#[test]
#[ignore = "needs kcat: `cargo xtask ci` installs it and runs this test"]
fn kcat_lists_produces_and_consumes_with_every_codec() {
    let server = Server::start(&[]);
    let port = server.kafka_port;
    let mut expected = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let lines: Vec<String> = (0..5).map(|i| format!("{codec}-{i}:value {i}")).collect();
        kcat(
            port,
            &["-P", "-t", "kcat", "-K:", "-H", "origin=kcat", "-z", codec],
            Some(&(lines.join("\n") + "\n")),
        );
        expected.extend(
            lines
                .iter()
                .map(|line| line.replace(':', "=") + " origin=kcat"),
        );
    }
    let listing = String::from_utf8_lossy(&kcat(port, &["-L"], None).stdout).to_string();
    assert!(listing.contains("1 brokers:"), "{listing}");
    assert!(
        listing.contains(&format!("broker 0 at 127.0.0.1:{port}")),
        "{listing}"
    );
    assert!(
        listing.contains("topic \"kcat\" with 1 partitions"),
        "{listing}"
    );
    let consumed = kcat(port, &["-C", "-t", "kcat", "-e", "-f", "%k=%s %h\n"], None);
    let consumed: Vec<String> = String::from_utf8_lossy(&consumed.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(consumed, expected);
    let offsets = kcat(port, &["-Q", "-t", "kcat:0:-1"], None);
    assert!(
        String::from_utf8_lossy(&offsets.stdout).contains("kcat [0] offset 25"),
        "{}",
        show(&offsets)
    );
}

#[test]
#[ignore = "needs kafka-python and confluent-kafka: `cargo xtask ci` installs them and runs this test"]
fn clients_produce_and_consume_keys_headers_and_every_codec() {
    let server = Server::start(&[]);
    for library in LIBRARIES {
        scenario(&server, "codecs", library, &[&format!("codecs-{library}")]);
        scenario(
            &server,
            "timestamps",
            library,
            &[&format!("times-{library}")],
        );
    }
}

#[test]
#[ignore = "needs kafka-python and confluent-kafka: `cargo xtask ci` installs them and runs this test"]
fn a_group_of_three_rebalances_consumes_everything_and_resumes_from_commits() {
    let server = Server::start(&[]);
    for library in LIBRARIES {
        scenario(
            &server,
            "group",
            library,
            &[&format!("group-{library}"), &format!("g-{library}")],
        );
    }
    let log = server.log_text();
    assert!(log.contains("member left the group"), "{log}");
    assert!(log.contains("group generation formed"), "{log}");
}

#[test]
#[ignore = "needs kafka-python and confluent-kafka: `cargo xtask ci` installs them and runs this test"]
fn admin_clients_create_describe_list_and_delete() {
    let server = Server::start(&[]);
    for library in LIBRARIES {
        let observed = scenario(&server, "admin", library, &[&format!("admin-{library}")]);
        assert!(
            observed.contains("\"retention.ms\": \"3600000\""),
            "{observed}"
        );
        scenario(
            &server,
            "groups_admin",
            library,
            &[&format!("listed-{library}"), &format!("lg-{library}")],
        );
        scenario(
            &server,
            "config_sources",
            library,
            &[&format!("sourced-{library}")],
        );
        let grown = scenario(&server, "grow", library, &[&format!("grown-{library}")]);
        for expected in [
            "\"validate\": null",
            "\"grow\": null",
            "\"same\": \"INVALID_PARTITIONS\"",
            "\"fewer\": \"INVALID_PARTITIONS\"",
            "\"absent\": \"UNKNOWN_TOPIC_OR_PARTITION\"",
            "\"acked\": [0, 1, 2, 3, 4]",
        ] {
            assert!(grown.contains(expected), "{library}: {expected} in {grown}");
        }
    }
}

/// The outcomes the `alter_configs` scenario observes through either
/// library.
const ALTERED: &[&str] = &[
    "\"set\": null",
    "\"bad_value\": \"INVALID_CONFIG\"",
    "\"unsupported\": \"INVALID_CONFIG\"",
    "\"absent\": \"UNKNOWN_TOPIC_OR_PARTITION\"",
    "\"delete\": null",
    "\"replace\": null",
];

#[test]
#[ignore = "needs kafka-python and confluent-kafka: `cargo xtask ci` installs them and runs this test"]
fn topic_configs_change_through_both_admin_apis() {
    let server = Server::start(&[]);
    for library in LIBRARIES {
        let altered = scenario(
            &server,
            "alter_configs",
            library,
            &[&format!("altered-{library}")],
        );
        for expected in ALTERED {
            assert!(
                altered.contains(expected),
                "{library}: {expected} in {altered}"
            );
        }
    }
}

#[test]
#[ignore = "needs kafka-python and confluent-kafka: `cargo xtask ci` installs them and runs this test"]
fn sasl_plain_lets_users_in_and_refuses_wrong_passwords() {
    let server = Server::start(&["--kafka-user", "alice:wonderland"]);
    for library in LIBRARIES {
        scenario(
            &server,
            "sasl",
            library,
            &[&format!("sasl-{library}"), "alice", "wonderland"],
        );
    }
    let log = server.log_text();
    assert!(
        log.contains("authentication failed for user \\\"alice\\\"")
            || log.contains("authentication failed for user \"alice\""),
        "the refusal is not logged:\n{log}"
    );
}

/// Starts a producer scenario in the background.
fn spawn_producer(port: u16, library: &str, topic: &str, out: &Path, count: usize) -> Child {
    client_command(
        "produce_acked",
        library,
        port,
        &[topic, &out.display().to_string(), &count.to_string()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start a producer")
}

#[test]
#[ignore = "needs kafka-python and confluent-kafka: `cargo xtask ci` installs them and runs this test"]
fn acknowledged_records_and_commits_survive_a_sigkill() {
    let data = tempfile::tempdir().expect("data directory");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let flags = ["--kafka-addr", addr.as_str(), "--kafka-num-partitions", "3"];
    let mut server = Server::start_in(data.path(), &flags);
    let scratch = tempfile::tempdir().expect("scratch directory");
    for library in LIBRARIES {
        scenario(
            &server,
            "commit",
            library,
            &[&format!("crash-{library}"), "kept-group", "write"],
        );
    }
    let mut producers = Vec::new();
    for library in LIBRARIES {
        let out = scratch.path().join(format!("{library}.acked"));
        let topic = format!("crash-{library}");
        producers.push((
            spawn_producer(port, library, &topic, &out, 600),
            out,
            topic,
            library,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while producers.iter().any(|(_, out, _, _)| lines(out) < 150) {
        assert!(Instant::now() < deadline, "producers did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let acked_before: Vec<usize> = producers.iter().map(|(_, out, _, _)| lines(out)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let server = Server::start_in(data.path(), &flags);
    for (child, out, topic, library) in producers {
        let output = child.wait_with_output().expect("the producer ends");
        assert!(
            output.status.success(),
            "{library} producer across the restart:\n{}\nweir's log:\n{}",
            show(&output),
            server.log_text()
        );
        scenario(
            &server,
            "verify",
            library,
            &[&topic, &out.display().to_string(), "3"],
        );
        assert_eq!(lines(&out), 600);
    }
    for library in LIBRARIES {
        scenario(
            &server,
            "commit",
            library,
            &[&format!("crash-{library}"), "kept-group", "read"],
        );
    }
    eprintln!("acknowledged before the kill: {acked_before:?}");
}

/// A proxy in front of weir that loses the response of every third
/// produce request (and the connection with it), so that idempotent
/// producers retry batches weir has already written.
struct LossyProxy {
    port: u16,
    dropped: Arc<AtomicUsize>,
}

fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut frame).ok()?;
    let mut whole = size.to_vec();
    whole.extend_from_slice(&frame);
    Some(whole)
}

impl LossyProxy {
    fn start(target: u16) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listens");
        let port = listener.local_addr().expect("address").port();
        let dropped = Arc::new(AtomicUsize::new(0));
        let produces = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (dropped, produces) = (Arc::clone(&counter), Arc::clone(&produces));
                std::thread::spawn(move || Self::relay(client, target, &dropped, &produces));
            }
        });
        LossyProxy { port, dropped }
    }

    /// One request, one response, in turn (the clients here never send
    /// requests without a response).
    fn relay(mut client: TcpStream, target: u16, dropped: &AtomicUsize, produces: &AtomicUsize) {
        let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
            return;
        };
        while let Some(request) = read_frame(&mut client) {
            let is_produce = request.len() >= 6 && request[4..6] == [0, 0];
            if server.write_all(&request).is_err() {
                return;
            }
            let Some(response) = read_frame(&mut server) else {
                return;
            };
            if is_produce && produces.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
                dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if client.write_all(&response).is_err() {
                return;
            }
        }
    }
}

#[test]
#[ignore = "needs kafka-python and confluent-kafka: `cargo xtask ci` installs them and runs this test"]
fn idempotent_producers_retrying_lost_acknowledgements_write_each_record_once() {
    let kafka_port = free_port();
    let proxy = LossyProxy::start(kafka_port);
    let addr = format!("127.0.0.1:{kafka_port}");
    let advertised = format!("127.0.0.1:{}", proxy.port);
    let mut server = Server::start(&[
        "--kafka-addr",
        addr.as_str(),
        "--kafka-advertised-addr",
        advertised.as_str(),
    ]);
    server.kafka_port = proxy.port;
    for library in LIBRARIES {
        let before = proxy.dropped.load(Ordering::SeqCst);
        scenario(
            &server,
            "retries",
            library,
            &[&format!("retries-{library}"), "300"],
        );
        let dropped = proxy.dropped.load(Ordering::SeqCst) - before;
        assert!(
            dropped >= 3,
            "{library}: only {dropped} acknowledgements lost"
        );
        eprintln!("{library}: {dropped} produce responses lost and retried");
    }
}
