//! Rate decks: the rows a carrier or reseller prices destinations with, parsed from CSV,
//! validated line by line, and held in memory as a digit trie for longest-prefix lookups (a
//! 100,000-prefix deck answers in tens of nanoseconds). Also the blocked and toll-free prefix
//! lists, which use the same trie. Pure data: no database, no clock (time comes in as a value).

use crate::money::Money;
use crate::tariff::Tariff;
use chrono::{DateTime, Datelike, Timelike, Utc};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::str::FromStr;

/// Longest prefix or destination we accept (E.164 allows 15 digits; carriers add routing digits).
pub const MAX_PREFIX_LEN: usize = 32;

/// A digit trie mapping prefixes to values; `matches` yields every stored prefix of a number,
/// longest first.
#[derive(Debug, Clone)]
pub struct PrefixTrie<V> {
    children: Vec<[u32; 10]>,
    values: Vec<Option<V>>,
}

impl<V> Default for PrefixTrie<V> {
    fn default() -> Self {
        PrefixTrie {
            children: vec![[0; 10]],
            values: vec![None],
        }
    }
}

impl<V> PrefixTrie<V> {
    /// Stores `value` under `prefix` (digits only) and returns the previous value, if any.
    pub fn insert(&mut self, prefix: &str, value: V) -> Option<V> {
        let mut node = 0usize;
        for b in prefix.bytes() {
            let d = usize::from(b.wrapping_sub(b'0'));
            assert!(d < 10, "prefix must be digits");
            let next = self.children[node][d];
            node = if next == 0 {
                self.children.push([0; 10]);
                self.values.push(None);
                let id = self.children.len() - 1;
                self.children[node][d] = u32::try_from(id).expect("trie too large");
                id
            } else {
                next as usize
            };
        }
        self.values[node].replace(value)
    }

    /// The values of every stored prefix of `number`, longest first. Stops at the first
    /// non-digit, so callers validate numbers before looking them up.
    pub fn matches<'a>(&'a self, number: &str) -> impl Iterator<Item = &'a V> + 'a {
        let mut found: [u32; MAX_PREFIX_LEN + 1] = [0; MAX_PREFIX_LEN + 1];
        let mut n = 0usize;
        let mut node = 0usize;
        if self.values[0].is_some() {
            found[0] = 0;
            n = 1;
        }
        for b in number.bytes().take(MAX_PREFIX_LEN) {
            let d = usize::from(b.wrapping_sub(b'0'));
            if d >= 10 {
                break;
            }
            let next = self.children[node][d];
            if next == 0 {
                break;
            }
            node = next as usize;
            if self.values[node].is_some() {
                found[n] = next;
                n += 1;
            }
        }
        (0..n)
            .rev()
            .filter_map(move |i| self.values[found[i] as usize].as_ref())
    }

    /// The value of the longest stored prefix of `number`.
    pub fn longest(&self, number: &str) -> Option<&V> {
        self.matches(number).next()
    }
}

/// Days of the week and a time-of-day window (UTC) during which a rate row applies, written
/// in the CSV as `mon-fri 08:00-18:00`, `sat,sun`, `22:00-06:00` (wraps midnight) or a
/// `;`-separated list of such windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeBand {
    text: String,
    windows: Vec<Window>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    /// Bit 0 = Monday … bit 6 = Sunday.
    days: u8,
    start_min: u16,
    end_min: u16,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl TimeBand {
    /// Whether `at` falls inside the band.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let day = at.weekday().num_days_from_monday() as u8;
        let minute = (at.hour() * 60 + at.minute()) as u16;
        self.windows.iter().any(|w| {
            if w.start_min < w.end_min {
                w.days & (1 << day) != 0 && minute >= w.start_min && minute < w.end_min
            } else {
                // Wraps midnight: the part after midnight belongs to the day the window opened.
                let yesterday = (day + 6) % 7;
                (w.days & (1 << day) != 0 && minute >= w.start_min)
                    || (w.days & (1 << yesterday) != 0 && minute < w.end_min)
            }
        })
    }

    /// The band as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for TimeBand {
    type Err = String;

    fn from_str(s: &str) -> Result<TimeBand, String> {
        let mut windows = Vec::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let mut days = 0u8;
            let mut start_min = 0u16;
            let mut end_min = 24 * 60;
            for word in part.split_whitespace() {
                if word.as_bytes()[0].is_ascii_digit() {
                    let (a, b) = word
                        .split_once('-')
                        .ok_or_else(|| format!("'{word}' is not a HH:MM-HH:MM range"))?;
                    start_min = parse_hhmm(a)?;
                    end_min = parse_hhmm(b)?;
                    if start_min == end_min {
                        return Err(format!("'{word}' is an empty time range"));
                    }
                } else {
                    days |= parse_days(word)?;
                }
            }
            if days == 0 {
                days = 0x7f;
            }
            windows.push(Window {
                days,
                start_min,
                end_min,
            });
        }
        if windows.is_empty() {
            return Err("empty time band".into());
        }
        Ok(TimeBand {
            text: s.trim().to_string(),
            windows,
        })
    }
}

fn parse_hhmm(s: &str) -> Result<u16, String> {
    let bad = || format!("'{s}' is not a time of day (HH:MM, 00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_days(word: &str) -> Result<u8, String> {
    let day = |d: &str| {
        DAYS.iter()
            .position(|x| x.eq_ignore_ascii_case(d))
            .ok_or_else(|| format!("'{d}' is not a day (mon, tue, … sun)"))
    };
    let mut mask = 0u8;
    for item in word.split(',').filter(|x| !x.is_empty()) {
        if let Some((a, b)) = item.split_once('-') {
            let (a, b) = (day(a)?, day(b)?);
            let mut i = a;
            loop {
                mask |= 1 << i;
                if i == b {
                    break;
                }
                i = (i + 1) % 7;
            }
        } else {
            mask |= 1 << day(item)?;
        }
    }
    Ok(mask)
}

/// One priced destination prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRow {
    pub prefix: String,
    pub description: String,
    pub tariff: Tariff,
    pub time_band: Option<TimeBand>,
    pub currency: String,
    /// The CSV line the row came from, to point finance at it.
    pub line: u64,
}

/// A deck loaded for lookups.
#[derive(Debug, Clone, Default)]
pub struct Deck {
    rows: Vec<RateRow>,
    trie: PrefixTrie<Vec<u32>>,
}

impl Deck {
    /// Builds the lookup structure over validated rows.
    pub fn new(rows: Vec<RateRow>) -> Deck {
        let mut trie: PrefixTrie<Vec<u32>> = PrefixTrie::default();
        let mut groups: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            groups.entry(r.prefix.as_str()).or_default().push(i as u32);
        }
        for (prefix, mut idx) in groups {
            // Banded rows first, so that a row without a band is the fallback for its prefix.
            idx.sort_by_key(|&i| (rows[i as usize].time_band.is_none(), i));
            trie.insert(prefix, idx);
        }
        Deck { rows, trie }
    }

    /// The row for `destination` in `currency` at time `at`: the longest prefix that has a row
    /// in that currency whose time band (if any) contains `at`.
    pub fn lookup(&self, destination: &str, currency: &str, at: DateTime<Utc>) -> Option<&RateRow> {
        self.trie.matches(destination).find_map(|group| {
            group.iter().map(|&i| &self.rows[i as usize]).find(|r| {
                r.currency == currency && r.time_band.as_ref().is_none_or(|b| b.contains(at))
            })
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the deck has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, in import order.
    pub fn rows(&self) -> &[RateRow] {
        &self.rows
    }
}

/// A set of prefixes (blocked destinations, toll-free numbers).
#[derive(Debug, Clone, Default)]
pub struct PrefixSet {
    trie: PrefixTrie<String>,
}

impl PrefixSet {
    /// A set from `(prefix, description)` pairs.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> PrefixSet {
        let mut trie = PrefixTrie::default();
        for (p, d) in entries {
            trie.insert(p, d.to_string());
        }
        PrefixSet { trie }
    }

    /// The description of the longest listed prefix of `number`.
    pub fn matching(&self, number: &str) -> Option<&str> {
        self.trie.longest(number).map(String::as_str)
    }
}

/// One problem found in an uploaded file, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A rejected import: every problem found (up to a limit), so finance can fix the file in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", format_errors(.0))]
pub struct ImportError(pub Vec<LineError>);

fn format_errors(errors: &[LineError]) -> String {
    let mut s = format!("{} problem(s) in the file, nothing imported", errors.len());
    for e in errors {
        s.push_str("\n  ");
        s.push_str(&e.to_string());
    }
    s
}

/// Stop collecting after this many problems: a wholly wrong file should not print 100,000 lines.
const MAX_REPORTED: usize = 50;

const RATE_COLUMNS: [&str; 9] = [
    "prefix",
    "description",
    "rate_per_minute",
    "connect_fee",
    "initial_increment",
    "increment",
    "minimum_seconds",
    "time_band",
    "currency",
];
const REQUIRED_RATE_COLUMNS: usize = 7;

/// Checks a prefix or dialled number: 1 to 32 digits.
pub fn valid_digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_PREFIX_LEN && s.bytes().all(|b| b.is_ascii_digit())
}

fn valid_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Parses a rate deck CSV (header row required). Rows without a currency column take
/// `default_currency`. All or nothing: any bad row rejects the file with every problem listed.
pub fn parse_rates_csv(
    input: impl Read,
    default_currency: &str,
) -> Result<Vec<RateRow>, ImportError> {
    let mut errors = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(input);
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(ImportError(vec![LineError {
                line: 1,
                message: e.to_string(),
            }]))
        }
    };
    let mut col = [usize::MAX; 9];
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim_start_matches('\u{feff}').to_ascii_lowercase();
        match RATE_COLUMNS.iter().position(|c| *c == h) {
            Some(k) if col[k] == usize::MAX => col[k] = i,
            Some(_) => errors.push(LineError {
                line: 1,
                message: format!("column '{h}' appears twice"),
            }),
            None => errors.push(LineError {
                line: 1,
                message: format!("unknown column '{h}' (expected {})", RATE_COLUMNS.join(",")),
            }),
        }
    }
    for (k, name) in RATE_COLUMNS.iter().enumerate().take(REQUIRED_RATE_COLUMNS) {
        if col[k] == usize::MAX {
            errors.push(LineError {
                line: 1,
                message: format!("missing column '{name}'"),
            });
        }
    }
    if !errors.is_empty() {
        return Err(ImportError(errors));
    }
    let mut rows = Vec::new();
    let mut seen: HashMap<(String, String, String), u64> = HashMap::new();
    for record in reader.records() {
        if errors.len() >= MAX_REPORTED {
            break;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(LineError {
                    line,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != headers.len() {
            errors.push(LineError {
                line,
                message: format!("{} fields, the header has {}", record.len(), headers.len()),
            });
            continue;
        }
        let get = |k: usize| {
            if col[k] == usize::MAX {
                ""
            } else {
                &record[col[k]]
            }
        };
        match parse_rate_row(&get, default_currency) {
            Ok(mut row) => {
                row.line = line;
                let key = (
                    row.prefix.clone(),
                    row.time_band
                        .as_ref()
                        .map(|b| b.as_str().to_string())
                        .unwrap_or_default(),
                    row.currency.clone(),
                );
                if let Some(first) = seen.insert(key, line) {
                    errors.push(LineError {
                        line,
                        message: format!(
                            "prefix {} repeats line {first} (same time band and currency)",
                            row.prefix
                        ),
                    });
                } else {
                    rows.push(row);
                }
            }
            Err(message) => errors.push(LineError { line, message }),
        }
    }
    if errors.is_empty() && rows.is_empty() {
        errors.push(LineError {
            line: 1,
            message: "the file has no rate rows".into(),
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(ImportError(errors))
    }
}

fn parse_rate_row<'a>(
    get: &dyn Fn(usize) -> &'a str,
    default_currency: &str,
) -> Result<RateRow, String> {
    let prefix = get(0);
    if !valid_digits(prefix) {
        return Err(format!(
            "prefix '{prefix}' must be 1 to {MAX_PREFIX_LEN} digits"
        ));
    }
    let decimal = |k: usize, name: &str| {
        let v = get(k);
        Decimal::from_str(v).map_err(|_| format!("{name} '{v}' is not a decimal number"))
    };
    let seconds = |k: usize, name: &str| {
        let v = get(k);
        v.parse::<u32>()
            .map_err(|_| format!("{name} '{v}' is not a whole number of seconds"))
    };
    let rate = decimal(2, "rate_per_minute")?;
    let fee = Money::parse(get(3), false).map_err(|e| format!("connect_fee: {e}"))?;
    let tariff = Tariff::new(
        rate,
        fee,
        seconds(4, "initial_increment")?,
        seconds(5, "increment")?,
        seconds(6, "minimum_seconds")?,
    )
    .map_err(|e| e.to_string())?;
    let time_band = match get(7) {
        "" => None,
        b => Some(TimeBand::from_str(b).map_err(|e| format!("time_band: {e}"))?),
    };
    let currency = match get(8) {
        "" => default_currency.to_string(),
        c => c.to_ascii_uppercase(),
    };
    if !valid_currency(&currency) {
        return Err(format!("currency '{currency}' is not an ISO 4217 code"));
    }
    Ok(RateRow {
        prefix: prefix.to_string(),
        description: get(1).to_string(),
        tariff,
        time_band,
        currency,
        line: 0,
    })
}

/// Parses a prefix list CSV: a `prefix` column and an optional `description` column.
pub fn parse_prefix_csv(input: impl Read) -> Result<Vec<(String, String)>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| {
            ImportError(vec![LineError {
                line: 1,
                message: e.to_string(),
            }])
        })?
        .clone();
    let names: Vec<String> = headers
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let p = names.iter().position(|h| h == "prefix");
    let d = names.iter().position(|h| h == "description");
    let Some(p) = p else {
        return Err(ImportError(vec![LineError {
            line: 1,
            message: "missing column 'prefix'".into(),
        }]));
    };
    if let Some(other) = names.iter().find(|h| *h != "prefix" && *h != "description") {
        return Err(ImportError(vec![LineError {
            line: 1,
            message: format!("unknown column '{other}' (expected prefix,description)"),
        }]));
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        if errors.len() >= MAX_REPORTED {
            break;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(LineError {
                    line,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let prefix = record.get(p).unwrap_or("");
        if prefix.is_empty() && record.iter().all(str::is_empty) {
            continue;
        }
        if !valid_digits(prefix) {
            errors.push(LineError {
                line,
                message: format!("prefix '{prefix}' must be 1 to {MAX_PREFIX_LEN} digits"),
            });
            continue;
        }
        if let Some(first) = seen.insert(prefix.to_string(), line) {
            errors.push(LineError {
                line,
                message: format!("prefix {prefix} repeats line {first}"),
            });
            continue;
        }
        let desc = d.and_then(|d| record.get(d)).unwrap_or("");
        out.push((prefix.to_string(), desc.to_string()));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ImportError(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const DECK: &str = "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds,time_band,currency
1,North America,0.015,0,6,6,0,,
1514,Montreal,0.010,0,6,6,0,,
1514,Montreal peak,0.020,0,6,6,0,mon-fri 08:00-18:00,
44,UK,0.05,0,30,6,0,,
44,UK in euros,0.045,0,30,6,0,,EUR
";

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn longest_prefix_time_band_and_currency() {
        let deck = Deck::new(parse_rates_csv(DECK.as_bytes(), "USD").unwrap());
        // 2026-11-23 is a Monday.
        assert_eq!(
            deck.lookup("15145551234", "USD", at(2026, 11, 23, 9))
                .unwrap()
                .description,
            "Montreal peak"
        );
        assert_eq!(
            deck.lookup("15145551234", "USD", at(2026, 11, 23, 19))
                .unwrap()
                .description,
            "Montreal"
        );
        assert_eq!(
            deck.lookup("15145551234", "USD", at(2026, 11, 22, 9))
                .unwrap()
                .description,
            "Montreal"
        );
        assert_eq!(
            deck.lookup("12125551234", "USD", at(2026, 11, 23, 9))
                .unwrap()
                .description,
            "North America"
        );
        assert_eq!(
            deck.lookup("4420", "EUR", at(2026, 11, 23, 9))
                .unwrap()
                .description,
            "UK in euros"
        );
        assert!(deck.lookup("4420", "GBP", at(2026, 11, 23, 9)).is_none());
        assert!(deck.lookup("33123", "USD", at(2026, 11, 23, 9)).is_none());
        assert!(deck.lookup("", "USD", at(2026, 11, 23, 9)).is_none());
    }

    #[test]
    fn time_bands() {
        let b: TimeBand = "22:00-06:00".parse().unwrap();
        assert!(b.contains(at(2026, 11, 23, 23)));
        assert!(b.contains(at(2026, 11, 23, 5)));
        assert!(!b.contains(at(2026, 11, 23, 12)));
        let weekend: TimeBand = "sat,sun".parse().unwrap();
        assert!(weekend.contains(at(2026, 11, 22, 12)));
        assert!(!weekend.contains(at(2026, 11, 23, 12)));
        let fri_night: TimeBand = "fri 20:00-02:00".parse().unwrap();
        assert!(fri_night.contains(at(2026, 11, 28, 1))); // Saturday 01:00 belongs to Friday night
        assert!(!fri_night.contains(at(2026, 11, 24, 1)));
        for bad in ["", "moon", "25:00-26:00", "08:00", "08:00-08:00", "mon-xyz"] {
            assert!(bad.parse::<TimeBand>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_rows_are_named_by_line_and_nothing_is_imported() {
        let csv = "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds
44,UK,0.05,0,30,6,0
4a,Bad prefix,0.05,0,30,6,0
45,Bad rate,abc,0,30,6,0
46,Negative,-0.05,0,30,6,0
47,Zero increment,0.05,0,0,6,0
48,Fee,0.05,0.0000001,1,1,0
44,Twice,0.05,0,30,6,0
49,short,0.05
50,Overflow,79228162514264337593543950335,0,1,1,0
51,Huge fee,0.05,999999999,1,1,0
";
        let err = parse_rates_csv(csv.as_bytes(), "USD").unwrap_err();
        let lines: Vec<u64> = err.0.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9, 10, 11], "{err}");
        assert!(err.0[0].message.contains("prefix '4a'"));
        assert!(err.0[5].message.contains("repeats line 2"));
        assert!(
            err.0[7].message.contains("rate_per_minute is above 10000"),
            "{err}"
        );
        assert!(err.0[8].message.contains("connect_fee is above"), "{err}");
        assert!(err.to_string().starts_with("9 problem(s)"));
    }

    #[test]
    fn bad_headers_and_empty_files() {
        let missing = parse_rates_csv("prefix,description\n1,x\n".as_bytes(), "USD").unwrap_err();
        assert!(missing
            .to_string()
            .contains("missing column 'rate_per_minute'"));
        let typo = parse_rates_csv(
            "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds,curency\n".as_bytes(),
            "USD",
        )
        .unwrap_err();
        assert!(typo.to_string().contains("unknown column 'curency'"));
        let empty = parse_rates_csv(
            "prefix,description,rate_per_minute,connect_fee,initial_increment,increment,minimum_seconds\n".as_bytes(),
            "USD",
        )
        .unwrap_err();
        assert!(empty.to_string().contains("no rate rows"));
        assert!(parse_rates_csv(&b"\xff\xfe"[..], "USD").is_err());
    }

    #[test]
    fn prefix_lists() {
        let set = PrefixSet::new([("1900", "premium"), ("1976", "premium 2")]);
        assert_eq!(set.matching("19005551234"), Some("premium"));
        assert_eq!(set.matching("1800"), None);
        let parsed =
            parse_prefix_csv("prefix,description\n1900,premium\n1800\n".as_bytes()).unwrap();
        assert_eq!(parsed.len(), 2);
        let bad = parse_prefix_csv("prefix\n19x\n1900\n1900\n".as_bytes()).unwrap_err();
        assert_eq!(bad.0.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 4]);
        assert!(parse_prefix_csv("number\n1\n".as_bytes()).is_err());
    }
}
