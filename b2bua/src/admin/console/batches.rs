//! The console's batch pages: every batch with what became of its cards, one batch with a
//! block or unblock of all of it (one confirmation, one audited change) and its card list as
//! CSV without PINs. The same functions as `/api/v1/batches…` (`admin::batches`).

use super::{back, enc, error_page, error_text, esc, html, money_cell, page, when, Clerk, Flash};
use crate::admin::batches::{cards_csv, list_for, set_blocked, visible, ListQuery};
use crate::admin::Shared;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use std::fmt::Write;

/// `/console/batches`: newest first, with their counts and the money left on them.
pub(super) async fn batches_page(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Query(f): Query<Flash>,
) -> Response {
    let mut h = String::from(
        "<p><a href=\"/console/batch\">Create a batch</a></p>\
         <div class=\"scroll\"><table id=\"batches\"><thead><tr><th scope=\"col\">Batch</th>\
         <th scope=\"col\">Name</th><th scope=\"col\">Tenant</th><th scope=\"col\">Created</th>\
         <th scope=\"col\" class=\"n\">Face value</th><th scope=\"col\" class=\"n\">Cards</th>\
         <th scope=\"col\" class=\"n\">Used</th><th scope=\"col\" class=\"n\">Unused</th>\
         <th scope=\"col\" class=\"n\">Expired</th><th scope=\"col\" class=\"n\">Blocked</th>\
         <th scope=\"col\" class=\"n\">Money left</th></tr></thead><tbody>",
    );
    let (status, flash) = match list_for(&s, &who, ListQuery::default()).await {
        Ok(rows) => {
            if rows.is_empty() {
                h.push_str("<tr><td colspan=\"11\">No batches yet.</td></tr>");
            }
            for b in &rows {
                let _ = write!(
                    h,
                    "<tr><td><a href=\"/console/batches/{}\">{}</a></td><td>{}</td><td>{}</td>\
                     <td>{}</td>{}<td class=\"n\">{}</td><td class=\"n\">{}</td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>{}</tr>",
                    enc(&b.id),
                    esc(&b.id),
                    esc(&b.name),
                    esc(&b.tenant),
                    when(b.created_at),
                    money_cell(&b.face_value, ""),
                    b.cards,
                    b.used,
                    b.unused(),
                    b.expired,
                    b.blocked,
                    money_cell(&b.money_left, ""),
                );
            }
            (StatusCode::OK, f)
        }
        Err(e) => (
            e.0,
            Flash {
                error: Some(e.1),
                msg: None,
            },
        ),
    };
    h.push_str("</tbody></table></div>");
    html(status, page("Batches", Some(&who), &flash, &h))
}

/// `/console/batches/{id}`: one batch, its counts, block or unblock, and its card list.
pub(super) async fn batch_detail(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(id): Path<String>,
    Query(f): Query<Flash>,
) -> Response {
    let b = match visible(&s, &who, &id).await {
        Ok(b) => b,
        Err(e) => {
            return error_page("Batch", &who, e);
        }
    };
    let path = format!("/console/batches/{}", enc(&b.id));
    let mut h = String::new();
    let _ = write!(
        h,
        "<dl class=\"facts\"><dt>Batch</dt><dd id=\"batch\">{}</dd><dt>Tenant</dt><dd>{}</dd>\
         <dt>Created</dt><dd>{} by {}</dd><dt>Face value</dt><dd>{} {}</dd>\
         <dt>Expires</dt><dd>{}</dd><dt>Cards</dt><dd id=\"cards\">{}</dd>\
         <dt>Used</dt><dd id=\"used\">{}</dd><dt>Unused</dt><dd id=\"unused\">{}</dd>\
         <dt>Expired</dt><dd id=\"expired\">{}</dd><dt>Blocked or locked</dt><dd id=\"blocked\">{}</dd>\
         <dt>Money left on usable cards</dt><dd id=\"money-left\">{} {}</dd></dl>",
        esc(&b.id),
        esc(&b.tenant),
        when(b.created_at),
        esc(&b.created_by),
        b.face_value,
        esc(&b.currency),
        b.expires_at.map(when).unwrap_or_else(|| "never".into()),
        b.cards,
        b.used,
        b.unused(),
        b.expired,
        b.blocked,
        b.money_left,
        esc(&b.currency),
    );
    let _ = write!(
        h,
        "<h2>All of its cards</h2>\
         <form method=\"post\" action=\"{path}/block\" data-confirm=\"Block all {n} cards of this batch?\" class=\"inline\">\
         <button type=\"submit\" id=\"block-batch\">Block the batch</button></form> \
         <form method=\"post\" action=\"{path}/unblock\" data-confirm=\"Unblock the blocked cards of this batch?\" class=\"inline\">\
         <button type=\"submit\" id=\"unblock-batch\">Unblock the batch</button></form>\
         <p class=\"note\">Blocking stops every active card of the batch at once; unblocking \
         brings back the blocked ones (a card locked by wrong PINs stays locked).</p>\
         <p><a id=\"export\" href=\"{path}/cards.csv\">Download the card list (CSV, without PINs)</a></p>",
        n = b.cards
    );
    html(StatusCode::OK, page(&b.name, Some(&who), &f, &h))
}

async fn change(s: Shared, who: crate::admin::Caller, id: String, blocked: bool) -> Response {
    let to = format!("/console/batches/{}", enc(&id));
    let r = set_blocked(&s, &who, &id, blocked).await;
    back(
        &to,
        r.map(|(b, n)| {
            format!(
                "{} {n} cards of batch {}.",
                if blocked { "Blocked" } else { "Unblocked" },
                b.name
            )
        })
        .map_err(error_text),
    )
}

pub(super) async fn block_batch(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(id): Path<String>,
) -> Response {
    change(s, who, id, true).await
}

pub(super) async fn unblock_batch(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(id): Path<String>,
) -> Response {
    change(s, who, id, false).await
}

/// `/console/batches/{id}/cards.csv`: the card list, as often as wanted (it holds no PIN).
pub(super) async fn batch_cards(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(id): Path<String>,
) -> Response {
    let r = match visible(&s, &who, &id).await {
        Ok(b) => s
            .store
            .batch_cards(&b.id, Utc::now())
            .await
            .map_err(Into::into)
            .and_then(|c| cards_csv(&c)),
        Err(e) => Err(e),
    };
    match r {
        Ok(csv) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{id}-cards.csv\""),
                ),
            ],
            csv,
        )
            .into_response(),
        Err(e) => error_page("Batch", &who, e),
    }
}
