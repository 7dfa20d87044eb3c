//! A SIP account's calls at once, counted across every node behind one database. Each node
//! could count only its own, so an account allowed two calls could have two on each node; here
//! a call is counted in `sip_calls` under the account row's lock before it is placed, and the
//! count is of the calls of nodes still alive. Both operations go through the group-commit
//! writer like a REGISTER, and both may be asked again (a retry after a timeout): a call
//! counted under its key is counted once, and releasing a released call changes nothing.

use super::exec::Exec;
use super::ops::Params;
use super::StoreError;

/// A call counted against its account's limit, to be released when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSlot {
    pub sip_account_id: i64,
    /// The node's unique name for the call.
    pub key: String,
}

/// Counts the call `key` against the account's `max` calls at once: `true` if it is counted
/// (now or by an earlier ask), `false` if the account has `max` calls already on the nodes
/// that are alive (this one, and those whose heartbeat is within the grace).
pub(crate) async fn claim<E: Exec>(
    e: &mut E,
    p: &Params,
    slot: &CallSlot,
    max: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let id = slot.sip_account_id;
    super::registrations::lock_sip_account(e, id).await?;
    let counted = e
        .row(
            "SELECT 1 FROM sip_calls WHERE sip_account_id = $1 AND call_key = $2",
            &[id.into(), (&slot.key).into()],
        )
        .await?;
    if counted.is_some() {
        return Ok(true);
    }
    let alive_since = now_ms - p.grace_ms;
    let running = e
        .row(
            "SELECT COUNT(*) FROM sip_calls WHERE sip_account_id = $1 AND (node = $2 OR node IN \
             (SELECT id FROM nodes WHERE heartbeat_at >= $3))",
            &[id.into(), (&p.node_id).into(), alive_since.into()],
        )
        .await?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
    if running >= max {
        return Ok(false);
    }
    e.exec(
        "INSERT INTO sip_calls (sip_account_id, call_key, node, started_at) \
         VALUES ($1, $2, $3, $4)",
        &[
            id.into(),
            (&slot.key).into(),
            (&p.node_id).into(),
            now_ms.into(),
        ],
    )
    .await?;
    Ok(true)
}

/// The call is over: it no longer counts.
pub(crate) async fn release<E: Exec>(e: &mut E, slot: &CallSlot) -> Result<(), StoreError> {
    e.exec(
        "DELETE FROM sip_calls WHERE sip_account_id = $1 AND call_key = $2",
        &[slot.sip_account_id.into(), (&slot.key).into()],
    )
    .await?;
    Ok(())
}
