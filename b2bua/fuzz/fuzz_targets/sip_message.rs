//! Feeds arbitrary bytes to everything that reads SIP from the network: the datagram parser,
//! the stream framer (in random-sized pieces), the 400 reply builder, and the transaction layer
//! for whatever parses. None of them may panic.
#![no_main]

use b2bua::sip::framer::StreamFramer;
use b2bua::sip::message::{self, SipMessage};
use b2bua::sip::transaction::{self, Timers, Transaction};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    match message::parse_datagram(data) {
        Ok(msg) => {
            let _ = transaction::key(&msg);
            let bytes = message::to_bytes(&msg);
            // What we write must read back.
            message::parse_datagram(&bytes).expect("our own output parses");
            if let SipMessage::Request(r) = msg {
                let now = Instant::now();
                let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), now);
                let _ = tx.on_request(&r, now);
                let _ = tx.respond(&message::response_to(&r, 486, Some("t")), now);
                let _ = tx.on_timer(now + std::time::Duration::from_secs(40));
            }
        }
        Err(e) => {
            let _ = b2bua::transport::bad_request_reply(data, &e);
        }
    }
    let mut framer = StreamFramer::new();
    let step = 1 + data.first().copied().unwrap_or(7) as usize;
    for chunk in data.chunks(step) {
        framer.push(chunk);
        loop {
            match framer.next_message() {
                Ok(Some(frame)) => {
                    let _ = message::parse_normalized(&frame);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
