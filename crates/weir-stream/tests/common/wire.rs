//! Talking to servers over RESP2 for the differential tests: a
//! `redis-server` started on a free port, a client that returns each
//! reply's raw bytes, and the normalisation of the few time-dependent
//! fields. Shared with weir-server's wire differential test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server started for the test on a free loopback port.
pub struct RedisServer {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl RedisServer {
    /// Starts one, or panics saying how to install it.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts one that requires `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password))
    }

    /// The port is picked by binding port 0 and releasing it, so another
    /// process may take it before redis-server binds it; then redis-server
    /// exits, and whatever holds the port (another test's server) would
    /// answer in its place. So the server is used only once the one
    /// answering on the port reports this child's process id; otherwise
    /// it is started again on another port.
    fn start_with(password: Option<&str>) -> Self {
        const ATTEMPTS: usize = 5;
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start(password) {
                Ok(server) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("redis-server did not start in {ATTEMPTS} attempts: {failures:?}");
    }

    fn try_start(password: Option<&str>) -> Result<Self, String> {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(&binary);
        command.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {binary}: {error}. The differential tests need a real redis-server: \
                     `cargo xtask ci` installs it (Debian package redis-server)."
                )
            });
        let mut server = Self { child, port };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "port {port}: redis-server exited at start ({status})"
                ));
            }
            if server.process_id_on_port(password) == Some(server.child.id()) {
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "port {port}: no redis-server of ours answered in 20 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id that the server on the port reports, if one answers.
    fn process_id_on_port(&self, password: Option<&str>) -> Option<u32> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut writer = stream.try_clone().ok()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if let Some(password) = password {
            let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
            writer.write_all(auth.as_bytes()).ok()?;
            reader.read_line(&mut line).ok()?;
            if !line.starts_with("+OK") {
                return None;
            }
            line.clear();
        }
        writer
            .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            .ok()?;
        reader.read_line(&mut line).ok()?;
        let length: usize = line.strip_prefix('$')?.trim().parse().ok()?;
        let mut body = vec![0; length + 2];
        reader.read_exact(&mut body).ok()?;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal RESP2 client that returns each reply's raw bytes.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects to a server on loopback.
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Self {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    /// Sends one request and returns its reply's bytes.
    pub fn call(&mut self, args: &[Vec<u8>]) -> Vec<u8> {
        self.send(args);
        self.receive()
    }

    /// Sends one request without waiting for its reply (a blocking read).
    pub fn send(&mut self, args: &[Vec<u8>]) {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&request).expect("send");
    }

    /// Reads the next reply's bytes.
    pub fn receive(&mut self) -> Vec<u8> {
        let mut reply = Vec::new();
        read_reply(&mut self.reader, &mut reply);
        reply
    }
}

fn read_line(reader: &mut BufReader<TcpStream>, out: &mut Vec<u8>) -> Vec<u8> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).expect("read");
    out.extend_from_slice(&line);
    line.truncate(line.len().saturating_sub(2));
    line
}

fn read_reply(reader: &mut BufReader<TcpStream>, out: &mut Vec<u8>) {
    let line = read_line(reader, out);
    let (kind, rest) = line.split_first().expect("a reply");
    let number = || {
        String::from_utf8_lossy(rest)
            .parse::<i64>()
            .expect("length")
    };
    match kind {
        b'$' if number() >= 0 => {
            let mut data = vec![0; number() as usize + 2];
            reader.read_exact(&mut data).expect("bulk");
            out.extend_from_slice(&data);
        }
        b'*' if number() >= 0 => {
            for _ in 0..number() {
                read_reply(reader, out);
            }
        }
        _ => {}
    }
}

/// A parsed RESP2 reply, for normalising time-dependent fields.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Line(u8, Vec<u8>),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

/// Parses one RESP2 reply; returns it and the bytes after it.
pub fn parse(bytes: &[u8]) -> (Value, &[u8]) {
    let end = bytes
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .expect("line end");
    let (kind, text) = (bytes[0], &bytes[1..end]);
    let rest = &bytes[end + 2..];
    let number = || {
        String::from_utf8_lossy(text)
            .parse::<i64>()
            .expect("number")
    };
    match kind {
        b'$' if number() < 0 => (Value::Bulk(None), rest),
        b'$' => {
            let length = number() as usize;
            (
                Value::Bulk(Some(rest[..length].to_vec())),
                &rest[length + 2..],
            )
        }
        b'*' if number() < 0 => (Value::Array(None), rest),
        b'*' => {
            let mut items = Vec::new();
            let mut rest = rest;
            for _ in 0..number() {
                let (item, remaining) = parse(rest);
                items.push(item);
                rest = remaining;
            }
            (Value::Array(Some(items)), rest)
        }
        kind => (Value::Line(kind, text.to_vec()), rest),
    }
}

fn zero() -> Value {
    Value::Line(b':', b"0".to_vec())
}

/// Replaces time-dependent values (and `radix-tree-nodes`) by 0.
pub fn normalise(command: &[Vec<u8>], value: &mut Value) {
    let name = String::from_utf8_lossy(&command[0]).to_ascii_uppercase();
    let sub = command
        .get(1)
        .map(|arg| String::from_utf8_lossy(arg).to_ascii_uppercase());
    match (name.as_str(), sub.as_deref()) {
        ("XPENDING", _) if command.len() > 3 => {
            if let Value::Array(Some(rows)) = value {
                for row in rows {
                    if let Value::Array(Some(fields)) = row {
                        if fields.len() == 4 {
                            fields[2] = zero();
                        }
                    }
                }
            }
        }
        ("XINFO", Some("CONSUMERS")) => {
            if let Value::Array(Some(consumers)) = value {
                for consumer in consumers {
                    zero_map_fields(consumer, &["idle", "inactive"]);
                }
            }
        }
        ("XINFO", Some("STREAM")) => {
            zero_map_fields(value, &["radix-tree-nodes"]);
            if let Some(Value::Array(Some(groups))) = map_get(value, "groups") {
                for group in groups {
                    if let Some(Value::Array(Some(pending))) = map_get(group, "pending") {
                        for row in pending {
                            if let Value::Array(Some(fields)) = row {
                                fields[2] = zero();
                            }
                        }
                    }
                    if let Some(Value::Array(Some(consumers))) = map_get(group, "consumers") {
                        for consumer in consumers {
                            zero_map_fields(consumer, &["seen-time", "active-time"]);
                            if let Some(Value::Array(Some(pending))) = map_get(consumer, "pending")
                            {
                                for row in pending {
                                    if let Value::Array(Some(fields)) = row {
                                        fields[1] = zero();
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn map_get<'a>(map: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let Value::Array(Some(items)) = map else {
        return None;
    };
    let position = items
        .chunks(2)
        .position(|pair| pair[0] == Value::Bulk(Some(key.as_bytes().to_vec())))?;
    items.get_mut(position * 2 + 1)
}

fn zero_map_fields(map: &mut Value, keys: &[&str]) {
    for key in keys {
        if let Some(value) = map_get(map, key) {
            *value = zero();
        }
    }
}

/// Shows RESP bytes on one line.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace("\r\n", "\\r\\n")
}
