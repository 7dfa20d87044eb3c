//! Media: what the B2BUA does with a call's audio. The I/O-free parts are here: digit detection
//! from every source with long pound ([`dtmf`]), SDP offer/answer ([`sdp`]), RTP sequence and
//! timestamp continuity, reception statistics and voice quality ([`rtp`]), and prompt playback
//! timing from one timer service ([`pacer`]). The sockets that carry them are the rest of the
//! media issue.

pub mod codec;
pub mod dtmf;
pub mod engine;
pub mod pacer;
pub mod rtp;
pub mod sdp;
pub mod srtp;
