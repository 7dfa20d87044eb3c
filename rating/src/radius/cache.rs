//! Answers to recent requests, so that a client's retransmission (same source, identifier and
//! authenticator) gets the first answer again instead of being authorized or billed twice.
//! A retransmission that arrives while the first copy is still being answered is dropped: the
//! client will send again and then find the answer here. Time is an input.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What identifies one request from one client (RFC 5080 §2.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub client: SocketAddr,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

/// What to do with a request that just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// New: answer it, then [`ReplyCache::answered`].
    New,
    /// Being answered right now: drop this copy.
    InProgress,
    /// Answered before: send these bytes again.
    Answered(Vec<u8>),
}

/// A bounded cache of recent answers.
pub struct ReplyCache {
    ttl: Duration,
    max: usize,
    /// Each request's arrival (which names its place in `order`) and its answer, once sent.
    entries: HashMap<Key, (Instant, Option<Vec<u8>>)>,
    order: VecDeque<(Instant, Key)>,
}

impl ReplyCache {
    /// Keeps answers for `ttl` (longer than any client retries), at most `max` of them.
    pub fn new(ttl: Duration, max: usize) -> ReplyCache {
        ReplyCache {
            ttl,
            max,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.ttl && self.order.len() <= self.max {
                break;
            }
            let (at, k) = self.order.pop_front().expect("checked");
            // An abandoned request that came again has a newer place in the queue; only
            // that one forgets it.
            if self.entries.get(&k).is_some_and(|(since, _)| *since == at) {
                self.entries.remove(&k);
            }
        }
    }

    /// Notes an arriving request and says what to do with it.
    pub fn arrive(&mut self, key: Key, now: Instant) -> Seen {
        self.expire(now);
        match self.entries.get(&key) {
            Some((_, Some(bytes))) => Seen::Answered(bytes.clone()),
            Some((_, None)) => Seen::InProgress,
            None => {
                self.entries.insert(key.clone(), (now, None));
                self.order.push_back((now, key));
                Seen::New
            }
        }
    }

    /// Keeps the answer to a request that [`arrive`](Self::arrive) called new.
    pub fn answered(&mut self, key: &Key, bytes: Vec<u8>) {
        if let Some((_, slot)) = self.entries.get_mut(key) {
            *slot = Some(bytes);
        }
    }

    /// Forgets a request that got no answer (the store failed): its resend is then new.
    pub fn abandon(&mut self, key: &Key) {
        if matches!(self.entries.get(key), Some((_, None))) {
            self.entries.remove(key);
        }
    }

    /// Requests remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8) -> Key {
        Key {
            client: "127.0.0.1:5000".parse().unwrap(),
            identifier: id,
            authenticator: [id; 16],
        }
    }

    #[test]
    fn a_resend_gets_the_first_answer_or_waits_for_it() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(Duration::from_secs(30), 100);
        assert_eq!(c.arrive(key(1), t0), Seen::New);
        assert_eq!(c.arrive(key(1), t0), Seen::InProgress);
        c.answered(&key(1), vec![2, 1]);
        assert_eq!(c.arrive(key(1), t0), Seen::Answered(vec![2, 1]));
        // Same identifier, new authenticator: a new request.
        let mut other = key(1);
        other.authenticator = [9; 16];
        assert_eq!(c.arrive(other, t0), Seen::New);
        // Abandoned (store down): the resend is answered afresh.
        assert_eq!(c.arrive(key(2), t0), Seen::New);
        c.abandon(&key(2));
        assert_eq!(c.arrive(key(2), t0), Seen::New);
        // After the time to live, forgotten.
        assert_eq!(c.arrive(key(1), t0 + Duration::from_secs(31)), Seen::New);
        // A request abandoned early and answered on its resend keeps that answer for the full
        // time to live from the resend, not from its first arrival.
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(c.arrive(key(3), t1), Seen::New);
        c.abandon(&key(3));
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(c.arrive(key(3), t2), Seen::New);
        c.answered(&key(3), vec![3]);
        let t3 = t1 + Duration::from_secs(40);
        assert_eq!(c.arrive(key(3), t3), Seen::Answered(vec![3]));
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(Duration::from_secs(30), 10);
        for i in 0..50 {
            c.arrive(key(i), t0);
        }
        assert!(c.len() <= 11, "{}", c.len());
    }
}
