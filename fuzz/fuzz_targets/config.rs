//! libFuzzer entry of `freshgate_fuzz::config` (see crates/freshgate-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| freshgate_fuzz::config(data));
