//! Whole calls, driven with explicit time: the engine's part is played by the test, which
//! feeds what the caller, the gateways and the store would say and reads what the call asks
//! for. Each runs in microseconds.

use super::*;
use crate::media::engine::MediaEvent;
use crate::sip::message::{hdr, parse_datagram, response_to, Method, SipMessage};
use rating::store::{AccountAnswer, CallAnswer, Extension, Reservation, Settlement};
use rating::{Money, ReturnCode};
use std::time::Duration;

const CONFIG: &str = r#"
sip:
  listen: [udp:127.0.0.1:5060]
trusted_peers: [127.0.0.1]
access_numbers:
  - number: "5551201"
    pinless: true
    trusted_only: true
calls:
  setup_timeout_ms: 3000
  ring_timeout_s: 60
gateways:
  - {name: gw1, address: "127.0.0.1:5062", transport: udp, channels: 10}
  - {name: gw2, address: "127.0.0.1:5064", transport: udp, channels: 10}
routes:
  - name: all
    patterns: ["T"]
    gateways: [{gateway: gw1}, {gateway: gw2}]
"#;

/// An IVR flow small enough to drive by hand: a 4-digit card, a 3-digit destination, and a
/// bridge that goes back to the destination when it ends.
const FLOW: &str = r#"
name: small
params: {warning_seconds: 10}
start: card
states:
  card:
    collect: {into: card, prompt: [enter_card_num], min: 4, max: 4, next: auth, fail: bye}
  auth:
    authorize: {phase: 1, account: card, on: {"0": destination, default: bye}}
  destination:
    collect: {into: destination, prompt: [enter_dest], min: 3, max: 3, next: call, fail: bye}
  call:
    authorize: {phase: 2, account: card, destination: destination, on: {"0": connect, default: bye}}
  connect:
    bridge:
      destination: destination
      warning: [disconnect]
      on: {busy: destination, no_answer: destination, unreachable: destination, failed: destination, called_hangup: destination, long_pound: destination, credit_exhausted: bye}
  bye:
    hangup: {cause: normal}
"#;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
const GW_SDP: &str = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn request(text: &str) -> Request {
    match parse_datagram(text.as_bytes()).expect("test message parses") {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => unreachable!(),
    }
}

fn caller() -> Peer {
    Peer {
        proto: crate::routing::Proto::Udp,
        addr: "127.0.0.1:5070".parse().unwrap(),
        conn: None,
    }
}

/// The caller's INVITE with `extra` header lines.
fn invite_with(user: &str, extra: &str) -> Request {
    request(&format!(
        "INVITE sip:{user}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcaller\r\n\
From: <sip:4085551234@127.0.0.1>;tag=caller\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: a-leg\r\n\
CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n{extra}\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
        OFFER.len()
    ))
}

/// A request from the caller inside its dialog (our tag is `to_tag`).
fn caller_request(method: &str, cseq: u32, to_tag: &str, body: &str) -> Request {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    request(&format!(
        "{method} sip:b2bua@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method}{cseq}\r\n\
From: <sip:4085551234@127.0.0.1>;tag=caller\r\nTo: <sip:5551201@127.0.0.1>;tag={to_tag}\r\nCall-ID: a-leg\r\n\
CSeq: {cseq} {method}\r\nContact: <sip:alice@127.0.0.1:5070>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A request on `side`, as the engine hands it over: with its server transaction.
fn on_leg(side: Side, req: Request) -> (TxKey, Input) {
    let tx = transaction::key(&req).unwrap();
    (tx.clone(), Input::Request { side, tx, req })
}

/// A request from the caller inside its answered dialog (our tag there is `tag3`), as input.
fn from_caller(method: &str, cseq: u32, body: &str) -> (TxKey, Input) {
    let req = caller_request(method, cseq, "tag3", body);
    on_leg(Side::A, req)
}

/// The test's engine: the node's shared parts, the clock, and the call's outputs so far.
struct Node {
    settings: Arc<Settings>,
    channels: Channels,
    ids: CountedIds,
    stats: Stats,
    now: Instant,
    wall: DateTime<Utc>,
    stopping: bool,
}

impl Node {
    fn new() -> Node {
        Node::with_config(CONFIG)
    }

    fn with_config(yaml: &str) -> Node {
        let cfg = Config::parse(yaml, "test.yaml").expect("test config");
        let channels = Channels::new(
            cfg.router
                .gateways
                .iter()
                .map(|g| g.channels)
                .collect::<Vec<u32>>(),
        );
        Node {
            settings: Arc::new(Settings {
                cfg: Arc::new(cfg),
                local: Local {
                    udp: Some("127.0.0.1:5060".into()),
                    tcp: None,
                    tls: None,
                },
                gw_id: Some("node1".into()),
            }),
            channels,
            ids: CountedIds::default(),
            stats: Stats::default(),
            now: Instant::now(),
            wall: "2026-12-02T10:00:00Z".parse().unwrap(),
            stopping: false,
        }
    }

    fn setup(&self, user: &str, flow: Option<Arc<ivr::Flow>>) -> Setup {
        self.setup_with(user, flow, "")
    }

    /// A call whose INVITE has `extra` header lines (session timers, Allow).
    fn setup_with(&self, user: &str, flow: Option<Arc<ivr::Flow>>, extra: &str) -> Setup {
        let inv = invite_with(user, extra);
        let inv_for_session = inv.clone();
        let access = self.settings.cfg.access_numbers[0].clone();
        let access = AccessNumber {
            number: if flow.is_some() {
                "5551200".into()
            } else {
                access.number
            },
            pinless: flow.is_none(),
            flow: flow.as_ref().map(|_| "small".into()),
            ..access
        };
        let mut prompts = prompts::set::PromptSet::default();
        for name in ivr::catalogue_prompts() {
            let audio = prompts::audio::Audio {
                samples: vec![0; 160],
            };
            prompts.insert("en", prompts::set::Prompt::from_audio(&name, &audio));
        }
        Setup {
            id: 7,
            peer: caller(),
            tx: transaction::key(&inv).unwrap(),
            offer: sdp::parse(OFFER.as_bytes()).unwrap(),
            invite: inv,
            media_local: [
                "127.0.0.1:30000".parse().unwrap(),
                "127.0.0.1:30002".parse().unwrap(),
            ],
            media_keys: [[1; 30], [2; 30]],
            trusted: true,
            ani: "4085551234".into(),
            destination: user.strip_prefix("5551201").unwrap_or("").into(),
            card: None,
            ring: None,
            access,
            prompts: Arc::new(prompts),
            session: session::as_uas(&inv_for_session, &self.settings.cfg.calls.session)
                .expect("test INVITE's session timer"),
            flow,
            arrived: (self.now, self.wall),
        }
    }

    /// Lends the call the node's parts, as the engine does; the media reports 500 packets a
    /// leg and nothing lost.
    fn with_env<R>(&mut self, f: impl FnOnce(&mut Env) -> R) -> R {
        let quality = || {
            Some(Quality {
                packets: [500, 500],
                lost: [0, 0],
                jitter: [Duration::ZERO; 2],
                icpif: 3,
            })
        };
        let mut env = Env {
            now: self.now,
            channels: &mut self.channels,
            ids: &mut self.ids,
            stats: &mut self.stats,
            stopping: self.stopping,
            quality: &quality,
        };
        f(&mut env)
    }

    fn start(&mut self, setup: Setup) -> (Call, Vec<Output>) {
        let settings = self.settings.clone();
        let mut call = self.with_env(|env| Call::start(setup, settings, env));
        let out = std::iter::from_fn(|| call.poll()).collect();
        (call, out)
    }

    fn feed(&mut self, call: &mut Call, input: Input) -> Vec<Output> {
        self.with_env(|env| call.handle(input, env));
        std::iter::from_fn(|| call.poll()).collect()
    }

    fn later(&mut self, d: Duration) {
        self.now += d;
    }
}

fn flow() -> Arc<ivr::Flow> {
    Arc::new(ivr::Flow::parse(FLOW, "small.yaml", &ivr::catalogue_prompts()).expect("test flow"))
}

/// The requests the call sends, by method.
fn sent(out: &[Output], method: Method) -> Vec<(TxKey, Request, Peer)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { tx, req, peer } if req.method == method => {
                Some((tx.clone(), req.clone(), *peer))
            }
            _ => None,
        })
        .collect()
}

/// The statuses of the responses the call sends on `tx`.
/// The ACK we sent (of a 2xx: the ACK has no transaction of its own).
fn the_ack(out: &[Output]) -> Request {
    out.iter()
        .find_map(|o| match o {
            Output::Ack { req, .. } => Some(req.clone()),
            _ => None,
        })
        .expect("the answer is ACKed")
}

fn answered(out: &[Output], tx: &TxKey) -> Vec<u16> {
    out.iter()
        .filter_map(|o| match o {
            Output::Respond { tx: t, resp } if t == tx => Some(resp.status_code.code()),
            _ => None,
        })
        .collect()
}

fn the_response(out: &[Output], tx: &TxKey, code: u16) -> Response {
    out.iter()
        .find_map(|o| match o {
            Output::Respond { tx: t, resp } if t == tx && resp.status_code.code() == code => {
                Some(resp.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {code} on {tx}: {out:#?}"))
}

fn settle(out: &[Output]) -> Option<(String, rating::store::CallEnd)> {
    out.iter().find_map(|o| match o {
        Output::Store(Ask::Settle { conf_id, end }) => Some((conf_id.clone(), end.clone())),
        _ => None,
    })
}

fn ended(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::Ended))
}

fn reservation(conf: &str, seconds: u64) -> Reservation {
    Reservation {
        conf_id: conf.into(),
        amount: Money::ZERO,
        granted_seconds: seconds,
        expires_at: "2026-12-02T11:00:00Z".parse().unwrap(),
    }
}

fn call_answer(code: ReturnCode, conf: &str, granted: u64, credit: u64) -> Input {
    Input::Store(Answer::Call(Box::new(CallAnswer {
        code,
        credit_time: credit,
        available: Money::ZERO,
        currency: "USD".into(),
        language: "en".into(),
        rate: None,
        reservation: code.is_success().then(|| reservation(conf, granted)),
        redirect_number: String::new(),
    })))
}

/// The conference id a phase-2 request named.
fn phase2(out: &[Output]) -> CallRequest {
    out.iter()
        .find_map(|o| match o {
            Output::Store(Ask::AuthorizeCall(r)) => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no phase 2 asked: {out:#?}"))
}

/// A gateway's response to our INVITE.
fn gw_response(req: &Request, code: u16, sdp: bool) -> Input {
    let mut resp = response_to(req, code, Some("gwtag"));
    if (200..300).contains(&code) {
        resp.headers.push(hdr("Contact", "<sip:gw@127.0.0.1:5062>"));
    }
    if sdp {
        resp.headers.push(hdr("Content-Type", "application/sdp"));
        resp.body = GW_SDP.as_bytes().to_vec();
    }
    Input::Response {
        tx: transaction::key(req).unwrap(),
        resp,
        from: Peer {
            proto: crate::routing::Proto::Udp,
            addr: req
                .uri
                .host_with_port
                .to_string()
                .parse()
                .unwrap_or_else(|_| "127.0.0.1:5062".parse().unwrap()),
            conn: None,
        },
    }
}

/// A request from the gateway inside the B dialog of `invite`.
fn gw_request(invite: &Request, method: &str, cseq: u32, body: &str) -> (TxKey, Input) {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    let req = request(&format!(
        "{method} sip:b2bua@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKgw{method}{cseq}\r\n\
From: <sip:x@127.0.0.1>;tag=gwtag\r\nTo: {};\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        invite.header("From").unwrap().trim_end_matches(';'),
        invite.call_id(),
        body.len()
    ));
    on_leg(Side::B, req)
}

/// A pinless call that has asked phase 2: the call, the caller's transaction, the conference.
fn pinless(node: &mut Node) -> (Call, TxKey, String) {
    let setup = node.setup("55512015555233", None);
    let a_tx = setup.tx.clone();
    let (call, out) = node.start(setup);
    (call, a_tx, phase2(&out).conf_id)
}

/// A pinless call that phase 2 authorized: also what that led to (the first gateway dialled).
fn dialled(node: &mut Node) -> (Call, TxKey, String, Vec<Output>) {
    let (mut call, a_tx, conf) = pinless(node);
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &conf, 300, 3600),
    );
    (call, a_tx, conf, out)
}

/// A pinless call up to the gateway's answer: the call, the caller's transaction, the B-leg
/// INVITE and the conference id.
fn answered_pinless(node: &mut Node, granted: u64, credit: u64) -> (Call, TxKey, Request, String) {
    let setup = node.setup("55512015555233", None);
    let a_tx = setup.tx.clone();
    let (mut call, out) = node.start(setup);
    let req = phase2(&out);
    assert_eq!(req.destination, "5555233");
    assert_eq!(req.auth.account, "4085551234");
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &req.conf_id, granted, credit),
    );
    let (_, inv, peer) = sent(&out, Method::Invite).pop().expect("dialled");
    assert_eq!(peer.addr.port(), 5062);
    let out = node.feed(&mut call, gw_response(&inv, 180, false));
    assert_eq!(answered(&out, &a_tx), [180]);
    let out = node.feed(&mut call, gw_response(&inv, 200, true));
    assert!(
        out.iter().any(|o| matches!(o, Output::Ack { .. })),
        "the gateway's 200 is ACKed"
    );
    let ok = the_response(&out, &a_tx, 200);
    assert!(
        String::from_utf8_lossy(&ok.body).contains("30000"),
        "our own RTP port in the answer"
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Store(Ask::MarkConnected { .. }))));
    (call, a_tx, inv, req.conf_id)
}

#[test]
fn a_pinless_call_is_dialled_answered_hung_up_and_settled_once() {
    let mut node = Node::new();
    let (mut call, _a_tx, _inv, conf) = answered_pinless(&mut node, 300, 3600);
    assert_eq!(node.channels.in_use(0), 1);
    node.later(Duration::from_secs(42));
    let (bye_tx, bye) = from_caller("BYE", 2, "");
    let out = node.feed(&mut call, bye);
    assert_eq!(answered(&out, &bye_tx), [200]);
    assert_eq!(sent(&out, Method::Bye).len(), 1, "the gateway is hung up");
    let (c, end) = settle(&out).expect("settled");
    assert_eq!(c, conf);
    assert_eq!(
        (end.disconnect_at - end.connect_at.unwrap()).num_seconds(),
        42
    );
    assert_eq!(end.cause, "caller hung up");
    assert_eq!(node.channels.in_use(0), 0, "the channel is back");
    assert!(
        !ended(&out),
        "not forgotten before the settlement is written"
    );
    let out = node.feed(
        &mut call,
        Input::Store(Answer::Settled(Ok(Settlement {
            conf_id: conf,
            billed_seconds: 42,
            cost: Money::ZERO,
            already_settled: false,
        }))),
    );
    assert!(ended(&out));
    assert_eq!(node.stats.answered, 1);
}

#[test]
fn a_503_fails_over_to_the_next_gateway() {
    let mut node = Node::new();
    let (mut call, a_tx, _, out) = dialled(&mut node);
    let (_, first, _) = sent(&out, Method::Invite).pop().unwrap();
    let out = node.feed(&mut call, gw_response(&first, 503, false));
    let (_, second, peer) = sent(&out, Method::Invite)
        .pop()
        .expect("second gateway dialled");
    assert_eq!(peer.addr.port(), 5064);
    assert_ne!(
        first.call_id(),
        second.call_id(),
        "a new dialog per attempt"
    );
    assert_eq!((node.channels.in_use(0), node.channels.in_use(1)), (0, 1));
    let out = node.feed(&mut call, gw_response(&second, 200, true));
    assert_eq!(answered(&out, &a_tx), [200]);
}

#[test]
fn every_gateway_failing_tells_the_caller_and_releases_the_hold() {
    let mut node = Node::new();
    let (mut call, a_tx, _, out) = dialled(&mut node);
    let (_, first, _) = sent(&out, Method::Invite).pop().unwrap();
    let out = node.feed(&mut call, gw_response(&first, 500, false));
    let (_, second, _) = sent(&out, Method::Invite).pop().unwrap();
    let out = node.feed(&mut call, gw_response(&second, 502, false));
    assert_eq!(answered(&out, &a_tx), [503]);
    let (_, end) = settle(&out).expect("the hold is released");
    assert_eq!(end.connect_at, None);
}

#[test]
fn a_silent_gateway_is_skipped_after_the_setup_timeout() {
    let mut node = Node::new();
    let (mut call, _, _, out) = dialled(&mut node);
    let (first_tx, _, _) = sent(&out, Method::Invite).pop().unwrap();
    assert!(
        out.iter().any(|o| matches!(o, Output::Timer(_))),
        "a wake-up for the setup timeout"
    );
    node.later(Duration::from_millis(3000));
    let out = node.feed(&mut call, Input::Timer);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Abandon(t) if *t == first_tx)));
    let (_, _, peer) = sent(&out, Method::Invite).pop().expect("fail-over");
    assert_eq!(peer.addr.port(), 5064);
}

#[test]
fn no_answer_is_given_up_with_480_after_the_ring_timeout() {
    let mut node = Node::new();
    let (mut call, a_tx, _, out) = dialled(&mut node);
    let (_, inv, _) = sent(&out, Method::Invite).pop().unwrap();
    node.feed(&mut call, gw_response(&inv, 180, false));
    node.later(Duration::from_secs(59));
    assert!(sent(&node.feed(&mut call, Input::Timer), Method::Cancel).is_empty());
    node.later(Duration::from_secs(1));
    let out = node.feed(&mut call, Input::Timer);
    let (_, cancel, _) = sent(&out, Method::Cancel)
        .pop()
        .expect("the gateway is cancelled");
    assert_eq!(
        cancel.branch(),
        inv.branch(),
        "the CANCEL matches the INVITE"
    );
    assert_eq!(answered(&out, &a_tx), [480]);
    assert!(settle(&out).is_some());
}

#[test]
fn a_caller_cancel_while_dialling_cancels_the_gateway() {
    let mut node = Node::new();
    let (mut call, a_tx, _, out) = dialled(&mut node);
    let (_, inv, _) = sent(&out, Method::Invite).pop().unwrap();
    node.feed(&mut call, gw_response(&inv, 183, true));
    let out = node.feed(
        &mut call,
        Input::Cancel {
            invite: a_tx.clone(),
        },
    );
    assert_eq!(sent(&out, Method::Cancel).len(), 1);
    assert_eq!(answered(&out, &a_tx), [487]);
    assert_eq!(settle(&out).unwrap().1.cause, "caller cancelled");
    // The gateway answers anyway (its 200 crossed our CANCEL): ACKed and hung up.
    let out = node.feed(&mut call, gw_response(&inv, 200, true));
    assert_eq!(sent(&out, Method::Bye).len(), 1);
}

#[test]
fn a_cancel_while_authorizing_ends_the_call_and_the_late_hold_is_released() {
    let mut node = Node::new();
    let (mut call, a_tx, conf) = pinless(&mut node);
    let out = node.feed(
        &mut call,
        Input::Cancel {
            invite: a_tx.clone(),
        },
    );
    assert_eq!(answered(&out, &a_tx), [487]);
    assert!(ended(&out), "nothing held yet: forgotten at once");
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &conf, 300, 3600),
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Release(r) if r.conf_id == conf)));
}

#[test]
fn a_refused_card_is_answered_with_the_sip_status_and_the_return_code() {
    let mut node = Node::new();
    let (mut call, a_tx, conf) = pinless(&mut node);
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::InsufficientFunds, &conf, 0, 0),
    );
    let resp = the_response(&out, &a_tx, 402);
    assert!(
        resp.header("Warning").unwrap().contains("return code"),
        "a trusted peer hears why"
    );
    assert!(ended(&out));
}

#[test]
fn a_subscriber_refused_hears_why_on_the_status_line_a_card_caller_the_standard_phrase() {
    for (code, status, phrase) in [
        (ReturnCode::InsufficientFunds, 402, "insufficient funds"),
        (ReturnCode::ZeroBalance, 402, "insufficient funds"),
        (ReturnCode::UserDenied, 403, "account blocked"),
        (ReturnCode::CardExpired, 403, "card expired"),
    ] {
        let mut node = Node::new();
        let mut setup = node.setup("55512015555233", None);
        setup.card = Some("000070".into());
        let a_tx = setup.tx.clone();
        let (mut call, out) = node.start(setup);
        let conf = phase2(&out).conf_id;
        assert_eq!(phase2(&out).auth.account, "000070", "billed to its card");
        let out = node.feed(&mut call, call_answer(code, &conf, 0, 0));
        let resp = the_response(&out, &a_tx, status);
        assert_eq!(crate::sip::message::phrase(&resp), phrase, "{code:?}");
        assert!(ended(&out));
    }
    let mut node = Node::new();
    let (mut call, a_tx, conf) = pinless(&mut node);
    let out = node.feed(&mut call, call_answer(ReturnCode::ZeroBalance, &conf, 0, 0));
    let resp = the_response(&out, &a_tx, 402);
    assert_eq!(crate::sip::message::phrase(&resp), "Payment Required");
}

#[test]
fn the_cutoff_ends_the_call_when_the_credit_runs_out() {
    let mut node = Node::new();
    let (mut call, _, _, _) = answered_pinless(&mut node, 30, 30);
    node.later(Duration::from_secs(29));
    assert!(settle(&node.feed(&mut call, Input::Timer)).is_none());
    node.later(Duration::from_secs(1));
    let out = node.feed(&mut call, Input::Timer);
    assert_eq!(sent(&out, Method::Bye).len(), 2, "both legs hung up");
    let (_, end) = settle(&out).expect("settled");
    assert_eq!(
        (end.disconnect_at - end.connect_at.unwrap()).num_seconds(),
        30
    );
    assert_eq!(node.stats.cutoffs, 1);
}

#[test]
fn a_subscriber_hears_the_warning_before_its_money_runs_out_a_pinless_card_caller_does_not() {
    let yaml = format!("{CONFIG}subscribers:\n  domains: [voip.example.com]\n  warning_s: 10\n");
    for subscriber in [true, false] {
        let mut node = Node::with_config(&yaml);
        let mut setup = node.setup("55512015555233", None);
        if subscriber {
            setup.card = Some("000070".into());
        }
        let (mut call, out) = node.start(setup);
        let conf = phase2(&out).conf_id;
        let out = node.feed(&mut call, call_answer(ReturnCode::Success, &conf, 30, 30));
        let (_, inv, _) = sent(&out, Method::Invite).pop().expect("dialled");
        node.feed(&mut call, gw_response(&inv, 200, true));
        node.later(Duration::from_secs(19));
        assert!(played(&node.feed(&mut call, Input::Timer)).is_empty());
        node.later(Duration::from_secs(1));
        let out = node.feed(&mut call, Input::Timer);
        let want: &[&str] = if subscriber { &["disconnect"] } else { &[] };
        assert_eq!(played(&out), want, "20 s in, 10 s before the end");
        assert!(sent(&out, Method::Bye).is_empty(), "the call goes on");
        node.later(Duration::from_secs(10));
        let out = node.feed(&mut call, Input::Timer);
        assert_eq!(sent(&out, Method::Bye).len(), 2, "cut off at the end");
    }
}

#[test]
fn a_refused_extension_keeps_the_cutoff_where_the_hold_ends() {
    let mut node = Node::new();
    let (mut call, _, _, conf) = answered_pinless(&mut node, 60, 600);
    let mut asked = false;
    for _ in 0..60 {
        node.later(Duration::from_secs(1));
        let out = node.feed(&mut call, Input::Timer);
        if out
            .iter()
            .any(|o| matches!(o, Output::Store(Ask::Extend { conf_id }) if *conf_id == conf))
        {
            asked = true;
            let no = Extension {
                granted_seconds: 60,
                amount: Money::ZERO,
                extended: false,
            };
            node.feed(&mut call, Input::Store(Answer::Extended(Ok(no))));
        }
        if let Some((_, end)) = settle(&out) {
            assert!(asked, "the next chunk was asked for first");
            assert_eq!(
                (end.disconnect_at - end.connect_at.unwrap()).num_seconds(),
                60
            );
            return;
        }
    }
    panic!("no cutoff at the end of the hold");
}

#[test]
fn a_store_failure_mid_call_does_not_end_the_call_early_or_lose_the_settlement() {
    let mut node = Node::new();
    let (mut call, _, _, _) = answered_pinless(&mut node, 60, 600);
    for _ in 0..50 {
        node.later(Duration::from_secs(1));
        let out = node.feed(&mut call, Input::Timer);
        if out
            .iter()
            .any(|o| matches!(o, Output::Store(Ask::Extend { .. })))
        {
            let out = node.feed(
                &mut call,
                Input::Store(Answer::Extended(Err("database gone".into()))),
            );
            assert!(
                settle(&out).is_none(),
                "a failed extension is not a hang-up"
            );
        }
    }
    node.later(Duration::from_secs(10));
    let out = node.feed(&mut call, Input::Timer);
    assert!(settle(&out).is_some(), "cut off where the hold ends");
    let out = node.feed(
        &mut call,
        Input::Store(Answer::Settled(Err("database gone".into()))),
    );
    assert!(ended(&out), "the sweeper settles it; the call is forgotten");
}

#[test]
fn a_lost_ack_hangs_up_both_legs() {
    let mut node = Node::new();
    let (mut call, a_tx, _, _) = answered_pinless(&mut node, 300, 3600);
    let out = node.feed(&mut call, Input::NoAck { tx: a_tx });
    assert_eq!(sent(&out, Method::Bye).len(), 2);
    assert_eq!(settle(&out).unwrap().1.cause, "no ACK");
}

#[test]
fn an_ack_from_elsewhere_does_not_count() {
    let mut node = Node::new();
    let (mut call, a_tx, _, _) = answered_pinless(&mut node, 300, 3600);
    let ack = caller_request("ACK", 1, "tag3", "");
    let mut stranger = caller();
    stranger.addr = "127.0.0.1:6666".parse().unwrap();
    let out = node.feed(
        &mut call,
        Input::Ack {
            side: Side::A,
            req: ack.clone(),
            from: stranger,
        },
    );
    assert!(out.is_empty());
    let out = node.feed(
        &mut call,
        Input::Ack {
            side: Side::A,
            req: ack,
            from: caller(),
        },
    );
    assert!(matches!(&out[..], [Output::Acked(t)] if *t == a_tx));
}

#[test]
fn a_re_invite_is_relayed_both_ways_with_our_media_in_the_middle() {
    let mut node = Node::new();
    let (mut call, _, inv, _) = answered_pinless(&mut node, 300, 3600);
    // The caller puts the call on hold.
    let hold = OFFER.replace("a=rtpmap:101", "a=sendonly\r\na=rtpmap:101");
    let reinvite = caller_request("INVITE", 2, "tag3", &hold);
    let origin = transaction::key(&reinvite).unwrap();
    let out = node.feed(
        &mut call,
        Input::Request {
            side: Side::A,
            tx: origin.clone(),
            req: reinvite,
        },
    );
    let (_, relayed, peer) = sent(&out, Method::Invite)
        .pop()
        .expect("relayed to the gateway");
    assert_eq!(peer.addr.port(), 5062);
    assert_eq!(
        relayed.call_id(),
        inv.call_id(),
        "inside the gateway's dialog"
    );
    let body = String::from_utf8_lossy(&relayed.body).to_string();
    assert!(
        body.contains("30002") && body.contains("sendonly"),
        "our offer, their direction: {body}"
    );
    let out = node.feed(&mut call, gw_response(&relayed, 200, true));
    assert!(out.iter().any(|o| matches!(o, Output::Ack { .. })));
    let ok = the_response(&out, &origin, 200);
    assert!(String::from_utf8_lossy(&ok.body).contains("30000"));
    // And the gateway's own re-INVITE (a hold of its own) reaches the caller.
    let gw_hold = GW_SDP.replace("o=- 2 2", "o=- 2 3") + "a=sendonly\r\n";
    let out = node.feed(&mut call, gw_request(&inv, "INVITE", 5, &gw_hold).1);
    let (_, to_caller, peer) = sent(&out, Method::Invite)
        .pop()
        .expect("relayed to the caller");
    assert_eq!(peer.addr.port(), 5070);
    assert_eq!(to_caller.call_id(), "a-leg");
}

#[test]
fn a_bye_crossing_our_bye_is_answered_and_settles_once() {
    let mut node = Node::new();
    let (mut call, _, inv, _) = answered_pinless(&mut node, 300, 3600);
    let (_, bye) = from_caller("BYE", 2, "");
    let out = node.feed(&mut call, bye);
    assert!(settle(&out).is_some());
    let (tx, bye) = gw_request(&inv, "BYE", 1, "");
    let out = node.feed(&mut call, bye);
    assert_eq!(
        answered(&out, &tx),
        [200],
        "the crossing BYE is answered, not 481"
    );
    assert!(settle(&out).is_none(), "settled once");
}

#[test]
fn shutdown_ends_a_talking_call_and_settles_it() {
    let mut node = Node::new();
    let (mut call, _, _, _) = answered_pinless(&mut node, 300, 3600);
    node.stopping = true;
    let out = node.feed(&mut call, Input::Shutdown);
    assert_eq!(sent(&out, Method::Bye).len(), 2);
    assert_eq!(settle(&out).unwrap().1.cause, "shutdown");
}

/// An IVR caller who has typed a card and a destination, and whose bridge is dialling.
fn dialling_ivr(node: &mut Node, granted: u64, credit: u64) -> (Call, Request, String) {
    let setup = node.setup("5551200", Some(flow()));
    let a_tx = setup.tx.clone();
    let (mut call, out) = node.start(setup);
    assert_eq!(
        answered(&out, &a_tx),
        [200],
        "we answer an IVR caller ourselves"
    );
    assert!(call.is_ivr());
    let mut out = Vec::new();
    for d in "1234".chars() {
        out = node.feed(&mut call, Input::Media(MediaEvent::Digit(d)));
    }
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Store(Ask::AuthorizeAccount(a)) if a.account == "1234")));
    let ok = AccountAnswer {
        code: ReturnCode::Success,
        available: Money::ZERO,
        currency: "USD".into(),
        language: "en".into(),
        redirect_number: String::new(),
    };
    node.feed(&mut call, Input::Store(Answer::Account(Box::new(ok))));
    for d in "555".chars() {
        out = node.feed(&mut call, Input::Media(MediaEvent::Digit(d)));
    }
    let req = phase2(&out);
    assert_eq!(req.destination, "555");
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &req.conf_id, granted, credit),
    );
    let (_, inv, _) = sent(&out, Method::Invite).pop().expect("bridging");
    (call, inv, req.conf_id)
}

/// An IVR caller bridged to the gateway, which answered.
fn bridged_ivr(node: &mut Node, granted: u64, credit: u64) -> (Call, Request, String) {
    let (mut call, inv, conf) = dialling_ivr(node, granted, credit);
    let out = node.feed(&mut call, gw_response(&inv, 200, true));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Media(MediaCmd::Bridge(true)))));
    (call, inv, conf)
}

/// The prompts played to the caller.
fn played(out: &[Output]) -> Vec<String> {
    played_to(out, Side::A)
}

/// The prompts played to one leg.
fn played_to(out: &[Output], to: Side) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Media(MediaCmd::Play { side, prompts }) if *side == to => {
                Some(prompts.iter().map(|p| p.name.clone()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn a_long_pound_ends_the_bridge_settles_it_and_returns_to_the_flow() {
    let mut node = Node::new();
    let (mut call, _, conf) = bridged_ivr(&mut node, 300, 3600);
    node.later(Duration::from_secs(20));
    let out = node.feed(&mut call, Input::Media(MediaEvent::LongPound));
    assert_eq!(
        sent(&out, Method::Bye).len(),
        1,
        "only the gateway leg is hung up"
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Media(MediaCmd::Bridge(false)))));
    let (c, end) = settle(&out).expect("the bridge is settled on its own");
    assert_eq!(
        (c.as_str(), end.cause.as_str()),
        (conf.as_str(), "long_pound")
    );
    assert_eq!(node.channels.in_use(0), 0);
    let out = node.feed(&mut call, Input::Store(Answer::Settled(Err("slow".into()))));
    assert_eq!(played(&out), ["enter_dest"], "back to destination entry");
    assert!(!ended(&out));
    // The next call of the same session is a new conference.
    let mut out = Vec::new();
    for d in "666".chars() {
        out = node.feed(&mut call, Input::Media(MediaEvent::Digit(d)));
    }
    let next = phase2(&out);
    assert_eq!(next.destination, "666");
    assert_ne!(next.conf_id, conf);
    assert_eq!(next.auth.session_id, call.session_id, "the same session");
}

#[test]
fn the_called_party_hanging_up_returns_the_caller_to_the_flow() {
    let mut node = Node::new();
    let (mut call, inv, _) = bridged_ivr(&mut node, 300, 3600);
    let (tx, bye) = gw_request(&inv, "BYE", 1, "");
    let out = node.feed(&mut call, bye);
    assert_eq!(answered(&out, &tx), [200]);
    assert_eq!(settle(&out).unwrap().1.cause, "called_hangup");
    assert!(out.iter().any(|o| matches!(o, Output::Unroute { .. })));
    let out = node.feed(&mut call, Input::Store(Answer::Settled(Err("x".into()))));
    assert_eq!(played(&out), ["enter_dest"]);
}

#[test]
fn an_ivr_bridge_warns_before_the_cutoff_and_then_says_goodbye() {
    let mut node = Node::new();
    let (mut call, _, _) = bridged_ivr(&mut node, 30, 30);
    node.later(Duration::from_secs(20));
    let out = node.feed(&mut call, Input::Timer);
    assert_eq!(
        played(&out),
        ["disconnect"],
        "the warning, 10 s before the end"
    );
    node.later(Duration::from_secs(10));
    let out = node.feed(&mut call, Input::Timer);
    assert_eq!(settle(&out).unwrap().1.cause, "credit_exhausted");
    let out = node.feed(&mut call, Input::Store(Answer::Settled(Err("x".into()))));
    assert_eq!(
        sent(&out, Method::Bye).len(),
        1,
        "the flow hangs up the caller"
    );
    assert!(ended(&out));
}

#[test]
fn a_busy_destination_is_released_uncharged_and_the_flow_goes_on() {
    let mut node = Node::new();
    let (mut call, inv, conf) = dialling_ivr(&mut node, 300, 3600);
    let out = node.feed(&mut call, gw_response(&inv, 486, false));
    let (c, end) = settle(&out).expect("the hold is released");
    assert_eq!((c.as_str(), end.connect_at), (conf.as_str(), None));
    assert_eq!(end.cause, "busy");
    let out = node.feed(&mut call, Input::Store(Answer::Settled(Err("x".into()))));
    assert_eq!(played(&out), ["enter_dest"]);
}

#[test]
fn a_flow_that_bridges_without_phase_2_gets_failed_never_a_free_call() {
    let rogue = r#"
name: rogue
start: connect
states:
  connect:
    bridge:
      destination: destination
      on: {failed: bye, busy: bye, no_answer: bye, unreachable: bye, called_hangup: bye, long_pound: bye, credit_exhausted: bye}
  bye:
    hangup: {cause: normal}
"#;
    let flow = ivr::Flow::parse(rogue, "rogue.yaml", &ivr::catalogue_prompts()).expect("flow");
    let mut node = Node::new();
    let setup = node.setup("5551200", Some(Arc::new(flow)));
    let (_call, out) = node.start(setup);
    assert!(
        sent(&out, Method::Invite).is_empty(),
        "no gateway is dialled"
    );
    assert_eq!(sent(&out, Method::Bye).len(), 1, "the flow hangs up");
    assert!(ended(&out));
}

#[test]
fn the_caller_hanging_up_mid_bridge_ends_both_legs_and_settles() {
    let mut node = Node::new();
    let (mut call, _, conf) = bridged_ivr(&mut node, 300, 3600);
    node.later(Duration::from_secs(5));
    let (_, bye) = from_caller("BYE", 2, "");
    let out = node.feed(&mut call, bye);
    assert_eq!(sent(&out, Method::Bye).len(), 1, "the gateway is hung up");
    let (c, end) = settle(&out).unwrap();
    assert_eq!((c, end.cause.as_str()), (conf, "caller hung up"));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Media(MediaCmd::Close))));
}

#[test]
fn a_cancel_after_our_200_leaves_an_ivr_call_alone() {
    let mut node = Node::new();
    let setup = node.setup("5551200", Some(flow()));
    let a_tx = setup.tx.clone();
    let (mut call, _) = node.start(setup);
    let out = node.feed(&mut call, Input::Cancel { invite: a_tx });
    assert!(out.is_empty(), "{out:#?}");
    assert!(call.is_ivr());
}

#[test]
fn a_hold_the_flow_replaces_without_bridging_is_released_at_once() {
    let twice = r#"
name: twice
start: destination
states:
  destination:
    collect: {into: destination, prompt: [enter_dest], min: 3, max: 3, next: first, fail: bye}
  first:
    authorize: {phase: 2, account: destination, destination: destination, on: {"0": second, default: bye}}
  second:
    authorize: {phase: 2, account: destination, destination: destination, on: {"0": bye, default: bye}}
  bye:
    hangup: {cause: normal}
"#;
    let flow = ivr::Flow::parse(twice, "twice.yaml", &ivr::catalogue_prompts()).expect("flow");
    let mut node = Node::new();
    let setup = node.setup("5551200", Some(Arc::new(flow)));
    let (mut call, _) = node.start(setup);
    let mut out = Vec::new();
    for d in "555".chars() {
        out = node.feed(&mut call, Input::Media(MediaEvent::Digit(d)));
    }
    let first = phase2(&out).conf_id;
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &first, 300, 3600),
    );
    let second = phase2(&out).conf_id;
    assert_ne!(second, first);
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &second, 300, 3600),
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Release(r) if r.conf_id == first)),
        "the first hold goes back when the second replaces it: {out:#?}"
    );
    // The flow hangs up: the hold it still has is settled with the call.
    let (c, _) = settle(&out).expect("settled at the end");
    assert_eq!(c, second);
}

/// The first gateway as a carrier that wants digest credentials.
fn carrier_config(realm: Option<&str>) -> String {
    let realm = realm.map(|r| format!(", realm: {r}")).unwrap_or_default();
    CONFIG.replace(
        "channels: 10}\n  - {name: gw2",
        &format!(
            "channels: 10, auth: {{username: acme, password: s3cret{realm}}}}}\n  - {{name: gw2"
        ),
    )
}

/// A gateway's challenge to our INVITE.
fn gw_challenge(req: &Request, code: u16, challenge: &str) -> Input {
    let Input::Response { tx, mut resp, from } = gw_response(req, code, false) else {
        unreachable!()
    };
    let name = if code == 407 {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    resp.headers.push(hdr(name, challenge));
    Input::Response { tx, resp, from }
}

const CHALLENGE: &str =
    r#"Digest realm="carrier.example", nonce="n0nce", qop="auth", algorithm=SHA-256, opaque="op""#;

#[test]
fn a_carrier_that_challenges_gets_our_credentials_once_on_the_same_call() {
    use crate::sip::digest::{authorization, Challenge, Credentials};
    let mut node = Node::with_config(&carrier_config(Some("carrier.example")));
    assert!(
        !format!("{:?}", node.settings.cfg).contains("s3cret"),
        "the password is not printed"
    );
    let (mut call, a_tx, _conf, out) = dialled(&mut node);
    let (_, first, _) = sent(&out, Method::Invite).pop().expect("dialled");
    let out = node.feed(&mut call, gw_challenge(&first, 401, CHALLENGE));
    assert!(
        answered(&out, &a_tx).is_empty(),
        "the caller hears nothing of it"
    );
    let (_, again, peer) = sent(&out, Method::Invite).pop().expect("asked again");
    assert_eq!(peer.addr.port(), 5062, "the same gateway");
    assert_eq!(again.call_id(), first.call_id());
    assert_eq!(again.header("From"), first.header("From"));
    assert_eq!(again.header("To"), first.header("To"));
    assert_eq!(again.cseq(), Some((2, Method::Invite)));
    assert_ne!(
        transaction::key(&again).unwrap(),
        transaction::key(&first).unwrap(),
        "a new transaction"
    );
    assert_eq!(again.body, first.body);
    let auth = again.header("Authorization").expect("credentials");
    let cnonce = auth
        .split("cnonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let expected = authorization(
        &Challenge::parse(CHALLENGE).unwrap(),
        Credentials {
            username: "acme",
            password: "s3cret",
        },
        "INVITE",
        &first.uri.to_string(),
        cnonce,
        1,
    );
    assert_eq!(auth, expected);
    assert!(!auth.contains("s3cret"));
    assert_eq!(node.channels.in_use(0), 1, "still one channel");
    let out = node.feed(&mut call, gw_response(&again, 200, true));
    let ack = the_ack(&out);
    assert_eq!(ack.cseq(), Some((2, Method::Ack)));
    assert_eq!(answered(&out, &a_tx), [200]);
    let (_, bye) = from_caller("BYE", 2, "");
    let out = node.feed(&mut call, bye);
    let (_, gw_bye, _) = sent(&out, Method::Bye)
        .pop()
        .expect("the gateway is hung up");
    assert_eq!(gw_bye.cseq(), Some((3, Method::Bye)));
}

#[test]
fn refused_credentials_or_a_foreign_realm_fail_over_to_the_next_gateway() {
    // Challenged again after our answer: the credentials are wrong.
    let mut node = Node::with_config(&carrier_config(None));
    let (mut call, a_tx, _conf, out) = dialled(&mut node);
    let (_, first, _) = sent(&out, Method::Invite).pop().unwrap();
    let out = node.feed(&mut call, gw_challenge(&first, 407, CHALLENGE));
    let (_, again, _) = sent(&out, Method::Invite).pop().unwrap();
    assert!(again.header("Proxy-Authorization").is_some());
    let out = node.feed(&mut call, gw_challenge(&again, 407, CHALLENGE));
    let (_, next, peer) = sent(&out, Method::Invite).pop().expect("the next gateway");
    assert_eq!(peer.addr.port(), 5064);
    assert!(
        next.header("Proxy-Authorization").is_none(),
        "gw2 gets no credentials"
    );
    assert_eq!(node.channels.in_use(0), 0, "gw1's channel is back");
    assert!(answered(&out, &a_tx).is_empty());

    // A realm we hold no credentials for is not answered at all.
    let mut node = Node::with_config(&carrier_config(Some("carrier.example")));
    let (mut call, _a_tx, _conf, out) = dialled(&mut node);
    let (_, first, _) = sent(&out, Method::Invite).pop().unwrap();
    let other = CHALLENGE.replace("carrier.example", "evil.example");
    let out = node.feed(&mut call, gw_challenge(&first, 401, &other));
    let (_, _, peer) = sent(&out, Method::Invite).pop().expect("the next gateway");
    assert_eq!(peer.addr.port(), 5064);

    // A gateway without credentials configured that challenges is a failure, as before.
    let mut node = Node::new();
    let (mut call, _a_tx, _conf, out) = dialled(&mut node);
    let (_, first, _) = sent(&out, Method::Invite).pop().unwrap();
    let out = node.feed(&mut call, gw_challenge(&first, 401, CHALLENGE));
    let (_, _, peer) = sent(&out, Method::Invite).pop().expect("the next gateway");
    assert_eq!(peer.addr.port(), 5064);
}

// Session timers (RFC 4028), each leg on its own.

/// A gateway's response to our INVITE with `extra` headers.
fn gw_response_with(req: &Request, code: u16, sdp: bool, extra: &[(&str, &str)]) -> Input {
    let mut input = gw_response(req, code, sdp);
    if let Input::Response { resp, .. } = &mut input {
        for (name, value) in extra {
            resp.headers.push(hdr(name, *value));
        }
    }
    input
}

/// A pinless call answered end to end, its INVITE carrying `invite_extra` and the gateway's
/// 200 `gw_extra`: the call, the B-leg INVITE, the conference and our 200 to the caller.
fn answered_with(
    node: &mut Node,
    invite_extra: &str,
    gw_extra: &[(&str, &str)],
    granted: u64,
) -> (Call, Request, String, Response) {
    let setup = node.setup_with("55512015555233", None, invite_extra);
    let a_tx = setup.tx.clone();
    let (mut call, out) = node.start(setup);
    let conf = phase2(&out).conf_id;
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &conf, granted, granted),
    );
    let (_, inv, _) = sent(&out, Method::Invite).pop().expect("dialled");
    let out = node.feed(&mut call, gw_response_with(&inv, 200, true, gw_extra));
    let ok = the_response(&out, &a_tx, 200);
    (call, inv, conf, ok)
}

/// A response from the caller to a request we sent it.
fn caller_response(req: &Request, code: u16) -> Input {
    let mut resp = response_to(req, code, None);
    if (200..300).contains(&code) && req.method == Method::Invite {
        resp.headers.push(hdr("Content-Type", "application/sdp"));
        resp.body = OFFER.as_bytes().to_vec();
    }
    Input::Response {
        tx: transaction::key(req).unwrap(),
        resp,
        from: caller(),
    }
}

fn header_of<'a>(m: &'a impl SipExt, name: &str) -> Option<&'a str> {
    m.header(name)
}

#[test]
fn a_caller_that_stops_refreshing_its_session_is_hung_up_and_settled() {
    let mut node = Node::new();
    let (mut call, _, conf, ok) = answered_with(
        &mut node,
        "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        &[],
        300,
    );
    assert_eq!(header_of(&ok, "Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(header_of(&ok, "Require"), Some("timer"));
    // Refreshes are the caller's leg's own: answered by us, nothing reaches the gateway.
    node.later(Duration::from_secs(30));
    let (tx, update) = from_caller("UPDATE", 2, "");
    let out = node.feed(&mut call, update);
    let resp = the_response(&out, &tx, 200);
    assert_eq!(
        header_of(&resp, "Session-Expires"),
        Some("90;refresher=uac")
    );
    assert!(sent(&out, Method::Update).is_empty());
    node.later(Duration::from_secs(30));
    let (tx, reinvite) = from_caller("INVITE", 3, OFFER);
    let out = node.feed(&mut call, reinvite);
    let resp = the_response(&out, &tx, 200);
    assert!(
        String::from_utf8_lossy(&resp.body).contains("30000"),
        "our answer again"
    );
    assert!(sent(&out, Method::Invite).is_empty(), "not relayed");
    // Then nothing: 30 s (a third of 90) before the session's end, both legs are hung up.
    node.later(Duration::from_secs(59));
    let out = node.feed(&mut call, Input::Timer);
    assert!(sent(&out, Method::Bye).is_empty(), "{out:#?}");
    node.later(Duration::from_secs(1));
    let out = node.feed(&mut call, Input::Timer);
    assert_eq!(sent(&out, Method::Bye).len(), 2, "both legs");
    let (c, end) = settle(&out).expect("settled");
    assert_eq!(
        (c.as_str(), end.cause.as_str()),
        (conf.as_str(), "session expired")
    );
    assert_eq!(
        (end.disconnect_at - end.connect_at.unwrap()).num_seconds(),
        120
    );
}

#[test]
fn we_refresh_a_caller_without_timers_and_a_481_ends_the_call() {
    let mut node = Node::new();
    let (mut call, _, conf, ok) = answered_with(&mut node, "", &[], 3600);
    assert_eq!(
        header_of(&ok, "Session-Expires"),
        Some("1800;refresher=uas")
    );
    assert_eq!(header_of(&ok, "Require"), None, "it does not know timers");
    node.later(Duration::from_secs(900));
    let out = node.feed(&mut call, Input::Timer);
    let (_, refresh, peer) = sent(&out, Method::Invite).pop().expect("a refresh");
    assert_eq!(peer.addr.port(), 5070, "to the caller");
    assert_eq!(refresh.body, ok.body, "the same SDP: no change");
    assert_eq!(
        header_of(&refresh, "Session-Expires"),
        Some("1800;refresher=uac")
    );
    let out = node.feed(&mut call, caller_response(&refresh, 200));
    assert!(out.iter().any(|o| matches!(o, Output::Ack { .. })));
    assert!(settle(&out).is_none());
    node.later(Duration::from_secs(900));
    let out = node.feed(&mut call, Input::Timer);
    let (_, refresh, _) = sent(&out, Method::Invite).pop().expect("the next refresh");
    let out = node.feed(&mut call, caller_response(&refresh, 481));
    assert_eq!(sent(&out, Method::Bye).len(), 2);
    let (c, end) = settle(&out).expect("settled");
    assert_eq!(
        (c.as_str(), end.cause.as_str()),
        (conf.as_str(), "session refresh refused")
    );
}

#[test]
fn the_gateway_leg_is_refreshed_with_update_and_an_unanswered_refresh_ends_the_call() {
    let mut node = Node::new();
    let (mut call, inv, conf, _) = answered_with(
        &mut node,
        "",
        &[
            ("Session-Expires", "90;refresher=uac"),
            ("Require", "timer"),
            ("Allow", "INVITE, ACK, BYE, UPDATE"),
        ],
        300,
    );
    assert_eq!(inv.header_values("Supported"), ["100rel", "timer"]);
    assert_eq!(header_of(&inv, "Session-Expires"), Some("1800"));
    assert_eq!(header_of(&inv, "Min-SE"), Some("90"));
    node.later(Duration::from_secs(45));
    let out = node.feed(&mut call, Input::Timer);
    let (tx, update, peer) = sent(&out, Method::Update).pop().expect("a refresh");
    assert_eq!(peer.addr.port(), 5062);
    assert_eq!(update.call_id(), inv.call_id());
    assert!(update.body.is_empty());
    assert_eq!(
        header_of(&update, "Session-Expires"),
        Some("90;refresher=uac")
    );
    let out = node.feed(&mut call, Input::Timeout { tx });
    assert_eq!(sent(&out, Method::Bye).len(), 2);
    let (c, end) = settle(&out).expect("settled");
    assert_eq!(
        (c.as_str(), end.cause.as_str()),
        (conf.as_str(), "session refresh unanswered")
    );
}

#[test]
fn a_gateway_refresh_is_answered_on_its_own_leg_and_its_absence_ends_the_call() {
    let mut node = Node::new();
    let (mut call, inv, conf, _) = answered_with(
        &mut node,
        "",
        &[
            ("Session-Expires", "90;refresher=uas"),
            ("Require", "timer"),
        ],
        300,
    );
    node.later(Duration::from_secs(50));
    let (tx, reinvite) = gw_request(&inv, "INVITE", 5, GW_SDP);
    let out = node.feed(&mut call, reinvite);
    let resp = the_response(&out, &tx, 200);
    assert_eq!(resp.body, inv.body, "the offer we made it, again");
    assert_eq!(
        header_of(&resp, "Session-Expires"),
        Some("90;refresher=uac")
    );
    assert!(sent(&out, Method::Invite).is_empty(), "not relayed");
    node.later(Duration::from_secs(59));
    assert!(sent(&node.feed(&mut call, Input::Timer), Method::Bye).is_empty());
    node.later(Duration::from_secs(1));
    let out = node.feed(&mut call, Input::Timer);
    assert_eq!(sent(&out, Method::Bye).len(), 2);
    let (c, end) = settle(&out).expect("settled");
    assert_eq!(
        (c.as_str(), end.cause.as_str()),
        (conf.as_str(), "session expired")
    );
}

#[test]
fn a_gateway_asking_a_longer_session_gets_it_once_then_the_next_gateway() {
    let mut node = Node::new();
    let (mut call, _, _, out) = dialled(&mut node);
    let (_, first, _) = sent(&out, Method::Invite).pop().unwrap();
    let out = node.feed(
        &mut call,
        gw_response_with(&first, 422, false, &[("Min-SE", "3600")]),
    );
    let (_, second, peer) = sent(&out, Method::Invite).pop().expect("asked again");
    assert_eq!(peer.addr.port(), 5062, "the same gateway");
    assert_eq!(second.call_id(), first.call_id());
    assert_eq!(second.from_tag(), first.from_tag());
    assert_eq!(second.cseq().unwrap().0, 2);
    assert_ne!(second.branch(), first.branch());
    assert_eq!(header_of(&second, "Session-Expires"), Some("3600"));
    assert_eq!(header_of(&second, "Min-SE"), Some("3600"));
    assert_eq!(second.header_values("Supported"), ["100rel", "timer"]);
    let out = node.feed(
        &mut call,
        gw_response_with(&second, 422, false, &[("Min-SE", "7200")]),
    );
    let (_, third, peer) = sent(&out, Method::Invite).pop().expect("the next gateway");
    assert_eq!(peer.addr.port(), 5064);
    assert_eq!(header_of(&third, "Session-Expires"), Some("1800"));
}

#[test]
fn an_ivr_caller_refreshing_in_its_flow_gets_200_and_a_dead_destination_leg_returns_it_there() {
    let mut node = Node::new();
    let (mut call, inv, conf) = dialling_ivr(&mut node, 300, 3600);
    // Before the bridge is up a session change would get 491; a refresh is answered.
    let (tx, update) = from_caller("UPDATE", 2, "");
    let out = node.feed(&mut call, update);
    assert_eq!(answered(&out, &tx), [200]);
    let out = node.feed(
        &mut call,
        gw_response_with(&inv, 200, true, &[("Session-Expires", "90;refresher=uas")]),
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Media(MediaCmd::Bridge(true)))));
    node.later(Duration::from_secs(60));
    let out = node.feed(&mut call, Input::Timer);
    let byes = sent(&out, Method::Bye);
    assert_eq!(byes.len(), 1, "only the destination's leg");
    assert_eq!(byes[0].2.addr.port(), 5062);
    let (c, _) = settle(&out).expect("the bridge is settled");
    assert_eq!(c, conf);
    assert!(
        !ended(&out) && call.is_ivr(),
        "the caller is back in the flow"
    );
}

#[test]
fn a_reliable_183_is_pracked_once_its_media_relayed_and_the_dialog_counts_on() {
    let mut node = Node::new();
    let (mut call, a_tx, _, out) = dialled(&mut node);
    let (_, inv, _) = sent(&out, Method::Invite).pop().unwrap();
    assert!(inv.header_values("Supported").contains(&"100rel"));
    let reliable = |rseq: &str| {
        gw_response_with(
            &inv,
            183,
            true,
            &[
                ("Require", "100rel"),
                ("RSeq", rseq),
                ("Contact", "<sip:early@127.0.0.1:5062>"),
            ],
        )
    };
    let out = node.feed(&mut call, reliable("1"));
    assert_eq!(
        answered(&out, &a_tx),
        [183],
        "early media reaches the caller"
    );
    let (_, prack, peer) = sent(&out, Method::PRack).pop().expect("a PRACK");
    assert_eq!(peer.addr.port(), 5062);
    assert_eq!(header_of(&prack, "RAck"), Some("1 1 INVITE"));
    assert_eq!(prack.cseq(), Some((2, Method::PRack)));
    assert_eq!(prack.call_id(), inv.call_id());
    assert_eq!(prack.to_tag(), Some("gwtag"));
    assert_eq!(prack.uri.to_string(), "sip:early@127.0.0.1:5062");

    let out = node.feed(&mut call, reliable("1"));
    assert!(
        sent(&out, Method::PRack).is_empty(),
        "a resent 183 is not PRACKed"
    );
    assert!(answered(&out, &a_tx).is_empty(), "nor passed on");
    let out = node.feed(&mut call, reliable("3"));
    assert!(sent(&out, Method::PRack).is_empty(), "out of order");
    let out = node.feed(&mut call, reliable("2"));
    let (_, prack, _) = sent(&out, Method::PRack).pop().expect("the next one");
    assert_eq!(header_of(&prack, "RAck"), Some("2 1 INVITE"));
    assert_eq!(prack.cseq(), Some((3, Method::PRack)));

    let out = node.feed(&mut call, gw_response(&inv, 200, true));
    let ack = out
        .iter()
        .find_map(|o| match o {
            Output::Ack { req, .. } => Some(req.clone()),
            _ => None,
        })
        .expect("ACKed");
    assert_eq!(
        ack.cseq(),
        Some((1, Method::Ack)),
        "ACK keeps the INVITE's number"
    );
    assert_eq!(answered(&out, &a_tx), [200]);
    let (_, bye) = from_caller("BYE", 2, "");
    let out = node.feed(&mut call, bye);
    let (_, bye, _) = sent(&out, Method::Bye).pop().expect("the gateway hung up");
    assert_eq!(
        bye.cseq(),
        Some((4, Method::Bye)),
        "past the PRACKs' numbers"
    );
}

#[test]
fn a_reliable_response_without_rseq_is_relayed_but_cannot_be_pracked() {
    let mut node = Node::new();
    let (mut call, a_tx, _, out) = dialled(&mut node);
    let (_, inv, _) = sent(&out, Method::Invite).pop().unwrap();
    let out = node.feed(
        &mut call,
        gw_response_with(&inv, 183, true, &[("Require", "100rel"), ("RSeq", "zero")]),
    );
    assert_eq!(answered(&out, &a_tx), [183]);
    assert!(sent(&out, Method::PRack).is_empty());
}

/// The caller puts an answered call on hold: its re-INVITE's transaction, and the re-INVITE
/// we relayed to the gateway.
fn caller_holds(node: &mut Node, call: &mut Call) -> (TxKey, Request) {
    let hold = OFFER.replace("a=rtpmap:101", "a=sendonly\r\na=rtpmap:101");
    let reinvite = caller_request("INVITE", 2, "tag3", &hold);
    let origin = transaction::key(&reinvite).unwrap();
    let input = Input::Request {
        side: Side::A,
        tx: origin.clone(),
        req: reinvite,
    };
    let out = node.feed(call, input);
    let (_, relayed, _) = sent(&out, Method::Invite).pop().expect("relayed");
    (origin, relayed)
}

#[test]
fn a_carrier_challenging_a_relayed_re_invite_gets_our_credentials_and_the_caller_its_200() {
    let mut node = Node::with_config(&carrier_config(None));
    let (mut call, _, inv, _) = answered_pinless(&mut node, 300, 3600);
    let (origin, relayed) = caller_holds(&mut node, &mut call);
    let seq = relayed.cseq().unwrap().0;
    let out = node.feed(&mut call, gw_challenge(&relayed, 407, CHALLENGE));
    assert!(
        answered(&out, &origin).is_empty(),
        "the caller hears nothing of it"
    );
    let (_, again, peer) = sent(&out, Method::Invite).pop().expect("asked again");
    assert_eq!(peer.addr.port(), 5062);
    assert_eq!(again.call_id(), inv.call_id());
    assert_eq!(again.cseq(), Some((seq + 1, Method::Invite)));
    assert_eq!(again.body, relayed.body, "the same offer");
    assert!(again.header("Proxy-Authorization").is_some());
    let out = node.feed(&mut call, gw_response(&again, 200, true));
    let ack = the_ack(&out);
    assert_eq!(ack.cseq(), Some((seq + 1, Method::Ack)));
    assert_eq!(answered(&out, &origin), [200]);
    // The dialog counts on past the resent request.
    let (_, bye) = from_caller("BYE", 3, "");
    let out = node.feed(&mut call, bye);
    let (_, gw_bye, _) = sent(&out, Method::Bye).pop().expect("hung up");
    assert_eq!(gw_bye.cseq(), Some((seq + 2, Method::Bye)));
}

#[test]
fn a_second_challenge_to_a_re_invite_refuses_it_without_ending_the_call() {
    let mut node = Node::with_config(&carrier_config(None));
    let (mut call, _, _, _) = answered_pinless(&mut node, 300, 3600);
    let (origin, relayed) = caller_holds(&mut node, &mut call);
    let out = node.feed(&mut call, gw_challenge(&relayed, 401, CHALLENGE));
    let (_, again, _) = sent(&out, Method::Invite).pop().unwrap();
    let out = node.feed(&mut call, gw_challenge(&again, 401, CHALLENGE));
    assert!(sent(&out, Method::Invite).is_empty(), "asked once only");
    let refused = the_response(&out, &origin, 500);
    assert!(header_of(&refused, "Warning").is_some_and(|w| w.contains("credentials")));
    assert!(!ended(&out), "the call goes on as it was");
}

#[test]
fn a_challenged_session_refresh_is_sent_again_with_credentials() {
    let mut node = Node::with_config(&carrier_config(None));
    let (mut call, _, _, _) = answered_with(
        &mut node,
        "",
        &[
            ("Session-Expires", "90;refresher=uac"),
            ("Require", "timer"),
            ("Allow", "INVITE, ACK, BYE, UPDATE"),
        ],
        300,
    );
    node.later(Duration::from_secs(45));
    let out = node.feed(&mut call, Input::Timer);
    let (_, update, _) = sent(&out, Method::Update).pop().expect("a refresh");
    let seq = update.cseq().unwrap().0;
    let out = node.feed(&mut call, gw_challenge(&update, 401, CHALLENGE));
    let (_, again, _) = sent(&out, Method::Update).pop().expect("asked again");
    assert_eq!(again.cseq(), Some((seq + 1, Method::Update)));
    assert!(again.header("Authorization").is_some());
    let agreed = [
        ("Session-Expires", "90;refresher=uac"),
        ("Require", "timer"),
        ("Allow", "INVITE, ACK, BYE, UPDATE"),
    ];
    let out = node.feed(&mut call, gw_response_with(&again, 200, false, &agreed));
    assert!(!ended(&out));
    // Refreshed: the session that would have ended at 90 s is refreshed again instead.
    node.later(Duration::from_secs(50));
    let out = node.feed(&mut call, Input::Timer);
    assert!(!ended(&out), "the refresh counted");
    assert!(sent(&out, Method::Bye).is_empty());
    let (_, next, _) = sent(&out, Method::Update).pop().expect("the next refresh");
    assert_eq!(next.cseq(), Some((seq + 2, Method::Update)));
}

/// The B-leg INVITE of a pinless call on a node whose first gateway has `identity`, the
/// caller's INVITE carrying `extra`.
fn dialled_as(identity: &str, extra: &str) -> Request {
    let config = CONFIG.replace(
        "channels: 10}\n  - {name: gw2",
        &format!("channels: 10, identity: {identity}}}\n  - {{name: gw2"),
    );
    let mut node = Node::with_config(&config);
    let (mut call, out) = node.start(node.setup_with("55512015555233", None, extra));
    let conf = phase2(&out).conf_id;
    let out = node.feed(&mut call, call_answer(ReturnCode::Success, &conf, 300, 300));
    sent(&out, Method::Invite).pop().expect("dialled").1
}

#[test]
fn each_gateway_sees_the_caller_as_it_wants_and_a_withheld_number_stays_withheld() {
    let plain = dialled_as("{}", "");
    assert!(plain
        .header("From")
        .unwrap()
        .starts_with("<sip:4085551234@"));
    assert_eq!(plain.header("P-Asserted-Identity"), None);
    assert_eq!(plain.header("Privacy"), None);

    let trusted = dialled_as("{pai: true}", "");
    assert!(trusted
        .header("From")
        .unwrap()
        .starts_with("<sip:4085551234@"));
    assert!(trusted
        .header("P-Asserted-Identity")
        .is_some_and(|p| p.starts_with("<sip:4085551234@")));

    // The caller withheld its number: the carrier that trusts us still gets it, told not to
    // show it; the one that does not gets nothing.
    let withheld = dialled_as("{pai: true}", "Privacy: id\r\n");
    assert!(withheld
        .header("From")
        .unwrap()
        .contains("anonymous.invalid"));
    assert!(withheld.header("P-Asserted-Identity").is_some());
    assert_eq!(withheld.header("Privacy"), Some("id"));
    let untrusted = dialled_as("{}", "Privacy: id\r\n");
    assert!(untrusted
        .header("From")
        .unwrap()
        .contains("anonymous.invalid"));
    assert_eq!(untrusted.header("P-Asserted-Identity"), None);
    assert_eq!(untrusted.header("Privacy"), Some("id"));

    let always = dialled_as("{pai: true, from: anonymous, privacy: always}", "");
    assert!(always.header("From").unwrap().contains("anonymous.invalid"));
    assert_eq!(always.header("Privacy"), Some("id"));
    // Nothing of the caller's own identity headers crosses by itself.
    let diverted = dialled_as("{}", "Diversion: <sip:1@h>;reason=unconditional\r\n");
    assert_eq!(diverted.header("Diversion"), None);
}

#[test]
fn a_refresh_crossing_the_peers_re_invite_is_tried_again_and_theirs_waits() {
    let mut node = Node::new();
    let (mut call, _, _, ok) = answered_with(&mut node, "", &[], 3600);
    node.later(Duration::from_secs(900));
    let out = node.feed(&mut call, Input::Timer);
    let (_, refresh, _) = sent(&out, Method::Invite).pop().expect("our refresh");
    // The caller's own re-INVITE while ours is out: 491, it tries again later.
    let hold = OFFER.replace("a=rtpmap:101", "a=sendonly\r\na=rtpmap:101");
    let (tx, theirs) = from_caller("INVITE", 2, &hold);
    let out = node.feed(&mut call, theirs);
    assert_eq!(answered(&out, &tx), [491]);
    assert!(sent(&out, Method::Invite).is_empty(), "not relayed");
    // And the caller 491s ours: we try again within 2 s (the caller owns the Call-ID).
    let out = node.feed(&mut call, caller_response(&refresh, 491));
    assert!(!ended(&out), "glare ends nothing");
    assert!(sent(&out, Method::Invite).is_empty(), "not at once");
    node.later(Duration::from_millis(2000));
    let out = node.feed(&mut call, Input::Timer);
    let (_, again, _) = sent(&out, Method::Invite).pop().expect("tried again");
    assert_eq!(again.body, ok.body, "still no change");
    assert!(again.cseq().unwrap().0 > refresh.cseq().unwrap().0);
    let out = node.feed(&mut call, caller_response(&again, 200));
    assert!(out.iter().any(|o| matches!(o, Output::Ack { .. })));
    // With nothing of ours out, the caller's re-INVITE goes through to the gateway.
    let (_, theirs) = from_caller("INVITE", 3, &hold);
    let out = node.feed(&mut call, theirs);
    assert_eq!(sent(&out, Method::Invite).len(), 1);
}

/// An SDES offer (RFC 4568) from the caller, keyed with `key`.
fn srtp_offer(key: &[u8; 30], extra: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    OFFER.replace("RTP/AVP", "RTP/SAVP")
        + &format!("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{b64}\r\n{extra}")
}

/// An SDP body that offers or answers plain RTP, no keys.
fn assert_plain_rtp(body: &[u8]) {
    let body = String::from_utf8_lossy(body);
    assert!(
        body.contains("RTP/AVP") && !body.contains("crypto"),
        "{body}"
    );
}

/// The peer keys the call told the media layer about, per side, in order.
fn srtp_remotes(out: &[Output]) -> Vec<(Side, Option<[u8; 30]>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Media(MediaCmd::Remote { side, srtp, .. }) => Some((*side, srtp.map(|k| k.0))),
            _ => None,
        })
        .collect()
}

#[test]
fn an_srtp_caller_gets_our_key_the_gateway_plain_rtp_and_re_offers_keep_each_leg_as_it_is() {
    use base64::Engine as _;
    let b64 = |k: &[u8; 30]| base64::engine::general_purpose::STANDARD.encode(k);
    let mut node = Node::new();
    let mut setup = node.setup("55512015555233", None);
    setup.offer = sdp::parse(srtp_offer(&[5; 30], "").as_bytes()).unwrap();
    let a_tx = setup.tx.clone();
    let (mut call, out) = node.start(setup);
    assert_eq!(srtp_remotes(&out), [(Side::A, Some([5; 30]))]);
    let req = phase2(&out);
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &req.conf_id, 300, 3600),
    );
    let (_, inv, _) = sent(&out, Method::Invite).pop().expect("dialled");
    assert_plain_rtp(&inv.body);
    let out = node.feed(&mut call, gw_response(&inv, 200, true));
    assert_eq!(srtp_remotes(&out), [(Side::B, None)]);
    let ok = String::from_utf8_lossy(&the_response(&out, &a_tx, 200).body).to_string();
    assert!(ok.contains("m=audio 30000 RTP/SAVP 0"), "{ok}");
    assert!(
        ok.contains(&format!(
            "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            b64(&[1; 30])
        )),
        "our caller-leg key under the offer's tag: {ok}"
    );
    // The caller holds, re-keying: the new key reaches the media, the gateway gets plain RTP.
    let hold = srtp_offer(&[6; 30], "a=sendonly\r\n");
    let (origin, reinvite) = from_caller("INVITE", 2, &hold);
    let out = node.feed(&mut call, reinvite);
    assert_eq!(srtp_remotes(&out), [(Side::A, Some([6; 30]))]);
    let (_, relayed, _) = sent(&out, Method::Invite).pop().expect("relayed");
    assert_plain_rtp(&relayed.body);
    let out = node.feed(&mut call, gw_response(&relayed, 200, true));
    let ok = String::from_utf8_lossy(&the_response(&out, &origin, 200).body).to_string();
    assert!(
        ok.contains("RTP/SAVP") && ok.contains(&b64(&[1; 30])),
        "{ok}"
    );
    // The gateway's own re-INVITE reaches the caller as an SRTP offer with our key, and the
    // caller's answer keys the media again.
    let gw_hold = GW_SDP.replace("o=- 2 2", "o=- 2 3") + "a=sendonly\r\n";
    let out = node.feed(&mut call, gw_request(&inv, "INVITE", 5, &gw_hold).1);
    let (_, to_caller, _) = sent(&out, Method::Invite).pop().expect("to the caller");
    let body = String::from_utf8_lossy(&to_caller.body).to_string();
    assert!(
        body.contains("RTP/SAVP") && body.contains(&format!("inline:{}", b64(&[1; 30]))),
        "{body}"
    );
    let mut answer = caller_response(&to_caller, 200);
    if let Input::Response { resp, .. } = &mut answer {
        resp.body = srtp_offer(&[8; 30], "a=recvonly\r\n").into_bytes();
    }
    let out = node.feed(&mut call, answer);
    assert_eq!(srtp_remotes(&out), [(Side::A, Some([8; 30]))], "{out:?}");
}

#[test]
fn an_srtp_offer_we_cannot_key_is_not_usable_and_says_why() {
    // Admission answers 488 with this reason before any call exists.
    let offer = OFFER.replace("RTP/AVP", "RTP/SAVP");
    let why = legs::usable_offer(offer.as_bytes()).unwrap_err();
    assert!(why.contains("SRTP required"), "{why}");
    let other_suite = offer + "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:AAAA\r\n";
    assert!(legs::usable_offer(other_suite.as_bytes()).is_err());
}

#[test]
fn a_gateway_configured_for_srtp_is_offered_our_key_and_must_answer_with_its_own() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, c.cert.pem()).unwrap();
    let yaml = CONFIG.replacen(
        "transport: udp, channels: 10}",
        &format!(
            "transport: tls, srtp: true, tls: {{ca: \"{}\"}}, channels: 10}}",
            ca.display()
        ),
        1,
    );
    let gw_key = [4u8; 30];
    let gw_srtp = GW_SDP.replace("RTP/AVP", "RTP/SAVP")
        + &format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            base64::engine::general_purpose::STANDARD.encode(gw_key)
        );
    for (answer, usable) in [(gw_srtp.as_str(), true), (GW_SDP, false)] {
        let mut node = Node::with_config(&yaml);
        let setup = node.setup("55512015555233", None);
        let a_tx = setup.tx.clone();
        let (mut call, out) = node.start(setup);
        let req = phase2(&out);
        let out = node.feed(
            &mut call,
            call_answer(ReturnCode::Success, &req.conf_id, 300, 3600),
        );
        let (_, inv, peer) = sent(&out, Method::Invite).pop().expect("dialled");
        assert_eq!(peer.proto, crate::routing::Proto::Tls);
        let offer = String::from_utf8_lossy(&inv.body).to_string();
        assert!(offer.contains("RTP/SAVP"), "{offer}");
        let ours = base64::engine::general_purpose::STANDARD.encode([2u8; 30]);
        assert!(
            offer.contains(&format!("inline:{ours}")),
            "our gateway-leg key: {offer}"
        );
        let mut ok = gw_response(&inv, 200, true);
        if let Input::Response { resp, .. } = &mut ok {
            resp.body = answer.as_bytes().to_vec();
        }
        let out = node.feed(&mut call, ok);
        if usable {
            assert_eq!(srtp_remotes(&out), [(Side::B, Some(gw_key))]);
            let to_caller = the_response(&out, &a_tx, 200);
            let body = String::from_utf8_lossy(&to_caller.body).to_string();
            assert!(
                body.contains("RTP/AVP") && !body.contains("crypto"),
                "the caller offered plain RTP and gets it: {body}"
            );
        } else {
            // Offered SRTP and answered plain: not a call we may carry.
            assert_eq!(answered(&out, &a_tx), [488]);
            assert_eq!(sent(&out, Method::Bye).len(), 1, "the gateway is hung up");
        }
    }
}

// Reliable provisional responses toward the caller (RFC 3262), and re-INVITEs without SDP.

/// A pinless call whose INVITE has `extra` headers, dialled: the call, the caller's
/// transaction, the conference and the gateway INVITE.
fn dialled_with(node: &mut Node, extra: &str) -> (Call, TxKey, String, Request) {
    let setup = node.setup_with("55512015555233", None, extra);
    let a_tx = setup.tx.clone();
    let (mut call, out) = node.start(setup);
    let conf = phase2(&out).conf_id;
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &conf, 300, 3600),
    );
    let (_, inv, _) = sent(&out, Method::Invite).pop().expect("dialled");
    (call, a_tx, conf, inv)
}

/// The caller's PRACK naming `rack`, in the early dialog our 18x (tag `to_tag`) opened.
fn caller_prack(to_tag: &str, cseq: u32, rack: &str) -> (TxKey, Input) {
    let mut req = caller_request("PRACK", cseq, to_tag, "");
    req.headers.push(hdr("RAck", rack));
    on_leg(Side::A, req)
}

fn remotes(out: &[Output]) -> Vec<(Side, std::net::SocketAddr)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Media(MediaCmd::Remote { side, addr, .. }) => Some((*side, *addr)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_caller_requiring_100rel_gets_its_183_reliably_and_our_200_only_after_its_prack() {
    let mut node = Node::new();
    let (mut call, a_tx, _, inv) = dialled_with(&mut node, "Require: 100rel\r\n");
    let out = node.feed(&mut call, gw_response(&inv, 183, true));
    let early = the_response(&out, &a_tx, 183);
    assert_eq!(header_of(&early, "Require"), Some("100rel"));
    let rseq: u32 = header_of(&early, "RSeq").unwrap().parse().unwrap();
    assert!((1..1 << 31).contains(&rseq), "RSeq {rseq} below 2**31");
    assert!(!early.body.is_empty(), "with our answer");
    let tag = early.to_tag().unwrap().to_string();

    // Resent from T1 until the PRACK comes, and a 180 meanwhile waits its turn.
    node.later(Duration::from_millis(500));
    let out = node.feed(&mut call, Input::Timer);
    assert_eq!(the_response(&out, &a_tx, 183), early);
    let out = node.feed(&mut call, gw_response(&inv, 180, false));
    assert!(
        answered(&out, &a_tx).is_empty(),
        "one reliable response out at a time"
    );

    // The gateway answers: our 200 waits, since the caller may not have our SDP yet.
    let out = node.feed(&mut call, gw_response(&inv, 200, true));
    assert!(out.iter().any(|o| matches!(o, Output::Ack { .. })));
    assert!(answered(&out, &a_tx).is_empty(), "200 held for the PRACK");
    // A CANCEL now changes nothing: the call is answered.
    assert!(answered(
        &node.feed(
            &mut call,
            Input::Cancel {
                invite: a_tx.clone()
            }
        ),
        &a_tx
    )
    .is_empty());

    // A PRACK naming anything else is 481, one without RAck 400.
    let (tx, wrong) = caller_prack(&tag, 2, &format!("{} 1 INVITE", rseq + 5));
    assert_eq!(answered(&node.feed(&mut call, wrong), &tx), [481]);
    let (tx, stranger) = caller_prack("not-ours", 2, &format!("{rseq} 1 INVITE"));
    assert_eq!(answered(&node.feed(&mut call, stranger), &tx), [481]);
    let mut bare = caller_request("PRACK", 2, &tag, "");
    bare.headers.retain(|h| !h.to_string().starts_with("RAck"));
    let (tx, bare) = on_leg(Side::A, bare);
    assert_eq!(answered(&node.feed(&mut call, bare), &tx), [400]);

    let (tx, prack) = caller_prack(&tag, 2, &format!("{rseq} 1 INVITE"));
    let out = node.feed(&mut call, prack);
    assert_eq!(answered(&out, &tx), [200]);
    let ok = the_response(&out, &a_tx, 200);
    assert_eq!(ok.body, early.body, "the same answer in the 200");
    assert!(
        out.iter()
            .all(|o| !matches!(o, Output::Respond { resp, .. } if resp.status_code.code() == 180)),
        "the waiting 180 is moot once answered"
    );
    // Nothing is resent any more, and the call goes on as any other.
    node.later(Duration::from_secs(2));
    assert!(answered(&node.feed(&mut call, Input::Timer), &a_tx).is_empty());
    let (_, bye) = on_leg(Side::A, caller_request("BYE", 3, &tag, ""));
    let out = node.feed(&mut call, bye);
    assert_eq!(sent(&out, Method::Bye).len(), 1, "the gateway is hung up");
    assert!(settle(&out).is_some());
}

#[test]
fn a_caller_that_never_pracks_is_refused_and_the_gateway_cancelled() {
    let mut node = Node::new();
    let (mut call, a_tx, conf, inv) = dialled_with(&mut node, "Require: 100rel\r\n");
    let out = node.feed(&mut call, gw_response(&inv, 183, true));
    let early = the_response(&out, &a_tx, 183);
    let mut resent = 0;
    let mut out = Vec::new();
    for _ in 0..64 {
        let Some(at) = call.next_wake() else { break };
        node.now = at;
        out = node.feed(&mut call, Input::Timer);
        if answered(&out, &a_tx) == [183] {
            resent += 1;
        } else {
            break;
        }
    }
    assert!(resent >= 5, "resent {resent} times");
    assert_eq!(answered(&out, &a_tx), [500]);
    let refusal = the_response(&out, &a_tx, 500);
    assert!(header_of(&refusal, "Warning")
        .unwrap()
        .contains("never acknowledged"));
    assert_eq!(
        sent(&out, Method::Cancel).len(),
        1,
        "the gateway is cancelled"
    );
    assert!(!early.body.is_empty());
    let (c, end) = settle(&out).expect("the hold is given back");
    assert_eq!(
        (c.as_str(), end.cause.as_str()),
        (conf.as_str(), "no PRACK")
    );
}

#[test]
fn a_caller_that_only_supports_100rel_gets_plain_18x_unless_configured() {
    let mut node = Node::new();
    let (mut call, a_tx, _, inv) = dialled_with(&mut node, "Supported: 100rel\r\n");
    let out = node.feed(&mut call, gw_response(&inv, 183, true));
    assert_eq!(header_of(&the_response(&out, &a_tx, 183), "Require"), None);
    let out = node.feed(&mut call, gw_response(&inv, 200, true));
    assert_eq!(answered(&out, &a_tx), [200], "nothing held");

    let mut node = Node::with_config(&CONFIG.replace(
        "  ring_timeout_s: 60\n",
        "  ring_timeout_s: 60\n  caller_100rel: true\n",
    ));
    let (mut call, a_tx, _, inv) = dialled_with(&mut node, "Supported: 100rel\r\n");
    let out = node.feed(&mut call, gw_response(&inv, 183, true));
    assert_eq!(
        header_of(&the_response(&out, &a_tx, 183), "Require"),
        Some("100rel")
    );
    // A caller that never said it supports 100rel never gets one, whatever the setting.
    let (mut call, a_tx, _, inv) = dialled_with(&mut node, "");
    let out = node.feed(&mut call, gw_response(&inv, 183, true));
    assert_eq!(header_of(&the_response(&out, &a_tx, 183), "Require"), None);
    // Nor does a PRACK from the gateway reach the caller: 481, nothing of ours to name.
    let out = node.feed(&mut call, gw_response(&inv, 200, true));
    assert_eq!(answered(&out, &a_tx), [200]);
    let (tx, prack) = gw_request(&inv, "PRACK", 5, "");
    let out = node.feed(&mut call, prack);
    assert_eq!(answered(&out, &tx), [481]);
    assert!(sent(&out, Method::PRack).is_empty());
}

#[test]
fn a_re_invite_without_sdp_gets_our_offer_and_the_answer_in_its_ack_moves_the_media() {
    let mut node = Node::new();
    let (mut call, _, _, _) = answered_pinless(&mut node, 300, 3600);
    let (tx, reinvite) = from_caller("INVITE", 2, "");
    let out = node.feed(&mut call, reinvite);
    let ok = the_response(&out, &tx, 200);
    let offer = String::from_utf8_lossy(&ok.body).into_owned();
    assert!(
        offer.contains("m=audio 30000 "),
        "our own socket offered: {offer}"
    );
    assert!(
        sent(&out, Method::Invite).is_empty(),
        "the gateway leg is left alone"
    );

    // The answer comes in the ACK: the caller's media moved.
    let moved = OFFER.replace("40000", "40100");
    let ack = caller_request("ACK", 2, "tag3", &moved);
    let out = node.feed(
        &mut call,
        Input::Ack {
            side: Side::A,
            req: ack,
            from: caller(),
        },
    );
    assert!(matches!(out.first(), Some(Output::Acked(t)) if *t == tx));
    assert_eq!(
        remotes(&out),
        [(Side::A, "127.0.0.1:40100".parse().unwrap())]
    );

    // A later refresh with the new SDP is still a refresh; an ACK without an answer, or with
    // one we cannot use, leaves the media where it is.
    let (tx, again) = from_caller("INVITE", 3, "");
    node.feed(&mut call, again);
    let ack = caller_request("ACK", 3, "tag3", "");
    let out = node.feed(
        &mut call,
        Input::Ack {
            side: Side::A,
            req: ack,
            from: caller(),
        },
    );
    assert!(matches!(&out[..], [Output::Acked(t)] if *t == tx));
    let (tx, again) = from_caller("INVITE", 4, "");
    node.feed(&mut call, again);
    let ack = caller_request("ACK", 4, "tag3", "v=0\r\nnonsense");
    let out = node.feed(
        &mut call,
        Input::Ack {
            side: Side::A,
            req: ack,
            from: caller(),
        },
    );
    assert!(matches!(&out[..], [Output::Acked(t)] if *t == tx));
    // An ACK to a 200 that made no offer (its re-INVITE had SDP) carries nothing to take.
    let (tx, same) = from_caller("INVITE", 5, &moved);
    let out = node.feed(&mut call, same);
    assert_eq!(
        answered(&out, &tx),
        [200],
        "the SDP it sent last: a refresh"
    );
    let elsewhere = OFFER.replace("40000", "40200");
    let ack = caller_request("ACK", 5, "tag3", &elsewhere);
    let out = node.feed(
        &mut call,
        Input::Ack {
            side: Side::A,
            req: ack,
            from: caller(),
        },
    );
    assert!(matches!(&out[..], [Output::Acked(t)] if *t == tx));
}

/// A call to a subscriber's DID with two registered contacts, as the engine places it: the
/// call, the carrier's transaction, and the INVITE each contact got (in contact order).
fn ringing_subscriber(node: &mut Node) -> (Call, TxKey, Vec<Request>, Vec<Output>) {
    let (call, a_tx, out) = subscriber_call(node, None);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Store(_))),
        "a call to a subscriber asks the store nothing: {out:#?}"
    );
    let (invites, out) = rung(out);
    (call, a_tx, invites, out)
}

/// The engine's call to alice's DID 5559000 (two contacts), priced by `rate_deck` if any.
fn subscriber_call(node: &mut Node, rate_deck: Option<&str>) -> (Call, TxKey, Vec<Output>) {
    let mut setup = node.setup("5559000", None);
    setup.access.number = "5559000".into();
    setup.access.pinless = false;
    setup.access.subscriber = Some("alice@voip.example.com".into());
    setup.destination = String::new();
    let contact = |port: u16, route: &[&str]| Contact {
        uri: format!("sip:alice@127.0.0.1:{port};ob"),
        peer: Peer {
            proto: crate::routing::Proto::Udp,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            conn: None,
        },
        route: route.iter().map(|r| r.to_string()).collect(),
    };
    setup.ring = Some(Ring {
        aor: "alice@voip.example.com".into(),
        card: "1000".into(),
        // The second registered through an edge proxy (its REGISTER's Path).
        contacts: vec![contact(5080, &[]), contact(5082, &[EDGE_PATH])],
        rate_deck: rate_deck.map(str::to_string),
    });
    let a_tx = setup.tx.clone();
    let (call, out) = node.start(setup);
    (call, a_tx, out)
}

/// The Path the second of alice's contacts registered through.
const EDGE_PATH: &str = "<sip:127.0.0.1:5082;lr;received=sip:192.0.2.7:40312>";

/// The INVITEs a subscriber's two contacts got, checked for what every one must say.
fn rung(out: Vec<Output>) -> (Vec<Request>, Vec<Output>) {
    let invites = sent(&out, Method::Invite);
    let ports: Vec<u16> = invites.iter().map(|(_, _, p)| p.addr.port()).collect();
    assert_eq!(ports, [5080, 5082], "every contact rung at once");
    let invites: Vec<Request> = invites.into_iter().map(|(_, r, _)| r).collect();
    for inv in &invites {
        assert_eq!(inv.header("To"), Some("<sip:alice@voip.example.com>"));
        assert!(inv.uri.to_string().ends_with(";ob"), "{}", inv.uri);
        assert!(
            inv.header("From").unwrap().contains("4085551234"),
            "the subscriber sees who calls"
        );
        assert!(!inv.header("Supported").unwrap_or("").contains("100rel"));
    }
    assert_ne!(invites[0].call_id(), invites[1].call_id());
    assert!(invites[0].header("Route").is_none(), "registered directly");
    assert_eq!(
        invites[1].header_values("Route"),
        [EDGE_PATH],
        "the way back through the proxy it registered by"
    );
    (invites, out)
}

#[test]
fn a_paid_call_to_a_subscriber_holds_the_cards_money_first_and_is_cut_off_when_it_ends() {
    let mut node = Node::new();
    let (mut call, a_tx, out) = subscriber_call(&mut node, Some("incoming"));
    assert!(
        sent(&out, Method::Invite).is_empty(),
        "nobody rings before the money is held"
    );
    let req = phase2(&out);
    assert_eq!(req.auth.account, "1000", "the subscriber's card pays");
    assert!(req.auth.authenticated && req.auth.pin.is_none());
    assert_eq!(req.destination, "5559000", "priced by the number called");
    assert_eq!(req.rate_deck.as_deref(), Some("incoming"));
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &req.conf_id, 30, 30),
    );
    let (invites, _) = rung(out);
    // Answered: the money starts to run, and runs out like any paid call's.
    let out = node.feed(&mut call, gw_response(&invites[1], 200, true));
    the_response(&out, &a_tx, 200);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Store(Ask::MarkConnected { conf_id }) if *conf_id == req.conf_id)),
        "the hold is marked connected: {out:#?}"
    );
    node.later(Duration::from_secs(29));
    assert!(settle(&node.feed(&mut call, Input::Timer)).is_none());
    node.later(Duration::from_secs(1));
    let out = node.feed(&mut call, Input::Timer);
    let (conf, end) = settle(&out).expect("cut off and settled");
    assert_eq!(conf, req.conf_id);
    assert_eq!(
        (end.disconnect_at - end.connect_at.unwrap()).num_seconds(),
        30
    );
    assert_eq!(node.stats.cutoffs, 1);
}

#[test]
fn on_a_paid_call_to_a_subscriber_the_phone_that_answered_hears_the_warning_not_the_caller() {
    let yaml = format!("{CONFIG}subscribers:\n  domains: [voip.example.com]\n  warning_s: 10\n");
    let mut node = Node::with_config(&yaml);
    let (mut call, _, out) = subscriber_call(&mut node, Some("incoming"));
    let req = phase2(&out);
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::Success, &req.conf_id, 30, 30),
    );
    let (invites, _) = rung(out);
    node.feed(&mut call, gw_response(&invites[0], 200, true));
    node.later(Duration::from_secs(19));
    let out = node.feed(&mut call, Input::Timer);
    assert!(played_to(&out, Side::B).is_empty() && played(&out).is_empty());
    node.later(Duration::from_secs(1));
    let out = node.feed(&mut call, Input::Timer);
    assert_eq!(
        played_to(&out, Side::B),
        ["disconnect"],
        "10 s before the end"
    );
    assert!(played(&out).is_empty(), "the carrier's caller pays nothing");
    assert!(sent(&out, Method::Bye).is_empty(), "the call goes on");
    node.later(Duration::from_secs(10));
    let out = node.feed(&mut call, Input::Timer);
    assert_eq!(sent(&out, Method::Bye).len(), 2, "cut off at the end");
}

#[test]
fn a_paid_call_to_a_subscriber_whose_card_cannot_pay_is_480_and_rings_nobody() {
    let mut node = Node::new();
    let (mut call, a_tx, out) = subscriber_call(&mut node, Some("incoming"));
    let req = phase2(&out);
    let out = node.feed(
        &mut call,
        call_answer(ReturnCode::ZeroBalance, &req.conf_id, 0, 0),
    );
    assert!(sent(&out, Method::Invite).is_empty());
    let r = the_response(&out, &a_tx, 480);
    assert_eq!(
        crate::sip::message::phrase(&r),
        "the subscriber cannot take calls now"
    );
    assert!(
        r.header("Warning")
            .is_some_and(|w| w.contains("return code")),
        "the trusted carrier reads why"
    );
    assert!(ended(&out));
}

#[test]
fn a_call_to_a_subscriber_rings_every_contact_and_the_first_to_answer_wins() {
    let mut node = Node::new();
    let (mut call, a_tx, invites, _) = ringing_subscriber(&mut node);
    let out = node.feed(&mut call, gw_response(&invites[0], 180, false));
    assert_eq!(answered(&out, &a_tx), [180], "the carrier hears ringing");
    let out = node.feed(&mut call, gw_response(&invites[1], 180, false));
    assert!(answered(&out, &a_tx).is_empty(), "ringing is said once");
    let out = node.feed(&mut call, gw_response(&invites[1], 200, true));
    let ok = the_response(&out, &a_tx, 200);
    assert!(is_sdp_body(&ok));
    assert_eq!(the_ack(&out).call_id(), invites[1].call_id());
    let cancels = sent(&out, Method::Cancel);
    assert_eq!(cancels.len(), 1, "the other contact stops ringing");
    assert_eq!(cancels[0].1.branch(), invites[0].branch());
    assert_eq!(cancels[0].2.addr.port(), 5080);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Store(_))),
        "a free call marks nothing connected"
    );
    // The cancelled contact answered anyway (its 200 crossed our CANCEL): hung up.
    let out = node.feed(&mut call, gw_response(&invites[0], 200, true));
    let byes = sent(&out, Method::Bye);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].1.call_id(), invites[0].call_id());
    // The free call talks until someone hangs up; nothing is settled.
    node.later(Duration::from_secs(600));
    let out = node.feed(&mut call, Input::Timer);
    assert!(sent(&out, Method::Bye).is_empty(), "no money clock cuts it");
    let (bye_tx, bye) = from_caller("BYE", 2, "");
    let out = node.feed(&mut call, bye);
    assert_eq!(answered(&out, &bye_tx), [200]);
    let byes = sent(&out, Method::Bye);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].2.addr.port(), 5082, "the winner is hung up");
    assert!(settle(&out).is_none());
    assert!(ended(&out));
    assert_eq!(node.stats.answered, 1);
}

fn is_sdp_body(resp: &Response) -> bool {
    super::legs::is_sdp(resp)
}

#[test]
fn a_subscriber_whose_contacts_all_refuse_is_busy_if_any_was_busy() {
    let mut node = Node::new();
    let (mut call, a_tx, invites, _) = ringing_subscriber(&mut node);
    let out = node.feed(&mut call, gw_response(&invites[0], 486, false));
    assert!(answered(&out, &a_tx).is_empty(), "one contact is left");
    let out = node.feed(&mut call, gw_response(&invites[1], 480, false));
    assert_eq!(answered(&out, &a_tx), [486]);
    assert!(ended(&out));
}

#[test]
fn the_carrier_giving_up_stops_every_contact_ringing() {
    let mut node = Node::new();
    let (mut call, a_tx, invites, _) = ringing_subscriber(&mut node);
    node.feed(&mut call, gw_response(&invites[0], 180, false));
    let out = node.feed(
        &mut call,
        Input::Cancel {
            invite: a_tx.clone(),
        },
    );
    let cancels = sent(&out, Method::Cancel);
    assert_eq!(cancels.len(), 1, "a CANCEL to the contact that rang");
    assert_eq!(cancels[0].1.branch(), invites[0].branch());
    let silent = transaction::key(&invites[1]).unwrap();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Abandon(t) if *t == silent)),
        "the silent one's INVITE stops (a CANCEL could overtake it)"
    );
    assert_eq!(answered(&out, &a_tx), [487]);
    assert!(ended(&out));
}

#[test]
fn silent_contacts_are_dropped_and_a_ringing_subscriber_is_given_up_at_the_ring_timeout() {
    let mut node = Node::new();
    let (mut call, a_tx, invites, _) = ringing_subscriber(&mut node);
    node.feed(&mut call, gw_response(&invites[1], 180, false));
    node.later(Duration::from_millis(3000));
    let out = node.feed(&mut call, Input::Timer);
    let silent = transaction::key(&invites[0]).unwrap();
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Abandon(t) if *t == silent)));
    assert!(answered(&out, &a_tx).is_empty(), "the ringing one rings on");
    node.later(Duration::from_secs(57));
    let out = node.feed(&mut call, Input::Timer);
    let cancels = sent(&out, Method::Cancel);
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].1.branch(), invites[1].branch());
    assert_eq!(
        cancels[0].1.header_values("Route"),
        [EDGE_PATH],
        "a CANCEL takes its INVITE's way (RFC 3261 §9.1)"
    );
    assert_eq!(answered(&out, &a_tx), [480]);
}

#[test]
fn a_subscriber_with_no_contact_left_after_a_timeout_is_unavailable() {
    let mut node = Node::new();
    let (mut call, a_tx, invites, _) = ringing_subscriber(&mut node);
    let out = node.feed(
        &mut call,
        Input::Timeout {
            tx: transaction::key(&invites[0]).unwrap(),
        },
    );
    assert!(answered(&out, &a_tx).is_empty());
    let out = node.feed(&mut call, gw_response(&invites[1], 404, false));
    assert_eq!(answered(&out, &a_tx), [480]);
}
