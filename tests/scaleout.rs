//! Scale-out: two `b2bua serve` processes on one PostgreSQL behind a real Kamailio running the
//! dispatcher configuration shipped in `b2bua/dist/kamailio/`, with SIPp as callers and
//! gateway. An access number written to the database after the nodes started is served by
//! both. One node is killed (SIGKILL, as a crash) in the middle of its calls; then new calls
//! must still be served (by the other node), the dead node's holds must be settled by the
//! survivor's sweeper, and the card must not be overspent.
//!
//! RADIUS accounting goes to a real FreeRADIUS, whose detail file must hold a Stop for every
//! answered call, the crashed node's included (the sweeper writes those).
//!
//! A softphone subscriber registers through the same Kamailio (which adds a Path): a call to
//! its DID that enters either node rings it through Kamailio, and its own calls out, whose
//! challenge and answer may land on different nodes, are placed and billed.
//!
//! Needs `kamailio`, `sipp`, `freeradius` and `B2BUA_TEST_PG`; without them a test says so and
//! passes, unless `B2BUA_REQUIRE_PEERS=1` (set by `.ci/run`).

#[path = "support/alice.rs"]
mod alice;
mod freeradius;

use chrono::Utc;
use rating::store::{AccessRow, NewAccount, RecordFilter, Store, StoreConfig};
use rating::Money;
use sqlx::Connection;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CARD: &str = "4085550777";

/// A child process killed when dropped, so a failed assertion leaves nothing running.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole process group: Kamailio's children outlive a killed main process.
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Proc {
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir(dir)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        Proc { name, child }
    }

    /// Waits (up to `limit`) for the exit code.
    async fn wait(&mut self, limit: Duration) -> i32 {
        let end = std::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            if std::time::Instant::now() > end {
                panic!("{} did not finish within {limit:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signals the process and everything it started (its own process group).
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .status();
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped Kamailio configuration with its listen address and node list moved to the test's.
fn kamailio_cfg(dir: &Path, port: u16, nodes: &[u16]) -> PathBuf {
    let shipped = repo().join("b2bua/dist/kamailio/kamailio.cfg");
    let text = std::fs::read_to_string(shipped).unwrap();
    let list = dir.join("dispatcher.list");
    let nodes: String = nodes
        .iter()
        .map(|p| format!("1 sip:127.0.0.1:{p} 0 0\n"))
        .collect();
    std::fs::write(&list, nodes).unwrap();
    let listen = "listen=udp:127.0.0.1:5070";
    let list_param = "\"/etc/kamailio/dispatcher.list\"";
    assert!(text.contains(listen) && text.contains(list_param));
    let text = text
        .replace(listen, &format!("listen=udp:127.0.0.1:{port}"))
        .replace(list_param, &format!("\"{}\"", list.display()));
    let cfg = dir.join("kamailio.cfg");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// A node's configuration, `tail` (more sections) appended.
fn node_yaml(db: &str, node: &str, port: u16, gw: u16, rtp: u16, tail: &str) -> String {
    format!(
        "database: \"{db}\"\nnode_id: {node}\n\
sip:\n  listen: [\"udp:127.0.0.1:{port}\"]\n  t1_ms: 200\n\
trusted_peers: [127.0.0.1]\n\
access_numbers:\n  - {{number: \"5551201\", pinless: true}}\n\
calls: {{setup_timeout_ms: 700, ring_timeout_s: 20, hold_chunk_s: 4, hold_grace_s: 3}}\n\
media: {{bind: 127.0.0.1, ports: {rtp}-{}}}\n\
gateways:\n  - {{name: gw, address: \"127.0.0.1:{gw}\", channels: 50}}\n\
routes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: gw}}]}}\n{tail}",
        rtp + 999
    )
}

/// RADIUS accounting to the test's FreeRADIUS on `port`.
fn radius_yaml(port: u16) -> String {
    format!(
        "radius:\n  accounting: {{server: \"127.0.0.1:{port}\", secret: acct-s3cret, retry_first_ms: 200, retry_max_ms: 800}}\n"
    )
}

async fn started(dir: &Path, name: &str) {
    for _ in 0..200 {
        let out = std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default();
        if out.contains("press Ctrl-C") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap_or_default();
    panic!("{name} did not start: {err}");
}

/// Everything the processes wrote, for a failed assertion's message.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "err" || e == "errors" || e == "out")
        })
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let tail: String = text
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        out.push_str(&format!("--- {} ---\n{tail}\n", f.display()));
    }
    out
}

fn sipp(dir: &Path, name: &str, scenario: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sipp");
    cmd.arg("-sf")
        .arg(repo().join("tests/sipp").join(scenario))
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
        ])
        .args(["-mp", &free_port().to_string()])
        .args(["-trace_err", "-error_file"])
        .arg(dir.join(format!("{name}.errors")))
        .args(args);
    cmd
}

/// SIPp placing `calls` pinless calls on the card to `dial` through the proxy, `limit` at
/// once, `rate` new ones a second, each lasting `ms`.
#[allow(clippy::too_many_arguments)]
fn callers(
    d: &Path,
    name: &'static str,
    proxy: &str,
    dial: &str,
    calls: u32,
    limit: u32,
    rate: u32,
    ms: u32,
) -> Proc {
    let numbers = [calls, limit, rate, ms].map(|n| n.to_string());
    let port = free_port().to_string();
    let args = [
        "-p",
        &port,
        "-key",
        "ani",
        CARD,
        "-s",
        dial,
        "-m",
        &numbers[0],
        "-l",
        &numbers[1],
        "-r",
        &numbers[2],
        "-d",
        &numbers[3],
        proxy,
    ];
    Proc::spawn(name, &mut sipp(d, name, "uac_proxied.xml", &args), d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_behind_kamailio_survive_one_crashing_mid_call_without_overspend() {
    if !peers_present(&[
        ("kamailio", have("kamailio", "-v")),
        ("sipp", have("sipp", "-v")),
        ("freeradius", have("freeradius", "-v")),
        ("B2BUA_TEST_PG", std::env::var("B2BUA_TEST_PG").is_ok()),
    ]) {
        return;
    }
    let (mut conn, schema, db) = fresh_schema("scale").await;

    let store = demo_store(&db).await;
    let mut card = NewAccount::new(CARD, None, Money::parse("2.00", false).unwrap());
    card.pinless = true;
    card.max_calls = 8;
    store.create_account(&card, Utc::now()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (gw, pa, pb, kport) = (free_port(), free_port(), free_port(), free_port());
    // The operator's RADIUS billing, which must hear of every call's end, crash or not.
    let rad_port = free_port();
    let mut radius = freeradius::FreeRadius::configure(&d.join("raddb"), rad_port, "acct-s3cret");
    radius.start().await;
    let mut _gateway = Proc::spawn(
        "gateway",
        &mut sipp(d, "gateway", "uas_answer.xml", &["-p", &gw.to_string()]),
        d,
    );
    let node = |name: &'static str, port: u16, rtp: u16| {
        serve(
            d,
            name,
            &node_yaml(&db, name, port, gw, rtp, &radius_yaml(rad_port)),
        )
    };
    let node_a = node("node-a", pa, 41000);
    let mut node_b = node("node-b", pb, 43000);
    started(d, "node-a").await;
    started(d, "node-b").await;
    // An access number assigned after both nodes started (as an admin would through either
    // node's API): both must pick it up from the database, since the first batch lands on both.
    store
        .put_access_number(
            &AccessRow {
                number: "5551301".into(),
                tenant: "default".into(),
                flow: None,
                languages: vec!["en".into()],
                trust_ani: true,
                trusted_only: true,
                pinless: true,
                all_tenants: false,
                subscriber: None,
                updated_at: Utc::now(),
                updated_by: "scaleout-test".into(),
            },
            None,
        )
        .await
        .unwrap();
    let kcfg = kamailio_cfg(d, kport, &[pa, pb]);
    let _kamailio = Proc::spawn(
        "kamailio",
        Command::new("kamailio")
            .arg("-f")
            .arg(&kcfg)
            .args(["-DD", "-E", "-m", "64", "-M", "8", "-w"])
            .arg(d),
        d,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let proxy = format!("127.0.0.1:{kport}");

    // Four 8-second calls, round robin over the two nodes; node A is killed two seconds in.
    for name in ["node-a", "node-b"] {
        let err = std::fs::read_to_string(d.join(format!("{name}.err"))).unwrap();
        assert!(err.contains("access numbers changed"), "{name}: {err}");
    }
    let mut first = callers(d, "batch1", &proxy, "55513015555233", 4, 4, 20, 8000);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held_before = store.reservations(CARD).await.unwrap();
    assert_eq!(
        held_before.len(),
        4,
        "four calls up: {held_before:?}\n{}",
        logs(d)
    );
    let on_a = held_before.iter().filter(|r| r.node == "node-a").count();
    assert!(
        (1..=3).contains(&on_a),
        "both nodes took calls: {held_before:?}"
    );
    node_a.signal("-KILL");
    drop(node_a);
    // The calls on node B end normally; node A's never get their BYE answered.
    let code = first.wait(Duration::from_secs(60)).await;
    assert_ne!(code, 0, "node A's calls failed");

    // New calls are all served, by node B.
    let mut second = callers(d, "batch2", &proxy, "55512015555233", 4, 2, 5, 1000);
    let code = second.wait(Duration::from_secs(60)).await;
    assert_eq!(
        code,
        0,
        "every call after the crash is served:\n{}",
        logs(d)
    );

    // Node B's sweeper settles what node A held, charged up to node A's last heartbeat.
    let card_records = || async {
        store
            .call_records(&RecordFilter {
                account: Some(CARD.into()),
                session_id: None,
                limit: Some(100),
            })
            .await
            .unwrap()
    };
    let mut swept = Vec::new();
    for _ in 0..150 {
        let held = store.reservations(CARD).await.unwrap();
        let records = card_records().await;
        swept = records
            .iter()
            .filter(|r| r.disconnect_cause.contains("swept: owner node-a"))
            .cloned()
            .collect();
        if held.is_empty() && swept.len() == on_a {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        swept.len(),
        on_a,
        "node A's calls were settled by the sweeper\n{}",
        logs(d)
    );
    for r in &swept {
        assert!(
            (1..=8).contains(&r.billed_seconds),
            "charged for the time node A was alive, not the full grant: {r:?}"
        );
    }
    assert!(store.reservations(CARD).await.unwrap().is_empty());
    let records = card_records().await;
    let answered: Vec<_> = records.iter().filter(|r| r.connect_at.is_some()).collect();
    assert_eq!(answered.len(), 8, "four calls per batch: {records:?}");

    // No overspend: the balance is the opening amount less exactly what the records cost, it
    // is not negative, and every balance agrees with its ledger.
    let a = store.account(CARD).await.unwrap();
    let cost = records
        .iter()
        .try_fold(Money::ZERO, |sum, r| sum.checked_add(r.cost))
        .unwrap();
    assert_eq!(
        a.balance.checked_add(cost),
        Some(Money::parse("2.00", false).unwrap())
    );
    assert!(a.balance.is_positive(), "{}", a.balance);
    assert_eq!(a.reserved, Money::ZERO);
    assert_eq!(a.active_calls, 0);
    let check = store.ledger_check().await.unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);

    // RADIUS billing heard every answered call end, node A's too: node B's sweeper wrote the
    // Stop records node A never did, for the seconds the card was charged.
    let stop_of = |conf: &str| {
        radius.records().into_iter().find(|r| {
            freeradius::attr_or(r, "Acct-Status-Type") == Some("Stop")
                && freeradius::attr_or(r, "h323-call-origin") == Some("originate")
                && freeradius::attr_or(r, "Acct-Session-Id") == Some(conf)
        })
    };
    for _ in 0..150 {
        if answered.iter().all(|r| stop_of(&r.conf_id).is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in &answered {
        let stop = stop_of(&r.conf_id)
            .unwrap_or_else(|| panic!("no Stop for {r:?}\n{:?}\n{}", radius.records(), logs(d)));
        assert_eq!(
            freeradius::attr(&stop, "Acct-Session-Time"),
            r.billed_seconds.to_string(),
            "{stop:?} {r:?}"
        );
        let swept = r.disconnect_cause.contains("swept");
        let node = if swept { "node-a" } else { "node-b" };
        assert_eq!(freeradius::attr(&stop, "h323-gw-id"), node, "{stop:?}");
    }
    radius.kill().await;

    node_b.signal("-TERM");
    assert_eq!(node_b.wait(Duration::from_secs(20)).await, 0);
    let out = std::fs::read_to_string(d.join("node-b.out")).unwrap();
    assert!(out.contains("stopped after"), "{out}");
    store.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Whether every peer a test needs is here; without one the test is skipped, unless
/// `B2BUA_REQUIRE_PEERS` says a missing peer is a failure.
fn peers_present(need: &[(&str, bool)]) -> bool {
    let missing: Vec<&str> = need.iter().filter(|(_, ok)| !ok).map(|(n, _)| *n).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("B2BUA_REQUIRE_PEERS").is_none(),
        "missing {missing:?} and B2BUA_REQUIRE_PEERS is set"
    );
    eprintln!("skipped: missing {missing:?}");
    false
}

/// A PostgreSQL schema of the test's own: the connection to drop it with, its name, and the
/// URL of the database seen through it.
async fn fresh_schema(prefix: &str) -> (sqlx::PgConnection, String, String) {
    let base = std::env::var("B2BUA_TEST_PG").unwrap();
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let db = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    (conn, schema, db)
}

/// The test's own view of the database (node `test`), with the demo's rates and cards.
async fn demo_store(db: &str) -> Store {
    let store = Store::open(
        db,
        StoreConfig {
            node_id: "test".into(),
            ..StoreConfig::default()
        },
    )
    .await
    .unwrap();
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    store
}

/// `b2bua serve` with the configuration `yaml`, named `name` (its log files too).
fn serve(d: &Path, name: &'static str, yaml: &str) -> Proc {
    let cfg = d.join(format!("{name}.yaml"));
    std::fs::write(&cfg, yaml).unwrap();
    Proc::spawn(
        name,
        Command::new(env!("CARGO_BIN_EXE_b2bua"))
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env_remove("B2BUA_DB")
            .env("RUST_LOG", "info"),
        d,
    )
}

const ALICE_CARD: &str = "4085550999";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_registered_through_kamailio_is_rung_from_either_node_and_calls_out() {
    if !peers_present(&[
        ("kamailio", have("kamailio", "-v")),
        ("sipp", have("sipp", "-v")),
        ("B2BUA_TEST_PG", std::env::var("B2BUA_TEST_PG").is_ok()),
    ]) {
        return;
    }
    let (mut conn, schema, db) = fresh_schema("subs").await;
    let store = demo_store(&db).await;
    let mut card = NewAccount::new(ALICE_CARD, None, Money::parse("5.00", false).unwrap());
    card.pinless = true;
    store.create_account(&card, Utc::now()).await.unwrap();
    let alice_account = rating::store::NewSipAccount {
        username: "alice".into(),
        domain: "voip.example.com".into(),
        password: "correcthorse1".into(),
        card: ALICE_CARD.into(),
        caller_id: None,
        // One call at once, counted across both nodes.
        max_calls: 1,
    };
    let account = store
        .create_sip_account(&alice_account, "test", Utc::now())
        .await
        .unwrap();
    // The DID that rings her, as an admin would assign it.
    store
        .put_access_number(
            &AccessRow {
                number: "5559000".into(),
                tenant: "default".into(),
                flow: None,
                languages: vec!["en".into()],
                trust_ani: false,
                trusted_only: true,
                pinless: false,
                all_tenants: false,
                subscriber: Some("alice@voip.example.com".into()),
                updated_at: Utc::now(),
                updated_by: "scaleout-test".into(),
            },
            None,
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (gw, pa, pb, kport) = (free_port(), free_port(), free_port(), free_port());
    let _gateway = Proc::spawn(
        "gateway",
        &mut sipp(d, "gateway", "uas_answer.xml", &["-p", &gw.to_string()]),
        d,
    );
    // Both nodes seal nonces with one secret: a challenge one issues, the other checks.
    let subscribers = "subscribers:\n  domains: [voip.example.com]\n  nonce_secret: \"one-secret-for-both-nodes\"\n";
    let mut node_a = serve(
        d,
        "node-a",
        &node_yaml(&db, "node-a", pa, gw, 45000, subscribers),
    );
    let mut node_b = serve(
        d,
        "node-b",
        &node_yaml(&db, "node-b", pb, gw, 47000, subscribers),
    );
    started(d, "node-a").await;
    started(d, "node-b").await;
    let kcfg = kamailio_cfg(d, kport, &[pa, pb]);
    let _kamailio = Proc::spawn(
        "kamailio",
        Command::new("kamailio")
            .arg("-f")
            .arg(&kcfg)
            .args(["-DD", "-E", "-m", "64", "-M", "8", "-w"])
            .arg(d),
        d,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{kport}").parse().unwrap();

    // She registers with Kamailio, which hands the REGISTER to one node with a Path.
    let alice = alice::Alice::new(proxy).await;
    alice.register("reg-through-kamailio").await;
    let bound = store.bindings(account.id, Utc::now()).await.unwrap();
    assert_eq!(bound.len(), 1, "{bound:?}\n{}", logs(d));
    let b = &bound[0];
    assert_eq!(b.contact, format!("sip:alice@{}", alice.me));
    assert_eq!(b.source, format!("udp:{proxy}"), "it came from Kamailio");
    assert_eq!(b.path.len(), 1, "{b:?}");
    assert!(
        b.path[0].starts_with(&format!("<sip:{proxy};lr")) && b.path[0].contains("received="),
        "Kamailio's Path, with where she is: {b:?}"
    );
    let registrar_node = b.node.clone();
    assert!(["node-a", "node-b"].contains(&registrar_node.as_str()));

    // A carrier's call to her DID, entering each node in turn (one of them not the node
    // she registered with): it rings her through Kamailio. The first the carrier ends, the
    // second she does.
    for (node, port, she_hangs_up) in [("node-a", pa, false), ("node-b", pb, true)] {
        let scenario = if she_hangs_up {
            "uac_wait_bye.xml"
        } else {
            "uac_pinless.xml"
        };
        let name: &'static str = if she_hangs_up {
            "carrier-b"
        } else {
            "carrier-a"
        };
        let node_addr = format!("127.0.0.1:{port}");
        let args = [
            "-p",
            &free_port().to_string(),
            "-key",
            "ani",
            "4085551234",
            "-s",
            "5559000",
            "-m",
            "1",
            "-d",
            if she_hangs_up { "1000" } else { "2500" },
            &node_addr,
        ];
        let mut carrier = Proc::spawn(name, &mut sipp(d, name, scenario, &args), d);
        let invite = alice.next_request("INVITE").await;
        assert!(
            invite.contains(&format!("Via: SIP/2.0/UDP {proxy}"))
                && invite.contains(&format!("Record-Route: <sip:{proxy}")),
            "{node}'s call came through Kamailio, which stays in the dialog:\n{invite}"
        );
        assert!(
            invite.contains(&format!("Via: SIP/2.0/UDP {node_addr}")),
            "from {node}:\n{invite}"
        );
        assert!(
            !invite.contains("\r\nRoute:"),
            "Kamailio took its Route off"
        );
        alice.answer(&invite, 200, "OK", true).await;
        alice.next_request("ACK").await;
        if !she_hangs_up {
            // Her one call at once is up on node A: node B turns a second one away.
            let busy = carrier_invite(pb, "5559000").await;
            assert!(
                busy.starts_with("SIP/2.0 486 "),
                "her calls at once counted across the nodes: {busy}"
            );
        }
        if she_hangs_up {
            tokio::time::sleep(Duration::from_millis(500)).await;
            alice.hang_up(&invite).await;
            let answer = alice::next_answer(&alice.sock).await;
            assert!(answer.starts_with("SIP/2.0 200 "), "{node}: {answer}");
        } else {
            let bye = alice
                .next_request_within("BYE", Duration::from_secs(10))
                .await;
            alice.answer(&bye, 200, "OK", false).await;
        }
        let code = carrier.wait(Duration::from_secs(30)).await;
        assert_eq!(code, 0, "{node}'s call to her:\n{}", logs(d));
    }

    // Her call's place is given back once it ends (a moment after its BYE).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Her own call out, through Kamailio: challenged by one node, answered on whichever
    // node the dispatcher picks next (both check the nonce), billed to her card.
    alice.authenticated("out-through-kamailio", "5555233").await;
    let ok = loop {
        let a = alice::next_answer(&alice.sock).await;
        if !a.starts_with("SIP/2.0 18") {
            break a;
        }
    };
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}\n{}", logs(d));
    alice.ack_ok("out-through-kamailio", &ok).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    alice.bye_ok("out-through-kamailio", &ok).await;
    let bye_ok = alice::next_answer(&alice.sock).await;
    assert!(bye_ok.starts_with("SIP/2.0 200 "), "{bye_ok}");
    let mut out = None;
    for _ in 0..100 {
        let records = store
            .call_records(&RecordFilter {
                account: Some(ALICE_CARD.into()),
                session_id: None,
                limit: Some(10),
            })
            .await
            .unwrap();
        out = records
            .into_iter()
            .find(|r| r.destination == "5555233" && r.disconnect_at.is_some());
        if out.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = out.unwrap_or_else(|| panic!("her call out was recorded\n{}", logs(d)));
    assert!(
        out.connect_at.is_some() && out.billed_seconds >= 1,
        "{out:?}"
    );
    assert!(out.cost.is_positive(), "{out:?}");

    // Only the nodes may send through Kamailio by a Route of their own making.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = stranger.local_addr().unwrap();
    let forged = format!(
        "INVITE sip:bob@127.0.0.1:9 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKforged\r\n\
Route: <sip:{proxy};lr>\r\nFrom: <sip:x@example.net>;tag=f\r\nTo: <sip:bob@127.0.0.1>\r\n\
Call-ID: forged\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    stranger.send_to(forged.as_bytes(), proxy).await.unwrap();
    let refused = alice::next_answer(&stranger).await;
    assert!(refused.starts_with("SIP/2.0 403 "), "{refused}");

    assert!(store.reservations(ALICE_CARD).await.unwrap().is_empty());
    let check = store.ledger_check().await.unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    for node in [&mut node_a, &mut node_b] {
        node.signal("-TERM");
        assert_eq!(node.wait(Duration::from_secs(20)).await, 0);
    }
    store.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// A carrier's INVITE to `number` on the node at `port`, from a raw socket (a trusted peer):
/// its first answer that is not 100, ACKed if final and not a 2xx.
async fn carrier_invite(port: u16, number: &str) -> String {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let head = format!(
        "Via: SIP/2.0/UDP {me};branch=z9hG4bKbusy1\r\nFrom: <sip:4085551234@carrier.example>;tag=c1\r\n\
To: <sip:{number}@127.0.0.1>"
    );
    let invite = format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n{head}\r\nCall-ID: busy-{me}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:c@{me}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let node = format!("127.0.0.1:{port}");
    sock.send_to(invite.as_bytes(), &node).await.unwrap();
    let answer = alice::next_answer(&sock).await;
    let to = answer
        .lines()
        .find(|l| l.starts_with("To: "))
        .unwrap_or("To: <sip:x@127.0.0.1>");
    let ack = format!(
        "ACK sip:{number}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbusy1\r\n\
From: <sip:4085551234@carrier.example>;tag=c1\r\n{to}\r\nCall-ID: busy-{me}\r\nCSeq: 1 ACK\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(ack.as_bytes(), &node).await.unwrap();
    answer
}
