//! The authorization rules, without I/O: given what the store read (an account snapshot, the
//! current time, a tariff) decide the return code and how much to reserve. The store runs these
//! between its reads and its conditional writes; the tests run them directly.

use crate::codes::ReturnCode;
use crate::money::Money;
use crate::tariff::Tariff;

/// Longest digit string accepted from a caller or a gateway; longer input is malformed (11).
pub const MAX_INPUT_DIGITS: usize = 32;

/// What a valid card number looks like for this operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPolicy {
    pub min_len: usize,
    pub max_len: usize,
    /// Require a Luhn check digit (cards from `card batch` always carry one).
    pub luhn: bool,
}

impl Default for CardPolicy {
    fn default() -> Self {
        CardPolicy {
            min_len: 4,
            max_len: 20,
            luhn: false,
        }
    }
}

/// Input that is not a digit string at all: non-digits, CR/LF, empty or over-long → 11.
pub fn check_digits(s: &str) -> Result<(), ReturnCode> {
    if s.is_empty() || s.len() > MAX_INPUT_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ReturnCode::InvalidArgument);
    }
    Ok(())
}

/// A calling number may carry a leading `+`; otherwise the same rule as [`check_digits`].
pub fn check_ani(s: &str) -> Result<(), ReturnCode> {
    check_digits(s.strip_prefix('+').unwrap_or(s))
}

/// A card number: malformed → 11; well-formed digits of the wrong length or check digit → 14.
pub fn check_card_number(s: &str, policy: &CardPolicy) -> Result<(), ReturnCode> {
    check_digits(s)?;
    if s.len() < policy.min_len || s.len() > policy.max_len || (policy.luhn && !luhn_valid(s)) {
        return Err(ReturnCode::InvalidCardNumber);
    }
    Ok(())
}

/// The Luhn (mod 10) check used on card numbers.
pub fn luhn_valid(digits: &str) -> bool {
    luhn_sum(digits.bytes().rev(), false).is_multiple_of(10)
}

/// The digit that makes `body` + digit Luhn-valid.
pub fn luhn_check_digit(body: &str) -> char {
    let sum = luhn_sum(body.bytes().rev(), true);
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

fn luhn_sum(rev: impl Iterator<Item = u8>, double_first: bool) -> u32 {
    rev.enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if (i % 2 == 1) != double_first {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum()
}

/// Lifecycle state of a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardStatus {
    Active,
    /// Blocked by staff: user denied (7).
    Blocked,
    /// Locked after too many wrong PINs: retries exceeded (10) until staff unblock it.
    Locked,
}

impl CardStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Active => "active",
            CardStatus::Blocked => "blocked",
            CardStatus::Locked => "locked",
        }
    }

    /// From the stored spelling; anything unknown is treated as blocked (fail closed).
    pub fn parse(s: &str) -> CardStatus {
        match s {
            "active" => CardStatus::Active,
            "locked" => CardStatus::Locked,
            _ => CardStatus::Blocked,
        }
    }
}

/// The parts of an account the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub status: CardStatus,
    /// Milliseconds since the epoch at which the card stops working.
    pub expires_at: Option<i64>,
    pub balance: Money,
    pub reserved: Money,
    pub credit_limit: Money,
    pub active_calls: i64,
    pub max_calls: i64,
}

impl AccountState {
    /// What the caller can still spend: balance plus credit limit, less what running calls hold.
    pub fn available(&self) -> Money {
        Money::from_micros(
            self.balance.micros() + self.credit_limit.micros() - self.reserved.micros(),
        )
    }
}

/// The checks after the PIN: blocked (7), locked (10), expired (5), in use (3), no money (4/6).
pub fn check_account(a: &AccountState, now_ms: i64) -> Result<(), ReturnCode> {
    match a.status {
        CardStatus::Active => {}
        CardStatus::Blocked => return Err(ReturnCode::UserDenied),
        CardStatus::Locked => return Err(ReturnCode::RetriesExceeded),
    }
    if a.expires_at.is_some_and(|e| now_ms >= e) {
        return Err(ReturnCode::CardExpired);
    }
    if a.active_calls >= a.max_calls {
        return Err(ReturnCode::AccountInUse);
    }
    check_funds(a)
}

/// No spendable money: zero balance (4), or the credit limit reached on a card that has one (6).
pub fn check_funds(a: &AccountState) -> Result<(), ReturnCode> {
    if a.available().is_positive() {
        Ok(())
    } else if a.credit_limit.is_positive() {
        Err(ReturnCode::CreditLimit)
    } else {
        Err(ReturnCode::ZeroBalance)
    }
}

/// What a call is granted: the money held, the talk time it covers, and the whole credit time
/// the available balance would buy (the figure announced to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub amount: Money,
    pub granted_seconds: u64,
    pub credit_time: u64,
}

/// The first reservation for a call: a chunk of `chunk_seconds` of talk, or everything that is
/// left when that is less. Insufficient funds (12) when not even the first increment is covered.
pub fn plan_grant(
    available: Money,
    tariff: &Tariff,
    chunk_seconds: u64,
) -> Result<Grant, ReturnCode> {
    let credit_time = tariff.credit_time(available);
    if credit_time == 0 {
        return Err(ReturnCode::InsufficientFunds);
    }
    let granted_seconds = tariff.billed_seconds(chunk_seconds.max(1)).min(credit_time);
    Ok(Grant {
        amount: tariff.cost(granted_seconds),
        granted_seconds,
        credit_time,
    })
}

/// An extension of a running call's reservation by another chunk, given what the account has
/// available besides this call's own reservation. `None` when there is nothing more to grant:
/// the call's cutoff stays at `granted_seconds`.
pub fn plan_extension(
    available: Money,
    tariff: &Tariff,
    held: Money,
    granted_seconds: u64,
    chunk_seconds: u64,
) -> Option<Grant> {
    let budget = available.checked_add(held)?;
    let credit_time = tariff.credit_time(budget);
    let target = tariff
        .billed_seconds(granted_seconds + chunk_seconds.max(1))
        .min(credit_time);
    if target <= granted_seconds {
        return None;
    }
    let total = tariff.cost(target);
    Some(Grant {
        amount: total.checked_sub(held)?,
        granted_seconds: target,
        credit_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn state() -> AccountState {
        AccountState {
            status: CardStatus::Active,
            expires_at: None,
            balance: Money::parse("10", false).unwrap(),
            reserved: Money::ZERO,
            credit_limit: Money::ZERO,
            active_calls: 0,
            max_calls: 1,
        }
    }

    #[test]
    fn digits_and_card_numbers() {
        assert_eq!(check_digits("0000701234"), Ok(()));
        for bad in ["", "12a4", "12\r\n", "１２", &"1".repeat(33), " 12"] {
            assert_eq!(
                check_digits(bad),
                Err(ReturnCode::InvalidArgument),
                "{bad:?}"
            );
        }
        assert_eq!(check_ani("+14085551234"), Ok(()));
        let p = CardPolicy {
            min_len: 6,
            max_len: 10,
            luhn: true,
        };
        assert_eq!(
            check_card_number("79927398713", &p),
            Err(ReturnCode::InvalidCardNumber)
        );
        assert_eq!(
            check_card_number("12345", &p),
            Err(ReturnCode::InvalidCardNumber)
        );
        let body = "123456789";
        let full = format!("{body}{}", luhn_check_digit(body));
        assert_eq!(check_card_number(&full, &p), Ok(()));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert_eq!(
            check_card_number("12x456", &p),
            Err(ReturnCode::InvalidArgument)
        );
    }

    #[test]
    fn account_checks_in_order() {
        let now = 1_000;
        assert_eq!(check_account(&state(), now), Ok(()));
        let mut s = state();
        s.status = CardStatus::Blocked;
        assert_eq!(check_account(&s, now), Err(ReturnCode::UserDenied));
        s.status = CardStatus::Locked;
        assert_eq!(check_account(&s, now), Err(ReturnCode::RetriesExceeded));
        let mut s = state();
        s.expires_at = Some(now);
        assert_eq!(check_account(&s, now), Err(ReturnCode::CardExpired));
        s.expires_at = Some(now + 1);
        assert_eq!(check_account(&s, now), Ok(()));
        let mut s = state();
        s.active_calls = 1;
        assert_eq!(check_account(&s, now), Err(ReturnCode::AccountInUse));
        let mut s = state();
        s.reserved = s.balance;
        assert_eq!(check_account(&s, now), Err(ReturnCode::ZeroBalance));
        s.credit_limit = Money::parse("5", false).unwrap();
        s.balance = Money::parse("-5", true).unwrap();
        s.reserved = Money::ZERO;
        assert_eq!(check_account(&s, now), Err(ReturnCode::CreditLimit));
    }

    #[test]
    fn grants_and_extensions() {
        let tariff = Tariff::new(Decimal::ONE, Money::ZERO, 60, 60, 0).unwrap();
        // 10.00 at 1.00/min: 600 s of credit, a 300 s chunk holds 5.00.
        let g = plan_grant(Money::parse("10", false).unwrap(), &tariff, 300).unwrap();
        assert_eq!(
            (g.granted_seconds, g.credit_time, g.amount),
            (300, 600, Money::parse("5", false).unwrap())
        );
        // Less than a chunk left: everything is granted.
        let g = plan_grant(Money::parse("2.5", false).unwrap(), &tariff, 300).unwrap();
        assert_eq!(
            (g.granted_seconds, g.amount),
            (120, Money::parse("2", false).unwrap())
        );
        assert_eq!(
            plan_grant(Money::parse("0.99", false).unwrap(), &tariff, 300),
            Err(ReturnCode::InsufficientFunds)
        );
        // Extending: 5.00 held, 3.00 more available -> up to 480 s, 3.00 more held.
        let e = plan_extension(
            Money::parse("3", false).unwrap(),
            &tariff,
            Money::parse("5", false).unwrap(),
            300,
            300,
        )
        .unwrap();
        assert_eq!(
            (e.granted_seconds, e.amount),
            (480, Money::parse("3", false).unwrap())
        );
        assert_eq!(
            plan_extension(
                Money::parse("0.5", false).unwrap(),
                &tariff,
                Money::parse("5", false).unwrap(),
                300,
                300
            ),
            None
        );
    }
}
