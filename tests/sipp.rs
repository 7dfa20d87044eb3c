//! The B2BUA against SIPp, as callers and as gateways, on 127.0.0.1.
//!
//! Each test starts the engine in-process on a fresh SQLite file with the demo data, starts a
//! SIPp gateway (UAS) and a SIPp caller (UAC) as real processes with scenarios from
//! `tests/sipp/`, and then checks both SIPp exit codes, what the gateway received, and the
//! money in the store. Without SIPp installed the tests say so and pass, unless
//! `B2BUA_REQUIRE_PEERS=1` (set by `.ci/run`), where a missing SIPp fails them.

#[path = "support/alice.rs"]
mod alice;
mod baresip;
#[path = "support/certs.rs"]
mod certs;
mod freeradius;
mod kamailio;
mod ua;
use alice::{next_answer, Alice};

use b2bua::config::Config;
use b2bua::engine::{self, Running};
use chrono::Utc;
use freeradius::{attr, FreeRadius};
use rating::store::{NewAccount, RecordFilter, Store, StoreConfig};
use rating::Money;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp")
}

fn have_sipp() -> bool {
    std::process::Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

macro_rules! require_sipp {
    () => {
        if !have_sipp() {
            if std::env::var_os("B2BUA_REQUIRE_PEERS").is_some() {
                panic!("SIPp is not installed (Debian package sip-tester) and B2BUA_REQUIRE_PEERS is set");
            }
            eprintln!("skipped: SIPp is not installed (apt-get install sip-tester)");
            return;
        }
    };
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A media port for SIPp (`-mp`): it binds that port and the three after it (RTCP, video
/// RTP and RTCP), so all four must be free, or a SIPp fails to start beside the others.
fn free_media_port() -> u16 {
    loop {
        let p = free_port();
        let free = p < 65530 && (1..4).all(|i| UdpSocket::bind(("127.0.0.1", p + i)).is_ok());
        if free {
            return p;
        }
    }
}

/// A running B2BUA with its store, in a temporary directory that also holds the SIPp logs.
struct Rig {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    running: Option<Running>,
    /// The RADIUS accounting client, when the configuration has one.
    acct: Option<b2bua::radius_acct::Running>,
    udp: SocketAddr,
    tcp: SocketAddr,
    /// The address SIPp binds: 127.0.0.1, or ::1 for the IPv6 test.
    ip: &'static str,
}

/// A configuration around the demo's access numbers with the given gateways (name, port) and
/// routes (YAML list items), listening on free ports.
fn yaml(gateways: &[(&str, u16)], routes: &str, trusted: &str) -> String {
    let gws: String = gateways
        .iter()
        .map(|(n, p)| format!("  - {{name: {n}, address: \"127.0.0.1:{p}\", channels: 10}}\n"))
        .collect();
    format!(
        "sip:\n  listen: [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\n  t1_ms: 200\n\
trusted_peers: [{trusted}]\n\
access_numbers:\n  - {{number: \"5551201\", pinless: true}}\n  - {{number: \"5551200\", flow: debitcard}}\n\
calls: {{setup_timeout_ms: 700, ring_timeout_s: 20}}\n\
gateways:\n{gws}routes:\n{routes}"
    )
}

/// The configuration with its first gateway asking for digest credentials `auth`.
fn with_auth(yaml: &str, auth: &str) -> String {
    yaml.replacen("channels: 10}", &format!("channels: 10, auth: {auth}}}"), 1)
}

fn one_route(gw: &str) -> String {
    format!("  - {{name: all, patterns: [T], gateways: [{{gateway: {gw}}}]}}\n")
}

impl Rig {
    async fn start(yaml: &str) -> Rig {
        Rig::start_with(yaml, StoreConfig::default()).await
    }

    async fn start_with(yaml: &str, store_cfg: StoreConfig) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
        let store = Arc::new(Store::open(&url, store_cfg).await.unwrap());
        rating::demo::seed(&store, Utc::now()).await.unwrap();
        let cfg = Config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        let acct = match &cfg.radius_accounting {
            Some(a) => Some(b2bua::radius_acct::start(a, store.clone()).await.unwrap()),
            None => None,
        };
        let running = engine::start(cfg, store.clone()).await.unwrap();
        let udp = running.addr(b2bua::routing::Proto::Udp).unwrap();
        let tcp = running.addr(b2bua::routing::Proto::Tcp).unwrap();
        let ip = if udp.is_ipv6() { "::1" } else { "127.0.0.1" };
        Rig {
            dir,
            store,
            running: Some(running),
            acct,
            udp,
            tcp,
            ip,
        }
    }

    /// Starts SIPp with a scenario file; its messages go to `<name>.msg` in the rig's directory.
    fn sipp(&self, name: &str, scenario: &Path, args: &[&str]) -> Child {
        let msg = self.dir.path().join(format!("{name}.msg"));
        let err = self.dir.path().join(format!("{name}.err"));
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf").arg(scenario);
        cmd.args([
            "-i",
            self.ip,
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
        ]);
        cmd.args(["-mp", &free_media_port().to_string()]);
        cmd.args(["-trace_msg", "-message_file"]).arg(&msg);
        cmd.args(["-trace_err", "-error_file"]).arg(&err);
        cmd.args(args);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd.current_dir(self.dir.path());
        cmd.spawn().expect("sipp starts")
    }

    /// A gateway on `port` playing `scenario`.
    async fn gateway(&self, name: &str, scenario: &str, port: u16, args: &[&str]) -> Child {
        let p = port.to_string();
        let mut all = vec!["-p", p.as_str()];
        all.extend_from_slice(args);
        let child = self.sipp(name, &scenarios().join(scenario), &all);
        tokio::time::sleep(Duration::from_millis(300)).await;
        child
    }

    /// A caller from `ani` dialling `user`, over UDP or TCP.
    fn caller(
        &self,
        name: &str,
        scenario: &Path,
        ani: &str,
        user: &str,
        tcp: bool,
        args: &[&str],
    ) -> Child {
        let port = free_port().to_string();
        let target = if tcp { self.tcp } else { self.udp }.to_string();
        let mut all = vec!["-p", port.as_str(), "-key", "ani", ani, "-s", user];
        if tcp {
            all.extend_from_slice(&["-t", "t1"]);
        }
        all.extend_from_slice(args);
        all.push(&target);
        self.sipp(name, scenario, &all)
    }

    fn log(&self, name: &str) -> String {
        let m = std::fs::read_to_string(self.dir.path().join(format!("{name}.msg")))
            .unwrap_or_default();
        let e = std::fs::read_to_string(self.dir.path().join(format!("{name}.err")))
            .unwrap_or_default();
        format!("--- {name} messages ---\n{m}\n--- {name} errors ---\n{e}")
    }

    /// Waits for a SIPp process and returns its exit code (0 = every call succeeded).
    async fn wait(&self, name: &str, child: &mut Child) -> i32 {
        let status = tokio::time::timeout(Duration::from_secs(90), child.wait()).await;
        let code = match status {
            Ok(Ok(s)) => s.code().unwrap_or(-1),
            _ => {
                let _ = child.kill().await;
                -2
            }
        };
        if code != 0 {
            eprintln!("{name} exited {code}\n{}", self.log(name));
            // The other side's view usually says why.
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let other = entry.file_name().to_string_lossy().into_owned();
                if let Some(n) = other.strip_suffix(".msg").filter(|n| *n != name) {
                    eprintln!("{}", self.log(n));
                }
            }
        }
        code
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        if let Some(a) = self.acct.take() {
            a.stop().await;
        }
        let report = self.store.ledger_check().await.unwrap();
        assert!(
            report.problems.is_empty(),
            "ledger check: {:?}",
            report.problems
        );
        self.store.close().await;
    }

    async fn pinless(&self, account: &str, balance: &str) {
        let mut n = NewAccount::new(account, None, Money::parse(balance, true).unwrap());
        n.pinless = true;
        self.store.create_account(&n, Utc::now()).await.unwrap();
    }

    /// A card's records once there are any (they are written just after the call ends), or
    /// none after five seconds.
    async fn first_records(&self, account: &str) -> Vec<rating::store::CallRecord> {
        for _ in 0..50 {
            let recs = self.records(account).await;
            if !recs.is_empty() {
                return recs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Vec::new()
    }

    /// The subscriber alice@voip.example.com (password `correcthorse1`) on the demo card.
    async fn alice(&self, caller_id: Option<&str>) -> rating::store::SipAccount {
        let n = rating::store::NewSipAccount {
            username: "alice".into(),
            domain: "voip.example.com".into(),
            password: "correcthorse1".into(),
            card: "000070".into(),
            caller_id: caller_id.map(str::to_string),
            max_calls: 1,
        };
        self.store
            .create_sip_account(&n, "test", Utc::now())
            .await
            .unwrap()
    }

    async fn records(&self, account: &str) -> Vec<rating::store::CallRecord> {
        self.store
            .call_records(&RecordFilter {
                account: Some(account.into()),
                ..Default::default()
            })
            .await
            .unwrap()
    }
}

/// One caller against one gateway, each a SIPp scenario that must run to its end.
struct Scene<'a> {
    uas: &'a str,
    uas_args: &'a [&'a str],
    uac: &'a Path,
    ani: &'a str,
    user: &'a str,
    tcp: bool,
    uac_args: &'a [&'a str],
    gateway: u16,
}

impl Rig {
    /// Plays a scene: the gateway first, then the caller; both must exit 0.
    async fn play(&self, s: Scene<'_>) {
        let mut uas = self.gateway("uas", s.uas, s.gateway, s.uas_args).await;
        let mut uac = self.caller("uac", s.uac, s.ani, s.user, s.tcp, s.uac_args);
        assert_eq!(self.wait("uac", &mut uac).await, 0, "the caller's scenario");
        assert_eq!(
            self.wait("uas", &mut uas).await,
            0,
            "the gateway's scenario"
        );
    }
}

/// A gateway scenario for a gateway behind a proxy: its provisional and final responses
/// echo the Record-Route, as any UA's do, so the proxy stays in the dialog.
fn behind_proxy(dir: &Path, scenario: &str) -> PathBuf {
    let text = std::fs::read_to_string(scenarios().join(scenario)).unwrap();
    let path = dir.join(format!("behind_proxy_{scenario}"));
    let marked = text.replacen("[last_Via:]", "[last_Via:]\n      [last_Record-Route:]", 2);
    std::fs::write(&path, marked).unwrap();
    path
}

/// A caller scenario expecting the final response `code`.
fn refused(dir: &Path, code: u16) -> PathBuf {
    let text = std::fs::read_to_string(scenarios().join("uac_refused.xml")).unwrap();
    let path = dir.join(format!("uac_refused_{code}.xml"));
    std::fs::write(&path, text.replace("EXPECTED", &code.to_string())).unwrap();
    path
}

/// The gateway's view of the first INVITE it received.
fn first_invite(log: &str) -> String {
    let start = log.find("INVITE sip:").expect("the gateway got an INVITE");
    let rest = &log[start..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    rest[..end].to_string()
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_call_is_bridged_billed_and_its_legs_kept_apart() {
    require_sipp!();
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    let before = rig.store.account("4085551234").await.unwrap().balance;
    pinless_call(&rig, gw, "1500").await;

    let invite = first_invite(&rig.log("uas"));
    let uac_log = rig.log("uac");
    let caller_invite = first_invite(&uac_log);
    assert!(
        invite.starts_with(&format!("INVITE sip:5555233@127.0.0.1:{gw} SIP/2.0")),
        "{invite}"
    );
    assert_ne!(
        header(&invite, "Call-ID"),
        header(&caller_invite, "Call-ID"),
        "each leg its own Call-ID"
    );
    let caller_via = header(&caller_invite, "Via")[0].to_string();
    let caller_port = caller_via
        .split(':')
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for h in ["Via", "Contact", "Record-Route"] {
        for v in header(&invite, h) {
            assert!(
                !v.contains(&format!(":{caller_port}")),
                "the caller's {h} leaked to the gateway: {v}"
            );
        }
    }
    assert!(
        header(&invite, "From")[0].contains("sip:4085551234@"),
        "caller ID in From: {invite}"
    );
    assert!(
        invite.contains("m=audio"),
        "the caller's offer reached the gateway"
    );

    // Give the settlement a moment to be written.
    let mut recs = Vec::new();
    for _ in 0..50 {
        recs = rig.records("4085551234").await;
        if recs.first().is_some_and(|r| r.disconnect_at.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = &recs[0];
    assert_eq!(r.destination, "5555233");
    assert_eq!(r.access_number, "5551201");
    assert!(
        r.billed_seconds >= 1 && r.billed_seconds <= 4,
        "billed {}",
        r.billed_seconds
    );
    let after = rig.store.account("4085551234").await.unwrap();
    assert_eq!(Some(after.balance), before.checked_sub(r.cost));
    assert_eq!(after.reserved, Money::ZERO);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tcp_presents_the_caller_in_p_asserted_identity() {
    require_sipp!();
    let gw = free_port();
    let routes = "  - {name: all, patterns: [T], caller_id: pai, gateways: [{gateway: gw, strip: 3, prefix: \"0044\"}]}\n";
    let rig = Rig::start(&yaml(&[("gw", gw)], routes, "127.0.0.1")).await;
    rig.play(Scene {
        uas: "uas_answer.xml",
        uas_args: &[],
        uac: &scenarios().join("uac_pinless.xml"),
        ani: "4085551234",
        user: "55512015555233",
        tcp: true,
        uac_args: &["-d", "200"],
        gateway: gw,
    })
    .await;
    let invite = first_invite(&rig.log("uas"));
    assert!(
        invite.starts_with(&format!("INVITE sip:00445233@127.0.0.1:{gw} SIP/2.0")),
        "strip 3, add 0044: {invite}"
    );
    assert!(
        header(&invite, "P-Asserted-Identity")[0].contains("sip:4085551234@"),
        "{invite}"
    );
    assert!(header(&invite, "From")[0].contains("anonymous"), "{invite}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cancelling_while_it_rings_cancels_the_gateway_and_pays_nothing() {
    require_sipp!();
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    let before = rig.store.account("4085551234").await.unwrap();
    rig.play(Scene {
        uas: "uas_ring.xml",
        uas_args: &[],
        uac: &scenarios().join("uac_cancel.xml"),
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &[],
        gateway: gw,
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rig.store.account("4085551234").await.unwrap();
    assert_eq!(after.balance, before.balance);
    assert_eq!(after.reserved, Money::ZERO, "the hold is released");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_destination_gives_the_caller_486() {
    require_sipp!();
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    rig.play(Scene {
        uas: "uas_busy.xml",
        uas_args: &[],
        uac: &refused(rig.dir.path(), 486),
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &[],
        gateway: gw,
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_gateway_and_a_503_fail_over_to_a_live_one() {
    require_sipp!();
    let (dead, refusing, live) = (free_port(), free_port(), free_port());
    let routes = "  - {name: all, patterns: [T], gateways: [{gateway: dead}, {gateway: refusing}, {gateway: live}]}\n";
    let rig = Rig::start(&yaml(
        &[("dead", dead), ("refusing", refusing), ("live", live)],
        routes,
        "127.0.0.1",
    ))
    .await;
    let mut busy = rig.gateway("refusing", "uas_503.xml", refusing, &[]).await;
    let mut uas = rig.gateway("uas", "uas_answer.xml", live, &[]).await;
    let t0 = Instant::now();
    let mut uac = rig.caller(
        "uac",
        &scenarios().join("uac_pinless.xml"),
        "4085551234",
        "55512015555233",
        false,
        &["-d", "200"],
    );
    assert_eq!(rig.wait("uac", &mut uac).await, 0);
    assert_eq!(rig.wait("refusing", &mut busy).await, 0);
    assert_eq!(rig.wait("uas", &mut uas).await, 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "the dead gateway was given its setup timeout"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_money_running_out_cuts_both_legs_off_and_bills_the_granted_time() {
    require_sipp!();
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    // 0.01 USD at 0.094478 a minute, per second: 6 seconds (6.35 would cost more than 0.01).
    rig.pinless("4085550001", "0.01").await;
    let quote = rig
        .store
        .quote("4085550001", "5555233", Utc::now())
        .await
        .unwrap();
    assert_eq!(quote.credit_time, 6);
    let t0 = Instant::now();
    rig.play(Scene {
        uas: "uas_answer.xml",
        uas_args: &[],
        uac: &scenarios().join("uac_wait_bye.xml"),
        ani: "4085550001",
        user: "55512015555233",
        tcp: false,
        uac_args: &[],
        gateway: gw,
    })
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(10),
        "cut after {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rec = &rig.records("4085550001").await[0];
    assert_eq!(rec.billed_seconds, 6);
    assert_eq!(rec.disconnect_cause, "cutoff");
    assert_eq!(rec.cost, Money::parse("0.009448", true).unwrap());
    let card = rig.store.account("4085550001").await.unwrap();
    assert_eq!(card.balance, Money::parse("0.000552", true).unwrap());
    assert_eq!(card.reserved, Money::ZERO);
    let ledger = rig.store.ledger("4085550001", 100).await.unwrap();
    assert!(
        ledger
            .iter()
            .any(|e| e.kind == "call" && e.amount == Money::parse("-0.009448", true).unwrap()),
        "{ledger:?}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_from_the_gateway_reaches_the_caller() {
    require_sipp!();
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    rig.play(Scene {
        uas: "uas_bye.xml",
        uas_args: &["-d", "500"],
        uac: &scenarios().join("uac_wait_bye.xml"),
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &[],
        gateway: gw,
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.records("4085551234").await[0].disconnect_cause,
        "called party hung up"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_unhold_are_relayed_to_the_gateway() {
    require_sipp!();
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    rig.play(Scene {
        uas: "uas_hold.xml",
        uas_args: &[],
        uac: &scenarios().join("uac_hold.xml"),
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &[],
        gateway: gw,
    })
    .await;
    rig.stop().await;
}

/// A carrier that challenges the hold re-INVITE (not the call's INVITE) gets it again with
/// our credentials inside the same dialog; the caller's hold and unhold go through as if
/// nothing happened, and the call is billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_challenging_the_hold_re_invite_gets_our_credentials() {
    require_sipp!();
    let gw = free_port();
    let yaml = with_auth(
        &yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1"),
        "{username: acme, password: s3cret, realm: carrier.example}",
    );
    let rig = Rig::start(&yaml).await;
    rig.play(Scene {
        uas: "uas_auth_hold.xml",
        uas_args: &[],
        uac: &scenarios().join("uac_hold.xml"),
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &[],
        gateway: gw,
    })
    .await;
    let log = rig.log("uas");
    let auth = header(&log, "Authorization");
    assert_eq!(
        auth.len(),
        1,
        "credentials on the challenged re-INVITE only: {log}"
    );
    assert!(auth[0].contains("uri=\"sip:gw@"), "{}", auth[0]);
    let recs = rig.first_records("4085551234").await;
    assert_eq!(recs.len(), 1);
    assert!(recs[0].connect_at.is_some(), "{:?}", recs[0]);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_access_numbers_untrusted_sources_and_refused_cards_are_answered() {
    require_sipp!();
    let gw = free_port();
    // 127.0.0.1 is not trusted here.
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "10.0.0.0/8")).await;
    let mut uac = rig.caller(
        "uac404",
        &refused(rig.dir.path(), 404),
        "4085551234",
        "999",
        false,
        &[],
    );
    assert_eq!(rig.wait("uac404", &mut uac).await, 0);
    let mut uac = rig.caller(
        "uac403",
        &refused(rig.dir.path(), 403),
        "4085551234",
        "55512015555233",
        false,
        &[],
    );
    assert_eq!(rig.wait("uac403", &mut uac).await, 0);
    assert!(rig.log("uac403").contains("source is not a trusted peer"));
    rig.stop().await;

    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    rig.pinless("4085550002", "0").await;
    // Return code 4 (zero balance) → 402; an unknown caller number (code 1) → 403; a blocked
    // destination (code 9) → 403.
    for (name, ani, user, code, why) in [
        (
            "uac402",
            "4085550002",
            "55512015555233",
            402,
            "return code 4",
        ),
        (
            "uacunknown",
            "4085559999",
            "55512015555233",
            403,
            "return code 1",
        ),
        (
            "uacblocked",
            "4085551234",
            "55512011900555",
            403,
            "return code 9",
        ),
    ] {
        let mut uac = rig.caller(name, &refused(rig.dir.path(), code), ani, user, false, &[]);
        assert_eq!(rig.wait(name, &mut uac).await, 0, "{name}");
        assert!(rig.log(name).contains(why), "{name}: {}", rig.log(name));
    }
    let recs = rig.records("4085550002").await;
    assert_eq!(recs[0].return_code, 4, "the refused attempt is recorded");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_ipv6() {
    require_sipp!();
    let gw = free_port();
    let v6 = yaml(&[("gw", gw)], &one_route("gw"), "\"::1\"")
        .replace("udp:127.0.0.1:0", "udp:[::1]:0")
        .replace("tcp:127.0.0.1:0", "tcp:[::1]:0")
        .replace(&format!("127.0.0.1:{gw}"), &format!("[::1]:{gw}"));
    let rig = Rig::start(&v6).await;
    assert!(rig.udp.is_ipv6());
    pinless_call(&rig, gw, "200").await;
    let invite = first_invite(&rig.log("uas"));
    assert!(
        invite.starts_with(&format!("INVITE sip:5555233@[::1]:{gw} SIP/2.0")),
        "{invite}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_is_skipped_for_the_next_one() {
    require_sipp!();
    let (small, big) = (free_port(), free_port());
    let routes = "  - {name: all, patterns: [T], gateways: [{gateway: small}, {gateway: big}]}\n";
    let cfg = yaml(&[("small", small), ("big", big)], routes, "127.0.0.1").replace(
        &format!("127.0.0.1:{small}\", channels: 10"),
        &format!("127.0.0.1:{small}\", channels: 1"),
    );
    let rig = Rig::start(&cfg).await;
    rig.pinless("4085550003", "5").await;
    let mut gw_small = rig.gateway("small", "uas_answer.xml", small, &[]).await;
    let mut gw_big = rig.gateway("big", "uas_answer.xml", big, &[]).await;
    let scenario = scenarios().join("uac_pinless.xml");
    let mut one = rig.caller(
        "one",
        &scenario,
        "4085551234",
        "55512015555233",
        false,
        &["-d", "1500"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut two = rig.caller(
        "two",
        &scenario,
        "4085550003",
        "55512015555233",
        false,
        &["-d", "200"],
    );
    assert_eq!(rig.wait("one", &mut one).await, 0);
    assert_eq!(rig.wait("two", &mut two).await, 0);
    assert_eq!(rig.wait("small", &mut gw_small).await, 0);
    assert_eq!(rig.wait("big", &mut gw_big).await, 0);
    assert!(
        first_invite(&rig.log("big")).contains("From: <sip:4085550003@"),
        "the second call went to the second gateway"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_rings_too_long_is_cancelled_and_the_caller_gets_480() {
    require_sipp!();
    let gw = free_port();
    let cfg = yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")
        .replace("ring_timeout_s: 20", "ring_timeout_s: 1");
    let rig = Rig::start(&cfg).await;
    rig.play(Scene {
        uas: "uas_ring.xml",
        uas_args: &[],
        uac: &refused(rig.dir.path(), 480),
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &[],
        gateway: gw,
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_one_chunk_is_extended_until_the_money_ends() {
    require_sipp!();
    let gw = free_port();
    // Holds of 3 s at a time: the 8 s this card buys take two extensions.
    let store_cfg = StoreConfig {
        chunk_seconds: 3,
        ..StoreConfig::default()
    };
    let rig = Rig::start_with(
        &yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1"),
        store_cfg,
    )
    .await;
    rig.pinless("4085550004", "0.0126").await;
    assert_eq!(
        rig.store
            .quote("4085550004", "5555233", Utc::now())
            .await
            .unwrap()
            .credit_time,
        8
    );
    rig.play(Scene {
        uas: "uas_answer.xml",
        uas_args: &[],
        uac: &scenarios().join("uac_wait_bye.xml"),
        ani: "4085550004",
        user: "55512015555233",
        tcp: false,
        uac_args: &[],
        gateway: gw,
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rec = &rig.records("4085550004").await[0];
    assert_eq!(
        rec.billed_seconds, 8,
        "cut at the end of the money, not of the first hold"
    );
    assert_eq!(rec.disconnect_cause, "cutoff");
    let card = rig.store.account("4085550004").await.unwrap();
    assert_eq!(card.balance, Money::parse("0.000002", true).unwrap());
    rig.stop().await;
}

/// Writes a pcap of RFC 4733 telephone-events (payload type 101) for SIPp's play_pcap_audio:
/// each key a start, a continuation and the end three times, keys `gap_ms` apart; an `L`
/// stands for `#` held 2.5 s (updates every 50 ms). Ethernet/IPv4/UDP framing, as SIPp needs;
/// SIPp rewrites the addresses.
fn dtmf_pcap(path: &Path, keys: &str, gap_ms: u32) {
    let mut out: Vec<u8> = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    // Every pcap its own timestamps and sequence numbers: a phone's keep advancing, and the
    // B2BUA tells a new key press from a repeated end packet by the timestamp.
    static BASE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let base = BASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut t_us: u64 = 0;
    let mut seq: u16 = (base * 500) as u16;
    let mut ts: u32 = base * 10_000_000;
    let packet =
        |out: &mut Vec<u8>, t_us: u64, marker: bool, seq: u16, ts: u32, payload: [u8; 4]| {
            let mut rtp = vec![0x80, 101 | if marker { 0x80 } else { 0 }];
            rtp.extend_from_slice(&seq.to_be_bytes());
            rtp.extend_from_slice(&ts.to_be_bytes());
            rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            rtp.extend_from_slice(&payload);
            let udp_len = 8 + rtp.len();
            let ip_len = 20 + udp_len;
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![
                0x45,
                0,
                (ip_len >> 8) as u8,
                ip_len as u8,
                0,
                0,
                0x40,
                0,
                64,
                17,
                0,
                0,
                127,
                0,
                0,
                1,
                127,
                0,
                0,
                1,
            ];
            let sum: u32 = ip
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
                .sum();
            let sum = (sum & 0xffff) + (sum >> 16);
            let check = !(sum as u16);
            ip[10] = (check >> 8) as u8;
            ip[11] = check as u8;
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&6000u16.to_be_bytes());
            frame.extend_from_slice(&6000u16.to_be_bytes());
            frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(&rtp);
            for v in [
                (t_us / 1_000_000) as u32,
                (t_us % 1_000_000) as u32,
                frame.len() as u32,
                frame.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&frame);
        };
    for key in keys.chars() {
        let code = match key {
            '*' => 10,
            '#' | 'L' => 11,
            c => c.to_digit(10).expect("a key") as u8,
        };
        let steps: Vec<(bool, u16, u64)> = if key == 'L' {
            // Held: an update every 50 ms for 2.5 s, then the end three times.
            (0..50u16)
                .map(|i| (false, (i + 1) * 400, 50_000))
                .chain([(true, 20_000, 20_000); 3])
                .collect()
        } else {
            vec![
                (false, 160, 20_000),
                (false, 480, 20_000),
                (true, 800, 20_000),
                (true, 800, 20_000),
                (true, 800, 20_000),
            ]
        };
        for (i, (end, dur, step_us)) in steps.into_iter().enumerate() {
            packet(
                &mut out,
                t_us,
                i == 0,
                seq,
                ts,
                [
                    code,
                    if end { 0x80 } else { 0 },
                    (dur >> 8) as u8,
                    dur as u8,
                ],
            );
            seq = seq.wrapping_add(1);
            t_us += step_us;
        }
        ts = ts.wrapping_add(8_000);
        t_us += gap_ms as u64 * 1000;
    }
    std::fs::write(path, out).unwrap();
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_a_debit_card_call_on_the_demo_card_keyed_from_pcaps() {
    require_sipp!();
    if !is_root() {
        eprintln!("skipped: SIPp plays pcap audio only as root");
        return;
    }
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    let card = rig.dir.path().join("card.pcap");
    let dest = rig.dir.path().join("dest.pcap");
    dtmf_pcap(&card, "0000701234", 100);
    dtmf_pcap(&dest, "5555233#", 100);
    let mut uas = rig.gateway("uas", "uas_answer.xml", gw, &[]).await;
    let (c, d) = (card.display().to_string(), dest.display().to_string());
    let mut uac = rig.caller(
        "uac",
        &scenarios().join("uac_ivr_call.xml"),
        "4085550000",
        "5551200",
        false,
        &["-key", "card", &c, "-key", "dest", &d, "-d", "2000"],
    );
    assert_eq!(rig.wait("uac", &mut uac).await, 0);
    assert_eq!(rig.wait("uas", &mut uas).await, 0);
    assert!(first_invite(&rig.log("uas")).starts_with("INVITE sip:5555233@"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = &rig.records("000070").await[0];
    assert_eq!(rec.destination, "5555233");
    assert!(rec.billed_seconds >= 1);
    let card_now = rig.store.account("000070").await.unwrap();
    assert_eq!(
        card_now.balance.checked_add(rec.cost),
        Money::parse("32.91", false).ok()
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_wrong_pins_end_with_the_final_prompt_and_bye() {
    require_sipp!();
    if !is_root() {
        eprintln!("skipped: SIPp plays pcap audio only as root");
        return;
    }
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    let cards = rig.dir.path().join("cards.pcap");
    // Four wrong PINs, 5 s apart (each is answered by the auth-failed prompt, which the next
    // one interrupts): the first try and the three retries of the shipped flow.
    dtmf_pcap_groups(
        &cards,
        &["0000709999", "0000708888", "0000707777", "0000706666"],
        100,
        5000,
    );
    let c = cards.display().to_string();
    let mut uac = rig.caller(
        "uac",
        &scenarios().join("uac_ivr_refused.xml"),
        "4085550000",
        "5551200",
        false,
        &["-key", "card", &c],
    );
    assert_eq!(rig.wait("uac", &mut uac).await, 0, "the caller got BYE");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recs = rig.records("000070").await;
    assert_eq!(
        recs.iter().filter(|r| r.return_code == 2).count(),
        4,
        "{recs:?}"
    );
    rig.stop().await;
}

/// Several key groups in one pcap, `group_gap_ms` between groups.
fn dtmf_pcap_groups(path: &Path, groups: &[&str], gap_ms: u32, group_gap_ms: u32) {
    // Expressed as one key string with long gaps: keys in a group `gap_ms` apart.
    let tmp = path.with_extension("parts");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut all = Vec::new();
    let mut header = Vec::new();
    let mut offset_us: u64 = 0;
    for (n, g) in groups.iter().enumerate() {
        let p = tmp.join(format!("{n}.pcap"));
        dtmf_pcap(&p, g, gap_ms);
        let bytes = std::fs::read(&p).unwrap();
        if header.is_empty() {
            header = bytes[..24].to_vec();
        }
        // Shift each record's time by the group's offset.
        let mut i = 24;
        let mut last_us = 0;
        while i + 16 <= bytes.len() {
            let sec = u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as u64;
            let usec = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().unwrap()) as u64;
            let len = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().unwrap()) as usize;
            let t = sec * 1_000_000 + usec + offset_us;
            last_us = t;
            all.extend_from_slice(&((t / 1_000_000) as u32).to_le_bytes());
            all.extend_from_slice(&((t % 1_000_000) as u32).to_le_bytes());
            all.extend_from_slice(&bytes[i + 8..i + 16]);
            // Each group its own timestamps and sequence numbers, so they are new events.
            let mut frame = bytes[i + 16..i + 16 + len].to_vec();
            let rtp = 14 + 20 + 8;
            let seq =
                u16::from_be_bytes([frame[rtp + 2], frame[rtp + 3]]).wrapping_add(n as u16 * 100);
            frame[rtp + 2..rtp + 4].copy_from_slice(&seq.to_be_bytes());
            let ts = u32::from_be_bytes(frame[rtp + 4..rtp + 8].try_into().unwrap())
                .wrapping_add(n as u32 * 1_000_000);
            frame[rtp + 4..rtp + 8].copy_from_slice(&ts.to_be_bytes());
            all.extend_from_slice(&frame);
            i += 16 + len;
        }
        offset_us = last_us + group_gap_ms as u64 * 1000;
    }
    header.extend_from_slice(&all);
    std::fs::write(path, header).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_a_long_pound_redial_keyed_from_pcaps() {
    require_sipp!();
    if !is_root() {
        eprintln!("skipped: SIPp plays pcap audio only as root");
        return;
    }
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    let pcaps: Vec<(String, String)> = [
        ("card", "0000701234"),
        ("dest", "5555233#"),
        ("pound", "L"),
        ("dest2", "5555234#"),
    ]
    .iter()
    .map(|(k, keys)| {
        let p = rig.dir.path().join(format!("{k}.pcap"));
        dtmf_pcap(&p, keys, 100);
        (k.to_string(), p.display().to_string())
    })
    .collect();
    let mut args: Vec<&str> = Vec::new();
    for (k, p) in &pcaps {
        args.extend(["-key", k.as_str(), p.as_str()]);
    }
    args.extend(["-d", "1000"]);
    let mut uas = rig.gateway("uas", "uas_answer.xml", gw, &["-m", "2"]).await;
    let mut uac = rig.caller(
        "uac",
        &scenarios().join("uac_ivr_redial.xml"),
        "4085550000",
        "5551200",
        false,
        &args,
    );
    assert_eq!(rig.wait("uac", &mut uac).await, 0);
    assert_eq!(
        rig.wait("uas", &mut uas).await,
        0,
        "the gateway took two calls, each ended by BYE"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recs = rig.records("000070").await;
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0].session_id, recs[1].session_id);
    assert!(
        recs.iter()
            .any(|r| r.disconnect_cause == "long_pound" && r.destination == "5555233"),
        "{recs:?}"
    );
    assert!(recs.iter().any(|r| r.destination == "5555234"));
    assert!(rig.store.ledger_check().await.unwrap().problems.is_empty());
    rig.stop().await;
}

/// A copy of every UDP datagram arriving for one local port, taken with a raw socket (root
/// only) so that the test can see the audio SIPp receives without taking SIPp's port.
struct Tap {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl Tap {
    fn start(port: u16) -> Tap {
        use socket2::{Domain, Protocol, Socket, Type};
        use std::sync::atomic::{AtomicBool, Ordering};
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("raw socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let sock: std::net::UdpSocket = sock.into();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                // An IPv4 header, then UDP: keep the payloads addressed to `port`.
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if n >= ihl + 8 && u16::from_be_bytes([buf[ihl + 2], buf[ihl + 3]]) == port {
                    got.push(buf[ihl + 8..n].to_vec());
                }
            }
            got
        });
        Tap { stop, thread }
    }

    fn finish(self) -> Vec<Vec<u8>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_a_cutoff_by_credit_after_the_warning_keyed_from_pcaps() {
    require_sipp!();
    if !is_root() {
        eprintln!("skipped: SIPp plays pcap audio only as root");
        return;
    }
    // The shipped flows with the warning 3 s before the end instead of 60.
    let gw = free_port();
    let flows = ua::flows_warning_at(3);
    let yaml = format!(
        "flows: {}\n{}",
        flows.path().display(),
        yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")
    );
    let rig = Rig::start(&yaml).await;
    // 0.01 USD buys 6 s to 5555233.
    rig.store
        .create_account(
            &NewAccount::new("123456", Some("1111"), Money::parse("0.01", false).unwrap()),
            Utc::now(),
        )
        .await
        .unwrap();
    let card = rig.dir.path().join("card.pcap");
    let dest = rig.dir.path().join("dest.pcap");
    dtmf_pcap(&card, "1234561111", 100);
    dtmf_pcap(&dest, "5555233#", 100);
    let mut uas = rig.gateway("uas", "uas_answer.xml", gw, &[]).await;
    let media_port = free_media_port();
    let tap = Tap::start(media_port);
    let (c, d, mp) = (
        card.display().to_string(),
        dest.display().to_string(),
        media_port.to_string(),
    );
    let mut uac = rig.caller(
        "uac",
        &scenarios().join("uac_ivr_cutoff.xml"),
        "4085550000",
        "5551200",
        false,
        &["-key", "card", &c, "-key", "dest", &d, "-mp", &mp],
    );
    assert_eq!(rig.wait("uac", &mut uac).await, 0, "the caller got BYE");
    assert_eq!(rig.wait("uas", &mut uas).await, 0, "the gateway got BYE");
    let heard = tap.finish();
    assert!(
        ua::carries_prompt(heard.iter().map(Vec::as_slice), "disconnect"),
        "the warning reached the caller ({} packets)",
        heard.len()
    );
    assert!(
        ua::carries_prompt(heard.iter().map(Vec::as_slice), "disconnected"),
        "then the disconnected prompt"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rec = &rig.records("123456").await[0];
    assert_eq!(rec.billed_seconds, 6);
    assert_eq!(rec.disconnect_cause, "credit_exhausted");
    assert_eq!(
        rig.store.account("123456").await.unwrap().balance,
        Money::parse("0.000552", false).unwrap()
    );
    rig.stop().await;
}

/// A pinless call lasting `ms` on the demo's pinless account, through gateway port `gw`.
async fn pinless_call(rig: &Rig, gw: u16, ms: &str) {
    pinless_to(
        rig,
        gw,
        "uas_answer.xml",
        &scenarios().join("uac_pinless.xml"),
        ms,
    )
    .await;
}

/// The demo's pinless caller placing one call through a gateway playing `uas`, the caller
/// playing `uac` and holding the call `ms` milliseconds if it is answered.
async fn pinless_to(rig: &Rig, gw: u16, uas: &str, uac: &Path, ms: &str) {
    rig.play(Scene {
        uas,
        uas_args: &[],
        uac,
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &["-d", ms],
        gateway: gw,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_reaches_freeradius_exactly_once_through_an_outage_and_a_restart() {
    require_sipp!();
    if !freeradius::available() {
        return;
    }
    let (gw, rad_port) = (free_port(), free_port());
    let yaml = format!(
        "{}radius:\n  accounting: {{server: \"127.0.0.1:{rad_port}\", secret: acct-s3cret, gw_id: b2bua-test, retry_first_ms: 200, retry_max_ms: 800}}\n",
        yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")
    );
    let store_cfg = StoreConfig {
        node_id: "acct-node".into(),
        ..StoreConfig::default()
    };
    let mut rig = Rig::start_with(&yaml, store_cfg.clone()).await;
    let raddb = rig.dir.path().join("raddb");
    let mut radius = FreeRadius::configure(&raddb, rad_port, "acct-s3cret");
    radius.start().await;
    let drained = |store: Arc<Store>| async move {
        for _ in 0..100 {
            if store.accounting_queue_depth().await.unwrap() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };

    // A call while the server is up: four records (each leg's Start and Stop) arrive.
    pinless_call(&rig, gw, "1200").await;
    assert_eq!(radius.wait_records(4).await, 4);
    assert!(drained(rig.store.clone()).await, "the outbox drains");

    // The server goes away; a call's records wait in the outbox through retries …
    radius.kill().await;
    pinless_call(&rig, gw, "1200").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rig.store.accounting_queue_depth().await.unwrap(), 4);
    // … and through a restart of the B2BUA on the same database.
    let dir = rig.dir;
    if let Some(r) = rig.running.take() {
        r.stop().await;
    }
    if let Some(a) = rig.acct.take() {
        a.stop().await;
    }
    rig.store.close().await;
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let store = Arc::new(Store::open(&url, store_cfg).await.unwrap());
    assert_eq!(store.accounting_queue_depth().await.unwrap(), 4);
    let cfg = Config::parse(&yaml, "test.yaml").unwrap();
    let acct = b2bua::radius_acct::start(cfg.radius_accounting.as_ref().unwrap(), store.clone())
        .await
        .unwrap();
    let running = engine::start(cfg, store.clone()).await.unwrap();
    let rig = Rig {
        udp: running.addr(b2bua::routing::Proto::Udp).unwrap(),
        tcp: running.addr(b2bua::routing::Proto::Tcp).unwrap(),
        dir,
        store,
        running: Some(running),
        acct: Some(acct),
        ip: "127.0.0.1",
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rig.store.accounting_queue_depth().await.unwrap(), 4);
    // The server comes back, a third call is made, and everything arrives, once.
    radius.start().await;
    pinless_call(&rig, gw, "1200").await;
    assert_eq!(radius.wait_records(12).await, 12);
    assert!(drained(rig.store.clone()).await, "the outbox drains");
    // Time for a late duplicate to show.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let recs = radius.records();
    let mut keys: Vec<(String, String, String)> = recs
        .iter()
        .map(|r| {
            (
                attr(r, "Acct-Session-Id").to_string(),
                attr(r, "h323-call-origin").to_string(),
                attr(r, "Acct-Status-Type").to_string(),
            )
        })
        .collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!(n, keys.len(), "a record arrived twice: {recs:#?}");
    assert_eq!(n, 12, "three calls, two legs, Start and Stop: {keys:#?}");

    // Each originate Stop matches its call record, in Cisco's words.
    let mut calls = rig.records("4085551234").await;
    calls.sort_by_key(|c| c.setup_at);
    assert_eq!(calls.len(), 3);
    for c in &calls {
        let stop = recs
            .iter()
            .find(|r| {
                attr(r, "Acct-Session-Id") == c.conf_id && attr(r, "Acct-Status-Type") == "Stop"
            })
            .expect("an originate Stop per call");
        assert_eq!(attr(stop, "h323-call-origin"), "originate");
        assert_eq!(attr(stop, "User-Name"), "4085551234");
        assert_eq!(attr(stop, "Called-Station-Id"), "5555233");
        assert_eq!(attr(stop, "h323-call-type"), "VoIP");
        assert_eq!(attr(stop, "h323-gw-id"), "b2bua-test");
        assert_eq!(attr(stop, "h323-remote-address"), "127.0.0.1");
        assert_eq!(attr(stop, "h323-disconnect-cause"), "10");
        let conf = attr(stop, "h323-conf-id");
        assert_eq!(
            conf,
            c.conf_id
                .replace('-', "")
                .to_ascii_uppercase()
                .as_bytes()
                .chunks(8)
                .map(|w| std::str::from_utf8(w).unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let pair = attr(stop, "Cisco-AVPair");
        assert!(pair.starts_with("h323-incoming-conf-id="), "{pair}");
        let session = recs
            .iter()
            .find(|r| {
                attr(r, "h323-call-origin") == "answer"
                    && format!("h323-incoming-conf-id={}", attr(r, "h323-conf-id")) == pair
            })
            .expect("the caller's leg shares the incoming conference id");
        assert_eq!(attr(session, "Called-Station-Id"), "5551201");
        let t = |name: &str| {
            rating::radius::h323::parse_time(attr(stop, name))
                .unwrap_or_else(|| panic!("{name} in Cisco's format: {}", attr(stop, name)))
        };
        assert_eq!(
            Some(t("h323-connect-time")),
            c.connect_at.map(|x| {
                chrono::DateTime::from_timestamp_millis(x.timestamp_millis()).unwrap()
            })
        );
        assert!(t("h323-setup-time") <= t("h323-connect-time"));
        let talk: u64 = attr(stop, "Acct-Session-Time").parse().unwrap();
        assert!((1..=3).contains(&talk), "talked {talk} s");
    }
    // The call made during the outage says how late its records are.
    let late = &calls[1];
    let delayed = recs
        .iter()
        .find(|r| attr(r, "Acct-Session-Id") == late.conf_id)
        .unwrap();
    assert!(attr(delayed, "Acct-Delay-Time").parse::<u32>().unwrap() >= 1);
    radius.kill().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_asking_for_digest_credentials_gets_them_and_a_wrong_password_fails() {
    require_sipp!();
    for (password, answered) in [("s3cret", true), ("wrong", false)] {
        let gw = free_port();
        let auth = format!("{{username: acme, password: {password}, realm: carrier.example}}");
        let yaml = with_auth(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1"), &auth);
        let rig = Rig::start(&yaml).await;
        let refused_503 = refused(rig.dir.path(), 503);
        let uac = if answered {
            scenarios().join("uac_pinless.xml")
        } else {
            refused_503
        };
        pinless_to(&rig, gw, "uas_auth.xml", &uac, "200").await;
        let log = rig.log("uas");
        let auth = header(&log, "Authorization");
        assert!(
            auth.first().is_some_and(
                |a| a.contains("username=\"acme\"") && a.contains("realm=\"carrier.example\"")
            ),
            "{log}"
        );
        assert!(
            !log.contains(password),
            "the password never goes on the wire"
        );
        let recs = rig.first_records("4085551234").await;
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].connect_at.is_some(), answered, "{:?}", recs[0]);
        if !answered {
            assert_eq!(recs[0].cost, Money::ZERO, "nothing billed");
        }
        rig.stop().await;
    }
}

/// A real Kamailio (auth + auth_db) as the carrier, challenging with 407 and qop=auth every
/// INVITE, re-INVITE and BYE we send it: the call, its hold and unhold and its hang-up all go
/// through on our credentials; with a wrong password the call fails (503, nothing billed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kamailio_carrier_accepts_our_credentials_on_the_call_its_hold_and_its_bye() {
    require_sipp!();
    if !kamailio::available() {
        if std::env::var_os("B2BUA_REQUIRE_PEERS").is_some() {
            panic!("Kamailio is not installed and B2BUA_REQUIRE_PEERS is set");
        }
        eprintln!("skipped: Kamailio is not installed (apt-get install kamailio)");
        return;
    }
    for (password, answered) in [("s3cret", true), ("wrong", false)] {
        let (carrier, gw) = (free_port(), free_port());
        let auth = format!("{{username: acme, password: {password}, realm: carrier.example}}");
        let yaml = with_auth(
            &yaml(&[("gw", carrier)], &one_route("gw"), "127.0.0.1"),
            &auth,
        );
        let rig = Rig::start(&yaml).await;
        let k =
            kamailio::Kamailio::carrier(rig.dir.path(), carrier, gw, &[("acme", "s3cret")]).await;
        if answered {
            let uas = behind_proxy(rig.dir.path(), "uas_hold.xml");
            rig.play(Scene {
                uas: uas.to_str().unwrap(),
                uas_args: &[],
                uac: &scenarios().join("uac_hold.xml"),
                ani: "4085551234",
                user: "55512015555233",
                tcp: false,
                uac_args: &[],
                gateway: gw,
            })
            .await;
        } else {
            let uac = refused(rig.dir.path(), 503);
            let mut c = rig.caller("uac", &uac, "4085551234", "55512015555233", false, &[]);
            assert_eq!(rig.wait("uac", &mut c).await, 0, "the caller gets 503");
        }
        let log = k.log();
        let authorized: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split("carrier: ").nth(1))
            .filter(|l| l.contains("authorized as acme"))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        let expected: &[&str] = if answered {
            &["INVITE", "INVITE", "INVITE", "BYE"]
        } else {
            &[]
        };
        assert_eq!(authorized, expected, "{log}");
        let recs = rig.first_records("4085551234").await;
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].connect_at.is_some(), answered, "{:?}", recs[0]);
        if !answered {
            assert_eq!(recs[0].cost, Money::ZERO, "nothing billed");
        }
        drop(k);
        rig.stop().await;
    }
}

/// Reliable early media (RFC 3262): a carrier whose 183 Requires 100rel gets its PRACK (the
/// scenario checks RAck and the CSeqs that follow), the caller still hears the 183, and the
/// call is answered and billed as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_sending_reliable_early_media_gets_its_prack() {
    require_sipp!();
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    pinless_to(
        &rig,
        gw,
        "uas_prack.xml",
        &scenarios().join("uac_pinless.xml"),
        "500",
    )
    .await;
    let prack = rig
        .log("uas")
        .lines()
        .find(|l| l.starts_with("PRACK "))
        .map(str::to_string);
    assert!(prack.is_some(), "{}", rig.log("uas"));
    assert!(
        rig.log("uac").contains("SIP/2.0 183"),
        "the early media's 183 reached the caller"
    );
    let recs = rig.first_records("4085551234").await;
    assert_eq!(recs.len(), 1);
    assert!(recs[0].connect_at.is_some(), "{:?}", recs[0]);
    rig.stop().await;
}

/// Reliable early media on both legs at once: the carrier's reliable 183 gets our PRACK, and
/// the caller, whose INVITE requires 100rel, gets its own reliable 183 (RSeq, resent until its
/// PRACK) and our 200 only after that PRACK. Its re-INVITE without SDP is then answered on its
/// own leg with our offer, the answer coming in its ACK (the carrier's scenario would fail on
/// a re-INVITE reaching it); the call is billed as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_requiring_100rel_pracks_our_183_and_re_invites_without_sdp() {
    require_sipp!();
    let gw = free_port();
    let rig = Rig::start(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")).await;
    pinless_to(
        &rig,
        gw,
        "uas_prack.xml",
        &scenarios().join("uac_prack.xml"),
        "500",
    )
    .await;
    let uac = rig.log("uac");
    assert!(uac.contains("RSeq: "), "{uac}");
    let recs = rig.first_records("4085551234").await;
    assert_eq!(recs.len(), 1);
    assert!(recs[0].connect_at.is_some(), "{:?}", recs[0]);
    rig.stop().await;
}

/// Softphone subscribers register with digest: SIPp, challenged, answers with the account's
/// password and is bound (the binding in the shared database, with its source); it then
/// unregisters with `Contact: *`. The wrong password is challenged again and binds nothing,
/// and a REGISTER for a domain not ours is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_registers_with_digest_and_a_wrong_password_binds_nothing() {
    require_sipp!();
    let gw = free_port();
    let yaml = format!(
        "{}subscribers:\n  domains: [voip.example.com]\n",
        yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")
    );
    let rig = Rig::start(&yaml).await;
    let account = rig.alice(None).await;
    let target = rig.udp.to_string();
    let port = free_port().to_string();
    let args = |pw: &'static str| {
        vec![
            "-p".to_string(),
            port.clone(),
            "-key".into(),
            "sub".into(),
            "alice".into(),
            "-s".into(),
            "voip.example.com".into(),
            "-au".into(),
            "alice".into(),
            "-ap".into(),
            pw.into(),
            "-d".into(),
            "1500".into(),
            target.clone(),
        ]
    };
    let a = args("correcthorse1");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut uac = rig.sipp("uac", &scenarios().join("uac_register.xml"), &a);
    // While it holds its registration, the binding is in the database.
    let mut bound = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        bound = rig.store.bindings(account.id, Utc::now()).await.unwrap();
        if !bound.is_empty() {
            break;
        }
    }
    assert_eq!(bound.len(), 1, "{}", rig.log("uac"));
    assert!(
        bound[0].contact.starts_with("sip:alice@127.0.0.1:"),
        "{:?}",
        bound[0]
    );
    assert!(
        bound[0].source.starts_with("udp:127.0.0.1:"),
        "{:?}",
        bound[0]
    );
    assert_eq!(rig.wait("uac", &mut uac).await, 0, "{}", rig.log("uac"));
    assert!(
        rig.store
            .bindings(account.id, Utc::now())
            .await
            .unwrap()
            .is_empty(),
        "unregistered"
    );

    let a = args("wrongpassword");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut wrong = rig.sipp("wrong", &scenarios().join("uac_register_wrong.xml"), &a);
    assert_eq!(
        rig.wait("wrong", &mut wrong).await,
        0,
        "{}",
        rig.log("wrong")
    );
    assert!(rig
        .store
        .bindings(account.id, Utc::now())
        .await
        .unwrap()
        .is_empty());

    // Not our domain: 404, straight away.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reg = "REGISTER sip:elsewhere.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx1\r\n\
From: <sip:alice@elsewhere.example>;tag=1\r\nTo: <sip:alice@elsewhere.example>\r\nCall-ID: r404\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:9>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    sock.send_to(reg.as_bytes(), rig.udp).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let r = String::from_utf8_lossy(&buf[..n]);
    assert!(r.starts_with("SIP/2.0 404 "), "{r}");
    rig.stop().await;
}

/// A node whose DID 5559000 rings alice@voip.example.com, our subscriber domain's, with
/// `more` lines of the `subscribers:` section; a gateway on `gw`; 127.0.0.1 trusted.
fn did_yaml(gw: u16, more: &str) -> String {
    format!(
        "{}subscribers:\n  domains: [voip.example.com]\n{more}",
        yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")
    )
    .replace(
        "access_numbers:\n",
        "access_numbers:\n  - {number: \"5559000\", subscriber: alice@voip.example.com}\n",
    )
}

/// A carrier's INVITE to `number` from a raw socket (a trusted peer at 127.0.0.1), for the
/// refusals: its first answer that is not 100.
async fn carrier_invite(b2b: SocketAddr, number: &str, call: &str) -> String {
    let carrier = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = carrier.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let invite = format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}1\r\n\
From: <sip:4085551234@carrier.example>;tag=c1\r\nTo: <sip:{number}@127.0.0.1>\r\nCall-ID: {call}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    carrier.send_to(invite.as_bytes(), b2b).await.unwrap();
    next_answer(&carrier).await
}

/// The registrar against what a hostile or careless client does: a REGISTER replaying an
/// answered nonce is challenged again and binds nothing; a binding past its expiry rings no
/// phone (the DID is 480); a flood of REGISTERs from one untrusted address is cut off by the
/// edge's per-source limit before any reaches the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_nonce_an_expired_binding_and_a_register_flood_get_nothing() {
    require_sipp!();
    let gw = free_port();
    let brief = did_yaml(gw, "  min_expires_s: 1\n");
    let rig = Rig::start(&brief).await;
    let account = rig.alice(None).await;
    let alice = Alice::new(rig.udp).await;
    let mine = format!("sip:alice@{}", alice.me);
    let (ok, auth) = alice.register_as("replay", &mine, 600).await;
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    // Her answer again, on a new request (a new branch and CSeq): someone who saw it once.
    let theirs = "sip:alice@192.0.2.66:5060";
    alice
        .send(&alice.register_request("replay", 3, theirs, 600, &auth))
        .await;
    let again = next_answer(&alice.sock).await;
    assert!(
        again.starts_with("SIP/2.0 401 "),
        "challenged again: {again}"
    );
    let bound = rig.store.bindings(account.id, Utc::now()).await.unwrap();
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert_eq!(bound[0].contact, mine);

    // A registration for one second: rung while it lasts, not after.
    rig.store.remove_bindings(account.id, None).await.unwrap();
    let (ok, _) = alice.register_as("brief", &mine, 1).await;
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = carrier_invite(rig.udp, "5559000", "expired").await;
    assert!(r.starts_with("SIP/2.0 480 "), "{r}");
    assert!(r.contains("not registered"), "{r}");
    rig.stop().await;

    // From an address we do not trust, 20 requests a second at most.
    let strict = format!(
        "{}subscribers:\n  domains: [voip.example.com]\nlimits:\n  requests: {{per_second: 20, burst: 20}}\n",
        yaml(&[("gw", gw)], &one_route("gw"), "192.0.2.1")
    );
    let rig = Rig::start(&strict).await;
    let robot = Alice::new(rig.udp).await;
    for i in 0..200 {
        let contact = format!("sip:robot{i}@{}", robot.me);
        robot
            .send(&robot.register_request(&format!("flood{i}"), 1, &contact, 600, ""))
            .await;
    }
    let mut answers = 0;
    let mut buf = [0u8; 4096];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(500), robot.sock.recv(&mut buf)).await
    {
        answers += 1;
    }
    assert!(
        (1..=30).contains(&answers),
        "the first ones challenged, the rest dropped unanswered: {answers} of 200"
    );
    let metrics = b2bua::metrics::get().render();
    assert!(
        metrics.contains("b2bua_limit_hits_total{limit=\"requests\"}"),
        "{metrics}"
    );
    rig.stop().await;
}

/// Phone-to-PC: a carrier's call to a DID that names a SIP account rings both contacts the
/// account registered, at once. The first to answer gets the call, the other is sent CANCEL
/// (and ends its INVITE 487); the caller talks to the winner, and the hang-up reaches it.
/// With no binding left, the DID answers 480.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_subscribers_did_rings_every_registered_phone_and_the_first_to_answer_wins() {
    require_sipp!();
    let gw = free_port();
    let yaml = did_yaml(gw, "");
    let rig = Rig::start(&yaml).await;
    let account = rig.alice(None).await;
    let (desk, laptop) = (Alice::new(rig.udp).await, Alice::new(rig.udp).await);
    desk.register("desk").await;
    laptop.register("laptop").await;
    assert_eq!(
        rig.store
            .bindings(account.id, Utc::now())
            .await
            .unwrap()
            .len(),
        2
    );

    let mut uac = rig.caller(
        "uac",
        &scenarios().join("uac_pinless.xml"),
        "4085551234",
        "5559000",
        false,
        &["-d", "1000"],
    );
    let to_desk = desk.next_request("INVITE").await;
    let to_laptop = laptop.next_request("INVITE").await;
    for (inv, phone) in [(&to_desk, &desk), (&to_laptop, &laptop)] {
        assert!(
            inv.starts_with(&format!("INVITE sip:alice@{} SIP/2.0", phone.me)),
            "each phone at its own contact: {inv}"
        );
        assert!(inv.contains("To: <sip:alice@voip.example.com>"), "{inv}");
        assert!(inv.contains("4085551234"), "the caller's number: {inv}");
    }
    desk.answer(&to_desk, 180, "Ringing", false).await;
    laptop.answer(&to_laptop, 180, "Ringing", false).await;
    laptop.answer(&to_laptop, 200, "OK", true).await;
    let cancel = desk.next_request("CANCEL").await;
    desk.answer(&cancel, 200, "OK", false).await;
    desk.answer(&to_desk, 487, "Request Terminated", false)
        .await;
    desk.next_request("ACK").await;
    laptop.next_request("ACK").await;
    let bye = laptop.next_request("BYE").await;
    laptop.answer(&bye, 200, "OK", false).await;
    assert_eq!(rig.wait("uac", &mut uac).await, 0, "{}", rig.log("uac"));

    // Nobody registered: the DID is temporarily unavailable.
    rig.store.remove_bindings(account.id, None).await.unwrap();
    let r = carrier_invite(rig.udp, "5559000", "nobody").await;
    assert!(r.starts_with("SIP/2.0 480 "), "{r}");
    assert!(r.contains("not registered"), "{r}");
    rig.stop().await;
}

/// A tenant that charges for calls to its subscribers (`subscribers.incoming_decks`): the
/// carrier's call to the DID holds the subscriber's card's money by the deck's row for the
/// number before the phone rings, and is cut off when the money ends, both legs hung up and
/// the card billed; a card with nothing left is not rung at all (480).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_call_to_a_subscriber_is_billed_to_its_card_and_cut_off_when_the_money_ends() {
    require_sipp!();
    let gw = free_port();
    let yaml = did_yaml(gw, "  incoming_decks: {\"*\": incoming}\n");
    let rig = Rig::start(&yaml).await;
    let deck =
        "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds
5559,Our DIDs,0.30,0,1,1,0
";
    rig.store
        .import_rates(
            "incoming",
            &rating::deck::parse_rates_csv(deck.as_bytes(), "USD").unwrap(),
            "test",
            Utc::now(),
        )
        .await
        .unwrap();
    // 0.03 at 0.30 a minute, by the second: 6 seconds.
    rig.pinless("4085550077", "0.03").await;
    let n = rating::store::NewSipAccount {
        username: "alice".into(),
        domain: "voip.example.com".into(),
        password: "correcthorse1".into(),
        card: "4085550077".into(),
        caller_id: None,
        max_calls: 1,
    };
    rig.store
        .create_sip_account(&n, "test", Utc::now())
        .await
        .unwrap();
    let phone = Alice::new(rig.udp).await;
    phone.register("desk").await;

    let t0 = Instant::now();
    let mut uac = rig.caller(
        "uac",
        &scenarios().join("uac_wait_bye.xml"),
        "4085551234",
        "5559000",
        false,
        &[],
    );
    let invite = phone.next_request("INVITE").await;
    phone.answer(&invite, 200, "OK", true).await;
    phone.next_request("ACK").await;
    // The money ends: we hang up the phone and the caller.
    let bye = phone
        .next_request_within("BYE", Duration::from_secs(12))
        .await;
    phone.answer(&bye, 200, "OK", false).await;
    assert_eq!(rig.wait("uac", &mut uac).await, 0, "{}", rig.log("uac"));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(11),
        "cut after {took:?}"
    );
    let recs = rig.first_records("4085550077").await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    let rec = &recs[0];
    assert_eq!(rec.billed_seconds, 6);
    assert_eq!(rec.disconnect_cause, "cutoff");
    assert_eq!(rec.destination, "5559000");
    assert_eq!(rec.cost, Money::parse("0.03", true).unwrap());
    let card = rig.store.account("4085550077").await.unwrap();
    assert_eq!((card.balance, card.reserved), (Money::ZERO, Money::ZERO));

    // Nothing left on the card: the phone does not ring, the carrier hears 480 and why.
    let r = carrier_invite(rig.udp, "5559000", "broke").await;
    assert!(r.starts_with("SIP/2.0 480 "), "{r}");
    assert!(r.contains("cannot take calls"), "{r}");
    assert!(
        r.contains("return code 4"),
        "the carrier reads the return code: {r}"
    );
    rig.stop().await;
}

/// A phone behind NAT registers over UDP a Contact with its private address: it is granted
/// `subscribers.nat_expires_s` (60) whatever it asked, so its re-registrations keep its NAT's
/// mapping open, and a call to its DID reaches it through that mapping (where its REGISTER
/// came from), asking for the Contact it registered. A phone reachable where it says keeps
/// the expiry it asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_behind_nat_registers_for_its_keep_alive_interval_and_is_called_through_its_nat() {
    require_sipp!();
    let gw = free_port();
    let rig = Rig::start(&did_yaml(gw, "")).await;
    rig.alice(None).await;
    let phone = Alice::new(rig.udp).await;
    let (ok, _) = phone
        .register_as("nat", "sip:alice@192.168.1.20:5060", 3600)
        .await;
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    // The 200 says the seconds left, so a second may have gone.
    let granted = |ok: &str, contact: &str| -> u32 {
        let at = ok.find(&format!("<{contact}>;expires=")).expect("listed") + contact.len() + 11;
        ok[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let nat = granted(&ok, "sip:alice@192.168.1.20:5060");
    assert!((59..=60).contains(&nat), "the keep-alive interval: {ok}");
    let busy = async {
        let invite = phone.next_request("INVITE").await;
        phone.answer(&invite, 486, "Busy Here", false).await;
        invite
    };
    let (r, invite) = tokio::join!(carrier_invite(rig.udp, "5559000", "via-nat"), busy);
    assert!(
        r.starts_with("SIP/2.0 486 "),
        "the phone's answer comes back: {r}"
    );
    assert!(
        invite.starts_with("INVITE sip:alice@192.168.1.20:5060 SIP/2.0"),
        "{invite}"
    );
    let other = Alice::new(rig.udp).await;
    let (ok, _) = other
        .register_as("open", &format!("sip:alice@{}", other.me), 3600)
        .await;
    let open = granted(&ok, &format!("sip:alice@{}", other.me));
    assert!((3599..=3600).contains(&open), "{ok}");
    rig.stop().await;
}

/// A softphone subscriber calls a number directly: its INVITE is challenged 407, answered
/// with its SIP account's password, authorized on the account's card (a PIN card: the digest
/// stands for the PIN), dialled, billed to the card, and presented with the account's caller
/// ID. Barred from international calls, its `+44…` call is refused 403 after its credentials
/// were checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_calls_out_on_its_cards_money_after_a_407() {
    require_sipp!();
    let gw = free_port();
    let routes = "  - {name: all, patterns: [T], caller_id: pai, gateways: [{gateway: gw}]}\n";
    let yaml = format!(
        "{}subscribers:\n  domains: [voip.example.com]\n",
        yaml(&[("gw", gw)], routes, "127.0.0.1")
    );
    let rig = Rig::start(&yaml).await;
    rig.alice(Some("+14085550123")).await;
    let mut uas = rig.gateway("uas", "uas_answer.xml", gw, &[]).await;
    let port = free_port().to_string();
    let target = rig.udp.to_string();
    let mut uac = rig.sipp(
        "uac",
        &scenarios().join("uac_subscriber_call.xml"),
        &[
            "-p",
            &port,
            "-key",
            "sub",
            "alice",
            "-key",
            "dest",
            "5555233",
            "-s",
            "voip.example.com",
            "-au",
            "alice",
            "-ap",
            "correcthorse1",
            "-d",
            "1000",
            &target,
        ],
    );
    assert_eq!(rig.wait("uac", &mut uac).await, 0, "{}", rig.log("uac"));
    assert_eq!(rig.wait("uas", &mut uas).await, 0, "{}", rig.log("uas"));
    let invite = first_invite(&rig.log("uas"));
    assert!(invite.starts_with("INVITE sip:5555233@"), "{invite}");
    assert!(
        invite.contains("P-Asserted-Identity: <sip:14085550123@")
            || invite.contains("P-Asserted-Identity: <sip:+14085550123@"),
        "the account's caller ID: {invite}"
    );
    let recs = rig.first_records("000070").await;
    assert_eq!(recs.len(), 1, "billed to the card");
    assert_eq!(recs[0].destination, "5555233");
    assert!(recs[0].connect_at.is_some());

    // Barred from international calls: refused once its credentials are checked.
    rig.store
        .set_sip_barring(
            "alice",
            "voip.example.com",
            Some(true),
            None,
            "test",
            Utc::now(),
        )
        .await
        .unwrap();
    let alice = Alice::new(rig.udp).await;
    let (sock, me) = (&alice.sock, alice.me);
    let to = "+445555233";
    alice.authenticated("barred", to).await;
    let refused = next_answer(sock).await;
    assert!(
        refused.starts_with("SIP/2.0 403 international calls are barred on this account\r\n"),
        "the softphone shows why: {refused}"
    );
    alice.ack("barred", 2, &refused).await;
    assert!(
        refused.contains("international calls are barred"),
        "{refused}"
    );

    // Premium-rate numbers barred, international allowed again: 1900… is refused, by the
    // default dialling plan's premium prefixes.
    rig.store
        .set_sip_barring(
            "alice",
            "voip.example.com",
            Some(false),
            Some(true),
            "test",
            Utc::now(),
        )
        .await
        .unwrap();
    let to = "19005551234";
    alice.authenticated("premium", to).await;
    let refused = next_answer(sock).await;
    assert!(
        refused.starts_with("SIP/2.0 403 premium-rate calls are barred on this account\r\n"),
        "{refused}"
    );
    alice.ack("premium", 2, &refused).await;

    // A name is not a number: 484, said on the status line.
    alice.authenticated("name", "bob").await;
    let refused = next_answer(sock).await;
    assert!(
        refused.starts_with("SIP/2.0 484 the number dialled is not a phone number\r\n"),
        "{refused}"
    );
    alice.ack("name", 2, &refused).await;

    // Her one call at once is taken (a call to the gateway, gone by now, still being set up):
    // even the short code is refused.
    alice.authenticated("first", "5555233").await;
    alice.authenticated("second", "*100").await;
    let mut busy = None;
    let mut first_done = false;
    while busy.is_none() || !first_done {
        let r = next_answer(sock).await;
        if r.starts_with("SIP/2.0 1") {
            continue;
        }
        if r.contains("Call-ID: second") {
            alice.ack("second", 2, &r).await;
            busy = Some(r);
        } else {
            alice.ack("first", 2, &r).await;
            first_done = true;
        }
    }
    let busy = busy.unwrap();
    assert!(
        busy.starts_with("SIP/2.0 486 the account's calls at once are all in use\r\n"),
        "{busy}"
    );

    // A caller that gives up at once, while its account may still be being read, gets 487
    // for its INVITE either way (and the gateway, gone by now, is never rung for long).
    let to = "5555233";
    alice.authenticated("gaveup", to).await;
    let cancel = format!(
        "CANCEL sip:{to}@voip.example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKgaveup2\r\n\
From: <sip:alice@voip.example.com>;tag=b1\r\nTo: <sip:{to}@voip.example.com>\r\nCall-ID: gaveup\r\n\
CSeq: 2 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    alice.send(&cancel).await;
    let (mut cancelled, mut terminated) = (false, false);
    while !(cancelled && terminated) {
        let r = next_answer(sock).await;
        if r.starts_with("SIP/2.0 1") {
            continue;
        }
        if r.contains("CSeq: 2 CANCEL") {
            assert!(r.starts_with("SIP/2.0 200 "), "{r}");
            cancelled = true;
        } else {
            assert!(r.starts_with("SIP/2.0 487 "), "the INVITE ends 487: {r}");
            alice.ack("gaveup", 2, &r).await;
            terminated = true;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered = rig.records("000070").await;
    assert_eq!(
        answered.iter().filter(|r| r.connect_at.is_some()).count(),
        1,
        "nothing more billed: {answered:?}"
    );
    let card = rig.store.account("000070").await.unwrap();
    assert_eq!(card.reserved, Money::ZERO, "no hold left");
    rig.stop().await;
}

/// Health pings: a gateway that stops answering OPTIONS is taken out of routing, so a call
/// goes straight to the next one (the dead one is not even sent the INVITE), and the first
/// answer puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_does_not_answer_its_pings_is_skipped_until_it_answers() {
    require_sipp!();
    let silent = ua::Ua::new("gw").await;
    let live = free_port();
    let routes =
        "  - {name: all, patterns: [T], gateways: [{gateway: pingdead}, {gateway: live}]}\n";
    // T1 of 50 ms: an OPTIONS is given up after 64 × T1 = 3.2 s.
    let yaml = yaml(
        &[("pingdead", silent.sip_addr().port()), ("live", live)],
        routes,
        "127.0.0.1",
    )
    .replace("t1_ms: 200", "t1_ms: 50")
    .replace(
        &format!("{}\", channels: 10}}", silent.sip_addr()),
        &format!(
            "{}\", channels: 10, ping_s: 1, ping_failures: 1}}",
            silent.sip_addr()
        ),
    );
    assert!(yaml.contains("ping_s: 1"), "{yaml}");
    let rig = Rig::start(&yaml).await;
    let up = || {
        b2bua::metrics::get()
            .gateways_up
            .get_or_create(&b2bua::metrics::GatewayLabels {
                gateway: "pingdead".into(),
            })
            .get()
    };
    let mut gone = false;
    for _ in 0..100 {
        if up() == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "out of routing after a ping went unanswered");
    // What the silent gateway got so far: pings only.
    while let Some((m, _)) = silent.recv(Duration::from_millis(50)).await {
        assert!(
            matches!(&m, b2bua::sip::message::SipMessage::Request(r) if r.method.to_string() == "OPTIONS")
        );
    }
    pinless_call(&rig, live, "200").await;
    while let Some((m, _)) = silent.recv(Duration::from_millis(200)).await {
        if let b2bua::sip::message::SipMessage::Request(r) = m {
            assert_eq!(
                r.method.to_string(),
                "OPTIONS",
                "the dead gateway was skipped"
            );
        }
    }
    // It answers again: back in routing.
    let mut back = false;
    for _ in 0..50 {
        if let Some((b2bua::sip::message::SipMessage::Request(r), from)) =
            silent.recv(Duration::from_millis(100)).await
        {
            silent
                .send(from, &silent.response(&r, 200, "ok", None))
                .await;
        }
        if up() == 1 {
            back = true;
            break;
        }
    }
    assert!(back, "back in routing once it answers");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_challenges_our_bye_gets_it_again_with_credentials() {
    require_sipp!();
    let gw = free_port();
    let yaml = with_auth(
        &yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1"),
        "{username: acme, password: s3cret}",
    );
    let rig = Rig::start(&yaml).await;
    let uac = scenarios().join("uac_pinless.xml");
    pinless_to(&rig, gw, "uas_auth_bye.xml", &uac, "200").await;
    let log = rig.log("uas");
    let byes = log.matches("BYE sip:").count();
    assert_eq!(byes, 2, "the challenged BYE and its answer: {log}");
    rig.stop().await;
}

/// Session timers (RFC 4028) against real peers, each leg on its own: the caller asks us to
/// refresh its 90 s session and gets our UPDATE at 45 s; the carrier first refuses our 90 s
/// with 422 (Min-SE 100), takes 100 s with itself as refresher, then never refreshes. 32 s
/// before its session would end (68 s in) we hang up both legs, and the call is billed to then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_stops_refreshing_its_session_is_hung_up_on_both_legs_and_billed() {
    require_sipp!();
    let gw = free_port();
    let yaml = yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1").replace(
        "calls: {setup_timeout_ms: 700, ring_timeout_s: 20}",
        // No RTP flows in this scene: inactivity must not end the call first.
        "calls: {setup_timeout_ms: 700, ring_timeout_s: 20, session_expires_s: 90}\nmedia: {inactivity_s: 300}",
    );
    assert!(yaml.contains("session_expires_s: 90"), "{yaml}");
    let rig = Rig::start(&yaml).await;
    let started = std::time::Instant::now();
    rig.play(Scene {
        uas: "uas_session_timer.xml",
        uas_args: &["-timeout", "100s"],
        uac: &scenarios().join("uac_session_timer.xml"),
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &["-timeout", "100s"],
        gateway: gw,
    })
    .await;
    let took = started.elapsed().as_secs();
    assert!((66..80).contains(&took), "hung up after {took} s");
    let recs = rig.first_records("4085551234").await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].disconnect_cause, "session expired");
    assert!((67..=69).contains(&recs[0].billed_seconds), "{:?}", recs[0]);
    assert!(recs[0].cost > Money::ZERO);
    let log = rig.log("uas");
    assert_eq!(
        log.matches("INVITE sip:").count(),
        2,
        "asked again once: {log}"
    );
    rig.stop().await;
}

/// Registration with a carrier that needs it, against SIPp as the carrier's registrar (with
/// verifyauth) and trunk: with the right password the REGISTER's challenge is answered, the
/// trunk shows as registered in the admin API's gateways and takes the call; with a wrong one
/// the registrar refuses it, the trunk stays out of routing and the caller gets 503 without the
/// carrier ever seeing the INVITE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_that_needs_registration_takes_calls_only_once_registered() {
    require_sipp!();
    for (password, registered) in [("s3cret", true), ("wrong", false)] {
        let gw = free_port();
        let yaml = yaml(&[("trunk", gw)], &one_route("trunk"), "127.0.0.1").replace(
            "channels: 10}",
            &format!(
                "channels: 10, auth: {{username: acme, password: {password}}}, register: {{expires_s: 60, contact_user: trunk7}}}}"
            ),
        );
        assert!(yaml.contains("register:"), "{yaml}");
        let rig = Rig::start(&yaml).await;
        let calls = if registered { "2" } else { "1" };
        let mut uas = rig
            .gateway("uas", "uas_register.xml", gw, &["-m", calls])
            .await;
        let board = rig.running.as_ref().unwrap().gateways.clone();
        let state = || {
            board
                .rows()
                .first()
                .and_then(|r| r.registration.clone())
                .map(|r| r.state)
        };
        let wanted = if registered { "registered" } else { "failed" };
        for _ in 0..80 {
            if state() == Some(wanted) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(state(), Some(wanted), "{}", rig.log("uas"));
        let row = board.rows()[0].clone();
        assert_eq!(row.in_routing, registered);
        assert_eq!(row.registration.unwrap().expires_at.is_some(), registered);
        let uac = if registered {
            scenarios().join("uac_pinless.xml")
        } else {
            refused(rig.dir.path(), 503)
        };
        let mut caller = rig.caller(
            "uac",
            &uac,
            "4085551234",
            "55512015555233",
            false,
            &["-d", "200"],
        );
        assert_eq!(
            rig.wait("uac", &mut caller).await,
            0,
            "the caller's scenario"
        );
        assert_eq!(rig.wait("uas", &mut uas).await, 0, "the carrier's scenario");
        let log = rig.log("uas");
        assert!(
            header(&log, "Contact")
                .iter()
                .any(|c| c.contains("sip:trunk7@127.0.0.1")),
            "{log}"
        );
        assert_eq!(log.contains("INVITE sip:"), registered, "{log}");
        assert!(
            !log.contains(password),
            "the password never goes on the wire"
        );
        // Shutdown removes the binding the carrier holds (its registrar is gone by now, so
        // the REGISTER is caught on its port), and sends nothing where there is none.
        let registrar = tokio::net::UdpSocket::bind(("127.0.0.1", gw))
            .await
            .unwrap();
        rig.stop().await;
        let mut buf = vec![0u8; 4096];
        let mut removals = Vec::new();
        // (A retry of the refused registration may also land here; only removals count.)
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(2), registrar.recv(&mut buf)).await
        {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(text.starts_with("REGISTER sip:"), "{text}");
            if header(&text, "Expires") == ["0"] {
                removals.push(text);
            }
        }
        // Retransmitted until answered: one REGISTER, maybe several times.
        assert_eq!(!removals.is_empty(), registered, "{removals:?}");
    }
}

impl Rig {
    /// Our `tls:` listen address.
    fn tls(&self) -> SocketAddr {
        self.running
            .as_ref()
            .and_then(|r| r.addr(b2bua::routing::Proto::Tls))
            .expect("a tls: listen address")
    }

    /// The demo's pinless card (its number as the caller) calling the demo destination from
    /// baresip over TLS for four seconds, with `mediaenc` (`srtp-mand`, or empty); what it
    /// printed.
    async fn softphone_call(&self, ca: &Path, mediaenc: &str) -> String {
        let tls = self.tls();
        baresip::call(
            self.dir.path(),
            baresip::Dial {
                ani: "4085551234",
                uri: &format!("sip:55512015555233@{tls};transport=tls"),
                ca,
                mediaenc,
                seconds: 4,
            },
        )
        .await
    }

    /// The card's one call was answered and charged (`ctx` says what the peers saw).
    async fn billed_once(&self, account: &str, ctx: &str) {
        let recs = self.first_records(account).await;
        assert_eq!(recs.len(), 1, "{ctx}");
        assert!(recs[0].connect_at.is_some(), "{:?}", recs[0]);
        assert!(recs[0].cost > Money::ZERO, "{:?}", recs[0]);
    }
}

/// The demo's configuration with a `tls:` listen address beside UDP and TCP, presenting the
/// test PKI's certificate.
fn with_tls_listen(yaml: &str, pki: &certs::Pki) -> String {
    yaml.replacen(
        "  listen: [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\n",
        &format!(
            "  listen: [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\n  tls: {{cert: \"{}\", key: \"{}\"}}\n",
            pki.cert.display(),
            pki.key.display()
        ),
        1,
    )
}

macro_rules! require_peer {
    ($have:expr, $what:expr) => {
        if !$have {
            if std::env::var_os("B2BUA_REQUIRE_PEERS").is_some() {
                panic!("{} is not installed and B2BUA_REQUIRE_PEERS is set", $what);
            }
            eprintln!("skipped: {} is not installed", $what);
            return;
        }
    };
}

/// A softphone calling over TLS (baresip, whose TLS is OpenSSL under libre), first with plain
/// RTP and then insisting on SRTP (SDES, AES_CM_128_HMAC_SHA1_80): the handshake against our
/// certificate, the INVITE, ACK and BYE over the one connection, audio both ways through us
/// (the gateway echoes it; on the SRTP call we decrypt what the phone sends, the gateway gets
/// plain RTP, and what goes back to the phone is sealed with our key), and the call billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_softphone_calling_over_tls_with_and_without_srtp_is_bridged_and_billed() {
    require_sipp!();
    require_peer!(baresip::available(), "baresip (apt-get install baresip)");
    for mediaenc in ["", "srtp-mand"] {
        let gw = free_port();
        let certs_dir = tempfile::tempdir().unwrap();
        let pki = certs::write(certs_dir.path());
        let yaml = with_tls_listen(&yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1"), &pki);
        let rig = Rig::start(&yaml).await;
        let mut uas = rig
            .gateway("uas", "uas_answer.xml", gw, &["-rtp_echo"])
            .await;
        let refused = b2bua::metrics::get().srtp_refused.get();
        let out = rig.softphone_call(&pki.ca, mediaenc).await;
        assert!(out.contains("Call established"), "{out}");
        assert!(out.contains("terminated"), "{out}");
        // Its own receive counter: audio came back to it.
        assert!(baresip::heard(&out) > 48_000, "{out}");
        assert_eq!(rig.wait("uas", &mut uas).await, 0, "the gateway's scenario");
        let gw_log = rig.log("uas");
        // The legs stay apart: our Via over UDP toward the gateway, and plain RTP there.
        assert!(!gw_log.contains("SIP/2.0/TLS"), "{gw_log}");
        assert!(
            !gw_log.contains("a=crypto") && !gw_log.contains("RTP/SAVP"),
            "{gw_log}"
        );
        if mediaenc.is_empty() {
            assert!(!out.contains("SRTP is Enabled"), "{out}");
        } else {
            assert!(
                out.contains("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)"),
                "{out}"
            );
            assert!(
                !out.contains("unprotect"),
                "every packet of ours opened: {out}"
            );
            assert_eq!(
                b2bua::metrics::get().srtp_refused.get(),
                refused,
                "every packet of the phone's opened"
            );
        }
        rig.billed_once("4085551234", &out).await;
        rig.stop().await;
    }
}

/// SRTP on both legs, each its own keys: a softphone (baresip) calling over TLS with SRTP,
/// and a carrier configured `srtp: true` (baresip again, answering on TLS and insisting on
/// SRTP). We decrypt each side's audio and encrypt it again for the other; both phones hear
/// the other and open every packet, and the call is billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_on_both_legs_is_decrypted_and_encrypted_again_for_the_other() {
    require_peer!(baresip::available(), "baresip (apt-get install baresip)");
    let certs_dir = tempfile::tempdir().unwrap();
    let pki = certs::write(certs_dir.path());
    let both = certs_dir.path().join("cert-and-key.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(&pki.cert).unwrap() + &std::fs::read_to_string(&pki.key).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Up for the whole call (its own clock starts now; it quits by itself after).
    let gw = baresip::Gateway::start(dir.path(), "5555233", &pki.ca, &both, "srtp-mand", 12).await;
    let yaml = yaml(&[("gw", gw.tls.port())], &one_route("gw"), "127.0.0.1").replacen(
        "channels: 10}",
        &format!(
            "channels: 10, transport: tls, srtp: true, tls: {{server_name: localhost, ca: \"{}\"}}}}",
            pki.ca.display()
        ),
        1,
    );
    let rig = Rig::start(&with_tls_listen(&yaml, &pki)).await;
    let refused = b2bua::metrics::get().srtp_refused.get();
    let out = rig.softphone_call(&pki.ca, "srtp-mand").await;
    let gw_out = gw.output().await;
    for (who, log) in [("caller", &out), ("gateway", &gw_out)] {
        assert!(log.contains("Call established"), "{who}: {log}");
        assert!(
            log.contains("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)"),
            "{who}: {log}"
        );
        assert!(
            !log.contains("unprotect"),
            "{who} opened every packet: {log}"
        );
        assert!(baresip::heard(log) > 48_000, "{who} heard audio: {log}");
    }
    assert_eq!(b2bua::metrics::get().srtp_refused.get(), refused);
    rig.billed_once("4085551234", &out).await;
    rig.stop().await;
}

/// A carrier reached over TLS: a real Kamailio (tls module, OpenSSL) in front of a SIPp
/// gateway. With its certificate checked against the test CA and `localhost`, the call, its
/// ACK and BYE cross one TLS connection and the call is billed; with a name the certificate
/// does not carry, the handshake fails, nothing reaches the carrier, and the call fails over
/// to the next gateway (plain UDP) and is billed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_over_tls_gets_the_call_and_a_wrong_certificate_name_fails_over() {
    require_sipp!();
    require_peer!(kamailio::available(), "Kamailio (apt-get install kamailio)");
    require_peer!(
        kamailio::Kamailio::has_tls(),
        "Kamailio's tls module (apt-get install kamailio-tls-modules)"
    );
    for (name, over_tls) in [("localhost", true), ("carrier.example", false)] {
        let (k_udp, k_tls, gw) = (free_port(), free_port(), free_port());
        let certs_dir = tempfile::tempdir().unwrap();
        let pki = certs::write(certs_dir.path());
        let gateways = format!(
            "gateways:\n  - {{name: tls-gw, address: \"127.0.0.1:{k_tls}\", transport: tls, channels: 10, \
tls: {{server_name: {name}, ca: \"{}\"}}}}\n  - {{name: udp-gw, address: \"127.0.0.1:{gw}\", channels: 10}}\n",
            pki.ca.display()
        );
        let base = yaml(&[], "", "127.0.0.1");
        let base = base.split("gateways:\n").next().unwrap().to_string();
        let yaml = with_tls_listen(
            &format!(
                "{base}{gateways}routes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: tls-gw}}, {{gateway: udp-gw}}]}}\n"
            ),
            &pki,
        );
        let rig = Rig::start(&yaml).await;
        let k =
            kamailio::Kamailio::tls_carrier(rig.dir.path(), k_udp, k_tls, gw, &pki.cert, &pki.key)
                .await;
        // Reached directly (after the failover) the gateway has no Record-Route to echo.
        let uas = if over_tls {
            behind_proxy(rig.dir.path(), "uas_answer.xml")
        } else {
            scenarios().join("uas_answer.xml")
        };
        rig.play(Scene {
            uas: uas.to_str().unwrap(),
            uas_args: &[],
            uac: &scenarios().join("uac_pinless.xml"),
            ani: "4085551234",
            user: "55512015555233",
            tcp: false,
            uac_args: &[],
            gateway: gw,
        })
        .await;
        let log = k.log();
        let seen: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split("carrier: ").nth(1))
            .filter(|l| !l.contains(&format!(":{gw} ")))
            .collect();
        if over_tls {
            let methods: Vec<&str> = seen.iter().map(|l| l.split(' ').next().unwrap()).collect();
            assert_eq!(methods, ["INVITE", "ACK", "BYE"], "{log}");
            assert!(seen.iter().all(|l| l.ends_with("over tls")), "{log}");
            // One connection: every request from the same source port.
            let sources: std::collections::HashSet<&str> =
                seen.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
            assert_eq!(sources.len(), 1, "{log}");
        } else {
            assert!(seen.is_empty(), "nothing passed a failed handshake: {log}");
        }
        rig.billed_once("4085551234", &log).await;
        drop(k);
        rig.stop().await;
    }
}

/// baresip as a PC-to-phone subscriber: it registers with digest through us, dials a number,
/// is challenged and authorized on its card, talks to a gateway that echoes its audio, and
/// the call is billed to the card; quitting, it unregisters. (Offered a SHA-256 challenge
/// beside MD5, this baresip fails to register at all: hence MD5 alone by default.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_and_calls_out_as_a_subscriber() {
    require_sipp!();
    require_peer!(baresip::available(), "baresip (apt-get install baresip)");
    let gw = free_port();
    let yaml = format!(
        "{}subscribers:\n  domains: [voip.example.com]\n",
        yaml(&[("gw", gw)], &one_route("gw"), "127.0.0.1")
    );
    let rig = Rig::start(&yaml).await;
    let account = rig.alice(None).await;
    let mut uas = rig
        .gateway("uas", "uas_answer.xml", gw, &["-rtp_echo"])
        .await;
    let certs_dir = tempfile::tempdir().unwrap();
    let pki = certs::write(certs_dir.path());
    let log = baresip::subscriber(
        rig.dir.path(),
        &pki.ca,
        "alice",
        "voip.example.com",
        "correcthorse1",
        rig.udp,
        "5555233",
        4,
    )
    .await;
    assert!(
        log.contains("Call established"),
        "{log}\n{}",
        rig.log("uas")
    );
    // Its own receive counter: the gateway's echo came back to it through us.
    assert!(baresip::heard(&log) > 48_000, "{log}");
    assert_eq!(rig.wait("uas", &mut uas).await, 0, "{}", rig.log("uas"));
    // It registered (our 200 listed its one binding), and unregistered as it quit.
    assert!(log.contains("200 OK () [1 binding]"), "{log}");
    let mut bound = 1;
    for _ in 0..20 {
        bound = rig
            .store
            .bindings(account.id, Utc::now())
            .await
            .unwrap()
            .len();
        if bound == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bound, 0, "unregistered: {log}");
    let recs = rig.first_records("000070").await;
    assert_eq!(recs.len(), 1, "billed to the card: {log}");
    assert_eq!(recs[0].destination, "5555233");
    assert!(recs[0].billed_seconds >= 1, "{:?}", recs[0]);
    rig.stop().await;
}

/// Phone-to-PC with a real softphone over TCP: baresip registers through us on a TCP
/// connection, and a carrier's call to the DID reaches it on that same connection (a client
/// behind NAT can be reached no other way), is answered, and carries audio both ways: the
/// carrier echoes baresip's tone back to it through us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registered_over_tcp_answers_a_call_to_its_did() {
    require_sipp!();
    require_peer!(baresip::available(), "baresip (apt-get install baresip)");
    let gw = free_port();
    let yaml = did_yaml(gw, "");
    let rig = Rig::start(&yaml).await;
    let account = rig.alice(None).await;
    let certs_dir = tempfile::tempdir().unwrap();
    let pki = certs::write(certs_dir.path());
    let phone = baresip::Gateway::answering(
        rig.dir.path(),
        &pki.ca,
        "alice",
        "voip.example.com",
        "correcthorse1",
        rig.tcp,
        true,
        10,
    );
    let mut bound = Vec::new();
    for _ in 0..50 {
        bound = rig.store.bindings(account.id, Utc::now()).await.unwrap();
        if !bound.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bound.len(), 1, "registered");
    assert!(bound[0].source.starts_with("tcp:"), "{:?}", bound[0]);
    let mut uac = rig.caller(
        "uac",
        &scenarios().join("uac_pinless.xml"),
        "4085551234",
        "5559000",
        false,
        &["-d", "5000", "-rtp_echo"],
    );
    assert_eq!(rig.wait("uac", &mut uac).await, 0, "{}", rig.log("uac"));
    let log = phone.output().await;
    assert!(log.contains("Call established"), "{log}");
    assert!(baresip::heard(&log) > 48_000, "its tone came back: {log}");
    rig.stop().await;
}
