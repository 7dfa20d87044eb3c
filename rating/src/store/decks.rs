//! Rate decks and prefix lists in the database, and the per-node in-memory copies that
//! authorization looks up. An import replaces a deck in one transaction and bumps its version;
//! every node notices the new version within `deck_refresh` and reloads.

use super::{ms, Cached, Lists, Store, StoreError};
use crate::deck::{Deck, PrefixSet, RateRow};
use crate::money::Money;
use crate::tariff::Tariff;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::Row;
use std::str::FromStr;
use std::sync::Arc;

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub name: String,
    pub rows: usize,
    pub version: i64,
}

/// Rows per multi-row INSERT: 11 parameters each stays far below both databases' limits.
const BATCH: usize = 500;

impl Store {
    /// Replaces deck `name` with `rows` atomically: a call being authorized sees the old deck
    /// or the new one, never a mix.
    pub async fn import_rates(
        &self,
        name: &str,
        rows: &[RateRow],
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<ImportSummary, StoreError> {
        super::check_text("deck name", name, true, 64)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM rates WHERE deck = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        for chunk in rows.chunks(BATCH) {
            let mut sql = String::from(
                "INSERT INTO rates (deck, prefix, description, rate_per_minute, connect_fee, \
                 initial_increment, increment, minimum_seconds, time_band, currency, line) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 11;
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for k in 1..=11 {
                    if k > 1 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", b + k));
                }
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for r in chunk {
                let t = &r.tariff;
                q = q
                    .bind(name)
                    .bind(&r.prefix)
                    .bind(&r.description)
                    .bind(t.rate_per_minute().to_string())
                    .bind(t.connect_fee().micros())
                    .bind(i64::from(t.initial_increment()))
                    .bind(i64::from(t.increment()))
                    .bind(i64::from(t.minimum_seconds()))
                    .bind(
                        r.time_band
                            .as_ref()
                            .map(|b| b.as_str().to_string())
                            .unwrap_or_default(),
                    )
                    .bind(&r.currency)
                    .bind(r.line as i64);
            }
            q.execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO rate_decks (name, row_count, imported_at, source) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET row_count = excluded.row_count, \
             imported_at = excluded.imported_at, source = excluded.source",
        )
        .bind(name)
        .bind(rows.len() as i64)
        .bind(ms(now))
        .bind(source)
        .execute(&mut *tx)
        .await?;
        let version = bump_version(&mut tx, &format!("deck:{name}")).await?;
        tx.commit().await?;
        Ok(ImportSummary {
            name: name.to_string(),
            rows: rows.len(),
            version,
        })
    }

    /// Replaces the blocked (9) or toll-free (13) prefix list.
    pub async fn import_prefix_list(
        &self,
        list: &str,
        entries: &[(String, String)],
    ) -> Result<ImportSummary, StoreError> {
        if list != "blocked" && list != "tollfree" {
            return Err(StoreError::Invalid(format!(
                "no prefix list '{list}' (blocked or tollfree)"
            )));
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM prefix_lists WHERE list = $1")
            .bind(list)
            .execute(&mut *tx)
            .await?;
        for (prefix, description) in entries {
            sqlx::query("INSERT INTO prefix_lists (list, prefix, description) VALUES ($1, $2, $3)")
                .bind(list)
                .bind(prefix)
                .bind(description)
                .execute(&mut *tx)
                .await?;
        }
        let version = bump_version(&mut tx, "lists").await?;
        tx.commit().await?;
        Ok(ImportSummary {
            name: list.to_string(),
            rows: entries.len(),
            version,
        })
    }

    async fn version(&self, name: &str) -> Result<i64, sqlx::Error> {
        Ok(
            sqlx::query_scalar("SELECT version FROM versions WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }

    /// The current copy of deck `name`, reloaded when another import bumped its version.
    pub(crate) async fn deck(&self, name: &str, now_ms: i64) -> Result<Arc<Deck>, sqlx::Error> {
        let refresh = self.cfg.deck_refresh.as_millis() as i64;
        let cached_version = {
            let decks = self.decks.read().expect("deck cache poisoned");
            match decks.get(name) {
                Some(c) if now_ms - c.checked_at < refresh => return Ok(c.value.clone()),
                Some(c) => Some(c.version),
                None => None,
            }
        };
        let version = self.version(&format!("deck:{name}")).await?;
        if cached_version == Some(version) {
            let mut decks = self.decks.write().expect("deck cache poisoned");
            if let Some(c) = decks.get_mut(name) {
                c.checked_at = now_ms;
                return Ok(c.value.clone());
            }
        }
        let rows = sqlx::query(
            "SELECT prefix, description, rate_per_minute, connect_fee, initial_increment, increment, \
             minimum_seconds, time_band, currency, line FROM rates WHERE deck = $1",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let mut parsed = Vec::with_capacity(rows.len());
        for r in &rows {
            match rate_row(r) {
                Ok(row) => parsed.push(row),
                Err(e) => {
                    tracing::warn!(deck = name, error = %e, "skipping an unreadable stored rate row")
                }
            }
        }
        let deck = Arc::new(Deck::new(parsed));
        self.decks.write().expect("deck cache poisoned").insert(
            name.to_string(),
            Cached {
                value: deck.clone(),
                version,
                checked_at: now_ms,
            },
        );
        Ok(deck)
    }

    /// The current blocked and toll-free lists.
    pub(crate) async fn lists(&self, now_ms: i64) -> Result<Arc<Lists>, sqlx::Error> {
        let refresh = self.cfg.deck_refresh.as_millis() as i64;
        let cached_version = {
            let lists = self.lists.read().expect("list cache poisoned");
            match lists.as_ref() {
                Some(c) if now_ms - c.checked_at < refresh => return Ok(c.value.clone()),
                Some(c) => Some(c.version),
                None => None,
            }
        };
        let version = self.version("lists").await?;
        if cached_version == Some(version) {
            let mut lists = self.lists.write().expect("list cache poisoned");
            if let Some(c) = lists.as_mut() {
                c.checked_at = now_ms;
                return Ok(c.value.clone());
            }
        }
        let rows = sqlx::query("SELECT list, prefix, description FROM prefix_lists")
            .fetch_all(&self.pool)
            .await?;
        let mut blocked = Vec::new();
        let mut tollfree = Vec::new();
        for r in &rows {
            let entry: (String, String) = (r.try_get(1)?, r.try_get(2)?);
            if r.try_get::<String, _>(0)? == "blocked" {
                blocked.push(entry);
            } else {
                tollfree.push(entry);
            }
        }
        let pairs = |v: &Vec<(String, String)>| -> PrefixSet {
            PrefixSet::new(v.iter().map(|(p, d)| (p.as_str(), d.as_str())))
        };
        let value = Arc::new(Lists {
            blocked: pairs(&blocked),
            tollfree: pairs(&tollfree),
        });
        *self.lists.write().expect("list cache poisoned") = Some(Cached {
            value: value.clone(),
            version,
            checked_at: now_ms,
        });
        Ok(value)
    }
}

async fn bump_version(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    name: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO versions (name, version) VALUES ($1, 1) \
         ON CONFLICT (name) DO UPDATE SET version = versions.version + 1 RETURNING version",
    )
    .bind(name)
    .fetch_one(&mut **tx)
    .await
}

fn rate_row(r: &sqlx::any::AnyRow) -> Result<RateRow, String> {
    let get_i = |c: &str| -> Result<u32, String> {
        let v: i64 = r.try_get(c).map_err(|e| e.to_string())?;
        u32::try_from(v).map_err(|_| format!("{c} out of range"))
    };
    let rate: String = r.try_get("rate_per_minute").map_err(|e| e.to_string())?;
    let tariff = Tariff::new(
        Decimal::from_str(&rate).map_err(|e| e.to_string())?,
        Money::from_micros(r.try_get("connect_fee").map_err(|e| e.to_string())?),
        get_i("initial_increment")?,
        get_i("increment")?,
        get_i("minimum_seconds")?,
    )
    .map_err(|e| e.to_string())?;
    let band: String = r.try_get("time_band").map_err(|e| e.to_string())?;
    Ok(RateRow {
        prefix: r.try_get("prefix").map_err(|e| e.to_string())?,
        description: r.try_get("description").map_err(|e| e.to_string())?,
        tariff,
        time_band: if band.is_empty() {
            None
        } else {
            Some(band.parse()?)
        },
        currency: r.try_get("currency").map_err(|e| e.to_string())?,
        line: r.try_get::<i64, _>("line").map_err(|e| e.to_string())? as u64,
    })
}
