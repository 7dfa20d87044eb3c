//! SIP accounts: the softphone subscribers of seeds 000 and 004, who register a SIP client and
//! dial the destination themselves, billed from a prepaid card like a calling-card caller.
//! Several accounts may spend from one card (a family, a small office); each has its own
//! secret, caller ID, call limit and barring.
//!
//! The secret is never stored: only the digest HA1 (RFC 7616 §3.4.2) for each algorithm a
//! client may choose, so a stolen database reveals no password a subscriber reuses elsewhere
//! and a challenge can be checked without it. The bindings a REGISTER makes are rows here too,
//! so every node behind the dispatcher can reach a subscriber whichever node it registered
//! through.

use super::{at_ms, check_text, ms, Store, StoreError};
use chrono::{DateTime, Utc};
use md5::Md5;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

/// The digest algorithms a subscriber's client may answer our challenge with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// RFC 2617's, which every SIP client speaks.
    Md5,
    /// RFC 7616's SHA-256, offered first to clients that know it.
    Sha256,
}

impl DigestAlgorithm {
    /// Both, in the order we offer them (RFC 8760 §2.4: strongest first).
    pub const ALL: [DigestAlgorithm; 2] = [DigestAlgorithm::Sha256, DigestAlgorithm::Md5];

    /// The name in `algorithm=`.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// The hash as lowercase hex, as digest puts it everywhere.
    pub fn hash(self, data: &str) -> String {
        match self {
            DigestAlgorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }

    /// HA1 = H(username ":" realm ":" password); our realm is the account's domain.
    pub fn ha1(self, username: &str, realm: &str, password: &str) -> String {
        self.hash(&format!("{username}:{realm}:{password}"))
    }
}

/// Whether a SIP account may register and call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipStatus {
    Active,
    /// Refused: REGISTER and INVITE get 403.
    Blocked,
}

impl SipStatus {
    fn as_str(self) -> &'static str {
        match self {
            SipStatus::Active => "active",
            SipStatus::Blocked => "blocked",
        }
    }
}

/// A SIP account to create. The password is used once, to compute the HA1s.
#[derive(Debug, Clone)]
pub struct NewSipAccount {
    pub username: String,
    /// Our SIP domain it belongs to; also the digest realm.
    pub domain: String,
    pub password: String,
    /// The card it spends from.
    pub card: String,
    /// The number presented on its calls (none: the carrier's default).
    pub caller_id: Option<String>,
    /// Its calls at once (the card's own limit applies too).
    pub max_calls: i64,
}

/// A SIP account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipAccount {
    pub id: i64,
    pub username: String,
    pub domain: String,
    /// Hex HA1 for MD5 and for SHA-256.
    pub ha1_md5: String,
    pub ha1_sha256: String,
    /// The card it spends from, and that card's tenant.
    pub card: String,
    pub tenant: String,
    pub status: SipStatus,
    pub caller_id: Option<String>,
    pub max_calls: i64,
    /// Calls abroad (barred by the subscriber or its ITSP, seed 004's call barring).
    pub bar_international: bool,
    /// Calls to premium-rate numbers.
    pub bar_premium: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The token name (or `cli`) that last changed it.
    pub updated_by: String,
}

impl SipAccount {
    /// The stored HA1 for an algorithm.
    pub fn ha1(&self, alg: DigestAlgorithm) -> &str {
        match alg {
            DigestAlgorithm::Md5 => &self.ha1_md5,
            DigestAlgorithm::Sha256 => &self.ha1_sha256,
        }
    }

    /// `user@domain`, as it is written everywhere.
    pub fn aor(&self) -> String {
        format!("{}@{}", self.username, self.domain)
    }
}

/// One place a registered account can be reached (RFC 3261 §10.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as registered.
    pub contact: String,
    /// Transport and address the REGISTER came from (`udp:192.0.2.1:5060`): where requests
    /// to a client behind NAT must go (RFC 3581).
    pub source: String,
    /// The REGISTER's Call-ID and CSeq: a later one from the same client must count up.
    pub call_id: String,
    pub cseq: i64,
    pub expires_at: DateTime<Utc>,
    /// The node that took it (the one holding a TCP or TLS connection to it).
    pub node: String,
    /// The proxies it registered through (RFC 3327 Path, nearest first): a request to it
    /// carries them as Route. Empty: it registered with us directly.
    pub path: Vec<String>,
}

/// A binding's Path as its column keeps it: one URI per line (a header value holds no line
/// break, so the text reads back as it was written).
pub(crate) fn path_text(path: &[String]) -> String {
    path.join("\n")
}

/// [`path_text`] read back.
pub(crate) fn path_of(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A user part we accept: 1 to 64 letters, digits and `-_.+`, so that `user:realm:password`
/// has exactly one reading and the name survives every header it appears in unescaped.
pub fn check_username(u: &str) -> Result<(), StoreError> {
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
    if !ok {
        return Err(StoreError::Invalid(format!(
            "`{u}` is not a SIP username: 1 to 64 letters, digits, `-`, `_`, `.` or `+`"
        )));
    }
    Ok(())
}

/// A domain: a host name in lowercase (letters, digits, `-` and `.`), 1 to 253 characters.
pub fn check_domain(d: &str) -> Result<(), StoreError> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && !d.starts_with(['.', '-'])
        && !d.ends_with(['.', '-'])
        && !d.contains("..")
        && d.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        return Err(StoreError::Invalid(format!(
            "`{d}` is not a SIP domain: a host name in lowercase letters, digits, `-` and `.`"
        )));
    }
    Ok(())
}

/// A password a subscriber's client can be given: 8 to 128 printable characters, not the
/// username itself.
pub fn check_password(username: &str, p: &str) -> Result<(), StoreError> {
    let n = p.chars().count();
    if !(8..=128).contains(&n) || p.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "a SIP password is 8 to 128 printable characters".into(),
        ));
    }
    if p == username {
        return Err(StoreError::Invalid(
            "a SIP password must not be the username".into(),
        ));
    }
    Ok(())
}

/// A caller ID: 1 to 32 digits, optionally after `+`.
fn check_caller_id(c: &str) -> Result<(), StoreError> {
    let digits = c.strip_prefix('+').unwrap_or(c);
    if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StoreError::Invalid(format!(
            "`{c}` is not a caller ID: 1 to 32 digits, optionally after +"
        )));
    }
    Ok(())
}

/// A random password for an account created without one (shown once, like a batch's PINs):
/// 16 characters from an alphabet without look-alikes.
pub fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY346789";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

const COLUMNS: &str = "s.id, s.username, s.domain, s.ha1_md5, s.ha1_sha256, a.account, s.tenant, \
     s.status, s.caller_id, s.max_calls, s.bar_international, s.bar_premium, s.created_at, \
     s.updated_at, s.updated_by";
const FROM: &str = "sip_accounts s JOIN accounts a ON a.id = s.account_id";

fn row(r: &AnyRow) -> Result<SipAccount, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(SipAccount {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        domain: r.try_get("domain")?,
        ha1_md5: r.try_get("ha1_md5")?,
        ha1_sha256: r.try_get("ha1_sha256")?,
        card: r.try_get("account")?,
        tenant: r.try_get("tenant")?,
        status: if status == "blocked" {
            SipStatus::Blocked
        } else {
            SipStatus::Active
        },
        caller_id: r.try_get("caller_id")?,
        max_calls: r.try_get("max_calls")?,
        bar_international: r.try_get::<i64, _>("bar_international")? != 0,
        bar_premium: r.try_get::<i64, _>("bar_premium")? != 0,
        created_at: at_ms(r.try_get("created_at")?),
        updated_at: at_ms(r.try_get("updated_at")?),
        updated_by: r.try_get("updated_by")?,
    })
}

fn binding(r: &AnyRow) -> Result<Binding, sqlx::Error> {
    Ok(Binding {
        contact: r.try_get("contact")?,
        source: r.try_get("source")?,
        call_id: r.try_get("call_id")?,
        cseq: r.try_get("cseq")?,
        expires_at: at_ms(r.try_get("expires_at")?),
        node: r.try_get("node")?,
        path: path_of(&r.try_get::<String, _>("path")?),
    })
}

fn no_sip(username: &str, domain: &str) -> StoreError {
    StoreError::NoAccount(format!("SIP account {username}@{domain}"))
}

impl Store {
    /// The account as a change of `changed` rows left it (none changed: there is none).
    async fn after_change(
        &self,
        changed: u64,
        username: &str,
        domain: &str,
    ) -> Result<SipAccount, StoreError> {
        if changed == 0 {
            return Err(no_sip(username, domain));
        }
        self.sip_account(username, domain)
            .await?
            .ok_or_else(|| no_sip(username, domain))
    }

    /// Creates a SIP account on an existing card, in the card's tenant. The username is
    /// unique within its domain.
    pub async fn create_sip_account(
        &self,
        n: &NewSipAccount,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<SipAccount, StoreError> {
        check_username(&n.username)?;
        check_domain(&n.domain)?;
        check_password(&n.username, &n.password)?;
        if let Some(c) = &n.caller_id {
            check_caller_id(c)?;
        }
        if !(1..=100).contains(&n.max_calls) {
            return Err(StoreError::Invalid(format!(
                "max_calls {} is out of range: 1 to 100",
                n.max_calls
            )));
        }
        check_text("updated_by", by, true, 64)?;
        let card = self
            .account_row(&n.card)
            .await?
            .ok_or_else(|| StoreError::NoAccount(n.card.clone()))?;
        let taken = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sip_accounts WHERE username = $1 AND domain = $2",
        )
        .bind(&n.username)
        .bind(&n.domain)
        .fetch_one(&self.pool)
        .await?;
        if taken > 0 {
            return Err(StoreError::Conflict(format!(
                "SIP account {}@{} exists already",
                n.username, n.domain
            )));
        }
        let inserted = sqlx::query(
            "INSERT INTO sip_accounts (username, domain, ha1_md5, ha1_sha256, account_id, \
             tenant, caller_id, max_calls, created_at, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(&n.username)
        .bind(&n.domain)
        .bind(DigestAlgorithm::Md5.ha1(&n.username, &n.domain, &n.password))
        .bind(DigestAlgorithm::Sha256.ha1(&n.username, &n.domain, &n.password))
        .bind(card.id)
        .bind(&card.account.tenant)
        .bind(&n.caller_id)
        .bind(n.max_calls)
        .bind(ms(now))
        .bind(by)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "SIP account {}@{} exists already",
                n.username, n.domain
            )));
        }
        self.sip_account(&n.username, &n.domain)
            .await?
            .ok_or_else(|| no_sip(&n.username, &n.domain))
    }

    /// One SIP account, by username and domain.
    pub async fn sip_account(
        &self,
        username: &str,
        domain: &str,
    ) -> Result<Option<SipAccount>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE s.username = $1 AND s.domain = $2"
        ))
        .bind(username)
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    /// The SIP accounts that spend from one card.
    pub async fn sip_accounts_of_card(&self, card: &str) -> Result<Vec<SipAccount>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {FROM} WHERE a.account = $1 ORDER BY s.domain, s.username"
        ))
        .bind(card)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Every SIP account, or one tenant's.
    pub async fn sip_accounts(&self, tenant: Option<&str>) -> Result<Vec<SipAccount>, StoreError> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM {FROM} WHERE s.tenant = $1 \
                     ORDER BY s.domain, s.username"
                ))
                .bind(t)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM {FROM} ORDER BY s.domain, s.username"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Blocks or unblocks a SIP account; a blocked one also loses its bindings, so no call
    /// reaches it either.
    pub async fn set_sip_blocked(
        &self,
        username: &str,
        domain: &str,
        blocked: bool,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<SipAccount, StoreError> {
        let status = if blocked {
            SipStatus::Blocked
        } else {
            SipStatus::Active
        };
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE sip_accounts SET status = $1, updated_at = $2, updated_by = $3 \
             WHERE username = $4 AND domain = $5",
        )
        .bind(status.as_str())
        .bind(ms(now))
        .bind(by)
        .bind(username)
        .bind(domain)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(no_sip(username, domain));
        }
        if blocked {
            sqlx::query(
                "DELETE FROM sip_bindings WHERE sip_account_id IN \
                 (SELECT id FROM sip_accounts WHERE username = $1 AND domain = $2)",
            )
            .bind(username)
            .bind(domain)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.after_change(changed, username, domain).await
    }

    /// Sets a new password (its HA1s); the old one stops working at once.
    pub async fn set_sip_password(
        &self,
        username: &str,
        domain: &str,
        password: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<SipAccount, StoreError> {
        check_password(username, password)?;
        let changed = sqlx::query(
            "UPDATE sip_accounts SET ha1_md5 = $1, ha1_sha256 = $2, updated_at = $3, \
             updated_by = $4 WHERE username = $5 AND domain = $6",
        )
        .bind(DigestAlgorithm::Md5.ha1(username, domain, password))
        .bind(DigestAlgorithm::Sha256.ha1(username, domain, password))
        .bind(ms(now))
        .bind(by)
        .bind(username)
        .bind(domain)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.after_change(changed, username, domain).await
    }

    /// Sets the call barring a subscriber (or its ITSP) chose: `None` leaves a flag as it is.
    pub async fn set_sip_barring(
        &self,
        username: &str,
        domain: &str,
        international: Option<bool>,
        premium: Option<bool>,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<SipAccount, StoreError> {
        let was = self
            .sip_account(username, domain)
            .await?
            .ok_or_else(|| no_sip(username, domain))?;
        let changed = sqlx::query(
            "UPDATE sip_accounts SET bar_international = $1, bar_premium = $2, \
             updated_at = $3, updated_by = $4 WHERE id = $5",
        )
        .bind(i64::from(international.unwrap_or(was.bar_international)))
        .bind(i64::from(premium.unwrap_or(was.bar_premium)))
        .bind(ms(now))
        .bind(by)
        .bind(was.id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.after_change(changed, username, domain).await
    }

    /// Removes a SIP account and its bindings; the answer is what it was, `None` if there was
    /// none. Its card and the card's money are untouched.
    pub async fn delete_sip_account(
        &self,
        username: &str,
        domain: &str,
    ) -> Result<Option<SipAccount>, StoreError> {
        let Some(was) = self.sip_account(username, domain).await? else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await?;
        for table in ["sip_bindings", "sip_calls"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE sip_account_id = $1"))
                .bind(was.id)
                .execute(&mut *tx)
                .await?;
        }
        let gone = sqlx::query("DELETE FROM sip_accounts WHERE id = $1")
            .bind(was.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((gone > 0).then_some(was))
    }

    /// Adds or refreshes one binding of an account (the registrar decided it may).
    pub async fn put_binding(
        &self,
        sip_account_id: i64,
        b: &Binding,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(super::registrations::UPSERT_BINDING)
            .bind(sip_account_id)
            .bind(&b.contact)
            .bind(&b.source)
            .bind(&b.call_id)
            .bind(b.cseq)
            .bind(ms(b.expires_at))
            .bind(&b.node)
            .bind(path_text(&b.path))
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Applies a REGISTER the registrar authorized, in one transaction (the group-commit
    /// writer's next batch, when it runs): the bindings the account has afterwards, or why
    /// nothing changed. Asked again (a retransmission), an out-of-order refusal says so and
    /// binds nothing twice.
    pub async fn register(
        &self,
        registration: &super::Registration,
        now: DateTime<Utc>,
    ) -> Result<super::Registered, StoreError> {
        let op = super::ops::Op::Register {
            registration: Box::new(registration.clone()),
            now_ms: ms(now),
        };
        match self.money(op).await? {
            super::ops::Done::Registered(r) => Ok(r),
            other => unreachable!("a registration answered {other:?}"),
        }
    }

    /// Counts a call of a SIP account against its `max` calls at once, across every node:
    /// `false` if they are all in use (nothing is counted then). Asked again with the same
    /// slot, it counts the call once.
    pub async fn claim_sip_call(
        &self,
        slot: &super::CallSlot,
        max: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let op = super::ops::Op::ClaimCall {
            slot: slot.clone(),
            max,
            now_ms: ms(now),
        };
        match self.money(op).await? {
            super::ops::Done::Claimed(c) => Ok(c),
            other => unreachable!("a call slot answered {other:?}"),
        }
    }

    /// A SIP account's call ended: it no longer counts (again: no change).
    pub async fn release_sip_call(&self, slot: &super::CallSlot) -> Result<(), StoreError> {
        let op = super::ops::Op::ReleaseCall { slot: slot.clone() };
        match self.money(op).await? {
            super::ops::Done::Released => Ok(()),
            other => unreachable!("a call slot answered {other:?}"),
        }
    }

    /// The SIP accounts' calls this node had before it started: none of them is still up.
    pub async fn forget_own_sip_calls(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM sip_calls WHERE node = $1")
            .bind(&self.cfg.node_id)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Forgets the SIP accounts' calls of nodes silent for longer than the grace (nodes that
    /// died with calls up); how many went.
    pub async fn sweep_sip_calls(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let alive_since = ms(now) - self.cfg.reservation_grace.as_millis() as i64;
        Ok(sqlx::query(
            "DELETE FROM sip_calls WHERE node <> $1 AND node NOT IN \
             (SELECT id FROM nodes WHERE heartbeat_at >= $2)",
        )
        .bind(&self.cfg.node_id)
        .bind(alive_since)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Removes one binding (`Some(contact)`) or all of an account's (`None`, `Contact: *`);
    /// the answer is how many went.
    pub async fn remove_bindings(
        &self,
        sip_account_id: i64,
        contact: Option<&str>,
    ) -> Result<u64, StoreError> {
        let q = match contact {
            Some(c) => {
                sqlx::query("DELETE FROM sip_bindings WHERE sip_account_id = $1 AND contact = $2")
                    .bind(sip_account_id)
                    .bind(c)
            }
            None => sqlx::query("DELETE FROM sip_bindings WHERE sip_account_id = $1")
                .bind(sip_account_id),
        };
        Ok(q.execute(&self.pool).await?.rows_affected())
    }

    /// An account's bindings that have not expired at `now`, soonest to expire last.
    pub async fn bindings(
        &self,
        sip_account_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Binding>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM sip_bindings WHERE sip_account_id = $1 AND expires_at > $2 \
             ORDER BY expires_at DESC, contact",
            super::registrations::BINDING_COLUMNS
        ))
        .bind(sip_account_id)
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(binding).collect::<Result<_, _>>()?)
    }

    /// Deletes every binding expired at `now` (the registrar's sweep); how many went.
    pub async fn sweep_bindings(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM sip_bindings WHERE expires_at <= $1")
                .bind(ms(now))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_is_rfc_7616s() {
        // RFC 7616 §3.9.1: Mufasa, http-auth@example.org, "Circle of Life".
        let (u, r, p) = ("Mufasa", "http-auth@example.org", "Circle of Life");
        let ha1 = DigestAlgorithm::Md5.ha1(u, r, p);
        let ha2 = DigestAlgorithm::Md5.hash("GET:/dir/index.html");
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let response =
            DigestAlgorithm::Md5.hash(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        assert_eq!(response, "8ca523f5e9506fed4657c9700eebdbec");
        let ha1 = DigestAlgorithm::Sha256.ha1(u, r, p);
        let ha2 = DigestAlgorithm::Sha256.hash("GET:/dir/index.html");
        let response =
            DigestAlgorithm::Sha256.hash(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        assert_eq!(
            response,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn names_domains_passwords_and_caller_ids_are_checked() {
        for good in ["alice", "4085551234", "a.b-c_d+e"] {
            assert!(check_username(good).is_ok(), "{good}");
        }
        for bad in ["", "a:b", "a@b", "a b", "é", &"x".repeat(65)] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        for good in ["voip.example.com", "127.0.0.1", "localhost"] {
            assert!(check_domain(good).is_ok(), "{good}");
        }
        for bad in ["", "Voip.example", ".x", "x.", "a..b", "a_b", "-a"] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("alice", "correct horse").is_ok());
        assert!(check_password("alice", "short").is_err());
        assert!(check_password("alice12345", "alice12345").is_err());
        assert!(check_password("alice", "tab\there!!").is_err());
        assert!(check_caller_id("+14085551234").is_ok());
        assert!(check_caller_id("+").is_err());
        assert!(check_caller_id("408-555").is_err());
        let p = random_password();
        assert_eq!(p.len(), 16);
        assert!(check_password("alice", &p).is_ok());
        assert_ne!(p, random_password());
    }
}
