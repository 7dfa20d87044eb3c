//! SIPp registration ramp: softphone subscribers registering with digest through the whole
//! registrar (the 401, the stateless nonce, the replay check, the account read, the binding
//! written to the shared database, the 200 listing it), at rising rates, beside the same SIPp
//! caller against a SIPp "registrar" that checks and keeps nothing, in the same run.
//!
//! `cargo bench -p b2bua --bench register_rate` (SIPp must be installed). Each rate runs for
//! `B2BUA_BENCH_SECONDS` (default 10); rates come from `B2BUA_BENCH_RATES` (default
//! `500,1000,2000,3000`), the database from `B2BUA_BENCH_DB` (default a temporary SQLite
//! file), the number of subscribers (each registering again and again, its binding refreshed)
//! from `B2BUA_BENCH_USERS` (default 1000). Debian's SIPp cannot draw a call's digest username
//! from its `-inf` file, so the subscribers are `bench@dNNNNN.bench.example`, one domain each. A step reports registrations attempted and failed
//! and the 50th and 99th percentile of first REGISTER → final 200 (two round trips).

use b2bua::config::Config;
use b2bua::routing::Proto;
use chrono::Utc;
use rating::store::{NewSipAccount, Store, StoreConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{counts, free_port, percentile, rtts};

const USER: &str = "bench";
const PASSWORD: &str = "bench-secret-1";

fn domain(i: usize) -> String {
    format!("d{i:05}.bench.example")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One step: SIPp registering `rate` a second for `seconds` against `target`; the row.
fn step(dir: &Path, inf: &Path, target: SocketAddr, who: &str, rate: u32, seconds: u32) {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp/bench_register.xml");
    let stat = dir.join(format!("{who}_{rate}_stat.csv"));
    let mut child = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .arg("-inf")
        .arg(inf)
        .args(["-s", USER, "-au", USER, "-ap", PASSWORD])
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args(["-r", &rate.to_string(), "-m", &(rate * seconds).to_string()])
        .args(["-l", &(rate * 4).to_string()])
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
    let rtt = dir.join(format!("bench_register_{}_rtt.csv", child.id()));
    let status = child.wait().unwrap();
    let (ok, failed) = counts(&stat);
    let (mut t, _) = rtts(&rtt);
    let attempted = ok + failed;
    println!(
        "{:>6} {:>8} {:>8} {:>7} {:>7.3}% {:>12.2} {:>12.2}{}",
        rate,
        who,
        attempted,
        failed,
        if attempted > 0 {
            failed as f64 * 100.0 / attempted as f64
        } else {
            0.0
        },
        percentile(&mut t, 0.50),
        percentile(&mut t, 0.99),
        if status.success() {
            ""
        } else {
            "  (SIPp reported failures)"
        }
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !common::have_sipp() {
        eprintln!(
            "register_rate: SIPp is not installed (apt-get install sip-tester); nothing measured"
        );
        return;
    }
    let rates: Vec<u32> = std::env::var("B2BUA_BENCH_RATES")
        .unwrap_or_else(|_| "500,1000,2000,3000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let seconds: u32 = env_or("B2BUA_BENCH_SECONDS", 10);
    let users: usize = env_or("B2BUA_BENCH_USERS", 1000);
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("B2BUA_BENCH_DB")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let scfg = StoreConfig {
        max_connections: 16,
        ..StoreConfig::default()
    };
    let store = Arc::new(Store::open(&db, scfg).await.expect("store opens"));
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    // Several subscribers may share one card (a family, an office): all of these share the
    // demo's.
    for i in 0..users {
        if store.sip_account(USER, &domain(i)).await.unwrap().is_some() {
            continue;
        }
        let n = NewSipAccount {
            username: USER.into(),
            domain: domain(i),
            password: PASSWORD.into(),
            card: rating::demo::CARD.into(),
            caller_id: None,
            max_calls: 1,
        };
        store
            .create_sip_account(&n, "bench", Utc::now())
            .await
            .unwrap();
    }
    let inf = dir.path().join("users.csv");
    let mut f = std::fs::File::create(&inf).unwrap();
    writeln!(f, "SEQUENTIAL").unwrap();
    for i in 0..users {
        writeln!(f, "{};", domain(i)).unwrap();
    }
    drop(f);

    let domains: Vec<String> = (0..users).map(domain).collect();
    let yaml = format!(
        "sip:\n  listen: [\"udp:127.0.0.1:0\"]\ntrusted_peers: [127.0.0.1]\n\
subscribers:\n  domains: [{}]\n  nonces_remembered: 1000000\n\
limits:\n  transactions: 200000\n  lingering_transactions: 800000\n",
        domains.join(", ")
    );
    let running = b2bua::engine::start(Config::parse(&yaml, "bench").unwrap(), store.clone())
        .await
        .unwrap();
    let node = running.addr(Proto::Udp).unwrap();
    let baseline_port = free_port();
    let mut baseline = Command::new("sipp")
        .arg("-sf")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp/bench_registrar.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &baseline_port.to_string(),
            "-nostdin",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline_addr: SocketAddr = ([127, 0, 0, 1], baseline_port).into();
    println!(
        "REGISTER with digest, {users} subscribers, {seconds} s per step (SQLite unless B2BUA_BENCH_DB); \
         `sipp` is the baseline registrar that checks and keeps nothing"
    );
    println!(
        "{:>6} {:>8} {:>8} {:>7} {:>8} {:>12} {:>12}",
        "rate", "against", "regs", "failed", "fail %", "200 p50 ms", "200 p99 ms"
    );
    for rate in rates {
        step(dir.path(), &inf, baseline_addr, "sipp", rate, seconds);
        tokio::time::sleep(Duration::from_secs(1)).await;
        step(dir.path(), &inf, node, "b2bua", rate, seconds);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let _ = baseline.kill();
    let _ = baseline.wait();
    let m = b2bua::metrics::get();
    for line in m.render().lines() {
        if line.starts_with("b2bua_limit_hits_total{") {
            println!("  {line}");
        }
    }
    let one = store.sip_account(USER, &domain(0)).await.unwrap().unwrap();
    let bound = store.bindings(one.id, Utc::now()).await.unwrap().len();
    println!("{}: {bound} binding(s)", one.aor());
    running.stop().await;
    store.close().await;
}
