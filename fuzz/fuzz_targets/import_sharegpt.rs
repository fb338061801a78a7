//! Any input to the ShareGPT importer is Ok or Err, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvreplay::fuzzing::import_sharegpt(data));
