//! Any input to the llmperf importer is Ok or Err, never a panic, open or closed loop.
#![no_main]

use kvreplay::trace::import::{Format, fuzz_one};

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_one(Format::Llmperf, data));
