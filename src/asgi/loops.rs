//! The ASGI event loops of a daemon process: which callables speak ASGI (`kind_of`, remembered
//! per callable), one asyncio loop per interpreter on a thread of its own (`server.py`,
//! started on first use), handing a request to it (`submit`) and stopping them all with their
//! lifespan shutdowns (`stop_all`). Runs in the daemon process.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::link::Link;

use super::scope::HttpScope;
use crate::config::daemon::Lifespan;
use crate::error::Code;
use crate::python::Interp;
use crate::python::interp::{self, Which};
use crate::request::{Interface, Request};
use crate::wsgi::adapter::{Level, LogFn};

/// What a script's callable is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Wsgi,
    Asgi,
    /// Marked double-callable by asgiref: ASGI 2, which is not served.
    Asgi2,
}

/// Callables already looked at (a strong reference each, so an address is never reused while
/// it is remembered), bounded: scripts are few.
static KINDS: Mutex<Vec<(usize, Py<PyAny>, Kind)>> = Mutex::new(Vec::new());
const KINDS_MAX: usize = 64;

fn detect(py: Python<'_>, it: &Interp, app: &Bound<'_, PyAny>, log: &LogFn) -> Kind {
    let key = app.as_ptr() as usize;
    if let Some(k) = KINDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(p, _, _)| *p == key)
        .map(|e| e.2)
    {
        return k;
    }
    let kind = match crate::python::app_interface(py, it, app) {
        Ok(s) if s == "asgi" => Kind::Asgi,
        Ok(s) if s == "asgi2" => Kind::Asgi2,
        Ok(_) => Kind::Wsgi,
        Err(e) => {
            crate::wsgi::adapter::log_exception(
                py,
                &e,
                log,
                "cannot tell whether the application is WSGI or ASGI; served as WSGI",
            );
            Kind::Wsgi
        }
    };
    let mut list = KINDS.lock().unwrap_or_else(|p| p.into_inner());
    if list.len() < KINDS_MAX && !list.iter().any(|(p, _, _)| *p == key) {
        list.push((key, app.clone().unbind(), kind));
    }
    kind
}

/// What serves `app`: the interface the configuration forces, else what the callable is.
/// A forced interface the callable does not look like is logged (once per callable) and obeyed.
pub fn kind_of(
    py: Python<'_>,
    it: &Interp,
    app: &Bound<'_, PyAny>,
    forced: Interface,
    log: &LogFn,
) -> Kind {
    match forced {
        Interface::Auto => detect(py, it, app, log),
        Interface::Wsgi => Kind::Wsgi,
        Interface::Asgi => Kind::Asgi,
    }
}

/// What the loops of this process need from it.
#[derive(Clone)]
pub struct Hooks {
    /// The process's error log.
    pub log: LogFn,
    /// Asks the process to stop (and be replaced): a failed lifespan startup.
    pub restart: Arc<dyn Fn(String) + Send + Sync>,
    pub lifespan: Lifespan,
    pub startup_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `request-timeout=`: a request's task running longer is cancelled (zero: never).
    pub request_timeout: Duration,
}

/// The started servers, by application group (`""`: the main interpreter). Never locked
/// while Python runs.
static SERVERS: Mutex<Vec<(String, Py<PyAny>)>> = Mutex::new(Vec::new());

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
    let restart = Arc::clone(&hooks.restart);
    let restart_fn = pyo3::types::PyCFunction::new_closure(
        py,
        None,
        None,
        move |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
            let why: String = args.get_item(0)?.extract()?;
            restart(why);
            Ok(())
        },
    )?;
    let server = module.getattr("Server")?.call1((
        log_fn,
        restart_fn,
        hooks.lifespan.as_str(),
        hooks.startup_timeout.as_secs_f64(),
        hooks.shutdown_timeout.as_secs_f64(),
        hooks.request_timeout.as_secs_f64(),
        (
            Code::AsgiProtocol.as_str(),
            Code::AsgiLifespan.as_str(),
            Code::AppException.as_str(),
            Code::AsgiTimeout.as_str(),
        ),
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
    let restart = Arc::clone(&hooks.restart);
    let spawned = std::thread::Builder::new()
        .name("rwsgi-asgi-loop".into())
        .spawn(move || {
            let body = || {
                let which = Which::for_request(name.is_empty(), &name);
                let r = interp::enter(which, |py, _| {
                    runner
                        .bind(py)
                        .call_method0("run_forever")
                        .map(|_| ())
                        .map_err(|e| format!("{e}"))
                });
                if let Err(e) = r.and_then(|r| r) {
                    // Its requests cannot finish: the process is replaced.
                    log(
                        Level::Error,
                        &format!("the ASGI event loop of '{name}' stopped: {e}"),
                    );
                    restart(format!("the ASGI event loop stopped: {e}"));
                }
            };
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                log(
                    Level::Error,
                    &format!(
                        "{}: a panic in the ASGI event loop thread: {}",
                        Code::Panic.as_str(),
                        crate::error::panic_message(p.as_ref())
                    ),
                );
            }
        });
    if let Err(e) = spawned {
        servers().retain(|(g, _)| g != group);
        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
            "cannot start the ASGI event loop thread: {e}"
        )));
    }
    Ok(server)
}

fn pair<'py>(py: Python<'py>, p: &Option<(String, u16)>) -> Bound<'py, PyAny> {
    match p {
        Some((h, port)) => (h.as_str(), *port)
            .into_pyobject(py)
            .map_or_else(|_| py.None().into_bound(py), |t| t.into_any()),
        None => py.None().into_bound(py),
    }
}

/// The HTTP scope of `req` as the dict the application gets.
fn http_scope<'py>(py: Python<'py>, s: &HttpScope) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("type", if s.websocket { "websocket" } else { "http" })?;
    let asgi = PyDict::new(py);
    asgi.set_item("version", "3.0")?;
    asgi.set_item("spec_version", "2.4")?;
    d.set_item("asgi", asgi)?;
    d.set_item("http_version", &s.http_version)?;
    if s.websocket {
        d.set_item("scheme", if s.scheme == "https" { "wss" } else { "ws" })?;
        d.set_item("subprotocols", &s.subprotocols)?;
    } else {
        d.set_item("method", &s.method)?;
        d.set_item("scheme", s.scheme)?;
    }
    d.set_item("path", &s.path)?;
    d.set_item("raw_path", PyBytes::new(py, &s.raw_path))?;
    d.set_item("query_string", PyBytes::new(py, &s.query_string))?;
    d.set_item("root_path", &s.root_path)?;
    let headers = PyList::empty(py);
    for (n, v) in &s.headers {
        headers.append((PyBytes::new(py, n), PyBytes::new(py, v)))?;
    }
    d.set_item("headers", headers)?;
    d.set_item("client", pair(py, &s.client))?;
    d.set_item("server", pair(py, &s.server))?;
    let ext = PyDict::new(py);
    if s.websocket {
        ext.set_item("websocket.http.response", PyDict::new(py))?;
    } else {
        ext.set_item("http.response.pathsend", PyDict::new(py))?;
    }
    d.set_item("extensions", ext)?;
    Ok(d)
}

/// What the loop needs to run `req` with `app`: `(app, scope, has_body, body_length,
/// request_id)`.
pub(super) fn request_parts<'py, K: AsRef<[u8]>>(
    py: Python<'py>,
    req: &Request<K>,
    app: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let s = HttpScope::of(req);
    let scope = http_scope(py, &s)?;
    let length = if s.has_body {
        req.content_length()
    } else {
        None
    };
    Ok((app, scope, s.has_body, length, req.request_id())
        .into_pyobject(py)?
        .into_any())
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

/// Tells every event loop of this process that it is stopping: open WebSockets close with
/// 1012 (service restart). Called by the process's main thread, not attached to Python.
pub fn going_away() {
    let groups: Vec<String> = servers().iter().map(|(g, _)| g.clone()).collect();
    for g in &groups {
        let which = Which::for_request(g.is_empty(), g);
        let _ = interp::enter(which, |py, _| -> PyResult<()> {
            let server = servers()
                .iter()
                .find(|(n, _)| n == g)
                .map(|(_, s)| s.clone_ref(py));
            if let Some(server) = server {
                server.bind(py).call_method1("going_away", (1012,))?;
            }
            Ok(())
        });
    }
}

/// Stops every event loop of this process: each runs its applications' lifespan shutdown
/// (within `timeout`), then stops. Returns once all are done or `timeout` (plus a moment) has
/// passed. Called by the process's main thread, not attached to Python.
pub fn stop_all(timeout: Duration) {
    let groups: Vec<String> = servers().iter().map(|(g, _)| g.clone()).collect();
    if groups.is_empty() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut asked = 0;
    for g in &groups {
        let tx = tx.clone();
        let which = Which::for_request(g.is_empty(), g);
        let r = interp::enter(which, |py, _| -> PyResult<()> {
            let server = servers()
                .iter()
                .find(|(n, _)| n == g)
                .map(|(_, s)| s.clone_ref(py));
            let Some(server) = server else {
                return Ok(());
            };
            let done = pyo3::types::PyCFunction::new_closure(
                py,
                None,
                None,
                move |_a: &Bound<'_, PyTuple>, _k: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
                    let _ = tx.send(());
                    Ok(())
                },
            )?;
            server.bind(py).call_method1("stop", (done,))?;
            Ok(())
        });
        if matches!(r, Ok(Ok(()))) {
            asked += 1;
        }
    }
    let deadline = std::time::Instant::now() + timeout + Duration::from_millis(500);
    for _ in 0..asked {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
    }
}
