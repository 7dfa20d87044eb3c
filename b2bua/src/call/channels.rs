//! Gateway channels: how many calls each termination gateway carries at once.
//!
//! A gateway sold with N channels refuses (or worse, bills) the N+1st call, so the B2BUA
//! counts its own. A channel is taken when a B-leg INVITE goes out and given back exactly
//! once, however the attempt ends (failure, fail-over, hang-up, cutoff, the end of an IVR
//! bridge). The [`Channel`] token makes that a type: it cannot be copied, and the only way
//! to give a channel back is to hand the token to [`Channels::release`].
//!
//! A gateway that stopped answering its health pings, or a trunk we are not registered with,
//! offers no channels until that changes, so routing passes over it without waiting for its
//! setup timeout.

/// One call leg's claim on one channel of one gateway.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a channel that is dropped instead of released stays counted"]
pub struct Channel {
    gateway: usize,
}

impl Channel {
    /// The gateway (its index in the router's list) this channel belongs to.
    pub fn gateway(&self) -> usize {
        self.gateway
    }
}

/// The channels in use per gateway, against each gateway's limit.
#[derive(Debug, Clone)]
pub struct Channels {
    in_use: Vec<u32>,
    limit: Vec<u32>,
    /// Whether each gateway answers its health pings (always, for one not pinged).
    up: Vec<bool>,
    /// Whether we are registered with each (always, for one that needs no registration).
    registered: Vec<bool>,
}

impl Channels {
    /// Nothing in use; `limits[i]` channels on gateway `i`.
    pub fn new(limits: impl IntoIterator<Item = u32>) -> Channels {
        let limit: Vec<u32> = limits.into_iter().collect();
        Channels {
            in_use: vec![0; limit.len()],
            up: vec![true; limit.len()],
            registered: vec![true; limit.len()],
            limit,
        }
    }

    /// A channel on `gateway`, or `None` when all of its channels are in use (or there is no
    /// such gateway).
    pub fn take(&mut self, gateway: usize) -> Option<Channel> {
        let up = self.is_up(gateway);
        let used = self.in_use.get_mut(gateway)?;
        if *used >= self.limit[gateway] || !up {
            return None;
        }
        *used += 1;
        Some(Channel { gateway })
    }

    /// Gives a channel back.
    pub fn release(&mut self, channel: Channel) {
        if let Some(used) = self.in_use.get_mut(channel.gateway) {
            *used = used.saturating_sub(1);
        }
    }

    /// Marks a gateway reachable or not (its health pings); calls in progress keep theirs.
    pub fn set_up(&mut self, gateway: usize, up: bool) {
        if let Some(u) = self.up.get_mut(gateway) {
            *u = up;
        }
    }

    /// Marks a trunk registered or not; calls in progress keep their channels.
    pub fn set_registered(&mut self, gateway: usize, registered: bool) {
        if let Some(r) = self.registered.get_mut(gateway) {
            *r = registered;
        }
    }

    /// Whether we are registered with a trunk (or it needs no registration).
    pub fn registered(&self, gateway: usize) -> bool {
        self.registered.get(gateway).copied().unwrap_or(false)
    }

    /// Whether a gateway answers its pings (or is not pinged).
    pub fn answers_pings(&self, gateway: usize) -> bool {
        self.up.get(gateway).copied().unwrap_or(false)
    }

    /// Whether a gateway is taking calls: it answers its pings and, if it needs it, we are
    /// registered with it.
    pub fn is_up(&self, gateway: usize) -> bool {
        self.answers_pings(gateway) && self.registered.get(gateway).copied().unwrap_or(false)
    }

    /// Channels in use on `gateway`.
    pub fn in_use(&self, gateway: usize) -> u32 {
        self.in_use.get(gateway).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_takes_no_more_than_its_channels_and_a_release_frees_one() {
        let mut ch = Channels::new([2, 1]);
        let a = ch.take(0).unwrap();
        let b = ch.take(0).unwrap();
        assert_eq!(ch.take(0), None);
        // The other gateway counts on its own.
        let c = ch.take(1).unwrap();
        assert_eq!(ch.take(1), None);
        ch.release(a);
        assert_eq!(ch.in_use(0), 1);
        let d = ch.take(0).unwrap();
        assert_eq!(d.gateway(), 0);
        for x in [b, c, d] {
            ch.release(x);
        }
        assert_eq!((ch.in_use(0), ch.in_use(1)), (0, 0));
    }

    #[test]
    fn a_gateway_that_is_down_has_no_channels_until_it_is_up() {
        let mut ch = Channels::new([3, 3]);
        let held = ch.take(0).unwrap();
        ch.set_up(0, false);
        assert_eq!(ch.take(0), None);
        assert!(ch.take(1).is_some_and(|c| {
            ch.release(c);
            true
        }));
        // The call that held a channel still gives it back.
        ch.release(held);
        assert_eq!(ch.in_use(0), 0);
        ch.set_up(0, true);
        assert!(ch.take(0).is_some());
    }

    #[test]
    fn an_unknown_gateway_has_no_channels() {
        let mut ch = Channels::new([3]);
        assert_eq!(ch.take(7), None);
        assert_eq!(ch.in_use(7), 0);
    }
}
