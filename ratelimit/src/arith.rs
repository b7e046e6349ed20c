//! Integer helpers shared by both algorithms.

/// `a / b`, in 64 bits when both fit (always, in practice): a 128-bit division is a library
/// call several times slower, and this is the hot path.
pub(crate) fn divide(a: u128, b: u128) -> u128 {
    match (u64::try_from(a), u64::try_from(b)) {
        (Ok(a), Ok(b)) => u128::from(a / b),
        _ => a / b,
    }
}
