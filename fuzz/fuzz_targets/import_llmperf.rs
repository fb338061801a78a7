//! Any input to the llmperf importer is Ok or Err, never a panic, open or closed loop.
#![no_main]

use kvreplay::trace::import::{Format, ImportOptions, import_from};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for strict in [false, true] {
        for clients in [None, Some(3)] {
            let opts = ImportOptions {
                strict,
                clients,
                ..Default::default()
            };
            let _ = import_from(Format::Llmperf, &mut &data[..], "fuzz", &opts);
        }
    }
});
