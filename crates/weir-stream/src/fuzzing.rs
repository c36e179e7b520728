//! Entry points for fuzzing the command log, shared by the cargo-fuzz
//! target in `fuzz/` and by `cargo test`, which replays the committed
//! corpus through them.

use std::sync::Arc;

use weir_io::{ManualClock, OpenMode, SimDisk, Storage};

use crate::engine::Config;
use crate::persistence::{decode_record, encode_record, FsyncPolicy, Store};

/// Decodes `data` as a sequence of records. A record that decodes must
/// encode back to the same bytes.
pub fn command_log_decoding(data: &[u8]) {
    let mut position = 0;
    while position < data.len() {
        let Ok(record) = decode_record(&data[position..]) else {
            break;
        };
        let mut again = Vec::new();
        encode_record(&record.commands, record.synced_position, &mut again);
        assert_eq!(
            again,
            &data[position..position + record.length],
            "re-encoding differs"
        );
        position += record.length;
    }
}

/// Puts `data` after a valid header as the only command log and opens a
/// store on it. Opening either fails with an error or yields a state that a
/// second open reproduces exactly.
pub fn command_log_recovery(data: &[u8]) {
    let disk = SimDisk::new(0);
    let root = disk.root();
    let file = root
        .open_file("streams.0000000001.aof", OpenMode::CreateNew)
        .expect("create");
    let mut bytes = b"WEIRAOF1".to_vec();
    bytes.extend_from_slice(&1u64.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(data);
    file.write_at(&bytes, 0).expect("write");
    file.sync().expect("sync");
    root.sync_dir().expect("sync dir");
    drop(file);
    let storage: Arc<dyn Storage> = Arc::new(root);
    let clock = Arc::new(ManualClock::new(1_000));
    let open = || {
        Store::open(
            Arc::clone(&storage),
            clock.clone(),
            Config::default(),
            FsyncPolicy::Always,
        )
    };
    let Ok((mut first, _)) = open() else {
        return;
    };
    let state = dump(&mut first);
    drop(first);
    let (mut second, recovery) = open().expect("a recovered log opens again");
    assert_eq!(recovery.truncated, None, "recovery is idempotent");
    assert_eq!(dump(&mut second), state);
}

fn dump(store: &mut Store) -> Vec<u8> {
    let engine = store.engine();
    let mut keys: Vec<Vec<u8>> = engine.keys().map(<[u8]>::to_vec).collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        if let Some(stream) = engine.stream(&key) {
            for command in crate::snapshot::snapshot_stream(&key, stream) {
                for arg in command {
                    out.extend_from_slice(&arg);
                    out.push(0);
                }
            }
        }
    }
    out
}

/// Seed inputs: (target, name, bytes).
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut log = Vec::new();
    let commands: Vec<Vec<Vec<Vec<u8>>>> = vec![
        vec![vec![
            b"XADD".to_vec(),
            b"s".to_vec(),
            b"1-1".to_vec(),
            b"f".to_vec(),
            b"v".to_vec(),
        ]],
        vec![
            vec![
                b"XADD".to_vec(),
                b"s".to_vec(),
                b"2-0".to_vec(),
                b"f".to_vec(),
                b"w".to_vec(),
            ],
            vec![
                b"XTRIM".to_vec(),
                b"s".to_vec(),
                b"MAXLEN".to_vec(),
                b"=".to_vec(),
                b"1".to_vec(),
            ],
        ],
        vec![vec![
            b"XGROUP".to_vec(),
            b"CREATE".to_vec(),
            b"s".to_vec(),
            b"g".to_vec(),
            b"0".to_vec(),
            b"MKSTREAM".to_vec(),
            b"ENTRIESREAD".to_vec(),
            b"-1".to_vec(),
        ]],
        vec![vec![
            b"XCLAIM".to_vec(),
            b"s".to_vec(),
            b"g".to_vec(),
            b"c".to_vec(),
            b"0".to_vec(),
            b"2-0".to_vec(),
            b"TIME".to_vec(),
            b"900".to_vec(),
            b"RETRYCOUNT".to_vec(),
            b"1".to_vec(),
            b"FORCE".to_vec(),
            b"JUSTID".to_vec(),
        ]],
    ];
    let mut synced = 20;
    for record in &commands {
        let before = log.len();
        encode_record(record, synced, &mut log);
        synced += (log.len() - before) as u64;
    }
    let mut torn = log.clone();
    torn.truncate(log.len() - 5);
    vec![
        ("command_log_decoding", "records".into(), log.clone()),
        ("command_log_recovery", "valid".into(), log.clone()),
        ("command_log_recovery", "torn".into(), torn),
        ("command_log_recovery", "empty".into(), Vec::new()),
    ]
}
