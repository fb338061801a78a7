//! Closed-loop clients: pools of clients that take units (sessions, or single requests) from a
//! FIFO queue and send one request at a time, as llmperf, long_doc_qa and vLLM's multi-turn
//! benchmark do (see the trace module's doc for the contract).

use crate::trace::{Pool, Trace};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A unit of work a client takes: the requests of one session, or one request.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Trace indices in sending order.
    pub requests: Vec<u32>,
    /// Next request to send.
    pub next: usize,
    /// Barrier round of the unit.
    pub round: u32,
}

/// One client.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// Active units, served round-robin: taken from the back, returned to the front.
    pub active: VecDeque<usize>,
    /// A request in flight (or waiting for its arrival time).
    pub busy: bool,
    /// Stopped for good.
    pub done: bool,
    /// Waiting for a barrier round to open.
    pub blocked: bool,
}

/// A pool's state.
#[derive(Debug)]
pub struct PoolState {
    /// The pool's definition.
    pub def: Pool,
    /// Units not yet taken, in order.
    pub queue: VecDeque<usize>,
    /// All units.
    pub units: Vec<Unit>,
    /// Clients.
    pub clients: Vec<Client>,
    /// Requests not yet completed per round.
    pub round_left: BTreeMap<u32, u64>,
    /// Early stop triggered.
    pub stopped: bool,
}

/// What a client does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send this request (trace index), not before its arrival time.
    Send(u32),
    /// Nothing to do now (waiting for a barrier, or finished).
    Idle,
}

impl PoolState {
    /// Builds every pool of `trace`, and the map from a request to its (pool, unit).
    pub fn build(trace: &Trace) -> (Vec<PoolState>, HashMap<u32, (usize, usize)>) {
        let mut pools: Vec<PoolState> = trace
            .meta
            .pools
            .iter()
            .map(|p| PoolState {
                def: p.clone(),
                queue: VecDeque::new(),
                units: Vec::new(),
                clients: vec![Client::default(); p.clients as usize],
                round_left: BTreeMap::new(),
                stopped: false,
            })
            .collect();
        let pool_index: HashMap<u32, usize> = trace
            .meta
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id, i))
            .collect();
        let mut session_unit: HashMap<(usize, u64), usize> = HashMap::new();
        let mut where_: HashMap<u32, (usize, usize)> = HashMap::new();
        for (i, r) in trace.requests.iter().enumerate() {
            let Some(pid) = r.pool else { continue };
            let p = pool_index[&pid];
            let ps = &mut pools[p];
            let u = match r.session.and_then(|s| session_unit.get(&(p, s)).copied()) {
                Some(u) => u,
                None => {
                    ps.units.push(Unit {
                        requests: Vec::new(),
                        next: 0,
                        round: r.round,
                    });
                    let u = ps.units.len() - 1;
                    ps.queue.push_back(u);
                    if let Some(s) = r.session {
                        session_unit.insert((p, s), u);
                    }
                    u
                }
            };
            ps.units[u].requests.push(i as u32);
            *ps.round_left.entry(r.round).or_default() += 1;
            where_.insert(i as u32, (p, u));
        }
        (pools, where_)
    }

    fn open_round(&self) -> u32 {
        self.round_left
            .iter()
            .find(|(_, left)| **left > 0)
            .map(|(r, _)| *r)
            .unwrap_or(u32::MAX)
    }

    /// Client `c` is free: picks its next request. Returns the requests abandoned by an early
    /// stop (never sent), if this call triggered one.
    pub fn next_for(&mut self, c: usize) -> (Next, Vec<u32>) {
        let mut abandoned = Vec::new();
        if self.stopped || self.clients[c].done {
            self.clients[c].done = true;
            return (Next::Idle, abandoned);
        }
        let spc = self.def.sessions_per_client.max(1) as usize;
        let open = self.open_round();
        let mut queue_empty = false;
        while self.clients[c].active.len() < spc {
            match self.queue.front() {
                None => {
                    queue_empty = true;
                    break;
                }
                Some(&u) if self.units[u].round > open => break,
                Some(&u) => {
                    self.queue.pop_front();
                    self.clients[c].active.push_back(u);
                }
            }
        }
        if queue_empty && self.def.early_stop {
            // vLLM multi-turn: a client that finds the queue drained exits, and every other
            // client stops after its request in flight.
            self.stopped = true;
            abandoned = self.abandon_all();
            self.clients[c].done = true;
            return (Next::Idle, abandoned);
        }
        match self.clients[c].active.pop_back() {
            Some(u) => {
                let unit = &self.units[u];
                let req = unit.requests[unit.next];
                self.clients[c].busy = true;
                self.clients[c].blocked = false;
                // Keep the unit attached to the client while its request is in flight.
                self.clients[c].active.push_back(u);
                (Next::Send(req), abandoned)
            }
            None => {
                if queue_empty {
                    self.clients[c].done = true;
                } else {
                    self.clients[c].blocked = true;
                }
                (Next::Idle, abandoned)
            }
        }
    }

    /// Request `req` of unit `u` on client `c` completed (or was rejected): advances the unit
    /// and the round counters. Returns the clients to wake because a round opened.
    pub fn completed(&mut self, c: usize, u: usize, round: u32) -> Vec<usize> {
        self.clients[c].busy = false;
        // The unit is at the back of the client's active list (see next_for).
        if let Some(pos) = self.clients[c].active.iter().rposition(|x| *x == u) {
            self.clients[c].active.remove(pos);
        }
        let unit = &mut self.units[u];
        unit.next += 1;
        if unit.next < unit.requests.len() {
            // Round-robin: back to the front of the client's active list.
            self.clients[c].active.push_front(u);
        }
        self.finish_round(round)
    }

    fn finish_round(&mut self, round: u32) -> Vec<usize> {
        let before = self.open_round();
        if let Some(left) = self.round_left.get_mut(&round) {
            *left = left.saturating_sub(1);
        }
        if self.open_round() != before {
            self.clients
                .iter()
                .enumerate()
                .filter(|(_, cl)| cl.blocked && !cl.done)
                .map(|(i, _)| i)
                .collect()
        } else {
            Vec::new()
        }
    }

    /// Marks every request not yet sent as abandoned; returns them.
    fn abandon_all(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        let in_flight: Vec<usize> = self
            .clients
            .iter()
            .filter(|c| c.busy)
            .filter_map(|c| c.active.back().copied())
            .collect();
        for (u, unit) in self.units.iter_mut().enumerate() {
            // The request in flight of a busy client is not abandoned: it completes.
            let start = if in_flight.contains(&u) {
                unit.next + 1
            } else {
                unit.next
            };
            for &r in unit.requests.iter().skip(start) {
                out.push(r);
            }
            unit.next = unit.requests.len();
        }
        for c in self.clients.iter_mut() {
            if !c.busy {
                c.done = true;
            }
        }
        out
    }
}
