//! An engine's client of its remote store, as LMCache's remote connectors drive it: the
//! connections its operations share, the order they take them in, and what a TCP stream can
//! move per round trip.
//!
//! LMCache runs every remote operation of an engine on one event loop. How they share the store
//! depends on the connector:
//! - [`Connections::Serial`]: one connection, every operation in the order it was submitted.
//!   `lm://` (one socket under one lock; the server answers a connection's requests in order)
//!   and the early synchronous Redis client (blocking calls inside the loop's coroutines). An
//!   asynchronous put occupies the connection until its bytes are through and its replies are
//!   back, so a lookup or a get submitted meanwhile waits for it.
//! - [`Connections::Pool`]: `concurrency` operations at once (the `redis.asyncio` client behind
//!   LMCache's 4-worker priority executor), existence checks and gets taken ahead of puts not
//!   yet started; a running put is never pre-empted, so a lookup waits only when every worker
//!   is busy.
//!
//! An operation is its round trips (each `rtt + remote_op_us`; a Redis get is two, one for the
//! metadata key and one for the data) plus its bytes. The bytes of every connection go through
//! the engine's link to the store in turn, at `remote_gbps`; on its own connection a transfer
//! moves at most one TCP window per round trip, so at large RTT a chunk of `k` windows takes
//! `k - 1` round trips beyond its request's own (the bandwidth-delay limit), whatever the link's
//! rate. Slow start after an idle connection is not modelled (a stream is taken at its full
//! window).
//!
//! A put becomes visible when its last reply is back; [`RemoteClient::advance`] starts the puts
//! due before a time and reports when each completes.

use crate::time::{SimDuration, SimTime};
use serde::Serialize;
use std::collections::VecDeque;

/// How an engine's remote operations share its connections to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Connections {
    /// One connection; operations in submission order.
    Serial,
    /// `concurrency` operations at once; lookups and gets ahead of queued puts.
    Pool,
}

impl Connections {
    /// The mode a key names (`serial`, `pool`).
    pub fn from_name(name: &str) -> Option<Connections> {
        match name {
            "serial" => Some(Connections::Serial),
            "pool" => Some(Connections::Pool),
            _ => None,
        }
    }

    /// Its name in keys and reports.
    pub fn name(self) -> &'static str {
        match self {
            Connections::Serial => "serial",
            Connections::Pool => "pool",
        }
    }
}

/// The TCP window a stream to the store gets by default, bytes: Linux's default ceiling of a
/// socket's receive buffer (`net.ipv4.tcp_rmem` max, 6 MiB), of which half is advertised
/// (`tcp_adv_win_scale = 1`).
pub const DEFAULT_WINDOW_BYTES: u64 = 3 << 20;

/// What one remote operation costs on a connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkCost {
    /// Round-trip time to the store, seconds.
    pub rtt_s: f64,
    /// The store's time per request, seconds.
    pub op_s: f64,
    /// The link's rate, bytes per second.
    pub bytes_per_s: f64,
    /// The TCP window of one connection, bytes.
    pub window_bytes: u64,
}

impl LinkCost {
    /// Seconds `bytes` take on one connection alone, beyond the round trip that carries them:
    /// the link's rate, or, when the window is the limit, a round trip for every window after
    /// the first (the first goes with the request; each next one once the previous one's
    /// acknowledgement is back).
    pub fn stream_s(&self, bytes: u64) -> f64 {
        let link = bytes as f64 / self.bytes_per_s;
        let windows = bytes.div_ceil(self.window_bytes.max(1));
        link.max(windows.saturating_sub(1) as f64 * self.rtt_s)
    }

    /// Seconds of `round_trips` sequential requests.
    pub fn round_trips_s(&self, round_trips: u32) -> f64 {
        round_trips as f64 * (self.rtt_s + self.op_s)
    }
}

/// Blocking work the scheduler charges at one instant, one after another (a step's lookups, a
/// step's retrieves): the engine adds their times up, so each must start where the previous
/// one ended, not at the instant itself.
#[derive(Debug, Clone, Copy)]
pub struct InTurn {
    at: SimTime,
    busy: SimTime,
}

impl Default for InTurn {
    fn default() -> Self {
        InTurn {
            at: SimTime::MAX,
            busy: SimTime::MAX,
        }
    }
}

impl InTurn {
    /// When the next piece of work charged at instant `now` starts.
    pub fn start(&mut self, now: SimTime) -> SimTime {
        if self.at != now {
            *self = InTurn { at: now, busy: now };
        }
        self.busy
    }

    /// The piece started last ends at `end`.
    pub fn done(&mut self, end: SimTime) {
        self.busy = end;
    }
}

/// A put submitted but not yet started.
#[derive(Debug, Clone, Copy)]
struct QueuedPut {
    key: u64,
    ready: SimTime,
    bytes: u64,
    round_trips: u32,
}

/// One engine's connections to its remote store.
#[derive(Debug, Clone)]
pub struct RemoteClient {
    mode: Connections,
    cost: LinkCost,
    /// When each connection (worker) is next free.
    lanes: Vec<SimTime>,
    /// When the link has moved every byte given to it so far.
    link_free: SimTime,
    queue: VecDeque<QueuedPut>,
    /// The scheduling instant of the latest operation, and the connections as they were before
    /// anything submitted at that instant: a step's lookups all come before its retrieves
    /// (vLLM schedules, then the worker loads), so they wait only for what ran before the step.
    instant: SimTime,
    before: Vec<SimTime>,
}

impl RemoteClient {
    /// A client with `concurrency` workers in [`Connections::Pool`] mode (one in
    /// [`Connections::Serial`]).
    pub fn new(mode: Connections, concurrency: u32, cost: LinkCost) -> Self {
        let n = match mode {
            Connections::Serial => 1,
            Connections::Pool => concurrency.max(1) as usize,
        };
        RemoteClient {
            mode,
            cost,
            lanes: vec![SimTime::ZERO; n],
            link_free: SimTime::ZERO,
            queue: VecDeque::new(),
            instant: SimTime::MAX,
            before: vec![SimTime::ZERO; n],
        }
    }

    /// Its connection mode.
    pub fn mode(&self) -> Connections {
        self.mode
    }

    /// The earliest free connection.
    fn lane(&self) -> (usize, SimTime) {
        self.lanes
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(i, t)| (*t, *i))
            .unwrap_or((0, SimTime::ZERO))
    }

    /// Runs an operation on connection `lane` from `start`: its bytes through the link in turn
    /// (and at most a window per round trip on its connection), then its round trips. Returns
    /// when it completes.
    fn run(&mut self, lane: usize, start: SimTime, bytes: u64, round_trips: u32) -> SimTime {
        let data_end = if bytes > 0 {
            let link_start = self.link_free.max(start);
            let link_end =
                link_start + SimDuration::from_secs_f64(bytes as f64 / self.cost.bytes_per_s);
            self.link_free = link_end;
            link_end.max(start + SimDuration::from_secs_f64(self.cost.stream_s(bytes)))
        } else {
            start
        };
        let end = data_end + SimDuration::from_secs_f64(self.cost.round_trips_s(round_trips));
        self.lanes[lane] = end;
        end
    }

    /// Submits a put of `bytes` (on the wire) for chunk `key`, serialised at `ready`. It
    /// starts when [`RemoteClient::advance`] reaches it.
    pub fn put(&mut self, key: u64, ready: SimTime, bytes: u64, round_trips: u32) {
        self.queue.push_back(QueuedPut {
            key,
            ready,
            bytes,
            round_trips,
        });
    }

    /// Puts submitted and not yet started.
    pub fn queued_puts(&self) -> usize {
        self.queue.len()
    }

    /// Starts the queued puts that go before an operation submitted at `t`: in
    /// [`Connections::Serial`] mode every put submitted by then, in [`Connections::Pool`] mode
    /// those a worker takes before `t`. `done(key, at)` hears when each completes.
    pub fn advance(&mut self, t: SimTime, mut done: impl FnMut(u64, SimTime)) {
        while let Some(p) = self.queue.front().copied() {
            let (lane, free) = self.lane();
            let start = free.max(p.ready);
            let goes_first = match self.mode {
                Connections::Serial => p.ready <= t,
                Connections::Pool => start < t,
            };
            if !goes_first {
                break;
            }
            self.queue.pop_front();
            let end = self.run(lane, start, p.bytes, p.round_trips);
            done(p.key, end);
        }
    }

    /// Notes the scheduling instant `at` of an operation: the first at a new instant keeps the
    /// connections as they are then.
    fn at_instant(&mut self, at: SimTime) {
        if at != self.instant {
            self.instant = at;
            self.before.clone_from(&self.lanes);
        }
    }

    /// `n` existence checks one after another from `start` (LMCache checks chunk by chunk and
    /// stops at the first miss), each `round_trips` long, for a lookup the scheduler makes at
    /// instant `at`; returns when the last answers. The checks wait for the connections as
    /// they were before `at` and for the other lookups at `at`, not for the retrieves charged
    /// at `at` (those run after the scheduler is done). Call [`RemoteClient::advance`] first.
    pub fn exists_chain(
        &mut self,
        at: SimTime,
        start: SimTime,
        n: u64,
        round_trips: u32,
    ) -> SimTime {
        self.at_instant(at);
        let mut t = start;
        for _ in 0..n {
            let (lane, free) = self
                .before
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|(i, f)| (*f, *i))
                .unwrap_or((0, SimTime::ZERO));
            t = free.max(t) + SimDuration::from_secs_f64(self.cost.round_trips_s(round_trips));
            self.before[lane] = t;
            self.lanes[lane] = self.lanes[lane].max(t);
        }
        t
    }

    /// `n` gets of `bytes` each submitted together at `now` by a retrieve the scheduler charged
    /// at instant `at`, each on the next free connection; returns when the last completes.
    /// Call [`RemoteClient::advance`] to `now` first.
    pub fn get_batch(
        &mut self,
        at: SimTime,
        now: SimTime,
        n: u64,
        bytes: u64,
        round_trips: u32,
    ) -> SimTime {
        self.at_instant(at);
        let mut last = now;
        for _ in 0..n {
            let (lane, free) = self.lane();
            last = last.max(self.run(lane, free.max(now), bytes, round_trips));
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e-3;
    const MIB: u64 = 1 << 20;

    fn at(s: f64) -> SimTime {
        SimTime::ZERO + SimDuration::from_secs_f64(s)
    }

    fn secs(t: SimTime) -> f64 {
        t.since(SimTime::ZERO).as_secs_f64()
    }

    /// A 1 GB/s link, a 3 MiB window, no per-request cost.
    fn cost(rtt_s: f64) -> LinkCost {
        LinkCost {
            rtt_s,
            op_s: 0.0,
            bytes_per_s: 1e9,
            window_bytes: 3 * MIB,
        }
    }

    #[test]
    fn the_window_limits_a_stream_once_the_rtt_is_large() {
        // 32 MiB = 33,554,432 bytes: 33.55 ms at 1 GB/s; 11 windows of 3 MiB, the first with
        // the request, each next one a round trip later: 10 round trips, slower than the link
        // once rtt > 3.355 ms.
        let b = 32 * MIB;
        for (rtt_ms, want) in [
            (0.0, 0.033_554_432),
            (3.0, 0.033_554_432),
            (10.0, 0.100),
            (100.0, 1.0),
            (1000.0, 10.0),
        ] {
            let got = cost(rtt_ms * MS).stream_s(b);
            assert!(
                (got - want).abs() < 1e-9,
                "rtt {rtt_ms} ms: {got} vs {want}"
            );
        }
        // What fits in one window goes with its round trip: only the link's time.
        assert!((cost(1.0).stream_s(3 * MIB) - 0.003_145_728).abs() < 1e-12);
        assert_eq!(cost(1.0).stream_s(0), 0.0);
    }

    #[test]
    fn on_one_connection_a_lookup_waits_behind_a_put() {
        // RTT 100 ms: a 32 MiB put (two SETs) at t = 0 takes 10 round trips of windows (1 s)
        // then its two round trips: done at 1.2 s. An existence check submitted at 10 ms waits
        // for it, then takes its round trip: answered at 1.3 s.
        for rtt_ms in [0.0, 10.0, 100.0, 1000.0] {
            let rtt = rtt_ms * MS;
            let mut c = RemoteClient::new(Connections::Serial, 4, cost(rtt));
            c.put(7, SimTime::ZERO, 32 * MIB, 2);
            let mut seen = Vec::new();
            let now = at(0.010);
            c.advance(now, |k, t| seen.push((k, t)));
            let put_end = cost(rtt).stream_s(32 * MIB) + 2.0 * rtt;
            assert_eq!(seen.len(), 1);
            assert!(
                (secs(seen[0].1) - put_end).abs() < 1e-6,
                "{rtt_ms}: {seen:?}"
            );
            let answered = secs(c.exists_chain(now, now, 1, 1));
            let want = put_end.max(0.010) + rtt;
            assert!(
                (answered - want).abs() < 1e-6,
                "{rtt_ms}: {answered} vs {want}"
            );
        }
    }

    #[test]
    fn in_a_pool_a_lookup_takes_a_free_worker_and_goes_before_queued_puts() {
        let rtt = 0.100;
        let mut c = RemoteClient::new(Connections::Pool, 2, cost(rtt));
        // Three 6 MiB puts at t = 0: each two windows (one round trip beyond its own, 100 ms)
        // and two round trips. Two workers take two of them at 0 (the link serialises their
        // bytes, 6.3 ms each, far below the window's 100 ms); the third waits for a worker.
        for k in 0..3 {
            c.put(k, SimTime::ZERO, 6 * MIB, 2);
        }
        let mut done = Vec::new();
        c.advance(at(0.010), |k, t| done.push((k, secs(t))));
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(
            done.iter().all(|(_, t)| (t - 0.300).abs() < 1e-6),
            "{done:?}"
        );
        assert_eq!(c.queued_puts(), 1);
        // A check at 10 ms: both workers busy until 300 ms; it goes before the queued put,
        // answered at 400 ms; the queued put takes the other worker when it frees (300 ms) and
        // completes at 600 ms.
        let answered = secs(c.exists_chain(at(0.010), at(0.010), 1, 1));
        assert!((answered - 0.400).abs() < 1e-6, "{answered}");
        c.advance(at(10.0), |k, t| done.push((k, secs(t))));
        assert_eq!(done[2].0, 2);
        assert!((done[2].1 - 0.600).abs() < 1e-6, "{done:?}");
        // Serial: the same check waits for all three puts: 3 x 300 ms, then 100 ms.
        let mut s = RemoteClient::new(Connections::Serial, 2, cost(rtt));
        for k in 0..3 {
            s.put(k, SimTime::ZERO, 6 * MIB, 2);
        }
        s.advance(at(0.010), |_, _| {});
        assert!((secs(s.exists_chain(at(0.010), at(0.010), 1, 1)) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn gets_go_in_waves_and_share_the_link() {
        // 9 gets of 1 MB, 4 workers, 2 round trips of 10 ms, 1 GB/s, a window the link never
        // each 1 MB within one window: each wave's bytes go through the link one after another,
        // 1 ms each.
        let mut c = RemoteClient::new(Connections::Pool, 4, cost(0.010));
        let end = secs(c.get_batch(SimTime::ZERO, SimTime::ZERO, 9, 1_000_000, 2));
        // Wave 1: bytes end at 1, 2, 3, 4 ms, replies 20 ms later: workers free at 21..24 ms.
        // Wave 2 starts at 21..24 ms, its bytes at 22, 23, 24, 25 ms: free at 42..45 ms.
        // The 9th starts at 42 ms: bytes 43 ms, done 63 ms.
        assert!((end - 0.063).abs() < 1e-9, "{end}");
    }
}
