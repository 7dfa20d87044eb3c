//! The two legs of a call and the SIP each one speaks: the caller's leg (A), answered by us,
//! and the gateway leg (B), dialled by us. Each leg is its own dialog: nothing of the caller's
//! Via, Record-Route or Contact reaches the gateway, and nothing of the gateway's reaches the
//! caller.

use super::channels::Channel;
use super::session::{Agreed, SessionTimer};
use crate::media::engine as media;
use crate::media::sdp;
use crate::routing::Proto;
use crate::sip::dialog::Dialog;
use crate::sip::message::{hdr, response_to, Headers, Request, Response, SipExt, ALLOW};
use crate::sip::transaction::TxKey;
use crate::transport::Peer;
use chrono::{DateTime, Utc};

/// Which leg of a call a message, a packet or a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller's leg.
    A,
    /// The gateway's leg.
    B,
}

impl Side {
    /// The leg across the call.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// 0 for A, 1 for B: the index of per-leg arrays, the media engine's included.
    pub fn index(self) -> usize {
        match self {
            Side::A => media::A,
            Side::B => media::B,
        }
    }
}

/// Our own addresses as they appear in Via and Contact.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Our UDP host:port, if we listen on UDP.
    pub udp: Option<String>,
    /// Our TCP host:port, if we listen on TCP.
    pub tcp: Option<String>,
    /// Our TLS host:port, if we listen on TLS.
    pub tls: Option<String>,
}

impl Local {
    /// The host:port a peer on `proto` reaches us at.
    pub fn hostport(&self, proto: Proto) -> &str {
        let order = match proto {
            Proto::Udp => [&self.udp, &self.tcp, &self.tls],
            Proto::Tcp => [&self.tcp, &self.udp, &self.tls],
            Proto::Tls => [&self.tls, &self.tcp, &self.udp],
        };
        order
            .into_iter()
            .find_map(|h| h.as_deref())
            .unwrap_or("127.0.0.1")
    }

    /// Our Via sent-by with transport, without branch.
    pub fn via(&self, proto: Proto) -> String {
        format!("SIP/2.0/{proto} {}", self.hostport(proto))
    }

    /// A whole Via of ours for a new request on `proto`: its `branch`, and `rport` so the
    /// answer finds us behind NAT (RFC 3581).
    pub fn via_with(&self, proto: Proto, branch: &str) -> String {
        format!("{};branch={branch};rport", self.via(proto))
    }

    /// Our Contact for a peer on `proto`.
    pub fn contact(&self, proto: Proto) -> String {
        format!("<sip:b2bua@{}{}>", self.hostport(proto), proto.uri_param())
    }
}

/// The caller's leg: where it came from, its INVITE and our answer to it.
#[derive(Debug)]
pub struct ALeg {
    /// Where the caller's signalling comes from.
    pub peer: Peer,
    /// The caller's INVITE.
    pub invite: Request,
    /// The server INVITE transaction's key.
    pub tx: TxKey,
    /// Our To tag, the same in every response to the INVITE.
    pub tag: String,
    /// The dialog, once we (or the gateway, through us) answered.
    pub dialog: Option<Dialog>,
    /// The caller's SDP offer.
    pub offer: sdp::Audio,
    /// Our SDP answer to the caller, made once and sent in the 18x and the 200.
    pub answer: Option<String>,
    /// Whether the INVITE has had its final response.
    pub answered: bool,
    /// When the caller's INVITE arrived, and when it was answered.
    pub setup: DateTime<Utc>,
    /// When the caller got its 200.
    pub connect: Option<DateTime<Utc>>,
    /// The session timer our 200 is to agree, and the one it runs once sent.
    pub agreed: Option<Agreed>,
    pub session: Option<SessionTimer>,
    /// Our reliable 18x, when the caller asked for them (RFC 3262).
    pub reliable: Option<crate::sip::reliable::Sender>,
    /// Our 200, waiting for the PRACK of a reliable 18x that carried SDP.
    pub held_ok: Option<Response>,
}

impl ALeg {
    /// A response to the caller's INVITE, with our tag.
    pub fn response(&self, code: u16) -> Response {
        response_to(&self.invite, code, Some(&self.tag))
    }
}

/// The gateway leg: one attempt at one gateway, or at one registered contact of a
/// subscriber.
#[derive(Debug)]
pub struct BLeg {
    /// The gateway channel this attempt holds, until the call gives it back.
    pub channel: Option<Channel>,
    /// The gateway.
    pub peer: Peer,
    /// The client INVITE transaction's key.
    pub tx: TxKey,
    /// Our INVITE.
    pub invite: Request,
    /// The dialog, once the gateway answered.
    pub dialog: Option<Dialog>,
    /// Whether the gateway has said anything (a gateway that says nothing is dead).
    pub heard: bool,
    /// Whether the INVITE has had its final response.
    pub done: bool,
    /// The session timer the gateway's 2xx agreed, if any.
    pub session: Option<SessionTimer>,
    /// The early dialog a reliable provisional response opened (RFC 3262), and the `RSeq` of
    /// the last one we acknowledged on it.
    pub early: Option<(Dialog, u32)>,
    /// Whether our offer on this leg was SRTP (the gateway's setting, or a subscriber's
    /// binding over TLS): its answer must then carry a key.
    pub srtp: bool,
}

impl BLeg {
    /// A leg whose INVITE (on transaction `tx`) has just gone to `peer`.
    pub fn dialled(
        channel: Option<Channel>,
        peer: Peer,
        tx: TxKey,
        invite: Request,
        srtp: bool,
    ) -> BLeg {
        BLeg {
            channel,
            peer,
            tx,
            invite,
            dialog: None,
            heard: false,
            done: false,
            session: None,
            early: None,
            srtp,
        }
    }
}

/// The SIP answer a refused authorization gives a pinless caller (there is no IVR to explain).
pub fn sip_code_for(code: rating::ReturnCode) -> u16 {
    use rating::ReturnCode as R;
    match code {
        R::AccountInUse => 486,
        R::ZeroBalance | R::InsufficientFunds | R::CreditLimit => 402,
        R::ServiceNotAvailable => 503,
        R::InvalidArgument => 484,
        _ => 403,
    }
}

/// The words on the status line of a refusal a subscriber's softphone shows its user: its
/// own account's state, which it may know (a card caller is told by the IVR instead).
pub fn subscriber_phrase(code: rating::ReturnCode) -> &'static str {
    use rating::ReturnCode as R;
    match code {
        R::ZeroBalance | R::InsufficientFunds | R::CreditLimit => "insufficient funds",
        R::UserDenied => "account blocked",
        R::AccountInUse => "account in use",
        R::CalledNumberBlocked | R::TollFreeOnly => "number barred",
        R::ServiceNotAvailable => "service not available",
        other => other.meaning(),
    }
}

/// The only headers that cross from one leg to the other with a relayed request or response:
/// what describes the body. Everything else (Route, Contact, P-Asserted-Identity, Privacy,
/// X- headers …) is each leg's own, so a caller cannot steer or impersonate toward the
/// carrier, and a carrier's topology does not reach the caller.
pub const RELAYED_HEADERS: [&str; 3] = ["Content-Type", "Content-Disposition", "Content-Language"];

/// Copies a body and its allow-listed headers from one message to another.
pub fn copy_body(from: &impl SipExt, headers: &mut Headers, body: &mut Vec<u8>) {
    if !from.body_bytes().is_empty() {
        for name in RELAYED_HEADERS {
            if let Some(v) = from.header(name) {
                headers.push(hdr(name, v));
            }
        }
        *body = from.body_bytes().to_vec();
    }
}

/// An SDP offer with a codec we have, or why not (for a 488).
pub fn usable_offer(body: &[u8]) -> Result<sdp::Audio, String> {
    match sdp::parse(body) {
        Ok(o) if !o.codecs.is_empty() => Ok(o),
        Ok(_) => Err(sdp::SdpError::NoCommonCodec.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a message carries SDP.
pub fn is_sdp(m: &impl SipExt) -> bool {
    !m.body_bytes().is_empty()
        && m.header("Content-Type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/sdp"))
}

/// Puts an SDP body in a response.
pub fn attach_sdp(resp: &mut Response, body: String) {
    resp.headers.push(hdr("Content-Type", "application/sdp"));
    resp.body = body.into_bytes();
}

/// Adds our Contact and Allow to a dialog-making response.
pub fn add_contact(resp: &mut Response, local: &Local, proto: Proto, allow: bool) {
    resp.headers.push(hdr("Contact", local.contact(proto)));
    if allow {
        resp.headers.push(hdr("Allow", ALLOW));
    }
}
