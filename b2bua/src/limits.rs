//! Every limit that stands between the open Internet and the daemon's state, in one place: the
//! `limits:` section of the configuration, its checks, and the I/O-free token buckets the
//! engine uses for flood control.
//!
//! A node on a public address meets scanners, floods and toll-fraud robots all day. Each limit
//! here has a default safe for such an address, may be changed per deployment, and is counted
//! in `b2bua_limit_hits_total{limit=…}` when it bites (see [`crate::metrics::Metrics::limit_hit`]),
//! so an operator sees an attack before the callers do.

use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A sustained rate with a burst on top.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: u32,
    /// The bucket's size: how many may come at once after a quiet spell.
    pub burst: u32,
}

impl Rate {
    const fn new(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsFile {
    tcp_connections: usize,
    tcp_connections_per_source: usize,
    tcp_idle_s: u64,
    tcp_write_queue: usize,
    tls_handshake_ms: u64,
    requests: Rate,
    invites: Rate,
    trusted_requests: Rate,
    trusted_invites: Rate,
    error_replies: Rate,
    flood_sources: usize,
    transactions: usize,
    lingering_transactions: usize,
    calls: usize,
    store_queue: usize,
    auth_failures_per_source: u32,
    auth_failures_per_access_number: u32,
}

impl Default for LimitsFile {
    fn default() -> Self {
        let d = Limits::default();
        LimitsFile {
            tcp_connections: d.tcp_connections,
            tcp_connections_per_source: d.tcp_connections_per_source,
            tcp_idle_s: d.tcp_idle.as_secs(),
            tcp_write_queue: d.tcp_write_queue,
            tls_handshake_ms: d.tls_handshake.as_millis() as u64,
            requests: d.requests,
            invites: d.invites,
            trusted_requests: d.trusted_requests,
            trusted_invites: d.trusted_invites,
            error_replies: d.error_replies,
            flood_sources: d.flood_sources,
            transactions: d.transactions,
            lingering_transactions: d.lingering_transactions,
            calls: d.calls,
            store_queue: d.store_queue,
            auth_failures_per_source: d.auth_failures_per_source,
            auth_failures_per_access_number: d.auth_failures_per_access_number,
        }
    }
}

/// The limits in force; see `b2bua.example.yaml` for what each one protects.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Open SIP TCP connections in all.
    pub tcp_connections: usize,
    /// Open SIP TCP connections from one address.
    pub tcp_connections_per_source: usize,
    /// A TCP connection that carries nothing (not even a CRLF keep-alive) this long is closed.
    pub tcp_idle: Duration,
    /// Messages waiting to be written to one connection; a peer that lets more pile up (it
    /// does not read) is disconnected.
    pub tcp_write_queue: usize,
    /// A TLS handshake (either direction) that has not finished this long is given up: a
    /// connection that never completes one holds a descriptor and a connection slot.
    pub tls_handshake: Duration,
    /// New requests per second from one untrusted address (all methods).
    pub requests: Rate,
    /// New INVITEs per second from one untrusted address.
    pub invites: Rate,
    /// The same for a trusted peer (a proxy in front carries many callers).
    pub trusted_requests: Rate,
    /// INVITEs per second from one trusted peer.
    pub trusted_invites: Rate,
    /// Answers to messages that cannot be parsed (400, 501 …), from all sources together: they
    /// are sent before any per-source state exists, so a flood of garbage gets this many.
    pub error_replies: Rate,
    /// Addresses whose rates are tracked at once; beyond it the quietest are forgotten.
    pub flood_sources: usize,
    /// Transactions (both directions) in progress at once: not counting those that only
    /// wait out a timer to absorb retransmissions.
    pub transactions: usize,
    /// Transactions that only wait out such a timer, kept at once; beyond it the oldest is
    /// forgotten early (a late retransmission is then not absorbed; no request is refused).
    pub lingering_transactions: usize,
    /// Calls in progress at once.
    pub calls: usize,
    /// Store operations (authorizations, settlements, records) in flight at once; beyond it
    /// new calls get 503 with Retry-After, so an overloaded database sheds new work early
    /// instead of timing out and refusing calls as if it were gone (code 8).
    pub store_queue: usize,
    /// Failed card or PIN entries per minute from one source address.
    pub auth_failures_per_source: u32,
    /// Failed card or PIN entries per minute on one access number, from everyone.
    pub auth_failures_per_access_number: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tcp_connections: 4096,
            tcp_connections_per_source: 32,
            tcp_idle: Duration::from_secs(300),
            tcp_write_queue: 256,
            tls_handshake: Duration::from_secs(5),
            requests: Rate::new(100, 200),
            invites: Rate::new(10, 20),
            trusted_requests: Rate::new(20_000, 40_000),
            trusted_invites: Rate::new(5_000, 10_000),
            error_replies: Rate::new(200, 400),
            flood_sources: 65_536,
            transactions: 100_000,
            lingering_transactions: 400_000,
            calls: 20_000,
            store_queue: 1000,
            auth_failures_per_source: 10,
            auth_failures_per_access_number: 200,
        }
    }
}

impl LimitsFile {
    /// The limits, each mistake reported through `err(key, message)`.
    pub(crate) fn check(self, err: &mut dyn FnMut(String, String)) -> Limits {
        let mut at_least = |key: &str, value: u64, min: u64| {
            if value < min {
                err(format!("limits.{key}"), format!("{value} is below {min}"));
            }
        };
        at_least("tcp_connections", self.tcp_connections as u64, 1);
        at_least(
            "tcp_connections_per_source",
            self.tcp_connections_per_source as u64,
            1,
        );
        at_least("tcp_idle_s", self.tcp_idle_s, 1);
        at_least("tcp_write_queue", self.tcp_write_queue as u64, 1);
        at_least("tls_handshake_ms", self.tls_handshake_ms, 100);
        at_least("flood_sources", self.flood_sources as u64, 16);
        at_least("transactions", self.transactions as u64, 16);
        at_least(
            "lingering_transactions",
            self.lingering_transactions as u64,
            16,
        );
        at_least("calls", self.calls as u64, 1);
        at_least("store_queue", self.store_queue as u64, 1);
        at_least(
            "auth_failures_per_source",
            self.auth_failures_per_source as u64,
            1,
        );
        at_least(
            "auth_failures_per_access_number",
            self.auth_failures_per_access_number as u64,
            1,
        );
        for (key, r) in [
            ("requests", self.requests),
            ("invites", self.invites),
            ("trusted_requests", self.trusted_requests),
            ("trusted_invites", self.trusted_invites),
            ("error_replies", self.error_replies),
        ] {
            if r.per_second == 0 || r.burst == 0 {
                err(
                    format!("limits.{key}"),
                    "per_second and burst must be at least 1".into(),
                );
            }
        }
        if self.tcp_connections_per_source > self.tcp_connections {
            err(
                "limits.tcp_connections_per_source".into(),
                "is above limits.tcp_connections".into(),
            );
        }
        Limits {
            tcp_connections: self.tcp_connections,
            tcp_connections_per_source: self.tcp_connections_per_source,
            tcp_idle: Duration::from_secs(self.tcp_idle_s),
            tcp_write_queue: self.tcp_write_queue,
            tls_handshake: Duration::from_millis(self.tls_handshake_ms),
            requests: self.requests,
            invites: self.invites,
            trusted_requests: self.trusted_requests,
            trusted_invites: self.trusted_invites,
            error_replies: self.error_replies,
            flood_sources: self.flood_sources,
            transactions: self.transactions,
            lingering_transactions: self.lingering_transactions,
            calls: self.calls,
            store_queue: self.store_queue,
            auth_failures_per_source: self.auth_failures_per_source,
            auth_failures_per_access_number: self.auth_failures_per_access_number,
        }
    }
}

/// A token bucket (I/O-free: time is passed in).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst as f64,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate.per_second as f64).min(rate.burst as f64);
        self.at = now;
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has filled up again (its source has been quiet).
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + dt * rate.per_second as f64 >= rate.burst as f64
    }
}

/// What flood control says of a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Pass,
    /// Over the limit: a trusted peer gets 503 with Retry-After, anyone else nothing.
    Over,
}

/// Per-source request and INVITE buckets, kept for at most `flood_sources` addresses.
pub struct FloodGate {
    sources: HashMap<IpAddr, (Bucket, Bucket)>,
    /// Shared by the addresses that found the table full, so a spray of spoofed sources cannot
    /// push a real caller's bucket out and then pass unlimited itself.
    overflow: (Bucket, Bucket),
}

impl FloodGate {
    /// An empty gate.
    pub fn new(limits: &Limits, now: Instant) -> FloodGate {
        FloodGate {
            sources: HashMap::new(),
            overflow: (
                Bucket::full(limits.requests, now),
                Bucket::full(limits.invites, now),
            ),
        }
    }

    /// Counts a new request from `ip` (`invite` for an INVITE outside a dialog).
    pub fn admit(
        &mut self,
        limits: &Limits,
        ip: IpAddr,
        trusted: bool,
        invite: bool,
        now: Instant,
    ) -> Verdict {
        let (req_rate, inv_rate) = if trusted {
            (limits.trusted_requests, limits.trusted_invites)
        } else {
            (limits.requests, limits.invites)
        };
        if !self.sources.contains_key(&ip) && self.sources.len() >= limits.flood_sources {
            // Quiet sources are forgotten first; they would start full again anyway.
            self.sources
                .retain(|_, (r, i)| !(r.is_full(req_rate, now) && i.is_full(inv_rate, now)));
        }
        let buckets = if self.sources.len() < limits.flood_sources || self.sources.contains_key(&ip)
        {
            self.sources
                .entry(ip)
                .or_insert_with(|| (Bucket::full(req_rate, now), Bucket::full(inv_rate, now)))
        } else {
            crate::metrics::get().limit_hit("flood_sources");
            &mut self.overflow
        };
        let ok = buckets.0.take(req_rate, now) && (!invite || buckets.1.take(inv_rate, now));
        if ok {
            Verdict::Pass
        } else {
            crate::metrics::get().limit_hit(if invite { "invites" } else { "requests" });
            Verdict::Over
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

/// Failed card or PIN entries per key (a source address, a calling number, an access number)
/// in fixed one-minute windows, for at most `cap` keys (I/O-free: time is passed in).
pub struct FailureWindows {
    windows: HashMap<String, (Instant, u32)>,
    cap: usize,
}

const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

impl FailureWindows {
    /// Empty, remembering at most `cap` keys.
    pub fn new(cap: usize) -> FailureWindows {
        FailureWindows {
            windows: HashMap::new(),
            cap,
        }
    }

    /// Whether `key` has had `limit` failures or more in its current minute.
    pub fn over(&self, key: &str, limit: u32, now: Instant) -> bool {
        self.windows
            .get(key)
            .is_some_and(|(start, n)| now.saturating_duration_since(*start) < MINUTE && *n >= limit)
    }

    /// Counts one failure against `key`.
    pub fn add(&mut self, key: &str, now: Instant) {
        if !self.windows.contains_key(key) && self.windows.len() >= self.cap {
            self.windows
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < MINUTE);
            if self.windows.len() >= self.cap {
                crate::metrics::get().limit_hit("auth_failure_keys");
                return;
            }
        }
        let w = self.windows.entry(key.to_string()).or_insert((now, 0));
        if now.saturating_duration_since(w.0) >= MINUTE {
            *w = (now, 0);
        }
        w.1 = w.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_bucket_passes_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let rate = Rate::new(10, 5);
        let mut b = Bucket::full(rate, t0);
        assert_eq!((0..8).filter(|_| b.take(rate, t0)).count(), 5);
        // 100 ms at 10/s brings one token back.
        assert!(b.take(rate, t0 + Duration::from_millis(100)));
        assert!(!b.take(rate, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn floods_are_limited_per_source_and_trusted_peers_get_more() {
        let t0 = Instant::now();
        let limits = Limits {
            invites: Rate::new(1, 3),
            trusted_invites: Rate::new(100, 100),
            ..Limits::default()
        };
        let mut g = FloodGate::new(&limits, t0);
        let passed = (0..10)
            .filter(|_| g.admit(&limits, ip(1), false, true, t0) == Verdict::Pass)
            .count();
        assert_eq!(passed, 3, "the invite burst");
        // Another source is not affected; non-INVITE requests have their own bucket.
        assert_eq!(g.admit(&limits, ip(2), false, true, t0), Verdict::Pass);
        assert_eq!(g.admit(&limits, ip(1), false, false, t0), Verdict::Pass);
        let trusted = (0..50)
            .filter(|_| g.admit(&limits, ip(3), true, true, t0) == Verdict::Pass)
            .count();
        assert_eq!(trusted, 50);
    }

    #[test]
    fn a_spray_of_sources_cannot_grow_the_table_or_pass_unlimited() {
        let t0 = Instant::now();
        let limits = Limits {
            flood_sources: 16,
            invites: Rate::new(1, 2),
            ..Limits::default()
        };
        let mut g = FloodGate::new(&limits, t0);
        let passed = (0..10_000)
            .filter(|n| g.admit(&limits, ip(*n), false, true, t0) == Verdict::Pass)
            .count();
        assert_eq!(g.tracked(), 16);
        // The 16 tracked sources once each, then the overflow bucket's burst of 2 for all the
        // rest together.
        assert_eq!(passed, 16 + 2);
        // Once they are quiet, new sources are tracked again.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            g.admit(&limits, ip(99_999), false, true, later),
            Verdict::Pass
        );
        assert!(g.tracked() <= 16);
    }

    #[test]
    fn failures_are_counted_per_key_per_minute() {
        let t0 = Instant::now();
        let mut w = FailureWindows::new(2);
        for _ in 0..3 {
            w.add("src:10.0.0.1", t0);
        }
        assert!(w.over("src:10.0.0.1", 3, t0 + Duration::from_secs(59)));
        assert!(!w.over("src:10.0.0.1", 4, t0));
        assert!(!w.over("src:10.0.0.2", 1, t0), "keys are apart");
        // The next minute starts again.
        assert!(!w.over("src:10.0.0.1", 3, t0 + Duration::from_secs(60)));
        w.add("src:10.0.0.1", t0 + Duration::from_secs(61));
        assert!(!w.over("src:10.0.0.1", 2, t0 + Duration::from_secs(61)));
        // Bounded: a third key waits for the others' minutes to pass.
        w.add("b", t0);
        w.add("c", t0);
        assert!(!w.over("c", 1, t0));
        w.add("c", t0 + Duration::from_secs(120));
        assert!(w.over("c", 1, t0 + Duration::from_secs(120)));
    }

    #[test]
    fn limits_are_checked() {
        let mut errors = Vec::new();
        let f: LimitsFile = serde_saphyr::from_str(
            "calls: 0\ninvites: {per_second: 0, burst: 1}\ntcp_connections: 1\n",
        )
        .unwrap();
        f.check(&mut |k, m| errors.push(format!("{k}: {m}")));
        let all = errors.join("\n");
        assert!(all.contains("limits.calls: 0 is below 1"), "{all}");
        assert!(
            all.contains("limits.invites: per_second and burst"),
            "{all}"
        );
        assert!(
            all.contains("limits.tcp_connections_per_source: is above"),
            "{all}"
        );
        let mut none = Vec::new();
        let d = LimitsFile::default().check(&mut |k, m| none.push(format!("{k}: {m}")));
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(d, Limits::default());
    }
}
