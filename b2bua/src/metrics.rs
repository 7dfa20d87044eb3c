//! What an operator's Prometheus scrapes from `/metrics`: calls, IVR sessions, authorizations
//! by return code, cutoffs, RTP packets and loss, store latency and the RADIUS accounting
//! queue. One set per process (as Prometheus' own clients keep it), updated where the event
//! happens, so that counting never needs a lock or a round trip to the engine.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

/// An authorization's return code and who asked (`sip`: our own calls; `radius`: a gateway).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub source: &'static str,
    pub code: u8,
}

/// RTP counted per leg (`caller`, `gateway`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LegLabels {
    pub leg: &'static str,
}

/// Which configured limit was hit (`limits.*` keys, and `media_ports`, `rtp_*`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

/// Which way a TLS connection went: `inbound` (a peer connected to us) or `outbound` (to a
/// gateway).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

/// A gateway, by its configured name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabels {
    pub gateway: String,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    pub calls: Counter,
    pub calls_active: Gauge,
    pub ivr_sessions: Gauge,
    pub authorizations: Family<AuthLabels, Counter>,
    pub cutoffs: Counter,
    /// Calls ended because a leg's session timer ran out (RFC 4028: its BYE was lost, or the
    /// peer is gone).
    pub sessions_expired: Counter,
    pub rtp_packets: Family<LegLabels, Counter>,
    pub rtp_lost: Family<LegLabels, Counter>,
    pub store_seconds: Histogram,
    pub radius_queue: Gauge,
    pub limit_hits: Family<LimitLabels, Counter>,
    pub rtp_foreign: Counter,
    /// SRTP packets dropped: not authenticated, replayed, or a new SSRC beyond the limit.
    pub srtp_refused: Counter,
    /// RTP port pairs of our range that another process held when we bound them.
    pub rtp_port_conflicts: Counter,
    /// Store writes (settlements, connect marks, records) tried again after a transient failure.
    pub store_retries: Counter,
    /// TLS handshakes that failed (a certificate not trusted or not matching, no common
    /// protocol or cipher, a peer that is not TLS at all).
    pub tls_handshake_failures: Family<DirectionLabels, Counter>,
    /// 1 while a pinged gateway answers its OPTIONS, 0 while it is out of routing.
    pub gateways_up: Family<GatewayLabels, Gauge>,
    /// 1 while we are registered with a trunk that needs it, 0 while it is out of routing.
    pub gateways_registered: Family<GatewayLabels, Gauge>,
    /// The group-commit writers (see [`Metrics::store_writers`]).
    pub writer_queue: Gauge,
    pub writer_batches: Counter,
    pub writer_operations: Counter,
    pub writer_reruns: Counter,
    /// Serializes copying the writers' totals into the counters, so two scrapes at once
    /// cannot count the same batches twice.
    writer_sync: std::sync::Mutex<()>,
    /// When each limit was last logged (seconds since the process started), so a flood is one
    /// line every ten seconds and not one line per packet.
    logged: std::sync::Mutex<std::collections::HashMap<&'static str, u64>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut m = Metrics {
        registry: Registry::with_prefix("b2bua"),
        calls: Counter::default(),
        calls_active: Gauge::default(),
        ivr_sessions: Gauge::default(),
        authorizations: Family::default(),
        cutoffs: Counter::default(),
        sessions_expired: Counter::default(),
        rtp_packets: Family::default(),
        rtp_lost: Family::default(),
        // 0.5 ms to about 8 s.
        store_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0005, 2.0, 15,
        )),
        radius_queue: Gauge::default(),
        limit_hits: Family::default(),
        rtp_foreign: Counter::default(),
        srtp_refused: Counter::default(),
        rtp_port_conflicts: Counter::default(),
        store_retries: Counter::default(),
        tls_handshake_failures: Family::default(),
        gateways_up: Family::default(),
        gateways_registered: Family::default(),
        writer_queue: Gauge::default(),
        writer_batches: Counter::default(),
        writer_operations: Counter::default(),
        writer_reruns: Counter::default(),
        writer_sync: Default::default(),
        logged: Default::default(),
    };
    m.registry
        .register("calls", "Calls accepted for processing", m.calls.clone());
    m.registry
        .register("calls_active", "Calls in progress", m.calls_active.clone());
    m.registry.register(
        "ivr_sessions",
        "Calls talking to an IVR flow",
        m.ivr_sessions.clone(),
    );
    m.registry.register(
        "authorizations",
        "Authorizations by return code",
        m.authorizations.clone(),
    );
    m.registry.register(
        "cutoffs",
        "Calls cut off because the money ran out",
        m.cutoffs.clone(),
    );
    m.registry.register(
        "sessions_expired",
        "Calls ended because a leg's session timer ran out without a refresh",
        m.sessions_expired.clone(),
    );
    m.registry.register(
        "rtp_packets",
        "RTP packets received, per leg, of calls that ended",
        m.rtp_packets.clone(),
    );
    m.registry.register(
        "rtp_lost",
        "RTP packets lost, per leg, of calls that ended",
        m.rtp_lost.clone(),
    );
    m.registry.register(
        "store_seconds",
        "Time taken by each store operation of a call",
        m.store_seconds.clone(),
    );
    m.registry.register(
        "radius_accounting_queue",
        "Accounting records waiting for the RADIUS server",
        m.radius_queue.clone(),
    );
    m.registry.register(
        "limit_hits",
        "Requests, packets or connections refused because a configured limit was reached",
        m.limit_hits.clone(),
    );
    m.registry.register(
        "rtp_foreign",
        "RTP packets dropped because they came from an address that is not the leg's peer",
        m.rtp_foreign.clone(),
    );
    m.registry.register(
        "srtp_refused",
        "SRTP packets dropped because they did not authenticate, were replayed, or brought one SSRC too many",
        m.srtp_refused.clone(),
    );
    m.registry.register(
        "rtp_port_conflicts",
        "RTP port pairs in media.ports that another process held when a call bound them (rested, then tried again)",
        m.rtp_port_conflicts.clone(),
    );
    m.registry.register(
        "store_retries",
        "Settlements, connect marks and accounting records tried again after the database refused them for a moment",
        m.store_retries.clone(),
    );
    m.registry.register(
        "tls_handshake_failures",
        "TLS handshakes that failed, by direction (inbound: a peer connecting to us; outbound: to a gateway)",
        m.tls_handshake_failures.clone(),
    );
    m.registry.register(
        "gateway_up",
        "Whether a gateway with health pings answers them (1) or is out of routing (0)",
        m.gateways_up.clone(),
    );
    m.registry.register(
        "gateway_registered",
        "Whether we are registered with a trunk that needs it (1) or it is out of routing (0)",
        m.gateways_registered.clone(),
    );
    m.registry.register(
        "store_writer_queue",
        "Holds, connects, extensions and settlements waiting for the group-commit writers (queued or in a running batch)",
        m.writer_queue.clone(),
    );
    m.registry.register(
        "store_writer_transactions",
        "Transactions the group-commit writers committed",
        m.writer_batches.clone(),
    );
    m.registry.register(
        "store_writer_operations",
        "Operations on calls' money the group-commit writers answered (refusals included)",
        m.writer_operations.clone(),
    );
    m.registry.register(
        "store_writer_reruns",
        "Group-commit batches run again after a database error (one operation failing, or the database busy)",
        m.writer_reruns.clone(),
    );
    m
});

static STARTED: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// Counts an authorization answered with `code`.
    pub fn authorized(&self, source: &'static str, code: u8) {
        self.authorizations
            .get_or_create(&AuthLabels { source, code })
            .inc();
    }

    /// Records whether a pinged gateway is in routing.
    pub fn gateway_registered(&self, gateway: &str, registered: bool) {
        self.gateways_registered
            .get_or_create(&GatewayLabels {
                gateway: gateway.to_string(),
            })
            .set(i64::from(registered));
    }

    pub fn gateway_up(&self, gateway: &str, up: bool) {
        self.gateways_up
            .get_or_create(&GatewayLabels {
                gateway: gateway.to_string(),
            })
            .set(i64::from(up));
    }

    /// Counts a limit that bit, and logs it at most once every ten seconds per limit.
    pub fn limit_hit(&self, limit: &'static str) {
        let c = self.limit_hits.get_or_create(&LimitLabels { limit });
        c.inc();
        let now = STARTED.elapsed().as_secs() + 10;
        let mut logged = crate::sync::Lock::locked(&self.logged);
        let last = logged.entry(limit).or_insert(0);
        if now >= *last + 10 {
            *last = now;
            tracing::warn!(limit, total = c.get(), "limit reached");
        }
    }

    /// Counts a failed TLS handshake; the caller logs why.
    pub fn tls_handshake_failed(&self, direction: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    /// Copies what the store's group-commit writers did into the metrics (at each scrape:
    /// the store keeps plain counters and knows nothing of Prometheus).
    pub fn store_writers(&self, queue: usize, stats: Option<&rating::store::WriterStats>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.writer_queue.set(queue as i64);
        let Some(w) = stats else { return };
        let _one = crate::sync::Lock::locked(&self.writer_sync);
        for (counter, total) in [
            (&self.writer_batches, w.batches.load(Relaxed)),
            (&self.writer_operations, w.operations.load(Relaxed)),
            (&self.writer_reruns, w.reruns.load(Relaxed)),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
