//! "Say": amounts, durations, numbers and digit strings as sequences of prompt names, in the
//! grammar of each language. Pure functions from values to names (without the `<lang>_`
//! prefix); the prompt set turns names into audio. Every number word the grammars can produce
//! is in [`words`], which is how a prompt set is checked for completeness.

use std::fmt;

/// A language with its own number grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    /// English.
    En,
    /// Spanish: `y` between tens and units and before cents, `un`/`una` by the noun's gender.
    Es,
    /// Mandarin: 元/角/分 for money (the formal units; 块/毛 are colloquial), 两 for a quantity
    /// of two before a unit, 零 for skipped places.
    Zh,
}

impl Lang {
    /// From a language code (`en`, `es`, `zh`; also `sp` and `ch` as on the reference gateways).
    pub fn from_code(code: &str) -> Option<Lang> {
        match code {
            "en" => Some(Lang::En),
            "es" | "sp" => Some(Lang::Es),
            "zh" | "ch" => Some(Lang::Zh),
            _ => None,
        }
    }

    /// The code used for directory names and file prefixes.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
            Lang::Zh => "zh",
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Largest whole amount that is spoken; above it the "more than one million" prompt plays.
pub const MAX_UNITS: u64 = 999_999;

/// An amount of money in units and cents (`32.91` → `say_money(lang, 32, 91)`).
pub fn say_money(lang: Lang, units: u64, cents: u8) -> Vec<&'static str> {
    if units > MAX_UNITS {
        return vec!["invalid_amt"];
    }
    let cents = cents.min(99) as u64;
    match lang {
        Lang::En => {
            let mut out = Vec::new();
            if units > 0 || cents == 0 {
                out.extend(en_number(units));
                out.push(if units == 1 { "dollar" } else { "dollars" });
            }
            if cents > 0 {
                if units > 0 {
                    out.push("and");
                }
                out.extend(en_number(cents));
                out.push(if cents == 1 { "cent" } else { "cents" });
            }
            out
        }
        Lang::Es => {
            let mut out = Vec::new();
            if units > 0 || cents == 0 {
                out.extend(es_number(units, Some(Gender::M)));
                out.push(if units == 1 { "dolar" } else { "dolares" });
            }
            if cents > 0 {
                if units > 0 {
                    out.push("y");
                }
                out.extend(es_number(cents, Some(Gender::M)));
                out.push(if cents == 1 { "centavo" } else { "centavos" });
            }
            out
        }
        Lang::Zh => {
            let mut out = Vec::new();
            let (jiao, fen) = (cents / 10, cents % 10);
            if units > 0 || cents == 0 {
                out.extend(zh_quantity(units));
                out.push("yuan");
            }
            if jiao > 0 {
                out.extend(zh_quantity(jiao));
                out.push("jiao");
            }
            if fen > 0 {
                if jiao == 0 && units > 0 {
                    out.push("ling");
                }
                out.extend(zh_quantity(fen));
                out.push("fen");
            }
            out
        }
    }
}

/// Talk time, as the caller hears it: hours and minutes, or seconds under a minute. Seconds
/// beyond whole minutes are not announced (the announcement never promises more than there is).
pub fn say_duration(lang: Lang, seconds: u64) -> Vec<&'static str> {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    let mut out = Vec::new();
    match lang {
        Lang::En => {
            if h == 0 && m == 0 {
                out.extend(en_number(s));
                out.push(if s == 1 { "second" } else { "seconds" });
                return out;
            }
            if h > 0 {
                out.extend(en_number(h));
                out.push(if h == 1 { "hour" } else { "hours" });
            }
            if m > 0 {
                if h > 0 {
                    out.push("and");
                }
                out.extend(en_number(m));
                out.push(if m == 1 { "minute" } else { "minutes" });
            }
        }
        Lang::Es => {
            if h == 0 && m == 0 {
                out.extend(es_number(s, Some(Gender::M)));
                out.push(if s == 1 { "segundo" } else { "segundos" });
                return out;
            }
            if h > 0 {
                out.extend(es_number(h, Some(Gender::F)));
                out.push(if h == 1 { "hora" } else { "horas" });
            }
            if m > 0 {
                if h > 0 {
                    out.push("y");
                }
                out.extend(es_number(m, Some(Gender::M)));
                out.push(if m == 1 { "minuto" } else { "minutos" });
            }
        }
        Lang::Zh => {
            if h == 0 && m == 0 {
                out.extend(zh_quantity(s));
                out.push("miao");
                return out;
            }
            if h > 0 {
                out.extend(zh_quantity(h));
                out.push("xiaoshi");
            }
            if m > 0 {
                out.extend(zh_quantity(m));
                out.push("fenzhong");
            }
        }
    }
    out
}

/// A number (0 to 999,999) on its own.
pub fn say_number(lang: Lang, n: u64) -> Vec<&'static str> {
    let n = n.min(MAX_UNITS);
    match lang {
        Lang::En => en_number(n),
        Lang::Es => es_number(n, None),
        Lang::Zh => zh_number(n),
    }
}

/// A digit string, one digit at a time (`*` and `#` and anything else are skipped).
pub fn say_digits(lang: Lang, digits: &str) -> Vec<&'static str> {
    digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|d| {
            let d = (d - b'0') as usize;
            match lang {
                Lang::En => EN_ONES[d],
                Lang::Es => ES_ONES[d],
                Lang::Zh => ZH_DIGITS[d],
            }
        })
        .collect()
}

/// Every word the grammars of `lang` can produce: the number part of the prompt catalogue.
pub fn words(lang: Lang) -> Vec<&'static str> {
    let mut w: Vec<&'static str> = match lang {
        Lang::En => {
            let mut v: Vec<_> = EN_ONES.to_vec();
            v.extend(&EN_TENS[2..]);
            v.extend([
                "hundred", "thousand", "and", "dollar", "dollars", "cent", "cents", "second",
                "seconds", "minute", "minutes", "hour", "hours",
            ]);
            v
        }
        Lang::Es => {
            let mut v: Vec<_> = ES_ONES.to_vec();
            v.extend(&ES_TENS[3..]);
            v.extend(&ES_HUNDREDS[1..]);
            v.extend([
                "cien",
                "mil",
                "y",
                "un",
                "una",
                "veintiun",
                "veintiuna",
                "dolar",
                "dolares",
                "centavo",
                "centavos",
                "segundo",
                "segundos",
                "minuto",
                "minutos",
                "hora",
                "horas",
            ]);
            v
        }
        Lang::Zh => {
            let mut v: Vec<_> = ZH_DIGITS.to_vec();
            v.extend([
                "liang", "shi", "bai", "qian", "wan", "yuan", "jiao", "fen", "miao", "fenzhong",
                "xiaoshi",
            ]);
            v
        }
    };
    w.sort_unstable();
    w.dedup();
    w
}

const EN_ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const EN_TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

fn en_below_1000(n: u64, out: &mut Vec<&'static str>) {
    let (h, r) = (n / 100, n % 100);
    if h > 0 {
        out.push(EN_ONES[h as usize]);
        out.push("hundred");
    }
    if r >= 20 {
        out.push(EN_TENS[(r / 10) as usize]);
        if r % 10 > 0 {
            out.push(EN_ONES[(r % 10) as usize]);
        }
    } else if r > 0 {
        out.push(EN_ONES[r as usize]);
    }
}

fn en_number(n: u64) -> Vec<&'static str> {
    if n == 0 {
        return vec!["zero"];
    }
    let mut out = Vec::new();
    if n >= 1000 {
        en_below_1000(n / 1000, &mut out);
        out.push("thousand");
    }
    en_below_1000(n % 1000, &mut out);
    out
}

/// The gender of the noun a Spanish number counts: "un dólar", "una hora".
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gender {
    M,
    F,
}

const ES_ONES: [&str; 30] = [
    "cero",
    "uno",
    "dos",
    "tres",
    "cuatro",
    "cinco",
    "seis",
    "siete",
    "ocho",
    "nueve",
    "diez",
    "once",
    "doce",
    "trece",
    "catorce",
    "quince",
    "dieciseis",
    "diecisiete",
    "dieciocho",
    "diecinueve",
    "veinte",
    "veintiuno",
    "veintidos",
    "veintitres",
    "veinticuatro",
    "veinticinco",
    "veintiseis",
    "veintisiete",
    "veintiocho",
    "veintinueve",
];
const ES_TENS: [&str; 10] = [
    "",
    "",
    "",
    "treinta",
    "cuarenta",
    "cincuenta",
    "sesenta",
    "setenta",
    "ochenta",
    "noventa",
];
const ES_HUNDREDS: [&str; 10] = [
    "",
    "ciento",
    "doscientos",
    "trescientos",
    "cuatrocientos",
    "quinientos",
    "seiscientos",
    "setecientos",
    "ochocientos",
    "novecientos",
];

/// 1–999; `gender` shortens a final "uno" before a noun (un, una, veintiún, veintiuna).
fn es_below_1000(n: u64, gender: Option<Gender>, out: &mut Vec<&'static str>) {
    let (h, r) = (n / 100, n % 100);
    if n == 100 {
        out.push("cien");
        return;
    }
    if h > 0 {
        out.push(ES_HUNDREDS[h as usize]);
    }
    let ones = |d: u64| -> &'static str {
        match (d, gender) {
            (1, Some(Gender::M)) => "un",
            (1, Some(Gender::F)) => "una",
            (21, Some(Gender::M)) => "veintiun",
            (21, Some(Gender::F)) => "veintiuna",
            (d, _) => ES_ONES[d as usize],
        }
    };
    if r >= 30 {
        out.push(ES_TENS[(r / 10) as usize]);
        if r % 10 > 0 {
            out.push("y");
            out.push(ones(r % 10));
        }
    } else if r > 0 {
        out.push(ones(r));
    }
}

fn es_number(n: u64, gender: Option<Gender>) -> Vec<&'static str> {
    if n == 0 {
        return vec!["cero"];
    }
    let mut out = Vec::new();
    let (th, rest) = (n / 1000, n % 1000);
    if th == 1 {
        out.push("mil");
    } else if th > 1 {
        // "veintiún mil", "treinta y un mil": mil is counted like a masculine noun.
        es_below_1000(th, Some(Gender::M), &mut out);
        out.push("mil");
    }
    if rest > 0 {
        es_below_1000(rest, gender, &mut out);
    }
    out
}

const ZH_DIGITS: [&str; 10] = [
    "ling", "yi", "er", "san", "si", "wu", "liu", "qi", "ba", "jiu",
];

/// 1–9999 with 零 for skipped places; `leading` drops the 一 of a leading 一十 (十一 not 一十一).
fn zh_below_10000(n: u64, leading: bool, out: &mut Vec<&'static str>) {
    let places = [
        (n / 1000, Some("qian")),
        ((n / 100) % 10, Some("bai")),
        ((n / 10) % 10, Some("shi")),
        (n % 10, None),
    ];
    let mut started = false;
    let mut pending_zero = false;
    for (d, unit) in places {
        if d == 0 {
            pending_zero |= started;
            continue;
        }
        if pending_zero {
            out.push("ling");
            pending_zero = false;
        }
        let ten_alone = leading && !started && unit == Some("shi") && d == 1;
        if !ten_alone {
            out.push(ZH_DIGITS[d as usize]);
        }
        if let Some(u) = unit {
            out.push(u);
        }
        started = true;
    }
}

fn zh_number(n: u64) -> Vec<&'static str> {
    if n == 0 {
        return vec!["ling"];
    }
    let mut out = Vec::new();
    let (wan, rest) = (n / 10_000, n % 10_000);
    if wan > 0 {
        zh_below_10000(wan, true, &mut out);
        out.push("wan");
        if rest > 0 && rest < 1000 {
            out.push("ling");
        }
    }
    if rest > 0 {
        zh_below_10000(rest, wan == 0, &mut out);
    }
    out
}

/// A quantity before a measure word: 两 for exactly two.
fn zh_quantity(n: u64) -> Vec<&'static str> {
    if n == 2 {
        vec!["liang"]
    } else {
        zh_number(n)
    }
}

#[cfg(test)]
mod tests {
    use super::Lang::*;
    use super::*;

    fn s(v: Vec<&str>) -> String {
        v.join(" ")
    }

    #[test]
    fn english() {
        let cases: &[(u64, u8, &str)] = &[
            (0, 0, "zero dollars"),
            (1, 0, "one dollar"),
            (0, 1, "one cent"),
            (0, 50, "fifty cents"),
            (11, 0, "eleven dollars"),
            (21, 0, "twenty one dollars"),
            (100, 0, "one hundred dollars"),
            (101, 0, "one hundred one dollars"),
            (1000, 0, "one thousand dollars"),
            (32, 91, "thirty two dollars and ninety one cents"),
            (1, 1, "one dollar and one cent"),
            (999_999, 99, "nine hundred ninety nine thousand nine hundred ninety nine dollars and ninety nine cents"),
            (1_000_000, 0, "invalid_amt"),
        ];
        for (u, c, want) in cases {
            assert_eq!(s(say_money(En, *u, *c)), *want, "{u}.{c:02}");
        }
        assert_eq!(
            s(say_duration(En, 20900)),
            "five hours and forty eight minutes"
        );
        assert_eq!(s(say_duration(En, 3600)), "one hour");
        assert_eq!(s(say_duration(En, 61)), "one minute");
        assert_eq!(s(say_duration(En, 0)), "zero seconds");
        assert_eq!(s(say_duration(En, 1)), "one second");
        assert_eq!(s(say_duration(En, 7260)), "two hours and one minute");
        assert_eq!(s(say_number(En, 1011)), "one thousand eleven");
        assert_eq!(s(say_digits(En, "5551#2")), "five five five one two");
    }

    #[test]
    fn spanish() {
        let cases: &[(u64, u8, &str)] = &[
            (0, 0, "cero dolares"),
            (1, 0, "un dolar"),
            (0, 1, "un centavo"),
            (11, 0, "once dolares"),
            (21, 0, "veintiun dolares"),
            (31, 0, "treinta y un dolares"),
            (100, 0, "cien dolares"),
            (101, 0, "ciento un dolares"),
            (1000, 0, "mil dolares"),
            (21_000, 0, "veintiun mil dolares"),
            (200_500, 0, "doscientos mil quinientos dolares"),
            (32, 91, "treinta y dos dolares y noventa y un centavos"),
        ];
        for (u, c, want) in cases {
            assert_eq!(s(say_money(Es, *u, *c)), *want, "{u}.{c:02}");
        }
        assert_eq!(
            s(say_duration(Es, 20900)),
            "cinco horas y cuarenta y ocho minutos"
        );
        assert_eq!(s(say_duration(Es, 3600 + 60)), "una hora y un minuto");
        assert_eq!(
            s(say_duration(Es, 21 * 3600 + 21 * 60)),
            "veintiuna horas y veintiun minutos"
        );
        assert_eq!(s(say_number(Es, 21)), "veintiuno");
        assert_eq!(s(say_number(Es, 101)), "ciento uno");
        assert_eq!(s(say_number(Es, 0)), "cero");
    }

    #[test]
    fn mandarin() {
        let cases: &[(u64, u8, &str)] = &[
            (0, 0, "ling yuan"),
            (1, 0, "yi yuan"),
            (2, 0, "liang yuan"),
            (0, 1, "yi fen"),
            (11, 0, "shi yi yuan"),
            (21, 0, "er shi yi yuan"),
            (100, 0, "yi bai yuan"),
            (101, 0, "yi bai ling yi yuan"),
            (110, 0, "yi bai yi shi yuan"),
            (1000, 0, "yi qian yuan"),
            (1001, 0, "yi qian ling yi yuan"),
            (10_010, 0, "yi wan ling yi shi yuan"),
            (32, 91, "san shi er yuan jiu jiao yi fen"),
            (5, 5, "wu yuan ling wu fen"),
            (
                999_999,
                0,
                "jiu shi jiu wan jiu qian jiu bai jiu shi jiu yuan",
            ),
        ];
        for (u, c, want) in cases {
            assert_eq!(s(say_money(Zh, *u, *c)), *want, "{u}.{c:02}");
        }
        assert_eq!(s(say_duration(Zh, 20900)), "wu xiaoshi si shi ba fenzhong");
        assert_eq!(
            s(say_duration(Zh, 2 * 3600 + 120)),
            "liang xiaoshi liang fenzhong"
        );
        assert_eq!(s(say_duration(Zh, 10)), "shi miao");
    }

    #[test]
    fn every_word_said_is_in_the_catalogue() {
        for lang in [En, Es, Zh] {
            let known = words(lang);
            let mut said = Vec::new();
            for n in (0..2000).chain([21_000, 31_000, 100_000, 999_999]) {
                said.extend(say_number(lang, n));
                said.extend(say_money(lang, n, (n % 100) as u8));
            }
            for secs in (0..86_400).step_by(61) {
                said.extend(say_duration(lang, secs));
            }
            said.extend(say_digits(lang, "0123456789"));
            for w in said {
                assert!(
                    known.contains(&w) || w == "invalid_amt",
                    "{lang}: {w} is said but not catalogued"
                );
            }
        }
    }
}
