//! The gateways as the admin API shows them (`GET /api/v1/gateways`): each one's channels, its
//! health pings and its registration, copied out of the engine once a second so the API never
//! waits on (or locks) the task that carries the calls.

use super::register::Status;
use super::{Engine, Wake};
use chrono::Utc;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the engine copies its gateway state out.
const EVERY: Duration = Duration::from_secs(1);

/// One gateway's row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GatewayRow {
    pub name: String,
    pub address: String,
    pub transport: String,
    pub channels: u32,
    pub channels_in_use: u32,
    /// Whether routing sends it new calls now.
    pub in_routing: bool,
    /// `None`: not pinged; else whether it answers its OPTIONS.
    pub answers_pings: Option<bool>,
    /// `None`: it needs no registration.
    pub registration: Option<RegistrationRow>,
}

/// A trunk's registration.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RegistrationRow {
    /// `idle`, `registering`, `registered` or `failed`.
    pub state: &'static str,
    /// When the carrier's binding runs out, while registered (RFC 3339, UTC).
    pub expires_at: Option<String>,
    /// The last failure's status (408: no answer), and when it is tried again.
    pub last_failure: Option<u16>,
    pub retry_at: Option<String>,
}

/// The rows, shared between the engine (writer) and the admin API (reader).
#[derive(Debug, Default)]
pub struct GatewayBoard {
    rows: Mutex<Vec<GatewayRow>>,
}

impl GatewayBoard {
    /// Every gateway, in configuration order, as of the last copy (at most a second old).
    pub fn rows(&self) -> Vec<GatewayRow> {
        self.rows.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Engine {
    /// Copies every gateway's state to the board, and comes back in a second.
    pub(super) fn post_board(&mut self, board: &Arc<GatewayBoard>, now: Instant) {
        let wall = |at: Instant| {
            (Utc::now()
                + chrono::Duration::from_std(at.saturating_duration_since(now)).unwrap_or_default())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let rows = self
            .cfg
            .router
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| GatewayRow {
                name: g.name.clone(),
                address: g.addr.to_string(),
                transport: g.proto.to_string(),
                channels: g.channels,
                channels_in_use: self.lent.channels.in_use(i),
                in_routing: self.lent.channels.is_up(i),
                answers_pings: g.ping.map(|_| self.lent.channels.answers_pings(i)),
                registration: self.registrations.get(i).map(|r| match r.status {
                    Status::Idle => RegistrationRow {
                        state: "idle",
                        expires_at: None,
                        last_failure: None,
                        retry_at: None,
                    },
                    Status::Registering => RegistrationRow {
                        state: "registering",
                        expires_at: None,
                        last_failure: None,
                        retry_at: None,
                    },
                    Status::Registered { until } => RegistrationRow {
                        state: "registered",
                        expires_at: Some(wall(until)),
                        last_failure: None,
                        retry_at: None,
                    },
                    Status::Failed { code, retry } => RegistrationRow {
                        state: "failed",
                        expires_at: None,
                        last_failure: Some(code),
                        retry_at: Some(wall(retry)),
                    },
                }),
            })
            .collect();
        if let Ok(mut r) = board.rows.lock() {
            *r = rows;
        }
        self.schedule(Some(now + EVERY), Wake::Board);
    }
}
