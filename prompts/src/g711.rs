//! G.711 µ-law and A-law (ITU-T G.711): the two codecs every caller and gateway speaks, used for
//! the stored prompt form, for playback and for in-band DTMF detection.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Linear 16-bit sample to µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80u8
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // The segment is the highest set bit among bits 7..14.
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = ((s >> (exponent + 3)) & 0x0f) as u8;
    !(sign | ((exponent as u8) << 4) | mantissa)
}

/// µ-law to linear 16-bit.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear 16-bit sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13 bits.
    let mut v = (sample as i32) >> 3;
    let mask = if v >= 0 {
        0xD5u8
    } else {
        v = -v - 1;
        0x55
    };
    const SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let Some(seg) = SEGMENT_END.iter().position(|end| v <= *end) else {
        return 0x7F ^ mask;
    };
    let mantissa = if seg < 2 {
        (v >> 1) & 0x0f
    } else {
        (v >> seg) & 0x0f
    };
    (((seg as i32) << 4) | mantissa) as u8 ^ mask
}

/// A-law to linear 16-bit.
pub fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let sign = a & 0x80;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        1 => (mantissa << 4) + 0x108,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    if sign != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_round_trips_every_code() {
        for b in 0..=255u8 {
            let lin = ulaw_to_linear(b);
            let back = linear_to_ulaw(lin);
            // 0x7f and 0xff both mean zero.
            assert!(
                back == b || (lin == 0 && (back == 0xff || back == 0x7f)),
                "{b:#x} -> {lin} -> {back:#x}"
            );
        }
    }

    #[test]
    fn alaw_round_trips_every_code() {
        for b in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b, "{b:#x}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(alaw_to_linear(0xd5), 8);
        // Quantization error stays within the segment's step.
        for s in [-30000i16, -1000, -10, 10, 1000, 30000] {
            assert!((ulaw_to_linear(linear_to_ulaw(s)) as i32 - s as i32).abs() <= 1024);
            assert!((alaw_to_linear(linear_to_alaw(s)) as i32 - s as i32).abs() <= 1024);
        }
    }
}
