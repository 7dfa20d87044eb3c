//! An ITSP's flow upload (see `b2bua::fuzzing::flow_yaml`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| b2bua::fuzzing::flow_yaml(data));
