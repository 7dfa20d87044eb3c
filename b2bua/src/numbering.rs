//! How a softphone subscriber's dialled number becomes the number we rate and route. A card
//! caller types what the IVR asks for; a subscriber types what it would type on a phone at
//! home — `+44 20…`, `0044 20…`, `020…` in London, `(408) 555-1234` in California — and
//! all of those must reach the rate deck as the same international digits (`4420…`). Each
//! tenant (an ITSP in one country) has its own plan; the default plan changes nothing but
//! `+` and `00`, so numbers that are already what the deck holds pass as dialled.

use std::collections::BTreeMap;

/// One country's way of dialling, as a tenant's subscribers dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The tenant's country code (`44`); without it there is no "national" number.
    pub country_code: Option<String>,
    /// What precedes a national number (`0` in the UK, `1` in North America).
    pub national_prefix: Option<String>,
    /// What precedes an international one instead of `+` (`00`, `011`).
    pub international_prefix: String,
    /// The length of a national number dialled without its prefix (10 in North America),
    /// so `4085551234` reads as `14085551234`.
    pub national_length: Option<usize>,
    /// Premium-rate number prefixes, in international digits (`1900`), which a subscriber's
    /// account may bar.
    pub premium: Vec<String>,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            country_code: None,
            national_prefix: None,
            international_prefix: "00".into(),
            national_length: None,
            premium: vec!["1900".into(), "1976".into()],
        }
    }
}

/// A number read by a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialled {
    /// The digits we rate and route: international where the plan could tell.
    pub number: String,
    /// Whether it leaves the tenant's country (any `+`/`00` number, for a plan without a
    /// country code).
    pub international: bool,
    /// Whether it is a premium-rate number.
    pub premium: bool,
}

/// The longest number we take (E.164 allows 15 digits; short codes and carrier prefixes add
/// a few).
const MAX_DIGITS: usize = 32;

impl Plan {
    /// Reads what a subscriber dialled (a Request-URI's user part), or `None` when it is no
    /// phone number. Visual separators (RFC 3966: `-`, `.`, `(`, `)`) are dropped.
    pub fn read(&self, dialled: &str) -> Option<Dialled> {
        let cleaned: String = dialled
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
            .collect();
        let (digits, international) = match cleaned.strip_prefix('+') {
            Some(rest) => (rest, true),
            None => match cleaned.strip_prefix(self.international_prefix.as_str()) {
                Some(rest) if !self.international_prefix.is_empty() => (rest, true),
                _ => (cleaned.as_str(), false),
            },
        };
        let digits = digits.to_string();
        if digits.is_empty()
            || digits.len() > MAX_DIGITS
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let (number, international) = match (&self.country_code, international) {
            (Some(cc), true) => {
                let abroad = !digits.starts_with(cc.as_str());
                (digits, abroad)
            }
            (None, true) => (digits, true),
            (Some(cc), false) => (self.national(cc, digits), false),
            (None, false) => (digits, false),
        };
        let premium = self.premium.iter().any(|p| number.starts_with(p.as_str()));
        Some(Dialled {
            number,
            international,
            premium,
        })
    }

    /// A number dialled without `+`: national (its prefix, or its length, says so) becomes
    /// international digits; anything else (a local or short number) stays as dialled.
    fn national(&self, cc: &str, digits: String) -> String {
        if let Some(rest) = self
            .national_prefix
            .as_deref()
            .filter(|p| !p.is_empty())
            .and_then(|p| digits.strip_prefix(p))
            .filter(|rest| !rest.is_empty())
        {
            return format!("{cc}{rest}");
        }
        if self.national_length == Some(digits.len()) {
            return format!("{cc}{digits}");
        }
        digits
    }
}

/// Every tenant's plan, and the plan of tenants without one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Numbering {
    pub default: Plan,
    pub tenants: BTreeMap<String, Plan>,
}

impl Numbering {
    /// The plan a tenant's subscribers dial by.
    pub fn plan(&self, tenant: &str) -> &Plan {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uk() -> Plan {
        Plan {
            country_code: Some("44".into()),
            national_prefix: Some("0".into()),
            international_prefix: "00".into(),
            national_length: None,
            premium: vec!["449".into()],
        }
    }

    fn nanp() -> Plan {
        Plan {
            country_code: Some("1".into()),
            national_prefix: Some("1".into()),
            international_prefix: "011".into(),
            national_length: Some(10),
            premium: vec!["1900".into(), "1976".into()],
        }
    }

    fn read(plan: &Plan, s: &str) -> Option<(String, bool, bool)> {
        plan.read(s).map(|d| (d.number, d.international, d.premium))
    }

    #[test]
    fn the_default_plan_only_reads_plus_and_00() {
        let p = Plan::default();
        assert_eq!(read(&p, "5555233"), Some(("5555233".into(), false, false)));
        assert_eq!(
            read(&p, "+445555233"),
            Some(("445555233".into(), true, false))
        );
        assert_eq!(
            read(&p, "00445555233"),
            Some(("445555233".into(), true, false))
        );
        assert_eq!(
            read(&p, "+19005551234"),
            Some(("19005551234".into(), true, true))
        );
    }

    #[test]
    fn a_london_subscriber_dials_home_and_abroad_the_way_it_would_at_home() {
        let p = uk();
        let london = Some(("442079460000".into(), false, false));
        assert_eq!(read(&p, "02079460000"), london);
        assert_eq!(read(&p, "+442079460000"), london);
        assert_eq!(read(&p, "00442079460000"), london);
        assert_eq!(read(&p, "020-7946-0000"), london);
        assert_eq!(
            read(&p, "0014085551234"),
            Some(("14085551234".into(), true, false))
        );
        assert_eq!(
            read(&p, "09098790000"),
            Some(("449098790000".into(), false, true))
        );
        // A short or local number passes as dialled.
        assert_eq!(read(&p, "999"), Some(("999".into(), false, false)));
    }

    #[test]
    fn a_north_american_subscriber_with_ten_digits_eleven_or_011() {
        let p = nanp();
        let sj = Some(("14085551234".into(), false, false));
        assert_eq!(read(&p, "4085551234"), sj);
        assert_eq!(read(&p, "14085551234"), sj);
        assert_eq!(read(&p, "(408)555-1234"), sj);
        assert_eq!(read(&p, "+14085551234"), sj);
        assert_eq!(
            read(&p, "011442079460000"),
            Some(("442079460000".into(), true, false))
        );
        assert_eq!(
            read(&p, "19005551234"),
            Some(("19005551234".into(), false, true))
        );
    }

    #[test]
    fn what_is_no_phone_number_is_refused() {
        let p = uk();
        for bad in [
            "",
            "+",
            "00",
            "alice",
            "12a4",
            "+44 20",
            &"1".repeat(33),
            "*100",
        ] {
            assert_eq!(p.read(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tenants_without_a_plan_get_the_default() {
        let mut n = Numbering::default();
        n.tenants.insert("itsp-uk".into(), uk());
        assert_eq!(n.plan("itsp-uk"), &uk());
        assert_eq!(n.plan("other"), &Plan::default());
    }
}
