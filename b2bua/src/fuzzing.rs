//! The entry points the fuzz targets (`b2bua/fuzz`) drive, kept in the library so that a plain
//! `cargo test` replays every committed corpus file through exactly the same code
//! (`b2bua/tests/fuzz_corpus.rs`): a crash the fuzzer once found stays found in CI.
//!
//! Each function takes arbitrary bytes, as a peer could send them, and may only return: a
//! panic is the failure. Where a property holds whatever the input (our own output parses
//! back; a stream framed in any segments gives the same messages), it is asserted too.

use crate::media::{codec, dtmf, rtp, sdp};
use crate::sip::framer::StreamFramer;
use crate::sip::message::{self, SipExt, SipMessage};
use crate::sip::transaction::{self, Timers, Transaction};
use std::time::{Duration, Instant};

/// Everything that reads a SIP datagram: the parser, the Via stamp, the 400 reply builder,
/// and a server transaction for whatever parses.
pub fn sip_message(data: &[u8]) {
    match message::parse_datagram(data) {
        Ok(msg) => {
            let _ = transaction::key(&msg);
            let bytes = message::to_bytes(&msg);
            // What we write must read back.
            message::parse_datagram(&bytes).expect("our own output parses");
            if let SipMessage::Response(resp) = &msg {
                digest_answer(resp);
                let before = crate::call::session::Agreed {
                    interval: 1800,
                    we_refresh: true,
                    peer_supports: false,
                    update: false,
                };
                if let Some(agreed) = crate::call::session::after_refresh(resp, before) {
                    session_headers_read_back(agreed);
                }
                prack_reads_back(resp);
            }
            if let SipMessage::Request(mut r) = msg {
                let timers = crate::config::SessionTimers {
                    expires: 1800,
                    min_se: 90,
                };
                if let Ok(Some(agreed)) = crate::call::session::as_uas(&r, &timers) {
                    assert!(agreed.interval >= 90, "never below Min-SE: {agreed:?}");
                    session_headers_read_back(agreed);
                }
                presentation_reads_back(&r);
                rack_reads_back(&r);
                credentials_checked(&r);
                registered(&r);
                numbers_read(&r);
                message::stamp_received(&mut r, "192.0.2.1:5060".parse().expect("an address"));
                let now = Instant::now();
                let (mut tx, _) = Transaction::server(r.clone(), false, Timers::default(), now);
                tx.quiet();
                let _ = tx.on_request(&r, now);
                let _ = tx.respond(&message::response_to(&r, 486, Some("t")), now);
                // What the engine does to an answered transaction that only absorbs.
                if tx.lingering() {
                    tx.shed();
                    let _ = tx.on_request(&r, now);
                }
                let _ = tx.on_timer(now + Duration::from_secs(40));
                let ok = message::response_to(&r, 200, Some("t"));
                message::parse_datagram(&message::response_bytes(&ok))
                    .expect("our response parses");
            }
        }
        Err(e) => {
            if let Some(reply) = crate::transport::bad_request_reply(data, &e) {
                assert!(reply.starts_with(b"SIP/2.0 "), "a reply is a status line");
            }
        }
    }
}

/// Whatever a peer's session timer said, the Session-Expires we write for it reads back the
/// same.
fn session_headers_read_back(agreed: crate::call::session::Agreed) {
    use crate::sip::session_timer::SessionExpires;
    let timer = crate::call::session::SessionTimer::new(agreed, Instant::now());
    for in_request in [true, false] {
        for h in timer.headers(in_request) {
            let (name, value) = message::name_value(&h);
            if name == "Session-Expires" {
                let se = SessionExpires::parse(value).expect("our Session-Expires parses");
                assert_eq!(se.delta, agreed.interval);
            }
        }
    }
}

/// A gateway's challenge, answered as the call and the shell do: whatever the challenge
/// holds, the credentials are one header line (no CR or LF smuggled in), the request carrying
/// them parses, and it is never answered twice.
fn digest_answer(resp: &message::Response) {
    use crate::sip::digest::{answer, Credentials, Unanswered};
    use message::SipExt;
    let invite = message::parse_datagram(
        b"INVITE sip:5555233@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\n\
From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:5555233@192.0.2.9>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n",
    );
    let Ok(SipMessage::Request(invite)) = invite else {
        unreachable!("a fixed INVITE parses")
    };
    let cred = Credentials {
        username: "acme",
        password: "s3cret",
    };
    let Ok(again) = answer(&invite, resp, cred, None, "c0ffee", "z9hG4bKb") else {
        return;
    };
    for name in ["Authorization", "Proxy-Authorization"] {
        if let Some(v) = again.header(name) {
            assert!(!v.contains(['\r', '\n']), "one header line: {v:?}");
        }
    }
    let bytes = message::to_bytes(&SipMessage::Request(again.clone()));
    message::parse_datagram(&bytes).expect("the answered INVITE parses");
    let twice = answer(&again, resp, cred, None, "c0ffee", "z9hG4bKc");
    assert_eq!(twice.err(), Some(Unanswered::Refused));
}

/// Every message a framer gives for `data` pushed in `segments` (cycled).
fn frames(data: &[u8], segments: &[usize]) -> (Vec<Vec<u8>>, bool) {
    let mut framer = StreamFramer::new();
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = segments[i % segments.len()].min(rest.len());
        i += 1;
        framer.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match framer.next_message() {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

/// The TCP framer under arbitrary segmentation: the first bytes choose the segment sizes
/// (1 to 64 bytes each, cycled), the rest is the stream. However a stream is cut, it must
/// give the same messages as when it arrives whole, and each must parse or be refused.
pub fn tcp_framer(data: &[u8]) {
    let (pattern, stream) = data.split_at(data.len().min(8));
    let segments: Vec<usize> = pattern.iter().map(|b| (*b as usize % 64) + 1).collect();
    if segments.is_empty() {
        return;
    }
    let (whole, whole_err) = frames(stream, &[stream.len().max(1)]);
    let (cut, cut_err) = frames(stream, &segments);
    assert_eq!(whole, cut, "segmentation changed the messages");
    assert_eq!(
        whole_err, cut_err,
        "segmentation changed whether the stream frames"
    );
    for f in cut {
        let _ = message::parse_normalized(&f);
    }
}

/// SDP as an offer or an answer: read it, answer it, and read our own answer and offer back.
pub fn sdp(data: &[u8]) {
    let Ok(offer) = sdp::parse(data) else {
        return;
    };
    assert!(offer.formats.iter().all(|pt| *pt <= 127));
    let local = "127.0.0.1:30000".parse().expect("an address");
    let key = [9u8; 30];
    if let Ok((body, neg)) = sdp::answer(&offer, local, &key, 7) {
        let back = sdp::parse(body.as_bytes()).expect("our answer parses");
        assert_eq!(back.codecs[0].1, neg.codec.1, "our answer keeps the codec");
        assert_eq!(
            back.srtp.map(|s| s.key),
            offer.srtp.as_ref().map(|_| key),
            "SRTP answered exactly when offered, with our key"
        );
        let srtp = offer.srtp.as_ref().map(|_| &key);
        let ours = sdp::offer(local, neg.codec.1, offer.direction, srtp, 7);
        let back = sdp::parse(ours.as_bytes()).expect("our offer parses");
        assert_eq!(back.srtp.is_some(), srtp.is_some());
    }
}

/// RTP as it reaches a leg: the packet reader, the reception statistics, RFC 4733 and
/// in-band digit detection with long pound, the relay's rewriting, and SIP INFO bodies.
pub fn rtp(data: &[u8]) {
    let t0 = Instant::now();
    let mut stats = rtp::ReceiverStats::default();
    let mut events = dtmf::Rfc4733Receiver::default();
    let mut inband = dtmf::InBandDetector::default();
    let mut merger = dtmf::DigitMerger::new(Duration::from_secs(2));
    let mut sender = rtp::Sender::new(1, 2, 3);
    // The input as a run of packets, each prefixed by its length.
    let mut rest = data;
    let mut k = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let (pkt, next) = tail.split_at(len);
        rest = next;
        k += 1;
        let now = t0 + Duration::from_millis(20 * k);
        let Some(p) = rtp::read(pkt) else {
            continue;
        };
        stats.on_packet(p.seq, p.ts, now);
        let _ = stats.lost();
        let _ = stats.jitter();
        let keys = if p.pt == 101 {
            events.on_packet(p.ts, p.payload, now)
        } else {
            let linear: Vec<i16> = p
                .payload
                .iter()
                .map(|b| prompts::g711::ulaw_to_linear(*b))
                .collect();
            inband.push(&linear, now)
        };
        for key in keys {
            let _ = merger.key(dtmf::Source::Rfc4733, key);
        }
        let _ = merger.tick(now);
        if let Some(out) = sender.relay(p.pt, p.marker, p.ts, 8000, p.payload, now) {
            let back = rtp::read(&out).expect("our packet reads back");
            assert_eq!(back.payload, p.payload);
        }
        // The relay's in-place path: our header over the packet's own, just before its
        // payload, and µ-law turned into A-law where it lies.
        let mut buf = pkt.to_vec();
        let at = p.payload.as_ptr() as usize - pkt.as_ptr() as usize;
        let end = at + p.payload.len();
        let header = sender.relay_header(8, p.marker, p.ts, 8000, now);
        if let Some(h) = header.filter(|_| at >= rtp::HEADER) {
            buf[at - rtp::HEADER..at].copy_from_slice(&h);
            assert!(codec::transcode_in_place(
                &mut buf[at..end],
                sdp::Codec::Pcmu,
                sdp::Codec::Pcma
            ));
            let back = rtp::read(&buf[at - rtp::HEADER..end]).expect("rewritten in place");
            assert_eq!(back.pt, 8);
            assert_eq!(back.payload.len(), p.payload.len());
        }
    }
    let _ = rtp::icpif(stats.loss_fraction(), stats.jitter());
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dtmf::parse_dtmf_relay(text);
    }
}

/// A RADIUS datagram from a known client, with and without Message-Authenticator required.
pub fn radius_packet(data: &[u8]) {
    let _ = rating::radius::decode_request(data, b"testing123", false);
    let _ = rating::radius::decode_request(data, b"testing123", true);
    if data.len() > 4 {
        let _ = rating::radius::packet::decode_vsa(&data[4..]);
    }
}

/// An uploaded flow: it loads or is refused, and one that loads runs a few events.
pub fn flow_yaml(data: &[u8]) {
    use ivr::{Context, Event, Flow, Session};
    use std::sync::{Arc, OnceLock};
    static PROMPTS: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    let prompts = PROMPTS.get_or_init(ivr::catalogue_prompts);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(flow) = Flow::parse(text, "fuzz.yaml", prompts) else {
        return;
    };
    let ctx = Context {
        ani: "1".into(),
        access_number: "2".into(),
        languages: vec!["en".into(), "es".into()],
        uri_destination: "3".into(),
        card: "4".into(),
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
            3 => Event::BridgeEnded(ivr::BridgeEnd::ALL[usize::from(*b) % 7]),
            _ => Event::LongPound,
        };
        let _ = s.on_event(ev, t);
        let _ = s.on_timer(t);
    }
}

/// A reliable provisional response's PRACK, built in the early dialog the response opens, is
/// a request we can read back with the same RAck.
fn prack_reads_back(resp: &message::Response) {
    use crate::sip::reliable::{classify, Provisional};
    use message::SipExt;
    let Provisional::Prack(rack) = classify(resp, 1, None) else {
        return;
    };
    let mut headers = message::Headers::default();
    headers.push(message::hdr("From", "<sip:b2bua@192.0.2.1>;tag=ours"));
    headers.push(message::hdr("To", "<sip:5551234@192.0.2.2>"));
    let invite = message::new_request(
        message::Method::Invite,
        message::parse_uri("sip:5551234@192.0.2.2").unwrap_or_default(),
        headers,
        Vec::new(),
    );
    let mut dialog = crate::sip::dialog::Dialog::uac(&invite, resp);
    let mut prack = dialog.request(
        message::Method::PRack,
        "SIP/2.0/UDP 192.0.2.1:5060",
        "z9hG4bKfuzz",
        "<sip:b2bua@192.0.2.1>",
        None,
    );
    prack.headers.push(message::hdr("RAck", rack.to_string()));
    let bytes = message::request_bytes(&prack);
    let back = message::parse_datagram(&bytes).expect("our PRACK parses");
    assert_eq!(back.header("RAck"), Some(rack.to_string().as_str()));
}

/// A subscriber's dialled number through a plan with every rule on: read without a panic,
/// and what it reads is digits the rate deck can hold.
fn numbers_read(r: &message::Request) {
    let plan = crate::numbering::Plan {
        country_code: Some("44".into()),
        national_prefix: Some("0".into()),
        international_prefix: "00".into(),
        national_length: Some(10),
        premium: vec!["449".into()],
    };
    if let Some(d) = plan.read(r.uri.user().unwrap_or("")) {
        assert!(!d.number.is_empty() && d.number.bytes().all(|b| b.is_ascii_digit()));
        assert!(d.number.len() <= 35, "{d:?}");
    }
}

/// Whatever a REGISTER says, the registrar answers it (a challenge, a refusal, a lookup)
/// and reads its Path, Contacts and expiries without a panic, and every change it reads keeps
/// to the rules: no expiry below the minimum but zero, none above the maximum, no more
/// proxies than allowed.
fn registered(r: &message::Request) {
    let rules = crate::config::Subscribers {
        domains: vec!["voip.example.com".into(), "127.0.0.1".into()],
        min_expires: 60,
        max_expires: 3600,
        max_contacts: 5,
        nonce_lifetime: Duration::from_secs(300),
        nonce_key: [2; 32],
        nonces_remembered: 1000,
        algorithms: vec![crate::sip::digest::Algorithm::Md5],
        numbering: Default::default(),
        short_codes: Default::default(),
        warning: None,
        warning_prompts: Vec::new(),
        incoming_decks: Default::default(),
        nat_expires: 120,
        max_path: 4,
    };
    let registrar = crate::registrar::Registrar::new(rules.clone());
    let _ = registrar.first_look(r, 1_796_600_000_000, "t");
    if let Ok(path) = crate::registrar::path(r, true, &rules, "t") {
        assert!(path.len() <= rules.max_path, "{path:?}");
        for p in &path {
            // Each goes out again as a Route header: one line, no break in it.
            assert!(!p.contains(['\r', '\n']), "{p:?}");
        }
    }
    if let Ok(crate::registrar::Changes::Set(set)) =
        crate::registrar::changes(r, &rules, "t", Some(([192, 0, 2, 1], 5060).into()))
    {
        for (contact, secs) in set {
            assert!(
                secs == 0 || (60..=3600).contains(&secs),
                "{contact}: {secs}"
            );
            assert!(message::request_uri(&contact).is_some(), "{contact}");
        }
    }
}

/// A subscriber's credentials, however written, are read or refused without a panic; and
/// for whatever name and realm they carry, our own challenge, answered by our own client,
/// checks right (the quoting both ways agrees) and a replay of it does not.
fn credentials_checked(r: &message::Request) {
    use crate::sip::digest::{authorization, Algorithm, Challenge, Credentials};
    use crate::sip::digest_server::{issued_at, Answer, NonceState, Nonces, Replay, Replays};
    for name in ["Authorization", "Proxy-Authorization"] {
        let Some(Ok(a)) = r.header(name).map(Answer::parse) else {
            continue;
        };
        let nonces = Nonces::new([1; 32], 60_000);
        let now = 1_796_600_000_000;
        let _ = nonces.check(&a.nonce, now);
        let _ = a.is_right(r.method.to_string().as_str(), &a.algorithm.hash("x"));
        let both = [Algorithm::Md5, Algorithm::Sha256];
        for ch in nonces.challenges(&both, &a.realm, now, false) {
            let Some(ch) = Challenge::parse(&ch) else {
                continue;
            };
            let cred = Credentials {
                username: &a.username,
                password: "p",
            };
            let v = authorization(&ch, cred, "REGISTER", &a.uri, "c", 1);
            let back = Answer::parse(&v).expect("our client's answer reads");
            let ha1 = back
                .algorithm
                .hash(&format!("{}:{}:p", a.username, ch.realm));
            assert!(back.is_right("REGISTER", &ha1), "{v}");
            assert_eq!(nonces.check(&back.nonce, now), NonceState::Fresh);
            let mut seen = Replays::new(8);
            let at = issued_at(&back.nonce).expect("ours");
            let nc = back.qop.as_ref().map(|q| q.1);
            assert_eq!(seen.accept(&back.nonce, at, nc), Replay::New);
            assert_eq!(seen.accept(&back.nonce, at, nc), Replay::Again);
        }
    }
}

/// A caller's PRACK names one of our reliable responses: whatever `RAck` it sent, one we
/// accept writes back to the same thing, and the sender we keep for the caller only ever
/// acknowledges the response it sent.
fn rack_reads_back(r: &message::Request) {
    use crate::sip::reliable::{RAck, Sender};
    let Some(Ok(rack)) = r.header("RAck").map(RAck::parse) else {
        return;
    };
    assert_eq!(RAck::parse(&rack.to_string()), Ok(rack), "RAck reads back");
    let now = Instant::now();
    let mut sender = Sender::new(rack.rseq, Duration::from_millis(500));
    let sent = sender
        .send(message::response_to(r, 183, Some("t")), now)
        .expect("nothing was out");
    let ours = crate::sip::reliable::rseq(&sent).and_then(Result::ok);
    let acked = sender.prack(&rack, rack.cseq, now).is_some();
    assert_eq!(
        acked,
        ours == Some(rack.rseq) && rack.method == message::Method::Invite,
        "a PRACK acknowledges exactly the response it names: {rack} against {ours:?}"
    );
}

/// A caller's number, read as the engine reads it from whatever the caller sent, presented
/// to a carrier: the INVITE we would write with it parses back and names the same caller.
fn presentation_reads_back(r: &message::Request) {
    use crate::sip::identity::{present, withheld, Identity};
    let ani = r
        .header("P-Asserted-Identity")
        .map(message::addr_uri)
        .and_then(message::uri_user)
        .or_else(|| r.from_user())
        .unwrap_or("");
    let want = Identity {
        pai: true,
        ..Identity::default()
    };
    let shown = present(want, ani, withheld(r), "192.0.2.1:5060");
    let pai = shown
        .pai
        .as_ref()
        .map(|p| format!("P-Asserted-Identity: {p}\r\n"))
        .unwrap_or_default();
    let text = format!(
        "INVITE sip:1@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         From: {};tag=1\r\nTo: <sip:1@192.0.2.9>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
         {pai}Content-Length: 0\r\n\r\n",
        shown.from
    );
    let Ok(SipMessage::Request(ours)) = message::parse_datagram(text.as_bytes()) else {
        panic!("our INVITE for caller {ani:?} does not parse:\n{text}");
    };
    if let Some(p) = shown.pai {
        let back = ours
            .header("P-Asserted-Identity")
            .map(message::addr_uri)
            .and_then(message::uri_user);
        assert_eq!(back, Some(ani), "{p}");
    }
}
