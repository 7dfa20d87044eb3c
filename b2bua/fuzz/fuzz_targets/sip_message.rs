//! Everything that reads SIP from the network (see `b2bua::fuzzing::sip_message`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| b2bua::fuzzing::sip_message(data));
