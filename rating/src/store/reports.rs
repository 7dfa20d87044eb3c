//! What finance staff and ITSPs read: calls, answered calls, minutes, revenue, and the money
//! that came in or went back, per day, destination group, gateway or return code, per tenant.
//!
//! A report must stay fast on ten million call records, so each closed UTC day is rolled up
//! once into `report_calls` and `report_money` (a few rows per day), and only the days not
//! rolled up yet (today) are counted from the records themselves. The roll-up is not written
//! by each settlement: one summary row shared by every call to the same destination would be
//! a row every settlement on PostgreSQL queues behind. A day is counted when its last record
//! was written (the moment the money moved, as in the ledger), and rolled up a margin after it
//! closes, so a record settled at 23:59:59 on a node whose clock is a little behind still
//! lands in its day.

use super::{ms, Store, StoreError};
use crate::money::Money;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use sqlx::Row;
use std::collections::BTreeMap;

const DAY_MS: i64 = 86_400_000;

/// How long after midnight (UTC) a day is rolled up: records settled by nodes whose clocks
/// are behind by less than this still count in their day.
pub const ROLL_UP_MARGIN: Duration = Duration::minutes(10);

/// The longest range one report covers.
pub const MAX_REPORT_DAYS: i64 = 400;

/// Which days, and whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRange {
    /// First day, inclusive (UTC).
    pub from: NaiveDate,
    /// Last day, inclusive (UTC).
    pub to: NaiveDate,
    /// One tenant's records only; `None` for every tenant's.
    pub tenant: Option<String>,
}

impl ReportRange {
    /// Checks the range a person asked for: an end before the start, or a range longer
    /// than [`MAX_REPORT_DAYS`], is refused with the reason.
    pub fn new(
        from: NaiveDate,
        to: NaiveDate,
        tenant: Option<String>,
    ) -> Result<ReportRange, StoreError> {
        if to < from {
            return Err(StoreError::Invalid(format!(
                "the range ends ({to}) before it starts ({from})"
            )));
        }
        let days = (to - from).num_days() + 1;
        if days > MAX_REPORT_DAYS {
            return Err(StoreError::Invalid(format!(
                "the range covers {days} days; a report covers at most {MAX_REPORT_DAYS}"
            )));
        }
        Ok(ReportRange { from, to, tenant })
    }

    fn first_day(&self) -> i64 {
        day_number(self.from)
    }

    /// The day after the last, exclusive.
    fn end_day(&self) -> i64 {
        day_number(self.to) + 1
    }
}

/// What the call totals are broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// The UTC day (`YYYY-MM-DD`).
    Day,
    /// The rate row's description ("United Kingdom mobile"); empty for refused attempts.
    RateGroup,
    /// The gateway that carried the call; empty when none was tried.
    Gateway,
    /// The debit-card return code (0 for calls that were authorized).
    ReturnCode,
}

impl Dimension {
    /// The key's expression over `call_records`, and over `report_calls`.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            Dimension::Day => ("CAST(created_at / 86400000 AS TEXT)", "CAST(day AS TEXT)"),
            Dimension::RateGroup => ("rate_description", "rate_group"),
            Dimension::Gateway => ("gateway", "gateway"),
            Dimension::ReturnCode => ("CAST(return_code AS TEXT)", "CAST(return_code AS TEXT)"),
        }
    }
}

/// Call totals for one key in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallTotals {
    /// The day (`YYYY-MM-DD`), week (`YYYY-Www`), month (`YYYY-MM`), group, gateway or code.
    pub key: String,
    pub currency: String,
    /// Every record: authorized calls and refused attempts.
    pub attempts: i64,
    /// Calls the far end answered.
    pub answered: i64,
    pub billed_seconds: i64,
    /// Answer to hang-up, over all answered calls.
    pub talk_ms: i64,
    /// What the calls were charged.
    pub revenue: Money,
}

impl CallTotals {
    /// Answer-seizure ratio, in per cent with one decimal (`None` with no attempts).
    pub fn asr_percent(&self) -> Option<rust_decimal::Decimal> {
        (self.attempts > 0).then(|| {
            let mut p = (rust_decimal::Decimal::from(self.answered * 100)
                / rust_decimal::Decimal::from(self.attempts))
            .round_dp(1);
            p.rescale(1);
            p
        })
    }

    /// Average call duration of the answered calls, in whole seconds.
    pub fn acd_seconds(&self) -> Option<i64> {
        (self.answered > 0).then(|| (self.talk_ms / self.answered + 500) / 1000)
    }

    /// Billed minutes, to two decimals.
    pub fn minutes(&self) -> rust_decimal::Decimal {
        let mut m = (rust_decimal::Decimal::from(self.billed_seconds)
            / rust_decimal::Decimal::from(60))
        .round_dp(2);
        m.rescale(2);
        m
    }

    fn add(&mut self, o: &CallTotals) {
        self.attempts += o.attempts;
        self.answered += o.answered;
        self.billed_seconds += o.billed_seconds;
        self.talk_ms += o.talk_ms;
        self.revenue = Money::from_micros(self.revenue.micros() + o.revenue.micros());
    }
}

/// Ledger totals for one day, currency and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyTotals {
    pub day: NaiveDate,
    pub currency: String,
    /// `issued` (a new card's value), `topup`, `refund`, `adjustment` or `call`.
    pub kind: String,
    pub entries: i64,
    /// The sum of the entries (calls are negative).
    pub amount: Money,
}

/// Reports are grouped by day, ISO week or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Period, String> {
        match s {
            "day" => Ok(Period::Day),
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            other => Err(format!("`{other}` is not day, week or month")),
        }
    }
}

impl Period {
    /// The label of the period a day falls in.
    pub fn label(self, d: NaiveDate) -> String {
        match self {
            Period::Day => d.format("%Y-%m-%d").to_string(),
            Period::Week => {
                let w = d.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Month => d.format("%Y-%m").to_string(),
        }
    }
}

/// Days since 1970-01-01.
pub fn day_number(d: NaiveDate) -> i64 {
    (d - NaiveDate::default()).num_days()
}

/// The date of a day number.
pub fn day_date(n: i64) -> NaiveDate {
    NaiveDate::default() + Duration::days(n)
}

/// Per-period totals over a range, every period present (zero when nothing happened), in
/// order; one row per period and currency. `days` are [`Dimension::Day`] totals (keyed
/// `YYYY-MM-DD`).
pub fn by_period(days: &[CallTotals], range: &ReportRange, period: Period) -> Vec<CallTotals> {
    let mut currencies: Vec<&str> = days.iter().map(|d| d.currency.as_str()).collect();
    currencies.sort_unstable();
    currencies.dedup();
    if currencies.is_empty() {
        currencies.push("");
    }
    let mut out: BTreeMap<(String, String), CallTotals> = BTreeMap::new();
    let mut d = range.from;
    while d <= range.to {
        for c in &currencies {
            let key = period.label(d);
            out.entry((key.clone(), c.to_string()))
                .or_insert_with(|| CallTotals {
                    key,
                    currency: c.to_string(),
                    ..CallTotals::default()
                });
        }
        d += Duration::days(1);
    }
    for t in days {
        let Ok(day) = t.key.parse::<NaiveDate>() else {
            continue;
        };
        if let Some(slot) = out.get_mut(&(period.label(day), t.currency.clone())) {
            slot.add(t);
        }
    }
    out.into_values().collect()
}

impl Store {
    /// The first day not rolled up yet: every day before it is in the summary tables.
    pub(super) async fn rolled_until(&self) -> Result<Option<i64>, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(day) FROM report_days")
            .fetch_one(&self.pool)
            .await?;
        Ok(last.map(|d| d + 1))
    }

    /// Rolls up closed days not rolled up yet, oldest first, at most `max_days` of them (a
    /// large backlog is worked off over several calls instead of holding the caller up).
    /// Safe on every node at once: a day is claimed in the transaction that fills it.
    /// Returns how many days this call rolled up.
    pub async fn roll_up(&self, now: DateTime<Utc>, max_days: u32) -> Result<u32, StoreError> {
        let closed_before = (ms(now) - ROLL_UP_MARGIN.num_milliseconds()).div_euclid(DAY_MS);
        let mut day = match self.rolled_until().await? {
            Some(d) => d,
            None => {
                // Nothing rolled up yet: start on the day of the oldest record or entry.
                let first: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(t) FROM (SELECT MIN(created_at) AS t FROM call_records \
                     UNION ALL SELECT MIN(created_at) AS t FROM ledger) x",
                )
                .fetch_one(&self.pool)
                .await?;
                match first {
                    Some(t) => t.div_euclid(DAY_MS),
                    None => return Ok(0),
                }
            }
        };
        let mut rolled = 0;
        while day < closed_before && rolled < max_days {
            if self.roll_up_day(day, now).await? {
                rolled += 1;
            }
            day += 1;
        }
        Ok(rolled)
    }

    /// Rolls up one day; false when another node already had.
    async fn roll_up_day(&self, day: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let (start, end) = (day * DAY_MS, (day + 1) * DAY_MS);
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO report_days (day, rolled_at, records, entries) \
             SELECT $1, $2, (SELECT COUNT(*) FROM call_records WHERE created_at >= $3 AND created_at < $4), \
             (SELECT COUNT(*) FROM ledger WHERE created_at >= $3 AND created_at < $4) \
             ON CONFLICT (day) DO NOTHING",
        )
        .bind(day)
        .bind(ms(now))
        .bind(start)
        .bind(end)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(&format!(
            "INSERT INTO report_calls (day, tenant, currency, rate_group, gateway, return_code, \
             attempts, answered, billed_seconds, talk_ms, revenue) \
             SELECT $1, tenant, currency, rate_description, gateway, return_code, {CALL_SUMS} \
             FROM call_records WHERE created_at >= $2 AND created_at < $3 \
             GROUP BY tenant, currency, rate_description, gateway, return_code"
        ))
        .bind(day)
        .bind(start)
        .bind(end)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO report_money (day, tenant, currency, kind, entries, amount) \
             SELECT $1, a.tenant, a.currency, {MONEY_KIND}, COUNT(*), CAST(SUM(l.amount) AS BIGINT) \
             FROM ledger l JOIN accounts a ON a.id = l.account_id \
             WHERE l.created_at >= $2 AND l.created_at < $3 GROUP BY a.tenant, a.currency, {MONEY_KIND}"
        ))
        .bind(day)
        .bind(start)
        .bind(end)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Call totals over a range, broken down by `by`, one row per key and currency, in key
    /// order. Rolled-up days come from the summary, the rest from the records.
    pub async fn call_totals(
        &self,
        range: &ReportRange,
        by: Dimension,
    ) -> Result<Vec<CallTotals>, StoreError> {
        let (live_key, rolled_key) = by.columns();
        let split = self
            .rolled_until()
            .await?
            .unwrap_or(i64::MIN)
            .clamp(range.first_day(), range.end_day());
        let tenant = range.tenant.as_deref();
        let mut sums: BTreeMap<(String, String), CallTotals> = BTreeMap::new();
        if split > range.first_day() {
            let rows = sqlx::query(&format!(
                "SELECT {rolled_key} AS k, currency, CAST(SUM(attempts) AS BIGINT), \
                 CAST(SUM(answered) AS BIGINT), CAST(SUM(billed_seconds) AS BIGINT), \
                 CAST(SUM(talk_ms) AS BIGINT), CAST(SUM(revenue) AS BIGINT) FROM report_calls \
                 WHERE day >= $1 AND day < $2 AND ($3 IS NULL OR tenant = $3) GROUP BY {rolled_key}, currency"
            ))
            .bind(range.first_day())
            .bind(split)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
            merge_calls(&mut sums, &rows)?;
        }
        if split < range.end_day() {
            let rows = sqlx::query(&format!(
                "SELECT {live_key} AS k, currency, {CALL_SUMS} FROM call_records \
                 WHERE created_at >= $1 AND created_at < $2 AND ($3 IS NULL OR tenant = $3) \
                 GROUP BY {live_key}, currency"
            ))
            .bind(split * DAY_MS)
            .bind(range.end_day() * DAY_MS)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
            merge_calls(&mut sums, &rows)?;
        }
        Ok(sums
            .into_values()
            .map(|mut t| {
                if by == Dimension::Day {
                    if let Ok(n) = t.key.parse::<i64>() {
                        t.key = day_date(n).format("%Y-%m-%d").to_string();
                    }
                }
                t
            })
            .collect())
    }

    /// Ledger totals over a range, per day, currency and kind, in that order.
    pub async fn money_totals(&self, range: &ReportRange) -> Result<Vec<MoneyTotals>, StoreError> {
        let split = self
            .rolled_until()
            .await?
            .unwrap_or(i64::MIN)
            .clamp(range.first_day(), range.end_day());
        let tenant = range.tenant.as_deref();
        let mut rows = Vec::new();
        if split > range.first_day() {
            rows.extend(
                sqlx::query(
                    "SELECT day, currency, kind, CAST(SUM(entries) AS BIGINT), CAST(SUM(amount) AS BIGINT) \
                     FROM report_money WHERE day >= $1 AND day < $2 AND ($3 IS NULL OR tenant = $3) \
                     GROUP BY day, currency, kind",
                )
                .bind(range.first_day())
                .bind(split)
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?,
            );
        }
        if split < range.end_day() {
            rows.extend(
                sqlx::query(&format!(
                    "SELECT l.created_at / 86400000 AS d, a.currency, {MONEY_KIND} AS k, COUNT(*), \
                     CAST(SUM(l.amount) AS BIGINT) FROM ledger l JOIN accounts a ON a.id = l.account_id \
                     WHERE l.created_at >= $1 AND l.created_at < $2 AND ($3 IS NULL OR a.tenant = $3) \
                     GROUP BY l.created_at / 86400000, a.currency, {MONEY_KIND}"
                ))
                .bind(split * DAY_MS)
                .bind(range.end_day() * DAY_MS)
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?,
            );
        }
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(MoneyTotals {
                    day: day_date(r.try_get(0)?),
                    currency: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    entries: r.try_get(3)?,
                    amount: Money::from_micros(r.try_get(4)?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        out.sort_by(|a, b| (a.day, &a.currency, &a.kind).cmp(&(b.day, &b.currency, &b.kind)));
        Ok(out)
    }

    /// Counts a rolled-up day again from its records and entries and says where the summary
    /// disagrees (nothing when it agrees, or when the day is not rolled up yet): what
    /// `ledger check` runs over the last days.
    pub async fn recount_day(&self, day: NaiveDate) -> Result<Vec<String>, StoreError> {
        let n = day_number(day);
        if self.rolled_until().await?.is_none_or(|until| n >= until) {
            return Ok(Vec::new());
        }
        let range = ReportRange::new(day, day, None)?;
        let mut problems = Vec::new();
        for by in [
            Dimension::RateGroup,
            Dimension::Gateway,
            Dimension::ReturnCode,
        ] {
            let (live_key, _) = by.columns();
            let rows = sqlx::query(&format!(
                "SELECT {live_key} AS k, currency, {CALL_SUMS} FROM call_records \
                 WHERE created_at >= $1 AND created_at < $2 GROUP BY {live_key}, currency"
            ))
            .bind(n * DAY_MS)
            .bind((n + 1) * DAY_MS)
            .fetch_all(&self.pool)
            .await?;
            let mut live = BTreeMap::new();
            merge_calls(&mut live, &rows)?;
            let live: Vec<CallTotals> = live.into_values().collect();
            let rolled = self.call_totals(&range, by).await?;
            if live != rolled {
                problems.push(format!(
                    "{day}: the report summary by {by:?} says {rolled:?}, the records say {live:?}"
                ));
            }
        }
        let counted: (i64, i64) = {
            let r = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM call_records WHERE created_at >= $1 AND created_at < $2), \
                 (SELECT COUNT(*) FROM ledger WHERE created_at >= $1 AND created_at < $2)",
            )
            .bind(n * DAY_MS)
            .bind((n + 1) * DAY_MS)
            .fetch_one(&self.pool)
            .await?;
            (r.try_get(0)?, r.try_get(1)?)
        };
        let kept: (i64, i64) = {
            let r = sqlx::query("SELECT records, entries FROM report_days WHERE day = $1")
                .bind(n)
                .fetch_one(&self.pool)
                .await?;
            (r.try_get(0)?, r.try_get(1)?)
        };
        if counted != kept {
            problems.push(format!(
                "{day}: rolled up with {} call records and {} ledger entries, now there are {} and {}",
                kept.0, kept.1, counted.0, counted.1
            ));
        }
        Ok(problems)
    }
}

/// The sums a call summary row holds, over `call_records`.
const CALL_SUMS: &str = "COUNT(*), \
    CAST(SUM(CASE WHEN connect_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT), \
    CAST(SUM(billed_seconds) AS BIGINT), \
    CAST(SUM(CASE WHEN connect_at IS NOT NULL AND disconnect_at > connect_at \
        THEN disconnect_at - connect_at ELSE 0 END) AS BIGINT), \
    CAST(SUM(cost) AS BIGINT)";

/// What a ledger entry counts as: a card's first money is what it was sold for.
const MONEY_KIND: &str =
    "CASE WHEN l.idempotency_key LIKE 'create:%' THEN 'issued' ELSE l.kind END";

fn merge_calls(
    sums: &mut BTreeMap<(String, String), CallTotals>,
    rows: &[sqlx::any::AnyRow],
) -> Result<(), sqlx::Error> {
    for r in rows {
        let t = CallTotals {
            key: r.try_get(0)?,
            currency: r.try_get(1)?,
            attempts: r.try_get(2)?,
            answered: r.try_get(3)?,
            billed_seconds: r.try_get(4)?,
            talk_ms: r.try_get(5)?,
            revenue: Money::from_micros(r.try_get(6)?),
        };
        sums.entry((t.key.clone(), t.currency.clone()))
            .or_insert_with(|| CallTotals {
                key: t.key.clone(),
                currency: t.currency.clone(),
                ..CallTotals::default()
            })
            .add(&t);
    }
    Ok(())
}

impl Store {
    /// Calls in progress now per node (each node's reservations, answered or still ringing),
    /// of one tenant's cards or of all: the live picture every node shares through the
    /// database, where each node's own metrics know only itself.
    pub async fn calls_in_progress_by_node(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.owner, COUNT(*) AS calls FROM reservations r \
             JOIN accounts a ON a.id = r.account_id \
             WHERE ($1 = '' OR a.tenant = $1) GROUP BY r.owner ORDER BY r.owner",
        )
        .bind(tenant.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("owner")?, r.try_get("calls")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_must_run_forwards_and_not_too_far() {
        assert!(ReportRange::new(d("2026-12-02"), d("2026-12-01"), None).is_err());
        assert!(ReportRange::new(d("2025-01-01"), d("2026-12-01"), None).is_err());
        assert!(ReportRange::new(d("2026-12-01"), d("2026-12-01"), None).is_ok());
    }

    #[test]
    fn periods_are_labelled_and_every_one_is_present() {
        let r = ReportRange::new(d("2026-11-29"), d("2026-12-02"), None).unwrap();
        let day = |k: &str, n: i64| CallTotals {
            key: k.to_string(),
            currency: "USD".into(),
            attempts: n,
            ..CallTotals::default()
        };
        let days = [day("2026-11-30", 2), day("2026-12-02", 3)];
        let by_day = by_period(&days, &r, Period::Day);
        let keys: Vec<_> = by_day
            .iter()
            .map(|t| (t.key.as_str(), t.attempts))
            .collect();
        assert_eq!(
            keys,
            [
                ("2026-11-29", 0),
                ("2026-11-30", 2),
                ("2026-12-01", 0),
                ("2026-12-02", 3)
            ]
        );
        let by_month = by_period(&days, &r, Period::Month);
        let keys: Vec<_> = by_month
            .iter()
            .map(|t| (t.key.as_str(), t.attempts))
            .collect();
        assert_eq!(keys, [("2026-11", 2), ("2026-12", 3)]);
        // 2026-11-29 is a Sunday: the end of ISO week 48.
        let by_week = by_period(&days, &r, Period::Week);
        let keys: Vec<_> = by_week
            .iter()
            .map(|t| (t.key.as_str(), t.attempts))
            .collect();
        assert_eq!(keys, [("2026-W48", 0), ("2026-W49", 5)]);
    }

    #[test]
    fn asr_and_acd() {
        let t = CallTotals {
            attempts: 3,
            answered: 2,
            talk_ms: 61_000 + 30_000,
            billed_seconds: 90,
            ..CallTotals::default()
        };
        assert_eq!(t.asr_percent().unwrap().to_string(), "66.7");
        assert_eq!(t.acd_seconds(), Some(46));
        assert_eq!(t.minutes().to_string(), "1.50");
        assert_eq!(CallTotals::default().asr_percent(), None);
    }
}
