#![no_main]
//! Fuzz target: see `weir_log::fuzzing::log_files_decoding`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_log::fuzzing::log_files_decoding(data);
});
