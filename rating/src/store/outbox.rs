//! The accounting client's durable queue: records this node owes an operator's RADIUS server.
//! A call event writes its record here; the sender deletes it once the server acknowledged it.
//! A record left by a node that stopped (its heartbeat older than the reservation grace) is
//! taken over by a live node, so a crash delays records but never loses them.

use super::{at_ms, ms, CallEnd, RecordFilter, Store, StoreError};
use crate::radius::acct::{Leg, Record};
use crate::radius::legs::{LegEnd, LegFacts};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// A queued record as the sender reads it. `record` is an error when the stored text cannot
/// be read back (edited by hand); the sender logs it and leaves the row for staff.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    pub event_at: DateTime<Utc>,
    pub record: Result<Record, String>,
}

impl Store {
    /// Queues records for the RADIUS server. A record already queued (same conference id,
    /// leg and status) is left as it is, so writing an event twice sends it once.
    pub async fn enqueue_accounting(
        &self,
        records: &[Record],
        event_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for r in records {
            sqlx::query(
                "INSERT INTO radius_outbox (node, conf_id, leg, status, event_at, attributes) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conf_id, leg, status) DO NOTHING",
            )
            .bind(&self.cfg.node_id)
            .bind(&r.conf_id)
            .bind(r.leg.as_str())
            .bind(r.status.as_str())
            .bind(ms(event_at))
            .bind(r.attributes_text())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Queues the Stop records of a call the sweeper settled: the node that carried it died
    /// before writing them, so without these the operator's billing would never hear that the
    /// call ended. They say what the call record says; the caller's leg, which the sweeper
    /// never saw answered, counts from the session's first bridged call, so it is never
    /// longer than it was. `owner` (the dead node) is the gateway id, as its own records had.
    pub(super) async fn account_swept(
        &self,
        conf_id: &str,
        end: &CallEnd,
        owner: &str,
    ) -> Result<(), StoreError> {
        let session: Option<String> =
            sqlx::query_scalar("SELECT session_id FROM call_records WHERE conf_id = $1")
                .bind(conf_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(session) = session else {
            return Ok(());
        };
        let calls = self
            .call_records(&RecordFilter {
                account: None,
                session_id: Some(session),
                limit: Some(10_000),
            })
            .await?;
        let Some(call) = calls.iter().find(|c| c.conf_id == conf_id) else {
            return Ok(());
        };
        let leg_end = LegEnd {
            cause: &end.cause,
            disconnect_at: end.disconnect_at,
            voice_quality: end.voice_quality,
        };
        let facts = |leg, id, called, setup, connect| LegFacts {
            leg,
            id,
            session_id: &call.session_id,
            account: &call.account,
            ani: &call.ani,
            called,
            setup,
            connect,
            remote: None,
            gw_id: owner,
        };
        let first_setup = calls
            .iter()
            .map(|c| c.setup_at)
            .min()
            .unwrap_or(call.setup_at);
        let first_connect = calls.iter().filter_map(|c| c.connect_at).min();
        let records = [
            facts(
                Leg::Originate,
                &call.conf_id,
                &call.destination,
                call.setup_at,
                call.connect_at,
            )
            .record(Some(&leg_end)),
            facts(
                Leg::Answer,
                &call.session_id,
                &call.access_number,
                first_setup,
                first_connect,
            )
            .record(Some(&leg_end)),
        ];
        self.enqueue_accounting(&records, end.disconnect_at).await
    }

    /// Takes over the queued records of nodes silent for longer than the reservation grace
    /// (a node that died with records unsent); returns how many.
    pub async fn claim_orphaned_accounting(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let silent_since = ms(now) - self.cfg.reservation_grace.as_millis() as i64;
        let done = sqlx::query(
            "UPDATE radius_outbox SET node = $1 WHERE node <> $1 AND event_at < $2 \
             AND node NOT IN (SELECT id FROM nodes WHERE heartbeat_at >= $2)",
        )
        .bind(&self.cfg.node_id)
        .bind(silent_since)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Up to `limit` of this node's queued records after `after`, in queue order.
    pub async fn pending_accounting(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, conf_id, leg, status, event_at, attributes FROM radius_outbox \
             WHERE node = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(&self.cfg.node_id)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let (conf, leg, status, text): (String, String, String, String) = (
                    r.try_get("conf_id")?,
                    r.try_get("leg")?,
                    r.try_get("status")?,
                    r.try_get("attributes")?,
                );
                Ok(Queued {
                    id: r.try_get("id")?,
                    event_at: at_ms(r.try_get("event_at")?),
                    record: Record::from_text(&conf, &leg, &status, &text),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// The server acknowledged the record queued as `id`.
    pub async fn ack_accounting(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM radius_outbox WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many records wait for the RADIUS server, all nodes together.
    pub async fn accounting_queue_depth(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM radius_outbox")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}
