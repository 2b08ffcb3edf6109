//! The counters and clocks one daemon process's threads share (`State`), the one way any of
//! them asks the process to stop (`State::restart`), and what a worker shows on the board while
//! it runs a request (`BoardNote`). Runs in the daemon process.
#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

thread_local! {
    /// The worker index of the calling thread (its board slot), if it is a worker.
    pub(super) static WORKER_INDEX: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
}

/// What the board shows of the request the calling worker thread runs, for as long as this
/// lives (server-status's per-thread lines).
pub(super) struct BoardNote<'a> {
    state: &'a State,
    index: usize,
}

impl<'a> BoardNote<'a> {
    /// Notes `text` (request line, client, request id) for the calling worker, if it is one.
    pub(super) fn new(state: &'a State, text: &[u8]) -> Option<BoardNote<'a>> {
        let board = crate::board::pinned()?;
        let index = WORKER_INDEX.get()?;
        board.thread_busy(state.slot.0, state.slot.1, index, sys::unix_now_ms(), text);
        Some(BoardNote { state, index })
    }
}

impl Drop for BoardNote<'_> {
    fn drop(&mut self) {
        if let Some(b) = crate::board::pinned() {
            b.thread_idle(self.state.slot.0, self.state.slot.1, self.index);
        }
    }
}

/// Shared counters of one daemon process.
pub(super) struct State {
    pub(super) stopping: AtomicBool,
    pub(super) active: AtomicUsize,
    /// ASGI requests handed to an event loop and not yet done (no worker holds them).
    pub(super) asgi_active: AtomicUsize,
    pub(super) served: AtomicU64,
    /// Requests this process has accepted (sent `Accepted` for), for maximum-requests.
    pub(super) admitted: AtomicU64,
    /// Workers still in their accept loop.
    pub(super) accepting: AtomicUsize,
    /// When this process started serving (timestamps below are milliseconds since then).
    born: Instant,
    /// Per worker: when its current request started (ms + 1), or 0 when idle.
    pub(super) busy_since: Vec<AtomicU64>,
    /// Per worker: its Python thread id (interrupt-timeout raises in it).
    pub(super) py_ident: Vec<AtomicU64>,
    /// Per worker: when `mod_wsgi.RequestTimeout` was raised in its current request (ms + 1),
    /// or 0.
    pub(super) interrupted_at: Vec<AtomicU64>,
    /// The interpreter each worker thread's request runs in, by Python thread id (`None`:
    /// the main interpreter), for interrupt-timeout.
    running_in: Mutex<Vec<(u64, Option<String>)>>,
    /// The last request start or end (ms).
    pub(super) last_activity: AtomicU64,
    /// The last time the GIL could be taken (ms), for deadlock-timeout.
    pub(super) gil_seen: AtomicU64,
    /// When the first request arrived (ms + 1), and whether its script has loaded.
    pub(super) first_request: AtomicU64,
    pub(super) script_loaded: AtomicBool,
    /// Why this process is stopping, and how long it may drain (set before SIGUSR2).
    pub(super) reason: Mutex<Option<(String, Duration)>>,
    /// This process's place on the board: (group index, process index).
    pub(super) slot: (usize, usize),
}

impl State {
    /// The state of a process that starts serving now with `workers` worker threads.
    pub(super) fn new(workers: usize, slot: (usize, usize)) -> Self {
        State {
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            asgi_active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            accepting: AtomicUsize::new(0),
            born: Instant::now(),
            busy_since: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            py_ident: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            interrupted_at: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            running_in: Mutex::new(Vec::new()),
            last_activity: AtomicU64::new(0),
            gil_seen: AtomicU64::new(0),
            first_request: AtomicU64::new(0),
            script_loaded: AtomicBool::new(false),
            reason: Mutex::new(None),
            slot,
        }
    }

    /// Notes the interpreter (`None`: main) the calling worker thread (`ident`) runs its
    /// request in.
    pub(super) fn set_running_in(&self, ident: u64, group: Option<&str>) {
        let mut r = self.running_in.lock().unwrap_or_else(|p| p.into_inner());
        match r.iter_mut().find(|(i, _)| *i == ident) {
            Some(slot) if slot.1.as_deref() == group => {}
            Some(slot) => slot.1 = group.map(str::to_string),
            None => r.push((ident, group.map(str::to_string))),
        }
    }

    /// The interpreter the thread `ident` last ran a request in (`None`: main).
    pub(super) fn running_in(&self, ident: u64) -> Option<String> {
        let r = self.running_in.lock().unwrap_or_else(|p| p.into_inner());
        r.iter()
            .find(|(i, _)| *i == ident)
            .and_then(|(_, g)| g.clone())
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Asks the main thread to stop this process gracefully.
    pub(super) fn restart(&self, reason: String, grace: Duration) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some((reason, grace));
            // From now on nothing new is taken; the main thread drains and exits.
            self.stopping.store(true, Ordering::SeqCst);
            sys::kill(sys::pids().0 as i32, libc::SIGUSR2);
        }
    }
}
