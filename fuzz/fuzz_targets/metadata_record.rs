#![no_main]
//! Fuzz target: see `weir_replication::fuzzing::metadata_record`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_replication::fuzzing::metadata_record(data);
});
