//! Criterion benches for the API guardrail crates; see `benches/` and the README.
