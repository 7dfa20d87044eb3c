//! Feeds arbitrary text to the flow loader, as an ITSP's upload would: it must answer with a
//! flow or an error, never panic; and a flow that loads must run a few events without panic.
#![no_main]

use ivr::{Context, Event, Flow, Session};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    static PROMPTS: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    let prompts = PROMPTS.get_or_init(ivr::catalogue_prompts);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(flow) = Flow::parse(text, "fuzz.yaml", prompts) {
        let ctx = Context {
            ani: "1".into(),
            access_number: "2".into(),
            languages: vec!["en".into(), "es".into()],
            uri_destination: "3".into(),
        };
        let now = Instant::now();
        let (mut s, _) = Session::start(Arc::new(flow), &ctx, now);
        for (i, b) in data.iter().take(64).enumerate() {
            let t = now + Duration::from_secs(i as u64 * 3);
            let ev = match b % 5 {
                0 => Event::Digit((b'0' + b % 10) as char),
                1 => Event::PromptDone,
                2 => Event::Auth(ivr::AuthResult {
                    code: b % 16,
                    amount: "1.50".into(),
                    credit_seconds: *b as u64,
                    ..Default::default()
                }),
                3 => Event::BridgeEnded("busy".into()),
                _ => Event::LongPound,
            };
            let _ = s.on_event(ev, t);
            let _ = s.on_timer(t);
        }
    }
});
