//! `Link`: a connection from an httpd child's worker thread held by an ASGI event loop, from
//! the request a worker handed over until the connection closes or goes back to the workers:
//! the socket non-blocking, frames decoded and encoded here and written when the socket has
//! room; between requests the loop reads the next `Request` itself (`read`), checks it as a
//! worker would (`Host::admit`) and runs it, or hands the connection back to the workers with
//! it (a WSGI application's request). In an httpd child (embedded ASGI) the connection is one
//! end of a worker thread's socket pair to its child's loop. Runs on an ASGI event-loop thread
//! of a daemon process or an httpd child.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::daemon::conn::Conn;
use crate::protocol::{self, Frame};
use crate::request::Request;
use crate::wsgi::adapter::LogFn;
use crate::wsgi::headers;

/// What the checks before `Accepted` decided.
pub enum Admitted {
    /// `Accepted` was sent: the request runs now.
    Run,
    /// Refused (`Reject` sent, or the connection failed); `keep`: the connection can carry the
    /// next request.
    Refused { keep: bool },
}

/// What the daemon process does for the loops: the checks a request passes before it runs,
/// the counts a worker keeps, and taking a connection back.
pub trait Host: Send + Sync {
    /// Checks a request that arrived on a connection the loop holds, as a worker checks one
    /// (stopping, queue-timeout, a changed script, maximum-requests), and answers `Accepted`
    /// or `Reject` on `conn`.
    fn admit(&self, conn: &mut Conn, req: &Request<Vec<u8>>) -> Admitted;
    /// An ASGI request starts running (it was admitted, by a worker or the loop).
    fn started(&self);
    /// An ASGI request has ended (`counts`: as activity, for inactivity-timeout).
    fn finished(&self, counts: bool);
    /// The connection goes back to the workers, with the request already read from it when
    /// it is one the loop does not run.
    fn release(&self, token: u64, conn: Conn, pending: Option<Request<Vec<u8>>>);
    /// Whether a connection whose request ended is kept for the next request (not when the
    /// process is stopping).
    fn keeps_connections(&self) -> bool;
    /// The process's error log.
    fn log(&self) -> LogFn;
    /// `WSGICaseSensitivity` (script module names).
    fn case_sensitive(&self) -> bool;
}

struct State {
    conn: Option<Conn>,
    /// A request is running on the connection (else it is idle, waiting for the next).
    busy: bool,
    /// The running request counts as activity.
    counts: bool,
}

/// One event `read` reports: a kind and its data.
type Event<'py> = (u8, Bound<'py, PyAny>);

/// A connection held by an event loop.
#[pyclass(frozen, module = "mod_rwsgi", name = "Link")]
pub struct Link {
    state: Mutex<State>,
    fd: i32,
    token: u64,
    host: Arc<dyn Host>,
}

/// Kinds `read` reports: the frame kind bytes, and two of the loop's own.
pub const BODY: u8 = protocol::kind::BODY;
pub const BODY_END: u8 = protocol::kind::BODY_END;
pub const ABORT: u8 = protocol::kind::ABORT;
/// A WebSocket message part: `(text, fin, bytes)`; the client's close: `(code, reason)`.
pub const WS_MESSAGE: u8 = protocol::kind::WS_MESSAGE;
pub const WS_CLOSE: u8 = protocol::kind::WS_CLOSE;
/// A request to run: `(app, scope, has_body, body_length, request_id)`.
pub const REQUEST: u8 = protocol::kind::REQUEST;
/// The connection went back to the workers (or was closed): the loop forgets it.
pub const RELEASED: u8 = 0xff;

fn os_error(e: std::io::Error) -> PyErr {
    PyOSError::new_err(e.to_string())
}

fn closed() -> PyErr {
    PyOSError::new_err("the connection to the httpd child is closed")
}

impl Link {
    /// Takes `conn` over for an event loop (non-blocking from now on), with the request a
    /// worker admitted on it (`counts`: as activity), registered under `token` with the
    /// workers' idle connections.
    pub fn new(
        mut conn: Conn,
        host: Arc<dyn Host>,
        token: u64,
        counts: bool,
    ) -> std::io::Result<Link> {
        conn.set_nonblocking(true)?;
        host.started();
        Ok(Link {
            fd: conn.fd(),
            token,
            host,
            state: Mutex::new(State {
                conn: Some(conn),
                busy: true,
                counts,
            }),
        })
    }

    /// A `Request` read while idle (the connection taken out of the state meanwhile): runs
    /// here when it is for an ASGI application of this interpreter and passes the checks
    /// (the connection comes back with the event to report); else the connection goes to the
    /// workers with it, or stays idle after a refusal.
    fn next_request<'py>(
        &self,
        py: Python<'py>,
        mut conn: Conn,
        req: Request<Vec<u8>>,
    ) -> PyResult<(Option<Conn>, Option<Event<'py>>)> {
        let released = Some((RELEASED, py.None().into_bound(py)));
        let log = self.host.log();
        let app = match crate::python::main_interp() {
            // The loops run in the main interpreter.
            Some(it) if req.runs_in_main_interpreter() => crate::python::load_app(
                py,
                it,
                &req.script(),
                req.script_mtime(),
                req.script_reloading(),
                self.host.case_sensitive(),
                &req.callable_object(),
                &log,
            )
            .filter(|app| {
                super::call::kind_of(py, it, app, req.meta.interface, &log) == super::Kind::Asgi
            }),
            _ => None,
        };
        // Not an ASGI application of this interpreter (another group's, a WSGI one, or one
        // that does not load): a worker serves it, as if it had read it itself.
        let Some(app) = app else {
            let _ = conn.set_nonblocking(false);
            self.host.release(self.token, conn, Some(req));
            return Ok((None, released));
        };
        match self.host.admit(&mut conn, &req) {
            Admitted::Run => {}
            Admitted::Refused { keep: true } if self.host.keeps_connections() => {
                return Ok((Some(conn), None));
            }
            Admitted::Refused { .. } => return Ok((None, released)),
        }
        self.host.started();
        let parts = super::call::request_parts(py, &req, &app)?;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.busy = true;
        s.counts = req.counts_as_activity();
        drop(s);
        Ok((Some(conn), Some((REQUEST, parts))))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Conn) -> std::io::Result<R>) -> PyResult<R> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let c = s.conn.as_mut().ok_or_else(closed)?;
        f(c).map_err(os_error)
    }

    fn queue(&self, f: &Frame) -> PyResult<()> {
        self.with(|c| c.queue(f))
    }

    /// A `SendFile` frame with `fd` attached (the receiver gets its own descriptor).
    fn send_descriptor(&self, py: Python<'_>, fd: i32, offset: u64, len: u64) -> PyResult<()> {
        py.detach(|| {
            self.with(|c| {
                // A 21-byte frame into a drained socket: blocking for it is at most a moment.
                c.set_nonblocking(false)?;
                let r = c.send_with_fd(&Frame::SendFile { offset, len }, fd);
                c.set_nonblocking(true)?;
                r
            })
        })
    }
}

/// A header name or value as text (ASGI gives bytes; each byte is its latin-1 character).
fn latin1_text(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// Response headers an ASGI server drops instead of refusing (the spec: a server ignores
/// `transfer-encoding`; httpd frames the response itself).
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

#[pymethods]
impl Link {
    fn fileno(&self) -> i32 {
        self.fd
    }

    /// The frames that have arrived, as `(kind, data)` tuples (`BODY` with bytes, `BODY_END`,
    /// `ABORT`; between requests `REQUEST` with what to run, or `RELEASED`); `None` when the
    /// httpd child closed the connection (it went away with its client, or no longer needs
    /// it) or broke the protocol: the loop then forgets it (`close`).
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let list = PyList::empty(py);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let Some(c) = s.conn.as_mut() else {
                return Ok(None);
            };
            match c.try_recv() {
                Ok(Some(Frame::Body(data))) if s.busy => {
                    list.append((BODY, PyBytes::new(py, &data)))?;
                }
                Ok(Some(Frame::BodyEnd)) if s.busy => list.append((BODY_END, py.None()))?,
                Ok(Some(Frame::WsMessage { text, fin, data })) if s.busy => {
                    list.append((WS_MESSAGE, (text, fin, PyBytes::new(py, &data))))?;
                }
                Ok(Some(Frame::WsClose { code, reason })) if s.busy => {
                    list.append((WS_CLOSE, (code, String::from_utf8_lossy(&reason))))?;
                }
                // Between requests: the report of a client that went away crossed the end
                // of the response; nothing to do.
                Ok(Some(Frame::Abort)) => {
                    if s.busy {
                        list.append((ABORT, py.None()))?;
                    }
                }
                Ok(Some(Frame::Request { meta, env })) if !s.busy => {
                    let conn = s.conn.take().expect("checked above");
                    drop(s);
                    let (back, event) = self.next_request(py, conn, Request { env, meta })?;
                    if let Some(e) = event {
                        list.append(e)?;
                    }
                    s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    s.conn = back;
                    // Nothing else comes before the response (the child waits for it).
                    return Ok(Some(list));
                }
                Ok(Some(_)) | Err(_) => {
                    if !s.busy {
                        s.conn = None;
                    }
                    return Ok(None);
                }
                Ok(None) => return Ok(Some(list)),
            }
        }
    }

    /// Asks the httpd child for up to `max` bytes of the request body.
    fn read_body(&self, max: u32) -> PyResult<()> {
        self.queue(&Frame::ReadBody { max })
    }

    /// Asks the httpd child to report its client going away (`Abort`) until the response ends.
    fn watch(&self) -> PyResult<()> {
        self.queue(&Frame::Watch)
    }

    /// Queues the response head: `headers` as the application gave them (pairs of bytes);
    /// `length`, when the whole body is known, becomes Content-Length unless the application
    /// set one. Raises `ValueError` for what httpd must not send.
    #[pyo3(signature = (status, reason, headers, length=None))]
    fn head(
        &self,
        status: u16,
        reason: &str,
        headers: &Bound<'_, PyAny>,
        length: Option<u64>,
    ) -> PyResult<()> {
        let mut list: Vec<(String, String)> = Vec::new();
        for item in headers.try_iter()? {
            let item = item?;
            let pair = item.cast::<PyTuple>().map(|t| t.as_any().clone()).or_else(
                |_| -> PyResult<Bound<'_, PyAny>> { Ok(item.cast::<PyList>()?.as_any().clone()) },
            );
            let pair = pair.map_err(|_| {
                PyValueError::new_err("ASGI: each response header must be a [name, value] pair")
            })?;
            if pair.len()? != 2 {
                return Err(PyValueError::new_err(
                    "ASGI: each response header must be a [name, value] pair",
                ));
            }
            let name: Vec<u8> = pair
                .get_item(0)?
                .extract()
                .map_err(|_| PyValueError::new_err("ASGI: response header names must be bytes"))?;
            let value: Vec<u8> = pair
                .get_item(1)?
                .extract()
                .map_err(|_| PyValueError::new_err("ASGI: response header values must be bytes"))?;
            let name = latin1_text(&name);
            if DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d)) {
                continue;
            }
            list.push((name, latin1_text(&value)));
        }
        if let Some(n) = length
            && !list
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            list.push(("content-length".into(), n.to_string()));
        }
        let status_line = format!("{status} {reason}");
        let head = headers::validate(&status_line, list)
            .map_err(|e| PyValueError::new_err(format!("ASGI: {e}")))?;
        self.queue(&Frame::Head {
            status: head.status,
            reason: reason.chars().map(|c| c as u32 as u8).collect(),
            headers: head
                .headers
                .into_iter()
                .map(|(n, v)| (n.into_bytes(), v.chars().map(|c| c as u32 as u8).collect()))
                .collect(),
        })
    }

    /// Queues the acceptance of a WebSocket: the subprotocol (`None`: none) and the
    /// application's extra headers (pairs of bytes).
    #[pyo3(signature = (subprotocol=None, headers=None))]
    fn ws_accept(
        &self,
        subprotocol: Option<&str>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let mut list = Vec::new();
        if let Some(h) = headers {
            for item in h.try_iter()? {
                let item = item?;
                let (name, value): (Vec<u8>, Vec<u8>) = item.extract().map_err(|_| {
                    PyValueError::new_err(
                        "ASGI: websocket.accept headers must be [name, value] bytes pairs",
                    )
                })?;
                let (n, v) = (latin1_text(&name), latin1_text(&value));
                headers::check_header(&n, &v)
                    .map_err(|e| PyValueError::new_err(format!("ASGI: {e}")))?;
                if n.eq_ignore_ascii_case("sec-websocket-protocol") {
                    return Err(PyValueError::new_err(
                        "ASGI: websocket.accept headers must not set sec-websocket-protocol (use subprotocol)",
                    ));
                }
                list.push((name, value));
            }
        }
        self.queue(&Frame::WsAccept {
            subprotocol: subprotocol.unwrap_or("").as_bytes().to_vec(),
            headers: list,
        })
    }

    /// Queues a WebSocket message (`text`: UTF-8 text, else bytes), in parts of at most
    /// `MAX_CHUNK` bytes.
    fn ws_message(&self, data: &[u8], text: bool) -> PyResult<()> {
        self.with(|c| {
            for f in protocol::ws_message_frames(text, data) {
                c.queue(&f)?;
            }
            Ok(())
        })
    }

    /// Queues the application's close of a WebSocket.
    fn ws_close(&self, code: u16, reason: &str) -> PyResult<()> {
        if !crate::websocket::frame::valid_close_code(code) {
            return Err(PyValueError::new_err(format!(
                "ASGI: websocket.close code {code} may not be sent (1000-1003, 1007-1014, 3000-4999)"
            )));
        }
        let mut end = reason.len().min(protocol::MAX_WS_CLOSE - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.queue(&Frame::WsClose {
            code,
            reason: reason.as_bytes()[..end].to_vec(),
        })
    }

    /// Queues response-body bytes.
    fn chunk(&self, data: &[u8]) -> PyResult<()> {
        self.with(|c| {
            for piece in data.chunks(protocol::MAX_CHUNK) {
                c.queue_chunk(piece)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            }
            Ok(())
        })
    }

    /// Queues the end of the response.
    fn end(&self) -> PyResult<()> {
        self.queue(&Frame::End)
    }

    /// Queues a failure: `code` 500 before the head (the httpd child answers 500), 0 after it
    /// (the response is aborted).
    fn fail(&self, code: u16, message: &str) -> PyResult<()> {
        let mut m = message.as_bytes().to_vec();
        m.truncate(1024);
        self.queue(&Frame::Fail { code, message: m })
    }

    /// Writes what is queued as far as the socket takes it: true when all is written.
    fn flush(&self) -> PyResult<bool> {
        self.with(|c| c.try_flush())
    }

    /// Sends the file at `path` (opened with this process's rights) for the httpd child to
    /// send to the client itself: its descriptor travels with a `SendFile` frame. Call with
    /// nothing queued (after a complete `flush`).
    fn send_file(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<u64> {
        let file = std::fs::File::open(&path).map_err(os_error)?;
        let meta = file.metadata().map_err(os_error)?;
        if !meta.is_file() {
            return Err(PyValueError::new_err(format!(
                "ASGI: http.response.pathsend: '{}' is not a regular file",
                path.display()
            )));
        }
        let len = meta.len();
        self.send_descriptor(py, std::os::fd::AsRawFd::as_raw_fd(&file), 0, len)?;
        Ok(len)
    }

    /// `http.response.zerocopysend`: bytes `offset..offset + count` of the application's open
    /// regular file `fd`, sent by the httpd child. The file is opened again for it (through
    /// `/proc/self/fd`): a passed descriptor shares its file offset, which the child's reads
    /// would move under the application. Call with nothing queued.
    fn send_fd(&self, py: Python<'_>, fd: i32, offset: u64, count: u64) -> PyResult<()> {
        let own = std::fs::File::open(format!("/proc/self/fd/{fd}")).map_err(|e| {
            PyOSError::new_err(format!(
                "ASGI: http.response.zerocopysend: cannot open the file again: {e}"
            ))
        })?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&own);
        let size = crate::sys::regular_file_size(fd).ok_or_else(|| {
            PyValueError::new_err(
                "ASGI: http.response.zerocopysend: 'file' is not an open regular file",
            )
        })?;
        if offset.checked_add(count).is_none_or(|end| end > size) {
            return Err(PyValueError::new_err(format!(
                "ASGI: http.response.zerocopysend: bytes {offset}..+{count} are beyond the \
                 file's {size}"
            )));
        }
        self.send_descriptor(py, fd, offset, count)
    }

    /// Ends the running request (its counts), and says whether the connection stays with
    /// the loop for the next one (`reusable` and nothing half-read or half-written, and the
    /// process is not stopping); if not, it is closed.
    fn done(&self, reusable: bool) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !s.busy {
            return s.conn.is_some();
        }
        s.busy = false;
        let counts = s.counts;
        let keep = reusable
            && self.host.keeps_connections()
            && s.conn.as_ref().is_some_and(|c| c.reusable());
        match s.conn.as_mut() {
            Some(c) if keep => c.trim_idle(),
            _ => s.conn = None,
        }
        drop(s);
        self.host.finished(counts);
        keep
    }

    /// Closes the connection (the loop forgets it); a running request is ended first.
    fn close(&self) {
        self.done(false);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.conn = None;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // A request whose link vanished without `done` (its task gone) still ends its count.
        let s = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if s.busy {
            s.busy = false;
            self.host.finished(s.counts);
        }
    }
}
