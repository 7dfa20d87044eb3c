//! SDP offers and answers (see `b2bua::fuzzing::sdp`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| b2bua::fuzzing::sdp(data));
