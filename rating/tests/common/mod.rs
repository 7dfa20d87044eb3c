//! Real databases for the store tests: a fresh SQLite file per test, and (when `B2BUA_TEST_PG`
//! names a server, as in CI) a fresh PostgreSQL schema per test, dropped afterwards.
#![allow(dead_code)]

use rating::store::{NewAccount, Store, StoreConfig};
use rating::Money;
use sqlx::Connection;

pub struct TestDb {
    pub url: String,
    base: Option<String>,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        TestDb {
            url,
            base: None,
            schema: None,
            _dir: Some(dir),
        }
    }

    /// `None` (the test is skipped, and says so) when no PostgreSQL is configured.
    pub async fn postgres() -> Option<TestDb> {
        let Ok(base) = std::env::var("B2BUA_TEST_PG") else {
            eprintln!("skipped: set B2BUA_TEST_PG=postgres://postgres@127.0.0.1:5432/test to run");
            return None;
        };
        sqlx::any::install_default_drivers();
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::AnyConnection::connect(&base)
            .await
            .expect("PostgreSQL reachable");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Some(TestDb {
            url,
            base: Some(base),
            schema: Some(schema),
            _dir: None,
        })
    }

    pub async fn store(&self) -> Store {
        self.store_with(config("node-a")).await
    }

    pub async fn store_with(&self, cfg: StoreConfig) -> Store {
        Store::open(&self.url, cfg).await.expect("store opens")
    }

    pub async fn cleanup(self) {
        if let (Some(base), Some(schema)) = (&self.base, &self.schema) {
            let mut conn = sqlx::AnyConnection::connect(base).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

pub fn config(node: &str) -> StoreConfig {
    StoreConfig {
        node_id: node.into(),
        ..StoreConfig::default()
    }
}

pub fn money(s: &str) -> Money {
    Money::parse(s, true).unwrap()
}

pub fn card(account: &str, pin: &str, balance: &str) -> NewAccount {
    NewAccount::new(account, Some(pin), money(balance))
}

/// Runs a test body on SQLite and, when configured, on PostgreSQL.
#[macro_export]
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::common::TestDb::sqlite();
                super::$name(&db).await;
                db.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = $crate::common::TestDb::postgres().await else {
                    return;
                };
                super::$name(&db).await;
                db.cleanup().await;
            }
        }
    };
}
