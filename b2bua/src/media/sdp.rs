//! SDP offer/answer (RFC 3264) for one audio stream: which codec, which telephone-event payload
//! number, where to send, which direction. Parsing and writing go through webrtc-rs `sdp`; the
//! choices are ours and I/O-free.

use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};
use std::fmt;
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

/// An audio codec we can send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus (the `opus` cargo feature), 20 ms frames, RTP clock 48 kHz.
    #[cfg(feature = "opus")]
    Opus,
}

impl Codec {
    fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
            #[cfg(feature = "opus")]
            Codec::Opus => "opus/48000/2",
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            #[cfg(feature = "opus")]
            Codec::Opus => 48000,
        }
    }

    /// The payload type we offer it with.
    fn our_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            #[cfg(feature = "opus")]
            Codec::Opus => 111,
        }
    }

    /// Codecs we support, in our preference order (G.711 first: it needs no transcoding to
    /// the gateways, which nearly all speak it).
    pub fn supported() -> &'static [Codec] {
        #[cfg(feature = "opus")]
        {
            &[Codec::Pcmu, Codec::Pcma, Codec::Opus]
        }
        #[cfg(not(feature = "opus"))]
        {
            &[Codec::Pcmu, Codec::Pcma]
        }
    }
}

/// Media direction (RFC 3264 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// The offerer only sends (it put us on hold).
    SendOnly,
    /// The offerer only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    fn key(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer gives to an offer of this direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

/// The audio stream a session description offers or answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    /// Where its RTP goes.
    pub rtp: SocketAddr,
    /// Payload types in the sender's order with the codec each means (ours only).
    pub codecs: Vec<(u8, Codec)>,
    /// Every payload type listed, known or not (to tell "nothing fits" apart).
    pub formats: Vec<u8>,
    /// The telephone-event payload type, if offered.
    pub telephone_event: Option<u8>,
    /// Direction.
    pub direction: Direction,
    /// RTCP multiplexed on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// The SRTP key the sender will encrypt with (SDES, RFC 4568), when it offered or
    /// answered one in the suite we speak.
    pub srtp: Option<Sdes>,
    /// The profile is `RTP/SAVP` (an answer keeps the offer's profile).
    pub savp: bool,
}

/// One usable `a=crypto` line: its tag (an answer repeats the offer's) and the sender's key.
#[derive(Clone, PartialEq, Eq)]
pub struct Sdes {
    /// The line's tag.
    pub tag: u32,
    /// The sender's master key and salt.
    pub key: super::srtp::KeySalt,
}

impl fmt::Debug for Sdes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key in a log is a key given away.
        write!(f, "Sdes {{ tag: {}, key: <hidden> }}", self.tag)
    }
}

/// Why a body is not a usable audio offer or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// The SDP parser refused it.
    Syntax(String),
    /// No `m=audio` line with a port.
    NoAudio,
    /// No connection address for the audio stream.
    NoAddress,
    /// None of the offered codecs is one we have: answer 488.
    NoCommonCodec,
    /// An `m=` format that is not an RTP payload type (0–127): answer 488.
    BadPayloadType(String),
    /// `RTP/SAVP` without an `a=crypto` line we can use: answer 488.
    NoCommonCrypto,
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::Syntax(e) => write!(f, "bad SDP: {e}"),
            SdpError::NoAudio => write!(f, "no audio stream in the SDP"),
            SdpError::NoAddress => write!(f, "no connection address for the audio stream"),
            SdpError::NoCommonCrypto => write!(
                f,
                "SRTP required but no usable crypto line (we have {} with an inline key)",
                super::srtp::SUITE
            ),
            SdpError::BadPayloadType(pt) => {
                write!(f, "`{pt}` is not an RTP payload type (0 to 127)")
            }
            SdpError::NoCommonCodec => {
                let names: Vec<&str> = Codec::supported()
                    .iter()
                    .map(|c| c.rtpmap().split('/').next().unwrap_or(""))
                    .collect();
                write!(f, "no codec in common (we have {})", names.join(", "))
            }
        }
    }
}

impl std::error::Error for SdpError {}

fn static_codec(pt: u8) -> Option<Codec> {
    match pt {
        0 => Some(Codec::Pcmu),
        8 => Some(Codec::Pcma),
        _ => None,
    }
}

/// Reads the first audio stream of a session description.
pub fn parse(body: &[u8]) -> Result<Audio, SdpError> {
    let sd = SessionDescription::unmarshal(&mut Cursor::new(body))
        .map_err(|e| SdpError::Syntax(e.to_string()))?;
    let m = sd
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "audio" && m.media_name.port.value > 0)
        .ok_or(SdpError::NoAudio)?;
    let conn = m
        .connection_information
        .as_ref()
        .or(sd.connection_information.as_ref());
    let ip: IpAddr = conn
        .and_then(|c| c.address.as_ref())
        .and_then(|a| a.address.split('/').next().and_then(|a| a.parse().ok()))
        .ok_or(SdpError::NoAddress)?;
    let port = u16::try_from(m.media_name.port.value).map_err(|_| SdpError::NoAudio)?;
    // RTP carries 7 bits of payload type (RFC 3550 §5.1): a format outside 0–127 cannot be
    // sent or received, and the offer that lists one is refused rather than half understood.
    let formats: Vec<u8> = m
        .media_name
        .formats
        .iter()
        .map(|f| {
            f.parse::<u8>()
                .ok()
                .filter(|pt| *pt <= 127)
                .ok_or_else(|| SdpError::BadPayloadType(f.chars().take(16).collect()))
        })
        .collect::<Result<_, _>>()?;
    let rtpmap = |pt: u8| -> Option<String> {
        m.attributes
            .iter()
            .filter(|a| a.key == "rtpmap")
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (p, name) = v.split_once(' ')?;
                (p.trim().parse::<u8>().ok()? == pt).then(|| name.trim().to_ascii_lowercase())
            })
    };
    let mut codecs = Vec::new();
    let mut telephone_event = None;
    for pt in &formats {
        let name = rtpmap(*pt);
        let codec = match name.as_deref() {
            Some(n) if n.starts_with("pcmu/8000") => Some(Codec::Pcmu),
            Some(n) if n.starts_with("pcma/8000") => Some(Codec::Pcma),
            #[cfg(feature = "opus")]
            Some(n) if n.starts_with("opus/48000") => Some(Codec::Opus),
            Some(n) if n.starts_with("telephone-event/8000") => {
                telephone_event.get_or_insert(*pt);
                None
            }
            Some(_) => None,
            None => static_codec(*pt),
        };
        if let Some(c) = codec {
            codecs.push((*pt, c));
        }
    }
    let direction = ["sendrecv", "sendonly", "recvonly", "inactive"]
        .iter()
        .zip([
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ])
        .find(|(k, _)| m.has_attribute(k) || sd.has_attribute(k))
        .map(|(_, d)| d)
        .unwrap_or(Direction::SendRecv);
    // RTP/SAVP insists on SRTP; crypto lines on RTP/AVP are best effort (taken if usable).
    let savp = m.media_name.protos.iter().any(|p| p == "SAVP");
    let srtp = m
        .attributes
        .iter()
        .filter(|a| a.key == "crypto")
        .filter_map(|a| a.value.as_deref())
        .find_map(crypto_line);
    if savp && srtp.is_none() {
        return Err(SdpError::NoCommonCrypto);
    }
    Ok(Audio {
        rtp: SocketAddr::new(ip, port),
        codecs,
        formats,
        telephone_event,
        direction,
        rtcp_mux: m.has_attribute("rtcp-mux"),
        srtp,
        savp,
    })
}

/// An `a=crypto` value (RFC 4568 §9.1) we can use: our suite, one inline key of the right
/// length, no MKI (our packets carry none), and no session parameter that turns encryption
/// or authentication off.
fn crypto_line(v: &str) -> Option<Sdes> {
    use base64::Engine as _;
    let mut parts = v.split_ascii_whitespace();
    let tag = parts
        .next()?
        .parse::<u32>()
        .ok()
        .filter(|t| *t < 1_000_000_000)?;
    if parts.next()? != super::srtp::SUITE {
        return None;
    }
    let params = parts.next()?;
    if parts.any(|p| p.starts_with("UNENCRYPTED") || p.starts_with("UNAUTHENTICATED")) {
        return None;
    }
    let first = params.split(';').next()?;
    let inline = first.strip_prefix("inline:")?;
    let mut fields = inline.split('|');
    let b64 = fields.next()?;
    // A lifetime may follow; an MKI (`n:len`) may not.
    if fields.any(|f| f.contains(':')) {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let key: super::srtp::KeySalt = raw.try_into().ok()?;
    Some(Sdes { tag, key })
}

/// Our `a=crypto` value for a key, with `tag`.
fn crypto_value(tag: u32, key: &super::srtp::KeySalt) -> String {
    use base64::Engine as _;
    format!(
        "{tag} {} inline:{}",
        super::srtp::SUITE,
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// What an answer settled: the codec and payload numbers both sides use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec and its payload type (the offerer's number).
    pub codec: (u8, Codec),
    /// The telephone-event payload type, when both sides have it.
    pub telephone_event: Option<u8>,
    /// Where to send RTP.
    pub remote: SocketAddr,
    /// Our direction.
    pub direction: Direction,
    /// RTCP on the RTP port.
    pub rtcp_mux: bool,
}

/// Answers an offer from our socket `local`: the offerer's first codec we support (its order
/// wins), its telephone-event number, the mirrored direction, rtcp-mux if offered, and SRTP
/// with our key `key` for the leg if the offer had a usable crypto line (same tag, same
/// profile as the offer).
pub fn answer(
    offer: &Audio,
    local: SocketAddr,
    key: &super::srtp::KeySalt,
    session_id: u64,
) -> Result<(String, Negotiated), SdpError> {
    let codec = *offer.codecs.first().ok_or(SdpError::NoCommonCodec)?;
    let neg = Negotiated {
        codec,
        telephone_event: offer.telephone_event,
        remote: offer.rtp,
        direction: offer.direction.answer(),
        rtcp_mux: offer.rtcp_mux,
    };
    let crypto = offer.srtp.as_ref().map(|o| crypto_value(o.tag, key));
    let body = write(
        local,
        &[codec],
        neg.telephone_event,
        neg.direction,
        neg.rtcp_mux,
        crypto.as_deref().map(|c| (c, offer.savp)),
        session_id,
    );
    Ok((body, neg))
}

/// An offer from our socket `local` with every codec we support and telephone-event 101,
/// `prefer` first (the codec the other leg already uses, so that no transcoding is needed when
/// the answerer can take it); as `RTP/SAVP` with our key when `srtp` is given (a leg that
/// speaks SRTP keeps speaking it in every re-offer).
pub fn offer(
    local: SocketAddr,
    prefer: Codec,
    direction: Direction,
    srtp: Option<&super::srtp::KeySalt>,
    session_id: u64,
) -> String {
    let mut codecs: Vec<(u8, Codec)> = Codec::supported()
        .iter()
        .map(|c| (c.our_pt(), *c))
        .collect();
    codecs.sort_by_key(|(_, c)| *c != prefer);
    let crypto = srtp.map(|k| crypto_value(1, k));
    write(
        local,
        &codecs,
        Some(101),
        direction,
        false,
        crypto.as_deref().map(|c| (c, true)),
        session_id,
    )
}

fn write(
    local: SocketAddr,
    codecs: &[(u8, Codec)],
    te: Option<u8>,
    direction: Direction,
    rtcp_mux: bool,
    crypto: Option<(&str, bool)>,
    session_id: u64,
) -> String {
    let addr_type = if local.is_ipv4() { "IP4" } else { "IP6" };
    let conn = ConnectionInformation {
        network_type: "IN".into(),
        address_type: addr_type.into(),
        address: Some(Address {
            address: local.ip().to_string(),
            ttl: None,
            range: None,
        }),
    };
    let mut formats: Vec<String> = codecs.iter().map(|(pt, _)| pt.to_string()).collect();
    let mut attributes: Vec<Attribute> = codecs
        .iter()
        .map(|(pt, c)| Attribute {
            key: "rtpmap".into(),
            value: Some(format!("{pt} {}", c.rtpmap())),
        })
        .collect();
    if let Some(pt) = te {
        formats.push(pt.to_string());
        attributes.push(Attribute {
            key: "rtpmap".into(),
            value: Some(format!("{pt} telephone-event/8000")),
        });
        attributes.push(Attribute {
            key: "fmtp".into(),
            value: Some(format!("{pt} 0-16")),
        });
    }
    attributes.push(Attribute {
        key: "ptime".into(),
        value: Some("20".into()),
    });
    if rtcp_mux {
        attributes.push(Attribute {
            key: "rtcp-mux".into(),
            value: None,
        });
    }
    attributes.push(Attribute {
        key: direction.key().into(),
        value: None,
    });
    if let Some((c, _)) = crypto {
        attributes.push(Attribute {
            key: "crypto".into(),
            value: Some(c.into()),
        });
    }
    let profile = if crypto.is_some_and(|(_, savp)| savp) {
        "SAVP"
    } else {
        "AVP"
    };
    let media = MediaDescription {
        media_name: MediaName {
            media: "audio".into(),
            port: RangedPort {
                value: local.port() as isize,
                range: None,
            },
            protos: vec!["RTP".into(), profile.into()],
            formats,
        },
        media_title: None,
        connection_information: Some(conn.clone()),
        bandwidth: Vec::new(),
        encryption_key: None,
        attributes,
    };
    let sd = SessionDescription {
        version: 0,
        origin: Origin {
            username: "b2bua".into(),
            session_id,
            session_version: session_id,
            network_type: "IN".into(),
            address_type: addr_type.into(),
            unicast_address: local.ip().to_string(),
        },
        session_name: "b2bua".into(),
        session_information: None,
        uri: None,
        email_address: None,
        phone_number: None,
        connection_information: Some(conn),
        bandwidth: Vec::new(),
        time_descriptions: vec![TimeDescription {
            timing: Timing {
                start_time: 0,
                stop_time: 0,
            },
            repeat_times: Vec::new(),
        }],
        time_zones: Vec::new(),
        encryption_key: None,
        attributes: Vec::new(),
        media_descriptions: vec![media],
    };
    sd.marshal()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: crate::media::srtp::KeySalt = [7; 30];

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 8 0 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=sendonly\r\n";

    #[test]
    fn answers_in_the_offerers_order_with_its_event_number() {
        let offer = parse(SIPP_OFFER.as_bytes()).unwrap();
        assert_eq!(offer.codecs, vec![(8, Codec::Pcma), (0, Codec::Pcmu)]);
        assert_eq!(offer.telephone_event, Some(96));
        assert_eq!(offer.direction, Direction::SendOnly);
        let local: SocketAddr = "127.0.0.1:30000".parse().unwrap();
        let (body, neg) = answer(&offer, local, &KEY, 7).unwrap();
        assert_eq!(neg.codec, (8, Codec::Pcma));
        assert_eq!(neg.remote, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(neg.direction, Direction::RecvOnly, "held: we only receive");
        let back = parse(body.as_bytes()).unwrap();
        assert_eq!(back.rtp, local);
        assert_eq!(back.codecs, vec![(8, Codec::Pcma)]);
        assert_eq!(back.telephone_event, Some(96));
        assert_eq!(back.direction, Direction::RecvOnly);
        assert!(
            body.contains("a=rtpmap:96 telephone-event/8000\r\n"),
            "{body}"
        );
    }

    #[test]
    fn static_payloads_inactive_ipv6_and_rtcp_mux() {
        let o = "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\nc=IN IP6 ::1\r\na=inactive\r\na=rtcp-mux\r\n";
        let a = parse(o.as_bytes()).unwrap();
        assert_eq!(a.codecs, vec![(0, Codec::Pcmu)]);
        assert_eq!(a.direction, Direction::Inactive);
        assert!(a.rtcp_mux);
        assert_eq!(a.rtp, "[::1]:7000".parse().unwrap());
        let (body, _) = answer(&a, "[::1]:30002".parse().unwrap(), &KEY, 1).unwrap();
        assert!(
            body.contains("c=IN IP6 ::1\r\n")
                && body.contains("a=inactive\r\n")
                && body.contains("a=rtcp-mux\r\n"),
            "{body}"
        );
    }

    #[test]
    fn nothing_in_common_no_audio_and_garbage() {
        let g729 = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 7000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        let a = parse(g729.as_bytes()).unwrap();
        assert_eq!(
            answer(&a, "127.0.0.1:1".parse().unwrap(), &KEY, 1).unwrap_err(),
            SdpError::NoCommonCodec
        );
        let video = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 7000 RTP/AVP 96\r\n";
        assert_eq!(parse(video.as_bytes()).unwrap_err(), SdpError::NoAudio);
        let no_c = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
        assert_eq!(parse(no_c.as_bytes()).unwrap_err(), SdpError::NoAddress);
        assert!(matches!(parse(b"hello"), Err(SdpError::Syntax(_))));
    }

    #[test]
    fn payload_types_beyond_seven_bits_are_refused() {
        // RTP has 7 bits for the payload type: 200 (or telephone-event at 128) cannot be sent.
        for (formats, map) in [
            ("200", "a=rtpmap:200 PCMU/8000\r\n"),
            ("0 128", "a=rtpmap:128 telephone-event/8000\r\n"),
            ("0 x", ""),
            ("0 300", ""),
        ] {
            let o = format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 7000 RTP/AVP {formats}\r\n{map}");
            let e = parse(o.as_bytes()).unwrap_err();
            assert!(matches!(e, SdpError::BadPayloadType(_)), "{formats}: {e:?}");
            assert!(e.to_string().contains("is not an RTP payload type"), "{e}");
        }
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_is_offered_and_answered_with_its_number() {
        let o = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 7000 RTP/AVP 96 0\r\na=rtpmap:96 opus/48000/2\r\n";
        let a = parse(o.as_bytes()).unwrap();
        assert_eq!(a.codecs, vec![(96, Codec::Opus), (0, Codec::Pcmu)]);
        let (body, neg) = answer(&a, "127.0.0.1:30000".parse().unwrap(), &KEY, 1).unwrap();
        assert_eq!(neg.codec, (96, Codec::Opus));
        assert!(body.contains("a=rtpmap:96 opus/48000/2\r\n"), "{body}");
        let ours = offer(
            "127.0.0.1:30000".parse().unwrap(),
            Codec::Opus,
            Direction::SendRecv,
            None,
            1,
        );
        assert!(
            ours.contains("m=audio 30000 RTP/AVP 111 0 8 101\r\n"),
            "{ours}"
        );
    }

    #[test]
    fn our_offer_lists_what_we_support() {
        let body = offer(
            "127.0.0.1:30004".parse().unwrap(),
            Codec::Pcmu,
            Direction::SendRecv,
            None,
            9,
        );
        let a = parse(body.as_bytes()).unwrap();
        assert_eq!(a.codecs[..2], [(0, Codec::Pcmu), (8, Codec::Pcma)]);
        assert_eq!(a.telephone_event, Some(101));
        let body = offer(
            "127.0.0.1:30004".parse().unwrap(),
            Codec::Pcma,
            Direction::SendOnly,
            None,
            9,
        );
        let a = parse(body.as_bytes()).unwrap();
        assert_eq!(a.codecs[..2], [(8, Codec::Pcma), (0, Codec::Pcmu)]);
        assert_eq!(a.direction, Direction::SendOnly);
    }

    #[test]
    fn an_sdes_offer_is_answered_with_our_key_under_its_tag_and_profile() {
        use base64::Engine as _;
        let theirs: Vec<u8> = (0..30).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&theirs);
        let o = |proto: &str, crypto: &str| {
            format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 7000 {proto} 0\r\n{crypto}")
        };
        // An unusable line first (another suite), then ours with a lifetime.
        let offer_text = o(
            "RTP/SAVP",
            &format!("a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{b64}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^20\r\n"),
        );
        let a = parse(offer_text.as_bytes()).unwrap();
        let sdes = a.srtp.clone().unwrap();
        assert_eq!((sdes.tag, sdes.key.to_vec()), (2, theirs.clone()));
        assert!(a.savp);
        assert!(!format!("{a:?}").contains(&b64), "keys stay out of logs");
        let (body, _) = answer(&a, "127.0.0.1:30000".parse().unwrap(), &KEY, 1).unwrap();
        let ours = base64::engine::general_purpose::STANDARD.encode(KEY);
        assert!(body.contains("m=audio 30000 RTP/SAVP 0\r\n"), "{body}");
        assert!(
            body.contains(&format!(
                "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{ours}\r\n"
            )),
            "{body}"
        );
        assert_eq!(parse(body.as_bytes()).unwrap().srtp.unwrap().key, KEY);
        // Best effort on RTP/AVP: answered with a key, on RTP/AVP.
        let a = parse(
            o(
                "RTP/AVP",
                &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64}\r\n"),
            )
            .as_bytes(),
        )
        .unwrap();
        let (body, _) = answer(&a, "127.0.0.1:30000".parse().unwrap(), &KEY, 1).unwrap();
        assert!(
            body.contains("RTP/AVP 0\r\n") && body.contains("a=crypto:1 "),
            "{body}"
        );
        // A plain offer gets a plain answer.
        let a = parse(o("RTP/AVP", "").as_bytes()).unwrap();
        let (body, _) = answer(&a, "127.0.0.1:30000".parse().unwrap(), &KEY, 1).unwrap();
        assert!(
            !body.contains("crypto") && body.contains("RTP/AVP"),
            "{body}"
        );
        // Our own SRTP offer reads back.
        let ours = offer(
            "127.0.0.1:30000".parse().unwrap(),
            Codec::Pcmu,
            Direction::SendRecv,
            Some(&KEY),
            1,
        );
        let back = parse(ours.as_bytes()).unwrap();
        assert!(back.savp && back.srtp.unwrap().key == KEY, "{ours}");
    }

    #[test]
    fn savp_without_a_crypto_line_we_can_use_is_refused() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 30]);
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 29]);
        for crypto in [
            String::new(),
            format!("a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{b64}\r\n"),
            format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{short}\r\n"),
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:not*base64\r\n".into(),
            format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^20|1:4\r\n"),
            format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64} UNENCRYPTED_SRTP\r\n"),
            format!("a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:{b64}\r\n"),
            format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {b64}\r\n"),
            "a=crypto:1\r\n".into(),
        ] {
            let text = format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 7000 RTP/SAVP 0\r\n{crypto}");
            assert_eq!(
                parse(text.as_bytes()),
                Err(SdpError::NoCommonCrypto),
                "{crypto}"
            );
        }
        assert!(SdpError::NoCommonCrypto
            .to_string()
            .contains("AES_CM_128_HMAC_SHA1_80"));
    }
}
