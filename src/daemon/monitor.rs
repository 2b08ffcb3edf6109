//! The process's clocks: the monitor thread, which copies the process's busy threads, requests
//! and resident size to the board, gives freed heap back to the system when the process is
//! idle, and restarts the process when restart-interval, inactivity-timeout, request-timeout or
//! startup-timeout is reached (and exits it at once on deadlock-timeout), and the GIL probe
//! thread that feeds the deadlock-timeout check. Runs in the daemon process.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::prelude::*;

use crate::config::daemon::DaemonSpec;
use crate::error::Code;
use crate::python::interp::{self, Which};
use crate::sys;
use crate::wsgi::adapter::{Level, LogFn};

use super::guard;
use super::state::State;

/// Starts the monitor thread and, with a deadlock-timeout, the GIL probe thread, each guarded
/// (a panic is logged and recycles the process). A thread that cannot start is left out.
pub(super) fn start(state: &Arc<State>, spec: &DaemonSpec, log: &LogFn) {
    {
        let (state, spec, log) = (Arc::clone(state), spec.clone(), log.clone());
        let _ = std::thread::Builder::new()
            .name("rwsgi-monitor".into())
            .spawn(move || {
                let run = || monitor(&state, &spec, &log);
                if guard::contain(&log, &spec.name, "the monitor thread", run).is_err() {
                    state.restart(
                        "a panic in the monitor thread".into(),
                        spec.graceful_timeout,
                    );
                }
            });
    }
    if !spec.deadlock_timeout.is_zero() {
        let (state, log, name, grace) = (
            Arc::clone(state),
            log.clone(),
            spec.name.clone(),
            spec.graceful_timeout,
        );
        let _ = std::thread::Builder::new()
            .name("rwsgi-gil-probe".into())
            .spawn(move || {
                let run = || {
                    crate::python::ensure_thread_state();
                    loop {
                        Python::attach(|_| state.gil_seen.store(state.now_ms(), Ordering::SeqCst));
                        std::thread::sleep(Duration::from_millis(500));
                    }
                };
                if guard::contain(&log, &name, "the GIL probe thread", run).is_err() {
                    state.restart("a panic in the GIL probe thread".into(), grace);
                }
            });
    }
}

/// The WSGI request limit as a log line says it: `2.4 s (request-timeout=1 x (1 + ln 4
/// threads))`.
fn timeout_text(spec: &DaemonSpec) -> String {
    format!(
        "{:.1} s (request-timeout={} x (1 + ln {} threads))",
        spec.wsgi_request_timeout().as_secs_f64(),
        spec.request_timeout.as_secs_f64(),
        spec.threads.max(1)
    )
}

/// interrupt-timeout: raises `mod_wsgi.RequestTimeout` in worker `i`'s thread, from a thread
/// of its own (the worker may hold the GIL for a long while; the monitor keeps counting and
/// restarts the process if the request has not ended within interrupt-timeout).
fn interrupt(state: &State, i: usize, spec: &DaemonSpec, log: &LogFn) {
    let ident = state.py_ident[i].load(Ordering::SeqCst);
    let group = state.running_in(ident);
    log(
        Level::Warning,
        &format!(
            "{}: daemon group '{}': worker {i} has been running one request for more than {}: \
             raising mod_wsgi.RequestTimeout in it; the process restarts if the request has not \
             ended within interrupt-timeout ({} s)",
            Code::AsgiTimeout.as_str(),
            spec.name,
            timeout_text(spec),
            spec.interrupt_timeout.as_secs_f32()
        ),
    );
    let (log, name) = (log.clone(), spec.name.clone());
    let _ = std::thread::Builder::new()
        .name("rwsgi-interrupt".into())
        .spawn(move || {
            let run = || {
                let which = group.as_deref().map_or(Which::Main, Which::Group);
                interp::enter(which, |py, _| crate::python::interrupt_thread(py, ident))
            };
            match guard::contain(&log, &name, "the interrupt thread", run) {
                Ok(Ok(Ok(true))) => {}
                Ok(Ok(Ok(false))) => log(
                    Level::Info,
                    &format!("interrupt-timeout: worker {i}'s thread was not found"),
                ),
                Ok(Ok(Err(e))) => log(
                    Level::Error,
                    &format!("interrupt-timeout: cannot raise mod_wsgi.RequestTimeout: {e}"),
                ),
                Ok(Err(why)) => log(Level::Error, &why),
                Err(()) => {}
            }
        });
}

/// When the monitor gives freed heap back to the system: once the process is idle (no request
/// running at a tick) after serving requests since the last trim, at most once a second. Under
/// load that is rare and bounded; an idle process is trimmed within about a second of its last
/// request.
#[derive(Default)]
struct HeapTrim {
    served_at_last: u64,
    tick_at_last: u64,
}

impl HeapTrim {
    fn due(&mut self, tick: u64, busy: usize, served: u64) -> bool {
        if busy != 0 || served == self.served_at_last || tick < self.tick_at_last + 5 {
            return false;
        }
        self.served_at_last = served;
        self.tick_at_last = tick;
        true
    }
}

/// Watches the process's clocks: restart-interval, inactivity-timeout, request-timeout,
/// startup-timeout (graceful restarts) and deadlock-timeout (immediate exit). Runs always, so no
/// option silently depends on another (mod_wsgi only started its monitor for some options).
fn monitor(state: &State, spec: &DaemonSpec, log: &LogFn) {
    let ms = |d: Duration| d.as_millis() as u64;
    let board = crate::board::pinned();
    let mut tick: u64 = 0;
    let mut trim = HeapTrim::default();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        tick += 1;
        let busy = state.active.load(Ordering::Relaxed) + state.asgi_active.load(Ordering::Relaxed);
        let served = state.served.load(Ordering::Relaxed);
        // The board's view of this process: busy threads and requests every tick, the
        // resident size every second.
        if let Some(b) = board {
            let rss = (tick % 5 == 1).then(sys::resident_bytes).flatten();
            b.mirror(state.slot.0, state.slot.1, busy as u64, served, rss);
            if tick % 5 == 1 {
                let (collections, collected) = crate::request::metrics::gc_counts();
                b.mirror_gc(state.slot.0, state.slot.1, collections, collected);
            }
        }
        if trim.due(tick, busy, served) {
            sys::trim_heap();
        }
        guard::test_panic("monitor");
        let now = state.now_ms();
        if !spec.restart_interval.is_zero() && now >= ms(spec.restart_interval) {
            state.restart("restart-interval reached".into(), spec.graceful_timeout);
        }
        if !spec.inactivity_timeout.is_zero()
            && state.active.load(Ordering::SeqCst) == 0
            && now.saturating_sub(state.last_activity.load(Ordering::SeqCst))
                >= ms(spec.inactivity_timeout)
        {
            state.restart("inactivity-timeout reached".into(), Duration::ZERO);
        }
        if !spec.request_timeout.is_zero() {
            let limit = spec.wsgi_request_timeout();
            for (i, t) in state.busy_since.iter().enumerate() {
                let since = t.load(Ordering::SeqCst);
                if since == 0 || now.saturating_sub(since - 1) < ms(limit) {
                    continue;
                }
                let interrupted = state.interrupted_at[i].load(Ordering::SeqCst);
                if spec.interrupt_timeout.is_zero() {
                    state.restart(
                        format!(
                            "request-timeout: worker {i} has been running one request for more \
                             than {}",
                            timeout_text(spec)
                        ),
                        spec.graceful_timeout,
                    );
                } else if interrupted == 0 {
                    state.interrupted_at[i].store(now + 1, Ordering::SeqCst);
                    interrupt(state, i, spec, log);
                } else if now.saturating_sub(interrupted - 1) >= ms(spec.interrupt_timeout) {
                    state.restart(
                        format!(
                            "request-timeout: worker {i}'s request did not end within \
                             interrupt-timeout ({} s) of mod_wsgi.RequestTimeout",
                            spec.interrupt_timeout.as_secs_f32()
                        ),
                        spec.graceful_timeout,
                    );
                }
            }
        }
        let first = state.first_request.load(Ordering::SeqCst);
        if !spec.startup_timeout.is_zero()
            && first > 0
            && !state.script_loaded.load(Ordering::SeqCst)
            && now.saturating_sub(first - 1) >= ms(spec.startup_timeout)
        {
            state.restart(
                "startup-timeout: the WSGI script has not loaded".into(),
                Duration::ZERO,
            );
        }
        if !spec.deadlock_timeout.is_zero()
            && now.saturating_sub(state.gil_seen.load(Ordering::SeqCst))
                >= ms(spec.deadlock_timeout)
            && now >= ms(spec.deadlock_timeout)
        {
            log(
                Level::Error,
                &format!(
                    "{}: daemon group '{}': the Python GIL has not been available for {} s \
                     (deadlock-timeout); restarting the process now",
                    Code::DaemonExited.as_str(),
                    spec.name,
                    spec.deadlock_timeout.as_secs()
                ),
            );
            if let Some(b) = board {
                b.stopping(
                    state.slot.0,
                    state.slot.1,
                    crate::board::Reason::DeadlockTimeout,
                );
            }
            sys::exit_now(1);
        }
    }
}
