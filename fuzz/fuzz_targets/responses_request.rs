//! libFuzzer entry point for `veil_fuzzing::responses_request` (see crates/fuzzing for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzzing::responses_request(data));
