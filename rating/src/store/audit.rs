//! The audit log: who changed what through the admin API, and when. Finance and ITSP staff
//! share one database; when a balance or a card's status is questioned, this is the answer.

use super::{at_ms, ms, Store, StoreError};
use chrono::{DateTime, Utc};
use sqlx::any::AnyArguments;
use sqlx::{Any, Row, Transaction};

/// One change, as the admin API records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The token's name.
    pub actor: String,
    /// `admin`, `finance` or `itsp:<tenant>`.
    pub role: String,
    /// What was done (`topup`, `block`, `create` …).
    pub action: String,
    /// What it was done to (a card number, a deck name …).
    pub target: String,
    /// The request's particulars (amount, reference …), as text.
    pub detail: String,
    /// The daily allowance this change draws on (an ITSP minting cards or top-ups): charged in
    /// the same transaction, so parallel requests on several nodes cannot pass it together.
    pub allowance: Option<Allowance>,
}

/// A tenant's daily allowance for new money, and what a change takes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    pub tenant: String,
    /// The money the change puts on cards.
    pub amount: crate::Money,
    /// The most the tenant may put on cards in one UTC day.
    pub per_day: crate::Money,
}

fn insert(e: &AuditEntry) -> sqlx::query::Query<'_, Any, AnyArguments<'_>> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, role, action, target, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(ms(e.at))
    .bind(&e.actor)
    .bind(&e.role)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.detail)
}

/// Writes `e` inside the transaction of the change it describes, so the two commit together:
/// no change without its entry, no entry for a change that did not happen.
pub(super) async fn audit_in(
    tx: &mut Transaction<'_, Any>,
    e: Option<&AuditEntry>,
) -> Result<(), StoreError> {
    if let Some(e) = e {
        if let Some(a) = &e.allowance {
            charge(tx, a, e.at).await?;
        }
        insert(e).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Takes `a.amount` from the tenant's allowance for the day of `at`, or refuses.
async fn charge(
    tx: &mut Transaction<'_, Any>,
    a: &Allowance,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let over = || {
        StoreError::OverAllowance(format!(
            "tenant {} may put at most {} on cards a day (UTC); this would pass it",
            a.tenant, a.per_day
        ))
    };
    if a.amount > a.per_day {
        return Err(over());
    }
    let day = at.timestamp().div_euclid(86_400);
    let done = sqlx::query(
        "INSERT INTO tenant_mint (tenant, day, minted) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant, day) DO UPDATE SET minted = tenant_mint.minted + excluded.minted \
         WHERE tenant_mint.minted + excluded.minted <= $4",
    )
    .bind(&a.tenant)
    .bind(day)
    .bind(a.amount.micros())
    .bind(a.per_day.micros())
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(over());
    }
    Ok(())
}

impl Store {
    /// Appends one entry to the audit log, for changes made outside the database (files).
    pub async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        insert(e).execute(&self.pool).await?;
        Ok(())
    }

    /// The latest `limit` entries, newest first, for one target or all.
    pub async fn audit_log(
        &self,
        target: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, role, action, target, detail FROM audit_log \
             WHERE ($1 = '' OR target = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(target.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: at_ms(r.try_get("at")?),
                    actor: r.try_get("actor")?,
                    role: r.try_get("role")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                    allowance: None,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}
