//! The call itself, without I/O: what a prepaid call decides, given what happened and when.
//!
//! Nothing in here reads a clock, opens a socket or spawns a task; every input carries the
//! current time, so a call's rules are unit tests that run in microseconds. The engine
//! (`crate::engine`) is the shell that feeds these types from the network, the store and the
//! media, and carries out what they answer.
//!
//! This module is being grown out of the engine piece by piece (issue 17): today it holds the
//! money clock of a bridged call and the gateway channels its B-leg holds; the bridge's end
//! reason is [`ivr::BridgeEnd`].

pub mod channels;
pub mod clock;

pub use channels::{Channel, Channels};
pub use clock::{Cutoff, Grant, MoneyClock, Tick};
pub use ivr::BridgeEnd;
