//! The daemon's configuration: a YAML file (`b2bua serve --config FILE`), checked as a whole
//! before anything starts, with the key and line of every mistake.
//!
//! `b2bua.example.yaml` at the repository root documents every key and is also the embedded
//! demo configuration, so the documented file is the one the tests run.

pub use crate::access::AccessNumber;
use crate::routing::{CallerId, Gateway, Pattern, Proto, Route, Router, Target};
use crate::sip::transaction::Timers;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The demo configuration, which is also the documented example.
pub const DEMO_YAML: &str = include_str!("../../b2bua.example.yaml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    node_id: Option<String>,
    #[serde(default)]
    prompts: Option<String>,
    #[serde(default)]
    flows: Option<String>,
    #[serde(default)]
    tenant_prompts: Option<String>,
    sip: SipFile,
    #[serde(default)]
    trusted_peers: Vec<Spanned<String>>,
    #[serde(default)]
    access_numbers: Vec<AccessFile>,
    #[serde(default)]
    calls: CallsFile,
    #[serde(default)]
    store: StoreFile,
    #[serde(default)]
    media: MediaFile,
    #[serde(default)]
    gateways: Vec<GatewayFile>,
    #[serde(default)]
    routes: Vec<RouteFile>,
    #[serde(default)]
    radius: Option<RadiusFile>,
    #[serde(default)]
    admin: Option<AdminFile>,
    #[serde(default)]
    limits: crate::limits::LimitsFile,
    #[serde(default)]
    subscribers: Option<SubscribersFile>,
}

/// The `subscribers:` section: our registrar's domains and its rules.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribersFile {
    domains: Vec<Spanned<String>>,
    #[serde(default = "d_min_expires")]
    min_expires_s: u32,
    #[serde(default = "d_max_expires")]
    max_expires_s: u32,
    #[serde(default = "d_max_contacts")]
    max_contacts: usize,
    /// The longest registration granted over UDP to a client behind NAT (its Contact is not
    /// where its REGISTER came from): its re-registrations are its keep-alives.
    #[serde(default = "d_nat_expires")]
    nat_expires_s: u32,
    /// The most proxies a REGISTER's Path (RFC 3327) may name.
    #[serde(default = "d_max_path")]
    max_path: usize,
    #[serde(default = "d_nonce_lifetime")]
    nonce_lifetime_s: u64,
    #[serde(default)]
    nonce_secret: Option<Spanned<String>>,
    #[serde(default = "d_nonces_remembered")]
    nonces_remembered: usize,
    #[serde(default)]
    algorithms: Option<Vec<Spanned<String>>>,
    /// Dialling plans by tenant (`"*"`: every tenant without one of its own).
    #[serde(default)]
    numbering: std::collections::BTreeMap<String, PlanFile>,
    /// Short codes a subscriber dials for a flow instead of a number (`"*100": balance`).
    #[serde(default = "d_short_codes")]
    short_codes: std::collections::BTreeMap<String, String>,
    /// How long before a subscriber's money runs out it hears the warning (0: never).
    #[serde(default = "d_warning_s")]
    warning_s: u64,
    /// What it hears then: prompts of its tenant's set, played over the call.
    #[serde(default = "d_warning_prompts")]
    warning_prompts: Vec<String>,
    /// The rate deck each tenant prices calls *to* its subscribers with (`"*"`: every tenant
    /// without one of its own); a tenant with none takes them free.
    #[serde(default)]
    incoming_decks: std::collections::BTreeMap<String, String>,
}

fn d_warning_s() -> u64 {
    60
}

fn d_warning_prompts() -> Vec<String> {
    vec!["disconnect".into()]
}

fn d_short_codes() -> std::collections::BTreeMap<String, String> {
    [("*100".to_string(), "balance".to_string())].into()
}

/// One tenant's dialling plan (see [`crate::numbering::Plan`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    national_prefix: Option<String>,
    #[serde(default)]
    international_prefix: Option<String>,
    #[serde(default)]
    national_length: Option<usize>,
    #[serde(default)]
    premium: Option<Vec<String>>,
}

impl PlanFile {
    fn check(self, key: &str, err: &mut Report) -> crate::numbering::Plan {
        let at = |field: &str| format!("subscribers.numbering.{key}.{field}");
        let digits = |v: &str, max: usize| {
            !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_digit())
        };
        let mut plan = crate::numbering::Plan::default();
        if let Some(cc) = self.country_code {
            if !digits(&cc, 3) || cc.starts_with('0') {
                err(
                    0,
                    at("country_code"),
                    format!("{cc:?} is not a country code: 1 to 3 digits, not starting with 0"),
                );
            }
            plan.country_code = Some(cc);
        }
        if let Some(p) = self.national_prefix {
            if !digits(&p, 4) {
                err(
                    0,
                    at("national_prefix"),
                    format!("{p:?} is not a prefix: 1 to 4 digits"),
                );
            }
            if plan.country_code.is_none() {
                err(
                    0,
                    at("national_prefix"),
                    "needs country_code: a national number is read as one of that country".into(),
                );
            }
            plan.national_prefix = Some(p);
        }
        if let Some(p) = self.international_prefix {
            if !digits(&p, 4) {
                err(
                    0,
                    at("international_prefix"),
                    format!("{p:?} is not a prefix: 1 to 4 digits"),
                );
            }
            plan.international_prefix = p;
        }
        if let Some(n) = self.national_length {
            if !(4..=15).contains(&n) {
                err(
                    0,
                    at("national_length"),
                    format!("{n} is out of range: 4 to 15 digits"),
                );
            }
            if plan.country_code.is_none() {
                err(0, at("national_length"), "needs country_code".into());
            }
            plan.national_length = Some(n);
        }
        if let Some(list) = self.premium {
            for p in &list {
                if !digits(p, 15) {
                    err(
                        0,
                        at("premium"),
                        format!(
                            "{p:?} is not a number prefix: 1 to 15 digits, in international form"
                        ),
                    );
                }
            }
            plan.premium = list;
        }
        plan
    }
}

fn d_min_expires() -> u32 {
    60
}
fn d_max_expires() -> u32 {
    3600
}
fn d_nat_expires() -> u32 {
    // Home routers forget a silent UDP mapping after 30 s to a few minutes; a REGISTER a
    // minute keeps most open at one request per subscriber a minute.
    60
}
fn d_max_path() -> usize {
    // An edge proxy, perhaps a second one in front of it; more is a loop or a forgery.
    4
}
fn d_max_contacts() -> usize {
    5
}
fn d_nonce_lifetime() -> u64 {
    300
}
fn d_nonces_remembered() -> usize {
    100_000
}

/// Softphone subscribers: the SIP domains our registrar serves and how it treats their
/// REGISTERs (RFC 3261 §10.3).
#[derive(Debug, Clone)]
pub struct Subscribers {
    /// Our domains (each also its accounts' digest realm).
    pub domains: Vec<String>,
    /// The shortest registration we take (423 with Min-Expires below it).
    pub min_expires: u32,
    /// The longest we grant (longer asks are cut to it), and what a REGISTER without any
    /// expiry gets.
    pub max_expires: u32,
    /// Registered contacts per account at most.
    pub max_contacts: usize,
    /// The longest expiry a UDP client behind NAT is granted (its keep-alive).
    pub nat_expires: u32,
    /// The most proxies a REGISTER's Path may name (more: 400).
    pub max_path: usize,
    /// How long a challenge's nonce may be answered (then it is stale).
    pub nonce_lifetime: Duration,
    /// The key our nonces are sealed with: the same on every node behind one dispatcher
    /// (`nonce_secret`), or drawn at start for a single node.
    pub nonce_key: [u8; 32],
    /// Answered nonces remembered against replays, at most.
    pub nonces_remembered: usize,
    /// The digest algorithms our challenges offer, in order (both HA1s are always kept).
    pub algorithms: Vec<crate::sip::digest::Algorithm>,
    /// How each tenant's subscribers dial (national prefix, `+`, `00`, premium numbers).
    pub numbering: crate::numbering::Numbering,
    /// The flow each short code runs (its name in the flows directory): `*100` says the
    /// card's balance, by the same say grammar as the card service.
    pub short_codes: std::collections::BTreeMap<String, String>,
    /// How long before a subscriber's call is cut off for money it hears `warning_prompts`
    /// (seed 004's "automatic session cut-off", announced); `None`: no warning.
    pub warning: Option<Duration>,
    /// The prompts of the warning, from the subscriber's tenant's set.
    pub warning_prompts: Vec<String>,
    /// The rate deck each tenant prices calls to its subscribers with (`"*"`: the rest).
    pub incoming_decks: std::collections::BTreeMap<String, String>,
}

impl Subscribers {
    /// The deck calls to a tenant's subscribers are priced with; `None`: they are free.
    pub fn incoming_deck(&self, tenant: &str) -> Option<&str> {
        self.incoming_decks
            .get(tenant)
            .or_else(|| self.incoming_decks.get("*"))
            .map(String::as_str)
    }
}

impl SubscribersFile {
    fn check(self, err: &mut Report) -> Subscribers {
        if self.domains.is_empty() {
            err(
                0,
                "subscribers.domains".into(),
                "name at least one SIP domain".into(),
            );
        }
        for d in &self.domains {
            if let Err(e) = rating::store::check_sip_domain(&d.value) {
                err(
                    d.referenced.line(),
                    "subscribers.domains".into(),
                    e.to_string(),
                );
            }
        }
        if self.min_expires_s < 1 || self.min_expires_s > self.max_expires_s {
            err(
                0,
                "subscribers.min_expires_s".into(),
                format!(
                    "{} is out of range: 1 to subscribers.max_expires_s ({})",
                    self.min_expires_s, self.max_expires_s
                ),
            );
        }
        if self.max_expires_s > 86_400 {
            err(
                0,
                "subscribers.max_expires_s".into(),
                format!("{} is out of range: at most 86400", self.max_expires_s),
            );
        }
        if self.nat_expires_s < self.min_expires_s || self.nat_expires_s > self.max_expires_s {
            err(
                0,
                "subscribers.nat_expires_s".into(),
                format!(
                    "{} is out of range: subscribers.min_expires_s ({}) to max_expires_s ({})",
                    self.nat_expires_s, self.min_expires_s, self.max_expires_s
                ),
            );
        }
        if !(1..=16).contains(&self.max_path) {
            err(
                0,
                "subscribers.max_path".into(),
                format!("{} is out of range: 1 to 16", self.max_path),
            );
        }
        if !(1..=100).contains(&self.max_contacts) {
            err(
                0,
                "subscribers.max_contacts".into(),
                format!("{} is out of range: 1 to 100", self.max_contacts),
            );
        }
        if !(10..=3600).contains(&self.nonce_lifetime_s) {
            err(
                0,
                "subscribers.nonce_lifetime_s".into(),
                format!(
                    "{} is out of range: 10 to 3600 seconds",
                    self.nonce_lifetime_s
                ),
            );
        }
        if !(1000..=10_000_000).contains(&self.nonces_remembered) {
            err(
                0,
                "subscribers.nonces_remembered".into(),
                format!(
                    "{} is out of range: 1000 to 10000000",
                    self.nonces_remembered
                ),
            );
        }
        let nonce_key = match &self.nonce_secret {
            Some(s) if s.value.len() < 16 => {
                err(
                    s.referenced.line(),
                    "subscribers.nonce_secret".into(),
                    "at least 16 characters (every node behind one dispatcher shares it)".into(),
                );
                [0; 32]
            }
            Some(s) => {
                use sha2::Digest;
                sha2::Sha256::digest(s.value.as_bytes()).into()
            }
            None => rand::random(),
        };
        // MD5 alone unless the operator says otherwise: it is what every client answers.
        let mut algorithms = Vec::new();
        if self.algorithms.is_none() {
            algorithms.push(crate::sip::digest::Algorithm::Md5);
        }
        for a in self.algorithms.iter().flatten() {
            match a.value.to_ascii_uppercase().as_str() {
                "MD5" => algorithms.push(crate::sip::digest::Algorithm::Md5),
                "SHA-256" => algorithms.push(crate::sip::digest::Algorithm::Sha256),
                other => err(
                    a.referenced.line(),
                    "subscribers.algorithms".into(),
                    format!("`{other}` is not an algorithm we check: MD5 or SHA-256"),
                ),
            }
        }
        if self.algorithms.as_ref().is_some_and(Vec::is_empty) {
            err(
                0,
                "subscribers.algorithms".into(),
                "offer at least one: MD5 or SHA-256".into(),
            );
        }
        let mut numbering = crate::numbering::Numbering::default();
        for (key, plan) in self.numbering {
            let plan = plan.check(&key, err);
            if key == "*" {
                numbering.default = plan;
            } else {
                numbering.tenants.insert(key, plan);
            }
        }
        for code in self.short_codes.keys() {
            let ok = (2..=8).contains(&code.len())
                && code.starts_with('*')
                && code[1..].bytes().all(|b| b.is_ascii_digit());
            if !ok {
                err(
                    0,
                    "subscribers.short_codes".into(),
                    format!("{code:?} is not a short code: * and 1 to 7 digits (no number starts with *)"),
                );
            }
        }
        if self.warning_s > 0 && self.warning_prompts.is_empty() {
            err(
                0,
                "subscribers.warning_prompts".into(),
                "name at least one prompt, or set warning_s: 0 for no warning".into(),
            );
        }
        for (tenant, deck) in &self.incoming_decks {
            let ok = !deck.is_empty() && deck.len() <= 64 && !deck.chars().any(char::is_control);
            if !ok {
                err(
                    0,
                    format!("subscribers.incoming_decks.{tenant}"),
                    format!("{deck:?} is not a rate deck's name: 1 to 64 characters"),
                );
            }
        }
        Subscribers {
            incoming_decks: self.incoming_decks,
            warning: (self.warning_s > 0).then(|| Duration::from_secs(self.warning_s)),
            warning_prompts: self.warning_prompts,
            short_codes: self.short_codes,
            numbering,
            algorithms,
            domains: self.domains.into_iter().map(|d| d.value).collect(),
            min_expires: self.min_expires_s,
            max_expires: self.max_expires_s,
            max_contacts: self.max_contacts,
            nat_expires: self.nat_expires_s,
            max_path: self.max_path,
            nonce_lifetime: Duration::from_secs(self.nonce_lifetime_s),
            nonce_key,
            nonces_remembered: self.nonces_remembered,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    listen: Spanned<String>,
    #[serde(default)]
    tokens: Vec<TokenFile>,
    #[serde(default)]
    metrics_listen: Option<Spanned<String>>,
    #[serde(default)]
    metrics_token: Option<Spanned<String>>,
    #[serde(default)]
    secure_cookies: bool,
    #[serde(default = "d_session_minutes")]
    session_minutes: u64,
    #[serde(default)]
    itsp_minting: MintingFile,
}

fn d_session_minutes() -> u64 {
    8 * 60
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintingFile {
    #[serde(default = "d_mint_request")]
    per_request: Spanned<String>,
    #[serde(default = "d_mint_day")]
    per_day: Spanned<String>,
    #[serde(default)]
    tenants: std::collections::BTreeMap<String, TenantMintingFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantMintingFile {
    per_request: Spanned<String>,
    per_day: Spanned<String>,
}

impl Default for MintingFile {
    fn default() -> Self {
        MintingFile {
            per_request: d_mint_request(),
            per_day: d_mint_day(),
            tenants: Default::default(),
        }
    }
}

fn d_mint_request() -> Spanned<String> {
    spanned("1000")
}
fn d_mint_day() -> Spanned<String> {
    spanned("10000")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    name: Spanned<String>,
    role: Spanned<String>,
    token: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RadiusFile {
    #[serde(default)]
    server: Option<RadiusServerFile>,
    #[serde(default)]
    accounting: Option<RadiusAccountingFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RadiusAccountingFile {
    server: Spanned<String>,
    secret: Spanned<String>,
    #[serde(default)]
    gw_id: Option<String>,
    #[serde(default = "d_acct_retry_first_ms")]
    retry_first_ms: u64,
    #[serde(default = "d_acct_retry_max_ms")]
    retry_max_ms: u64,
    #[serde(default = "d_acct_window")]
    window: usize,
}

fn d_acct_retry_first_ms() -> u64 {
    2000
}
fn d_acct_retry_max_ms() -> u64 {
    30_000
}
fn d_acct_window() -> usize {
    64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RadiusServerFile {
    #[serde(default = "d_radius_auth")]
    auth: Spanned<String>,
    #[serde(default = "d_radius_acct")]
    acct: Spanned<String>,
    #[serde(default = "d_true")]
    require_message_authenticator: bool,
    clients: Vec<RadiusClientFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RadiusClientFile {
    address: Spanned<String>,
    secret: Spanned<String>,
    #[serde(default = "d_tenant")]
    tenant: String,
    #[serde(default)]
    all_tenants: bool,
}

/// An `IP:PORT` from the file (RADIUS and admin sockets take no host names).
fn socket_addr(s: &Spanned<String>) -> Result<SocketAddr, String> {
    s.value
        .parse()
        .map_err(|_| format!("`{}` is not IP:PORT", s.value))
}

/// A RADIUS shared secret: RFC 2865 wants one; longer than 128 characters is a paste error.
fn radius_secret(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    Ok(())
}

fn d_radius_auth() -> Spanned<String> {
    spanned("0.0.0.0:1812")
}
fn d_radius_acct() -> Spanned<String> {
    spanned("0.0.0.0:1813")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SipFile {
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    advertise: Option<Spanned<String>>,
    #[serde(default = "d_t1")]
    t1_ms: u64,
    #[serde(default = "d_t2")]
    t2_ms: u64,
    #[serde(default = "d_t4")]
    t4_ms: u64,
    #[serde(default)]
    tls: Option<ListenTlsFile>,
}

/// `sip.tls`: the certificate presented on `tls:` listen addresses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenTlsFile {
    cert: Spanned<String>,
    key: Spanned<String>,
}

/// `gateways[].tls`: how a carrier reached over TLS is checked, and what we show it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GatewayTlsFile {
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

fn d_t1() -> u64 {
    500
}
fn d_t2() -> u64 {
    4000
}
fn d_t4() -> u64 {
    5000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    number: Spanned<String>,
    #[serde(default)]
    flow: Option<String>,
    #[serde(default = "d_tenant")]
    tenant: String,
    #[serde(default = "d_languages")]
    languages: Vec<String>,
    #[serde(default = "d_true")]
    trust_ani: bool,
    #[serde(default = "d_true")]
    trusted_only: bool,
    #[serde(default)]
    pinless: bool,
    #[serde(default)]
    all_tenants: bool,
    #[serde(default)]
    subscriber: Option<String>,
}

impl AccessFile {
    /// The number as the store would keep it, so that one rule checks both.
    fn row(&self) -> rating::store::AccessRow {
        rating::store::AccessRow {
            number: self.number.value.clone(),
            tenant: self.tenant.clone(),
            flow: self.flow.clone(),
            languages: self.languages.clone(),
            trust_ani: self.trust_ani,
            trusted_only: self.trusted_only,
            pinless: self.pinless,
            all_tenants: self.all_tenants,
            subscriber: self.subscriber.clone(),
            updated_at: chrono::DateTime::UNIX_EPOCH,
            updated_by: "config".into(),
        }
    }
}

fn d_tenant() -> String {
    "default".into()
}
fn d_languages() -> Vec<String> {
    vec!["en".into()]
}
fn d_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallsFile {
    #[serde(default = "d_setup")]
    setup_timeout_ms: u64,
    #[serde(default = "d_ring")]
    ring_timeout_s: u64,
    #[serde(default = "d_max")]
    max_duration_s: u64,
    #[serde(default = "d_chunk")]
    hold_chunk_s: u64,
    #[serde(default = "d_grace")]
    hold_grace_s: u64,
    #[serde(default = "d_store_retry")]
    store_retry_s: u64,
    #[serde(default = "d_session_expires")]
    session_expires_s: u32,
    #[serde(default = "d_min_se")]
    min_se_s: u32,
    #[serde(default)]
    caller_100rel: bool,
}

/// The `store:` section: how the calls' money operations reach the database.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    #[serde(default = "d_true")]
    group_commit: bool,
    #[serde(default = "d_batch_max")]
    batch_max: usize,
    #[serde(default)]
    batch_delay_us: u64,
    #[serde(default = "d_writer_queue")]
    writer_queue: usize,
    #[serde(default = "d_writers")]
    writers: usize,
}

fn d_writers() -> usize {
    4
}
fn d_batch_max() -> usize {
    128
}
fn d_writer_queue() -> usize {
    10_000
}

impl Default for StoreFile {
    fn default() -> Self {
        StoreFile {
            group_commit: true,
            batch_max: d_batch_max(),
            batch_delay_us: 0,
            writer_queue: d_writer_queue(),
            writers: d_writers(),
        }
    }
}

/// How the store batches the calls' holds, connects, extensions and settlements (see
/// `rating::store::writer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTuning {
    /// One transaction per batch on one writer connection (off: one per operation).
    pub group_commit: bool,
    /// Operations in one batch at most.
    pub batch_max: usize,
    /// How long a batch that is not full waits for more.
    pub batch_delay: Duration,
    /// Operations waiting for the writer at most; beyond it they fail as busy.
    pub writer_queue: usize,
    /// Writer connections on PostgreSQL (SQLite always has one).
    pub writers: usize,
}

impl StoreFile {
    /// Batches of 1 to 10,000 operations, waiting at most 100 ms, with room to queue.
    fn check(&self, err: &mut Report) -> StoreTuning {
        if !(1..=10_000).contains(&self.batch_max) {
            err(
                0,
                "store.batch_max".into(),
                format!("{} is out of range: 1 to 10000", self.batch_max),
            );
        }
        if self.batch_delay_us > 100_000 {
            err(
                0,
                "store.batch_delay_us".into(),
                format!(
                    "{} is too long: at most 100000 (100 ms; every call waits this long)",
                    self.batch_delay_us
                ),
            );
        }
        if self.writer_queue < self.batch_max {
            err(
                0,
                "store.writer_queue".into(),
                format!(
                    "{} is below store.batch_max ({})",
                    self.writer_queue, self.batch_max
                ),
            );
        }
        if !(1..=64).contains(&self.writers) {
            err(
                0,
                "store.writers".into(),
                format!(
                    "{} is out of range: 1 to 64 (each is a database connection)",
                    self.writers
                ),
            );
        }
        StoreTuning {
            group_commit: self.group_commit,
            batch_max: self.batch_max,
            batch_delay: Duration::from_micros(self.batch_delay_us),
            writer_queue: self.writer_queue,
            writers: self.writers,
        }
    }
}

fn d_store_retry() -> u64 {
    30
}

fn d_chunk() -> u64 {
    300
}
fn d_grace() -> u64 {
    120
}

impl Default for CallsFile {
    fn default() -> Self {
        CallsFile {
            setup_timeout_ms: d_setup(),
            ring_timeout_s: d_ring(),
            max_duration_s: d_max(),
            hold_chunk_s: d_chunk(),
            hold_grace_s: d_grace(),
            store_retry_s: d_store_retry(),
            session_expires_s: d_session_expires(),
            min_se_s: d_min_se(),
            caller_100rel: false,
        }
    }
}

fn d_session_expires() -> u32 {
    1800
}
fn d_min_se() -> u32 {
    crate::sip::session_timer::MIN_SE_FLOOR
}

fn d_setup() -> u64 {
    3000
}
fn d_ring() -> u64 {
    60
}
fn d_max() -> u64 {
    4 * 3600
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaFile {
    #[serde(default = "d_media_bind")]
    bind: Spanned<String>,
    #[serde(default = "d_media_ports")]
    ports: Spanned<String>,
    #[serde(default = "d_inactivity")]
    inactivity_s: u64,
    #[serde(default = "d_long_pound")]
    long_pound_ms: u64,
    #[serde(default = "d_media_calls")]
    max_calls: usize,
    /// Relay worker threads; 0 (the default) is one per core.
    #[serde(default)]
    workers: usize,
    /// New calls are refused while every relay worker is busier than this (percent).
    #[serde(default = "d_media_load")]
    max_load_percent: u8,
}

fn d_media_load() -> u8 {
    85
}

impl Default for MediaFile {
    fn default() -> Self {
        MediaFile {
            bind: d_media_bind(),
            ports: d_media_ports(),
            inactivity_s: d_inactivity(),
            long_pound_ms: d_long_pound(),
            max_calls: d_media_calls(),
            workers: 0,
            max_load_percent: d_media_load(),
        }
    }
}

fn spanned(s: &str) -> Spanned<String> {
    Spanned {
        value: s.to_string(),
        referenced: serde_saphyr::Location::UNKNOWN,
        defined: serde_saphyr::Location::UNKNOWN,
    }
}
fn d_media_bind() -> Spanned<String> {
    spanned("127.0.0.1")
}
fn d_media_ports() -> Spanned<String> {
    spanned("30000-39999")
}
fn d_inactivity() -> u64 {
    60
}
fn d_long_pound() -> u64 {
    2000
}
fn d_media_calls() -> usize {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    name: Spanned<String>,
    address: Spanned<String>,
    #[serde(default)]
    transport: Proto,
    #[serde(default = "d_channels")]
    channels: u32,
    #[serde(default)]
    auth: Option<GatewayAuthFile>,
    #[serde(default)]
    ping_s: u64,
    #[serde(default = "d_ping_failures")]
    ping_failures: u32,
    #[serde(default)]
    register: Option<RegisterFile>,
    #[serde(default)]
    identity: IdentityFile,
    #[serde(default)]
    tls: Option<GatewayTlsFile>,
    #[serde(default)]
    srtp: bool,
}

/// `gateways[].identity`: how the caller is presented to that carrier (RFC 3325).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    #[serde(default)]
    pai: bool,
    #[serde(default)]
    from: FromFile,
    #[serde(default)]
    privacy: PrivacyFile,
}

#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum FromFile {
    #[default]
    Caller,
    Anonymous,
}

#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum PrivacyFile {
    #[default]
    Auto,
    Always,
}

fn d_ping_failures() -> u32 {
    3
}

/// `gateways[].register`: a trunk that takes our calls only while we are registered with it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterFile {
    #[serde(default = "d_register_expires")]
    expires_s: u32,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    contact_user: Option<String>,
    #[serde(default)]
    domain: Option<String>,
}

fn d_register_expires() -> u32 {
    3600
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayAuthFile {
    username: String,
    password: String,
    #[serde(default)]
    realm: Option<String>,
}

fn d_channels() -> u32 {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    name: String,
    #[serde(default)]
    patterns: Vec<Spanned<String>>,
    #[serde(default)]
    prefixes: Vec<Spanned<String>>,
    #[serde(default = "d_priority")]
    priority: u32,
    #[serde(default)]
    caller_id: CallerId,
    gateways: Vec<TargetFile>,
}

fn d_priority() -> u32 {
    100
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    gateway: Spanned<String>,
    #[serde(default)]
    strip: usize,
    #[serde(default)]
    prefix: String,
}

/// A listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// UDP or TCP.
    pub proto: Proto,
    /// Address and port.
    pub addr: SocketAddr,
}

/// An IP network (`10.0.0.0/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    len: u8,
}

impl Net {
    fn parse(s: &str) -> Result<Net, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{s}`: bad prefix length"))?,
            None => max,
        };
        Ok(Net { addr, len })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The store as a RADIUS AAA server for gateways (see `crate::radius`).
#[derive(Debug, Clone)]
pub struct RadiusServer {
    pub auth: SocketAddr,
    pub acct: SocketAddr,
    /// Drop Access-Requests without Message-Authenticator (BlastRADIUS, CVE-2024-3596).
    pub require_message_authenticator: bool,
    /// Clients by source address; anyone else is ignored.
    pub clients: Vec<RadiusClient>,
}

/// One gateway allowed to ask the AAA server.
#[derive(Debug, Clone)]
pub struct RadiusClient {
    pub address: IpAddr,
    pub secret: String,
    /// Whose cards it may authorize and bill.
    pub cards: rating::radius::aaa::Cards,
}

/// Our calls reported to an operator's RADIUS accounting server (see `crate::radius_acct`).
#[derive(Debug, Clone)]
pub struct RadiusAccounting {
    pub server: SocketAddr,
    pub secret: String,
    /// `h323-gw-id` and NAS-Identifier in every record (default: the node id).
    pub gw_id: Option<String>,
    /// The first resend after this, doubling up to `retry_max`; records are never given up.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// Records in flight at once (1 to 256: one RADIUS identifier each).
    pub window: usize,
}

/// What an admin API token may do (see `crate::admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    Finance,
    /// A retail ITSP: its own tenant's cards only.
    Itsp(String),
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "finance" => Ok(Role::Finance),
            _ => match s.strip_prefix("itsp:") {
                Some(t) if !t.is_empty() && t.len() <= 64 && !t.chars().any(char::is_control) => {
                    Ok(Role::Itsp(t.to_string()))
                }
                _ => Err(format!(
                    "`{s}` is not a role (admin, finance or itsp:<tenant>)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Finance => f.write_str("finance"),
            Role::Itsp(t) => write!(f, "itsp:{t}"),
        }
    }
}

/// The admin HTTP API: where it listens and who may use it.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// (name, role, bearer token). None configured: `serve` makes one admin token and prints it.
    pub tokens: Vec<(String, Role, String)>,
    /// Where `/metrics` is served: `None`, beside the API on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// A bearer token `/metrics` asks for; `None`: open to whoever reaches it.
    pub metrics_token: Option<String>,
    /// Mark the console's cookie `Secure` (served behind TLS).
    pub secure_cookies: bool,
    /// How long a console sign-in lasts.
    pub session: Duration,
    /// What an `itsp:` token may put on its tenant's cards.
    pub minting: Minting,
}

impl AdminConfig {
    /// The API on `listen` with the defaults for everything else: no tokens (the demo makes
    /// one), metrics beside the API without a token, cookies without `Secure`, 8-hour
    /// sign-ins, the default ITSP minting limits.
    pub fn new(listen: SocketAddr) -> AdminConfig {
        AdminConfig {
            listen,
            tokens: Vec::new(),
            metrics_listen: None,
            metrics_token: None,
            secure_cookies: false,
            session: Duration::from_secs(8 * 3600),
            minting: Minting::default(),
        }
    }
}

/// Limits on new money (card balances, top-ups) an ITSP's own token creates: per request and
/// per UTC day, per tenant; admins and finance are not limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minting {
    /// (per request, per day) for tenants not listed.
    pub default: (rating::Money, rating::Money),
    pub tenants: std::collections::BTreeMap<String, (rating::Money, rating::Money)>,
}

impl Minting {
    /// The (per request, per day) limits of a tenant.
    pub fn of(&self, tenant: &str) -> (rating::Money, rating::Money) {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }
}

impl Default for Minting {
    fn default() -> Self {
        let m = |s: &str| rating::Money::parse(s, false).unwrap_or(rating::Money::ZERO);
        Minting {
            default: (m("1000"), m("10000")),
            tenants: Default::default(),
        }
    }
}

/// Call-level timers.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// A gateway that has not answered at all within this is skipped.
    pub setup_timeout: Duration,
    /// A ringing destination that does not answer within this is given up.
    pub ring_timeout: Duration,
    /// No call lasts longer, whatever the credit.
    pub max_duration: Duration,
    /// Talk time held on the card at a time; a running call holds the next chunk before this
    /// one runs out.
    pub hold_chunk: Duration,
    /// How long a hold outlives its chunk when its node stops extending it (a crash): then any
    /// node's sweeper settles it. Nodes beat their heart more often than this.
    pub hold_grace: Duration,
    /// How long a settlement, a connect mark or a call's records that the database refused
    /// for a moment (busy, slow, briefly away) are retried; a stop waits for them this long.
    pub store_retry: Duration,
    /// Session timers (RFC 4028) on both legs.
    pub session: SessionTimers,
    /// Whether a caller that supports 100rel gets our 18x reliably (one that requires it
    /// always does).
    pub caller_100rel: bool,
}

/// How long our sessions live without a refresh (RFC 4028), so that a call whose BYE was lost
/// ends instead of running to its cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimers {
    /// The Session-Expires we ask for and the most we grant, in seconds; 0: no session timers.
    pub expires: u32,
    /// The shortest session we accept (Min-SE), in seconds; at least 90.
    pub min_se: u32,
}

impl SessionTimers {
    /// Whether we run session timers at all.
    pub fn enabled(&self) -> bool {
        self.expires > 0
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Database URL, if the file names one (else the command line's).
    pub database: Option<String>,
    /// Node id for reservations and the sweeper.
    pub node_id: Option<String>,
    /// The prompt-set directory (default: the shipped sets).
    pub prompts: std::path::PathBuf,
    /// The flow directory (default: the shipped flows).
    pub flows: std::path::PathBuf,
    /// Where ITSPs' uploaded prompt sets are kept (none: uploads are refused).
    pub tenant_prompts: Option<std::path::PathBuf>,
    /// Listening sockets.
    pub listen: Vec<Listen>,
    /// The certificate presented on `tls:` listen addresses.
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    /// Host and port put in our Via and Contact; by default the first listen address.
    pub advertise: Option<String>,
    /// RFC 3261 timer values.
    pub timers: Timers,
    /// Sources we accept calls from (where the access number asks for it).
    pub trusted_peers: Vec<Net>,
    /// The access numbers.
    pub access_numbers: Vec<AccessNumber>,
    /// Call timers.
    pub calls: CallLimits,
    /// How the store batches the calls' money.
    pub store: StoreTuning,
    /// RTP sockets and media timers.
    pub media: crate::media::engine::MediaConfig,
    /// Routes and gateways.
    pub router: Router,
    /// The RADIUS AAA server, when configured.
    pub radius_server: Option<RadiusServer>,
    /// The RADIUS accounting client, when configured.
    pub radius_accounting: Option<RadiusAccounting>,
    /// The admin HTTP API, when configured.
    pub admin: Option<AdminConfig>,
    /// Connection, rate and size limits at the edge.
    pub limits: crate::limits::Limits,
    /// Softphone subscribers' registrar, when configured.
    pub subscribers: Option<Subscribers>,
}

/// Every mistake found in a configuration file.
#[derive(Debug)]
pub struct ConfigError {
    /// The file (or `<demo>`).
    pub file: String,
    /// One line each: `line N: key: what is wrong`.
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ivr::flow::write_file_errors(f, &self.file, &self.errors)
    }
}

impl std::error::Error for ConfigError {}

fn parse_listen(s: &str) -> Result<Listen, String> {
    let (proto, addr) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected udp:ADDR:PORT, tcp:ADDR:PORT or tls:ADDR:PORT"))?;
    let proto = match proto.to_ascii_lowercase().as_str() {
        "udp" => Proto::Udp,
        "tcp" => Proto::Tcp,
        "tls" => Proto::Tls,
        _ => return Err(format!("`{s}`: transport must be udp, tcp or tls")),
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("`{s}`: `{addr}` is not ADDR:PORT (IPv6 as [::1]:5060)"))?;
    Ok(Listen { proto, addr })
}

/// Where a section's check reports a mistake: the line (0 when unknown), the key, the message.
type Report<'a> = dyn FnMut(u64, String, String) + 'a;

impl CallsFile {
    /// The `calls:` section: holds of at least two seconds.
    fn check(&self, err: &mut Report) -> CallLimits {
        for (key, secs) in [
            ("calls.hold_chunk_s", self.hold_chunk_s),
            ("calls.hold_grace_s", self.hold_grace_s),
            ("calls.store_retry_s", self.store_retry_s),
        ] {
            if secs < 2 {
                err(
                    0,
                    key.into(),
                    format!("{secs} is too short: at least 2 seconds"),
                );
            }
        }
        use crate::sip::session_timer::MIN_SE_FLOOR;
        if self.min_se_s < MIN_SE_FLOOR || self.min_se_s > 86_400 {
            err(
                0,
                "calls.min_se_s".into(),
                format!(
                    "{} is out of range: {MIN_SE_FLOOR} to 86400 seconds (RFC 4028 allows no less than 90)",
                    self.min_se_s
                ),
            );
        }
        if self.session_expires_s != 0
            && (self.session_expires_s < self.min_se_s || self.session_expires_s > 86_400)
        {
            err(
                0,
                "calls.session_expires_s".into(),
                format!(
                    "{} is out of range: 0 (no session timers) or calls.min_se_s ({}) to 86400 seconds",
                    self.session_expires_s, self.min_se_s
                ),
            );
        }
        CallLimits {
            session: SessionTimers {
                expires: self.session_expires_s,
                min_se: self.min_se_s,
            },
            setup_timeout: Duration::from_millis(self.setup_timeout_ms),
            ring_timeout: Duration::from_secs(self.ring_timeout_s),
            max_duration: Duration::from_secs(self.max_duration_s),
            hold_chunk: Duration::from_secs(self.hold_chunk_s),
            hold_grace: Duration::from_secs(self.hold_grace_s),
            store_retry: Duration::from_secs(self.store_retry_s),
            caller_100rel: self.caller_100rel,
        }
    }
}

impl SipFile {
    /// The `sip:` section: at least one listen address, and an advertised host that fits in a
    /// Via.
    fn check(&self, err: &mut Report) -> (Vec<Listen>, Timers, Option<Arc<rustls::ServerConfig>>) {
        let mut listen = Vec::new();
        for (i, l) in self.listen.iter().enumerate() {
            match parse_listen(&l.value) {
                Ok(x) => listen.push(x),
                Err(m) => err(l.referenced.line(), format!("sip.listen[{i}]"), m),
            }
        }
        if self.listen.is_empty() {
            err(
                0,
                "sip.listen".into(),
                "at least one address is needed".into(),
            );
        }
        if self.t1_ms == 0 || self.t2_ms < self.t1_ms || self.t4_ms == 0 {
            err(
                0,
                "sip.t1_ms".into(),
                "timers must satisfy 0 < t1_ms <= t2_ms and t4_ms > 0".into(),
            );
        }
        if let Some(a) = &self.advertise {
            if a.value.is_empty() || a.value.contains([' ', ';', '<', '>']) {
                err(
                    a.referenced.line(),
                    "sip.advertise".into(),
                    format!("`{}` is not HOST[:PORT]", a.value),
                );
            }
        }
        let timers = Timers {
            t1: Duration::from_millis(self.t1_ms),
            t2: Duration::from_millis(self.t2_ms),
            t4: Duration::from_millis(self.t4_ms),
        };
        let wants_tls = listen.iter().any(|l: &Listen| l.proto == Proto::Tls);
        let tls = match &self.tls {
            Some(t) => match crate::tls::server(t.cert.value.as_ref(), t.key.value.as_ref()) {
                Ok(c) => Some(c),
                Err(m) => {
                    err(t.cert.referenced.line(), "sip.tls".into(), m);
                    None
                }
            },
            None => {
                if wants_tls {
                    err(
                        0,
                        "sip.tls".into(),
                        "a tls: listen address needs sip.tls.cert and sip.tls.key".into(),
                    );
                }
                None
            }
        };
        (listen, timers, tls)
    }
}

/// `trusted_peers:`, each an address or a network.
fn check_trusted(peers: &[Spanned<String>], err: &mut Report) -> Vec<Net> {
    let mut trusted = Vec::new();
    for (i, t) in peers.iter().enumerate() {
        match Net::parse(&t.value) {
            Ok(n) => trusted.push(n),
            Err(m) => err(t.referenced.line(), format!("trusted_peers[{i}]"), m),
        }
    }
    trusted
}

/// `access_numbers:`, each by the same rule as the admin API's, none twice.
fn check_access(numbers: &[AccessFile], err: &mut Report) -> Vec<AccessNumber> {
    let mut access = Vec::new();
    for (i, a) in numbers.iter().enumerate() {
        let line = a.number.referenced.line();
        if access
            .iter()
            .any(|x: &AccessNumber| x.number == a.number.value)
        {
            err(
                line,
                format!("access_numbers[{i}].number"),
                format!("`{}` is listed twice", a.number.value),
            );
        }
        // The same rule as for the numbers the admin API keeps in the database.
        let row = a.row();
        for (field, why) in row.problems() {
            err(line, format!("access_numbers[{i}].{field}"), why);
        }
        access.push(AccessNumber::from(&row));
    }
    access
}

/// `gateways:`, each with a unique name, an address and at least one channel.
fn check_gateways(raw: &[GatewayFile], err: &mut Report) -> Vec<Gateway> {
    let mut gateways: Vec<Gateway> = Vec::new();
    for (i, g) in raw.iter().enumerate() {
        if gateways.iter().any(|x| x.name == g.name.value) {
            err(
                g.name.referenced.line(),
                format!("gateways[{i}].name"),
                format!("`{}` is listed twice", g.name.value),
            );
        }
        let addr = match g.address.value.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                err(
                    g.address.referenced.line(),
                    format!("gateways[{i}].address"),
                    format!("`{}` is not ADDR:PORT", g.address.value),
                );
                continue;
            }
        };
        if g.channels == 0 {
            err(
                g.name.referenced.line(),
                format!("gateways[{i}].channels"),
                "must be at least 1".into(),
            );
        }
        let auth = g.auth.as_ref().map(|a| crate::routing::GatewayAuth {
            username: a.username.clone(),
            password: a.password.clone(),
            realm: a.realm.clone(),
        });
        if let Some(a) = &auth {
            // Quoted into every Authorization header: printable, no line breaks.
            let bad = |s: &str| s.is_empty() || s.chars().any(char::is_control);
            if bad(&a.username) || bad(&a.password) || a.realm.as_deref().is_some_and(bad) {
                err(
                    g.name.referenced.line(),
                    format!("gateways[{i}].auth"),
                    "username, password and realm must be non-empty printable text".into(),
                );
            }
        }
        if g.ping_failures == 0 {
            err(
                g.name.referenced.line(),
                format!("gateways[{i}].ping_failures"),
                "must be at least 1".into(),
            );
        }
        let register = g.register.as_ref().map(|r| {
            let line = g.name.referenced.line();
            if !(60..=86_400).contains(&r.expires_s) {
                err(
                    line,
                    format!("gateways[{i}].register.expires_s"),
                    format!("{} is out of range: 60 to 86400 seconds", r.expires_s),
                );
            }
            // Each goes into a SIP URI unquoted.
            let uri_safe = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/:[]".contains(c))
            };
            for (field, value) in [
                ("user", &r.user),
                ("contact_user", &r.contact_user),
                ("domain", &r.domain),
            ] {
                if value.as_deref().is_some_and(|v| !uri_safe(v)) {
                    err(
                        line,
                        format!("gateways[{i}].register.{field}"),
                        "must be a non-empty SIP URI part (letters, digits, - _ . and the like)"
                            .into(),
                    );
                }
            }
            let user = r
                .user
                .clone()
                .or_else(|| auth.as_ref().map(|a| a.username.clone()))
                .or_else(|| r.contact_user.clone())
                .unwrap_or_else(|| "b2bua".into());
            crate::routing::GatewayRegister {
                expires: r.expires_s,
                contact_user: r.contact_user.clone().unwrap_or_else(|| user.clone()),
                domain: r.domain.clone().unwrap_or_else(|| addr.to_string()),
                user,
            }
        });
        let tls = check_gateway_tls(i, g, addr, err);
        if g.srtp && g.transport != Proto::Tls {
            err(
                g.name.referenced.line(),
                format!("gateways[{i}].srtp"),
                "needs transport: tls (the SRTP keys travel in the SDP)".into(),
            );
        }
        gateways.push(Gateway {
            name: g.name.value.clone(),
            addr,
            proto: g.transport,
            tls,
            srtp: g.srtp,
            channels: g.channels,
            auth,
            ping: (g.ping_s > 0).then(|| Duration::from_secs(g.ping_s)),
            ping_failures: g.ping_failures,
            register,
            identity: crate::sip::identity::Identity {
                pai: g.identity.pai,
                anonymous_from: g.identity.from == FromFile::Anonymous,
                always_private: g.identity.privacy == PrivacyFile::Always,
            },
        });
    }
    gateways
}

/// `gateways[i].tls`: for a TLS gateway, its trust roots (the system's unless `ca` is set),
/// the name its certificate must carry (its address unless `server_name` is set) and our
/// client certificate if it wants one; for any other transport, nothing may be set.
fn check_gateway_tls(
    i: usize,
    g: &GatewayFile,
    addr: SocketAddr,
    err: &mut Report,
) -> Option<crate::tls::Peer> {
    let line = g.name.referenced.line();
    let key = format!("gateways[{i}].tls");
    if g.transport != Proto::Tls {
        if g.tls.is_some() {
            err(line, key, "is set but the transport is not tls".into());
        }
        return None;
    }
    let none = GatewayTlsFile::default();
    let t = g.tls.as_ref().unwrap_or(&none);
    let name = t
        .server_name
        .clone()
        .unwrap_or_else(|| addr.ip().to_string());
    let name = match crate::tls::server_name(&name) {
        Ok(n) => n,
        Err(m) => {
            err(line, format!("{key}.server_name"), m);
            return None;
        }
    };
    let identity = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Some((Path::new(c), Path::new(k))),
        (None, None) => None,
        _ => {
            err(
                line,
                key,
                "a client certificate needs both cert and key".into(),
            );
            return None;
        }
    };
    match crate::tls::client(t.ca.as_deref().map(Path::new), identity) {
        Ok(config) => Some(crate::tls::Peer { config, name }),
        Err(m) => {
            err(line, key, m);
            None
        }
    }
}

/// `routes:`, each with patterns or prefixes and gateways that exist.
fn check_routes(raw: &[RouteFile], gateways: &[Gateway], err: &mut Report) -> Vec<Route> {
    let mut routes = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let mut patterns = Vec::new();
        for (j, p) in r.patterns.iter().enumerate() {
            match p.value.parse::<Pattern>() {
                Ok(p) => patterns.push(p),
                Err(m) => err(
                    p.referenced.line(),
                    format!("routes[{i}].patterns[{j}]"),
                    m.0,
                ),
            }
        }
        for (j, p) in r.prefixes.iter().enumerate() {
            let ok = !p.value.is_empty() && p.value.bytes().all(|b| b.is_ascii_digit());
            match Pattern::prefix(&p.value) {
                Ok(x) if ok => patterns.push(x),
                _ => err(
                    p.referenced.line(),
                    format!("routes[{i}].prefixes[{j}]"),
                    format!("`{}` must be digits", p.value),
                ),
            }
        }
        if r.patterns.is_empty() && r.prefixes.is_empty() {
            err(
                0,
                format!("routes[{i}] ({})", r.name),
                "needs patterns or prefixes".into(),
            );
        }
        let mut targets = Vec::new();
        for (j, t) in r.gateways.iter().enumerate() {
            match gateways.iter().position(|g| g.name == t.gateway.value) {
                Some(g) => targets.push(Target {
                    gateway: g,
                    strip: t.strip,
                    prefix: t.prefix.clone(),
                }),
                None => err(
                    t.gateway.referenced.line(),
                    format!("routes[{i}].gateways[{j}].gateway"),
                    format!("no gateway named `{}`", t.gateway.value),
                ),
            }
            if !t
                .prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#' || b == b'+')
            {
                err(
                    t.gateway.referenced.line(),
                    format!("routes[{i}].gateways[{j}].prefix"),
                    format!("`{}` must be digits", t.prefix),
                );
            }
        }
        if r.gateways.is_empty() {
            err(
                0,
                format!("routes[{i}] ({})", r.name),
                "needs at least one gateway".into(),
            );
        }
        routes.push(Route {
            name: r.name.clone(),
            patterns,
            priority: r.priority,
            targets,
            caller_id: r.caller_id,
        });
    }
    routes
}

impl MediaFile {
    /// The `media:` section: one address callers can reach and a port range with room.
    fn check(&self, err: &mut Report) -> crate::media::engine::MediaConfig {
        let media_bind = match self.bind.value.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ip,
            _ => {
                err(
                    self.bind.referenced.line(),
                    "media.bind".into(),
                    format!(
                        "`{}` must be one IP address the callers can reach",
                        self.bind.value
                    ),
                );
                IpAddr::from([127, 0, 0, 1])
            }
        };
        let ports = self.ports.value.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        });
        let ports = match ports {
            Some((a, b)) if a >= 1024 && b > a + 4 => (a, b),
            _ => {
                err(
                    self.ports.referenced.line(),
                    "media.ports".into(),
                    format!(
                        "`{}` must be MIN-MAX above 1023 with room for two calls",
                        self.ports.value
                    ),
                );
                (30000, 39999)
            }
        };
        if !(10..=100).contains(&self.max_load_percent) {
            err(
                0,
                "media.max_load_percent".into(),
                format!(
                    "{} is out of range: 10 to 100 (100 admits calls until the relay is saturated)",
                    self.max_load_percent
                ),
            );
        }
        if self.workers > 64 {
            err(
                0,
                "media.workers".into(),
                format!(
                    "{} relay threads: at most 64 (0 is one per core)",
                    self.workers
                ),
            );
        }
        if self.inactivity_s == 0 || self.long_pound_ms == 0 {
            err(
                0,
                "media".into(),
                "inactivity_s and long_pound_ms must be above zero".into(),
            );
        }
        crate::media::engine::MediaConfig {
            bind: media_bind,
            ports,
            inactivity: Duration::from_secs(self.inactivity_s),
            long_pound: Duration::from_millis(self.long_pound_ms),
            max_calls: self.max_calls,
            workers: self.workers.min(64),
            max_load_percent: self.max_load_percent.clamp(10, 100),
            ..Default::default()
        }
    }
}

impl AdminFile {
    /// The `admin:` section: listen addresses, tokens long enough and unique, a session length,
    /// the ITSPs' minting limits.
    fn check(self, err: &mut Report) -> AdminConfig {
        let listen = socket_addr(&self.listen).unwrap_or_else(|e| {
            err(self.listen.referenced.line(), "admin.listen".into(), e);
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let tokens = check_tokens(self.tokens, err);
        let metrics_listen = self.metrics_listen.as_ref().map(|m| {
            socket_addr(m).unwrap_or_else(|e| {
                err(m.referenced.line(), "admin.metrics_listen".into(), e);
                SocketAddr::from(([127, 0, 0, 1], 0))
            })
        });
        if let Some(t) = &self.metrics_token {
            if t.value.len() < 16 || t.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                err(
                    t.referenced.line(),
                    "admin.metrics_token".into(),
                    "must be at least 16 characters, without spaces".into(),
                );
            }
        }
        if self.session_minutes == 0 || self.session_minutes > 7 * 24 * 60 {
            err(
                0,
                "admin.session_minutes".into(),
                "must be 1 to 10080 (a week)".into(),
            );
        }
        let minting = self.itsp_minting.check(err);
        AdminConfig {
            listen,
            tokens,
            metrics_listen,
            metrics_token: self.metrics_token.map(|t| t.value),
            secure_cookies: self.secure_cookies,
            session: Duration::from_secs(self.session_minutes * 60),
            minting,
        }
    }
}

/// `admin.tokens`: each long enough, unique and named (the name is the audit log's actor).
fn check_tokens(raw: Vec<TokenFile>, err: &mut Report) -> Vec<(String, Role, String)> {
    let mut tokens = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let role = t.role.value.parse::<Role>().unwrap_or_else(|e| {
            err(
                t.role.referenced.line(),
                format!("admin.tokens[{i}].role"),
                e,
            );
            Role::Finance
        });
        if t.token.value.len() < 16
            || t.token
                .value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            err(
                t.token.referenced.line(),
                format!("admin.tokens[{i}].token"),
                "must be at least 16 characters, without spaces".into(),
            );
        }
        if tokens.iter().any(|(_, _, x)| *x == t.token.value) {
            err(
                t.token.referenced.line(),
                format!("admin.tokens[{i}].token"),
                "is the same as an earlier token".into(),
            );
        }
        if t.name.value.is_empty() {
            err(
                t.name.referenced.line(),
                format!("admin.tokens[{i}].name"),
                "must not be empty (it names the actor in the audit log)".into(),
            );
        }
        tokens.push((t.name.value, role, t.token.value));
    }
    tokens
}

impl MintingFile {
    /// `admin.itsp_minting`: the default and per-tenant allowances, each a positive amount.
    fn check(&self, err: &mut Report) -> Minting {
        let mut money = |s: &Spanned<String>, key: String| {
            rating::Money::parse_positive(&s.value).unwrap_or_else(|e| {
                err(s.referenced.line(), key, format!("`{}`: {e}", s.value));
                rating::Money::ZERO
            })
        };
        let m = self;
        let default = (
            money(&m.per_request, "admin.itsp_minting.per_request".into()),
            money(&m.per_day, "admin.itsp_minting.per_day".into()),
        );
        let tenants = m
            .tenants
            .iter()
            .map(|(t, l)| {
                let key = |f: &str| format!("admin.itsp_minting.tenants.{t}.{f}");
                (
                    t.clone(),
                    (
                        money(&l.per_request, key("per_request")),
                        money(&l.per_day, key("per_day")),
                    ),
                )
            })
            .collect();
        Minting { default, tenants }
    }
}

impl RadiusAccountingFile {
    /// `radius.accounting`: where our calls' records go, with a sound secret and retry plan.
    fn check(self, err: &mut Report) -> RadiusAccounting {
        let server = socket_addr(&self.server).unwrap_or_else(|e| {
            err(
                self.server.referenced.line(),
                "radius.accounting.server".into(),
                e,
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        if let Err(e) = radius_secret(&self.secret.value) {
            err(
                self.secret.referenced.line(),
                "radius.accounting.secret".into(),
                e,
            );
        }
        if self.retry_first_ms == 0
            || self.retry_max_ms < self.retry_first_ms
            || !(1..=256).contains(&self.window)
        {
            err(
                self.server.referenced.line(),
                "radius.accounting".into(),
                "retry_first_ms must be above zero and at most retry_max_ms; window 1 to 256"
                    .into(),
            );
        }
        RadiusAccounting {
            server,
            secret: self.secret.value,
            gw_id: self.gw_id,
            retry_first: Duration::from_millis(self.retry_first_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            window: self.window,
        }
    }
}

impl RadiusServerFile {
    /// `radius.server`: the AAA server's addresses and its clients with their secrets.
    fn check(&self, err: &mut Report) -> RadiusServer {
        let mut addr = |s: &Spanned<String>, key: &str| {
            socket_addr(s).unwrap_or_else(|e| {
                err(s.referenced.line(), format!("radius.server.{key}"), e);
                SocketAddr::from(([127, 0, 0, 1], 0))
            })
        };
        let auth = addr(&self.auth, "auth");
        let acct = addr(&self.acct, "acct");
        let mut clients = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            match c.address.value.parse::<IpAddr>() {
                Ok(ip) => clients.push(RadiusClient {
                    address: ip,
                    secret: c.secret.value.clone(),
                    cards: if c.all_tenants {
                        rating::radius::aaa::Cards::All
                    } else {
                        rating::radius::aaa::Cards::Tenant(c.tenant.clone())
                    },
                }),
                Err(_) => err(
                    c.address.referenced.line(),
                    format!("radius.server.clients[{i}].address"),
                    format!("`{}` is not an IP address", c.address.value),
                ),
            }
            if let Err(e) = radius_secret(&c.secret.value) {
                err(
                    c.secret.referenced.line(),
                    format!("radius.server.clients[{i}].secret"),
                    e,
                );
            }
        }
        RadiusServer {
            auth,
            acct,
            require_message_authenticator: self.require_message_authenticator,
            clients,
        }
    }
}

impl Config {
    /// Parses and validates a configuration; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let fail = |errors| ConfigError {
            file: file.to_string(),
            errors,
        };
        let raw: File =
            serde_saphyr::from_str(text).map_err(|e| fail(vec![ivr::flow::yaml_error(&e)]))?;
        let mut errors = Vec::new();
        let mut err =
            |line: u64, key: String, msg: String| errors.push(format!("{line}: {key}: {msg}"));

        let calls = raw.calls.check(&mut err);
        let store = raw.store.check(&mut err);
        let (listen, timers, tls_server) = raw.sip.check(&mut err);
        let trusted = check_trusted(&raw.trusted_peers, &mut err);
        let access = check_access(&raw.access_numbers, &mut err);
        let gateways = check_gateways(&raw.gateways, &mut err);
        let routes = check_routes(&raw.routes, &gateways, &mut err);
        let media = raw.media.check(&mut err);
        let admin = raw.admin.map(|a| a.check(&mut err));
        let (radius_server, radius_accounting) = match raw.radius {
            Some(r) => (r.server, r.accounting),
            None => (None, None),
        };
        let radius_accounting = radius_accounting.map(|a| a.check(&mut err));
        let radius_server = radius_server.map(|srv| srv.check(&mut err));
        let subscribers = raw.subscribers.map(|s| s.check(&mut err));
        // A DID that rings a subscriber of a domain no registrar here serves rings no one.
        for (i, a) in raw.access_numbers.iter().enumerate() {
            let Some((_, domain)) = a.subscriber.as_deref().and_then(|s| s.split_once('@')) else {
                continue;
            };
            if !subscribers
                .as_ref()
                .is_some_and(|s| s.domains.iter().any(|d| d == domain))
            {
                err(
                    a.number.referenced.line(),
                    format!("access_numbers[{i}].subscriber"),
                    format!(
                        "{domain} is not one of subscribers.domains: no phone of it registers here"
                    ),
                );
            }
        }
        let limits = raw.limits.check(&mut |key, msg| err(0, key, msg));
        if !errors.is_empty() {
            return Err(fail(errors));
        }
        Ok(Config {
            limits,
            subscribers,
            radius_server,
            radius_accounting,
            admin,
            database: raw.database,
            node_id: raw.node_id,
            prompts: raw
                .prompts
                .map(Into::into)
                .unwrap_or_else(|| prompts::set::default_dir().to_path_buf()),
            flows: raw
                .flows
                .map(Into::into)
                .unwrap_or_else(|| ivr::shipped_dir().to_path_buf()),
            tenant_prompts: raw.tenant_prompts.map(Into::into),
            listen,
            tls_server,
            advertise: raw.sip.advertise.map(|a| a.value),
            timers,
            trusted_peers: trusted,
            access_numbers: access,
            calls,
            store,
            router: Router { gateways, routes },
            media,
        })
    }

    /// Reads and validates a file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            errors: vec![format!("0: cannot read: {e}")],
        })?;
        Config::parse(&text, &name)
    }

    /// The embedded demo.
    pub fn demo() -> Config {
        Config::parse(DEMO_YAML, "b2bua.example.yaml")
            .expect("the shipped example configuration is valid")
    }

    /// Whether a source address is a trusted peer.
    pub fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_peers.iter().any(|n| n.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a configuration is refused with, as an operator reads it.
    fn refused(text: &str, file: &str) -> String {
        Config::parse(text, file).unwrap_err().to_string()
    }

    #[test]
    fn the_example_is_the_demo() {
        let c = Config::demo();
        assert!(c.listen.contains(&Listen {
            proto: Proto::Udp,
            addr: "127.0.0.1:5060".parse().unwrap()
        }));
        assert!(c.listen.contains(&Listen {
            proto: Proto::Tcp,
            addr: "127.0.0.1:5060".parse().unwrap()
        }));
        let access = crate::access::AccessTable::new(&c.access_numbers, &[]);
        let (a, rest) = access.lookup("55512015555233").unwrap();
        assert!(a.pinless);
        assert_eq!(rest, "5555233");
        assert_eq!(access.lookup("5551202").unwrap().0.languages.len(), 3);
        assert!(access.lookup("5551200").is_some_and(|(a, _)| !a.pinless));
        assert!(access.lookup("999").is_none());
        assert_eq!(c.router.candidates("5555233")[0].number, "5555233");
        assert!(c.trusted("127.0.0.1".parse().unwrap()));
        assert!(c.trusted("::1".parse().unwrap()));
        assert!(!c.trusted("10.1.1.1".parse().unwrap()));
    }

    #[test]
    fn subscriber_rules_are_checked_each_mistake_named() {
        let c = Config::parse(
            "sip:\n  listen: [udp:127.0.0.1:0]\nsubscribers:\n  domains: [voip.example.com]\n",
            "t.yaml",
        )
        .unwrap();
        let s = c.subscribers.expect("configured");
        assert_eq!(
            (
                s.min_expires,
                s.max_expires,
                s.max_contacts,
                s.nat_expires,
                s.max_path
            ),
            (60, 3600, 5, 60, 4)
        );
        assert_eq!(
            s.incoming_deck("acme"),
            None,
            "calls to subscribers are free"
        );
        let c = Config::parse(
            "sip:\n  listen: [udp:127.0.0.1:0]\nsubscribers:\n  domains: [voip.example.com]\n  incoming_decks: {acme: acme-in, \"*\": in}\n",
            "t.yaml",
        )
        .unwrap();
        let s = c.subscribers.unwrap();
        assert_eq!(s.incoming_deck("acme"), Some("acme-in"));
        assert_eq!(s.incoming_deck("other"), Some("in"), "the rest");
        assert!(
            Config::parse("sip:\n  listen: [udp:127.0.0.1:0]\n", "t.yaml")
                .unwrap()
                .subscribers
                .is_none(),
            "off unless configured"
        );
        assert_eq!(
            Config::demo().subscribers.unwrap().domains,
            ["demo.invalid"]
        );
        let e = refused("sip:\n  listen: [udp:127.0.0.1:0]\nsubscribers:\n  domains: [Bad_Domain]\n  min_expires_s: 7200\n  max_contacts: 0\n  nonce_lifetime_s: 5\n  nonce_secret: short\n  nonces_remembered: 1\n  nat_expires_s: 10\n  max_path: 0\n  incoming_decks: {acme: \"\"}\n", "t.yaml");
        for want in [
            "subscribers.domains: `Bad_Domain` is not a SIP domain",
            "subscribers.min_expires_s: 7200 is out of range",
            "subscribers.max_contacts: 0 is out of range",
            "subscribers.nonce_lifetime_s: 5 is out of range",
            "t.yaml:8: subscribers.nonce_secret: at least 16 characters",
            "subscribers.nonces_remembered: 1 is out of range",
            "subscribers.nat_expires_s: 10 is out of range",
            "subscribers.max_path: 0 is out of range",
            "subscribers.incoming_decks.acme: \"\" is not a rate deck's name",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = refused(
            "sip:\n  listen: [udp:127.0.0.1:0]\nsubscribers:\n  domains: []\n",
            "t.yaml",
        );
        assert!(e.contains("name at least one SIP domain"), "{e}");
    }

    #[test]
    fn a_did_rings_a_subscriber_of_one_of_our_domains_and_runs_no_flow() {
        let did = |entry: &str, domains: &str| {
            Config::parse(
                &format!(
                    "sip:\n  listen: [udp:127.0.0.1:0]\naccess_numbers:\n  - {entry}\n{domains}"
                ),
                "t.yaml",
            )
        };
        let ours = "subscribers:\n  domains: [voip.example.com]\n";
        let c = did(
            "{number: \"5559000\", subscriber: alice@voip.example.com}",
            ours,
        )
        .unwrap();
        assert_eq!(
            c.access_numbers[0].subscriber.as_deref(),
            Some("alice@voip.example.com")
        );
        assert_eq!(c.access_numbers[0].flow, None);
        for (entry, domains, want) in [
            (
                "{number: \"5559000\", subscriber: alice@elsewhere.example}",
                ours,
                "4: access_numbers[0].subscriber: elsewhere.example is not one of subscribers.domains",
            ),
            (
                "{number: \"5559000\", subscriber: alice@voip.example.com}",
                "",
                "not one of subscribers.domains",
            ),
            (
                "{number: \"5559000\", subscriber: alice@voip.example.com, flow: debitcard}",
                ours,
                "access_numbers[0].subscriber: a number that rings a subscriber is neither pinless nor runs a flow",
            ),
            (
                "{number: \"5559000\", subscriber: alice@voip.example.com, trusted_only: false, trust_ani: false}",
                ours,
                "needs trusted_only",
            ),
            (
                "{number: \"5559000\", subscriber: alice}",
                ours,
                "write it as user@domain",
            ),
        ] {
            let e = did(entry, domains).unwrap_err().to_string();
            assert!(e.contains(want), "{entry}: {e}");
        }
    }

    #[test]
    fn dialling_plans_are_read_per_tenant_and_their_mistakes_named() {
        let subscribers = |rest: &str| {
            let yaml = format!(
                "sip:\n  listen: [udp:127.0.0.1:0]\nsubscribers:\n  domains: [voip.example.com]\n{rest}"
            );
            Config::parse(&yaml, "t.yaml")
        };
        let refused = |rest: &str| subscribers(rest).unwrap_err().to_string();
        let c = subscribers("  numbering:\n    \"*\": {premium: [\"1900\"]}\n    itsp-uk: {country_code: \"44\", national_prefix: \"0\", premium: [\"449\"]}\n")
            .unwrap();
        let n = c.subscribers.unwrap().numbering;
        assert_eq!(n.default.premium, ["1900"]);
        let london = n.plan("itsp-uk").read("02079460000").unwrap();
        assert_eq!(london.number, "442079460000");
        assert_eq!(
            n.plan("elsewhere").read("02079460000").unwrap().number,
            "02079460000"
        );
        let e = refused("  numbering:\n    uk: {country_code: \"044\", international_prefix: \"+\", national_length: 99, premium: [\"+449\"]}\n");
        for want in [
            "subscribers.numbering.uk.country_code: \"044\" is not a country code",
            "subscribers.numbering.uk.international_prefix: \"+\" is not a prefix",
            "subscribers.numbering.uk.national_length: 99 is out of range",
            "subscribers.numbering.uk.premium: \"+449\" is not a number prefix",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = refused("  numbering:\n    us: {national_prefix: \"1\"}\n");
        assert!(
            e.contains("subscribers.numbering.us.national_prefix: needs country_code"),
            "{e}"
        );
        let e = refused("  numbering:\n    xx: {dial_tone: true}\n");
        assert!(e.contains("dial_tone"), "an unknown key is named: {e}");
        let e = refused("  short_codes: {\"100\": balance}\n");
        assert!(
            e.contains("subscribers.short_codes: \"100\" is not a short code"),
            "{e}"
        );
    }

    #[test]
    fn access_number_mistakes_are_named() {
        // Believing the caller's number from anywhere would let a caller pick the account.
        let e = refused("sip:\n  listen: [udp:127.0.0.1:0]\naccess_numbers:\n  - {number: \"1\", pinless: true, trusted_only: false}\n", "t.yaml");
        assert!(
            e.contains("t.yaml:4: access_numbers[0].trust_ani: trust_ani needs trusted_only"),
            "{e}"
        );
        // The configuration file's numbers meet the admin API's rule, every mistake named.
        let e = refused("sip:\n  listen: [udp:127.0.0.1:0]\naccess_numbers:\n  - {number: \"55a\", flow: debitcard, languages: [en, es, en], tenant: \"\"}\n  - {number: \"55a\", flow: debitcard}\n", "t.yaml");
        for want in [
            "t.yaml:4: access_numbers[0].number: `55a` is not an access number",
            "t.yaml:4: access_numbers[0].languages: language en is listed twice",
            "t.yaml:4: access_numbers[0].tenant: tenant must not be empty",
            "t.yaml:5: access_numbers[1].number: `55a` is listed twice",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let text = "sip:\n  listen: [udp:127.0.0.1:5060, sctp:1.2.3.4:5]\ngateways:\n  - name: gw\n    address: nowhere\nroutes:\n  - name: r\n    patterns: [\"15x\"]\n    gateways:\n      - gateway: gw9\n";
        let e = Config::parse(text, "t.yaml").unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("t.yaml:2: sip.listen[1]: `sctp:1.2.3.4:5`"),
            "{s}"
        );
        assert!(
            s.contains("t.yaml:5: gateways[0].address: `nowhere`"),
            "{s}"
        );
        assert!(s.contains("t.yaml:8: routes[0].patterns[0]"), "{s}");
        assert!(
            s.contains("t.yaml:10: routes[0].gateways[0].gateway: no gateway named `gw9`"),
            "{s}"
        );
        let e = refused(
            "sip:\n  listen: [udp:127.0.0.1:5060]\ncalls: {hold_chunk_s: 1, hold_grace_s: 0}\n",
            "h.yaml",
        );
        assert!(
            e.contains("calls.hold_chunk_s: 1 is too short: at least 2 seconds"),
            "{e}"
        );
        assert!(e.contains("calls.hold_grace_s: 0 is too short"), "{e}");
        let e = refused("sip:\n  listen: [udp:127.0.0.1:5060]\ncalls: {store_retry_s: 1}\nlimits: {store_queue: 0}\n", "s.yaml");
        assert!(e.contains("calls.store_retry_s: 1 is too short"), "{e}");
        assert!(e.contains("limits.store_queue: 0 is below 1"), "{e}");
        // Session timers: RFC 4028's floor, and a session no shorter than our own minimum.
        let e = refused("sip:\n  listen: [udp:127.0.0.1:5060]\ncalls: {min_se_s: 30, session_expires_s: 100000}\n", "s.yaml");
        assert!(e.contains("calls.min_se_s: 30 is out of range"), "{e}");
        assert!(
            e.contains("calls.session_expires_s: 100000 is out of range"),
            "{e}"
        );
        let off = Config::parse(
            "sip:\n  listen: [udp:127.0.0.1:5060]\ncalls: {session_expires_s: 0}\n",
            "s.yaml",
        )
        .expect("0 turns session timers off");
        assert!(!off.calls.session.enabled());
        // Relay threads: one per core by default, a number when told, never hundreds.
        let e = refused(
            "sip:\n  listen: [udp:127.0.0.1:5060]\nmedia: {workers: 65}\n",
            "m.yaml",
        );
        assert!(
            e.contains("media.workers: 65 relay threads: at most 64"),
            "{e}"
        );
        let two = Config::parse(
            "sip:\n  listen: [udp:127.0.0.1:5060]\nmedia: {workers: 2}\n",
            "m.yaml",
        )
        .unwrap();
        assert_eq!(two.media.workers, 2);
        // The store's batching: sizes and a delay every call would pay.
        let e = refused("sip:\n  listen: [udp:127.0.0.1:5060]\nstore: {batch_max: 0, batch_delay_us: 500000, writers: 0}\n", "b.yaml");
        assert!(e.contains("store.batch_max: 0 is out of range"), "{e}");
        assert!(
            e.contains("store.writers: 0 is out of range: 1 to 64"),
            "{e}"
        );
        assert!(
            e.contains("store.batch_delay_us: 500000 is too long"),
            "{e}"
        );
        let e = refused("sip:\n  listen: [udp:127.0.0.1:5060]\nstore: {batch_max: 500, writer_queue: 100, group_kommit: true}\n", "q.yaml");
        assert!(e.contains("unknown field `group_kommit`"), "{e}");
        let e = refused(
            "sip:\n  listen: [udp:127.0.0.1:5060]\nstore: {batch_max: 500, writer_queue: 100}\n",
            "q.yaml",
        );
        assert!(
            e.contains("store.writer_queue: 100 is below store.batch_max (500)"),
            "{e}"
        );
        let ok = Config::parse(
            "sip:\n  listen: [udp:127.0.0.1:5060]\nstore: {group_commit: false, batch_delay_us: 2000}\n",
            "o.yaml",
        )
        .unwrap();
        assert!(!ok.store.group_commit);
        assert_eq!(ok.store.batch_delay, Duration::from_millis(2));
        let e = refused("sip:\n  listen: []\n  colour: blue\n", "u.yaml");
        assert!(e.starts_with("u.yaml:2: unknown field `colour`"), "{e}");
        let e = refused("sip: [\n", "v.yaml");
        assert!(e.starts_with("v.yaml:"), "{e}");
        // The RADIUS server: addresses and secrets, each named.
        let text = "sip:\n  listen: [\"udp:127.0.0.1:0\"]\nradius:\n  server:\n    auth: localhost:1812\n    clients:\n      - address: 10.0.0.300\n        secret: \"\"\n";
        let e = refused(text, "r.yaml");
        assert!(
            e.contains("r.yaml:5: radius.server.auth: `localhost:1812` is not IP:PORT"),
            "{e}"
        );
        assert!(
            e.contains("r.yaml:7: radius.server.clients[0].address: `10.0.0.300`"),
            "{e}"
        );
        assert!(
            e.contains("r.yaml:8: radius.server.clients[0].secret: must be 1 to 128"),
            "{e}"
        );
        // The accounting client: its server, secret and retry settings.
        let text = "sip:\n  listen: [\"udp:127.0.0.1:0\"]\nradius:\n  accounting:\n    server: radius.example:1813\n    secret: \"\"\n    window: 0\n";
        let e = refused(text, "a.yaml");
        assert!(
            e.contains("a.yaml:5: radius.accounting.server: `radius.example:1813` is not IP:PORT"),
            "{e}"
        );
        assert!(
            e.contains("a.yaml:6: radius.accounting.secret: must be 1 to 128"),
            "{e}"
        );
        assert!(
            e.contains("a.yaml:5: radius.accounting: retry_first_ms"),
            "{e}"
        );
        let text = "sip:\n  listen: [\"udp:127.0.0.1:0\"]\nradius:\n  accounting: {server: \"127.0.0.1:1813\", secret: s, retries: 3}\n";
        let e = refused(text, "a.yaml");
        assert!(e.contains("retries"), "an unknown key is named: {e}");
        let text = "sip:\n  listen: [\"udp:127.0.0.1:0\"]\nradius:\n  accounting: {server: \"127.0.0.1:1813\", secret: s}\n";
        let a = Config::parse(text, "a.yaml")
            .unwrap()
            .radius_accounting
            .unwrap();
        assert_eq!(
            (a.retry_first.as_secs(), a.retry_max.as_secs(), a.window),
            (2, 30, 64)
        );
        assert!(Config::demo().radius_accounting.is_none());
        let demo = Config::demo()
            .radius_server
            .expect("the demo answers RADIUS");
        assert_eq!(demo.auth.to_string(), "127.0.0.1:1812");
        assert_eq!(demo.clients[0].secret, "testing123");
        assert!(
            demo.require_message_authenticator,
            "BlastRADIUS: required by default"
        );
    }

    #[test]
    fn the_sample_production_configuration_is_valid() {
        let c = Config::parse(include_str!("../dist/production.yaml"), "production.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.radius_accounting.is_some() && c.radius_server.is_some());
        let admin = c.admin.expect("an admin API");
        assert_eq!(admin.tokens.len(), 3);
        assert_eq!(admin.tokens[1].1, Role::Itsp("acme".into()));
        // Admin tokens: roles, lengths and duplicates are named.
        let text = "sip:\n  listen: [\"udp:127.0.0.1:0\"]\nadmin:\n  listen: 127.0.0.1:0\n  tokens:\n    - {name: a, role: boss, token: short}\n    - {name: b, role: \"itsp:\", token: 0123456789abcdef}\n    - {name: c, role: admin, token: 0123456789abcdef}\n";
        let e = refused(text, "t.yaml");
        let bad_admin = "sip:\n  listen: [\"udp:127.0.0.1:0\"]\nadmin:\n  listen: 127.0.0.1:0\n  metrics_listen: localhost:9100\n  metrics_token: short\n  session_minutes: 0\n  itsp_minting: {per_request: \"-5\", per_day: lots}\n";
        let m = refused(bad_admin, "m.yaml");
        for want in [
            "m.yaml:5: admin.metrics_listen: `localhost:9100` is not IP:PORT",
            "m.yaml:6: admin.metrics_token: must be at least 16",
            "admin.session_minutes: must be 1 to 10080",
            "m.yaml:8: admin.itsp_minting.per_request: `-5`",
            "m.yaml:8: admin.itsp_minting.per_day: `lots`",
        ] {
            assert!(m.contains(want), "{want} in {m}");
        }
        for want in [
            "t.yaml:6: admin.tokens[0].role: `boss` is not a role",
            "t.yaml:6: admin.tokens[0].token: must be at least 16",
            "t.yaml:7: admin.tokens[1].role: `itsp:` is not a role",
            "t.yaml:8: admin.tokens[2].token: is the same as an earlier token",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
    }

    #[test]
    fn networks() {
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.2.3.4".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(Net::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Net::parse("10.0.0.0/33").is_err());
        assert!(Net::parse("nope").is_err());
    }

    #[test]
    fn tls_settings_are_checked_when_the_configuration_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        let (cert, key) = (cert.display(), key.display());
        let listen = |tls: &str| {
            format!("sip:\n  listen: [\"udp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\n{tls}")
        };
        let ok = Config::parse(
            &listen(&format!("  tls: {{cert: \"{cert}\", key: \"{key}\"}}\n")),
            "a.yaml",
        )
        .unwrap();
        assert!(ok.tls_server.is_some());
        assert_eq!(ok.listen[1].proto, Proto::Tls);
        let e = refused(&listen(""), "b.yaml");
        assert!(e.contains("sip.tls: a tls: listen address needs"), "{e}");
        let e = Config::parse(
            &listen(&format!(
                "  tls: {{cert: \"{cert}\", key: /nonexistent/key.pem}}\n"
            )),
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/nonexistent/key.pem: cannot read a private key"),
            "{e}"
        );
        let gw = |rest: &str| {
            format!("sip:\n  listen: [\"udp:127.0.0.1:0\"]\ngateways:\n  - {{name: gw, address: \"127.0.0.1:5061\", {rest}}}\n")
        };
        let ok = Config::parse(
            &gw(&format!(
                "transport: tls, tls: {{server_name: carrier.example, ca: \"{cert}\"}}"
            )),
            "d.yaml",
        )
        .unwrap();
        let peer = ok.router.gateways[0].tls.as_ref().unwrap();
        assert_eq!(format!("{:?}", peer.name), "DnsName(\"carrier.example\")");
        // Without a name, the certificate must carry the gateway's address.
        let ok = Config::parse(
            &gw(&format!("transport: tls, tls: {{ca: \"{cert}\"}}")),
            "e.yaml",
        )
        .unwrap();
        let peer = ok.router.gateways[0].tls.as_ref().unwrap();
        assert!(
            matches!(peer.name, rustls::pki_types::ServerName::IpAddress(_)),
            "{peer:?}"
        );
        for (rest, wanted) in [
            (
                "tls: {server_name: x}",
                "gateways[0].tls: is set but the transport is not tls",
            ),
            (
                "transport: tls, tls: {server_name: \"a b\"}",
                "gateways[0].tls.server_name: `a b` is neither",
            ),
            (
                "transport: tls, tls: {cert: /x.pem}",
                "a client certificate needs both cert and key",
            ),
            (
                "transport: tls, tls: {ca: /nonexistent.pem}",
                "/nonexistent.pem: cannot read certificates",
            ),
            ("transport: tls, tls: {sni: x}", "unknown field"),
            ("srtp: true", "gateways[0].srtp: needs transport: tls"),
        ] {
            let e = refused(&gw(rest), "f.yaml");
            assert!(e.contains(wanted), "{rest}: {e}");
        }
    }

    #[test]
    fn gateway_credentials_are_checked_and_never_printed() {
        let base = "sip:\n  listen: [\"udp:127.0.0.1:0\"]\ngateways:\n  - {name: gw, address: \"127.0.0.1:5062\", ";
        let ok = Config::parse(
            &format!(
                "{base}auth: {{username: acme, password: s3cret, realm: carrier.example}}}}\n"
            ),
            "a.yaml",
        )
        .unwrap();
        let auth = ok.router.gateways[0].auth.as_ref().unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.realm.as_deref()),
            ("acme", Some("carrier.example"))
        );
        assert!(!format!("{ok:?}").contains("s3cret"));
        let e = refused(
            &format!("{base}auth: {{username: \"\", password: x}}}}\n"),
            "b.yaml",
        );
        assert!(
            e.contains("gateways[0].auth: username, password and realm must be"),
            "{e}"
        );
        let e = refused(&format!("{base}auth: {{username: a}}}}\n"), "c.yaml");
        assert!(e.contains("password"), "{e}");
        let e = refused(
            &format!("{base}auth: {{username: a, password: b, pass: c}}}}\n"),
            "d.yaml",
        );
        assert!(e.contains("unknown field `pass`"), "{e}");
        let e = refused(&format!("{base}ping_s: 5, ping_failures: 0}}\n"), "p.yaml");
        assert!(
            e.contains("gateways[0].ping_failures: must be at least 1"),
            "{e}"
        );
        // Registration: an expiry in range, URI parts that fit in a URI, sensible defaults.
        let e = refused(
            &format!("{base}register: {{expires_s: 10, contact_user: \"a b\"}}}}\n"),
            "r.yaml",
        );
        assert!(
            e.contains("gateways[0].register.expires_s: 10 is out of range"),
            "{e}"
        );
        assert!(
            e.contains("gateways[0].register.contact_user: must be"),
            "{e}"
        );
        let r = Config::parse(
            &format!("{base}auth: {{username: acme, password: x}}, register: {{}}}}\n"),
            "r.yaml",
        )
        .unwrap();
        let reg = r.router.gateways[0].register.clone().unwrap();
        assert_eq!(
            (reg.expires, reg.user.as_str(), reg.contact_user.as_str()),
            (3600, "acme", "acme")
        );
        assert_eq!(reg.domain, r.router.gateways[0].addr.to_string());
        let ok = Config::parse(&format!("{base}ping_s: 5}}\n"), "q.yaml").unwrap();
        let gw = &ok.router.gateways[0];
        assert_eq!(
            (gw.ping, gw.ping_failures),
            (Some(Duration::from_secs(5)), 3)
        );
    }

    #[test]
    fn a_gateways_identity_is_read_and_a_wrong_one_named() {
        use crate::sip::identity::Identity;
        let base = "sip:\n  listen: [\"udp:127.0.0.1:0\"]\ngateways:\n  - {name: gw, address: \"127.0.0.1:5062\", ";
        let plain = Config::parse(&format!("{base}}}\n"), "a.yaml").unwrap();
        assert_eq!(plain.router.gateways[0].identity, Identity::default());
        let ok = Config::parse(
            &format!("{base}identity: {{pai: true, from: anonymous, privacy: always}}}}\n"),
            "b.yaml",
        )
        .unwrap();
        assert_eq!(
            ok.router.gateways[0].identity,
            Identity {
                pai: true,
                anonymous_from: true,
                always_private: true
            }
        );
        for (bad, says) in [
            ("{from: nobody}", "nobody"),
            ("{privacy: never}", "never"),
            ("{pai: maybe}", "maybe"),
            ("{diversion: true}", "unknown field `diversion`"),
        ] {
            let e = refused(&format!("{base}identity: {bad}}}\n"), "c.yaml");
            assert!(e.contains(says) && e.contains("c.yaml"), "{bad}: {e}");
        }
    }
}
