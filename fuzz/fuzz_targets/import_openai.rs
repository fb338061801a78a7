//! Any input to the OpenAI request-log importer is Ok or Err, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvreplay::fuzzing::import_openai(data));
