//! libFuzzer entry point for `veil_fuzzing::anthropic_request` (see crates/fuzzing for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzzing::anthropic_request(data));
