#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| guardrail_fuzz::cursor_token(data));
