//! Any input to the canonical Parquet trace reader is Ok or Err, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvreplay::fuzzing::trace_parquet(data));
