//! libFuzzer entry of `freshgate_fuzz::activity` (see crates/freshgate-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| freshgate_fuzz::activity(data));
