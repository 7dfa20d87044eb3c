//! RTP packets and RFC 4733 events (see `b2bua::fuzzing::rtp`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| b2bua::fuzzing::rtp(data));
