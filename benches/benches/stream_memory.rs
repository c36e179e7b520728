//! Memory per stream entry, weir against a real `redis-server` measured in
//! the same run: the same 1,000,000 entries (one small field; five fields of
//! about 100 bytes) are added to both, with the same IDs. Redis reports
//! `MEMORY USAGE <key> SAMPLES 0` (every node counted, allocator overhead
//! included); weir's figure is what its allocations occupy, measured by a
//! counting global allocator that adds up `malloc_usable_size` of every live
//! block (so allocator rounding is included too). Target: weir uses no more
//! than Redis.
//!
//! Run with `cargo bench -p weir-benches --bench stream_memory`; it needs
//! `redis-server` on the PATH (or in `$REDIS_SERVER`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use weir_benches::start_resp_server;
use weir_io::ManualClock;
use weir_stream::{Config, Context, Engine};

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the same
// arguments and only adds bookkeeping of the usable size of the blocks it
// returns or frees; malloc_usable_size is called on pointers that the system
// allocator returned and that are still live.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, handed on unchanged.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            // SAFETY: a live block the system allocator just returned.
            let size = unsafe { libc::malloc_usable_size(pointer.cast()) };
            LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: the caller frees a live block this allocator returned.
        let size = unsafe { libc::malloc_usable_size(pointer.cast()) };
        LIVE_BYTES.fetch_sub(size, Ordering::Relaxed);
        // SAFETY: the same block and layout, handed on unchanged.
        unsafe { System.dealloc(pointer, layout) };
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller resizes a live block this allocator returned.
        let old = unsafe { libc::malloc_usable_size(pointer.cast()) };
        // SAFETY: the caller's block, layout and size, handed on unchanged.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            // SAFETY: a live block the system allocator just returned.
            let new = unsafe { libc::malloc_usable_size(moved.cast()) };
            LIVE_BYTES.fetch_sub(old, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(new, Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ENTRIES: u64 = 1_000_000;
const PIPELINE: u64 = 10_000;

struct Redis {
    child: std::process::Child,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Redis {
    fn start() -> Self {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let (child, port) = start_resp_server("redis-server", |port| {
            Command::new(&binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("cannot start {binary} ({error}); install redis-server")
                })
        });
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis-server");
        Self {
            child,
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn send(&mut self, args: &[&[u8]], out: &mut Vec<u8>) {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn read_simple_reply(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reply");
        if let Some(length) = line.strip_prefix('$') {
            let length: i64 = length.trim().parse().expect("length");
            if length >= 0 {
                let mut data = vec![0; length as usize + 2];
                self.reader.read_exact(&mut data).expect("bulk");
                return String::from_utf8_lossy(&data[..length as usize]).into_owned();
            }
        }
        line.trim().to_string()
    }

    fn call(&mut self, args: &[&[u8]]) -> String {
        let mut request = Vec::new();
        self.send(args, &mut request);
        self.writer.write_all(&request).expect("send");
        self.read_simple_reply()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn id(index: u64) -> Vec<u8> {
    format!("{}-{}", 1_700_000_000_000 + index / 8, index % 8).into_bytes()
}

fn measure(redis: &mut Redis, name: &str, fields: &[(Vec<u8>, Vec<u8>)]) {
    redis.call(&[b"FLUSHALL"]);
    let mut sent = 0;
    while sent < ENTRIES {
        let mut request = Vec::new();
        let batch = PIPELINE.min(ENTRIES - sent);
        for index in sent..sent + batch {
            let id = id(index);
            let mut args: Vec<&[u8]> = vec![b"XADD", b"stream", &id];
            for (field, value) in fields {
                args.push(field);
                args.push(value);
            }
            redis.send(&args, &mut request);
        }
        redis.writer.write_all(&request).expect("send");
        for _ in 0..batch {
            redis.read_simple_reply();
        }
        sent += batch;
    }
    let redis_bytes: u64 = redis
        .call(&[b"MEMORY", b"USAGE", b"stream", b"SAMPLES", b"0"])
        .trim_start_matches(':')
        .parse()
        .expect("MEMORY USAGE");

    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut engine = Engine::new(Config::default(), Arc::new(ManualClock::new(0)));
    let context = Context::default();
    for index in 0..ENTRIES {
        let id = id(index);
        let mut args: Vec<&[u8]> = vec![b"XADD", b"stream", &id];
        for (field, value) in fields {
            args.push(field);
            args.push(value);
        }
        engine.execute(&context, &args);
    }
    let weir_bytes = (LIVE_BYTES.load(Ordering::Relaxed) - before) as u64;
    let estimate = engine.memory_usage(b"stream").unwrap_or(0) as u64;
    drop(engine);
    let per_entry = |bytes: u64| bytes as f64 / ENTRIES as f64;
    let ratio = weir_bytes as f64 / redis_bytes as f64;
    let verdict = if ratio <= 1.0 { "meets" } else { "MISSES" };
    println!(
        "RESULT memory per entry, {name}: weir {:.1} B (allocated; its own estimate {:.1} B) vs redis-server {:.1} B (MEMORY USAGE SAMPLES 0) -> ratio {ratio:.2}x ({verdict} the 1.00x target)",
        per_entry(weir_bytes),
        per_entry(estimate),
        per_entry(redis_bytes),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and expects a quick exit.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let mut redis = Redis::start();
    let version = redis.call(&[b"INFO", b"server"]);
    println!(
        "redis-server: {}",
        version
            .lines()
            .find(|line| line.starts_with("redis_version"))
            .unwrap_or("?")
    );
    measure(
        &mut redis,
        "1 field `f` = 8-byte value",
        &[(b"f".to_vec(), b"12345678".to_vec())],
    );
    let five: Vec<(Vec<u8>, Vec<u8>)> = (0..5)
        .map(|field| {
            (
                format!("field{field}").into_bytes(),
                vec![b'a' + field as u8; 100],
            )
        })
        .collect();
    measure(&mut redis, "5 fields of 100 bytes", &five);
}
