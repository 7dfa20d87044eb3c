//! Exact money. Amounts are integer micro-units (10⁻⁶ of the currency unit) so that they fit an
//! `i64` column in both SQLite and PostgreSQL (sqlx's `Any` driver carries neither `Decimal` nor
//! `NUMERIC`), and `rust_decimal` is used wherever a person types or reads an amount. Nothing here
//! ever rounds: an amount with more precision than we store is refused, not trimmed.

use rust_decimal::Decimal;
use std::fmt;
use std::str::FromStr;

/// Decimal places we store. Six covers sub-cent per-call charges at any realistic rate.
pub const SCALE: u32 = 6;
const UNIT: i64 = 1_000_000;
/// The largest amount a person may type (a top-up or a card balance), in currency units.
pub const MAX_TYPED_AMOUNT: i64 = 1_000_000_000;

/// An exact amount of money in micro-units of an (implied) currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

/// Why a typed or computed amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not an amount (expected digits with an optional decimal point, e.g. 10.50)")]
    Malformed(String),
    #[error("'{0}' has more than {SCALE} decimal places; amounts are never rounded")]
    TooPrecise(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
    #[error("'{0}' must be greater than zero")]
    NotPositive(String),
}

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(0);

    /// From micro-units as stored in the database.
    pub const fn from_micros(micros: i64) -> Money {
        Money(micros)
    }

    /// Micro-units, for storage.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// The exact decimal value.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, SCALE)
    }

    /// An exact conversion: fails rather than rounds when `d` has more than six decimals.
    pub fn try_from_decimal(d: Decimal) -> Result<Money, MoneyError> {
        let n = d.normalize();
        if n.scale() > SCALE {
            return Err(MoneyError::TooPrecise(d.to_string()));
        }
        let mantissa = n.mantissa();
        let factor = 10i128.pow(SCALE - n.scale());
        mantissa
            .checked_mul(factor)
            .and_then(|m| i64::try_from(m).ok())
            .map(Money)
            .ok_or_else(|| MoneyError::TooLarge(d.to_string()))
    }

    /// Parses an amount a person typed (`10`, `10.5`, `0.01`; a leading `-` only when `signed`).
    /// Exponents, thousands separators, currency signs and surrounding junk are refused.
    pub fn parse(text: &str, signed: bool) -> Result<Money, MoneyError> {
        let t = text.trim();
        let body = match t.strip_prefix('-') {
            Some(rest) if signed => rest,
            _ => t,
        };
        let mut parts = body.splitn(2, '.');
        let int = parts.next().unwrap_or("");
        let frac = parts.next();
        let digits_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok(int) || frac.is_some_and(|f| !digits_ok(f)) {
            return Err(MoneyError::Malformed(text.to_string()));
        }
        let d = Decimal::from_str(t).map_err(|_| MoneyError::TooLarge(text.to_string()))?;
        if d.abs() > Decimal::from(MAX_TYPED_AMOUNT) {
            return Err(MoneyError::TooLarge(text.to_string()));
        }
        Money::try_from_decimal(d).map_err(|e| match e {
            MoneyError::TooPrecise(_) => MoneyError::TooPrecise(text.to_string()),
            other => other,
        })
    }

    /// Like [`Money::parse`] but also refuses zero and negative amounts.
    pub fn parse_positive(text: &str) -> Result<Money, MoneyError> {
        let m = Money::parse(text, true)?;
        if m.0 <= 0 {
            return Err(MoneyError::NotPositive(text.to_string()));
        }
        Ok(m)
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// `self - other`, or `None` on overflow.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    /// Whether the amount is above zero.
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// The amount in whole cents, a sub-cent remainder dropped toward minus infinity: what an
    /// announcement or a RADIUS `h323-credit-amount` shows (printed through `Display`, as
    /// `32.91`), so neither ever promises more than the balance holds.
    pub fn floor_cents(self) -> Money {
        let cent = UNIT / 100;
        Money(self.0.div_euclid(cent).saturating_mul(cent))
    }
}

/// At least two decimals, more only when they carry value: `32.91`, `0.0125`, `10.00`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = self.to_decimal().normalize();
        if d.scale() < 2 {
            d.rescale(2);
        }
        write!(f, "{d}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_and_refuses_rounding() {
        assert_eq!(Money::parse("32.91", false).unwrap().micros(), 32_910_000);
        assert_eq!(Money::parse("0.000001", false).unwrap().micros(), 1);
        assert!(matches!(
            Money::parse("0.0000001", false),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            Money::parse("-5", false),
            Err(MoneyError::Malformed(_))
        ));
        assert_eq!(Money::parse("-5", true).unwrap().micros(), -5_000_000);
        for bad in [
            "", "abc", "1e3", "1,000", "$5", "5.", ".5", "1.2.3", " 5 x", "--5",
        ] {
            assert!(Money::parse(bad, true).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            Money::parse("99999999999", false),
            Err(MoneyError::TooLarge(_))
        ));
        assert!(matches!(
            Money::parse_positive("0.00"),
            Err(MoneyError::NotPositive(_))
        ));
        assert!(matches!(
            Money::parse_positive("-5"),
            Err(MoneyError::NotPositive(_))
        ));
    }

    #[test]
    fn displays_for_people() {
        assert_eq!(Money::from_micros(32_910_000).to_string(), "32.91");
        assert_eq!(Money::from_micros(10_000_000).to_string(), "10.00");
        assert_eq!(Money::from_micros(12_500).to_string(), "0.0125");
        assert_eq!(Money::from_micros(-1_500_000).to_string(), "-1.50");
        assert_eq!(
            Money::from_micros(32_919_999).floor_cents().to_string(),
            "32.91"
        );
        assert_eq!(
            Money::from_micros(10_000_000).floor_cents().to_string(),
            "10.00"
        );
        assert_eq!(Money::from_micros(5_000).floor_cents().to_string(), "0.00");
        assert_eq!(
            Money::from_micros(-5_000).floor_cents().to_string(),
            "-0.01"
        );
    }
}
