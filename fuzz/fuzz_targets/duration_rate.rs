//! Any input to the duration and rate parsers is Ok or Err, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvreplay::fuzzing::duration_rate(data));
