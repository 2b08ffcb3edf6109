//! One child<->daemon connection (a UNIX stream with a frame buffer), and the daemon's
//! `wsgi.input` source and response sink over it. `Conn` is used by both ends: the httpd child
//! (client) and the daemon process (server).
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::protocol::{self, Frame, FrameBuffer};
use crate::wsgi::adapter::{BodySource, ResponseSink};
use crate::wsgi::headers::Head;

/// A framed connection.
pub struct Conn {
    stream: UnixStream,
    buf: FrameBuffer,
    out: Vec<u8>,
    /// An I/O or framing error happened: the connection must not be reused.
    broken: bool,
}

fn proto_err(e: protocol::ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Conn {
    pub fn new(stream: UnixStream) -> Self {
        Conn {
            stream,
            buf: FrameBuffer::new(),
            out: Vec::with_capacity(8192),
            broken: false,
        }
    }

    /// Sets the read and write timeouts of the socket.
    pub fn set_timeouts(&self, t: std::time::Duration) {
        let _ = self.stream.set_read_timeout(Some(t));
        let _ = self.stream.set_write_timeout(Some(t));
    }

    /// The socket descriptor (for polling an idle connection).
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.stream)
    }

    /// Whether the connection can carry another request: no error, nothing half-read or
    /// half-written.
    pub fn reusable(&self) -> bool {
        !self.broken && self.buf.is_empty() && self.out.is_empty()
    }

    /// Queues a frame; `flush` writes everything queued.
    pub fn queue(&mut self, f: &Frame) -> io::Result<()> {
        protocol::encode(f, &mut self.out).map_err(proto_err)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let r = self.stream.write_all(&self.out);
            self.out.clear();
            if r.is_err() {
                self.broken = true;
            }
            r?;
        }
        Ok(())
    }

    /// Sends already-encoded frames.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush()?;
        let r = self.stream.write_all(bytes);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Sends one frame at once.
    pub fn send(&mut self, f: &Frame) -> io::Result<()> {
        self.queue(f)?;
        self.flush()
    }

    /// Receives the next frame; EOF before a whole frame is `UnexpectedEof`.
    pub fn recv(&mut self) -> io::Result<Frame> {
        let r = self.recv_inner();
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn recv_inner(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(f) = self.buf.next_frame().map_err(proto_err)? {
                return Ok(f);
            }
            let spare = self.buf.spare(64 * 1024);
            let n = match self.stream.read(spare) {
                Ok(n) => n,
                // A signal (e.g. prefork's graceful-restart signal) is not an error.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if self.buf.is_empty() {
                        "connection closed"
                    } else {
                        "connection closed mid-frame"
                    },
                ));
            }
            self.buf.commit(n);
        }
    }
}

fn lock(c: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// The request body, pulled from the httpd child one `ReadBody` at a time.
pub struct DaemonBody {
    conn: Arc<Mutex<Conn>>,
    done: bool,
}

impl DaemonBody {
    pub fn new(conn: Arc<Mutex<Conn>>) -> Self {
        DaemonBody { conn, done: false }
    }
}

impl BodySource for DaemonBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(protocol::MAX_CHUNK) as u32;
        let mut c = lock(&self.conn);
        c.send(&Frame::ReadBody { max: want })?;
        match c.recv()? {
            Frame::Body(data) if data.len() <= buf.len() && !data.is_empty() => {
                buf[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
            Frame::BodyEnd => {
                self.done = true;
                Ok(0)
            }
            Frame::Abort => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client went away",
            )),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "unexpected {} frame while reading the request body",
                    other.name()
                ),
            )),
        }
    }
}

/// The response, sent to the httpd child as Head, Chunk... and End (or Fail).
pub struct DaemonSink {
    conn: Arc<Mutex<Conn>>,
    head: Option<Frame>,
}

impl DaemonSink {
    pub fn new(conn: Arc<Mutex<Conn>>) -> Self {
        DaemonSink { conn, head: None }
    }

    fn queue_head(&mut self, c: &mut Conn) -> io::Result<()> {
        if let Some(h) = self.head.take() {
            c.queue(&h)?;
        }
        Ok(())
    }
}

impl ResponseSink for DaemonSink {
    fn set_head(&mut self, head: &Head) {
        let reason = head.status_line.get(3..).unwrap_or("");
        self.head = Some(Frame::Head {
            status: head.status,
            reason: latin1(reason.trim_start()),
            headers: head
                .headers
                .iter()
                .map(|(n, v)| (latin1(n), latin1(v)))
                .collect(),
        });
    }

    fn write(&mut self, data: &[u8], _flush: bool) -> io::Result<()> {
        let conn = Arc::clone(&self.conn);
        let mut c = lock(&conn);
        self.queue_head(&mut c)?;
        for piece in data.chunks(protocol::MAX_CHUNK) {
            c.queue(&Frame::Chunk(piece.to_vec()))?;
            c.flush()?;
        }
        c.flush()
    }

    fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(format!("/proc/self/fd/{fd}"))?;
        f.seek(SeekFrom::Start(offset))?;
        let mut left = len;
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            self.write(&buf[..n], false)?;
            left -= n as u64;
        }
        Ok(())
    }

    fn finish(&mut self, abort: bool) -> io::Result<()> {
        let conn = Arc::clone(&self.conn);
        let mut c = lock(&conn);
        if abort {
            c.send(&Frame::Fail {
                code: 0,
                message: b"response aborted".to_vec(),
            })
        } else {
            self.queue_head(&mut c)?;
            c.send(&Frame::End)
        }
    }
}

/// Header text was validated as latin-1: one byte per character.
fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| c as u32 as u8).collect()
}
