//! Audio prompts: reading `.au`/`.wav`, prompt sets per language and "say" composition of
//! amounts and durations. Filled in by the media and prompts issue.
