//! Both of weir's engines embedded in one program: a durable log topic
//! (weir-log) and a persistent stream with a consumer group (weir-stream,
//! through its typed API), each opened again after writing to show what
//! survived.
//!
//! `cargo run --manifest-path examples/embedding/Cargo.toml -- [DATA_DIR]`
//! (a fresh temporary directory by default).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_io::{OsStorage, SystemClock};
use weir_log::{Broker, BrokerConfig, BrokerRecovery, Record, TopicConfig};
use weir_stream::{
    AddOptions, Config, Delivered, FsyncPolicy, GroupStart, LogRecovery, ReadFrom, Store, StreamId,
    Trim,
};

fn main() -> Result<(), Box<dyn Error>> {
    let data = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join(format!("weir-embedding-{}", std::process::id())),
        PathBuf::from,
    );
    std::fs::create_dir_all(&data)?;
    log_round_trip(&data.join("log"))?;
    stream_round_trip(&data.join("streams"))?;
    println!("ok: {}", data.display());
    Ok(())
}

/// Appends to a topic, reopens the directory, reads everything back and
/// commits the group's offset.
fn log_round_trip(directory: &Path) -> Result<(), Box<dyn Error>> {
    std::fs::create_dir_all(directory)?;
    let open = || -> Result<(Broker, BrokerRecovery), Box<dyn Error>> {
        let storage = Arc::new(OsStorage::open(directory)?);
        Ok(Broker::open(
            storage,
            Arc::new(SystemClock),
            BrokerConfig::default(),
        )?)
    };
    let before = {
        let (broker, _) = open()?;
        if broker.topic("events").is_err() {
            broker.create_topic("events", TopicConfig::with_partitions(1))?;
        }
        let records = [
            Record::value(1_700_000_000_000, b"one"),
            Record::value(1_700_000_000_001, b"two"),
        ];
        // The default flush policy syncs before append returns.
        let appended = broker.append("events", 0, &records)?;
        broker.close()?;
        appended.last_offset + 1
    };
    let (broker, recovery) = open()?;
    let mut next = 0;
    let mut values = Vec::new();
    while next < before {
        let read = broker.read("events", 0, next, 1 << 20)?;
        for record in read.records() {
            values.push(record?.value.map(<[u8]>::to_vec));
        }
        next = read.info.next_offset;
    }
    assert!(values.len() >= 2, "the appended records survive a reopen");
    broker.commit_offset("embedding", "events", 0, next, "")?;
    println!(
        "log: {} partition(s) recovered, {} record(s) read, group at offset {next}",
        recovery.partitions.len(),
        values.len()
    );
    broker.close()?;
    Ok(())
}

/// Adds entries and delivers them to a consumer group through the typed
/// API, with the command log synced on every commit; reopens and checks
/// the entries and the group's pending entries came back.
fn stream_round_trip(directory: &Path) -> Result<(), Box<dyn Error>> {
    std::fs::create_dir_all(directory)?;
    let open = || -> Result<(Store, LogRecovery), Box<dyn Error>> {
        let storage = Arc::new(OsStorage::open(directory)?);
        Ok(Store::open(
            storage,
            Arc::new(SystemClock),
            Config::default(),
            FsyncPolicy::Always,
        )?)
    };
    let (mut store, _) = open()?;
    let delivered = store.run(
        |engine| -> Result<Vec<StreamId>, weir_stream::StreamError> {
            let keep = AddOptions {
                trim: Some(Trim::max_len(1_000)),
                ..AddOptions::default()
            };
            for item in ["book", "lamp", "desk"] {
                engine.add(b"orders", &[b"item", item.as_bytes()], &keep)?;
            }
            if engine
                .create_group(b"orders", b"billing", GroupStart::Id(StreamId::MIN), false)
                .is_err()
            {
                // The group exists from an earlier run on this directory.
            }
            let read = engine.read_group(
                b"billing",
                b"alice",
                &[(b"orders", ReadFrom::New)],
                Some(2),
                false,
            )?;
            let ids: Vec<StreamId> = read
                .iter()
                .flat_map(|stream| stream.entries.iter().map(Delivered::id))
                .collect();
            engine.ack(b"orders", b"billing", &ids[..1]);
            Ok(ids)
        },
    )??;
    store.commit()?;
    drop(store);

    let (mut reopened, recovery) = open()?;
    let engine = reopened.engine();
    let entries = engine.range(b"orders", StreamId::MIN, StreamId::MAX, None);
    assert!(entries.len() >= 3, "the entries survive a reopen");
    // alice still holds the second entry she read (only the first was acknowledged).
    let pending = engine.read_group(
        b"billing",
        b"alice",
        &[(b"orders", ReadFrom::Pending(StreamId::MIN))],
        None,
        false,
    )?;
    let pending_ids: Vec<StreamId> = pending
        .iter()
        .flat_map(|stream| stream.entries.iter().map(Delivered::id))
        .collect();
    assert!(
        pending_ids.contains(&delivered[1]),
        "an unacknowledged delivery stays pending"
    );
    assert!(
        !pending_ids.contains(&delivered[0]),
        "an acknowledged one does not"
    );
    println!(
        "streams: {} command(s) replayed, {} entries, alice has {} pending",
        recovery.commands,
        entries.len(),
        pending_ids.len()
    );
    Ok(())
}
