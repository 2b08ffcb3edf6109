//! The counters and clocks one daemon process's threads share (`State`), and the one way any of
//! them asks the process to stop (`State::restart`). Runs in the daemon process.
#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

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
    /// The last request start or end (ms).
    pub(super) last_activity: AtomicU64,
    /// The last time the GIL could be taken (ms), for deadlock-timeout.
    pub(super) gil_seen: AtomicU64,
    /// When the first request arrived (ms + 1), and whether its script has loaded.
    pub(super) first_request: AtomicU64,
    pub(super) script_loaded: AtomicBool,
    /// Why this process is stopping, and how long it may drain (set before SIGUSR2).
    pub(super) reason: Mutex<Option<(String, Duration)>>,
}

impl State {
    /// The state of a process that starts serving now with `workers` worker threads.
    pub(super) fn new(workers: usize) -> Self {
        State {
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            asgi_active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            accepting: AtomicUsize::new(0),
            born: Instant::now(),
            busy_since: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            last_activity: AtomicU64::new(0),
            gil_seen: AtomicU64::new(0),
            first_request: AtomicU64::new(0),
            script_loaded: AtomicBool::new(false),
            reason: Mutex::new(None),
        }
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
