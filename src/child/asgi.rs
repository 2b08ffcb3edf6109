//! Embedded ASGI: an ASGI request of an httpd child runs on the child's own event loop (the
//! daemon's `asgi` core, one loop thread per child), reached over a socket pair per worker
//! thread. A thread's first ASGI request is looked at with the GIL (the script loaded, the
//! callable found to be ASGI) and handed to the loop with one end of a new pair (as a daemon's
//! worker hands over its connection); the thread keeps the other end, and the loop keeps its
//! end and reads the thread's next requests from it itself. From then on a request for a
//! script known to be ASGI goes to the loop as a frame without the GIL (`serve_known`): the
//! loop loads and checks it as a daemon's loop does, answers `Accepted`, or `Reject` for one
//! that is no longer ASGI, which the thread then serves the slow way. The thread serves each
//! response exactly as it serves a daemon's (`relay`): the body as the application reads it,
//! the client watched, WebSockets tunnelled. Lifespan shutdown runs when the child exits.
//! Runs in the httpd child (worker threads, and the loop thread through `asgi::Host`).
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::ffi::c_int;
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;

use super::relay::{Peer, SpareWire, encode_request, relay};
use super::settings::RequestSettings;
use crate::asgi::{Admitted, Hooks, Host, OnFailure};
use crate::config::daemon::Lifespan;
use crate::config::{GlobalConfig, Interface};
use crate::daemon::conn::Conn;
use crate::error::Code;
use crate::httpd::base::main_log;
use crate::httpd::ffi::{HTTP_GATEWAY_TIME_OUT, HTTP_INTERNAL_SERVER_ERROR};
use crate::httpd::request::Request;
use crate::protocol::{self, Frame};
use crate::request::{self as core};
use crate::wsgi::adapter::{Level, LogFn};

/// mod_wsgi has no lifespan settings for embedded mode: the daemon options' defaults apply.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the lifespan shutdowns may take when the child exits (`shutdown-timeout`'s
/// default).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// A failed lifespan startup is tried again by a request after this long (a daemon process
/// would be replaced, with its restart back-off).
const RETRY_STARTUP: Duration = Duration::from_secs(5);

/// The loop's side of a worker thread's connection: a request read from it runs at once (an
/// httpd child has no queue, no maximum-requests, and reloads a changed script in place), and
/// one the loop does not run is refused with `REJECT_ELSEWHERE`.
struct ChildHost {
    log: LogFn,
    case_sensitive: bool,
}

impl Host for ChildHost {
    fn admit(&self, conn: &mut Conn, _req: &core::Request<Vec<u8>>) -> Admitted {
        // A bare header into the thread's idle connection: blocking for it is a moment.
        let sent = conn
            .set_nonblocking(false)
            .and_then(|_| conn.send(&Frame::Accepted))
            .and_then(|_| conn.set_nonblocking(true));
        match sent {
            Ok(()) => Admitted::Run,
            Err(_) => Admitted::Refused { keep: false },
        }
    }
    fn started(&self) {}
    fn finished(&self, _counts: bool) {}
    fn release(&self, _token: u64, mut conn: Conn, _pending: Option<core::Request<Vec<u8>>>) {
        // The worker thread gets its request back and serves it with the GIL; this connection
        // ends here (the thread makes another when it next needs one).
        let _ = conn.send(&Frame::Reject {
            reason: protocol::REJECT_ELSEWHERE,
        });
    }
    fn keeps_connections(&self) -> bool {
        true
    }
    fn log(&self) -> LogFn {
        self.log.clone()
    }
    fn case_sensitive(&self) -> bool {
        self.case_sensitive
    }
}

struct Setup {
    hooks: Hooks,
    host: Arc<dyn Host>,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

fn setup(g: &GlobalConfig) -> &'static Setup {
    SETUP.get_or_init(|| {
        let log = main_log();
        Setup {
            hooks: Hooks {
                log: log.clone(),
                on_failure: OnFailure::RetryAfter(RETRY_STARTUP),
                lifespan: Lifespan::Auto,
                startup_timeout: STARTUP_TIMEOUT,
                shutdown_timeout: SHUTDOWN_TIMEOUT,
                request_timeout: Duration::ZERO,
                // An httpd child cannot be replaced: a blocked loop is reported only.
                loop_deadlock: Duration::ZERO,
                // The child's threads bound it already.
                max_tasks: 0,
            },
            host: Arc::new(ChildHost {
                log,
                case_sensitive: g.case_sensitive,
            }),
        }
    })
}

thread_local! {
    /// This worker thread's end of its connection to the loop (idle between requests).
    static TO_LOOP: RefCell<Option<Conn>> = const { RefCell::new(None) };
}

/// The mounts known to be ASGI applications run by the loop: (script, callable, interface),
/// remembered when a request found them so (bounded: scripts are few).
static KNOWN: Mutex<Vec<(String, String, Interface)>> = Mutex::new(Vec::new());
const KNOWN_MAX: usize = 64;

fn known_list() -> std::sync::MutexGuard<'static, Vec<(String, String, Interface)>> {
    KNOWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `script`'s `callable` (under `interface`) was last found to be an ASGI
/// application of the main interpreter.
pub fn known(script: &str, callable: &str, interface: Interface) -> bool {
    known_list()
        .iter()
        .any(|(s, c, i)| s == script && c == callable && *i == interface)
}

fn remember(script: &str, callable: &str, interface: Interface) {
    let mut list = known_list();
    if list.len() < KNOWN_MAX
        && !list
            .iter()
            .any(|(s, c, i)| s == script && c == callable && *i == interface)
    {
        list.push((script.to_string(), callable.to_string(), interface));
    }
}

/// Forgets a mount the loop refused (its script changed to WSGI, say).
pub fn forget(script: &str, callable: &str, interface: Interface) {
    known_list().retain(|(s, c, i)| !(s == script && c == callable && *i == interface));
}

/// What `serve_known` did.
pub enum Known {
    /// Served: the handler's status.
    Served(c_int),
    /// Not taken by the loop: the request back, to serve the slow way. `refused`: the loop
    /// refused it or its connection is gone (the mount is no longer known to be ASGI); else
    /// this thread has no connection yet.
    Back {
        request: core::Request<String>,
        refused: bool,
    },
}

/// Sends a request for a mount `known` to be ASGI to the loop over this thread's connection,
/// without the GIL, and serves its response.
pub fn serve_known(req: Request, request: core::Request<String>, set: &RequestSettings) -> Known {
    let Some(mut conn) = TO_LOOP.with(|c| c.borrow_mut().take()) else {
        return Known::Back {
            request,
            refused: false,
        };
    };
    let websocket = match super::websocket::precheck(req, &request.env) {
        Ok(key) => key,
        Err(status) => {
            TO_LOOP.with(|c| *c.borrow_mut() = Some(conn));
            return Known::Served(status);
        }
    };
    let mut wire = SpareWire::take();
    let (encoded, request) = encode_request(request, &mut wire.0);
    if encoded.is_err() {
        // Too large for a frame: the slow way says why.
        TO_LOOP.with(|c| *c.borrow_mut() = Some(conn));
        return Known::Back {
            request,
            refused: false,
        };
    }
    let timeout = apache_timeout(req);
    conn.set_timeouts(timeout);
    // Until `Accepted` nothing ran: any other answer (the loop refused it, or the connection
    // is gone with a loop that stopped) sends the request the slow way.
    match conn.send_raw(&wire.0).and_then(|_| conn.recv()) {
        Ok(Frame::Accepted) => {}
        // The loop did not get to it in time: it may still read it, so it is not sent again.
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            req.log(
                Level::Error,
                &format!(
                    "{}: embedded ASGI: the event loop did not take the request within \
                     Timeout ({} s); is the application blocking its loop?",
                    Code::DaemonUnavailable.as_str(),
                    timeout.as_secs()
                ),
            );
            return Known::Served(HTTP_GATEWAY_TIME_OUT);
        }
        _ => {
            return Known::Back {
                request,
                refused: true,
            };
        }
    }
    super::environ::recycle_environ(request.env);
    Known::Served(respond(req, conn, timeout, websocket.as_deref(), set))
}

/// A request handed to the loop: the worker thread's end of its connection, and the
/// WebSocket handshake's key when it opens one.
pub struct Handed {
    conn: Conn,
    websocket: Option<String>,
}

/// Hands `request` for ASGI application `app` (of the main interpreter) to this child's
/// event loop with a new connection (this thread's from now on), and remembers the mount as
/// ASGI; `Err` is the status to answer at once (a refused WebSocket handshake, no socket
/// pair).
pub fn hand_over(
    py: Python<'_>,
    req: Request,
    g: &GlobalConfig,
    app: &Bound<'_, PyAny>,
    request: &core::Request<String>,
    (script, callable, interface): (&str, &str, Interface),
    log: &LogFn,
) -> Result<Handed, c_int> {
    let websocket = super::websocket::precheck(req, &request.env)?;
    remember(script, callable, interface);
    // A connection this thread still had goes (the loop forgets it when it sees it close).
    TO_LOOP.with(|c| c.borrow_mut().take());
    let (ours, theirs) = UnixStream::pair().map_err(|e| {
        log(
            Level::Error,
            &format!("cannot make a socket pair for the ASGI event loop: {e}"),
        );
        HTTP_INTERNAL_SERVER_ERROR
    })?;
    let s = setup(g);
    let link = (Conn::new(theirs), Arc::clone(&s.host), 0, true);
    crate::asgi::hand_over(py, "", &s.hooks, link, app, request, log);
    Ok(Handed {
        conn: Conn::new(ours),
        websocket,
    })
}

/// Serves the response of a request handed to the loop (called without the GIL).
pub fn serve(req: Request, handed: Handed, set: &RequestSettings) -> c_int {
    let Handed {
        mut conn,
        websocket,
    } = handed;
    let timeout = apache_timeout(req);
    conn.set_timeouts(timeout);
    respond(req, conn, timeout, websocket.as_deref(), set)
}

/// Each wait for the loop is bounded by httpd's `Timeout`, as a daemon's is by
/// `socket-timeout`.
fn apache_timeout(req: Request) -> Duration {
    Duration::from_micros(req.server_timeout_us().max(0) as u64)
}

/// The response of an accepted request; the connection is kept for the thread's next one
/// when it can carry it.
fn respond(
    req: Request,
    conn: Conn,
    timeout: Duration,
    websocket: Option<&str>,
    set: &RequestSettings,
) -> c_int {
    let peer = Peer {
        name: "embedded ASGI",
        side: "the event loop",
        timeout,
        timeout_setting: "Timeout",
        header_limit: 32768,
        error_override: false,
        sendfile: set.enable_sendfile,
        websocket_max_message: set.websocket_max_message,
        record: None,
        flush_delay: Duration::ZERO,
    };
    let (status, kept) = relay(req, conn, &peer, websocket, false);
    if let Some(mut c) = kept {
        c.release_all();
        TO_LOOP.with(|slot| *slot.borrow_mut() = Some(c));
    }
    status
}

/// The child exits: its loop runs the applications' lifespan shutdowns (within
/// `SHUTDOWN_TIMEOUT`) and stops. Nothing to do when no ASGI request came.
pub fn exit() {
    crate::asgi::stop_all(SHUTDOWN_TIMEOUT);
}
