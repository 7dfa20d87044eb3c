//! Registration with carriers (RFC 3261 §10) for trunks that take calls only from a
//! registered user: a gateway with `register:` is sent a REGISTER at start, answers its
//! challenge with the gateway's credentials, refreshes the binding before it expires, and
//! after a failure tries again with a growing pause. While we are not registered the trunk
//! offers no channels, so routing fails over to the next gateway instead of sending calls a
//! carrier would refuse.
//!
//! [`Registration`] is the protocol without I/O (a response or a timeout in, with the time;
//! the next REGISTER or the next wake-up out); the engine sends what it says.

use super::{Engine, Wake};
use crate::call::legs::Local;
use crate::routing::Gateway;
use crate::sip::digest::{answer, Credentials};
use crate::sip::message::{
    hdr, new_request, param, parse_uri, resent, Headers, Method, Request, Response, SipExt,
};
use crate::sip::transaction::{self, TxKey};
use crate::transport::Peer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The first pause after a failure; each failure in a row doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where a registration stands, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not sent yet.
    Idle,
    /// A REGISTER is out.
    Registering,
    /// The carrier holds our binding until `until`.
    Registered { until: Instant },
    /// The last attempt failed with `code` (408: no answer); another goes out at `retry`.
    Failed { code: u16, retry: Instant },
}

/// What a registration wants next.
#[derive(Debug)]
pub enum Step {
    /// Send this REGISTER.
    Send(Request),
    /// Nothing until this time (a refresh, or a retry).
    WakeAt(Instant),
}

/// One trunk's registration.
#[derive(Debug)]
pub struct Registration {
    /// Our address of record (`sip:user@domain`), the To and From of every REGISTER.
    aor: String,
    /// The registrar's URI.
    registrar: String,
    contact: String,
    /// One Call-ID and From tag for every REGISTER of this binding (RFC 3261 §10.2).
    call_id: String,
    from_tag: String,
    /// The CSeq of the last REGISTER sent.
    cseq: u32,
    /// The Expires we ask for (raised once by a 423).
    expires: u32,
    /// The last REGISTER, which a challenge or a 423 is answered on.
    last: Option<Request>,
    backoff: Duration,
    /// Our binding is being removed (shutdown): its answer ends the registration.
    leaving: bool,
    pub status: Status,
}

impl Registration {
    /// A registration for `gw` (which has `register:`), reached from `local`.
    pub fn new(gw: &Gateway, local: &Local, call_id: String, from_tag: String) -> Registration {
        let r = gw.register.as_ref().expect("a gateway that registers");
        let transport = gw.proto.uri_param();
        Registration {
            aor: format!("sip:{}@{}", r.user, r.domain),
            registrar: format!("sip:{}{transport}", r.domain),
            contact: format!(
                "<sip:{}@{}{transport}>",
                r.contact_user,
                local.hostport(gw.proto)
            ),
            call_id,
            from_tag,
            cseq: 0,
            expires: r.expires,
            last: None,
            backoff: FIRST_BACKOFF,
            leaving: false,
            status: Status::Idle,
        }
    }

    /// The next REGISTER (a new CSeq; `via` our Via with its branch).
    pub fn register(&mut self, via: String) -> Request {
        self.cseq += 1;
        let mut headers = Headers::default();
        headers.push(hdr("Via", via));
        headers.push(hdr("Max-Forwards", "70"));
        headers.push(hdr("From", format!("<{}>;tag={}", self.aor, self.from_tag)));
        headers.push(hdr("To", format!("<{}>", self.aor)));
        headers.push(hdr("Call-ID", self.call_id.clone()));
        headers.push(hdr("CSeq", format!("{} REGISTER", self.cseq)));
        headers.push(hdr("Contact", self.contact.clone()));
        headers.push(hdr("Expires", self.expires.to_string()));
        let uri = parse_uri(&self.registrar).unwrap_or_default();
        let req = new_request(Method::Register, uri, headers, Vec::new());
        self.last = Some(req.clone());
        self.status = Status::Registering;
        req
    }

    /// A REGISTER that removes our binding (`Expires: 0`, RFC 3261 §10.2.2), if the carrier
    /// holds one at `now`: sent at shutdown, so the carrier stops offering calls to a node
    /// that is going away instead of waiting out the binding.
    pub fn unregister(&mut self, via: String, now: Instant) -> Option<Request> {
        if !self.is_registered(now) {
            return None;
        }
        let mut req = self.register(via);
        req.headers
            .retain(|h| crate::sip::message::name_value(h).0 != "Expires");
        req.headers.push(hdr("Expires", "0"));
        self.last = Some(req.clone());
        self.leaving = true;
        Some(req)
    }

    /// The registrar answered. `gw` gives the credentials for a challenge, `cnonce` and
    /// `branch` are fresh for an answer to it.
    pub fn on_response(
        &mut self,
        resp: &Response,
        gw: &Gateway,
        now: Instant,
        cnonce: &str,
        branch: &str,
    ) -> Option<Step> {
        let code = resp.status_code.code();
        let last = self.last.clone()?;
        match code {
            100..=199 => None,
            200..=299 if self.leaving => {
                self.status = Status::Idle;
                None
            }
            200..=299 => {
                let granted = self.granted(resp).unwrap_or(self.expires);
                if granted == 0 {
                    // The registrar kept no binding: as good as a refusal.
                    return Some(self.failed(code, now));
                }
                self.backoff = FIRST_BACKOFF;
                let granted = Duration::from_secs(u64::from(granted));
                self.status = Status::Registered {
                    until: now + granted,
                };
                // Refresh with room for a slow answer: a minute early, or at half time for a
                // short binding.
                let refresh = (granted / 2).max(granted.saturating_sub(Duration::from_secs(60)));
                Some(Step::WakeAt(now + refresh))
            }
            401 | 407 => {
                let Some(auth) = &gw.auth else {
                    tracing::warn!(gateway = %gw.name, "the registrar wants credentials and the gateway has no auth:");
                    return Some(self.failed(code, now));
                };
                let cred = Credentials {
                    username: &auth.username,
                    password: &auth.password,
                };
                match answer(&last, resp, cred, auth.realm.as_deref(), cnonce, branch) {
                    Ok(again) => Some(self.again(again)),
                    Err(why) => {
                        tracing::warn!(gateway = %gw.name, ?why, "registration refused: the challenge cannot be answered");
                        Some(self.failed(code, now))
                    }
                }
            }
            // Interval too brief: once with the registrar's minimum, if it is sane.
            423 => {
                let min = resp
                    .header("Min-Expires")
                    .and_then(|v| v.trim().parse::<u32>().ok());
                match min {
                    Some(min) if min > self.expires && min <= 86_400 => {
                        self.expires = min;
                        let again = resent(
                            &last,
                            branch,
                            &["Expires"],
                            vec![hdr("Expires", min.to_string())],
                        );
                        Some(self.again(again))
                    }
                    _ => Some(self.failed(code, now)),
                }
            }
            _ => Some(self.failed(code, now)),
        }
    }

    /// The REGISTER got no answer at all.
    pub fn on_timeout(&mut self, now: Instant) -> Step {
        self.failed(408, now)
    }

    /// A REGISTER sent again on the same binding (after a challenge or a 423).
    fn again(&mut self, req: Request) -> Step {
        self.cseq = req.cseq().map(|c| c.0).unwrap_or(self.cseq + 1);
        self.last = Some(req.clone());
        Step::Send(req)
    }

    fn failed(&mut self, code: u16, now: Instant) -> Step {
        let retry = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.status = Status::Failed { code, retry };
        Step::WakeAt(retry)
    }

    /// The seconds the registrar granted our Contact: its `expires` parameter in the answer's
    /// Contact list, else the Expires header.
    fn granted(&self, resp: &Response) -> Option<u32> {
        let ours = crate::sip::message::addr_uri(&self.contact).to_ascii_lowercase();
        resp.header_values("Contact")
            .into_iter()
            .find(|c| crate::sip::message::addr_uri(c).eq_ignore_ascii_case(&ours))
            .and_then(|c| param(c, "expires"))
            .or_else(|| resp.header("Expires"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Whether the carrier holds our binding at `now`.
    pub fn is_registered(&self, now: Instant) -> bool {
        matches!(self.status, Status::Registered { until } if until > now)
    }
}

/// The registrations of a node, by gateway, and the REGISTERs in flight.
#[derive(Default)]
pub(super) struct Registrations {
    regs: Vec<Option<Registration>>,
    pending: HashMap<TxKey, usize>,
}

impl Registrations {
    /// Gateway `i`'s registration, if it registers.
    pub fn get(&self, i: usize) -> Option<&Registration> {
        self.regs.get(i).and_then(Option::as_ref)
    }
}

impl Engine {
    /// Starts every gateway's registration; until each succeeds, its trunk takes no calls.
    pub(super) fn start_registrations(&mut self, now: Instant) {
        let local = self.settings.local.clone();
        let gateways = self.cfg.router.gateways.clone();
        self.registrations.regs = gateways
            .iter()
            .enumerate()
            .map(|(i, g)| {
                g.register.as_ref()?;
                self.lent.channels.set_registered(i, false);
                crate::metrics::get().gateway_registered(&g.name, false);
                self.wakeups
                    .push(std::cmp::Reverse((now, Wake::Register(i))));
                let host = local.hostport(g.proto).to_string();
                Some(Registration::new(
                    g,
                    &local,
                    crate::sip::message::new_call_id(&host),
                    crate::sip::message::new_tag(),
                ))
            })
            .collect();
    }

    /// At shutdown: every binding a carrier holds for us is removed (best effort: sent once
    /// the stop begins; a challenge to it is answered while the node still finishes its calls).
    pub(super) fn unregister_all(&mut self, now: Instant) {
        for i in 0..self.registrations.regs.len() {
            let Some(gw) = self.cfg.router.gateways.get(i).cloned() else {
                continue;
            };
            let via = self
                .settings
                .local
                .via_with(gw.proto, &crate::sip::message::new_branch());
            let Some(reg) = self.registrations.regs[i].as_mut() else {
                continue;
            };
            if let Some(req) = reg.unregister(via, now) {
                tracing::info!(gateway = %gw.name, "removing our registration with the carrier");
                self.lent.channels.set_registered(i, false);
                crate::metrics::get().gateway_registered(&gw.name, false);
                self.send_register(i, req, &gw, now);
            }
        }
    }

    /// Time for gateway `i`'s REGISTER (the first, a refresh or a retry).
    pub(super) fn register(&mut self, i: usize, now: Instant) {
        if self.lent.stopping {
            return;
        }
        let Some(gw) = self.cfg.router.gateways.get(i).cloned() else {
            return;
        };
        let via = self
            .settings
            .local
            .via_with(gw.proto, &crate::sip::message::new_branch());
        let Some(reg) = self.registrations.regs.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        // A wake-up left from before a later REGISTER went out is not a reason for another.
        if reg.status == Status::Registering {
            return;
        }
        let req = reg.register(via);
        self.send_register(i, req, &gw, now);
    }

    fn send_register(&mut self, i: usize, req: Request, gw: &Gateway, now: Instant) {
        let Some(key) = transaction::key(&req) else {
            return;
        };
        self.registrations.pending.insert(key.clone(), i);
        let peer = Peer {
            proto: gw.proto,
            addr: gw.addr,
            conn: None,
        };
        self.send_request(key, req, peer, None, now);
    }

    /// A response to one of our REGISTERs. Whether `key` was one.
    pub(super) fn register_answered(&mut self, key: &TxKey, resp: &Response, now: Instant) -> bool {
        let Some(&i) = self.registrations.pending.get(key) else {
            return false;
        };
        if resp.status_code.code() >= 200 {
            self.registrations.pending.remove(key);
        }
        let gw = self.cfg.router.gateways[i].clone();
        let (cnonce, branch) = (
            crate::sip::message::new_tag(),
            crate::sip::message::new_branch(),
        );
        let step = self
            .registrations
            .regs
            .get_mut(i)
            .and_then(Option::as_mut)
            .and_then(|r| r.on_response(resp, &gw, now, &cnonce, &branch));
        self.registration_step(i, step, now);
        true
    }

    /// A REGISTER that got no answer. Whether `key` was one.
    pub(super) fn register_unanswered(&mut self, key: &TxKey, now: Instant) -> bool {
        let Some(i) = self.registrations.pending.remove(key) else {
            return false;
        };
        let step = self
            .registrations
            .regs
            .get_mut(i)
            .and_then(Option::as_mut)
            .map(|r| r.on_timeout(now));
        self.registration_step(i, step, now);
        true
    }

    /// Carries out what a registration said, and puts its trunk in or out of routing.
    fn registration_step(&mut self, i: usize, step: Option<Step>, now: Instant) {
        let gw = self.cfg.router.gateways[i].clone();
        match step {
            Some(Step::Send(req)) => self.send_register(i, req, &gw, now),
            Some(Step::WakeAt(at)) => self.schedule(Some(at), Wake::Register(i)),
            None => {}
        }
        let Some(reg) = self.registrations.get(i) else {
            return;
        };
        if reg.status == Status::Registering {
            return;
        }
        let registered = reg.is_registered(now);
        if let Status::Failed { code, .. } = reg.status {
            tracing::warn!(gateway = %gw.name, code, "registration with the carrier failed; trying again later");
        }
        match (self.lent.channels.registered(i), registered) {
            (false, true) => {
                tracing::info!(gateway = %gw.name, "registered with the carrier: in routing")
            }
            (true, false) => {
                tracing::warn!(gateway = %gw.name, "not registered with the carrier: out of routing")
            }
            _ => {}
        }
        self.lent.channels.set_registered(i, registered);
        crate::metrics::get().gateway_registered(&gw.name, registered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{GatewayAuth, GatewayRegister};
    use crate::sip::message::response_to;

    fn gateway(auth: bool) -> Gateway {
        Gateway {
            name: "carrier".into(),
            addr: "192.0.2.9:5060".parse().unwrap(),
            proto: crate::routing::Proto::Udp,
            tls: None,
            srtp: false,
            channels: 10,
            auth: auth.then(|| GatewayAuth {
                username: "acme".into(),
                password: "s3cret".into(),
                realm: None,
            }),
            ping: None,
            ping_failures: 3,
            register: Some(GatewayRegister {
                expires: 600,
                user: "acme".into(),
                contact_user: "trunk7".into(),
                domain: "sip.carrier.example".into(),
            }),
            identity: Default::default(),
        }
    }

    fn local() -> Local {
        Local {
            udp: Some("192.0.2.1:5060".into()),
            tcp: None,
            tls: None,
        }
    }

    fn reg(gw: &Gateway) -> Registration {
        Registration::new(gw, &local(), "reg-1@192.0.2.1".into(), "ft".into())
    }

    fn via(n: u32) -> String {
        format!("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr{n}")
    }

    #[test]
    fn a_challenged_register_is_answered_then_refreshed_a_minute_early() {
        let gw = gateway(true);
        let mut r = reg(&gw);
        let t0 = Instant::now();
        let first = r.register(via(1));
        assert_eq!(first.uri.to_string(), "sip:sip.carrier.example");
        assert_eq!(first.header("To"), Some("<sip:acme@sip.carrier.example>"));
        assert_eq!(first.header("Contact"), Some("<sip:trunk7@192.0.2.1:5060>"));
        assert_eq!(first.header("Expires"), Some("600"));
        let mut challenge = response_to(&first, 401, Some("x"));
        challenge.headers.push(hdr(
            "WWW-Authenticate",
            "Digest realm=\"carrier\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"",
        ));
        let Some(Step::Send(second)) = r.on_response(&challenge, &gw, t0, "c1", "z9hG4bKr2") else {
            panic!("answered")
        };
        assert_eq!(second.call_id(), first.call_id());
        assert_eq!(second.cseq().unwrap().0, 2);
        assert!(second
            .header("Authorization")
            .is_some_and(|a| a.contains("username=\"acme\"")));
        assert!(!r.is_registered(t0));
        // The registrar grants less than asked, in the Contact.
        let mut ok = response_to(&second, 200, Some("x"));
        ok.headers
            .push(hdr("Contact", "<sip:trunk7@192.0.2.1:5060>;expires=300"));
        ok.headers.push(hdr("Expires", "600"));
        let Some(Step::WakeAt(at)) = r.on_response(&ok, &gw, t0, "c2", "b") else {
            panic!("registered")
        };
        assert_eq!(at, t0 + Duration::from_secs(240));
        assert!(r.is_registered(t0 + Duration::from_secs(299)));
        assert!(!r.is_registered(t0 + Duration::from_secs(300)));
        // The refresh: same binding, next CSeq, no stale credentials.
        let third = r.register(via(3));
        assert_eq!(third.call_id(), first.call_id());
        assert_eq!(third.cseq().unwrap().0, 3);
        assert!(third.header("Authorization").is_none());
    }

    #[test]
    fn shutdown_removes_a_binding_we_hold_and_nothing_else() {
        let gw = gateway(true);
        let mut r = reg(&gw);
        let t0 = Instant::now();
        assert!(r.unregister(via(1), t0).is_none(), "nothing to remove yet");
        let first = r.register(via(2));
        let mut ok = response_to(&first, 200, Some("x"));
        ok.headers.push(hdr("Expires", "600"));
        r.on_response(&ok, &gw, t0, "c", "b");
        assert!(r.is_registered(t0));
        let bye = r.unregister(via(3), t0).expect("a REGISTER removing it");
        assert_eq!(bye.header_values("Expires"), ["0"]);
        assert_eq!(bye.call_id(), first.call_id(), "the same binding");
        assert_eq!(bye.cseq().unwrap().0, first.cseq().unwrap().0 + 1);
        // Challenged: answered with Expires 0 still.
        let mut challenge = response_to(&bye, 401, Some("x"));
        challenge.headers.push(hdr(
            "WWW-Authenticate",
            "Digest realm=\"carrier\", nonce=\"n2\", algorithm=MD5",
        ));
        let Some(Step::Send(again)) = r.on_response(&challenge, &gw, t0, "c", "z9hG4bKu") else {
            panic!("answered")
        };
        assert_eq!(again.header_values("Expires"), ["0"]);
        assert!(again.header("Authorization").is_some());
        // Its 200 ends the registration; nothing is scheduled.
        let done = response_to(&again, 200, Some("x"));
        assert!(r.on_response(&done, &gw, t0, "c", "b").is_none());
        assert_eq!(r.status, Status::Idle);
    }

    #[test]
    fn refusals_back_off_and_a_423_raises_the_expiry_once() {
        let gw = gateway(false);
        let mut r = reg(&gw);
        let t0 = Instant::now();
        let first = r.register(via(1));
        let mut brief = response_to(&first, 423, Some("x"));
        brief.headers.push(hdr("Min-Expires", "1200"));
        let Some(Step::Send(again)) = r.on_response(&brief, &gw, t0, "c", "z9hG4bKr2") else {
            panic!("asked again")
        };
        assert_eq!(again.header("Expires"), Some("1200"));
        let brief = response_to(&again, 423, Some("x"));
        let Some(Step::WakeAt(retry)) = r.on_response(&brief, &gw, t0, "c", "b") else {
            panic!("failed")
        };
        assert_eq!(retry, t0 + FIRST_BACKOFF);
        // A challenge with no credentials to answer it: failed, and the pause doubles.
        let next = r.register(via(3));
        let mut challenge = response_to(&next, 401, Some("x"));
        challenge
            .headers
            .push(hdr("WWW-Authenticate", "Digest realm=\"c\", nonce=\"n\""));
        let Some(Step::WakeAt(retry)) = r.on_response(&challenge, &gw, t0, "c", "b") else {
            panic!("failed")
        };
        assert_eq!(retry, t0 + FIRST_BACKOFF * 2);
        assert_eq!(
            r.status,
            Status::Failed {
                code: 401,
                retry: t0 + FIRST_BACKOFF * 2
            }
        );
        // No answer at all; the pause grows to its cap.
        for _ in 0..10 {
            r.register(via(4));
            r.on_timeout(t0);
        }
        assert!(
            matches!(r.status, Status::Failed { code: 408, retry } if retry == t0 + MAX_BACKOFF)
        );
        // A 200 that keeps no binding is no registration.
        let last = r.register(via(5));
        let mut zero = response_to(&last, 200, Some("x"));
        zero.headers.push(hdr("Expires", "0"));
        r.on_response(&zero, &gw, t0, "c", "b");
        assert!(!r.is_registered(t0));
    }
}
