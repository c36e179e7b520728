//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) of this
//! crate's targets through the functions the cargo-fuzz targets call.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("corpus {} is missing: {error}", directory.display()));
    let mut inputs = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus input");
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{target} failed on {}", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "corpus {} is empty", directory.display());
}

#[test]
fn raft_frame_corpus() {
    replay("raft_frame", weir_replication::fuzzing::raft_frame);
}

#[test]
fn raft_log_file_corpus() {
    replay("raft_log_file", weir_replication::fuzzing::raft_log_file);
}

#[test]
fn metadata_record_corpus() {
    replay(
        "metadata_record",
        weir_replication::fuzzing::metadata_record,
    );
}
