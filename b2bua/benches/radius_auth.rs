//! Phase-2 Access-Requests answered per second by the AAA server (goal: ≥ 10,000/s on the
//! 2-core machine): each is a card, PIN and destination with a fresh `h323-conf-id`, so each
//! one reads the card, checks the PIN, rates the destination and holds the money. The clients
//! run in this process, one UDP socket each, a request at a time (as a gateway's RADIUS client
//! does per call).
//!
//! `cargo bench -p b2bua --bench radius_auth`. Knobs: `B2BUA_BENCH_REQUESTS` (default 20,000),
//! `B2BUA_BENCH_CONCURRENCY` (clients, default 64), `B2BUA_BENCH_DB` (default a temporary
//! SQLite file; for PostgreSQL `postgres://postgres@127.0.0.1:5432/test`).

use b2bua::config::RadiusServer;
use chrono::Utc;
use radius::core::avp::AVP;
use radius::core::code::Code;
use radius::core::packet::Packet;
use rating::radius::packet::cisco_avp;
use rating::store::NewAccount;
use rating::{Money, Store, StoreConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"testing123";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let requests = env("B2BUA_BENCH_REQUESTS", 20_000);
    let clients = env("B2BUA_BENCH_CONCURRENCY", 64);
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("B2BUA_BENCH_DB")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let store = Arc::new(
        Store::open(
            &db,
            StoreConfig {
                max_connections: 16,
                ..StoreConfig::default()
            },
        )
        .await
        .expect("store opens"),
    );
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    // One card per client, allowed many calls at once: the figure is the store's, not one
    // card's row lock. Fresh numbers per run, so a rerun on one database works.
    let run = Utc::now().timestamp() % 900 + 100;
    let cards: Vec<String> = (0..clients).map(|c| format!("7{run}{c:04}")).collect();
    let news: Vec<NewAccount> = cards
        .iter()
        .map(|c| {
            let mut n = NewAccount::new(c, Some("1234"), Money::parse("1000000", false).unwrap());
            n.max_calls = 10_000;
            n
        })
        .collect();
    store.create_accounts(&news, Utc::now()).await.unwrap();
    let server = b2bua::radius::start(
        &RadiusServer {
            auth: "127.0.0.1:0".parse().unwrap(),
            acct: "127.0.0.1:0".parse().unwrap(),
            // The bench's hand-made packets carry none; the cost of checking one is a single
            // HMAC-MD5, small beside the store's.
            require_message_authenticator: false,
            clients: vec![b2bua::config::RadiusClient {
                address: "127.0.0.1".parse().unwrap(),
                secret: "testing123".into(),
                cards: rating::radius::aaa::Cards::All,
            }],
        },
        store.clone(),
    )
    .await
    .unwrap();
    let to = server.auth;
    println!(
        "radius_auth: {requests} phase-2 Access-Requests from {clients} clients, {}",
        if db.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, card) in cards.into_iter().enumerate() {
        let per = requests / clients + usize::from(c < requests % clients);
        tasks.spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut codes: BTreeMap<String, usize> = BTreeMap::new();
            let mut lat = Vec::with_capacity(per);
            let mut buf = vec![0u8; 4096];
            for i in 0..per {
                let mut p = Packet::new_with_identifier(Code::AccessRequest, SECRET, i as u8);
                p.add(AVP::from_string(1, &card));
                let auth = p.get_authenticator().clone();
                p.add(AVP::from_user_password(2, b"1234", SECRET, &auth).unwrap());
                p.add(AVP::from_string(30, "5555233"));
                p.add(AVP::from_string(31, "4085550000"));
                p.add(cisco_avp(24, &format!("{card} {c:08X} {i:08X} 00000000")));
                let bytes = p.encode().unwrap();
                let sent = Instant::now();
                let mut answer = None;
                for _ in 0..3 {
                    sock.send_to(&bytes, to).await.unwrap();
                    if let Ok(Ok((n, _))) =
                        tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await
                    {
                        answer = Some(buf[..n].to_vec());
                        break;
                    }
                }
                lat.push(sent.elapsed().as_secs_f64() * 1000.0);
                let key = match answer {
                    Some(a) if a[0] == 2 => "accept".to_string(),
                    Some(a) => format!("reject (code {})", a[0]),
                    None => "no answer".to_string(),
                };
                *codes.entry(key).or_default() += 1;
            }
            (codes, lat)
        });
    }
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (c, l) = r.unwrap();
        for (k, v) in c {
            *codes.entry(k).or_default() += v;
        }
        lat.extend(l);
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "  {:.0} answered/s ({requests} in {secs:.1} s); latency p50 {:.1} ms, p99 {:.1} ms; {codes:?}",
        requests as f64 / secs,
        p(0.5),
        p(0.99)
    );
    server.stop().await;
    store.close().await;
}
