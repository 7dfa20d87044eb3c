//! The prompt catalogue: every prompt name the shipped flows and the "say" grammars can ask
//! for, per language. Prompt sets are validated against it, so an ITSP learns at upload time,
//! not on a live call, that a file is missing.

use crate::say::{self, Lang};

/// Service prompts every language needs (seed 003, Tables 3, 4 and 8, plus the PIN, in-use,
/// expired and insufficient-funds prompts the return codes call for).
pub const SERVICE: &[&str] = &[
    "welcome",
    "lang_select",
    "wrong_lang_sel",
    "no_lang_sel",
    "final",
    "generic_final",
    "enter_card_num",
    "invalid_digits",
    "auth_fail",
    "no_card_entered",
    "technical_problem",
    "zero_bal",
    "enter_dest",
    "disconnect",
    "disconnected",
    "dest_collect_fail",
    "invalid_amt",
    "dest_busy",
    "enter_acct",
    "no_acct_entered",
    "invalid_digits_acct",
    "invalid_account",
    "no_dialpeer_match",
    "connect_cust_ser",
    "dial_cust_ser",
    "no_service",
    "dest_unreachable",
    "toll_free",
    "enter_pin",
    "no_pin_entered",
    "account_in_use",
    "card_expired",
    "insufficient_funds",
    "you_have",
];

/// Prompts that play before a language is chosen, so every language directory must have them.
pub const BEFORE_LANGUAGE: &[&str] = &["welcome", "lang_select", "wrong_lang_sel", "no_lang_sel"];

/// Every prompt name `lang` needs, sorted.
pub fn names(lang: Lang) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = SERVICE.to_vec();
    v.extend(say::words(lang));
    v.sort_unstable();
    v.dedup();
    v
}

/// Every prompt name a language directory `code` needs; a language without a "say" grammar
/// still needs the service prompts.
pub fn for_code(code: &str) -> Vec<&'static str> {
    match Lang::from_code(code) {
        Some(l) => names(l),
        None => SERVICE.to_vec(),
    }
}

/// The texts the default prompt sets are spoken from (`prompts/sets/texts/<lang>.tsv`): name,
/// tab, text. The generator script reads the same files.
pub fn texts(lang: Lang) -> &'static str {
    match lang {
        Lang::En => include_str!("../sets/texts/en.tsv"),
        Lang::Es => include_str!("../sets/texts/es.tsv"),
        Lang::Zh => include_str!("../sets/texts/zh.tsv"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_texts_cover_the_catalogue_exactly() {
        for lang in [Lang::En, Lang::Es, Lang::Zh] {
            let mut named: Vec<&str> = texts(lang)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.split('\t').next().unwrap())
                .collect();
            named.sort_unstable();
            assert_eq!(named, names(lang), "{lang}");
            for l in texts(lang).lines() {
                assert!(
                    l.split('\t').nth(1).is_some_and(|t| !t.trim().is_empty()),
                    "{lang}: {l:?} has no text"
                );
            }
        }
    }
}
