//! The load signals a router reads, as stale as the real ones: every replica's waiting and
//! running requests and GPU KV usage, as they stood at the last refresh instant (a multiple of
//! the refresh interval). vLLM's data-parallel coordinator republishes at most every 100 ms and
//! llm-d scrapes every 50 ms; an interval of 0 gives the router the present.

use crate::time::{SimDuration, SimTime};
use std::collections::VecDeque;

/// A replica's load, as a router sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Requests waiting in its scheduler.
    pub waiting: u32,
    /// Requests in its running batch.
    pub running: u32,
    /// Fraction of its GPU KV blocks in use.
    pub kv_usage: f64,
}

/// Each replica's load over time, read back as of the last refresh instant.
#[derive(Debug, Clone)]
pub struct LoadSignals {
    interval: SimDuration,
    /// Per replica, (from when, load) in time order; the first entry is in force at the last
    /// instant read.
    logs: Vec<VecDeque<(SimTime, Load)>>,
}

impl LoadSignals {
    /// `replicas` idle replicas whose signals refresh every `interval`.
    pub fn new(replicas: usize, interval: SimDuration) -> Self {
        let idle = VecDeque::from([(SimTime::ZERO, Load::default())]);
        LoadSignals {
            interval,
            logs: vec![idle; replicas],
        }
    }

    /// Replica `r`'s load is `load` from `at` on (`at` never decreases).
    pub fn record(&mut self, r: usize, at: SimTime, load: Load) {
        let log = &mut self.logs[r];
        match log.back_mut() {
            Some(last) if last.0 == at => last.1 = load,
            Some(last) if last.1 == load => {}
            _ => log.push_back((at, load)),
        }
    }

    /// The refresh instant a router deciding at `now` sees (`now` itself with no interval).
    pub fn refreshed_at(&self, now: SimTime) -> SimTime {
        match self.interval.as_ns() {
            0 => now,
            i => SimTime::from_ns(now.as_ns() / i * i),
        }
    }

    /// Replica `r`'s load as a router deciding at `now` sees it: as it stood at the last refresh
    /// instant at or before `now` (`now` never decreases).
    pub fn seen(&mut self, r: usize, now: SimTime) -> Load {
        let at = self.refreshed_at(now);
        let log = &mut self.logs[r];
        // Entries wholly before `at` are gone for good: later reads are at `at` or later.
        while log.len() > 1 && log[1].0 <= at {
            log.pop_front();
        }
        log[0].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(waiting: u32) -> Load {
        Load {
            waiting,
            ..Load::default()
        }
    }

    #[test]
    fn a_router_sees_the_load_of_the_last_refresh_instant() {
        let ms = |x: u64| SimTime::from_ns(x * 1_000_000);
        let mut s = LoadSignals::new(2, SimDuration::from_ns(100_000_000));
        s.record(0, ms(30), load(1));
        s.record(0, ms(130), load(2));
        s.record(0, ms(160), load(3));
        // At 99 ms the last refresh was at 0: idle. From 100 ms: 1 waiting; from 200 ms: 3.
        assert_eq!(s.seen(0, ms(99)).waiting, 0);
        assert_eq!(s.seen(0, ms(150)).waiting, 1);
        assert_eq!(s.seen(0, ms(199)).waiting, 1);
        assert_eq!(s.seen(0, ms(200)).waiting, 3);
        assert_eq!(s.seen(1, ms(200)).waiting, 0);
        // With no interval the router sees the present.
        let mut now = LoadSignals::new(1, SimDuration::ZERO);
        now.record(0, ms(30), load(1));
        assert_eq!(now.seen(0, ms(29)).waiting, 0);
        assert_eq!(now.seen(0, ms(30)).waiting, 1);
    }
}
