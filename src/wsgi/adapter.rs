//! The Python side of one WSGI request: `wsgi.input`, `start_response` and `write()`,
//! `wsgi.errors`/`sys.stdout`/`sys.stderr` log objects, `wsgi.file_wrapper`, and the driver that
//! calls the application and streams its result. httpd is reached only through the
//! `BodySource` and `ResponseSink` traits, always with the GIL released. Runs in the httpd child
//! (embedded mode) and in daemon processes.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pyo3::PyClass;
use pyo3::exceptions::{PyIOError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::headers::{self, Head};
use crate::error::Code;

/// A request object the Rust side keeps a handle on (to end it with the request): inside a
/// Python object of mod_rwsgi's own class (main interpreter), or shared with the closure a
/// sub-interpreter's shim calls.
pub enum Held<T: PyClass<Frozen = True> + Sync> {
    Py(Py<T>),
    Rust(Arc<T>),
}

impl<T: PyClass<Frozen = True> + Sync> Held<T> {
    pub fn get(&self) -> &T {
        match self {
            Held::Py(p) => p.get(),
            Held::Rust(a) => a,
        }
    }
}

/// What the request driver ([`run`]) needs from the interpreter's kit (`front::Kit`): the
/// `start_response` object over a request's state, whether a result is a
/// `wsgi.file_wrapper`, and the interned name `close`.
pub trait Front {
    fn start_response<'py>(
        &self,
        py: Python<'py>,
        start: StartResponse,
    ) -> PyResult<Bound<'py, PyAny>>;
    /// The file-like object of a `wsgi.file_wrapper` result, if `result` is one.
    fn file_wrapper_file<'py>(&self, result: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>>;
    fn close_name<'a, 'py>(&'a self, py: Python<'py>) -> &'a Bound<'py, PyString>;
}

/// Log levels the application side uses (mapped onto httpd's by the httpd layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Critical,
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Level {
    /// The level of a Python `logging` record (`levelno`): CRITICAL → crit, ERROR → error,
    /// WARNING → warn, INFO → info, DEBUG (and below) → debug; levels in between go to the
    /// standard level below them.
    pub fn from_python(levelno: i64) -> Level {
        match levelno {
            50.. => Level::Critical,
            40..=49 => Level::Error,
            30..=39 => Level::Warning,
            20..=29 => Level::Info,
            _ => Level::Debug,
        }
    }
}

/// Where log lines go; the httpd layer supplies one bound to a request or to the server.
pub type LogFn = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// The request body, as the httpd layer delivers it (dechunked, never past its end).
pub trait BodySource: Send {
    /// Reads up to `buf.len()` bytes; `Ok(0)` at the end of the body. Called without the GIL.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Reads into the unwritten part of a new `bytes` object; the count, `Ok(0)` at the end.
    /// Called without the GIL. The default reads into the writer's zeroed slice; a source that
    /// writes through a pointer (httpd's `ap_get_client_block`) skips the zeroing.
    fn read_into(&mut self, out: &mut crate::pybytes::BytesWriter) -> io::Result<usize> {
        let n = self.read(out.spare_zeroed())?;
        out.commit(n);
        Ok(n)
    }
}

/// The response, as the httpd layer sends it.
pub trait ResponseSink: Send {
    /// Records the status and headers; they leave with the first `write`/`send_file`/`finish`.
    fn set_head(&mut self, head: &Head);
    /// Sends body bytes; `flush` pushes them to the client at once. Called without the GIL,
    /// unless `buffers` said this write only buffers.
    fn write(&mut self, data: &[u8], flush: bool) -> io::Result<()>;
    /// Whether `write(data of len bytes, flush)` would only copy the bytes into a buffer (no
    /// I/O, no blocking), so the caller may keep the GIL around it.
    fn buffers(&self, _len: usize, _flush: bool) -> bool {
        false
    }
    /// Sends `len` bytes of the regular file open on `fd`, from `offset`. Called without the GIL.
    fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<()>;
    /// Ends the response; `abort` makes the client see a truncated response, never a clean end.
    fn finish(&mut self, abort: bool) -> io::Result<()>;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is still consistent for us.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------------------
// wsgi.input

const READ_CHUNK: usize = 64 * 1024;
/// A read that takes at least this much from the source goes straight into the bytes object.
const DIRECT_MIN: u64 = 32 * 1024;
/// ... and at most this much (a larger body is read in `READ_CHUNK` pieces as it arrives, so a
/// client declaring a huge Content-Length does not reserve that memory up front).
const DIRECT_MAX: u64 = 16 << 20;

struct InputState {
    source: Option<Box<dyn BodySource>>,
    /// Body bytes not yet read from the source, when the length is known (Content-Length).
    remaining: Option<u64>,
    /// Bytes read from the source but not yet handed to the application.
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    /// Set when the request has ended: the object must not touch httpd any more.
    ended: bool,
    /// Reads from the source, the bytes they returned and the time they took (for metrics).
    reads: u64,
    read_bytes: u64,
    read_us: u64,
}

impl InputState {
    fn count_read(&mut self, began: Instant, n: usize) {
        self.reads += 1;
        self.read_bytes += n as u64;
        self.read_us += u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
    }
}

/// `wsgi.input`: a stream over the request body.
#[pyclass(frozen, module = "mod_wsgi", name = "Input")]
pub struct Input {
    state: Mutex<InputState>,
}

impl Input {
    /// `length`: the body's declared length (Content-Length), `None` when unknown (chunked).
    pub fn new(source: Box<dyn BodySource>, length: Option<u64>) -> Self {
        Input {
            state: Mutex::new(InputState {
                source: Some(source),
                remaining: length,
                buf: Vec::new(),
                pos: 0,
                eof: false,
                ended: false,
                reads: 0,
                read_bytes: 0,
                read_us: 0,
            }),
        }
    }

    /// Reads from the source so far, the bytes they returned and the microseconds they took.
    pub fn counts(&self) -> (u64, u64, u64) {
        let st = lock(&self.state);
        (st.reads, st.read_bytes, st.read_us)
    }

    /// Detaches the object from the request once it has ended.
    pub fn end(&self) {
        let mut st = lock(&self.state);
        st.source = None;
        st.ended = true;
    }

    /// Reads more of the body into the buffer (GIL released). Returns false at the end.
    fn fill(&self, py: Python<'_>, want: usize) -> PyResult<bool> {
        let mut source = {
            let mut st = lock(&self.state);
            if st.ended {
                return Err(PyValueError::new_err(
                    "wsgi.input was used after the request it belongs to had ended",
                ));
            }
            if st.eof {
                return Ok(false);
            }
            match st.source.take() {
                Some(s) => s,
                None => {
                    return Err(PyRuntimeError::new_err(
                        "wsgi.input is in use by another thread",
                    ));
                }
            }
        };
        let mut chunk = vec![0u8; want.clamp(1, READ_CHUNK)];
        let began = Instant::now();
        let res = py.detach(|| source.read(&mut chunk));
        let mut st = lock(&self.state);
        st.count_read(began, res.as_ref().map_or(0, |n| *n));
        if !st.ended {
            st.source = Some(source);
        }
        match res {
            Ok(0) => {
                st.eof = true;
                Ok(false)
            }
            Ok(n) => {
                st.remaining = st.remaining.map(|r| r.saturating_sub(n as u64));
                if st.pos > 0 {
                    let pos = st.pos;
                    st.buf.drain(..pos);
                    st.pos = 0;
                }
                st.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) => Err(PyIOError::new_err(format!("request data read error: {e}"))),
        }
    }

    /// A large `read(n)`/`read()` when the rest of the body's length is known: one bytes object
    /// of the final size, filled from the source with the GIL released (no intermediate
    /// buffer, no copy). `None`: not applicable, use the buffered path.
    fn read_direct<'py>(
        &self,
        py: Python<'py>,
        size: Option<i64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let (mut source, buffered) = {
            let mut st = lock(&self.state);
            let buffered = (st.buf.len() - st.pos) as u64;
            let Some(remaining) = st.remaining else {
                return Ok(None);
            };
            let want = match size {
                Some(n) if n >= 0 => n as u64,
                _ => u64::MAX,
            };
            let from_source = want.min(buffered + remaining).saturating_sub(buffered);
            if st.ended || st.eof || from_source < DIRECT_MIN || buffered + from_source > DIRECT_MAX
            {
                return Ok(None);
            }
            let Some(source) = st.source.take() else {
                return Ok(None);
            };
            (source, (buffered, from_source))
        };
        let (buffered, from_source) = buffered;
        let total = (buffered + from_source) as usize;
        let began = Instant::now();
        // The object is filled in place, not zeroed first; if the body ends early it holds
        // only what was read.
        let made = crate::pybytes::bytes_filled(py, total, |out| {
            {
                let mut st = lock(&self.state);
                let pos = st.pos;
                out.extend_from_slice(&st.buf[pos..]);
                st.buf.clear();
                st.pos = 0;
            }
            let failure = py.detach(|| {
                while out.remaining() > 0 {
                    match source.read_into(out) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Some(e),
                    }
                }
                None
            });
            (total - out.remaining(), failure)
        });
        let (made, filled, failure) = match made {
            Ok((b, (n, f))) => (Ok(b), n, f),
            Err(e) => (Err(e), 0, None),
        };
        let mut st = lock(&self.state);
        let from_source_got = (filled as u64).saturating_sub(buffered);
        st.count_read(began, from_source_got as usize);
        st.remaining = st.remaining.map(|r| r.saturating_sub(from_source_got));
        if !st.ended {
            st.source = Some(source);
        }
        if filled < total && failure.is_none() {
            st.eof = true;
        }
        drop(st);
        let made = made?;
        if let Some(e) = failure {
            return Err(PyIOError::new_err(format!("request data read error: {e}")));
        }
        // Shorter than asked when the body ended before its declared length said.
        Ok(Some(made))
    }

    fn buffered(&self) -> usize {
        let st = lock(&self.state);
        st.buf.len() - st.pos
    }

    fn take(&self, n: usize) -> Vec<u8> {
        let mut st = lock(&self.state);
        let end = st.pos.saturating_add(n).min(st.buf.len());
        let out = st.buf[st.pos..end].to_vec();
        st.pos = end;
        if st.pos == st.buf.len() {
            st.buf.clear();
            st.pos = 0;
        }
        out
    }

    fn read_bytes(&self, py: Python<'_>, size: Option<i64>) -> PyResult<Vec<u8>> {
        match size {
            Some(n) if n >= 0 => {
                let n = n as usize;
                while self.buffered() < n {
                    if !self.fill(py, n - self.buffered())? {
                        break;
                    }
                }
                Ok(self.take(n))
            }
            _ => {
                while self.fill(py, READ_CHUNK)? {}
                Ok(self.take(usize::MAX))
            }
        }
    }

    fn readline_bytes(&self, py: Python<'_>, size: Option<i64>) -> PyResult<Vec<u8>> {
        let limit = match size {
            Some(n) if n >= 0 => n as usize,
            _ => usize::MAX,
        };
        let mut scanned = 0;
        loop {
            let found = {
                let st = lock(&self.state);
                let avail = &st.buf[st.pos..];
                let upto = avail.len().min(limit);
                avail[scanned.min(upto)..upto]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map(|i| scanned + i)
            };
            if let Some(i) = found {
                return Ok(self.take(i + 1));
            }
            let have = self.buffered();
            if have >= limit {
                return Ok(self.take(limit));
            }
            scanned = have;
            if !self.fill(py, READ_CHUNK)? {
                return Ok(self.take(limit));
            }
        }
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    pub(crate) fn read<'py>(
        &self,
        py: Python<'py>,
        size: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(b) = self.read_direct(py, size)? {
            return Ok(b);
        }
        let data = self.read_bytes(py, size)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size=None))]
    pub(crate) fn readline<'py>(
        &self,
        py: Python<'py>,
        size: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.readline_bytes(py, size)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint=None))]
    pub(crate) fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        let mut total = 0usize;
        loop {
            let line = self.readline_bytes(py, None)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            list.append(PyBytes::new(py, &line))?;
            if let Some(h) = hint
                && h > 0
                && total >= h as usize
            {
                break;
            }
        }
        Ok(list)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    pub(crate) fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline_bytes(py, None)?;
        Ok(if line.is_empty() {
            None
        } else {
            Some(PyBytes::new(py, &line))
        })
    }

    fn close(&self) {}
}

// ------------------------------------------------------------------------------------------
// start_response and write()

struct ResponseState {
    sink: Option<Box<dyn ResponseSink>>,
    head: Option<Head>,
    /// The head has gone out with the first body bytes.
    sent: bool,
    /// Body bytes handed to the sink.
    written: u64,
    /// Writing to the client failed (it went away): stop producing output.
    client_gone: bool,
    /// Bytes dropped because the application exceeded its own Content-Length.
    dropped: u64,
    ended: bool,
    /// Writes handed to the sink and the microseconds they took (for metrics).
    writes: u64,
    write_us: u64,
}

impl ResponseState {
    fn count_write(&mut self, began: Instant) {
        self.writes += 1;
        self.write_us += u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
    }
}

/// The `start_response` callable handed to the application.
#[pyclass(frozen, module = "mod_wsgi", name = "StartResponse")]
pub struct StartResponse {
    state: Arc<Mutex<ResponseState>>,
}

/// The `write()` callable `start_response` returns.
#[pyclass(frozen, module = "mod_wsgi", name = "Write")]
pub struct Write {
    state: Arc<Mutex<ResponseState>>,
}

fn state_err(msg: &str) -> PyErr {
    PyRuntimeError::new_err(msg.to_string())
}

/// Sends `data` (after the head, on first use), never past the declared Content-Length.
fn send_body(
    py: Python<'_>,
    state: &Mutex<ResponseState>,
    data: &[u8],
    flush: bool,
) -> PyResult<()> {
    let (mut sink, data) = {
        let mut st = lock(state);
        if st.ended {
            return Err(state_err(
                "the response was used after its request had ended",
            ));
        }
        if st.client_gone {
            return Err(PyOSError::new_err(
                "failed to write response data: client went away",
            ));
        }
        let Some(content_length) = st.head.as_ref().map(|h| h.content_length) else {
            return Err(state_err(
                "response data was produced before start_response() was called",
            ));
        };
        let data = match content_length {
            Some(cl) => {
                let room = cl.saturating_sub(st.written);
                if (data.len() as u64) > room {
                    st.dropped += data.len() as u64 - room;
                    &data[..room as usize]
                } else {
                    data
                }
            }
            None => data,
        };
        if data.is_empty() && !flush {
            return Ok(());
        }
        let Some(mut sink) = st.sink.take() else {
            return Err(state_err("the response is being written by another thread"));
        };
        if !st.sent {
            if let Some(head) = &st.head {
                sink.set_head(head);
            }
            st.sent = true;
        }
        (sink, data)
    };
    // A write the sink only buffers keeps the GIL: no hand-over to another thread and back.
    let began = Instant::now();
    let res = if sink.buffers(data.len(), flush) {
        sink.write(data, flush)
    } else {
        py.detach(|| sink.write(data, flush))
    };
    let mut st = lock(state);
    st.count_write(began);
    st.sink = Some(sink);
    match res {
        Ok(()) => {
            st.written += data.len() as u64;
            Ok(())
        }
        Err(e) => {
            st.client_gone = true;
            Err(PyOSError::new_err(format!(
                "failed to write response data: {e}"
            )))
        }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, response_headers, exc_info=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        response_headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        self.start(py, status, response_headers, exc_info)?;
        Ok(Write {
            state: Arc::clone(&self.state),
        })
    }
}

impl StartResponse {
    /// `start_response(status, response_headers, exc_info)`: checks the call against the
    /// response so far (PEP 3333) and records the validated head.
    pub(crate) fn start(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        response_headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let st = lock(&self.state);
            if st.ended {
                return Err(state_err(
                    "start_response() was called after the request had ended",
                ));
            }
            match exc_info {
                Some(info) if st.sent => {
                    // PEP 3333: the headers are out, so re-raise the original exception.
                    drop(st);
                    let value = info.get_item(1)?;
                    let tb = info.get_item(2)?;
                    let err = PyErr::from_value(value);
                    if !tb.is_none() {
                        err.set_traceback(py, Some(tb.cast_into()?));
                    }
                    return Err(err);
                }
                None if st.head.is_some() => {
                    return Err(state_err(
                        "start_response() was called a second time without exc_info",
                    ));
                }
                _ => {}
            }
        }
        let status: String = status
            .cast::<PyString>()
            .map_err(|_| {
                PyTypeError::new_err("the status passed to start_response() must be a str")
            })?
            .to_str()?
            .to_string();
        let list = response_headers.cast::<PyList>().map_err(|_| {
            PyTypeError::new_err("response headers must be a list of (name, value) tuples")
        })?;
        let mut hdrs = Vec::with_capacity(list.len());
        for item in list.iter() {
            let t = item.cast::<PyTuple>().map_err(|_| {
                PyTypeError::new_err("each response header must be a (name, value) tuple")
            })?;
            if t.len() != 2 {
                return Err(PyTypeError::new_err(
                    "each response header must be a (name, value) tuple",
                ));
            }
            let name = t.get_item(0)?;
            let value = t.get_item(1)?;
            let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
                return Err(PyTypeError::new_err(
                    "response header names and values must be str",
                ));
            };
            hdrs.push((name.to_str()?.to_string(), value.to_str()?.to_string()));
        }
        let head = headers::validate(&status, hdrs).map_err(PyValueError::new_err)?;
        lock(&self.state).head = Some(head);
        Ok(())
    }

    /// The `write()` callable's work: `data` must be bytes.
    pub(crate) fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        write_to(py, &self.state, data)
    }
}

fn write_to(py: Python<'_>, state: &Mutex<ResponseState>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let b = data
        .cast::<PyBytes>()
        .map_err(|_| PyTypeError::new_err("write() takes bytes, not str or other types"))?;
    send_body(py, state, b.as_bytes(), true)
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        write_to(py, &self.state, data)
    }
}

// ------------------------------------------------------------------------------------------
// wsgi.errors, sys.stdout, sys.stderr

/// A text stream whose lines go to httpd's error log.
#[pyclass(frozen, module = "mod_wsgi", name = "Log")]
pub struct Log {
    /// The request's log while it runs; `None` afterwards.
    primary: Mutex<Option<LogFn>>,
    /// Where lines go once the request has ended (the server's log).
    fallback: LogFn,
    buffer: Mutex<String>,
    level: Level,
    /// If set, writing raises `OSError` with this message (`WSGIRestrictStdout`).
    restricted: Option<String>,
}

impl Log {
    pub fn new(primary: Option<LogFn>, fallback: LogFn, level: Level) -> Self {
        Log {
            primary: Mutex::new(primary),
            fallback,
            buffer: Mutex::new(String::new()),
            level,
            restricted: None,
        }
    }

    pub fn restricted(fallback: LogFn, msg: &str) -> Self {
        Log {
            restricted: Some(msg.to_string()),
            ..Log::new(None, fallback, Level::Error)
        }
    }

    fn emit(&self, line: &str) {
        let f = lock(&self.primary)
            .clone()
            .unwrap_or_else(|| Arc::clone(&self.fallback));
        f(self.level, line);
    }

    fn flush_all(&self) {
        let rest = std::mem::take(&mut *lock(&self.buffer));
        if !rest.is_empty() {
            self.emit(&rest);
        }
    }

    /// Flushes what is buffered and detaches the object from its request.
    pub fn end(&self) {
        self.flush_all();
        *lock(&self.primary) = None;
    }
}

#[pymethods]
impl Log {
    pub(crate) fn write(&self, msg: &Bound<'_, PyAny>) -> PyResult<usize> {
        if let Some(r) = &self.restricted {
            return Err(PyOSError::new_err(r.clone()));
        }
        let s = msg.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() argument must be str, not {}",
                msg.get_type()
            ))
        })?;
        let s = s.to_cow()?;
        let mut lines = Vec::new();
        {
            let mut buf = lock(&self.buffer);
            buf.push_str(&s);
            while let Some(i) = buf.find('\n') {
                lines.push(buf[..i].to_string());
                buf.drain(..=i);
            }
        }
        for l in lines {
            self.emit(&l);
        }
        Ok(s.chars().count())
    }

    pub(crate) fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for l in lines.try_iter()? {
            self.write(&l?)?;
        }
        Ok(())
    }

    pub(crate) fn flush(&self) -> PyResult<()> {
        if let Some(r) = &self.restricted {
            return Err(PyOSError::new_err(r.clone()));
        }
        self.flush_all();
        Ok(())
    }

    pub(crate) fn close(&self) {
        self.flush_all();
    }

    fn isatty(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        true
    }

    fn readable(&self) -> bool {
        false
    }

    #[getter]
    fn closed(&self) -> bool {
        false
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        "utf-8"
    }

    #[getter]
    fn errors(&self) -> &'static str {
        "backslashreplace"
    }

    #[getter]
    fn name(&self) -> &'static str {
        "<wsgi.errors>"
    }
}

// ------------------------------------------------------------------------------------------
// wsgi.file_wrapper

/// `wsgi.file_wrapper`: iterates a file in blocks; a real file is sent by httpd directly.
#[pyclass(frozen, module = "mod_wsgi", name = "FileWrapper")]
pub struct FileWrapper {
    pub(crate) filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: i64) -> PyResult<Self> {
        if blksize <= 0 {
            return Err(PyValueError::new_err(
                "block size must be a positive integer",
            ));
        }
        Ok(FileWrapper {
            filelike,
            blksize: blksize as usize,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok(if data.len().unwrap_or(0) == 0 {
            None
        } else {
            Some(data)
        })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

/// The part of a regular file that `wsgi.file_wrapper` can hand to httpd: `(fd, offset, len)`.
fn file_region(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    declared: Option<u64>,
) -> Option<(RawFd, u64, u64)> {
    let fd: RawFd = f.call_method0("fileno").ok()?.extract().ok()?;
    let offset: i64 = f.call_method0("tell").ok()?.extract().ok()?;
    let os = py.import("os").ok()?;
    let st = os.call_method1("fstat", (fd,)).ok()?;
    let mode: u32 = st.getattr("st_mode").ok()?.extract().ok()?;
    let size: i64 = st.getattr("st_size").ok()?.extract().ok()?;
    let is_reg: bool = py
        .import("stat")
        .ok()?
        .call_method1("S_ISREG", (mode,))
        .ok()?
        .extract()
        .ok()?;
    if !is_reg || offset < 0 {
        return None;
    }
    // Never read past the end of the file, whatever Content-Length says.
    let avail = (size - offset).max(0) as u64;
    Some((
        fd,
        offset as u64,
        declared.map_or(avail, |cl| cl.min(avail)),
    ))
}

// ------------------------------------------------------------------------------------------
// The request driver

/// What happened to a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The response was sent completely.
    Done,
    /// Nothing was sent; httpd should answer 500 (the reason is logged).
    ServerError,
    /// Nothing was sent and the request was interrupted by `interrupt-timeout`
    /// (`mod_wsgi.RequestTimeout` unwound it): httpd should answer 504.
    TimedOut,
    /// The response was cut off (error after the first byte, short body, client gone).
    Aborted,
}

/// Everything one request needs besides the application and its environ.
pub struct RequestIo {
    pub sink: Box<dyn ResponseSink>,
    pub input: Held<Input>,
    pub errors: Held<Log>,
    /// The request's own log (right virtual host), for the driver's messages.
    pub log: LogFn,
    /// The script path, for messages.
    pub script: String,
    /// Whether to flush after every block of a streamed (non-list) response.
    pub stream_flush: bool,
    /// A HEAD request: a declared Content-Length with no body is the normal answer.
    pub head_request: bool,
    /// When the request passed each point (for `mod_wsgi.request_metrics()`).
    pub stamps: crate::request::metrics::Stamps,
    /// The interpreter's `bootstrap` module when it has event subscribers (`Interp::events`).
    pub events: Option<Py<PyAny>>,
}

thread_local! {
    /// Whether this thread runs a request now, and its `mod_wsgi.request_data()` dict once
    /// asked for (it belongs to the interpreter the request runs in).
    static REQUEST_DATA: std::cell::RefCell<(bool, Option<Py<PyDict>>)> =
        const { std::cell::RefCell::new((false, None)) };
}

/// `mod_wsgi.request_data()`: a dict for the request this thread runs, the same for the whole
/// request (the events' `request_data`); an error outside a request.
pub fn request_data(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    REQUEST_DATA.with(|d| {
        let mut d = d.borrow_mut();
        if !d.0 {
            return Err(PyRuntimeError::new_err("no active request for thread"));
        }
        Ok(d.1
            .get_or_insert_with(|| PyDict::new(py).unbind())
            .bind(py)
            .clone())
    })
}

/// Marks the thread as running a request while it lives; drops the request's data after
/// (still attached to the request's interpreter).
struct InRequest;

impl InRequest {
    fn enter() -> InRequest {
        REQUEST_DATA.with(|d| d.borrow_mut().0 = true);
        InRequest
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        let data = REQUEST_DATA.with(|d| {
            let mut d = d.borrow_mut();
            d.0 = false;
            d.1.take()
        });
        drop(data);
    }
}

/// The request's events, while its interpreter has subscribers: the bootstrap's helpers and
/// what `request_started` gave back for the later ones.
struct Events<'py> {
    boot: Bound<'py, PyAny>,
    context: Bound<'py, PyAny>,
}

impl<'py> Events<'py> {
    /// Publishes request_started; returns the events of the request and the application to
    /// call (a subscriber may have wrapped it). `None` (logged) if the helper itself failed.
    fn start(
        py: Python<'py>,
        boot: Bound<'py, PyAny>,
        app: &Bound<'py, PyAny>,
        environ: &Bound<'py, PyDict>,
        log: &LogFn,
    ) -> Option<(Events<'py>, Bound<'py, PyAny>)> {
        let started = request_data(py).and_then(|data| {
            boot.call_method1("request_started", (app, environ, data))?
                .extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>()
        });
        match started {
            Ok((app, context)) => Some((Events { boot, context }, app)),
            Err(e) => {
                Events::failed(py, &e, log, "request_started");
                None
            }
        }
    }

    fn failed(py: Python<'_>, err: &PyErr, log: &LogFn, name: &str) {
        let msg = format!(
            "{}: publishing mod_wsgi event '{name}' failed",
            Code::EventSubscriber.as_str()
        );
        log_exception(py, err, log, &msg);
    }

    /// start_response publishing response_started (the original if wrapping fails).
    fn start_response(
        &self,
        py: Python<'py>,
        sr: Bound<'py, PyAny>,
        log: &LogFn,
    ) -> Bound<'py, PyAny> {
        match self
            .boot
            .call_method1("wrap_start_response", (&sr, &self.context))
        {
            Ok(wrapped) => wrapped,
            Err(e) => {
                Events::failed(py, &e, log, "response_started");
                sr
            }
        }
    }

    fn exception(&self, py: Python<'_>, err: &PyErr, log: &LogFn) {
        let tb = err
            .traceback(py)
            .map(|t| t.into_any())
            .unwrap_or_else(|| py.None().into_bound(py));
        let args = (&self.context, err.get_type(py), err.value(py), tb);
        if let Err(e) = self.boot.call_method1("request_exception", args) {
            Events::failed(py, &e, log, "request_exception");
        }
    }

    fn finished(&self, py: Python<'py>, facts: Bound<'py, PyDict>, log: &LogFn) {
        if let Err(e) = self
            .boot
            .call_method1("request_finished", (&self.context, facts))
        {
            Events::failed(py, &e, log, "request_finished");
        }
    }
}

/// Whether `err` is `mod_wsgi.RequestTimeout`, which a daemon process raises in a request's
/// thread after request-timeout when interrupt-timeout is set.
fn is_request_timeout(py: Python<'_>, err: &PyErr) -> bool {
    py.import("mod_wsgi")
        .and_then(|m| m.getattr("RequestTimeout"))
        .is_ok_and(|class| err.get_type(py).is(&class))
}

/// Logs an exception with its full traceback, one log line per traceback line.
pub fn log_exception(py: Python<'_>, err: &PyErr, log: &LogFn, first_line: &str) {
    log(Level::Error, first_line);
    let formatted = py.import("traceback").and_then(|tb| {
        let trace = err
            .traceback(py)
            .map(|t| t.into_any())
            .unwrap_or_else(|| py.None().into_bound(py));
        tb.call_method1("format_exception", (err.get_type(py), err.value(py), trace))?
            .extract::<Vec<String>>()
    });
    match formatted {
        Ok(parts) => {
            for line in parts.concat().lines() {
                log(Level::Error, line);
            }
        }
        Err(_) => log(Level::Error, &err.to_string()),
    }
}

struct Driver<'a, 'py> {
    log: &'a LogFn,
    script: &'a str,
    stream_flush: bool,
    state: Arc<Mutex<ResponseState>>,
    events: Option<&'a Events<'py>>,
}

impl Driver<'_, '_> {
    fn fail(&self, py: Python<'_>, err: &PyErr, what: &str) -> Outcome {
        let client_gone = lock(&self.state).client_gone;
        if client_gone {
            (self.log)(
                Level::Info,
                &format!(
                    "{}: client closed the connection while WSGI script '{}' was responding",
                    Code::OutputError.as_str(),
                    self.script
                ),
            );
        } else {
            log_exception(
                py,
                err,
                self.log,
                &format!(
                    "{}: exception occurred {what} WSGI script '{}'",
                    Code::AppException.as_str(),
                    self.script
                ),
            );
            if let Some(ev) = self.events {
                ev.exception(py, err, self.log);
            }
        }
        if lock(&self.state).sent {
            Outcome::Aborted
        } else if is_request_timeout(py, err) {
            Outcome::TimedOut
        } else {
            Outcome::ServerError
        }
    }

    fn protocol_error(&self, msg: &str) -> Outcome {
        (self.log)(
            Level::Error,
            &format!(
                "{}: WSGI script '{}': {msg}",
                Code::AppProtocol.as_str(),
                self.script
            ),
        );
        if lock(&self.state).sent {
            Outcome::Aborted
        } else {
            Outcome::ServerError
        }
    }

    /// Streams the iterable; returns `None` when it was fully consumed.
    fn iterate(&self, py: Python<'_>, result: &Bound<'_, PyAny>) -> Option<Outcome> {
        let is_seq = result.is_instance_of::<PyList>() || result.is_instance_of::<PyTuple>();
        let flush = self.stream_flush && !is_seq;
        let iter = match result.try_iter() {
            Ok(i) => i,
            // Not an iterable at all (None, a number): the application broke the protocol.
            // Only looked into when iter() failed, so a good response pays nothing for it.
            Err(_)
                if result.is_none()
                    || !(result.hasattr("__iter__").unwrap_or(false)
                        || result.hasattr("__getitem__").unwrap_or(false)) =>
            {
                return Some(self.protocol_error(&format!(
                    "the application returned {}, which is not an iterable of bytes",
                    result.get_type()
                )));
            }
            Err(e) => return Some(self.fail(py, &e, "iterating the result of")),
        };
        // Once a head is there it stays (start_response may only replace it): checked until
        // the first chunk that has one, not on every chunk.
        let mut head_seen = false;
        for item in iter {
            let item = match item {
                Ok(i) => i,
                Err(e) => return Some(self.fail(py, &e, "in the response iterable of")),
            };
            let Ok(bytes) = item.cast::<PyBytes>() else {
                return Some(self.protocol_error(&format!(
                    "the response iterable yielded {}, but only bytes are allowed",
                    item.get_type()
                )));
            };
            let data = bytes.as_bytes();
            if data.is_empty() {
                continue;
            }
            if !head_seen {
                if lock(&self.state).head.is_none() {
                    return Some(self.protocol_error(
                        "the response iterable yielded data before start_response() was called",
                    ));
                }
                head_seen = true;
            }
            if let Err(e) = send_body(py, &self.state, data, flush) {
                return Some(self.fail(py, &e, "writing the response of"));
            }
        }
        None
    }

    /// Sends a `wsgi.file_wrapper` over a regular file as a file bucket.
    fn send_file(&self, py: Python<'_>, filelike: &Bound<'_, PyAny>) -> Option<Outcome> {
        let declared = {
            let st = lock(&self.state);
            if st.sent || st.head.is_none() {
                return None;
            }
            st.head.as_ref().and_then(|h| h.content_length)
        };
        let (fd, offset, len) = file_region(py, filelike, declared)?;
        let (mut sink, head) = {
            let mut st = lock(&self.state);
            let mut head = st.head.clone()?;
            if head.content_length.is_none() {
                head.headers
                    .push(("Content-Length".into(), len.to_string()));
                head.content_length = Some(len);
            }
            st.sent = true;
            (st.sink.take()?, head)
        };
        sink.set_head(&head);
        let began = Instant::now();
        let res = if len > 0 {
            py.detach(|| sink.send_file(fd, offset, len))
        } else {
            Ok(())
        };
        let mut st = lock(&self.state);
        st.count_write(began);
        st.sink = Some(sink);
        match res {
            Ok(()) => {
                st.written = len;
                // Keep the file object's position where a plain iteration would have left it.
                drop(st);
                let _ = filelike.call_method1("seek", ((offset + len) as i64,));
                Some(Outcome::Done)
            }
            Err(e) => {
                st.client_gone = true;
                drop(st);
                // Raised and fetched here, so the exception is built in the interpreter the
                // request runs in (a lazy error would be built wherever pyo3 normalises it).
                PyOSError::new_err(format!("failed to send file: {e}")).restore(py);
                let err = PyErr::fetch(py);
                Some(self.fail(py, &err, "sending the file of"))
            }
        }
    }
}

/// The end of a response (the last buffered bytes and the end of the stream, or the abort),
/// which `run` leaves to its caller so it happens after the GIL is released: a request then
/// takes the GIL once, not twice. Dropping it unrun ends the response all the same.
#[must_use = "the response is only ended when the Finish is run (or dropped)"]
pub struct Finish {
    sink: Option<Box<dyn ResponseSink>>,
    abort: bool,
}

impl Finish {
    /// Ends the response. Call it without the GIL: it may block on the client.
    pub fn run(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.finish(self.abort);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.end();
    }
}

/// Calls the application with `environ` and sends what it returns. Always calls the result's
/// `close()` and always detaches the request's objects; ends the response through the returned
/// `Finish` (none when the outcome is a 500 that httpd answers: nothing has gone out).
pub fn run<'py>(
    py: Python<'py>,
    kit: &dyn Front,
    app: &Bound<'py, PyAny>,
    environ: Bound<'py, PyDict>,
    io: RequestIo,
) -> (Outcome, Option<Finish>) {
    let RequestIo {
        sink,
        input,
        errors,
        log,
        script,
        stream_flush,
        head_request,
        stamps,
        events,
    } = io;
    // Counted for mod_wsgi's metrics until it ends below (or, on a panic, is dropped).
    let running = crate::request::metrics::begin(stamps);
    let _in_request = InRequest::enter();
    let mut app = app.clone();
    let events = events.and_then(|boot| {
        let (ev, wrapped) = Events::start(py, boot.into_bound(py), &app, &environ, &log)?;
        app = wrapped;
        Some(ev)
    });
    // The thread's CPU time, when something will report what the request used.
    let cpu_before = (running.is_some() || events.is_some()).then(thread_cpu_us);
    let state = Arc::new(Mutex::new(ResponseState {
        sink: Some(sink),
        head: None,
        sent: false,
        written: 0,
        client_gone: false,
        dropped: 0,
        ended: false,
        writes: 0,
        write_us: 0,
    }));
    let d = Driver {
        log: &log,
        script: &script,
        stream_flush,
        state: Arc::clone(&state),
        events: events.as_ref(),
    };
    let start = StartResponse {
        state: Arc::clone(&state),
    };

    let mut outcome = match kit
        .start_response(py, start)
        .map(|sr| match &events {
            Some(ev) => ev.start_response(py, sr, &log),
            None => sr,
        })
        .and_then(|sr| app.call1((environ, sr)))
    {
        Err(e) => d.fail(py, &e, "calling"),
        Ok(result) => {
            let out = match kit.file_wrapper_file(&result) {
                Some(f) => d.send_file(py, &f).or_else(|| d.iterate(py, &result)),
                None => d.iterate(py, &result),
            };
            // PEP 3333: close() is called whatever happened, once the iterable is done with.
            // (A plain list or tuple has none: skip the failing attribute lookup.)
            let plain =
                result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
            if !plain
                && let Ok(true) = result.hasattr(kit.close_name(py))
                && let Err(e) = result.call_method0("close")
            {
                // Logged, and nothing else: the body was produced (or an earlier failure
                // already decided the outcome), so the response completes as mod_wsgi's does.
                let _ = d.fail(py, &e, "in close() of the result of");
            }
            out.unwrap_or(Outcome::Done)
        }
    };

    let mut st = lock(&state);
    // A write failed (the client went away) and the application caught the error and returned:
    // what it wrote is missing, so the response must not end cleanly.
    if outcome == Outcome::Done && st.client_gone {
        log(
            Level::Info,
            &format!(
                "{}: client closed the connection while WSGI script '{script}' was responding",
                Code::OutputError.as_str()
            ),
        );
        outcome = Outcome::Aborted;
    }
    if outcome == Outcome::Done {
        match &st.head {
            None => {
                drop(st);
                outcome =
                    d.protocol_error("the application returned without calling start_response()");
                st = lock(&state);
            }
            Some(head) => {
                // HEAD and bodiless statuses (1xx, 204, 304) may declare the length of the
                // body they do not carry.
                let bodiless =
                    head_request || head.status < 200 || head.status == 204 || head.status == 304;
                let cl = head.content_length.filter(|_| !bodiless);
                if let Some(cl) = cl
                    && st.written < cl
                {
                    // A declared length we cannot fill: never a clean end. If nothing has gone
                    // out yet, answer 500 instead.
                    log(
                        Level::Error,
                        &format!(
                            "{}: WSGI script '{script}' declared Content-Length {cl} but sent only \
                             {} bytes; the response was {}",
                            Code::AppProtocol.as_str(),
                            st.written,
                            if st.sent {
                                "aborted"
                            } else {
                                "replaced by a 500 error"
                            }
                        ),
                    );
                    outcome = if st.sent {
                        Outcome::Aborted
                    } else {
                        Outcome::ServerError
                    };
                }
                if st.dropped > 0 {
                    log(
                        Level::Warning,
                        &format!(
                            "{}: WSGI script '{script}' produced {} bytes more than its \
                             Content-Length; they were not sent",
                            Code::AppProtocol.as_str(),
                            st.dropped
                        ),
                    );
                }
            }
        }
    }
    // Send or abort what is still open; a 500 is left to httpd (nothing has gone out).
    let mut finish = None;
    if !matches!(outcome, Outcome::ServerError | Outcome::TimedOut)
        && let Some(mut sink) = st.sink.take()
    {
        if !st.sent
            && let Some(head) = &st.head
        {
            sink.set_head(head);
        }
        st.sent = true;
        finish = Some(Finish {
            sink: Some(sink),
            abort: outcome == Outcome::Aborted,
        });
    }
    st.ended = true;
    st.sink = None;
    let status = match outcome {
        Outcome::ServerError => 500,
        Outcome::TimedOut => 504,
        Outcome::Done | Outcome::Aborted => st.head.as_ref().map_or(0, |h| h.status),
    };
    let (written, writes, write_us) = (st.written, st.writes, st.write_us);
    drop(st);
    if let Some(before) = cpu_before {
        let (reads, read_bytes, read_us) = input.get().counts();
        let (user, system) = thread_cpu_us();
        let ended = crate::request::metrics::Ended {
            status,
            input_bytes: read_bytes,
            input_reads: reads,
            input_read_us: read_us,
            output_bytes: written,
            output_writes: writes,
            output_write_us: write_us,
            cpu_user_us: user.saturating_sub(before.0),
            cpu_system_us: system.saturating_sub(before.1),
        };
        let finish_us = crate::request::metrics::now_us();
        if let Some(ev) = &events {
            match finished_event(py, &ended, stamps, finish_us) {
                Ok(facts) => ev.finished(py, facts, &log),
                Err(e) => Events::failed(py, &e, &log, "request_finished"),
            }
        }
        if let Some(r) = running {
            r.end(ended, finish_us);
        }
    }
    input.get().end();
    errors.get().end();
    (outcome, finish)
}

/// The calling thread's CPU time (user, system) in microseconds (`sys`, which the fuzzing
/// build leaves out: zero there).
fn thread_cpu_us() -> (u64, u64) {
    #[cfg(not(fuzzing))]
    return crate::sys::thread_cpu_us();
    #[cfg(fuzzing)]
    return (0, 0);
}

/// The keys of mod_wsgi's `request_finished` event that mod_rwsgi measures (seconds as floats,
/// times as epoch seconds).
fn finished_event<'py>(
    py: Python<'py>,
    e: &crate::request::metrics::Ended,
    stamps: crate::request::metrics::Stamps,
    finish_us: i64,
) -> PyResult<Bound<'py, PyDict>> {
    let secs = |us: u64| us as f64 / 1e6;
    let d = PyDict::new(py);
    d.set_item("input_length", e.input_bytes)?;
    d.set_item("input_time", secs(e.input_read_us))?;
    d.set_item("output_length", e.output_bytes)?;
    d.set_item("output_writes", e.output_writes)?;
    d.set_item("output_time", secs(e.output_write_us))?;
    d.set_item("application_finish", finish_us as f64 / 1e6)?;
    let app_us = u64::try_from(finish_us - stamps.application_start).unwrap_or(0);
    d.set_item("application_time", secs(app_us))?;
    d.set_item("status", e.status)?;
    d.set_item("cpu_user_time", secs(e.cpu_user_us))?;
    d.set_item("cpu_system_time", secs(e.cpu_system_us))?;
    d.set_item("cpu_time", secs(e.cpu_user_us + e.cpu_system_us))?;
    Ok(d)
}

#[cfg(test)]
#[path = "adapter_tests.rs"]
mod adapter_tests;

#[cfg(test)]
mod tests {
    use super::Level;

    #[test]
    fn python_levels_map_to_apache_levels() {
        let cases = [
            (50, Level::Critical),
            (60, Level::Critical),
            (40, Level::Error),
            (45, Level::Error),
            (30, Level::Warning),
            (20, Level::Info),
            (25, Level::Info),
            (10, Level::Debug),
            (5, Level::Debug),
            (0, Level::Debug),
            (-1, Level::Debug),
        ];
        for (levelno, want) in cases {
            assert_eq!(Level::from_python(levelno), want, "levelno {levelno}");
        }
    }
}
