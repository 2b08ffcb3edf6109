//! The ASGI event loops of a process (a daemon process, or an httpd child for embedded ASGI):
//! one asyncio loop per interpreter on a thread of its own (`server.py`, started on first
//! use), handing a request to it (`hand_over`, `submit`), closing WebSockets when the process
//! stops (`going_away`) and stopping them all with their lifespan shutdowns (`stop_all`). Runs
//! in daemon processes and httpd children.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::call::request_parts;
use super::link::{Host, Link};
use crate::daemon::conn::Conn;

use crate::config::daemon::Lifespan;
use crate::error::Code;
use crate::python::interp::{self, Which};
use crate::request::Request;
use crate::wsgi::adapter::{Level, LogFn};

/// What the loops of this process need from it.
#[derive(Clone)]
pub struct Hooks {
    /// The process's error log.
    pub log: LogFn,
    /// What a failed lifespan startup (or a loop that stops by itself) does.
    pub on_failure: OnFailure,
    pub lifespan: Lifespan,
    pub startup_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `request-timeout=`: a request's task running longer is cancelled (zero: never).
    pub request_timeout: Duration,
    /// `max-tasks=`: requests (tasks) the loop runs at once; more are answered 503 (0: no
    /// limit).
    pub max_tasks: u32,
    /// `deadlock-timeout=`: a loop that has not run for this long has the process replaced
    /// (`OnFailure::Replace`; zero: the watchdog only warns).
    pub loop_deadlock: Duration,
}

/// A loop that has not run for this long is reported (once per stall) with where it is.
const WARN_AFTER: Duration = Duration::from_secs(5);

/// Milliseconds since the first use (the loops' heartbeat clock).
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// What a process does when an application cannot be served by its loop.
#[derive(Clone)]
pub enum OnFailure {
    /// Stop and be replaced (a daemon process, with the restart back-off): the closure asks
    /// for it, with the reason.
    Replace(Arc<dyn Fn(String) + Send + Sync>),
    /// Carry on (an httpd child, which cannot replace itself): a failed lifespan startup
    /// answers 500 and is tried again by a request after this long; a loop that stopped is
    /// started again by the next request.
    RetryAfter(Duration),
}

/// The started servers, by application group (`""`: the main interpreter). Never locked
/// while Python runs.
static SERVERS: Mutex<Vec<(String, Py<PyAny>)>> = Mutex::new(Vec::new());

/// Loop threads still running (their thread's Python state not yet given up).
static LOOP_THREADS: AtomicUsize = AtomicUsize::new(0);

fn servers() -> std::sync::MutexGuard<'static, Vec<(String, Py<PyAny>)>> {
    SERVERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The event loop's server of the current interpreter (`group`), started on first use.
fn server<'py>(py: Python<'py>, group: &str, hooks: &Hooks) -> PyResult<Bound<'py, PyAny>> {
    let known = servers()
        .iter()
        .find(|(g, _)| g == group)
        .map(|(_, s)| s.clone_ref(py));
    if let Some(s) = known {
        return Ok(s.into_bound(py));
    }
    let code = std::ffi::CString::new(include_str!("server.py")).expect("no NUL in server.py");
    let module = PyModule::from_code(py, &code, c"mod_rwsgi/asgi_server.py", c"_mod_rwsgi_asgi")?;
    let log_fn = crate::python::log_function(py, hooks.log.clone())?;
    let (restart_fn, retry_after) = match &hooks.on_failure {
        OnFailure::Replace(restart) => {
            let restart = Arc::clone(restart);
            let f = pyo3::types::PyCFunction::new_closure(
                py,
                None,
                None,
                move |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
                    let why: String = args.get_item(0)?.extract()?;
                    restart(why);
                    Ok(())
                },
            )?;
            (f.into_any(), 0.0)
        }
        OnFailure::RetryAfter(d) => (py.None().into_bound(py), d.as_secs_f64()),
    };
    // The loop's heartbeat (server.py calls `beat` every BEAT s), read by the watchdog.
    let beat = Arc::new(AtomicU64::new(now_ms()));
    let beat_fn = {
        let beat = Arc::clone(&beat);
        pyo3::types::PyCFunction::new_closure(
            py,
            None,
            None,
            move |_a: &Bound<'_, PyTuple>, _k: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
                beat.store(now_ms(), Ordering::Relaxed);
                Ok(())
            },
        )?
    };
    let server = module.getattr("Server")?.call1((
        log_fn,
        restart_fn,
        retry_after,
        hooks.lifespan.as_str(),
        hooks.startup_timeout.as_secs_f64(),
        hooks.shutdown_timeout.as_secs_f64(),
        hooks.request_timeout.as_secs_f64(),
        (
            Code::AsgiProtocol.as_str(),
            Code::AsgiLifespan.as_str(),
            Code::AppException.as_str(),
            Code::AsgiTimeout.as_str(),
            Code::DaemonUnavailable.as_str(),
        ),
        beat_fn,
        hooks.max_tasks,
    ))?;
    {
        let mut list = servers();
        if let Some((_, s)) = list.iter().find(|(g, _)| g == group) {
            // Another worker started it meanwhile: use that one (this one never ran).
            return Ok(s.clone_ref(py).into_bound(py));
        }
        list.push((group.to_string(), server.clone().unbind()));
    }
    let (runner, name, log) = (
        server.clone().unbind(),
        group.to_string(),
        hooks.log.clone(),
    );
    let on_failure = hooks.on_failure.clone();
    let stopped = Arc::new(AtomicBool::new(false));
    let loop_stopped = Arc::clone(&stopped);
    LOOP_THREADS.fetch_add(1, Ordering::SeqCst);
    let spawned = spawn_guarded(
        "rwsgi-asgi-loop",
        "the ASGI event loop thread",
        &log,
        {
            let log = log.clone();
            move || {
                let which = Which::for_request(name.is_empty(), &name);
                let r = interp::enter(which, |py, _| {
                    runner
                        .bind(py)
                        .call_method0("run_forever")
                        .map(|_| ())
                        .map_err(|e| format!("{e}"))
                });
                if let Err(e) = r.and_then(|r| r) {
                    // Its requests cannot finish.
                    log(
                        Level::Error,
                        &format!("the ASGI event loop of '{name}' stopped: {e}"),
                    );
                    match &on_failure {
                        OnFailure::Replace(restart) => {
                            restart(format!("the ASGI event loop stopped: {e}"))
                        }
                        // The next request starts another loop.
                        OnFailure::RetryAfter(_) => servers().retain(|(g, _)| *g != name),
                    }
                }
            }
        },
        move || {
            loop_stopped.store(true, Ordering::SeqCst);
            LOOP_THREADS.fetch_sub(1, Ordering::SeqCst);
        },
    );
    if let Err(e) = spawned {
        LOOP_THREADS.fetch_sub(1, Ordering::SeqCst);
        servers().retain(|(g, _)| g != group);
        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
            "cannot start the ASGI event loop thread: {e}"
        )));
    }
    let dog = Watchdog {
        server: server.clone().unbind(),
        group: group.to_string(),
        beat,
        stopped,
        hooks: hooks.clone(),
    };
    // Without its watchdog the loop still serves; a blocked loop then goes unreported.
    let log = hooks.log.clone();
    let _ = spawn_guarded(
        "rwsgi-asgi-watch",
        "the ASGI loop watchdog thread",
        &log,
        move || dog.run(),
        || {},
    );
    Ok(server)
}

/// Starts a thread named `name` running `body`; a panic in it is logged (RW0999, naming
/// `what`) instead of ending the process, and `then` runs after the body either way.
fn spawn_guarded(
    name: &str,
    what: &'static str,
    log: &LogFn,
    body: impl FnOnce() + Send + 'static,
    then: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let log = log.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                log(
                    Level::Error,
                    &format!(
                        "{}: a panic in {what}: {}",
                        Code::Panic.as_str(),
                        crate::error::panic_message(p.as_ref())
                    ),
                );
            }
            then();
        })
}

/// Watches one loop's heartbeat: a loop that has not run for `WARN_AFTER` (a coroutine that
/// blocks it with a synchronous call) is reported once per stall with the loop thread's
/// Python stack; one that has not run for `loop_deadlock` has its process replaced.
struct Watchdog {
    server: Py<PyAny>,
    group: String,
    beat: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
    hooks: Hooks,
}

impl Watchdog {
    fn run(&self) {
        let (mut warned, mut acted) = (false, false);
        while !self.stopped.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(500));
            let stalled =
                Duration::from_millis(now_ms().saturating_sub(self.beat.load(Ordering::Relaxed)));
            if stalled < WARN_AFTER {
                (warned, acted) = (false, false);
                continue;
            }
            let log = &self.hooks.log;
            if !warned {
                warned = true;
                let which = Which::for_request(self.group.is_empty(), &self.group);
                let stack = interp::enter(which, |py, _| {
                    self.server
                        .bind(py)
                        .call_method0("stack")
                        .and_then(|s| s.extract::<String>())
                        .unwrap_or_else(|e| format!("(no stack: {e})"))
                })
                .unwrap_or_else(|e| format!("(no stack: {e})"));
                log(
                    Level::Warning,
                    &format!(
                        "{}: the ASGI event loop has not run for {} s: a coroutine is blocking \
                         it with a synchronous call (run it with loop.run_in_executor or \
                         asgiref's sync_to_async); every ASGI request of this process waits. \
                         The loop thread is at:",
                        Code::AsgiLoopBlocked.as_str(),
                        stalled.as_secs()
                    ),
                );
                for line in stack.lines() {
                    log(Level::Warning, line);
                }
            }
            let limit = self.hooks.loop_deadlock;
            if !acted && !limit.is_zero() && stalled >= limit {
                acted = true;
                if let OnFailure::Replace(restart) = &self.hooks.on_failure {
                    log(
                        Level::Error,
                        &format!(
                            "{}: the ASGI event loop has not run for {} s (deadlock-timeout); \
                             the process is replaced",
                            Code::AsgiLoopBlocked.as_str(),
                            stalled.as_secs()
                        ),
                    );
                    restart(format!(
                        "deadlock-timeout: the ASGI event loop has not run for {} s",
                        stalled.as_secs()
                    ));
                }
            }
        }
    }
}

/// Hands `req` (accepted, its connection in `link`) to the event loop of the current
/// interpreter (`group`), which runs `app` for it and keeps the connection for the requests
/// that follow on it.
pub fn submit<K: AsRef<[u8]>>(
    py: Python<'_>,
    group: &str,
    hooks: &Hooks,
    link: Link,
    app: &Bound<'_, PyAny>,
    req: &Request<K>,
) -> PyResult<()> {
    let server = server(py, group, hooks)?;
    let parts = request_parts(py, req, app)?;
    server.call_method1("submit", (Bound::new(py, link)?, parts))?;
    Ok(())
}

/// `submit` for a connection not yet taken over: `(conn, host, token, counts)` become its
/// `Link`. The loop owns the connection from here on; if the hand-over fails, it is logged and
/// dropping the link closes the connection (the httpd child answers 502) and ends the
/// request's claim.
pub fn hand_over<K: AsRef<[u8]>>(
    py: Python<'_>,
    group: &str,
    hooks: &Hooks,
    (conn, host, token, counts): (Conn, Arc<dyn Host>, u64, bool),
    app: &Bound<'_, PyAny>,
    req: &Request<K>,
    log: &LogFn,
) {
    let why = match Link::new(conn, host, token, counts) {
        Ok(link) => match submit(py, group, hooks, link, app, req) {
            Ok(()) => return,
            Err(e) => {
                crate::wsgi::adapter::log_exception(
                    py,
                    &e,
                    log,
                    "cannot hand the request to the ASGI event loop",
                );
                return;
            }
        },
        Err(e) => e,
    };
    log(
        Level::Error,
        &format!("cannot hand the request to the ASGI event loop: {why}"),
    );
}

/// Calls `f` with each started server, in its interpreter; how many calls succeeded. Called
/// by the process's main thread, not attached to Python.
fn each_server(f: impl Fn(Python<'_>, &Bound<'_, PyAny>) -> PyResult<()>) -> usize {
    let groups: Vec<String> = servers().iter().map(|(g, _)| g.clone()).collect();
    let mut done = 0;
    for g in &groups {
        let which = Which::for_request(g.is_empty(), g);
        let r = interp::enter(which, |py, _| -> PyResult<()> {
            let server = servers()
                .iter()
                .find(|(n, _)| n == g)
                .map(|(_, s)| s.clone_ref(py));
            match server {
                Some(server) => f(py, server.bind(py)),
                None => Ok(()),
            }
        });
        if matches!(r, Ok(Ok(()))) {
            done += 1;
        }
    }
    done
}

/// Tells every event loop of this process that it is stopping: open WebSockets close with
/// 1012 (service restart).
pub fn going_away() {
    each_server(|_, server| server.call_method1("going_away", (1012,)).map(|_| ()));
}

/// Stops every event loop of this process: each runs its applications' lifespan shutdown
/// (within `timeout`), then stops. Returns once all are done or `timeout` (plus a moment) has
/// passed.
pub fn stop_all(timeout: Duration) {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let asked = each_server(|py, server| {
        let tx = tx.clone();
        let done = pyo3::types::PyCFunction::new_closure(
            py,
            None,
            None,
            move |_a: &Bound<'_, PyTuple>, _k: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
                let _ = tx.send(());
                Ok(())
            },
        )?;
        server.call_method1("stop", (done,))?;
        Ok(())
    });
    let deadline = std::time::Instant::now() + timeout + Duration::from_millis(500);
    for _ in 0..asked {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
    }
    // The loop threads leave Python after `done`: Python may be finalised next (an httpd
    // child's exit), which must not race a thread still giving up its state.
    while LOOP_THREADS.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}
