#![no_main]
//! Fuzz target: see `weir_stream::fuzzing::command_log_decoding`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_stream::fuzzing::command_log_decoding(data);
});
