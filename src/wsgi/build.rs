//! The one WSGI environ builder: a [`Request`] (CGI pairs and typed facts), the process's
//! facts and a body source become the environ dict with `wsgi.input` and `wsgi.errors`. Both
//! modes call it: the httpd child in embedded mode, a daemon process in daemon mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::adapter::{BodySource, FileWrapper, Input, Level, Log, LogFn};
use super::environ::latin1;
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
    pub input: Py<Input>,
    pub errors: Py<Log>,
}

/// Builds the environ of `req`. `log` is the request's error log (for `wsgi.errors`),
/// `fallback` where its lines go once the request has ended.
pub fn environ<'py, K: AsRef<[u8]>>(
    py: Python<'py>,
    req: &Request<K>,
    process: &ProcessFacts,
    body: Box<dyn BodySource>,
    log: &LogFn,
    fallback: LogFn,
) -> PyResult<Built<'py>> {
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
    let input = Py::new(py, Input::new(body, req.content_length()))?;
    let errors = Py::new(py, Log::new(Some(Arc::clone(log)), fallback, Level::Error))?;
    let meta = &req.meta;
    d.set_item(intern!(py, "wsgi.version"), (1, 0))?;
    d.set_item(intern!(py, "wsgi.multithread"), process.multithread)?;
    d.set_item(intern!(py, "wsgi.multiprocess"), process.multiprocess)?;
    d.set_item(intern!(py, "wsgi.run_once"), process.run_once)?;
    d.set_item(
        intern!(py, "wsgi.url_scheme"),
        if meta.https { "https" } else { "http" },
    )?;
    d.set_item(intern!(py, "wsgi.input"), input.clone_ref(py))?;
    d.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    d.set_item(intern!(py, "wsgi.errors"), errors.clone_ref(py))?;
    d.set_item(
        intern!(py, "wsgi.file_wrapper"),
        py.get_type::<FileWrapper>(),
    )?;
    // Timings as float epoch seconds, as mod_wsgi 6 reports them (0.0: no daemon queue).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let (queue_start, daemon_start) = if process.daemon {
        (meta.queue_start_secs(), now)
    } else {
        (0.0, 0.0)
    };
    d.set_item(
        intern!(py, "mod_wsgi.request_start"),
        meta.request_start_secs(),
    )?;
    d.set_item(intern!(py, "mod_wsgi.queue_start"), queue_start)?;
    d.set_item(intern!(py, "mod_wsgi.daemon_start"), daemon_start)?;
    d.set_item(intern!(py, "mod_wsgi.application_start"), now)?;
    d.set_item(intern!(py, "mod_wsgi.thread_id"), thread_id())?;
    d.set_item(intern!(py, "mod_wsgi.version"), (6, 0, 5))?;
    d.set_item(intern!(py, "mod_rwsgi.version"), crate::VERSION)?;
    let [a, b, c] = meta.apache_version;
    d.set_item(intern!(py, "apache.version"), (a, b, c))?;
    Ok(Built {
        environ: d,
        input,
        errors,
    })
}

/// A small per-process number for the calling thread (`mod_wsgi.thread_id`).
fn thread_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}
