//! The per-process request counters behind `mod_wsgi.process_metrics()` (pure: atomics and a
//! clock, no I/O): off until the application calls `mod_wsgi.start_recording_metrics()`, as
//! in mod_wsgi 6, so a process that never asks pays one relaxed load per request. Updated by
//! the WSGI driver in whichever process runs the application (httpd child or daemon).
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime};

static RECORDING: AtomicBool = AtomicBool::new(false);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicU64 = AtomicU64::new(0);
static BUSY_US: AtomicU64 = AtomicU64::new(0);
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);
/// Requests per request thread (mod_rwsgi's own thread numbers, from 1), while recording.
static THREADS: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());
static STARTED: OnceLock<(SystemTime, Instant)> = OnceLock::new();

thread_local! {
    static THREAD_NUM: Cell<u64> = const { Cell::new(0) };
}

/// Remembers when this process started serving (the first call wins).
pub fn mark_process_start() {
    STARTED.get_or_init(|| (SystemTime::now(), Instant::now()));
}

/// `mod_wsgi.start_recording_metrics()`: idempotent.
pub fn start_recording() {
    mark_process_start();
    RECORDING.store(true, Ordering::Relaxed);
}

pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// One request running in this thread while recording; counted when dropped.
pub struct Running {
    since: Instant,
    thread: u64,
}

/// Call when a request starts running the application; `None` when not recording.
pub fn begin() -> Option<Running> {
    if !recording() {
        return None;
    }
    ACTIVE.fetch_add(1, Ordering::Relaxed);
    let thread = THREAD_NUM.with(|n| {
        if n.get() == 0 {
            n.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        n.get()
    });
    Some(Running {
        since: Instant::now(),
        thread,
    })
}

impl Drop for Running {
    fn drop(&mut self) {
        let us = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        BUSY_US.fetch_add(us, Ordering::Relaxed);
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
        let mut threads = THREADS.lock().unwrap_or_else(|p| p.into_inner());
        *threads.entry(self.thread).or_insert(0) += 1;
    }
}

/// What `process_metrics()` reports from the counters (the caller adds the OS's figures).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub request_count: u64,
    pub active_requests: u64,
    pub request_busy_time: f64,
    /// (thread number, requests it has served), by thread number.
    pub threads: Vec<(u64, u64)>,
    /// Seconds since the epoch when the process started serving, and seconds since then.
    pub restart_time: f64,
    pub running_time: f64,
}

/// The counters now; `None` when not recording (mod_wsgi then returns None).
pub fn snapshot() -> Option<Snapshot> {
    if !recording() {
        return None;
    }
    let (wall, mono) = *STARTED.get_or_init(|| (SystemTime::now(), Instant::now()));
    let epoch = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let threads = THREADS.lock().unwrap_or_else(|p| p.into_inner());
    Some(Snapshot {
        request_count: REQUESTS.load(Ordering::Relaxed),
        active_requests: ACTIVE.load(Ordering::Relaxed),
        request_busy_time: BUSY_US.load(Ordering::Relaxed) as f64 / 1e6,
        threads: threads.iter().map(|(k, v)| (*k, *v)).collect(),
        restart_time: epoch(wall),
        running_time: mono.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_while_recording_and_per_thread() {
        // One test owns the process-wide counters (tests run in threads of one process).
        assert!(begin().is_none());
        assert!(snapshot().is_none());
        start_recording();
        start_recording();
        let a = begin().expect("recording");
        let s = snapshot().unwrap();
        assert_eq!((s.request_count, s.active_requests), (0, 1));
        drop(a);
        drop(begin());
        std::thread::spawn(|| drop(begin())).join().unwrap();
        let s = snapshot().unwrap();
        assert_eq!((s.request_count, s.active_requests), (3, 0));
        assert_eq!(s.threads.len(), 2);
        assert_eq!(s.threads.iter().map(|t| t.1).sum::<u64>(), 3);
        assert!(s.threads.iter().any(|t| t.1 == 2));
        assert!(s.restart_time > 1.0e9 && s.running_time >= 0.0);
    }
}
