//! A daemon process of a `WSGIDaemonProcess` group, from just after the fork to its exit, in
//! order (`run`): signal reset, httpd listeners closed, privileges dropped (any failure is
//! fatal), parent-death signal, limits, Python start-up, then the threads (a dispatcher that
//! accepts connections from httpd children, `threads` workers that serve their requests over
//! the framed protocol, the monitor), and at last the wait for a stop signal and the drain.
//! Runs in the daemon process only.
//!
//! The parts: `identity` (whom the process runs as), `limits` (resource limits, priority,
//! locale), `interpreter` (Python start-up), `state` (what the threads share), `dispatch`
//! (connections, dispatcher and workers), `serve` (one request on a connection), `monitor` (the
//! timeouts), `guard` (panic containment), `conn` (the framed connection).
#![forbid(unsafe_code)]

pub mod conn;
mod dispatch;
pub mod guard;
mod identity;
mod interpreter;
mod limits;
mod monitor;
mod serve;
mod state;

pub use identity::check_identity;

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::GlobalConfig;
use crate::config::daemon::DaemonSpec;
use crate::error::Code;
use crate::sys;
use crate::wsgi::adapter::{Level, LogFn};
use serve::Ctx;
use state::State;

/// Everything a daemon process needs, captured in the httpd parent before the fork.
pub struct Launch {
    pub spec: DaemonSpec,
    pub global: GlobalConfig,
    /// The group's listening socket (inherited).
    pub listener: UnixListener,
    /// Other groups' listening sockets: closed at once.
    pub other_listeners: Vec<std::os::fd::RawFd>,
    pub secret: [u8; 16],
    pub generation: u32,
    /// This process's place on the board: (group index, process index).
    pub slot: (usize, usize),
    /// The previous generation's credentials (its httpd children may still be serving).
    pub previous: Option<([u8; 16], u32)>,
    /// The httpd parent's pid (for the parent-death check).
    pub parent: u32,
    /// httpd's `User`/`Group`, the default identity.
    pub httpd_uid: u32,
    pub httpd_gid: u32,
    /// Seconds to wait before starting (respawn backoff after quick deaths).
    pub backoff: Duration,
    /// Apache's `Timeout`, the default socket timeout.
    pub apache_timeout: Duration,
    /// httpd's error log, for this process's messages.
    pub log: LogFn,
    /// The error log of the virtual host a request names (validated by the httpd layer).
    pub vhost_log: fn(usize) -> Option<LogFn>,
    /// Closes httpd's own listening sockets in this process.
    pub close_httpd_listeners: fn(),
    /// Starts Python (the FFI layer's initialiser) for this group.
    pub init_python: fn(&GlobalConfig) -> Result<(), String>,
}

/// The exit status of a daemon that could not start; the parent backs off on it.
/// (Above 64, so it cannot be mistaken for a signal number: APR reports either.)
pub const EXIT_STARTUP_FAILED: i32 = 86;

/// glibc malloc arenas a daemon process uses (`sys::limit_heap_arenas`).
const HEAP_ARENAS: u32 = 2;

fn fatal(log: &LogFn, msg: &str) -> ! {
    log(Level::Error, msg);
    sys::exit_now(EXIT_STARTUP_FAILED)
}

/// Runs a daemon process; never returns.
pub fn run(l: Launch) -> ! {
    guard::test_panic("start");
    crate::board::pin();
    sys::reset_signals();
    (l.close_httpd_listeners)();
    for fd in &l.other_listeners {
        sys::close_fd(*fd);
    }
    let log = l.log.clone();
    let spec = l.spec;
    let name = spec.name.clone();
    if !l.backoff.is_zero() {
        std::thread::sleep(l.backoff);
    }
    sys::set_process_name(
        &spec
            .display_name_expanded()
            .unwrap_or_else(|| format!("wsgi:{name}")),
    );

    // Identity: drop root for good before anything else runs (CVE-2014-0240/8583).
    let home = identity::assume(&spec, l.httpd_uid, l.httpd_gid, &log);
    if let Err(e) = sys::die_with_parent(l.parent) {
        fatal(
            &log,
            &format!("{}: daemon group '{name}': {e}", Code::DaemonStart.as_str()),
        );
    }
    if let Some(mask) = spec.umask {
        sys::set_umask(mask);
    }
    if let Err(e) = std::env::set_current_dir(&home) {
        if spec.home.is_some() {
            fatal(
                &log,
                &format!(
                    "{}: daemon group '{name}': home={home}: {e}",
                    Code::DaemonStart.as_str()
                ),
            );
        }
        let _ = std::env::set_current_dir("/");
    }
    limits::apply(&spec, &log);
    // Before any thread starts: every request runs under the GIL or briefly in Rust, so two
    // arenas serve the workers without contention and hold far less memory once idle.
    sys::limit_heap_arenas(HEAP_ARENAS);
    let g = interpreter::start(&l.global, &spec, l.init_python, &log);

    // Serve.
    let signals = [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    sys::block_signals(&signals);
    let threads = spec.threads.max(1);
    let state = Arc::new(State::new(threads as usize, l.slot));
    let ctx = Arc::new(Ctx {
        spec: spec.clone(),
        global: g,
        secret: l.secret,
        generation: l.generation,
        previous: l.previous,
        socket_timeout: spec.socket_timeout.unwrap_or(l.apache_timeout),
        log: log.clone(),
        vhost_log: l.vhost_log,
        asgi: crate::asgi::Hooks {
            log: log.clone(),
            on_failure: {
                let (state, grace) = (Arc::clone(&state), spec.graceful_timeout);
                crate::asgi::OnFailure::Replace(Arc::new(move |why: String| {
                    state.restart(why, grace)
                }))
            },
            lifespan: spec.lifespan,
            startup_timeout: spec.lifespan_timeout,
            shutdown_timeout: spec.shutdown_timeout,
            request_timeout: spec.request_timeout,
            loop_deadlock: spec.deadlock_timeout,
            max_tasks: spec.max_tasks,
        },
    });
    if let Err(e) = dispatch::start(l.listener, &state, &ctx, threads) {
        fatal(
            &log,
            &format!("{}: daemon group '{name}': {e}", Code::DaemonStart.as_str()),
        );
    }
    monitor::start(&state, &spec, &log);
    if let Some(b) = crate::board::pinned() {
        b.ready(l.slot.0, l.slot.1, threads as usize);
    }
    log(
        Level::Info,
        &format!(
            "daemon process of group '{name}' started (pid {}, {threads} threads)",
            sys::pids().0
        ),
    );

    // Stop: wait for a signal (or a thread's restart request), then drain.
    let sig = sys::wait_signal(&signals);
    state.stopping.store(true, Ordering::SeqCst);
    let (why, grace) = match sig {
        libc::SIGUSR2 => state
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(("restart requested".into(), spec.graceful_timeout)),
        // httpd's graceful signal to a daemon: eviction-timeout, if set, replaces it.
        libc::SIGUSR1 if !spec.eviction_timeout.is_zero() => {
            ("eviction signal".into(), spec.eviction_timeout)
        }
        libc::SIGUSR1 => ("graceful signal".into(), spec.graceful_timeout),
        _ => (format!("signal {sig}"), spec.shutdown_timeout),
    };
    log(
        Level::Info,
        &format!("daemon process of group '{name}' stopping: {why}"),
    );
    let reason = crate::board::Reason::of_message(&why);
    if let Some(b) = crate::board::pinned() {
        b.stopping(l.slot.0, l.slot.1, reason);
    }
    // mod_wsgi's process_stopping event, published while the requests drain (as mod_wsgi
    // does); waited for before the exit, within the grace period or shutdown-timeout.
    let shutdown_reason = match sig {
        libc::SIGUSR2 => reason.shutdown_reason(),
        libc::SIGUSR1 if !spec.eviction_timeout.is_zero() => "eviction_signal",
        libc::SIGUSR1 => "graceful_signal",
        _ => "shutdown_signal",
    };
    let published = publish_stopping(&log, &name, shutdown_reason);
    let publish_deadline = Instant::now() + grace.max(spec.shutdown_timeout);
    // Open WebSockets close now (1012), so the drain below is not spent waiting for them.
    crate::asgi::going_away();
    let deadline = Instant::now() + grace;
    // Workers leave their accept loop within one poll interval once idle, busy ones when their
    // request is done; only then is nothing of the shared listen queue taken by this process.
    while (state.active.load(Ordering::SeqCst) > 0
        || state.asgi_active.load(Ordering::SeqCst) > 0
        || state.accepting.load(Ordering::SeqCst) > 0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(done) = published {
        let _ = done.recv_timeout(publish_deadline.saturating_duration_since(Instant::now()));
    }
    // ASGI applications' lifespan shutdown, once their requests are done.
    crate::asgi::stop_all(spec.shutdown_timeout);
    log(
        Level::Info,
        &format!(
            "daemon process of group '{name}' exiting ({} requests served, {} still active)",
            state.served.load(Ordering::Relaxed),
            state.active.load(Ordering::SeqCst) + state.asgi_active.load(Ordering::SeqCst)
        ),
    );
    sys::exit_now(0)
}

/// Publishes `process_stopping` (with mod_wsgi's `shutdown_reason`) in every interpreter, on
/// a thread of its own so a subscriber that hangs cannot hold up the stop; the receiver says
/// when it is done (`None`: no thread could be started).
fn publish_stopping(
    log: &LogFn,
    group: &str,
    reason: &'static str,
) -> Option<std::sync::mpsc::Receiver<()>> {
    let (done, waiter) = std::sync::mpsc::channel();
    let (log, group) = (log.clone(), group.to_string());
    std::thread::Builder::new()
        .name("rwsgi-stopping".into())
        .spawn(move || {
            let publish = || crate::python::process_stopping(reason);
            let _ = guard::contain(&log, &group, "the process_stopping event", publish);
            let _ = done.send(());
        })
        .ok()?;
    Some(waiter)
}
