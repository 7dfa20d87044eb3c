//! How a call ends, every way it can: refused, failed, cancelled, hung up, cut off, lost.
//! Whatever the way, the end is one function that writes the records, frees the gateway
//! channel, closes the media and settles the hold exactly once.

use super::io::{Ask, MediaCmd, Output};
use super::{Call, Env, State};
use crate::sip::message::hdr;
use chrono::{DateTime, Utc};
use rating::radius::acct::{Leg, Record};
use rating::radius::legs::{LegEnd, LegFacts};
use rating::store::CallEnd;

impl Call {
    /// Ends a call that never answered, telling the caller `code`; an IVR caller instead
    /// stays with the flow, which hears how the bridge attempt ended.
    pub(super) fn fail(&mut self, code: u16, warning: Option<&str>, cause: &str, env: &mut Env) {
        self.fail_told(code, None, warning, cause, env)
    }

    /// [`fail`](Self::fail), with the words a subscriber's softphone shows on the status line.
    pub(super) fn fail_told(
        &mut self,
        code: u16,
        phrase: Option<&str>,
        warning: Option<&str>,
        cause: &str,
        env: &mut Env,
    ) {
        if self.is_ended() {
            return;
        }
        if self.is_ivr() && !env.stopping {
            return self.bridge_ended(ivr::BridgeEnd::for_status(code), None, env);
        }
        if !self.a.answered {
            let mut resp = self.a.response(code);
            if let Some(p) = phrase {
                crate::sip::message::set_phrase(&mut resp, p);
            }
            if let Some(w) = warning {
                resp.headers.push(hdr(
                    "Warning",
                    format!("399 b2bua \"{}\"", w.replace('"', "'")),
                ));
            }
            let tx = self.a.tx.clone();
            self.respond(&tx, resp);
        }
        let at = self.wall(env.now);
        self.end(cause, at, env);
    }

    /// Ends the call: its records, its gateway channel, its media, its hold.
    pub(super) fn end(&mut self, cause: &str, disconnect_at: DateTime<Utc>, env: &mut Env) {
        if self.is_ended() {
            return;
        }
        let legs: &[Leg] = if self.bridge().is_some_and(|b| b.setup.is_some()) {
            &[Leg::Originate, Leg::Answer]
        } else {
            &[Leg::Answer]
        };
        let quality = (env.quality)();
        // Only a call that carried media through us has a figure.
        let voice_quality = quality.filter(|q| q.packets[0] > 0).map(|q| q.icpif);
        let leg_end = LegEnd {
            cause,
            disconnect_at,
            voice_quality,
        };
        self.account(legs, Some(&leg_end), disconnect_at);
        let (bridge, hold) = match std::mem::replace(
            &mut self.state,
            State::Ended {
                b: None,
                settling: false,
            },
        ) {
            State::Direct(b) => (Some(*b), None),
            State::InFlow(f) => {
                crate::metrics::get().ivr_sessions.dec();
                let f = *f;
                (f.bridge, f.hold)
            }
            State::Authorizing { .. } | State::Ended { .. } => (None, None),
        };
        let connect_at = bridge.as_ref().and_then(|b| b.connected());
        let destination = bridge
            .as_ref()
            .map(|b| b.hold.destination.clone())
            .unwrap_or_default();
        let (mut b, reservation) = match bridge {
            Some(mut bridge) => (bridge.take_b(), bridge.hold.reservation),
            None => (None, hold.and_then(|h| h.reservation)),
        };
        let gateway = self.gateway_name(b.as_ref());
        // The B-leg stays (its dialog still routes the gateway's BYE); its channel does not.
        if let Some(channel) = b.as_mut().and_then(|b| b.channel.take()) {
            env.channels.release(channel);
        }
        self.emit(Output::Media(MediaCmd::Close));
        if let Some(q) = &quality {
            let m = crate::metrics::get();
            for (i, leg) in ["caller", "gateway"].into_iter().enumerate() {
                let l = crate::metrics::LegLabels { leg };
                m.rtp_packets.get_or_create(&l).inc_by(q.packets[i]);
                m.rtp_lost.get_or_create(&l).inc_by(q.lost[i]);
            }
        }
        tracing::info!(%destination, cause, ?quality, "call ended");
        let settling = reservation.is_some();
        if let Some(r) = reservation {
            let end = CallEnd {
                connect_at,
                disconnect_at,
                cause: cause.to_string(),
                voice_quality,
                gateway,
            };
            self.emit(Output::Store(Ask::Settle {
                conf_id: r.conf_id,
                end,
            }));
        }
        self.state = State::Ended {
            b: b.map(Box::new),
            settling,
        };
        if !settling {
            self.emit(Output::Ended);
        }
    }

    /// Queues the records of the call's legs: each of `legs` starts, or with `end` stops.
    pub(super) fn account(&mut self, legs: &[Leg], end: Option<&LegEnd>, now: DateTime<Utc>) {
        let Some(gw_id) = self.settings.gw_id.clone() else {
            return;
        };
        let records: Vec<Record> = legs
            .iter()
            .map(|leg| self.leg_record(*leg, &gw_id, end))
            .collect();
        let at = end.map_or(now, |e| e.disconnect_at);
        self.emit(Output::Account { records, at });
    }

    /// The record for one leg of the call; `end` makes it a Stop.
    fn leg_record(&self, leg: Leg, gw_id: &str, end: Option<&LegEnd>) -> Record {
        let bridge = self.bridge();
        let (id, setup, connect, called, remote) = match leg {
            Leg::Answer => (
                self.session_id.as_str(),
                self.a.setup,
                self.a.connect,
                self.access.number.as_str(),
                Some(self.a.peer.addr),
            ),
            Leg::Originate => (
                bridge.map(|b| b.hold.conf_id.as_str()).unwrap_or(""),
                bridge.and_then(|b| b.setup).unwrap_or(self.a.setup),
                bridge.and_then(|b| b.connected()),
                bridge.map(|b| b.hold.destination.as_str()).unwrap_or(""),
                bridge.and_then(|b| b.remote),
            ),
        };
        LegFacts {
            leg,
            id,
            session_id: &self.session_id,
            account: &self.account,
            ani: &self.ani,
            called,
            setup,
            connect,
            remote: remote.map(|r| r.ip()),
            gw_id,
        }
        .record(end)
    }
}
