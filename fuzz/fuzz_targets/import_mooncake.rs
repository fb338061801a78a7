//! Any input to the mooncake importer is Ok or Err, never a panic.
#![no_main]

use kvreplay::trace::import::{Format, ImportOptions, import_from};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for strict in [false, true] {
        let opts = ImportOptions {
            strict,
            ..Default::default()
        };
        let _ = import_from(Format::Mooncake, &mut &data[..], "fuzz", &opts);
    }
});
