//! The calling-card B2BUA as a library: SIP signalling ([`sip`]), configuration ([`config`]),
//! dial-peer routing ([`routing`]), the prompt sets and flows calls use ([`assets`]), and the daemon
//! that runs calls ([`engine`], [`transport`]).
//! The `b2bua` binary and the fuzz targets are thin layers over it.

pub mod access;
pub mod admin;
pub mod assets;
pub mod call;
pub mod config;
pub mod engine;
pub mod fuzzing;
pub mod limits;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod numbering;
pub mod radius;
pub mod radius_acct;
pub mod registrar;
pub mod routing;
pub mod sip;
pub mod supervise;
pub mod sync;
pub mod tls;
pub mod transport;
