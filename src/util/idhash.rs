//! A hasher for keys that already are well-mixed 64-bit hashes (block and chunk keys): hashing
//! them again would only cost time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Passes a u64 key through unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are expected; fold anything else in deterministically.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// A map from pre-hashed u64 keys.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
