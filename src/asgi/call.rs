//! What an ASGI event loop runs, as a worker thread hands it over: which callables speak ASGI
//! (`kind_of`, remembered per callable), where they are not served (`refusal`) and the
//! request's scope as the application gets it (`request_parts`). Runs in daemon processes and
//! httpd children (embedded ASGI): worker threads and the loop thread.
#![forbid(unsafe_code)]

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::scope::HttpScope;
use crate::python::Interp;
use crate::request::{Interface, Request};
use crate::wsgi::adapter::LogFn;

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
        ext.set_item("http.response.zerocopysend", PyDict::new(py))?;
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

/// Why an application of `kind` (`callable` in `script`) is not served where it was loaded:
/// ASGI 2, or ASGI in the sub-interpreter of application group `group` (`""`: the main
/// interpreter); `None` when it is served (WSGI anywhere, ASGI in the main interpreter). The
/// message carries its RW code and the fix.
pub fn refusal(kind: Kind, group: &str, callable: &str, script: &str) -> Option<String> {
    let code = crate::error::Code::AsgiUnsupported.as_str();
    match kind {
        Kind::Wsgi => None,
        Kind::Asgi2 => Some(format!(
            "{code}: '{callable}' in '{script}' is marked as an ASGI 2 (double-callable) \
             application, which is not served; wrap it with \
             asgiref.compatibility.guarantee_single_callable"
        )),
        Kind::Asgi if !group.is_empty() => Some(format!(
            "{code}: '{callable}' in '{script}' is an ASGI application in the sub-interpreter \
             of application group '{group}'; ASGI applications run in the main interpreter: \
             set WSGIApplicationGroup %{{GLOBAL}} (or application-group=%{{GLOBAL}}), or give \
             the application a process (daemon process group) of its own"
        )),
        Kind::Asgi => None,
    }
}
