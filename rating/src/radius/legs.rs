//! What one leg's accounting record says, in Cisco's debit-card vocabulary, whoever writes it:
//! the engine as a call starts and ends, or the sweeper for a call whose node died before it
//! could write its Stop. Both must describe a call the same way, or an operator's billing
//! would see two kinds of record for one kind of call.
//!
//! Legs as a Cisco gateway reports them: the caller's leg (`answer`) keyed on the session's
//! id, which stays the same across long-pound calls (`h323-incoming-conf-id`), and one
//! `originate` leg per call placed to a gateway, keyed on that call's conference id (the
//! same id as its reservation and call record; it is also the Acct-Session-Id).

use super::acct::{Leg, Record, Status};
use super::h323;
use chrono::{DateTime, Utc};
use std::net::IpAddr;

/// A conference id in Cisco's form (four 32-bit hex words) when it is a UUID, as ours are.
pub fn cisco_conf_id(id: &str) -> String {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => {
            let h = u.simple().to_string().to_ascii_uppercase();
            format!("{} {} {} {}", &h[0..8], &h[8..16], &h[16..24], &h[24..32])
        }
        Err(_) => id.to_string(),
    }
}

/// The Q.850 cause for how a leg ended (RFC 3398's mapping for a gateway's SIP answer).
pub fn q850(cause: &str) -> u8 {
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
    // The node carrying the call died: a temporary failure on our side.
    if cause.starts_with("swept") {
        return 41;
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

/// Everything a leg's record states.
#[derive(Debug, Clone)]
pub struct LegFacts<'a> {
    pub leg: Leg,
    /// The leg's own id: the session id for the answer leg, the conference id for originate.
    pub id: &'a str,
    pub session_id: &'a str,
    /// The card; empty until it is known (the caller's number stands in, as on the answer
    /// leg's Start).
    pub account: &'a str,
    pub ani: &'a str,
    /// The access number (answer leg) or the destination (originate leg).
    pub called: &'a str,
    pub setup: DateTime<Utc>,
    pub connect: Option<DateTime<Utc>>,
    pub remote: Option<IpAddr>,
    /// `h323-gw-id` and NAS-Identifier.
    pub gw_id: &'a str,
}

/// How a leg ended, for its Stop record.
#[derive(Debug, Clone)]
pub struct LegEnd<'a> {
    pub cause: &'a str,
    pub disconnect_at: DateTime<Utc>,
    pub voice_quality: Option<u32>,
}

impl LegFacts<'_> {
    /// The leg's Start record, or with `end` its Stop.
    pub fn record(&self, end: Option<&LegEnd>) -> Record {
        let mut a: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| a.push((k.to_string(), v));
        let user = if self.account.is_empty() {
            self.ani
        } else {
            self.account
        };
        put("User-Name", user.to_string());
        put("Calling-Station-Id", self.ani.to_string());
        put("Called-Station-Id", self.called.to_string());
        put("Acct-Session-Id", self.id.to_string());
        put("NAS-Identifier", self.gw_id.to_string());
        put("h323-conf-id", cisco_conf_id(self.id));
        put("h323-incoming-conf-id", cisco_conf_id(self.session_id));
        put("h323-call-origin", self.leg.as_str().to_string());
        put("h323-call-type", "VoIP".to_string());
        put("h323-gw-id", self.gw_id.to_string());
        if let Some(r) = self.remote {
            put("h323-remote-address", r.to_string());
        }
        put("h323-setup-time", h323::format_time(self.setup));
        if let Some(c) = self.connect {
            put("h323-connect-time", h323::format_time(c));
        }
        if let Some(e) = end {
            let secs = self.connect.map_or(0, |c| {
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
            conf_id: self.id.to_string(),
            leg: self.leg,
            status: if end.is_some() {
                Status::Stop
            } else {
                Status::Start
            },
            attributes: a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
        assert_eq!(q850("swept: owner node-a stopped extending"), 0x29);
        assert_eq!(q850("whatever the flow said"), 0x1F);
    }

    #[test]
    fn a_stop_counts_whole_seconds_from_the_connect() {
        let setup = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
        let facts = LegFacts {
            leg: Leg::Originate,
            id: "conf-1",
            session_id: "sess-1",
            account: "000070",
            ani: "4085550100",
            called: "5555233",
            setup,
            connect: Some(setup + chrono::Duration::seconds(3)),
            remote: None,
            gw_id: "node-a",
        };
        let start = facts.record(None);
        assert_eq!(start.status, Status::Start);
        assert!(!start
            .attributes
            .iter()
            .any(|(k, _)| k == "Acct-Session-Time"));
        let stop = facts.record(Some(&LegEnd {
            cause: "caller hung up",
            disconnect_at: setup + chrono::Duration::milliseconds(10_200),
            voice_quality: None,
        }));
        let get = |k: &str| {
            stop.attributes
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(stop.status, Status::Stop);
        assert_eq!(get("Acct-Session-Time"), Some("8"));
        assert_eq!(get("h323-disconnect-cause"), Some("10"));
        assert_eq!(get("h323-call-origin"), Some("originate"));
        assert_eq!(get("h323-gw-id"), Some("node-a"));
    }
}
