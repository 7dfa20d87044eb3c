//! RADIUS for the debit card, both ways: the store answering gateways that run Cisco's
//! debit-card application (AAA server), and our own calls reported to an operator's RADIUS
//! billing (accounting client). Everything here is I/O-free or talks only to the store; the
//! sockets are the daemon's.

pub mod aaa;
pub mod acct;
pub mod cache;
pub mod h323;
pub mod legs;
pub mod packet;

pub use packet::{decode_request, encode_reply, RadiusError, Request};
