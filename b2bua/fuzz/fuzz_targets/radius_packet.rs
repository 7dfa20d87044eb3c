//! A RADIUS datagram from a known client (see `b2bua::fuzzing::radius_packet`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| b2bua::fuzzing::radius_packet(data));
