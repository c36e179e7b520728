#![no_main]
//! Fuzz target: see `weir_kafka::fuzzing::batch_validation`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_kafka::fuzzing::batch_validation(data);
});
