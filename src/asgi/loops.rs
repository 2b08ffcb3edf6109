//! The ASGI event loops of a daemon process: one asyncio loop per interpreter on a thread of
//! its own (`server.py`, started on first use), handing a request to it (`submit`), closing
//! WebSockets when the process stops (`going_away`) and stopping them all with their lifespan
//! shutdowns (`stop_all`). Runs in the daemon process.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::call::request_parts;
use super::link::Link;

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
}
