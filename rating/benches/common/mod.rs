//! The database a bench runs on: a temporary SQLite file, or with `B2BUA_BENCH_DB` a fresh
//! PostgreSQL schema that is dropped afterwards.

use sqlx::Connection;

/// Where the bench runs; [`BenchDb::drop_schema`] removes a PostgreSQL schema at the end.
pub struct BenchDb {
    pub url: String,
    /// `(server URL, schema)` on PostgreSQL.
    pub schema: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl BenchDb {
    /// A fresh database; `file` names the SQLite file.
    pub async fn new(file: &str) -> BenchDb {
        let dir = tempfile::tempdir().unwrap();
        sqlx::any::install_default_drivers();
        let (url, schema) = match std::env::var("B2BUA_BENCH_DB") {
            Ok(base) => {
                let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
                let mut c = sqlx::AnyConnection::connect(&base).await.unwrap();
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                let sep = if base.contains('?') { '&' } else { '?' };
                (
                    format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                    Some((base, schema)),
                )
            }
            Err(_) => (
                format!("sqlite://{}", dir.path().join(file).display()),
                None,
            ),
        };
        BenchDb {
            url,
            schema,
            _dir: dir,
        }
    }

    /// Drops the PostgreSQL schema (nothing to do on SQLite: the file goes with the bench).
    pub async fn drop_schema(&self) {
        if let Some((base, schema)) = &self.schema {
            let mut c = sqlx::AnyConnection::connect(base).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}
