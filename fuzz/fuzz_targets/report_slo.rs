//! Any input to the report SLO parser is Ok or Err, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvreplay::fuzzing::report_slo(data));
