//! RADIUS packets as the debit-card service speaks them, without I/O: decoding a request from a
//! client (checking its authenticators), reading Cisco's vendor-specific attributes, and
//! encoding replies and requests with Message-Authenticator. The `radius` crate parses the
//! header and the attribute list and hides User-Password; what it lacks (vendor attributes,
//! Message-Authenticator, constant-time checks) is here.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use radius::core::avp::AVP;
use radius::core::code::Code;
use radius::core::packet::Packet;
use subtle::ConstantTimeEq;

/// Cisco's IANA enterprise number: its attributes travel inside Vendor-Specific (26).
pub const CISCO: u32 = 9;

/// Standard attributes the service reads or writes (RFC 2865, 2866, 2869).
pub mod attr {
    pub const USER_NAME: u8 = 1;
    pub const USER_PASSWORD: u8 = 2;
    pub const CALLED_STATION_ID: u8 = 30;
    pub const CALLING_STATION_ID: u8 = 31;
    pub const ACCT_STATUS_TYPE: u8 = 40;
    pub const ACCT_SESSION_ID: u8 = 44;
    pub const ACCT_SESSION_TIME: u8 = 46;
    pub const VENDOR_SPECIFIC: u8 = 26;
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
}

/// Why a datagram was not accepted as a request. Each is logged and the datagram dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadiusError {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("packet code {0} is not a request this server answers")]
    NotARequest(u8),
    #[error("wrong request authenticator (shared secret mismatch?)")]
    BadAuthenticator,
    #[error("wrong Message-Authenticator (shared secret mismatch?)")]
    BadMessageAuthenticator,
    #[error("no Message-Authenticator, and this client must send one (BlastRADIUS)")]
    MissingMessageAuthenticator,
    #[error("{0} holds a control character or is not UTF-8")]
    BadText(&'static str),
}

/// One Cisco vendor attribute: its number and its text, split into `name=value` when it has
/// that form (Cisco sends `h323-credit-amount=32.91`; FreeRADIUS' radclient sends the bare
/// value, which is then named from the attribute number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiscoPair {
    pub number: u8,
    pub name: String,
    pub value: String,
}

/// A request from a client, checked and decoded.
#[derive(Debug, Clone)]
pub struct Request {
    pub code: Code,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub user_name: Option<String>,
    /// The decoded User-Password (the PIN), when there was one.
    pub password: Option<String>,
    pub called: Option<String>,
    pub calling: Option<String>,
    pub acct_status: Option<u32>,
    pub acct_session_id: Option<String>,
    pub acct_session_time: Option<u32>,
    pub cisco: Vec<CiscoPair>,
    pub had_message_authenticator: bool,
}

impl Request {
    /// The value of a Cisco pair by name (`h323-conf-id`), from its own attribute or from a
    /// `Cisco-AVPair` carrying `name=value`.
    pub fn cisco(&self, name: &str) -> Option<&str> {
        self.cisco
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
    }
}

/// The name of a Cisco attribute number, from FreeRADIUS' `dictionary.cisco`.
pub fn cisco_name(number: u8) -> Option<&'static str> {
    Some(match number {
        1 => "cisco-avpair",
        23 => "h323-remote-address",
        24 => "h323-conf-id",
        25 => "h323-setup-time",
        26 => "h323-call-origin",
        27 => "h323-call-type",
        28 => "h323-connect-time",
        29 => "h323-disconnect-time",
        30 => "h323-disconnect-cause",
        31 => "h323-voice-quality",
        33 => "h323-gw-id",
        35 => "h323-incoming-conf-id",
        101 => "h323-credit-amount",
        102 => "h323-credit-time",
        103 => "h323-return-code",
        104 => "h323-prompt-id",
        105 => "h323-time-and-day",
        106 => "h323-redirect-number",
        107 => "h323-preferred-lang",
        108 => "h323-redirect-ip-address",
        109 => "h323-billing-model",
        110 => "h323-currency",
        _ => return None,
    })
}

/// Text from the wire: UTF-8 with no control characters (CR, LF, NUL …), which would let a
/// client smuggle lines into logs, records or SQL-adjacent text.
fn text(what: &'static str, bytes: &[u8]) -> Result<String, RadiusError> {
    let s = std::str::from_utf8(bytes).map_err(|_| RadiusError::BadText(what))?;
    if s.chars().any(char::is_control) {
        return Err(RadiusError::BadText(what));
    }
    Ok(s.to_string())
}

type HmacMd5 = Hmac<Md5>;

fn hmac_md5(secret: &[u8], data: &[u8]) -> [u8; 16] {
    let mut mac = HmacMd5::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Offsets of every attribute's value in an encoded packet whose attribute list is valid.
fn attribute_values(bytes: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 20;
    while i + 2 <= bytes.len() {
        let len = bytes[i + 1] as usize;
        if len < 2 || i + len > bytes.len() {
            break;
        }
        out.push((bytes[i], i + 2, i + len));
        i += len;
    }
    out
}

/// Decodes and checks a request from a client that shares `secret` with us.
/// `require_ma` makes Message-Authenticator mandatory on Access-Request.
pub fn decode_request(
    bytes: &[u8],
    secret: &[u8],
    require_ma: bool,
) -> Result<Request, RadiusError> {
    let packet =
        Packet::decode(bytes, secret).map_err(|e| RadiusError::Malformed(e.to_string()))?;
    let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
    let bytes = &bytes[..len];
    let code = packet.get_code();
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(&bytes[4..20]);
    match code {
        Code::AccessRequest => {}
        Code::AccountingRequest => {
            let expect = Md5::new()
                .chain_update(&bytes[..4])
                .chain_update([0u8; 16])
                .chain_update(&bytes[20..])
                .chain_update(secret)
                .finalize();
            if !bool::from(expect.as_slice().ct_eq(&authenticator)) {
                return Err(RadiusError::BadAuthenticator);
            }
        }
        _ => return Err(RadiusError::NotARequest(bytes[0])),
    }
    // Message-Authenticator: HMAC-MD5 of the packet with its own value zeroed (RFC 3579 §3.2).
    let mas: Vec<(u8, usize, usize)> = attribute_values(bytes)
        .into_iter()
        .filter(|(t, _, _)| *t == attr::MESSAGE_AUTHENTICATOR)
        .collect();
    if mas.len() > 1 || mas.iter().any(|(_, s, e)| e - s != 16) {
        return Err(RadiusError::Malformed(
            "Message-Authenticator must appear once, 16 octets long".into(),
        ));
    }
    if let Some((_, s, e)) = mas.first() {
        let mut zeroed = bytes.to_vec();
        zeroed[*s..*e].fill(0);
        let want = hmac_md5(secret, &zeroed);
        if !bool::from(want.ct_eq(&bytes[*s..*e])) {
            return Err(RadiusError::BadMessageAuthenticator);
        }
    } else if require_ma && code == Code::AccessRequest {
        return Err(RadiusError::MissingMessageAuthenticator);
    }
    let one = |t: u8, what: &'static str| -> Result<Option<String>, RadiusError> {
        match packet.lookup(t) {
            Some(avp) => text(what, &avp.encode_bytes()).map(Some),
            None => Ok(None),
        }
    };
    let int = |t: u8, what: &str| -> Result<Option<u32>, RadiusError> {
        match packet.lookup(t) {
            Some(avp) => avp
                .encode_u32()
                .map(Some)
                .map_err(|_| RadiusError::Malformed(format!("{what} is not a 4-octet integer"))),
            None => Ok(None),
        }
    };
    let password = match packet.lookup(attr::USER_PASSWORD) {
        Some(avp) => {
            let plain = avp
                .encode_user_password(secret, &authenticator)
                .map_err(|e| RadiusError::Malformed(format!("User-Password: {e}")))?;
            Some(text("User-Password", &plain)?)
        }
        None => None,
    };
    let mut cisco = Vec::new();
    for avp in packet_vsas(&packet) {
        let (vendor, vsas) = avp?;
        if vendor != CISCO {
            continue;
        }
        for (number, value) in vsas {
            let value = text("a Cisco attribute", &value)?;
            let (name, value) = match (number, value.split_once('=')) {
                // Cisco-AVPair is always `name=value`; the h323 attributes carry their own name.
                (1, Some((n, v))) => (n.trim().to_ascii_lowercase(), v.to_string()),
                (1, None) => ("cisco-avpair".to_string(), value),
                (n, Some((prefix, v))) if Some(prefix.trim()) == cisco_name(n) => {
                    (prefix.trim().to_string(), v.to_string())
                }
                (n, _) => match cisco_name(n) {
                    Some(name) => (name.to_string(), value),
                    None => (format!("cisco-{n}"), value),
                },
            };
            cisco.push(CiscoPair {
                number,
                name,
                value,
            });
        }
    }
    Ok(Request {
        code,
        identifier: packet.get_identifier(),
        authenticator,
        user_name: one(attr::USER_NAME, "User-Name")?,
        password,
        called: one(attr::CALLED_STATION_ID, "Called-Station-Id")?,
        calling: one(attr::CALLING_STATION_ID, "Calling-Station-Id")?,
        acct_status: int(attr::ACCT_STATUS_TYPE, "Acct-Status-Type")?,
        acct_session_id: one(attr::ACCT_SESSION_ID, "Acct-Session-Id")?,
        acct_session_time: int(attr::ACCT_SESSION_TIME, "Acct-Session-Time")?,
        cisco,
        had_message_authenticator: !mas.is_empty(),
    })
}

/// One Vendor-Specific attribute: the vendor and its (type, value) sub-attributes.
pub type Vsa = (u32, Vec<(u8, Vec<u8>)>);

/// The vendor attributes of a packet, or an error for each whose inner lengths lie.
fn packet_vsas(packet: &Packet) -> Vec<Result<Vsa, RadiusError>> {
    packet
        .lookup_all(attr::VENDOR_SPECIFIC)
        .into_iter()
        .map(|avp| decode_vsa(&avp.encode_bytes()))
        .collect()
}

/// One Vendor-Specific value (RFC 2865 §5.26): vendor id, then type-length-value sub-attributes.
pub fn decode_vsa(v: &[u8]) -> Result<Vsa, RadiusError> {
    if v.len() < 4 {
        return Err(RadiusError::Malformed(
            "Vendor-Specific shorter than 4".into(),
        ));
    }
    let vendor = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let mut out = Vec::new();
    let mut i = 4;
    while i < v.len() {
        if i + 2 > v.len() {
            return Err(RadiusError::Malformed(format!(
                "vendor {vendor}: sub-attribute header cut short"
            )));
        }
        let len = v[i + 1] as usize;
        if len < 2 || i + len > v.len() {
            return Err(RadiusError::Malformed(format!(
                "vendor {vendor}: sub-attribute {} has a length ({len}) that lies",
                v[i]
            )));
        }
        out.push((v[i], v[i + 2..i + len].to_vec()));
        i += len;
    }
    Ok((vendor, out))
}

/// A Cisco vendor attribute carrying `name=value` (the form Cisco gateways send and expect).
pub fn cisco_avp(number: u8, value: &str) -> AVP {
    let text = match cisco_name(number) {
        Some(name) if number != 1 => format!("{name}={value}"),
        _ => value.to_string(),
    };
    let t = text.as_bytes();
    let t = &t[..t.len().min(247)];
    let mut v = CISCO.to_be_bytes().to_vec();
    v.push(number);
    v.push(2 + t.len() as u8);
    v.extend_from_slice(t);
    AVP::from_bytes(attr::VENDOR_SPECIFIC, &v)
}

/// Encodes a reply to `req` with `attributes`, a Message-Authenticator first (as the
/// BlastRADIUS advisory recommends) and the response authenticator.
pub fn encode_reply(
    req: &Request,
    code: Code,
    attributes: Vec<AVP>,
    secret: &[u8],
) -> Result<Vec<u8>, RadiusError> {
    let mut p = Packet::new_with_identifier(code, secret, req.identifier);
    if code != Code::AccountingResponse {
        p.add(AVP::from_bytes(attr::MESSAGE_AUTHENTICATOR, &[0u8; 16]));
    }
    p.extend(attributes);
    let mut bytes = p
        .encode()
        .map_err(|e| RadiusError::Malformed(e.to_string()))?;
    // The Message-Authenticator covers the packet with the request's authenticator in place.
    bytes[4..20].copy_from_slice(&req.authenticator);
    if let Some((_, s, e)) = attribute_values(&bytes)
        .into_iter()
        .find(|(t, _, _)| *t == attr::MESSAGE_AUTHENTICATOR)
    {
        let mac = hmac_md5(secret, &bytes);
        bytes[s..e].copy_from_slice(&mac);
    }
    let auth = Md5::new()
        .chain_update(&bytes)
        .chain_update(secret)
        .finalize();
    bytes[4..20].copy_from_slice(&auth);
    Ok(bytes)
}

/// Encodes an Accounting-Request (our accounting client): the request authenticator is the
/// MD5 of the packet with zeros in its place and the secret (RFC 2866 §3).
pub fn encode_accounting_request(
    identifier: u8,
    attributes: Vec<AVP>,
    secret: &[u8],
) -> Result<Vec<u8>, RadiusError> {
    let mut p = Packet::new_with_identifier(Code::AccountingRequest, secret, identifier);
    p.extend(attributes);
    p.encode()
        .map_err(|e| RadiusError::Malformed(e.to_string()))
}

/// Whether `response` is the authentic answer to `request` under `secret` (RFC 2865 §3).
pub fn is_authentic_response(response: &[u8], request: &[u8], secret: &[u8]) -> bool {
    if response.len() < 20 || request.len() < 20 || response[1] != request[1] {
        return false;
    }
    let len = u16::from_be_bytes([response[2], response[3]]) as usize;
    if len < 20 || len > response.len() {
        return false;
    }
    let want = Md5::new()
        .chain_update(&response[..4])
        .chain_update(&request[4..20])
        .chain_update(&response[20..len])
        .chain_update(secret)
        .finalize();
    bool::from(want.as_slice().ct_eq(&response[4..20]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use radius::core::rfc2865;

    fn access_request(with_ma: bool) -> Vec<u8> {
        let mut p = Packet::new(Code::AccessRequest, b"testing123");
        if with_ma {
            p.add(AVP::from_bytes(attr::MESSAGE_AUTHENTICATOR, &[0u8; 16]));
        }
        rfc2865::add_user_name(&mut p, "000070");
        rfc2865::add_user_password(&mut p, b"1234").unwrap();
        p.add(cisco_avp(24, "1234ABCD 00000000 00000000 00000001"));
        p.add(cisco_avp(1, "h323-ivr-out=lang:en"));
        let mut b = p.encode().unwrap();
        if with_ma {
            let (_, s, e) = attribute_values(&b)
                .into_iter()
                .find(|(t, _, _)| *t == attr::MESSAGE_AUTHENTICATOR)
                .unwrap();
            let mac = hmac_md5(b"testing123", &b);
            b[s..e].copy_from_slice(&mac);
        }
        b
    }

    #[test]
    fn an_access_request_with_cisco_pairs_and_pin() {
        let b = access_request(true);
        let r = decode_request(&b, b"testing123", true).unwrap();
        assert_eq!(r.user_name.as_deref(), Some("000070"));
        assert_eq!(r.password.as_deref(), Some("1234"));
        assert_eq!(
            r.cisco("h323-conf-id"),
            Some("1234ABCD 00000000 00000000 00000001")
        );
        assert_eq!(r.cisco("h323-ivr-out"), Some("lang:en"));
        assert!(r.had_message_authenticator);
    }

    #[test]
    fn message_authenticator_is_checked_and_can_be_required() {
        let b = access_request(false);
        assert_eq!(
            decode_request(&b, b"testing123", true).unwrap_err(),
            RadiusError::MissingMessageAuthenticator
        );
        assert!(decode_request(&b, b"testing123", false).is_ok());
        let mut forged = access_request(true);
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert_eq!(
            decode_request(&forged, b"testing123", false).unwrap_err(),
            RadiusError::BadMessageAuthenticator
        );
        assert_eq!(
            decode_request(&access_request(true), b"wrong", false).unwrap_err(),
            RadiusError::BadMessageAuthenticator
        );
    }

    #[test]
    fn replies_carry_a_valid_message_authenticator_and_response_authenticator() {
        let b = access_request(true);
        let r = decode_request(&b, b"testing123", true).unwrap();
        let reply = encode_reply(
            &r,
            Code::AccessAccept,
            vec![cisco_avp(103, "0"), cisco_avp(101, "32.91")],
            b"testing123",
        )
        .unwrap();
        assert!(is_authentic_response(&reply, &b, b"testing123"));
        assert!(!is_authentic_response(&reply, &b, b"other"));
        // Recompute the Message-Authenticator as a client would.
        let (_, s, e) = attribute_values(&reply)
            .into_iter()
            .find(|(t, _, _)| *t == attr::MESSAGE_AUTHENTICATOR)
            .unwrap();
        let mut check = reply.clone();
        check[4..20].copy_from_slice(&b[4..20]);
        check[s..e].fill(0);
        assert_eq!(hmac_md5(b"testing123", &check), reply[s..e]);
        let p = Packet::decode(&reply, b"testing123").unwrap();
        let vsas: Vec<_> = packet_vsas(&p).into_iter().map(|v| v.unwrap()).collect();
        assert_eq!(vsas[0].1[0].1, b"h323-return-code=0");
    }

    #[test]
    fn accounting_requests_need_the_right_secret() {
        let mut attrs = vec![AVP::from_u32(attr::ACCT_STATUS_TYPE, 2)];
        attrs.push(cisco_avp(26, "originate"));
        let b = encode_accounting_request(7, attrs, b"testing123").unwrap();
        let r = decode_request(&b, b"testing123", true).unwrap();
        assert_eq!(r.acct_status, Some(2));
        assert_eq!(r.cisco("h323-call-origin"), Some("originate"));
        assert_eq!(
            decode_request(&b, b"nope", false).unwrap_err(),
            RadiusError::BadAuthenticator
        );
    }

    #[test]
    fn lies_and_junk_are_errors_never_panics() {
        let good = access_request(false);
        // Truncated at every length.
        for n in 0..good.len() {
            let _ = decode_request(&good[..n], b"testing123", false);
        }
        // A header length beyond the datagram, and one below 20.
        let mut long = good.clone();
        long[2..4].copy_from_slice(&4000u16.to_be_bytes());
        assert!(decode_request(&long, b"testing123", false).is_err());
        let mut short = good.clone();
        short[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert!(decode_request(&short, b"testing123", false).is_err());
        // An attribute length that runs past the end.
        let mut lying = good.clone();
        lying[21] = 250;
        assert!(decode_request(&lying, b"testing123", false).is_err());
        // A vendor sub-attribute whose length lies.
        assert!(decode_vsa(&[0, 0, 0, 9, 24, 40, b'x']).is_err());
        assert!(decode_vsa(&[0, 0, 0, 9, 24, 1]).is_err());
        // CR/LF or NUL inside User-Name or Called-Station-Id.
        for bad in ["0000\r\n70", "00\u{0}0070"] {
            let mut p = Packet::new(Code::AccessRequest, b"testing123");
            rfc2865::add_user_name(&mut p, bad);
            let b = p.encode().unwrap();
            assert_eq!(
                decode_request(&b, b"testing123", false).unwrap_err(),
                RadiusError::BadText("User-Name")
            );
            let mut p = Packet::new(Code::AccessRequest, b"testing123");
            rfc2865::add_called_station_id(&mut p, bad);
            let b = p.encode().unwrap();
            assert_eq!(
                decode_request(&b, b"testing123", false).unwrap_err(),
                RadiusError::BadText("Called-Station-Id")
            );
        }
        // A response code is not a request.
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(
            decode_request(&reply, b"testing123", false).unwrap_err(),
            RadiusError::NotARequest(2)
        );
    }
}
