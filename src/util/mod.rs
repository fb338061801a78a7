//! Small shared pieces: JSON field access, seeded randomness, distributions, percentiles,
//! Parquet writing, all-or-nothing output files.

pub mod atomic;
pub mod contain;
pub mod duration;
pub mod hashindex;
pub mod idhash;
pub mod interrupt;
pub mod json;
pub mod parquet;
pub mod progress;
pub mod rng;
pub mod slab;
pub mod stats;
pub mod time;
