//! The reports finance staff and ITSPs read (`/api/v1/reports/…` and the console's report
//! page): one table per question — how much did we sell and carry per day, week or month;
//! which destinations and gateways make the money and answer the calls; why attempts were
//! refused — built once here and written as JSON, CSV or HTML, so the three cannot disagree.
//! Scoped like everything else: an ITSP's token sees its own tenant's numbers only.

use super::{ApiError, Caller, Shared};
use chrono::{Duration, NaiveDate, Utc};
use rating::store::{by_period, CallTotals, Dimension, Period, ReportRange};
use rating::{Money, ReturnCode};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Per day, week or month: calls, ASR, ACD, minutes, revenue, and the money that came in.
    Summary,
    /// Per destination group (the rate row's description).
    Destinations,
    /// Per gateway.
    Gateways,
    /// Refused attempts per debit-card return code.
    Refusals,
}

impl Kind {
    pub(super) const ALL: [Kind; 4] = [
        Kind::Summary,
        Kind::Destinations,
        Kind::Gateways,
        Kind::Refusals,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Summary => "summary",
            Kind::Destinations => "destinations",
            Kind::Gateways => "gateways",
            Kind::Refusals => "refusals",
        }
    }

    pub(super) fn title(self) -> &'static str {
        match self {
            Kind::Summary => "Sales and traffic",
            Kind::Destinations => "Destinations",
            Kind::Gateways => "Gateways",
            Kind::Refusals => "Refused attempts",
        }
    }

    pub(super) fn parse(s: &str) -> Result<Kind, ApiError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    format!(
                        "no report `{s}`: there are summary, destinations, gateways and refusals"
                    ),
                )
            })
    }
}

/// What a report was asked for, as text from a query string or a form (an empty field is
/// "not given").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ask {
    #[serde(default)]
    pub(super) from: String,
    #[serde(default)]
    pub(super) to: String,
    #[serde(default)]
    pub(super) by: String,
    #[serde(default)]
    pub(super) tenant: String,
    #[serde(default)]
    pub(super) format: String,
}

/// One cell: counts are numbers, money and ratios exact decimal text.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Text(String),
    Int(i64),
    /// An amount; negative ones are marked where shown.
    Money(Money),
    /// A ratio or a number of minutes, as exact decimal text.
    Decimal(String),
    /// Nothing to say (an ASR with no attempts).
    Empty,
}

impl Cell {
    pub(super) fn text(&self) -> String {
        match self {
            Cell::Text(t) | Cell::Decimal(t) => t.clone(),
            Cell::Int(n) => n.to_string(),
            Cell::Money(m) => m.to_string(),
            Cell::Empty => String::new(),
        }
    }

    pub(super) fn is_number(&self) -> bool {
        !matches!(self, Cell::Text(_))
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Cell::Int(n) => (*n).into(),
            Cell::Empty => serde_json::Value::Null,
            c => c.text().into(),
        }
    }

    /// The value a chart draws, in whole units of the column (money in micro-units).
    pub(super) fn magnitude(&self) -> i64 {
        match self {
            Cell::Int(n) => *n,
            Cell::Money(m) => m.micros(),
            Cell::Decimal(d) => d
                .parse::<rust_decimal::Decimal>()
                .ok()
                .and_then(|d| i64::try_from((d * rust_decimal::Decimal::from(100)).trunc()).ok())
                .unwrap_or(0),
            _ => 0,
        }
    }
}

/// A report: its range and the table.
#[derive(Debug)]
pub(super) struct Report {
    pub(super) kind: Kind,
    pub(super) range: ReportRange,
    pub(super) period: Period,
    /// Column keys (JSON and CSV) and their headings (HTML).
    pub(super) columns: Vec<(&'static str, &'static str)>,
    pub(super) rows: Vec<Vec<Cell>>,
}

impl Report {
    /// The index of a column.
    pub(super) fn column(&self, key: &str) -> Option<usize> {
        self.columns.iter().position(|(k, _)| *k == key)
    }

    pub(super) fn json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::Value::Object(
                    self.columns
                        .iter()
                        .zip(r)
                        .map(|((k, _), c)| (k.to_string(), c.json()))
                        .collect(),
                )
            })
            .collect();
        serde_json::json!({
            "report": self.kind.name(),
            "from": self.range.from.to_string(),
            "to": self.range.to.to_string(),
            "time_zone": "UTC",
            "tenant": self.range.tenant,
            "by": period_name(self.period),
            "rows": rows,
        })
    }

    pub(super) fn csv(&self) -> Result<Vec<u8>, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(self.columns.iter().map(|(k, _)| *k))?;
        for r in &self.rows {
            // Group and gateway names come from rate decks and configuration, but a text
            // cell a spreadsheet would run as a formula is neutralised all the same (numbers,
            // negative amounts too, stay numbers).
            w.write_record(r.iter().map(|c| match c {
                Cell::Text(t) => rating::export::cell(t).into_owned(),
                c => c.text(),
            }))?;
        }
        w.into_inner().map_err(|e| e.into_error().into())
    }
}

fn period_name(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

/// How many days a report covers when no start is given.
const DEFAULT_DAYS: i64 = 30;

fn date(field: &str, text: &str) -> Result<Option<NaiveDate>, ApiError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| ApiError::bad(format!("{field}: `{t}` is not a date (YYYY-MM-DD)")))
}

/// The range, period and tenant asked for, with the defaults (the last 30 days to today,
/// by day) and the caller's tenant imposed.
pub(super) fn range_of(who: &Caller, ask: &Ask) -> Result<(ReportRange, Period), ApiError> {
    let today = Utc::now().date_naive();
    let to = date("to", &ask.to)?.unwrap_or(today);
    let from = date("from", &ask.from)?.unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
    let period = match ask.by.trim() {
        "" => Period::Day,
        p => p
            .parse()
            .map_err(|e: String| ApiError::bad(format!("by: {e}")))?,
    };
    let asked = Some(ask.tenant.trim().to_string()).filter(|t| !t.is_empty());
    let tenant = match (who.tenant(), asked) {
        (Some(own), Some(t)) if t != own => {
            return Err(ApiError::forbidden(format!(
                "an itsp:{own} token reads tenant {own}'s reports only"
            )))
        }
        (Some(own), _) => Some(own.to_string()),
        (None, t) => t,
    };
    let range = ReportRange::new(from, to, tenant).map_err(|e| ApiError::bad(e.to_string()))?;
    Ok((range, period))
}

/// Builds a report for `who`.
pub(super) async fn build(
    s: &Shared,
    who: &Caller,
    kind: Kind,
    ask: &Ask,
) -> Result<Report, ApiError> {
    let (range, period) = range_of(who, ask)?;
    let store = &s.store;
    let (columns, rows) = match kind {
        Kind::Summary => {
            let days = store.call_totals(&range, Dimension::Day).await?;
            let money = store.money_totals(&range).await?;
            summary(&range, period, &days, &money)
        }
        Kind::Destinations => {
            let t = store.call_totals(&range, Dimension::RateGroup).await?;
            traffic("group", "Destination group", t, |k| {
                if k.is_empty() {
                    "(not rated: refused)".into()
                } else {
                    k.to_string()
                }
            })
        }
        Kind::Gateways => {
            let t = store.call_totals(&range, Dimension::Gateway).await?;
            traffic("gateway", "Gateway", t, |k| {
                if k.is_empty() {
                    "(none: refused before dialling)".into()
                } else {
                    k.to_string()
                }
            })
        }
        Kind::Refusals => {
            let t = store.call_totals(&range, Dimension::ReturnCode).await?;
            refusals(t)
        }
    };
    Ok(Report {
        kind,
        range,
        period,
        columns,
        rows,
    })
}

type Table = (Vec<(&'static str, &'static str)>, Vec<Vec<Cell>>);

fn ratios(t: &CallTotals) -> [Cell; 3] {
    [
        t.asr_percent()
            .map_or(Cell::Empty, |a| Cell::Decimal(a.to_string())),
        t.acd_seconds().map_or(Cell::Empty, Cell::Int),
        Cell::Decimal(t.minutes().to_string()),
    ]
}

fn summary(
    range: &ReportRange,
    period: Period,
    days: &[CallTotals],
    money: &[rating::store::MoneyTotals],
) -> Table {
    let columns = vec![
        ("period", "Period"),
        ("currency", "Currency"),
        ("attempts", "Attempts"),
        ("answered", "Answered"),
        ("asr_percent", "ASR %"),
        ("acd_seconds", "ACD (s)"),
        ("minutes", "Billed minutes"),
        ("revenue", "Call revenue"),
        ("issued", "New cards"),
        ("topups", "Top-ups"),
        ("refunds", "Refunds"),
        ("adjustments", "Adjustments"),
    ];
    // Money by (period, currency, kind); the calls' rows already span every period.
    let mut kinds: BTreeMap<(String, String, &str), i64> = BTreeMap::new();
    for m in money {
        *kinds
            .entry((period.label(m.day), m.currency.clone(), m.kind.as_str()))
            .or_default() += m.amount.micros();
    }
    let mut per = by_period(days, range, period);
    // A currency that only moved money (cards sold, nothing called yet) still gets its rows.
    let mut currencies: Vec<String> = money.iter().map(|m| m.currency.clone()).collect();
    currencies.sort();
    currencies.dedup();
    for c in currencies {
        if !per.iter().any(|t| t.currency == c) {
            let empty: Vec<CallTotals> = Vec::new();
            let mut more = by_period(&empty, range, period);
            for t in &mut more {
                t.currency = c.clone();
            }
            per.extend(more);
        }
    }
    per.retain(|t| !t.currency.is_empty() || t.attempts > 0);
    per.sort_by(|a, b| (&a.key, &a.currency).cmp(&(&b.key, &b.currency)));
    let rows = per
        .iter()
        .map(|t| {
            let sum = |kind: &str| {
                Cell::Money(Money::from_micros(
                    kinds
                        .get(&(t.key.clone(), t.currency.clone(), kind))
                        .copied()
                        .unwrap_or(0),
                ))
            };
            let [asr, acd, minutes] = ratios(t);
            vec![
                Cell::Text(t.key.clone()),
                Cell::Text(t.currency.clone()),
                Cell::Int(t.attempts),
                Cell::Int(t.answered),
                asr,
                acd,
                minutes,
                Cell::Money(t.revenue),
                sum("issued"),
                sum("topup"),
                sum("refund"),
                sum("adjustment"),
            ]
        })
        .collect();
    (columns, rows)
}

fn traffic(
    key: &'static str,
    heading: &'static str,
    totals: Vec<CallTotals>,
    name: impl Fn(&str) -> String,
) -> Table {
    let columns = vec![
        (key, heading),
        ("currency", "Currency"),
        ("attempts", "Attempts"),
        ("answered", "Answered"),
        ("asr_percent", "ASR %"),
        ("acd_seconds", "ACD (s)"),
        ("minutes", "Billed minutes"),
        ("revenue", "Call revenue"),
    ];
    let mut totals = totals;
    // The biggest earners first, as a clerk reads them.
    totals.sort_by(|a, b| {
        b.revenue
            .micros()
            .cmp(&a.revenue.micros())
            .then(b.attempts.cmp(&a.attempts))
            .then(a.key.cmp(&b.key))
    });
    let rows = totals
        .iter()
        .map(|t| {
            let [asr, acd, minutes] = ratios(t);
            vec![
                Cell::Text(name(&t.key)),
                Cell::Text(t.currency.clone()),
                Cell::Int(t.attempts),
                Cell::Int(t.answered),
                asr,
                acd,
                minutes,
                Cell::Money(t.revenue),
            ]
        })
        .collect();
    (columns, rows)
}

fn refusals(totals: Vec<CallTotals>) -> Table {
    let columns = vec![
        ("code", "Code"),
        ("meaning", "Meaning"),
        ("attempts", "Attempts"),
    ];
    let mut by_code: BTreeMap<u8, i64> = BTreeMap::new();
    for t in &totals {
        if let Ok(code) = t.key.parse::<u8>() {
            if code != 0 {
                *by_code.entry(code).or_default() += t.attempts;
            }
        }
    }
    let mut rows: Vec<(u8, i64)> = by_code.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rows = rows
        .into_iter()
        .map(|(code, n)| {
            vec![
                Cell::Int(i64::from(code)),
                Cell::Text(
                    ReturnCode::from_code(code)
                        .map_or("unknown code", |c| c.meaning())
                        .to_string(),
                ),
                Cell::Int(n),
            ]
        })
        .collect();
    (columns, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn who(role: Role) -> Caller {
        Caller {
            name: "t".into(),
            role,
        }
    }

    fn ask(from: &str, to: &str) -> Ask {
        Ask {
            from: from.into(),
            to: to.into(),
            ..Ask::default()
        }
    }

    #[test]
    fn bad_ranges_are_refused_with_the_reason() {
        let admin = who(Role::Admin);
        let e = range_of(&admin, &ask("2026-13-01", "")).unwrap_err();
        assert!(e.1.contains("from: `2026-13-01` is not a date"), "{}", e.1);
        let e = range_of(&admin, &ask("2026-12-02", "2026-12-01")).unwrap_err();
        assert!(
            e.1.contains("ends (2026-12-01) before it starts"),
            "{}",
            e.1
        );
        let e = range_of(&admin, &ask("2020-01-01", "2026-12-01")).unwrap_err();
        assert!(e.1.contains("at most 400"), "{}", e.1);
        let mut a = ask("", "");
        a.by = "year".into();
        assert!(range_of(&admin, &a).unwrap_err().1.contains("by: `year`"));
    }

    #[test]
    fn the_default_is_the_last_thirty_days_and_an_itsp_sees_its_own_tenant() {
        let (r, p) = range_of(&who(Role::Admin), &Ask::default()).unwrap();
        assert_eq!((r.to - r.from).num_days(), 29);
        assert_eq!((p, r.tenant), (Period::Day, None));
        let itsp = who(Role::Itsp("acme".into()));
        let (r, _) = range_of(&itsp, &Ask::default()).unwrap();
        assert_eq!(r.tenant.as_deref(), Some("acme"));
        let other = Ask {
            tenant: "zeta".into(),
            ..Ask::default()
        };
        assert_eq!(range_of(&itsp, &other).unwrap_err().0, 403);
    }

    #[test]
    fn refusals_leave_out_the_calls_that_went_through() {
        let t = |key: &str, n| CallTotals {
            key: key.into(),
            attempts: n,
            ..CallTotals::default()
        };
        let (_, rows) = refusals(vec![t("0", 50), t("2", 3), t("12", 7)]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0], Cell::Int(12), "most frequent first");
        assert_eq!(rows[1][2], Cell::Int(3));
    }
}
