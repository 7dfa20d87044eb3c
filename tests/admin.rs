//! The admin HTTP API over a real socket, on a real SQLite store with the demo data: tokens and
//! roles (an ITSP sees only its own tenant), idempotent top-ups, batches, rate decks, prompt
//! sets, flows, access numbers, the audit log, malformed requests answered 4xx with a reason, the checked-in OpenAPI
//! description matching the routes, and `/metrics`.

use b2bua::assets::Assets;
use b2bua::config::{AdminConfig, Config, Role};
use chrono::Utc;
use rating::store::{NewAccount, Store, StoreConfig};
use rating::Money;
use serde_json::Value;
use std::sync::Arc;

#[path = "support/settled.rs"]
mod settled;
use settled::settled_call;

const ADMIN: &str = "admin-token-0123456789";
const FINANCE: &str = "finance-token-0123456789";
const ACME: &str = "acme-token-0123456789";

struct Api {
    base: String,
    agent: ureq::Agent,
}

/// One answer: status, content type and body.
struct Answer {
    status: u16,
    kind: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    /// The `error` of a refusal, checking it is one.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.body))
            .to_string()
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let (agent, url) = (self.agent.clone(), format!("{}{path}", self.base));
        let (method, token, body) = (
            method.to_string(),
            token.map(str::to_string),
            body.map(str::to_string),
        );
        tokio::task::spawn_blocking(move || {
            let auth = token.map(|t| format!("Bearer {t}"));
            let mut r = match (method.as_str(), body) {
                (m @ ("GET" | "DELETE"), _) => {
                    let mut b = if m == "GET" {
                        agent.get(&url)
                    } else {
                        agent.delete(&url)
                    };
                    if let Some(a) = &auth {
                        b = b.header("Authorization", a);
                    }
                    b.call()
                }
                (m, body) => {
                    let mut b = match m {
                        "POST" => agent.post(&url),
                        _ => agent.put(&url),
                    };
                    if let Some(a) = &auth {
                        b = b.header("Authorization", a);
                    }
                    match body {
                        Some(text) => {
                            let kind = if text.starts_with('{') || text.starts_with('[') {
                                "application/json"
                            } else {
                                "text/csv"
                            };
                            b.header("Content-Type", kind).send(text.as_str())
                        }
                        None => b.send_empty(),
                    }
                }
            }
            .expect("the API answers");
            Answer {
                status: r.status().as_u16(),
                kind: r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body: r.body_mut().read_to_string().unwrap(),
            }
        })
        .await
        .unwrap()
    }
}

impl Api {
    /// PUT of raw bytes (an archive, a YAML flow).
    async fn put_bytes(&self, path: &str, token: &str, kind: &str, bytes: Vec<u8>) -> Answer {
        let (agent, url) = (self.agent.clone(), format!("{}{path}", self.base));
        let (auth, kind) = (format!("Bearer {token}"), kind.to_string());
        tokio::task::spawn_blocking(move || {
            let mut r = agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", &kind)
                .send(&bytes[..])
                .expect("the API answers");
            Answer {
                status: r.status().as_u16(),
                kind: String::new(),
                body: r.body_mut().read_to_string().unwrap(),
            }
        })
        .await
        .unwrap()
    }
}

async fn start() -> (tempfile::TempDir, Arc<Store>, b2bua::admin::Running, Api) {
    let (dir, store, running, api, _) = start_with_assets().await;
    (dir, store, running, api)
}

/// The API with the engine's prompt sets and flows: the shipped flows copied to a scratch
/// directory (uploads write there) and an empty tenant prompt directory.
async fn start_with_assets() -> (
    tempfile::TempDir,
    Arc<Store>,
    b2bua::admin::Running,
    Api,
    Arc<Assets>,
) {
    start_custom(|_| {}).await
}

/// As [`start_with_assets`], with the admin configuration changed by `edit`.
async fn start_custom(
    edit: impl FnOnce(&mut AdminConfig),
) -> (
    tempfile::TempDir,
    Arc<Store>,
    b2bua::admin::Running,
    Api,
    Arc<Assets>,
) {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    for f in std::fs::read_dir(ivr::shipped_dir()).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&f, flows.join(f.file_name().unwrap())).unwrap();
        }
    }
    let mut engine_cfg = Config::demo();
    engine_cfg.flows = flows;
    engine_cfg.tenant_prompts = Some(dir.path().join("tenant-prompts"));
    let assets = Arc::new(Assets::load(&engine_cfg).unwrap());
    let url = format!("sqlite://{}", dir.path().join("admin.db").display());
    let store = Arc::new(Store::open(&url, StoreConfig::default()).await.unwrap());
    rating::demo::seed(&store, Utc::now()).await.unwrap();
    let mut cfg = AdminConfig::new("127.0.0.1:0".parse().unwrap());
    edit(&mut cfg);
    let tokens = vec![
        ("root".to_string(), Role::Admin, ADMIN.to_string()),
        ("desk".to_string(), Role::Finance, FINANCE.to_string()),
        (
            "acme".to_string(),
            Role::Itsp("acme".into()),
            ACME.to_string(),
        ),
    ];
    let running = b2bua::admin::start(
        &cfg,
        tokens,
        store.clone(),
        assets.clone(),
        Default::default(),
    )
    .await
    .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let api = Api {
        base: format!("http://{}", running.addr),
        agent,
    };
    (dir, store, running, api, assets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finance_creates_and_tops_up_cards_once_per_reference_and_every_change_is_audited() {
    let (_dir, store, running, api) = start().await;
    // No token, a wrong one, a malformed header.
    let a = api.call("GET", "/api/v1/accounts/000070", None, None).await;
    assert!(a.error(401).contains("Bearer"));
    let a = api
        .call(
            "GET",
            "/api/v1/accounts/000070",
            Some("nope-nope-nope-nope"),
            None,
        )
        .await;
    assert_eq!(a.error(401), "unknown token");

    let a = api
        .call(
            "POST",
            "/api/v1/accounts",
            Some(FINANCE),
            Some(r#"{"account": "700001", "pin": "4321", "balance": "5.00"}"#),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json()["balance"], "5.00");
    assert_eq!(a.json()["tenant"], "default");
    let top = |amount: &str, reference: &str| {
        format!(r#"{{"amount": "{amount}", "reference": "{reference}", "note": "counter 3"}}"#)
    };
    let a = api
        .call(
            "POST",
            "/api/v1/accounts/700001/topups",
            Some(FINANCE),
            Some(&top("10.00", "RCPT-1")),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json()["balance"], "15.00");
    assert_eq!(a.json()["applied"], true);
    // The same reference again moves nothing; for another amount it is a conflict.
    let a = api
        .call(
            "POST",
            "/api/v1/accounts/700001/topups",
            Some(FINANCE),
            Some(&top("10.00", "RCPT-1")),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["already_applied"], true);
    assert_eq!(a.json()["balance"], "15.00");
    let a = api
        .call(
            "POST",
            "/api/v1/accounts/700001/topups",
            Some(FINANCE),
            Some(&top("20.00", "RCPT-1")),
        )
        .await;
    assert!(a.error(409).contains("already used"), "{}", a.body);
    assert_eq!(
        store.account("700001").await.unwrap().balance.to_string(),
        "15.00"
    );
    let a = api
        .call(
            "GET",
            "/api/v1/accounts/700001/ledger?limit=10",
            Some(FINANCE),
            None,
        )
        .await;
    assert_eq!(a.status, 200);
    // Oldest first: the opening balance, then the top-up, once.
    let ledger = a.json();
    let refs: Vec<&str> = ledger
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        refs.iter().filter(|r| **r == "RCPT-1").count(),
        1,
        "{refs:?}"
    );
    assert_eq!(ledger[refs.len() - 1]["amount"], "10.00");

    // Block and unblock.
    let a = api
        .call("POST", "/api/v1/accounts/700001/block", Some(FINANCE), None)
        .await;
    assert_eq!(a.json()["status"], "blocked");
    let a = api
        .call(
            "POST",
            "/api/v1/accounts/700001/unblock",
            Some(FINANCE),
            None,
        )
        .await;
    assert_eq!(a.json()["status"], "active");

    // A batch: the CSV comes back once, and the cards exist.
    let a = api
        .call(
            "POST",
            "/api/v1/accounts/batch",
            Some(FINANCE),
            Some(r#"{"count": 3, "balance": "2.50", "digits": 10}"#),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(a.kind.starts_with("text/csv"), "{}", a.kind);
    let lines: Vec<&str> = a.body.lines().collect();
    assert_eq!(lines[0], "account,pin,balance,currency,expires");
    assert_eq!(lines.len(), 4);
    for l in &lines[1..] {
        let account = l.split(',').next().unwrap();
        assert_eq!(account.len(), 10);
        assert_eq!(
            store.account(account).await.unwrap().balance.to_string(),
            "2.50"
        );
    }

    // The audit log: who did what, and the repeated top-up is not a second change.
    let a = api
        .call("GET", "/api/v1/audit?limit=50", Some(ADMIN), None)
        .await;
    assert_eq!(a.status, 200);
    let log = a.json();
    let actions: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let first_card = lines[1].split(',').next().unwrap().to_string();
    let want = [
        ("desk", "batch", first_card.as_str()),
        ("desk", "unblock", "700001"),
        ("desk", "block", "700001"),
        ("desk", "topup", "700001"),
        ("desk", "create", "700001"),
    ];
    let got: Vec<(&str, &str, &str)> = actions
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(log[3]["role"], "finance");
    assert!(log[3]["detail"]
        .as_str()
        .unwrap()
        .contains("reference=RCPT-1"));
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_itsp_sees_and_changes_only_its_own_tenant_and_roles_are_enforced() {
    let (_dir, store, running, api) = start().await;
    // The demo card belongs to the default tenant: invisible to acme.
    let a = api
        .call("GET", "/api/v1/accounts/000070", Some(ACME), None)
        .await;
    assert_eq!(a.error(404), "no account 000070");
    let a = api
        .call(
            "POST",
            "/api/v1/accounts/000070/topups",
            Some(ACME),
            Some(r#"{"amount": "1", "reference": "X"}"#),
        )
        .await;
    assert_eq!(a.status, 404);
    let a = api
        .call("POST", "/api/v1/accounts/000070/block", Some(ACME), None)
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(
        store.account("000070").await.unwrap().status.as_str(),
        "active"
    );
    // It creates cards in its own tenant only.
    let a = api
        .call(
            "POST",
            "/api/v1/accounts",
            Some(ACME),
            Some(r#"{"account": "800001", "pin": "1111", "tenant": "other"}"#),
        )
        .await;
    assert!(a.error(403).contains("tenant acme only"));
    let a = api
        .call(
            "POST",
            "/api/v1/accounts",
            Some(ACME),
            Some(r#"{"account": "800001", "pin": "1111", "balance": "3"}"#),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json()["tenant"], "acme");
    let a = api
        .call(
            "POST",
            "/api/v1/accounts/800001/topups",
            Some(ACME),
            Some(r#"{"amount": "1.25", "reference": "A-1"}"#),
        )
        .await;
    assert_eq!(a.json()["balance"], "4.25");
    // Call records by account only; none of rate decks or the audit log.
    let a = api.call("GET", "/api/v1/calls", Some(ACME), None).await;
    assert!(a.error(403).contains("by account"));
    let a = api
        .call(
            "GET",
            "/api/v1/calls?account=800001&format=csv",
            Some(ACME),
            None,
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(
        a.body.starts_with("conf_id,session_id,account"),
        "{}",
        a.body
    );
    // A gateway chose this conference id (RADIUS): in the CSV it is text, not a formula.
    let evil = "=HYPERLINK(\"http://evil.example/\",\"x\")";
    let held = store
        .authorize_call(
            &rating::store::CallRequest {
                auth: rating::store::AuthRequest {
                    account: "800001".into(),
                    pin: Some("1111".into()),
                    ani: None,
                    access_number: "-1+1".into(),
                    session_id: "@SUM(A1)".into(),
                    tenant: None,
                    authenticated: false,
                },
                destination: "5555233".into(),
                conf_id: evil.into(),
                whole_credit: false,
                rate_deck: None,
            },
            Utc::now(),
        )
        .await;
    assert!(held.code.is_success(), "{held:?}");
    store
        .settle(
            evil,
            &rating::store::CallEnd {
                connect_at: None,
                disconnect_at: Utc::now(),
                cause: "+cause".into(),
                voice_quality: None,
                gateway: String::new(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let a = api
        .call(
            "GET",
            "/api/v1/calls?account=800001&format=csv",
            Some(ACME),
            None,
        )
        .await;
    let row = a.body.lines().nth(1).unwrap_or_default().to_string();
    for cell in ["\"'=HYPERLINK(", "'@SUM(A1)", "'-1+1", "'+cause"] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    let a = api
        .call("GET", "/api/v1/calls?account=000070", Some(ACME), None)
        .await;
    assert_eq!(a.status, 404);
    let deck = "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n44,UK,0.05,0,60,60,0\n";
    for token in [ACME, FINANCE] {
        let a = api
            .call("PUT", "/api/v1/rate-decks/uk", Some(token), Some(deck))
            .await;
        assert!(a.error(403).contains("admin"));
    }
    let a = api.call("GET", "/api/v1/audit", Some(ACME), None).await;
    assert_eq!(a.status, 403);
    // The admin loads a deck; a broken one names its line and changes nothing.
    let a = api
        .call("PUT", "/api/v1/rate-decks/uk", Some(ADMIN), Some(deck))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["rows"], 1);
    let broken = "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n44,UK,lots,0,60,60,0\n";
    let a = api
        .call("PUT", "/api/v1/rate-decks/uk", Some(ADMIN), Some(broken))
        .await;
    assert!(a.error(422).contains("line 2"), "{}", a.body);
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_with_a_reason_and_change_nothing() {
    let (_dir, store, running, api) = start().await;
    let post = |path: &'static str, body: &'static str| {
        let api = &api;
        async move { api.call("POST", path, Some(FINANCE), Some(body)).await }
    };
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "/api/v1/accounts/000070/topups",
            "{\"amount\": ",
            400,
            "JSON",
        ),
        (
            "/api/v1/accounts/000070/topups",
            r#"{"amount": "10"}"#,
            422,
            "reference",
        ),
        (
            "/api/v1/accounts/000070/topups",
            r#"{"amount": "10", "reference": "R", "colour": "red"}"#,
            422,
            "colour",
        ),
        (
            "/api/v1/accounts/000070/topups",
            r#"{"amount": "ten", "reference": "R"}"#,
            400,
            "amount",
        ),
        (
            "/api/v1/accounts/000070/topups",
            r#"{"amount": "-5", "reference": "R"}"#,
            400,
            "amount",
        ),
        (
            "/api/v1/accounts/000070/topups",
            r#"{"amount": "5", "reference": ""}"#,
            422,
            "reference",
        ),
        (
            "/api/v1/accounts/999999/topups",
            r#"{"amount": "5", "reference": "R"}"#,
            404,
            "no account",
        ),
        (
            "/api/v1/accounts",
            r#"{"account": "700009", "pin": "12", "balance": "1"}"#,
            422,
            "PIN",
        ),
        (
            "/api/v1/accounts",
            r#"{"account": "700009", "pin": "1234", "expires": "31/12/2027"}"#,
            400,
            "expires",
        ),
        (
            "/api/v1/accounts",
            r#"{"account": "000070", "pin": "1234"}"#,
            409,
            "exists",
        ),
        (
            "/api/v1/accounts/batch",
            r#"{"count": 0, "balance": "1"}"#,
            400,
            "count",
        ),
        (
            "/api/v1/accounts/batch",
            r#"{"count": 5, "balance": "1", "digits": 3}"#,
            400,
            "digits",
        ),
    ];
    for (path, body, status, says) in cases {
        let a = post(path, body).await;
        let why = a.error(*status);
        assert!(
            why.to_lowercase().contains(&says.to_lowercase()),
            "{path} {body}: {status} {why}"
        );
    }
    // A body that is not JSON at all.
    let a = api
        .call(
            "POST",
            "/api/v1/accounts/000070/topups",
            Some(FINANCE),
            Some("amount=5"),
        )
        .await;
    assert_eq!(a.status, 415, "{}", a.body);
    for (path, status) in [
        ("/api/v1/accounts/000070/ledger?limit=0", 400),
        ("/api/v1/accounts/000070/ledger?limit=many", 400),
        ("/api/v1/calls?format=xml", 400),
        ("/api/v1/calls?colour=red", 400),
        ("/api/v1/nothing-here", 404),
    ] {
        let a = api.call("GET", path, Some(FINANCE), None).await;
        a.error(status);
    }
    // Nothing moved, nothing was recorded.
    assert_eq!(
        store.account("000070").await.unwrap().balance.to_string(),
        "32.91"
    );
    assert!(store.audit_log(None, 10).await.unwrap().is_empty());
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_lists_every_route_and_metrics_are_served() {
    let (_dir, store, running, api) = start().await;
    let a = api.call("GET", "/api/v1/openapi.yaml", None, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b2bua::admin::OPENAPI);
    let doc: Value = serde_saphyr::from_str(&a.body).expect("the OpenAPI file is YAML");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    let mut routed: Vec<(String, String)> = b2bua::admin::routes()
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
    // Every documented operation answers something other than "no such route".
    for (m, p) in &routed {
        let path = p
            .replace("{account}", "000070")
            .replace("{name}", "x")
            .replace("{number}", "5551200");
        let a = api.call(&m.to_uppercase(), &path, Some(ADMIN), None).await;
        assert!(
            !(a.status == 404 && a.body.contains("no such route")),
            "{m} {path}: {}",
            a.body
        );
    }
    let a = api.call("GET", "/metrics", None, None).await;
    assert_eq!(a.status, 200);
    for name in [
        "b2bua_calls_total",
        "b2bua_calls_active",
        "b2bua_ivr_sessions",
        "b2bua_cutoffs_total",
        "b2bua_store_seconds",
        "b2bua_radius_accounting_queue 0",
        "b2bua_store_writer_queue 0",
        "b2bua_store_writer_transactions_total",
        "b2bua_store_writer_operations_total",
        "b2bua_store_writer_reruns_total",
    ] {
        assert!(a.body.contains(name), "{name} in\n{}", a.body);
    }
    running.stop().await;
    store.close().await;
}

fn zip_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        z.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// A 16 kHz mono WAV of `ms` milliseconds of a square-ish tone.
fn wav(ms: usize) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    for i in 0..ms * 16 {
        w.write_sample(if i % 20 < 10 { 6000i16 } else { -6000 })
            .unwrap();
    }
    w.finalize().unwrap();
    out.into_inner()
}

fn au(ms: usize) -> Vec<u8> {
    prompts::audio::write_au(&prompts::audio::Audio {
        samples: vec![3000; ms * 8],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_itsp_uploads_its_prompt_set_and_calls_in_progress_keep_theirs() {
    let (dir, store, running, api, assets) = start_with_assets().await;
    let default_welcome = assets.live().prompts("acme").get("en", "welcome").unwrap();
    // A call that started before the upload holds this snapshot.
    let in_progress = assets.live().prompts("acme");

    let good = zip_of(&[
        ("acme/en/en_welcome.wav", wav(700)),
        ("acme/en/en_enter_pin.au", au(400)),
        ("acme/es/es_welcome.au", au(500)),
        ("acme/en/en_summer_promo.au", au(300)),
        (
            "__MACOSX/acme/en/._en_welcome.wav",
            b"resource fork".to_vec(),
        ),
    ]);
    // Finance and other tenants may not touch acme's prompts.
    let a = api
        .put_bytes(
            "/api/v1/prompt-sets/acme",
            FINANCE,
            "application/zip",
            good.clone(),
        )
        .await;
    assert!(a.error(403).contains("admin"));
    let a = api
        .put_bytes(
            "/api/v1/prompt-sets/globex",
            ACME,
            "application/zip",
            good.clone(),
        )
        .await;
    assert!(a.error(403).contains("itsp:acme"));

    let a = api
        .put_bytes("/api/v1/prompt-sets/acme", ACME, "application/zip", good)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = &a.json()["report"];
    assert_eq!(r["files"], 4);
    assert_eq!(r["languages"], serde_json::json!(["en", "es"]));
    assert_eq!(
        r["converted"],
        serde_json::json!(["acme/en/en_welcome.wav"])
    );
    assert_eq!(r["unknown"], serde_json::json!(["en_summer_promo"]));
    assert_eq!(r["ignored"].as_array().unwrap().len(), 1);
    let fallback: Vec<&str> = r["fallback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(fallback.contains(&"en_enter_card_num"), "{fallback:?}");
    assert!(fallback.contains(&"es_enter_pin"));
    assert!(!fallback.contains(&"en_welcome") && !fallback.contains(&"en_enter_pin"));
    assert_eq!(r["missing"], serde_json::json!([]));

    // New calls hear acme's welcome (the 16 kHz WAV, converted: 700 ms = 5600 samples), the
    // default set where acme has no file; the call already in progress keeps the old set.
    let now = assets.live().prompts("acme");
    assert_eq!(now.get("en", "welcome").unwrap().ulaw.len(), 5600);
    assert_eq!(
        now.get("en", "enter_card_num"),
        assets.live().default.get("en", "enter_card_num")
    );
    assert!(
        now.get("zh", "welcome").is_some(),
        "zh comes wholly from the default"
    );
    assert_eq!(in_progress.get("en", "welcome").unwrap(), default_welcome);
    assert_eq!(
        assets
            .live()
            .prompts("default")
            .get("en", "welcome")
            .unwrap(),
        default_welcome,
        "other tenants are untouched"
    );
    // Stored converted, behind an atomically swapped `current` link, and read back at start.
    let current = dir.path().join("tenant-prompts/acme/current");
    assert!(current.join("en/en_welcome.au").is_file());
    assert!(!current.join("en/en_welcome.wav").exists());
    let a = api
        .call("GET", "/api/v1/prompt-sets/acme", Some(ACME), None)
        .await;
    assert_eq!(a.json()["own_set"], true, "{}", a.body);
    assert_eq!(a.json()["report"]["files"], 4);

    // One bad file refuses the whole upload, names the file, and changes nothing.
    let bad = zip_of(&[
        ("en/en_welcome.au", au(100)),
        ("en/en_final.au", b"this is not audio".to_vec()),
        ("en/Final.mp3", vec![1, 2, 3]),
    ]);
    let a = api
        .put_bytes("/api/v1/prompt-sets/acme", ACME, "application/zip", bad)
        .await;
    assert!(a.error(422).contains("nothing changed"));
    let errors = a.json()["report"]["errors"].to_string();
    assert!(
        errors.contains("en/en_final.au: not a Sun .au file"),
        "{errors}"
    );
    assert!(
        errors.contains("en/Final.mp3: not a .au or .wav file"),
        "{errors}"
    );
    assert_eq!(
        assets
            .live()
            .prompts("acme")
            .get("en", "welcome")
            .unwrap()
            .ulaw
            .len(),
        5600
    );
    for (body, why) in [
        (b"just some text".to_vec(), "neither a zip nor a tar"),
        (b"PK\x03\x04garbage".to_vec(), "damaged"),
    ] {
        let a = api
            .put_bytes("/api/v1/prompt-sets/acme", ACME, "application/zip", body)
            .await;
        assert!(a.error(422).contains(why), "{}", a.body);
    }
    let a = api
        .put_bytes("/api/v1/prompt-sets/..", ADMIN, "application/zip", vec![])
        .await;
    assert_eq!(a.status, 422, "{}", a.body);

    // A restart reads acme's set back.
    let mut cfg = Config::demo();
    cfg.tenant_prompts = Some(dir.path().join("tenant-prompts"));
    let reloaded = Assets::load(&cfg).unwrap();
    assert_eq!(
        reloaded
            .live()
            .prompts("acme")
            .get("en", "welcome")
            .unwrap()
            .ulaw
            .len(),
        5600
    );
    let log = store.audit_log(Some("acme"), 10).await.unwrap();
    assert_eq!(log.len(), 1, "one upload succeeded");
    assert_eq!(log[0].action, "prompt-set");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_are_uploaded_and_reloaded_whole_by_admins_only() {
    let (dir, store, running, api, assets) = start_with_assets().await;
    let debitcard = std::fs::read_to_string(ivr::shipped_dir().join("debitcard.yaml")).unwrap();
    let promo = debitcard.replacen("name: debitcard", "name: promo", 1);
    let a = api
        .put_bytes(
            "/api/v1/flows/promo",
            FINANCE,
            "application/yaml",
            promo.clone().into(),
        )
        .await;
    assert!(a.error(403).contains("admin"));
    let a = api
        .put_bytes(
            "/api/v1/flows/promo",
            ACME,
            "application/yaml",
            promo.clone().into(),
        )
        .await;
    assert_eq!(a.status, 403);

    let a = api
        .put_bytes(
            "/api/v1/flows/promo",
            ADMIN,
            "application/yaml",
            promo.clone().into(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.json()["flows"].to_string().contains("\"promo\""));
    assert!(assets.live().flows.contains_key("promo"));
    let a = api.call("GET", "/api/v1/flows", Some(FINANCE), None).await;
    assert!(a.body.contains("\"promo\""), "{}", a.body);
    // The gateways' state is staff's (no engine runs here: an empty list); an ITSP's token
    // does not see the carriers.
    let a = api
        .call("GET", "/api/v1/gateways", Some(FINANCE), None)
        .await;
    assert_eq!((a.status, a.body.as_str()), (200, "[]"));
    let a = api.call("GET", "/api/v1/gateways", Some(ACME), None).await;
    assert_eq!(a.status, 403, "{}", a.body);

    // Mistakes: each named, nothing written, nothing swapped.
    let broken = promo.replacen("start:", "start_typo:", 1);
    let a = api
        .put_bytes(
            "/api/v1/flows/promo",
            ADMIN,
            "application/yaml",
            broken.into(),
        )
        .await;
    assert!(a.error(422).contains("flows do not load"), "{}", a.body);
    assert!(
        a.json()["errors"].to_string().contains("promo.yaml"),
        "{}",
        a.body
    );
    let a = api
        .put_bytes(
            "/api/v1/flows/other",
            ADMIN,
            "application/yaml",
            promo.clone().into(),
        )
        .await;
    assert!(a.error(422).contains("not `other`"));
    let a = api
        .put_bytes(
            "/api/v1/flows/a.b",
            ADMIN,
            "application/yaml",
            promo.clone().into(),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = api
        .put_bytes(
            "/api/v1/flows/promo",
            ADMIN,
            "application/yaml",
            vec![0xff, 0xfe],
        )
        .await;
    assert!(a.error(400).contains("UTF-8"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("flows/promo.yaml")).unwrap(),
        promo
    );

    // A broken file on disk: the reload refuses everything, the live flows stay.
    let before = assets.live();
    std::fs::write(dir.path().join("flows/zzz.yaml"), "name: zzz\nstates: [").unwrap();
    let a = api
        .call("POST", "/api/v1/flows/reload", Some(ADMIN), None)
        .await;
    assert!(a.error(422).contains("nothing changed"));
    assert!(a.json()["errors"].to_string().contains("zzz.yaml"));
    assert!(Arc::ptr_eq(&before, &assets.live()));
    std::fs::remove_file(dir.path().join("flows/zzz.yaml")).unwrap();
    // An access number's flow removed from disk: refused too.
    std::fs::rename(
        dir.path().join("flows/debitcard.yaml"),
        dir.path().join("flows/debitcard.off"),
    )
    .unwrap();
    let a = api
        .call("POST", "/api/v1/flows/reload", Some(ADMIN), None)
        .await;
    assert!(
        a.json()["errors"]
            .to_string()
            .contains("access number 5551200"),
        "{}",
        a.body
    );
    std::fs::rename(
        dir.path().join("flows/debitcard.off"),
        dir.path().join("flows/debitcard.yaml"),
    )
    .unwrap();
    let a = api
        .call("POST", "/api/v1/flows/reload", Some(ADMIN), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!Arc::ptr_eq(&before, &assets.live()));
    let actions: Vec<String> = store
        .audit_log(None, 20)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        vec!["flows-reload", "flow"],
        "successes only, newest first"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cards_reservations_are_listed() {
    let (_dir, store, running, api) = start().await;
    let a = api
        .call(
            "GET",
            "/api/v1/accounts/000070/reservations",
            Some(FINANCE),
            None,
        )
        .await;
    assert_eq!(a.json(), serde_json::json!([]));
    let req = rating::store::CallRequest {
        auth: rating::store::AuthRequest {
            account: "000070".into(),
            pin: Some("1234".into()),
            ani: Some("4085550100".into()),
            access_number: "5551200".into(),
            session_id: "sess-1".into(),
            tenant: None,
            authenticated: false,
        },
        destination: "5555233".into(),
        conf_id: "conf-held-1".into(),
        whole_credit: false,
        rate_deck: None,
    };
    let answer = store.authorize_call(&req, Utc::now()).await;
    assert!(answer.code.is_success(), "{answer:?}");
    let held = answer.reservation.unwrap();
    let a = api
        .call(
            "GET",
            "/api/v1/accounts/000070/reservations",
            Some(FINANCE),
            None,
        )
        .await;
    let rows = a.json();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{}", a.body);
    assert_eq!(rows[0]["conf_id"], "conf-held-1");
    assert_eq!(rows[0]["session_id"], "sess-1");
    assert_eq!(rows[0]["destination"], "5555233");
    assert_eq!(rows[0]["amount"], held.amount.to_string());
    assert_eq!(rows[0]["node"], store.config().node_id);
    assert_eq!(rows[0]["connect_at"], Value::Null);
    let a = api
        .call(
            "GET",
            "/api/v1/accounts/000070/reservations",
            Some(ACME),
            None,
        )
        .await;
    assert_eq!(a.status, 404, "another tenant's card looks absent");
    running.stop().await;
}

/// The scratch flow directory `start_with_assets` made, as a second node's configuration.
fn node_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::demo();
    cfg.flows = dir.join("flows");
    cfg.tenant_prompts = Some(dir.join("tenant-prompts"));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_numbers_are_assigned_by_admins_configured_by_their_itsp_and_seen_by_every_node() {
    let (dir, store, running, api, assets) = start_with_assets().await;
    let body = |b: &str| Some(b.to_string());
    let put = |number: &str, token: &'static str, json: &str| {
        let (api, path, json) = (
            &api,
            format!("/api/v1/access-numbers/{number}"),
            json.to_string(),
        );
        async move { api.call("PUT", &path, Some(token), Some(&json)).await }
    };
    // The demo's numbers are the configuration file's, of tenant `default`: acme has none.
    let a = api
        .call("GET", "/api/v1/access-numbers", Some(ACME), None)
        .await;
    assert_eq!(a.json(), serde_json::json!([]));
    let a = api
        .call("GET", "/api/v1/access-numbers", Some(FINANCE), None)
        .await;
    let all = a.json();
    let numbers: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["number"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["5551200", "5551201", "5551202", "5559000"]);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|n| n["source"] == "config"),
        "{all}"
    );

    // An admin assigns a number to acme; this node serves it at once.
    let a = put(
        "5551299",
        ADMIN,
        r#"{"tenant": "acme", "flow": "debitcard", "languages": ["en"]}"#,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let n = a.json();
    assert_eq!(
        (
            n["tenant"].as_str(),
            n["source"].as_str(),
            n["updated_by"].as_str()
        ),
        (Some("acme"), Some("api"), Some("root"))
    );
    assert_eq!(
        (n["trust_ani"].as_bool(), n["pinless"].as_bool()),
        (Some(false), Some(false))
    );
    let (found, rest) = assets
        .live()
        .access
        .lookup("5551299")
        .map(|(a, r)| (a.clone(), r.to_string()))
        .unwrap();
    assert_eq!(
        (found.tenant.as_str(), found.flow.as_deref(), rest.as_str()),
        ("acme", Some("debitcard"), "")
    );

    // Another node on the same database picks it up at its next refresh.
    let other = Assets::load(&node_config(dir.path())).unwrap();
    assert!(other.live().access.lookup("5551299").is_none());
    other.refresh_access(&store).await.unwrap();
    assert_eq!(
        other.live().access.lookup("5551299").unwrap().0.tenant,
        "acme"
    );

    // acme sees it and changes its languages; a call taken before keeps what it had.
    let before = assets.live();
    let a = api
        .call("GET", "/api/v1/access-numbers", Some(ACME), None)
        .await;
    assert_eq!(a.json().as_array().unwrap().len(), 1, "{}", a.body);
    let a = put("5551299", ACME, r#"{"languages": ["es", "en"]}"#).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["languages"], serde_json::json!(["es", "en"]));
    assert_eq!(a.json()["updated_by"], "acme");
    assert_eq!(
        assets.live().access.lookup("5551299").unwrap().0.languages,
        ["es", "en"]
    );
    assert_eq!(before.access.lookup("5551299").unwrap().0.languages, ["en"]);
    let a = api
        .call("GET", "/api/v1/access-numbers/5551299", Some(ACME), None)
        .await;
    assert_eq!(a.json()["languages"], serde_json::json!(["es", "en"]));
    let audited = store.audit_log(Some("5551299"), 10).await.unwrap();
    assert_eq!(audited.len(), 2);
    assert_eq!(
        (
            audited[0].actor.as_str(),
            audited[0].role.as_str(),
            audited[0].action.as_str()
        ),
        ("acme", "itsp:acme", "access-number")
    );
    assert!(
        audited[0].detail.contains("languages=es,en"),
        "{}",
        audited[0].detail
    );
    // The same settings again (a retried request) change and audit nothing.
    let a = put(
        "5551299",
        ACME,
        r#"{"languages": ["es", "en"], "flow": "debitcard", "trust_ani": false}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(store.audit_log(Some("5551299"), 10).await.unwrap().len(), 2);

    // What an ITSP may not do: trust, ownership, new numbers, others' numbers, removal.
    let e = put("5551299", ACME, r#"{"trust_ani": true}"#)
        .await
        .error(403);
    assert!(e.contains("only an admin may change trust_ani"), "{e}");
    let e = put("5551299", ACME, r#"{"pinless": true}"#)
        .await
        .error(403);
    assert!(e.contains("pinless"), "{e}");
    let e = put("5551299", ACME, r#"{"tenant": "globex"}"#)
        .await
        .error(403);
    assert!(e.contains("another tenant"), "{e}");
    let e = put(
        "5551300",
        ACME,
        r#"{"flow": "debitcard", "languages": ["en"]}"#,
    )
    .await
    .error(404);
    assert!(
        e.contains("no access number 5551300; new numbers are assigned by the operator"),
        "{e}"
    );
    let e = put("5551200", ACME, r#"{"languages": ["en"]}"#)
        .await
        .error(404);
    assert!(e.contains("no access number 5551200"), "{e}");
    let a = api
        .call("DELETE", "/api/v1/access-numbers/5551299", Some(ACME), None)
        .await;
    a.error(403);
    // Finance reads access numbers but changes none.
    let e = put("5551299", FINANCE, r#"{"languages": ["en"]}"#)
        .await
        .error(403);
    assert!(e.contains("finance"), "{e}");
    api.call(
        "DELETE",
        "/api/v1/access-numbers/5551299",
        Some(FINANCE),
        None,
    )
    .await
    .error(403);
    // The configuration file's numbers are changed there, not here.
    let e = put("5551200", ADMIN, r#"{"languages": ["en"]}"#)
        .await
        .error(409);
    assert!(e.contains("fixed in the configuration file"), "{e}");
    api.call(
        "DELETE",
        "/api/v1/access-numbers/5551200",
        Some(ADMIN),
        None,
    )
    .await
    .error(409);
    // A database copy of a configuration file's number (written before the file listed it)
    // is ignored by every node, and an admin may clear it away; the file's number stays.
    let mut copy = store.access_number("5551299").await.unwrap().unwrap();
    copy.number = "5551200".into();
    store.put_access_number(&copy, None).await.unwrap();
    assets.refresh_access(&store).await.unwrap();
    let live = assets.live();
    let (a, _) = live.access.lookup("5551200").unwrap();
    assert_eq!(a.tenant, "default");
    assert_eq!(live.access.shadowed(), ["5551200"]);
    let a = api
        .call(
            "DELETE",
            "/api/v1/access-numbers/5551200",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!((a.status, a.json()["tenant"].as_str()), (200, Some("acme")));
    assert!(assets.live().access.shadowed().is_empty());
    assert_eq!(
        assets.live().access.lookup("5551200").unwrap().0.tenant,
        "default"
    );
    api.call(
        "DELETE",
        "/api/v1/access-numbers/5551200",
        Some(ADMIN),
        None,
    )
    .await
    .error(409);

    // Another tenant's number is invisible to acme.
    let a = put(
        "5551300",
        ADMIN,
        r#"{"tenant": "globex", "flow": "debitcard", "languages": ["en"]}"#,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    api.call("GET", "/api/v1/access-numbers/5551300", Some(ACME), None)
        .await
        .error(404);
    let a = api
        .call("GET", "/api/v1/access-numbers", Some(ACME), None)
        .await;
    assert_eq!(a.json().as_array().unwrap().len(), 1, "{}", a.body);

    // Bad settings are refused with the reason, and change nothing.
    let audit_before = store.audit_log(None, 100).await.unwrap().len();
    for (number, json, status, reason) in [
        ("5551301", "{}", 422, "say which tenant"),
        (
            "5551301",
            r#"{"tenant": "acme", "languages": ["en"]}"#,
            422,
            "needs a flow unless it is pinless",
        ),
        (
            "5551301",
            r#"{"tenant": "acme", "flow": "debitcard", "languages": []}"#,
            422,
            "at least one language",
        ),
        (
            "5551301",
            r#"{"tenant": "acme", "flow": "debitcard", "languages": ["de"]}"#,
            422,
            "tenant acme's prompts have no de",
        ),
        (
            "5551301",
            r#"{"tenant": "acme", "flow": "debitcard", "languages": ["en", "en"]}"#,
            422,
            "listed twice",
        ),
        (
            "5551301",
            r#"{"tenant": "acme", "flow": "debitcard", "languages": ["e n"]}"#,
            422,
            "not a language code",
        ),
        (
            "5551301",
            r#"{"tenant": "acme", "pinless": true, "trust_ani": true, "trusted_only": false, "languages": ["en"]}"#,
            422,
            "trust_ani needs trusted_only",
        ),
        (
            "5551301",
            r#"{"tenant": "acme", "flow": "nosuch", "languages": ["en"]}"#,
            422,
            "no flow `nosuch` is loaded",
        ),
        (
            "5551301",
            r#"{"tenant": "", "flow": "debitcard", "languages": ["en"]}"#,
            422,
            "tenant must not be empty",
        ),
        (
            "5551301",
            r#"{"tenant": "a/b", "flow": "debitcard", "languages": ["en"]}"#,
            422,
            "`a/b` cannot name a tenant",
        ),
        (
            "5551301",
            r#"{"tenant": "acme", "colour": "red"}"#,
            422,
            "unknown field `colour`",
        ),
        (
            "5551301",
            r#"{"tenant": "acme", "pinless": "yes"}"#,
            422,
            "pinless",
        ),
        (
            "55x",
            r#"{"tenant": "acme", "flow": "debitcard", "languages": ["en"]}"#,
            400,
            "1 to 32 digits",
        ),
        ("5551299", "languages=en", 415, "Content-Type"),
        ("5551299", r#"{"languages": ["en"]"#, 400, "JSON"),
    ] {
        let path = format!("/api/v1/access-numbers/{number}");
        let e = api
            .call("PUT", &path, Some(ADMIN), body(json).as_deref())
            .await
            .error(status);
        assert!(e.contains(reason), "{number} {json}: {e}");
    }
    api.call("GET", "/api/v1/access-numbers/55x", Some(ADMIN), None)
        .await
        .error(400);
    assert_eq!(
        store.audit_log(None, 100).await.unwrap().len(),
        audit_before
    );
    assert!(store.access_number("5551301").await.unwrap().is_none());
    assert_eq!(
        store
            .access_number("5551299")
            .await
            .unwrap()
            .unwrap()
            .languages,
        ["es", "en"]
    );

    // A pinless number needs no flow; an admin may make one.
    let a = put("5551302", ADMIN, r#"{"tenant": "acme", "pinless": true, "trust_ani": true, "trusted_only": true, "languages": ["en"]}"#).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let live = assets.live();
    let (p, rest) = live.access.lookup("55513025555233").unwrap();
    assert_eq!(
        (p.number.as_str(), rest, p.pinless),
        ("5551302", "5555233", true)
    );

    // Flows a managed number uses cannot be reloaded away.
    std::fs::remove_file(dir.path().join("flows/debitcard.yaml")).unwrap();
    api.call("POST", "/api/v1/flows/reload", Some(ADMIN), None)
        .await
        .error(422);
    assert!(assets.live().flows.contains_key("debitcard"));

    // Removing a number: it stops being served; a second removal finds nothing.
    let a = api
        .call(
            "DELETE",
            "/api/v1/access-numbers/5551300",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["tenant"], "globex");
    assert!(assets.live().access.lookup("5551300").is_none());
    let e = api
        .call(
            "DELETE",
            "/api/v1/access-numbers/5551300",
            Some(ADMIN),
            None,
        )
        .await
        .error(404);
    assert!(e.contains("no access number 5551300"), "{e}");
    let deleted = store.audit_log(Some("5551300"), 10).await.unwrap();
    assert_eq!(
        (deleted[0].action.as_str(), deleted[0].actor.as_str()),
        ("access-number-delete", "root")
    );
    running.stop().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cookies_and_an_itsps_minting_are_kept_within_their_limits() {
    const METRICS: &str = "metrics-token-0123456789";
    let (_dir, store, running, api, _) = start_custom(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.metrics_token = Some(METRICS.into());
        c.secure_cookies = true;
        c.session = std::time::Duration::from_secs(600);
        c.minting.tenants.insert(
            "acme".into(),
            (
                rating::Money::parse("50", false).unwrap(),
                rating::Money::parse("80", false).unwrap(),
            ),
        );
    })
    .await;
    // /metrics lives on its own address, and asks for its token there.
    let a = api.call("GET", "/metrics", None, None).await;
    assert_eq!(a.status, 404, "not beside the API: {}", a.body);
    let m = Api {
        base: format!("http://{}", running.metrics),
        agent: api.agent.clone(),
    };
    assert_eq!(m.call("GET", "/metrics", None, None).await.status, 401);
    assert_eq!(
        m.call("GET", "/metrics", Some(ADMIN), None).await.status,
        401
    );
    let a = m.call("GET", "/metrics", Some(METRICS), None).await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("b2bua_calls_total"), "{}", a.body);
    // The console's cookie: a session id, Secure, for the configured time.
    let (agent, url) = (api.agent.clone(), format!("{}/console/login", api.base));
    let set = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let _ = &agent;
        let r = agent
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(format!("token={FINANCE}"))
            .unwrap();
        r.headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    })
    .await
    .unwrap();
    let _ = agent;
    assert!(
        set.contains("; Secure") && set.contains("Max-Age=600"),
        "{set}"
    );
    assert!(!set.contains(FINANCE));
    // An ITSP mints within its limits: 50 a request, 80 a day; admins and finance are not
    // limited. A refused request moves nothing.
    let card = |n: u32, balance: &str| {
        format!(r#"{{"account": "80{n:04}", "pin": "1111", "balance": "{balance}"}}"#)
    };
    let a = api
        .call("POST", "/api/v1/accounts", Some(ACME), Some(&card(1, "60")))
        .await;
    assert!(a.error(403).contains("at most 50.00"), "{}", a.body);
    let a = api
        .call("POST", "/api/v1/accounts", Some(ACME), Some(&card(1, "40")))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let top = |token: &'static str, amount: &str, reference: &str| {
        let body = format!(r#"{{"amount": "{amount}", "reference": "{reference}"}}"#);
        let api = &api;
        async move {
            api.call(
                "POST",
                "/api/v1/accounts/800001/topups",
                Some(token),
                Some(&body),
            )
            .await
        }
    };
    let a = top(ACME, "30", "T-1").await;
    assert_eq!(a.status, 201, "{}", a.body);
    // 70 so far today: 20 more would pass 80.
    let a = top(ACME, "20", "T-2").await;
    assert!(a.error(403).contains("at most 80.00"), "{}", a.body);
    let a = api
        .call(
            "POST",
            "/api/v1/accounts/batch",
            Some(ACME),
            Some(r#"{"count": 3, "balance": "5"}"#),
        )
        .await;
    assert_eq!(a.status, 403, "15 more would pass 80: {}", a.body);
    // The retry of an applied top-up takes nothing more.
    let a = top(ACME, "30", "T-1").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = top(FINANCE, "500", "F-1").await;
    assert_eq!(a.status, 201, "finance is not limited: {}", a.body);
    assert_eq!(
        store.account("800001").await.unwrap().balance,
        rating::Money::parse("570", false).unwrap()
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_at_the_same_time_are_unpacked_one_at_a_time() {
    let (_dir, _store, running, api, assets) = start_with_assets().await;
    // Four tenants' archives, each a few seconds of audio per prompt, sent together.
    let archive = |t: &str| {
        zip_of(&[
            (&format!("{t}/en/en_welcome.au"), au(4000)),
            (&format!("{t}/en/en_enter_pin.au"), au(4000)),
            (&format!("{t}/en/en_enter_card_num.au"), au(4000)),
        ])
    };
    let api = std::sync::Arc::new(api);
    let mut tasks = tokio::task::JoinSet::new();
    for t in ["t1", "t2", "t3", "t4"] {
        let (api, body) = (api.clone(), archive(t));
        tasks.spawn(async move {
            api.put_bytes(
                &format!("/api/v1/prompt-sets/{t}"),
                ADMIN,
                "application/zip",
                body,
            )
            .await
            .status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(
        assets.unpacking_peak(),
        1,
        "never two archives unpacked at once"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_scoped_to_the_callers_tenant_and_bad_ranges_are_explained() {
    let (_dir, store, running, api) = start().await;
    let mut acme = NewAccount::new("100001", Some("4321"), Money::parse("10", false).unwrap());
    acme.tenant = "acme".into();
    store.create_account(&acme, Utc::now()).await.unwrap();
    let yesterday = Utc::now() - chrono::Duration::days(1);
    let today = Utc::now() - chrono::Duration::seconds(200);
    // 60 s to North America at 0.015/min; 120 s to London at 0.02/min.
    settled_call(
        &store,
        "000070",
        Some("1234"),
        "12125550100",
        yesterday,
        60,
        "gw-a",
    )
    .await;
    settled_call(
        &store,
        "100001",
        Some("4321"),
        "442071234567",
        today,
        120,
        "gw-b",
    )
    .await;
    let get = |path: String, token: &'static str| {
        let api = &api;
        async move { api.call("GET", &path, Some(token), None).await }
    };

    let all = get("/api/v1/reports/summary".into(), FINANCE).await;
    assert_eq!(all.status, 200, "{}", all.body);
    let all = all.json();
    assert_eq!(all["time_zone"], "UTC");
    let rows = all["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        30,
        "one row per day of the default range: {rows:?}"
    );
    let day = |d: chrono::DateTime<Utc>| d.date_naive().to_string();
    let row = |rows: &[Value], d: &str| {
        rows.iter()
            .find(|r| r["period"] == d)
            .cloned()
            .unwrap_or_else(|| panic!("no {d} in {rows:?}"))
    };
    assert_eq!(row(rows, &day(yesterday))["revenue"], "0.015");
    assert_eq!(row(rows, &day(today))["revenue"], "0.04");
    assert_eq!(row(rows, &day(today))["answered"], 1);
    assert_eq!(row(rows, &day(today))["acd_seconds"], 120);
    // Cards sold today: the demo's 32.91 and 10.00, and acme's 10.00.
    assert_eq!(row(rows, &day(Utc::now()))["issued"], "52.91");

    // Finance may look at one tenant; an ITSP sees its own and nothing else.
    let acme_only = get("/api/v1/reports/gateways?tenant=acme".into(), FINANCE)
        .await
        .json();
    let gws: Vec<&str> = acme_only["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["gateway"].as_str().unwrap())
        .collect();
    assert_eq!(gws, ["gw-b"]);
    let own = get("/api/v1/reports/gateways".into(), ACME).await.json();
    assert_eq!(own["tenant"], "acme");
    assert_eq!(own["rows"].as_array().unwrap().len(), 1);
    assert_eq!(own["rows"][0]["revenue"], "0.04");
    let e = get("/api/v1/reports/summary?tenant=default".into(), ACME)
        .await
        .error(403);
    assert!(e.contains("tenant acme's reports only"), "{e}");

    // The same table as CSV.
    let csv = get("/api/v1/reports/destinations?format=csv".into(), FINANCE).await;
    assert_eq!(csv.status, 200);
    assert!(csv.kind.starts_with("text/csv"), "{}", csv.kind);
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines[0],
        "group,currency,attempts,answered,asr_percent,acd_seconds,minutes,revenue"
    );
    assert!(
        lines.contains(&"United Kingdom - London,USD,1,1,100.0,120,2.00,0.04"),
        "{}",
        csv.body
    );

    // Bad requests say what is wrong.
    for (q, why) in [
        (
            "summary?from=2026-02-30",
            "from: `2026-02-30` is not a date",
        ),
        ("summary?from=2026-12-02&to=2026-12-01", "before it starts"),
        ("summary?from=2020-01-01&to=2026-12-01", "at most 400"),
        ("summary?by=year", "by: `year` is not day, week or month"),
        ("summary?format=xml", "format `xml`"),
        ("summary?colour=red", "unknown field `colour`"),
    ] {
        let e = get(format!("/api/v1/reports/{q}"), FINANCE)
            .await
            .error(400);
        assert!(e.contains(why), "{q}: {e}");
    }
    let e = get("/api/v1/reports/profits".into(), FINANCE)
        .await
        .error(404);
    assert!(e.contains("no report `profits`"), "{e}");
    assert_eq!(
        api.call("GET", "/api/v1/reports/summary", None, None)
            .await
            .status,
        401
    );
    running.stop().await;
}

/// Every `b2bua_…` metric a dashboard query or alert names, without the suffixes Prometheus
/// adds to histogram series.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("b2bua_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_ask_for_metrics_we_serve() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let alerts = std::fs::read_to_string(dist.join("prometheus/alerts.yml")).unwrap();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dist.join("grafana/b2bua.json")).unwrap())
            .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().replace("$instance", ".*"))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");

    let (_dir, store, running, api) = start().await;
    let served = api.call("GET", "/metrics", None, None).await.body;
    let mut named = metric_names(&alerts);
    named.extend(exprs.iter().flat_map(|e| metric_names(e)));
    for name in [
        "b2bua_store_seconds",
        "b2bua_rtp_lost_total",
        "b2bua_gateway_up",
    ] {
        assert!(named.contains(name), "{name} in {named:?}");
    }
    for name in &named {
        // OpenMetrics names a counter's family without `_total`.
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            served.contains(&format!("# TYPE {family} ")),
            "{name} is not a metric of ours:\n{served}"
        );
    }
    running.stop().await;
    store.close().await;

    // The dashboard's queries parse: promtool checks them as recording rules.
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("B2BUA_REQUIRE_PEERS").is_none(),
            "promtool is not installed (Debian prometheus) and B2BUA_REQUIRE_PEERS is set"
        );
        eprintln!(
            "skipped the query check: promtool is not installed (apt-get install prometheus)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let file = dir.path().join("dashboard.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And a broken query would have been caught.
    std::fs::write(&file, "groups:\n  - name: d\n    rules:\n      - record: x:y\n        expr: \"sum(rate(b2bua_calls_total[1m])\"\n").unwrap();
    assert!(!std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap()
        .status
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_listed_blocked_whole_and_exported_within_their_tenant() {
    let (_dir, store, running, api) = start().await;
    let make = |token: &'static str, body: &'static str| {
        let api = &api;
        async move {
            api.call("POST", "/api/v1/accounts/batch", Some(token), Some(body))
                .await
        }
    };
    let a = make(
        FINANCE,
        r#"{"count": 4, "balance": "5", "digits": 10, "name": "December retail"}"#,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let cards: Vec<String> = a
        .body
        .lines()
        .skip(1)
        .map(|l| l[..10].to_string())
        .collect();
    let a = make(ACME, r#"{"count": 2, "balance": "1", "digits": 10}"#).await;
    assert_eq!(a.status, 201, "{}", a.body);

    let list = api
        .call("GET", "/api/v1/batches", Some(FINANCE), None)
        .await
        .json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let retail = list
        .iter()
        .find(|b| b["name"] == "December retail")
        .unwrap()
        .clone();
    let id = retail["id"].as_str().unwrap().to_string();
    assert_eq!(
        (&retail["cards"], &retail["unused"], &retail["money_left"]),
        (&json_n(4), &json_n(4), &Value::from("20.00"))
    );
    assert_eq!(retail["created_by"], "desk");
    // The ITSP's batch is named by its id and is the only one the ITSP sees.
    let own = api
        .call("GET", "/api/v1/batches", Some(ACME), None)
        .await
        .json();
    assert_eq!(own.as_array().unwrap().len(), 1);
    assert_eq!(own[0]["tenant"], "acme");
    assert_eq!(own[0]["name"], own[0]["id"]);
    let e = api
        .call("GET", &format!("/api/v1/batches/{id}"), Some(ACME), None)
        .await
        .error(404);
    assert!(e.contains("no batch"), "{e}");
    let e = api
        .call(
            "POST",
            &format!("/api/v1/batches/{id}/block"),
            Some(ACME),
            None,
        )
        .await
        .error(404);
    assert!(e.contains("no batch"), "{e}");
    assert_eq!(
        api.call("GET", "/api/v1/batches?tenant=default", Some(ACME), None)
            .await
            .status,
        403
    );

    // Block it whole: every card refuses calls, one audit entry says how many.
    let a = api
        .call(
            "POST",
            &format!("/api/v1/batches/{id}/block"),
            Some(FINANCE),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let b = a.json();
    assert_eq!((&b["changed"], &b["blocked"]), (&json_n(4), &json_n(4)));
    assert_eq!(b["money_left"], "0.00");
    for c in &cards {
        assert_eq!(store.account(c).await.unwrap().status.as_str(), "blocked");
    }
    let log = store.audit_log(Some(&id), 10).await.unwrap();
    assert_eq!(
        (log.len(), log[0].action.as_str(), log[0].detail.as_str()),
        (1, "batch-block", "cards=4")
    );
    let a = api
        .call(
            "POST",
            &format!("/api/v1/batches/{id}/unblock"),
            Some(FINANCE),
            None,
        )
        .await
        .json();
    assert_eq!((&a["changed"], &a["unused"]), (&json_n(4), &json_n(4)));

    // The card list, as JSON and CSV, never with a PIN.
    let j = api
        .call(
            "GET",
            &format!("/api/v1/batches/{id}/cards"),
            Some(FINANCE),
            None,
        )
        .await
        .json();
    assert_eq!(j.as_array().unwrap().len(), 4);
    assert!(j[0].get("pin").is_none());
    let csv = api
        .call(
            "GET",
            &format!("/api/v1/batches/{id}/cards?format=csv"),
            Some(FINANCE),
            None,
        )
        .await;
    assert!(csv.kind.starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "account,status,balance,expires,used");
    assert_eq!(lines.len(), 5);
    assert!(
        lines.contains(&format!("{},active,5.00,,no", cards[0]).as_str()),
        "{}",
        csv.body
    );

    // Bad requests say what is wrong and change nothing.
    for (m, path, status, why) in [
        (
            "GET",
            "/api/v1/batches/B-nope".to_string(),
            404,
            "no batch B-nope",
        ),
        (
            "POST",
            "/api/v1/batches/drop%20table/block".to_string(),
            404,
            "no batch",
        ),
        (
            "GET",
            format!("/api/v1/batches/{id}/cards?format=xls"),
            400,
            "format `xls`",
        ),
        (
            "GET",
            "/api/v1/batches?limit=0".to_string(),
            400,
            "limit must be 1 to 1000",
        ),
        (
            "GET",
            "/api/v1/batches?colour=red".to_string(),
            400,
            "unknown field `colour`",
        ),
    ] {
        let e = api.call(m, &path, Some(FINANCE), None).await.error(status);
        assert!(e.contains(why), "{path}: {e}");
    }
    let e = make(
        FINANCE,
        r#"{"count": 1, "balance": "5", "name": "line\nbreak"}"#,
    )
    .await
    .error(422);
    assert!(e.contains("batch name"), "{e}");
    assert_eq!(store.batches(None, 10, Utc::now()).await.unwrap().len(), 2);
    running.stop().await;
}

fn json_n(n: i64) -> Value {
    Value::from(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cards_story_links_its_calls_and_finance_refunds_with_a_reason() {
    let (_dir, store, running, api) = start().await;
    let at = Utc::now() - chrono::Duration::seconds(100);
    settled_call(
        &store,
        "000070",
        Some("1234"),
        "12125550100",
        at,
        60,
        "gw-a",
    )
    .await;
    let calls = api
        .call("GET", "/api/v1/calls?account=000070", Some(FINANCE), None)
        .await
        .json();
    let conf = calls[0]["conf_id"].as_str().unwrap().to_string();
    // The ledger's call entry names the call; the call names its rate row and gateway.
    let ledger = api
        .call("GET", "/api/v1/accounts/000070/ledger", Some(FINANCE), None)
        .await
        .json();
    assert!(
        ledger
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "call" && e["reference"] == conf.as_str()),
        "{ledger}"
    );
    let c = api
        .call("GET", &format!("/api/v1/calls/{conf}"), Some(FINANCE), None)
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let c = c.json();
    assert_eq!(
        (&c["gateway"], &c["billed_seconds"], &c["cost"]),
        (
            &Value::from("gw-a"),
            &Value::from(60),
            &Value::from("0.015")
        )
    );
    assert!(
        c["rate_description"]
            .as_str()
            .unwrap()
            .contains("North America"),
        "{c}"
    );
    assert_eq!(c["radius_accounting"], Value::Array(vec![]));
    // Another tenant's call is no call at all to an ITSP.
    let e = api
        .call("GET", &format!("/api/v1/calls/{conf}"), Some(ACME), None)
        .await
        .error(404);
    assert!(e.contains("no call record"), "{e}");

    let post = |token: &'static str, body: &'static str| {
        let api = &api;
        async move {
            api.call(
                "POST",
                "/api/v1/accounts/000070/adjustments",
                Some(token),
                Some(body),
            )
            .await
        }
    };
    let r = post(
        FINANCE,
        r#"{"kind": "refund", "amount": "0.015", "reference": "TKT-1", "note": "dropped call"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["balance"], "32.91");
    // Once per reference.
    let r = post(
        FINANCE,
        r#"{"kind": "refund", "amount": "0.015", "reference": "TKT-1", "note": "dropped call"}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["applied"].clone()),
        (200, Value::from(false))
    );
    let r = post(
        FINANCE,
        r#"{"kind": "adjustment", "amount": "-0.91", "reference": "ADJ-1", "note": "rounding"}"#,
    )
    .await;
    assert_eq!(r.json()["balance"], "32.00");
    for (body, status, why) in [
        (
            r#"{"kind": "refund", "amount": "1", "reference": "TKT-2", "note": " "}"#,
            400,
            "note: say why",
        ),
        (
            r#"{"kind": "refund", "amount": "-1", "reference": "TKT-3", "note": "x"}"#,
            400,
            "amount:",
        ),
        (
            r#"{"kind": "adjustment", "amount": "0", "reference": "TKT-4", "note": "x"}"#,
            400,
            "moves nothing",
        ),
        (
            r#"{"kind": "bonus", "amount": "1", "reference": "TKT-5", "note": "x"}"#,
            400,
            "kind `bonus`",
        ),
        (
            r#"{"kind": "refund", "amount": "1", "reference": "TKT-6"}"#,
            422,
            "note",
        ),
    ] {
        let e = post(FINANCE, body).await.error(status);
        assert!(e.contains(why), "{body}: {e}");
    }
    let e = post(
        ACME,
        r#"{"kind": "refund", "amount": "1", "reference": "TKT-7", "note": "x"}"#,
    )
    .await
    .error(403);
    assert!(e.contains("finance or admin"), "{e}");
    assert_eq!(
        store.account("000070").await.unwrap().balance.to_string(),
        "32.00"
    );
    let log = store.audit_log(Some("000070"), 10).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["adjust", "refund"],
        "the repeat is not a second change"
    );
    assert!(
        log[1].detail.contains("note=dropped call"),
        "{}",
        log[1].detail
    );
    running.stop().await;
}

/// Softphone subscribers through the API: an ITSP puts SIP accounts on its own cards only,
/// sees and bars its own subscribers only, finance sees all; a drawn password is answered
/// once and no answer ever carries an HA1; every change is audited; malformed requests are
/// 4xx with a reason and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_accounts_are_managed_within_their_tenant() {
    let (_dir, store, running, api) = start().await;
    let mut acme_card = NewAccount::new("800201", Some("1111"), Money::parse("5", false).unwrap());
    acme_card.tenant = "acme".into();
    store.create_account(&acme_card, Utc::now()).await.unwrap();
    let made = api
        .call(
            "POST",
            "/api/v1/sip-accounts",
            Some(ACME),
            Some(r#"{"username": "alice", "domain": "voip.acme.example", "card": "800201", "caller_id": "+14085551234"}"#),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let j = made.json();
    assert_eq!(j["tenant"], "acme");
    assert_eq!(
        j["password"].as_str().map(str::len),
        Some(16),
        "drawn and answered once"
    );
    assert!(!made.body.contains("ha1"), "{}", made.body);
    // Another tenant's card is not there for it.
    let a = api
        .call(
            "POST",
            "/api/v1/sip-accounts",
            Some(ACME),
            Some(r#"{"username": "bob", "domain": "voip.acme.example", "card": "000070"}"#),
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.body);
    let b = api
        .call(
            "POST",
            "/api/v1/sip-accounts",
            Some(FINANCE),
            Some(r#"{"username": "bob", "domain": "voip.example.com", "card": "000070", "password": "correct horse"}"#),
        )
        .await;
    assert_eq!(b.status, 201, "{}", b.body);
    assert!(
        b.json().get("password").is_none(),
        "a given password is not echoed"
    );

    let mine = api
        .call("GET", "/api/v1/sip-accounts", Some(ACME), None)
        .await
        .json();
    assert_eq!(mine["sip_accounts"].as_array().unwrap().len(), 1);
    let all = api
        .call("GET", "/api/v1/sip-accounts", Some(FINANCE), None)
        .await
        .json();
    assert_eq!(
        all["sip_accounts"].as_array().unwrap().len(),
        3,
        "with the demo's"
    );
    let a = api
        .call(
            "GET",
            "/api/v1/sip-accounts?tenant=default",
            Some(ACME),
            None,
        )
        .await;
    assert!(a.error(403).contains("acme's SIP accounts only"));
    let a = api
        .call(
            "GET",
            "/api/v1/sip-accounts/bob@voip.example.com",
            Some(ACME),
            None,
        )
        .await;
    assert_eq!(a.error(404), "no SIP account bob@voip.example.com");
    let of_card = api
        .call(
            "GET",
            "/api/v1/accounts/800201/sip-accounts",
            Some(ACME),
            None,
        )
        .await
        .json();
    assert_eq!(of_card["sip_accounts"][0]["aor"], "alice@voip.acme.example");

    // The ITSP bars and blocks its own subscriber.
    let barred = api
        .call(
            "PUT",
            "/api/v1/sip-accounts/alice@voip.acme.example/barring",
            Some(ACME),
            Some(r#"{"international": true}"#),
        )
        .await;
    assert_eq!(barred.status, 200, "{}", barred.body);
    assert_eq!(barred.json()["barring"]["international"], true);
    assert_eq!(barred.json()["barring"]["premium"], false);
    let a = api
        .call(
            "PUT",
            "/api/v1/sip-accounts/bob@voip.example.com/barring",
            Some(ACME),
            Some(r#"{"premium": true}"#),
        )
        .await;
    assert_eq!(a.status, 404);
    let blocked = api
        .call(
            "POST",
            "/api/v1/sip-accounts/alice@voip.acme.example/block",
            Some(ACME),
            None,
        )
        .await;
    assert_eq!(blocked.json()["status"], "blocked");
    let shown = api
        .call(
            "GET",
            "/api/v1/sip-accounts/alice@voip.acme.example",
            Some(ACME),
            None,
        )
        .await
        .json();
    assert_eq!(shown["registrations"], serde_json::json!([]));
    let pw = api
        .call(
            "PUT",
            "/api/v1/sip-accounts/alice@voip.acme.example/password",
            Some(ACME),
            Some("{}"),
        )
        .await;
    assert_eq!(pw.status, 200, "{}", pw.body);
    assert!(pw.json()["password"].is_string());

    // A DID of acme's rings its subscriber (phone-to-PC): the operator assigns the number,
    // the ITSP points it at one of its own SIP accounts, never at another tenant's.
    let did = |token: &'static str, json: &'static str| {
        let api = &api;
        async move {
            api.call(
                "PUT",
                "/api/v1/access-numbers/5559100",
                Some(token),
                Some(json),
            )
            .await
        }
    };
    let a = did(
        ADMIN,
        r#"{"tenant": "acme", "languages": ["en"], "trusted_only": true, "subscriber": "alice@voip.acme.example"}"#,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json()["subscriber"], "alice@voip.acme.example");
    assert_eq!(a.json()["flow"], serde_json::Value::Null);
    let a = did(ACME, r#"{"subscriber": "bob@voip.example.com"}"#).await;
    assert!(
        a.error(422)
            .contains("tenant acme has no SIP account bob@voip.example.com"),
        "{}",
        a.body
    );
    let a = did(ACME, r#"{"subscriber": "alice"}"#).await;
    assert!(a.error(422).contains("user@domain"), "{}", a.body);
    let a = did(ACME, r#"{"flow": "debitcard"}"#).await;
    assert!(
        a.error(422).contains("neither pinless nor runs a flow"),
        "{}",
        a.body
    );
    let a = did(ACME, r#"{"subscriber": "", "flow": "debitcard"}"#).await;
    assert_eq!(a.status, 200, "back to a card number: {}", a.body);
    assert_eq!(a.json()["subscriber"], serde_json::Value::Null);
    let a = api
        .call(
            "PUT",
            "/api/v1/access-numbers/5559101",
            Some(ADMIN),
            Some(r#"{"tenant": "acme", "languages": ["en"], "trusted_only": false, "subscriber": "alice@voip.acme.example"}"#),
        )
        .await;
    assert!(a.error(422).contains("needs trusted_only"), "{}", a.body);

    // Malformed requests: a reason each, nothing changed.
    for (method, path, body, status, says) in [
        ("GET", "/api/v1/sip-accounts/nope", None, 400, "USER@DOMAIN"),
        (
            "POST",
            "/api/v1/sip-accounts",
            Some(
                r#"{"username": "carol", "domain": "voip.acme.example", "card": "800201", "password": "short"}"#,
            ),
            422,
            "8 to 128",
        ),
        (
            "POST",
            "/api/v1/sip-accounts",
            Some(r#"{"username": "alice", "domain": "voip.acme.example", "card": "800201"}"#),
            409,
            "exists already",
        ),
        (
            "POST",
            "/api/v1/sip-accounts",
            Some(
                r#"{"username": "carol", "domain": "voip.acme.example", "card": "800201", "ha1": "x"}"#,
            ),
            422,
            "unknown field",
        ),
        (
            "PUT",
            "/api/v1/sip-accounts/alice@voip.acme.example/barring",
            Some("{}"),
            400,
            "say what to bar",
        ),
        (
            "POST",
            "/api/v1/sip-accounts",
            Some(r#"{"username": "a:b", "domain": "voip.acme.example", "card": "800201"}"#),
            422,
            "not a SIP username",
        ),
    ] {
        let a = api.call(method, path, Some(ACME), body).await;
        let e = a.error(status);
        assert!(e.contains(says), "{method} {path}: {e}");
    }
    assert_eq!(store.sip_accounts(Some("acme")).await.unwrap().len(), 1);

    let gone = api
        .call(
            "DELETE",
            "/api/v1/sip-accounts/alice@voip.acme.example",
            Some(ACME),
            None,
        )
        .await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    let a = api
        .call(
            "DELETE",
            "/api/v1/sip-accounts/alice@voip.acme.example",
            Some(ACME),
            None,
        )
        .await;
    assert_eq!(a.status, 404);
    let log = store
        .audit_log(Some("alice@voip.acme.example"), 20)
        .await
        .unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    for want in [
        "sip-account create",
        "sip-account barring",
        "sip-account block",
        "sip-account password",
        "sip-account delete",
    ] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
    running.stop().await;
}
