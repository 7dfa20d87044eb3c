//! Logging: `tracing` to standard error, filtered by `RUST_LOG` (default `info`) at start and
//! changeable while the service runs (`PUT /api/v1/log-level`), so an operator can turn on
//! `debug` for one module during an incident without restarting and dropping calls.

use std::sync::{Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Installs the process's subscriber. Call once, first thing.
pub fn init() {
    let start = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let (filter, shown) = match EnvFilter::try_new(&start) {
        Ok(f) => (f, start),
        Err(_) => (EnvFilter::new("info"), "info".to_string()),
    };
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours for a terminal only, not for journald or a log file.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let _ = CONTROL.set(Control {
        handle,
        current: Mutex::new(shown),
    });
}

/// The filter in force (`RUST_LOG` syntax), if [`init`] installed one.
pub fn level() -> Option<String> {
    CONTROL
        .get()
        .map(|c| c.current.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

/// Why a level was not changed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error("`{0}` is not a log filter ({1}); examples: info, debug, info,b2bua::engine=debug")]
    Invalid(String, String),
    #[error("this process's logging cannot be changed at run time")]
    Unavailable,
}

/// Checks a filter in `RUST_LOG` syntax (`info`, `warn,b2bua::engine=debug` …).
pub fn parse(text: &str) -> Result<EnvFilter, LevelError> {
    let t = text.trim();
    if t.is_empty() || t.len() > 512 || t.chars().any(char::is_control) {
        return Err(LevelError::Invalid(
            t.into(),
            "empty, too long or not text".into(),
        ));
    }
    // A bare word is a target in RUST_LOG syntax, so a misspelt level ("degub") would quietly
    // mean "everything from target degub": only level names stand alone here.
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    if let Some(d) = t
        .split(',')
        .map(str::trim)
        .find(|d| !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str()))
    {
        return Err(LevelError::Invalid(
            t.into(),
            format!("`{d}` is not a level; give a target a level as `{d}=debug`"),
        ));
    }
    EnvFilter::builder()
        .with_regex(false)
        .parse(t)
        .map_err(|e| LevelError::Invalid(t.into(), e.to_string()))
}

/// Replaces the filter; log lines from now on follow it.
pub fn set_level(text: &str) -> Result<String, LevelError> {
    let filter = parse(text)?;
    let c = CONTROL.get().ok_or(LevelError::Unavailable)?;
    // Kept as written: the parsed filter prints its directives in its own order.
    let shown = text.trim().to_string();
    c.handle
        .reload(filter)
        .map_err(|_| LevelError::Unavailable)?;
    *c.current.lock().unwrap_or_else(|e| e.into_inner()) = shown.clone();
    tracing::warn!(filter = %shown, "log level changed");
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        for ok in ["info", "debug", "warn,b2bua::engine=debug", "b2bua=trace"] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "loud", "info,b2bua=shouting", "a\nb", "[{"] {
            assert!(
                matches!(parse(bad), Err(LevelError::Invalid(..))),
                "{bad:?}"
            );
        }
    }
}
