//! The board: what every process of one server generation tells the others about requests and
//! daemon processes, in memory the httpd parent shares with everything it forks (pure: the
//! layout and its atomic reads and writes over a slice of words; `sys::SharedWords` provides
//! the memory). Written by the httpd parent (a daemon's spawn and exit), the daemon processes
//! (ready, busy threads, served, why they stop) and the httpd children (each request's
//! status, bytes and time); read by the children for server-status, metrics and health.
//! Lock-free: each word is one relaxed atomic, so a dead writer leaves nothing locked.
#![forbid(unsafe_code)]

pub mod render;

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the request-duration histogram's buckets (+Inf is implied).
pub const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Why a daemon process ended (the board's restart counters, by reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// It died without being asked (a signal, a crash, `os._exit`).
    Crash = 0,
    /// It failed while starting (bad `user=`, `python-home=`...).
    StartupFailed = 1,
    MaximumRequests = 2,
    RestartInterval = 3,
    InactivityTimeout = 4,
    RequestTimeout = 5,
    StartupTimeout = 6,
    DeadlockTimeout = 7,
    ScriptChanged = 8,
    /// A panic inside mod_rwsgi's own threads.
    Panic = 9,
    /// Anything else the process decided (an ASGI lifespan failure...).
    Other = 10,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Crash,
        Reason::StartupFailed,
        Reason::MaximumRequests,
        Reason::RestartInterval,
        Reason::InactivityTimeout,
        Reason::RequestTimeout,
        Reason::StartupTimeout,
        Reason::DeadlockTimeout,
        Reason::ScriptChanged,
        Reason::Panic,
        Reason::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Crash => "crash",
            Reason::StartupFailed => "startup-failed",
            Reason::MaximumRequests => "maximum-requests",
            Reason::RestartInterval => "restart-interval",
            Reason::InactivityTimeout => "inactivity-timeout",
            Reason::RequestTimeout => "request-timeout",
            Reason::StartupTimeout => "startup-timeout",
            Reason::DeadlockTimeout => "deadlock-timeout",
            Reason::ScriptChanged => "script-changed",
            Reason::Panic => "panic",
            Reason::Other => "other",
        }
    }

    fn from_word(w: u64) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| *r as u64 + 1 == w)
    }

    /// mod_wsgi's `shutdown_reason` for a process stopping for this reason (the
    /// `process_stopping` event); mod_rwsgi's own label where mod_wsgi has none.
    pub fn shutdown_reason(self) -> &'static str {
        match self {
            Reason::MaximumRequests => "maximum_requests",
            Reason::RestartInterval => "restart_interval",
            Reason::InactivityTimeout => "inactivity_timeout",
            Reason::RequestTimeout => "request_timeout",
            Reason::StartupTimeout => "startup_timeout",
            Reason::DeadlockTimeout => "deadlock_timeout",
            Reason::ScriptChanged => "script_reload",
            Reason::Crash => "crash",
            Reason::StartupFailed => "startup_failed",
            Reason::Panic => "panic",
            Reason::Other => "other",
        }
    }

    /// The reason behind one of the daemon's own restart messages (`State::restart`).
    pub fn of_message(msg: &str) -> Reason {
        let starts = |p: &str| msg.starts_with(p);
        if starts("maximum-requests") {
            Reason::MaximumRequests
        } else if starts("restart-interval") {
            Reason::RestartInterval
        } else if starts("inactivity-timeout") {
            Reason::InactivityTimeout
        } else if starts("request-timeout") {
            Reason::RequestTimeout
        } else if starts("startup-timeout") {
            Reason::StartupTimeout
        } else if starts("deadlock-timeout") {
            Reason::DeadlockTimeout
        } else if starts("script '") && msg.ends_with("' changed") {
            Reason::ScriptChanged
        } else if starts("a panic in") {
            Reason::Panic
        } else {
            Reason::Other
        }
    }
}

/// A daemon process slot's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// Never started, or gone and not replaced yet (backoff).
    Empty = 0,
    /// Forked; Python and the application's set-up are running.
    Starting = 1,
    /// Taking requests.
    Ready = 2,
    /// Draining before it exits (recycling, restart, stop).
    Stopping = 3,
}

impl ProcState {
    fn from_word(w: u64) -> ProcState {
        match w {
            1 => ProcState::Starting,
            2 => ProcState::Ready,
            3 => ProcState::Stopping,
            _ => ProcState::Empty,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ProcState::Empty => "empty",
            ProcState::Starting => "starting",
            ProcState::Ready => "ready",
            ProcState::Stopping => "stopping",
        }
    }
}

// A record: one per mode/group (record 0 is embedded mode, record 1 + i daemon group i).
const R_STATUS: usize = 0; // 5 words: 1xx..5xx
const R_BYTES_IN: usize = 5;
const R_BYTES_OUT: usize = 6;
const R_IN_FLIGHT: usize = 7;
const R_BUCKETS: usize = 8; // DURATION_BUCKETS.len() + 1 words (the last is +Inf)
const R_DURATION_SUM_US: usize = R_BUCKETS + DURATION_BUCKETS.len() + 1;
const R_RESTARTS: usize = R_DURATION_SUM_US + 1; // Reason::ALL.len() words
// Daemon groups: how long requests waited for a daemon thread (the same buckets).
const R_QUEUE_BUCKETS: usize = R_RESTARTS + Reason::ALL.len();
const R_QUEUE_SUM_US: usize = R_QUEUE_BUCKETS + DURATION_BUCKETS.len() + 1;
// WebSocket sessions: opened, open now, messages from and to clients.
const R_WS_OPENED: usize = R_QUEUE_SUM_US + 1;
const R_WS_OPEN: usize = R_WS_OPENED + 1;
const R_WS_IN: usize = R_WS_OPEN + 1;
const R_WS_OUT: usize = R_WS_IN + 1;
const RECORD_HEAD: usize = R_WS_OUT + 1;

// A daemon process slot, after its group's record head.
const S_PID: usize = 0;
const S_STATE: usize = 1;
const S_STARTED: usize = 2;
const S_THREADS: usize = 3;
const S_BUSY: usize = 4;
const S_SERVED: usize = 5;
const S_RESTARTS: usize = 6;
const S_REASON: usize = 7; // Reason + 1, or 0
const S_RSS: usize = 8;
const S_PENDING_REASON: usize = 9; // what the process said before it exits (Reason + 1)
const S_GC: usize = 10; // 3 words: Python's collections per generation
const S_GC_COLLECTED: usize = 13; // objects Python's collector freed
const SLOT_WORDS: usize = 14;

// An httpd child's slot (embedded mode's per-child figures), after embedded mode's record.
// Written only by that child (its Python requests, its garbage collections, its size).
const C_PID: usize = 0;
const C_STARTED: usize = 1;
const C_REQUESTS: usize = 2;
const C_IN_FLIGHT: usize = 3;
const C_RSS: usize = 4;
const C_GC: usize = 5; // 3 words, as S_GC
const C_GC_COLLECTED: usize = 8;
const CHILD_WORDS: usize = 9;

// A daemon worker thread's slot, after its process slot: what it runs now. Written only by
// that thread, under a sequence word (odd while it writes), so a reader retries a torn read.
const T_SEQ: usize = 0;
const T_SINCE_MS: usize = 1; // when the current request started (ms since the epoch), 0: idle
const T_SERVED: usize = 2;
const T_TEXT: usize = 3; // length, then the bytes
const TEXT_WORDS: usize = 32;
const THREAD_WORDS: usize = T_TEXT + TEXT_WORDS;
/// Bytes of a thread's request text kept (method, URL, client, request id).
pub const TEXT_BYTES: usize = (TEXT_WORDS - 1) * 8;

/// One daemon group as the board lays it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupShape {
    pub name: String,
    pub processes: usize,
    pub threads: usize,
}

/// Where each record starts: computed the same way in every process from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub groups: Vec<GroupShape>,
    /// httpd child slots (the MPM's ServerLimit), after embedded mode's record.
    pub children: usize,
    starts: Vec<usize>,
    pub words: usize,
}

impl Layout {
    /// At most this many process slots per group; processes beyond them are not on the board.
    pub const MAX_PROCESSES: usize = 4096;
    /// Worker threads per process with a slot of their own on the board.
    pub const MAX_THREADS: usize = 1024;

    /// At most this many httpd child slots (ServerLimit's own ceiling is 20000).
    pub const MAX_CHILDREN: usize = 20_000;

    pub fn new(groups: Vec<GroupShape>) -> Layout {
        Layout::with_children(0, groups)
    }

    /// A layout with `children` httpd child slots (the MPM's ServerLimit).
    pub fn with_children(children: usize, groups: Vec<GroupShape>) -> Layout {
        let children = children.min(Self::MAX_CHILDREN);
        let mut starts = vec![0];
        let mut at = RECORD_HEAD + children * CHILD_WORDS;
        for g in &groups {
            starts.push(at);
            at += RECORD_HEAD + g.processes.min(Self::MAX_PROCESSES) * stride(g);
        }
        Layout {
            groups,
            children,
            starts,
            words: at,
        }
    }

    fn child(&self, slot: usize) -> Option<usize> {
        (slot < self.children).then_some(RECORD_HEAD + slot * CHILD_WORDS)
    }

    /// The record of embedded mode (`None`) or of a daemon group by index.
    fn record(&self, group: Option<usize>) -> Option<usize> {
        match group {
            None => Some(0),
            Some(i) => self.starts.get(i + 1).copied(),
        }
    }

    fn slot(&self, group: usize, process: usize) -> Option<usize> {
        let g = self.groups.get(group)?;
        (process < g.processes.min(Self::MAX_PROCESSES))
            .then(|| self.starts[group + 1] + RECORD_HEAD + process * stride(g))
    }

    fn thread(&self, group: usize, process: usize, thread: usize) -> Option<usize> {
        let threads = self.groups.get(group)?.threads.min(Self::MAX_THREADS);
        (thread < threads)
            .then(|| self.slot(group, process))
            .flatten()
            .map(|s| s + SLOT_WORDS + thread * THREAD_WORDS)
    }
}

static INSTALLED: std::sync::Mutex<Option<std::sync::Arc<Board>>> = std::sync::Mutex::new(None);
static PINNED: std::sync::OnceLock<std::sync::Arc<Board>> = std::sync::OnceLock::new();

/// The httpd parent: makes `board` this generation's (`None` removes it) and returns the one
/// it replaces, whose memory goes when the last handle in this process is dropped.
pub fn install(board: Option<Board>) -> Option<std::sync::Arc<Board>> {
    let mut cur = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::replace(&mut *cur, board.map(std::sync::Arc::new))
}

/// The httpd parent: this generation's board.
pub fn installed() -> Option<std::sync::Arc<Board>> {
    INSTALLED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A forked process (httpd child, daemon): keeps the board it inherited for its whole life,
/// so requests read it without a lock. Call once, early.
pub fn pin() {
    if let Some(b) = installed() {
        let _ = PINNED.set(b);
    }
}

/// The board this process pinned.
pub fn pinned() -> Option<&'static Board> {
    PINNED.get().map(|b| &**b)
}

/// Words one process slot takes: its own, then one slot per worker thread.
fn stride(g: &GroupShape) -> usize {
    SLOT_WORDS + g.threads.min(Layout::MAX_THREADS) * THREAD_WORDS
}

/// The board over some shared words (`sys::SharedWords` in the server; a `Vec` in tests).
pub struct Board {
    mem: Box<dyn Deref<Target = [AtomicU64]> + Send + Sync>,
    pub layout: Layout,
    /// httpd's configuration generation the board belongs to (every process on it is of it).
    pub generation: u64,
}

/// A request's outcome as the httpd child counts it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Served {
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub micros: u64,
}

impl Board {
    /// `mem` must hold at least `layout.words` words, all zero.
    pub fn new(
        layout: Layout,
        mem: Box<dyn Deref<Target = [AtomicU64]> + Send + Sync>,
    ) -> Option<Board> {
        (mem.len() >= layout.words).then_some(Board {
            mem,
            layout,
            generation: 0,
        })
    }

    /// The board of httpd's configuration generation `generation`.
    pub fn of(mut self, generation: u64) -> Board {
        self.generation = generation;
        self
    }

    fn w(&self, i: usize) -> &AtomicU64 {
        &self.mem[i]
    }

    fn add(&self, i: usize, n: u64) {
        self.w(i).fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, i: usize) -> u64 {
        self.w(i).load(Ordering::Relaxed)
    }

    fn set(&self, i: usize, v: u64) {
        self.w(i).store(v, Ordering::Relaxed);
    }

    // ---- httpd child: requests

    /// A request for embedded mode (`None`) or daemon group `group` starts.
    pub fn request_started(&self, group: Option<usize>) {
        if let Some(r) = self.layout.record(group) {
            self.add(r + R_IN_FLIGHT, 1);
        }
    }

    /// The request `request_started` counted has ended with `served`.
    pub fn request_ended(&self, group: Option<usize>, served: Served) {
        let Some(r) = self.layout.record(group) else {
            return;
        };
        let _ = self
            .w(r + R_IN_FLIGHT)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        let class = usize::from(served.status / 100).clamp(1, 5);
        self.add(r + R_STATUS + class - 1, 1);
        self.add(r + R_BYTES_IN, served.bytes_in);
        self.add(r + R_BYTES_OUT, served.bytes_out);
        let secs = served.micros as f64 / 1e6;
        let b = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.add(r + R_BUCKETS + b, 1);
        self.add(r + R_DURATION_SUM_US, served.micros);
    }

    /// A WebSocket session of embedded mode (`None`) or daemon group `group` opens.
    pub fn websocket_opened(&self, group: Option<usize>) {
        if let Some(r) = self.layout.record(group) {
            self.add(r + R_WS_OPENED, 1);
            self.add(r + R_WS_OPEN, 1);
        }
    }

    /// The session `websocket_opened` counted has ended.
    pub fn websocket_closed(&self, group: Option<usize>) {
        if let Some(r) = self.layout.record(group) {
            let _ = self
                .w(r + R_WS_OPEN)
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }

    /// A whole WebSocket message went from the client to the application (`inbound`) or back.
    pub fn websocket_message(&self, group: Option<usize>, inbound: bool) {
        if let Some(r) = self.layout.record(group) {
            self.add(r + if inbound { R_WS_IN } else { R_WS_OUT }, 1);
        }
    }

    /// WebSocket sessions open now across the server (every record: embedded mode and each
    /// daemon group).
    pub fn websockets_open(&self) -> u64 {
        (0..=self.layout.groups.len())
            .filter_map(|i| self.layout.record(i.checked_sub(1)))
            .map(|r| self.get(r + R_WS_OPEN))
            .sum()
    }

    // ---- daemon process: requests it takes

    /// A request of daemon group `group` waited `micros` for a daemon thread.
    pub fn queue_waited(&self, group: usize, micros: u64) {
        let Some(r) = self.layout.record(Some(group)) else {
            return;
        };
        let secs = micros as f64 / 1e6;
        let b = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.add(r + R_QUEUE_BUCKETS + b, 1);
        self.add(r + R_QUEUE_SUM_US, micros);
    }

    // ---- httpd child: its own slot

    /// The child in slot `slot` (httpd's scoreboard index) starts counting, as `pid`.
    pub fn child_started(&self, slot: usize, pid: u32, now: u64) {
        if let Some(c) = self.layout.child(slot) {
            for w in [C_REQUESTS, C_IN_FLIGHT, C_RSS, C_GC_COLLECTED] {
                self.set(c + w, 0);
            }
            for i in 0..3 {
                self.set(c + C_GC + i, 0);
            }
            self.set(c + C_STARTED, now);
            self.set(c + C_PID, u64::from(pid));
        }
    }

    /// The child's embedded-mode request starts (`true`) or has ended.
    pub fn child_request(&self, slot: usize, starts: bool) {
        if let Some(c) = self.layout.child(slot) {
            if starts {
                self.add(c + C_IN_FLIGHT, 1);
            } else {
                let _ = self.w(c + C_IN_FLIGHT).fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |v| v.checked_sub(1),
                );
                self.add(c + C_REQUESTS, 1);
            }
        }
    }

    /// The child's resident size (when sampled) and Python's collections in it.
    pub fn child_figures(&self, slot: usize, rss: Option<u64>, gc: [u64; 3], collected: u64) {
        if let Some(c) = self.layout.child(slot) {
            if let Some(rss) = rss {
                self.set(c + C_RSS, rss);
            }
            for (i, n) in gc.iter().enumerate() {
                self.set(c + C_GC + i, *n);
            }
            self.set(c + C_GC_COLLECTED, collected);
        }
    }

    /// The child `pid` leaves slot `slot` (it exits).
    pub fn child_exited(&self, slot: usize, pid: u32) {
        if let Some(c) = self.layout.child(slot) {
            let _ = self.w(c + C_PID).compare_exchange(
                u64::from(pid),
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    // ---- httpd parent: daemon processes start and end

    /// The parent forked process `process` of `group` as `pid`.
    pub fn spawned(&self, group: usize, process: usize, pid: u32, now: u64) {
        if let Some(s) = self.layout.slot(group, process) {
            self.set(s + S_PENDING_REASON, 0);
            self.set(s + S_BUSY, 0);
            self.set(s + S_SERVED, 0);
            self.set(s + S_RSS, 0);
            for i in 0..3 {
                self.set(s + S_GC + i, 0);
            }
            self.set(s + S_GC_COLLECTED, 0);
            self.set(s + S_STARTED, now);
            self.set(s + S_PID, u64::from(pid));
            self.set(s + S_STATE, ProcState::Starting as u64);
        }
    }

    /// Process `process` of `group` has exited; `startup_failed` when it never got going.
    /// The reason is what the process said before exiting, else a crash.
    pub fn exited(&self, group: usize, process: usize, startup_failed: bool) -> Reason {
        let Some(s) = self.layout.slot(group, process) else {
            return Reason::Crash;
        };
        let said = Reason::from_word(self.get(s + S_PENDING_REASON));
        let reason = match said {
            Some(r) => r,
            None if startup_failed => Reason::StartupFailed,
            None => Reason::Crash,
        };
        self.set(s + S_STATE, ProcState::Empty as u64);
        self.set(s + S_PID, 0);
        self.set(s + S_BUSY, 0);
        self.set(s + S_REASON, reason as u64 + 1);
        self.add(s + S_RESTARTS, 1);
        if let Some(r) = self.layout.record(Some(group)) {
            self.add(r + R_RESTARTS + reason as usize, 1);
        }
        reason
    }

    // ---- daemon process: its own slot

    /// The process takes requests with `threads` worker threads.
    pub fn ready(&self, group: usize, process: usize, threads: usize) {
        if let Some(s) = self.layout.slot(group, process) {
            self.set(s + S_THREADS, threads as u64);
            self.set(s + S_STATE, ProcState::Ready as u64);
        }
    }

    /// The process's busy threads, requests served and resident size now.
    pub fn mirror(&self, group: usize, process: usize, busy: u64, served: u64, rss: Option<u64>) {
        if let Some(s) = self.layout.slot(group, process) {
            self.set(s + S_BUSY, busy);
            self.set(s + S_SERVED, served);
            if let Some(rss) = rss {
                self.set(s + S_RSS, rss);
            }
        }
    }

    /// Python's garbage collector in the process: collections per generation, objects freed.
    pub fn mirror_gc(&self, group: usize, process: usize, collections: [u64; 3], collected: u64) {
        if let Some(s) = self.layout.slot(group, process) {
            for (i, n) in collections.iter().enumerate() {
                self.set(s + S_GC + i, *n);
            }
            self.set(s + S_GC_COLLECTED, collected);
        }
    }

    /// The process drains and will exit, for `reason`.
    pub fn stopping(&self, group: usize, process: usize, reason: Reason) {
        if let Some(s) = self.layout.slot(group, process) {
            self.set(s + S_PENDING_REASON, reason as u64 + 1);
            self.set(s + S_STATE, ProcState::Stopping as u64);
        }
    }

    /// A daemon worker thread starts a request (`text`: what server-status shows of it,
    /// cut to `TEXT_BYTES`) at `now_ms` (ms since the epoch).
    pub fn thread_busy(
        &self,
        group: usize,
        process: usize,
        thread: usize,
        now_ms: u64,
        text: &[u8],
    ) {
        let Some(t) = self.layout.thread(group, process, thread) else {
            return;
        };
        let text = &text[..text.len().min(TEXT_BYTES)];
        let seq = self.begin_write(t);
        self.w(t + T_SINCE_MS)
            .store(now_ms.max(1), Ordering::Relaxed);
        self.w(t + T_TEXT)
            .store(text.len() as u64, Ordering::Relaxed);
        for (i, chunk) in text.chunks(8).enumerate() {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.w(t + T_TEXT + 1 + i)
                .store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        self.end_write(t, seq);
    }

    /// The thread's request has ended.
    pub fn thread_idle(&self, group: usize, process: usize, thread: usize) {
        if let Some(t) = self.layout.thread(group, process, thread) {
            let seq = self.begin_write(t);
            self.w(t + T_SINCE_MS).store(0, Ordering::Relaxed);
            let served = self.w(t + T_SERVED).load(Ordering::Relaxed);
            self.w(t + T_SERVED).store(served + 1, Ordering::Relaxed);
            self.end_write(t, seq);
        }
    }

    /// A thread slot's only writer (its thread) makes the sequence odd before it writes (plain
    /// stores: one writer, and no locked instruction per request)...
    fn begin_write(&self, t: usize) -> u64 {
        let seq = self.w(t + T_SEQ).load(Ordering::Relaxed) | 1;
        self.w(t + T_SEQ).store(seq, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        seq
    }

    /// ...and even again after, published with Release.
    fn end_write(&self, t: usize, seq: u64) {
        self.w(t + T_SEQ).store(seq + 1, Ordering::Release);
    }

    /// One thread's slot, read consistently (a few retries while its writer is at work;
    /// `None` if it kept changing).
    fn read_thread(&self, t: usize) -> Option<ThreadView> {
        for _ in 0..8 {
            let before = self.w(t + T_SEQ).load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let since = self.w(t + T_SINCE_MS).load(Ordering::Relaxed);
            let served = self.w(t + T_SERVED).load(Ordering::Relaxed);
            let len = (self.w(t + T_TEXT).load(Ordering::Relaxed) as usize).min(TEXT_BYTES);
            let mut text = Vec::with_capacity(len);
            for i in 0..len.div_ceil(8) {
                let b = self
                    .w(t + T_TEXT + 1 + i)
                    .load(Ordering::Relaxed)
                    .to_le_bytes();
                text.extend_from_slice(&b);
            }
            text.truncate(len);
            std::sync::atomic::fence(Ordering::Acquire);
            if self.w(t + T_SEQ).load(Ordering::Relaxed) == before {
                return Some(ThreadView {
                    since_ms: since,
                    served,
                    text: String::from_utf8_lossy(&text).into_owned(),
                });
            }
        }
        None
    }

    // ---- readers

    /// Everything on the board now (each word read once; not one atomic snapshot).
    pub fn snapshot(&self) -> Snapshot {
        let record = |r: usize| RecordView {
            status: std::array::from_fn(|i| self.get(r + R_STATUS + i)),
            bytes_in: self.get(r + R_BYTES_IN),
            bytes_out: self.get(r + R_BYTES_OUT),
            in_flight: self.get(r + R_IN_FLIGHT),
            buckets: (0..=DURATION_BUCKETS.len())
                .map(|i| self.get(r + R_BUCKETS + i))
                .collect(),
            duration_sum_us: self.get(r + R_DURATION_SUM_US),
            queue_buckets: (0..=DURATION_BUCKETS.len())
                .map(|i| self.get(r + R_QUEUE_BUCKETS + i))
                .collect(),
            queue_sum_us: self.get(r + R_QUEUE_SUM_US),
            websocket_opened: self.get(r + R_WS_OPENED),
            websocket_open: self.get(r + R_WS_OPEN),
            websocket_in: self.get(r + R_WS_IN),
            websocket_out: self.get(r + R_WS_OUT),
            restarts: Reason::ALL
                .iter()
                .map(|x| (*x, self.get(r + R_RESTARTS + *x as usize)))
                .collect(),
        };
        let groups = self
            .layout
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| GroupView {
                name: g.name.clone(),
                threads: g.threads,
                record: record(self.layout.starts[gi + 1]),
                processes: (0..g.processes.min(Layout::MAX_PROCESSES))
                    .filter_map(|p| self.layout.slot(gi, p).map(|s| (p, s)))
                    .map(|(p, s)| ProcessView {
                        pid: self.get(s + S_PID) as u32,
                        state: ProcState::from_word(self.get(s + S_STATE)),
                        started: self.get(s + S_STARTED),
                        threads: self.get(s + S_THREADS),
                        busy: self.get(s + S_BUSY),
                        served: self.get(s + S_SERVED),
                        restarts: self.get(s + S_RESTARTS),
                        last_reason: Reason::from_word(self.get(s + S_REASON)),
                        rss: self.get(s + S_RSS),
                        gc: std::array::from_fn(|i| self.get(s + S_GC + i)),
                        gc_collected: self.get(s + S_GC_COLLECTED),
                        workers: (0..g.threads.min(Layout::MAX_THREADS))
                            .map(|t| {
                                self.layout
                                    .thread(gi, p, t)
                                    .and_then(|w| self.read_thread(w))
                                    .unwrap_or_default()
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        let children = (0..self.layout.children)
            .filter_map(|i| self.layout.child(i).map(|c| (i, c)))
            .filter(|(_, c)| self.get(c + C_PID) != 0)
            .map(|(slot, c)| ChildView {
                slot,
                pid: self.get(c + C_PID) as u32,
                started: self.get(c + C_STARTED),
                requests: self.get(c + C_REQUESTS),
                in_flight: self.get(c + C_IN_FLIGHT),
                rss: self.get(c + C_RSS),
                gc: std::array::from_fn(|i| self.get(c + C_GC + i)),
                gc_collected: self.get(c + C_GC_COLLECTED),
            })
            .collect();
        Snapshot {
            generation: self.generation,
            embedded: record(0),
            children,
            groups,
        }
    }
}

/// Request counters of embedded mode or of one daemon group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView {
    /// Responses by status class, 1xx..5xx.
    pub status: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub in_flight: u64,
    /// Per bucket of `DURATION_BUCKETS`, then +Inf (not cumulative).
    pub buckets: Vec<u64>,
    pub duration_sum_us: u64,
    /// Daemon groups: waits for a daemon thread, per bucket of `DURATION_BUCKETS` then +Inf.
    pub queue_buckets: Vec<u64>,
    pub queue_sum_us: u64,
    /// WebSocket sessions opened so far and open now; whole messages in and out.
    pub websocket_opened: u64,
    pub websocket_open: u64,
    pub websocket_in: u64,
    pub websocket_out: u64,
    pub restarts: Vec<(Reason, u64)>,
}

impl RecordView {
    pub fn requests(&self) -> u64 {
        self.status.iter().sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessView {
    pub pid: u32,
    pub state: ProcState,
    /// Seconds since the epoch when it was forked (0: never).
    pub started: u64,
    pub threads: u64,
    pub busy: u64,
    pub served: u64,
    pub restarts: u64,
    pub last_reason: Option<Reason>,
    pub rss: u64,
    /// Python's collections per generation and objects freed (sampled every second).
    pub gc: [u64; 3],
    pub gc_collected: u64,
    /// Its worker threads now, by index.
    pub workers: Vec<ThreadView>,
}

/// A daemon worker thread as the board last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadView {
    /// When its current request started (ms since the epoch); 0: idle.
    pub since_ms: u64,
    /// Requests it has finished.
    pub served: u64,
    /// The request it runs or last ran: `METHOD URL`, client and request id, tab-separated.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    pub name: String,
    pub threads: usize,
    pub record: RecordView,
    pub processes: Vec<ProcessView>,
}

/// An httpd child that runs Python (embedded mode), as its slot says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildView {
    /// Its index in httpd's scoreboard.
    pub slot: usize,
    pub pid: u32,
    /// Seconds since the epoch when it started counting.
    pub started: u64,
    /// Embedded-mode requests it has answered, and answers now.
    pub requests: u64,
    pub in_flight: u64,
    /// Resident size (sampled at most once a second, at a request's end).
    pub rss: u64,
    pub gc: [u64; 3],
    pub gc_collected: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// httpd's configuration generation of every process on the board.
    pub generation: u64,
    pub embedded: RecordView,
    /// The httpd children that have served a Python request, by slot (pid 0: none).
    pub children: Vec<ChildView>,
    pub groups: Vec<GroupView>,
}

#[cfg(test)]
pub(crate) fn test_board(groups: Vec<GroupShape>) -> Board {
    let layout = Layout::new(groups);
    let mem: Vec<AtomicU64> = (0..layout.words).map(|_| AtomicU64::new(0)).collect();
    Board::new(layout, Box::new(mem)).expect("sized")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes() -> Vec<GroupShape> {
        vec![
            GroupShape {
                name: "a".into(),
                processes: 2,
                threads: 3,
            },
            GroupShape {
                name: "b".into(),
                processes: 1,
                threads: 1,
            },
        ]
    }

    #[test]
    fn records_and_slots_do_not_overlap() {
        let l = Layout::new(shapes());
        assert_eq!(
            l.words,
            RECORD_HEAD * 3 + SLOT_WORDS * 3 + THREAD_WORDS * (2 * 3 + 1)
        );
        let b = test_board(shapes());
        b.spawned(0, 1, 42, 7);
        b.spawned(1, 0, 43, 8);
        b.request_started(Some(0));
        let s = b.snapshot();
        assert_eq!(s.groups[0].processes[1].pid, 42);
        assert_eq!(s.groups[0].processes[0].pid, 0);
        assert_eq!(s.groups[1].processes[0].pid, 43);
        assert_eq!(s.groups[0].record.in_flight, 1);
        assert_eq!(s.embedded.in_flight, 0);
        assert_eq!(s.groups[1].record.in_flight, 0);
        // Out of range: ignored, never a panic.
        b.spawned(5, 0, 1, 1);
        b.spawned(0, 9, 1, 1);
        b.request_ended(Some(9), Served::default());
    }

    #[test]
    fn child_slots_count_python_requests_and_leave_with_their_child() {
        let layout = Layout::with_children(4, shapes());
        assert_eq!(layout.words, Layout::new(shapes()).words + 4 * CHILD_WORDS);
        let mem: Vec<AtomicU64> = (0..layout.words).map(|_| AtomicU64::new(0)).collect();
        let b = Board::new(layout, Box::new(mem)).unwrap();
        b.child_started(2, 700, 5);
        b.child_request(2, true);
        b.child_request(2, true);
        b.child_request(2, false);
        b.child_figures(2, Some(4096), [3, 1, 0], 9);
        b.child_figures(2, None, [4, 1, 0], 9);
        // Slots beyond ServerLimit are ignored; group records are untouched.
        b.child_started(4, 1, 1);
        b.spawned(0, 0, 42, 7);
        let s = b.snapshot();
        assert_eq!(s.children.len(), 1);
        let c = &s.children[0];
        assert_eq!((c.slot, c.pid, c.started), (2, 700, 5));
        assert_eq!((c.requests, c.in_flight, c.rss), (1, 1, 4096));
        assert_eq!((c.gc, c.gc_collected), ([4, 1, 0], 9));
        assert_eq!(s.groups[0].processes[0].pid, 42);
        // Another child's exit does not clear the slot; its own does.
        b.child_exited(2, 701);
        assert_eq!(b.snapshot().children.len(), 1);
        b.child_exited(2, 700);
        assert!(b.snapshot().children.is_empty());
        // The next child in the slot starts from zero.
        b.child_started(2, 702, 6);
        assert_eq!(b.snapshot().children[0].requests, 0);
    }

    #[test]
    fn queue_waits_websockets_and_gc_are_counted_where_they_belong() {
        let b = test_board(shapes());
        b.queue_waited(1, 3_000);
        b.queue_waited(1, 90_000_000);
        b.queue_waited(7, 1);
        b.websocket_opened(None);
        b.websocket_opened(Some(0));
        b.websocket_message(Some(0), true);
        b.websocket_message(Some(0), true);
        b.websocket_message(Some(0), false);
        b.websocket_closed(Some(0));
        b.websocket_closed(Some(0));
        b.spawned(0, 1, 42, 7);
        b.mirror_gc(0, 1, [10, 2, 1], 55);
        let s = b.snapshot();
        let q = &s.groups[1].record;
        assert_eq!(q.queue_buckets[0], 1);
        assert_eq!(q.queue_buckets[DURATION_BUCKETS.len()], 1);
        assert_eq!(q.queue_sum_us, 90_003_000);
        assert_eq!(s.groups[0].record.queue_buckets.iter().sum::<u64>(), 0);
        let w = &s.groups[0].record;
        assert_eq!((w.websocket_opened, w.websocket_open), (1, 0));
        assert_eq!((w.websocket_in, w.websocket_out), (2, 1));
        assert_eq!(
            (s.embedded.websocket_opened, s.embedded.websocket_open),
            (1, 1)
        );
        b.websocket_opened(Some(1));
        assert_eq!(b.websockets_open(), 2);
        assert_eq!(s.groups[0].processes[1].gc, [10, 2, 1]);
        assert_eq!(s.groups[0].processes[1].gc_collected, 55);
        // A new process in the slot starts from zero.
        b.spawned(0, 1, 43, 9);
        assert_eq!(b.snapshot().groups[0].processes[1].gc, [0; 3]);
    }

    #[test]
    fn requests_are_counted_by_class_bytes_and_bucket() {
        let b = test_board(shapes());
        for (status, micros) in [
            (200, 1_000),
            (204, 30_000),
            (404, 2_000_000),
            (502, 90_000_000),
        ] {
            b.request_started(None);
            b.request_ended(
                None,
                Served {
                    status,
                    bytes_in: 10,
                    bytes_out: 100,
                    micros,
                },
            );
        }
        // A request ended twice (or never started) never makes in_flight wrap.
        b.request_ended(None, Served::default());
        let e = b.snapshot().embedded;
        assert_eq!(e.status, [1, 2, 0, 1, 1]); // the bare Served counts as 1xx
        assert_eq!((e.bytes_in, e.bytes_out, e.in_flight), (40, 400, 0));
        assert_eq!(e.buckets[0], 2); // 0 and 1 ms <= 5 ms
        assert_eq!(e.buckets[3], 1); // 30 ms <= 50 ms
        assert_eq!(e.buckets[8], 1); // 2 s <= 2.5 s
        assert_eq!(*e.buckets.last().unwrap(), 1); // 90 s: +Inf
        assert_eq!(e.duration_sum_us, 92_031_000);
        assert_eq!(e.requests(), 5);
    }

    #[test]
    fn a_process_life_and_its_exit_reason() {
        let b = test_board(shapes());
        b.spawned(0, 0, 100, 1);
        assert_eq!(
            b.snapshot().groups[0].processes[0].state,
            ProcState::Starting
        );
        b.ready(0, 0, 3);
        b.mirror(0, 0, 2, 17, Some(4096));
        let p = &b.snapshot().groups[0].processes[0];
        assert_eq!(
            (p.state, p.threads, p.busy, p.served, p.rss),
            (ProcState::Ready, 3, 2, 17, 4096)
        );
        b.stopping(0, 0, Reason::MaximumRequests);
        assert_eq!(b.exited(0, 0, false), Reason::MaximumRequests);
        // The replacement starts clean; a death it did not announce is a crash.
        b.spawned(0, 0, 101, 2);
        assert_eq!(b.snapshot().groups[0].processes[0].served, 0);
        assert_eq!(b.exited(0, 0, false), Reason::Crash);
        b.spawned(0, 0, 102, 3);
        assert_eq!(b.exited(0, 0, true), Reason::StartupFailed);
        let g = &b.snapshot().groups[0];
        assert_eq!(g.processes[0].restarts, 3);
        assert_eq!(g.processes[0].state, ProcState::Empty);
        assert_eq!(g.processes[0].last_reason, Some(Reason::StartupFailed));
        let count = |r: Reason| g.record.restarts.iter().find(|x| x.0 == r).unwrap().1;
        assert_eq!(count(Reason::MaximumRequests), 1);
        assert_eq!(count(Reason::Crash), 1);
        assert_eq!(count(Reason::StartupFailed), 1);
    }

    #[test]
    fn restart_messages_map_to_reasons() {
        for (msg, r) in [
            (
                "maximum-requests (5) reached; recycling",
                Reason::MaximumRequests,
            ),
            ("restart-interval reached", Reason::RestartInterval),
            ("inactivity-timeout reached", Reason::InactivityTimeout),
            (
                "request-timeout: worker 1 has been running",
                Reason::RequestTimeout,
            ),
            (
                "startup-timeout: the WSGI script has not loaded",
                Reason::StartupTimeout,
            ),
            ("deadlock-timeout: the GIL", Reason::DeadlockTimeout),
            ("script '/srv/app.wsgi' changed", Reason::ScriptChanged),
            ("a panic in the monitor thread", Reason::Panic),
            ("lifespan startup failed", Reason::Other),
        ] {
            assert_eq!(Reason::of_message(msg), r, "{msg}");
        }
        for r in Reason::ALL {
            assert_eq!(Reason::from_word(r as u64 + 1), Some(r));
        }
    }

    #[test]
    fn thread_slots_show_the_running_request() {
        let b = test_board(shapes());
        let long = format!("GET /{}\t127.0.0.1:5\tid1", "x".repeat(400));
        b.thread_busy(0, 1, 2, 5_000, long.as_bytes());
        b.thread_busy(0, 1, 0, 6_000, b"POST /a\t::1:9\tid2");
        let s = b.snapshot();
        let w = &s.groups[0].processes[1].workers;
        assert_eq!(w.len(), 3);
        assert_eq!(
            (w[0].since_ms, w[0].text.as_str()),
            (6_000, "POST /a\t::1:9\tid2")
        );
        assert_eq!(w[1], ThreadView::default());
        assert_eq!(w[2].text.len(), TEXT_BYTES);
        assert!(w[2].text.starts_with("GET /xxx"));
        // Neighbours untouched: the other process's threads and group b.
        assert!(
            s.groups[0].processes[0]
                .workers
                .iter()
                .all(|t| t.since_ms == 0)
        );
        assert_eq!(s.groups[1].processes[0].pid, 0);
        b.thread_idle(0, 1, 0);
        let w = &b.snapshot().groups[0].processes[1].workers;
        assert_eq!((w[0].since_ms, w[0].served), (0, 1));
        assert_eq!(w[0].text, "POST /a\t::1:9\tid2"); // the last request stays readable
        // Out of range: ignored.
        b.thread_busy(0, 1, 3, 1, b"x");
        b.thread_idle(1, 0, 1);
    }

    #[test]
    fn a_short_memory_is_refused() {
        let layout = Layout::new(shapes());
        let mem: Vec<AtomicU64> = (0..layout.words - 1).map(|_| AtomicU64::new(0)).collect();
        assert!(Board::new(layout, Box::new(mem)).is_none());
    }
}
