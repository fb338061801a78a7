//! A single-threaded, multiplexed timing client: `c` connections driven by one `poll(2)` loop,
//! as `redis-benchmark` and LMCache's asyncio connector both do. With several connections this
//! leaves the CPU to the server instead of spending it on client threads, so the client is not
//! the bottleneck on a small machine.
//!
//! Each operation is a short sequence of commands on one connection (LMCache's chunk put is two
//! SETs, its chunk get two GETs), sent one after the other; its latency runs from the first
//! command's first byte to the last reply's last byte.

use super::resp::Resp;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// One command of an operation.
#[derive(Debug, Clone, Copy)]
pub enum Cmd<'a> {
    /// SET key value.
    Set(&'a [u8], &'a [u8]),
    /// GET key (the value is read and discarded).
    Get(&'a [u8]),
}

enum Reply {
    /// Reading the first line.
    Head,
    /// Skipping a bulk value and its CRLF.
    Bulk(usize),
}

struct Conn<'a> {
    s: TcpStream,
    ops: Vec<Cmd<'a>>,
    step: usize,
    head: Vec<u8>,
    sent: usize,
    reply: Option<Reply>,
    started: Instant,
    lat: Vec<f64>,
    /// Bytes read but not yet parsed: `rbuf[rpos..rlen]`.
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
}

/// The command's bytes up to (not including) a SET's value.
fn frame(c: &Cmd) -> Vec<u8> {
    let mut h = Vec::with_capacity(64);
    match c {
        Cmd::Set(k, v) => {
            h.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n${}\r\n", k.len()).as_bytes());
            h.extend_from_slice(k);
            h.extend_from_slice(format!("\r\n${}\r\n", v.len()).as_bytes());
            h
        }
        Cmd::Get(k) => {
            h.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n", k.len()).as_bytes());
            h.extend_from_slice(k);
            h.extend_from_slice(b"\r\n");
            h
        }
    }
}

impl<'a> Conn<'a> {
    fn total_len(&self) -> usize {
        match self.ops[self.step] {
            Cmd::Set(_, v) => self.head.len() + v.len() + 2,
            Cmd::Get(_) => self.head.len(),
        }
    }

    fn begin_command(&mut self) {
        self.head = frame(&self.ops[self.step]);
        self.sent = 0;
        self.reply = None;
    }

    /// Writes what it can; returns true when the command is fully sent.
    fn write_some(&mut self) -> io::Result<bool> {
        let value: &[u8] = match self.ops[self.step] {
            Cmd::Set(_, v) => v,
            Cmd::Get(_) => &[],
        };
        let tail: &[u8] = if matches!(self.ops[self.step], Cmd::Set(..)) {
            b"\r\n"
        } else {
            b""
        };
        loop {
            let total = self.total_len();
            if self.sent >= total {
                return Ok(true);
            }
            let mut parts: Vec<IoSlice> = Vec::with_capacity(3);
            let mut off = self.sent;
            for part in [&self.head[..], value, tail] {
                if off >= part.len() {
                    off -= part.len();
                    continue;
                }
                parts.push(IoSlice::new(&part[off..]));
                off = 0;
            }
            match self.s.write_vectored(&parts) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "connection closed",
                    ));
                }
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads more into the buffer; false when nothing is available now.
    fn fill(&mut self) -> io::Result<bool> {
        if self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = 0;
        } else if self.rlen == self.rbuf.len() {
            self.rbuf.copy_within(self.rpos..self.rlen, 0);
            self.rlen -= self.rpos;
            self.rpos = 0;
        }
        loop {
            match self.s.read(&mut self.rbuf[self.rlen..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ));
                }
                Ok(n) => {
                    self.rlen += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Parses what has arrived; returns true when the reply is complete.
    fn read_some(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        loop {
            match self.reply.get_or_insert(Reply::Head) {
                Reply::Head => {
                    let avail = &self.rbuf[self.rpos..self.rlen];
                    let Some(end) = avail.windows(2).position(|w| w == b"\r\n") else {
                        if !self.fill()? {
                            return Ok(false);
                        }
                        continue;
                    };
                    let line = &avail[..end];
                    let kind = line.first().copied();
                    let rest = std::str::from_utf8(&line[1..]).unwrap_or("").to_string();
                    self.rpos += end + 2;
                    match kind {
                        Some(b'+') | Some(b':') => return Ok(true),
                        Some(b'-') => return Err(io::Error::other(rest)),
                        Some(b'$') => {
                            let n: i64 = rest.parse().map_err(|_| {
                                io::Error::new(io::ErrorKind::InvalidData, "bad bulk length")
                            })?;
                            if n < 0 {
                                return Ok(true);
                            }
                            self.reply = Some(Reply::Bulk(n as usize + 2));
                        }
                        _ => {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "unexpected reply",
                            ));
                        }
                    }
                }
                Reply::Bulk(left) => {
                    // Take what is buffered, then read large remainders straight into scratch.
                    let take = (*left).min(self.rlen - self.rpos);
                    self.rpos += take;
                    *left -= take;
                    if *left == 0 {
                        return Ok(true);
                    }
                    let want = (*left).min(scratch.len());
                    match self.s.read(&mut scratch[..want]) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "connection closed",
                            ));
                        }
                        Ok(n) => *left -= n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// Runs the operation `ops(connection index)` back to back on `conns` connections to `addr`
/// until `budget` has passed and each connection did at least `min_per_conn`; returns every
/// operation's latency in seconds and the wall time.
pub fn run<'a>(
    addr: SocketAddr,
    password: Option<&str>,
    db: i64,
    conns: usize,
    ops: &dyn Fn(usize) -> Vec<Cmd<'a>>,
    budget: Duration,
    min_per_conn: usize,
) -> io::Result<(Vec<f64>, f64)> {
    let mut cs: Vec<Conn<'a>> = Vec::with_capacity(conns);
    for i in 0..conns {
        let s = Resp::connect(addr, password, db)?.into_stream();
        s.set_nonblocking(true)?;
        cs.push(Conn {
            s,
            ops: ops(i),
            step: 0,
            head: Vec::new(),
            sent: 0,
            reply: None,
            started: Instant::now(),
            lat: Vec::new(),
            rbuf: vec![0u8; 64 * 1024],
            rpos: 0,
            rlen: 0,
        });
    }
    let start = Instant::now();
    for c in cs.iter_mut() {
        c.started = Instant::now();
        c.begin_command();
    }
    let mut scratch = vec![0u8; 1 << 20];
    let mut active = vec![true; conns];
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(conns);
    while active.iter().any(|a| *a) {
        pfds.clear();
        for c in &cs {
            let sending = c.sent < c.total_len();
            pfds.push(libc::pollfd {
                fd: c.s.as_raw_fd(),
                events: if sending { libc::POLLOUT } else { libc::POLLIN },
                revents: 0,
            });
        }
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structures for the call.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1000) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (i, c) in cs.iter_mut().enumerate() {
            if !active[i] || pfds[i].revents == 0 {
                continue;
            }
            if c.sent < c.total_len() && !c.write_some()? {
                continue;
            }
            if !c.read_some(&mut scratch)? {
                continue;
            }
            // A command completed: the next one of the operation, or the next operation.
            c.step += 1;
            if c.step == c.ops.len() {
                c.lat.push(c.started.elapsed().as_secs_f64());
                c.step = 0;
                if start.elapsed() >= budget && c.lat.len() >= min_per_conn {
                    active[i] = false;
                    continue;
                }
                c.started = Instant::now();
            }
            c.begin_command();
            // Start writing right away; the next poll finishes what does not fit.
            let _ = c.write_some()?;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    Ok((cs.into_iter().flat_map(|c| c.lat).collect(), wall))
}
