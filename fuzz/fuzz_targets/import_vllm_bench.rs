//! Any input to the vllm_bench importer is Ok or Err, never a panic.
#![no_main]

use kvreplay::trace::import::{Format, fuzz_one};

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_one(Format::VllmBench, data));
