//! Containment of panics inside a dependency: a crate that panics on malformed input it decodes
//! (the `parquet` crate does on some corrupt pages) must not take kvreplay down with it, nor
//! print a panic message to a user whose file is merely bad. [`upstream`] runs such a call and
//! turns its panic into an error message; panics anywhere else still reach the process's hook
//! (the default one, or a fuzzer's).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a call into a dependency's decoder; a panic inside it becomes `Err` with its
/// message, printed nowhere.
pub fn upstream<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(Cell::get) {
                previous(info)
            }
        }));
    });
    let outer = CONTAINED.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(outer));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_panic_becomes_an_error_and_other_results_pass_through() {
        assert_eq!(upstream(|| 7), Ok(7));
        let r: Result<(), String> = upstream(|| panic!("Decoder for dict should have been set"));
        assert_eq!(r, Err("Decoder for dict should have been set".into()));
        let n = 3;
        let r: Result<(), String> = upstream(|| panic!("page {n} is corrupt"));
        assert_eq!(r, Err("page 3 is corrupt".into()));
    }
}
