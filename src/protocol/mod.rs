//! The child/daemon wire protocol codec (pure, no I/O): frame types, `encode`, `decode` and the
//! streaming [`FrameBuffer`]. Used by both ends of the UNIX socket: the httpd child and daemon.
//!
//! # Wire format
//!
//! Every frame is
//!
//! ```text
//! len: u32   number of bytes that follow (the kind byte plus the payload), never 0
//! kind: u8   what the payload is (see below)
//! payload    len - 1 bytes
//! ```
//!
//! All integers are big-endian. Byte strings are length-prefixed (`u16` or `u32` as listed) and
//! carried as raw bytes: environ values and headers are latin-1, not UTF-8.
//!
//! | kind | frame | direction | payload | payload bound |
//! |------|-------|-----------|---------|---------------|
//! | 0x01 | `Hello` | child -> daemon | `b"RWSG"`, version u16, secret `[u8; 16]`, generation u32 | exactly 26 |
//! | 0x02 | `Request` | child -> daemon | the request's [`RequestMeta`] (39 bytes: flags u8 — 1 HEAD, 2 HTTPS, 4 main interpreter, 8 WSGI forced, 16 ASGI forced —, server id u64, script mtime i64, request start i64, queue start i64, Apache version 3 × u16), then count u32, then per pair: key len u16, key, value len u32, value | [`MAX_ENV_FRAME`], count <= [`MAX_ENV_ITEMS`] |
//! | 0x03 | `Body` | child -> daemon | request-body bytes | [`MAX_CHUNK`] |
//! | 0x04 | `BodyEnd` | child -> daemon | empty | 0 |
//! | 0x05 | `Abort` | child -> daemon | empty (the client went away) | 0 |
//! | 0x06 | `WsMessage` | both | flags u8 (1 text, 2 final part), then the message's bytes (a message larger than `MAX_CHUNK` travels in parts) | 1 + [`MAX_CHUNK`] |
//! | 0x07 | `WsClose` | both | code u16, reason (UTF-8, the rest) | 2 + 123 |
//! | 0x10 | `ReadBody` | daemon -> child | max u32 | exactly 4 |
//! | 0x11 | `Head` | daemon -> child | status u16, reason len u16, reason, count u16, then per header: name len u16, name, value len u32, value | [`MAX_HEAD_FRAME`], count <= [`MAX_HEADERS`] |
//! | 0x12 | `Chunk` | daemon -> child | response-body bytes | [`MAX_CHUNK`] |
//! | 0x13 | `SendFile` | daemon -> child | offset u64, len u64 (the fd travels via `SCM_RIGHTS`) | exactly 16 |
//! | 0x14 | `End` | daemon -> child | empty (the response is complete) | 0 |
//! | 0x15 | `Fail` | daemon -> child | code u16, message len u16, message | 4 + 65535 |
//! | 0x16 | `Reject` | daemon -> child | reason u8 (see `REJECT_*`) | exactly 1 |
//! | 0x17 | `Welcome` | daemon -> child | empty: a live daemon process accepted the connection | 0 |
//! | 0x18 | `Accepted` | daemon -> child | empty: the daemon has read the request and runs it | 0 |
//! | 0x19 | `Watch` | daemon -> child | empty: report the client going away (`Abort`) until the response ends | 0 |
//! | 0x1A | `WsAccept` | daemon -> child | subprotocol len u16, subprotocol (empty: none), count u16, then headers as in `Head` | [`MAX_HEAD_FRAME`] |
//!
//! Bounds apply to the payload (the frame minus its 5-byte header), so a frame never occupies
//! more than [`MAX_FRAME`] + 5 bytes on the wire. [`decode`] rejects an oversized frame as soon as
//! its length prefix (and kind byte, when present) arrive, before the payload is buffered; a
//! fixed-size frame whose length prefix is larger than its size is oversized too. Every
//! length-prefixed field is checked against the bytes left in the frame before anything is
//! allocated for it, and a frame with bytes left over after its last field is malformed.
//!
//! # Conversation
//!
//! The child connects and sends `Hello` then `Request`. The daemon's dispatcher answers every
//! new connection with `Welcome` at once (so a child can tell a dead group from a busy one).
//! A connection carries any number of requests, one after the other (`Hello` only once).
//! For each `Request` the daemon either answers `Reject`, or sends `Accepted` (before anything
//! of the application runs: until then the child may safely send the request elsewhere) and
//! runs the application: it asks for request-body bytes with `ReadBody` (the child answers with
//! exactly one `Body` of at most `min(max, MAX_CHUNK)` bytes, or `BodyEnd`), then sends `Head`,
//! any number of `Chunk`/`SendFile`, and `End`; or `Fail` if no response could be produced. The
//! child sends `Abort` when the client goes away: in answer to `ReadBody` when reading the body
//! fails and, after the daemon sent `Watch` (an ASGI application waits on `receive()`), as soon
//! as it sees the client close while it waits for the response. Such an `Abort` may cross the
//! response's last frame: a daemon ignores an `Abort` where it expects a `Request`. This codec checks framing only: ordering,
//! the version, secret and generation in `Hello`, and status values are the callers' business.
#![forbid(unsafe_code)]

mod buffer;
#[cfg(test)]
mod test_support;

pub use buffer::{FrameBuffer, MAX_BUFFERED};

use std::fmt;

pub use crate::request::{Interface, RequestMeta};

/// The protocol version carried in `Hello`; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 3;
/// The magic that starts a `Hello` payload.
pub const MAGIC: [u8; 4] = *b"RWSG";
/// Length of the shared secret in `Hello`.
pub const SECRET_LEN: usize = 16;
/// Bytes before the payload: the `u32` length prefix and the kind byte.
pub const HEADER_LEN: usize = 5;

/// Most environ pairs in one `Request`.
pub const MAX_ENV_ITEMS: usize = 4096;
/// Largest `Request` payload (16 MiB).
pub const MAX_ENV_FRAME: usize = 16 << 20;
/// Largest `Body` or `Chunk` payload (1 MiB).
pub const MAX_CHUNK: usize = 1 << 20;
/// Most headers in one `Head`.
pub const MAX_HEADERS: usize = 1024;
/// Largest `Head` payload (1 MiB).
pub const MAX_HEAD_FRAME: usize = 1 << 20;
/// Largest `WsClose` payload: a code and a reason that fits a WebSocket close frame.
pub const MAX_WS_CLOSE: usize = 2 + 123;
/// Largest payload of any frame; applies while the kind byte has not arrived yet.
pub const MAX_FRAME: usize = MAX_ENV_FRAME;

/// `Reject` reason: wrong secret or generation in `Hello` (or a version the daemon does not speak).
pub const REJECT_BAD_CREDENTIALS: u8 = 1;
/// `Reject` reason: the daemon is shutting down or restarting.
pub const REJECT_SHUTTING_DOWN: u8 = 2;
/// `Reject` reason: the request waited too long in the daemon's queue.
pub const REJECT_QUEUE_TIMEOUT: u8 = 3;
/// `Reject` reason: not run here (an httpd child's own event loop, sent a request that is no
/// ASGI request of its interpreter): the child serves it the other way.
pub const REJECT_ELSEWHERE: u8 = 4;

/// The kind bytes.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const REQUEST: u8 = 0x02;
    pub const BODY: u8 = 0x03;
    pub const BODY_END: u8 = 0x04;
    pub const ABORT: u8 = 0x05;
    pub const WS_MESSAGE: u8 = 0x06;
    pub const WS_CLOSE: u8 = 0x07;
    pub const READ_BODY: u8 = 0x10;
    pub const HEAD: u8 = 0x11;
    pub const CHUNK: u8 = 0x12;
    pub const SEND_FILE: u8 = 0x13;
    pub const END: u8 = 0x14;
    pub const FAIL: u8 = 0x15;
    pub const REJECT: u8 = 0x16;
    pub const WELCOME: u8 = 0x17;
    pub const ACCEPTED: u8 = 0x18;
    pub const WATCH: u8 = 0x19;
    pub const WS_ACCEPT: u8 = 0x1A;

    /// Every kind, in numeric order.
    pub const ALL: [u8; 18] = [
        HELLO, REQUEST, BODY, BODY_END, ABORT, WS_MESSAGE, WS_CLOSE, READ_BODY, HEAD, CHUNK,
        SEND_FILE, END, FAIL, REJECT, WELCOME, ACCEPTED, WATCH, WS_ACCEPT,
    ];
}

/// Payload size of a `Hello`: magic, version, secret, generation.
const HELLO_LEN: usize = 4 + 2 + SECRET_LEN + 4;
/// Largest `Fail` payload: code, message length, a message of up to `u16::MAX` bytes.
const MAX_FAIL: usize = 2 + 2 + u16::MAX as usize;
/// Smallest encoding of one environ pair or header (two empty strings).
const MIN_PAIR: usize = 2 + 4;
/// The part of a `Request` payload before its pairs: the meta and the pair count.
const REQUEST_FIXED: usize = RequestMeta::ENCODED_LEN + 4;

/// The largest payload a frame of this kind may carry, or `None` for an unknown kind.
pub fn max_payload_len(kind: u8) -> Option<usize> {
    Some(match kind {
        kind::HELLO => HELLO_LEN,
        kind::REQUEST => MAX_ENV_FRAME,
        kind::BODY | kind::CHUNK => MAX_CHUNK,
        kind::BODY_END | kind::ABORT | kind::END | kind::WELCOME | kind::ACCEPTED | kind::WATCH => {
            0
        }
        kind::READ_BODY => 4,
        kind::HEAD | kind::WS_ACCEPT => MAX_HEAD_FRAME,
        kind::WS_MESSAGE => 1 + MAX_CHUNK,
        kind::WS_CLOSE => MAX_WS_CLOSE,
        kind::SEND_FILE => 16,
        kind::FAIL => MAX_FAIL,
        kind::REJECT => 1,
        _ => return None,
    })
}

/// A WebSocket message as `WsMessage` frames: parts of at most `MAX_CHUNK` bytes, the last
/// one `fin` (an empty message is one empty part).
pub fn ws_message_frames(text: bool, data: &[u8]) -> impl Iterator<Item = Frame> + '_ {
    let parts = data.len().div_ceil(MAX_CHUNK).max(1);
    (0..parts).map(move |i| Frame::WsMessage {
        text,
        fin: i + 1 == parts,
        data: data[i * MAX_CHUNK..((i + 1) * MAX_CHUNK).min(data.len())].to_vec(),
    })
}

/// The frame name for a kind byte, for logs.
pub fn kind_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        kind::HELLO => "Hello",
        kind::REQUEST => "Request",
        kind::BODY => "Body",
        kind::BODY_END => "BodyEnd",
        kind::ABORT => "Abort",
        kind::READ_BODY => "ReadBody",
        kind::HEAD => "Head",
        kind::WS_MESSAGE => "WsMessage",
        kind::WS_CLOSE => "WsClose",
        kind::WS_ACCEPT => "WsAccept",
        kind::CHUNK => "Chunk",
        kind::SEND_FILE => "SendFile",
        kind::END => "End",
        kind::WELCOME => "Welcome",
        kind::ACCEPTED => "Accepted",
        kind::WATCH => "Watch",
        kind::FAIL => "Fail",
        kind::REJECT => "Reject",
        _ => return None,
    })
}

/// One protocol message. Byte strings are raw bytes (latin-1 in HTTP terms), never re-encoded.
///
/// `Debug` prints byte strings escaped and never prints the `Hello` secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// Child -> daemon, first on a connection: who is calling.
    Hello {
        version: u16,
        secret: [u8; SECRET_LEN],
        generation: u32,
    },
    /// Child -> daemon: the request: its typed facts and its environ, in order.
    Request {
        meta: RequestMeta,
        env: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Child -> daemon: a request-body chunk of at most [`MAX_CHUNK`] bytes, answering `ReadBody`.
    Body(Vec<u8>),
    /// Child -> daemon: the request body is exhausted, answering `ReadBody`.
    BodyEnd,
    /// Child -> daemon: the client went away; stop the request.
    Abort,
    /// Either way, on an accepted WebSocket: (part of) a message; `fin` on its last part.
    WsMessage {
        text: bool,
        fin: bool,
        data: Vec<u8>,
    },
    /// Either way, on an accepted WebSocket: the closing handshake's code and reason (the
    /// child reports a client gone without one as 1006).
    WsClose { code: u16, reason: Vec<u8> },
    /// Daemon -> child: send up to `max` request-body bytes.
    ReadBody { max: u32 },
    /// Daemon -> child: the response status line and headers.
    Head {
        status: u16,
        reason: Vec<u8>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Daemon -> child: response-body bytes, at most [`MAX_CHUNK`].
    Chunk(Vec<u8>),
    /// Daemon -> child: send `len` bytes at `offset` of the file whose descriptor travels
    /// alongside this frame (`SCM_RIGHTS`).
    SendFile { offset: u64, len: u64 },
    /// Daemon -> child: the response is complete.
    End,
    /// The daemon accepted a new connection (sent by its dispatcher at once).
    Welcome,
    /// The daemon has read the request and is running it.
    Accepted,
    /// Daemon -> child: from now until the response ends, send `Abort` as soon as the client
    /// goes away (an ASGI application waits for `http.disconnect`).
    Watch,
    /// Daemon -> child: the application accepted the WebSocket: send the 101 with this
    /// subprotocol (empty: none) and headers, then relay messages.
    WsAccept {
        subprotocol: Vec<u8>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Daemon -> child: no response could be produced.
    Fail { code: u16, message: Vec<u8> },
    /// Daemon -> child: the request was refused before running (see `REJECT_*`).
    Reject { reason: u8 },
}

impl Frame {
    /// The kind byte of this frame.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => kind::HELLO,
            Frame::Request { .. } => kind::REQUEST,
            Frame::Body(_) => kind::BODY,
            Frame::BodyEnd => kind::BODY_END,
            Frame::Abort => kind::ABORT,
            Frame::WsMessage { .. } => kind::WS_MESSAGE,
            Frame::WsClose { .. } => kind::WS_CLOSE,
            Frame::WsAccept { .. } => kind::WS_ACCEPT,
            Frame::ReadBody { .. } => kind::READ_BODY,
            Frame::Head { .. } => kind::HEAD,
            Frame::Chunk(_) => kind::CHUNK,
            Frame::SendFile { .. } => kind::SEND_FILE,
            Frame::End => kind::END,
            Frame::Welcome => kind::WELCOME,
            Frame::Accepted => kind::ACCEPTED,
            Frame::Watch => kind::WATCH,
            Frame::Fail { .. } => kind::FAIL,
            Frame::Reject { .. } => kind::REJECT,
        }
    }

    /// The frame name, for logs.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind()).unwrap_or("?")
    }
}

/// Formats a byte string as an escaped `b"..."` literal.
struct Bytes<'a>(&'a [u8]);

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Formats a list of byte-string pairs.
struct Pairs<'a>(&'a [(Vec<u8>, Vec<u8>)]);

impl fmt::Debug for Pairs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, v)| (Bytes(k), Bytes(v))))
            .finish()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Hello {
                version,
                secret: _,
                generation,
            } => f
                .debug_struct("Hello")
                .field("version", version)
                .field("secret", &format_args!("<redacted>"))
                .field("generation", generation)
                .finish(),
            Frame::Request { meta, env } => f
                .debug_struct("Request")
                .field("meta", meta)
                .field("env", &Pairs(env))
                .finish(),
            Frame::Body(data) => f.debug_tuple("Body").field(&Bytes(data)).finish(),
            Frame::BodyEnd => f.write_str("BodyEnd"),
            Frame::Abort => f.write_str("Abort"),
            Frame::WsMessage { text, fin, data } => f
                .debug_struct("WsMessage")
                .field("text", text)
                .field("fin", fin)
                .field("data", &Bytes(data))
                .finish(),
            Frame::WsClose { code, reason } => f
                .debug_struct("WsClose")
                .field("code", code)
                .field("reason", &Bytes(reason))
                .finish(),
            Frame::WsAccept {
                subprotocol,
                headers,
            } => f
                .debug_struct("WsAccept")
                .field("subprotocol", &Bytes(subprotocol))
                .field("headers", &Pairs(headers))
                .finish(),
            Frame::ReadBody { max } => f.debug_struct("ReadBody").field("max", max).finish(),
            Frame::Head {
                status,
                reason,
                headers,
            } => f
                .debug_struct("Head")
                .field("status", status)
                .field("reason", &Bytes(reason))
                .field("headers", &Pairs(headers))
                .finish(),
            Frame::Chunk(data) => f.debug_tuple("Chunk").field(&Bytes(data)).finish(),
            Frame::SendFile { offset, len } => f
                .debug_struct("SendFile")
                .field("offset", offset)
                .field("len", len)
                .finish(),
            Frame::End => f.write_str("End"),
            Frame::Welcome => f.write_str("Welcome"),
            Frame::Accepted => f.write_str("Accepted"),
            Frame::Watch => f.write_str("Watch"),
            Frame::Fail { code, message } => f
                .debug_struct("Fail")
                .field("code", code)
                .field("message", &Bytes(message))
                .finish(),
            Frame::Reject { reason } => f.debug_struct("Reject").field("reason", reason).finish(),
        }
    }
}

/// Why a frame could not be encoded or decoded. After a decode error the stream is out of
/// sync: the connection must be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// A payload of `len` bytes exceeds the bound `max` for its kind (`None`: the kind byte
    /// had not arrived; `max` is then [`MAX_FRAME`]).
    TooLarge {
        kind: Option<u8>,
        len: u64,
        max: u64,
    },
    /// The kind byte is not one this version knows.
    UnknownKind(u8),
    /// A `Hello` payload does not start with [`MAGIC`]: the peer is not mod_rwsgi.
    BadMagic,
    /// The payload does not parse (a field runs past the frame, bytes are left over, a count
    /// exceeds its bound); on encode, a field too long for its length prefix.
    Malformed(&'static str),
    /// A length prefix of 0: a frame without even a kind byte.
    Empty,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtocolError::TooLarge {
                kind: Some(k),
                len,
                max,
            } => write!(
                f,
                "protocol frame too large: {} (kind 0x{k:02x}) payload of {len} bytes exceeds \
                 the limit of {max} bytes",
                kind_name(k).unwrap_or("unknown frame"),
            ),
            ProtocolError::TooLarge {
                kind: None,
                len,
                max,
            } => write!(
                f,
                "protocol frame too large: payload of {len} bytes exceeds the limit of {max} \
                 bytes for any frame"
            ),
            ProtocolError::UnknownKind(k) => write!(f, "unknown protocol frame kind 0x{k:02x}"),
            ProtocolError::BadMagic => f.write_str(
                "bad magic in protocol Hello frame: the peer is not a mod_rwsgi process",
            ),
            ProtocolError::Malformed(what) => write!(f, "malformed protocol frame: {what}"),
            ProtocolError::Empty => f.write_str("empty protocol frame (length 0, no kind byte)"),
        }
    }
}

impl std::error::Error for ProtocolError {}

fn too_large(kind: Option<u8>, len: usize, max: usize) -> ProtocolError {
    ProtocolError::TooLarge {
        kind,
        len: len as u64,
        max: max as u64,
    }
}

/// Validates `frame` against its bounds and returns its payload length.
fn payload_len(frame: &Frame) -> Result<usize, ProtocolError> {
    let k = frame.kind();
    let checked = |len: usize| {
        let max = max_payload_len(k).unwrap_or(0);
        if len > max {
            Err(too_large(Some(k), len, max))
        } else {
            Ok(len)
        }
    };
    match frame {
        Frame::Hello { .. } => Ok(HELLO_LEN),
        Frame::Request { env, .. } => {
            if env.len() > MAX_ENV_ITEMS {
                return Err(ProtocolError::Malformed(
                    "Request has more than MAX_ENV_ITEMS (4096) environ items",
                ));
            }
            let mut len: usize = REQUEST_FIXED;
            for (key, value) in env {
                if key.len() > usize::from(u16::MAX) {
                    return Err(ProtocolError::Malformed(
                        "Request environ key longer than 65535 bytes",
                    ));
                }
                len = len
                    .saturating_add(MIN_PAIR + key.len())
                    .saturating_add(value.len());
            }
            // Bounds every value below u32::MAX too.
            checked(len)
        }
        Frame::Body(data) | Frame::Chunk(data) => checked(data.len()),
        Frame::BodyEnd
        | Frame::Abort
        | Frame::End
        | Frame::Welcome
        | Frame::Accepted
        | Frame::Watch => Ok(0),
        Frame::ReadBody { .. } => Ok(4),
        Frame::Head {
            reason, headers, ..
        } => {
            if reason.len() > usize::from(u16::MAX) {
                return Err(ProtocolError::Malformed(
                    "Head reason phrase longer than 65535 bytes",
                ));
            }
            checked(2 + 2 + reason.len() + headers_len(headers, &HEAD_HEADERS)?)
        }
        Frame::SendFile { .. } => Ok(16),
        Frame::Fail { message, .. } => checked(4usize.saturating_add(message.len())),
        Frame::WsMessage { data, .. } => checked(1usize.saturating_add(data.len())),
        Frame::WsClose { reason, .. } => checked(2usize.saturating_add(reason.len())),
        Frame::WsAccept {
            subprotocol,
            headers,
        } => {
            if subprotocol.len() > usize::from(u16::MAX) {
                return Err(ProtocolError::Malformed(
                    "WsAccept subprotocol longer than 65535 bytes",
                ));
            }
            checked(2 + subprotocol.len() + headers_len(headers, &WS_ACCEPT_HEADERS)?)
        }
        Frame::Reject { .. } => Ok(1),
    }
}

/// A header list as frames carry it: raw name and value bytes.
type HeaderPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// How a frame's header list (`Head`, `WsAccept`) fails: each message names the frame.
struct HeaderList {
    too_many: &'static str,
    name_long: &'static str,
    count_past: &'static str,
    name_past: &'static str,
    value_past: &'static str,
}

const HEAD_HEADERS: HeaderList = HeaderList {
    too_many: "Head has more than MAX_HEADERS (1024) headers",
    name_long: "Head header name longer than 65535 bytes",
    count_past: "Head header count larger than the frame holds",
    name_past: "Head header name runs past the end of the frame",
    value_past: "Head header value runs past the end of the frame",
};

const WS_ACCEPT_HEADERS: HeaderList = HeaderList {
    too_many: "WsAccept has more than MAX_HEADERS (1024) headers",
    name_long: "WsAccept header name longer than 65535 bytes",
    count_past: "WsAccept header count larger than the frame holds",
    name_past: "WsAccept header name runs past the end of the frame",
    value_past: "WsAccept header value runs past the end of the frame",
};

/// The encoded size of a header list (count u16, then u16-prefixed names and u32-prefixed
/// values), checked against its bounds.
fn headers_len(headers: &[(Vec<u8>, Vec<u8>)], l: &HeaderList) -> Result<usize, ProtocolError> {
    if headers.len() > MAX_HEADERS {
        return Err(ProtocolError::Malformed(l.too_many));
    }
    let mut len: usize = 2;
    for (name, value) in headers {
        if name.len() > usize::from(u16::MAX) {
            return Err(ProtocolError::Malformed(l.name_long));
        }
        len = len
            .saturating_add(MIN_PAIR + name.len())
            .saturating_add(value.len());
    }
    Ok(len)
}

/// Appends a header list; its bounds were validated by `headers_len`.
fn put_headers(out: &mut Vec<u8>, headers: &[(Vec<u8>, Vec<u8>)]) {
    out.extend_from_slice(&(headers.len() as u16).to_be_bytes());
    for (name, value) in headers {
        put_bytes16(out, name);
        put_bytes32(out, value);
    }
}

/// Appends a byte string with a `u16` length prefix; the length was validated by `payload_len`.
fn put_bytes16(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a byte string with a `u32` length prefix; the length was validated by `payload_len`.
fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends one encoded frame to `out`. On error (a frame exceeding its bounds, a field too long
/// for its length prefix: a programming error in the caller) `out` is left untouched.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let payload = payload_len(frame)?;
    // payload <= MAX_FRAME, so the length prefix fits a u32.
    let len = u32::try_from(payload + 1).map_err(|_| too_large(None, payload, MAX_FRAME))?;
    out.reserve(HEADER_LEN + payload);
    let start = out.len();
    out.extend_from_slice(&len.to_be_bytes());
    out.push(frame.kind());
    match frame {
        Frame::Hello {
            version,
            secret,
            generation,
        } => {
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(secret);
            out.extend_from_slice(&generation.to_be_bytes());
        }
        Frame::Request { meta, env } => {
            meta.encode(out);
            out.extend_from_slice(&(env.len() as u32).to_be_bytes());
            for (key, value) in env {
                put_bytes16(out, key);
                put_bytes32(out, value);
            }
        }
        Frame::Body(data) | Frame::Chunk(data) => out.extend_from_slice(data),
        Frame::BodyEnd
        | Frame::Abort
        | Frame::End
        | Frame::Welcome
        | Frame::Accepted
        | Frame::Watch => {}
        Frame::ReadBody { max } => out.extend_from_slice(&max.to_be_bytes()),
        Frame::Head {
            status,
            reason,
            headers,
        } => {
            out.extend_from_slice(&status.to_be_bytes());
            put_bytes16(out, reason);
            put_headers(out, headers);
        }
        Frame::SendFile { offset, len } => {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
        }
        Frame::Fail { code, message } => {
            out.extend_from_slice(&code.to_be_bytes());
            put_bytes16(out, message);
        }
        Frame::Reject { reason } => out.push(*reason),
        Frame::WsMessage { text, fin, data } => {
            out.push(u8::from(*text) | (u8::from(*fin) << 1));
            out.extend_from_slice(data);
        }
        Frame::WsClose { code, reason } => {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(reason);
        }
        Frame::WsAccept {
            subprotocol,
            headers,
        } => {
            put_bytes16(out, subprotocol);
            put_headers(out, headers);
        }
    }
    debug_assert_eq!(out.len() - start, HEADER_LEN + payload);
    Ok(())
}

/// Appends a `Chunk` frame carrying `data` (borrowed: no intermediate `Vec`); the same bytes
/// as `encode(&Frame::Chunk(data.to_vec()), out)`, with the same bound ([`MAX_CHUNK`]).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    if data.len() > MAX_CHUNK {
        return Err(too_large(Some(kind::CHUNK), data.len(), MAX_CHUNK));
    }
    out.reserve(HEADER_LEN + data.len());
    out.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
    out.push(kind::CHUNK);
    out.extend_from_slice(data);
    Ok(())
}

/// Decodes the frame at the start of `buf`.
///
/// `Ok(None)`: `buf` holds only a prefix of a frame; call again with more bytes.
/// `Ok(Some((frame, consumed)))`: a complete frame occupying `buf[..consumed]`.
/// `Err`: the stream is malformed. An oversized frame is reported as soon as its length prefix
/// (against [`MAX_FRAME`]) or its length prefix and kind byte (against the kind's bound) arrive.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let Some((prefix, rest)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    if len == 0 {
        return Err(ProtocolError::Empty);
    }
    let payload_len = (len - 1) as usize;
    let Some((&k, rest)) = rest.split_first() else {
        if payload_len > MAX_FRAME {
            return Err(too_large(None, payload_len, MAX_FRAME));
        }
        return Ok(None);
    };
    let max = max_payload_len(k).ok_or(ProtocolError::UnknownKind(k))?;
    if payload_len > max {
        return Err(too_large(Some(k), payload_len, max));
    }
    let Some(payload) = rest.get(..payload_len) else {
        return Ok(None);
    };
    let frame = decode_payload(k, payload)?;
    Ok(Some((frame, HEADER_LEN + payload_len)))
}

/// A cursor over a payload; every read checks the bytes left first.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ProtocolError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(ProtocolError::Malformed(what))?;
        self.rest = rest;
        Ok(*head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        self.array(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// `n` bytes, checked against what is left before copying.
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Vec<u8>, ProtocolError> {
        if n > self.rest.len() {
            return Err(ProtocolError::Malformed(what));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head.to_vec())
    }

    fn bytes16(&mut self, what: &'static str) -> Result<Vec<u8>, ProtocolError> {
        let n = self.u16(what)?;
        self.bytes(usize::from(n), what)
    }

    fn bytes32(&mut self, what: &'static str) -> Result<Vec<u8>, ProtocolError> {
        let n = self.u32(what)?;
        self.bytes(n as usize, what)
    }

    /// A pair count checked against its bound and against what the frame can still hold.
    fn count(
        &mut self,
        n: usize,
        max: usize,
        over_max: &'static str,
        over_frame: &'static str,
    ) -> Result<usize, ProtocolError> {
        if n > max {
            return Err(ProtocolError::Malformed(over_max));
        }
        if n.saturating_mul(MIN_PAIR) > self.rest.len() {
            return Err(ProtocolError::Malformed(over_frame));
        }
        Ok(n)
    }

    /// A header list (see `put_headers`); `short` when even its count is missing.
    fn headers(
        &mut self,
        short: &'static str,
        l: &HeaderList,
    ) -> Result<HeaderPairs, ProtocolError> {
        let n = self.u16(short)?;
        let n = self.count(usize::from(n), MAX_HEADERS, l.too_many, l.count_past)?;
        let mut headers = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.bytes16(l.name_past)?;
            let value = self.bytes32(l.value_past)?;
            headers.push((name, value));
        }
        Ok(headers)
    }

    fn finish<T>(self, value: T, what: &'static str) -> Result<T, ProtocolError> {
        if self.rest.is_empty() {
            Ok(value)
        } else {
            Err(ProtocolError::Malformed(what))
        }
    }
}

/// Decodes a complete payload of a known kind whose length is within the kind's bound.
fn decode_payload(k: u8, payload: &[u8]) -> Result<Frame, ProtocolError> {
    let mut r = Reader { rest: payload };
    let frame = match k {
        kind::HELLO => {
            const SHORT: &str = "Hello shorter than its fixed size";
            let magic: [u8; 4] = r.array(SHORT)?;
            if magic != MAGIC {
                return Err(ProtocolError::BadMagic);
            }
            Frame::Hello {
                version: r.u16(SHORT)?,
                secret: r.array(SHORT)?,
                generation: r.u32(SHORT)?,
            }
        }
        kind::REQUEST => {
            const SHORT: &str = "Request shorter than its fixed part";
            let fixed: [u8; RequestMeta::ENCODED_LEN] = r.array(SHORT)?;
            let meta = RequestMeta::decode(&fixed)
                .ok_or(ProtocolError::Malformed("Request sets an unknown flag"))?;
            let n = r.u32(SHORT)? as usize;
            let n = r.count(
                n,
                MAX_ENV_ITEMS,
                "Request has more than MAX_ENV_ITEMS (4096) environ items",
                "Request environ item count larger than the frame holds",
            )?;
            let mut env = Vec::with_capacity(n);
            for _ in 0..n {
                let key = r.bytes16("Request environ key runs past the end of the frame")?;
                let value = r.bytes32("Request environ value runs past the end of the frame")?;
                env.push((key, value));
            }
            return r.finish(
                Frame::Request { meta, env },
                "Request has bytes left after its last environ item",
            );
        }
        // The whole payload is the data.
        kind::BODY => return Ok(Frame::Body(payload.to_vec())),
        kind::CHUNK => return Ok(Frame::Chunk(payload.to_vec())),
        kind::BODY_END => Frame::BodyEnd,
        kind::ABORT => Frame::Abort,
        kind::END => Frame::End,
        kind::WELCOME => Frame::Welcome,
        kind::ACCEPTED => Frame::Accepted,
        kind::WATCH => Frame::Watch,
        kind::READ_BODY => Frame::ReadBody {
            max: r.u32("ReadBody shorter than its fixed size")?,
        },
        kind::HEAD => {
            let status = r.u16("Head shorter than its status")?;
            let reason = r.bytes16("Head reason phrase runs past the end of the frame")?;
            let headers = r.headers("Head shorter than its header count", &HEAD_HEADERS)?;
            return r.finish(
                Frame::Head {
                    status,
                    reason,
                    headers,
                },
                "Head has bytes left after its last header",
            );
        }
        kind::SEND_FILE => {
            const SHORT: &str = "SendFile shorter than its fixed size";
            Frame::SendFile {
                offset: r.u64(SHORT)?,
                len: r.u64(SHORT)?,
            }
        }
        kind::FAIL => {
            let code = r.u16("Fail shorter than its code")?;
            let message = r.bytes16("Fail message runs past the end of the frame")?;
            return r.finish(
                Frame::Fail { code, message },
                "Fail has bytes left after its message",
            );
        }
        kind::REJECT => Frame::Reject {
            reason: r.u8("Reject shorter than its fixed size")?,
        },
        kind::WS_MESSAGE => {
            let flags = r.u8("WsMessage without its flags")?;
            if flags & !3 != 0 {
                return Err(ProtocolError::Malformed("WsMessage sets an unknown flag"));
            }
            return Ok(Frame::WsMessage {
                text: flags & 1 != 0,
                fin: flags & 2 != 0,
                data: payload[1..].to_vec(),
            });
        }
        kind::WS_CLOSE => {
            let code = r.u16("WsClose shorter than its code")?;
            return Ok(Frame::WsClose {
                code,
                reason: payload[2..].to_vec(),
            });
        }
        kind::WS_ACCEPT => {
            let subprotocol = r.bytes16("WsAccept subprotocol runs past the end of the frame")?;
            let headers =
                r.headers("WsAccept shorter than its header count", &WS_ACCEPT_HEADERS)?;
            return r.finish(
                Frame::WsAccept {
                    subprotocol,
                    headers,
                },
                "WsAccept has bytes left after its last header",
            );
        }
        _ => return Err(ProtocolError::UnknownKind(k)),
    };
    // Fixed-size payloads: `decode` already refused longer ones as too large.
    r.finish(frame, "frame has bytes left after its last field")
}

#[cfg(test)]
mod tests {
    use super::test_support::{Rng, random_frame};
    use super::*;

    fn enc(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        encode(frame, &mut out).expect("encodes");
        out
    }

    fn round_trip(frame: Frame) {
        let bytes = enc(&frame);
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
        assert_eq!(bytes[4], frame.kind());
        let (back, used) = decode(&bytes).expect("decodes").expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(back, frame);
        // Trailing bytes of the next frame are not consumed.
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let (back, used) = decode(&two).unwrap().unwrap();
        assert_eq!((back, used), (frame, bytes.len()));
    }

    /// A frame with a raw kind and payload, bypassing `encode`.
    fn raw(k: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(k);
        out.extend_from_slice(payload);
        out
    }

    /// A `Request` payload: a default meta, then `rest` (the count and pairs).
    fn req_payload(rest: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        RequestMeta::default().encode(&mut out);
        out.extend_from_slice(rest);
        out
    }

    fn request(env: Vec<(Vec<u8>, Vec<u8>)>) -> Frame {
        Frame::Request {
            meta: RequestMeta::default(),
            env,
        }
    }

    fn hello() -> Frame {
        Frame::Hello {
            version: PROTOCOL_VERSION,
            secret: *b"0123456789abcdef",
            generation: 7,
        }
    }

    #[test]
    fn encode_chunk_matches_encode_and_keeps_the_bound() {
        for data in [Vec::new(), b"x".to_vec(), vec![7u8; MAX_CHUNK]] {
            let (mut a, mut b) = (vec![9u8], vec![9u8]);
            encode(&Frame::Chunk(data.clone()), &mut a).unwrap();
            encode_chunk(&data, &mut b).unwrap();
            assert_eq!(a, b);
            assert_eq!(
                decode(&b[1..]).unwrap(),
                Some((Frame::Chunk(data), b.len() - 1))
            );
        }
        let mut out = Vec::new();
        assert!(encode_chunk(&vec![0u8; MAX_CHUNK + 1], &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn round_trips_every_kind() {
        round_trip(hello());
        round_trip(Frame::Hello {
            version: u16::MAX,
            secret: [0xff; 16],
            generation: u32::MAX,
        });
        round_trip(request(vec![]));
        round_trip(Frame::Request {
            meta: RequestMeta {
                head_request: true,
                https: true,
                main_interpreter: true,
                interface: Interface::Wsgi,
                server_id: u64::MAX,
                script_mtime: i64::MIN,
                request_start: 1_764_000_000_000_000,
                queue_start: -1,
                apache_version: [2, 4, 71],
            },
            env: vec![
                (b"REQUEST_METHOD".to_vec(), b"GET".to_vec()),
                (b"HTTP_X_LATIN1".to_vec(), vec![0xe9, 0xff, 0x00, 0x80]),
                (vec![], vec![]),
                (vec![0xc3, 0x28], b"not utf-8 key".to_vec()),
            ],
        });
        round_trip(Frame::Body(vec![]));
        round_trip(Frame::Body(b"hello".to_vec()));
        round_trip(Frame::BodyEnd);
        round_trip(Frame::Abort);
        round_trip(Frame::ReadBody { max: 0 });
        round_trip(Frame::ReadBody { max: u32::MAX });
        round_trip(Frame::Head {
            status: 200,
            reason: b"OK".to_vec(),
            headers: vec![],
        });
        round_trip(Frame::Head {
            status: 404,
            reason: vec![0xe9],
            headers: vec![
                (b"Content-Type".to_vec(), b"text/plain".to_vec()),
                (b"X-Bin".to_vec(), vec![0, 1, 0xfe, 0xff]),
                (b"X-Empty".to_vec(), vec![]),
            ],
        });
        round_trip(Frame::Chunk(vec![]));
        round_trip(Frame::Chunk(vec![0xff; 300]));
        round_trip(Frame::SendFile { offset: 0, len: 0 });
        round_trip(Frame::SendFile {
            offset: u64::MAX,
            len: 1 << 40,
        });
        round_trip(Frame::End);
        round_trip(Frame::Welcome);
        round_trip(Frame::Accepted);
        round_trip(Frame::Watch);
        round_trip(Frame::WsMessage {
            text: true,
            fin: false,
            data: "hé".as_bytes().to_vec(),
        });
        round_trip(Frame::WsMessage {
            text: false,
            fin: true,
            data: vec![],
        });
        let parts: Vec<Frame> = ws_message_frames(false, &vec![7; MAX_CHUNK + 1]).collect();
        assert_eq!(parts.len(), 2);
        assert!(
            matches!(&parts[0], Frame::WsMessage { fin: false, data, .. } if data.len() == MAX_CHUNK)
        );
        assert!(matches!(&parts[1], Frame::WsMessage { fin: true, data, .. } if data.len() == 1));
        let empty: Vec<Frame> = ws_message_frames(true, b"").collect();
        assert_eq!(
            empty,
            vec![Frame::WsMessage {
                text: true,
                fin: true,
                data: vec![]
            }]
        );
        round_trip(Frame::WsClose {
            code: 1001,
            reason: b"going away".to_vec(),
        });
        round_trip(Frame::WsAccept {
            subprotocol: b"chat".to_vec(),
            headers: vec![(b"x-a".to_vec(), b"1".to_vec())],
        });
        round_trip(Frame::Fail {
            code: 500,
            message: b"app raised".to_vec(),
        });
        round_trip(Frame::Fail {
            code: 0,
            message: vec![0x80; usize::from(u16::MAX)],
        });
        for reason in [
            0,
            REJECT_BAD_CREDENTIALS,
            REJECT_SHUTTING_DOWN,
            REJECT_QUEUE_TIMEOUT,
            255,
        ] {
            round_trip(Frame::Reject { reason });
        }
    }

    #[test]
    fn exact_wire_bytes() {
        assert_eq!(enc(&Frame::End), [0, 0, 0, 1, 0x14]);
        assert_eq!(enc(&Frame::Reject { reason: 2 }), [0, 0, 0, 2, 0x16, 2]);
        assert_eq!(
            enc(&Frame::ReadBody { max: 0x0102_0304 }),
            [0, 0, 0, 5, 0x10, 1, 2, 3, 4]
        );
        let h = enc(&hello());
        assert_eq!(h.len(), HEADER_LEN + HELLO_LEN);
        assert_eq!(&h[..9], &[0, 0, 0, 27, 0x01, b'R', b'W', b'S', b'G']);
        assert_eq!(&h[9..11], &[0, 3]);
        assert_eq!(
            enc(&Frame::Request {
                meta: RequestMeta {
                    https: true,
                    server_id: 7,
                    apache_version: [2, 4, 71],
                    ..RequestMeta::default()
                },
                env: vec![(b"K".to_vec(), b"vv".to_vec())]
            }),
            [
                &[0, 0, 0, 53, 0x02, 2][..],
                &[0, 0, 0, 0, 0, 0, 0, 7],
                &[0; 24],
                &[0, 2, 0, 4, 0, 71],
                &[0, 0, 0, 1, 0, 1, b'K', 0, 0, 0, 2, b'v', b'v'],
            ]
            .concat()
        );
        assert_eq!(
            enc(&Frame::Head {
                status: 200,
                reason: b"OK".to_vec(),
                headers: vec![(b"A".to_vec(), b"b".to_vec())],
            }),
            [
                0, 0, 0, 17, 0x11, 0, 200, 0, 2, b'O', b'K', 0, 1, 0, 1, b'A', 0, 0, 0, 1, b'b'
            ]
        );
        assert_eq!(
            enc(&Frame::Fail {
                code: 503,
                message: b"x".to_vec()
            }),
            [0, 0, 0, 6, 0x15, 1, 247, 0, 1, b'x']
        );
    }

    #[test]
    fn encode_appends() {
        let mut out = b"xyz".to_vec();
        encode(&Frame::End, &mut out).unwrap();
        encode(&Frame::Abort, &mut out).unwrap();
        assert_eq!(out, [b'x', b'y', b'z', 0, 0, 0, 1, 0x14, 0, 0, 0, 1, 0x05]);
    }

    #[test]
    fn max_chunk_boundaries() {
        for make in [Frame::Body as fn(Vec<u8>) -> Frame, Frame::Chunk] {
            let ok = make(vec![0xa5; MAX_CHUNK]);
            round_trip(ok.clone());

            let big = make(vec![0xa5; MAX_CHUNK + 1]);
            let mut out = b"keep".to_vec();
            let err = encode(&big, &mut out).unwrap_err();
            assert_eq!(
                err,
                ProtocolError::TooLarge {
                    kind: Some(big.kind()),
                    len: MAX_CHUNK as u64 + 1,
                    max: MAX_CHUNK as u64,
                }
            );
            assert_eq!(out, b"keep", "a failed encode leaves the output untouched");

            // Decoding: the header alone is enough to refuse it.
            let mut wire = enc(&ok);
            wire[..4].copy_from_slice(&(MAX_CHUNK as u32 + 2).to_be_bytes());
            assert_eq!(decode(&wire[..5]), Err(err));
            wire.push(0xa5);
            assert_eq!(decode(&wire), Err(err));
        }
    }

    #[test]
    fn env_frame_boundaries() {
        // One pair sized so the payload is exactly MAX_ENV_FRAME.
        let key = b"wsgi.big".to_vec();
        let value_len = MAX_ENV_FRAME - REQUEST_FIXED - MIN_PAIR - key.len();
        let frame = request(vec![(key.clone(), vec![b'v'; value_len])]);
        let wire = enc(&frame);
        assert_eq!(wire.len(), HEADER_LEN + MAX_ENV_FRAME);
        let (back, used) = decode(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert!(back == frame);
        drop((back, wire));

        let big = request(vec![(key, vec![b'v'; value_len + 1])]);
        assert_eq!(
            encode(&big, &mut Vec::new()),
            Err(ProtocolError::TooLarge {
                kind: Some(kind::REQUEST),
                len: MAX_ENV_FRAME as u64 + 1,
                max: MAX_ENV_FRAME as u64,
            })
        );

        // Item count bound.
        let env = vec![(vec![], vec![]); MAX_ENV_ITEMS];
        round_trip(request(env.clone()));
        let mut env = env;
        env.push((vec![], vec![]));
        assert!(matches!(
            encode(&request(env), &mut Vec::new()),
            Err(ProtocolError::Malformed(_))
        ));
        let mut payload = req_payload(&(MAX_ENV_ITEMS as u32 + 1).to_be_bytes());
        payload.resize(REQUEST_FIXED + MIN_PAIR * (MAX_ENV_ITEMS + 1), 0);
        assert!(matches!(
            decode(&raw(kind::REQUEST, &payload)),
            Err(ProtocolError::Malformed(m)) if m.contains("MAX_ENV_ITEMS")
        ));

        // Key longer than its u16 prefix.
        let long_key = request(vec![(vec![b'k'; 65536], vec![])]);
        assert!(matches!(
            encode(&long_key, &mut Vec::new()),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn head_boundaries() {
        let fixed = 2 + 2 + 2 + MIN_PAIR + 1;
        let frame = Frame::Head {
            status: 200,
            reason: vec![],
            headers: vec![(b"X".to_vec(), vec![b'v'; MAX_HEAD_FRAME - fixed])],
        };
        let wire = enc(&frame);
        assert_eq!(wire.len(), HEADER_LEN + MAX_HEAD_FRAME);
        assert_eq!(decode(&wire).unwrap().unwrap().0, frame);
        let big = Frame::Head {
            status: 200,
            reason: vec![],
            headers: vec![(b"X".to_vec(), vec![b'v'; MAX_HEAD_FRAME - fixed + 1])],
        };
        assert!(matches!(
            encode(&big, &mut Vec::new()),
            Err(ProtocolError::TooLarge {
                kind: Some(kind::HEAD),
                ..
            })
        ));

        let headers = vec![(b"A".to_vec(), b"b".to_vec()); MAX_HEADERS];
        round_trip(Frame::Head {
            status: 200,
            reason: b"OK".to_vec(),
            headers: headers.clone(),
        });
        let mut headers = headers;
        headers.push((vec![], vec![]));
        let over = Frame::Head {
            status: 200,
            reason: vec![],
            headers,
        };
        assert!(matches!(
            encode(&over, &mut Vec::new()),
            Err(ProtocolError::Malformed(_))
        ));
        let mut payload = vec![0, 200, 0, 0];
        payload.extend_from_slice(&(MAX_HEADERS as u16 + 1).to_be_bytes());
        payload.resize(6 + MIN_PAIR * (MAX_HEADERS + 1), 0);
        assert!(matches!(
            decode(&raw(kind::HEAD, &payload)),
            Err(ProtocolError::Malformed(m)) if m.contains("MAX_HEADERS")
        ));

        let long_reason = Frame::Head {
            status: 200,
            reason: vec![b'r'; 65536],
            headers: vec![],
        };
        assert!(matches!(
            encode(&long_reason, &mut Vec::new()),
            Err(ProtocolError::Malformed(_))
        ));
        let long_name = Frame::Head {
            status: 200,
            reason: vec![],
            headers: vec![(vec![b'n'; 65536], vec![])],
        };
        assert!(matches!(
            encode(&long_name, &mut Vec::new()),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn fail_message_bound() {
        let long = Frame::Fail {
            code: 1,
            message: vec![0; 65536],
        };
        assert_eq!(
            encode(&long, &mut Vec::new()),
            Err(ProtocolError::TooLarge {
                kind: Some(kind::FAIL),
                len: 4 + 65536,
                max: 4 + 65535,
            })
        );
    }

    #[test]
    fn bad_magic() {
        let mut wire = enc(&hello());
        wire[5] = b'X';
        assert_eq!(decode(&wire), Err(ProtocolError::BadMagic));
    }

    #[test]
    fn short_fixed_frames_are_malformed() {
        for (k, full) in [
            (kind::HELLO, HELLO_LEN),
            (kind::READ_BODY, 4),
            (kind::SEND_FILE, 16),
            (kind::REJECT, 1),
        ] {
            let mut payload = MAGIC.to_vec();
            payload.resize(full, 0);
            for short in 0..full {
                assert!(
                    matches!(
                        decode(&raw(k, &payload[..short])),
                        Err(ProtocolError::Malformed(_))
                    ),
                    "kind {k:#x} with {short} bytes"
                );
            }
            assert!(decode(&raw(k, &payload)).unwrap().is_some());
        }
    }

    #[test]
    fn oversized_fixed_frames_are_too_large() {
        for k in [
            kind::BODY_END,
            kind::ABORT,
            kind::END,
            kind::REJECT,
            kind::WELCOME,
            kind::ACCEPTED,
            kind::WATCH,
        ] {
            let max = max_payload_len(k).unwrap();
            let wire = raw(k, &vec![0; max + 1]);
            assert_eq!(
                decode(&wire),
                Err(ProtocolError::TooLarge {
                    kind: Some(k),
                    len: max as u64 + 1,
                    max: max as u64
                })
            );
        }
    }

    #[test]
    fn count_larger_than_frame() {
        // Claims 3 pairs, holds one.
        let mut payload = req_payload(&3u32.to_be_bytes());
        payload.extend_from_slice(&[0, 1, b'K', 0, 0, 0, 1, b'v']);
        payload.extend_from_slice(&[0; 4]);
        let err = decode(&raw(kind::REQUEST, &payload)).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::Malformed("Request environ item count larger than the frame holds")
        );
        // Claims 2 pairs, enough bytes for two empty ones, but the first is long.
        let mut payload = req_payload(&2u32.to_be_bytes());
        payload.extend_from_slice(&[0, 1, b'K', 0, 0, 0, 3, b'v', b'v', b'v']);
        payload.extend_from_slice(&[0, 0]);
        assert!(matches!(
            decode(&raw(kind::REQUEST, &payload)),
            Err(ProtocolError::Malformed(_))
        ));
        // A huge count never allocates: refused by the bound first.
        let payload = req_payload(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode(&raw(kind::REQUEST, &payload)),
            Err(ProtocolError::Malformed(_))
        ));
        // Head: 5 headers claimed, none present.
        assert_eq!(
            decode(&raw(kind::HEAD, &[0, 200, 0, 0, 0, 5])),
            Err(ProtocolError::Malformed(
                "Head header count larger than the frame holds"
            ))
        );
    }

    #[test]
    fn lengths_running_past_the_frame() {
        // Key length 0xffff in a small frame.
        let mut payload = req_payload(&1u32.to_be_bytes());
        payload.extend_from_slice(&[0xff, 0xff, b'K', 0, 0, 0, 0]);
        assert_eq!(
            decode(&raw(kind::REQUEST, &payload)),
            Err(ProtocolError::Malformed(
                "Request environ key runs past the end of the frame"
            ))
        );
        // Value length 0xffffffff.
        let mut payload = req_payload(&1u32.to_be_bytes());
        payload.extend_from_slice(&[0, 1, b'K', 0xff, 0xff, 0xff, 0xff, b'v']);
        assert_eq!(
            decode(&raw(kind::REQUEST, &payload)),
            Err(ProtocolError::Malformed(
                "Request environ value runs past the end of the frame"
            ))
        );
        // Reason, header name and value, Fail message.
        assert!(matches!(
            decode(&raw(kind::HEAD, &[0, 200, 0, 9, b'O', b'K', 0, 0])),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode(&raw(kind::HEAD, &[0, 200, 0, 0, 0, 1, 0, 9, 0, 0, 0, 0])),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode(&raw(kind::HEAD, &[0, 200, 0, 0, 0, 1, 0, 0, 0, 0, 0, 9])),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode(&raw(kind::FAIL, &[1, 244, 0, 3, b'a'])),
            Err(ProtocolError::Malformed(_))
        ));
        // Frames too short for their counts.
        assert!(matches!(
            decode(&raw(kind::REQUEST, &[0, 0])),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode(&raw(kind::REQUEST, &req_payload(&[0, 0]))),
            Err(ProtocolError::Malformed(_))
        ));
        // A flag this version does not know.
        let mut payload = req_payload(&[0, 0, 0, 0]);
        payload[0] = 0x80;
        assert_eq!(
            decode(&raw(kind::REQUEST, &payload)),
            Err(ProtocolError::Malformed("Request sets an unknown flag"))
        );
        assert!(decode(&raw(kind::REQUEST, &req_payload(&[0, 0, 0, 0]))).is_ok());
        assert!(matches!(
            decode(&raw(kind::HEAD, &[0, 200, 0, 0])),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_inside_a_frame() {
        let cases = [
            request(vec![]),
            request(vec![(b"a".to_vec(), b"b".to_vec())]),
            Frame::Head {
                status: 200,
                reason: b"OK".to_vec(),
                headers: vec![(b"a".to_vec(), b"b".to_vec())],
            },
            Frame::Fail {
                code: 1,
                message: b"m".to_vec(),
            },
        ];
        for frame in cases {
            let mut wire = enc(&frame);
            wire.push(0);
            let len = wire.len() as u32 - 4;
            wire[..4].copy_from_slice(&len.to_be_bytes());
            assert!(
                matches!(decode(&wire), Err(ProtocolError::Malformed(m)) if m.contains("left")),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn unknown_kind_and_empty() {
        for k in [0x00, 0x08, 0x0f, 0x1b, 0x80, 0xff] {
            assert_eq!(decode(&raw(k, b"")), Err(ProtocolError::UnknownKind(k)));
            // Known as soon as the kind byte arrives.
            assert_eq!(
                decode(&[0, 0, 0, 100, k]),
                Err(ProtocolError::UnknownKind(k))
            );
        }
        assert_eq!(decode(&[0, 0, 0, 0]), Err(ProtocolError::Empty));
        assert_eq!(decode(&[0, 0, 0, 0, 0x14]), Err(ProtocolError::Empty));
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(decode(&[0, 0, 0]), Ok(None));
    }

    #[test]
    fn global_bound_before_kind() {
        let over = (MAX_FRAME as u32 + 2).to_be_bytes();
        assert_eq!(
            decode(&over),
            Err(ProtocolError::TooLarge {
                kind: None,
                len: MAX_FRAME as u64 + 1,
                max: MAX_FRAME as u64,
            })
        );
        assert_eq!(decode(&(MAX_FRAME as u32 + 1).to_be_bytes()), Ok(None));
        assert!(matches!(
            decode(&u32::MAX.to_be_bytes()),
            Err(ProtocolError::TooLarge { kind: None, .. })
        ));
    }

    #[test]
    fn messages_are_readable() {
        let msg = ProtocolError::TooLarge {
            kind: Some(kind::BODY),
            len: 2_000_000,
            max: MAX_CHUNK as u64,
        }
        .to_string();
        assert!(
            msg.contains("Body (kind 0x03)") && msg.contains("2000000"),
            "{msg}"
        );
        assert!(
            ProtocolError::UnknownKind(0xab)
                .to_string()
                .contains("0xab")
        );
        assert!(ProtocolError::Malformed("x y").to_string().ends_with("x y"));
        let _: &dyn std::error::Error = &ProtocolError::Empty;
        // Debug never shows the secret.
        let dbg = format!("{:?}", hello());
        assert!(!dbg.contains("0123") && dbg.contains("redacted"), "{dbg}");
        assert_eq!(
            format!("{:?}", Frame::Body(vec![b'a', 0xff])),
            "Body(b\"a\\xff\")"
        );
    }

    #[test]
    fn kind_tables_agree() {
        for k in kind::ALL {
            assert!(max_payload_len(k).is_some());
            assert!(kind_name(k).is_some());
        }
        for k in 0..=u8::MAX {
            assert_eq!(max_payload_len(k).is_some(), kind::ALL.contains(&k));
        }
        assert!(
            kind::ALL
                .iter()
                .all(|&k| max_payload_len(k).unwrap() <= MAX_FRAME)
        );
    }

    // ---- property-style tests (deterministic xorshift64*) ----

    #[test]
    fn prop_random_frames_round_trip() {
        let mut rng = Rng::new(0x5eed_0001);
        let mut seen = [false; 256];
        for _ in 0..3000 {
            let frame = random_frame(&mut rng);
            seen[usize::from(frame.kind())] = true;
            round_trip(frame);
        }
        assert!(kind::ALL.iter().all(|&k| seen[usize::from(k)]));
    }

    #[test]
    fn prop_strict_prefixes_need_more() {
        let mut rng = Rng::new(0x5eed_0002);
        for _ in 0..1500 {
            let wire = enc(&random_frame(&mut rng));
            for cut in 0..wire.len() {
                assert_eq!(decode(&wire[..cut]), Ok(None), "cut {cut} of {wire:?}");
            }
        }
    }

    #[test]
    fn prop_oversized_length_prefix_is_too_large() {
        let mut rng = Rng::new(0x5eed_0003);
        for _ in 0..3000 {
            let k = kind::ALL[rng.below(kind::ALL.len() as u64) as usize];
            let max = max_payload_len(k).unwrap() as u64;
            // A payload length in max+1 ..= u32::MAX - 1.
            let span = u64::from(u32::MAX) - 1 - max;
            let payload = max + 1 + rng.below(span);
            let mut wire = ((payload + 1) as u32).to_be_bytes().to_vec();
            wire.push(k);
            // Whatever follows (or nothing) does not matter.
            let extra = rng.below(40) as usize;
            wire.extend(rng.bytes(extra));
            assert_eq!(
                decode(&wire),
                Err(ProtocolError::TooLarge {
                    kind: Some(k),
                    len: payload,
                    max
                })
            );
            if payload > MAX_FRAME as u64 {
                assert!(matches!(
                    decode(&wire[..4]),
                    Err(ProtocolError::TooLarge { kind: None, .. })
                ));
            } else {
                assert_eq!(decode(&wire[..4]), Ok(None));
            }
        }
    }

    fn check_no_panic(buf: &[u8]) {
        if let Ok(Some((_, used))) = decode(buf) {
            assert!(used <= buf.len() && used >= HEADER_LEN);
        }
    }

    #[test]
    fn prop_garbage_never_panics() {
        let mut rng = Rng::new(0x5eed_0004);
        for _ in 0..3000 {
            // Pure noise.
            let n = rng.below(64) as usize;
            check_no_panic(&rng.bytes(n));
            // A plausible header over noise, to reach the payload parsers.
            let k = if rng.below(8) == 0 {
                rng.next() as u8
            } else {
                kind::ALL[rng.below(kind::ALL.len() as u64) as usize]
            };
            let len = rng.below(80) as u32;
            let mut buf = len.to_be_bytes().to_vec();
            buf.push(k);
            let n = rng.below(90) as usize;
            buf.extend(rng.bytes(n));
            check_no_panic(&buf);
            // A valid frame with a few bytes mutated or the length tweaked.
            let mut buf = enc(&random_frame(&mut rng));
            for _ in 0..=rng.below(4) {
                let i = rng.below(buf.len() as u64) as usize;
                buf[i] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                let cut = rng.below(buf.len() as u64 + 1) as usize;
                buf.truncate(cut);
            }
            check_no_panic(&buf);
        }
    }
}
