//! The Python objects one interpreter hands to its requests (its "kit"): the interned environ
//! keys, and the classes behind `wsgi.input`, `wsgi.errors`, `start_response` and
//! `wsgi.file_wrapper`. The main interpreter uses mod_rwsgi's own classes (`#[pyclass]`, the
//! fast path); a sub-interpreter may not (pyo3's class objects are process-wide), so it gets
//! thin Python classes from its own `bootstrap.py` over per-request Rust closures. Both drive
//! the same Rust objects (`adapter::Input`, `Log`, `StartResponse`); the request driver
//! (`adapter::run`) reaches the kit through `adapter::Front`. Runs in the httpd child
//! (embedded mode) and in daemon processes.
#![forbid(unsafe_code)]

use std::sync::Arc;

use pyo3::PyClass;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::types::{PyCFunction, PyDict, PyModule, PyString, PyTuple};

use super::adapter::{FileWrapper, Held, Input, Log, StartResponse};

/// The environ keys and attribute names the request path sets or looks up on every request,
/// created once per interpreter (a `str` belongs to the interpreter that made it).
#[derive(Clone, Copy, Debug)]
pub enum Key {
    WsgiVersion,
    WsgiMultithread,
    WsgiMultiprocess,
    WsgiRunOnce,
    WsgiUrlScheme,
    WsgiInput,
    WsgiInputTerminated,
    WsgiErrors,
    WsgiFileWrapper,
    RequestStart,
    QueueStart,
    DaemonStart,
    ApplicationStart,
    ThreadId,
    ModWsgiVersion,
    ModRwsgiVersion,
    ApacheVersion,
    Close,
    ReloadRequired,
    Mtime,
}

const KEY_NAMES: [&str; 20] = [
    "wsgi.version",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
    "wsgi.url_scheme",
    "wsgi.input",
    "wsgi.input_terminated",
    "wsgi.errors",
    "wsgi.file_wrapper",
    "mod_wsgi.request_start",
    "mod_wsgi.queue_start",
    "mod_wsgi.daemon_start",
    "mod_wsgi.application_start",
    "mod_wsgi.thread_id",
    "mod_wsgi.version",
    "mod_rwsgi.version",
    "apache.version",
    "close",
    "reload_required",
    "__mtime__",
];

/// The shim classes a sub-interpreter's `bootstrap.py` defines.
struct Shims {
    input: Py<PyAny>,
    log: Py<PyAny>,
    start_response: Py<PyAny>,
    file_wrapper: Py<PyAny>,
}

/// One interpreter's request objects. Every `Py` in it belongs to that interpreter: it is
/// created there and must be dropped there.
pub struct Kit {
    keys: Vec<Py<PyString>>,
    shims: Option<Shims>,
}

fn interned(py: Python<'_>) -> Vec<Py<PyString>> {
    KEY_NAMES
        .iter()
        .map(|k| PyString::intern(py, k).unbind())
        .collect()
}

impl Kit {
    /// The main interpreter's kit: mod_rwsgi's own classes.
    pub fn main(py: Python<'_>) -> Kit {
        Kit {
            keys: interned(py),
            shims: None,
        }
    }

    /// A sub-interpreter's kit: the shim classes of its `bootstrap` module.
    pub fn sub(py: Python<'_>, boot: &Bound<'_, PyModule>) -> PyResult<Kit> {
        let class = |name: &str| boot.getattr(name).map(Bound::unbind);
        Ok(Kit {
            keys: interned(py),
            shims: Some(Shims {
                input: class("Input")?,
                log: class("Log")?,
                start_response: class("StartResponse")?,
                file_wrapper: class("FileWrapper")?,
            }),
        })
    }

    /// Whether this is the main interpreter's kit.
    pub fn is_main(&self) -> bool {
        self.shims.is_none()
    }

    pub fn key<'a, 'py>(&'a self, py: Python<'py>, k: Key) -> &'a Bound<'py, PyString> {
        self.keys[k as usize].bind(py)
    }

    /// `wsgi.input` over `input`.
    pub fn input<'py>(
        &self,
        py: Python<'py>,
        input: Input,
    ) -> PyResult<(Bound<'py, PyAny>, Held<Input>)> {
        let Some(s) = &self.shims else {
            return own_class(py, input);
        };
        let core = Arc::new(input);
        let c = Arc::clone(&core);
        // op 0 read(size), 1 readline(size), 2 readlines(hint), 3 next() (None at the end).
        let f = closure(py, move |py, op, arg| {
            let n: Option<i64> = if arg.is_none() { None } else { arg.extract()? };
            Ok(match op {
                0 => c.read(py, n)?.into_any(),
                1 => c.readline(py, n)?.into_any(),
                2 => c.readlines(py, n)?.into_any(),
                _ => match c.__next__(py)? {
                    Some(b) => b.into_any(),
                    None => py.None().into_bound(py),
                },
            })
        })?;
        Ok((s.input.bind(py).call1((f,))?, Held::Rust(core)))
    }

    /// A text stream (`wsgi.errors`, `sys.stdout`, `sys.stderr`) over `log`.
    pub fn log<'py>(&self, py: Python<'py>, log: Log) -> PyResult<(Bound<'py, PyAny>, Held<Log>)> {
        let Some(s) = &self.shims else {
            return own_class(py, log);
        };
        let core = Arc::new(log);
        let c = Arc::clone(&core);
        // op 0 write(str), 1 writelines(iterable), 2 flush(), 3 close().
        let f = closure(py, move |py, op, arg| {
            Ok(match op {
                0 => c.write(&arg)?.into_pyobject(py)?.into_any(),
                1 => {
                    c.writelines(&arg)?;
                    py.None().into_bound(py)
                }
                2 => {
                    c.flush()?;
                    py.None().into_bound(py)
                }
                _ => {
                    c.close();
                    py.None().into_bound(py)
                }
            })
        })?;
        Ok((s.log.bind(py).call1((f,))?, Held::Rust(core)))
    }

    /// The `start_response` callable over `start`.
    pub fn start_response<'py>(
        &self,
        py: Python<'py>,
        start: StartResponse,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(s) = &self.shims else {
            return Ok(Bound::new(py, start)?.into_any());
        };
        // op 0 start_response(args tuple), 1 write(data).
        let f = closure(py, move |py, op, arg| {
            if op == 0 {
                let t = arg.cast::<PyTuple>()?;
                let exc_info = t.get_item(2)?;
                let exc_info = (!exc_info.is_none()).then_some(&exc_info);
                start.start(py, &t.get_item(0)?, &t.get_item(1)?, exc_info)?;
            } else {
                start.write(py, &arg)?;
            }
            Ok(py.None().into_bound(py))
        })?;
        s.start_response.bind(py).call1((f,))
    }

    /// The `wsgi.file_wrapper` class.
    pub fn file_wrapper<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.shims {
            None => py.get_type::<FileWrapper>().into_any(),
            Some(s) => s.file_wrapper.bind(py).clone(),
        }
    }

    /// The file object of a `wsgi.file_wrapper` the application returned, if it is one.
    pub fn file_wrapper_file<'py>(&self, result: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        let py = result.py();
        match &self.shims {
            None => result
                .cast::<FileWrapper>()
                .ok()
                .map(|fw| fw.get().filelike.bind(py).clone()),
            Some(s) => {
                if result.get_type().is(s.file_wrapper.bind(py)) {
                    result.getattr("filelike").ok()
                } else {
                    None
                }
            }
        }
    }
}

/// `value` as an object of mod_rwsgi's own class (the main interpreter), with the handle the
/// request keeps.
fn own_class<'py, T>(py: Python<'py>, value: T) -> PyResult<(Bound<'py, PyAny>, Held<T>)>
where
    T: PyClass<Frozen = True> + Sync + Into<pyo3::PyClassInitializer<T>>,
{
    let obj = Bound::new(py, value)?;
    let held = Held::Py(obj.clone().unbind());
    Ok((obj.into_any(), held))
}

/// A Python callable `f(op, arg)` over a Rust closure, created in the current interpreter.
/// Panics become `RuntimeError` here, so pyo3 never creates its (process-wide) panic type
/// from a sub-interpreter.
fn closure<'py, F>(py: Python<'py>, f: F) -> PyResult<Bound<'py, PyCFunction>>
where
    F: for<'a> Fn(Python<'a>, u8, Bound<'a, PyAny>) -> PyResult<Bound<'a, PyAny>>
        + Send
        + Sync
        + 'static,
{
    PyCFunction::new_closure(
        py,
        None,
        None,
        move |args: &Bound<'_, PyTuple>, _kw: Option<&Bound<'_, PyDict>>| -> PyResult<Py<PyAny>> {
            let py = args.py();
            let op: u8 = args.get_item(0)?.extract()?;
            let arg = args.get_item(1)?;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(py, op, arg))) {
                Ok(r) => r.map(Bound::unbind),
                Err(p) => Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "mod_rwsgi: internal error: {}",
                    crate::error::panic_message(p.as_ref())
                ))),
            }
        },
    )
}

impl super::adapter::Front for Kit {
    fn start_response<'py>(
        &self,
        py: Python<'py>,
        start: StartResponse,
    ) -> PyResult<Bound<'py, PyAny>> {
        Kit::start_response(self, py, start)
    }

    fn file_wrapper_file<'py>(&self, result: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        Kit::file_wrapper_file(self, result)
    }

    fn close_name<'a, 'py>(&'a self, py: Python<'py>) -> &'a Bound<'py, PyString> {
        self.key(py, Key::Close)
    }
}
