//! The B2BUA against SIPp, as callers and as gateways, on 127.0.0.1.
//!
//! Each test starts the engine in-process on a fresh SQLite file with the demo data, starts a
//! SIPp gateway (UAS) and a SIPp caller (UAC) as real processes with scenarios from
//! `tests/sipp/`, and then checks both SIPp exit codes, what the gateway received, and the
//! money in the store. Without SIPp installed the tests say so and pass, unless
//! `B2BUA_REQUIRE_PEERS=1` (set by `.ci/run`), where a missing SIPp fails them.

use b2bua::config::Config;
use b2bua::engine::{self, Running};
use chrono::Utc;
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

/// A running B2BUA with its store, in a temporary directory that also holds the SIPp logs.
struct Rig {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    running: Option<Running>,
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
        let running = engine::start(cfg, store.clone()).await.unwrap();
        let udp = running.addr(b2bua::routing::Proto::Udp).unwrap();
        let tcp = running.addr(b2bua::routing::Proto::Tcp).unwrap();
        let ip = if udp.is_ipv6() { "::1" } else { "127.0.0.1" };
        Rig {
            dir,
            store,
            running: Some(running),
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
        cmd.args(["-mp", &free_port().to_string()]);
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
    rig.play(Scene {
        uas: "uas_answer.xml",
        uas_args: &[],
        uac: &scenarios().join("uac_pinless.xml"),
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &["-d", "1500"],
        gateway: gw,
    })
    .await;

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
    rig.play(Scene {
        uas: "uas_answer.xml",
        uas_args: &[],
        uac: &scenarios().join("uac_pinless.xml"),
        ani: "4085551234",
        user: "55512015555233",
        tcp: false,
        uac_args: &["-d", "200"],
        gateway: gw,
    })
    .await;
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
