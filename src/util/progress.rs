//! Progress on a terminal for work longer than a second: runs, sweeps and plans.
//!
//! Nothing is drawn when standard error is not a terminal (a pipe, a file) or when `CI` is set,
//! and nothing before the work has taken a second, so short commands and logs stay clean. The
//! line is redrawn at most ten times a second and erased when the work ends.
//!
//! A simulation reports how far it has got through [`note_sim_time`] (the simulated time, in a
//! process-wide counter that only this display reads), so that a single long run can show it
//! without the simulator knowing about terminals; sweeps and plans count their points.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The simulated time the latest simulation step reached, ns (written by the simulator, read
/// by the display only; never part of a result).
static SIM_NOW_NS: AtomicU64 = AtomicU64::new(0);

/// Probes a plan has evaluated so far (read by the display only).
static PROBES: AtomicU64 = AtomicU64::new(0);

/// Counts one more probe of a plan's search.
pub fn note_probe() {
    PROBES.fetch_add(1, Ordering::Relaxed);
}

/// Records the simulated time a simulation has reached.
#[inline]
pub fn note_sim_time(ns: u64) {
    SIM_NOW_NS.store(ns, Ordering::Relaxed);
}

/// Whether progress would be drawn here: standard error a terminal and not in CI.
pub fn enabled() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// A progress bar of `done` out of `total` (or a counter when the total is unknown).
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: Option<u64>,
    start: Instant,
    last: Option<Instant>,
    on: bool,
    drawn: bool,
}

/// The bar itself: `label [#####.....] done/total  elapsed`.
pub fn line(label: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    const WIDTH: u64 = 30;
    match total {
        Some(t) if t > 0 => {
            let filled = (done.min(t) * WIDTH / t) as usize;
            format!(
                "{label} [{}{}] {done}/{t}  {:.1} s",
                "#".repeat(filled),
                ".".repeat(WIDTH as usize - filled),
                elapsed.as_secs_f64()
            )
        }
        _ => format!("{label} {done}  {:.1} s", elapsed.as_secs_f64()),
    }
}

impl Progress {
    /// Progress of `label` over `total` items (`None`: not known ahead), drawn where
    /// [`enabled`].
    pub fn new(label: &str, total: Option<u64>) -> Self {
        Self::with(label, total, enabled())
    }

    /// As [`Progress::new`], drawn only when `on`.
    pub fn with(label: &str, total: Option<u64>, on: bool) -> Self {
        Progress {
            label: label.to_string(),
            total,
            start: Instant::now(),
            last: None,
            on,
            drawn: false,
        }
    }

    /// The total, once known.
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    /// `done` items are done.
    pub fn set(&mut self, done: u64) {
        if !self.on || self.start.elapsed() < Duration::from_secs(1) {
            return;
        }
        if self
            .last
            .is_some_and(|l| l.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        let mut e = std::io::stderr();
        let _ = write!(
            e,
            "\r\x1b[2K{}",
            line(&self.label, done, self.total, self.start.elapsed())
        );
        let _ = e.flush();
        self.drawn = true;
    }

    /// Erases the line.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Shows a single simulation's simulated time against `end_ns` (the last arrival), in whole
/// seconds, on a terminal while `work` runs.
pub fn while_simulating<T>(label: &str, end_ns: u64, work: impl FnOnce() -> T) -> T {
    note_sim_time(0);
    let total = end_ns / 1_000_000_000 + 1;
    watch(
        label,
        Some(total),
        || SIM_NOW_NS.load(Ordering::Relaxed) / 1_000_000_000,
        work,
    )
}

/// Shows the probes of a plan's search on a terminal while `work` runs.
pub fn while_planning<T>(label: &str, work: impl FnOnce() -> T) -> T {
    PROBES.store(0, Ordering::Relaxed);
    watch(label, None, || PROBES.load(Ordering::Relaxed), work)
}

/// Runs `work`, drawing `done()` out of `total` from a thread of its own meanwhile.
fn watch<T>(label: &str, total: Option<u64>, done: fn() -> u64, work: impl FnOnce() -> T) -> T {
    if !enabled() {
        return work();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let label = label.to_string();
    let shown = std::thread::spawn(move || {
        let mut p = Progress::new(&label, total);
        while !s.load(Ordering::Relaxed) {
            p.set(done());
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let out = work();
    stop.store(true, Ordering::Relaxed);
    let _ = shown.join();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_in_proportion_and_counts_without_a_total() {
        let l = line("sweep", 15, Some(30), Duration::from_millis(2500));
        assert_eq!(
            l,
            format!("sweep [{}{}] 15/30  2.5 s", "#".repeat(15), ".".repeat(15))
        );
        assert_eq!(
            line("plan", 4, None, Duration::from_secs(3)),
            "plan 4  3.0 s"
        );
        // Past the total it stays full.
        assert!(line("x", 40, Some(30), Duration::ZERO).contains(&"#".repeat(30)));
    }

    #[test]
    fn drawn_only_when_on_and_after_a_second() {
        let mut off = Progress::with("t", Some(3), false);
        off.start -= Duration::from_secs(5);
        off.set(1);
        assert!(!off.drawn);
        let mut early = Progress::with("t", Some(3), true);
        early.set(1);
        assert!(!early.drawn, "under a second: nothing");
        early.start -= Duration::from_secs(2);
        early.set(2);
        assert!(early.drawn);
        early.finish();
        assert!(!early.drawn);
    }
}
