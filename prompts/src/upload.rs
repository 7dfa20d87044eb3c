//! Prompt-set uploads. A retail ITSP sends its recordings as one zip or tar of `.au`/`.wav`
//! files named `<lang>_<prompt>.<ext>` (folders inside the archive do not matter). Every file
//! is read and converted to the stored form (8 kHz µ-law `.au`); one unreadable file refuses
//! the whole upload, so a half-working set never goes live. What the set lacks is not an
//! error: the default set stands in per prompt, and the report says which ones, so the ITSP
//! knows what its callers will hear in someone else's voice.
//!
//! No I/O here beyond the bytes given: storing and swapping the set is the caller's job.

use crate::audio::{self, Audio};
use crate::catalogue;
use crate::set::{Prompt, PromptSet};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// At most this many entries in one archive.
pub const MAX_ENTRIES: usize = 4096;
/// At most this many bytes in one unpacked file (a 44.1 kHz stereo WAV of about three minutes).
pub const MAX_FILE: u64 = 32 << 20;
/// At most this many unpacked bytes in all.
pub const MAX_TOTAL: u64 = 512 << 20;

/// An archive that could not be unpacked at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("the upload is neither a zip nor a tar archive")]
    NotAnArchive,
    #[error("the archive is damaged: {0}")]
    Corrupt(String),
    #[error("the archive is too large: {0}")]
    TooLarge(String),
    #[error("the archive holds no .au or .wav files")]
    Empty,
}

/// What checking an upload found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UploadReport {
    /// Prompt files accepted.
    pub files: usize,
    /// Languages the upload has files for.
    pub languages: Vec<String>,
    /// WAV files converted to the stored form.
    pub converted: Vec<String>,
    /// Files that refuse the upload, each with its reason.
    pub errors: Vec<String>,
    /// Entries skipped as not prompts at all (folders, `__MACOSX/`, hidden files).
    pub ignored: Vec<String>,
    /// Files whose prompt name is not in the catalogue (kept, for custom flows).
    pub unknown: Vec<String>,
    /// Catalogue prompts of the uploaded languages that the default set plays instead,
    /// as `(language, prompt)`.
    pub fallback: Vec<(String, String)>,
    /// Catalogue prompts neither the upload nor the default set has (skipped on calls).
    pub missing: Vec<(String, String)>,
}

/// A checked upload: the tenant's own prompts, in stored form, and the report.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `(language, prompt, stored .au bytes)`, sorted.
    pub files: Vec<(String, String, Vec<u8>)>,
    /// The tenant's own prompts (without the default's).
    pub set: PromptSet,
    /// What was found.
    pub report: UploadReport,
}

/// Unpacks a zip or tar (told apart by their magic numbers) into `(path, bytes)` entries,
/// skipping folders. Sizes are checked while reading, not trusted from headers.
pub fn unpack(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let entries = if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        unzip(bytes)?
    } else if bytes.len() >= 262 && &bytes[257..262] == b"ustar" {
        untar(bytes)?
    } else {
        return Err(ArchiveError::NotAnArchive);
    };
    Ok(entries)
}

fn read_limited(r: &mut dyn Read, path: &str, total: &mut u64) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::new();
    r.take(MAX_FILE + 1)
        .read_to_end(&mut out)
        .map_err(|e| ArchiveError::Corrupt(format!("{path}: {e}")))?;
    if out.len() as u64 > MAX_FILE {
        return Err(ArchiveError::TooLarge(format!(
            "{path} unpacks to more than {} MiB",
            MAX_FILE >> 20
        )));
    }
    *total += out.len() as u64;
    if *total > MAX_TOTAL {
        return Err(ArchiveError::TooLarge(format!(
            "more than {} MiB unpacked",
            MAX_TOTAL >> 20
        )));
    }
    Ok(out)
}

fn too_many() -> ArchiveError {
    ArchiveError::TooLarge(format!("more than {MAX_ENTRIES} entries"))
}

fn unzip(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let corrupt = |e: zip::result::ZipError| ArchiveError::Corrupt(e.to_string());
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(corrupt)?;
    if zip.len() > MAX_ENTRIES {
        return Err(too_many());
    }
    let mut total = 0;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(corrupt)?;
        if f.is_dir() {
            continue;
        }
        let path = f.name().map_err(corrupt)?.into_owned();
        let data = read_limited(&mut f, &path, &mut total)?;
        out.push((path, data));
    }
    Ok(out)
}

fn untar(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt(e.to_string());
    let mut tar = tar::Archive::new(bytes);
    let mut total = 0;
    let mut out = Vec::new();
    for entry in tar.entries().map_err(corrupt)? {
        let mut e = entry.map_err(corrupt)?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        if out.len() >= MAX_ENTRIES {
            return Err(too_many());
        }
        let path = e.path().map_err(corrupt)?.to_string_lossy().into_owned();
        let data = read_limited(&mut e, &path, &mut total)?;
        out.push((path, data));
    }
    Ok(out)
}

/// A language code as directories and calls use it: `en`, `es`, `pt-br`.
fn is_lang(s: &str) -> bool {
    let (base, region) = s.split_once('-').unwrap_or((s, ""));
    (2..=3).contains(&base.len())
        && base.bytes().all(|b| b.is_ascii_lowercase())
        && region.len() <= 8
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && region.is_empty() != s.contains('-')
}

fn is_prompt_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Reads, converts and checks every entry, against `default` for the fallbacks.
pub fn check(entries: Vec<(String, Vec<u8>)>, default: &PromptSet) -> Checked {
    let mut report = UploadReport::default();
    let mut set = PromptSet::default();
    let mut stored: BTreeMap<(String, String), (String, Vec<u8>)> = BTreeMap::new();
    for (path, data) in entries {
        let base = path.rsplit('/').next().unwrap_or(&path);
        if path.starts_with("__MACOSX/") || base.starts_with('.') || base.is_empty() {
            report.ignored.push(path);
            continue;
        }
        let Some((stem, ext)) = base.rsplit_once('.') else {
            report
                .errors
                .push(format!("{path}: not a .au or .wav file"));
            continue;
        };
        let ext = ext.to_ascii_lowercase();
        let read = match ext.as_str() {
            "au" => audio::read_au(&data, &path),
            "wav" => audio::read_wav(&data, &path),
            _ => {
                report
                    .errors
                    .push(format!("{path}: not a .au or .wav file"));
                continue;
            }
        };
        let Some((lang, name)) = stem
            .split_once('_')
            .filter(|(l, n)| is_lang(l) && is_prompt_name(n))
        else {
            report.errors.push(format!(
                "{path}: the name must be <lang>_<prompt>.{ext}, in lower case (en_welcome.{ext})"
            ));
            continue;
        };
        let audio: Audio = match read {
            Ok(a) if a.samples.is_empty() => {
                report.errors.push(format!("{path}: holds no audio"));
                continue;
            }
            Ok(a) => a,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        let key = (lang.to_string(), name.to_string());
        if let Some((first, _)) = stored.get(&key) {
            report
                .errors
                .push(format!("{path}: the same prompt as {first}"));
            continue;
        }
        if ext == "wav" {
            report.converted.push(path.clone());
        }
        set.insert(lang, Prompt::from_audio(name, &audio));
        stored.insert(key, (path, audio::write_au(&audio)));
    }
    let langs: BTreeSet<String> = stored.keys().map(|(l, _)| l.clone()).collect();
    for lang in &langs {
        let expected = catalogue::for_code(lang);
        for name in &expected {
            if !set.has(lang, name) {
                let entry = (lang.clone(), name.to_string());
                if default.has(lang, name) {
                    report.fallback.push(entry);
                } else {
                    report.missing.push(entry);
                }
            }
        }
        report.unknown.extend(
            stored
                .keys()
                .filter(|(l, n)| l == lang && !expected.contains(&n.as_str()))
                .map(|(l, n)| format!("{l}_{n}")),
        );
    }
    if stored.is_empty() && report.errors.is_empty() {
        report.errors.push(ArchiveError::Empty.to_string());
    }
    report.files = stored.len();
    report.languages = langs.into_iter().collect();
    Checked {
        files: stored
            .into_iter()
            .map(|((l, n), (_, au))| (l, n, au))
            .collect(),
        set,
        report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set::default_dir;
    use std::io::Write;

    fn tone(ms: usize) -> Audio {
        Audio {
            samples: (0..ms * 8).map(|i| ((i % 16) as i16 - 8) * 500).collect(),
        }
    }

    fn wav(a: &Audio, rate: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
        for s in &a.samples {
            w.write_sample(*s).unwrap();
        }
        w.finalize().unwrap();
        out.into_inner()
    }

    fn zip_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in files {
            z.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        t.into_inner().unwrap()
    }

    fn default_set() -> PromptSet {
        PromptSet::load(default_dir()).unwrap().0
    }

    #[test]
    fn a_zip_of_wav_and_au_is_converted_and_falls_back_per_prompt() {
        let files = [
            ("acme/en/en_welcome.wav", wav(&tone(500), 16000)),
            ("acme/en/en_enter_pin.au", audio::write_au(&tone(300))),
            ("acme/en/en_promo.au", audio::write_au(&tone(100))),
            ("__MACOSX/acme/en/._en_welcome.wav", b"junk".to_vec()),
        ];
        let entries = unpack(&zip_of(&files)).unwrap();
        let c = check(entries, &default_set());
        let r = &c.report;
        assert!(r.errors.is_empty(), "{r:?}");
        assert_eq!(r.files, 3);
        assert_eq!(r.languages, vec!["en"]);
        assert_eq!(r.converted, vec!["acme/en/en_welcome.wav"]);
        assert_eq!(r.unknown, vec!["en_promo"]);
        assert_eq!(r.ignored.len(), 1);
        assert!(r.fallback.contains(&("en".into(), "enter_card_num".into())));
        assert!(!r
            .fallback
            .iter()
            .any(|(_, n)| n == "welcome" || n == "enter_pin"));
        assert!(r.missing.is_empty(), "the default set is complete");
        // Stored form: µ-law .au at 8 kHz: 4000 samples at 16 kHz become 2000.
        let (_, _, au) = c.files.iter().find(|(_, n, _)| n == "welcome").unwrap();
        assert_eq!(audio::read_au(au, "x").unwrap().samples.len(), 2000);
        // What callers hear: the tenant's own welcome, the default's everything else.
        let merged = c.set.over(&default_set());
        assert_eq!(merged.get("en", "welcome").unwrap().ulaw.len(), 2000);
        assert_eq!(
            merged.get("en", "enter_card_num"),
            default_set().get("en", "enter_card_num")
        );
        assert!(
            merged.has("es", "welcome"),
            "other languages stay the default's"
        );
    }

    #[test]
    fn a_tar_works_too() {
        let files = [("es_welcome.au", audio::write_au(&tone(200)))];
        let c = check(unpack(&tar_of(&files)).unwrap(), &default_set());
        assert!(c.report.errors.is_empty(), "{:?}", c.report);
        assert_eq!(c.report.languages, vec!["es"]);
        assert!(c.set.has("es", "welcome"));
    }

    #[test]
    fn bad_files_are_each_named_and_refuse_the_upload() {
        let files = [
            ("en/en_welcome.au", b"not audio at all".to_vec()),
            ("en/welcome.au", audio::write_au(&tone(100))),
            ("en/EN_Final.au", audio::write_au(&tone(100))),
            ("en/en_final.mp3", vec![0; 10]),
            ("en/en_zero_bal.au", audio::write_au(&tone(100))),
            ("en/en_zero_bal.wav", wav(&tone(100), 8000)),
            ("en/en_silence.au", audio::write_au(&Audio::default())),
        ];
        let r = check(unpack(&zip_of(&files)).unwrap(), &default_set()).report;
        let has = |s: &str| r.errors.iter().any(|e| e.contains(s));
        assert!(has("en/en_welcome.au: not a Sun .au file"), "{r:?}");
        assert!(has("en/welcome.au: the name must be <lang>_<prompt>.au"));
        assert!(has("en/EN_Final.au: the name must be"));
        assert!(has("en/en_final.mp3: not a .au or .wav file"));
        assert!(has(
            "en/en_zero_bal.wav: the same prompt as en/en_zero_bal.au"
        ));
        assert!(has("en/en_silence.au: holds no audio"));
        assert_eq!(r.errors.len(), 6, "{r:?}");
    }

    #[test]
    fn what_is_not_an_archive_says_so() {
        assert_eq!(unpack(b"hello"), Err(ArchiveError::NotAnArchive));
        let mut z = zip_of(&[("en_welcome.au", audio::write_au(&tone(100)))]);
        z.truncate(z.len() - 30);
        assert!(matches!(unpack(&z), Err(ArchiveError::Corrupt(_))));
        let empty = zip_of(&[("readme/", vec![])]);
        let r = check(unpack(&empty).unwrap(), &default_set()).report;
        assert_eq!(r.errors, vec!["the archive holds no .au or .wav files"]);
    }

    #[test]
    fn language_codes() {
        for ok in ["en", "es", "zh", "pt-br", "yue"] {
            assert!(is_lang(ok), "{ok}");
        }
        for bad in ["", "e", "EN", "english", "en-", "-br", "en_us", "../x"] {
            assert!(!is_lang(bad), "{bad}");
        }
    }
}
