//! Simulated time: instants ([`SimTime`]) and spans ([`SimDuration`]) in integer nanoseconds.
//!
//! The event clock is integral so that the same inputs give the same event order on every
//! machine. Costs (step and transfer times) are computed in continuous seconds by `cost` and
//! become a [`SimDuration`] once, when they enter the clock ([`SimDuration::from_secs_f64`]): a
//! step whose parts (lookup, load, forward pass, store) add up in seconds is rounded once, not
//! once per part. Seconds appear again only at the edges (records, summaries, reports).
//!
//! Arithmetic saturates instead of wrapping: an instant past `u64::MAX` ns (585 years) stays at
//! the end of time rather than coming back as an early one.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub};

/// An instant of the simulation, nanoseconds from the trace's time origin.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SimTime(u64);

/// A span of simulated time, nanoseconds.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SimDuration(u64);

/// A cost in continuous seconds (what a step or a transfer takes), before it enters the clock.
/// Parts of one step add up as `Seconds` and are rounded to a [`SimDuration`] once.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

impl Seconds {
    /// No time.
    pub const ZERO: Seconds = Seconds(0.0);

    /// The cost as a clock span, rounded to the nearest nanosecond.
    pub fn to_duration(self) -> SimDuration {
        SimDuration::from_secs_f64(self.0)
    }
}

impl Add for Seconds {
    type Output = Seconds;
    fn add(self, o: Seconds) -> Seconds {
        Seconds(self.0 + o.0)
    }
}

impl AddAssign for Seconds {
    fn add_assign(&mut self, o: Seconds) {
        self.0 += o.0;
    }
}

impl Sum for Seconds {
    fn sum<I: Iterator<Item = Seconds>>(it: I) -> Seconds {
        it.fold(Seconds::ZERO, |a, b| a + b)
    }
}

impl SimTime {
    /// The time origin.
    pub const ZERO: SimTime = SimTime(0);
    /// The end of time: never reached by an event that can happen.
    pub const MAX: SimTime = SimTime(u64::MAX);

    /// The instant `ns` nanoseconds after the origin (a trace's `arrival_ns`).
    pub const fn from_ns(ns: u64) -> Self {
        SimTime(ns)
    }

    /// Nanoseconds since the origin.
    pub const fn as_ns(self) -> u64 {
        self.0
    }

    /// Seconds since the origin (for records and reports).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// The span from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: SimTime) -> SimDuration {
        SimDuration(self.0.saturating_sub(earlier.0))
    }
}

impl SimDuration {
    /// No time.
    pub const ZERO: SimDuration = SimDuration(0);

    /// A span of `ns` nanoseconds.
    pub const fn from_ns(ns: u64) -> Self {
        SimDuration(ns)
    }

    /// Seconds (a cost) rounded to the nearest nanosecond; negative and NaN become zero,
    /// spans past `u64::MAX` ns saturate.
    pub fn from_secs_f64(s: f64) -> Self {
        SimDuration((s * 1e9).round().max(0.0) as u64)
    }

    /// Nanoseconds.
    pub const fn as_ns(self) -> u64 {
        self.0
    }

    /// Seconds (for records and reports).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// `self * n`, saturating.
    pub fn times(self, n: u64) -> SimDuration {
        SimDuration(self.0.saturating_mul(n))
    }
}

impl Add<SimDuration> for SimTime {
    type Output = SimTime;
    fn add(self, d: SimDuration) -> SimTime {
        SimTime(self.0.saturating_add(d.0))
    }
}

impl AddAssign<SimDuration> for SimTime {
    fn add_assign(&mut self, d: SimDuration) {
        *self = *self + d;
    }
}

impl Add for SimDuration {
    type Output = SimDuration;
    fn add(self, d: SimDuration) -> SimDuration {
        SimDuration(self.0.saturating_add(d.0))
    }
}

impl AddAssign for SimDuration {
    fn add_assign(&mut self, d: SimDuration) {
        *self = *self + d;
    }
}

impl Sub for SimTime {
    type Output = SimDuration;
    /// The span from `earlier` to `self`, which must not be later: callers subtract only
    /// instants they know to be ordered (the event queue refuses the past), so this is a plain
    /// subtraction, checked in debug builds; [`SimTime::since`] saturates instead.
    fn sub(self, earlier: SimTime) -> SimDuration {
        debug_assert!(earlier <= self, "{earlier} is after {self}");
        SimDuration(self.0.wrapping_sub(earlier.0))
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={:.9} s", self.as_secs_f64())
    }
}

impl fmt::Display for SimDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.9} s", self.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_to_the_nearest_nanosecond_once() {
        assert_eq!(SimDuration::from_secs_f64(1.5e-9).as_ns(), 2);
        assert_eq!(SimDuration::from_secs_f64(1.4e-9).as_ns(), 1);
        assert_eq!(SimDuration::from_secs_f64(-3.0), SimDuration::ZERO);
        assert_eq!(SimDuration::from_secs_f64(f64::NAN), SimDuration::ZERO);
        // Parts added in seconds then rounded differ from parts rounded one by one.
        let parts = [0.4e-9, 0.4e-9, 0.4e-9];
        let once = SimDuration::from_secs_f64(parts.iter().sum());
        let each = parts
            .iter()
            .fold(SimDuration::ZERO, |a, s| a + SimDuration::from_secs_f64(*s));
        assert_eq!((once.as_ns(), each.as_ns()), (1, 0));
    }

    #[test]
    fn arithmetic_saturates_at_the_end_of_time() {
        let t = SimTime::from_ns(u64::MAX - 5);
        assert_eq!(t + SimDuration::from_ns(10), SimTime::MAX);
        assert_eq!(SimDuration::from_secs_f64(1e300).as_ns(), u64::MAX);
        assert_eq!(
            SimTime::from_ns(3).since(SimTime::from_ns(7)),
            SimDuration::ZERO
        );
        assert_eq!(
            SimTime::from_ns(7) - SimTime::from_ns(3),
            SimDuration::from_ns(4)
        );
        assert_eq!(
            SimDuration::from_ns(u64::MAX / 2).times(3).as_ns(),
            u64::MAX
        );
    }
}
