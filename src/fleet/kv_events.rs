//! What a router fed by the engines' KV events knows when the events arrive late: each
//! replica's GPU prefix cache as the events that have reached the router describe it.
//!
//! vLLM publishes `BlockStored` and `BlockRemoved` events for the blocks a step cached or
//! evicted once the step's output is processed; they reach the router's indexer (llm-d's
//! precise prefix-cache scorer, Dynamo's KV indexer) over ZMQ or NATS some time later
//! (`router_events_delay_ms`). Here a step's events are published at its end and applied to
//! the router's index `delay` after that, in publication order; a router deciding at `t` sees
//! every event applied by `t`. A delay of 0 is not modelled through events at all: the router
//! then reads each replica's cache as it is (see [`super::CacheView::Events`]).

use crate::engine::pool::BlockEvent;
use crate::time::{SimDuration, SimTime};
use crate::util::hashindex::HashIndex;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// An event on its way: (arrival, publication order, replica, block hash, stored).
type InFlight = (SimTime, u64, u32, u64, bool);

/// The router's event-fed index of every replica's GPU prefix cache.
#[derive(Debug)]
pub struct EventIndex {
    delay: SimDuration,
    /// Per replica, the block hashes its events say are cached.
    cached: Vec<HashIndex>,
    /// Events in flight, earliest arrival first.
    pending: BinaryHeap<Reverse<InFlight>>,
    published: u64,
}

impl EventIndex {
    /// An empty index of `replicas` replicas whose events arrive `delay` after publication.
    pub fn new(replicas: usize, delay: SimDuration) -> Self {
        EventIndex {
            delay,
            cached: (0..replicas).map(|_| HashIndex::sparse()).collect(),
            pending: BinaryHeap::new(),
            published: 0,
        }
    }

    /// Replica `r` published `events` at `at` (the end of the step that made them).
    pub fn publish(&mut self, r: usize, at: SimTime, events: &[BlockEvent]) {
        let arrive = at + self.delay;
        for e in events {
            self.published += 1;
            self.pending.push(Reverse((
                arrive,
                self.published,
                r as u32,
                e.hash,
                e.stored,
            )));
        }
    }

    /// Applies every event that has arrived by `now`.
    pub fn deliver(&mut self, now: SimTime) {
        while let Some(Reverse((at, _, r, hash, stored))) = self.pending.peek().copied() {
            if at > now {
                break;
            }
            self.pending.pop();
            let set = &mut self.cached[r as usize];
            if stored {
                set.insert_if_absent(hash, 0);
            } else {
                set.remove_if(hash, 0);
            }
        }
    }

    /// The leading blocks of `hashes` (a prompt's chained block hashes) the router believes
    /// replica `r` caches.
    pub fn hit_blocks(&self, r: usize, hashes: &[u64]) -> usize {
        let set = &self.cached[r];
        hashes.iter().take_while(|h| set.get(**h).is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_the_router_a_delay_after_the_step_that_made_them() {
        let ms = |x: u64| SimTime::from_ns(x * 1_000_000);
        let ev = |hash: u64, stored: bool| BlockEvent { hash, stored };
        let mut idx = EventIndex::new(2, SimDuration::from_ns(20_000_000));
        // Replica 0's step ending at 10 ms cached blocks 1, 2, 3; replica 1's ending at 5 ms
        // cached 1 (published after, arriving first).
        idx.publish(0, ms(10), &[ev(1, true), ev(2, true), ev(3, true)]);
        idx.publish(1, ms(5), &[ev(1, true)]);
        idx.deliver(ms(24));
        assert_eq!(idx.hit_blocks(1, &[1]), 0);
        idx.deliver(ms(25));
        assert_eq!(
            (idx.hit_blocks(0, &[1, 2, 3]), idx.hit_blocks(1, &[1, 2])),
            (0, 1)
        );
        idx.deliver(ms(30));
        assert_eq!(idx.hit_blocks(0, &[1, 2, 3, 4]), 3);
        // Block 2 evicted at 40 ms: the router still counts it until 60 ms; the hit then stops
        // at block 1 (the chain is broken at 2).
        idx.publish(0, ms(40), &[ev(2, false)]);
        idx.deliver(ms(59));
        assert_eq!(idx.hit_blocks(0, &[1, 2, 3]), 3);
        idx.deliver(ms(60));
        assert_eq!(idx.hit_blocks(0, &[1, 2, 3]), 1);
        // Removed and stored again in one step: applied in order, so cached.
        idx.publish(1, ms(70), &[ev(1, false), ev(1, true)]);
        idx.deliver(ms(90));
        assert_eq!(idx.hit_blocks(1, &[1]), 1);
    }
}
