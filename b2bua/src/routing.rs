//! Dial peers: which gateways a destination may go to, in what order, and as what number.
//!
//! Patterns follow Cisco dial peers (seed 004: Route → Carriers → Gateways → Rules): digits
//! match themselves, `.` matches any one digit, and a trailing `T` matches any number of digits.
//! Routes are tried by specificity (the most literal digits first, fixed length before open
//! ended), then by priority (lower first); each route lists gateways with their number rules.
//! No I/O: the call layer asks for the candidate list once and walks it on failure.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// One dial-peer destination pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    elems: Vec<Option<u8>>,
    open: bool,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Pattern, PatternError> {
        let (body, open) = match s.strip_suffix(['T', 't']) {
            Some(b) => (b, true),
            None => (s, false),
        };
        if body.is_empty() && !open {
            return Err(PatternError(
                "empty pattern (use `T` to match every number)".into(),
            ));
        }
        let elems = body
            .bytes()
            .map(|b| match b {
                b'0'..=b'9' | b'*' | b'#' => Ok(Some(b)),
                b'.' => Ok(None),
                _ => Err(PatternError(format!(
                    "`{s}`: only digits, `*`, `#`, `.` and a trailing `T` are allowed"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Pattern { elems, open })
    }
}

impl Pattern {
    /// A prefix: the digits and then anything.
    pub fn prefix(digits: &str) -> Result<Pattern, PatternError> {
        format!("{digits}T").parse()
    }

    /// Whether `number` matches.
    pub fn matches(&self, number: &str) -> bool {
        let n = number.as_bytes();
        if n.len() < self.elems.len() || (!self.open && n.len() != self.elems.len()) {
            return false;
        }
        self.elems.iter().zip(n).all(|(e, d)| match e {
            Some(x) => x == d,
            None => d.is_ascii_digit() || *d == b'*' || *d == b'#',
        })
    }

    /// Ordering key: more literal digits first, then fixed length, then longer.
    fn specificity(&self) -> (usize, bool, usize) {
        (
            self.elems.iter().filter(|e| e.is_some()).count(),
            !self.open,
            self.elems.len(),
        )
    }
}

/// How the caller's number is presented to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerId {
    /// In From.
    #[default]
    From,
    /// In P-Asserted-Identity (RFC 3325), with From anonymous.
    Pai,
}

/// SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// UDP.
    #[default]
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (RFC 3261 §26.3.1).
    Tls,
}

impl Proto {
    /// Whether the transport is a connection that delivers in order and retransmits itself,
    /// so that requests are not resent on Timer A (RFC 3261 §17.1.1.2).
    pub fn reliable(self) -> bool {
        self != Proto::Udp
    }

    /// The URI parameter that sends a request to a peer over this transport.
    pub fn uri_param(self) -> &'static str {
        match self {
            Proto::Udp => "",
            Proto::Tcp => ";transport=tcp",
            Proto::Tls => ";transport=tls",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        })
    }
}

/// A termination gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Its name in the configuration.
    pub name: String,
    /// Where its SIP listens.
    pub addr: SocketAddr,
    /// How we reach it.
    pub proto: Proto,
    /// How its certificate is checked, when `proto` is TLS.
    pub tls: Option<crate::tls::Peer>,
    /// Whether calls to it are offered SRTP (SDES) and must get it: only over TLS, where
    /// the keys in the SDP are not readable on the way.
    pub srtp: bool,
    /// How many calls it may carry at once.
    pub channels: u32,
    /// What to answer its digest challenges with, if it sends any.
    pub auth: Option<GatewayAuth>,
    /// How often it is sent an OPTIONS ping, if at all.
    pub ping: Option<std::time::Duration>,
    /// Pings in a row left unanswered before it is taken out of routing.
    pub ping_failures: u32,
    /// Whether (and how) we register with it; it takes calls only while we are.
    pub register: Option<GatewayRegister>,
    /// How the caller is presented to it.
    pub identity: crate::sip::identity::Identity,
}

/// Registration with a carrier's trunk (RFC 3261 §10): who we register as, where, for how
/// long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRegister {
    /// The Expires we ask for, in seconds.
    pub expires: u32,
    /// The user of our address of record (`sip:user@domain`): the configured one, else the
    /// digest username.
    pub user: String,
    /// The user of the Contact we register (where the carrier sends calls for us).
    pub contact_user: String,
    /// The registrar's domain: the Request-URI and our address of record's host (default:
    /// the gateway's address).
    pub domain: String,
}

/// Credentials a carrier's gateway asks for (digest, RFC 3261 §22.2). The password is never
/// printed: `Debug` hides it, and nothing logs or serves it.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewayAuth {
    pub username: String,
    pub password: String,
    /// The realm the credentials are for; a challenge from another realm is not answered
    /// (that gateway fails over). `None`: whatever realm the gateway names.
    pub realm: Option<String>,
}

impl std::fmt::Debug for GatewayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayAuth")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("realm", &self.realm)
            .finish()
    }
}

/// A gateway of a route, with the number rules for that gateway.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index into the router's gateways.
    pub gateway: usize,
    /// Digits removed from the front of the destination.
    pub strip: usize,
    /// Digits added in front after stripping.
    pub prefix: String,
}

/// A route (dial peer).
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name, for logs and records.
    pub name: String,
    /// Destinations it serves.
    pub patterns: Vec<Pattern>,
    /// Lower is tried first among equally specific matches.
    pub priority: u32,
    /// Its gateways, in order.
    pub targets: Vec<Target>,
    /// How the caller's number is presented.
    pub caller_id: CallerId,
}

/// One place to try a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index into the router's gateways.
    pub gateway: usize,
    /// The number to send, rules applied.
    pub number: String,
    /// How the caller's number is presented.
    pub caller_id: CallerId,
    /// The route it came from.
    pub route: String,
}

/// All routes and gateways.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// The gateways.
    pub gateways: Vec<Gateway>,
    /// The routes.
    pub routes: Vec<Route>,
}

impl Router {
    /// Every gateway the destination may try, best first. A gateway that appears through two
    /// routes is tried once.
    pub fn candidates(&self, destination: &str) -> Vec<Candidate> {
        let mut matched: Vec<(&Route, (usize, bool, usize))> = self
            .routes
            .iter()
            .filter_map(|r| {
                r.patterns
                    .iter()
                    .filter(|p| p.matches(destination))
                    .map(Pattern::specificity)
                    .max()
                    .map(|s| (r, s))
            })
            .collect();
        matched.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.priority.cmp(&b.0.priority)));
        let mut out: Vec<Candidate> = Vec::new();
        for (route, _) in matched {
            for t in &route.targets {
                if out.iter().any(|c| c.gateway == t.gateway) {
                    continue;
                }
                let kept = destination
                    .get(t.strip.min(destination.len())..)
                    .unwrap_or("");
                out.push(Candidate {
                    gateway: t.gateway,
                    number: format!("{}{}", t.prefix, kept),
                    caller_id: route.caller_id,
                    route: route.name.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        s.parse().unwrap()
    }

    #[test]
    fn cisco_patterns() {
        assert!(p("1514.......").matches("15145551234"));
        assert!(!p("1514.......").matches("1514555123"));
        assert!(!p("1514.......").matches("151455512345"));
        assert!(p("011T").matches("011"));
        assert!(p("011T").matches("01144123"));
        assert!(p("T").matches("5555233"));
        assert!(!p("44T").matches("4"));
        assert!("".parse::<Pattern>().is_err());
        assert!("15x".parse::<Pattern>().is_err());
        assert!("1T5".parse::<Pattern>().is_err());
    }

    fn router() -> Router {
        let gw = |n: &str| Gateway {
            name: n.into(),
            addr: "127.0.0.1:5062".parse().unwrap(),
            proto: Proto::Udp,
            tls: None,
            srtp: false,
            channels: 10,
            auth: None,
            ping: None,
            ping_failures: 3,
            register: None,
            identity: Default::default(),
        };
        let t = |g, strip, prefix: &str| Target {
            gateway: g,
            strip,
            prefix: prefix.into(),
        };
        Router {
            gateways: vec![gw("a"), gw("b"), gw("c")],
            routes: vec![
                Route {
                    name: "all".into(),
                    patterns: vec![p("T")],
                    priority: 1,
                    targets: vec![t(2, 0, "")],
                    caller_id: CallerId::From,
                },
                Route {
                    name: "mtl-cheap".into(),
                    patterns: vec![p("1514.......")],
                    priority: 20,
                    targets: vec![t(1, 1, "")],
                    caller_id: CallerId::Pai,
                },
                Route {
                    name: "mtl".into(),
                    patterns: vec![p("1514.......")],
                    priority: 10,
                    targets: vec![t(0, 0, "00"), t(1, 0, "")],
                    caller_id: CallerId::From,
                },
                Route {
                    name: "na".into(),
                    patterns: vec![Pattern::prefix("1").unwrap()],
                    priority: 1,
                    targets: vec![t(2, 0, "")],
                    caller_id: CallerId::From,
                },
            ],
        }
    }

    #[test]
    fn specificity_then_priority_and_number_rules() {
        let c = router().candidates("15145551234");
        let order: Vec<(usize, &str, &str)> = c
            .iter()
            .map(|c| (c.gateway, c.number.as_str(), c.route.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                (0, "0015145551234", "mtl"),
                (1, "15145551234", "mtl"),
                (2, "15145551234", "na")
            ]
        );
        let c = router().candidates("4420");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].route, "all");
        assert!(Router::default().candidates("1").is_empty());
    }
}
