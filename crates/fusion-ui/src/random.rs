//! Random numbers for what must differ between runs of the server and between pages:
//! a turn's epoch, a fork button's request token.

use std::hash::{BuildHasher, RandomState};

/// 64 random bits from the operating system, or, should it refuse them, from the keys
/// std draws for its hash maps (random per process, and different at each call): either
/// way no two runs of the server, and no two calls, share a number.
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => RandomState::new().hash_one(std::process::id()),
    }
}
