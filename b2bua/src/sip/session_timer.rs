//! The headers of SIP session timers (RFC 4028): `Session-Expires` says how long a session
//! lives without a refresh and who refreshes it, `Min-SE` the shortest a party accepts, and
//! the option tag `timer` in `Supported`/`Require` whether a party takes part. They are what
//! lets each end of a dialog notice that the other is gone when a BYE was lost.

use super::message::{param, SipExt};
use std::fmt;

/// RFC 4028 §5: no party may ask for a session shorter than this.
pub const MIN_SE_FLOOR: u32 = 90;

/// Who refreshes the session, named by its role in the transaction carrying the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The party that sent the request.
    Uac,
    /// The party that answers it.
    Uas,
}

/// A `Session-Expires` value (RFC 4028 §4): `delta-seconds *(;param)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session's lifetime in seconds, from the last refresh.
    pub delta: u32,
    /// Who refreshes, when the sender said.
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Reads a header value; a malformed one is an error worth telling the sender about.
    pub fn parse(value: &str) -> Result<SessionExpires, String> {
        let mut parts = value.split(';');
        let delta = parts.next().unwrap_or("").trim();
        if delta.is_empty() || !delta.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("Session-Expires {value:?} is not delta-seconds"));
        }
        let delta = delta
            .parse::<u32>()
            .map_err(|_| format!("Session-Expires {value:?} is out of range"))?;
        if delta == 0 {
            return Err("Session-Expires 0 is not a session".into());
        }
        let refresher = match param(value, "refresher").map(str::trim) {
            None => None,
            Some(r) if r.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
            Some(r) if r.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
            Some(r) => {
                return Err(format!(
                    "Session-Expires refresher {r:?} is neither uac nor uas"
                ))
            }
        };
        Ok(SessionExpires { delta, refresher })
    }

    /// The message's `Session-Expires` (or compact `x`, expanded by the framer), if it has one.
    pub fn of(msg: &impl SipExt) -> Option<Result<SessionExpires, String>> {
        msg.header("Session-Expires").map(SessionExpires::parse)
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delta)?;
        match self.refresher {
            Some(Refresher::Uac) => f.write_str(";refresher=uac"),
            Some(Refresher::Uas) => f.write_str(";refresher=uas"),
            None => Ok(()),
        }
    }
}

/// The message's `Min-SE` (RFC 4028 §5), if it has one.
pub fn min_se(msg: &impl SipExt) -> Option<Result<u32, String>> {
    msg.header("Min-SE").map(|v| {
        let delta = v.split(';').next().unwrap_or("").trim();
        delta
            .parse::<u32>()
            .map_err(|_| format!("Min-SE {v:?} is not delta-seconds"))
    })
}

/// Whether an option tag is in the message's `Supported` or `Require`.
pub fn has_option(msg: &impl SipExt, tag: &str) -> bool {
    ["Supported", "Require"].iter().any(|h| {
        msg.header_values(h)
            .iter()
            .any(|v| v.trim().eq_ignore_ascii_case(tag))
    })
}

/// Whether the message's sender takes part in session timers.
pub fn supports_timer(msg: &impl SipExt) -> bool {
    has_option(msg, "timer")
}

/// Whether the message's `Allow` lists a method (UPDATE, the cheaper refresh).
pub fn allows(msg: &impl SipExt, method: &str) -> bool {
    msg.header_values("Allow")
        .iter()
        .any(|m| m.trim().eq_ignore_ascii_case(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_and_without_a_refresher() {
        assert_eq!(
            SessionExpires::parse("1800"),
            Ok(SessionExpires {
                delta: 1800,
                refresher: None
            })
        );
        let se = SessionExpires::parse(" 90 ; Refresher = UAS ;x=y").unwrap();
        assert_eq!(se.delta, 90);
        assert_eq!(se.refresher, Some(Refresher::Uas));
        assert_eq!(se.to_string(), "90;refresher=uas");
        assert_eq!(
            SessionExpires::parse("600;refresher=uac")
                .unwrap()
                .to_string(),
            "600;refresher=uac"
        );
    }

    #[test]
    fn malformed_values_are_refused_with_a_reason() {
        for bad in [
            "",
            "abc",
            "-5",
            "1.5",
            "0",
            "99999999999",
            "1800;refresher=both",
        ] {
            let e = SessionExpires::parse(bad).unwrap_err();
            assert!(e.contains("Session-Expires"), "{bad:?}: {e}");
        }
    }
}
