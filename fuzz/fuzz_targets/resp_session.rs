#![no_main]
//! Fuzz target: see `weir_server::fuzzing::resp_session`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_server::fuzzing::resp_session(data);
});
