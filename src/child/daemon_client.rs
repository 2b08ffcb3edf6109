//! The httpd child's side of daemon mode: connect to the group's socket (retrying until
//! connect-timeout), send the handshake and the environ, hand over the request body when the
//! daemon asks for it, and turn the daemon's frames into the response. An unreachable daemon is
//! a 503, a protocol fault or a daemon that dies before the headers a 502, and one that dies
//! after them an aborted (truncated) response. Runs in the httpd child.
#![forbid(unsafe_code)]

use std::ffi::c_int;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::environ::recycle_environ;
use super::response::ApacheResponse;
use super::settings::{RequestSettings, refuse};
use crate::config::DirConfig;
use crate::daemon::conn::Conn;
use crate::error::Code;
use crate::httpd::ffi::{
    HTTP_BAD_GATEWAY, HTTP_BAD_REQUEST, HTTP_GATEWAY_TIME_OUT, HTTP_INTERNAL_SERVER_ERROR,
    HTTP_SERVICE_UNAVAILABLE, OK,
};
use crate::httpd::request::Request;
use crate::parent::supervisor::Group;
use crate::protocol::{self, Frame};
use crate::request as core;
use crate::websocket::handshake::Upgrade;
use crate::wsgi::adapter::{Level, ResponseSink};
use crate::wsgi::headers;

fn connect(path: &str, timeout: Duration) -> Result<UnixStream, String> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                let retry = matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED)
                        | Some(libc::EAGAIN)
                        | Some(libc::ENOENT)
                        | Some(libc::EINTR)
                );
                if !retry {
                    let why = if e.raw_os_error() == Some(libc::EACCES) {
                        "permission denied (the socket must belong to the httpd child user; see socket-user)"
                    } else {
                        "unexpected error"
                    };
                    return Err(format!(
                        "cannot connect to daemon socket '{path}': {e}: {why}"
                    ));
                }
                if Instant::now() >= deadline {
                    let why = match e.raw_os_error() {
                        Some(libc::ENOENT) => {
                            "the socket does not exist (daemon not started or being restarted)"
                        }
                        Some(libc::ECONNREFUSED) => {
                            "no daemon process is listening (dead or restarting)"
                        }
                        _ => "the daemon's listen queue is full (all threads busy)",
                    };
                    return Err(format!(
                        "unable to connect to daemon socket '{path}' within connect-timeout ({} s): {e}: {why}",
                        timeout.as_secs_f32()
                    ));
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        }
    }
}

/// Idle connections to daemons, kept by this httpd child for the next requests (mod_wsgi opens
/// one connection per request; that cost is a large part of its daemon-mode overhead).
static POOL: Mutex<Vec<(String, u32, Conn)>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 128;

/// A kept connection to `socket` that the daemon has not closed meanwhile.
fn pool_take(socket: &str, generation: u32) -> Option<Conn> {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(i) = pool
        .iter()
        .rposition(|(s, g, _)| s == socket && *g == generation)
    {
        let (_, _, c) = pool.swap_remove(i);
        // Readable while idle means closed (or unexpected data): not usable.
        if !crate::sys::wait_readable(c.fd(), Duration::ZERO) {
            return Some(c);
        }
    }
    None
}

fn pool_give(socket: &str, generation: u32, mut c: Conn) {
    if !c.reusable() {
        return;
    }
    c.trim_idle();
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < POOL_MAX {
        pool.push((socket.to_string(), generation, c));
    }
}

/// The answer to a daemon's refusal.
fn rejected(req: Request, name: &str, reason: u8) -> c_int {
    let why = match reason {
        protocol::REJECT_BAD_CREDENTIALS => {
            "it refused this server's credentials (stale generation?)"
        }
        protocol::REJECT_SHUTTING_DOWN => "its processes kept shutting down until connect-timeout",
        protocol::REJECT_QUEUE_TIMEOUT => "the request waited longer than queue-timeout",
        _ => "it refused the request",
    };
    if reason == protocol::REJECT_QUEUE_TIMEOUT {
        req.log(
            Level::Error,
            &format!(
                "{}: daemon group '{name}': {why}",
                Code::DaemonUnavailable.as_str()
            ),
        );
        return HTTP_GATEWAY_TIME_OUT;
    }
    unavailable(req, name, why)
}

fn unavailable(req: Request, group: &str, msg: &str) -> c_int {
    req.log(
        Level::Error,
        &format!(
            "{}: daemon group '{group}': {msg}",
            Code::DaemonUnavailable.as_str()
        ),
    );
    HTTP_SERVICE_UNAVAILABLE
}

fn bad_gateway(req: Request, group: &str, msg: &str) -> c_int {
    req.log(
        Level::Error,
        &format!(
            "{}: daemon group '{group}': {msg}",
            Code::DaemonProtocol.as_str()
        ),
    );
    HTTP_BAD_GATEWAY
}

thread_local! {
    static SPARE_WIRE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The encoded-request buffer, reused by the next request of the same thread (a fresh ~2 KiB
/// allocation per request made glibc consolidate its free lists every time).
struct SpareWire(Vec<u8>);

impl SpareWire {
    fn take() -> Self {
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

/// Daemon mode: the request (`prepare` builds it once the group is known to exist), sent to
/// its group's daemon.
pub fn serve(
    req: Request,
    set: &RequestSettings,
    dcfg: &DirConfig,
    prepare: impl FnOnce() -> Result<core::Request<String>, c_int>,
) -> c_int {
    let Some((generation, index)) = crate::parent::supervisor::group(&set.process_group) else {
        return refuse(
            req,
            500,
            Code::RequestRefused,
            &format!(
                "no WSGIDaemonProcess defines process group '{}' (selected by WSGIProcessGroup \
                 or process-group=)",
                set.process_group
            ),
        );
    };
    let request = match prepare() {
        Ok(v) => v,
        Err(rc) => return rc,
    };
    let timeout = Duration::from_micros(req.server_timeout_us().max(0) as u64);
    let group = &generation.groups[index];
    run(
        req,
        group,
        generation.secret,
        generation.number,
        request,
        timeout,
        dcfg.error_override.unwrap_or(false),
        set.enable_sendfile,
    )
}

/// Serves the request through daemon group `group`.
#[allow(clippy::too_many_arguments)]
fn run(
    req: Request,
    group: &Group,
    secret: [u8; 16],
    generation: u32,
    request: core::Request<String>,
    apache_timeout: Duration,
    error_override: bool,
    sendfile: bool,
) -> c_int {
    let name = group.spec.name.as_str();
    // WSGIErrorOverride On: an error status from the application is answered by httpd itself
    // (ErrorDocument), its body discarded.
    let mut overridden: Option<c_int> = None;
    let timeout = group.spec.socket_timeout.unwrap_or(apache_timeout);
    // A WebSocket handshake: checked here, answered by the application (WsAccept).
    let websocket = match super::websocket::upgrade(&request.env) {
        Upgrade::No => None,
        Upgrade::Yes { .. } if req.client_fd().is_none() => {
            req.log(
                Level::Info,
                "a WebSocket over HTTP/2 is not supported yet; refused with 400",
            );
            return HTTP_BAD_REQUEST;
        }
        Upgrade::Yes { key } => Some(key),
        Upgrade::Bad { status, why } => {
            req.log(
                Level::Info,
                &format!("refused a WebSocket handshake with {status}: {why}"),
            );
            return c_int::from(status);
        }
    };
    let core::Request { env, meta } = request;
    let env: Vec<(Vec<u8>, Vec<u8>)> = env.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect();
    // The handshake goes only on a new connection; a kept one carries just the request.
    let mut hello = Vec::new();
    let mut request = SpareWire::take();
    let frame = Frame::Request { meta, env };
    let encoded = protocol::encode(
        &Frame::Hello {
            version: protocol::PROTOCOL_VERSION,
            secret,
            generation,
        },
        &mut hello,
    )
    .and_then(|_| protocol::encode(&frame, &mut request.0));
    if let Frame::Request { env, .. } = frame {
        // The vector and its entries' buffers go back for the next request's environ (same
        // layout: no allocation; the keys were strings a moment ago).
        recycle_environ(
            env.into_iter()
                .map(|(k, v)| (String::from_utf8(k).unwrap_or_default(), v))
                .collect(),
        );
    }
    if let Err(e) = encoded {
        return bad_gateway(req, name, &format!("cannot encode the request: {e}"));
    }
    // Until the daemon says `Accepted`, nothing of the request has run, so it may go to another
    // connection or process: when a daemon refuses it because it is stopping (graceful restart,
    // recycling, script reload), or a kept connection turns out closed. After `Accepted` it is
    // never sent again (a failure then is a 502 or an aborted response).
    let deadline = Instant::now() + group.spec.connect_timeout;
    let mut restore_timeout = false;
    let mut c = loop {
        let retry_left = Instant::now() < deadline;
        let (mut c, kept) = match pool_take(&group.socket, generation) {
            Some(c) => (c, true),
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                match connect(&group.socket, left.max(Duration::from_millis(1))) {
                    Ok(stream) => (Conn::new(stream), false),
                    Err(msg) => return unavailable(req, name, &msg),
                }
            }
        };
        let sent = if kept {
            c.send_raw(&request.0)
        } else {
            c.send_raw(&[hello.as_slice(), request.0.as_slice()].concat())
        };
        if let Err(e) = sent {
            if kept || retry_left {
                continue;
            }
            return bad_gateway(req, name, &format!("sending the request failed: {e}"));
        }
        if !kept {
            // A live daemon process answers a new connection at once; with the socket held
            // open by the parent, a dead group would otherwise just leave it queued.
            c.set_timeouts(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
            match c.recv() {
                Ok(Frame::Welcome) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return unavailable(
                        req,
                        name,
                        &format!(
                            "no daemon process accepted the connection on '{}' within \
                             connect-timeout ({} s): the group's processes are not running \
                             or cannot start (see its RW0013/RW0016 log lines)",
                            group.socket,
                            group.spec.connect_timeout.as_secs_f32()
                        ),
                    );
                }
                Err(_) if retry_left => continue,
                Err(e) => {
                    return unavailable(
                        req,
                        name,
                        &format!("the daemon closed the connection: {e}"),
                    );
                }
                Ok(other) => {
                    return bad_gateway(
                        req,
                        name,
                        &format!("unexpected {} frame from the daemon", other.name()),
                    );
                }
            }
        }
        c.set_timeouts(timeout);
        // The daemon sends `Accepted` (a bare header) before it runs the application, and the
        // response follows. Waiting for more bytes than that header lets a quick response wake
        // this thread once rather than twice; a Reject (longer), the daemon closing, a signal
        // or the timeout still end the wait early, with whatever has arrived.
        let waited = Instant::now();
        if c.set_low_water(protocol::HEADER_LEN + 1).is_err() {
            return bad_gateway(req, name, "cannot set the socket's receive low-water mark");
        }
        let first = c.recv();
        if c.set_low_water(1).is_err() {
            return bad_gateway(
                req,
                name,
                "cannot reset the socket's receive low-water mark",
            );
        }
        match first {
            Ok(Frame::Accepted) => {
                if !c.more_buffered() {
                    // `Accepted` came alone: the wait may have used up part of the timeout,
                    // which bounds the wait for the response head as if `Accepted` had been
                    // read at once.
                    let left = timeout.saturating_sub(waited.elapsed());
                    c.set_timeouts(left.max(Duration::from_millis(1)));
                    restore_timeout = true;
                }
                break c;
            }
            Ok(Frame::Reject {
                reason: protocol::REJECT_SHUTTING_DOWN,
            }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(Frame::Reject { reason }) => return rejected(req, name, reason),
            // Closed before accepting the request: it never ran, send it elsewhere.
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::BrokenPipe
                    ) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                req.log(
                    Level::Error,
                    &format!(
                        "{}: daemon group '{name}': no thread picked the request up within \
                         socket-timeout ({} s)",
                        Code::DaemonUnavailable.as_str(),
                        timeout.as_secs()
                    ),
                );
                return HTTP_GATEWAY_TIME_OUT;
            }
            Err(e) => {
                return bad_gateway(
                    req,
                    name,
                    &format!("the daemon did not take the request: {e}"),
                );
            }
            Ok(other) => {
                return bad_gateway(
                    req,
                    name,
                    &format!("unexpected {} frame instead of Accepted", other.name()),
                );
            }
        }
    };
    let mut resp = ApacheResponse::new(req, sendfile);
    let mut head_sent = false;
    let mut body_buf: Vec<u8> = Vec::new();
    // After `Watch` (an ASGI application waits for the client to go away): the client socket,
    // watched while waiting for the daemon's next frame.
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
                            return bad_gateway(
                                req,
                                name,
                                &format!("telling the daemon the client went away failed: {e}"),
                            );
                        }
                        break;
                    }
                    crate::sys::Watched::TimedOut if !left.is_zero() => continue,
                    _ => break,
                }
            }
        }
        let received = c.recv();
        if std::mem::take(&mut restore_timeout) {
            c.set_timeouts(timeout);
        }
        let frame = match received {
            Ok(f) => f,
            Err(e) => {
                let what = if e.kind() == io::ErrorKind::UnexpectedEof {
                    "the daemon closed the connection (it may have died or been restarted)"
                        .to_string()
                } else if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::TimedOut
                {
                    format!(
                        "timeout reading from the daemon after {} s (socket-timeout)",
                        timeout.as_secs()
                    )
                } else {
                    format!("reading from the daemon failed: {e}")
                };
                if head_sent {
                    req.log(
                        Level::Error,
                        &format!(
                            "{}: daemon group '{name}': {what}; response aborted",
                            Code::DaemonProtocol.as_str()
                        ),
                    );
                    let _ = resp.finish(true);
                    return OK;
                }
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
                    req.log(
                        Level::Error,
                        &format!(
                            "{}: daemon group '{name}': {what}",
                            Code::DaemonProtocol.as_str()
                        ),
                    );
                    return HTTP_GATEWAY_TIME_OUT;
                }
                return bad_gateway(req, name, &what);
            }
        };
        match frame {
            Frame::ReadBody { max } => {
                // A large request (the application asked for that many bytes of a body of
                // known length) is filled in one frame, so a large body costs few round trips;
                // up to 64 KiB, whatever part has arrived is sent at once (streaming input).
                // The buffer is reused.
                let want = (max as usize).clamp(1, protocol::MAX_CHUNK);
                let fill_all = want > 64 * 1024;
                let mut buf = std::mem::take(&mut body_buf);
                buf.resize(want, 0);
                let mut n = 0;
                let mut failed = false;
                while n < want && (n == 0 || fill_all) {
                    match req.read_body(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                let sent = if failed {
                    c.send(&Frame::Abort)
                } else if n == 0 {
                    c.send(&Frame::BodyEnd)
                } else {
                    // Written from the buffer itself (no copy into the send buffer).
                    c.send_data(protocol::kind::BODY, &buf[..n])
                };
                body_buf = buf;
                if let Err(e) = sent {
                    return bad_gateway(
                        req,
                        name,
                        &format!("sending the request body failed: {e}"),
                    );
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
                // The daemon sends the reason phrase as latin-1 bytes, like header values.
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
                // header-buffer-size bounds one header line from the daemon (mod_wsgi: 500).
                let limit = match group.spec.header_buffer_size {
                    0 => 32768,
                    n => n as usize,
                };
                if let Some((n, _)) = hdrs.iter().find(|(n, v)| n.len() + 2 + v.len() > limit) {
                    req.log(
                        Level::Error,
                        &format!(
                            "{}: daemon group '{name}': response header '{n}' is longer than \
                             header-buffer-size ({limit} bytes)",
                            Code::AppProtocol.as_str()
                        ),
                    );
                    return HTTP_INTERNAL_SERVER_ERROR;
                }
                // Checked again here: the child never trusts what it sends on to the client.
                match headers::validate(&status_line, hdrs) {
                    Ok(head) if error_override && head.status >= 400 => {
                        overridden = Some(head.status as c_int);
                    }
                    Ok(head) => {
                        resp.set_head(&head);
                        head_sent = true;
                    }
                    Err(e) => {
                        return bad_gateway(
                            req,
                            name,
                            &format!("invalid response head from the daemon: {e}"),
                        );
                    }
                }
            }
            Frame::SendFile { .. } if overridden.is_some() => drop(c.take_fd()),
            Frame::SendFile { offset, len } => {
                let Some(fd) = c.take_fd() else {
                    return bad_gateway(req, name, "a SendFile frame without its file descriptor");
                };
                if !head_sent {
                    return bad_gateway(req, name, "a file before the response head");
                }
                // Checked here too: httpd only ever sends a regular file, within its size.
                let size = crate::sys::regular_file_size(std::os::fd::AsRawFd::as_raw_fd(&fd));
                let within = size.is_some_and(|s| offset.checked_add(len).is_some_and(|e| e <= s));
                if !within {
                    req.log(
                        Level::Error,
                        &format!(
                            "{}: daemon group '{name}': SendFile with a descriptor that is not \
                             a regular file holding bytes {offset}..+{len}; response aborted",
                            Code::DaemonProtocol.as_str()
                        ),
                    );
                    let _ = resp.finish(true);
                    return OK;
                }
                if resp.send_owned_file(fd, offset, len).is_err() {
                    // The client went away: stop relaying; the daemon sees the closed socket.
                    return OK;
                }
            }
            Frame::Chunk(_) if overridden.is_some() => {}
            Frame::End if overridden.is_some() => {
                pool_give(&group.socket, generation, c);
                return overridden.unwrap_or(OK);
            }
            Frame::Chunk(data) => {
                if !head_sent {
                    return bad_gateway(req, name, "body data before the response head");
                }
                // Flushed: the daemon only sends a block on its own when the application
                // streams (a generator is flushed block by block, as in embedded mode). The
                // last block, when the end of the response came with it (a small response in
                // one write), goes out with the end: one pass of the output filters.
                if resp.write(&data, !c.end_follows()).is_err() {
                    // The client went away: stop relaying; the daemon sees the closed socket.
                    return OK;
                }
            }
            Frame::End => {
                if !head_sent {
                    return bad_gateway(req, name, "end of response without a head");
                }
                let _ = resp.finish(false);
                pool_give(&group.socket, generation, c);
                return OK;
            }
            Frame::Fail { code, message } => {
                let msg = String::from_utf8_lossy(&message).into_owned();
                pool_give(&group.socket, generation, c);
                if head_sent {
                    req.log(
                        Level::Info,
                        &format!("daemon group '{name}': response aborted by the daemon ({msg})"),
                    );
                    let _ = resp.finish(true);
                    return OK;
                }
                return match code {
                    500 => HTTP_INTERNAL_SERVER_ERROR,
                    // An ASGI request cancelled by request-timeout.
                    504 => HTTP_GATEWAY_TIME_OUT,
                    _ => bad_gateway(req, name, &msg),
                };
            }
            Frame::Watch => watching = req.client_fd(),
            Frame::WsAccept {
                subprotocol,
                headers,
            } => {
                let Some(key) = websocket.as_deref() else {
                    return bad_gateway(req, name, "WsAccept for a request that is no WebSocket");
                };
                if head_sent || overridden.is_some() {
                    return bad_gateway(req, name, "WsAccept after a response head");
                }
                return match super::websocket::run(req, &mut c, key, &subprotocol, &headers) {
                    super::websocket::Ended::Clean => {
                        pool_give(&group.socket, generation, c);
                        OK
                    }
                    super::websocket::Ended::DaemonLost(why) => {
                        req.log(
                            Level::Info,
                            &format!("daemon group '{name}': WebSocket ended: {why}"),
                        );
                        OK
                    }
                };
            }
            Frame::Reject { reason } => return rejected(req, name, reason),
            other => {
                return bad_gateway(
                    req,
                    name,
                    &format!("unexpected {} frame from the daemon", other.name()),
                );
            }
        }
    }
}
