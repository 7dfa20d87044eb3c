//! The rating arithmetic: what N seconds of talk cost under one rate row, and its inverse, how
//! many seconds an amount buys. The announced time, the enforced cutoff and the final charge all
//! come from these two functions, so they must agree exactly; the arithmetic is done in integers
//! (`i128`) so that no rounding can ever hand out talk time that was not paid for.

use crate::money::{Money, SCALE};
use rust_decimal::Decimal;

/// Credit time is capped here: a day. A free or nearly free destination otherwise yields
/// absurd figures; the B2BUA's maximum call duration applies below this anyway.
pub const MAX_CREDIT_SECONDS: u64 = 86_400;

/// How one rate row charges: a per-minute price, a connect fee charged on answer, and billing
/// increments ("30/6" means the first 30 seconds, then every started 6 seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tariff {
    rate_per_minute: Decimal,
    connect_fee: Money,
    initial_increment: u32,
    increment: u32,
    minimum_seconds: u32,
}

/// Why a tariff cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    #[error("rate_per_minute must not be negative")]
    NegativeRate,
    #[error("rate_per_minute has more than {0} decimal places")]
    RateTooPrecise(u32),
    #[error("rate_per_minute is above {MAX_RATE_PER_MINUTE} a minute")]
    RateTooLarge,
    #[error("connect_fee is above {MAX_CONNECT_FEE}")]
    FeeTooLarge,
    #[error("connect_fee must not be negative")]
    NegativeFee,
    #[error("increments must be at least 1 second")]
    ZeroIncrement,
    #[error("increments and minimum_seconds must not exceed {MAX_CREDIT_SECONDS} seconds")]
    IncrementTooLarge,
}

/// Decimal places allowed in a per-minute rate; keeps the integer arithmetic far from overflow.
pub const MAX_RATE_SCALE: u32 = 10;

/// The highest per-minute rate a deck may carry (in the deck's currency). Real rates are far
/// below; the bound keeps every cost a deck can produce (a day's talk at this rate) exactly
/// representable, so a typo or a hostile upload is a refused row, never a wrapped number.
pub const MAX_RATE_PER_MINUTE: i64 = 10_000;

/// The highest connect fee a deck may carry.
pub const MAX_CONNECT_FEE: i64 = 10_000;

impl Tariff {
    /// A validated tariff.
    pub fn new(
        rate_per_minute: Decimal,
        connect_fee: Money,
        initial_increment: u32,
        increment: u32,
        minimum_seconds: u32,
    ) -> Result<Tariff, TariffError> {
        let rate = rate_per_minute.normalize();
        if rate.is_sign_negative() && !rate.is_zero() {
            return Err(TariffError::NegativeRate);
        }
        if rate.scale() > MAX_RATE_SCALE {
            return Err(TariffError::RateTooPrecise(MAX_RATE_SCALE));
        }
        if rate > Decimal::from(MAX_RATE_PER_MINUTE) {
            return Err(TariffError::RateTooLarge);
        }
        if connect_fee.micros() < 0 {
            return Err(TariffError::NegativeFee);
        }
        if connect_fee > Money::from_micros(MAX_CONNECT_FEE * 1_000_000) {
            return Err(TariffError::FeeTooLarge);
        }
        if initial_increment == 0 || increment == 0 {
            return Err(TariffError::ZeroIncrement);
        }
        let max = MAX_CREDIT_SECONDS as u32;
        if initial_increment > max || increment > max || minimum_seconds > max {
            return Err(TariffError::IncrementTooLarge);
        }
        Ok(Tariff {
            rate_per_minute: rate,
            connect_fee,
            initial_increment,
            increment,
            minimum_seconds,
        })
    }

    /// Price per minute.
    pub fn rate_per_minute(&self) -> Decimal {
        self.rate_per_minute
    }
    /// Fee charged once when the call is answered.
    pub fn connect_fee(&self) -> Money {
        self.connect_fee
    }
    /// First billing increment in seconds.
    pub fn initial_increment(&self) -> u32 {
        self.initial_increment
    }
    /// Following billing increments in seconds.
    pub fn increment(&self) -> u32 {
        self.increment
    }
    /// Shortest duration billed for an answered call.
    pub fn minimum_seconds(&self) -> u32 {
        self.minimum_seconds
    }

    /// The seconds billed for `talk` seconds of an answered call: zero for zero, else at least
    /// the minimum, rounded up to the increment grid.
    pub fn billed_seconds(&self, talk: u64) -> u64 {
        if talk == 0 {
            return 0;
        }
        let t = talk.max(u64::from(self.minimum_seconds));
        let first = u64::from(self.initial_increment);
        if t <= first {
            return first;
        }
        let inc = u64::from(self.increment);
        first + (t - first).div_ceil(inc) * inc
    }

    /// The cost of `talk` seconds: connect fee plus the per-minute price of the billed seconds,
    /// rounded up to the micro-unit. Zero seconds (an unanswered call) cost nothing.
    pub fn cost(&self, talk: u64) -> Money {
        let billed = self.billed_seconds(talk);
        if billed == 0 {
            return Money::ZERO;
        }
        Money::from_micros(
            self.connect_fee
                .micros()
                .saturating_add(self.usage_micros(billed)),
        )
    }

    /// Micro-units for `billed` seconds, rounded up: ceil(rate * billed / 60 * 10^6).
    fn usage_micros(&self, billed: u64) -> i64 {
        let (m, s) = (
            self.rate_per_minute.mantissa(),
            self.rate_per_minute.scale(),
        );
        // Checked: a bounded rate cannot overflow for any talk time a call can have, and an
        // absurd `billed` saturates instead of wrapping.
        let num = m
            .checked_mul(i128::from(billed))
            .and_then(|x| x.checked_mul(10i128.pow(SCALE)));
        let den = 60 * 10i128.pow(s);
        num.and_then(|n| n.checked_add(den - 1))
            .and_then(|n| i64::try_from(n / den).ok())
            .unwrap_or(i64::MAX)
    }

    /// The longest talk time, in seconds, whose [`Tariff::cost`] does not exceed `amount`
    /// (capped at [`MAX_CREDIT_SECONDS`]). Zero when not even the first increment is covered.
    pub fn credit_time(&self, amount: Money) -> u64 {
        let first = self.billed_seconds(1);
        if self.cost(1) > amount {
            return 0;
        }
        let usage = i128::from(amount.micros() - self.connect_fee.micros());
        let (m, s) = (
            self.rate_per_minute.mantissa(),
            self.rate_per_minute.scale(),
        );
        let cap = MAX_CREDIT_SECONDS;
        // The real-valued bound on billed seconds, then snapped down onto the increment grid.
        let bound = if m == 0 {
            cap
        } else {
            let raw = usage * 60 * 10i128.pow(s) / (m * 10i128.pow(SCALE));
            u64::try_from(raw).unwrap_or(u64::MAX).min(cap)
        };
        let init = u64::from(self.initial_increment);
        let inc = u64::from(self.increment);
        let mut g = if bound < first {
            first
        } else {
            init + (bound.saturating_sub(init)) / inc * inc
        };
        g = g.max(first);
        // The bound came from a division; confirm on the exact cost function both ways.
        while g > first && self.cost(g) > amount {
            g -= inc;
        }
        if self.cost(g) > amount {
            return 0;
        }
        while g + inc <= cap && self.cost(g + inc) <= amount {
            g += inc;
        }
        if g < cap && self.cost(cap) <= amount {
            // The credit runs past the cap (the increment straddling it is paid for).
            return cap;
        }
        g
    }

    /// The first billable boundary after `talk` seconds: the talk time at which the next
    /// increment starts being charged.
    pub fn next_boundary(&self, talk: u64) -> u64 {
        let b = self.billed_seconds(talk);
        if b == 0 {
            self.billed_seconds(1)
        } else {
            b + u64::from(self.increment)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn t(rate: &str, fee: &str, i: u32, n: u32, min: u32) -> Tariff {
        Tariff::new(
            Decimal::from_str(rate).unwrap(),
            Money::parse(fee, false).unwrap(),
            i,
            n,
            min,
        )
        .unwrap()
    }

    #[test]
    fn billing_increments() {
        let per_minute = t("1", "0", 60, 60, 0);
        assert_eq!(per_minute.billed_seconds(0), 0);
        assert_eq!(per_minute.billed_seconds(1), 60);
        assert_eq!(per_minute.billed_seconds(61), 120);
        let thirty_six = t("1", "0", 30, 6, 0);
        assert_eq!(thirty_six.billed_seconds(29), 30);
        assert_eq!(thirty_six.billed_seconds(31), 36);
        assert_eq!(thirty_six.billed_seconds(37), 42);
        let per_second_min = t("1", "0", 1, 1, 20);
        assert_eq!(per_second_min.billed_seconds(5), 20);
        assert_eq!(per_second_min.billed_seconds(21), 21);
    }

    #[test]
    fn rates_that_could_overflow_are_refused_and_costs_never_wrap() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(
            Tariff::new(d("79228162514264337593543950335"), Money::ZERO, 1, 1, 0),
            Err(TariffError::RateTooLarge)
        );
        assert_eq!(
            Tariff::new(d("10000.01"), Money::ZERO, 1, 1, 0),
            Err(TariffError::RateTooLarge)
        );
        assert_eq!(
            Tariff::new(d("1"), Money::from_micros(10_000_000_001), 1, 1, 0),
            Err(TariffError::FeeTooLarge)
        );
        // The largest deck rate for the longest call: exact, and far from i64's end.
        let t = Tariff::new(d("10000"), Money::ZERO, 1, 1, 0).unwrap();
        assert_eq!(
            t.cost(86_400),
            Money::from_micros(10_000 * 1440 * 1_000_000)
        );
        // Whatever `talk` a caller passes, saturated rather than wrapped.
        assert!(t.cost(u64::MAX).micros() > 0);
    }

    #[test]
    fn costs_round_up_to_the_micro_unit() {
        let r = t("0.0125", "0", 1, 1, 0);
        // 61 s at 0.0125/min = 0.012708333.. -> 0.012709
        assert_eq!(r.cost(61), Money::from_micros(12_709));
        let fee = t("0.10", "0.25", 60, 60, 0);
        assert_eq!(fee.cost(0), Money::ZERO);
        assert_eq!(fee.cost(1), Money::parse("0.35", false).unwrap());
    }

    #[test]
    fn the_seeds_walk_through() {
        // Card 000070 with 32.91 gets 20,900 seconds (5 h 48 min) to 5555233 on the demo deck.
        let demo = t("0.094478", "0", 1, 1, 0);
        let balance = Money::parse("32.91", false).unwrap();
        assert_eq!(demo.credit_time(balance), 20_900);
        assert!(demo.cost(20_900) <= balance);
        assert!(demo.cost(20_901) > balance);
    }

    #[test]
    fn credit_time_edges() {
        let r = t("0.60", "0.05", 60, 60, 0);
        assert_eq!(r.credit_time(Money::ZERO), 0);
        assert_eq!(r.credit_time(Money::parse("0.64", false).unwrap()), 0);
        assert_eq!(r.credit_time(Money::parse("0.65", false).unwrap()), 60);
        assert_eq!(r.credit_time(Money::parse("1.24", false).unwrap()), 60);
        assert_eq!(r.credit_time(Money::parse("1.25", false).unwrap()), 120);
        let free = t("0", "0", 1, 1, 0);
        assert_eq!(free.credit_time(Money::ZERO), MAX_CREDIT_SECONDS);
    }

    #[test]
    fn bad_tariffs_are_refused() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(
            Tariff::new(d("-1"), Money::ZERO, 1, 1, 0),
            Err(TariffError::NegativeRate)
        );
        assert_eq!(
            Tariff::new(d("1"), Money::ZERO, 0, 1, 0),
            Err(TariffError::ZeroIncrement)
        );
        assert_eq!(
            Tariff::new(d("0.00000000001"), Money::ZERO, 1, 1, 0),
            Err(TariffError::RateTooPrecise(MAX_RATE_SCALE))
        );
        assert_eq!(
            Tariff::new(d("1"), Money::from_micros(-1), 1, 1, 0),
            Err(TariffError::NegativeFee)
        );
    }

    fn tariffs() -> impl Strategy<Value = Tariff> {
        (
            // Up to the deck's limit of 10,000 a minute.
            0u64..=10_000_000u64,
            3u32..=8,
            0i64..2_000_000,
            prop::sample::select(vec![1u32, 6, 30, 60]),
            prop::sample::select(vec![1u32, 6, 30, 60]),
            0u32..120,
        )
            .prop_map(|(m, scale, fee, i, n, min)| {
                Tariff::new(
                    Decimal::new(m as i64, scale),
                    Money::from_micros(fee),
                    i,
                    n,
                    min,
                )
                .unwrap()
            })
    }

    proptest! {
        #[test]
        fn credit_time_is_the_exact_inverse_of_cost(tariff in tariffs(), b in 0i64..200_000_000) {
            let b = Money::from_micros(b);
            let ct = tariff.credit_time(b);
            prop_assert!(tariff.cost(ct) <= b, "cost({ct}) = {} > {b}", tariff.cost(ct));
            if ct < MAX_CREDIT_SECONDS {
                let next = tariff.next_boundary(ct);
                prop_assert!(b < tariff.cost(next), "cost({next}) = {} <= {b}", tariff.cost(next));
                prop_assert!(b < tariff.cost(ct + 1));
            }
        }

        #[test]
        fn cost_is_monotone(tariff in tariffs(), s in 0u64..100_000, d in 0u64..1_000) {
            prop_assert!(tariff.cost(s) <= tariff.cost(s + d));
            prop_assert!(tariff.cost(s).micros() >= 0);
        }

        #[test]
        fn credit_time_is_monotone(tariff in tariffs(), b in 0i64..100_000_000, d in 0i64..1_000_000) {
            prop_assert!(tariff.credit_time(Money::from_micros(b)) <= tariff.credit_time(Money::from_micros(b + d)));
        }
    }
}
