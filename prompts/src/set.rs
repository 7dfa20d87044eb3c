//! Prompt sets: one directory per language (`en/`, `es/`, `zh/` …) of files named
//! `<lang>_<name>.au` (or `.wav`), loaded once into memory in the form playback sends (µ-law
//! and A-law bytes, 160 per 20 ms) and checked against the catalogue. A set is immutable once
//! loaded; swapping sets means loading a new one, so calls keep the set they started with.

use crate::audio::{self, Audio, AudioError};
use crate::catalogue;
use crate::g711;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// One prompt, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Its catalogue name (`welcome`, `thirty` …).
    pub name: String,
    /// µ-law bytes (PCMU payload), 8 kHz.
    pub ulaw: Vec<u8>,
    /// A-law bytes (PCMA payload), 8 kHz.
    pub alaw: Vec<u8>,
}

impl Prompt {
    /// Encodes audio for both G.711 laws.
    pub fn from_audio(name: &str, audio: &Audio) -> Prompt {
        Prompt {
            name: name.to_string(),
            ulaw: audio
                .samples
                .iter()
                .map(|s| g711::linear_to_ulaw(*s))
                .collect(),
            alaw: audio
                .samples
                .iter()
                .map(|s| g711::linear_to_alaw(*s))
                .collect(),
        }
    }

    /// Length in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.ulaw.len() as u64 * 1000 / audio::RATE as u64
    }
}

/// What loading a set found wrong or odd. A set with problems still loads: a missing prompt
/// is skipped at run time (and logged), it never ends a call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Catalogue names with no file, as `(language, name)`.
    pub missing: Vec<(String, String)>,
    /// Files whose name is not in the catalogue (loaded anyway, for custom flows).
    pub unknown: Vec<String>,
    /// Files that could not be read, or are named wrongly.
    pub errors: Vec<String>,
}

impl Report {
    /// True when nothing is missing and nothing failed.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.errors.is_empty()
    }
}

/// A prompt set: languages → prompt names → prompts.
#[derive(Debug, Default, Clone)]
pub struct PromptSet {
    languages: BTreeMap<String, HashMap<String, Arc<Prompt>>>,
}

impl PromptSet {
    /// Loads every language directory under `dir`.
    pub fn load(dir: &Path) -> Result<(PromptSet, Report), AudioError> {
        let io = |e: std::io::Error| AudioError {
            file: dir.display().to_string(),
            reason: format!("cannot read the prompt directory: {e}"),
        };
        let mut set = PromptSet::default();
        let mut report = Report::default();
        let mut langs: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .collect();
        langs.sort_by_key(|e| e.file_name());
        for entry in langs {
            let lang = entry.file_name().to_string_lossy().into_owned();
            let mut prompts = HashMap::new();
            let mut files: Vec<_> = std::fs::read_dir(entry.path())
                .map_err(io)?
                .filter_map(Result::ok)
                .collect();
            files.sort_by_key(|e| e.file_name());
            for f in files {
                let path = f.path();
                let file = path.display().to_string();
                let fname = f.file_name().to_string_lossy().into_owned();
                let stem = fname.rsplit_once('.').map(|(s, _)| s).unwrap_or(&fname);
                let Some(name) = stem.strip_prefix(&format!("{lang}_")) else {
                    report.errors.push(format!(
                        "{file}: the name must be {lang}_<prompt>.au or .wav"
                    ));
                    continue;
                };
                match audio::read_file(&path) {
                    Ok(a) => {
                        prompts.insert(name.to_string(), Arc::new(Prompt::from_audio(name, &a)));
                    }
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
            let expected = catalogue::for_code(&lang);
            for name in &expected {
                if !prompts.contains_key(*name) {
                    report.missing.push((lang.clone(), name.to_string()));
                }
            }
            let mut unknown: Vec<String> = prompts
                .keys()
                .filter(|n| !expected.contains(&n.as_str()))
                .map(|n| format!("{lang}/{lang}_{n}"))
                .collect();
            unknown.sort();
            report.unknown.extend(unknown);
            set.languages.insert(lang, prompts);
        }
        Ok((set, report))
    }

    /// Adds (or replaces) one prompt.
    pub fn insert(&mut self, lang: &str, prompt: Prompt) {
        self.languages
            .entry(lang.to_string())
            .or_default()
            .insert(prompt.name.clone(), Arc::new(prompt));
    }

    /// Whether the set has a prompt, without the missing-prompt log line of [`PromptSet::get`].
    pub fn has(&self, lang: &str, name: &str) -> bool {
        self.languages
            .get(lang)
            .is_some_and(|l| l.contains_key(name))
    }

    /// This set with `default` standing in for every prompt (and language) it lacks: what a
    /// tenant's callers hear, so one missing file never silences a call.
    pub fn over(&self, default: &PromptSet) -> PromptSet {
        let mut merged = default.clone();
        for (lang, prompts) in &self.languages {
            let l = merged.languages.entry(lang.clone()).or_default();
            for (name, p) in prompts {
                l.insert(name.clone(), p.clone());
            }
        }
        merged
    }

    /// The languages in the set.
    pub fn languages(&self) -> Vec<&str> {
        self.languages.keys().map(String::as_str).collect()
    }

    /// A prompt, or `None` (logged) when the set lacks it: the caller skips it and goes on.
    pub fn get(&self, lang: &str, name: &str) -> Option<Arc<Prompt>> {
        let p = self.languages.get(lang).and_then(|l| l.get(name)).cloned();
        if p.is_none() {
            tracing::warn!(lang, name, "prompt missing; skipped");
        }
        p
    }

    /// The prompts for a list of names, skipping (and logging) missing ones.
    pub fn sequence(&self, lang: &str, names: &[&str]) -> Vec<Arc<Prompt>> {
        names.iter().filter_map(|n| self.get(lang, n)).collect()
    }
}

/// The default sets shipped in the repository (`prompts/sets/default`).
pub fn default_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sets/default"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::say::{say_duration, say_money, Lang};

    #[test]
    fn the_default_sets_are_complete() {
        let (set, report) = PromptSet::load(default_dir()).unwrap();
        assert_eq!(set.languages(), vec!["en", "es", "zh"]);
        assert!(report.is_complete(), "{report:?}");
        assert!(report.unknown.is_empty(), "{report:?}");
        for lang in [Lang::En, Lang::Es, Lang::Zh] {
            let names = say_money(lang, 32, 91);
            let seq = set.sequence(lang.code(), &names);
            assert_eq!(seq.len(), names.len());
            assert!(seq
                .iter()
                .all(|p| p.duration_ms() > 100 && p.ulaw.len() == p.alaw.len()));
            assert_eq!(
                set.sequence(lang.code(), &say_duration(lang, 20900)).len(),
                say_duration(lang, 20900).len()
            );
        }
    }

    #[test]
    fn problems_are_reported_and_the_rest_loads() {
        let dir = tempfile::tempdir().unwrap();
        let en = dir.path().join("en");
        std::fs::create_dir(&en).unwrap();
        let tone = Audio {
            samples: vec![1000; 1600],
        };
        std::fs::write(en.join("en_welcome.au"), audio::write_au(&tone)).unwrap();
        std::fs::write(en.join("en_my_promo.au"), audio::write_au(&tone)).unwrap();
        std::fs::write(en.join("en_zero_bal.au"), b"garbage").unwrap();
        std::fs::write(en.join("welcome.au"), audio::write_au(&tone)).unwrap();
        let (set, report) = PromptSet::load(dir.path()).unwrap();
        assert!(set.get("en", "welcome").is_some());
        assert!(
            set.get("en", "enter_dest").is_none(),
            "missing: skipped, not fatal"
        );
        assert_eq!(report.unknown, vec!["en/en_my_promo"]);
        assert!(report.missing.contains(&("en".into(), "enter_dest".into())));
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.ends_with("en_zero_bal.au: not a Sun .au file (no .snd header)")),
            "{report:?}"
        );
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.contains("welcome.au: the name must be en_<prompt>")),
            "{report:?}"
        );
        assert!(PromptSet::load(&dir.path().join("nope"))
            .unwrap_err()
            .to_string()
            .contains("cannot read the prompt directory"));
    }
}
