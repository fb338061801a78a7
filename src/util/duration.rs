//! Durations a user types in seconds or milliseconds, checked before they become a
//! `std::time::Duration` (whose `from_secs_f64` panics on a negative, non-finite or huge value).

use std::time::Duration;

/// `secs` seconds as a duration, if it is finite and within `0..=max_secs`; else a message
/// naming `what` and the accepted range.
pub fn checked_secs(what: &str, secs: f64, max_secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && (0.0..=max_secs).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "{what}: expected a number of seconds from 0 to {max_secs}, found {secs}"
        ))
    }
}

/// `ms` milliseconds as a duration, if it is finite and within `0..=max_ms`; else a message
/// naming `what` and the accepted range.
pub fn checked_ms(what: &str, ms: f64, max_ms: f64) -> Result<Duration, String> {
    if ms.is_finite() && (0.0..=max_ms).contains(&ms) {
        Ok(Duration::from_secs_f64(ms / 1e3))
    } else {
        Err(format!(
            "{what}: expected milliseconds from 0 to {max_ms}, found {ms}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_durations_are_errors_not_panics() {
        assert_eq!(
            checked_secs("--timeout-s", 1.5, 86_400.0).unwrap(),
            Duration::from_millis(1500)
        );
        for bad in [-5.0, 1e300, f64::NAN, f64::INFINITY, 86_401.0] {
            let e = checked_secs("--timeout-s", bad, 86_400.0).unwrap_err();
            assert!(e.starts_with("--timeout-s: expected"), "{e}");
            assert!(checked_ms("--rtt", bad * 1e3, 86_400_000.0).is_err());
        }
        assert_eq!(
            checked_ms("--rtt", 20.0, 1e3).unwrap(),
            Duration::from_millis(20)
        );
    }
}
