//! The admin HTTP API (`/api/v1/…`), the finance web console (`/console`) and `/metrics`, on
//! their own listen address. Finance staff
//! create cards and top them up, retail ITSPs manage their own tenant's cards, operators load
//! rate decks; each through a bearer token whose role says what it may do, and every change
//! lands in the audit log. The store does the work, exactly as the command line does.
//!
//! Roles: `admin` may do everything; `finance` everything about cards, money and records but
//! not rate decks, flows or prompt sets (it may read access numbers); `itsp:<tenant>` only its
//! own tenant's cards and access numbers (others look absent) and its own prompt set.

mod api;
mod batches;
mod chart;
mod console;
mod reports;
mod subscribers;

pub use api::routes;

use crate::assets::Assets;
use crate::config::{AdminConfig, Role};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rating::{Store, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::task::JoinHandle;

/// The OpenAPI description, checked in beside the code and served as is.
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// Who is calling: the token's name and role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// What every handler shares.
pub struct State {
    store: Arc<Store>,
    assets: Arc<Assets>,
    /// The gateways as the engine last saw them (empty when no engine runs beside us).
    gateways: Arc<crate::engine::board::GatewayBoard>,
    tokens: Vec<(String, Role, Vec<u8>)>,
    /// Batch CSVs the console made, each waiting for its one download.
    downloads: console::Downloads,
    /// Who is signed in to the console, by session id.
    sessions: console::Sessions,
    /// The admin section of the configuration (metrics, cookies, minting limits).
    cfg: AdminConfig,
}

type Shared = Arc<State>;

/// An answer that is not a success: a status and a reason, as `{"error": "…"}`, with any
/// particulars (an upload's report, a flow's errors) beside the reason.
#[derive(Debug)]
pub struct ApiError(StatusCode, String, Option<serde_json::Value>);

impl ApiError {
    fn new(status: StatusCode, why: impl Into<String>) -> ApiError {
        ApiError(status, why.into(), None)
    }
    fn with(status: StatusCode, why: impl Into<String>, more: serde_json::Value) -> ApiError {
        ApiError(status, why.into(), Some(more))
    }
    fn bad(why: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, why)
    }
    fn forbidden(why: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, why)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.1 });
        if let (Some(serde_json::Value::Object(more)), Some(b)) = (self.2, body.as_object_mut()) {
            b.extend(more);
        }
        let mut r = (self.0, Json(body)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::NoAccount(_) | StoreError::NoReservation(_) | StoreError::NoBatch(_) => {
                StatusCode::NOT_FOUND
            }
            StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::OverAllowance(_) => StatusCode::FORBIDDEN,
            StoreError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "admin API: store failed");
        }
        ApiError::new(status, e.to_string())
    }
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Caller, ApiError> {
        let unauthorized = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, why);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("an Authorization: Bearer token is required"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?
            .trim()
            .as_bytes();
        state
            .caller(token)
            .ok_or_else(|| unauthorized("unknown token"))
    }
}

impl State {
    /// Whose token this is. Every token is compared, so the time taken says nothing about
    /// which one nearly matched.
    fn caller(&self, token: &[u8]) -> Option<Caller> {
        let mut found = None;
        for (name, role, t) in &self.tokens {
            if bool::from(t.as_slice().ct_eq(token)) {
                found = Some(Caller {
                    name: name.clone(),
                    role: role.clone(),
                });
            }
        }
        found
    }
}

impl Caller {
    fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::forbidden("only an admin token may do this")),
        }
    }

    fn require_staff(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Finance => Ok(()),
            Role::Itsp(_) => Err(ApiError::forbidden(
                "only finance or admin tokens may do this",
            )),
        }
    }

    /// The tenant this caller is confined to, if any.
    fn tenant(&self) -> Option<&str> {
        match &self.role {
            Role::Itsp(t) => Some(t),
            _ => None,
        }
    }
}

/// The running admin server.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served (the API's address unless `admin.metrics_listen`).
    pub metrics: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting; requests in progress finish.
    pub async fn stop(self) {
        crate::supervise::stopping();
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds `cfg.listen` and serves the API with `tokens` (name, role, secret), changing the
/// engine's prompt sets and flows through `assets`.
pub async fn start(
    cfg: &AdminConfig,
    tokens: Vec<(String, Role, String)>,
    store: Arc<Store>,
    assets: Arc<Assets>,
    gateways: Arc<crate::engine::board::GatewayBoard>,
) -> std::io::Result<Running> {
    let state = Arc::new(State {
        store,
        assets,
        gateways,
        tokens: tokens
            .into_iter()
            .map(|(n, r, t)| (n, r, t.into_bytes()))
            .collect(),
        downloads: Default::default(),
        sessions: Default::default(),
        cfg: cfg.clone(),
    });
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut app = console::router(state.clone()).merge(api::router(state.clone()));
    let metrics_addr = match cfg.metrics_listen {
        None => {
            app = app.merge(api::metrics_router(state));
            addr
        }
        // Its own address (an operator's monitoring network), nothing else served there.
        Some(m) => {
            let l = tokio::net::TcpListener::bind(m).await?;
            let bound = l.local_addr()?;
            let mut stopped = stopped.clone();
            crate::supervise::spawn("metrics", async move {
                let served = axum::serve(l, api::metrics_router(state))
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            });
            bound
        }
    };
    let mut stopped = stopped.clone();
    let task = crate::supervise::spawn("admin", async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    tracing::info!(%addr, metrics = %metrics_addr, "admin API listening");
    Ok(Running {
        addr,
        metrics: metrics_addr,
        stop,
        task,
    })
}
