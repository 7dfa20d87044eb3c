//! Why a bridge to the called party ended. The call layer reports it and a flow's `bridge`
//! state branches on it, so it is one type shared by both rather than a string each side
//! spells its own way.

use std::fmt;

/// Why a bridged call ended, as the call layer reports it and a flow's `on:` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BridgeEnd {
    /// The called party was busy (486, 600, 603).
    Busy,
    /// Nobody answered in time, or the attempt was cancelled while ringing (408, 480, 487).
    NoAnswer,
    /// No gateway could reach the number (404, 484, 5xx, no route).
    Unreachable,
    /// The called party hung up after answering.
    CalledHangup,
    /// The caller held `#`.
    LongPound,
    /// The money ran out (or the maximum call duration was reached).
    CreditExhausted,
    /// Anything else: an unusable answer, a refused bridge, another failure status.
    Failed,
}

impl BridgeEnd {
    /// Every end, in the order the flow documentation lists them.
    pub const ALL: [BridgeEnd; 7] = [
        BridgeEnd::Busy,
        BridgeEnd::NoAnswer,
        BridgeEnd::Unreachable,
        BridgeEnd::CalledHangup,
        BridgeEnd::LongPound,
        BridgeEnd::CreditExhausted,
        BridgeEnd::Failed,
    ];

    /// The name a flow's YAML uses (and logs and accounting show).
    pub fn name(self) -> &'static str {
        match self {
            BridgeEnd::Busy => "busy",
            BridgeEnd::NoAnswer => "no_answer",
            BridgeEnd::Unreachable => "unreachable",
            BridgeEnd::CalledHangup => "called_hangup",
            BridgeEnd::LongPound => "long_pound",
            BridgeEnd::CreditExhausted => "credit_exhausted",
            BridgeEnd::Failed => "failed",
        }
    }

    /// The end a flow's YAML names, if it is one.
    pub fn from_name(name: &str) -> Option<BridgeEnd> {
        BridgeEnd::ALL.into_iter().find(|e| e.name() == name)
    }

    /// How a gateway attempt that failed with a SIP status ends for the flow.
    pub fn for_status(code: u16) -> BridgeEnd {
        match code {
            486 | 600 | 603 => BridgeEnd::Busy,
            408 | 480 | 487 => BridgeEnd::NoAnswer,
            404 | 484 | 500 | 502 | 503 | 504 => BridgeEnd::Unreachable,
            _ => BridgeEnd::Failed,
        }
    }
}

impl fmt::Display for BridgeEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_and_nothing_else_does() {
        for e in BridgeEnd::ALL {
            assert_eq!(BridgeEnd::from_name(e.name()), Some(e));
        }
        assert_eq!(BridgeEnd::from_name("Busy"), None);
        assert_eq!(BridgeEnd::from_name(""), None);
    }

    #[test]
    fn gateway_statuses_map_as_the_flows_expect() {
        assert_eq!(BridgeEnd::for_status(486), BridgeEnd::Busy);
        assert_eq!(BridgeEnd::for_status(603), BridgeEnd::Busy);
        assert_eq!(BridgeEnd::for_status(480), BridgeEnd::NoAnswer);
        assert_eq!(BridgeEnd::for_status(487), BridgeEnd::NoAnswer);
        assert_eq!(BridgeEnd::for_status(503), BridgeEnd::Unreachable);
        assert_eq!(BridgeEnd::for_status(404), BridgeEnd::Unreachable);
        assert_eq!(BridgeEnd::for_status(488), BridgeEnd::Failed);
        assert_eq!(BridgeEnd::for_status(403), BridgeEnd::Failed);
    }
}
