//! Media: what the B2BUA does with a call's audio. So far the I/O-free parts: digit detection
//! from every source with long pound ([`dtmf`]). RTP sockets, prompt playback and the relay are
//! the rest of the media issue.

pub mod dtmf;
pub mod sdp;
