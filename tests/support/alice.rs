//! alice@voip.example.com, a subscriber with the password `correcthorse1`, as a raw UDP phone
//! written by hand, so that each test sees every answer it is sent: her REGISTERs and
//! INVITEs with their challenges answered, her answers to the calls she is sent. Shared by
//! the end-to-end tests (`sipp.rs`) and the scale-out test, where she registers through
//! Kamailio.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

/// The next answer on `sock` that is not a 100 Trying.
pub async fn next_answer(sock: &tokio::net::UdpSocket) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        let r = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !r.starts_with("SIP/2.0 100 ") {
            return r;
        }
    }
}

/// Alice's credentials for the strongest challenge in a 401 or 407's `header`.
pub fn answer(challenge: &str, header: &str, method: &str, uri: &str) -> String {
    let ch = challenge
        .lines()
        .filter_map(|l| l.strip_prefix(header)?.strip_prefix(": "))
        .filter_map(b2bua::sip::digest::Challenge::parse)
        .max_by_key(|c| c.algorithm)
        .expect("a challenge");
    b2bua::sip::digest::authorization(
        &ch,
        b2bua::sip::digest::Credentials {
            username: "alice",
            password: "correcthorse1",
        },
        method,
        uri,
        "cn1",
        1,
    )
}

/// The subscriber alice@voip.example.com (see [`Rig::alice`]) as a raw UDP phone: her INVITEs
/// to a number, answered challenges and ACKs, written by hand so each test sees every answer.
pub struct Alice {
    pub sock: tokio::net::UdpSocket,
    pub me: SocketAddr,
    pub b2b: SocketAddr,
}

impl Alice {
    pub async fn new(b2b: SocketAddr) -> Alice {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = sock.local_addr().unwrap();
        Alice { sock, me, b2b }
    }

    pub async fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.b2b).await.unwrap();
    }

    pub fn invite(&self, call: &str, to: &str, cseq: u32, auth: &str) -> String {
        let me = self.me;
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        format!(
            "INVITE sip:{to}@voip.example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}{cseq}\r\n\
From: <sip:alice@voip.example.com>;tag=b1\r\nTo: <sip:{to}@voip.example.com>\r\nCall-ID: {call}\r\n\
CSeq: {cseq} INVITE\r\nContact: <sip:alice@{me}>\r\nMax-Forwards: 70\r\n{auth}\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    }

    /// The ACK for a final answer that was not a 2xx (else it is sent again and again).
    pub async fn ack(&self, call: &str, cseq: u32, answer: &str) {
        let to = answer
            .lines()
            .find(|l| l.starts_with("To: "))
            .expect("a To header");
        let uri = to
            .split('<')
            .nth(1)
            .and_then(|r| r.split('>').next())
            .expect("a To URI");
        let me = self.me;
        self.send(&format!(
            "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}{cseq}\r\n\
From: <sip:alice@voip.example.com>;tag=b1\r\n{to}\r\nCall-ID: {call}\r\n\
CSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ))
        .await;
    }

    /// Calls `to` on `call`: challenged 407 (ACKed), then the INVITE again (CSeq 2) with her
    /// password's credentials. Its answer is the caller's to read.
    pub async fn authenticated(&self, call: &str, to: &str) {
        self.send(&self.invite(call, to, 1, "")).await;
        let challenge = next_answer(&self.sock).await;
        self.ack(call, 1, &challenge).await;
        assert!(challenge.starts_with("SIP/2.0 407 "), "{challenge}");
        let uri = format!("sip:{to}@voip.example.com");
        let auth = answer(&challenge, "Proxy-Authenticate", "INVITE", &uri);
        let auth = format!("Proxy-Authorization: {auth}\r\n");
        self.send(&self.invite(call, to, 2, &auth)).await;
    }

    /// One REGISTER of hers on `call`: `contact` bound for `expires` seconds, with `auth`
    /// lines.
    pub fn register_request(
        &self,
        call: &str,
        cseq: u32,
        contact: &str,
        expires: u32,
        auth: &str,
    ) -> String {
        let me = self.me;
        format!(
            "REGISTER sip:voip.example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}r{cseq};rport\r\n\
From: <sip:alice@voip.example.com>;tag=r{call}\r\nTo: <sip:alice@voip.example.com>\r\nCall-ID: {call}\r\n\
CSeq: {cseq} REGISTER\r\nContact: <{contact}>\r\nExpires: {expires}\r\n{auth}Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n"
        )
    }

    /// Registers `contact` for `expires` seconds: challenged 401, then asked again (CSeq 2)
    /// with her password. The answer to that, and the Authorization line it carried.
    pub async fn register_as(&self, call: &str, contact: &str, expires: u32) -> (String, String) {
        self.send(&self.register_request(call, 1, contact, expires, ""))
            .await;
        let challenge = next_answer(&self.sock).await;
        assert!(challenge.starts_with("SIP/2.0 401 "), "{challenge}");
        let auth = answer(
            &challenge,
            "WWW-Authenticate",
            "REGISTER",
            "sip:voip.example.com",
        );
        let auth = format!("Authorization: {auth}\r\n");
        self.send(&self.register_request(call, 2, contact, expires, &auth))
            .await;
        (next_answer(&self.sock).await, auth)
    }

    /// Registers her Contact (`sip:alice@<her address>`) for 600 s.
    pub async fn register(&self, call: &str) {
        let (ok, _) = self
            .register_as(call, &format!("sip:alice@{}", self.me), 600)
            .await;
        assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    }

    /// The next request of `method` she is sent (others, and retransmissions of what she
    /// already answered, are passed over).
    pub async fn next_request(&self, method: &str) -> String {
        self.next_request_within(method, Duration::from_secs(5))
            .await
    }

    pub async fn next_request_within(&self, method: &str, wait: Duration) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(wait, self.sock.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {method} came"))
                .unwrap();
            let r = String::from_utf8_lossy(&buf[..n]).into_owned();
            if r.starts_with(&format!("{method} ")) {
                return r;
            }
        }
    }

    /// Her phone's answer to a request she was sent, with her To tag and, for a 200 to an
    /// INVITE, her SDP.
    pub async fn answer(&self, req: &str, code: u16, reason: &str, sdp: bool) {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for line in req.lines().take_while(|l| !l.is_empty()) {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            match name.as_str() {
                "via" | "from" | "call-id" | "cseq" | "record-route" => {
                    out += &format!("{line}\r\n")
                }
                "to" if line.contains("tag=") => out += &format!("{line}\r\n"),
                "to" => out += &format!("{line};tag=phone\r\n"),
                _ => {}
            }
        }
        out += &format!("Contact: <sip:alice@{}>\r\n", self.me);
        let body = if sdp {
            "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40100 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        } else {
            ""
        };
        if sdp {
            out += "Content-Type: application/sdp\r\n";
        }
        out += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        self.send(&out).await;
    }

    /// Hangs up a call she answered (`invite` as she got it, `answer`ed with her tag): the
    /// BYE goes the dialog's way, through every proxy that stayed in it (its Record-Route,
    /// in order, as Route: RFC 3261 §12.1.1), to the caller's Contact.
    pub async fn hang_up(&self, invite: &str) {
        let d = Dialog::of(invite, false);
        let (me, call) = (self.me, d.get("Call-ID"));
        self.send(&format!(
            "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbye{call};rport\r\n{}\
From: {};tag=phone\r\nTo: {}\r\nCall-ID: {call}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n",
            d.target(),
            d.routes,
            d.get("To"),
            d.get("From"),
        ))
        .await;
    }

    /// A request in the dialog her INVITE on `call` made, `ok` being its 2xx: to the
    /// answerer's Contact, through every proxy that stayed in (the 2xx's Record-Route,
    /// reversed: RFC 3261 §12.1.2).
    fn in_her_dialog(&self, method: &str, call: &str, cseq: u32, ok: &str) -> String {
        let d = Dialog::of(ok, true);
        let me = self.me;
        format!(
            "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}{method}{cseq};rport\r\n\
{}From: <sip:alice@voip.example.com>;tag=b1\r\nTo: {}\r\nCall-ID: {call}\r\n\
CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            d.target(),
            d.routes,
            d.get("To")
        )
    }

    /// The ACK for the 2xx `ok` to her authenticated INVITE (CSeq 2) on `call`.
    pub async fn ack_ok(&self, call: &str, ok: &str) {
        self.send(&self.in_her_dialog("ACK", call, 2, ok)).await;
    }

    /// Hangs up the call her authenticated INVITE on `call` made (`ok` its 2xx).
    pub async fn bye_ok(&self, call: &str, ok: &str) {
        self.send(&self.in_her_dialog("BYE", call, 3, ok)).await;
    }
}

/// What a dialog's requests are built from, read off the message that made it: its header
/// lines, and its Record-Route as our Route lines (reversed for the caller's side).
struct Dialog<'a> {
    msg: &'a str,
    head: Vec<&'a str>,
    routes: String,
}

impl<'a> Dialog<'a> {
    fn of(msg: &'a str, reversed: bool) -> Dialog<'a> {
        let head: Vec<&str> = msg.lines().take_while(|l| !l.is_empty()).collect();
        let mut rr: Vec<&str> = head
            .iter()
            .filter_map(|l| l.strip_prefix("Record-Route: "))
            .collect();
        if reversed {
            rr.reverse();
        }
        let routes = rr.iter().map(|r| format!("Route: {r}\r\n")).collect();
        Dialog { msg, head, routes }
    }

    fn get(&self, name: &str) -> &'a str {
        self.head
            .iter()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .unwrap_or_else(|| panic!("no {name} in {}", self.msg))
    }

    /// The other side's Contact URI: where the dialog's requests go.
    fn target(&self) -> &'a str {
        let c = self.get("Contact");
        c.split('<')
            .nth(1)
            .and_then(|t| t.split('>').next())
            .unwrap_or(c)
    }
}
