//! Any input to the model config.json reader is Ok or Err, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvreplay::fuzzing::model_card(data));
