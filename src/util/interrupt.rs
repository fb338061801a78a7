//! Ctrl-C (SIGINT) and SIGTERM for commands that leave state behind while they run (a
//! calibration's keys in the user's Redis, its files on the user's disk): the first signal only
//! sets a flag, which the command polls between measurements, fails with an "interrupted"
//! error, and cleans up on its normal error path; a second signal ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, and `_exit` on the second signal.
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe and ends the process without running anything.
        unsafe { libc::_exit(130) };
    }
}

/// Routes SIGINT and SIGTERM to the flag (for the rest of the process).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` only touches an atomic and calls `_exit`, both async-signal-safe;
        // `signal` with a valid handler pointer has no other precondition.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Whether a signal arrived since [`install`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Err(msg)` once a signal arrived: for loops that stop between measurements.
pub fn check() -> Result<(), String> {
    if interrupted() {
        Err("interrupted (Ctrl-C): stopped and cleaned up".into())
    } else {
        Ok(())
    }
}
