//! Our calls as RADIUS accounting records (Cisco's debit-card vocabulary), written to the
//! store's outbox when each leg starts and stops; `crate::radius_acct` sends them. Nothing
//! is written when no accounting server is configured.
//!
//! What each record says is `rating::radius::legs`, shared with the sweeper, which writes the
//! Stop records of calls whose node died.

use super::call::Call;
use super::Engine;
use chrono::Utc;
use rating::radius::acct::{Leg, Record};
pub(super) use rating::radius::legs::LegEnd;
use rating::radius::legs::LegFacts;
use std::sync::atomic::Ordering;

impl Engine {
    fn gw_id(&self) -> String {
        self.cfg
            .radius_accounting
            .as_ref()
            .and_then(|a| a.gw_id.clone())
            .unwrap_or_else(|| self.store.config().node_id.clone())
    }

    /// The record for one leg of `call`; `end` makes it a Stop.
    fn leg_record(&self, call: &Call, leg: Leg, end: Option<&LegEnd>) -> Record {
        let (id, setup, connect, called, remote) = match leg {
            Leg::Answer => (
                &call.session_id,
                call.a.setup,
                call.a.connect,
                &call.access_number,
                Some(call.a.peer.addr),
            ),
            Leg::Originate => (
                &call.conf_id,
                call.b_setup.unwrap_or(call.a.setup),
                call.connected,
                &call.destination,
                call.b_remote,
            ),
        };
        let gw_id = self.gw_id();
        LegFacts {
            leg,
            id,
            session_id: &call.session_id,
            account: &call.account,
            ani: &call.ani,
            called,
            setup,
            connect,
            remote: remote.map(|r| r.ip()),
            gw_id: &gw_id,
        }
        .record(end)
    }

    /// Queues the records of call `id`'s legs: each of `legs` starts, or with `end` stops.
    pub(super) fn account(&self, id: u64, legs: &[Leg], end: Option<&LegEnd>) {
        if self.cfg.radius_accounting.is_none() {
            return;
        }
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let records: Vec<Record> = legs
            .iter()
            .map(|leg| self.leg_record(call, *leg, end))
            .collect();
        let at = end.map_or_else(Utc::now, |e| e.disconnect_at);
        let writes = self.accounting_writes.clone();
        writes.fetch_add(1, Ordering::AcqRel);
        self.spawn_store(move |store| async move {
            if let Err(e) = store.enqueue_accounting(&records, at).await {
                tracing::error!(error = %e, "could not queue accounting records; they are lost");
            }
            writes.fetch_sub(1, Ordering::AcqRel);
            None
        });
    }
}
