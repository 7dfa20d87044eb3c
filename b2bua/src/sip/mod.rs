//! SIP for the B2BUA: framing and parsing ([`framer`], [`message`]), RFC 3261 transactions
//! without I/O ([`transaction`]), dialogs ([`dialog`]), digest answers to a gateway's
//! challenge ([`digest`]) and the checking of our subscribers' answers to ours
//! ([`digest_server`]), the session-timer headers ([`session_timer`]), those of reliable
//! provisional responses ([`reliable`]) and how a caller is presented to a carrier
//! ([`identity`]).
//!
//! rsip is used only inside [`message`]; everything else sees our accessors, so the parser
//! could be swapped without touching the call logic.

pub mod dialog;
pub mod digest;
pub mod digest_server;
pub mod framer;
pub mod identity;
pub mod message;
pub mod reliable;
pub mod session_timer;
pub mod transaction;
