//! Broken input against a running B2BUA: every message in `tests/corpus/malformed/` is sent
//! over UDP; `400_*` files must be answered 400 Bad Request (with the reason in Warning) and
//! `drop_*` files must get no answer at all. Afterwards the daemon must still answer, and
//! streams that cannot be framed must be closed. The same corpus seeds the fuzz target.

use b2bua::config::Config;
use b2bua::routing::Proto;
use chrono::Utc;
use rating::store::{Store, StoreConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const YAML: &str = "sip:\n  listen: [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"udp:[::1]:0\"]\n\
trusted_peers: [127.0.0.1, \"::1\"]\naccess_numbers:\n  - {number: \"5551201\", pinless: true}\n\
gateways:\n  - {name: gw, address: \"127.0.0.1:9\"}\nroutes:\n  - {name: all, patterns: [T], gateways: [{gateway: gw}]}\n";

async fn start() -> (tempfile::TempDir, Arc<Store>, b2bua::engine::Running) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b2bua.db").display());
    let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let running = b2bua::engine::start(Config::parse(YAML, "t.yaml").unwrap(), store.clone())
        .await
        .unwrap();
    (dir, store, running)
}

async fn ask(sock: &UdpSocket, to: std::net::SocketAddr, msg: &[u8]) -> Option<String> {
    sock.send_to(msg, to).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_millis(400), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

fn options(branch: &str, host: &str) -> String {
    format!(
        "OPTIONS sip:5551201@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:5999;branch=z9hG4bK{branch}\r\n\
From: <sip:x@{host}>;tag=1\r\nTo: <sip:5551201@{host}>\r\nCall-ID: {branch}@t\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn the_malformed_corpus_gets_400_or_nothing_and_the_daemon_carries_on() {
    let (_dir, store, running) = start().await;
    let to = running.addr(Proto::Udp).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/malformed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 15);
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        // Each file its own branch and Call-ID, so no answer comes from another's transaction.
        let mut bytes = std::fs::read(f).unwrap();
        let tag = format!("{:03}", failures.len() + bytes.len() % 1000);
        for (from, to) in [
            (&b"z9hG4bKmal"[..], format!("z9hG4bK{tag}")),
            (&b"malformed@"[..], format!("malfo{tag}@")),
        ] {
            if let Some(i) = bytes.windows(from.len()).position(|w| w == from) {
                bytes.splice(i..i + from.len(), to.bytes());
            }
        }
        let reply = ask(&sock, to, &bytes).await;
        let ok = match name.split('_').next().unwrap() {
            "drop" => reply.is_none(),
            code => reply.as_deref().is_some_and(|r| {
                r.starts_with(&format!("SIP/2.0 {code} ")) && r.contains("Warning: 399")
            }),
        };
        if !ok {
            failures.push(format!("{name}: {reply:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Still alive, on IPv4 and IPv6.
    let r = ask(&sock, to, options("alive", "127.0.0.1").as_bytes())
        .await
        .unwrap();
    assert!(r.starts_with("SIP/2.0 200 OK\r\n"), "{r}");
    assert!(r.contains("Allow: INVITE"));
    let to6 = running
        .bound
        .iter()
        .find(|(p, a)| *p == Proto::Udp && a.is_ipv6())
        .unwrap()
        .1;
    let sock6 = UdpSocket::bind("[::1]:0").await.unwrap();
    let r = ask(&sock6, to6, options("alive6", "[::1]").as_bytes())
        .await
        .unwrap();
    assert!(r.starts_with("SIP/2.0 200 OK\r\n"), "{r}");
    running.stop().await;
    store.close().await;
}

/// Every datagram that arrives within 400 ms of the last.
async fn answers(sock: &UdpSocket) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(400), sock.recv_from(&mut buf)).await
    {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

#[tokio::test]
async fn the_rfc4475_torture_messages_get_the_answers_the_rfc_gives() {
    let (_dir, store, running) = start().await;
    let to = running.addr(Proto::Udp).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/rfc4475");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut wrong = Vec::new();
    let mut heard = std::collections::HashMap::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(f).unwrap();
        let is_response = bytes.starts_with(b"SIP/");
        // Each from its own socket, so that no answer is taken for another message's; the
        // responses from an address that is not the gateway's (a 2xx from the gateway for no
        // call of ours would rightly be ACKed and hung up).
        let sock = UdpSocket::bind(if is_response {
            "127.0.0.2:0"
        } else {
            "127.0.0.1:0"
        })
        .await
        .unwrap();
        sock.send_to(&bytes, to).await.unwrap();
        let got = answers(&sock).await;
        let codes: Vec<&str> = got.iter().map(|r| r.get(8..11).unwrap_or("")).collect();
        let ok = match name.split('_').next().unwrap() {
            // A valid request is answered, never 400; an unknown method gets 501 with Allow;
            // a valid response (no transaction of ours) gets nothing.
            "valid" if is_response => got.is_empty(),
            "valid" => {
                !codes.is_empty()
                    && !codes.contains(&"400")
                    && got
                        .iter()
                        .filter(|r| r.starts_with("SIP/2.0 501 "))
                        .all(|r| r.contains("\r\nAllow: INVITE"))
            }
            "drop" => got.is_empty(),
            code => codes.contains(&code) && !codes.iter().any(|c| *c != code && *c != "100"),
        };
        if !ok {
            wrong.push(format!("{name}: {codes:?}"));
        }
        heard.insert(name, got);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The two the issue names: the tortuous INVITE is read (its To has a tag, and we have no
    // such dialog: 481) and RE%47IST%45R is an unknown method (501).
    for (file, code) in [
        ("valid_3.1.1.1_wsinv.sip", "481"),
        ("valid_3.1.1.5_esc02.sip", "501"),
        ("valid_3.1.1.2_intmeth.sip", "501"),
    ] {
        let got = &heard[file];
        assert!(
            got.iter()
                .any(|r| r.starts_with(&format!("SIP/2.0 {code} "))),
            "{file}: {got:?}"
        );
    }
    running.stop().await;
    store.close().await;
}

#[tokio::test]
async fn requests_outside_any_dialog_get_481_405_and_501() {
    let (_dir, store, running) = start().await;
    let to = running.addr(Proto::Udp).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bye = options("bye1", "127.0.0.1")
        .replace("OPTIONS", "BYE")
        .replace(">\r\nCall-ID", ">;tag=nope\r\nCall-ID");
    assert!(ask(&sock, to, bye.as_bytes())
        .await
        .unwrap()
        .starts_with("SIP/2.0 481 "));
    let cancel = options("cancel1", "127.0.0.1").replace("OPTIONS", "CANCEL");
    assert!(ask(&sock, to, cancel.as_bytes())
        .await
        .unwrap()
        .starts_with("SIP/2.0 481 "));
    let register = options("reg1", "127.0.0.1").replace("OPTIONS", "REGISTER");
    assert!(ask(&sock, to, register.as_bytes())
        .await
        .unwrap()
        .starts_with("SIP/2.0 405 "));
    // A retransmission is answered from the transaction, the same way.
    assert!(ask(&sock, to, register.as_bytes())
        .await
        .unwrap()
        .starts_with("SIP/2.0 405 "));
    running.stop().await;
    store.close().await;
}

/// A pinless INVITE with `extra` headers, outside any dialog.
fn invite_with(branch: &str, extra: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:55512015555233@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{branch}\r\n\
From: <sip:4085551234@127.0.0.1>;tag=1\r\nTo: <sip:55512015555233@127.0.0.1>\r\nCall-ID: {branch}@t\r\n\
CSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.1:5999>\r\nMax-Forwards: 70\r\n{extra}\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The final answer to `msg` (after any 100 Trying; not an earlier request's retransmission).
async fn final_answer(sock: &UdpSocket, to: std::net::SocketAddr, msg: &str) -> String {
    sock.send_to(msg.as_bytes(), to).await.unwrap();
    let call_id = msg
        .lines()
        .find(|l| l.starts_with("Call-ID:"))
        .expect("a Call-ID")
        .to_string();
    answers(sock)
        .await
        .into_iter()
        .find(|r| !r.starts_with("SIP/2.0 100 ") && r.contains(&call_id))
        .unwrap_or_else(|| panic!("no final answer to {msg}"))
}

/// Session timers and extensions at the door: an extension we do not implement is refused
/// 420 naming it, a session shorter than our minimum 422 with our Min-SE (RFC 4028 §6), an
/// unreadable Session-Expires or Min-SE 400 saying which.
#[tokio::test]
async fn invites_requiring_what_we_lack_or_asking_too_short_a_session_are_told_why() {
    let (_dir, store, running) = start().await;
    let to = running.addr(Proto::Udp).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r = final_answer(
        &sock,
        to,
        &invite_with("req1", "Require: 100rel, timer, gruu\r\n"),
    )
    .await;
    assert!(r.starts_with("SIP/2.0 420 "), "{r}");
    assert!(r.contains("Unsupported: gruu\r\n"), "{r}");
    let short = invite_with("se1", "Supported: timer\r\nSession-Expires: 60\r\n");
    let r = final_answer(&sock, to, &short).await;
    assert!(r.starts_with("SIP/2.0 422 "), "{r}");
    assert!(r.contains("Min-SE: 90\r\n"), "{r}");
    for (branch, extra, what) in [
        ("se2", "Session-Expires: soon\r\n", "Session-Expires"),
        ("se3", "x: 1800;refresher=both\r\n", "refresher"),
        ("se4", "Session-Expires: 1800\r\nMin-SE: -1\r\n", "Min-SE"),
    ] {
        let r = final_answer(&sock, to, &invite_with(branch, extra)).await;
        assert!(r.starts_with("SIP/2.0 400 "), "{extra}: {r}");
        assert!(
            r.contains("Warning: 399") && r.contains(what),
            "{extra}: {r}"
        );
    }
    running.stop().await;
    store.close().await;
}

#[tokio::test]
async fn tcp_streams_are_framed_by_content_length_and_unframeable_ones_closed() {
    let (_dir, store, running) = start().await;
    let to = running.addr(Proto::Tcp).unwrap();
    // Two messages in one write, and one split across writes, all answered.
    let mut s = TcpStream::connect(to).await.unwrap();
    let a = options("t1", "127.0.0.1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let b = options("t2", "127.0.0.1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    s.write_all(format!("{a}{}", &b[..40]).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&b.as_bytes()[40..]).await.unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("SIP/2.0 200 OK").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // A framed but unparseable message is answered 400 and the connection stays.
    let bad = a
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")
        .replace("z9hG4bKt1", "z9hG4bKt3");
    s.write_all(bad.as_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 400 "));
    // No Content-Length on a stream: unframeable, so the connection is closed.
    s.write_all(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nCall-ID: 1\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed");
    // An endless header section is cut off at the size limit.
    let mut s = TcpStream::connect(to).await.unwrap();
    let junk = vec![b'a'; 70 * 1024];
    let _ = s.write_all(&junk).await;
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed");
    running.stop().await;
    store.close().await;
}
