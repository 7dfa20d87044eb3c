//! The finance web console (`/console`): what a finance clerk does all day — find a card, see
//! its balance, the money held for calls in progress and its ledger, top it up, block it, and
//! create a batch of cards whose CSV can be downloaded exactly once — and the reports and
//! charts that answer how much was sold and spent, where and through which gateway. Plain server-rendered
//! HTML forms (every control reachable and usable from the keyboard), a few lines of
//! JavaScript for conveniences only, and the very same operations, role checks and audit log
//! as the API.
//!
//! Sign-in is with the API token, which never leaves the server again: the browser keeps only a
//! random session id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` behind TLS), valid
//! for `admin.session_minutes` and forgotten at sign-out; forms are also refused when the
//! browser says they come from another origin.

mod batches;
mod reports;
mod service;
mod story;

use super::api::{self, Batch, TopUp};
use super::{ApiError, Caller, Shared};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use batches::{batch_cards, batch_detail, batches_page, block_batch, unblock_batch};
use rating::store::Account;
use reports::{report_csv, report_page};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use story::{adjust_form, adjust_post, call_page, calls_section, reference_cell};

const COOKIE: &str = "b2bua_console";

/// How long a batch's CSV waits for its download.
const DOWNLOAD_TTL: Duration = Duration::from_secs(15 * 60);

/// Batch CSVs waiting for their single download: id → (who made it, when, the CSV).
pub(super) type Downloads = Mutex<HashMap<String, (String, Instant, Vec<u8>)>>;

/// Signed-in clerks: session id → (who, until when).
pub(super) type Sessions = Mutex<HashMap<String, (Caller, Instant)>>;

/// Sessions kept at once; beyond it the expired ones go, then the sign-in is refused.
const MAX_SESSIONS: usize = 10_000;

pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .route("/console", get(home))
        .route("/console/style.css", get(stylesheet))
        .route("/console/reports", get(report_page))
        .route("/console/reports/{file}", get(report_csv))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/cards/{account}", get(card))
        .route("/console/cards/{account}/topup", post(topup))
        .route("/console/cards/{account}/block", post(block))
        .route("/console/cards/{account}/unblock", post(unblock))
        .route("/console/cards/{account}/adjust", post(adjust_post))
        .route("/console/calls/{conf_id}", get(call_page))
        .route("/console/service", get(service::service_page))
        .route(
            "/console/service/prompts",
            post(service::upload).layer(axum::extract::DefaultBodyLimit::max(api::MAX_ARCHIVE)),
        )
        .route("/console/batch", get(batch_page).post(batch))
        .route("/console/batch/{id}", get(batch_done))
        .route("/console/batch/{id}/cards.csv", get(download))
        .route("/console/batches", get(batches_page))
        .route("/console/batches/{id}", get(batch_detail))
        .route("/console/batches/{id}/block", post(block_batch))
        .route("/console/batches/{id}/unblock", post(unblock_batch))
        .route("/console/batches/{id}/cards.csv", get(batch_cards))
        .with_state(state)
}

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The console's stylesheet, served by us at `/console/style.css`.
const STYLE: &str = include_str!("console.css");

/// A moment as every page writes it: one format, the time zone named.
pub(super) fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A money cell: right-aligned, a negative amount marked (and read out) as such.
pub(super) fn money_cell(m: &rating::Money, id: &str) -> String {
    let id = if id.is_empty() {
        String::new()
    } else {
        format!(" id=\"{id}\"")
    };
    if m.micros() < 0 {
        format!(
            "<td class=\"n neg\"{id}><span class=\"skip\">minus </span>{}</td>",
            esc(&m.to_string())
        )
    } else {
        format!("<td class=\"n\"{id}>{}</td>", esc(&m.to_string()))
    }
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// A whole page: skip link, header with the signed-in name, messages, then the body.
fn page(title: &str, who: Option<&Caller>, flash: &Flash, body: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · b2bua console</title><link rel=\"stylesheet\" href=\"/console/style.css\"></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a><header><nav>",
        esc(title)
    );
    if let Some(w) = who {
        let _ = write!(
            h,
            "<a href=\"/console\">Find a card</a> <a href=\"/console/reports\">Reports</a> \
             <a href=\"/console/batches\">Batches</a> <a href=\"/console/service\">Our service</a> <a href=\"/console/batch\">New batch</a> \
             <span class=\"who\">signed in as {} ({}) \
             <form method=\"post\" action=\"/console/logout\" style=\"display:inline\">\
             <button type=\"submit\">Sign out</button></form></span>",
            esc(&w.name),
            esc(&w.role.to_string())
        );
    }
    let _ = write!(
        h,
        "</nav></header><main id=\"main\"><h1>{}</h1>",
        esc(title)
    );
    if let Some(m) = &flash.msg {
        let _ = write!(
            h,
            "<p class=\"msg\" role=\"status\" id=\"msg\">{}</p>",
            esc(m)
        );
    }
    if let Some(e) = &flash.error {
        let _ = write!(
            h,
            "<p class=\"err\" role=\"alert\" id=\"error\">{}</p>",
            esc(e)
        );
    }
    h.push_str(body);
    // "/" jumps to the card search, as in most consoles.
    h.push_str(
        "</main><script>document.addEventListener('keydown',e=>{const s=document.getElementById('account');\
         if(e.key==='/'&&s&&document.activeElement.tagName!=='INPUT'){e.preventDefault();s.focus();}});\
         for(const f of document.querySelectorAll('form[data-confirm]')){f.addEventListener('submit',e=>{\
         if(!confirm(f.dataset.confirm))e.preventDefault();});}</script></body></html>",
    );
    h
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The outcome of the last action, carried across its redirect in the query string.
#[derive(Deserialize, Default)]
struct Flash {
    msg: Option<String>,
    error: Option<String>,
}

/// A page that says only why the request was refused, with the refusal's status.
fn error_page(title: &str, who: &Caller, e: ApiError) -> Response {
    let flash = Flash {
        error: Some(e.1),
        msg: None,
    };
    html(e.0, page(title, Some(who), &flash, ""))
}

/// Where to go after an action, with what to say there.
fn back(to: &str, result: Result<String, String>) -> Response {
    let (k, v) = match result {
        Ok(m) => ("msg", m),
        Err(e) => ("error", e),
    };
    Redirect::to(&format!("{to}?{k}={}", enc(&v))).into_response()
}

/// The signed-in clerk; anyone else is sent to the sign-in page.
struct Clerk(Caller);

impl FromRequestParts<Shared> for Clerk {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Clerk, Response> {
        let id = cookie(&parts.headers).unwrap_or_default();
        let who = crate::sync::Lock::locked(&s.sessions)
            .get(&id)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(who, _)| who.clone())
            .ok_or_else(|| Redirect::to("/console/login").into_response())?;
        if parts.method == axum::http::Method::POST && !same_origin(&parts.headers) {
            return Err(html(
                StatusCode::FORBIDDEN,
                page(
                    "Refused",
                    None,
                    &Flash {
                        error: Some("this form was sent from another site".into()),
                        ..Flash::default()
                    },
                    "",
                ),
            ));
        }
        Ok(Clerk(who))
    }
}

fn cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A form post whose Origin (when the browser sends one) is this very host.
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

async fn login_page(Query(f): Query<Flash>) -> Response {
    html(
        StatusCode::OK,
        page(
            "Sign in",
            None,
            &f,
            "<form method=\"post\" action=\"/console/login\">\
             <p><label for=\"token\">API token</label> \
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required autofocus></p>\
             <p><button type=\"submit\">Sign in</button></p></form>",
        ),
    )
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(s): State<Shared>, headers: HeaderMap, Form(l): Form<Login>) -> Response {
    if !same_origin(&headers) {
        return back("/console/login", Err("sign in from this console".into()));
    }
    let Some(who) = s.caller(l.token.trim().as_bytes()) else {
        return back("/console/login", Err("unknown token".into()));
    };
    let now = Instant::now();
    let id = hex::encode(rand::random::<[u8; 32]>());
    {
        let mut sessions = crate::sync::Lock::locked(&s.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, (_, until)| *until > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            crate::metrics::get().limit_hit("console_sessions");
            return back(
                "/console/login",
                Err("too many open sessions; try later".into()),
            );
        }
        sessions.insert(id.clone(), (who, now + s.cfg.session));
    }
    let secure = if s.cfg.secure_cookies { "; Secure" } else { "" };
    (
        [(
            header::SET_COOKIE,
            format!(
                "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                s.cfg.session.as_secs()
            ),
        )],
        Redirect::to("/console"),
    )
        .into_response()
}

async fn logout(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        crate::sync::Lock::locked(&s.sessions).remove(&id);
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Redirect::to("/console/login"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Find {
    account: Option<String>,
    #[serde(flatten)]
    flash: Flash,
}

async fn home(Clerk(who): Clerk, Query(q): Query<Find>) -> Response {
    if let Some(a) = q
        .account
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        return Redirect::to(&format!("/console/cards/{}", enc(a))).into_response();
    }
    html(
        StatusCode::OK,
        page(
            "Find a card",
            Some(&who),
            &q.flash,
            "<form method=\"get\" action=\"/console\" role=\"search\">\
             <p><label for=\"account\">Card number</label> \
             <input id=\"account\" name=\"account\" inputmode=\"numeric\" autocomplete=\"off\" required autofocus> \
             <button type=\"submit\">Find</button></p></form>\
             <p>Press <kbd>/</kbd> on any page to come back to this field.</p>",
        ),
    )
}

fn error_text(e: ApiError) -> String {
    e.1
}

fn row(h: &mut String, label: &str, value: &str, id: &str) {
    let _ = write!(
        h,
        "<tr><th scope=\"row\">{}</th><td id=\"{id}\">{}</td></tr>",
        esc(label),
        esc(value)
    );
}

async fn card(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(account): Path<String>,
    Query(f): Query<Flash>,
) -> Response {
    let a = match api::visible(&s, &who, &account).await {
        Ok(a) => a,
        Err(e) => {
            let status = e.0;
            let search = "<p><a href=\"/console\">Find another card</a></p>";
            let f = Flash {
                error: Some(error_text(e)),
                msg: None,
            };
            return html(status, page("Card not found", Some(&who), &f, search));
        }
    };
    let held = s.store.reservations(&account).await;
    let ledger = s.store.ledger(&account, 50).await;
    let batch = s.store.batch_of(&account).await.ok().flatten();
    let mut h = String::new();
    card_summary(&mut h, &a);
    if let Some(b) = batch {
        let _ = write!(
            h,
            "<p>Made in batch <a id=\"card-batch\" href=\"/console/batches/{}\">{}</a>.</p>",
            enc(&b),
            esc(&b)
        );
    }
    h.push_str("<h2 id=\"held\">Held for calls in progress</h2>");
    match held {
        Ok(rows) if rows.is_empty() => h.push_str("<p id=\"reservations\">Nothing is held.</p>"),
        Ok(rows) => {
            h.push_str(
                "<table id=\"reservations\"><thead><tr><th>Since</th><th>Destination</th>\
                 <th>Caller</th><th>Held</th><th>Seconds</th><th>Node</th><th>Answered</th></tr></thead><tbody>",
            );
            for r in rows {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                     <td>{}</td><td>{}</td></tr>",
                    esc(&when(r.setup_at)),
                    esc(&r.destination),
                    esc(&r.ani),
                    esc(&r.amount.to_string()),
                    r.granted_seconds,
                    esc(&r.node),
                    if r.connect_at.is_some() { "yes" } else { "ringing" }
                );
            }
            h.push_str("</tbody></table>");
        }
        Err(e) => {
            let _ = write!(h, "<p class=\"err\">{}</p>", esc(&e.to_string()));
        }
    }
    // The softphone subscribers who spend from this card (seed 000's PC-to-phone).
    h.push_str("<h2 id=\"sip\">SIP accounts</h2>");
    match s.store.sip_accounts_of_card(&account).await {
        Ok(rows) if rows.is_empty() => {
            h.push_str("<p id=\"sip-accounts\">No SIP account spends from this card.</p>")
        }
        Ok(rows) => {
            h.push_str(
                "<table id=\"sip-accounts\"><thead><tr><th>SIP account</th><th>Status</th>\
                 <th>Caller ID</th><th>Calls at once</th><th>Barred</th></tr></thead><tbody>",
            );
            for r in rows {
                let barred: Vec<&str> = [
                    (r.bar_international, "international"),
                    (r.bar_premium, "premium"),
                ]
                .into_iter()
                .filter_map(|(on, what)| on.then_some(what))
                .collect();
                let _ =
                    write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    esc(&r.aor()),
                    match r.status {
                        rating::store::SipStatus::Active => "active",
                        rating::store::SipStatus::Blocked => "blocked",
                    },
                    esc(r.caller_id.as_deref().unwrap_or("")),
                    r.max_calls,
                    if barred.is_empty() { "nothing".to_string() } else { barred.join(", ") }
                );
            }
            h.push_str("</tbody></table>");
        }
        Err(e) => {
            let _ = write!(h, "<p class=\"err\">{}</p>", esc(&e.to_string()));
        }
    }
    let path = format!("/console/cards/{}", enc(&a.account));
    let _ = write!(
        h,
        "<h2>Top up</h2><form method=\"post\" action=\"{path}/topup\">\
         <p><label for=\"amount\">Amount ({cur})</label> \
         <input id=\"amount\" name=\"amount\" inputmode=\"decimal\" required pattern=\"[0-9]+(\\.[0-9]{{1,6}})?\"></p>\
         <p><label for=\"reference\">Receipt reference</label> \
         <input id=\"reference\" name=\"reference\" required maxlength=\"64\"> \
         (a reference already applied moves no money again)</p>\
         <p><label for=\"note\">Note</label> <input id=\"note\" name=\"note\" maxlength=\"200\"></p>\
         <p><button type=\"submit\" id=\"topup\">Top up</button></p></form>",
        cur = esc(&a.currency)
    );
    adjust_form(&mut h, &who, &path, &a.currency);
    let (verb, label) = if a.status.as_str() == "blocked" {
        ("unblock", "Unblock this card")
    } else {
        ("block", "Block this card")
    };
    let _ = write!(
        h,
        "<h2>Status</h2><form method=\"post\" action=\"{path}/{verb}\" data-confirm=\"{label}?\">\
         <button type=\"submit\" id=\"{verb}\">{label}</button></form>"
    );
    calls_section(&mut h, &s, &a.account).await;
    h.push_str("<h2>Ledger</h2>");
    match ledger {
        Ok(rows) => {
            h.push_str(
                "<table id=\"ledger\"><thead><tr><th>When</th><th>Kind</th><th>Amount</th>\
                 <th>Balance after</th><th>Reference</th><th>Note</th></tr></thead><tbody>",
            );
            for e in rows {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td>{}{}{}<td>{}</td></tr>",
                    esc(&when(e.created_at)),
                    esc(&e.kind),
                    money_cell(&e.amount, ""),
                    money_cell(&e.balance_after, ""),
                    reference_cell(&e.kind, &e.reference),
                    esc(&e.note)
                );
            }
            h.push_str("</tbody></table>");
        }
        Err(e) => {
            let _ = write!(h, "<p class=\"err\">{}</p>", esc(&e.to_string()));
        }
    }
    html(
        StatusCode::OK,
        page(&format!("Card {}", a.account), Some(&who), &f, &h),
    )
}

fn card_summary(h: &mut String, a: &Account) {
    h.push_str("<table id=\"card\"><tbody>");
    row(h, "Status", a.status.as_str(), "status");
    row(
        h,
        "Balance",
        &format!("{} {}", a.balance, a.currency),
        "balance",
    );
    row(h, "Held", &a.reserved.to_string(), "reserved");
    row(h, "Available", &a.available().to_string(), "available");
    row(
        h,
        "Calls in progress",
        &format!("{} of {}", a.active_calls, a.max_calls),
        "active",
    );
    let expires = rating::batch::last_day(a.expires_at);
    row(
        h,
        "Last day",
        if expires.is_empty() {
            "never"
        } else {
            &expires
        },
        "expires",
    );
    row(h, "Tenant", &a.tenant, "tenant");
    row(h, "Language", &a.language, "language");
    h.push_str("</tbody></table>");
}

/// What the clerk is told after a top-up, refund or adjustment: `done` when it moved money,
/// otherwise that its reference had already been applied.
fn posting_message(t: &api::ToppedUp, done: impl FnOnce() -> String) -> String {
    if t.applied {
        done()
    } else {
        format!(
            "Reference {} was already applied on {}; no money moved. The balance is {} {}.",
            t.entry.reference,
            when(t.entry.created_at),
            t.balance,
            t.currency
        )
    }
}

async fn topup(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(account): Path<String>,
    Form(t): Form<TopUp>,
) -> Response {
    let to = format!("/console/cards/{}", enc(&account));
    let r = api::top_up(&s, &who, &account, t).await;
    back(
        &to,
        r.map(|t| {
            posting_message(&t, || {
                format!(
                    "Topped up {} {}: the balance is {} {}.",
                    t.entry.amount, t.currency, t.balance, t.currency
                )
            })
        })
        .map_err(error_text),
    )
}

async fn set_blocked(s: Shared, who: Caller, account: String, blocked: bool) -> Response {
    let to = format!("/console/cards/{}", enc(&account));
    let r = api::set_blocked(&s, &who, &account, blocked).await;
    back(
        &to,
        r.map(|a| format!("Card {} is now {}.", a.account, a.status.as_str()))
            .map_err(error_text),
    )
}

async fn block(State(s): State<Shared>, Clerk(who): Clerk, Path(a): Path<String>) -> Response {
    set_blocked(s, who, a, true).await
}

async fn unblock(State(s): State<Shared>, Clerk(who): Clerk, Path(a): Path<String>) -> Response {
    set_blocked(s, who, a, false).await
}

async fn batch_page(Clerk(who): Clerk, Query(f): Query<Flash>) -> Response {
    let tenant = match who.tenant() {
        Some(t) => format!(
            "<input type=\"hidden\" name=\"tenant\" value=\"{}\">",
            esc(t)
        ),
        None => "<p><label for=\"tenant\">Tenant</label> \
                 <input id=\"tenant\" name=\"tenant\" value=\"default\" maxlength=\"64\"></p>"
            .into(),
    };
    let body = format!(
        "<form method=\"post\" action=\"/console/batch\">\
         <p><label for=\"count\">Cards</label> <input id=\"count\" name=\"count\" type=\"number\" min=\"1\" max=\"10000\" required autofocus></p>\
         <p><label for=\"balance\">Balance each</label> <input id=\"balance\" name=\"balance\" inputmode=\"decimal\" required></p>\
         <p><label for=\"currency\">Currency</label> <input id=\"currency\" name=\"currency\" value=\"USD\" maxlength=\"3\" required></p>\
         <p><label for=\"language\">Language</label> <input id=\"language\" name=\"language\" value=\"en\" required></p>\
         <p><label for=\"expires\">Last day (optional)</label> <input id=\"expires\" name=\"expires\" type=\"date\"></p>\
         <p><label for=\"digits\">Card digits</label> <input id=\"digits\" name=\"digits\" type=\"number\" min=\"6\" max=\"20\" value=\"12\" required></p>\
         <p><label for=\"pin_digits\">PIN digits</label> <input id=\"pin_digits\" name=\"pin_digits\" type=\"number\" min=\"4\" max=\"12\" value=\"4\" required></p>\
         <p><label for=\"name\">Name (optional)</label> <input id=\"name\" name=\"name\" maxlength=\"80\" placeholder=\"December retail 5 USD\"></p>\
         {tenant}<p><button type=\"submit\" id=\"create\">Create the batch</button></p></form>\
         <p>The PINs are shown only in the batch's CSV, which can be downloaded once.</p>"
    );
    html(StatusCode::OK, page("New batch", Some(&who), &f, &body))
}

/// The batch form: every field arrives as text, an empty optional one means "not given".
#[derive(Deserialize)]
struct BatchForm {
    count: String,
    balance: String,
    currency: String,
    language: String,
    #[serde(default)]
    expires: String,
    digits: String,
    pin_digits: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    name: String,
}

async fn batch(State(s): State<Shared>, Clerk(who): Clerk, Form(f): Form<BatchForm>) -> Response {
    let number = |field: &str, v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("{field}: `{v}` is not a whole number"))
    };
    let parsed = (|| {
        Ok::<_, String>(Batch {
            count: number("cards", &f.count)?,
            balance: f.balance.trim().to_string(),
            digits: number("card digits", &f.digits)?,
            pin_digits: number("PIN digits", &f.pin_digits)?,
            currency: f.currency.trim().to_string(),
            language: f.language.trim().to_string(),
            expires: Some(f.expires.trim().to_string()).filter(|e| !e.is_empty()),
            tenant: Some(f.tenant.trim().to_string()).filter(|t| !t.is_empty()),
            name: f.name.trim().to_string(),
        })
    })();
    let b = match parsed {
        Ok(b) => b,
        Err(e) => return back("/console/batch", Err(e)),
    };
    let count = b.count;
    match api::create_batch(&s, &who, b).await {
        Ok((csv, first, batch)) => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let mut d = s.downloads.lock().unwrap_or_else(|e| e.into_inner());
            d.retain(|_, (_, at, _)| at.elapsed() < DOWNLOAD_TTL);
            d.insert(id.clone(), (who.name.clone(), Instant::now(), csv));
            back(
                &format!("/console/batch/{id}"),
                Ok(format!(
                    "Created {count} cards, the first {first}, as batch {batch}."
                )),
            )
        }
        Err(e) => back("/console/batch", Err(error_text(e))),
    }
}

async fn batch_done(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(id): Path<String>,
    Query(f): Query<Flash>,
) -> Response {
    let waiting = s
        .downloads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .is_some_and(|(by, at, _)| *by == who.name && at.elapsed() < DOWNLOAD_TTL);
    let body = if waiting {
        format!(
            "<p><a id=\"download\" href=\"/console/batch/{id}/cards.csv\" download=\"cards-{id}.csv\">\
             Download the cards and PINs (CSV)</a> — this works once, within 15 minutes; keep the file safe.</p>\
             <script>document.getElementById('download').addEventListener('click',e=>{{\
             setTimeout(()=>{{e.target.replaceWith('Downloaded. The CSV is no longer kept here.');}},0);}});</script>"
        )
    } else {
        "<p id=\"gone\">This batch's CSV has already been downloaded, or has expired.</p>".into()
    };
    let body = format!("{body}<p><a href=\"/console/batches\">All batches</a></p>");
    html(StatusCode::OK, page("Batch created", Some(&who), &f, &body))
}

/// The batch's CSV, once: the first download takes it away.
async fn download(State(s): State<Shared>, Clerk(who): Clerk, Path(id): Path<String>) -> Response {
    let taken = {
        let mut d = s.downloads.lock().unwrap_or_else(|e| e.into_inner());
        match d.get(&id) {
            Some((by, at, _)) if *by == who.name && at.elapsed() < DOWNLOAD_TTL => d.remove(&id),
            _ => None,
        }
    };
    match taken {
        Some((_, _, csv)) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"cards-{id}.csv\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            csv,
        )
            .into_response(),
        None => html(
            StatusCode::GONE,
            page(
                "Already downloaded",
                Some(&who),
                &Flash {
                    error: Some(
                        "This batch's CSV was already downloaded, or has expired; it is not kept."
                            .into(),
                    ),
                    msg: None,
                },
                "",
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_encoding() {
        assert_eq!(
            esc("<a href=\"x\">O'Neil & co</a>"),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; co&lt;/a&gt;"
        );
        assert_eq!(enc("000070"), "000070");
        assert_eq!(enc("a b/&?"), "a%20b%2F%26%3F");
    }

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: not a cross-site browser form");
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; b2bua_console=tok123; z=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h).as_deref(), Some("tok123"));
    }
}
