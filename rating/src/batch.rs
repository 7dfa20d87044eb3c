//! Cards made in batches for retail sale: random numbers with a Luhn check digit and random
//! PINs, and the CSV that is the only copy of those PINs. Shared by the finance command line
//! and the admin API so that both make the same cards.

use crate::store::NewAccount;
use chrono::{DateTime, Utc};
use rand::Rng;
use std::io::Write;

/// The last day a card works, as typed with `--expires` (empty when it never expires).
pub fn last_day(expires_at: Option<DateTime<Utc>>) -> String {
    expires_at
        .map(|e| {
            (e - chrono::Duration::milliseconds(1))
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default()
}

/// The inverse of [`last_day`]: a card whose last day is `YYYY-MM-DD` works through the end of
/// that day (UTC), so it expires at the next midnight. The error says what is wrong with the
/// text, for the caller to name its field.
pub fn expires_after(last_day: &str) -> Result<DateTime<Utc>, &'static str> {
    let day = chrono::NaiveDate::parse_from_str(last_day, "%Y-%m-%d")
        .map_err(|_| "is not a date (YYYY-MM-DD)")?;
    let next = day.succ_opt().ok_or("is out of range")?;
    Ok(next
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc())
}

/// `count` new cards like `template`, with distinct random numbers of `digits` digits (the
/// last a Luhn check digit) and random PINs of `pin_digits` digits.
pub fn draw_cards(
    count: usize,
    digits: usize,
    pin_digits: usize,
    template: &NewAccount,
) -> Vec<NewAccount> {
    let mut rng = rand::rng();
    let mut draw = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect()
    };
    let mut seen = std::collections::HashSet::new();
    let mut cards = Vec::with_capacity(count);
    while cards.len() < count {
        let body = draw(digits - 1);
        let number = format!("{body}{}", crate::rules::luhn_check_digit(&body));
        if !seen.insert(number.clone()) {
            continue;
        }
        let mut n = template.clone();
        n.account = number;
        n.pin = Some(draw(pin_digits));
        cards.push(n);
    }
    cards
}

/// A batch's CSV (`account,pin,balance,currency,expires`): the only copy of its PINs.
pub fn write_batch_csv(out: impl Write, cards: &[NewAccount]) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["account", "pin", "balance", "currency", "expires"])?;
    for c in cards {
        w.write_record([
            crate::export::cell(&c.account).as_ref(),
            c.pin.as_deref().unwrap_or(""),
            &c.balance.to_string(),
            &crate::export::cell(&c.currency),
            &last_day(c.expires_at),
        ])?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Money;

    #[test]
    fn cards_are_distinct_luhn_valid_and_written_with_their_pins() {
        let t = NewAccount::new("", None, Money::parse("5", false).unwrap());
        let cards = draw_cards(200, 8, 4, &t);
        let numbers: std::collections::HashSet<_> = cards.iter().map(|c| &c.account).collect();
        assert_eq!(numbers.len(), 200);
        for c in &cards {
            assert_eq!(c.account.len(), 8);
            let (body, check) = c.account.split_at(7);
            assert_eq!(crate::rules::luhn_check_digit(body).to_string(), check);
            assert_eq!(c.pin.as_ref().unwrap().len(), 4);
        }
        let end = expires_after("2027-12-31").unwrap();
        assert_eq!(end.to_rfc3339(), "2028-01-01T00:00:00+00:00");
        assert_eq!(last_day(Some(end)), "2027-12-31");
        assert!(expires_after("31/12/2027").is_err());
        assert_eq!(expires_after("+262142-12-31"), Err("is out of range"));
        let mut out = Vec::new();
        write_batch_csv(&mut out, &cards[..1]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "account,pin,balance,currency,expires\n{},{},5.00,USD,\n",
                cards[0].account,
                cards[0].pin.as_ref().unwrap()
            )
        );
    }
}
