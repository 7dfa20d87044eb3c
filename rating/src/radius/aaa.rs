//! The store as a debit-card AAA server: what an Access-Request or Accounting-Request from a
//! gateway running Cisco's debit-card application means for the store, and the answer it gets.
//! The socket, the client table and the retransmission cache live with the daemon; this is the
//! meaning of the packets.
//!
//! - Access-Request with an empty Called-Station-Id is phase 1 (is the card good; how much
//!   money), with a destination phase 2 (how long may it talk; hold the money). Phase 2 holds
//!   the whole credit time at once, because the gateway enforces `h323-credit-time` itself and
//!   never asks to extend.
//! - Accounting Start on the billed leg (`h323-call-origin=originate`) marks the call
//!   connected; Stop settles it; every record is kept once per (conference id, leg, status), and
//!   settlement itself is exactly-once, so a resent Stop never bills twice.

use super::h323;
use super::packet::{cisco_avp, Request};
use crate::codes::ReturnCode;
use crate::money::Money;
use crate::store::{AccountingRecord, AuthRequest, CallEnd, CallRequest, Store, StoreError};
use chrono::{DateTime, Utc};
use radius::core::avp::AVP;
use radius::core::code::Code;

/// Cisco vendor attribute numbers of the answer's AV pairs.
mod vsa {
    pub const CREDIT_AMOUNT: u8 = 101;
    pub const CREDIT_TIME: u8 = 102;
    pub const RETURN_CODE: u8 = 103;
    pub const REDIRECT_NUMBER: u8 = 106;
    pub const PREFERRED_LANG: u8 = 107;
    pub const BILLING_MODEL: u8 = 109;
    pub const CURRENCY: u8 = 110;
}

/// What the store answered, before it becomes attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessAnswer {
    pub code: ReturnCode,
    pub available: Money,
    pub currency: String,
    pub language: String,
    /// Phase 2 only: the talk time held for this call.
    pub credit_time: Option<u64>,
    pub redirect_number: String,
}

/// The packet code and AV pairs for an answer: Accept for success and the redirects (the call
/// goes on, elsewhere), Reject for every refusal; `h323-return-code` always.
pub fn access_reply(a: &AccessAnswer) -> (Code, Vec<AVP>) {
    let code = a.code.code();
    let accept = code == 0 || (50..=53).contains(&code);
    let mut attrs = vec![cisco_avp(vsa::RETURN_CODE, &code.to_string())];
    if !a.currency.is_empty() {
        attrs.push(cisco_avp(
            vsa::CREDIT_AMOUNT,
            &a.available.floor_cents().to_string(),
        ));
        attrs.push(cisco_avp(vsa::CURRENCY, &a.currency));
        attrs.push(cisco_avp(vsa::PREFERRED_LANG, &a.language));
        // 1: prepaid (debit); the store has no postpaid cards.
        attrs.push(cisco_avp(vsa::BILLING_MODEL, "1"));
    }
    if let Some(t) = a.credit_time.filter(|_| code == 0) {
        attrs.push(cisco_avp(vsa::CREDIT_TIME, &t.to_string()));
    }
    if !a.redirect_number.is_empty() {
        attrs.push(cisco_avp(vsa::REDIRECT_NUMBER, &a.redirect_number));
    }
    (
        if accept {
            Code::AccessAccept
        } else {
            Code::AccessReject
        },
        attrs,
    )
}

/// The calling session a request belongs to (all long-pound calls of one dial-in share it).
fn session_id(req: &Request) -> String {
    req.cisco("h323-incoming-conf-id")
        .or(req.cisco("h323-conf-id"))
        .or(req.acct_session_id.as_deref())
        .unwrap_or_default()
        .to_string()
}

/// Which cards a RADIUS client may authorize: its tenant's, or every tenant's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cards {
    /// Only this tenant's cards (others are answered as unknown, code 1).
    Tenant(String),
    /// Every tenant's.
    All,
}

/// The access number a RADIUS client's reservations are made through: how its Stop records
/// are told from another client's (or our own node's) calls.
pub fn origin(client: &str) -> String {
    format!("radius {client}")
}

/// Answers an Access-Request from `client` (its address, written to records as the access
/// number so that staff can tell which gateway a call came through).
pub async fn access(
    store: &Store,
    req: &Request,
    client: &str,
    cards: &Cards,
    now: DateTime<Utc>,
) -> AccessAnswer {
    let refuse = |code| AccessAnswer {
        code,
        available: Money::ZERO,
        currency: String::new(),
        language: String::new(),
        credit_time: None,
        redirect_number: String::new(),
    };
    let Some(account) = req.user_name.clone().filter(|u| !u.is_empty()) else {
        return refuse(ReturnCode::InvalidArgument);
    };
    let auth = AuthRequest {
        account,
        // No User-Password: authorization by calling number (a PIN-less card).
        pin: req.password.clone(),
        ani: req.calling.clone().filter(|c| !c.is_empty()),
        access_number: origin(client),
        session_id: session_id(req),
        tenant: match cards {
            Cards::Tenant(t) => Some(t.clone()),
            Cards::All => None,
        },
        authenticated: false,
    };
    match req.called.as_deref().filter(|c| !c.is_empty()) {
        None => {
            let a = store.authorize_account(&auth, now).await;
            AccessAnswer {
                code: a.code,
                available: a.available,
                currency: a.currency,
                language: a.language,
                credit_time: None,
                redirect_number: a.redirect_number,
            }
        }
        Some(dest) => {
            // The conference id names the reservation: a resent request gets the same one.
            let conf = req
                .cisco("h323-conf-id")
                .or(req.acct_session_id.as_deref())
                .unwrap_or_default();
            if conf.is_empty() {
                return refuse(ReturnCode::InvalidArgument);
            }
            let c = store
                .authorize_call(
                    &CallRequest {
                        auth,
                        destination: dest.to_string(),
                        conf_id: conf.to_string(),
                        whole_credit: true,
                        rate_deck: None,
                    },
                    now,
                )
                .await;
            AccessAnswer {
                code: c.code,
                available: c.available,
                currency: c.currency,
                language: c.language,
                credit_time: c.reservation.map(|r| r.granted_seconds),
                redirect_number: c.redirect_number,
            }
        }
    }
}

/// Handles an Accounting-Request from `client`. `Ok` means the record is safely kept and the
/// client may be answered; on `Err` the request is not answered, so that the client resends.
pub async fn accounting(
    store: &Store,
    req: &Request,
    client: &str,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let status = match req.acct_status {
        Some(1) => "start".to_string(),
        Some(2) => "stop".to_string(),
        Some(3) => format!("interim:{}", req.acct_session_time.unwrap_or(0)),
        // Accounting-On/Off: a gateway restarting; nothing of ours to do.
        Some(7) | Some(8) => return Ok("gateway on/off".into()),
        Some(other) => format!("status-{other}"),
        None => "unknown".into(),
    };
    let conf_id = req
        .cisco("h323-conf-id")
        .or(req.acct_session_id.as_deref())
        .map(str::to_string)
        // No conference id at all: keep it under its own authenticator (unique per record).
        .unwrap_or_else(|| hex::encode(req.authenticator));
    let leg = req
        .cisco("h323-call-origin")
        .unwrap_or("unknown")
        .to_string();
    // A gateway's clock is its own: times after now are now.
    let time = |name: &str| {
        req.cisco(name)
            .and_then(h323::parse_time)
            .map(|t| t.min(now))
    };
    let origin = origin(client);
    // The money first (each step is idempotent), then the record: a failure in between leaves
    // the client to resend, and the resend finds the money already done.
    let outcome = match (status.as_str(), leg.as_str()) {
        ("start", "originate") => {
            match store
                .mark_connected_as(
                    &conf_id,
                    time("h323-connect-time").unwrap_or(now),
                    Some(&origin),
                )
                .await
            {
                Ok(()) => "connected".to_string(),
                Err(StoreError::NoReservation(_)) => "no reservation".to_string(),
                Err(e) => return Err(e),
            }
        }
        ("stop", "originate") => {
            // The gateway's times, kept to its call's life: nothing before its own setup time,
            // nothing after now, no answer after the end.
            let setup = time("h323-setup-time");
            let disconnect_at = time("h323-disconnect-time")
                .unwrap_or(now)
                .max(setup.unwrap_or(DateTime::<Utc>::MIN_UTC));
            let in_life =
                |t: DateTime<Utc>| t.clamp(setup.unwrap_or(t.min(disconnect_at)), disconnect_at);
            // Many gateways that are not Cisco's send only Acct-Session-Time: the answer was
            // that long before the end. (With neither, the Start's connect time stands.)
            let connected = time("h323-connect-time").or_else(|| {
                req.acct_session_time
                    .filter(|s| *s > 0)
                    .map(|s| disconnect_at - chrono::Duration::seconds(i64::from(s)))
            });
            let connected = connected.map(in_life);
            let end = CallEnd {
                connect_at: connected,
                disconnect_at,
                cause: req
                    .cisco("h323-disconnect-cause")
                    .map(|c| format!("q850:{c}"))
                    .unwrap_or_else(|| "radius stop".into()),
                voice_quality: req
                    .cisco("h323-voice-quality")
                    .and_then(|v| v.trim().parse().ok()),
                // The RADIUS client is the gateway that carried the call.
                gateway: client.to_string(),
            };
            match store.settle_as(&conf_id, &end, now, Some(&origin)).await {
                Ok(s) if s.already_settled => "already settled".to_string(),
                Ok(s) => format!("settled {} s, {}", s.billed_seconds, s.cost),
                Err(StoreError::NoReservation(_)) => "no reservation: not billed".to_string(),
                Err(e) => return Err(e),
            }
        }
        _ => "kept".to_string(),
    };
    let attributes = req
        .cisco
        .iter()
        .map(|p| format!("{}={}", p.name, p.value))
        .chain(req.user_name.iter().map(|u| format!("User-Name={u}")))
        .chain(req.called.iter().map(|c| format!("Called-Station-Id={c}")))
        .chain(
            req.calling
                .iter()
                .map(|c| format!("Calling-Station-Id={c}")),
        )
        .chain(
            req.acct_session_time
                .iter()
                .map(|t| format!("Acct-Session-Time={t}")),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let fresh = store
        .record_accounting(&AccountingRecord {
            conf_id,
            leg,
            status,
            client: client.to_string(),
            account: req.user_name.clone().unwrap_or_default(),
            received_at: now,
            attributes,
            outcome: outcome.clone(),
        })
        .await?;
    Ok(if fresh {
        outcome
    } else {
        "duplicate: ignored".into()
    })
}
