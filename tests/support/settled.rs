//! One answered call settled in the store, for the tests that need known report totals
//! without a SIP call: authorized, connected and settled through the store's own path.

use chrono::Utc;
use rating::store::Store;

/// A call on `card` answered at `at` and talking `talk` seconds through `gateway`.
pub async fn settled_call(
    store: &Store,
    card: &str,
    pin: Option<&str>,
    dest: &str,
    at: chrono::DateTime<Utc>,
    talk: i64,
    gateway: &str,
) {
    let conf = uuid::Uuid::new_v4().to_string();
    let a = store
        .authorize_call(
            &rating::store::CallRequest {
                auth: rating::store::AuthRequest {
                    account: card.into(),
                    pin: pin.map(str::to_string),
                    ani: Some("4085550100".into()),
                    access_number: "5551200".into(),
                    session_id: conf.clone(),
                    tenant: None,
                    authenticated: false,
                },
                destination: dest.into(),
                conf_id: conf.clone(),
                whole_credit: false,
                rate_deck: None,
            },
            at,
        )
        .await;
    assert!(a.code.is_success(), "{a:?}");
    store.mark_connected(&conf, at).await.unwrap();
    let end = at + chrono::Duration::seconds(talk);
    store
        .settle(
            &conf,
            &rating::store::CallEnd {
                connect_at: Some(at),
                disconnect_at: end,
                cause: "normal".into(),
                voice_quality: None,
                gateway: gateway.into(),
            },
            end,
        )
        .await
        .unwrap();
}
