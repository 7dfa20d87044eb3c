//! The life of a call's money as statements: hold the first chunk, mark it answered, extend
//! it, settle it exactly once. Written once against [`Exec`], so the same code runs inside one
//! call's own transaction or as one operation of a group-commit batch (see `writer`).
//!
//! The rule that makes batching safe: an operation decides every refusal (no card slot, no
//! money, no reservation, someone else's call) *before* its first write. A refusal therefore
//! leaves nothing behind and its neighbours in the batch go on; only a database error after a
//! write needs the batch rolled back, and the writer then runs the batch again without the
//! failing operation.

use super::authorize::{CallEnd, Extension, RateInfo, Reservation, Settlement};
use super::exec::{Cells, Exec};
use super::registrations::{register, Registered, Registration};
use super::sip_calls::{self, CallSlot};
use super::{at_ms, StoreError};
use crate::codes::ReturnCode;
use crate::money::Money;
use crate::rules::{self, AccountState, CardStatus};
use crate::tariff::Tariff;
use rust_decimal::Decimal;
use std::str::FromStr;

/// What every operation needs to know of the store's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub node_id: String,
    pub chunk_seconds: u64,
    pub grace_ms: i64,
}

/// The "chunk" of a whole-credit reservation: longer than any card's money lasts.
const WHOLE_CREDIT_SECONDS: u64 = 7 * 86_400;

/// Hold money for a new call on an already verified card.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub account_id: i64,
    pub conf_id: String,
    pub session_id: String,
    pub destination: String,
    pub ani: String,
    pub access_number: String,
    pub whole_credit: bool,
    pub rate: RateInfo,
    pub now_ms: i64,
    /// A good PIN not yet counted: the hold counts it under the row's lock (it stands only
    /// while the card has fewer than this many wrong PINs and is not locked) and resets the
    /// count, instead of a write of its own before the hold.
    pub pin_limit: Option<i64>,
}

/// One operation on a call's money.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Hold(Box<Hold>),
    Connect {
        conf_id: String,
        at_ms: i64,
        origin: Option<String>,
    },
    Extend {
        conf_id: String,
        now_ms: i64,
    },
    Settle {
        conf_id: String,
        end: Box<CallEnd>,
        now_ms: i64,
        origin: Option<String>,
    },
    /// Not money, but written as often: a REGISTER's changes to its account's bindings.
    Register {
        registration: Box<Registration>,
        now_ms: i64,
    },
    /// A SIP account's call counted against its calls at once (see `sip_calls`).
    ClaimCall {
        slot: CallSlot,
        max: i64,
        now_ms: i64,
    },
    /// A SIP account's call over.
    ReleaseCall {
        slot: CallSlot,
    },
}

impl Op {
    /// The call this operation is about.
    pub fn conf_id(&self) -> &str {
        match self {
            Op::Hold(h) => &h.conf_id,
            Op::Connect { conf_id, .. }
            | Op::Extend { conf_id, .. }
            | Op::Settle { conf_id, .. } => conf_id,
            // Named by its REGISTER's Call-ID in the log lines about it.
            Op::Register { registration, .. } => &registration.call_id,
            Op::ClaimCall { slot, .. } | Op::ReleaseCall { slot } => &slot.key,
        }
    }
}

/// The outcome of holding money for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// Held: what was available before, the credit time announced, and the reservation.
    Held {
        available: Money,
        credit_time: u64,
        reservation: Reservation,
    },
    Refused(ReturnCode, Money),
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Done {
    Hold(Reserved),
    Connected,
    Extended(Extension),
    Settled(Settlement),
    Registered(Registered),
    /// Whether a call was counted (`false`: the account's calls at once are all in use).
    Claimed(bool),
    Released,
}

/// Text from a peer as it may reach a record: printable and at most `max` characters.
pub(crate) fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

pub(crate) const RESERVATION_COLUMNS: &str =
    "id, account_id, session_id, owner, amount, granted_seconds, destination, ani, \
     access_number, deck, rate_prefix, rate_description, rate_per_minute, connect_fee, \
     initial_increment, increment, minimum_seconds, setup_at, connect_at, updated_at, expires_at";

/// A reservation row as the operations need it (columns as [`RESERVATION_COLUMNS`]).
pub(crate) struct HeldCall {
    pub account_id: i64,
    pub session_id: String,
    pub amount: i64,
    pub granted_seconds: i64,
    pub destination: String,
    pub ani: String,
    pub access_number: String,
    pub rate: RateInfo,
    pub setup_at: i64,
    pub connect_at: Option<i64>,
    pub expires_at: i64,
}

impl HeldCall {
    pub fn from_cells(r: &Cells) -> Result<HeldCall, StoreError> {
        let num = |i: usize| -> Result<u32, StoreError> {
            Ok(u32::try_from(r.int(i)?).unwrap_or(u32::MAX))
        };
        let tariff = Tariff::new(
            Decimal::from_str(&r.text(12)?).unwrap_or(Decimal::MAX),
            Money::from_micros(r.int(13)?),
            num(14)?,
            num(15)?,
            num(16)?,
        )
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
        Ok(HeldCall {
            account_id: r.int(1)?,
            session_id: r.text(2)?,
            amount: r.int(4)?,
            granted_seconds: r.int(5)?,
            destination: r.text(6)?,
            ani: r.text(7)?,
            access_number: r.text(8)?,
            rate: RateInfo {
                deck: r.text(9)?,
                prefix: r.text(10)?,
                description: r.text(11)?,
                tariff,
            },
            setup_at: r.int(17)?,
            connect_at: r.opt_int(18)?,
            expires_at: r.int(20)?,
        })
    }
}

/// Runs one operation. Refusals come back as `Ok` (or as `NoReservation`) with nothing written.
pub(crate) async fn apply<E: Exec>(e: &mut E, p: &Params, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::Hold(h) => hold(e, p, h).await.map(Done::Hold),
        Op::Connect {
            conf_id,
            at_ms,
            origin,
        } => connect(e, p, conf_id, *at_ms, origin.as_deref())
            .await
            .map(|()| Done::Connected),
        Op::Extend { conf_id, now_ms } => extend(e, p, conf_id, *now_ms).await.map(Done::Extended),
        Op::Settle {
            conf_id,
            end,
            now_ms,
            origin,
        } => settle(e, p, conf_id, end, *now_ms, origin.as_deref())
            .await
            .map(Done::Settled),
        Op::Register {
            registration,
            now_ms,
        } => register(e, registration, *now_ms)
            .await
            .map(Done::Registered),
        Op::ClaimCall { slot, max, now_ms } => sip_calls::claim(e, p, slot, *max, *now_ms)
            .await
            .map(Done::Claimed),
        Op::ReleaseCall { slot } => sip_calls::release(e, slot).await.map(|()| Done::Released),
    }
}

/// Holds the first chunk. The first statement locks the account row (PostgreSQL) or takes the
/// database's write lock (SQLite) and returns its figures, so the grant is planned on values
/// no other call can change before this one commits.
async fn hold<E: Exec>(e: &mut E, p: &Params, h: &Hold) -> Result<Reserved, StoreError> {
    let locked = e
        .row(
            "UPDATE accounts SET active_calls = active_calls WHERE id = $1 \
             RETURNING balance, reserved, credit_limit, active_calls, max_calls, status, expires_at, \
             pin_failures",
            &[h.account_id.into()],
        )
        .await?;
    let Some(r) = locked else {
        return Ok(Reserved::Refused(ReturnCode::InvalidAccount, Money::ZERO));
    };
    let state = AccountState {
        balance: Money::from_micros(r.int(0)?),
        reserved: Money::from_micros(r.int(1)?),
        credit_limit: Money::from_micros(r.int(2)?),
        active_calls: r.int(3)?,
        max_calls: r.int(4)?,
        status: CardStatus::parse(&r.text(5)?),
        expires_at: r.opt_int(6)?,
    };
    if let Some(limit) = h.pin_limit {
        // A locked card, or one at the limit, answers as a wrong PIN does.
        if state.status == CardStatus::Locked || r.int(7)? >= limit {
            return Ok(Reserved::Refused(ReturnCode::InvalidPin, Money::ZERO));
        }
    }
    if state.status != CardStatus::Active || state.active_calls >= state.max_calls {
        // Blocked or locked since the read, or every call slot taken.
        let code = rules::check_account(&state, h.now_ms)
            .err()
            .unwrap_or(ReturnCode::AccountInUse);
        return Ok(Reserved::Refused(code, Money::ZERO));
    }
    let available = state.available();
    let chunk = if h.whole_credit {
        WHOLE_CREDIT_SECONDS
    } else {
        p.chunk_seconds
    };
    let grant = match rules::plan_grant(available, &h.rate.tariff, chunk) {
        Ok(g) => g,
        Err(code) => {
            // Nothing left at all (other calls hold the rest) is 4 or 6, not 12.
            let code = match (available.is_positive(), state.credit_limit.is_positive()) {
                (true, _) => code,
                (false, true) => ReturnCode::CreditLimit,
                (false, false) => ReturnCode::ZeroBalance,
            };
            return Ok(Reserved::Refused(code, available));
        }
    };
    let expires_at = h.now_ms + grant.granted_seconds as i64 * 1000 + p.grace_ms;
    let t = &h.rate.tariff;
    let inserted = e
        .exec(
            "INSERT INTO reservations (id, account_id, session_id, owner, amount, granted_seconds, destination, \
             ani, access_number, deck, rate_prefix, rate_description, rate_per_minute, connect_fee, \
             initial_increment, increment, minimum_seconds, setup_at, connect_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, NULL, $18, $19) \
             ON CONFLICT (id) DO NOTHING",
            &[
                h.conf_id.as_str().into(),
                h.account_id.into(),
                h.session_id.as_str().into(),
                p.node_id.as_str().into(),
                grant.amount.micros().into(),
                (grant.granted_seconds as i64).into(),
                h.destination.as_str().into(),
                h.ani.as_str().into(),
                h.access_number.as_str().into(),
                h.rate.deck.as_str().into(),
                h.rate.prefix.as_str().into(),
                h.rate.description.as_str().into(),
                t.rate_per_minute().to_string().into(),
                t.connect_fee().micros().into(),
                i64::from(t.initial_increment()).into(),
                i64::from(t.increment()).into(),
                i64::from(t.minimum_seconds()).into(),
                h.now_ms.into(),
                expires_at.into(),
            ],
        )
        .await?;
    if inserted == 0 {
        // This call already holds money (a repeat): the caller answers with that hold.
        return Ok(Reserved::Refused(ReturnCode::AccountInUse, available));
    }
    let reset = if h.pin_limit.is_some() {
        ", pin_failures = 0"
    } else {
        ""
    };
    e.exec(
        &format!(
            "UPDATE accounts SET active_calls = active_calls + 1, reserved = reserved + $1{reset} \
             WHERE id = $2"
        ),
        &[grant.amount.micros().into(), h.account_id.into()],
    )
    .await?;
    Ok(Reserved::Held {
        available,
        credit_time: grant.credit_time,
        reservation: Reservation {
            conf_id: h.conf_id.clone(),
            amount: grant.amount,
            granted_seconds: grant.granted_seconds,
            expires_at: at_ms(expires_at),
        },
    })
}

async fn held_call<E: Exec>(e: &mut E, conf_id: &str) -> Result<Option<HeldCall>, StoreError> {
    e.row(
        &format!("SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = $1"),
        &[conf_id.into()],
    )
    .await?
    .as_ref()
    .map(HeldCall::from_cells)
    .transpose()
}

/// Marks a call answered: billing starts here, and the reservation's life runs from here.
async fn connect<E: Exec>(
    e: &mut E,
    p: &Params,
    conf_id: &str,
    t: i64,
    origin: Option<&str>,
) -> Result<(), StoreError> {
    let done = e
        .exec(
            "UPDATE reservations SET connect_at = CASE WHEN $1 < setup_at THEN setup_at ELSE $1 END, updated_at = $1, \
             expires_at = CASE WHEN $1 < setup_at THEN setup_at ELSE $1 END + granted_seconds * 1000 + $2 \
             WHERE id = $3 AND connect_at IS NULL AND ($4 IS NULL OR access_number = $4)",
            &[t.into(), p.grace_ms.into(), conf_id.into(), origin.into()],
        )
        .await?;
    if done > 0 {
        return Ok(());
    }
    // Nothing changed: already connected (a repeat, fine) or not ours or not there.
    let held = held_call(e, conf_id).await?;
    if held.is_none_or(|h| origin.is_some_and(|o| o != h.access_number)) {
        return Err(StoreError::NoReservation(conf_id.to_string()));
    }
    Ok(())
}

/// Holds another chunk for a running call, as far as the card allows.
async fn extend<E: Exec>(
    e: &mut E,
    p: &Params,
    conf_id: &str,
    now_ms: i64,
) -> Result<Extension, StoreError> {
    // Lock order, as in `settle`: the reservation first, then its account.
    let held = e
        .row(
            &format!(
                "UPDATE reservations SET updated_at = $1 WHERE id = $2 RETURNING {RESERVATION_COLUMNS}"
            ),
            &[now_ms.into(), conf_id.into()],
        )
        .await?;
    let Some(held) = held.as_ref().map(HeldCall::from_cells).transpose()? else {
        return Err(StoreError::NoReservation(conf_id.to_string()));
    };
    let row = e
        .row(
            "UPDATE accounts SET reserved = reserved WHERE id = $1 RETURNING balance, reserved, credit_limit",
            &[held.account_id.into()],
        )
        .await?
        .ok_or_else(|| StoreError::NoAccount(held.account_id.to_string()))?;
    let available = Money::from_micros(row.int(0)? + row.int(2)? - row.int(1)?);
    let start = held.connect_at.unwrap_or(now_ms);
    let plan = rules::plan_extension(
        available,
        &held.rate.tariff,
        Money::from_micros(held.amount),
        held.granted_seconds as u64,
        p.chunk_seconds,
    );
    let (granted, add) = match plan {
        Some(g) => (g.granted_seconds as i64, g.amount.micros()),
        None => (held.granted_seconds, 0),
    };
    if add > 0 {
        e.exec(
            "UPDATE accounts SET reserved = reserved + $1 WHERE id = $2",
            &[add.into(), held.account_id.into()],
        )
        .await?;
    }
    let expires = (start + granted * 1000 + p.grace_ms).max(held.expires_at);
    e.exec(
        "UPDATE reservations SET amount = amount + $1, granted_seconds = $2, expires_at = $3 WHERE id = $4",
        &[add.into(), granted.into(), expires.into(), conf_id.into()],
    )
    .await?;
    Ok(Extension {
        granted_seconds: granted as u64,
        amount: Money::from_micros(held.amount + add),
        extended: plan.is_some(),
    })
}

/// Ends a call's money exactly once: charges the rated cost of its talk time (never more than
/// was held), releases the rest, writes the ledger row and the call record. A second
/// settlement returns the first and charges nothing.
async fn settle<E: Exec>(
    e: &mut E,
    p: &Params,
    conf_id: &str,
    end: &CallEnd,
    now_ms: i64,
    origin: Option<&str>,
) -> Result<Settlement, StoreError> {
    let gone = e
        .row(
            &format!(
                "DELETE FROM reservations WHERE id = $1 AND ($2 IS NULL OR access_number = $2) \
                 RETURNING {RESERVATION_COLUMNS}"
            ),
            &[conf_id.into(), origin.into()],
        )
        .await?;
    let Some(gone) = gone else {
        let rec = e
            .row(
                "SELECT billed_seconds, cost, access_number FROM call_records WHERE conf_id = $1",
                &[conf_id.into()],
            )
            .await?
            .ok_or_else(|| StoreError::NoReservation(conf_id.to_string()))?;
        if origin.is_some_and(|o| o != rec.text(2).unwrap_or_default()) {
            return Err(StoreError::NoReservation(conf_id.to_string()));
        }
        return Ok(Settlement {
            conf_id: conf_id.to_string(),
            billed_seconds: rec.opt_int(0)?.unwrap_or(0).max(0) as u64,
            cost: Money::from_micros(rec.opt_int(1)?.unwrap_or(0)),
            already_settled: true,
        });
    };
    let held = HeldCall::from_cells(&gone)?;
    // (A RADIUS gateway's times are kept to its call's life by `radius::aaa`; the talk billed
    // is capped at the time held below, whatever they say.)
    let connect_at = end.connect_at.map(super::ms).or(held.connect_at);
    let disconnect_at = super::ms(end.disconnect_at);
    let talk_ms = connect_at.map_or(0, |c| (disconnect_at - c).max(0));
    let talk = (talk_ms as u64)
        .div_ceil(1000)
        .min(held.granted_seconds as u64);
    let tariff = &held.rate.tariff;
    let cost = tariff.cost(talk).micros().min(held.amount);
    let billed = tariff.billed_seconds(talk);
    let acct = e
        .row(
            "UPDATE accounts SET balance = balance - $1, reserved = reserved - $2, active_calls = active_calls - 1 \
             WHERE id = $3 RETURNING account, balance, currency, tenant",
            &[cost.into(), held.amount.into(), held.account_id.into()],
        )
        .await?
        .ok_or_else(|| StoreError::NoAccount(held.account_id.to_string()))?;
    let (account, balance, currency, tenant) =
        (acct.text(0)?, acct.int(1)?, acct.text(2)?, acct.text(3)?);
    if cost > 0 {
        e.exec(
            "INSERT INTO ledger (account_id, kind, amount, balance_after, idempotency_key, reference, note, created_at) \
             VALUES ($1, 'call', $2, $3, $4, $5, $6, $7)",
            &[
                held.account_id.into(),
                (-cost).into(),
                balance.into(),
                format!("call:{conf_id}").into(),
                conf_id.into(),
                format!("{} s to {} ({})", billed, held.destination, held.rate.description).into(),
                now_ms.into(),
            ],
        )
        .await?;
    }
    e.exec(
        "INSERT INTO call_records (conf_id, session_id, account, ani, access_number, destination, setup_at, \
         connect_at, disconnect_at, billed_seconds, cost, currency, deck, rate_prefix, rate_description, \
         disconnect_cause, return_code, node, created_at, voice_quality, tenant, gateway) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, $17, $18, $19, $20, $21)",
        &[
            conf_id.into(),
            held.session_id.as_str().into(),
            account.into(),
            held.ani.as_str().into(),
            held.access_number.as_str().into(),
            held.destination.as_str().into(),
            held.setup_at.into(),
            connect_at.into(),
            disconnect_at.into(),
            (billed as i64).into(),
            cost.into(),
            currency.into(),
            held.rate.deck.as_str().into(),
            held.rate.prefix.as_str().into(),
            held.rate.description.as_str().into(),
            clean(&end.cause, 200).into(),
            p.node_id.as_str().into(),
            now_ms.into(),
            end.voice_quality.map(i64::from).into(),
            tenant.into(),
            clean(&end.gateway, 64).into(),
        ],
    )
    .await?;
    Ok(Settlement {
        conf_id: conf_id.to_string(),
        billed_seconds: billed,
        cost: Money::from_micros(cost),
        already_settled: false,
    })
}
