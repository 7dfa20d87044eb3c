//! SIP dialogs (RFC 3261 §12): the state each leg keeps so that requests inside a call carry
//! the right tags, CSeq, route set and target, and so that requests for a dialog we do not know
//! are answered 481.

use super::message::{
    addr_uri, hdr, name_addr_ok, new_request, parse_uri, request_uri, Headers, Method, Request,
    Response, SipExt,
};

/// One side of one dialog, from our point of view.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID shared with the peer.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
    /// Our URI, as the From of our requests (without tag).
    pub local_uri: String,
    /// The peer's URI, as the To of our requests (without tag).
    pub remote_uri: String,
    /// The CSeq of our last request.
    pub local_seq: u32,
    /// The CSeq of the peer's last request; lower numbers are out of order (§12.2.2).
    pub remote_seq: Option<u32>,
    /// Where requests go: the peer's Contact.
    pub remote_target: String,
    /// Record-Route, in the order our requests must carry it as Route.
    pub route_set: Vec<String>,
}

/// Where requests in a dialog go: the peer's Contact if it is a SIP URI we can write back,
/// else the address in `fallback` (To or From). A peer's broken Contact must not make us send
/// requests nobody can parse.
fn target(contact: Option<&str>, fallback: &str) -> String {
    [contact.map(addr_uri).unwrap_or(""), addr_uri(fallback)]
        .into_iter()
        .find(|t| request_uri(t).is_some())
        .unwrap_or("")
        .to_string()
}

fn strip_tag(value: &str) -> String {
    match value.find(";tag=") {
        Some(i) => {
            let rest = &value[i + 5..];
            let end = rest.find(';').map(|j| &rest[j..]).unwrap_or("");
            format!("{}{}", &value[..i], end)
        }
        None => value.to_string(),
    }
}

impl Dialog {
    /// The dialog we hold as UAS, created by our 2xx (or a provisional with tag) to `invite`.
    pub fn uas(invite: &Request, local_tag: &str) -> Dialog {
        Dialog {
            call_id: invite.call_id().to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: invite.from_tag().unwrap_or("").to_string(),
            local_uri: strip_tag(invite.header("To").unwrap_or("")),
            remote_uri: strip_tag(invite.header("From").unwrap_or("")),
            local_seq: 0,
            remote_seq: invite.cseq().map(|c| c.0),
            remote_target: target(
                invite.header("Contact"),
                invite.header("From").unwrap_or(""),
            ),
            route_set: invite
                .header_values("Record-Route")
                .into_iter()
                .map(str::to_string)
                .collect(),
        }
    }

    /// The dialog we hold as UAC, created by the peer's 2xx (or reliable 18x) to our
    /// `invite`; without a Contact we can use in the answer, requests go to the INVITE's
    /// Request-URI.
    pub fn uac(invite: &Request, resp: &Response) -> Dialog {
        let mut d = Dialog::from_response(resp);
        // Our URIs are those of our own request (§12.1.2), not what the answer echoes.
        d.local_uri = strip_tag(invite.header("From").unwrap_or(""));
        d.remote_uri = strip_tag(invite.header("To").unwrap_or(""));
        // The answer's Contact, if it is one we can send to; else where we sent the INVITE.
        let contact = resp.header("Contact").map(addr_uri);
        if contact != Some(d.remote_target.as_str()) || d.remote_target.is_empty() {
            d.remote_target = invite.uri.to_string();
        }
        d
    }

    /// The dialog a 2xx to one of our INVITEs establishes, read from the response alone: for
    /// acknowledging and hanging up an answer that arrives after we stopped waiting for it.
    pub fn from_response(resp: &Response) -> Dialog {
        // Responses are not held to the request grammar, so a route we could not write back
        // as a Route header is left out rather than sent on.
        let mut route_set: Vec<String> = resp
            .header_values("Record-Route")
            .into_iter()
            .filter(|r| name_addr_ok(r))
            .map(str::to_string)
            .collect();
        route_set.reverse();
        Dialog {
            call_id: resp.call_id().to_string(),
            local_tag: resp.from_tag().unwrap_or("").to_string(),
            remote_tag: resp.to_tag().unwrap_or("").to_string(),
            local_uri: strip_tag(resp.header("From").unwrap_or("")),
            remote_uri: strip_tag(resp.header("To").unwrap_or("")),
            local_seq: resp.cseq().map(|c| c.0).unwrap_or(1),
            remote_seq: None,
            remote_target: target(resp.header("Contact"), resp.header("To").unwrap_or("")),
            route_set,
        }
    }

    /// Accepts the CSeq of a request from the peer; false means it is out of order and gets 500.
    pub fn accept_remote_cseq(&mut self, seq: u32) -> bool {
        match self.remote_seq {
            Some(last) if seq <= last => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// A new request inside this dialog (§12.2.1.1). `via` is our sent-by with transport
    /// (`SIP/2.0/UDP 127.0.0.1:5060`) and `branch` its transaction's; ACK reuses the INVITE's
    /// CSeq number, as `ack_seq` says.
    pub fn request(
        &mut self,
        method: Method,
        via: &str,
        branch: &str,
        contact: &str,
        ack_seq: Option<u32>,
    ) -> Request {
        let seq = match ack_seq {
            Some(s) => s,
            None => {
                self.local_seq += 1;
                self.local_seq
            }
        };
        let mut headers = Headers::default();
        headers.push(hdr("Via", format!("{via};branch={branch};rport")));
        headers.push(hdr("Max-Forwards", "70"));
        for r in &self.route_set {
            headers.push(hdr("Route", r.clone()));
        }
        headers.push(hdr(
            "From",
            format!("{};tag={}", self.local_uri, self.local_tag),
        ));
        headers.push(hdr(
            "To",
            format!("{};tag={}", self.remote_uri, self.remote_tag),
        ));
        headers.push(hdr("Call-ID", self.call_id.clone()));
        headers.push(hdr("CSeq", format!("{seq} {method}")));
        if matches!(method, Method::Invite | Method::Update) {
            headers.push(hdr("Contact", contact.to_string()));
        }
        let uri = parse_uri(&self.remote_target).unwrap_or_default();
        new_request(method, uri, headers, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse_datagram, response_to, SipMessage};

    fn invite() -> Request {
        let t = b"INVITE sip:5551201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nFrom: <sip:4085551234@10.0.0.1>;tag=a\r\nTo: <sip:5551201@127.0.0.1>\r\n\
Call-ID: c\r\nCSeq: 5 INVITE\r\nContact: <sip:alice@10.0.0.1:5070>\r\n\r\n";
        match parse_datagram(t).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn uas_dialog_builds_in_dialog_requests() {
        let mut d = Dialog::uas(&invite(), "ours");
        assert_eq!(d.remote_target, "sip:alice@10.0.0.1:5070");
        let bye = d.request(
            Method::Bye,
            "SIP/2.0/UDP 127.0.0.1:5060",
            "z9hG4bKt1",
            "<sip:b2bua@127.0.0.1>",
            None,
        );
        let m = parse_datagram(&crate::sip::message::request_bytes(&bye)).unwrap();
        assert_eq!(m.from_tag(), Some("ours"));
        assert_eq!(m.to_tag(), Some("a"));
        assert_eq!(m.cseq(), Some((1, Method::Bye)));
        assert_eq!(m.header_values("Route"), vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert!(!d.accept_remote_cseq(5), "an old CSeq is out of order");
        assert!(d.accept_remote_cseq(6));
    }

    #[test]
    fn uac_dialog_reverses_the_route_set() {
        let inv = invite();
        let mut ok = response_to(&inv, 200, Some("gw"));
        // The answer's own Record-Route, not the one our test INVITE carried (as if received).
        ok.headers
            .retain(|h| crate::sip::message::name_value(h).0 != "Record-Route");
        ok.headers
            .push(hdr("Record-Route", "<sip:p2;lr>, <sip:p1;lr>"));
        ok.headers.push(hdr("Contact", "<sip:gw@127.0.0.1:5062>"));
        let d = Dialog::uac(&inv, &ok);
        assert_eq!(d.remote_tag, "gw");
        assert_eq!(d.route_set, vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(d.remote_target, "sip:gw@127.0.0.1:5062");
        assert_eq!(d.local_seq, 5);
    }

    #[test]
    fn a_contact_we_cannot_write_back_is_not_our_target() {
        let inv = invite();
        let mut ok = response_to(&inv, 183, Some("gw"));
        ok.headers.push(hdr("Contact", "<sip:gw@~127.0.0.1:5062>"));
        let d = Dialog::uac(&inv, &ok);
        assert_eq!(
            d.remote_target,
            inv.uri.to_string(),
            "the INVITE's Request-URI"
        );
        // Nor is an empty one, or one with header fields, which no Request-URI may carry.
        for contact in ["", "<sip:gw@127.0.0.1:5062?Subject=x>"] {
            let mut ok = response_to(&inv, 183, Some("gw"));
            ok.headers.push(hdr("Contact", contact));
            let d = Dialog::uac(&inv, &ok);
            assert_eq!(d.remote_target, inv.uri.to_string(), "{contact:?}");
        }
        let mut bad = invite();
        bad.headers
            .retain(|h| crate::sip::message::name_value(h).0 != "Contact");
        bad.headers.push(hdr("Contact", "<sip:alice@bad host>"));
        assert_eq!(
            Dialog::uas(&bad, "ours").remote_target,
            "sip:4085551234@10.0.0.1",
            "the caller's From"
        );
    }
}
