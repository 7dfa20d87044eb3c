//! Digest authentication as a server (RFC 3261 §22.4 with RFC 7616 and RFC 8760): the
//! challenges our registrar and our subscribers' INVITEs get, and the check of the answer
//! against the HA1 the store keeps. I/O-free: the time is passed in, the HA1 too.
//!
//! Nonces are stateless — the time they were issued and a random part, sealed with an HMAC
//! under the node's secret — so any node that shares the secret can check one another issued, and a
//! forged or altered nonce is refused without a lookup. One lives `lifetime`; after that it
//! is answered with a fresh challenge marked `stale=true`, so a client re-answers without
//! asking its user again (RFC 7616 §3.3). Replays are stopped by [`Replays`]: each nonce's
//! highest `nc` seen, a nonce without `qop` usable once.

use super::digest::{params, Algorithm};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// The longest `Authorization` we read: far more than any client sends.
const MAX_AUTHORIZATION: usize = 4096;

/// An answer to one of our challenges, from an `Authorization` or `Proxy-Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    /// `qop=auth`, with its client nonce and count; `None`: an RFC 2069 answer.
    pub qop: Option<(String, u32)>,
}

impl Answer {
    /// Reads an answer; the error says what is missing or wrong (for the log and a 400).
    pub fn parse(value: &str) -> Result<Answer, String> {
        if value.len() > MAX_AUTHORIZATION {
            return Err("the credentials are too long".into());
        }
        let value = value.trim_start();
        let split = value.find(char::is_whitespace).unwrap_or(value.len());
        let (scheme, rest) = value.split_at(split);
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(format!("credentials of scheme {scheme:?}, not Digest"));
        }
        let pairs = params(rest).ok_or("the credentials are not key=value pairs")?;
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let need = |k: &str| get(k).ok_or_else(|| format!("the credentials have no {k}"));
        let algorithm = match get("algorithm").map(|a| a.to_ascii_uppercase()).as_deref() {
            None | Some("MD5") => Algorithm::Md5,
            Some("SHA-256") => Algorithm::Sha256,
            Some(other) => return Err(format!("algorithm {other:?} is not one we offered")),
        };
        let qop = match get("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = need("nc")?;
                let count = (nc.len() == 8)
                    .then(|| u32::from_str_radix(&nc, 16).ok())
                    .flatten()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("nc {nc:?} is not 8 hex digits"))?;
                Some((need("cnonce")?, count))
            }
            Some(q) => return Err(format!("qop {q:?} is not one we offered")),
        };
        Ok(Answer {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response: need("response")?,
            algorithm,
            qop,
        })
    }

    /// Whether the answer is right for a request with `method`, given the account's HA1
    /// for the answer's algorithm (compared in constant time).
    pub fn is_right(&self, method: &str, ha1: &str) -> bool {
        let h = |s: &str| self.algorithm.hash(s);
        let ha2 = h(&format!("{method}:{}", self.uri));
        let want = match &self.qop {
            Some((cnonce, nc)) => h(&format!(
                "{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}",
                self.nonce
            )),
            None => h(&format!("{ha1}:{}:{ha2}", self.nonce)),
        };
        want.as_bytes()
            .ct_eq(self.response.to_ascii_lowercase().as_bytes())
            .into()
    }
}

/// What a nonce in an answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Ours and alive.
    Fresh,
    /// Ours, but past its lifetime (or from the future beyond the clocks' slack): challenge
    /// again with `stale=true`.
    Stale,
    /// Not one we issued.
    Forged,
}

/// Issues and checks our nonces.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
    lifetime_ms: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime_ms", &self.lifetime_ms)
            .finish_non_exhaustive()
    }
}

/// How far in the future a nonce's time may be (another node's clock).
const SLACK_MS: u64 = 5_000;

impl Nonces {
    /// Nonces sealed with `key` that live `lifetime_ms`.
    pub fn new(key: [u8; 32], lifetime_ms: u64) -> Nonces {
        Nonces { key, lifetime_ms }
    }

    /// The time, a random part (two challenges in one millisecond — a phone's REGISTER and
    /// INVITE — must not share a nonce, or the second answer would count as a replay of the
    /// first) and the HMAC over both.
    fn seal(&self, issued_ms: u64, salt: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&issued_ms.to_be_bytes());
        mac.update(&salt.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{issued_ms:016x}{salt:016x}{}", hex::encode(&tag[..16]))
    }

    /// A nonce issued at `now_ms` (milliseconds since the epoch).
    pub fn issue(&self, now_ms: u64) -> String {
        self.seal(now_ms, rand::random())
    }

    /// Whether `nonce` is one of ours, and alive at `now_ms`.
    pub fn check(&self, nonce: &str, now_ms: u64) -> NonceState {
        let field = |r: std::ops::Range<usize>| {
            nonce
                .get(r)
                .filter(|_| nonce.len() == 64)
                .and_then(|t| u64::from_str_radix(t, 16).ok())
        };
        let (Some(issued), Some(salt)) = (field(0..16), field(16..32)) else {
            return NonceState::Forged;
        };
        if !bool::from(self.seal(issued, salt).as_bytes().ct_eq(nonce.as_bytes())) {
            return NonceState::Forged;
        }
        if issued > now_ms + SLACK_MS || now_ms.saturating_sub(issued) > self.lifetime_ms {
            return NonceState::Stale;
        }
        NonceState::Fresh
    }

    /// The challenge header values for `realm`: one per algorithm offered, in that order,
    /// each with `qop="auth"`. Which to offer is the operator's (`subscribers.algorithms`):
    /// clients that know only MD5 may fail on a SHA-256 challenge beside it instead of
    /// skipping it (baresip 1.0 does), and some answer only the first one (SIPp).
    pub fn challenges(
        &self,
        algorithms: &[Algorithm],
        realm: &str,
        now_ms: u64,
        stale: bool,
    ) -> Vec<String> {
        let nonce = self.issue(now_ms);
        algorithms
            .iter()
            .copied()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
                    realm.replace('\\', "\\\\").replace('"', "\\\""),
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }
}

/// Answers seen per nonce, so none is accepted twice: with `qop`, each `nc` must be above the
/// highest seen for that nonce; without, a nonce counts once. Bounded: past `cap` nonces the
/// oldest are forgotten, and an answer with a forgotten nonce is sent a fresh (stale)
/// challenge rather than accepted — forgetting never lets a replay through.
#[derive(Debug)]
pub struct Replays {
    cap: usize,
    seen: HashMap<String, (u32, u64)>,
    /// Nonces issued before this are forgotten (all older ones were dropped to make room).
    forgotten_before: u64,
}

/// What [`Replays::accept`] says of an answer whose response was right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// First use of this count: accept.
    New,
    /// Seen before: refuse (403, or a fresh challenge).
    Again,
    /// Its nonce is older than what we remember: challenge again with `stale=true`.
    Forgotten,
}

impl Replays {
    /// Remembers at most `cap` nonces.
    pub fn new(cap: usize) -> Replays {
        Replays {
            cap: cap.max(1),
            seen: HashMap::new(),
            forgotten_before: 0,
        }
    }

    /// Records an answer with a fresh nonce issued at `issued_ms` (the nonce's own time).
    pub fn accept(&mut self, nonce: &str, issued_ms: u64, nc: Option<u32>) -> Replay {
        let count = nc.unwrap_or(1);
        if let Some((last, _)) = self.seen.get_mut(nonce) {
            // Without qop a nonce is good once; with it, counts only go up.
            if nc.is_none() || count <= *last {
                return Replay::Again;
            }
            *last = count;
            return Replay::New;
        }
        if issued_ms < self.forgotten_before {
            return Replay::Forgotten;
        }
        if self.seen.len() >= self.cap {
            // Forget the oldest half at once, so this is rare work.
            let mut times: Vec<u64> = self.seen.values().map(|(_, t)| *t).collect();
            times.sort_unstable();
            let cut = times[times.len() / 2];
            self.seen.retain(|_, (_, t)| *t > cut);
            self.forgotten_before = self.forgotten_before.max(cut + 1);
            crate::metrics::get().limit_hit("digest_nonces");
            if issued_ms < self.forgotten_before {
                return Replay::Forgotten;
            }
        }
        self.seen.insert(nonce.to_string(), (count, issued_ms));
        Replay::New
    }

    /// Forgets nonces issued before `before_ms` (past their lifetime: they are stale anyway).
    pub fn expire(&mut self, before_ms: u64) {
        self.seen.retain(|_, (_, t)| *t >= before_ms);
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The time a nonce of ours was issued at (for [`Replays::accept`]); `None` if it is not one.
pub fn issued_at(nonce: &str) -> Option<u64> {
    nonce
        .get(..16)
        .and_then(|t| u64::from_str_radix(t, 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::{authorization, Challenge, Credentials};

    const KEY: [u8; 32] = [7; 32];
    const T: u64 = 1_796_600_000_000;

    fn ha1(alg: Algorithm) -> String {
        alg.hash("alice:voip.example.com:correct horse")
    }

    #[test]
    fn our_client_s_answer_to_our_challenge_is_right_and_nothing_else_is() {
        let nonces = Nonces::new(KEY, 300_000);
        for (i, value) in nonces
            .challenges(
                &[Algorithm::Md5, Algorithm::Sha256],
                "voip.example.com",
                T,
                false,
            )
            .iter()
            .enumerate()
        {
            let ch = Challenge::parse(value).expect("a challenge our own client reads");
            assert_eq!(ch.algorithm, [Algorithm::Md5, Algorithm::Sha256][i]);
            assert!(ch.qop_auth);
            let cred = Credentials {
                username: "alice",
                password: "correct horse",
            };
            let v = authorization(&ch, cred, "REGISTER", "sip:voip.example.com", "cn1", 1);
            let a = Answer::parse(&v).unwrap();
            assert_eq!(a.qop, Some(("cn1".into(), 1)));
            assert_eq!(nonces.check(&a.nonce, T + 1000), NonceState::Fresh);
            assert!(a.is_right("REGISTER", &ha1(a.algorithm)));
            assert!(!a.is_right("INVITE", &ha1(a.algorithm)), "another method");
            let wrong = a.algorithm.hash("alice:voip.example.com:wrong");
            assert!(!a.is_right("REGISTER", &wrong), "another password");
        }
        // An RFC 2069 answer (no qop) is checked too.
        let ch = Challenge {
            realm: "voip.example.com".into(),
            nonce: nonces.issue(T),
            opaque: None,
            algorithm: Algorithm::Md5,
            qop_auth: false,
        };
        let cred = Credentials {
            username: "alice",
            password: "correct horse",
        };
        let a = Answer::parse(&authorization(&ch, cred, "INVITE", "sip:1@x", "", 1)).unwrap();
        assert_eq!(a.qop, None);
        assert!(a.is_right("INVITE", &ha1(Algorithm::Md5)));
    }

    #[test]
    fn nonces_are_ours_alive_stale_or_forged() {
        let nonces = Nonces::new(KEY, 300_000);
        let n = nonces.issue(T);
        assert_eq!(n.len(), 64);
        assert_ne!(n, nonces.issue(T), "two in one millisecond differ");
        assert_eq!(issued_at(&n), Some(T));
        assert_eq!(nonces.check(&n, T + 299_000), NonceState::Fresh);
        assert_eq!(nonces.check(&n, T + 301_000), NonceState::Stale);
        assert_eq!(
            nonces.check(&n, T - 10_000),
            NonceState::Stale,
            "from the future"
        );
        let other = Nonces::new([8; 32], 300_000);
        assert_eq!(other.check(&n, T), NonceState::Forged, "another key");
        let mut altered = n.clone().into_bytes();
        altered[3] = if altered[3] == b'0' { b'1' } else { b'0' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(
            nonces.check(&altered, T),
            NonceState::Forged,
            "its time moved"
        );
        for bad in [
            "",
            "x",
            &n[..63],
            &format!("{n}0"),
            &format!("zz{}", &n[2..]),
        ] {
            assert_eq!(nonces.check(bad, T), NonceState::Forged, "{bad:?}");
        }
        let stale = nonces.challenges(&[Algorithm::Md5], "r", T, true);
        assert!(stale.iter().all(|c| c.ends_with(", stale=true")));
    }

    #[test]
    fn answers_that_are_not_ours_to_check_say_why() {
        for (v, says) in [
            ("Basic YWxpY2U6eA==", "not Digest"),
            ("Digest", "no username"),
            ("Digest username=\"a\"", "no realm"),
            ("Digest username=a, realm=r, nonce=n, uri=u", "no response"),
            ("Digest username=a, realm=r, nonce=n, uri=u, response=x, algorithm=SHA-512-256", "not one we offered"),
            ("Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth-int", "not one we offered"),
            ("Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, nc=1, cnonce=c", "8 hex digits"),
            ("Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, nc=00000000, cnonce=c", "8 hex digits"),
            ("Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, nc=00000001", "no cnonce"),
            ("Digest username=\"unterminated", "key=value"),
        ] {
            let e = Answer::parse(v).unwrap_err();
            assert!(e.contains(says), "{v}: {e}");
        }
        assert!(Answer::parse(&format!("Digest username=\"{}\"", "a".repeat(5000))).is_err());
    }

    #[test]
    fn no_answer_counts_twice_and_forgetting_never_lets_one_through() {
        let mut r = Replays::new(4);
        assert_eq!(r.accept("n1", T, Some(1)), Replay::New);
        assert_eq!(r.accept("n1", T, Some(1)), Replay::Again, "the same nc");
        assert_eq!(r.accept("n1", T, Some(2)), Replay::New);
        assert_eq!(r.accept("n1", T, Some(2)), Replay::Again);
        assert_eq!(r.accept("plain", T, None), Replay::New);
        assert_eq!(
            r.accept("plain", T, None),
            Replay::Again,
            "without qop, once"
        );
        for i in 0..10 {
            assert_eq!(r.accept(&format!("m{i}"), T + 10 + i, Some(1)), Replay::New);
        }
        assert!(r.len() <= 4, "bounded: {}", r.len());
        // Forgotten nonces are old ones: challenged again, not accepted.
        assert_eq!(r.accept("n1", T, Some(1)), Replay::Forgotten);
        r.expire(T + 15);
        assert!(r.len() <= 4);
        assert_eq!(
            r.accept("m9", T + 19, Some(1)),
            Replay::Again,
            "still remembered"
        );
    }
}
