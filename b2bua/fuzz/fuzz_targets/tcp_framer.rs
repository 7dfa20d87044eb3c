//! A TCP stream in arbitrary segments (see `b2bua::fuzzing::tcp_framer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| b2bua::fuzzing::tcp_framer(data));
