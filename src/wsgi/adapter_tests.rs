//! Unit tests (cargo test process) of the WSGI adapter: a real CPython, started once in the test
//! process, runs small applications through `adapter::run` with a fake request body
//! (`FakeBody`) and a fake response (`FakeSink`) that records what httpd would have been told.
//! No httpd is involved; tests/test_input.py, test_response.py and test_badapps.py check the
//! same rules end to end.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use crate::wsgi::front::Kit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::{BodySource, Input, Level, Log, LogFn, Outcome, RequestIo, ResponseSink, lock};
use crate::wsgi::headers::Head;

// ------------------------------------------------------------------------------------------
// The interpreter

static PYTHON: Once = Once::new();

/// Runs `f` attached to the test process's interpreter, starting it on first use. Tests run on
/// several threads; each attaches in turn.
pub(crate) fn py_test<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    PYTHON.call_once(Python::initialize);
    Python::attach(f)
}

/// Strips the indentation common to every non-blank line, so Python sources can be indented
/// with the Rust around them.
fn dedent(src: &str) -> String {
    let indent = src
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for l in src.lines() {
        out.push_str(if l.trim().is_empty() {
            ""
        } else {
            &l[indent..]
        });
        out.push('\n');
    }
    out
}

fn cstring(src: &str) -> CString {
    CString::new(src).expect("Python source without NUL")
}

// ------------------------------------------------------------------------------------------
// Fakes

/// A request body held in memory, delivered at most `piece` bytes per read; with `fail_at`,
/// every read once that many bytes have been delivered fails (a client reset mid-body).
struct FakeBody {
    data: Vec<u8>,
    pos: usize,
    piece: usize,
    fail_at: Option<usize>,
    /// Set when the adapter lets go of the source.
    dropped: Arc<AtomicBool>,
}

impl BodySource for FakeBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut end = self.data.len();
        if let Some(at) = self.fail_at {
            if self.pos >= at {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "fake reset"));
            }
            end = end.min(at);
        }
        let n = buf.len().min(self.piece).min(end - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for FakeBody {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// One thing the adapter told the response.
#[derive(Clone, PartialEq, Eq)]
enum Event {
    Head(Head),
    Write(Vec<u8>, bool),
    /// `data`: what the region holds, read back through /proc/self/fd.
    SendFile {
        fd: RawFd,
        offset: u64,
        len: u64,
        data: Vec<u8>,
    },
    Finish(bool),
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Head(h) => write!(f, "Head({h:?})"),
            Event::Write(d, flush) => write!(f, "Write(b\"{}\", flush={flush})", d.escape_ascii()),
            Event::SendFile {
                fd,
                offset,
                len,
                data,
            } => write!(
                f,
                "SendFile(fd={fd}, offset={offset}, len={len}, {} bytes)",
                data.len()
            ),
            Event::Finish(abort) => write!(f, "Finish(abort={abort})"),
        }
    }
}

fn write(data: &[u8], flush: bool) -> Event {
    Event::Write(data.to_vec(), flush)
}

/// A head as `headers::validate` builds it.
fn head(status_line: &str, headers: &[(&str, &str)], content_length: Option<u64>) -> Event {
    Event::Head(Head {
        status: status_line[..3].parse().expect("a status code"),
        status_line: status_line.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        content_length,
    })
}

/// A response that records every call; with `fail_after`, writes and file sends after that
/// many successful ones fail (the client went away).
struct FakeSink {
    events: Arc<Mutex<Vec<Event>>>,
    fail_after: Option<usize>,
    sent: usize,
    /// What `buffers` answers (whether the adapter keeps the GIL around writes).
    buffering: bool,
}

impl FakeSink {
    fn check_client(&mut self) -> io::Result<()> {
        if self.fail_after.is_some_and(|n| self.sent >= n) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "fake client gone",
            ));
        }
        self.sent += 1;
        Ok(())
    }
}

impl ResponseSink for FakeSink {
    fn set_head(&mut self, head: &Head) {
        lock(&self.events).push(Event::Head(head.clone()));
    }

    fn write(&mut self, data: &[u8], flush: bool) -> io::Result<()> {
        self.check_client()?;
        lock(&self.events).push(Event::Write(data.to_vec(), flush));
        Ok(())
    }

    fn buffers(&self, _len: usize, _flush: bool) -> bool {
        self.buffering
    }

    fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
        self.check_client()?;
        // A new open file description: the Python file object's position is not disturbed.
        let mut f = fs::File::open(format!("/proc/self/fd/{fd}"))?;
        f.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::new();
        f.take(len).read_to_end(&mut data)?;
        lock(&self.events).push(Event::SendFile {
            fd,
            offset,
            len,
            data,
        });
        Ok(())
    }

    fn finish(&mut self, abort: bool) -> io::Result<()> {
        lock(&self.events).push(Event::Finish(abort));
        Ok(())
    }
}

type Lines = Arc<Mutex<Vec<(Level, String)>>>;

/// A log function that keeps its lines.
fn capture() -> (LogFn, Lines) {
    let lines: Lines = Arc::default();
    let keep = Arc::clone(&lines);
    let f: LogFn = Arc::new(move |level, line| lock(&keep).push((level, line.to_string())));
    (f, lines)
}

/// A file under the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(data: &[u8]) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "rwsgi-adapter-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&path, data).expect("write a temporary file");
        TempFile(path)
    }

    fn path(&self) -> String {
        self.0.to_str().expect("a UTF-8 temporary path").to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

// ------------------------------------------------------------------------------------------
// Running an application

/// One request: the application's Python source (it defines `app`) and what it is served with.
struct Req {
    source: String,
    body: Vec<u8>,
    piece: usize,
    body_fail_at: Option<usize>,
    content_length: Option<u64>,
    head_request: bool,
    stream_flush: bool,
    sink_fail_after: Option<usize>,
    sink_buffers: bool,
    /// Extra str globals for the source.
    vars: Vec<(&'static str, String)>,
}

impl Req {
    fn new(source: &str) -> Req {
        Req {
            source: dedent(source),
            body: Vec::new(),
            piece: usize::MAX,
            body_fail_at: None,
            content_length: None,
            head_request: false,
            stream_flush: true,
            sink_fail_after: None,
            sink_buffers: false,
            vars: Vec::new(),
        }
    }

    /// A body delivered `piece` bytes at a time, with its Content-Length.
    fn body(mut self, body: &[u8], piece: usize) -> Req {
        self.body = body.to_vec();
        self.piece = piece.max(1);
        self.content_length = Some(body.len() as u64);
        self
    }

    fn content_length(mut self, cl: Option<u64>) -> Req {
        self.content_length = cl;
        self
    }

    fn body_fails_at(mut self, at: usize) -> Req {
        self.body_fail_at = Some(at);
        self
    }

    fn head_request(mut self) -> Req {
        self.head_request = true;
        self
    }

    fn stream_flush(mut self, on: bool) -> Req {
        self.stream_flush = on;
        self
    }

    fn sink_fails_after(mut self, writes: usize) -> Req {
        self.sink_fail_after = Some(writes);
        self
    }

    fn sink_buffers(mut self) -> Req {
        self.sink_buffers = true;
        self
    }

    fn var(mut self, name: &'static str, value: &str) -> Req {
        self.vars.push((name, value.to_string()));
        self
    }

    /// The environ both callers build (request.rs, daemon/mod.rs), minus the mod_wsgi.* keys.
    fn environ<'py>(
        &self,
        py: Python<'py>,
        kit: &Kit,
        input: Bound<'py, PyAny>,
        errors: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let method = if self.head_request {
            "HEAD"
        } else if self.content_length.is_some() {
            "POST"
        } else {
            "GET"
        };
        for (k, v) in [
            ("REQUEST_METHOD", method),
            ("SCRIPT_NAME", ""),
            ("PATH_INFO", "/"),
            ("QUERY_STRING", ""),
            ("SERVER_NAME", "localhost"),
            ("SERVER_PORT", "80"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
        ] {
            d.set_item(k, v)?;
        }
        if let Some(cl) = self.content_length {
            d.set_item("CONTENT_LENGTH", cl.to_string())?;
        }
        d.set_item("wsgi.version", (1, 0))?;
        d.set_item("wsgi.multithread", true)?;
        d.set_item("wsgi.multiprocess", false)?;
        d.set_item("wsgi.run_once", false)?;
        d.set_item("wsgi.url_scheme", "http")?;
        d.set_item("wsgi.input", input)?;
        d.set_item("wsgi.input_terminated", true)?;
        d.set_item("wsgi.errors", errors)?;
        d.set_item("wsgi.file_wrapper", kit.file_wrapper(py))?;
        Ok(d)
    }

    /// Runs the request with the main interpreter's objects (mod_rwsgi's own classes) and
    /// again with a sub-interpreter's (the bootstrap's shim classes over the same Rust
    /// objects): the client must see the same in both, and the same RW lines must be logged.
    /// Returns the main interpreter's run.
    fn run(self, py: Python<'_>) -> Ran<'_> {
        let boot = PyModule::from_code(
            py,
            &cstring(include_str!("../python/bootstrap.py")),
            c"mod_rwsgi/bootstrap.py",
            c"_mod_rwsgi_bootstrap_test",
        )
        .expect("bootstrap.py runs");
        let shim = Kit::sub(py, &boot).expect("the bootstrap defines the shim classes");
        let sub = self.run_with(py, &shim);
        let main = self.run_with(py, &Kit::main(py));
        // File descriptors differ between the runs (each opens its own file).
        let seen = |r: &Ran<'_>| {
            let events = format!("{:?}", r.events);
            let mut out = String::new();
            for (i, part) in events.split("fd=").enumerate() {
                if i > 0 {
                    out.push_str("fd=_");
                    out.push_str(part.trim_start_matches(|c: char| c.is_ascii_digit()));
                } else {
                    out.push_str(part);
                }
            }
            (format!("{:?}", r.outcome), r.finished, out)
        };
        assert_eq!(
            seen(&sub),
            seen(&main),
            "the sub-interpreter objects answered differently"
        );
        let rw = |r: &Ran<'_>| {
            r.log_lines()
                .into_iter()
                .filter(|l| l.starts_with("RW"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rw(&sub),
            rw(&main),
            "the sub-interpreter objects logged differently"
        );
        main
    }

    fn run_with<'py>(&self, py: Python<'py>, kit: &Kit) -> Ran<'py> {
        let g = PyDict::new(py);
        g.set_item("BODY", PyBytes::new(py, &self.body)).unwrap();
        for (k, v) in &self.vars {
            g.set_item(*k, v).unwrap();
        }
        if let Err(e) = py.run(&cstring(&self.source), Some(&g), None) {
            panic!(
                "the test application does not compile: {e}\n{}",
                self.source
            );
        }
        let app = g.get_item("app").unwrap().expect("the source defines app");

        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let (log, log_lines) = capture();
        let (fallback, fallback_lines) = capture();
        let source_dropped = Arc::new(AtomicBool::new(false));
        let source = FakeBody {
            data: self.body.clone(),
            pos: 0,
            piece: self.piece,
            fail_at: self.body_fail_at,
            dropped: Arc::clone(&source_dropped),
        };
        let (input_obj, input) = kit
            .input(py, Input::new(Box::new(source), self.content_length))
            .unwrap();
        let (errors_obj, errors) = kit
            .log(py, Log::new(Some(Arc::clone(&log)), fallback, Level::Error))
            .unwrap();
        let environ = self.environ(py, kit, input_obj, errors_obj).unwrap();
        let sink = FakeSink {
            events: Arc::clone(&events),
            fail_after: self.sink_fail_after,
            sent: 0,
            buffering: self.sink_buffers,
        };
        let io = RequestIo {
            sink: Box::new(sink),
            input,
            errors,
            log,
            script: "test.wsgi".to_string(),
            stream_flush: self.stream_flush,
            head_request: self.head_request,
            stamps: Default::default(),
            events: None,
        };
        let (outcome, finish) = super::run(py, kit, &app, environ, io);
        let finished = finish.is_some();
        if let Some(f) = finish {
            py.detach(|| f.run());
        }
        let events = lock(&events).clone();
        Ran {
            outcome,
            finished,
            events,
            log: log_lines,
            fallback: fallback_lines,
            source_dropped,
            g,
        }
    }
}

/// What a request did.
struct Ran<'py> {
    outcome: Outcome,
    /// Whether `run` handed back a `Finish` (it does not for a 500 left to httpd).
    finished: bool,
    events: Vec<Event>,
    log: Lines,
    fallback: Lines,
    source_dropped: Arc<AtomicBool>,
    /// The application's globals.
    g: Bound<'py, PyDict>,
}

impl Ran<'_> {
    /// `str()` of a Python expression over the application's globals.
    fn eval(&self, expr: &str) -> String {
        let py = self.g.py();
        match py
            .eval(&cstring(expr), Some(&self.g), None)
            .and_then(|v| v.str())
        {
            Ok(s) => s.to_str().unwrap().to_string(),
            Err(e) => panic!("{expr}: {e}"),
        }
    }

    /// Runs more Python over the application's globals (after the request).
    fn exec(&self, src: &str) {
        let py = self.g.py();
        if let Err(e) = py.run(&cstring(&dedent(src)), Some(&self.g), None) {
            panic!("{e}\n{src}");
        }
    }

    /// The request log so far.
    fn log(&self) -> Vec<(Level, String)> {
        lock(&self.log).clone()
    }

    fn log_lines(&self) -> Vec<String> {
        self.log().into_iter().map(|(_, l)| l).collect()
    }

    fn fallback(&self) -> Vec<(Level, String)> {
        lock(&self.fallback).clone()
    }

    /// Checks that the log is exactly one exception report: `first`, the traceback, `last`.
    fn assert_traceback(&self, first: &str, last: &str) {
        let log = self.log();
        assert!(log.len() >= 4, "{log:#?}");
        assert_eq!(log[0], (Level::Error, first.to_string()), "{log:#?}");
        assert_eq!(
            log[1],
            (
                Level::Error,
                "Traceback (most recent call last):".to_string()
            ),
            "{log:#?}"
        );
        assert_eq!(
            log[log.len() - 1],
            (Level::Error, last.to_string()),
            "{log:#?}"
        );
        assert!(log.iter().all(|(l, _)| *l == Level::Error), "{log:#?}");
        assert_eq!(
            log.iter().filter(|(_, l)| l.contains("RW00")).count(),
            1,
            "one coded line per request: {log:#?}"
        );
    }
}

/// A 500 left to httpd: nothing reached the response, no `Finish`.
fn assert_server_error(ran: &Ran<'_>) {
    assert_eq!(ran.outcome, Outcome::ServerError);
    assert!(!ran.finished);
    assert_eq!(ran.events, vec![]);
}

// ------------------------------------------------------------------------------------------
// wsgi.input

const LINES: &[u8] = b"line one\nline two\nthird line without newline";

/// An application that runs `reads` (statements over `inp`, appending to `parts`), then
/// answers 200 `ok`.
fn input_app(reads: &str) -> String {
    let mut src = String::from(
        "parts = []\nkeep = {}\ndef app(environ, start_response):\n    inp = environ['wsgi.input']\n",
    );
    for l in dedent(reads).lines() {
        src.push_str("    ");
        src.push_str(l);
        src.push('\n');
    }
    src.push_str("    start_response('200 OK', [])\n    return [b'ok']\n");
    src
}

/// Serves `body` in pieces of `piece` bytes to `reads`; checks the request itself went well.
fn read_body<'py>(py: Python<'py>, req: Req) -> Ran<'py> {
    let ran = req.run(py);
    assert_eq!(ran.outcome, Outcome::Done, "{:#?}", ran.log());
    assert_eq!(
        ran.events,
        vec![
            head("200 OK", &[], None),
            write(b"ok", false),
            Event::Finish(false)
        ]
    );
    assert_eq!(ran.log(), vec![]);
    ran
}

#[test]
fn input_read_returns_the_whole_body_then_empty() {
    py_test(|py| {
        let src = input_app("parts.append(inp.read())\nparts.append(inp.read())");
        let ran = read_body(py, Req::new(&src).body(LINES, 3));
        assert_eq!(
            ran.eval("parts"),
            r"[b'line one\nline two\nthird line without newline', b'']"
        );
    });
}

#[test]
fn input_read_n_crosses_source_pieces() {
    py_test(|py| {
        let src = input_app(
            "
            while True:
                p = inp.read(4)
                parts.append(p)
                if not p:
                    break
            ",
        );
        // Pieces of 3 bytes: every read(4) needs two reads from the source.
        let ran = read_body(py, Req::new(&src).body(LINES, 3));
        assert_eq!(
            ran.eval("[len(p) for p in parts]"),
            "[4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0]"
        );
        assert_eq!(ran.eval("b''.join(parts) == BODY"), "True");
    });
}

#[test]
fn input_read_zero_negative_and_none() {
    py_test(|py| {
        let src = input_app(
            "
            parts.append(inp.read(0))
            parts.append(inp.read(5))
            parts.append(inp.read(0))
            parts.append(inp.read(-1))
            parts.append(inp.read(None))
            parts.append(inp.read())
            parts.append(inp.read(-1))
            ",
        );
        let ran = read_body(py, Req::new(&src).body(LINES, 7));
        assert_eq!(
            ran.eval("parts"),
            r"[b'', b'line ', b'', b'one\nline two\nthird line without newline', b'', b'', b'']"
        );
    });
}

#[test]
fn input_readline_splits_lines_and_ends_empty() {
    py_test(|py| {
        let src = input_app("for _ in range(5):\n    parts.append(inp.readline())");
        let ran = read_body(py, Req::new(&src).body(LINES, 4));
        assert_eq!(
            ran.eval("parts"),
            r"[b'line one\n', b'line two\n', b'third line without newline', b'', b'']"
        );
        // readline(-1) and readline(None) are unlimited too.
        let src = input_app("parts.append(inp.readline(-1))\nparts.append(inp.readline(None))");
        let ran = read_body(py, Req::new(&src).body(LINES, 2));
        assert_eq!(ran.eval("parts"), r"[b'line one\n', b'line two\n']");
    });
}

#[test]
fn input_readline_size_limits_each_line() {
    py_test(|py| {
        let src = input_app(
            "
            parts.append(inp.readline(0))
            while True:
                p = inp.readline(5)
                parts.append(p)
                if not p:
                    break
            ",
        );
        let ran = read_body(py, Req::new(&src).body(LINES, 3));
        assert_eq!(
            ran.eval("parts"),
            r"[b'', b'line ', b'one\n', b'line ', b'two\n', b'third', b' line', b' with', b'out n', b'ewlin', b'e', b'']"
        );
    });
}

#[test]
fn input_readlines_with_and_without_hint() {
    py_test(|py| {
        // A hint stops after the line that reaches it (9 bytes < 10, then 18).
        let src = input_app("parts.append(inp.readlines(10))\nparts.append(inp.readlines())");
        let ran = read_body(py, Req::new(&src).body(LINES, 5));
        assert_eq!(
            ran.eval("parts"),
            r"[[b'line one\n', b'line two\n'], [b'third line without newline']]"
        );
        let src = input_app(
            "
            parts.append(inp.readlines(9))
            parts.append(inp.readlines(0))
            parts.append(inp.readlines())
            ",
        );
        let ran = read_body(py, Req::new(&src).body(LINES, 5));
        assert_eq!(
            ran.eval("parts"),
            r"[[b'line one\n'], [b'line two\n', b'third line without newline'], []]"
        );
    });
}

#[test]
fn input_iterates_by_line() {
    py_test(|py| {
        let src = input_app(
            "
            for line in inp:
                parts.append(line)
            parts.append(list(inp))
            parts.append(iter(inp) is inp)
            ",
        );
        let ran = read_body(py, Req::new(&src).body(LINES, 6));
        assert_eq!(
            ran.eval("parts"),
            r"[b'line one\n', b'line two\n', b'third line without newline', [], True]"
        );
    });
}

#[test]
fn input_mixed_reads_share_one_buffer() {
    py_test(|py| {
        let src = input_app(
            "
            parts.append(inp.read(2))
            parts.append(inp.readline())
            parts.append(inp.read())
            ",
        );
        let ran = read_body(py, Req::new(&src).body(LINES, 4));
        assert_eq!(
            ran.eval("parts"),
            r"[b'li', b'ne one\n', b'line two\nthird line without newline']"
        );
    });
}

#[test]
fn input_never_reads_past_content_length() {
    py_test(|py| {
        let src = input_app(
            "
            parts.append(inp.read(100))
            parts.append(inp.read(100))
            parts.append(inp.read())
            parts.append(inp.readline())
            parts.append(inp.readlines())
            ",
        );
        let ran = read_body(py, Req::new(&src).body(b"12345", 2));
        assert_eq!(ran.eval("parts"), "[b'12345', b'', b'', b'', []]");
    });
}

#[test]
fn input_body_shorter_than_content_length_ends_early() {
    py_test(|py| {
        // Buffered path (small body).
        let src = input_app("parts.append(inp.read())\nparts.append(inp.read(3))");
        let ran = read_body(
            py,
            Req::new(&src).body(b"12345", 2).content_length(Some(10)),
        );
        assert_eq!(ran.eval("parts"), "[b'12345', b'']");
        // Direct path (a large read fills one bytes object): the object is cut to what came.
        let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let src = input_app("parts.append(inp.read())\nparts.append(inp.read())");
        let ran = read_body(
            py,
            Req::new(&src).body(&big, 1000).content_length(Some(50_000)),
        );
        assert_eq!(ran.eval("[len(p) for p in parts]"), "[40000, 0]");
        assert_eq!(ran.eval("parts[0] == BODY"), "True");
    });
}

#[test]
fn input_large_reads_after_a_readline() {
    py_test(|py| {
        let mut big = b"first line\n".to_vec();
        big.extend((0..200_000u32).map(|i| (i % 251) as u8));
        let src = input_app(
            "
            parts.append(inp.readline())
            parts.append(inp.read(70000))
            parts.append(inp.read(1))
            parts.append(inp.read())
            parts.append(inp.read())
            ",
        );
        // Known length: the large reads take the direct path; unknown (chunked): the buffered.
        for cl in [Some(big.len() as u64), None] {
            let ran = read_body(py, Req::new(&src).body(&big, 4099).content_length(cl));
            assert_eq!(
                ran.eval("[len(p) for p in parts]"),
                "[11, 70000, 1, 129999, 0]",
                "Content-Length {cl:?}"
            );
            assert_eq!(
                ran.eval("b''.join(parts) == BODY"),
                "True",
                "Content-Length {cl:?}"
            );
            assert_eq!(ran.eval("{type(p) for p in parts}"), "{<class 'bytes'>}");
        }
    });
}

#[test]
fn input_chunked_body_reads_to_the_end() {
    py_test(|py| {
        let src = input_app("parts.extend(inp.readlines())\nparts.append(inp.read())");
        let ran = read_body(py, Req::new(&src).body(LINES, 5).content_length(None));
        assert_eq!(
            ran.eval("parts"),
            r"[b'line one\n', b'line two\n', b'third line without newline', b'']"
        );
    });
}

#[test]
fn input_source_error_raises_oserror() {
    py_test(|py| {
        let big = vec![b'x'; 100_000];
        // The source fails once 5 bytes (small body, buffered reads) or 50,000 bytes (large
        // body, direct reads) have come; every call below needs more than that.
        let cases: [(&str, &[u8], usize); 7] = [
            ("inp.read()", LINES, 5),
            ("inp.read(100)", LINES, 5),
            ("inp.readline()", LINES, 5),
            ("inp.readlines()", LINES, 5),
            ("next(iter(inp))", LINES, 5),
            ("inp.read()", &big, 50_000),
            ("inp.read(60000)", &big, 50_000),
        ];
        for (call, body, fail_at) in cases {
            let src = input_app(&format!(
                "try:\n    parts.append({call})\nexcept Exception as e:\n    \
                 parts.append((type(e).__name__, str(e), isinstance(e, IOError)))"
            ));
            let ran = read_body(py, Req::new(&src).body(body, 4096).body_fails_at(fail_at));
            assert_eq!(
                ran.eval("parts"),
                "[('OSError', 'request data read error: fake reset', True)]",
                "{call}"
            );
        }
        // What came before the failure is still served.
        let src = input_app("parts.append(inp.read(3))");
        let ran = read_body(py, Req::new(&src).body(LINES, 2).body_fails_at(5));
        assert_eq!(ran.eval("parts"), "[b'lin']");
    });
}

#[test]
fn input_uncaught_source_error_is_a_500() {
    py_test(|py| {
        let src = input_app("inp.read()");
        let ran = Req::new(&src).body(LINES, 3).body_fails_at(10).run(py);
        assert_server_error(&ran);
        ran.assert_traceback(
            "RW0007: exception occurred calling WSGI script 'test.wsgi'",
            "OSError: request data read error: fake reset",
        );
    });
}

#[test]
fn objects_refuse_use_after_the_request_ended() {
    py_test(|py| {
        let src = "
            keep = {}
            def app(environ, start_response):
                keep['input'] = environ['wsgi.input']
                keep['start_response'] = start_response
                keep['write'] = start_response('200 OK', [])
                keep['input'].read(2)
                return [b'ok']
        ";
        let ran = Req::new(src).body(LINES, 4).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert!(
            ran.source_dropped.load(Ordering::SeqCst),
            "the body source is let go at the end of the request"
        );
        ran.exec(
            "
            late = []
            for call in (lambda: keep['input'].read(), lambda: keep['input'].readline(),
                         lambda: keep['write'](b'late'),
                         lambda: keep['start_response']('200 OK', [])):
                try:
                    call()
                    late.append('no error')
                except Exception as e:
                    late.append(f'{type(e).__name__}: {e}')
            ",
        );
        let late: Vec<String> = ran.g.get_item("late").unwrap().unwrap().extract().unwrap();
        assert_eq!(
            late,
            [
                "ValueError: wsgi.input was used after the request it belongs to had ended",
                "ValueError: wsgi.input was used after the request it belongs to had ended",
                "RuntimeError: the response was used after its request had ended",
                "RuntimeError: start_response() was called after the request had ended",
            ]
        );
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(b"ok", false),
                Event::Finish(false)
            ]
        );
    });
}

// ------------------------------------------------------------------------------------------
// start_response and write()

/// The `errs` list an application filled with `"Type: message"` strings.
fn strings(ran: &Ran<'_>, name: &str) -> Vec<String> {
    ran.g.get_item(name).unwrap().unwrap().extract().unwrap()
}

#[test]
fn start_response_rejects_bad_status_lines() {
    py_test(|py| {
        let src = r"
            errs = []
            def app(environ, start_response):
                for status in ('200', 'OK 200', '20 OK', '999 Nope', '200 OK\r\nX-Injected: 1',
                               '200 \u20ac', b'200 OK', None):
                    try:
                        start_response(status, [])
                        errs.append('accepted')
                    except Exception as e:
                        errs.append(f'{type(e).__name__}: {e}')
                # A refused call leaves no head behind: this is a first call, not a second.
                start_response('200 OK', [])
                return [b'ok']
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        let shape = "it must be a three-digit code, a space and a reason phrase";
        assert_eq!(
            strings(&ran, "errs"),
            [
                format!("ValueError: invalid status '200': {shape}"),
                format!("ValueError: invalid status 'OK 200': {shape}"),
                format!("ValueError: invalid status '20 OK': {shape}"),
                "ValueError: invalid status code 999: it must be 100 to 599".to_string(),
                "ValueError: invalid status '200 OK\\r\\nX-Injected: 1': control or non-latin-1 \
                 characters"
                    .to_string(),
                "ValueError: invalid status '200 \\u{20ac}': control or non-latin-1 characters"
                    .to_string(),
                "TypeError: the status passed to start_response() must be a str".to_string(),
                "TypeError: the status passed to start_response() must be a str".to_string(),
            ]
        );
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(b"ok", false),
                Event::Finish(false)
            ]
        );
    });
}

#[test]
fn start_response_rejects_bad_headers() {
    py_test(|py| {
        let src = r"
            errs = []
            def app(environ, start_response):
                for headers in ([('X-Bad', 'caf\u20ac')], [('X-Bad', 'a\r\nX-Injected: 1')],
                                [('X-Bad', 'a\x00b')], [('X:Bad', '1')], [('X-Bad\n', '1')],
                                [('', '1')], [('Connection', 'close')],
                                [('Content-Length', 'abc')],
                                [('Content-Length', '1'), ('content-length', '2')],
                                [('X-Bad', b'1')], [(b'X-Bad', '1')], [('X-Bad', '1', '2')],
                                [['X-Bad', '1']], (('X-Bad', '1'),), None):
                    try:
                        start_response('200 OK', headers)
                        errs.append('accepted')
                    except Exception as e:
                        errs.append(f'{type(e).__name__}: {e}')
                start_response('200 OK', [('X-Good', 'caf\xe9\tok')])
                return [b'ok']
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        let name = "only token characters are allowed (no ':', spaces or control characters)";
        let tuple = "TypeError: each response header must be a (name, value) tuple";
        let list = "TypeError: response headers must be a list of (name, value) tuples";
        assert_eq!(
            strings(&ran, "errs"),
            [
                "ValueError: header 'X-Bad' has a character that is not latin-1 ('\u{20ac}'); \
                 encode it first"
                    .to_string(),
                "ValueError: header 'X-Bad' value contains CR, LF or another control character"
                    .to_string(),
                "ValueError: header 'X-Bad' value contains CR, LF or another control character"
                    .to_string(),
                format!("ValueError: invalid header name 'X:Bad': {name}"),
                format!("ValueError: invalid header name 'X-Bad\\n': {name}"),
                format!("ValueError: invalid header name '': {name}"),
                "ValueError: hop-by-hop header 'Connection' is not allowed from a WSGI application"
                    .to_string(),
                "ValueError: invalid Content-Length 'abc': it must be a number".to_string(),
                "ValueError: conflicting Content-Length headers".to_string(),
                "TypeError: response header names and values must be str".to_string(),
                "TypeError: response header names and values must be str".to_string(),
                tuple.to_string(),
                tuple.to_string(),
                list.to_string(),
                list.to_string(),
            ]
        );
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("X-Good", "caf\u{e9}\tok")], None),
                write(b"ok", false),
                Event::Finish(false)
            ]
        );
    });
}

#[test]
fn uncaught_bad_status_or_header_is_a_500() {
    py_test(|py| {
        let cases = [
            (
                "start_response('200', [])",
                "ValueError: invalid status '200': it must be a three-digit code, a space and a \
                 reason phrase",
            ),
            (
                r"start_response('200 OK', [('X-Bad', 'a\r\nX-Injected: 1')])",
                "ValueError: header 'X-Bad' value contains CR, LF or another control character",
            ),
        ];
        for (call, last) in cases {
            let src = format!("def app(environ, start_response):\n    {call}\n    return [b'x']\n");
            let ran = Req::new(&src).run(py);
            assert_server_error(&ran);
            ran.assert_traceback(
                "RW0007: exception occurred calling WSGI script 'test.wsgi'",
                last,
            );
        }
    });
}

#[test]
fn start_response_twice_without_exc_info_raises() {
    py_test(|py| {
        let src = "
            errs = []
            def app(environ, start_response):
                start_response('200 OK', [('X-First', '1')])
                for exc_info in ((), (None,)):
                    try:
                        start_response('201 Created', [('X-Second', '2')], *exc_info)
                        errs.append('accepted')
                    except RuntimeError as e:
                        errs.append(str(e))
                return [b'first head']
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            strings(&ran, "errs"),
            ["start_response() was called a second time without exc_info"; 2]
        );
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("X-First", "1")], None),
                write(b"first head", false),
                Event::Finish(false)
            ]
        );
    });
}

#[test]
fn exc_info_after_headers_sent_reraises_the_original() {
    py_test(|py| {
        let src = "
            import sys
            seen = []
            def app(environ, start_response):
                write = start_response('200 OK', [('X-First', '1')])
                write(b'first')
                try:
                    raise ValueError('boom-after-headers')
                except ValueError as e:
                    original = e
                    info = sys.exc_info()
                try:
                    start_response('500 Error', [('X-Second', '2')], info)
                except ValueError as e:
                    seen.append(e is original)
                    # The original traceback goes on (below the frame that re-raised it).
                    tb, chain = e.__traceback__, []
                    while tb is not None:
                        chain.append(tb)
                        tb = tb.tb_next
                    seen.append(any(t is info[2] for t in chain))
                    return [b';reraised:' + str(e).encode()]
                return [b';not reraised']
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(ran.eval("seen"), "[True, True]");
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("X-First", "1")], None),
                write(b"first", true),
                write(b";reraised:boom-after-headers", false),
                Event::Finish(false)
            ]
        );
        assert_eq!(ran.log(), vec![]);
    });
}

#[test]
fn exc_info_after_headers_sent_uncaught_aborts() {
    py_test(|py| {
        let src = "
            import sys
            def app(environ, start_response):
                start_response('200 OK', [])(b'partial')
                try:
                    raise ValueError('late-failure')
                except ValueError:
                    start_response('500 Error', [], sys.exc_info())
                return [b'never']
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Aborted);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(b"partial", true),
                Event::Finish(true)
            ]
        );
        ran.assert_traceback(
            "RW0007: exception occurred calling WSGI script 'test.wsgi'",
            "ValueError: late-failure",
        );
    });
}

#[test]
fn exc_info_before_anything_sent_replaces_the_head() {
    py_test(|py| {
        let src = "
            import sys
            def app(environ, start_response):
                start_response('200 OK', [('X-First', '1'), ('Content-Length', '100')])
                try:
                    raise ValueError('oops')
                except ValueError:
                    start_response('503 Replaced', [('X-Second', '2')], sys.exc_info())
                return [b'replaced-ok']
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        // The first head's Content-Length went with it.
        assert_eq!(
            ran.events,
            vec![
                head("503 Replaced", &[("X-Second", "2")], None),
                write(b"replaced-ok", false),
                Event::Finish(false)
            ]
        );
        assert_eq!(ran.log(), vec![]);
    });
}

#[test]
fn write_callable_bytes_precede_the_iterable() {
    py_test(|py| {
        let src = "
            errs = []
            def app(environ, start_response):
                write = start_response('200 OK', [('Content-Type', 'text/plain')])
                errs.append(write(b'hello '))
                for bad in ('str', bytearray(b'ba'), None):
                    try:
                        write(bad)
                    except TypeError as e:
                        errs.append(str(e))
                return [b'world', b'!']
        ";
        for buffering in [false, true] {
            let mut req = Req::new(src);
            if buffering {
                req = req.sink_buffers();
            }
            let ran = req.run(py);
            assert_eq!(ran.outcome, Outcome::Done);
            let bad = "write() takes bytes, not str or other types";
            assert_eq!(
                ran.eval("errs"),
                format!("[None, '{bad}', '{bad}', '{bad}']")
            );
            assert_eq!(
                ran.events,
                vec![
                    head("200 OK", &[("Content-Type", "text/plain")], None),
                    write(b"hello ", true),
                    write(b"world", false),
                    write(b"!", false),
                    Event::Finish(false)
                ],
                "sink buffers: {buffering}"
            );
        }
    });
}

#[test]
fn head_keeps_status_reason_and_header_order() {
    py_test(|py| {
        let src = r"
            def app(environ, start_response):
                start_response('299 Caf\u00e9 Custom', [
                    ('X-B', '2'), ('Set-Cookie', 'a=1'), ('x-a', '1'), ('Set-Cookie', 'b=2'),
                    ('Content-Length', ' 3 ')])
                return [b'abc']
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        let Event::Head(h) = &ran.events[0] else {
            panic!("{:?}", ran.events);
        };
        assert_eq!(h.status, 299);
        assert_eq!(h.status_line, "299 Caf\u{e9} Custom");
        assert_eq!(h.content_length, Some(3));
        assert_eq!(
            ran.events,
            vec![
                head(
                    "299 Caf\u{e9} Custom",
                    &[
                        ("X-B", "2"),
                        ("Set-Cookie", "a=1"),
                        ("x-a", "1"),
                        ("Set-Cookie", "b=2"),
                        ("Content-Length", " 3 ")
                    ],
                    Some(3)
                ),
                write(b"abc", false),
                Event::Finish(false)
            ]
        );
    });
}

// ------------------------------------------------------------------------------------------
// The response

/// A result class recording how the driver uses it in `events` (a global list).
const RECORDING_RESULT: &str = "
events = []
class Result:
    def __init__(self, items, fail=None):
        self.items, self.fail = items, fail
    def __iter__(self):
        events.append('iter')
        for item in self.items:
            events.append('next')
            yield item
        if self.fail:
            raise RuntimeError(self.fail)
        events.append('exhausted')
    def close(self):
        events.append('close')
";

/// An application returning `Result(items)` after `start_response(status, headers)`.
fn result_app(status_and_headers: &str, result: &str) -> String {
    format!(
        "{RECORDING_RESULT}\ndef app(environ, start_response):\n    \
         start_response({status_and_headers})\n    return {result}\n"
    )
}

#[test]
fn chunks_are_written_in_order_empty_ones_skipped() {
    py_test(|py| {
        for result in ["[b'a', b'', b'bc', b'd']", "(b'a', b'', b'bc', b'd')"] {
            let src = result_app("'200 OK', []", result);
            let ran = Req::new(&src).run(py);
            assert_eq!(ran.outcome, Outcome::Done);
            assert!(ran.finished);
            assert_eq!(
                ran.events,
                vec![
                    head("200 OK", &[], None),
                    write(b"a", false),
                    write(b"bc", false),
                    write(b"d", false),
                    Event::Finish(false)
                ],
                "{result}"
            );
            assert_eq!(ran.log(), vec![]);
        }
    });
}

#[test]
fn stream_flush_applies_to_iterables_not_lists() {
    py_test(|py| {
        let src = result_app("'200 OK', []", "Result([b'a', b'b'])");
        for flush in [true, false] {
            let ran = Req::new(&src).stream_flush(flush).run(py);
            assert_eq!(ran.outcome, Outcome::Done);
            assert_eq!(
                ran.events,
                vec![
                    head("200 OK", &[], None),
                    write(b"a", flush),
                    write(b"b", flush),
                    Event::Finish(false)
                ]
            );
        }
    });
}

#[test]
fn empty_iterable_sends_the_head_alone() {
    py_test(|py| {
        for result in ["[]", "Result([])", "Result([b'', b''])"] {
            let ran = Req::new(&result_app("'200 OK', [('X-A', '1')]", result)).run(py);
            assert_eq!(ran.outcome, Outcome::Done, "{result}");
            assert_eq!(
                ran.events,
                vec![head("200 OK", &[("X-A", "1")], None), Event::Finish(false)],
                "{result}"
            );
            assert_eq!(ran.log(), vec![]);
        }
    });
}

#[test]
fn non_bytes_item_is_a_500_before_any_output_and_an_abort_after() {
    py_test(|py| {
        let msg = "RW0008: WSGI script 'test.wsgi': the response iterable yielded <class 'str'>, \
                   but only bytes are allowed";
        let ran = Req::new(&result_app("'200 OK', []", "Result(['text', b'never'])")).run(py);
        assert_server_error(&ran);
        assert_eq!(ran.log(), vec![(Level::Error, msg.to_string())]);
        assert_eq!(ran.eval("events"), "['iter', 'next', 'close']");

        let ran = Req::new(&result_app(
            "'200 OK', []",
            "Result([b'first', 'text', b'x'])",
        ))
        .run(py);
        assert_eq!(ran.outcome, Outcome::Aborted);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(b"first", true),
                Event::Finish(true)
            ]
        );
        assert_eq!(ran.log(), vec![(Level::Error, msg.to_string())]);
        assert_eq!(ran.eval("events"), "['iter', 'next', 'next', 'close']");

        // Other non-bytes types are refused the same way.
        let ran = Req::new(&result_app("'200 OK', []", "[bytearray(b'ab')]")).run(py);
        assert_server_error(&ran);
        assert_eq!(
            ran.log_lines(),
            [
                "RW0008: WSGI script 'test.wsgi': the response iterable yielded <class \
              'bytearray'>, but only bytes are allowed"
            ]
        );
    });
}

#[test]
fn non_iterable_result_is_a_500() {
    py_test(|py| {
        for (result, shown) in [("None", "NoneType"), ("42", "int")] {
            let ran = Req::new(&result_app("'200 OK', []", result)).run(py);
            assert_server_error(&ran);
            assert_eq!(
                ran.log(),
                vec![(
                    Level::Error,
                    format!(
                        "RW0008: WSGI script 'test.wsgi': the application returned <class \
                         '{shown}'>, which is not an iterable of bytes"
                    )
                )]
            );
        }
    });
}

#[test]
fn missing_start_response_is_a_500() {
    py_test(|py| {
        let cases = [
            (
                "Result([])",
                "the application returned without calling start_response()",
                "['iter', 'exhausted', 'close']",
            ),
            (
                "Result([b'', b'data'])",
                "the response iterable yielded data before start_response() was called",
                "['iter', 'next', 'next', 'close']",
            ),
        ];
        for (result, msg, events) in cases {
            let src = format!(
                "{RECORDING_RESULT}\ndef app(environ, start_response):\n    return {result}\n"
            );
            let ran = Req::new(&src).run(py);
            assert_server_error(&ran);
            assert_eq!(
                ran.log(),
                vec![(
                    Level::Error,
                    format!("RW0008: WSGI script 'test.wsgi': {msg}")
                )]
            );
            assert_eq!(ran.eval("events"), events);
        }
    });
}

#[test]
fn bytes_past_content_length_are_dropped_and_logged() {
    py_test(|py| {
        let src = result_app(
            "'200 OK', [('Content-Length', '5')]",
            "Result([b'hel', b'lo world', b'!'])",
        );
        let ran = Req::new(&src).stream_flush(false).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Length", "5")], Some(5)),
                write(b"hel", false),
                write(b"lo", false),
                Event::Finish(false)
            ]
        );
        assert_eq!(
            ran.log(),
            vec![(
                Level::Warning,
                "RW0008: WSGI script 'test.wsgi' produced 7 bytes more than its Content-Length; \
                 they were not sent"
                    .to_string()
            )]
        );
        // The iterable is still consumed to its end and closed.
        assert_eq!(
            ran.eval("events"),
            "['iter', 'next', 'next', 'next', 'exhausted', 'close']"
        );
    });
}

#[test]
fn short_body_against_content_length_aborts_or_is_a_500() {
    py_test(|py| {
        let src = result_app(
            "'200 OK', [('Content-Length', '100')]",
            "Result([b'short'])",
        );
        let ran = Req::new(&src).run(py);
        assert_eq!(ran.outcome, Outcome::Aborted);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Length", "100")], Some(100)),
                write(b"short", true),
                Event::Finish(true)
            ]
        );
        assert_eq!(
            ran.log(),
            vec![(
                Level::Error,
                "RW0008: WSGI script 'test.wsgi' declared Content-Length 100 but sent only 5 \
                 bytes; the response was aborted"
                    .to_string()
            )]
        );
        assert_eq!(ran.eval("events[-1]"), "close");

        let src = result_app("'200 OK', [('Content-Length', '100')]", "Result([])");
        let ran = Req::new(&src).run(py);
        assert_server_error(&ran);
        assert_eq!(
            ran.log_lines(),
            [
                "RW0008: WSGI script 'test.wsgi' declared Content-Length 100 but sent only 0 \
              bytes; the response was replaced by a 500 error"
            ]
        );
    });
}

#[test]
fn bodiless_statuses_may_declare_a_length() {
    py_test(|py| {
        for status in ["304 Not Modified", "204 No Content", "101 Switching"] {
            let src = result_app(
                &format!("'{status}', [('Content-Length', '1234')]"),
                "Result([])",
            );
            let ran = Req::new(&src).run(py);
            assert_eq!(ran.outcome, Outcome::Done, "{status}");
            assert_eq!(
                ran.events,
                vec![
                    head(status, &[("Content-Length", "1234")], Some(1234)),
                    Event::Finish(false)
                ]
            );
            assert_eq!(ran.log(), vec![], "{status}");
        }
    });
}

#[test]
fn close_is_called_once_after_iteration() {
    py_test(|py| {
        let ran = Req::new(&result_app("'200 OK', []", "Result([b'a', b'b'])")).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            ran.eval("events"),
            "['iter', 'next', 'next', 'exhausted', 'close']"
        );
    });
}

#[test]
fn close_is_called_when_iteration_raises() {
    py_test(|py| {
        let src = result_app(
            "'200 OK', []",
            "Result([b'first-chunk;'], fail='boom-after-first-chunk')",
        );
        let ran = Req::new(&src).run(py);
        assert_eq!(ran.outcome, Outcome::Aborted);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(b"first-chunk;", true),
                Event::Finish(true)
            ]
        );
        assert_eq!(ran.eval("events"), "['iter', 'next', 'close']");
        ran.assert_traceback(
            "RW0007: exception occurred in the response iterable of WSGI script 'test.wsgi'",
            "RuntimeError: boom-after-first-chunk",
        );

        // Before any output: a 500, still closed.
        let src = result_app("'200 OK', []", "Result([b''], fail='boom-before-output')");
        let ran = Req::new(&src).run(py);
        assert_server_error(&ran);
        assert_eq!(ran.eval("events"), "['iter', 'next', 'close']");
        ran.assert_traceback(
            "RW0007: exception occurred in the response iterable of WSGI script 'test.wsgi'",
            "RuntimeError: boom-before-output",
        );
    });
}

#[test]
fn close_raising_is_logged_and_the_response_completes() {
    // mod_wsgi's behaviour: once the iterable is exhausted the response is the application's,
    // complete; an exception from close() only goes to the log.
    py_test(|py| {
        let src = "
            class Result(list):
                def close(self):
                    raise RuntimeError('boom-in-close')
            def app(environ, start_response):
                start_response('200 OK', [('Content-Length', 'LEN')])
                return Result(ITEMS)
        ";
        let ran = Req::new(
            &src.replace("ITEMS", "[b'body-before-close']")
                .replace("LEN", "17"),
        )
        .run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Length", "17")], Some(17)),
                write(b"body-before-close", false),
                Event::Finish(false)
            ]
        );
        ran.assert_traceback(
            "RW0007: exception occurred in close() of the result of WSGI script 'test.wsgi'",
            "RuntimeError: boom-in-close",
        );

        // An empty body: the head still goes out, with the status the application chose.
        let ran = Req::new(&src.replace("ITEMS", "[]").replace("LEN", "0")).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Length", "0")], Some(0)),
                Event::Finish(false)
            ]
        );
        ran.assert_traceback(
            "RW0007: exception occurred in close() of the result of WSGI script 'test.wsgi'",
            "RuntimeError: boom-in-close",
        );
    });
}

#[test]
fn generator_application_is_run_and_closed() {
    py_test(|py| {
        let src = "
            done = []
            def app(environ, start_response):
                try:
                    start_response('200 OK', [('Content-Type', 'text/plain')])
                    yield b'a'
                    yield b''
                    yield b'b'
                finally:
                    done.append('finally')
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Type", "text/plain")], None),
                write(b"a", true),
                write(b"b", true),
                Event::Finish(false)
            ]
        );
        assert_eq!(ran.eval("done"), "['finally']");

        // Stopped early (a non-bytes item): close() runs the generator's finally.
        let src = "
            done = []
            def app(environ, start_response):
                try:
                    start_response('200 OK', [])
                    yield b'a'
                    yield 'not bytes'
                    yield b'never'
                except GeneratorExit:
                    done.append('closed')
                    raise
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Aborted);
        assert_eq!(ran.eval("done"), "['closed']");
    });
}

#[test]
fn exception_before_start_response_is_a_500_with_traceback() {
    py_test(|py| {
        let src = "
            class RwsgiTestError(Exception):
                pass
            def app(environ, start_response):
                raise RwsgiTestError('boom-before-start')
        ";
        let ran = Req::new(src).run(py);
        assert_server_error(&ran);
        ran.assert_traceback(
            "RW0007: exception occurred calling WSGI script 'test.wsgi'",
            "RwsgiTestError: boom-before-start",
        );
        assert!(
            ran.log_lines().iter().any(|l| l
                .trim_start()
                .starts_with("File \"<string>\", line 5, in app")),
            "{:#?}",
            ran.log()
        );

        let src = "
            def app(environ, start_response):
                start_response('200 OK', [('Content-Length', '2')])
                raise KeyError('boom-after-start')
        ";
        let ran = Req::new(src).run(py);
        assert_server_error(&ran);
        ran.assert_traceback(
            "RW0007: exception occurred calling WSGI script 'test.wsgi'",
            "KeyError: 'boom-after-start'",
        );
    });
}

#[test]
fn client_gone_during_iteration_aborts_quietly() {
    py_test(|py| {
        let src = result_app("'200 OK', []", "Result([b'one', b'two', b'three'])");
        let ran = Req::new(&src).sink_fails_after(1).run(py);
        assert_eq!(ran.outcome, Outcome::Aborted);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(b"one", true),
                Event::Finish(true)
            ]
        );
        // No traceback: one line at info level.
        assert_eq!(
            ran.log(),
            vec![(
                Level::Info,
                "RW0010: client closed the connection while WSGI script 'test.wsgi' was \
                 responding"
                    .to_string()
            )]
        );
        assert_eq!(ran.eval("events"), "['iter', 'next', 'next', 'close']");
    });
}

#[test]
fn client_gone_during_write_is_an_oserror_and_never_a_clean_end() {
    py_test(|py| {
        let src = "
            errs = []
            def app(environ, start_response):
                write = start_response('200 OK', [])
                write(b'one')
                for data in (b'two', b'three'):
                    try:
                        write(data)
                    except OSError as e:
                        errs.append(str(e))
                return []
        ";
        let ran = Req::new(src).sink_fails_after(1).run(py);
        assert_eq!(
            strings(&ran, "errs"),
            [
                "failed to write response data: fake client gone",
                "failed to write response data: client went away",
            ]
        );
        // The application swallowed the error, but bytes it wrote never went out: the
        // response must not end cleanly.
        assert_eq!(ran.outcome, Outcome::Aborted);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(b"one", true),
                Event::Finish(true)
            ]
        );
        assert_eq!(
            ran.log(),
            vec![(
                Level::Info,
                "RW0010: client closed the connection while WSGI script 'test.wsgi' was \
                 responding"
                    .to_string()
            )]
        );
    });
}

#[test]
fn head_request_may_omit_the_declared_body() {
    py_test(|py| {
        let src = result_app("'200 OK', [('Content-Length', '1234')]", "Result([])");
        let ran = Req::new(&src).head_request().run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Length", "1234")], Some(1234)),
                Event::Finish(false)
            ]
        );
        assert_eq!(ran.log(), vec![]);
        assert_eq!(ran.eval("events"), "['iter', 'exhausted', 'close']");
    });
}

#[test]
fn head_request_body_is_left_to_httpd_and_result_closed() {
    py_test(|py| {
        // The adapter passes what the application produces; httpd drops a HEAD's body
        // (header_only), in the daemon's case on the httpd side of the connection.
        let src = result_app("'200 OK', [('Content-Length', '5')]", "Result([b'hello'])");
        let ran = Req::new(&src).head_request().run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Length", "5")], Some(5)),
                write(b"hello", true),
                Event::Finish(false)
            ]
        );
        assert_eq!(ran.eval("events"), "['iter', 'next', 'exhausted', 'close']");
    });
}

// ------------------------------------------------------------------------------------------
// wsgi.errors

#[test]
fn wsgi_errors_lines_go_to_the_request_log() {
    py_test(|py| {
        let src = "
            got = []
            keep = {}
            def app(environ, start_response):
                err = keep['err'] = environ['wsgi.errors']
                got.append(err.write('one\\ntwo'))
                got.append(err.write(' more\\n'))
                got.append(err.writelines(['a\\n', 'b\\n']))
                print('printed', 42, file=err)
                err.write('caf\\xe9 ')
                err.write('tail')
                err.flush()
                err.flush()
                err.write('unterminated')
                try:
                    err.write(b'bytes')
                except TypeError as e:
                    got.append(str(e))
                got.append((err.encoding, err.isatty(), err.writable(), err.closed))
                start_response('200 OK', [])
                return [b'ok']
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            ran.eval("got"),
            "[7, 6, None, \"write() argument must be str, not <class 'bytes'>\", \
             ('utf-8', False, True, False)]"
        );
        // Complete lines as written, a flushed partial line, and what was still buffered when
        // the request ended.
        let want: Vec<(Level, String)> = [
            "one",
            "two more",
            "a",
            "b",
            "printed 42",
            "caf\u{e9} tail",
            "unterminated",
        ]
        .iter()
        .map(|l| (Level::Error, l.to_string()))
        .collect();
        assert_eq!(ran.log(), want);
        assert_eq!(ran.fallback(), vec![]);

        // After the request, the object writes to the fallback (the server's log).
        ran.exec("keep['err'].write('late line\\n')\nkeep['err'].write('late partial')\nkeep['err'].flush()");
        assert_eq!(ran.log(), want);
        assert_eq!(
            ran.fallback(),
            vec![
                (Level::Error, "late line".to_string()),
                (Level::Error, "late partial".to_string())
            ]
        );
    });
}

#[test]
fn restricted_stream_raises_oserror() {
    py_test(|py| {
        let (fallback, lines) = capture();
        let msg = "sys.stdout access restricted by mod_wsgi";
        let log = Py::new(py, Log::restricted(fallback, msg)).unwrap();
        let g = PyDict::new(py);
        g.set_item("out", log).unwrap();
        let src = "
            got = []
            for call in (lambda: out.write('x\\n'), lambda: out.flush(), lambda: print('y', file=out)):
                try:
                    call()
                    got.append('no error')
                except OSError as e:
                    got.append(str(e))
        ";
        py.run(&cstring(&dedent(src)), Some(&g), None).unwrap();
        let got: Vec<String> = g.get_item("got").unwrap().unwrap().extract().unwrap();
        assert_eq!(got, [msg; 3]);
        assert_eq!(*lock(&lines), vec![]);
    });
}

// ------------------------------------------------------------------------------------------
// wsgi.file_wrapper

/// 10,000 bytes, no two neighbouring 251-byte runs alike.
fn file_data() -> Vec<u8> {
    (0..10_000u32).map(|i| (i % 251) as u8).collect()
}

/// A file object that records its position when closed (in `closed_at`), and an application
/// that opens `PATH` with it, calls `start_response`, runs `prepare` (over `f` and `write`),
/// then returns a file wrapper of it.
fn file_app(headers: &str, prepare: &str, blksize: usize) -> String {
    format!(
        "import io
closed_at = []
fds = []
class F(io.FileIO):
    def close(self):
        if not self.closed:
            closed_at.append(self.tell())
        super().close()
def app(environ, start_response):
    f = F(PATH, 'rb')
    fds.append(f.fileno())
    write = start_response('200 OK', {headers})
    {prepare}
    return environ['wsgi.file_wrapper'](f, {blksize})
"
    )
}

fn fd_of(ran: &Ran<'_>) -> RawFd {
    ran.eval("fds[0]").parse().unwrap()
}

#[test]
fn file_wrapper_over_a_regular_file_is_sent_as_a_file() {
    py_test(|py| {
        let data = file_data();
        let tmp = TempFile::new(&data);
        let ran = Req::new(&file_app("[]", "pass", 4096))
            .var("PATH", &tmp.path())
            .run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        // Without a Content-Length of its own, the response gets the file's.
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Length", "10000")], Some(10_000)),
                Event::SendFile {
                    fd: fd_of(&ran),
                    offset: 0,
                    len: 10_000,
                    data: data.clone()
                },
                Event::Finish(false)
            ]
        );
        // Closed by the wrapper's close(), positioned where iterating would have left it.
        assert_eq!(ran.eval("closed_at"), "[10000]");
        assert_eq!(ran.log(), vec![]);
    });
}

#[test]
fn file_wrapper_honours_the_position_and_content_length() {
    py_test(|py| {
        let data = file_data();
        let tmp = TempFile::new(&data);
        // (headers, preparation, offset, len, head's Content-Length)
        let cases = [
            ("[]", "f.seek(1000)", 1000, 9000, "9000"),
            ("[]", "f.read(10)", 10, 9990, "9990"),
            ("[('Content-Length', '1000')]", "pass", 0, 1000, "1000"),
            (
                "[('Content-Length', '500')]",
                "f.seek(9000)",
                9000,
                500,
                "500",
            ),
        ];
        for (headers, prepare, offset, len, cl) in cases {
            let ran = Req::new(&file_app(headers, prepare, 8192))
                .var("PATH", &tmp.path())
                .run(py);
            assert_eq!(ran.outcome, Outcome::Done, "{prepare} {headers}");
            let (start, end) = (offset as usize, (offset + len) as usize);
            assert_eq!(
                ran.events,
                vec![
                    head("200 OK", &[("Content-Length", cl)], Some(len)),
                    Event::SendFile {
                        fd: fd_of(&ran),
                        offset,
                        len,
                        data: data[start..end].to_vec()
                    },
                    Event::Finish(false)
                ],
                "{prepare} {headers}"
            );
            assert_eq!(ran.eval("closed_at"), format!("[{end}]"));
        }
    });
}

#[test]
fn file_wrapper_shorter_than_its_content_length_aborts() {
    py_test(|py| {
        let data = file_data();
        let tmp = TempFile::new(&data);
        let ran = Req::new(&file_app("[('Content-Length', '20000')]", "pass", 8192))
            .var("PATH", &tmp.path())
            .run(py);
        assert_eq!(ran.outcome, Outcome::Aborted);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Length", "20000")], Some(20_000)),
                Event::SendFile {
                    fd: fd_of(&ran),
                    offset: 0,
                    len: 10_000,
                    data
                },
                Event::Finish(true)
            ]
        );
        assert_eq!(
            ran.log_lines(),
            [
                "RW0008: WSGI script 'test.wsgi' declared Content-Length 20000 but sent only \
              10000 bytes; the response was aborted"
            ]
        );
    });
}

#[test]
fn file_wrapper_after_write_is_iterated_in_blocks() {
    py_test(|py| {
        let data = file_data();
        let tmp = TempFile::new(&data);
        let src = file_app("[]", "write(b'head;')", 4000);
        let ran = Req::new(&src).var("PATH", &tmp.path()).run(py);
        assert_eq!(ran.outcome, Outcome::Done, "{:#?}", ran.log());
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(b"head;", true),
                write(&data[..4000], true),
                write(&data[4000..8000], true),
                write(&data[8000..], true),
                Event::Finish(false)
            ]
        );
        assert_eq!(ran.eval("closed_at"), "[10000]");
    });
}

#[test]
fn file_wrapper_without_a_file_descriptor_is_iterated() {
    py_test(|py| {
        let src = "
            import io
            keep = {}
            def app(environ, start_response):
                start_response('200 OK', [])
                keep['bio'] = io.BytesIO(b'0123456789' * 1000)
                return environ['wsgi.file_wrapper'](keep['bio'], 4096)
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        let data = b"0123456789".repeat(1000);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(&data[..4096], true),
                write(&data[4096..8192], true),
                write(&data[8192..], true),
                Event::Finish(false)
            ]
        );
        assert_eq!(ran.eval("keep['bio'].closed"), "True");
        // The default block size is 8192; a file-like object without close() is fine.
        let src = "
            class Reader:
                def __init__(self):
                    self.left = b'x' * 10000
                def read(self, n):
                    out, self.left = self.left[:n], self.left[n:]
                    return out
            def app(environ, start_response):
                start_response('200 OK', [])
                return environ['wsgi.file_wrapper'](Reader())
        ";
        let ran = Req::new(src).stream_flush(false).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[], None),
                write(&[b'x'; 8192], false),
                write(&[b'x'; 1808], false),
                Event::Finish(false)
            ]
        );
    });
}

#[test]
fn file_wrapper_send_failure_aborts_quietly() {
    py_test(|py| {
        let tmp = TempFile::new(&file_data());
        let ran = Req::new(&file_app("[]", "pass", 8192))
            .var("PATH", &tmp.path())
            .sink_fails_after(0)
            .run(py);
        assert_eq!(ran.outcome, Outcome::Aborted);
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Length", "10000")], Some(10_000)),
                Event::Finish(true)
            ]
        );
        assert_eq!(
            ran.log(),
            vec![(
                Level::Info,
                "RW0010: client closed the connection while WSGI script 'test.wsgi' was \
                 responding"
                    .to_string()
            )]
        );
        assert_eq!(ran.eval("len(closed_at)"), "1");
    });
}

#[test]
fn file_wrapper_refuses_a_non_positive_block_size() {
    py_test(|py| {
        let src = "
            import io
            errs = []
            def app(environ, start_response):
                for n in (0, -1):
                    try:
                        environ['wsgi.file_wrapper'](io.BytesIO(b''), n)
                    except ValueError as e:
                        errs.append(str(e))
                start_response('200 OK', [])
                return []
        ";
        let ran = Req::new(src).run(py);
        assert_eq!(ran.outcome, Outcome::Done);
        assert_eq!(
            strings(&ran, "errs"),
            ["block size must be a positive integer"; 2]
        );
    });
}

// ------------------------------------------------------------------------------------------
// PEP 3333 conformance

#[test]
fn wsgiref_validator_accepts_the_adapter_objects() {
    py_test(|py| {
        // wsgiref.validate asserts (AssertionError) on any protocol breach by the server's
        // objects or the application.
        let src = "
            from wsgiref.validate import validator
            def inner(environ, start_response):
                inp = environ['wsgi.input']
                first = inp.readline()
                rest = inp.read(1000)
                environ['wsgi.errors'].write('validated\\n')
                environ['wsgi.errors'].flush()
                write = start_response('200 OK', [('Content-Type', 'text/plain')])
                write(first)
                return [rest]
            app = validator(inner)
        ";
        let ran = Req::new(src).body(LINES, 5).run(py);
        assert_eq!(ran.outcome, Outcome::Done, "{:#?}", ran.log());
        assert_eq!(
            ran.events,
            vec![
                head("200 OK", &[("Content-Type", "text/plain")], None),
                write(b"line one\n", true),
                write(b"line two\nthird line without newline", true),
                Event::Finish(false)
            ]
        );
        assert_eq!(ran.log(), vec![(Level::Error, "validated".to_string())]);
    });
}
