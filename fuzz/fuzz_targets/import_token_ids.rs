//! Any input to the token-id request-log importer is Ok or Err, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvreplay::fuzzing::import_token_ids(data));
