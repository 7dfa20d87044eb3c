//! Money for the calling-card service: rate decks and their arithmetic, the balance store with
//! reservations and a ledger, and the authorizer that answers with the debit-card return codes.
//!
//! The I/O-free parts (`money`, `tariff`, `deck`, `rules`, `codes`) hold every decision; the
//! `store` runs them against SQLite or PostgreSQL. A newcomer should read `tariff` (what a call
//! costs), then `rules` (who may call), then `store::authorize` (how money is held and settled).

pub mod batch;
pub mod codes;
pub mod deck;
pub mod demo;
pub mod export;
pub mod money;
pub mod pin;
pub mod radius;
pub mod rules;
pub mod store;
pub mod tariff;

pub use codes::ReturnCode;
pub use money::Money;
pub use store::{Store, StoreConfig, StoreError};
pub use tariff::Tariff;
