//! IVR flows and their interpreter: the YAML flow model and a pure state machine that turns
//! caller events into prompt, collect and authorize actions. Filled in by the IVR issue.
