#![no_main]
//! Fuzz target: see `weir_server::fuzzing::resp_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_server::fuzzing::resp_request(data);
});
