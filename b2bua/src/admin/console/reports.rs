//! The console's report pages: the same reports as `/api/v1/reports/…` (built by
//! `admin::reports`), with a range form, a chart where a picture says it faster, the table
//! below it and a CSV download of exactly that table.

use super::{enc, error_page, esc, html, money_cell, page, Clerk, Flash};
use crate::admin::chart::{bars, Bar};
use crate::admin::reports::{build, Ask, Cell, Kind, Report};
use crate::admin::Shared;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rating::Money;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The report form as the browser sends it; every field optional.
#[derive(Deserialize, Default)]
pub(super) struct ReportForm {
    #[serde(default)]
    report: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    tenant: String,
}

impl ReportForm {
    fn ask(&self) -> Ask {
        Ask {
            from: self.from.clone(),
            to: self.to.clone(),
            by: self.by.clone(),
            tenant: self.tenant.clone(),
            format: String::new(),
        }
    }

    /// The query string that asks for the same range.
    fn query(&self) -> String {
        [
            ("from", &self.from),
            ("to", &self.to),
            ("by", &self.by),
            ("tenant", &self.tenant),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }
}

pub(super) async fn report_page(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Query(f): Query<ReportForm>,
) -> Response {
    let kind = match Kind::parse(if f.report.is_empty() {
        "summary"
    } else {
        &f.report
    }) {
        Ok(k) => k,
        Err(e) => {
            return error_page("Reports", &who, e);
        }
    };
    let built = build(&s, &who, kind, &f.ask()).await;
    let mut h = String::new();
    tabs(&mut h, kind, &f);
    form(&mut h, kind, &f, who.tenant().is_none());
    let (status, flash) = match built {
        Ok(r) => {
            let q = f.query();
            let _ = write!(
                h,
                "<p>{} to {} (UTC days){}. <a id=\"csv\" href=\"/console/reports/{}.csv{}{q}\">Download this table (CSV)</a></p>",
                r.range.from,
                r.range.to,
                r.range
                    .tenant
                    .as_deref()
                    .map(|t| format!(", tenant {}", esc(t)))
                    .unwrap_or_else(|| ", every tenant".into()),
                kind.name(),
                if q.is_empty() { "" } else { "?" }
            );
            charts(&mut h, &r);
            table(&mut h, &r);
            if kind == Kind::Summary {
                nodes_now(&mut h, &s, r.range.tenant.as_deref()).await;
            }
            (StatusCode::OK, Flash::default())
        }
        Err(e) => (
            e.0,
            Flash {
                error: Some(e.1),
                msg: None,
            },
        ),
    };
    html(status, page(kind.title(), Some(&who), &flash, &h))
}

/// `/console/reports/<report>.csv`: the table of the page with the same query.
pub(super) async fn report_csv(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Path(file): Path<String>,
    Query(f): Query<ReportForm>,
) -> Response {
    let Some(name) = file.strip_suffix(".csv") else {
        return (StatusCode::NOT_FOUND, "no such report file").into_response();
    };
    let r = match Kind::parse(name) {
        Ok(kind) => build(&s, &who, kind, &f.ask()).await,
        Err(e) => Err(e),
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            return error_page("Reports", &who, e);
        }
    };
    match r.csv() {
        Ok(csv) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{name}-{}-{}.csv\"",
                        r.range.from, r.range.to
                    ),
                ),
            ],
            csv,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Calls in progress per node right now, with its table.
async fn nodes_now(h: &mut String, s: &Shared, tenant: Option<&str>) {
    h.push_str("<h2>Now</h2>");
    match s.store.calls_in_progress_by_node(tenant).await {
        Ok(nodes) => {
            let b: Vec<Bar> = nodes
                .iter()
                .map(|(node, n)| Bar {
                    label: node.clone(),
                    value: *n,
                    shown: n.to_string(),
                })
                .collect();
            h.push_str(&bars(
                "chart-nodes",
                "Calls in progress per node",
                "calls",
                &b,
            ));
            h.push_str(
                "<table id=\"nodes\"><thead><tr><th scope=\"col\">Node</th>\
                 <th scope=\"col\" class=\"n\">Calls in progress</th></tr></thead><tbody>",
            );
            if nodes.is_empty() {
                h.push_str("<tr><td colspan=\"2\">No calls in progress.</td></tr>");
            }
            for (node, n) in &nodes {
                let _ = write!(h, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(node));
            }
            h.push_str("</tbody></table>");
        }
        Err(e) => {
            let _ = write!(h, "<p class=\"err\">{}</p>", esc(&e.to_string()));
        }
    }
}

fn tabs(h: &mut String, current: Kind, f: &ReportForm) {
    h.push_str("<nav aria-label=\"Reports\"><ul class=\"tabs\">");
    let q = f.query();
    for k in Kind::ALL {
        let _ = write!(
            h,
            "<li><a href=\"/console/reports?report={}{}{q}\"{}>{}</a></li>",
            k.name(),
            if q.is_empty() { "" } else { "&" },
            if k == current {
                " aria-current=\"page\""
            } else {
                ""
            },
            k.title()
        );
    }
    h.push_str("</ul></nav>");
}

fn form(h: &mut String, kind: Kind, f: &ReportForm, staff: bool) {
    let _ = write!(
        h,
        "<form method=\"get\" action=\"/console/reports\" class=\"inline\">\
         <input type=\"hidden\" name=\"report\" value=\"{}\">\
         <p><label for=\"from\">From (UTC day)</label> <input id=\"from\" name=\"from\" type=\"date\" value=\"{}\"></p>\
         <p><label for=\"to\">To (UTC day)</label> <input id=\"to\" name=\"to\" type=\"date\" value=\"{}\"></p>",
        kind.name(),
        esc(f.from.trim()),
        esc(f.to.trim())
    );
    if kind == Kind::Summary {
        h.push_str("<p><label for=\"by\">Per</label> <select id=\"by\" name=\"by\">");
        for p in ["day", "week", "month"] {
            let _ = write!(
                h,
                "<option{}>{p}</option>",
                if f.by.trim() == p { " selected" } else { "" }
            );
        }
        h.push_str("</select></p>");
    }
    if staff {
        let _ = write!(
            h,
            "<p><label for=\"tenant\">Tenant (empty: all)</label> \
             <input id=\"tenant\" name=\"tenant\" value=\"{}\" maxlength=\"64\"></p>",
            esc(f.tenant.trim())
        );
    }
    h.push_str("<p><button type=\"submit\" id=\"show\">Show</button></p></form>");
    h.push_str(
        "<p class=\"note\">Without dates: the last 30 days to today. Calls count on the day \
         they were settled; days are UTC.</p>",
    );
}

/// The currencies a report's rows are in.
fn currencies(r: &Report) -> Vec<String> {
    let Some(c) = r.column("currency") else {
        return Vec::new();
    };
    let mut v: Vec<String> = r.rows.iter().map(|row| row[c].text()).collect();
    v.sort();
    v.dedup();
    v.retain(|c| !c.is_empty());
    v
}

fn money_bars(r: &Report, label: usize, value: usize, currency: &str, limit: usize) -> Vec<Bar> {
    let c = r.column("currency").unwrap_or(0);
    r.rows
        .iter()
        .filter(|row| row[c].text() == currency)
        .take(limit)
        .map(|row| Bar {
            label: row[label].text(),
            value: row[value].magnitude(),
            shown: row[value].text(),
        })
        .collect()
}

/// Sums of the whole-number columns per label, over every currency.
fn counts_by_label(r: &Report, label: usize, cols: &[&str]) -> Vec<(String, Vec<i64>)> {
    let idx: Vec<Option<usize>> = cols.iter().map(|c| r.column(c)).collect();
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    for row in &r.rows {
        let key = row[label].text();
        let pos = match out.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                out.push((key, vec![0; cols.len()]));
                out.len() - 1
            }
        };
        for (slot, i) in out[pos].1.iter_mut().zip(&idx) {
            if let Some(i) = i {
                *slot += row[*i].magnitude();
            }
        }
    }
    out
}

fn charts(h: &mut String, r: &Report) {
    let per = match r.period {
        rating::store::Period::Day => "day",
        rating::store::Period::Week => "week",
        rating::store::Period::Month => "month",
    };
    let col = |k: &str| r.column(k).unwrap_or(0);
    match r.kind {
        Kind::Summary => {
            for (i, c) in currencies(r).iter().enumerate() {
                let b = money_bars(r, 0, col("revenue"), c, usize::MAX);
                h.push_str(&bars(
                    &format!("chart-revenue-{i}"),
                    &format!("Call revenue per {per} ({c})"),
                    "revenue",
                    &b,
                ));
            }
            // Minutes are minutes in any currency. (`magnitude` is in hundredths.)
            let minutes: Vec<Bar> = counts_by_label(r, 0, &["minutes"])
                .into_iter()
                .map(|(label, v)| Bar {
                    label,
                    value: v[0],
                    shown: format!("{}.{:02}", v[0] / 100, v[0] % 100),
                })
                .collect();
            h.push_str(&bars(
                "chart-minutes",
                &format!("Billed minutes per {per}"),
                "minutes",
                &minutes,
            ));
        }
        Kind::Destinations => {
            for (i, c) in currencies(r).iter().enumerate() {
                let b = money_bars(r, 0, col("revenue"), c, 20);
                h.push_str(&bars(
                    &format!("chart-groups-{i}"),
                    &format!("Call revenue by destination group, top 20 ({c})"),
                    "revenue",
                    &b,
                ));
            }
        }
        Kind::Gateways => {
            let g = counts_by_label(r, 0, &["attempts", "answered"]);
            let asr: Vec<Bar> = g
                .iter()
                .map(|(label, v)| {
                    let tenths = if v[0] > 0 {
                        (v[1] * 1000 + v[0] / 2) / v[0]
                    } else {
                        0
                    };
                    Bar {
                        label: label.clone(),
                        value: tenths,
                        shown: format!("{}.{} %", tenths / 10, tenths % 10),
                    }
                })
                .collect();
            h.push_str(&bars(
                "chart-asr",
                "Answer-seizure ratio by gateway",
                "asr",
                &asr,
            ));
            // ACD over every currency's rows, weighted by the calls answered.
            let mut acd: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            for row in &r.rows {
                let answered = row[col("answered")].magnitude();
                let e = acd.entry(row[0].text()).or_default();
                e.0 += row[col("acd_seconds")].magnitude() * answered;
                e.1 += answered;
            }
            let acd: Vec<Bar> = g
                .iter()
                .map(|(label, _)| {
                    let (talk, n) = acd.get(label).copied().unwrap_or_default();
                    let secs = if n > 0 { talk / n } else { 0 };
                    Bar {
                        label: label.clone(),
                        value: secs,
                        shown: format!("{secs} s"),
                    }
                })
                .collect();
            h.push_str(&bars(
                "chart-acd",
                "Average call duration by gateway",
                "acd",
                &acd,
            ));
        }
        Kind::Refusals => {
            let b: Vec<Bar> = r
                .rows
                .iter()
                .map(|row| Bar {
                    label: format!("{} {}", row[0].text(), row[1].text()),
                    value: row[2].magnitude(),
                    shown: row[2].text(),
                })
                .collect();
            h.push_str(&bars(
                "chart-refusals",
                "Refused attempts by return code",
                "refusals",
                &b,
            ));
        }
    }
}

fn table(h: &mut String, r: &Report) {
    h.push_str("<div class=\"scroll\"><table id=\"report\"><thead><tr>");
    for (i, (key, heading)) in r.columns.iter().enumerate() {
        let numeric = r.rows.first().is_some_and(|row| row[i].is_number());
        let _ = write!(
            h,
            "<th scope=\"col\" data-key=\"{key}\"{}>{}</th>",
            if numeric { " class=\"n\"" } else { "" },
            esc(heading)
        );
    }
    h.push_str("</tr></thead><tbody>");
    if r.rows.is_empty() {
        let _ = write!(
            h,
            "<tr><td colspan=\"{}\">Nothing in this range.</td></tr>",
            r.columns.len()
        );
    }
    for row in &r.rows {
        h.push_str("<tr>");
        for c in row {
            cell(h, c, "");
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody>");
    // A total row when every row is in one currency (sums across currencies mean nothing).
    if !r.rows.is_empty() && currencies(r).len() <= 1 {
        h.push_str("<tfoot><tr>");
        for (i, (key, _)) in r.columns.iter().enumerate() {
            let id = format!("total-{key}");
            let total = match &r.rows[0][i] {
                Cell::Int(_) if !matches!(*key, "code" | "acd_seconds") => {
                    Cell::Int(r.rows.iter().map(|row| row[i].magnitude()).sum())
                }
                Cell::Money(_) => Cell::Money(Money::from_micros(
                    r.rows.iter().map(|row| row[i].magnitude()).sum(),
                )),
                _ if *key == "minutes" => {
                    let hundredths: i64 = r.rows.iter().map(|row| row[i].magnitude()).sum();
                    Cell::Decimal(format!("{}.{:02}", hundredths / 100, hundredths % 100))
                }
                _ if i == 0 => Cell::Text("Total".into()),
                _ if *key == "currency" => r.rows[0][i].clone(),
                _ => Cell::Empty,
            };
            cell(h, &total, &id);
        }
        h.push_str("</tr></tfoot>");
    }
    h.push_str("</table></div>");
}

fn cell(h: &mut String, c: &Cell, id: &str) {
    let id_attr = if id.is_empty() {
        String::new()
    } else {
        format!(" id=\"{id}\"")
    };
    match c {
        Cell::Money(m) => h.push_str(&money_cell(m, id)),
        Cell::Text(t) => {
            let _ = write!(h, "<td{id_attr}>{}</td>", esc(t));
        }
        c => {
            let _ = write!(h, "<td class=\"n\"{id_attr}>{}</td>", esc(&c.text()));
        }
    }
}
