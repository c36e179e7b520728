#![no_main]
//! Fuzz target: see `weir_log::fuzzing::batch_decoding`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_log::fuzzing::batch_decoding(data);
});
