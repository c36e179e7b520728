#![no_main]
//! Fuzz target: see `weir_kafka::fuzzing::kafka_session`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_kafka::fuzzing::kafka_session(data);
});
