//! `WSGISlowRequests` while a request still runs: each WSGI request registers while its
//! application runs, and a watcher thread reports one that passes the threshold once, with the
//! Python stack of the thread running it (the line after it ends, with its status, is the
//! handler's). Runs in the httpd child (embedded mode) and in daemon processes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use pyo3::prelude::*;

use super::{PROCESS, interp};
use crate::error::Code;
use crate::wsgi::adapter::{Level, LogFn};

struct Entry {
    id: u64,
    /// Python's id of the thread running it.
    ident: u64,
    /// When httpd read its request line (epoch microseconds).
    since_us: i64,
    /// `METHOD URL`, client and request id, for the line.
    text: String,
    /// Its stack may be read from the main interpreter (not an own-GIL sub-interpreter).
    stack: bool,
    reported: bool,
}

static ENTRIES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);
static WATCHER: Once = Once::new();
/// Set before Python is finalised: the watcher must not attach any more.
static STOP: AtomicBool = AtomicBool::new(false);

fn entries() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    ENTRIES.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request registered with the watcher until dropped.
pub struct Watch(u64);

impl Drop for Watch {
    fn drop(&mut self) {
        entries().retain(|e| e.id != self.0);
    }
}

/// Registers the request the calling thread is about to run in the interpreter of
/// `app_group` (`text`: its status text, `METHOD URL\tclient\tid`, asked for only when
/// configured; `since_us`: when httpd read its request line). `None` without
/// `WSGISlowRequests`.
pub fn watch(text: impl FnOnce() -> Vec<u8>, since_us: i64, app_group: &str) -> Option<Watch> {
    let setup = PROCESS.get()?;
    let limit = setup.g.slow_requests?;
    let log = std::sync::Arc::clone(&setup.log);
    WATCHER.call_once(|| start(limit, log));
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let stack = app_group.is_empty() || !setup.options(app_group).own_gil;
    entries().push(Entry {
        id,
        ident: super::thread_ident(),
        since_us,
        text: match setup.process_name() {
            "" => format!("{} in embedded mode", describe(&text())),
            group => format!("{} in daemon group '{group}'", describe(&text())),
        },
        stack,
        reported: false,
    });
    Some(Watch(id))
}

/// `METHOD URL\tclient\tid` as the line says it.
fn describe(text: &[u8]) -> String {
    let t = String::from_utf8_lossy(text);
    let mut parts = t.split('\t');
    let mut next = || parts.next().unwrap_or("");
    let (line, client, id) = (next(), next(), next());
    format!("{line} (client {client}, request id {id})")
}

/// Python is about to be finalised: the watcher stops attaching to it.
pub fn stop() {
    STOP.store(true, Ordering::SeqCst);
}

fn start(limit: Duration, log: LogFn) {
    let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let said = std::sync::Arc::clone(&log);
    let spawned = std::thread::Builder::new()
        .name("rwsgi-slow".into())
        .spawn(move || {
            // A panic here ends only the watcher (said once); requests are not affected.
            let run = std::panic::AssertUnwindSafe(|| watch_loop(limit, tick, &log));
            if std::panic::catch_unwind(run).is_err() {
                log(
                    Level::Error,
                    &format!(
                        "{}: a panic in the WSGISlowRequests watcher; slow requests are logged \
                         only when they end from now on",
                        Code::Panic.as_str()
                    ),
                );
            }
        });
    if let Err(e) = spawned {
        said(
            Level::Warning,
            &format!("WSGISlowRequests: cannot start the watcher thread: {e}"),
        );
    }
}

fn watch_loop(limit: Duration, tick: Duration, log: &LogFn) {
    let limit_us = i64::try_from(limit.as_micros()).unwrap_or(i64::MAX);
    loop {
        std::thread::sleep(tick);
        if STOP.load(Ordering::SeqCst) {
            return;
        }
        let now = crate::request::metrics::now_us();
        let due: Vec<(u64, i64, String, bool)> = entries()
            .iter_mut()
            .filter(|e| !e.reported && now - e.since_us > limit_us)
            .map(|e| {
                e.reported = true;
                (e.ident, now - e.since_us, e.text.clone(), e.stack)
            })
            .collect();
        for (ident, ran_us, text, stack) in due {
            report(log, limit, ident, ran_us, &text, stack);
        }
    }
}

/// One line for a request still running past the threshold, then its Python stack.
fn report(log: &LogFn, limit: Duration, ident: u64, ran_us: i64, text: &str, stack: bool) {
    let frames = if stack && !STOP.load(Ordering::SeqCst) {
        // sys._current_frames() of the main interpreter covers the threads of every
        // interpreter that shares its GIL.
        interp::enter(interp::Which::Main, |py, it| {
            it.bootstrap
                .bind(py)
                .call_method1("thread_stack", (ident,))
                .and_then(|s| s.extract::<Option<String>>())
                .ok()
                .flatten()
        })
        .ok()
        .flatten()
    } else {
        None
    };
    log(
        Level::Warning,
        &format!(
            "{}: slow request still running: {text} has run {:.3} s (WSGISlowRequests {} s){}",
            Code::SlowRequest.as_str(),
            ran_us as f64 / 1e6,
            limit.as_secs_f64(),
            if frames.is_some() {
                "; its Python stack:"
            } else {
                ""
            }
        ),
    );
    for line in frames.iter().flat_map(|f| f.lines()) {
        log(Level::Warning, line);
    }
}
