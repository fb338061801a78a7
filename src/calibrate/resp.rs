//! A minimal RESP2 client for the timing loops of the Redis calibration.
//!
//! The measured operation must cost the server, the link and nothing else: a command is written
//! as a small header followed by the value slice itself (no copy into a command buffer), and a
//! reply is read straight into a reused buffer. Connection set-up, errors and housekeeping use
//! the `redis` crate; only the timed SET and GET go through here.

use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One connection.
#[derive(Debug)]
pub struct Resp {
    w: TcpStream,
    r: Replies<BufReader<TcpStream>>,
}

/// Reads RESP2 replies from a buffered stream (a connection; bytes in tests).
#[derive(Debug)]
pub struct Replies<R> {
    r: R,
    line: Vec<u8>,
}

/// Writes every slice, looping over partial vectored writes.
fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "connection closed",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn proto(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Resp {
    /// Connects, authenticates (`password`) and selects `db`.
    pub fn connect(addr: SocketAddr, password: Option<&str>, db: i64) -> io::Result<Resp> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut c = Resp {
            w: s.try_clone()?,
            r: Replies::new(BufReader::with_capacity(1 << 16, s)),
        };
        if let Some(pw) = password {
            c.command(&[b"AUTH", pw.as_bytes()], None)?;
            c.r.simple()?;
        }
        if db != 0 {
            c.command(&[b"SELECT", db.to_string().as_bytes()], None)?;
            c.r.simple()?;
        }
        Ok(c)
    }

    /// Writes a command whose last argument may be a large value sent without copying.
    fn command(&mut self, args: &[&[u8]], value: Option<&[u8]>) -> io::Result<()> {
        let n = args.len() + usize::from(value.is_some());
        let mut head = Vec::with_capacity(64);
        head.extend_from_slice(format!("*{n}\r\n").as_bytes());
        for a in args {
            head.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            head.extend_from_slice(a);
            head.extend_from_slice(b"\r\n");
        }
        match value {
            Some(v) => {
                head.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                if v.len() <= 16 * 1024 {
                    head.extend_from_slice(v);
                    head.extend_from_slice(b"\r\n");
                    self.w.write_all(&head)
                } else {
                    // One vectored write for header, value and terminator: one system call where
                    // three would cost context switches under concurrency.
                    write_all_vectored(
                        &mut self.w,
                        &mut [IoSlice::new(&head), IoSlice::new(v), IoSlice::new(b"\r\n")],
                    )
                }
            }
            None => self.w.write_all(&head),
        }
    }

    /// The connection, for callers that drive it themselves (the multiplexed timing loop).
    pub fn into_stream(self) -> TcpStream {
        self.w
    }

    /// SET key value.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.command(&[b"SET", key], Some(value))?;
        self.r.simple()
    }

    /// EXISTS key.
    pub fn exists(&mut self, key: &[u8]) -> io::Result<()> {
        self.command(&[b"EXISTS", key], None)?;
        self.r.simple()
    }

    /// GET key into `buf` (resized to the value); returns false for a missing key.
    pub fn get(&mut self, key: &[u8], buf: &mut Vec<u8>) -> io::Result<bool> {
        self.command(&[b"GET", key], None)?;
        self.r.bulk(buf)
    }
}

impl<R: BufRead> Replies<R> {
    /// Replies read from `r`.
    pub fn new(r: R) -> Self {
        Replies {
            r,
            line: Vec::new(),
        }
    }

    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        self.r.read_until(b'\n', &mut self.line)?;
        if self.line.len() < 3 || !self.line.ends_with(b"\r\n") {
            return Err(proto("connection closed or malformed reply".into()));
        }
        if self.line[0] == b'-' {
            let msg = String::from_utf8_lossy(&self.line[1..self.line.len() - 2]).into_owned();
            return Err(io::Error::other(msg));
        }
        Ok(())
    }

    /// A simple-string or integer reply (`+OK`, `:1`); an error reply is an error.
    pub fn simple(&mut self) -> io::Result<()> {
        self.read_line()?;
        if self.line[0] == b'+' || self.line[0] == b':' {
            Ok(())
        } else {
            Err(proto(format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&self.line)
            )))
        }
    }

    /// A bulk-string reply into `buf` (resized to the value); false for a null bulk (a missing
    /// key).
    pub fn bulk(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        self.read_line()?;
        if self.line[0] != b'$' {
            return Err(proto(format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&self.line)
            )));
        }
        let len: i64 = std::str::from_utf8(&self.line[1..self.line.len() - 2])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| proto("bad bulk length".into()))?;
        if len < 0 {
            return Ok(false);
        }
        // Read what arrives up to the announced length, so that a bogus length costs no more
        // memory than the bytes actually sent.
        let want = len as u64 + 2;
        buf.clear();
        (&mut self.r).take(want).read_to_end(buf)?;
        if buf.len() as u64 != want {
            return Err(proto("connection closed inside a bulk reply".into()));
        }
        if !buf.ends_with(b"\r\n") {
            return Err(proto("bulk reply not followed by CRLF".into()));
        }
        buf.truncate(len as usize);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_and_a_bogus_bulk_length_is_an_error_not_an_allocation() {
        let mut r = Replies::new(&b"+OK\r\n:3\r\n$5\r\nhello\r\n$-1\r\n$0\r\n\r\n"[..]);
        let mut buf = Vec::new();
        r.simple().unwrap();
        r.simple().unwrap();
        assert!(r.bulk(&mut buf).unwrap());
        assert_eq!(buf, b"hello");
        assert!(!r.bulk(&mut buf).unwrap());
        assert!(r.bulk(&mut buf).unwrap());
        assert!(buf.is_empty());
        // A length of almost 1 PB announced, 5 bytes sent.
        let mut r = Replies::new(&b"$999999000000005\r\nhello\r\n"[..]);
        let e = r.bulk(&mut buf).unwrap_err();
        assert_eq!(e.to_string(), "connection closed inside a bulk reply");
        let mut r = Replies::new(&b"$2\r\nhello\r\n"[..]);
        let e = r.bulk(&mut buf).unwrap_err();
        assert_eq!(e.to_string(), "bulk reply not followed by CRLF");
        let mut r = Replies::new(&b"-ERR wrong\r\n"[..]);
        assert_eq!(r.simple().unwrap_err().to_string(), "ERR wrong");
    }
}
