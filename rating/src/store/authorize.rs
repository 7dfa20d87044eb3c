//! Authorization in the debit card's two phases, and the life of a call's money: reserve on
//! phase 2, extend while talking, settle exactly once at the end, and sweep what a dead node
//! left behind. Authorization never fails with an error: a store it cannot reach answers 8.

use super::ops::{self, clean, Done, Op, Reserved};
use super::{at_ms, ms, Account, AccountRow, Store, StoreError, ACCOUNT_COLUMNS};
use crate::codes::ReturnCode;
use crate::money::Money;
use crate::pin;
use crate::rules;
use crate::tariff::Tariff;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::Row;

/// Who is calling: the card (or, PIN-less, the calling number as account), from where.
#[derive(Debug, Clone, Default)]
pub struct AuthRequest {
    pub account: String,
    /// `None` asks for PIN-less authorization, allowed only on PIN-less cards.
    pub pin: Option<String>,
    pub ani: Option<String>,
    pub access_number: String,
    /// One per dial-in; all calls of a long-pound chain share it.
    pub session_id: String,
    /// The tenant whose cards this access number (or RADIUS client) takes; `None` takes every
    /// tenant's. Another tenant's card is answered as no card at all (code 1).
    pub tenant: Option<String>,
    /// The caller already proved it may spend from the card another way — a SIP account's
    /// digest, checked by our registrar — so no PIN is asked even of a PIN card. Only the
    /// B2BUA sets it, for its own subscribers; nothing a peer sends can.
    pub authenticated: bool,
}

/// Phase 2: the card again plus the destination and this call's conference id.
#[derive(Debug, Clone, Default)]
pub struct CallRequest {
    pub auth: AuthRequest,
    pub destination: String,
    /// New for every call; it names the reservation and the call record, and makes a repeated
    /// request (a retransmission) return the same reservation instead of a second one.
    pub conf_id: String,
    /// Hold all the talk time the credit buys at once, not a chunk: for a gateway that is told
    /// the credit time and enforces it itself (RADIUS), so it never asks to extend.
    pub whole_credit: bool,
    /// Price the call with this deck instead of the card's own: the tenant's deck for calls
    /// *to* its softphone subscribers, where `destination` is the number the caller dialled
    /// (ours). The prefix lists, which are about where a card dials, do not apply. Only the
    /// B2BUA sets it; nothing a peer sends can.
    pub rate_deck: Option<String>,
}

/// The phase-1 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountAnswer {
    pub code: ReturnCode,
    /// Spendable credit (balance + credit limit − held by running calls).
    pub available: Money,
    pub currency: String,
    pub language: String,
    /// With codes 51 and 52: the number to connect the caller to instead.
    pub redirect_number: String,
}

/// The rate row a call is priced with, as it was when the call was authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateInfo {
    pub deck: String,
    pub prefix: String,
    pub description: String,
    pub tariff: Tariff,
}

/// Money held for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub conf_id: String,
    pub amount: Money,
    /// Talk time covered so far: the cutoff unless extended.
    pub granted_seconds: u64,
    pub expires_at: DateTime<Utc>,
}

/// A reservation as staff see it: whose call, to where, how much is held and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReservation {
    pub conf_id: String,
    pub session_id: String,
    /// The node running the call.
    pub node: String,
    pub amount: Money,
    pub granted_seconds: u64,
    pub destination: String,
    pub ani: String,
    pub access_number: String,
    /// The rate row's description.
    pub rate: String,
    pub setup_at: DateTime<Utc>,
    /// When the called party answered; `None` while it rings.
    pub connect_at: Option<DateTime<Utc>>,
    /// When the sweeper may settle it if its node stops renewing.
    pub expires_at: DateTime<Utc>,
}

/// The phase-2 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallAnswer {
    pub code: ReturnCode,
    /// The talk time the caller's credit buys to this destination (announced).
    pub credit_time: u64,
    pub available: Money,
    pub currency: String,
    pub language: String,
    pub rate: Option<RateInfo>,
    pub reservation: Option<Reservation>,
    /// With codes 51 and 52: the number to connect the caller to instead (a free call).
    pub redirect_number: String,
}

/// The result of extending a running call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub granted_seconds: u64,
    pub amount: Money,
    /// False when nothing more could be held: the cutoff stays where it was.
    pub extended: bool,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    /// When the called party answered (`None`: never answered, nothing to pay).
    pub connect_at: Option<DateTime<Utc>>,
    pub disconnect_at: DateTime<Utc>,
    /// Why it ended (a Q.850 cause, "cutoff", "long pound" …), for the record.
    pub cause: String,
    /// The ICPIF-style voice-quality figure of the caller's leg, when the media passed us.
    pub voice_quality: Option<u32>,
    /// The gateway that carried the call (the last one tried), for the reports; empty when
    /// no gateway leg was set up.
    pub gateway: String,
}

/// What a settlement charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub conf_id: String,
    pub billed_seconds: u64,
    pub cost: Money,
    /// True when this call had already been settled: nothing was charged this time.
    pub already_settled: bool,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub settled: u64,
    pub released: u64,
}

/// A refusal inside the pipeline: an answer for the caller, or a store we could not reach.
enum Deny {
    Code(ReturnCode),
    Db(StoreError),
}

impl From<ReturnCode> for Deny {
    fn from(c: ReturnCode) -> Self {
        Deny::Code(c)
    }
}

impl From<sqlx::Error> for Deny {
    fn from(e: sqlx::Error) -> Self {
        Deny::Db(e.into())
    }
}

impl From<StoreError> for Deny {
    fn from(e: StoreError) -> Self {
        Deny::Db(e)
    }
}

impl Store {
    /// Phase 1: is this card good for a call at all, and how much credit does it have?
    pub async fn authorize_account(&self, req: &AuthRequest, now: DateTime<Utc>) -> AccountAnswer {
        let now_ms = ms(now);
        let outcome = match self.verify(req, now_ms, None).await {
            Ok(row) => {
                let a = &row.account;
                let funds = match &a.redirect {
                    Some(r) if r.code == ReturnCode::RedirectCustomerService => Err(r.code),
                    // A hotline card's calls are free: it needs no balance.
                    Some(_) => Ok(()),
                    None if a.tollfree_only => Ok(()),
                    None => rules::check_funds(&a.state()),
                };
                (funds.err().unwrap_or(ReturnCode::Success), Some(row))
            }
            Err(Deny::Code(c)) => (c, None),
            Err(Deny::Db(e)) => {
                tracing::error!(error = %e, "balance store unreachable: failing closed");
                (ReturnCode::ServiceNotAvailable, None)
            }
        };
        let (code, row) = outcome;
        if !code.is_success() {
            let conf_id = uuid::Uuid::new_v4().to_string();
            self.record_attempt(req, "", &conf_id, code, now_ms, row.as_ref())
                .await;
        }
        let redirect_number = row
            .as_ref()
            .and_then(|r| r.account.redirect.as_ref())
            .filter(|r| r.code == code)
            .map(|r| r.number.clone())
            .unwrap_or_default();
        let (available, currency, language) = match &row {
            Some(r) => (
                r.account.available(),
                r.account.currency.clone(),
                r.account.language.clone(),
            ),
            None => (Money::ZERO, String::new(), String::new()),
        };
        AccountAnswer {
            code,
            available,
            currency,
            language,
            redirect_number,
        }
    }

    /// Phase 2: may this card call this destination, for how long; and hold the money for the
    /// first chunk of talk time. A success carries the reservation the call must settle.
    pub async fn authorize_call(&self, req: &CallRequest, now: DateTime<Utc>) -> CallAnswer {
        let now_ms = ms(now);
        let mut answer = CallAnswer {
            code: ReturnCode::Success,
            credit_time: 0,
            available: Money::ZERO,
            currency: String::new(),
            language: String::new(),
            rate: None,
            reservation: None,
            redirect_number: String::new(),
        };
        let mut row = None;
        let (mut pending, mut counted) = (None, false);
        let result = self
            .authorize_call_inner(
                req,
                now_ms,
                &mut answer,
                &mut row,
                &mut pending,
                &mut counted,
            )
            .await;
        let result = match (result, pending) {
            (r, Some(card)) if !counted && !matches!(r, Err(Deny::Db(_))) => {
                // A good PIN that did not reach a hold is counted now, as it always was on
                // its own: whatever else the answer would have been, a card at its limit of
                // wrong PINs tells a guesser only "wrong PIN".
                let pin = req.auth.pin.as_deref().unwrap_or_default();
                match self.check_pin(&card, pin).await {
                    Ok(true) => r,
                    Ok(false) => {
                        answer.reservation = None;
                        Err(ReturnCode::InvalidPin.into())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            (r, _) => r,
        };
        match result {
            Ok(()) => {}
            Err(Deny::Code(c)) => answer.code = c,
            Err(Deny::Db(e)) => {
                tracing::error!(error = %e, "balance store unreachable: failing closed");
                answer.code = ReturnCode::ServiceNotAvailable;
            }
        }
        if !answer.code.is_success() {
            answer.reservation = None;
            answer.credit_time = 0;
            let conf = if req.conf_id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                req.conf_id.clone()
            };
            self.record_attempt(
                &req.auth,
                &req.destination,
                &conf,
                answer.code,
                now_ms,
                row.as_ref(),
            )
            .await;
        }
        answer
    }

    async fn authorize_call_inner(
        &self,
        req: &CallRequest,
        now_ms: i64,
        answer: &mut CallAnswer,
        row_out: &mut Option<AccountRow>,
        pending: &mut Option<AccountRow>,
        counted: &mut bool,
    ) -> Result<(), Deny> {
        let conf_ok = !req.conf_id.is_empty()
            && req.conf_id.len() <= 128
            // Cisco's conference ids are hex words separated by spaces.
            && req.conf_id.chars().all(|c| c.is_ascii_graphic() || c == ' ');
        if !conf_ok {
            return Err(ReturnCode::InvalidArgument.into());
        }
        let row = match self.verify(&req.auth, now_ms, Some(pending)).await {
            Err(Deny::Code(ReturnCode::AccountInUse)) => {
                return self.repeat_or(req, answer, ReturnCode::AccountInUse).await;
            }
            other => other?,
        };
        let account = row.account.clone();
        answer.currency = account.currency.clone();
        answer.language = account.language.clone();
        answer.available = account.available();
        *row_out = Some(row);
        let dest = req.destination.as_str();
        rules::check_digits(dest)?;
        if let Some(r) = &account.redirect {
            answer.redirect_number = r.number.clone();
            return Err(r.code.into());
        }
        let rate = match &req.rate_deck {
            // A call to the card's subscriber: what the tenant charges for it, found by the
            // number called (ours, so the prefix lists do not apply).
            Some(name) => self.priced(&account, name, dest, now_ms).await?,
            None => self.outgoing_rate(&account, dest, now_ms).await?,
        };
        answer.rate = Some(rate.clone());
        let id = row_out.as_ref().map(|r| r.id).unwrap_or_default();
        let hold = ops::Hold {
            account_id: id,
            conf_id: req.conf_id.clone(),
            session_id: req.auth.session_id.clone(),
            destination: req.destination.clone(),
            ani: req.auth.ani.clone().unwrap_or_default(),
            access_number: req.auth.access_number.clone(),
            whole_credit: req.whole_credit,
            rate,
            now_ms,
            pin_limit: pending
                .is_some()
                .then_some(i64::from(self.cfg.max_auth_failures)),
        };
        match self.money(Op::Hold(Box::new(hold))).await? {
            Done::Hold(Reserved::Held {
                available,
                credit_time,
                reservation,
            }) => {
                answer.available = available;
                answer.credit_time = credit_time;
                answer.reservation = Some(reservation);
                *counted = true;
                Ok(())
            }
            Done::Hold(Reserved::Refused(code, available)) => {
                answer.available = available;
                self.repeat_or(req, answer, code).await
            }
            other => unreachable!("a hold answered {other:?}"),
        }
    }

    /// The rate of a card's call out: free to a toll-free number, refused to a blocked one,
    /// else the card's deck's row for the destination.
    async fn outgoing_rate(
        &self,
        account: &Account,
        dest: &str,
        now_ms: i64,
    ) -> Result<RateInfo, Deny> {
        let lists = self.lists(now_ms).await?;
        if lists.blocked.matching(dest).is_some() {
            return Err(ReturnCode::CalledNumberBlocked.into());
        }
        if let Some(desc) = lists.tollfree.matching(dest) {
            return Ok(RateInfo {
                deck: account.rate_deck.clone(),
                prefix: String::new(),
                description: format!("toll-free: {desc}"),
                tariff: Tariff::new(Decimal::ZERO, Money::ZERO, 1, 1, 0)
                    .expect("a free tariff is valid"),
            });
        }
        self.priced(account, &account.rate_deck, dest, now_ms).await
    }

    /// The row of deck `name` for `dest` in the card's currency; none refuses the call, and
    /// so does a card that may make only toll-free calls (which cost nothing, and are
    /// priced before this).
    async fn priced(
        &self,
        account: &Account,
        name: &str,
        dest: &str,
        now_ms: i64,
    ) -> Result<RateInfo, Deny> {
        if account.tollfree_only {
            return Err(ReturnCode::TollFreeOnly.into());
        }
        rules::check_funds(&account.state())?;
        let deck = self.deck(name, now_ms).await?;
        let found = deck
            .lookup(dest, &account.currency, at_ms(now_ms))
            .ok_or(ReturnCode::CalledNumberBlocked)?;
        Ok(RateInfo {
            deck: name.to_string(),
            prefix: found.prefix.clone(),
            description: found.description.clone(),
            tariff: found.tariff.clone(),
        })
    }

    /// A refusal, unless this is a call already authorized being asked for again (a
    /// retransmission): then the same reservation, and no new hold.
    async fn repeat_or(
        &self,
        req: &CallRequest,
        answer: &mut CallAnswer,
        code: ReturnCode,
    ) -> Result<(), Deny> {
        match self.reservation(&req.conf_id).await? {
            Some(existing) => {
                answer.credit_time = existing.granted_seconds;
                answer.reservation = Some(existing);
                Ok(())
            }
            None => Err(code.into()),
        }
    }

    /// The money a call holds now, if it holds any.
    pub async fn reservation(&self, conf_id: &str) -> Result<Option<Reservation>, sqlx::Error> {
        let r = sqlx::query(
            "SELECT amount, granted_seconds, expires_at FROM reservations WHERE id = $1",
        )
        .bind(conf_id)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(Reservation {
                conf_id: conf_id.to_string(),
                amount: Money::from_micros(r.try_get(0)?),
                granted_seconds: r.try_get::<i64, _>(1)? as u64,
                expires_at: at_ms(r.try_get(2)?),
            })
        })
        .transpose()
    }

    /// A card's open reservations, oldest first: what finance sees as "held" on the card, and
    /// which node holds each (a dead node's are the sweeper's to settle).
    pub async fn reservations(&self, account: &str) -> Result<Vec<OpenReservation>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id, r.session_id, r.owner, r.amount, r.granted_seconds, r.destination, \
             r.ani, r.access_number, r.rate_description, r.setup_at, r.connect_at, r.expires_at \
             FROM reservations r JOIN accounts a ON a.id = r.account_id \
             WHERE a.account = $1 ORDER BY r.setup_at, r.id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OpenReservation {
                    conf_id: r.try_get("id")?,
                    session_id: r.try_get("session_id")?,
                    node: r.try_get("owner")?,
                    amount: Money::from_micros(r.try_get("amount")?),
                    granted_seconds: r.try_get::<i64, _>("granted_seconds")? as u64,
                    destination: r.try_get("destination")?,
                    ani: r.try_get("ani")?,
                    access_number: r.try_get("access_number")?,
                    rate: r.try_get("rate_description")?,
                    setup_at: at_ms(r.try_get("setup_at")?),
                    connect_at: r.try_get::<Option<i64>, _>("connect_at")?.map(at_ms),
                    expires_at: at_ms(r.try_get("expires_at")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Checks the credentials and the card's state (everything but money), counting failures
    /// towards the PIN-guessing and calling-number lockouts. Given `deferred`, a good PIN on a
    /// card that, as read, is under its limit is not counted here: the card goes into
    /// `deferred` and the caller counts it (in the hold, or with `check_pin`), saving a write.
    async fn verify(
        &self,
        req: &AuthRequest,
        now_ms: i64,
        deferred: Option<&mut Option<AccountRow>>,
    ) -> Result<AccountRow, Deny> {
        if let Some(ani) = &req.ani {
            if !ani.is_empty() {
                rules::check_ani(ani)?;
            }
        }
        let pinless = req.pin.is_none();
        if pinless {
            rules::check_digits(&req.account)?;
        } else {
            rules::check_card_number(&req.account, &self.cfg.card_policy)?;
        }
        if let Some(pin) = &req.pin {
            rules::check_digits(pin)?;
        }
        let ani = req.ani.as_deref().filter(|a| !a.is_empty());
        let (row, locked_until) = self.card_and_lockout(&req.account, ani).await?;
        if locked_until.is_some_and(|u| u > now_ms) {
            return Err(ReturnCode::RetriesExceeded.into());
        }
        // Another tenant's card is no card here: nothing about it is told.
        let row = row.filter(|r| {
            req.tenant
                .as_ref()
                .is_none_or(|t| r.account.any_tenant || r.account.tenant == *t)
        });
        let Some(row) = row else {
            if let Some(ani) = ani {
                if self.note_failure("ani", ani, now_ms).await? {
                    return Err(ReturnCode::RetriesExceeded.into());
                }
            }
            return Err(ReturnCode::InvalidAccount.into());
        };
        let pin_ok = match (&req.pin, deferred) {
            (Some(pin), Some(deferred)) if self.uncounted_good_pin(&row, pin) => {
                *deferred = Some(row.clone());
                true
            }
            (Some(pin), _) => self.check_pin(&row, pin).await?,
            (None, _) => row.account.pinless || req.authenticated,
        };
        if !pin_ok {
            // A locked card answers as a wrong PIN does, whatever PIN was given: a guesser
            // learns nothing from the lock. Only the calling number's lockout is told (10).
            if let Some(ani) = ani {
                if self.note_failure("ani", ani, now_ms).await? {
                    return Err(ReturnCode::RetriesExceeded.into());
                }
            }
            return Err(ReturnCode::InvalidPin.into());
        }
        let state = row.account.state();
        let status = rules::AccountState {
            // Money is judged per phase by the caller; here only status, expiry and concurrency.
            balance: Money::from_micros(1),
            reserved: Money::ZERO,
            credit_limit: Money::ZERO,
            ..state
        };
        rules::check_account(&status, now_ms)?;
        Ok(row)
    }

    /// The card, and in the same round trip until when the calling number is locked out (if
    /// it is): one statement where there were two on every authorization.
    async fn card_and_lockout(
        &self,
        account: &str,
        ani: Option<&str>,
    ) -> Result<(Option<AccountRow>, Option<i64>), sqlx::Error> {
        let q = format!(
            "SELECT (SELECT locked_until FROM lockouts WHERE kind = 'ani' AND subject = $2) \
             AS ani_locked_until, {ACCOUNT_COLUMNS} \
             FROM (SELECT 1 AS one) AS one LEFT JOIN accounts ON accounts.account = $1"
        );
        let r = sqlx::query(&q)
            .bind(account)
            .bind(ani)
            .fetch_one(&self.pool)
            .await?;
        let locked_until: Option<i64> = r.try_get("ani_locked_until")?;
        let row = match r.try_get::<Option<i64>, _>("id")? {
            Some(_) => Some(AccountRow::from_row(&r)?),
            None => None,
        };
        Ok((row, locked_until))
    }

    /// A good PIN on a card that, as read, may still take one: worth deferring its count.
    fn uncounted_good_pin(&self, row: &AccountRow, pin: &str) -> bool {
        row.pin_failures < i64::from(self.cfg.max_auth_failures)
            && row.account.status != rules::CardStatus::Locked
            && pin::verify_pin(&self.site_key, &row.pin_salt, pin, &row.pin_hash)
    }

    /// One PIN attempt on a card, counted in the same statement that decides it: a good PIN
    /// stands only while the card has fewer than `max_auth_failures` wrong ones since its last
    /// good one (and is not locked), and resets the count; a wrong one adds to it while under
    /// the limit. However many attempts race, a good PIN is recognised only if it lands before
    /// the limit, so a burst buys no more guesses than patience would; the wrong PIN that
    /// reaches the limit locks the card.
    async fn check_pin(&self, row: &AccountRow, pin: &str) -> Result<bool, sqlx::Error> {
        let max = i64::from(self.cfg.max_auth_failures);
        let good = pin::verify_pin(&self.site_key, &row.pin_salt, pin, &row.pin_hash);
        let set = if good {
            "pin_failures = 0"
        } else {
            "pin_failures = pin_failures + 1"
        };
        let counted: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE accounts SET {set} \
             WHERE id = $1 AND pin_failures < $2 AND status <> 'locked' RETURNING pin_failures"
        ))
        .bind(row.id)
        .bind(max)
        .fetch_optional(&self.pool)
        .await?;
        let Some(failures) = counted else {
            // Locked, or at the limit: the same answer as a wrong PIN.
            return Ok(false);
        };
        if !good && failures >= max {
            sqlx::query(
                "UPDATE accounts SET status = 'locked' WHERE id = $1 AND status = 'active'",
            )
            .bind(row.id)
            .execute(&self.pool)
            .await?;
            tracing::warn!(
                account = row.account.account,
                failures,
                "card locked after repeated wrong PINs"
            );
        }
        Ok(good)
    }

    /// Counts a failure against a calling number; true when it reached the limit in the
    /// window (the number is then locked out for `ani_lockout`).
    async fn note_failure(
        &self,
        kind: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query("INSERT INTO auth_failures (kind, subject, at) VALUES ($1, $2, $3)")
            .bind(kind)
            .bind(subject)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        let since = now_ms - self.cfg.failure_window.as_millis() as i64;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM auth_failures WHERE kind = $1 AND subject = $2 AND at > $3",
        )
        .bind(kind)
        .bind(subject)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        if count < i64::from(self.cfg.max_auth_failures) {
            return Ok(false);
        }
        let until = now_ms + self.cfg.ani_lockout.as_millis() as i64;
        sqlx::query(
            "INSERT INTO lockouts (kind, subject, locked_until) VALUES ($1, $2, $3) \
             ON CONFLICT (kind, subject) DO UPDATE SET locked_until = excluded.locked_until",
        )
        .bind(kind)
        .bind(subject)
        .bind(until)
        .execute(&self.pool)
        .await?;
        tracing::warn!(
            ani = subject,
            failures = count,
            "calling number locked out after repeated failures"
        );
        Ok(true)
    }

    /// Writes the record of a refused attempt (best effort: a store that is down cannot take it).
    async fn record_attempt(
        &self,
        req: &AuthRequest,
        destination: &str,
        conf_id: &str,
        code: ReturnCode,
        now_ms: i64,
        row: Option<&AccountRow>,
    ) {
        if code == ReturnCode::ServiceNotAvailable {
            return;
        }
        // Only printable, bounded text reaches the records: the input may be what was refused.
        let clean = |s: &str| clean(s, 64);
        let result = sqlx::query(
            "INSERT INTO call_records (conf_id, session_id, account, ani, access_number, destination, \
             setup_at, currency, return_code, node, created_at, disconnect_cause, tenant) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $7, $11, $12) ON CONFLICT (conf_id) DO NOTHING",
        )
        .bind(clean(conf_id))
        .bind(clean(&req.session_id))
        .bind(clean(&req.account))
        .bind(clean(req.ani.as_deref().unwrap_or("")))
        .bind(clean(&req.access_number))
        .bind(clean(destination))
        .bind(now_ms)
        .bind(row.map(|r| r.account.currency.clone()).unwrap_or_default())
        .bind(i64::from(code.code()))
        .bind(&self.cfg.node_id)
        .bind(format!("refused: {}", code.meaning()))
        // The card's tenant; for a card we do not know, the access number's.
        .bind(
            row.map(|r| r.account.tenant.clone())
                .or_else(|| req.tenant.clone())
                .unwrap_or_default(),
        )
        .execute(&self.pool)
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record a refused attempt");
        }
    }

    /// What a card would get to a destination now (no PIN, no hold): for staff answering
    /// "why can't I call …?".
    pub async fn quote(
        &self,
        account: &str,
        destination: &str,
        now: DateTime<Utc>,
    ) -> Result<Quote, StoreError> {
        let acct = self.account(account).await?;
        if rules::check_digits(destination).is_err() {
            return Err(StoreError::Invalid(format!(
                "destination '{destination}' must be 1 to 32 digits"
            )));
        }
        let now_ms = ms(now);
        let lists = self.lists(now_ms).await?;
        let deck = self.deck(&acct.rate_deck, now_ms).await?;
        let rate = deck
            .lookup(destination, &acct.currency, now)
            .map(|r| RateInfo {
                deck: acct.rate_deck.clone(),
                prefix: r.prefix.clone(),
                description: r.description.clone(),
                tariff: r.tariff.clone(),
            });
        let credit_time = rate
            .as_ref()
            .map_or(0, |r| r.tariff.credit_time(acct.available()));
        Ok(Quote {
            blocked: lists.blocked.matching(destination).map(str::to_string),
            tollfree: lists.tollfree.matching(destination).map(str::to_string),
            available: acct.available(),
            account: acct,
            rate,
            credit_time,
        })
    }

    /// Marks a call answered: billing starts here, and the reservation's life runs from here.
    pub async fn mark_connected(&self, conf_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.mark_connected_as(conf_id, at, None).await
    }

    /// [`Store::mark_connected`] for the reservation's maker only (see [`Store::settle_as`]).
    pub async fn mark_connected_as(
        &self,
        conf_id: &str,
        at: DateTime<Utc>,
        origin: Option<&str>,
    ) -> Result<(), StoreError> {
        self.money(Op::Connect {
            conf_id: conf_id.to_string(),
            at_ms: ms(at),
            origin: origin.map(str::to_string),
        })
        .await
        .map(|_| ())
    }

    /// Holds another chunk for a running call, as far as the card allows. Called before the
    /// granted time runs out; when nothing more can be held the cutoff stays where it is.
    pub async fn extend(&self, conf_id: &str, now: DateTime<Utc>) -> Result<Extension, StoreError> {
        match self
            .money(Op::Extend {
                conf_id: conf_id.to_string(),
                now_ms: ms(now),
            })
            .await?
        {
            Done::Extended(x) => Ok(x),
            other => unreachable!("an extension answered {other:?}"),
        }
    }

    /// Ends a call's money exactly once: charges the rated cost of its talk time (never more
    /// than was held: time past the granted cutoff is the platform's loss, not the caller's),
    /// releases the rest, and writes the ledger row and the call record in one transaction.
    /// Settling again returns the first settlement and charges nothing.
    pub async fn settle(
        &self,
        conf_id: &str,
        end: &CallEnd,
        now: DateTime<Utc>,
    ) -> Result<Settlement, StoreError> {
        self.settle_as(conf_id, end, now, None).await
    }

    /// [`Store::settle`] for whoever made the reservation only: `origin` is the access number
    /// it was made through (`radius <client>` for a RADIUS client), so a gateway cannot end, or
    /// bill, a call that another gateway or one of our own nodes holds. Someone else's
    /// reservation is answered as none at all.
    pub async fn settle_as(
        &self,
        conf_id: &str,
        end: &CallEnd,
        now: DateTime<Utc>,
        origin: Option<&str>,
    ) -> Result<Settlement, StoreError> {
        match self
            .money(Op::Settle {
                conf_id: conf_id.to_string(),
                end: Box::new(end.clone()),
                now_ms: ms(now),
                origin: origin.map(str::to_string),
            })
            .await?
        {
            Done::Settled(x) => Ok(x),
            other => unreachable!("a settlement answered {other:?}"),
        }
    }

    /// Settles reservations whose owner stopped extending them: a call that was answered is
    /// charged up to the last moment its node was known alive (never past its grant), one never
    /// answered is released. Also forgets authentication failures older than the window.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<SweepReport, StoreError> {
        let now_ms = ms(now);
        let mut report = SweepReport::default();
        let expired = sqlx::query(
            "SELECT r.id, r.connect_at, r.updated_at, r.granted_seconds, r.owner, n.heartbeat_at \
             FROM reservations r LEFT JOIN nodes n ON n.id = r.owner WHERE r.expires_at < $1 LIMIT 500",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        for r in &expired {
            let id: String = r.try_get(0)?;
            let connect_at: Option<i64> = r.try_get(1)?;
            let updated_at: i64 = r.try_get(2)?;
            let granted: i64 = r.try_get(3)?;
            let owner: String = r.try_get(4)?;
            let heartbeat: Option<i64> = r.try_get(5)?;
            let last_alive = heartbeat.unwrap_or(updated_at).max(updated_at).min(now_ms);
            let end_ms = match connect_at {
                Some(c) => last_alive.clamp(c, c + granted * 1000),
                None => last_alive,
            };
            let end = CallEnd {
                connect_at: connect_at.map(at_ms),
                disconnect_at: at_ms(end_ms),
                cause: format!("swept: owner {owner} stopped extending"),
                voice_quality: None,
                gateway: String::new(),
            };
            match self.settle(&id, &end, now).await {
                Ok(s) if s.already_settled => continue,
                Ok(s) if s.cost.is_positive() => report.settled += 1,
                Ok(_) => report.released += 1,
                Err(StoreError::NoReservation(_)) => continue,
                Err(e) => return Err(e),
            }
            if self.cfg.account_swept_calls {
                self.account_swept(&id, &end, &owner).await?;
            }
        }
        let since = now_ms - self.cfg.failure_window.as_millis() as i64;
        sqlx::query("DELETE FROM auth_failures WHERE at < $1")
            .bind(since)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM lockouts WHERE locked_until < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(report)
    }
}

/// A what-if for staff: the rate row, lists and credit time that would apply.
#[derive(Debug, Clone)]
pub struct Quote {
    pub account: super::Account,
    pub available: Money,
    pub rate: Option<RateInfo>,
    pub blocked: Option<String>,
    pub tollfree: Option<String>,
    pub credit_time: u64,
}
