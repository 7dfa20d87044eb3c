//! The finance web console end to end in a real headless Chromium driven through ChromeDriver
//! (Debian's `chromium` and `chromium-driver`): sign in, find a card by keyboard alone, see
//! its balance, the money held for a call in progress and its ledger, top it up (once per
//! reference), block it through its confirmation, create a batch and download its CSV exactly
//! once, then block the whole batch from its page; follow a card's call from its ledger to
//! its record and refund it with a required reason; an ITSP's own service page with its
//! prompt-set upload and report; read the reports with known totals, their charts' series and the refusal of bad
//! ranges, as finance and as an ITSP that sees only its tenant. Without ChromeDriver the test
//! says so and passes, unless `B2BUA_REQUIRE_PEERS=1` (set by `.ci/run`).

use b2bua::assets::Assets;
use b2bua::config::{AdminConfig, Config, Role};
use chrono::Utc;
use fantoccini::{Client, ClientBuilder, Locator};
use rating::store::{Store, StoreConfig};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

#[path = "support/settled.rs"]
mod settled;
use settled::settled_call;

const FINANCE: &str = "finance-console-token-0123456789";
const ENTER: &str = "\u{E007}";
const TAB: &str = "\u{E004}";

/// ChromeDriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ChromeDriver, or `None` (the test skipped, said on stderr) when it is not installed and
/// the peers are not required.
fn chromedriver() -> Option<Driver> {
    let d = spawn_chromedriver();
    if d.is_none() {
        if std::env::var_os("B2BUA_REQUIRE_PEERS").is_some() {
            panic!("chromedriver is not installed (Debian chromium-driver) and B2BUA_REQUIRE_PEERS is set");
        }
        eprintln!(
            "skipped: chromedriver is not installed (apt-get install chromium chromium-driver)"
        );
    }
    d
}

fn spawn_chromedriver() -> Option<Driver> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Driver { child, port })
}

async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    // ChromeDriver takes a moment to listen.
    for attempt in 0.. {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) if attempt < 50 => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("ChromeDriver did not start a browser: {e}"),
        }
    }
    unreachable!()
}

/// The current page's root, to tell when a form submission has replaced it.
async fn page(c: &Client) -> fantoccini::elements::Element {
    c.find(Locator::Css("html")).await.unwrap()
}

/// Waits until `old` is gone (a new page has loaded in its place).
async fn replaced(old: fantoccini::elements::Element) {
    for _ in 0..100 {
        if old.tag_name().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the form did not lead to a new page");
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_finds_a_card_tops_it_up_blocks_it_and_downloads_a_batch_once() {
    let Some(driver) = chromedriver() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("console.db").display());
    let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let assets = Arc::new(Assets::load(&Config::demo()).unwrap());
    let cfg = AdminConfig::new("127.0.0.1:0".parse().unwrap());
    let tokens = vec![("desk".to_string(), Role::Finance, FINANCE.to_string())];
    let server = b2bua::admin::start(&cfg, tokens, store.clone(), assets, Default::default())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    let c = browser(driver.port, &dir.path().join("profile")).await;

    // Signing in: a wrong token is refused and said so; the right one lands on the search.
    c.goto(&format!("{base}/console")).await.unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/login"));
    let before = page(&c).await;
    c.active_element()
        .await
        .unwrap()
        .send_keys(&format!("not-the-token{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert_eq!(text(&c, "#error").await, "unknown token");
    let before = page(&c).await;
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&format!("{FINANCE}{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert_eq!(c.current_url().await.unwrap().path(), "/console");

    // A call in progress holds money on the demo card.
    let held = store
        .authorize_call(
            &rating::store::CallRequest {
                auth: rating::store::AuthRequest {
                    account: "000070".into(),
                    pin: Some("1234".into()),
                    ani: Some("4085550100".into()),
                    access_number: "5551200".into(),
                    session_id: "console-sess".into(),
                    tenant: None,
                    authenticated: false,
                },
                destination: "5555233".into(),
                conf_id: "console-conf".into(),
                whole_credit: false,
                rate_deck: None,
            },
            Utc::now(),
        )
        .await;
    assert!(held.code.is_success(), "{held:?}");
    let held = held.reservation.unwrap().amount;
    // A softphone subscriber spends from it too.
    store
        .create_sip_account(
            &rating::store::NewSipAccount {
                username: "alice".into(),
                domain: "voip.example.com".into(),
                password: "correct horse".into(),
                card: "000070".into(),
                caller_id: None,
                max_calls: 1,
            },
            "test",
            Utc::now(),
        )
        .await
        .unwrap();

    // Keyboard only: the search field has the focus; type the card and Enter.
    let before = page(&c).await;
    c.active_element()
        .await
        .unwrap()
        .send_keys(&format!("000070{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/console/cards/000070"
    );
    assert_eq!(text(&c, "#balance").await, "32.91 USD");
    assert_eq!(text(&c, "#reserved").await, held.to_string());
    let reservations = text(&c, "#reservations").await;
    assert!(reservations.contains("5555233"), "{reservations}");
    assert!(reservations.contains(&held.to_string()), "{reservations}");
    let sip = text(&c, "#sip-accounts").await;
    assert!(
        sip.contains("alice@voip.example.com") && sip.contains("active"),
        "{sip}"
    );

    // Top up, moving between fields with Tab and submitting with Enter.
    let before = page(&c).await;
    c.find(Locator::Id("amount"))
        .await
        .unwrap()
        .send_keys(&format!("10.00{TAB}RCPT-7{TAB}counter sale{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert_eq!(
        text(&c, "#msg").await,
        "Topped up 10.00 USD: the balance is 42.91 USD."
    );
    assert_eq!(text(&c, "#balance").await, "42.91 USD");
    assert!(text(&c, "#ledger").await.contains("RCPT-7"));
    // The same receipt again moves nothing.
    let before = page(&c).await;
    c.find(Locator::Id("amount"))
        .await
        .unwrap()
        .send_keys(&format!("10.00{TAB}RCPT-7{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert!(text(&c, "#msg").await.contains("already applied"));
    assert_eq!(text(&c, "#balance").await, "42.91 USD");
    // A refused amount is explained, and nothing moves.
    let before = page(&c).await;
    c.find(Locator::Id("amount"))
        .await
        .unwrap()
        .send_keys(&format!("0{TAB}RCPT-8{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert!(text(&c, "#error").await.starts_with("amount:"));
    assert_eq!(
        store.account("000070").await.unwrap().balance.to_string(),
        "42.91"
    );

    // Block: Enter on the button asks for confirmation first.
    let before = page(&c).await;
    c.find(Locator::Id("block"))
        .await
        .unwrap()
        .send_keys(ENTER)
        .await
        .unwrap();
    assert_eq!(c.get_alert_text().await.unwrap(), "Block this card?");
    c.accept_alert().await.unwrap();
    replaced(before).await;
    assert_eq!(text(&c, "#status").await, "blocked");
    assert_eq!(text(&c, "#msg").await, "Card 000070 is now blocked.");
    assert!(c.find(Locator::Id("unblock")).await.is_ok());

    // A batch of three cards; its CSV comes down once.
    c.goto(&format!("{base}/console/batch")).await.unwrap();
    let before = page(&c).await;
    c.active_element()
        .await
        .unwrap()
        .send_keys(&format!("3{TAB}5.00{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert!(text(&c, "#msg").await.starts_with("Created 3 cards"));
    let href = c
        .find(Locator::Id("download"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let fetch = |path: String| fetch(&c, path);
    let first = fetch(href.clone()).await;
    assert_eq!(first[0], 200);
    let csv = first[1].as_str().unwrap().to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].contains("pin"), "{csv}");
    let card = lines[1].split(',').next().unwrap();
    assert_eq!(
        store.account(card).await.unwrap().balance.to_string(),
        "5.00"
    );
    assert_eq!(fetch(href).await[0], 410, "the second download is refused");
    c.refresh().await.unwrap();
    assert!(text(&c, "#gone").await.contains("already been downloaded"));

    // The batch is on the batch list; blocking it (after its confirmation) blocks all three.
    c.goto(&format!("{base}/console/batches")).await.unwrap();
    let rows = text(&c, "#batches tbody").await;
    assert!(rows.contains("5.00"), "{rows}");
    c.find(Locator::Css("#batches tbody a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&c, "#cards").await, "3");
    assert_eq!(text(&c, "#unused").await, "3");
    assert_eq!(text(&c, "#money-left").await, "15.00 USD");
    let batch = text(&c, "#batch").await;
    let before = page(&c).await;
    c.find(Locator::Id("block-batch"))
        .await
        .unwrap()
        .send_keys(ENTER)
        .await
        .unwrap();
    assert_eq!(
        c.get_alert_text().await.unwrap(),
        "Block all 3 cards of this batch?"
    );
    c.accept_alert().await.unwrap();
    replaced(before).await;
    assert!(
        text(&c, "#msg")
            .await
            .starts_with("Blocked 3 cards of batch"),
        "{}",
        text(&c, "#msg").await
    );
    assert_eq!(text(&c, "#blocked").await, "3");
    assert_eq!(text(&c, "#money-left").await, "0.00 USD");
    for l in &lines[1..] {
        let card = l.split(',').next().unwrap();
        assert_eq!(
            store.account(card).await.unwrap().status.as_str(),
            "blocked",
            "{card} of {batch}"
        );
    }
    // Its card list downloads as often as wanted, and never holds a PIN.
    let href = c
        .find(Locator::Id("export"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    for _ in 0..2 {
        let got = fetch(href.clone()).await;
        assert_eq!(got[0], 200);
        let list = got[1].as_str().unwrap();
        assert!(
            list.starts_with("account,status,balance,expires,used"),
            "{list}"
        );
        assert_eq!(list.matches(",blocked,").count(), 3, "{list}");
    }

    // Every change is the clerk's in the audit log.
    let log: Vec<(String, String)> = store
        .audit_log(None, 20)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action))
        .collect();
    for action in ["topup", "block", "batch", "batch-block"] {
        assert!(
            log.iter().any(|(who, a)| who == "desk" && a == action),
            "{log:?}"
        );
    }
    assert_eq!(log.iter().filter(|(_, a)| a == "topup").count(), 1);

    // Sign out: the console asks to sign in again.
    c.find(Locator::Css("header button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.goto(&format!("{base}/console/cards/000070"))
        .await
        .unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/login"));
    c.close().await.unwrap();

    // Outside the browser: a form from another site is refused, nothing moves.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let post = |origin: &str, cookie: &str| {
        agent
            .post(&format!("{base}/console/cards/000070/unblock"))
            .header("Origin", origin)
            .header("Cookie", cookie)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send("")
            .unwrap()
            .status()
            .as_u16()
    };
    // The console's cookie is a session id of the server's, never the API token itself.
    let mut r = agent
        .post(&format!("{base}/console/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("token={FINANCE}"))
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let set = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let _ = r.body_mut().read_to_string();
    assert!(!set.contains(FINANCE), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age="),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    assert_eq!(
        post(&base, &format!("b2bua_console={FINANCE}")),
        303,
        "the token is no session"
    );
    assert_eq!(post("http://evil.example", &cookie), 403);
    // A batch form the browser would not send (a count that is not a number) is explained on
    // the form's page, and an unknown card says so; nothing is created.
    let mut r = agent
        .post(&format!("{base}/console/batch"))
        .header("Cookie", &cookie)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("count=many&balance=5&currency=USD&language=en&digits=12&pin_digits=4")
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let to = r
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        to.starts_with("/console/batch?error=cards%3A%20%60many%60%20is%20not"),
        "{to}"
    );
    let _ = r.body_mut().read_to_string();
    let mut r = agent
        .get(&format!("{base}/console/cards/999999"))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("no account 999999"));
    // A prompt upload whose form is broken, or has no file, is explained.
    for (body, why) in [
        (
            "--xx\r\nContent-Disposition: form-data; name=\"archive\"\r\n\r\nPK",
            "the upload",
        ),
        (
            "--xx\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\n1\r\n--xx--\r\n",
            "choose a .zip or .tar",
        ),
    ] {
        let mut r = agent
            .post(&format!("{base}/console/service/prompts"))
            .header("Cookie", &cookie)
            .header("Content-Type", "multipart/form-data; boundary=xx")
            .send(body)
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let page = r.body_mut().read_to_string().unwrap();
        assert!(page.contains(why), "{page}");
    }
    assert_eq!(
        store.audit_log(None, 20).await.unwrap().len(),
        log.len(),
        "nothing more was done"
    );
    assert_eq!(
        post(&base, "b2bua_console=wrong"),
        303,
        "to the sign-in page"
    );
    assert_eq!(
        store.account("000070").await.unwrap().status.as_str(),
        "blocked"
    );
    // Signing out ends the session on the server: the same cookie no longer works.
    let r = agent
        .post(&format!("{base}/console/logout"))
        .header("Cookie", &cookie)
        .send("")
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let r = agent
        .get(&format!("{base}/console/cards/000070"))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "signed out");
    server.stop().await;
    drop(driver);
}

/// `[status, body]` of a GET the page itself makes (with its session cookie).
async fn fetch(c: &Client, path: String) -> serde_json::Value {
    c.execute_async(
        "const [p, done] = arguments; fetch(p).then(async r => done([r.status, await r.text()]));",
        vec![serde_json::json!(path)],
    )
    .await
    .unwrap()
}

/// Signs `c` in with `token` and waits for the search page.
async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/console/login")).await.unwrap();
    let before = page(c).await;
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&format!("{token}{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert_eq!(c.current_url().await.unwrap().path(), "/console");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finance_reads_the_reports_and_an_itsp_sees_only_its_own() {
    let Some(driver) = chromedriver() else {
        return;
    };
    const ACME: &str = "acme-console-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("reports.db").display());
    let cfg = StoreConfig {
        node_id: "node-a".into(),
        ..StoreConfig::default()
    };
    let store = Arc::new(Store::open(&url, cfg).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let mut acme = rating::store::NewAccount::new(
        "100001",
        Some("4321"),
        rating::Money::parse("10", false).unwrap(),
    );
    acme.tenant = "acme".into();
    store.create_account(&acme, Utc::now()).await.unwrap();
    // Default tenant: 60 s and 180 s to New York at 0.015/min through gw-a; acme: 120 s to
    // London at 0.02/min through gw-b.
    let at = |talk: i64| Utc::now() - chrono::Duration::seconds(talk + 5);
    for (card, pin, dest, talk, gw) in [
        ("000070", "1234", "12125550100", 60, "gw-a"),
        ("000070", "1234", "12125550199", 180, "gw-a"),
        ("100001", "4321", "442071234567", 120, "gw-b"),
    ] {
        settled_call(&store, card, Some(pin), dest, at(talk), talk, gw).await;
    }
    // And one acme call in progress now, on this store's node.
    let ringing = store
        .authorize_call(
            &rating::store::CallRequest {
                auth: rating::store::AuthRequest {
                    account: "100001".into(),
                    pin: Some("4321".into()),
                    ani: None,
                    access_number: "5551200".into(),
                    session_id: "now".into(),
                    tenant: None,
                    authenticated: false,
                },
                destination: "12125550111".into(),
                conf_id: "now".into(),
                whole_credit: false,
                rate_deck: None,
            },
            Utc::now(),
        )
        .await;
    assert!(ringing.code.is_success(), "{ringing:?}");
    let node = "node-a";
    let mut engine = Config::demo();
    engine.tenant_prompts = Some(dir.path().join("tenant-prompts"));
    let assets = Arc::new(Assets::load(&engine).unwrap());
    let cfg = AdminConfig::new("127.0.0.1:0".parse().unwrap());
    let tokens = vec![
        ("desk".to_string(), Role::Finance, FINANCE.to_string()),
        (
            "acme".to_string(),
            Role::Itsp("acme".into()),
            ACME.to_string(),
        ),
    ];
    let server = b2bua::admin::start(&cfg, tokens, store.clone(), assets, Default::default())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    let c = browser(driver.port, &dir.path().join("profile")).await;
    sign_in(&c, &base, FINANCE).await;

    // Every tenant, today: three calls, 6 minutes, 0.015 + 0.045 + 0.04 of revenue.
    c.find(Locator::LinkText("Reports"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&c, "#total-answered").await, "3");
    assert_eq!(text(&c, "#total-minutes").await, "6.00");
    assert_eq!(text(&c, "#total-revenue").await, "0.10");
    // Calls in progress per node, live from the database every node writes to.
    let now = c
        .find(Locator::Css(&format!(
            "#chart-nodes rect[data-key=\"{node}\"]"
        )))
        .await
        .unwrap();
    assert_eq!(now.attr("data-value").await.unwrap().unwrap(), "1");
    assert!(text(&c, "#nodes").await.contains(node));
    // The revenue chart has one bar per day, today's the 0.10.
    let today = Utc::now().date_naive().to_string();
    let chart = c
        .find(Locator::Css("#chart-revenue-0 g.series"))
        .await
        .unwrap();
    assert_eq!(chart.attr("data-series").await.unwrap().unwrap(), "revenue");
    let bar = c
        .find(Locator::Css(&format!(
            "#chart-revenue-0 rect[data-key=\"{today}\"]"
        )))
        .await
        .unwrap();
    assert_eq!(bar.attr("data-value").await.unwrap().unwrap(), "0.10");
    assert_eq!(
        c.find_all(Locator::Css("#chart-revenue-0 rect"))
            .await
            .unwrap()
            .len(),
        30
    );

    // Per gateway, keyboard only: the tab, then the form's Show.
    c.find(Locator::LinkText("Gateways"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let rows = text(&c, "#report tbody").await;
    assert!(rows.contains("gw-a") && rows.contains("gw-b"), "{rows}");
    let asr = c
        .find(Locator::Css("#chart-asr rect[data-key=\"gw-a\"]"))
        .await
        .unwrap();
    assert_eq!(asr.attr("data-value").await.unwrap().unwrap(), "100.0 %");
    let acd = c
        .find(Locator::Css("#chart-acd rect[data-key=\"gw-a\"]"))
        .await
        .unwrap();
    assert_eq!(acd.attr("data-value").await.unwrap().unwrap(), "120 s");
    // One tenant only, chosen on the form.
    let before = page(&c).await;
    c.find(Locator::Id("tenant"))
        .await
        .unwrap()
        .send_keys(&format!("acme{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    let rows = text(&c, "#report tbody").await;
    assert!(rows.contains("gw-b") && !rows.contains("gw-a"), "{rows}");

    // Bad ranges are explained on the page.
    for (q, why) in [
        ("from=2026-02-30", "is not a date"),
        ("from=2026-12-02&to=2026-12-01", "before it starts"),
        ("from=2020-01-01&to=2026-12-01", "at most 400"),
    ] {
        c.goto(&format!("{base}/console/reports?report=summary&{q}"))
            .await
            .unwrap();
        let e = text(&c, "#error").await;
        assert!(e.contains(why), "{q}: {e}");
        assert!(c.find(Locator::Id("report")).await.is_err(), "no table");
    }

    // The CSV link downloads exactly the table shown.
    c.goto(&format!("{base}/console/reports?report=destinations"))
        .await
        .unwrap();
    let href = c
        .find(Locator::Id("csv"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let got = fetch(&c, href).await;
    assert_eq!(got[0], 200);
    let csv = got[1].as_str().unwrap();
    assert!(
        csv.contains("United Kingdom - London,USD,1,1,100.0,120,2.00,0.04"),
        "{csv}"
    );

    // Finance looks at a tenant's service: the demo's access numbers.
    c.goto(&format!("{base}/console/service")).await.unwrap();
    assert_eq!(text(&c, "#service-tenant").await, "default");
    assert!(text(&c, "#numbers").await.contains("5551200"));

    // The card's story: its calls, each ledger call entry linked to the call's record.
    c.goto(&format!("{base}/console/cards/000070"))
        .await
        .unwrap();
    let calls = text(&c, "#calls").await;
    assert!(
        calls.contains("12125550199") && calls.contains("gw-a"),
        "{calls}"
    );
    c.find(Locator::Css("#ledger tbody a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(&c, "#gateway").await, "gw-a");
    assert!(text(&c, "#rate").await.contains("North America"));
    assert!(text(&c, "#code").await.starts_with("0 "));
    assert_eq!(
        text(&c, "#radius").await,
        "No RADIUS records for this call."
    );
    // A refund needs a reason: a blank one is explained and moves nothing.
    c.goto(&format!("{base}/console/cards/000070"))
        .await
        .unwrap();
    let before = page(&c).await;
    c.find(Locator::Id("adj-amount"))
        .await
        .unwrap()
        .send_keys(&format!("0.05{TAB}TKT-9{TAB} {ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert!(text(&c, "#error").await.contains("say why"));
    let balance = text(&c, "#balance").await;
    let before = page(&c).await;
    c.find(Locator::Id("adj-amount"))
        .await
        .unwrap()
        .send_keys(&format!("0.05{TAB}TKT-9{TAB}line dropped{ENTER}"))
        .await
        .unwrap();
    replaced(before).await;
    assert!(
        text(&c, "#msg")
            .await
            .starts_with("Posted a refund of 0.05 USD"),
        "{} (was {balance})",
        text(&c, "#msg").await
    );
    assert!(text(&c, "#ledger").await.contains("line dropped"));

    // Signed in as the ITSP: its own tenant only, with no way to ask for another.
    c.find(Locator::Css("header button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    sign_in(&c, &base, ACME).await;
    c.goto(&format!("{base}/console/reports")).await.unwrap();
    assert!(c.find(Locator::Id("tenant")).await.is_err());
    assert_eq!(text(&c, "#total-answered").await, "1");
    assert_eq!(text(&c, "#total-revenue").await, "0.04");
    // Its service: no numbers yet, the default prompts, and an upload answered with its report.
    c.goto(&format!("{base}/console/service")).await.unwrap();
    assert_eq!(text(&c, "#service-tenant").await, "acme");
    assert_eq!(text(&c, "#numbers").await, "No access numbers yet.");
    assert_eq!(
        text(&c, "#prompt-set").await,
        "The default prompt set is in use."
    );
    assert!(c.find(Locator::Id("tenant")).await.is_err());
    let zip_file = |name: &str, files: &[(&str, Vec<u8>)]| {
        use std::io::Write;
        let path = dir.path().join(name);
        let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for (n, data) in files {
            z.start_file(*n, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
        path.display().to_string()
    };
    let au = |ms: usize| {
        prompts::audio::write_au(&prompts::audio::Audio {
            samples: vec![3000; ms * 8],
        })
    };
    let upload = |file: String| {
        let c = c.clone();
        async move {
            let before = page(&c).await;
            c.find(Locator::Id("archive"))
                .await
                .unwrap()
                .send_keys(&file)
                .await
                .unwrap();
            c.find(Locator::Id("upload"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            replaced(before).await;
        }
    };
    upload(zip_file(
        "good.zip",
        &[
            ("acme/en/en_welcome.au", au(400)),
            ("acme/en/en_summer_promo.au", au(300)),
        ],
    ))
    .await;
    assert_eq!(
        text(&c, "#msg").await,
        "The new prompt set is live: 2 files."
    );
    assert!(text(&c, "#upload-report .unknown")
        .await
        .contains("summer_promo"));
    assert_ne!(text(&c, "#upload-report .fallback").await, "none");
    assert_eq!(
        text(&c, "#prompt-set").await,
        "Your own prompt set is in use."
    );
    // A refused upload says why, file by file, and the set in use stays.
    upload(zip_file(
        "bad.zip",
        &[("acme/en/en_welcome.au", b"not audio".to_vec())],
    ))
    .await;
    assert!(text(&c, "#error").await.contains("refused"));
    assert!(text(&c, "#upload-report .errors")
        .await
        .contains("en_welcome"));
    assert_eq!(
        text(&c, "#prompt-set").await,
        "Your own prompt set is in use."
    );
    assert!(text(&c, "#prompt-report .unknown")
        .await
        .contains("summer_promo"));
    c.goto(&format!("{base}/console/service?tenant=default"))
        .await
        .unwrap();
    assert!(text(&c, "#error").await.contains("service only"));

    c.goto(&format!("{base}/console/cards/100001"))
        .await
        .unwrap();
    assert!(
        c.find(Locator::Id("adjust")).await.is_err(),
        "finance's form only"
    );
    assert!(text(&c, "#calls").await.contains("442071234567"));
    c.goto(&format!(
        "{base}/console/reports?report=gateways&tenant=default"
    ))
    .await
    .unwrap();
    assert!(
        text(&c, "#error")
            .await
            .contains("tenant acme's reports only"),
        "refused"
    );
    c.close().await.unwrap();
    server.stop().await;
    drop(driver);
}
