//! Helpers for the server's integration tests: start the real `weir`
//! binary on a free port, and a small blocking RESP client that shows
//! replies exactly as they arrive (RESP2 or RESP3 types).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `weir serve`.
pub struct Server {
    child: Option<Child>,
    /// Its RESP port.
    pub port: u16,
    /// Its Kafka port.
    pub kafka_port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// What it logged so far.
    pub log: Arc<Mutex<String>>,
    /// The thread that copies its stderr into `log`, joined once it exits
    /// so that the log then holds every line.
    log_reader: Option<std::thread::JoinHandle<()>>,
    _temporary: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with a fresh data directory and extra flags.
    pub fn start(flags: &[&str]) -> Server {
        let directory = tempfile::tempdir().expect("temporary directory");
        let mut server = Server::start_in(directory.path(), flags);
        server._temporary = Some(directory);
        server
    }

    /// Starts a server on `data_dir` (kept after the server stops).
    pub fn start_in(data_dir: &Path, flags: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .arg("--resp-addr")
            .arg("127.0.0.1:0")
            .args(if flags.contains(&"--kafka-addr") {
                &[][..]
            } else {
                &["--kafka-addr", "127.0.0.1:0"][..]
            })
            .arg("--data-dir")
            .arg(data_dir)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the weir binary");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (port_sender, port_receiver) = std::sync::mpsc::channel();
        let writer = Arc::clone(&log);
        let log_reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                // The line is in the log before the port is handed over, so
                // that a test reading the log once the server is ready finds
                // the ready line (it did not always, on a busy machine).
                {
                    let mut log = writer.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if !sent && line.contains(" ready ") {
                    let port = |prefix: &str| {
                        line.split_whitespace()
                            .find_map(|word| word.strip_prefix(prefix))
                            .and_then(|port| port.parse::<u16>().ok())
                    };
                    if let Some(resp) = port("resp=127.0.0.1:") {
                        let _ = port_sender.send((resp, port("kafka=127.0.0.1:").unwrap_or(0)));
                        sent = true;
                    }
                }
            }
        });
        let (port, kafka_port) = match port_receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(ports) => ports,
            Err(_) => {
                let _ = child.kill();
                panic!("weir did not start; its log:\n{}", log.lock().unwrap());
            }
        };
        Server {
            child: Some(child),
            port,
            kafka_port,
            data_dir: data_dir.to_path_buf(),
            log,
            log_reader: Some(log_reader),
            _temporary: None,
        }
    }

    /// A client connected to it.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// Kills it with SIGKILL (a crash) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_log_reader();
    }

    /// Waits until the log holds everything the exited process wrote.
    fn join_log_reader(&mut self) {
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
    }

    /// Stops it with SIGTERM and waits; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        // SAFETY: sending a signal to our own child process by its pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.join_log_reader();
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.join_log_reader();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// How the process ended, once it has (its log then holds every line
    /// it wrote); `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.join_log_reader();
        Some(status)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A reply, with its RESP type.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `+`
    Simple(String),
    /// `-`
    Error(String),
    /// `:`
    Int(i64),
    /// `$`
    Bulk(Vec<u8>),
    /// `$-1`
    NullBulk,
    /// `*-1`
    NullArray,
    /// `_` (RESP3)
    Null,
    /// `*`
    Array(Vec<Value>),
    /// `%` (RESP3)
    Map(Vec<(Value, Value)>),
    /// `~` (RESP3)
    Set(Vec<Value>),
    /// `>` (RESP3)
    Push(Vec<Value>),
    /// `=` (RESP3): format and text.
    Verbatim(String, Vec<u8>),
    /// `,` (RESP3)
    Double(String),
    /// `#` (RESP3)
    Bool(bool),
}

impl Value {
    /// A bulk string from text.
    pub fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    /// The text of a bulk, simple or verbatim string.
    pub fn text(&self) -> String {
        match self {
            Value::Bulk(bytes) | Value::Verbatim(_, bytes) => {
                String::from_utf8_lossy(bytes).into_owned()
            }
            Value::Simple(text) | Value::Error(text) => text.clone(),
            other => panic!("not a string: {other:?}"),
        }
    }

    /// The items of an array, set or push.
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(items) | Value::Set(items) | Value::Push(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    /// The integer.
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(value) => *value,
            other => panic!("not an integer: {other:?}"),
        }
    }
}

/// A blocking RESP client.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects.
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Sends a command without reading its reply.
    pub fn send(&mut self, args: &[&str]) {
        let bytes: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.send_bytes(&bytes);
    }

    /// Sends a command of raw arguments.
    pub fn send_bytes(&mut self, args: &[&[u8]]) {
        self.writer.write_all(&encode(args)).expect("send");
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Sends a command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Value {
        self.send(args);
        self.read()
    }

    /// Reads one reply.
    pub fn read(&mut self) -> Value {
        self.try_read().expect("read a reply")
    }

    /// Reads one reply, or the I/O error (closed connection, timeout).
    pub fn try_read(&mut self) -> std::io::Result<Value> {
        read_value(&mut self.reader)
    }

    /// Sets the read timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.writer.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Whether the server closed the connection (reads EOF within 5 s).
    pub fn is_closed(&mut self) -> bool {
        self.writer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        loop {
            match self.reader.read(&mut byte) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(error) => {
                    return error.kind() == std::io::ErrorKind::ConnectionReset;
                }
            }
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(std::io::Error::other(format!(
            "line without CRLF: {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Reads one RESP2/RESP3 value.
pub fn read_value(reader: &mut impl BufRead) -> std::io::Result<Value> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(1);
    let number = || -> std::io::Result<i64> {
        rest.parse()
            .map_err(|_| std::io::Error::other(format!("bad number in {line:?}")))
    };
    let items = |reader: &mut dyn BufRead, count: i64| -> std::io::Result<Vec<Value>> {
        let mut reader = reader;
        (0..count).map(|_| read_value(&mut reader)).collect()
    };
    Ok(match kind {
        "+" => Value::Simple(rest.to_string()),
        "-" => Value::Error(rest.to_string()),
        ":" => Value::Int(number()?),
        "_" => Value::Null,
        "," => Value::Double(rest.to_string()),
        "#" => Value::Bool(rest == "t"),
        "$" | "=" => {
            let length = number()?;
            if length < 0 {
                return Ok(Value::NullBulk);
            }
            let mut bytes = vec![0; length as usize + 2];
            reader.read_exact(&mut bytes)?;
            bytes.truncate(length as usize);
            if kind == "=" {
                let text = bytes.split_off(4);
                Value::Verbatim(String::from_utf8_lossy(&bytes[..3]).into_owned(), text)
            } else {
                Value::Bulk(bytes)
            }
        }
        "*" => {
            let count = number()?;
            if count < 0 {
                return Ok(Value::NullArray);
            }
            Value::Array(items(reader, count)?)
        }
        "~" => Value::Set(items(reader, number()?)?),
        ">" => Value::Push(items(reader, number()?)?),
        "%" => {
            let flat = items(reader, number()? * 2)?;
            let mut pairs = Vec::new();
            let mut iterator = flat.into_iter();
            while let (Some(key), Some(value)) = (iterator.next(), iterator.next()) {
                pairs.push((key, value));
            }
            Value::Map(pairs)
        }
        other => {
            return Err(std::io::Error::other(format!(
                "unknown reply type {other:?} in {line:?}"
            )))
        }
    })
}

/// The path of a tool, from an environment variable or the PATH.
pub fn tool(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_string())
}

/// The Python with the clients (`WEIR_PYTHON`, which `cargo xtask ci`
/// sets to its virtualenv's).
pub fn python() -> String {
    std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The Kafka client scenarios.
pub fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/kafka_clients.py")
}

/// A finished process's status and output, for a failure message.
pub fn show(output: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A port free now (another process may take it before it is used).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below Linux's ephemeral range (32768 up): a port handed out by the
    // kernel for `bind(0)` is one that clients' outgoing connections take
    // their source ports from too, and a node started a moment later
    // found it taken (`Address already in use`, a cluster test with
    // kafka-python clients running beside it). Each port here is offered
    // once per test process, from a start that differs between processes.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    let start = std::process::id() % COUNT;
    for _ in 0..COUNT {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + step) % COUNT).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT)
}

/// Lines in a file (0 when it does not exist yet).
pub fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}
