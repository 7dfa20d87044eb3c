//! Our calls as RADIUS accounting records (Cisco's debit-card vocabulary), written to the
//! store's outbox when each leg starts and stops; `crate::radius_acct` sends them. Nothing
//! is written when no accounting server is configured.
//!
//! Legs as a Cisco gateway reports them: the caller's leg (`answer`) keyed on the session's
//! id, which stays the same across long-pound calls (`h323-incoming-conf-id`), and one
//! `originate` leg per call placed to a gateway, keyed on that call's conference id (the
//! same id as its reservation and call record; it is also the Acct-Session-Id).

use super::call::Call;
use super::Engine;
use chrono::{DateTime, Utc};
use rating::radius::acct::{Leg, Record, Status};
use rating::radius::h323;
use std::sync::atomic::Ordering;

/// A conference id in Cisco's form (four 32-bit hex words) when it is a UUID, as ours are.
fn cisco_conf_id(id: &str) -> String {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => {
            let h = u.simple().to_string().to_ascii_uppercase();
            format!("{} {} {} {}", &h[0..8], &h[8..16], &h[16..24], &h[24..32])
        }
        Err(_) => id.to_string(),
    }
}

/// The Q.850 cause for how a leg ended (RFC 3398's mapping for a gateway's SIP answer).
pub(super) fn q850(cause: &str) -> u8 {
    if let Some(code) = cause
        .strip_prefix("gateway ")
        .and_then(|c| c.parse::<u16>().ok())
    {
        return match code {
            404 | 485 | 604 => 1,
            401..=403 | 407 | 603 => 21,
            408 | 504 => 102,
            410 => 22,
            480 => 18,
            484 => 28,
            486 | 600 => 17,
            487 => 16,
            502 => 38,
            400 | 481 | 500 | 503 => 41,
            405 => 63,
            406 | 415 | 501 => 79,
            _ => 31,
        };
    }
    match cause {
        "caller hung up"
        | "called_hangup"
        | "long_pound"
        | "credit_exhausted"
        | "shutdown"
        | "caller cancelled"
        | "caller hung up while ringing" => 16,
        "busy" => 17,
        "no answer" | "no_answer" => 19,
        "unreachable" => 1,
        "gateways failed" | "failed" => 34,
        "RTP inactivity" | "no ACK" => 102,
        "gateway media unusable" => 88,
        _ => 31,
    }
}

/// How one leg ended, for its Stop record.
pub(super) struct LegEnd<'a> {
    pub cause: &'a str,
    pub disconnect_at: DateTime<Utc>,
    pub voice_quality: Option<u32>,
}

impl Engine {
    fn gw_id(&self) -> String {
        self.cfg
            .radius_accounting
            .as_ref()
            .and_then(|a| a.gw_id.clone())
            .unwrap_or_else(|| self.store.config().node_id.clone())
    }

    /// The record for one leg of `call`; `end` makes it a Stop.
    fn leg_record(&self, call: &Call, leg: Leg, end: Option<&LegEnd>) -> Record {
        let (conf, setup, connect, called, remote) = match leg {
            Leg::Answer => (
                &call.session_id,
                call.a_setup,
                call.a_connect,
                &call.access_number,
                Some(call.a_peer.addr),
            ),
            Leg::Originate => (
                &call.conf_id,
                call.b_setup.unwrap_or(call.a_setup),
                call.connected.map(|c| c.1),
                &call.destination,
                call.b_remote,
            ),
        };
        let account = if call.account.is_empty() {
            &call.ani
        } else {
            &call.account
        };
        let mut a: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| a.push((k.to_string(), v));
        put("User-Name", account.clone());
        put("Calling-Station-Id", call.ani.clone());
        put("Called-Station-Id", called.clone());
        put("Acct-Session-Id", conf.clone());
        put("NAS-Identifier", self.gw_id());
        put("h323-conf-id", cisco_conf_id(conf));
        put("h323-incoming-conf-id", cisco_conf_id(&call.session_id));
        put("h323-call-origin", leg.as_str().to_string());
        put("h323-call-type", "VoIP".to_string());
        put("h323-gw-id", self.gw_id());
        if let Some(r) = remote {
            put("h323-remote-address", r.ip().to_string());
        }
        put("h323-setup-time", h323::format_time(setup));
        if let Some(c) = connect {
            put("h323-connect-time", h323::format_time(c));
        }
        if let Some(e) = end {
            let secs = connect.map_or(0, |c| {
                ((e.disconnect_at - c).num_milliseconds().max(0) as u64).div_ceil(1000)
            });
            put("Acct-Session-Time", secs.to_string());
            put("h323-disconnect-time", h323::format_time(e.disconnect_at));
            put("h323-disconnect-cause", format!("{:02X}", q850(e.cause)));
            if let Some(q) = e.voice_quality {
                put("h323-voice-quality", q.to_string());
            }
        }
        Record {
            conf_id: conf.clone(),
            leg,
            status: if end.is_some() {
                Status::Stop
            } else {
                Status::Start
            },
            attributes: a,
        }
    }

    /// Queues the records of call `id`'s legs: each of `legs` starts, or with `end` stops.
    pub(super) fn account(&self, id: u64, legs: &[Leg], end: Option<&LegEnd>) {
        if self.cfg.radius_accounting.is_none() {
            return;
        }
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let records: Vec<Record> = legs
            .iter()
            .map(|leg| self.leg_record(call, *leg, end))
            .collect();
        let at = end.map_or_else(Utc::now, |e| e.disconnect_at);
        let writes = self.accounting_writes.clone();
        writes.fetch_add(1, Ordering::AcqRel);
        self.spawn_store(move |store| async move {
            if let Err(e) = store.enqueue_accounting(&records, at).await {
                tracing::error!(error = %e, "could not queue accounting records; they are lost");
            }
            writes.fetch_sub(1, Ordering::AcqRel);
            None
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conference_ids_and_causes_in_ciscos_form() {
        assert_eq!(
            cisco_conf_id("0c0a2f4e-13f5-4d2b-9b7e-5d1f00a1b2c3"),
            "0C0A2F4E 13F54D2B 9B7E5D1F 00A1B2C3"
        );
        assert_eq!(cisco_conf_id("not a uuid"), "not a uuid");
        assert_eq!(q850("caller hung up"), 0x10);
        assert_eq!(q850("gateway 486"), 0x11);
        assert_eq!(q850("gateway 404"), 0x01);
        assert_eq!(q850("no_answer"), 0x13);
        assert_eq!(q850("gateway 503"), 0x29);
        assert_eq!(q850("whatever the flow said"), 0x1F);
    }
}
