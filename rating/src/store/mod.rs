//! The balance store: cards, their ledger, rate decks and call records in SQLite (the embedded
//! default) or PostgreSQL (several B2BUA nodes on one database), through one set of queries on
//! sqlx's `Any` driver. Concurrency rests on the database, never on an in-process lock: every
//! money movement is a conditional `UPDATE` inside a transaction whose first statement writes,
//! so SQLite serializes it and PostgreSQL row-locks it, whichever process runs it.

mod access;
mod audit;
mod authorize;
mod batches;
mod decks;
mod exec;
mod ops;
mod outbox;
mod registrations;
mod reports;
mod sip;
mod sip_calls;
mod writer;

pub use access::{check_number as check_access_number, AccessRow};
pub use audit::{Allowance, AuditEntry};
pub use authorize::{
    AccountAnswer, AuthRequest, CallAnswer, CallEnd, CallRequest, Extension, OpenReservation,
    Quote, RateInfo, Reservation, Settlement, SweepReport,
};
pub use batches::{check_batch_id, BatchCard, BatchSummary, NewBatch};
pub use decks::ImportSummary;
pub use outbox::Queued;
pub use registrations::{in_order, BindingChange, RegisterRefusal, Registered, Registration};
pub use reports::{
    by_period, day_date, day_number, CallTotals, Dimension, MoneyTotals, Period, ReportRange,
    MAX_REPORT_DAYS, ROLL_UP_MARGIN,
};
pub use sip::{
    check_domain as check_sip_domain, check_password as check_sip_password,
    check_username as check_sip_username, random_password, Binding, DigestAlgorithm, NewSipAccount,
    SipAccount, SipStatus,
};
pub use sip_calls::CallSlot;
pub use writer::WriterStats;

use crate::codes::ReturnCode;
use crate::deck::{Deck, PrefixSet};
use crate::money::Money;
use crate::pin;
use crate::rules::{self, CardPolicy, CardStatus};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How the store behaves; the defaults suit the demo and most single-site installs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This process's name in reservations; the sweeper settles what a silent node left.
    pub node_id: String,
    /// Talk time reserved at a time (a running call extends by another chunk).
    pub chunk_seconds: u64,
    /// How long past its granted talk time a reservation lives without being extended.
    pub reservation_grace: Duration,
    /// Wrong PINs (per card) or failed attempts (per calling number) tolerated in the window.
    pub max_auth_failures: u32,
    pub failure_window: Duration,
    /// How long a calling number stays locked out once it reached `max_auth_failures`.
    pub ani_lockout: Duration,
    pub card_policy: CardPolicy,
    /// How often a node looks for a re-imported rate deck.
    pub deck_refresh: Duration,
    pub max_connections: u32,
    /// Whether the sweeper queues the RADIUS Stop records of the calls it settles (a node
    /// that died wrote none). On when this node sends accounting.
    pub account_swept_calls: bool,
    /// Give up on the database after this long: authorization then fails closed (8).
    pub acquire_timeout: Duration,
    /// Apply the calls' holds, connects, extensions and settlements in batches, one
    /// transaction per batch, on one writer connection (see `writer`). Off: one transaction
    /// per operation on the pool.
    pub group_commit: bool,
    /// Operations in one batch at most.
    pub batch_max: usize,
    /// How long a batch that is not full waits for more (zero: it closes when nothing waits).
    pub batch_delay: Duration,
    /// Operations waiting for the writer at most; past it an operation fails as busy.
    pub writer_queue: usize,
    /// Writers on PostgreSQL, each its own connection, accounts split among them (SQLite has
    /// one: its file has one write lock).
    pub writers: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            node_id: format!("node-{}", hex::encode(rand::random::<[u8; 4]>())),
            chunk_seconds: 300,
            reservation_grace: Duration::from_secs(120),
            max_auth_failures: 5,
            failure_window: Duration::from_secs(900),
            ani_lockout: Duration::from_secs(900),
            card_policy: CardPolicy::default(),
            deck_refresh: Duration::from_secs(1),
            max_connections: 8,
            account_swept_calls: false,
            acquire_timeout: Duration::from_secs(5),
            group_commit: true,
            batch_max: 128,
            batch_delay: Duration::ZERO,
            writer_queue: 10_000,
            writers: 4,
        }
    }
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What a store operation can fail with. Authorization never returns these: it answers
/// return code 8 instead (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no account {0}")]
    NoAccount(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no reservation {0}")]
    NoReservation(String),
    #[error("no batch {0}")]
    NoBatch(String),
    /// An ITSP's daily allowance for new money would be passed.
    #[error("{0}")]
    OverAllowance(String),
    #[error("unsupported database URL '{0}' (use sqlite://FILE or postgres://…)")]
    UnsupportedUrl(String),
    /// The group-commit writer's own SQLite connection failed.
    #[error("database: {message}")]
    Native { message: String, transient: bool },
    /// Too much waiting for the database already; worth trying again shortly.
    #[error("balance store busy: {0}")]
    Busy(String),
    /// The store was closed.
    #[error("the balance store is closed")]
    Closed,
}

impl StoreError {
    /// Whether trying the same operation again a moment later may succeed: the database was
    /// there but busy, slow or briefly unreachable (a pool timeout under load, SQLite's
    /// busy/locked, a PostgreSQL serialization failure, deadlock or dropped connection). Only
    /// idempotent operations are retried on this (settlement, connect, accounting records).
    pub fn is_transient(&self) -> bool {
        let e = match self {
            StoreError::Database(e) => e,
            StoreError::Native { transient, .. } => return *transient,
            StoreError::Busy(_) => return true,
            _ => return false,
        };
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // SQLite: 5 BUSY, 6 LOCKED (extended codes keep these in their low byte).
                let sqlite = code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
                // PostgreSQL: serialization failure, deadlock, connection exceptions, too many
                // connections, the server shutting down.
                let pg = matches!(&*code, "40001" | "40P01" | "53300" | "57P01" | "57P03")
                    || code.starts_with("08");
                sqlite || pg
            }
            _ => false,
        }
    }
}

impl StoreError {
    /// Whether the database itself failed (as opposed to an answer about the data).
    pub fn is_database(&self) -> bool {
        matches!(self, StoreError::Database(_) | StoreError::Native { .. })
    }
}

/// A card as finance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub account: String,
    pub status: CardStatus,
    pub pinless: bool,
    pub tollfree_only: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub currency: String,
    pub balance: Money,
    pub reserved: Money,
    pub credit_limit: Money,
    pub active_calls: i64,
    pub max_calls: i64,
    pub language: String,
    pub tenant: String,
    /// Usable on every tenant's access numbers, not only its own tenant's.
    pub any_tenant: bool,
    pub rate_deck: String,
    pub created_at: DateTime<Utc>,
    /// Where this card's calls go instead (51: every call to this number; 52: customer service).
    pub redirect: Option<Redirect>,
}

/// One RADIUS accounting record as received from a client, with what the store did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountingRecord {
    pub conf_id: String,
    /// `h323-call-origin`: `answer` (the caller's leg) or `originate` (the billed leg).
    pub leg: String,
    /// `start`, `stop` or `interim:<session seconds>`.
    pub status: String,
    pub client: String,
    pub account: String,
    pub received_at: DateTime<Utc>,
    pub attributes: String,
    pub outcome: String,
}

/// A card sent elsewhere instead of being authorized normally (return codes 51 and 52).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `RedirectCalledParty` (51) or `RedirectCustomerService` (52).
    pub code: ReturnCode,
    pub number: String,
}

impl Account {
    /// Spendable now: balance plus credit limit, less what running calls hold.
    pub fn available(&self) -> Money {
        self.state().available()
    }

    fn state(&self) -> rules::AccountState {
        rules::AccountState {
            status: self.status,
            expires_at: self.expires_at.map(|t| t.timestamp_millis()),
            balance: self.balance,
            reserved: self.reserved,
            credit_limit: self.credit_limit,
            active_calls: self.active_calls,
            max_calls: self.max_calls,
        }
    }
}

/// A card to create.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub account: String,
    /// `None` only for PIN-less cards (authorized by calling number).
    pub pin: Option<String>,
    pub balance: Money,
    pub currency: String,
    pub language: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_calls: i64,
    pub credit_limit: Money,
    pub tenant: String,
    /// Usable on every tenant's access numbers (off: only on its own tenant's).
    pub any_tenant: bool,
    pub rate_deck: String,
    pub pinless: bool,
    pub tollfree_only: bool,
}

impl NewAccount {
    /// A card with the usual defaults: USD, English, one call at a time, tenant `default`.
    pub fn new(account: &str, pin: Option<&str>, balance: Money) -> NewAccount {
        NewAccount {
            account: account.to_string(),
            pin: pin.map(str::to_string),
            balance,
            currency: "USD".into(),
            language: "en".into(),
            expires_at: None,
            max_calls: 1,
            credit_limit: Money::ZERO,
            tenant: "default".into(),
            any_tenant: false,
            rate_deck: "default".into(),
            pinless: false,
            tollfree_only: false,
        }
    }
}

/// Kinds of ledger rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    TopUp,
    Call,
    Adjustment,
    Refund,
}

impl LedgerKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::TopUp => "topup",
            LedgerKind::Call => "call",
            LedgerKind::Adjustment => "adjustment",
            LedgerKind::Refund => "refund",
        }
    }
}

/// One money movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub account: String,
    pub kind: String,
    pub amount: Money,
    pub balance_after: Money,
    pub reference: String,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

/// The outcome of an idempotent posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posting {
    /// The money moved now.
    Applied(LedgerEntry),
    /// This reference was posted before; nothing changed. The original row is returned.
    AlreadyApplied(LedgerEntry),
}

/// One call or failed attempt, as written at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub conf_id: String,
    pub session_id: String,
    pub account: String,
    pub ani: String,
    pub access_number: String,
    pub destination: String,
    pub setup_at: DateTime<Utc>,
    pub connect_at: Option<DateTime<Utc>>,
    pub disconnect_at: Option<DateTime<Utc>>,
    pub billed_seconds: i64,
    pub cost: Money,
    pub currency: String,
    pub deck: String,
    pub rate_prefix: String,
    pub rate_description: String,
    pub disconnect_cause: String,
    /// ICPIF-style voice quality of the caller's leg (lower is better), when known.
    pub voice_quality: Option<i64>,
    pub return_code: u8,
    pub node: String,
    /// The gateway that carried it (the last one tried); empty when none was.
    pub gateway: String,
}

/// Which records to list.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub account: Option<String>,
    pub session_id: Option<String>,
    pub limit: Option<i64>,
}

/// What `ledger check` found.
#[derive(Debug, Clone, Default)]
pub struct LedgerReport {
    pub accounts: u64,
    pub entries: u64,
    pub reservations: u64,
    pub problems: Vec<String>,
}

pub(crate) struct Cached<T> {
    value: Arc<T>,
    version: i64,
    checked_at: i64,
}

pub(crate) struct Lists {
    pub blocked: PrefixSet,
    pub tollfree: PrefixSet,
}

/// The balance store. Cheap to share behind an `Arc`; every method is safe to call from many
/// tasks and from several processes on one database.
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    cfg: StoreConfig,
    site_key: Vec<u8>,
    decks: RwLock<HashMap<String, Cached<Deck>>>,
    lists: RwLock<Option<Cached<Lists>>>,
    /// The group-commit writers (none when `group_commit` is off or the database is in memory).
    writer: Option<writer::Lanes>,
    params: ops::Params,
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn at_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

const ACCOUNT_COLUMNS: &str =
    "id, account, pin_salt, pin_hash, pinless, status, expires_at, currency, \
     balance, reserved, credit_limit, active_calls, max_calls, language, tenant, rate_deck, \
     tollfree_only, created_at, redirect_code, redirect_number, any_tenant, pin_failures";

/// An account row with its internals (id, PIN material), for the store's own use.
#[derive(Clone)]
pub(crate) struct AccountRow {
    pub id: i64,
    pub pin_salt: String,
    pub pin_hash: String,
    /// Wrong PINs since the last good one, as read (the count that decides is taken under
    /// the row's lock).
    pub pin_failures: i64,
    pub account: Account,
}

impl AccountRow {
    fn from_row(r: &AnyRow) -> Result<AccountRow, sqlx::Error> {
        Ok(AccountRow {
            id: r.try_get("id")?,
            pin_salt: r.try_get("pin_salt")?,
            pin_hash: r.try_get("pin_hash")?,
            pin_failures: r.try_get("pin_failures")?,
            account: Account {
                account: r.try_get("account")?,
                status: CardStatus::parse(&r.try_get::<String, _>("status")?),
                pinless: r.try_get::<i64, _>("pinless")? != 0,
                tollfree_only: r.try_get::<i64, _>("tollfree_only")? != 0,
                expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(at_ms),
                currency: r.try_get("currency")?,
                balance: Money::from_micros(r.try_get("balance")?),
                reserved: Money::from_micros(r.try_get("reserved")?),
                credit_limit: Money::from_micros(r.try_get("credit_limit")?),
                active_calls: r.try_get("active_calls")?,
                max_calls: r.try_get("max_calls")?,
                language: r.try_get("language")?,
                tenant: r.try_get("tenant")?,
                any_tenant: r.try_get::<i64, _>("any_tenant")? != 0,
                rate_deck: r.try_get("rate_deck")?,
                created_at: at_ms(r.try_get("created_at")?),
                redirect: match (
                    r.try_get::<Option<i64>, _>("redirect_code")?,
                    r.try_get::<Option<String>, _>("redirect_number")?,
                ) {
                    (Some(c), Some(number)) => u8::try_from(c)
                        .ok()
                        .and_then(ReturnCode::from_code)
                        .map(|code| Redirect { code, number }),
                    _ => None,
                },
            },
        })
    }
}

fn is_kind(e: &sqlx::Error, kind: sqlx::error::ErrorKind) -> bool {
    e.as_database_error().is_some_and(|d| d.kind() == kind)
}

/// A short free-text field from staff (reference, note, tenant): printable, bounded.
fn check_text(what: &str, s: &str, required: bool, max: usize) -> Result<(), StoreError> {
    if required && s.trim().is_empty() {
        return Err(StoreError::Invalid(format!("{what} must not be empty")));
    }
    if s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "{what} must be at most {max} printable characters"
        )));
    }
    Ok(())
}

/// How every SQLite connection of ours is set up, the pool's and the group-commit writer's.
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

/// The file behind a `sqlite:` URL (none for an in-memory database).
fn sqlite_file(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:") && !url.contains("mode=memory"))
        .then(|| path.to_string())
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`.
    pub async fn open(url: &str, cfg: StoreConfig) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let sep = if rest.contains('?') { '&' } else { '?' };
            let url = if rest.contains("mode=") || rest.contains(":memory:") {
                url.to_string()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; NORMAL sync is durable
                        // against process crashes, and a lost OS crash costs the last commits only.
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("../schema/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("../schema/postgres").run(&pool).await?,
        }
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('pin_key', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(hex::encode(rand::random::<[u8; 32]>()))
        .execute(&pool)
        .await?;
        let key: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = 'pin_key'")
            .fetch_one(&pool)
            .await?;
        let params = ops::Params {
            node_id: cfg.node_id.clone(),
            chunk_seconds: cfg.chunk_seconds,
            grace_ms: cfg.reservation_grace.as_millis() as i64,
        };
        let batching = writer::Batching {
            max: cfg.batch_max,
            delay: cfg.batch_delay,
            queue: cfg.writer_queue,
        };
        let writer = match (cfg.group_commit, backend, sqlite_file(&url)) {
            (false, _, _) | (true, Backend::Sqlite, None) => None,
            (true, Backend::Sqlite, Some(path)) => {
                Some(writer::Lanes::sqlite(&path, params.clone(), batching)?)
            }
            (true, Backend::Postgres, _) => Some(writer::Lanes::postgres(
                &url,
                params.clone(),
                batching,
                cfg.writers,
            )),
        };
        Ok(Store {
            pool,
            backend,
            cfg,
            site_key: hex::decode(key).unwrap_or_default(),
            decks: RwLock::new(HashMap::new()),
            lists: RwLock::new(None),
            writer,
            params,
        })
    }

    /// Runs one operation on a call's money: in the writer's next batch, or (group commit
    /// off) in a transaction of its own.
    async fn money(&self, op: ops::Op) -> Result<ops::Done, StoreError> {
        if let Some(w) = &self.writer {
            let account = match &op {
                ops::Op::Hold(h) => h.account_id,
                // SIP accounts' rows sort (and lock) before every card's, so a batch that
                // holds both kinds takes them in one order everywhere.
                ops::Op::Register { registration, .. } => -1 - registration.sip_account_id,
                ops::Op::ClaimCall { slot, .. } | ops::Op::ReleaseCall { slot } => {
                    -1 - slot.sip_account_id
                }
                // One SQLite writer takes no row locks: any order will do.
                _ if self.backend == Backend::Sqlite => 0,
                other => match w.account_of(other.conf_id()) {
                    Some(a) => a,
                    None => self.reservation_account(other.conf_id()).await?,
                },
            };
            return w.run(op, account).await;
        }
        let mut tx = self.pool.begin().await?;
        let done = ops::apply(&mut exec::AnyExec(&mut tx), &self.params, &op).await;
        match &done {
            Ok(_) => tx.commit().await?,
            Err(_) => tx.rollback().await?,
        }
        done
    }

    /// The account a reservation spends from, for a call this node did not hold itself (or
    /// forgot); a call with no reservation gets 0, and its operation finds nothing to do.
    async fn reservation_account(&self, conf_id: &str) -> Result<i64, StoreError> {
        let a: Option<i64> =
            sqlx::query_scalar("SELECT account_id FROM reservations WHERE id = $1")
                .bind(conf_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(a.unwrap_or(0))
    }

    /// Group-commit writers running (0 with group commit off).
    pub fn writer_count(&self) -> usize {
        self.writer.as_ref().map_or(0, |w| w.count())
    }

    /// Operations waiting for the group-commit writer: how far behind the database is.
    pub fn queue_depth(&self) -> usize {
        self.writer.as_ref().map_or(0, |w| w.depth())
    }

    /// What the group-commit writer has done (none without one).
    pub fn writer_stats(&self) -> Option<&WriterStats> {
        self.writer.as_ref().map(|w| &*w.stats)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Finishes the operations waiting for the writer, then closes the pool; later calls fail
    /// (and authorization answers 8).
    pub async fn close(&self) {
        if let Some(w) = &self.writer {
            w.close().await;
        }
        self.pool.close().await;
    }

    /// A setting (`None` when unset).
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Sets a setting.
    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn account_row(
        &self,
        account: &str,
    ) -> Result<Option<AccountRow>, sqlx::Error> {
        let q = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account = $1");
        sqlx::query(&q)
            .bind(account)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| AccountRow::from_row(&r))
            .transpose()
    }

    /// Wrong PINs entered on a card since its last good one (the lock comes at
    /// `max_auth_failures`).
    pub async fn pin_failures(&self, account: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT pin_failures FROM accounts WHERE account = $1")
            .bind(account)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NoAccount(account.to_string()))
    }

    /// A card by number.
    pub async fn account(&self, account: &str) -> Result<Account, StoreError> {
        self.account_row(account)
            .await?
            .map(|r| r.account)
            .ok_or_else(|| StoreError::NoAccount(account.to_string()))
    }

    fn validate_new(&self, n: &NewAccount) -> Result<(), StoreError> {
        rules::check_card_number(&n.account, &self.cfg.card_policy).map_err(|_| {
            let p = &self.cfg.card_policy;
            StoreError::Invalid(format!(
                "account number '{}' must be {} to {} digits{}",
                n.account,
                p.min_len,
                p.max_len,
                if p.luhn {
                    " with a valid check digit"
                } else {
                    ""
                }
            ))
        })?;
        match &n.pin {
            Some(p) if p.len() < 4 || p.len() > 12 || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(StoreError::Invalid("a PIN must be 4 to 12 digits".into()));
            }
            None if !n.pinless => {
                return Err(StoreError::Invalid(
                    "a card needs a PIN unless it is PIN-less".into(),
                ));
            }
            _ => {}
        }
        if n.currency.len() != 3 || !n.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(StoreError::Invalid(format!(
                "currency '{}' is not an ISO 4217 code such as USD",
                n.currency
            )));
        }
        if !(2..=3).contains(&n.language.len())
            || !n.language.bytes().all(|b| b.is_ascii_lowercase())
        {
            return Err(StoreError::Invalid(format!(
                "language '{}' is not an ISO 639 code such as en",
                n.language
            )));
        }
        if n.max_calls < 1 || n.max_calls > 10_000 {
            return Err(StoreError::Invalid("max calls must be 1 to 10000".into()));
        }
        if n.balance.micros() < 0 || n.credit_limit.micros() < 0 {
            return Err(StoreError::Invalid(
                "balance and credit limit must not be negative".into(),
            ));
        }
        check_text("tenant", &n.tenant, true, 64)?;
        check_text("rate deck", &n.rate_deck, true, 64)?;
        Ok(())
    }

    /// Inserts `cards` (of batch `batch`, if any) in `tx`, calling `tick` after each.
    async fn insert_accounts(
        &self,
        tx: &mut Transaction<'static, Any>,
        cards: &[NewAccount],
        now: i64,
        batch: Option<&str>,
        mut tick: impl FnMut(),
    ) -> Result<(), StoreError> {
        for n in cards {
            self.insert_account(tx, n, now, batch).await?;
            tick();
        }
        Ok(())
    }

    async fn insert_account(
        &self,
        tx: &mut Transaction<'static, Any>,
        n: &NewAccount,
        now: i64,
        batch: Option<&str>,
    ) -> Result<(), StoreError> {
        let salt = pin::new_salt();
        // A PIN-less card gets a random PIN nobody knows, so PIN entry can never match it.
        let secret = n
            .pin
            .clone()
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
        let hash = pin::hash_pin(&self.site_key, &salt, &secret);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO accounts (account, pin_salt, pin_hash, pinless, status, expires_at, currency, \
             balance, credit_limit, max_calls, language, tenant, rate_deck, tollfree_only, created_at, \
             any_tenant, batch_id) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             RETURNING id",
        )
        .bind(&n.account)
        .bind(salt)
        .bind(hash)
        .bind(i64::from(n.pinless))
        .bind(n.expires_at.map(ms))
        .bind(&n.currency)
        .bind(n.balance.micros())
        .bind(n.credit_limit.micros())
        .bind(n.max_calls)
        .bind(&n.language)
        .bind(&n.tenant)
        .bind(&n.rate_deck)
        .bind(i64::from(n.tollfree_only))
        .bind(now)
        .bind(i64::from(n.any_tenant))
        .bind(batch)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| {
            if is_kind(&e, sqlx::error::ErrorKind::UniqueViolation) {
                StoreError::Conflict(format!("account {} already exists", n.account))
            } else {
                e.into()
            }
        })?;
        if n.balance.is_positive() {
            sqlx::query(
                "INSERT INTO ledger (account_id, kind, amount, balance_after, idempotency_key, reference, note, created_at) \
                 VALUES ($1, 'topup', $2, $2, $3, 'initial balance', '', $4)",
            )
            .bind(id)
            .bind(n.balance.micros())
            .bind(format!("create:{}", n.account))
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Creates one card (its opening balance is a ledger row).
    pub async fn create_account(
        &self,
        n: &NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.create_accounts(std::slice::from_ref(n), now).await?;
        self.account(&n.account).await
    }

    /// Creates many cards in one transaction: all or none.
    pub async fn create_accounts(
        &self,
        cards: &[NewAccount],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.create_accounts_with_progress(cards, now, || {}).await
    }

    /// [`Store::create_accounts`], calling `tick` after each card (for a progress bar).
    pub async fn create_accounts_with_progress(
        &self,
        cards: &[NewAccount],
        now: DateTime<Utc>,
        tick: impl FnMut(),
    ) -> Result<(), StoreError> {
        self.create_accounts_in(cards, now, tick, None).await
    }

    /// [`Store::create_accounts`] with its audit-log entry written in the same transaction.
    pub async fn create_accounts_audited(
        &self,
        cards: &[NewAccount],
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.create_accounts_in(cards, now, || {}, Some(audit))
            .await
    }

    async fn create_accounts_in(
        &self,
        cards: &[NewAccount],
        now: DateTime<Utc>,
        mut tick: impl FnMut(),
        audit: Option<&AuditEntry>,
    ) -> Result<(), StoreError> {
        for n in cards {
            self.validate_new(n)?;
        }
        let mut tx = self.pool.begin().await?;
        self.insert_accounts(&mut tx, cards, ms(now), None, &mut tick)
            .await?;
        audit::audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Blocks (7) or unblocks a card. Unblocking also clears a PIN lockout (10).
    pub async fn set_blocked(&self, account: &str, blocked: bool) -> Result<Account, StoreError> {
        self.set_blocked_in(account, blocked, None).await
    }

    /// [`Store::set_blocked`] with its audit-log entry written in the same transaction.
    pub async fn set_blocked_audited(
        &self,
        account: &str,
        blocked: bool,
        audit: &AuditEntry,
    ) -> Result<Account, StoreError> {
        self.set_blocked_in(account, blocked, Some(audit)).await
    }

    async fn set_blocked_in(
        &self,
        account: &str,
        blocked: bool,
        audit: Option<&AuditEntry>,
    ) -> Result<Account, StoreError> {
        let status = if blocked { "blocked" } else { "active" };
        let mut tx = self.pool.begin().await?;
        // Unblocking also forgives the wrong PINs that locked the card.
        let done = sqlx::query(
            "UPDATE accounts SET status = $1, \
             pin_failures = CASE WHEN $1 = 'active' THEN 0 ELSE pin_failures END \
             WHERE account = $2",
        )
        .bind(status)
        .bind(account)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoAccount(account.to_string()));
        }
        if !blocked {
            sqlx::query("DELETE FROM auth_failures WHERE kind = 'card' AND subject = $1")
                .bind(account)
                .execute(&mut *tx)
                .await?;
        }
        audit::audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        self.account(account).await
    }

    /// Keeps one RADIUS accounting record, once per (conference id, leg, status): true when it
    /// is new, false when the same record was already kept (a client's retransmission).
    pub async fn record_accounting(&self, r: &AccountingRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO radius_accounting (conf_id, leg, status, client, account, received_at, \
             attributes, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (conf_id, leg, status) DO NOTHING",
        )
        .bind(&r.conf_id)
        .bind(&r.leg)
        .bind(&r.status)
        .bind(&r.client)
        .bind(&r.account)
        .bind(ms(r.received_at))
        .bind(&r.attributes)
        .bind(&r.outcome)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The RADIUS accounting records kept for a conference id.
    pub async fn accounting_records(
        &self,
        conf_id: &str,
    ) -> Result<Vec<AccountingRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT conf_id, leg, status, client, account, received_at, attributes, outcome \
             FROM radius_accounting WHERE conf_id = $1 ORDER BY received_at, status",
        )
        .bind(conf_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountingRecord {
                    conf_id: r.try_get("conf_id")?,
                    leg: r.try_get("leg")?,
                    status: r.try_get("status")?,
                    client: r.try_get("client")?,
                    account: r.try_get("account")?,
                    received_at: at_ms(r.try_get("received_at")?),
                    attributes: r.try_get("attributes")?,
                    outcome: r.try_get("outcome")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Sends a card's calls elsewhere (51: every call to `number`, 52: to customer service at
    /// `number`), or back to normal with `None`.
    pub async fn set_redirect(
        &self,
        account: &str,
        redirect: Option<Redirect>,
    ) -> Result<Account, StoreError> {
        if let Some(r) = &redirect {
            if !matches!(
                r.code,
                ReturnCode::RedirectCalledParty | ReturnCode::RedirectCustomerService
            ) {
                return Err(StoreError::Invalid(
                    "a card redirect is code 51 (called party) or 52 (customer service)".into(),
                ));
            }
            rules::check_digits(&r.number).map_err(|_| {
                StoreError::Invalid(format!(
                    "redirect number '{}' must be 1 to {} digits",
                    r.number,
                    rules::MAX_INPUT_DIGITS
                ))
            })?;
        }
        let done = sqlx::query(
            "UPDATE accounts SET redirect_code = $1, redirect_number = $2 WHERE account = $3",
        )
        .bind(redirect.as_ref().map(|r| i64::from(r.code.code())))
        .bind(redirect.as_ref().map(|r| r.number.clone()))
        .bind(account)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoAccount(account.to_string()));
        }
        self.account(account).await
    }

    /// Moves money on a card, once per `reference`: a top-up or refund (positive) or an
    /// adjustment (either sign). Posting the same reference again changes nothing and returns
    /// the original row; reusing it for a different movement is refused.
    pub async fn post(
        &self,
        account: &str,
        kind: LedgerKind,
        amount: Money,
        reference: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<Posting, StoreError> {
        self.post_in(account, kind, amount, reference, note, now, None)
            .await
    }

    /// [`Store::post`] with its audit-log entry written in the same transaction; a repeated
    /// reference (nothing posted) writes no entry either.
    #[allow(clippy::too_many_arguments)]
    pub async fn post_audited(
        &self,
        account: &str,
        kind: LedgerKind,
        amount: Money,
        reference: &str,
        note: &str,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<Posting, StoreError> {
        self.post_in(account, kind, amount, reference, note, now, Some(audit))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn post_in(
        &self,
        account: &str,
        kind: LedgerKind,
        amount: Money,
        reference: &str,
        note: &str,
        now: DateTime<Utc>,
        audit: Option<&AuditEntry>,
    ) -> Result<Posting, StoreError> {
        check_text("reference", reference, true, 200)?;
        check_text("note", note, false, 500)?;
        match kind {
            LedgerKind::Call => {
                return Err(StoreError::Invalid("calls are posted by settlement".into()))
            }
            LedgerKind::Adjustment if amount == Money::ZERO => {
                return Err(StoreError::Invalid("an adjustment must not be zero".into()))
            }
            LedgerKind::TopUp | LedgerKind::Refund if !amount.is_positive() => {
                return Err(StoreError::Invalid(format!(
                    "a {} must be positive",
                    kind.as_str()
                )))
            }
            _ => {}
        }
        let mut tx = self.pool.begin().await?;
        // Write first: the row lock (PostgreSQL) or write lock (SQLite) orders the postings.
        let updated = sqlx::query(
            "UPDATE accounts SET balance = balance + $1 WHERE account = $2 RETURNING id, balance",
        )
        .bind(amount.micros())
        .bind(account)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            if is_kind(&e, sqlx::error::ErrorKind::CheckViolation) {
                StoreError::Invalid(format!(
                    "{amount} would take account {account} below its credit limit"
                ))
            } else {
                e.into()
            }
        })?;
        let Some(row) = updated else {
            return Err(StoreError::NoAccount(account.to_string()));
        };
        let (id, balance): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        // A reference is the card's own: another card's receipt with the same number is
        // another movement, and nothing about that card is told here.
        let key = format!("{}:{id}:{reference}", kind.as_str());
        let inserted = sqlx::query(
            "INSERT INTO ledger (account_id, kind, amount, balance_after, idempotency_key, reference, note, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(id)
        .bind(kind.as_str())
        .bind(amount.micros())
        .bind(balance)
        .bind(&key)
        .bind(reference)
        .bind(note)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            audit::audit_in(&mut tx, audit).await?;
            tx.commit().await?;
            let entry = self.ledger_entry_by_key(&key).await?;
            return Ok(Posting::Applied(entry));
        }
        tx.rollback().await?;
        let first = self.ledger_entry_by_key(&key).await?;
        if first.amount == amount {
            Ok(Posting::AlreadyApplied(first))
        } else {
            Err(StoreError::Conflict(format!(
                "reference '{reference}' was already used on this card for another amount"
            )))
        }
    }

    /// A top-up: [`Store::post`] with [`LedgerKind::TopUp`].
    pub async fn top_up(
        &self,
        account: &str,
        amount: Money,
        reference: &str,
        now: DateTime<Utc>,
    ) -> Result<Posting, StoreError> {
        self.post(account, LedgerKind::TopUp, amount, reference, "", now)
            .await
    }

    async fn ledger_entry_by_key(&self, key: &str) -> Result<LedgerEntry, StoreError> {
        let row = sqlx::query(&format!("{LEDGER_SELECT} WHERE l.idempotency_key = $1"))
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        Ok(ledger_entry(&row)?)
    }

    /// A card's ledger, oldest first (at most `limit` rows, the newest ones).
    pub async fn ledger(&self, account: &str, limit: i64) -> Result<Vec<LedgerEntry>, StoreError> {
        let row = self
            .account_row(account)
            .await?
            .ok_or_else(|| StoreError::NoAccount(account.into()))?;
        let rows = sqlx::query(&format!(
            "{LEDGER_SELECT} WHERE l.account_id = $1 ORDER BY l.id DESC LIMIT $2"
        ))
        .bind(row.id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(ledger_entry)
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Proves the books: every balance equals the sum of its ledger, every ledger row's running
    /// balance follows from the one before, every held amount and call count equals its open
    /// reservations, and no card is below its credit limit.
    pub async fn ledger_check(&self) -> Result<LedgerReport, StoreError> {
        let mut report = LedgerReport::default();
        let accounts = sqlx::query(
            "SELECT a.id, a.account, a.balance, a.reserved, a.active_calls, a.credit_limit, \
             (SELECT CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) FROM ledger l WHERE l.account_id = a.id) AS ledger_sum, \
             (SELECT CAST(COALESCE(SUM(r.amount), 0) AS BIGINT) FROM reservations r WHERE r.account_id = a.id) AS held, \
             (SELECT COUNT(*) FROM reservations r WHERE r.account_id = a.id) AS calls \
             FROM accounts a ORDER BY a.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut names = HashMap::new();
        for r in &accounts {
            report.accounts += 1;
            let id: i64 = r.try_get("id")?;
            let account: String = r.try_get("account")?;
            let (balance, reserved, active, limit): (i64, i64, i64, i64) = (
                r.try_get("balance")?,
                r.try_get("reserved")?,
                r.try_get("active_calls")?,
                r.try_get("credit_limit")?,
            );
            let (sum, held, calls): (i64, i64, i64) = (
                r.try_get("ledger_sum")?,
                r.try_get("held")?,
                r.try_get("calls")?,
            );
            report.reservations += calls as u64;
            let m = |v| Money::from_micros(v);
            if balance != sum {
                report.problems.push(format!(
                    "{account}: balance {} but ledger sums to {}",
                    m(balance),
                    m(sum)
                ));
            }
            if reserved != held {
                report.problems.push(format!(
                    "{account}: {} held but reservations hold {}",
                    m(reserved),
                    m(held)
                ));
            }
            if active != calls {
                report.problems.push(format!(
                    "{account}: {active} active calls but {calls} reservations"
                ));
            }
            if balance + limit < reserved {
                report.problems.push(format!(
                    "{account}: {} held exceeds balance {} plus credit limit",
                    m(reserved),
                    m(balance)
                ));
            }
            names.insert(id, account);
        }
        let rows = sqlx::query(
            "SELECT account_id, id, amount, balance_after FROM ledger ORDER BY account_id, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut running: Option<(i64, i64)> = None;
        for r in &rows {
            report.entries += 1;
            let (acct, id, amount, after): (i64, i64, i64, i64) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            let before = match running {
                Some((a, b)) if a == acct => b,
                _ => 0,
            };
            if before + amount != after {
                let name = names
                    .get(&acct)
                    .cloned()
                    .unwrap_or_else(|| acct.to_string());
                report.problems.push(format!(
                    "{name}: ledger row {id} says balance {} after {}, expected {}",
                    Money::from_micros(after),
                    Money::from_micros(amount),
                    Money::from_micros(before + amount)
                ));
            }
            running = Some((acct, after));
        }
        // The report summaries of the last week say what their records say.
        if let Some(until) = self.rolled_until().await? {
            for day in until - 7..until {
                report
                    .problems
                    .extend(self.recount_day(reports::day_date(day)).await?);
            }
        }
        Ok(report)
    }

    /// Call records, newest first.
    pub async fn call_records(&self, f: &RecordFilter) -> Result<Vec<CallRecord>, StoreError> {
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM call_records WHERE 1 = 1");
        let mut n = 0;
        if f.account.is_some() {
            n += 1;
            sql.push_str(&format!(" AND account = ${n}"));
        }
        if f.session_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND session_id = ${n}"));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
        let mut q = sqlx::query(&sql);
        if let Some(a) = &f.account {
            q = q.bind(a);
        }
        if let Some(s) = &f.session_id {
            q = q.bind(s);
        }
        let rows = q.bind(f.limit.unwrap_or(100)).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(call_record(r)?)).collect()
    }

    /// The record of one call (a ledger entry's `call` reference), if it was kept.
    pub async fn call_record(&self, conf_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM call_records WHERE conf_id = $1"
        ))
        .bind(conf_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(call_record).transpose()?)
    }

    /// The batch a card was made in, if any.
    pub async fn batch_of(&self, account: &str) -> Result<Option<String>, StoreError> {
        let b: Option<Option<String>> =
            sqlx::query_scalar("SELECT batch_id FROM accounts WHERE account = $1")
                .bind(account)
                .fetch_optional(&self.pool)
                .await?;
        Ok(b.flatten())
    }

    /// Records that this node is alive; the sweeper leaves a live node's calls alone.
    pub async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, heartbeat_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&self.cfg.node_id)
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

const LEDGER_SELECT: &str =
    "SELECT l.id, a.account, l.kind, l.amount, l.balance_after, l.reference, l.note, l.created_at \
     FROM ledger l JOIN accounts a ON a.id = l.account_id";

fn ledger_entry(r: &AnyRow) -> Result<LedgerEntry, sqlx::Error> {
    Ok(LedgerEntry {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        kind: r.try_get("kind")?,
        amount: Money::from_micros(r.try_get("amount")?),
        balance_after: Money::from_micros(r.try_get("balance_after")?),
        reference: r.try_get("reference")?,
        note: r.try_get("note")?,
        created_at: at_ms(r.try_get("created_at")?),
    })
}

/// What [`call_record`] reads, in its order.
const RECORD_COLUMNS: &str = "conf_id, session_id, account, ani, access_number, destination, \
     setup_at, connect_at, disconnect_at, billed_seconds, cost, currency, deck, rate_prefix, \
     rate_description, disconnect_cause, return_code, node, voice_quality, gateway";

pub(crate) fn call_record(r: &AnyRow) -> Result<CallRecord, sqlx::Error> {
    Ok(CallRecord {
        conf_id: r.try_get("conf_id")?,
        session_id: r.try_get("session_id")?,
        account: r.try_get("account")?,
        ani: r.try_get("ani")?,
        access_number: r.try_get("access_number")?,
        destination: r.try_get("destination")?,
        setup_at: at_ms(r.try_get("setup_at")?),
        connect_at: r.try_get::<Option<i64>, _>("connect_at")?.map(at_ms),
        disconnect_at: r.try_get::<Option<i64>, _>("disconnect_at")?.map(at_ms),
        billed_seconds: r.try_get("billed_seconds")?,
        cost: Money::from_micros(r.try_get("cost")?),
        currency: r.try_get("currency")?,
        deck: r.try_get("deck")?,
        rate_prefix: r.try_get("rate_prefix")?,
        rate_description: r.try_get("rate_description")?,
        disconnect_cause: r.try_get("disconnect_cause")?,
        voice_quality: r.try_get("voice_quality")?,
        return_code: u8::try_from(r.try_get::<i64, _>("return_code")?).unwrap_or(u8::MAX),
        node: r.try_get("node")?,
        gateway: r.try_get("gateway")?,
    })
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn only_a_database_that_may_come_back_is_worth_retrying() {
        let db = |e| StoreError::Database(e);
        assert!(db(sqlx::Error::PoolTimedOut).is_transient());
        assert!(db(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())).is_transient());
        assert!(!db(sqlx::Error::PoolClosed).is_transient());
        assert!(!db(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::NoReservation("c".into()).is_transient());
        assert!(!StoreError::Conflict("x".into()).is_transient());
    }
}
