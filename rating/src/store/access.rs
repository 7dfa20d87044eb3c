//! Access numbers that admins assign and ITSPs configure through the admin API. They live in
//! the shared database rather than a node's configuration file so that every node behind the
//! dispatcher answers the same numbers the same way; each node reads them again every few
//! seconds. What a number does with a call is the B2BUA's business: here they are only rows,
//! checked for shape.

use super::{at_ms, check_text, ms, Store, StoreError};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

/// One managed access number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRow {
    /// The dialled number (for pinless numbers, the prefix before the destination).
    pub number: String,
    /// The ITSP it belongs to.
    pub tenant: String,
    /// The IVR flow it runs; pinless numbers run none.
    pub flow: Option<String>,
    /// Languages offered, the first being the default.
    pub languages: Vec<String>,
    /// Whether the caller's number is believed.
    pub trust_ani: bool,
    /// Whether only trusted peers may call it.
    pub trusted_only: bool,
    /// The caller's number is the account and the digits after the number the destination.
    pub pinless: bool,
    /// Takes every tenant's cards, not only its own tenant's.
    pub all_tenants: bool,
    /// A DID that rings a softphone subscriber: the SIP account (`user@domain`) whose
    /// registered contacts a call to it rings. Such a number runs no flow.
    pub subscriber: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The token name that last changed it.
    pub updated_by: String,
}

impl AccessRow {
    /// Whether two rows configure the number the same way (who changed it and when aside).
    pub fn same_settings(&self, other: &AccessRow) -> bool {
        (
            &self.number,
            &self.tenant,
            &self.flow,
            &self.languages,
            self.trust_ani,
            self.trusted_only,
            self.pinless,
            self.all_tenants,
            &self.subscriber,
        ) == (
            &other.number,
            &other.tenant,
            &other.flow,
            &other.languages,
            other.trust_ani,
            other.trusted_only,
            other.pinless,
            other.all_tenants,
            &other.subscriber,
        )
    }

    /// Refuses a row no node could use (the first of its [`AccessRow::problems`]).
    pub fn check(&self) -> Result<(), StoreError> {
        match self.problems().into_iter().next() {
            Some((_, why)) => Err(StoreError::Invalid(why)),
            None => Ok(()),
        }
    }

    /// Everything that makes a row unusable, each with the setting it is about: a number that
    /// is not digits, no tenant, no language or one that is not a code or is listed twice, a
    /// believed caller number on a number anyone may call, no flow on a number that needs
    /// one. The one rule for access numbers, whether they come from the admin API or from a
    /// node's configuration file.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut add = |what: &'static str, r: Result<(), StoreError>| {
            if let Err(e) = r {
                out.push((what, invalid_text(e)));
            }
        };
        add("number", check_number(&self.number));
        add("trust_ani", check_trust(self.trust_ani, self.trusted_only));
        add("tenant", check_text("tenant", &self.tenant, true, 64));
        add("languages", check_languages(&self.languages));
        add("subscriber", self.check_subscriber());
        let flow = match &self.flow {
            None if !self.pinless && self.subscriber.is_none() => Err(StoreError::Invalid(
                "an access number needs a flow unless it is pinless or rings a subscriber".into(),
            )),
            Some(f) => check_text("flow", f, true, 64),
            None => Ok(()),
        };
        add("flow", flow);
        out
    }
}

impl AccessRow {
    /// A subscriber's number names a SIP account as `user@domain`, runs no flow and is not
    /// pinless (it is called, it calls no one), and takes calls from trusted peers only: a DID
    /// reaches us from the carriers that own it, and a softphone is not rung by strangers.
    fn check_subscriber(&self) -> Result<(), StoreError> {
        let Some(aor) = &self.subscriber else {
            return Ok(());
        };
        let Some((user, domain)) = aor.split_once('@') else {
            return Err(StoreError::Invalid(format!(
                "`{aor}` is not a SIP account: write it as user@domain"
            )));
        };
        super::sip::check_username(user)?;
        super::sip::check_domain(domain)?;
        if self.pinless || self.flow.is_some() {
            return Err(StoreError::Invalid(
                "a number that rings a subscriber is neither pinless nor runs a flow".into(),
            ));
        }
        if !self.trusted_only {
            return Err(StoreError::Invalid(
                "a number that rings a subscriber needs trusted_only: its calls come from \
                 the carriers that own the number"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The message of a refusal, without the error kind's prefix.
fn invalid_text(e: StoreError) -> String {
    match e {
        StoreError::Invalid(m) => m,
        other => other.to_string(),
    }
}

/// At least one language, each a code as in the prompt files' `<lang>_` prefix, none twice.
fn check_languages(languages: &[String]) -> Result<(), StoreError> {
    if languages.is_empty() {
        return Err(StoreError::Invalid(
            "at least one language is needed".into(),
        ));
    }
    for (i, l) in languages.iter().enumerate() {
        if l.is_empty() || l.len() > 8 || !l.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StoreError::Invalid(format!(
                "`{l}` is not a language code (letters and digits, as in the prompt files' \
                 `<lang>_` prefix)"
            )));
        }
        if languages[..i].contains(l) {
            return Err(StoreError::Invalid(format!("language {l} is listed twice")));
        }
    }
    Ok(())
}

/// The calling number may be believed (`trust_ani`: it can be a pinless card's account, or the
/// number that is billed) only where every call comes from a trusted peer: from anywhere
/// else, the caller writes its own From and picks whose money it spends.
fn check_trust(trust_ani: bool, trusted_only: bool) -> Result<(), StoreError> {
    if trust_ani && !trusted_only {
        return Err(StoreError::Invalid(
            "trust_ani needs trusted_only: an untrusted caller could otherwise pick the number \
             that is billed"
                .into(),
        ));
    }
    Ok(())
}

/// An access number is 1 to 32 digits.
pub fn check_number(n: &str) -> Result<(), StoreError> {
    if n.is_empty() || n.len() > 32 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StoreError::Invalid(format!(
            "`{n}` is not an access number: 1 to 32 digits"
        )));
    }
    Ok(())
}

const COLUMNS: &str = "number, tenant, flow, languages, trust_ani, trusted_only, pinless, \
                       updated_at, updated_by, all_tenants, subscriber";

fn row(r: &AnyRow) -> Result<AccessRow, sqlx::Error> {
    let languages: String = r.try_get("languages")?;
    Ok(AccessRow {
        number: r.try_get("number")?,
        tenant: r.try_get("tenant")?,
        flow: r.try_get("flow")?,
        languages: languages
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        trust_ani: r.try_get::<i64, _>("trust_ani")? != 0,
        trusted_only: r.try_get::<i64, _>("trusted_only")? != 0,
        pinless: r.try_get::<i64, _>("pinless")? != 0,
        all_tenants: r.try_get::<i64, _>("all_tenants")? != 0,
        subscriber: r.try_get("subscriber")?,
        updated_at: at_ms(r.try_get("updated_at")?),
        updated_by: r.try_get("updated_by")?,
    })
}

impl Store {
    /// Every managed access number, in number order.
    pub async fn access_numbers(&self) -> Result<Vec<AccessRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM access_numbers ORDER BY number"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// One managed access number.
    pub async fn access_number(&self, number: &str) -> Result<Option<AccessRow>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM access_numbers WHERE number = $1"
        ))
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    /// Writes a number's settings, creating it if it is new. With `owner`, only a number that
    /// exists and belongs to that tenant is written (an ITSP changing its own): if another
    /// change moved it meanwhile, nothing is written and the answer is a conflict.
    pub async fn put_access_number(
        &self,
        a: &AccessRow,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        a.check()?;
        let languages = a.languages.join(",");
        // $1..$11 are the row's columns in both statements.
        let sql = match owner {
            Some(_) => {
                "UPDATE access_numbers SET tenant = $2, flow = $3, languages = $4, \
                 trust_ani = $5, trusted_only = $6, pinless = $7, updated_at = $8, \
                 updated_by = $9, all_tenants = $10, subscriber = $11 \
                 WHERE number = $1 AND tenant = $12"
            }
            None => {
                "INSERT INTO access_numbers (number, tenant, flow, languages, trust_ani, \
                 trusted_only, pinless, updated_at, updated_by, all_tenants, subscriber) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (number) DO UPDATE SET tenant = excluded.tenant, \
                 flow = excluded.flow, languages = excluded.languages, \
                 trust_ani = excluded.trust_ani, trusted_only = excluded.trusted_only, \
                 pinless = excluded.pinless, updated_at = excluded.updated_at, \
                 updated_by = excluded.updated_by, all_tenants = excluded.all_tenants, \
                 subscriber = excluded.subscriber"
            }
        };
        let mut q = sqlx::query(sql)
            .bind(&a.number)
            .bind(&a.tenant)
            .bind(&a.flow)
            .bind(&languages)
            .bind(i64::from(a.trust_ani))
            .bind(i64::from(a.trusted_only))
            .bind(i64::from(a.pinless))
            .bind(ms(a.updated_at))
            .bind(&a.updated_by)
            .bind(i64::from(a.all_tenants))
            .bind(&a.subscriber);
        if let Some(tenant) = owner {
            q = q.bind(tenant);
        }
        let written = q.execute(&self.pool).await?.rows_affected();
        if written == 0 {
            return Err(StoreError::Conflict(format!(
                "access number {} changed owner meanwhile; nothing was written",
                a.number
            )));
        }
        Ok(())
    }

    /// Removes a managed number; the answer is what it was, or `None` if there was none.
    pub async fn delete_access_number(
        &self,
        number: &str,
    ) -> Result<Option<AccessRow>, StoreError> {
        let Some(was) = self.access_number(number).await? else {
            return Ok(None);
        };
        let gone = sqlx::query("DELETE FROM access_numbers WHERE number = $1")
            .bind(number)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok((gone > 0).then_some(was))
    }
}
