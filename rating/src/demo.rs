//! The demo data behind `b2bua serve` with no configuration: the seed's example card, a
//! PIN-less card, a softphone subscriber's SIP account on the example card, and a small rate
//! deck. Created once per database and never reset, so that
//! what demo calls did stays visible (`b2bua card show 000070`).

use crate::deck::{parse_prefix_csv, parse_rates_csv};
use crate::money::Money;
use crate::store::{NewAccount, Store, StoreError};
use chrono::{DateTime, Utc};

/// The seed's example card: account 000070, PIN 1234, 32.91 USD.
pub const CARD: &str = "000070";
/// Its PIN.
pub const PIN: &str = "1234";
/// A PIN-less card whose number is its calling number (ANI), with 10.00 USD.
pub const PINLESS: &str = "4085551234";

/// The demo's softphone subscriber (`demo@demo.invalid`), spending from [`CARD`].
pub const SIP_USER: &str = "demo";
/// Its domain (the demo configuration's `subscribers.domains`).
pub const SIP_DOMAIN: &str = "demo.invalid";
/// Its password.
pub const SIP_PASSWORD: &str = "demo-secret-1";

/// The demo rate deck (USD): prices the seed's destination 5555233 at 20,900 s for 32.91.
pub const RATES_CSV: &str = include_str!("../demo/rates.csv");
const BLOCKED_CSV: &str = include_str!("../demo/blocked.csv");
const TOLLFREE_CSV: &str = include_str!("../demo/tollfree.csv");

/// Creates the demo data unless this database already has it. Returns whether it did.
pub async fn seed(store: &Store, now: DateTime<Utc>) -> Result<bool, StoreError> {
    if store.setting("demo_seeded").await?.is_some() {
        // A demo database from before subscribers still gets its SIP account.
        seed_subscriber(store, now).await?;
        return Ok(false);
    }
    let invalid = |e: crate::deck::ImportError| StoreError::Invalid(e.to_string());
    let rows = parse_rates_csv(RATES_CSV.as_bytes(), "USD").map_err(invalid)?;
    store.import_rates("default", &rows, "demo", now).await?;
    store
        .import_prefix_list(
            "blocked",
            &parse_prefix_csv(BLOCKED_CSV.as_bytes()).map_err(invalid)?,
        )
        .await?;
    store
        .import_prefix_list(
            "tollfree",
            &parse_prefix_csv(TOLLFREE_CSV.as_bytes()).map_err(invalid)?,
        )
        .await?;
    let card = NewAccount::new(CARD, Some(PIN), Money::from_micros(32_910_000));
    let mut pinless = NewAccount::new(PINLESS, None, Money::from_micros(10_000_000));
    pinless.pinless = true;
    for n in [card, pinless] {
        match store.create_account(&n, now).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    seed_subscriber(store, now).await?;
    store.set_setting("demo_seeded", &now.to_rfc3339()).await?;
    Ok(true)
}

/// The demo's SIP account, once.
async fn seed_subscriber(store: &Store, now: DateTime<Utc>) -> Result<(), StoreError> {
    if store.setting("demo_sip_seeded").await?.is_some() {
        return Ok(());
    }
    let n = crate::store::NewSipAccount {
        username: SIP_USER.into(),
        domain: SIP_DOMAIN.into(),
        password: SIP_PASSWORD.into(),
        card: CARD.into(),
        caller_id: None,
        max_calls: 1,
    };
    match store.create_sip_account(&n, "demo", now).await {
        Ok(_) | Err(StoreError::Conflict(_)) | Err(StoreError::NoAccount(_)) => {}
        Err(e) => return Err(e),
    }
    store
        .set_setting("demo_sip_seeded", &now.to_rfc3339())
        .await
}
