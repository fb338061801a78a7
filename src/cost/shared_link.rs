//! A data path several users share fairly: a remote store's data path, which every replica's
//! gets and puts go through (Redis interleaves the replies of its clients as their sockets
//! drain), and a prefill replica's link, which every transfer leaving it goes through.
//!
//! Operations belong to classes (a replica's connection to the store; one transfer on a
//! link). The path serves its classes by processor sharing: while `k` classes have an
//! operation under way, each moves at `1/k` of the path's rate; within a class, operations go
//! one after another in the order of their start times (a connection answers in order). So
//! two classes starting equal work at once both finish after twice the time one alone takes,
//! and a class that joins late slows the ones already under way from then on.
//!
//! An operation's completion depends on the work that joins after it; [`SharedLink::finish`]
//! projects it from the work known so far (it can only move later as more work joins), and
//! the path's users check again when the projected time comes. Work is submitted with a start
//! at or after the time the path has been advanced to (the simulation never submits into its
//! past), so an advance settles what it passes for good.

use crate::time::{SimDuration, SimTime};
use std::collections::VecDeque;

/// Identifies one operation on a [`SharedLink`].
pub type OpId = u64;

/// Work left below this (ns at the full rate) is done: rounding of shared rates.
const DONE_EPS: f64 = 1e-3;

#[derive(Debug, Clone)]
struct Op {
    id: OpId,
    start: SimTime,
    /// Service left, ns at the path's full rate.
    left: f64,
}

#[derive(Debug, Clone)]
struct Class {
    key: u64,
    /// Its unfinished operations by start time (ties: submission order).
    ops: VecDeque<Op>,
}

/// A data path shared by processor sharing across classes, FIFO within each (module doc).
#[derive(Debug, Clone, Default)]
pub struct SharedLink {
    /// The time up to which service has been given.
    clock: SimTime,
    /// Classes with unfinished operations.
    classes: Vec<Class>,
    next_id: OpId,
}

impl SharedLink {
    /// An idle path.
    pub fn new() -> Self {
        Self::default()
    }

    /// Submits `work` (its time at the path's full rate) for class `key`, starting at `start`
    /// (no earlier than the time the path was last advanced to; an earlier start counts from
    /// then).
    pub fn submit(&mut self, key: u64, start: SimTime, work: SimDuration) -> OpId {
        let id = self.next_id;
        self.next_id += 1;
        let op = Op {
            id,
            start: start.max(self.clock),
            left: work.as_ns() as f64,
        };
        let i = match self.classes.iter().position(|c| c.key == key) {
            Some(i) => i,
            None => {
                self.classes.push(Class {
                    key,
                    ops: VecDeque::new(),
                });
                self.classes.len() - 1
            }
        };
        let ops = &mut self.classes[i].ops;
        let at = ops
            .iter()
            .rposition(|o| o.start <= op.start)
            .map_or(0, |p| p + 1);
        ops.insert(at, op);
        id
    }

    /// Gives service up to `to`, telling `done` each operation that completes (with its
    /// class and time), in completion order.
    pub fn advance(&mut self, to: SimTime, mut done: impl FnMut(u64, OpId, SimTime)) {
        self.run(Some(to), |k, id, t| {
            done(k, id, t);
            false
        });
    }

    /// When operation `id` completes if no more work joins (a projection: later work can only
    /// move it later); `None` when the path no longer holds it (an advance completed it).
    pub fn finish(&self, id: OpId) -> Option<SimTime> {
        if !self
            .classes
            .iter()
            .any(|c| c.ops.iter().any(|o| o.id == id))
        {
            return None;
        }
        let mut at = None;
        self.clone().run(None, |_, i, t| {
            if i == id {
                at = Some(t);
            }
            i == id
        });
        at
    }

    /// Every unfinished operation's projected completion (class, operation, time), if no more
    /// work joins, in completion order.
    pub fn projected(&self) -> Vec<(u64, OpId, SimTime)> {
        let mut out = Vec::new();
        self.clone().run(None, |k, id, t| {
            out.push((k, id, t));
            false
        });
        out
    }

    /// Whether no operation is unfinished.
    pub fn is_idle(&self) -> bool {
        self.classes.is_empty()
    }

    /// Serves until `to` (`None`: until every operation completed), or until `done` returns
    /// true.
    fn run(&mut self, to: Option<SimTime>, mut done: impl FnMut(u64, OpId, SimTime) -> bool) {
        loop {
            let clock = self.clock;
            let mut active = 0u64;
            let mut min_left = f64::INFINITY;
            let mut next_start: Option<SimTime> = None;
            for c in &self.classes {
                let front = &c.ops[0];
                if front.start <= clock {
                    active += 1;
                    min_left = min_left.min(front.left);
                } else {
                    next_start = Some(next_start.map_or(front.start, |s| s.min(front.start)));
                }
            }
            let finishing = (active > 0)
                .then(|| clock + SimDuration::from_ns((min_left * active as f64).ceil() as u64));
            let next = match (finishing, next_start) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => {
                        if let Some(t) = to {
                            self.clock = self.clock.max(t);
                        }
                        return;
                    }
                },
            };
            let stop = to.is_some_and(|t| next > t);
            let until = if stop { to.unwrap_or(next) } else { next };
            if active > 0 {
                let served = (until - clock).as_ns() as f64 / active as f64;
                for c in &mut self.classes {
                    let front = &mut c.ops[0];
                    if front.start <= clock {
                        front.left -= served;
                    }
                }
            }
            self.clock = until;
            if stop {
                return;
            }
            let mut halt = false;
            for c in &mut self.classes {
                if c.ops[0].start <= clock && c.ops[0].left <= DONE_EPS {
                    let op = c.ops.pop_front().expect("front exists");
                    halt |= done(c.key, op.id, until);
                    // The class's next operation, if it has started, carries on at once.
                }
            }
            self.classes.retain(|c| !c.ops.is_empty());
            if halt {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn at(ms: u64) -> SimTime {
        SimTime::from_ns(ms * MS)
    }

    fn ms(m: u64) -> SimDuration {
        SimDuration::from_ns(m * MS)
    }

    #[test]
    fn alone_an_operation_takes_its_work() {
        let mut l = SharedLink::new();
        let a = l.submit(0, at(5), ms(40));
        assert_eq!(l.finish(a), Some(at(45)));
        let mut seen = Vec::new();
        l.advance(at(100), |k, id, t| seen.push((k, id, t)));
        assert_eq!(seen, vec![(0, a, at(45))]);
        assert!(l.is_idle());
        assert_eq!(l.finish(a), None, "completed in an earlier advance");
    }

    #[test]
    fn two_classes_at_once_each_take_twice_as_long() {
        let mut l = SharedLink::new();
        let a = l.submit(1, at(0), ms(40));
        let b = l.submit(2, at(0), ms(40));
        assert_eq!((l.finish(a), l.finish(b)), (Some(at(80)), Some(at(80))));
        // A third, half as much work: all three at 1/3 until it is done at 60 ms (20 ms of
        // work each), then the others at 1/2: their 20 ms left take 40 ms more.
        let c = l.submit(3, at(0), ms(20));
        let p = l.projected();
        assert_eq!(p, vec![(3, c, at(60)), (1, a, at(100)), (2, b, at(100))]);
    }

    #[test]
    fn a_late_class_slows_the_others_from_when_it_joins() {
        // A alone from 0 moves 10 ms of its 40 by 10 ms; B joins then with 10 ms: both at half
        // rate, B done at 30 ms (A has moved 10 more: 20 left), A alone again: done at 50.
        let mut l = SharedLink::new();
        let a = l.submit(1, at(0), ms(40));
        assert_eq!(l.finish(a), Some(at(40)), "projected before B joins");
        l.advance(at(10), |_, _, _| panic!("nothing completes by 10 ms"));
        let b = l.submit(2, at(10), ms(10));
        assert_eq!(l.finish(b), Some(at(30)));
        assert_eq!(l.finish(a), Some(at(50)), "A's projection moved later");
    }

    #[test]
    fn one_class_goes_in_order_of_start() {
        // Class 1 submits a later-starting op first: the earlier one is served first, and an
        // op starting in the future waits for its start.
        let mut l = SharedLink::new();
        let late = l.submit(1, at(100), ms(10));
        let early = l.submit(1, at(0), ms(10));
        let p = l.projected();
        assert_eq!(p, vec![(1, early, at(10)), (1, late, at(110))]);
        // Same start: submission order.
        let mut l = SharedLink::new();
        let x = l.submit(1, at(0), ms(10));
        let y = l.submit(1, at(0), ms(10));
        assert_eq!(l.projected(), vec![(1, x, at(10)), (1, y, at(20))]);
    }

    #[test]
    fn advancing_part_way_keeps_the_shares() {
        // Advancing to 30 ms in steps gives what one advance gives.
        let mut l = SharedLink::new();
        let a = l.submit(1, at(0), ms(40));
        let b = l.submit(2, at(0), ms(40));
        let mut done = Vec::new();
        for t in [7, 13, 30, 79] {
            l.advance(at(t), |_, id, t| done.push((id, t)));
        }
        assert!(done.is_empty());
        assert_eq!((l.finish(a), l.finish(b)), (Some(at(80)), Some(at(80))));
        l.advance(at(80), |_, id, t| done.push((id, t)));
        assert_eq!(done, vec![(a, at(80)), (b, at(80))]);
    }
}
