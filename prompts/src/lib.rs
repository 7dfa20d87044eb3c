//! Audio prompts: reading `.au` and `.wav` ([`audio`]), G.711 ([`g711`]), prompt sets per
//! language checked against the catalogue the flows use ([`set`], [`catalogue`]), and the "say"
//! grammar that turns amounts and times into prompt sequences ([`say`]); ITSPs' uploaded sets are
//! checked by [`upload`].

pub mod audio;
pub mod catalogue;
pub mod g711;
pub mod say;
pub mod set;
pub mod upload;
