//! Any input to the multi-turn generator config reader is Ok or Err, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvreplay::fuzzing::multi_turn_config(data));
