//! Framing and normalization of raw SIP bytes before they reach the parser.
//!
//! rsip, the parser behind [`super::message`], files compact header names (`v`, `f`, `i`, …) as
//! unknown headers, rejects folded header lines, a space before the colon and LF-only line ends,
//! and ignores Content-Length. Everything that arrives from the network passes through here
//! first, so the parser only ever sees canonical names, one line per header, CRLF line ends and
//! a body cut to exactly its declared length. On TCP the same rules find where one message ends
//! and the next begins; input that cannot be framed is an error and the connection is closed.

use std::fmt;

/// The largest message we accept, on any transport. A datagram or a stream frame beyond it is
/// rejected rather than buffered without bound.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why bytes could not be turned into one SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// More than [`MAX_MESSAGE`] bytes.
    TooLarge(usize),
    /// No blank line ends the header section.
    NoHeaderEnd,
    /// The header section is not UTF-8.
    NotUtf8,
    /// A header line without a colon, or with an empty or invalid name.
    BadHeaderLine(String),
    /// A line folded onto nothing (the first header line starts with whitespace).
    FoldBeforeHeader,
    /// A CR that does not end a line: a header value smuggling a line break (RFC 3261 §7.3.1
    /// allows CR only as part of CRLF).
    LoneCr,
    /// Content-Length is not a number, or there are two that disagree.
    BadContentLength(String),
    /// A stream message without Content-Length: where it ends is unknowable.
    MissingContentLength,
    /// The body is shorter than Content-Length says.
    ShortBody { declared: usize, got: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge(n) => {
                write!(f, "message too large ({n} bytes, limit {MAX_MESSAGE})")
            }
            FrameError::NoHeaderEnd => write!(f, "no blank line ends the headers"),
            FrameError::NotUtf8 => write!(f, "headers are not UTF-8"),
            FrameError::BadHeaderLine(l) => write!(f, "bad header line: {l:?}"),
            FrameError::FoldBeforeHeader => write!(f, "continuation line before any header"),
            FrameError::LoneCr => write!(f, "a CR inside a line"),
            FrameError::BadContentLength(v) => write!(f, "bad Content-Length: {v:?}"),
            FrameError::MissingContentLength => write!(f, "Content-Length is required on streams"),
            FrameError::ShortBody { declared, got } => {
                write!(f, "body is {got} bytes but Content-Length says {declared}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// RFC 3261 §7.3.3 and the registry of compact forms (RFC 3841, 3903, 3515, 4028, 4474).
fn expand_compact(name: &str) -> Option<&'static str> {
    if name.len() != 1 {
        return None;
    }
    Some(match name.as_bytes()[0].to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => return None,
    })
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Where the header section ends: (index of the first body byte), looking from `from` on.
fn header_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            // "\n\n" or "\n\r\n" ends the headers.
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// A header section rewritten to canonical form, and the Content-Length it declared.
struct Head {
    text: String,
    content_length: Option<usize>,
}

fn normalize_head(head: &[u8]) -> Result<Head, FrameError> {
    let head = std::str::from_utf8(head).map_err(|_| FrameError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    // The start line as sent: spaces around it are an error the parser must see (RFC 4475
    // §3.1.2.10), so they are not trimmed here.
    let start = lines.next().unwrap_or("");
    if head
        .split('\n')
        .any(|l| l.strip_suffix('\r').unwrap_or(l).contains('\r'))
    {
        return Err(FrameError::LoneCr);
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some(last) = headers.last_mut() else {
                return Err(FrameError::FoldBeforeHeader);
            };
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(FrameError::BadHeaderLine(line.chars().take(80).collect()));
        };
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(FrameError::BadHeaderLine(line.chars().take(80).collect()));
        }
        let name = expand_compact(name)
            .map(str::to_string)
            .unwrap_or_else(|| name.to_string());
        headers.push((name, value.trim().to_string()));
    }
    let mut content_length = None;
    let mut text = String::with_capacity(head.len() + 32);
    text.push_str(start);
    text.push_str("\r\n");
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("Content-Length") {
            let n: usize = value
                .parse()
                .map_err(|_| FrameError::BadContentLength(value.clone()))?;
            // No arithmetic ever sees a length beyond the largest message.
            if n > MAX_MESSAGE {
                return Err(FrameError::TooLarge(n));
            }
            if content_length.is_some_and(|m| m != n) {
                return Err(FrameError::BadContentLength(value));
            }
            content_length = Some(n);
            continue;
        }
        text.push_str(&name);
        text.push_str(": ");
        text.push_str(&value);
        text.push_str("\r\n");
    }
    Ok(Head {
        text,
        content_length,
    })
}

fn assemble(head: Head, body: &[u8]) -> Vec<u8> {
    let mut out = head.text.into_bytes();
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// True for a keep-alive: a datagram or stream prefix of nothing but CR and LF (RFC 5626 §3.5.1).
pub fn is_keepalive(buf: &[u8]) -> bool {
    buf.iter().all(|b| *b == b'\r' || *b == b'\n')
}

/// Normalizes one datagram. Without Content-Length the body is the rest of the datagram
/// (RFC 3261 §18.3); with it, extra bytes are dropped and missing bytes are an error.
pub fn normalize_datagram(buf: &[u8]) -> Result<Vec<u8>, FrameError> {
    if buf.len() > MAX_MESSAGE {
        return Err(FrameError::TooLarge(buf.len()));
    }
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let buf = &buf[start..];
    let end = header_end(buf, 0).ok_or(FrameError::NoHeaderEnd)?;
    let head = normalize_head(&buf[..end])?;
    let rest = &buf[end..];
    let body = match head.content_length {
        Some(n) if n > rest.len() => {
            return Err(FrameError::ShortBody {
                declared: n,
                got: rest.len(),
            })
        }
        Some(n) => &rest[..n],
        None => rest,
    };
    Ok(assemble(head, body))
}

/// Cuts a byte stream (TCP) into normalized messages by Content-Length.
#[derive(Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// How far the search for the end of the headers has looked, so that a message arriving a
    /// byte at a time costs linear time, not quadratic.
    scanned: usize,
    /// Line ends seen in a row between messages: two make a keep-alive ping.
    line_ends: u8,
    /// Pings (`CRLF CRLF`, RFC 5626 §3.5.1) not yet answered with a pong.
    pings: usize,
}

impl StreamFramer {
    /// An empty framer for a new connection.
    pub fn new() -> StreamFramer {
        StreamFramer::default()
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether keep-alive pings came since the last look: the client wants a pong (`CRLF`,
    /// RFC 5626 §4.4.1) to know its connection, and its NAT binding, still stand.
    pub fn take_pings(&mut self) -> bool {
        std::mem::take(&mut self.pings) > 0
    }

    /// The bytes received and not yet framed (for a reply to a message that cannot be).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// The next complete message, `Ok(None)` when more bytes are needed, or an error after
    /// which the connection must be closed: the stream can no longer be framed.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.scanned == 0 {
            // Keep-alives (RFC 5626 §3.5.1) and stray line ends between messages.
            let skip = self
                .buf
                .iter()
                .position(|b| *b != b'\r' && *b != b'\n')
                .unwrap_or(self.buf.len());
            for b in self.buf.drain(..skip) {
                if b == b'\n' {
                    self.line_ends += 1;
                    if self.line_ends == 2 {
                        self.line_ends = 0;
                        self.pings += 1;
                    }
                }
            }
            if !self.buf.is_empty() {
                // A message begins: its line ends are its own.
                self.line_ends = 0;
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        // The end marker may straddle what was scanned and what is new.
        let Some(end) = header_end(&self.buf, self.scanned.saturating_sub(3)) else {
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_MESSAGE {
                return Err(FrameError::TooLarge(self.buf.len()));
            }
            return Ok(None);
        };
        self.scanned = end;
        let head = normalize_head(&self.buf[..end])?;
        let len = head
            .content_length
            .ok_or(FrameError::MissingContentLength)?;
        let total = end
            .checked_add(len)
            .filter(|t| *t <= MAX_MESSAGE)
            .ok_or(FrameError::TooLarge(len))?;
        if self.buf.len() < total {
            return Ok(None);
        }
        let out = assemble(head, &self.buf[end..total]);
        self.buf.drain(..total);
        self.scanned = 0;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn compact_names_are_expanded() {
        let m = text(normalize_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:x@y>;tag=1\r\nt: <sip:a@b>\r\ni: abc\r\nl: 0\r\n\r\n").unwrap());
        assert!(
            m.contains("\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"),
            "{m}"
        );
        assert!(m.contains("\r\nFrom: <sip:x@y>;tag=1\r\n"));
        assert!(m.contains("\r\nTo: <sip:a@b>\r\n"));
        assert!(m.contains("\r\nCall-ID: abc\r\n"));
        assert!(m.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn folded_lines_are_joined() {
        let m = text(
            normalize_datagram(
                b"OPTIONS sip:a@b SIP/2.0\r\nSubject: one\r\n  two\r\n\tthree\r\n\r\n",
            )
            .unwrap(),
        );
        assert!(m.contains("Subject: one two three\r\n"), "{m}");
    }

    #[test]
    fn space_before_colon_is_removed() {
        let m =
            text(normalize_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID  : abc\r\n\r\n").unwrap());
        assert!(m.contains("\r\nCall-ID: abc\r\n"), "{m}");
    }

    #[test]
    fn a_double_crlf_between_messages_is_a_ping_even_split_across_reads() {
        let mut f = StreamFramer::new();
        f.push(b"\r\n");
        assert!(f.next_message().unwrap().is_none());
        assert!(!f.take_pings(), "half a ping");
        f.push(b"\r\n");
        assert!(f.next_message().unwrap().is_none());
        assert!(f.take_pings(), "CRLF CRLF is a ping");
        assert!(!f.take_pings(), "answered once");
        // A lone CRLF before a message is no ping, nor are the message's own line ends.
        f.push(b"\r\nOPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        assert!(f.next_message().unwrap().is_some());
        assert!(f.next_message().unwrap().is_none());
        assert!(!f.take_pings());
    }

    #[test]
    fn lf_only_lines_become_crlf() {
        let m = text(
            normalize_datagram(b"OPTIONS sip:a@b SIP/2.0\nCall-ID: abc\nContent-Length: 3\n\nxyz")
                .unwrap(),
        );
        assert_eq!(
            m,
            "OPTIONS sip:a@b SIP/2.0\r\nCall-ID: abc\r\nContent-Length: 3\r\n\r\nxyz"
        );
    }

    #[test]
    fn content_length_cuts_the_datagram_body() {
        let m = text(
            normalize_datagram(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nhello")
                .unwrap(),
        );
        assert!(m.ends_with("Content-Length: 2\r\n\r\nhe"));
        assert_eq!(
            normalize_datagram(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 9\r\n\r\nhello"),
            Err(FrameError::ShortBody {
                declared: 9,
                got: 5
            })
        );
        // Without Content-Length the body is the rest of the datagram.
        let m = text(normalize_datagram(b"MESSAGE sip:a@b SIP/2.0\r\n\r\nhello").unwrap());
        assert!(m.ends_with("Content-Length: 5\r\n\r\nhello"));
    }

    #[test]
    fn broken_heads_are_errors() {
        assert_eq!(
            normalize_datagram(b"OPTIONS sip:a@b SIP/2.0\r\n"),
            Err(FrameError::NoHeaderEnd)
        );
        assert!(matches!(
            normalize_datagram(b"X sip:a SIP/2.0\r\nno colon here\r\n\r\n"),
            Err(FrameError::BadHeaderLine(_))
        ));
        assert!(matches!(
            normalize_datagram(b"X sip:a SIP/2.0\r\nBad Name: 1\r\n\r\n"),
            Err(FrameError::BadHeaderLine(_))
        ));
        assert_eq!(
            normalize_datagram(b"X sip:a SIP/2.0\r\n folded: 1\r\n\r\n"),
            Err(FrameError::FoldBeforeHeader)
        );
        assert!(matches!(
            normalize_datagram(b"X sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n"),
            Err(FrameError::BadContentLength(_))
        ));
        assert!(matches!(
            normalize_datagram(b"X sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab"),
            Err(FrameError::BadContentLength(_))
        ));
        assert!(matches!(
            normalize_datagram(&[b'a'; MAX_MESSAGE + 1]),
            Err(FrameError::TooLarge(_))
        ));
        assert_eq!(
            normalize_datagram(b"X sip:a SIP/2.0\r\nA: \xff\r\n\r\n"),
            Err(FrameError::NotUtf8)
        );
        // A CR alone inside a value could end a line for a parser further on.
        assert_eq!(
            normalize_datagram(b"X sip:a SIP/2.0\r\nSubject: a\rInjected: b\r\n\r\n"),
            Err(FrameError::LoneCr)
        );
        assert_eq!(
            normalize_datagram(b"X sip:a\r SIP/2.0\r\n\r\n"),
            Err(FrameError::LoneCr)
        );
    }

    #[test]
    fn stream_is_cut_by_content_length() {
        let mut f = StreamFramer::new();
        f.push(b"\r\n\r\nMESSAGE sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabcMESS");
        let m = text(f.next_message().unwrap().unwrap());
        assert!(m.ends_with("\r\n\r\nabc"));
        assert_eq!(f.next_message(), Ok(None));
        f.push(b"AGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nx");
        assert_eq!(f.next_message(), Ok(None));
        f.push(b"y");
        assert!(text(f.next_message().unwrap().unwrap()).ends_with("\r\n\r\nxy"));
    }

    #[test]
    fn unframeable_streams_are_errors() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\n");
        assert_eq!(f.next_message(), Err(FrameError::MissingContentLength));
        let mut f = StreamFramer::new();
        f.push(&vec![b'a'; MAX_MESSAGE + 1]);
        assert!(matches!(f.next_message(), Err(FrameError::TooLarge(_))));
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 999999\r\n\r\n");
        assert!(matches!(f.next_message(), Err(FrameError::TooLarge(_))));
        // A length at the very top of usize must not overflow the framing arithmetic.
        for cl in ["18446744073709551615", "18446744073709551616", "65530"] {
            let mut f = StreamFramer::new();
            f.push(
                format!(
                    "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\nContent-Length: {cl}\r\n\r\n"
                )
                .as_bytes(),
            );
            assert!(
                matches!(
                    f.next_message(),
                    Err(FrameError::TooLarge(_) | FrameError::BadContentLength(_))
                ),
                "{cl}"
            );
            assert!(normalize_datagram(
                format!("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {cl}\r\n\r\n").as_bytes()
            )
            .is_err());
        }
    }

    #[test]
    fn a_message_a_byte_at_a_time_is_framed_in_linear_time() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 3\r\n\r\nabc";
        let mut f = StreamFramer::new();
        let mut got = Vec::new();
        for _ in 0..3 {
            for b in msg.iter() {
                f.push(&[*b]);
                if let Some(m) = f.next_message().unwrap() {
                    got.push(m);
                }
            }
        }
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|m| m.ends_with(b"\r\n\r\nabc")));
        // The end of the headers split across pushes is still found.
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r");
        assert_eq!(f.next_message(), Ok(None));
        f.push(b"\n");
        assert!(f.next_message().unwrap().is_some());
        // Each push is searched from where the last search stopped (less the three bytes a
        // straddling end marker may need), never from the start again.
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\n");
        for _ in 0..1000 {
            f.push(b"x");
            assert_eq!(f.next_message(), Ok(None));
            assert_eq!(f.scanned, f.buf.len());
        }
    }
}
