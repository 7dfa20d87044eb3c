//! A card's story, for the clerk who must answer "why did my balance drop": the card's calls
//! (answered and refused, each linked to its record), a call's record with its rate row,
//! gateway, return code, the other calls of its long-pound session and its RADIUS records,
//! and the refund or adjustment form, whose note is required.

use super::{
    back, enc, error_page, error_text, esc, html, money_cell, page, posting_message, when, Clerk,
    Flash,
};
use crate::admin::api::{self, Adjust};
use crate::admin::{Caller, Shared};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use rating::store::{CallRecord, RecordFilter};
use rating::ReturnCode;
use std::fmt::Write;

/// How many of a card's latest calls its page lists.
const CARD_CALLS: i64 = 25;

/// A return code as the clerk reads it: the number and what it means.
fn code_text(code: u8) -> String {
    match ReturnCode::from_code(code) {
        Some(c) => format!("{code} {}", c.meaning()),
        None => code.to_string(),
    }
}

/// The link to a call's record page.
fn call_link(conf_id: &str, text: &str) -> String {
    format!(
        "<a href=\"/console/calls/{}\">{}</a>",
        enc(conf_id),
        esc(text)
    )
}

/// The card page's "Calls" section: its latest calls, each linked to its record.
pub(super) async fn calls_section(h: &mut String, s: &Shared, account: &str) {
    let recs = s
        .store
        .call_records(&RecordFilter {
            account: Some(account.to_string()),
            session_id: None,
            limit: Some(CARD_CALLS),
        })
        .await;
    let _ = write!(h, "<h2>Latest calls</h2>");
    match recs {
        Ok(rows) if rows.is_empty() => h.push_str("<p id=\"calls\">No calls yet.</p>"),
        Ok(rows) => {
            h.push_str(
                "<div class=\"scroll\"><table id=\"calls\"><thead><tr><th scope=\"col\">When</th>\
                 <th scope=\"col\">Destination</th><th scope=\"col\">Outcome</th>\
                 <th scope=\"col\" class=\"n\">Billed s</th><th scope=\"col\" class=\"n\">Cost</th>\
                 <th scope=\"col\">Gateway</th></tr></thead><tbody>",
            );
            for r in &rows {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>{}<td>{}</td></tr>",
                    call_link(&r.conf_id, &when(r.setup_at)),
                    esc(&r.destination),
                    esc(&outcome(r)),
                    r.billed_seconds,
                    money_cell(&r.cost, ""),
                    esc(&r.gateway),
                );
            }
            h.push_str("</tbody></table></div>");
        }
        Err(e) => {
            let _ = write!(h, "<p class=\"err\">{}</p>", esc(&e.to_string()));
        }
    }
}

/// What became of a call, in a few words.
fn outcome(r: &CallRecord) -> String {
    if r.return_code != 0 {
        format!("refused: {}", code_text(r.return_code))
    } else if r.connect_at.is_some() {
        format!("answered, {}", r.disconnect_cause)
    } else {
        format!("not answered, {}", r.disconnect_cause)
    }
}

/// The ledger's reference cell: a call's reference is its record's id, so it links there.
pub(super) fn reference_cell(kind: &str, reference: &str) -> String {
    if kind == "call" {
        format!("<td>{}</td>", call_link(reference, reference))
    } else {
        format!("<td>{}</td>", esc(reference))
    }
}

/// The refund and adjustment form, for finance and admin tokens.
pub(super) fn adjust_form(h: &mut String, who: &Caller, path: &str, currency: &str) {
    if who.tenant().is_some() {
        return;
    }
    let _ = write!(
        h,
        "<h2>Refund or adjust</h2><form method=\"post\" action=\"{path}/adjust\">\
         <p><label for=\"kind\">Kind</label> <select id=\"kind\" name=\"kind\">\
         <option value=\"refund\">Refund (money back to the card)</option>\
         <option value=\"adjustment\">Adjustment (+ or −)</option></select></p>\
         <p><label for=\"adj-amount\">Amount ({cur})</label> \
         <input id=\"adj-amount\" name=\"amount\" inputmode=\"decimal\" required pattern=\"-?[0-9]+(\\.[0-9]{{1,6}})?\"></p>\
         <p><label for=\"adj-reference\">Reference</label> \
         <input id=\"adj-reference\" name=\"reference\" required maxlength=\"64\"> \
         (a reference already applied moves no money again)</p>\
         <p><label for=\"adj-note\">Why (required, kept in the ledger)</label> \
         <input id=\"adj-note\" name=\"note\" required maxlength=\"200\"></p>\
         <p><button type=\"submit\" id=\"adjust\">Post it</button></p></form>",
        cur = esc(currency)
    );
}

pub(super) async fn adjust_post(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(account): Path<String>,
    Form(a): Form<Adjust>,
) -> Response {
    let to = format!("/console/cards/{}", enc(&account));
    let r = api::adjust(&s, &who, &account, a).await;
    back(
        &to,
        r.map(|t| {
            posting_message(&t, || {
                format!(
                    "Posted a {} of {} {}: the balance is {} {}.",
                    t.entry.kind, t.entry.amount, t.currency, t.balance, t.currency
                )
            })
        })
        .map_err(error_text),
    )
}

/// `/console/calls/{conf_id}`: one call's record, its session and its RADIUS records.
pub(super) async fn call_page(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(conf_id): Path<String>,
    Query(f): Query<Flash>,
) -> Response {
    let (r, radius) = match api::call_story(&s, &who, &conf_id).await {
        Ok(x) => x,
        Err(e) => return error_page("Call", &who, e),
    };
    let mut h = String::new();
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(when).unwrap_or_else(|| "—".into());
    let rate = if r.rate_prefix.is_empty() {
        "—".to_string()
    } else {
        format!(
            "{} ({}, deck {})",
            r.rate_prefix, r.rate_description, r.deck
        )
    };
    let _ = write!(
        h,
        "<p><a href=\"/console/cards/{}\">Card {}</a></p>\
         <dl class=\"facts\"><dt>Destination</dt><dd id=\"destination\">{}</dd>\
         <dt>Outcome</dt><dd id=\"outcome\">{}</dd>\
         <dt>Return code</dt><dd id=\"code\">{}</dd>\
         <dt>Rate row</dt><dd id=\"rate\">{}</dd>\
         <dt>Billed seconds</dt><dd id=\"billed\">{}</dd>\
         <dt>Cost</dt><dd id=\"cost\">{} {}</dd>\
         <dt>Gateway</dt><dd id=\"gateway\">{}</dd>\
         <dt>Set up</dt><dd>{}</dd><dt>Answered</dt><dd>{}</dd><dt>Ended</dt><dd>{}</dd>\
         <dt>Caller</dt><dd>{}</dd><dt>Access number</dt><dd>{}</dd>\
         <dt>Node</dt><dd>{}</dd><dt>Session</dt><dd id=\"session\">{}</dd>\
         <dt>Call id</dt><dd id=\"conf\">{}</dd></dl>",
        enc(&r.account),
        esc(&r.account),
        esc(&r.destination),
        esc(&outcome(&r)),
        esc(&code_text(r.return_code)),
        esc(&rate),
        r.billed_seconds,
        r.cost,
        esc(&r.currency),
        esc(if r.gateway.is_empty() {
            "—"
        } else {
            &r.gateway
        }),
        when(r.setup_at),
        time(r.connect_at),
        time(r.disconnect_at),
        esc(&r.ani),
        esc(&r.access_number),
        esc(&r.node),
        esc(&r.session_id),
        esc(&r.conf_id),
    );
    // Long pound: the other calls the caller made in the same session, without the card again.
    let session = s
        .store
        .call_records(&RecordFilter {
            account: None,
            session_id: Some(r.session_id.clone()),
            limit: Some(100),
        })
        .await
        .unwrap_or_default();
    if session.len() > 1 {
        h.push_str("<h2>Calls of the same session (long pound)</h2><ul id=\"session-calls\">");
        for o in session.iter().rev() {
            let label = format!("{} to {}", when(o.setup_at), o.destination);
            if o.conf_id == r.conf_id {
                let _ = write!(
                    h,
                    "<li aria-current=\"true\">{} (this call)</li>",
                    esc(&label)
                );
            } else {
                let _ = write!(h, "<li>{}</li>", call_link(&o.conf_id, &label));
            }
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>RADIUS accounting</h2>");
    if radius.is_empty() {
        h.push_str("<p id=\"radius\">No RADIUS records for this call.</p>");
    } else {
        h.push_str(
            "<div class=\"scroll\"><table id=\"radius\"><thead><tr><th scope=\"col\">Received</th>\
             <th scope=\"col\">Leg</th><th scope=\"col\">Status</th><th scope=\"col\">Client</th>\
             <th scope=\"col\">Outcome</th></tr></thead><tbody>",
        );
        for a in &radius {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(a.received_at),
                esc(&a.leg),
                esc(&a.status),
                esc(&a.client),
                esc(&a.outcome)
            );
        }
        h.push_str("</tbody></table></div>");
    }
    html(
        StatusCode::OK,
        page(&format!("Call to {}", r.destination), Some(&who), &f, &h),
    )
}
