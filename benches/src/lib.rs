//! Shared pieces of weir's benchmarks.
//!
//! Every benchmark measures a candidate and its baseline in the same run,
//! one after the other, and ends by printing the ratio of their median
//! throughputs with the target it should meet. Timings are taken in
//! `iter_custom` routines and kept here, so the medians are exactly those of
//! the samples criterion reports.

pub mod kafka_wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

fn samples() -> &'static Mutex<BTreeMap<String, Vec<f64>>> {
    static SAMPLES: OnceLock<Mutex<BTreeMap<String, Vec<f64>>>> = OnceLock::new();
    SAMPLES.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Records one sample of `id`: `elapsed` for `iterations` iterations.
pub fn record(id: &str, elapsed: Duration, iterations: u64) -> Duration {
    let per_iteration = elapsed.as_secs_f64() / iterations.max(1) as f64;
    samples()
        .lock()
        .expect("samples")
        .entry(id.to_string())
        .or_default()
        .push(per_iteration);
    elapsed
}

/// The median seconds per iteration of `id`.
pub fn median(id: &str) -> Option<f64> {
    let samples = samples().lock().expect("samples");
    let mut values = samples.get(id)?.clone();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

/// One side of a comparison: a benchmark id and the work one iteration does.
pub struct Side<'a> {
    /// The benchmark id passed to [`record`].
    pub id: &'a str,
    /// Units of work per iteration (bytes, records, ...).
    pub work: f64,
}

/// Prints the candidate's and the baseline's median throughputs, their
/// ratio, and whether the ratio meets `target`.
pub fn report_ratio(title: &str, unit: &str, candidate: Side<'_>, baseline: Side<'_>, target: f64) {
    let (Some(candidate_time), Some(baseline_time)) = (median(candidate.id), median(baseline.id))
    else {
        println!("{title}: not measured (filtered out)");
        return;
    };
    let candidate_rate = candidate.work / candidate_time;
    let baseline_rate = baseline.work / baseline_time;
    let ratio = candidate_rate / baseline_rate;
    let verdict = if ratio >= target { "meets" } else { "MISSES" };
    println!(
        "RESULT {title}: {} {:.3e} {unit}/s vs {} {:.3e} {unit}/s -> ratio {ratio:.2}x ({verdict} the {target:.2}x target)",
        candidate.id, candidate_rate, baseline.id, baseline_rate
    );
}

/// Prints the candidate's and the baseline's median throughputs and their
/// ratio, for a comparison that explains another rather than meets a
/// target.
pub fn report_comparison(title: &str, unit: &str, candidate: Side<'_>, baseline: Side<'_>) {
    let (Some(candidate_time), Some(baseline_time)) = (median(candidate.id), median(baseline.id))
    else {
        println!("{title}: not measured (filtered out)");
        return;
    };
    let candidate_rate = candidate.work / candidate_time;
    let baseline_rate = baseline.work / baseline_time;
    println!(
        "RESULT {title}: {} {:.3e} {unit}/s vs {} {:.3e} {unit}/s -> ratio {:.2}x",
        candidate.id,
        candidate_rate,
        baseline.id,
        baseline_rate,
        candidate_rate / baseline_rate
    );
}

/// Prints a median throughput against an absolute target.
pub fn report_rate(title: &str, unit: &str, side: Side<'_>, target: f64) {
    let Some(time) = median(side.id) else {
        println!("{title}: not measured (filtered out)");
        return;
    };
    let rate = side.work / time;
    let verdict = if rate >= target { "meets" } else { "MISSES" };
    println!(
        "RESULT {title}: {} {rate:.3e} {unit}/s ({verdict} the {target:.3e} {unit}/s target)",
        side.id
    );
}

/// Prints a median time.
pub fn report_time(title: &str, id: &str) {
    match median(id) {
        Some(time) => println!("RESULT {title}: {id} median {time:.3} s"),
        None => println!("{title}: not measured (filtered out)"),
    }
}

/// Where benchmarks put their data: `$WEIR_BENCH_DIR`, else the system's
/// temporary directory. Use a directory on the file system to measure.
pub fn bench_directory() -> PathBuf {
    std::env::var_os("WEIR_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// A fresh temporary directory under [`bench_directory`].
pub fn temporary_directory() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("weir-bench-")
        .tempdir_in(bench_directory())
        .expect("temporary directory")
}

/// A storage whose file syncs take at least `latency` longer than the
/// wrapped one's: a disk like the cloud volumes of kafka-notes.md (a few ms
/// per fdatasync), for showing what group commit gains where a sync is
/// slow. Only syncs are slowed.
#[derive(Debug)]
pub struct SlowSyncStorage {
    inner: std::sync::Arc<dyn weir_io::Storage>,
    latency: Duration,
}

impl SlowSyncStorage {
    /// Wraps `inner`.
    pub fn new(inner: std::sync::Arc<dyn weir_io::Storage>, latency: Duration) -> Self {
        Self { inner, latency }
    }
}

#[derive(Debug)]
struct SlowSyncFile {
    inner: std::sync::Arc<dyn weir_io::File>,
    latency: Duration,
}

impl weir_io::Storage for SlowSyncStorage {
    fn open_file(
        &self,
        name: &str,
        mode: weir_io::OpenMode,
    ) -> std::io::Result<std::sync::Arc<dyn weir_io::File>> {
        let inner = self.inner.open_file(name, mode)?;
        Ok(std::sync::Arc::new(SlowSyncFile {
            inner,
            latency: self.latency,
        }))
    }

    fn create_dir(&self, name: &str) -> std::io::Result<()> {
        self.inner.create_dir(name)
    }

    fn open_dir(&self, name: &str) -> std::io::Result<std::sync::Arc<dyn weir_io::Storage>> {
        Ok(std::sync::Arc::new(SlowSyncStorage::new(
            self.inner.open_dir(name)?,
            self.latency,
        )))
    }

    fn list(&self) -> std::io::Result<Vec<weir_io::DirEntry>> {
        self.inner.list()
    }

    fn rename(&self, source: &str, target: &str) -> std::io::Result<()> {
        self.inner.rename(source, target)
    }

    fn remove_file(&self, name: &str) -> std::io::Result<()> {
        self.inner.remove_file(name)
    }

    fn remove_dir(&self, name: &str) -> std::io::Result<()> {
        self.inner.remove_dir(name)
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        std::thread::sleep(self.latency);
        self.inner.sync_dir()
    }
}

impl weir_io::File for SlowSyncFile {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buffer, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(data, offset)
    }

    fn write_vectored_at(&self, parts: &[&[u8]], offset: u64) -> std::io::Result<()> {
        self.inner.write_vectored_at(parts, offset)
    }

    fn allocate(&self, offset: u64, length: u64) -> std::io::Result<()> {
        self.inner.allocate(offset, length)
    }

    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, length: u64) -> std::io::Result<()> {
        self.inner.set_len(length)
    }

    fn sync(&self) -> std::io::Result<()> {
        std::thread::sleep(self.latency);
        self.inner.sync()
    }

    fn view(&self) -> std::io::Result<weir_io::FileView> {
        self.inner.view()
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a RESP server (`spawn(port)` starts the process) on a free port
/// and waits until the server answering there is that process (by the
/// `process_id` of `INFO server`). A port taken between choosing it and
/// binding it makes the process exit, or another server answer: then it
/// is tried again on another port.
pub fn start_resp_server(
    name: &str,
    mut spawn: impl FnMut(u16) -> std::process::Child,
) -> (std::process::Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = spawn(port);
        match wait_until_ours(&mut child, port) {
            Ok(()) => return (child, port),
            Err(why) => {
                eprintln!("{name} on port {port}: {why}; trying another port");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    panic!("{name} did not start on any of 5 ports")
}

fn wait_until_ours(child: &mut std::process::Child, port: u16) -> Result<(), String> {
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the process exited at start ({status})"));
        }
        if process_id_on_port(port) == Some(child.id()) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err("no answer from it in 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `process_id` the RESP server on `port` reports, if one answers.
fn process_id_on_port(port: u16) -> Option<u32> {
    use std::io::{BufRead, Read, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut writer = stream.try_clone().ok()?;
    let mut reader = std::io::BufReader::new(stream);
    writer
        .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .ok()?;
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let length: usize = line.strip_prefix('$')?.trim().parse().ok()?;
    let mut body = vec![0; length + 2];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// Whether a side-by-side bench named `name` (a `harness = false` main)
/// should run: not under `cargo test --benches` or `--list`, and not when
/// a criterion-style filter names another bench.
pub fn selected(name: &str) -> bool {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let listing = arguments
        .iter()
        .any(|arg| arg == "--list" || arg == "--test");
    let filtered_out = arguments
        .iter()
        .any(|arg| !arg.starts_with('-') && !name.contains(arg.as_str()));
    !listing && !filtered_out
}
