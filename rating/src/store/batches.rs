//! Batches of cards as objects: a retail run of cards is created together, sold together and,
//! when a box of them is lost or stolen, blocked together. Finance finds a batch again by its
//! id or name, sees how much of it is used and how much money is still on it, and exports its
//! card list (never the PINs: those exist once, in the CSV made at creation).

use super::audit::{self, AuditEntry};
use super::{at_ms, ms, NewAccount, Store, StoreError};
use crate::rules::CardStatus;
use crate::Money;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// What a new batch is: its cards are drawn by the caller, all alike.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// What finance calls it; empty gets the id.
    pub name: String,
    /// Who made it (the token's name, or `cli`).
    pub created_by: String,
}

/// A batch with what has become of its cards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub currency: String,
    /// Each card's opening balance.
    pub face_value: Money,
    pub cards: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Cards that have paid for at least one call.
    pub used: i64,
    /// Cards past their expiry date.
    pub expired: i64,
    pub blocked: i64,
    /// Money on the cards that can still spend it (not blocked, not expired).
    pub money_left: Money,
}

impl BatchSummary {
    /// Cards never used, not expired and not blocked: still for sale or in a customer's pocket.
    pub fn unused(&self) -> i64 {
        (self.cards - self.used - self.expired - self.blocked).max(0)
    }
}

/// One card of a batch, for its export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCard {
    pub account: String,
    pub status: CardStatus,
    pub balance: Money,
    pub expires_at: Option<DateTime<Utc>>,
    pub used: bool,
}

/// A fresh batch id: the day it was made and six random hex digits (`B-20261204-3fa9c1`).
fn new_id(now: DateTime<Utc>) -> String {
    format!(
        "B-{}-{}",
        now.format("%Y%m%d"),
        hex::encode(rand::random::<[u8; 3]>())
    )
}

/// Whether `id` has the shape of a batch id (checked before it reaches a query or a log).
pub fn check_batch_id(id: &str) -> Result<(), StoreError> {
    let ok = id.len() <= 40
        && id.starts_with("B-")
        && id[2..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::NoBatch(id.chars().take(40).collect()))
    }
}

const SUMMARY: &str = "SELECT b.id, b.name, b.tenant, b.currency, b.face_value, b.cards, b.expires_at, \
     b.created_at, b.created_by, \
     CAST(COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM ledger l WHERE l.account_id = a.id \
       AND l.kind = 'call') THEN 1 ELSE 0 END), 0) AS BIGINT) AS used, \
     CAST(COALESCE(SUM(CASE WHEN a.expires_at IS NOT NULL AND a.expires_at < $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS expired, \
     CAST(COALESCE(SUM(CASE WHEN a.status <> 'active' AND NOT (a.expires_at IS NOT NULL AND a.expires_at < $1) \
       THEN 1 ELSE 0 END), 0) AS BIGINT) AS blocked, \
     CAST(COALESCE(SUM(CASE WHEN a.status = 'active' AND NOT (a.expires_at IS NOT NULL AND a.expires_at < $1) \
       THEN a.balance ELSE 0 END), 0) AS BIGINT) AS money_left \
     FROM batches b LEFT JOIN accounts a ON a.batch_id = b.id";

fn summary(r: &sqlx::any::AnyRow) -> Result<BatchSummary, sqlx::Error> {
    Ok(BatchSummary {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        tenant: r.try_get("tenant")?,
        currency: r.try_get("currency")?,
        face_value: Money::from_micros(r.try_get("face_value")?),
        cards: r.try_get("cards")?,
        expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(at_ms),
        created_at: at_ms(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
        used: r.try_get("used")?,
        expired: r.try_get("expired")?,
        blocked: r.try_get("blocked")?,
        money_left: Money::from_micros(r.try_get("money_left")?),
    })
}

impl Store {
    /// Creates the cards of a new batch and the batch itself in one transaction (all or none),
    /// with its audit entry: the batch's id.
    pub async fn create_batch(
        &self,
        batch: &NewBatch,
        cards: &[NewAccount],
        now: DateTime<Utc>,
        tick: impl FnMut(),
        audit: Option<&AuditEntry>,
    ) -> Result<String, StoreError> {
        let Some(first) = cards.first() else {
            return Err(StoreError::Invalid(
                "a batch needs at least one card".into(),
            ));
        };
        super::check_text("batch name", &batch.name, false, 80)?;
        if cards.iter().any(|c| {
            c.balance != first.balance
                || c.currency != first.currency
                || c.tenant != first.tenant
                || c.expires_at != first.expires_at
        }) {
            return Err(StoreError::Invalid(
                "the cards of a batch share balance, currency, tenant and expiry".into(),
            ));
        }
        let id = new_id(now);
        let name = if batch.name.trim().is_empty() {
            id.clone()
        } else {
            batch.name.trim().to_string()
        };
        for n in cards {
            self.validate_new(n)?;
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO batches (id, name, tenant, currency, face_value, cards, expires_at, \
             created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&name)
        .bind(&first.tenant)
        .bind(&first.currency)
        .bind(first.balance.micros())
        .bind(i64::try_from(cards.len()).unwrap_or(i64::MAX))
        .bind(first.expires_at.map(ms))
        .bind(ms(now))
        .bind(&batch.created_by)
        .execute(&mut *tx)
        .await?;
        self.insert_accounts(&mut tx, cards, ms(now), Some(&id), tick)
            .await?;
        audit::audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The batches of one tenant or of all, newest first.
    pub async fn batches(
        &self,
        tenant: Option<&str>,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<BatchSummary>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SUMMARY} WHERE ($2 = '' OR b.tenant = $2) GROUP BY b.id, b.name, b.tenant, \
             b.currency, b.face_value, b.cards, b.expires_at, b.created_at, b.created_by \
             ORDER BY b.created_at DESC, b.id LIMIT $3"
        ))
        .bind(ms(now))
        .bind(tenant.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(summary).collect::<Result<_, _>>()?)
    }

    /// One batch and what has become of its cards.
    pub async fn batch(&self, id: &str, now: DateTime<Utc>) -> Result<BatchSummary, StoreError> {
        check_batch_id(id)?;
        let row = sqlx::query(&format!(
            "{SUMMARY} WHERE b.id = $2 GROUP BY b.id, b.name, b.tenant, b.currency, \
             b.face_value, b.cards, b.expires_at, b.created_at, b.created_by"
        ))
        .bind(ms(now))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(summary(&r)?),
            None => Err(StoreError::NoBatch(id.to_string())),
        }
    }

    /// Blocks every active card of a batch, or unblocks every blocked one, as one change with
    /// one audit entry: how many cards it changed. Unblocking leaves a PIN-locked card locked
    /// (its owner's wrong PINs are a card-by-card decision).
    pub async fn set_batch_blocked(
        &self,
        id: &str,
        blocked: bool,
        audit: Option<&AuditEntry>,
    ) -> Result<u64, StoreError> {
        check_batch_id(id)?;
        let (to, from) = if blocked {
            ("blocked", "active")
        } else {
            ("active", "blocked")
        };
        let mut tx = self.pool.begin().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM batches WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NoBatch(id.to_string()));
        }
        let done =
            sqlx::query("UPDATE accounts SET status = $1 WHERE batch_id = $2 AND status = $3")
                .bind(to)
                .bind(id)
                .bind(from)
                .execute(&mut *tx)
                .await?;
        let n = done.rows_affected();
        if let Some(a) = audit {
            let mut a = a.clone();
            a.detail = format!("{} cards={n}", a.detail).trim().to_string();
            audit::audit_in(&mut tx, Some(&a)).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// The cards of a batch in number order, without their PINs.
    pub async fn batch_cards(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<BatchCard>, StoreError> {
        self.batch(id, now).await?;
        let rows = sqlx::query(
            "SELECT a.account, a.status, a.balance, a.expires_at, \
             CASE WHEN EXISTS (SELECT 1 FROM ledger l WHERE l.account_id = a.id \
               AND l.kind = 'call') THEN 1 ELSE 0 END AS used \
             FROM accounts a WHERE a.batch_id = $1 ORDER BY a.account",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BatchCard {
                    account: r.try_get("account")?,
                    status: CardStatus::parse(&r.try_get::<String, _>("status")?),
                    balance: Money::from_micros(r.try_get("balance")?),
                    expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(at_ms),
                    used: r.try_get::<i64, _>("used")? == 1,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
