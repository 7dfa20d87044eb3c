//! PIN hashing. PINs are four to a dozen digits, so no hash survives an attacker who holds both
//! the database and the site key; what hashing buys is that PINs never sit in clear in the
//! database, its backups or an export. A keyed HMAC-SHA-256 with a per-card salt is used rather
//! than a slow password hash because every authorization (thousands a second) checks a PIN.
//! The comparison is constant-time so response timing does not leak how much of a guess matched.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The hex digest stored for `pin` on a card with `salt`, under the site key.
pub fn hash_pin(site_key: &[u8], salt: &str, pin: &str) -> String {
    hex::encode(digest(site_key, salt, pin))
}

fn digest(site_key: &[u8], salt: &str, pin: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(site_key).expect("HMAC accepts any key length");
    mac.update(salt.as_bytes());
    mac.update(b"\0");
    mac.update(pin.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether `pin` matches the stored hex digest, compared in constant time.
pub fn verify_pin(site_key: &[u8], salt: &str, pin: &str, stored_hex: &str) -> bool {
    let Ok(stored) = hex::decode(stored_hex) else {
        return false;
    };
    let actual = digest(site_key, salt, pin);
    stored.len() == actual.len() && bool::from(actual.ct_eq(&stored[..]))
}

/// A fresh random salt (16 bytes, hex).
pub fn new_salt() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_pin() {
        let salt = new_salt();
        let h = hash_pin(b"key", &salt, "1234");
        assert!(verify_pin(b"key", &salt, "1234", &h));
        assert!(!verify_pin(b"key", &salt, "1235", &h));
        assert!(!verify_pin(b"other", &salt, "1234", &h));
        assert!(!verify_pin(b"key", "salt2", "1234", &h));
        assert!(!verify_pin(b"key", &salt, "1234", "not hex"));
        assert_ne!(hash_pin(b"key", &new_salt(), "1234"), h);
    }
}
