//! Any datagram, as a request from a known client: the decoder must return a packet or an
//! error, never panic, with and without Message-Authenticator required.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rating::radius::decode_request(data, b"testing123", false);
    let _ = rating::radius::decode_request(data, b"testing123", true);
    if data.len() > 4 {
        let _ = rating::radius::packet::decode_vsa(&data[4..]);
    }
});
