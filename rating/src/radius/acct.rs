//! Our accounting client's protocol half, without I/O: an accounting record as text (what the
//! outbox table keeps), its encoding as an Accounting-Request, and the sender's state: which
//! records are in flight under which identifier, when each is due again (backing off), and
//! which response acknowledges which record. The daemon owns the socket, the clock and the
//! outbox; it asks [`Sender`] what to send and tells it what came back.
//!
//! A record keeps the same identifier and bytes for as long as it is in flight, so a server
//! that got the first copy but whose answer was lost recognizes the resend as a duplicate
//! (RFC 5080 §2.2.2) instead of logging the call twice.

use super::packet::{attr, cisco_avp, encode_accounting_request, is_authentic_response};
use radius::core::avp::AVP;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Which side of the B2BUA a record describes, in Cisco's words (`h323-call-origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The caller's leg, which we answer.
    Answer,
    /// The leg we place toward the termination gateway.
    Originate,
}

impl Leg {
    /// The stored and sent spelling (`h323-call-origin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Answer => "answer",
            Leg::Originate => "originate",
        }
    }
}

/// Acct-Status-Type of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Start,
    Stop,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Start => "start",
            Status::Stop => "stop",
        }
    }
    fn code(self) -> u32 {
        match self {
            Status::Start => 1,
            Status::Stop => 2,
        }
    }
}

/// One accounting record: its key and its attributes, in the order they will be sent.
/// Attribute names are FreeRADIUS' (`User-Name`, `h323-conf-id` …) so the outbox reads like a
/// detail file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub conf_id: String,
    pub leg: Leg,
    pub status: Status,
    pub attributes: Vec<(String, String)>,
}

/// Standard attributes a record may carry, by name.
const STANDARD: &[(&str, u8)] = &[
    ("User-Name", attr::USER_NAME),
    ("Called-Station-Id", attr::CALLED_STATION_ID),
    ("Calling-Station-Id", attr::CALLING_STATION_ID),
    ("Acct-Session-Id", attr::ACCT_SESSION_ID),
    ("NAS-Identifier", 32),
];
const ACCT_SESSION_TIME: &str = "Acct-Session-Time";
const ACCT_DELAY_TIME: u8 = 41;

/// Cisco attributes with a number of their own; any other `h323-*`/`cisco` name travels as a
/// `Cisco-AVPair` `name=value`. `h323-incoming-conf-id` goes that way too, as the seed's
/// gateways send it (FreeRADIUS' dictionary also knows it as attribute 35).
fn cisco_number(name: &str) -> Option<u8> {
    (2..=110)
        .filter(|n| *n != 35)
        .find(|n| super::packet::cisco_name(*n) == Some(name))
}

impl Record {
    /// The attributes as stored: `Name=value` per line.
    pub fn attributes_text(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.attributes {
            s.push_str(k);
            s.push('=');
            s.push_str(v);
            s.push('\n');
        }
        s
    }

    /// Reads a stored record back. Lines that are not `Name=value` are an error (the table
    /// was edited by hand): the record is not sent rather than sent wrong.
    pub fn from_text(conf_id: &str, leg: &str, status: &str, text: &str) -> Result<Record, String> {
        let leg = match leg {
            "answer" => Leg::Answer,
            "originate" => Leg::Originate,
            l => return Err(format!("unknown leg {l:?}")),
        };
        let status = match status {
            "start" => Status::Start,
            "stop" => Status::Stop,
            s => return Err(format!("unknown status {s:?}")),
        };
        let attributes = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("attribute line {l:?} is not Name=value"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Record {
            conf_id: conf_id.to_string(),
            leg,
            status,
            attributes,
        })
    }

    /// The record's attributes on the wire, with Acct-Delay-Time (seconds since the event).
    pub fn avps(&self, delay: Duration) -> Result<Vec<AVP>, String> {
        let mut out = vec![AVP::from_u32(attr::ACCT_STATUS_TYPE, self.status.code())];
        for (k, v) in &self.attributes {
            if v.len() > 240 || v.chars().any(char::is_control) {
                return Err(format!("{k} is too long or holds a control character"));
            }
            if let Some((_, n)) = STANDARD.iter().find(|(name, _)| name == k) {
                out.push(AVP::from_string(*n, v));
            } else if k == ACCT_SESSION_TIME {
                let s: u32 = v.parse().map_err(|_| format!("{k}={v} is not seconds"))?;
                out.push(AVP::from_u32(attr::ACCT_SESSION_TIME, s));
            } else if let Some(n) = cisco_number(k) {
                out.push(cisco_avp(n, v));
            } else if k.starts_with("h323-") || k.starts_with("cisco-") {
                out.push(cisco_avp(1, &format!("{k}={v}")));
            } else {
                return Err(format!("unknown attribute {k}"));
            }
        }
        let delay = u32::try_from(delay.as_secs()).unwrap_or(u32::MAX);
        out.push(AVP::from_u32(ACCT_DELAY_TIME, delay));
        Ok(out)
    }
}

/// When to send a record again: after `first`, doubling up to `max`, for ever (an
/// accounting record is never given up; the outbox keeps it until the server answers).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// RFC 5080 §2.2.1's initial 2 s, capped at 30 s.
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(2),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after the `sends`-th transmission (1 for the first).
    pub fn after(&self, sends: u32) -> Duration {
        let doubled = self
            .first
            .checked_mul(1u32 << sends.saturating_sub(1).min(16))
            .unwrap_or(self.max);
        doubled.min(self.max)
    }
}

struct InFlight {
    key: i64,
    packet: Vec<u8>,
    sends: u32,
    due: Instant,
}

/// The records in flight to one server, at most one per identifier (256).
pub struct Sender {
    secret: Vec<u8>,
    backoff: Backoff,
    window: usize,
    inflight: HashMap<u8, InFlight>,
    free: VecDeque<u8>,
}

/// A response that was not taken as an acknowledgement, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("not an Accounting-Response (code {0})")]
    NotAResponse(u8),
    #[error("no record in flight has identifier {0} (late duplicate?)")]
    Unknown(u8),
    #[error("wrong response authenticator (shared secret mismatch?)")]
    BadAuthenticator,
    #[error("truncated")]
    Truncated,
}

impl Sender {
    /// A sender sharing `secret` with its server, with at most `window` records in flight.
    pub fn new(secret: &[u8], backoff: Backoff, window: usize) -> Sender {
        Sender {
            secret: secret.to_vec(),
            backoff,
            window: window.clamp(1, 256),
            inflight: HashMap::new(),
            free: (0..=255u8).collect(),
        }
    }

    /// How many more records may be put in flight now.
    pub fn room(&self) -> usize {
        self.window.saturating_sub(self.inflight.len())
    }

    /// How many records await their answer.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Puts the record stored under `key` in flight; returns the datagram to send now.
    /// `event_age` is how long ago the call event happened (Acct-Delay-Time).
    pub fn send(
        &mut self,
        key: i64,
        record: &Record,
        event_age: Duration,
        now: Instant,
    ) -> Result<Vec<u8>, String> {
        if self.room() == 0 {
            return Err("no room in the window".into());
        }
        let avps = record.avps(event_age)?;
        let id = self.free.pop_front().ok_or("no identifier free")?;
        let packet = match encode_accounting_request(id, avps, &self.secret) {
            Ok(p) => p,
            Err(e) => {
                self.free.push_front(id);
                return Err(e.to_string());
            }
        };
        self.inflight.insert(
            id,
            InFlight {
                key,
                packet: packet.clone(),
                sends: 1,
                due: now + self.backoff.after(1),
            },
        );
        Ok(packet)
    }

    /// A datagram from the server: the key of the record it acknowledges.
    pub fn on_response(&mut self, bytes: &[u8]) -> Result<i64, ResponseError> {
        if bytes.len() < 20 {
            return Err(ResponseError::Truncated);
        }
        if bytes[0] != 5 {
            return Err(ResponseError::NotAResponse(bytes[0]));
        }
        let id = bytes[1];
        let f = self.inflight.get(&id).ok_or(ResponseError::Unknown(id))?;
        if !is_authentic_response(bytes, &f.packet, &self.secret) {
            return Err(ResponseError::BadAuthenticator);
        }
        let f = self.inflight.remove(&id).expect("just found");
        // Reused last, so that a late answer to this identifier's old request is unlikely
        // to meet a new one.
        self.free.push_back(id);
        Ok(f.key)
    }

    /// The datagrams due again at `now`, each with its key and how often it was sent.
    pub fn due(&mut self, now: Instant) -> Vec<(i64, u32, Vec<u8>)> {
        let mut out = Vec::new();
        for f in self.inflight.values_mut() {
            if f.due <= now {
                f.sends += 1;
                f.due = now + self.backoff.after(f.sends);
                out.push((f.key, f.sends, f.packet.clone()));
            }
        }
        out.sort_by_key(|(k, _, _)| *k);
        out
    }

    /// When [`Sender::due`] next has something.
    pub fn next_due(&self) -> Option<Instant> {
        self.inflight.values().map(|f| f.due).min()
    }

    /// Whether the record stored under `key` is in flight.
    pub fn holds(&self, key: i64) -> bool {
        self.inflight.values().any(|f| f.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::packet::decode_request;

    fn record() -> Record {
        Record {
            conf_id: "c1".into(),
            leg: Leg::Originate,
            status: Status::Stop,
            attributes: vec![
                ("User-Name".into(), "000070".into()),
                ("Acct-Session-Id".into(), "c1".into()),
                ("Acct-Session-Time".into(), "61".into()),
                ("h323-conf-id".into(), "1 2 3 4".into()),
                ("h323-incoming-conf-id".into(), "5 6 7 8".into()),
                ("h323-call-origin".into(), "originate".into()),
                ("h323-disconnect-cause".into(), "10".into()),
            ],
        }
    }

    /// The answer a server would send to `req` (sent with "s3cret") signing with `secret`.
    fn answer(req: &[u8], secret: &[u8]) -> Vec<u8> {
        let r = decode_request(req, b"s3cret", false).unwrap();
        crate::radius::encode_reply(
            &r,
            radius::core::code::Code::AccountingResponse,
            vec![],
            secret,
        )
        .unwrap()
    }

    #[test]
    fn a_record_round_trips_through_text_and_decodes_as_sent() {
        let r = record();
        let back = Record::from_text("c1", "originate", "stop", &r.attributes_text()).unwrap();
        assert_eq!(back, r);
        let mut s = Sender::new(b"s3cret", Backoff::default(), 8);
        let pkt = s
            .send(7, &r, Duration::from_secs(3), Instant::now())
            .unwrap();
        let req = decode_request(&pkt, b"s3cret", false).unwrap();
        assert_eq!(req.acct_status, Some(2));
        assert_eq!(req.user_name.as_deref(), Some("000070"));
        assert_eq!(req.acct_session_time, Some(61));
        assert_eq!(req.cisco("h323-conf-id"), Some("1 2 3 4"));
        assert_eq!(req.cisco("h323-incoming-conf-id"), Some("5 6 7 8"));
        assert_eq!(req.cisco("h323-disconnect-cause"), Some("10"));
        assert!(Record::from_text("c1", "sideways", "stop", "").is_err());
        assert!(Record::from_text("c1", "answer", "stop", "no equals sign").is_err());
    }

    #[test]
    fn only_an_authentic_answer_acknowledges_and_resends_are_identical() {
        let t0 = Instant::now();
        let mut s = Sender::new(b"s3cret", Backoff::default(), 2);
        let p1 = s.send(1, &record(), Duration::ZERO, t0).unwrap();
        let p2 = s.send(2, &record(), Duration::ZERO, t0).unwrap();
        assert_ne!(p1[1], p2[1], "each record has its own identifier");
        assert_eq!(s.room(), 0);
        assert!(s.send(3, &record(), Duration::ZERO, t0).is_err());
        // Nothing due before the first backoff; then both again, byte for byte.
        assert!(s.due(t0 + Duration::from_millis(1999)).is_empty());
        let again = s.due(t0 + Duration::from_secs(2));
        assert_eq!(again.len(), 2);
        assert_eq!(again[0], (1, 2, p1.clone()));
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(6)));
        // A reply under the wrong secret, or to another identifier, acknowledges nothing.
        assert_eq!(
            s.on_response(&answer(&p1, b"wrong")),
            Err(ResponseError::BadAuthenticator)
        );
        let mut stray = answer(&p1, b"s3cret");
        stray[1] = stray[1].wrapping_add(9);
        assert!(matches!(
            s.on_response(&stray),
            Err(ResponseError::Unknown(_))
        ));
        assert_eq!(s.on_response(&[5, 0, 0]), Err(ResponseError::Truncated));
        assert_eq!(s.on_response(&answer(&p1, b"s3cret")), Ok(1));
        assert!(!s.holds(1) && s.holds(2));
        // The same answer again is a late duplicate.
        assert!(s.on_response(&answer(&p1, b"s3cret")).is_err());
        assert_eq!(s.room(), 1);
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let b = Backoff::default();
        let waits: Vec<u64> = (1..=7).map(|n| b.after(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.after(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn bad_attributes_are_refused_not_sent() {
        let mut r = record();
        r.attributes.push(("Framed-Weird".into(), "x".into()));
        assert!(r.avps(Duration::ZERO).is_err());
        let mut r = record();
        r.attributes[0].1 = "a\r\nb".into();
        assert!(r.avps(Duration::ZERO).is_err());
        let mut r = record();
        r.attributes[2].1 = "sixty".into();
        assert!(r.avps(Duration::ZERO).is_err());
    }
}
