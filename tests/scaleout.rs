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
//! Needs `kamailio`, `sipp`, `freeradius` and `B2BUA_TEST_PG`; without them the test says so and passes,
//! unless `B2BUA_REQUIRE_PEERS=1` (set by `.ci/run`).

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

fn node_yaml(db: &str, node: &str, port: u16, gw: u16, rtp: u16, radius: u16) -> String {
    format!(
        "database: \"{db}\"\nnode_id: {node}\n\
sip:\n  listen: [\"udp:127.0.0.1:{port}\"]\n  t1_ms: 200\n\
trusted_peers: [127.0.0.1]\n\
access_numbers:\n  - {{number: \"5551201\", pinless: true}}\n\
calls: {{setup_timeout_ms: 700, ring_timeout_s: 20, hold_chunk_s: 4, hold_grace_s: 3}}\n\
media: {{bind: 127.0.0.1, ports: {rtp}-{}}}\n\
gateways:\n  - {{name: gw, address: \"127.0.0.1:{gw}\", channels: 50}}\n\
routes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: gw}}]}}\n\
radius:\n  accounting: {{server: \"127.0.0.1:{radius}\", secret: acct-s3cret, retry_first_ms: 200, retry_max_ms: 800}}\n",
        rtp + 999
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
    let required = std::env::var_os("B2BUA_REQUIRE_PEERS").is_some();
    let missing: Vec<&str> = [
        ("kamailio", have("kamailio", "-v")),
        ("sipp", have("sipp", "-v")),
        ("freeradius", have("freeradius", "-v")),
        ("B2BUA_TEST_PG", std::env::var("B2BUA_TEST_PG").is_ok()),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(n, _)| n)
    .collect();
    if !missing.is_empty() {
        assert!(
            !required,
            "missing {missing:?} and B2BUA_REQUIRE_PEERS is set"
        );
        eprintln!("skipped: missing {missing:?}");
        return;
    }
    // A fresh PostgreSQL schema for this test only.
    let base = std::env::var("B2BUA_TEST_PG").unwrap();
    let schema = format!("scale_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let db = format!("{base}{sep}options=-c%20search_path%3D{schema}");

    let store = Store::open(
        &db,
        StoreConfig {
            node_id: "test".into(),
            ..StoreConfig::default()
        },
    )
    .await
    .unwrap();
    rating::demo::seed(&store, Utc::now()).await.unwrap();
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
        let cfg = d.join(format!("{name}.yaml"));
        std::fs::write(&cfg, node_yaml(&db, name, port, gw, rtp, rad_port)).unwrap();
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
