//! Reading and writing prompt audio: Sun `.au` (µ-law, A-law, 8- and 16-bit linear PCM) and WAV,
//! at any sample rate and channel count, always delivered as 8 kHz mono 16-bit samples, the
//! form every telephone codec starts from. Errors name the file and the reason, because
//! operators upload these files and need to know which one to fix.

use crate::g711;
use std::fmt;
use std::path::Path;

/// The telephone sample rate everything is converted to.
pub const RATE: u32 = 8000;

/// Audio at 8 kHz, mono, 16-bit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audio {
    /// The samples.
    pub samples: Vec<i16>,
}

impl Audio {
    /// Length in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / RATE as u64
    }
}

/// A file that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioError {
    /// The file's name as given.
    pub file: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.reason)
    }
}

impl std::error::Error for AudioError {}

fn err(file: &str, reason: impl Into<String>) -> AudioError {
    AudioError {
        file: file.to_string(),
        reason: reason.into(),
    }
}

const AU_MAGIC: &[u8; 4] = b".snd";
const AU_ULAW: u32 = 1;
const AU_LINEAR8: u32 = 2;
const AU_LINEAR16: u32 = 3;
const AU_ALAW: u32 = 27;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a Sun `.au` file.
pub fn read_au(bytes: &[u8], file: &str) -> Result<Audio, AudioError> {
    if bytes.len() < 24 || &bytes[..4] != AU_MAGIC {
        return Err(err(file, "not a Sun .au file (no .snd header)"));
    }
    let offset = be32(bytes, 4) as usize;
    let size = be32(bytes, 8);
    let encoding = be32(bytes, 12);
    let rate = be32(bytes, 16);
    let channels = be32(bytes, 20);
    if offset < 24 || offset > bytes.len() {
        return Err(err(
            file,
            format!("header size {offset} is outside the file"),
        ));
    }
    if rate == 0 || rate > 192_000 {
        return Err(err(file, format!("unsupported sample rate {rate} Hz")));
    }
    if channels == 0 || channels > 8 {
        return Err(err(file, format!("unsupported channel count {channels}")));
    }
    let data = &bytes[offset..];
    let data = match size {
        u32::MAX => data,
        n if (n as usize) <= data.len() => &data[..n as usize],
        n => {
            return Err(err(
                file,
                format!(
                    "header says {n} bytes of audio but the file holds {}",
                    data.len()
                ),
            ))
        }
    };
    let samples: Vec<i16> = match encoding {
        AU_ULAW => data.iter().map(|b| g711::ulaw_to_linear(*b)).collect(),
        AU_ALAW => data.iter().map(|b| g711::alaw_to_linear(*b)).collect(),
        AU_LINEAR8 => data.iter().map(|b| ((*b as i8) as i16) << 8).collect(),
        AU_LINEAR16 => data.chunks_exact(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect(),
        e => {
            return Err(err(
                file,
                format!("unsupported encoding {e} (µ-law 1, 8-bit linear 2, 16-bit linear 3 and A-law 27 are supported)"),
            ))
        }
    };
    Ok(Audio {
        samples: resample(&mono(&samples, channels as usize), rate),
    })
}

/// Reads a WAV file (integer PCM up to 32 bits, or float).
pub fn read_wav(bytes: &[u8], file: &str) -> Result<Audio, AudioError> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes))
        .map_err(|e| err(file, format!("not a readable WAV file: {e}")))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 || spec.sample_rate > 192_000 {
        return Err(err(
            file,
            format!(
                "unsupported WAV format: {} channels at {} Hz",
                spec.channels, spec.sample_rate
            ),
        ));
    }
    let samples: Result<Vec<i16>, hound::Error> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let shift = spec.bits_per_sample as i32 - 16;
            reader
                .into_samples::<i32>()
                .map(|s| {
                    s.map(|v| {
                        if shift >= 0 {
                            (v >> shift) as i16
                        } else {
                            (v << -shift) as i16
                        }
                    })
                })
                .collect()
        }
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16))
            .collect(),
    };
    let samples = samples.map_err(|e| err(file, format!("damaged WAV data: {e}")))?;
    Ok(Audio {
        samples: resample(&mono(&samples, spec.channels as usize), spec.sample_rate),
    })
}

/// Reads a `.au` or `.wav` file by its extension.
pub fn read_file(path: &Path) -> Result<Audio, AudioError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| err(&name, format!("cannot read: {e}")))?;
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("au") => read_au(&bytes, &name),
        Some("wav") => read_wav(&bytes, &name),
        _ => Err(err(&name, "not a .au or .wav file")),
    }
}

/// Writes 8 kHz µ-law `.au`, the stored form of prompts.
pub fn write_au(audio: &Audio) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + audio.samples.len());
    out.extend_from_slice(AU_MAGIC);
    for v in [24, audio.samples.len() as u32, AU_ULAW, RATE, 1] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend(audio.samples.iter().map(|s| g711::linear_to_ulaw(*s)));
    out
}

fn mono(samples: &[i16], channels: usize) -> Vec<i16> {
    if channels <= 1 {
        return samples.to_vec();
    }
    samples
        .chunks_exact(channels)
        .map(|frame| (frame.iter().map(|s| *s as i32).sum::<i32>() / channels as i32) as i16)
        .collect()
}

/// Converts to 8 kHz: averages over each output sample's span when reducing the rate (a box
/// filter that keeps most aliasing out of the telephone band), interpolates when raising it.
pub fn resample(samples: &[i16], from: u32) -> Vec<i16> {
    if from == RATE || samples.is_empty() {
        return samples.to_vec();
    }
    let out_len = (samples.len() as u64 * RATE as u64 / from as u64) as usize;
    let step = from as f64 / RATE as f64;
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * step;
            if step > 1.0 {
                let start = pos as usize;
                let end = ((pos + step) as usize).min(samples.len()).max(start + 1);
                let sum: i64 = samples[start..end].iter().map(|s| *s as i64).sum();
                (sum / (end - start) as i64) as i16
            } else {
                let a = pos as usize;
                let b = (a + 1).min(samples.len() - 1);
                let frac = pos - a as f64;
                (samples[a] as f64 * (1.0 - frac) + samples[b] as f64 * frac) as i16
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, ms: u32) -> Vec<i16> {
        (0..rate * ms / 1000)
            .map(|i| {
                ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / rate as f64).sin() * 8000.0)
                    as i16
            })
            .collect()
    }

    fn au(encoding: u32, rate: u32, channels: u32, data: &[u8]) -> Vec<u8> {
        let mut b = b".snd".to_vec();
        for v in [28u32, data.len() as u32, encoding, rate, channels] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(b"note");
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn au_round_trips_through_our_writer() {
        let a = Audio {
            samples: tone(8000, 100),
        };
        let back = read_au(&write_au(&a), "t.au").unwrap();
        assert_eq!(back.samples.len(), 800);
        for (x, y) in a.samples.iter().zip(&back.samples) {
            assert!((*x as i32 - *y as i32).abs() < 300);
        }
    }

    #[test]
    fn every_au_encoding_and_rate_reads() {
        let t = tone(16000, 100);
        let pcm16: Vec<u8> = t.iter().flat_map(|s| s.to_be_bytes()).collect();
        assert_eq!(
            read_au(&au(3, 16000, 1, &pcm16), "x")
                .unwrap()
                .samples
                .len(),
            800
        );
        let pcm8: Vec<u8> = t.iter().map(|s| ((s >> 8) as i8) as u8).collect();
        assert_eq!(
            read_au(&au(2, 16000, 1, &pcm8), "x").unwrap().samples.len(),
            800
        );
        let alaw: Vec<u8> = tone(8000, 50)
            .iter()
            .map(|s| g711::linear_to_alaw(*s))
            .collect();
        assert_eq!(
            read_au(&au(27, 8000, 1, &alaw), "x").unwrap().samples.len(),
            400
        );
        let stereo: Vec<u8> = tone(8000, 50)
            .iter()
            .flat_map(|s| [g711::linear_to_ulaw(*s); 2])
            .collect();
        assert_eq!(
            read_au(&au(1, 8000, 2, &stereo), "x")
                .unwrap()
                .samples
                .len(),
            400
        );
        let up = read_au(&au(1, 4000, 1, &[0xff; 400]), "x").unwrap();
        assert_eq!(up.samples.len(), 800);
    }

    #[test]
    fn bad_files_name_the_file_and_the_reason() {
        let e = read_au(b"RIFF....", "en_welcome.au").unwrap_err();
        assert_eq!(
            e.to_string(),
            "en_welcome.au: not a Sun .au file (no .snd header)"
        );
        assert!(read_au(&au(5, 8000, 1, &[0; 8]), "f.au")
            .unwrap_err()
            .reason
            .contains("unsupported encoding 5"));
        assert!(read_au(&au(1, 0, 1, &[0; 8]), "f.au")
            .unwrap_err()
            .reason
            .contains("sample rate"));
        let mut short = au(1, 8000, 1, &[0; 8]);
        short.truncate(30);
        assert!(read_au(&short, "f.au")
            .unwrap_err()
            .reason
            .contains("header says 8 bytes"));
        assert!(read_wav(b"not a wav", "g.wav")
            .unwrap_err()
            .to_string()
            .starts_with("g.wav: not a readable WAV file"));
    }

    #[test]
    fn wav_reads_at_any_rate() {
        let mut buf = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 22050,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for s in tone(22050, 200) {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let a = read_wav(buf.get_ref(), "t.wav").unwrap();
        assert_eq!(a.samples.len(), 1600);
        assert_eq!(a.duration_ms(), 200);
    }
}
