//! Media: what the B2BUA does with a call's audio. The I/O-free parts: digit detection from
//! every source with long pound ([`dtmf`]), SDP offer/answer ([`sdp`]), RTP sequence and
//! timestamp continuity, reception statistics and voice quality ([`rtp`]), prompt playback
//! timing ([`pacer`]), codecs ([`codec`]) and SRTP ([`srtp`]). The sockets: the port pool
//! ([`ports`]), the relay workers that own every call's sockets and carry its packets
//! ([`relay`]), and the engine's handle on a call's media ([`engine`]).

pub mod codec;
pub mod dtmf;
pub mod engine;
pub mod pacer;
pub mod ports;
mod relay;
pub mod rtp;
pub mod sdp;
pub mod srtp;
