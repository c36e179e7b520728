#![no_main]
//! Fuzz target: see `weir_log::fuzzing::segment_recovery`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_log::fuzzing::segment_recovery(data);
});
