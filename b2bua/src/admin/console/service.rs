//! "Our service", the ITSP's own page: its access numbers and the flows they run, its prompt
//! set with the report of the upload in use, and a plain HTML upload form that answers with
//! that upload's report (what fell back to the default set, which files were unknown or
//! refused). An `itsp:` token sees its own tenant only; staff choose one with `?tenant=`.
//! The same functions as the API's access-number and prompt-set routes.

use super::{esc, html, page, Clerk, Flash};
use crate::admin::api::{access_list, prompt_report, upload_prompts};
use crate::admin::{ApiError, Caller, Shared};
use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write;

/// `?tenant=` for staff; an ITSP's own tenant otherwise.
#[derive(Deserialize, Default)]
pub(super) struct Which {
    #[serde(default)]
    tenant: String,
}

fn tenant_of(who: &Caller, asked: &str) -> Result<String, ApiError> {
    let asked = asked.trim();
    match who.tenant() {
        Some(own) if !asked.is_empty() && asked != own => Err(ApiError::forbidden(format!(
            "an itsp:{own} token sees tenant {own}'s service only"
        ))),
        Some(own) => Ok(own.to_string()),
        None if asked.is_empty() => Ok("default".into()),
        None => Ok(asked.to_string()),
    }
}

pub(super) async fn service_page(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Query(q): Query<Which>,
) -> Response {
    render(&s, &who, &q.tenant, None).await
}

/// The page, with the report of an upload just made (`Ok`) or refused (`Err`) if any.
async fn render(
    s: &Shared,
    who: &Caller,
    asked: &str,
    upload: Option<Result<Value, ApiError>>,
) -> Response {
    let tenant = match tenant_of(who, asked) {
        Ok(t) => t,
        Err(e) => return super::error_page("Our service", who, e),
    };
    let mut h = String::new();
    let mut flash = Flash::default();
    let mut status = StatusCode::OK;
    if who.tenant().is_none() {
        let _ = write!(
            h,
            "<form method=\"get\" action=\"/console/service\" class=\"inline\">\
             <p><label for=\"tenant\">Tenant</label> <input id=\"tenant\" name=\"tenant\" value=\"{}\" maxlength=\"64\"> \
             <button type=\"submit\">Show</button></p></form>",
            esc(&tenant)
        );
    }
    let _ = write!(
        h,
        "<p>Tenant <strong id=\"service-tenant\">{}</strong>.</p>",
        esc(&tenant)
    );
    match &upload {
        Some(Ok(report)) => {
            flash.msg = Some(format!(
                "The new prompt set is live: {} files.",
                report["files"].as_u64().unwrap_or(0)
            ));
            h.push_str("<h2>The upload</h2>");
            report_html(&mut h, report, "upload-report");
        }
        Some(Err(e)) => {
            status = e.0;
            flash.error = Some(e.1.clone());
            if let Some(report) = e.2.as_ref().and_then(|m| m.get("report")) {
                h.push_str("<h2>Why the upload was refused</h2>");
                report_html(&mut h, report, "upload-report");
            }
        }
        None => {}
    }

    h.push_str("<h2>Access numbers</h2>");
    let live = s.assets.live();
    match access_list(s, who, Some(&tenant)).await {
        Ok(rows) if rows.is_empty() => h.push_str("<p id=\"numbers\">No access numbers yet.</p>"),
        Ok(rows) => {
            h.push_str(
                "<div class=\"scroll\"><table id=\"numbers\"><thead><tr><th scope=\"col\">Number</th>\
                 <th scope=\"col\">Flow</th><th scope=\"col\">What the flow does</th>\
                 <th scope=\"col\">Languages</th><th scope=\"col\">PIN-less</th>\
                 <th scope=\"col\">Set in</th></tr></thead><tbody>",
            );
            for r in &rows {
                let flow = r["flow"].as_str().unwrap_or("");
                let about = live
                    .flows
                    .get(flow)
                    .map(|f| f.description.clone())
                    .unwrap_or_default();
                let langs: Vec<&str> = r["languages"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(r["number"].as_str().unwrap_or("")),
                    esc(flow),
                    esc(&about),
                    esc(&langs.join(", ")),
                    if r["pinless"].as_bool().unwrap_or(false) {
                        "yes"
                    } else {
                        "no"
                    },
                    esc(r["source"].as_str().unwrap_or(""))
                );
            }
            h.push_str("</tbody></table></div>");
        }
        Err(e) => {
            let _ = write!(h, "<p class=\"err\">{}</p>", esc(&e.1));
        }
    }

    h.push_str("<h2>Prompt set</h2>");
    match prompt_report(s, who, &tenant) {
        Ok(Some(report)) => {
            h.push_str("<p id=\"prompt-set\">Your own prompt set is in use.</p>");
            report_html(&mut h, &report, "prompt-report");
        }
        Ok(None) => h.push_str("<p id=\"prompt-set\">The default prompt set is in use.</p>"),
        Err(e) => {
            let _ = write!(h, "<p class=\"err\" id=\"prompt-set\">{}</p>", esc(&e.1));
        }
    }
    let _ = write!(
        h,
        "<form method=\"post\" action=\"/console/service/prompts?tenant={}\" enctype=\"multipart/form-data\">\
         <p><label for=\"archive\">New prompt set (a .zip or .tar of en/, es/ … folders of .au or .wav files)</label> \
         <input id=\"archive\" name=\"archive\" type=\"file\" accept=\".zip,.tar\" required></p>\
         <p><button type=\"submit\" id=\"upload\">Upload and put live</button></p></form>\
         <p class=\"note\">Calls in progress keep the prompts they started with; a refused upload changes nothing.</p>",
        super::enc(&tenant)
    );
    html(status, page("Our service", Some(who), &flash, &h))
}

/// An upload report as lists a person can act on.
fn report_html(h: &mut String, r: &Value, id: &str) {
    let list = |key: &str| -> Vec<String> {
        r[key]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let _ = write!(
        h,
        "<dl class=\"facts\" id=\"{id}\"><dt>Files</dt><dd class=\"files\">{}</dd>\
         <dt>Languages</dt><dd>{}</dd>",
        r["files"].as_u64().unwrap_or(0),
        esc(&list("languages").join(", "))
    );
    for (key, label) in [
        ("errors", "Refused files"),
        ("fallback", "Played from the default set"),
        ("missing", "Missing everywhere (skipped on calls)"),
        ("unknown", "Not in the catalogue (kept for custom flows)"),
        ("converted", "Converted from WAV"),
        ("ignored", "Ignored"),
    ] {
        let items = list(key);
        let _ = write!(
            h,
            "<dt>{label}</dt><dd class=\"{key}\">{}</dd>",
            if items.is_empty() {
                "none".to_string()
            } else {
                esc(&items.join(", "))
            }
        );
    }
    h.push_str("</dl>");
}

/// The upload form's file, whole, or why there is none.
async fn archive_of(mut form: Multipart) -> Result<Vec<u8>, ApiError> {
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::bad(format!("the upload form: {e}")))?
    {
        if field.name() == Some("archive") {
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::bad(format!("the uploaded file: {e}")))?;
            if bytes.is_empty() {
                return Err(ApiError::bad("choose a .zip or .tar file to upload"));
            }
            return Ok(bytes.to_vec());
        }
    }
    Err(ApiError::bad("choose a .zip or .tar file to upload"))
}

pub(super) async fn upload(
    State(s): State<Shared>,
    Clerk(who): Clerk,
    Query(q): Query<Which>,
    form: Multipart,
) -> Response {
    let tenant = match tenant_of(&who, &q.tenant) {
        Ok(t) => t,
        Err(e) => return super::error_page("Our service", &who, e),
    };
    let result = match archive_of(form).await {
        Ok(bytes) => upload_prompts(&s, &who, &tenant, bytes).await,
        Err(e) => Err(e),
    };
    render(&s, &who, &tenant, Some(result)).await
}
