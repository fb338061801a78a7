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

/// A fast hasher for small composite keys (tuples of integers): every word written is folded in
/// with a multiply-xor step. Not for untrusted keys; deterministic across runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        crate::trace::content::mix(self.0, 0x2545_f491_4f6c_dd1d)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = crate::trace::content::mix(self.0, *b as u64);
        }
    }
    fn write_u32(&mut self, x: u32) {
        self.0 = crate::trace::content::mix(self.0, x as u64);
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = crate::trace::content::mix(self.0, x);
    }
}

/// A map with [`MixHasher`].
pub type MixMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;
