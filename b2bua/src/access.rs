//! Access numbers: what the number a caller dialled selects — the IVR flow, the ITSP whose
//! prompts play, the languages offered, and how far the caller's number is believed.
//!
//! They come from two places. Numbers in the configuration file are fixed: the operator
//! changes them there. The others are assigned by admins and configured by their ITSPs through
//! the admin API, and kept in the shared database so that every node serves the same numbers.
//! A node holds both as one [`AccessTable`] in its live snapshot (see `crate::assets`) and
//! reads the database again every few seconds; a number may not be in both places.

use rating::store::AccessRow;
use std::collections::HashMap;

/// An access number: what the number the caller dialled selects (seed 002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessNumber {
    /// The Request-URI user that selects it (for pinless ones, its prefix).
    pub number: String,
    /// The IVR flow it runs (not used by pinless numbers).
    pub flow: Option<String>,
    /// The ITSP it belongs to.
    pub tenant: String,
    /// Languages offered, first is the default.
    pub languages: Vec<String>,
    /// Whether the caller's number (From or P-Asserted-Identity) is believed.
    pub trust_ani: bool,
    /// Whether only trusted peers may call it.
    pub trusted_only: bool,
    /// The caller's number is the account; the digits after the access number are the
    /// destination.
    pub pinless: bool,
    /// Takes every tenant's cards (off: only its own tenant's).
    pub all_tenants: bool,
    /// A DID that rings a softphone subscriber: the SIP account (`user@domain`) whose
    /// registered contacts its calls ring (phone-to-PC).
    pub subscriber: Option<String>,
}

impl AccessNumber {
    /// The tenant whose cards this number takes; `None`: everyone's.
    pub fn card_tenant(&self) -> Option<String> {
        (!self.all_tenants).then(|| self.tenant.clone())
    }
}

impl From<&AccessRow> for AccessNumber {
    fn from(r: &AccessRow) -> AccessNumber {
        AccessNumber {
            number: r.number.clone(),
            flow: r.flow.clone(),
            tenant: r.tenant.clone(),
            languages: r.languages.clone(),
            trust_ani: r.trust_ani,
            trusted_only: r.trusted_only,
            pinless: r.pinless,
            all_tenants: r.all_tenants,
            subscriber: r.subscriber.clone(),
        }
    }
}

/// Where a number is configured, which says who may change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The node's configuration file: only the operator, by editing it.
    Config,
    /// The shared database, through the admin API.
    Managed,
}

impl Source {
    /// How the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Managed => "api",
        }
    }
}

/// Every access number a node answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessTable {
    /// In number order.
    numbers: Vec<(AccessNumber, Source)>,
    /// Database numbers left out because the configuration file has them too.
    shadowed: Vec<String>,
    /// Exact (not pinless) numbers and pinless prefixes, each to its index in `numbers`: a
    /// lookup costs one probe per digit of the dialled number, however many numbers there are.
    exact: HashMap<String, usize>,
    prefixes: HashMap<String, usize>,
}

impl AccessTable {
    /// The configuration file's numbers and the database's. A database number the
    /// configuration also lists is left out (the file wins) and kept in [`Self::shadowed`].
    pub fn new(fixed: &[AccessNumber], managed: &[AccessRow]) -> AccessTable {
        let mut numbers: Vec<(AccessNumber, Source)> =
            fixed.iter().map(|a| (a.clone(), Source::Config)).collect();
        let in_file: std::collections::HashSet<&str> =
            fixed.iter().map(|a| a.number.as_str()).collect();
        let mut shadowed = Vec::new();
        for r in managed {
            if in_file.contains(r.number.as_str()) {
                shadowed.push(r.number.clone());
                continue;
            }
            numbers.push((AccessNumber::from(r), Source::Managed));
        }
        numbers.sort_by(|a, b| a.0.number.cmp(&b.0.number));
        let (mut exact, mut prefixes) = (HashMap::new(), HashMap::new());
        for (i, (a, _)) in numbers.iter().enumerate() {
            let index = if a.pinless { &mut prefixes } else { &mut exact };
            index.insert(a.number.clone(), i);
        }
        AccessTable {
            numbers,
            shadowed,
            exact,
            prefixes,
        }
    }

    /// The access number a Request-URI user selects, and for pinless numbers the rest of the
    /// user (the destination). Exact numbers win over pinless prefixes; the longest prefix wins.
    pub fn lookup<'a>(&'a self, user: &'a str) -> Option<(&'a AccessNumber, &'a str)> {
        if let Some(&i) = self.exact.get(user) {
            return Some((&self.numbers[i].0, ""));
        }
        (1..=user.len())
            .rev()
            .filter(|&n| user.is_char_boundary(n))
            .find_map(|n| self.prefixes.get(&user[..n]))
            .map(|&i| {
                let a = &self.numbers[i].0;
                (a, &user[a.number.len()..])
            })
    }

    /// One number exactly as configured, and where.
    pub fn get(&self, number: &str) -> Option<(&AccessNumber, Source)> {
        let &i = self
            .exact
            .get(number)
            .or_else(|| self.prefixes.get(number))?;
        let (a, source) = &self.numbers[i];
        Some((a, *source))
    }

    /// Database numbers the configuration file overrides (an operator's mistake to report).
    pub fn shadowed(&self) -> &[String] {
        &self.shadowed
    }

    /// Every number in number order.
    pub fn iter(&self) -> impl Iterator<Item = (&AccessNumber, Source)> {
        self.numbers.iter().map(|(a, s)| (a, *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn fixed(number: &str, pinless: bool) -> AccessNumber {
        AccessNumber {
            number: number.into(),
            flow: (!pinless).then(|| "debitcard".into()),
            tenant: "default".into(),
            languages: vec!["en".into()],
            trust_ani: pinless,
            trusted_only: false,
            pinless,
            all_tenants: false,
            subscriber: None,
        }
    }

    fn managed(number: &str, tenant: &str, pinless: bool) -> AccessRow {
        AccessRow {
            number: number.into(),
            tenant: tenant.into(),
            flow: (!pinless).then(|| "debitcard".into()),
            languages: vec!["es".into(), "en".into()],
            trust_ani: pinless,
            trusted_only: false,
            pinless,
            all_tenants: false,
            subscriber: None,
            updated_at: Utc::now(),
            updated_by: "root".into(),
        }
    }

    #[test]
    fn exact_numbers_win_then_the_longest_pinless_prefix_from_either_source() {
        let t = AccessTable::new(
            &[fixed("5551201", true), fixed("5551200", false)],
            &[
                managed("555120155", "acme", true),
                managed("5551201555", "acme", false),
            ],
        );
        assert!(t.shadowed().is_empty());
        let (a, rest) = t.lookup("55512015555233").unwrap();
        assert_eq!((a.number.as_str(), rest), ("555120155", "55233"));
        assert_eq!(a.tenant, "acme");
        let (a, rest) = t.lookup("5551201555").unwrap();
        assert_eq!(
            (a.number.as_str(), rest, a.pinless),
            ("5551201555", "", false)
        );
        let (a, rest) = t.lookup("55512019").unwrap();
        assert_eq!((a.number.as_str(), rest), ("5551201", "9"));
        assert!(t.lookup("5551200").is_some_and(|(a, _)| !a.pinless));
        assert!(t.lookup("999").is_none());
        assert_eq!(t.get("555120155").unwrap().1, Source::Managed);
        assert_eq!(t.get("5551200").unwrap().1, Source::Config);
        let order: Vec<&str> = t.iter().map(|(a, _)| a.number.as_str()).collect();
        assert_eq!(order, ["5551200", "5551201", "555120155", "5551201555"]);
    }

    #[test]
    fn the_configuration_file_wins_over_a_database_number_and_says_so() {
        let t = AccessTable::new(
            &[fixed("5551200", false)],
            &[managed("5551200", "acme", false)],
        );
        assert_eq!(t.iter().count(), 1);
        let (a, source) = t.get("5551200").unwrap();
        assert_eq!((a.tenant.as_str(), source), ("default", Source::Config));
        assert_eq!(t.shadowed(), ["5551200"]);
    }
}
