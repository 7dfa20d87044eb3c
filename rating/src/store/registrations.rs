//! A REGISTER's changes to one SIP account's bindings as one store operation (RFC 3261 §10.3
//! steps 6–8): read what is bound, refuse an out-of-order or over-the-limit request before any
//! write, apply the rest, and answer with what is bound now. Written against [`Exec`] like the
//! money operations, so it runs in the group-commit writer's batches beside them: phones
//! behind NAT re-register every minute, and a commit of its own for each REGISTER would be
//! the registrar's ceiling.

use super::exec::{Cells, Exec};
use super::sip::Binding;
use super::{at_ms, StoreError};

/// What a REGISTER asks of an account's bindings, as the registrar read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingChange {
    /// No Contact: only list what is bound.
    Query,
    /// `Contact: *` with `Expires: 0`: remove every binding.
    RemoveAll,
    /// These contacts for these seconds each (0 removes that one).
    Set(Vec<(String, u32)>),
}

/// A REGISTER the registrar has authorized, to apply to the account's bindings.
#[derive(Debug, Clone)]
pub struct Registration {
    pub sip_account_id: i64,
    pub change: BindingChange,
    /// Where it came from (`udp:192.0.2.1:5060`), kept with each binding it makes.
    pub source: String,
    /// The node that took it.
    pub node: String,
    /// The proxies it came through (RFC 3327 Path, nearest first), kept with each binding.
    pub path: Vec<String>,
    pub call_id: String,
    pub cseq: i64,
    /// Bindings the account may have at most.
    pub max_contacts: usize,
}

/// Why a registration changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterRefusal {
    /// A binding it names was last changed by a later request of the same client: a
    /// retransmission or a reordering (RFC 3261 §10.3 step 7).
    OutOfOrder,
    /// It would leave the account more bindings than it may have.
    TooManyContacts,
}

/// What a registration did: the bindings the account has now, or why nothing changed.
pub type Registered = Result<Vec<Binding>, RegisterRefusal>;

pub(crate) const BINDING_COLUMNS: &str = "contact, source, call_id, cseq, expires_at, node, path";

/// Writes one binding, new or refreshed ($1 the SIP account, $2..$7 the binding's columns in
/// [`Binding`]'s order, $8 the path's text, $9 now): the one statement every way a binding is written uses.
pub(crate) const UPSERT_BINDING: &str =
    "INSERT INTO sip_bindings (sip_account_id, contact, source, call_id, cseq, \
     expires_at, node, path, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (sip_account_id, contact) DO UPDATE SET source = excluded.source, \
     call_id = excluded.call_id, cseq = excluded.cseq, \
     expires_at = excluded.expires_at, node = excluded.node, path = excluded.path, \
     updated_at = excluded.updated_at";

fn binding(r: &Cells) -> Result<Binding, StoreError> {
    Ok(Binding {
        contact: r.text(0)?,
        source: r.text(1)?,
        call_id: r.text(2)?,
        cseq: r.int(3)?,
        expires_at: at_ms(r.int(4)?),
        node: r.text(5)?,
        path: super::sip::path_of(&r.text(6)?),
    })
}

/// Whether a REGISTER may change a binding it names: one from the same client (Call-ID)
/// must count up, else it is an old retransmission or a reordering.
pub fn in_order(existing: &Binding, call_id: &str, cseq: i64) -> bool {
    existing.call_id != call_id || cseq > existing.cseq
}

/// Why `set` may not be applied to `bound`, if it may not.
fn refusal(bound: &[Binding], set: &[(String, u32)], r: &Registration) -> Option<RegisterRefusal> {
    let named = |b: &&Binding| set.iter().any(|(c, _)| *c == b.contact);
    if bound
        .iter()
        .filter(named)
        .any(|b| !in_order(b, &r.call_id, r.cseq))
    {
        return Some(RegisterRefusal::OutOfOrder);
    }
    let kept = bound.iter().filter(|b| !named(b)).count();
    let added = set.iter().filter(|(_, s)| *s > 0).count();
    (kept + added > r.max_contacts).then_some(RegisterRefusal::TooManyContacts)
}

/// Takes the SIP account row's lock for the rest of the transaction (PostgreSQL; SQLite's
/// writer holds the file's): what two nodes do to one account's bindings or calls at once
/// they then do one after the other.
pub(crate) async fn lock_sip_account<E: Exec>(e: &mut E, id: i64) -> Result<(), StoreError> {
    e.exec(
        "UPDATE sip_accounts SET status = status WHERE id = $1",
        &[id.into()],
    )
    .await?;
    Ok(())
}

/// Applies one registration at `now_ms`. The first statement locks the account's row
/// (PostgreSQL; SQLite's writer holds the file's lock), so two nodes registering one
/// account's phones at once count its bindings one after the other.
pub(crate) async fn register<E: Exec>(
    e: &mut E,
    r: &Registration,
    now_ms: i64,
) -> Result<Registered, StoreError> {
    let id = r.sip_account_id;
    lock_sip_account(e, id).await?;
    let rows = e
        .rows(
            &format!(
                "SELECT {BINDING_COLUMNS} FROM sip_bindings WHERE sip_account_id = $1 \
                 AND expires_at > $2"
            ),
            &[id.into(), now_ms.into()],
        )
        .await?;
    let mut bound = rows.iter().map(binding).collect::<Result<Vec<_>, _>>()?;
    match &r.change {
        BindingChange::Query => {}
        BindingChange::RemoveAll => {
            e.exec(
                "DELETE FROM sip_bindings WHERE sip_account_id = $1",
                &[id.into()],
            )
            .await?;
            bound.clear();
        }
        BindingChange::Set(set) => {
            if let Some(why) = refusal(&bound, set, r) {
                return Ok(Err(why));
            }
            for (contact, secs) in set {
                bound.retain(|b| b.contact != *contact);
                if *secs == 0 {
                    e.exec(
                        "DELETE FROM sip_bindings WHERE sip_account_id = $1 AND contact = $2",
                        &[id.into(), contact.into()],
                    )
                    .await?;
                    continue;
                }
                let b = Binding {
                    contact: contact.clone(),
                    source: r.source.clone(),
                    call_id: r.call_id.clone(),
                    cseq: r.cseq,
                    expires_at: at_ms(now_ms + i64::from(*secs) * 1000),
                    node: r.node.clone(),
                    path: r.path.clone(),
                };
                e.exec(
                    UPSERT_BINDING,
                    &[
                        id.into(),
                        (&b.contact).into(),
                        (&b.source).into(),
                        (&b.call_id).into(),
                        b.cseq.into(),
                        b.expires_at.timestamp_millis().into(),
                        (&b.node).into(),
                        super::sip::path_text(&b.path).into(),
                        now_ms.into(),
                    ],
                )
                .await?;
                bound.push(b);
            }
        }
    }
    // As `Store::bindings` lists them: the longest-lived first.
    bound.sort_by(|a, b| {
        b.expires_at
            .cmp(&a.expires_at)
            .then_with(|| a.contact.cmp(&b.contact))
    });
    Ok(Ok(bound))
}
