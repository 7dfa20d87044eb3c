//! A small SIP and RTP user agent for the end-to-end tests: enough of a caller and of a gateway
//! to place, answer and end calls over UDP and to send and receive RTP, with every message
//! checked by the daemon's own parser.
#![allow(dead_code)]

use b2bua::media::rtp;
use b2bua::sip::message::{self, SipExt, SipMessage};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// One UDP SIP endpoint with one RTP socket.
pub struct Ua {
    pub sip: UdpSocket,
    pub rtp: UdpSocket,
    pub user: String,
    seq: u16,
    /// Telephone-event timestamps keep advancing across calls of `send_digits`, as a phone's do.
    event_ts: std::sync::atomic::AtomicU32,
}

impl Ua {
    pub async fn new(user: &str) -> Ua {
        Ua::new_at(user, "127.0.0.1").await
    }

    /// A user agent on another loopback address (`127.0.0.2` is not a trusted peer where only
    /// 127.0.0.1 is).
    pub async fn new_at(user: &str, ip: &str) -> Ua {
        Ua {
            sip: UdpSocket::bind((ip, 0)).await.unwrap(),
            rtp: UdpSocket::bind((ip, 0)).await.unwrap(),
            user: user.into(),
            seq: 1,
            event_ts: std::sync::atomic::AtomicU32::new(100_000),
        }
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip.local_addr().unwrap()
    }

    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    /// An SDP body offering or answering the given `m=` formats and rtpmap lines.
    pub fn sdp(&self, formats: &str, maps: &[&str]) -> String {
        let a = self.rtp_addr();
        let ip = a.ip();
        let mut s = format!("v=0\r\no=ua 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {formats}\r\n", a.port());
        for m in maps {
            s.push_str(&format!("a=rtpmap:{m}\r\n"));
        }
        s
    }

    pub async fn send(&self, to: SocketAddr, text: &str) {
        self.sip.send_to(text.as_bytes(), to).await.unwrap();
    }

    /// The next SIP message (or `None` after `wait`).
    pub async fn recv(&self, wait: Duration) -> Option<(SipMessage, SocketAddr)> {
        let mut buf = vec![0u8; 65535];
        let (n, from) = tokio::time::timeout(wait, self.sip.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some((
            message::parse_datagram(&buf[..n]).expect("the B2BUA sends parseable SIP"),
            from,
        ))
    }

    /// Waits for a response with `code` to `method`, skipping others.
    pub async fn expect_response(&self, code: u16, wait: Duration) -> message::Response {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some((SipMessage::Response(r), _)) if r.status_code.code() == code => return r,
                Some(_) => continue,
                None => panic!("no {code} within {wait:?}"),
            }
        }
    }

    /// Waits for a request with `method`, skipping others.
    pub async fn expect_request(
        &self,
        method: &str,
        wait: Duration,
    ) -> (message::Request, SocketAddr) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some((SipMessage::Request(r), from)) if r.method.to_string() == method => {
                    return (r, from)
                }
                Some(_) => continue,
                None => panic!("no {method} within {wait:?}"),
            }
        }
    }

    /// A response to a request, echoing its dialog headers, with our tag and optional SDP.
    pub fn response(
        &self,
        req: &message::Request,
        code: u16,
        tag: &str,
        sdp: Option<&str>,
    ) -> String {
        let mut resp = message::response_to(req, code, Some(tag));
        resp.headers.push(message::hdr(
            "Contact",
            format!("<sip:{}@{}>", self.user, self.sip_addr()),
        ));
        if let Some(body) = sdp {
            resp.headers
                .push(message::hdr("Content-Type", "application/sdp"));
            resp.body = body.as_bytes().to_vec();
        }
        String::from_utf8(message::response_bytes(&resp)).unwrap()
    }

    /// An INVITE from this UA as `from_user` to `to_user` at `to`.
    pub fn invite(&mut self, to: SocketAddr, to_user: &str, call_id: &str, sdp: &str) -> String {
        let me = self.sip_addr();
        format!(
            "INVITE sip:{to_user}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}i\r\nFrom: <sip:{u}@{me}>;tag=ua{call_id}\r\n\
To: <sip:{to_user}@{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{u}@{me}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len(),
            u = self.user
        )
    }

    /// An in-dialog request (ACK with the INVITE's CSeq, or the next one) for the dialog a
    /// response established.
    pub fn in_dialog(
        &mut self,
        method: &str,
        to: SocketAddr,
        resp: &message::Response,
        body: Option<(&str, &str)>,
    ) -> String {
        let me = self.sip_addr();
        let seq = if method == "ACK" {
            resp.cseq().unwrap().0
        } else {
            self.seq += 1;
            self.seq as u32
        };
        let (ct, b) = match body {
            Some((ct, b)) => (format!("Content-Type: {ct}\r\n"), b.to_string()),
            None => (String::new(), String::new()),
        };
        format!(
            "{method} sip:b2bua@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{}{seq}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\n\
Max-Forwards: 70\r\n{ct}Content-Length: {}\r\n\r\n{b}",
            method.to_lowercase(),
            resp.header("From").unwrap(),
            resp.header("To").unwrap(),
            resp.call_id(),
            b.len()
        )
    }

    /// Dials an IVR access number offering PCMU and telephone-event 101, ACKs the 200;
    /// returns it and the B2BUA's RTP address for this call.
    pub async fn dial_ivr(
        &mut self,
        b2b: SocketAddr,
        number: &str,
        call_id: &str,
    ) -> (message::Response, SocketAddr) {
        let offer = self.sdp("0 101", &["0 PCMU/8000", "101 telephone-event/8000"]);
        let invite = self.invite(b2b, number, call_id, &offer);
        self.send(b2b, &invite).await;
        let ok = self.expect_response(200, Duration::from_secs(20)).await;
        let ack = self.in_dialog("ACK", b2b, &ok, None);
        self.send(b2b, &ack).await;
        let a_leg = sdp_addr(&ok.body);
        (ok, a_leg)
    }

    /// Sends RTP packets: `count` frames of `payload` every 20 ms.
    pub async fn send_rtp(&self, to: SocketAddr, pt: u8, ssrc: u32, count: u16, payload: &[u8]) {
        let mut s = rtp::Sender::new(ssrc, 100, 1000);
        let t0 = std::time::Instant::now();
        for i in 0..count {
            let pkt = s
                .prompt_frame(pt, payload, t0 + Duration::from_millis(20 * i as u64))
                .expect("a payload type below 128");
            self.rtp.send_to(&pkt, to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keys as RFC 4733 telephone-events (payload type `pt`): per key a start, a
    /// continuation and the end three times, 100 ms apart.
    pub async fn send_digits(&self, to: SocketAddr, digits: &str, pt: u8) {
        let mut seq = (self.event_ts.load(std::sync::atomic::Ordering::Relaxed) / 1000) as u16;
        for d in digits.chars() {
            let code = match d {
                '*' => 10,
                '#' => 11,
                c => c.to_digit(10).expect("a key") as u8,
            };
            let ts = self
                .event_ts
                .fetch_add(8000, std::sync::atomic::Ordering::Relaxed);
            for (n, (end, dur)) in [
                (false, 160u16),
                (false, 480),
                (true, 800),
                (true, 800),
                (true, 800),
            ]
            .into_iter()
            .enumerate()
            {
                let payload = [
                    code,
                    if end { 0x80 } else { 0 },
                    (dur >> 8) as u8,
                    dur as u8,
                ];
                seq = seq.wrapping_add(1);
                let pkt = rtp_packet(pt, n == 0, seq, ts, 0x7e7e, &payload);
                self.rtp.send_to(&pkt, to).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Holds a key for `ms` as one RFC 4733 event: updates every 50 ms, then the end three times.
    pub async fn hold_key(&self, to: SocketAddr, key: char, ms: u64, pt: u8) {
        let code = match key {
            '*' => 10,
            '#' => 11,
            c => c.to_digit(10).expect("a key") as u8,
        };
        let ts = self
            .event_ts
            .fetch_add(8000 + ms as u32 * 8, std::sync::atomic::Ordering::Relaxed);
        let mut seq = (ts / 1000) as u16;
        for i in 0..=(ms / 50) {
            let dur = ((i + 1) * 400).min(65_535) as u16;
            seq = seq.wrapping_add(1);
            let pkt = rtp_packet(
                pt,
                i == 0,
                seq,
                ts,
                0x7e7e,
                &[code, 0, (dur >> 8) as u8, dur as u8],
            );
            self.rtp.send_to(&pkt, to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dur = (ms * 8).min(65_535) as u16;
        for _ in 0..3 {
            seq = seq.wrapping_add(1);
            let pkt = rtp_packet(
                pt,
                false,
                seq,
                ts,
                0x7e7e,
                &[code, 0x80, (dur >> 8) as u8, dur as u8],
            );
            self.rtp.send_to(&pkt, to).await.unwrap();
        }
    }

    /// Every RTP packet that arrives in the next `span`.
    pub async fn recv_rtp_for(&self, span: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
        let end = tokio::time::Instant::now() + span;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 2048];
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(end, self.rtp.recv_from(&mut buf)).await
        {
            out.push((buf[..n].to_vec(), from));
        }
        out
    }

    /// Throws away the RTP queued so far, so that a full socket buffer (prompts nobody read)
    /// does not drop the start of what the test listens for next.
    pub fn drain_rtp(&self) {
        let mut buf = [0u8; 2048];
        while self.rtp.try_recv_from(&mut buf).is_ok() {}
    }

    /// Every RTP packet that arrives within `wait` of the previous one.
    pub async fn recv_rtp(&self, wait: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 2048];
        while let Ok(Ok((n, from))) = tokio::time::timeout(wait, self.rtp.recv_from(&mut buf)).await
        {
            out.push((buf[..n].to_vec(), from));
        }
        out
    }
}

/// An RTP packet built by hand, with exactly the timestamp given (telephone-events are told
/// apart by their timestamps).
fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Whether RTP packets carry a prompt of the default English set: its first three µ-law
/// frames, in a row.
pub fn carries_prompt<'a>(packets: impl IntoIterator<Item = &'a [u8]>, name: &str) -> bool {
    let (set, _) = prompts::set::PromptSet::load(prompts::set::default_dir()).unwrap();
    let p = set.get("en", name).unwrap();
    let frames: Vec<&[u8]> = p.ulaw.chunks(160).take(3).collect();
    let got: Vec<&[u8]> = packets
        .into_iter()
        .filter_map(|b| rtp::read(b).map(|r| r.payload))
        .collect();
    got.windows(frames.len()).any(|w| w == frames.as_slice())
}

/// The shipped flows with the credit warning `seconds` before the end instead of 60, so that
/// a test of a few seconds' credit hears it.
pub fn flows_warning_at(seconds: u32) -> tempfile::TempDir {
    let flows = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(ivr::shipped_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&p).unwrap().replace(
                "warning_seconds: 60",
                &format!("warning_seconds: {seconds}"),
            );
            std::fs::write(flows.path().join(p.file_name().unwrap()), text).unwrap();
        }
    }
    flows
}

/// The RTP address in an SDP body.
pub fn sdp_addr(body: &[u8]) -> SocketAddr {
    b2bua::media::sdp::parse(body).expect("SDP").rtp
}
