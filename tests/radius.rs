//! The store as a debit-card AAA server, driven by FreeRADIUS' own `radclient` (Debian
//! `freeradius-utils`) and by hand-made packets for what radclient will not send: every return
//! code with Cisco AV pairs in and out, accounting Start/Stop settling the call once however
//! often the Stop comes, Message-Authenticator, unknown clients and malformed packets.

use b2bua::config::RadiusServer;
use chrono::Utc;
use radius::core::avp::AVP;
use radius::core::code::Code;
use radius::core::packet::Packet;
use rating::radius::packet::{cisco_avp, is_authentic_response};
use rating::store::{NewAccount, Redirect, Store, StoreConfig};
use rating::{Money, ReturnCode};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

const SECRET: &str = "testing123";

fn have_radclient() -> bool {
    std::process::Command::new("radclient")
        .arg("-v")
        .output()
        .is_ok()
}

macro_rules! require_radclient {
    () => {
        if !have_radclient() {
            if std::env::var_os("B2BUA_REQUIRE_PEERS").is_some() {
                panic!("radclient is not installed (Debian package freeradius-utils) and B2BUA_REQUIRE_PEERS is set");
            }
            eprintln!("skipped: radclient is not installed (apt-get install freeradius-utils)");
            return;
        }
    };
}

/// A store with the demo data and an AAA server on two free ports.
struct Aaa {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    running: Option<b2bua::radius::Running>,
}

impl Aaa {
    async fn start(require_ma: bool, clients: &[&str]) -> Aaa {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("aaa.db").display());
        let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
        rating::demo::seed(&store, Utc::now()).await.unwrap();
        let cfg = RadiusServer {
            auth: "127.0.0.1:0".parse().unwrap(),
            acct: "127.0.0.1:0".parse().unwrap(),
            require_message_authenticator: require_ma,
            clients: clients
                .iter()
                .map(|c| b2bua::config::RadiusClient {
                    address: c.parse().unwrap(),
                    secret: SECRET.to_string(),
                    cards: rating::radius::aaa::Cards::Tenant("default".into()),
                })
                .collect(),
        };
        let running = b2bua::radius::start(&cfg, store.clone()).await.unwrap();
        // radclient reads a local dictionary directory; an empty one keeps the test away from
        // whatever /etc/freeradius holds.
        std::fs::write(dir.path().join("dictionary"), "").unwrap();
        Aaa {
            dir,
            store,
            running: Some(running),
        }
    }

    fn auth(&self) -> SocketAddr {
        self.running.as_ref().unwrap().auth
    }

    fn acct(&self) -> SocketAddr {
        self.running.as_ref().unwrap().acct
    }

    /// Runs radclient with `attrs` (its `Name = "value"` syntax); returns what it printed.
    async fn radclient(&self, to: SocketAddr, kind: &str, secret: &str, attrs: &str) -> Reply {
        radclient(self.dir.path(), to, kind, secret, attrs).await
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        let report = self.store.ledger_check().await.unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        self.store.close().await;
    }
}

/// What radclient printed: the reply type (`None`: no reply) and the whole text.
#[derive(Debug)]
struct Reply {
    kind: Option<String>,
    text: String,
}

impl Reply {
    /// A Cisco AV pair of the reply, as `h323-return-code=0` (Cisco's `name=value` form).
    fn pair(&self, name: &str) -> Option<String> {
        let prefix = format!("{name} = \"{name}=");
        self.text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(&prefix)
                .map(|v| v.trim_end_matches('"').to_string())
        })
    }

    fn code(&self) -> Option<u8> {
        self.pair("h323-return-code")?.parse().ok()
    }
}

async fn radclient(dict: &Path, to: SocketAddr, kind: &str, secret: &str, attrs: &str) -> Reply {
    let mut child = Command::new("radclient")
        .args([
            "-x",
            "-t",
            "1",
            "-r",
            "1",
            "-D",
            "/usr/share/freeradius",
            "-d",
        ])
        .arg(dict)
        .arg(to.to_string())
        .arg(kind)
        .arg(secret)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("radclient runs");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(attrs.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("radclient finishes")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let kind = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Received ")
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    });
    Reply { kind, text }
}

fn card(account: &str, balance: &str) -> NewAccount {
    NewAccount::new(account, Some("1111"), Money::parse(balance, false).unwrap())
}

fn phase1(account: &str, pin: &str) -> String {
    // Each card its own calling number, so that one card's wrong PINs lock only its number.
    // Message-Authenticator in every Access-Request (radclient computes it), as the AAA server
    // requires by default (BlastRADIUS).
    format!("User-Name = \"{account}\", User-Password = \"{pin}\", Calling-Station-Id = \"1408{account}\", Called-Station-Id = \"\", Message-Authenticator = 0x00")
}

fn phase2(account: &str, pin: &str, dest: &str, conf: &str) -> String {
    format!(
        "User-Name = \"{account}\", User-Password = \"{pin}\", Calling-Station-Id = \"1408{account}\", \
Called-Station-Id = \"{dest}\", h323-conf-id = \"h323-conf-id={conf}\", \
Cisco-AVPair = \"h323-incoming-conf-id=AAAA0000 00000000 00000000 00000001\", \
Message-Authenticator = 0x00"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_two_phases_through_radclient() {
    require_radclient!();
    let aaa = Aaa::start(true, &["127.0.0.1"]).await;
    let r = aaa
        .radclient(aaa.auth(), "auth", SECRET, &phase1("000070", "1234"))
        .await;
    assert_eq!(r.kind.as_deref(), Some("Access-Accept"), "{}", r.text);
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.pair("h323-credit-amount").as_deref(), Some("32.91"));
    assert_eq!(r.pair("h323-currency").as_deref(), Some("USD"));
    assert_eq!(r.pair("h323-preferred-lang").as_deref(), Some("en"));
    assert_eq!(r.pair("h323-billing-model").as_deref(), Some("1"));
    assert!(r.text.contains("Message-Authenticator"), "{}", r.text);
    // Phase 2: the whole credit time is held, since the gateway enforces it itself.
    let conf = "3C5AEAB9 95C80008 00000000 586D5528";
    let r = aaa
        .radclient(
            aaa.auth(),
            "auth",
            SECRET,
            &phase2("000070", "1234", "5555233", conf),
        )
        .await;
    assert_eq!(r.code(), Some(0), "{}", r.text);
    assert_eq!(r.pair("h323-credit-time").as_deref(), Some("20900"));
    let held = aaa.store.reservation(conf).await.unwrap().unwrap();
    assert_eq!(held.granted_seconds, 20900);
    // The call: Start and Stop for both legs, the Stop sent three times.
    let acct = |status: &str, origin: &str| {
        format!(
            "Acct-Status-Type = {status}, User-Name = \"000070\", Called-Station-Id = \"5555233\", \
Acct-Session-Id = \"1\", h323-conf-id = \"h323-conf-id={conf}\", h323-call-origin = \"h323-call-origin={origin}\", \
h323-setup-time = \"h323-setup-time=10:00:00.000 UTC Sat Nov 21 2026\", \
h323-connect-time = \"h323-connect-time=10:00:05.000 UTC Sat Nov 21 2026\", \
h323-disconnect-time = \"h323-disconnect-time=10:01:05.500 UTC Sat Nov 21 2026\", \
h323-disconnect-cause = \"h323-disconnect-cause=10\", h323-voice-quality = \"h323-voice-quality=0\""
        )
    };
    for (status, origin) in [("Start", "answer"), ("Start", "originate")] {
        let r = aaa
            .radclient(aaa.acct(), "acct", SECRET, &acct(status, origin))
            .await;
        assert_eq!(r.kind.as_deref(), Some("Accounting-Response"), "{}", r.text);
    }
    for _ in 0..3 {
        let r = aaa
            .radclient(aaa.acct(), "acct", SECRET, &acct("Stop", "originate"))
            .await;
        assert_eq!(r.kind.as_deref(), Some("Accounting-Response"), "{}", r.text);
    }
    let r = aaa
        .radclient(aaa.acct(), "acct", SECRET, &acct("Stop", "answer"))
        .await;
    assert_eq!(r.kind.as_deref(), Some("Accounting-Response"));
    // 60.5 s of talk rounds up to 61 s; at 0.094478 a minute that is 0.0960526…, 0.096053.
    let c = aaa.store.account("000070").await.unwrap();
    assert_eq!(c.reserved, Money::ZERO);
    let recs = aaa
        .store
        .call_records(&rating::store::RecordFilter {
            account: Some("000070".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recs.len(), 1, "billed once: {recs:?}");
    assert_eq!(recs[0].billed_seconds, 61);
    assert_eq!(recs[0].disconnect_cause, "q850:10");
    assert_eq!(
        c.balance.checked_add(recs[0].cost),
        Money::parse("32.91", false).ok()
    );
    let kept = aaa.store.accounting_records(conf).await.unwrap();
    let outcomes: Vec<(&str, &str, &str)> = kept
        .iter()
        .map(|k| (k.leg.as_str(), k.status.as_str(), k.outcome.as_str()))
        .collect();
    assert_eq!(kept.len(), 4, "{outcomes:?}");
    assert!(
        outcomes.contains(&("originate", "stop", "settled 61 s, 0.096053")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("originate", "start", "connected")),
        "{outcomes:?}"
    );
    aaa.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_return_code_through_radclient() {
    require_radclient!();
    let aaa = Aaa::start(true, &["127.0.0.1"]).await;
    let s = &aaa.store;
    let now = Utc::now();
    s.create_account(&card("300004", "0"), now).await.unwrap();
    let mut expired = card("300005", "5");
    expired.expires_at = Some(now - chrono::Duration::days(3));
    s.create_account(&expired, now).await.unwrap();
    s.create_account(&card("300007", "5"), now).await.unwrap();
    s.set_blocked("300007", true).await.unwrap();
    s.create_account(&card("300012", "0.05"), now)
        .await
        .unwrap();
    let mut tollfree = card("300013", "5");
    tollfree.tollfree_only = true;
    s.create_account(&tollfree, now).await.unwrap();
    s.create_account(&card("300003", "5"), now).await.unwrap();
    s.create_account(&card("300010", "5"), now).await.unwrap();
    s.create_account(&card("300052", "0"), now).await.unwrap();
    s.set_redirect(
        "300052",
        Some(Redirect {
            code: ReturnCode::RedirectCustomerService,
            number: "18005550100".into(),
        }),
    )
    .await
    .unwrap();
    // 3: the card's one call is already running.
    let r = aaa
        .radclient(
            aaa.auth(),
            "auth",
            SECRET,
            &phase2("300003", "1111", "5555233", "busy-1"),
        )
        .await;
    assert_eq!(r.code(), Some(0), "{}", r.text);
    // 10: five wrong PINs lock the card.
    for _ in 0..5 {
        aaa.radclient(aaa.auth(), "auth", SECRET, &phase1("300010", "0000"))
            .await;
    }
    let cases: Vec<(String, &str, u8)> = vec![
        (phase1("999999", "1111"), "Access-Reject", 1),
        (phase1("000070", "9999"), "Access-Reject", 2),
        (
            phase2("300003", "1111", "5555233", "busy-2"),
            "Access-Reject",
            3,
        ),
        (phase1("300004", "1111"), "Access-Reject", 4),
        (phase1("300005", "1111"), "Access-Reject", 5),
        (phase1("300007", "1111"), "Access-Reject", 7),
        (
            phase2("000070", "1234", "19005551234", "c-9"),
            "Access-Reject",
            9,
        ),
        (phase1("300010", "1111"), "Access-Reject", 10),
        (phase1("0000x7", "1234"), "Access-Reject", 11),
        (
            phase2("300012", "1111", "5555234", "c-12"),
            "Access-Reject",
            12,
        ),
        (
            phase2("300013", "1111", "5555233", "c-13"),
            "Access-Reject",
            13,
        ),
        (phase1("12", "1234"), "Access-Reject", 14),
        (phase1("300052", "1111"), "Access-Accept", 52),
    ];
    for (attrs, kind, code) in &cases {
        let r = aaa.radclient(aaa.auth(), "auth", SECRET, attrs).await;
        assert_eq!(r.kind.as_deref(), Some(*kind), "code {code}: {}", r.text);
        assert_eq!(r.code(), Some(*code), "{}", r.text);
        if *code == 52 {
            assert_eq!(
                r.pair("h323-redirect-number").as_deref(),
                Some("18005550100")
            );
        }
    }
    // 8: the store is gone; the server still answers, failing closed.
    aaa.store.close().await;
    let r = aaa
        .radclient(aaa.auth(), "auth", SECRET, &phase1("000070", "1234"))
        .await;
    assert_eq!(r.code(), Some(8), "{}", r.text);
    if let Some(run) = aaa.running {
        run.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_authenticator_unknown_clients_and_wrong_secrets() {
    require_radclient!();
    // Message-Authenticator required: radclient adds one when asked to.
    let aaa = Aaa::start(true, &["127.0.0.1"]).await;
    let bare = aaa
        .radclient(
            aaa.auth(),
            "auth",
            SECRET,
            &phase1("000070", "1234").replace(", Message-Authenticator = 0x00", ""),
        )
        .await;
    let with_ma = aaa
        .radclient(aaa.auth(), "auth", SECRET, &phase1("000070", "1234"))
        .await;
    // radclient 3.2.1 may add Message-Authenticator on its own; either way a request that has
    // one is answered, and (below, by hand) one without it is not.
    assert_eq!(with_ma.code(), Some(0), "{}", with_ma.text);
    if !bare.text.contains("Message-Authenticator") {
        assert_eq!(bare.kind, None, "{}", bare.text);
    }
    // By hand, certainly without one: dropped.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut p = Packet::new_with_identifier(Code::AccessRequest, SECRET.as_bytes(), 1);
    p.add(AVP::from_string(1, "000070"));
    let auth = p.get_authenticator().clone();
    p.add(AVP::from_user_password(2, b"1234", SECRET.as_bytes(), &auth).unwrap());
    assert_eq!(
        exchange(&sock, aaa.auth(), &p.encode().unwrap()).await,
        None,
        "no Message-Authenticator, no answer"
    );
    let wrong = aaa
        .radclient(
            aaa.auth(),
            "auth",
            "not-the-secret",
            &phase1("000070", "1234"),
        )
        .await;
    assert_eq!(
        wrong.kind, None,
        "a wrong secret gets no answer: {}",
        wrong.text
    );
    let acct = aaa
        .radclient(
            aaa.acct(),
            "acct",
            "not-the-secret",
            "Acct-Status-Type = Start, User-Name = \"000070\"",
        )
        .await;
    assert_eq!(acct.kind, None, "{}", acct.text);
    aaa.stop().await;
    // A client that is not configured is ignored.
    let aaa = Aaa::start(true, &["127.0.0.2"]).await;
    let r = aaa
        .radclient(aaa.auth(), "auth", SECRET, &phase1("000070", "1234"))
        .await;
    assert_eq!(r.kind, None, "{}", r.text);
    aaa.stop().await;
}

/// Puts a valid Message-Authenticator into a packet whose first attribute is one.
fn sign(mut b: Vec<u8>) -> Vec<u8> {
    use hmac::Mac;
    b[22..38].fill(0);
    let mut mac = hmac::Hmac::<md5::Md5>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&b);
    let v = mac.finalize().into_bytes();
    b[22..38].copy_from_slice(&v);
    b
}

/// A hand-made Access-Request with a Message-Authenticator first (radclient picks a fresh
/// identifier per run, so retransmissions and malformed packets are made here).
fn access_request(id: u8, attrs: Vec<AVP>, pin: Option<&str>) -> Vec<u8> {
    let mut p = Packet::new_with_identifier(Code::AccessRequest, SECRET.as_bytes(), id);
    p.add(AVP::from_bytes(80, &[0u8; 16]));
    p.extend(attrs);
    if let Some(pin) = pin {
        let auth = p.get_authenticator().clone();
        p.add(AVP::from_user_password(2, pin.as_bytes(), SECRET.as_bytes(), &auth).unwrap());
    }
    sign(p.encode().unwrap())
}

async fn exchange(sock: &tokio::net::UdpSocket, to: SocketAddr, b: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(b, to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(700), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmission_is_answered_once_and_junk_is_dropped() {
    let aaa = Aaa::start(true, &["127.0.0.1"]).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let attrs = || {
        vec![
            AVP::from_string(1, "000070"),
            AVP::from_string(30, "5555233"),
            cisco_avp(24, "RETX0001 00000000 00000000 00000001"),
        ]
    };
    let req = access_request(7, attrs(), Some("1234"));
    let first = exchange(&sock, aaa.auth(), &req).await.expect("answered");
    let again = exchange(&sock, aaa.auth(), &req)
        .await
        .expect("answered again");
    assert_eq!(first, again, "the same answer, from the cache");
    assert!(is_authentic_response(&first, &req, SECRET.as_bytes()));
    assert_eq!(first[0], 2, "Access-Accept");
    let c = aaa.store.account("000070").await.unwrap();
    assert_eq!(c.active_calls, 1, "one reservation for two copies");
    // Junk: every one dropped (no answer), and the server still answers afterwards.
    let mut lying = req.clone();
    lying[21] = 250;
    let mut long = req.clone();
    long[2..4].copy_from_slice(&3000u16.to_be_bytes());
    let crlf = access_request(9, vec![AVP::from_string(1, "0000\r\n70")], Some("1234"));
    let nul = access_request(10, vec![AVP::from_string(30, "55\u{0}5233")], Some("1234"));
    let bad_vsa = access_request(
        11,
        vec![AVP::from_bytes(26, &[0, 0, 0, 9, 24, 99, b'x'])],
        Some("1234"),
    );
    for (what, junk) in [
        ("empty", vec![]),
        ("truncated", req[..15].to_vec()),
        ("attribute length lies", lying),
        ("header length lies", long),
        ("CR/LF in User-Name", crlf),
        ("NUL in Called-Station-Id", nul),
        ("vendor length lies", bad_vsa),
        ("accounting on the auth port", {
            let mut a = req.clone();
            a[0] = 4;
            a
        }),
    ] {
        assert_eq!(exchange(&sock, aaa.auth(), &junk).await, None, "{what}");
    }
    let fresh = access_request(8, attrs(), Some("1234"));
    let r = exchange(&sock, aaa.auth(), &fresh)
        .await
        .expect("still serving");
    assert_eq!(r[0], 2);
    // The same conference id again (a new request, same call): the same reservation.
    assert_eq!(aaa.store.account("000070").await.unwrap().active_calls, 1);
    aaa.store
        .settle(
            "RETX0001 00000000 00000000 00000001",
            &rating::store::CallEnd {
                connect_at: None,
                disconnect_at: Utc::now(),
                cause: "test".into(),
                voice_quality: None,
                gateway: String::new(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    aaa.stop().await;
}

/// A Stop as a gateway other than radclient's would send it, from `from`.
async fn stop_from(from: &str, to: SocketAddr, conf: &str, session_time: u32) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
    let mut p = Packet::new_with_identifier(Code::AccountingRequest, SECRET.as_bytes(), 9);
    p.add(AVP::from_u32(40, 2));
    p.add(AVP::from_string(1, "000070"));
    p.add(AVP::from_u32(46, session_time));
    p.add(cisco_avp(24, conf));
    p.add(cisco_avp(26, "originate"));
    exchange(&sock, to, &p.encode().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_bills_only_its_own_gateways_call_by_session_time_and_never_from_the_future() {
    require_radclient!();
    let aaa = Aaa::start(true, &["127.0.0.1", "127.0.0.2"]).await;
    let conf = "3C5AEAB9 95C80008 00000000 00000001";
    let r = aaa
        .radclient(
            aaa.auth(),
            "auth",
            SECRET,
            &phase2("000070", "1234", "5555233", conf),
        )
        .await;
    assert_eq!(r.code(), Some(0), "{}", r.text);
    // Another gateway's Stop for that call is kept as a record but bills nothing and ends
    // nothing: the reservation is radclient's gateway's.
    assert!(stop_from("127.0.0.2", aaa.acct(), conf, 3000)
        .await
        .is_some());
    assert!(aaa.store.reservation(conf).await.unwrap().is_some());
    // Its own gateway's Stop without h323-connect-time: Acct-Session-Time is the talk time.
    assert!(stop_from("127.0.0.1", aaa.acct(), conf, 30).await.is_some());
    assert!(aaa.store.reservation(conf).await.unwrap().is_none());
    let recs = aaa
        .store
        .call_records(&rating::store::RecordFilter {
            account: Some("000070".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].billed_seconds, 30, "{recs:?}");
    // A second call whose Stop puts the end a day in the future: billed up to now only.
    let conf2 = "3C5AEAB9 95C80008 00000000 00000002";
    let r = aaa
        .radclient(
            aaa.auth(),
            "auth",
            SECRET,
            &phase2("000070", "1234", "5555233", conf2),
        )
        .await;
    assert_eq!(r.code(), Some(0), "{}", r.text);
    let h323 = |t: chrono::DateTime<Utc>| t.format("%H:%M:%S%.3f UTC %a %b %d %Y").to_string();
    let now = Utc::now();
    let stop = format!(
        "Acct-Status-Type = Stop, User-Name = \"000070\", h323-conf-id = \"h323-conf-id={conf2}\", \
h323-call-origin = \"h323-call-origin=originate\", \
h323-setup-time = \"h323-setup-time={}\", h323-connect-time = \"h323-connect-time={}\", \
h323-disconnect-time = \"h323-disconnect-time={}\"",
        h323(now - chrono::Duration::seconds(12)),
        h323(now - chrono::Duration::seconds(10)),
        h323(now + chrono::Duration::days(1))
    );
    let r = aaa.radclient(aaa.acct(), "acct", SECRET, &stop).await;
    assert_eq!(r.kind.as_deref(), Some("Accounting-Response"), "{}", r.text);
    let recs = aaa
        .store
        .call_records(&rating::store::RecordFilter {
            session_id: None,
            account: Some("000070".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let second = recs.iter().find(|r| r.conf_id == conf2).unwrap();
    assert!(
        (10..=20).contains(&second.billed_seconds),
        "about ten seconds, not a day: {second:?}"
    );
    aaa.stop().await;
}
