//! SIP messages: rsip's model, reached only through this module.
//!
//! Bytes from the network are normalized by [`super::framer`] and then parsed by rsip; what the
//! rest of the daemon needs from a message (Call-ID, CSeq, tags, the top Via's branch, a header
//! by name) is read through [`SipExt`], and outgoing messages are written by [`to_bytes`], which
//! always sets Content-Length from the body. Keeping rsip behind this module means a parser swap
//! touches one directory.

use super::framer::{self, FrameError};
use rand::Rng;
use std::fmt::{self, Write as _};

pub use rsip::{Header, Headers, Method, Request, Response, SipMessage, StatusCode, Uri};

/// A SIP/2.0 request, the only version we send.
pub fn new_request(method: Method, uri: Uri, headers: Headers, body: Vec<u8>) -> Request {
    Request {
        method,
        uri,
        version: rsip::Version::V2,
        headers,
        body,
    }
}

/// Why bytes are not a usable SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The bytes could not be framed or normalized.
    Frame(FrameError),
    /// rsip rejected the start line, a URI or a header.
    Syntax(String),
    /// A header every request and response must carry is missing or unreadable.
    Missing(&'static str),
    /// CSeq's method is not the request's method.
    CSeqMismatch,
    /// The top Via is not `SIP/2.0/<transport> <host>` with an RFC 3261 branch.
    BadVia,
    /// The Request-URI is not a sip: or sips: URI we can read.
    BadRequestUri,
    /// The request's SIP version is not 2.0: answered 505 (RFC 3261 §8.2.6? no: §21.5.26).
    Version(String),
    /// The Request-URI has a scheme other than sip or sips: answered 416.
    UnsupportedScheme(String),
    /// A well-formed request with a method we do not know: answered 501 with Allow (an
    /// unknown method is legal SIP, RFC 3261 §8.2.1).
    UnknownMethod(String),
    /// A header that breaks the grammar where the RFC is strict (a display name, a Date, an
    /// addr-spec): 400 naming it.
    BadHeader(&'static str),
}

impl ParseError {
    /// The status a request that could not be read is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Version(_) => 505,
            ParseError::UnsupportedScheme(_) => 416,
            ParseError::UnknownMethod(_) => 501,
            _ => 400,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Frame(e) => write!(f, "{e}"),
            ParseError::Syntax(e) => write!(f, "syntax error: {e}"),
            ParseError::Missing(h) => write!(f, "missing or malformed {h} header"),
            ParseError::CSeqMismatch => write!(f, "CSeq method does not match the request method"),
            ParseError::BadVia => {
                write!(f, "the top Via has no SIP/2.0 transport, sent-by or branch")
            }
            ParseError::BadRequestUri => {
                write!(f, "the Request-URI is not a readable sip: or sips: URI")
            }
            ParseError::Version(v) => write!(f, "SIP version {v:?} is not supported"),
            ParseError::UnsupportedScheme(s) => write!(f, "URI scheme {s:?} is not supported"),
            ParseError::UnknownMethod(m) => write!(f, "method {m:?} is not implemented"),
            ParseError::BadHeader(h) => write!(f, "malformed {h} header"),
        }
    }
}

impl std::error::Error for ParseError {}

impl From<FrameError> for ParseError {
    fn from(e: FrameError) -> Self {
        ParseError::Frame(e)
    }
}

/// Parses one UDP datagram.
pub fn parse_datagram(buf: &[u8]) -> Result<SipMessage, ParseError> {
    parse_normalized(&framer::normalize_datagram(buf)?)
}

/// Parses a message the framer has already normalized (a stream frame).
///
/// The start line is read here, by RFC 3261's grammar (single spaces, SIP/2.0, a status code
/// of three digits), because rsip is both too lax and too strict there: it accepts almost
/// anything as a URI, cannot read IPv6 references, knows no method it was not built with and
/// refuses an empty reason phrase. rsip then reads the headers behind a canonical start line.
pub fn parse_normalized(buf: &[u8]) -> Result<SipMessage, ParseError> {
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(buf.len());
    let first = std::str::from_utf8(&buf[..line_end])
        .map_err(|_| ParseError::Frame(FrameError::NotUtf8))?;
    let rest = &buf[line_end..];
    let bad_line = || {
        ParseError::Syntax(format!(
            "bad start line: {:?}",
            first.chars().take(80).collect::<String>()
        ))
    };
    if let Some(status) = first.strip_prefix("SIP/2.0 ") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (the phrase may be empty).
        let (code, _reason) = status.split_once(' ').unwrap_or((status, ""));
        let code: u16 = code
            .parse()
            .ok()
            .filter(|c| (100..=699).contains(c) && code.len() == 3)
            .ok_or_else(bad_line)?;
        let mut patched = format!("SIP/2.0 {code} X").into_bytes();
        patched.extend_from_slice(rest);
        let msg = SipMessage::try_from(patched.as_slice())
            .map_err(|e| ParseError::Syntax(short(&e.to_string())))?;
        check_mandatory(&msg)?;
        return Ok(msg);
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly two single spaces.
    let parts: Vec<&str> = first.split(' ').collect();
    let [method, uri, version] = parts[..] else {
        return Err(bad_line());
    };
    if method.is_empty() || !method.bytes().all(is_token_char) || uri.is_empty() {
        return Err(bad_line());
    }
    if version != "SIP/2.0" {
        let v = version.strip_prefix("SIP/").unwrap_or("");
        return Err(match v.split_once('.') {
            Some((a, b))
                if !a.is_empty()
                    && !b.is_empty()
                    && (a.bytes().chain(b.bytes())).all(|c| c.is_ascii_digit()) =>
            {
                ParseError::Version(version.to_string())
            }
            _ => bad_line(),
        });
    }
    let Some(parsed_uri) = request_uri(uri) else {
        return Err(match uri.split_once(':') {
            Some((scheme, opaque))
                if !opaque.is_empty()
                    && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
                    && !scheme.eq_ignore_ascii_case("sip")
                    && !scheme.eq_ignore_ascii_case("sips")
                    && !uri.contains(['<', '>', '"']) =>
            {
                ParseError::UnsupportedScheme(scheme.to_string())
            }
            _ => ParseError::BadRequestUri,
        });
    };
    let known = method.parse::<Method>().is_ok();
    // An unknown method is read as OPTIONS (in the start line and CSeq) so that the rest of
    // the message is checked like any other; it is then answered 501.
    let shown = if known { method } else { "OPTIONS" };
    let mut patched = format!("{shown} sip:placeholder@invalid SIP/2.0").into_bytes();
    if known {
        patched.extend_from_slice(rest);
    } else {
        patched.extend_from_slice(&unknown_cseq(rest, method)?);
    }
    let mut msg = SipMessage::try_from(patched.as_slice())
        .map_err(|e| ParseError::Syntax(short(&e.to_string())))?;
    if let SipMessage::Request(r) = &mut msg {
        r.uri = parsed_uri;
    }
    check_mandatory(&msg)?;
    check_grammar(&msg)?;
    if !known {
        return Err(ParseError::UnknownMethod(method.to_string()));
    }
    Ok(msg)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// An error text cut to a size a log line or a Warning can carry.
fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

/// The headers of a request with an unknown `method`, its CSeq's method (which must be the
/// same, RFC 3261 §8.1.1.5) replaced by OPTIONS for rsip.
fn unknown_cseq(rest: &[u8], method: &str) -> Result<Vec<u8>, ParseError> {
    let text = std::str::from_utf8(rest).map_err(|_| ParseError::Frame(FrameError::NotUtf8))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut out = String::with_capacity(rest.len());
    let mut seen = false;
    for line in head.split("\r\n") {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("CSeq") && !seen => {
                seen = true;
                let mut it = value.split_whitespace();
                let (Some(n), Some(m), None) = (it.next(), it.next(), it.next()) else {
                    return Err(ParseError::Missing("CSeq"));
                };
                if m != method {
                    return Err(ParseError::CSeqMismatch);
                }
                out.push_str(&format!("CSeq: {n} OPTIONS"));
            }
            _ => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    out.truncate(out.len() - 2);
    out.push_str("\r\n\r\n");
    out.push_str(body);
    Ok(out.into_bytes())
}

/// A name-addr or addr-spec header value (RFC 3261 §20.10, §25.1) where the grammar is
/// strict: quotes balanced, a display name of tokens or one quoted string, no spaces inside
/// `<…>`, and a URI with header fields (`?`) only inside `<…>`.
pub(crate) fn name_addr_ok(value: &str) -> bool {
    let v = value.trim();
    if v == "*" {
        return true;
    }
    // Where the display name ends: the `<` outside quotes.
    let (mut quoted, mut escaped, mut laquot) = (false, false, None);
    for (i, c) in v.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => {
                laquot = Some(i);
                break;
            }
            _ => {}
        }
    }
    if quoted {
        return false;
    }
    let Some(l) = laquot else {
        // addr-spec: the URI runs to the first `;` (header parameters follow).
        let uri = v.split(';').next().unwrap_or("").trim();
        return !uri.is_empty() && !uri.contains(['?', ' ', '\t', '"', '<', '>']);
    };
    let display = v[..l].trim();
    let display_ok = if display.starts_with('"') {
        display.len() >= 2 && display.ends_with('"')
    } else {
        display
            .bytes()
            .all(|b| is_token_char(b) || b == b' ' || b == b'\t' || !b.is_ascii())
    };
    let Some(r) = v[l..].find('>') else {
        return false;
    };
    let inner = &v[l + 1..l + r];
    display_ok && !inner.is_empty() && !inner.contains([' ', '\t', '<'])
}

/// The request-only grammar checks RFC 4475 §3.1.2 expects a server to make.
fn check_grammar(msg: &SipMessage) -> Result<(), ParseError> {
    for name in ["From", "To", "Reply-To"] {
        if msg.header(name).is_some_and(|v| !name_addr_ok(v)) {
            return Err(ParseError::BadHeader(match name {
                "From" => "From",
                "To" => "To",
                _ => "Reply-To",
            }));
        }
    }
    for name in ["Contact", "Route", "Record-Route"] {
        if msg.header_values(name).iter().any(|v| !name_addr_ok(v)) {
            return Err(ParseError::BadHeader(match name {
                "Contact" => "Contact",
                "Route" => "Route",
                _ => "Record-Route",
            }));
        }
    }
    // rfc1123-date, always in GMT (RFC 3261 §20.17).
    if msg
        .header("Date")
        .is_some_and(|d| !d.trim_end().ends_with(" GMT"))
    {
        return Err(ParseError::BadHeader("Date"));
    }
    Ok(())
}

/// Reads a sip: or sips: URI. rsip splits host and port at the first colon, so it cannot read
/// IPv6 references (`sip:u@[::1]:5060`) and prints IPv6 hosts without brackets; here a
/// bracketed host is kept as text, which rsip prints back verbatim.
pub fn parse_uri(text: &str) -> Option<Uri> {
    use rsip::common::uri::{
        param::OtherParam, param::OtherParamValue, Auth, Host, HostWithPort, Param, Port, Scheme,
    };
    let (scheme, rest) = text.trim().split_once(':')?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "sip" => Scheme::Sip,
        "sips" => Scheme::Sips,
        _ => return None,
    };
    let (user, hostpart) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (hostport, params) = match hostpart.find(';') {
        Some(i) => (&hostpart[..i], &hostpart[i + 1..]),
        None => (hostpart, ""),
    };
    let hostport = hostport.split('?').next().unwrap_or("");
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let end = r.find(']')?;
        r[..end].parse::<std::net::Ipv6Addr>().ok()?;
        let after = &r[end + 1..];
        if !after.is_empty() && !after.starts_with(':') {
            return None;
        }
        (
            Host::Domain(format!("[{}]", &r[..end]).into()),
            after.strip_prefix(':'),
        )
    } else {
        let (h, p) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        {
            return None;
        }
        (Host::from(h.to_string()), p)
    };
    let port = match port {
        Some(p) => Some(Port::from(p.parse::<u16>().ok()?)),
        None => None,
    };
    if user.is_some_and(|u| u.is_empty() || u.contains([' ', '<', '>', '"']))
        || params.contains([' ', '<', '>'])
    {
        return None;
    }
    let params = params
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            };
            Param::Other(OtherParam::new(k), v.map(OtherParamValue::new))
        })
        .collect();
    Some(Uri {
        scheme: Some(scheme),
        auth: user.map(|u| Auth {
            user: u.to_string(),
            password: None,
        }),
        host_with_port: HostWithPort { host, port },
        params,
        headers: Vec::new(),
    })
}

fn check_mandatory(msg: &SipMessage) -> Result<(), ParseError> {
    if msg.header("Via").is_none_or(str::is_empty) {
        return Err(ParseError::Missing("Via"));
    }
    for h in ["From", "To", "Call-ID"] {
        if msg.header(h).is_none_or(str::is_empty) {
            return Err(ParseError::Missing(match h {
                "From" => "From",
                "To" => "To",
                _ => "Call-ID",
            }));
        }
    }
    let top_via = msg.header("Via").map(top_value).unwrap_or("");
    if via_parts(top_via).is_none() || msg.branch().is_none_or(str::is_empty) {
        return Err(ParseError::BadVia);
    }
    let (_, method) = msg.cseq().ok_or(ParseError::Missing("CSeq"))?;
    if let SipMessage::Request(r) = msg {
        if r.method != method {
            return Err(ParseError::CSeqMismatch);
        }
    }
    Ok(())
}

macro_rules! header_names {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The canonical name and the value of a parsed header.
        pub fn name_value(h: &Header) -> (&str, &str) {
            use rsip::headers::UntypedHeader;
            match h {
                Header::Other(n, v) => (n.as_str(), v.as_str()),
                $(Header::$variant(x) => ($name, x.value()),)*
            }
        }
    };
}

header_names! {
    Accept => "Accept", AcceptEncoding => "Accept-Encoding", AcceptLanguage => "Accept-Language",
    AlertInfo => "Alert-Info", Allow => "Allow", AuthenticationInfo => "Authentication-Info",
    Authorization => "Authorization", CSeq => "CSeq", CallId => "Call-ID", CallInfo => "Call-Info",
    Contact => "Contact", ContentDisposition => "Content-Disposition",
    ContentEncoding => "Content-Encoding", ContentLanguage => "Content-Language",
    ContentLength => "Content-Length", ContentType => "Content-Type", Date => "Date",
    ErrorInfo => "Error-Info", Event => "Event", Expires => "Expires", From => "From",
    InReplyTo => "In-Reply-To", MaxForwards => "Max-Forwards", MimeVersion => "MIME-Version",
    MinExpires => "Min-Expires", Organization => "Organization", Priority => "Priority",
    ProxyAuthenticate => "Proxy-Authenticate", ProxyAuthorization => "Proxy-Authorization",
    ProxyRequire => "Proxy-Require", RecordRoute => "Record-Route", ReplyTo => "Reply-To",
    Require => "Require", RetryAfter => "Retry-After", Route => "Route", Server => "Server",
    Subject => "Subject", SubscriptionState => "Subscription-State", Supported => "Supported",
    Timestamp => "Timestamp", To => "To", Unsupported => "Unsupported", UserAgent => "User-Agent",
    Via => "Via", Warning => "Warning", WwwAuthenticate => "WWW-Authenticate",
}

/// Splits a header value on the commas between list elements, leaving commas inside quotes and
/// angle brackets alone (RFC 3261 §7.3.1).
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// The transport (upper case) and the sent-by (`host[:port]`, lower case, spaces taken out) of
/// one Via value (RFC 3261 §20.42), which allows LWS around its slashes and its colon.
pub fn via_parts(value: &str) -> Option<(String, String)> {
    let before_params = value.split(';').next()?;
    let mut it = before_params.splitn(3, '/');
    let (name, version, rest) = (it.next()?.trim(), it.next()?.trim(), it.next()?);
    if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
        return None;
    }
    let (transport, host) = rest.trim_start().split_once(char::is_whitespace)?;
    if transport.is_empty() || !transport.bytes().all(is_token_char) {
        return None;
    }
    let sent_by: String = host
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    (!sent_by.is_empty()).then(|| (transport.to_ascii_uppercase(), sent_by))
}

fn top_value(value: &str) -> &str {
    split_list(value).first().copied().unwrap_or("")
}

/// A header parameter (`;tag=…`, `;branch=…`): looked up after the URI's closing `>` when there
/// is one, so URI parameters are not mistaken for header parameters.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value.find(';').map(|i| &value[i..]).unwrap_or(""),
    };
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A URI as a Request-URI may be: one we read, without header fields (RFC 3261 §19.1.5; a
/// `?` in the user part is just a character). A dialog's remote target must be one, or the
/// requests we send there would not read back.
pub fn request_uri(uri: &str) -> Option<Uri> {
    let after_user = uri.rsplit_once('@').map_or(uri, |(_, h)| h);
    if after_user.contains('?') {
        return None;
    }
    parse_uri(uri)
}

/// The URI inside a name-addr (`"Bob" <sip:bob@h>;tag=1`) or an addr-spec (`sip:bob@h;tag=1`).
pub fn addr_uri(value: &str) -> &str {
    if let (Some(a), Some(b)) = (value.find('<'), value.rfind('>')) {
        if a < b {
            return value[a + 1..b].trim();
        }
    }
    value.split(';').next().unwrap_or("").trim()
}

/// The user part of a SIP URI, without parameters (`sip:4085551234;npdi@h` → `4085551234`).
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':').map(|(_, r)| r)?;
    let (user, _) = rest.split_once('@')?;
    let user = user.split([';', ':']).next().unwrap_or(user);
    (!user.is_empty()).then_some(user)
}

/// Read access to the headers every layer needs, on requests, responses and messages alike.
// `from_*` names the From header here, not a conversion.
#[allow(clippy::wrong_self_convention)]
pub trait SipExt {
    /// All headers, in order.
    fn header_list(&self) -> &Headers;

    /// The first header with this name (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.header_list()
            .iter()
            .map(name_value)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every value of a header, list elements split (`Via: a, b` and two Via lines alike).
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.header_lines(name)
            .into_iter()
            .flat_map(split_list)
            .collect()
    }

    /// Every line of a header as it came, unsplit: for headers whose one value holds commas
    /// (a digest challenge's parameters).
    fn header_lines(&self, name: &str) -> Vec<&str> {
        self.header_list()
            .iter()
            .map(name_value)
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// The Call-ID.
    fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or("")
    }

    /// CSeq number and method.
    fn cseq(&self) -> Option<(u32, Method)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?.parse().ok()?;
        Some((n, m))
    }

    /// The From tag.
    fn from_tag(&self) -> Option<&str> {
        self.header("From").and_then(|v| param(v, "tag"))
    }

    /// The To tag.
    fn to_tag(&self) -> Option<&str> {
        self.header("To").and_then(|v| param(v, "tag"))
    }

    /// The branch of the top Via: the transaction key (RFC 3261 §17.2.3).
    fn branch(&self) -> Option<&str> {
        self.header("Via")
            .and_then(|v| param(top_value(v), "branch"))
    }

    /// The sent-by of the top Via (`host[:port]`, spaces taken out, lower case): with the
    /// branch, what tells one client's transaction from another's (RFC 3261 §17.2.3).
    fn sent_by(&self) -> Option<String> {
        via_parts(top_value(self.header("Via")?)).map(|(_, s)| s)
    }

    /// The user part of the From URI: the caller's number.
    fn from_user(&self) -> Option<&str> {
        self.header("From").map(addr_uri).and_then(uri_user)
    }

    /// The message body.
    fn body_bytes(&self) -> &[u8];
}

impl SipExt for Request {
    fn header_list(&self) -> &Headers {
        &self.headers
    }
    fn body_bytes(&self) -> &[u8] {
        &self.body
    }
}

impl SipExt for Response {
    fn header_list(&self) -> &Headers {
        &self.headers
    }
    fn body_bytes(&self) -> &[u8] {
        &self.body
    }
}

impl SipExt for SipMessage {
    fn header_list(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }
    fn body_bytes(&self) -> &[u8] {
        match self {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }
}

/// Marks a received request's top Via with where it really came from: `received` when the
/// address differs from its sent-by (RFC 3261 §18.2.1), and with `rport` asked for, the port
/// and `received` always (RFC 3581 §4). Every response copies the Via, so a phone behind NAT
/// gets its answers at the address and port its request left from.
pub fn stamp_received(req: &mut Request, from: std::net::SocketAddr) {
    let Some(h) = req
        .headers
        .iter_mut()
        .find(|h| name_value(h).0.eq_ignore_ascii_case("Via"))
    else {
        return;
    };
    let value = name_value(h).1.to_string();
    let mut values = split_list(&value);
    let Some(top) = values.first().copied() else {
        return;
    };
    let Some((_, sent_by)) = via_parts(top) else {
        return;
    };
    let ip = from.ip().to_string();
    let host = match sent_by.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => sent_by.split(':').next().unwrap_or(""),
    };
    let mut params: Vec<String> = top.split(';').map(|p| p.trim().to_string()).collect();
    let asks_rport = params
        .iter()
        .skip(1)
        .any(|p| p.eq_ignore_ascii_case("rport"));
    if asks_rport {
        for p in params.iter_mut().skip(1) {
            if p.eq_ignore_ascii_case("rport") {
                *p = format!("rport={}", from.port());
            }
        }
    }
    let has_received = params
        .iter()
        .skip(1)
        .any(|p| p.to_ascii_lowercase().starts_with("received="));
    if !has_received && (asks_rport || !host.eq_ignore_ascii_case(&ip)) {
        params.push(format!("received={ip}"));
    }
    let stamped = params.join(";");
    values[0] = &stamped;
    *h = hdr("Via", values.join(", "));
}

/// An untyped header by name; rsip files it by name when the bytes are parsed again.
pub fn hdr(name: &str, value: impl Into<String>) -> Header {
    Header::Other(name.to_string(), value.into())
}

/// The standard reason phrase of a status code (rsip prints its enum names instead).
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        430 => "Flow Failed",
        433 => "Anonymity Disallowed",
        439 => "First Hop Lacks Outbound Support",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

fn write_headers(out: &mut String, headers: &Headers, body: &[u8]) {
    for h in headers.iter() {
        let (n, v) = name_value(h);
        if n.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        let _ = write!(out, "{n}: {v}\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
}

/// A request on the wire.
pub fn request_bytes(r: &Request) -> Vec<u8> {
    let mut s = String::with_capacity(512);
    let _ = write!(s, "{} {} SIP/2.0\r\n", r.method, r.uri);
    write_headers(&mut s, &r.headers, &r.body);
    let mut out = s.into_bytes();
    out.extend_from_slice(&r.body);
    out
}

/// The reason phrase a response goes out with: its own, if [`set_phrase`] gave it one,
/// else the standard one.
pub fn phrase(r: &Response) -> &str {
    match &r.status_code {
        StatusCode::Other(_, p) if p != "Other" => p,
        c => reason(c.code()),
    }
}

/// Gives a response a reason phrase of its own: the words a softphone shows its user
/// ("insufficient funds" rather than "Payment Required"). Only printable characters are kept
/// (a phrase is text on the status line), and at most 64 of them.
pub fn set_phrase(r: &mut Response, phrase: &str) {
    let clean: String = phrase
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let clean = clean.trim();
    if !clean.is_empty() && clean != "Other" {
        r.status_code = StatusCode::Other(r.status_code.code(), clean.to_string());
    }
}

/// A response on the wire.
pub fn response_bytes(r: &Response) -> Vec<u8> {
    let code = r.status_code.code();
    let mut s = String::with_capacity(512);
    let _ = write!(s, "SIP/2.0 {code} {}\r\n", phrase(r));
    write_headers(&mut s, &r.headers, &r.body);
    let mut out = s.into_bytes();
    out.extend_from_slice(&r.body);
    out
}

/// A message on the wire.
pub fn to_bytes(m: &SipMessage) -> Vec<u8> {
    match m {
        SipMessage::Request(r) => request_bytes(r),
        SipMessage::Response(r) => response_bytes(r),
    }
}

/// A response to `req` (RFC 3261 §8.2.6): its Via, From, Call-ID and CSeq copied; its To with
/// our tag added unless it has one (or this is a 100, which creates no dialog).
pub fn response_to(req: &Request, code: u16, to_tag: Option<&str>) -> Response {
    let mut headers = Headers::default();
    for h in req.headers.iter() {
        let (n, v) = name_value(h);
        match n {
            "Via" | "From" | "Call-ID" | "CSeq" => headers.push(h.clone()),
            // A proxy in the path (Kamailio in front of several nodes) stays in the dialog
            // only if the dialog-making answers carry its Record-Route back (RFC 3261 12.1.1).
            "Record-Route" if (101..300).contains(&code) => headers.push(h.clone()),
            "To" => {
                let add_tag = code > 100 && param(v, "tag").is_none();
                match (add_tag, to_tag) {
                    (true, Some(tag)) => headers.push(hdr("To", format!("{v};tag={tag}"))),
                    _ => headers.push(h.clone()),
                }
            }
            _ => {}
        }
    }
    Response {
        status_code: StatusCode::from(code),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// Our request again as a new transaction, answering a challenge (RFC 3261 §22.2): a new
/// branch in our Via, the next CSeq, earlier credentials replaced by `credentials`; the
/// Call-ID, tags and everything else unchanged, so the gateway sees the same call.
pub fn resent_with(req: &Request, branch: &str, credentials: Header) -> Request {
    resent(
        req,
        branch,
        &["Authorization", "Proxy-Authorization"],
        vec![credentials],
    )
}

/// Our request again as a new transaction on the same call: a new branch in our Via, the next
/// CSeq, the headers named in `drop` left out and `add` put in; the Call-ID, tags and
/// everything else unchanged. What a challenge (RFC 3261 §22.2) or a 422 (RFC 4028 §7.4) asks.
pub fn resent(req: &Request, branch: &str, drop: &[&str], add: Vec<Header>) -> Request {
    let mut headers = Headers::default();
    let (seq, method) = req.cseq().unwrap_or((1, req.method));
    let mut first_via = true;
    for h in req.headers.iter() {
        match name_value(h) {
            ("Via", v) if first_via => {
                first_via = false;
                let params: Vec<&str> = v
                    .split(';')
                    .filter(|p| !p.trim_start().to_ascii_lowercase().starts_with("branch="))
                    .collect();
                let (sent_by, rest) = params.split_first().map_or(("", &[][..]), |(a, b)| (*a, b));
                let mut via = format!("{sent_by};branch={branch}");
                for p in rest {
                    via.push(';');
                    via.push_str(p);
                }
                headers.push(hdr("Via", via));
            }
            ("CSeq", _) => headers.push(hdr("CSeq", format!("{} {method}", seq + 1))),
            (name, _) if drop.iter().any(|d| d.eq_ignore_ascii_case(name)) => {}
            _ => headers.push(h.clone()),
        }
    }
    for h in add {
        headers.push(h);
    }
    new_request(req.method, req.uri.clone(), headers, req.body.clone())
}

/// A CANCEL for one of our INVITEs (RFC 3261 §9.1): the INVITE's branch, URI, From, To,
/// Call-ID, Route and CSeq number, so the peer matches it to the INVITE's transaction.
pub fn cancel_for(invite: &Request) -> Request {
    let mut headers = Headers::default();
    let (seq, _) = invite.cseq().unwrap_or((1, Method::Invite));
    for h in invite.headers.iter() {
        match name_value(h).0 {
            "Via" | "From" | "To" | "Call-ID" | "Route" | "Max-Forwards" => headers.push(h.clone()),
            "CSeq" => headers.push(hdr("CSeq", format!("{seq} CANCEL"))),
            _ => {}
        }
    }
    new_request(Method::Cancel, invite.uri.clone(), headers, Vec::new())
}

/// The methods we take, in every Allow we send.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK";

/// A bare answer to `req` with our `tag`: a Warning that explains it when there is one, and
/// Allow where RFC 3261 asks for it (405, 501, and a 200 to OPTIONS).
pub fn reply_to(req: &Request, code: u16, warning: Option<&str>, tag: &str) -> Response {
    let mut resp = response_to(req, code, Some(tag));
    if let Some(w) = warning {
        resp.headers.push(hdr(
            "Warning",
            format!("399 b2bua \"{}\"", w.replace('"', "'")),
        ));
    }
    if code == 405 || code == 501 || (code == 200 && req.method == Method::Options) {
        resp.headers.push(hdr("Allow", ALLOW));
    }
    resp
}

/// A fresh RFC 3261 branch (with the magic cookie).
pub fn new_branch() -> String {
    format!("z9hG4bK{:016x}", rand::rng().random::<u64>())
}

/// A fresh tag for From or To.
pub fn new_tag() -> String {
    format!("{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff)
}

/// A fresh Call-ID.
pub fn new_call_id(host: &str) -> String {
    format!("{:032x}@{host}", rand::rng().random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:5551200@127.0.0.1 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKdef\r\n\
f: \"Alice\" <sip:4085551234@10.0.0.1;user=phone>;tag=a1\r\n\
t: <sip:5551200@127.0.0.1>\r\n\
i: call-1@10.0.0.1\r\n\
CSeq: 7 INVITE\r\n\
m: <sip:alice@10.0.0.1:5060>\r\n\
c: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\r\n";

    #[test]
    fn the_codes_we_answer_with_carry_their_rfc_phrases() {
        // A softphone shows the phrase: the registrar's and the challenges' codes included.
        for (code, phrase) in [
            (401, "Unauthorized"),
            (407, "Proxy Authentication Required"),
            (423, "Interval Too Brief"),
            (402, "Payment Required"),
            (580, "Precondition Failure"),
        ] {
            assert_eq!(reason(code), phrase);
        }
        assert_eq!(reason(499), "Unknown");
    }

    #[test]
    fn a_phrase_of_our_own_goes_on_the_status_line_and_only_as_text() {
        let req = match parse_datagram(INVITE).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        };
        let mut r = reply_to(&req, 402, None, "t1");
        assert!(response_bytes(&r).starts_with(b"SIP/2.0 402 Payment Required\r\n"));
        set_phrase(&mut r, "insufficient\r\nX-Evil: 1 funds");
        let wire = response_bytes(&r);
        assert!(wire.starts_with(b"SIP/2.0 402 insufficientX-Evil: 1 funds\r\n"));
        assert_eq!(r.status_code.code(), 402);
        // It reads back as the same response.
        match parse_datagram(&wire).unwrap() {
            SipMessage::Response(back) => assert_eq!(back.status_code.code(), 402),
            _ => panic!("a response"),
        }
        set_phrase(&mut r, "\r\n");
        assert_eq!(
            phrase(&r),
            "insufficientX-Evil: 1 funds",
            "an empty phrase changes nothing"
        );
    }

    #[test]
    fn reads_what_the_b2bua_needs() {
        let m = parse_datagram(INVITE).unwrap();
        assert_eq!(m.call_id(), "call-1@10.0.0.1");
        assert_eq!(m.cseq(), Some((7, Method::Invite)));
        assert_eq!(m.from_tag(), Some("a1"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.branch(), Some("z9hG4bKabc"));
        assert_eq!(m.from_user(), Some("4085551234"));
        assert_eq!(m.header("content-type"), Some("application/sdp"));
        assert_eq!(m.header_values("Via").len(), 2);
        assert_eq!(m.body_bytes(), b"v=0\r");
        let SipMessage::Request(r) = m else { panic!() };
        assert_eq!(r.uri.user(), Some("5551200"));
    }

    #[test]
    fn responses_copy_the_dialog_headers_and_add_our_tag() {
        let SipMessage::Request(r) = parse_datagram(INVITE).unwrap() else {
            panic!()
        };
        let resp = response_to(&r, 486, Some("b2"));
        let bytes = response_bytes(&resp);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"), "{text}");
        let back = parse_datagram(&bytes).unwrap();
        assert_eq!(back.to_tag(), Some("b2"));
        assert_eq!(back.header_values("Via").len(), 2);
        assert_eq!(back.cseq(), Some((7, Method::Invite)));
        assert!(response_bytes(&response_to(&r, 100, Some("b2")))
            .windows(6)
            .all(|w| w != b";tag=b"));
    }

    #[test]
    fn dialog_making_answers_carry_the_record_route_back() {
        let text = String::from_utf8_lossy(INVITE).replacen(
            "CSeq:",
            "Record-Route: <sip:10.0.0.1;lr;ftag=x>\r\nRecord-Route: <sip:10.0.0.2;lr>\r\nCSeq:",
            1,
        );
        let SipMessage::Request(r) = parse_datagram(text.as_bytes()).unwrap() else {
            panic!()
        };
        for (code, copied) in [(100, false), (180, true), (200, true), (486, false)] {
            let back = parse_datagram(&response_bytes(&response_to(&r, code, Some("b2")))).unwrap();
            let rr = back.header_values("Record-Route");
            if copied {
                assert_eq!(
                    rr,
                    vec!["<sip:10.0.0.1;lr;ftag=x>", "<sip:10.0.0.2;lr>"],
                    "{code}"
                );
            } else {
                assert!(rr.is_empty(), "{code}");
            }
        }
    }

    #[test]
    fn params_ignore_uri_parameters() {
        assert_eq!(param("<sip:a@b;tag=uri>;tag=hdr", "tag"), Some("hdr"));
        assert_eq!(param("sip:a@b;tag=x", "tag"), Some("x"));
        assert_eq!(param("<sip:a@b;tag=uri>", "tag"), None);
        assert_eq!(uri_user("sip:123;npdi@h:5060"), Some("123"));
        assert_eq!(uri_user("sip:h"), None);
        assert_eq!(
            split_list("\"a, b\" <sip:x>, <sip:y,z>"),
            vec!["\"a, b\" <sip:x>", "<sip:y,z>"]
        );
    }

    #[test]
    fn uris_with_ipv6_hosts_round_trip() {
        for u in [
            "sip:5551201@[::1]:5060",
            "sip:a@[2001:db8::1];transport=tcp",
            "sip:b@example.com",
            "sip:4085551234;npdi@10.0.0.1:5070;user=phone",
        ] {
            assert_eq!(parse_uri(u).unwrap().to_string(), u);
        }
        assert_eq!(
            parse_uri("sip:5551201@[::1]:5060").unwrap().user(),
            Some("5551201")
        );
        for bad in [
            "<<<>>>",
            "http://x",
            "sip:",
            "sip:a@[::1",
            "sip:a@[nope]",
            "sip:a@h:port",
            "sip:@h",
            "sip:a b@h",
        ] {
            assert!(parse_uri(bad).is_none(), "{bad}");
        }
        let m = parse_datagram(b"OPTIONS sip:5551201@[::1] SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5999;branch=z9hG4bKa\r\nFrom: <sip:x@[::1]>;tag=1\r\nTo: <sip:5551201@[::1]>\r\nCall-ID: a\r\nCSeq: 1 OPTIONS\r\n\r\n").unwrap();
        let SipMessage::Request(r) = m else { panic!() };
        assert_eq!(r.uri.to_string(), "sip:5551201@[::1]");
    }

    #[test]
    fn missing_mandatory_headers_are_rejected() {
        let no_cseq = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\n\r\n";
        assert_eq!(parse_datagram(no_cseq), Err(ParseError::Missing("CSeq")));
        let mismatch = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(parse_datagram(mismatch), Err(ParseError::CSeqMismatch));
        let no_sent_by = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP ;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(parse_datagram(no_sent_by), Err(ParseError::BadVia));
        assert!(matches!(
            parse_datagram(b"HELLO\r\n\r\n"),
            Err(ParseError::Syntax(_))
        ));
    }

    /// The RFC 4475 torture messages, as files named by what the RFC expects: `valid_` ones are
    /// read (an unknown method is read, then answered 501), `400_`, `416_` and `505_` ones are
    /// refused with that status, `drop_` ones (malformed responses) are refused.
    #[test]
    fn rfc4475_torture_messages_are_read_as_the_rfc_says() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/rfc4475");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 30);
        let mut wrong = Vec::new();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let got = parse_datagram(&std::fs::read(&f).unwrap());
            let ok = match name.split('_').next().unwrap() {
                "valid" => match &got {
                    Ok(_) => true,
                    Err(ParseError::UnknownMethod(_)) => true,
                    Err(_) => false,
                },
                "drop" => got.is_err(),
                code => got
                    .as_ref()
                    .err()
                    .is_some_and(|e| e.status().to_string() == code),
            };
            if !ok {
                wrong.push(format!("{name}: {:?}", got.map(|_| "read")));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_top_via_is_stamped_with_received_and_rport() {
        let SipMessage::Request(mut r) = parse_datagram(INVITE).unwrap() else {
            panic!()
        };
        stamp_received(&mut r, "192.0.2.7:34567".parse().unwrap());
        let resp = response_to(&r, 200, Some("t"));
        let vias = resp.header_values("Via");
        assert_eq!(
            vias[0],
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport=34567;received=192.0.2.7"
        );
        assert_eq!(
            vias[1], "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKdef",
            "only the top one"
        );
        // Without rport, received only when the address is not the sent-by.
        let text = String::from_utf8_lossy(INVITE).replacen(";rport", "", 1);
        let SipMessage::Request(mut r) = parse_datagram(text.as_bytes()).unwrap() else {
            panic!()
        };
        stamp_received(&mut r, "10.0.0.1:5060".parse().unwrap());
        assert_eq!(
            r.header_values("Via")[0],
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc"
        );
        stamp_received(&mut r, "[2001:db8::5]:5060".parse().unwrap());
        assert!(r.header_values("Via")[0].ends_with(";received=2001:db8::5"));
    }
}
