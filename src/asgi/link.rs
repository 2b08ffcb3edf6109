//! `Link`: one ASGI request's connection to the httpd child, as the event loop uses it (the
//! socket non-blocking, frames decoded and encoded here, written when the socket has room),
//! and its hand-back when the request is done (`Done`). Runs on an ASGI event-loop thread of a
//! daemon process.
#![forbid(unsafe_code)]

use std::sync::Mutex;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::daemon::conn::Conn;
use crate::protocol::{self, Frame};
use crate::wsgi::headers;

/// What happens to the connection when its request is done: `Some` when it can carry the
/// next request (given back to the daemon's idle connections), `None` when it is closed.
pub type Done = Box<dyn FnOnce(Option<Conn>) + Send>;

struct State {
    conn: Option<Conn>,
    done: Option<Done>,
}

/// A request's connection, owned by the event loop until `finish`.
#[pyclass(frozen, module = "mod_rwsgi", name = "Link")]
pub struct Link {
    state: Mutex<State>,
    fd: i32,
}

/// Kinds `read` reports (the frame kind bytes).
pub const BODY: u8 = protocol::kind::BODY;
pub const BODY_END: u8 = protocol::kind::BODY_END;
pub const ABORT: u8 = protocol::kind::ABORT;

fn os_error(e: std::io::Error) -> PyErr {
    PyOSError::new_err(e.to_string())
}

fn closed() -> PyErr {
    PyOSError::new_err("the connection to the httpd child is closed")
}

impl Link {
    /// Takes `conn` over for an event loop (non-blocking from now on).
    pub fn new(mut conn: Conn, done: Done) -> std::io::Result<Link> {
        conn.set_nonblocking(true)?;
        Ok(Link {
            fd: conn.fd(),
            state: Mutex::new(State {
                conn: Some(conn),
                done: Some(done),
            }),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Conn) -> std::io::Result<R>) -> PyResult<R> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let c = s.conn.as_mut().ok_or_else(closed)?;
        f(c).map_err(os_error)
    }

    fn queue(&self, f: &Frame) -> PyResult<()> {
        self.with(|c| c.queue(f))
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

    /// The frames that have arrived, as `(kind, bytes or None)` tuples; `None` when the httpd
    /// child closed the connection (it went away with its client) or broke the protocol.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let list = PyList::empty(py);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = s.conn.as_mut() else {
            return Ok(None);
        };
        loop {
            match c.try_recv() {
                Ok(Some(Frame::Body(data))) => {
                    list.append((BODY, PyBytes::new(py, &data)))?;
                }
                Ok(Some(Frame::BodyEnd)) => list.append((BODY_END, py.None()))?,
                Ok(Some(Frame::Abort)) => list.append((ABORT, py.None()))?,
                Ok(Some(_)) | Err(_) => return Ok(None),
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
        py.detach(|| {
            self.with(|c| {
                // A 21-byte frame into a drained socket: blocking for it is at most a moment.
                c.set_nonblocking(false)?;
                let r = c.send_with_fd(
                    &Frame::SendFile { offset: 0, len },
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                );
                c.set_nonblocking(true)?;
                r
            })
        })?;
        Ok(len)
    }

    /// Ends the request: the connection goes back to the daemon for the next request when
    /// `reusable` (and nothing is left half-read or half-written), else it is closed.
    fn finish(&self, reusable: bool) {
        let (conn, done) = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (s.conn.take(), s.done.take())
        };
        let conn = conn
            .filter(|_| reusable)
            .and_then(|mut c| (c.set_nonblocking(false).is_ok() && c.reusable()).then_some(c));
        if let Some(done) = done {
            done(conn);
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // A request dropped without `finish` (its task vanished) still releases its claim.
        let s = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(done) = s.done.take() {
            done(None);
        }
    }
}
