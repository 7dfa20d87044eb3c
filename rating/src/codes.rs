//! The debit-card return codes (Cisco "Prepaid Services", Table 7). Every authorization answers
//! with one of these; the IVR branches on them and RADIUS carries them as `h323-return-code`.

use std::fmt;

/// An authorization answer code. The numeric values are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReturnCode {
    Success = 0,
    InvalidAccount = 1,
    InvalidPin = 2,
    AccountInUse = 3,
    ZeroBalance = 4,
    CardExpired = 5,
    CreditLimit = 6,
    UserDenied = 7,
    ServiceNotAvailable = 8,
    CalledNumberBlocked = 9,
    RetriesExceeded = 10,
    InvalidArgument = 11,
    InsufficientFunds = 12,
    TollFreeOnly = 13,
    InvalidCardNumber = 14,
    RedirectHairpin = 50,
    RedirectCalledParty = 51,
    RedirectCustomerService = 52,
    RedirectIp = 53,
}

impl ReturnCode {
    /// Every code, in numeric order.
    pub const ALL: [ReturnCode; 19] = [
        ReturnCode::Success,
        ReturnCode::InvalidAccount,
        ReturnCode::InvalidPin,
        ReturnCode::AccountInUse,
        ReturnCode::ZeroBalance,
        ReturnCode::CardExpired,
        ReturnCode::CreditLimit,
        ReturnCode::UserDenied,
        ReturnCode::ServiceNotAvailable,
        ReturnCode::CalledNumberBlocked,
        ReturnCode::RetriesExceeded,
        ReturnCode::InvalidArgument,
        ReturnCode::InsufficientFunds,
        ReturnCode::TollFreeOnly,
        ReturnCode::InvalidCardNumber,
        ReturnCode::RedirectHairpin,
        ReturnCode::RedirectCalledParty,
        ReturnCode::RedirectCustomerService,
        ReturnCode::RedirectIp,
    ];

    /// The wire value.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The code for a wire value, if it is one of Table 7's.
    pub fn from_code(code: u8) -> Option<ReturnCode> {
        ReturnCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether the caller may go on (success, or the toll-free answer that still connects).
    pub fn is_success(self) -> bool {
        self == ReturnCode::Success
    }

    /// Table 7's wording.
    pub fn meaning(self) -> &'static str {
        match self {
            ReturnCode::Success => "success, proceed",
            ReturnCode::InvalidAccount => "invalid account number",
            ReturnCode::InvalidPin => "invalid password",
            ReturnCode::AccountInUse => "account in use",
            ReturnCode::ZeroBalance => "zero balance",
            ReturnCode::CardExpired => "card expired",
            ReturnCode::CreditLimit => "credit limit",
            ReturnCode::UserDenied => "user denied",
            ReturnCode::ServiceNotAvailable => "service not available",
            ReturnCode::CalledNumberBlocked => "called number blocked",
            ReturnCode::RetriesExceeded => "number of retries exceeded",
            ReturnCode::InvalidArgument => "invalid argument",
            ReturnCode::InsufficientFunds => "insufficient funds",
            ReturnCode::TollFreeOnly => "toll-free calls only",
            ReturnCode::InvalidCardNumber => "invalid card number",
            ReturnCode::RedirectHairpin => "redirect: hairpin back to PSTN",
            ReturnCode::RedirectCalledParty => "redirect to called party",
            ReturnCode::RedirectCustomerService => "redirect to customer service",
            ReturnCode::RedirectIp => "connect IP leg to redirect IP address",
        }
    }
}

impl fmt::Display for ReturnCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.meaning())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip() {
        for c in ReturnCode::ALL {
            assert_eq!(ReturnCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ReturnCode::from_code(15), None);
        assert_eq!(ReturnCode::InsufficientFunds.code(), 12);
        assert_eq!(ReturnCode::RedirectIp.code(), 53);
    }
}
