//! IVR flows: what a caller hears and enters, written by operators as YAML ([`flow`]: loading
//! and checking) and run per call without I/O ([`interp`]). The flows shipped in `flows/`
//! reproduce the reference debit-card scripts.

pub mod bridge;
pub mod flow;
pub mod interp;

pub use bridge::BridgeEnd;
pub use flow::{Flow, FlowError};
pub use interp::{Action, AuthResult, Context, Event, Session};

use std::collections::HashSet;
use std::path::Path;

/// Every prompt name of the catalogue in every language: what a flow may play when it is
/// checked against the default prompt sets.
pub fn catalogue_prompts() -> HashSet<String> {
    let mut all = HashSet::new();
    for lang in [
        prompts::say::Lang::En,
        prompts::say::Lang::Es,
        prompts::say::Lang::Zh,
    ] {
        all.extend(
            prompts::catalogue::names(lang)
                .into_iter()
                .map(str::to_string),
        );
    }
    all
}

/// Loads every `*.yaml` flow in a directory, checked against `prompts`; all errors together.
pub fn load_dir(dir: &Path, prompts: &HashSet<String>) -> Result<Vec<Flow>, Vec<FlowError>> {
    let mut flows = Vec::new();
    let mut errors = Vec::new();
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(e) => {
            return Err(vec![FlowError {
                file: dir.display().to_string(),
                errors: vec![format!("0: cannot read the directory: {e}")],
            }]);
        }
    };
    files.sort();
    for f in files {
        let name = f.display().to_string();
        match std::fs::read_to_string(&f) {
            Ok(text) => match Flow::parse(&text, &name, prompts) {
                Ok(flow) => flows.push(flow),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(FlowError {
                file: name,
                errors: vec![format!("0: cannot read: {e}")],
            }),
        }
    }
    if errors.is_empty() {
        Ok(flows)
    } else {
        Err(errors)
    }
}

/// The directory of shipped flows.
pub fn shipped_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../flows"))
}
