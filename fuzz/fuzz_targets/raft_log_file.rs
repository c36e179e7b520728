#![no_main]
//! Fuzz target: see `weir_replication::fuzzing::raft_log_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_replication::fuzzing::raft_log_file(data);
});
