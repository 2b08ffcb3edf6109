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
    /// The httpd child's buffer for request-body and response bytes (see `take_scratch`).
    scratch: Vec<u8>,
}

fn proto_err(e: protocol::ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Where [`Conn::recv_data_to`] puts a data frame's payload: filled in order, straight from
/// the socket, without being zeroed first.
pub trait PayloadDst {
    /// Bytes that still fit.
    fn room(&self) -> usize;
    /// Makes room for `n` more bytes (within `room`).
    fn reserve(&mut self, _n: usize) {}
    /// Appends bytes that already arrived (at most `room`).
    fn put(&mut self, data: &[u8]);
    /// One receive of at most `max` bytes (within `room`) from the socket; descriptors that
    /// arrive with them go to `fds`. `Ok(0)`: the end of the stream.
    fn recv(&mut self, sock: RawFd, max: usize, fds: &mut Vec<OwnedFd>) -> io::Result<usize>;
}

/// A slice filled from its start.
struct SliceDst<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl PayloadDst for SliceDst<'_> {
    fn room(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn put(&mut self, data: &[u8]) {
        self.buf[self.pos..self.pos + data.len()].copy_from_slice(data);
        self.pos += data.len();
    }

    fn recv(&mut self, sock: RawFd, max: usize, fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        let end = self.pos + max.min(self.room());
        let n = crate::sys::recv_with_fds(sock, &mut self.buf[self.pos..end], fds)?;
        self.pos += n;
        Ok(n)
    }
}

/// A vector appended to, up to one data frame's bound.
impl PayloadDst for Vec<u8> {
    fn room(&self) -> usize {
        protocol::MAX_CHUNK.saturating_sub(self.len())
    }

    fn reserve(&mut self, n: usize) {
        Vec::reserve_exact(self, n);
    }

    fn put(&mut self, data: &[u8]) {
        self.extend_from_slice(data);
    }

    fn recv(&mut self, sock: RawFd, max: usize, fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        crate::sys::recv_append(sock, self, max, fds)
    }
}

/// A new `bytes` object's unwritten part (a large `wsgi.input.read(n)`).
impl PayloadDst for crate::pybytes::BytesWriter {
    fn room(&self) -> usize {
        self.remaining()
    }

    fn put(&mut self, data: &[u8]) {
        self.extend_from_slice(data);
    }

    fn recv(&mut self, sock: RawFd, max: usize, fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        self.recv_from(sock, max, fds)
    }
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
            scratch: Vec::new(),
        }
    }

    /// The buffer the httpd child's relay fills with request-body and response bytes, kept
    /// with the connection between requests ([`keep_scratch`](Self::keep_scratch)) as a large
    /// frame buffer is: a 1 MiB body then reuses its pages instead of faulting in fresh ones
    /// every request.
    pub fn take_scratch(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.scratch)
    }

    pub fn keep_scratch(&mut self, v: Vec<u8>) {
        self.scratch = v;
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
        if self.scratch.capacity() <= IDLE_SMALL {
            self.scratch = Vec::new();
        }
    }

    /// Gives all buffer memory back before the connection waits idle, large buffers too: for
    /// connections kept by every httpd worker thread (embedded ASGI), where a large buffer
    /// each would add up to hundreds of MiB.
    pub fn release_all(&mut self) {
        self.buf.release_small(usize::MAX);
        self.out = Vec::new();
        self.scratch = Vec::new();
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
    /// with at most `dst.room()` bytes goes straight into `dst`: `Ok(Ok(n))`. The part of its
    /// payload not yet read is read from the socket into `dst` directly (no copy through the
    /// frame buffer, no vector per frame, nothing zeroed). Any other frame is `Ok(Err(frame))`,
    /// as `recv` gives it. With `expect_large`, a read that starts a frame takes only its header
    /// first, so a large payload never passes through the frame buffer at all.
    pub fn recv_data_to<D: PayloadDst + ?Sized>(
        &mut self,
        data_kind: u8,
        dst: &mut D,
        expect_large: bool,
    ) -> io::Result<Result<usize, Frame>> {
        let r = self.recv_data_inner(data_kind, dst, expect_large);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn recv_data_inner<D: PayloadDst + ?Sized>(
        &mut self,
        data_kind: u8,
        dst: &mut D,
        expect_large: bool,
    ) -> io::Result<Result<usize, Frame>> {
        loop {
            if let Some(n) = self.buf.begin_data(data_kind, dst.room()) {
                dst.reserve(n);
                let mut got = {
                    let arrived = self.buf.take_raw_slice(n);
                    dst.put(arrived);
                    arrived.len()
                };
                let sock = self.stream.as_raw_fd();
                while got < n {
                    got += retrying("connection closed mid-frame", || {
                        dst.recv(sock, n - got, &mut self.fds)
                    })?;
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
}

/// One read from `stream` into `buf` (see `retrying`); descriptors that arrive with the bytes
/// go to `fds`.
fn read_socket_into(
    stream: &UnixStream,
    fds: &mut Vec<OwnedFd>,
    buf: &mut [u8],
    eof: &'static str,
) -> io::Result<usize> {
    retrying(eof, || {
        crate::sys::recv_with_fds(stream.as_raw_fd(), buf, fds)
    })
}

/// Runs one receive, again after a signal (e.g. prefork's graceful-restart signal); the end
/// of the stream is `UnexpectedEof` with `eof` as its message. Every read of a connection
/// goes through here.
fn retrying(eof: &'static str, mut recv: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match recv() {
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

    /// One `ReadBody` of at most `dst.room()` bytes (and `MAX_CHUNK`), answered into `dst`.
    fn read_to<D: PayloadDst + ?Sized>(&mut self, dst: &mut D) -> io::Result<usize> {
        let want = dst.room().min(protocol::MAX_CHUNK);
        if self.done || want == 0 {
            return Ok(0);
        }
        let mut c = lock(&self.conn);
        c.send(&Frame::ReadBody { max: want as u32 })?;
        // The body bytes go from the socket into `dst` (for a large read, the `bytes` object
        // handed to the application) without an intermediate copy.
        let frame = match c.recv_data_to(protocol::kind::BODY, dst, want >= LARGE)? {
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

impl BodySource for DaemonBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_to(&mut SliceDst { buf, pos: 0 })
    }

    fn read_into(&mut self, out: &mut crate::pybytes::BytesWriter) -> io::Result<usize> {
        self.read_to(out)
    }
}

/// A body read of at least this many bytes reads frame headers on their own first (see
/// `Conn::recv_data_to`).
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

    #[test]
    fn data_frames_go_straight_into_their_destination() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (Conn::new(a), Conn::new(b));
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let writer = std::thread::spawn(move || {
            tx.send_data(protocol::kind::CHUNK, &big).unwrap();
            tx.send(&Frame::Chunk(Vec::new())).unwrap();
            tx.send_data(protocol::kind::CHUNK, b"small").unwrap();
            tx.send_data(protocol::kind::BODY, b"0123456789").unwrap();
            tx.send(&Frame::End).unwrap();
            big
        });
        // Into a vector, in both read modes; an empty block is decoded as a frame.
        let mut v = Vec::new();
        assert_eq!(
            rx.recv_data_to(protocol::kind::CHUNK, &mut v, true)
                .unwrap()
                .unwrap(),
            600_000
        );
        let big = writer.join().unwrap();
        assert!(v == big, "the large payload arrived intact");
        v.clear();
        assert_eq!(
            rx.recv_data_to(protocol::kind::CHUNK, &mut v, false)
                .unwrap(),
            Err(Frame::Chunk(Vec::new()))
        );
        assert_eq!(
            rx.recv_data_to(protocol::kind::CHUNK, &mut v, false)
                .unwrap(),
            Ok(5)
        );
        assert_eq!(v, b"small");
        // A slice too small for the payload: the frame is decoded whole instead.
        let mut small = [0u8; 4];
        let mut dst = SliceDst {
            buf: &mut small,
            pos: 0,
        };
        assert_eq!(
            rx.recv_data_to(protocol::kind::BODY, &mut dst, false)
                .unwrap(),
            Err(Frame::Body(b"0123456789".to_vec()))
        );
        // Another kind than the one asked for is decoded too.
        assert_eq!(
            rx.recv_data_to(protocol::kind::BODY, &mut v, false)
                .unwrap(),
            Err(Frame::End)
        );
        assert!(rx.reusable());
    }

    #[test]
    fn a_data_frame_cut_short_is_an_error_and_breaks_the_connection() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut rx = Conn::new(b);
        let mut wire = Vec::new();
        protocol::encode(&Frame::Chunk(vec![7u8; 100_000]), &mut wire).unwrap();
        let mut a = a;
        a.write_all(&wire[..50_000]).unwrap();
        drop(a);
        let mut v = Vec::new();
        let e = rx
            .recv_data_to(protocol::kind::CHUNK, &mut v, false)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(!rx.reusable());
    }
}
