//! How a caller is presented to a carrier (RFC 3325, RFC 3323). Carriers differ: one bills
//! and shows whatever is in From, another trusts only P-Asserted-Identity from its peers and
//! wants From anonymous, and all of them must be told with `Privacy: id` when the caller
//! withheld its number, so that it is not shown to the called party. The rules live here,
//! apart from the call, so each carrier's wish is one small configuration and one unit test.

use super::message::{Request, SipExt};

/// What a gateway wants to see of the caller (`gateways[].identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity {
    /// Whether it gets P-Asserted-Identity with the caller's number (it must trust us).
    pub pai: bool,
    /// Whether From is always anonymous (the number only in P-Asserted-Identity).
    pub anonymous_from: bool,
    /// Whether every call is sent as withheld, whatever the caller asked.
    pub always_private: bool,
}

/// The headers presenting one caller to one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// The From value, without its tag.
    pub from: String,
    /// P-Asserted-Identity, if any.
    pub pai: Option<String>,
    /// Privacy, if any.
    pub privacy: Option<&'static str>,
}

const ANONYMOUS: &str = "\"Anonymous\" <sip:anonymous@anonymous.invalid>";

/// Whether the caller withheld its number: a `Privacy` asking for `id`, `user` or `header`
/// (RFC 3323 §4.2, RFC 3325 §7), or an anonymous From (RFC 3323 §4.1.1.3).
pub fn withheld(invite: &Request) -> bool {
    let asked = invite.header_values("Privacy").iter().any(|v| {
        v.split(';')
            .map(|p| p.trim().to_ascii_lowercase())
            .any(|p| matches!(p.as_str(), "id" | "user" | "header"))
    });
    let anonymous_from = invite.header("From").is_some_and(|f| {
        let f = f.to_ascii_lowercase();
        f.contains("sip:anonymous@") || f.contains("@anonymous.invalid")
    });
    asked || anonymous_from
}

/// The caller `number` (empty or `anonymous` when we know none, or not a plain user part)
/// presented to a gateway that wants `want`,
/// in URIs at `host`. A caller who `withheld` its number is sent with an anonymous From and
/// `Privacy: id`; a gateway that gets P-Asserted-Identity still gets it (it needs the number
/// to bill and for emergency services) and must not pass it on.
pub fn present(want: Identity, number: &str, withheld: bool, host: &str) -> Presentation {
    // Only a number that is a user part as it stands goes into our URIs: anything else a
    // caller wrote there (spaces, brackets, quotes) would reach the carrier as headers we
    // cannot read back, so the caller is presented as unknown.
    let presentable = number
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-_.!~*'()".contains(&b));
    if number.is_empty() || number.eq_ignore_ascii_case("anonymous") || !presentable {
        return Presentation {
            from: ANONYMOUS.into(),
            pai: None,
            privacy: None,
        };
    }
    let private = withheld || want.always_private;
    let from = if private || want.anonymous_from {
        ANONYMOUS.to_string()
    } else {
        format!("<sip:{number}@{host}>")
    };
    Presentation {
        from,
        pai: want.pai.then(|| format!("<sip:{number}@{host}>")),
        privacy: private.then_some("id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse_datagram, SipMessage};

    fn parse_request(text: &[u8]) -> Option<Request> {
        match parse_datagram(text).ok()? {
            SipMessage::Request(r) => Some(r),
            SipMessage::Response(_) => None,
        }
    }

    fn invite(extra: &str) -> Request {
        invite_from("<sip:4085551234@h>", extra)
    }

    fn invite_from(from: &str, extra: &str) -> Request {
        parse_request(
            format!(
                "INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                 From: {from};tag=1\r\nTo: <sip:1@h>\r\nCall-ID: c\r\n\
                 CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn a_caller_withholds_with_privacy_or_an_anonymous_from() {
        assert!(!withheld(&invite("")));
        assert!(!withheld(&invite("Privacy: none\r\n")));
        assert!(withheld(&invite("Privacy: id\r\n")));
        assert!(withheld(&invite("Privacy: user; critical\r\n")));
        assert!(withheld(&invite_from(ANONYMOUS, "")));
        assert!(withheld(&invite_from("<sip:anonymous@example.com>", "")));
    }

    #[test]
    fn each_carrier_gets_the_caller_as_it_wants() {
        let host = "192.0.2.1:5060";
        let plain = present(Identity::default(), "4085551234", false, host);
        assert_eq!(plain.from, "<sip:4085551234@192.0.2.1:5060>");
        assert_eq!((plain.pai, plain.privacy), (None, None));

        let trusted = Identity {
            pai: true,
            ..Identity::default()
        };
        let p = present(trusted, "4085551234", false, host);
        assert_eq!(p.from, "<sip:4085551234@192.0.2.1:5060>");
        assert_eq!(p.pai.as_deref(), Some("<sip:4085551234@192.0.2.1:5060>"));
        assert_eq!(p.privacy, None);

        // Withheld: nothing in From, the number only where the carrier may not show it.
        let p = present(trusted, "4085551234", true, host);
        assert_eq!(p.from, ANONYMOUS);
        assert!(p.pai.is_some());
        assert_eq!(p.privacy, Some("id"));
        let p = present(Identity::default(), "4085551234", true, host);
        assert_eq!(
            (p.from.as_str(), p.pai, p.privacy),
            (ANONYMOUS, None, Some("id"))
        );

        let pai_only = Identity {
            pai: true,
            anonymous_from: true,
            always_private: false,
        };
        let p = present(pai_only, "4085551234", false, host);
        assert_eq!((p.from.as_str(), p.privacy), (ANONYMOUS, None));
        assert!(p.pai.is_some());

        let always = Identity {
            always_private: true,
            ..trusted
        };
        assert_eq!(
            present(always, "4085551234", false, host).privacy,
            Some("id")
        );

        // No number known (an IVR caller from an untrusted source): nothing to assert.
        let p = present(trusted, "", false, host);
        assert_eq!((p.from.as_str(), p.pai, p.privacy), (ANONYMOUS, None, None));
        let p = present(trusted, "anonymous", true, host);
        assert_eq!((p.from.as_str(), p.pai), (ANONYMOUS, None));
        // Nor is a "number" that is no user part (the fuzzer's ` <sip`): presented unknown.
        for odd in [" <sip", "a\"b", "1@2", "x>;y=z"] {
            let p = present(trusted, odd, false, host);
            assert_eq!((p.from.as_str(), p.pai), (ANONYMOUS, None), "{odd:?}");
        }
    }
}
