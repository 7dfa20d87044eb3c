//! What goes into a [`Call`](super::Call) and what comes out: the whole vocabulary between the
//! call and the engine that carries it, so that a test can play the engine's part.

use super::legs::Side;
use crate::media::engine::MediaEvent;
use crate::media::sdp::Codec;
use crate::sip::message::{Request, Response};
use crate::sip::transaction::TxKey;
use crate::transport::Peer;
use chrono::{DateTime, Utc};
use prompts::set::Prompt;
use rating::radius::acct::Record;
use rating::store::{
    AccountAnswer, AuthRequest, CallAnswer, CallEnd, CallRequest, Extension, Reservation,
    Settlement,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Something that happened to a call.
#[derive(Debug)]
pub enum Input {
    /// A request inside one of the call's dialogs, on `side`, with its server transaction.
    Request { side: Side, tx: TxKey, req: Request },
    /// The caller cancelled the INVITE whose server transaction is `invite` (the CANCEL itself
    /// has been answered 200 by the transaction layer).
    Cancel { invite: TxKey },
    /// An ACK inside one of the call's dialogs, from `from`.
    Ack {
        side: Side,
        req: Request,
        from: Peer,
    },
    /// A response to one of the call's client transactions; `from` is where it was sent.
    Response {
        tx: TxKey,
        resp: Response,
        from: Peer,
    },
    /// A client transaction of the call got no final answer in time.
    Timeout { tx: TxKey },
    /// A 2xx the call sent on server transaction `tx` was never acknowledged.
    NoAck { tx: TxKey },
    /// A 2xx retransmitted on `side` after its transaction ended.
    Stray2xx { side: Side, resp: Response },
    /// The store answered.
    Store(Answer),
    /// The call's media reported something.
    Media(MediaEvent),
    /// A timer the call asked for (or any earlier one) is due.
    Timer,
    /// The node is stopping: end the call now.
    Shutdown,
}

/// Something the call wants done.
#[derive(Debug)]
pub enum Output {
    /// Answer server transaction `tx`.
    Respond { tx: TxKey, resp: Response },
    /// Start a client transaction for `req` (its key is `tx`) toward `peer`.
    Send { tx: TxKey, req: Request, peer: Peer },
    /// Send a request that has no transaction (the ACK of a 2xx).
    Ack { req: Request, peer: Peer },
    /// Stop and forget client transaction `tx` (a gateway that never said anything).
    Abandon(TxKey),
    /// The ACK of the 2xx on server transaction `tx` arrived: stop resending it.
    Acked(TxKey),
    /// Requests with this Call-ID belong to this call's `side` from now on.
    Route { call_id: String, side: Side },
    /// Requests with this Call-ID are no longer this call's.
    Unroute { call_id: String },
    /// Something for the call's RTP.
    Media(MediaCmd),
    /// Something for the store; its answer comes back as [`Input::Store`] where one is due.
    Store(Ask),
    /// A hold the call no longer wants (its answer came after the call stopped waiting):
    /// release it; nothing comes back.
    Release(Reservation),
    /// Accounting records to queue for the RADIUS accounting server.
    Account {
        records: Vec<Record>,
        at: DateTime<Utc>,
    },
    /// Wake the call with [`Input::Timer`] at this instant.
    Timer(Instant),
    /// The call is over and everything it owed is done: forget it.
    Ended,
}

/// A command for the call's RTP session.
#[derive(Debug)]
pub enum MediaCmd {
    /// Where and how to send to a leg, as its SDP said.
    Remote {
        side: Side,
        addr: SocketAddr,
        codec: (u8, Codec),
        telephone_event: Option<u8>,
        /// The key the leg's peer encrypts with, when the leg speaks SRTP.
        srtp: Option<crate::media::srtp::Key>,
    },
    /// The address a leg's signalling comes from (its RTP may come from there too).
    Signalling { side: Side, ip: IpAddr },
    /// Relay between the legs, or stop relaying.
    Bridge(bool),
    /// Play prompts to one leg (the caller's, in a flow); [`MediaEvent::PromptDone`] follows.
    Play {
        side: Side,
        prompts: Vec<Arc<Prompt>>,
    },
    /// Stop a playing prompt (barge-in).
    StopPlayback,
    /// A SIP INFO's DTMF body from the caller, for the digit detector; its digits come back as
    /// [`Input::Media`].
    InfoDigits(String),
    /// Close the RTP sockets.
    Close,
}

/// A question or an order for the store.
#[derive(Debug)]
pub enum Ask {
    /// Phase 2 for a destination: the hold and the talk time. Answer: [`Answer::Call`].
    AuthorizeCall(CallRequest),
    /// Phase 1, the card and PIN alone. Answer: [`Answer::Account`].
    AuthorizeAccount(AuthRequest),
    /// Hold the next chunk of a running call. Answer: [`Answer::Extended`].
    Extend { conf_id: String },
    /// Record that the called party answered, so a sweeper charges the call if this node dies.
    MarkConnected { conf_id: String },
    /// Charge the call and release its hold. Answer: [`Answer::Settled`].
    Settle { conf_id: String, end: CallEnd },
}

/// The store's answer to an [`Ask`].
#[derive(Debug)]
pub enum Answer {
    /// Phase 2's answer.
    Call(Box<CallAnswer>),
    /// Phase 1's answer.
    Account(Box<AccountAnswer>),
    /// The engine refused an authorization without asking the store (card or PIN guessing):
    /// the return code to act on.
    Refused(rating::ReturnCode),
    /// An extension's outcome.
    Extended(Result<Extension, String>),
    /// A settlement's outcome.
    Settled(Result<Settlement, String>),
}
