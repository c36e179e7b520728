//! The real `weir` binary with `--appendfsync always`, killed with SIGKILL
//! at random moments while clients produce and consume through a consumer
//! group; after each restart:
//!
//! - every XADD whose reply arrived is in the stream, with its value;
//! - the stream's IDs strictly increase, and a new XADD gets an ID above
//!   every ID acknowledged before the crash (no ID is reused);
//! - every entry delivered by an XREADGROUP whose reply arrived, and not
//!   acknowledged by an XACK whose reply arrived, is still pending, owned by
//!   the consumer it was delivered to; an entry whose XACK reply arrived is
//!   not pending;
//! - XCLAIM's ownership changes that were acknowledged survive.
//!
//! A failure prints the seed; `CRASH_KILL_SEED=<seed> cargo test -p
//! weir-server --test crash_kill` replays its kill times (the interleaving
//! of the clients is the OS's, so a replay is close, not exact).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

mod common;
use common::{encode, Client, Server, Value};

const ROUNDS: usize = 25;
const PRODUCERS: usize = 3;

/// What the clients saw acknowledged, across all rounds.
#[derive(Default)]
struct Acknowledged {
    /// Entry ID -> value, for XADDs whose reply arrived.
    entries: BTreeMap<(u64, u64), String>,
    /// Entry ID -> consumer, for deliveries (XREADGROUP) and claims whose
    /// reply arrived; removed when an XACK reply arrives.
    pending: BTreeMap<(u64, u64), String>,
    /// IDs whose XACK reply arrived.
    acked: BTreeSet<(u64, u64)>,
    /// IDs whose XACK was sent but whose reply never came (the server died):
    /// they may be pending or not.
    maybe_acked: BTreeSet<(u64, u64)>,
    /// Consumers whose XAUTOCLAIM was sent but whose reply never came: any
    /// pending entry may now be theirs.
    claims_in_flight: BTreeSet<String>,
}

fn parse_id(text: &str) -> (u64, u64) {
    let (ms, seq) = text.split_once('-').expect("an entry ID");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

fn show_id(id: (u64, u64)) -> String {
    format!("{}-{}", id.0, id.1)
}

/// Sends one command; `None` when the server is gone.
fn call(client: &mut Client, args: &[&str]) -> Option<Value> {
    let bytes: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    client.send_raw(&encode(&bytes)).ok()?;
    client.try_read().ok()
}

fn try_connect(port: u16) -> Option<Client> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(Client::connect(port))
}

fn producer(port: u16, tag: String, state: Arc<Mutex<Acknowledged>>, stop: Arc<AtomicBool>) {
    let Some(mut client) = try_connect(port) else {
        return;
    };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let value = format!("{tag}-{n}");
        match call(&mut client, &["XADD", "s", "*", "v", &value]) {
            Some(Value::Bulk(id)) => {
                let id = parse_id(&String::from_utf8_lossy(&id));
                state.lock().unwrap().entries.insert(id, value);
            }
            Some(other) => panic!("XADD failed: {other:?}"),
            None => return,
        }
    }
}

fn consumer(
    port: u16,
    name: String,
    seed: u64,
    state: Arc<Mutex<Acknowledged>>,
    stop: Arc<AtomicBool>,
) {
    let Some(mut client) = try_connect(port) else {
        return;
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    // Each consumer command and its bookkeeping happen under the state's
    // lock, so that the record of who owns an entry follows the order in
    // which the server ran the deliveries and claims.
    while !stop.load(Ordering::Relaxed) {
        let mut state = state.lock().unwrap();
        let reply = call(
            &mut client,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                &name,
                "COUNT",
                "5",
                "STREAMS",
                "s",
                ">",
            ],
        );
        let Some(reply) = reply else { return };
        let mut delivered = Vec::new();
        if let Value::Array(streams) = reply {
            for stream in streams {
                for entry in stream.items()[1].items() {
                    delivered.push(parse_id(&entry.items()[0].text()));
                }
            }
        }
        for id in &delivered {
            state.pending.insert(*id, name.clone());
        }
        // Acknowledge about half of them.
        for id in delivered {
            if rng.random_bool(0.5) {
                match call(&mut client, &["XACK", "s", "g", &show_id(id)]) {
                    Some(Value::Int(_)) => {
                        state.pending.remove(&id);
                        state.acked.insert(id);
                    }
                    Some(other) => panic!("XACK failed: {other:?}"),
                    None => {
                        state.maybe_acked.insert(id);
                        return;
                    }
                }
            }
        }
        // Now and then, claim another consumer's pending entries.
        if rng.random_bool(0.2) {
            let reply = call(
                &mut client,
                &[
                    "XAUTOCLAIM",
                    "s",
                    "g",
                    &name,
                    "0",
                    "0",
                    "COUNT",
                    "3",
                    "JUSTID",
                ],
            );
            match reply {
                Some(Value::Array(items)) => {
                    for id in items[1].items() {
                        state.pending.insert(parse_id(&id.text()), name.clone());
                    }
                }
                Some(other) => panic!("XAUTOCLAIM failed: {other:?}"),
                None => {
                    state.claims_in_flight.insert(name);
                    return;
                }
            }
        }
        drop(state);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Checks the restarted server against what was acknowledged, then takes
/// its pending entries as the truth for the next round (the outcome of a
/// command whose reply never came is decided by then).
fn check(client: &mut Client, state: &mut Acknowledged) -> Result<(), String> {
    let Value::Array(entries) = client.call(&["XRANGE", "s", "-", "+"]) else {
        return Err("XRANGE did not return an array".into());
    };
    let mut stored = BTreeMap::new();
    let mut previous = None;
    for entry in &entries {
        let id = parse_id(&entry.items()[0].text());
        if previous.is_some_and(|previous| previous >= id) {
            return Err(format!("IDs do not increase at {}", show_id(id)));
        }
        previous = Some(id);
        stored.insert(id, entry.items()[1].items()[1].text());
    }
    for (id, value) in &state.entries {
        match stored.get(id) {
            Some(found) if found == value => {}
            Some(found) => {
                return Err(format!(
                    "{} holds {found}, acknowledged with {value}",
                    show_id(*id)
                ))
            }
            None => {
                return Err(format!(
                    "acknowledged XADD {} ({value}) is lost",
                    show_id(*id)
                ))
            }
        }
    }
    let Value::Array(rows) = client.call(&["XPENDING", "s", "g", "-", "+", "1000000"]) else {
        return Err("XPENDING did not return an array".into());
    };
    let mut pel = BTreeMap::new();
    for row in &rows {
        pel.insert(parse_id(&row.items()[0].text()), row.items()[1].text());
    }
    for (id, owner) in &state.pending {
        match pel.get(id) {
            Some(found) if found == owner || state.claims_in_flight.contains(found) => {}
            Some(found) => {
                return Err(format!(
                    "pending {} belongs to {found}, acknowledged as delivered to {owner}",
                    show_id(*id)
                ))
            }
            // Its XACK was sent; whether it ran is the server's to decide.
            None if state.maybe_acked.contains(id) => {}
            None => {
                return Err(format!(
                    "delivered to {owner}, unacknowledged {} is not pending",
                    show_id(*id)
                ))
            }
        }
    }
    for id in &state.acked {
        if pel.contains_key(id) {
            return Err(format!(
                "{} is pending although its XACK was acknowledged",
                show_id(*id)
            ));
        }
    }
    for id in pel.keys() {
        if !stored.contains_key(id) {
            return Err(format!("pending {} is not in the stream", show_id(*id)));
        }
    }
    state.pending = pel;
    state.maybe_acked.clear();
    state.claims_in_flight.clear();
    // No ID reuse: a new entry goes above everything acknowledged.
    if let Some(last) = state.entries.keys().next_back() {
        let Value::Bulk(new) = client.call(&["XADD", "s", "*", "probe", "1"]) else {
            return Err("XADD after restart failed".into());
        };
        let new = parse_id(&String::from_utf8_lossy(&new));
        if new <= *last {
            return Err(format!(
                "new ID {} is not above acknowledged {}",
                show_id(new),
                show_id(*last)
            ));
        }
        client.call(&["XDEL", "s", &show_id(new)]);
    }
    Ok(())
}

#[test]
fn acknowledged_writes_survive_sigkill_with_fsync_always() {
    let seed: u64 = std::env::var("CRASH_KILL_SEED").map_or(0x5eed_0001, |seed| {
        seed.parse().expect("CRASH_KILL_SEED is a number")
    });
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let directory = tempfile::tempdir().expect("temporary directory");
    let flags = ["--appendfsync", "always"];
    let state = Arc::new(Mutex::new(Acknowledged::default()));
    let mut kills = 0;
    for round in 0..ROUNDS {
        let mut server = Server::start_in(directory.path(), &flags);
        if round == 0 {
            let mut setup = server.client();
            setup.call(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for producer_index in 0..PRODUCERS {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            let tag = format!("r{round}p{producer_index}");
            let port = server.port;
            threads.push(std::thread::spawn(move || producer(port, tag, state, stop)));
        }
        for consumer_index in 0..2 {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            let name = format!("c{consumer_index}");
            let port = server.port;
            let consumer_seed = rng.random();
            threads.push(std::thread::spawn(move || {
                consumer(port, name, consumer_seed, state, stop)
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
        server.kill();
        kills += 1;
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().expect("client thread");
        }
        let restarted = Server::start_in(directory.path(), &flags);
        let mut client = restarted.client();
        let mut state = state.lock().unwrap();
        if let Err(problem) = check(&mut client, &mut state) {
            let log = restarted.log_text();
            drop(restarted);
            let kept = directory.keep();
            panic!(
                "round {round}: {problem}\ndata directory kept in {}\nseed {seed}; replay with: CRASH_KILL_SEED={seed} cargo test -p weir-server --test crash_kill\nrecovery log:\n{}",
                kept.display(),
                log
            );
        }
        drop(client);
        drop(restarted);
    }
    let state = state.lock().unwrap();
    eprintln!(
        "{kills} SIGKILLs: {} acknowledged XADDs, {} acknowledged XACKs, {} pending deliveries, all intact",
        state.entries.len(),
        state.acked.len(),
        state.pending.len()
    );
    assert!(state.entries.len() > 100, "too few writes to mean anything");
    assert!(!state.acked.is_empty() && !state.pending.is_empty());
}
