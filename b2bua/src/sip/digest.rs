//! Digest authentication as a client (RFC 3261 §22.2 with RFC 7616 and RFC 8760): what we
//! answer when a carrier's gateway challenges our INVITE with 401 or 407. Pure functions: the
//! challenge and the credentials in, the header value out; the client nonce is passed in, so
//! a test gets the same answer every time.
//!
//! MD5, SHA-256 and SHA-512/256 with `qop=auth` (or none, RFC 2069 style, for old gateways).
//! The `-sess` variants and `auth-int` are not offered by the gateways we meet and are
//! refused, so such a challenge fails over like any other refusal.

use super::message::{hdr, resent_with, Request, Response, SipExt};
use md5::Digest as _;

/// The hash a challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    Md5,
    Sha256,
    Sha512_256,
}

impl Algorithm {
    /// The name in `algorithm=`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    /// The hash as lowercase hex.
    pub fn hash(self, s: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(md5::Md5::digest(s.as_bytes())),
            Algorithm::Sha256 => hex::encode(sha2::Sha256::digest(s.as_bytes())),
            Algorithm::Sha512_256 => hex::encode(sha2::Sha512_256::digest(s.as_bytes())),
        }
    }
}

/// One `Digest` challenge from a `WWW-Authenticate` or `Proxy-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offered `qop=auth` (else the answer carries no qop, cnonce or nc).
    pub qop_auth: bool,
}

/// A challenge value's parts are short; anything longer is not a challenge we answer.
const MAX_VALUE: usize = 1024;

impl Challenge {
    /// Reads a challenge; `None` when it is not Digest, lacks realm or nonce, or asks for
    /// something we do not do (an unknown or `-sess` algorithm, `auth-int` only).
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim_start();
        let (scheme, rest) = value.split_at(value.find(char::is_whitespace)?);
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = Algorithm::Md5;
        let mut qop = None;
        for (key, val) in params(rest)? {
            match key.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(val),
                "nonce" => nonce = Some(val),
                "opaque" => opaque = Some(val),
                "qop" => qop = Some(val),
                "algorithm" => {
                    algorithm = match val.to_ascii_uppercase().as_str() {
                        "MD5" => Algorithm::Md5,
                        "SHA-256" => Algorithm::Sha256,
                        "SHA-512-256" => Algorithm::Sha512_256,
                        _ => return None,
                    }
                }
                _ => {}
            }
        }
        let qop_auth = match qop {
            None => false,
            Some(q) if q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")) => true,
            Some(_) => return None,
        };
        Some(Challenge {
            realm: realm?,
            nonce: nonce.filter(|n| !n.is_empty())?,
            opaque,
            algorithm,
            qop_auth,
        })
    }

    /// The strongest challenge we can answer among a response's headers (RFC 7616 §3.7: a
    /// server may offer one per algorithm).
    pub fn best<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
        values
            .into_iter()
            .filter_map(Challenge::parse)
            .max_by_key(|c| c.algorithm)
    }
}

/// `key=value` and `key="quoted value"` pairs, comma separated; `None` if malformed.
pub(super) fn params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => val.push(chars.next()?),
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
            val = val.trim_end().to_string();
        }
        if key.len() + val.len() > MAX_VALUE {
            return None;
        }
        out.push((key, val));
    }
}

/// What we authenticate with.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// The `Authorization` (or `Proxy-Authorization`) value answering `ch` for a request with
/// `method` to `uri`; `nc` counts our answers to this nonce.
pub fn authorization(
    ch: &Challenge,
    cred: Credentials,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let h = |s: &str| ch.algorithm.hash(s);
    let ha1 = h(&format!("{}:{}:{}", cred.username, ch.realm, cred.password));
    let ha2 = h(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = if ch.qop_auth {
        h(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce))
    } else {
        h(&format!("{ha1}:{}:{ha2}", ch.nonce))
    };
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={}",
        quote(cred.username),
        quote(&ch.realm),
        quote(&ch.nonce),
        quote(uri),
        ch.algorithm.name(),
    );
    if ch.qop_auth {
        v.push_str(&format!(
            ", cnonce=\"{}\", qop=auth, nc={nc}",
            quote(cnonce)
        ));
    }
    if let Some(o) = &ch.opaque {
        v.push_str(&format!(", opaque=\"{}\"", quote(o)));
    }
    v
}

/// Why a challenged request was not sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// It already carried our credentials: the peer refused them.
    Refused,
    /// No challenge in the response that we can answer.
    Unsupported,
    /// The challenge names a realm other than the one the credentials are for.
    OtherRealm,
}

/// Whether a request already carries credentials (it answered a challenge).
pub fn answered(req: &Request) -> bool {
    req.header("Authorization").is_some() || req.header("Proxy-Authorization").is_some()
}

/// Our request `req` again, answering the 401 or 407 `resp` with `cred` for `realm` (any
/// realm when `None`), as RFC 3261 §22.2 asks: a new transaction (`branch`), the next CSeq,
/// the same call. Once only: a request that already answered a challenge is not sent again.
pub fn answer(
    req: &Request,
    resp: &Response,
    cred: Credentials,
    realm: Option<&str>,
    cnonce: &str,
    branch: &str,
) -> Result<Request, Unanswered> {
    if answered(req) {
        return Err(Unanswered::Refused);
    }
    let (offered, name) = if resp.status_code.code() == 407 {
        ("Proxy-Authenticate", "Proxy-Authorization")
    } else {
        ("WWW-Authenticate", "Authorization")
    };
    let ch = Challenge::best(resp.header_lines(offered)).ok_or(Unanswered::Unsupported)?;
    if realm.is_some_and(|r| r != ch.realm) {
        return Err(Unanswered::OtherRealm);
    }
    let method = req.method.to_string();
    let value = authorization(&ch, cred, &method, &req.uri.to_string(), cnonce, 1);
    Ok(resent_with(req, branch, hdr(name, value)))
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1 (the same request answered with MD5 and with SHA-256).
    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const MUFASA: Credentials = Credentials {
        username: "Mufasa",
        password: "Circle of Life",
    };

    fn rfc7616(algorithm: &str) -> Challenge {
        Challenge::parse(&format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
             algorithm={algorithm}, nonce=\"{NONCE}\", opaque=\"{OPAQUE}\""
        ))
        .unwrap()
    }

    fn response(header: &str) -> &str {
        let at = header.find("response=\"").unwrap() + 10;
        &header[at..at + header[at..].find('"').unwrap()]
    }

    #[test]
    fn the_rfc_7616_examples() {
        let md5 = authorization(&rfc7616("MD5"), MUFASA, "GET", "/dir/index.html", CNONCE, 1);
        assert_eq!(response(&md5), "8ca523f5e9506fed4657c9700eebdbec");
        assert!(md5.contains("qop=auth, nc=00000001"), "{md5}");
        assert!(md5.contains(&format!("opaque=\"{OPAQUE}\"")), "{md5}");
        let sha = authorization(
            &rfc7616("SHA-256"),
            MUFASA,
            "GET",
            "/dir/index.html",
            CNONCE,
            1,
        );
        assert_eq!(
            response(&sha),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert!(sha.contains("algorithm=SHA-256"));
        // RFC 8760's SHA-512/256, checked against OpenSSL's (Python's hashlib) on the same input.
        let sha512 = authorization(
            &rfc7616("SHA-512-256"),
            MUFASA,
            "GET",
            "/dir/index.html",
            CNONCE,
            1,
        );
        assert_eq!(
            response(&sha512),
            "430d05014cecc49cab6fbe03176d41a1da86cbfe24a16580e22aaad928d960d0"
        );
    }

    #[test]
    fn without_qop_the_answer_is_rfc_2069s() {
        let ch = Challenge::parse("Digest realm=\"sip.example\",nonce=\"abc\"").unwrap();
        assert!(!ch.qop_auth);
        assert_eq!(ch.algorithm, Algorithm::Md5);
        let v = authorization(&ch, MUFASA, "INVITE", "sip:1@gw", "x", 1);
        // MD5(MD5(Mufasa:sip.example:Circle of Life):abc:MD5(INVITE:sip:1@gw))
        let ha1 = Algorithm::Md5.hash("Mufasa:sip.example:Circle of Life");
        let ha2 = Algorithm::Md5.hash("INVITE:sip:1@gw");
        assert_eq!(
            response(&v),
            Algorithm::Md5.hash(&format!("{ha1}:abc:{ha2}"))
        );
        assert!(!v.contains("cnonce") && !v.contains("qop"), "{v}");
    }

    #[test]
    fn the_strongest_offer_is_answered() {
        let ch = Challenge::best([
            "Digest realm=\"r\", nonce=\"n1\", algorithm=MD5",
            "Digest realm=\"r\", nonce=\"n2\", algorithm=SHA-256",
            "Basic realm=\"r\"",
        ])
        .unwrap();
        assert_eq!((ch.algorithm, ch.nonce.as_str()), (Algorithm::Sha256, "n2"));
    }

    #[test]
    fn challenges_we_cannot_answer_are_refused() {
        for bad in [
            "",
            "Digest",
            "Basic realm=\"r\"",
            "Digest realm=\"r\"",
            "Digest nonce=\"n\"",
            "Digest realm=\"r\", nonce=\"\"",
            "Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess",
            "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1",
            "Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"",
            "Digest realm=\"r, nonce=\"n\"",
            "Digest realm",
            "Digest =\"r\"",
        ] {
            assert_eq!(Challenge::parse(bad), None, "{bad:?}");
        }
        let long = format!("Digest realm=\"{}\", nonce=\"n\"", "r".repeat(2000));
        assert_eq!(Challenge::parse(&long), None);
    }

    #[test]
    fn quotes_and_backslashes_survive_both_ways() {
        let ch = Challenge::parse(r#"Digest realm="a \"b\" \\c", nonce="n""#).unwrap();
        assert_eq!(ch.realm, r#"a "b" \c"#);
        let v = authorization(&ch, MUFASA, "INVITE", "sip:1@gw", "x", 1);
        assert!(v.contains(r#"realm="a \"b\" \\c""#), "{v}");
    }
}
