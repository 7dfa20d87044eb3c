//! One leg's codec state: decoding what it receives to 8 kHz linear audio and encoding 8 kHz
//! linear audio for it. Transcoding between legs and prompt playback on an Opus leg go through
//! here; G.711 is stateless, Opus keeps an encoder and a decoder per leg.

use super::sdp::Codec;
use prompts::g711;

/// Samples in a 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// A leg's codec with whatever state it needs.
pub struct LegCodec {
    codec: Codec,
    #[cfg(feature = "opus")]
    opus: Option<(opus::Encoder, opus::Decoder)>,
}

impl std::fmt::Debug for LegCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LegCodec({:?})", self.codec)
    }
}

impl LegCodec {
    /// The codec state for a leg that negotiated `codec`.
    pub fn new(codec: Codec) -> LegCodec {
        LegCodec {
            codec,
            #[cfg(feature = "opus")]
            opus: match codec {
                // Opus runs at 8 kHz internally here: everything behind it is telephone audio.
                Codec::Opus => Some((
                    opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip)
                        .expect("8 kHz mono is a valid Opus encoder"),
                    opus::Decoder::new(8000, opus::Channels::Mono)
                        .expect("8 kHz mono is a valid Opus decoder"),
                )),
                _ => None,
            },
        }
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// A received payload as 8 kHz linear samples (empty when it cannot be decoded).
    pub fn decode(&mut self, payload: &[u8]) -> Vec<i16> {
        match self.codec {
            Codec::Pcmu => payload.iter().map(|b| g711::ulaw_to_linear(*b)).collect(),
            Codec::Pcma => payload.iter().map(|b| g711::alaw_to_linear(*b)).collect(),
            #[cfg(feature = "opus")]
            Codec::Opus => {
                let Some((_, dec)) = self.opus.as_mut() else {
                    return Vec::new();
                };
                let mut out = vec![0i16; FRAME_SAMPLES * 6];
                match dec.decode(payload, &mut out, false) {
                    Ok(n) => {
                        out.truncate(n);
                        out
                    }
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    /// 8 kHz linear samples (one 20 ms frame) as a payload for this leg.
    pub fn encode(&mut self, pcm: &[i16]) -> Vec<u8> {
        match self.codec {
            Codec::Pcmu => pcm.iter().map(|s| g711::linear_to_ulaw(*s)).collect(),
            Codec::Pcma => pcm.iter().map(|s| g711::linear_to_alaw(*s)).collect(),
            #[cfg(feature = "opus")]
            Codec::Opus => {
                let Some((enc, _)) = self.opus.as_mut() else {
                    return Vec::new();
                };
                let mut frame = [0i16; FRAME_SAMPLES];
                let n = pcm.len().min(FRAME_SAMPLES);
                frame[..n].copy_from_slice(&pcm[..n]);
                let mut out = vec![0u8; 400];
                match enc.encode(&frame, &mut out) {
                    Ok(n) => {
                        out.truncate(n);
                        out
                    }
                    Err(_) => Vec::new(),
                }
            }
        }
    }
}

impl LegCodec {
    /// A prompt frame as playback gives it (this leg's G.711 law, µ-law for other codecs) as
    /// this leg's payload.
    pub fn prompt_payload(&mut self, frame: &[u8]) -> Vec<u8> {
        match self.codec {
            Codec::Pcmu | Codec::Pcma => frame.to_vec(),
            #[cfg(feature = "opus")]
            Codec::Opus => {
                let pcm: Vec<i16> = frame.iter().map(|b| g711::ulaw_to_linear(*b)).collect();
                self.encode(&pcm)
            }
        }
    }
}

/// Carries a payload from one leg's codec to another's: untouched when they match, through
/// linear audio when they differ.
pub fn transcode(payload: &[u8], from: &mut LegCodec, to: &mut LegCodec) -> Vec<u8> {
    if from.codec == to.codec {
        return payload.to_vec();
    }
    let pcm = from.decode(payload);
    to.encode(&pcm)
}

/// Carries a payload between two legs' codecs where it lies, when that needs no state and no
/// change of size (the same codec, or µ-law and A-law); false when it needs [`transcode`].
/// The relay's common case costs no allocation this way.
pub fn transcode_in_place(payload: &mut [u8], from: Codec, to: Codec) -> bool {
    match (from, to) {
        (f, t) if f == t => true,
        (Codec::Pcmu, Codec::Pcma) => {
            for b in payload {
                *b = g711::linear_to_alaw(g711::ulaw_to_linear(*b));
            }
            true
        }
        (Codec::Pcma, Codec::Pcmu) => {
            for b in payload {
                *b = g711::linear_to_ulaw(g711::alaw_to_linear(*b));
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone() -> Vec<i16> {
        (0..FRAME_SAMPLES)
            .map(|i| ((i as f64 * 0.35).sin() * 8000.0) as i16)
            .collect()
    }

    #[test]
    fn g711_legs_transcode_through_linear() {
        let mut u = LegCodec::new(Codec::Pcmu);
        let mut a = LegCodec::new(Codec::Pcma);
        let ulaw = u.encode(&tone());
        let alaw = transcode(&ulaw, &mut u, &mut a);
        assert_eq!(alaw.len(), FRAME_SAMPLES);
        assert_eq!(
            transcode(&ulaw, &mut u, &mut LegCodec::new(Codec::Pcmu)),
            ulaw,
            "same codec: untouched"
        );
        let mut in_place = ulaw.clone();
        assert!(transcode_in_place(&mut in_place, Codec::Pcmu, Codec::Pcma));
        assert_eq!(in_place, alaw, "the same bytes as through linear audio");
        assert!(transcode_in_place(&mut in_place, Codec::Pcma, Codec::Pcmu));
        assert_eq!(in_place, transcode(&alaw, &mut a, &mut u));
        let back = a.decode(&alaw);
        for (x, y) in tone().iter().zip(&back) {
            assert!((*x as i32 - *y as i32).abs() < 600);
        }
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_round_trips_a_frame() {
        let mut o = LegCodec::new(Codec::Opus);
        let mut u = LegCodec::new(Codec::Pcmu);
        let ulaw = u.encode(&tone());
        let packet = transcode(&ulaw, &mut u, &mut o);
        assert!(
            !packet.is_empty() && packet.len() < 160,
            "compressed: {} bytes",
            packet.len()
        );
        let decoded = o.decode(&packet);
        assert_eq!(decoded.len(), FRAME_SAMPLES);
        assert_eq!(transcode(&packet, &mut o, &mut u).len(), FRAME_SAMPLES);
    }
}
