//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! same functions the cargo-fuzz targets call, so every input a fuzzer ever
//! found interesting keeps being checked by plain `cargo test`.

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
    // The seeds are always part of the replay, even before they are written
    // to the corpus.
    for (seed_target, _, data) in weir_log::fuzzing::seed_corpus() {
        if seed_target == target {
            run(&data);
        }
    }
}

#[test]
fn batch_decoding_corpus() {
    replay("batch_decoding", weir_log::fuzzing::batch_decoding);
}

#[test]
fn segment_recovery_corpus() {
    replay("segment_recovery", weir_log::fuzzing::segment_recovery);
}

#[test]
fn index_lookup_corpus() {
    replay("index_lookup", weir_log::fuzzing::index_lookup);
}

#[test]
fn log_files_decoding_corpus() {
    replay("log_files_decoding", weir_log::fuzzing::log_files_decoding);
}
