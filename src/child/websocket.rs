//! A WebSocket, the httpd child's side (its peer a daemon process, or the child's own event
//! loop for embedded ASGI): the handshake's checks before the request goes to the
//! application (`precheck`), then, once the application accepts (`WsAccept`), the 101 and the
//! tunnel: client frames decoded (`websocket::frame`, pings answered here) and relayed to the
//! peer as whole messages, the peer's messages and close framed for the client, until the
//! peer ends the session (`End`). Runs in the httpd child, on the worker thread that serves
//! the request (an open WebSocket holds it, as mod_proxy's tunnel does).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::daemon::conn::Conn;
use crate::httpd::request::Request;
use crate::protocol::{self, Frame};
use crate::websocket::frame::{self, Decoder, Event};
use crate::websocket::handshake::{self, Upgrade};
use crate::wsgi::adapter::Level;

/// The largest message a client may send by default (uvicorn's; `WSGIWebSocketMaxMessage`):
/// larger is closed with 1009.
pub const MAX_MESSAGE: usize = 16 << 20;
/// An idle tunnel pings the client this often, so proxies and NATs keep it open.
const PING_EVERY: Duration = Duration::from_secs(20);
/// Close codes the child reports for the client (RFC 6455 7.1.5, 7.4.1).
const ABNORMAL: u16 = 1006;
const NO_STATUS: u16 = 1005;
const NORMAL: u16 = 1000;
const INTERNAL: u16 = 1011;
/// The httpd child is stopping (graceful restart, stop): RFC 6455 "going away".
const GOING_AWAY: u16 = 1001;
/// How long the daemon may take to end a session once the client has closed it.
const CLOSE_WAIT: Duration = Duration::from_secs(30);
/// While this much waits to be written to the daemon, the client is not read (back-pressure
/// down to its socket). The daemon side is never written with a blocking call: a daemon
/// whose application sends while it does not receive would otherwise wait on this thread
/// while this thread waits on it.
const TO_DAEMON_MAX: usize = 1 << 20;
/// After this side's close frame, how long the client's data is still read (and dropped)
/// waiting for its close: at most `LINGER_MAX`, and no longer than `LINGER_QUIET` of silence.
const LINGER_MAX: Duration = Duration::from_secs(5);
const LINGER_QUIET: Duration = Duration::from_millis(500);

/// Whether a request (its CGI environ) opens a WebSocket, from the handshake headers.
pub fn upgrade<K: AsRef<[u8]>>(env: &[(K, Vec<u8>)]) -> Upgrade {
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key.as_ref() == k.as_bytes())
            .map(|(_, v)| v.as_slice())
    };
    // Every daemon-mode request passes here: without an Upgrade header, nothing else is
    // looked at.
    if get("HTTP_UPGRADE").is_none() {
        return Upgrade::No;
    }
    handshake::check(
        get("REQUEST_METHOD").unwrap_or(b""),
        get("SERVER_PROTOCOL").unwrap_or(b""),
        |name| {
            let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
            get(&key)
        },
    )
}

/// WebSocket sessions this child is relaying now (each holds a worker thread).
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Counts one open session for its life (here, and on the board under its record).
struct Open(Option<usize>);

impl Open {
    fn new(record: Option<usize>) -> Open {
        OPEN.fetch_add(1, Ordering::SeqCst);
        if let Some(b) = crate::board::pinned() {
            b.websocket_opened(record);
        }
        Open(record)
    }

    /// A whole message went from the client (`inbound`) or to it.
    fn message(&self, inbound: bool) {
        if let Some(b) = crate::board::pinned() {
            b.websocket_message(self.0, inbound);
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
        if let Some(b) = crate::board::pinned() {
            b.websocket_closed(self.0);
        }
    }
}

/// The handshake's checks before a request goes to its ASGI application: `Ok(None)` for a
/// request that opens no WebSocket, `Ok(Some(key))` for a handshake to hand on, `Err(status)`
/// (logged) for one refused here: a bad handshake (400), an unsupported version (426), a
/// WebSocket over HTTP/2 (400, not supported yet), or one that would leave this child no
/// worker thread for anything else (503: on a threaded MPM one thread per child stays free of
/// WebSockets, on prefork one child of the server, so HTTP requests are still served).
pub fn precheck<K: AsRef<[u8]>>(
    req: Request,
    env: &[(K, Vec<u8>)],
) -> Result<Option<String>, std::ffi::c_int> {
    match upgrade(env) {
        Upgrade::No => Ok(None),
        Upgrade::Yes { .. } if req.client_fd().is_none() => {
            req.log(
                Level::Info,
                "a WebSocket over HTTP/2 is not supported yet; refused with 400",
            );
            Err(400)
        }
        Upgrade::Yes { .. }
            if super::threads_per_child() > 1
                && OPEN.load(Ordering::SeqCst) + 1 >= super::threads_per_child() =>
        {
            req.log(
                Level::Warning,
                &format!(
                    "{}: refused a WebSocket with 503: {} of this child's {} worker threads hold \
                     WebSockets and the last stays free for other requests (raise \
                     ThreadsPerChild / MaxRequestWorkers for more sockets)",
                    crate::error::Code::DaemonUnavailable.as_str(),
                    OPEN.load(Ordering::SeqCst),
                    super::threads_per_child()
                ),
            );
            Err(503)
        }
        Upgrade::Yes { .. }
            if super::threads_per_child() == 1
                && super::max_processes() > 1
                && let Some(open) = prefork_full() =>
        {
            req.log(
                Level::Warning,
                &format!(
                    "{}: refused a WebSocket with 503: {open} of the server's {} children hold \
                     WebSockets and the last stays free for other requests (raise \
                     MaxRequestWorkers for more sockets)",
                    crate::error::Code::DaemonUnavailable.as_str(),
                    super::max_processes()
                ),
            );
            Err(503)
        }
        Upgrade::Yes { key } => Ok(Some(key)),
        Upgrade::Bad { status, why } => {
            req.log(
                Level::Info,
                &format!("refused a WebSocket handshake with {status}: {why}"),
            );
            Err(std::ffi::c_int::from(status))
        }
    }
}

/// An unthreaded MPM (prefork): the WebSockets open across the server, when one more would
/// leave no child free of them (each holds its child; the board counts them all).
fn prefork_full() -> Option<u64> {
    let open = crate::board::pinned()?.websockets_open();
    (open + 1 >= super::max_processes() as u64).then_some(open)
}

/// How a tunnel ended.
pub enum Ended {
    /// The daemon ended the session (`End`): the connection to it can be reused.
    Clean,
    /// The daemon's side failed (it died, or broke the protocol): say why.
    DaemonLost(String),
}

struct Session<'a> {
    /// Counts the session and its messages.
    open: Open,
    daemon: &'a mut Conn,
    client: crate::httpd::request::Tunnel,
    /// The client can still be read from (no close frame from it, no EOF).
    client_open: bool,
    /// A close frame went to the client.
    close_sent: bool,
    /// A `WsClose` went to the daemon.
    daemon_told: bool,
    /// The client has closed too: its close frame came, or its connection is gone.
    client_done: bool,
    /// The client's frames can no longer be followed (it broke the protocol).
    framing_lost: bool,
    /// The daemon's message being framed: the next part is a continuation.
    continuing: bool,
    out: Vec<u8>,
}

impl Session<'_> {
    fn send_client(&mut self, opcode: u8, payload: &[u8], fin: bool) {
        if self.close_sent {
            return;
        }
        self.out.clear();
        frame::encode(opcode, payload, fin, &mut self.out);
        if self.client.write(&self.out).is_err() {
            self.client_gone();
        }
    }

    fn close_client(&mut self, code: u16, reason: &str) {
        if self.close_sent {
            return;
        }
        self.out.clear();
        frame::close_frame(code, reason, &mut self.out);
        let _ = self.client.write(&self.out);
        self.close_sent = true;
    }

    /// The client is gone without a close frame.
    fn client_gone(&mut self) {
        self.client_open = false;
        self.client_done = true;
        self.close_sent = true;
        self.tell_daemon(ABNORMAL, "");
    }

    fn tell_daemon(&mut self, code: u16, reason: &str) {
        if !self.daemon_told {
            self.daemon_told = true;
            let mut reason = reason.as_bytes().to_vec();
            reason.truncate(protocol::MAX_WS_CLOSE - 2);
            let _ = self.daemon.queue(&Frame::WsClose { code, reason });
        }
    }

    /// One event from the client.
    fn client_event(&mut self, e: Event) -> std::io::Result<()> {
        match e {
            Event::Message { text, data } => {
                if self.daemon_told {
                    return Ok(());
                }
                for f in protocol::ws_message_frames(text, &data) {
                    self.daemon.queue(&f)?;
                }
                self.open.message(true);
            }
            Event::Ping(payload) => self.send_client(frame::PONG, &payload, true),
            Event::Pong(_) => {}
            Event::Close { code, reason } => {
                self.client_open = false;
                self.client_done = true;
                // The closing handshake: echo the code and reason, as uvicorn does (none: a
                // bare close).
                if !self.close_sent {
                    self.out.clear();
                    match code {
                        Some(c) => frame::close_frame(c, &reason, &mut self.out),
                        None => frame::encode(frame::CLOSE, &[], true, &mut self.out),
                    }
                    let _ = self.client.write(&self.out);
                    self.close_sent = true;
                }
                self.tell_daemon(code.unwrap_or(NO_STATUS), &reason);
            }
        }
        Ok(())
    }

    /// Reads what the client has sent (everything, until it would wait: TLS records are
    /// decrypted ahead of the socket).
    fn read_client(&mut self, dec: &mut Decoder, buf: &mut [u8]) -> std::io::Result<()> {
        while self.client_open && self.daemon.queued() < TO_DAEMON_MAX {
            match self.client.read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    dec.feed(&buf[..n]);
                    loop {
                        match dec.next_event() {
                            Ok(Some(e)) => self.client_event(e)?,
                            Ok(None) => break,
                            Err(f) => {
                                self.client_open = false;
                                self.framing_lost = true;
                                self.close_client(f.code, f.why);
                                self.tell_daemon(f.code, f.why);
                                break;
                            }
                        }
                    }
                }
                Err(_) => self.client_gone(),
            }
        }
        Ok(())
    }

    /// After this side's close frame: what the client still sends is read and dropped until
    /// it closes too (its close frame, or EOF), goes quiet for `LINGER_QUIET`, or `LINGER_MAX`
    /// has passed. A client still writing (a message over the limit, say) then gets the close
    /// frame: closing the socket on unread data would reset the connection, and lose it.
    fn linger(&mut self, dec: &mut Decoder, buf: &mut [u8], fd: std::os::fd::RawFd) {
        let deadline = Instant::now() + LINGER_MAX;
        while !self.client_done {
            // Everything readable now (TLS records decrypted ahead of the socket included).
            loop {
                match self.client.read(buf) {
                    Ok(0) => break,
                    // Dropped: nothing more goes to the application.
                    Ok(_) if self.framing_lost => {}
                    Ok(n) => {
                        dec.feed(&buf[..n]);
                        loop {
                            match dec.next_event() {
                                Ok(Some(Event::Close { .. })) => {
                                    self.client_done = true;
                                    break;
                                }
                                Ok(Some(_)) => {}
                                Ok(None) => break,
                                Err(_) => {
                                    self.framing_lost = true;
                                    break;
                                }
                            }
                        }
                    }
                    Err(_) => self.client_done = true,
                }
                if self.client_done {
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !crate::sys::wait_readable(fd, LINGER_QUIET.min(left)) {
                return;
            }
        }
    }
}

/// A WebSocket the application accepted: the client's handshake key, what the application
/// answered (`WsAccept`), and the message size limit.
pub struct Accepted<'a> {
    pub key: &'a str,
    pub subprotocol: &'a [u8],
    pub headers: &'a [(Vec<u8>, Vec<u8>)],
    pub max_message: usize,
    /// The board record the session counts under (embedded mode: `None`).
    pub record: Option<usize>,
}

/// Answers the handshake (101) and relays until the daemon ends the session.
pub fn run(req: Request, daemon: &mut Conn, a: &Accepted<'_>) -> Ended {
    // Counted before the 101 goes out: a client that opens its next socket as soon as it has
    // the answer finds this one counted (the reserve checks in `precheck`).
    let open = Open::new(a.record);
    let accept = handshake::accept(a.key);
    let client = req.switch_to_websocket(
        &accept,
        (!a.subprotocol.is_empty()).then_some(a.subprotocol),
        a.headers,
    );
    let client_fd = client.client_fd();
    let mut s = Session {
        open,
        daemon,
        client,
        client_open: client_fd.is_some(),
        close_sent: false,
        daemon_told: false,
        client_done: client_fd.is_none(),
        framing_lost: false,
        continuing: false,
        out: Vec::new(),
    };
    let mut dec = Decoder::new(a.max_message);
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_ping = Instant::now();
    let mut told_at: Option<Instant> = None;
    if let Err(e) = s.daemon.set_nonblocking(true) {
        s.close_client(INTERNAL, "");
        s.client.finish();
        return Ended::DaemonLost(format!(
            "cannot make the daemon connection non-blocking: {e}"
        ));
    }
    let ended = loop {
        if let Err(e) = s.read_client(&mut dec, &mut buf) {
            break Ended::DaemonLost(format!("queueing for the daemon failed: {e}"));
        }
        if !s.client_open && !s.daemon_told {
            s.tell_daemon(ABNORMAL, "");
        }
        // The client is done: the application has this long to end the session.
        if s.daemon_told && told_at.get_or_insert_with(Instant::now).elapsed() > CLOSE_WAIT {
            break Ended::DaemonLost(
                "the application did not end the session after the client closed it".into(),
            );
        }
        // This child is stopping (a graceful restart, a stop): the client is told it goes away
        // and the application gets the disconnect; the session ends when it returns.
        if s.client_open && crate::httpd::request::mpm_stopping() {
            s.client_open = false;
            s.close_client(GOING_AWAY, "server going away");
            s.tell_daemon(GOING_AWAY, "server going away");
        }
        if let Err(e) = s.daemon.try_flush() {
            s.close_client(INTERNAL, "");
            break Ended::DaemonLost(format!("writing to the daemon failed: {e}"));
        }
        let frame = match s.daemon.try_recv() {
            Ok(Some(f)) => f,
            Ok(None) => {
                // Nothing to relay now: wait for the daemon, for room to write to it, or for
                // the client (unless the daemon is behind).
                let watch = (s.client_open && s.daemon.queued() < TO_DAEMON_MAX)
                    .then_some(client_fd)
                    .flatten();
                let woke = crate::sys::wait_either(
                    s.daemon.fd(),
                    s.daemon.queued() > 0,
                    watch,
                    PING_EVERY.min(Duration::from_secs(1)),
                );
                if !woke && s.client_open && last_ping.elapsed() >= PING_EVERY {
                    s.send_client(frame::PING, b"", true);
                    last_ping = Instant::now();
                }
                continue;
            }
            Err(e) => {
                s.close_client(INTERNAL, "");
                break Ended::DaemonLost(format!("the daemon closed the connection: {e}"));
            }
        };
        match frame {
            Frame::WsMessage { text, fin, data } => {
                let opcode = if s.continuing {
                    frame::CONTINUATION
                } else if text {
                    frame::TEXT
                } else {
                    frame::BINARY
                };
                s.continuing = !fin;
                if s.client_open || !s.close_sent {
                    s.send_client(opcode, &data, fin);
                    if fin {
                        s.open.message(false);
                    }
                }
            }
            Frame::WsClose { code, reason } => {
                let reason = String::from_utf8_lossy(&reason).into_owned();
                s.close_client(code, &reason);
            }
            Frame::End => {
                s.close_client(NORMAL, "");
                // The last frame of the session from this side: after it the daemon reads the
                // next request (messages already sent before it are skipped by the daemon).
                s.tell_daemon(NORMAL, "");
                break Ended::Clean;
            }
            Frame::Fail { message, .. } => {
                s.close_client(INTERNAL, "");
                break Ended::DaemonLost(String::from_utf8_lossy(&message).into_owned());
            }
            other => {
                s.close_client(INTERNAL, "");
                break Ended::DaemonLost(format!("unexpected {} frame", other.name()));
            }
        }
    };
    // After a clean end, what is still queued for the daemon (the last WsClose) is written in
    // the blocking mode the connection goes back in; a lost daemon is not waited for.
    let back = s.daemon.set_nonblocking(false);
    let ended = match ended {
        Ended::Clean => match back.and_then(|_| s.daemon.flush()) {
            Ok(()) => Ended::Clean,
            Err(e) => Ended::DaemonLost(format!("writing to the daemon failed: {e}")),
        },
        lost => lost,
    };
    if let Some(fd) = client_fd {
        s.linger(&mut dec, &mut buf, fd);
    }
    s.client.finish();
    ended
}
