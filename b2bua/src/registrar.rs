//! Our registrar for softphone subscribers (RFC 3261 §10.3), without I/O: what a REGISTER
//! is asking, whether its credentials are good, which bindings it adds, refreshes and
//! removes, and the answer. The engine (`engine/subscribers.rs`) fetches the account and
//! writes the bindings between these steps; the time is always passed in.
//!
//! A REGISTER is taken in three steps: [`Registrar::first_look`] needs nothing but the
//! message (a domain not ours, no credentials or a nonce past its life are answered at once,
//! without touching the database); [`Registrar::authorized`] checks the answer against the
//! account's HA1 and the replay memory; [`changes`] reads what the REGISTER does to the
//! bindings and [`ok`] writes the 200 that lists them.

use crate::config::Subscribers;
use crate::sip::digest::Algorithm;
use crate::sip::digest_server::{issued_at, Answer, NonceState, Nonces, Replay, Replays};
use crate::sip::message::{
    addr_uri, hdr, param, reply_to, response_to, set_phrase, Request, Response, SipExt,
};
use crate::transport::Peer;
use rating::store::{Binding, DigestAlgorithm, SipAccount, SipStatus};

/// What a REGISTER needs after its first look.
#[derive(Debug)]
pub enum FirstLook {
    /// Answer it now (a challenge, or a refusal).
    Answer(Response),
    /// Its credentials name this account; fetch it and call [`Registrar::authorized`].
    Lookup {
        username: String,
        domain: String,
        answer: Answer,
    },
}

/// The registrar's state: the nonce key and the answers already seen.
#[derive(Debug)]
pub struct Registrar {
    cfg: Subscribers,
    /// `cfg.domains`, for a lookup per request that costs the same however many there are.
    domains: std::collections::HashSet<String>,
    nonces: Nonces,
    replays: Replays,
    /// When the replay memory last dropped the nonces past their life (once a second, not
    /// on every request: it is a walk over all of them).
    expired_at_ms: u64,
}

/// An answer to a subscriber: what went wrong is on the status line too (a softphone shows
/// its user the phrase and rarely a Warning), besides the Warning for the logs.
pub fn told(req: &Request, code: u16, why: Option<&str>, tag: &str) -> Response {
    let mut r = reply_to(req, code, why, tag);
    if let Some(w) = why {
        set_phrase(&mut r, w);
    }
    r
}

/// What a subscriber's request asks of us, which decides where its credentials go: a
/// REGISTER is our registrar's (401, `Authorization`, the To is the address it registers); an
/// INVITE is a call we place for it (407, `Proxy-Authorization`, the From is who calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asking {
    Register,
    Call,
}

impl Asking {
    fn of(req: &Request) -> Asking {
        if req.method == crate::sip::message::Method::Register {
            Asking::Register
        } else {
            Asking::Call
        }
    }

    fn code(self) -> u16 {
        match self {
            Asking::Register => 401,
            Asking::Call => 407,
        }
    }

    fn challenge_header(self) -> &'static str {
        match self {
            Asking::Register => "WWW-Authenticate",
            Asking::Call => "Proxy-Authenticate",
        }
    }

    fn credentials_header(self) -> &'static str {
        match self {
            Asking::Register => "Authorization",
            Asking::Call => "Proxy-Authorization",
        }
    }

    /// The header naming the subscriber.
    fn identity_header(self) -> &'static str {
        match self {
            Asking::Register => "To",
            Asking::Call => "From",
        }
    }
}

/// Where a REGISTER came from, as its binding keeps it (`udp:192.0.2.1:5060`).
pub fn source_of(peer: &Peer) -> String {
    format!("{}:{}", peer.proto, peer.addr).to_ascii_lowercase()
}

/// Where requests to a binding go, read back from [`source_of`]'s text; `None` for text it
/// did not write. The connection is found again by its address.
pub fn peer_of(source: &str) -> Option<Peer> {
    let (proto, addr) = source.split_once(':')?;
    let proto = match proto {
        "udp" => crate::routing::Proto::Udp,
        "tcp" => crate::routing::Proto::Tcp,
        "tls" => crate::routing::Proto::Tls,
        _ => return None,
    };
    Some(Peer {
        proto,
        addr: addr.parse().ok()?,
        conn: None,
    })
}

/// The domain a subscriber's request is for: a REGISTER's Request-URI
/// (`sip:voip.example.com`), a call's From (`<sip:alice@voip.example.com>`).
pub fn domain_of(req: &Request) -> String {
    match Asking::of(req) {
        Asking::Register => req.uri.host_with_port.host.to_string().to_ascii_lowercase(),
        Asking::Call => req
            .header("From")
            .map(addr_uri)
            .and_then(|u| u.split_once('@').map(|(_, h)| h))
            .map(|h| {
                let h = h.split([';', '?', '>']).next().unwrap_or(h);
                // Without a port: `voip.example.com:5060` is the domain `voip.example.com`.
                match h.rsplit_once(':') {
                    Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
                    _ => h,
                }
                .to_ascii_lowercase()
            })
            .unwrap_or_default(),
    }
}

impl Registrar {
    /// A registrar with the configured rules.
    pub fn new(cfg: Subscribers) -> Registrar {
        let nonces = Nonces::new(cfg.nonce_key, cfg.nonce_lifetime.as_millis() as u64);
        let replays = Replays::new(cfg.nonces_remembered);
        Registrar {
            domains: cfg.domains.iter().cloned().collect(),
            cfg,
            nonces,
            replays,
            expired_at_ms: 0,
        }
    }

    /// Whether a domain is one of ours.
    pub fn serves(&self, domain: &str) -> bool {
        self.domains.contains(domain)
    }

    /// A 401 (a REGISTER) or 407 (a call) challenging `req` for `realm`: one challenge per
    /// algorithm.
    pub fn challenge(
        &self,
        req: &Request,
        realm: &str,
        stale: bool,
        now_ms: u64,
        tag: &str,
    ) -> Response {
        let asking = Asking::of(req);
        let mut r = told(req, asking.code(), None, tag);
        for c in self
            .nonces
            .challenges(&self.cfg.algorithms, realm, now_ms, stale)
        {
            r.headers.push(hdr(asking.challenge_header(), c));
        }
        r
    }

    /// Everything that can be answered from the request (a REGISTER, or a subscriber's
    /// INVITE) alone.
    pub fn first_look(&self, req: &Request, now_ms: u64, tag: &str) -> FirstLook {
        let asking = Asking::of(req);
        let domain = domain_of(req);
        if !self.serves(&domain) {
            return FirstLook::Answer(told(req, 404, Some("not a domain we serve"), tag));
        }
        let Some(value) = req.header(asking.credentials_header()) else {
            return FirstLook::Answer(self.challenge(req, &domain, false, now_ms, tag));
        };
        let answer = match Answer::parse(value) {
            Ok(a) => a,
            Err(why) => return FirstLook::Answer(told(req, 400, Some(&why), tag)),
        };
        // Credentials for another realm, or by an algorithm we did not offer (or a stale or
        // forged nonce) get a fresh challenge for ours: the client tries again without
        // asking its user.
        if answer.realm != domain || !self.cfg.algorithms.contains(&answer.algorithm) {
            return FirstLook::Answer(self.challenge(req, &domain, false, now_ms, tag));
        }
        match self.nonces.check(&answer.nonce, now_ms) {
            NonceState::Fresh => {}
            NonceState::Stale => {
                return FirstLook::Answer(self.challenge(req, &domain, true, now_ms, tag))
            }
            NonceState::Forged => {
                return FirstLook::Answer(self.challenge(req, &domain, false, now_ms, tag))
            }
        }
        // The To of a REGISTER is the address of record, the From of a call its caller; its
        // user must be the one who authenticates, or one subscriber could move another's
        // calls to itself, or call on another's money.
        let aor_user = req
            .header(asking.identity_header())
            .map(addr_uri)
            .and_then(crate::sip::message::uri_user)
            .unwrap_or("");
        if aor_user != answer.username {
            let why = match asking {
                Asking::Register => "the credentials are not for the address being registered",
                Asking::Call => "the credentials are not the caller's",
            };
            return FirstLook::Answer(told(req, 403, Some(why), tag));
        }
        FirstLook::Lookup {
            username: answer.username.clone(),
            domain,
            answer,
        }
    }

    /// Whether the looked-up account (`None`: there is none) is the one that answered, and
    /// with an answer not seen before. `Err` is the response to send instead.
    pub fn authorized(
        &mut self,
        req: &Request,
        answer: &Answer,
        account: Option<&SipAccount>,
        now_ms: u64,
        tag: &str,
    ) -> Result<(), Response> {
        let realm = domain_of(req);
        let alg = match answer.algorithm {
            Algorithm::Md5 => DigestAlgorithm::Md5,
            _ => DigestAlgorithm::Sha256,
        };
        let method = req.method.to_string();
        // An unknown name is answered like a wrong password, so names cannot be probed.
        let right = account.is_some_and(|a| answer.is_right(&method, a.ha1(alg)));
        if !right {
            crate::metrics::get().limit_hit("register_wrong_credentials");
            return Err(self.challenge(req, &realm, false, now_ms, tag));
        }
        let issued = issued_at(&answer.nonce).unwrap_or(0);
        match self
            .replays
            .accept(&answer.nonce, issued, answer.qop.as_ref().map(|q| q.1))
        {
            Replay::New => {}
            Replay::Again => {
                crate::metrics::get().limit_hit("register_replayed");
                return Err(self.challenge(req, &realm, false, now_ms, tag));
            }
            Replay::Forgotten => return Err(self.challenge(req, &realm, true, now_ms, tag)),
        }
        if now_ms >= self.expired_at_ms + 1000 {
            self.expired_at_ms = now_ms;
            self.replays
                .expire(now_ms.saturating_sub(self.cfg.nonce_lifetime.as_millis() as u64));
        }
        if account.is_some_and(|a| a.status == SipStatus::Blocked) {
            return Err(told(req, 403, Some("account blocked"), tag));
        }
        Ok(())
    }

    /// The configured rules.
    pub fn rules(&self) -> &Subscribers {
        &self.cfg
    }
}

/// What a REGISTER does to an account's bindings (the store applies it, in one transaction).
pub use rating::store::BindingChange as Changes;

/// Reads the Contacts and expiries of a REGISTER under the registrar's rules; `Err` is the
/// answer (400 for a malformed one, 423 with Min-Expires for one too short). `udp_source` is
/// where a REGISTER over UDP came from: a Contact that names another address is behind NAT,
/// and is granted at most `nat_expires`, so that its re-registrations keep the NAT's mapping
/// open for the calls we send it (the UDP keep-alive; TCP has its CRLF pings).
pub fn changes(
    req: &Request,
    rules: &Subscribers,
    tag: &str,
    udp_source: Option<std::net::SocketAddr>,
) -> Result<Changes, Response> {
    let header_expires = match req.header("Expires").map(|e| e.trim().parse::<u32>()) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(_)) => {
            return Err(told(
                req,
                400,
                Some("Expires is not a number of seconds"),
                tag,
            ))
        }
    };
    let contacts = req.header_values("Contact");
    if contacts.is_empty() {
        return Ok(Changes::Query);
    }
    if contacts.iter().any(|c| c.trim() == "*") {
        // RFC 3261 §10.3 step 6: `*` only alone and only with Expires: 0.
        if contacts.len() != 1 || header_expires != Some(0) {
            return Err(told(
                req,
                400,
                Some("Contact: * needs Expires: 0 and no other Contact"),
                tag,
            ));
        }
        return Ok(Changes::RemoveAll);
    }
    let mut set = Vec::new();
    for c in contacts {
        let uri = addr_uri(c);
        if crate::sip::message::request_uri(uri).is_none() {
            return Err(told(
                req,
                400,
                Some("a Contact is not a SIP URI we can send to"),
                tag,
            ));
        }
        let asked = match param(c, "expires").map(|e| e.parse::<u32>()) {
            None => header_expires.unwrap_or(rules.max_expires),
            Some(Ok(e)) => e,
            Some(Err(_)) => {
                return Err(told(
                    req,
                    400,
                    Some("a Contact's expires is not a number of seconds"),
                    tag,
                ))
            }
        };
        if asked != 0 && asked < rules.min_expires {
            let mut r = told(req, 423, None, tag);
            r.headers
                .push(hdr("Min-Expires", rules.min_expires.to_string()));
            return Err(r);
        }
        let most = match udp_source {
            Some(from) if !names(uri, from) => rules.nat_expires,
            _ => rules.max_expires,
        };
        set.push((uri.to_string(), asked.min(most)));
    }
    Ok(Changes::Set(set))
}

/// Whether a Contact URI names `from` itself (an IP literal and port, 5060 if none): a
/// client that is not behind NAT.
fn names(uri: &str, from: std::net::SocketAddr) -> bool {
    let Some(u) = crate::sip::message::request_uri(uri) else {
        return false;
    };
    let host = u.host_with_port.host.to_string();
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse();
    let port = u.host_with_port.port.map(|p| *p.value()).unwrap_or(5060);
    ip == Ok(from.ip()) && port == from.port()
}

/// The proxies a REGISTER came through (RFC 3327 Path, nearest first), to keep with the
/// bindings it makes: a call to the phone later goes out with them as its Route, from whichever
/// node it enters, and reaches the phone through its edge proxy. Only a trusted peer's Path
/// is kept: one from anyone else would let a phone have its calls sent wherever it names (a
/// reflection through our nodes), so it is passed over and counted. `Err` is the 400 for a
/// Path we would keep but cannot route by: more than `max_path` entries, or one that is not a
/// loose-routing (`lr`) SIP URI.
pub fn path(
    req: &Request,
    trusted: bool,
    rules: &Subscribers,
    tag: &str,
) -> Result<Vec<String>, Response> {
    let entries = req.header_values("Path");
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    if !trusted {
        crate::metrics::get().limit_hit("register_path_untrusted");
        tracing::debug!("a REGISTER's Path from a peer we do not trust is not kept");
        return Ok(Vec::new());
    }
    if entries.len() > rules.max_path {
        crate::metrics::get().limit_hit("register_path_hops");
        let why = format!("at most {} proxies on a Path", rules.max_path);
        return Err(told(req, 400, Some(&why), tag));
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if !loose_routing_sip_uri(addr_uri(e)) {
            let why = "a Path entry is not a loose-routing SIP URI";
            return Err(told(req, 400, Some(why), tag));
        }
        out.push(e.to_string());
    }
    Ok(out)
}

/// Whether a Route we would send to is a `sip:`/`sips:` URI with `lr` (we route loosely
/// only, RFC 3261 §16.12) and no character that would break the header it goes in.
fn loose_routing_sip_uri(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("sip:")
        .or_else(|| lower.strip_prefix("sips:"))
    else {
        return false;
    };
    let host = rest.split(';').next().unwrap_or("");
    let clean = !host.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>\",\"".contains(&b));
    clean
        && rest
            .split(';')
            .skip(1)
            .any(|p| p == "lr" || p.starts_with("lr="))
}

/// The 200 to a REGISTER: every binding the account has now, each with the seconds it has
/// left (RFC 3261 §10.3 step 8), and the Path kept with them when the phone said it knows
/// Path (RFC 3327 §5.3; one that did not is still reached through it, it just is not told).
pub fn ok(
    req: &Request,
    bindings: &[Binding],
    path: &[String],
    now: chrono::DateTime<chrono::Utc>,
    tag: &str,
) -> Response {
    let mut r = response_to(req, 200, Some(tag));
    let supports_path = req
        .header_values("Supported")
        .iter()
        .any(|o| o.eq_ignore_ascii_case("path"));
    if supports_path {
        for p in path {
            r.headers.push(hdr("Path", p.clone()));
        }
    }
    for b in bindings {
        let left = (b.expires_at - now).num_seconds().max(0);
        r.headers
            .push(hdr("Contact", format!("<{}>;expires={left}", b.contact)));
    }
    r.headers.push(hdr(
        "Date",
        now.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
    ));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::{authorization, Challenge, Credentials};
    use crate::sip::message::{parse_datagram, SipMessage};
    use chrono::{TimeZone, Utc};
    use std::time::Duration;

    #[test]
    fn a_bindings_source_reads_back_as_where_to_send_and_nothing_else_does() {
        for (proto, addr) in [
            (crate::routing::Proto::Udp, "192.0.2.1:5060"),
            (crate::routing::Proto::Tcp, "[2001:db8::1]:40123"),
            (crate::routing::Proto::Tls, "127.0.0.1:5061"),
        ] {
            let peer = Peer {
                proto,
                addr: addr.parse().unwrap(),
                conn: Some(7),
            };
            let back = peer_of(&source_of(&peer)).expect("reads back");
            assert_eq!((back.proto, back.addr, back.conn), (proto, peer.addr, None));
        }
        for bad in [
            "",
            "udp",
            "sctp:192.0.2.1:5060",
            "udp:192.0.2.1",
            "udp:host:5060",
        ] {
            assert!(peer_of(bad).is_none(), "{bad}");
        }
    }

    const T: u64 = 1_796_600_000_000;

    fn rules() -> Subscribers {
        Subscribers {
            domains: vec!["voip.example.com".into()],
            min_expires: 60,
            max_expires: 3600,
            max_contacts: 5,
            nonce_lifetime: Duration::from_secs(300),
            nonce_key: [3; 32],
            nonces_remembered: 1000,
            algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
            numbering: Default::default(),
            short_codes: Default::default(),
            warning: None,
            warning_prompts: Vec::new(),
            incoming_decks: Default::default(),
            nat_expires: 60,
            max_path: 4,
        }
    }

    fn register(extra: &str) -> Request {
        let text = format!(
            "REGISTER sip:voip.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr\r\n\
             From: <sip:alice@voip.example.com>;tag=a\r\nTo: <sip:alice@voip.example.com>\r\n\
             Call-ID: reg-1\r\nCSeq: 2 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(text.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    fn account(password: &str, status: SipStatus) -> SipAccount {
        SipAccount {
            id: 1,
            username: "alice".into(),
            domain: "voip.example.com".into(),
            ha1_md5: DigestAlgorithm::Md5.ha1("alice", "voip.example.com", password),
            ha1_sha256: DigestAlgorithm::Sha256.ha1("alice", "voip.example.com", password),
            card: "4000000001".into(),
            tenant: "default".into(),
            status,
            caller_id: None,
            max_calls: 1,
            bar_international: false,
            bar_premium: false,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            updated_by: "t".into(),
        }
    }

    /// Our client's answer to the registrar's challenge `ch` with `password`.
    fn answered(ch: &Response, password: &str, user: &str, nc: u32) -> String {
        let c = Challenge::best(ch.header_lines("WWW-Authenticate")).expect("a challenge");
        authorization(
            &c,
            Credentials {
                username: user,
                password,
            },
            "REGISTER",
            "sip:voip.example.com",
            "cn",
            nc,
        )
    }

    #[test]
    fn a_register_is_challenged_then_authorized_once() {
        let mut reg = Registrar::new(rules());
        let bare = register("Contact: <sip:alice@127.0.0.1:5070>\r\n");
        let FirstLook::Answer(ch) = reg.first_look(&bare, T, "t") else {
            panic!("no credentials: challenged");
        };
        assert_eq!(ch.status_code.code(), 401);
        assert_eq!(
            ch.header_lines("WWW-Authenticate").len(),
            2,
            "MD5 and SHA-256"
        );
        let auth = answered(&ch, "correct horse", "alice", 1);
        let with = register(&format!(
            "Contact: <sip:alice@127.0.0.1:5070>\r\nAuthorization: {auth}\r\n"
        ));
        let FirstLook::Lookup {
            username,
            domain,
            answer,
        } = reg.first_look(&with, T + 10, "t")
        else {
            panic!("a lookup");
        };
        assert_eq!(
            (username.as_str(), domain.as_str()),
            ("alice", "voip.example.com")
        );
        let good = account("correct horse", SipStatus::Active);
        assert!(reg
            .authorized(&with, &answer, Some(&good), T + 10, "t")
            .is_ok());
        // The same answer again is a replay: challenged afresh, not accepted.
        let again = reg
            .authorized(&with, &answer, Some(&good), T + 20, "t")
            .unwrap_err();
        assert_eq!(again.status_code.code(), 401);
        // A wrong password, or no such account, get the same fresh challenge.
        let auth = answered(&ch, "wrong", "alice", 2);
        let req = register(&format!("Authorization: {auth}\r\n"));
        let FirstLook::Lookup { answer, .. } = reg.first_look(&req, T, "t") else {
            panic!()
        };
        assert_eq!(
            reg.authorized(&req, &answer, Some(&good), T, "t")
                .unwrap_err()
                .status_code
                .code(),
            401
        );
        assert_eq!(
            reg.authorized(&req, &answer, None, T, "t")
                .unwrap_err()
                .status_code
                .code(),
            401
        );
        // A blocked account with the right password: 403.
        let auth = answered(&ch, "correct horse", "alice", 3);
        let req = register(&format!("Authorization: {auth}\r\n"));
        let FirstLook::Lookup { answer, .. } = reg.first_look(&req, T, "t") else {
            panic!()
        };
        let blocked = account("correct horse", SipStatus::Blocked);
        let r = reg
            .authorized(&req, &answer, Some(&blocked), T, "t")
            .unwrap_err();
        assert_eq!(r.status_code.code(), 403);
    }

    #[test]
    fn what_needs_no_database_is_answered_at_once() {
        let reg = Registrar::new(rules());
        let FirstLook::Answer(ch) = reg.first_look(&register(""), T, "t") else {
            panic!()
        };
        // A stale nonce: a fresh challenge that says so.
        let auth = answered(&ch, "p", "alice", 1);
        let late = register(&format!("Authorization: {auth}\r\n"));
        let FirstLook::Answer(r) = reg.first_look(&late, T + 301_000, "t") else {
            panic!()
        };
        assert_eq!(r.status_code.code(), 401);
        assert!(r.header("WWW-Authenticate").unwrap().contains("stale=true"));
        // Someone else's name in the credentials: 403.
        let auth = answered(&ch, "p", "mallory", 1);
        let other = register(&format!("Authorization: {auth}\r\n"));
        let FirstLook::Answer(r) = reg.first_look(&other, T, "t") else {
            panic!()
        };
        assert_eq!(r.status_code.code(), 403);
        // Malformed credentials: 400 saying why.
        let bad = register("Authorization: Digest username=\"alice\"\r\n");
        let FirstLook::Answer(r) = reg.first_look(&bad, T, "t") else {
            panic!()
        };
        assert_eq!(r.status_code.code(), 400);
        assert!(r.header("Warning").unwrap().contains("no realm"));
        // A forged nonce: challenged, never looked up.
        let forged = auth_with_nonce(&format!("000001a2b3c4d5e6{}", "f".repeat(48)));
        let FirstLook::Answer(r) = reg.first_look(&forged, T, "t") else {
            panic!()
        };
        assert_eq!(r.status_code.code(), 401);
        // A domain not ours: 404.
        let mut elsewhere = register("");
        elsewhere.uri = crate::sip::message::parse_uri("sip:other.example").unwrap();
        let FirstLook::Answer(r) = reg.first_look(&elsewhere, T, "t") else {
            panic!()
        };
        assert_eq!(r.status_code.code(), 404);
    }

    fn auth_with_nonce(nonce: &str) -> Request {
        register(&format!(
            "Authorization: Digest username=\"alice\", realm=\"voip.example.com\", nonce=\"{nonce}\", \
             uri=\"sip:voip.example.com\", response=\"00\", algorithm=MD5\r\n"
        ))
    }

    #[test]
    fn contacts_and_expiries_are_read_under_the_rules() {
        let r = rules();
        let c = |extra: &str| changes(&register(extra), &r, "t", None);
        assert_eq!(c(""), Ok(Changes::Query));
        assert_eq!(
            c("Contact: <sip:a@127.0.0.1:5070>;expires=600, <sip:a@127.0.0.1:5072>\r\nExpires: 120\r\n"),
            Ok(Changes::Set(vec![
                ("sip:a@127.0.0.1:5070".into(), 600),
                ("sip:a@127.0.0.1:5072".into(), 120)
            ]))
        );
        assert_eq!(
            c("Contact: <sip:a@127.0.0.1:5070>\r\n"),
            Ok(Changes::Set(vec![("sip:a@127.0.0.1:5070".into(), 3600)])),
            "no expiry: the longest we grant"
        );
        assert_eq!(
            c("Contact: <sip:a@127.0.0.1:5070>;expires=99999\r\n"),
            Ok(Changes::Set(vec![("sip:a@127.0.0.1:5070".into(), 3600)])),
            "cut to the longest"
        );
        assert_eq!(
            c("Contact: <sip:a@127.0.0.1:5070>;expires=0\r\n"),
            Ok(Changes::Set(vec![("sip:a@127.0.0.1:5070".into(), 0)]))
        );
        assert_eq!(c("Contact: *\r\nExpires: 0\r\n"), Ok(Changes::RemoveAll));
        let short = c("Contact: <sip:a@127.0.0.1:5070>;expires=30\r\n").unwrap_err();
        assert_eq!(short.status_code.code(), 423);
        assert_eq!(short.header("Min-Expires"), Some("60"));
        for bad in [
            "Contact: *\r\n",
            "Contact: *, <sip:a@h>\r\nExpires: 0\r\n",
            "Contact: <sip:a@h>\r\nExpires: soon\r\n",
            "Contact: <sip:a@h>;expires=x\r\n",
            "Contact: <mailto:a@h>\r\n",
        ] {
            assert_eq!(c(bad).unwrap_err().status_code.code(), 400, "{bad:?}");
        }
    }

    #[test]
    fn a_udp_client_behind_nat_is_granted_its_keep_alive_interval() {
        let r = rules();
        let from: std::net::SocketAddr = "198.51.100.7:40312".parse().unwrap();
        let c = |contact: &str, udp| {
            let extra = format!("Contact: <{contact}>;expires=3600\r\n");
            match changes(&register(&extra), &r, "t", udp) {
                Ok(Changes::Set(set)) => set[0].1,
                other => panic!("{other:?}"),
            }
        };
        // The Contact names a private address, or the right host on another port: the
        // REGISTER came through a NAT, and its mapping lives only as long as traffic does.
        assert_eq!(c("sip:a@192.168.1.20:5060", Some(from)), 60);
        assert_eq!(c("sip:a@198.51.100.7:5060", Some(from)), 60);
        assert_eq!(c("sip:a@phone.example.com:40312", Some(from)), 60);
        // A client reachable where it says is left alone, and so is one over TCP or TLS.
        assert_eq!(c("sip:a@198.51.100.7:40312", Some(from)), 3600);
        assert_eq!(c("sip:a@192.168.1.20:5060", None), 3600);
        let v6: std::net::SocketAddr = "[2001:db8::7]:5060".parse().unwrap();
        assert_eq!(c("sip:a@[2001:db8::7]", Some(v6)), 3600);
    }

    #[test]
    fn a_subscribers_call_is_challenged_407_and_must_be_from_itself() {
        let reg = Registrar::new(rules());
        let invite = |extra: &str| {
            let text = format!(
                "INVITE sip:5555233@voip.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKi\r\n\
                 From: <sip:alice@voip.example.com:5060>;tag=a\r\nTo: <sip:5555233@voip.example.com>\r\n\
                 Call-ID: call-1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
            );
            match parse_datagram(text.as_bytes()).unwrap() {
                SipMessage::Request(r) => r,
                SipMessage::Response(_) => unreachable!(),
            }
        };
        assert_eq!(
            domain_of(&invite("")),
            "voip.example.com",
            "the From's host, no port"
        );
        let FirstLook::Answer(ch) = reg.first_look(&invite(""), T, "t") else {
            panic!()
        };
        assert_eq!(ch.status_code.code(), 407);
        assert_eq!(ch.header_lines("Proxy-Authenticate").len(), 2);
        let c = Challenge::best(ch.header_lines("Proxy-Authenticate")).unwrap();
        let cred = Credentials {
            username: "alice",
            password: "p",
        };
        let v = authorization(&c, cred, "INVITE", "sip:5555233@voip.example.com", "cn", 1);
        let with = invite(&format!("Proxy-Authorization: {v}\r\n"));
        assert!(matches!(
            reg.first_look(&with, T, "t"),
            FirstLook::Lookup { .. }
        ));
        // Credentials in the wrong header are none at all: challenged.
        let wrong_header = invite(&format!("Authorization: {v}\r\n"));
        let FirstLook::Answer(r) = reg.first_look(&wrong_header, T, "t") else {
            panic!()
        };
        assert_eq!(r.status_code.code(), 407);
        // Bob's credentials on Alice's call: 403.
        let cred = Credentials {
            username: "bob",
            password: "p",
        };
        let v = authorization(&c, cred, "INVITE", "sip:5555233@voip.example.com", "cn", 1);
        let FirstLook::Answer(r) =
            reg.first_look(&invite(&format!("Proxy-Authorization: {v}\r\n")), T, "t")
        else {
            panic!()
        };
        assert_eq!(r.status_code.code(), 403);
    }

    #[test]
    fn bindings_count_up_and_the_200_lists_them() {
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap();
        let b = Binding {
            contact: "sip:a@127.0.0.1:5070".into(),
            source: "udp:127.0.0.1:5070".into(),
            call_id: "reg-1".into(),
            cseq: 2,
            expires_at: now + chrono::Duration::seconds(600),
            node: "n".into(),
            path: Vec::new(),
        };
        use rating::store::in_order;
        assert!(!in_order(&b, "reg-1", 2), "a retransmission");
        assert!(in_order(&b, "reg-1", 3));
        assert!(in_order(&b, "another-client", 1));
        let r = ok(&register(""), std::slice::from_ref(&b), &[], now, "t");
        assert_eq!(r.status_code.code(), 200);
        assert_eq!(
            r.header("Contact"),
            Some("<sip:a@127.0.0.1:5070>;expires=600")
        );
        assert!(r.header("Date").unwrap().ends_with("GMT"));
    }

    #[test]
    fn a_trusted_proxys_path_is_kept_and_told_back_only_to_a_phone_that_knows_path() {
        let rules = rules();
        let edge = "<sip:127.0.0.1:5080;lr;received=sip:192.0.2.7:40312>";
        let req = register(&format!(
            "Path: {edge}\r\nPath: <sip:edge2.example.net;lr>\r\n"
        ));
        let kept = path(&req, true, &rules, "t").unwrap();
        assert_eq!(kept, [edge, "<sip:edge2.example.net;lr>"], "nearest first");
        assert_eq!(
            path(&req, false, &rules, "t").unwrap(),
            Vec::<String>::new(),
            "a phone cannot name its own route"
        );
        assert!(path(&register(""), true, &rules, "t").unwrap().is_empty());
        // Kept but not told: the phone did not say it knows Path.
        let r = ok(&req, &[], &kept, Utc::now(), "t");
        assert!(r.header("Path").is_none());
        let knows = register(&format!("Supported: replaces, path\r\nPath: {edge}\r\n"));
        let r = ok(&knows, &[], &kept, Utc::now(), "t");
        assert_eq!(r.header_values("Path"), kept);
        // What we could not route by is a 400 that says why.
        for (bad, why) in [
            ("<sip:127.0.0.1:5080>", "loose-routing"),
            ("<tel:+15551234;lr>", "loose-routing"),
            ("<sip:;lr>", "loose-routing"),
            (
                "<sip:a;lr>, <sip:b;lr>, <sip:c;lr>, <sip:d;lr>, <sip:e;lr>",
                "at most 4 proxies",
            ),
        ] {
            let r = path(&register(&format!("Path: {bad}\r\n")), true, &rules, "t").expect_err(bad);
            assert_eq!(r.status_code.code(), 400, "{bad}");
            assert!(r.header("Warning").unwrap().contains(why), "{bad}: {r:?}");
        }
    }
}
