//! SIP accounts through the admin API (`/api/v1/sip-accounts…`, and a card's
//! `/api/v1/accounts/{account}/sip-accounts`): the softphone subscribers that spend from a
//! card. Finance and admins manage any; an ITSP manages its own tenant's (another's answers
//! 404, as a card of another tenant does), barring included, which is what seed 004's
//! "call barring the subscriber controls" needs from its portal. Every change is audited; a
//! password is in the answer only when it was drawn for the caller, and never again.

use super::api::{query, record, visible};
use super::{ApiError, Caller, Shared};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use rating::store::{random_password, NewSipAccount, SipAccount, SipStatus};
use serde::Deserialize;
use serde_json::{json, Value};

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::new(e.status(), e.body_text()))
}

/// A SIP account as the API shows it (no HA1: it is as good as the password to a client).
pub(super) fn sip_json(a: &SipAccount) -> Value {
    json!({
        "aor": a.aor(),
        "username": a.username,
        "domain": a.domain,
        "card": a.card,
        "tenant": a.tenant,
        "status": match a.status { SipStatus::Active => "active", SipStatus::Blocked => "blocked" },
        "caller_id": a.caller_id,
        "max_calls": a.max_calls,
        "barring": {"international": a.bar_international, "premium": a.bar_premium},
        "updated_at": a.updated_at.to_rfc3339(),
        "updated_by": a.updated_by,
    })
}

/// `USER@DOMAIN` from the path, checked.
fn split(aor: &str) -> Result<(&str, &str), ApiError> {
    let (u, d) = aor
        .split_once('@')
        .ok_or_else(|| ApiError::bad(format!("`{aor}` is not USER@DOMAIN")))?;
    rating::store::check_sip_username(u)?;
    rating::store::check_sip_domain(d)?;
    Ok((u, d))
}

/// The account, if the caller may see it.
async fn visible_sip(s: &Shared, who: &Caller, aor: &str) -> Result<SipAccount, ApiError> {
    let (u, d) = split(aor)?;
    let missing = || ApiError::new(StatusCode::NOT_FOUND, format!("no SIP account {aor}"));
    let a = s.store.sip_account(u, d).await?.ok_or_else(missing)?;
    match who.tenant() {
        Some(t) if t != a.tenant => Err(missing()),
        _ => Ok(a),
    }
}

/// A SIP account to create.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSip {
    username: String,
    domain: String,
    card: String,
    /// Drawn (and answered once) when absent.
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    caller_id: Option<String>,
    #[serde(default = "one")]
    max_calls: i64,
}

fn one() -> i64 {
    1
}

pub(super) async fn create(
    State(s): State<Shared>,
    who: Caller,
    b: Result<Json<NewSip>, JsonRejection>,
) -> Result<Response, ApiError> {
    let n = body(b)?;
    // The card must be one the caller may see: an ITSP puts accounts on its own cards only.
    visible(&s, &who, &n.card).await?;
    let drawn = n.password.is_none();
    let password = n.password.unwrap_or_else(random_password);
    let new = NewSipAccount {
        username: n.username,
        domain: n.domain,
        password: password.clone(),
        card: n.card,
        caller_id: n.caller_id,
        max_calls: n.max_calls,
    };
    let a = s
        .store
        .create_sip_account(&new, &who.name, Utc::now())
        .await?;
    record(
        &s,
        &who,
        "sip-account create",
        &a.aor(),
        format!("card={}", a.card),
    )
    .await?;
    let mut out = sip_json(&a);
    if drawn {
        out["password"] = json!(password);
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `?tenant=` of the list.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    tenant: Option<String>,
}

pub(super) async fn list(
    State(s): State<Shared>,
    who: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let tenant = match (who.tenant(), q.tenant.filter(|t| !t.trim().is_empty())) {
        (Some(own), Some(t)) if t != own => {
            return Err(ApiError::forbidden(format!(
                "an itsp:{own} token sees tenant {own}'s SIP accounts only"
            )))
        }
        (Some(own), _) => Some(own.to_string()),
        (None, t) => t,
    };
    let all = s.store.sip_accounts(tenant.as_deref()).await?;
    Ok(Json(
        json!({ "sip_accounts": all.iter().map(sip_json).collect::<Vec<_>>() }),
    ))
}

/// A card's SIP accounts.
pub(super) async fn of_card(
    State(s): State<Shared>,
    who: Caller,
    Path(account): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible(&s, &who, &account).await?;
    let all = s.store.sip_accounts_of_card(&account).await?;
    Ok(Json(
        json!({ "sip_accounts": all.iter().map(sip_json).collect::<Vec<_>>() }),
    ))
}

/// One account, with where it is registered now.
pub(super) async fn show(
    State(s): State<Shared>,
    who: Caller,
    Path(aor): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = visible_sip(&s, &who, &aor).await?;
    let bindings = s.store.bindings(a.id, Utc::now()).await?;
    let mut out = sip_json(&a);
    out["registrations"] = bindings
        .iter()
        .map(|b| {
            json!({"contact": b.contact, "source": b.source,
                   "expires_at": b.expires_at.to_rfc3339(), "node": b.node})
        })
        .collect();
    Ok(Json(out))
}

async fn set_blocked(
    s: &Shared,
    who: &Caller,
    aor: &str,
    blocked: bool,
) -> Result<Json<Value>, ApiError> {
    let a = visible_sip(s, who, aor).await?;
    let a = s
        .store
        .set_sip_blocked(&a.username, &a.domain, blocked, &who.name, Utc::now())
        .await?;
    let action = if blocked {
        "sip-account block"
    } else {
        "sip-account unblock"
    };
    record(s, who, action, aor, String::new()).await?;
    Ok(Json(sip_json(&a)))
}

pub(super) async fn block(
    State(s): State<Shared>,
    who: Caller,
    Path(aor): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_blocked(&s, &who, &aor, true).await
}

pub(super) async fn unblock(
    State(s): State<Shared>,
    who: Caller,
    Path(aor): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_blocked(&s, &who, &aor, false).await
}

/// A new password; drawn (and answered once) when the body names none.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPassword {
    #[serde(default)]
    password: Option<String>,
}

pub(super) async fn password(
    State(s): State<Shared>,
    who: Caller,
    Path(aor): Path<String>,
    b: Result<Json<NewPassword>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = body(b)?;
    let a = visible_sip(&s, &who, &aor).await?;
    let drawn = p.password.is_none();
    let password = p.password.unwrap_or_else(random_password);
    let a = s
        .store
        .set_sip_password(&a.username, &a.domain, &password, &who.name, Utc::now())
        .await?;
    record(&s, &who, "sip-account password", &aor, String::new()).await?;
    let mut out = sip_json(&a);
    if drawn {
        out["password"] = json!(password);
    }
    Ok(Json(out))
}

/// Call barring: each flag present is set, each absent left as it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Barring {
    #[serde(default)]
    international: Option<bool>,
    #[serde(default)]
    premium: Option<bool>,
}

pub(super) async fn barring(
    State(s): State<Shared>,
    who: Caller,
    Path(aor): Path<String>,
    b: Result<Json<Barring>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let bar = body(b)?;
    if bar.international.is_none() && bar.premium.is_none() {
        return Err(ApiError::bad(
            "say what to bar: international and/or premium, true or false",
        ));
    }
    let a = visible_sip(&s, &who, &aor).await?;
    let a = s
        .store
        .set_sip_barring(
            &a.username,
            &a.domain,
            bar.international,
            bar.premium,
            &who.name,
            Utc::now(),
        )
        .await?;
    let detail = format!(
        "international={} premium={}",
        a.bar_international, a.bar_premium
    );
    record(&s, &who, "sip-account barring", &aor, detail).await?;
    Ok(Json(sip_json(&a)))
}

pub(super) async fn delete(
    State(s): State<Shared>,
    who: Caller,
    Path(aor): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = visible_sip(&s, &who, &aor).await?;
    let gone = s
        .store
        .delete_sip_account(&a.username, &a.domain)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no SIP account {aor}")))?;
    record(
        &s,
        &who,
        "sip-account delete",
        &aor,
        format!("card={}", gone.card),
    )
    .await?;
    Ok(Json(json!({"deleted": aor})))
}
