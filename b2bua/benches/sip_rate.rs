//! SIPp rate ramp: short pinless calls through the whole B2BUA (authorization, the gateway leg,
//! settlement and call records included), at rising call rates.
//!
//! `cargo bench -p b2bua --bench sip_rate` (SIPp must be installed). For each rate it runs
//! SIPp as the caller for `B2BUA_BENCH_SECONDS` (default 10) and reports calls attempted,
//! failed, and the 50th and 99th percentile of INVITE → 100 Trying and INVITE → 200 OK, read
//! from SIPp's per-call response-time trace. Rates come from `B2BUA_BENCH_RATES` (default
//! `250,500,1000,1500,2000`); the database from `B2BUA_BENCH_DB` (default a temporary SQLite
//! file); the RTP port range from `B2BUA_BENCH_MEDIA_PORTS` (default `30000-39999`; a small one
//! such as `30000-30199` shows whether the port pool survives churn); `limits.store_queue` from
//! `B2BUA_BENCH_STORE_QUEUE` (default 1000, the daemon's), `limits.transactions` from
//! `B2BUA_BENCH_TRANSACTIONS` (default 100000, the daemon's). The gateway is SIPp's
//! built-in UAS, or with `B2BUA_BENCH_GATEWAY_AUTH=1` a carrier that challenges every INVITE
//! (`tests/sipp/uas_auth.xml`: 401, then our answer checked by SIPp's `verifyauth`), which
//! prices digest on the gateway leg: one more round trip and transaction per call. With
//! `B2BUA_BENCH_SUBSCRIBERS=N` (e.g. 1000) each rate also runs as softphone subscribers'
//! calls out, right after the card calls: N SIP accounts (`bench@dNNNNN.bench.example`, one
//! domain each, since Debian's SIPp cannot draw a digest username from `-inf`), each on its
//! own card, whose INVITEs are challenged 407 and sent again with credentials
//! (`tests/sipp/bench_subscriber_uac.xml`; its INVITE → 200 includes the challenge's round
//! trip, and its "100" column is the first INVITE → 407).

use b2bua::config::Config;
use b2bua::routing::Proto;
use chrono::Utc;
use rating::store::{NewAccount, NewSipAccount, Store, StoreConfig};
use rating::Money;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{counts, free_port, percentile, rtts};

const ACCOUNTS: usize = 20_000;

/// The benchmark's subscribers' user and password (their domains differ).
const SUB_USER: &str = "bench";
const SUB_PASSWORD: &str = "bench-secret-1";

fn sub_domain(i: usize) -> String {
    format!("d{i:05}.bench.example")
}

/// What one step measured.
struct Step {
    attempted: u64,
    failed: u64,
    t100: Vec<f64>,
    t200: Vec<f64>,
    clean: bool,
}

/// SIPp calling `target` with `scenario` at `rate` for `seconds`, its callers from `inf`.
fn step(
    dir: &Path,
    scenario: &Path,
    inf: &Path,
    args: &[&str],
    target: std::net::SocketAddr,
    rate: u32,
    seconds: u32,
) -> Step {
    let total = rate * seconds;
    let name = scenario.file_stem().unwrap().to_string_lossy().into_owned();
    let stat = dir.join(format!("{name}_r{rate}_stat.csv"));
    let mut child = Command::new("sipp")
        .arg("-sf")
        .arg(scenario)
        .arg("-inf")
        .arg(inf)
        .args(args)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
        ])
        .args([
            "-r",
            &rate.to_string(),
            "-m",
            &total.to_string(),
            "-l",
            &(rate * 4).to_string(),
            "-d",
            "0",
        ])
        .args([
            "-nostdin",
            "-timeout",
            &format!("{}s", seconds * 3 + 30),
            "-timeout_error",
        ])
        .args(["-trace_stat", "-stf"])
        .arg(&stat)
        .args(["-trace_rtt", "-rtt_freq", "1"])
        .arg(target.to_string())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIPp names the response-time trace after the scenario and its process id.
    let rtt = dir.join(format!("{name}_{}_rtt.csv", child.id()));
    let status = child.wait().unwrap();
    let (ok, failed) = counts(&stat);
    let (t100, t200) = rtts(&rtt);
    Step {
        attempted: ok + failed,
        failed,
        t100,
        t200,
        clean: status.success(),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !common::have_sipp() {
        eprintln!("sip_rate: SIPp is not installed (apt-get install sip-tester); nothing measured");
        return;
    }
    let rates: Vec<u32> = std::env::var("B2BUA_BENCH_RATES")
        .unwrap_or_else(|_| "250,500,1000,1500,2000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let seconds: u32 = std::env::var("B2BUA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("B2BUA_BENCH_DB")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let scfg = StoreConfig {
        max_connections: 16,
        ..StoreConfig::default()
    };
    let store = Arc::new(Store::open(&db, scfg).await.expect("store opens"));
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let cards: Vec<NewAccount> = (0..ACCOUNTS)
        .map(|i| {
            let mut n = NewAccount::new(
                &format!("40{:08}", i),
                None,
                Money::parse("1000", false).unwrap(),
            );
            n.pinless = true;
            n
        })
        .collect();
    if store.account("4000000000").await.is_err() {
        store.create_accounts(&cards, Utc::now()).await.unwrap();
    }
    let inf = dir.path().join("accounts.csv");
    let mut f = std::fs::File::create(&inf).unwrap();
    writeln!(f, "SEQUENTIAL").unwrap();
    for c in &cards {
        writeln!(f, "{};", c.account).unwrap();
    }
    drop(f);
    let subscribers: usize = std::env::var("B2BUA_BENCH_SUBSCRIBERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
        .min(ACCOUNTS);
    for (i, c) in cards.iter().enumerate().take(subscribers) {
        if store
            .sip_account(SUB_USER, &sub_domain(i))
            .await
            .unwrap()
            .is_some()
        {
            continue;
        }
        let n = NewSipAccount {
            username: SUB_USER.into(),
            domain: sub_domain(i),
            password: SUB_PASSWORD.into(),
            card: c.account.clone(),
            caller_id: None,
            max_calls: 1,
        };
        store
            .create_sip_account(&n, "bench", Utc::now())
            .await
            .unwrap();
    }
    let subs_inf = dir.path().join("subscribers.csv");
    let mut f = std::fs::File::create(&subs_inf).unwrap();
    writeln!(f, "SEQUENTIAL").unwrap();
    for i in 0..subscribers {
        writeln!(f, "{};", sub_domain(i)).unwrap();
    }
    drop(f);
    let subscriber_rules = if subscribers > 0 {
        let domains: Vec<String> = (0..subscribers).map(sub_domain).collect();
        format!(
            "subscribers:\n  domains: [{}]\n  nonces_remembered: 1000000\n",
            domains.join(", ")
        )
    } else {
        String::new()
    };

    let gw = free_port();
    // A small range shows whether the port pool survives churn (the calls here are short).
    let ports = std::env::var("B2BUA_BENCH_MEDIA_PORTS").unwrap_or_else(|_| "30000-39999".into());
    let queue = std::env::var("B2BUA_BENCH_STORE_QUEUE").unwrap_or_else(|_| "1000".into());
    let transactions =
        std::env::var("B2BUA_BENCH_TRANSACTIONS").unwrap_or_else(|_| "100000".into());
    let digest = std::env::var("B2BUA_BENCH_GATEWAY_AUTH").is_ok_and(|v| v == "1");
    let auth = if digest {
        ", auth: {username: acme, password: s3cret, realm: carrier.example}"
    } else {
        ""
    };
    let yaml = format!(
        "sip:\n  listen: [\"udp:127.0.0.1:0\"]\ntrusted_peers: [127.0.0.1]\n\
access_numbers:\n  - {{number: \"5551201\", pinless: true}}\n\
gateways:\n  - {{name: gw, address: \"127.0.0.1:{gw}\", channels: 100000{auth}}}\n\
routes:\n  - {{name: all, patterns: [T], gateways: [{{gateway: gw}}]}}\n\
media:\n  ports: {ports}\nlimits:\n  store_queue: {queue}\n  transactions: {transactions}\n\
{subscriber_rules}"
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "bench").unwrap(), store.clone())
        .await
        .unwrap();
    let sip = running.addr(Proto::Udp).unwrap();
    let carrier = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp/uas_auth.xml");
    let mut uas = Command::new("sipp");
    if digest {
        uas.arg("-sf").arg(&carrier);
    } else {
        uas.args(["-sn", "uas"]);
    }
    let mut uas = uas
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &gw.to_string(),
            "-nostdin",
            "-mp",
            &free_port().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp/bench_uac.xml");
    println!(
        "short pinless calls through the B2BUA ({} s per step, SQLite unless B2BUA_BENCH_DB{})",
        seconds,
        if digest {
            "; the gateway challenges every INVITE"
        } else {
            ""
        }
    );
    println!(
        "{:>6} {:>8} {:>7} {:>8} {:>12} {:>12} {:>12} {:>12} {:>7} {:>7}",
        "rate",
        "calls",
        "failed",
        "fail %",
        "100 p50 ms",
        "100 p99 ms",
        "200 p50 ms",
        "200 p99 ms",
        "shed",
        "code 8"
    );
    if subscribers > 0 {
        println!("  (subs: {subscribers} subscribers challenged 407; their \"100\" is INVITE → 407, their \"200\" counts from the first INVITE)");
    }
    // Calls shed at the door (503, the store queue full) and calls refused with code 8 (the
    // store timed out as if it were gone), per step.
    let m = b2bua::metrics::get();
    let shed = || {
        m.limit_hits
            .get_or_create(&b2bua::metrics::LimitLabels {
                limit: "store_queue",
            })
            .get()
    };
    let code8 = || {
        m.authorizations
            .get_or_create(&b2bua::metrics::AuthLabels {
                source: "sip",
                code: 8,
            })
            .get()
    };
    let subs_scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp/bench_subscriber_uac.xml");
    for rate in rates {
        let mut runs = vec![(
            "cards",
            scenario.clone(),
            inf.clone(),
            vec!["-s", "55512015555233"],
        )];
        if subscribers > 0 {
            let args = vec!["-s", "5555233", "-au", SUB_USER, "-ap", SUB_PASSWORD];
            runs.push(("subs", subs_scenario.clone(), subs_inf.clone(), args));
        }
        for (who, scenario, inf, args) in runs {
            let (shed0, code80) = (shed(), code8());
            let mut r = step(dir.path(), &scenario, &inf, &args, sip, rate, seconds);
            println!(
                "{:>6} {:>8} {:>7} {:>7.3}% {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>7} {:>7}  {who}{}",
                rate,
                r.attempted,
                r.failed,
                if r.attempted > 0 {
                    r.failed as f64 * 100.0 / r.attempted as f64
                } else {
                    0.0
                },
                percentile(&mut r.t100, 0.50),
                percentile(&mut r.t100, 0.99),
                percentile(&mut r.t200, 0.50),
                percentile(&mut r.t200, 0.99),
                shed() - shed0,
                code8() - code80,
                if r.clean {
                    ""
                } else {
                    "  (SIPp reported failures)"
                }
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let _ = uas.kill();
    let _ = uas.wait();
    // Every limit that bit during the run, not only the store queue.
    for line in m.render().lines() {
        if line.starts_with("b2bua_limit_hits_total{") {
            println!("  {line}");
        }
    }
    let stats = running.stop().await;
    let report = store.ledger_check().await.unwrap();
    println!(
        "engine: {} calls, {} answered; ledger check: {} problems",
        stats.calls,
        stats.answered,
        report.problems.len()
    );
    store.close().await;
}
