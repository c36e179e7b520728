#![no_main]
//! Fuzz target: see `weir_log::fuzzing::index_lookup`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_log::fuzzing::index_lookup(data);
});
