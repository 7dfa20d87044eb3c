//! SRTP on a leg that negotiated it with SDES (RFC 4568 keys in the SDP, RFC 3711 packets):
//! AES_CM_128_HMAC_SHA1_80, the suite every SDES phone and SBC offers. The crypto is
//! webrtc-rs' `webrtc-srtp`; what is ours is the key handling and the limits.
//!
//! Each leg has two contexts: one with the peer's key for what it sends us (authenticated,
//! with a replay window), one with our key for what we send it. Packets are decrypted only
//! after the leg's address check, so a stranger's packets cost nothing; and since the
//! library keeps state for every SSRC it is shown, a leg hands it at most [`MAX_SSRCS`]
//! different ones, so a peer spraying SSRCs cannot grow our memory.

use webrtc_srtp::context::Context;
use webrtc_srtp::option::srtp_replay_protection;
use webrtc_srtp::protection_profile::ProtectionProfile;

/// The SDES crypto suite we speak.
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

/// A master key (16 bytes) followed by its salt (14 bytes), as SDES carries it inline.
pub type KeySalt = [u8; 30];

/// A peer's key on its way from the call to the media layer; `Debug` does not print it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(pub KeySalt);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<hidden>)")
    }
}

/// SSRCs one leg's peer may use over a call (a re-INVITE may bring a new stream).
pub const MAX_SSRCS: usize = 8;

/// Packets a receiver tolerates out of order before it calls them replays.
const REPLAY_WINDOW: usize = 128;

/// A new random key and salt, from the operating system's generator through `rand`.
pub fn new_key() -> KeySalt {
    rand::random()
}

/// One leg's SRTP: what comes in and what goes out.
pub struct Leg {
    rx: Context,
    tx: Context,
    /// The peer's key, to tell a re-keying SDP from a repeated one.
    theirs: KeySalt,
    ssrcs: Vec<u32>,
}

/// Why an incoming packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It did not authenticate, was a replay, or was too short.
    Auth,
    /// A new SSRC beyond [`MAX_SSRCS`].
    TooManySsrcs,
}

fn context(key: &KeySalt, replay: bool) -> Context {
    let opt = replay.then(|| srtp_replay_protection(REPLAY_WINDOW));
    Context::new(
        &key[..16],
        &key[16..],
        ProtectionProfile::Aes128CmHmacSha1_80,
        opt,
        None,
    )
    // Only the key and salt lengths can fail, and the type fixes them.
    .expect("AES_CM_128 key and salt lengths")
}

impl Leg {
    /// A leg that receives with `theirs` and sends with `ours`.
    pub fn new(theirs: &KeySalt, ours: &KeySalt) -> Leg {
        Leg {
            rx: context(theirs, true),
            tx: context(ours, false),
            theirs: *theirs,
            ssrcs: Vec::new(),
        }
    }

    /// Whether the peer's key is still `theirs`.
    pub fn receives_with(&self, theirs: &KeySalt) -> bool {
        self.theirs == *theirs
    }

    /// The peer re-keyed (a re-INVITE with a new crypto line): what it sends is opened with
    /// the new key from now on. Ours stays, and so does its rollover count, which the peer's
    /// receiver keeps counting.
    pub fn rekey(&mut self, theirs: &KeySalt) {
        self.rx = context(theirs, true);
        self.theirs = *theirs;
        self.ssrcs.clear();
    }

    /// The RTP packet inside an SRTP one from the peer.
    pub fn unprotect(&mut self, packet: &[u8]) -> Result<Vec<u8>, Refused> {
        if packet.len() < 12 {
            return Err(Refused::Auth);
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        if !self.ssrcs.contains(&ssrc) {
            if self.ssrcs.len() >= MAX_SSRCS {
                return Err(Refused::TooManySsrcs);
            }
            self.ssrcs.push(ssrc);
        }
        self.rx
            .decrypt_rtp(packet)
            .map(|b| b.to_vec())
            .map_err(|_| Refused::Auth)
    }

    /// The SRTP packet for an RTP one of ours.
    pub fn protect(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        self.tx.encrypt_rtp(packet).ok().map(|b| b.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    #[test]
    fn what_one_side_protects_the_other_unprotects_once() {
        let (a_key, b_key) = (new_key(), new_key());
        assert_ne!(a_key, b_key);
        let mut a = Leg::new(&b_key, &a_key);
        let mut b = Leg::new(&a_key, &b_key);
        let plain = rtp(7, 1000);
        let sealed = a.protect(&plain).unwrap();
        assert_eq!(sealed.len(), plain.len() + 10, "an 80-bit tag");
        assert_ne!(&sealed[12..172], &plain[12..], "the payload is encrypted");
        assert_eq!(b.unprotect(&sealed).unwrap(), plain);
        assert_eq!(b.unprotect(&sealed), Err(Refused::Auth), "a replay");
        let mut tampered = a.protect(&rtp(7, 1001)).unwrap();
        tampered[20] ^= 1;
        assert_eq!(b.unprotect(&tampered), Err(Refused::Auth));
        // The right key is needed: a third party's packets do not pass.
        let mut stranger = Leg::new(&new_key(), &new_key());
        let forged = stranger.protect(&rtp(7, 1002)).unwrap();
        assert_eq!(b.unprotect(&forged), Err(Refused::Auth));
        assert_eq!(b.unprotect(&[0x80, 0]), Err(Refused::Auth));
    }

    #[test]
    fn a_peer_gets_a_few_ssrcs_and_no_more() {
        let key = new_key();
        let mut tx = Leg::new(&new_key(), &key);
        let mut rx = Leg::new(&key, &new_key());
        for ssrc in 0..MAX_SSRCS as u32 {
            assert!(rx.unprotect(&tx.protect(&rtp(ssrc, 1)).unwrap()).is_ok());
        }
        let extra = tx.protect(&rtp(99, 1)).unwrap();
        assert_eq!(rx.unprotect(&extra), Err(Refused::TooManySsrcs));
        // The known ones go on.
        assert!(rx.unprotect(&tx.protect(&rtp(3, 2)).unwrap()).is_ok());
    }

    #[test]
    fn a_peer_that_re_keys_is_opened_with_its_new_key_and_ours_goes_on() {
        let (ours, old, new) = (new_key(), new_key(), new_key());
        let mut us = Leg::new(&old, &ours);
        let mut peer = Leg::new(&ours, &old);
        assert!(us.unprotect(&peer.protect(&rtp(1, 1)).unwrap()).is_ok());
        assert!(peer.unprotect(&us.protect(&rtp(2, 1)).unwrap()).is_ok());
        let mut peer_new = Leg::new(&ours, &new);
        us.rekey(&new);
        assert!(us.receives_with(&new));
        assert!(us.unprotect(&peer_new.protect(&rtp(1, 2)).unwrap()).is_ok());
        assert!(
            us.unprotect(&peer.protect(&rtp(1, 3)).unwrap()).is_err(),
            "the old key is gone"
        );
        // Our stream was not restarted: the peer's receiver still opens it.
        assert!(peer.unprotect(&us.protect(&rtp(2, 2)).unwrap()).is_ok());
    }
}
