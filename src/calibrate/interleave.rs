//! Gets and lookups interleaved with puts on a real Redis behind the delay proxy: what a lookup
//! waits for when it shares a connection with a put, and what a window-limited stream costs at
//! large RTT, each measured and set against what the simulator's connection model
//! ([`crate::tiers::remote_client`]) predicts.
//!
//! Three patterns, as LMCache's connectors produce them, each timed from the instant the second
//! operation is submitted (the same instant as the put):
//! - `serial_exists`: one connection; a chunk put (data SET, metadata SET), then an EXISTS
//!   queued behind it (`lm://`, the early synchronous Redis client).
//! - `pool_exists`: two connections; the put on one, the EXISTS on the other at once (the
//!   pooled Redis client with a free worker).
//! - `serial_get`: one connection; the put, then the chunk get (metadata GET, data GET).
//!
//! The prediction is the pattern's time measured through the proxy at no added RTT plus what the
//! model adds at the RTT: round trips and the bytes beyond what the link alone would take when a
//! window per round trip limits the stream (counting the command's framing: a 1 MiB value is
//! five 256 KiB windows on the wire, not four).

use super::resp::Resp;
use crate::netdelay::{DelayProxy, DelaySpec};
use crate::tiers::remote_client::{Connections, LinkCost, RemoteClient};
use crate::time::SimTime;
use serde::Serialize;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Bytes a value's command or reply adds on the wire (RESP framing and the key), at most: a
/// value of exactly `k` windows takes `k + 1` on the wire.
pub const FRAMING_BYTES: u64 = 64;

/// The patterns measured.
pub const PATTERNS: [&str; 3] = ["serial_exists", "pool_exists", "serial_get"];

/// One pattern at one RTT.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Interleaved {
    /// [`PATTERNS`].
    pub pattern: String,
    /// The put's value bytes (the get's too).
    pub bytes: u64,
    /// Added RTT, ms.
    pub rtt_ms: f64,
    /// The proxy's window per direction, bytes.
    pub window_bytes: u64,
    /// Repetitions timed.
    pub n: usize,
    /// Mean time from submission to the second operation's reply, ms.
    pub measured_ms: f64,
    /// The model's time: the no-RTT measurement plus what the model adds at this RTT, ms.
    pub predicted_ms: f64,
    /// (predicted - measured) / measured.
    pub error: f64,
}

/// Where and what to measure.
#[derive(Debug, Clone)]
pub struct InterleaveOptions {
    /// The Redis server.
    pub addr: SocketAddr,
    /// Its password, if any.
    pub password: Option<String>,
    /// Its database.
    pub db: i64,
    /// Key prefix (the caller deletes its keys).
    pub prefix: String,
    /// Value bytes of the put and the get.
    pub bytes: u64,
    /// Added RTTs, ms (0 is measured too, as the base).
    pub rtts_ms: Vec<f64>,
    /// The proxy's window, bytes.
    pub window_bytes: u64,
    /// Repetitions per pattern and RTT.
    pub reps: usize,
    /// The link's rate the model uses, bytes per second (the calibrated `remote_gbps`).
    pub bytes_per_s: f64,
}

/// What the model gives for `pattern` at `rtt_s`, seconds (no per-request cost: the no-RTT
/// measurement carries it).
pub fn model_s(pattern: &str, bytes: u64, rtt_s: f64, window: u64, bytes_per_s: f64) -> f64 {
    let cost = LinkCost {
        rtt_s,
        op_s: 0.0,
        bytes_per_s,
        window_bytes: window,
    };
    let t0 = SimTime::ZERO;
    let (mode, get) = match pattern {
        "pool_exists" => (Connections::Pool, false),
        "serial_get" => (Connections::Serial, true),
        _ => (Connections::Serial, false),
    };
    let mut c = RemoteClient::new(mode, 2, cost);
    c.put(1, t0, bytes, 2);
    c.advance(t0, |_, _| {});
    let end = if get {
        c.get_batch(t0, t0, 1, bytes, 2)
    } else {
        c.exists_chain(t0, t0, 1, 1)
    };
    end.since(t0).as_secs_f64()
}

fn connect(o: &InterleaveOptions, addr: SocketAddr) -> io::Result<Resp> {
    Resp::connect(addr, o.password.as_deref(), o.db)
}

/// Times `pattern` once through `addr`; seconds.
fn time_once(
    o: &InterleaveOptions,
    addr: SocketAddr,
    pattern: &str,
    value: &Arc<Vec<u8>>,
) -> io::Result<f64> {
    let (data, meta) = (
        format!("{}il:data", o.prefix).into_bytes(),
        format!("{}il:meta", o.prefix).into_bytes(),
    );
    let meta_value = vec![7u8; super::redis::META_BYTES];
    let mut buf = Vec::new();
    match pattern {
        "pool_exists" => {
            let mut other = connect(o, addr)?;
            let mut mine = connect(o, addr)?;
            let go = Arc::new(Barrier::new(2));
            let (g, v, d, m) = (go.clone(), value.clone(), data.clone(), meta.clone());
            let mv = meta_value.clone();
            let putter = std::thread::spawn(move || -> io::Result<()> {
                g.wait();
                other.set(&d, &v)?;
                other.set(&m, &mv)
            });
            go.wait();
            let t0 = Instant::now();
            mine.exists(&meta)?;
            let s = t0.elapsed().as_secs_f64();
            putter
                .join()
                .map_err(|_| io::Error::other("put thread panicked"))??;
            Ok(s)
        }
        _ => {
            let mut c = connect(o, addr)?;
            let t0 = Instant::now();
            c.set(&data, value)?;
            c.set(&meta, &meta_value)?;
            if pattern == "serial_get" {
                c.get(&meta, &mut buf)?;
                c.get(&data, &mut buf)?;
            } else {
                c.exists(&meta)?;
            }
            Ok(t0.elapsed().as_secs_f64())
        }
    }
}

/// Measures every pattern at every RTT (and at 0, the base) through a proxy with the window.
pub fn measure(o: &InterleaveOptions) -> io::Result<Vec<Interleaved>> {
    let value = Arc::new(
        (0..o.bytes)
            .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut rtts = vec![0.0];
    rtts.extend(o.rtts_ms.iter().copied().filter(|r| *r > 0.0));
    let mut means: Vec<(f64, &str, f64, usize)> = Vec::new();
    for &rtt in &rtts {
        let proxy = DelayProxy::start(
            "127.0.0.1:0".parse().expect("literal"),
            o.addr,
            DelaySpec {
                rtt: Duration::from_secs_f64(rtt / 1e3),
                rate: None,
                window: Some(o.window_bytes),
            },
        )?;
        for pattern in PATTERNS {
            let mut total = 0.0;
            for _ in 0..o.reps.max(1) {
                crate::util::interrupt::check().map_err(io::Error::other)?;
                total += time_once(o, proxy.local_addr(), pattern, &value)?;
            }
            means.push((rtt, pattern, total / o.reps.max(1) as f64, o.reps.max(1)));
        }
    }
    let base = |p: &str| {
        means
            .iter()
            .find(|m| m.0 == 0.0 && m.1 == p)
            .map_or(0.0, |m| m.2)
    };
    Ok(means
        .iter()
        .map(|&(rtt, pattern, measured, n)| {
            let wire = o.bytes + FRAMING_BYTES;
            let model = |r: f64| model_s(pattern, wire, r / 1e3, o.window_bytes, o.bytes_per_s);
            let predicted = base(pattern) + model(rtt) - model(0.0);
            Interleaved {
                pattern: pattern.into(),
                bytes: o.bytes,
                rtt_ms: rtt,
                window_bytes: o.window_bytes,
                n,
                measured_ms: measured * 1e3,
                predicted_ms: predicted * 1e3,
                error: (predicted - measured) / measured,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_of_each_pattern_is_hand_computable() {
        // 4 MiB with a 1 MiB window at 100 ms: 4 windows, 3 round trips beyond the request's
        // own (the 1 GB/s link alone: 4.2 ms). One connection: the put's windows and two round
        // trips (500 ms), then the check's round trip: 600 ms; the get after the put adds its
        // windows and two round trips again: 1,000 ms. Two connections: the check's round trip
        // alone, 100 ms.
        let (b, w) = (4u64 << 20, 1u64 << 20);
        let m = |p| model_s(p, b, 0.1, w, 1e9);
        assert!((m("serial_exists") - 0.6).abs() < 1e-9);
        assert!((m("serial_get") - 1.0).abs() < 1e-9);
        assert!((m("pool_exists") - 0.1).abs() < 1e-9);
        // At no RTT only the link: 4.194 ms of bytes for the put, twice for put and get.
        let m0 = |p| model_s(p, b, 0.0, w, 1e9);
        assert!((m0("serial_exists") - 0.004_194_304).abs() < 1e-9);
        assert!((m0("serial_get") - 0.008_388_608).abs() < 1e-9);
        assert_eq!(m0("pool_exists"), 0.0);
    }
}
