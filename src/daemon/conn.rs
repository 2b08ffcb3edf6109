//! One child<->daemon connection (a UNIX stream with a frame buffer), and the daemon's
//! `wsgi.input` source and response sink over it. `Conn` is used by both ends: the httpd child
//! (client) and the daemon process (server).
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::protocol::{self, Frame, FrameBuffer};
use crate::wsgi::adapter::{BodySource, ResponseSink};
use crate::wsgi::headers::Head;

/// Buffers up to this size are released when a connection goes idle.
const IDLE_SMALL: usize = 128 * 1024;
/// Send buffers larger than this are released too (a 1 MiB response's is not kept per
/// connection).
const IDLE_LARGE: usize = 256 * 1024;

/// A framed connection.
pub struct Conn {
    stream: UnixStream,
    buf: FrameBuffer,
    out: Vec<u8>,
    /// Descriptors received (`SCM_RIGHTS`) and not yet claimed by their `SendFile` frame.
    fds: Vec<OwnedFd>,
    /// The socket timeouts last set.
    timeout: Option<std::time::Duration>,
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
            out: Vec::new(),
            fds: Vec::new(),
            timeout: None,
            broken: false,
        }
    }

    /// Sets the read and write timeouts of the socket (no system call when they are already
    /// set to `t`: a kept connection gets the same value for every request).
    pub fn set_timeouts(&mut self, t: std::time::Duration) {
        if self.timeout == Some(t) {
            return;
        }
        let a = self.stream.set_read_timeout(Some(t));
        let b = self.stream.set_write_timeout(Some(t));
        self.timeout = (a.is_ok() && b.is_ok()).then_some(t);
    }

    /// Makes the next reads wait for at least `bytes` bytes (see `sys::set_recv_low_water`).
    pub fn set_low_water(&mut self, bytes: usize) -> io::Result<()> {
        let r = crate::sys::set_recv_low_water(self.stream.as_raw_fd(), bytes);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Switches the socket between blocking (with the timeouts set) and non-blocking use (an
    /// ASGI request, driven by an event loop: `try_recv` and `try_flush`).
    pub fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        let r = self.stream.set_nonblocking(on);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// The next frame if it has arrived, reading what the socket has without waiting (a
    /// non-blocking socket): `Ok(None)` when the rest has not arrived yet.
    pub fn try_recv(&mut self) -> io::Result<Option<Frame>> {
        let r = (|| {
            loop {
                if let Some(f) = self.buf.next_frame().map_err(proto_err)? {
                    return Ok(Some(f));
                }
                match self.read_more(false) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        })();
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Writes what is queued without waiting (a non-blocking socket): true when all of it is
    /// written, false when the rest waits for the socket to drain.
    pub fn try_flush(&mut self) -> io::Result<bool> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => {
                    self.broken = true;
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Queues a `Chunk` frame carrying `data` (at most `MAX_CHUNK` bytes).
    pub fn queue_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        protocol::encode_chunk(data, &mut self.out).map_err(proto_err)
    }

    /// The socket descriptor (for polling an idle connection).
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.stream)
    }

    /// Gives buffer memory back before the connection waits idle: kept connections are many
    /// (one per httpd worker thread that used the group). Small buffers come back cheaply
    /// from the heap; a large receive buffer is kept (releasing it on every request made a
    /// 1 MiB echo cost twice the CPU: fresh pages each time) within `FrameBuffer`'s limit.
    pub fn trim_idle(&mut self) {
        self.buf.release_small(IDLE_SMALL);
        if self.out.capacity() <= IDLE_SMALL || self.out.capacity() > IDLE_LARGE {
            self.out = Vec::new();
        }
    }

    /// Gives all buffer memory back before the connection waits idle, large buffers too: for
    /// connections kept by every httpd worker thread (embedded ASGI), where a large buffer
    /// each would add up to hundreds of MiB.
    pub fn release_all(&mut self) {
        self.buf.release_small(usize::MAX);
        self.out = Vec::new();
    }

    /// Whether the connection can carry another request: no error, nothing half-read or
    /// half-written.
    pub fn reusable(&self) -> bool {
        !self.broken && self.buf.is_empty() && self.out.is_empty() && self.fds.is_empty()
    }

    /// The descriptor that travelled with the `SendFile` frame just received (the oldest one
    /// not yet claimed; descriptors arrive no later than the bytes they were sent with).
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        (!self.fds.is_empty()).then(|| self.fds.remove(0))
    }

    /// Sends one frame with a descriptor attached (`SendFile`), after anything queued.
    pub fn send_with_fd(&mut self, f: &Frame, fd: RawFd) -> io::Result<()> {
        self.flush()?;
        let mut bytes = Vec::with_capacity(protocol::HEADER_LEN + 16);
        protocol::encode(f, &mut bytes).map_err(proto_err)?;
        let r = crate::sys::send_with_fd(self.stream.as_raw_fd(), &bytes, fd);
        if r.is_err() {
            self.broken = true;
        }
        r
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

    /// Whether bytes of a further frame have already arrived.
    pub fn more_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Whether the next frame has already arrived (its header at least) and is `End`: the
    /// block just received is the last one and can go out with the end of the response
    /// instead of being flushed on its own.
    pub fn end_follows(&self) -> bool {
        self.buf.next_kind() == Some(protocol::kind::END)
    }

    /// Receives the next frame, except that a data frame of `data_kind` (`Body` or `Chunk`)
    /// with at most `dst.len()` bytes goes straight into `dst`: `Ok(Ok(n))`. The part of its
    /// payload not yet read is read from the socket into `dst` directly (no copy through the
    /// frame buffer, no vector per frame). Any other frame is `Ok(Err(frame))`, as `recv` gives
    /// it. With `expect_large`, a read that starts a frame takes only its header first, so a
    /// large payload never passes through the frame buffer at all.
    pub fn recv_data_into(
        &mut self,
        data_kind: u8,
        dst: &mut [u8],
        expect_large: bool,
    ) -> io::Result<Result<usize, Frame>> {
        let r = self.recv_data_inner(data_kind, dst, expect_large);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn recv_data_inner(
        &mut self,
        data_kind: u8,
        dst: &mut [u8],
        expect_large: bool,
    ) -> io::Result<Result<usize, Frame>> {
        loop {
            if let Some(n) = self.buf.begin_data(data_kind, dst.len()) {
                let mut got = self.buf.take_raw(&mut dst[..n]);
                while got < n {
                    got += self.read_socket(&mut dst[got..n], "connection closed mid-frame")?;
                }
                return Ok(Ok(n));
            }
            if let Some(f) = self.buf.next_frame().map_err(proto_err)? {
                return Ok(Err(f));
            }
            self.read_more(expect_large)?;
        }
    }

    /// Sends a data frame (`Body` or `Chunk`) after anything queued, its payload written from
    /// `data` itself (one vectored write with the header; no copy into the send buffer).
    pub fn send_data(&mut self, data_kind: u8, data: &[u8]) -> io::Result<()> {
        let r = self.send_data_inner(data_kind, data);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn send_data_inner(&mut self, data_kind: u8, data: &[u8]) -> io::Result<()> {
        if data.len() > protocol::MAX_CHUNK
            || protocol::max_payload_len(data_kind) != Some(protocol::MAX_CHUNK)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a data frame within MAX_CHUNK",
            ));
        }
        let mut header = [0u8; protocol::HEADER_LEN];
        header[..4].copy_from_slice(&(data.len() as u32 + 1).to_be_bytes());
        header[4] = data_kind;
        let mut bufs = [
            io::IoSlice::new(&self.out),
            io::IoSlice::new(&header),
            io::IoSlice::new(data),
        ];
        let mut bufs: &mut [io::IoSlice<'_>] = &mut bufs;
        io::IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match self.stream.write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        Ok(())
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
            self.read_more(false)?;
        }
    }

    /// One read from the socket into the frame buffer; with `header_only` and no frame
    /// header buffered yet, only the header's bytes.
    fn read_more(&mut self, header_only: bool) -> io::Result<()> {
        let buffered = self.buf.buffered();
        let eof = if self.buf.is_empty() {
            "connection closed"
        } else {
            "connection closed mid-frame"
        };
        let spare = self.buf.spare(16 * 1024);
        let limit = if header_only && buffered < protocol::HEADER_LEN {
            protocol::HEADER_LEN - buffered
        } else {
            spare.len()
        };
        let n = read_socket_into(&self.stream, &mut self.fds, &mut spare[..limit], eof)?;
        self.buf.commit(n);
        Ok(())
    }

    /// One read from the socket into `buf` (descriptors that come with it are kept).
    fn read_socket(&mut self, buf: &mut [u8], eof: &'static str) -> io::Result<usize> {
        read_socket_into(&self.stream, &mut self.fds, buf, eof)
    }
}

/// One read from `stream` into `buf`, retried after a signal (e.g. prefork's graceful-restart
/// signal); descriptors that arrive with the bytes go to `fds`. EOF is `UnexpectedEof` with
/// `eof` as its message.
fn read_socket_into(
    stream: &UnixStream,
    fds: &mut Vec<OwnedFd>,
    buf: &mut [u8],
    eof: &'static str,
) -> io::Result<usize> {
    loop {
        match crate::sys::recv_with_fds(stream.as_raw_fd(), buf, fds) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, eof)),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
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
        let want = buf.len().min(protocol::MAX_CHUNK);
        let mut c = lock(&self.conn);
        c.send(&Frame::ReadBody { max: want as u32 })?;
        // The body bytes go from the socket into `buf` (for a large read, the `bytes` object
        // handed to the application) without an intermediate copy.
        let frame = match c.recv_data_into(protocol::kind::BODY, &mut buf[..want], want >= LARGE)? {
            Ok(n) => return Ok(n),
            Err(frame) => frame,
        };
        match frame {
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

/// A body read of at least this many bytes reads frame headers on their own first (see
/// `Conn::recv_data_into`).
const LARGE: usize = 64 * 1024;

/// Queued response bytes are written once they reach this much.
const WRITE_BATCH: usize = 256 * 1024;

/// The response, sent to the httpd child as Head, Chunk... and End (or Fail).
pub struct DaemonSink {
    conn: Arc<Mutex<Conn>>,
    head: Option<Frame>,
}

impl DaemonSink {
    pub fn new(conn: Arc<Mutex<Conn>>) -> Self {
        DaemonSink { conn, head: None }
    }

    /// Sends `len` bytes from `offset` of the file open on `fd` as `Chunk` frames (positioned
    /// reads: the file's offset is left alone).
    fn stream_file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        let (mut at, end) = (offset, offset.saturating_add(len));
        while at < end {
            let want = (end - at).min(buf.len() as u64) as usize;
            let n = crate::sys::pread(fd, &mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            self.write(&buf[..n], false)?;
            at += n as u64;
        }
        Ok(())
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

    fn write(&mut self, data: &[u8], flush: bool) -> io::Result<()> {
        let conn = Arc::clone(&self.conn);
        let mut c = lock(&conn);
        self.queue_head(&mut c)?;
        for piece in data.chunks(protocol::MAX_CHUNK) {
            if piece.len() >= WRITE_BATCH {
                // Large: written from the application's bytes with what is queued, no copy.
                c.send_data(protocol::kind::CHUNK, piece)?;
                continue;
            }
            c.queue_chunk(piece)?;
            if c.queued() >= WRITE_BATCH {
                c.flush()?;
            }
        }
        // Unflushed output (a list or tuple result) leaves with the next block or with `End`:
        // a small response is one write, and one wake-up of the httpd child.
        if flush { c.flush() } else { Ok(()) }
    }

    fn buffers(&self, len: usize, flush: bool) -> bool {
        !flush && lock(&self.conn).queued() + len + protocol::HEADER_LEN < WRITE_BATCH
    }

    fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
        // The httpd child sends the file itself: its descriptor travels with the `SendFile`
        // frame. A new open file description (its own offset), so the child's reads and the
        // application's use of its file object never move each other's position.
        // If it cannot be reopened (e.g. unlinked and opened by another user), the bytes are
        // streamed as `Chunk`s instead.
        match std::fs::File::open(format!("/proc/self/fd/{fd}")) {
            Ok(f) => {
                let conn = Arc::clone(&self.conn);
                let mut c = lock(&conn);
                self.queue_head(&mut c)?;
                c.send_with_fd(&Frame::SendFile { offset, len }, f.as_raw_fd())
            }
            Err(_) => self.stream_file(fd, offset, len),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn send_file_frame_carries_its_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (Conn::new(a), Conn::new(b));
        let path = std::env::temp_dir().join(format!("rwsgi-conn-fd-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();

        tx.queue(&Frame::Chunk(b"before".to_vec())).unwrap();
        tx.send_with_fd(&Frame::SendFile { offset: 3, len: 4 }, file.as_raw_fd())
            .unwrap();
        drop(file); // the receiver's descriptor keeps the (unlinked) file open
        tx.send(&Frame::End).unwrap();

        assert_eq!(rx.recv().unwrap(), Frame::Chunk(b"before".to_vec()));
        assert_eq!(rx.recv().unwrap(), Frame::SendFile { offset: 3, len: 4 });
        let fd = rx
            .take_fd()
            .expect("the descriptor travelled with the frame");
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).unwrap();
        assert_eq!(text, "0123456789");
        assert_eq!(rx.recv().unwrap(), Frame::End);
        assert!(rx.take_fd().is_none());
        assert!(rx.reusable());
    }

    #[test]
    fn an_unclaimed_descriptor_makes_the_connection_unreusable() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (Conn::new(a), Conn::new(b));
        let file = std::fs::File::open("/dev/null").unwrap();
        tx.send_with_fd(&Frame::End, file.as_raw_fd()).unwrap();
        assert_eq!(rx.recv().unwrap(), Frame::End);
        assert!(!rx.reusable());
        assert!(rx.take_fd().is_some());
        assert!(rx.reusable());
    }
}
