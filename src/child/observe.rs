//! The operators' handlers and the per-request counting behind them: `rwsgi-metrics`
//! (Prometheus text), `rwsgi-health` (200 when every daemon group it covers has a process
//! ready, 503 otherwise), and each request's outcome written to the board. Runs in the httpd
//! child; reads what the board (shared memory) holds, never a daemon.
#![forbid(unsafe_code)]

use std::ffi::c_int;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::board::{self, Served};
use crate::httpd::ffi::{HTTP_METHOD_NOT_ALLOWED, OK};
use crate::httpd::request::{Output, Request};

/// The `SetHandler` names.
pub const METRICS_HANDLER: &[u8] = b"rwsgi-metrics";
pub const HEALTH_HANDLER: &[u8] = b"rwsgi-health";

/// How long ago httpd read the request line.
pub fn since_request_line(req: Request) -> std::time::Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    std::time::Duration::from_micros(u64::try_from(now - req.request_time()).unwrap_or(0))
}

/// The board record a request counts under: embedded mode (`None`) or its daemon group.
pub fn record_of(process_group: &str) -> Option<usize> {
    if process_group.is_empty() {
        return None;
    }
    board::pinned()?
        .layout
        .groups
        .iter()
        .position(|g| g.name == process_group)
}

/// This child's board slot, once `my_slot` has found it.
static SLOT: OnceLock<usize> = OnceLock::new();

/// This child's slot on the board (its scoreboard index), found by its first embedded-mode
/// request (the parent writes a child's pid into the scoreboard after the fork, so not at
/// start-up); `None` while it is not found (a few tries, then never again).
fn my_slot(b: &board::Board) -> Option<usize> {
    static TRIES: AtomicU32 = AtomicU32::new(0);
    if let Some(s) = SLOT.get() {
        return Some(*s);
    }
    if TRIES.fetch_add(1, Ordering::Relaxed) >= 32 {
        return None;
    }
    let pid = crate::sys::pids().0;
    let found = crate::httpd::scoreboard::slot_of(pid as i32)?;
    let mut first = false;
    let slot = *SLOT.get_or_init(|| {
        first = true;
        found
    });
    if first {
        b.child_started(slot, pid, crate::sys::unix_now());
    }
    Some(slot)
}

/// This child leaves its slot (it exits), if it took one.
pub fn child_exiting() {
    if let Some(b) = board::pinned()
        && let Some(&slot) = SLOT.get()
    {
        b.child_exited(slot, crate::sys::pids().0);
    }
}

/// Counts a request in flight until `ended` is called.
pub fn started(record: Option<usize>) {
    if let Some(b) = board::pinned() {
        b.request_started(record);
        if record.is_none()
            && let Some(slot) = my_slot(b)
        {
            b.child_request(slot, true);
        }
    }
}

/// An embedded-mode request ended: this child's own figures (its resident size at most once a
/// second).
fn child_ended(b: &board::Board) {
    static RSS_AT: AtomicU64 = AtomicU64::new(0);
    let Some(slot) = my_slot(b) else { return };
    b.child_request(slot, false);
    let now = crate::sys::unix_now();
    let rss = (RSS_AT.swap(now, Ordering::Relaxed) != now)
        .then(crate::sys::resident_bytes)
        .flatten();
    let (gc, collected) = crate::request::metrics::gc_counts();
    b.child_figures(slot, rss, gc, collected);
}

/// The request has been answered: `rc` is the handler's return (OK, or a status httpd
/// answers itself).
pub fn ended(req: Request, record: Option<usize>, rc: c_int) {
    let Some(b) = board::pinned() else { return };
    let status = if rc == OK as c_int { req.status() } else { rc };
    b.request_ended(
        record,
        Served {
            status: u16::try_from(status).unwrap_or(500),
            bytes_in: req.read_length(),
            bytes_out: req.bytes_sent(),
            micros: u64::try_from(since_request_line(req).as_micros()).unwrap_or(u64::MAX),
        },
    );
    if record.is_none() {
        child_ended(b);
    }
}

fn answer(req: Request, status: u16, reason: &str, content_type: &str, body: &str) -> c_int {
    let method = req.cgi().method;
    if method != Some(b"GET") && method != Some(b"HEAD") {
        return HTTP_METHOD_NOT_ALLOWED as c_int;
    }
    req.discard_body();
    req.set_head(
        status,
        format!("{status} {reason}").as_bytes(),
        &[
            ("Content-Type", content_type.as_bytes().to_vec()),
            ("Cache-Control", b"no-store".to_vec()),
        ],
    );
    req.set_content_length(body.len() as u64);
    let mut out = Output::new(req);
    let data = if req.header_only() {
        &b""[..]
    } else {
        body.as_bytes()
    };
    let _ = out.finish(data, false);
    OK as c_int
}

/// mod_rwsgi's section of mod_status's server-status page (`short`: `?auto` lines).
pub fn status_section(short: bool) -> String {
    match board::pinned() {
        Some(b) => board::render::status(
            &b.snapshot(),
            crate::sys::unix_now(),
            crate::sys::unix_now_ms(),
            short,
        ),
        None => String::new(),
    }
}

/// `SetHandler rwsgi-metrics`.
pub fn metrics(req: Request) -> c_int {
    let body = match board::pinned() {
        Some(b) => board::render::prometheus(&b.snapshot(), crate::sys::unix_now()),
        None => String::new(),
    };
    answer(
        req,
        200,
        "OK",
        "text/plain; version=0.0.4; charset=utf-8",
        &body,
    )
}

/// `SetHandler rwsgi-health`: `?group=NAME` (repeatable) narrows it to those groups.
pub fn health(req: Request) -> c_int {
    let cgi = req.cgi();
    let args = cgi.query.unwrap_or(b"");
    let groups: Vec<String> = args
        .split(|c| *c == b'&')
        .filter_map(|kv| kv.strip_prefix(b"group="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let (ok, body) = match board::pinned() {
        Some(b) => board::render::health(&b.snapshot(), &groups, |pid| {
            crate::sys::process_exists(pid as i32)
        }),
        None => (
            false,
            "unavailable: no board (see the error log)\n".to_string(),
        ),
    };
    let (status, reason) = if ok {
        (200, "OK")
    } else {
        (503, "Service Unavailable")
    };
    answer(req, status, reason, "text/plain; charset=utf-8", &body)
}
