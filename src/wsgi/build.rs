//! The one WSGI environ builder: a [`Request`] (CGI pairs and typed facts), the process's
//! facts and a body source become the environ dict with `wsgi.input` and `wsgi.errors`. Both
//! modes call it: the httpd child in embedded mode, a daemon process in daemon mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::adapter::{BodySource, Held, Input, Level, Log, LogFn};
use super::environ::latin1;
use super::front::{Key, Kit};
use crate::request::metrics::Stamps;
use crate::request::{Request, is_path_key};

/// What the environ says about the process running the application.
#[derive(Clone, Copy, Debug)]
pub struct ProcessFacts {
    pub multithread: bool,
    pub multiprocess: bool,
    pub run_once: bool,
    /// Whether this is a daemon process (`mod_wsgi.queue_start` and `mod_wsgi.daemon_start`
    /// are 0.0 in embedded mode, as in mod_wsgi).
    pub daemon: bool,
}

/// The environ dict and the two objects in it that the request driver needs again.
pub struct Built<'py> {
    pub environ: Bound<'py, PyDict>,
    pub input: Held<Input>,
    pub errors: Held<Log>,
    /// The timings the environ reports, for the request's metrics.
    pub stamps: Stamps,
}

/// Builds the environ of `req` with the objects of the interpreter it runs in (`kit`). `log`
/// is the request's error log (for `wsgi.errors`), `fallback` where its lines go once the
/// request has ended.
pub fn environ<'py, K: AsRef<[u8]>>(
    py: Python<'py>,
    kit: &Kit,
    req: &Request<K>,
    process: &ProcessFacts,
    body: Box<dyn BodySource>,
    log: &LogFn,
    fallback: LogFn,
) -> PyResult<Built<'py>> {
    let d = cgi_dict(py, req)?;
    let (input_obj, input) = kit.input(py, Input::new(body, req.content_length()))?;
    let (errors_obj, errors) =
        kit.log(py, Log::new(Some(Arc::clone(log)), fallback, Level::Error))?;
    let meta = &req.meta;
    let key = |k| kit.key(py, k);
    d.set_item(key(Key::WsgiVersion), (1, 0))?;
    d.set_item(key(Key::WsgiMultithread), process.multithread)?;
    d.set_item(key(Key::WsgiMultiprocess), process.multiprocess)?;
    d.set_item(key(Key::WsgiRunOnce), process.run_once)?;
    d.set_item(
        key(Key::WsgiUrlScheme),
        if meta.https { "https" } else { "http" },
    )?;
    d.set_item(key(Key::WsgiInput), input_obj)?;
    d.set_item(key(Key::WsgiInputTerminated), true)?;
    d.set_item(key(Key::WsgiErrors), errors_obj)?;
    d.set_item(key(Key::WsgiFileWrapper), kit.file_wrapper(py))?;
    // Timings as float epoch seconds, as mod_wsgi 6 reports them (0.0: no daemon queue).
    let now = crate::request::metrics::now_us();
    let stamps = Stamps {
        request_start: meta.request_start,
        queue_start: if process.daemon { meta.queue_start } else { 0 },
        daemon_start: if process.daemon { now } else { 0 },
        application_start: now,
    };
    let secs = |us: i64| us as f64 / 1e6;
    d.set_item(key(Key::RequestStart), secs(stamps.request_start))?;
    d.set_item(key(Key::QueueStart), secs(stamps.queue_start))?;
    d.set_item(key(Key::DaemonStart), secs(stamps.daemon_start))?;
    d.set_item(key(Key::ApplicationStart), secs(stamps.application_start))?;
    d.set_item(key(Key::ThreadId), thread_id())?;
    d.set_item(key(Key::ModWsgiVersion), (6, 0, 5))?;
    d.set_item(key(Key::ModRwsgiVersion), crate::VERSION)?;
    let [a, b, c] = meta.apache_version;
    d.set_item(key(Key::ApacheVersion), (a, b, c))?;
    Ok(Built {
        environ: d,
        input,
        errors,
        stamps,
    })
}

/// The CGI part of the environ as a dict: values latin-1 `str` (PEP 3333), file-system paths
/// decoded as UTF-8 where they are.
fn cgi_dict<'py, K: AsRef<[u8]>>(
    py: Python<'py>,
    req: &Request<K>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in &req.env {
        let k = k.as_ref();
        // Keys are ASCII (CGI names, HTTP_ names, mod_wsgi.*): no lossy pass needed.
        let key = match std::str::from_utf8(k) {
            Ok(k) => std::borrow::Cow::Borrowed(k),
            Err(_) => String::from_utf8_lossy(k),
        };
        let value = match std::str::from_utf8(v) {
            // ASCII (nearly every value): latin-1 and UTF-8 agree, no intermediate String.
            Ok(s) if v.is_ascii() => PyString::new(py, s),
            // File-system paths in the file-system encoding, as mod_wsgi decodes them.
            Ok(s) if is_path_key(k) => PyString::new(py, s),
            _ => PyString::new(py, &latin1(v)),
        };
        d.set_item(key.as_ref(), value)?;
    }
    Ok(d)
}

/// The environ a script of the auth phases gets (`WSGIAuthUserScript`, `WSGIAuthGroupScript`,
/// `WSGIAccessScript`): the CGI part, `wsgi.errors` and the versions, as mod_wsgi's cut-down
/// one; no `wsgi.input` (the body is the handler's to read). The caller ends the log.
pub fn script_environ<'py, K: AsRef<[u8]>>(
    py: Python<'py>,
    kit: &Kit,
    req: &Request<K>,
    log: &LogFn,
    fallback: LogFn,
) -> PyResult<(Bound<'py, PyDict>, Held<Log>)> {
    let d = cgi_dict(py, req)?;
    let (errors_obj, errors) =
        kit.log(py, Log::new(Some(Arc::clone(log)), fallback, Level::Error))?;
    let key = |k| kit.key(py, k);
    d.set_item(key(Key::WsgiErrors), errors_obj)?;
    d.set_item(
        key(Key::WsgiUrlScheme),
        if req.meta.https { "https" } else { "http" },
    )?;
    d.set_item(key(Key::ModWsgiVersion), (6, 0, 5))?;
    d.set_item(key(Key::ModRwsgiVersion), crate::VERSION)?;
    let [a, b, c] = req.meta.apache_version;
    d.set_item(key(Key::ApacheVersion), (a, b, c))?;
    Ok((d, errors))
}

/// A small per-process number for the calling thread (`mod_wsgi.thread_id`).
fn thread_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}
