//! Embedded ASGI: an ASGI request of an httpd child runs on the child's own event loop (the
//! daemon's `asgi` core, one loop thread per child), reached over a socket pair made for the
//! request. The worker thread that took the request hands the loop one end with the request
//! (as a daemon's worker hands over its connection), then serves the response from the other
//! end exactly as it serves a daemon's (`relay`): the body as the application reads it, the
//! client watched, WebSockets tunnelled. Lifespan shutdown runs when the child exits. Runs in
//! the httpd child (the worker thread, and the loop thread through `asgi::Host`).
#![forbid(unsafe_code)]

use std::ffi::c_int;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;

use super::relay::{Peer, relay};
use crate::asgi::{Admitted, Hooks, Host, OnFailure};
use crate::config::GlobalConfig;
use crate::config::daemon::Lifespan;
use crate::daemon::conn::Conn;
use crate::httpd::base::main_log;
use crate::httpd::ffi::HTTP_INTERNAL_SERVER_ERROR;
use crate::httpd::request::Request;
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

/// The connection between a worker thread and the loop carries one request: the loop's side
/// is closed when it ends, and nothing else is read from it.
struct ChildHost {
    log: LogFn,
    case_sensitive: bool,
}

impl Host for ChildHost {
    fn admit(&self, _conn: &mut Conn, _req: &core::Request<Vec<u8>>) -> Admitted {
        Admitted::Refused { keep: false }
    }
    fn started(&self) {}
    fn finished(&self, _counts: bool) {}
    fn release(&self, _token: u64, _conn: Conn, _pending: Option<core::Request<Vec<u8>>>) {}
    fn keeps_connections(&self) -> bool {
        false
    }
    fn log(&self) -> LogFn {
        self.log.clone()
    }
    fn runs_here(&self, _req: &core::Request<Vec<u8>>) -> bool {
        false
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
            },
            host: Arc::new(ChildHost {
                log,
                case_sensitive: g.case_sensitive,
            }),
        }
    })
}

/// A request handed to the loop: the worker thread's end of its connection, and the
/// WebSocket handshake's key when it opens one.
pub struct Handed {
    conn: Conn,
    websocket: Option<String>,
}

/// Hands `request` for ASGI application `app` (of the main interpreter) to this child's
/// event loop; `Err` is the status to answer at once (a refused WebSocket handshake, no
/// socket pair).
pub fn hand_over(
    py: Python<'_>,
    req: Request,
    g: &GlobalConfig,
    app: &Bound<'_, PyAny>,
    request: &core::Request<String>,
    log: &LogFn,
) -> Result<Handed, c_int> {
    let websocket = super::websocket::precheck(req, &request.env)?;
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

/// Serves the response of a request handed to the loop (called without the GIL). Each wait
/// for the loop is bounded by httpd's `Timeout`, as a daemon's is by `socket-timeout`.
pub fn serve(req: Request, handed: Handed, sendfile: bool) -> c_int {
    let Handed {
        mut conn,
        websocket,
    } = handed;
    let timeout = Duration::from_micros(req.server_timeout_us().max(0) as u64);
    conn.set_timeouts(timeout);
    let peer = Peer {
        name: "embedded ASGI",
        side: "the event loop",
        timeout,
        timeout_setting: "Timeout",
        header_limit: 32768,
        error_override: false,
        sendfile,
    };
    relay(req, conn, &peer, websocket.as_deref(), false).0
}

/// The child exits: its loop runs the applications' lifespan shutdowns (within
/// `SHUTDOWN_TIMEOUT`) and stops. Nothing to do when no ASGI request came.
pub fn exit() {
    crate::asgi::stop_all(SHUTDOWN_TIMEOUT);
}
