//! The routes of `/api/v1` and what each does: read or change the store on behalf of a
//! [`Caller`], check the caller's role and tenant first, and write the audit log after.

use super::{ApiError, Caller, Shared};
use crate::access::{AccessNumber, AccessTable, Source};
use crate::assets::AssetError;
use crate::config::Role;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};
use chrono::Utc;
use prompts::upload::UploadReport;
use rating::batch::{draw_cards, expires_after, last_day, write_batch_csv};
use rating::deck::parse_rates_csv;
use rating::store::{
    AccessRow, Account, AuditEntry, CallRecord, LedgerKind, NewAccount, NewBatch, Posting,
    RecordFilter,
};
use rating::Money;
use serde::Deserialize;
use serde_json::{json, Value};

/// The largest prompt-set archive accepted (the unpacked limits are in `prompts::upload`).
pub(super) const MAX_ARCHIVE: usize = 256 << 20;

/// `/metrics` alone, for its own listen address or beside the API.
pub(super) fn metrics_router(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// How a route's handler is attached.
type Handler = fn() -> MethodRouter<Shared>;

/// A table of routes, each written once as `method "path" => handler` (with an optional
/// `; layer`): the method's name for the OpenAPI check and its axum router come from the
/// same word, so the two cannot disagree.
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:expr $(; $layer:expr)?),* $(,)?) => {
        &[$((stringify!($method), $path, || $method($handler)$(.layer($layer))?)),*]
    };
}

/// Every API route, with its handler: the router is built from this table and the OpenAPI
/// description is tested against it, so neither can list a route the other lacks.
const API: &[(&str, &str, Handler)] = route_table![
    get "/api/v1/openapi.yaml" => openapi,
    post "/api/v1/accounts" => create,
    post "/api/v1/accounts/batch" => batch,
    get "/api/v1/accounts/{account}" => show,
    post "/api/v1/accounts/{account}/block" => block,
    post "/api/v1/accounts/{account}/unblock" => unblock,
    post "/api/v1/accounts/{account}/topups" => topup,
    post "/api/v1/accounts/{account}/adjustments" => adjustment,
    get "/api/v1/accounts/{account}/ledger" => ledger,
    get "/api/v1/calls" => calls,
    get "/api/v1/calls/{conf_id}" => call_detail,
    get "/api/v1/reports/{report}" => report,
    get "/api/v1/accounts/{account}/reservations" => reservations,
    get "/api/v1/accounts/{account}/sip-accounts" => super::subscribers::of_card,
    get "/api/v1/sip-accounts" => super::subscribers::list,
    post "/api/v1/sip-accounts" => super::subscribers::create,
    get "/api/v1/sip-accounts/{aor}" => super::subscribers::show,
    delete "/api/v1/sip-accounts/{aor}" => super::subscribers::delete,
    post "/api/v1/sip-accounts/{aor}/block" => super::subscribers::block,
    post "/api/v1/sip-accounts/{aor}/unblock" => super::subscribers::unblock,
    put "/api/v1/sip-accounts/{aor}/password" => super::subscribers::password,
    put "/api/v1/sip-accounts/{aor}/barring" => super::subscribers::barring,
    get "/api/v1/batches" => super::batches::list,
    get "/api/v1/batches/{id}" => super::batches::show,
    post "/api/v1/batches/{id}/block" => super::batches::block,
    post "/api/v1/batches/{id}/unblock" => super::batches::unblock,
    get "/api/v1/batches/{id}/cards" => super::batches::cards,
    put "/api/v1/rate-decks/{name}" => rate_deck,
    get "/api/v1/prompt-sets/{tenant}" => prompt_set,
    put "/api/v1/prompt-sets/{tenant}" => upload_prompt_set;
        axum::extract::DefaultBodyLimit::max(MAX_ARCHIVE),
    get "/api/v1/flows" => flows,
    get "/api/v1/gateways" => gateways,
    put "/api/v1/flows/{name}" => put_flow,
    post "/api/v1/flows/reload" => reload_flows,
    get "/api/v1/access-numbers" => access_numbers,
    get "/api/v1/access-numbers/{number}" => access_number,
    put "/api/v1/access-numbers/{number}" => put_access_number,
    delete "/api/v1/access-numbers/{number}" => delete_access_number,
    get "/api/v1/audit" => audit,
    get "/api/v1/log-level" => log_level,
    put "/api/v1/log-level" => set_log_level,
];

/// Every route (method, path) the admin listener serves: the API's and `/metrics`.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    API.iter()
        .map(|(m, p, _)| (*m, *p))
        .chain([("get", "/metrics")])
        .collect()
}

pub(super) fn router(state: Shared) -> Router {
    let mut by_path: Vec<(&str, MethodRouter<Shared>)> = Vec::new();
    for (_, path, handler) in API {
        // One method router per path, however many methods it takes.
        match by_path.iter_mut().find(|(p, _)| p == path) {
            Some((_, methods)) => *methods = std::mem::take(methods).merge(handler()),
            None => by_path.push((path, handler())),
        }
    }
    by_path
        .into_iter()
        .fold(Router::new(), |r, (path, methods)| r.route(path, methods))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

/// A JSON body, or a 4xx that says what is wrong with it.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::new(e.status(), e.body_text()))
}

/// A query string, or a 400 that says what is wrong with it.
pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad(e.body_text()))
}

fn money(field: &str, text: &str, negative: bool) -> Result<Money, ApiError> {
    Money::parse(text, negative).map_err(|e| ApiError::bad(format!("{field}: {e}")))
}

/// The audit-log entry for a change `who` makes now.
fn entry(who: &Caller, action: &str, target: &str, detail: String) -> AuditEntry {
    AuditEntry {
        at: Utc::now(),
        actor: who.name.clone(),
        role: who.role.to_string(),
        action: action.into(),
        target: target.into(),
        detail,
        allowance: None,
    }
}

/// What an ITSP's own token may still put on its cards: refused (403) above the per-request
/// limit; the per-day limit is charged by the store with the change itself. Admins and
/// finance are not limited.
fn allowance(
    s: &Shared,
    who: &Caller,
    amount: Money,
) -> Result<Option<rating::store::Allowance>, ApiError> {
    let Some(tenant) = who.tenant() else {
        return Ok(None);
    };
    let (per_request, per_day) = s.cfg.minting.of(tenant);
    if amount > per_request {
        return Err(ApiError::forbidden(format!(
            "an itsp:{tenant} token may put at most {per_request} on cards in one request"
        )));
    }
    Ok(Some(rating::store::Allowance {
        tenant: tenant.to_string(),
        amount,
        per_day,
    }))
}

/// Records a change made outside the database (files, the log filter) or in a table with no
/// money in it; a change whose record cannot be written is reported as failed. Changes to
/// cards and money write their entry in their own transaction instead (`*_audited`).
pub(super) async fn record(
    s: &Shared,
    who: &Caller,
    action: &str,
    target: &str,
    detail: String,
) -> Result<(), ApiError> {
    s.store
        .audit(&entry(who, action, target, detail))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, action, target, "the audit log could not be written");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the change was made but the audit log could not be written: {e}"),
            )
        })
}

/// The card, if the caller may see it (an ITSP's view of another tenant's card is a 404).
pub(super) async fn visible(s: &Shared, who: &Caller, account: &str) -> Result<Account, ApiError> {
    let a = s.store.account(account).await?;
    match who.tenant() {
        Some(t) if t != a.tenant => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no account {account}"),
        )),
        _ => Ok(a),
    }
}

fn account_json(a: &Account) -> Value {
    json!({
        "account": a.account,
        "status": a.status.as_str(),
        "balance": a.balance.to_string(),
        "reserved": a.reserved.to_string(),
        "available": a.available().to_string(),
        "credit_limit": a.credit_limit.to_string(),
        "currency": a.currency,
        "active_calls": a.active_calls,
        "max_calls": a.max_calls,
        "expires": (!last_day(a.expires_at).is_empty()).then(|| last_day(a.expires_at)),
        "language": a.language,
        "tenant": a.tenant,
        "any_tenant": a.any_tenant,
        "rate_deck": a.rate_deck,
        "pinless": a.pinless,
        "redirect": a.redirect.as_ref().map(|r| json!({"code": r.code.code(), "number": r.number})),
        "created_at": a.created_at.to_rfc3339(),
    })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], super::OPENAPI).into_response()
}

/// The Prometheus scrape; with `admin.metrics_token` set, only with that bearer token (the
/// figures say how busy a node is and which limits bite: worth keeping from strangers).
async fn metrics(State(s): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    if let Some(want) = &s.cfg.metrics_token {
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            got.as_bytes(),
            want.as_bytes(),
        )) {
            return ApiError::new(StatusCode::UNAUTHORIZED, "the metrics token is needed")
                .into_response();
        }
    }
    let m = crate::metrics::get();
    if let Ok(n) = s.store.accounting_queue_depth().await {
        m.radius_queue.set(n);
    }
    m.store_writers(s.store.queue_depth(), s.store.writer_stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

/// A card to create, as JSON; amounts are decimal strings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCard {
    account: String,
    pin: Option<String>,
    #[serde(default = "zero")]
    balance: String,
    #[serde(default = "usd")]
    currency: String,
    #[serde(default = "en")]
    language: String,
    /// Last day the card works (UTC), YYYY-MM-DD.
    expires: Option<String>,
    #[serde(default = "one")]
    max_calls: i64,
    tenant: Option<String>,
    #[serde(default = "zero")]
    credit_limit: String,
    #[serde(default)]
    pinless: bool,
    /// Usable on every tenant's access numbers (admins only).
    #[serde(default)]
    any_tenant: bool,
}

fn zero() -> String {
    "0".into()
}
fn usd() -> String {
    "USD".into()
}
fn en() -> String {
    "en".into()
}
fn one() -> i64 {
    1
}

/// The first moment after the last day a card works.
fn expiry(text: &str) -> Result<chrono::DateTime<Utc>, ApiError> {
    expires_after(text).map_err(|e| ApiError::bad(format!("expires: `{text}` {e}")))
}

/// The tenant a new card goes to: an ITSP's own, whatever it asked.
fn tenant_for(who: &Caller, asked: Option<String>) -> Result<String, ApiError> {
    match (who.tenant(), asked) {
        (Some(own), Some(t)) if t != own => Err(ApiError::forbidden(format!(
            "an itsp:{own} token creates cards for tenant {own} only"
        ))),
        (Some(own), _) => Ok(own.to_string()),
        (None, t) => Ok(t.unwrap_or_else(|| "default".into())),
    }
}

async fn create(
    State(s): State<Shared>,
    who: Caller,
    b: Result<Json<NewCard>, JsonRejection>,
) -> Result<Response, ApiError> {
    let c = body(b)?;
    let mut n = NewAccount::new(
        &c.account,
        c.pin.as_deref(),
        money("balance", &c.balance, false)?,
    );
    n.currency = c.currency;
    n.language = c.language;
    n.expires_at = c.expires.as_deref().map(expiry).transpose()?;
    n.max_calls = c.max_calls;
    n.tenant = tenant_for(&who, c.tenant)?;
    n.credit_limit = money("credit_limit", &c.credit_limit, false)?;
    n.pinless = c.pinless;
    if c.any_tenant && who.tenant().is_some() {
        return Err(ApiError::forbidden(
            "only an admin may make a card usable on every tenant's numbers",
        ));
    }
    n.any_tenant = c.any_tenant;
    let detail = format!(
        "balance={} {} tenant={} pinless={} any_tenant={}",
        n.balance, n.currency, n.tenant, n.pinless, n.any_tenant
    );
    let mut audit = entry(&who, "create", &n.account, detail);
    audit.allowance = allowance(&s, &who, n.balance)?;
    s.store
        .create_accounts_audited(std::slice::from_ref(&n), Utc::now(), &audit)
        .await?;
    let a = s.store.account(&n.account).await?;
    Ok((StatusCode::CREATED, Json(account_json(&a))).into_response())
}

/// A batch of cards to create; the answer is their CSV, the only copy of the PINs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Batch {
    pub(super) count: usize,
    pub(super) balance: String,
    #[serde(default = "twelve")]
    pub(super) digits: usize,
    #[serde(default = "four")]
    pub(super) pin_digits: usize,
    #[serde(default = "usd")]
    pub(super) currency: String,
    #[serde(default = "en")]
    pub(super) language: String,
    pub(super) expires: Option<String>,
    pub(super) tenant: Option<String>,
    /// What finance calls the batch; empty: its id.
    #[serde(default)]
    pub(super) name: String,
}

fn twelve() -> usize {
    12
}
fn four() -> usize {
    4
}

/// Cards per API batch: the answer carries them all.
const MAX_BATCH: usize = 10_000;

async fn batch(
    State(s): State<Shared>,
    who: Caller,
    b: Result<Json<Batch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (csv, _, id) = create_batch(&s, &who, body(b)?).await?;
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.csv\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::LOCATION, format!("/api/v1/batches/{id}")),
        ],
        csv,
    )
        .into_response())
}

/// Draws and creates a batch of cards: their CSV (the only copy of the PINs), the first
/// card number and the batch's id. Shared by the API and the console.
pub(super) async fn create_batch(
    s: &Shared,
    who: &Caller,
    b: Batch,
) -> Result<(Vec<u8>, String, String), ApiError> {
    if !(1..=MAX_BATCH).contains(&b.count) {
        return Err(ApiError::bad(format!("count must be 1 to {MAX_BATCH}")));
    }
    if !(6..=20).contains(&b.digits) || !(4..=12).contains(&b.pin_digits) {
        return Err(ApiError::bad(
            "digits must be 6 to 20 and pin_digits 4 to 12",
        ));
    }
    let mut t = NewAccount::new("", None, money("balance", &b.balance, false)?);
    t.currency = b.currency;
    t.language = b.language;
    t.expires_at = b.expires.as_deref().map(expiry).transpose()?;
    t.tenant = tenant_for(who, b.tenant)?;
    let mut last = None;
    for _ in 0..3 {
        let cards = draw_cards(b.count, b.digits, b.pin_digits, &t);
        let first = cards[0].account.clone();
        let detail = format!(
            "count={} balance={} {} tenant={} first={first} name={}",
            b.count, t.balance, t.currency, t.tenant, b.name
        );
        let mut audit = entry(who, "batch", &first, detail);
        let total = Money::from_micros(
            t.balance
                .micros()
                .saturating_mul(i64::try_from(b.count).unwrap_or(i64::MAX)),
        );
        audit.allowance = allowance(s, who, total)?;
        let batch = NewBatch {
            name: b.name.clone(),
            created_by: who.name.clone(),
        };
        match s
            .store
            .create_batch(&batch, &cards, Utc::now(), || {}, Some(&audit))
            .await
        {
            Ok(id) => {
                let mut csv = Vec::new();
                write_batch_csv(&mut csv, &cards)
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
                return Ok((csv, first, id));
            }
            // A number already taken: draw again.
            Err(rating::StoreError::Conflict(m)) => last = Some(m),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "could not draw unused card numbers ({}); use more digits",
            last.unwrap_or_default()
        ),
    ))
}

async fn show(
    State(s): State<Shared>,
    who: Caller,
    Path(account): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(account_json(&visible(&s, &who, &account).await?)))
}

/// Blocks or unblocks a card the caller may see. Shared by the API and the console.
pub(super) async fn set_blocked(
    s: &Shared,
    who: &Caller,
    account: &str,
    blocked: bool,
) -> Result<Account, ApiError> {
    visible(s, who, account).await?;
    let action = if blocked { "block" } else { "unblock" };
    let audit = entry(who, action, account, String::new());
    Ok(s.store
        .set_blocked_audited(account, blocked, &audit)
        .await?)
}

async fn block(
    State(s): State<Shared>,
    who: Caller,
    Path(account): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(account_json(
        &set_blocked(&s, &who, &account, true).await?,
    )))
}

async fn unblock(
    State(s): State<Shared>,
    who: Caller,
    Path(account): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(account_json(
        &set_blocked(&s, &who, &account, false).await?,
    )))
}

/// A top-up: `reference` is the receipt or transfer id; repeating it never moves money twice.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TopUp {
    pub(super) amount: String,
    pub(super) reference: String,
    #[serde(default)]
    pub(super) note: String,
}

async fn topup(
    State(s): State<Shared>,
    who: Caller,
    Path(account): Path<String>,
    b: Result<Json<TopUp>, JsonRejection>,
) -> Result<Response, ApiError> {
    let t = top_up(&s, &who, &account, body(b)?).await?;
    let status = if t.applied {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "applied": t.applied,
            "already_applied": !t.applied,
            "amount": t.entry.amount.to_string(),
            "reference": t.entry.reference,
            "posted_at": t.entry.created_at.to_rfc3339(),
            "balance": t.balance.to_string(),
            "currency": t.currency,
        })),
    )
        .into_response())
}

/// What a top-up did: `applied` is false when the reference had already been applied, in
/// which case `entry` is the earlier posting and no money moved.
pub(super) struct ToppedUp {
    pub(super) applied: bool,
    pub(super) entry: rating::store::LedgerEntry,
    pub(super) balance: Money,
    pub(super) currency: String,
}

/// What a posting did, with the card's balance after it.
async fn posted(
    s: &Shared,
    account: &str,
    posting: Posting,
    currency: String,
) -> Result<ToppedUp, ApiError> {
    let (applied, entry) = match posting {
        Posting::Applied(e) => (true, e),
        Posting::AlreadyApplied(e) => (false, e),
    };
    let balance = s.store.account(account).await?.balance;
    Ok(ToppedUp {
        applied,
        entry,
        balance,
        currency,
    })
}

/// Tops up a card the caller may see, idempotently by reference, exactly as the command line
/// does. Shared by the API and the console.
pub(super) async fn top_up(
    s: &Shared,
    who: &Caller,
    account: &str,
    t: TopUp,
) -> Result<ToppedUp, ApiError> {
    let amount =
        Money::parse_positive(&t.amount).map_err(|e| ApiError::bad(format!("amount: {e}")))?;
    let a = visible(s, who, account).await?;
    let detail = format!("amount={} {} reference={}", amount, a.currency, t.reference);
    let mut audit = entry(who, "topup", account, detail);
    audit.allowance = allowance(s, who, amount)?;
    let posting = s
        .store
        .post_audited(
            account,
            LedgerKind::TopUp,
            amount,
            &t.reference,
            &t.note,
            Utc::now(),
            &audit,
        )
        .await?;
    posted(s, account, posting, a.currency).await
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn ledger(
    State(s): State<Shared>,
    who: Caller,
    Path(account): Path<String>,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let limit = query(q)?.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad("limit must be 1 to 10000"));
    }
    visible(&s, &who, &account).await?;
    let rows = s.store.ledger(&account, limit).await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "kind": e.kind,
                    "amount": e.amount.to_string(),
                    "balance_after": e.balance_after.to_string(),
                    "reference": e.reference,
                    "note": e.note,
                    "created_at": e.created_at.to_rfc3339(),
                })
            })
            .collect(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallSearch {
    account: Option<String>,
    session: Option<String>,
    limit: Option<i64>,
    format: Option<String>,
}

async fn calls(
    State(s): State<Shared>,
    who: Caller,
    q: Result<Query<CallSearch>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::bad("limit must be 1 to 100000"));
    }
    match (&q.account, who.tenant()) {
        (Some(a), _) => {
            visible(&s, &who, a).await?;
        }
        (None, Some(_)) => {
            return Err(ApiError::forbidden(
                "an itsp token searches call records by account",
            ))
        }
        (None, None) => {}
    }
    let recs = s
        .store
        .call_records(&RecordFilter {
            account: q.account.clone(),
            session_id: q.session.clone(),
            limit: Some(limit),
        })
        .await?;
    let time = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    match q.format.as_deref().unwrap_or("json") {
        "csv" => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let io =
                |e: csv::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            w.write_record([
                "conf_id",
                "session_id",
                "account",
                "ani",
                "access_number",
                "destination",
                "setup_at",
                "connect_at",
                "disconnect_at",
                "billed_seconds",
                "cost",
                "currency",
                "rate_prefix",
                "disconnect_cause",
                "return_code",
            ])
            .map_err(io)?;
            use rating::export::cell;
            for r in &recs {
                // Every text a caller or a gateway could have chosen goes through `cell`.
                w.write_record([
                    cell(&r.conf_id).as_ref(),
                    &cell(&r.session_id),
                    &cell(&r.account),
                    &cell(&r.ani),
                    &cell(&r.access_number),
                    &cell(&r.destination),
                    &r.setup_at.to_rfc3339(),
                    &time(r.connect_at),
                    &time(r.disconnect_at),
                    &r.billed_seconds.to_string(),
                    &r.cost.to_string(),
                    &cell(&r.currency),
                    &cell(&r.rate_prefix),
                    &cell(&r.disconnect_cause),
                    &r.return_code.to_string(),
                ])
                .map_err(io)?;
            }
            let bytes = w
                .into_inner()
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"calls.csv\"",
                    ),
                ],
                bytes,
            )
                .into_response())
        }
        "json" => Ok(Json(Value::Array(recs.iter().map(record_json).collect())).into_response()),
        other => Err(ApiError::bad(format!("format `{other}`: use json or csv"))),
    }
}

fn record_json(r: &CallRecord) -> Value {
    json!({
        "conf_id": r.conf_id,
        "session_id": r.session_id,
        "account": r.account,
        "ani": r.ani,
        "access_number": r.access_number,
        "destination": r.destination,
        "setup_at": r.setup_at.to_rfc3339(),
        "connect_at": r.connect_at.map(|t| t.to_rfc3339()),
        "disconnect_at": r.disconnect_at.map(|t| t.to_rfc3339()),
        "billed_seconds": r.billed_seconds,
        "cost": r.cost.to_string(),
        "currency": r.currency,
        "rate_prefix": r.rate_prefix,
        "rate_description": r.rate_description,
        "deck": r.deck,
        "gateway": r.gateway,
        "node": r.node,
        "disconnect_cause": r.disconnect_cause,
        "return_code": r.return_code,
    })
}

/// One call's record with the RADIUS accounting records kept for it. An ITSP sees its own
/// cards' calls only; another's is "no call record", as an unknown one.
pub(super) async fn call_story(
    s: &Shared,
    who: &Caller,
    conf_id: &str,
) -> Result<(CallRecord, Vec<rating::store::AccountingRecord>), ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, format!("no call record {conf_id}"));
    if conf_id.len() > 128 {
        return Err(missing());
    }
    let r = s.store.call_record(conf_id).await?.ok_or_else(missing)?;
    if who.tenant().is_some() && visible(s, who, &r.account).await.is_err() {
        return Err(missing());
    }
    let radius = s.store.accounting_records(conf_id).await?;
    Ok((r, radius))
}

async fn call_detail(
    State(s): State<Shared>,
    who: Caller,
    Path(conf_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (r, radius) = call_story(&s, &who, &conf_id).await?;
    let mut v = record_json(&r);
    v["radius_accounting"] = Value::Array(
        radius
            .iter()
            .map(|a| {
                json!({
                    "leg": a.leg,
                    "status": a.status,
                    "client": a.client,
                    "received_at": a.received_at.to_rfc3339(),
                    "outcome": a.outcome,
                    "attributes": a.attributes,
                })
            })
            .collect(),
    );
    Ok(Json(v))
}

/// A refund (money back to the card, positive) or an adjustment (either sign) by finance,
/// idempotent by reference like a top-up, with the reason required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Adjust {
    pub(super) kind: String,
    pub(super) amount: String,
    pub(super) reference: String,
    pub(super) note: String,
}

/// Posts a refund or adjustment on a card: admin and finance only (an ITSP's money comes
/// from its top-ups, which its allowance limits). Shared by the API and the console.
pub(super) async fn adjust(
    s: &Shared,
    who: &Caller,
    account: &str,
    a: Adjust,
) -> Result<ToppedUp, ApiError> {
    if who.tenant().is_some() {
        return Err(ApiError::forbidden(
            "refunds and adjustments are made by finance or admin tokens",
        ));
    }
    let (kind, amount) = match a.kind.as_str() {
        "refund" => (
            LedgerKind::Refund,
            Money::parse_positive(&a.amount).map_err(|e| ApiError::bad(format!("amount: {e}")))?,
        ),
        "adjustment" => {
            let m = money("amount", &a.amount, true)?;
            if m == Money::ZERO {
                return Err(ApiError::bad("amount: an adjustment of 0 moves nothing"));
            }
            (LedgerKind::Adjustment, m)
        }
        other => {
            return Err(ApiError::bad(format!(
                "kind `{}` is not refund or adjustment",
                other.chars().take(20).collect::<String>()
            )))
        }
    };
    if a.note.trim().is_empty() {
        return Err(ApiError::bad("note: say why (it is kept in the ledger)"));
    }
    let acct = visible(s, who, account).await?;
    let detail = format!(
        "amount={} {} reference={} note={}",
        amount, acct.currency, a.reference, a.note
    );
    let action = if kind == LedgerKind::Refund {
        "refund"
    } else {
        "adjust"
    };
    let audit = entry(who, action, account, detail);
    let posting = s
        .store
        .post_audited(
            account,
            kind,
            amount,
            &a.reference,
            a.note.trim(),
            Utc::now(),
            &audit,
        )
        .await?;
    posted(s, account, posting, acct.currency).await
}

async fn adjustment(
    State(s): State<Shared>,
    who: Caller,
    Path(account): Path<String>,
    b: Result<Json<Adjust>, JsonRejection>,
) -> Result<Response, ApiError> {
    let t = adjust(&s, &who, &account, body(b)?).await?;
    Ok((
        if t.applied {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(json!({
            "applied": t.applied,
            "kind": t.entry.kind,
            "amount": t.entry.amount.to_string(),
            "reference": t.entry.reference,
            "note": t.entry.note,
            "balance": t.balance.to_string(),
            "currency": t.currency,
        })),
    )
        .into_response())
}

/// A report as JSON (the default) or CSV; staff see every tenant (or the one they name), an
/// ITSP its own.
async fn report(
    State(s): State<Shared>,
    who: Caller,
    Path(kind): Path<String>,
    q: Result<Query<super::reports::Ask>, QueryRejection>,
) -> Result<Response, ApiError> {
    use super::reports::{build, Kind};
    let kind = Kind::parse(&kind)?;
    let ask = query(q)?;
    let format = match ask.format.as_str() {
        "" | "json" => "json",
        "csv" => "csv",
        other => return Err(ApiError::bad(format!("format `{other}`: use json or csv"))),
    };
    let r = build(&s, &who, kind, &ask).await?;
    if format == "json" {
        return Ok(Json(r.json()).into_response());
    }
    let csv = r
        .csv()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}-{}-{}.csv\"",
                    kind.name(),
                    r.range.from,
                    r.range.to
                ),
            ),
        ],
        csv,
    )
        .into_response())
}

#[derive(Deserialize)]
struct DeckQuery {
    currency: Option<String>,
}

/// Replaces a rate deck with the CSV in the body, atomically (admin only).
async fn rate_deck(
    State(s): State<Shared>,
    who: Caller,
    Path(name): Path<String>,
    q: Result<Query<DeckQuery>, QueryRejection>,
    csv: Bytes,
) -> Result<Json<Value>, ApiError> {
    who.require_admin()?;
    let q = query(q)?;
    let currency = q.currency.unwrap_or_else(|| "USD".into());
    let rows = parse_rates_csv(&csv[..], &currency)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let summary = s
        .store
        .import_rates(
            &name,
            &rows,
            &format!("admin API ({})", who.name),
            Utc::now(),
        )
        .await?;
    let detail = format!("rows={} version={}", summary.rows, summary.version);
    record(&s, &who, "rate-deck", &name, detail).await?;
    Ok(Json(json!({
        "name": summary.name,
        "rows": summary.rows,
        "version": summary.version,
    })))
}

async fn reservations(
    State(s): State<Shared>,
    who: Caller,
    Path(account): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible(&s, &who, &account).await?;
    let rows = s.store.reservations(&account).await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "conf_id": r.conf_id,
                    "session_id": r.session_id,
                    "node": r.node,
                    "amount": r.amount.to_string(),
                    "granted_seconds": r.granted_seconds,
                    "destination": r.destination,
                    "ani": r.ani,
                    "access_number": r.access_number,
                    "rate": r.rate,
                    "setup_at": r.setup_at.to_rfc3339(),
                    "connect_at": r.connect_at.map(|t| t.to_rfc3339()),
                    "expires_at": r.expires_at.to_rfc3339(),
                })
            })
            .collect(),
    )))
}

/// Prompt sets are an ITSP's own (or an admin's to manage); finance has no business there.
fn may_manage_prompts(who: &Caller, tenant: &str) -> Result<(), ApiError> {
    match who.tenant() {
        Some(own) if own == tenant => Ok(()),
        Some(own) => Err(ApiError::forbidden(format!(
            "an itsp:{own} token manages tenant {own}'s prompt set only"
        ))),
        None => who.require_admin(),
    }
}

fn asset_error(e: AssetError) -> ApiError {
    match e {
        AssetError::Refused(report) => ApiError::with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the prompt set was refused; nothing changed",
            json!({ "report": upload_report_json(&report) }),
        ),
        AssetError::Flows(errors) => ApiError::with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the flows do not load; nothing changed",
            json!({ "errors": errors }),
        ),
        AssetError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
        AssetError::Archive(a) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, a.to_string()),
        AssetError::NoStore | AssetError::Busy => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        AssetError::Io(m) => {
            tracing::error!(error = %m, "admin API: storing an upload failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
        }
    }
}

fn upload_report_json(r: &UploadReport) -> Value {
    let pairs = |v: &[(String, String)]| {
        v.iter()
            .map(|(l, n)| format!("{l}_{n}"))
            .collect::<Vec<_>>()
    };
    json!({
        "files": r.files,
        "languages": r.languages,
        "converted": r.converted,
        "errors": r.errors,
        "ignored": r.ignored,
        "unknown": r.unknown,
        "fallback": pairs(&r.fallback),
        "missing": pairs(&r.missing),
    })
}

/// The tenant's own set as last uploaded (its report), or that it plays the default set.
async fn prompt_set(
    State(s): State<Shared>,
    who: Caller,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let report = prompt_report(&s, &who, &tenant)?;
    Ok(Json(json!({
        "tenant": tenant,
        "own_set": report.is_some(),
        "report": report,
    })))
}

/// Replaces a tenant's prompt set with a zip or tar of `.au`/`.wav` files.
async fn upload_prompt_set(
    State(s): State<Shared>,
    who: Caller,
    Path(tenant): Path<String>,
    archive: Bytes,
) -> Result<Json<Value>, ApiError> {
    let report = upload_prompts(&s, &who, &tenant, archive.to_vec()).await?;
    Ok(Json(json!({
        "tenant": tenant,
        "report": report,
    })))
}

/// Replaces a tenant's prompt set (all of it or, when refused, none) and audits it: the
/// upload's report. Shared by the API and the console.
pub(super) async fn upload_prompts(
    s: &Shared,
    who: &Caller,
    tenant: &str,
    archive: Vec<u8>,
) -> Result<Value, ApiError> {
    may_manage_prompts(who, tenant)?;
    let report = s
        .assets
        .upload_prompts(tenant, archive, |r| upload_report_json(r).to_string())
        .await
        .map_err(asset_error)?;
    let detail = format!(
        "files={} languages={} fallback={}",
        report.files,
        report.languages.join(","),
        report.fallback.len()
    );
    record(s, who, "prompt-set", tenant, detail).await?;
    Ok(upload_report_json(&report))
}

/// The report of a tenant's prompt set in use (`None`: it plays the default set).
pub(super) fn prompt_report(
    s: &Shared,
    who: &Caller,
    tenant: &str,
) -> Result<Option<Value>, ApiError> {
    may_manage_prompts(who, tenant)?;
    let report = s.assets.prompt_report(tenant).map_err(asset_error)?;
    Ok(report.and_then(|r| serde_json::from_str(&r).ok()))
}

/// The gateways: channels, health pings, registration (finance or admin; the credentials are
/// never shown).
async fn gateways(State(s): State<Shared>, who: Caller) -> Result<Json<Value>, ApiError> {
    who.require_staff()?;
    Ok(Json(json!(s.gateways.rows())))
}

async fn flows(State(s): State<Shared>, who: Caller) -> Result<Json<Value>, ApiError> {
    who.require_staff()?;
    let live = s.assets.live();
    let mut names: Vec<&String> = live.flows.keys().collect();
    names.sort();
    Ok(Json(Value::Array(
        names
            .into_iter()
            .map(|n| json!({"name": n, "description": live.flows[n].description}))
            .collect(),
    )))
}

/// Adds or replaces one flow (YAML body), then reloads them all; admin only.
async fn put_flow(
    State(s): State<Shared>,
    who: Caller,
    Path(name): Path<String>,
    yaml: Bytes,
) -> Result<Json<Value>, ApiError> {
    who.require_admin()?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::bad("a flow name is letters, digits, '_' and '-'"));
    }
    let yaml =
        std::str::from_utf8(&yaml).map_err(|_| ApiError::bad("the flow is not UTF-8 text"))?;
    let names = s.assets.put_flow(&name, yaml).await.map_err(asset_error)?;
    record(&s, &who, "flow", &name, format!("bytes={}", yaml.len())).await?;
    Ok(Json(json!({ "flows": names })))
}

/// Reads the flow directory again: all of it goes live, or (on any error) none of it.
async fn reload_flows(State(s): State<Shared>, who: Caller) -> Result<Json<Value>, ApiError> {
    who.require_admin()?;
    let names = s.assets.reload_flows().await.map_err(asset_error)?;
    record(
        &s,
        &who,
        "flows-reload",
        "flows",
        format!("flows={}", names.len()),
    )
    .await?;
    Ok(Json(json!({ "flows": names })))
}

fn access_json(a: &AccessNumber, source: Source, row: Option<&AccessRow>) -> Value {
    json!({
        "number": a.number,
        "tenant": a.tenant,
        "flow": a.flow,
        "languages": a.languages,
        "trust_ani": a.trust_ani,
        "trusted_only": a.trusted_only,
        "pinless": a.pinless,
        "all_tenants": a.all_tenants,
        "subscriber": a.subscriber,
        "source": source.as_str(),
        "updated_at": row.map(|r| r.updated_at.to_rfc3339()),
        "updated_by": row.map(|r| r.updated_by.clone()),
    })
}

/// Every number as the database has it now (the live snapshot of another node's change may be
/// a few seconds behind), with the database rows behind the managed ones.
async fn access_now(s: &Shared) -> Result<(AccessTable, Vec<AccessRow>), ApiError> {
    let rows = s.store.access_numbers().await?;
    Ok((AccessTable::new(s.assets.fixed_access(), &rows), rows))
}

/// The number if the caller may see it: an ITSP sees its own tenant's, and another tenant's
/// number looks absent, as its cards do.
fn visible_number<'a>(
    table: &'a AccessTable,
    who: &Caller,
    number: &str,
) -> Result<(&'a AccessNumber, Source), ApiError> {
    rating::store::check_access_number(number).map_err(|e| ApiError::bad(e.to_string()))?;
    table
        .get(number)
        .filter(|(a, _)| who.tenant().is_none_or(|t| t == a.tenant))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no access number {number}")))
}

fn row_of<'a>(rows: &'a [AccessRow], a: &AccessNumber, source: Source) -> Option<&'a AccessRow> {
    rows.iter()
        .find(|r| r.number == a.number)
        .filter(|_| source == Source::Managed)
}

/// Every number the caller may see, in number order, with where it is configured.
async fn access_numbers(State(s): State<Shared>, who: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(access_list(&s, &who, None).await?)))
}

/// The access numbers the caller may see (of `tenant` only, if given), as the API shows them.
pub(super) async fn access_list(
    s: &Shared,
    who: &Caller,
    tenant: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let (table, rows) = access_now(s).await?;
    Ok(table
        .iter()
        .filter(|(a, _)| who.tenant().is_none_or(|t| t == a.tenant))
        .filter(|(a, _)| tenant.is_none_or(|t| t == a.tenant))
        .map(|(a, source)| access_json(a, source, row_of(&rows, a, source)))
        .collect())
}

async fn access_number(
    State(s): State<Shared>,
    who: Caller,
    Path(number): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (table, rows) = access_now(&s).await?;
    let (a, source) = visible_number(&table, &who, &number)?;
    Ok(Json(access_json(a, source, row_of(&rows, a, source))))
}

/// The refusal of a change to a number only the configuration file may change.
fn fixed_in_config(number: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("access number {number} is fixed in the configuration file; change it there"),
    )
}

/// A number's settings; what is left out keeps its value (or, for a new number, its default).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessBody {
    tenant: Option<String>,
    flow: Option<String>,
    languages: Option<Vec<String>>,
    trust_ani: Option<bool>,
    trusted_only: Option<bool>,
    pinless: Option<bool>,
    all_tenants: Option<bool>,
    /// The SIP account (`user@domain`) the number rings; `""` makes it ring none.
    subscriber: Option<String>,
}

/// Assigns or changes a number. Admins assign numbers to tenants and set how far callers are
/// trusted; an ITSP changes the flow and languages of the numbers it was assigned.
async fn put_access_number(
    State(s): State<Shared>,
    who: Caller,
    Path(number): Path<String>,
    b: Result<Json<AccessBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Role::Finance = who.role {
        return Err(ApiError::forbidden(
            "finance tokens may read access numbers, not change them",
        ));
    }
    rating::store::check_access_number(&number).map_err(|e| ApiError::bad(e.to_string()))?;
    let body = body(b)?;
    let (table, _) = access_now(&s).await?;
    let current = match who.tenant() {
        Some(_) => Some(visible_number(&table, &who, &number).map_err(|e| {
            ApiError::new(
                e.0,
                format!("{}; new numbers are assigned by the operator", e.1),
            )
        })?),
        None => table.get(&number),
    };
    if let Some((_, Source::Config)) = current {
        return Err(fixed_in_config(&number));
    }
    let current = current.map(|(a, _)| a);
    if let (Some(_), Some(cur)) = (who.tenant(), current) {
        for (field, asked, now) in [
            ("trust_ani", body.trust_ani, cur.trust_ani),
            ("trusted_only", body.trusted_only, cur.trusted_only),
            ("pinless", body.pinless, cur.pinless),
            ("all_tenants", body.all_tenants, cur.all_tenants),
        ] {
            if asked.is_some_and(|v| v != now) {
                return Err(ApiError::forbidden(format!(
                    "only an admin may change {field}: it decides whose calls are believed"
                )));
            }
        }
        if body.tenant.as_ref().is_some_and(|t| *t != cur.tenant) {
            return Err(ApiError::forbidden(
                "only an admin may move a number to another tenant",
            ));
        }
    }
    let tenant = match (body.tenant, current) {
        (Some(t), _) => t,
        (None, Some(c)) => c.tenant.clone(),
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("access number {number} is new: say which tenant it belongs to"),
            ))
        }
    };
    let subscriber = match body.subscriber {
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s),
        None => current.and_then(|c| c.subscriber.clone()),
    };
    // A number turned into a subscriber's leaves its flow behind, unless the request names one.
    let flow = match (body.flow, &subscriber) {
        (Some(f), _) => Some(f),
        (None, Some(_)) => None,
        (None, None) => current.and_then(|c| c.flow.clone()),
    };
    let row = AccessRow {
        number: number.clone(),
        flow,
        subscriber,
        languages: body
            .languages
            .or_else(|| current.map(|c| c.languages.clone()))
            .unwrap_or_default(),
        trust_ani: body
            .trust_ani
            .or(current.map(|c| c.trust_ani))
            .unwrap_or(false),
        trusted_only: body
            .trusted_only
            .or(current.map(|c| c.trusted_only))
            .unwrap_or(false),
        pinless: body.pinless.or(current.map(|c| c.pinless)).unwrap_or(false),
        all_tenants: body
            .all_tenants
            .or(current.map(|c| c.all_tenants))
            .unwrap_or(false),
        tenant,
        // Kept to the millisecond, as the database keeps it.
        updated_at: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
            .unwrap_or_default(),
        updated_by: who.name.clone(),
    };
    row.check()?;
    if let Some(aor) = &row.subscriber {
        subscriber_of(&s, aor, &row.tenant).await?;
    }
    // A tenant that could never have prompts of its own is a typo.
    crate::assets::tenant_ok(&row.tenant).map_err(asset_error)?;
    // What a node can play: the flow loaded here, the languages in the tenant's prompts.
    let live = s.assets.live();
    if let Some(f) = row.flow.as_ref().filter(|_| !row.pinless) {
        if !live.flows.contains_key(f) {
            let mut loaded: Vec<&str> = live.flows.keys().map(String::as_str).collect();
            loaded.sort_unstable();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("no flow `{f}` is loaded (loaded: {})", loaded.join(", ")),
            ));
        }
    }
    let prompts = live.prompts(&row.tenant);
    let have = prompts.languages();
    let missing: Vec<&str> = row
        .languages
        .iter()
        .map(String::as_str)
        .filter(|l| !have.contains(l))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "tenant {}'s prompts have no {} (they have: {}); upload the prompt set first",
                row.tenant,
                missing.join(", "),
                have.join(", ")
            ),
        ));
    }
    let new = AccessNumber::from(&row);
    if current == Some(&new) {
        // The same settings again (a retried request): nothing to write or audit.
        let row = s.store.access_number(&number).await?;
        return Ok((
            StatusCode::OK,
            Json(access_json(&new, Source::Managed, row.as_ref())),
        ));
    }
    s.store.put_access_number(&row, who.tenant()).await?;
    if let Err(e) = s.assets.refresh_access(&s.store).await {
        tracing::warn!(error = %e, "access number written; this node picks it up at its next refresh");
    }
    let detail = format!(
        "tenant={} flow={} languages={} trust_ani={} trusted_only={} pinless={} all_tenants={} \
         subscriber={}",
        row.tenant,
        row.flow.as_deref().unwrap_or("-"),
        row.languages.join(","),
        row.trust_ani,
        row.trusted_only,
        row.pinless,
        row.all_tenants,
        row.subscriber.as_deref().unwrap_or("-")
    );
    record(&s, &who, "access-number", &number, detail).await?;
    let status = if current.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(access_json(&new, Source::Managed, Some(&row)))))
}

/// The SIP account a number is to ring must exist and be its tenant's: an ITSP's number
/// rings only its own subscribers.
async fn subscriber_of(s: &Shared, aor: &str, tenant: &str) -> Result<(), ApiError> {
    let (user, domain) = aor.split_once('@').unwrap_or((aor, ""));
    match s.store.sip_account(user, domain).await? {
        Some(a) if a.tenant == tenant => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("tenant {tenant} has no SIP account {aor}"),
        )),
    }
}

/// Takes a number out of service; admin only, as assigning one is. A configuration file's
/// number cannot be removed here, but a database copy it overrides can.
async fn delete_access_number(
    State(s): State<Shared>,
    who: Caller,
    Path(number): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require_admin()?;
    let (table, _) = access_now(&s).await?;
    let (_, source) = visible_number(&table, &who, &number)?;
    // A database copy the configuration file overrides may go; the file's number stays.
    if source == Source::Config && !table.shadowed().contains(&number) {
        return Err(fixed_in_config(&number));
    }
    let Some(was) = s.store.delete_access_number(&number).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no access number {number}"),
        ));
    };
    if let Err(e) = s.assets.refresh_access(&s.store).await {
        tracing::warn!(error = %e, "access number removed; this node drops it at its next refresh");
    }
    record(
        &s,
        &who,
        "access-number-delete",
        &number,
        format!("tenant={}", was.tenant),
    )
    .await?;
    Ok(Json(access_json(
        &AccessNumber::from(&was),
        Source::Managed,
        Some(&was),
    )))
}

async fn log_level(who: Caller) -> Result<Json<Value>, ApiError> {
    who.require_staff()?;
    let level = crate::logging::level().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::logging::LevelError::Unavailable.to_string(),
        )
    })?;
    Ok(Json(json!({ "level": level })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevel {
    level: String,
}

/// Changes what is logged from now on (`RUST_LOG` syntax); admin only.
async fn set_log_level(
    State(s): State<Shared>,
    who: Caller,
    b: Result<Json<LogLevel>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    who.require_admin()?;
    let asked = body(b)?.level;
    let level = crate::logging::set_level(&asked).map_err(|e| match e {
        crate::logging::LevelError::Invalid(..) => ApiError::bad(e.to_string()),
        crate::logging::LevelError::Unavailable => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    })?;
    record(&s, &who, "log-level", "logging", level.clone()).await?;
    Ok(Json(json!({ "level": level })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    target: Option<String>,
    limit: Option<i64>,
}

async fn audit(
    State(s): State<Shared>,
    who: Caller,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    who.require_staff()?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = s.store.audit_log(q.target.as_deref(), limit).await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|e| {
                json!({
                    "at": e.at.to_rfc3339(),
                    "actor": e.actor,
                    "role": e.role,
                    "action": e.action,
                    "target": e.target,
                    "detail": e.detail,
                })
            })
            .collect(),
    )))
}
