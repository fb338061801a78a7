//! A TCP proxy that adds a fixed delay in each direction: network RTT for what-ifs and
//! calibration on a kernel without netem.
//!
//! Every chunk read from one side is stamped and written to the other side once `rtt / 2` has
//! passed since it was read, in order (one FIFO per direction, so nothing is reordered and a large
//! transfer pays the delay once, not per chunk). An optional rate limit (token bucket) caps each
//! direction's throughput, like `tc tbf`. An optional window caps the bytes in flight per
//! direction, as a TCP sender's window does on a long path: bytes read count until their
//! acknowledgement would be back (half a round trip after they are delivered), so a stream moves
//! at most one window per round trip. The proxy's own cost is a thread hand-off per chunk
//! (tens of microseconds); `calibrate redis --via-proxy` measures it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelaySpec {
    /// Added round-trip time (half in each direction).
    pub rtt: Duration,
    /// Bytes per second per direction; `None` for no limit.
    pub rate: Option<f64>,
    /// Bytes in flight per direction (a TCP window); `None` for no limit.
    pub window: Option<u64>,
}

/// A running proxy; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

/// Parses a duration like `20ms`, `0.5ms`, `250us`, `1s` or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(v) = t.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = t.strip_suffix("us") {
        (v, 1e-6)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1.0)
    } else if t == "0" {
        ("0", 1.0)
    } else {
        return Err(format!("{s:?}: expected a duration like 20ms, 250us or 1s"));
    };
    match num.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x * mult < 3600.0 => {
            Ok(Duration::from_secs_f64(x * mult))
        }
        _ => Err(format!("{s:?}: expected a duration like 20ms, 250us or 1s")),
    }
}

/// The slowest rate a link may have, bytes per second (1 bit/s).
const MIN_RATE: f64 = 1.0 / 8.0;
/// The fastest, bytes per second (100 Tbit/s).
const MAX_RATE: f64 = 100e12 / 8.0;

/// Parses a rate as `tc` writes it: `10gbit`, `100mbit`, `500kbit`, `8bit` (bits per second) or
/// `1gbps`, `100mbps`, `10kbps`, `5bps` (bytes per second, tc's meaning of "bps"). Returns bytes
/// per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim().to_ascii_lowercase();
    let units: [(&str, f64); 10] = [
        ("tbit", 1e12 / 8.0),
        ("gbit", 1e9 / 8.0),
        ("mbit", 1e6 / 8.0),
        ("kbit", 1e3 / 8.0),
        ("bit", 1.0 / 8.0),
        ("tbps", 1e12),
        ("gbps", 1e9),
        ("mbps", 1e6),
        ("kbps", 1e3),
        ("bps", 1.0),
    ];
    for (u, mult) in units {
        if let Some(v) = t.strip_suffix(u) {
            // From 1 bit/s (slower would delay one packet for days) to 100 Tbit/s.
            return match v.trim().parse::<f64>().map(|x| x * mult) {
                Ok(r) if (MIN_RATE..=MAX_RATE).contains(&r) => Ok(r),
                _ => Err(format!(
                    "{s:?}: expected a rate like 10gbit or 100mbps, from 1bit to 100tbit"
                )),
            };
        }
    }
    Err(format!("{s:?}: expected a rate like 10gbit or 100mbps"))
}

impl DelayProxy {
    /// Listens on `listen` (port 0 picks a free one) and forwards every connection to
    /// `upstream` with `spec` added.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        spec: DelaySpec,
    ) -> io::Result<DelayProxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let accept = std::thread::Builder::new()
            .name("netdelay-accept".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if let Err(e) = serve(client, upstream, spec, &conns2) {
                                eprintln!("netdelay: connection to {upstream} failed: {e}");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => {
                            eprintln!("netdelay: accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })?;
        Ok(DelayProxy {
            addr,
            stop,
            conns,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(conns) = self.conns.lock() {
            for c in conns.iter() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    spec: DelaySpec,
    conns: &Mutex<Vec<TcpStream>>,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    if let Ok(mut c) = conns.lock() {
        c.push(client.try_clone()?);
        c.push(server.try_clone()?);
    }
    let one_way = spec.rtt / 2;
    pump(client.try_clone()?, server.try_clone()?, one_way, spec)?;
    pump(server, client, one_way, spec)?;
    Ok(())
}

/// Forwards `from` to `to` with a delay: a reader thread stamps chunks, a writer thread sends
/// each at its stamp plus `delay`, paced by the spec's rate; with a window, the reader stops
/// while a window's bytes are unacknowledged.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    spec: DelaySpec,
) -> io::Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    // Acknowledgements: when each delivered chunk's credit is back, and its size.
    let (ack_tx, ack_rx) = mpsc::channel::<(Instant, usize)>();
    let (rate, window) = (spec.rate, spec.window);
    std::thread::Builder::new()
        .name("netdelay-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut in_flight = 0u64;
            let mut acks: std::collections::VecDeque<(Instant, usize)> = Default::default();
            loop {
                let mut room = buf.len();
                if let Some(w) = window {
                    loop {
                        acks.extend(ack_rx.try_iter());
                        while let Some(&(t, n)) = acks.front() {
                            if t > Instant::now() {
                                break;
                            }
                            acks.pop_front();
                            in_flight = in_flight.saturating_sub(n as u64);
                        }
                        if in_flight < w {
                            break;
                        }
                        match acks.front() {
                            Some(&(t, _)) => wait_until(t),
                            None => match ack_rx.recv() {
                                Ok(a) => acks.push_back(a),
                                Err(_) => return,
                            },
                        }
                    }
                    room = room.min((w - in_flight) as usize);
                }
                match from.read(&mut buf[..room]) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send((Instant::now(), Vec::new()));
                        return;
                    }
                    Ok(n) => {
                        in_flight += n as u64;
                        if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        })?;
    std::thread::Builder::new()
        .name("netdelay-write".into())
        .spawn(move || {
            // Sleep precision is the proxy's error: ask the kernel for no timer slack (default
            // 50 us), and spin the last stretch.
            #[cfg(target_os = "linux")]
            // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects this thread.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
            }
            let mut next_free = Instant::now();
            for (read_at, data) in rx {
                if data.is_empty() {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                let mut due = read_at + delay;
                if let Some(r) = rate {
                    // A link of `r` bytes/s delivers a chunk once it has been transmitted, and
                    // transmits one chunk at a time.
                    let start = next_free.max(due);
                    next_free = start + Duration::from_secs_f64(data.len() as f64 / r);
                    due = next_free;
                }
                wait_until(due);
                if to.write_all(&data).is_err() {
                    return;
                }
                if window.is_some() {
                    let _ = ack_tx.send((due + delay, data.len()));
                }
            }
        })?;
    Ok(())
}

/// Sleeps until `due`, spinning the last 200 us so that wake-up latency does not add to the
/// delay.
fn wait_until(due: Instant) {
    const SPIN: Duration = Duration::from_micros(200);
    let now = Instant::now();
    if due > now + SPIN {
        std::thread::sleep(due - now - SPIN);
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        (addr, h)
    }

    fn round_trip(c: &mut TcpStream, msg: &[u8]) -> Duration {
        let t0 = Instant::now();
        c.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
        t0.elapsed()
    }

    #[test]
    fn adds_the_round_trip_in_order_and_stops_cleanly() {
        let (up, h) = echo_server();
        let mut p = DelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            up,
            DelaySpec {
                rtt: Duration::from_millis(20),
                rate: None,
                window: None,
            },
        )
        .unwrap();
        let mut c = TcpStream::connect(p.local_addr()).unwrap();
        c.set_nodelay(true).unwrap();
        // A delay is added (a mechanism check with a wide margin, not a timing target).
        for i in 0..5u8 {
            let d = round_trip(&mut c, &[i; 100]);
            assert!(d >= Duration::from_millis(20), "{d:?}");
            assert!(d < Duration::from_millis(500), "{d:?}");
        }
        // A 4 MiB message arrives intact and in order.
        let big: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        round_trip(&mut c, &big);
        p.stop();
        let mut b = [0u8; 1];
        // The proxy closed the connection: reads end.
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
        drop(c);
        h.join().unwrap();
    }

    #[test]
    fn durations_and_rates_parse_like_tc() {
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("20").is_err() && parse_duration("-1ms").is_err());
        assert_eq!(parse_rate("10gbit").unwrap(), 1.25e9);
        assert_eq!(parse_rate("100mbps").unwrap(), 1e8);
        assert!(parse_rate("fast").is_err() && parse_rate("0gbit").is_err());
    }

    /// Regression: `--rate 1e-320bit` passed and a worker thread died computing a packet's delay.
    #[test]
    fn rates_below_one_bit_per_second_are_refused() {
        for bad in ["1e-320bit", "0.5bit", "1e300gbit", "nangbit", "infbit"] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.contains("from 1bit to 100tbit"), "{bad}: {e}");
        }
        assert_eq!(parse_rate("1bit").unwrap(), 0.125);
    }

    #[test]
    fn a_rate_limit_paces_the_stream() {
        let (up, h) = echo_server();
        let p = DelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            up,
            DelaySpec {
                rtt: Duration::ZERO,
                rate: Some(4e6),
                window: None,
            },
        )
        .unwrap();
        let mut c = TcpStream::connect(p.local_addr()).unwrap();
        // 1 MB each way at 4 MB/s cannot take less than 0.25 s.
        let d = round_trip(&mut c, &vec![5u8; 1_000_000]);
        assert!(d >= Duration::from_millis(240), "{d:?}");
        drop(c);
        drop(p);
        h.join().unwrap();
    }

    #[test]
    fn a_window_moves_at_most_one_window_per_round_trip() {
        let (up, h) = echo_server();
        let p = DelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            up,
            DelaySpec {
                rtt: Duration::from_millis(40),
                rate: None,
                window: Some(256 * 1024),
            },
        )
        .unwrap();
        let mut c = TcpStream::connect(p.local_addr()).unwrap();
        c.set_nodelay(true).unwrap();
        // 1 MiB with a 256 KiB window: 4 windows, the last read 3 round trips after the first
        // (120 ms), then half a trip to the echo and half a trip back (the way back keeps up:
        // its credits return as fast as the windows arrive): at least 160 ms, where without a
        // window it takes one round trip (40 ms).
        let msg = vec![9u8; 1 << 20];
        let writer = {
            let mut w = c.try_clone().unwrap();
            let m = msg.clone();
            std::thread::spawn(move || w.write_all(&m).unwrap())
        };
        let t0 = Instant::now();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).unwrap();
        let d = t0.elapsed();
        writer.join().unwrap();
        assert_eq!(got, msg);
        assert!(d >= Duration::from_millis(158), "{d:?}");
        assert!(d < Duration::from_secs(5), "{d:?}");
        drop(c);
        drop(p);
        h.join().unwrap();
    }
}
