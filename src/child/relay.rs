//! The httpd child's side of a request once its peer has accepted it, the same for a daemon
//! process and for this child's own ASGI event loop (embedded ASGI): the client's body handed
//! over as the peer asks for it (`ReadBody`), the client watched while the peer waits for it
//! to go away (`Watch`), the peer's frames turned into the response (`Head`, `Chunk`,
//! `SendFile`, `End`, `Fail`), and a WebSocket's acceptance handed to the tunnel
//! (`websocket`). A peer that breaks the protocol or dies before the head is a 502, after it an
//! aborted response. Runs in the httpd child, on the worker thread that serves the request.
#![forbid(unsafe_code)]

use std::ffi::c_int;
use std::io;
use std::time::{Duration, Instant};

use super::response::ApacheResponse;
use crate::daemon::conn::Conn;
use crate::error::Code;
use crate::httpd::ffi::{
    HTTP_BAD_GATEWAY, HTTP_GATEWAY_TIME_OUT, HTTP_INTERNAL_SERVER_ERROR, HTTP_SERVICE_UNAVAILABLE,
    OK,
};
use crate::httpd::request::Request;
use crate::protocol::{self, Frame};
use crate::request as core;
use crate::wsgi::adapter::{Level, ResponseSink};
use crate::wsgi::headers;

thread_local! {
    static SPARE_WIRE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The encoded-request buffer, reused by the next request of the same thread (a fresh ~2 KiB
/// allocation per request made glibc consolidate its free lists every time).
pub struct SpareWire(pub Vec<u8>);

impl SpareWire {
    pub fn take() -> Self {
        let mut v = SPARE_WIRE.with(std::cell::Cell::take);
        v.clear();
        SpareWire(v)
    }
}

impl Drop for SpareWire {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() <= 64 * 1024 {
            SPARE_WIRE.with(|c| c.set(v));
        }
    }
}

/// Encodes `request` as a `Request` frame at the end of `out`, and gives it back (the
/// environ's keys turned to bytes for the frame and back to strings: the same buffers, no
/// allocation), for a caller that may still need it or recycles it.
pub fn encode_request(
    request: core::Request<String>,
    out: &mut Vec<u8>,
) -> (Result<(), protocol::ProtocolError>, core::Request<String>) {
    let core::Request { env, meta } = request;
    let env: Vec<(Vec<u8>, Vec<u8>)> = env.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect();
    let frame = Frame::Request { meta, env };
    let encoded = protocol::encode(&frame, out);
    let Frame::Request { meta, env } = frame else {
        unreachable!("built as a Request above")
    };
    let env = env
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap_or_default(), v))
        .collect();
    (encoded, core::Request { env, meta })
}

/// Who serves the request on the other side of the connection, and the limits that apply.
pub struct Peer<'a> {
    /// How log lines name it: `daemon group 'api'`, `the ASGI event loop`.
    pub name: &'a str,
    /// How a sentence names it: `the daemon`, `the event loop`.
    pub side: &'a str,
    /// The wait for each frame, and the setting it comes from (for the message).
    pub timeout: Duration,
    pub timeout_setting: &'a str,
    /// The longest response header line accepted.
    pub header_limit: usize,
    /// `WSGIErrorOverride On`: an error status is answered by httpd itself.
    pub error_override: bool,
    /// `WSGIEnableSendfile`.
    pub sendfile: bool,
    /// `WSGIWebSocketMaxMessage`: a larger client message closes the WebSocket (1009).
    pub websocket_max_message: usize,
    /// The board record its WebSocket sessions count under (`observe::record_of`).
    pub record: Option<usize>,
    /// `response-flush-delay`: how long to wait for the peer's next block before flushing a
    /// streamed one (zero: flush at once).
    pub flush_delay: Duration,
}

impl Peer<'_> {
    fn bad_gateway(&self, req: Request, msg: &str) -> c_int {
        req.log(
            Level::Error,
            &format!("{}: {}: {msg}", Code::DaemonProtocol.as_str(), self.name),
        );
        HTTP_BAD_GATEWAY
    }
}

/// Serves the response of an accepted request from `c`. `websocket`: the handshake's key
/// when the request opens a WebSocket; `restore_timeout`: the first wait used a shortened
/// timeout, set back to `peer.timeout` after it. Returns the handler's status and the
/// connection when it can carry another request.
pub fn relay(
    req: Request,
    mut c: Conn,
    peer: &Peer<'_>,
    websocket: Option<&str>,
    restore_timeout: bool,
) -> (c_int, Option<Conn>) {
    let mut scratch = c.take_scratch();
    let (status, kept) = relay_with(req, c, peer, websocket, restore_timeout, &mut scratch);
    let kept = kept.map(|mut c| {
        c.keep_scratch(scratch);
        c
    });
    (status, kept)
}

/// `relay`, with the connection's buffer for body bytes: each block of the request body
/// (`ReadBody`) and of the response (`Chunk`) is filled into it in place, and is done with
/// before the next frame is read.
fn relay_with(
    req: Request,
    mut c: Conn,
    peer: &Peer<'_>,
    websocket: Option<&str>,
    mut restore_timeout: bool,
    scratch: &mut Vec<u8>,
) -> (c_int, Option<Conn>) {
    let timeout = peer.timeout;
    let mut resp = ApacheResponse::new(req, peer.sendfile);
    let mut head_sent = false;
    // WSGIErrorOverride On: an error status from the application is answered by httpd itself
    // (ErrorDocument), its body discarded.
    let mut overridden: Option<c_int> = None;
    // After `Watch` (an ASGI application waits for the client to go away): the client socket,
    // watched while waiting for the peer's next frame.
    let mut watching: Option<std::os::fd::RawFd> = None;
    loop {
        if let Some(client) = watching
            && !c.more_buffered()
        {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match crate::sys::wait_peer_or_hangup(c.fd(), client, left) {
                    crate::sys::Watched::HungUp => {
                        watching = None;
                        if let Err(e) = c.send(&Frame::Abort) {
                            let msg =
                                format!("telling {} the client went away failed: {e}", peer.side);
                            return (peer.bad_gateway(req, &msg), None);
                        }
                        break;
                    }
                    crate::sys::Watched::TimedOut if !left.is_zero() => continue,
                    _ => break,
                }
            }
        }
        // A `Chunk` comes straight from the socket into `scratch` (nothing zeroed); any other
        // frame is decoded.
        scratch.clear();
        let received = c.recv_data_to(protocol::kind::CHUNK, scratch, false);
        if std::mem::take(&mut restore_timeout) {
            c.set_timeouts(timeout);
        }
        let frame = match received {
            Ok(Ok(_)) => None,
            // One the frame buffer decoded (an empty block).
            Ok(Err(Frame::Chunk(data))) => {
                scratch.extend_from_slice(&data);
                None
            }
            Ok(Err(f)) => Some(f),
            Err(e) => {
                let timed_out = matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                );
                let what = if e.kind() == io::ErrorKind::UnexpectedEof {
                    format!(
                        "{} closed the connection (it may have died or been restarted)",
                        peer.side
                    )
                } else if timed_out {
                    format!(
                        "timeout reading from {} after {} s ({})",
                        peer.side,
                        timeout.as_secs(),
                        peer.timeout_setting
                    )
                } else {
                    format!("reading from {} failed: {e}", peer.side)
                };
                if head_sent {
                    req.log(
                        Level::Error,
                        &format!(
                            "{}: {}: {what}; response aborted",
                            Code::DaemonProtocol.as_str(),
                            peer.name
                        ),
                    );
                    let _ = resp.finish(true);
                    return (OK, None);
                }
                if timed_out {
                    req.log(
                        Level::Error,
                        &format!("{}: {}: {what}", Code::DaemonProtocol.as_str(), peer.name),
                    );
                    return (HTTP_GATEWAY_TIME_OUT, None);
                }
                return (peer.bad_gateway(req, &what), None);
            }
        };
        let Some(frame) = frame else {
            if overridden.is_some() {
                continue;
            }
            if !head_sent {
                return (
                    peer.bad_gateway(req, "body data before the response head"),
                    None,
                );
            }
            // Flushed: the peer only sends a block on its own when the application streams
            // (a generator is flushed block by block, as in embedded mode). The last block,
            // when the end of the response came with it (a small response in one write),
            // goes out with the end: one pass of the output filters. response-flush-delay: a
            // block followed within the delay by more of the response is not flushed on its
            // own (the next one carries it out).
            let more_soon = !peer.flush_delay.is_zero()
                && (c.more_buffered() || crate::sys::wait_readable(c.fd(), peer.flush_delay));
            if resp.write(scratch, !c.end_follows() && !more_soon).is_err() {
                // The client went away: stop relaying; the peer sees the closed socket.
                return (OK, None);
            }
            continue;
        };
        match frame {
            Frame::ReadBody { max } => {
                // A large request (the application asked for that many bytes of a body of
                // known length) is filled in one frame, so a large body costs few round trips;
                // up to 64 KiB, whatever part has arrived is sent at once (streaming input).
                // It is filled into `scratch` in place (nothing zeroed first).
                let want = (max as usize).clamp(1, protocol::MAX_CHUNK);
                let fill_all = want > 64 * 1024;
                let buf = &mut *scratch;
                buf.clear();
                let mut failed = false;
                while buf.len() < want && (buf.is_empty() || fill_all) {
                    let room = want - buf.len();
                    match req.read_body_append(buf, room) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                let n = buf.len();
                let sent = if failed {
                    c.send(&Frame::Abort)
                } else if n == 0 {
                    c.send(&Frame::BodyEnd)
                } else {
                    // Written from the buffer itself (no copy into the send buffer).
                    c.send_data(protocol::kind::BODY, buf)
                };
                if let Err(e) = sent {
                    let msg = format!("sending the request body failed: {e}");
                    return (peer.bad_gateway(req, &msg), None);
                }
                if failed {
                    req.log(
                        Level::Info,
                        &format!(
                            "{}: the client went away while sending its body",
                            Code::InputError.as_str()
                        ),
                    );
                }
            }
            Frame::Head {
                status,
                reason,
                headers: hdrs,
            } => {
                // The peer sends the reason phrase as latin-1 bytes, like header values.
                let reason: String = reason.iter().map(|&b| b as char).collect();
                let status_line = format!("{status} {reason}");
                let hdrs: Vec<(String, String)> = hdrs
                    .into_iter()
                    .map(|(n, v)| {
                        (
                            n.iter().map(|&b| b as char).collect(),
                            v.iter().map(|&b| b as char).collect(),
                        )
                    })
                    .collect();
                let limit = peer.header_limit;
                if let Some((n, _)) = hdrs.iter().find(|(n, v)| n.len() + 2 + v.len() > limit) {
                    req.log(
                        Level::Error,
                        &format!(
                            "{}: {}: response header '{n}' is longer than header-buffer-size \
                             ({limit} bytes)",
                            Code::AppProtocol.as_str(),
                            peer.name
                        ),
                    );
                    return (HTTP_INTERNAL_SERVER_ERROR, None);
                }
                // Checked again here: the child never trusts what it sends on to the client.
                match headers::validate(&status_line, hdrs) {
                    Ok(head) if peer.error_override && head.status >= 400 => {
                        overridden = Some(head.status as c_int);
                    }
                    Ok(head) => {
                        resp.set_head(&head);
                        head_sent = true;
                    }
                    Err(e) => {
                        let msg = format!("invalid response head from {}: {e}", peer.side);
                        return (peer.bad_gateway(req, &msg), None);
                    }
                }
            }
            Frame::SendFile { .. } if overridden.is_some() => drop(c.take_fd()),
            Frame::SendFile { offset, len } => {
                let Some(fd) = c.take_fd() else {
                    let msg = "a SendFile frame without its file descriptor";
                    return (peer.bad_gateway(req, msg), None);
                };
                if !head_sent {
                    return (
                        peer.bad_gateway(req, "a file before the response head"),
                        None,
                    );
                }
                // Checked here too: httpd only ever sends a regular file, within its size.
                let size = crate::sys::regular_file_size(std::os::fd::AsRawFd::as_raw_fd(&fd));
                let within = size.is_some_and(|s| offset.checked_add(len).is_some_and(|e| e <= s));
                if !within {
                    req.log(
                        Level::Error,
                        &format!(
                            "{}: {}: SendFile with a descriptor that is not a regular file \
                             holding bytes {offset}..+{len}; response aborted",
                            Code::DaemonProtocol.as_str(),
                            peer.name
                        ),
                    );
                    let _ = resp.finish(true);
                    return (OK, None);
                }
                if resp.send_owned_file(fd, offset, len).is_err() {
                    // The client went away: stop relaying; the peer sees the closed socket.
                    return (OK, None);
                }
            }
            Frame::End if overridden.is_some() => {
                return (overridden.unwrap_or(OK), Some(c));
            }
            Frame::End => {
                if !head_sent {
                    return (
                        peer.bad_gateway(req, "end of response without a head"),
                        None,
                    );
                }
                let _ = resp.finish(false);
                return (OK, Some(c));
            }
            Frame::Fail { code, message } => {
                let msg = String::from_utf8_lossy(&message).into_owned();
                if head_sent {
                    req.log(
                        Level::Info,
                        &format!("{}: response aborted by {} ({msg})", peer.name, peer.side),
                    );
                    let _ = resp.finish(true);
                    return (OK, Some(c));
                }
                let status = match code {
                    500 => HTTP_INTERNAL_SERVER_ERROR,
                    // An ASGI request refused at max-tasks.
                    503 => HTTP_SERVICE_UNAVAILABLE,
                    // An ASGI request cancelled by request-timeout.
                    504 => HTTP_GATEWAY_TIME_OUT,
                    _ => peer.bad_gateway(req, &msg),
                };
                return (status, Some(c));
            }
            Frame::Watch => watching = req.client_fd(),
            Frame::WsAccept {
                subprotocol,
                headers,
            } => {
                let Some(key) = websocket else {
                    let msg = "WsAccept for a request that is no WebSocket";
                    return (peer.bad_gateway(req, msg), None);
                };
                if head_sent || overridden.is_some() {
                    return (
                        peer.bad_gateway(req, "WsAccept after a response head"),
                        None,
                    );
                }
                let accepted = super::websocket::Accepted {
                    key,
                    subprotocol: &subprotocol,
                    headers: &headers,
                    max_message: peer.websocket_max_message,
                    record: peer.record,
                };
                return match super::websocket::run(req, &mut c, &accepted) {
                    super::websocket::Ended::Clean => (OK, Some(c)),
                    super::websocket::Ended::DaemonLost(why) => {
                        req.log(
                            Level::Info,
                            &format!("{}: WebSocket ended: {why}", peer.name),
                        );
                        (OK, None)
                    }
                };
            }
            Frame::Reject { .. } => {
                // Only a daemon refuses, and only before `Accepted` (handled by its caller).
                let msg = format!("a Reject from {} after it accepted the request", peer.side);
                return (peer.bad_gateway(req, &msg), None);
            }
            other => {
                let msg = format!("unexpected {} frame from {}", other.name(), peer.side);
                return (peer.bad_gateway(req, &msg), None);
            }
        }
    }
}
