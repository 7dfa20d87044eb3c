//! Batches of cards for finance and ITSPs (`/api/v1/batches…`, and the console's batch pages
//! through the same functions): list them, see what became of one, block or unblock it whole,
//! export its card list. An ITSP sees only its own tenant's batches; another's answers 404,
//! as a card of another tenant does.

use super::api::query;
use super::{ApiError, Caller, Shared};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use rating::store::{AuditEntry, BatchCard, BatchSummary};
use serde::Deserialize;
use serde_json::{json, Value};

/// `?tenant=&limit=` of the batch list.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) limit: Option<i64>,
}

/// `?format=` of a batch's card list.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct CardsQuery {
    #[serde(default)]
    format: Option<String>,
}

/// The batches the caller may see, newest first.
pub(super) async fn list_for(
    s: &Shared,
    who: &Caller,
    q: ListQuery,
) -> Result<Vec<BatchSummary>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit must be 1 to 1000"));
    }
    let tenant = match (who.tenant(), q.tenant.filter(|t| !t.trim().is_empty())) {
        (Some(own), Some(t)) if t != own => {
            return Err(ApiError::forbidden(format!(
                "an itsp:{own} token sees tenant {own}'s batches only"
            )))
        }
        (Some(own), _) => Some(own.to_string()),
        (None, t) => t,
    };
    Ok(s.store
        .batches(tenant.as_deref(), limit, Utc::now())
        .await?)
}

/// One batch the caller may see (another tenant's is "no batch", as an unknown one).
pub(super) async fn visible(s: &Shared, who: &Caller, id: &str) -> Result<BatchSummary, ApiError> {
    let b = s.store.batch(id, Utc::now()).await?;
    match who.tenant() {
        Some(t) if t != b.tenant => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no batch {id}"),
        )),
        _ => Ok(b),
    }
}

/// Blocks or unblocks every card of a batch the caller may see: how many changed.
pub(super) async fn set_blocked(
    s: &Shared,
    who: &Caller,
    id: &str,
    blocked: bool,
) -> Result<(BatchSummary, u64), ApiError> {
    visible(s, who, id).await?;
    let audit = AuditEntry {
        at: Utc::now(),
        actor: who.name.clone(),
        role: who.role.to_string(),
        action: if blocked {
            "batch-block"
        } else {
            "batch-unblock"
        }
        .into(),
        target: id.to_string(),
        detail: String::new(),
        allowance: None,
    };
    let n = s.store.set_batch_blocked(id, blocked, Some(&audit)).await?;
    Ok((visible(s, who, id).await?, n))
}

/// A batch's card list as CSV: number, status, balance, expiry, used. Never a PIN.
pub(super) fn cards_csv(cards: &[BatchCard]) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    w.write_record(["account", "status", "balance", "expires", "used"])
        .map_err(fail)?;
    for c in cards {
        w.write_record([
            rating::export::cell(&c.account).into_owned(),
            c.status.as_str().to_string(),
            c.balance.to_string(),
            c.expires_at
                .map(|t| t.date_naive().to_string())
                .unwrap_or_default(),
            if c.used { "yes" } else { "no" }.to_string(),
        ])
        .map_err(fail)?;
    }
    w.into_inner()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(super) fn batch_json(b: &BatchSummary) -> Value {
    json!({
        "id": b.id,
        "name": b.name,
        "tenant": b.tenant,
        "currency": b.currency,
        "face_value": b.face_value.to_string(),
        "cards": b.cards,
        "used": b.used,
        "unused": b.unused(),
        "expired": b.expired,
        "blocked": b.blocked,
        "money_left": b.money_left.to_string(),
        "expires_at": b.expires_at.map(|t| t.to_rfc3339()),
        "created_at": b.created_at.to_rfc3339(),
        "created_by": b.created_by,
    })
}

pub(super) async fn list(
    State(s): State<Shared>,
    who: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let rows = list_for(&s, &who, query(q)?).await?;
    Ok(Json(Value::Array(rows.iter().map(batch_json).collect())))
}

pub(super) async fn show(
    State(s): State<Shared>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(batch_json(&visible(&s, &who, &id).await?)))
}

async fn change(
    s: Shared,
    who: Caller,
    id: String,
    blocked: bool,
) -> Result<Json<Value>, ApiError> {
    let (b, n) = set_blocked(&s, &who, &id, blocked).await?;
    let mut v = batch_json(&b);
    v["changed"] = json!(n);
    Ok(Json(v))
}

pub(super) async fn block(
    State(s): State<Shared>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    change(s, who, id, true).await
}

pub(super) async fn unblock(
    State(s): State<Shared>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    change(s, who, id, false).await
}

pub(super) async fn cards(
    State(s): State<Shared>,
    who: Caller,
    Path(id): Path<String>,
    q: Result<Query<CardsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let format = query(q)?.format.unwrap_or_else(|| "json".into());
    let b = visible(&s, &who, &id).await?;
    let cards = s.store.batch_cards(&b.id, Utc::now()).await?;
    match format.as_str() {
        "json" => Ok(Json(Value::Array(
            cards
                .iter()
                .map(|c| {
                    json!({
                        "account": c.account,
                        "status": c.status.as_str(),
                        "balance": c.balance.to_string(),
                        "expires_at": c.expires_at.map(|t| t.to_rfc3339()),
                        "used": c.used,
                    })
                })
                .collect(),
        ))
        .into_response()),
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}-cards.csv\"", b.id),
                ),
            ],
            cards_csv(&cards)?,
        )
            .into_response()),
        other => Err(ApiError::bad(format!(
            "format `{}` is not json or csv",
            other.chars().take(20).collect::<String>()
        ))),
    }
}
