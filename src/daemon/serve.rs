//! One request on one connection from an httpd child: the handshake if the connection is new,
//! the request frame, the checks that may still send it elsewhere (queue-timeout, a changed
//! script, maximum-requests), then `Accepted` and the WSGI application's run with its response
//! streamed back, with Python's output routed (`wsgi::route`) to the virtual host of the
//! request the calling thread serves. Runs in the daemon process.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::prelude::*;

use crate::config::GlobalConfig;
use crate::config::daemon::DaemonSpec;
use crate::error::Code;
use crate::protocol::{self, Frame};
use crate::python::Interp;
use crate::python::interp::{self, Which};
use crate::request::Request;
use crate::wsgi::adapter::{self, Level, LogFn, Outcome, RequestIo};
use crate::wsgi::build::{self, ProcessFacts};
use crate::wsgi::route::{self, Route};

use super::conn::{Conn, DaemonBody, DaemonSink};
use super::guard;
use super::state::State;
use crate::asgi::Admitted;

/// Per-process request context.
pub(super) struct Ctx {
    pub(super) spec: DaemonSpec,
    pub(super) global: GlobalConfig,
    pub(super) secret: [u8; 16],
    pub(super) generation: u32,
    pub(super) previous: Option<([u8; 16], u32)>,
    pub(super) socket_timeout: Duration,
    pub(super) log: LogFn,
    pub(super) vhost_log: fn(usize) -> Option<LogFn>,
    /// What this process's ASGI event loops need (see `asgi::Hooks`).
    pub(super) asgi: crate::asgi::Hooks,
}

/// What serving one connection did.
pub(super) struct Served {
    /// A request was read and run (counts towards maximum-requests).
    pub(super) ran: bool,
    /// It counts as activity (inactivity-timeout).
    pub(super) counts: bool,
    /// The connection, if it can carry another request (its handshake is done).
    pub(super) back: Option<Conn>,
    /// The request went to an event loop (ASGI), with its connection: the loop ends it.
    pub(super) handed_over: bool,
}

const NOTHING: Served = Served {
    ran: false,
    counts: false,
    back: None,
    handed_over: false,
};

/// Where an ASGI request goes with its connection: the process's loop host, and the
/// connection's token among the workers' idle connections.
pub(super) struct HandOver {
    pub(super) host: Arc<dyn crate::asgi::Host>,
    pub(super) token: u64,
}

/// Serves one request on a connection: the handshake first if the connection is new (not yet
/// `authenticated`); `pending` is a request already read from it (by an ASGI loop that gave
/// the connection back).
pub(super) fn serve(
    mut c: Conn,
    authenticated: bool,
    pending: Option<Request<Vec<u8>>>,
    ctx: &Ctx,
    state: &State,
    to_loop: &HandOver,
) -> Served {
    if !authenticated {
        c.set_timeouts(ctx.socket_timeout);
        if !handshake(&mut c, ctx) {
            return NOTHING;
        }
    }
    let received = match pending {
        Some(req) => Ok(Frame::Request {
            meta: req.meta,
            env: req.env,
        }),
        None => c.recv(),
    };
    let req = match received {
        Ok(Frame::Request { meta, env }) => Request { env, meta },
        // The httpd child's report that an ASGI request's client went away crossed that
        // request's end: nothing to do; the next request follows (or has not come yet).
        Ok(Frame::Abort) if authenticated => {
            if c.more_buffered() {
                return serve(c, true, None, ctx, state, to_loop);
            }
            return Served {
                back: Some(c),
                ..NOTHING
            };
        }
        // The httpd child closed a connection it had kept: nothing to do.
        Err(e) if authenticated && e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return NOTHING;
        }
        Ok(other) => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: expected Request, got {}",
                    Code::DaemonProtocol.as_str(),
                    other.name()
                ),
            );
            return NOTHING;
        }
        Err(e) => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: reading the request: {e}",
                    Code::DaemonProtocol.as_str()
                ),
            );
            return NOTHING;
        }
    };
    let counts = req.counts_as_activity();
    match admit(&mut c, &req, ctx, state) {
        Admitted::Run => {}
        Admitted::Refused { keep } => {
            return Served {
                back: keep.then_some(c),
                ..NOTHING
            };
        }
    }
    let group = req.application_group();
    let which = Which::for_request(req.meta.main_interpreter, &group);
    // Only interrupt-timeout needs to know which interpreter the thread is in.
    if !ctx.spec.interrupt_timeout.is_zero() {
        state.set_running_in(
            crate::python::thread_ident(),
            matches!(which, Which::Group(_)).then_some(group.as_str()),
        );
    }
    guard::test_panic("worker");
    // server-status shows what this worker runs until the request is done here.
    let _note = super::state::BoardNote::new(state, &req.status_text());
    let mut held = Some(c);
    let ran = interp::enter(which, |py, it| {
        let c = held
            .take()
            .expect("the connection is here until the request runs");
        run_request(py, it, ctx, state, req, c, to_loop, counts)
    });
    let (finish, conn) = match ran {
        Ok(Ran::Wsgi { finish, conn }) => (finish, conn),
        Ok(Ran::HandedOver) => {
            forget_request_logs();
            return Served {
                ran: true,
                counts,
                back: None,
                handed_over: true,
            };
        }
        Err(why) => {
            (ctx.log)(Level::Error, &why);
            if let Some(mut c) = held.take() {
                let _ = c.send(&Frame::Fail {
                    code: 500,
                    message: b"the application group's interpreter is not available".to_vec(),
                });
            }
            return Served {
                ran: true,
                counts,
                ..NOTHING
            };
        }
    };
    // The end of the response (End, with the last queued blocks) is sent without the GIL.
    if let Some(f) = finish {
        f.run();
    }
    forget_request_logs();
    // Every other holder (wsgi.input, the response sink) is gone once the request has ended.
    let back = Arc::try_unwrap(conn)
        .ok()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .filter(Conn::reusable);
    Served {
        ran: true,
        counts,
        back,
        handed_over: false,
    }
}

/// How a request ran on the worker's thread.
enum Ran {
    /// As WSGI, on this thread: the end of its response (sent without the GIL) and its
    /// connection.
    Wsgi {
        finish: Option<adapter::Finish>,
        conn: Arc<std::sync::Mutex<Conn>>,
    },
    /// Handed to the interpreter's ASGI event loop, with its connection.
    HandedOver,
}

/// The checks a request passes before it runs, wherever it was read (by a worker, or by an
/// ASGI loop holding the connection): the process is not stopping, queue-timeout, a changed
/// script (the process restarts, as mod_wsgi's daemon mode does), maximum-requests; then
/// `Accepted`, or `Reject` so that the httpd child sends it to another or the next process.
pub(super) fn admit(c: &mut Conn, req: &Request<Vec<u8>>, ctx: &Ctx, state: &State) -> Admitted {
    if state.stopping.load(Ordering::SeqCst) {
        let _ = c.send(&Frame::Reject {
            reason: protocol::REJECT_SHUTTING_DOWN,
        });
        return Admitted::Refused { keep: false };
    }
    let _ = state.first_request.compare_exchange(
        0,
        state.now_ms() + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    // How long it waited for this thread, for the board's queue-wait histogram.
    if let Some(b) = crate::board::pinned()
        && req.meta.queue_start > 0
    {
        let waited = crate::request::metrics::now_us() - req.meta.queue_start;
        b.queue_waited(state.slot.0, u64::try_from(waited).unwrap_or(0));
    }
    if !ctx.spec.queue_timeout.is_zero() {
        let queued = req.meta.queue_start_secs();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if queued > 0.0 && now - queued > ctx.spec.queue_timeout.as_secs_f64() {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': a request waited {:.1} s for a free thread \
                     (queue-timeout {} s); answered 504",
                    Code::DaemonUnavailable.as_str(),
                    ctx.spec.name,
                    now - queued,
                    ctx.spec.queue_timeout.as_secs_f32()
                ),
            );
            let _ = c.send(&Frame::Reject {
                reason: protocol::REJECT_QUEUE_TIMEOUT,
            });
            return Admitted::Refused { keep: c.reusable() };
        }
    }
    // As mod_wsgi does in daemon mode, a changed script restarts the process (so the modules it
    // imports are fresh too). Checked before `Accepted`: the request goes to another or the
    // next process.
    let script = req.script();
    let mtime = req.script_mtime();
    let group = req.application_group();
    let which = Which::for_request(req.meta.main_interpreter, &group);
    let case_sensitive = ctx.global.case_sensitive;
    if req.script_reloading()
        && interp::existing(which)
            .is_some_and(|it| !crate::python::script_loaded_at(&it, &script, mtime, case_sensitive))
        && interp::enter(which, |py, it| {
            crate::python::script_changed(py, it, &script, mtime, case_sensitive)
        })
        .unwrap_or(false)
    {
        let _ = c.send(&Frame::Reject {
            reason: protocol::REJECT_SHUTTING_DOWN,
        });
        state.restart(
            format!("script '{script}' changed"),
            ctx.spec.graceful_timeout,
        );
        return Admitted::Refused { keep: false };
    }
    // maximum-requests counts requests as they are accepted: one that arrives while the last
    // allowed one is still finishing goes to the next process instead (the recycle follows
    // once the running ones are done).
    if ctx.spec.maximum_requests > 0
        && state.admitted.fetch_add(1, Ordering::SeqCst) >= ctx.spec.maximum_requests
    {
        let _ = c.send(&Frame::Reject {
            reason: protocol::REJECT_SHUTTING_DOWN,
        });
        return Admitted::Refused { keep: false };
    }
    // From here on the request is ours: the httpd child must not send it anywhere else.
    if c.send(&Frame::Accepted).is_err() {
        return Admitted::Refused { keep: false };
    }
    Admitted::Run
}

/// Checks a new connection's handshake: protocol version and this server's credentials.
fn handshake(c: &mut Conn, ctx: &Ctx) -> bool {
    match c.recv() {
        Ok(Frame::Hello {
            version,
            secret,
            generation,
        }) if version == protocol::PROTOCOL_VERSION
            && ((secret == ctx.secret && generation == ctx.generation)
                || ctx.previous == Some((secret, generation))) => {}
        Ok(Frame::Hello { .. }) => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': refused a connection with a wrong protocol version, \
                     secret or server generation",
                    Code::DaemonProtocol.as_str(),
                    ctx.spec.name
                ),
            );
            let _ = c.send(&Frame::Reject {
                reason: protocol::REJECT_BAD_CREDENTIALS,
            });
            return false;
        }
        Ok(other) => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': refused a connection that did not start with Hello \
                     (got {})",
                    Code::DaemonProtocol.as_str(),
                    ctx.spec.name,
                    other.name()
                ),
            );
            return false;
        }
        // Not a frame at all (garbage, an oversized length): refused like a wrong secret.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            (ctx.log)(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': refused a connection whose handshake is not a \
                     protocol frame: {e}",
                    Code::DaemonProtocol.as_str(),
                    ctx.spec.name
                ),
            );
            return false;
        }
        Err(e) => {
            (ctx.log)(
                Level::Debug,
                &format!("daemon connection closed before the handshake: {e}"),
            );
            return false;
        }
    }
    true
}

/// Loads the application and runs the request: as WSGI on this thread, or handed to the
/// interpreter's ASGI event loop with its connection.
#[allow(clippy::too_many_arguments)]
fn run_request(
    py: Python<'_>,
    it: &Interp,
    ctx: &Ctx,
    state: &State,
    req: Request<Vec<u8>>,
    c: Conn,
    to_loop: &HandOver,
    counts: bool,
) -> Ran {
    let script = req.script();
    let request_id = req.request_id();
    let vhost_log = usize::try_from(req.meta.server_id)
        .ok()
        .and_then(ctx.vhost_log)
        .unwrap_or_else(|| ctx.log.clone());
    // Every line of the request starts with its client, as in the httpd child.
    let client = req.log_client();
    let plain: LogFn = Arc::new(move |l, m| vhost_log(l, &format!("{client}{m}")));
    let base_log = plain.clone();
    let log: LogFn = Arc::new(move |l, m| base_log(l, &format!("[{request_id}] {m}")));
    route::set(Some(Route {
        plain: plain.clone(),
        with_id: log.clone(),
    }));
    let failed = |mut c: Conn, msg: &str| {
        let _ = c.send(&Frame::Fail {
            code: 500,
            message: msg.as_bytes().to_vec(),
        });
        Ran::Wsgi {
            finish: None,
            conn: Arc::new(std::sync::Mutex::new(c)),
        }
    };

    let Some(app) = crate::python::load_app(
        py,
        it,
        &script,
        req.script_mtime(),
        req.script_reloading(),
        ctx.global.case_sensitive,
        &req.callable_object(),
        &log,
    ) else {
        return failed(c, "the application could not be loaded");
    };
    state.script_loaded.store(true, Ordering::SeqCst);
    let kind = crate::asgi::kind_of(py, it, &app, req.meta.interface, &log);
    if let Some(why) = crate::asgi::refusal(kind, &it.name, &req.callable_object(), &script) {
        log(Level::Error, &why);
        return failed(c, "an ASGI application that is not served here");
    }
    if kind == crate::asgi::Kind::Asgi {
        let host = Arc::clone(&to_loop.host);
        let link = (c, host, to_loop.token, counts);
        crate::asgi::hand_over(py, &it.name, &ctx.asgi, link, &app, &req, &log);
        return Ran::HandedOver;
    }
    let conn = Arc::new(std::sync::Mutex::new(c));
    let fail = |code: u16, msg: &str| {
        let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.send(&Frame::Fail {
            code,
            message: msg.as_bytes().to_vec(),
        });
    };
    let process = ProcessFacts {
        multithread: ctx.spec.multithread(),
        multiprocess: ctx.spec.multiprocess(),
        run_once: ctx.spec.run_once(),
        daemon: true,
    };
    let body = Box::new(DaemonBody::new(Arc::clone(&conn)));
    // wsgi.errors lines as print()'s (and as the httpd child writes them): no request id.
    let built = match build::environ(py, &it.kit, &req, &process, body, &plain, ctx.log.clone()) {
        Ok(v) => v,
        Err(e) => {
            adapter::log_exception(py, &e, &log, "cannot build the environ");
            fail(500, "environ");
            return Ran::Wsgi { finish: None, conn };
        }
    };
    let io = RequestIo {
        sink: Box::new(DaemonSink::new(Arc::clone(&conn))),
        input: built.input,
        errors: built.errors,
        log,
        script,
        stream_flush: true,
        head_request: req.meta.head_request,
        stamps: built.stamps,
        events: it.events(py),
    };
    let since = req.meta.request_start;
    let _slow = crate::python::slow::watch(|| req.status_text(), since, &it.name);
    let (outcome, finish) = adapter::run(py, &it.kit, &app, built.environ, io);
    match outcome {
        Outcome::ServerError => fail(500, "application error"),
        Outcome::TimedOut => fail(504, "interrupted by interrupt-timeout"),
        Outcome::Done | Outcome::Aborted => {}
    }
    Ran::Wsgi { finish, conn }
}

/// Ends the calling thread's current request for the routed logs (after the request, or after
/// a panic in it): what Python writes goes to the fallback log again.
pub(super) fn forget_request_logs() {
    route::set(None);
}
